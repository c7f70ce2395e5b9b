//! The engine's configuration, as read from TOML.
//!
//! Parsing checks the syntax and the types (with the line of the offending
//! value); `Tables::build` (`tables/mod.rs`) turns it into tables and
//! refuses inconsistent content, naming the item and the reason. Nothing is
//! applied until the whole file is valid.

use serde::Deserialize;

mod dns;
pub use dns::{
    Checked, DnsConfig, DnsForwardConfig, DnsName, DnsPattern, DnsRecord, DnsServer, DnsZoneConfig,
    Parsed,
};

/// A whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Workers, AF_XDP options, polling.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Interfaces the dataplane takes over.
    #[serde(default, rename = "interface")]
    pub interfaces: Vec<InterfaceConfig>,
    /// Static routes (connected and local routes come from the addresses).
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Static neighbours (optional; neighbours are normally resolved).
    #[serde(default, rename = "neighbour")]
    pub neighbours: Vec<NeighbourConfigEntry>,
    /// ICMP generation.
    #[serde(default)]
    pub icmp: IcmpConfig,
    /// ESP tunnels to peers.
    #[serde(default, rename = "tunnel")]
    pub tunnels: Vec<TunnelConfig>,
    /// NAT rules, matched in the order given (SNAT/masquerade) or by
    /// public endpoint (DNAT) and address (static).
    #[serde(default, rename = "nat")]
    pub nat: Vec<NatRuleConfig>,
    /// NAT capacities, timeouts and filtering.
    #[serde(default)]
    pub nat_settings: NatSettingsConfig,
    /// Load-balanced services: a virtual address and port spread over
    /// backends by Maglev hashing, with health checks.
    #[serde(default, rename = "load_balancer")]
    pub load_balancers: Vec<LoadBalancerConfig>,
    /// Prometheus metrics endpoint (off unless `listen` is set).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// IKEv2 key exchange (RFC 7296), run by the daemon: the hubs a
    /// device registers with and, on a hub, the device registry. While it
    /// is set, IKE traffic to our addresses (UDP 500, and 4500 with the
    /// non-ESP marker) goes to the daemon instead of the host stack.
    pub ike: Option<IkeConfig>,
    /// The SNI/Host forward proxy, run by the daemon (off when absent).
    pub proxy: Option<ProxyConfig>,
    /// Split DNS, run by the daemon: private zones, conditional
    /// forwarding, a cache, and routes into a tunnel from the answers for
    /// accelerated names.
    pub dns: Option<DnsConfig>,
}

/// `[ike]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IkeConfig {
    /// Our IKE identity (ID_FQDN): a device's serial number, or the hub's
    /// name.
    pub identity: String,
    /// File holding this device's key (the pre-shared key it registers
    /// with), read at start; never on the command line. A relative path
    /// is taken from the configuration file's directory.
    pub key_file: Option<std::path::PathBuf>,
    /// Seconds without a word from a peer before it is asked whether it
    /// is alive (RFC 7296 §1.4); it is declared dead when the request goes
    /// unanswered through its retransmissions (15 s more), its tunnel
    /// removed and, on a device, registration starts again.
    #[serde(default = "default_dpd")]
    pub dpd_seconds: u64,
    /// Seconds after which a CHILD SA we negotiated is rekeyed (new keys
    /// without loss, RFC 7296 §2.8), with ±10 % jitter; the IKE SA is
    /// rekeyed after four times as long. 0 leaves rekeying to the peer.
    #[serde(default = "default_rekey")]
    pub rekey_seconds: u64,
    /// Inner bytes after which a CHILD SA we negotiated is rekeyed (0:
    /// only by time). Whatever this says, an SA is rekeyed when its
    /// sequence numbers near their end (the engine's lifetime events).
    #[serde(default)]
    pub rekey_bytes: u64,
    /// Hub: file holding the secret the devices' keys are derived from
    /// (`straitd --device-key SERIAL` prints a device's key), for devices
    /// listed without a `key_file`. Relative: from the configuration
    /// file's directory.
    pub device_secret_file: Option<std::path::PathBuf>,
    /// Hub: prefixes every registered device is told it reaches through
    /// us (e.g. the cloud's), announced with the other sites' when
    /// `transit` is on.
    #[serde(default)]
    pub advertise: Vec<String>,
    /// Hub: each site is also told the prefixes the other sites hold, so
    /// sites reach each other through the hub.
    #[serde(default = "default_transit")]
    pub transit: bool,
    /// Hubs this device registers with (initiator).
    #[serde(default)]
    pub peer: Vec<IkePeerConfig>,
    /// Devices that may register here (responder): the registry.
    #[serde(default)]
    pub device: Vec<IkeDeviceConfig>,
}

fn default_dpd() -> u64 {
    10
}

fn default_rekey() -> u64 {
    3600
}

fn default_transit() -> bool {
    true
}

fn default_learn() -> bool {
    true
}

/// `[[ike.peer]]`: a hub to register with. Its tunnel exists once the key
/// exchange succeeds; until then traffic for its prefixes is dropped, not
/// sent in clear.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IkePeerConfig {
    /// Name of the tunnel it brings up.
    pub name: String,
    /// Our outer address.
    pub local: String,
    /// The hub's address (IKE on UDP 500, then 4500 behind a NAT).
    pub remote: String,
    /// The identity the hub must prove (any, when absent).
    pub remote_identity: Option<String>,
    /// Prefixes always routed to the hub (besides what it announces).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Our prefixes, claimed at the hub (our IKEv2 TSi).
    #[serde(default)]
    pub local_prefixes: Vec<String>,
    /// Take the routes the hub announces (its cloud prefixes, other sites'
    /// with transit); off: only `prefixes`.
    #[serde(default = "default_learn")]
    pub learn: bool,
}

