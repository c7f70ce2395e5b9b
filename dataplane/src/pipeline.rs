//! The per-packet path of one worker, sans-I/O: a frame goes in, a
//! [`Verdict`] comes out, and the frame may have been rewritten in place.
//!
//! Order of the stages (see `docs/ARCHITECTURE.md`): L2 checks → ARP/NDP →
//! IP validation (RFC 1812 §5.2.2) → route lookup → local delivery or
//! forwarding (TTL, MTU) → the worker resolves the neighbour and writes L2.
//! Every drop is counted under a named [`DropReason`] on the ingress port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use strait_fib::{Disposition, FiveTuple, FlowHasher};
use strait_wire::arp::{ArpOperation, ArpPacket, ArpRepr};
use strait_wire::icmpv4::{self, Icmpv4Packet};
use strait_wire::icmpv6::{self, Icmpv6Packet, NdiscRepr};
use strait_wire::ipv6::Ipv6Packet;
use strait_wire::{
    checksum, EtherType, EthernetAddress, EthernetFrame, Error as WireError, IpProtocol,
    Ipv4Packet,
};

use crate::counters::{DropReason, PortCounters};
use crate::neigh::{NeighbourConfig, NeighbourKey, NeighbourTable, Resolution, TimerAction};
use crate::packet::PacketBuf;
use crate::ratelimit::TokenBucket;
use crate::tables::{Port, Tables};

/// Ethernet header length (untagged; frames are sent untagged).
pub const ETH_LEN: usize = 14;
/// IPv4 header without options.
const IPV4_LEN: usize = 20;
/// IPv6 fixed header.
const IPV6_LEN: usize = 40;
/// ICMP header (type, code, checksum, 4 bytes rest of header).
const ICMP_LEN: usize = 8;
/// ICMPv4 errors quote at most this much so the error fits in 576 bytes
/// (RFC 1812 §4.3.2.3).
const ICMPV4_MAX_QUOTE: usize = 576 - IPV4_LEN - ICMP_LEN;
/// ICMPv6 errors must not exceed the minimum IPv6 MTU (RFC 4443 §2.4 (c)).
const ICMPV6_MAX_QUOTE: usize = 1280 - IPV6_LEN - ICMP_LEN;

/// What the worker does with a frame after [`Pipeline::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The window holds an L3 packet ready to leave by `port` to
    /// `neighbour`; resolve it and prepend Ethernet.
    Forward {
        /// Egress port.
        port: u16,
        /// Next hop to resolve.
        neighbour: IpAddr,
    },
    /// The window holds a complete Ethernet frame answering the sender
    /// (ARP/NDP reply, echo reply, ICMP error): send it on the ingress port.
    Reply,
    /// Hand the frame unchanged to the host stack of the ingress port.
    Punt,
    /// Used up inside the pipeline (an ARP reply learned); free the frame.
    Consumed,
    /// Dropped and counted.
    Drop(DropReason),
}

/// A packet waiting for its neighbour, as the pipeline sees it: whatever
/// the worker needs to find the frame again.
pub trait Held: Copy {}
impl<T: Copy> Held for T {}

/// Per-worker state of the per-packet path.
#[derive(Debug)]
pub struct Pipeline<P> {
    /// Neighbour cache with held packets.
    pub neighbours: NeighbourTable<P>,
    /// Counters by port.
    pub counters: Vec<PortCounters>,
    /// Packets released by a neighbour answer: the worker sends them.
    pub released: Vec<(NeighbourKey, P)>,
    icmp_bucket: TokenBucket,
}

fn wire_drop(e: WireError) -> DropReason {
    match e {
        WireError::Truncated { .. } => DropReason::Truncated,
        WireError::BadVersion { .. } => DropReason::BadVersion,
        WireError::BadHeaderLength { .. } => DropReason::BadHeaderLength,
        WireError::BadTotalLength { .. } => DropReason::BadTotalLength,
        WireError::BadChecksum { .. } => DropReason::BadChecksum,
        _ => DropReason::Malformed,
    }
}

