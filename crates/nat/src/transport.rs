//! Transport header fields the translator reads and rewrites: TCP and UDP
//! ports, the TCP flags, ICMP type and echo identifier, and where each
//! protocol keeps its checksum.
//!
//! `strait-wire` has the IPv4 and UDP views and the RFC 1624 checksum
//! arithmetic, which this crate uses; its TCP and ICMP views are not there
//! yet, and wire's `UdpPacket::new_checked` (rightly) refuses a first
//! fragment whose UDP length exceeds the fragment. The NAT needs the same
//! handful of fields for all three protocols, including inside the
//! truncated packet quoted by an ICMP error, so they are named here once.
//! No checksum is computed here: updates go through
//! `strait_wire::checksum`.

use crate::flow::Protocol;
use crate::tcp::TcpFlags;

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const UDP_CHECKSUM: usize = 6;
    pub const TCP_FLAGS: usize = 13;
    pub const TCP_CHECKSUM: usize = 16;
    pub const ICMP_TYPE: usize = 0;
    pub const ICMP_CHECKSUM: usize = 2;
    pub const ICMP_IDENT: usize = 4;
}

/// Bytes every tracked transport header must show: ports or type, code,
/// checksum and identifier. It is also what RFC 792 guarantees an ICMP
/// error quotes.
pub(crate) const MIN_QUOTED: usize = 8;
/// Fixed TCP header length; a TCP header split across fragments is refused
/// (RFC 1858 tiny-fragment concern).
pub(crate) const TCP_HEADER_LEN: usize = 20;

/// ICMP types the translator handles (RFC 792).
pub(crate) mod icmp_type {
    pub const ECHO_REPLY: u8 = 0;
    pub const DESTINATION_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// What an ICMP message is to the translator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IcmpClass {
    EchoRequest,
    EchoReply,
    /// An error quoting the offending packet (RFC 5508 section 4 lists
    /// destination unreachable, time exceeded and parameter problem;
    /// source quench is deprecated but still quoted the same way).
    Error,
    Other,
}

pub(crate) fn icmp_class(kind: u8) -> IcmpClass {
    match kind {
        icmp_type::ECHO_REQUEST => IcmpClass::EchoRequest,
        icmp_type::ECHO_REPLY => IcmpClass::EchoReply,
        icmp_type::DESTINATION_UNREACHABLE
        | icmp_type::SOURCE_QUENCH
        | icmp_type::TIME_EXCEEDED
        | icmp_type::PARAMETER_PROBLEM => IcmpClass::Error,
        _ => IcmpClass::Other,
    }
}

#[inline]
pub(crate) fn word(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

#[inline]
pub(crate) fn set_word(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Source port, destination port (ICMP: identifier twice) of a header that
/// is at least [`MIN_QUOTED`] bytes long.
#[inline]
pub(crate) fn ports(protocol: Protocol, l4: &[u8]) -> (u16, u16) {
    match protocol {
        Protocol::Tcp | Protocol::Udp => (
            word(l4, field::SRC_PORT.start),
            word(l4, field::DST_PORT.start),
        ),
        Protocol::Icmp => {
            let id = word(l4, field::ICMP_IDENT);
            (id, id)
        }
    }
}

/// Offset of the port (or identifier) field for the given side.
#[inline]
pub(crate) fn port_offset(protocol: Protocol, source: bool) -> usize {
    match (protocol, source) {
        (Protocol::Icmp, _) => field::ICMP_IDENT,
        (_, true) => field::SRC_PORT.start,
        (_, false) => field::DST_PORT.start,
    }
}

/// Offset of the checksum field and whether it is present in `len` bytes.
#[inline]
pub(crate) fn checksum_offset(protocol: Protocol, len: usize) -> Option<usize> {
    let at = match protocol {
        Protocol::Tcp => field::TCP_CHECKSUM,
        Protocol::Udp => field::UDP_CHECKSUM,
        Protocol::Icmp => field::ICMP_CHECKSUM,
    };
    (len >= at + 2).then_some(at)
}

/// TCP flags of a header at least [`TCP_HEADER_LEN`] bytes long.
#[inline]
pub(crate) fn tcp_flags(l4: &[u8]) -> TcpFlags {
    TcpFlags::from_byte(l4[field::TCP_FLAGS])
}

/// ICMP type byte.
#[inline]
pub(crate) fn icmp_type_of(l4: &[u8]) -> u8 {
    l4[field::ICMP_TYPE]
}

/// Minimum header bytes for `protocol` in an unquoted packet.
#[inline]
pub(crate) fn min_header(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Tcp => TCP_HEADER_LEN,
        Protocol::Udp | Protocol::Icmp => MIN_QUOTED,
    }
}
