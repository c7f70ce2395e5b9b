//! Longest-prefix-match forwarding tables (IPv4 and IPv6) with ECMP.
//!
//! The control thread owns a [`RouteTable`]: it inserts and withdraws
//! [`Route`]s (connected, static via gateways with up to [`MAX_ECMP`]
//! equal-cost next hops, local, blackhole, unreachable) and publishes
//! [`Fib`] snapshots. Workers hold an `Arc<Fib>` (typically loaded from an
//! `arc_swap::ArcSwap` once per batch) and call [`Fib::lookup_v4`],
//! [`Fib::lookup_v6`] or [`Fib::lookup`] with the destination and a flow
//! hash ([`FlowHasher`]); the answer is a small `Copy` [`Disposition`].
//!
//! ```
//! use strait_fib::{Disposition, EgressId, IpCidr, NextHop, Route, RouteTable};
//! let mut table = RouteTable::new();
//! table.insert(Route::connected("192.168.1.0/24".parse::<IpCidr>()?, EgressId(1)));
//! table.insert(Route::via("0.0.0.0/0".parse::<IpCidr>()?, EgressId(0), "203.0.113.1".parse()?));
//! let fib = std::sync::Arc::new(table.snapshot());
//! assert_eq!(
//!     fib.lookup_v4("192.168.1.9".parse()?, 0),
//!     Some(Disposition::Forward(NextHop::on_link(EgressId(1))))
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Why this structure
//!
//! Both families use one multibit trie: a 65 536-slot root indexed by the
//! first 16 address bits, then nodes of 8 bits each, leaf-pushed so that a
//! lookup is a straight walk with no backtracking (see `trie.rs`).
//!
//! - **IPv4** is DIR-16-8-8: one array load for every route of /16 or
//!   shorter, at most three dependent loads for a /32. A flat DIR-24-8 would
//!   save one level but costs 64 MiB per table and makes every snapshot copy
//!   or share a 16M-entry array; the 256 KiB root fits in L2.
//! - **IPv6** walks the same trie: /48 and shorter prefixes (nearly all of
//!   a real table) resolve in at most five loads. Hashing per prefix length
//!   with binary search over lengths needs fewer probes for long prefixes,
//!   but its markers and precomputed best matches make single-route updates
//!   expensive and irregular; the trie keeps updates local and shares the
//!   code and the copy-on-write machinery with IPv4.
//! - **Nodes are compressed** (a child bitmap and a leaf-run bitmap with
//!   popcount indexing, as in poptrie), so a node holding one more-specific
//!   route costs about a hundred bytes instead of 1 KiB; a 100k-route
//!   Internet-like IPv4 table takes about 10 MiB.
//! - **Updates are incremental and copy-on-write.** Nodes are immutable and
//!   reference-counted. Changing a route rebuilds only the nodes on its path
//!   (and, for a short prefix, those under it whose slots it paints);
//!   snapshots keep the old nodes alive. Taking a snapshot is a few
//!   reference counts; the first change after it copies the root array and
//!   the array of node pointers. On a 100k-route table one insert plus
//!   snapshot costs well under a millisecond (figures in
//!   `docs/BENCHMARKS.md`).
//!
//! # Prefixes and egresses
//! Routes are keyed by [`IpCidr`] (with [`Ipv4Cidr`] and [`Ipv6Cidr`]), the
//! one CIDR type of `strait-wire` that ESP selectors and NAT rules use too:
//! it parses `ADDRESS/LENGTH` and refuses host bits (`10.1.2.3/16` is an
//! error naming `10.1.0.0/16`); see `strait_wire::cidr` for why. Next hops
//! name their port or tunnel with `strait_wire`'s [`EgressId`], the id NAT
//! rules match on.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod flow;
mod route;
mod table;
mod trie;

pub use flow::{FiveTuple, FlowHasher};
pub use route::{Disposition, EcmpGroup, NextHop, Route, RouteError, RouteKind, MAX_ECMP};
pub use strait_wire::{CidrError, EgressId, IpCidr, Ipv4Cidr, Ipv6Cidr};
pub use table::{Fib, FibStats, RouteTable};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn fib_is_shareable_between_threads() {
        assert_send_sync::<Fib>();
        assert_send_sync::<std::sync::Arc<Fib>>();
    }

    #[test]
    fn disposition_is_small() {
        // Returned by value on every lookup.
        assert!(core::mem::size_of::<Disposition>() <= 32);
    }
}
