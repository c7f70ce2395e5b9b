//! The `[ike]` section read for use: keys from their files, the hub's
//! device registry, the hubs a device registers with; and the checks a
//! start, `straitd --check` and a reload run before anything changes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use strait_dataplane::{Config, IkeConfig, IkeDeviceConfig, IkePeerConfig};
use strait_ike::TrafficSelector;

/// The directory relative key paths are taken from.
pub fn config_dir(config_path: &str) -> PathBuf {
    Path::new(config_path)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Reads a key file (a relative path is taken from `config_dir`): its
/// content without surrounding white space.
pub fn read_key(config_dir: &Path, path: &Path) -> anyhow::Result<Vec<u8>> {
    let path = config_dir.join(path);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("key file {}", path.display()))?;
    let key = text.trim().as_bytes().to_vec();
    if key.is_empty() {
        bail!("key file {} is empty", path.display());
    }
    Ok(key)
}

/// The traffic selectors of a list of prefixes (`addr/len`).
pub fn selectors(prefixes: &[String]) -> anyhow::Result<Vec<TrafficSelector>> {
    prefixes
        .iter()
        .map(|p| {
            let (addr, len) = p
                .split_once('/')
                .ok_or_else(|| anyhow!("prefix {p}: expected ADDRESS/LENGTH"))?;
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| anyhow!("prefix {p}: bad address"))?;
            let len: u8 = len.parse().map_err(|_| anyhow!("prefix {p}: bad length"))?;
            TrafficSelector::prefix(addr, len).ok_or_else(|| anyhow!("prefix {p}: bad length"))
        })
        .collect()
}

/// The hub's registry: who may register, with which key, claiming what.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Registry {
    /// By serial.
    pub devices: HashMap<String, IkeDeviceConfig>,
    /// Each device's key (from its file, or derived from the hub secret).
    pub keys: HashMap<String, Vec<u8>>,
    /// Each device's claimable prefixes as selectors.
    pub selectors: HashMap<String, Vec<TrafficSelector>>,
}

impl Registry {
    /// Reads the registry of `cfg`, keys included.
    pub fn load(cfg: &IkeConfig, config_dir: &Path) -> anyhow::Result<Registry> {
        let secret = cfg
            .device_secret_file
            .as_ref()
            .map(|p| read_key(config_dir, p).context("[ike] device_secret_file"))
            .transpose()?;
        let mut r = Registry::default();
        for d in &cfg.device {
            if r.devices.contains_key(&d.serial) {
                bail!("[[ike.device]] serial {} listed twice", d.serial);
            }
            let ts = selectors(&d.prefixes).with_context(|| format!("device {}", d.serial))?;
            d.local.parse::<Ipv4Addr>().map_err(|_| {
                anyhow!(
                    "device {}: local {:?} is not an IPv4 address",
                    d.serial,
                    d.local
                )
            })?;
            let key = match (&d.key_file, &secret) {
                (Some(path), _) => {
                    read_key(config_dir, path).with_context(|| format!("device {}", d.serial))?
                }
                (None, Some(secret)) => strait_ike::crypto::device_key(secret, &d.serial).into(),
                (None, None) => bail!(
                    "device {}: no key_file, and no [ike] device_secret_file to derive its key from",
                    d.serial
                ),
            };
            r.keys.insert(d.serial.clone(), key);
            r.selectors.insert(d.serial.clone(), ts);
            r.devices.insert(d.serial.clone(), d.clone());
        }
        Ok(r)
    }
}

/// A hub to register with, its addresses parsed.
#[derive(Debug, Clone)]
pub struct HubSpec {
    /// As configured.
    pub config: IkePeerConfig,
    /// Our outer address.
    pub local: Ipv4Addr,
    /// The hub's.
    pub remote: Ipv4Addr,
    /// What we ask to reach through it.
    pub ts: Vec<TrafficSelector>,
}

/// The hubs of `cfg`.
pub fn hubs(cfg: &IkeConfig) -> anyhow::Result<Vec<HubSpec>> {
    cfg.peer
        .iter()
        .map(|p| {
            let parse = |s: &str, what: &str| -> anyhow::Result<Ipv4Addr> {
                s.parse().map_err(|_| {
                    anyhow!(
                        "[[ike.peer]] {}: {what} {s:?} is not an IPv4 address",
                        p.name
                    )
                })
            };
            Ok(HubSpec {
                local: parse(&p.local, "local")?,
                remote: parse(&p.remote, "remote")?,
                // Learning: ask for everything, the hub narrows it to what
                // it offers (RFC 7296 §2.9) and announces the rest.
                ts: if p.learn {
                    selectors(&["0.0.0.0/0".into(), "::/0".into()])?
                } else {
                    selectors(&p.prefixes).with_context(|| format!("peer {}", p.name))?
                },
                config: p.clone(),
            })
        })
        .collect()
}

/// This device's own key, needed when it registers with a hub.
pub fn own_key(cfg: &IkeConfig, config_dir: &Path) -> anyhow::Result<Vec<u8>> {
    match &cfg.key_file {
        Some(path) => read_key(config_dir, path),
        None if cfg.peer.is_empty() => Ok(Vec::new()),
        None => bail!("[ike]: key_file is needed to register with a hub"),
    }
}

/// Checks the `[ike]` section of `config` (read from `path`) as a start
/// would: key files readable, addresses and prefixes well formed.
pub fn check(config: &Config, path: &str) -> anyhow::Result<()> {
    let Some(cfg) = &config.ike else {
        return Ok(());
    };
    let dir = config_dir(path);
    own_key(cfg, &dir)?;
    Registry::load(cfg, &dir)?;
    hubs(cfg)?;
    selectors(&cfg.advertise).context("[ike] advertise")?;
    for p in &cfg.peer {
        selectors(&p.prefixes).with_context(|| format!("peer {}", p.name))?;
        if p.prefixes.is_empty() && !p.learn {
            bail!(
                "[[ike.peer]] {}: no prefixes and learn = false: nothing would reach it",
                p.name
            );
        }
    }
    Ok(())
}

/// Checks that a reload from `old` to `new` changes `[ike]` only where a
/// running daemon takes it up: the registry (devices, the hub secret).
pub fn check_reload(old: &Config, new: &Config, path: &str) -> anyhow::Result<()> {
    match (&old.ike, &new.ike) {
        (None, None) => return Ok(()),
        (Some(_), None) | (None, Some(_)) => {
            bail!("[ike]: adding or removing the key exchange needs a restart")
        }
        (Some(a), Some(b)) => {
            let fixed = |c: &IkeConfig| IkeConfig {
                device: Vec::new(),
                device_secret_file: None,
                ..c.clone()
            };
            if fixed(a) != fixed(b) {
                bail!("[ike]: only its devices and device_secret_file change on a reload; the rest needs a restart");
            }
        }
    }
    check(new, path)
}

/// The key of the device `serial` derived from the `[ike]
/// device_secret_file` of `config`, for provisioning the device.
pub fn derived_key(config: &Config, path: &str, serial: &str) -> anyhow::Result<String> {
    let secret = config
        .ike
        .as_ref()
        .and_then(|c| c.device_secret_file.as_ref())
        .ok_or_else(|| anyhow!("{path}: no [ike] device_secret_file"))?;
    let secret = read_key(&config_dir(path), secret).context("[ike] device_secret_file")?;
    if serial.is_empty() {
        bail!("the serial number is empty");
    }
    Ok(strait_ike::crypto::device_key(&secret, serial))
}
