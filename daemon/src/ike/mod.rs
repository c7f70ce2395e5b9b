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
//!   Keys come from a file per device, or are derived from one hub secret
//!   and the serial (`registry`). A source refused again and again is
//!   rate limited (`limit`).
//!
//! One thread, woken by the next datagram or the core's next deadline.
//! Datagrams are taken in batches: the tunnels a batch brings up are
//! applied in one table update before the batch's answers leave.
//! Rekeys (CREATE_CHILD_SA, either side) keep the tunnel: a new CHILD SA
//! takes over sealing while the one it replaces still opens until its
//! Delete; an IKE SA rekey moves the tunnel to the new IKE SA. CHILD SAs
//! rekey by time (the core's timer), and by bytes or sequence numbers
//! when the engine reports an SA near its limit. Liveness checks go only
//! to peers whose inbound SAs opened nothing since the last one: the
//! workers' SA counters are read every second.

mod limit;
pub mod registry;
pub mod sites;
mod view;

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use crossbeam::channel::{Receiver, Sender};
use strait_dataplane::{
    Engine, EngineEvent, IkeConfig, Overlay, RouteConfig, SaDirection, SaEntryConfig, Secret,
    ServiceDatagram, TunnelConfig,
};
use strait_ike::{
    CipherSuite, CloseReason, Event, Identity, Ike, IkeSaId, Output, PeerConfig, PeerEntry,
    TrafficSelector,
};

use limit::RefusalLimiter;
pub use registry::{check, check_reload, derived_key};
use registry::{HubSpec, Registry};
use sites::Holdings;
pub use view::{DeviceView, HubView, IkeCounters, IkeSaView, IkeState, IkeView, SiteView};

/// UDP-encapsulated ESP (RFC 3948).
const NAT_T_PORT: u16 = 4500;

/// First wait before registering again; doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Longest sleep without a datagram (the core's deadlines come sooner).
const TICK: Duration = Duration::from_millis(100);

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

/// One direction's negotiated SA as the engine takes it; `rekey_bytes`
/// (0: none) is its soft byte lifetime, so the engine reports when a
/// rekey is due (the rekey by time is the core's); the hard one, twice
/// that, leaves room for the workers' half-second reporting and the
/// exchange even on a fast link.
fn negotiated_sa(
    spi: u32,
    cipher: CipherSuite,
    key: &[u8],
    esn: bool,
    rekey_bytes: u64,
) -> SaEntryConfig {
    SaEntryConfig {
        spi,
        cipher: cipher_name(cipher).into(),
        key: Secret(hex(key)),
        esn,
        replay_window: None,
        soft_seconds: 0,
        hard_seconds: 0,
        soft_bytes: rekey_bytes,
        hard_bytes: rekey_bytes.saturating_mul(2),
        negotiated: true,
    }
}

/// `configured`, then those of `more` not in it: a hub's tunnel carries
/// the prefixes configured for it and those it announced; its selectors
/// let out what we claim besides our own.
fn hub_prefixes(configured: &[String], learned: &[String]) -> Vec<String> {
    let mut out = configured.to_vec();
    out.extend(learned.iter().filter(|p| !configured.contains(p)).cloned());
    out
}

/// A hub this device registers with.
struct Hub {
    spec: HubSpec,
    /// The IKE SA in progress or established.
    sa: Option<IkeSaId>,
    /// Its tunnel, once up.
    tunnel: Option<TunnelConfig>,
    next_attempt: Duration,
    backoff: Duration,
    /// The prefixes it announced we reach through it (kept blackholed
    /// while it is down).
    learned: Vec<String>,
    /// Our claims it refused or narrowed, if any.
    claims_refused: Option<String>,
    /// Fingerprint of the claims last announced to it.
    announced: Option<u64>,
}

/// One CHILD SA pair of a tunnel.
#[derive(Clone)]
struct Child {
    inbound: SaEntryConfig,
    outbound: SaEntryConfig,
    /// The peer accepts it: we asked for it, or the SA it replaced is
    /// deleted (RFC 7296 §2.8).
    seal: bool,
    /// Deleted: it still opens until then, for packets the peer sealed
    /// before it switched that are still on their way.
    retire_at: Option<Duration>,
}

/// How long a deleted CHILD SA still opens: the peer's workers may seal a
/// last batch under it after its Delete answer left.
const RETIRE_GRACE: Duration = Duration::from_secs(2);

/// A registered device's tunnel on the hub.
struct Site {
    serial: String,
    tunnel: TunnelConfig,
    /// Its claims refused at registration, each with the reason.
    refused: Vec<String>,
    /// The peer takes route announcements.
    peer_routes: bool,
    /// Fingerprint of what it was last announced (not the set: that
    /// would cost every site the size of all the others).
    announced: Option<u64>,
}

/// How often the workers' SA counters are read for liveness.
const LIVENESS_SCAN: Duration = Duration::from_secs(1);

/// Half-open IKE SAs past which a new one must return a COOKIE first
/// (RFC 7296 §2.6): a registration storm costs the hub a round trip per
/// device, a spoofed flood costs it no DH.
const COOKIE_THRESHOLD: usize = 256;

