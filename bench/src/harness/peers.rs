//! The userspace encrypted tunnels a user would pick instead of Strait
//! (wireguard-go, boringtun), run as the gateway pair of the site-to-site
//! bed so they carry exactly the traffic Strait carries.
//!
//! Each gateway keeps its addresses in the kernel, forwards between its LAN
//! and a WireGuard TUN device served by the userspace implementation, and
//! routes the far LAN prefix into that device. Keys come from `wg genkey` /
//! `wg pubkey`; peers are configured over the implementation's UAPI socket
//! with `wg set`. Everything a [`WgPair`] starts is killed when it drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strait_testbed::Netns;

/// The boringtun release measured on this bed (BENCHMARKING.md).
pub const BORINGTUN_CRATE: &str = "boringtun-cli";

/// A userspace WireGuard implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Implementation {
    /// wireguard-go (the Debian package).
    WireguardGo,
    /// boringtun-cli (crates.io), at this path.
    Boringtun(PathBuf),
}

impl Implementation {
    /// Name for result tables.
    pub fn label(&self) -> &'static str {
        match self {
            Implementation::WireguardGo => "wireguard-go",
            Implementation::Boringtun(_) => "boringtun",
        }
    }

    /// The command line that serves interface `ifname` in the foreground.
    pub fn argv(&self, ifname: &str) -> Vec<String> {
        match self {
            Implementation::WireguardGo => {
                vec!["wireguard-go".into(), "-f".into(), ifname.into()]
            }
            Implementation::Boringtun(bin) => vec![
                bin.display().to_string(),
                "-f".into(),
                // It stays root inside the namespace; the bed is torn down
                // with it.
                "--disable-drop-privileges".into(),
                ifname.into(),
            ],
        }
    }

    /// The installed version, for the results.
    pub fn version(&self) -> String {
        let out = match self {
            Implementation::WireguardGo => Command::new("dpkg-query")
                .args(["-W", "-f=${Version}", "wireguard-go"])
                .output(),
            Implementation::Boringtun(bin) => Command::new(bin).arg("--version").output(),
        };
        // boringtun prints "boringtun 0.7.1": keep the version only.
        out.ok()
            .map(|o| {
                let v = String::from_utf8_lossy(&o.stdout);
                v.trim().rsplit(' ').next().unwrap_or_default().to_owned()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "unknown version".into())
    }
}

/// A WireGuard key (Curve25519, 32 bytes) in its base64 text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgKey(String);

/// Why a key text was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// 32 bytes encode to 43 base64 characters and one `=`.
    #[error("a WireGuard key is 44 base64 characters, got {0}")]
    Length(usize),
    /// A character outside the standard base64 alphabet.
    #[error("not base64: {0:?}")]
    Alphabet(char),
}

impl WgKey {
    /// Validates the text `wg genkey` / `wg pubkey` print.
    pub fn parse(text: &str) -> Result<WgKey, KeyError> {
        let t = text.trim();
        if t.len() != 44 {
            return Err(KeyError::Length(t.len()));
        }
        let (body, pad) = t.split_at(43);
        if pad != "=" {
            return Err(KeyError::Alphabet(pad.chars().next().unwrap_or('=')));
        }
        if let Some(c) = body
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '+' || *c == '/'))
        {
            return Err(KeyError::Alphabet(c));
        }
        Ok(WgKey(t.to_owned()))
    }

    /// The base64 text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A private key and its public key.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// Private key.
    pub private: WgKey,
    /// Public key derived by `wg pubkey`.
    pub public: WgKey,
}

impl KeyPair {
    /// A fresh pair from `wg genkey | wg pubkey`.
    pub fn generate() -> Result<KeyPair> {
        let out = Command::new("wg")
            .arg("genkey")
            .output()
            .context("wg genkey")?;
        if !out.status.success() {
            bail!("wg genkey: {}", String::from_utf8_lossy(&out.stderr));
        }
        let private = WgKey::parse(&String::from_utf8_lossy(&out.stdout))?;
        let mut child = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("wg pubkey")?;
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().context("wg pubkey stdin")?;
            writeln!(stdin, "{}", private.as_str())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("wg pubkey failed");
        }
        let public = WgKey::parse(&String::from_utf8_lossy(&out.stdout))?;
        Ok(KeyPair { private, public })
    }
}

/// One gateway of the pair: where its tunnel ends and what it carries.
#[derive(Debug, Clone)]
pub struct Gateway<'a> {
    /// Its namespace.
    pub netns: &'a Netns,
    /// LAN interface and its address (`10.1.0.1/24`).
    pub lan: (&'a str, &'a str),
    /// WAN interface and its address (`203.0.113.2/24`).
    pub wan: (&'a str, &'a str),
    /// Address inside the tunnel (`10.98.0.1/24`).
    pub inner: &'a str,
    /// The prefix behind this gateway (`10.1.0.0/16`): the other side
    /// routes it into its tunnel and accepts it from this peer.
    pub site: &'a str,
}

