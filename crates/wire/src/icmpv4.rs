//! ICMP for IPv4 (RFC 792): echo, destination unreachable (with the RFC 1191
//! next-hop MTU), time exceeded; access to the invoking packet quoted in an
//! error, and a builder that emits errors about an offending packet
//! following RFC 1812 §4.3.2.

use core::net::Ipv4Addr;

use crate::checksum;
use crate::error::{need, room, Error, Result};
use crate::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::IpProtocol;

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    /// Echo: identifier and sequence number.
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQNO: Range<usize> = 6..8;
    /// Destination unreachable, code 4: next-hop MTU (RFC 1191 §4).
    pub const NEXT_HOP_MTU: Range<usize> = 6..8;
    pub const DATA: usize = 8;
}

/// Length of the ICMP header (type, code, checksum, 4 bytes of rest-of-header).
pub const HEADER_LEN: usize = field::DATA;

/// Header bytes up to the end of the checksum field.
pub const CHECKSUM_END: usize = field::CHECKSUM.end;

/// Largest datagram an ICMP error may make (RFC 1812 §4.3.2.3).
pub const MAX_ERROR_DATAGRAM: usize = 576;

/// ICMP message type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Icmpv4Type(pub u8);

impl Icmpv4Type {
    /// Echo reply.
    pub const ECHO_REPLY: Self = Self(0);
    /// Destination unreachable.
    pub const DST_UNREACHABLE: Self = Self(3);
    /// Source quench (deprecated, still an error message).
    pub const SOURCE_QUENCH: Self = Self(4);
    /// Redirect.
    pub const REDIRECT: Self = Self(5);
    /// Echo request.
    pub const ECHO_REQUEST: Self = Self(8);
    /// Time exceeded.
    pub const TIME_EXCEEDED: Self = Self(11);
    /// Parameter problem.
    pub const PARAM_PROBLEM: Self = Self(12);

    /// True for the error messages (which quote an invoking packet and must
    /// never themselves provoke an ICMP error, RFC 1812 §4.3.2.7).
    pub const fn is_error(self) -> bool {
        matches!(self.0, 3 | 4 | 5 | 11 | 12)
    }
}

