//! Neighbour resolution (ARP for IPv4, NDP for IPv6): a per-worker cache.
//!
//! Each worker resolves the next hops it needs itself, so the cache is
//! written without locks. A packet for an unresolved next hop waits in a
//! small bounded queue of that neighbour while requests are retried; when
//! the answer comes the queue is released, when it does not the packets are
//! dropped and counted. Entries age: a reachable entry turns stale after
//! `reachable`, a stale entry is still used but re-probed, and an entry
//! stale for longer than `stale` is forgotten (after RFC 4861 §7.3.2's
//! states, simplified to what a forwarder needs).
//!
//! The cache is sans-I/O: it returns what to send and which held packets to
//! release or drop; the worker does the I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::ratelimit::TokenBucket;

/// Timing and size limits.
#[derive(Debug, Clone, Copy)]
pub struct NeighbourConfig {
    /// How long an answer is trusted without re-probing.
    pub reachable: Duration,
    /// How long a stale entry is kept before it is forgotten.
    pub stale: Duration,
    /// Time between requests for an unresolved neighbour.
    pub retransmit: Duration,
    /// Requests sent before giving up.
    pub max_probes: u8,
    /// Entries at most (per worker).
    pub max_entries: usize,
    /// Packets held for unresolved neighbours at most, all neighbours
    /// together (per worker): a scan of a connected /64 must not take the
    /// frame pool.
    pub max_held: usize,
    /// New unresolved neighbours per second at most, and the burst above
    /// that rate: each one costs a request on the wire and holds frames.
    pub new_per_second: u32,
    /// See `new_per_second`.
    pub new_burst: u32,
}

impl Default for NeighbourConfig {
    fn default() -> Self {
        NeighbourConfig {
            reachable: Duration::from_secs(30),
            stale: Duration::from_secs(120),
            retransmit: Duration::from_secs(1),
            max_probes: 3,
            max_entries: 4096,
            max_held: 1024,
            new_per_second: 1000,
            new_burst: 200,
        }
    }
}

/// Packets held per unresolved neighbour (RFC 1122 §2.3.2.2 asks for at
/// least one; a few absorb a burst such as a TCP handshake plus data).
///
/// Linux queues up to `unres_qlen_bytes` (about 100 full-size packets) per
/// neighbour; a forwarder whose frames come from a fixed pool cannot: 8 per
/// neighbour and [`NeighbourConfig::max_held`] (1024 by default, an eighth
/// of the default 8192-frame pool) in all, so traffic to addresses that
/// never answer costs at most that much of the pool and the rest keeps
/// forwarding.
pub const PENDING_PER_NEIGHBOUR: usize = 8;

/// A neighbour's key: the egress port and the next hop's address.
pub type NeighbourKey = (u16, IpAddr);

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighbourState {
    /// Requests sent, no answer yet.
    Incomplete,
    /// Answered recently.
    Reachable,
    /// Answered long ago; still used, being re-probed.
    Stale,
    /// Configured by the operator; never ages.
    Static,
}

#[derive(Debug)]
struct Entry<P> {
    mac: [u8; 6],
    state: NeighbourState,
    /// When the state was entered or last confirmed.
    since: Instant,
    /// Probes sent in this round.
    probes: u8,
    /// When the next probe is due (Incomplete or Stale).
    next_probe: Instant,
    pending: [Option<P>; PENDING_PER_NEIGHBOUR],
}

/// Result of looking up a next hop for a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution<P> {
    /// Send to this MAC now. `probe` asks the caller to also send a unicast
    /// request (the entry is stale).
    Known {
        mac: [u8; 6],
        probe: Option<[u8; 6]>,
        packet: P,
    },
    /// The packet was queued; if `request` is true send a broadcast request
    /// now.
    Queued { request: bool },
    /// The packet could not be held; drop it with this reason.
    Refused(P, RefuseReason),
}

/// Why a packet could not wait for its neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// Its neighbour already holds the maximum.
    QueueFull,
    /// The table holds `max_entries` neighbours.
    TableFull,
    /// `max_held` packets already wait, all neighbours together.
    HeldLimit,
    /// Too many new neighbours to resolve this second.
    RateLimited,
}

/// What a timer tick asks the caller to do for one neighbour.
#[derive(Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Send a request for this neighbour (broadcast if `unicast` is None).
    Request {
        key: NeighbourKey,
        unicast: Option<[u8; 6]>,
    },
    /// Resolution failed: drop these held packets.
    Unresolved { key: NeighbourKey },
}

