//! External port allocation: one bitmap of the 65 536 ports per
//! (external address, protocol), owned by one worker.
//!
//! RFC 4787 REQ-3: ports are never overloaded (one external port, one
//! internal endpoint per protocol and address). The bitmap is scanned a
//! 64-port word at a time and only over the words this worker owns
//! ([`crate::config::PORT_BLOCK`]), so a full range costs at most 1024 word
//! tests and exhaustion cannot be turned into a long per-packet scan.
//! Port parity is not preserved (RFC 4787 section 4.2.2 leaves it optional).
//!
//! # Port reuse delay (RFC 6888 REQ-8)
//!
//! A port freed by a mapping is not handed to another internal endpoint
//! for at least the reuse delay `D` (120 s by default): a remote host
//! still sending to the old mapping must not reach a different subscriber.
//! A freed port stays set in the `used` bitmap and is also set in the
//! bitmap of the current *cooling generation*; there are [`GENERATIONS`]
//! of them per bitmap, each current for `D / (GENERATIONS - 1)` seconds,
//! and when one becomes current again its ports are cleared from `used`.
//! A port therefore cools for more than `D` and less than
//! `D * GENERATIONS / (GENERATIONS - 1)` (120 to 180 s by default), memory
//! is fixed (8 KiB per generation and bitmap), no port is ever freed early
//! whatever the churn, and allocation needs no change: cooling ports look
//! taken, so a range whose free ports are all cooling is exhausted. The
//! generations of a bitmap turn lazily when the bitmap is used (one pass
//! over 1024 words per generation, at most once per `D / 2` seconds).
//!
//! The internal endpoint that held a port may have it back while it cools
//! (REQ-8 allows reuse by the same subscriber, and the mapping stays stable
//! for RFC 4787 REQ-1): a direct-mapped table of recent owners remembers
//! `(protocol, internal endpoint, external address) -> (port, freed at)`.
//! A colliding release overwrites the older entry, which only costs that
//! endpoint its old port; an entry is believed only while its port is
//! still cooling in the generation it was freed into.

use std::net::Ipv4Addr;

use crate::config::{WorkerPartition, PORT_BLOCK};
use crate::flow::{Endpoint, Protocol};
use crate::rules::PortRange;
use crate::table::{endpoint_bits, keyed_hash, secs};

const WORDS: usize = 65_536 / 64;

/// Cooling generations per bitmap.
pub(crate) const GENERATIONS: usize = 3;

#[derive(Debug)]
struct PortBitmap {
    addr: u32,
    protocol: u8,
    /// Ports held by mappings or cooling.
    used: Box<[u64]>,
    /// Cooling ports, by generation (empty without a reuse delay).
    cool: Vec<Box<[u64]>>,
    current: usize,
    /// When each generation last became current (seconds).
    started: [u32; GENERATIONS],
    in_use: u32,
    cooling: u32,
}

impl PortBitmap {
    /// Turns the generations up to `now`: each generation that becomes
    /// current again first returns its ports to the pool.
    fn turn(&mut self, now: u32, period: u32) {
        if self.cool.is_empty() {
            return;
        }
        for _ in 0..GENERATIONS {
            let start = self.started[self.current];
            if now < start.saturating_add(period) {
                return;
            }
            let next = (self.current + 1) % GENERATIONS;
            let mut freed = 0;
            for (used, cool) in self.used.iter_mut().zip(self.cool[next].iter_mut()) {
                if *cool != 0 {
                    freed += cool.count_ones();
                    *used &= !*cool;
                    *cool = 0;
                }
            }
            self.cooling -= freed;
            self.current = next;
            self.started[next] = start.saturating_add(period);
        }
        // Idle for longer than every generation: all are empty now.
        if now >= self.started[self.current].saturating_add(period) {
            self.started[self.current] = now;
        }
    }

    /// The generation in which `port` cools, if it does.
    fn cooling_generation(&self, port: u16) -> Option<usize> {
        let (word, bit) = (usize::from(port) / 64, port % 64);
        (0..self.cool.len()).find(|&g| self.cool[g][word] & (1 << bit) != 0)
    }
}

/// Who last held a port that is cooling.
#[derive(Debug, Clone, Copy, Default)]
struct Owner {
    internal_addr: u32,
    addr: u32,
    freed: u32,
    internal_port: u16,
    port: u16,
    /// Protocol number; 0: empty.
    protocol: u8,
}

