//! Forwarding: routes, TTL, MTU, ICMP errors, bad input, echo, IPv6.

use super::*;

#[test]
fn forwards_via_gateway_with_ttl_decremented() {
    let t = tables();
    let mut p = pipeline();
    let mut f = Frame::new(&udp_frame(
        LAN_MAC,
        ip("10.0.1.2"),
        ip("198.51.100.7"),
        64,
        100,
        false,
    ));
    let v = f.run(&mut p, &t, 0);
    assert_eq!(
        v,
        Verdict::Forward {
            port: 1,
            neighbour: IpAddr::V4(ip("192.0.2.254"))
        }
    );
    // The window now starts at the IP header.
    let pkt = Ipv4Packet::new_checked(f.data()).unwrap();
    assert_eq!(pkt.ttl(), 63);
    assert!(pkt.verify_checksum());
    assert_eq!(f.start, HEADROOM + ETH_LEN);
    assert_eq!(p.counters[0].forwarded, 1);
}

#[test]
fn connected_destination_is_its_own_next_hop_and_padding_is_trimmed() {
    let t = tables();
    let mut p = pipeline();
    let mut bytes = udp_frame(LAN_MAC, ip("10.0.1.2"), ip("192.0.2.9"), 64, 0, false);
    bytes.resize(60, 0); // Ethernet minimum-size padding
    let mut f = Frame::new(&bytes);
    assert_eq!(
        f.run(&mut p, &t, 0),
        Verdict::Forward {
            port: 1,
            neighbour: IpAddr::V4(ip("192.0.2.9"))
        }
    );
    assert_eq!(f.len, 28);
}

#[test]
fn ttl_expiry_sends_time_exceeded_and_counts() {
    let t = tables();
    let mut p = pipeline();
    let mut f = Frame::new(&udp_frame(
        LAN_MAC,
        ip("10.0.1.2"),
        ip("198.51.100.7"),
        1,
        10,
        false,
    ));
    assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
    assert_icmp_error(
        &f,
        Icmpv4Type::TIME_EXCEEDED,
        0,
        ip("10.0.1.1"),
        ip("198.51.100.7"),
    );
    assert_eq!(p.counters[0].drops[DropReason::TtlExceeded as usize], 1);
    assert_eq!(p.counters[0].icmp_sent, 1);
}

#[test]
fn unroutable_and_blackholed_destinations() {
    let t = tables();
    let mut p = pipeline();
    let mut f = Frame::new(&udp_frame(
        LAN_MAC,
        ip("10.0.1.2"),
        ip("8.8.8.8"),
        64,
        10,
        false,
    ));
    assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
    assert_icmp_error(
        &f,
        Icmpv4Type::DST_UNREACHABLE,
        0,
        ip("10.0.1.1"),
        ip("8.8.8.8"),
    );
    assert_eq!(p.counters[0].drops[DropReason::NoRoute as usize], 1);
    let mut f = Frame::new(&udp_frame(
        LAN_MAC,
        ip("10.0.1.2"),
        ip("203.0.113.1"),
        64,
        10,
        false,
    ));
    assert_eq!(f.run(&mut p, &t, 0), Verdict::Drop(DropReason::Blackhole));
}

#[test]
fn oversized_with_df_gets_frag_needed_with_the_egress_mtu() {
    let t = tables();
    let mut p = pipeline();
    let mut f = Frame::new(&udp_frame(
        LAN_MAC,
        ip("10.0.1.2"),
        ip("198.51.100.7"),
        64,
        1450,
        true,
    ));
    assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
    let mtu = assert_icmp_error(
        &f,
        Icmpv4Type::DST_UNREACHABLE,
        4,
        ip("10.0.1.1"),
        ip("198.51.100.7"),
    );
    assert_eq!(mtu, 1400);
    assert_eq!(p.counters[0].drops[DropReason::Oversized as usize], 1);
    let mut f = Frame::new(&udp_frame(
        LAN_MAC,
        ip("10.0.1.2"),
        ip("198.51.100.7"),
        64,
        1450,
        false,
    ));
    // DF clear: the worker splits it for the egress MTU (RFC 1812 §4.2.2.7).
    assert_eq!(
        f.run(&mut p, &t, 0),
        Verdict::Fragment(FragmentPlan {
            mtu: 1400,
            target: FragmentTarget::Port {
                port: 1,
                neighbour: IpAddr::V4(ip("192.0.2.254"))
            }
        })
    );
    let inner = f.data().to_vec();
    let mut out = [0u8; 2048];
    let n0 = fragment_ipv4(&inner, 1400, 0, &mut out).unwrap();
    assert_eq!(n0, 20 + 1376);
    let first = Ipv4Packet::new_checked(&out[..n0]).unwrap();
    assert!(first.verify_checksum() && first.more_frags() && first.ttl() == 63);
    let n1 = fragment_ipv4(&inner, 1400, 1, &mut out).unwrap();
    let last = Ipv4Packet::new_checked(&out[..n1]).unwrap();
    assert_eq!((last.frag_offset(), last.more_frags()), (1376, false));
    assert_eq!(n0 - 20 + n1 - 20, inner.len() - 20);
    assert!(fragment_ipv4(&inner, 1400, 2, &mut out).is_none());
}

