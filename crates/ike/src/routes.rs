//! Route announcements between Strait peers: a private status notification
//! (RFC 7296 §3.10.1, types 40960–65535 are for private use) carried in an
//! INFORMATIONAL request, so inside the IKE SA's SK payload: authenticated
//! and encrypted like every other IKE message. A peer that does not know
//! it ignores it, as §3.10.1 asks for unknown status types; it is only
//! sent to peers that said they understand it ([`ROUTES_SUPPORTED`] in
//! IKE_AUTH).
//!
//! A set of prefixes can be larger than one datagram, so it goes in chunks,
//! one INFORMATIONAL exchange each (window 1 keeps them in order):
//!
//! ```text
//! version (1) = 1 | flags (1): 0x01 last chunk | reserved (2)
//! generation (4) | offset (4): index of the chunk's first prefix in the set
//! entries: family (1: 4 or 6) | length (1) | ceil(length / 8) address bytes
//! ```
//!
//! The receiver keeps a set once its last chunk arrived; a chunk out of
//! sequence (another generation, a gap) starts over at the next offset 0.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::payload::TrafficSelector;

/// Status notification: the sender understands [`ROUTES`].
pub const ROUTES_SUPPORTED: u16 = 42400;
/// Status notification: one chunk of a route set.
pub const ROUTES: u16 = 42401;

const VERSION: u8 = 1;
const LAST: u8 = 0x01;
const HEADER: usize = 12;
/// Entry bytes per chunk at most: with the IKE header, SK payload and
/// notify header the datagram stays well under a 1280-byte path MTU.
pub const CHUNK_BYTES: usize = 1000;

fn entry_len(len: u8) -> usize {
    2 + usize::from(len).div_ceil(8)
}

/// The chunks announcing `prefixes` (selectors that are not prefixes are
/// left out) as generation `generation`. An empty set is one empty chunk.
pub fn encode(generation: u32, prefixes: &[TrafficSelector]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut offset = 0u32;
    let start = |offset: u32| {
        let mut c = Vec::with_capacity(HEADER + CHUNK_BYTES);
        c.extend_from_slice(&[VERSION, 0, 0, 0]);
        c.extend_from_slice(&generation.to_be_bytes());
        c.extend_from_slice(&offset.to_be_bytes());
        c
    };
    let entries = prefixes.iter().filter_map(TrafficSelector::as_prefix);
    for (index, (addr, len)) in (0u32..).zip(entries) {
        if chunk.is_empty() {
            chunk = start(offset);
        }
        if chunk.len() + entry_len(len) > HEADER + CHUNK_BYTES {
            chunks.push(std::mem::replace(&mut chunk, start(index)));
            offset = index;
        }
        let n = usize::from(len).div_ceil(8);
        match addr {
            IpAddr::V4(a) => {
                chunk.extend_from_slice(&[4, len]);
                chunk.extend_from_slice(&a.octets()[..n]);
            }
            IpAddr::V6(a) => {
                chunk.extend_from_slice(&[6, len]);
                chunk.extend_from_slice(&a.octets()[..n]);
            }
        }
    }
    if chunk.is_empty() {
        chunk = start(offset);
    }
    chunk[1] = LAST;
    chunks.push(chunk);
    chunks
}

/// One chunk read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The set's generation.
    pub generation: u32,
    /// Index of its first prefix in the set.
    pub offset: u32,
    /// The set's last chunk.
    pub last: bool,
    /// Its prefixes.
    pub prefixes: Vec<TrafficSelector>,
}

/// Reads one chunk; `None` when it is malformed (wrong version, an entry
/// cut short, a bad family or length, host bits set).
pub fn decode(data: &[u8]) -> Option<Chunk> {
    if data.len() < HEADER || data[0] != VERSION {
        return None;
    }
    let generation = u32::from_be_bytes(data[4..8].try_into().ok()?);
    let offset = u32::from_be_bytes(data[8..12].try_into().ok()?);
    let mut rest = &data[HEADER..];
    let mut prefixes = Vec::new();
    while !rest.is_empty() {
        let (&family, &len) = (rest.first()?, rest.get(1)?);
        let n = usize::from(len).div_ceil(8);
        let bytes = rest.get(2..2 + n)?;
        let addr = match (family, len) {
            (4, 0..=32) => {
                let mut o = [0u8; 4];
                o[..n].copy_from_slice(bytes);
                IpAddr::V4(Ipv4Addr::from(o))
            }
            (6, 0..=128) => {
                let mut o = [0u8; 16];
                o[..n].copy_from_slice(bytes);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return None,
        };
        let ts = TrafficSelector::prefix(addr, len)?;
        // Host bits set: not a prefix as sent by `encode`.
        if ts.as_prefix() != Some((addr, len)) {
            return None;
        }
        prefixes.push(ts);
        rest = &rest[2 + n..];
    }
    Some(Chunk {
        generation,
        offset,
        last: data[1] & LAST != 0,
        prefixes,
    })
}

/// A set being received, chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct Assembly {
    generation: Option<u32>,
    prefixes: Vec<TrafficSelector>,
}

