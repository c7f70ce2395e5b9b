//! Every system call, raw pointer and memory mapping of the crate, behind
//! small safe wrappers. This is the only module allowed `unsafe`: the crate
//! root denies it everywhere else, so the compiler keeps it here.
//!
//! What the wrappers guarantee on their own:
//!
//! - every pointer they dereference lies inside a mapping they own and is
//!   aligned for its type (ring offsets are checked once when the ring is
//!   mapped; ring slots are reached through an index masked by the ring
//!   size, so no position can leave the ring);
//! - every buffer handed to the kernel is a live Rust object of the size
//!   declared, and only types valid for any bit pattern ([`Plain`]) are
//!   filled in by the kernel;
//! - every file descriptor the kernel creates becomes an [`OwnedFd`]
//!   exactly once.
//!
//! The one contract they cannot check is the ownership protocol of UMEM
//! frames, which spans calls: a frame whose address is on a fill or TX ring
//! belongs to the kernel until it comes back on the RX or completion ring.
//! [`UmemRegion::frame`] and [`UmemRegion::frame_mut`] stay safe because the
//! rest of the crate only asks for frames named by a `FrameDesc`, which is
//! move-only and given up (`into_raw`) exactly when its address goes onto a
//! ring (see `umem.rs`).

use std::ffi::CStr;
use std::io;
use std::mem::{align_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use crate::bpf::Insn;

/// Plain data: integers and `repr(C)` structs of integers, valid for any
/// bit pattern and without padding, so the kernel may fill them in and
/// read all of their bytes.
///
/// # Safety
/// Implement only for types with those properties. (Only this module can:
/// the rest of the crate denies `unsafe`.)
pub(crate) unsafe trait Plain: Copy + 'static {}

// SAFETY: integers are valid for every bit pattern and have no padding.
unsafe impl Plain for u32 {}
// SAFETY: as for u32.
unsafe impl Plain for i32 {}
// SAFETY: as for u32.
unsafe impl Plain for u64 {}
// SAFETY: two u64s and two u32s, laid out without padding (UAPI struct).
unsafe impl Plain for libc::xdp_umem_reg {}
// SAFETY: u64, u32, u32: no padding (UAPI struct).
unsafe impl Plain for libc::xdp_desc {}
// SAFETY: six u64s.
unsafe impl Plain for libc::xdp_statistics {}
// SAFETY: four xdp_ring_offset, each four u64s.
unsafe impl Plain for libc::xdp_mmap_offsets {}

fn zeroed<T: Plain>() -> T {
    // SAFETY: all-zero is a valid T (Plain: valid for any bit pattern).
    unsafe { std::mem::zeroed() }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Takes ownership of a descriptor a successful system call just created.
fn owned(raw: RawFd) -> OwnedFd {
    debug_assert!(raw >= 0);
    // SAFETY: only called with the non-negative return of a call that
    // creates a descriptor (socket, bpf object): it is open and nobody
    // else owns it.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

// ---------------------------------------------------------------------------
// Mappings

/// An owned memory mapping, unmapped on drop.
#[derive(Debug)]
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mmap exclusively owns its mapping and only hands out access
// through &self / &mut self, so moving it to another thread is like moving
// a Box<[u8]>. It is not Sync (the ring index caching assumes one user).
unsafe impl Send for Mmap {}

impl Mmap {
    /// A fresh private anonymous mapping of `len` bytes, prefaulted.
    fn anonymous(len: usize) -> io::Result<Mmap> {
        Self::new(
            len,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    }

    /// A shared mapping of `len` bytes of `fd` at page offset `pgoff`.
    fn shared(fd: BorrowedFd<'_>, len: usize, pgoff: libc::off_t) -> io::Result<Mmap> {
        Self::new(
            len,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            pgoff,
        )
    }

    fn new(len: usize, flags: libc::c_int, fd: RawFd, pgoff: libc::off_t) -> io::Result<Mmap> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: a new mapping at an address the kernel chooses: no
        // existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                pgoff,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Mmap { ptr, len })
    }

    /// A pointer `offset` bytes into the mapping, if `size` bytes from
    /// there fit and the address is aligned to `align`.
    fn at(&self, offset: usize, size: usize, align: usize) -> Option<NonNull<u8>> {
        let end = offset.checked_add(size)?;
        if end > self.len || (self.ptr.as_ptr() as usize + offset) % align != 0 {
            return None;
        }
        // SAFETY: offset + size <= len, so the result stays inside the
        // mapping (and is non-null).
        Some(unsafe { self.ptr.add(offset) })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe the mapping made in `new`, and every
        // reference into it borrows self, so none outlives this point.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The frame memory of a UMEM: an anonymous mapping registered with the
/// kernel by the first socket bound on it.
#[derive(Debug)]
pub(crate) struct UmemRegion {
    map: Mmap,
}

impl UmemRegion {
    /// Maps `len` bytes of zeroed, prefaulted memory.
    pub(crate) fn new(len: usize) -> io::Result<UmemRegion> {
        Ok(UmemRegion {
            map: Mmap::anonymous(len)?,
        })
    }

    /// Bytes mapped.
    pub(crate) fn len(&self) -> usize {
        self.map.len
    }

    /// The `xdp_umem_reg` registering this region (its address is only a
    /// number to the caller).
    pub(crate) fn registration(&self, chunk_size: u32, headroom: u32) -> libc::xdp_umem_reg {
        libc::xdp_umem_reg {
            addr: self.map.ptr.as_ptr() as u64,
            len: self.map.len as u64,
            chunk_size,
            headroom,
            flags: 0,
            tx_metadata_len: 0,
        }
    }

    /// Start and end of `len` bytes at `addr`; panics if they leave the
    /// region (never for a validated `FrameDesc`).
    #[inline]
    fn span(&self, addr: u64, len: u32) -> (usize, usize) {
        let start = usize::try_from(addr).ok();
        match start.and_then(|start| Some((start, start.checked_add(len as usize)?))) {
            Some((start, end)) if end <= self.map.len => (start, end),
            _ => outside_umem(addr, len, self.map.len),
        }
    }

    /// The `len` bytes at offset `addr`.
    ///
    /// # Panics
    /// If they do not lie inside the region.
    #[inline]
    pub(crate) fn frame(&self, addr: u64, len: u32) -> &[u8] {
        let (start, end) = self.span(addr, len);
        // SAFETY: [start, end) lies inside the mapping (span checked it) and
        // the borrow of self rules out a &mut from frame_mut. The kernel
        // does not write these bytes: the crate only asks for frames named
        // by a FrameDesc, never for one on a ring (module docs).
        unsafe { std::slice::from_raw_parts(self.map.ptr.as_ptr().add(start), end - start) }
    }

    /// The `len` bytes at offset `addr`, writable.
    ///
    /// # Panics
    /// If they do not lie inside the region.
    #[inline]
    pub(crate) fn frame_mut(&mut self, addr: u64, len: u32) -> &mut [u8] {
        let (start, end) = self.span(addr, len);
        // SAFETY: as in `frame`; &mut self makes this the only live
        // reference into the region.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr.as_ptr().add(start), end - start) }
    }
}

/// Kept out of line so the check in the frame accessors stays a compare
/// and a branch.
#[cold]
#[inline(never)]
fn outside_umem(addr: u64, len: u32, region: usize) -> ! {
    panic!("frame at {addr} (+{len}) outside the {region}-byte UMEM")
}

/// One mapped AF_XDP ring of `T` entries: producer, consumer and flags
/// words and the entry array, at offsets checked when it was mapped.
#[derive(Debug)]
pub(crate) struct RingMap<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    mask: u32,
    /// Owns the memory the pointers above point into (held for its drop).
    _map: Mmap,
}

// SAFETY: the pointers point into `map`, which the RingMap owns; moving it
// moves the ring role (one producer or one consumer side) with it.
unsafe impl<T: Plain> Send for RingMap<T> {}

/// `struct xdp_ring_offset` as the crate uses it: byte offsets of the
/// producer, consumer and flags words and of the entries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RingLayout {
    pub(crate) producer: u64,
    pub(crate) consumer: u64,
    pub(crate) flags: u64,
    pub(crate) entries: u64,
}

impl From<&libc::xdp_ring_offset> for RingLayout {
    fn from(off: &libc::xdp_ring_offset) -> Self {
        RingLayout {
            producer: off.producer,
            consumer: off.consumer,
            flags: off.flags,
            entries: off.desc,
        }
    }
}

impl<T: Plain> RingMap<T> {
    /// Maps the ring at page offset `pgoff` of socket `fd`, `size` entries
    /// (a power of two) laid out as `layout` (from `XDP_MMAP_OFFSETS`).
    pub(crate) fn map(
        fd: BorrowedFd<'_>,
        pgoff: libc::off_t,
        layout: RingLayout,
        size: u32,
    ) -> io::Result<RingMap<T>> {
        let len = Self::len(layout, size)?;
        Self::over(Mmap::shared(fd, len, pgoff)?, layout, size)
    }

    fn len(layout: RingLayout, size: u32) -> io::Result<usize> {
        usize::try_from(layout.entries)
            .ok()
            .and_then(|at| at.checked_add(size as usize * size_of::<T>()))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "ring offsets overflow"))
    }

    fn over(map: Mmap, layout: RingLayout, size: u32) -> io::Result<RingMap<T>> {
        let bad = |what| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ring {what} offset outside the mapping or misaligned"),
            )
        };
        if !size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ring size is not a power of two",
            ));
        }
        let word = |off: u64, what| {
            usize::try_from(off)
                .ok()
                .and_then(|off| map.at(off, 4, align_of::<AtomicU32>()))
                .map(NonNull::cast::<AtomicU32>)
                .ok_or_else(|| bad(what))
        };
        let producer = word(layout.producer, "producer")?;
        let consumer = word(layout.consumer, "consumer")?;
        let flags = word(layout.flags, "flags")?;
        let entries = usize::try_from(layout.entries)
            .ok()
            .and_then(|off| map.at(off, size as usize * size_of::<T>(), align_of::<T>()))
            .ok_or_else(|| bad("entries"))?
            .cast::<T>();
        Ok(RingMap {
            producer,
            consumer,
            flags,
            entries,
            mask: size - 1,
            _map: map,
        })
    }

    /// Two views of one ring in ordinary shared memory (a memfd mapped
    /// twice), standing in for the kernel side in tests.
    #[cfg(test)]
    pub(crate) fn pair_in_memory(size: u32) -> io::Result<(RingMap<T>, RingMap<T>)> {
        let layout = RingLayout {
            producer: 0,
            consumer: 4,
            flags: 8,
            entries: 64,
        };
        let len = Self::len(layout, size)?;
        // SAFETY: a plain memfd_create call with a NUL-terminated name.
        let raw = cvt(unsafe { libc::memfd_create(c"strait-ring".as_ptr(), libc::MFD_CLOEXEC) })?;
        let file = std::fs::File::from(owned(raw));
        file.set_len(len as u64)?;
        let fd = std::os::fd::AsFd::as_fd(&file);
        Ok((
            Self::over(Mmap::shared(fd, len, 0)?, layout, size)?,
            Self::over(Mmap::shared(fd, len, 0)?, layout, size)?,
        ))
    }

    /// Number of entries.
    #[inline]
    pub(crate) fn size(&self) -> u32 {
        self.mask + 1
    }

    /// The producer index, shared with the kernel.
    #[inline]
    pub(crate) fn producer(&self) -> &AtomicU32 {
        // SAFETY: checked in bounds and aligned at construction; lives as
        // long as the mapping, which self owns; only accessed atomically.
        unsafe { self.producer.as_ref() }
    }

    /// The consumer index, shared with the kernel.
    #[inline]
    pub(crate) fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    /// The flags word (`XDP_RING_NEED_WAKEUP`), shared with the kernel.
    #[inline]
    pub(crate) fn flags(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }
    }

    /// Reads the entry at free-running position `pos` (masked to the ring).
    #[inline]
    pub(crate) fn read(&self, pos: u32) -> T {
        let idx = (pos & self.mask) as usize;
        // SAFETY: idx <= mask < size, and the entry array of `size` T was
        // checked in bounds and aligned at construction. Volatile: the
        // kernel writes the slot; the caller orders the read after the
        // producer index with Acquire.
        unsafe { self.entries.as_ptr().add(idx).read_volatile() }
    }

    /// Writes the entry at free-running position `pos` (masked to the
    /// ring). Not visible to the kernel before the producer index moves.
    #[inline]
    pub(crate) fn write(&mut self, pos: u32, entry: T) {
        let idx = (pos & self.mask) as usize;
        // SAFETY: as in `read`; T is Plain, so a slot is valid whatever the
        // kernel left in it.
        unsafe { self.entries.as_ptr().add(idx).write_volatile(entry) }
    }
}

