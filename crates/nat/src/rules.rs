//! The NAT rule snapshot.
//!
//! The control thread builds a complete [`NatRules`] value, validates it once
//! with [`NatRules::new`] and publishes it (for example as an `Arc` swapped
//! read-copy-update style); workers only read it. Lookups here are linear
//! scans in rule order: a vCPE carries tens of rules, not thousands, and the
//! scan only runs when a flow has no session yet.

use core::fmt;
use std::net::Ipv4Addr;

use strait_wire::{EgressId, Ipv4Cidr};

use crate::flow::{Endpoint, Protocol};

/// Identifier of a rule, stable across snapshots so sessions created under
/// one snapshot can still be attributed after the next is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u16);

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}", self.0)
    }
}

/// Where an outbound packet leaves: the interface (or path) identifier and
/// that interface's current IPv4 address, used by masquerade rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Egress {
    /// Interface or path identifier.
    pub id: EgressId,
    /// The interface's address (the masquerade source address).
    pub addr: Ipv4Addr,
}

impl Egress {
    /// Builds an egress description.
    pub const fn new(id: EgressId, addr: Ipv4Addr) -> Self {
        Self { id, addr }
    }
}

/// Errors found while validating a rule snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A port range that is empty or includes port 0.
    #[error("{rule}: port range {first}-{last} is empty or includes port 0")]
    PortRange {
        /// The rule carrying the range.
        rule: RuleId,
        /// First port.
        first: u16,
        /// Last port.
        last: u16,
    },
    /// An SNAT pool without addresses.
    #[error("{rule}: SNAT pool has no addresses")]
    EmptyPool {
        /// The rule.
        rule: RuleId,
    },
    /// A DNAT rule without backends.
    #[error("{rule}: DNAT rule has no backends")]
    NoBackends {
        /// The rule.
        rule: RuleId,
    },
    /// A port 0 in a DNAT public endpoint or backend.
    #[error("{rule}: DNAT endpoint {endpoint} uses port 0")]
    DnatPortZero {
        /// The rule.
        rule: RuleId,
        /// The endpoint with port 0.
        endpoint: Endpoint,
    },
    /// DNAT only forwards TCP and UDP ports.
    #[error("{rule}: DNAT supports tcp and udp, not {protocol}")]
    DnatProtocol {
        /// The rule.
        rule: RuleId,
        /// The unsupported protocol.
        protocol: Protocol,
    },
    /// Two rules share one identifier.
    #[error("{rule} is defined twice")]
    DuplicateRuleId {
        /// The duplicated identifier.
        rule: RuleId,
    },
    /// Two DNAT rules publish the same public endpoint.
    #[error("{rule}: public endpoint {protocol} {public} already published by {other}")]
    DuplicatePublicEndpoint {
        /// The later rule.
        rule: RuleId,
        /// The earlier rule.
        other: RuleId,
        /// Protocol.
        protocol: Protocol,
        /// Public endpoint.
        public: Endpoint,
    },
    /// A static 1:1 rule reuses an internal or external address.
    #[error("{rule}: static address {addr} already used by {other}")]
    DuplicateStaticAddress {
        /// The later rule.
        rule: RuleId,
        /// The earlier rule.
        other: RuleId,
        /// The shared address.
        addr: Ipv4Addr,
    },
    /// A static 1:1 external address is also in an SNAT pool, so inbound
    /// traffic to it would be ambiguous.
    #[error("{rule}: static external address {addr} is also in the pool of {pool_rule}")]
    StaticInPool {
        /// The static rule.
        rule: RuleId,
        /// The SNAT rule whose pool holds the address.
        pool_rule: RuleId,
        /// The shared address.
        addr: Ipv4Addr,
    },
}

/// An inclusive range of external ports (or ICMP identifiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port, at least 1.
    pub first: u16,
    /// Last port, at least `first`.
    pub last: u16,
}

impl PortRange {
    /// Builds a range; validation happens in [`NatRules::new`].
    pub const fn new(first: u16, last: u16) -> Self {
        Self { first, last }
    }

    /// Whether `port` is inside the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    fn validate(&self, rule: RuleId) -> Result<(), RuleError> {
        if self.first == 0 || self.first > self.last {
            return Err(RuleError::PortRange {
                rule,
                first: self.first,
                last: self.last,
            });
        }
        Ok(())
    }
}

