//! Flow vocabulary shared by rules, sessions and translation: protocols,
//! transport endpoints and packet directions.

use core::fmt;
use std::net::Ipv4Addr;

/// Transport protocols the translator tracks. ICMP means ICMP query
/// messages (echo); their identifier plays the role of a port
/// (RFC 5508 REQ-1: the identifier is translated like a source port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Protocol {
    /// ICMP echo request / reply (IP protocol 1).
    Icmp = 1,
    /// TCP (IP protocol 6).
    Tcp = 6,
    /// UDP (IP protocol 17).
    Udp = 17,
}

impl Protocol {
    /// The IPv4 protocol number.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// Maps an IPv4 protocol number to a tracked protocol.
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            1 => Some(Self::Icmp),
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            _ => None,
        }
    }

    /// Short lower-case name, as shown by inspection commands.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Icmp => "icmp",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An IPv4 transport endpoint. For ICMP echo the port is the identifier
/// on the host side and zero on the remote side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// IPv4 address.
    pub addr: Ipv4Addr,
    /// Port (or ICMP identifier).
    pub port: u16,
}

impl Endpoint {
    /// Builds an endpoint.
    pub const fn new(addr: Ipv4Addr, port: u16) -> Self {
        Self { addr, port }
    }

    pub(crate) fn addr_u32(self) -> u32 {
        u32::from(self.addr)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// A directed 5-tuple as it appears in a packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Source endpoint.
    pub source: Endpoint,
    /// Destination endpoint.
    pub destination: Endpoint,
}

impl fmt::Display for FlowTuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {}",
            self.protocol, self.source, self.destination
        )
    }
}

/// Which way a packet crosses the translator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the inside (private realm) towards the outside.
    Outbound,
    /// From the outside (public realm) towards the inside.
    Inbound,
}

impl Direction {
    /// The opposite direction.
    pub const fn reverse(self) -> Self {
        match self {
            Self::Outbound => Self::Inbound,
            Self::Inbound => Self::Outbound,
        }
    }
}
