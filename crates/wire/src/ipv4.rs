//! IPv4 header (RFC 791) with forwarding helpers (RFC 1812) and RFC 1624
//! incremental checksum updates.

use core::net::Ipv4Addr;

use crate::checksum;
use crate::error::{need, room, Error, Result};
use crate::IpProtocol;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const TOTAL_LEN: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;
/// Largest IPv4 header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on bad input.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after validating version, IHL and total length.
    ///
    /// The buffer may be longer than the total length (Ethernet padding);
    /// [`Self::payload`] stops at the total length.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_header_checked(buffer)?;
        let buf = packet.buffer.as_ref();
        let total = usize::from(packet.total_len());
        let header_len = packet.header_len();
        if total < header_len || total > buf.len() {
            return Err(Error::BadTotalLength {
                what: "ipv4",
                length: total,
                header_len,
                available: buf.len(),
            });
        }
        Ok(packet)
    }

    /// Wraps a buffer whose header (options included) is complete but whose
    /// payload may be cut short, as in the copy of an offending packet carried
    /// by an ICMP error (RFC 792). [`Self::payload`] returns what is present.
    pub fn new_header_checked(buffer: T) -> Result<Self> {
        let buf = buffer.as_ref();
        need("ipv4 header", buf, HEADER_LEN)?;
        let version = buf[field::VER_IHL] >> 4;
        if version != 4 {
            return Err(Error::BadVersion {
                expected: 4,
                found: version,
            });
        }
        let header_len = usize::from(buf[field::VER_IHL] & 0x0f) * 4;
        if header_len < HEADER_LEN {
            return Err(Error::BadHeaderLength {
                what: "ipv4",
                length: header_len,
            });
        }
        need("ipv4 options", buf, header_len)?;
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

    /// Version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated services code point (RFC 2474).
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification bits (RFC 3168).
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length field.
    pub fn total_len(&self) -> u16 {
        self.word(field::TOTAL_LEN.start)
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        self.word(field::IDENT.start)
    }

    /// Don't Fragment flag: path-MTU discovery relies on it (RFC 1191).
    pub fn dont_frag(&self) -> bool {
        self.word(field::FLAGS_FRAG.start) & FLAG_DF != 0
    }

    /// More Fragments flag.
    pub fn more_frags(&self) -> bool {
        self.word(field::FLAGS_FRAG.start) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.word(field::FLAGS_FRAG.start) & FRAG_OFFSET_MASK) << 3
    }

    /// True for any fragment (first, middle or last) of a fragmented datagram.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// True for a fragment other than the first: it carries no transport header.
    pub fn is_non_initial_fragment(&self) -> bool {
        self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        self.word(field::CHECKSUM.start)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The header bytes, options included.
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Options bytes (empty for IHL 5).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// True when the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.header()) == 0xffff
    }

    /// The payload: from the end of the header to the total length, or to the
    /// end of the buffer if the packet was cut short (see
    /// [`Self::new_header_checked`]).
    pub fn payload(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        let end = usize::from(self.total_len()).min(buf.len());
        let start = self.header_len().min(end);
        &buf[start..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn set_word(&mut self, at: usize, value: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets version 4 and the header length (a multiple of 4, 20..=60).
    pub fn set_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((len / 4) as u8 & 0x0f);
    }

    /// Sets DSCP and ECN.
    pub fn set_dscp_ecn(&mut self, dscp: u8, ecn: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = (dscp << 2) | (ecn & 0x03);
    }

    /// Sets the total length field.
    pub fn set_total_len(&mut self, len: u16) {
        self.set_word(field::TOTAL_LEN.start, len);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, ident: u16) {
        self.set_word(field::IDENT.start, ident);
    }

    /// Sets flags and fragment offset (offset in bytes, a multiple of 8).
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut w = (offset >> 3) & FRAG_OFFSET_MASK;
        if dont_frag {
            w |= FLAG_DF;
        }
        if more_frags {
            w |= FLAG_MF;
        }
        self.set_word(field::FLAGS_FRAG.start, w);
    }

    /// Sets the TTL (checksum not updated).
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol (checksum not updated).
    pub fn set_protocol(&mut self, protocol: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.0;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        self.set_word(field::CHECKSUM.start, value);
    }

    /// Sets the source address (checksum not updated).
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address (checksum not updated).
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// Forwarding step of RFC 1812 §5.3.1: decrements the TTL and updates the
    /// checksum incrementally (RFC 1624). A packet whose TTL would reach zero
    /// is left untouched and [`Error::TtlExpired`] returned: the router must
    /// drop it and send ICMP time exceeded. Returns the new TTL.
    pub fn decrement_ttl(&mut self) -> Result<u8> {
        let ttl = self.ttl();
        if ttl <= 1 {
            return Err(Error::TtlExpired);
        }
        let protocol = self.buffer.as_ref()[field::PROTOCOL];
        let old = u16::from_be_bytes([ttl, protocol]);
        let new = u16::from_be_bytes([ttl - 1, protocol]);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_ttl(ttl - 1);
        self.set_checksum(c);
        Ok(ttl - 1)
    }

    /// Rewrites the source address, updating the header checksum
    /// incrementally. Returns the previous address so the caller can update
    /// the transport checksum (whose pseudo-header covers it) too.
    pub fn rewrite_src_addr(&mut self, addr: Ipv4Addr) -> Ipv4Addr {
        let old = self.src_addr();
        let c = checksum::update32(self.checksum(), old.to_bits(), addr.to_bits());
        self.set_src_addr(addr);
        self.set_checksum(c);
        old
    }

    /// Rewrites the destination address like [`Self::rewrite_src_addr`].
    pub fn rewrite_dst_addr(&mut self, addr: Ipv4Addr) -> Ipv4Addr {
        let old = self.dst_addr();
        let c = checksum::update32(self.checksum(), old.to_bits(), addr.to_bits());
        self.set_dst_addr(addr);
        self.set_checksum(c);
        old
    }

    /// Mutable payload (bounded like [`Self::payload`]).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.total_len()).min(self.buffer.as_ref().len());
        let start = self.header_len().min(end);
        &mut self.buffer.as_mut()[start..end]
    }
}

