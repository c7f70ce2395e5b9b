//! Hand-built frames of every protocol the wire layer parses, valid and
//! broken, shared by the corpus replay test and the corpus writer example.

#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use strait_wire::ethernet::VlanTag;
use strait_wire::icmpv4::{time_exceeded, unreachable};
use strait_wire::icmpv6::NeighborFlags;
use strait_wire::{
    emit_icmpv4_error, ArpRepr, EspRepr, EtherType, EthernetAddress, EthernetRepr, Icmpv4Error,
    Icmpv4Repr, Icmpv6Repr, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Repr, TcpFlags, TcpPacket,
    TcpRepr, UdpPacket, UdpRepr,
};

pub const MAC_A: EthernetAddress = EthernetAddress([0x02, 0x00, 0x5e, 0x10, 0x00, 0x01]);
pub const MAC_B: EthernetAddress = EthernetAddress([0x02, 0x00, 0x5e, 0x10, 0x00, 0x02]);
pub const LAN_HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 20);
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);
pub const HUB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const V6_HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x20);
pub const V6_SERVER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x80);

/// A named sample: its bytes and the depth `fuzz_parse_all` must report.
pub struct Sample {
    pub name: String,
    pub bytes: Vec<u8>,
    pub depth: usize,
}

fn ethernet(vlan: Option<VlanTag>, ethertype: EtherType) -> Vec<u8> {
    let repr = EthernetRepr {
        src_addr: MAC_A,
        dst_addr: MAC_B,
        vlan,
        ethertype,
    };
    let mut buf = vec![0u8; repr.header_len()];
    repr.emit(&mut buf).unwrap();
    buf
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, transport: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol,
        payload_len: transport.len(),
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 0x1c46,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    };
    let mut buf = vec![0u8; 20];
    repr.emit(&mut buf).unwrap();
    buf.extend_from_slice(transport);
    buf
}

pub fn udp_v4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = vec![0u8; 8];
    UdpRepr {
        src_port: sport,
        dst_port: dport,
    }
    .emit(&mut udp, payload.len())
    .unwrap();
    udp.extend_from_slice(payload);
    UdpPacket::new_checked(&mut udp[..])
        .unwrap()
        .fill_checksum_v4(src, dst);
    ipv4(src, dst, IpProtocol::UDP, &udp)
}

pub fn tcp_syn_v4(src: Ipv4Addr, dst: Ipv4Addr, mss: u16) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: 51000,
        dst_port: 443,
        seq_number: 0x1234_5678,
        ack_number: 0,
        flags: TcpFlags::SYN,
        window: 64240,
        mss: Some(mss),
    };
    let mut tcp = vec![0u8; repr.header_len()];
    repr.emit(&mut tcp).unwrap();
    TcpPacket::new_checked(&mut tcp[..])
        .unwrap()
        .fill_checksum_v4(src, dst)
        .unwrap();
    ipv4(src, dst, IpProtocol::TCP, &tcp)
}

fn ipv6(next: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 40];
    Ipv6Repr {
        src_addr: V6_HOST,
        dst_addr: V6_SERVER,
        next_header: next,
        payload_len: payload.len(),
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0xbeef,
    }
    .emit(&mut buf)
    .unwrap();
    buf.extend_from_slice(payload);
    buf
}

fn udp_v6_segment(payload: &[u8]) -> Vec<u8> {
    let mut udp = vec![0u8; 8];
    UdpRepr {
        src_port: 5353,
        dst_port: 53,
    }
    .emit(&mut udp, payload.len())
    .unwrap();
    udp.extend_from_slice(payload);
    UdpPacket::new_checked(&mut udp[..])
        .unwrap()
        .fill_checksum_v6(V6_HOST, V6_SERVER);
    udp
}

fn icmpv6(repr: &Icmpv6Repr<'_>, src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let mut icmp = vec![0u8; repr.buffer_len()];
    repr.emit(&mut icmp, src, dst).unwrap();
    let mut buf = vec![0u8; 40];
    Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::ICMPV6,
        payload_len: icmp.len(),
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut buf)
    .unwrap();
    buf.extend_from_slice(&icmp);
    buf
}

