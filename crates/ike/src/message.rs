//! IKEv2 messages on the wire: the fixed header (RFC 7296 §3.1) and the
//! chain of generic payloads (§3.2), validated once.
//!
//! [`Message::parse`] checks the header, the total length and every link
//! of the payload chain before anything else looks at the bytes; the
//! [`RawPayload`]s it yields are slices of the input, never copies. An
//! encrypted message ends with its SK payload (§3.14), whose body is kept
//! aside for [`crate::crypto`] to open; the decrypted inner chain is parsed
//! by [`parse_chain`] with the same rules.
//!
//! The typed payload bodies live in [`crate::payload`].

use crate::error::ParseError;

/// Length of the fixed IKE header (§3.1).
pub const HEADER_LEN: usize = 28;
/// Length of the generic payload header (§3.2).
pub const PAYLOAD_HEADER_LEN: usize = 4;
/// IKEv2 major version 2, minor 0 (§3.1).
pub const VERSION: u8 = 0x20;

/// Exchange types (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeType {
    /// IKE_SA_INIT (34).
    IkeSaInit,
    /// IKE_AUTH (35).
    IkeAuth,
    /// CREATE_CHILD_SA (36).
    CreateChildSa,
    /// INFORMATIONAL (37).
    Informational,
    /// Anything else; such requests are dropped.
    Other(u8),
}

impl From<u8> for ExchangeType {
    fn from(v: u8) -> Self {
        match v {
            34 => ExchangeType::IkeSaInit,
            35 => ExchangeType::IkeAuth,
            36 => ExchangeType::CreateChildSa,
            37 => ExchangeType::Informational,
            other => ExchangeType::Other(other),
        }
    }
}

impl From<ExchangeType> for u8 {
    fn from(e: ExchangeType) -> u8 {
        match e {
            ExchangeType::IkeSaInit => 34,
            ExchangeType::IkeAuth => 35,
            ExchangeType::CreateChildSa => 36,
            ExchangeType::Informational => 37,
            ExchangeType::Other(v) => v,
        }
    }
}

/// Header flag bits (§3.1).
pub mod flags {
    /// Set by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// "Version": the sender could speak a higher major version.
    pub const VERSION: u8 = 0x10;
    /// This message is a response.
    pub const RESPONSE: u8 = 0x20;
}

/// Payload type codes (§3.2).
#[allow(missing_docs)]
pub mod payload_type {
    pub const NONE: u8 = 0;
    pub const SA: u8 = 33;
    pub const KE: u8 = 34;
    pub const IDI: u8 = 35;
    pub const IDR: u8 = 36;
    pub const CERT: u8 = 37;
    pub const CERTREQ: u8 = 38;
    pub const AUTH: u8 = 39;
    pub const NONCE: u8 = 40;
    pub const NOTIFY: u8 = 41;
    pub const DELETE: u8 = 42;
    pub const VENDOR: u8 = 43;
    pub const TSI: u8 = 44;
    pub const TSR: u8 = 45;
    pub const SK: u8 = 46;
    pub const CP: u8 = 47;
    pub const EAP: u8 = 48;

    /// Whether RFC 7296 defines the type, i.e. the critical bit is to be
    /// ignored for it (§3.2).
    pub fn is_known(t: u8) -> bool {
        (SA..=EAP).contains(&t)
    }
}

/// The critical bit in the generic payload header (§3.2).
pub const CRITICAL: u8 = 0x80;

mod field {
    use core::ops::Range;
    pub const SPI_I: Range<usize> = 0..8;
    pub const SPI_R: Range<usize> = 8..16;
    pub const NEXT: usize = 16;
    pub const VERSION: usize = 17;
    pub const EXCHANGE: usize = 18;
    pub const FLAGS: usize = 19;
    pub const MESSAGE_ID: Range<usize> = 20..24;
    pub const LENGTH: Range<usize> = 24..28;
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// The fixed IKE header as plain values (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// IKE SA Initiator's SPI.
    pub spi_i: u64,
    /// IKE SA Responder's SPI; zero in the first IKE_SA_INIT request.
    pub spi_r: u64,
    /// Type of the first payload.
    pub next_payload: u8,
    /// Major (high nibble) and minor version.
    pub version: u8,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flag bits, see [`flags`].
    pub flags: u8,
    /// Message ID (§2.2).
    pub message_id: u32,
    /// Total length of the message, header included.
    pub length: u32,
}

