//! Tunnels as the tables hold them: the SA parameters of each direction,
//! the outbound SA the workers share, the inner prefixes (routed into the
//! tunnel, and the tunnel's inbound policy), and the NAT-T endpoint a
//! floating peer is followed to.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_esp::{CipherSuite, Lifetime, OutboundSa, SaConfig, TrafficSelector, TrafficSelectors};
use strait_fib::{EgressId, Fib, IpCidr, Route, RouteTable};

use super::port::Port;
use crate::config::{Config, ConfigError, EncapConfig, Invalid, SaEntryConfig, TunnelConfig};
use crate::sastore::{fingerprint, Fingerprint, SaState, SaStore};

/// Everything needed to (re)build one direction's SA.
#[derive(Clone, PartialEq, Eq)]
pub struct SaSpec {
    /// SPI.
    pub spi: u32,
    /// Cipher suite.
    pub cipher: CipherSuite,
    /// Key followed by salt.
    pub key: Vec<u8>,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Replay window (inbound).
    pub replay_window: u32,
    /// Lifetimes.
    pub lifetime: Lifetime,
    /// Inner prefixes allowed.
    pub selectors: TrafficSelectors,
    /// When it was created, on the tables' epoch.
    pub created: Duration,
    /// Names the key's durable state without revealing it.
    pub fingerprint: Fingerprint,
    /// Negotiated for this SA alone: its position needs no record.
    pub negotiated: bool,
}

impl Drop for SaSpec {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl std::fmt::Debug for SaSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaSpec")
            .field("spi", &self.spi)
            .field("cipher", &self.cipher)
            .field("key", &"[redacted]")
            .field("esn", &self.esn)
            .finish_non_exhaustive()
    }
}

impl SaSpec {
    /// The esp crate's view of it.
    pub fn sa_config(&self) -> SaConfig<'_> {
        let mut c = SaConfig::new(self.spi, self.cipher, &self.key, self.created);
        c.esn = self.esn;
        c.lifetime = self.lifetime;
        c.selectors = self.selectors.clone();
        c.replay_window = self.replay_window;
        c
    }

    /// Same SA (all but the creation time).
    fn same_sa(&self, other: &SaSpec) -> bool {
        let SaSpec {
            spi,
            cipher,
            key,
            esn,
            replay_window,
            lifetime,
            selectors,
            created: _,
            fingerprint,
            negotiated,
        } = self;
        *spi == other.spi
            && *cipher == other.cipher
            && *key == other.key
            && *esn == other.esn
            && *replay_window == other.replay_window
            && *lifetime == other.lifetime
            && *selectors == other.selectors
            && *fingerprint == other.fingerprint
            && *negotiated == other.negotiated
    }

    /// The highest sequence number the SA may use (RFC 4303 §3.3.3).
    fn max_seq(&self) -> u64 {
        if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        }
    }
}

/// An ESP tunnel to one peer.
#[derive(Debug)]
pub struct Tunnel {
    /// Index in [`Tables::tunnels`].
    pub id: u16,
    /// Name.
    pub name: String,
    /// FIB egress id of the tunnel.
    pub egress: EgressId,
    /// Our outer address.
    pub local: Ipv4Addr,
    /// Configured peer address and port.
    pub remote: (Ipv4Addr, u16),
    /// Our UDP port; `None` for plain ESP.
    pub local_port: Option<u16>,
    /// Follow the peer's observed address.
    pub float: bool,
    /// Learned peer endpoint (address << 16 | port), 0 until learned.
    peer: Arc<AtomicU64>,
    /// Inner MTU.
    pub mtu: u16,
    /// MSS clamp for SYNs entering the tunnel.
    pub mss: Option<u16>,
    /// NAT-keepalive interval.
    pub keepalive: Option<Duration>,
    /// Outbound SA, shared by the workers (sequence blocks are reserved
    /// atomically).
    pub out_sa: Arc<OutboundSa>,
    /// Its parameters.
    pub out_spec: Arc<SaSpec>,
    /// Its key's durable sequence reservation.
    pub out_state: Arc<SaState>,
    /// Inbound SAs accepted (the configured one first, then those installed
    /// for a rekey); each worker keeps its own replay window per SA.
    pub in_specs: Vec<Arc<SaSpec>>,
    /// Their keys' durable positions, one per entry of `in_specs`.
    pub in_states: Vec<Arc<SaState>>,
    /// Prefixes behind the peer.
    pub prefixes: Vec<IpCidr>,
}

