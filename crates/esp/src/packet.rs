//! ESP packet layout (RFC 4303 §2) as used with the combined-mode ciphers of
//! RFC 4106 and RFC 7634: an 8-byte explicit IV follows the header and a
//! 16-byte ICV ends the packet.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               Security Parameters Index (SPI)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Sequence Number (low 32 bits)            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Initialization Vector (8 bytes)               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ~        Payload (inner IP packet) | Padding | PadLen | NextHdr ~
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Integrity Check Value (16 bytes)              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::error::DropReason;

/// Byte ranges of the fixed part of an ESP packet.
mod field {
    use core::ops::Range;
    pub const SPI: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const IV: Range<usize> = 8..16;
    pub const PAYLOAD: usize = 16;
}

/// SPI plus sequence number.
pub const HEADER_LEN: usize = field::IV.start;
/// Explicit IV carried in every packet (RFC 4106 §3.1, RFC 7634 §2).
pub const IV_LEN: usize = field::IV.end - field::IV.start;
/// Integrity check value: both ciphers use a full 16-byte tag.
pub const ICV_LEN: usize = 16;
/// Pad length and next header octets (RFC 4303 §2.5, §2.6).
pub const TRAILER_LEN: usize = 2;
/// The payload, padding, pad length and next header end on a 4-byte
/// boundary (RFC 4303 §2.4); neither cipher needs a larger block.
pub const PAD_ALIGN: usize = 4;
/// Bytes written in front of the inner packet by a seal.
pub const ESP_HEADROOM: usize = HEADER_LEN + IV_LEN;
/// Bytes a seal may write after the inner packet: at most 3 pad bytes,
/// the 2-byte trailer and the ICV.
pub const ESP_TAILROOM: usize = (PAD_ALIGN - 1) + TRAILER_LEN + ICV_LEN;
/// Smallest ESP packet that can carry a trailer.
pub const MIN_PACKET_LEN: usize = field::PAYLOAD + TRAILER_LEN + ICV_LEN;

/// IP protocol number of ESP.
pub const IP_PROTO_ESP: u8 = 50;

/// Next header values the tunnel-mode receiver understands (RFC 4303 §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHeader {
    /// IP-in-IP: inner IPv4 packet (protocol 4).
    Ipv4,
    /// Inner IPv6 packet (protocol 41).
    Ipv6,
}

impl NextHeader {
    /// IANA protocol number.
    pub const fn number(self) -> u8 {
        match self {
            NextHeader::Ipv4 => 4,
            NextHeader::Ipv6 => 41,
        }
    }
}

/// Padding length that aligns `payload_len` plus the trailer to 4 bytes.
pub const fn pad_len_for(payload_len: usize) -> usize {
    (PAD_ALIGN - (payload_len + TRAILER_LEN) % PAD_ALIGN) % PAD_ALIGN
}

/// Length of the ESP packet that carries `payload_len` bytes of payload.
pub const fn sealed_len(payload_len: usize) -> usize {
    field::PAYLOAD + payload_len + pad_len_for(payload_len) + TRAILER_LEN + ICV_LEN
}

/// A read/write view of an ESP packet whose length was checked once.
#[derive(Debug, Clone)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// Wraps a buffer without checking its length; accessors may panic on a
    /// short buffer. Use [`new_checked`](Self::new_checked) on input.
    pub const fn new_unchecked(buffer: T) -> Self {
        EspPacket { buffer }
    }

    /// Wraps a buffer after checking that it holds header, IV, trailer and ICV.
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        if buffer.as_ref().len() < MIN_PACKET_LEN {
            return Err(DropReason::Truncated);
        }
        Ok(EspPacket { buffer })
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Security Parameters Index.
    pub fn spi(&self) -> u32 {
        u32::from_be_bytes(be4(&self.buffer.as_ref()[field::SPI]))
    }

    /// Low 32 bits of the sequence number as carried on the wire.
    pub fn seq_low(&self) -> u32 {
        u32::from_be_bytes(be4(&self.buffer.as_ref()[field::SEQ]))
    }

    /// Explicit IV.
    pub fn iv(&self) -> [u8; IV_LEN] {
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&self.buffer.as_ref()[field::IV]);
        iv
    }

    /// Encrypted payload and trailer, without the ICV.
    pub fn ciphertext(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[field::PAYLOAD..b.len() - ICV_LEN]
    }

    /// The ICV.
    pub fn icv(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[b.len() - ICV_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EspPacket<T> {
    /// Sets the SPI.
    pub fn set_spi(&mut self, spi: u32) {
        self.buffer.as_mut()[field::SPI].copy_from_slice(&spi.to_be_bytes());
    }

    /// Sets the low 32 bits of the sequence number.
    pub fn set_seq_low(&mut self, seq: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    /// Sets the explicit IV.
    pub fn set_iv(&mut self, iv: [u8; IV_LEN]) {
        self.buffer.as_mut()[field::IV].copy_from_slice(&iv);
    }
}

/// Parsed meaning of an ESP header, for tests and control code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspRepr {
    /// Security Parameters Index.
    pub spi: u32,
    /// Low 32 bits of the sequence number.
    pub seq_low: u32,
    /// Explicit IV.
    pub iv: [u8; IV_LEN],
}

impl EspRepr {
    /// Reads the header fields of a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &EspPacket<T>) -> Self {
        EspRepr {
            spi: packet.spi(),
            seq_low: packet.seq_low(),
            iv: packet.iv(),
        }
    }

    /// Writes the header fields.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut EspPacket<T>) {
        packet.set_spi(self.spi);
        packet.set_seq_low(self.seq_low);
        packet.set_iv(self.iv);
    }
}

/// Reads the SPI of anything that looks like ESP, for SAD lookup before the
/// full length check.
pub fn peek_spi(packet: &[u8]) -> Result<u32, DropReason> {
    match packet.get(field::SPI) {
        Some(b) => Ok(u32::from_be_bytes(be4(b))),
        None => Err(DropReason::Truncated),
    }
}

pub(crate) fn be4(b: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(&b[..4]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_aligns_to_four_bytes() {
        for len in 0..64 {
            let pad = pad_len_for(len);
            assert!(pad < PAD_ALIGN);
            assert_eq!((len + pad + TRAILER_LEN) % PAD_ALIGN, 0, "len {len}");
            assert!(sealed_len(len) - len <= ESP_HEADROOM + ESP_TAILROOM);
        }
        // RFC 7634 Appendix A: 84-byte inner packet gets 2 pad bytes.
        assert_eq!(pad_len_for(84), 2);
    }

    #[test]
    fn header_round_trip_and_short_buffer() {
        assert_eq!(
            EspPacket::new_checked(&[0u8; MIN_PACKET_LEN - 1][..]).unwrap_err(),
            DropReason::Truncated
        );
        let mut buf = [0u8; MIN_PACKET_LEN];
        let repr = EspRepr {
            spi: 0x0102_0304,
            seq_low: 5,
            iv: [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17],
        };
        let mut pkt = EspPacket::new_checked(&mut buf[..]).unwrap();
        repr.emit(&mut pkt);
        assert_eq!(&buf[..8], &[1, 2, 3, 4, 0, 0, 0, 5]);
        let pkt = EspPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(EspRepr::parse(&pkt), repr);
        assert_eq!(pkt.ciphertext().len(), TRAILER_LEN);
        assert_eq!(peek_spi(&buf[..3]), Err(DropReason::Truncated));
    }
}
