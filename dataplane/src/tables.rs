//! Table snapshots: everything a worker reads per packet, built whole by the
//! control side and published with one atomic swap.
//!
//! Workers load the current `Arc<Tables>` once per batch and never write
//! it; a new configuration is validated and built completely before the swap,
//! so a worker sees the old tables or the new ones, never a mix.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use strait_fib::{EgressId, Fib, FlowHasher, IpCidr, NextHop, Route, RouteTable};

use strait_esp::{CipherSuite, Lifetime, OutboundSa, SaConfig, TrafficSelector, TrafficSelectors};

use crate::config::{
    Config, ConfigError, EncapConfig, IcmpConfig, SaEntryConfig, Span, TunnelConfig,
};
use crate::nat::NatTables;

/// Interface attributes the kernel knows and the dataplane needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLink {
    /// Interface index.
    pub ifindex: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u16,
}

/// Reads an interface's index, MAC and MTU from sysfs (in the calling
/// thread's network namespace).
pub fn kernel_link(name: &str) -> std::io::Result<KernelLink> {
    let read = |attr: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{name}/{attr}"))
            .map(|s| s.trim().to_owned())
    };
    let bad = |what: &str, v: &str| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what} {v:?}"))
    };
    let ifindex = read("ifindex")?;
    let mac = read("address")?;
    let mtu = read("mtu")?;
    Ok(KernelLink {
        ifindex: ifindex.parse().map_err(|_| bad("ifindex", &ifindex))?,
        mac: parse_mac(&mac).ok_or_else(|| bad("MAC address", &mac))?,
        mtu: mtu.parse().map_err(|_| bad("MTU", &mtu))?,
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// One interface the dataplane serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Index in [`Tables::ports`]; also the FIB egress id.
    pub id: u16,
    /// Kernel name.
    pub name: String,
    /// Kernel attributes.
    pub link: KernelLink,
    /// IP-layer MTU used for forwarding decisions.
    pub mtu: u16,
    /// IPv4 addresses owned here, with prefix lengths.
    pub v4: Vec<(Ipv4Addr, u8)>,
    /// IPv6 addresses owned here, with prefix lengths.
    pub v6: Vec<(Ipv6Addr, u8)>,
}

impl Port {
    /// True if `addr` is one of this port's IPv4 addresses.
    #[inline]
    pub fn owns_v4(&self, addr: Ipv4Addr) -> bool {
        self.v4.iter().any(|(a, _)| *a == addr)
    }

    /// True if `addr` is one of this port's IPv6 addresses.
    #[inline]
    pub fn owns_v6(&self, addr: Ipv6Addr) -> bool {
        self.v6.iter().any(|(a, _)| *a == addr)
    }

    /// The address ICMP errors sent from this port come from
    /// (RFC 1812 §4.3.2.4).
    pub fn icmp_source_v4(&self) -> Option<Ipv4Addr> {
        self.v4.first().map(|(a, _)| *a)
    }

    /// IPv6 counterpart of [`Self::icmp_source_v4`].
    pub fn icmp_source_v6(&self) -> Option<Ipv6Addr> {
        self.v6.first().map(|(a, _)| *a)
    }
}

/// A static neighbour from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticNeighbour {
    /// Port.
    pub port: u16,
    /// Address.
    pub ip: IpAddr,
    /// MAC.
    pub mac: [u8; 6],
}

/// What a FIB egress id names: a port, or a tunnel (ids past the ports).
#[derive(Debug, Clone, Copy)]
pub enum Egress<'a> {
    /// A port.
    Port(&'a Port),
    /// An ESP tunnel.
    Tunnel(&'a Tunnel),
}

impl Egress<'_> {
    /// MTU of the IP layer leaving by it.
    #[inline]
    pub fn mtu(&self) -> u16 {
        match self {
            Egress::Port(p) => p.mtu,
            Egress::Tunnel(t) => t.mtu,
        }
    }
}