/// Destination-unreachable codes (RFC 792, RFC 1812 §5.2.7.1).
pub mod unreachable {
    /// Network unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Protocol unreachable.
    pub const PROTOCOL: u8 = 2;
    /// Port unreachable.
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set (carries the next-hop MTU, RFC 1191).
    pub const FRAG_NEEDED: u8 = 4;
    /// Communication administratively prohibited (RFC 1812).
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Time-exceeded codes.
pub mod time_exceeded {
    /// TTL exceeded in transit.
    pub const TTL: u8 = 0;
    /// Fragment reassembly time exceeded.
    pub const REASSEMBLY: u8 = 1;
}

/// A read/write view of an ICMPv4 message.
#[derive(Debug, Clone)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer holding at least the 8-byte header. The message runs
    /// to the end of the buffer: pass exactly the IP payload.
    pub fn new_checked(buffer: T) -> Result<Self> {
        need("icmpv4 header", buffer.as_ref(), HEADER_LEN)?;
        Ok(Self { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn word(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// Message type.
    pub fn msg_type(&self) -> Icmpv4Type {
        Icmpv4Type(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        self.word(field::CHECKSUM.start)
    }

    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        self.word(field::ECHO_IDENT.start)
    }

    /// Echo sequence number.
    pub fn echo_seq_no(&self) -> u16 {
        self.word(field::ECHO_SEQNO.start)
    }

    /// Next-hop MTU of a "fragmentation needed" message (0 from routers
    /// predating RFC 1191).
    pub fn next_hop_mtu(&self) -> u16 {
        self.word(field::NEXT_HOP_MTU.start)
    }

    /// Bytes after the 8-byte header: echo data or the invoking packet.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// True when the checksum over the whole message verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buffer.as_ref()) == 0xffff
    }

    /// The invoking packet quoted by an error message: its IP header must be
    /// complete; its payload is whatever was quoted (at least 8 bytes from a
    /// conforming sender, RFC 792).
    pub fn invoking_packet(&self) -> Result<Ipv4Packet<&[u8]>> {
        self.require_error()?;
        Ipv4Packet::new_header_checked(self.data())
    }

    fn require_error(&self) -> Result<()> {
        if self.msg_type().is_error() {
            Ok(())
        } else {
            Err(Error::Malformed {
                what: "icmpv4",
                reason: "not an error message",
            })
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    fn set_word(&mut self, at: usize, value: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets type and code.
    pub fn set_type_code(&mut self, msg_type: Icmpv4Type, code: u8) {
        let b = self.buffer.as_mut();
        b[field::TYPE] = msg_type.0;
        b[field::CODE] = code;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        self.set_word(field::CHECKSUM.start, value);
    }

    /// Sets the echo identifier (checksum not updated).
    pub fn set_echo_ident(&mut self, ident: u16) {
        self.set_word(field::ECHO_IDENT.start, ident);
    }

    /// Sets the four rest-of-header bytes from two words.
    pub fn set_rest_of_header(&mut self, hi: u16, lo: u16) {
        self.set_word(field::ECHO_IDENT.start, hi);
        self.set_word(field::ECHO_SEQNO.start, lo);
    }

    /// Recomputes the checksum over the whole message.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Mutable data after the header.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Mutable view of the invoking packet of an error message, for the
    /// address and port translation of RFC 5508 §4.2.
    pub fn invoking_packet_mut(&mut self) -> Result<Ipv4Packet<&mut [u8]>> {
        self.require_error()?;
        Ipv4Packet::new_header_checked(&mut self.buffer.as_mut()[field::DATA..])
    }

    /// Turns an echo request into an echo reply in place (type 8 → 0) with
    /// an incremental checksum update; ident, sequence and data are kept as
    /// RFC 792 requires. The caller swaps the IP addresses.
    pub fn make_echo_reply(&mut self) -> Result<()> {
        if self.msg_type() != Icmpv4Type::ECHO_REQUEST || self.code() != 0 {
            return Err(Error::Malformed {
                what: "icmpv4",
                reason: "not an echo request",
            });
        }
        let old = u16::from_be_bytes([Icmpv4Type::ECHO_REQUEST.0, 0]);
        let new = u16::from_be_bytes([Icmpv4Type::ECHO_REPLY.0, 0]);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_type_code(Icmpv4Type::ECHO_REPLY, 0);
        self.set_checksum(c);
        Ok(())
    }
}

/// An ICMPv4 message in meaning form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Icmpv4Repr<'a> {
    /// Echo request.
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Echo reply.
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Destination unreachable; `next_hop_mtu` is meaningful for code 4.
    DstUnreachable {
        /// Code (see [`unreachable`]).
        code: u8,
        /// Next-hop MTU (RFC 1191), 0 otherwise.
        next_hop_mtu: u16,
        /// Quoted invoking packet.
        invoking: &'a [u8],
    },
    /// Time exceeded.
    TimeExceeded {
        /// Code (see [`time_exceeded`]).
        code: u8,
        /// Quoted invoking packet.
        invoking: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Parses a checked message, verifying its checksum.
    pub fn parse(packet: &Icmpv4Packet<&'a [u8]>) -> Result<Self> {
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum { what: "icmpv4" });
        }
        let data: &'a [u8] = &packet.buffer[field::DATA..];
        match (packet.msg_type(), packet.code()) {
            (Icmpv4Type::ECHO_REQUEST, 0) => Ok(Self::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            (Icmpv4Type::ECHO_REPLY, 0) => Ok(Self::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            (Icmpv4Type::DST_UNREACHABLE, code) => Ok(Self::DstUnreachable {
                code,
                next_hop_mtu: if code == unreachable::FRAG_NEEDED {
                    packet.next_hop_mtu()
                } else {
                    0
                },
                invoking: data,
            }),
            (Icmpv4Type::TIME_EXCEEDED, code) => Ok(Self::TimeExceeded {
                code,
                invoking: data,
            }),
            _ => Err(Error::Unsupported {
                what: "icmpv4",
                reason: "message type",
            }),
        }
    }

    /// Length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Self::EchoRequest { data, .. } | Self::EchoReply { data, .. } => data.len(),
                Self::DstUnreachable { invoking, .. } | Self::TimeExceeded { invoking, .. } => {
                    invoking.len()
                }
            }
    }

    /// Writes the message (with checksum) at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        room(buf, len)?;
        let mut packet = Icmpv4Packet::new_unchecked(&mut buf[..len]);
        let (ty, code, hi, lo, data) = match *self {
            Self::EchoRequest {
                ident,
                seq_no,
                data,
            } => (Icmpv4Type::ECHO_REQUEST, 0, ident, seq_no, data),
            Self::EchoReply {
                ident,
                seq_no,
                data,
            } => (Icmpv4Type::ECHO_REPLY, 0, ident, seq_no, data),
            Self::DstUnreachable {
                code,
                next_hop_mtu,
                invoking,
            } => (Icmpv4Type::DST_UNREACHABLE, code, 0, next_hop_mtu, invoking),
            Self::TimeExceeded { code, invoking } => {
                (Icmpv4Type::TIME_EXCEEDED, code, 0, 0, invoking)
            }
        };
        packet.set_type_code(ty, code);
        packet.set_rest_of_header(hi, lo);
        packet.data_mut().copy_from_slice(data);
        packet.fill_checksum();
        Ok(len)
    }
}

/// Which ICMP error to send about an offending packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Icmpv4Error {
    /// Destination unreachable with the given code (not 4; use
    /// [`Icmpv4Error::FragmentationNeeded`]).
    DstUnreachable(u8),
    /// Fragmentation needed and DF set, with the next-hop MTU (RFC 1191 §4).
    FragmentationNeeded {
        /// MTU of the link the packet could not cross.
        next_hop_mtu: u16,
    },
    /// Time exceeded with the given code.
    TimeExceeded(u8),
}

/// Source addresses an ICMP error must not be sent to (RFC 1812 §4.3.2.7:
/// unspecified, loopback, multicast, limited broadcast, class E).
fn invalid_error_destination(addr: Ipv4Addr) -> bool {
    addr.is_unspecified()
        || addr.is_loopback()
        || addr.is_multicast()
        || addr.is_broadcast()
        || addr.octets()[0] >= 240
}

/// Emits into `out` a complete IPv4 datagram carrying an ICMP error about
/// `offending` (an IPv4 packet starting at its header) and returns its length.
///
/// `router_addr` becomes the source and the offending source the
/// destination. The quote holds as much of the offending datagram as keeps
/// the error within 576 bytes (RFC 1812 §4.3.2.3). Errors are refused, with
/// [`Error::IcmpErrorSuppressed`], about ICMP error messages, non-initial
/// fragments, packets to a multicast or broadcast address, and packets whose
/// source is not a unicast host (RFC 1812 §4.3.2.7).
pub fn emit_icmpv4_error(
    offending: &[u8],
    error: Icmpv4Error,
    router_addr: Ipv4Addr,
    ttl: u8,
    out: &mut [u8],
) -> Result<usize> {
    let packet = Ipv4Packet::new_checked(offending)?;
    if packet.is_non_initial_fragment() {
        return Err(Error::IcmpErrorSuppressed {
            reason: "non-initial fragment",
        });
    }
    if packet.protocol() == IpProtocol::ICMP {
        // The type is the first payload byte; a missing type quotes nothing harmful.
        if let Some(&ty) = packet.payload().first() {
            if Icmpv4Type(ty).is_error() {
                return Err(Error::IcmpErrorSuppressed {
                    reason: "offending packet is an ICMP error",
                });
            }
        }
    }
    let dst = packet.dst_addr();
    if dst.is_multicast() || dst.is_broadcast() {
        return Err(Error::IcmpErrorSuppressed {
            reason: "destination is multicast or broadcast",
        });
    }
    let src = packet.src_addr();
    if invalid_error_destination(src) {
        return Err(Error::IcmpErrorSuppressed {
            reason: "source is not a unicast host",
        });
    }

    let original = &offending[..usize::from(packet.total_len())];
    let quote_len = original
        .len()
        .min(MAX_ERROR_DATAGRAM - ipv4::HEADER_LEN - HEADER_LEN);
    let icmp = match error {
        Icmpv4Error::DstUnreachable(code) => Icmpv4Repr::DstUnreachable {
            code,
            next_hop_mtu: 0,
            invoking: &original[..quote_len],
        },
        Icmpv4Error::FragmentationNeeded { next_hop_mtu } => Icmpv4Repr::DstUnreachable {
            code: unreachable::FRAG_NEEDED,
            next_hop_mtu,
            invoking: &original[..quote_len],
        },
        Icmpv4Error::TimeExceeded(code) => Icmpv4Repr::TimeExceeded {
            code,
            invoking: &original[..quote_len],
        },
    };
    let ip = Ipv4Repr {
        src_addr: router_addr,
        dst_addr: src,
        protocol: IpProtocol::ICMP,
        payload_len: icmp.buffer_len(),
        ttl,
        // Internetwork control precedence, as routers send their errors (RFC 1812 §4.3.2.5).
        dscp: 0x30,
        ecn: 0,
        ident: 0,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    };
    let total = ipv4::HEADER_LEN + icmp.buffer_len();
    room(out, total)?;
    let header_len = ip.emit(out)?;
    icmp.emit(&mut out[header_len..])?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{UdpPacket, UdpRepr};

    const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);

    fn udp_packet(payload_len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; 28 + payload_len];
        Ipv4Repr {
            src_addr: HOST,
            dst_addr: SERVER,
            protocol: IpProtocol::UDP,
            payload_len: 8 + payload_len,
            ttl: 1,
            dscp: 0,
            ecn: 0,
            ident: 77,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        }
        .emit(&mut buf)
        .unwrap();
        UdpRepr {
            src_port: 33434,
            dst_port: 53,
        }
        .emit(&mut buf[20..], payload_len)
        .unwrap();
        for (i, b) in buf[28..].iter_mut().enumerate() {
            *b = i as u8;
        }
        UdpPacket::new_checked(&mut buf[20..])
            .unwrap()
            .fill_checksum_v4(HOST, SERVER);
        buf
    }

