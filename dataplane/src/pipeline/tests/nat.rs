//! NAT in the pipeline: masquerade replies, DNAT, hairpin, reloads, NAT with tunnels.

use super::*;

const NAT_SITE: &str = r#"
[[interface]]
name = "lan"
addresses = ["10.0.1.1/24"]
[[interface]]
name = "wan"
addresses = ["192.0.2.1/24"]
[[route]]
prefix = "0.0.0.0/0"
via = ["192.0.2.254"]
[[nat]]
name = "lan-out"
kind = "masquerade"
source = "10.0.1.0/24"
out_interface = "wan"
ports = "20000-29999"
[[nat]]
name = "web"
kind = "dnat"
protocol = "udp"
public = "192.0.2.1:8080"
backends = ["10.0.1.80:80"]
"#;

/// A UDP frame `src:sport -> dst:dport` with a valid checksum.
fn udp_between(
    dst_mac: [u8; 6],
    (src, sport): (Ipv4Addr, u16),
    (dst, dport): (Ipv4Addr, u16),
    ttl: u8,
) -> Vec<u8> {
    let mut f = udp_frame(dst_mac, src, dst, ttl, 16, false);
    let mut udp = strait_wire::UdpPacket::new_unchecked(&mut f[ETH_LEN + 20..]);
    udp.set_src_port(sport);
    udp.set_dst_port(dport);
    udp.fill_checksum_v4(src, dst);
    f
}

/// Source and destination (address, port) of the UDP packet in the
/// window, after checking both checksums.
fn udp_tuple(l3: &[u8]) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let ip = Ipv4Packet::new_checked(l3).unwrap();
    assert!(ip.verify_checksum());
    let udp = strait_wire::UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(udp.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
    (
        (ip.src_addr(), udp.src_port()),
        (ip.dst_addr(), udp.dst_port()),
    )
}

fn nat_site(text: &str, previous: Option<&Tables>, generation: u64) -> Tables {
    let mut c = Config::parse(text, "nat.toml").unwrap();
    c.engine.state_dir = Some(crate::sastore::test_dir("site"));
    c.engine.manual_keying = true;
    Tables::build(&c, "nat.toml", generation, 3, previous, |name| {
        Ok(KernelLink {
            ifindex: 2,
            mac: if name == "lan" { LAN_MAC } else { WAN_MAC },
            mtu: 1500,
        })
    })
    .unwrap()
}

#[test]
fn reply_to_the_masquerade_address_is_translated_not_punted() {
    let t = nat_site(NAT_SITE, None, 1);
    let mut p = pipeline();
    let client = (ip("10.0.1.2"), 4000);
    let server = (ip("198.51.100.7"), 53);
    let mut out = Frame::new(&udp_between(LAN_MAC, client, server, 64));
    assert_eq!(
        out.run(&mut p, &t, 0),
        Verdict::Forward {
            port: 1,
            neighbour: IpAddr::V4(ip("192.0.2.254"))
        }
    );
    let (src, dst) = udp_tuple(out.data());
    assert_eq!(src.0, ip("192.0.2.1"), "masqueraded to the WAN address");
    assert!(
        (20000..=29999).contains(&src.1),
        "port from the rule's range"
    );
    assert_eq!(dst, server);
    assert_eq!(Ipv4Packet::new_checked(out.data()).unwrap().ttl(), 63);

    // The answer is addressed to our own WAN address: NAT runs before
    // the route lookup, so it goes to the client instead of the host.
    let mut back = Frame::new(&udp_between(WAN_MAC, server, src, 64));
    assert_eq!(
        back.run(&mut p, &t, 1),
        Verdict::Forward {
            port: 0,
            neighbour: IpAddr::V4(client.0)
        }
    );
    assert_eq!(udp_tuple(back.data()), (server, client));

    // Without a session, traffic to that address is the host's.
    let mut other = Frame::new(&udp_between(WAN_MAC, server, (src.0, 22), 64));
    assert_eq!(other.run(&mut p, &t, 1), Verdict::Punt);
    // ...and another host may not use the client's mapping
    // (address-dependent filtering, RFC 4787 REQ-8).
    let stranger = (ip("198.51.100.99"), 53);
    let mut probe = Frame::new(&udp_between(WAN_MAC, stranger, src, 64));
    assert_eq!(
        probe.run(&mut p, &t, 1),
        Verdict::Drop(DropReason::NatFiltered)
    );
    assert_eq!(p.counters[1].drops[DropReason::NatFiltered as usize], 1);
    assert_eq!(p.nat().worker().unwrap().session_count(), 1);
}