/// `[[ike.device]]`: a device the hub accepts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IkeDeviceConfig {
    /// Its serial number (its IKE identity).
    pub serial: String,
    /// File holding its key (relative: from the configuration file's
    /// directory); without one, its key is derived from `[ike]
    /// device_secret_file` and the serial.
    pub key_file: Option<std::path::PathBuf>,
    /// The site it belongs to: names its tunnel (`site-NAME`).
    pub site: String,
    /// Prefixes it may claim; its tunnel carries these.
    pub prefixes: Vec<String>,
    /// Our outer address for its tunnel.
    pub local: String,
}

/// `[metrics]`: a Prometheus text endpoint served by the daemon, read at
/// start (changing it needs a restart).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Loopback `addr:port` to serve `/metrics` on, e.g. `127.0.0.1:9464`.
    pub listen: Option<String>,
}

impl MetricsConfig {
    /// The address to serve on, if any; only loopback addresses are
    /// accepted (the counters are not meant for other hosts).
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, String> {
        let Some(listen) = &self.listen else {
            return Ok(None);
        };
        let addr: std::net::SocketAddr = listen
            .parse()
            .map_err(|_| format!("listen {listen:?} is not addr:port"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "listen {listen}: only a loopback address is allowed"
            ));
        }
        Ok(Some(addr))
    }
}

/// `[proxy]`: a forward proxy that reads the server name a TCP client
/// opens with (TLS ClientHello `server_name`, or HTTP/1 `Host`), checks it
/// against `allow`/`deny`, resolves it and relays the connection to it
/// from `egress`. Read at start (a change needs a restart).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// `addr:port` to accept on, e.g. `["192.0.2.1:443", "192.0.2.1:80"]`;
    /// the upstream is reached on the same port.
    pub listen: Vec<String>,
    /// Names relayed: exact names and `*.suffix` wildcards (descendants
    /// only; `*` alone: every name).
    pub allow: Vec<String>,
    /// Names refused even though `allow` matches them (the most specific
    /// entry of both lists decides: exact beats wildcard, longest suffix
    /// wins).
    #[serde(default)]
    pub deny: Vec<String>,
    /// The resolver asked for the upstream's address: `addr` (port 53) or
    /// `addr:port`.
    pub resolver: String,
    /// Local address the upstream connections leave from (the kernel
    /// chooses when absent).
    pub egress: Option<String>,
    /// Seconds a client has to send its whole head (ClientHello or request
    /// head).
    #[serde(default = "default_proxy_head_timeout")]
    pub head_timeout: u64,
    /// Seconds to wait for the resolver's answer.
    #[serde(default = "default_proxy_resolve_timeout")]
    pub resolve_timeout: u64,
    /// Seconds to wait for the upstream to accept.
    #[serde(default = "default_proxy_connect_timeout")]
    pub connect_timeout: u64,
    /// Seconds without a byte either way before a relayed connection is
    /// closed.
    #[serde(default = "default_proxy_idle_timeout")]
    pub idle_timeout: u64,
    /// Client connections handled at once; more are closed on accept.
    #[serde(default = "default_proxy_max_connections")]
    pub max_connections: usize,
    /// Where the section's fields are in the file.
    #[serde(skip)]
    pub spans: FieldSpans,
}

fn default_proxy_head_timeout() -> u64 {
    10
}

fn default_proxy_resolve_timeout() -> u64 {
    3
}

fn default_proxy_connect_timeout() -> u64 {
    5
}

fn default_proxy_idle_timeout() -> u64 {
    300
}

fn default_proxy_max_connections() -> usize {
    1024
}

/// `[proxy]` checked and in its working form.
#[derive(Debug, Clone)]
pub struct ProxyPlan {
    /// Listening addresses, in order.
    pub listen: Vec<std::net::SocketAddr>,
    /// Each name pattern with whether it is allowed (`true`) or denied.
    pub names: strait_names::NameSet<bool>,
    /// The resolver.
    pub resolver: std::net::SocketAddr,
    /// Source address of upstream connections.
    pub egress: Option<std::net::IpAddr>,
    /// `head_timeout`.
    pub head_timeout: std::time::Duration,
    /// `resolve_timeout`.
    pub resolve_timeout: std::time::Duration,
    /// `connect_timeout`.
    pub connect_timeout: std::time::Duration,
    /// `idle_timeout`.
    pub idle_timeout: std::time::Duration,
    /// `max_connections`.
    pub max_connections: usize,
}