impl Header {
    /// Reads and checks the header: major version 2, a length that covers
    /// the header and does not exceed `data` (§3.1). Bytes after the stated
    /// length are refused too: IKE over UDP is one message per datagram.
    pub fn parse(data: &[u8]) -> Result<Header, ParseError> {
        if data.len() < HEADER_LEN {
            return Err(ParseError::Truncated {
                what: "IKE header",
                need: HEADER_LEN,
                have: data.len(),
            });
        }
        let h = Header {
            spi_i: be64(&data[field::SPI_I]),
            spi_r: be64(&data[field::SPI_R]),
            next_payload: data[field::NEXT],
            version: data[field::VERSION],
            exchange: ExchangeType::from(data[field::EXCHANGE]),
            flags: data[field::FLAGS],
            message_id: be32(&data[field::MESSAGE_ID]),
            length: be32(&data[field::LENGTH]),
        };
        // §3.1: a major version above 2 is answered with
        // INVALID_MAJOR_VERSION; anything but 2 is not parsed further.
        if h.version >> 4 != 2 {
            return Err(ParseError::MajorVersion(h.version >> 4));
        }
        let len = h.length as usize;
        if len < HEADER_LEN || len != data.len() {
            return Err(ParseError::Length {
                what: "IKE message",
                stated: len,
                have: data.len(),
            });
        }
        Ok(h)
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn emit(&self, out: &mut [u8]) {
        out[field::SPI_I].copy_from_slice(&self.spi_i.to_be_bytes());
        out[field::SPI_R].copy_from_slice(&self.spi_r.to_be_bytes());
        out[field::NEXT] = self.next_payload;
        out[field::VERSION] = self.version;
        out[field::EXCHANGE] = self.exchange.into();
        out[field::FLAGS] = self.flags;
        out[field::MESSAGE_ID].copy_from_slice(&self.message_id.to_be_bytes());
        out[field::LENGTH].copy_from_slice(&self.length.to_be_bytes());
    }

    /// True for a response (R flag).
    pub fn is_response(&self) -> bool {
        self.flags & flags::RESPONSE != 0
    }

    /// True if the sender is the original initiator of the IKE SA (I flag).
    pub fn from_initiator(&self) -> bool {
        self.flags & flags::INITIATOR != 0
    }
}

/// One payload of a chain: its type (taken from the previous link), the
/// critical bit and its body (the bytes after the generic header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPayload<'a> {
    /// Payload type.
    pub kind: u8,
    /// Critical bit as sent.
    pub critical: bool,
    /// Body after the 4-byte generic header.
    pub body: &'a [u8],
}

/// The encrypted payload of a message (§3.14) and where it sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptedPayload<'a> {
    /// Type of the first payload inside.
    pub first_inner: u8,
    /// Offset of the SK payload's generic header in the message; the
    /// associated data of an AEAD cipher runs to its end (RFC 5282 §5.1).
    pub header_offset: usize,
    /// IV || ciphertext || ICV.
    pub body: &'a [u8],
}

/// A validated IKE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The fixed header.
    pub header: Header,
    /// Payloads outside the SK payload, in order; unknown non-critical ones
    /// are already skipped.
    pub payloads: Vec<RawPayload<'a>>,
    /// The SK payload, if the message has one.
    pub encrypted: Option<EncryptedPayload<'a>>,
    /// The whole message.
    pub bytes: &'a [u8],
}

impl<'a> Message<'a> {
    /// Parses and validates a message (header and payload chain).
    pub fn parse(data: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let header = Header::parse(data)?;
        let (payloads, encrypted) = walk_chain(header.next_payload, data, HEADER_LEN, true)?;
        Ok(Message {
            header,
            payloads,
            encrypted,
            bytes: data,
        })
    }
}

