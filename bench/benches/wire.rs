//! Wire-layer cost per packet on a 1024-byte Ethernet/IPv4/UDP frame:
//! parse + SNAT rewrite (source address and port) + TTL decrement with
//! RFC 1624 incremental checksums, against the same rewrite finished by full
//! RFC 1071 recomputation.
//!
//! Run: `cargo bench -p strait-bench --bench wire -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use strait_wire::{
    checksum, EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet,
    Ipv4Repr, UdpPacket, UdpRepr,
};

const FRAME_LEN: usize = 1024;
const BATCH: usize = 64;
const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 20);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);
const EGRESS: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

fn frame() -> Vec<u8> {
    let mut buf = vec![0u8; FRAME_LEN];
    let eth = EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
        dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
        vlan: None,
        ethertype: EtherType::IPV4,
    };
    let l2 = eth.emit(&mut buf).unwrap();
    let udp_len = FRAME_LEN - l2 - 20;
    Ipv4Repr {
        src_addr: LAN_HOST,
        dst_addr: SERVER,
        protocol: IpProtocol::UDP,
        payload_len: udp_len,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(&mut buf[l2..])
    .unwrap();
    UdpRepr {
        src_port: 40000,
        dst_port: 443,
    }
    .emit(&mut buf[l2 + 20..], udp_len - 8)
    .unwrap();
    for (i, b) in buf[l2 + 28..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    UdpPacket::new_checked(&mut buf[l2 + 20..])
        .unwrap()
        .fill_checksum_v4(LAN_HOST, SERVER);
    buf
}

/// Parse, validate and SNAT with incremental checksum updates.
fn nat_incremental(frame: &mut [u8]) -> Option<u16> {
    let l3_at = EthernetFrame::new_checked(&*frame)
        .ok()?
        .encapsulation()
        .ok()?
        .header_len;
    let mut ip = Ipv4Packet::new_checked(&mut frame[l3_at..]).ok()?;
    if !ip.verify_checksum() || ip.protocol() != IpProtocol::UDP || ip.is_fragment() {
        return None;
    }
    ip.decrement_ttl().ok()?;
    let old_src = ip.rewrite_src_addr(EGRESS);
    let mut udp = UdpPacket::new_checked(ip.payload_mut()).ok()?;
    udp.rewrite_src_port(61000);
    udp.update_checksum_for_addr_v4(old_src, EGRESS);
    Some(udp.checksum())
}

/// The same work finished by recomputing both checksums from scratch.
fn nat_full_recompute(frame: &mut [u8]) -> Option<u16> {
    let l3_at = EthernetFrame::new_checked(&*frame)
        .ok()?
        .encapsulation()
        .ok()?
        .header_len;
    let mut ip = Ipv4Packet::new_checked(&mut frame[l3_at..]).ok()?;
    if !ip.verify_checksum() || ip.protocol() != IpProtocol::UDP || ip.is_fragment() {
        return None;
    }
    let ttl = ip.ttl();
    ip.set_ttl(ttl.checked_sub(1)?);
    ip.set_src_addr(EGRESS);
    ip.fill_checksum();
    let dst = ip.dst_addr();
    let mut udp = UdpPacket::new_checked(ip.payload_mut()).ok()?;
    udp.set_src_port(61000);
    udp.fill_checksum_v4(EGRESS, dst);
    Some(udp.checksum())
}

fn bench_wire(c: &mut Criterion) {
    let template = frame();
    {
        // Both paths must produce the same bytes.
        let (mut a, mut b) = (template.clone(), template.clone());
        assert_eq!(nat_incremental(&mut a), nat_full_recompute(&mut b));
        assert_eq!(a, b);
    }
    // Frames are processed as an RX batch of 64, the dataplane's unit of
    // work; fresh copies are made outside the timed section.
    let batch: Vec<Vec<u8>> = vec![template.clone(); BATCH];
    let mut group = c.benchmark_group("wire_1024B_eth_ipv4_udp");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("parse+snat+ttl (incremental RFC 1624)", |b| {
        b.iter_batched_ref(
            || batch.clone(),
            |frames| {
                for f in frames.iter_mut() {
                    black_box(nat_incremental(black_box(f)));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("parse+snat+ttl (full RFC 1071 recompute)", |b| {
        b.iter_batched_ref(
            || batch.clone(),
            |frames| {
                for f in frames.iter_mut() {
                    black_box(nat_full_recompute(black_box(f)));
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("checksum::sum over 1024 bytes", |b| {
        b.iter(|| black_box(checksum::sum(black_box(&template))))
    });
    group.finish();
}

criterion_group!(benches, bench_wire);
criterion_main!(benches);
