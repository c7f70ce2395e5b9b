//! Session and mapping tables of one worker.
//!
//! Everything is preallocated from the configured capacity: sessions and
//! mappings live in slabs addressed by `u32` index, found through
//! power-of-two bucket arrays with chains threaded through the entries
//! themselves, and ordered for expiry in one LRU list per timeout class
//! (VPP-style: within a class the timeout is the same for every entry, so
//! the least recently used entry is always the next to expire and expiry
//! never scans). Steady-state insert, lookup, refresh and removal touch a
//! handful of cache lines and never allocate.
//!
//! * A *mapping* binds an internal endpoint to an external endpoint
//!   (RFC 4787 section 4.1); dynamic SNAT sessions share it, which gives
//!   endpoint-independent mapping (REQ-1). It lives while it has sessions.
//! * A *session* is one conversation between an inside endpoint and an
//!   outside endpoint, translated through an external endpoint.
//!
//! Session lookup keys: outbound `(protocol, inside, outside)`; inbound
//! `(protocol, external, outside)`, both hashed on every field, so a remote
//! host that opens sessions from many source ports to one external
//! endpoint spreads them over as many chains (a lookup stays O(1) however
//! many sessions one remote address holds).
//!
//! The address-dependent filtering test (RFC 4787 REQ-8: has this
//! mapping's internal endpoint sent to that remote *address*?) does not
//! walk sessions. A *permit* per (mapping, remote address) counts the live
//! sessions of the mapping with that address and carries the latest
//! moment one of them expires; it lives in its own preallocated slab and
//! hash, one entry per session at most, created and removed with the
//! sessions. A permit whose sessions have all timed out but not yet been
//! reaped stops admitting at once; the only over-estimate is a session
//! that moved to a shorter timeout class (a TCP close) while its permit
//! still carries the longer deadline, until expiry reaps it.
//!
//! Quotas (RFC 6888 REQ-4 and REQ-5) read *tallies*: one entry per inside
//! address (its mappings, i.e. external ports, and its sessions) or per
//! remote address (the sessions it opened inbound through DNAT or static
//! rules), kept in one more preallocated slab and hash and updated as
//! sessions and mappings come and go. Every session counts in exactly one
//! tally (its inside address when the inside opened it or it runs through
//! the inside endpoint's own mapping; else its remote address), so there
//! are never more tallies than session slots. Inbound-initiated sessions
//! are also counted per rule, in a fixed array indexed by rule id.

use std::net::Ipv4Addr;

use crate::flow::{Direction, Endpoint, Protocol};
use crate::rules::RuleId;
use crate::tcp::TcpState;

/// End of a chain or list.
pub(crate) const NIL: u32 = u32::MAX;

/// Timeout classes; one LRU list each. Sessions nothing has answered yet
/// have lists of their own (with their protocol's timeout), so the oldest
/// unanswered session, the one a full table drops early for a new flow,
/// is always at the head of one of three lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum TimerClass {
    Udp = 0,
    TcpEstablished = 1,
    TcpTransitory = 2,
    Icmp = 3,
    UdpUnanswered = 4,
    TcpUnanswered = 5,
    IcmpUnanswered = 6,
}

pub(crate) const TIMER_CLASSES: usize = 7;

/// The classes of sessions never answered.
const UNANSWERED: [TimerClass; 3] = [
    TimerClass::UdpUnanswered,
    TimerClass::TcpUnanswered,
    TimerClass::IcmpUnanswered,
];
const FREE_CLASS: u8 = u8::MAX;

impl TimerClass {
    pub(crate) fn for_flow(protocol: Protocol, tcp: TcpState, answered: bool) -> Self {
        match protocol {
            Protocol::Udp if !answered => Self::UdpUnanswered,
            Protocol::Icmp if !answered => Self::IcmpUnanswered,
            Protocol::Tcp if !answered => Self::TcpUnanswered,
            Protocol::Udp => Self::Udp,
            Protocol::Icmp => Self::Icmp,
            Protocol::Tcp if tcp.is_established() => Self::TcpEstablished,
            Protocol::Tcp => Self::TcpTransitory,
        }
    }
}

/// How a session came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// Dynamic source NAT (pool or masquerade), through a mapping.
    Snat,
    /// Destination NAT / port forward.
    Dnat,
    /// Static 1:1 NAT.
    Static,
    /// The destination half of full NAT: a DNAT session whose packets
    /// towards the backend also get their source translated at the egress
    /// (a [`SessionKind::FullNatSource`] session), so the backend answers
    /// the translator rather than the client.
    FullNat,
    /// The source half of full NAT: the client, as the backend sees it,
    /// masqueraded behind the egress address towards the backend. Replies
    /// through it are translated back twice, to the client and from the
    /// virtual endpoint.
    FullNatSource,
}

impl SessionKind {
    /// Short lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Snat => "snat",
            Self::Dnat => "dnat",
            Self::Static => "static",
            Self::FullNat => "full-nat",
            Self::FullNatSource => "full-nat-src",
        }
    }
}

