//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and
//! Reliable Software Network Load Balancer", NSDI 2016, §3.4).
//!
//! A lookup table of prime size `M` (65 537 by default) is filled from
//! each backend's own permutation of the slots, the backends taking turns
//! so each ends up with a share of the slots proportional to its weight.
//! Selecting a backend for a new flow is one hash and one array index.
//! Removing a backend only moves the slots it held (and, through the
//! fill order, a small further fraction: the paper measures about 1 %
//! beyond the minimum for `M` ≫ N), so the flows of the other backends
//! mostly keep theirs; established flows keep theirs regardless, through
//! the session table.
//!
//! Tables are built on the control side (1-3 ms for 3 to 1 000 backends,
//! `cargo bench -p strait-bench --bench lb`) and published with the rule
//! snapshot; workers only read them.

use crate::flow::Endpoint;
use crate::table::endpoint_bits;

/// The table size when none is given: the prime the paper uses.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// Largest table accepted (a prime above 2^20 would cost 2 MiB per
/// service).
pub const MAX_TABLE_SIZE: u32 = 1 << 20;

/// Slots no backend holds (only in an empty table).
const EMPTY: u16 = u16::MAX;

/// Why a table could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The size is not a prime, or out of range.
    #[error("table size {0} is not a prime between 3 and {MAX_TABLE_SIZE}")]
    Size(u32),
    /// More backends than a slot can name.
    #[error("{0} backends: at most 65534")]
    TooManyBackends(usize),
    /// A weight of zero or above the limit.
    #[error("weight {0} must be between 1 and 65535")]
    Weight(u32),
}

/// One backend as the table builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevBackend {
    /// The backend's identity: its permutation depends on this alone, so
    /// it keeps its slots whatever the other backends do.
    pub endpoint: Endpoint,
    /// Relative share of new flows, 1–65535.
    pub weight: u32,
    /// Index the table stores for it (its place in the rule's backend
    /// list, which may hold backends outside the table).
    pub index: u16,
}

/// A filled lookup table. Empty (no healthy backend) tables select
/// nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    slots: Box<[u16]>,
    empty: bool,
}

impl core::fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MaglevTable")
            .field("size", &self.slots.len())
            .field("empty", &self.empty)
            .finish()
    }
}

/// Whether `n` is prime (trial division; sizes are at most 2^20).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// The splitmix64 finalizer (Steele et al., "Fast splittable
/// pseudorandom number generators", OOPSLA 2014): every input bit moves
/// every output bit, so consecutive inputs (one client's successive source
/// ports) land on unrelated slots, which the session table's keyed hash
/// alone does not guarantee modulo a prime.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The hash a new flow from `client` selects its slot with, keyed with the
/// translator's secret so remote hosts cannot aim flows at one backend.
/// Two rounds of a bijection: distinct clients never collide before the
/// reduction to a slot.
#[inline]
pub(crate) fn flow_hash(key: u64, client: Endpoint) -> u64 {
    mix(mix(endpoint_bits(client) ^ key) ^ key.rotate_left(32))
}

/// Fixed keys of the two permutation hashes (offset and skip, §3.4):
/// a backend's permutation must not change while the engine runs.
const OFFSET_KEY: u64 = 0x6d61_676c_6576_5f6f;
const SKIP_KEY: u64 = 0x6d61_676c_6576_5f73;