/// A per-worker neighbour cache holding packets of type `P` while resolving.
#[derive(Debug)]
pub struct NeighbourTable<P> {
    config: NeighbourConfig,
    entries: HashMap<NeighbourKey, Entry<P>>,
    /// Packets held, all entries together.
    held: usize,
    /// Admits new unresolved entries.
    new_entries: Option<TokenBucket>,
}

impl<P> NeighbourTable<P> {
    /// An empty cache.
    pub fn new(config: NeighbourConfig) -> NeighbourTable<P> {
        NeighbourTable {
            config,
            entries: HashMap::with_capacity(config.max_entries.min(1024)),
            held: 0,
            new_entries: None,
        }
    }

    /// Packets held for unresolved neighbours.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }

    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds an entry that never ages.
    pub fn add_static(&mut self, key: NeighbourKey, mac: [u8; 6], now: Instant) {
        self.entries
            .insert(key, Entry::new(mac, NeighbourState::Static, now));
    }

    /// Looks up the MAC for `key`, queueing `packet` if it is unknown.
    pub fn resolve(&mut self, key: NeighbourKey, packet: P, now: Instant) -> Resolution<P> {
        let max = self.config.max_entries;
        let len = self.entries.len();
        let full = self.held >= self.config.max_held;
        let retransmit = self.config.retransmit;
        let reachable = self.config.reachable;
        if let Some(e) = self.entries.get_mut(&key) {
            return match e.state {
                NeighbourState::Reachable | NeighbourState::Static => {
                    if e.state == NeighbourState::Reachable
                        && now.duration_since(e.since) >= reachable
                    {
                        e.state = NeighbourState::Stale;
                        e.since = now;
                        e.probes = 1;
                        e.next_probe = now + retransmit;
                        return Resolution::Known {
                            mac: e.mac,
                            probe: Some(e.mac),
                            packet,
                        };
                    }
                    Resolution::Known {
                        mac: e.mac,
                        probe: None,
                        packet,
                    }
                }
                NeighbourState::Stale => Resolution::Known {
                    mac: e.mac,
                    probe: None,
                    packet,
                },
                NeighbourState::Incomplete => match e.pending.iter_mut().find(|p| p.is_none()) {
                    Some(_) if full => Resolution::Refused(packet, RefuseReason::HeldLimit),
                    Some(slot) => {
                        *slot = Some(packet);
                        self.held += 1;
                        Resolution::Queued { request: false }
                    }
                    None => Resolution::Refused(packet, RefuseReason::QueueFull),
                },
            };
        }
        if len >= max {
            return Resolution::Refused(packet, RefuseReason::TableFull);
        }
        if full {
            return Resolution::Refused(packet, RefuseReason::HeldLimit);
        }
        let cfg = self.config;
        let bucket = self
            .new_entries
            .get_or_insert_with(|| TokenBucket::new(cfg.new_per_second, cfg.new_burst, now));
        if !bucket.take(now) {
            return Resolution::Refused(packet, RefuseReason::RateLimited);
        }
        let mut e = Entry::new([0; 6], NeighbourState::Incomplete, now);
        e.probes = 1;
        e.next_probe = now + retransmit;
        e.pending[0] = Some(packet);
        self.held += 1;
        self.entries.insert(key, e);
        Resolution::Queued { request: true }
    }

    /// Records an answer (ARP reply/request, neighbour advertisement)
    /// from `key` and releases the packets that waited for it into `out`.
    ///
    /// Following RFC 826's merge rule, only neighbours already in the table
    /// are updated unless `create` is set (the packet was addressed to us).
    pub fn confirm(
        &mut self,
        key: NeighbourKey,
        mac: [u8; 6],
        create: bool,
        now: Instant,
        mut out: impl FnMut(P),
    ) {
        let room = self.entries.len() < self.config.max_entries;
        match self.entries.get_mut(&key) {
            Some(e) => {
                if e.state == NeighbourState::Static {
                    return;
                }
                e.mac = mac;
                e.state = NeighbourState::Reachable;
                e.since = now;
                e.probes = 0;
                for p in e.pending.iter_mut().filter_map(Option::take) {
                    self.held -= 1;
                    out(p);
                }
            }
            None if create && room => {
                self.entries
                    .insert(key, Entry::new(mac, NeighbourState::Reachable, now));
            }
            None => {}
        }
    }

