//! NAT in the data path: the two stages that call the worker's translator
//! (`strait-nat`'s sans-I/O [`NatWorker`], which rewrites IPv4 packets in
//! place) and decide *when* (see `docs/ARCHITECTURE.md`, data path):
//!
//! * inbound, before the route lookup, for packets addressed to an address
//!   NAT may answer for (interface, pool, static or DNAT address): replies
//!   to a masquerade address would otherwise be taken as local;
//! * outbound, after the route lookup and the TTL/MTU checks, with the
//!   egress (interface or tunnel) the route chose, before the TTL is
//!   decremented and before ESP encapsulation;
//! * a packet translated inbound skips the outbound stage, so no packet is
//!   translated twice; packets decapsulated from a tunnel run through the
//!   same two stages as any other.
//!
//! The rules come from the table snapshot (`tables/nat.rs` compiles them);
//! the sessions belong to this worker and survive snapshot swaps.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use strait_fib::Disposition;
use strait_nat::{Egress, EgressId, NatCounters, NatWorker, Verdict as NatVerdict};
use strait_wire::{IpProtocol, Ipv4Packet};

use super::icmp::{self, IcmpError};
use super::l2::ETH_LEN;
use super::reply;
use super::route::Hop;
use super::{ipv4, Ctx, NatDone, Next, Pipeline, Verdict};
use crate::counters::DropReason;
use crate::packet::PacketBuf;
use crate::status::{NatStatus, SNAPSHOT_LIMIT};
use crate::tables::{Tables, Tunnel};

/// Sessions expired per timer tick at most: the timer runs every
/// millisecond, so this bounds both the pause and the expiry rate
/// (256 000 sessions per second).
pub const EXPIRE_BUDGET: usize = 256;

/// The inbound stage: un-SNAT replies, DNAT, static NAT, and hairpin for
/// inside hosts addressing our outside.
#[inline]
pub(super) fn inbound<'t, P>(
    p: &mut Pipeline<P>,
    t: &Tables,
    cx: &mut Ctx<'t>,
    pkt: &mut PacketBuf<'_>,
    now: Instant,
) -> Next<'t> {
    if !p.nat.active() {
        return Next::Route;
    }
    let ingress = cx.arrived_by();
    let packet = &mut pkt.data_mut()[cx.l3..];
    match p
        .nat
        .inbound(t, packet, ingress, cx.decap.is_some(), nat_clock(t, now))
    {
        Inbound::Untouched => {}
        Inbound::Translated => {
            cx.nat = NatDone::Inbound;
            cx.ip = ipv4::meta(t, &Ipv4Packet::new_unchecked(&*packet));
        }
        Inbound::FullNat => {
            cx.nat = NatDone::FullNat;
            cx.ip = ipv4::meta(t, &Ipv4Packet::new_unchecked(&*packet));
        }
        // A service with every backend down or drained refuses the new
        // flow as a closed port would, so the client fails at once instead
        // of retrying: a TCP SYN gets a reset (RFC 9293 §3.10.7.1), a UDP
        // datagram an ICMP port unreachable (RFC 792).
        Inbound::Drop(DropReason::LbNoBackend) if is_tcp(packet) => {
            return reply::tcp_reset(p, cx, pkt, DropReason::LbNoBackend, now)
        }
        Inbound::Drop(DropReason::LbNoBackend) => {
            return icmp::error(
                p,
                cx,
                pkt,
                IcmpError::port_unreachable(),
                DropReason::LbNoBackend,
                now,
            )
        }
        Inbound::Drop(reason) => return Next::Done(Verdict::Drop(reason)),
    }
    Next::Route
}