impl ProxyConfig {
    /// Checks the section; on error, the field at fault and the reason.
    pub fn plan(&self) -> Result<ProxyPlan, (&'static str, String)> {
        use std::net::{IpAddr, SocketAddr};
        if self.listen.is_empty() {
            return Err(("listen", "lists no address".into()));
        }
        let mut listen = Vec::new();
        for l in &self.listen {
            let a: SocketAddr = l
                .parse()
                .map_err(|_| ("listen", format!("{l:?} is not addr:port")))?;
            if a.port() == 0 {
                return Err(("listen", format!("{l}: port 0")));
            }
            if listen.contains(&a) {
                return Err(("listen", format!("{l} is listed twice")));
            }
            listen.push(a);
        }
        if self.allow.is_empty() {
            return Err((
                "allow",
                "lists no name: every connection would be refused".into(),
            ));
        }
        let mut names = strait_names::NameSet::new();
        for (field, list, allowed) in [("allow", &self.allow, true), ("deny", &self.deny, false)] {
            for n in list {
                let p: strait_names::Pattern =
                    n.parse().map_err(|e| (field, format!("{n:?}: {e}")))?;
                if names.insert(p, allowed).is_some() {
                    return Err((field, format!("{n} is listed twice")));
                }
            }
        }
        let resolver = self
            .resolver
            .parse::<SocketAddr>()
            .or_else(|_| {
                self.resolver
                    .parse::<IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            })
            .map_err(|_| {
                (
                    "resolver",
                    format!("{:?} is not an address or addr:port", self.resolver),
                )
            })?;
        let egress = match &self.egress {
            None => None,
            Some(e) => Some(
                e.parse::<IpAddr>()
                    .map_err(|_| ("egress", format!("{e:?} is not an address")))?,
            ),
        };
        if let Some(e) = egress {
            if e.is_ipv4() != resolver.is_ipv4() {
                return Err((
                    "egress",
                    format!("{e} and the resolver {resolver} are of different families"),
                ));
            }
        }
        let seconds = |field: &'static str, v: u64| {
            if (1..=86_400).contains(&v) {
                Ok(std::time::Duration::from_secs(v))
            } else {
                Err((field, format!("{v} is not between 1 and 86400 seconds")))
            }
        };
        if !(1..=65_536).contains(&self.max_connections) {
            return Err((
                "max_connections",
                format!("{} is not between 1 and 65536", self.max_connections),
            ));
        }
        Ok(ProxyPlan {
            listen,
            names,
            resolver,
            egress,
            head_timeout: seconds("head_timeout", self.head_timeout)?,
            resolve_timeout: seconds("resolve_timeout", self.resolve_timeout)?,
            connect_timeout: seconds("connect_timeout", self.connect_timeout)?,
            idle_timeout: seconds("idle_timeout", self.idle_timeout)?,
            max_connections: self.max_connections,
        })
    }

    /// [`plan`](Self::plan) with the error as a [`ConfigError`] naming the
    /// field's line.
    pub fn checked(&self, path: &str) -> Result<ProxyPlan, ConfigError> {
        self.plan().map_err(|(field, reason)| {
            Invalid(path).at(self.spans.span(field), format!("[proxy] {field}"), reason)
        })
    }
}

/// What a `[[nat]]` rule does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NatKindConfig {
    /// Source NAT to a pool of addresses (`addresses`).
    Snat,
    /// Source NAT to the address of `out_interface`.
    Masquerade,
    /// Destination NAT / port forward of `public` to `backends`.
    Dnat,
    /// Static 1:1 NAT between `internal` and `external`.
    Static,
}

/// How a DNAT rule with several backends picks one.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendSelectionConfig {
    /// A keyed hash of the client's address and port: a client sticks to
    /// one backend.
    #[default]
    Hash,
    /// Each new flow takes the next backend (per worker).
    RoundRobin,
}

/// `[[nat]]`: one translation rule. Which fields apply depends on `kind`;
/// a field that does not apply to the kind is refused.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatRuleConfig {
    /// Name, unique among the rules; shown with the sessions it created.
    pub name: String,
    /// snat, masquerade, dnat or static.
    pub kind: NatKindConfig,
    /// snat/masquerade: internal source prefix, `addr/len`.
    pub source: Option<String>,
    /// snat/masquerade: only for destinations in this prefix.
    pub destination: Option<String>,
    /// snat/masquerade: only for packets leaving by this interface or
    /// tunnel (required for masquerade: its address is the new source).
    pub out_interface: Option<String>,
    /// snat: the pool of egress addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// snat/masquerade: external port range `first-last`.
    pub ports: Option<String>,
    /// dnat: `tcp` or `udp`.
    pub protocol: Option<String>,
    /// dnat: published `addr:port`.
    pub public: Option<String>,
    /// dnat: private servers, `addr:port` each.
    #[serde(default)]
    pub backends: Vec<String>,
    /// dnat: backend choice for new flows.
    pub selection: Option<BackendSelectionConfig>,
    /// static: the private address.
    pub internal: Option<String>,
    /// static: the public address.
    pub external: Option<String>,
    /// Where the item's fields are in the file (empty for items added
    /// at run time).
    #[serde(skip)]
    pub spans: FieldSpans,
}

/// Inbound filtering of dynamic mappings (RFC 4787 §5).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NatFilteringConfig {
    /// Only hosts the inside endpoint has sent to may answer.
    #[default]
    AddressDependent,
    /// Anyone may reach a mapped endpoint (best for peer-to-peer).
    EndpointIndependent,
}

/// `[nat_settings]`. Fixed for the engine's life: sessions are sized and
/// keyed from it, so a change needs a restart.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NatSettingsConfig {
    /// Sessions each worker can hold (memory is reserved up front).
    pub max_sessions: usize,
    /// Filtering behaviour for dynamic mappings.
    pub filtering: NatFilteringConfig,
    /// UDP idle timeout, seconds (RFC 4787 REQ-5: at least 120).
    pub udp_timeout: u64,
    /// Established TCP idle timeout, seconds (RFC 5382 REQ-5: at least 7440).
    pub tcp_established_timeout: u64,
    /// Opening or closing TCP idle timeout, seconds (at least 240).
    pub tcp_transitory_timeout: u64,
    /// ICMP echo idle timeout, seconds (RFC 5508 REQ-2: at least 60).
    pub icmp_timeout: u64,
    /// Inbound UDP packets refresh the session too (RFC 4787 REQ-6 allows it).
    pub inbound_refresh: bool,
    /// Seconds a freed external port cools before another inside endpoint
    /// may have it (RFC 6888 REQ-8: at least 120; 0 turns it off).
    pub port_reuse_delay: u64,
    /// External ports one inside address may hold (RFC 6888 REQ-4; 0: no
    /// limit).
    pub ports_per_inside_address: u32,
    /// Sessions one inside address may hold (RFC 6888 REQ-5; 0: no limit).
    pub sessions_per_inside_address: u32,
    /// Sessions one remote address may open inbound through DNAT and
    /// static rules (0: no limit).
    pub inbound_sessions_per_remote_address: u32,
    /// Inbound-initiated sessions one DNAT or static rule may hold (0: no
    /// limit).
    pub inbound_sessions_per_rule: u32,
}

