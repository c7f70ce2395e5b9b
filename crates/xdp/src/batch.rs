//! Fixed-capacity vectors of frame descriptors: the unit of work of every
//! pipeline stage (VPP-style), allocated once per worker.

use crate::FrameDesc;

/// Descriptors a [`FrameBatch`] holds at most.
pub const BATCH_CAPACITY: usize = 256;

/// Up to [`BATCH_CAPACITY`] frames moving through the pipeline together.
///
/// Owning a batch owns its frames: moving descriptors out (`pop`,
/// `swap_remove`, `drain`) hands their frames to the caller, who must
/// transmit them or give them back to the pool.
#[derive(Debug)]
pub struct FrameBatch {
    descs: [FrameDesc; BATCH_CAPACITY],
    len: usize,
}

impl Default for FrameBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameBatch {
    /// An empty batch.
    pub fn new() -> Self {
        FrameBatch {
            descs: [const { FrameDesc::EMPTY }; BATCH_CAPACITY],
            len: 0,
        }
    }

    /// Frames in the batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// No frame in the batch.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left.
    #[inline]
    pub fn remaining(&self) -> usize {
        BATCH_CAPACITY - self.len
    }

    /// The batch is full.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == BATCH_CAPACITY
    }

    /// Appends a frame; gives it back if the batch is full.
    #[inline]
    pub fn push(&mut self, desc: FrameDesc) -> Result<(), FrameDesc> {
        match self.descs.get_mut(self.len) {
            Some(slot) => {
                *slot = desc;
                self.len += 1;
                Ok(())
            }
            None => Err(desc),
        }
    }

    /// Removes the last frame.
    #[inline]
    pub fn pop(&mut self) -> Option<FrameDesc> {
        let last = self.len.checked_sub(1)?;
        self.len = last;
        Some(std::mem::replace(&mut self.descs[last], FrameDesc::EMPTY))
    }

    /// Removes frame `index`, moving the last frame into its place (O(1),
    /// order not kept). `None` if out of range.
    #[inline]
    pub fn swap_remove(&mut self, index: usize) -> Option<FrameDesc> {
        if index >= self.len {
            return None;
        }
        self.descs.swap(index, self.len - 1);
        self.pop()
    }

    /// The frames, in arrival order.
    #[inline]
    pub fn as_slice(&self) -> &[FrameDesc] {
        &self.descs[..self.len]
    }

    /// The frames, mutable (to resize them with `Umem::grow_front` etc.).
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [FrameDesc] {
        &mut self.descs[..self.len]
    }

    /// Iterates over the frames.
    #[inline]
    pub fn iter(&self) -> std::slice::Iter<'_, FrameDesc> {
        self.as_slice().iter()
    }

    /// Iterates mutably over the frames.
    #[inline]
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, FrameDesc> {
        self.as_mut_slice().iter_mut()
    }

    /// Moves every frame out, first to last, leaving the batch empty.
    pub fn drain(&mut self) -> Drain<'_> {
        let len = self.len;
        self.len = 0;
        Drain {
            batch: self,
            next: 0,
            end: len,
        }
    }
}

/// Iterator returned by [`FrameBatch::drain`]. Frames it has not yielded
/// when dropped are lost to the pool, so consume it fully.
#[derive(Debug)]
pub struct Drain<'a> {
    batch: &'a mut FrameBatch,
    next: usize,
    end: usize,
}

impl Iterator for Drain<'_> {
    type Item = FrameDesc;

    #[inline]
    fn next(&mut self) -> Option<FrameDesc> {
        if self.next == self.end {
            return None;
        }
        let desc = std::mem::replace(&mut self.batch.descs[self.next], FrameDesc::EMPTY);
        self.next += 1;
        Some(desc)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Drain<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Umem, UmemConfig};

    fn umem() -> Umem {
        Umem::new(UmemConfig {
            frame_count: 300,
            ..UmemConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn push_until_full_then_hand_back() {
        let mut umem = umem();
        let mut batch = FrameBatch::new();
        for _ in 0..BATCH_CAPACITY {
            batch.push(umem.alloc_frame().unwrap()).unwrap();
        }
        assert!(batch.is_full());
        assert_eq!(batch.remaining(), 0);
        let extra = umem.alloc_frame().unwrap();
        let back = batch.push(extra).unwrap_err();
        umem.free_frame(back);
        for d in batch.drain() {
            umem.free_frame(d);
        }
        assert!(batch.is_empty());
        assert_eq!(umem.pool().len(), 300);
    }

    #[test]
    fn drain_keeps_order_and_swap_remove_moves_last() {
        let mut umem = umem();
        let mut batch = FrameBatch::new();
        let mut addrs = Vec::new();
        for _ in 0..5 {
            let d = umem.alloc_frame().unwrap();
            addrs.push(d.addr());
            batch.push(d).unwrap();
        }
        let removed = batch.swap_remove(1).unwrap();
        assert_eq!(removed.addr(), addrs[1]);
        assert_eq!(batch.as_slice()[1].addr(), addrs[4]);
        assert!(batch.swap_remove(4).is_none());
        umem.free_frame(removed);
        let drained: Vec<u64> = batch
            .drain()
            .map(|d| {
                let a = d.addr();
                umem.free_frame(d);
                a
            })
            .collect();
        assert_eq!(drained, [addrs[0], addrs[4], addrs[2], addrs[3]]);
        assert!(batch.pop().is_none());
        assert_eq!(umem.pool().len(), 300);
    }
}
