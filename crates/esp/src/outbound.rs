//! Outbound processing (RFC 4303 §3.1, §3.3): seal an inner packet in place.
//!
//! [`OutboundSa`] holds what every worker reads (SPI, key schedule,
//! selectors, deadlines) plus, on its own cache line, the atomics workers
//! touch once per block of sequence numbers. [`OutboundWorker`] is one
//! worker's private state: its current block of sequence numbers, its byte
//! tally and its counters. Per packet a worker writes only its own struct.

use core::ops::Range;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use core::time::Duration;
use std::sync::Arc;

use crate::cipher::CipherSuite;
use crate::error::{ConfigError, DropReason};
use crate::inner;
use crate::lifetime::{LifetimeState, SaEvent};
use crate::packet::{pad_len_for, EspPacket, ESP_HEADROOM, HEADER_LEN, ICV_LEN, TRAILER_LEN};
use crate::sa::{SaConfig, SaCore, SaCounters};

/// Bytes a worker may seal before publishing its tally to the shared byte
/// lifetime counter, besides publishing at every block reservation. Bounds
/// how far another worker's view of the byte lifetime can lag.
const BYTES_FLUSH: u64 = 1 << 20;

const FLAG_REKEY: u8 = 1;
const FLAG_EXPIRED: u8 = 2;
const FLAG_REKEY_REPORTED: u8 = 4;
const FLAG_EXPIRED_REPORTED: u8 = 8;
/// Worker-local only: this worker already found the sequence space empty.
const LOCAL_EXHAUSTED: u8 = 16;

/// Keeps `T` on cache lines of its own. 128 bytes because x86 prefetches
/// lines in adjacent pairs.
#[derive(Debug)]
#[repr(align(128))]
struct CacheAligned<T>(T);

/// State every worker writes, but rarely: once per sequence block.
#[derive(Debug)]
struct SharedCounters {
    /// Inner bytes sealed by all workers, as last published.
    bytes: AtomicU64,
    flags: AtomicU8,
}

/// The sequence numbers one key may still seal under: the allocator the
/// workers reserve blocks from, and an optional upper limit.
///
/// Under AES-GCM and ChaCha20-Poly1305 the IV is the sequence number, so a
/// number must never be used twice under one key (RFC 4106 §3.1, RFC 7634
/// §2). Within one process the allocator guarantees it; across restarts
/// the owner of a long-lived (configured) key keeps a durable record:
/// it writes "numbers up to L may have been used" to stable storage, then
/// raises the limit to L with [`extend`](Self::extend). Workers never seal
/// above the limit (they drop with [`DropReason::SeqUnreserved`] until it
/// is raised), so after a crash the sender resumes above the record.
///
/// SAs that share a key share one space ([`OutboundSa::with_space`]):
/// rebuilding an SA for a changed selector keeps counting where it was.
#[derive(Debug)]
#[repr(align(128))]
pub struct SeqSpace {
    /// Next unreserved sequence number; 0 or above the SA's maximum once
    /// the space is exhausted (0 is never a valid number to send).
    next: AtomicU64,
    /// Highest number that may be reserved.
    limit: AtomicU64,
}

impl SeqSpace {
    /// A space starting at `first` with no limit (keys negotiated for this
    /// SA alone, which no restart can bring back).
    pub fn unlimited(first: u64) -> Arc<Self> {
        Self::limited(first, u64::MAX)
    }

    /// A space starting at `first` in which numbers up to `limit` may be
    /// used; raise the limit with [`extend`](Self::extend).
    pub fn limited(first: u64, limit: u64) -> Arc<Self> {
        Arc::new(SeqSpace {
            next: AtomicU64::new(first),
            limit: AtomicU64::new(limit),
        })
    }

