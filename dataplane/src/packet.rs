//! A packet inside a frame buffer, with room to grow at both ends.
//!
//! Frames live in UMEM chunks larger than the packet: headroom in front lets
//! a stage prepend headers (Ethernet after routing, outer IP/UDP/ESP on
//! encapsulation) and tailroom behind lets it append (ESP trailer and ICV,
//! an ICMP error quoting the packet). Moving the window never copies.

/// A window `[start, end)` over a frame buffer.
#[derive(Debug)]
pub struct PacketBuf<'a> {
    buf: &'a mut [u8],
    start: usize,
    end: usize,
}

impl<'a> PacketBuf<'a> {
    /// The packet occupies `buf[start..start + len]`; lengths beyond the
    /// buffer are clamped.
    pub fn new(buf: &'a mut [u8], start: usize, len: usize) -> PacketBuf<'a> {
        let start = start.min(buf.len());
        let end = start.saturating_add(len).min(buf.len());
        PacketBuf { buf, start, end }
    }

    /// The packet's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The packet's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Offset of the first byte in the buffer.
    #[inline]
    pub fn start(&self) -> usize {
        self.start
    }

    /// Packet length.
    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// True when the packet is empty.
    #[cfg(test)]
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Bytes free in front of the packet.
    #[cfg(test)]
    #[inline]
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Bytes free behind the packet.
    #[cfg(test)]
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.end
    }

    /// Grows the packet by `n` bytes at the front; false if there is no room.
    #[cfg(test)]
    #[inline]
    pub fn push_front(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }

    /// Drops `n` bytes from the front (at most the whole packet).
    #[inline]
    pub fn pull_front(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Sets the length, growing into the tailroom or shrinking; false if
    /// the buffer is too small.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> bool {
        match self.start.checked_add(len) {
            Some(end) if end <= self.buf.len() => {
                self.end = end;
                true
            }
            _ => false,
        }
    }

    /// The whole buffer and the window, for stages that build a new packet
    /// from the old one in place.
    #[inline]
    pub fn raw_mut(&mut self) -> (&mut [u8], usize, usize) {
        (self.buf, self.start, self.end)
    }

    /// Moves the window to `[start, start + len)`; false if out of bounds.
    #[inline]
    pub fn set_window(&mut self, start: usize, len: usize) -> bool {
        match start.checked_add(len) {
            Some(end) if end <= self.buf.len() => {
                self.start = start;
                self.end = end;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_moves_within_bounds_only() {
        let mut storage = [0u8; 64];
        let mut p = PacketBuf::new(&mut storage, 16, 20);
        assert_eq!(
            (p.start(), p.len(), p.headroom(), p.tailroom()),
            (16, 20, 16, 28)
        );
        assert!(p.push_front(14));
        assert_eq!(p.len(), 34);
        assert!(!p.push_front(3));
        p.pull_front(14);
        assert_eq!(p.start(), 16);
        assert!(p.set_len(48));
        assert!(!p.set_len(49));
        p.pull_front(100);
        assert!(p.is_empty());
        assert!(!p.set_window(60, 5));
        assert!(p.set_window(0, 64));
        let clamped = PacketBuf::new(&mut storage, 60, 10);
        assert_eq!(clamped.len(), 4);
    }
}