/// One tracked conversation: 64 bytes, one cache line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Session {
    pub(crate) inside: Endpoint,
    pub(crate) external: Endpoint,
    pub(crate) outside: Endpoint,
    pub(crate) protocol: Protocol,
    pub(crate) kind: SessionKind,
    pub(crate) initiator: Direction,
    pub(crate) tcp: TcpState,
    class: u8,
    /// The outside endpoint is one of this translator's own external
    /// endpoints: outbound packets are hairpinned back in (RFC 4787 REQ-9).
    pub(crate) hairpin: bool,
    /// A packet went the other way than the first one.
    pub(crate) answered: bool,
    pub(crate) rule: RuleId,
    pub(crate) mapping: u32,
    /// The address-dependent filtering permit this session holds
    /// (`NIL` without a mapping).
    permit: u32,
    /// Seconds, on the caller's clock (u32: 136 years).
    pub(crate) created: u32,
    pub(crate) last_seen: u32,
    lru_prev: u32,
    lru_next: u32,
    out_next: u32,
    in_next: u32,
}

/// One endpoint-independent mapping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mapping {
    pub(crate) internal: Endpoint,
    pub(crate) external: Endpoint,
    pub(crate) protocol: Protocol,
    pub(crate) rule: RuleId,
    sessions: u32,
    int_next: u32,
    ext_next: u32,
}

/// Live sessions of one mapping with one remote address: the
/// address-dependent filtering permission (RFC 4787 REQ-8).
#[derive(Debug, Clone, Copy)]
struct Permit {
    mapping: u32,
    addr: u32,
    sessions: u32,
    /// The latest second at which one of the sessions expires.
    expires: u32,
    next: u32,
}

/// Whose quota an address's tally counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum TallyOf {
    /// An inside address (a subscriber): its mappings and sessions.
    Inside = 0,
    /// A remote address: the sessions it opened inbound (DNAT, static).
    Remote = 1,
}

/// Mappings and sessions held for one address.
#[derive(Debug, Clone, Copy)]
struct Tally {
    addr: u32,
    of: u32,
    mappings: u32,
    sessions: u32,
    next: u32,
}

/// Seconds as the tables store them.
#[inline]
pub(crate) fn secs(now: u64) -> u32 {
    u32::try_from(now).unwrap_or(u32::MAX)
}

/// What a new session is made of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewSession {
    pub(crate) inside: Endpoint,
    pub(crate) external: Endpoint,
    pub(crate) outside: Endpoint,
    pub(crate) protocol: Protocol,
    pub(crate) kind: SessionKind,
    pub(crate) initiator: Direction,
    pub(crate) tcp: TcpState,
    pub(crate) hairpin: bool,
    pub(crate) rule: RuleId,
    pub(crate) mapping: u32,
}

/// The external endpoint freed when a mapping's last session goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReleasedMapping {
    pub(crate) protocol: Protocol,
    pub(crate) internal: Endpoint,
    pub(crate) external: Endpoint,
}

/// Upper bound of heap bytes per session slot: session, mapping, permit,
/// tally and six bucket heads, doubled for power-of-two rounding of the
/// bucket arrays.
pub(crate) fn slot_bytes_bound() -> usize {
    core::mem::size_of::<Session>()
        + core::mem::size_of::<Mapping>()
        + core::mem::size_of::<Permit>()
        + core::mem::size_of::<Tally>()
        + 2 * 6 * core::mem::size_of::<u32>()
}

/// Heap bytes of the per-rule session counts (fixed, not per slot).
pub(crate) const RULE_COUNT_BYTES: usize = 65_536 * core::mem::size_of::<u32>();

/// Folded 64x64->128 multiply: a fast keyed mixer for table indices.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Keyed hash of two words, for choices that must be stable per flow but
/// not predictable from outside (pool address, first port, backend).
#[inline]
pub(crate) fn keyed_hash(key: u64, a: u64, b: u64) -> u64 {
    fold_mul(fold_mul(a ^ key, b ^ 0x243f_6a88_85a3_08d3), key | 1)
}

#[inline]
pub(crate) fn endpoint_bits(e: Endpoint) -> u64 {
    (u64::from(e.addr_u32()) << 16) | u64::from(e.port)
}

#[derive(Debug)]
pub(crate) struct SessionTable {
    key: u64,
    sessions: Vec<Session>,
    free_session: u32,
    live_sessions: usize,
    out_buckets: Box<[u32]>,
    in_buckets: Box<[u32]>,
    lru_head: [u32; TIMER_CLASSES],
    lru_tail: [u32; TIMER_CLASSES],
    mappings: Vec<Mapping>,
    free_mapping: u32,
    live_mappings: usize,
    int_buckets: Box<[u32]>,
    ext_buckets: Box<[u32]>,
    permits: Vec<Permit>,
    free_permit: u32,
    permit_buckets: Box<[u32]>,
    tallies: Vec<Tally>,
    free_tally: u32,
    tally_buckets: Box<[u32]>,
    /// Inbound-initiated DNAT and static sessions, by rule id.
    rule_sessions: Box<[u32]>,
    timeouts: [u64; TIMER_CLASSES],
    mask: usize,
}

