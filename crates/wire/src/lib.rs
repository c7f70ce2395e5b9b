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
//! Nothing here allocates, locks or makes a system call.
#![forbid(unsafe_code)]

pub mod arp;
pub mod checksum;
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
pub use tcp::{TcpFlags, TcpPacket, TcpRepr};
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
