//! `[dns]`: the site's split DNS, run by the daemon (the engine only
//! carries the section). Every name, record and address is checked while
//! the file is parsed, so a bad one is refused with its line and column.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[dns]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Our addresses to answer on, UDP and TCP (`addr` or `addr:port`,
    /// port 53 by default); each must be one of the interfaces'.
    pub listen: Vec<DnsServer>,
    /// Resolvers for every name no zone or `[[dns.forward]]` takes, in
    /// order of preference (`addr` or `addr:port`).
    #[serde(default)]
    pub upstreams: Vec<DnsServer>,
    /// Names whose answers' addresses are routed into `tunnel`
    /// (`teams.example`, `*.teams.example`).
    #[serde(default)]
    pub accelerate: Vec<DnsPattern>,
    /// The tunnel accelerated addresses are routed into (a `[[tunnel]]`
    /// or an `[[ike.peer]]` name); needed with `accelerate`.
    pub tunnel: Option<String>,
    /// Shortest and longest life of a route from an answer, seconds: the
    /// answer's TTL clamped to these.
    #[serde(default = "default_route_ttl")]
    pub route_ttl: [u32; 2],
    /// Answers kept in the cache at most.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// Queries waiting for an upstream at most (more get SERVFAIL).
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// How long an upstream has to answer before the next one is asked,
    /// milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// TCP clients served at once at most (RFC 7766).
    #[serde(default = "default_tcp_clients")]
    pub tcp_clients: usize,
    /// Conditional forwarding.
    #[serde(default)]
    pub forward: Vec<DnsForwardConfig>,
    /// Private zones.
    #[serde(default)]
    pub zone: Vec<DnsZoneConfig>,
}

fn default_route_ttl() -> [u32; 2] {
    [60, 86_400]
}
fn default_cache_entries() -> usize {
    10_000
}
fn default_max_pending() -> usize {
    1024
}
fn default_timeout_ms() -> u64 {
    1500
}
fn default_tcp_clients() -> usize {
    256
}

/// `[[dns.forward]]`: names at or below `suffix` go to `upstreams`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsForwardConfig {
    /// The suffix (`corp.example`: it and every name below it).
    pub suffix: DnsName,
    /// Its resolvers, in order of preference.
    pub upstreams: Vec<DnsServer>,
}

/// `[[dns.zone]]`: a private zone answered here.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsZoneConfig {
    /// Its apex.
    pub name: DnsName,
    /// `NAME TTL TYPE VALUE` (A, AAAA, CNAME, TXT), wildcards as `*.NAME`.
    #[serde(default)]
    pub records: Vec<DnsRecord>,
    /// Seconds resolvers keep this zone's NXDOMAIN/NODATA (its SOA's
    /// MINIMUM, RFC 2308).
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: u32,
}

fn default_negative_ttl() -> u32 {
    strait_dns::zone::NEGATIVE_TTL
}

/// A server address: `addr` (port 53) or `addr:port`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct DnsServer(pub SocketAddr);

impl TryFrom<String> for DnsServer {
    type Error = String;
    fn try_from(s: String) -> Result<DnsServer, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(DnsServer(a));
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| DnsServer(SocketAddr::new(ip, 53)))
            .map_err(|_| format!("{s:?} is not an address or addr:port"))
    }
}

/// A domain name.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct DnsName(pub strait_names::Name);

impl TryFrom<String> for DnsName {
    type Error = String;
    fn try_from(s: String) -> Result<DnsName, String> {
        s.parse()
            .map(DnsName)
            .map_err(|e| format!("name {s:?}: {e}"))
    }
}

/// A name or a wildcard (`*.teams.example`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct DnsPattern(pub strait_names::Pattern);

impl TryFrom<String> for DnsPattern {
    type Error = String;
    fn try_from(s: String) -> Result<DnsPattern, String> {
        s.parse()
            .map(DnsPattern)
            .map_err(|e| format!("name {s:?}: {e}"))
    }
}

/// A private zone's record.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct DnsRecord(pub strait_dns::Record);

impl TryFrom<String> for DnsRecord {
    type Error = String;
    fn try_from(s: String) -> Result<DnsRecord, String> {
        s.parse().map(DnsRecord)
    }
}