impl SessionTable {
    /// Allocates room for `capacity` sessions and as many mappings (one
    /// per session in the worst case, when no two sessions share one).
    pub(crate) fn new(capacity: usize, key: u64, timeouts: [u64; TIMER_CLASSES]) -> Self {
        let buckets = capacity.next_power_of_two();
        Self {
            key: key | 1,
            sessions: Vec::with_capacity(capacity),
            free_session: NIL,
            live_sessions: 0,
            out_buckets: vec![NIL; buckets].into_boxed_slice(),
            in_buckets: vec![NIL; buckets].into_boxed_slice(),
            lru_head: [NIL; TIMER_CLASSES],
            lru_tail: [NIL; TIMER_CLASSES],
            mappings: Vec::with_capacity(capacity),
            free_mapping: NIL,
            live_mappings: 0,
            int_buckets: vec![NIL; buckets].into_boxed_slice(),
            ext_buckets: vec![NIL; buckets].into_boxed_slice(),
            permits: Vec::with_capacity(capacity),
            free_permit: NIL,
            permit_buckets: vec![NIL; buckets].into_boxed_slice(),
            tallies: Vec::with_capacity(capacity),
            free_tally: NIL,
            tally_buckets: vec![NIL; buckets].into_boxed_slice(),
            rule_sessions: vec![0; 65_536].into_boxed_slice(),
            timeouts,
            mask: buckets - 1,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.sessions.capacity()
    }

    pub(crate) fn len(&self) -> usize {
        self.live_sessions
    }

    pub(crate) fn mapping_count(&self) -> usize {
        self.live_mappings
    }

    pub(crate) fn is_full(&self) -> bool {
        self.live_sessions >= self.sessions.capacity()
    }

    /// Heap bytes reserved by the table (fixed at construction).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.sessions.capacity() * core::mem::size_of::<Session>()
            + self.mappings.capacity() * core::mem::size_of::<Mapping>()
            + self.permits.capacity() * core::mem::size_of::<Permit>()
            + self.tallies.capacity() * core::mem::size_of::<Tally>()
            + self.rule_sessions.len() * core::mem::size_of::<u32>()
            + (self.out_buckets.len()
                + self.tally_buckets.len()
                + self.in_buckets.len()
                + self.int_buckets.len()
                + self.ext_buckets.len()
                + self.permit_buckets.len())
                * core::mem::size_of::<u32>()
    }

    #[inline]
    fn bucket(&self, protocol: Protocol, a: u64, b: u64) -> usize {
        let h = fold_mul(
            a ^ self.key,
            b ^ u64::from(protocol.number()) ^ 0x9e37_79b9_7f4a_7c15,
        );
        (fold_mul(h, self.key) as usize) & self.mask
    }

    fn out_bucket(&self, protocol: Protocol, inside: Endpoint, outside: Endpoint) -> usize {
        self.bucket(protocol, endpoint_bits(inside), endpoint_bits(outside))
    }

    fn in_bucket(&self, protocol: Protocol, external: Endpoint, outside: Endpoint) -> usize {
        self.bucket(
            protocol,
            endpoint_bits(external),
            endpoint_bits(outside) << 1,
        )
    }

    fn permit_bucket(&self, mapping: u32, addr: u32) -> usize {
        self.bucket(
            Protocol::Icmp,
            u64::from(mapping),
            (u64::from(addr) << 1) | 1,
        )
    }

    fn int_bucket(&self, protocol: Protocol, internal: Endpoint, external_addr: Ipv4Addr) -> usize {
        self.bucket(
            protocol,
            endpoint_bits(internal),
            (u64::from(u32::from(external_addr)) << 1) | 1,
        )
    }

    fn ext_bucket(&self, protocol: Protocol, external: Endpoint) -> usize {
        self.bucket(protocol, endpoint_bits(external), 0x5555)
    }

    // ---- sessions -------------------------------------------------------

    pub(crate) fn session(&self, index: u32) -> &Session {
        &self.sessions[index as usize]
    }

    /// Session for an outbound packet `inside -> outside`.
    pub(crate) fn lookup_outbound(
        &self,
        protocol: Protocol,
        inside: Endpoint,
        outside: Endpoint,
    ) -> u32 {
        let mut i = self.out_buckets[self.out_bucket(protocol, inside, outside)];
        while i != NIL {
            let s = &self.sessions[i as usize];
            if s.protocol == protocol && s.inside == inside && s.outside == outside {
                return i;
            }
            i = s.out_next;
        }
        NIL
    }

    /// Session for an inbound packet `outside -> external`.
    pub(crate) fn lookup_inbound(
        &self,
        protocol: Protocol,
        external: Endpoint,
        outside: Endpoint,
    ) -> u32 {
        let mut i = self.in_buckets[self.in_bucket(protocol, external, outside)];
        while i != NIL {
            let s = &self.sessions[i as usize];
            if s.protocol == protocol && s.external == external && s.outside == outside {
                return i;
            }
            i = s.in_next;
        }
        NIL
    }

    /// Whether a live session of `mapping` talks to `outside_addr`: the
    /// address-dependent filtering permission (RFC 4787 REQ-8). Sessions
    /// whose timeout has passed but which are not reaped yet do not count.
    /// One hash probe, whatever the number of sessions.
    pub(crate) fn has_session_with_address(
        &self,
        mapping: u32,
        outside_addr: Ipv4Addr,
        now: u64,
    ) -> bool {
        let p = self.find_permit(mapping, u32::from(outside_addr));
        p != NIL && now < u64::from(self.permits[p as usize].expires)
    }

    fn find_permit(&self, mapping: u32, addr: u32) -> u32 {
        let mut i = self.permit_buckets[self.permit_bucket(mapping, addr)];
        while i != NIL {
            let p = &self.permits[i as usize];
            if p.mapping == mapping && p.addr == addr {
                return i;
            }
            i = p.next;
        }
        NIL
    }

