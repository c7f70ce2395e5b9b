//! Every libc call of the generator and the harness, behind safe wrappers
//! (the rest of the crate denies `unsafe` code): AF_PACKET sockets bound
//! to one interface, `sendmmsg` / `recvmmsg` batches over preallocated
//! buffers, network namespaces, and the process, clock, CPU and signal
//! calls of the harness.
//!
//! Every `unsafe` block here is a system call on a descriptor or buffer
//! this module owns, with pointers into buffers that outlive the call.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::gen::{GenError, Result};

/// Size of each frame slot in a batch: one standard-MTU frame, rounded up.
pub const SLOT: usize = 2048;
/// Slot size for jumbo frames.
pub const JUMBO_SLOT: usize = 9216;

/// The interface index of `iface` in the calling thread's namespace.
pub fn ifindex(iface: &str) -> Result<u32> {
    let name = CString::new(iface)
        .map_err(|_| GenError::io("if_nametoindex", iface, io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        return Err(GenError::io(
            "if_nametoindex",
            iface,
            io::Error::last_os_error(),
        ));
    }
    Ok(idx)
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Which way an AF_PACKET socket is used.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PacketDirection {
    /// Transmit only: protocol 0, so the kernel delivers it nothing.
    Tx,
    /// Receive every EtherType (ETH_P_ALL); outgoing frames are ignored.
    Rx,
}

/// A raw AF_PACKET socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    iface: String,
}

impl PacketSocket {
    /// Opens and binds a socket on `iface` in the calling thread's namespace.
    pub fn open(iface: &str, dir: PacketDirection) -> Result<Self> {
        let index = ifindex(iface)?;
        let proto = match dir {
            PacketDirection::Tx => 0u16,
            PacketDirection::Rx => libc::ETH_P_ALL as u16,
        };
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto.to_be()),
            )
        };
        if fd < 0 {
            return Err(GenError::io(
                "socket(AF_PACKET)",
                iface,
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        match dir {
            PacketDirection::Tx => {
                // Straight to the driver: the qdisc layer costs ~30 % of the
                // packet rate and the generator paces by itself.
                setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
                    .map_err(|e| GenError::io("PACKET_QDISC_BYPASS", iface, e))?;
                let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 8 << 20);
            }
            PacketDirection::Rx => {
                // A sender on the same interface must not count as received.
                setsockopt_int(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
                    .map_err(|e| GenError::io("PACKET_IGNORE_OUTGOING", iface, e))?;
                // Absorb scheduling hiccups of the receive thread (root
                // may exceed rmem_max); fall back to the ordinary limit.
                if setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20).is_err() {
                    let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, 64 << 20);
                }
            }
        }
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto.to_be();
        sll.sll_ifindex = index as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
        let rc = unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(GenError::io(
                "bind(AF_PACKET)",
                iface,
                io::Error::last_os_error(),
            ));
        }
        Ok(Self {
            fd,
            iface: iface.to_owned(),
        })
    }

    /// The interface this socket is bound to.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// `PACKET_STATISTICS`: frames the kernel queued to this socket and
    /// frames it dropped because the receive buffer was full, both since
    /// the last call (the kernel resets them on every read).
    pub fn take_statistics(&self) -> io::Result<(u64, u64)> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` is a writable tpacket_stats and `len` its size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((u64::from(st.tp_packets), u64::from(st.tp_drops)))
    }

    /// Sets `SO_RCVBUF` (root may exceed `rmem_max`): the receive buffer
    /// whose overflow `PACKET_STATISTICS` counts as drops.
    pub fn set_receive_buffer(&self, bytes: i32) -> io::Result<()> {
        setsockopt_int(
            self.fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            bytes,
        )
    }

    /// Waits up to `timeout_ms` for the socket to become readable.
    pub fn poll_readable(&self, timeout_ms: i32) -> io::Result<bool> {
        poll_in(self.fd.as_raw_fd(), timeout_ms)
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Waits up to `timeout_ms` for `fd` to become readable.
pub fn poll_in(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd is passed with count 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    match rc {
        0 => Ok(false),
        n if n > 0 => Ok(true),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Preallocated frame buffers with the `mmsghdr`/`iovec` arrays that
/// describe them to `sendmmsg` / `recvmmsg`.
pub struct MsgBatch {
    buf: Vec<u8>,
    slot: usize,
    lens: Vec<usize>,
    /// Offset into each slot where the message starts (UDP sockets send
    /// only the L4 payload of a frame built whole).
    offsets: Vec<usize>,
    names: Vec<libc::sockaddr_storage>,
    name_lens: Vec<libc::socklen_t>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl std::fmt::Debug for MsgBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgBatch")
            .field("slots", &self.lens.len())
            .field("slot", &self.slot)
            .finish()
    }
}

// SAFETY: the raw pointers inside `iovs` and `hdrs` only ever point into
// `buf`, `names` and `iovs` of the same value, are rewritten right before
// each system call, and are never dereferenced by Rust code; moving the
// batch to another thread moves the buffers they point into with it.
unsafe impl Send for MsgBatch {}

impl MsgBatch {
    /// `slots` buffers of `slot` bytes each.
    pub fn new(slots: usize, slot: usize) -> Self {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C data for
        // which all-zero bytes are valid values.
        let zero_name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zero_iov: libc::iovec = unsafe { std::mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            buf: vec![0; slots * slot],
            slot,
            lens: vec![0; slots],
            offsets: vec![0; slots],
            names: vec![zero_name; slots],
            name_lens: vec![0; slots],
            iovs: vec![zero_iov; slots],
            hdrs: vec![zero_hdr; slots],
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.lens.len()
    }

    /// Slot size in bytes.
    pub fn slot_size(&self) -> usize {
        self.slot
    }

    /// The whole buffer of slot `i`.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * self.slot..(i + 1) * self.slot]
    }

    /// The message in slot `i` (after a receive: the bytes received).
    pub fn message(&self, i: usize) -> &[u8] {
        let start = i * self.slot + self.offsets[i];
        &self.buf[start..start + self.lens[i]]
    }

    /// Sets the message of slot `i` to `len` bytes from `offset`.
    pub fn set_message(&mut self, i: usize, offset: usize, len: usize) {
        self.offsets[i] = offset;
        self.lens[i] = len.min(self.slot - offset);
    }

    /// Sets the destination address of slot `i` (unconnected datagram sockets).
    pub fn set_name(&mut self, i: usize, addr: std::net::SocketAddr) {
        let storage = &mut self.names[i];
        let len = match addr {
            std::net::SocketAddr::V4(a) => {
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                let sin = unsafe {
                    &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                sin.sin_family = libc::AF_INET as u16;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                std::mem::size_of::<libc::sockaddr_in>()
            }
            std::net::SocketAddr::V6(a) => {
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                let sin6 = unsafe {
                    &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                sin6.sin6_family = libc::AF_INET6 as u16;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                sin6.sin6_flowinfo = 0;
                sin6.sin6_scope_id = a.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        self.name_lens[i] = len as libc::socklen_t;
    }

    /// Points header `i` at slot `i` (whole slot when receiving).
    fn prepare(&mut self, range: std::ops::Range<usize>, receive: bool) {
        let base = self.buf.as_mut_ptr();
        for i in range {
            let (off, len) = if receive {
                (0, self.slot)
            } else {
                (self.offsets[i], self.lens[i])
            };
            // SAFETY: `i < slots` and `off + len <= slot`, so the pointer
            // stays inside `buf`.
            self.iovs[i].iov_base = unsafe { base.add(i * self.slot + off) }.cast();
            self.iovs[i].iov_len = len;
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            if !receive && self.name_lens[i] != 0 {
                h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = self.name_lens[i];
            } else {
                h.msg_name = std::ptr::null_mut();
                h.msg_namelen = 0;
            }
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
    }

    /// `sendmmsg` of slots `range` on `fd`; returns how many the kernel took
    /// (0 when it would block or is out of buffers: the caller retries).
    pub fn send(&mut self, fd: RawFd, range: std::ops::Range<usize>) -> io::Result<usize> {
        if range.is_empty() {
            return Ok(0);
        }
        self.prepare(range.clone(), false);
        let n = range.len() as u32;
        // SAFETY: headers `range` were just pointed at live buffers of this
        // batch; the kernel reads at most `n` of them.
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs.as_mut_ptr().add(range.start),
                n,
                libc::MSG_DONTWAIT,
            )
        };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => Ok(0),
            _ => Err(e),
        }
    }

    /// Non-blocking `recvmmsg` into every slot; returns the number of
    /// messages (their lengths are set).
    pub fn receive(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.slots();
        self.prepare(0..n, true);
        // SAFETY: every header points at its own slot of `buf`; the kernel
        // writes at most `slot` bytes into each and at most `n` headers.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        let got = rc as usize;
        for i in 0..got {
            self.offsets[i] = 0;
            // A frame larger than the slot is truncated (MSG_TRUNC in msg_flags).
            self.lens[i] = (self.hdrs[i].msg_len as usize).min(self.slot);
        }
        Ok(got)
    }
}

/// Runs `f` on a thread that has entered the network namespace `name`
/// (`/var/run/netns/<name>`, as `ip netns` creates them) and returns its
/// result. Sockets `f` opens stay in that namespace wherever they are used.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = format!("/var/run/netns/{name}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).map_err(|e| GenError::io("open", &path, e))?;
            // SAFETY: `file` is an open namespace descriptor for the call;
            // setns only affects the calling (scoped) thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(GenError::io("setns", &path, io::Error::last_os_error()));
            }
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The MAC address of `iface` in the calling thread's namespace.
pub fn iface_mac(iface: &str) -> Result<[u8; 6]> {
    let path = format!("/sys/class/net/{iface}/address");
    let text = std::fs::read_to_string(&path).map_err(|e| GenError::io("read", &path, e))?;
    parse_mac(text.trim()).ok_or_else(|| {
        GenError::io(
            "parse MAC",
            &path,
            io::Error::new(io::ErrorKind::InvalidData, text.trim().to_owned()),
        )
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

// ------------------------------------------------------- process and time

/// Nanoseconds of `CLOCK_MONOTONIC` (see `gen/clock.rs` for why the raw
/// clock).
#[inline]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail (served from the vDSO).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sets this thread's timer slack; failure leaves the default slack.
pub fn set_timer_slack_ns(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and only affects
    // the calling thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) };
}

/// Asks our child to stop (SIGTERM), waits up to `grace` for it, then
/// kills it; whether it exited on its own.
pub fn terminate(child: &mut std::process::Child, grace: std::time::Duration) -> bool {
    // SAFETY: kill has no memory-safety preconditions; the pid is our own
    // child, not yet reaped (we hold its handle), so it names no other
    // process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// CPU time of this process (user + system), seconds.
pub fn own_cpu_seconds() -> Option<f64> {
    // SAFETY: rusage is plain data; getrusage writes inside it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to an rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// `sysconf(name)`, for the names that have no preconditions.
fn sysconf(name: libc::c_int) -> i64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(name) }
}

/// Clock ticks per second of `/proc` times.
pub fn ticks_per_second() -> f64 {
    match sysconf(libc::_SC_CLK_TCK) {
        t if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// CPUs online now.
pub fn cpus_online() -> usize {
    sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize
}

/// Pins the calling thread (and the threads it starts afterwards) to `cpu`,
/// or to every configured CPU with `None`.
pub fn set_affinity(cpu: Option<usize>) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // Not available_parallelism: that reads the current (maybe pinned)
    // affinity, and unpinning must restore every configured CPU.
    let n = sysconf(libc::_SC_NPROCESSORS_CONF).clamp(1, 1024) as usize;
    for c in 0..n {
        if cpu.is_none_or(|want| want == c) {
            // SAFETY: c is below 1024, inside the set.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
    }
    // SAFETY: set is a valid cpu_set_t of the size given; pid 0 is the
    // calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPU the calling thread runs on.
pub fn current_cpu() -> i32 {
    // SAFETY: sched_getcpu has no preconditions.
    unsafe { libc::sched_getcpu() }
}

/// Raises this process's soft limit of open files to at least `want`
/// (bounded by the hard limit); the limit in force afterwards.
pub fn raise_open_files(want: u64) -> io::Result<u64> {
    // SAFETY: rlimit is plain data; getrlimit writes inside it.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: RLIMIT_NOFILE with a valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    lim.rlim_cur = want.min(lim.rlim_max);
    // SAFETY: RLIMIT_NOFILE with a valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("02:00:0a:ff:00:01"), Some([2, 0, 10, 255, 0, 1]));
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:02"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:zz"), None);
        assert_eq!(parse_mac("002:00:0a:ff:00:01"), None);
    }

    #[test]
    fn udp_batch_round_trip_over_loopback() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = rx.local_addr().unwrap();
        let mut out = MsgBatch::new(4, SLOT);
        for i in 0..4 {
            out.slot_mut(i)[..3].copy_from_slice(&[i as u8; 3]);
            out.set_message(i, 0, 3);
            out.set_name(i, dst);
        }
        assert_eq!(out.send(tx.as_raw_fd(), 0..4).unwrap(), 4);
        let mut inb = MsgBatch::new(8, SLOT);
        let mut got = 0;
        for _ in 0..100 {
            if poll_in(rx.as_raw_fd(), 10).unwrap() {
                let n = inb.receive(rx.as_raw_fd()).unwrap();
                for i in 0..n {
                    assert_eq!(inb.message(i), &[got as u8; 3]);
                    got += 1;
                }
            }
            if got == 4 {
                break;
            }
        }
        assert_eq!(got, 4);
    }
}
