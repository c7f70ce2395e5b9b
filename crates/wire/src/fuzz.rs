//! One entry point that runs every parser and in-place rewrite over
//! arbitrary bytes, shared by the cargo-fuzz target and the corpus replay
//! test so that both exercise exactly the same code.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::esp::{classify_nat_traversal, split_trailer, NAT_T_PORT};
use crate::ethernet::{EtherType, EthernetFrame, EthernetRepr};
use crate::icmpv4::{emit_icmpv4_error, Icmpv4Error, Icmpv4Packet, Icmpv4Repr};
use crate::icmpv6::{emit_icmpv6_error, Icmpv6Error, Icmpv6Packet, Icmpv6Repr};
use crate::ipv4::{Ipv4Packet, Ipv4Repr};
use crate::ipv6::{Ipv6Packet, Ipv6Repr};
use crate::tcp::{TcpPacket, TcpRepr};
use crate::udp::{UdpPacket, UdpRepr};
use crate::{ArpPacket, ArpRepr, EspPacket, IpProtocol};

/// Largest input copied for the in-place rewrite passes.
const SCRATCH: usize = 2048;

/// Parses `data` as an Ethernet frame down to the transport layer, and also
/// as a bare IPv4 / IPv6 packet, a UDP/4500 payload and CIDR text; then applies the
/// forwarding and NAT rewrites to a copy. Returns how many headers of the
/// Ethernet walk parsed cleanly (Ethernet = 1, network = 2, transport = 3).
///
/// Parsers must never panic on any input. The only panics here are
/// assertions of the crate's own invariants: an incremental checksum update
/// of a packet whose checksum verified must leave it verifying.
pub fn fuzz_parse_all(data: &[u8]) -> usize {
    let depth = walk_frame(data);
    let _ = ipv4_layers(data);
    let _ = ipv6_layers(data);
    let _ = classify_nat_traversal(data);
    tcp_reset(data);
    let _ = split_trailer(data);
    let _ = ArpPacket::new_checked(data).map(|p| ArpRepr::parse(&p));
    cidr_text(data);

    let mut scratch = [0u8; SCRATCH];
    let len = data.len().min(SCRATCH);
    scratch[..len].copy_from_slice(&data[..len]);
    rewrite_ipv4(&mut scratch[..len]);
    scratch[..len].copy_from_slice(&data[..len]);
    rewrite_ipv6(&mut scratch[..len]);
    depth
}

/// A reset built for any input is a valid IPv4 TCP reset with both
/// checksums right.
fn tcp_reset(data: &[u8]) {
    let mut out = [0u8; 64];
    if let Ok(n) = crate::tcp::emit_tcp_reset(data, &mut out) {
        let ip = Ipv4Packet::new_checked(&out[..n]).expect("a built reset parses");
        assert!(ip.verify_checksum(), "reset IPv4 checksum");
        let tcp = TcpPacket::new_checked(ip.payload()).expect("its segment parses");
        assert!(
            tcp.verify_checksum_v4(ip.src_addr(), ip.dst_addr()),
            "reset TCP checksum"
        );
    }
}

/// The one CIDR parser (configuration input): never panics, and what it
/// accepts prints back to itself and parses again to the same value.
fn cidr_text(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = text.parse::<crate::cidr::IpCidr>() {
        let again: crate::cidr::IpCidr =
            c.to_string().parse().expect("a printed CIDR parses again");
        assert_eq!(again, c, "CIDR display round trip");
    }
}

fn walk_frame(data: &[u8]) -> usize {
    let Ok(frame) = EthernetFrame::new_checked(data) else {
        return 0;
    };
    let _ = (frame.dst_addr(), frame.src_addr(), frame.payload().len());
    let Ok(encap) = frame.encapsulation() else {
        return 0;
    };
    let _ = EthernetRepr::parse(&frame);
    let l3 = data.get(encap.header_len..).unwrap_or(&[]);
    1 + match encap.ethertype {
        EtherType::IPV4 => ipv4_layers(l3),
        EtherType::IPV6 => ipv6_layers(l3),
        EtherType::ARP => match ArpPacket::new_checked(l3).map(|p| ArpRepr::parse(&p)) {
            Ok(Ok(_)) => 1,
            _ => 0,
        },
        _ => 0,
    }
}