    /// Counts one more session of `mapping` with `addr`, creating the
    /// permit on the first. Cannot fail: there are as many permit slots as
    /// session slots and each session holds at most one.
    fn acquire_permit(&mut self, mapping: u32, addr: u32) -> u32 {
        let found = self.find_permit(mapping, addr);
        if found != NIL {
            self.permits[found as usize].sessions += 1;
            return found;
        }
        let permit = Permit {
            mapping,
            addr,
            sessions: 1,
            expires: 0,
            next: NIL,
        };
        let index = if self.free_permit != NIL {
            let i = self.free_permit;
            self.free_permit = self.permits[i as usize].next;
            self.permits[i as usize] = permit;
            i
        } else {
            debug_assert!(self.permits.len() < self.permits.capacity());
            self.permits.push(permit);
            (self.permits.len() - 1) as u32
        };
        let b = self.permit_bucket(mapping, addr);
        self.permits[index as usize].next = self.permit_buckets[b];
        self.permit_buckets[b] = index;
        index
    }

    fn release_permit(&mut self, index: u32) {
        let p = &mut self.permits[index as usize];
        p.sessions -= 1;
        if p.sessions > 0 {
            return;
        }
        let (mapping, addr) = (p.mapping, p.addr);
        let b = self.permit_bucket(mapping, addr);
        unlink_chain(&mut self.permit_buckets[b], &mut self.permits, index, |p| {
            &mut p.next
        });
        self.permits[index as usize].next = self.free_permit;
        self.free_permit = index;
    }

    /// Moves the permit's deadline out to the session's own.
    fn extend_permit(&mut self, session: u32) {
        let s = &self.sessions[session as usize];
        if s.permit == NIL {
            return;
        }
        let timeout = secs(self.timeouts[usize::from(s.class)]);
        let deadline = s.last_seen.saturating_add(timeout);
        let p = &mut self.permits[s.permit as usize];
        p.expires = p.expires.max(deadline);
    }

    // ---- quotas ---------------------------------------------------------

    fn tally_bucket(&self, of: TallyOf, addr: u32) -> usize {
        self.bucket(Protocol::Udp, u64::from(addr), 0x7a11_0000 | of as u64)
    }

    fn find_tally(&self, of: TallyOf, addr: u32) -> u32 {
        let mut i = self.tally_buckets[self.tally_bucket(of, addr)];
        while i != NIL {
            let t = &self.tallies[i as usize];
            if t.addr == addr && t.of == of as u32 {
                return i;
            }
            i = t.next;
        }
        NIL
    }

    /// Adds `mappings` and `sessions` to the tally of `addr`, creating it.
    /// Cannot fail: each session counts in one tally, and a mapping is
    /// created only with room for its first session.
    fn tally_add(&mut self, of: TallyOf, addr: u32, mappings: u32, sessions: u32) {
        let found = self.find_tally(of, addr);
        if found != NIL {
            let t = &mut self.tallies[found as usize];
            t.mappings += mappings;
            t.sessions += sessions;
            return;
        }
        let tally = Tally {
            addr,
            of: of as u32,
            mappings,
            sessions,
            next: NIL,
        };
        let index = if self.free_tally != NIL {
            let i = self.free_tally;
            self.free_tally = self.tallies[i as usize].next;
            self.tallies[i as usize] = tally;
            i
        } else {
            debug_assert!(self.tallies.len() < self.tallies.capacity());
            self.tallies.push(tally);
            (self.tallies.len() - 1) as u32
        };
        let b = self.tally_bucket(of, addr);
        self.tallies[index as usize].next = self.tally_buckets[b];
        self.tally_buckets[b] = index;
    }

    fn tally_sub(&mut self, of: TallyOf, addr: u32, mappings: u32, sessions: u32) {
        let index = self.find_tally(of, addr);
        if index == NIL {
            debug_assert!(false, "tally missing");
            return;
        }
        let t = &mut self.tallies[index as usize];
        t.mappings -= mappings;
        t.sessions -= sessions;
        if t.mappings > 0 || t.sessions > 0 {
            return;
        }
        let b = self.tally_bucket(of, addr);
        unlink_chain(&mut self.tally_buckets[b], &mut self.tallies, index, |t| {
            &mut t.next
        });
        self.tallies[index as usize].next = self.free_tally;
        self.free_tally = index;
    }

    /// Whose tally a session counts in: its inside address when the inside
    /// opened it or it runs through the inside endpoint's own mapping
    /// (RFC 6888 REQ-5, per subscriber); else the remote address that
    /// opened it inbound through a DNAT or static rule.
    fn tally_of(
        kind: SessionKind,
        initiator: Direction,
        inside: Endpoint,
        outside: Endpoint,
    ) -> (TallyOf, u32) {
        if initiator == Direction::Outbound || kind == SessionKind::Snat {
            (TallyOf::Inside, inside.addr_u32())
        } else {
            (TallyOf::Remote, outside.addr_u32())
        }
    }

    /// `(mappings, sessions)` counted for `addr`: one hash probe.
    pub(crate) fn tally(&self, of: TallyOf, addr: Ipv4Addr) -> (u32, u32) {
        let i = self.find_tally(of, u32::from(addr));
        if i == NIL {
            return (0, 0);
        }
        let t = &self.tallies[i as usize];
        (t.mappings, t.sessions)
    }

