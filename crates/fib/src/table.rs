//! The control-side route table and the immutable snapshots it publishes.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::route::{Action, Disposition, Route, RouteKind};
use crate::trie::{Leaf, Paint, Trie, TrieBuilder};
use strait_wire::EgressId;
use strait_wire::IpCidr;

/// The key of an IPv4 address in the trie: left-aligned in 128 bits.
#[inline(always)]
fn key_v4(addr: Ipv4Addr) -> u128 {
    u128::from(u32::from(addr)) << 96
}

#[inline(always)]
fn key_v6(addr: Ipv6Addr) -> u128 {
    u128::from(addr)
}

fn key_of(prefix: &IpCidr) -> u128 {
    match prefix {
        IpCidr::V4(p) => key_v4(p.network()),
        IpCidr::V6(p) => key_v6(p.network()),
    }
}

/// An immutable forwarding table: what poll-mode workers read.
///
/// Built by [`RouteTable::snapshot`]; `Send + Sync`, cheap to clone, and
/// meant to be published as `Arc<Fib>` through an atomic pointer swap
/// (read-copy-update). Lookups take no lock, allocate nothing and make no
/// system call; a snapshot never changes, whatever the table does later.
#[derive(Debug, Clone)]
pub struct Fib {
    v4: Trie,
    v6: Trie,
    actions: Arc<Vec<Action>>,
    routes: usize,
}

impl Fib {
    /// The route decision for an IPv4 destination. `flow_hash` picks among
    /// ECMP next hops; pass the same hash for every packet of a flow (see
    /// [`crate::FlowHasher`]). `None`: no route covers the address.
    #[inline]
    pub fn lookup_v4(&self, destination: Ipv4Addr, flow_hash: u32) -> Option<Disposition> {
        let action = self.v4.lookup(key_v4(destination));
        self.actions[action as usize].resolve(flow_hash)
    }

    /// The route decision for an IPv6 destination; see [`Fib::lookup_v4`].
    #[inline]
    pub fn lookup_v6(&self, destination: Ipv6Addr, flow_hash: u32) -> Option<Disposition> {
        let action = self.v6.lookup(key_v6(destination));
        self.actions[action as usize].resolve(flow_hash)
    }

    /// Whether the route covering `source` leaves by `egress` (through any
    /// member of an ECMP group): the reverse-path test of ingress filtering
    /// (BCP 38, RFC 3704 §2.2 strict mode, §2.3 feasible within ECMP).
    #[inline]
    pub fn reaches(&self, source: IpAddr, egress: EgressId) -> bool {
        let action = match source {
            IpAddr::V4(a) => self.v4.lookup(key_v4(a)),
            IpAddr::V6(a) => self.v6.lookup(key_v6(a)),
        };
        match &self.actions[action as usize] {
            Action::Forward(group) => group.hops().iter().any(|h| h.egress == egress),
            _ => false,
        }
    }

    /// The route decision for either family; see [`Fib::lookup_v4`].
    #[inline]
    pub fn lookup(&self, destination: IpAddr, flow_hash: u32) -> Option<Disposition> {
        match destination {
            IpAddr::V4(a) => self.lookup_v4(a, flow_hash),
            IpAddr::V6(a) => self.lookup_v6(a, flow_hash),
        }
    }

    /// Lookups for a batch of IPv4 destinations (one flow hash each), walked
    /// in lockstep so their cache misses overlap; the dataplane works on
    /// batches anyway. Same answers as calling [`Fib::lookup_v4`] per address.
    #[inline]
    pub fn lookup_batch_v4<const N: usize>(
        &self,
        destinations: &[Ipv4Addr; N],
        flow_hashes: &[u32; N],
    ) -> [Option<Disposition>; N] {
        let keys = destinations.map(key_v4);
        let actions = self.v4.lookup_many(&keys);
        core::array::from_fn(|i| self.actions[actions[i] as usize].resolve(flow_hashes[i]))
    }

    /// [`Fib::lookup_batch_v4`] for IPv6.
    #[inline]
    pub fn lookup_batch_v6<const N: usize>(
        &self,
        destinations: &[Ipv6Addr; N],
        flow_hashes: &[u32; N],
    ) -> [Option<Disposition>; N] {
        let keys = destinations.map(key_v6);
        let actions = self.v6.lookup_many(&keys);
        core::array::from_fn(|i| self.actions[actions[i] as usize].resolve(flow_hashes[i]))
    }

    /// How many routes the snapshot was built from.
    pub fn route_count(&self) -> usize {
        self.routes
    }
}