impl Tunnel {
    /// Where outer packets go now: the learned endpoint when floating,
    /// the configured one otherwise.
    #[inline]
    pub fn peer(&self) -> (Ipv4Addr, u16) {
        if self.float {
            let v = self.peer.load(Ordering::Relaxed);
            if v != 0 {
                return (Ipv4Addr::from((v >> 16) as u32), v as u16);
            }
        }
        self.remote
    }

    /// Records the endpoint an authenticated packet came from.
    #[inline]
    pub fn learn_peer(&self, addr: Ipv4Addr, port: u16) {
        if self.float {
            let v = (u64::from(u32::from(addr)) << 16) | u64::from(port);
            if self.peer.load(Ordering::Relaxed) != v {
                self.peer.store(v, Ordering::Relaxed);
            }
        }
    }
}

/// Outer IPv4 + UDP + ESP header + IV + pad (≤3) + trailer + ICV.
pub const TUNNEL_OVERHEAD_UDP: u16 = 20 + 8 + 8 + 8 + 3 + 2 + 16;

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_start_matches("0x");
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn parse_cipher(s: &str) -> Option<CipherSuite> {
    match s {
        "aes128-gcm" | "aes128gcm16" => Some(CipherSuite::Aes128Gcm),
        "aes256-gcm" | "aes256gcm16" => Some(CipherSuite::Aes256Gcm),
        "chacha20-poly1305" | "chacha20poly1305" => Some(CipherSuite::ChaCha20Poly1305),
        _ => None,
    }
}

/// Selectors from the sender's side: inner sources in `src`, destinations
/// in `dst` (empty = any of the family).
fn selectors(src: &[IpCidr], dst: &[IpCidr]) -> TrafficSelectors {
    let any = |v4: bool| {
        if v4 {
            IpCidr::ANY_V4
        } else {
            IpCidr::ANY_V6
        }
    };
    let mut list = Vec::new();
    for v4 in [true, false] {
        let s: Vec<IpCidr> = src.iter().filter(|p| p.is_ipv4() == v4).copied().collect();
        let d: Vec<IpCidr> = dst.iter().filter(|p| p.is_ipv4() == v4).copied().collect();
        let s = if s.is_empty() && src.is_empty() {
            vec![any(v4)]
        } else {
            s
        };
        let d = if d.is_empty() && dst.is_empty() {
            vec![any(v4)]
        } else {
            d
        };
        for a in &s {
            for b in &d {
                if let Ok(ts) = TrafficSelector::new(*a, *b) {
                    list.push(ts);
                }
            }
        }
    }
    TrafficSelectors::new(list).unwrap_or_else(|_| TrafficSelectors::any())
}

