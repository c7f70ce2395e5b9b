//! One worker's translator: rules snapshot, session table, port bitmaps and
//! counters, owned by a single thread (no locks).
//!
//! # Steering both directions to the owning worker
//!
//! Sessions are per worker, so the dataplane must hand every packet of a
//! session to the worker that owns it, even when all traffic arrives on one
//! RX queue (veth). The external port space is cut into 64-port blocks dealt
//! round-robin to workers ([`crate::owner_worker_for_inbound`]):
//!
//! * inbound packets go to the owner of their destination port (ICMP echo:
//!   identifier; ICMP errors: the source port of the embedded packet);
//! * outbound packets go to the owner of their source port (ICMP errors:
//!   the destination port of the embedded packet), or, when the source is a
//!   DNAT backend, to the owner of the rule's public port
//!   ([`NatRules::dnat_for_backend`]).
//!
//! A worker keeps the source port when it is free (it owns it, since the
//! packet was steered by it) and otherwise allocates only ports it owns, so
//! return traffic lands on the same worker. Endpoint-independent mapping
//! holds because every flow of one internal endpoint reaches one worker.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::config::{ConfigError, NatConfig};
use crate::counters::{DropReason, NatCounters};
use crate::flow::{Direction, Endpoint, FlowTuple, Protocol};
use crate::fragments::FragmentTable;
use crate::ports::PortAllocator;
use crate::rules::{BackendSelection, Egress, NatRules, RuleId, SnatTarget, FULL_NAT_PORTS};
use crate::table::{
    endpoint_bits, keyed_hash, NewSession, SessionKind, SessionTable, TallyOf, TimerClass, NIL,
    TIMER_CLASSES,
};
use crate::tcp::{Segment, TcpState, TcpWindow};

/// Whether a packet without a session may open one, and if not, why it is
/// dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// May create a session (initial SYN, any UDP, echo request).
    Allowed,
    /// Must find an existing session or be dropped for this reason.
    Refused(DropReason),
}

/// The facts of one packet leg the session logic needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Leg {
    pub(crate) protocol: Protocol,
    pub(crate) source: Endpoint,
    pub(crate) destination: Endpoint,
    pub(crate) tcp: Segment,
    pub(crate) opening: Opening,
}

/// A session found or created for a packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding {
    pub(crate) inside: Endpoint,
    pub(crate) external: Endpoint,
    pub(crate) hairpin: bool,
    pub(crate) kind: SessionKind,
}

/// The translator of one worker.
#[derive(Debug)]
pub struct NatWorker {
    pub(crate) config: NatConfig,
    timeouts: [u64; TIMER_CLASSES],
    rules: Arc<NatRules>,
    round_robin: Vec<u32>,
    pub(crate) table: SessionTable,
    ports: PortAllocator,
    pub(crate) fragments: FragmentTable,
    /// Sequence state of TCP sessions, by session index.
    windows: Box<[TcpWindow]>,
    pub(crate) counters: NatCounters,
}

impl NatWorker {
    /// Builds a worker, allocating every table up front.
    pub fn new(config: NatConfig, rules: Arc<NatRules>) -> Result<Self, ConfigError> {
        config.validate()?;
        let t = config.timeouts;
        let mut timeouts = [0; TIMER_CLASSES];
        timeouts[TimerClass::Udp as usize] = t.udp;
        timeouts[TimerClass::TcpEstablished as usize] = t.tcp_established;
        timeouts[TimerClass::TcpTransitory as usize] = t.tcp_transitory;
        timeouts[TimerClass::Icmp as usize] = t.icmp;
        timeouts[TimerClass::UdpUnanswered as usize] = t.udp;
        timeouts[TimerClass::TcpUnanswered as usize] = t.tcp_transitory;
        timeouts[TimerClass::IcmpUnanswered as usize] = t.icmp;
        let mut worker = Self {
            config,
            timeouts,
            rules: Arc::new(NatRules::default()),
            round_robin: Vec::new(),
            table: SessionTable::new(config.max_sessions, config.hash_key, timeouts),
            ports: PortAllocator::new(
                config.max_external_addresses,
                config.port_reuse_delay,
                config.max_sessions / 4,
                config.hash_key,
            ),
            fragments: FragmentTable::new(config.fragment_flows, config.hash_key),
            windows: vec![TcpWindow::default(); config.max_sessions].into_boxed_slice(),
            counters: NatCounters::default(),
        };
        worker.install_rules(rules);
        Ok(worker)
    }

