//! ICMP errors Strait sends about a packet it drops (RFC 1812 §4.3.2,
//! RFC 4443): which source, the rate limit, the RFC 1812 §4.3.2.7 /
//! RFC 4443 §2.4(e) suppressions, and NAT of the quoted packet.

use std::net::IpAddr;
use std::time::Instant;

use strait_wire::{emit_icmpv4_error, emit_icmpv6_error, EtherType, Icmpv4Error, Icmpv6Error};

use super::reply::reply_from_scratch;
use super::{Ctx, NatDone, Next, Pipeline, Verdict};
use crate::counters::DropReason;
use crate::packet::PacketBuf;

/// An ICMP error of either family.
#[derive(Debug, Clone, Copy)]
pub(super) enum IcmpError {
    V4(Icmpv4Error),
    V6(Icmpv6Error),
}

impl IcmpError {
    /// No route at all: net unreachable / no route to destination.
    pub(super) fn no_route(dst: IpAddr) -> IcmpError {
        match dst {
            IpAddr::V4(_) => IcmpError::V4(Icmpv4Error::DstUnreachable(0)),
            IpAddr::V6(_) => IcmpError::V6(Icmpv6Error::DstUnreachable(0)),
        }
    }

    /// An unreachable route: host unreachable / address unreachable.
    pub(super) fn unreachable(dst: IpAddr) -> IcmpError {
        match dst {
            IpAddr::V4(_) => IcmpError::V4(Icmpv4Error::DstUnreachable(1)),
            IpAddr::V6(_) => IcmpError::V6(Icmpv6Error::DstUnreachable(3)),
        }
    }

    /// Port unreachable (IPv4 only: load-balanced services are IPv4).
    pub(super) fn port_unreachable() -> IcmpError {
        IcmpError::V4(Icmpv4Error::DstUnreachable(3))
    }

    /// TTL or hop limit exceeded in transit.
    pub(super) fn time_exceeded(dst: IpAddr) -> IcmpError {
        match dst {
            IpAddr::V4(_) => IcmpError::V4(Icmpv4Error::TimeExceeded(0)),
            IpAddr::V6(_) => IcmpError::V6(Icmpv6Error::TimeExceeded(0)),
        }
    }

    /// Too big for the egress: fragmentation needed (RFC 1191) / packet
    /// too big (RFC 8201), with the MTU.
    pub(super) fn too_big(dst: IpAddr, mtu: u16) -> IcmpError {
        match dst {
            IpAddr::V4(_) => IcmpError::V4(Icmpv4Error::FragmentationNeeded { next_hop_mtu: mtu }),
            IpAddr::V6(_) => IcmpError::V6(Icmpv6Error::PacketTooBig {
                mtu: u32::from(mtu),
            }),
        }
    }
}

/// Counts the packet's drop under `reason` and turns the frame into the
/// ICMP `error` about the packet at `cx.l3`, addressed back to the sender,
/// unless the rate limit or RFC 1812 §4.3.2.7 say no.
///
/// A packet translated on its way in (DNAT, or a reply un-SNATed) names
/// the inside in its header: the error goes on to the NAT stage
/// (`Next::NatError`, RFC 5508 REQ-5), which restores the quoted packet to
/// what the sender sent and sends the error from the session's public
/// address. Without that the sender could not match the error and would
/// learn the private address. A hairpinned packet has both ends rewritten:
/// its errors are suppressed.
pub(super) fn error<'t, P>(
    p: &mut Pipeline<P>,
    cx: &Ctx<'t>,
    pkt: &mut PacketBuf<'_>,
    error: IcmpError,
    reason: DropReason,
    now: Instant,
) -> Next<'t> {
    let port = cx.port;
    p.count_drop(port.id, reason);
    if cx.nat == NatDone::Hairpin {
        return Next::Done(Verdict::Consumed);
    }
    let has_source = match error {
        IcmpError::V4(_) => port.icmp_source_v4().is_some(),
        IcmpError::V6(_) => port.icmp_source_v6().is_some(),
    };
    if !has_source {
        return Next::Done(Verdict::Consumed);
    }
    if !p.icmp_bucket.take(now) {
        p.count_drop(port.id, DropReason::IcmpRateLimited);
        return Next::Done(Verdict::Consumed);
    }
    let offending = &pkt.data()[cx.l3..];
    let out = &mut p.scratch[..];
    let built = match (error, port.icmp_source_v4(), port.icmp_source_v6()) {
        (IcmpError::V4(e), Some(src), _) => {
            emit_icmpv4_error(offending, e, src, 64, out).map(|n| (n, EtherType::IPV4))
        }
        (IcmpError::V6(e), _, Some(src)) => {
            emit_icmpv6_error(offending, e, src, 64, out).map(|n| (n, EtherType::IPV6))
        }
        _ => return Next::Done(Verdict::Consumed),
    };
    // Suppressed by RFC 1812 §4.3.2.7 / RFC 4443 §2.4(e) (an error about
    // an error, a non-initial fragment, a broadcast) or malformed.
    let Ok((n, ethertype)) = built else {
        return Next::Done(Verdict::Consumed);
    };
    p.counters[usize::from(port.id)].icmp_sent += 1;
    if let Err(reason) = reply_from_scratch(p, port, pkt, n, ethertype) {
        return Next::Done(Verdict::Drop(reason));
    }
    if matches!(cx.nat, NatDone::Inbound | NatDone::FullNat) {
        return Next::NatError;
    }
    cx.reply(pkt)
}
