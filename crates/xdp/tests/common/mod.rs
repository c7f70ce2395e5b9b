//! Test helpers: namespace pairs and an AF_PACKET socket to inject and
//! capture frames on the far end of a veth.

#![allow(dead_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use strait_testbed::{Netns, Testbed};

/// EtherType of test frames (IEEE 802 local experimental).
pub const TEST_ETHERTYPE: u16 = 0x88b5;
const MAGIC: &[u8; 6] = b"STRAIT";

/// A test frame: broadcast, `ethertype`, magic, sequence number, and a
/// payload pattern derived from the sequence number, `len` bytes in all.
pub fn test_frame(ethertype: u16, seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(24)];
    f[..6].fill(0xff);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f[14..20].copy_from_slice(MAGIC);
    f[20..24].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[24..].iter_mut().enumerate() {
        *b = (seq as usize * 7 + i) as u8;
    }
    f
}

/// The sequence number of a test frame of type `ethertype`, if it is one.
pub fn test_seq(frame: &[u8], ethertype: u16) -> Option<u32> {
    if frame.len() < 24 || frame[12..14] != ethertype.to_be_bytes() || &frame[14..20] != MAGIC {
        return None;
    }
    Some(u32::from_be_bytes(frame[20..24].try_into().ok()?))
}

/// Frame sizes cycling from minimum to full MTU.
pub fn size_for(seq: u32) -> usize {
    [60, 64, 128, 512, 1024, 1514][seq as usize % 6]
}

/// Two namespaces joined by a veth, `eth0` on both ends.
pub fn pair(tag: &str) -> (Testbed, Netns, Netns) {
    strait_testbed::require_root();
    let mut tb = Testbed::new(tag);
    let a = tb.netns("a").expect("create namespace a");
    let b = tb.netns("b").expect("create namespace b");
    tb.veth((&a, "eth0"), (&b, "eth0")).expect("create veth");
    (tb, a, b)
}

/// An AF_PACKET raw socket bound to one interface.
#[derive(Debug)]
pub struct RawSocket {
    fd: OwnedFd,
}

impl RawSocket {
    /// Opens it on `ifname` in the namespace `ns`.
    pub fn open_in(ns: &Netns, ifname: &str) -> RawSocket {
        ns.enter(|| RawSocket::open(ifname))
            .expect("enter namespace")
            .unwrap_or_else(|e| panic!("AF_PACKET socket on {ifname} in {ns}: {e}"))
    }

    fn open(ifname: &str) -> io::Result<RawSocket> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a live sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        // SAFETY: tv is a live timeval of the given size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        Ok(RawSocket { fd })
    }

    /// Sends one frame out of the interface.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: frame is a live buffer of the given length.
        let rc = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            rc,
            frame.len() as isize,
            "AF_PACKET send: {}",
            io::Error::last_os_error()
        );
    }

    /// Collects incoming frames of type `ethertype` until `count` distinct
    /// sequence numbers arrived or `timeout` passed.
    pub fn capture(&self, ethertype: u16, count: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while got.len() < count && start.elapsed() < timeout {
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: buf and from are live and sized as declared.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut from_len,
                )
            };
            if n <= 0 {
                continue;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let frame = &buf[..n as usize];
            if test_seq(frame, ethertype).is_some() {
                got.push(frame.to_vec());
            }
        }
        got
    }
}
