//! Properties: RFC 1624 incremental updates equal a full recompute on random
//! packets, and no parser panics on arbitrary or mutated bytes.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use strait_wire::{checksum, fuzz_parse_all, Ipv4Packet, TcpFlags, TcpPacket, UdpPacket};

/// A random IPv4 header (IHL 5..=15 with random option bytes) with a valid
/// checksum, followed by a random payload.
fn ipv4_packet() -> impl Strategy<Value = Vec<u8>> {
    (
        5u8..=15,
        any::<[u8; 60]>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(ihl, header, payload)| {
            let hlen = usize::from(ihl) * 4;
            let mut buf = header[..hlen].to_vec();
            buf.extend_from_slice(&payload);
            buf[0] = 0x40 | ihl;
            let total = buf.len() as u16;
            let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
            p.set_total_len(total);
            p.fill_checksum();
            buf
        })
}

fn full_ipv4_checksum(buf: &mut [u8]) -> u16 {
    let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
    let incremental = p.checksum();
    p.fill_checksum();
    let full = p.checksum();
    p.set_checksum(incremental);
    full
}

fn v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

fn udp_datagram() -> impl Strategy<Value = Vec<u8>> {
    (any::<[u8; 8]>(), prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(h, payload)| {
        let mut buf = h.to_vec();
        buf.extend_from_slice(&payload);
        let len = buf.len() as u16;
        UdpPacket::new_unchecked(&mut buf[..]).set_len(len);
        buf
    })
}

