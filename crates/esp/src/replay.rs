//! Anti-replay window (RFC 4303 §3.4.3) kept as a ring of 64-bit blocks so
//! that sliding never shifts the whole bitmap (RFC 6479 §2), plus the
//! Extended Sequence Number high-half inference of RFC 4303 Appendix A.

use crate::error::{ConfigError, DropReason};

/// Window size used unless configured otherwise.
pub const DEFAULT_REPLAY_WINDOW: u32 = 1024;
/// Largest configurable window.
pub const MAX_REPLAY_WINDOW: u32 = 4096;

const BLOCK_BITS: u64 = 64;
/// Ring capacity in blocks: a power of two holding `MAX_REPLAY_WINDOW / 64 + 1`
/// blocks. RFC 6479 §2 needs one block more than the window so the block
/// being filled never aliases the oldest block still inside the window.
const RING_BLOCKS: usize =
    ((MAX_REPLAY_WINDOW as u64 / BLOCK_BITS) as usize + 1).next_power_of_two();

/// Receiver-side replay state of one inbound SA.
///
/// Holds the highest authenticated sequence number (`top`) and which of the
/// `size` numbers ending at `top` were seen. Only [`accept`](Self::accept),
/// called after the ICV verified, changes it (RFC 4303 §3.4.3: the window is
/// updated only if the integrity check succeeds).
#[derive(Clone)]
pub struct ReplayWindow {
    top: u64,
    size: u64,
    /// Blocks in use minus one: the configured window uses the smallest
    /// power-of-two ring that fits `size / 64 + 1` blocks, keeping the hot
    /// part of the bitmap small for the default window.
    ring_mask: usize,
    bitmap: [u64; RING_BLOCKS],
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.top)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// An empty window of `size` sequence numbers (a multiple of 64 in
    /// 64..=4096; RFC 4303 §3.4.3 asks for at least 32, 64 recommended).
    pub fn new(size: u32) -> Result<Self, ConfigError> {
        if size == 0 || size > MAX_REPLAY_WINDOW || size % (BLOCK_BITS as u32) != 0 {
            return Err(ConfigError::ReplayWindow(size));
        }
        let ring = (size as usize / BLOCK_BITS as usize + 1).next_power_of_two();
        Ok(ReplayWindow {
            top: 0,
            size: u64::from(size),
            ring_mask: ring - 1,
            bitmap: [0; RING_BLOCKS],
        })
    }

    /// A window resumed at `top` (e.g. after a failover that synchronised
    /// the highest sequence number). Because which numbers below `top` were
    /// seen is unknown, all of them are treated as seen: a resumed receiver
    /// may drop a few late packets but never accepts a replay.
    pub fn resumed(size: u32, top: u64) -> Result<Self, ConfigError> {
        let mut w = Self::new(size)?;
        w.top = top;
        if top > 0 {
            for b in w.bitmap.iter_mut() {
                *b = u64::MAX;
            }
            let bit = top % BLOCK_BITS;
            let keep = if bit == 63 {
                u64::MAX
            } else {
                (1u64 << (bit + 1)) - 1
            };
            w.bitmap[w.block_slot(top)] = keep;
        }
        Ok(w)
    }

    /// Configured window size.
    pub fn size(&self) -> u32 {
        self.size as u32
    }

    /// Highest authenticated sequence number, 0 before the first packet.
    pub fn top(&self) -> u64 {
        self.top
    }

    fn block_slot(&self, seq: u64) -> usize {
        (seq / BLOCK_BITS) as usize & self.ring_mask
    }

    /// Reconstructs the full 64-bit sequence number from the 32 bits on the
    /// wire (RFC 4303 Appendix A2.1). Returns `ReplayOld` when the only
    /// consistent answer lies outside the 64-bit space (before 0 or after
    /// 2^64-1), which a conforming sender never produces.
    // Comparisons are written exactly as RFC 4303 Appendix A2.1 states them.
    #[allow(clippy::int_plus_one)]
    pub fn infer_esn(&self, seq_low: u32) -> Result<u64, DropReason> {
        let tl = self.top as u32;
        let th = (self.top >> 32) as u32;
        let w = self.size as u32;
        let seq_high = if tl >= w - 1 {
            // Case A: window lies within one 2^32 subspace.
            // `tl - (w - 1)`: never below zero here (tl >= w - 1).
            if seq_low >= tl - (w - 1) {
                Some(th)
            } else {
                th.checked_add(1)
            }
        } else {
            // Case B: window spans two subspaces.
            if seq_low >= tl.wrapping_sub(w - 1) {
                th.checked_sub(1)
            } else {
                Some(th)
            }
        };
        match seq_high {
            Some(h) => Ok((u64::from(h) << 32) | u64::from(seq_low)),
            None => Err(DropReason::ReplayOld),
        }
    }

    /// Whether `seq` would be accepted, without changing state. Used before
    /// the ICV check to drop duplicates cheaply (RFC 4303 §3.4.3).
    #[inline]
    pub fn check(&self, seq: u64) -> Result<(), DropReason> {
        // The first packet carries 1 (RFC 4303 §3.3.3); 0 is never sent.
        if seq == 0 {
            return Err(DropReason::ReplayOld);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= self.size {
            return Err(DropReason::ReplayOld);
        }
        if self.bitmap[self.block_slot(seq)] & (1 << (seq % BLOCK_BITS)) != 0 {
            return Err(DropReason::Replay);
        }
        Ok(())
    }

    /// Records an authenticated `seq`, sliding the window if it is new
    /// highest. Slides clear at most one ring's worth of blocks and never
    /// shift bits (RFC 6479 §2).
    #[inline]
    pub fn accept(&mut self, seq: u64) -> Result<(), DropReason> {
        self.check(seq)?;
        if seq > self.top {
            let old_block = self.top / BLOCK_BITS;
            let new_block = seq / BLOCK_BITS;
            let stale = (new_block - old_block).min(self.ring_mask as u64 + 1);
            for i in 1..=stale {
                let slot = (old_block + i) as usize & self.ring_mask;
                self.bitmap[slot] = 0;
            }
            self.top = seq;
        }
        let slot = self.block_slot(seq);
        self.bitmap[slot] |= 1 << (seq % BLOCK_BITS);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn esn_inference_at_the_window_edge() {
        // top = w - 1 is where case A starts (RFC 4303 A2.1): the lower
        // bound of the window is exactly 0.
        let mut w = ReplayWindow::new(1024).unwrap();
        for seq in 1..=1023 {
            w.accept(seq).unwrap();
        }
        assert_eq!(w.infer_esn(1024).unwrap(), 1024);
        assert_eq!(w.infer_esn(0).unwrap(), 0);
        assert_eq!(w.infer_esn(5).unwrap(), 5);
    }

    #[test]
    fn sizes_are_validated() {
        for bad in [0, 32, 100, 4160, 8192] {
            assert_eq!(
                ReplayWindow::new(bad).unwrap_err(),
                ConfigError::ReplayWindow(bad)
            );
        }
        for good in [64, 1024, 4096] {
            assert_eq!(ReplayWindow::new(good).unwrap().size(), good);
        }
    }

    #[test]
    fn duplicates_old_and_zero() {
        let mut w = ReplayWindow::new(64).unwrap();
        assert_eq!(w.check(0), Err(DropReason::ReplayOld));
        w.accept(1).unwrap();
        assert_eq!(w.accept(1), Err(DropReason::Replay));
        w.accept(100).unwrap();
        // 100 - 64 = 36 is just outside; 37 just inside.
        assert_eq!(w.check(36), Err(DropReason::ReplayOld));
        assert_eq!(w.check(37), Ok(()));
        w.accept(37).unwrap();
        assert_eq!(w.check(37), Err(DropReason::Replay));
        // A jump far beyond the ring clears everything.
        w.accept(1_000_000).unwrap();
        assert_eq!(w.check(999_999), Ok(()));
        assert_eq!(w.check(1_000_000), Err(DropReason::Replay));
    }

    #[test]
    fn esn_inference_across_the_32_bit_boundary() {
        // RFC 4303 Appendix A, case A: top just below 2^32.
        let mut w = ReplayWindow::new(1024).unwrap();
        w.accept(0xffff_fff0).unwrap();
        assert_eq!(w.infer_esn(0xffff_ffff), Ok(0xffff_ffff));
        assert_eq!(w.infer_esn(0), Ok(0x1_0000_0000));
        assert_eq!(w.infer_esn(0xffff_fff0 - 1023), Ok(0xffff_fff0 - 1023));
        assert_eq!(w.infer_esn(0xffff_fff0 - 1024), Ok(0x1_ffff_fff0 - 1024));
        // Case B: top just above 2^32, window reaches back into subspace 0.
        w.accept(0x1_0000_0005).unwrap();
        assert_eq!(w.infer_esn(0xffff_fffe), Ok(0xffff_fffe));
        assert_eq!(w.infer_esn(6), Ok(0x1_0000_0006));
        assert_eq!(w.check(0xffff_fffe), Ok(()));
        assert_eq!(w.check(0xffff_fff0), Err(DropReason::Replay));
        // Case B with high half 0: the "previous subspace" does not exist.
        let w = ReplayWindow::new(1024).unwrap();
        assert_eq!(w.infer_esn(0xffff_ff00), Err(DropReason::ReplayOld));
        assert_eq!(w.infer_esn(1), Ok(1));
        // At the very top of the 64-bit space there is no next subspace.
        let w = ReplayWindow::resumed(1024, u64::MAX - 10).unwrap();
        assert_eq!(w.infer_esn(3), Err(DropReason::ReplayOld));
    }

    #[test]
    fn resumed_window_treats_past_as_seen() {
        let w = ReplayWindow::resumed(128, 1000).unwrap();
        assert_eq!(w.check(1000), Err(DropReason::Replay));
        assert_eq!(w.check(990), Err(DropReason::Replay));
        assert_eq!(w.check(872), Err(DropReason::ReplayOld));
        assert_eq!(w.check(1001), Ok(()));
        let mut w = w;
        w.accept(1003).unwrap();
        // 1001 and 1002 became part of the window unseen.
        assert_eq!(w.check(1001), Ok(()));
        assert_eq!(w.check(1002), Ok(()));
        assert_eq!(w.check(1000), Err(DropReason::Replay));
    }

    /// The obvious window: a set of everything seen and the highest value.
    struct ModelWindow {
        size: u64,
        top: u64,
        seen: BTreeSet<u64>,
    }

    impl ModelWindow {
        fn accept(&mut self, seq: u64) -> Result<(), DropReason> {
            if seq == 0 || (seq <= self.top && self.top - seq >= self.size) {
                return Err(DropReason::ReplayOld);
            }
            if !self.seen.insert(seq) {
                return Err(DropReason::Replay);
            }
            self.top = self.top.max(seq);
            Ok(())
        }
    }

    proptest! {
        #[test]
        fn matches_model_window(
            size_blocks in 1u32..=64,
            start in 0u64..(1 << 40),
            steps in proptest::collection::vec((0u8..4, 0u64..300, 0u64..5000), 1..400),
        ) {
            let size = size_blocks * 64;
            let mut w = ReplayWindow::new(size).unwrap();
            let mut m = ModelWindow { size: u64::from(size), top: 0, seen: BTreeSet::new() };
            let mut cursor = start;
            for (kind, small, big) in steps {
                // Mix of forward jumps (small and past the whole ring),
                // reordering inside the window and replays of old values.
                let seq = match kind {
                    0 => { cursor += small + 1; cursor }
                    1 => { cursor += big * 17; cursor }
                    2 => cursor.saturating_sub(small),
                    _ => cursor.saturating_sub(big),
                };
                let before = w.check(seq);
                let got = w.accept(seq);
                prop_assert_eq!(before, got);
                prop_assert_eq!(got, m.accept(seq), "seq {} top {}", seq, m.top);
                prop_assert_eq!(w.top(), m.top);
            }
        }
    }
}