    /// The next number no worker has reserved yet: every number below it
    /// may have been used. 0 once the space is exhausted.
    pub fn next(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Highest number workers may reserve now.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Raises the limit to `limit` (never lowers it). Call only once every
    /// number up to `limit` is recorded as possibly used.
    pub fn extend(&self, limit: u64) {
        self.limit.fetch_max(limit, Ordering::Relaxed);
    }

    /// Stops further reservations and returns the next unreserved number
    /// (every number below it may have been used), e.g. before recording
    /// the exact position at shutdown. Sealing fails as unreserved after.
    pub fn freeze(&self) -> u64 {
        self.limit.store(0, Ordering::Relaxed);
        self.next()
    }
}

/// Why no block could be reserved.
enum NoBlock {
    /// The space is used up for good.
    Exhausted,
    /// The limit is reached; it may be raised.
    Unreserved,
}

/// Immutable outbound SA parameters plus the shared sequence allocator.
/// Wrap in an [`Arc`] and hand each worker an [`OutboundWorker`].
#[derive(Debug)]
pub struct OutboundSa {
    core: SaCore,
    seq_block: u64,
    space: Arc<SeqSpace>,
    shared: CacheAligned<SharedCounters>,
}

impl OutboundSa {
    /// Builds an SA whose first packet carries sequence number 1.
    pub fn new(config: &SaConfig<'_>) -> Result<Arc<Self>, ConfigError> {
        Self::resumed(config, 1)
    }

    /// Builds an SA that continues at `next_seq`, e.g. on a standby taking
    /// over after failover. The caller must guarantee no number at or above
    /// `next_seq` was ever sent under this key: reuse repeats a GCM nonce.
    pub fn resumed(config: &SaConfig<'_>, next_seq: u64) -> Result<Arc<Self>, ConfigError> {
        Self::with_space(config, SeqSpace::unlimited(next_seq))
    }

    /// Builds an SA that reserves its sequence numbers from `space`, which
    /// other SAs under the same key may share (they then never use one
    /// number twice between them).
    pub fn with_space(
        config: &SaConfig<'_>,
        space: Arc<SeqSpace>,
    ) -> Result<Arc<Self>, ConfigError> {
        let core = SaCore::new(config)?;
        if config.seq_block == 0 {
            return Err(ConfigError::SeqBlock);
        }
        let next_seq = space.next();
        if next_seq == 0 || next_seq > core.max_seq() {
            return Err(ConfigError::ResumeSeq(next_seq));
        }
        Ok(Arc::new(OutboundSa {
            core,
            seq_block: u64::from(config.seq_block),
            space,
            shared: CacheAligned(SharedCounters {
                bytes: AtomicU64::new(0),
                flags: AtomicU8::new(0),
            }),
        }))
    }

    /// The sequence space this SA reserves from.
    pub fn space(&self) -> &Arc<SeqSpace> {
        &self.space
    }

    /// A worker handle. Create one per worker thread; do not share it.
    pub fn worker(self: &Arc<Self>) -> OutboundWorker {
        OutboundWorker {
            sa: Arc::clone(self),
            next: 1,
            end: 0,
            bytes_published: 0,
            bytes_local: 0,
            flags_seen: 0,
            counters: SaCounters::default(),
        }
    }

    /// SPI carried in every packet.
    pub fn spi(&self) -> u32 {
        self.core.spi
    }

    /// Cipher suite.
    pub fn cipher(&self) -> CipherSuite {
        self.core.cipher.suite()
    }

    /// Whether 64-bit sequence numbers are in use.
    pub fn esn(&self) -> bool {
        self.core.esn
    }

    /// Inner bytes sealed so far as published by the workers.
    pub fn bytes_published(&self) -> u64 {
        self.shared.0.bytes.load(Ordering::Relaxed)
    }

    /// Level-triggered lifetime state at `now` (soft/hard by time or bytes,
    /// and sequence exhaustion as expiry).
    pub fn lifetime_state(&self, now: Duration) -> LifetimeState {
        let flags = self.shared.0.flags.load(Ordering::Relaxed);
        let by_limits = self.core.deadlines.state(self.bytes_published(), now);
        if flags & FLAG_EXPIRED != 0 {
            LifetimeState::Expired
        } else if flags & FLAG_REKEY != 0 {
            by_limits.max(LifetimeState::RekeyNeeded)
        } else {
            by_limits
        }
    }

