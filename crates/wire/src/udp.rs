//! UDP header (RFC 768) with checksum helpers for IPv4 and IPv6 and the
//! incremental rewrites NAT needs.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::error::{need, room, Error, Result};
use crate::IpProtocol;

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// Header bytes up to the end of the checksum field (the whole header).
pub const CHECKSUM_END: usize = field::CHECKSUM.end;

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking the header and that the length field
    /// covers the header and fits the buffer.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let buf = buffer.as_ref();
        need("udp header", buf, HEADER_LEN)?;
        let len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
        if len < HEADER_LEN || len > buf.len() {
            return Err(Error::BadTotalLength {
                what: "udp",
                length: len,
                header_len: HEADER_LEN,
                available: buf.len(),
            });
        }
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

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.word(field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.word(field::DST_PORT.start)
    }

    /// Length field (header plus payload).
    pub fn len(&self) -> u16 {
        self.word(field::LENGTH.start)
    }

    /// True when the datagram carries no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field (0 means "none" over IPv4).
    pub fn checksum(&self) -> u16 {
        self.word(field::CHECKSUM.start)
    }

    /// Header plus payload, bounded by the length field.
    pub fn datagram(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        &buf[..usize::from(self.len()).clamp(HEADER_LEN, buf.len())]
    }

    /// The payload, bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        &self.datagram()[HEADER_LEN..]
    }

    /// Verifies the checksum over the IPv4 pseudo-header; a zero checksum
    /// means the sender computed none and is accepted (RFC 768).
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let ph = checksum::pseudo_header_v4(src, dst, IpProtocol::UDP, self.len());
        checksum::add(ph, checksum::sum(self.datagram())) == 0xffff
    }

    /// Verifies the checksum over the IPv6 pseudo-header; it is mandatory
    /// over IPv6, so zero fails (RFC 8200 §8.1).
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::UDP, u32::from(self.len()));
        checksum::add(ph, checksum::sum(self.datagram())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    fn set_word(&mut self, at: usize, value: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the source port (checksum not updated).
    pub fn set_src_port(&mut self, port: u16) {
        self.set_word(field::SRC_PORT.start, port);
    }

    /// Sets the destination port (checksum not updated).
    pub fn set_dst_port(&mut self, port: u16) {
        self.set_word(field::DST_PORT.start, port);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, len: u16) {
        self.set_word(field::LENGTH.start, len);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        self.set_word(field::CHECKSUM.start, value);
    }

    /// Mutable payload, bounded by the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len()).clamp(HEADER_LEN, self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Computes and stores the checksum over the IPv4 pseudo-header.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let ph = checksum::pseudo_header_v4(src, dst, IpProtocol::UDP, self.len());
        let c = checksum::finish_udp(checksum::add(ph, checksum::sum(self.datagram())));
        self.set_checksum(c);
    }

    /// Computes and stores the checksum over the IPv6 pseudo-header.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::UDP, u32::from(self.len()));
        let c = checksum::finish_udp(checksum::add(ph, checksum::sum(self.datagram())));
        self.set_checksum(c);
    }

    /// Rewrites the source port with an incremental checksum update.
    pub fn rewrite_src_port(&mut self, port: u16) -> u16 {
        let old = self.src_port();
        let c = checksum::update16_udp(self.checksum(), old, port);
        self.set_src_port(port);
        self.set_checksum(c);
        old
    }

    /// Rewrites the destination port with an incremental checksum update.
    pub fn rewrite_dst_port(&mut self, port: u16) -> u16 {
        let old = self.dst_port();
        let c = checksum::update16_udp(self.checksum(), old, port);
        self.set_dst_port(port);
        self.set_checksum(c);
        old
    }

    /// Accounts in the checksum for an IPv4 address change in the
    /// pseudo-header (after [`crate::Ipv4Packet::rewrite_src_addr`] or
    /// `rewrite_dst_addr`). A zero checksum stays zero.
    pub fn update_checksum_for_addr_v4(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let c = checksum::update32_udp(self.checksum(), old.to_bits(), new.to_bits());
        self.set_checksum(c);
    }

    /// Accounts in the checksum for an IPv6 address change in the pseudo-header.
    pub fn update_checksum_for_addr_v6(&mut self, old: Ipv6Addr, new: Ipv6Addr) {
        let c = checksum::update_bytes_udp(self.checksum(), &old.octets(), &new.octets());
        self.set_checksum(c);
    }
}

