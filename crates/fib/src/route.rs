//! Routes, next hops, ECMP groups and what a lookup decides.

use core::fmt;
use std::net::IpAddr;

use strait_wire::{EgressId, IpCidr};

/// Most next hops one prefix may spread its flows over (equal-cost multipath).
pub const MAX_ECMP: usize = 4;

/// One way out: an egress and, when the destination is not on-link, the
/// gateway whose link-layer address the frame is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// The port or tunnel the frame leaves by.
    pub egress: EgressId,
    /// The router to hand the frame to; `None` when the destination is on-link.
    pub gateway: Option<IpAddr>,
}

impl NextHop {
    /// A next hop through a gateway.
    pub const fn via(egress: EgressId, gateway: IpAddr) -> Self {
        Self {
            egress,
            gateway: Some(gateway),
        }
    }

    /// An on-link next hop: the destination itself is the neighbour.
    pub const fn on_link(egress: EgressId) -> Self {
        Self {
            egress,
            gateway: None,
        }
    }

    /// The neighbour to resolve (ARP / NDP) for a frame to `destination`:
    /// the gateway if there is one, otherwise the destination (connected route).
    pub fn neighbour(&self, destination: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(destination)
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gateway {
            Some(gw) => write!(f, "via {gw} {}", self.egress),
            None => write!(f, "on-link {}", self.egress),
        }
    }
}

/// Why a route was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// An ECMP group needs at least one next hop.
    #[error("route {prefix}: no next hop given")]
    NoNextHop {
        /// The route's prefix.
        prefix: IpCidr,
    },
    /// More next hops than [`MAX_ECMP`].
    #[error("route {prefix}: {count} next hops exceed the ECMP limit of {MAX_ECMP}")]
    TooManyNextHops {
        /// The route's prefix.
        prefix: IpCidr,
        /// How many were given.
        count: usize,
    },
}

/// One to [`MAX_ECMP`] next hops sharing a prefix; flows pick one by hash.
///
/// Unused slots hold a fixed filler so that derived equality and hashing
/// compare only meaningful content (the table deduplicates identical groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EcmpGroup {
    hops: [NextHop; MAX_ECMP],
    count: u8,
}

const FILLER: NextHop = NextHop::on_link(EgressId(0));

impl EcmpGroup {
    /// A group of exactly one next hop.
    pub const fn single(hop: NextHop) -> Self {
        Self {
            hops: [hop, FILLER, FILLER, FILLER],
            count: 1,
        }
    }

    /// A group from 1..=[`MAX_ECMP`] next hops; `None` outside that range.
    /// Order matters: it fixes which flows go where. A hop listed twice gets
    /// twice the share of flows.
    pub fn new(hops: &[NextHop]) -> Option<Self> {
        if hops.is_empty() || hops.len() > MAX_ECMP {
            return None;
        }
        let mut group = Self {
            hops: [FILLER; MAX_ECMP],
            count: hops.len() as u8,
        };
        group.hops[..hops.len()].copy_from_slice(hops);
        Some(group)
    }

    /// The next hops in order.
    pub fn hops(&self) -> &[NextHop] {
        &self.hops[..usize::from(self.count)]
    }

    /// The next hop for a flow. Uses the high bits of the hash scaled to the
    /// group size (multiply-shift) instead of `%`: no division on the hot
    /// path, and every hop gets within one part in 2^32 of an equal share.
    #[inline]
    pub fn select(&self, flow_hash: u32) -> NextHop {
        let i = (u64::from(flow_hash) * u64::from(self.count)) >> 32;
        // `i < count <= MAX_ECMP`; masking keeps the index provably in bounds.
        self.hops[(i as usize) & (MAX_ECMP - 1)]
    }
}

/// What a route does with the traffic it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// The prefix is on-link behind `egress`: the next hop is the destination.
    Connected {
        /// The port the subnet is attached to.
        egress: EgressId,
    },
    /// Reached through one or more gateways (ECMP when more than one).
    Static {
        /// The gateways and their egresses.
        next_hops: EcmpGroup,
    },
    /// Addresses owned by the dataplane itself: deliver locally.
    Local,
    /// Drop silently.
    Blackhole,
    /// Drop and report ICMP destination unreachable.
    Unreachable,
}

/// A route: a prefix and what to do with traffic to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// The destinations this route covers.
    pub prefix: IpCidr,
    /// What happens to them.
    pub kind: RouteKind,
}

impl Route {
    /// An on-link subnet behind `egress`.
    pub fn connected(prefix: impl Into<IpCidr>, egress: EgressId) -> Self {
        Self {
            prefix: prefix.into(),
            kind: RouteKind::Connected { egress },
        }
    }

    /// A route through one gateway.
    pub fn via(prefix: impl Into<IpCidr>, egress: EgressId, gateway: IpAddr) -> Self {
        Self {
            prefix: prefix.into(),
            kind: RouteKind::Static {
                next_hops: EcmpGroup::single(NextHop::via(egress, gateway)),
            },
        }
    }

