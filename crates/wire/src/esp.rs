//! ESP header (RFC 4303 §2) and the UDP encapsulation of RFC 3948.
//!
//! Only the cleartext part is parsed here: SPI and sequence number. The
//! trailer (padding, pad length, next header) lives inside the ciphertext
//! and is read by [`split_trailer`] after decryption.

use crate::error::{need, room, Error, Result};
use crate::IpProtocol;

mod field {
    use core::ops::Range;
    pub const SPI: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const PAYLOAD: usize = 8;
}

/// Length of the ESP header (SPI + sequence number).
pub const HEADER_LEN: usize = field::PAYLOAD;
/// UDP port for IKE and ESP-in-UDP after NAT detection (RFC 3948 §2).
pub const NAT_T_PORT: u16 = 4500;
/// Length of the non-ESP marker that prefixes IKE on port 4500 (RFC 3948 §2.2).
pub const NON_ESP_MARKER_LEN: usize = 4;
/// The NAT-keepalive payload byte (RFC 3948 §2.3).
pub const NAT_KEEPALIVE: u8 = 0xff;

/// A read/write view of an ESP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer holding at least SPI and sequence number, with an SPI
    /// that is not the reserved value 0 (RFC 4303 §2.1).
    pub fn new_checked(buffer: T) -> Result<Self> {
        need("esp header", buffer.as_ref(), HEADER_LEN)?;
        let packet = Self { buffer };
        if packet.spi() == 0 {
            return Err(Error::Malformed {
                what: "esp",
                reason: "SPI 0 is reserved",
            });
        }
        Ok(packet)
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Security Parameters Index.
    pub fn spi(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SPI];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Sequence number (low 32 bits when ESN is in use, RFC 4303 §2.2.1).
    pub fn sequence_number(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SEQ];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Everything after the header: IV, ciphertext, ICV.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EspPacket<T> {
    /// Sets the SPI.
    pub fn set_spi(&mut self, spi: u32) {
        self.buffer.as_mut()[field::SPI].copy_from_slice(&spi.to_be_bytes());
    }

    /// Sets the sequence number.
    pub fn set_sequence_number(&mut self, seq: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    /// Mutable payload.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// The ESP header in meaning form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EspRepr {
    /// Security Parameters Index.
    pub spi: u32,
    /// Sequence number (low 32 bits).
    pub sequence_number: u32,
}

impl EspRepr {
    /// Parses a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &EspPacket<T>) -> Self {
        Self {
            spi: packet.spi(),
            sequence_number: packet.sequence_number(),
        }
    }

    /// Writes the header at the start of `buf`; returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        room(buf, HEADER_LEN)?;
        let mut packet = EspPacket::new_unchecked(&mut buf[..HEADER_LEN]);
        packet.set_spi(self.spi);
        packet.set_sequence_number(self.sequence_number);
        Ok(HEADER_LEN)
    }
}

/// What a UDP datagram to or from port 4500 carries (RFC 3948 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatTraversalPayload<'a> {
    /// A single 0xFF byte sent to keep NAT bindings alive (§2.3).
    Keepalive,
    /// An IKE message, with the four-byte non-ESP marker removed (§2.2).
    Ike(&'a [u8]),
    /// An ESP packet (§2.1): the first four bytes are a non-zero SPI.
    Esp(EspPacket<&'a [u8]>),
}

/// Classifies a UDP/4500 payload. The first four bytes decide: all zero is
/// the non-ESP marker (IKE); otherwise they are an SPI. A lone 0xFF is a
/// keepalive; any other payload shorter than an ESP header is malformed.
pub fn classify_nat_traversal(payload: &[u8]) -> Result<NatTraversalPayload<'_>> {
    match payload {
        [] => Err(Error::Truncated {
            what: "udp-encapsulated esp",
            needed: 1,
            available: 0,
        }),
        [NAT_KEEPALIVE] => Ok(NatTraversalPayload::Keepalive),
        [0, 0, 0, 0, ike @ ..] => Ok(NatTraversalPayload::Ike(ike)),
        _ if payload.len() < HEADER_LEN => Err(Error::Truncated {
            what: "udp-encapsulated esp",
            needed: HEADER_LEN,
            available: payload.len(),
        }),
        _ => EspPacket::new_checked(payload).map(NatTraversalPayload::Esp),
    }
}