/// Everything the workers read per packet.
#[derive(Debug)]
pub struct Tables {
    /// Increases with every published snapshot.
    pub generation: u64,
    /// Interfaces, indexed by port id.
    pub ports: Vec<Port>,
    /// Routes.
    pub fib: Fib,
    /// The routes the FIB was built from (for `show routes` and edits).
    pub routes: RouteTable,
    /// Configured neighbours.
    pub static_neighbours: Vec<StaticNeighbour>,
    /// ICMP generation limits.
    pub icmp: IcmpConfig,
    /// ECMP flow hash, seeded per device.
    pub flow_hasher: FlowHasher,
    /// ESP tunnels; tunnel `i` is FIB egress `ports.len() + i`.
    pub tunnels: Vec<Tunnel>,
    /// The tunnels' remote prefixes, each routed to its tunnel: a packet
    /// from one of these sources must arrive through that tunnel (RFC 4301
    /// §5.2), so one lookup finds the tunnel whose policy a cleartext
    /// packet would break.
    pub protected: Fib,
    /// The clock origin SA lifetimes and NAT timeouts count from (fixed
    /// for the engine's life).
    pub epoch: Instant,
    /// NAT rules, settings and the workers' session snapshots.
    pub nat: NatTables,
}

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
        SaSpec {
            created: other.created,
            ..self.clone()
        } == *other
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
    /// Inbound SAs accepted (the configured one first, then those installed
    /// for a rekey); each worker keeps its own replay window per SA.
    pub in_specs: Vec<Arc<SaSpec>>,
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