#[test]
fn icmp_errors_are_rate_limited() {
    let t = tables();
    let mut p: Pipeline<u32> = Pipeline::new(2, 0, 2, Instant::now());
    let mut replies = 0;
    for _ in 0..5 {
        let mut f = Frame::new(&udp_frame(
            LAN_MAC,
            ip("10.0.1.2"),
            ip("8.8.8.8"),
            64,
            10,
            false,
        ));
        if f.run(&mut p, &t, 0) == Verdict::Reply {
            replies += 1;
        }
    }
    assert_eq!(replies, 2);
    assert_eq!(p.counters[0].drops[DropReason::IcmpRateLimited as usize], 3);
    assert_eq!(p.counters[0].drops[DropReason::NoRoute as usize], 5);
}

#[test]
fn bad_input_is_dropped_with_named_reasons() {
    let t = tables();
    let mut p = pipeline();
    let good = udp_frame(LAN_MAC, ip("10.0.1.2"), ip("198.51.100.7"), 64, 10, false);
    let mut cases: Vec<(Vec<u8>, DropReason)> = Vec::new();
    cases.push((good[..10].to_vec(), DropReason::Truncated));
    cases.push((good[..ETH_LEN + 12].to_vec(), DropReason::Truncated));
    let mut bad_ck = good.clone();
    bad_ck[ETH_LEN + 10] ^= 0xff;
    cases.push((bad_ck, DropReason::BadChecksum));
    let mut ihl = good.clone();
    ihl[ETH_LEN] = 0x44;
    cases.push((ihl, DropReason::BadHeaderLength));
    let mut ver = good.clone();
    ver[ETH_LEN] = 0x65;
    cases.push((ver, DropReason::BadVersion));
    let mut long = good.clone();
    long[ETH_LEN + 2] = 0x05;
    cases.push((long, DropReason::BadTotalLength));
    let mut arp_type = good.clone();
    arp_type[12..14].copy_from_slice(&[0x88, 0xcc]);
    cases.push((arp_type, DropReason::NotIp));
    cases.push((
        udp_frame(LAN_MAC, ip("127.0.0.1"), ip("198.51.100.7"), 64, 10, false),
        DropReason::MartianSource,
    ));
    cases.push((
        udp_frame(LAN_MAC, ip("10.0.1.1"), ip("198.51.100.7"), 64, 10, false),
        DropReason::MartianSource,
    ));
    cases.push((
        udp_frame(
            [2, 9, 9, 9, 9, 9],
            ip("10.0.1.2"),
            ip("198.51.100.7"),
            64,
            10,
            false,
        ),
        DropReason::NotForUs,
    ));
    for (i, (bytes, reason)) in cases.into_iter().enumerate() {
        let mut f = Frame::new(&bytes);
        assert_eq!(f.run(&mut p, &t, 0), Verdict::Drop(reason), "case {i}");
        assert!(p.counters[0].drops[reason as usize] >= 1);
    }
}

