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
use strait_wire::icmpv6::NeighborFlags;
use strait_wire::{
    emit_icmpv4_error, emit_icmpv6_error, ArpOperation, ArpPacket, ArpRepr, Error as WireError,
    EtherType, EthernetAddress, EthernetFrame, Icmpv4Error, Icmpv4Packet, Icmpv4Type, Icmpv6Error,
    Icmpv6Packet, Icmpv6Repr, Icmpv6Type, IpProtocol, Ipv4Packet, Ipv6Packet, Ipv6Repr,
};

use crate::counters::{DropReason, PortCounters};
use crate::nat::{self, Inbound, NatStage};
use crate::neigh::{NeighbourConfig, NeighbourKey, NeighbourTable, Resolution, TimerAction};
use crate::packet::PacketBuf;
use crate::ratelimit::TokenBucket;
use crate::tables::{Egress, Port, SaSpec, Tables, Tunnel};
use std::sync::Arc;
use strait_esp::{
    classify_outer, ArrivalKind, DropReason as EspDrop, InboundSa, OutboundWorker, OuterHeader,
    OuterIpv4, UdpEncap,
};

/// Ethernet header length (untagged; frames are sent untagged).
pub const ETH_LEN: usize = 14;
/// IPv6 fixed header.
const IPV6_LEN: usize = 40;

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
    /// The window holds an IPv4 packet (TTL already decremented, DF clear)
    /// bigger than `mtu`: split it with [`fragment_ipv4`] and send each
    /// fragment to `target`.
    Fragment {
        /// MTU of the egress.
        mtu: u16,
        /// Where the fragments go.
        target: FragmentTarget,
    },
    /// Dropped and counted.
    Drop(DropReason),
}

/// Where the fragments of a [`Verdict::Fragment`] go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentTarget {
    /// Out of a port to a neighbour, like [`Verdict::Forward`].
    Port {
        /// Egress port.
        port: u16,
        /// Next hop to resolve.
        neighbour: IpAddr,
    },
    /// Sealed into a tunnel with [`Pipeline::tunnel_output`].
    Tunnel {
        /// Tunnel index.
        tunnel: u16,
    },
}

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
    /// Room to build generated packets (ICMP errors, NDP answers) before
    /// they replace the frame.
    scratch: Box<[u8; 1600]>,
    /// This worker's ESP state.
    esp: EspState,
    /// This worker's NAT translator.
    nat: NatStage,
    /// While an inner packet from a tunnel is classified: that tunnel's
    /// FIB egress id (NAT tells inside from outside by it).
    decap_tunnel: Option<u32>,
}

/// One worker's ESP state: its outbound sequence blocks and its inbound
/// replay windows, per tunnel. Kept across table swaps as long as the SA
/// stays the same.
#[derive(Debug, Default)]
struct EspState {
    generation: Option<u64>,
    out: Vec<OutboundWorker>,
    inbound: Vec<InboundEntry>,
}

#[derive(Debug)]
struct InboundEntry {
    spi: u32,
    tunnel: u16,
    spec: Arc<SaSpec>,
    sa: InboundSa,
}

impl EspState {
    fn sync(&mut self, t: &Tables) {
        let mut old_out = std::mem::take(&mut self.out);
        let mut old_in = std::mem::take(&mut self.inbound);
        for tun in &t.tunnels {
            let out = match old_out
                .iter()
                .position(|w| Arc::ptr_eq(w.sa(), &tun.out_sa))
            {
                Some(i) => old_out.swap_remove(i),
                None => tun.out_sa.worker(),
            };
            self.out.push(out);
            for spec in &tun.in_specs {
                let entry = match old_in.iter().position(|e| Arc::ptr_eq(&e.spec, spec)) {
                    Some(i) => {
                        let mut e = old_in.swap_remove(i);
                        e.tunnel = tun.id;
                        Some(e)
                    }
                    // Validated when the tables were built.
                    None => InboundSa::new(&spec.sa_config())
                        .ok()
                        .map(|sa| InboundEntry {
                            spi: spec.spi,
                            tunnel: tun.id,
                            spec: Arc::clone(spec),
                            sa,
                        }),
                };
                self.inbound.extend(entry);
            }
        }
        for mut w in old_out {
            w.flush();
        }
        self.generation = Some(t.generation);
    }
}