// ---------------------------------------------------------------------------
// Sockets

/// A new `AF_XDP` socket (close-on-exec).
pub(crate) fn xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call, no pointers.
    let raw = cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    Ok(owned(raw))
}

/// `setsockopt(fd, level, name, value)`.
pub(crate) fn setsockopt<T: Plain>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: value is a live T of the size passed; the kernel only reads.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `getsockopt(fd, level, name)`: the value and the number of bytes the
/// kernel wrote (fewer than `size_of::<T>()` from an older kernel; the rest
/// stays zero).
pub(crate) fn getsockopt<T: Plain>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<(T, usize)> {
    let mut value: T = zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: value/len are live and sized as declared; the kernel writes
    // at most `len` bytes, and any bytes make a valid T (Plain).
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    })?;
    Ok((value, len as usize))
}

/// `bind(fd, addr)` for an AF_XDP socket.
pub(crate) fn bind_xdp(fd: BorrowedFd<'_>, addr: &libc::sockaddr_xdp) -> io::Result<()> {
    // SAFETY: addr is a live, fully initialised sockaddr_xdp of the size
    // passed; the kernel only reads it.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (addr as *const libc::sockaddr_xdp).cast(),
            size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The AF_XDP TX wakeup: a zero-length non-blocking `sendto`.
#[inline]
pub(crate) fn wake_tx(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a zero-length sendto with null buffers reads no memory.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The AF_XDP RX wakeup: a zero-length non-blocking `recvfrom`. Errors
/// only mean "try later" and are not reported.
#[inline]
pub(crate) fn wake_rx(fd: BorrowedFd<'_>) {
    // SAFETY: a zero-length recvfrom with null buffers and no address
    // writes no memory.
    unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
}

/// The index of interface `name` in the calling thread's network
/// namespace, `None` if there is none.
pub(crate) fn if_nametoindex(name: &CStr) -> Option<u32> {
    // SAFETY: name is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// `setrlimit(RLIMIT_MEMLOCK, infinity)`.
pub(crate) fn raise_memlock() -> io::Result<()> {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: unlimited is a live rlimit; the kernel only reads it.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) }).map(drop)
}