/// An IPv4 header in meaning form (options are not represented; emit writes
/// a 20-byte header).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Payload protocol.
    pub protocol: IpProtocol,
    /// Payload length in bytes (total length minus header length).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// DSCP (6 bits).
    pub dscp: u8,
    /// ECN (2 bits).
    pub ecn: u8,
    /// Identification.
    pub ident: u16,
    /// Don't Fragment.
    pub dont_frag: bool,
    /// More Fragments.
    pub more_frags: bool,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
}

impl Ipv4Repr {
    /// Parses a checked packet, verifying its header checksum.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Self> {
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum { what: "ipv4" });
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()).saturating_sub(packet.header_len()),
            ttl: packet.ttl(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
        })
    }

    /// Bytes this header occupies when emitted.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header (with checksum) at the start of `buf`; the payload
    /// is the caller's. Returns the header length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        room(buf, HEADER_LEN)?;
        let total = HEADER_LEN + self.payload_len;
        let total = u16::try_from(total).map_err(|_| Error::BadTotalLength {
            what: "ipv4",
            length: total,
            header_len: HEADER_LEN,
            available: usize::from(u16::MAX),
        })?;
        let mut packet = Ipv4Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        packet.set_header_len(HEADER_LEN);
        packet.set_dscp_ecn(self.dscp, self.ecn);
        packet.set_total_len(total);
        packet.set_ident(self.ident);
        packet.set_frag(self.dont_frag, self.more_frags, self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> [u8; 28] {
        let repr = Ipv4Repr {
            src_addr: Ipv4Addr::new(192, 168, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 7),
            protocol: IpProtocol::UDP,
            payload_len: 8,
            ttl: 64,
            dscp: 46,
            ecn: 1,
            ident: 0xbeef,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
        };
        let mut buf = [0u8; 28];
        repr.emit(&mut buf).unwrap();
        buf
    }

    #[test]
    fn emit_parse_round_trip() {
        let buf = sample();
        let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(packet.verify_checksum());
        let repr = Ipv4Repr::parse(&packet).unwrap();
        assert_eq!(repr.src_addr, Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(repr.payload_len, 8);
        assert_eq!(repr.dscp, 46);
        assert!(repr.dont_frag);
        assert!(!packet.is_fragment());
        assert_eq!(packet.payload().len(), 8);
    }

    #[test]
    fn rejects_bad_version_ihl_and_lengths() {
        let mut buf = sample();
        buf[0] = 0x65;
        assert!(matches!(
            Ipv4Packet::new_checked(&buf[..]),
            Err(Error::BadVersion { found: 6, .. })
        ));
        buf[0] = 0x44;
        assert!(matches!(
            Ipv4Packet::new_checked(&buf[..]),
            Err(Error::BadHeaderLength { length: 16, .. })
        ));
        buf[0] = 0x4f;
        assert!(matches!(
            Ipv4Packet::new_checked(&buf[..]),
            Err(Error::Truncated { needed: 60, .. })
        ));
        let mut buf = sample();
        buf[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert!(matches!(
            Ipv4Packet::new_checked(&buf[..]),
            Err(Error::BadTotalLength { length: 29, .. })
        ));
        buf[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(matches!(
            Ipv4Packet::new_checked(&buf[..]),
            Err(Error::BadTotalLength { .. })
        ));
        assert!(matches!(
            Ipv4Packet::new_checked(&buf[..19]),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn padding_after_total_length_is_not_payload() {
        let mut buf = [0u8; 60];
        buf[..28].copy_from_slice(&sample());
        let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.payload().len(), 8);
    }

    #[test]
    fn bad_checksum_is_reported() {
        let mut buf = sample();
        buf[11] ^= 0x01;
        let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            Ipv4Repr::parse(&packet),
            Err(Error::BadChecksum { what: "ipv4" })
        );
    }

    #[test]
    fn fragment_fields() {
        let mut buf = sample();
        let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
        packet.set_frag(false, true, 1480);
        assert!(packet.more_frags());
        assert!(!packet.dont_frag());
        assert_eq!(packet.frag_offset(), 1480);
        assert!(packet.is_fragment());
        assert!(packet.is_non_initial_fragment());
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut buf = sample();
        let mut packet = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        assert_eq!(packet.decrement_ttl(), Ok(63));
        assert!(packet.verify_checksum());
        packet.set_ttl(1);
        packet.fill_checksum();
        assert_eq!(packet.decrement_ttl(), Err(Error::TtlExpired));
        assert_eq!(packet.ttl(), 1);
    }

    #[test]
    fn address_rewrite_keeps_checksum_valid() {
        let mut buf = sample();
        let mut packet = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        let old = packet.rewrite_src_addr(Ipv4Addr::new(203, 0, 113, 9));
        assert_eq!(old, Ipv4Addr::new(192, 168, 0, 1));
        packet.rewrite_dst_addr(Ipv4Addr::new(198, 51, 100, 1));
        assert!(packet.verify_checksum());
        let expected = packet.checksum();
        packet.fill_checksum();
        assert_eq!(packet.checksum(), expected);
    }

    #[test]
    fn header_checked_allows_cut_payload() {
        let buf = sample();
        let packet = Ipv4Packet::new_header_checked(&buf[..24]).unwrap();
        assert_eq!(packet.payload().len(), 4);
        assert!(Ipv4Packet::new_checked(&buf[..24]).is_err());
    }
}
