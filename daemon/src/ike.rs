//! The IKEv2 runtime (RFC 7296): drives the sans-I/O `strait-ike` core
//! with the IKE datagrams the engine hands over (`Engine::service_datagrams`),
//! sends its answers through the engine (`Engine::send_service`), and turns
//! what it negotiates into tunnels of the engine's overlay, so a reload of
//! the file keeps them.
//!
//! * A **device** (`[[ike.peer]]`) registers with its hub under its serial
//!   number and key, re-registering with backoff when the hub is
//!   unreachable, refuses it or is declared dead. Until its tunnel is up,
//!   the hub's prefixes are blackholed: traffic meant for the tunnel is
//!   dropped, never sent in clear by the default route.
//! * A **hub** (`[[ike.device]]`) accepts the devices of its registry: the
//!   serial must be known and the key right (else AUTHENTICATION_FAILED,
//!   logged with the serial and source, and nothing kept); each accepted
//!   device gets a tunnel `site-NAME` carrying the prefixes the registry
//!   lets it claim, which goes when the device does.
//!
//! One thread, woken by the next datagram or the core's next deadline.
//! Rekeys (CREATE_CHILD_SA, either side) keep the tunnel: a new CHILD SA
//! takes over sealing while the one it replaces still opens until its
//! Delete; an IKE SA rekey moves the tunnel to the new IKE SA.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use strait_dataplane::{
    Engine, IkeConfig, IkeDeviceConfig, IkePeerConfig, Overlay, RouteConfig, SaEntryConfig, Secret,
    ServiceDatagram, TunnelConfig,
};
use strait_ike::{
    CipherSuite, CloseReason, Event, Identity, Ike, IkeSaId, Output, PeerConfig, PeerEntry,
    TrafficSelector,
};

/// What `straitctl show ike` and `show devices` report: the runtime's
/// state, published whenever it changes.
#[derive(Debug, Default)]
pub struct IkeView(std::sync::Mutex<IkeState>);

/// The published state.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IkeState {
    /// Hubs this device registers with.
    pub hubs: Vec<HubView>,
    /// The hub's registry and who is registered.
    pub devices: Vec<DeviceView>,
    /// Registrations refused, by reason (`wrong key`, `unknown serial`).
    pub refused: std::collections::BTreeMap<String, u64>,
}

/// One hub as the device sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HubView {
    /// Its tunnel's name.
    pub name: String,
    /// Its address.
    pub remote: String,
    /// `registering`, `up` or `waiting` (to try again).
    pub state: &'static str,
    /// The tunnel's SPIs once up (inbound, outbound).
    pub spis: Option<(u32, u32)>,
    /// Why the last attempt ended, if it failed.
    pub last_error: Option<String>,
}

/// One device of the registry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceView {
    /// Serial number.
    pub serial: String,
    /// Site (its tunnel is `site-SITE`).
    pub site: String,
    /// Registered now.
    pub registered: bool,
    /// Where it registered from.
    pub remote: Option<String>,
    /// Seconds since it last registered (daemon's clock).
    pub registered_seconds_ago: Option<u64>,
    /// Refused attempts with its serial.
    pub refused: u64,
}

impl IkeView {
    /// A copy of the state.
    pub fn get(&self) -> IkeState {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, state: IkeState) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
}

/// UDP-encapsulated ESP (RFC 3948).
const NAT_T_PORT: u16 = 4500;

/// First wait before registering again; doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Longest sleep without a datagram (the core's deadlines come sooner).
const TICK: Duration = Duration::from_millis(100);