// ---------------------------------------------------------------------------
// bpf(2)
//
// The generic call stays private: several commands carry user addresses
// inside their attribute struct, and a wrong one would let the kernel write
// anywhere. Each command below builds its attributes from references.

// Commands (include/uapi/linux/bpf.h, enum bpf_cmd).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;

/// A `bpf_attr` prefix for one command: `repr(C)`, every byte a field (no
/// padding the kernel would see as non-zero garbage).
///
/// # Safety
/// Implement only for such structs whose embedded addresses, if any, point
/// to live memory the command may read or write for the call.
unsafe trait BpfAttr {}

/// `bpf(cmd, attr, sizeof attr)`: the non-negative result.
fn bpf<T: BpfAttr>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a live, fully initialised attribute prefix of the
    // size passed; any address inside it is valid for the call (BpfAttr).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn bpf_fd<T: BpfAttr>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    let rc = bpf(cmd, attr)?;
    let raw = RawFd::try_from(rc).map_err(|_| io::Error::other("bpf returned no descriptor"))?;
    Ok(owned(raw))
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}
// SAFETY: integers only, 44 bytes without padding; no addresses.
unsafe impl BpfAttr for MapCreateAttr {}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}
// SAFETY: explicit padding field; key/value are set from references that
// outlive the call (or 0, which the delete command does not read).
unsafe impl BpfAttr for MapElemAttr {}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}
// SAFETY: 72 bytes without padding; insns/license/log_buf are set from a
// slice, a CStr and a mutable slice that outlive the call, with their
// lengths.
unsafe impl BpfAttr for ProgLoadAttr {}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}
// SAFETY: integers only; no addresses.
unsafe impl BpfAttr for LinkCreateAttr {}