impl Default for Fib {
    /// A table with no routes: every lookup answers `None`.
    fn default() -> Self {
        RouteTable::new().snapshot()
    }
}

/// Size of the lookup structures, for `show` output and capacity planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FibStats {
    /// Routes installed, both families.
    pub routes: usize,
    /// Distinct route behaviours (next-hop groups and the like), shared by routes.
    pub actions: usize,
    /// Trie nodes below the IPv4 root.
    pub v4_nodes: usize,
    /// Trie nodes below the IPv6 root.
    pub v6_nodes: usize,
    /// Bytes held by one snapshot's lookup structures.
    pub bytes: usize,
}

/// The mutable route table the control thread owns.
///
/// Every change updates the lookup structures incrementally (only the trie
/// nodes a route touches are rebuilt), so [`RouteTable::snapshot`] is a few
/// reference-count increments, and the first change after a snapshot pays
/// one copy of the root array and of the node pointer array. See the crate
/// documentation for figures.
#[derive(Debug)]
pub struct RouteTable {
    routes: BTreeMap<IpCidr, (RouteKind, u32)>,
    v4: TrieBuilder,
    v6: TrieBuilder,
    actions: Arc<Vec<Action>>,
    action_ids: HashMap<Action, u32>,
    action_refs: Vec<u32>,
    free_actions: Vec<u32>,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            routes: BTreeMap::new(),
            v4: TrieBuilder::new(),
            v6: TrieBuilder::new(),
            // Action 0 is what empty slots point at.
            actions: Arc::new(vec![Action::NoRoute]),
            action_ids: HashMap::new(),
            action_refs: vec![0],
            free_actions: Vec::new(),
        }
    }

    /// Adds a route, replacing (and returning) any route for the same prefix.
    pub fn insert(&mut self, route: Route) -> Option<Route> {
        let prefix = route.prefix;
        let action = self.acquire(Action::of(&route.kind));
        let previous = self.routes.insert(prefix, (route.kind, action));
        let len = prefix.prefix_len();
        self.trie_mut(&prefix)
            .paint(key_of(&prefix), len, Leaf { action, len }, Paint::Insert);
        previous.map(|(kind, old)| {
            self.release(old);
            Route { prefix, kind }
        })
    }

    /// Withdraws the route for exactly `prefix`, returning it if it existed.
    /// Its addresses fall back to the next longest matching route.
    pub fn remove(&mut self, prefix: impl Into<IpCidr>) -> Option<Route> {
        let prefix = prefix.into();
        let (kind, action) = self.routes.remove(&prefix)?;
        let cover = self.covering(&prefix);
        self.trie_mut(&prefix)
            .paint(key_of(&prefix), prefix.prefix_len(), cover, Paint::Remove);
        self.release(action);
        Some(Route { prefix, kind })
    }

    /// The route for exactly `prefix`, if any.
    pub fn get(&self, prefix: impl Into<IpCidr>) -> Option<Route> {
        let prefix = prefix.into();
        self.routes
            .get(&prefix)
            .map(|&(kind, _)| Route { prefix, kind })
    }

    /// The route that decides traffic to `destination` (longest match), for
    /// `show route get`; the hot path uses [`Fib::lookup`] instead.
    pub fn best_match(&self, destination: IpAddr) -> Option<Route> {
        let width = match destination {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        (0..=width).rev().find_map(|len| {
            let prefix = IpCidr::new_truncated(destination, len).ok()?;
            self.get(prefix)
        })
    }

    /// All routes, IPv4 then IPv6, each family ordered by address then length.
    pub fn routes(&self) -> impl Iterator<Item = Route> + '_ {
        self.routes
            .iter()
            .map(|(&prefix, &(kind, _))| Route { prefix, kind })
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// An immutable snapshot of the current routes, for the workers.
    /// Costs a few reference-count increments; see the type's documentation.
    pub fn snapshot(&self) -> Fib {
        Fib {
            v4: self.v4.snapshot(),
            v6: self.v6.snapshot(),
            actions: Arc::clone(&self.actions),
            routes: self.routes.len(),
        }
    }

    /// Sizes of the lookup structures.
    pub fn stats(&self) -> FibStats {
        let (v4_nodes, v4_bytes) = self.v4.footprint();
        let (v6_nodes, v6_bytes) = self.v6.footprint();
        FibStats {
            routes: self.routes.len(),
            actions: self.action_ids.len(),
            v4_nodes,
            v6_nodes,
            bytes: v4_bytes + v6_bytes + self.actions.len() * core::mem::size_of::<Action>(),
        }
    }

    fn trie_mut(&mut self, prefix: &IpCidr) -> &mut TrieBuilder {
        match prefix {
            IpCidr::V4(_) => &mut self.v4,
            IpCidr::V6(_) => &mut self.v6,
        }
    }

    /// The leaf of the longest route strictly shorter than `prefix` that covers it.
    fn covering(&self, prefix: &IpCidr) -> Leaf {
        (0..prefix.prefix_len())
            .rev()
            .find_map(|len| {
                let shorter = IpCidr::new_truncated(prefix.network(), len).ok()?;
                let &(_, action) = self.routes.get(&shorter)?;
                Some(Leaf { action, len })
            })
            .unwrap_or(Leaf::NONE)
    }

    /// The id of `action` in the shared action array, adding it if new.
    /// Many routes share a handful of next-hop groups, so the array stays
    /// small and cache-resident; it is copied only when a new entry appears.
    fn acquire(&mut self, action: Action) -> u32 {
        if let Some(&id) = self.action_ids.get(&action) {
            self.action_refs[id as usize] += 1;
            return id;
        }
        let actions = Arc::make_mut(&mut self.actions);
        let id = match self.free_actions.pop() {
            Some(id) => {
                actions[id as usize] = action;
                self.action_refs[id as usize] = 1;
                id
            }
            None => {
                actions.push(action);
                self.action_refs.push(1);
                (actions.len() - 1) as u32
            }
        };
        self.action_ids.insert(action, id);
        id
    }

    fn release(&mut self, id: u32) {
        let refs = &mut self.action_refs[id as usize];
        *refs -= 1;
        if *refs == 0 {
            // The stale entry stays in the array (no copy needed); nothing
            // points at it until the id is handed out again.
            self.action_ids.remove(&self.actions[id as usize]);
            self.free_actions.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::NextHop;

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn p(s: &str) -> IpCidr {
        s.parse().unwrap()
    }

    #[test]
    fn reverse_path_check_follows_every_ecmp_member() {
        let mut t = RouteTable::new();
        t.insert(Route::connected(p("10.1.0.0/24"), EgressId(1)));
        t.insert(Route::via(
            p("0.0.0.0/0"),
            EgressId(0),
            "203.0.113.1".parse().unwrap(),
        ));
        let ecmp = [
            NextHop::via(EgressId(2), "10.3.0.1".parse().unwrap()),
            NextHop::via(EgressId(3), "10.4.0.1".parse().unwrap()),
        ];
        t.insert(Route::ecmp(p("10.9.0.0/16"), &ecmp).unwrap());
        t.insert(Route::local(p("10.1.0.1/32")));
        t.insert(Route::blackhole(p("10.66.0.0/16")));
        let fib = t.snapshot();
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(fib.reaches(a("10.1.0.7"), EgressId(1)));
        assert!(!fib.reaches(a("10.1.0.7"), EgressId(0)));
        assert!(fib.reaches(a("8.8.8.8"), EgressId(0)));
        assert!(!fib.reaches(a("8.8.8.8"), EgressId(1)));
        assert!(fib.reaches(a("10.9.1.1"), EgressId(2)));
        assert!(fib.reaches(a("10.9.1.1"), EgressId(3)));
        assert!(!fib.reaches(a("10.9.1.1"), EgressId(1)));
        // Our own address, a blackhole or no route: never a valid source.
        assert!(!fib.reaches(a("10.1.0.1"), EgressId(1)));
        assert!(!fib.reaches(a("10.66.0.1"), EgressId(0)));
        assert!(!fib.reaches(a("2001:db8::1"), EgressId(0)));
    }

    #[test]
    fn connected_static_local_and_default() {
        let mut t = RouteTable::new();
        t.insert(Route::connected(p("192.168.1.0/24"), EgressId(1)));
        t.insert(Route::via(
            p("0.0.0.0/0"),
            EgressId(0),
            "203.0.113.1".parse().unwrap(),
        ));
        t.insert(Route::local(p("192.168.1.1/32")));
        t.insert(Route::blackhole(p("10.66.0.0/16")));
        t.insert(Route::unreachable(p("10.67.0.0/16")));
        let fib = t.snapshot();
        assert_eq!(
            fib.lookup_v4(v4("192.168.1.77"), 0),
            Some(Disposition::Forward(NextHop::on_link(EgressId(1))))
        );
        assert_eq!(
            fib.lookup_v4(v4("192.168.1.1"), 0),
            Some(Disposition::Local)
        );
        assert_eq!(
            fib.lookup_v4(v4("10.66.3.3"), 0),
            Some(Disposition::Blackhole)
        );
        assert_eq!(
            fib.lookup_v4(v4("10.67.3.3"), 0),
            Some(Disposition::Unreachable)
        );
        assert_eq!(
            fib.lookup_v4(v4("8.8.8.8"), 0),
            Some(Disposition::Forward(NextHop::via(
                EgressId(0),
                "203.0.113.1".parse().unwrap()
            )))
        );
        assert_eq!(fib.lookup_v6("2001:db8::1".parse().unwrap(), 0), None);
        assert_eq!(fib.route_count(), 5);
        assert_eq!(
            t.best_match("192.168.1.1".parse().unwrap())
                .map(|r| r.prefix),
            Some(p("192.168.1.1/32"))
        );
    }

    #[test]
    fn remove_falls_back_and_snapshots_stay_put() {
        let mut t = RouteTable::new();
        t.insert(Route::connected(p("2001:db8::/32"), EgressId(1)));
        t.insert(Route::connected(p("2001:db8:aa::/48"), EgressId(2)));
        t.insert(Route::local(p("2001:db8:aa::1/128")));
        let old = t.snapshot();
        let a: Ipv6Addr = "2001:db8:aa::1".parse().unwrap();
        assert_eq!(old.lookup_v6(a, 0), Some(Disposition::Local));
        assert_eq!(
            t.remove(p("2001:db8:aa::1/128")),
            Some(Route::local(p("2001:db8:aa::1/128")))
        );
        assert_eq!(t.remove(p("2001:db8:aa::1/128")), None);
        let fib = t.snapshot();
        assert_eq!(
            fib.lookup_v6(a, 0),
            Some(Disposition::Forward(NextHop::on_link(EgressId(2))))
        );
        t.remove(p("2001:db8:aa::/48"));
        let fib2 = t.snapshot();
        assert_eq!(
            fib2.lookup_v6(a, 0),
            Some(Disposition::Forward(NextHop::on_link(EgressId(1))))
        );
        // Older snapshots are unchanged.
        assert_eq!(old.lookup_v6(a, 0), Some(Disposition::Local));
        assert_eq!(
            fib.lookup_v6(a, 0),
            Some(Disposition::Forward(NextHop::on_link(EgressId(2))))
        );
        t.remove(p("2001:db8::/32"));
        assert_eq!(t.snapshot().lookup_v6(a, 0), None);
        let stats = t.stats();
        assert_eq!((stats.routes, stats.actions, stats.v6_nodes), (0, 0, 0));
    }

    #[test]
    fn replace_returns_previous_and_recycles_actions() {
        let mut t = RouteTable::new();
        let r1 = Route::connected(p("10.0.0.0/8"), EgressId(1));
        let r2 = Route::connected(p("10.0.0.0/8"), EgressId(2));
        assert_eq!(t.insert(r1), None);
        assert_eq!(t.insert(r2), Some(r1));
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats().actions, 1);
        assert_eq!(
            t.snapshot().lookup_v4(v4("10.1.1.1"), 0),
            Some(Disposition::Forward(NextHop::on_link(EgressId(2))))
        );
        assert_eq!(t.routes().collect::<Vec<_>>(), vec![r2]);
    }

    #[test]
    fn ecmp_spreads_flows_and_is_stable() {
        let hops: Vec<NextHop> = (1..=4)
            .map(|i| {
                NextHop::via(
                    EgressId(i),
                    IpAddr::V4(Ipv4Addr::new(198, 51, 100, i as u8)),
                )
            })
            .collect();
        let mut t = RouteTable::new();
        t.insert(Route::ecmp(p("0.0.0.0/0"), &hops).unwrap());
        let fib = t.snapshot();
        let hasher = crate::FlowHasher::new(7);
        let mut counts = [0usize; 4];
        for i in 0..40_000u32 {
            let flow = crate::FiveTuple {
                src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                dst: IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)),
                src_port: 40_000 + (i % 1000) as u16,
                dst_port: 443,
                protocol: 6,
            };
            let h = hasher.hash(&flow);
            let Some(Disposition::Forward(hop)) = fib.lookup_v4(v4("93.184.216.34"), h) else {
                panic!("no forward decision");
            };
            assert_eq!(
                fib.lookup_v4(v4("93.184.216.34"), h),
                Some(Disposition::Forward(hop))
            );
            counts[hop.egress.0 as usize - 1] += 1;
        }
        for c in counts {
            // Each of the four hops should carry about 10 000 flows.
            assert!(
                (9_000..11_000).contains(&c),
                "uneven ECMP spread: {counts:?}"
            );
        }
    }
}