/// The outbound stage: SNAT with the egress the route chose, or the
/// source half of full NAT for a packet whose destination a full-NAT rule
/// translated inbound. A hairpinned
/// packet (both ends rewritten) goes back inside: its new destination is
/// routed again, and NAT does not run again.
#[inline]
pub(super) fn outbound<'t, P>(
    p: &mut Pipeline<P>,
    t: &Tables,
    cx: &mut Ctx<'t>,
    pkt: &mut PacketBuf<'_>,
    hop: Hop<'t>,
    now: Instant,
) -> Next<'t> {
    if !p.nat.active() {
        return Next::Transmit(hop);
    }
    let Some(egress) = egress_for(t, hop.id) else {
        return Next::Transmit(hop);
    };
    let packet = &mut pkt.data_mut()[cx.l3..];
    let verdict = if cx.nat == NatDone::FullNat {
        p.nat.full_nat(packet, egress, nat_clock(t, now))
    } else {
        p.nat.outbound(packet, egress, nat_clock(t, now))
    };
    match verdict {
        NatVerdict::Translated | NatVerdict::NotTranslated | NatVerdict::FullNat => {
            Next::Transmit(hop)
        }
        NatVerdict::Drop(r) => Next::Done(Verdict::Drop(drop_reason(r))),
        NatVerdict::Hairpin => {
            cx.nat = NatDone::Hairpin;
            cx.ip = ipv4::meta(t, &Ipv4Packet::new_unchecked(&*packet));
            Next::Route
        }
    }
}

/// Passes an ICMP error Strait built (in the window, behind Ethernet)
/// about a packet NAT translated inbound through the outbound ICMP-error
/// translation (RFC 5508 REQ-5), back the way the packet came: its port,
/// or the tunnel it was decapsulated from. Untranslated it is not sent:
/// it would leak the inside address.
pub(super) fn translate_error<'t, P>(
    p: &mut Pipeline<P>,
    t: &Tables,
    cx: &Ctx<'t>,
    pkt: &mut PacketBuf<'_>,
    now: Instant,
) -> Next<'t> {
    let Some(egress) = egress_for(t, cx.arrived_by()) else {
        return Next::Done(Verdict::Consumed);
    };
    let packet = &mut pkt.data_mut()[ETH_LEN..];
    match p.nat.outbound(packet, egress, nat_clock(t, now)) {
        NatVerdict::Translated => cx.reply(pkt),
        // The session is gone or the error cannot be rewritten.
        NatVerdict::Drop(r) => {
            p.count_drop(cx.port.id, drop_reason(r));
            Next::Done(Verdict::Consumed)
        }
        NatVerdict::NotTranslated | NatVerdict::Hairpin | NatVerdict::FullNat => {
            Next::Done(Verdict::Consumed)
        }
    }
}

/// NAT time: whole seconds on the tables' epoch.
#[inline]
fn nat_clock(t: &Tables, now: Instant) -> u64 {
    now.saturating_duration_since(t.epoch).as_secs()
}

/// Maps the library's drop reasons onto the engine's counters.
fn drop_reason(r: strait_nat::DropReason) -> DropReason {
    use strait_nat::DropReason as N;
    match r {
        N::Malformed => DropReason::NatMalformed,
        N::Fragment => DropReason::NatFragment,
        N::UnsupportedProtocol => DropReason::NatUnsupportedProtocol,
        N::TcpNotSyn => DropReason::NatTcpNotSyn,
        N::Filtered => DropReason::NatFiltered,
        N::NoMapping => DropReason::NatNoSession,
        N::NatExhausted => DropReason::NatExhausted,
        N::IcmpErrorNoSession => DropReason::NatIcmpErrorNoSession,
        N::IcmpErrorChecksum => DropReason::NatIcmpErrorChecksum,
        N::IcmpErrorMalformed => DropReason::NatIcmpErrorMalformed,
        N::IcmpUnsupported => DropReason::NatIcmpUnsupported,
        N::TcpRstOutOfWindow => DropReason::NatTcpRstOutOfWindow,
        N::QuotaInsidePorts => DropReason::NatQuotaInsidePorts,
        N::QuotaInsideSessions => DropReason::NatQuotaInsideSessions,
        N::QuotaRemote => DropReason::NatQuotaRemote,
        N::QuotaRule => DropReason::NatQuotaRule,
        N::NoBackend => DropReason::LbNoBackend,
    }
}

impl<P> Pipeline<P> {
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
}

// ------------------------------------------------------------- the stage

/// What the inbound stage did to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inbound {
    /// Not NAT's business: route it as it is (outbound stage still runs).
    Untouched,
    /// Rewritten (un-SNAT, DNAT, static or hairpin): route the new
    /// destination; the outbound stage must not run again.
    Translated,
    /// The destination half of full NAT: route the new destination; the
    /// outbound stage translates the source.
    FullNat,
    /// Refused by the translator.
    Drop(DropReason),
}