/// Port bitmaps for the external addresses this worker translates to.
#[derive(Debug)]
pub(crate) struct PortAllocator {
    /// Sorted by `(addr, protocol)`.
    maps: Vec<PortBitmap>,
    max_maps: usize,
    /// Seconds a generation stays current (0: no reuse delay).
    period: u32,
    owners: Box<[Owner]>,
    key: u64,
}

/// Bytes one (address, protocol) bitmap occupies, cooling generations
/// included.
pub(crate) const BITMAP_BYTES: usize = WORDS * 8;

/// Bytes of one entry of the recent-owner table.
pub(crate) const OWNER_BYTES: usize = core::mem::size_of::<Owner>();

impl PortAllocator {
    /// Room for `max_addresses` external addresses; freed ports cool for at
    /// least `reuse_delay` seconds (0: none) and `owners` recent owners are
    /// remembered (rounded up to a power of two).
    pub(crate) fn new(max_addresses: usize, reuse_delay: u64, owners: usize, key: u64) -> Self {
        let max_maps = max_addresses * 3;
        let period = reuse_delay.div_ceil(GENERATIONS as u64 - 1);
        let owners = if period == 0 {
            0
        } else {
            owners.max(1).next_power_of_two()
        };
        Self {
            maps: Vec::with_capacity(max_maps),
            max_maps,
            period: u32::try_from(period).unwrap_or(u32::MAX),
            owners: vec![Owner::default(); owners].into_boxed_slice(),
            key,
        }
    }

    fn owner_slot(&self, protocol: Protocol, internal: Endpoint, addr: u32) -> usize {
        let h = keyed_hash(
            self.key,
            endpoint_bits(internal),
            (u64::from(addr) << 8) | u64::from(protocol.number()),
        );
        (h as usize) & (self.owners.len() - 1)
    }

    fn position(&self, addr: Ipv4Addr, protocol: Protocol) -> Result<usize, usize> {
        let key = (u32::from(addr), protocol.number());
        self.maps
            .binary_search_by(|m| (m.addr, m.protocol).cmp(&key))
    }