impl Default for NatSettingsConfig {
    fn default() -> Self {
        let lib = strait_nat::NatConfig::default();
        NatSettingsConfig {
            max_sessions: lib.max_sessions,
            filtering: NatFilteringConfig::AddressDependent,
            udp_timeout: lib.timeouts.udp,
            tcp_established_timeout: lib.timeouts.tcp_established,
            tcp_transitory_timeout: lib.timeouts.tcp_transitory,
            icmp_timeout: lib.timeouts.icmp,
            inbound_refresh: lib.inbound_refresh,
            port_reuse_delay: lib.port_reuse_delay,
            ports_per_inside_address: lib.ports_per_inside_address,
            sessions_per_inside_address: lib.sessions_per_inside_address,
            inbound_sessions_per_remote_address: lib.inbound_sessions_per_remote_address,
            inbound_sessions_per_rule: lib.inbound_sessions_per_rule,
        }
    }
}

/// Key material in the configuration: never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

fn default_nat_t_port() -> u16 {
    4500
}

fn default_true() -> bool {
    true
}

fn default_keepalive() -> u64 {
    20
}

/// How ESP travels between the tunnel endpoints.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum EncapConfig {
    /// UDP-encapsulated ESP on port 4500 (RFC 3948): crosses NATs.
    #[default]
    Udp,
    /// Plain ESP, IP protocol 50.
    Esp,
}

/// `[[tunnel]]`: an ESP tunnel-mode connection to one peer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// Name, for show commands and messages.
    pub name: String,
    /// Our outer address (one of the interfaces' addresses).
    pub local: String,
    /// The peer's outer address.
    pub remote: String,
    /// Follow the peer's outer address and port as seen on authenticated
    /// packets (the peer sits behind a NAT that may change its mapping).
    #[serde(default)]
    pub float: bool,
    /// Encapsulation.
    #[serde(default)]
    pub encap: EncapConfig,
    /// Our UDP port.
    #[serde(default = "default_nat_t_port")]
    pub local_port: u16,
    /// The peer's UDP port.
    #[serde(default = "default_nat_t_port")]
    pub remote_port: u16,
    /// Prefixes behind the peer: routed into the tunnel, and the only inner
    /// sources accepted from it.
    pub prefixes: Vec<String>,
    /// Prefixes on our side the peer may reach (default: any).
    #[serde(default)]
    pub local_prefixes: Vec<String>,
    /// Inner MTU; the egress MTU less the encapsulation when absent.
    pub mtu: Option<u16>,
    /// Lower the MSS of TCP SYNs entering the tunnel to fit its MTU.
    #[serde(default = "default_true")]
    pub mss_clamp: bool,
    /// NAT-keepalive interval in seconds (RFC 3948 §2.3); 0 turns them off.
    #[serde(default = "default_keepalive")]
    pub keepalive: u64,
    /// The SA we seal with.
    pub outbound: SaEntryConfig,
    /// The SA the peer seals with.
    pub inbound: SaEntryConfig,
    /// Further inbound SAs accepted at the same time: during a rekey the
    /// new one is installed here before the peer switches to it
    /// (RFC 7296 §2.8: install inbound first, switch outbound, retire the
    /// old inbound). See `Engine::install_inbound_sa`.
    #[serde(default)]
    pub inbound_extra: Vec<SaEntryConfig>,
    /// Where the item's fields are in the file (empty for items added
    /// at run time).
    #[serde(skip)]
    pub spans: FieldSpans,
}

/// A step of a lossless rekey, applied to a configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum RekeyStep {
    /// Accept a new inbound SA alongside the current ones.
    InstallInbound(SaEntryConfig),
    /// Seal with a new outbound SA from now on.
    SwitchOutbound(SaEntryConfig),
    /// Stop accepting the inbound SA with this SPI.
    RetireInbound(u32),
}

impl Config {
    /// The configuration after one rekey step on tunnel `name`; the
    /// result still has to pass validation when applied.
    pub fn with_rekey(&self, name: &str, step: RekeyStep) -> Result<Config, String> {
        let mut next = self.clone();
        let tunnel = next
            .tunnels
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("no tunnel named {name:?}"))?;
        match step {
            RekeyStep::InstallInbound(sa) => {
                let taken = std::iter::once(&tunnel.inbound)
                    .chain(&tunnel.inbound_extra)
                    .any(|s| s.spi == sa.spi);
                if taken {
                    return Err(format!("inbound SPI {} is already installed", sa.spi));
                }
                tunnel.inbound_extra.push(sa);
            }
            RekeyStep::SwitchOutbound(sa) => {
                if sa.spi == tunnel.outbound.spi {
                    return Err(format!("outbound SPI {} is already in use", sa.spi));
                }
                tunnel.outbound = sa;
            }
            RekeyStep::RetireInbound(spi) => {
                if tunnel.inbound.spi == spi {
                    // The newest installed SA becomes the primary one.
                    let newest = tunnel.inbound_extra.pop().ok_or_else(|| {
                        format!("inbound SPI {spi} is the tunnel's only inbound SA")
                    })?;
                    tunnel.inbound = newest;
                } else {
                    let at = tunnel
                        .inbound_extra
                        .iter()
                        .position(|s| s.spi == spi)
                        .ok_or_else(|| format!("no inbound SPI {spi} on tunnel {name}"))?;
                    tunnel.inbound_extra.remove(at);
                }
            }
        }
        Ok(next)
    }
}