/// What an SNAT rule translates the source to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnatTarget {
    /// A pool of egress addresses. RFC 4787 REQ-2 recommends "paired"
    /// pooling: an internal address always uses the same pool address, so
    /// the pool address is chosen by a keyed hash of the internal address.
    Pool {
        /// Egress addresses.
        addresses: Vec<Ipv4Addr>,
        /// External ports to allocate from.
        ports: PortRange,
    },
    /// The egress interface's own address, passed in with each packet.
    Masquerade {
        /// External ports to allocate from.
        ports: PortRange,
    },
}

impl SnatTarget {
    /// The port range to allocate from.
    pub fn ports(&self) -> PortRange {
        match self {
            Self::Pool { ports, .. } | Self::Masquerade { ports } => *ports,
        }
    }
}

/// Source NAT: outbound flows whose source is in `source` (and whose
/// destination and egress match, when given) leave with a translated source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatRule {
    /// Rule identifier.
    pub id: RuleId,
    /// Internal source prefix (host bits are refused when it is built, so
    /// a rule never translates more sources than were written).
    pub source: Ipv4Cidr,
    /// Optional destination prefix.
    pub destination: Option<Ipv4Cidr>,
    /// Optional egress restriction.
    pub egress: Option<EgressId>,
    /// Translation target.
    pub target: SnatTarget,
}

impl SnatRule {
    fn matches(&self, source: Ipv4Addr, destination: Ipv4Addr, egress: EgressId) -> bool {
        self.source.contains_addr(source)
            && self
                .destination
                .is_none_or(|p| p.contains_addr(destination))
            && self.egress.is_none_or(|e| e == egress)
    }
}

/// How a DNAT rule with several backends picks one for a new flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSelection {
    /// Keyed hash of the client endpoint: one client sticks to a backend.
    ClientHash,
    /// Round robin, per worker.
    RoundRobin,
    /// Maglev consistent hashing of the client endpoint over the backends
    /// the table holds (a load balancer's healthy, undrained ones; the
    /// table stores indices into `backends`). An empty table refuses new
    /// flows (`no_backend`).
    Maglev(std::sync::Arc<crate::maglev::MaglevTable>),
}

/// Destination NAT / port forward: `protocol` traffic to `public` is sent to
/// one of `backends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnatRule {
    /// Rule identifier.
    pub id: RuleId,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Published address and port.
    pub public: Endpoint,
    /// Private servers.
    pub backends: Vec<Endpoint>,
    /// Backend choice for new flows.
    pub selection: BackendSelection,
    /// Full NAT: packets towards a backend also leave from the egress
    /// address towards it (masquerade, ports [`FULL_NAT_PORTS`]), so
    /// backends without a route back through the translator still answer
    /// through it.
    pub full_nat: bool,
}

/// The ports full NAT allocates on the egress address towards a backend.
pub const FULL_NAT_PORTS: PortRange = PortRange::new(1024, 65535);

/// Static 1:1 NAT: `internal` is always seen outside as `external` and
/// `external` is reachable from outside on every port (ports are kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StaticNatRule {
    /// Rule identifier.
    pub id: RuleId,
    /// Private address.
    pub internal: Ipv4Addr,
    /// Public address.
    pub external: Ipv4Addr,
}

/// A validated, immutable rule snapshot.
#[derive(Debug, Clone, Default)]
pub struct NatRules {
    snat: Vec<SnatRule>,
    dnat: Vec<DnatRule>,
    static_nat: Vec<StaticNatRule>,
    /// DNAT public endpoints, sorted, so dynamic port allocation never hands
    /// out a published port: `(address, protocol, port)`.
    reserved: Vec<(u32, u8, u16)>,
    /// Identifiers of the full-NAT DNAT rules, sorted.
    full_nat: Vec<RuleId>,
}

