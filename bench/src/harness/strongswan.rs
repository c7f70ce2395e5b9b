//! strongSwan with userspace ESP (the `kernel-libipsec` plugin) as the
//! site-to-site gateway pair: the IPsec choice a user would make instead of
//! Strait when the kernel's XFRM is not wanted, measured on the same bed
//! and with the same traffic as wireguard-go and boringtun ([`super::peers`]).
//!
//! Each gateway runs its own `charon-systemd` inside its namespace with a
//! private `strongswan.conf` (named by `STRONGSWAN_CONF`) that loads an
//! explicit plugin list and puts the vici control socket in a per-run
//! directory. `charon-systemd` is used rather than the classic
//! `/usr/lib/ipsec/charon` because Debian ships the latter together with
//! `strongswan-starter`, whose postinst starts a system-wide daemon; and it
//! writes no pid file, so two of them side by side need no private `/run`.
//! Its own log goes to the journal, which these hosts do not run: the IKE
//! exchange is kept instead from `swanctl --initiate` (it streams the
//! daemon's log while it waits) and from `swanctl --list-sas`.
//!
//! `kernel-libipsec` handles ESP in the daemon: it creates a TUN device
//! (`ipsec0`) and routes the far site into it from table 220, so the
//! kernel keeps forwarding between the LAN and that device while charon
//! seals and opens packets in userspace. It only speaks UDP-encapsulated
//! ESP, hence `encap = yes` (RFC 3948, port 4500) on both sides.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::RngCore;
use strait_testbed::Netns;

use super::peers::{host_of, ping_until_reachable, Gateway, GatewayPair};

/// The daemon started per gateway.
pub const CHARON: &str = "/usr/sbin/charon-systemd";

/// The plugin that moves ESP into userspace; without it charon would
/// install XFRM states and the kernel would do the crypto.
pub const LIBIPSEC_PLUGIN: &str = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so";

/// AES-GCM and ECP groups come from the OpenSSL plugin.
pub const OPENSSL_PLUGIN: &str = "/usr/lib/ipsec/plugins/libstrongswan-openssl.so";

/// The Debian packages holding [`CHARON`], `swanctl` and the plugins.
pub const PACKAGES: &str =
    "charon-systemd strongswan-swanctl libcharon-extra-plugins libstrongswan-standard-plugins";

/// The plugins charon loads, and nothing else (`load_modular = no` would
/// otherwise pull in every plugin the package set happens to provide):
/// randomness and nonces for IKE, OpenSSL for ECP-256, AES-GCM, SHA-2 and
/// the PRF, the kernel interfaces, the sockets and the control interface.
pub const CHARON_PLUGINS: &[&str] = &[
    "random",
    "nonce",
    "openssl",
    "aes",
    "gcm",
    "sha2",
    "hmac",
    "kdf",
    "pem",
    "pkcs1",
    "x509",
    "pubkey",
    "kernel-libipsec",
    "kernel-netlink",
    "socket-default",
    "vici",
];

/// IKE SA: AES-128-GCM, PRF HMAC-SHA-256, DH group 19 (BENCHMARKING.md).
pub const IKE_PROPOSALS: &str = "aes128gcm16-prfsha256-ecp256";

/// CHILD SA: AES-128-GCM, the cipher Strait's ESP is measured with.
pub const ESP_PROPOSALS: &str = "aes128gcm16";

/// The connection and child SA name in every generated `swanctl.conf`.
pub const CONNECTION: &str = "site";

/// The longest path a unix socket address can carry (`sun_path` less NUL).
const SUN_PATH_MAX: usize = 107;