    #[test]
    fn echo_round_trip_and_in_place_reply() {
        let repr = Icmpv4Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 9,
            data: b"abcdefgh",
        };
        let mut buf = [0u8; 16];
        assert_eq!(repr.emit(&mut buf).unwrap(), 16);
        let packet = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&packet).unwrap(), repr);

        let mut packet = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        packet.make_echo_reply().unwrap();
        assert!(packet.verify_checksum());
        assert!(packet.make_echo_reply().is_err());
        let packet = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            Icmpv4Repr::parse(&packet).unwrap(),
            Icmpv4Repr::EchoReply {
                ident: 0x1234,
                seq_no: 9,
                data: b"abcdefgh"
            }
        );
    }

    #[test]
    fn bad_checksum_and_short() {
        let mut buf = [8u8, 0, 0, 0, 0, 1, 0, 1];
        assert!(matches!(
            Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&buf[..]).unwrap()),
            Err(Error::BadChecksum { .. })
        ));
        Icmpv4Packet::new_unchecked(&mut buf[..]).fill_checksum();
        assert!(Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&buf[..]).unwrap()).is_ok());
        assert!(Icmpv4Packet::new_checked(&buf[..7]).is_err());
    }

    #[test]
    fn time_exceeded_quotes_whole_small_packet() {
        let offending = udp_packet(12);
        let mut out = [0u8; 600];
        let n = emit_icmpv4_error(
            &offending,
            Icmpv4Error::TimeExceeded(time_exceeded::TTL),
            ROUTER,
            64,
            &mut out,
        )
        .unwrap();
        assert_eq!(n, 28 + offending.len());
        let ip = Ipv4Packet::new_checked(&out[..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), ROUTER);
        assert_eq!(ip.dst_addr(), HOST);
        assert_eq!(ip.protocol(), IpProtocol::ICMP);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.msg_type(), Icmpv4Type::TIME_EXCEEDED);
        let inner = icmp.invoking_packet().unwrap();
        assert_eq!(inner.src_addr(), HOST);
        assert_eq!(inner.dst_addr(), SERVER);
        let udp = UdpPacket::new_checked(inner.payload()).unwrap();
        assert_eq!(udp.src_port(), 33434);
    }

    #[test]
    fn frag_needed_is_capped_at_576_and_carries_mtu() {
        let offending = udp_packet(1400);
        let mut out = [0u8; 1500];
        let n = emit_icmpv4_error(
            &offending,
            Icmpv4Error::FragmentationNeeded { next_hop_mtu: 1400 },
            ROUTER,
            64,
            &mut out,
        )
        .unwrap();
        assert_eq!(n, MAX_ERROR_DATAGRAM);
        let ip = Ipv4Packet::new_checked(&out[..n]).unwrap();
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        match Icmpv4Repr::parse(&icmp).unwrap() {
            Icmpv4Repr::DstUnreachable {
                code,
                next_hop_mtu,
                invoking,
            } => {
                assert_eq!(code, unreachable::FRAG_NEEDED);
                assert_eq!(next_hop_mtu, 1400);
                assert_eq!(invoking, &offending[..548]);
            }
            other => panic!("unexpected {other:?}"),
        }
        // The quoted header still reports the original total length.
        let inner = icmp.invoking_packet().unwrap();
        assert_eq!(usize::from(inner.total_len()), offending.len());
        assert_eq!(inner.payload().len(), 548 - 20);
    }

    #[test]
    fn errors_are_suppressed_where_rfc1812_forbids() {
        let mut out = [0u8; 600];
        let kind = Icmpv4Error::DstUnreachable(unreachable::HOST);
        // Non-initial fragment.
        let mut frag = udp_packet(8);
        {
            let mut p = Ipv4Packet::new_checked(&mut frag[..]).unwrap();
            p.set_frag(false, false, 8);
            p.fill_checksum();
        }
        assert!(matches!(
            emit_icmpv4_error(&frag, kind, ROUTER, 64, &mut out),
            Err(Error::IcmpErrorSuppressed { .. })
        ));
        // An ICMP error about an ICMP error.
        let first = udp_packet(8);
        let n = emit_icmpv4_error(&first, kind, ROUTER, 64, &mut out).unwrap();
        let error_packet = out[..n].to_vec();
        assert!(matches!(
            emit_icmpv4_error(&error_packet, kind, ROUTER, 64, &mut out),
            Err(Error::IcmpErrorSuppressed { .. })
        ));
        // Multicast destination, broadcast or loopback source.
        for (src, dst) in [
            (HOST, Ipv4Addr::new(224, 0, 0, 5)),
            (HOST, Ipv4Addr::BROADCAST),
            (Ipv4Addr::LOCALHOST, SERVER),
            (Ipv4Addr::UNSPECIFIED, SERVER),
        ] {
            let mut p = udp_packet(8);
            let mut v = Ipv4Packet::new_checked(&mut p[..]).unwrap();
            v.set_src_addr(src);
            v.set_dst_addr(dst);
            v.fill_checksum();
            assert!(matches!(
                emit_icmpv4_error(&p, kind, ROUTER, 64, &mut out),
                Err(Error::IcmpErrorSuppressed { .. })
            ));
        }
        // An echo request may provoke an error.
        let mut echo = udp_packet(8);
        {
            let mut v = Ipv4Packet::new_checked(&mut echo[..]).unwrap();
            v.set_protocol(IpProtocol::ICMP);
            v.fill_checksum();
        }
        echo[20] = 8;
        assert!(emit_icmpv4_error(&echo, kind, ROUTER, 64, &mut out).is_ok());
        // Too small an output buffer.
        assert!(matches!(
            emit_icmpv4_error(&first, kind, ROUTER, 64, &mut out[..40]),
            Err(Error::BufferTooSmall { .. })
        ));
    }

    #[test]
    fn invoking_packet_of_non_error_is_refused() {
        let buf = [8u8, 0, 0xf7, 0xff, 0, 0, 0, 0];
        let packet = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert!(packet.invoking_packet().is_err());
    }
}