/// One direction's Security Association.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SaEntryConfig {
    /// SPI (256 and above).
    pub spi: u32,
    /// `aes128-gcm`, `aes256-gcm` or `chacha20-poly1305`.
    pub cipher: String,
    /// Key followed by the 4-byte salt, in hex (RFC 4106 §8.1).
    pub key: Secret,
    /// 64-bit extended sequence numbers.
    #[serde(default = "default_true")]
    pub esn: bool,
    /// Anti-replay window (inbound), packets; multiple of 64 up to 4096.
    pub replay_window: Option<u32>,
    /// Soft lifetime in seconds: past it the engine reports
    /// [`EngineEvent::SaSoftExpired`](crate::EngineEvent) (0 = none).
    #[serde(default)]
    pub soft_seconds: u64,
    /// Hard lifetime in seconds: past it the SA refuses traffic (0 = none).
    #[serde(default)]
    pub hard_seconds: u64,
    /// Soft lifetime in inner bytes (0 = none).
    #[serde(default)]
    pub soft_bytes: u64,
    /// Hard lifetime in inner bytes (0 = none).
    #[serde(default)]
    pub hard_bytes: u64,
    /// Keys negotiated for this SA alone by a key exchange (never read from
    /// the file): no restart can bring them back, so their sequence
    /// numbers need no record in `state_dir`.
    #[serde(skip)]
    pub negotiated: bool,
}

/// How packets reach the workers.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum XdpModeConfig {
    /// Driver-mode XDP (the default).
    #[default]
    Native,
    /// Generic (SKB) mode, for drivers without native XDP.
    Generic,
}

/// Zero-copy or copy binding of the AF_XDP sockets.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BindConfig {
    /// Zero-copy when the driver offers it, copy otherwise.
    #[default]
    Auto,
    /// Always copy.
    Copy,
    /// Zero-copy or fail.
    ZeroCopy,
}

/// What a worker does when it finds no work.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PollConfig {
    /// Spin without pause: lowest latency, a full core (benchmarks).
    Spin,
    /// Spin while busy and briefly after (about twice the recent gap
    /// between arrivals, 5–50 µs), then wait in `poll(2)` on the sockets
    /// until a frame, the host path or the engine wakes the worker: near
    /// zero CPU when idle, and the CPU left to others on a shared host.
    #[default]
    Adaptive,
}

/// `[engine]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Worker threads; worker `i` serves RX queue `i` of every interface.
    pub workers: usize,
    /// Cores to pin workers to, one per worker (optional).
    pub cores: Vec<usize>,
    /// XDP attach mode.
    pub xdp_mode: XdpModeConfig,
    /// AF_XDP bind mode.
    pub bind: BindConfig,
    /// Idle behaviour.
    pub poll: PollConfig,
    /// 0: workers run under the normal scheduler. 1–99: workers run
    /// SCHED_FIFO at this priority, so nothing of lower priority preempts
    /// them on their cores (pair with `cores` on dedicated CPUs; the
    /// kernel's RT throttling still leaves other work 5 % of a core).
    pub realtime_priority: u8,
    /// UMEM frames per worker (2048 bytes each).
    pub frames: u32,
    /// Entries of each socket's RX ring and of its fill ring: how many
    /// frames can wait for the worker before the kernel drops
    /// (`rx_ring_full`). A power of two, 64 to 16384.
    pub rx_ring: u32,
    /// Entries of each socket's TX and completion rings. A power of two,
    /// 64 to 16384.
    pub tx_ring: u32,
    /// Descriptors per RX/TX batch.
    pub batch: usize,
    /// Hand traffic for our own addresses that the dataplane does not
    /// handle to the host stack through a TAP device.
    pub host_punt: bool,
    /// Frames per second each interface hands the host stack at most (one
    /// `write(2)` each, on worker 0, which also forwards); above it they
    /// are dropped as `host_punt_policed`, so a flood at our address cannot
    /// stall forwarding.
    pub host_punt_rate: u32,
    /// Burst above `host_punt_rate`.
    pub host_punt_burst: u32,
    /// Directory where the sequence positions of SAs with configured keys
    /// are recorded (fsynced before use), so a restart never seals twice
    /// under one key and sequence number, nor accepts a replay again.
    /// Required when a `[[tunnel]]` is configured; one daemon per
    /// directory (it is locked).
    pub state_dir: Option<std::path::PathBuf>,
    /// Allows `[[tunnel]]`s with configured (hand-typed) keys: for labs and
    /// embedding. A product's tunnels are negotiated by `[ike]`, with fresh
    /// keys per SA; a configured key lives as long as the file does.
    pub manual_keying: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 1,
            cores: Vec::new(),
            xdp_mode: XdpModeConfig::Native,
            bind: BindConfig::Auto,
            poll: PollConfig::Adaptive,
            realtime_priority: 0,
            frames: 8192,
            rx_ring: 2048,
            tx_ring: 1024,
            batch: 64,
            host_punt: true,
            host_punt_rate: 20_000,
            host_punt_burst: 2_000,
            state_dir: None,
            manual_keying: false,
        }
    }
}

/// `[[interface]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Kernel interface name.
    pub name: String,
    /// Addresses the dataplane owns on it, as `addr/len`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// MTU of the IP layer; the kernel's when absent.
    pub mtu: Option<u16>,
    /// Ingress filtering (BCP 38): drop packets whose source is not routed
    /// back out of this interface, e.g. on a LAN port, so hosts behind it
    /// cannot send with others' addresses. Off by default.
    #[serde(default)]
    pub source_check: bool,
    /// Where the item's fields are in the file (empty for items added
    /// at run time).
    #[serde(skip)]
    pub spans: FieldSpans,
}

/// `[[route]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Destination prefix, `addr/len`.
    pub prefix: String,
    /// Gateways; several make an ECMP group (at most 4).
    #[serde(default)]
    pub via: Vec<String>,
    /// Egress interface for an on-link route (no gateway).
    pub dev: Option<String>,
    /// `blackhole` drops silently, `unreachable` answers ICMP unreachable.
    pub kind: Option<String>,
    /// Where the item's fields are in the file (empty for items added
    /// at run time).
    #[serde(skip)]
    pub spans: FieldSpans,
}

