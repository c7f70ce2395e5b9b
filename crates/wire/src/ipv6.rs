//! IPv6 fixed header (RFC 8200 §3) and a bounded walk over extension headers
//! (RFC 8200 §4) to the upper-layer protocol.

use core::net::Ipv6Addr;

use crate::error::{need, room, Error, Result};
use crate::IpProtocol;

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// Most extension headers the walk will cross before giving up. RFC 8200 §4.1
/// allows each kind once (destination options twice); anything deeper is a
/// resource-exhaustion attempt, not traffic.
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// Fragment header contents (RFC 8200 §4.5).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv6Fragment {
    /// Fragment offset in bytes.
    pub offset: u16,
    /// M flag: more fragments follow.
    pub more_frags: bool,
    /// Identification.
    pub ident: u32,
}

/// Where the upper-layer header starts, found by [`Ipv6Packet::upper_layer`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv6UpperLayer {
    /// Upper-layer protocol (ICMPv6, TCP, UDP, ESP, No Next Header, ...).
    pub protocol: IpProtocol,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// The fragment header, if one was crossed. With a non-zero offset the
    /// bytes at `offset` are the middle of a payload, not a header.
    pub fragment: Option<Ipv6Fragment>,
}

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking the version and that the payload length
    /// fits the buffer (which may carry Ethernet padding beyond it).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_header_checked(buffer)?;
        let buf = packet.buffer.as_ref();
        let total = HEADER_LEN + usize::from(packet.payload_len());
        if total > buf.len() {
            return Err(Error::BadTotalLength {
                what: "ipv6",
                length: total,
                header_len: HEADER_LEN,
                available: buf.len(),
            });
        }
        Ok(packet)
    }

    /// Wraps a buffer holding at least the fixed header, whose payload may be
    /// cut short (the invoking packet inside an ICMPv6 error).
    pub fn new_header_checked(buffer: T) -> Result<Self> {
        let buf = buffer.as_ref();
        need("ipv6 header", buf, HEADER_LEN)?;
        let version = buf[0] >> 4;
        if version != 6 {
            return Err(Error::BadVersion {
                expected: 6,
                found: version,
            });
        }
        Ok(Self { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn first_word(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Version nibble.
    pub fn version(&self) -> u8 {
        (self.first_word() >> 28) as u8
    }

    /// Traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    /// Flow label (20 bits).
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000f_ffff
    }

    /// Payload length field (extension headers included).
    pub fn payload_len(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PAYLOAD_LEN];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Next header field of the fixed header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// The payload after the fixed header, bounded by the payload length
    /// (or by the buffer for a header-checked, cut-short packet).
    pub fn payload(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(buf.len());
        &buf[HEADER_LEN..end]
    }

    /// Walks the extension headers (hop-by-hop, routing, fragment,
    /// destination options) to the upper-layer header. The walk stops at a
    /// fragment header with a non-zero offset (no upper-layer header follows,
    /// RFC 8200 §4.5) and crosses at most [`MAX_EXTENSION_HEADERS`].
    pub fn upper_layer(&self) -> Result<Ipv6UpperLayer> {
        let payload = self.payload();
        let mut protocol = self.next_header();
        let mut at = 0usize;
        let mut fragment = None;
        for _ in 0..=MAX_EXTENSION_HEADERS {
            let len = match protocol {
                IpProtocol::HOP_BY_HOP | IpProtocol::IPV6_ROUTING | IpProtocol::IPV6_DEST_OPTS => {
                    need("ipv6 extension header", payload, at + 2)?;
                    // Hdr Ext Len counts 8-octet units beyond the first 8.
                    (usize::from(payload[at + 1]) + 1) * 8
                }
                IpProtocol::IPV6_FRAGMENT => 8,
                _ => {
                    return Ok(Ipv6UpperLayer {
                        protocol,
                        offset: HEADER_LEN + at,
                        fragment,
                    })
                }
            };
            need("ipv6 extension header", payload, at + len)?;
            if protocol == IpProtocol::HOP_BY_HOP && at != 0 {
                // RFC 8200 §4.3: hop-by-hop must immediately follow the fixed header.
                return Err(Error::Malformed {
                    what: "ipv6",
                    reason: "hop-by-hop options header not first",
                });
            }
            let header = &payload[at..at + len];
            let next = IpProtocol(header[0]);
            if protocol == IpProtocol::IPV6_FRAGMENT {
                let w = u16::from_be_bytes([header[2], header[3]]);
                let frag = Ipv6Fragment {
                    offset: w & 0xfff8,
                    more_frags: w & 1 != 0,
                    ident: u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
                };
                fragment = Some(frag);
                if frag.offset != 0 {
                    return Ok(Ipv6UpperLayer {
                        protocol: next,
                        offset: HEADER_LEN + at + len,
                        fragment,
                    });
                }
            }
            protocol = next;
            at += len;
        }
        Err(Error::Unsupported {
            what: "ipv6",
            reason: "too many extension headers",
        })
    }
}

fn addr(b: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(b);
    Ipv6Addr::from(o)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6, traffic class and flow label.
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let w = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes());
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = protocol.0;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the source address. IPv6 has no header checksum; transport
    /// checksums need `update_checksum_for_addr_v6`.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Forwarding step of RFC 8200 §3: decrements the hop limit, or returns
    /// [`Error::TtlExpired`] (packet untouched) when it would reach zero, in
    /// which case ICMPv6 time exceeded is due (RFC 4443 §3.3).
    pub fn decrement_hop_limit(&mut self) -> Result<u8> {
        let h = self.hop_limit();
        if h <= 1 {
            return Err(Error::TtlExpired);
        }
        self.set_hop_limit(h - 1);
        Ok(h - 1)
    }

    /// Mutable payload after the fixed header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// An IPv6 fixed header in meaning form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv6Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// Next header.
    pub next_header: IpProtocol,
    /// Payload length.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label.
    pub flow_label: u32,
}

impl Ipv6Repr {
    /// Parses a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv6Packet<T>) -> Self {
        Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        }
    }

    /// Writes the fixed header at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        room(buf, HEADER_LEN)?;
        let len = u16::try_from(self.payload_len).map_err(|_| Error::BadTotalLength {
            what: "ipv6",
            length: self.payload_len,
            header_len: HEADER_LEN,
            available: usize::from(u16::MAX),
        })?;
        let mut packet = Ipv6Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        packet.set_version_tc_flow(self.traffic_class, self.flow_label);
        packet.set_payload_len(len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_with(next: IpProtocol, ext: &[u8], upper: &[u8]) -> Vec<u8> {
        let repr = Ipv6Repr {
            src_addr: "2001:db8::1".parse().unwrap(),
            dst_addr: "2001:db8::2".parse().unwrap(),
            next_header: next,
            payload_len: ext.len() + upper.len(),
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        };
        let mut buf = vec![0u8; HEADER_LEN];
        repr.emit(&mut buf).unwrap();
        buf.extend_from_slice(ext);
        buf.extend_from_slice(upper);
        buf
    }

    #[test]
    fn fixed_header_round_trip() {
        let buf = packet_with(IpProtocol::UDP, &[], &[0; 8]);
        let packet = Ipv6Packet::new_checked(&buf[..]).unwrap();
        let repr = Ipv6Repr::parse(&packet);
        assert_eq!(repr.traffic_class, 0xb8);
        assert_eq!(repr.flow_label, 0x12345);
        assert_eq!(repr.payload_len, 8);
        let ul = packet.upper_layer().unwrap();
        assert_eq!(ul.protocol, IpProtocol::UDP);
        assert_eq!(ul.offset, 40);
    }

    #[test]
    fn rejects_bad_version_and_length() {
        let mut buf = packet_with(IpProtocol::UDP, &[], &[0; 8]);
        assert!(matches!(
            Ipv6Packet::new_checked(&buf[..47]),
            Err(Error::BadTotalLength { .. })
        ));
        buf[0] = 0x45;
        assert!(matches!(
            Ipv6Packet::new_checked(&buf[..]),
            Err(Error::BadVersion { found: 4, .. })
        ));
    }

    #[test]
    fn walks_hop_by_hop_routing_dest_opts() {
        let mut ext = Vec::new();
        ext.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]); // HBH -> routing, PadN
        ext.extend_from_slice(&[60, 1, 0, 0, 0, 0, 0, 0]); // routing (16 bytes) -> dest opts
        ext.extend_from_slice(&[0; 8]);
        ext.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]); // dest opts -> TCP
        let buf = packet_with(IpProtocol::HOP_BY_HOP, &ext, &[0; 20]);
        let ul = Ipv6Packet::new_checked(&buf[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(ul.protocol, IpProtocol::TCP);
        assert_eq!(ul.offset, 40 + 32);
        assert_eq!(ul.fragment, None);
    }

    #[test]
    fn fragment_header_first_and_later() {
        let first = [17, 0, 0x00, 0x01, 0, 0, 0, 9];
        let buf = packet_with(IpProtocol::IPV6_FRAGMENT, &first, &[0; 8]);
        let ul = Ipv6Packet::new_checked(&buf[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(ul.protocol, IpProtocol::UDP);
        assert_eq!(
            ul.fragment,
            Some(Ipv6Fragment {
                offset: 0,
                more_frags: true,
                ident: 9
            })
        );
        let later = [17, 0, 0x05, 0xa8, 0, 0, 0, 9];
        let buf = packet_with(IpProtocol::IPV6_FRAGMENT, &later, &[0; 8]);
        let ul = Ipv6Packet::new_checked(&buf[..])
            .unwrap()
            .upper_layer()
            .unwrap();
        assert_eq!(ul.fragment.map(|f| f.offset), Some(1448));
        assert_eq!(ul.offset, 48);
    }

    #[test]
    fn truncated_and_looping_extension_headers() {
        let buf = packet_with(IpProtocol::IPV6_DEST_OPTS, &[6, 3, 0, 0, 0, 0, 0, 0], &[]);
        assert!(matches!(
            Ipv6Packet::new_checked(&buf[..]).unwrap().upper_layer(),
            Err(Error::Truncated { .. })
        ));
        let mut ext = Vec::new();
        for _ in 0..10 {
            ext.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        let buf = packet_with(IpProtocol::IPV6_DEST_OPTS, &ext, &[]);
        assert!(matches!(
            Ipv6Packet::new_checked(&buf[..]).unwrap().upper_layer(),
            Err(Error::Unsupported { .. })
        ));
        let buf = packet_with(
            IpProtocol::IPV6_DEST_OPTS,
            &[0, 0, 1, 4, 0, 0, 0, 0],
            &[0; 8],
        );
        assert!(matches!(
            Ipv6Packet::new_checked(&buf[..]).unwrap().upper_layer(),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn hop_limit_decrement() {
        let mut buf = packet_with(IpProtocol::UDP, &[], &[0; 8]);
        let mut packet = Ipv6Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(packet.decrement_hop_limit(), Ok(63));
        packet.set_hop_limit(1);
        assert_eq!(packet.decrement_hop_limit(), Err(Error::TtlExpired));
    }
}