    /// Inbound-initiated DNAT and static sessions of `rule`.
    pub(crate) fn rule_sessions(&self, rule: RuleId) -> u32 {
        self.rule_sessions[usize::from(rule.0)]
    }

    pub(crate) fn is_expired(&self, index: u32, now: u64) -> bool {
        let s = &self.sessions[index as usize];
        now.saturating_sub(u64::from(s.last_seen)) >= self.timeouts[usize::from(s.class)]
    }

    /// Inserts a session at the tail of its LRU list. `None` when full.
    pub(crate) fn insert_session(&mut self, new: NewSession, now: u64) -> Option<u32> {
        let class = TimerClass::for_flow(new.protocol, new.tcp, false) as u8;
        let session = Session {
            inside: new.inside,
            external: new.external,
            outside: new.outside,
            protocol: new.protocol,
            kind: new.kind,
            initiator: new.initiator,
            tcp: new.tcp,
            class,
            hairpin: new.hairpin,
            answered: false,
            rule: new.rule,
            mapping: new.mapping,
            permit: NIL,
            created: secs(now),
            last_seen: secs(now),
            lru_prev: NIL,
            lru_next: NIL,
            out_next: NIL,
            in_next: NIL,
        };
        let index = if self.free_session != NIL {
            let i = self.free_session;
            self.free_session = self.sessions[i as usize].lru_next;
            self.sessions[i as usize] = session;
            i
        } else if self.sessions.len() < self.sessions.capacity() {
            // Within the reserved capacity: no reallocation.
            self.sessions.push(session);
            (self.sessions.len() - 1) as u32
        } else {
            return None;
        };
        let ob = self.out_bucket(new.protocol, new.inside, new.outside);
        self.sessions[index as usize].out_next = self.out_buckets[ob];
        self.out_buckets[ob] = index;
        let ib = self.in_bucket(new.protocol, new.external, new.outside);
        self.sessions[index as usize].in_next = self.in_buckets[ib];
        self.in_buckets[ib] = index;
        self.lru_push_tail(index, class);
        if new.mapping != NIL {
            self.mappings[new.mapping as usize].sessions += 1;
            let permit = self.acquire_permit(new.mapping, new.outside.addr_u32());
            self.sessions[index as usize].permit = permit;
            self.extend_permit(index);
        }
        let (of, addr) = Self::tally_of(new.kind, new.initiator, new.inside, new.outside);
        self.tally_add(of, addr, 0, 1);
        if of == TallyOf::Remote {
            self.rule_sessions[usize::from(new.rule.0)] += 1;
        }
        self.live_sessions += 1;
        Some(index)
    }

    /// Marks activity: moves the session to the tail of the list of its
    /// (possibly new) timeout class.
    pub(crate) fn touch(&mut self, index: u32, now: u64, refresh: bool) {
        let (protocol, tcp, answered, old_class) = {
            let s = &self.sessions[index as usize];
            (s.protocol, s.tcp, s.answered, s.class)
        };
        let class = TimerClass::for_flow(protocol, tcp, answered) as u8;
        if !refresh && class == old_class {
            return;
        }
        self.lru_unlink(index);
        let s = &mut self.sessions[index as usize];
        if refresh {
            s.last_seen = secs(now);
        }
        self.lru_push_tail(index, class);
        self.extend_permit(index);
    }

    pub(crate) fn set_tcp_state(&mut self, index: u32, state: TcpState) {
        self.sessions[index as usize].tcp = state;
    }

    /// Records that a packet went the other way than the first one (the
    /// next [`Self::touch`] moves the session to its answered class).
    pub(crate) fn set_answered(&mut self, index: u32) {
        self.sessions[index as usize].answered = true;
    }

    /// The least recently used session nothing has answered, of any
    /// protocol: what a full table drops to admit a new flow.
    pub(crate) fn oldest_unanswered(&self) -> u32 {
        let mut oldest = NIL;
        for class in UNANSWERED {
            let head = self.lru_head[class as usize];
            if head != NIL
                && (oldest == NIL
                    || self.sessions[head as usize].last_seen
                        < self.sessions[oldest as usize].last_seen)
            {
                oldest = head;
            }
        }
        oldest
    }

    /// The least recently used session of any class whose idle time has
    /// reached its timeout.
    pub(crate) fn oldest_expired(&self, now: u64) -> u32 {
        for &head in &self.lru_head {
            if head != NIL && self.is_expired(head, now) {
                return head;
            }
        }
        NIL
    }

