//! ICMPv6 (RFC 4443) basics and Neighbor Discovery solicitation /
//! advertisement (RFC 4861 §4.3–4.4) with link-layer address options.
//! The checksum covers the IPv6 pseudo-header (RFC 4443 §2.3).

use core::net::Ipv6Addr;

use crate::checksum;
use crate::error::{need, room, Error, Result};
use crate::ethernet::EthernetAddress;
use crate::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::IpProtocol;

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQNO: Range<usize> = 6..8;
    pub const MTU: Range<usize> = 4..8;
    pub const NA_FLAGS: usize = 4;
    pub const DATA: usize = 8;
    /// Target address of NS/NA.
    pub const TARGET: Range<usize> = 8..24;
    pub const ND_OPTIONS: usize = 24;
}

/// Length of the ICMPv6 header.
pub const HEADER_LEN: usize = field::DATA;
/// Length of an NS/NA message without options.
pub const ND_LEN: usize = field::ND_OPTIONS;
/// IPv6 minimum MTU: an error must not make a packet larger (RFC 4443 §2.4(c)).
pub const MIN_MTU: usize = 1280;

const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;
const LLADDR_OPT_LEN: usize = 8;

const NA_ROUTER: u8 = 0x80;
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;

/// ICMPv6 message type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Icmpv6Type(pub u8);

impl Icmpv6Type {
    /// Destination unreachable.
    pub const DST_UNREACHABLE: Self = Self(1);
    /// Packet too big.
    pub const PACKET_TOO_BIG: Self = Self(2);
    /// Time exceeded.
    pub const TIME_EXCEEDED: Self = Self(3);
    /// Parameter problem.
    pub const PARAM_PROBLEM: Self = Self(4);
    /// Echo request.
    pub const ECHO_REQUEST: Self = Self(128);
    /// Echo reply.
    pub const ECHO_REPLY: Self = Self(129);
    /// Neighbor solicitation.
    pub const NEIGHBOR_SOLICIT: Self = Self(135);
    /// Neighbor advertisement.
    pub const NEIGHBOR_ADVERT: Self = Self(136);

    /// Error messages have the high bit clear (RFC 4443 §2.1).
    pub const fn is_error(self) -> bool {
        self.0 < 128
    }
}

/// A read/write view of an ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer holding at least the 8-byte header, and for neighbor
    /// discovery messages the 16-byte target address. The message runs to
    /// the end of the buffer.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let buf = buffer.as_ref();
        need("icmpv6 header", buf, HEADER_LEN)?;
        let ty = Icmpv6Type(buf[field::TYPE]);
        if ty == Icmpv6Type::NEIGHBOR_SOLICIT || ty == Icmpv6Type::NEIGHBOR_ADVERT {
            need("neighbor discovery message", buf, ND_LEN)?;
        }
        Ok(Self { buffer })
    }

    fn word(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// Message type.
    pub fn msg_type(&self) -> Icmpv6Type {
        Icmpv6Type(self.buffer.as_ref()[field::TYPE])
    }

    /// Code.
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

    /// MTU of a packet-too-big message.
    pub fn mtu(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::MTU];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Bytes after the 8-byte header.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    fn is_nd(&self) -> bool {
        let ty = self.msg_type();
        (ty == Icmpv6Type::NEIGHBOR_SOLICIT || ty == Icmpv6Type::NEIGHBOR_ADVERT)
            && self.buffer.as_ref().len() >= ND_LEN
    }

    /// Target address of a neighbor solicitation or advertisement.
    pub fn target_addr(&self) -> Option<Ipv6Addr> {
        if !self.is_nd() {
            return None;
        }
        let mut o = [0u8; 16];
        o.copy_from_slice(&self.buffer.as_ref()[field::TARGET]);
        Some(Ipv6Addr::from(o))
    }

    /// Router, Solicited and Override flags of an advertisement.
    pub fn advert_flags(&self) -> NeighborFlags {
        let b = self.buffer.as_ref()[field::NA_FLAGS];
        NeighborFlags {
            router: b & NA_ROUTER != 0,
            solicited: b & NA_SOLICITED != 0,
            override_: b & NA_OVERRIDE != 0,
        }
    }

    /// The link-layer address option of an NS (source) or NA (target).
    /// Malformed options (length 0, running past the end) make the whole
    /// message invalid (RFC 4861 §7.1.1).
    pub fn link_layer_addr(&self) -> Result<Option<EthernetAddress>> {
        if !self.is_nd() {
            return Ok(None);
        }
        let wanted = if self.msg_type() == Icmpv6Type::NEIGHBOR_SOLICIT {
            OPT_SOURCE_LLADDR
        } else {
            OPT_TARGET_LLADDR
        };
        let mut options = &self.buffer.as_ref()[field::ND_OPTIONS..];
        let mut found = None;
        while !options.is_empty() {
            need("nd option", options, 2)?;
            let len = usize::from(options[1]) * 8;
            if len == 0 {
                return Err(Error::Malformed {
                    what: "nd option",
                    reason: "zero length",
                });
            }
            need("nd option", options, len)?;
            if options[0] == wanted && len == LLADDR_OPT_LEN && found.is_none() {
                found = Some(EthernetAddress::from_bytes(&options[2..8])?);
            }
            options = &options[len..];
        }
        Ok(found)
    }

    /// The invoking packet quoted by an error message.
    pub fn invoking_packet(&self) -> Result<Ipv6Packet<&[u8]>> {
        if !self.msg_type().is_error() {
            return Err(Error::Malformed {
                what: "icmpv6",
                reason: "not an error message",
            });
        }
        Ipv6Packet::new_header_checked(self.data())
    }

    /// Verifies the checksum over the IPv6 pseudo-header.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let buf = self.buffer.as_ref();
        let Ok(len) = u32::try_from(buf.len()) else {
            return false;
        };
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, len);
        checksum::add(ph, checksum::sum(buf)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Computes and stores the checksum over the IPv6 pseudo-header.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let buf = self.buffer.as_ref();
        // Messages are bounded by the IPv6 payload length (16 bits) in practice.
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, len);
        let c = !checksum::add(ph, checksum::sum(buf));
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