    /// Switches to a new rule snapshot. Existing sessions keep their
    /// translation (and rule id) until they expire; new flows use the new
    /// rules. Called from the worker loop when the control thread has
    /// published a new snapshot; allocates only for new pool addresses.
    pub fn install_rules(&mut self, rules: Arc<NatRules>) {
        for rule in rules.snat() {
            if let SnatTarget::Pool { addresses, .. } = &rule.target {
                for &addr in addresses {
                    for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Icmp] {
                        // Past the address budget the pool address simply
                        // yields `nat_exhausted` for its new flows.
                        let _ = self.ports.ensure(addr, protocol);
                    }
                }
            }
        }
        self.round_robin.clear();
        self.round_robin.resize(rules.dnat().len(), 0);
        self.rules = rules;
    }

    /// The rule snapshot in force.
    pub fn rules(&self) -> &Arc<NatRules> {
        &self.rules
    }

    /// The configuration.
    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// Counters.
    pub fn counters(&self) -> &NatCounters {
        &self.counters
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.table.len()
    }

    /// Live endpoint-independent mappings.
    pub fn mapping_count(&self) -> usize {
        self.table.mapping_count()
    }

    /// External ports currently held by mappings.
    pub fn ports_in_use(&self) -> u64 {
        self.ports.ports_in_use()
    }

    /// External ports freed by mappings and cooling before another
    /// endpoint may have them (RFC 6888 REQ-8).
    pub fn ports_cooling(&self) -> u64 {
        self.ports.ports_cooling()
    }

    /// Session capacity.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Heap bytes held by the tables and port bitmaps. Fixed after
    /// construction except for port bitmaps of newly seen addresses.
    pub fn memory_bytes(&self) -> usize {
        self.table.heap_bytes()
            + self.ports.heap_bytes()
            + self.fragments.heap_bytes()
            + self.windows.len() * core::mem::size_of::<TcpWindow>()
    }

    /// Removes up to `budget` sessions whose idle timeout has passed at
    /// `now`; returns how many. Call once per batch with a small budget
    /// (expiry never scans: it pops the heads of the LRU lists). Lookups
    /// also treat expired sessions as gone, so a late call never lets a
    /// session outlive its timeout.
    pub fn expire(&mut self, now: u64, budget: usize) -> usize {
        let mut removed = 0;
        while removed < budget {
            let i = self.table.oldest_expired(now);
            if i == NIL {
                break;
            }
            self.remove_session(i, now);
            self.counters.sessions_expired += 1;
            removed += 1;
        }
        removed
    }

    /// Removes a session; its mapping's port, if this was the mapping's
    /// last session, cools before another endpoint may have it
    /// (RFC 6888 REQ-8).
    fn remove_session(&mut self, index: u32, now: u64) {
        if let Some(released) = self.table.remove_session(index) {
            self.ports.release(
                released.external.addr,
                released.protocol,
                released.external.port,
                released.internal,
                now,
            );
        }
    }

    /// A live session index, reaping it first if its timeout has passed.
    fn live(&mut self, index: u32, now: u64) -> u32 {
        if index != NIL && self.table.is_expired(index, now) {
            self.remove_session(index, now);
            self.counters.sessions_expired += 1;
            return NIL;
        }
        index
    }

    fn binding(&self, index: u32) -> Binding {
        let s = self.table.session(index);
        Binding {
            inside: s.inside,
            external: s.external,
            hairpin: s.hairpin,
            kind: s.kind,
        }
    }

    /// Follows a packet of an existing session. A TCP reset outside the
    /// receiver's window is refused and changes nothing (RFC 5961 section
    /// 3): it neither resets nor refreshes the session.
    fn track(
        &mut self,
        index: u32,
        direction: Direction,
        tcp: Segment,
        now: u64,
    ) -> Result<(), DropReason> {
        let s = self.table.session(index);
        let protocol = s.protocol;
        let answer = direction != s.initiator && !s.answered;
        if protocol == Protocol::Tcp {
            let window = &mut self.windows[index as usize];
            if tcp.flags.rst && !window.rst_acceptable(direction, &tcp) {
                return Err(DropReason::TcpRstOutOfWindow);
            }
            window.update(direction, &tcp);
            let next = s.tcp.on_segment(direction, s.initiator, tcp.flags);
            self.table.set_tcp_state(index, next);
        }
        if answer {
            self.table.set_answered(index);
        }
        // RFC 4787 REQ-6: outbound traffic always refreshes; inbound UDP
        // only when configured. TCP and ICMP refresh both ways.
        let refresh = direction == Direction::Outbound
            || protocol != Protocol::Udp
            || self.config.inbound_refresh;
        self.table.touch(index, now, refresh);
        Ok(())
    }

    /// Whether an initial SYN from the side that opened a TCP session
    /// whose connection is over (both FINs or a reset seen) starts a new
    /// connection on the same tuple (RFC 1122 §4.2.2.13: a SYN may reopen
    /// a connection in TIME-WAIT), so the old session gives way.
    fn reopens(&self, index: u32, direction: Direction, opening: Opening) -> bool {
        let s = self.table.session(index);
        s.protocol == Protocol::Tcp
            && opening == Opening::Allowed
            && s.initiator == direction
            && matches!(s.tcp, TcpState::TimeWait | TcpState::Reset)
    }

    /// Room for one more session: when the table is full, an expired
    /// session is reclaimed, or else the oldest session nothing has
    /// answered is dropped early (an unanswered SYN, datagram or echo
    /// request, as Linux conntrack's early drop does), so a flood of
    /// unanswered flows cannot lock new flows out. Answered sessions are
    /// never dropped for a new flow.
    fn has_room(&mut self, now: u64) -> bool {
        if !self.table.is_full() {
            return true;
        }
        if self.expire(now, 1) == 1 {
            return true;
        }
        let victim = self.table.oldest_unanswered();
        if victim == NIL {
            return false;
        }
        self.remove_session(victim, now);
        self.counters.sessions_early_dropped += 1;
        true
    }

    /// The live session of an outbound packet `source -> destination`,
    /// followed (TCP state, refresh); `None` if there is none.
    fn follow_outbound(
        &mut self,
        protocol: Protocol,
        source: Endpoint,
        destination: Endpoint,
        tcp: Segment,
        now: u64,
    ) -> Result<Option<Binding>, DropReason> {
        let found = self.table.lookup_outbound(protocol, source, destination);
        let index = self.live(found, now);
        if index == NIL {
            return Ok(None);
        }
        self.track(index, Direction::Outbound, tcp, now)?;
        Ok(Some(self.binding(index)))
    }

    /// Session for an outbound packet `source -> destination`, created if a
    /// static or SNAT rule applies. `Ok(None)`: no rule, pass unchanged.
    pub(crate) fn outbound(
        &mut self,
        leg: Leg,
        egress: Egress,
        now: u64,
    ) -> Result<Option<Binding>, DropReason> {
        let Leg {
            protocol,
            source,
            destination,
            tcp,
            opening,
        } = leg;
        if let Some(binding) = self.follow_outbound(protocol, source, destination, tcp, now)? {
            return Ok(Some(binding));
        }
        let rules = Arc::clone(&self.rules);
        let (rule, kind, external, mapping) = if let Some(one) =
            rules.match_static_internal(source.addr)
        {
            if let Opening::Refused(reason) = opening {
                return Err(reason);
            }
            self.inside_session_quota(source.addr)?;
            if !self.has_room(now) {
                return Err(DropReason::NatExhausted);
            }
            let external = Endpoint::new(one.external, source.port);
            (one.id, SessionKind::Static, external, NIL)
        } else if let Some(snat) = rules.match_snat(source.addr, destination.addr, egress.id) {
            if let Opening::Refused(reason) = opening {
                return Err(reason);
            }
            // Quotas before the room check, which may drop another
            // session early: a refused flow must cost nobody anything.
            self.inside_session_quota(source.addr)?;
            let external_addr = self.external_address(source, &snat.target, egress);
            if self
                .table
                .lookup_mapping_internal(protocol, source, external_addr)
                == NIL
            {
                self.inside_port_quota(source.addr)?;
            }
            if !self.has_room(now) {
                return Err(DropReason::NatExhausted);
            }
            let mapping = self.mapping_for(protocol, source, snat.id, &snat.target, egress, now)?;
            let external = self.table.mapping(mapping).external;
            (snat.id, SessionKind::Snat, external, mapping)
        } else {
            return Ok(None);
        };
        let hairpin = self.is_own_external(protocol, destination);
        let new = NewSession {
            inside: source,
            external,
            outside: destination,
            protocol,
            kind,
            initiator: Direction::Outbound,
            tcp: TcpState::SynSent,
            hairpin,
            rule,
            mapping,
        };
        self.create(new, tcp, now).map(Some)
    }

    fn create(&mut self, new: NewSession, tcp: Segment, now: u64) -> Result<Binding, DropReason> {
        match self.table.insert_session(new, now) {
            Some(index) => {
                self.counters.sessions_created += 1;
                if new.protocol == Protocol::Tcp {
                    let window = &mut self.windows[index as usize];
                    *window = TcpWindow::default();
                    window.update(new.initiator, &tcp);
                }
                Ok(self.binding(index))
            }
            None => {
                if new.mapping != NIL {
                    if let Some(released) = self.table.discard_unused_mapping(new.mapping) {
                        self.ports.release_unused(
                            released.external.addr,
                            released.protocol,
                            released.external.port,
                        );
                    }
                }
                Err(DropReason::NatExhausted)
            }
        }
    }

    /// Whether `endpoint` is one this worker translates inbound traffic for:
    /// then an outbound packet to it must hairpin (RFC 4787 REQ-9,
    /// RFC 5382 REQ-2).
    pub(crate) fn is_own_external(&self, protocol: Protocol, endpoint: Endpoint) -> bool {
        self.table.lookup_mapping_external(protocol, endpoint) != NIL
            || self.rules.match_dnat(protocol, endpoint).is_some()
            || self.rules.match_static_external(endpoint.addr).is_some()
    }

    /// The external address `internal` is translated to under `target`.
    fn external_address(
        &self,
        internal: Endpoint,
        target: &SnatTarget,
        egress: Egress,
    ) -> Ipv4Addr {
        match target {
            // RFC 4787 REQ-2 "paired" pooling: the pool address depends on
            // the internal address only.
            SnatTarget::Pool { addresses, .. } => {
                let h = keyed_hash(self.config.hash_key, u64::from(internal.addr_u32()), 0);
                addresses[(h % addresses.len() as u64) as usize]
            }
            SnatTarget::Masquerade { .. } => egress.addr,
        }
    }

    /// RFC 6888 REQ-5: room for one more session of inside address `addr`
    /// (one hash probe).
    fn inside_session_quota(&self, addr: Ipv4Addr) -> Result<(), DropReason> {
        let limit = self.config.sessions_per_inside_address;
        let (_, sessions) = self.table.tally(TallyOf::Inside, addr);
        if limit != 0 && sessions >= limit {
            return Err(DropReason::QuotaInsideSessions);
        }
        Ok(())
    }

    /// RFC 6888 REQ-4: room for one more external port (mapping) of inside
    /// address `addr`.
    fn inside_port_quota(&self, addr: Ipv4Addr) -> Result<(), DropReason> {
        let limit = self.config.ports_per_inside_address;
        let (mappings, _) = self.table.tally(TallyOf::Inside, addr);
        if limit != 0 && mappings >= limit {
            return Err(DropReason::QuotaInsidePorts);
        }
        Ok(())
    }

    /// Room for one more session opened inbound by `remote` through DNAT
    /// or static `rule` (RFC 6888 REQ-5 for state created from outside).
    /// The inbound leg of a hairpinned packet comes from the external
    /// address all inside hosts share: its inside host's own quota
    /// applies instead of the remote one.
    fn inbound_quota(
        &self,
        remote: Ipv4Addr,
        rule: RuleId,
        hairpin: bool,
    ) -> Result<(), DropReason> {
        let per_rule = self.config.inbound_sessions_per_rule;
        if per_rule != 0 && self.table.rule_sessions(rule) >= per_rule {
            return Err(DropReason::QuotaRule);
        }
        let per_remote = self.config.inbound_sessions_per_remote_address;
        if !hairpin && per_remote != 0 {
            let (_, sessions) = self.table.tally(TallyOf::Remote, remote);
            if sessions >= per_remote {
                return Err(DropReason::QuotaRemote);
            }
        }
        Ok(())
    }

    /// The endpoint-independent mapping for `internal` under an SNAT rule,
    /// reused if it exists (RFC 4787 REQ-1), else created with a new port.
    fn mapping_for(
        &mut self,
        protocol: Protocol,
        internal: Endpoint,
        rule: RuleId,
        target: &SnatTarget,
        egress: Egress,
        now: u64,
    ) -> Result<u32, DropReason> {
        let key = self.config.hash_key;
        let external_addr = self.external_address(internal, target, egress);
        let existing = self
            .table
            .lookup_mapping_internal(protocol, internal, external_addr);
        if existing != NIL {
            return Ok(existing);
        }
        self.inside_port_quota(internal.addr)?;
        let map = self
            .ports
            .ensure(external_addr, protocol)
            .ok_or(DropReason::NatExhausted)?;
        let range = target.ports();
        let rules = &self.rules;
        let partition = self.config.partition;
        let reserved = |port| rules.is_reserved(external_addr, protocol, port);
        let acceptable = |port| range.contains(port) && partition.owns(port) && !reserved(port);
        // The port this endpoint held a moment ago, if it still cools:
        // the mapping comes back unchanged (RFC 6888 REQ-8 lets the same
        // subscriber have it; RFC 4787 REQ-1 stays true across the gap).
        let port = if let Some(port) = self.ports.reclaim(map, internal, now, acceptable) {
            port
        // Port preservation when the port is free, in range and ours; no
        // parity preservation (RFC 4787 section 4.2.2 makes it optional).
        } else if acceptable(internal.port) && self.ports.try_take(map, internal.port, now) {
            internal.port
        } else {
            let hint = keyed_hash(key, endpoint_bits(internal), 1) as u32;
            match self
                .ports
                .allocate(map, range, partition, hint, reserved, now)
            {
                Some(port) => port,
                None => {
                    // Free ports left but all cooling: refused, never
                    // reused early (RFC 6888 REQ-8).
                    if self.ports.has_cooling(map) {
                        self.counters.mappings_refused_cooling += 1;
                    }
                    return Err(DropReason::NatExhausted);
                }
            }
        };
        let external = Endpoint::new(external_addr, port);
        match self
            .table
            .insert_mapping(protocol, internal, external, rule)
        {
            Some(index) => {
                self.counters.mappings_created += 1;
                Ok(index)
            }
            None => {
                self.ports.release_unused(external_addr, protocol, port);
                Err(DropReason::NatExhausted)
            }
        }
    }

    /// Session for an inbound packet `source -> destination`, created
    /// through a mapping (subject to filtering), a DNAT rule or a static
    /// rule. `Ok(None)`: not addressed to anything translated. `hairpin`:
    /// the packet is the inbound leg of a hairpinned outbound packet, so
    /// the new session's replies must hairpin too.
    pub(crate) fn inbound(
        &mut self,
        leg: Leg,
        hairpin: bool,
        now: u64,
    ) -> Result<Option<Binding>, DropReason> {
        let Leg {
            protocol,
            source,
            destination,
            tcp,
            opening,
        } = leg;
        let found = self.table.lookup_inbound(protocol, destination, source);
        let mut index = self.live(found, now);
        if index != NIL && self.reopens(index, Direction::Inbound, opening) {
            // The client reused its port for a new connection: the new
            // flow picks its backend afresh instead of following a closed
            // one to a backend that may be gone.
            self.remove_session(index, now);
            index = NIL;
        }
        if index != NIL {
            self.track(index, Direction::Inbound, tcp, now)?;
            return Ok(Some(self.binding(index)));
        }
        let mapping = self.table.lookup_mapping_external(protocol, destination);
        if mapping != NIL {
            // ICMP identifiers are only answered, never called: an echo
            // request to a dynamic mapping is not forwarded inside.
            if protocol == Protocol::Icmp {
                return Err(DropReason::NoMapping);
            }
            let permitted = match self.config.filtering {
                crate::config::Filtering::EndpointIndependent => true,
                crate::config::Filtering::AddressDependent => {
                    self.table
                        .has_session_with_address(mapping, source.addr, now)
                }
            };
            // A full-NAT mapping stands for a client as its backends see
            // it: only the sessions full NAT made may use it.
            if !permitted || self.rules.is_full_nat(self.table.mapping(mapping).rule) {
                return Err(DropReason::Filtered);
            }
            if let Opening::Refused(reason) = opening {
                return Err(reason);
            }
            self.inside_session_quota(self.table.mapping(mapping).internal.addr)?;
            if !self.has_room(now) {
                return Err(DropReason::NatExhausted);
            }
            // The room check may have expired the mapping's last session.
            let mapping = self.table.lookup_mapping_external(protocol, destination);
            if mapping == NIL {
                return Err(DropReason::NoMapping);
            }
            let m = *self.table.mapping(mapping);
            let new = NewSession {
                inside: m.internal,
                external: destination,
                outside: source,
                protocol,
                kind: SessionKind::Snat,
                initiator: Direction::Inbound,
                tcp: TcpState::SynSent,
                hairpin,
                rule: m.rule,
                mapping,
            };
            return self.create(new, tcp, now).map(Some);
        }
        let rules = Arc::clone(&self.rules);
        let (rule, kind, inside) = if let Some((at, dnat)) = rules.match_dnat(protocol, destination)
        {
            let backend = match &dnat.selection {
                BackendSelection::ClientHash => {
                    let h = keyed_hash(self.config.hash_key, endpoint_bits(source), 2);
                    dnat.backends[(h % dnat.backends.len() as u64) as usize]
                }
                BackendSelection::Maglev(table) => {
                    if let Opening::Refused(reason) = opening {
                        return Err(reason);
                    }
                    let h = crate::maglev::flow_hash(self.config.hash_key, source);
                    match table.select(h) {
                        Some(i) => match dnat.backends.get(usize::from(i)) {
                            Some(b) => *b,
                            None => return Err(DropReason::NoBackend),
                        },
                        None => return Err(DropReason::NoBackend),
                    }
                }
                BackendSelection::RoundRobin => {
                    let turn = &mut self.round_robin[at];
                    let backend = dnat.backends[*turn as usize % dnat.backends.len()];
                    *turn = turn.wrapping_add(1);
                    backend
                }
            };
            let kind = if dnat.full_nat && !hairpin {
                SessionKind::FullNat
            } else {
                // A hairpinned flow already comes from a public endpoint
                // of ours: the backend answers through us anyway.
                SessionKind::Dnat
            };
            (dnat.id, kind, backend)
        } else if let Some(one) = rules.match_static_external(destination.addr) {
            (
                one.id,
                SessionKind::Static,
                Endpoint::new(one.internal, destination.port),
            )
        } else if rules.is_pool_address(destination.addr) {
            return Err(DropReason::NoMapping);
        } else {
            return Ok(None);
        };
        if let Opening::Refused(reason) = opening {
            return Err(reason);
        }
        self.inbound_quota(source.addr, rule, hairpin)?;
        if !self.has_room(now) {
            return Err(DropReason::NatExhausted);
        }
        let new = NewSession {
            inside,
            external: destination,
            outside: source,
            protocol,
            kind,
            initiator: Direction::Inbound,
            tcp: TcpState::SynSent,
            hairpin,
            rule,
            mapping: NIL,
        };
        self.create(new, tcp, now).map(Some)
    }

    /// The source half of full NAT for a packet `client -> backend` that a
    /// [`SessionKind::FullNat`] session has just translated: its session,
    /// created on the first packet with a masquerade mapping of the client
    /// on `egress`, the address towards the backend.
    pub(crate) fn full_nat_source(
        &mut self,
        leg: Leg,
        egress: Egress,
        now: u64,
    ) -> Result<Binding, DropReason> {
        let Leg {
            protocol,
            source,
            destination,
            tcp,
            opening,
        } = leg;
        if let Some(binding) = self.follow_outbound(protocol, source, destination, tcp, now)? {
            return Ok(binding);
        }
        if let Opening::Refused(reason) = opening {
            return Err(reason);
        }
        // The destination half, seen from the backend: its rule names
        // the new session.
        let half = self.table.lookup_outbound(protocol, destination, source);
        if half == NIL || self.table.session(half).kind != SessionKind::FullNat {
            return Err(DropReason::NoMapping);
        }
        let rule = self.table.session(half).rule;
        if egress.addr.is_unspecified() {
            return Err(DropReason::NatExhausted);
        }
        if !self.has_room(now) {
            return Err(DropReason::NatExhausted);
        }
        let target = SnatTarget::Masquerade {
            ports: FULL_NAT_PORTS,
        };
        let mapping = self.mapping_for(protocol, source, rule, &target, egress, now)?;
        let new = NewSession {
            inside: source,
            external: self.table.mapping(mapping).external,
            outside: destination,
            protocol,
            kind: SessionKind::FullNatSource,
            initiator: Direction::Outbound,
            tcp: TcpState::SynSent,
            hairpin: false,
            rule,
            mapping,
        };
        self.create(new, tcp, now)
    }

    /// The second translation of a reply through full NAT: the packet
    /// `backend -> client`, its destination already restored by the source
    /// half, gets the virtual endpoint of the destination half as its
    /// source.
    pub(crate) fn full_nat_reply(
        &mut self,
        protocol: Protocol,
        backend: Endpoint,
        client: Endpoint,
        tcp: Segment,
        now: u64,
    ) -> Result<Binding, DropReason> {
        let found = self.table.lookup_outbound(protocol, backend, client);
        let index = self.live(found, now);
        if index == NIL || self.table.session(index).kind != SessionKind::FullNat {
            return Err(DropReason::NoMapping);
        }
        self.track(index, Direction::Outbound, tcp, now)?;
        Ok(self.binding(index))
    }

    /// The session an ICMP error refers to, without refreshing it
    /// (RFC 5508 REQ-6; RFC 4787 REQ-12: ICMP never ends a mapping).
    /// `embedded` is the quoted packet as it travelled: for an inbound
    /// error it went outbound after translation (`external -> outside`);
    /// for an outbound error it came inbound after translation
    /// (`outside -> inside`).
    pub(crate) fn session_for_error(
        &mut self,
        direction: Direction,
        protocol: Protocol,
        embedded_source: Endpoint,
        embedded_destination: Endpoint,
        now: u64,
    ) -> Option<Binding> {
        let found = match direction {
            Direction::Inbound => {
                self.table
                    .lookup_inbound(protocol, embedded_source, embedded_destination)
            }
            Direction::Outbound => {
                self.table
                    .lookup_outbound(protocol, embedded_destination, embedded_source)
            }
        };
        let index = self.live(found, now);
        (index != NIL).then(|| self.binding(index))
    }

    /// Sessions for inspection (`straitctl show nat sessions`), least
    /// recently used first within each timeout class.
    pub fn sessions(&self, now: u64) -> impl Iterator<Item = SessionInfo> + '_ {
        let timeouts = self.timeouts;
        self.table.iter().map(move |s| {
            let idle = now.saturating_sub(u64::from(s.last_seen));
            let class = TimerClass::for_flow(s.protocol, s.tcp, s.answered) as usize;
            SessionInfo {
                rule: s.rule,
                kind: s.kind,
                protocol: s.protocol,
                inside: s.inside,
                external: s.external,
                outside: s.outside,
                initiator: s.initiator,
                tcp_state: (s.protocol == Protocol::Tcp).then_some(s.tcp),
                age: now.saturating_sub(u64::from(s.created)),
                idle,
                expires_in: timeouts[class].saturating_sub(idle),
            }
        })
    }

    /// Live sessions per rule, sorted by rule id.
    pub fn session_count_by_rule(&self) -> Vec<(RuleId, usize)> {
        let mut rules: Vec<RuleId> = self.table.iter().map(|s| s.rule).collect();
        rules.sort_unstable();
        let mut counts: Vec<(RuleId, usize)> = Vec::new();
        for rule in rules {
            match counts.last_mut() {
                Some((last, n)) if *last == rule => *n += 1,
                _ => counts.push((rule, 1)),
            }
        }
        counts
    }
}