/// Builds the tunnels of `[[tunnel]]` (keeping the SAs of `previous` that
/// did not change) and routes their prefixes into them.
pub(super) fn build_tunnels(
    config: &Config,
    invalid: &Invalid<'_>,
    ports: &[Port],
    routes: &mut RouteTable,
    epoch: Instant,
    previous: Option<&[Tunnel]>,
    stores: Stores<'_>,
) -> Result<Vec<Tunnel>, ConfigError> {
    // Each worker keeps its own replay window per inbound SA and the XDP
    // program steers by RX queue, not SPI: with two workers a replay that
    // lands on the other worker would be accepted. Until inbound SPIs are
    // steered to one worker, tunnels run on one.
    if let (Some(tc), workers @ 2..) = (config.tunnels.first(), config.engine.workers) {
        return Err(invalid.at(
            tc.spans.first(),
            "[[tunnel]]".into(),
            format!(
                "tunnels need engine.workers = 1 (got {workers}): each worker keeps its own \
                 anti-replay window, and steering each SPI to one worker is not available yet"
            ),
        ));
    }
    // Configured keys outlive the process, so their sequence positions
    // must too: without a place to record them a restart would seal again
    // from 1 under the same key (a repeated AES-GCM nonce).
    let configured = |tc: &&TunnelConfig| {
        std::iter::once(&tc.outbound)
            .chain(std::iter::once(&tc.inbound))
            .chain(&tc.inbound_extra)
            .any(|sa| !sa.negotiated)
    };
    if let (Some(tc), false) = (
        config.tunnels.iter().find(configured),
        config.engine.manual_keying,
    ) {
        return Err(invalid.at(
            tc.spans.first(),
            "[[tunnel]]".into(),
            "configured keys need [engine] manual_keying = true (labs and embedding); \
             devices register and negotiate their keys with [ike]"
                .into(),
        ));
    }
    if let (Some(tc), None) = (config.tunnels.iter().find(configured), stores.disk) {
        return Err(invalid.at(
            tc.spans.first(),
            "[[tunnel]]".into(),
            "configured keys need [engine] state_dir: the directory where each key's \
             sequence position is recorded, so a restart never reuses a nonce"
                .into(),
        ));
    }
    refuse_shared_keys(config, invalid)?;
    // The previous tunnels by name (the first of a name, as a scan would
    // find), the names and inbound SPIs of the tunnels built so far: one
    // hash lookup each instead of a scan of every other tunnel.
    let mut previous_by_name: HashMap<&str, &Tunnel> = HashMap::new();
    for t in previous.unwrap_or_default() {
        previous_by_name.entry(&t.name).or_insert(t);
    }
    let mut names: HashSet<&str> = HashSet::with_capacity(config.tunnels.len());
    let mut inbound_spis: HashSet<u32> = HashSet::with_capacity(config.tunnels.len());
    let mut tunnels: Vec<Tunnel> = Vec::with_capacity(config.tunnels.len());
    for (i, tc) in config.tunnels.iter().enumerate() {
        let item = format!("tunnel {}", tc.name);
        if !names.insert(&tc.name) {
            return Err(invalid.at(tc.spans.span("name"), item, "listed twice".into()));
        }
        let old = previous_by_name.get(tc.name.as_str()).copied();
        let tunnel = build_tunnel(i, tc, ports, epoch, old, &stores)
            .map_err(|(field, reason)| invalid.at(tc.spans.span(field), item.clone(), reason))?;

        for prefix in &tunnel.prefixes {
            if routes.get(*prefix).is_some() {
                return Err(invalid.at(
                    tc.spans.span("prefixes"),
                    item.clone(),
                    format!(
                        "prefix {prefix} is already routed (an interface subnet or another tunnel)"
                    ),
                ));
            }
            routes.insert(Route::connected(*prefix, tunnel.egress));
        }
        // Against the earlier tunnels only: a tunnel's own SPIs are distinct
        // (`build_tunnel` refuses one listed twice).
        for spec in &tunnel.in_specs {
            if inbound_spis.contains(&spec.spi) {
                return Err(invalid.at(
                    tc.spans.span("inbound"),
                    item.clone(),
                    format!("inbound SPI {} is used by another tunnel", spec.spi),
                ));
            }
        }
        inbound_spis.extend(tunnel.in_specs.iter().map(|s| s.spi));
        tunnels.push(tunnel);
    }
    Ok(tunnels)
}

/// Where SA states come from: the state directory for configured keys,
/// memory for negotiated ones.
pub(super) struct Stores<'a> {
    /// The state directory, when configured.
    pub(super) disk: Option<&'a SaStore>,
    /// Negotiated keys.
    pub(super) memory: &'a SaStore,
}

/// Refuses a key that serves two SAs (two tunnels, both directions of one,
/// or an installed rekey SA): with AES-GCM and ChaCha20-Poly1305 two
/// senders under one key repeat nonces. Keys that are not hex are left to
/// the tunnel's own checks.
fn refuse_shared_keys(config: &Config, invalid: &Invalid<'_>) -> Result<(), ConfigError> {
    // Each key's first SA: its tunnel's name, field and SPI.
    let mut keys: HashMap<Fingerprint, (&str, &str, u32)> = HashMap::new();
    for tc in &config.tunnels {
        let sas = std::iter::once(("outbound", &tc.outbound))
            .chain(std::iter::once(("inbound", &tc.inbound)))
            .chain(tc.inbound_extra.iter().map(|sa| ("inbound_extra", sa)));
        for (field, sa) in sas {
            let Some(mut key) = parse_hex(&sa.key.0) else {
                continue;
            };
            let fp = fingerprint(&key);
            zeroize::Zeroize::zeroize(&mut key);
            match keys.entry(fp) {
                Entry::Occupied(first) => {
                    let (name, other_field, other_spi) = *first.get();
                    return Err(invalid.at(
                        tc.spans.span(field),
                        format!("tunnel {}", tc.name),
                        format!(
                            "{field} SPI {} has the same key as tunnel {name} {other_field} \
                             SPI {other_spi}: two SAs under one key repeat \
                             AES-GCM/ChaCha20-Poly1305 nonces; give each SA its own key",
                            sa.spi
                        ),
                    ));
                }
                Entry::Vacant(v) => {
                    v.insert((&tc.name, field, sa.spi));
                }
            }
        }
    }
    Ok(())
}

