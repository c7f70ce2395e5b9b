//! Every libc call of the engine, behind safe wrappers: the TAP device of
//! the host path and the realtime scheduling of workers. The rest of the
//! crate denies `unsafe` code.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Opens `/dev/net/tun` and makes it the TAP device `name` (no packet
/// information header, non-blocking). The device lives as long as the
/// descriptor.
pub(crate) fn open_tap(name: &str) -> io::Result<OwnedFd> {
    let path = CString::new("/dev/net/tun").expect("static path");
    // SAFETY: path is NUL-terminated and outlives the call.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a freshly opened descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name is at most 15 bytes (IFNAMSIZ less the NUL), which the
    // zeroed array terminates.
    for (dst, src) in req.ifr_name.iter_mut().take(15).zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF takes a pointer to an ifreq that lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// One `write(2)` of `buf`; the bytes written.
pub(crate) fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid readable slice for its length.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `read(2)` into `buf`; the bytes read.
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable slice for its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Moves a thread we started to SCHED_FIFO at `priority` (1–99).
pub(crate) fn set_fifo(thread: &std::thread::JoinHandle<()>, priority: u8) -> io::Result<()> {
    use std::os::unix::thread::JoinHandleExt;
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: the pthread_t is of a thread we started and have not joined
    // (the handle is borrowed), and `param` is a valid sched_param.
    let rc =
        unsafe { libc::pthread_setschedparam(thread.as_pthread_t(), libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Takes an exclusive `flock` on `file` without waiting; fails with
/// `WouldBlock` while another open file description holds it.
pub(crate) fn try_lock_exclusive(file: &std::fs::File) -> io::Result<()> {
    // SAFETY: flock on a descriptor we own for the call's duration.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking `eventfd(2)`: how the engine wakes a worker that waits
/// in [`wait_readable`] while idle.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the flags are valid for eventfd.
    let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a freshly created descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Waits in `poll(2)` until one of `fds` is readable or `timeout` passes
/// (rounded up to whole milliseconds). `ready[i]` tells whether `fds[i]`
/// was readable; at most 64 descriptors. An interrupted wait counts as a
/// timeout.
pub(crate) fn wait_readable(
    fds: &[BorrowedFd<'_>],
    timeout: std::time::Duration,
    ready: &mut [bool],
) -> io::Result<()> {
    const MAX: usize = 64;
    let n = fds.len().min(MAX).min(ready.len());
    let mut set = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; MAX];
    for (slot, fd) in set.iter_mut().zip(&fds[..n]) {
        slot.fd = fd.as_raw_fd();
        slot.events = libc::POLLIN;
    }
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `set` is a valid array of at least `n` pollfd entries that
    // lives across the call.
    let rc = unsafe { libc::poll(set.as_mut_ptr(), n as libc::nfds_t, ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            ready.iter_mut().for_each(|r| *r = false);
            return Ok(());
        }
        return Err(err);
    }
    for (r, slot) in ready.iter_mut().zip(&set[..n]) {
        *r = slot.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0;
    }
    Ok(())
}
