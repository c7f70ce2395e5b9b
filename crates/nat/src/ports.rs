//! External port allocation: one bitmap of the 65 536 ports per
//! (external address, protocol), owned by one worker.
//!
//! RFC 4787 REQ-3: ports are never overloaded (one external port, one
//! internal endpoint per protocol and address). The bitmap is scanned a
//! 64-port word at a time and only over the words this worker owns
//! ([`crate::config::PORT_BLOCK`]), so a full range costs at most 1024 word
//! tests and exhaustion cannot be turned into a long per-packet scan.
//! Port parity is not preserved (RFC 4787 section 4.2.2 leaves it optional).

use std::net::Ipv4Addr;

use crate::config::{WorkerPartition, PORT_BLOCK};
use crate::flow::Protocol;
use crate::rules::PortRange;

const WORDS: usize = 65_536 / 64;

#[derive(Debug)]
struct PortBitmap {
    addr: u32,
    protocol: u8,
    used: Box<[u64]>,
    in_use: u32,
}

/// Port bitmaps for the external addresses this worker translates to.
#[derive(Debug)]
pub(crate) struct PortAllocator {
    /// Sorted by `(addr, protocol)`.
    maps: Vec<PortBitmap>,
    max_maps: usize,
}

/// Bytes one (address, protocol) bitmap occupies.
pub(crate) const BITMAP_BYTES: usize = WORDS * 8;

impl PortAllocator {
    pub(crate) fn new(max_addresses: usize) -> Self {
        let max_maps = max_addresses * 3;
        Self {
            maps: Vec::with_capacity(max_maps),
            max_maps,
        }
    }

    fn position(&self, addr: Ipv4Addr, protocol: Protocol) -> Result<usize, usize> {
        let key = (u32::from(addr), protocol.number());
        self.maps
            .binary_search_by(|m| (m.addr, m.protocol).cmp(&key))
    }

    /// Makes sure a bitmap exists for `addr`/`protocol`. This allocates
    /// 8 KiB the first time an address is seen (pool addresses at rule
    /// install, a masquerade address when the interface address first
    /// appears), never per flow. `None` when the address budget is spent.
    pub(crate) fn ensure(&mut self, addr: Ipv4Addr, protocol: Protocol) -> Option<usize> {
        match self.position(addr, protocol) {
            Ok(i) => Some(i),
            Err(i) if self.maps.len() < self.max_maps => {
                self.maps.insert(
                    i,
                    PortBitmap {
                        addr: u32::from(addr),
                        protocol: protocol.number(),
                        used: vec![0u64; WORDS].into_boxed_slice(),
                        in_use: 0,
                    },
                );
                Some(i)
            }
            Err(_) => None,
        }
    }

    /// Takes exactly `port` if it is free (port preservation).
    pub(crate) fn try_take(&mut self, map: usize, port: u16) -> bool {
        let bitmap = &mut self.maps[map];
        let (word, bit) = (usize::from(port) / 64, port % 64);
        if bitmap.used[word] & (1 << bit) != 0 {
            return false;
        }
        bitmap.used[word] |= 1 << bit;
        bitmap.in_use += 1;
        true
    }

    /// Takes a free port of `range` owned by `partition`, starting the scan
    /// at a word chosen by `hint` so allocations are not predictable from
    /// outside. `reserved` vetoes ports published by DNAT rules.
    pub(crate) fn allocate(
        &mut self,
        map: usize,
        range: PortRange,
        partition: WorkerPartition,
        hint: u32,
        reserved: impl Fn(u16) -> bool,
    ) -> Option<u16> {
        let bitmap = &mut self.maps[map];
        let first_word = usize::from(range.first) / 64;
        let last_word = usize::from(range.last) / 64;
        let words = last_word - first_word + 1;
        let start = hint as usize % words;
        let block_words = usize::from(PORT_BLOCK) / 64;
        for step in 0..words {
            let word = first_word + (start + step) % words;
            let block = word / block_words;
            if block % usize::from(partition.count.max(1)) != usize::from(partition.index) {
                continue;
            }
            let mut free = !bitmap.used[word] & range_mask(word, range);
            while free != 0 {
                let bit = free.trailing_zeros();
                free &= free - 1;
                // `word` < 1024 and `bit` < 64, so the port fits in u16.
                let port = (word * 64) as u16 + bit as u16;
                if reserved(port) {
                    continue;
                }
                bitmap.used[word] |= 1 << bit;
                bitmap.in_use += 1;
                return Some(port);
            }
        }
        None
    }

