//! The UMEM: one region of packet frames shared with the kernel, the
//! descriptors that name frames held by the worker, and the pool of free
//! frames.
//!
//! Frames are `frame_size` bytes (a power of two, default 2048) in aligned
//! chunk mode: a descriptor's address may point anywhere inside its chunk,
//! and everything in front of the packet up to the chunk start is headroom
//! the pipeline may grow into (ESP and UDP encapsulation prepend headers
//! there), everything behind it up to the chunk end is tailroom (ESP
//! trailer and ICV).
//!
//! Ownership of a frame is the ownership of its [`FrameDesc`]: descriptors
//! are neither `Copy` nor `Clone`, only this crate creates them (from the RX
//! ring or the free pool), and handing one to `transmit` or `drop_frame`
//! moves it. So a frame the kernel is reading or writing can never be
//! reached through [`Umem::frame`] or [`Umem::frame_mut`].

use std::sync::atomic::{AtomicU16, Ordering};

use crate::sys::UmemRegion;
use crate::{Error, PortId};

/// Default frame (chunk) size.
pub const DEFAULT_FRAME_SIZE: u32 = 2048;
/// Default number of frames (8 MiB with 2048-byte frames).
pub const DEFAULT_FRAME_COUNT: u32 = 4096;
/// Default headroom in front of every packet.
pub const DEFAULT_HEADROOM: u32 = 256;
/// Room the kernel always reserves in front of received packets, in copy
/// and zero-copy mode alike (`XDP_PACKET_HEADROOM`), on top of the
/// headroom registered with the UMEM.
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// UMEM geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UmemConfig {
    /// Number of frames.
    pub frame_count: u32,
    /// Bytes per frame: a power of two from 2048 to the page size.
    pub frame_size: u32,
    /// Bytes free in front of each received or allocated packet, at least
    /// [`XDP_PACKET_HEADROOM`]: the kernel always reserves that much and
    /// only the excess is registered as UMEM headroom. The largest packet
    /// is `frame_size - headroom` (1792 bytes by default).
    pub headroom: u32,
}

impl Default for UmemConfig {
    fn default() -> Self {
        UmemConfig {
            frame_count: DEFAULT_FRAME_COUNT,
            frame_size: DEFAULT_FRAME_SIZE,
            headroom: DEFAULT_HEADROOM,
        }
    }
}

impl UmemConfig {
    fn validate(&self) -> Result<(), Error> {
        if !self.frame_size.is_power_of_two() || !(2048..=4096).contains(&self.frame_size) {
            return Err(Error::Config(format!(
                "UMEM frame size {} must be a power of two from 2048 to 4096",
                self.frame_size
            )));
        }
        if self.headroom < XDP_PACKET_HEADROOM {
            return Err(Error::Config(format!(
                "UMEM headroom {} is below the {XDP_PACKET_HEADROOM} bytes the kernel always reserves",
                self.headroom
            )));
        }
        if self.headroom + 512 > self.frame_size {
            return Err(Error::Config(format!(
                "UMEM headroom {} leaves less than 512 bytes of a {}-byte frame",
                self.headroom, self.frame_size
            )));
        }
        if self.frame_count == 0 || self.frame_count > (1 << 20) {
            return Err(Error::Config(format!(
                "UMEM frame count {} must be between 1 and 1048576",
                self.frame_count
            )));
        }
        Ok(())
    }

    /// Bytes of memory the UMEM occupies.
    pub fn bytes(&self) -> usize {
        self.frame_count as usize * self.frame_size as usize
    }
}

/// A frame held by the worker: where its packet starts in the UMEM, how
/// long it is and which port it arrived on.
///
/// Move-only: owning the descriptor is owning the frame.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a dropped FrameDesc leaks its UMEM frame; transmit it or give it back with drop_frame"]
pub struct FrameDesc {
    addr: u64,
    len: u32,
    port: PortId,
    umem: u16,
}

impl FrameDesc {
    /// Offset of the first packet byte from the start of the UMEM.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Packet length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// The packet has no bytes (a fresh frame from the pool).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The port the frame was received on ([`PortId::LOCAL`] for frames
    /// taken from the pool).
    pub fn ingress(&self) -> PortId {
        self.port
    }