#[test]
fn answers_echo_requests_to_our_address() {
    let t = tables();
    let mut p = pipeline();
    let mut f = vec![0u8; ETH_LEN + 20 + 8 + 4];
    write_eth(&mut f, LAN_MAC, HOST_MAC, EtherType::IPV4);
    let icmp = strait_wire::Icmpv4Repr::EchoRequest {
        ident: 9,
        seq_no: 3,
        data: b"ping",
    };
    Ipv4Repr {
        src_addr: ip("10.0.1.2"),
        dst_addr: ip("10.0.1.1"),
        protocol: IpProtocol::ICMP,
        payload_len: icmp.buffer_len(),
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 1,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(&mut f[ETH_LEN..])
    .unwrap();
    icmp.emit(&mut f[ETH_LEN + 20..]).unwrap();
    let mut fr = Frame::new(&f);
    assert_eq!(fr.run(&mut p, &t, 0), Verdict::Reply);
    let ipp = Ipv4Packet::new_checked(&fr.data()[ETH_LEN..]).unwrap();
    assert!(ipp.verify_checksum());
    assert_eq!(
        (ipp.src_addr(), ipp.dst_addr()),
        (ip("10.0.1.1"), ip("10.0.1.2"))
    );
    let reply = Icmpv4Packet::new_checked(ipp.payload()).unwrap();
    assert!(reply.verify_checksum());
    assert_eq!(reply.msg_type(), Icmpv4Type::ECHO_REPLY);
    assert_eq!(&fr.data()[0..6], &HOST_MAC);
    assert_eq!(&fr.data()[6..12], &LAN_MAC);
    // Anything else to our address goes to the host stack.
    let mut tcp = udp_frame(LAN_MAC, ip("10.0.1.2"), ip("10.0.1.1"), 64, 10, false);
    tcp[ETH_LEN + 9] = 6;
    Ipv4Packet::new_unchecked(&mut tcp[ETH_LEN..]).fill_checksum();
    assert_eq!(Frame::new(&tcp).run(&mut p, &t, 0), Verdict::Punt);
}

#[test]
fn ipv6_forwarding_hop_limit_and_neighbour_discovery() {
    let t = tables();
    let mut p = pipeline();
    let echo = Icmpv6Repr::EchoRequest {
        ident: 1,
        seq_no: 1,
        data: b"x",
    };
    let mut f = Frame::new(&v6_frame(
        LAN_MAC,
        v6("fd00:1::2"),
        v6("fd00:9::5"),
        64,
        &echo,
    ));
    assert_eq!(
        f.run(&mut p, &t, 0),
        Verdict::Forward {
            port: 1,
            neighbour: IpAddr::V6(v6("fd00:2::fe"))
        }
    );
    assert_eq!(Ipv6Packet::new_checked(f.data()).unwrap().hop_limit(), 63);

    let mut f = Frame::new(&v6_frame(
        LAN_MAC,
        v6("fd00:1::2"),
        v6("fd00:9::5"),
        1,
        &echo,
    ));
    assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
    let ipp = Ipv6Packet::new_checked(&f.data()[ETH_LEN..]).unwrap();
    let icmp = Icmpv6Packet::new_checked(ipp.payload()).unwrap();
    assert_eq!(icmp.msg_type(), Icmpv6Type::TIME_EXCEEDED);
    assert!(icmp.verify_checksum(ipp.src_addr(), ipp.dst_addr()));

    let mut f = Frame::new(&v6_frame(
        LAN_MAC,
        v6("fd00:1::2"),
        v6("fd00:1::1"),
        64,
        &echo,
    ));
    assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
    let ipp = Ipv6Packet::new_checked(&f.data()[ETH_LEN..]).unwrap();
    let icmp = Icmpv6Packet::new_checked(ipp.payload()).unwrap();
    assert_eq!(icmp.msg_type(), Icmpv6Type::ECHO_REPLY);
    assert!(icmp.verify_checksum(ipp.src_addr(), ipp.dst_addr()));

    let ns = Icmpv6Repr::NeighborSolicit {
        target: v6("fd00:1::1"),
        source_lladdr: Some(EthernetAddress(HOST_MAC)),
    };
    let mut f = Frame::new(&v6_frame(
        [0x33, 0x33, 0xff, 0, 0, 1],
        v6("fd00:1::2"),
        v6("ff02::1:ff00:1"),
        255,
        &ns,
    ));
    assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
    let ipp = Ipv6Packet::new_checked(&f.data()[ETH_LEN..]).unwrap();
    let icmp = Icmpv6Packet::new_checked(ipp.payload()).unwrap();
    match Icmpv6Repr::parse(&icmp, ipp.src_addr(), ipp.dst_addr()).unwrap() {
        Icmpv6Repr::NeighborAdvert {
            target,
            target_lladdr,
            flags,
        } => {
            assert_eq!(target, v6("fd00:1::1"));
            assert_eq!(target_lladdr, Some(EthernetAddress(LAN_MAC)));
            assert!(flags.solicited);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.counters[0].neighbour_replies, 1);
    // Our own solicitation for a next hop is well formed.
    let mut buf = [0u8; 128];
    let n = neighbour_solicitation(&mut buf, &t.ports[1], v6("fd00:2::fe"), None).unwrap();
    let ipp = Ipv6Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
    assert_eq!(ipp.dst_addr(), v6("ff02::1:ff00:fe"));
    let icmp = Icmpv6Packet::new_checked(ipp.payload()).unwrap();
    assert!(icmp.verify_checksum(ipp.src_addr(), ipp.dst_addr()));
}

#[test]
fn source_check_drops_what_the_lan_could_not_have_sent() {
    let text = |check: bool| {
        format!(
            r#"
[[interface]]
name = "lan"
addresses = ["10.1.0.1/24", "fd01::1/64"]
source_check = {check}
[[interface]]
name = "wan"
addresses = ["192.0.2.1/24", "fd02::1/64"]
[[route]]
prefix = "0.0.0.0/0"
via = ["192.0.2.254"]
[[route]]
prefix = "::/0"
via = ["fd02::fe"]
[[route]]
prefix = "10.7.0.0/16"
via = ["10.1.0.254"]
"#
        )
    };
    let (checked, open) = (site(&text(true)), site(&text(false)));
    let mut p = pipeline();
    let from = |src: &str| udp_frame(LAN_MAC, ip(src), ip("198.51.100.7"), 64, 20, false);
    // Sources on the LAN's subnet or routed via the LAN pass.
    for src in ["10.1.0.2", "10.7.3.4"] {
        assert!(
            matches!(
                Frame::new(&from(src)).run(&mut p, &checked, 0),
                Verdict::Forward { port: 1, .. }
            ),
            "{src}"
        );
    }
    // A source the dataplane routes elsewhere is spoofed: dropped by name.
    for src in ["198.51.100.9", "10.2.0.5"] {
        assert_eq!(
            Frame::new(&from(src)).run(&mut p, &checked, 0),
            Verdict::Drop(DropReason::SourceCheckFailed),
            "{src}"
        );
        // Without the check it is forwarded as before.
        assert!(matches!(
            Frame::new(&from(src)).run(&mut p, &open, 0),
            Verdict::Forward { .. }
        ));
    }
    // The WAN port does not check.
    let wan = udp_frame(WAN_MAC, ip("8.8.8.8"), ip("10.1.0.2"), 64, 20, false);
    assert!(matches!(
        Frame::new(&wan).run(&mut p, &checked, 1),
        Verdict::Forward { port: 0, .. }
    ));
    // IPv6 too; link-local sources are on-link by definition.
    let echo = Icmpv6Repr::EchoRequest {
        ident: 1,
        seq_no: 1,
        data: b"x",
    };
    let v6_from = |src: &str| v6_frame(LAN_MAC, v6(src), v6("2001:db8::9"), 64, &echo);
    assert!(matches!(
        Frame::new(&v6_from("fd01::5")).run(&mut p, &checked, 0),
        Verdict::Forward { port: 1, .. }
    ));
    assert_eq!(
        Frame::new(&v6_from("2001:db8:66::1")).run(&mut p, &checked, 0),
        Verdict::Drop(DropReason::SourceCheckFailed)
    );
    assert_ne!(
        Frame::new(&v6_from("fe80::5")).run(&mut p, &checked, 0),
        Verdict::Drop(DropReason::SourceCheckFailed)
    );
}

#[test]
fn ike_to_our_address_goes_to_the_daemon_only_with_ike_configured() {
    let text = |ike: bool| {
        format!(
            "{}[[interface]]\nname = \"lan\"\naddresses = [\"10.1.0.1/24\"]\n\
             [[interface]]\nname = \"wan\"\naddresses = [\"192.0.2.1/24\"]\n",
            if ike {
                "[ike]\nidentity = \"vcpe-1\"\n"
            } else {
                ""
            }
        )
    };
    let (with, without) = (site(&text(true)), site(&text(false)));
    let mut p = pipeline();
    let udp_to = |dport: u16, payload: &[u8]| {
        let mut f = udp_frame(
            WAN_MAC,
            ip("198.51.100.9"),
            ip("192.0.2.1"),
            64,
            payload.len(),
            false,
        );
        f[ETH_LEN + 22..ETH_LEN + 24].copy_from_slice(&dport.to_be_bytes());
        f[ETH_LEN + 28..].copy_from_slice(payload);
        // The UDP checksum is left stale: IKE is handed over as it came.
        f
    };
    let ike500 = udp_to(500, &[7; 40]);
    let ike4500 = udp_to(4500, &[0, 0, 0, 0, 7, 7, 7, 7]);
    let esp4500 = udp_to(4500, &[0, 0, 1, 0, 0, 0, 0, 1]);
    let other = udp_to(53, &[1; 12]);
    assert_eq!(Frame::new(&ike500).run(&mut p, &with, 1), Verdict::Service);
    assert_eq!(Frame::new(&ike4500).run(&mut p, &with, 1), Verdict::Service);
    assert_ne!(Frame::new(&esp4500).run(&mut p, &with, 1), Verdict::Service);
    assert_eq!(Frame::new(&other).run(&mut p, &with, 1), Verdict::Punt);
    // Without [ike] the host stack gets it, as before.
    assert_eq!(Frame::new(&ike500).run(&mut p, &without, 1), Verdict::Punt);
    assert_eq!(Frame::new(&ike4500).run(&mut p, &without, 1), Verdict::Punt);
}