/// Parses a decrypted inner payload chain starting with type `first`.
/// An SK payload inside an SK payload is refused.
pub fn parse_chain(first: u8, data: &[u8]) -> Result<Vec<RawPayload<'_>>, ParseError> {
    walk_chain(first, data, 0, false).map(|(p, _)| p)
}

type Chain<'a> = (Vec<RawPayload<'a>>, Option<EncryptedPayload<'a>>);

fn walk_chain(
    first: u8,
    data: &[u8],
    start: usize,
    allow_sk: bool,
) -> Result<Chain<'_>, ParseError> {
    let mut payloads = Vec::new();
    let mut next = first;
    let mut off = start;
    while next != payload_type::NONE {
        let rest = data.get(off..).unwrap_or_default();
        if rest.len() < PAYLOAD_HEADER_LEN {
            return Err(ParseError::Truncated {
                what: "generic payload header",
                need: PAYLOAD_HEADER_LEN,
                have: rest.len(),
            });
        }
        let kind = next;
        let following = rest[0];
        let critical = rest[1] & CRITICAL != 0;
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if len < PAYLOAD_HEADER_LEN || len > rest.len() {
            return Err(ParseError::Length {
                what: "payload",
                stated: len,
                have: rest.len(),
            });
        }
        let body = &rest[PAYLOAD_HEADER_LEN..len];
        if kind == payload_type::SK {
            // §3.14: the Encrypted payload, if present, MUST be the last
            // payload; its Next Payload names the first inner one.
            if !allow_sk {
                return Err(ParseError::Malformed("SK payload inside an SK payload"));
            }
            if len != rest.len() {
                return Err(ParseError::Malformed("SK payload is not the last payload"));
            }
            return Ok((
                payloads,
                Some(EncryptedPayload {
                    first_inner: following,
                    header_offset: off,
                    body,
                }),
            ));
        }
        if payload_type::is_known(kind) {
            payloads.push(RawPayload {
                kind,
                critical,
                body,
            });
        } else if critical {
            // §2.5: an unrecognised payload with the critical bit set
            // rejects the whole message.
            return Err(ParseError::UnsupportedCritical(kind));
        }
        off += len;
        next = following;
    }
    if off != data.len() {
        return Err(ParseError::Malformed("bytes after the last payload"));
    }
    Ok((payloads, None))
}

/// Builds a payload chain: each payload's type goes into the previous
/// link's Next Payload field, lengths are filled in as the bodies are
/// written.
#[derive(Debug, Default, Clone)]
pub struct ChainBuilder {
    buf: Vec<u8>,
    first: u8,
    /// Offset of the last payload's Next Payload byte.
    last_link: Option<usize>,
}

impl ChainBuilder {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a payload of `kind` whose body `write` appends to the
    /// buffer it is given. `critical` sets the critical bit (only for
    /// tests: RFC 7296 types are sent with it clear, §3.2).
    pub fn push_with(&mut self, kind: u8, critical: bool, write: impl FnOnce(&mut Vec<u8>)) {
        match self.last_link {
            Some(at) => self.buf[at] = kind,
            None => self.first = kind,
        }
        let start = self.buf.len();
        self.last_link = Some(start);
        self.buf
            .extend_from_slice(&[0, if critical { CRITICAL } else { 0 }, 0, 0]);
        write(&mut self.buf);
        let len = (self.buf.len() - start) as u16;
        self.buf[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends a payload with a ready body.
    pub fn push(&mut self, kind: u8, body: &[u8]) {
        self.push_with(kind, false, |b| b.extend_from_slice(body));
    }

    /// The type of the first payload (NONE for an empty chain) and the bytes.
    pub fn finish(self) -> (u8, Vec<u8>) {
        (self.first, self.buf)
    }
}

/// An unencrypted message: `header` (its next-payload and length are
/// filled in) followed by `chain`.
pub fn emit_plain(mut header: Header, chain: ChainBuilder) -> Vec<u8> {
    let (first, body) = chain.finish();
    header.next_payload = first;
    header.length = (HEADER_LEN + body.len()) as u32;
    let mut out = vec![0u8; HEADER_LEN];
    header.emit(&mut out);
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            spi_i: 0x0102030405060708,
            spi_r: 0,
            next_payload: 0,
            version: VERSION,
            exchange: ExchangeType::IkeSaInit,
            flags: flags::INITIATOR,
            message_id: 0,
            length: 0,
        }
    }