/// RFC 1812 §5.3.7 and §4.2.2.11: addresses that can never be the source of
/// a forwarded packet.
#[inline]
fn martian_v4(src: Ipv4Addr) -> bool {
    let o = src.octets();
    o[0] == 0 || o[0] == 127 || o[0] >= 224
}

#[inline]
fn martian_v6(src: Ipv6Addr) -> bool {
    src.is_multicast() || src.is_loopback()
}

impl<P: Held> Pipeline<P> {
    /// State for a worker serving `ports` ports.
    pub fn new(ports: usize, icmp_rate: u32, icmp_burst: u32, now: Instant) -> Pipeline<P> {
        Pipeline {
            neighbours: NeighbourTable::new(NeighbourConfig::default()),
            counters: vec![PortCounters::default(); ports],
            released: Vec::with_capacity(crate::neigh::PENDING_PER_NEIGHBOUR * 4),
            icmp_bucket: TokenBucket::new(icmp_rate, icmp_burst, now),
        }
    }

    /// Counts a drop on `port`.
    #[inline]
    pub fn count_drop(&mut self, port: u16, reason: DropReason) {
        if let Some(c) = self.counters.get_mut(usize::from(port)) {
            c.drop(reason);
        }
    }

    /// Processes one frame received on `ingress`.
    pub fn process(
        &mut self,
        t: &Tables,
        pkt: &mut PacketBuf<'_>,
        ingress: u16,
        now: Instant,
    ) -> Verdict {
        let verdict = self.classify(t, pkt, ingress, now);
        if let Verdict::Drop(reason) = verdict {
            self.count_drop(ingress, reason);
        }
        verdict
    }

    fn classify(&mut self, t: &Tables, pkt: &mut PacketBuf<'_>, ingress: u16, now: Instant) -> Verdict {
        let Some(port) = t.ports.get(usize::from(ingress)) else {
            return Verdict::Drop(DropReason::Malformed);
        };
        let (dst_mac, ethertype, l3) = {
            let frame = match EthernetFrame::new_checked(pkt.data()) {
                Ok(f) => f,
                Err(e) => return Verdict::Drop(wire_drop(e)),
            };
            let enc = match frame.encapsulation() {
                Ok(enc) => enc,
                Err(e) => return Verdict::Drop(wire_drop(e)),
            };
            (frame.dst_addr(), enc.ethertype, enc.header_len)
        };
        if dst_mac.is_unicast() && dst_mac.0 != port.link.mac {
            return Verdict::Drop(DropReason::NotForUs);
        }
        match ethertype {
            EtherType::ARP => self.arp(port, pkt, l3, now),
            EtherType::IPV4 => self.ipv4(t, port, pkt, l3, now),
            EtherType::IPV6 => self.ipv6(t, port, pkt, l3, now),
            _ => Verdict::Drop(DropReason::NotIp),
        }
    }

    // ---------------------------------------------------------------- ARP