    /// A route over 1..=[`MAX_ECMP`] next hops.
    pub fn ecmp(prefix: impl Into<IpCidr>, hops: &[NextHop]) -> Result<Self, RouteError> {
        let prefix = prefix.into();
        let next_hops = EcmpGroup::new(hops).ok_or(if hops.is_empty() {
            RouteError::NoNextHop { prefix }
        } else {
            RouteError::TooManyNextHops {
                prefix,
                count: hops.len(),
            }
        })?;
        Ok(Self {
            prefix,
            kind: RouteKind::Static { next_hops },
        })
    }

    /// Addresses the dataplane owns.
    pub fn local(prefix: impl Into<IpCidr>) -> Self {
        Self {
            prefix: prefix.into(),
            kind: RouteKind::Local,
        }
    }

    /// Silently dropped destinations.
    pub fn blackhole(prefix: impl Into<IpCidr>) -> Self {
        Self {
            prefix: prefix.into(),
            kind: RouteKind::Blackhole,
        }
    }

    /// Destinations answered with ICMP unreachable.
    pub fn unreachable(prefix: impl Into<IpCidr>) -> Self {
        Self {
            prefix: prefix.into(),
            kind: RouteKind::Unreachable,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.prefix)?;
        match self.kind {
            RouteKind::Connected { egress } => write!(f, " connected {egress}"),
            RouteKind::Static { next_hops } => {
                for hop in next_hops.hops() {
                    write!(f, " {hop}")?;
                }
                Ok(())
            }
            RouteKind::Local => f.write_str(" local"),
            RouteKind::Blackhole => f.write_str(" blackhole"),
            RouteKind::Unreachable => f.write_str(" unreachable"),
        }
    }
}

/// What a lookup decides for one packet. Small and `Copy`: no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Send it out of this next hop.
    Forward(NextHop),
    /// It is addressed to the dataplane: deliver locally.
    Local,
    /// Drop it without telling anyone.
    Blackhole,
    /// Drop it and answer ICMP destination unreachable.
    Unreachable,
}

/// A route's behaviour as stored in a snapshot; identical ones are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    /// Slot 0 of every snapshot: no route covers the address.
    NoRoute,
    Forward(EcmpGroup),
    Local,
    Blackhole,
    Unreachable,
}

impl Action {
    pub(crate) fn of(kind: &RouteKind) -> Self {
        match *kind {
            RouteKind::Connected { egress } => {
                Self::Forward(EcmpGroup::single(NextHop::on_link(egress)))
            }
            RouteKind::Static { next_hops } => Self::Forward(next_hops),
            RouteKind::Local => Self::Local,
            RouteKind::Blackhole => Self::Blackhole,
            RouteKind::Unreachable => Self::Unreachable,
        }
    }

    #[inline]
    pub(crate) fn resolve(&self, flow_hash: u32) -> Option<Disposition> {
        match self {
            Self::NoRoute => None,
            Self::Forward(group) => Some(Disposition::Forward(group.select(flow_hash))),
            Self::Local => Some(Disposition::Local),
            Self::Blackhole => Some(Disposition::Blackhole),
            Self::Unreachable => Some(Disposition::Unreachable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn gw(i: u8) -> NextHop {
        NextHop::via(
            EgressId(u16::from(i)),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)),
        )
    }

    #[test]
    fn ecmp_group_limits() {
        let p: IpCidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            Route::ecmp(p, &[]).unwrap_err(),
            RouteError::NoNextHop { prefix: p }
        );
        let e = Route::ecmp(p, &[gw(1), gw(2), gw(3), gw(4), gw(5)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "route 10.0.0.0/8: 5 next hops exceed the ECMP limit of 4"
        );
        let r = Route::ecmp(p, &[gw(1), gw(2)]).unwrap();
        assert_eq!(
            r.to_string(),
            "10.0.0.0/8 via 192.0.2.1 egress 1 via 192.0.2.2 egress 2"
        );
    }

    #[test]
    fn select_covers_every_hop_and_stays_in_bounds() {
        for n in 1..=MAX_ECMP as u8 {
            let hops: Vec<_> = (0..n).map(gw).collect();
            let g = EcmpGroup::new(&hops).unwrap();
            assert_eq!(g.select(0), hops[0]);
            assert_eq!(g.select(u32::MAX), hops[usize::from(n) - 1]);
            let step = u32::MAX / u32::from(n);
            for i in 0..u32::from(n) {
                assert_eq!(g.select(i * step + step / 2), hops[i as usize]);
            }
        }
    }

    #[test]
    fn neighbour_is_gateway_or_destination() {
        let dst = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(NextHop::on_link(EgressId(1)).neighbour(dst), dst);
        assert_eq!(
            gw(7).neighbour(dst),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
        );
    }
}