/// One worker's NAT state: the translator (built by the control thread
/// with the first tables that carry rules, taken here at the first
/// snapshot with rules) and its place among the workers. Survives table swaps: a new
/// rule snapshot is installed into the same translator, sessions stay.
#[derive(Debug, Default)]
pub struct NatStage {
    worker: Option<NatWorker>,
    generation: Option<u64>,
    index: u16,
    active: bool,
}

impl NatStage {
    /// Sets the worker's index among the workers (before the first packet).
    pub fn set_index(&mut self, index: u16) {
        self.index = index;
    }

    /// The translator, once built.
    #[cfg(test)]
    pub fn worker(&self) -> Option<&NatWorker> {
        self.worker.as_ref()
    }

    /// Whether the stages run at all: there are rules, or sessions left
    /// from earlier rules. Without NAT the data path pays one branch.
    #[inline]
    pub fn active(&self) -> bool {
        self.active
    }

    /// Adopts the snapshot `t` if it is new.
    #[inline]
    pub(super) fn sync(&mut self, t: &Tables) {
        if self.generation != Some(t.generation) {
            self.install(t);
        }
    }

    fn install(&mut self, t: &Tables) {
        self.generation = Some(t.generation);
        match &mut self.worker {
            Some(w) => w.install_rules(Arc::clone(&t.nat.rules)),
            None if !t.nat.is_empty() => match t.nat.take_translator(self.index) {
                // Built by the control thread with the tables (the
                // normal case): nothing is allocated here.
                Some(mut w) => {
                    w.install_rules(Arc::clone(&t.nat.rules));
                    self.worker = Some(w);
                }
                // Tables built without the control side (a pipeline
                // driven directly): build it once, here, not per packet.
                None => {
                    match NatWorker::new(t.nat.worker_config(self.index), Arc::clone(&t.nat.rules))
                    {
                        Ok(w) => self.worker = Some(w),
                        Err(e) => tracing::error!(error = %e, "NAT translator not built"),
                    }
                }
            },
            None => {}
        }
        self.active = self
            .worker
            .as_ref()
            .is_some_and(|w| !t.nat.is_empty() || w.session_count() > 0);
    }

    /// The inbound stage, before the route lookup. `packet` is the IPv4
    /// packet (validated by the caller), `ingress` where it came from (the
    /// interface, or the tunnel it was decapsulated from).
    fn inbound(
        &mut self,
        t: &Tables,
        packet: &mut [u8],
        ingress: EgressId,
        decapsulated: bool,
        now: u64,
    ) -> Inbound {
        let Some(nat) = self.worker.as_mut() else {
            return Inbound::Untouched;
        };
        let (src, dst, proto, dport) = {
            let Ok(ip) = Ipv4Packet::new_checked(&*packet) else {
                return Inbound::Untouched;
            };
            let dport = ip
                .payload()
                .get(2..4)
                .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
            (ip.src_addr(), ip.dst_addr(), ip.protocol(), dport)
        };
        if !t.nat.is_external(dst) {
            return Inbound::Untouched;
        }
        // The tunnel's own ESP belongs to the ESP stage, whatever mapping
        // may hold the same address and port.
        if !decapsulated && is_tunnel_arrival(&t.tunnels, dst, proto, dport) {
            return Inbound::Untouched;
        }
        // An inside host addressing one of our external endpoints (a port
        // forward or another inside host's mapping): translate it as
        // outbound so the library hairpins it (RFC 4787 REQ-9, RFC 5382
        // REQ-2) and both ends see public endpoints.
        // To an endpoint nothing maps, it is for our own host stack: left
        // as it is, and delivered.
        if let Some(egress) = hairpin_egress(t, src, dst, ingress) {
            if !nat.hairpins(packet) {
                return Inbound::Untouched;
            }
            return match nat.translate_outbound(packet, egress, now) {
                NatVerdict::Hairpin | NatVerdict::Translated => Inbound::Translated,
                NatVerdict::FullNat => Inbound::FullNat,
                NatVerdict::NotTranslated => Inbound::Untouched,
                NatVerdict::Drop(r) => Inbound::Drop(drop_reason(r)),
            };
        }
        match nat.translate_inbound(packet, now) {
            NatVerdict::Translated | NatVerdict::Hairpin => Inbound::Translated,
            NatVerdict::FullNat => Inbound::FullNat,
            NatVerdict::NotTranslated => Inbound::Untouched,
            NatVerdict::Drop(r) => Inbound::Drop(drop_reason(r)),
        }
    }