/// Splits a decrypted ESP payload into data and next header, checking the
/// trailer (RFC 4303 §2.4–2.6): pad length must fit, and the padding must be
/// the default monotonic 1, 2, 3, ... sequence, which the receiver checks.
pub fn split_trailer(plaintext: &[u8]) -> Result<(&[u8], IpProtocol)> {
    let [rest @ .., pad_len, next_header] = plaintext else {
        return Err(Error::Truncated {
            what: "esp trailer",
            needed: 2,
            available: plaintext.len(),
        });
    };
    let pad_len = usize::from(*pad_len);
    if pad_len > rest.len() {
        return Err(Error::Malformed {
            what: "esp trailer",
            reason: "pad length exceeds payload",
        });
    }
    let (data, padding) = rest.split_at(rest.len() - pad_len);
    if padding
        .iter()
        .zip(1u8..)
        .any(|(&byte, expected)| byte != expected)
    {
        return Err(Error::Malformed {
            what: "esp trailer",
            reason: "padding is not 1, 2, 3, ...",
        });
    }
    Ok((data, IpProtocol(*next_header)))
}

/// Padding needed so that `data_len` plus the two trailer bytes is a multiple
/// of `block` (RFC 4303 §2.4; AEAD modes still align to 4 bytes).
pub const fn padding_len(data_len: usize, block: usize) -> usize {
    let block = if block < 4 { 4 } else { block };
    (block - (data_len + 2) % block) % block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut buf = [0u8; 24];
        EspRepr {
            spi: 0x1000_0001,
            sequence_number: 7,
        }
        .emit(&mut buf)
        .unwrap();
        let packet = EspPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.spi(), 0x1000_0001);
        assert_eq!(packet.sequence_number(), 7);
        assert_eq!(packet.payload().len(), 16);
    }

    #[test]
    fn spi_zero_and_short_are_errors() {
        assert!(matches!(
            EspPacket::new_checked(&[0u8; 8][..]),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            EspPacket::new_checked(&[1u8; 7][..]),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn nat_t_classification() {
        assert_eq!(
            classify_nat_traversal(&[0xff]),
            Ok(NatTraversalPayload::Keepalive)
        );
        let ike = [0, 0, 0, 0, 0xaa, 0xbb];
        assert_eq!(
            classify_nat_traversal(&ike),
            Ok(NatTraversalPayload::Ike(&[0xaa, 0xbb][..]))
        );
        let esp = [0, 0, 1, 0, 0, 0, 0, 1, 0xde, 0xad];
        match classify_nat_traversal(&esp) {
            Ok(NatTraversalPayload::Esp(p)) => {
                assert_eq!(p.spi(), 256);
                assert_eq!(p.payload(), &[0xde, 0xad]);
            }
            other => panic!("expected ESP, got {other:?}"),
        }
        assert!(classify_nat_traversal(&[]).is_err());
        assert!(classify_nat_traversal(&[0xfe]).is_err());
        assert!(classify_nat_traversal(&[1, 2, 3, 4, 5]).is_err());
        // Three zero bytes are neither a marker nor an SPI.
        assert!(classify_nat_traversal(&[0, 0, 0]).is_err());
    }

    #[test]
    fn trailer_split_and_padding() {
        let pt = [0x45, 0x00, 0x11, 1, 2, 3, 3, 4];
        assert_eq!(split_trailer(&pt), Ok((&pt[..3], IpProtocol::IPV4)));
        let bad = [0x45, 1, 3, 3, 4];
        assert!(split_trailer(&bad).is_err());
        let bad_order = [0x45, 2, 1, 2, 4];
        assert!(split_trailer(&bad_order).is_err());
        assert!(split_trailer(&[4]).is_err());
        assert_eq!(padding_len(3, 4), 3);
        assert_eq!(padding_len(2, 4), 0);
        assert_eq!(padding_len(14, 16), 0);
        assert_eq!(padding_len(15, 16), 15);
        assert_eq!(padding_len(6, 1), 0);
    }
}
