//! The probe every generated packet carries at the start of its L4 payload.
//!
//! The probe is 18 bytes so that it fits a minimum-size (64-byte) Ethernet
//! frame carrying IPv4/UDP (60 bytes without FCS − 42 bytes of headers):
//!
//! | bytes  | field                                                     |
//! |--------|-----------------------------------------------------------|
//! | 0..2   | magic `0x5347` ("SG")                                      |
//! | 2      | version (high nibble, 1) and flags (low nibble)            |
//! | 3      | stream id                                                  |
//! | 4..12  | sequence number, 64-bit big-endian, per stream from 0      |
//! | 12..18 | TX timestamp: low 48 bits of `CLOCK_MONOTONIC` in ns       |
//!
//! 48 bits of nanoseconds wrap every 78 hours; the receiver subtracts modulo
//! 2^48, which is exact for any one-way latency below that.
//!
//! All offsets are even, so the probe contributes to an Internet checksum as
//! an aligned block (see [`crate::gen::template`]).

use core::ops::Range;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION_FLAGS: usize = 2;
    pub const STREAM: usize = 3;
    pub const SEQUENCE: Range<usize> = 4..12;
    pub const TIMESTAMP: Range<usize> = 12..18;
}

/// Length of the probe in bytes.
pub const PROBE_LEN: usize = 18;
/// The magic that marks a generated packet.
pub const MAGIC: u16 = 0x5347;
/// Probe format version, carried in the high nibble of byte 2.
pub const VERSION: u8 = 1;
/// Flag: the packet was sent during warm-up and is excluded from results.
pub const FLAG_WARMUP: u8 = 0x1;
/// Mask of the 48-bit timestamp.
pub const TIMESTAMP_MASK: u64 = (1 << 48) - 1;

/// The sequence and timestamp bytes: what changes per packet.
pub const VARYING: Range<usize> = field::SEQUENCE.start..field::TIMESTAMP.end;

/// A zero-copy view over a probe.
#[derive(Debug, Clone, Copy)]
pub struct Probe<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Probe<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer if it is long enough and carries the magic and version.
    pub fn new_checked(buffer: T) -> Option<Self> {
        let b = buffer.as_ref();
        if b.len() < PROBE_LEN
            || b[field::MAGIC] != MAGIC.to_be_bytes()
            || b[field::VERSION_FLAGS] >> 4 != VERSION
        {
            return None;
        }
        Some(Self { buffer })
    }

    /// Flag bits (low nibble of byte 2).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION_FLAGS] & 0x0f
    }

    /// True if the packet belongs to the warm-up period.
    pub fn is_warmup(&self) -> bool {
        self.flags() & FLAG_WARMUP != 0
    }

    /// The stream the packet belongs to.
    pub fn stream(&self) -> u8 {
        self.buffer.as_ref()[field::STREAM]
    }

    /// The per-stream sequence number.
    pub fn sequence(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::SEQUENCE]);
        u64::from_be_bytes(b)
    }

    /// The 48-bit TX timestamp.
    pub fn timestamp(&self) -> u64 {
        let t = &self.buffer.as_ref()[field::TIMESTAMP];
        u64::from_be_bytes([0, 0, t[0], t[1], t[2], t[3], t[4], t[5]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Probe<T> {
    /// Writes magic, version, flags and stream id (the fixed part).
    pub fn set_header(&mut self, stream: u8, flags: u8) {
        let b = self.buffer.as_mut();
        b[field::MAGIC].copy_from_slice(&MAGIC.to_be_bytes());
        b[field::VERSION_FLAGS] = (VERSION << 4) | (flags & 0x0f);
        b[field::STREAM] = stream;
    }

    /// Sets the flag bits, keeping the version.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::VERSION_FLAGS] = (VERSION << 4) | (flags & 0x0f);
    }

    /// Sets the sequence number.
    pub fn set_sequence(&mut self, seq: u64) {
        self.buffer.as_mut()[field::SEQUENCE].copy_from_slice(&seq.to_be_bytes());
    }

    /// Sets the timestamp (only the low 48 bits are kept).
    pub fn set_timestamp(&mut self, ns: u64) {
        self.buffer.as_mut()[field::TIMESTAMP].copy_from_slice(&ns.to_be_bytes()[2..]);
    }
}

/// One-way latency from a 48-bit TX timestamp to a full RX timestamp, modulo 2^48.
#[inline]
pub fn latency_ns(tx48: u64, rx_ns: u64) -> u64 {
    (rx_ns.wrapping_sub(tx48)) & TIMESTAMP_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = [0u8; PROBE_LEN];
        let mut p = Probe::new_unchecked(&mut buf[..]);
        p.set_header(7, FLAG_WARMUP);
        p.set_sequence(0x0102_0304_0506_0708);
        p.set_timestamp(0xabcd_1234_5678_9abc);
        let p = Probe::new_checked(&buf[..]).expect("valid probe");
        assert_eq!(p.stream(), 7);
        assert!(p.is_warmup());
        assert_eq!(p.sequence(), 0x0102_0304_0506_0708);
        assert_eq!(p.timestamp(), 0x1234_5678_9abc);
    }

    #[test]
    fn rejects_short_or_foreign_payloads() {
        assert!(Probe::new_checked(&[0u8; PROBE_LEN][..]).is_none());
        let mut buf = [0u8; PROBE_LEN];
        Probe::new_unchecked(&mut buf[..]).set_header(0, 0);
        assert!(Probe::new_checked(&buf[..PROBE_LEN - 1]).is_none());
        buf[2] = 0x20; // version 2
        assert!(Probe::new_checked(&buf[..]).is_none());
    }

    #[test]
    fn latency_survives_timestamp_wrap() {
        let tx = TIMESTAMP_MASK - 10; // just before the 48-bit wrap
        let rx = (1u64 << 48) + 5 + (3 << 50); // after it, high bits set
        assert_eq!(latency_ns(tx & TIMESTAMP_MASK, rx), 16);
    }
}