/// Why a configuration could not be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A gateway address that is not an IP address.
    #[error("{what} {value:?} is not an IP address")]
    Address { what: &'static str, value: String },
    /// A traffic selector that is not `address/prefix-length`.
    #[error("{what} {value:?} is not a prefix like 10.1.0.0/16")]
    Prefix { what: &'static str, value: String },
    /// The vici socket path does not fit a unix socket address.
    #[error("vici socket path {0} is longer than {SUN_PATH_MAX} bytes")]
    SocketPath(String),
    /// The pre-shared key must be plain hex so it cannot break the file.
    #[error("pre-shared key is not 0x-prefixed hex")]
    Secret,
}

/// One side of the IKEv2 connection, as `swanctl.conf` needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideConfig {
    /// Our WAN address (IKE endpoint and identity).
    pub local_addr: String,
    /// The other gateway's WAN address.
    pub remote_addr: String,
    /// The prefix behind us (`local_ts`).
    pub local_ts: String,
    /// The prefix behind the other gateway (`remote_ts`).
    pub remote_ts: String,
    /// Pre-shared key, `0x` followed by hex digits.
    pub psk: String,
}

fn check_addr(what: &'static str, value: &str) -> Result<(), ConfigError> {
    value
        .parse::<IpAddr>()
        .map(drop)
        .map_err(|_| ConfigError::Address {
            what,
            value: value.to_owned(),
        })
}

fn check_prefix(what: &'static str, value: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::Prefix {
        what,
        value: value.to_owned(),
    };
    let (addr, len) = value.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    Ok(())
}

impl SideConfig {
    /// Checks every value that goes into the file, so a stray brace or
    /// newline cannot change the meaning of the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_addr("local address", &self.local_addr)?;
        check_addr("remote address", &self.remote_addr)?;
        check_prefix("local traffic selector", &self.local_ts)?;
        check_prefix("remote traffic selector", &self.remote_ts)?;
        let hex = self.psk.strip_prefix("0x").ok_or(ConfigError::Secret)?;
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConfigError::Secret);
        }
        Ok(())
    }
}

/// A fresh pre-shared key for one run: 32 random bytes as `0x…` hex.
pub fn random_psk() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key.iter().fold(String::from("0x"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `strongswan.conf` for one gateway: the explicit plugin list and the
/// vici socket at `vici_socket`. (`ipsec0` gets the plugin's fixed MTU of
/// 1400, which leaves room for the ESP-in-UDP overhead.) The same file serves `swanctl`,
/// whose own plugin list is kept short so it does not go looking for
/// plugins that are not installed.
pub fn strongswan_conf(vici_socket: &Path) -> Result<String, ConfigError> {
    let socket = vici_socket.display().to_string();
    if socket.len() > SUN_PATH_MAX || socket.contains(['\n', '}', '{', '#']) {
        return Err(ConfigError::SocketPath(socket));
    }
    let load = CHARON_PLUGINS.join(" ");
    Ok(format!(
        "# Written by strait-bench for one gateway of one run.\n\
         charon {{\n\
         \x20 load_modular = no\n\
         \x20 load = {load}\n\
         \x20 install_routes = yes\n\
         \x20 plugins {{\n\
         \x20   vici {{\n\
         \x20     socket = unix://{socket}\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n\
         swanctl {{\n\
         \x20 load = pem pkcs1 x509 pubkey random openssl\n\
         \x20 socket = unix://{socket}\n\
         }}\n"
    ))
}

/// `swanctl.conf` for one gateway: IKEv2 with a PSK, both identities the
/// WAN addresses, one tunnel-mode child between the two site prefixes,
/// UDP encapsulation forced (`kernel-libipsec` handles no raw ESP).
pub fn swanctl_conf(side: &SideConfig) -> Result<String, ConfigError> {
    side.validate()?;
    let SideConfig {
        local_addr,
        remote_addr,
        local_ts,
        remote_ts,
        psk,
    } = side;
    Ok(format!(
        "# Written by strait-bench for one gateway of one run.\n\
         connections {{\n\
         \x20 {CONNECTION} {{\n\
         \x20   version = 2\n\
         \x20   local_addrs = {local_addr}\n\
         \x20   remote_addrs = {remote_addr}\n\
         \x20   proposals = {IKE_PROPOSALS}\n\
         \x20   encap = yes\n\
         \x20   local {{\n\
         \x20     auth = psk\n\
         \x20     id = {local_addr}\n\
         \x20   }}\n\
         \x20   remote {{\n\
         \x20     auth = psk\n\
         \x20     id = {remote_addr}\n\
         \x20   }}\n\
         \x20   children {{\n\
         \x20     {CONNECTION} {{\n\
         \x20       mode = tunnel\n\
         \x20       local_ts = {local_ts}\n\
         \x20       remote_ts = {remote_ts}\n\
         \x20       esp_proposals = {ESP_PROPOSALS}\n\
         \x20     }}\n\
         \x20   }}\n\
         \x20 }}\n\
         }}\n\
         secrets {{\n\
         \x20 ike-{CONNECTION} {{\n\
         \x20   id-local = {local_addr}\n\
         \x20   id-remote = {remote_addr}\n\
         \x20   secret = {psk}\n\
         \x20 }}\n\
         }}\n"
    ))
}

/// `5.9.8-5+deb12u6` → `5.9.8`: the upstream release, without Debian's
/// revision.
pub fn upstream_version(debian: &str) -> &str {
    let v = debian.trim();
    let v = v.split_once(':').map_or(v, |(_, rest)| rest);
    v.split('-').next().unwrap_or(v)
}

/// The installed strongSwan release, for the results.
pub fn version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "charon-systemd"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| upstream_version(&String::from_utf8_lossy(&o.stdout)).to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown version".into())
}

/// Whether the daemon, `swanctl` and the plugins this pair needs are
/// installed; otherwise what is missing and which packages bring it.
pub fn available() -> Result<(), String> {
    let mut missing: Vec<&str> = [CHARON, LIBIPSEC_PLUGIN, OPENSSL_PLUGIN]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    if !strait_testbed::have_program("swanctl") {
        missing.push("swanctl");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "strongSwan missing {} (Debian packages: {PACKAGES}; scripts/install-deps)",
            missing.join(", ")
        ))
    }
}

