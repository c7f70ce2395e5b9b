//! The per-packet path of one worker, sans-I/O: a frame goes in, a
//! [`Verdict`] comes out, and the frame may have been rewritten in place.
//!
//! One file per stage, the way VPP has one node per file. Each stage looks
//! at the packet, may rewrite it, and returns where it goes next
//! ([`Next`]); [`Pipeline::run`] is the whole graph in one match. What the
//! stages learn about a packet travels with it in one [`Ctx`].
//!
//! | stage | file | decides |
//! |---|---|---|
//! | L2 | `l2.rs` | our MAC? which EtherType? |
//! | ARP/NDP | `neighbour.rs` | answer, learn, release held packets |
//! | IPv4 / IPv6 checks | `ipv4.rs`, `ipv6.rs` | RFC 1812 §5.2.2 validation, martians |
//! | NAT in / out | `nat.rs` | un-SNAT, DNAT, SNAT, hairpin |
//! | route + egress | `route.rs` | lookup, TTL, MTU, MSS, forward or seal |
//! | local delivery | `local.rs` | echo, host stack, ESP to us |
//! | ESP in / out | `esp_in.rs`, `esp_out.rs` | open and decapsulate, seal and route the outer packet |
//! | ICMP errors | `icmp.rs` | which error, rate limit, NAT of the quote |
//! | fragmentation | `fragment.rs` | how an IPv4 packet is split |
//!
//! Every drop is counted under a named [`DropReason`] (owned by its stage)
//! on the ingress port.

mod esp_in;
mod esp_out;
mod fragment;
mod icmp;
mod ipv4;
mod ipv6;
mod l2;
mod local;
mod nat;
mod neighbour;
mod reply;
mod route;
mod sa;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::time::Instant;

use strait_wire::{EgressId, Error as WireError, IpProtocol};

use crate::counters::{DropReason, PortCounters};
use crate::neigh::{NeighbourConfig, NeighbourKey, NeighbourTable, Resolution, TimerAction};
use crate::packet::PacketBuf;
use crate::ratelimit::TokenBucket;
use crate::tables::{Port, Tables, Tunnel};

pub use fragment::{fragment_ipv4, fragment_plan};
pub use l2::{write_eth, ETH_LEN};
pub use nat::NatStage;
pub use neighbour::{arp_request, neighbour_solicitation};

use icmp::IcmpError;
use route::Hop;
use sa::EspState;

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
    /// An IPv4 UDP datagram for one of the control plane's protocols
    /// (IKE) addressed to us: hand it to the engine's owner
    /// (`services.rs`).
    Service,
    /// The window holds an IPv4 packet (TTL already decremented, DF clear)
    /// bigger than its egress MTU: split it with [`fragment_ipv4`] and send
    /// each fragment on.
    Fragment(FragmentPlan),
    /// Dropped and counted.
    Drop(DropReason),
}

/// How the worker fragments a [`Verdict::Fragment`] packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentPlan {
    /// MTU of the egress.
    pub mtu: u16,
    /// Where the fragments go.
    pub target: FragmentTarget,
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