    /// Runs timers: retries, failures, ageing. Call a few times a second.
    /// Held packets of neighbours that failed go to `dropped`.
    pub fn tick(
        &mut self,
        now: Instant,
        mut action: impl FnMut(TimerAction),
        mut dropped: impl FnMut(P),
    ) {
        let cfg = self.config;
        let held = &mut self.held;
        self.entries.retain(|key, e| match e.state {
            NeighbourState::Static => true,
            NeighbourState::Reachable => {
                // Ageing into Stale happens lazily on use; unused entries are
                // dropped once they could no longer be trusted anyway.
                now.duration_since(e.since) < cfg.reachable + cfg.stale
            }
            NeighbourState::Incomplete | NeighbourState::Stale => {
                if now < e.next_probe {
                    return true;
                }
                if e.probes >= cfg.max_probes {
                    if e.state == NeighbourState::Incomplete {
                        for p in e.pending.iter_mut().filter_map(Option::take) {
                            *held -= 1;
                            dropped(p);
                        }
                        action(TimerAction::Unresolved { key: *key });
                    }
                    return false;
                }
                e.probes += 1;
                e.next_probe = now + cfg.retransmit;
                let unicast = (e.state == NeighbourState::Stale).then_some(e.mac);
                action(TimerAction::Request { key: *key, unicast });
                true
            }
        });
    }

    /// Current entries, for `show neighbours`.
    pub fn entries(&self) -> impl Iterator<Item = (NeighbourKey, [u8; 6], NeighbourState)> + '_ {
        self.entries.iter().map(|(k, e)| (*k, e.mac, e.state))
    }
}