    /// Makes sure a bitmap exists for `addr`/`protocol`. This allocates
    /// 8 KiB (32 KiB with the cooling generations) the first time an
    /// address is seen (pool addresses at rule install, a masquerade
    /// address when the interface address first appears), never per flow. `None` when the address budget is spent.
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
                        cool: if self.period == 0 {
                            Vec::new()
                        } else {
                            (0..GENERATIONS)
                                .map(|_| vec![0u64; WORDS].into_boxed_slice())
                                .collect()
                        },
                        current: 0,
                        started: [0; GENERATIONS],
                        in_use: 0,
                        cooling: 0,
                    },
                );
                Some(i)
            }
            Err(_) => None,
        }
    }

    /// Takes exactly `port` if it is free (port preservation).
    pub(crate) fn try_take(&mut self, map: usize, port: u16, now: u64) -> bool {
        let bitmap = &mut self.maps[map];
        bitmap.turn(secs(now), self.period);
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
        now: u64,
    ) -> Option<u16> {
        let bitmap = &mut self.maps[map];
        bitmap.turn(secs(now), self.period);
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

    /// The port `internal` held on this bitmap's address and freed less
    /// than the reuse delay ago, taken back if it is still cooling and
    /// `acceptable` (in the rule's range, owned by this worker, not
    /// reserved).
    pub(crate) fn reclaim(
        &mut self,
        map: usize,
        internal: Endpoint,
        now: u64,
        acceptable: impl Fn(u16) -> bool,
    ) -> Option<u16> {
        if self.owners.is_empty() {
            return None;
        }
        let (addr, protocol) = (self.maps[map].addr, self.maps[map].protocol);
        let slot = {
            let protocol = Protocol::from_number(protocol)?;
            self.owner_slot(protocol, internal, addr)
        };
        let o = self.owners[slot];
        if o.protocol != protocol
            || o.addr != addr
            || o.internal_addr != internal.addr_u32()
            || o.internal_port != internal.port
            || !acceptable(o.port)
        {
            return None;
        }
        let bitmap = &mut self.maps[map];
        bitmap.turn(secs(now), self.period);
        let generation = bitmap.cooling_generation(o.port)?;
        // Freed into this generation's present round, not an earlier one
        // (after which the port may have had other owners).
        if o.freed < bitmap.started[generation] {
            return None;
        }
        let (word, bit) = (usize::from(o.port) / 64, o.port % 64);
        bitmap.cool[generation][word] &= !(1 << bit);
        bitmap.cooling -= 1;
        bitmap.in_use += 1;
        self.owners[slot].protocol = 0;
        Some(o.port)
    }

    /// Returns `port`, which `internal` held, to the pool after the reuse
    /// delay (RFC 6888 REQ-8).
    pub(crate) fn release(
        &mut self,
        addr: Ipv4Addr,
        protocol: Protocol,
        port: u16,
        internal: Endpoint,
        now: u64,
    ) {
        let Ok(i) = self.position(addr, protocol) else {
            return;
        };
        let period = self.period;
        let bitmap = &mut self.maps[i];
        let (word, bit) = (usize::from(port) / 64, port % 64);
        if bitmap.used[word] & (1 << bit) == 0 || bitmap.cooling_generation(port).is_some() {
            return;
        }
        bitmap.in_use -= 1;
        if bitmap.cool.is_empty() {
            bitmap.used[word] &= !(1 << bit);
            return;
        }
        bitmap.turn(secs(now), period);
        let current = bitmap.current;
        bitmap.cool[current][word] |= 1 << bit;
        bitmap.cooling += 1;
        let slot = self.owner_slot(protocol, internal, u32::from(addr));
        self.owners[slot] = Owner {
            internal_addr: internal.addr_u32(),
            addr: u32::from(addr),
            freed: secs(now),
            internal_port: internal.port,
            port,
            protocol: protocol.number(),
        };
    }

    /// Returns a port no packet was ever translated with (its mapping was
    /// never used) to the pool at once.
    pub(crate) fn release_unused(&mut self, addr: Ipv4Addr, protocol: Protocol, port: u16) {
        if let Ok(i) = self.position(addr, protocol) {
            let bitmap = &mut self.maps[i];
            let (word, bit) = (usize::from(port) / 64, port % 64);
            if bitmap.used[word] & (1 << bit) != 0 && bitmap.cooling_generation(port).is_none() {
                bitmap.used[word] &= !(1 << bit);
                bitmap.in_use -= 1;
            }
        }
    }

    /// Whether ports of bitmap `map` are cooling.
    pub(crate) fn has_cooling(&self, map: usize) -> bool {
        self.maps[map].cooling > 0
    }

    /// Ports cooling, over all addresses.
    pub(crate) fn ports_cooling(&self) -> u64 {
        self.maps.iter().map(|m| u64::from(m.cooling)).sum()
    }

    /// Ports currently handed out, over all addresses.
    pub(crate) fn ports_in_use(&self) -> u64 {
        self.maps.iter().map(|m| u64::from(m.in_use)).sum()
    }

    /// Heap bytes held by the bitmaps.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.maps.capacity() * core::mem::size_of::<PortBitmap>()
            + self
                .maps
                .iter()
                .map(|m| (1 + m.cool.len()) * BITMAP_BYTES)
                .sum::<usize>()
            + self.owners.len() * OWNER_BYTES
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
    const HOST: Endpoint = Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 5000);
    const OTHER: Endpoint = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 5000);

    /// One port, 120 s reuse delay: 60 s generations.
    fn one_port() -> (PortAllocator, usize, PortRange) {
        let mut ports = PortAllocator::new(1, 120, 16, 9);
        let map = ports.ensure(ADDR, Protocol::Udp).unwrap();
        (ports, map, PortRange::new(3000, 3000))
    }

    fn take(ports: &mut PortAllocator, map: usize, range: PortRange, now: u64) -> Option<u16> {
        ports.allocate(map, range, WorkerPartition::SINGLE, 0, |_| false, now)
    }

    #[test]
    fn freed_port_cools_for_at_least_the_delay_wherever_it_is_freed() {
        // Freed at every second of a generation's life: never handed out
        // again before 120 s, always within 180 s.
        for freed in 0..130u64 {
            let (mut ports, map, range) = one_port();
            assert_eq!(take(&mut ports, map, range, 0), Some(3000));
            ports.release(ADDR, Protocol::Udp, 3000, HOST, freed);
            assert_eq!((ports.ports_in_use(), ports.ports_cooling()), (0, 1));
            assert_eq!(
                take(&mut ports, map, range, freed + 119),
                None,
                "freed {freed}"
            );
            assert!(!ports.try_take(map, 3000, freed + 119));
            assert_eq!(
                take(&mut ports, map, range, freed + 180),
                Some(3000),
                "freed {freed}"
            );
            assert_eq!(ports.ports_cooling(), 0);
        }
    }

    #[test]
    fn the_last_owner_may_reclaim_a_cooling_port_others_may_not() {
        let (mut ports, map, range) = one_port();
        assert_eq!(take(&mut ports, map, range, 0), Some(3000));
        ports.release(ADDR, Protocol::Udp, 3000, HOST, 10);
        assert_eq!(ports.reclaim(map, OTHER, 20, |_| true), None);
        assert_eq!(
            ports.reclaim(map, HOST, 20, |_| false),
            None,
            "not acceptable"
        );
        assert_eq!(ports.reclaim(map, HOST, 20, |_| true), Some(3000));
        assert_eq!((ports.ports_in_use(), ports.ports_cooling()), (1, 0));
        // Once: the entry is spent.
        ports.release_unused(ADDR, Protocol::Udp, 3000);
        assert_eq!(ports.reclaim(map, HOST, 21, |_| true), None);
    }

    #[test]
    fn a_stale_owner_entry_never_reclaims_a_later_owners_port() {
        let (mut ports, map, range) = one_port();
        assert_eq!(take(&mut ports, map, range, 0), Some(3000));
        ports.release(ADDR, Protocol::Udp, 3000, HOST, 0);
        // Cooled; another endpoint takes and frees it.
        assert_eq!(take(&mut ports, map, range, 200), Some(3000));
        ports.release(ADDR, Protocol::Udp, 3000, OTHER, 210);
        assert_eq!(ports.reclaim(map, HOST, 220, |_| true), None);
        assert_eq!(ports.reclaim(map, OTHER, 220, |_| true), Some(3000));
    }

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
        let mut ports = PortAllocator::new(1, 0, 0, 0);
        let map = ports.ensure(ADDR, Protocol::Udp).unwrap();
        let range = PortRange::new(1000, 1199);
        let mut seen = std::collections::HashSet::new();
        for hint in 0..200u32 {
            let p = ports
                .allocate(
                    map,
                    range,
                    WorkerPartition::SINGLE,
                    hint * 7919,
                    |_| false,
                    0,
                )
                .unwrap();
            assert!(range.contains(p));
            assert!(seen.insert(p), "port {p} handed out twice");
        }
        assert_eq!(
            ports.allocate(map, range, WorkerPartition::SINGLE, 0, |_| false, 0),
            None
        );
        assert_eq!(ports.ports_in_use(), 200);
        ports.release(ADDR, Protocol::Udp, 1100, HOST, 0);
        assert_eq!(
            ports.allocate(map, range, WorkerPartition::SINGLE, 3, |_| false, 0),
            Some(1100)
        );
    }

    #[test]
    fn respects_partition_and_reservations() {
        let mut ports = PortAllocator::new(1, 0, 0, 0);
        let map = ports.ensure(ADDR, Protocol::Tcp).unwrap();
        let part = WorkerPartition { index: 1, count: 2 };
        let range = PortRange::new(1, 65535);
        for hint in 0..500 {
            let p = ports
                .allocate(map, range, part, hint, |p| p == 64 || p == 65, 0)
                .unwrap();
            assert!(part.owns(p), "worker 1 got port {p}");
            assert!(p != 64 && p != 65);
        }
        let taken = ports.maps[map].used[1] & (1 << 2) != 0;
        assert_eq!(ports.try_take(map, 66, 0), !taken);
        assert!(
            !ports.try_take(map, 66, 0),
            "a taken port cannot be taken again"
        );
    }

    #[test]
    fn address_budget_is_enforced() {
        let mut ports = PortAllocator::new(1, 0, 0, 0);
        assert!(ports.ensure(ADDR, Protocol::Tcp).is_some());
        assert!(ports.ensure(ADDR, Protocol::Udp).is_some());
        assert!(ports.ensure(ADDR, Protocol::Icmp).is_some());
        assert!(ports
            .ensure(Ipv4Addr::new(198, 51, 100, 2), Protocol::Tcp)
            .is_none());
    }
}