impl Tables {
    /// The port or tunnel a FIB egress id names.
    #[inline]
    pub fn egress(&self, id: EgressId) -> Option<Egress<'_>> {
        let id = id.index();
        match id.checked_sub(self.ports.len()) {
            None => self.ports.get(id).map(Egress::Port),
            Some(i) => self.tunnels.get(i).map(Egress::Tunnel),
        }
    }

    /// Port by kernel name.
    pub fn port_by_name(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// Builds tables from a configuration, resolving interfaces with
    /// `link` (normally [`kernel_link`]). Refuses the whole configuration
    /// on the first inconsistency, naming the item and the reason.
    pub fn build(
        config: &Config,
        path: &str,
        generation: u64,
        flow_seed: u64,
        previous: Option<&Tables>,
        mut link: impl FnMut(&str) -> std::io::Result<KernelLink>,
    ) -> Result<Tables, ConfigError> {
        let invalid_at = |span: Option<Span>, item: String, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            span,
            item,
            reason,
        };
        let invalid = |item: String, reason: String| invalid_at(None, item, reason);
        if config.interfaces.is_empty() {
            return Err(invalid(
                "[[interface]]".into(),
                "at least one interface is needed".into(),
            ));
        }
        if config.interfaces.len() > usize::from(u16::MAX) {
            return Err(invalid(
                "[[interface]]".into(),
                "too many interfaces".into(),
            ));
        }
        let mut routes = RouteTable::new();
        let mut ports = Vec::with_capacity(config.interfaces.len());
        for (i, ic) in config.interfaces.iter().enumerate() {
            let item = format!("interface {}", ic.name);
            let at = |field: &str| ic.spans.span(field);
            if config.interfaces[..i].iter().any(|o| o.name == ic.name) {
                return Err(invalid_at(at("name"), item, "listed twice".into()));
            }
            let kl = link(&ic.name).map_err(|e| {
                invalid_at(
                    at("name"),
                    item.clone(),
                    format!("not found in this network namespace ({e})"),
                )
            })?;
            let id = i as u16;
            let mut port = Port {
                id,
                name: ic.name.clone(),
                mtu: ic.mtu.unwrap_or(kl.mtu),
                link: kl,
                v4: Vec::new(),
                v6: Vec::new(),
            };
            if port.mtu < 576 || port.mtu > port.link.mtu {
                return Err(invalid_at(
                    at("mtu"),
                    item,
                    format!(
                        "mtu {} must be between 576 and the link's {}",
                        port.mtu, port.link.mtu
                    ),
                ));
            }
            for a in &ic.addresses {
                let bad = |reason: String| {
                    invalid_at(at("addresses"), format!("{item} address {a}"), reason)
                };
                let (addr, len) = parse_addr_len(a).map_err(bad)?;
                let host = IpCidr::new_truncated(addr, if addr.is_ipv4() { 32 } else { 128 })
                    .map_err(|e| bad(e.to_string()))?;
                let subnet = IpCidr::new_truncated(addr, len).map_err(|e| bad(e.to_string()))?;
                if routes.get(host).is_some() {
                    return Err(invalid_at(
                        at("addresses"),
                        format!("{item} address {a}"),
                        "address configured twice".into(),
                    ));
                }
                routes.insert(Route::connected(subnet, EgressId(id)));
                routes.insert(Route::local(host));
                match addr {
                    IpAddr::V4(v4) => port.v4.push((v4, len)),
                    IpAddr::V6(v6) => port.v6.push((v6, len)),
                }
            }
            ports.push(port);
        }
        let epoch = previous.map_or_else(Instant::now, |p| p.epoch);
        let mut tunnels = Vec::with_capacity(config.tunnels.len());
        for (i, tc) in config.tunnels.iter().enumerate() {
            let item = format!("tunnel {}", tc.name);
            if config.tunnels[..i].iter().any(|o| o.name == tc.name) {
                return Err(invalid_at(
                    tc.spans.span("name"),
                    item,
                    "listed twice".into(),
                ));
            }
            let old = previous.and_then(|p| p.tunnels.iter().find(|t| t.name == tc.name));
            let tunnel = build_tunnel(i, tc, &ports, epoch, old).map_err(|(field, reason)| {
                invalid_at(tc.spans.span(field), item.clone(), reason)
            })?;
            for prefix in &tunnel.prefixes {
                if routes.get(*prefix).is_some() {
                    return Err(invalid_at(
                        tc.spans.span("prefixes"),
                        item.clone(),
                        format!("prefix {prefix} is already routed (an interface subnet or another tunnel)"),
                    ));
                }
                routes.insert(Route::connected(*prefix, tunnel.egress));
            }
            for spec in &tunnel.in_specs {
                if tunnels
                    .iter()
                    .any(|t: &Tunnel| t.in_specs.iter().any(|s| s.spi == spec.spi))
                {
                    return Err(invalid_at(
                        tc.spans.span("inbound"),
                        item.clone(),
                        format!("inbound SPI {} is used by another tunnel", spec.spi),
                    ));
                }
            }
            tunnels.push(tunnel);
        }
        let port_of = |name: &str| ports.iter().find(|p| p.name == name).map(|p| p.id);
        for rc in &config.routes {
            let item = format!("route {}", rc.prefix);
            // `field`: the one at fault, whose line the error names.
            let invalid = |field: &str, item: String, reason: String| {
                invalid_at(rc.spans.span(field), item, reason)
            };
            let prefix: IpCidr = rc.prefix.parse().map_err(|e: strait_fib::CidrError| {
                invalid("prefix", item.clone(), e.to_string())
            })?;
            let route = match rc.kind.as_deref() {
                Some("blackhole") | Some("unreachable")
                    if !rc.via.is_empty() || rc.dev.is_some() =>
                {
                    return Err(invalid(
                        "kind",
                        item,
                        "kind blackhole or unreachable takes no via or dev".into(),
                    ))
                }
                Some("blackhole") => Route::blackhole(prefix),
                Some("unreachable") => Route::unreachable(prefix),
                Some(other) => {
                    return Err(invalid(
                        "kind",
                        item,
                        format!("kind {other:?} is not one of blackhole, unreachable"),
                    ))
                }
                None => {
                    let dev = match &rc.dev {
                        Some(d) => Some(port_of(d).ok_or_else(|| {
                            invalid(
                                "dev",
                                item.clone(),
                                format!("dev {d} is not a configured interface"),
                            )
                        })?),
                        None => None,
                    };
                    if rc.via.is_empty() {
                        let Some(dev) = dev else {
                            return Err(invalid(
                                "prefix",
                                item,
                                "needs via (gateways) or dev (on-link)".into(),
                            ));
                        };
                        Route::connected(prefix, EgressId(dev))
                    } else {
                        let mut hops = Vec::with_capacity(rc.via.len());
                        for gw in &rc.via {
                            let gw: IpAddr = gw.parse().map_err(|_| {
                                invalid(
                                    "via",
                                    item.clone(),
                                    format!("via {gw} is not an IP address"),
                                )
                            })?;
                            if gw.is_ipv4() != prefix.is_ipv4() {
                                return Err(invalid(
                                    "via",
                                    item.clone(),
                                    format!("via {gw} is not of the prefix's address family"),
                                ));
                            }
                            let egress = match dev {
                                Some(d) => d,
                                None => connected_port(&ports, gw).ok_or_else(|| {
                                    invalid(
                                        "via",
                                        item.clone(),
                                        format!("gateway {gw} is not on any interface's subnet"),
                                    )
                                })?,
                            };
                            hops.push(NextHop::via(EgressId(egress), gw));
                        }
                        Route::ecmp(prefix, &hops)
                            .map_err(|e| invalid("prefix", item.clone(), e.to_string()))?
                    }
                }
            };
            if routes.get(prefix).is_some() {
                return Err(invalid(
                    "prefix",
                    item,
                    "prefix already routed (a duplicate route or an interface's own subnet)".into(),
                ));
            }
            routes.insert(route);
        }
        let mut static_neighbours = Vec::new();
        for n in &config.neighbours {
            let item = format!("neighbour {} on {}", n.ip, n.interface);
            let invalid = |field: &str, item: String, reason: String| {
                invalid_at(n.spans.span(field), item, reason)
            };
            let port = port_of(&n.interface).ok_or_else(|| {
                invalid(
                    "interface",
                    item.clone(),
                    "not a configured interface".into(),
                )
            })?;
            let ip: IpAddr =
                n.ip.parse()
                    .map_err(|_| invalid("ip", item.clone(), "ip is not an IP address".into()))?;
            let mac = parse_mac(&n.mac).ok_or_else(|| {
                invalid(
                    "mac",
                    item.clone(),
                    format!("mac {:?} is not aa:bb:cc:dd:ee:ff", n.mac),
                )
            })?;
            static_neighbours.push(StaticNeighbour { port, ip, mac });
        }
        if config.engine.workers == 0 || config.engine.workers > 64 {
            return Err(invalid(
                "engine.workers".into(),
                "must be between 1 and 64".into(),
            ));
        }
        if !config.engine.cores.is_empty() && config.engine.cores.len() != config.engine.workers {
            return Err(invalid(
                "engine.cores".into(),
                format!(
                    "lists {} cores for {} workers",
                    config.engine.cores.len(),
                    config.engine.workers
                ),
            ));
        }
        let e = &config.engine;
        if e.realtime_priority > 99 {
            return Err(invalid(
                "engine.realtime_priority".into(),
                format!(
                    "{} is above 99 (0: normal scheduling, 1-99: SCHED_FIFO priority)",
                    e.realtime_priority
                ),
            ));
        }
        for (key, n) in [("engine.rx_ring", e.rx_ring), ("engine.tx_ring", e.tx_ring)] {
            if !n.is_power_of_two() || !(64..=16384).contains(&n) {
                return Err(invalid(
                    key.into(),
                    format!("{n} must be a power of two from 64 to 16384"),
                ));
            }
        }
        if !(1..=256).contains(&config.engine.batch) {
            return Err(invalid(
                "engine.batch".into(),
                "must be between 1 and 256".into(),
            ));
        }
        config
            .metrics
            .listen_addr()
            .map_err(|reason| invalid("[metrics]".into(), reason))?;
        let nat = NatTables::build(
            config,
            &ports,
            &tunnels,
            flow_seed,
            previous.map(|p| &p.nat),
        )
        .map_err(|(item, field, reason)| {
            let rule = item
                .strip_prefix("nat rule ")
                // The last rule of that name: "listed twice" is about it.
                .and_then(|name| config.nat.iter().rev().find(|r| r.name == name));
            let span = rule.and_then(|r| match field {
                Some(f) => r.spans.span(f),
                None => r.spans.first(),
            });
            invalid_at(span, item, reason)
        })?;
        let mut protected = RouteTable::new();
        for tun in &tunnels {
            for prefix in &tun.prefixes {
                protected.insert(Route::connected(*prefix, tun.egress));
            }
        }
        Ok(Tables {
            nat,
            protected: protected.snapshot(),
            generation,
            fib: routes.snapshot(),
            routes,
            ports,
            static_neighbours,
            icmp: config.icmp.clone(),
            flow_hasher: FlowHasher::new(flow_seed),
            tunnels,
            epoch,
        })
    }
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
                .map_err(|e| ("prefixes", format!("prefix {p}: {e}")))?,
        );
    }
    if prefixes.is_empty() {
        return Err((
            "prefixes",
            "needs at least one prefix behind the peer".into(),
        ));
    }
    let mut local_prefixes = Vec::with_capacity(tc.local_prefixes.len());
    for p in &tc.local_prefixes {
        local_prefixes.push(
            p.parse::<IpCidr>()
                .map_err(|e| ("local_prefixes", format!("local prefix {p}: {e}")))?,
        );
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
    // An unchanged SA keeps its state across reloads: a new OutboundSa
    // would restart the sequence at 1 and reuse nonces under the same key.
    let (out_sa, out_spec) = match old {
        Some(o) if o.out_spec.same_sa(&out_spec) => {
            (Arc::clone(&o.out_sa), Arc::clone(&o.out_spec))
        }
        _ => {
            let sa = OutboundSa::new(&out_spec.sa_config())
                .map_err(|e| ("outbound", format!("outbound SPI {}: {e}", out_spec.spi)))?;
            (sa, Arc::new(out_spec))
        }
    };
    let in_specs = in_new
        .into_iter()
        .map(|spec| {
            old.and_then(|o| o.in_specs.iter().find(|s| s.same_sa(&spec)))
                .map_or_else(|| Arc::new(spec), Arc::clone)
        })
        .collect();
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
        in_specs,
        prefixes,
    })
}

