//! Single-producer single-consumer rings shared with the kernel.
//!
//! Each AF_XDP ring is a power-of-two array of entries plus a producer and
//! a consumer index (free-running `u32`s) and a flags word, all in memory
//! mapped from the socket. Userspace produces into the fill and TX rings and
//! consumes from the RX and completion rings. Indices are cached locally so
//! the shared cache lines are touched once per batch, not per entry: the
//! same protocol as libxdp's `xsk_ring_prod`/`xsk_ring_cons`.

//!
//! The mapping itself, with its bounds and alignment checks, is
//! `sys::RingMap`; this module is the index protocol over it, in safe code.

use std::sync::atomic::Ordering;

use crate::sys::{Plain, RingMap};

/// The userspace-producer side (fill and TX rings).
#[derive(Debug)]
pub(crate) struct ProducerRing<T> {
    map: RingMap<T>,
    cached_prod: u32,
    cached_cons: u32,
}

impl<T: Plain> ProducerRing<T> {
    pub(crate) fn new(map: RingMap<T>) -> Self {
        let prod = map.producer().load(Ordering::Relaxed);
        let cons = map.consumer().load(Ordering::Acquire);
        ProducerRing {
            cached_prod: prod,
            cached_cons: cons.wrapping_add(map.size()),
            map,
        }
    }

    /// Free slots, refreshing the consumer index only if fewer than
    /// `wanted` are known to be free.
    #[inline]
    pub(crate) fn free(&mut self, wanted: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= wanted {
            return free;
        }
        self.cached_cons = self
            .map
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(self.map.size());
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Writes one entry; the caller has checked `free()`. Not visible to
    /// the kernel before `submit`.
    #[inline]
    pub(crate) fn push(&mut self, entry: T) {
        // The slot is ours: free() showed the consumer has released it and
        // we have not published it yet. (The map masks the position, so a
        // caller that skipped free() overwrites an entry, never memory
        // outside the ring.)
        self.map.write(self.cached_prod, entry);
        self.cached_prod = self.cached_prod.wrapping_add(1);
    }

    /// Publishes every pushed entry to the kernel.
    #[inline]
    pub(crate) fn submit(&mut self) {
        self.map
            .producer()
            .store(self.cached_prod, Ordering::Release);
    }

    /// Entries published but not yet consumed by the kernel.
    #[inline]
    pub(crate) fn outstanding(&self) -> u32 {
        self.cached_prod
            .wrapping_sub(self.map.consumer().load(Ordering::Acquire))
    }

    /// The kernel asks to be woken (`XDP_RING_NEED_WAKEUP`).
    #[inline]
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.map.flags().load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

/// The userspace-consumer side (RX and completion rings).
#[derive(Debug)]
pub(crate) struct ConsumerRing<T> {
    map: RingMap<T>,
    cached_prod: u32,
    cached_cons: u32,
}

impl<T: Plain> ConsumerRing<T> {
    pub(crate) fn new(map: RingMap<T>) -> Self {
        let cons = map.consumer().load(Ordering::Relaxed);
        ConsumerRing {
            cached_prod: cons,
            cached_cons: cons,
            map,
        }
    }

    /// Entries ready to read (up to `max`), refreshing the producer index
    /// only when the cached view is exhausted.
    #[inline]
    pub(crate) fn available(&mut self, max: u32) -> u32 {
        let mut ready = self.cached_prod.wrapping_sub(self.cached_cons);
        if ready == 0 {
            self.cached_prod = self.map.producer().load(Ordering::Acquire);
            ready = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        ready.min(max)
    }

    /// Reads the next entry; the caller has checked `available()`.
    #[inline]
    pub(crate) fn pop(&mut self) -> T {
        // The entry was published by the producer: available() observed it
        // with Acquire ordering.
        let entry = self.map.read(self.cached_cons);
        self.cached_cons = self.cached_cons.wrapping_add(1);
        entry
    }

    /// Gives every popped slot back to the producer.
    #[inline]
    pub(crate) fn release(&mut self) {
        self.map
            .consumer()
            .store(self.cached_cons, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A producer and a consumer over one ring in ordinary shared memory,
    /// standing in for the kernel side.
    fn pair(size: u32) -> (ProducerRing<u64>, ConsumerRing<u64>) {
        let (a, b) = RingMap::pair_in_memory(size).unwrap();
        (ProducerRing::new(a), ConsumerRing::new(b))
    }

    #[test]
    fn entries_flow_in_order_and_wrap() {
        let (mut prod, mut cons) = pair(8);
        let mut next = 0u64;
        let mut expect = 0u64;
        // Several laps around an 8-slot ring with uneven batches.
        for round in 0..20u32 {
            let n = prod.free(8).min(round % 7 + 1);
            for _ in 0..n {
                prod.push(next);
                next += 1;
            }
            assert_eq!(cons.available(64), 0, "unsubmitted entries are invisible");
            prod.submit();
            let got = cons.available(64);
            assert_eq!(got, n);
            for _ in 0..got {
                assert_eq!(cons.pop(), expect);
                expect += 1;
            }
            cons.release();
        }
        assert!(next > 16, "must have wrapped around the ring");
    }

    #[test]
    fn producer_stops_at_capacity_until_consumer_releases() {
        let (mut prod, mut cons) = pair(4);
        assert_eq!(prod.free(4), 4);
        for i in 0..4 {
            prod.push(i);
        }
        prod.submit();
        assert_eq!(prod.free(1), 0);
        assert_eq!(prod.outstanding(), 4);
        assert_eq!(cons.available(2), 2);
        cons.pop();
        cons.pop();
        // Popped but not released: still not free for the producer.
        assert_eq!(prod.free(1), 0);
        cons.release();
        assert_eq!(prod.free(1), 2);
        assert_eq!(prod.outstanding(), 2);
    }

    #[test]
    fn need_wakeup_reads_the_flags_word() {
        let (prod, cons) = pair(4);
        assert!(!prod.needs_wakeup());
        cons.map
            .flags()
            .store(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        assert!(prod.needs_wakeup());
    }
}