    /// A placeholder for unused batch slots; never handed out.
    pub(crate) const EMPTY: FrameDesc = FrameDesc {
        addr: u64::MAX,
        len: 0,
        port: PortId::LOCAL,
        umem: u16::MAX,
    };

    /// Gives up the descriptor without returning the frame anywhere: for
    /// descriptors that were just written into a kernel ring.
    pub(crate) fn into_raw(self) -> (u64, u32) {
        (self.addr, self.len)
    }
}

/// Why a frame could not be resized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not enough room in front of the packet.
    #[error("frame headroom is {have} bytes, {need} needed")]
    NoHeadroom {
        /// Bytes requested.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Not enough room behind the packet.
    #[error("frame has room for {max} bytes of packet, {need} needed")]
    NoTailroom {
        /// Length requested.
        need: usize,
        /// Largest length possible at the current start.
        max: usize,
    },
    /// Cannot remove more bytes than the packet holds.
    #[error("cannot strip {need} bytes from a {len}-byte packet")]
    TooShort {
        /// Bytes to remove.
        need: usize,
        /// Packet length.
        len: usize,
    },
}

/// Free frames owned by one worker: a stack of chunk addresses, allocated
/// once at full capacity, so push and pop never allocate.
#[derive(Debug)]
pub struct FramePool {
    free: Vec<u64>,
}

impl FramePool {
    fn full(frame_count: u32, frame_size: u32) -> Self {
        let mut free = Vec::with_capacity(frame_count as usize);
        // Highest address last so the first frames handed out are at the
        // start of the region (denser in the TLB).
        free.extend(
            (0..u64::from(frame_count))
                .rev()
                .map(|i| i * u64::from(frame_size)),
        );
        FramePool { free }
    }

    /// Frames currently free.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// No free frame left.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<u64> {
        self.free.pop()
    }

    #[inline]
    pub(crate) fn push(&mut self, chunk: u64) {
        // The stack was allocated for every frame, so this never grows; a
        // frame returned twice (a kernel bug) would show as pool > count.
        self.free.push(chunk);
    }
}

static NEXT_UMEM_ID: AtomicU16 = AtomicU16::new(0);

/// The frame memory of one worker, its geometry and its free pool.
#[derive(Debug)]
pub struct Umem {
    region: UmemRegion,
    config: UmemConfig,
    chunk_mask: u64,
    id: u16,
    pool: FramePool,
}

impl Umem {
    /// Maps a UMEM of `config.frame_count` frames. It is registered with the
    /// kernel by the first socket bound on it.
    pub fn new(config: UmemConfig) -> Result<Umem, Error> {
        config.validate()?;
        let bytes = config.bytes();
        let region = UmemRegion::new(bytes).map_err(|source| Error::UmemMap { bytes, source })?;
        Ok(Umem {
            region,
            chunk_mask: !(u64::from(config.frame_size) - 1),
            id: NEXT_UMEM_ID.fetch_add(1, Ordering::Relaxed),
            pool: FramePool::full(config.frame_count, config.frame_size),
            config,
        })
    }

    /// The geometry.
    pub fn config(&self) -> &UmemConfig {
        &self.config
    }

    /// The free frames.
    pub fn pool(&self) -> &FramePool {
        &self.pool
    }

    pub(crate) fn pool_mut(&mut self) -> &mut FramePool {
        &mut self.pool
    }

    /// The `xdp_umem_reg` describing this region.
    pub(crate) fn registration(&self) -> libc::xdp_umem_reg {
        self.region.registration(
            self.config.frame_size,
            self.config.headroom - XDP_PACKET_HEADROOM,
        )
    }

    #[inline]
    pub(crate) fn chunk_of(&self, addr: u64) -> u64 {
        addr & self.chunk_mask
    }