    fn arp(&mut self, port: &Port, pkt: &mut PacketBuf<'_>, l3: usize, now: Instant) -> Verdict {
        let repr = match ArpPacket::new_checked(&pkt.data()[l3..]).and_then(|p| ArpRepr::parse(&p)) {
            Ok(r) => r,
            Err(e) => return Verdict::Drop(wire_drop(e)),
        };
        let for_us = port.owns_v4(repr.target_protocol_addr);
        let key = (port.id, IpAddr::V4(repr.source_protocol_addr));
        let released = &mut self.released;
        // RFC 826 "merge": update a known sender; create it if the packet
        // was for us.
        if !repr.source_protocol_addr.is_unspecified() {
            self.neighbours.confirm(key, repr.source_hardware_addr.0, for_us, now, |p| {
                released.push((key, p))
            });
        }
        if !for_us || repr.operation != ArpOperation::Request {
            return Verdict::Consumed;
        }
        let reply = ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(port.link.mac),
            source_protocol_addr: repr.target_protocol_addr,
            target_hardware_addr: repr.source_hardware_addr,
            target_protocol_addr: repr.source_protocol_addr,
        };
        let len = ETH_LEN + reply.buffer_len();
        if !pkt.set_window(pkt.start(), len.max(60)) {
            return Verdict::Drop(DropReason::NoFrame);
        }
        let data = pkt.data_mut();
        data.fill(0);
        write_eth(data, repr.source_hardware_addr.0, port.link.mac, EtherType::ARP);
        if reply.emit(&mut data[ETH_LEN..]).is_err() {
            return Verdict::Drop(DropReason::Malformed);
        }
        self.counters[usize::from(port.id)].neighbour_replies += 1;
        Verdict::Reply
    }

    // --------------------------------------------------------------- IPv4

    fn ipv4(&mut self, t: &Tables, port: &Port, pkt: &mut PacketBuf<'_>, l3: usize, now: Instant) -> Verdict {
        let (src, dst, ttl, total, dont_frag, proto, hash) = {
            let ip = match Ipv4Packet::new_checked(&pkt.data()[l3..]) {
                Ok(ip) => ip,
                Err(e) => return Verdict::Drop(wire_drop(e)),
            };
            if !ip.verify_checksum() {
                return Verdict::Drop(DropReason::BadChecksum);
            }
            let hash = flow_hash_v4(&t.flow_hasher, &ip);
            (
                ip.src_addr(),
                ip.dst_addr(),
                ip.ttl(),
                usize::from(ip.total_len()),
                ip.dont_frag(),
                ip.protocol(),
                hash,
            )
        };
        // Ethernet may pad short packets: the IP total length is the truth.
        pkt.set_len(l3 + total);
        if martian_v4(src) || port.owns_v4(src) {
            return Verdict::Drop(DropReason::MartianSource);
        }
        if dst.is_broadcast() || dst.is_multicast() {
            return Verdict::Punt;
        }
        match t.fib.lookup(IpAddr::V4(dst), hash) {
            None => self.icmpv4_error(port, pkt, l3, now, IcmpError::NetUnreachable, DropReason::NoRoute),
            Some(Disposition::Blackhole) => Verdict::Drop(DropReason::Blackhole),
            Some(Disposition::Unreachable) => {
                self.icmpv4_error(port, pkt, l3, now, IcmpError::HostUnreachable, DropReason::NoRoute)
            }
            Some(Disposition::Local) => self.local_v4(port, pkt, l3, proto),
            Some(Disposition::Forward(nh)) => {
                let Some(egress) = t.ports.get(nh.egress.0 as usize) else {
                    return Verdict::Drop(DropReason::NoRoute);
                };
                if ttl <= 1 {
                    return self.icmpv4_error(port, pkt, l3, now, IcmpError::TimeExceeded, DropReason::TtlExceeded);
                }
                if total > usize::from(egress.mtu) {
                    if dont_frag {
                        return self.icmpv4_error(
                            port,
                            pkt,
                            l3,
                            now,
                            IcmpError::FragNeeded(egress.mtu),
                            DropReason::Oversized,
                        );
                    }
                    return Verdict::Drop(DropReason::FragmentationNeeded);
                }
                let mut ip = Ipv4Packet::new_unchecked(&mut pkt.data_mut()[l3..]);
                if ip.decrement_ttl().is_err() {
                    return Verdict::Drop(DropReason::TtlExceeded);
                }
                pkt.pull_front(l3);
                self.counters[usize::from(port.id)].forwarded += 1;
                Verdict::Forward {
                    port: egress.id,
                    neighbour: nh.neighbour(IpAddr::V4(dst)),
                }
            }
        }
    }

    /// Traffic for one of our IPv4 addresses: echo requests are answered
    /// here, everything else goes to the host stack.
    fn local_v4(&mut self, port: &Port, pkt: &mut PacketBuf<'_>, l3: usize, proto: IpProtocol) -> Verdict {
        if proto != IpProtocol::ICMP {
            return Verdict::Punt;
        }
        let data = pkt.data_mut();
        let (eth, rest) = data.split_at_mut(l3);
        let mut ip = Ipv4Packet::new_unchecked(&mut rest[..]);
        let hl = ip.header_len();
        {
            let Ok(icmp) = Icmpv4Packet::new_checked(&ip.payload_mut()[..]) else {
                return Verdict::Drop(DropReason::Truncated);
            };
            if icmp.msg_type() != icmpv4::Message::EchoRequest {
                return Verdict::Punt;
            }
            if !icmp.verify_checksum() {
                return Verdict::Drop(DropReason::BadChecksum);
            }
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_ttl(64);
        ip.fill_checksum();
        let payload = &mut rest[hl..];
        let mut icmp = Icmpv4Packet::new_unchecked(payload);
        // Type 8 → 0 changes one 16-bit word of the checksummed data.
        let c = checksum::update16(icmp.checksum(), 0x0800, 0x0000);
        icmp.set_msg_type(icmpv4::Message::EchoReply);
        icmp.set_checksum(c);
        swap_macs(eth);
        self.counters[usize::from(port.id)].icmp_sent += 1;
        Verdict::Reply
    }

    /// Turns the frame into an ICMPv4 error about the packet at `l3` and
    /// addresses it back to the sender, or drops it when the rate limit,
    /// RFC 1812 §4.3.2.7 or a missing source address say no.
    fn icmpv4_error(
        &mut self,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        now: Instant,
        kind: IcmpError,
        reason: DropReason,
    ) -> Verdict {
        self.count_drop(port.id, reason);
        let Some(our_addr) = port.icmp_source_v4() else {
            return Verdict::Consumed;
        };
        // Never answer an ICMP error, a non-initial fragment, or a packet
        // from a non-unicast source with an error (RFC 1812 §4.3.2.7).
        {
            let ip = Ipv4Packet::new_unchecked(&pkt.data()[l3..]);
            if ip.is_non_initial_fragment() || martian_v4(ip.src_addr()) {
                return Verdict::Consumed;
            }
            if ip.protocol() == IpProtocol::ICMP {
                match Icmpv4Packet::new_checked(ip.payload()) {
                    Ok(icmp) if icmp.msg_type().is_error() => return Verdict::Consumed,
                    Err(_) => return Verdict::Consumed,
                    _ => {}
                }
            }
        }
        if !self.icmp_bucket.take(now) {
            self.count_drop(port.id, DropReason::IcmpRateLimited);
            return Verdict::Consumed;
        }
        let quote = (pkt.len() - l3).min(ICMPV4_MAX_QUOTE);
        let (buf, start, _) = pkt.raw_mut();
        let orig = start + l3;
        // The new headers go right in front of the quoted packet, inside the
        // headroom: nothing is copied.
        let Some(new_start) = orig.checked_sub(ETH_LEN + IPV4_LEN + ICMP_LEN) else {
            return Verdict::Drop(DropReason::NoFrame);
        };
        let sender_mac: [u8; 6] = buf[start + 6..start + 12].try_into().expect("6 bytes");
        let sender_ip = Ipv4Packet::new_unchecked(&buf[orig..]).src_addr();
        let len = ETH_LEN + IPV4_LEN + ICMP_LEN + quote;
        if !pkt.set_window(new_start, len) {
            return Verdict::Drop(DropReason::NoFrame);
        }
        let data = pkt.data_mut();
        write_eth(data, sender_mac, port.link.mac, EtherType::IPV4);
        let ip = strait_wire::Ipv4Repr {
            src_addr: our_addr,
            dst_addr: sender_ip,
            protocol: IpProtocol::ICMP,
            payload_len: ICMP_LEN + quote,
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 0,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        };
        if ip.emit(&mut data[ETH_LEN..]).is_err() {
            return Verdict::Drop(DropReason::Malformed);
        }
        let icmp_bytes = &mut data[ETH_LEN + IPV4_LEN..];
        let (msg, code, rest) = kind.encode();
        let mut icmp = Icmpv4Packet::new_unchecked(icmp_bytes);
        icmp.set_msg_type(msg);
        icmp.set_msg_code(code);
        icmp.set_rest_of_header(rest);
        icmp.fill_checksum();
        self.counters[usize::from(port.id)].icmp_sent += 1;
        Verdict::Reply
    }

    // --------------------------------------------------------------- IPv6

    fn ipv6(&mut self, t: &Tables, port: &Port, pkt: &mut PacketBuf<'_>, l3: usize, now: Instant) -> Verdict {
        let (src, dst, hop_limit, total, next_header, hash) = {
            let ip = match Ipv6Packet::new_checked(&pkt.data()[l3..]) {
                Ok(ip) => ip,
                Err(e) => return Verdict::Drop(wire_drop(e)),
            };
            (
                ip.src_addr(),
                ip.dst_addr(),
                ip.hop_limit(),
                IPV6_LEN + usize::from(ip.payload_len()),
                ip.next_header(),
                flow_hash_v6(&t.flow_hasher, &ip),
            )
        };
        pkt.set_len(l3 + total);
        if martian_v6(src) {
            return Verdict::Drop(DropReason::MartianSource);
        }
        if next_header == IpProtocol::ICMPV6 {
            if let Some(v) = self.ndp(port, pkt, l3, now) {
                return v;
            }
        }
        if dst.is_multicast() || dst.is_unicast_link_local() {
            return if port.owns_v6(dst) || dst.is_multicast() {
                Verdict::Punt
            } else {
                Verdict::Drop(DropReason::NotForUs)
            };
        }
        match t.fib.lookup(IpAddr::V6(dst), hash) {
            None => self.icmpv6_error(port, pkt, l3, now, Icmp6Error::NoRoute, DropReason::NoRoute),
            Some(Disposition::Blackhole) => Verdict::Drop(DropReason::Blackhole),
            Some(Disposition::Unreachable) => {
                self.icmpv6_error(port, pkt, l3, now, Icmp6Error::AddressUnreachable, DropReason::NoRoute)
            }
            Some(Disposition::Local) => self.local_v6(port, pkt, l3, next_header),
            Some(Disposition::Forward(nh)) => {
                let Some(egress) = t.ports.get(nh.egress.0 as usize) else {
                    return Verdict::Drop(DropReason::NoRoute);
                };
                if hop_limit <= 1 {
                    return self.icmpv6_error(port, pkt, l3, now, Icmp6Error::HopLimit, DropReason::TtlExceeded);
                }
                if total > usize::from(egress.mtu) {
                    return self.icmpv6_error(
                        port,
                        pkt,
                        l3,
                        now,
                        Icmp6Error::PacketTooBig(egress.mtu),
                        DropReason::Oversized,
                    );
                }
                let mut ip = Ipv6Packet::new_unchecked(&mut pkt.data_mut()[l3..]);
                ip.set_hop_limit(hop_limit - 1);
                pkt.pull_front(l3);
                self.counters[usize::from(port.id)].forwarded += 1;
                Verdict::Forward {
                    port: egress.id,
                    neighbour: nh.neighbour(IpAddr::V6(dst)),
                }
            }
        }
    }

    /// Neighbour discovery (RFC 4861): answers solicitations for our
    /// addresses, learns from advertisements. `None` when the packet is not
    /// NDP and continues on the normal path.
    fn ndp(&mut self, port: &Port, pkt: &mut PacketBuf<'_>, l3: usize, now: Instant) -> Option<Verdict> {
        let (src, repr, hop_limit) = {
            let ip = Ipv6Packet::new_unchecked(&pkt.data()[l3..]);
            let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
            let repr = NdiscRepr::parse(&icmp).ok()?;
            if !icmp.verify_checksum(ip.src_addr(), ip.dst_addr()) {
                return Some(Verdict::Drop(DropReason::BadChecksum));
            }
            (ip.src_addr(), repr, ip.hop_limit())
        };
        // RFC 4861 §7.1.1/§7.1.2: NDP must arrive with hop limit 255.
        if hop_limit != 255 {
            return Some(Verdict::Drop(DropReason::Malformed));
        }
        match repr {
            NdiscRepr::NeighborSolicit { target_addr, lladdr } => {
                if let Some(mac) = lladdr {
                    if !src.is_unspecified() {
                        let key = (port.id, IpAddr::V6(src));
                        let released = &mut self.released;
                        self.neighbours
                            .confirm(key, mac.0, true, now, |p| released.push((key, p)));
                    }
                }
                if !port.owns_v6(target_addr) {
                    return Some(Verdict::Consumed);
                }
                let sender_mac: [u8; 6] = pkt.data()[6..12].try_into().expect("6 bytes");
                let answer = NdiscRepr::NeighborAdvert {
                    router: true,
                    solicited: !src.is_unspecified(),
                    override_: true,
                    target_addr,
                    lladdr: Some(EthernetAddress(port.link.mac)),
                };
                // RFC 4861 §7.2.4: answer a DAD probe (unspecified source) to
                // all-nodes.
                let dst = if src.is_unspecified() {
                    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
                } else {
                    src
                };
                let start = pkt.start();
                if !pkt.set_window(start, ETH_LEN + IPV6_LEN + answer.buffer_len()) {
                    return Some(Verdict::Drop(DropReason::NoFrame));
                }
                let l3 = ETH_LEN;
                write_eth(pkt.data_mut(), sender_mac, port.link.mac, EtherType::IPV6);
                let data = pkt.data_mut();
                emit_ipv6(&mut data[l3..], target_addr, dst, IpProtocol::ICMPV6, answer.buffer_len(), 255);
                let mut icmp = Icmpv6Packet::new_unchecked(&mut data[l3 + IPV6_LEN..]);
                if answer.emit(&mut icmp).is_err() {
                    return Some(Verdict::Drop(DropReason::Malformed));
                }
                icmp.fill_checksum(target_addr, dst);
                self.counters[usize::from(port.id)].neighbour_replies += 1;
                Some(Verdict::Reply)
            }
            NdiscRepr::NeighborAdvert { target_addr, lladdr, .. } => {
                let mac = match lladdr {
                    Some(m) => m.0,
                    None => pkt.data()[6..12].try_into().expect("6 bytes"),
                };
                let key = (port.id, IpAddr::V6(target_addr));
                let released = &mut self.released;
                self.neighbours
                    .confirm(key, mac, false, now, |p| released.push((key, p)));
                Some(Verdict::Consumed)
            }
            _ => None,
        }
    }

    fn local_v6(&mut self, port: &Port, pkt: &mut PacketBuf<'_>, l3: usize, next_header: IpProtocol) -> Verdict {
        if next_header != IpProtocol::ICMPV6 {
            return Verdict::Punt;
        }
        let data = pkt.data_mut();
        let (eth, rest) = data.split_at_mut(l3);
        let mut ip = Ipv6Packet::new_unchecked(&mut rest[..]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        {
            let Ok(icmp) = Icmpv6Packet::new_checked(ip.payload()) else {
                return Verdict::Drop(DropReason::Truncated);
            };
            if icmp.msg_type() != icmpv6::Message::EchoRequest {
                return Verdict::Punt;
            }
            if !icmp.verify_checksum(src, dst) {
                return Verdict::Drop(DropReason::BadChecksum);
            }
        }
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_hop_limit(64);
        let mut icmp = Icmpv6Packet::new_unchecked(&mut rest[IPV6_LEN..]);
        icmp.set_msg_type(icmpv6::Message::EchoReply);
        // Swapping the addresses leaves the pseudo-header sum unchanged;
        // only the type moves (RFC 1624).
        let c = checksum::update16(icmp.checksum(), 0x8000, 0x8100);
        icmp.set_checksum(c);
        swap_macs(eth);
        self.counters[usize::from(port.id)].icmp_sent += 1;
        Verdict::Reply
    }

    fn icmpv6_error(
        &mut self,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        now: Instant,
        kind: Icmp6Error,
        reason: DropReason,
    ) -> Verdict {
        self.count_drop(port.id, reason);
        let Some(our_addr) = port.icmp_source_v6() else {
            return Verdict::Consumed;
        };
        {
            let ip = Ipv6Packet::new_unchecked(&pkt.data()[l3..]);
            if ip.src_addr().is_unspecified() || martian_v6(ip.src_addr()) || ip.dst_addr().is_multicast() {
                return Verdict::Consumed;
            }
            // RFC 4443 §2.4 (e): never answer an ICMPv6 error with one.
            if ip.next_header() == IpProtocol::ICMPV6 {
                match Icmpv6Packet::new_checked(ip.payload()) {
                    Ok(icmp) if icmp.msg_type().is_error() => return Verdict::Consumed,
                    Err(_) => return Verdict::Consumed,
                    _ => {}
                }
            }
        }
        if !self.icmp_bucket.take(now) {
            self.count_drop(port.id, DropReason::IcmpRateLimited);
            return Verdict::Consumed;
        }
        let quote = (pkt.len() - l3).min(ICMPV6_MAX_QUOTE);
        let (buf, start, _) = pkt.raw_mut();
        let orig = start + l3;
        let Some(new_start) = orig.checked_sub(ETH_LEN + IPV6_LEN + ICMP_LEN) else {
            return Verdict::Drop(DropReason::NoFrame);
        };
        let sender_mac: [u8; 6] = buf[start + 6..start + 12].try_into().expect("6 bytes");
        let sender_ip = Ipv6Packet::new_unchecked(&buf[orig..]).src_addr();
        let len = ETH_LEN + IPV6_LEN + ICMP_LEN + quote;
        if !pkt.set_window(new_start, len) {
            return Verdict::Drop(DropReason::NoFrame);
        }
        let data = pkt.data_mut();
        write_eth(data, sender_mac, port.link.mac, EtherType::IPV6);
        emit_ipv6(&mut data[ETH_LEN..], our_addr, sender_ip, IpProtocol::ICMPV6, ICMP_LEN + quote, 64);
        let (msg, code, rest) = kind.encode();
        let mut icmp = Icmpv6Packet::new_unchecked(&mut data[ETH_LEN + IPV6_LEN..]);
        icmp.set_msg_type(msg);
        icmp.set_msg_code(code);
        icmp.set_rest_of_header(rest);
        icmp.fill_checksum(our_addr, sender_ip);
        self.counters[usize::from(port.id)].icmp_sent += 1;
        Verdict::Reply
    }

    // ------------------------------------------------------- neighbours

    /// Finds the MAC for a forwarded packet's next hop, holding `held` if
    /// it is unknown. Returns the MAC, or `None` when the packet was held or
    /// refused (then `request` tells whether to send a solicitation now).
    pub fn resolve(&mut self, key: NeighbourKey, held: P, now: Instant) -> Resolution<P> {
        self.neighbours.resolve(key, held, now)
    }

    /// Runs neighbour timers.
    pub fn tick(&mut self, now: Instant, actions: impl FnMut(TimerAction), dropped: impl FnMut(P)) {
        self.neighbours.tick(now, actions, dropped);
    }
}

/// Kinds of ICMPv4 error the pipeline sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IcmpError {
    NetUnreachable,
    HostUnreachable,
    TimeExceeded,
    FragNeeded(u16),
}