/// `[[neighbour]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NeighbourConfigEntry {
    /// Interface name.
    pub interface: String,
    /// Neighbour address.
    pub ip: String,
    /// Its MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Where the item's fields are in the file (empty for items added
    /// at run time).
    #[serde(skip)]
    pub spans: FieldSpans,
}

/// `[icmp]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IcmpConfig {
    /// ICMP errors per second per worker (token bucket; RFC 1812 §4.3.2.8).
    pub errors_per_second: u32,
    /// Burst size of the bucket.
    pub burst: u32,
}

impl Default for IcmpConfig {
    fn default() -> Self {
        IcmpConfig {
            errors_per_second: 100,
            burst: 20,
        }
    }
}

/// Where a value is in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// Byte range in the file.
    pub bytes: std::ops::Range<usize>,
}

impl Span {
    /// The span of `bytes` in `text`.
    fn in_text(text: &str, bytes: std::ops::Range<usize>) -> Span {
        let before = text.get(..bytes.start).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Span {
            line: 1 + before.bytes().filter(|b| *b == b'\n').count() as u32,
            column: 1 + before[line_start..].chars().count() as u32,
            bytes,
        }
    }
}

/// A configuration that could not be read, parsed or accepted. Displayed
/// as `strait.toml line 14: route 10.9.0.0/33: prefix length 33 exceeds
/// 32`: the file, the line when the item came from one, the item, the
/// reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// Syntax or type error, e.g. a string where a number belongs or a
    /// field that does not exist.
    #[error("{path}{}: {message}", at_line_column(.span))]
    Parse {
        /// The file.
        path: String,
        /// Where the parser stopped, when it says.
        span: Option<Span>,
        /// The parser's reason, on one line.
        message: String,
    },
    /// Content that cannot work, found after parsing (or in a change made
    /// at run time).
    #[error("{path}{}: {item}: {reason}", at_line(.span))]
    Invalid {
        /// The file.
        path: String,
        /// The field at fault (or the item's first field) when the item
        /// came from the file; `None` for run-time changes and sections
        /// as a whole.
        span: Option<Span>,
        /// The item, e.g. `route 10.9.0.0/16` or `engine.workers`.
        item: String,
        /// Why it was refused.
        reason: String,
    },
}

impl ConfigError {
    /// The file's line the error is about, if known.
    pub fn line(&self) -> Option<u32> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Parse { span, .. } | ConfigError::Invalid { span, .. } => {
                span.as_ref().map(|s| s.line)
            }
        }
    }
}

fn at_line(span: &Option<Span>) -> String {
    span.as_ref()
        .map(|s| format!(" line {}", s.line))
        .unwrap_or_default()
}

fn at_line_column(span: &Option<Span>) -> String {
    span.as_ref()
        .map(|s| format!(" line {}, column {}", s.line, s.column))
        .unwrap_or_default()
}

/// Where an item's fields are in the configuration file, by field name.
/// Equal to any other: a location is not content, so moving an item in
/// the file does not make it a different item.
#[derive(Debug, Clone, Default)]
pub struct FieldSpans(Vec<(String, Span)>);

impl PartialEq for FieldSpans {
    fn eq(&self, _: &FieldSpans) -> bool {
        true
    }
}

impl Eq for FieldSpans {}

impl FieldSpans {
    /// The span of `field`'s value, or of the item's first field when
    /// `field` is not written in the file (a missing field is the item's
    /// fault).
    pub fn span(&self, field: &str) -> Option<Span> {
        self.0
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, s)| s.clone())
            .or_else(|| self.first())
    }

    /// The span of the item's first field.
    pub fn first(&self) -> Option<Span> {
        self.0
            .iter()
            .map(|(_, s)| s)
            .min_by_key(|s| s.bytes.start)
            .cloned()
    }
}

/// The item sections again, each field kept with its span, to give
/// content errors found after parsing a line number.
#[derive(Deserialize)]
struct SpannedItems {
    #[serde(default)]
    interface: Vec<SpannedFields>,
    #[serde(default)]
    route: Vec<SpannedFields>,
    #[serde(default)]
    neighbour: Vec<SpannedFields>,
    #[serde(default)]
    tunnel: Vec<SpannedFields>,
    #[serde(default)]
    nat: Vec<SpannedFields>,
    proxy: Option<SpannedFields>,
    #[serde(default)]
    load_balancer: Vec<SpannedFields>,
}

type SpannedFields = std::collections::BTreeMap<String, toml::Spanned<toml::Value>>;