/// The tunnels' remote prefixes as a FIB, each routed to its tunnel: the
/// sources only that tunnel may deliver (RFC 4301 §5.2).
pub(super) fn protected_sources(tunnels: &[Tunnel]) -> Fib {
    let mut protected = RouteTable::new();
    for tun in tunnels {
        for prefix in &tun.prefixes {
            protected.insert(Route::connected(*prefix, tun.egress));
        }
    }
    protected.snapshot()
}

fn sa_spec(
    sa: &SaEntryConfig,
    selectors: TrafficSelectors,
    created: Duration,
) -> Result<SaSpec, String> {
    let cipher = parse_cipher(&sa.cipher).ok_or_else(|| {
        format!(
            "SPI {}: cipher {:?} is not one of aes128-gcm, aes256-gcm, chacha20-poly1305",
            sa.spi, sa.cipher
        )
    })?;
    let key = parse_hex(&sa.key.0).ok_or_else(|| format!("SPI {}: key is not hex", sa.spi))?;
    let key_fingerprint = fingerprint(&key);

    let nz = |v: u64| (v > 0).then_some(v);
    let spec = SaSpec {
        spi: sa.spi,
        cipher,
        key,
        esn: sa.esn,
        replay_window: sa
            .replay_window
            .unwrap_or(strait_esp::DEFAULT_REPLAY_WINDOW),
        lifetime: Lifetime {
            soft_bytes: nz(sa.soft_bytes),
            hard_bytes: nz(sa.hard_bytes),
            soft_time: nz(sa.soft_seconds).map(Duration::from_secs),
            hard_time: nz(sa.hard_seconds).map(Duration::from_secs),
        },
        selectors,
        created,
        fingerprint: key_fingerprint,
        negotiated: sa.negotiated,
    };
    // Let the esp crate check key length, SPI range, window and lifetimes.
    strait_esp::InboundSa::new(&spec.sa_config()).map_err(|e| format!("SPI {}: {e}", sa.spi))?;
    Ok(spec)
}