/// Flags of a neighbor advertisement.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct NeighborFlags {
    /// Sender is a router.
    pub router: bool,
    /// Sent in response to a solicitation.
    pub solicited: bool,
    /// Override an existing cache entry.
    pub override_: bool,
}

/// An ICMPv6 message in meaning form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Icmpv6Repr<'a> {
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
    /// Destination unreachable.
    DstUnreachable {
        /// Code (0 no route, 1 prohibited, 3 address, 4 port, ...).
        code: u8,
        /// Quoted invoking packet.
        invoking: &'a [u8],
    },
    /// Packet too big (RFC 8201 path-MTU discovery).
    PacketTooBig {
        /// MTU of the next hop.
        mtu: u32,
        /// Quoted invoking packet.
        invoking: &'a [u8],
    },
    /// Time exceeded.
    TimeExceeded {
        /// Code (0 hop limit, 1 reassembly).
        code: u8,
        /// Quoted invoking packet.
        invoking: &'a [u8],
    },
    /// Neighbor solicitation.
    NeighborSolicit {
        /// Address being resolved.
        target: Ipv6Addr,
        /// Sender's link-layer address (absent for DAD probes).
        source_lladdr: Option<EthernetAddress>,
    },
    /// Neighbor advertisement.
    NeighborAdvert {
        /// Flags.
        flags: NeighborFlags,
        /// Address advertised.
        target: Ipv6Addr,
        /// Link-layer address of the target.
        target_lladdr: Option<EthernetAddress>,
    },
}