/// The port whose subnet holds `addr`.
fn connected_port(ports: &[Port], addr: IpAddr) -> Option<u16> {
    ports
        .iter()
        .find(|p| match addr {
            IpAddr::V4(a) => p.v4.iter().any(|(pa, len)| {
                IpCidr::new_truncated(IpAddr::V4(*pa), *len)
                    .is_ok_and(|n| n.contains_addr(IpAddr::V4(a)))
            }),
            IpAddr::V6(a) => p.v6.iter().any(|(pa, len)| {
                IpCidr::new_truncated(IpAddr::V6(*pa), *len)
                    .is_ok_and(|n| n.contains_addr(IpAddr::V6(a)))
            }),
        })
        .map(|p| p.id)
}

/// Parses an interface address `addr/len`, keeping the host bits.
fn parse_addr_len(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| "expected address/prefix-length".to_owned())?;
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{a:?} is not an IP address"))?;
    let len: u8 = l
        .parse()
        .map_err(|_| format!("prefix length {l:?} is not a number"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix length {len} exceeds {max}"));
    }
    Ok((addr, len))
}

/// The published tables, shared by the control side and the workers.
#[derive(Debug)]
pub struct SharedTables(ArcSwap<Tables>);

impl SharedTables {
    /// Starts with `tables`.
    pub fn new(tables: Tables) -> SharedTables {
        SharedTables(ArcSwap::from_pointee(tables))
    }

