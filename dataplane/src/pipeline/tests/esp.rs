//! ESP: sealing, opening, replay, MTU and MSS, rekey, fragments before sealing.

use super::*;

/// Seals a LAN packet at the branch; returns the WAN frame (Ethernet
/// to the hub) and the original inner packet.
pub(super) fn seal_at_branch(
    branch: &Tables,
    p: &mut Pipeline<u32>,
    payload: usize,
) -> (Vec<u8>, Vec<u8>) {
    let lan = udp_frame(LAN_MAC, ip("10.1.0.2"), ip("10.2.0.2"), 64, payload, false);
    let mut f = Frame::new(&lan);
    let v = f.run(p, branch, 0);
    assert_eq!(
        v,
        Verdict::Forward {
            port: 1,
            neighbour: IpAddr::V4(ip("192.0.2.254"))
        }
    );
    let outer = Ipv4Packet::new_checked(f.data()).unwrap();
    assert_eq!(
        (outer.src_addr(), outer.dst_addr()),
        (ip("192.0.2.1"), ip("198.51.100.1"))
    );
    assert!(outer.verify_checksum());
    assert!(outer.dont_frag());
    assert_eq!(outer.protocol(), IpProtocol::UDP);
    let udp = strait_wire::UdpPacket::new_checked(outer.payload()).unwrap();
    assert_eq!((udp.src_port(), udp.dst_port()), (4500, 4500));
    assert_eq!(udp.checksum(), 0, "RFC 3948 §3.1: zero UDP checksum");
    // No plaintext on the wire.
    assert!(
        !f.data()
            .windows(8)
            .any(|w| w == &lan[ETH_LEN + 28..ETH_LEN + 36])
            || payload == 0
    );
    let mut wire = vec![0u8; ETH_LEN];
    write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
    wire.extend_from_slice(f.data());
    (wire, lan[ETH_LEN..].to_vec())
}

#[test]
fn branch_seals_and_hub_opens_the_same_packet() {
    let (branch, hub) = (site(BRANCH), site(HUB));
    let (mut pb, mut ph) = (pipeline(), pipeline());
    for i in 0..3 {
        let (wire, inner) = seal_at_branch(&branch, &mut pb, 100 + i);
        let mut f = Frame::new(&wire);
        assert_eq!(
            f.run(&mut ph, &hub, 1),
            Verdict::Forward {
                port: 0,
                neighbour: IpAddr::V4(ip("10.2.0.2"))
            }
        );
        let got = f.data();
        assert_eq!(got.len(), inner.len());
        // TTL went down once at each end; everything else is intact.
        assert_eq!(got[8], inner[8] - 2);
        assert_eq!(&got[12..], &inner[12..]);
        assert!(Ipv4Packet::new_checked(got).unwrap().verify_checksum());
    }
    assert_eq!(pb.counters[1].esp_sealed, 3);
    assert_eq!(ph.counters[1].esp_opened, 3);
}

#[test]
fn tampered_and_replayed_esp_is_dropped_by_name() {
    let (branch, hub) = (site(BRANCH), site(HUB));
    let (mut pb, mut ph) = (pipeline(), pipeline());
    let (wire, _) = seal_at_branch(&branch, &mut pb, 64);
    // Flip one byte of the ciphertext.
    let mut bad = wire.clone();
    let at = bad.len() - 30;
    bad[at] ^= 1;
    assert_eq!(
        Frame::new(&bad).run(&mut ph, &hub, 1),
        Verdict::Drop(DropReason::EspAuthFailed)
    );
    // The genuine one still opens (the forgery did not move the window)…
    assert!(matches!(
        Frame::new(&wire).run(&mut ph, &hub, 1),
        Verdict::Forward { .. }
    ));
    // …once.
    assert_eq!(
        Frame::new(&wire).run(&mut ph, &hub, 1),
        Verdict::Drop(DropReason::EspReplay)
    );
    // Unknown SPI.
    let mut spi = wire.clone();
    spi[ETH_LEN + 28..ETH_LEN + 32].copy_from_slice(&[0, 0, 0x99, 0x99]);
    assert_eq!(
        Frame::new(&spi).run(&mut ph, &hub, 1),
        Verdict::Drop(DropReason::EspBadSpi)
    );
    assert_eq!(ph.counters[1].drops[DropReason::EspReplay as usize], 1);
}