fn ipv4_layers(data: &[u8]) -> usize {
    let Ok(packet) = Ipv4Packet::new_checked(data) else {
        return 0;
    };
    let Ok(repr) = Ipv4Repr::parse(&packet) else {
        return 0;
    };
    let _ = (
        packet.options(),
        packet.is_fragment(),
        packet.dscp(),
        packet.ecn(),
    );
    if packet.is_non_initial_fragment() {
        return 1;
    }
    1 + transport_v4(
        packet.payload(),
        repr.protocol,
        repr.src_addr,
        repr.dst_addr,
    )
}

fn transport_v4(payload: &[u8], protocol: IpProtocol, src: Ipv4Addr, dst: Ipv4Addr) -> usize {
    match protocol {
        IpProtocol::UDP => match UdpPacket::new_checked(payload) {
            Ok(udp) => {
                let _ = UdpRepr::parse(&udp);
                if udp.src_port() == NAT_T_PORT || udp.dst_port() == NAT_T_PORT {
                    let _ = classify_nat_traversal(udp.payload());
                }
                usize::from(udp.verify_checksum_v4(src, dst))
            }
            Err(_) => 0,
        },
        IpProtocol::TCP => match TcpPacket::new_checked(payload) {
            Ok(tcp) => {
                let _ = TcpRepr::parse(&tcp);
                let _ = (tcp.payload().len(), tcp.urgent());
                usize::from(tcp.verify_checksum_v4(src, dst))
            }
            Err(_) => 0,
        },
        IpProtocol::ICMP => match Icmpv4Packet::new_checked(payload) {
            Ok(icmp) => {
                if let Ok(inner) = icmp.invoking_packet() {
                    let _ = (inner.src_addr(), inner.payload().len());
                    let _ = UdpPacket::new_checked(inner.payload());
                }
                usize::from(Icmpv4Repr::parse(&icmp).is_ok())
            }
            Err(_) => 0,
        },
        IpProtocol::ESP => usize::from(EspPacket::new_checked(payload).is_ok()),
        _ => 0,
    }
}

fn ipv6_layers(data: &[u8]) -> usize {
    let Ok(packet) = Ipv6Packet::new_checked(data) else {
        return 0;
    };
    let repr = Ipv6Repr::parse(&packet);
    let Ok(upper) = packet.upper_layer() else {
        return 0;
    };
    if upper.fragment.is_some_and(|f| f.offset != 0) {
        return 1;
    }
    let end = (crate::ipv6::HEADER_LEN + repr.payload_len).min(data.len());
    let payload = data.get(upper.offset..end).unwrap_or(&[]);
    let (src, dst) = (repr.src_addr, repr.dst_addr);
    1 + match upper.protocol {
        IpProtocol::UDP => UdpPacket::new_checked(payload)
            .map(|u| usize::from(u.verify_checksum_v6(src, dst)))
            .unwrap_or(0),
        IpProtocol::TCP => TcpPacket::new_checked(payload)
            .map(|t| usize::from(t.verify_checksum_v6(src, dst)))
            .unwrap_or(0),
        IpProtocol::ICMPV6 => match Icmpv6Packet::new_checked(payload) {
            Ok(icmp) => {
                let _ = icmp.invoking_packet().map(|p| p.upper_layer());
                usize::from(Icmpv6Repr::parse(&icmp, src, dst).is_ok())
            }
            Err(_) => 0,
        },
        IpProtocol::ESP => usize::from(EspPacket::new_checked(payload).is_ok()),
        _ => 0,
    }
}