impl NatRules {
    /// Validates and builds a snapshot. Rules are matched in the order given.
    pub fn new(
        snat: Vec<SnatRule>,
        dnat: Vec<DnatRule>,
        static_nat: Vec<StaticNatRule>,
    ) -> Result<Self, RuleError> {
        let mut ids: Vec<RuleId> = snat
            .iter()
            .map(|r| r.id)
            .chain(dnat.iter().map(|r| r.id))
            .chain(static_nat.iter().map(|r| r.id))
            .collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(RuleError::DuplicateRuleId { rule: w[0] });
        }
        for rule in &snat {
            rule.target.ports().validate(rule.id)?;
            if let SnatTarget::Pool { addresses, .. } = &rule.target {
                if addresses.is_empty() {
                    return Err(RuleError::EmptyPool { rule: rule.id });
                }
            }
        }
        for (i, rule) in dnat.iter().enumerate() {
            if matches!(rule.selection, BackendSelection::Maglev(_))
                && rule.backends.len() >= usize::from(u16::MAX)
            {
                return Err(RuleError::NoBackends { rule: rule.id });
            }
            if rule.protocol == Protocol::Icmp {
                return Err(RuleError::DnatProtocol {
                    rule: rule.id,
                    protocol: rule.protocol,
                });
            }
            if rule.backends.is_empty() {
                return Err(RuleError::NoBackends { rule: rule.id });
            }
            for endpoint in core::iter::once(&rule.public).chain(&rule.backends) {
                if endpoint.port == 0 {
                    return Err(RuleError::DnatPortZero {
                        rule: rule.id,
                        endpoint: *endpoint,
                    });
                }
            }
            if let Some(other) = dnat[..i]
                .iter()
                .find(|o| o.protocol == rule.protocol && o.public == rule.public)
            {
                return Err(RuleError::DuplicatePublicEndpoint {
                    rule: rule.id,
                    other: other.id,
                    protocol: rule.protocol,
                    public: rule.public,
                });
            }
        }
        for (i, rule) in static_nat.iter().enumerate() {
            for other in &static_nat[..i] {
                for addr in [rule.internal, rule.external] {
                    if addr == other.internal || addr == other.external {
                        return Err(RuleError::DuplicateStaticAddress {
                            rule: rule.id,
                            other: other.id,
                            addr,
                        });
                    }
                }
            }
            for pool_rule in &snat {
                if let SnatTarget::Pool { addresses, .. } = &pool_rule.target {
                    if addresses.contains(&rule.external) {
                        return Err(RuleError::StaticInPool {
                            rule: rule.id,
                            pool_rule: pool_rule.id,
                            addr: rule.external,
                        });
                    }
                }
            }
        }
        let mut reserved: Vec<(u32, u8, u16)> = dnat
            .iter()
            .map(|r| (u32::from(r.public.addr), r.protocol.number(), r.public.port))
            .collect();
        reserved.sort_unstable();
        let mut full_nat: Vec<RuleId> = dnat.iter().filter(|r| r.full_nat).map(|r| r.id).collect();
        full_nat.sort_unstable();
        Ok(Self {
            snat,
            dnat,
            static_nat,
            reserved,
            full_nat,
        })
    }

    /// SNAT rules in match order.
    pub fn snat(&self) -> &[SnatRule] {
        &self.snat
    }

    /// DNAT rules.
    pub fn dnat(&self) -> &[DnatRule] {
        &self.dnat
    }

    /// Static 1:1 rules.
    pub fn static_nat(&self) -> &[StaticNatRule] {
        &self.static_nat
    }

    /// First SNAT rule matching an outbound flow.
    pub fn match_snat(
        &self,
        source: Ipv4Addr,
        destination: Ipv4Addr,
        egress: EgressId,
    ) -> Option<&SnatRule> {
        self.snat
            .iter()
            .find(|r| r.matches(source, destination, egress))
    }

    /// The static rule whose internal address is `addr`.
    pub fn match_static_internal(&self, addr: Ipv4Addr) -> Option<&StaticNatRule> {
        self.static_nat.iter().find(|r| r.internal == addr)
    }

    /// The static rule whose external address is `addr`.
    pub fn match_static_external(&self, addr: Ipv4Addr) -> Option<&StaticNatRule> {
        self.static_nat.iter().find(|r| r.external == addr)
    }

    /// The DNAT rule publishing `public` for `protocol`, with its index.
    pub fn match_dnat(&self, protocol: Protocol, public: Endpoint) -> Option<(usize, &DnatRule)> {
        self.dnat
            .iter()
            .enumerate()
            .find(|(_, r)| r.protocol == protocol && r.public == public)
    }

    /// The DNAT rule one of whose backends is `backend`.
    pub fn dnat_for_backend(&self, protocol: Protocol, backend: Endpoint) -> Option<&DnatRule> {
        self.dnat
            .iter()
            .find(|r| r.protocol == protocol && r.backends.contains(&backend))
    }

    /// Whether `rule` is a full-NAT DNAT rule (its mappings belong to the
    /// backends' view of clients and admit no unsolicited traffic).
    pub fn is_full_nat(&self, rule: RuleId) -> bool {
        self.full_nat.binary_search(&rule).is_ok()
    }

    /// Whether `addr` belongs to an SNAT pool (traffic to it without a
    /// mapping is dropped rather than passed on).
    pub fn is_pool_address(&self, addr: Ipv4Addr) -> bool {
        self.snat.iter().any(|r| match &r.target {
            SnatTarget::Pool { addresses, .. } => addresses.contains(&addr),
            SnatTarget::Masquerade { .. } => false,
        })
    }

    /// Whether a DNAT rule publishes this external endpoint.
    pub fn is_reserved(&self, addr: Ipv4Addr, protocol: Protocol, port: u16) -> bool {
        self.reserved
            .binary_search(&(u32::from(addr), protocol.number(), port))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(a: [u8; 4], port: u16) -> Endpoint {
        Endpoint::new(Ipv4Addr::from(a), port)
    }

    #[test]
    fn rejects_invalid_snapshots() {
        let snat = |id, ports| SnatRule {
            id: RuleId(id),
            source: Ipv4Cidr::ANY,
            destination: None,
            egress: None,
            target: SnatTarget::Masquerade { ports },
        };
        assert!(matches!(
            NatRules::new(vec![snat(1, PortRange::new(0, 10))], vec![], vec![]),
            Err(RuleError::PortRange { .. })
        ));
        assert!(matches!(
            NatRules::new(vec![snat(1, PortRange::new(20, 10))], vec![], vec![]),
            Err(RuleError::PortRange { .. })
        ));
        assert!(matches!(
            NatRules::new(
                vec![
                    snat(1, PortRange::new(1, 10)),
                    snat(1, PortRange::new(1, 10))
                ],
                vec![],
                vec![]
            ),
            Err(RuleError::DuplicateRuleId { rule: RuleId(1) })
        ));
        let dnat = |id, public| DnatRule {
            full_nat: false,
            id: RuleId(id),
            protocol: Protocol::Tcp,
            public,
            backends: vec![ep([10, 0, 0, 5], 80)],
            selection: BackendSelection::ClientHash,
        };
        assert!(matches!(
            NatRules::new(
                vec![],
                vec![dnat(1, ep([1, 1, 1, 1], 80)), dnat(2, ep([1, 1, 1, 1], 80))],
                vec![]
            ),
            Err(RuleError::DuplicatePublicEndpoint { .. })
        ));
        let mut empty = dnat(3, ep([1, 1, 1, 1], 80));
        empty.backends.clear();
        assert!(matches!(
            NatRules::new(vec![], vec![empty], vec![]),
            Err(RuleError::NoBackends { .. })
        ));
        let pool = SnatRule {
            id: RuleId(4),
            source: Ipv4Cidr::ANY,
            destination: None,
            egress: None,
            target: SnatTarget::Pool {
                addresses: vec![Ipv4Addr::new(198, 51, 100, 1)],
                ports: PortRange::new(1024, 65535),
            },
        };
        let one_to_one = StaticNatRule {
            id: RuleId(5),
            internal: Ipv4Addr::new(10, 0, 0, 9),
            external: Ipv4Addr::new(198, 51, 100, 1),
        };
        assert!(matches!(
            NatRules::new(vec![pool], vec![], vec![one_to_one]),
            Err(RuleError::StaticInPool { .. })
        ));
    }

    #[test]
    fn snat_matches_in_order_with_destination_and_egress() {
        let rules = NatRules::new(
            vec![
                SnatRule {
                    id: RuleId(1),
                    source: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap(),
                    destination: Some(Ipv4Cidr::new(Ipv4Addr::new(192, 0, 2, 0), 24).unwrap()),
                    egress: Some(EgressId(2)),
                    target: SnatTarget::Masquerade {
                        ports: PortRange::new(1024, 2047),
                    },
                },
                SnatRule {
                    id: RuleId(2),
                    source: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap(),
                    destination: None,
                    egress: None,
                    target: SnatTarget::Masquerade {
                        ports: PortRange::new(2048, 4095),
                    },
                },
            ],
            vec![],
            vec![],
        )
        .unwrap();
        let src = Ipv4Addr::new(10, 1, 1, 1);
        let hit = |dst, egress| rules.match_snat(src, dst, EgressId(egress)).map(|r| r.id);
        assert_eq!(hit(Ipv4Addr::new(192, 0, 2, 7), 2), Some(RuleId(1)));
        assert_eq!(hit(Ipv4Addr::new(192, 0, 2, 7), 3), Some(RuleId(2)));
        assert_eq!(hit(Ipv4Addr::new(203, 0, 113, 7), 2), Some(RuleId(2)));
        assert_eq!(
            rules.match_snat(
                Ipv4Addr::new(172, 16, 0, 1),
                Ipv4Addr::new(192, 0, 2, 7),
                EgressId(2)
            ),
            None
        );
    }
}