fn esp_drop(e: EspDrop) -> DropReason {
    match e {
        EspDrop::BadSpi => DropReason::EspBadSpi,
        EspDrop::AuthFailed => DropReason::EspAuthFailed,
        EspDrop::Replay => DropReason::EspReplay,
        EspDrop::ReplayOld => DropReason::EspReplayOld,
        EspDrop::Truncated => DropReason::Truncated,
        _ => DropReason::EspInvalid,
    }
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

impl<P> Pipeline<P> {
    /// State for a worker serving `ports` ports.
    pub fn new(ports: usize, icmp_rate: u32, icmp_burst: u32, now: Instant) -> Pipeline<P> {
        Pipeline {
            neighbours: NeighbourTable::new(NeighbourConfig::default()),
            counters: vec![PortCounters::default(); ports],
            released: Vec::with_capacity(crate::neigh::PENDING_PER_NEIGHBOUR * 4),
            icmp_bucket: TokenBucket::new(icmp_rate, icmp_burst, now),
            scratch: Box::new([0; 1600]),
            esp: EspState::default(),
            nat: NatStage::default(),
            decap_tunnel: None,
        }
    }

    /// This worker's index among the engine's workers (its share of the
    /// NAT port space); set before the first packet.
    pub fn set_worker_index(&mut self, index: usize) {
        self.nat.set_index(u16::try_from(index).unwrap_or(u16::MAX));
    }

    /// The NAT stage (sessions, counters).
    #[cfg(test)]
    pub fn nat(&self) -> &NatStage {
        &self.nat
    }

    /// NAT timer work: expires idle sessions within a fixed budget (the
    /// library pops the heads of its LRU lists; nothing is scanned).
    pub fn nat_timer(&mut self, t: &Tables, now: Instant) -> usize {
        self.nat.sync(t);
        self.nat.expire(t, nat_clock(t, now))
    }

    /// Publishes this worker's NAT snapshot for the control thread (skipped
    /// if the control thread is reading it).
    pub fn nat_publish(&self, t: &Tables, worker: usize, now: Instant) {
        self.nat.publish(&t.nat.status, worker, nat_clock(t, now));
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
        if self.esp.generation != Some(t.generation) {
            self.esp.sync(t);
        }
        self.nat.sync(t);
        let verdict = self.classify(t, pkt, ingress, now, false);
        if let Verdict::Drop(reason) = verdict {
            self.count_drop(ingress, reason);
        }
        verdict
    }

    fn classify(
        &mut self,
        t: &Tables,
        pkt: &mut PacketBuf<'_>,
        ingress: u16,
        now: Instant,
        decapsulated: bool,
    ) -> Verdict {
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
            EtherType::IPV4 => self.ipv4(t, port, pkt, l3, now, decapsulated),
            EtherType::IPV6 => self.ipv6(t, port, pkt, l3, now),
            _ => Verdict::Drop(DropReason::NotIp),
        }
    }

    // ---------------------------------------------------------------- ARP

    fn arp(&mut self, port: &Port, pkt: &mut PacketBuf<'_>, l3: usize, now: Instant) -> Verdict {
        let repr = match ArpPacket::new_checked(&pkt.data()[l3..]).and_then(|p| ArpRepr::parse(&p))
        {
            Ok(r) => r,
            Err(e) => return Verdict::Drop(wire_drop(e)),
        };
        let for_us = port.owns_v4(repr.target_protocol_addr);
        let key = (port.id, IpAddr::V4(repr.source_protocol_addr));
        let released = &mut self.released;
        // RFC 826 "merge": update a known sender; create it if the packet
        // was for us.
        if !repr.source_protocol_addr.is_unspecified() {
            self.neighbours
                .confirm(key, repr.source_hardware_addr.0, for_us, now, |p| {
                    released.push((key, p))
                });
        }
        if !for_us || repr.operation != ArpOperation::REQUEST {
            // Replies are also useful to the host stack behind the TAP.
            return if for_us {
                Verdict::Punt
            } else {
                Verdict::Consumed
            };
        }
        let reply = repr.reply_to(EthernetAddress(port.link.mac));
        let start = pkt.start();
        if !pkt.set_window(start, 60) {
            return Verdict::Drop(DropReason::NoFrame);
        }
        let data = pkt.data_mut();
        data.fill(0);
        write_eth(
            data,
            repr.source_hardware_addr.0,
            port.link.mac,
            EtherType::ARP,
        );
        if reply.emit(&mut data[ETH_LEN..]).is_err() {
            return Verdict::Drop(DropReason::Malformed);
        }
        self.counters[usize::from(port.id)].neighbour_replies += 1;
        Verdict::Reply
    }

    // --------------------------------------------------------------- IPv4

    fn ipv4(
        &mut self,
        t: &Tables,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        now: Instant,
        decapsulated: bool,
    ) -> Verdict {
        let (src, mut dst, ttl, total, dont_frag, proto, mut hash) = {
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
        // NAT inbound stage, before routing: un-SNAT replies, DNAT, static,
        // hairpin. A packet translated here is not translated again after
        // routing.
        let mut nat_done = false;
        if self.nat.active() {
            let ingress = self.decap_tunnel.unwrap_or(u32::from(port.id));
            let clock = nat_clock(t, now);
            match self.nat.inbound(
                t,
                &mut pkt.data_mut()[l3..],
                strait_nat::EgressId(ingress as u16),
                decapsulated,
                clock,
            ) {
                Inbound::Untouched => {}
                Inbound::Translated => {
                    nat_done = true;
                    let ip = Ipv4Packet::new_unchecked(&pkt.data()[l3..]);
                    dst = ip.dst_addr();
                    hash = flow_hash_v4(&t.flow_hasher, &ip);
                }
                Inbound::Drop(reason) => return Verdict::Drop(reason),
            }
        }
        match t.fib.lookup(IpAddr::V4(dst), hash) {
            None => self.icmpv4_error(
                t,
                port,
                pkt,
                l3,
                now,
                Icmpv4Error::DstUnreachable(0),
                DropReason::NoRoute,
                nat_done,
            ),
            Some(Disposition::Blackhole) => Verdict::Drop(DropReason::Blackhole),
            Some(Disposition::Unreachable) => self.icmpv4_error(
                t,
                port,
                pkt,
                l3,
                now,
                Icmpv4Error::DstUnreachable(1),
                DropReason::NoRoute,
                nat_done,
            ),
            Some(Disposition::Local) => {
                let esp_candidate = proto == IpProtocol::UDP || proto == IpProtocol::ESP;
                if esp_candidate && !t.tunnels.is_empty() {
                    if decapsulated {
                        // ESP inside ESP: never peel more than one layer.
                        return Verdict::Drop(DropReason::Malformed);
                    }
                    if let Some(v) = self.esp_input(t, port, pkt, l3, now) {
                        return v;
                    }
                }
                self.local_v4(port, pkt, l3, proto)
            }
            Some(Disposition::Forward(nh)) => {
                let egress = nh.egress.0 as usize;
                let Some(out) = t.egress(nh.egress.0) else {
                    return Verdict::Drop(DropReason::NoRoute);
                };
                let (mtu, tunnel) = match out {
                    Egress::Port(p) => (p.mtu, None),
                    Egress::Tunnel(tun) => (tun.mtu, Some(tun)),
                };
                if ttl <= 1 {
                    return self.icmpv4_error(
                        t,
                        port,
                        pkt,
                        l3,
                        now,
                        Icmpv4Error::TimeExceeded(0),
                        DropReason::TtlExceeded,
                        nat_done,
                    );
                }
                let fragment = total > usize::from(mtu);
                if fragment && dont_frag {
                    return self.icmpv4_error(
                        t,
                        port,
                        pkt,
                        l3,
                        now,
                        Icmpv4Error::FragmentationNeeded { next_hop_mtu: mtu },
                        DropReason::Oversized,
                        nat_done,
                    );
                }
                // NAT outbound stage: after the route, TTL and MTU checks
                // (errors about the packet quote what the sender sent),
                // before the TTL is decremented, and before encapsulation
                // (the peer sees translated inner packets).
                if !nat_done && self.nat.active() {
                    if let Some(v) = self.nat_outbound(t, port, pkt, l3, nh.egress.0, now) {
                        return v;
                    }
                }
                let mut ip = Ipv4Packet::new_unchecked(&mut pkt.data_mut()[l3..]);
                if ip.decrement_ttl().is_err() {
                    return Verdict::Drop(DropReason::TtlExceeded);
                }
                if let (Some(mss), Some(IpProtocol::TCP)) =
                    (tunnel.and_then(|t| t.mss), Some(proto))
                {
                    clamp_mss(ip.payload_mut(), mss);
                }
                pkt.pull_front(l3);
                self.counters[usize::from(port.id)].forwarded += 1;
                let target = match tunnel {
                    Some(tun) => FragmentTarget::Tunnel { tunnel: tun.id },
                    None => FragmentTarget::Port {
                        port: egress as u16,
                        neighbour: nh.neighbour(IpAddr::V4(dst)),
                    },
                };
                match (fragment, target) {
                    // DF clear and too big: split it (RFC 791 §3.2, RFC
                    // 1812 §4.2.2.7). Into a tunnel this is pre-fragmentation
                    // (RFC 4459 §3): each fragment is sealed on its own, so the
                    // peer never reassembles; the destination host does.
                    (true, target) => Verdict::Fragment { mtu, target },
                    (false, FragmentTarget::Tunnel { .. }) => match tunnel {
                        Some(tun) => self.esp_output(t, tun, pkt, now),
                        None => Verdict::Drop(DropReason::NoRoute),
                    },
                    (false, FragmentTarget::Port { port, neighbour }) => {
                        Verdict::Forward { port, neighbour }
                    }
                }
            }
        }
    }

    /// Runs the NAT outbound stage for a packet routed to `fib_egress`.
    /// `None`: continue forwarding (translated or not); `Some`: the
    /// packet's fate (dropped, or hairpinned and routed again).
    fn nat_outbound(
        &mut self,
        t: &Tables,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        fib_egress: u32,
        now: Instant,
    ) -> Option<Verdict> {
        let egress = nat::egress_for(t, fib_egress)?;
        let clock = nat_clock(t, now);
        match self.nat.outbound(&mut pkt.data_mut()[l3..], egress, clock) {
            strait_nat::Verdict::Translated | strait_nat::Verdict::NotTranslated => None,
            strait_nat::Verdict::Drop(r) => Some(Verdict::Drop(nat::drop_reason(r))),
            // Both ends rewritten: the packet goes back inside, so route
            // its new destination (once; NAT does not run again).
            strait_nat::Verdict::Hairpin => Some(self.reroute_v4(t, port, pkt, l3, now)),
        }
    }

    /// Routes a hairpinned packet to its new destination.
    fn reroute_v4(
        &mut self,
        t: &Tables,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        now: Instant,
    ) -> Verdict {
        let (dst, total, hash) = {
            let ip = Ipv4Packet::new_unchecked(&pkt.data()[l3..]);
            (
                ip.dst_addr(),
                usize::from(ip.total_len()),
                flow_hash_v4(&t.flow_hasher, &ip),
            )
        };
        let Some(Disposition::Forward(nh)) = t.fib.lookup(IpAddr::V4(dst), hash) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let Some(out) = t.egress(nh.egress.0) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if total > usize::from(out.mtu()) {
            return Verdict::Drop(DropReason::FragmentationNeeded);
        }
        let mut ip = Ipv4Packet::new_unchecked(&mut pkt.data_mut()[l3..]);
        if ip.decrement_ttl().is_err() {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        pkt.pull_front(l3);
        self.counters[usize::from(port.id)].forwarded += 1;
        match out {
            Egress::Tunnel(tun) => self.esp_output(t, tun, pkt, now),
            Egress::Port(p) => Verdict::Forward {
                port: p.id,
                neighbour: nh.neighbour(IpAddr::V4(dst)),
            },
        }
    }

    /// Traffic for one of our IPv4 addresses: echo requests are answered
    /// here, everything else goes to the host stack.
    fn local_v4(
        &mut self,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        proto: IpProtocol,
    ) -> Verdict {
        if proto != IpProtocol::ICMP {
            return Verdict::Punt;
        }
        let data = pkt.data_mut();
        let (eth, rest) = data.split_at_mut(l3);
        let mut ip = Ipv4Packet::new_unchecked(rest);
        let hl = ip.header_len();
        {
            let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
                return Verdict::Drop(DropReason::Truncated);
            };
            if icmp.msg_type() != Icmpv4Type::ECHO_REQUEST {
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
        let total = usize::from(ip.total_len());
        let rest = ip.into_inner();
        let mut icmp = Icmpv4Packet::new_unchecked(&mut rest[hl..total]);
        if icmp.make_echo_reply().is_err() {
            return Verdict::Punt;
        }
        swap_macs(eth);
        self.counters[usize::from(port.id)].icmp_sent += 1;
        Verdict::Reply
    }

    /// Turns the frame into an ICMPv4 error about the packet at `l3`,
    /// addressed back to the sender (RFC 1812 §4.3.2), or drops it when the
    /// rate limit or RFC 1812 §4.3.2.7 say no. The packet's drop is counted
    /// under `reason` either way.
    ///
    /// With `nat_done` the packet was translated on its way in (DNAT, or a
    /// reply un-SNATed), so its header now names the inside: the error is
    /// passed through the NAT's outbound ICMP-error translation (RFC 5508
    /// REQ-5), which restores the quoted packet to what the sender sent and
    /// sends the error from the session's public address. Without that the
    /// sender could not match the error and would learn the private address.
    #[allow(clippy::too_many_arguments)]
    fn icmpv4_error(
        &mut self,
        t: &Tables,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        now: Instant,
        error: Icmpv4Error,
        reason: DropReason,
        nat_done: bool,
    ) -> Verdict {
        let verdict = self.icmp_error(port, pkt, l3, now, IcmpError::V4(error), reason);
        if !nat_done || verdict != Verdict::Reply {
            return verdict;
        }
        // Back the way the packet came: its port, or the tunnel it was
        // decapsulated from (the egress the inbound stage saw).
        let back = self.decap_tunnel.unwrap_or(u32::from(port.id));
        let Some(egress) = nat::egress_for(t, back) else {
            return Verdict::Consumed;
        };
        let clock = nat_clock(t, now);
        match self
            .nat
            .outbound(&mut pkt.data_mut()[ETH_LEN..], egress, clock)
        {
            strait_nat::Verdict::Translated => Verdict::Reply,
            // The session is gone or the error cannot be rewritten: sending
            // it untranslated would leak the inside address.
            strait_nat::Verdict::Drop(r) => {
                self.count_drop(port.id, nat::drop_reason(r));
                Verdict::Consumed
            }
            strait_nat::Verdict::NotTranslated | strait_nat::Verdict::Hairpin => Verdict::Consumed,
        }
    }

    /// Like [`Self::icmpv4_error`] for IPv6 (RFC 4443 §2.4).
    fn icmpv6_error(
        &mut self,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        now: Instant,
        error: Icmpv6Error,
        reason: DropReason,
    ) -> Verdict {
        self.icmp_error(port, pkt, l3, now, IcmpError::V6(error), reason)
    }

    fn icmp_error(
        &mut self,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        now: Instant,
        error: IcmpError,
        reason: DropReason,
    ) -> Verdict {
        self.count_drop(port.id, reason);
        let has_source = match error {
            IcmpError::V4(_) => port.icmp_source_v4().is_some(),
            IcmpError::V6(_) => port.icmp_source_v6().is_some(),
        };
        if !has_source {
            return Verdict::Consumed;
        }
        if !self.icmp_bucket.take(now) {
            self.count_drop(port.id, DropReason::IcmpRateLimited);
            return Verdict::Consumed;
        }
        let offending = &pkt.data()[l3..];
        let out = &mut self.scratch[..];
        let built = match (error, port.icmp_source_v4(), port.icmp_source_v6()) {
            (IcmpError::V4(e), Some(src), _) => {
                emit_icmpv4_error(offending, e, src, 64, out).map(|n| (n, EtherType::IPV4))
            }
            (IcmpError::V6(e), _, Some(src)) => {
                emit_icmpv6_error(offending, e, src, 64, out).map(|n| (n, EtherType::IPV6))
            }
            _ => return Verdict::Consumed,
        };
        // Suppressed by RFC 1812 §4.3.2.7 / RFC 4443 §2.4(e) (an error about
        // an error, a non-initial fragment, a broadcast) or malformed.
        let Ok((n, ethertype)) = built else {
            return Verdict::Consumed;
        };
        self.counters[usize::from(port.id)].icmp_sent += 1;
        self.reply_from_scratch(port, pkt, n, ethertype)
    }

    /// Replaces the frame by an Ethernet header back to the sender followed
    /// by `scratch[..n]`.
    fn reply_from_scratch(
        &mut self,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        n: usize,
        ethertype: EtherType,
    ) -> Verdict {
        let sender_mac: [u8; 6] = pkt.data()[6..12].try_into().expect("6 bytes");
        let start = pkt.start();
        if !pkt.set_window(start, ETH_LEN + n) {
            return Verdict::Drop(DropReason::NoFrame);
        }
        let data = pkt.data_mut();
        write_eth(data, sender_mac, port.link.mac, ethertype);
        data[ETH_LEN..].copy_from_slice(&self.scratch[..n]);
        Verdict::Reply
    }

    // --------------------------------------------------------------- IPv6

    fn ipv6(
        &mut self,
        t: &Tables,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        now: Instant,
    ) -> Verdict {
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
            None => self.icmpv6_error(
                port,
                pkt,
                l3,
                now,
                Icmpv6Error::DstUnreachable(0),
                DropReason::NoRoute,
            ),
            Some(Disposition::Blackhole) => Verdict::Drop(DropReason::Blackhole),
            Some(Disposition::Unreachable) => self.icmpv6_error(
                port,
                pkt,
                l3,
                now,
                Icmpv6Error::DstUnreachable(3),
                DropReason::NoRoute,
            ),
            Some(Disposition::Local) => self.local_v6(port, pkt, l3, next_header),
            Some(Disposition::Forward(nh)) => {
                let egress = nh.egress.0 as usize;
                let Some(out) = t.egress(nh.egress.0) else {
                    return Verdict::Drop(DropReason::NoRoute);
                };
                let (mtu, tunnel) = match out {
                    Egress::Port(p) => (p.mtu, None),
                    Egress::Tunnel(tun) => (tun.mtu, Some(tun)),
                };
                if hop_limit <= 1 {
                    return self.icmpv6_error(
                        port,
                        pkt,
                        l3,
                        now,
                        Icmpv6Error::TimeExceeded(0),
                        DropReason::TtlExceeded,
                    );
                }
                // IPv6 routers never fragment (RFC 8200 §5).
                if total > usize::from(mtu) {
                    return self.icmpv6_error(
                        port,
                        pkt,
                        l3,
                        now,
                        Icmpv6Error::PacketTooBig {
                            mtu: u32::from(mtu),
                        },
                        DropReason::Oversized,
                    );
                }
                let mut ip = Ipv6Packet::new_unchecked(&mut pkt.data_mut()[l3..]);
                ip.set_hop_limit(hop_limit - 1);
                if let Some(tun) = tunnel {
                    if let (Some(mss), IpProtocol::TCP) = (tun.mss, next_header) {
                        clamp_mss(ip.payload_mut(), mss);
                    }
                    pkt.pull_front(l3);
                    self.counters[usize::from(port.id)].forwarded += 1;
                    return self.esp_output(t, tun, pkt, now);
                }
                pkt.pull_front(l3);
                self.counters[usize::from(port.id)].forwarded += 1;
                Verdict::Forward {
                    port: egress as u16,
                    neighbour: nh.neighbour(IpAddr::V6(dst)),
                }
            }
        }
    }

    /// Neighbour discovery (RFC 4861): answers solicitations for our
    /// addresses, learns from advertisements. `None` when the packet is not
    /// NDP and continues on the normal path.
    fn ndp(
        &mut self,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        now: Instant,
    ) -> Option<Verdict> {
        enum Ndp {
            Solicit(Ipv6Addr, Option<EthernetAddress>),
            Advert(Ipv6Addr, Option<EthernetAddress>),
        }
        let (src, msg, hop_limit) = {
            let ip = Ipv6Packet::new_unchecked(&pkt.data()[l3..]);
            let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
            if !matches!(
                icmp.msg_type(),
                Icmpv6Type::NEIGHBOR_SOLICIT | Icmpv6Type::NEIGHBOR_ADVERT
            ) {
                return None;
            }
            let msg = match Icmpv6Repr::parse(&icmp, ip.src_addr(), ip.dst_addr()) {
                Ok(Icmpv6Repr::NeighborSolicit {
                    target,
                    source_lladdr,
                }) => Ndp::Solicit(target, source_lladdr),
                Ok(Icmpv6Repr::NeighborAdvert {
                    target,
                    target_lladdr,
                    ..
                }) => Ndp::Advert(target, target_lladdr),
                Ok(_) => return None,
                Err(e) => return Some(Verdict::Drop(wire_drop(e))),
            };
            (ip.src_addr(), msg, ip.hop_limit())
        };
        // RFC 4861 §7.1.1/§7.1.2: NDP must arrive with hop limit 255.
        if hop_limit != 255 {
            return Some(Verdict::Drop(DropReason::Malformed));
        }
        match msg {
            Ndp::Solicit(target, source_lladdr) => {
                if let (Some(mac), false) = (source_lladdr, src.is_unspecified()) {
                    let key = (port.id, IpAddr::V6(src));
                    let released = &mut self.released;
                    self.neighbours
                        .confirm(key, mac.0, true, now, |p| released.push((key, p)));
                }
                if !port.owns_v6(target) {
                    return Some(Verdict::Consumed);
                }
                // RFC 4861 §7.2.4: answer a DAD probe (unspecified source)
                // to all-nodes.
                let dst = if src.is_unspecified() {
                    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
                } else {
                    src
                };
                let answer = Icmpv6Repr::NeighborAdvert {
                    flags: NeighborFlags {
                        router: true,
                        solicited: !src.is_unspecified(),
                        override_: true,
                    },
                    target,
                    target_lladdr: Some(EthernetAddress(port.link.mac)),
                };
                let n = emit_ipv6_icmp(&mut self.scratch[..], target, dst, 255, &answer)?;
                self.counters[usize::from(port.id)].neighbour_replies += 1;
                Some(self.reply_from_scratch(port, pkt, n, EtherType::IPV6))
            }
            Ndp::Advert(target, target_lladdr) => {
                let mac = match target_lladdr {
                    Some(m) => m.0,
                    None => pkt.data()[6..12].try_into().expect("6 bytes"),
                };
                let key = (port.id, IpAddr::V6(target));
                let released = &mut self.released;
                self.neighbours
                    .confirm(key, mac, false, now, |p| released.push((key, p)));
                Some(Verdict::Consumed)
            }
        }
    }

    fn local_v6(
        &mut self,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        next_header: IpProtocol,
    ) -> Verdict {
        if next_header != IpProtocol::ICMPV6 {
            return Verdict::Punt;
        }
        let n = {
            let ip = Ipv6Packet::new_unchecked(&pkt.data()[l3..]);
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let Ok(icmp) = Icmpv6Packet::new_checked(ip.payload()) else {
                return Verdict::Drop(DropReason::Truncated);
            };
            if icmp.msg_type() != Icmpv6Type::ECHO_REQUEST {
                return Verdict::Punt;
            }
            let Ok(Icmpv6Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }) = Icmpv6Repr::parse(&icmp, src, dst)
            else {
                return Verdict::Drop(DropReason::BadChecksum);
            };
            let reply = Icmpv6Repr::EchoReply {
                ident,
                seq_no,
                data,
            };
            match emit_ipv6_icmp(&mut self.scratch[..], dst, src, 64, &reply) {
                Some(n) => n,
                None => return Verdict::Drop(DropReason::Malformed),
            }
        };
        self.counters[usize::from(port.id)].icmp_sent += 1;
        self.reply_from_scratch(port, pkt, n, EtherType::IPV6)
    }

    // ---------------------------------------------------------------- ESP

    /// Seals the L3 packet in the window into `tun` (RFC 4303 tunnel mode),
    /// adds the outer IPv4 (+ UDP, RFC 3948) header and routes the result.
    fn esp_output(
        &mut self,
        t: &Tables,
        tun: &Tunnel,
        pkt: &mut PacketBuf<'_>,
        now: Instant,
    ) -> Verdict {
        let clock = now.saturating_duration_since(t.epoch);
        let Some(out) = self.esp.out.get_mut(usize::from(tun.id)) else {
            return Verdict::Drop(DropReason::EspSealFailed);
        };
        // RFC 4301 §5.1.2.1: the outer DSCP is copied from the inner header;
        // ECN is not propagated (RFC 6040's compatibility mode).
        let tos = match pkt.data().first().map(|b| b >> 4) {
            Some(4) => pkt.data().get(1).copied().unwrap_or(0) & 0xfc,
            Some(6) => {
                let d = pkt.data();
                ((u16::from_be_bytes([d[0], d[1]]) >> 4) as u8) & 0xfc
            }
            _ => 0,
        };
        let (buf, start, end) = pkt.raw_mut();
        let sealed = match out.seal(buf, start..end, clock) {
            Ok(s) => s,
            Err(e) => {
                return Verdict::Drop(match e {
                    EspDrop::NoRoom => DropReason::NoFrame,
                    _ => DropReason::EspSealFailed,
                })
            }
        };
        let (dst, dst_port) = tun.peer();
        let header = OuterHeader::V4(OuterIpv4 {
            src: tun.local,
            dst,
            ttl: 64,
            tos,
            ident: 0,
            // RFC 4301 §8.1: set DF and let PMTU discovery work on the
            // outer path.
            dont_fragment: true,
            udp: tun.local_port.map(|p| UdpEncap {
                src_port: p,
                dst_port,
            }),
        });
        let outer = match header.write(buf, sealed.esp) {
            Ok(r) => r,
            Err(_) => return Verdict::Drop(DropReason::NoFrame),
        };
        if !pkt.set_window(outer.start, outer.len()) {
            return Verdict::Drop(DropReason::NoFrame);
        }
        match t.fib.lookup(IpAddr::V4(dst), 0) {
            Some(Disposition::Forward(nh)) if (nh.egress.0 as usize) < t.ports.len() => {
                let port = nh.egress.0 as u16;
                self.counters[usize::from(port)].esp_sealed += 1;
                Verdict::Forward {
                    port,
                    neighbour: nh.neighbour(IpAddr::V4(dst)),
                }
            }
            // A tunnel endpoint behind another tunnel, or no route at all.
            _ => Verdict::Drop(DropReason::NoRoute),
        }
    }

    /// ESP (UDP/4500 or protocol 50) to one of our addresses: open it and
    /// forward the inner packet. `None` when it is not tunnel traffic.
    fn esp_input(
        &mut self,
        t: &Tables,
        port: &Port,
        pkt: &mut PacketBuf<'_>,
        l3: usize,
        now: Instant,
    ) -> Option<Verdict> {
        let arrival = match classify_outer(&pkt.data()[l3..]) {
            Ok(a) => a,
            Err(_) => return Some(Verdict::Drop(DropReason::Truncated)),
        };
        let esp = match arrival.kind {
            ArrivalKind::Other => return None,
            ArrivalKind::Keepalive => return Some(Verdict::Consumed),
            // Key exchange belongs to the control plane in the host stack.
            ArrivalKind::Ike(_) => return Some(Verdict::Punt),
            ArrivalKind::Esp(r) => r,
        };
        let clock = now.saturating_duration_since(t.epoch);
        let base = pkt.start() + l3;
        let abs = base + esp.start..base + esp.end;
        let (buf, _, _) = pkt.raw_mut();
        let Ok(spi) = strait_esp::peek_spi(&buf[abs.clone()]) else {
            return Some(Verdict::Drop(DropReason::Truncated));
        };
        let Some(entry) = self.esp.inbound.iter_mut().find(|e| e.spi == spi) else {
            return Some(Verdict::Drop(DropReason::EspBadSpi));
        };
        let opened = match entry.sa.open(buf, abs, clock) {
            Ok(o) => o,
            Err(e) => return Some(Verdict::Drop(esp_drop(e))),
        };
        let Some(tun) = t.tunnels.get(usize::from(entry.tunnel)) else {
            return Some(Verdict::Drop(DropReason::EspBadSpi));
        };
        // NAT traversal: answer where authenticated traffic comes from.
        if let (IpAddr::V4(src), Some((sport, _))) = (arrival.src, arrival.udp) {
            tun.learn_peer(src, sport);
        }
        self.counters[usize::from(port.id)].esp_opened += 1;
        // The inner packet continues as if it had arrived on this port,
        // behind a synthetic Ethernet header.
        let inner = opened.inner;
        let Some(frame_start) = inner.start.checked_sub(ETH_LEN) else {
            return Some(Verdict::Drop(DropReason::NoFrame));
        };
        if !pkt.set_window(frame_start, ETH_LEN + inner.len()) {
            return Some(Verdict::Drop(DropReason::NoFrame));
        }
        let ethertype = match pkt.data().get(ETH_LEN).map(|b| b >> 4) {
            Some(6) => EtherType::IPV6,
            _ => EtherType::IPV4,
        };
        write_eth(pkt.data_mut(), port.link.mac, port.link.mac, ethertype);
        self.decap_tunnel = Some(tun.egress);
        let verdict = self.classify(t, pkt, port.id, now, true);
        self.decap_tunnel = None;
        Some(match verdict {
            // Answers to tunnelled packets (echo replies, ICMP errors) are
            // routed, so they go back through the tunnel encrypted.
            Verdict::Reply => {
                pkt.pull_front(ETH_LEN);
                self.output(t, pkt, now)
            }
            // The host stack would answer in clear on the wire: refuse.
            Verdict::Punt => Verdict::Drop(DropReason::HostPuntFailed),
            other => other,
        })
    }

    /// Seals the IPv4/IPv6 packet in the window into tunnel `tunnel` and
    /// routes the result (used for fragments the worker split).
    pub fn tunnel_output(
        &mut self,
        t: &Tables,
        tunnel: u16,
        pkt: &mut PacketBuf<'_>,
        now: Instant,
    ) -> Verdict {
        if self.esp.generation != Some(t.generation) {
            self.esp.sync(t);
        }
        match t.tunnels.get(usize::from(tunnel)) {
            Some(tun) => self.esp_output(t, tun, pkt, now),
            None => Verdict::Drop(DropReason::NoRoute),
        }
    }

    /// Turns the (empty) window into a NAT-keepalive for `tun` (RFC 3948
    /// §2.3: one 0xFF byte in UDP to the peer) and routes it.
    pub fn keepalive(&mut self, t: &Tables, tun: &Tunnel, pkt: &mut PacketBuf<'_>) -> Verdict {
        let Some(src_port) = tun.local_port else {
            return Verdict::Consumed;
        };
        let start = pkt.start();
        if !pkt.set_window(start, 1) {
            return Verdict::Drop(DropReason::NoFrame);
        }
        pkt.data_mut()[0] = strait_esp::KEEPALIVE_PAYLOAD;
        let (dst, dst_port) = tun.peer();
        let header = OuterHeader::V4(OuterIpv4 {
            src: tun.local,
            dst,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_fragment: true,
            udp: Some(UdpEncap { src_port, dst_port }),
        });
        let (buf, start, end) = pkt.raw_mut();
        let Ok(outer) = header.write(buf, start..end) else {
            return Verdict::Drop(DropReason::NoFrame);
        };
        pkt.set_window(outer.start, outer.len());
        match t.fib.lookup(IpAddr::V4(dst), 0) {
            Some(Disposition::Forward(nh)) if (nh.egress.0 as usize) < t.ports.len() => {
                Verdict::Forward {
                    port: nh.egress.0 as u16,
                    neighbour: nh.neighbour(IpAddr::V4(dst)),
                }
            }
            _ => Verdict::Drop(DropReason::NoRoute),
        }
    }

    /// Routes a packet the dataplane generated itself (L3 at the window).
    fn output(&mut self, t: &Tables, pkt: &mut PacketBuf<'_>, now: Instant) -> Verdict {
        let dst = match pkt.data().first().map(|b| b >> 4) {
            Some(4) => Ipv4Packet::new_checked(pkt.data()).map(|ip| IpAddr::V4(ip.dst_addr())),
            Some(6) => Ipv6Packet::new_checked(pkt.data()).map(|ip| IpAddr::V6(ip.dst_addr())),
            _ => return Verdict::Drop(DropReason::Malformed),
        };
        let Ok(dst) = dst else {
            return Verdict::Drop(DropReason::Malformed);
        };
        match t.fib.lookup(dst, 0) {
            Some(Disposition::Forward(nh)) => match t.egress(nh.egress.0) {
                Some(Egress::Port(p)) => Verdict::Forward {
                    port: p.id,
                    neighbour: nh.neighbour(dst),
                },
                Some(Egress::Tunnel(tun)) => self.esp_output(t, tun, pkt, now),
                None => Verdict::Drop(DropReason::NoRoute),
            },
            _ => Verdict::Drop(DropReason::NoRoute),
        }
    }

    // ------------------------------------------------------- neighbours

    /// Finds the MAC for a forwarded packet's next hop, holding `held` if
    /// it is unknown. Returns the MAC, or `None` when the packet was held or
    /// refused (then `request` tells whether to send a solicitation now).
    pub fn resolve(&mut self, key: NeighbourKey, held: P, now: Instant) -> Resolution<P> {
        self.neighbours.resolve(key, held, now)
    }

    /// This worker's per-SA counters, for the status snapshot.
    pub fn sa_counters(&self, out: &mut Vec<crate::status::SaCounterInfo>) {
        use crate::status::{SaCounterInfo, SaDirection};
        let info = |tunnel: u16, spi: u32, direction, c: &strait_esp::SaCounters| SaCounterInfo {
            tunnel,
            spi,
            direction,
            packets: c.packets,
            bytes: c.bytes,
            drops: c.nonzero_drops().collect(),
        };
        for (i, w) in self.esp.out.iter().enumerate() {
            out.push(info(
                i as u16,
                w.sa().spi(),
                SaDirection::Outbound,
                w.counters(),
            ));
        }
        for e in &self.esp.inbound {
            out.push(info(e.tunnel, e.spi, SaDirection::Inbound, e.sa.counters()));
        }
    }

    /// Reports the SA lifetime events this worker sees (status period,
    /// never per packet): its inbound SAs' own, and the shared outbound
    /// SAs' (each reported once, by whichever worker polls first).
    pub fn sa_events(
        &mut self,
        t: &Tables,
        now: Instant,
        mut report: impl FnMut(crate::events::EngineEvent),
    ) {
        use crate::events::sa_event;
        use crate::status::SaDirection;
        let clock = now.saturating_duration_since(t.epoch);
        for tun in &t.tunnels {
            while let Some(e) = tun.out_sa.poll_event(clock) {
                let bytes = tun.out_sa.bytes_published();
                let dir = SaDirection::Outbound;
                report(sa_event(e, &tun.name, &tun.out_spec, dir, bytes, clock));
            }
        }
        for entry in &mut self.esp.inbound {
            let Some(tun) = t.tunnels.get(usize::from(entry.tunnel)) else {
                continue;
            };
            while let Some(e) = entry.sa.poll_event(clock) {
                let bytes = entry.sa.counters().bytes;
                let dir = SaDirection::Inbound;
                report(sa_event(e, &tun.name, &entry.spec, dir, bytes, clock));
            }
        }
    }

    /// Runs neighbour timers.
    pub fn tick(&mut self, now: Instant, actions: impl FnMut(TimerAction), dropped: impl FnMut(P)) {
        self.neighbours.tick(now, actions, dropped);
    }
}

/// NAT time: whole seconds on the tables' epoch.
#[inline]
fn nat_clock(t: &Tables, now: Instant) -> u64 {
    now.saturating_duration_since(t.epoch).as_secs()
}

/// An ICMP error of either family.
#[derive(Debug, Clone, Copy)]
enum IcmpError {
    V4(Icmpv4Error),
    V6(Icmpv6Error),
}

/// Writes an IPv6 header and an ICMPv6 message into `out`; its length.
fn emit_ipv6_icmp(
    out: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    icmp: &Icmpv6Repr<'_>,
) -> Option<usize> {
    let len = icmp.buffer_len();
    Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::ICMPV6,
        payload_len: len,
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(out)
    .ok()?;
    icmp.emit(out.get_mut(IPV6_LEN..IPV6_LEN + len)?, src, dst)
        .ok()?;
    Some(IPV6_LEN + len)
}

/// Where the fragments of an IPv4 packet go (RFC 791 §3.2): payload bytes
/// per fragment (a multiple of 8, all but the last) and their number.
pub fn fragment_plan(header_len: usize, total_len: usize, mtu: usize) -> Option<(usize, usize)> {
    let per = mtu.checked_sub(header_len)? & !7;
    if per == 0 || total_len < header_len {
        return None;
    }
    let payload = total_len - header_len;
    Some((per, payload.div_ceil(per)))
}

/// Writes fragment `index` of the IPv4 packet `original` into `out`
/// (header copied, then its slice of the payload) and returns its length.
/// Offsets add to the original's own, and MF stays set on the last
/// fragment of an already fragmented packet.
pub fn fragment_ipv4(original: &[u8], mtu: usize, index: usize, out: &mut [u8]) -> Option<usize> {
    let ip = Ipv4Packet::new_checked(original).ok()?;
    let hl = ip.header_len();
    let total = usize::from(ip.total_len());
    let (per, count) = fragment_plan(hl, total, mtu)?;
    if index >= count {
        return None;
    }
    let start = hl + index * per;
    let end = (start + per).min(total);
    let len = hl + (end - start);
    let out = out.get_mut(..len)?;
    out[..hl].copy_from_slice(&original[..hl]);
    out[hl..].copy_from_slice(&original[start..end]);
    let offset = u16::try_from(usize::from(ip.frag_offset()) + index * per).ok()?;
    let more = index + 1 < count || ip.more_frags();
    let mut frag = Ipv4Packet::new_unchecked(out);
    frag.set_total_len(len as u16);
    frag.set_frag(false, more, offset);
    frag.fill_checksum();
    Some(len)
}

/// Lowers the MSS option of a TCP SYN (RFC 879/6691: a tunnel lowers the
/// path MTU; clamping keeps TCP from depending on ICMP frag-needed).
fn clamp_mss(segment: &mut [u8], mss: u16) {
    if let Ok(mut tcp) = strait_wire::TcpPacket::new_checked(segment) {
        if tcp.flags().contains(strait_wire::TcpFlags::SYN) {
            tcp.clamp_mss(mss);
        }
    }
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

#[inline]
fn flow_hash_v6<T: AsRef<[u8]>>(hasher: &FlowHasher, ip: &Ipv6Packet<T>) -> u32 {
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

/// Builds an ARP request for `target` from `port` into `buf` (broadcast,
/// or unicast to a stale neighbour); returns the frame length.
pub fn arp_request(
    buf: &mut [u8],
    port: &Port,
    target: Ipv4Addr,
    unicast: Option<[u8; 6]>,
) -> Option<usize> {
    let src_ip = port.v4.first()?.0;
    let repr = ArpRepr::request(EthernetAddress(port.link.mac), src_ip, target);
    let frame = buf.get_mut(..60)?;
    frame.fill(0);
    write_eth(
        frame,
        unicast.unwrap_or([0xff; 6]),
        port.link.mac,
        EtherType::ARP,
    );
    repr.emit(&mut frame[ETH_LEN..]).ok()?;
    Some(60)
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
    let repr = Icmpv6Repr::NeighborSolicit {
        target,
        source_lladdr: Some(EthernetAddress(port.link.mac)),
    };
    let frame = buf.get_mut(ETH_LEN..)?;
    let n = emit_ipv6_icmp(frame, src_ip, dst_ip, 255, &repr)?;
    write_eth(buf, dst_mac, port.link.mac, EtherType::IPV6);
    Some(ETH_LEN + n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::tables::KernelLink;
    use strait_wire::{Ipv4Repr, UdpRepr};

    const LAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const WAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
    const HEADROOM: usize = 256;

    fn tables() -> Tables {
        let c = Config::parse(
            r#"
[[interface]]
name = "lan"
addresses = ["10.0.1.1/24", "fd00:1::1/64"]
[[interface]]
name = "wan"
addresses = ["192.0.2.1/24", "fd00:2::1/64"]
mtu = 1400
[[route]]
prefix = "198.51.100.0/24"
via = ["192.0.2.254"]
[[route]]
prefix = "203.0.113.0/24"
kind = "blackhole"
[[route]]
prefix = "fd00:9::/48"
via = ["fd00:2::fe"]
"#,
            "t.toml",
        )
        .unwrap();
        Tables::build(&c, "t.toml", 1, 3, None, |name| {
            Ok(KernelLink {
                ifindex: 2,
                mac: if name == "lan" { LAN_MAC } else { WAN_MAC },
                mtu: 1500,
            })
        })
        .unwrap()
    }

    struct Frame {
        buf: Vec<u8>,
        start: usize,
        len: usize,
    }

    impl Frame {
        fn new(bytes: &[u8]) -> Frame {
            let mut buf = vec![0u8; 2048];
            buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
            Frame {
                buf,
                start: HEADROOM,
                len: bytes.len(),
            }
        }

        fn run(&mut self, p: &mut Pipeline<u32>, t: &Tables, ingress: u16) -> Verdict {
            let mut pkt = PacketBuf::new(&mut self.buf, self.start, self.len);
            let v = p.process(t, &mut pkt, ingress, Instant::now());
            self.start = pkt.start();
            self.len = pkt.len();
            v
        }

        fn data(&self) -> &[u8] {
            &self.buf[self.start..self.start + self.len]
        }
    }

    fn pipeline() -> Pipeline<u32> {
        Pipeline::new(2, 1000, 1000, Instant::now())
    }

    fn udp_frame(
        dst_mac: [u8; 6],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        payload: usize,
        df: bool,
    ) -> Vec<u8> {
        let mut f = vec![0u8; ETH_LEN + 20 + 8 + payload];
        write_eth(&mut f, dst_mac, HOST_MAC, EtherType::IPV4);
        Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            protocol: IpProtocol::UDP,
            payload_len: 8 + payload,
            ttl,
            dscp: 0,
            ecn: 0,
            ident: 1,
            dont_frag: df,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut f[ETH_LEN..])
        .unwrap();
        UdpRepr {
            src_port: 4000,
            dst_port: 5000,
        }
        .emit(&mut f[ETH_LEN + 20..], payload)
        .unwrap();
        let mut udp = strait_wire::UdpPacket::new_unchecked(&mut f[ETH_LEN + 20..]);
        udp.fill_checksum_v4(src, dst);
        f
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn forwards_via_gateway_with_ttl_decremented() {
        let t = tables();
        let mut p = pipeline();
        let mut f = Frame::new(&udp_frame(
            LAN_MAC,
            ip("10.0.1.2"),
            ip("198.51.100.7"),
            64,
            100,
            false,
        ));
        let v = f.run(&mut p, &t, 0);
        assert_eq!(
            v,
            Verdict::Forward {
                port: 1,
                neighbour: IpAddr::V4(ip("192.0.2.254"))
            }
        );
        // The window now starts at the IP header.
        let pkt = Ipv4Packet::new_checked(f.data()).unwrap();
        assert_eq!(pkt.ttl(), 63);
        assert!(pkt.verify_checksum());
        assert_eq!(f.start, HEADROOM + ETH_LEN);
        assert_eq!(p.counters[0].forwarded, 1);
    }

    #[test]
    fn connected_destination_is_its_own_next_hop_and_padding_is_trimmed() {
        let t = tables();
        let mut p = pipeline();
        let mut bytes = udp_frame(LAN_MAC, ip("10.0.1.2"), ip("192.0.2.9"), 64, 0, false);
        bytes.resize(60, 0); // Ethernet minimum-size padding
        let mut f = Frame::new(&bytes);
        assert_eq!(
            f.run(&mut p, &t, 0),
            Verdict::Forward {
                port: 1,
                neighbour: IpAddr::V4(ip("192.0.2.9"))
            }
        );
        assert_eq!(f.len, 28);
    }

    fn assert_icmp_error(
        f: &Frame,
        ty: Icmpv4Type,
        code: u8,
        from: Ipv4Addr,
        quoted_dst: Ipv4Addr,
    ) -> u16 {
        let data = f.data();
        assert_eq!(&data[0..6], &HOST_MAC, "back to the sender");
        let ipp = Ipv4Packet::new_checked(&data[ETH_LEN..]).unwrap();
        assert!(ipp.verify_checksum());
        assert_eq!(ipp.src_addr(), from);
        let icmp = Icmpv4Packet::new_checked(ipp.payload()).unwrap();
        assert_eq!(ipp.dst_addr(), icmp.invoking_packet().unwrap().src_addr());
        assert!(icmp.verify_checksum());
        assert_eq!((icmp.msg_type(), icmp.code()), (ty, code));
        assert_eq!(icmp.invoking_packet().unwrap().dst_addr(), quoted_dst);
        icmp.next_hop_mtu()
    }

    #[test]
    fn ttl_expiry_sends_time_exceeded_and_counts() {
        let t = tables();
        let mut p = pipeline();
        let mut f = Frame::new(&udp_frame(
            LAN_MAC,
            ip("10.0.1.2"),
            ip("198.51.100.7"),
            1,
            10,
            false,
        ));
        assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
        assert_icmp_error(
            &f,
            Icmpv4Type::TIME_EXCEEDED,
            0,
            ip("10.0.1.1"),
            ip("198.51.100.7"),
        );
        assert_eq!(p.counters[0].drops[DropReason::TtlExceeded as usize], 1);
        assert_eq!(p.counters[0].icmp_sent, 1);
    }

    #[test]
    fn unroutable_and_blackholed_destinations() {
        let t = tables();
        let mut p = pipeline();
        let mut f = Frame::new(&udp_frame(
            LAN_MAC,
            ip("10.0.1.2"),
            ip("8.8.8.8"),
            64,
            10,
            false,
        ));
        assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
        assert_icmp_error(
            &f,
            Icmpv4Type::DST_UNREACHABLE,
            0,
            ip("10.0.1.1"),
            ip("8.8.8.8"),
        );
        assert_eq!(p.counters[0].drops[DropReason::NoRoute as usize], 1);
        let mut f = Frame::new(&udp_frame(
            LAN_MAC,
            ip("10.0.1.2"),
            ip("203.0.113.1"),
            64,
            10,
            false,
        ));
        assert_eq!(f.run(&mut p, &t, 0), Verdict::Drop(DropReason::Blackhole));
    }

    #[test]
    fn oversized_with_df_gets_frag_needed_with_the_egress_mtu() {
        let t = tables();
        let mut p = pipeline();
        let mut f = Frame::new(&udp_frame(
            LAN_MAC,
            ip("10.0.1.2"),
            ip("198.51.100.7"),
            64,
            1450,
            true,
        ));
        assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
        let mtu = assert_icmp_error(
            &f,
            Icmpv4Type::DST_UNREACHABLE,
            4,
            ip("10.0.1.1"),
            ip("198.51.100.7"),
        );
        assert_eq!(mtu, 1400);
        assert_eq!(p.counters[0].drops[DropReason::Oversized as usize], 1);
        let mut f = Frame::new(&udp_frame(
            LAN_MAC,
            ip("10.0.1.2"),
            ip("198.51.100.7"),
            64,
            1450,
            false,
        ));
        // DF clear: the worker splits it for the egress MTU (RFC 1812 §4.2.2.7).
        assert_eq!(
            f.run(&mut p, &t, 0),
            Verdict::Fragment {
                mtu: 1400,
                target: FragmentTarget::Port {
                    port: 1,
                    neighbour: IpAddr::V4(ip("192.0.2.254"))
                }
            }
        );
        let inner = f.data().to_vec();
        let mut out = [0u8; 2048];
        let n0 = fragment_ipv4(&inner, 1400, 0, &mut out).unwrap();
        assert_eq!(n0, 20 + 1376);
        let first = Ipv4Packet::new_checked(&out[..n0]).unwrap();
        assert!(first.verify_checksum() && first.more_frags() && first.ttl() == 63);
        let n1 = fragment_ipv4(&inner, 1400, 1, &mut out).unwrap();
        let last = Ipv4Packet::new_checked(&out[..n1]).unwrap();
        assert_eq!((last.frag_offset(), last.more_frags()), (1376, false));
        assert_eq!(n0 - 20 + n1 - 20, inner.len() - 20);
        assert!(fragment_ipv4(&inner, 1400, 2, &mut out).is_none());
    }

    #[test]
    fn icmp_errors_are_rate_limited() {
        let t = tables();
        let mut p: Pipeline<u32> = Pipeline::new(2, 0, 2, Instant::now());
        let mut replies = 0;
        for _ in 0..5 {
            let mut f = Frame::new(&udp_frame(
                LAN_MAC,
                ip("10.0.1.2"),
                ip("8.8.8.8"),
                64,
                10,
                false,
            ));
            if f.run(&mut p, &t, 0) == Verdict::Reply {
                replies += 1;
            }
        }
        assert_eq!(replies, 2);
        assert_eq!(p.counters[0].drops[DropReason::IcmpRateLimited as usize], 3);
        assert_eq!(p.counters[0].drops[DropReason::NoRoute as usize], 5);
    }

    #[test]
    fn bad_input_is_dropped_with_named_reasons() {
        let t = tables();
        let mut p = pipeline();
        let good = udp_frame(LAN_MAC, ip("10.0.1.2"), ip("198.51.100.7"), 64, 10, false);
        let mut cases: Vec<(Vec<u8>, DropReason)> = Vec::new();
        cases.push((good[..10].to_vec(), DropReason::Truncated));
        cases.push((good[..ETH_LEN + 12].to_vec(), DropReason::Truncated));
        let mut bad_ck = good.clone();
        bad_ck[ETH_LEN + 10] ^= 0xff;
        cases.push((bad_ck, DropReason::BadChecksum));
        let mut ihl = good.clone();
        ihl[ETH_LEN] = 0x44;
        cases.push((ihl, DropReason::BadHeaderLength));
        let mut ver = good.clone();
        ver[ETH_LEN] = 0x65;
        cases.push((ver, DropReason::BadVersion));
        let mut long = good.clone();
        long[ETH_LEN + 2] = 0x05;
        cases.push((long, DropReason::BadTotalLength));
        let mut arp_type = good.clone();
        arp_type[12..14].copy_from_slice(&[0x88, 0xcc]);
        cases.push((arp_type, DropReason::NotIp));
        cases.push((
            udp_frame(LAN_MAC, ip("127.0.0.1"), ip("198.51.100.7"), 64, 10, false),
            DropReason::MartianSource,
        ));
        cases.push((
            udp_frame(LAN_MAC, ip("10.0.1.1"), ip("198.51.100.7"), 64, 10, false),
            DropReason::MartianSource,
        ));
        cases.push((
            udp_frame(
                [2, 9, 9, 9, 9, 9],
                ip("10.0.1.2"),
                ip("198.51.100.7"),
                64,
                10,
                false,
            ),
            DropReason::NotForUs,
        ));
        for (i, (bytes, reason)) in cases.into_iter().enumerate() {
            let mut f = Frame::new(&bytes);
            assert_eq!(f.run(&mut p, &t, 0), Verdict::Drop(reason), "case {i}");
            assert!(p.counters[0].drops[reason as usize] >= 1);
        }
    }

    #[test]
    fn answers_arp_for_our_address_and_learns_the_sender() {
        let t = tables();
        let mut p = pipeline();
        let mut req = [0u8; 60];
        write_eth(&mut req, [0xff; 6], HOST_MAC, EtherType::ARP);
        ArpRepr::request(EthernetAddress(HOST_MAC), ip("10.0.1.2"), ip("10.0.1.1"))
            .emit(&mut req[ETH_LEN..])
            .unwrap();
        let mut f = Frame::new(&req);
        assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
        let reply = ArpRepr::parse(&ArpPacket::new_checked(&f.data()[ETH_LEN..]).unwrap()).unwrap();
        assert_eq!(reply.operation, ArpOperation::REPLY);
        assert_eq!(reply.source_hardware_addr.0, LAN_MAC);
        assert_eq!(reply.source_protocol_addr, ip("10.0.1.1"));
        assert_eq!(&f.data()[0..6], &HOST_MAC);
        // The sender is now known: a packet to it resolves immediately.
        let key = (0, IpAddr::V4(ip("10.0.1.2")));
        assert_eq!(
            p.resolve(key, 1, Instant::now()),
            Resolution::Known {
                mac: HOST_MAC,
                probe: None,
                packet: 1
            }
        );
        // A request for someone else is learned from nothing and not answered.
        let mut other = req;
        ArpRepr::request(EthernetAddress(HOST_MAC), ip("10.0.1.3"), ip("10.0.1.77"))
            .emit(&mut other[ETH_LEN..])
            .unwrap();
        assert_eq!(Frame::new(&other).run(&mut p, &t, 0), Verdict::Consumed);
    }

    #[test]
    fn arp_reply_releases_held_packets() {
        let t = tables();
        let mut p = pipeline();
        let key = (0, IpAddr::V4(ip("10.0.1.2")));
        assert_eq!(
            p.resolve(key, 41, Instant::now()),
            Resolution::Queued { request: true }
        );
        let mut buf = [0u8; 64];
        let n = arp_request(&mut buf, &t.ports[0], ip("10.0.1.2"), None).unwrap();
        let req = ArpRepr::parse(&ArpPacket::new_checked(&buf[ETH_LEN..n]).unwrap()).unwrap();
        let mut reply = [0u8; 60];
        write_eth(&mut reply, LAN_MAC, HOST_MAC, EtherType::ARP);
        ArpRepr {
            operation: ArpOperation::REPLY,
            source_hardware_addr: EthernetAddress(HOST_MAC),
            source_protocol_addr: req.target_protocol_addr,
            target_hardware_addr: req.source_hardware_addr,
            target_protocol_addr: req.source_protocol_addr,
        }
        .emit(&mut reply[ETH_LEN..])
        .unwrap();
        assert_eq!(Frame::new(&reply).run(&mut p, &t, 0), Verdict::Punt);
        assert_eq!(p.released, [(key, 41)]);
    }

    #[test]
    fn answers_echo_requests_to_our_address() {
        let t = tables();
        let mut p = pipeline();
        let mut f = vec![0u8; ETH_LEN + 20 + 8 + 4];
        write_eth(&mut f, LAN_MAC, HOST_MAC, EtherType::IPV4);
        let icmp = strait_wire::Icmpv4Repr::EchoRequest {
            ident: 9,
            seq_no: 3,
            data: b"ping",
        };
        Ipv4Repr {
            src_addr: ip("10.0.1.2"),
            dst_addr: ip("10.0.1.1"),
            protocol: IpProtocol::ICMP,
            payload_len: icmp.buffer_len(),
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 1,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut f[ETH_LEN..])
        .unwrap();
        icmp.emit(&mut f[ETH_LEN + 20..]).unwrap();
        let mut fr = Frame::new(&f);
        assert_eq!(fr.run(&mut p, &t, 0), Verdict::Reply);
        let ipp = Ipv4Packet::new_checked(&fr.data()[ETH_LEN..]).unwrap();
        assert!(ipp.verify_checksum());
        assert_eq!(
            (ipp.src_addr(), ipp.dst_addr()),
            (ip("10.0.1.1"), ip("10.0.1.2"))
        );
        let reply = Icmpv4Packet::new_checked(ipp.payload()).unwrap();
        assert!(reply.verify_checksum());
        assert_eq!(reply.msg_type(), Icmpv4Type::ECHO_REPLY);
        assert_eq!(&fr.data()[0..6], &HOST_MAC);
        assert_eq!(&fr.data()[6..12], &LAN_MAC);
        // Anything else to our address goes to the host stack.
        let mut tcp = udp_frame(LAN_MAC, ip("10.0.1.2"), ip("10.0.1.1"), 64, 10, false);
        tcp[ETH_LEN + 9] = 6;
        Ipv4Packet::new_unchecked(&mut tcp[ETH_LEN..]).fill_checksum();
        assert_eq!(Frame::new(&tcp).run(&mut p, &t, 0), Verdict::Punt);
    }

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn v6_frame(
        dst_mac: [u8; 6],
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        icmp: &Icmpv6Repr<'_>,
    ) -> Vec<u8> {
        let mut f = vec![0u8; 1600];
        write_eth(&mut f, dst_mac, HOST_MAC, EtherType::IPV6);
        let n = emit_ipv6_icmp(&mut f[ETH_LEN..], src, dst, hop_limit, icmp).unwrap();
        f.truncate(ETH_LEN + n);
        f
    }

    #[test]
    fn ipv6_forwarding_hop_limit_and_neighbour_discovery() {
        let t = tables();
        let mut p = pipeline();
        let echo = Icmpv6Repr::EchoRequest {
            ident: 1,
            seq_no: 1,
            data: b"x",
        };
        let mut f = Frame::new(&v6_frame(
            LAN_MAC,
            v6("fd00:1::2"),
            v6("fd00:9::5"),
            64,
            &echo,
        ));
        assert_eq!(
            f.run(&mut p, &t, 0),
            Verdict::Forward {
                port: 1,
                neighbour: IpAddr::V6(v6("fd00:2::fe"))
            }
        );
        assert_eq!(Ipv6Packet::new_checked(f.data()).unwrap().hop_limit(), 63);

        let mut f = Frame::new(&v6_frame(
            LAN_MAC,
            v6("fd00:1::2"),
            v6("fd00:9::5"),
            1,
            &echo,
        ));
        assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
        let ipp = Ipv6Packet::new_checked(&f.data()[ETH_LEN..]).unwrap();
        let icmp = Icmpv6Packet::new_checked(ipp.payload()).unwrap();
        assert_eq!(icmp.msg_type(), Icmpv6Type::TIME_EXCEEDED);
        assert!(icmp.verify_checksum(ipp.src_addr(), ipp.dst_addr()));

        let mut f = Frame::new(&v6_frame(
            LAN_MAC,
            v6("fd00:1::2"),
            v6("fd00:1::1"),
            64,
            &echo,
        ));
        assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
        let ipp = Ipv6Packet::new_checked(&f.data()[ETH_LEN..]).unwrap();
        let icmp = Icmpv6Packet::new_checked(ipp.payload()).unwrap();
        assert_eq!(icmp.msg_type(), Icmpv6Type::ECHO_REPLY);
        assert!(icmp.verify_checksum(ipp.src_addr(), ipp.dst_addr()));

        let ns = Icmpv6Repr::NeighborSolicit {
            target: v6("fd00:1::1"),
            source_lladdr: Some(EthernetAddress(HOST_MAC)),
        };
        let mut f = Frame::new(&v6_frame(
            [0x33, 0x33, 0xff, 0, 0, 1],
            v6("fd00:1::2"),
            v6("ff02::1:ff00:1"),
            255,
            &ns,
        ));
        assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
        let ipp = Ipv6Packet::new_checked(&f.data()[ETH_LEN..]).unwrap();
        let icmp = Icmpv6Packet::new_checked(ipp.payload()).unwrap();
        match Icmpv6Repr::parse(&icmp, ipp.src_addr(), ipp.dst_addr()).unwrap() {
            Icmpv6Repr::NeighborAdvert {
                target,
                target_lladdr,
                flags,
            } => {
                assert_eq!(target, v6("fd00:1::1"));
                assert_eq!(target_lladdr, Some(EthernetAddress(LAN_MAC)));
                assert!(flags.solicited);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.counters[0].neighbour_replies, 1);
        // Our own solicitation for a next hop is well formed.
        let mut buf = [0u8; 128];
        let n = neighbour_solicitation(&mut buf, &t.ports[1], v6("fd00:2::fe"), None).unwrap();
        let ipp = Ipv6Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
        assert_eq!(ipp.dst_addr(), v6("ff02::1:ff00:fe"));
        let icmp = Icmpv6Packet::new_checked(ipp.payload()).unwrap();
        assert!(icmp.verify_checksum(ipp.src_addr(), ipp.dst_addr()));
    }

    const BRANCH: &str = r#"
[[interface]]
name = "lan"
addresses = ["10.1.0.1/24"]
[[interface]]
name = "wan"
addresses = ["192.0.2.1/24"]
[[route]]
prefix = "0.0.0.0/0"
via = ["192.0.2.254"]
[[tunnel]]
name = "hub"
local = "192.0.2.1"
remote = "198.51.100.1"
prefixes = ["10.2.0.0/16"]
outbound = { spi = 4097, cipher = "aes128-gcm", key = "000102030405060708090a0b0c0d0e0f10111213" }
inbound = { spi = 8194, cipher = "aes128-gcm", key = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff10111213" }
"#;

    const HUB: &str = r#"
[[interface]]
name = "lan"
addresses = ["10.2.0.1/24"]
[[interface]]
name = "wan"
addresses = ["198.51.100.1/24"]
[[route]]
prefix = "0.0.0.0/0"
via = ["198.51.100.254"]
[[tunnel]]
name = "branch"
local = "198.51.100.1"
remote = "192.0.2.1"
float = true
prefixes = ["10.1.0.0/16"]
outbound = { spi = 8194, cipher = "aes128-gcm", key = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff10111213" }
inbound = { spi = 4097, cipher = "aes128-gcm", key = "000102030405060708090a0b0c0d0e0f10111213" }
"#;

    fn site(text: &str) -> Tables {
        let c = Config::parse(text, "site.toml").unwrap();
        Tables::build(&c, "site.toml", 1, 3, None, |name| {
            Ok(KernelLink {
                ifindex: 2,
                mac: if name == "lan" { LAN_MAC } else { WAN_MAC },
                mtu: 1500,
            })
        })
        .unwrap()
    }

    /// Seals a LAN packet at the branch; returns the WAN frame (Ethernet
    /// to the hub) and the original inner packet.
    fn seal_at_branch(
        branch: &Tables,
        p: &mut Pipeline<u32>,
        payload: usize,
    ) -> (Vec<u8>, Vec<u8>) {
        let lan = udp_frame(LAN_MAC, ip("10.1.0.2"), ip("10.2.0.2"), 64, payload, false);
        let mut f = Frame::new(&lan);
        let v = f.run(p, branch, 0);
        assert_eq!(
            v,
            Verdict::Forward {
                port: 1,
                neighbour: IpAddr::V4(ip("192.0.2.254"))
            }
        );
        let outer = Ipv4Packet::new_checked(f.data()).unwrap();
        assert_eq!(
            (outer.src_addr(), outer.dst_addr()),
            (ip("192.0.2.1"), ip("198.51.100.1"))
        );
        assert!(outer.verify_checksum());
        assert!(outer.dont_frag());
        assert_eq!(outer.protocol(), IpProtocol::UDP);
        let udp = strait_wire::UdpPacket::new_checked(outer.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (4500, 4500));
        assert_eq!(udp.checksum(), 0, "RFC 3948 §3.1: zero UDP checksum");
        // No plaintext on the wire.
        assert!(
            !f.data()
                .windows(8)
                .any(|w| w == &lan[ETH_LEN + 28..ETH_LEN + 36])
                || payload == 0
        );
        let mut wire = vec![0u8; ETH_LEN];
        write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
        wire.extend_from_slice(f.data());
        (wire, lan[ETH_LEN..].to_vec())
    }

    #[test]
    fn branch_seals_and_hub_opens_the_same_packet() {
        let (branch, hub) = (site(BRANCH), site(HUB));
        let (mut pb, mut ph) = (pipeline(), pipeline());
        for i in 0..3 {
            let (wire, inner) = seal_at_branch(&branch, &mut pb, 100 + i);
            let mut f = Frame::new(&wire);
            assert_eq!(
                f.run(&mut ph, &hub, 1),
                Verdict::Forward {
                    port: 0,
                    neighbour: IpAddr::V4(ip("10.2.0.2"))
                }
            );
            let got = f.data();
            assert_eq!(got.len(), inner.len());
            // TTL went down once at each end; everything else is intact.
            assert_eq!(got[8], inner[8] - 2);
            assert_eq!(&got[12..], &inner[12..]);
            assert!(Ipv4Packet::new_checked(got).unwrap().verify_checksum());
        }
        assert_eq!(pb.counters[1].esp_sealed, 3);
        assert_eq!(ph.counters[1].esp_opened, 3);
    }

    #[test]
    fn tampered_and_replayed_esp_is_dropped_by_name() {
        let (branch, hub) = (site(BRANCH), site(HUB));
        let (mut pb, mut ph) = (pipeline(), pipeline());
        let (wire, _) = seal_at_branch(&branch, &mut pb, 64);
        // Flip one byte of the ciphertext.
        let mut bad = wire.clone();
        let at = bad.len() - 30;
        bad[at] ^= 1;
        assert_eq!(
            Frame::new(&bad).run(&mut ph, &hub, 1),
            Verdict::Drop(DropReason::EspAuthFailed)
        );
        // The genuine one still opens (the forgery did not move the window)…
        assert!(matches!(
            Frame::new(&wire).run(&mut ph, &hub, 1),
            Verdict::Forward { .. }
        ));
        // …once.
        assert_eq!(
            Frame::new(&wire).run(&mut ph, &hub, 1),
            Verdict::Drop(DropReason::EspReplay)
        );
        // Unknown SPI.
        let mut spi = wire.clone();
        spi[ETH_LEN + 28..ETH_LEN + 32].copy_from_slice(&[0, 0, 0x99, 0x99]);
        assert_eq!(
            Frame::new(&spi).run(&mut ph, &hub, 1),
            Verdict::Drop(DropReason::EspBadSpi)
        );
        assert_eq!(ph.counters[1].drops[DropReason::EspReplay as usize], 1);
    }

    #[test]
    fn tunnel_mtu_and_mss_clamping() {
        let branch = site(BRANCH);
        let mut pb = pipeline();
        let mtu = branch.tunnels[0].mtu;
        assert_eq!(mtu, 1500 - crate::tables::TUNNEL_OVERHEAD_UDP);
        let big = udp_frame(
            LAN_MAC,
            ip("10.1.0.2"),
            ip("10.2.0.2"),
            64,
            usize::from(mtu) - 27,
            true,
        );
        let mut f = Frame::new(&big);
        assert_eq!(f.run(&mut pb, &branch, 0), Verdict::Reply);
        let icmp_mtu = assert_icmp_error(
            &f,
            Icmpv4Type::DST_UNREACHABLE,
            4,
            ip("10.1.0.1"),
            ip("10.2.0.2"),
        );
        assert_eq!(icmp_mtu, mtu);
        // A SYN with MSS 1460 leaves clamped to fit the tunnel.
        let mut syn = vec![0u8; ETH_LEN + 20 + 24];
        write_eth(&mut syn, LAN_MAC, HOST_MAC, EtherType::IPV4);
        Ipv4Repr {
            src_addr: ip("10.1.0.2"),
            dst_addr: ip("10.2.0.2"),
            protocol: IpProtocol::TCP,
            payload_len: 24,
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 1,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut syn[ETH_LEN..])
        .unwrap();
        let tcp = &mut syn[ETH_LEN + 20..];
        tcp[0..4].copy_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        tcp[12] = 6 << 4;
        tcp[13] = 0x02; // SYN
        tcp[14..16].copy_from_slice(&[0xff, 0xff]);
        tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
        strait_wire::TcpPacket::new_checked(&mut syn[ETH_LEN + 20..])
            .unwrap()
            .fill_checksum_v4(ip("10.1.0.2"), ip("10.2.0.2"))
            .unwrap();
        let mut f = Frame::new(&syn);
        assert!(matches!(
            f.run(&mut pb, &branch, 0),
            Verdict::Forward { .. }
        ));
        // Open it at the hub to look at the clamped SYN.
        let hub = site(HUB);
        let mut ph = pipeline();
        let mut wire = vec![0u8; ETH_LEN];
        write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
        wire.extend_from_slice(f.data());
        let mut g = Frame::new(&wire);
        assert!(matches!(g.run(&mut ph, &hub, 1), Verdict::Forward { .. }));
        let inner = Ipv4Packet::new_checked(g.data()).unwrap();
        let seg = strait_wire::TcpPacket::new_checked(inner.payload()).unwrap();
        assert_eq!(seg.mss(), branch.tunnels[0].mss);
        assert!(seg.verify_checksum_v4(inner.src_addr(), inner.dst_addr()));
    }

    #[test]
    fn echo_to_the_hub_through_the_tunnel_is_answered_through_the_tunnel() {
        let (branch, hub) = (site(BRANCH), site(HUB));
        let (mut pb, mut ph) = (pipeline(), pipeline());
        let mut f = vec![0u8; ETH_LEN + 20 + 8 + 4];
        write_eth(&mut f, LAN_MAC, HOST_MAC, EtherType::IPV4);
        let icmp = strait_wire::Icmpv4Repr::EchoRequest {
            ident: 9,
            seq_no: 3,
            data: b"ping",
        };
        Ipv4Repr {
            src_addr: ip("10.1.0.2"),
            dst_addr: ip("10.2.0.1"),
            protocol: IpProtocol::ICMP,
            payload_len: icmp.buffer_len(),
            ttl: 64,
            dscp: 0,
            ecn: 0,
            ident: 1,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut f[ETH_LEN..])
        .unwrap();
        icmp.emit(&mut f[ETH_LEN + 20..]).unwrap();
        let mut fr = Frame::new(&f);
        assert!(matches!(
            fr.run(&mut pb, &branch, 0),
            Verdict::Forward { port: 1, .. }
        ));
        let mut wire = vec![0u8; ETH_LEN];
        write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
        wire.extend_from_slice(fr.data());
        let mut at_hub = Frame::new(&wire);
        // The reply leaves by the WAN, sealed, towards the branch.
        assert_eq!(
            at_hub.run(&mut ph, &hub, 1),
            Verdict::Forward {
                port: 1,
                neighbour: IpAddr::V4(ip("198.51.100.254"))
            }
        );
        let outer = Ipv4Packet::new_checked(at_hub.data()).unwrap();
        assert_eq!(outer.dst_addr(), ip("192.0.2.1"));
        assert_eq!(ph.counters[1].esp_sealed, 1);
    }

    // ---------------------------------------------------------------- NAT

    const NAT_SITE: &str = r#"
[[interface]]
name = "lan"
addresses = ["10.0.1.1/24"]
[[interface]]
name = "wan"
addresses = ["192.0.2.1/24"]
[[route]]
prefix = "0.0.0.0/0"
via = ["192.0.2.254"]
[[nat]]
name = "lan-out"
kind = "masquerade"
source = "10.0.1.0/24"
out_interface = "wan"
ports = "20000-29999"
[[nat]]
name = "web"
kind = "dnat"
protocol = "udp"
public = "192.0.2.1:8080"
backends = ["10.0.1.80:80"]
"#;

    /// A UDP frame `src:sport -> dst:dport` with a valid checksum.
    fn udp_between(
        dst_mac: [u8; 6],
        (src, sport): (Ipv4Addr, u16),
        (dst, dport): (Ipv4Addr, u16),
        ttl: u8,
    ) -> Vec<u8> {
        let mut f = udp_frame(dst_mac, src, dst, ttl, 16, false);
        let mut udp = strait_wire::UdpPacket::new_unchecked(&mut f[ETH_LEN + 20..]);
        udp.set_src_port(sport);
        udp.set_dst_port(dport);
        udp.fill_checksum_v4(src, dst);
        f
    }

    /// Source and destination (address, port) of the UDP packet in the
    /// window, after checking both checksums.
    fn udp_tuple(l3: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
        let ip = Ipv4Packet::new_checked(l3).unwrap();
        assert!(ip.verify_checksum());
        let udp = strait_wire::UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
        (
            (ip.src_addr(), udp.src_port()),
            (ip.dst_addr(), udp.dst_port()),
        )
    }

    fn nat_site(text: &str, previous: Option<&Tables>, generation: u64) -> Tables {
        let c = Config::parse(text, "nat.toml").unwrap();
        Tables::build(&c, "nat.toml", generation, 3, previous, |name| {
            Ok(KernelLink {
                ifindex: 2,
                mac: if name == "lan" { LAN_MAC } else { WAN_MAC },
                mtu: 1500,
            })
        })
        .unwrap()
    }

    #[test]
    fn reply_to_the_masquerade_address_is_translated_not_punted() {
        let t = nat_site(NAT_SITE, None, 1);
        let mut p = pipeline();
        let client = (ip("10.0.1.2"), 4000);
        let server = (ip("198.51.100.7"), 53);
        let mut out = Frame::new(&udp_between(LAN_MAC, client, server, 64));
        assert_eq!(
            out.run(&mut p, &t, 0),
            Verdict::Forward {
                port: 1,
                neighbour: IpAddr::V4(ip("192.0.2.254"))
            }
        );
        let (src, dst) = udp_tuple(out.data());
        assert_eq!(src.0, ip("192.0.2.1"), "masqueraded to the WAN address");
        assert!(
            (20000..=29999).contains(&src.1),
            "port from the rule's range"
        );
        assert_eq!(dst, server);
        assert_eq!(Ipv4Packet::new_checked(out.data()).unwrap().ttl(), 63);

        // The answer is addressed to our own WAN address: NAT runs before
        // the route lookup, so it goes to the client instead of the host.
        let mut back = Frame::new(&udp_between(WAN_MAC, server, src, 64));
        assert_eq!(
            back.run(&mut p, &t, 1),
            Verdict::Forward {
                port: 0,
                neighbour: IpAddr::V4(client.0)
            }
        );
        assert_eq!(udp_tuple(back.data()), (server, client));

        // Without a session, traffic to that address is the host's.
        let mut other = Frame::new(&udp_between(WAN_MAC, server, (src.0, 22), 64));
        assert_eq!(other.run(&mut p, &t, 1), Verdict::Punt);
        // ...and another host may not use the client's mapping
        // (address-dependent filtering, RFC 4787 REQ-8).
        let stranger = (ip("198.51.100.99"), 53);
        let mut probe = Frame::new(&udp_between(WAN_MAC, stranger, src, 64));
        assert_eq!(
            probe.run(&mut p, &t, 1),
            Verdict::Drop(DropReason::NatFiltered)
        );
        assert_eq!(p.counters[1].drops[DropReason::NatFiltered as usize], 1);
        assert_eq!(p.nat().worker().unwrap().session_count(), 1);
    }

    #[test]
    fn dnat_port_forward_and_hairpin() {
        let t = nat_site(NAT_SITE, None, 1);
        let mut p = pipeline();
        let remote = (ip("198.51.100.7"), 40000);
        let public = (ip("192.0.2.1"), 8080);
        let backend = (ip("10.0.1.80"), 80);
        let mut f = Frame::new(&udp_between(WAN_MAC, remote, public, 64));
        assert_eq!(
            f.run(&mut p, &t, 1),
            Verdict::Forward {
                port: 0,
                neighbour: IpAddr::V4(backend.0)
            }
        );
        assert_eq!(udp_tuple(f.data()), (remote, backend));
        // The backend's answer leaves from the public endpoint.
        let mut r = Frame::new(&udp_between(LAN_MAC, backend, remote, 64));
        assert!(matches!(
            r.run(&mut p, &t, 0),
            Verdict::Forward { port: 1, .. }
        ));
        assert_eq!(udp_tuple(r.data()), (public, remote));

        // An inside client using the public endpoint is hairpinned: it
        // reaches the backend from the masquerade address, and the backend
        // answers through us.
        let client = (ip("10.0.1.2"), 5555);
        let mut h = Frame::new(&udp_between(LAN_MAC, client, public, 64));
        assert_eq!(
            h.run(&mut p, &t, 0),
            Verdict::Forward {
                port: 0,
                neighbour: IpAddr::V4(backend.0)
            }
        );
        let (src, dst) = udp_tuple(h.data());
        assert_eq!((src.0, dst), (ip("192.0.2.1"), backend));
        let mut hr = Frame::new(&udp_between(LAN_MAC, backend, src, 64));
        assert_eq!(
            hr.run(&mut p, &t, 0),
            Verdict::Forward {
                port: 0,
                neighbour: IpAddr::V4(client.0)
            }
        );
        assert_eq!(udp_tuple(hr.data()), (public, client));
    }

    #[test]
    fn expiring_ttl_is_answered_before_translation() {
        let t = nat_site(NAT_SITE, None, 1);
        let mut p = pipeline();
        let mut f = Frame::new(&udp_between(
            LAN_MAC,
            (ip("10.0.1.2"), 4000),
            (ip("198.51.100.7"), 33434),
            1,
        ));
        assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
        // The error quotes the packet as the client sent it, from our LAN
        // address (what traceroute shows), and no session was opened.
        assert_icmp_error(
            &f,
            Icmpv4Type::TIME_EXCEEDED,
            0,
            ip("10.0.1.1"),
            ip("198.51.100.7"),
        );
        assert_eq!(p.nat().worker().unwrap().session_count(), 0);
    }

    #[test]
    fn sessions_survive_a_rule_reload() {
        let t1 = nat_site(NAT_SITE, None, 1);
        let mut p = pipeline();
        let client = (ip("10.0.1.2"), 4000);
        let server = (ip("198.51.100.7"), 53);
        let mut out = Frame::new(&udp_between(LAN_MAC, client, server, 64));
        assert!(matches!(out.run(&mut p, &t1, 0), Verdict::Forward { .. }));
        let (src, _) = udp_tuple(out.data());
        // New snapshot: the DNAT rule is gone, the masquerade rule kept.
        let text = NAT_SITE.split("[[nat]]\nname = \"web\"").next().unwrap();
        let t2 = nat_site(text, Some(&t1), 2);
        assert_eq!(t2.nat.infos.len(), 1);
        assert_eq!(t2.nat.infos[0].id, t1.nat.infos[0].id, "ids follow names");
        let mut back = Frame::new(&udp_between(WAN_MAC, server, src, 64));
        assert!(matches!(
            back.run(&mut p, &t2, 1),
            Verdict::Forward { port: 0, .. }
        ));
        assert_eq!(udp_tuple(back.data()), (server, client));
        // The removed DNAT no longer forwards.
        let mut d = Frame::new(&udp_between(WAN_MAC, server, (ip("192.0.2.1"), 8080), 64));
        assert_eq!(d.run(&mut p, &t2, 1), Verdict::Punt);
    }

    #[test]
    fn snat_happens_before_encapsulation_and_replies_are_untranslated_after_decapsulation() {
        let branch_text = format!(
            "{BRANCH}[[nat]]\nname = \"into-tunnel\"\nkind = \"snat\"\nsource = \"10.1.0.0/24\"\n\
             out_interface = \"hub\"\naddresses = [\"10.1.255.1\"]\n"
        );
        let branch = site(&branch_text);
        let hub = site(HUB);
        let (mut pb, mut ph) = (pipeline(), pipeline());
        let client = (ip("10.1.0.2"), 4000);
        let server = (ip("10.2.0.2"), 7);
        let mut f = Frame::new(&udp_between(LAN_MAC, client, server, 64));
        assert!(matches!(
            f.run(&mut pb, &branch, 0),
            Verdict::Forward { port: 1, .. }
        ));
        assert_eq!(pb.counters[1].esp_sealed, 1);
        // The hub opens it and sees the pool address inside.
        let mut wire = vec![0u8; ETH_LEN];
        write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
        wire.extend_from_slice(f.data());
        let mut at_hub = Frame::new(&wire);
        assert_eq!(
            at_hub.run(&mut ph, &hub, 1),
            Verdict::Forward {
                port: 0,
                neighbour: IpAddr::V4(server.0)
            }
        );
        let (src, dst) = udp_tuple(at_hub.data());
        assert_eq!((src.0, dst), (ip("10.1.255.1"), server));
        // The answer goes back through the tunnel; the branch opens it
        // and translates the inner packet back to the client.
        let mut answer = Frame::new(&udp_between(LAN_MAC, server, src, 64));
        assert!(matches!(
            answer.run(&mut ph, &hub, 0),
            Verdict::Forward { port: 1, .. }
        ));
        let mut wire = vec![0u8; ETH_LEN];
        write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
        wire.extend_from_slice(answer.data());
        let mut home = Frame::new(&wire);
        assert_eq!(
            home.run(&mut pb, &branch, 1),
            Verdict::Forward {
                port: 0,
                neighbour: IpAddr::V4(client.0)
            }
        );
        assert_eq!(udp_tuple(home.data()), (server, client));
        let nat = pb.nat().worker().unwrap().counters();
        assert_eq!((nat.translated_outbound, nat.translated_inbound), (1, 1));
    }

    #[test]
    fn lossless_rekey_install_inbound_switch_outbound_retire() {
        use crate::config::{RekeyStep, SaEntryConfig, Secret};
        let new_sa = SaEntryConfig {
            spi: 5001,
            cipher: "aes256-gcm".into(),
            key: Secret("11".repeat(36)),
            esn: true,
            replay_window: None,
            soft_seconds: 0,
            hard_seconds: 0,
            soft_bytes: 0,
            hard_bytes: 0,
        };
        let build = |c: &Config, prev: Option<&Tables>, g: u64| {
            Tables::build(c, "site.toml", g, 3, prev, |name| {
                Ok(KernelLink {
                    ifindex: 2,
                    mac: if name == "lan" { LAN_MAC } else { WAN_MAC },
                    mtu: 1500,
                })
            })
            .unwrap()
        };
        let hub_c = Config::parse(HUB, "hub.toml").unwrap();
        let branch_c = Config::parse(BRANCH, "branch.toml").unwrap();
        let hub1 = build(&hub_c, None, 1);
        let branch1 = build(&branch_c, None, 1);
        let (mut pb, mut ph) = (pipeline(), pipeline());
        let opens =
            |ph: &mut Pipeline<u32>, hub: &Tables, wire: &[u8]| Frame::new(wire).run(ph, hub, 1);

        let (old1, _) = seal_at_branch(&branch1, &mut pb, 10);
        assert!(matches!(
            opens(&mut ph, &hub1, &old1),
            Verdict::Forward { .. }
        ));

        // 1. The hub installs the new inbound SA next to the old one.
        let hub_c2 = hub_c
            .with_rekey("branch", RekeyStep::InstallInbound(new_sa.clone()))
            .unwrap();
        let hub2 = build(&hub_c2, Some(&hub1), 2);
        assert!(Arc::ptr_eq(
            &hub1.tunnels[0].in_specs[0],
            &hub2.tunnels[0].in_specs[0]
        ));
        let (old2, _) = seal_at_branch(&branch1, &mut pb, 11);
        assert!(matches!(
            opens(&mut ph, &hub2, &old2),
            Verdict::Forward { .. }
        ));
        // The replay window survived the swap.
        assert_eq!(
            opens(&mut ph, &hub2, &old1),
            Verdict::Drop(DropReason::EspReplay)
        );

        // 2. The branch switches outbound; its old outbound sequence is gone.
        let branch_c2 = branch_c
            .with_rekey("hub", RekeyStep::SwitchOutbound(new_sa.clone()))
            .unwrap();
        let branch2 = build(&branch_c2, Some(&branch1), 2);
        assert!(!Arc::ptr_eq(
            &branch1.tunnels[0].out_sa,
            &branch2.tunnels[0].out_sa
        ));
        let (new1, _) = seal_at_branch(&branch2, &mut pb, 12);
        assert_eq!(&new1[ETH_LEN + 28..ETH_LEN + 32], &5001u32.to_be_bytes());
        assert!(matches!(
            opens(&mut ph, &hub2, &new1),
            Verdict::Forward { .. }
        ));
        // A late packet under the old SA still opens during the overlap.
        let (late, _) = seal_at_branch(&branch1, &mut pb, 13);
        assert!(matches!(
            opens(&mut ph, &hub2, &late),
            Verdict::Forward { .. }
        ));

        // 3. The hub retires the old inbound SA.
        let hub_c3 = hub_c2
            .with_rekey("branch", RekeyStep::RetireInbound(4097))
            .unwrap();
        assert_eq!(hub_c3.tunnels[0].inbound.spi, 5001);
        let hub3 = build(&hub_c3, Some(&hub2), 3);
        let (new2, _) = seal_at_branch(&branch2, &mut pb, 14);
        assert!(matches!(
            opens(&mut ph, &hub3, &new2),
            Verdict::Forward { .. }
        ));
        let (stale, _) = seal_at_branch(&branch1, &mut pb, 15);
        assert_eq!(
            opens(&mut ph, &hub3, &stale),
            Verdict::Drop(DropReason::EspBadSpi)
        );

        // Refused steps name the reason.
        assert!(hub_c3
            .with_rekey("branch", RekeyStep::RetireInbound(5001))
            .unwrap_err()
            .contains("only inbound SA"));
        assert!(hub_c3
            .with_rekey("nope", RekeyStep::RetireInbound(1))
            .unwrap_err()
            .contains("no tunnel"));
        assert!(hub_c2
            .with_rekey("branch", RekeyStep::InstallInbound(new_sa))
            .unwrap_err()
            .contains("already installed"));
    }

    #[test]
    fn oversized_packets_without_df_are_fragmented_before_sealing() {
        let (branch, hub) = (site(BRANCH), site(HUB));
        let (mut pb, mut ph) = (pipeline(), pipeline());
        let mtu = usize::from(branch.tunnels[0].mtu);
        let payload = mtu + 300;
        let lan = udp_frame(LAN_MAC, ip("10.1.0.2"), ip("10.2.0.2"), 64, payload, false);
        let mut f = Frame::new(&lan);
        assert_eq!(
            f.run(&mut pb, &branch, 0),
            Verdict::Fragment {
                mtu: branch.tunnels[0].mtu,
                target: FragmentTarget::Tunnel { tunnel: 0 }
            }
        );
        let inner = f.data().to_vec();
        let (per, count) = fragment_plan(20, inner.len(), mtu).unwrap();
        assert_eq!(count, 2);
        let mut reassembled = vec![0u8; inner.len() - 20];
        let mut seen = 0;
        for index in 0..count {
            let mut buf = vec![0u8; 2048];
            let n = fragment_ipv4(&inner, mtu, index, &mut buf[HEADROOM..]).unwrap();
            assert!(n <= mtu);
            let mut fr = Frame {
                buf,
                start: HEADROOM,
                len: n,
            };
            let mut pkt = PacketBuf::new(&mut fr.buf, fr.start, fr.len);
            let v = pb.tunnel_output(&branch, 0, &mut pkt, Instant::now());
            assert!(matches!(v, Verdict::Forward { port: 1, .. }), "{v:?}");
            let (s0, l0) = (pkt.start(), pkt.len());
            // Carry the sealed fragment to the hub.
            let mut wire = vec![0u8; ETH_LEN];
            write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
            wire.extend_from_slice(&fr.buf[s0..s0 + l0]);
            let mut at_hub = Frame::new(&wire);
            assert!(matches!(
                at_hub.run(&mut ph, &hub, 1),
                Verdict::Forward { port: 0, .. }
            ));
            let frag = Ipv4Packet::new_checked(at_hub.data()).unwrap();
            assert!(frag.verify_checksum());
            assert_eq!(frag.more_frags(), index + 1 < count);
            let off = usize::from(frag.frag_offset());
            assert_eq!(off, index * per);
            reassembled[off..off + frag.payload().len()].copy_from_slice(frag.payload());
            seen += frag.payload().len();
        }
        assert_eq!(seen, inner.len() - 20);
        assert_eq!(
            &reassembled[..],
            &inner[20..],
            "the final host reassembles the original"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let t = tables();
        let mut p = pipeline();
        // xorshift: deterministic, no extra dependency.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = [
            udp_frame(LAN_MAC, ip("10.0.1.2"), ip("198.51.100.7"), 64, 10, false),
            udp_frame(LAN_MAC, ip("10.0.1.2"), ip("8.8.8.8"), 1, 10, false),
        ];
        for i in 0..20_000 {
            let mut bytes = seeds[i % 2].clone();
            let len = (next() % 80) as usize;
            bytes.truncate(len.max(1));
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            let mut f = Frame::new(&bytes);
            let _ = f.run(&mut p, &t, (i % 3) as u16);
        }
    }
}
