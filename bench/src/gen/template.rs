//! Frame templates: each frame size of a mix is built once with
//! `strait-wire`, and per packet only the flow fields (source address,
//! ports / echo identifier), the TCP sequence number and the probe's
//! sequence number, timestamp and flags are written.
//!
//! Checksums are not recomputed over the frame. Each template keeps the
//! one's-complement sum of its headers with every per-packet field zeroed;
//! a packet's checksum is that base sum plus the sums of the few bytes
//! written for it (one's-complement addition is associative and
//! commutative, RFC 1071 §2(A)/(B)). That costs summing about 30 bytes
//! whatever the frame size, where a full UDP checksum of a 1518-byte frame
//! sums 1480, and unlike chained RFC 1624 updates it needs no knowledge of
//! the previous packet in the buffer. All per-packet fields sit at even
//! offsets of the checksummed regions, so their sums add in place.
//!
//! The IPv6, TCP and ICMP headers are written here with named offsets until
//! `strait-wire` grows views for them; the checksum arithmetic is
//! `strait_wire::checksum` throughout.

use std::net::IpAddr;

use strait_wire::checksum;
use strait_wire::ethernet::HEADER_LEN as ETH_LEN;
use strait_wire::{
    EtherType, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

use super::error::{GenError, Result};
use super::flows::FlowKey;
use super::probe::{Probe, PROBE_LEN};
use super::sender::Holds;
use super::spec::{Protocol, TrafficSpec, FCS_LEN};

/// Gives every factory its own range of [`Holds`] tags, so a buffer
/// written by one factory is never taken for another's template.
static NEXT_FACTORY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

const IPV4_LEN: usize = strait_wire::ipv4::HEADER_LEN;
const UDP_LEN: usize = strait_wire::udp::HEADER_LEN;

/// IPv6 fixed header, RFC 8200 §3.
mod ipv6 {
    use core::ops::Range;
    pub const LEN: usize = 40;
    pub const VERSION_CLASS_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// TCP header without options, RFC 9293 §3.1.
mod tcp {
    use core::ops::Range;
    pub const LEN: usize = 20;
    pub const PORTS_AND_SEQ: Range<usize> = 0..8;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const FLAG_SYN: u8 = 0x02;
}

/// ICMP / ICMPv6 echo message, RFC 792 and RFC 4443 §4.1.
mod icmp {
    use core::ops::Range;
    pub const LEN: usize = 8;
    pub const TYPE: usize = 0;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const IDENT_AND_SEQ: Range<usize> = 4..8;
    pub const IDENT: Range<usize> = 4..6;
    pub const SEQ: Range<usize> = 6..8;
    pub const ECHO_REQUEST_V4: u8 = 8;
    pub const ECHO_REPLY_V4: u8 = 0;
    pub const ECHO_REQUEST_V6: u8 = 128;
    pub const ECHO_REPLY_V6: u8 = 129;
}

/// Length of the L4 header the generator writes for a protocol.
fn l4_len(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Udp => UDP_LEN,
        Protocol::TcpSyn => tcp::LEN,
        Protocol::IcmpEcho => icmp::LEN,
    }
}

/// Smallest frame size (FCS included) that holds the headers and the probe.
pub fn min_frame_size(protocol: Protocol, ipv6: bool) -> usize {
    let l3 = if ipv6 { ipv6::LEN } else { IPV4_LEN };
    ETH_LEN + l3 + l4_len(protocol) + PROBE_LEN + FCS_LEN
}

/// One frame size's prebuilt frame and checksum bases.
#[derive(Clone, Debug)]
struct FrameTemplate {
    bytes: Vec<u8>,
    /// Sum of the IPv4 header with checksum and source address zeroed.
    ipv4_base: u16,
    /// Sum of pseudo-header (if any) and L4 segment with checksum and
    /// per-packet fields zeroed.
    l4_base: u16,
}

/// Writes generated frames into caller buffers.
#[derive(Debug)]
pub struct FrameFactory {
    templates: Vec<FrameTemplate>,
    pattern: Vec<u16>,
    next: usize,
    protocol: Protocol,
    ipv6: bool,
    /// Low 32 bits of the first source address.
    src_low: u32,
    l4: usize,
    stream: u8,
    /// This factory's tags are `tag_base + template index`, never 0.
    tag_base: Holds,
}

impl FrameFactory {
    /// Builds one template per frame size of the spec's mix.
    pub fn new(spec: &TrafficSpec) -> Result<Self> {
        spec.validate()?;
        let ipv6 = spec.src_ip.is_ipv6();
        let l4 = ETH_LEN + if ipv6 { ipv6::LEN } else { IPV4_LEN };
        let templates = spec
            .sizes
            .entries()
            .iter()
            .map(|&(size, _)| build_template(spec, size - FCS_LEN, l4))
            .collect::<Result<Vec<_>>>()?;
        let src_low = match spec.src_ip {
            IpAddr::V4(a) => u32::from(a),
            IpAddr::V6(a) => (u128::from(a) & 0xffff_ffff) as u32,
        };
        Ok(Self {
            templates,
            pattern: spec.sizes.pattern(),
            next: 0,
            protocol: spec.protocol,
            ipv6,
            src_low,
            l4,
            stream: spec.stream,
            // Template indices are u16 (the size pattern's), below 1 << 16.
            tag_base: NEXT_FACTORY.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 16,
        })
    }

    /// Length (without FCS) of the frame the next [`Self::write`] produces.
    #[inline]
    pub fn next_len(&self) -> usize {
        self.templates[usize::from(self.pattern[self.next])]
            .bytes
            .len()
    }

    /// Largest frame (without FCS) this factory writes.
    pub fn max_len(&self) -> usize {
        self.templates
            .iter()
            .map(|t| t.bytes.len())
            .max()
            .unwrap_or(0)
    }

    /// Writes the next frame of the size pattern into `buf` and returns its
    /// length, or 0 if `buf` is too small (nothing is written then).
    #[inline]
    pub fn write(&mut self, buf: &mut [u8], flow: FlowKey, seq: u64, ts: u64, flags: u8) -> usize {
        self.write_over(buf, &mut 0, flow, seq, ts, flags)
    }

    /// [`Self::write`] into a buffer whose last contents `holds` tells: if
    /// it already holds this frame's template (written by this factory,
    /// then changed only in per-packet fields), only those fields are
    /// written; otherwise the whole template is, and `holds` says so.
    #[inline]
    pub fn write_over(
        &mut self,
        buf: &mut [u8],
        holds: &mut Holds,
        flow: FlowKey,
        seq: u64,
        ts: u64,
        flags: u8,
    ) -> usize {
        let index = self.pattern[self.next];
        let t = &self.templates[usize::from(index)];
        let len = t.bytes.len();
        let Some(frame) = buf.get_mut(..len) else {
            return 0;
        };
        self.next += 1;
        if self.next == self.pattern.len() {
            self.next = 0;
        }
        let tag = self.tag_base + Holds::from(index);
        if *holds != tag {
            frame.copy_from_slice(&t.bytes);
            *holds = tag;
        }

        let src = self.src_low.wrapping_add(flow.src_offset).to_be_bytes();
        let (src_at, ip_csum) = if self.ipv6 {
            (ETH_LEN + ipv6::SRC_ADDR.end - 4, None)
        } else {
            (ETH_LEN + 12, Some(ETH_LEN + 10))
        };
        frame[src_at..src_at + 4].copy_from_slice(&src);
        let src_sum = checksum::sum(&src);
        if let Some(at) = ip_csum {
            let c = !checksum::add(t.ipv4_base, src_sum);
            frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }

        let l4 = self.l4;
        let probe_at = l4 + l4_len(self.protocol);
        let mut probe = Probe::new_unchecked(&mut frame[probe_at..probe_at + PROBE_LEN]);
        probe.set_header(self.stream, flags);
        probe.set_sequence(seq);
        probe.set_timestamp(ts);
        let mut s = checksum::add(
            t.l4_base,
            checksum::sum(&frame[probe_at + 2..probe_at + PROBE_LEN]),
        );
        // ICMPv4 has no pseudo-header (RFC 792); everything else does.
        if self.ipv6 || self.protocol != Protocol::IcmpEcho {
            s = checksum::add(s, src_sum);
        }
        let seg = &mut frame[l4..];
        match self.protocol {
            Protocol::Udp => {
                seg[0..2].copy_from_slice(&flow.src_port.to_be_bytes());
                seg[2..4].copy_from_slice(&flow.dst_port.to_be_bytes());
                s = checksum::add(s, checksum::sum(&seg[0..4]));
                seg[6..8].copy_from_slice(&checksum::finish_udp(s).to_be_bytes());
            }
            Protocol::TcpSyn => {
                seg[tcp::SRC_PORT].copy_from_slice(&flow.src_port.to_be_bytes());
                seg[tcp::DST_PORT].copy_from_slice(&flow.dst_port.to_be_bytes());
                seg[tcp::SEQ].copy_from_slice(&(seq as u32).to_be_bytes());
                s = checksum::add(s, checksum::sum(&seg[tcp::PORTS_AND_SEQ]));
                seg[tcp::CHECKSUM].copy_from_slice(&(!s).to_be_bytes());
            }
            Protocol::IcmpEcho => {
                seg[icmp::IDENT].copy_from_slice(&flow.src_port.to_be_bytes());
                seg[icmp::SEQ].copy_from_slice(&(seq as u16).to_be_bytes());
                s = checksum::add(s, checksum::sum(&seg[icmp::IDENT_AND_SEQ]));
                seg[icmp::CHECKSUM].copy_from_slice(&(!s).to_be_bytes());
            }
        }
        len
    }
}

/// Builds the frame of `len` bytes (no FCS) with every per-packet field
/// zeroed, and its checksum bases.
fn build_template(spec: &TrafficSpec, len: usize, l4: usize) -> Result<FrameTemplate> {
    let build = |source| GenError::Build {
        what: spec.protocol.name(),
        source,
    };
    let mut bytes = vec![0u8; len];
    let ipv6 = spec.src_ip.is_ipv6();
    EthernetRepr {
        src_addr: spec.src_mac,
        dst_addr: spec.dst_mac,
        vlan: None,
        ethertype: if ipv6 {
            EtherType::IPV6
        } else {
            EtherType::IPV4
        },
    }
    .emit(&mut bytes)
    .map_err(build)?;
    let seg_len = len - l4;
    let proto = match (spec.protocol, ipv6) {
        (Protocol::Udp, _) => IpProtocol::UDP,
        (Protocol::TcpSyn, _) => IpProtocol::TCP,
        (Protocol::IcmpEcho, false) => IpProtocol::ICMP,
        (Protocol::IcmpEcho, true) => IpProtocol::ICMPV6,
    };

    // L3 header with the low 32 bits of the source address zeroed.
    let pseudo = match (spec.src_ip, spec.dst_ip) {
        (IpAddr::V4(_), IpAddr::V4(dst)) => {
            let repr = Ipv4Repr {
                src_addr: std::net::Ipv4Addr::UNSPECIFIED,
                dst_addr: dst,
                protocol: proto,
                payload_len: seg_len,
                ttl: spec.ttl,
                dscp: 0,
                ecn: 0,
                ident: 0,
                // DF set: RFC 6864 §4.1 lets atomic datagrams carry any ID.
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
            };
            repr.emit(&mut bytes[ETH_LEN..]).map_err(build)?;
            checksum::pseudo_header_v4(repr.src_addr, dst, proto, seg_len as u16)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let h = &mut bytes[ETH_LEN..ETH_LEN + ipv6::LEN];
            h[ipv6::VERSION_CLASS_FLOW].copy_from_slice(&0x6000_0000u32.to_be_bytes());
            let plen = u16::try_from(seg_len)
                .map_err(|_| GenError::Spec(format!("IPv6 payload of {seg_len} bytes")))?;
            h[ipv6::PAYLOAD_LEN].copy_from_slice(&plen.to_be_bytes());
            h[ipv6::NEXT_HEADER] = proto.0;
            h[ipv6::HOP_LIMIT] = spec.ttl;
            let src = std::net::Ipv6Addr::from(u128::from(src) & !0xffff_ffff);
            h[ipv6::SRC_ADDR].copy_from_slice(&src.octets());
            h[ipv6::DST_ADDR].copy_from_slice(&dst.octets());
            checksum::pseudo_header_v6(src, dst, proto, seg_len as u32)
        }
        _ => {
            return Err(GenError::Spec(
                "source and destination IP versions differ".into(),
            ))
        }
    };

    let seg = &mut bytes[l4..];
    match spec.protocol {
        Protocol::Udp => {
            UdpRepr {
                src_port: 0,
                dst_port: 0,
            }
            .emit(seg, seg_len - UDP_LEN)
            .map_err(build)?;
        }
        Protocol::TcpSyn => {
            seg[tcp::DATA_OFFSET] = ((tcp::LEN / 4) as u8) << 4;
            seg[tcp::FLAGS] = tcp::FLAG_SYN;
            seg[tcp::WINDOW].copy_from_slice(&u16::MAX.to_be_bytes());
        }
        Protocol::IcmpEcho => {
            seg[icmp::TYPE] = if ipv6 {
                icmp::ECHO_REQUEST_V6
            } else {
                icmp::ECHO_REQUEST_V4
            };
        }
    }
    // The probe's magic is constant; its per-packet bytes stay zero here.
    let probe_at = l4 + l4_len(spec.protocol);
    Probe::new_unchecked(&mut bytes[probe_at..probe_at + PROBE_LEN]).set_header(0, 0);
    bytes[probe_at + 2] = 0;
    // The rest of the payload: a byte pattern rather than zeros, so a
    // device that compresses or mangles payloads shows up.
    for (i, b) in bytes[probe_at + PROBE_LEN..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }

    let ipv4_base = if ipv6 {
        0
    } else {
        // `emit` filled the header checksum; the base sum excludes it.
        let mut header = [0u8; IPV4_LEN];
        header.copy_from_slice(&bytes[ETH_LEN..ETH_LEN + IPV4_LEN]);
        header[10..12].fill(0);
        checksum::sum(&header)
    };
    let seg_sum = checksum::sum(&bytes[l4..]);
    let l4_base = if spec.protocol == Protocol::IcmpEcho && !ipv6 {
        seg_sum
    } else {
        checksum::add(seg_sum, pseudo)
    };
    Ok(FrameTemplate {
        bytes,
        ipv4_base,
        l4_base,
    })
}

/// Where the probe of a received frame is, if it carries one.
///
/// Parses Ethernet (with up to two VLAN tags), IPv4 or IPv6 (no extension
/// headers), then UDP, TCP or ICMP echo request/reply; `None` for anything
/// else, for non-initial fragments and for payloads without the magic.
/// Never panics on malformed input.
pub fn locate_probe(frame: &[u8]) -> Option<Probe<&[u8]>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let encap = eth.encapsulation().ok()?;
    let l3 = frame.get(encap.header_len..)?;
    let (proto, l4, v6) = match encap.ethertype {
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).ok()?;
            if ip.is_fragment() && ip.frag_offset() != 0 {
                return None;
            }
            let hl = ip.header_len();
            let total = usize::from(ip.total_len());
            (ip.protocol(), l3.get(hl..total)?, false)
        }
        EtherType::IPV6 => {
            if l3.len() < ipv6::LEN || l3[0] >> 4 != 6 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([l3[4], l3[5]]));
            (
                IpProtocol(l3[ipv6::NEXT_HEADER]),
                l3.get(ipv6::LEN..ipv6::LEN + plen)?,
                true,
            )
        }
        _ => return None,
    };
    let payload = match proto {
        IpProtocol::UDP => UdpPacket::new_checked(l4)
            .ok()?
            .into_inner()
            .get(UDP_LEN..)?,
        IpProtocol::TCP => {
            let doff = usize::from(*l4.get(tcp::DATA_OFFSET)? >> 4) * 4;
            if doff < tcp::LEN {
                return None;
            }
            l4.get(doff..)?
        }
        IpProtocol::ICMP if !v6 => match *l4.first()? {
            icmp::ECHO_REQUEST_V4 | icmp::ECHO_REPLY_V4 => l4.get(icmp::LEN..)?,
            _ => return None,
        },
        IpProtocol::ICMPV6 if v6 => match *l4.first()? {
            icmp::ECHO_REQUEST_V6 | icmp::ECHO_REPLY_V6 => l4.get(icmp::LEN..)?,
            _ => return None,
        },
        _ => return None,
    };
    Probe::new_checked(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::probe::FLAG_WARMUP;
    use crate::gen::spec::SizeMix;
    use strait_wire::EthernetAddress;

    fn spec(src: &str, dst: &str, protocol: Protocol, size: usize) -> TrafficSpec {
        let mut s = TrafficSpec::new(
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            EthernetAddress([2, 0, 0, 0, 0, 2]),
            src.parse().unwrap(),
            dst.parse().unwrap(),
        );
        s.protocol = protocol;
        s.sizes = SizeMix::fixed(size);
        s
    }

    /// Full, from-scratch verification of every checksum in a frame.
    fn verify(frame: &[u8], protocol: Protocol, v6: bool) {
        let l3 = &frame[ETH_LEN..];
        if v6 {
            let src = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&l3[8..24]).unwrap());
            let dst = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&l3[24..40]).unwrap());
            let seg = &l3[40..];
            let proto = IpProtocol(l3[6]);
            let p = checksum::pseudo_header_v6(src, dst, proto, seg.len() as u32);
            assert_eq!(
                checksum::add(p, checksum::sum(seg)),
                0xffff,
                "{protocol} v6 checksum"
            );
        } else {
            let ip = Ipv4Packet::new_checked(l3).unwrap();
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            let seg = ip.payload();
            let sum = checksum::sum(seg);
            let total = if protocol == Protocol::IcmpEcho {
                sum
            } else {
                let p = checksum::pseudo_header_v4(
                    ip.src_addr(),
                    ip.dst_addr(),
                    ip.protocol(),
                    seg.len() as u16,
                );
                checksum::add(p, sum)
            };
            assert_eq!(total, 0xffff, "{protocol} v4 checksum");
            if protocol == Protocol::Udp {
                let udp = UdpPacket::new_checked(seg).unwrap();
                assert!(udp.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
            }
        }
    }

    #[test]
    fn every_protocol_and_family_has_valid_checksums_and_probe() {
        let cases = [
            ("10.0.0.1", "10.9.0.1", 64),
            ("2001:db8::1", "2001:db8:9::1", 90),
        ];
        for (src, dst, base) in cases {
            for protocol in [Protocol::Udp, Protocol::TcpSyn, Protocol::IcmpEcho] {
                let v6 = src.contains(':');
                let size = base.max(min_frame_size(protocol, v6));
                for size in [size, size + 1, 1518] {
                    let mut s = spec(src, dst, protocol, size);
                    s.flows.src_addrs = 1000;
                    s.stream = 9;
                    let mut f = FrameFactory::new(&s).unwrap();
                    let mut buf = [0u8; 2048];
                    for (i, seq) in [0u64, 1, 0xffff, 0x1_0000_0001, u64::MAX]
                        .into_iter()
                        .enumerate()
                    {
                        let flow = FlowKey {
                            src_offset: 999 - i as u32,
                            src_port: 65535 - i as u16,
                            dst_port: 1 + i as u16,
                        };
                        let flags = if i % 2 == 0 { FLAG_WARMUP } else { 0 };
                        let ts = 0x1234_5678_9abcu64.wrapping_add(seq);
                        let n = f.write(&mut buf, flow, seq, ts, flags);
                        assert_eq!(n, size - FCS_LEN);
                        verify(&buf[..n], protocol, v6);
                        let p = locate_probe(&buf[..n]).expect("probe found");
                        assert_eq!(p.sequence(), seq);
                        assert_eq!(p.stream(), 9);
                        assert_eq!(p.is_warmup(), flags != 0);
                        assert_eq!(p.timestamp(), ts & 0xffff_ffff_ffff);
                    }
                }
            }
        }
    }

    #[test]
    fn source_address_and_ports_follow_the_flow() {
        let mut f = FrameFactory::new(&spec("10.0.0.250", "10.9.0.1", Protocol::Udp, 64)).unwrap();
        let mut buf = [0u8; 128];
        let flow = FlowKey {
            src_offset: 10,
            src_port: 4000,
            dst_port: 53,
        };
        let n = f.write(&mut buf, flow, 5, 5, 0);
        let ip = Ipv4Packet::new_checked(&buf[ETH_LEN..n]).unwrap();
        assert_eq!(
            ip.src_addr(),
            "10.0.1.4".parse::<std::net::Ipv4Addr>().unwrap()
        );
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (4000, 53));
    }

    #[test]
    fn imix_cycles_through_sizes_in_pattern_order() {
        let mut s = spec("10.0.0.1", "10.0.0.2", Protocol::Udp, 64);
        s.sizes = SizeMix::imix();
        let mut f = FrameFactory::new(&s).unwrap();
        let pattern = s.sizes.pattern();
        let mut buf = [0u8; 2048];
        for round in 0..2 {
            for &i in &pattern {
                let expect = s.sizes.entries()[usize::from(i)].0 - FCS_LEN;
                assert_eq!(f.next_len(), expect, "round {round}");
                assert_eq!(f.write(&mut buf, FlowKey::default(), 0, 0, 0), expect);
            }
        }
        assert_eq!(f.write(&mut [0u8; 59], FlowKey::default(), 0, 0, 0), 0);
    }

    /// A buffer reused with its tag gets only the per-packet fields, and
    /// ends up byte for byte what a fresh write gives; a foreign tag (other
    /// size, other factory, unknown) makes the whole template be written.
    #[test]
    fn a_reused_buffer_gets_only_the_per_packet_fields() {
        for protocol in [Protocol::Udp, Protocol::TcpSyn, Protocol::IcmpEcho] {
            let mut s = spec("10.0.0.1", "10.9.0.1", protocol, 128);
            s.sizes = SizeMix::weighted(vec![(128, 2), (594, 1), (1518, 1)]).unwrap();
            s.flows.src_addrs = 100;
            let mut reused = FrameFactory::new(&s).unwrap();
            let mut fresh = FrameFactory::new(&s).unwrap();
            let other = FrameFactory::new(&s).unwrap();
            let mut bufs = vec![[0u8; 2048]; 3];
            let mut holds = [0u64; 3];
            let mut seen = std::collections::HashSet::new();
            for seq in 0..40u64 {
                let i = (seq % 3) as usize;
                let flow = FlowKey {
                    src_offset: (seq * 7 % 100) as u32,
                    src_port: 1000 + seq as u16,
                    dst_port: 9 + seq as u16,
                };
                if seq == 20 {
                    // Someone else wrote the buffer: its tag says so.
                    bufs[i].fill(0xee);
                    holds[i] = other.tag_base;
                }
                let n = reused.write_over(&mut bufs[i], &mut holds[i], flow, seq, seq * 3, 0);
                let mut want = [0u8; 2048];
                let m = fresh.write(&mut want, flow, seq, seq * 3, 0);
                assert_eq!(n, m);
                assert_eq!(&bufs[i][..n], &want[..m], "{protocol} seq {seq}");
                verify(&bufs[i][..n], protocol, false);
                assert_ne!(holds[i], 0);
                seen.insert(holds[i]);
            }
            // One tag per template of the mix, none shared with `other`.
            assert_eq!(seen.len(), s.sizes.entries().len());
            assert!(!seen.contains(&other.tag_base));
        }
    }

    #[test]
    fn locate_probe_never_panics_on_truncations_and_garbage() {
        let mut f =
            FrameFactory::new(&spec("10.0.0.1", "10.0.0.2", Protocol::TcpSyn, 200)).unwrap();
        let mut buf = [0u8; 256];
        let n = f.write(&mut buf, FlowKey::default(), 1, 1, 0);
        for cut in 0..n {
            let _ = locate_probe(&buf[..cut]);
        }
        let mut x = 0x9e37_79b9u32;
        for _ in 0..20_000 {
            let mut junk = buf;
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                junk[(x as usize) % n] = (x >> 8) as u8;
            }
            let _ = locate_probe(&junk[..n]);
        }
        // An ARP frame and an IPv4 packet with another protocol carry no probe.
        buf[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(locate_probe(&buf[..n]).is_none());
    }
}