    /// Returns `port` to the pool.
    pub(crate) fn release(&mut self, addr: Ipv4Addr, protocol: Protocol, port: u16) {
        if let Ok(i) = self.position(addr, protocol) {
            let bitmap = &mut self.maps[i];
            let (word, bit) = (usize::from(port) / 64, port % 64);
            if bitmap.used[word] & (1 << bit) != 0 {
                bitmap.used[word] &= !(1 << bit);
                bitmap.in_use -= 1;
            }
        }
    }

    /// Ports currently handed out, over all addresses.
    pub(crate) fn ports_in_use(&self) -> u64 {
        self.maps.iter().map(|m| u64::from(m.in_use)).sum()
    }

    /// Heap bytes held by the bitmaps.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.maps.capacity() * core::mem::size_of::<PortBitmap>() + self.maps.len() * BITMAP_BYTES
    }
}

/// Bits of `word` whose ports fall inside `range`.
fn range_mask(word: usize, range: PortRange) -> u64 {
    let base = word * 64;
    let lo = usize::from(range.first).saturating_sub(base).min(64);
    let hi = (usize::from(range.last) + 1).saturating_sub(base).min(64);
    if lo >= hi {
        return 0;
    }
    let upper = if hi == 64 { u64::MAX } else { (1u64 << hi) - 1 };
    upper & !((1u64 << lo) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

    #[test]
    fn range_mask_edges() {
        assert_eq!(range_mask(0, PortRange::new(1, 63)), u64::MAX - 1);
        assert_eq!(range_mask(1, PortRange::new(1, 63)), 0);
        assert_eq!(range_mask(1, PortRange::new(64, 64)), 1);
        assert_eq!(range_mask(1023, PortRange::new(1, 65535)), u64::MAX);
        assert_eq!(range_mask(16, PortRange::new(1030, 1031)), 0b1100_0000);
    }

    #[test]
    fn allocates_every_port_once_then_exhausts() {
        let mut ports = PortAllocator::new(1);
        let map = ports.ensure(ADDR, Protocol::Udp).unwrap();
        let range = PortRange::new(1000, 1199);
        let mut seen = std::collections::HashSet::new();
        for hint in 0..200u32 {
            let p = ports
                .allocate(map, range, WorkerPartition::SINGLE, hint * 7919, |_| false)
                .unwrap();
            assert!(range.contains(p));
            assert!(seen.insert(p), "port {p} handed out twice");
        }
        assert_eq!(
            ports.allocate(map, range, WorkerPartition::SINGLE, 0, |_| false),
            None
        );
        assert_eq!(ports.ports_in_use(), 200);
        ports.release(ADDR, Protocol::Udp, 1100);
        assert_eq!(
            ports.allocate(map, range, WorkerPartition::SINGLE, 3, |_| false),
            Some(1100)
        );
    }

    #[test]
    fn respects_partition_and_reservations() {
        let mut ports = PortAllocator::new(1);
        let map = ports.ensure(ADDR, Protocol::Tcp).unwrap();
        let part = WorkerPartition { index: 1, count: 2 };
        let range = PortRange::new(1, 65535);
        for hint in 0..500 {
            let p = ports
                .allocate(map, range, part, hint, |p| p == 64 || p == 65)
                .unwrap();
            assert!(part.owns(p), "worker 1 got port {p}");
            assert!(p != 64 && p != 65);
        }
        let taken = ports.maps[map].used[1] & (1 << 2) != 0;
        assert_eq!(ports.try_take(map, 66), !taken);
        assert!(
            !ports.try_take(map, 66),
            "a taken port cannot be taken again"
        );
    }

    #[test]
    fn address_budget_is_enforced() {
        let mut ports = PortAllocator::new(1);
        assert!(ports.ensure(ADDR, Protocol::Tcp).is_some());
        assert!(ports.ensure(ADDR, Protocol::Udp).is_some());
        assert!(ports.ensure(ADDR, Protocol::Icmp).is_some());
        assert!(ports
            .ensure(Ipv4Addr::new(198, 51, 100, 2), Protocol::Tcp)
            .is_none());
    }
}
