//! Route and egress, for both families, for packets routed again after a
//! hairpin, and for packets Strait builds: the FIB lookup, the egress the
//! next hop names (a port or a tunnel), the TTL and MTU checks, the TTL
//! decrement and MSS clamp, then forward, fragment or seal.

use std::net::IpAddr;

use strait_fib::{Disposition, NextHop};
use strait_wire::EgressId;
use strait_wire::{IpProtocol, Ipv4Packet, Ipv6Packet, TcpFlags, TcpPacket};

use super::esp_in;
use super::icmp::IcmpError;
use super::{Ctx, FragmentPlan, FragmentTarget, NatDone, Next, Pipeline, Verdict};
use crate::counters::DropReason;
use crate::packet::PacketBuf;
use crate::tables::{Egress, Tables};

/// Where a route sends a packet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Hop<'t> {
    /// The FIB egress id (NAT's view of the egress).
    pub id: EgressId,
    /// The port or tunnel it names.
    pub egress: Egress<'t>,
    /// The next hop to resolve when it leaves by a port.
    pub neighbour: IpAddr,
}

impl<'t> Hop<'t> {
    /// The egress a FIB next hop names; `None` when the tables no longer
    /// hold it.
    #[inline]
    pub(super) fn of(t: &'t Tables, nh: &NextHop, dst: IpAddr) -> Option<Hop<'t>> {
        Some(Hop {
            id: nh.egress,
            egress: t.egress(nh.egress)?,
            neighbour: nh.neighbour(dst),
        })
    }

    /// Where the packet in the window goes once it is ready to leave.
    #[inline]
    fn leave(self) -> Next<'t> {
        match self.egress {
            Egress::Port(p) => Next::Done(Verdict::Forward {
                port: p.id,
                neighbour: self.neighbour,
            }),
            Egress::Tunnel(tun) => Next::Seal(tun),
        }
    }
}

/// Looks the destination up.
#[inline]
pub(super) fn lookup<'t>(t: &'t Tables, cx: &Ctx<'t>) -> Next<'t> {
    let dst = cx.ip.dst;
    match t.fib.lookup(dst, cx.ip.hash) {
        None => Next::IcmpError(IcmpError::no_route(dst), DropReason::NoRoute),
        Some(Disposition::Blackhole) => Next::Done(Verdict::Drop(DropReason::Blackhole)),
        Some(Disposition::Unreachable) => {
            Next::IcmpError(IcmpError::unreachable(dst), DropReason::Unreachable)
        }
        Some(Disposition::Local) => Next::Local,
        Some(Disposition::Forward(nh)) => match Hop::of(t, &nh, dst) {
            Some(hop) => Next::Egress(hop),
            None => Next::Done(Verdict::Drop(DropReason::NoEgress)),
        },
    }
}

/// The checks before a packet may leave: the tunnels' inbound policy
/// (RFC 4301 §5.2), TTL (RFC 1812 §5.3.1), then the
/// MTU (DF set, or IPv6, which routers never fragment: RFC 8200 §5). The
/// outbound NAT stage runs after them, so errors quote what the sender
/// sent.
#[inline]
pub(super) fn egress<'t>(t: &Tables, cx: &Ctx<'t>, hop: Hop<'t>) -> Next<'t> {
    let ip = &cx.ip;
    if esp_in::policy_violation(t, cx, ip.src) {
        return Next::Done(Verdict::Drop(DropReason::EspPolicyViolation));
    }
    if ip.ttl <= 1 {
        return Next::IcmpError(IcmpError::time_exceeded(ip.dst), DropReason::TtlExceeded);
    }
    let mtu = hop.egress.mtu();
    if ip.total > usize::from(mtu) && ip.dont_frag {
        return Next::IcmpError(IcmpError::too_big(ip.dst, mtu), DropReason::Oversized);
    }
    if matches!(cx.nat, NatDone::No | NatDone::FullNat) && ip.dst.is_ipv4() {
        Next::NatOut(hop)
    } else {
        Next::Transmit(hop)
    }
}