/// One session as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// Rule that created the session.
    pub rule: RuleId,
    /// SNAT, DNAT or static.
    pub kind: SessionKind,
    /// Protocol.
    pub protocol: Protocol,
    /// Private-side endpoint.
    pub inside: Endpoint,
    /// The endpoint the outside sees for `inside`.
    pub external: Endpoint,
    /// Remote endpoint.
    pub outside: Endpoint,
    /// Which way the first packet went.
    pub initiator: Direction,
    /// TCP state, for TCP sessions.
    pub tcp_state: Option<TcpState>,
    /// Seconds since creation.
    pub age: u64,
    /// Seconds since the last refreshing packet.
    pub idle: u64,
    /// Seconds until the idle timeout removes it.
    pub expires_in: u64,
}

impl SessionInfo {
    /// The first packet's tuple before translation.
    pub fn original(&self) -> FlowTuple {
        match self.initiator {
            Direction::Outbound => FlowTuple {
                protocol: self.protocol,
                source: self.inside,
                destination: self.outside,
            },
            Direction::Inbound => FlowTuple {
                protocol: self.protocol,
                source: self.outside,
                destination: self.external,
            },
        }
    }

    /// The first packet's tuple after translation.
    pub fn translated(&self) -> FlowTuple {
        match self.initiator {
            Direction::Outbound => FlowTuple {
                protocol: self.protocol,
                source: self.external,
                destination: self.outside,
            },
            Direction::Inbound => FlowTuple {
                protocol: self.protocol,
                source: self.outside,
                destination: self.inside,
            },
        }
    }
}