    /// The current snapshot (workers: once per batch).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Tables>> {
        self.0.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn load_full(&self) -> Arc<Tables> {
        self.0.load_full()
    }

    /// Publishes a complete new snapshot.
    pub fn publish(&self, tables: Tables) {
        self.0.store(Arc::new(tables));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_link(name: &str) -> std::io::Result<KernelLink> {
        match name {
            "lan" => Ok(KernelLink {
                ifindex: 2,
                mac: [2, 0, 0, 0, 0, 1],
                mtu: 1500,
            }),
            "wan" => Ok(KernelLink {
                ifindex: 3,
                mac: [2, 0, 0, 0, 0, 2],
                mtu: 1500,
            }),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    }

    const BASE: &str = r#"
[[interface]]
name = "lan"
addresses = ["10.0.1.1/24", "fd00:1::1/64"]
[[interface]]
name = "wan"
addresses = ["192.0.2.1/24"]
"#;

    fn build(extra: &str) -> Result<Tables, ConfigError> {
        let c = Config::parse(&format!("{BASE}{extra}"), "t.toml")?;
        Tables::build(&c, "t.toml", 1, 7, None, fake_link)
    }

    #[test]
    fn builds_connected_local_and_static_routes() {
        let t = build("[[route]]\nprefix = \"0.0.0.0/0\"\nvia = [\"192.0.2.254\"]\n").unwrap();
        use strait_fib::Disposition;
        let d = |a: &str| t.fib.lookup(a.parse().unwrap(), 0);
        assert_eq!(d("10.0.1.1"), Some(Disposition::Local));
        assert_eq!(
            d("10.0.1.9"),
            Some(Disposition::Forward(NextHop::on_link(EgressId(0))))
        );
        assert_eq!(
            d("8.8.8.8"),
            Some(Disposition::Forward(NextHop::via(
                EgressId(1),
                "192.0.2.254".parse().unwrap()
            )))
        );
        assert_eq!(d("fd00:1::1"), Some(Disposition::Local));
        assert_eq!(d("fd00:2::1"), None);
        assert_eq!(
            t.ports[0].icmp_source_v4(),
            Some(Ipv4Addr::new(10, 0, 1, 1))
        );
    }

    #[test]
    fn refuses_bad_configs_naming_item_and_reason() {
        let cases = [
            ("[[route]]\nprefix = \"10.9.0.0/33\"\nvia = [\"192.0.2.254\"]\n", "route 10.9.0.0/33", Some(9)),
            ("[[route]]\nprefix = \"10.9.0.0/16\"\nvia = [\"203.0.113.1\"]\n", "not on any interface", Some(10)),
            ("[[route]]\nprefix = \"10.9.0.0/16\"\n", "needs via", Some(9)),
            ("[[route]]\nprefix = \"10.9.0.0/16\"\ndev = \"eth9\"\n", "dev eth9", Some(10)),
            ("[[route]]\nprefix = \"10.9.0.0/16\"\nkind = \"magic\"\n", "magic", Some(10)),
            (
                "[[route]]\nprefix = \"10.9.0.0/16\"\nvia = [\"192.0.2.2\",\"192.0.2.3\",\"192.0.2.4\",\"192.0.2.5\",\"192.0.2.6\"]\n",
                "route 10.9.0.0/16", Some(9)),
            ("[[route]]\nprefix = \"fd00:9::/64\"\nvia = [\"192.0.2.2\"]\n", "address family", Some(10)),
            ("[[interface]]\nname = \"eth7\"\n", "interface eth7: not found", Some(9)),
            ("[[interface]]\nname = \"lan\"\n", "listed twice", Some(9)),
            ("[[neighbour]]\ninterface = \"lan\"\nip = \"10.0.1.2\"\nmac = \"zz\"\n", "mac", Some(11)),
            ("[engine]\nworkers = 0\n", "engine.workers", None),
            ("[engine]\nworkers = 2\ncores = [1]\n", "engine.cores", None),
            ("[engine]\nrealtime_priority = 100\n", "engine.realtime_priority: 100 is above 99", None),
            ("[engine]\nrx_ring = 1000\n", "engine.rx_ring: 1000 must be a power of two", None),
            ("[engine]\ntx_ring = 32768\n", "engine.tx_ring: 32768 must be a power of two from 64 to 16384", None),
            (
                "[[nat]]\nname = \"m\"\nkind = \"masquerade\"\nsource = \"10.0.1.0/24\"\n",
                "nat rule m: masquerade needs out_interface", Some(9)),
            (
                "[[nat]]\nname = \"m\"\nkind = \"masquerade\"\nsource = \"10.0.1.0/24\"\nout_interface = \"eth9\"\n",
                "out_interface eth9 is not a configured interface or tunnel", Some(12)),
            (
                "[[nat]]\nname = \"s\"\nkind = \"snat\"\nsource = \"10.0.1.0/33\"\naddresses = [\"192.0.2.9\"]\n",
                "nat rule s: source: 10.0.1.0/33: prefix length 33 exceeds 32", Some(11)),
            // Host bits are refused as in routes, not silently cleared to
            // translate the whole 10.1.0.0/16.
            (
                "[[nat]]\nname = \"s\"\nkind = \"snat\"\nsource = \"10.1.2.3/16\"\naddresses = [\"192.0.2.9\"]\n",
                "nat rule s: source: 10.1.2.3/16: host bits set after /16 (did you mean 10.1.0.0/16?)", Some(11)),
            (
                "[[nat]]\nname = \"s\"\nkind = \"snat\"\nsource = \"10.1.0.0/16\"\ndestination = \"192.0.2.77/24\"\naddresses = [\"192.0.2.9\"]\n",
                "nat rule s: destination: 192.0.2.77/24: host bits set after /24 (did you mean 192.0.2.0/24?)", Some(12)),
            (
                "[[route]]\nprefix = \"10.9.1.0/16\"\nvia = [\"192.0.2.254\"]\n",
                "route 10.9.1.0/16: 10.9.1.0/16: host bits set after /16 (did you mean 10.9.0.0/16?)", Some(9)),
            (
                "[[nat]]\nname = \"s\"\nkind = \"snat\"\nsource = \"10.0.1.0/24\"\n",
                "snat needs addresses", Some(9)),
            (
                "[[nat]]\nname = \"s\"\nkind = \"snat\"\nsource = \"10.0.1.0/24\"\naddresses = [\"192.0.2.9\"]\nports = \"2000-1000\"\n",
                "ports \"2000-1000\"", Some(13)),
            (
                "[[nat]]\nname = \"x\"\nkind = \"static\"\ninternal = \"10.0.1.5\"\nexternal = \"192.0.2.5\"\nsource = \"10.0.0.0/8\"\n",
                "nat rule x: source does not apply to a static rule", Some(13)),
            (
                "[[nat]]\nname = \"d\"\nkind = \"dnat\"\nprotocol = \"icmp\"\npublic = \"192.0.2.1:80\"\nbackends = [\"10.0.1.2:80\"]\n",
                "protocol \"icmp\" is not tcp or udp", Some(11)),
            (
                "[[nat]]\nname = \"d\"\nkind = \"dnat\"\nprotocol = \"tcp\"\npublic = \"192.0.2.1:80\"\nbackends = [\"10.0.1.2\"]\n",
                "nat rule d: backend: \"10.0.1.2\" is not an IPv4 addr:port", Some(13)),
            (
                "[[nat]]\nname = \"a\"\nkind = \"dnat\"\nprotocol = \"tcp\"\npublic = \"192.0.2.1:80\"\nbackends = [\"10.0.1.2:80\"]\n\
                 [[nat]]\nname = \"b\"\nkind = \"dnat\"\nprotocol = \"tcp\"\npublic = \"192.0.2.1:80\"\nbackends = [\"10.0.1.3:80\"]\n",
                "nat rule b: public endpoint tcp 192.0.2.1:80 already published by nat rule a", Some(18)),
            (
                "[[nat]]\nname = \"a\"\nkind = \"static\"\ninternal = \"10.0.1.5\"\nexternal = \"192.0.2.5\"\n\
                 [[nat]]\nname = \"a\"\nkind = \"static\"\ninternal = \"10.0.1.6\"\nexternal = \"192.0.2.6\"\n",
                "nat rule a: listed twice", Some(14)),
            (
                "[metrics]\nlisten = \"0.0.0.0:9464\"\n",
                "[metrics]: listen 0.0.0.0:9464: only a loopback address is allowed",
                None,
            ),
            (
                "[nat_settings]\nudp_timeout = 30\n",
                "[nat_settings]: udp timeout 30 s is below the 120 s required by RFC 4787 REQ-5", None),
            (
                "[engine]\nworkers = 2\n[[nat]]\nname = \"a\"\nkind = \"static\"\ninternal = \"10.0.1.5\"\nexternal = \"192.0.2.5\"\n",
                "[[nat]]: NAT needs engine.workers = 1", None),
        ];
        // BASE takes 7 lines; an item's line is where its field at fault
        // (or its first field) is written.
        for (extra, want, line) in cases {
            let err = build(extra).unwrap_err().to_string();
            let at = line
                .map(|l| format!("t.toml line {l}: "))
                .unwrap_or("t.toml: ".into());
            assert!(err.starts_with(&at), "{extra:?}: {err} (want {at:?})");
            assert!(err.contains(want), "{extra:?}: {err}");
        }
        let c = Config::parse(
            "[[interface]]\nname = \"lan\"\naddresses = [\"10.0.0.1/40\"]\n",
            "t",
        )
        .unwrap();
        let err = Tables::build(&c, "t", 1, 7, None, fake_link)
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefix length 40 exceeds 32"), "{err}");
        assert!(
            err.starts_with("t line 3: interface lan address 10.0.0.1/40"),
            "{err}"
        );
    }

    #[test]
    fn tunnel_errors_name_the_line_of_the_field_at_fault() {
        let tunnel = |local: &str, cipher: &str| {
            format!(
                "[[tunnel]]\nname = \"hub\"\nlocal = \"{local}\"\nremote = \"198.51.100.1\"\n\
                 prefixes = [\"10.2.0.0/16\"]\n\
                 outbound = {{ spi = 4096, cipher = \"aes128-gcm\", key = \"{KEY}\" }}\n\
                 inbound = {{ spi = 4097, cipher = \"{cipher}\", key = \"{KEY}\" }}\n"
            )
        };
        const KEY: &str = "000102030405060708090a0b0c0d0e0f10111213";
        // BASE takes 7 lines: [[tunnel]] is line 8, local line 10,
        // inbound line 14.
        let err = build(&tunnel("192.0.2.9", "aes128-gcm")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml line 10: tunnel hub: local 192.0.2.9 is not an address of any interface"
        );
        assert_eq!(err.line(), Some(10));
        let err = build(&tunnel("192.0.2.1", "rot13")).unwrap_err();
        assert_eq!(err.line(), Some(14), "{err}");
        assert!(err.to_string().contains("cipher \"rot13\""), "{err}");
        assert!(build(&tunnel("192.0.2.1", "aes128-gcm")).is_ok());
        // A change made at run time has no line to name.
        let mut c = Config::parse(BASE, "t.toml").unwrap();
        c.routes.push(crate::config::RouteConfig {
            prefix: "10.9.0.0/33".into(),
            via: vec!["192.0.2.254".into()],
            dev: None,
            kind: None,
            spans: Default::default(),
        });
        let err = Tables::build(&c, "t.toml", 1, 7, None, fake_link).unwrap_err();
        assert!(
            err.to_string().starts_with("t.toml: route 10.9.0.0/33: "),
            "{err}"
        );
        assert_eq!(err.line(), None);
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("2:0:0:0:0:a"), None);
        assert_eq!(parse_mac("02:00:00:00:00"), None);
    }
}