/// The two gateways of `scripts/topologies/bench-site.topo` as the harness
/// runs them: the branch (LAN 10.1.0.0/16) and the hub (LAN 10.2.0.0/16),
/// joined on 203.0.113.0/24.
pub fn site_gateways<'a>(branch: &'a Netns, hub: &'a Netns) -> (Gateway<'a>, Gateway<'a>) {
    (
        Gateway {
            netns: branch,
            lan: ("lan", "10.1.0.1/24"),
            wan: ("wan", "203.0.113.2/24"),
            inner: "10.98.0.1/24",
            site: "10.1.0.0/16",
        },
        Gateway {
            netns: hub,
            lan: ("lan", "10.2.0.1/24"),
            wan: ("wan", "203.0.113.1/24"),
            inner: "10.98.0.2/24",
            site: "10.2.0.0/16",
        },
    )
}

/// The tunnel MTU the peers were measured with (BENCHMARKING.md): 1420
/// leaves room for the 60-byte WireGuard/UDP/IPv4 overhead under 1500.
pub const TUNNEL_MTU: &str = "1420";

/// The WireGuard listen port on both gateways.
pub const LISTEN_PORT: u16 = 51820;

/// `wg set` arguments configuring one side: our key, our port, and the
/// other gateway as the only peer, reachable at `endpoint`, owning
/// `allowed` (its LAN and its tunnel address).
pub fn wg_set_args(
    ifname: &str,
    key_file: &Path,
    peer: &WgKey,
    endpoint: &str,
    allowed: &[&str],
) -> Vec<String> {
    vec![
        "wg".into(),
        "set".into(),
        ifname.into(),
        "private-key".into(),
        key_file.display().to_string(),
        "listen-port".into(),
        LISTEN_PORT.to_string(),
        "peer".into(),
        peer.as_str().into(),
        "endpoint".into(),
        format!("{endpoint}:{LISTEN_PORT}"),
        "allowed-ips".into(),
        allowed.join(","),
    ]
}

/// `10.2.0.1/24` → `10.2.0.1`.
pub fn host_of(cidr: &str) -> &str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// `10.98.0.2/24` → `10.98.0.2/32`: the tunnel address the peer owns.
pub fn host_route(cidr: &str) -> String {
    format!("{}/32", host_of(cidr))
}

/// Pings `to` from `from` until a reply comes back, at most 20 tries of
/// one second: the first packets across a new tunnel make its gateways
/// resolve their neighbours or shake hands, and may be lost doing so.
pub fn ping_until_reachable(from: &Netns, to: &str) -> bool {
    (0..20).any(|_| {
        from.output(&["ping", "-c", "1", "-W", "1", to])
            .is_ok_and(|o| o.status.success())
    })
}

/// A running pair of peer gateways, torn down when dropped.
pub trait GatewayPair {
    /// Process ids of the implementation on both gateways (excluded from
    /// "box shared").
    fn pids(&self) -> Vec<u32>;
}

impl GatewayPair for WgPair {
    fn pids(&self) -> Vec<u32> {
        WgPair::pids(self)
    }
}

/// A running gateway pair; stops both implementations on drop.
#[derive(Debug)]
pub struct WgPair {
    children: Vec<(Netns, Child, String)>,
    key_dir: PathBuf,
}

impl WgPair {
    /// Starts `imp` on both gateways, configures them as each other's peer
    /// and waits (bounded) until a ping crosses the tunnel. `tag` keeps the
    /// interface names unique per run: the UAPI sockets live in the shared
    /// `/var/run/wireguard`.
    pub fn start(
        imp: &Implementation,
        a: &Gateway<'_>,
        b: &Gateway<'_>,
        tag: &str,
        log_dir: &Path,
    ) -> Result<WgPair> {
        let key_dir = log_dir.join(format!("wg-keys-{tag}"));
        std::fs::create_dir_all(&key_dir)?;
        let mut pair = WgPair {
            children: Vec::new(),
            key_dir,
        };
        let keys = [KeyPair::generate()?, KeyPair::generate()?];
        let sides = [
            (a, b, &keys[0], &keys[1], 'a'),
            (b, a, &keys[1], &keys[0], 'b'),
        ];
        for (me, other, mine, theirs, side) in sides {
            // Interface names are limited to 15 bytes.
            let ifname: String = format!("wg{tag}{side}").chars().take(15).collect();
            let ns = me.netns;
            for (dev, cidr) in [me.lan, me.wan] {
                ns.addr(dev, cidr)?;
            }
            ns.sysctl("net.ipv4.ip_forward", "1")?;
            let argv = imp.argv(&ifname);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let log = std::fs::File::create(log_dir.join(format!("{}-{side}.log", imp.label())))?;
            let child = ns
                .command(&argv)
                .env("WG_PROCESS_FOREGROUND", "1")
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", argv.join(" ")))?;
            pair.children.push((ns.clone(), child, ifname.clone()));
            let deadline = Instant::now() + Duration::from_secs(10);
            while ns.ip(&["link", "show", "dev", &ifname]).is_err() {
                if Instant::now() > deadline {
                    bail!("{}: {ifname} did not appear in 10 s", imp.label());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let key_file = pair.key_dir.join(format!("{side}.key"));
            std::fs::write(&key_file, format!("{}\n", mine.private.as_str()))?;
            let peer_inner = host_route(other.inner);
            let set = wg_set_args(
                &ifname,
                &key_file,
                &theirs.public,
                host_of(other.wan.1),
                &[other.site, &peer_inner],
            );
            let set: Vec<&str> = set.iter().map(String::as_str).collect();
            ns.run(&set)?;
            ns.addr(&ifname, me.inner)?;
            ns.ip(&["link", "set", "dev", &ifname, "mtu", TUNNEL_MTU, "up"])?;
            ns.route(&[other.site, "dev", &ifname])?;
        }
        // The first packet starts the handshake; ping until the path works.
        if !ping_until_reachable(a.netns, host_of(b.inner)) {
            bail!("{}: no ping across the tunnel in 20 tries", imp.label());
        }
        Ok(pair)
    }

    /// Process ids of the implementations (excluded from "box shared").
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c, _)| c.id()).collect()
    }
}