#[test]
fn dnat_port_forward_and_hairpin() {
    let t = nat_site(NAT_SITE, None, 1);
    let mut p = pipeline();
    let remote = (ip("198.51.100.7"), 40000);
    let public = (ip("192.0.2.1"), 8080);
    let backend = (ip("10.0.1.80"), 80);
    let mut f = Frame::new(&udp_between(WAN_MAC, remote, public, 64));
    assert_eq!(
        f.run(&mut p, &t, 1),
        Verdict::Forward {
            port: 0,
            neighbour: IpAddr::V4(backend.0)
        }
    );
    assert_eq!(udp_tuple(f.data()), (remote, backend));
    // The backend's answer leaves from the public endpoint.
    let mut r = Frame::new(&udp_between(LAN_MAC, backend, remote, 64));
    assert!(matches!(
        r.run(&mut p, &t, 0),
        Verdict::Forward { port: 1, .. }
    ));
    assert_eq!(udp_tuple(r.data()), (public, remote));

    // An inside client using the public endpoint is hairpinned: it
    // reaches the backend from the masquerade address, and the backend
    // answers through us.
    let client = (ip("10.0.1.2"), 5555);
    let mut h = Frame::new(&udp_between(LAN_MAC, client, public, 64));
    assert_eq!(
        h.run(&mut p, &t, 0),
        Verdict::Forward {
            port: 0,
            neighbour: IpAddr::V4(backend.0)
        }
    );
    let (src, dst) = udp_tuple(h.data());
    assert_eq!((src.0, dst), (ip("192.0.2.1"), backend));
    let mut hr = Frame::new(&udp_between(LAN_MAC, backend, src, 64));
    assert_eq!(
        hr.run(&mut p, &t, 0),
        Verdict::Forward {
            port: 0,
            neighbour: IpAddr::V4(client.0)
        }
    );
    assert_eq!(udp_tuple(hr.data()), (public, client));

    // The same address on a port nothing publishes is the box's own
    // service: the inside client reaches its host stack untranslated (a
    // hairpin would have made its source our own address).
    let sessions = p.nat().worker().unwrap().session_count();
    let mut own = Frame::new(&udp_between(LAN_MAC, client, (public.0, 53), 64));
    assert_eq!(own.run(&mut p, &t, 0), Verdict::Punt);
    assert_eq!(udp_tuple(&own.data()[ETH_LEN..]), (client, (public.0, 53)));
    assert_eq!(p.nat().worker().unwrap().session_count(), sessions);
}

#[test]
fn expiring_ttl_is_answered_before_translation() {
    let t = nat_site(NAT_SITE, None, 1);
    let mut p = pipeline();
    let mut f = Frame::new(&udp_between(
        LAN_MAC,
        (ip("10.0.1.2"), 4000),
        (ip("198.51.100.7"), 33434),
        1,
    ));
    assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
    // The error quotes the packet as the client sent it, from our LAN
    // address (what traceroute shows), and no session was opened.
    assert_icmp_error(
        &f,
        Icmpv4Type::TIME_EXCEEDED,
        0,
        ip("10.0.1.1"),
        ip("198.51.100.7"),
    );
    assert_eq!(p.nat().worker().unwrap().session_count(), 0);
}