/// Reads a key file (a relative path is taken from the configuration
/// file's directory): its content without surrounding white space.
fn read_key(config_dir: &std::path::Path, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
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
fn selectors(prefixes: &[String]) -> anyhow::Result<Vec<TrafficSelector>> {
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

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cipher_name(c: CipherSuite) -> &'static str {
    match c {
        CipherSuite::Aes128Gcm => "aes128-gcm",
        CipherSuite::Aes256Gcm => "aes256-gcm",
        CipherSuite::ChaCha20Poly1305 => "chacha20-poly1305",
    }
}

/// One direction's negotiated SA as the engine takes it.
fn negotiated_sa(spi: u32, cipher: CipherSuite, key: &[u8], esn: bool) -> SaEntryConfig {
    SaEntryConfig {
        spi,
        cipher: cipher_name(cipher).into(),
        key: Secret(hex(key)),
        esn,
        replay_window: None,
        soft_seconds: 0,
        hard_seconds: 0,
        soft_bytes: 0,
        hard_bytes: 0,
        negotiated: true,
    }
}

/// A hub this device registers with.
struct Hub {
    config: IkePeerConfig,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    ts: Vec<TrafficSelector>,
    /// The IKE SA in progress or established.
    sa: Option<IkeSaId>,
    /// Its tunnel, once up.
    tunnel: Option<TunnelConfig>,
    next_attempt: Duration,
    backoff: Duration,
}

/// One CHILD SA pair of a tunnel.
#[derive(Clone)]
struct Child {
    inbound: SaEntryConfig,
    outbound: SaEntryConfig,
    /// The peer accepts it: we asked for it, or the SA it replaced is
    /// deleted (RFC 7296 §2.8).
    seal: bool,
}

/// A registered device's tunnel on the hub.
struct Site {
    serial: String,
    tunnel: TunnelConfig,
}

struct Runtime {
    engine: Arc<Engine>,
    ike: Ike,
    psk: Vec<u8>,
    hubs: Vec<Hub>,
    devices: HashMap<String, IkeDeviceConfig>,
    /// Hub side: the identity each IKE SA authenticated, and its site.
    peers: HashMap<IkeSaId, String>,
    sites: HashMap<IkeSaId, Site>,
    /// Each IKE SA's CHILD SAs, oldest first: more than one while a
    /// rekey's old SA awaits its Delete.
    children: HashMap<IkeSaId, Vec<Child>>,
    /// The last identity the registry was asked about (for the log line
    /// of a refusal).
    last_lookup: Arc<std::sync::Mutex<Option<(String, bool)>>>,
    epoch: Instant,
    view: Arc<IkeView>,
    refused: std::collections::BTreeMap<String, u64>,
    refused_by_serial: HashMap<String, u64>,
    /// When each serial last registered, and from where.
    registered_at: HashMap<String, (Duration, String)>,
    /// Why each hub's last attempt failed.
    hub_errors: HashMap<String, String>,
}

/// Starts the runtime when `[ike]` is configured; it publishes its state
/// into `view`.
pub fn start(
    engine: Arc<Engine>,
    view: Arc<IkeView>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let Some(cfg) = engine.config().ike else {
        return Ok(None);
    };
    let mut runtime = Runtime::new(Arc::clone(&engine), &cfg, view)?;
    let thread = std::thread::Builder::new()
        .name("strait-ike".into())
        .spawn(move || runtime.run(&stop))
        .context("IKE thread")?;
    Ok(Some(thread))
}

impl Runtime {
    fn new(engine: Arc<Engine>, cfg: &IkeConfig, view: Arc<IkeView>) -> anyhow::Result<Runtime> {
        let config_dir = std::path::Path::new(engine.path())
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let psk = match &cfg.key_file {
            Some(path) => read_key(&config_dir, path)?,
            None if cfg.peer.is_empty() => Vec::new(),
            None => bail!("[ike]: key_file is needed to register with a hub"),
        };
        let mut devices = HashMap::new();
        let mut keys = HashMap::new();
        for d in &cfg.device {
            if devices.insert(d.serial.clone(), d.clone()).is_some() {
                bail!("[[ike.device]] serial {} listed twice", d.serial);
            }
            selectors(&d.prefixes).with_context(|| format!("device {}", d.serial))?;
            keys.insert(d.serial.clone(), read_key(&config_dir, &d.key_file)?);
        }
        let mut hubs = Vec::new();
        for p in &cfg.peer {
            let parse = |s: &str, what: &str| -> anyhow::Result<Ipv4Addr> {
                s.parse().map_err(|_| {
                    anyhow!(
                        "[[ike.peer]] {}: {what} {s:?} is not an IPv4 address",
                        p.name
                    )
                })
            };
            hubs.push(Hub {
                local: parse(&p.local, "local")?,
                remote: parse(&p.remote, "remote")?,
                ts: selectors(&p.prefixes).with_context(|| format!("peer {}", p.name))?,
                config: p.clone(),
                sa: None,
                tunnel: None,
                next_attempt: Duration::ZERO,
                backoff: RETRY_FIRST,
            });
        }
        let mut config = strait_ike::Config::new(Identity::Fqdn(cfg.identity.clone()));
        let local_prefixes: Vec<String> = cfg
            .peer
            .iter()
            .flat_map(|p| p.local_prefixes.iter().cloned())
            .collect();
        if !local_prefixes.is_empty() {
            config.local_ts = selectors(&local_prefixes)?;
        }
        config.dpd_interval = (cfg.dpd_seconds > 0).then(|| Duration::from_secs(cfg.dpd_seconds));
        // A request unanswered after 1 + 2 + 4 + 8 s declares the peer
        // dead: with the default 10 s of silence before the liveness
        // check, a dead peer is noticed within 25 s.
        config.retransmit_tries = 4;
        if cfg.rekey_seconds > 0 {
            config.child_rekey_after = Some(Duration::from_secs(cfg.rekey_seconds));
            config.ike_rekey_after = Some(Duration::from_secs(4 * cfg.rekey_seconds));
        }
        let last_lookup = Arc::new(std::sync::Mutex::new(None));
        let seen = Arc::clone(&last_lookup);
        let registry = devices.clone();
        let directory = move |id: &Identity| {
            let Identity::Fqdn(serial) = id else {
                return None;
            };
            let entry = registry.get(serial).and_then(|d: &IkeDeviceConfig| {
                Some(PeerEntry {
                    psk: keys.get(serial)?.clone(),
                    remote_ts: selectors(&d.prefixes).ok()?,
                })
            });
            if let Ok(mut last) = seen.lock() {
                *last = Some((serial.clone(), entry.is_some()));
            }
            entry
        };
        let ike = Ike::new(config, Box::new(directory)).map_err(|e| anyhow!("[ike]: {e}"))?;
        let runtime = Runtime {
            engine,
            ike,
            psk,
            hubs,
            devices,
            peers: HashMap::new(),
            sites: HashMap::new(),
            children: HashMap::new(),
            last_lookup,
            epoch: Instant::now(),
            view,
            refused: Default::default(),
            refused_by_serial: HashMap::new(),
            registered_at: HashMap::new(),
            hub_errors: HashMap::new(),
        };
        runtime.publish();
        Ok(runtime)
    }

    fn run(&mut self, stop: &AtomicBool) {
        let rx = self.engine.service_datagrams();
        while !stop.load(Ordering::Relaxed) {
            let now = self.epoch.elapsed();
            self.register(now);
            let mut wait = TICK;
            if let Some(at) = self.ike.wake_at() {
                wait = wait.min(at.saturating_sub(now));
            }
            for hub in self.hubs.iter().filter(|h| h.sa.is_none()) {
                wait = wait.min(hub.next_attempt.saturating_sub(now));
            }
            let first = rx.recv_timeout(wait.max(Duration::from_millis(1))).ok();
            let now = self.epoch.elapsed();
            for d in first.into_iter().chain(rx.try_iter().take(256)) {
                let outs = self.ike.handle_datagram(
                    now,
                    SocketAddr::V4(d.remote),
                    SocketAddr::V4(d.local),
                    &d.payload,
                );
                self.carry_out(outs, Some(d.remote));
            }
            let outs = self.ike.poll(now);
            self.carry_out(outs, None);
        }
        // Tell the peers, best effort: the engine stops right after.
        let now = self.epoch.elapsed();
        let ids: Vec<IkeSaId> = self
            .hubs
            .iter()
            .filter_map(|h| h.sa)
            .chain(self.sites.keys().copied())
            .collect();
        for id in ids {
            if let Ok(outs) = self.ike.close(now, id) {
                self.carry_out(outs, None);
            }
        }
    }

    /// Starts registering with every hub that has no IKE SA and is due.
    fn register(&mut self, now: Duration) {
        for i in 0..self.hubs.len() {
            let hub = &self.hubs[i];
            if hub.sa.is_some() || now < hub.next_attempt {
                continue;
            }
            let peer = PeerConfig {
                local: SocketAddr::V4(SocketAddrV4::new(hub.local, strait_dataplane::IKE_PORT)),
                remote: SocketAddr::V4(SocketAddrV4::new(hub.remote, strait_dataplane::IKE_PORT)),
                psk: self.psk.clone(),
                remote_id: hub.config.remote_identity.clone().map(Identity::Fqdn),
                remote_ts: hub.ts.clone(),
            };
            match self.ike.initiate(now, peer) {
                Ok((id, outs)) => {
                    tracing::info!(peer = %self.hubs[i].config.name, remote = %self.hubs[i].remote, "registering");
                    self.hubs[i].sa = Some(id);
                    self.show();
                    self.carry_out(outs, None);
                }
                Err(e) => {
                    tracing::warn!(peer = %self.hubs[i].config.name, error = %e, "cannot register");
                    self.retry_later(i, now);
                }
            }
        }
    }

    fn retry_later(&mut self, i: usize, now: Duration) {
        let hub = &mut self.hubs[i];
        hub.sa = None;
        hub.next_attempt = now + hub.backoff;
        hub.backoff = (hub.backoff * 2).min(RETRY_MAX);
    }

    fn carry_out(&mut self, outs: Vec<Output>, from: Option<SocketAddrV4>) {
        let (mut changed, mut events) = (false, false);
        let mut sends = Vec::new();
        // Events first: an answer that creates a CHILD SA leaves only once
        // its inbound SA is installed, so the peer's first packet under it
        // opens.
        for out in outs {
            match out {
                Output::Send(d) => sends.push(d),
                Output::Event(e) => {
                    events = true;
                    changed |= self.event(e, from);
                }
            }
        }
        if changed {
            self.publish();
        } else if events {
            self.show();
        }
        for d in sends {
            let (Some(local), Some(remote)) = (v4(d.local), v4(d.remote)) else {
                continue;
            };
            let sent = self.engine.send_service(ServiceDatagram {
                local,
                remote,
                payload: d.bytes,
            });
            if !sent {
                tracing::warn!(%remote, "IKE datagram dropped: the send queue is full");
            }
        }
    }

    /// Acts on one event; true when the overlay changed.
    fn event(&mut self, e: Event, from: Option<SocketAddrV4>) -> bool {
        let now = self.epoch.elapsed();
        match e {
            Event::IkeSaEstablished {
                ike_sa,
                initiator,
                peer_id,
                remote,
                nat_detected,
                ..
            } => {
                if !initiator {
                    if let Identity::Fqdn(serial) = &peer_id {
                        self.peers.insert(ike_sa, serial.clone());
                    }
                }
                tracing::info!(peer = ?peer_id, %remote, nat_detected, "IKE SA established");
                false
            }
            Event::ChildSaReady {
                ike_sa,
                spi_in,
                spi_out,
                keys_in,
                keys_out,
                cipher,
                esn,
                remote,
                udp_encap,
                initiator,
                ..
            } => {
                let Some(remote) = v4(remote) else {
                    return false;
                };
                let outbound = negotiated_sa(spi_out, cipher, keys_out.as_bytes(), esn);
                let inbound = negotiated_sa(spi_in, cipher, keys_in.as_bytes(), esn);
                // A further CHILD SA on an IKE SA whose tunnel is up is a
                // rekey (RFC 7296 §2.8): the new SAs take over, the old
                // inbound one stays accepted until its Delete, so packets
                // still in flight under it open.
                self.children.entry(ike_sa).or_default().push(Child {
                    inbound: inbound.clone(),
                    outbound: outbound.clone(),
                    seal: initiator,
                });
                if self.tunnel_mut(ike_sa).is_some() {
                    tracing::info!(?ike_sa, spi_in, spi_out, "CHILD SA rekeyed");
                    return self.apply_pairs(ike_sa);
                }
                let encap = if udp_encap {
                    strait_dataplane::EncapConfig::Udp
                } else {
                    strait_dataplane::EncapConfig::Esp
                };
                if let Some(hub) = self.hubs.iter_mut().find(|h| h.sa == Some(ike_sa)) {
                    tracing::info!(peer = %hub.config.name, spi_in, spi_out, "registered: tunnel up");
                    hub.backoff = RETRY_FIRST;
                    self.hub_errors.remove(&hub.config.name);
                    hub.tunnel = Some(TunnelConfig {
                        name: hub.config.name.clone(),
                        local: hub.config.local.clone(),
                        remote: remote.ip().to_string(),
                        float: false,
                        encap,
                        local_port: NAT_T_PORT,
                        remote_port: remote.port(),
                        prefixes: hub.config.prefixes.clone(),
                        local_prefixes: hub.config.local_prefixes.clone(),
                        mtu: None,
                        mss_clamp: true,
                        keepalive: if udp_encap { 10 } else { 0 },
                        outbound,
                        inbound,
                        inbound_extra: Vec::new(),
                        spans: Default::default(),
                    });
                    return true;
                }
                let Some(serial) = self.peers.get(&ike_sa).cloned() else {
                    return false;
                };
                let Some(device) = self.devices.get(&serial) else {
                    return false;
                };
                let name = format!("site-{}", device.site);
                // The same site registering again replaces its tunnel.
                self.sites.retain(|_, s| s.tunnel.name != name);
                tracing::info!(serial = %serial, site = %device.site, %remote, spi_in, spi_out, "device registered: tunnel up");
                self.registered_at
                    .insert(serial.clone(), (now, remote.to_string()));
                self.sites.insert(
                    ike_sa,
                    Site {
                        serial,
                        tunnel: TunnelConfig {
                            name,
                            local: device.local.clone(),
                            remote: remote.ip().to_string(),
                            float: true,
                            encap,
                            local_port: NAT_T_PORT,
                            remote_port: remote.port(),
                            prefixes: device.prefixes.clone(),
                            local_prefixes: Vec::new(),
                            mtu: None,
                            mss_clamp: true,
                            keepalive: 0,
                            outbound,
                            inbound,
                            inbound_extra: Vec::new(),
                            spans: Default::default(),
                        },
                    },
                );
                true
            }
            Event::ChildSaRefused { ike_sa, notify } => {
                tracing::warn!(?ike_sa, notify, "CHILD SA refused");
                false
            }
            Event::ChildSaDeleted { ike_sa, spi_in, .. } => {
                // A rekey's old SA (or a collision's redundant new one)
                // goes; the tunnel stays while another pair is left.
                let left = self.children.get_mut(&ike_sa).map(|pairs| {
                    pairs.retain(|c| c.inbound.spi != spi_in);
                    // The peer deleted what it replaced: it accepts the
                    // newest SA now.
                    let n = pairs.len();
                    if let Some(newest) = pairs.last_mut() {
                        newest.seal |= n == 1;
                    }
                    n
                });
                match left {
                    Some(n) if n > 0 => self.apply_pairs(ike_sa),
                    _ => self.gone(ike_sa, now, "CHILD SA deleted"),
                }
            }
            Event::IkeSaRekeyed { old, new, .. } => {
                // The CHILD SAs carry over unchanged; only the id moves.
                if let Some(serial) = self.peers.remove(&old) {
                    self.peers.insert(new, serial);
                }
                if let Some(site) = self.sites.remove(&old) {
                    self.sites.insert(new, site);
                }
                if let Some(pairs) = self.children.remove(&old) {
                    self.children.insert(new, pairs);
                }
                for hub in self.hubs.iter_mut().filter(|h| h.sa == Some(old)) {
                    hub.sa = Some(new);
                }
                tracing::info!(?old, ?new, "IKE SA rekeyed");
                false
            }
            Event::IkeSaClosed { ike_sa, reason } => {
                let registering = self.hubs.iter().position(|h| h.sa == Some(ike_sa));
                if reason == CloseReason::AuthenticationFailed
                    && registering.is_none()
                    && !self.peers.contains_key(&ike_sa)
                {
                    let (serial, known) = self
                        .last_lookup
                        .lock()
                        .ok()
                        .and_then(|l| l.clone())
                        .unwrap_or_default();
                    let why = if known { "wrong key" } else { "unknown serial" };
                    let source = from.map(|a| a.to_string()).unwrap_or_default();
                    tracing::warn!(serial = %serial, source = %source, reason = why, "device refused");
                    *self.refused.entry(why.to_owned()).or_default() += 1;
                    *self.refused_by_serial.entry(serial).or_default() += 1;
                    self.show();
                }
                if let Some(i) = registering {
                    let name = self.hubs[i].config.name.clone();
                    self.hub_errors.insert(name, format!("{reason:?}"));
                }
                let changed = self.gone(ike_sa, now, &format!("{reason:?}"));
                self.peers.remove(&ike_sa);
                changed
            }
        }
    }

    /// Gives the tunnel of `ike_sa` its CHILD SAs: the newest pair seals
    /// and opens, the older ones still open until they are deleted.
    fn apply_pairs(&mut self, ike_sa: IkeSaId) -> bool {
        let Some(pairs) = self.children.get(&ike_sa).cloned() else {
            return false;
        };
        let Some(newest) = pairs.last() else {
            return false;
        };
        // Seal with the newest SA the peer accepts; open with all.
        let sealing = pairs.iter().rev().find(|c| c.seal).unwrap_or(newest);
        let Some(tunnel) = self.tunnel_mut(ike_sa) else {
            return false;
        };
        tunnel.inbound = newest.inbound.clone();
        tunnel.outbound = sealing.outbound.clone();
        tunnel.inbound_extra = pairs[..pairs.len() - 1]
            .iter()
            .map(|c| c.inbound.clone())
            .collect();
        true
    }

    /// The tunnel the IKE SA `ike_sa` carries, if it is up.
    fn tunnel_mut(&mut self, ike_sa: IkeSaId) -> Option<&mut TunnelConfig> {
        if let Some(hub) = self.hubs.iter_mut().find(|h| h.sa == Some(ike_sa)) {
            return hub.tunnel.as_mut();
        }
        self.sites.get_mut(&ike_sa).map(|s| &mut s.tunnel)
    }

    /// The IKE SA `ike_sa` (or its CHILD SA) is gone: its tunnel goes; a
    /// device registers again later.
    fn gone(&mut self, ike_sa: IkeSaId, now: Duration, why: &str) -> bool {
        self.children.remove(&ike_sa);
        if let Some(i) = self.hubs.iter().position(|h| h.sa == Some(ike_sa)) {
            let hub = &self.hubs[i];
            let had = hub.tunnel.is_some();
            if had {
                tracing::warn!(peer = %hub.config.name, why, "tunnel down: registering again");
            } else {
                tracing::warn!(peer = %hub.config.name, why, "registration failed: trying again");
            }
            self.hubs[i].tunnel = None;
            self.retry_later(i, now);
            return had;
        }
        if let Some(site) = self.sites.remove(&ike_sa) {
            tracing::warn!(serial = %site.serial, site = %site.tunnel.name, why, "device gone: tunnel down");
            return true;
        }
        false
    }

    /// Publishes the state for `show ike` and `show devices`.
    fn show(&self) {
        let now = self.epoch.elapsed();
        let hubs = self
            .hubs
            .iter()
            .map(|h| HubView {
                name: h.config.name.clone(),
                remote: h.remote.to_string(),
                state: match (&h.tunnel, h.sa) {
                    (Some(_), _) => "up",
                    (None, Some(_)) => "registering",
                    (None, None) => "waiting",
                },
                spis: h.tunnel.as_ref().map(|t| (t.inbound.spi, t.outbound.spi)),
                last_error: self.hub_errors.get(&h.config.name).cloned(),
            })
            .collect();
        let mut devices: Vec<DeviceView> = self
            .devices
            .values()
            .map(|d| {
                let registered = self.sites.values().any(|s| s.serial == d.serial);
                let at = self.registered_at.get(&d.serial);
                DeviceView {
                    serial: d.serial.clone(),
                    site: d.site.clone(),
                    registered,
                    remote: at.filter(|_| registered).map(|(_, r)| r.clone()),
                    registered_seconds_ago: at.map(|(t, _)| now.saturating_sub(*t).as_secs()),
                    refused: self.refused_by_serial.get(&d.serial).copied().unwrap_or(0),
                }
            })
            .collect();
        devices.sort_by(|a, b| a.serial.cmp(&b.serial));
        self.view.set(IkeState {
            hubs,
            devices,
            refused: self.refused.clone(),
        });
    }

    /// Gives the engine the tunnels up now, and blackholes for the hubs'
    /// prefixes while their tunnels are down.
    fn publish(&self) {
        self.show();
        let mut overlay = Overlay::default();
        for hub in &self.hubs {
            match &hub.tunnel {
                Some(t) => overlay.tunnels.push(t.clone()),
                None => overlay
                    .routes
                    .extend(hub.config.prefixes.iter().map(|p| RouteConfig {
                        prefix: p.clone(),
                        via: Vec::new(),
                        dev: None,
                        kind: Some("blackhole".into()),
                        spans: Default::default(),
                    })),
            }
        }
        let mut sites: Vec<&Site> = self.sites.values().collect();
        sites.sort_by(|a, b| a.tunnel.name.cmp(&b.tunnel.name));
        overlay
            .tunnels
            .extend(sites.iter().map(|s| s.tunnel.clone()));
        if let Err(e) = self.engine.set_overlay(overlay) {
            tracing::error!(error = %e, "negotiated tunnels not applied");
        }
    }
}
