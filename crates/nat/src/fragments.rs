//! Non-first IPv4 fragments, translated like their first fragment
//! (RFC 4787 REQ-14: a NAT must support receiving fragmented packets; the
//! "out of order" variant is not required).
//!
//! Only the first fragment carries the ports, so only it can be matched to
//! a session. When a first fragment (offset 0, MF set) is translated, the
//! addresses it was given are remembered under the key the later fragments
//! share, `(source, destination, protocol, IP identification)` as they
//! arrive, per direction (RFC 791 section 2.3: those four fields name the
//! datagram). A later fragment with that key gets the same addresses; its
//! payload is not touched (the transport checksum in the first fragment
//! covers the whole datagram and was already patched for the new
//! addresses).
//!
//! The table is small, fixed and allocation-free: a power-of-two number of
//! 4-way sets, each entry valid for [`FRAGMENT_TIMEOUT`] seconds after its
//! first fragment (the reassembly timer Linux uses by default,
//! `ipfrag_time`). A full set evicts its entry closest to expiry. A later
//! fragment that arrives before its first fragment, or whose first
//! fragment was refused or evicted, is dropped (`fragment`) when a rule
//! claims its addresses, and passed on unchanged otherwise: fragments are
//! neither held nor reassembled.

use std::net::Ipv4Addr;

use crate::flow::Direction;
use crate::table::{keyed_hash, secs};

/// Seconds a first fragment's translation applies to later fragments.
pub const FRAGMENT_TIMEOUT: u64 = 30;

const WAYS: usize = 4;

/// The datagram a fragment belongs to, as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragmentKey {
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
    pub(crate) protocol: u8,
    pub(crate) ident: u16,
    pub(crate) direction: u8,
}

impl FragmentKey {
    pub(crate) fn new(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        protocol: u8,
        ident: u16,
        direction: Direction,
    ) -> Self {
        Self {
            src,
            dst,
            protocol,
            ident,
            direction: match direction {
                Direction::Outbound => 1,
                Direction::Inbound => 2,
            },
        }
    }
}

/// The addresses the first fragment left with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragmentTranslation {
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
    /// The first fragment was hairpinned (RFC 4787 REQ-9).
    pub(crate) hairpin: bool,
    /// The first fragment had the destination half of full NAT: its
    /// source is translated at the egress too.
    pub(crate) full_nat: bool,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: FragmentKey,
    translation: FragmentTranslation,
    /// Second at which the entry stops applying; 0: free.
    expires: u32,
}

const FREE: Entry = Entry {
    key: FragmentKey {
        src: Ipv4Addr::UNSPECIFIED,
        dst: Ipv4Addr::UNSPECIFIED,
        protocol: 0,
        ident: 0,
        direction: 0,
    },
    translation: FragmentTranslation {
        src: Ipv4Addr::UNSPECIFIED,
        dst: Ipv4Addr::UNSPECIFIED,
        hairpin: false,
        full_nat: false,
    },
    expires: 0,
};

/// First-fragment translations of one worker.
#[derive(Debug)]
pub(crate) struct FragmentTable {
    entries: Box<[Entry]>,
    set_mask: usize,
    key: u64,
}

impl FragmentTable {
    /// Room for at least `capacity` datagrams in flight (rounded up to a
    /// power of two, at least one set).
    pub(crate) fn new(capacity: usize, key: u64) -> Self {
        let slots = capacity.max(WAYS).next_power_of_two();
        Self {
            entries: vec![FREE; slots].into_boxed_slice(),
            set_mask: slots / WAYS - 1,
            key: key ^ 0x6672_6167,
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.len() * core::mem::size_of::<Entry>()
    }

    fn set(&self, k: &FragmentKey) -> usize {
        let a = (u64::from(k.src.to_bits()) << 32) | u64::from(k.dst.to_bits());
        let b = (u64::from(k.ident) << 16) | (u64::from(k.protocol) << 8) | u64::from(k.direction);
        (keyed_hash(self.key, a, b) as usize & self.set_mask) * WAYS
    }

    /// The translation of the datagram `key`, if its first fragment was
    /// translated less than [`FRAGMENT_TIMEOUT`] seconds ago.
    pub(crate) fn lookup(&self, key: &FragmentKey, now: u64) -> Option<FragmentTranslation> {
        let set = self.set(key);
        self.entries[set..set + WAYS]
            .iter()
            .find(|e| e.key == *key && now < u64::from(e.expires))
            .map(|e| e.translation)
    }

    /// Remembers the first fragment's translation. Returns whether a live
    /// entry of another datagram was evicted to make room.
    pub(crate) fn insert(
        &mut self,
        key: FragmentKey,
        translation: FragmentTranslation,
        now: u64,
    ) -> bool {
        let set = self.set(&key);
        let ways = &mut self.entries[set..set + WAYS];
        let slot = match ways.iter().position(|e| e.key == key) {
            Some(i) => i,
            None => {
                // The entry closest to expiry (free and stale ones first).
                let (i, _) = ways
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| e.expires)
                    .unwrap_or((0, &FREE));
                i
            }
        };
        let evicted = ways[slot].key != key && now < u64::from(ways[slot].expires);
        ways[slot] = Entry {
            key,
            translation,
            expires: secs(now.saturating_add(FRAGMENT_TIMEOUT)).max(1),
        };
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ident: u16) -> FragmentKey {
        FragmentKey::new(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(192, 0, 2, 1),
            17,
            ident,
            Direction::Outbound,
        )
    }

    fn to(last: u8) -> FragmentTranslation {
        FragmentTranslation {
            src: Ipv4Addr::new(203, 0, 113, last),
            dst: Ipv4Addr::new(192, 0, 2, 1),
            hairpin: false,
            full_nat: false,
        }
    }

    #[test]
    fn remembers_per_datagram_and_forgets_after_the_timeout() {
        let mut t = FragmentTable::new(16, 1);
        assert!(!t.insert(key(1), to(1), 0));
        assert_eq!(t.lookup(&key(1), 29), Some(to(1)));
        assert_eq!(t.lookup(&key(1), 30), None);
        assert_eq!(t.lookup(&key(2), 0), None);
        let mut inbound = key(1);
        inbound.direction = 2;
        assert_eq!(t.lookup(&inbound, 0), None);
    }

    #[test]
    fn a_full_table_evicts_and_stays_bounded() {
        assert!(core::mem::size_of::<Entry>() <= 28);
        let mut t = FragmentTable::new(4, 1);
        let bytes = t.heap_bytes();
        let evicted = (0..100u16).filter(|&i| t.insert(key(i), to(1), 0)).count();
        assert_eq!(evicted, 96);
        assert_eq!(t.heap_bytes(), bytes);
        let live = (0..100u16)
            .filter(|&i| t.lookup(&key(i), 1).is_some())
            .count();
        assert_eq!(live, 4);
    }
}