impl<P> Entry<P> {
    fn new(mac: [u8; 6], state: NeighbourState, now: Instant) -> Entry<P> {
        Entry {
            mac,
            state,
            since: now,
            probes: 0,
            next_probe: now,
            pending: std::array::from_fn(|_| None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(last: u8) -> NeighbourKey {
        (1, IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 9];

    #[test]
    fn queues_until_answered_then_releases_in_order() {
        let t0 = Instant::now();
        let mut n = NeighbourTable::new(NeighbourConfig::default());
        assert_eq!(
            n.resolve(key(2), 1u32, t0),
            Resolution::Queued { request: true }
        );
        assert_eq!(
            n.resolve(key(2), 2, t0),
            Resolution::Queued { request: false }
        );
        let mut released = vec![];
        n.confirm(key(2), MAC, false, t0, |p| released.push(p));
        assert_eq!(released, [1, 2]);
        assert_eq!(
            n.resolve(key(2), 3, t0),
            Resolution::Known {
                mac: MAC,
                probe: None,
                packet: 3
            }
        );
    }

    #[test]
    fn bounded_queue_and_table() {
        let t0 = Instant::now();
        let cfg = NeighbourConfig {
            max_entries: 2,
            ..NeighbourConfig::default()
        };
        let mut n = NeighbourTable::new(cfg);
        for i in 0..PENDING_PER_NEIGHBOUR as u32 {
            assert!(matches!(
                n.resolve(key(2), i, t0),
                Resolution::Queued { .. }
            ));
        }
        assert_eq!(
            n.resolve(key(2), 99, t0),
            Resolution::Refused(99, RefuseReason::QueueFull)
        );
        assert!(matches!(
            n.resolve(key(3), 0, t0),
            Resolution::Queued { .. }
        ));
        assert_eq!(
            n.resolve(key(4), 5, t0),
            Resolution::Refused(5, RefuseReason::TableFull)
        );
    }

    #[test]
    fn retries_then_gives_up_and_drops_held_packets() {
        let t0 = Instant::now();
        let cfg = NeighbourConfig::default();
        let mut n = NeighbourTable::new(cfg);
        n.resolve(key(2), 7u32, t0);
        let mut requests = 0;
        let mut failed = false;
        let mut dropped = vec![];
        for s in 1..=5 {
            n.tick(
                t0 + cfg.retransmit * s,
                |a| match a {
                    TimerAction::Request { unicast: None, .. } => requests += 1,
                    TimerAction::Unresolved { key: k } => {
                        assert_eq!(k, key(2));
                        failed = true
                    }
                    other => panic!("unexpected {other:?}"),
                },
                |p| dropped.push(p),
            );
        }
        // One request at resolve time plus two retries make max_probes = 3.
        assert_eq!(requests, 2);
        assert!(failed);
        assert_eq!(dropped, [7]);
        assert!(n.is_empty());
    }

    #[test]
    fn reachable_turns_stale_is_reprobed_and_forgotten() {
        let t0 = Instant::now();
        let cfg = NeighbourConfig::default();
        let mut n = NeighbourTable::<u32>::new(cfg);
        n.confirm(key(2), MAC, true, t0, |_| {});
        let later = t0 + cfg.reachable;
        assert_eq!(
            n.resolve(key(2), 1, later),
            Resolution::Known {
                mac: MAC,
                probe: Some(MAC),
                packet: 1
            }
        );
        // Stale: still used, probed by unicast until max_probes, then removed.
        let mut unicast = 0;
        for s in 1..=4 {
            n.tick(
                later + cfg.retransmit * s,
                |a| {
                    if let TimerAction::Request {
                        unicast: Some(m), ..
                    } = a
                    {
                        assert_eq!(m, MAC);
                        unicast += 1;
                    }
                },
                |_| panic!("nothing held"),
            );
        }
        assert_eq!(unicast, 2);
        assert!(n.is_empty());
    }

    #[test]
    fn unsolicited_answers_only_update_known_neighbours() {
        let t0 = Instant::now();
        let mut n = NeighbourTable::<u32>::new(NeighbourConfig::default());
        n.confirm(key(2), MAC, false, t0, |_| {});
        assert!(n.is_empty());
        n.confirm(key(2), MAC, true, t0, |_| {});
        assert_eq!(n.len(), 1);
        n.add_static(key(3), [2; 6], t0);
        n.confirm(key(3), MAC, true, t0, |_| {});
        let st: Vec<_> = n.entries().filter(|e| e.0 == key(3)).collect();
        assert_eq!(st[0].1, [2; 6]);
        assert_eq!(st[0].2, NeighbourState::Static);
    }

    #[test]
    fn held_packets_are_capped_for_all_neighbours_together() {
        let t0 = Instant::now();
        let cfg = NeighbourConfig {
            max_held: 10,
            ..NeighbourConfig::default()
        };
        let mut n = NeighbourTable::new(cfg);
        // Eight for one neighbour, then the cap across the others.
        for p in 0..8u32 {
            assert!(matches!(
                n.resolve(key(2), p, t0),
                Resolution::Queued { .. }
            ));
        }
        assert!(matches!(
            n.resolve(key(3), 8, t0),
            Resolution::Queued { .. }
        ));
        assert!(matches!(
            n.resolve(key(4), 9, t0),
            Resolution::Queued { .. }
        ));
        assert_eq!(n.held(), 10);
        assert_eq!(
            n.resolve(key(5), 10, t0),
            Resolution::Refused(10, RefuseReason::HeldLimit)
        );
        assert_eq!(
            n.resolve(key(3), 11, t0),
            Resolution::Refused(11, RefuseReason::HeldLimit)
        );
        // An answer releases its packets and makes room again.
        let mut released = 0;
        n.confirm(key(2), MAC, false, t0, |_| released += 1);
        assert_eq!((released, n.held()), (8, 2));
        assert!(matches!(
            n.resolve(key(5), 12, t0),
            Resolution::Queued { .. }
        ));
        // Failed resolutions give their room back too.
        let mut dropped = 0;
        n.tick(t0 + Duration::from_secs(60), |_| {}, |_| dropped += 1);
        let later = t0 + Duration::from_secs(120);
        n.tick(later, |_| {}, |_| dropped += 1);
        n.tick(later + Duration::from_secs(60), |_| {}, |_| dropped += 1);
        n.tick(later + Duration::from_secs(120), |_| {}, |_| dropped += 1);
        assert_eq!((dropped, n.held()), (3, 0));
    }

    #[test]
    fn new_unresolved_neighbours_are_rate_limited() {
        let t0 = Instant::now();
        let cfg = NeighbourConfig {
            new_per_second: 10,
            new_burst: 5,
            ..NeighbourConfig::default()
        };
        let mut n = NeighbourTable::new(cfg);
        let mut refused = 0;
        for i in 0..50u8 {
            if let Resolution::Refused(_, RefuseReason::RateLimited) =
                n.resolve(key(i), u32::from(i), t0)
            {
                refused += 1;
            }
        }
        assert_eq!((n.len(), refused), (5, 45));
        // Known neighbours are never limited.
        assert!(matches!(
            n.resolve(key(0), 99, t0),
            Resolution::Queued { .. }
        ));
        // A second later the bucket has refilled by the rate.
        let t1 = t0 + Duration::from_secs(1);
        let admitted = (100..120u8)
            .filter(|i| matches!(n.resolve(key(*i), 0, t1), Resolution::Queued { .. }))
            .count();
        assert_eq!(admitted, 5);
    }
}