/// Where a packet goes next: what every stage returns.
#[derive(Debug, Clone, Copy)]
enum Next<'t> {
    /// Ethernet classification (again, after decapsulation).
    L2,
    /// ARP.
    Arp,
    /// IPv4 header checks.
    Ipv4,
    /// IPv6 header checks (and NDP).
    Ipv6,
    /// NAT before routing (un-SNAT, DNAT, hairpin detection).
    NatIn,
    /// Route lookup.
    Route,
    /// Addressed to this box.
    Local,
    /// ESP or NAT-T to one of our tunnel endpoints.
    EspIn,
    /// For the host: echo answered here, the rest punted.
    Host,
    /// Routed out of `Hop`: TTL and MTU checks.
    Egress(Hop<'t>),
    /// NAT after routing, with the chosen egress.
    NatOut(Hop<'t>),
    /// TTL decrement, MSS clamp, then forward, fragment or seal.
    Transmit(Hop<'t>),
    /// Sealed into a tunnel.
    Seal(&'t Tunnel),
    /// A packet Strait built (an answer to a tunnelled packet): routed.
    Output,
    /// Answered with an ICMP error; the packet is dropped for the reason.
    IcmpError(IcmpError, DropReason),
    /// That error, about a packet NAT translated inbound, translated back
    /// (RFC 5508 REQ-5).
    NatError,
    /// The end of the path.
    Done(Verdict),
}

/// Whether, and how, NAT already rewrote a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NatDone {
    /// Not translated (yet).
    No,
    /// Translated before routing (un-SNAT, DNAT, static, hairpin as seen
    /// inbound): the outbound stage does not run again, and ICMP errors
    /// about it go through NAT (RFC 5508 REQ-5).
    Inbound,
    /// The destination translated before routing by a full-NAT rule: the
    /// outbound stage still runs, to translate the source at the egress
    /// towards the backend; ICMP errors about it go through NAT like
    /// [`NatDone::Inbound`]'s.
    FullNat,
    /// Hairpinned at the outbound stage (both ends rewritten) and routed
    /// again: ICMP errors about it are suppressed, since their quote would
    /// name the translated endpoints.
    Hairpin,
}

/// The IP header facts the stages after the checks need.
#[derive(Debug, Clone, Copy)]
struct IpMeta {
    src: IpAddr,
    dst: IpAddr,
    /// TTL or hop limit.
    ttl: u8,
    /// IPv4 total length / IPv6 header plus payload.
    total: usize,
    dont_frag: bool,
    /// IPv4 protocol / IPv6 next header.
    proto: IpProtocol,
    /// ECMP flow hash.
    hash: u32,
}

impl IpMeta {
    const NONE: IpMeta = IpMeta {
        src: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        ttl: 0,
        total: 0,
        dont_frag: false,
        proto: IpProtocol(0),
        hash: 0,
    };
}

/// What the stages know about one packet as it goes.
#[derive(Debug)]
struct Ctx<'t> {
    /// The ingress port.
    port: &'t Port,
    /// Offset of the L3 header in the window.
    l3: usize,
    /// Filled by the IPv4/IPv6 checks.
    ip: IpMeta,
    /// The FIB egress id of the tunnel the packet came out of (NAT tells
    /// inside from outside by it).
    decap: Option<EgressId>,
    /// What NAT did so far.
    nat: NatDone,
}

impl<'t> Ctx<'t> {
    /// The frame (an answer built in the window, Ethernet back to the
    /// sender) goes back where the packet came from. An answer to a
    /// packet from a tunnel is routed instead, so it goes back through the
    /// tunnel encrypted.
    fn reply(&self, pkt: &mut PacketBuf<'_>) -> Next<'t> {
        if self.decap.is_some() {
            pkt.pull_front(ETH_LEN);
            Next::Output
        } else {
            Next::Done(Verdict::Reply)
        }
    }

    /// The frame goes to the host stack, by the TAP of the port it (or,
    /// from a tunnel, its ESP) arrived on. What the host answers to a
    /// packet from a tunnel goes back into the tunnel sealed:
    /// [`Pipeline::host_output`] routes every frame the host sends.
    fn punt(&self) -> Next<'t> {
        Next::Done(Verdict::Punt)
    }

    /// The FIB egress id the packet arrived by: its port or its tunnel.
    fn arrived_by(&self) -> EgressId {
        self.decap.unwrap_or(EgressId(self.port.id))
    }
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
    /// The `[icmp]` rate and burst the bucket was built with.
    icmp_limit: (u32, u32),
    /// Room to build generated packets (ICMP errors, NDP answers) before
    /// they replace the frame.
    scratch: Box<[u8; 1600]>,
    /// This worker's ESP state.
    esp: EspState,
    /// This worker's NAT translator.
    nat: NatStage,
}

/// Maps a header parse error onto its drop reason; `other` for the
/// errors that are not about lengths, versions or checksums.
fn wire_drop(e: WireError, other: DropReason) -> DropReason {
    match e {
        WireError::Truncated { .. } => DropReason::Truncated,
        WireError::BadVersion { .. } => DropReason::BadVersion,
        WireError::BadHeaderLength { .. } => DropReason::BadHeaderLength,
        WireError::BadTotalLength { .. } => DropReason::BadTotalLength,
        WireError::BadChecksum { .. } => DropReason::BadChecksum,
        _ => other,
    }
}

impl<P> Pipeline<P> {
    /// State for a worker serving `ports` ports.
    pub fn new(ports: usize, icmp_rate: u32, icmp_burst: u32, now: Instant) -> Pipeline<P> {
        Pipeline {
            neighbours: NeighbourTable::new(NeighbourConfig::default()),
            counters: vec![PortCounters::default(); ports],
            released: Vec::with_capacity(crate::neigh::PENDING_PER_NEIGHBOUR * 4),
            icmp_bucket: TokenBucket::new(icmp_rate, icmp_burst, now),
            icmp_limit: (icmp_rate, icmp_burst),
            scratch: Box::new([0; 1600]),
            esp: EspState::default(),
            nat: NatStage::default(),
        }
    }

    /// Applies `[icmp]` limits from a new snapshot (a reload); the bucket
    /// starts full again only when they changed.
    pub fn set_icmp_limit(&mut self, rate: u32, burst: u32, now: Instant) {
        if self.icmp_limit != (rate, burst) {
            self.icmp_limit = (rate, burst);
            self.icmp_bucket = TokenBucket::new(rate, burst, now);
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
        self.esp.sync(t);
        self.nat.sync(t);
        let verdict = match t.ports.get(usize::from(ingress)) {
            Some(port) => {
                let cx = Ctx {
                    port,
                    l3: 0,
                    ip: IpMeta::NONE,
                    decap: None,
                    nat: NatDone::No,
                };
                self.run(t, pkt, cx, Next::L2, now)
            }
            None => Verdict::Drop(DropReason::Malformed),
        };
        if let Verdict::Drop(reason) = verdict {
            self.count_drop(ingress, reason);
        }
        verdict
    }

    /// The graph: each stage says where the packet goes next.
    fn run<'t>(
        &mut self,
        t: &'t Tables,
        pkt: &mut PacketBuf<'_>,
        mut cx: Ctx<'t>,
        mut next: Next<'t>,
        now: Instant,
    ) -> Verdict {
        loop {
            next = match next {
                Next::L2 => l2::classify(&mut cx, pkt),
                Next::Arp => neighbour::arp(self, &cx, pkt, now),
                Next::Ipv4 => ipv4::check(t, &mut cx, pkt),
                Next::Ipv6 => ipv6::check(self, t, &mut cx, pkt, now),
                Next::NatIn => nat::inbound(self, t, &mut cx, pkt, now),
                Next::Route => route::lookup(t, &cx),
                Next::Local => local::deliver(t, &cx, pkt),
                Next::EspIn => esp_in::open(self, t, &mut cx, pkt, now),
                Next::Host => local::host(self, t, &cx, pkt),
                Next::Egress(hop) => route::egress(t, &cx, hop),
                Next::NatOut(hop) => nat::outbound(self, t, &mut cx, pkt, hop, now),
                Next::Transmit(hop) => route::transmit(self, &cx, pkt, hop),
                Next::Seal(tun) => esp_out::seal(self, t, tun, pkt, now),
                Next::Output => route::output(t, pkt),
                Next::IcmpError(error, reason) => icmp::error(self, &cx, pkt, error, reason, now),
                Next::NatError => nat::translate_error(self, t, &cx, pkt, now),
                Next::Done(verdict) => return verdict,
            };
        }
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
        self.esp.sync(t);
        match t.tunnels.get(usize::from(tunnel)) {
            Some(tun) => match esp_out::seal(self, t, tun, pkt, now) {
                Next::Done(v) => v,
                _ => Verdict::Drop(DropReason::EspSealFailed),
            },
            None => Verdict::Drop(DropReason::NoEgress),
        }
    }

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
