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

/// A value read from the file and checked as it was parsed: the value,
/// or why it is not one, with where it stands in the file, so
/// `Config::parse` refuses it with its own line (an element of a list
/// spread over many lines included).
#[derive(Debug, Clone)]
pub struct Checked<T> {
    value: Result<T, String>,
    bytes: std::ops::Range<usize>,
}

impl<T> Checked<T> {
    /// A value given in code (no place in a file).
    pub fn new(value: T) -> Checked<T> {
        Checked {
            value: Ok(value),
            bytes: 0..0,
        }
    }

    /// The value, or why the text was refused (never, for a configuration
    /// `Config::parse` accepted).
    pub fn value(&self) -> Result<&T, String> {
        self.value.as_ref().map_err(Clone::clone)
    }

    pub(super) fn error(&self) -> Option<(&str, std::ops::Range<usize>)> {
        self.value
            .as_ref()
            .err()
            .map(|e| (e.as_str(), self.bytes.clone()))
    }
}

impl<T: PartialEq> PartialEq for Checked<T> {
    fn eq(&self, other: &Checked<T>) -> bool {
        self.value == other.value
    }
}

impl<'de, T: Parsed> Deserialize<'de> for Checked<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Checked<T>, D::Error> {
        let s = toml::Spanned::<String>::deserialize(d)?;
        Ok(Checked {
            value: T::parse(s.get_ref()),
            bytes: s.span(),
        })
    }
}

impl<T: std::fmt::Display> std::fmt::Display for Checked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Ok(v) => v.fmt(f),
            Err(e) => write!(f, "<{e}>"),
        }
    }
}

/// How a checked value is read from its text.
pub trait Parsed: Sized {
    /// The value, or why the text is not one.
    fn parse(s: &str) -> Result<Self, String>;
}

/// A server address: `addr` (port 53) or `addr:port`.
pub type DnsServer = Checked<SocketAddr>;
/// A domain name.
pub type DnsName = Checked<strait_names::Name>;
/// A name or a wildcard (`*.teams.example`).
pub type DnsPattern = Checked<strait_names::Pattern>;
/// A private zone's record.
pub type DnsRecord = Checked<strait_dns::Record>;

impl Parsed for SocketAddr {
    fn parse(s: &str) -> Result<SocketAddr, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(a);
        }
        s.parse::<std::net::IpAddr>()
            .map(|ip| SocketAddr::new(ip, 53))
            .map_err(|_| format!("{s:?} is not an address or addr:port"))
    }
}

impl Parsed for strait_names::Name {
    fn parse(s: &str) -> Result<Self, String> {
        s.parse().map_err(|e| format!("name {s:?}: {e}"))
    }
}

impl Parsed for strait_names::Pattern {
    fn parse(s: &str) -> Result<Self, String> {
        s.parse().map_err(|e| format!("name {s:?}: {e}"))
    }
}

impl Parsed for strait_dns::Record {
    fn parse(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

impl DnsConfig {
    /// The first value refused while parsing: the item, the reason, and
    /// its place in the file.
    pub(super) fn first_error(&self) -> Option<(String, String, std::ops::Range<usize>)> {
        let item = |what: &str, e: Option<(&str, std::ops::Range<usize>)>| {
            e.map(|(reason, bytes)| (what.to_owned(), reason.to_owned(), bytes))
        };
        let servers = |what: &str, v: &[DnsServer]| v.iter().find_map(|s| item(what, s.error()));
        servers("[dns] listen", &self.listen)
            .or_else(|| servers("[dns] upstreams", &self.upstreams))
            .or_else(|| {
                self.accelerate
                    .iter()
                    .find_map(|p| item("[dns] accelerate", p.error()))
            })
            .or_else(|| {
                self.forward.iter().find_map(|f| {
                    item("[[dns.forward]] suffix", f.suffix.error())
                        .or_else(|| servers(&format!("[[dns.forward]] {}", f.suffix), &f.upstreams))
                })
            })
            .or_else(|| {
                self.zone.iter().find_map(|z| {
                    item("[[dns.zone]] name", z.name.error()).or_else(|| {
                        z.records
                            .iter()
                            .find_map(|r| item(&format!("[[dns.zone]] {}", z.name), r.error()))
                    })
                })
            })
    }
}