impl IcmpError {
    /// Type, code and the 4-byte rest of header (RFC 792, RFC 1191 §4).
    fn encode(self) -> (icmpv4::Message, u8, [u8; 4]) {
        match self {
            IcmpError::NetUnreachable => (icmpv4::Message::DstUnreachable, 0, [0; 4]),
            IcmpError::HostUnreachable => (icmpv4::Message::DstUnreachable, 1, [0; 4]),
            IcmpError::TimeExceeded => (icmpv4::Message::TimeExceeded, 0, [0; 4]),
            IcmpError::FragNeeded(mtu) => {
                let m = mtu.to_be_bytes();
                (icmpv4::Message::DstUnreachable, 4, [0, 0, m[0], m[1]])
            }
        }
    }
}

/// Kinds of ICMPv6 error the pipeline sends (RFC 4443 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Icmp6Error {
    NoRoute,
    AddressUnreachable,
    HopLimit,
    PacketTooBig(u16),
}

impl Icmp6Error {
    fn encode(self) -> (icmpv6::Message, u8, [u8; 4]) {
        match self {
            Icmp6Error::NoRoute => (icmpv6::Message::DstUnreachable, 0, [0; 4]),
            Icmp6Error::AddressUnreachable => (icmpv6::Message::DstUnreachable, 3, [0; 4]),
            Icmp6Error::HopLimit => (icmpv6::Message::TimeExceeded, 0, [0; 4]),
            Icmp6Error::PacketTooBig(mtu) => (icmpv6::Message::PktTooBig, 0, u32::from(mtu).to_be_bytes()),
        }
    }
}

