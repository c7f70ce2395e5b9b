//! Single-producer single-consumer rings shared with the kernel.
//!
//! Each AF_XDP ring is a power-of-two array of entries plus a producer and
//! a consumer index (free-running `u32`s) and a flags word, all in memory
//! mapped from the socket. Userspace produces into the fill and TX rings and
//! consumes from the RX and completion rings. Indices are cached locally so
//! the shared cache lines are touched once per batch, not per entry: the
//! same protocol as libxdp's `xsk_ring_prod`/`xsk_ring_cons`.

use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// A mapping of one ring: where its indices, flags and entries are.
#[derive(Debug)]
pub(crate) struct RingMap {
    /// Start of the mapping (or of the test buffer).
    base: NonNull<u8>,
    /// Bytes mapped; 0 when the memory is not an mmap (tests).
    mapped_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<u8>,
    size: u32,
}

// SAFETY: a RingMap exclusively owns its mapping (one producer or one
// consumer side of a ring); moving it to another thread moves that role.
// It is not Sync: the index caching assumes a single user.
unsafe impl Send for RingMap {}

impl RingMap {
    /// Maps ring `pgoff` of socket `fd` using the kernel's offsets.
    pub(crate) fn map<T>(
        fd: RawFd,
        pgoff: libc::off_t,
        off: &libc::xdp_ring_offset,
        size: u32,
    ) -> io::Result<RingMap> {
        let len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: mapping a fresh region chosen by the kernel; no existing
        // memory is affected. The offsets come from XDP_MMAP_OFFSETS.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr as *mut u8).ok_or_else(io::Error::last_os_error)?;
        // SAFETY: the offsets lie inside the mapping of `len` bytes (the
        // kernel sized the ring to hold them) and are 4-byte aligned.
        unsafe {
            Ok(RingMap {
                base,
                mapped_len: len,
                producer: base.add(off.producer as usize).cast(),
                consumer: base.add(off.consumer as usize).cast(),
                flags: base.add(off.flags as usize).cast(),
                entries: base.add(off.desc as usize),
                size,
            })
        }
    }

    /// A ring over plain memory, for tests of the index protocol.
    ///
    /// # Safety
    /// `mem` must be 8-byte aligned, hold `16 + size * entry_size` bytes and
    /// outlive the returned map.
    #[cfg(test)]
    pub(crate) unsafe fn over(mem: NonNull<u8>, size: u32) -> RingMap {
        // SAFETY: per the contract, the buffer is large and aligned enough.
        unsafe {
            RingMap {
                base: mem,
                mapped_len: 0,
                producer: mem.cast(),
                consumer: mem.add(4).cast(),
                flags: mem.add(8).cast(),
                entries: mem.add(16),
                size,
            }
        }
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping, aligned, only accessed
        // atomically by both sides.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn flags(&self) -> u32 {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed)
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        if self.mapped_len != 0 {
            // SAFETY: base/mapped_len describe a mapping we created and
            // nobody uses after this point (the ring owns it).
            unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped_len) };
        }
    }
}

/// The userspace-producer side (fill and TX rings).
#[derive(Debug)]
pub(crate) struct ProducerRing<T> {
    map: RingMap,
    mask: u32,
    cached_prod: u32,
    cached_cons: u32,
    _entry: PhantomData<T>,
}

impl<T: Copy> ProducerRing<T> {
    pub(crate) fn new(map: RingMap) -> Self {
        let size = map.size;
        debug_assert!(size.is_power_of_two());
        let prod = map.producer().load(Ordering::Relaxed);
        let cons = map.consumer().load(Ordering::Acquire);
        ProducerRing {
            mask: size - 1,
            cached_prod: prod,
            cached_cons: cons.wrapping_add(size),
            map,
            _entry: PhantomData,
        }
    }

    /// Free slots, refreshing the consumer index only if fewer than
    /// `wanted` are known to be free.
    pub(crate) fn free(&mut self, wanted: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= wanted {
            return free;
        }
        self.cached_cons = self
            .map
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(self.map.size);
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Writes one entry; the caller has checked `free()`. Not visible to
    /// the kernel before `submit`.
    #[inline]
    pub(crate) fn push(&mut self, entry: T) {
        let idx = (self.cached_prod & self.mask) as usize;
        // SAFETY: idx < size, and the slot is ours: free() showed the
        // consumer has released it and we have not published it yet.
        unsafe {
            self.map
                .entries
                .cast::<T>()
                .as_ptr()
                .add(idx)
                .write_volatile(entry)
        };
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
    pub(crate) fn outstanding(&self) -> u32 {
        self.cached_prod
            .wrapping_sub(self.map.consumer().load(Ordering::Acquire))
    }

    /// The kernel asks to be woken (`XDP_RING_NEED_WAKEUP`).
    #[inline]
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.map.flags() & libc::XDP_RING_NEED_WAKEUP != 0
    }
}

/// The userspace-consumer side (RX and completion rings).
#[derive(Debug)]
pub(crate) struct ConsumerRing<T> {
    map: RingMap,
    mask: u32,
    cached_prod: u32,
    cached_cons: u32,
    _entry: PhantomData<T>,
}

impl<T: Copy> ConsumerRing<T> {
    pub(crate) fn new(map: RingMap) -> Self {
        let size = map.size;
        debug_assert!(size.is_power_of_two());
        let cons = map.consumer().load(Ordering::Relaxed);
        ConsumerRing {
            mask: size - 1,
            cached_prod: cons,
            cached_cons: cons,
            map,
            _entry: PhantomData,
        }
    }

    /// Entries ready to read (up to `max`), refreshing the producer index
    /// only when the cached view is exhausted.
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
        let idx = (self.cached_cons & self.mask) as usize;
        // SAFETY: idx < size and the entry was published by the producer
        // (available() observed it with Acquire ordering).
        let entry = unsafe {
            self.map
                .entries
                .cast::<T>()
                .as_ptr()
                .add(idx)
                .read_volatile()
        };
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

    /// A ring buffer in ordinary memory shared by a test producer and
    /// consumer, standing in for the kernel side.
    struct Shared {
        mem: Vec<u64>,
    }

    impl Shared {
        fn new(size: u32) -> Self {
            Shared {
                mem: vec![0u64; 2 + size as usize],
            }
        }
        fn map(&mut self, size: u32) -> RingMap {
            let ptr = NonNull::new(self.mem.as_mut_ptr().cast::<u8>()).unwrap();
            // SAFETY: the Vec<u64> is 8-byte aligned, 16 + size * 8 bytes
            // long and outlives the maps in each test.
            unsafe { RingMap::over(ptr, size) }
        }
    }

    #[test]
    fn entries_flow_in_order_and_wrap() {
        let mut shared = Shared::new(8);
        let mut prod = ProducerRing::<u64>::new(shared.map(8));
        let mut cons = ConsumerRing::<u64>::new(shared.map(8));
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
        let mut shared = Shared::new(4);
        let mut prod = ProducerRing::<u64>::new(shared.map(4));
        let mut cons = ConsumerRing::<u64>::new(shared.map(4));
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
        let mut shared = Shared::new(4);
        let prod = ProducerRing::<u64>::new(shared.map(4));
        assert!(!prod.needs_wakeup());
        // SAFETY: the flags word lives in `shared`, alive for the test.
        unsafe { prod.map.flags.as_ref() }.store(libc::XDP_RING_NEED_WAKEUP, Ordering::Relaxed);
        assert!(prod.needs_wakeup());
    }
}