    /// Removes a session; returns the external endpoint to release when
    /// this was the last session of its mapping.
    pub(crate) fn remove_session(&mut self, index: u32) -> Option<ReleasedMapping> {
        let s = self.sessions[index as usize];
        debug_assert_ne!(s.class, FREE_CLASS);
        let ob = self.out_bucket(s.protocol, s.inside, s.outside);
        unlink_chain(&mut self.out_buckets[ob], &mut self.sessions, index, |s| {
            &mut s.out_next
        });
        let ib = self.in_bucket(s.protocol, s.external, s.outside);
        unlink_chain(&mut self.in_buckets[ib], &mut self.sessions, index, |s| {
            &mut s.in_next
        });
        if s.permit != NIL {
            self.release_permit(s.permit);
        }
        self.lru_unlink(index);
        let slot = &mut self.sessions[index as usize];
        slot.class = FREE_CLASS;
        slot.lru_next = self.free_session;
        self.free_session = index;
        self.live_sessions -= 1;
        let (of, addr) = Self::tally_of(s.kind, s.initiator, s.inside, s.outside);
        self.tally_sub(of, addr, 0, 1);
        if of == TallyOf::Remote {
            self.rule_sessions[usize::from(s.rule.0)] -= 1;
        }
        if s.mapping == NIL {
            return None;
        }
        let m = &mut self.mappings[s.mapping as usize];
        m.sessions -= 1;
        if m.sessions > 0 {
            return None;
        }
        Some(self.remove_mapping(s.mapping))
    }

    fn lru_push_tail(&mut self, index: u32, class: u8) {
        let c = usize::from(class);
        let tail = self.lru_tail[c];
        {
            let s = &mut self.sessions[index as usize];
            s.class = class;
            s.lru_prev = tail;
            s.lru_next = NIL;
        }
        if tail == NIL {
            self.lru_head[c] = index;
        } else {
            self.sessions[tail as usize].lru_next = index;
        }
        self.lru_tail[c] = index;
    }

    fn lru_unlink(&mut self, index: u32) {
        let (prev, next, c) = {
            let s = &self.sessions[index as usize];
            (s.lru_prev, s.lru_next, usize::from(s.class))
        };
        if prev == NIL {
            self.lru_head[c] = next;
        } else {
            self.sessions[prev as usize].lru_next = next;
        }
        if next == NIL {
            self.lru_tail[c] = prev;
        } else {
            self.sessions[next as usize].lru_prev = prev;
        }
    }

    /// Live sessions, least recently used first within each class.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Session> + '_ {
        self.lru_head.iter().flat_map(move |&head| {
            let mut i = head;
            core::iter::from_fn(move || {
                if i == NIL {
                    return None;
                }
                let s = &self.sessions[i as usize];
                i = s.lru_next;
                Some(s)
            })
        })
    }

    // ---- mappings -------------------------------------------------------

    pub(crate) fn mapping(&self, index: u32) -> &Mapping {
        &self.mappings[index as usize]
    }

    /// The mapping of `internal` onto `external_addr` (RFC 4787 REQ-1: one
    /// per internal endpoint and external address, whatever the
    /// destination).
    pub(crate) fn lookup_mapping_internal(
        &self,
        protocol: Protocol,
        internal: Endpoint,
        external_addr: Ipv4Addr,
    ) -> u32 {
        let mut i = self.int_buckets[self.int_bucket(protocol, internal, external_addr)];
        while i != NIL {
            let m = &self.mappings[i as usize];
            if m.protocol == protocol && m.internal == internal && m.external.addr == external_addr
            {
                return i;
            }
            i = m.int_next;
        }
        NIL
    }

    /// The mapping that owns `external`.
    pub(crate) fn lookup_mapping_external(&self, protocol: Protocol, external: Endpoint) -> u32 {
        let mut i = self.ext_buckets[self.ext_bucket(protocol, external)];
        while i != NIL {
            let m = &self.mappings[i as usize];
            if m.protocol == protocol && m.external == external {
                return i;
            }
            i = m.ext_next;
        }
        NIL
    }

    /// Inserts a mapping with no sessions yet; the caller attaches one at
    /// once (a mapping without sessions is removed by
    /// [`Self::discard_unused_mapping`]). `None` when full.
    pub(crate) fn insert_mapping(
        &mut self,
        protocol: Protocol,
        internal: Endpoint,
        external: Endpoint,
        rule: RuleId,
    ) -> Option<u32> {
        let mapping = Mapping {
            internal,
            external,
            protocol,
            rule,
            sessions: 0,
            int_next: NIL,
            ext_next: NIL,
        };
        let index = if self.free_mapping != NIL {
            let i = self.free_mapping;
            self.free_mapping = self.mappings[i as usize].int_next;
            self.mappings[i as usize] = mapping;
            i
        } else if self.mappings.len() < self.mappings.capacity() {
            self.mappings.push(mapping);
            (self.mappings.len() - 1) as u32
        } else {
            return None;
        };
        let ib = self.int_bucket(protocol, internal, external.addr);
        self.mappings[index as usize].int_next = self.int_buckets[ib];
        self.int_buckets[ib] = index;
        let eb = self.ext_bucket(protocol, external);
        self.mappings[index as usize].ext_next = self.ext_buckets[eb];
        self.ext_buckets[eb] = index;
        self.tally_add(TallyOf::Inside, internal.addr_u32(), 1, 0);
        self.live_mappings += 1;
        Some(index)
    }

    /// Removes a mapping that never got a session (session insert failed).
    pub(crate) fn discard_unused_mapping(&mut self, index: u32) -> Option<ReleasedMapping> {
        if self.mappings[index as usize].sessions == 0 {
            Some(self.remove_mapping(index))
        } else {
            None
        }
    }

    fn remove_mapping(&mut self, index: u32) -> ReleasedMapping {
        let m = self.mappings[index as usize];
        let ib = self.int_bucket(m.protocol, m.internal, m.external.addr);
        unlink_chain(&mut self.int_buckets[ib], &mut self.mappings, index, |m| {
            &mut m.int_next
        });
        let eb = self.ext_bucket(m.protocol, m.external);
        unlink_chain(&mut self.ext_buckets[eb], &mut self.mappings, index, |m| {
            &mut m.ext_next
        });
        self.mappings[index as usize].int_next = self.free_mapping;
        self.free_mapping = index;
        self.live_mappings -= 1;
        self.tally_sub(TallyOf::Inside, m.internal.addr_u32(), 1, 0);
        ReleasedMapping {
            protocol: m.protocol,
            internal: m.internal,
            external: m.external,
        }
    }
}