/// One running charon and where its files are.
#[derive(Debug)]
struct Running {
    netns: Netns,
    child: Child,
    dir: PathBuf,
}

impl Running {
    fn vici(&self) -> PathBuf {
        self.dir.join("charon.vici")
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("strongswan.conf")
    }

    /// Runs `swanctl args…` against this charon. The vici socket is a path
    /// in the filesystem, so it is reachable from outside the namespace.
    fn swanctl(&self, args: &[&str]) -> Result<Output> {
        let uri = format!("unix://{}", self.vici().display());
        Command::new("swanctl")
            .args(args)
            .args(["--uri", &uri])
            .env("STRONGSWAN_CONF", self.conf())
            .output()
            .with_context(|| format!("running swanctl {}", args.join(" ")))
    }
}

/// A running strongSwan gateway pair with an established CHILD SA; stops
/// both charons and removes their files on drop.
#[derive(Debug)]
pub struct StrongswanPair {
    gateways: Vec<Running>,
    run_dir: PathBuf,
}

impl StrongswanPair {
    /// Gives both gateways their LAN and WAN addresses (as
    /// [`super::peers::WgPair`] does; the tunnel address `inner` is not
    /// used, ESP tunnel mode needs none), starts a charon on each, loads
    /// the connection, initiates it from `a` and waits (bounded) until a
    /// ping from `a`'s namespace reaches `b`'s LAN address through it.
    /// `tag` keeps the per-run directory unique; logs go to `log_dir`.
    pub fn start(
        a: &Gateway<'_>,
        b: &Gateway<'_>,
        tag: &str,
        log_dir: &Path,
    ) -> Result<StrongswanPair> {
        available().map_err(|why| anyhow!(why))?;
        // Short, under /tmp: the vici socket path must fit in sun_path.
        let run_dir =
            std::env::temp_dir().join(format!("strait-swan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let mut pair = StrongswanPair {
            gateways: Vec::new(),
            run_dir,
        };
        let psk = random_psk();
        for (me, other, side) in [(a, b, 'a'), (b, a, 'b')] {
            let ns = me.netns;
            for (dev, cidr) in [me.lan, me.wan] {
                ns.addr(dev, cidr)?;
            }
            ns.sysctl("net.ipv4.ip_forward", "1")?;
            let dir = pair.run_dir.join(side.to_string());
            std::fs::create_dir_all(&dir)?;
            let vici = dir.join("charon.vici");
            let conf = dir.join("strongswan.conf");
            std::fs::write(&conf, strongswan_conf(&vici)?)
                .with_context(|| format!("writing {}", conf.display()))?;
            let side_conf = SideConfig {
                local_addr: host_of(me.wan.1).to_owned(),
                remote_addr: host_of(other.wan.1).to_owned(),
                local_ts: me.site.to_owned(),
                remote_ts: other.site.to_owned(),
                psk: psk.clone(),
            };
            let swanctl = dir.join("swanctl.conf");
            std::fs::write(&swanctl, swanctl_conf(&side_conf)?)
                .with_context(|| format!("writing {}", swanctl.display()))?;

            let log_path = log_dir.join(format!("strongswan-{side}.log"));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let child = ns
                .command(&[CHARON])
                .env("STRONGSWAN_CONF", &conf)
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {CHARON} in {ns}"))?;
            pair.gateways.push(Running {
                netns: ns.clone(),
                child,
                dir,
            });
            let running = pair.gateways.last_mut().context("gateway just pushed")?;
            // The socket appears once every plugin is up.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !vici.exists() {
                if let Some(status) = running.child.try_wait()? {
                    bail!(
                        "charon in {ns} exited ({status}) before opening {}; see {}",
                        vici.display(),
                        log_path.display()
                    );
                }
                if Instant::now() > deadline {
                    bail!("charon in {ns}: no vici socket after 10 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let swanctl_path = swanctl.display().to_string();
            let out = running.swanctl(&["--load-all", "--file", &swanctl_path])?;
            if !out.status.success() {
                bail!(
                    "swanctl --load-all in {ns} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout).trim()
                );
            }
        }

        // Both sides know the connection: initiate from the branch. swanctl
        // waits for the CHILD SA and prints the daemon's log meanwhile.
        let initiator = pair.gateways.first().context("no gateway started")?;
        let out = initiator.swanctl(&["--initiate", "--child", CONNECTION, "--timeout", "15"])?;
        let log_path = log_dir.join("strongswan-initiate.log");
        std::fs::write(&log_path, [&out.stdout[..], &out.stderr[..]].concat())
            .with_context(|| format!("writing {}", log_path.display()))?;
        if !out.status.success() {
            bail!(
                "strongSwan: the CHILD SA was not established ({}); see {}",
                out.status,
                log_path.display()
            );
        }

        let probe = host_of(b.lan.1);
        if !ping_until_reachable(a.netns, probe) {
            bail!(
                "strongSwan: no ping from {} to {probe} in 20 tries",
                a.netns
            );
        }
        Ok(pair)
    }

    /// Process ids of the two charons (excluded from "box shared").
    pub fn pids(&self) -> Vec<u32> {
        self.gateways.iter().map(|g| g.child.id()).collect()
    }

    /// `swanctl --list-sas` of the initiating gateway: the SAs with their
    /// byte and packet counters.
    pub fn list_sas(&self) -> Result<String> {
        let g = self.gateways.first().context("no gateway started")?;
        let out = g.swanctl(&["--list-sas"])?;
        if !out.status.success() {
            bail!("swanctl --list-sas failed ({})", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for StrongswanPair {
    fn drop(&mut self) {
        for g in &mut self.gateways {
            // SIGTERM lets charon delete the SAs, its routes and its
            // routing rule.
            let exited = crate::sys::terminate(&mut g.child, Duration::from_secs(3));
            if !exited {
                // Killed: what it would have removed itself stays behind.
                // The TUN device dies with the process; the rule into
                // table 220 does not.
                let _ = g.netns.ip(&["link", "del", "dev", "ipsec0"]);
                let _ = g.netns.ip(&["rule", "del", "table", "220"]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

impl GatewayPair for StrongswanPair {
    fn pids(&self) -> Vec<u32> {
        StrongswanPair::pids(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side() -> SideConfig {
        SideConfig {
            local_addr: "203.0.113.2".into(),
            remote_addr: "203.0.113.1".into(),
            local_ts: "10.1.0.0/16".into(),
            remote_ts: "10.2.0.0/16".into(),
            psk: "0x00ff".into(),
        }
    }

    fn setting<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .filter_map(|rest| rest.trim_start().strip_prefix('='))
            .map(str::trim)
            .collect()
    }

    #[test]
    fn swanctl_conf_names_proposals_encap_and_selectors() {
        let text = swanctl_conf(&side()).unwrap();
        assert_eq!(setting(&text, "proposals"), [IKE_PROPOSALS]);
        assert_eq!(setting(&text, "esp_proposals"), ["aes128gcm16"]);
        assert_eq!(setting(&text, "encap"), ["yes"]);
        assert_eq!(setting(&text, "mode"), ["tunnel"]);
        assert_eq!(setting(&text, "version"), ["2"]);
        assert_eq!(setting(&text, "local_ts"), ["10.1.0.0/16"]);
        assert_eq!(setting(&text, "remote_ts"), ["10.2.0.0/16"]);
        assert_eq!(setting(&text, "local_addrs"), ["203.0.113.2"]);
        assert_eq!(setting(&text, "remote_addrs"), ["203.0.113.1"]);
        assert_eq!(setting(&text, "auth"), ["psk", "psk"]);
        assert_eq!(setting(&text, "secret"), ["0x00ff"]);
        // Every brace opened is closed: swanctl would refuse the file.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn strongswan_conf_loads_libipsec_and_puts_vici_in_the_run_dir() {
        let text = strongswan_conf(Path::new("/tmp/strait-swan-1-2/a/charon.vici")).unwrap();
        assert_eq!(setting(&text, "load_modular"), ["no"]);
        let load = setting(&text, "load");
        let charon: Vec<&str> = load[0].split(' ').collect();
        for p in [
            "kernel-libipsec",
            "kernel-netlink",
            "socket-default",
            "vici",
        ] {
            assert!(charon.contains(&p), "{p} missing from {charon:?}");
        }
        assert_eq!(
            setting(&text, "socket"),
            ["unix:///tmp/strait-swan-1-2/a/charon.vici"; 2]
        );
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn bad_values_are_refused_before_they_reach_a_file() {
        let mut s = side();
        s.remote_ts = "10.2.0.0/16 }\nconnections {".into();
        assert!(matches!(
            swanctl_conf(&s),
            Err(ConfigError::Prefix {
                what: "remote traffic selector",
                ..
            })
        ));
        let mut s = side();
        s.local_ts = "10.1.0.0/33".into();
        assert!(matches!(swanctl_conf(&s), Err(ConfigError::Prefix { .. })));
        let mut s = side();
        s.local_addr = "branch".into();
        assert!(matches!(swanctl_conf(&s), Err(ConfigError::Address { .. })));
        let mut s = side();
        s.psk = "secret\"".into();
        assert_eq!(swanctl_conf(&s), Err(ConfigError::Secret));
        let long = format!("/tmp/{}/charon.vici", "d".repeat(120));
        assert!(matches!(
            strongswan_conf(Path::new(&long)),
            Err(ConfigError::SocketPath(_))
        ));
    }

    #[test]
    fn psk_is_fresh_hex() {
        let (a, b) = (random_psk(), random_psk());
        assert_ne!(a, b);
        assert_eq!(a.len(), 2 + 64);
        let mut s = side();
        s.psk = a;
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn version_drops_the_debian_revision() {
        assert_eq!(upstream_version("5.9.8-5+deb12u6\n"), "5.9.8");
        assert_eq!(upstream_version("1:5.9.13-2"), "5.9.13");
        assert_eq!(upstream_version("5.9.8"), "5.9.8");
    }
}