    /// The outbound stage, after the route lookup: `egress` is where the
    /// route sends the packet.
    #[inline]
    fn outbound(&mut self, packet: &mut [u8], egress: Egress, now: u64) -> NatVerdict {
        match self.worker.as_mut() {
            Some(nat) => nat.translate_outbound(packet, egress, now),
            None => NatVerdict::NotTranslated,
        }
    }

    /// The source half of full NAT, after the route lookup: `egress` is
    /// where the route sends the packet, towards the backend.
    #[inline]
    fn full_nat(&mut self, packet: &mut [u8], egress: Egress, now: u64) -> NatVerdict {
        match self.worker.as_mut() {
            Some(nat) => nat.translate_full_nat(packet, egress, now),
            None => NatVerdict::Drop(strait_nat::DropReason::NoMapping),
        }
    }

    /// Expires idle sessions, at most [`EXPIRE_BUDGET`] (worker timer).
    fn expire(&mut self, t: &Tables, now: u64) -> usize {
        let Some(nat) = self.worker.as_mut() else {
            return 0;
        };
        let n = nat.expire(now, EXPIRE_BUDGET);
        if t.nat.is_empty() && nat.session_count() == 0 {
            self.active = false;
        }
        n
    }

    /// Publishes this worker's snapshot into `slot` unless the control
    /// thread is reading it right now.
    fn publish(&self, status: &NatStatus, worker: usize, now: u64) {
        status.publish(worker, |s| {
            s.taken_at = Some(now);
            s.sessions.clear();
            match &self.worker {
                Some(nat) => {
                    s.session_count = nat.session_count();
                    s.capacity = nat.capacity();
                    s.memory_bytes = nat.memory_bytes();
                    s.sessions.extend(nat.sessions(now).take(SNAPSHOT_LIMIT));
                    s.counters.clone_from(nat.counters());
                }
                None => {
                    s.session_count = 0;
                    s.capacity = 0;
                    s.memory_bytes = 0;
                    s.counters = NatCounters::default();
                }
            }
        });
    }
}

/// Whether an IPv4 packet carries TCP.
fn is_tcp(packet: &[u8]) -> bool {
    packet.get(9) == Some(&IpProtocol::TCP.0)
}

/// ESP or NAT-T traffic to one of our tunnel endpoints.
fn is_tunnel_arrival(tunnels: &[Tunnel], dst: Ipv4Addr, proto: IpProtocol, dport: u16) -> bool {
    tunnels.iter().any(|t| {
        t.local == dst
            && (proto == IpProtocol::ESP
                || (proto == IpProtocol::UDP && t.local_port == Some(dport)))
    })
}

/// The egress through which `dst` (one of our external addresses) is
/// published when `src` would itself be translated outbound there and the
/// packet did not come in through that same egress: then it is an inside
/// host talking to our outside, and must hairpin.
fn hairpin_egress(t: &Tables, src: Ipv4Addr, dst: Ipv4Addr, ingress: EgressId) -> Option<Egress> {
    let rules = &t.nat.rules;
    // Cheap test first: most inbound traffic comes from addresses no rule
    // would translate.
    let inside_source = rules.match_static_internal(src).is_some()
        || rules.snat().iter().any(|r| r.source.contains_addr(src));
    if !inside_source {
        return None;
    }
    let egress = match t.ports.iter().find(|p| p.owns_v4(dst)) {
        Some(p) => Egress::new(EgressId(p.id), p.icmp_source_v4()?),
        None => match t.fib.lookup(IpAddr::V4(dst), 0) {
            Some(Disposition::Forward(nh)) => egress_for(t, nh.egress)?,
            _ => return None,
        },
    };
    if egress.id == ingress {
        return None;
    }
    let claimed = rules.match_static_internal(src).is_some()
        || rules.match_snat(src, dst, egress.id).is_some();
    claimed.then_some(egress)
}

/// The NAT view of a FIB egress: its id and the address masquerade uses.
#[inline]
fn egress_for(t: &Tables, id: EgressId) -> Option<Egress> {
    match t.ports.get(id.index()) {
        Some(p) => Some(Egress::new(
            id,
            p.icmp_source_v4().unwrap_or(Ipv4Addr::UNSPECIFIED),
        )),
        None => t
            .tunnels
            .get(id.index() - t.ports.len())
            .map(|tun| Egress::new(id, tun.local)),
    }
}