// The kernel reads insn_cnt * 8 bytes of instructions.
const _: () = assert!(size_of::<Insn>() == 8 && align_of::<Insn>() <= 8);

/// `BPF_MAP_CREATE` of a map with `u32` keys and values.
pub(crate) fn map_create_u32(
    map_type: u32,
    max_entries: u32,
    name: [u8; 16],
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size: 4,
        value_size: 4,
        max_entries,
        map_name: name,
        ..Default::default()
    };
    bpf_fd(BPF_MAP_CREATE, &mut attr)
}

/// `BPF_MAP_UPDATE_ELEM` (`BPF_ANY`) on a map with `u32` keys and values.
pub(crate) fn map_update_u32(map: BorrowedFd<'_>, key: u32, value: u32) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_DELETE_ELEM` on a map with `u32` keys.
pub(crate) fn map_delete_u32(map: BorrowedFd<'_>, key: u32) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
}

/// What `BPF_PROG_LOAD` loads, besides the instructions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProgLoad<'a> {
    pub(crate) prog_type: u32,
    pub(crate) expected_attach_type: u32,
    pub(crate) license: &'a CStr,
    pub(crate) name: [u8; 16],
}

/// `BPF_PROG_LOAD`; with `log`, the verifier writes its log there (level 1,
/// NUL-terminated, truncated to the buffer).
pub(crate) fn prog_load(
    prog: &ProgLoad<'_>,
    insns: &[Insn],
    log: Option<&mut [u8]>,
) -> io::Result<OwnedFd> {
    let insn_cnt = u32::try_from(insns.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "program too long"))?;
    let mut attr = ProgLoadAttr {
        prog_type: prog.prog_type,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: prog.license.as_ptr() as u64,
        prog_name: prog.name,
        expected_attach_type: prog.expected_attach_type,
        ..Default::default()
    };
    if let Some(log) = log {
        attr.log_level = 1;
        // A log larger than 4 GiB is clamped; the kernel writes at most
        // log_size bytes.
        attr.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    bpf_fd(BPF_PROG_LOAD, &mut attr)
}

