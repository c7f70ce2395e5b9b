//! Transport header fields the translator reads and rewrites: TCP and UDP
//! ports, the TCP flags, ICMP type and echo identifier, and each protocol's
//! checksum, one protocol-independent accessor each.
//!
//! Every field is read and written through `strait-wire`'s views, which
//! name the offsets. The views are built with `new_unchecked`: wire's
//! `UdpPacket::new_checked` (rightly) refuses a first fragment whose UDP
//! length exceeds the fragment, and the packet quoted by an ICMP error may
//! stop after 8 bytes, so the translator checks the lengths it needs itself
//! ([`min_header`], [`MIN_QUOTED`], [`checksum`]) and each accessor touches
//! only its own field. No checksum is computed here: updates go through
//! `strait_wire::checksum`.

use strait_wire::{icmpv4, tcp, udp, Icmpv4Packet, TcpPacket, UdpPacket};

use crate::flow::Protocol;
use crate::tcp::Segment;

/// Bytes every tracked transport header must show: ports or type, code,
/// checksum and identifier. It is also what RFC 792 guarantees an ICMP
/// error quotes.
pub(crate) const MIN_QUOTED: usize = 8;
/// Fixed TCP header length; a TCP header split across fragments is refused
/// (RFC 1858 tiny-fragment concern).
pub(crate) const TCP_HEADER_LEN: usize = tcp::HEADER_LEN;

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

/// Source port, destination port (ICMP: identifier twice) of a header that
/// is at least [`MIN_QUOTED`] bytes long.
#[inline]
pub(crate) fn ports(protocol: Protocol, l4: &[u8]) -> (u16, u16) {
    match protocol {
        Protocol::Tcp => {
            let t = TcpPacket::new_unchecked(l4);
            (t.src_port(), t.dst_port())
        }
        Protocol::Udp => {
            let u = UdpPacket::new_unchecked(l4);
            (u.src_port(), u.dst_port())
        }
        Protocol::Icmp => {
            let id = Icmpv4Packet::new_unchecked(l4).echo_ident();
            (id, id)
        }
    }
}

/// Writes the port of one side (ICMP: the identifier, whichever side) of a
/// header at least [`MIN_QUOTED`] bytes long and returns the old value.
/// The checksum is not updated.
#[inline]
pub(crate) fn set_port(protocol: Protocol, l4: &mut [u8], source: bool, port: u16) -> u16 {
    let (old_src, old_dst) = ports(protocol, l4);
    match (protocol, source) {
        (Protocol::Icmp, _) => {
            Icmpv4Packet::new_unchecked(l4).set_echo_ident(port);
            old_src
        }
        (Protocol::Tcp, true) => {
            TcpPacket::new_unchecked(l4).set_src_port(port);
            old_src
        }
        (Protocol::Tcp, false) => {
            TcpPacket::new_unchecked(l4).set_dst_port(port);
            old_dst
        }
        (Protocol::Udp, true) => {
            UdpPacket::new_unchecked(l4).set_src_port(port);
            old_src
        }
        (Protocol::Udp, false) => {
            UdpPacket::new_unchecked(l4).set_dst_port(port);
            old_dst
        }
    }
}

/// The checksum field, when the `l4.len()` bytes present reach it (a quoted
/// TCP header may stop before it).
#[inline]
pub(crate) fn checksum(protocol: Protocol, l4: &[u8]) -> Option<u16> {
    let (end, value): (usize, fn(&[u8]) -> u16) = match protocol {
        Protocol::Tcp => (tcp::CHECKSUM_END, |b| {
            TcpPacket::new_unchecked(b).checksum()
        }),
        Protocol::Udp => (udp::CHECKSUM_END, |b| {
            UdpPacket::new_unchecked(b).checksum()
        }),
        Protocol::Icmp => (icmpv4::CHECKSUM_END, |b| {
            Icmpv4Packet::new_unchecked(b).checksum()
        }),
    };
    (l4.len() >= end).then(|| value(l4))
}

/// Writes the checksum field of a header that reaches it ([`checksum`] is
/// `Some`).
#[inline]
pub(crate) fn set_checksum(protocol: Protocol, l4: &mut [u8], value: u16) {
    match protocol {
        Protocol::Tcp => TcpPacket::new_unchecked(l4).set_checksum(value),
        Protocol::Udp => UdpPacket::new_unchecked(l4).set_checksum(value),
        Protocol::Icmp => Icmpv4Packet::new_unchecked(l4).set_checksum(value),
    }
}

/// TCP flags of a header at least [`TCP_HEADER_LEN`] bytes long.
#[inline]
pub(crate) fn tcp_segment(l4: &[u8]) -> Segment {
    Segment::parse(l4)
}

/// ICMP type byte.
#[inline]
pub(crate) fn icmp_type_of(l4: &[u8]) -> u8 {
    Icmpv4Packet::new_unchecked(l4).msg_type().0
}

/// Minimum header bytes for `protocol` in an unquoted packet.
#[inline]
pub(crate) fn min_header(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Tcp => TCP_HEADER_LEN,
        Protocol::Udp | Protocol::Icmp => MIN_QUOTED,
    }
}