fn frame(vlan: Option<VlanTag>, ethertype: EtherType, l3: &[u8]) -> Vec<u8> {
    let mut f = ethernet(vlan, ethertype);
    f.extend_from_slice(l3);
    f
}

/// Every valid sample, with the depth the parser must reach.
pub fn valid_samples() -> Vec<Sample> {
    let mut out = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, depth: usize| {
        out.push(Sample {
            name: format!("valid-depth{depth}-{name}"),
            bytes,
            depth,
        })
    };
    let dns = udp_v4(LAN_HOST, SERVER, 40000, 53, b"\x12\x34\x01\x00\x00\x01");
    add("eth-ipv4-udp", frame(None, EtherType::IPV4, &dns), 3);
    let mut padded = frame(None, EtherType::IPV4, &udp_v4(LAN_HOST, SERVER, 1, 2, b""));
    padded.resize(60, 0);
    add("eth-ipv4-udp-padded", padded, 3);
    let mut no_csum = udp_v4(LAN_HOST, SERVER, 1000, 2000, b"zero");
    no_csum[26] = 0;
    no_csum[27] = 0;
    add(
        "eth-ipv4-udp-nochecksum",
        frame(None, EtherType::IPV4, &no_csum),
        3,
    );
    let vlan = Some(VlanTag {
        pcp: 3,
        dei: false,
        vid: 100,
    });
    add(
        "eth-vlan-ipv4-tcp-syn",
        frame(vlan, EtherType::IPV4, &tcp_syn_v4(LAN_HOST, SERVER, 1460)),
        3,
    );
    let arp = {
        let mut b = vec![0u8; 28];
        ArpRepr::request(MAC_A, LAN_HOST, Ipv4Addr::new(10, 1, 0, 1))
            .emit(&mut b)
            .unwrap();
        b
    };
    add("eth-arp-request", frame(None, EtherType::ARP, &arp), 2);
    let mut qinq = vec![0u8; 12];
    qinq[..6].copy_from_slice(&MAC_B.0);
    qinq[6..12].copy_from_slice(&MAC_A.0);
    qinq.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x64, 0x08, 0x06]);
    qinq.extend_from_slice(&arp);
    add("eth-qinq-arp", qinq, 2);

    let echo = {
        let r = Icmpv4Repr::EchoRequest {
            ident: 0x4242,
            seq_no: 1,
            data: b"abcdefghijklmnop",
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b).unwrap();
        ipv4(LAN_HOST, SERVER, IpProtocol::ICMP, &b)
    };
    add("eth-ipv4-icmp-echo", frame(None, EtherType::IPV4, &echo), 3);
    let big = udp_v4(LAN_HOST, SERVER, 40000, 443, &[0x5a; 1200]);
    for (name, err) in [
        (
            "eth-ipv4-icmp-fragneeded",
            Icmpv4Error::FragmentationNeeded { next_hop_mtu: 1400 },
        ),
        (
            "eth-ipv4-icmp-timeexceeded",
            Icmpv4Error::TimeExceeded(time_exceeded::TTL),
        ),
        (
            "eth-ipv4-icmp-portunreachable",
            Icmpv4Error::DstUnreachable(unreachable::PORT),
        ),
    ] {
        let mut b = [0u8; 576];
        let n = emit_icmpv4_error(&big, err, Ipv4Addr::new(10, 1, 0, 1), 64, &mut b).unwrap();
        add(name, frame(None, EtherType::IPV4, &b[..n]), 3);
    }

    let mut esp = vec![0u8; 8];
    EspRepr {
        spi: 0xc0ff_ee01,
        sequence_number: 1,
    }
    .emit(&mut esp)
    .unwrap();
    esp.extend_from_slice(&[0xa5; 48]);
    add(
        "eth-ipv4-esp",
        frame(
            None,
            EtherType::IPV4,
            &ipv4(LAN_HOST, HUB, IpProtocol::ESP, &esp),
        ),
        3,
    );
    add(
        "eth-ipv4-udp4500-esp",
        frame(
            None,
            EtherType::IPV4,
            &udp_v4(LAN_HOST, HUB, 4500, 4500, &esp),
        ),
        3,
    );
    add(
        "eth-ipv4-udp4500-keepalive",
        frame(
            None,
            EtherType::IPV4,
            &udp_v4(LAN_HOST, HUB, 4500, 4500, &[0xff]),
        ),
        3,
    );
    let mut ike = vec![0, 0, 0, 0];
    ike.extend_from_slice(&[0x11; 28]);
    add(
        "eth-ipv4-udp4500-ike",
        frame(
            None,
            EtherType::IPV4,
            &udp_v4(LAN_HOST, HUB, 4500, 4500, &ike),
        ),
        3,
    );

    add(
        "eth-ipv6-udp",
        frame(
            None,
            EtherType::IPV6,
            &ipv6(IpProtocol::UDP, &udp_v6_segment(b"v6")),
        ),
        3,
    );
    let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop -> destination options
    ext.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]); // destination options -> fragment
    ext.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 7]); // atomic fragment -> UDP
    ext.extend_from_slice(&udp_v6_segment(b"behind extension headers"));
    add(
        "eth-ipv6-ext-udp",
        frame(None, EtherType::IPV6, &ipv6(IpProtocol::HOP_BY_HOP, &ext)),
        3,
    );
    let mut later = vec![17, 0, 0x05, 0xa8, 0, 0, 0, 9];
    later.extend_from_slice(&[0x33; 40]);
    add(
        "eth-ipv6-later-fragment",
        frame(
            None,
            EtherType::IPV6,
            &ipv6(IpProtocol::IPV6_FRAGMENT, &later),
        ),
        2,
    );
    let ll = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    let ll2 = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
    let ns = Icmpv6Repr::NeighborSolicit {
        target: ll2,
        source_lladdr: Some(MAC_A),
    };
    let sn = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 2);
    add(
        "eth-ipv6-icmpv6-ns",
        frame(None, EtherType::IPV6, &icmpv6(&ns, ll, sn)),
        3,
    );
    let na = Icmpv6Repr::NeighborAdvert {
        flags: NeighborFlags {
            router: true,
            solicited: true,
            override_: false,
        },
        target: ll2,
        target_lladdr: Some(MAC_B),
    };
    add(
        "eth-ipv6-icmpv6-na",
        frame(None, EtherType::IPV6, &icmpv6(&na, ll2, ll)),
        3,
    );
    let echo6 = Icmpv6Repr::EchoRequest {
        ident: 9,
        seq_no: 2,
        data: b"ping6",
    };
    add(
        "eth-ipv6-icmpv6-echo",
        frame(None, EtherType::IPV6, &icmpv6(&echo6, V6_HOST, V6_SERVER)),
        3,
    );
    let ptb_quote = ipv6(IpProtocol::UDP, &udp_v6_segment(&[1; 100]));
    let ptb = Icmpv6Repr::PacketTooBig {
        mtu: 1280,
        invoking: &ptb_quote,
    };
    add(
        "eth-ipv6-icmpv6-ptb",
        frame(None, EtherType::IPV6, &icmpv6(&ptb, V6_SERVER, V6_HOST)),
        3,
    );
    out
}