impl<'a> Icmpv6Repr<'a> {
    /// Parses a checked message carried from `src` to `dst`, verifying the checksum.
    pub fn parse(packet: &Icmpv6Packet<&'a [u8]>, src: Ipv6Addr, dst: Ipv6Addr) -> Result<Self> {
        if !packet.verify_checksum(src, dst) {
            return Err(Error::BadChecksum { what: "icmpv6" });
        }
        let data: &'a [u8] = &packet.buffer[field::DATA..];
        let code = packet.code();
        Ok(match packet.msg_type() {
            Icmpv6Type::ECHO_REQUEST => Self::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            Icmpv6Type::ECHO_REPLY => Self::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            Icmpv6Type::DST_UNREACHABLE => Self::DstUnreachable {
                code,
                invoking: data,
            },
            Icmpv6Type::PACKET_TOO_BIG => Self::PacketTooBig {
                mtu: packet.mtu(),
                invoking: data,
            },
            Icmpv6Type::TIME_EXCEEDED => Self::TimeExceeded {
                code,
                invoking: data,
            },
            Icmpv6Type::NEIGHBOR_SOLICIT | Icmpv6Type::NEIGHBOR_ADVERT => {
                // RFC 4861 §7.1: ND messages carry code 0.
                if code != 0 {
                    return Err(Error::Malformed {
                        what: "neighbor discovery",
                        reason: "non-zero code",
                    });
                }
                let target = packet.target_addr().ok_or(Error::Truncated {
                    what: "neighbor discovery message",
                    needed: ND_LEN,
                    available: packet.buffer.len(),
                })?;
                let lladdr = packet.link_layer_addr()?;
                if packet.msg_type() == Icmpv6Type::NEIGHBOR_SOLICIT {
                    Self::NeighborSolicit {
                        target,
                        source_lladdr: lladdr,
                    }
                } else {
                    Self::NeighborAdvert {
                        flags: packet.advert_flags(),
                        target,
                        target_lladdr: lladdr,
                    }
                }
            }
            _ => {
                return Err(Error::Unsupported {
                    what: "icmpv6",
                    reason: "message type",
                })
            }
        })
    }

    /// Length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        match self {
            Self::EchoRequest { data, .. } | Self::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Self::DstUnreachable { invoking, .. }
            | Self::PacketTooBig { invoking, .. }
            | Self::TimeExceeded { invoking, .. } => HEADER_LEN + invoking.len(),
            Self::NeighborSolicit {
                source_lladdr: l, ..
            }
            | Self::NeighborAdvert {
                target_lladdr: l, ..
            } => ND_LEN + if l.is_some() { LLADDR_OPT_LEN } else { 0 },
        }
    }

    /// Writes the message with its checksum for a packet from `src` to `dst`;
    /// returns its length.
    pub fn emit(&self, buf: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> Result<usize> {
        let len = self.buffer_len();
        room(buf, len)?;
        let b = &mut buf[..len];
        b[..HEADER_LEN].fill(0);
        let mut body = |ty: Icmpv6Type, code: u8, rest: [u8; 4], data: &[u8]| {
            b[field::TYPE] = ty.0;
            b[field::CODE] = code;
            b[4..8].copy_from_slice(&rest);
            b[field::DATA..field::DATA + data.len()].copy_from_slice(data);
        };
        let echo_rest = |ident: u16, seq: u16| {
            let [a, b] = ident.to_be_bytes();
            let [c, d] = seq.to_be_bytes();
            [a, b, c, d]
        };
        match *self {
            Self::EchoRequest {
                ident,
                seq_no,
                data,
            } => body(Icmpv6Type::ECHO_REQUEST, 0, echo_rest(ident, seq_no), data),
            Self::EchoReply {
                ident,
                seq_no,
                data,
            } => body(Icmpv6Type::ECHO_REPLY, 0, echo_rest(ident, seq_no), data),
            Self::DstUnreachable { code, invoking } => {
                body(Icmpv6Type::DST_UNREACHABLE, code, [0; 4], invoking)
            }
            Self::PacketTooBig { mtu, invoking } => {
                body(Icmpv6Type::PACKET_TOO_BIG, 0, mtu.to_be_bytes(), invoking)
            }
            Self::TimeExceeded { code, invoking } => {
                body(Icmpv6Type::TIME_EXCEEDED, code, [0; 4], invoking)
            }
            Self::NeighborSolicit {
                target,
                source_lladdr,
            } => {
                body(Icmpv6Type::NEIGHBOR_SOLICIT, 0, [0; 4], &target.octets());
                if let Some(mac) = source_lladdr {
                    write_lladdr(&mut b[ND_LEN..], OPT_SOURCE_LLADDR, mac);
                }
            }
            Self::NeighborAdvert {
                flags,
                target,
                target_lladdr,
            } => {
                let mut f = 0u8;
                if flags.router {
                    f |= NA_ROUTER;
                }
                if flags.solicited {
                    f |= NA_SOLICITED;
                }
                if flags.override_ {
                    f |= NA_OVERRIDE;
                }
                body(
                    Icmpv6Type::NEIGHBOR_ADVERT,
                    0,
                    [f, 0, 0, 0],
                    &target.octets(),
                );
                if let Some(mac) = target_lladdr {
                    write_lladdr(&mut b[ND_LEN..], OPT_TARGET_LLADDR, mac);
                }
            }
        }
        Icmpv6Packet::new_unchecked(&mut b[..]).fill_checksum(src, dst);
        Ok(len)
    }
}