/// Unlinks `index` from the singly linked chain starting at `*head`;
/// `link` selects the chain's link field of an entry.
fn unlink_chain<E>(head: &mut u32, entries: &mut [E], index: u32, link: fn(&mut E) -> &mut u32) {
    let after = *link(&mut entries[index as usize]);
    if *head == index {
        *head = after;
        return;
    }
    let mut i = *head;
    while i != NIL {
        let l = link(&mut entries[i as usize]);
        if *l == index {
            *l = after;
            return;
        }
        i = *l;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: [u64; TIMER_CLASSES] = [300, 7440, 240, 60, 300, 240, 60];

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint::new(Ipv4Addr::new(10, 0, 0, last), port)
    }

    fn udp(inside: Endpoint, external: Endpoint, outside: Endpoint, mapping: u32) -> NewSession {
        NewSession {
            inside,
            external,
            outside,
            protocol: Protocol::Udp,
            kind: SessionKind::Snat,
            initiator: Direction::Outbound,
            tcp: TcpState::SynSent,
            hairpin: false,
            rule: RuleId(1),
            mapping,
        }
    }

    #[test]
    fn session_size_is_one_cache_line() {
        assert!(core::mem::size_of::<Session>() <= 64);
        assert!(core::mem::size_of::<Mapping>() <= 32);
    }

    #[test]
    fn insert_lookup_remove_with_colliding_chains() {
        // Capacity 4 gives 4 buckets, so chains are shared.
        let mut t = SessionTable::new(4, 7, TIMEOUTS);
        let ext = ep(100, 5000);
        let m = t
            .insert_mapping(Protocol::Udp, ep(1, 1000), ext, RuleId(1))
            .unwrap();
        let ids: Vec<u32> = (0..4)
            .map(|k| {
                t.insert_session(udp(ep(1, 1000), ext, ep(200, 53 + k), m), k.into())
                    .unwrap()
            })
            .collect();
        assert!(t.is_full());
        assert!(t
            .insert_session(udp(ep(1, 1000), ext, ep(201, 1), m), 9)
            .is_none());
        for (k, &id) in ids.iter().enumerate() {
            let outside = ep(200, 53 + k as u16);
            assert_eq!(t.lookup_outbound(Protocol::Udp, ep(1, 1000), outside), id);
            assert_eq!(t.lookup_inbound(Protocol::Udp, ext, outside), id);
        }
        assert_eq!(t.lookup_mapping_external(Protocol::Udp, ext), m);
        // Remove from the middle of the chains, then the rest.
        assert_eq!(t.remove_session(ids[1]), None);
        assert_eq!(t.lookup_inbound(Protocol::Udp, ext, ep(200, 54)), NIL);
        assert_eq!(t.lookup_inbound(Protocol::Udp, ext, ep(200, 55)), ids[2]);
        assert_eq!(t.remove_session(ids[0]), None);
        assert_eq!(t.remove_session(ids[3]), None);
        let released = t.remove_session(ids[2]).unwrap();
        assert_eq!(released.external, ext);
        assert_eq!((t.len(), t.mapping_count()), (0, 0));
        assert_eq!(t.lookup_mapping_external(Protocol::Udp, ext), NIL);
        assert_eq!(
            t.lookup_mapping_internal(Protocol::Udp, ep(1, 1000), ext.addr),
            NIL
        );
        // Slots are reused without growing.
        let again = t
            .insert_session(udp(ep(2, 1), ext, ep(3, 1), NIL), 20)
            .unwrap();
        assert!(again < 4);
    }

    #[test]
    fn lru_order_and_expiry() {
        let mut t = SessionTable::new(8, 1, TIMEOUTS);
        let a = t
            .insert_session(udp(ep(1, 1), ep(100, 1), ep(200, 1), NIL), 0)
            .unwrap();
        let b = t
            .insert_session(udp(ep(1, 2), ep(100, 2), ep(200, 1), NIL), 10)
            .unwrap();
        assert_eq!(t.oldest_expired(299), NIL);
        assert_eq!(t.oldest_expired(300), a);
        t.touch(a, 100, true);
        assert_eq!(t.oldest_expired(310), b);
        t.remove_session(b);
        assert_eq!(t.oldest_expired(399), NIL);
        assert_eq!(t.oldest_expired(400), a);
        assert_eq!(t.iter().count(), 1);
    }

    /// Chain entries an inbound lookup of `outside -> external` walks
    /// before it finds its session (or the chain ends).
    fn inbound_steps(t: &SessionTable, external: Endpoint, outside: Endpoint) -> usize {
        let mut steps = 0;
        let mut i = t.in_buckets[t.in_bucket(Protocol::Udp, external, outside)];
        while i != NIL {
            steps += 1;
            let s = &t.sessions[i as usize];
            if s.external == external && s.outside == outside {
                break;
            }
            i = s.in_next;
        }
        steps
    }

    #[test]
    fn inbound_lookup_is_flat_in_sessions_from_one_remote_address() {
        // One remote address talking to one external endpoint from every
        // source port it has: the inbound chains must not grow with it.
        for sessions in [16u16, 1024, 16384] {
            let mut t = SessionTable::new(usize::from(sessions), 11, TIMEOUTS);
            let ext = ep(100, 5000);
            let m = t
                .insert_mapping(Protocol::Udp, ep(1, 1000), ext, RuleId(1))
                .unwrap();
            for port in 0..sessions {
                t.insert_session(udp(ep(1, 1000), ext, ep(200, 1 + port), m), 0)
                    .unwrap();
            }
            let mut worst = 0;
            let mut total = 0;
            for port in 0..sessions {
                let outside = ep(200, 1 + port);
                let steps = inbound_steps(&t, ext, outside);
                assert_ne!(t.lookup_inbound(Protocol::Udp, ext, outside), NIL);
                worst = worst.max(steps);
                total += steps;
            }
            let mean = total as f64 / f64::from(sessions);
            assert!(
                mean < 2.0 && worst <= 12,
                "{sessions} sessions from one address: mean {mean:.2} steps, worst {worst}"
            );
            assert!(t.has_session_with_address(m, Ipv4Addr::new(10, 0, 0, 200), 1));
        }
    }

    #[test]
    fn address_dependent_permission_uses_address_only() {
        let mut t = SessionTable::new(8, 3, TIMEOUTS);
        let ext = ep(100, 7);
        let m = t
            .insert_mapping(Protocol::Udp, ep(1, 1), ext, RuleId(1))
            .unwrap();
        let other = t
            .insert_mapping(Protocol::Tcp, ep(1, 1), ext, RuleId(1))
            .unwrap();
        let a = t
            .insert_session(udp(ep(1, 1), ext, ep(200, 1), m), 0)
            .unwrap();
        let outside = Ipv4Addr::new(10, 0, 0, 200);
        assert!(t.has_session_with_address(m, outside, 1));
        assert!(!t.has_session_with_address(m, Ipv4Addr::new(10, 0, 0, 201), 1));
        assert!(!t.has_session_with_address(other, outside, 1));
        // Timed out but not reaped: no longer a permission.
        assert!(!t.has_session_with_address(m, outside, 300));
        // A second session with the same address from another port keeps
        // the permit alive when the first goes, and refreshes it.
        let b = t
            .insert_session(udp(ep(1, 1), ext, ep(200, 2), m), 100)
            .unwrap();
        t.remove_session(a);
        assert!(t.has_session_with_address(m, outside, 399));
        assert!(!t.has_session_with_address(m, outside, 400));
        t.touch(b, 350, true);
        assert!(t.has_session_with_address(m, outside, 649));
        t.remove_session(b);
        assert!(!t.has_session_with_address(m, outside, 351));
    }

    #[test]
    fn tallies_follow_sessions_and_mappings_and_are_freed_with_them() {
        let mut t = SessionTable::new(8, 5, TIMEOUTS);
        let host = ep(1, 1000);
        let ext = ep(100, 5000);
        let m = t
            .insert_mapping(Protocol::Udp, host, ext, RuleId(1))
            .unwrap();
        assert_eq!(t.tally(TallyOf::Inside, host.addr), (1, 0));
        let a = t.insert_session(udp(host, ext, ep(200, 1), m), 0).unwrap();
        let b = t.insert_session(udp(host, ext, ep(201, 1), m), 0).unwrap();
        // A DNAT session opened from outside counts for the remote address
        // and the rule, not for the backend.
        let mut d = udp(ep(2, 80), ep(100, 80), ep(202, 7), NIL);
        d.kind = SessionKind::Dnat;
        d.initiator = Direction::Inbound;
        d.rule = RuleId(9);
        let c = t.insert_session(d, 0).unwrap();
        assert_eq!(t.tally(TallyOf::Inside, host.addr), (1, 2));
        assert_eq!(t.tally(TallyOf::Inside, Ipv4Addr::new(10, 0, 0, 2)), (0, 0));
        assert_eq!(
            t.tally(TallyOf::Remote, Ipv4Addr::new(10, 0, 0, 202)),
            (0, 1)
        );
        assert_eq!(
            (t.rule_sessions(RuleId(9)), t.rule_sessions(RuleId(1))),
            (1, 0)
        );
        t.remove_session(a);
        assert_eq!(t.tally(TallyOf::Inside, host.addr), (1, 1));
        t.remove_session(b);
        t.remove_session(c);
        assert_eq!(t.tally(TallyOf::Inside, host.addr), (0, 0));
        assert_eq!(
            t.tally(TallyOf::Remote, Ipv4Addr::new(10, 0, 0, 202)),
            (0, 0)
        );
        assert_eq!(t.rule_sessions(RuleId(9)), 0);
        // Every tally slot is back on the free list: refilling the table
        // with distinct hosts does not grow it.
        for k in 0..8u8 {
            t.insert_session(udp(ep(10 + k, 1), ep(100, 1), ep(200, 1), NIL), 0)
                .unwrap();
        }
        assert_eq!(t.tallies.len(), 8);
    }
}