#[test]
fn sessions_survive_a_rule_reload() {
    let t1 = nat_site(NAT_SITE, None, 1);
    let mut p = pipeline();
    let client = (ip("10.0.1.2"), 4000);
    let server = (ip("198.51.100.7"), 53);
    let mut out = Frame::new(&udp_between(LAN_MAC, client, server, 64));
    assert!(matches!(out.run(&mut p, &t1, 0), Verdict::Forward { .. }));
    let (src, _) = udp_tuple(out.data());
    // New snapshot: the DNAT rule is gone, the masquerade rule kept.
    let text = NAT_SITE.split("[[nat]]\nname = \"web\"").next().unwrap();
    let t2 = nat_site(text, Some(&t1), 2);
    assert_eq!(t2.nat.infos.len(), 1);
    assert_eq!(t2.nat.infos[0].id, t1.nat.infos[0].id, "ids follow names");
    let mut back = Frame::new(&udp_between(WAN_MAC, server, src, 64));
    assert!(matches!(
        back.run(&mut p, &t2, 1),
        Verdict::Forward { port: 0, .. }
    ));
    assert_eq!(udp_tuple(back.data()), (server, client));
    // The removed DNAT no longer forwards.
    let mut d = Frame::new(&udp_between(WAN_MAC, server, (ip("192.0.2.1"), 8080), 64));
    assert_eq!(d.run(&mut p, &t2, 1), Verdict::Punt);
}

#[test]
fn snat_happens_before_encapsulation_and_replies_are_untranslated_after_decapsulation() {
    let branch_text = format!(
        "{BRANCH}[[nat]]\nname = \"into-tunnel\"\nkind = \"snat\"\nsource = \"10.1.0.0/24\"\n\
         out_interface = \"hub\"\naddresses = [\"10.1.255.1\"]\n"
    );
    let branch = site(&branch_text);
    let hub = site(HUB);
    let (mut pb, mut ph) = (pipeline(), pipeline());
    let client = (ip("10.1.0.2"), 4000);
    let server = (ip("10.2.0.2"), 7);
    let mut f = Frame::new(&udp_between(LAN_MAC, client, server, 64));
    assert!(matches!(
        f.run(&mut pb, &branch, 0),
        Verdict::Forward { port: 1, .. }
    ));
    assert_eq!(pb.counters[1].esp_sealed, 1);
    // The hub opens it and sees the pool address inside.
    let mut wire = vec![0u8; ETH_LEN];
    write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
    wire.extend_from_slice(f.data());
    let mut at_hub = Frame::new(&wire);
    assert_eq!(
        at_hub.run(&mut ph, &hub, 1),
        Verdict::Forward {
            port: 0,
            neighbour: IpAddr::V4(server.0)
        }
    );
    let (src, dst) = udp_tuple(at_hub.data());
    assert_eq!((src.0, dst), (ip("10.1.255.1"), server));
    // The answer goes back through the tunnel; the branch opens it
    // and translates the inner packet back to the client.
    let mut answer = Frame::new(&udp_between(LAN_MAC, server, src, 64));
    assert!(matches!(
        answer.run(&mut ph, &hub, 0),
        Verdict::Forward { port: 1, .. }
    ));
    let mut wire = vec![0u8; ETH_LEN];
    write_eth(&mut wire, WAN_MAC, HOST_MAC, EtherType::IPV4);
    wire.extend_from_slice(answer.data());
    let mut home = Frame::new(&wire);
    assert_eq!(
        home.run(&mut pb, &branch, 1),
        Verdict::Forward {
            port: 0,
            neighbour: IpAddr::V4(client.0)
        }
    );
    assert_eq!(udp_tuple(home.data()), (server, client));
    let nat = pb.nat().worker().unwrap().counters();
    assert_eq!((nat.translated_outbound, nat.translated_inbound), (1, 1));
}

