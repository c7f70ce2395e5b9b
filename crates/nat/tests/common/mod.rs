//! Packet builders and full-recompute checksum checks for the tests.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use strait_nat::*;
use strait_wire::checksum::{add, checksum, pseudo_header_v4, sum};
use strait_wire::IpProtocol;

pub const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const POOL_A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

pub fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

pub fn ep(addr: Ipv4Addr, port: u16) -> Endpoint {
    Endpoint::new(addr, port)
}

pub fn wan() -> Egress {
    Egress::new(EgressId(1), WAN)
}

pub fn masquerade(id: u16, ports: PortRange) -> SnatRule {
    SnatRule {
        id: RuleId(id),
        source: Ipv4Cidr::new(ip(10, 0, 0, 0), 8).unwrap(),
        destination: None,
        egress: None,
        target: SnatTarget::Masquerade { ports },
    }
}

pub fn worker_with(
    config: NatConfig,
    snat: Vec<SnatRule>,
    dnat: Vec<DnatRule>,
    one_to_one: Vec<StaticNatRule>,
) -> NatWorker {
    NatWorker::new(
        config,
        Arc::new(NatRules::new(snat, dnat, one_to_one).unwrap()),
    )
    .unwrap()
}

pub fn masquerade_worker(config: NatConfig) -> NatWorker {
    worker_with(
        config,
        vec![masquerade(1, PortRange::new(1024, 65535))],
        vec![],
        vec![],
    )
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0x12,
        0x34,
        0x40,
        0,
        64,
        protocol,
        0,
        0,
    ];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(l4);
    p
}

fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8]) -> u16 {
    let ph = pseudo_header_v4(src, dst, IpProtocol(protocol), l4.len() as u16);
    !add(ph, sum(l4))
}

pub fn udp(src: Endpoint, dst: Endpoint, payload: &[u8], with_checksum: bool) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut l4 = Vec::with_capacity(len);
    l4.extend_from_slice(&src.port.to_be_bytes());
    l4.extend_from_slice(&dst.port.to_be_bytes());
    l4.extend_from_slice(&(len as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    if with_checksum {
        let mut c = l4_checksum(src.addr, dst.addr, 17, &l4);
        if c == 0 {
            c = 0xffff;
        }
        l4[6..8].copy_from_slice(&c.to_be_bytes());
    }
    ipv4(src.addr, dst.addr, 17, &l4)
}

pub const SYN: u8 = 0x02;
pub const SYN_ACK: u8 = 0x12;
pub const ACK: u8 = 0x10;
pub const FIN_ACK: u8 = 0x11;
pub const RST: u8 = 0x04;

pub fn tcp(src: Endpoint, dst: Endpoint, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 20];
    l4[0..2].copy_from_slice(&src.port.to_be_bytes());
    l4[2..4].copy_from_slice(&dst.port.to_be_bytes());
    l4[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
    l4.extend_from_slice(payload);
    let c = l4_checksum(src.addr, dst.addr, 6, &l4);
    l4[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4(src.addr, dst.addr, 6, &l4)
}

pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, request: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut l4 = vec![if request { 8 } else { 0 }, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(b"ping payload");
    let c = checksum(&l4);
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 1, &l4)
}

/// An ICMP error from `from` to `to` quoting the first `quote_len` bytes
/// (at least the IP header + 8) of `offending`.
pub fn icmp_error(
    from: Ipv4Addr,
    to: Ipv4Addr,
    kind: u8,
    code: u8,
    offending: &[u8],
    quote_len: usize,
) -> Vec<u8> {
    let mut l4 = vec![kind, code, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(&offending[..quote_len.min(offending.len())]);
    let c = checksum(&l4);
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(from, to, 1, &l4)
}

pub fn src_of(p: &[u8]) -> Endpoint {
    let addr = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let hl = usize::from(p[0] & 0x0f) * 4;
    let port = if p[9] == 1 {
        u16::from_be_bytes([p[hl + 4], p[hl + 5]])
    } else {
        u16::from_be_bytes([p[hl], p[hl + 1]])
    };
    Endpoint::new(addr, port)
}

pub fn dst_of(p: &[u8]) -> Endpoint {
    let addr = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let hl = usize::from(p[0] & 0x0f) * 4;
    let port = if p[9] == 1 {
        u16::from_be_bytes([p[hl + 4], p[hl + 5]])
    } else {
        u16::from_be_bytes([p[hl + 2], p[hl + 3]])
    };
    Endpoint::new(addr, port)
}

/// Verifies every checksum of an (unfragmented) IPv4 packet by full
/// recompute: IP header, TCP/UDP with pseudo-header (a zero UDP checksum
/// counts as absent), ICMP, and for ICMP errors the quoted IP header too.
pub fn assert_checksums(p: &[u8]) {
    let hl = usize::from(p[0] & 0x0f) * 4;
    assert_eq!(sum(&p[..hl]), 0xffff, "ipv4 header checksum");
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let l4 = &p[hl..usize::from(u16::from_be_bytes([p[2], p[3]]))];
    match p[9] {
        17 if l4[6..8] == [0, 0] => {}
        6 | 17 => {
            let ph = pseudo_header_v4(src, dst, IpProtocol(p[9]), l4.len() as u16);
            assert_eq!(add(ph, sum(l4)), 0xffff, "transport checksum");
        }
        1 => {
            assert_eq!(sum(l4), 0xffff, "icmp checksum");
            if matches!(l4[0], 3 | 11 | 12) {
                let quoted = &l4[8..];
                let qhl = usize::from(quoted[0] & 0x0f) * 4;
                assert_eq!(sum(&quoted[..qhl]), 0xffff, "quoted ipv4 header checksum");
            }
        }
        _ => {}
    }
}

/// Checks a quoted transport checksum when the whole offending packet was
/// quoted (so it can be recomputed in full).
pub fn assert_quoted_transport_checksum(p: &[u8]) {
    let hl = usize::from(p[0] & 0x0f) * 4;
    let quoted = &p[hl + 8..];
    assert_checksums(quoted);
}

/// A TCP segment with the given sequence and acknowledgment numbers and
/// window.
pub fn tcp_seq(
    src: Endpoint,
    dst: Endpoint,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = vec![0u8; 20];
    l4[0..2].copy_from_slice(&src.port.to_be_bytes());
    l4[2..4].copy_from_slice(&dst.port.to_be_bytes());
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[8..12].copy_from_slice(&ack.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&64_000u16.to_be_bytes());
    l4.extend_from_slice(payload);
    let c = l4_checksum(src.addr, dst.addr, 6, &l4);
    l4[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4(src.addr, dst.addr, 6, &l4)
}