    /// Reports each lifetime event once: `RekeyNeeded` when a soft limit
    /// passes, then `Expired` when a hard limit passes or the sequence space
    /// is used up. Meant for the control thread; safe to call from any thread.
    pub fn poll_event(&self, now: Duration) -> Option<SaEvent> {
        let state = self.lifetime_state(now);
        let flags = &self.shared.0.flags;
        if state >= LifetimeState::RekeyNeeded
            && flags.fetch_or(FLAG_REKEY_REPORTED, Ordering::Relaxed) & FLAG_REKEY_REPORTED == 0
        {
            return Some(SaEvent::RekeyNeeded);
        }
        if state == LifetimeState::Expired
            && flags.fetch_or(FLAG_EXPIRED_REPORTED, Ordering::Relaxed) & FLAG_EXPIRED_REPORTED == 0
        {
            return Some(SaEvent::Expired);
        }
        None
    }

    fn raise(&self, flag: u8) {
        self.shared.0.flags.fetch_or(flag, Ordering::Relaxed);
    }

    /// Reserves the next block: one atomic read-modify-write per block.
    /// Returns the first and last (inclusive) numbers of the block.
    fn reserve_block(&self) -> Result<(u64, u64), NoBlock> {
        let max = self.core.max_seq();
        let block = self.seq_block;
        let mut refused = NoBlock::Exhausted;
        let mut last = 0;
        // Relaxed suffices: uniqueness comes from the read-modify-write on a
        // single location. The limit only grows (or drops to 0 when frozen),
        // and each value was made durable before it was stored.
        let first = self
            .space
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |first| {
                let limit = self.space.limit.load(Ordering::Relaxed).min(max);
                if first == 0 || first > max {
                    refused = NoBlock::Exhausted;
                    None
                } else if first > limit {
                    refused = NoBlock::Unreserved;
                    None
                } else {
                    last = first.saturating_add(block - 1).min(limit);
                    // Past 2^64-1 this wraps to 0, the exhausted marker.
                    Some(last.wrapping_add(1))
                }
            })
            .map_err(|_| refused)?;
        // Ask for a rekey well before the space runs out: with 32-bit
        // numbers the last sixteenth is about 268 million packets, minutes
        // of headroom at line rate.
        if first >= max - (max >> 4) {
            self.raise(FLAG_REKEY);
        }
        Ok((first, last))
    }
}

/// A sealed packet: where the ESP packet lies in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Range of the ESP packet (header through ICV) in the buffer.
    pub esp: Range<usize>,
    /// Sequence number used.
    pub seq: u64,
}

/// One worker's outbound state for one SA. Aligned so that two workers'
/// states never share a cache line.
#[derive(Debug)]
#[repr(align(128))]
pub struct OutboundWorker {
    sa: Arc<OutboundSa>,
    /// Next number to use from the current block.
    next: u64,
    /// Last number of the current block; `next > end` means none left.
    end: u64,
    /// Shared byte total as of this worker's last publication.
    bytes_published: u64,
    /// Bytes sealed by this worker since then.
    bytes_local: u64,
    /// Flags this worker already raised, so it raises each only once.
    flags_seen: u8,
    counters: SaCounters,
}

impl OutboundWorker {
    /// The SA this worker seals for.
    pub fn sa(&self) -> &Arc<OutboundSa> {
        &self.sa
    }

    /// This worker's counters.
    pub fn counters(&self) -> &SaCounters {
        &self.counters
    }

    /// Publishes this worker's byte tally to the SA (also done
    /// automatically every block and every MiB).
    pub fn flush(&mut self) {
        let shared = &self.sa.shared.0.bytes;
        self.bytes_published = shared
            .fetch_add(self.bytes_local, Ordering::Relaxed)
            .saturating_add(self.bytes_local);
        self.bytes_local = 0;
    }

    /// Encrypts the inner packet at `buf[inner]` in place and frames it as
    /// ESP (RFC 4303 §3.3): the header and IV go into the
    /// [`ESP_HEADROOM`] bytes before it, padding, trailer and ICV into at
    /// most [`ESP_TAILROOM`](crate::ESP_TAILROOM) bytes after it.
    ///
    /// `now` is the caller's clock for lifetime checks.
    pub fn seal(
        &mut self,
        buf: &mut [u8],
        inner: Range<usize>,
        now: Duration,
    ) -> Result<Sealed, DropReason> {
        let r = self.seal_inner(buf, inner, now);
        match &r {
            Ok(_) => {}
            Err(reason) => self.counters.count_drop(*reason),
        }
        r
    }