/// Broken frames: truncations and garbled fields of the valid ones. Their
/// depth is what the parser must stop at.
pub fn invalid_samples() -> Vec<Sample> {
    let mut out = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, depth: usize| {
        out.push(Sample {
            name: format!("bad-depth{depth}-{name}"),
            bytes,
            depth,
        })
    };
    let udp = frame(
        None,
        EtherType::IPV4,
        &udp_v4(LAN_HOST, SERVER, 40000, 53, b"payload!"),
    );
    add("empty", Vec::new(), 0);
    add("eth-short", udp[..13].to_vec(), 0);
    add("eth-ipv4-cut-header", udp[..30].to_vec(), 1);
    add("eth-ipv4-cut-payload", udp[..udp.len() - 1].to_vec(), 1);
    let mut v = udp.clone();
    v[14] = 0x65;
    add("eth-ipv4-version6", v, 1);
    let mut v = udp.clone();
    v[14] = 0x43;
    add("eth-ipv4-ihl3", v, 1);
    let mut v = udp.clone();
    v[14] = 0x4f;
    add("eth-ipv4-ihl15-short", v, 1);
    let mut v = udp.clone();
    v[16..18].copy_from_slice(&2000u16.to_be_bytes());
    add("eth-ipv4-totallen-beyond-frame", v, 1);
    let mut v = udp.clone();
    v[24] ^= 0xff;
    add("eth-ipv4-bad-checksum", v, 1);
    let mut v = udp.clone();
    v[38..40].copy_from_slice(&500u16.to_be_bytes());
    add("eth-ipv4-udp-length-beyond", v, 2);
    let mut v = udp.clone();
    v[42] ^= 0x01;
    add("eth-ipv4-udp-bad-checksum", v, 2);
    let mut tcp = frame(None, EtherType::IPV4, &tcp_syn_v4(LAN_HOST, SERVER, 1460));
    tcp[46] = 0x20; // data offset 2
    add("eth-ipv4-tcp-bad-offset", tcp, 2);
    let mut tcp = frame(None, EtherType::IPV4, &tcp_syn_v4(LAN_HOST, SERVER, 1460));
    tcp[55] = 0; // MSS option length 0
    add("eth-ipv4-tcp-bad-option", tcp, 2);
    let mut tags = frame(
        None,
        EtherType::VLAN,
        &[0, 1, 0x81, 0x00, 0, 2, 0x81, 0, 0, 3],
    );
    tags.extend_from_slice(&[0x08, 0x00]);
    add("eth-three-vlan-tags", tags, 0);
    add("eth-vlan-cut", frame(None, EtherType::VLAN, &[0, 1]), 0);
    let mut deep = Vec::new();
    for _ in 0..12 {
        deep.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
    }
    add(
        "eth-ipv6-too-many-ext",
        frame(
            None,
            EtherType::IPV6,
            &ipv6(IpProtocol::IPV6_DEST_OPTS, &deep),
        ),
        1,
    );
    add(
        "eth-ipv6-ext-cut",
        frame(
            None,
            EtherType::IPV6,
            &ipv6(IpProtocol::HOP_BY_HOP, &[17, 4, 0, 0]),
        ),
        1,
    );
    let mut v6 = frame(
        None,
        EtherType::IPV6,
        &ipv6(IpProtocol::UDP, &udp_v6_segment(b"x")),
    );
    v6[18..20].copy_from_slice(&900u16.to_be_bytes());
    add("eth-ipv6-payloadlen-beyond", v6, 1);
    let mut ns = frame(
        None,
        EtherType::IPV6,
        &icmpv6(
            &Icmpv6Repr::NeighborSolicit {
                target: V6_SERVER,
                source_lladdr: Some(MAC_A),
            },
            V6_HOST,
            V6_SERVER,
        ),
    );
    let opt_len_at = ns.len() - 7;
    ns[opt_len_at] = 0;
    add("eth-ipv6-icmpv6-ns-zero-option", ns, 2);
    add(
        "eth-ipv4-esp-spi0",
        frame(
            None,
            EtherType::IPV4,
            &ipv4(LAN_HOST, HUB, IpProtocol::ESP, &[0, 0, 0, 0, 0, 0, 0, 1]),
        ),
        2,
    );
    let mut icmp_err = udp_v4(LAN_HOST, SERVER, 1, 2, &[0; 40]);
    let mut b = [0u8; 576];
    let n = emit_icmpv4_error(
        &icmp_err,
        Icmpv4Error::TimeExceeded(0),
        Ipv4Addr::new(10, 1, 0, 1),
        64,
        &mut b,
    )
    .unwrap();
    icmp_err.clear();
    icmp_err.extend_from_slice(&b[..n]);
    icmp_err[22] ^= 0x40; // garble the ICMP checksum
    let mut p = Ipv4Packet::new_checked(&mut icmp_err[..]).unwrap();
    p.fill_checksum();
    add(
        "eth-ipv4-icmp-bad-checksum",
        frame(None, EtherType::IPV4, &icmp_err),
        2,
    );
    out
}
