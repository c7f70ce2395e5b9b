//! Test helpers: namespace pairs and an AF_PACKET socket to inject and
//! capture frames on the far end of a veth.

#![allow(dead_code)]

use std::io;
use std::time::{Duration, Instant};

use strait_testbed::{Netns, PacketSocket, Testbed};

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
    sock: PacketSocket,
}

impl RawSocket {
    /// Opens it on `ifname` in the namespace `ns`.
    pub fn open_in(ns: &Netns, ifname: &str) -> RawSocket {
        ns.enter(|| RawSocket::open(ifname))
            .expect("enter namespace")
            .unwrap_or_else(|e| panic!("AF_PACKET socket on {ifname} in {ns}: {e}"))
    }

    fn open(ifname: &str) -> io::Result<RawSocket> {
        let sock = PacketSocket::open(ifname)?;
        sock.set_read_timeout(Duration::from_millis(50))?;
        Ok(RawSocket { sock })
    }

    /// Sends one frame out of the interface.
    pub fn send(&self, frame: &[u8]) {
        match self.sock.send(frame) {
            Ok(n) => assert_eq!(n, frame.len(), "AF_PACKET send: short write"),
            Err(e) => panic!("AF_PACKET send: {e}"),
        }
    }

    /// Collects incoming frames of type `ethertype` until `count` distinct
    /// sequence numbers arrived or `timeout` passed.
    pub fn capture(&self, ethertype: u16, count: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while got.len() < count && start.elapsed() < timeout {
            let Ok(r) = self.sock.recv(&mut buf) else {
                continue;
            };
            if r.len == 0 || r.outgoing {
                continue;
            }
            let frame = &buf[..r.len];
            if test_seq(frame, ethertype).is_some() {
                got.push(frame.to_vec());
            }
        }
        got
    }
}