impl Config {
    /// Parses TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &str) -> Result<Config, ConfigError> {
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            span: e.span().map(|bytes| Span::in_text(text, bytes)),
            message: e.message().trim().to_owned(),
        };
        let mut config: Config = toml::from_str(text).map_err(parse_error)?;
        let items: SpannedItems = toml::from_str(text).map_err(parse_error)?;
        let spans = |fields: &SpannedFields| {
            FieldSpans(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Span::in_text(text, v.span())))
                    .collect(),
            )
        };
        for (item, fields) in config.interfaces.iter_mut().zip(&items.interface) {
            item.spans = spans(fields);
        }
        for (item, fields) in config.routes.iter_mut().zip(&items.route) {
            item.spans = spans(fields);
        }
        for (item, fields) in config.neighbours.iter_mut().zip(&items.neighbour) {
            item.spans = spans(fields);
        }
        for (item, fields) in config.tunnels.iter_mut().zip(&items.tunnel) {
            item.spans = spans(fields);
        }
        for (item, fields) in config.nat.iter_mut().zip(&items.nat) {
            item.spans = spans(fields);
        }
        if let (Some(item), Some(fields)) = (config.proxy.as_mut(), &items.proxy) {
            item.spans = spans(fields);
        }
        for (item, fields) in config.load_balancers.iter_mut().zip(&items.load_balancer) {
            item.spans = spans(fields);
        }
        if let Some((item, reason, bytes)) = config.dns.as_ref().and_then(DnsConfig::first_error) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                span: Some(Span::in_text(text, bytes)),
                item,
                reason,
            });
        }
        Ok(config)
    }

    /// Parses one item given on its own: the fields of a `[[route]]`
    /// ([`RouteConfig`]), `[[nat]]` ([`NatRuleConfig`]) or SA table
    /// ([`SaEntryConfig`]) as TOML text, for items an embedder adds at run
    /// time (the C ABI takes them so). `what` stands for the file in
    /// messages: `route line 2, column 1: unknown field ...`. Validation
    /// happens when the item is applied, as for the file's.
    pub fn parse_item<T: serde::de::DeserializeOwned>(
        text: &str,
        what: &str,
    ) -> Result<T, ConfigError> {
        toml::from_str(text).map_err(|e: toml::de::Error| ConfigError::Parse {
            path: what.to_owned(),
            span: e.span().map(|bytes| Span::in_text(text, bytes)),
            message: e.message().trim().to_owned(),
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }
}

/// Builds the configuration errors of one file: the item, the reason, and
/// the span of the field at fault when there is one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Invalid<'a>(pub(crate) &'a str);

impl Invalid<'_> {
    pub(crate) fn at(&self, span: Option<Span>, item: String, reason: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.0.to_owned(),
            span,
            item,
            reason,
        }
    }

    pub(crate) fn item(&self, item: String, reason: String) -> ConfigError {
        self.at(None, item, reason)
    }
}

impl Config {
    /// Checks the sections read as a whole (`[engine]`, `[metrics]`); on
    /// error, the key at fault and the reason.
    pub(crate) fn check_sections(&self) -> Result<(), (String, String)> {
        let config = self;
        if config.engine.workers == 0 || config.engine.workers > 64 {
            return Err(("engine.workers".into(), "must be between 1 and 64".into()));
        }
        if !config.engine.cores.is_empty() && config.engine.cores.len() != config.engine.workers {
            return Err((
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
            return Err((
                "engine.realtime_priority".into(),
                format!(
                    "{} is above 99 (0: normal scheduling, 1-99: SCHED_FIFO priority)",
                    e.realtime_priority
                ),
            ));
        }
        for (key, n) in [("engine.rx_ring", e.rx_ring), ("engine.tx_ring", e.tx_ring)] {
            if !n.is_power_of_two() || !(64..=16384).contains(&n) {
                return Err((
                    key.into(),
                    format!("{n} must be a power of two from 64 to 16384"),
                ));
            }
        }
        if !(1..=256).contains(&config.engine.batch) {
            return Err(("engine.batch".into(), "must be between 1 and 256".into()));
        }
        config
            .metrics
            .listen_addr()
            .map_err(|reason| ("[metrics]".to_owned(), reason))?;
        Ok(())
    }
}

/// `[[load_balancer]]`: a virtual address and port (TCP or UDP) whose
/// new flows are spread over `backends` by Maglev hashing
/// (`strait_nat::maglev`). Compiled into a DNAT rule (`tables/lb.rs`);
/// backends route their replies through Strait.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerConfig {
    /// Name, unique among the services; `straitctl lb drain` uses it.
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The virtual `addr:port` clients connect to.
    pub address: String,
    /// The servers behind it.
    pub backends: Vec<LbBackendConfig>,
    /// Maglev lookup table size, a prime (default 65537).
    pub table_size: Option<u32>,
    /// What new flows get when every backend is down.
    #[serde(default)]
    pub when_all_down: AllDownConfig,
    /// Full NAT: packets to a backend leave from the address of the
    /// interface (or tunnel) towards it, so backends need no route back
    /// through Strait (default false: plain DNAT, the backend sees the
    /// client's address).
    #[serde(default)]
    pub full_nat: bool,
    /// Health check; without one every backend counts as up.
    pub check: Option<HealthCheckConfig>,
    /// Where the item's fields are in the file.
    #[serde(skip)]
    pub spans: FieldSpans,
}

/// One backend of a `[[load_balancer]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LbBackendConfig {
    /// `addr:port`.
    pub address: String,
    /// Relative share of new flows, 1-65535 (default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Health as the checker last reported it (run-time state, never
    /// read from the file; true until a check says otherwise).
    #[serde(skip, default = "default_true")]
    pub up: bool,
    /// Drained by the operator: no new flows (run-time state).
    #[serde(skip)]
    pub drained: bool,
}

fn default_weight() -> u32 {
    1
}

/// `when_all_down`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AllDownConfig {
    /// New flows are refused with ICMP port unreachable and counted
    /// (`lb_no_backend`).
    #[default]
    Reject,
    /// The last table that had a backend stays in force.
    KeepLast,
}

/// What a health check does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKindConfig {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.1 GET with an expected status and optional body text.
    Http,
    /// A DNS query over UDP answered with NOERROR.
    Dns,
}

