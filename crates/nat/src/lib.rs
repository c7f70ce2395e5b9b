//! Sans-I/O SNAT/DNAT with connection tracking (RFC 4787, 5382, 5508).
//!
//! A [`NatWorker`] belongs to one dataplane worker thread. It owns its
//! sessions, mappings, port bitmaps and counters and reads an immutable
//! [`NatRules`] snapshot that the control thread replaces as a whole
//! ([`NatWorker::install_rules`]). The library never reads a clock, opens a
//! socket or takes a lock: the caller passes packets (IPv4, starting at the
//! IP header, rewritten in place) and the current monotonic time in
//! seconds, and acts on the returned [`Verdict`].
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::sync::Arc;
//! use strait_nat::*;
//!
//! let rules = NatRules::new(
//!     vec![SnatRule {
//!         id: RuleId(1),
//!         source: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap(),
//!         destination: None,
//!         egress: None,
//!         target: SnatTarget::Masquerade { ports: PortRange::new(1024, 65535) },
//!     }],
//!     vec![],
//!     vec![],
//! )
//! .unwrap();
//! let mut nat = NatWorker::new(NatConfig::default(), Arc::new(rules)).unwrap();
//! let wan = Egress::new(EgressId(0), Ipv4Addr::new(203, 0, 113, 1));
//! // A UDP packet 10.0.0.2:5000 -> 192.0.2.9:53 with a zero checksum.
//! let mut packet = [
//!     0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 2, 192, 0, 2, 9, //
//!     0x13, 0x88, 0, 53, 0, 8, 0, 0,
//! ];
//! assert_eq!(nat.translate_outbound(&mut packet, wan, 0), Verdict::Translated);
//! assert_eq!(&packet[12..16], &[203, 0, 113, 1]);
//! assert_eq!(nat.session_count(), 1);
//! ```
//!
//! Behaviour, by requirement:
//!
//! * endpoint-independent mapping (RFC 4787 REQ-1, RFC 5382 REQ-1), paired
//!   address pooling (REQ-2), no port overloading (REQ-3), port preserved
//!   when free, no parity preservation;
//! * address-dependent filtering by default, endpoint-independent as an
//!   option ([`Filtering`], REQ-8);
//! * idle timeouts: UDP 300 s (REQ-5 floor 120 s), TCP established 7440 s
//!   and transitory 240 s (RFC 5382 REQ-5) from a small TCP state tracker,
//!   ICMP 60 s (RFC 5508 REQ-2); expiry by per-class LRU lists;
//! * a full table drops the oldest never-answered session (SYN, datagram
//!   or echo request without reply) to admit a new flow, as Linux
//!   conntrack's early drop does (`sessions_early_dropped`); answered
//!   sessions are never dropped for a new flow (`nat_exhausted` then);
//! * a freed external port cools for at least
//!   [`NatConfig::port_reuse_delay`] (120 s) before another internal
//!   endpoint may have it (RFC 6888 REQ-8); the endpoint that held it may
//!   have it back meanwhile; a range whose free ports all cool refuses new
//!   mappings (`nat_exhausted`, `mappings_refused_cooling`);
//! * quotas (RFC 6888 REQ-4 and REQ-5): external ports and sessions per
//!   inside address, inbound sessions per remote address and per DNAT or
//!   static rule ([`NatConfig`]), each refusal with its own drop reason
//!   (`quota_inside_ports`, `quota_inside_sessions`, `quota_remote`,
//!   `quota_rule`), checked in O(1) before the early drop;
//! * hairpinning (RFC 4787 REQ-9, RFC 5382 REQ-2) for packets whose source
//!   is translated;
//! * ICMP errors translated with their quoted packet (RFC 5508 REQ-3..6),
//!   unmatched ones dropped (`icmp_error_no_session`);
//! * non-first fragments translated like their first fragment, tracked by
//!   `(source, destination, protocol, IP ID)` in a small bounded table
//!   (RFC 4787 REQ-14, [`FRAGMENT_TIMEOUT`]); one that comes before its
//!   first fragment is dropped (`fragment`) if a rule claims its addresses
//!   and passed on unchanged if none does (fragments are never held or
//!   reassembled);
//! * TCP segments other than an initial SYN without a session dropped
//!   (`tcp_not_syn`);
//! * a TCP reset believed only when its sequence number is the next one
//!   expected or inside the receiver's window (RFC 5961 section 3,
//!   loosely), else dropped (`tcp_rst_out_of_window`) with the session
//!   untouched.
//!
//! Multi-worker steering is described in the [`worker`] module and served
//! by [`owner_worker_for_inbound`].
#![forbid(unsafe_code)]

mod config;
mod counters;
mod flow;
mod fragments;
pub mod maglev;
mod ports;
mod rules;
mod table;
mod tcp;
mod translate;
mod transport;
pub mod worker;

pub use config::{
    owner_worker_for_inbound, ConfigError, Filtering, NatConfig, Timeouts, WorkerPartition,
    PORT_BLOCK,
};
pub use counters::{DropReason, NatCounters};
pub use flow::{Direction, Endpoint, FlowTuple, Protocol};
pub use fragments::FRAGMENT_TIMEOUT;
pub use maglev::{MaglevBackend, MaglevError, MaglevTable};
pub use rules::{
    BackendSelection, DnatRule, Egress, NatRules, PortRange, RuleError, RuleId, SnatRule,
    SnatTarget, StaticNatRule,
};
/// Rules match the egress by the dataplane's one egress id (the FIB's), and
/// prefixes are `strait-wire`'s CIDR blocks (host bits refused).
pub use strait_wire::{CidrError, EgressId, Ipv4Cidr};
pub use table::SessionKind;
pub use tcp::{TcpFlags, TcpState};
pub use translate::Verdict;
pub use worker::{NatWorker, SessionInfo};

/// Heap bytes per session slot the worker reserves, from the struct sizes:
/// one session, one mapping (worst case: no two sessions share one), one
/// address-dependent filtering permit (worst case: one per session), one
/// quota tally (worst case: every session from another address), the TCP
/// sequence state of the slot and one `u32` bucket head in each of the six
/// hash indices (bucket arrays are rounded up to a power of two, so up to
/// twice that), and a share of the recent port owners table (one entry per
/// four slots, rounded up to a power of two: at most half an entry). The
/// fragment table, the port bitmaps and the per-rule counts
/// ([`RULE_COUNT_BYTES`]) are not per slot.
pub fn bytes_per_session_bound() -> usize {
    table::slot_bytes_bound()
        + core::mem::size_of::<tcp::TcpWindow>()
        + ports::OWNER_BYTES.div_ceil(2)
}

/// Heap bytes of the per-rule counts of inbound sessions (one `u32` per
/// possible rule id), fixed whatever the capacity.
pub const RULE_COUNT_BYTES: usize = table::RULE_COUNT_BYTES;

/// Heap bytes of the port bitmaps of one external address: for each of
/// TCP, UDP and ICMP, one 8 KiB bitmap of ports held plus one per cooling
/// generation of the port reuse delay (RFC 6888 REQ-8; none when the delay
/// is 0). Allocated when the address is first used.
pub const fn port_bitmap_bytes_per_address(reuse_delay: bool) -> usize {
    let generations = if reuse_delay { ports::GENERATIONS } else { 0 };
    3 * (1 + generations) * ports::BITMAP_BYTES
}