    /// Validates a descriptor the kernel put on an RX ring and takes
    /// ownership of its frame. `None` if it does not lie inside one frame
    /// of this UMEM (never expected from a correct kernel).
    #[inline]
    pub(crate) fn desc_from_kernel(&self, addr: u64, len: u32, port: PortId) -> Option<FrameDesc> {
        let offset = addr & !self.chunk_mask;
        let fits = addr < self.region.len() as u64
            && offset + u64::from(len) <= u64::from(self.config.frame_size);
        fits.then_some(FrameDesc {
            addr,
            len,
            port,
            umem: self.id,
        })
    }

    /// Takes a free frame for a packet the worker builds itself (an ARP
    /// reply, an ICMP error): empty, with the configured headroom in front.
    pub fn alloc_frame(&mut self) -> Option<FrameDesc> {
        let chunk = self.pool.pop()?;
        Some(FrameDesc {
            addr: chunk + u64::from(self.config.headroom),
            len: 0,
            port: PortId::LOCAL,
            umem: self.id,
        })
    }

    /// Returns a frame to the free pool.
    #[inline]
    pub fn free_frame(&mut self, desc: FrameDesc) {
        self.check(&desc);
        let chunk = self.chunk_of(desc.addr);
        self.pool.push(chunk);
    }

    #[inline]
    pub(crate) fn check(&self, desc: &FrameDesc) {
        assert!(
            desc.umem == self.id,
            "FrameDesc of UMEM {} used with UMEM {}: descriptors belong to the worker that received them",
            desc.umem,
            self.id
        );
    }

    /// The packet bytes.
    ///
    /// # Panics
    /// If `desc` belongs to another worker's UMEM (a programming error).
    #[inline]
    pub fn frame(&self, desc: &FrameDesc) -> &[u8] {
        self.check(desc);
        // desc was validated to lie inside one frame of this region when it
        // was created and every resize keeps it there (the region checks
        // again); owning the descriptor means neither the kernel nor another
        // descriptor refers to this frame.
        self.region.frame(desc.addr, desc.len)
    }

    /// The packet bytes, writable.
    ///
    /// # Panics
    /// If `desc` belongs to another worker's UMEM (a programming error).
    #[inline]
    pub fn frame_mut(&mut self, desc: &FrameDesc) -> &mut [u8] {
        self.check(desc);
        self.region.frame_mut(desc.addr, desc.len)
    }

    /// Bytes free in front of the packet.
    #[inline]
    pub fn headroom(&self, desc: &FrameDesc) -> usize {
        (desc.addr & !self.chunk_mask) as usize
    }

    /// Bytes free behind the packet.
    #[inline]
    pub fn tailroom(&self, desc: &FrameDesc) -> usize {
        self.config.frame_size as usize - self.headroom(desc) - desc.len as usize
    }

    /// Moves the packet start `n` bytes earlier (into the headroom), e.g.
    /// to prepend an outer IP/UDP/ESP header. The new bytes are whatever
    /// the frame held before: the caller writes them.
    #[inline]
    pub fn grow_front(&self, desc: &mut FrameDesc, n: usize) -> Result<(), FrameError> {
        let have = self.headroom(desc);
        if n > have {
            return Err(FrameError::NoHeadroom { need: n, have });
        }
        desc.addr -= n as u64;
        desc.len += n as u32;
        Ok(())
    }

    /// Moves the packet start `n` bytes later, e.g. to strip an outer
    /// header after decapsulation.
    #[inline]
    pub fn shrink_front(&self, desc: &mut FrameDesc, n: usize) -> Result<(), FrameError> {
        if n > desc.len as usize {
            return Err(FrameError::TooShort {
                need: n,
                len: desc.len as usize,
            });
        }
        desc.addr += n as u64;
        desc.len -= n as u32;
        Ok(())
    }