/// A UDP header in meaning form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Parses the ports of a checked datagram.
    pub fn parse<T: AsRef<[u8]>>(packet: &UdpPacket<T>) -> Self {
        Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        }
    }

    /// Writes the header for a payload of `payload_len` bytes that the caller
    /// has placed (or will place) after it; the checksum is left zero for the
    /// caller to fill once the payload is in place. Returns the header length.
    pub fn emit(&self, buf: &mut [u8], payload_len: usize) -> Result<usize> {
        room(buf, HEADER_LEN)?;
        let len = HEADER_LEN + payload_len;
        let len = u16::try_from(len).map_err(|_| Error::BadTotalLength {
            what: "udp",
            length: len,
            header_len: HEADER_LEN,
            available: usize::from(u16::MAX),
        })?;
        let mut packet = UdpPacket::new_unchecked(&mut buf[..HEADER_LEN]);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        packet.set_checksum(0);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

    fn datagram() -> [u8; 12] {
        let mut buf = [0u8; 12];
        UdpRepr {
            src_port: 5353,
            dst_port: 53,
        }
        .emit(&mut buf, 4)
        .unwrap();
        buf[8..].copy_from_slice(b"ping");
        let mut packet = UdpPacket::new_checked(&mut buf[..]).unwrap();
        packet.fill_checksum_v4(SRC, DST);
        buf
    }

    #[test]
    fn checksum_fill_and_verify() {
        let buf = datagram();
        let packet = UdpPacket::new_checked(&buf[..]).unwrap();
        assert!(packet.verify_checksum_v4(SRC, DST));
        assert!(!packet.verify_checksum_v4(SRC, Ipv4Addr::new(8, 8, 4, 4)));
        assert_eq!(packet.payload(), b"ping");
        assert_eq!(UdpRepr::parse(&packet).dst_port, 53);
    }

    #[test]
    fn zero_checksum_means_none_over_ipv4_only() {
        let mut buf = datagram();
        buf[6] = 0;
        buf[7] = 0;
        let mut packet = UdpPacket::new_checked(&mut buf[..]).unwrap();
        assert!(packet.verify_checksum_v4(SRC, DST));
        assert!(!packet.verify_checksum_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST));
        packet.rewrite_src_port(40000);
        packet.update_checksum_for_addr_v4(SRC, Ipv4Addr::new(203, 0, 113, 1));
        assert_eq!(packet.checksum(), 0);
    }

    #[test]
    fn computed_zero_is_sent_as_all_ones() {
        // Search payloads for one whose checksum computes to zero.
        let mut found = false;
        for x in 0..=u16::MAX {
            let mut buf = datagram();
            buf[8..10].copy_from_slice(&x.to_be_bytes());
            let mut packet = UdpPacket::new_checked(&mut buf[..]).unwrap();
            packet.fill_checksum_v4(SRC, DST);
            assert_ne!(packet.checksum(), 0);
            if packet.checksum() == 0xffff {
                assert!(packet.verify_checksum_v4(SRC, DST));
                found = true;
                break;
            }
        }
        assert!(found);
    }

    #[test]
    fn nat_rewrite_matches_full_recompute() {
        let mut buf = datagram();
        let new_src = Ipv4Addr::new(203, 0, 113, 7);
        let mut packet = UdpPacket::new_checked(&mut buf[..]).unwrap();
        packet.rewrite_src_port(61000);
        packet.update_checksum_for_addr_v4(SRC, new_src);
        assert!(packet.verify_checksum_v4(new_src, DST));
        let incremental = packet.checksum();
        packet.fill_checksum_v4(new_src, DST);
        assert_eq!(packet.checksum(), incremental);
    }

    #[test]
    fn length_field_is_validated() {
        let mut buf = datagram();
        buf[4..6].copy_from_slice(&13u16.to_be_bytes());
        assert!(matches!(
            UdpPacket::new_checked(&buf[..]),
            Err(Error::BadTotalLength { length: 13, .. })
        ));
        buf[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert!(UdpPacket::new_checked(&buf[..]).is_err());
        assert!(matches!(
            UdpPacket::new_checked(&buf[..7]),
            Err(Error::Truncated { .. })
        ));
    }
}