impl Assembly {
    /// Takes one chunk; returns the whole set (and its generation) when
    /// this was its last chunk.
    pub fn take(&mut self, chunk: Chunk) -> Option<(u32, Vec<TrafficSelector>)> {
        let continues = self.generation == Some(chunk.generation)
            && chunk.offset as usize == self.prefixes.len();
        if chunk.offset == 0 {
            self.generation = Some(chunk.generation);
            self.prefixes.clear();
        } else if !continues {
            self.generation = None;
            self.prefixes.clear();
            return None;
        }
        self.prefixes.extend(chunk.prefixes);
        if chunk.last {
            self.generation = None;
            Some((chunk.generation, std::mem::take(&mut self.prefixes)))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TrafficSelector {
        let (a, l) = s.split_once('/').unwrap();
        TrafficSelector::prefix(a.parse().unwrap(), l.parse().unwrap()).unwrap()
    }

    #[test]
    fn a_small_set_is_one_chunk_and_reads_back() {
        let set = [
            p("10.1.0.0/16"),
            p("0.0.0.0/0"),
            p("2001:db8:1::/48"),
            p("192.0.2.7/32"),
        ];
        let chunks = encode(7, &set);
        assert_eq!(chunks.len(), 1);
        let c = decode(&chunks[0]).unwrap();
        assert_eq!((c.generation, c.offset, c.last), (7, 0, true));
        assert_eq!(c.prefixes, set);
        let mut a = Assembly::default();
        assert_eq!(a.take(c), Some((7, set.to_vec())));
    }

    #[test]
    fn a_large_set_goes_in_chunks_that_assemble_in_order_only() {
        let set: Vec<TrafficSelector> = (0..4000u32)
            .map(|i| p(&format!("10.{}.{}.0/24", i / 256, i % 256)))
            .collect();
        let chunks = encode(3, &set);
        assert!(chunks.len() > 10, "{}", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= HEADER + CHUNK_BYTES));
        let mut a = Assembly::default();
        let mut got = None;
        for c in &chunks {
            got = a.take(decode(c).unwrap());
        }
        assert_eq!(got, Some((3, set.clone())));
        // A lost chunk: the set is not taken; the next one starts over.
        let mut a = Assembly::default();
        for (i, c) in chunks.iter().enumerate() {
            if i != 2 {
                assert_eq!(a.take(decode(c).unwrap()), None);
            }
        }
        let again = encode(4, &set[..3]);
        assert_eq!(
            a.take(decode(&again[0]).unwrap()),
            Some((4, set[..3].to_vec()))
        );
    }

    #[test]
    fn an_empty_set_withdraws_everything() {
        let chunks = encode(9, &[]);
        assert_eq!(chunks.len(), 1);
        let mut a = Assembly::default();
        assert_eq!(a.take(decode(&chunks[0]).unwrap()), Some((9, Vec::new())));
    }

    #[test]
    fn malformed_chunks_are_refused() {
        let good = encode(1, &[p("10.1.0.0/16")]).remove(0);
        assert!(decode(&good[..HEADER - 1]).is_none());
        assert!(decode(&good[..good.len() - 1]).is_none(), "entry cut short");
        let mut v = good.clone();
        v[0] = 2;
        assert!(decode(&v).is_none(), "version");
        let mut f = good.clone();
        f[HEADER] = 5;
        assert!(decode(&f).is_none(), "family");
        let mut l = good.clone();
        l[HEADER + 1] = 33;
        assert!(decode(&l).is_none(), "length");
        let mut h = good.clone();
        h[HEADER + 1] = 8; // 10.1/8: host bits set
        h.truncate(HEADER + 3);
        h.push(1);
        assert!(decode(&h).is_none(), "host bits");
    }
}