fn write_lladdr(b: &mut [u8], kind: u8, mac: EthernetAddress) {
    b[0] = kind;
    b[1] = (LLADDR_OPT_LEN / 8) as u8;
    b[2..8].copy_from_slice(&mac.0);
}

/// Which ICMPv6 error to send about an offending packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Icmpv6Error {
    /// Destination unreachable with the given code.
    DstUnreachable(u8),
    /// Packet too big, with the next-hop MTU.
    PacketTooBig {
        /// MTU of the link the packet could not cross.
        mtu: u32,
    },
    /// Time exceeded with the given code.
    TimeExceeded(u8),
}

/// Emits into `out` a complete IPv6 packet carrying an ICMPv6 error about
/// `offending` and returns its length. The quote is cut so the result fits
/// the IPv6 minimum MTU (RFC 4443 §2.4(c)). Suppressed (RFC 4443 §2.4(e)):
/// errors about ICMPv6 errors, about packets to a multicast address (except
/// packet-too-big), and about packets from the unspecified or a multicast
/// source.
pub fn emit_icmpv6_error(
    offending: &[u8],
    error: Icmpv6Error,
    router_addr: Ipv6Addr,
    hop_limit: u8,
    out: &mut [u8],
) -> Result<usize> {
    let packet = Ipv6Packet::new_checked(offending)?;
    let src = packet.src_addr();
    if src.is_unspecified() || src.is_multicast() {
        return Err(Error::IcmpErrorSuppressed {
            reason: "source is not a unicast host",
        });
    }
    if packet.dst_addr().is_multicast() && !matches!(error, Icmpv6Error::PacketTooBig { .. }) {
        return Err(Error::IcmpErrorSuppressed {
            reason: "destination is multicast",
        });
    }
    if let Ok(ul) = packet.upper_layer() {
        let first_fragment = ul.fragment.is_none_or(|f| f.offset == 0);
        if ul.protocol == IpProtocol::ICMPV6 && first_fragment {
            match offending.get(ul.offset) {
                Some(&ty) if Icmpv6Type(ty).is_error() => {
                    return Err(Error::IcmpErrorSuppressed {
                        reason: "offending packet is an ICMPv6 error",
                    })
                }
                _ => {}
            }
        }
    }
    let original = &offending[..ipv6::HEADER_LEN + usize::from(packet.payload_len())];
    let invoking = &original[..original.len().min(MIN_MTU - ipv6::HEADER_LEN - HEADER_LEN)];
    let icmp = match error {
        Icmpv6Error::DstUnreachable(code) => Icmpv6Repr::DstUnreachable { code, invoking },
        Icmpv6Error::PacketTooBig { mtu } => Icmpv6Repr::PacketTooBig { mtu, invoking },
        Icmpv6Error::TimeExceeded(code) => Icmpv6Repr::TimeExceeded { code, invoking },
    };
    let icmp_len = icmp.buffer_len();
    let total = ipv6::HEADER_LEN + icmp_len;
    room(out, total)?;
    Ipv6Repr {
        src_addr: router_addr,
        dst_addr: src,
        next_header: IpProtocol::ICMPV6,
        payload_len: icmp_len,
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(out)?;
    icmp.emit(&mut out[ipv6::HEADER_LEN..total], router_addr, src)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn echo_round_trip_with_pseudo_header() {
        let (src, dst) = (a("2001:db8::1"), a("2001:db8::2"));
        let repr = Icmpv6Repr::EchoRequest {
            ident: 7,
            seq_no: 1,
            data: b"hello",
        };
        let mut buf = [0u8; 13];
        repr.emit(&mut buf, src, dst).unwrap();
        let packet = Icmpv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&packet, src, dst).unwrap(), repr);
        // The pseudo-header is covered: another destination fails.
        assert!(matches!(
            Icmpv6Repr::parse(&packet, src, a("2001:db8::3")),
            Err(Error::BadChecksum { .. })
        ));
    }

    #[test]
    fn neighbor_solicit_and_advert() {
        let mac = EthernetAddress([0x02, 0, 0, 0, 0, 9]);
        let (src, dst) = (a("fe80::1"), a("ff02::1:ff00:2"));
        let ns = Icmpv6Repr::NeighborSolicit {
            target: a("fe80::2"),
            source_lladdr: Some(mac),
        };
        let mut buf = [0u8; 32];
        assert_eq!(ns.emit(&mut buf, src, dst).unwrap(), 32);
        assert_eq!(&buf[24..26], &[1, 1]);
        let packet = Icmpv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&packet, src, dst).unwrap(), ns);

        let na = Icmpv6Repr::NeighborAdvert {
            flags: NeighborFlags {
                router: false,
                solicited: true,
                override_: true,
            },
            target: a("fe80::2"),
            target_lladdr: Some(mac),
        };
        na.emit(&mut buf, a("fe80::2"), src).unwrap();
        assert_eq!(buf[4], 0x60);
        let packet = Icmpv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Icmpv6Repr::parse(&packet, a("fe80::2"), src).unwrap(), na);
    }

    #[test]
    fn nd_option_errors() {
        let (src, dst) = (a("fe80::1"), a("fe80::2"));
        let mut buf = [0u8; 32];
        Icmpv6Repr::NeighborSolicit {
            target: dst,
            source_lladdr: Some(EthernetAddress([2, 0, 0, 0, 0, 1])),
        }
        .emit(&mut buf, src, dst)
        .unwrap();
        buf[25] = 0;
        let packet = Icmpv6Packet::new_checked(&buf[..]).unwrap();
        assert!(packet.link_layer_addr().is_err());
        buf[25] = 2;
        let packet = Icmpv6Packet::new_checked(&buf[..]).unwrap();
        assert!(matches!(
            packet.link_layer_addr(),
            Err(Error::Truncated { .. })
        ));
        assert!(Icmpv6Packet::new_checked(&buf[..20]).is_err());
    }

    fn udp6(payload: usize) -> Vec<u8> {
        let mut buf = vec![0u8; 40 + 8 + payload];
        Ipv6Repr {
            src_addr: a("2001:db8:1::10"),
            dst_addr: a("2001:db8:2::20"),
            next_header: IpProtocol::UDP,
            payload_len: 8 + payload,
            hop_limit: 1,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut buf)
        .unwrap();
        buf
    }

    #[test]
    fn packet_too_big_capped_at_minimum_mtu() {
        let router = a("2001:db8:1::1");
        let offending = udp6(1400);
        let mut out = [0u8; 1500];
        let n = emit_icmpv6_error(
            &offending,
            Icmpv6Error::PacketTooBig { mtu: 1400 },
            router,
            64,
            &mut out,
        )
        .unwrap();
        assert_eq!(n, MIN_MTU);
        let ip = Ipv6Packet::new_checked(&out[..n]).unwrap();
        assert_eq!(ip.dst_addr(), a("2001:db8:1::10"));
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(router, ip.dst_addr()));
        assert_eq!(icmp.mtu(), 1400);
        let inner = icmp.invoking_packet().unwrap();
        assert_eq!(inner.dst_addr(), a("2001:db8:2::20"));

        // No error about that error.
        let error_packet = out[..n].to_vec();
        assert!(matches!(
            emit_icmpv6_error(
                &error_packet,
                Icmpv6Error::TimeExceeded(0),
                router,
                64,
                &mut out
            ),
            Err(Error::IcmpErrorSuppressed { .. })
        ));
    }

    #[test]
    fn multicast_destination_only_gets_packet_too_big() {
        let mut offending = udp6(8);
        offending[24..40].copy_from_slice(&a("ff0e::1").octets());
        let mut out = [0u8; 200];
        let router = a("2001:db8::1");
        assert!(emit_icmpv6_error(
            &offending,
            Icmpv6Error::DstUnreachable(0),
            router,
            64,
            &mut out
        )
        .is_err());
        assert!(emit_icmpv6_error(
            &offending,
            Icmpv6Error::PacketTooBig { mtu: 1280 },
            router,
            64,
            &mut out
        )
        .is_ok());
    }
}