/// A UDP datagram `src:sport -> dst:dport` with `payload` bytes and IP ID
/// `id`, split into IPv4 fragments of at most 20 + 104 bytes, each in its
/// own Ethernet frame.
fn udp_fragments(
    dst_mac: [u8; 6],
    (src, sport): (Ipv4Addr, u16),
    (dst, dport): (Ipv4Addr, u16),
    id: u16,
    payload: usize,
) -> Vec<Vec<u8>> {
    let mut f = udp_frame(dst_mac, src, dst, 64, payload, false);
    for (i, b) in f[ETH_LEN + 28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut udp = strait_wire::UdpPacket::new_unchecked(&mut f[ETH_LEN + 20..]);
    udp.set_src_port(sport);
    udp.set_dst_port(dport);
    udp.fill_checksum_v4(src, dst);
    let mut ip = Ipv4Packet::new_unchecked(&mut f[ETH_LEN..]);
    ip.set_ident(id);
    ip.fill_checksum();
    let mut out = Vec::new();
    for index in 0.. {
        let mut frag = vec![0u8; ETH_LEN + 1500];
        let Some(len) = fragment_ipv4(&f[ETH_LEN..], 124, index, &mut frag[ETH_LEN..]) else {
            break;
        };
        frag.truncate(ETH_LEN + len);
        write_eth(&mut frag, dst_mac, HOST_MAC, EtherType::IPV4);
        out.push(frag);
    }
    assert!(out.len() >= 3);
    out
}

/// Runs every fragment through the pipeline, expects each forwarded out of
/// `port`, checks each IPv4 header checksum and returns the reassembled
/// datagram's (source, destination) after checking its UDP checksum.
fn forward_fragments(
    p: &mut Pipeline<u32>,
    t: &Tables,
    frames: &[Vec<u8>],
    ingress: u16,
    port: u16,
) -> ((Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let mut addrs = None;
    let mut datagram = Vec::new();
    for (k, frame) in frames.iter().enumerate() {
        let mut f = Frame::new(frame);
        assert!(
            matches!(f.run(p, t, ingress), Verdict::Forward { port: out, .. } if out == port),
            "fragment {k} forwarded out of port {port}"
        );
        let ip = Ipv4Packet::new_checked(f.data()).unwrap();
        assert!(ip.verify_checksum(), "fragment {k}: IPv4 checksum");
        let these = (ip.src_addr(), ip.dst_addr());
        assert!(addrs.is_none_or(|a| a == these), "fragment {k}: addresses");
        addrs = Some(these);
        assert_eq!(usize::from(ip.frag_offset()), datagram.len());
        datagram.extend_from_slice(ip.payload());
    }
    let (src, dst) = addrs.unwrap();
    let udp = strait_wire::UdpPacket::new_checked(&datagram[..]).unwrap();
    assert!(udp.verify_checksum_v4(src, dst), "reassembled UDP checksum");
    ((src, udp.src_port()), (dst, udp.dst_port()))
}

#[test]
fn fragments_follow_their_first_fragment_through_nat_both_ways() {
    let t = nat_site(NAT_SITE, None, 1);
    let mut p = pipeline();
    let client = (ip("10.0.1.2"), 4000);
    let server = (ip("198.51.100.7"), 53);
    // Outbound: the later fragments (no ports) get the first one's source
    // address (RFC 4787 REQ-14).
    let out = udp_fragments(LAN_MAC, client, server, 0x4242, 300);
    let (src, dst) = forward_fragments(&mut p, &t, &out, 0, 1);
    assert_eq!(src.0, ip("192.0.2.1"));
    assert!((20000..=29999).contains(&src.1));
    assert_eq!(dst, server);
    // Inbound: a fragmented answer reaches the client whole.
    let back = udp_fragments(WAN_MAC, server, src, 0x5151, 300);
    assert_eq!(forward_fragments(&mut p, &t, &back, 1, 0), (server, client));
    // A later fragment of a translated flow whose first fragment was never
    // seen cannot be translated: dropped and counted.
    let early = udp_fragments(LAN_MAC, client, server, 0x6363, 300);
    let mut f = Frame::new(&early[1]);
    assert_eq!(f.run(&mut p, &t, 0), Verdict::Drop(DropReason::NatFragment));
    let nat = p.nat().worker().unwrap().counters();
    assert_eq!(
        nat.fragments_translated,
        (out.len() - 1 + back.len() - 1) as u64
    );
}

#[test]
fn fragments_no_rule_claims_pass_through_a_nat_site() {
    let t = nat_site(NAT_SITE, None, 1);
    let mut p = pipeline();
    // From the outside to an inside host directly: routed, not NATed,
    // every fragment passes, even one whose first fragment was not seen.
    let from_wan = udp_fragments(
        WAN_MAC,
        (ip("198.51.100.7"), 7000),
        (ip("10.0.1.9"), 7001),
        0x0101,
        300,
    );
    assert_eq!(
        forward_fragments(&mut p, &t, &from_wan, 1, 0),
        ((ip("198.51.100.7"), 7000), (ip("10.0.1.9"), 7001))
    );
    let mut later_only = Frame::new(&from_wan[2]);
    assert!(matches!(
        later_only.run(&mut p, &t, 1),
        Verdict::Forward { port: 0, .. }
    ));
    let from_lan = udp_fragments(
        LAN_MAC,
        (ip("10.0.1.1"), 7000),
        (ip("198.51.100.7"), 7001),
        0x0202,
        300,
    );
    let _ = from_lan;
    assert_eq!(p.nat().worker().unwrap().session_count(), 0);
}

#[test]
fn translators_are_built_with_the_tables_and_taken_by_the_worker() {
    let t1 = nat_site(NAT_SITE, None, 1);
    // Built on the control side, before any packet.
    assert_eq!(t1.nat.prebuilt_translators(), 1);
    let mut p = pipeline();
    assert!(p.nat().worker().is_none());
    let client = (ip("10.0.1.2"), 4000);
    let server = (ip("198.51.100.7"), 53);
    let mut out = Frame::new(&udp_between(LAN_MAC, client, server, 64));
    assert!(matches!(out.run(&mut p, &t1, 0), Verdict::Forward { .. }));
    // The worker took the prebuilt one rather than building its own.
    assert_eq!(t1.nat.prebuilt_translators(), 0);
    assert_eq!(p.nat().worker().unwrap().session_count(), 1);
    // A reload with NAT already active builds nothing and keeps the
    // worker's translator and its sessions.
    let t2 = nat_site(NAT_SITE, Some(&t1), 2);
    assert_eq!(t2.nat.prebuilt_translators(), 0);
    let mut again = Frame::new(&udp_between(LAN_MAC, client, server, 64));
    assert!(matches!(again.run(&mut p, &t2, 0), Verdict::Forward { .. }));
    assert_eq!(p.nat().worker().unwrap().session_count(), 1);
}

#[test]
fn a_snapshot_without_nat_builds_no_translator_until_rules_arrive() {
    let plain = NAT_SITE.split("[[nat]]").next().unwrap();
    let t1 = nat_site(plain, None, 1);
    assert_eq!(t1.nat.prebuilt_translators(), 0);
    let t2 = nat_site(NAT_SITE, Some(&t1), 2);
    assert_eq!(t2.nat.prebuilt_translators(), 1);
}

#[test]
fn nat_quotas_drop_with_their_own_reasons() {
    let text = format!(
        "[nat_settings]\nports_per_inside_address = 1\ninbound_sessions_per_remote_address = 1\n{NAT_SITE}"
    );
    let t = nat_site(&text, None, 1);
    let mut p = pipeline();
    let server = (ip("198.51.100.7"), 53);
    let mut first = Frame::new(&udp_between(LAN_MAC, (ip("10.0.1.2"), 4000), server, 64));
    assert!(matches!(first.run(&mut p, &t, 0), Verdict::Forward { .. }));
    let mut second = Frame::new(&udp_between(LAN_MAC, (ip("10.0.1.2"), 4001), server, 64));
    assert_eq!(
        second.run(&mut p, &t, 0),
        Verdict::Drop(DropReason::NatQuotaInsidePorts)
    );
    let public = (ip("192.0.2.1"), 8080);
    let remote = ip("198.51.100.9");
    let mut a = Frame::new(&udp_between(WAN_MAC, (remote, 40000), public, 64));
    assert!(matches!(
        a.run(&mut p, &t, 1),
        Verdict::Forward { port: 0, .. }
    ));
    let mut b = Frame::new(&udp_between(WAN_MAC, (remote, 40001), public, 64));
    assert_eq!(
        b.run(&mut p, &t, 1),
        Verdict::Drop(DropReason::NatQuotaRemote)
    );
    assert_eq!(p.counters[1].drops[DropReason::NatQuotaRemote as usize], 1);
    let nat = p.nat().worker().unwrap().counters();
    assert_eq!(nat.drops(strait_nat::DropReason::QuotaInsidePorts), 1);
}
