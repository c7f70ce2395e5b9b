//! ARP for IPv4 over Ethernet (RFC 826).

use core::net::Ipv4Addr;

use crate::error::{need, room, Error, Result};
use crate::ethernet::{EtherType, EthernetAddress};

mod field {
    use core::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

const HTYPE_ETHERNET: u16 = 1;

/// ARP operation code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ArpOperation(pub u16);

impl ArpOperation {
    /// Who has TPA? Tell SPA.
    pub const REQUEST: Self = Self(1);
    /// SPA is at SHA.
    pub const REPLY: Self = Self(2);
}

/// A read/write view of an ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking its length and that it is Ethernet/IPv4
    /// ARP (hardware type 1, protocol 0x0800, lengths 6 and 4): the only
    /// flavour whose fixed offsets this view reads.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let buf = buffer.as_ref();
        need("arp", buf, PACKET_LEN)?;
        let packet = Self { buffer };
        if packet.hardware_type() != HTYPE_ETHERNET
            || packet.protocol_type() != EtherType::IPV4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Err(Error::Unsupported {
                what: "arp",
                reason: "not IPv4 over Ethernet",
            });
        }
        Ok(packet)
    }

    fn word(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// Hardware type.
    pub fn hardware_type(&self) -> u16 {
        self.word(field::HTYPE.start)
    }

    /// Protocol type.
    pub fn protocol_type(&self) -> EtherType {
        EtherType(self.word(field::PTYPE.start))
    }

    /// Hardware address length.
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    pub fn operation(&self) -> ArpOperation {
        ArpOperation(self.word(field::OPER.start))
    }

    /// Sender hardware address.
    pub fn source_hardware_addr(&self) -> EthernetAddress {
        mac(&self.buffer.as_ref()[field::SHA])
    }

    /// Sender protocol address.
    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::SPA])
    }

    /// Target hardware address.
    pub fn target_hardware_addr(&self) -> EthernetAddress {
        mac(&self.buffer.as_ref()[field::THA])
    }

    /// Target protocol address.
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::TPA])
    }
}

fn mac(b: &[u8]) -> EthernetAddress {
    EthernetAddress([b[0], b[1], b[2], b[3], b[4], b[5]])
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// An Ethernet/IPv4 ARP message in meaning form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ArpRepr {
    /// Request or reply.
    pub operation: ArpOperation,
    /// Sender MAC.
    pub source_hardware_addr: EthernetAddress,
    /// Sender IPv4 address.
    pub source_protocol_addr: Ipv4Addr,
    /// Target MAC (zero in a request).
    pub target_hardware_addr: EthernetAddress,
    /// Target IPv4 address.
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    /// Parses a checked packet; operations other than request and reply are refused.
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<Self> {
        let operation = packet.operation();
        if operation != ArpOperation::REQUEST && operation != ArpOperation::REPLY {
            return Err(Error::Unsupported {
                what: "arp",
                reason: "operation is neither request nor reply",
            });
        }
        Ok(Self {
            operation,
            source_hardware_addr: packet.source_hardware_addr(),
            source_protocol_addr: packet.source_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    /// A request asking who has `target`.
    pub fn request(source_mac: EthernetAddress, source_ip: Ipv4Addr, target: Ipv4Addr) -> Self {
        Self {
            operation: ArpOperation::REQUEST,
            source_hardware_addr: source_mac,
            source_protocol_addr: source_ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        }
    }

    /// The reply to this request, announcing that `target_protocol_addr` is at `our_mac`.
    pub fn reply_to(&self, our_mac: EthernetAddress) -> Self {
        Self {
            operation: ArpOperation::REPLY,
            source_hardware_addr: our_mac,
            source_protocol_addr: self.target_protocol_addr,
            target_hardware_addr: self.source_hardware_addr,
            target_protocol_addr: self.source_protocol_addr,
        }
    }

    /// Writes the packet at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        room(buf, PACKET_LEN)?;
        buf[field::HTYPE].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        buf[field::PTYPE].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());
        buf[field::HLEN] = 6;
        buf[field::PLEN] = 4;
        buf[field::OPER].copy_from_slice(&self.operation.0.to_be_bytes());
        buf[field::SHA].copy_from_slice(&self.source_hardware_addr.0);
        buf[field::SPA].copy_from_slice(&self.source_protocol_addr.octets());
        buf[field::THA].copy_from_slice(&self.target_hardware_addr.0);
        buf[field::TPA].copy_from_slice(&self.target_protocol_addr.octets());
        Ok(PACKET_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: EthernetAddress = EthernetAddress([0x02, 0xaa, 0, 0, 0, 1]);
    const MAC_B: EthernetAddress = EthernetAddress([0x02, 0xbb, 0, 0, 0, 2]);

    #[test]
    fn request_reply_round_trip() {
        let req = ArpRepr::request(
            MAC_A,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
        );
        let mut buf = [0u8; PACKET_LEN];
        req.emit(&mut buf).unwrap();
        // Byte-exact check of a hand-written request.
        assert_eq!(&buf[..8], &[0, 1, 0x08, 0, 6, 4, 0, 1]);
        let parsed = ArpRepr::parse(&ArpPacket::new_checked(&buf[..]).unwrap()).unwrap();
        assert_eq!(parsed, req);

        let reply = parsed.reply_to(MAC_B);
        reply.emit(&mut buf).unwrap();
        let packet = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.operation(), ArpOperation::REPLY);
        assert_eq!(packet.source_hardware_addr(), MAC_B);
        assert_eq!(packet.source_protocol_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(packet.target_hardware_addr(), MAC_A);
    }

    #[test]
    fn rejects_short_foreign_and_unknown() {
        let mut buf = [0u8; PACKET_LEN];
        ArpRepr::request(MAC_A, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST)
            .emit(&mut buf)
            .unwrap();
        assert!(matches!(
            ArpPacket::new_checked(&buf[..27]),
            Err(Error::Truncated { .. })
        ));
        let mut foreign = buf;
        foreign[2..4].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert!(matches!(
            ArpPacket::new_checked(&foreign[..]),
            Err(Error::Unsupported { .. })
        ));
        buf[7] = 9;
        let packet = ArpPacket::new_checked(&buf[..]).unwrap();
        assert!(ArpRepr::parse(&packet).is_err());
    }
}