/// `[load_balancer.check]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// tcp, http or dns.
    pub kind: CheckKindConfig,
    /// Port to check (default: the backend's).
    pub port: Option<u16>,
    /// http: the path (default `/`).
    #[serde(default = "default_check_path")]
    pub path: String,
    /// http: the expected status (default 200).
    #[serde(default = "default_check_status")]
    pub expect_status: u16,
    /// http: text the body must contain.
    pub expect_body: Option<String>,
    /// dns: the name asked for (type A; default `.`, the root).
    pub dns_name: Option<String>,
    /// Milliseconds between checks (default 1000).
    #[serde(default = "default_check_interval")]
    pub interval_ms: u64,
    /// Milliseconds a check may take, connect to last byte (default 500).
    #[serde(default = "default_check_timeout")]
    pub timeout_ms: u64,
    /// Consecutive successes that bring a down backend up (default 2).
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up backend down (default 3).
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Address the checks leave from; default: the one the kernel picks
    /// towards the backend, the address data traffic uses.
    pub source: Option<String>,
}

fn default_check_path() -> String {
    "/".into()
}
fn default_check_status() -> u16 {
    200
}
fn default_check_interval() -> u64 {
    1000
}
fn default_check_timeout() -> u64 {
    500
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let c = Config::parse(
            r#"
[engine]
workers = 1
cores = [1]
xdp_mode = "generic"
poll = "spin"

[[interface]]
name = "lan"
addresses = ["10.0.1.1/24"]

[[interface]]
name = "wan"
addresses = ["192.0.2.1/24", "2001:db8::1/64"]
mtu = 1400

[[route]]
prefix = "0.0.0.0/0"
via = ["192.0.2.254"]

[[neighbour]]
interface = "wan"
ip = "192.0.2.254"
mac = "02:00:00:00:00:01"
"#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.engine.xdp_mode, XdpModeConfig::Generic);
        assert_eq!(c.engine.poll, PollConfig::Spin);
        assert_eq!(c.interfaces.len(), 2);
        assert_eq!(c.interfaces[1].mtu, Some(1400));
        assert_eq!(c.routes[0].via, ["192.0.2.254"]);
        assert_eq!(c.icmp, IcmpConfig::default());
    }

    #[test]
    fn proxy_section_is_checked_with_lines() {
        let text = |extra: &str| {
            format!(
                "[proxy]\nlisten = [\"192.0.2.1:443\", \"192.0.2.1:80\"]\nallow = [\"*.example.com\"]\nresolver = \"192.0.2.53\"\n{extra}"
            )
        };
        let c = Config::parse(&text("deny = [\"admin.example.com\"]\n"), "p.toml").unwrap();
        let plan = c.proxy.as_ref().unwrap().checked("p.toml").unwrap();
        assert_eq!(plan.resolver, "192.0.2.53:53".parse().unwrap());
        assert_eq!(plan.listen.len(), 2);
        let allowed = |n: &str| plan.names.get(&n.parse().unwrap()).map(|m| *m.value);
        assert_eq!(allowed("a.example.com"), Some(true));
        assert_eq!(allowed("admin.example.com"), Some(false));
        assert_eq!(allowed("example.com"), None);
        for (extra, line, says) in [
            ("egress = \"2001:db8::1\"\n", 5, "different families"),
            ("deny = [\"a..b\"]\n", 5, "empty label"),
            ("idle_timeout = 0\n", 5, "between 1 and 86400"),
            ("max_connections = 0\n", 5, "between 1 and 65536"),
        ] {
            let c = Config::parse(&text(extra), "p.toml").unwrap();
            let err = c.proxy.as_ref().unwrap().checked("p.toml").unwrap_err();
            assert_eq!(err.line(), Some(line), "{err}");
            assert!(err.to_string().contains(says), "{err}");
        }
        let c = Config::parse(
            "[proxy]\nlisten = [\"192.0.2.1\"]\nallow = [\"a\"]\nresolver = \"192.0.2.53\"\n",
            "p.toml",
        )
        .unwrap();
        let err = c.proxy.unwrap().checked("p.toml").unwrap_err().to_string();
        assert!(err.starts_with("p.toml line 2: [proxy] listen: "), "{err}");
    }

    #[test]
    fn dns_names_records_and_servers_are_checked_with_their_line() {
        let good = "[dns]\nlisten = [\"10.1.0.1\"]\nupstreams = [\"192.0.2.53:5353\"]\naccelerate = [\"*.Teams.Example.\"]\n\n[[dns.zone]]\nname = \"teams.example\"\nrecords = [\"*.teams.example 300 A 198.51.100.10\"]\n";
        let c = Config::parse(good, "t.toml").unwrap();
        let dns = c.dns.unwrap();
        assert_eq!(dns.listen[0].value(), Ok(&"10.1.0.1:53".parse().unwrap()));
        assert_eq!(dns.upstreams[0].value().unwrap().port(), 5353);
        assert_eq!(dns.accelerate[0].to_string(), "*.teams.example");
        assert_eq!(dns.route_ttl, [60, 86_400]);
        for (bad, line, why) in [
            ("[dns]\nlisten = [\"10.1.0.1\"]\nupstreams = [\"nine\"]\n", 3, "not an address"),
            ("[dns]\nlisten = [\"10.1.0.1\"]\naccelerate = [\"a.*.example\"]\n", 3, "'*' is only allowed"),
            (
                "[dns]\nlisten = [\"10.1.0.1\"]\n[[dns.zone]]\nname = \"z.example\"\nrecords = [\n  \"a.z.example 60 A 1.2.3.4\",\n  \"b.z.example 60 MX mail\",\n]\n",
                7,
                "MX is not one",
            ),
        ] {
            let err = Config::parse(bad, "d.toml").unwrap_err();
            assert_eq!(err.line(), Some(line), "{err}");
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    #[test]
    fn syntax_and_type_errors_name_the_line() {
        let err = Config::parse("[engine]\nworkers = \"two\"\n", "bad.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("bad.toml line 2, column 11: "), "{msg}");
        assert!(msg.contains("invalid type: string \"two\""), "{msg}");
        assert_eq!(err.line(), Some(2));

        let err = Config::parse("[[interface]]\nname = \"a\"\nspeed = 10\n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("speed"), "{err}");
    }
}
