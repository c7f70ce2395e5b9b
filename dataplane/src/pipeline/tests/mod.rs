//! Unit tests of the pipeline: frames in, verdicts and rewritten frames out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use strait_wire::{
    ArpOperation, ArpPacket, ArpRepr, EtherType, EthernetAddress, Icmpv4Packet, Icmpv4Type,
    Icmpv6Packet, Icmpv6Repr, Icmpv6Type, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, UdpRepr,
};

use super::reply::emit_ipv6_icmp;
use super::*;
use crate::config::Config;
use crate::tables::KernelLink;

mod esp;
mod esp_state;
mod forward;
mod nat;
mod neighbour;

const LAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const WAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
const HEADROOM: usize = 256;

fn tables() -> Tables {
    let c = Config::parse(
        r#"
[[interface]]
name = "lan"
addresses = ["10.0.1.1/24", "fd00:1::1/64"]
[[interface]]
name = "wan"
addresses = ["192.0.2.1/24", "fd00:2::1/64"]
mtu = 1400
[[route]]
prefix = "198.51.100.0/24"
via = ["192.0.2.254"]
[[route]]
prefix = "203.0.113.0/24"
kind = "blackhole"
[[route]]
prefix = "fd00:9::/48"
via = ["fd00:2::fe"]
"#,
        "t.toml",
    )
    .unwrap();
    Tables::build(&c, "t.toml", 1, 3, None, |name| {
        Ok(KernelLink {
            ifindex: 2,
            mac: if name == "lan" { LAN_MAC } else { WAN_MAC },
            mtu: 1500,
        })
    })
    .unwrap()
}

struct Frame {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Frame {
    fn new(bytes: &[u8]) -> Frame {
        let mut buf = vec![0u8; 2048];
        buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
        Frame {
            buf,
            start: HEADROOM,
            len: bytes.len(),
        }
    }

    fn run(&mut self, p: &mut Pipeline<u32>, t: &Tables, ingress: u16) -> Verdict {
        let mut pkt = PacketBuf::new(&mut self.buf, self.start, self.len);
        let v = p.process(t, &mut pkt, ingress, Instant::now());
        self.start = pkt.start();
        self.len = pkt.len();
        v
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }
}

fn pipeline() -> Pipeline<u32> {
    Pipeline::new(2, 1000, 1000, Instant::now())
}

fn udp_frame(
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    payload: usize,
    df: bool,
) -> Vec<u8> {
    let mut f = vec![0u8; ETH_LEN + 20 + 8 + payload];
    write_eth(&mut f, dst_mac, HOST_MAC, EtherType::IPV4);
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::UDP,
        payload_len: 8 + payload,
        ttl,
        dscp: 0,
        ecn: 0,
        ident: 1,
        dont_frag: df,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(&mut f[ETH_LEN..])
    .unwrap();
    UdpRepr {
        src_port: 4000,
        dst_port: 5000,
    }
    .emit(&mut f[ETH_LEN + 20..], payload)
    .unwrap();
    let mut udp = strait_wire::UdpPacket::new_unchecked(&mut f[ETH_LEN + 20..]);
    udp.fill_checksum_v4(src, dst);
    f
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn assert_icmp_error(
    f: &Frame,
    ty: Icmpv4Type,
    code: u8,
    from: Ipv4Addr,
    quoted_dst: Ipv4Addr,
) -> u16 {
    let data = f.data();
    assert_eq!(&data[0..6], &HOST_MAC, "back to the sender");
    let ipp = Ipv4Packet::new_checked(&data[ETH_LEN..]).unwrap();
    assert!(ipp.verify_checksum());
    assert_eq!(ipp.src_addr(), from);
    let icmp = Icmpv4Packet::new_checked(ipp.payload()).unwrap();
    assert_eq!(ipp.dst_addr(), icmp.invoking_packet().unwrap().src_addr());
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.msg_type(), icmp.code()), (ty, code));
    assert_eq!(icmp.invoking_packet().unwrap().dst_addr(), quoted_dst);
    icmp.next_hop_mtu()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn v6_frame(
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    icmp: &Icmpv6Repr<'_>,
) -> Vec<u8> {
    let mut f = vec![0u8; 1600];
    write_eth(&mut f, dst_mac, HOST_MAC, EtherType::IPV6);
    let n = emit_ipv6_icmp(&mut f[ETH_LEN..], src, dst, hop_limit, icmp).unwrap();
    f.truncate(ETH_LEN + n);
    f
}

const BRANCH: &str = r#"
[[interface]]
name = "lan"
addresses = ["10.1.0.1/24"]
[[interface]]
name = "wan"
addresses = ["192.0.2.1/24"]
[[route]]
prefix = "0.0.0.0/0"
via = ["192.0.2.254"]
[[tunnel]]
name = "hub"
local = "192.0.2.1"
remote = "198.51.100.1"
prefixes = ["10.2.0.0/16"]
outbound = { spi = 4097, cipher = "aes128-gcm", key = "000102030405060708090a0b0c0d0e0f10111213" }
inbound = { spi = 8194, cipher = "aes128-gcm", key = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff10111213" }
"#;

const HUB: &str = r#"
[[interface]]
name = "lan"
addresses = ["10.2.0.1/24"]
[[interface]]
name = "wan"
addresses = ["198.51.100.1/24"]
[[route]]
prefix = "0.0.0.0/0"
via = ["198.51.100.254"]
[[tunnel]]
name = "branch"
local = "198.51.100.1"
remote = "192.0.2.1"
float = true
prefixes = ["10.1.0.0/16"]
outbound = { spi = 8194, cipher = "aes128-gcm", key = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff10111213" }
inbound = { spi = 4097, cipher = "aes128-gcm", key = "000102030405060708090a0b0c0d0e0f10111213" }
"#;

fn site(text: &str) -> Tables {
    let mut c = Config::parse(text, "site.toml").unwrap();
    c.engine.state_dir = Some(crate::sastore::test_dir("site"));
    c.engine.manual_keying = true;
    Tables::build(&c, "site.toml", 1, 3, None, |name| {
        Ok(KernelLink {
            ifindex: 2,
            mac: if name == "lan" { LAN_MAC } else { WAN_MAC },
            mtu: 1500,
        })
    })
    .unwrap()
}

#[test]
fn arbitrary_bytes_never_panic() {
    let t = tables();
    let mut p = pipeline();
    // xorshift: deterministic, no extra dependency.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds = [
        udp_frame(LAN_MAC, ip("10.0.1.2"), ip("198.51.100.7"), 64, 10, false),
        udp_frame(LAN_MAC, ip("10.0.1.2"), ip("8.8.8.8"), 1, 10, false),
    ];
    for i in 0..20_000 {
        let mut bytes = seeds[i % 2].clone();
        let len = (next() % 80) as usize;
        bytes.truncate(len.max(1));
        for _ in 0..(next() % 4) {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        let mut f = Frame::new(&bytes);
        let _ = f.run(&mut p, &t, (i % 3) as u16);
    }
}