/// `BPF_LINK_CREATE` attaching `prog` to interface `ifindex`.
pub(crate) fn link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
    };
    bpf_fd(BPF_LINK_CREATE, &mut attr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn umem_frames_are_bounds_checked() {
        let mut region = UmemRegion::new(4096).unwrap();
        region.frame_mut(4000, 96).fill(7);
        assert!(region.frame(4000, 96).iter().all(|&b| b == 7));
        assert_eq!(region.frame(4096, 0).len(), 0);
        for (addr, len) in [(4001, 96), (u64::MAX, 1), (1 << 40, 0)] {
            let r = std::panic::catch_unwind(|| region.frame(addr, len).len());
            assert!(r.is_err(), "({addr}, {len}) must be refused");
        }
    }

    #[test]
    fn ring_positions_wrap_and_views_share_memory() {
        let (mut a, b) = RingMap::<u64>::pair_in_memory(8).unwrap();
        assert_eq!(a.size(), 8);
        a.write(3, 33);
        a.write(8 + 4, 44);
        assert_eq!(b.read(3), 33);
        assert_eq!(b.read(4), 44);
        // Positions are free-running: 0xffff_fffc masks to slot 4.
        assert_eq!(b.read(u32::MAX - 3), 44);
        a.producer().store(5, Ordering::Release);
        assert_eq!(b.producer().load(Ordering::Acquire), 5);
    }

    #[test]
    fn bad_ring_layouts_are_refused() {
        let map = Mmap::anonymous(4096).unwrap();
        let layout = RingLayout {
            producer: 4094,
            consumer: 0,
            flags: 8,
            entries: 64,
        };
        assert!(RingMap::<u64>::over(map, layout, 8).is_err());
        let map = Mmap::anonymous(4096).unwrap();
        let layout = RingLayout {
            producer: 0,
            consumer: 4,
            flags: 8,
            entries: 68,
        };
        assert!(RingMap::<u64>::over(map, layout, 8).is_err(), "misaligned");
        let map = Mmap::anonymous(4096).unwrap();
        let layout = RingLayout {
            producer: 0,
            consumer: 4,
            flags: 8,
            entries: 64,
        };
        assert!(RingMap::<u64>::over(map, layout, 1024).is_err(), "too long");
    }
}