/// Decrements the TTL, clamps the MSS of TCP SYNs into a tunnel, and
/// sends the packet on: whole, or in fragments when it is bigger than the
/// egress MTU (DF clear, checked by [`egress`]).
#[inline]
pub(super) fn transmit<'t, P>(
    p: &mut Pipeline<P>,
    cx: &Ctx<'t>,
    pkt: &mut PacketBuf<'_>,
    hop: Hop<'t>,
) -> Next<'t> {
    let l3 = cx.l3;
    let mss = match hop.egress {
        Egress::Tunnel(tun) if cx.ip.proto == IpProtocol::TCP => tun.mss,
        _ => None,
    };
    let packet = &mut pkt.data_mut()[l3..];
    match cx.ip.dst {
        IpAddr::V4(_) => {
            let mut ip = Ipv4Packet::new_unchecked(packet);
            if ip.decrement_ttl().is_err() {
                return Next::Done(Verdict::Drop(DropReason::TtlExceeded));
            }
            if let Some(mss) = mss {
                clamp_mss(ip.payload_mut(), mss);
            }
        }
        IpAddr::V6(_) => {
            let mut ip = Ipv6Packet::new_unchecked(packet);
            ip.set_hop_limit(cx.ip.ttl - 1);
            if let Some(mss) = mss {
                clamp_mss(ip.payload_mut(), mss);
            }
        }
    }
    pkt.pull_front(l3);
    p.counters[usize::from(cx.port.id)].forwarded += 1;
    let mtu = hop.egress.mtu();
    if cx.ip.total <= usize::from(mtu) {
        return hop.leave();
    }
    // DF clear and too big: split it (RFC 791 §3.2, RFC 1812 §4.2.2.7).
    // Into a tunnel this is pre-fragmentation (RFC 4459 §3): each fragment
    // is sealed on its own, so the peer never reassembles; the destination
    // host does.
    let target = match hop.egress {
        Egress::Port(port) => FragmentTarget::Port {
            port: port.id,
            neighbour: hop.neighbour,
        },
        Egress::Tunnel(tun) => FragmentTarget::Tunnel { tunnel: tun.id },
    };
    Next::Done(Verdict::Fragment(FragmentPlan { mtu, target }))
}

/// Routes a packet Strait built itself (L3 at the window): no TTL
/// decrement, no checks, just the egress.
pub(super) fn output<'t>(t: &'t Tables, pkt: &PacketBuf<'_>) -> Next<'t> {
    let dst = match pkt.data().first().map(|b| b >> 4) {
        Some(4) => Ipv4Packet::new_checked(pkt.data()).map(|ip| IpAddr::V4(ip.dst_addr())),
        Some(6) => Ipv6Packet::new_checked(pkt.data()).map(|ip| IpAddr::V6(ip.dst_addr())),
        _ => return Next::Done(Verdict::Drop(DropReason::IpMalformed)),
    };
    let Ok(dst) = dst else {
        return Next::Done(Verdict::Drop(DropReason::IpMalformed));
    };
    match t.fib.lookup(dst, 0) {
        Some(Disposition::Forward(nh)) => match Hop::of(t, &nh, dst) {
            Some(hop) => hop.leave(),
            None => Next::Done(Verdict::Drop(DropReason::NoEgress)),
        },
        _ => Next::Done(Verdict::Drop(DropReason::NoRoute)),
    }
}

/// The port and next hop an outer (tunnel) packet to `dst` leaves by. A
/// tunnel endpoint behind another tunnel, or no route at all: `None`.
#[inline]
pub(super) fn outer(t: &Tables, dst: IpAddr) -> Option<(u16, IpAddr)> {
    match t.fib.lookup(dst, 0) {
        Some(Disposition::Forward(nh)) => match t.egress(nh.egress)? {
            Egress::Port(p) => Some((p.id, nh.neighbour(dst))),
            Egress::Tunnel(_) => None,
        },
        _ => None,
    }
}

/// Lowers the MSS option of a TCP SYN (RFC 879/6691: a tunnel lowers the
/// path MTU; clamping keeps TCP from depending on ICMP frag-needed).
pub(super) fn clamp_mss(segment: &mut [u8], mss: u16) {
    if let Ok(mut tcp) = TcpPacket::new_checked(segment) {
        if tcp.flags().contains(TcpFlags::SYN) {
            tcp.clamp_mss(mss);
        }
    }
}
