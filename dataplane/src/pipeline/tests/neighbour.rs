//! ARP: answers for our addresses, learning, held packets released.

use super::*;

#[test]
fn answers_arp_for_our_address_and_learns_the_sender() {
    let t = tables();
    let mut p = pipeline();
    let mut req = [0u8; 60];
    write_eth(&mut req, [0xff; 6], HOST_MAC, EtherType::ARP);
    ArpRepr::request(EthernetAddress(HOST_MAC), ip("10.0.1.2"), ip("10.0.1.1"))
        .emit(&mut req[ETH_LEN..])
        .unwrap();
    let mut f = Frame::new(&req);
    assert_eq!(f.run(&mut p, &t, 0), Verdict::Reply);
    let reply = ArpRepr::parse(&ArpPacket::new_checked(&f.data()[ETH_LEN..]).unwrap()).unwrap();
    assert_eq!(reply.operation, ArpOperation::REPLY);
    assert_eq!(reply.source_hardware_addr.0, LAN_MAC);
    assert_eq!(reply.source_protocol_addr, ip("10.0.1.1"));
    assert_eq!(&f.data()[0..6], &HOST_MAC);
    // The sender is now known: a packet to it resolves immediately.
    let key = (0, IpAddr::V4(ip("10.0.1.2")));
    assert_eq!(
        p.resolve(key, 1, Instant::now()),
        Resolution::Known {
            mac: HOST_MAC,
            probe: None,
            packet: 1
        }
    );
    // A request for someone else is learned from nothing and not answered.
    let mut other = req;
    ArpRepr::request(EthernetAddress(HOST_MAC), ip("10.0.1.3"), ip("10.0.1.77"))
        .emit(&mut other[ETH_LEN..])
        .unwrap();
    assert_eq!(Frame::new(&other).run(&mut p, &t, 0), Verdict::Consumed);
}

#[test]
fn arp_reply_releases_held_packets() {
    let t = tables();
    let mut p = pipeline();
    let key = (0, IpAddr::V4(ip("10.0.1.2")));
    assert_eq!(
        p.resolve(key, 41, Instant::now()),
        Resolution::Queued { request: true }
    );
    let mut buf = [0u8; 64];
    let n = arp_request(&mut buf, &t.ports[0], ip("10.0.1.2"), None).unwrap();
    let req = ArpRepr::parse(&ArpPacket::new_checked(&buf[ETH_LEN..n]).unwrap()).unwrap();
    let mut reply = [0u8; 60];
    write_eth(&mut reply, LAN_MAC, HOST_MAC, EtherType::ARP);
    ArpRepr {
        operation: ArpOperation::REPLY,
        source_hardware_addr: EthernetAddress(HOST_MAC),
        source_protocol_addr: req.target_protocol_addr,
        target_hardware_addr: req.source_hardware_addr,
        target_protocol_addr: req.source_protocol_addr,
    }
    .emit(&mut reply[ETH_LEN..])
    .unwrap();
    assert_eq!(Frame::new(&reply).run(&mut p, &t, 0), Verdict::Punt);
    assert_eq!(p.released, [(key, 41)]);
}

/// Whether worker `p` has an entry for `ip` on port 0.
fn knows(p: &Pipeline<u32>, ip: IpAddr) -> bool {
    p.neighbours
        .entries()
        .any(|((port, a), _, _)| port == 0 && a == ip)
}

#[test]
fn only_on_link_senders_asking_for_our_addresses_are_learned() {
    let t = tables();
    let mut p = pipeline();
    // An ARP request for our address from a sender outside the port's
    // subnets is answered, but the sender is not added.
    let mut req = [0u8; 60];
    write_eth(&mut req, [0xff; 6], HOST_MAC, EtherType::ARP);
    ArpRepr::request(
        EthernetAddress(HOST_MAC),
        ip("192.168.99.9"),
        ip("10.0.1.1"),
    )
    .emit(&mut req[ETH_LEN..])
    .unwrap();
    assert_eq!(Frame::new(&req).run(&mut p, &t, 0), Verdict::Reply);
    assert!(!knows(&p, IpAddr::V4(ip("192.168.99.9"))));
    // RFC 4861 §7.2.3: a solicitation for an address that is not ours is
    // not processed, so its sender is not learned either.
    let ns = Icmpv6Repr::NeighborSolicit {
        target: v6("fd00:1::77"),
        source_lladdr: Some(EthernetAddress(HOST_MAC)),
    };
    let frame = v6_frame(
        [0x33, 0x33, 0xff, 0, 0, 0x77],
        v6("fd00:1::2"),
        v6("ff02::1:ff00:77"),
        255,
        &ns,
    );
    assert_eq!(Frame::new(&frame).run(&mut p, &t, 0), Verdict::Consumed);
    assert!(!knows(&p, IpAddr::V6(v6("fd00:1::2"))));
    // For our own address, from on the link, both are learned as before.
    let ns = Icmpv6Repr::NeighborSolicit {
        target: v6("fd00:1::1"),
        source_lladdr: Some(EthernetAddress(HOST_MAC)),
    };
    let frame = v6_frame(
        [0x33, 0x33, 0xff, 0, 0, 1],
        v6("fd00:1::2"),
        v6("ff02::1:ff00:1"),
        255,
        &ns,
    );
    assert_eq!(Frame::new(&frame).run(&mut p, &t, 0), Verdict::Reply);
    assert!(knows(&p, IpAddr::V6(v6("fd00:1::2"))));
}