#[test]
fn tunnel_mtu_and_mss_clamping() {
    let branch = site(BRANCH);
    let mut pb = pipeline();
    let mtu = branch.tunnels[0].mtu;
    assert_eq!(mtu, 1500 - crate::tables::TUNNEL_OVERHEAD_UDP);
    let big = udp_frame(
        LAN_MAC,
        ip("10.1.0.2"),
        ip("10.2.0.2"),
        64,
        usize::from(mtu) - 27,
        true,
    );
    let mut f = Frame::new(&big);
    assert_eq!(f.run(&mut pb, &branch, 0), Verdict::Reply);
    let icmp_mtu = assert_icmp_error(
        &f,
        Icmpv4Type::DST_UNREACHABLE,
        4,
        ip("10.1.0.1"),
        ip("10.2.0.2"),
    );
    assert_eq!(icmp_mtu, mtu);
    // A SYN with MSS 1460 leaves clamped to fit the tunnel.
    let mut syn = vec![0u8; ETH_LEN + 20 + 24];
    write_eth(&mut syn, LAN_MAC, HOST_MAC, EtherType::IPV4);
    Ipv4Repr {
        src_addr: ip("10.1.0.2"),
        dst_addr: ip("10.2.0.2"),
        protocol: IpProtocol::TCP,
        payload_len: 24,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 1,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(&mut syn[ETH_LEN..])
    .unwrap();
    let tcp = &mut syn[ETH_LEN + 20..];
    tcp[0..4].copy_from_slice(&[0x30, 0x39, 0x00, 0x50]);
    tcp[12] = 6 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&[0xff, 0xff]);
    tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    strait_wire::TcpPacket::new_checked(&mut syn[ETH_LEN + 20..])
        .unwrap()
        .fill_checksum_v4(ip("10.1.0.2"), ip("10.2.0.2"))
        .unwrap();
    let mut f = Frame::new(&syn);
    assert!(matches!(
        f.run(&mut pb, &branch, 0),
        Verdict::Forward { .. }
    ));
    // Open it at the hub to look at the clamped SYN.
    let hub = site(HUB);
    let mut ph = pipeline();
    let mut wire = vec![0u8; ETH_LEN];
    write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
    wire.extend_from_slice(f.data());
    let mut g = Frame::new(&wire);
    assert!(matches!(g.run(&mut ph, &hub, 1), Verdict::Forward { .. }));
    let inner = Ipv4Packet::new_checked(g.data()).unwrap();
    let seg = strait_wire::TcpPacket::new_checked(inner.payload()).unwrap();
    assert_eq!(seg.mss(), branch.tunnels[0].mss);
    assert!(seg.verify_checksum_v4(inner.src_addr(), inner.dst_addr()));
}