impl MaglevTable {
    /// Fills a table of `size` slots (a prime) from `backends`. Each
    /// backend's permutation is `offset + j·skip mod size` with `offset`
    /// and `skip` from two hashes of its endpoint (§3.4, Pseudocode 1);
    /// in every round a backend of the largest weight takes one slot and
    /// a backend of weight `w` takes `w / max` of one on average, so the
    /// shares follow the weights.
    pub fn build(size: u32, backends: &[MaglevBackend]) -> Result<MaglevTable, MaglevError> {
        if !(3..=MAX_TABLE_SIZE).contains(&size) || !is_prime(size) {
            return Err(MaglevError::Size(size));
        }
        if backends.len() >= usize::from(EMPTY) {
            return Err(MaglevError::TooManyBackends(backends.len()));
        }
        if let Some(b) = backends.iter().find(|b| !(1..=65_535).contains(&b.weight)) {
            return Err(MaglevError::Weight(b.weight));
        }
        let m = u64::from(size);
        let mut slots = vec![EMPTY; size as usize].into_boxed_slice();
        if backends.is_empty() {
            return Ok(MaglevTable { slots, empty: true });
        }
        let max_weight = u64::from(backends.iter().map(|b| b.weight).max().unwrap_or(1));
        // (offset, skip, next j) per backend.
        let mut perm: Vec<(u64, u64, u64)> = backends
            .iter()
            .map(|b| {
                let bits = endpoint_bits(b.endpoint);
                let offset = mix(bits ^ OFFSET_KEY) % m;
                let skip = mix(bits ^ SKIP_KEY) % (m - 1) + 1;
                (offset, skip, 0)
            })
            .collect();
        // Credit in units of 1/max_weight slot.
        let mut credit: Vec<u64> = vec![0; backends.len()];
        let mut filled: u64 = 0;
        'fill: loop {
            for (i, b) in backends.iter().enumerate() {
                credit[i] += u64::from(b.weight);
                while credit[i] >= max_weight {
                    credit[i] -= max_weight;
                    let (offset, skip, next) = &mut perm[i];
                    // A permutation visits every slot (size is prime and
                    // 1 <= skip < size), so a free one is always found
                    // while the table is not full.
                    loop {
                        let c = ((*offset + *next * *skip) % m) as usize;
                        *next += 1;
                        if slots[c] == EMPTY {
                            slots[c] = b.index;
                            break;
                        }
                    }
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Ok(MaglevTable {
            slots,
            empty: false,
        })
    }

    /// The backend index for a flow whose hash is `hash`; `None` when no
    /// backend is in the table. One division and one load.
    #[inline]
    pub fn select(&self, hash: u64) -> Option<u16> {
        if self.empty {
            return None;
        }
        Some(self.slots[(hash % self.slots.len() as u64) as usize])
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Whether no backend is in the table.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// How many slots each backend index holds (for tests and operators).
    pub fn shares(&self) -> Vec<(u16, u32)> {
        let mut counts: Vec<(u16, u32)> = Vec::new();
        if self.empty {
            return counts;
        }
        let mut sorted = self.slots.to_vec();
        sorted.sort_unstable();
        for s in sorted {
            match counts.last_mut() {
                Some((i, n)) if *i == s => *n += 1,
                _ => counts.push((s, 1)),
            }
        }
        counts
    }

    /// Slots whose backend differs between two tables of one size.
    pub fn moved_slots(&self, other: &MaglevTable) -> u32 {
        self.slots
            .iter()
            .zip(other.slots.iter())
            .filter(|(a, b)| a != b)
            .count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    fn backend(i: u16, weight: u32) -> MaglevBackend {
        MaglevBackend {
            endpoint: Endpoint::new(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8), 8000),
            weight,
            index: i,
        }
    }

    #[test]
    fn refuses_bad_sizes_and_weights() {
        assert_eq!(
            MaglevTable::build(65_536, &[backend(0, 1)]),
            Err(MaglevError::Size(65_536))
        );
        assert_eq!(
            MaglevTable::build(2, &[backend(0, 1)]),
            Err(MaglevError::Size(2))
        );
        assert_eq!(
            MaglevTable::build(DEFAULT_TABLE_SIZE, &[backend(0, 0)]),
            Err(MaglevError::Weight(0))
        );
        assert!(is_prime(DEFAULT_TABLE_SIZE));
    }

    #[test]
    fn an_empty_table_selects_nothing() {
        let t = MaglevTable::build(251, &[]).unwrap();
        assert!(t.is_empty());
        assert_eq!(t.select(12345), None);
    }

    #[test]
    fn equal_weights_share_the_slots_evenly() {
        let backends: Vec<_> = (0..7).map(|i| backend(i, 1)).collect();
        let t = MaglevTable::build(DEFAULT_TABLE_SIZE, &backends).unwrap();
        let shares = t.shares();
        assert_eq!(shares.len(), 7);
        let fair = DEFAULT_TABLE_SIZE / 7;
        for (_, n) in shares {
            assert!(n.abs_diff(fair) <= 1, "{n} slots vs {fair}");
        }
    }

    #[test]
    fn weights_are_respected_within_one_percent() {
        let backends = [backend(0, 1), backend(1, 2), backend(2, 5)];
        let t = MaglevTable::build(DEFAULT_TABLE_SIZE, &backends).unwrap();
        for (i, n) in t.shares() {
            let w = backends[usize::from(i)].weight;
            let want = f64::from(DEFAULT_TABLE_SIZE) * f64::from(w) / 8.0;
            let off = (f64::from(n) - want).abs() / want;
            assert!(off < 0.01, "backend {i}: {n} slots, wanted {want:.0}");
        }
    }

    /// What a client's successive connections look like: one address,
    /// consecutive source ports. They must spread by weight too.
    #[test]
    fn consecutive_client_ports_spread_by_weight() {
        let backends = [backend(0, 1), backend(1, 1), backend(2, 2)];
        let t = MaglevTable::build(DEFAULT_TABLE_SIZE, &backends).unwrap();
        for key in [
            1u64,
            0x1234_5678_9abc_def0,
            u64::MAX / 3,
            0x6e61_745f_6b65_7921,
        ] {
            let mut counts = [0u32; 3];
            for port in 32_768u16..35_768 {
                let client = Endpoint::new(Ipv4Addr::new(198, 51, 100, 2), port);
                let h = flow_hash(key, client);
                counts[usize::from(t.select(h).unwrap())] += 1;
            }
            for (i, want) in [750.0, 750.0, 1500.0].into_iter().enumerate() {
                let got = f64::from(counts[i]);
                assert!((got - want).abs() < want * 0.08, "key {key:#x}: {counts:?}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Removing one of N backends moves its own slots and only a
        /// small fraction more: the paper's "disruption ≈ 1/N".
        #[test]
        fn removing_a_backend_moves_little_more_than_its_share(
            n in 3u16..20,
            gone in 0u16..20,
            seed in 0u16..500,
        ) {
            let gone = gone % n;
            let all: Vec<_> = (0..n).map(|i| {
                let mut b = backend(i, 1);
                b.endpoint.port = 1000 + seed;
                b
            }).collect();
            let before = MaglevTable::build(DEFAULT_TABLE_SIZE, &all).unwrap();
            let rest: Vec<_> = all.iter().copied().filter(|b| b.index != gone).collect();
            let after = MaglevTable::build(DEFAULT_TABLE_SIZE, &rest).unwrap();
            let held = before.shares().iter().find(|(i, _)| *i == gone).map_or(0, |s| s.1);
            let moved = before.moved_slots(&after);
            prop_assert!(moved >= held);
            // Slots of surviving backends that moved: at most a few
            // percent of the table.
            let extra = f64::from(moved - held) / f64::from(DEFAULT_TABLE_SIZE);
            prop_assert!(extra < 0.05, "{} extra slots moved of {}", moved - held, DEFAULT_TABLE_SIZE);
            // Every slot the removed backend had now goes to another.
            prop_assert!(after.shares().iter().all(|(i, _)| *i != gone));
        }

        /// Shares follow the weights within a few percent.
        #[test]
        fn shares_follow_weights(weights in proptest::collection::vec(1u32..100, 2..10)) {
            let backends: Vec<_> = weights.iter().enumerate()
                .map(|(i, w)| backend(i as u16, *w)).collect();
            let total: u32 = weights.iter().sum();
            let t = MaglevTable::build(DEFAULT_TABLE_SIZE, &backends).unwrap();
            for (i, n) in t.shares() {
                let want = f64::from(DEFAULT_TABLE_SIZE) * f64::from(weights[usize::from(i)])
                    / f64::from(total);
                prop_assert!((f64::from(n) - want).abs() <= want * 0.03 + 2.0,
                    "backend {}: {} slots, wanted {:.0}", i, n, want);
            }
        }
    }
}