    #[test]
    fn round_trips_a_chain() {
        let mut c = ChainBuilder::new();
        c.push(payload_type::NONCE, &[1; 16]);
        c.push(payload_type::VENDOR, b"vendor");
        let bytes = emit_plain(header(), c);
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.header.spi_i, 0x0102030405060708);
        assert_eq!(m.header.length as usize, bytes.len());
        assert_eq!(m.payloads.len(), 2);
        assert_eq!(m.payloads[0].kind, payload_type::NONCE);
        assert_eq!(m.payloads[0].body, &[1; 16]);
        assert_eq!(m.payloads[1].body, b"vendor");
        assert!(m.encrypted.is_none());
    }

    #[test]
    fn unknown_payloads_skipped_unless_critical() {
        let mut c = ChainBuilder::new();
        c.push_with(200, false, |b| b.extend_from_slice(b"skip me"));
        c.push(payload_type::NONCE, &[2; 16]);
        let bytes = emit_plain(header(), c);
        let m = Message::parse(&bytes).unwrap();
        assert_eq!(m.payloads.len(), 1);
        assert_eq!(m.payloads[0].kind, payload_type::NONCE);

        let mut c = ChainBuilder::new();
        c.push(payload_type::NONCE, &[2; 16]);
        c.push_with(200, true, |b| b.extend_from_slice(b"refuse"));
        let bytes = emit_plain(header(), c);
        assert_eq!(
            Message::parse(&bytes),
            Err(ParseError::UnsupportedCritical(200))
        );

        // The bit is ignored on types RFC 7296 defines.
        let mut c = ChainBuilder::new();
        c.push_with(payload_type::NONCE, true, |b| b.extend_from_slice(&[3; 16]));
        let bytes = emit_plain(header(), c);
        assert_eq!(Message::parse(&bytes).unwrap().payloads.len(), 1);
    }

    #[test]
    fn refuses_bad_lengths_and_versions() {
        let mut c = ChainBuilder::new();
        c.push(payload_type::NONCE, &[1; 16]);
        let bytes = emit_plain(header(), c);
        // Truncated, extended, wrong total length.
        for cut in 0..bytes.len() {
            assert!(Message::parse(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Message::parse(&longer).is_err());
        // Payload length running past the end.
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 3] = 0xff;
        assert!(matches!(
            Message::parse(&bad),
            Err(ParseError::Length { .. })
        ));
        // Payload length below the generic header.
        let mut bad = bytes.clone();
        bad[HEADER_LEN + 2] = 0;
        bad[HEADER_LEN + 3] = 3;
        assert!(Message::parse(&bad).is_err());
        // A chain that claims another payload after the last.
        let mut bad = bytes.clone();
        bad[HEADER_LEN] = payload_type::NONCE;
        assert!(Message::parse(&bad).is_err());
        let mut bad = bytes;
        bad[17] = 0x30;
        assert_eq!(Message::parse(&bad), Err(ParseError::MajorVersion(3)));
    }

    #[test]
    fn sk_must_be_last() {
        let mut c = ChainBuilder::new();
        c.push(payload_type::SK, &[0; 24]);
        let bytes = emit_plain(header(), c);
        let m = Message::parse(&bytes).unwrap();
        let sk = m.encrypted.unwrap();
        assert_eq!(sk.header_offset, HEADER_LEN);
        assert_eq!(sk.body.len(), 24);

        let mut c = ChainBuilder::new();
        c.push(payload_type::SK, &[0; 24]);
        c.push(payload_type::NONCE, &[0; 16]);
        let bytes = emit_plain(header(), c);
        assert!(Message::parse(&bytes).is_err());
        assert!(parse_chain(payload_type::SK, &[0, 0, 0, 4]).is_err());
    }
}