#[test]
fn echo_to_the_hub_through_the_tunnel_is_answered_through_the_tunnel() {
    let (branch, hub) = (site(BRANCH), site(HUB));
    let (mut pb, mut ph) = (pipeline(), pipeline());
    let mut f = vec![0u8; ETH_LEN + 20 + 8 + 4];
    write_eth(&mut f, LAN_MAC, HOST_MAC, EtherType::IPV4);
    let icmp = strait_wire::Icmpv4Repr::EchoRequest {
        ident: 9,
        seq_no: 3,
        data: b"ping",
    };
    Ipv4Repr {
        src_addr: ip("10.1.0.2"),
        dst_addr: ip("10.2.0.1"),
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
    assert!(matches!(
        fr.run(&mut pb, &branch, 0),
        Verdict::Forward { port: 1, .. }
    ));
    let mut wire = vec![0u8; ETH_LEN];
    write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
    wire.extend_from_slice(fr.data());
    let mut at_hub = Frame::new(&wire);
    // The reply leaves by the WAN, sealed, towards the branch.
    assert_eq!(
        at_hub.run(&mut ph, &hub, 1),
        Verdict::Forward {
            port: 1,
            neighbour: IpAddr::V4(ip("198.51.100.254"))
        }
    );
    let outer = Ipv4Packet::new_checked(at_hub.data()).unwrap();
    assert_eq!(outer.dst_addr(), ip("192.0.2.1"));
    assert_eq!(ph.counters[1].esp_sealed, 1);
}

// ---------------------------------------------------------------- NAT

#[test]
fn lossless_rekey_install_inbound_switch_outbound_retire() {
    use crate::config::{RekeyStep, SaEntryConfig, Secret};
    let new_sa = SaEntryConfig {
        spi: 5001,
        cipher: "aes256-gcm".into(),
        key: Secret("11".repeat(36)),
        esn: true,
        replay_window: None,
        soft_seconds: 0,
        hard_seconds: 0,
        soft_bytes: 0,
        hard_bytes: 0,
        negotiated: false,
    };
    let build = |c: &Config, prev: Option<&Tables>, g: u64| {
        Tables::build(c, "site.toml", g, 3, prev, |name| {
            Ok(KernelLink {
                ifindex: 2,
                mac: if name == "lan" { LAN_MAC } else { WAN_MAC },
                mtu: 1500,
            })
        })
        .unwrap()
    };
    let mut hub_c = Config::parse(HUB, "hub.toml").unwrap();
    let mut branch_c = Config::parse(BRANCH, "branch.toml").unwrap();
    hub_c.engine.state_dir = Some(crate::sastore::test_dir("hub"));
    hub_c.engine.manual_keying = true;
    branch_c.engine.state_dir = Some(crate::sastore::test_dir("branch"));
    branch_c.engine.manual_keying = true;
    let hub1 = build(&hub_c, None, 1);
    let branch1 = build(&branch_c, None, 1);
    let (mut pb, mut ph) = (pipeline(), pipeline());
    let opens =
        |ph: &mut Pipeline<u32>, hub: &Tables, wire: &[u8]| Frame::new(wire).run(ph, hub, 1);

    let (old1, _) = seal_at_branch(&branch1, &mut pb, 10);
    assert!(matches!(
        opens(&mut ph, &hub1, &old1),
        Verdict::Forward { .. }
    ));

    // 1. The hub installs the new inbound SA next to the old one.
    let hub_c2 = hub_c
        .with_rekey("branch", RekeyStep::InstallInbound(new_sa.clone()))
        .unwrap();
    let hub2 = build(&hub_c2, Some(&hub1), 2);
    assert!(Arc::ptr_eq(
        &hub1.tunnels[0].in_specs[0],
        &hub2.tunnels[0].in_specs[0]
    ));
    let (old2, _) = seal_at_branch(&branch1, &mut pb, 11);
    assert!(matches!(
        opens(&mut ph, &hub2, &old2),
        Verdict::Forward { .. }
    ));
    // The replay window survived the swap.
    assert_eq!(
        opens(&mut ph, &hub2, &old1),
        Verdict::Drop(DropReason::EspReplay)
    );

    // 2. The branch switches outbound; its old outbound sequence is gone.
    let branch_c2 = branch_c
        .with_rekey("hub", RekeyStep::SwitchOutbound(new_sa.clone()))
        .unwrap();
    let branch2 = build(&branch_c2, Some(&branch1), 2);
    assert!(!Arc::ptr_eq(
        &branch1.tunnels[0].out_sa,
        &branch2.tunnels[0].out_sa
    ));
    let (new1, _) = seal_at_branch(&branch2, &mut pb, 12);
    assert_eq!(&new1[ETH_LEN + 28..ETH_LEN + 32], &5001u32.to_be_bytes());
    assert!(matches!(
        opens(&mut ph, &hub2, &new1),
        Verdict::Forward { .. }
    ));
    // A late packet under the old SA still opens during the overlap.
    let (late, _) = seal_at_branch(&branch1, &mut pb, 13);
    assert!(matches!(
        opens(&mut ph, &hub2, &late),
        Verdict::Forward { .. }
    ));

    // 3. The hub retires the old inbound SA.
    let hub_c3 = hub_c2
        .with_rekey("branch", RekeyStep::RetireInbound(4097))
        .unwrap();
    assert_eq!(hub_c3.tunnels[0].inbound.spi, 5001);
    let hub3 = build(&hub_c3, Some(&hub2), 3);
    let (new2, _) = seal_at_branch(&branch2, &mut pb, 14);
    assert!(matches!(
        opens(&mut ph, &hub3, &new2),
        Verdict::Forward { .. }
    ));
    let (stale, _) = seal_at_branch(&branch1, &mut pb, 15);
    assert_eq!(
        opens(&mut ph, &hub3, &stale),
        Verdict::Drop(DropReason::EspBadSpi)
    );

    // Refused steps name the reason.
    assert!(hub_c3
        .with_rekey("branch", RekeyStep::RetireInbound(5001))
        .unwrap_err()
        .contains("only inbound SA"));
    assert!(hub_c3
        .with_rekey("nope", RekeyStep::RetireInbound(1))
        .unwrap_err()
        .contains("no tunnel"));
    assert!(hub_c2
        .with_rekey("branch", RekeyStep::InstallInbound(new_sa))
        .unwrap_err()
        .contains("already installed"));
}

#[test]
fn oversized_packets_without_df_are_fragmented_before_sealing() {
    let (branch, hub) = (site(BRANCH), site(HUB));
    let (mut pb, mut ph) = (pipeline(), pipeline());
    let mtu = usize::from(branch.tunnels[0].mtu);
    let payload = mtu + 300;
    let lan = udp_frame(LAN_MAC, ip("10.1.0.2"), ip("10.2.0.2"), 64, payload, false);
    let mut f = Frame::new(&lan);
    assert_eq!(
        f.run(&mut pb, &branch, 0),
        Verdict::Fragment(FragmentPlan {
            mtu: branch.tunnels[0].mtu,
            target: FragmentTarget::Tunnel { tunnel: 0 }
        })
    );
    let inner = f.data().to_vec();
    let (per, count) = fragment_plan(20, inner.len(), mtu).unwrap();
    assert_eq!(count, 2);
    let mut reassembled = vec![0u8; inner.len() - 20];
    let mut seen = 0;
    for index in 0..count {
        let mut buf = vec![0u8; 2048];
        let n = fragment_ipv4(&inner, mtu, index, &mut buf[HEADROOM..]).unwrap();
        assert!(n <= mtu);
        let mut fr = Frame {
            buf,
            start: HEADROOM,
            len: n,
        };
        let mut pkt = PacketBuf::new(&mut fr.buf, fr.start, fr.len);
        let v = pb.tunnel_output(&branch, 0, &mut pkt, Instant::now());
        assert!(matches!(v, Verdict::Forward { port: 1, .. }), "{v:?}");
        let (s0, l0) = (pkt.start(), pkt.len());
        // Carry the sealed fragment to the hub.
        let mut wire = vec![0u8; ETH_LEN];
        write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
        wire.extend_from_slice(&fr.buf[s0..s0 + l0]);
        let mut at_hub = Frame::new(&wire);
        assert!(matches!(
            at_hub.run(&mut ph, &hub, 1),
            Verdict::Forward { port: 0, .. }
        ));
        let frag = Ipv4Packet::new_checked(at_hub.data()).unwrap();
        assert!(frag.verify_checksum());
        assert_eq!(frag.more_frags(), index + 1 < count);
        let off = usize::from(frag.frag_offset());
        assert_eq!(off, index * per);
        reassembled[off..off + frag.payload().len()].copy_from_slice(frag.payload());
        seen += frag.payload().len();
    }
    assert_eq!(seen, inner.len() - 20);
    assert_eq!(
        &reassembled[..],
        &inner[20..],
        "the final host reassembles the original"
    );
}

#[test]
fn cleartext_from_a_tunnels_prefixes_is_refused_by_policy() {
    // RFC 4301 §5.2: the hub protects 10.1.0.0/16 (the branch). The same
    // packet the tunnel delivers, sent in clear to the hub's WAN, must not
    // be forwarded to the LAN, nor reach the hub itself.
    let hub = site(HUB);
    let mut p = pipeline();
    let spoofed = udp_frame(WAN_MAC, ip("10.1.0.2"), ip("10.2.0.2"), 64, 40, false);
    let mut f = Frame::new(&spoofed);
    assert_eq!(
        f.run(&mut p, &hub, 1),
        Verdict::Drop(DropReason::EspPolicyViolation)
    );
    let mut to_host = udp_frame(WAN_MAC, ip("10.1.0.2"), ip("198.51.100.1"), 64, 40, false);
    let mut udp = strait_wire::UdpPacket::new_unchecked(&mut to_host[ETH_LEN + 20..]);
    udp.set_dst_port(22);
    udp.fill_checksum_v4(ip("10.1.0.2"), ip("198.51.100.1"));
    let mut f = Frame::new(&to_host);
    assert_eq!(
        f.run(&mut p, &hub, 1),
        Verdict::Drop(DropReason::EspPolicyViolation)
    );
    assert_eq!(
        p.counters[1].drops[DropReason::EspPolicyViolation as usize],
        2
    );
    // Other cleartext sources are forwarded as before, and the tunnel
    // still delivers the branch's packets.
    let mut f = Frame::new(&udp_frame(
        WAN_MAC,
        ip("203.0.113.9"),
        ip("10.2.0.2"),
        64,
        40,
        false,
    ));
    assert!(matches!(
        f.run(&mut p, &hub, 1),
        Verdict::Forward { port: 0, .. }
    ));
    let branch = site(BRANCH);
    let mut pb = pipeline();
    let (wire, _) = seal_at_branch(&branch, &mut pb, 40);
    let mut f = Frame::new(&wire);
    assert!(matches!(
        f.run(&mut p, &hub, 1),
        Verdict::Forward { port: 0, .. }
    ));
}

/// The WAN frame `wire` as if it came from `src:sport` (outer header
/// rewritten; the UDP checksum of ESP-in-UDP is zero).
fn from_outer(wire: &[u8], src: Ipv4Addr, sport: u16) -> Vec<u8> {
    let mut f = wire.to_vec();
    let mut outer = Ipv4Packet::new_unchecked(&mut f[ETH_LEN..]);
    outer.set_src_addr(src);
    outer.fill_checksum();
    strait_wire::UdpPacket::new_unchecked(&mut f[ETH_LEN + 20..]).set_src_port(sport);
    f
}

#[test]
fn a_floating_peer_moves_only_with_packets_that_advance_the_window() {
    let (branch, hub) = (site(BRANCH), site(HUB));
    let (mut pb, mut ph) = (pipeline(), pipeline());
    let (first, _) = seal_at_branch(&branch, &mut pb, 40);
    let (second, _) = seal_at_branch(&branch, &mut pb, 40);
    // The newest packet arrives from the branch's NAT mapping: learned.
    let mut f = Frame::new(&from_outer(&second, ip("192.0.2.7"), 40001));
    assert!(matches!(f.run(&mut ph, &hub, 1), Verdict::Forward { .. }));
    assert_eq!(hub.tunnels[0].peer(), (ip("192.0.2.7"), 40001));
    // An older packet, authentic and not yet seen (so accepted), replayed
    // from another address: delivered, but the peer stays.
    let mut f = Frame::new(&from_outer(&first, ip("203.0.113.66"), 5555));
    assert!(matches!(f.run(&mut ph, &hub, 1), Verdict::Forward { .. }));
    assert_eq!(hub.tunnels[0].peer(), (ip("192.0.2.7"), 40001));
    // The next new packet from a new mapping moves it (NAT rebinding).
    let (third, _) = seal_at_branch(&branch, &mut pb, 40);
    let mut f = Frame::new(&from_outer(&third, ip("192.0.2.8"), 40002));
    assert!(matches!(f.run(&mut ph, &hub, 1), Verdict::Forward { .. }));
    assert_eq!(hub.tunnels[0].peer(), (ip("192.0.2.8"), 40002));
}

#[test]
fn the_inbound_policy_covers_ipv6_prefixes_too() {
    // The hub of the other tests, with IPv6 on both sides of the tunnel.
    let hub = site(
        &HUB.replace("\"10.2.0.1/24\"", "\"fd02::1/64\"")
            .replace(
                "\"198.51.100.1/24\"",
                "\"198.51.100.1/24\", \"2001:db8::1/64\"",
            )
            .replace("\"10.1.0.0/16\"", "\"fd01::/48\""),
    );
    let mut p = pipeline();
    let echo = Icmpv6Repr::EchoRequest {
        ident: 7,
        seq_no: 1,
        data: b"policy",
    };
    let spoofed = v6_frame(WAN_MAC, v6("fd01::5"), v6("fd02::2"), 64, &echo);
    let mut f = Frame::new(&spoofed);
    assert_eq!(
        f.run(&mut p, &hub, 1),
        Verdict::Drop(DropReason::EspPolicyViolation)
    );
    let honest = v6_frame(WAN_MAC, v6("2001:db8::5"), v6("fd02::2"), 64, &echo);
    let mut f = Frame::new(&honest);
    assert!(matches!(
        f.run(&mut p, &hub, 1),
        Verdict::Forward { port: 0, .. }
    ));
}

/// Runs a frame the host stack wrote to the TAP of `port` through
/// [`Pipeline::host_output`].
fn from_host(p: &mut Pipeline<u32>, t: &Tables, port: u16, f: &mut Frame) -> Verdict {
    let mut pkt = PacketBuf::new(&mut f.buf, f.start, f.len);
    let v = p.host_output(t, port, &mut pkt, Instant::now());
    f.start = pkt.start();
    f.len = pkt.len();
    v
}

#[test]
fn the_hosts_service_answers_a_site_through_the_tunnel_never_in_clear() {
    let (branch, hub) = (site(BRANCH), site(HUB));
    let (mut pb, mut ph) = (pipeline(), pipeline());
    // A branch host's datagram to a service on the hub's LAN address: out
    // of the tunnel, it goes to the hub's host stack (by the WAN's TAP).
    let query = udp_frame(LAN_MAC, ip("10.1.0.2"), ip("10.2.0.1"), 64, 40, false);
    let mut f = Frame::new(&query);
    assert!(matches!(
        f.run(&mut pb, &branch, 0),
        Verdict::Forward { port: 1, .. }
    ));
    let mut wire = vec![0u8; ETH_LEN];
    write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
    wire.extend_from_slice(f.data());
    let mut at_hub = Frame::new(&wire);
    assert_eq!(at_hub.run(&mut ph, &hub, 1), Verdict::Punt);
    // As the branch forwarded it: TTL one lower, the rest as sent.
    assert_eq!(&at_hub.data()[ETH_LEN + 12..], &query[ETH_LEN + 12..]);
    assert_eq!(at_hub.data()[ETH_LEN + 8], 63);
    assert_eq!(&at_hub.data()[..6], &WAN_MAC, "to the TAP's own MAC");

    // The host's answer, whichever port and neighbour the host chose, is
    // sealed: the tables route the branch's LAN into the tunnel.
    let answer = udp_frame(HOST_MAC, ip("10.2.0.1"), ip("10.1.0.2"), 64, 40, true);
    let mut h = Frame::new(&answer);
    assert_eq!(
        from_host(&mut ph, &hub, 1, &mut h),
        Verdict::Forward {
            port: 1,
            neighbour: IpAddr::V4(ip("198.51.100.254"))
        }
    );
    let outer = Ipv4Packet::new_checked(h.data()).unwrap();
    assert_eq!(
        (outer.src_addr(), outer.dst_addr()),
        (ip("198.51.100.1"), ip("192.0.2.1"))
    );
    assert!(!h
        .data()
        .windows(20)
        .any(|w| w == &answer[ETH_LEN..ETH_LEN + 20]));
    let mut back = vec![0u8; ETH_LEN];
    write_eth(&mut back, WAN_MAC, HOST_MAC, EtherType::IPV4);
    back.extend_from_slice(h.data());
    let mut at_branch = Frame::new(&back);
    assert_eq!(
        at_branch.run(&mut pb, &branch, 1),
        Verdict::Forward {
            port: 0,
            neighbour: IpAddr::V4(ip("10.1.0.2"))
        }
    );
    assert_eq!(&at_branch.data()[12..], &answer[ETH_LEN + 12..]);

    // Elsewhere the host's frames leave as the host built them.
    let direct = udp_frame(
        HOST_MAC,
        ip("198.51.100.1"),
        ip("198.51.100.77"),
        64,
        40,
        true,
    );
    let mut d = Frame::new(&direct);
    assert_eq!(from_host(&mut ph, &hub, 1, &mut d), Verdict::Reply);
    assert_eq!(d.data(), &direct[..]);
    let mut arp = direct.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut a = Frame::new(&arp);
    assert_eq!(from_host(&mut ph, &hub, 1, &mut a), Verdict::Reply);
    assert_eq!(a.data(), &arp[..]);

    // Too big for the tunnel: split when DF is clear, dropped by name
    // when it is set.
    let mtu = hub.tunnels[0].mtu;
    let big = usize::from(mtu) - 28 + 1;
    let mut b = Frame::new(&udp_frame(
        HOST_MAC,
        ip("10.2.0.1"),
        ip("10.1.0.2"),
        64,
        big,
        false,
    ));
    assert_eq!(
        from_host(&mut ph, &hub, 1, &mut b),
        Verdict::Fragment(FragmentPlan {
            mtu,
            target: FragmentTarget::Tunnel { tunnel: 0 }
        })
    );
    let mut b = Frame::new(&udp_frame(
        HOST_MAC,
        ip("10.2.0.1"),
        ip("10.1.0.2"),
        64,
        big,
        true,
    ));
    assert_eq!(
        from_host(&mut ph, &hub, 1, &mut b),
        Verdict::Drop(DropReason::HostTooBig)
    );
    assert_eq!(ph.counters[1].drops[DropReason::HostTooBig as usize], 1);
}