/// Forwarding and NAT rewrites on a bare IPv4 packet, checking that valid
/// checksums stay valid.
fn rewrite_ipv4(buf: &mut [u8]) {
    let mut out = [0u8; crate::icmpv4::MAX_ERROR_DATAGRAM];
    if let Ok(n) = emit_icmpv4_error(
        buf,
        Icmpv4Error::FragmentationNeeded { next_hop_mtu: 1400 },
        Ipv4Addr::new(192, 0, 2, 1),
        64,
        &mut out,
    ) {
        let ip = Ipv4Packet::new_checked(&out[..n]);
        assert!(ip.as_ref().is_ok_and(|p| p.verify_checksum()));
    }
    let Ok(mut packet) = Ipv4Packet::new_checked(&mut *buf) else {
        return;
    };
    let header_ok = packet.verify_checksum();
    let _ = packet.decrement_ttl();
    let new_src = Ipv4Addr::new(203, 0, 113, 1);
    let old_src = packet.rewrite_src_addr(new_src);
    assert!(!header_ok || packet.verify_checksum());
    let dst = packet.dst_addr();
    if packet.is_non_initial_fragment() {
        return;
    }
    let protocol = packet.protocol();
    let payload = packet.payload_mut();
    match protocol {
        IpProtocol::UDP => {
            if let Ok(mut udp) = UdpPacket::new_checked(&mut *payload) {
                let ok = udp.verify_checksum_v4(old_src, dst);
                udp.rewrite_src_port(40000);
                udp.update_checksum_for_addr_v4(old_src, new_src);
                assert!(!ok || udp.verify_checksum_v4(new_src, dst));
            }
        }
        IpProtocol::TCP => {
            if let Ok(mut tcp) = TcpPacket::new_checked(&mut *payload) {
                let ok = tcp.verify_checksum_v4(old_src, dst);
                tcp.rewrite_src_port(40000);
                tcp.update_checksum_for_addr_v4(old_src, new_src);
                let _ = tcp.clamp_mss(1360);
                assert!(!ok || tcp.verify_checksum_v4(new_src, dst));
            }
        }
        IpProtocol::ICMP => {
            if let Ok(mut icmp) = Icmpv4Packet::new_checked(&mut *payload) {
                let ok = icmp.verify_checksum();
                if icmp.make_echo_reply().is_ok() {
                    assert!(!ok || icmp.verify_checksum());
                }
                if let Ok(mut inner) = icmp.invoking_packet_mut() {
                    inner.rewrite_dst_addr(Ipv4Addr::new(10, 0, 0, 1));
                }
            }
        }
        _ => {}
    }
}

/// Forwarding and NAT rewrites on a bare IPv6 packet.
fn rewrite_ipv6(buf: &mut [u8]) {
    let router: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let mut out = [0u8; crate::icmpv6::MIN_MTU];
    if let Ok(n) = emit_icmpv6_error(buf, Icmpv6Error::TimeExceeded(0), router, 64, &mut out) {
        assert!(Ipv6Packet::new_checked(&out[..n]).is_ok());
    }
    let Ok(mut packet) = Ipv6Packet::new_checked(&mut *buf) else {
        return;
    };
    let _ = packet.decrement_hop_limit();
    let Ok(upper) = packet.upper_layer() else {
        return;
    };
    if upper.fragment.is_some() {
        return;
    }
    let (src, dst) = (packet.src_addr(), packet.dst_addr());
    packet.set_src_addr(router);
    let end = crate::ipv6::HEADER_LEN + usize::from(packet.payload_len());
    let buf = packet.into_inner();
    let Some(segment) = buf.get_mut(upper.offset..end) else {
        return;
    };
    match upper.protocol {
        IpProtocol::UDP => {
            if let Ok(mut udp) = UdpPacket::new_checked(&mut *segment) {
                let ok = udp.verify_checksum_v6(src, dst);
                udp.rewrite_src_port(40000);
                udp.update_checksum_for_addr_v6(src, router);
                assert!(!ok || udp.verify_checksum_v6(router, dst));
            }
        }
        IpProtocol::TCP => {
            if let Ok(mut tcp) = TcpPacket::new_checked(&mut *segment) {
                let ok = tcp.verify_checksum_v6(src, dst);
                tcp.update_checksum_for_addr_v6(src, router);
                let _ = tcp.clamp_mss(1220);
                assert!(!ok || tcp.verify_checksum_v6(router, dst));
            }
        }
        _ => {}
    }
}
