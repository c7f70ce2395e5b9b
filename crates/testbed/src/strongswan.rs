//! strongSwan's charon as a test peer: `charon-systemd` in a namespace with
//! a private `strongswan.conf` (an explicit plugin list, a per-run vici
//! socket, a file log), configured by the caller's `swanctl.conf` text and
//! driven with `swanctl`. This host has no kernel ESP, so CHILD SAs go to
//! the `kernel-libipsec` plugin (userspace ESP through a TUN device, UDP
//! encapsulation only: connections need `encap = yes`). Killed and its
//! files removed on drop; its log is printed when a test panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::{have_program, Netns};

/// The daemon.
pub const CHARON: &str = "/usr/sbin/charon-systemd";
const LIBIPSEC: &str = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so";
const OPENSSL: &str = "/usr/lib/ipsec/plugins/libstrongswan-openssl.so";
/// The Debian packages holding charon, swanctl and the plugins.
pub const PACKAGES: &str =
    "charon-systemd strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins";
const PLUGINS: &str = "random nonce openssl aes gcm sha1 sha2 hmac kdf pem pkcs1 x509 pubkey \
                       kernel-libipsec kernel-netlink socket-default vici";

/// Fails, naming what is missing, unless strongSwan is installed.
pub fn require_strongswan() {
    let mut missing: Vec<&str> = [CHARON, LIBIPSEC, OPENSSL]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    if !have_program("swanctl") {
        missing.push("swanctl");
    }
    assert!(
        missing.is_empty(),
        "this test needs strongSwan: missing {} (Debian packages: {PACKAGES}; run scripts/install-deps)",
        missing.join(", ")
    );
}

/// A running charon.
#[derive(Debug)]
pub struct Charon {
    child: Child,
    dir: PathBuf,
}

impl Charon {
    /// Starts charon in `ns` with its files in `dir` (emptied first),
    /// loads `swanctl_conf` and returns once it is loaded. With
    /// `install_routes`, charon routes each CHILD SA's remote selectors
    /// into its TUN device (traffic through it); without, it only
    /// negotiates.
    pub fn start(ns: &Netns, dir: &Path, swanctl_conf: &str, install_routes: bool) -> Charon {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let vici = dir.join("charon.vici");
        let log = dir.join("charon.log");
        let routes = if install_routes { "yes" } else { "no" };
        std::fs::write(
            dir.join("strongswan.conf"),
            format!(
                "charon {{\n  load_modular = no\n  load = {PLUGINS}\n  install_routes = {routes}\n  \
                 retransmit_tries = 3\n  retransmit_timeout = 1.0\n  \
                 plugins {{\n    vici {{\n      socket = unix://{vici}\n    }}\n  }}\n}}\n\
                 charon-systemd {{\n  filelog {{\n    run {{\n      path = {log}\n      \
                 flush_line = yes\n      default = 1\n      ike = 2\n      enc = 1\n      cfg = 2\n    }}\n  }}\n}}\n\
                 swanctl {{\n  load = pem pkcs1 x509 pubkey random openssl\n  socket = unix://{vici}\n}}\n",
                log = log.display(),
                vici = vici.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("swanctl.conf"), swanctl_conf).unwrap();
        let child = ns
            .command(&[CHARON])
            .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
            .stdout(std::fs::File::create(dir.join("charon.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("charon.err")).unwrap())
            .spawn()
            .expect("starting charon-systemd");
        let mut charon = Charon {
            child,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !vici.exists() {
            if let Ok(Some(status)) = charon.child.try_wait() {
                panic!(
                    "charon exited ({status}) before opening its vici socket: {}",
                    charon.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "charon: no vici socket after 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let conf = dir.join("swanctl.conf").display().to_string();
        let out = charon.swanctl(&["--load-all", "--file", &conf]);
        assert!(
            out.status.success(),
            "swanctl --load-all: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        charon
    }

    /// `swanctl ARGS` against this charon.
    pub fn swanctl(&self, args: &[&str]) -> Output {
        let uri = format!("unix://{}", self.dir.join("charon.vici").display());
        Command::new("swanctl")
            .args(args)
            .args(["--uri", &uri])
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .output()
            .expect("running swanctl")
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- charon log ({}) ---\n{}",
                self.dir.display(),
                self.log()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