struct Runtime {
    engine: Arc<Engine>,
    ike: Ike,
    psk: Vec<u8>,
    hubs: Vec<Hub>,
    /// The `[ike]` in force (a reload compares against it).
    cfg: IkeConfig,
    /// The hub's registry, shared with the core's directory.
    registry: Arc<RwLock<Registry>>,
    /// Lifetime events of the engine's SAs, handed on by the daemon.
    sa_events: Receiver<EngineEvent>,
    /// Inbound packets per inbound SPI at the last liveness scan.
    inbound_seen: HashMap<u32, u64>,
    next_scan: Duration,
    limiter: RefusalLimiter,
    counters: IkeCounters,
    rekey_bytes: u64,
    /// Hub: what the sites hold, shared with the core's directory.
    holdings: Arc<RwLock<Holdings>>,
    /// Hub: prefixes offered to every site (`[ike] advertise`).
    advertise: Vec<TrafficSelector>,
    /// Hub: other sites' prefixes are offered too.
    transit: bool,
    /// Hub: claims refused lately, for the site that registers next:
    /// (IKE SA, reasons).
    refusals: HashMap<IkeSaId, Vec<String>>,
    /// Hub: each site's last change (the daemon's clock).
    site_changed: HashMap<String, Duration>,
    /// Hub side: the identity each IKE SA authenticated, and its site.
    peers: HashMap<IkeSaId, String>,
    sites: HashMap<IkeSaId, Site>,
    /// Each IKE SA's CHILD SAs, oldest first: more than one while a
    /// rekey's old SA awaits its Delete.
    children: HashMap<IkeSaId, Vec<Child>>,
    /// The last identity the registry was asked about (for the log line
    /// of a refusal).
    last_lookup: Arc<std::sync::Mutex<Option<(String, bool)>>>,
    /// IKE SAs established and not yet closed.
    up: std::collections::HashSet<IkeSaId>,
    /// Those whose peers take route announcements.
    routes_ok: std::collections::HashSet<IkeSaId>,
    /// Hub: each site's claims refused at its last registration attempt.
    claims_refused: HashMap<String, Vec<String>>,
    /// The IKE SAs as last read (once a second: the list is as long as
    /// the registry).
    sa_views: Vec<IkeSaView>,
    /// Datagrams waiting for the next flush.
    outbox: Vec<strait_ike::Datagram>,
    /// The overlay changed since the last flush.
    dirty: bool,
    /// The published view is up to date.
    shown: bool,
    epoch: Instant,
    view: Arc<IkeView>,
    refused: std::collections::BTreeMap<String, u64>,
    refused_by_serial: HashMap<String, u64>,
    /// When each serial last registered, and from where.
    registered_at: HashMap<String, (Duration, String)>,
    /// Why each hub's last attempt failed.
    hub_errors: HashMap<String, String>,
}

/// The running key exchange: its thread, and where the daemon hands it
/// the engine's events.
#[derive(Debug)]
pub struct IkeRuntime {
    /// The thread; it ends when `stop` is set.
    pub thread: JoinHandle<()>,
    /// Takes the engine's events (SA lifetimes: rekeys are due); never
    /// blocks, a full queue drops.
    pub events: Sender<EngineEvent>,
}

