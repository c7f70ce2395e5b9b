//! The answer cache: whole upstream answers kept for their TTL (RFC 1035
//! §7.4), negative ones for the SOA's MINIMUM (RFC 2308 §5), bounded in
//! entries (the oldest insertion leaves first).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag, RCODE};

/// No answer is kept longer than a day (RFC 2308 §5 suggests 1–3 hours
/// for negative answers; positive ones follow their TTL up to this).
pub const MAX_TTL: u32 = 86_400;
/// Negative answers at most 3 hours (RFC 2308 §5).
pub const MAX_NEGATIVE_TTL: u32 = 10_800;

/// (lowercase name, type, class).
pub type CacheKey = (String, u16, u16);

#[derive(Debug, Clone)]
struct Entry {
    bytes: Vec<u8>,
    stored: Instant,
    ttl: u32,
}

/// The cache.
#[derive(Debug)]
pub struct Cache {
    entries: HashMap<CacheKey, Entry>,
    order: VecDeque<(CacheKey, Instant)>,
    capacity: usize,
}

impl Cache {
    /// A cache of at most `capacity` answers.
    pub fn new(capacity: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// How many answers it holds (expired ones included until looked up
    /// or pushed out).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How long `answer` may be kept: the smallest TTL of its answer
    /// records, or for NXDOMAIN / NODATA the smaller of the SOA's TTL and
    /// MINIMUM; `None` when it must not be kept (TTL 0, an error, a
    /// negative answer without SOA, a truncated answer).
    pub fn lifetime(answer: &Packet<'_>) -> Option<u32> {
        if answer.has_flags(PacketFlag::TRUNCATION) {
            return None;
        }
        let rcode = answer.rcode();
        let ttl = if rcode == RCODE::NoError && !answer.answers.is_empty() {
            answer.answers.iter().map(|r| r.ttl).min()?
        } else if rcode == RCODE::NoError || rcode == RCODE::NameError {
            answer
                .name_servers
                .iter()
                .find_map(|r| match &r.rdata {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })?
                .min(MAX_NEGATIVE_TTL)
        } else {
            return None;
        };
        (ttl > 0).then_some(ttl.min(MAX_TTL))
    }

    /// Keeps `bytes` (an answer that [`Cache::lifetime`] allowed) under
    /// `key` for `ttl` seconds.
    pub fn insert(&mut self, key: CacheKey, bytes: Vec<u8>, ttl: u32, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        while self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let Some((old, stored)) = self.order.pop_front() else {
                break;
            };
            // A key inserted again has a later entry in the queue.
            if self.entries.get(&old).is_some_and(|e| e.stored == stored) {
                self.entries.remove(&old);
            }
        }
        self.order.push_back((key.clone(), now));
        self.entries.insert(
            key,
            Entry {
                bytes,
                stored: now,
                ttl,
            },
        );
        // The queue can hold stale keys of re-inserted entries; keep it
        // within a small multiple of the capacity.
        if self.order.len() > 2 * self.capacity {
            let entries = &self.entries;
            self.order
                .retain(|(k, s)| entries.get(k).is_some_and(|e| e.stored == *s));
        }
    }

    /// The answer kept under `key` with its TTLs lowered by the time it
    /// has been kept, or `None` (an expired one is dropped).
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<(Vec<u8>, u32)> {
        let e = self.entries.get(key)?;
        let age = now.saturating_duration_since(e.stored);
        if age >= Duration::from_secs(u64::from(e.ttl)) {
            self.entries.remove(key);
            return None;
        }
        let age = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
        Some((e.bytes.clone(), age))
    }
}

/// Lowers every TTL in `packet` (but the OPT pseudo-record's, which is
/// not a TTL) by `age` seconds.
pub fn age_records(packet: &mut Packet<'_>, age: u32) {
    for r in packet
        .answers
        .iter_mut()
        .chain(packet.name_servers.iter_mut())
        .chain(packet.additional_records.iter_mut())
    {
        r.ttl = r.ttl.saturating_sub(age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> CacheKey {
        (n.into(), 1, 1)
    }

    #[test]
    fn entries_expire_and_the_oldest_leaves_when_full() {
        let t0 = Instant::now();
        let mut c = Cache::new(2);
        c.insert(key("a"), vec![1], 10, t0);
        c.insert(key("b"), vec![2], 10, t0);
        assert_eq!(
            c.get(&key("a"), t0 + Duration::from_secs(3)),
            Some((vec![1], 3))
        );
        c.insert(key("c"), vec![3], 10, t0);
        assert_eq!(c.len(), 2);
        assert!(c.get(&key("a"), t0).is_none(), "the oldest insertion left");
        assert!(
            c.get(&key("b"), t0 + Duration::from_secs(10)).is_none(),
            "expired"
        );
        assert!(c.get(&key("c"), t0 + Duration::from_secs(9)).is_some());
        // Re-inserting one key many times never grows the queue unbounded.
        for i in 0..100 {
            c.insert(
                key("c"),
                vec![i],
                10,
                t0 + Duration::from_millis(u64::from(i)),
            );
        }
        assert!(c.order.len() <= 4);
    }
}