fn emit_ipv6(buf: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr, next: IpProtocol, payload_len: usize, hop_limit: u8) {
    let mut ip = Ipv6Packet::new_unchecked(buf);
    ip.set_version_class_flow(6, 0, 0);
    ip.set_payload_len(payload_len as u16);
    ip.set_next_header(next);
    ip.set_hop_limit(hop_limit);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
}

/// Writes an untagged Ethernet header at the start of `frame`.
#[inline]
pub fn write_eth(frame: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: EtherType) {
    let mut eth = EthernetFrame::new_unchecked(frame);
    eth.set_dst_addr(EthernetAddress(dst));
    eth.set_src_addr(EthernetAddress(src));
    eth.set_ethertype(ethertype);
}

fn swap_macs(eth: &mut [u8]) {
    let (dst, rest) = eth.split_at_mut(6);
    dst.swap_with_slice(&mut rest[..6]);
}

/// Hash over the 5-tuple (addresses and, for unfragmented TCP/UDP, ports)
/// used to pick an ECMP next hop: one flow always takes one path.
#[inline]
fn flow_hash_v4<T: AsRef<[u8]>>(hasher: &FlowHasher, ip: &Ipv4Packet<T>) -> u32 {
    let ports = if !ip.is_fragment() && matches!(ip.protocol(), IpProtocol::TCP | IpProtocol::UDP) {
        ip.payload().get(..4).map_or(0, |p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
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

#[inline]
fn flow_hash_v6<T: AsRef<[u8]>>(hasher: &FlowHasher, ip: &Ipv6Packet<T>) -> u32 {
    let ports = if matches!(ip.next_header(), IpProtocol::TCP | IpProtocol::UDP) {
        ip.payload().get(..4).map_or(0, |p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
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

/// Builds a broadcast ARP request for `target` from `port` into `buf`;
/// returns the frame length.
pub fn arp_request(buf: &mut [u8], port: &Port, target: Ipv4Addr, unicast: Option<[u8; 6]>) -> Option<usize> {
    let src_ip = port.v4.first()?.0;
    let repr = ArpRepr {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(port.link.mac),
        source_protocol_addr: src_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let len = (ETH_LEN + repr.buffer_len()).max(60);
    let frame = buf.get_mut(..len)?;
    frame.fill(0);
    write_eth(frame, unicast.unwrap_or([0xff; 6]), port.link.mac, EtherType::ARP);
    repr.emit(&mut frame[ETH_LEN..]).ok()?;
    Some(len)
}

/// Builds a neighbour solicitation (RFC 4861 §7.2.2) for `target`, to its
/// solicited-node multicast address (or unicast when re-probing).
pub fn neighbour_solicitation(
    buf: &mut [u8],
    port: &Port,
    target: Ipv6Addr,
    unicast: Option<[u8; 6]>,
) -> Option<usize> {
    let src_ip = port.v6.first()?.0;
    let t = target.octets();
    let (dst_ip, dst_mac) = match unicast {
        Some(mac) => (target, mac),
        None => (
            Ipv6Addr::new(
                0xff02,
                0,
                0,
                0,
                0,
                1,
                0xff00 | u16::from(t[13]),
                u16::from_be_bytes([t[14], t[15]]),
            ),
            [0x33, 0x33, 0xff, t[13], t[14], t[15]],
        ),
    };
    let repr = NdiscRepr::NeighborSolicit {
        target_addr: target,
        lladdr: Some(EthernetAddress(port.link.mac)),
    };
    let len = ETH_LEN + IPV6_LEN + repr.buffer_len();
    let frame = buf.get_mut(..len)?;
    write_eth(frame, dst_mac, port.link.mac, EtherType::IPV6);
    emit_ipv6(&mut frame[ETH_LEN..], src_ip, dst_ip, IpProtocol::ICMPV6, repr.buffer_len(), 255);
    let mut icmp = Icmpv6Packet::new_unchecked(&mut frame[ETH_LEN + IPV6_LEN..]);
    repr.emit(&mut icmp).ok()?;
    icmp.fill_checksum(src_ip, dst_ip);
    Some(len)
}
