//! IPv6 checks: header, length, martian sources; NDP is answered here;
//! multicast and our link-local addresses go to the host.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use strait_fib::{FiveTuple, FlowHasher};
use strait_wire::{IpProtocol, Ipv6Packet};

use super::{neighbour, wire_drop, Ctx, IpMeta, Next, Pipeline, Verdict};
use crate::counters::DropReason;
use crate::packet::PacketBuf;
use crate::tables::Tables;

use strait_wire::ipv6::HEADER_LEN;

/// Validates the IPv6 header at `cx.l3` and records what routing needs.
#[inline]
pub(super) fn check<'t, P>(
    p: &mut Pipeline<P>,
    t: &Tables,
    cx: &mut Ctx<'t>,
    pkt: &mut PacketBuf<'_>,
    now: Instant,
) -> Next<'t> {
    let (src, dst, meta) = {
        let ip = match Ipv6Packet::new_checked(&pkt.data()[cx.l3..]) {
            Ok(ip) => ip,
            Err(e) => return drop(wire_drop(e, DropReason::IpMalformed)),
        };
        let meta = IpMeta {
            src: IpAddr::V6(ip.src_addr()),
            dst: IpAddr::V6(ip.dst_addr()),
            ttl: ip.hop_limit(),
            total: HEADER_LEN + usize::from(ip.payload_len()),
            dont_frag: true,
            proto: ip.next_header(),
            hash: flow_hash(&t.flow_hasher, &ip),
        };
        (ip.src_addr(), ip.dst_addr(), meta)
    };
    pkt.set_len(cx.l3 + meta.total);
    if martian(src) {
        return drop(DropReason::MartianSource);
    }
    // Link-local and unspecified sources (neighbour discovery, DAD) are
    // on-link by definition and never routed.
    let on_link = src.is_unicast_link_local() || src.is_unspecified();
    if !on_link && !super::ipv4::source_ok(t, cx, IpAddr::V6(src)) {
        return drop(DropReason::SourceCheckFailed);
    }
    cx.ip = meta;
    // Neighbour discovery is link-local (RFC 4861 §7.1: hop limit 255):
    // never answered or learned from inside a tunnel.
    if meta.proto == IpProtocol::ICMPV6 && cx.decap.is_none() {
        if let Some(next) = neighbour::ndp(p, cx, pkt, now) {
            return next;
        }
    }
    if dst.is_multicast() || dst.is_unicast_link_local() {
        return if cx.port.owns_v6(dst) || dst.is_multicast() {
            cx.punt()
        } else {
            drop(DropReason::NotForUs)
        };
    }
    Next::Route
}

fn drop<'t>(reason: DropReason) -> Next<'t> {
    Next::Done(Verdict::Drop(reason))
}

#[inline]
fn martian(src: Ipv6Addr) -> bool {
    src.is_multicast() || src.is_loopback()
}

/// The ECMP flow hash (see the IPv4 one).
#[inline]
fn flow_hash<T: AsRef<[u8]>>(hasher: &FlowHasher, ip: &Ipv6Packet<T>) -> u32 {
    let ports = if matches!(ip.next_header(), IpProtocol::TCP | IpProtocol::UDP) {
        ip.payload()
            .get(..4)
            .map_or(0, |p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
    } else {
        0
    };
    hasher.hash(&FiveTuple {
        src: IpAddr::V6(ip.src_addr()),
        dst: IpAddr::V6(ip.dst_addr()),
        src_port: (ports >> 16) as u16,
        dst_port: ports as u16,
        protocol: ip.next_header().0,
    })
}
