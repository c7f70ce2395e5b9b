//! IPv4 checks (RFC 1812 §5.2.2): header, checksum, length, martian
//! sources; broadcast and multicast go to the host.

use std::net::{IpAddr, Ipv4Addr};

use strait_fib::{EgressId, FiveTuple, FlowHasher};
use strait_wire::{IpProtocol, Ipv4Packet};

use super::{wire_drop, Ctx, IpMeta, Next, Verdict};
use crate::counters::DropReason;
use crate::packet::PacketBuf;
use crate::tables::Tables;

/// Validates the IPv4 header at `cx.l3` and records what routing needs.
#[inline]
pub(super) fn check<'t>(t: &Tables, cx: &mut Ctx<'t>, pkt: &mut PacketBuf<'_>) -> Next<'t> {
    let meta = {
        let ip = match Ipv4Packet::new_checked(&pkt.data()[cx.l3..]) {
            Ok(ip) => ip,
            Err(e) => return drop(wire_drop(e, DropReason::IpMalformed)),
        };
        if !ip.verify_checksum() {
            return drop(DropReason::BadChecksum);
        }
        meta(t, &ip)
    };
    // Ethernet may pad short packets: the IP total length is the truth.
    pkt.set_len(cx.l3 + meta.total);
    let IpAddr::V4(src) = meta.src else {
        return drop(DropReason::IpMalformed);
    };
    if martian(src) || cx.port.owns_v4(src) {
        return drop(DropReason::MartianSource);
    }
    if !source_ok(t, cx, IpAddr::V4(src)) {
        return drop(DropReason::SourceCheckFailed);
    }
    let IpAddr::V4(dst) = meta.dst else {
        return drop(DropReason::IpMalformed);
    };
    if dst.is_broadcast() || dst.is_multicast() {
        return cx.punt();
    }
    cx.ip = meta;
    Next::NatIn
}

/// What routing needs from an IPv4 header (read again after NAT rewrote
/// it).
#[inline]
pub(super) fn meta<T: AsRef<[u8]>>(t: &Tables, ip: &Ipv4Packet<T>) -> IpMeta {
    IpMeta {
        src: IpAddr::V4(ip.src_addr()),
        dst: IpAddr::V4(ip.dst_addr()),
        ttl: ip.ttl(),
        total: usize::from(ip.total_len()),
        dont_frag: ip.dont_frag(),
        proto: ip.protocol(),
        hash: flow_hash(&t.flow_hasher, ip),
    }
}

/// BCP 38 ingress filtering on ports that ask for it: the source must be
/// routed back out of the arrival port (RFC 3704 §2.2). Decapsulated
/// packets answer to their SA's selectors instead. One FIB lookup, only on
/// such ports.
#[inline]
pub(super) fn source_ok(t: &Tables, cx: &Ctx<'_>, src: IpAddr) -> bool {
    !cx.port.source_check || cx.decap.is_some() || t.fib.reaches(src, EgressId(cx.port.id))
}

fn drop<'t>(reason: DropReason) -> Next<'t> {
    Next::Done(Verdict::Drop(reason))
}

/// RFC 1812 §5.3.7 and §4.2.2.11: addresses that can never be the source of
/// a forwarded packet.
#[inline]
fn martian(src: Ipv4Addr) -> bool {
    let o = src.octets();
    o[0] == 0 || o[0] == 127 || o[0] >= 224
}

/// Hash over the 5-tuple (addresses and, for unfragmented TCP/UDP, ports)
/// used to pick an ECMP next hop: one flow always takes one path.
#[inline]
fn flow_hash<T: AsRef<[u8]>>(hasher: &FlowHasher, ip: &Ipv4Packet<T>) -> u32 {
    let ports = if !ip.is_fragment() && matches!(ip.protocol(), IpProtocol::TCP | IpProtocol::UDP) {
        ip.payload()
            .get(..4)
            .map_or(0, |p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
    } else {
        0
    };
    hasher.hash(&FiveTuple {
        src: IpAddr::V4(ip.src_addr()),
        dst: IpAddr::V4(ip.dst_addr()),
        src_port: (ports >> 16) as u16,
        dst_port: ports as u16,
        protocol: ip.protocol().0,
    })
}