fn build_tunnel(
    i: usize,
    tc: &TunnelConfig,
    ports: &[Port],
    epoch: Instant,
    old: Option<&Tunnel>,
    stores: &Stores<'_>,
) -> Result<Tunnel, (&'static str, String)> {
    // Tunnels are numbered after the ports in one 16-bit egress space.
    let egress = u16::try_from(ports.len() + i).map(EgressId).map_err(|_| {
        (
            "name",
            "too many interfaces and tunnels (egress ids are 16 bits)".to_owned(),
        )
    })?;
    let local: Ipv4Addr = tc.local.parse().map_err(|_| {
        let reason = format!(
            "local {:?} is not an IPv4 address (outer IPv6 is not supported yet)",
            tc.local
        );
        ("local", reason)
    })?;
    let remote: Ipv4Addr = tc.remote.parse().map_err(|_| {
        let reason = format!("remote {:?} is not an IPv4 address", tc.remote);
        ("remote", reason)
    })?;
    if tc.encap == EncapConfig::Udp && tc.local_port != strait_esp::NAT_T_PORT {
        return Err((
            "local_port",
            format!(
                "local_port {} unsupported: UDP-encapsulated ESP is received on port {} (RFC 3948)",
                tc.local_port,
                strait_esp::NAT_T_PORT
            ),
        ));
    }
    let Some(port) = ports.iter().find(|p| p.owns_v4(local)) else {
        let reason = format!("local {local} is not an address of any interface");
        return Err(("local", reason));
    };
    let mut prefixes = Vec::with_capacity(tc.prefixes.len());
    for p in &tc.prefixes {
        prefixes.push(
            p.parse::<IpCidr>()
                .map_err(|e| ("prefixes", format!("prefix {p}: {}", e.reason())))?,
        );
    }
    // A negotiated tunnel may carry nothing yet: a device whose hub has
    // announced no routes so far.
    if prefixes.is_empty() && !tc.outbound.negotiated {
        return Err((
            "prefixes",
            "needs at least one prefix behind the peer".into(),
        ));
    }
    let mut local_prefixes = Vec::with_capacity(tc.local_prefixes.len());
    for p in &tc.local_prefixes {
        local_prefixes.push(p.parse::<IpCidr>().map_err(|e| {
            (
                "local_prefixes",
                format!("local prefix {p}: {}", e.reason()),
            )
        })?);
    }
    let overhead = match tc.encap {
        EncapConfig::Udp => TUNNEL_OVERHEAD_UDP,
        EncapConfig::Esp => TUNNEL_OVERHEAD_UDP - 8,
    };
    let max_mtu = port.mtu.saturating_sub(overhead);
    let mtu = tc.mtu.unwrap_or(max_mtu);
    if mtu < 576 || mtu > max_mtu {
        return Err(("mtu", format!(
            "mtu {mtu} must be between 576 and {max_mtu} (egress MTU {} less {overhead} bytes of encapsulation)",
            port.mtu
        )));
    }
    let now = epoch.elapsed();
    let out_sel = selectors(&local_prefixes, &prefixes);
    let in_sel = selectors(&prefixes, &local_prefixes);
    let out_spec =
        sa_spec(&tc.outbound, out_sel, now).map_err(|e| ("outbound", format!("outbound {e}")))?;
    let mut in_new = Vec::with_capacity(1 + tc.inbound_extra.len());
    let inbound = std::iter::once(("inbound", &tc.inbound))
        .chain(tc.inbound_extra.iter().map(|sa| ("inbound_extra", sa)));
    for (field, sa) in inbound {
        if in_new.iter().any(|s: &SaSpec| s.spi == sa.spi) {
            return Err((field, format!("inbound SPI {} listed twice", sa.spi)));
        }
        in_new.push(sa_spec(sa, in_sel.clone(), now).map_err(|e| (field, format!("inbound {e}")))?);
    }
    // An unchanged SA keeps its state across reloads. A changed one under
    // the same key (new prefixes, lifetimes, SPI, a renamed tunnel, a key
    // switched back to) continues the key's sequence position: the store
    // hands out the live state of a key in use, or resumes it from its
    // record, never from 1.
    let state_of = |spec: &SaSpec, outbound: bool| {
        let store = if spec.negotiated {
            stores.memory
        } else {
            stores
                .disk
                .ok_or_else(|| "no SA state directory".to_owned())?
        };
        let (cipher, key, max) = (spec.cipher, &spec.key[..], spec.max_seq());
        if outbound {
            store.outbound(spec.spi, cipher, key, max)
        } else {
            store.inbound(spec.spi, cipher, key, max)
        }
    };
    let (out_sa, out_spec, out_state) = match old {
        Some(o) if o.out_spec.same_sa(&out_spec) => (
            Arc::clone(&o.out_sa),
            Arc::clone(&o.out_spec),
            Arc::clone(&o.out_state),
        ),
        _ => {
            let spi = out_spec.spi;
            let state = state_of(&out_spec, true)
                .map_err(|e| ("outbound", format!("outbound SPI {spi}: {e}")))?;
            let space = state.space().map(Arc::clone).ok_or_else(|| {
                (
                    "outbound",
                    format!("outbound SPI {spi}: its key is an inbound key"),
                )
            })?;
            let sa = OutboundSa::with_space(&out_spec.sa_config(), space)
                .map_err(|e| ("outbound", format!("outbound SPI {spi}: {e}")))?;
            (sa, Arc::new(out_spec), state)
        }
    };
    let mut in_specs = Vec::with_capacity(in_new.len());
    let mut in_states = Vec::with_capacity(in_new.len());
    for spec in in_new {
        let kept = old.and_then(|o| {
            let i = o.in_specs.iter().position(|s| s.same_sa(&spec))?;
            Some((Arc::clone(&o.in_specs[i]), Arc::clone(&o.in_states[i])))
        });
        let (spec, state) = match kept {
            Some(k) => k,
            None => {
                let spi = spec.spi;
                let state = state_of(&spec, false)
                    .map_err(|e| ("inbound", format!("inbound SPI {spi}: {e}")))?;
                (Arc::new(spec), state)
            }
        };
        in_specs.push(spec);
        in_states.push(state);
    }
    let ip_overhead = if prefixes.iter().any(|p| !p.is_ipv4()) {
        60
    } else {
        40
    };
    Ok(Tunnel {
        id: i as u16,
        name: tc.name.clone(),
        egress,
        local,
        remote: (remote, tc.remote_port),
        local_port: (tc.encap == EncapConfig::Udp).then_some(tc.local_port),
        float: tc.float,
        peer: old.map_or_else(|| Arc::new(AtomicU64::new(0)), |o| Arc::clone(&o.peer)),
        mtu,
        mss: tc.mss_clamp.then_some(mtu - ip_overhead),
        keepalive: (tc.keepalive > 0 && tc.encap == EncapConfig::Udp)
            .then(|| Duration::from_secs(tc.keepalive)),
        out_sa,
        out_spec,
        out_state,
        in_specs,
        in_states,
        prefixes,
    })
}