impl Drop for WgPair {
    fn drop(&mut self) {
        for (ns, child, ifname) in &mut self.children {
            crate::sys::terminate(child, Duration::from_secs(3));
            // A killed implementation may leave its TUN device and socket.
            let _ = ns.ip(&["link", "del", "dev", ifname]);
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{ifname}.sock"));
        }
        let _ = std::fs::remove_dir_all(&self.key_dir);
    }
}

/// boringtun-cli: on `PATH`, in `cache`, or installed there with
/// `cargo install --locked` (minutes, once). `None` with the reason when it
/// cannot be had.
pub fn boringtun(cache: &Path) -> std::result::Result<PathBuf, String> {
    if strait_testbed::have_program(BORINGTUN_CRATE) {
        return Ok(PathBuf::from(BORINGTUN_CRATE));
    }
    let bin = cache.join("bin").join(BORINGTUN_CRATE);
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!(
        "installing {BORINGTUN_CRATE} into {} (once; may take minutes)…",
        cache.display()
    );
    let status = Command::new("cargo")
        .args(["install", "--locked", "--quiet", BORINGTUN_CRATE, "--root"])
        .arg(cache)
        .status();
    match status {
        Ok(s) if s.success() && bin.is_file() => Ok(bin),
        Ok(s) => Err(format!("cargo install {BORINGTUN_CRATE} failed ({s})")),
        Err(e) => Err(format!("cargo install {BORINGTUN_CRATE}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

    #[test]
    fn key_accepts_wg_output_with_newline() {
        let k = WgKey::parse(&format!("{KEY}\n")).unwrap();
        assert_eq!(k.as_str(), KEY);
    }

    #[test]
    fn key_rejects_wrong_length_and_alphabet() {
        assert_eq!(WgKey::parse("abc"), Err(KeyError::Length(3)));
        let bad = KEY.replacen('+', "-", 1);
        assert_eq!(WgKey::parse(&bad), Err(KeyError::Alphabet('-')));
        let unpadded = format!("{}A", &KEY[..43]);
        assert_eq!(WgKey::parse(&unpadded), Err(KeyError::Alphabet('A')));
    }

    #[test]
    fn wg_set_names_peer_endpoint_and_allowed_ips() {
        let peer = WgKey::parse(KEY).unwrap();
        let args = wg_set_args(
            "wgxa",
            Path::new("/k/a.key"),
            &peer,
            "203.0.113.1",
            &["10.2.0.0/16", "10.98.0.2/32"],
        );
        let line = args.join(" ");
        assert_eq!(
            line,
            format!(
                "wg set wgxa private-key /k/a.key listen-port 51820 peer {KEY} \
                 endpoint 203.0.113.1:51820 allowed-ips 10.2.0.0/16,10.98.0.2/32"
            )
        );
    }

    #[test]
    fn addresses_split_and_widen() {
        assert_eq!(host_of("10.2.0.1/24"), "10.2.0.1");
        assert_eq!(host_of("10.2.0.1"), "10.2.0.1");
        assert_eq!(host_route("10.98.0.2/24"), "10.98.0.2/32");
    }

    #[test]
    fn implementations_run_in_the_foreground() {
        let go = Implementation::WireguardGo.argv("wg1a");
        assert_eq!(go, ["wireguard-go", "-f", "wg1a"]);
        let bt = Implementation::Boringtun(PathBuf::from("/c/bin/boringtun-cli")).argv("wg1b");
        assert_eq!(bt[0], "/c/bin/boringtun-cli");
        assert!(bt.contains(&"--disable-drop-privileges".to_owned()));
        assert_eq!(bt.last().map(String::as_str), Some("wg1b"));
    }
}
