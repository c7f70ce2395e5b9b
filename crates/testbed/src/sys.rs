//! Every libc call of the testbed, behind safe wrappers. This is the only
//! module allowed `unsafe`: the crate root (and the `strait-netns` binary)
//! deny it everywhere else.
//!
//! The wrappers pass the kernel only live Rust objects of the sizes they
//! declare, and turn each descriptor the kernel creates into an [`OwnedFd`]
//! exactly once.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn cvt_len(rc: libc::ssize_t) -> io::Result<usize> {
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// The effective user id of the process.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Sends `SIGKILL` to process `pid`.
pub(crate) fn kill_hard(pid: i32) -> io::Result<()> {
    // SAFETY: kill has no memory-safety preconditions.
    cvt(unsafe { libc::kill(pid, libc::SIGKILL) }).map(drop)
}

/// Moves the calling thread into the network namespace `ns` (an open
/// `/var/run/netns/<name>` or `/proc/<pid>/ns/net`).
pub(crate) fn setns_net(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: ns is an open descriptor for the duration of the call;
    // setns touches no memory of ours.
    cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

const TERMINATION_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Ignores `SIGINT`, `SIGTERM` and `SIGHUP` in this process, so a parent
/// that only waits for a child can still clean up after the user
/// interrupted both.
pub fn ignore_termination_signals() {
    for sig in TERMINATION_SIGNALS {
        // SAFETY: installing SIG_IGN has no preconditions.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}

/// Makes `cmd`'s child restore the default `SIGINT`, `SIGTERM` and
/// `SIGHUP` dispositions before it execs (ignored signals are inherited
/// across exec), undoing [`ignore_termination_signals`] for it.
pub fn default_termination_signals_in_child(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls
    // signal(2), which is async-signal-safe; it allocates nothing and takes
    // no locks.
    unsafe {
        cmd.pre_exec(|| {
            for sig in TERMINATION_SIGNALS {
                libc::signal(sig, libc::SIG_DFL);
            }
            Ok(())
        });
    }
}

/// Restricts the calling thread to CPU `cpu`.
pub fn pin_thread_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} beyond CPU_SETSIZE"),
        ));
    }
    // SAFETY: all-zero is an empty cpu_set_t (a plain bit array).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE, so the bit lies inside the set; the set is
    // live and sized as passed; pid 0 is the calling thread.
    cvt(unsafe {
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    })
    .map(drop)
}

/// An `AF_PACKET` raw socket bound to one interface, for injecting and
/// capturing whole Ethernet frames in tests (close-on-exec).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

/// One frame read by [`PacketSocket::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes written into the buffer (the frame is truncated to it).
    pub len: usize,
    /// The frame was sent by this host (`PACKET_OUTGOING`), not received.
    pub outgoing: bool,
}

impl PacketSocket {
    /// A socket seeing every EtherType on interface `ifname` of the calling
    /// thread's network namespace.
    pub fn open(ifname: &str) -> io::Result<PacketSocket> {
        let name = CString::new(ifname).map_err(io::Error::other)?;
        // SAFETY: name is a valid NUL-terminated string for the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        Self::bind(ifindex)
    }

    /// A socket seeing every EtherType on interface `ifindex` of the calling
    /// thread's network namespace.
    pub fn bind(ifindex: u32) -> io::Result<PacketSocket> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call, no pointers.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        })?;
        // SAFETY: raw is a descriptor socket(2) just created; nobody else
        // owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: all-zero is a valid sockaddr_ll (integers and a byte
        // array).
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = i32::try_from(ifindex).map_err(io::Error::other)?;
        // SAFETY: sll is a live sockaddr_ll of the size passed; the kernel
        // only reads it.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(PacketSocket { fd })
    }

    /// Makes [`recv`](Self::recv) give up after `timeout` with
    /// `WouldBlock` (zero: wait forever).
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        // A non-zero timeout below a microsecond must not become "forever".
        let timeout = if timeout.is_zero() {
            timeout
        } else {
            timeout.max(Duration::from_micros(1))
        };
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
        };
        // SAFETY: tv is a live timeval of the size passed; the kernel only
        // reads it.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// Sends one whole Ethernet frame out of the interface; the number of
    /// bytes sent.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: frame is a live buffer of the length passed; the kernel
        // only reads it.
        cvt_len(unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) })
    }

    /// Reads the next frame seen on the interface (in either direction)
    /// into `buf`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from/from_len are live and sized as passed; the
        // kernel writes at most that many bytes into each.
        let len = cvt_len(unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        })?;
        Ok(Received {
            len,
            outgoing: from.sll_pkttype == libc::PACKET_OUTGOING,
        })
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