    /// Sets the packet length, growing into the tailroom or truncating.
    #[inline]
    pub fn set_len(&self, desc: &mut FrameDesc, len: usize) -> Result<(), FrameError> {
        let max = self.config.frame_size as usize - self.headroom(desc);
        if len > max {
            return Err(FrameError::NoTailroom { need: len, max });
        }
        desc.len = len as u32;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Umem {
        Umem::new(UmemConfig {
            frame_count: 8,
            ..UmemConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn refuses_bad_geometry() {
        for (count, size, headroom) in [
            (8, 1000, 256),
            (8, 3072, 256),
            (0, 2048, 256),
            (8, 2048, 1600),
            (8, 2048, 128),
        ] {
            let err = Umem::new(UmemConfig {
                frame_count: count,
                frame_size: size,
                headroom,
            })
            .unwrap_err();
            assert!(matches!(err, Error::Config(_)), "{err}");
        }
    }

    #[test]
    fn allocated_frames_are_distinct_and_come_back() {
        let mut umem = small();
        let mut held = Vec::new();
        while let Some(d) = umem.alloc_frame() {
            assert_eq!(umem.headroom(&d), DEFAULT_HEADROOM as usize);
            assert_eq!(d.ingress(), PortId::LOCAL);
            held.push(d);
        }
        assert_eq!(held.len(), 8);
        let mut chunks: Vec<u64> = held.iter().map(|d| umem.chunk_of(d.addr())).collect();
        chunks.sort_unstable();
        chunks.dedup();
        assert_eq!(chunks.len(), 8);
        assert!(umem.pool().is_empty());
        for d in held {
            umem.free_frame(d);
        }
        assert_eq!(umem.pool().len(), 8);
    }

    #[test]
    fn frames_do_not_overlap() {
        let mut umem = small();
        let mut a = umem.alloc_frame().unwrap();
        let mut b = umem.alloc_frame().unwrap();
        let max_a = umem.tailroom(&a);
        umem.set_len(&mut a, max_a).unwrap();
        umem.grow_front(&mut a, DEFAULT_HEADROOM as usize).unwrap();
        umem.set_len(&mut b, 64).unwrap();
        umem.frame_mut(&a).fill(0xaa);
        umem.frame_mut(&b).fill(0xbb);
        assert_eq!(umem.frame(&a).len(), DEFAULT_FRAME_SIZE as usize);
        assert!(umem.frame(&a).iter().all(|&x| x == 0xaa));
        assert!(umem.frame(&b).iter().all(|&x| x == 0xbb));
        umem.free_frame(a);
        umem.free_frame(b);
    }

    #[test]
    fn resizing_keeps_the_packet_inside_its_frame() {
        let mut umem = small();
        let mut d = umem.alloc_frame().unwrap();
        umem.set_len(&mut d, 100).unwrap();
        umem.frame_mut(&d)[0] = 0x45;
        // Prepend an outer header of 28 bytes: the old first byte moves.
        umem.grow_front(&mut d, 28).unwrap();
        assert_eq!(d.len(), 128);
        assert_eq!(umem.frame(&d)[28], 0x45);
        assert_eq!(umem.headroom(&d), 256 - 28);
        assert_eq!(
            umem.grow_front(&mut d, 229),
            Err(FrameError::NoHeadroom {
                need: 229,
                have: 228
            })
        );
        umem.shrink_front(&mut d, 28).unwrap();
        assert_eq!(umem.frame(&d)[0], 0x45);
        assert_eq!(
            umem.shrink_front(&mut d, 101),
            Err(FrameError::TooShort {
                need: 101,
                len: 100
            })
        );
        let max = 2048 - 256;
        assert_eq!(umem.tailroom(&d), max - 100);
        umem.set_len(&mut d, max).unwrap();
        assert_eq!(
            umem.set_len(&mut d, max + 1),
            Err(FrameError::NoTailroom { need: max + 1, max })
        );
        umem.free_frame(d);
    }

    #[test]
    fn kernel_descriptors_are_validated() {
        let umem = small();
        let port = PortId(0);
        assert!(umem.desc_from_kernel(2048 + 256, 1500, port).is_some());
        // Crosses into the next frame.
        assert!(umem.desc_from_kernel(2048 + 256, 1793, port).is_none());
        // Beyond the region.
        assert!(umem.desc_from_kernel(8 * 2048, 64, port).is_none());
        assert!(umem.desc_from_kernel(u64::MAX - 10, 64, port).is_none());
    }

    #[test]
    #[should_panic(expected = "belong to the worker")]
    fn foreign_descriptors_are_refused() {
        let mut a = small();
        let b = small();
        let d = a.alloc_frame().unwrap();
        let _ = b.frame(&d);
    }
}