/// Starts the runtime when `[ike]` is configured; it publishes its state
/// into `view`.
pub fn start(
    engine: Arc<Engine>,
    view: Arc<IkeView>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Option<IkeRuntime>> {
    let Some(cfg) = engine.config().ike else {
        return Ok(None);
    };
    let (events, sa_events) = crossbeam::channel::bounded(1024);
    let mut runtime = Runtime::new(Arc::clone(&engine), &cfg, view, sa_events)?;
    let thread = std::thread::Builder::new()
        .name("strait-ike".into())
        .spawn(move || runtime.run(&stop))
        .context("IKE thread")?;
    Ok(Some(IkeRuntime { thread, events }))
}

impl Runtime {
    fn new(
        engine: Arc<Engine>,
        cfg: &IkeConfig,
        view: Arc<IkeView>,
        sa_events: Receiver<EngineEvent>,
    ) -> anyhow::Result<Runtime> {
        let config_dir = registry::config_dir(engine.path());
        let psk = registry::own_key(cfg, &config_dir)?;
        let registry = Arc::new(RwLock::new(Registry::load(cfg, &config_dir)?));
        let hubs = registry::hubs(cfg)?
            .into_iter()
            .map(|spec| Hub {
                spec,
                sa: None,
                tunnel: None,
                next_attempt: Duration::ZERO,
                backoff: RETRY_FIRST,
                learned: Vec::new(),
                claims_refused: None,
                announced: None,
            })
            .collect();
        let mut config = strait_ike::Config::new(Identity::Fqdn(cfg.identity.clone()));
        let local_prefixes: Vec<String> = cfg
            .peer
            .iter()
            .flat_map(|p| p.local_prefixes.iter().cloned())
            .collect();
        config.local_ts = if local_prefixes.is_empty() {
            // Both families: a hub offers what `advertise` and transit
            // say, per device (below).
            registry::selectors(&["0.0.0.0/0".into(), "::/0".into()])?
        } else {
            registry::selectors(&local_prefixes)?
        };
        let advertise = registry::selectors(&cfg.advertise).context("[ike] advertise")?;
        config.dpd_interval = (cfg.dpd_seconds > 0).then(|| Duration::from_secs(cfg.dpd_seconds));
        // A request unanswered after 1 + 2 + 4 + 8 s declares the peer
        // dead: with the default 10 s of silence before the liveness
        // check, a dead peer is noticed within 25 s.
        config.retransmit_tries = 4;
        config.cookie_threshold = Some(COOKIE_THRESHOLD);
        if cfg.rekey_seconds > 0 {
            config.child_rekey_after = Some(Duration::from_secs(cfg.rekey_seconds));
            config.ike_rekey_after = Some(Duration::from_secs(4 * cfg.rekey_seconds));
        }
        let last_lookup = Arc::new(std::sync::Mutex::new(None));
        let seen = Arc::clone(&last_lookup);
        let lookup = Arc::clone(&registry);
        let holdings = Arc::new(RwLock::new(Holdings::default()));
        let held = Arc::clone(&holdings);
        let directory = move |id: &Identity| {
            let Identity::Fqdn(serial) = id else {
                return None;
            };
            let r = lookup.read().unwrap_or_else(|p| p.into_inner());
            let h = held.read().unwrap_or_else(|p| p.into_inner());
            let site = r.devices.get(serial).map(|d| d.site.as_str()).unwrap_or("");
            let entry = r
                .keys
                .get(serial)
                .zip(r.selectors.get(serial))
                .map(|(psk, ts)| PeerEntry {
                    psk: psk.clone(),
                    remote_ts: ts.clone(),
                    // TSr as the peer asks (any of `Config::local_ts`):
                    // what it reaches is announced, a set that outgrows a
                    // datagram's TS payload with a few dozen sites.
                    local_ts: None,
                    conflicts: h.others(site),
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
            cfg: cfg.clone(),
            registry,
            sa_events,
            inbound_seen: HashMap::new(),
            next_scan: Duration::ZERO,
            limiter: RefusalLimiter::default(),
            counters: IkeCounters::default(),
            rekey_bytes: cfg.rekey_bytes,
            holdings,
            advertise,
            transit: cfg.transit,
            refusals: HashMap::new(),
            site_changed: HashMap::new(),
            up: Default::default(),
            routes_ok: Default::default(),
            claims_refused: HashMap::new(),
            sa_views: Vec::new(),
            outbox: Vec::new(),
            dirty: false,
            shown: true,
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
            if self.view.take_reload() {
                self.reload(now);
            }
            self.register(now);
            let mut wait = TICK.min(self.next_scan.saturating_sub(now));
            if let Some(at) = self.ike.wake_at() {
                wait = wait.min(at.saturating_sub(now));
            }
            for hub in self.hubs.iter().filter(|h| h.sa.is_none()) {
                wait = wait.min(hub.next_attempt.saturating_sub(now));
            }
            let first = rx.recv_timeout(wait.max(Duration::from_millis(1))).ok();
            let now = self.epoch.elapsed();
            // A batch of datagrams, then one table update for all the
            // tunnels they brought up, then their answers.
            for d in first.into_iter().chain(rx.try_iter().take(255)) {
                let source = std::net::IpAddr::V4(*d.remote.ip());
                if limit::is_ike_sa_init_request(&d.payload, d.local.port())
                    && !self.limiter.allows(source, now)
                {
                    self.counters.rate_limited += 1;
                    self.shown = false;
                    continue;
                }
                let outs = self.ike.handle_datagram(
                    now,
                    SocketAddr::V4(d.remote),
                    SocketAddr::V4(d.local),
                    &d.payload,
                );
                self.absorb(outs, Some(d.remote));
            }
            while let Ok(e) = self.sa_events.try_recv() {
                self.sa_lifetime(now, &e);
            }
            if now >= self.next_scan {
                self.next_scan = now + LIVENESS_SCAN;
                self.scan_liveness(now);
                // Counters and half-open SAs change without events.
                self.shown = false;
                self.sa_views = self.sa_views(now);
            }
            let outs = self.ike.poll(now);
            self.absorb(outs, None);
            self.retire(now);
            self.flush();
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
                self.absorb(outs, None);
            }
        }
        self.flush();
    }

    /// Hub: a device announced its claims anew (`RoutesReceived` from a
    /// site): it keeps those the registry allows and no other site holds;
    /// true when its tunnel changed.
    fn claims(&mut self, now: Duration, ike_sa: IkeSaId, claimed: &[TrafficSelector]) -> bool {
        let Some(site_name) = self.site_of(ike_sa) else {
            return false;
        };
        let Some(site) = self.sites.get(&ike_sa) else {
            return false;
        };
        let allowed = self
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .selectors
            .get(&site.serial)
            .cloned()
            .unwrap_or_default();
        let holdings = self
            .holdings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let others = holdings.others(&site_name);
        let (mut accepted, mut refused) = (Vec::new(), Vec::new());
        for c in claimed {
            let ok = allowed.iter().any(|a| a.contains(c))
                && !others.iter().any(|o| o.intersect(c).is_some());
            match (ok, sites::prefix_text(c)) {
                (true, Some(p)) => accepted.push(p),
                _ => refused.push(holdings.why_refused(&site_name, c)),
            }
        }
        let serial = site.serial.clone();
        for why in &refused {
            tracing::warn!(serial = %serial, site = %site_name, "claim refused: {why}");
        }
        let Some(site) = self.sites.get_mut(&ike_sa) else {
            return false;
        };
        site.refused = refused;
        self.shown = false;
        if site.tunnel.prefixes == accepted {
            return false;
        }
        tracing::info!(site = %site_name, prefixes = %accepted.join(","), "site claims changed");
        site.tunnel.prefixes = accepted;
        self.site_changed.insert(site_name, now);
        true
    }

    /// The core's IKE SAs for `show ike`.
    fn sa_views(&self, now: Duration) -> Vec<IkeSaView> {
        let due = |t: Option<Duration>| t.map(|t| t.saturating_sub(now).as_secs());
        self.ike
            .sa_infos()
            .into_iter()
            .map(|i| IkeSaView {
                spi: format!("{:016x}", i.id.0),
                peer: i.remote.to_string(),
                identity: i.peer_id.map(|p| p.to_string()),
                state: i.state,
                initiator: i.initiator,
                nat_t: i.nat_detected,
                group: i.group.id(),
                rekey_in: due(i.rekey_at),
                children: i
                    .children
                    .into_iter()
                    .map(|(a, b, t)| (a, b, due(t)))
                    .collect(),
            })
            .collect()
    }

    /// Hub: the site the device of `ike_sa` belongs to.
    fn site_of(&self, ike_sa: IkeSaId) -> Option<String> {
        let serial = self.peers.get(&ike_sa)?;
        let r = self.registry.read().unwrap_or_else(|p| p.into_inner());
        r.devices.get(serial).map(|d| d.site.clone())
    }

    /// Hub: announces to every site that takes announcements what it is
    /// offered now, where that changed.
    fn announce(&mut self, now: Duration) {
        let holdings = self
            .holdings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let registry = self
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut outs = Vec::new();
        for (id, site) in self.sites.iter_mut().filter(|(_, s)| s.peer_routes) {
            let Some(name) = registry.devices.get(&site.serial).map(|d| d.site.as_str()) else {
                continue;
            };
            let offer = holdings.offer(name, &self.advertise, self.transit);
            let print = sites::fingerprint(&offer);
            if site.announced == Some(print) {
                continue;
            }
            match self.ike.send_routes(now, *id, &offer) {
                Ok(o) => {
                    outs.extend(o);
                    site.announced = Some(print);
                }
                Err(e) => tracing::debug!(site = %name, error = %e, "routes not announced"),
            }
        }
        // To each hub we are registered with: what we claim, our own
        // prefixes, our `advertise` and what our sites hold, never what a
        // hub announced to us (no loops between hubs).
        let mut claims = self.ike.config().local_ts.clone();
        claims.retain(|t| t.as_prefix().is_some_and(|(_, len)| len > 0));
        for ts in self.advertise.iter().cloned().chain(holdings.own()) {
            if !claims.contains(&ts) {
                claims.push(ts);
            }
        }
        let texts = sites::prefix_texts(&claims);
        for hub in &mut self.hubs {
            // What we claim is what the tunnel's selectors let us send
            // (RFC 4301 §4.4.1): our sites' traffic too, not only our own.
            if let Some(t) = hub.tunnel.as_mut() {
                let local = hub_prefixes(&hub.spec.config.local_prefixes, &texts);
                if t.local_prefixes != local {
                    t.local_prefixes = local;
                    self.dirty = true;
                }
            }
            let Some(id) = hub
                .sa
                .filter(|id| self.routes_ok.contains(id) && hub.tunnel.is_some())
            else {
                continue;
            };
            let print = sites::fingerprint(&claims);
            if hub.announced == Some(print) {
                continue;
            }
            match self.ike.send_routes(now, id, &claims) {
                Ok(o) => {
                    outs.extend(o);
                    hub.announced = Some(print);
                }
                Err(e) => {
                    tracing::debug!(peer = %hub.spec.config.name, error = %e, "claims not announced")
                }
            }
        }
        self.absorb(outs, None);
    }

    /// Removes the deleted CHILD SAs whose grace has passed.
    fn retire(&mut self, now: Duration) {
        let due: Vec<IkeSaId> = self
            .children
            .iter()
            .filter(|(_, pairs)| pairs.iter().any(|c| c.retire_at.is_some_and(|t| now >= t)))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            if let Some(pairs) = self.children.get_mut(&id) {
                pairs.retain(|c| c.retire_at.is_none_or(|t| now < t));
            }
            self.dirty |= self.apply_pairs(id);
        }
    }

    /// The IKE SA carrying the CHILD SA with inbound or outbound SPI `spi`.
    fn ike_sa_of(&self, spi: u32) -> Option<IkeSaId> {
        self.children.iter().find_map(|(id, pairs)| {
            pairs
                .iter()
                .any(|c| c.inbound.spi == spi || c.outbound.spi == spi)
                .then_some(*id)
        })
    }

    /// An SA of ours neared a lifetime limit the engine watches (bytes,
    /// sequence numbers): rekey its CHILD SA (RFC 7296 §2.8) unless a
    /// rekey already replaced it.
    fn sa_lifetime(&mut self, now: Duration, e: &EngineEvent) {
        let Some(sa) = e.sa() else {
            return;
        };
        let Some(id) = self.ike_sa_of(sa.spi) else {
            return;
        };
        let newest = self
            .children
            .get(&id)
            .and_then(|p| p.iter().rfind(|c| c.retire_at.is_none()))
            .is_some_and(|c| c.inbound.spi == sa.spi || c.outbound.spi == sa.spi);
        if !newest {
            return;
        }
        let direction = match sa.direction {
            SaDirection::Inbound => "inbound",
            SaDirection::Outbound => "outbound",
        };
        tracing::info!(tunnel = %sa.tunnel, spi = sa.spi, direction, limit = sa.limit.name(), "CHILD SA near its lifetime: rekeying");
        match self.ike.rekey_child(now, id) {
            Ok(outs) => {
                self.counters.lifetime_rekeys += 1;
                self.absorb(outs, None);
            }
            Err(err) => tracing::warn!(tunnel = %sa.tunnel, error = %err, "rekey not started"),
        }
    }

    /// Reads the workers' SA counters: an IKE SA one of whose inbound SAs
    /// opened packets since the last scan has a live peer, so its liveness
    /// check is put off (RFC 7296 §2.4). An active tunnel sends no probes.
    fn scan_liveness(&mut self, now: Duration) {
        if self.children.is_empty() {
            self.inbound_seen.clear();
            return;
        }
        let owner: HashMap<u32, IkeSaId> = self
            .children
            .iter()
            .flat_map(|(id, pairs)| pairs.iter().map(move |c| (c.inbound.spi, *id)))
            .collect();
        let mut seen = HashMap::with_capacity(owner.len());
        for c in self.engine.sa_counters() {
            if c.direction != SaDirection::Inbound {
                continue;
            }
            let Some(&id) = owner.get(&c.spi) else {
                continue;
            };
            if c.packets > self.inbound_seen.get(&c.spi).copied().unwrap_or(0) {
                self.ike.traffic_received(now, id);
            }
            seen.insert(c.spi, c.packets);
        }
        self.inbound_seen = seen;
    }

    /// Takes up the `[ike]` registry of a reloaded configuration (the
    /// control side checked it first): devices removed, or whose key,
    /// site, prefixes or address changed, lose their tunnels (a changed
    /// one registers again under its new entry).
    fn reload(&mut self, now: Duration) {
        let Some(cfg) = self.engine.config().ike else {
            return;
        };
        if cfg == self.cfg {
            return;
        }
        let next = match Registry::load(&cfg, &registry::config_dir(self.engine.path())) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "[ike] registry not reloaded");
                return;
            }
        };
        let (stale, added, removed) = {
            let old = self.registry.read().unwrap_or_else(|p| p.into_inner());
            let stale: Vec<IkeSaId> = self
                .sites
                .iter()
                .filter(|(_, site)| {
                    let s = &site.serial;
                    old.devices.get(s) != next.devices.get(s) || old.keys.get(s) != next.keys.get(s)
                })
                .map(|(id, _)| *id)
                .collect();
            let added = next
                .devices
                .keys()
                .filter(|s| !old.devices.contains_key(*s))
                .count();
            let removed = old
                .devices
                .keys()
                .filter(|s| !next.devices.contains_key(*s))
                .count();
            (stale, added, removed)
        };
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.cfg = cfg;
        tracing::info!(
            added,
            removed,
            closed = stale.len(),
            "[ike] registry reloaded"
        );
        for id in stale {
            if let Ok(outs) = self.ike.close(now, id) {
                self.absorb(outs, None);
            }
            self.dirty |= self.gone(id, now, "its registry entry changed");
        }
        self.shown = false;
    }

    /// Starts registering with every hub that has no IKE SA and is due.
    fn register(&mut self, now: Duration) {
        for i in 0..self.hubs.len() {
            let hub = &self.hubs[i];
            if hub.sa.is_some() || now < hub.next_attempt {
                continue;
            }
            let peer = PeerConfig {
                local: SocketAddr::V4(SocketAddrV4::new(
                    hub.spec.local,
                    strait_dataplane::IKE_PORT,
                )),
                remote: SocketAddr::V4(SocketAddrV4::new(
                    hub.spec.remote,
                    strait_dataplane::IKE_PORT,
                )),
                psk: self.psk.clone(),
                remote_id: hub.spec.config.remote_identity.clone().map(Identity::Fqdn),
                remote_ts: hub.spec.ts.clone(),
            };
            match self.ike.initiate(now, peer) {
                Ok((id, outs)) => {
                    tracing::info!(peer = %self.hubs[i].spec.config.name, remote = %self.hubs[i].spec.remote, "registering");
                    self.hubs[i].sa = Some(id);
                    self.shown = false;
                    self.absorb(outs, None);
                }
                Err(e) => {
                    tracing::warn!(peer = %self.hubs[i].spec.config.name, error = %e, "cannot register");
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

    /// Acts on the core's events at once and keeps its datagrams for
    /// [`Runtime::flush`]: an answer that creates a CHILD SA leaves only
    /// once its inbound SA is installed, so the peer's first packet under
    /// it opens.
    fn absorb(&mut self, outs: Vec<Output>, from: Option<SocketAddrV4>) {
        for out in outs {
            match out {
                Output::Send(d) => self.outbox.push(d),
                Output::Event(e) => {
                    self.shown = false;
                    self.dirty |= self.event(e, from);
                }
            }
        }
    }

    /// Applies the tunnels changed since the last flush (one table update
    /// for a whole batch of registrations), then sends what waits.
    fn flush(&mut self) {
        if self.dirty {
            self.dirty = false;
            self.publish();
            self.announce(self.epoch.elapsed());
        } else if !self.shown {
            self.show();
        }
        self.shown = true;
        for d in std::mem::take(&mut self.outbox) {
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
                peer_routes,
                ..
            } => {
                if !initiator {
                    if let Identity::Fqdn(serial) = &peer_id {
                        self.peers.insert(ike_sa, serial.clone());
                    }
                }
                tracing::info!(peer = ?peer_id, %remote, nat_detected, peer_routes, "IKE SA established");
                self.counters.established += 1;
                self.up.insert(ike_sa);
                if peer_routes {
                    self.routes_ok.insert(ike_sa);
                }
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
                ts_local,
                ts_remote,
                ..
            } => {
                let Some(remote) = v4(remote) else {
                    return false;
                };
                let outbound =
                    negotiated_sa(spi_out, cipher, keys_out.as_bytes(), esn, self.rekey_bytes);
                let inbound =
                    negotiated_sa(spi_in, cipher, keys_in.as_bytes(), esn, self.rekey_bytes);
                // A further CHILD SA on an IKE SA whose tunnel is up is a
                // rekey (RFC 7296 §2.8): the new SAs take over, the old
                // inbound one stays accepted until its Delete, so packets
                // still in flight under it open.
                // The first CHILD SA (IKE_AUTH) is both sides' at once; a
                // rekey's is the peer's only once it asked for it or
                // deleted what it replaces.
                let first = self.tunnel_mut(ike_sa).is_none();
                self.children.entry(ike_sa).or_default().push(Child {
                    inbound: inbound.clone(),
                    outbound: outbound.clone(),
                    seal: initiator || first,
                    retire_at: None,
                });
                if self.tunnel_mut(ike_sa).is_some() {
                    tracing::info!(?ike_sa, spi_in, spi_out, "CHILD SA rekeyed");
                    self.counters.child_rekeys += 1;
                    return self.apply_pairs(ike_sa);
                }
                let encap = if udp_encap {
                    strait_dataplane::EncapConfig::Udp
                } else {
                    strait_dataplane::EncapConfig::Esp
                };
                if let Some(hub) = self.hubs.iter_mut().find(|h| h.sa == Some(ike_sa)) {
                    tracing::info!(peer = %hub.spec.config.name, spi_in, spi_out, "registered: tunnel up");
                    hub.backoff = RETRY_FIRST;
                    self.hub_errors.remove(&hub.spec.config.name);
                    // What the hub kept of our claims (§2.9 narrowing).
                    let claimed = &hub.spec.config.local_prefixes;
                    let accepted = sites::prefix_texts(&ts_local);
                    hub.claims_refused =
                        (!claimed.iter().all(|c| accepted.contains(c))).then(|| {
                            format!(
                                "claimed {}; the hub accepted {}",
                                claimed.join(", "),
                                accepted.join(", ")
                            )
                        });
                    if let Some(why) = &hub.claims_refused {
                        tracing::warn!(peer = %hub.spec.config.name, "{why}");
                    }
                    hub.announced = None;
                    hub.tunnel = Some(TunnelConfig {
                        name: hub.spec.config.name.clone(),
                        local: hub.spec.config.local.clone(),
                        remote: remote.ip().to_string(),
                        float: false,
                        encap,
                        local_port: NAT_T_PORT,
                        remote_port: remote.port(),
                        prefixes: hub_prefixes(&hub.spec.config.prefixes, &hub.learned),
                        local_prefixes: hub.spec.config.local_prefixes.clone(),
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
                let Some(device) = self
                    .registry
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .devices
                    .get(&serial)
                    .cloned()
                else {
                    return false;
                };
                let name = format!("site-{}", device.site);
                // The same site registering again replaces its tunnel.
                self.sites.retain(|_, s| s.tunnel.name != name);
                self.site_changed.insert(device.site.clone(), now);
                self.claims_refused.remove(&device.site);
                tracing::info!(serial = %serial, site = %device.site, %remote, spi_in, spi_out, "device registered: tunnel up");
                self.registered_at
                    .insert(serial.clone(), (now, remote.to_string()));
                self.sites.insert(
                    ike_sa,
                    Site {
                        serial,
                        refused: self.refusals.remove(&ike_sa).unwrap_or_default(),
                        peer_routes: self.routes_ok.contains(&ike_sa),
                        announced: None,
                        tunnel: TunnelConfig {
                            name,
                            local: device.local.clone(),
                            remote: remote.ip().to_string(),
                            float: true,
                            encap,
                            local_port: NAT_T_PORT,
                            remote_port: remote.port(),
                            // What it claimed and may hold (§2.9).
                            prefixes: sites::prefix_texts(&ts_remote),
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
                if let Some(i) = self
                    .hubs
                    .iter()
                    .position(|h| h.sa == Some(ike_sa) && h.tunnel.is_none())
                {
                    // Registration without a tunnel is no use: say why and
                    // try again later (the other site may be gone by then).
                    let why = if notify == strait_ike::payload::notify::TS_UNACCEPTABLE {
                        "the hub refused every prefix we claim (TS_UNACCEPTABLE: held by another site, or not ours to claim)".to_owned()
                    } else {
                        format!("the hub refused the tunnel (notify {notify})")
                    };
                    tracing::warn!(peer = %self.hubs[i].spec.config.name, "{why}");
                    self.hubs[i].claims_refused = Some(why.clone());
                    self.hub_errors
                        .insert(self.hubs[i].spec.config.name.clone(), why);
                    if let Ok(outs) = self.ike.close(now, ike_sa) {
                        self.absorb(outs, None);
                    }
                }
                if let Some(reasons) = self.refusals.remove(&ike_sa) {
                    if let Some(site) = self.site_of(ike_sa) {
                        self.site_changed.insert(site.clone(), now);
                        self.claims_refused.insert(site, reasons);
                    }
                }
                false
            }
            Event::SelectorsRefused { ike_sa, refused } => {
                let Some(site) = self.site_of(ike_sa) else {
                    return false;
                };
                let serial = self.peers.get(&ike_sa).cloned().unwrap_or_default();
                let holdings = self.holdings.read().unwrap_or_else(|p| p.into_inner());
                let reasons: Vec<String> = refused
                    .iter()
                    .map(|t| holdings.why_refused(&site, t))
                    .collect();
                drop(holdings);
                for why in &reasons {
                    tracing::warn!(serial = %serial, site = %site, "claim refused: {why}");
                }
                self.refusals.insert(ike_sa, reasons);
                false
            }
            Event::RoutesReceived {
                ike_sa,
                prefixes,
                generation,
            } => {
                let Some(hub) = self.hubs.iter_mut().find(|h| h.sa == Some(ike_sa)) else {
                    // A device announcing to us: its claims now (a hub
                    // registered with us claims its sites' prefixes).
                    return self.claims(now, ike_sa, &prefixes);
                };
                let own = registry::selectors(&hub.spec.config.local_prefixes).unwrap_or_default();
                let learned: Vec<String> = prefixes
                    .iter()
                    .filter(|t| !own.iter().any(|o| o.intersect(t).is_some()))
                    .filter_map(sites::prefix_text)
                    .collect();
                if learned == hub.learned {
                    return false;
                }
                tracing::info!(peer = %hub.spec.config.name, generation, learned = %learned.join(","), "routes learned");
                hub.learned = learned;
                let prefixes = hub_prefixes(&hub.spec.config.prefixes, &hub.learned);
                match hub.tunnel.as_mut() {
                    Some(t) => {
                        t.prefixes = prefixes;
                        true
                    }
                    None => false,
                }
            }
            Event::ChildSaDeleted { ike_sa, spi_in, .. } => {
                // A rekey's old SA (or a collision's redundant new one)
                // goes; the tunnel stays while another pair is left.
                let left = self.children.get_mut(&ike_sa).map(|pairs| {
                    for c in pairs.iter_mut().filter(|c| c.inbound.spi == spi_in) {
                        c.retire_at.get_or_insert(now + RETIRE_GRACE);
                    }
                    // The peer deleted what it replaced: it accepts the
                    // newest SA now.
                    let live = pairs.iter().filter(|c| c.retire_at.is_none()).count();
                    if let Some(newest) = pairs.iter_mut().rev().find(|c| c.retire_at.is_none()) {
                        newest.seal |= live == 1;
                    }
                    live
                });
                match left {
                    Some(n) if n > 0 => self.apply_pairs(ike_sa),
                    _ => {
                        // A device without a tunnel registers anew; a hub
                        // keeps the IKE SA, the device may create a CHILD
                        // SA on it again (strongSwan does after a hard
                        // expiry).
                        if self.hubs.iter().any(|h| h.sa == Some(ike_sa)) {
                            if let Ok(outs) = self.ike.close(now, ike_sa) {
                                self.absorb(outs, None);
                            }
                        }
                        self.gone(ike_sa, now, "CHILD SA deleted")
                    }
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
                if self.up.remove(&old) {
                    self.up.insert(new);
                }
                if self.routes_ok.remove(&old) {
                    self.routes_ok.insert(new);
                }
                for hub in self.hubs.iter_mut().filter(|h| h.sa == Some(old)) {
                    hub.sa = Some(new);
                }
                tracing::info!(?old, ?new, "IKE SA rekeyed");
                self.counters.ike_rekeys += 1;
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
                    if let Some(from) = from {
                        let ip = std::net::IpAddr::V4(*from.ip());
                        if self.limiter.refused(ip, now) {
                            tracing::warn!(source = %ip, burst = limit::BURST, every_seconds = limit::REFILL.as_secs(), "source refused too often: its new registrations are limited");
                        }
                    }
                }
                self.routes_ok.remove(&ike_sa);
                self.refusals.remove(&ike_sa);
                if self.up.remove(&ike_sa) && reason == CloseReason::Timeout {
                    tracing::warn!(?ike_sa, "peer dead: no answer through every retransmission");
                    self.counters.dead_peers += 1;
                }
                if let Some(i) = registering {
                    let name = self.hubs[i].spec.config.name.clone();
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
        let mut live = pairs.iter().filter(|c| c.retire_at.is_none());
        let Some(newest) = live.clone().next_back() else {
            return false;
        };
        // Seal with the newest SA the peer accepts; open with all.
        let sealing = live.rfind(|c| c.seal).unwrap_or(newest);
        let Some(tunnel) = self.tunnel_mut(ike_sa) else {
            return false;
        };
        tunnel.inbound = newest.inbound.clone();
        tunnel.outbound = sealing.outbound.clone();
        tunnel.inbound_extra = pairs
            .iter()
            .filter(|c| c.inbound.spi != newest.inbound.spi)
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
                tracing::warn!(peer = %hub.spec.config.name, why, "tunnel down: registering again");
            } else {
                tracing::warn!(peer = %hub.spec.config.name, why, "registration failed: trying again");
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
                name: h.spec.config.name.clone(),
                remote: h.spec.remote.to_string(),
                state: match (&h.tunnel, h.sa) {
                    (Some(_), _) => "up",
                    (None, Some(_)) => "registering",
                    (None, None) => "waiting",
                },
                spis: h.tunnel.as_ref().map(|t| (t.inbound.spi, t.outbound.spi)),
                last_error: self.hub_errors.get(&h.spec.config.name).cloned(),
                prefixes: h.spec.config.prefixes.clone(),
                learned: h.learned.clone(),
                claims_refused: h.claims_refused.clone(),
            })
            .collect();
        let registry = self.registry.read().unwrap_or_else(|p| p.into_inner());
        let registered_now: std::collections::HashSet<&str> =
            self.sites.values().map(|s| s.serial.as_str()).collect();
        let mut devices: Vec<DeviceView> = registry
            .devices
            .values()
            .map(|d| {
                let registered = registered_now.contains(d.serial.as_str());
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
        let mut sites: std::collections::BTreeMap<String, SiteView> = Default::default();
        let view = |name: &str| SiteView {
            site: name.to_owned(),
            devices: Vec::new(),
            prefixes: Vec::new(),
            refused: Vec::new(),
            changed_seconds_ago: self
                .site_changed
                .get(name)
                .map(|t| now.saturating_sub(*t).as_secs()),
        };
        for (name, refused) in &self.claims_refused {
            sites
                .entry(name.clone())
                .or_insert_with(|| view(name))
                .refused = refused.clone();
        }
        for s in self.sites.values() {
            let name = s
                .tunnel
                .name
                .strip_prefix("site-")
                .unwrap_or(&s.tunnel.name);
            let v = sites.entry(name.to_owned()).or_insert_with(|| view(name));
            v.devices.push(s.serial.clone());
            v.prefixes.clone_from(&s.tunnel.prefixes);
            v.refused.clone_from(&s.refused);
        }
        self.view.set(IkeState {
            hubs,
            devices,
            sites: sites.into_values().collect(),
            sas: self.sa_views.clone(),
            refused: self.refused.clone(),
            ike_sas: self.ike.sa_count(),
            limited_sources: self.limiter.len(),
            counters: IkeCounters {
                liveness_checks: self.ike.liveness_checks(),
                ..self.counters
            },
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
                None => overlay.routes.extend(
                    hub_prefixes(&hub.spec.config.prefixes, &hub.learned)
                        .into_iter()
                        .map(|prefix| RouteConfig {
                            prefix,
                            via: Vec::new(),
                            dev: None,
                            kind: Some("blackhole".into()),
                            spans: Default::default(),
                        }),
                ),
            }
        }
        let mut sites: Vec<&Site> = self.sites.values().collect();
        sites.sort_by(|a, b| a.tunnel.name.cmp(&b.tunnel.name));
        overlay
            .tunnels
            .extend(sites.iter().map(|s| s.tunnel.clone()));
        // What each site holds now, for the next claims and offers.
        let mut holdings = Holdings::default();
        for s in &sites {
            let name = s
                .tunnel
                .name
                .strip_prefix("site-")
                .unwrap_or(&s.tunnel.name);
            holdings.set(
                name,
                registry::selectors(&s.tunnel.prefixes).unwrap_or_default(),
            );
        }
        for hub in self.hubs.iter().filter(|h| h.tunnel.is_some()) {
            holdings.set_hub(
                &hub.spec.config.name,
                registry::selectors(&hub.learned).unwrap_or_default(),
            );
        }
        *self.holdings.write().unwrap_or_else(|p| p.into_inner()) = holdings;
        if let Err(e) = self.engine.set_overlay(overlay) {
            tracing::error!(error = %e, "negotiated tunnels not applied");
        }
    }
}