    fn seal_inner(
        &mut self,
        buf: &mut [u8],
        inner: Range<usize>,
        now: Duration,
    ) -> Result<Sealed, DropReason> {
        // Framing: where everything goes, checked before any byte is written.
        let start = inner
            .start
            .checked_sub(ESP_HEADROOM)
            .ok_or(DropReason::NoRoom)?;
        if inner.start > inner.end || inner.end > buf.len() {
            return Err(DropReason::NoRoom);
        }
        let len = inner.end - inner.start;
        let pad = pad_len_for(len);
        let end = inner.end + pad + TRAILER_LEN + ICV_LEN;
        if end > buf.len() {
            return Err(DropReason::NoRoom);
        }

        // RFC 4301 §5.1: only traffic the SA's selectors cover may use it.
        let info = inner::inspect(&buf[inner.clone()])?;
        if info.len != len {
            return Err(DropReason::BadInner);
        }
        if !self.sa.core.selectors.allows(info.src, info.dst) {
            return Err(DropReason::SelectorMismatch);
        }

        match self
            .sa
            .core
            .deadlines
            .state(self.bytes_published.saturating_add(self.bytes_local), now)
        {
            LifetimeState::Fresh => {}
            LifetimeState::RekeyNeeded => self.raise_once(FLAG_REKEY),
            LifetimeState::Expired => {
                self.raise_once(FLAG_EXPIRED);
                return Err(DropReason::SaExpired);
            }
        }
        let seq = self.next_seq()?;

        // Trailer (RFC 4303 §2.4-2.6): pad bytes 1, 2, 3, ..., pad length,
        // next header.
        let mut at = inner.end;
        for i in 1..=pad {
            buf[at] = i as u8;
            at += 1;
        }
        buf[at] = pad as u8;
        buf[at + 1] = info.next_header.number();

        let esp = &mut buf[start..end];
        let mut pkt = EspPacket::new_unchecked(&mut esp[..]);
        pkt.set_spi(self.sa.core.spi);
        pkt.set_seq_low(seq as u32);
        // The IV is the 64-bit sequence number: unique per packet under one
        // key because sequence numbers never repeat or wrap (RFC 4106 §3.1
        // requires uniqueness; RFC 8750 §2 uses the same construction).
        pkt.set_iv(seq.to_be_bytes());
        debug_assert_eq!(HEADER_LEN + 8, ESP_HEADROOM);
        self.sa.core.cipher.seal_packet(esp, seq, self.sa.core.esn);

        self.counters.count_ok(len);
        self.bytes_local += len as u64;
        if self.bytes_local >= BYTES_FLUSH {
            self.flush();
        }
        Ok(Sealed {
            esp: start..end,
            seq,
        })
    }

    /// Next sequence number, reserving a new block when the current one is
    /// used up. Never wraps (RFC 4303 §3.3.3).
    #[inline]
    fn next_seq(&mut self) -> Result<u64, DropReason> {
        if self.next > self.end {
            if self.flags_seen & LOCAL_EXHAUSTED != 0 {
                return Err(DropReason::SeqExhausted);
            }
            self.flush();
            match self.sa.reserve_block() {
                Ok((first, last)) => {
                    self.next = first;
                    self.end = last;
                }
                Err(NoBlock::Unreserved) => return Err(DropReason::SeqUnreserved),
                Err(NoBlock::Exhausted) => {
                    self.flags_seen |= LOCAL_EXHAUSTED;
                    self.raise_once(FLAG_EXPIRED);
                    return Err(DropReason::SeqExhausted);
                }
            }
        }
        let seq = self.next;
        // `end` may be u64::MAX: then `next` saturates and the `end` check
        // above can no longer tell, so mark the block empty explicitly.
        if seq == self.end {
            self.next = 1;
            self.end = 0;
        } else {
            self.next = seq + 1;
        }
        Ok(seq)
    }

    fn raise_once(&mut self, flag: u8) {
        if self.flags_seen & flag == 0 {
            self.flags_seen |= flag;
            self.sa.raise(flag);
        }
    }
}