/// A TCP segment with random fields, options made of NOPs around one MSS
/// option (so the MSS value lands at odd and even offsets), and payload.
fn tcp_segment() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<[u8; 20]>(),
        0usize..=3,
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(h, nops, mss, payload)| {
            let mut options = vec![1u8; nops];
            options.extend_from_slice(&[2, 4]);
            options.extend_from_slice(&mss.to_be_bytes());
            while options.len() % 4 != 0 {
                options.push(0);
            }
            let mut buf = h.to_vec();
            buf.extend_from_slice(&options);
            let hlen = buf.len();
            buf.extend_from_slice(&payload);
            let flags = TcpFlags(u16::from_be_bytes([h[12], h[13]]) & 0x0fff);
            TcpPacket::new_unchecked(&mut buf[..]).set_header_len_and_flags(hlen, flags);
            buf
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn ipv4_ttl_and_address_rewrites_match_full_recompute(
        mut buf in ipv4_packet(), src in v4(), dst in v4(), ttl in 2u8..=255,
    ) {
        {
            let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
            p.set_ttl(ttl);
            p.fill_checksum();
            prop_assert_eq!(p.decrement_ttl(), Ok(ttl - 1));
        }
        prop_assert_eq!(Ipv4Packet::new_checked(&buf[..]).unwrap().checksum(), full_ipv4_checksum(&mut buf));
        Ipv4Packet::new_checked(&mut buf[..]).unwrap().rewrite_src_addr(src);
        prop_assert_eq!(Ipv4Packet::new_checked(&buf[..]).unwrap().checksum(), full_ipv4_checksum(&mut buf));
        Ipv4Packet::new_checked(&mut buf[..]).unwrap().rewrite_dst_addr(dst);
        prop_assert_eq!(Ipv4Packet::new_checked(&buf[..]).unwrap().checksum(), full_ipv4_checksum(&mut buf));
        prop_assert!(Ipv4Packet::new_checked(&buf[..]).unwrap().verify_checksum());
    }

    #[test]
    fn udp_v4_nat_rewrite_matches_full_recompute(
        mut buf in udp_datagram(), src in v4(), dst in v4(), new_src in v4(), new_dst in v4(),
        sport in any::<u16>(), dport in any::<u16>(),
    ) {
        let mut udp = UdpPacket::new_checked(&mut buf[..]).unwrap();
        udp.fill_checksum_v4(src, dst);
        udp.rewrite_src_port(sport);
        udp.update_checksum_for_addr_v4(src, new_src);
        udp.rewrite_dst_port(dport);
        udp.update_checksum_for_addr_v4(dst, new_dst);
        let incremental = udp.checksum();
        prop_assert_ne!(incremental, 0);
        prop_assert!(udp.verify_checksum_v4(new_src, new_dst));
        udp.fill_checksum_v4(new_src, new_dst);
        prop_assert_eq!(incremental, udp.checksum());
    }

    #[test]
    fn udp_v4_zero_checksum_survives_rewrite(
        mut buf in udp_datagram(), src in v4(), new_src in v4(), sport in any::<u16>(),
    ) {
        let mut udp = UdpPacket::new_checked(&mut buf[..]).unwrap();
        udp.set_checksum(0);
        udp.rewrite_src_port(sport);
        udp.update_checksum_for_addr_v4(src, new_src);
        prop_assert_eq!(udp.checksum(), 0);
    }

    #[test]
    fn udp_v6_nat_rewrite_matches_full_recompute(
        mut buf in udp_datagram(), src in v6(), dst in v6(), new_src in v6(), sport in any::<u16>(),
    ) {
        let mut udp = UdpPacket::new_checked(&mut buf[..]).unwrap();
        udp.fill_checksum_v6(src, dst);
        udp.rewrite_src_port(sport);
        udp.update_checksum_for_addr_v6(src, new_src);
        let incremental = udp.checksum();
        prop_assert!(udp.verify_checksum_v6(new_src, dst));
        udp.fill_checksum_v6(new_src, dst);
        prop_assert_eq!(incremental, udp.checksum());
    }

    #[test]
    fn tcp_nat_rewrite_and_mss_clamp_match_full_recompute(
        mut buf in tcp_segment(), src in v4(), dst in v4(), new_dst in v4(),
        dport in any::<u16>(), clamp in any::<u16>(),
    ) {
        let mut tcp = TcpPacket::new_checked(&mut buf[..]).unwrap();
        tcp.fill_checksum_v4(src, dst).unwrap();
        tcp.rewrite_dst_port(dport);
        tcp.update_checksum_for_addr_v4(dst, new_dst);
        let before = tcp.mss().unwrap();
        let clamped = tcp.clamp_mss(clamp);
        prop_assert_eq!(clamped.is_some(), before > clamp);
        prop_assert_eq!(tcp.mss(), Some(before.min(clamp)));
        let incremental = tcp.checksum();
        prop_assert!(tcp.verify_checksum_v4(src, new_dst));
        tcp.fill_checksum_v4(src, new_dst).unwrap();
        prop_assert_eq!(incremental, tcp.checksum());
    }

    #[test]
    fn tcp_v6_address_rewrite_matches_full_recompute(
        mut buf in tcp_segment(), src in v6(), dst in v6(), new_src in v6(), sport in any::<u16>(),
    ) {
        let mut tcp = TcpPacket::new_checked(&mut buf[..]).unwrap();
        tcp.fill_checksum_v6(src, dst).unwrap();
        tcp.rewrite_src_port(sport);
        tcp.update_checksum_for_addr_v6(src, new_src);
        let incremental = tcp.checksum();
        tcp.fill_checksum_v6(new_src, dst).unwrap();
        prop_assert_eq!(incremental, tcp.checksum());
    }

    #[test]
    fn partial_sums_combine_to_the_whole(
        data in prop::collection::vec(any::<u8>(), 0..300), cut in 0usize..150,
    ) {
        // Sums of pieces split at an even offset add up to the sum of the whole
        // (what pseudo-header + header + payload checksums rely on).
        let cut = (cut * 2).min(data.len() & !1);
        let (a, b) = data.split_at(cut);
        prop_assert_eq!(checksum::add(checksum::sum(a), checksum::sum(b)), checksum::sum(&data));
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..1600)) {
        let _ = fuzz_parse_all(&data);
    }

    #[test]
    fn parsers_never_panic_on_mutated_frames(
        pick in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let samples = common::frames::valid_samples();
        let mut bytes = samples[pick.index(samples.len())].bytes.clone();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let keep = cut.index(bytes.len() + 1);
        let _ = fuzz_parse_all(&bytes);
        let _ = fuzz_parse_all(&bytes[..keep]);
    }
}
