//! Zero-copy packet header views and builders for the Strait dataplane.
//!
//! Each protocol lives in its own module and follows one pattern:
//!
//! * a view `XxxPacket<T: AsRef<[u8]>>` over a frame buffer (usually a UMEM
//!   frame). `new_checked` validates lengths once; after it every accessor is
//!   panic-free. With `T: AsMut<[u8]>` the view also has setters and in-place
//!   rewrite helpers that keep checksums right incrementally (RFC 1624);
//! * a plain `XxxRepr` for parsing into meaning and emitting from meaning,
//!   used by control code, builders and tests.
//!
//! Nothing here allocates, locks or makes a system call on the packet path
//! (the [`cidr`] parsers allocate only to describe an error).
#![forbid(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod cidr;
mod error;
pub mod esp;
pub mod ethernet;
mod fuzz;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use cidr::{CidrError, IpCidr, Ipv4Cidr, Ipv6Cidr};
pub use error::{Error, Result};
pub use esp::{classify_nat_traversal, EspPacket, EspRepr, NatTraversalPayload};
pub use ethernet::{
    EtherType, EthernetAddress, EthernetFrame, EthernetRepr, L2Encapsulation, VlanTag,
};
pub use fuzz::fuzz_parse_all;
pub use icmpv4::{emit_icmpv4_error, Icmpv4Error, Icmpv4Packet, Icmpv4Repr, Icmpv4Type};
pub use icmpv6::{emit_icmpv6_error, Icmpv6Error, Icmpv6Packet, Icmpv6Repr, Icmpv6Type};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr, Ipv6UpperLayer};
pub use tcp::{emit_tcp_reset, TcpFlags, TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};

/// An IP protocol number (IPv4 protocol / IPv6 next header), IANA registry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 Hop-by-Hop Options.
    pub const HOP_BY_HOP: Self = Self(0);
    /// ICMP for IPv4.
    pub const ICMP: Self = Self(1);
    /// TCP.
    pub const TCP: Self = Self(6);
    /// UDP.
    pub const UDP: Self = Self(17);
    /// IPv6 encapsulation (IPv6 in IP).
    pub const IPV6: Self = Self(41);
    /// IPv6 Routing header.
    pub const IPV6_ROUTING: Self = Self(43);
    /// IPv6 Fragment header.
    pub const IPV6_FRAGMENT: Self = Self(44);
    /// Encapsulating Security Payload (RFC 4303).
    pub const ESP: Self = Self(50);
    /// Authentication Header (RFC 4302).
    pub const AH: Self = Self(51);
    /// ICMP for IPv6.
    pub const ICMPV6: Self = Self(58);
    /// IPv6 No Next Header.
    pub const IPV6_NO_NEXT: Self = Self(59);
    /// IPv6 Destination Options.
    pub const IPV6_DEST_OPTS: Self = Self(60);
    /// IPv4 encapsulation (IP in IP).
    pub const IPV4: Self = Self(4);
}

/// Where the dataplane sends a packet: one of its ports or tunnels, by index
/// (ports first, then tunnels). The FIB hands it out in next hops and NAT
/// rules match on it, so both name an egress with this one type.
///
/// 16 bits: ports and tunnels are numbered with `u16` everywhere else (port
/// ids, XSK queues, tunnel ids), so a wider id could name an egress that
/// cannot exist. The FIB does not pack the id into its trie (leaves index
/// next-hop groups), so the width buys it nothing, and a narrower id keeps
/// next hops and lookup results small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EgressId(pub u16);

impl EgressId {
    /// The id as an index into the ports-then-tunnels list.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl core::fmt::Display for EgressId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "egress {}", self.0)
    }
}
