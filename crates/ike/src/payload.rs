//! Payload bodies (RFC 7296 §3.3–§3.13): parsed from the slices
//! [`crate::message`] yields, emitted into a [`crate::message::ChainBuilder`].
//!
//! Every parser checks every length against the bytes it was given and
//! returns [`ParseError`] rather than panicking; the parsed forms borrow
//! SPIs, key exchange data and notification data from the message.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::ParseError;

/// Protocol IDs (§3.3.1).
#[allow(missing_docs)]
pub mod protocol {
    pub const IKE: u8 = 1;
    pub const AH: u8 = 2;
    pub const ESP: u8 = 3;
}

/// Transform types and the IDs this crate speaks (§3.3.2, IANA registry).
#[allow(missing_docs)]
pub mod transform {
    pub const ENCR: u8 = 1;
    pub const PRF: u8 = 2;
    pub const INTEG: u8 = 3;
    pub const DH: u8 = 4;
    pub const ESN: u8 = 5;

    /// ENCR_AES_GCM_16 (RFC 5282 for IKE, RFC 4106 for ESP).
    pub const ENCR_AES_GCM_16: u16 = 20;
    /// ENCR_CHACHA20_POLY1305 (RFC 7634).
    pub const ENCR_CHACHA20_POLY1305: u16 = 28;
    /// PRF_HMAC_SHA2_256 (RFC 4868).
    pub const PRF_HMAC_SHA2_256: u16 = 5;
    /// 256-bit random ECP group (RFC 5903).
    pub const DH_ECP256: u16 = 19;
    /// Curve25519 (RFC 8031).
    pub const DH_CURVE25519: u16 = 31;
    /// No extended sequence numbers.
    pub const ESN_NO: u16 = 0;
    /// Extended sequence numbers.
    pub const ESN_YES: u16 = 1;
    /// The Key Length attribute type (§3.3.5), always TV format.
    pub const ATTR_KEY_LENGTH: u16 = 14;
}

/// Notify message types (§3.10.1).
#[allow(missing_docs)]
pub mod notify {
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: u16 = 1;
    pub const INVALID_IKE_SPI: u16 = 4;
    pub const INVALID_MAJOR_VERSION: u16 = 5;
    pub const INVALID_SYNTAX: u16 = 7;
    pub const INVALID_MESSAGE_ID: u16 = 9;
    pub const INVALID_SPI: u16 = 11;
    pub const NO_PROPOSAL_CHOSEN: u16 = 14;
    pub const INVALID_KE_PAYLOAD: u16 = 17;
    pub const AUTHENTICATION_FAILED: u16 = 24;
    pub const SINGLE_PAIR_REQUIRED: u16 = 34;
    pub const NO_ADDITIONAL_SAS: u16 = 35;
    pub const INTERNAL_ADDRESS_FAILURE: u16 = 36;
    pub const FAILED_CP_REQUIRED: u16 = 37;
    pub const TS_UNACCEPTABLE: u16 = 38;
    pub const INVALID_SELECTORS: u16 = 39;
    pub const TEMPORARY_FAILURE: u16 = 43;
    pub const CHILD_SA_NOT_FOUND: u16 = 44;
    pub const INITIAL_CONTACT: u16 = 16384;
    pub const NAT_DETECTION_SOURCE_IP: u16 = 16388;
    pub const NAT_DETECTION_DESTINATION_IP: u16 = 16389;
    pub const COOKIE: u16 = 16390;
    pub const USE_TRANSPORT_MODE: u16 = 16391;
    pub const REKEY_SA: u16 = 16393;

    /// Types below 16384 report errors (§3.10.1).
    pub fn is_error(t: u16) -> bool {
        t < 16384
    }
}

/// Identification types (§3.5).
#[allow(missing_docs)]
pub mod id_type {
    pub const IPV4_ADDR: u8 = 1;
    pub const FQDN: u8 = 2;
    pub const RFC822_ADDR: u8 = 3;
    pub const IPV6_ADDR: u8 = 5;
    pub const KEY_ID: u8 = 11;
}

/// Authentication method: Shared Key Message Integrity Code (§3.8).
pub const AUTH_SHARED_KEY: u8 = 2;

fn need(what: &'static str, data: &[u8], n: usize) -> Result<(), ParseError> {
    if data.len() < n {
        Err(ParseError::Truncated {
            what,
            need: n,
            have: data.len(),
        })
    } else {
        Ok(())
    }
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// One transform (§3.3.2) with its only attribute we know, the key length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transform {
    /// Transform type, see [`transform`].
    pub kind: u8,
    /// Transform ID.
    pub id: u16,
    /// Key Length attribute in bits (§3.3.5), if present.
    pub key_bits: Option<u16>,
    /// The transform had an attribute other than the key length; it is
    /// never selected (§3.3.6).
    pub unknown_attribute: bool,
}

impl Transform {
    /// A transform without attributes.
    pub const fn new(kind: u8, id: u16) -> Self {
        Transform {
            kind,
            id,
            key_bits: None,
            unknown_attribute: false,
        }
    }

    /// A transform with a Key Length attribute.
    pub const fn with_key(kind: u8, id: u16, bits: u16) -> Self {
        Transform {
            kind,
            id,
            key_bits: Some(bits),
            unknown_attribute: false,
        }
    }
}

/// One proposal substructure (§3.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal<'a> {
    /// Proposal number; the first is 1, the rest consecutive.
    pub num: u8,
    /// Protocol ID, see [`protocol`].
    pub protocol: u8,
    /// SPI: empty for a first IKE_SA_INIT, 8 bytes for IKE rekey, 4 for ESP.
    pub spi: &'a [u8],
    /// Transforms in the order sent.
    pub transforms: Vec<Transform>,
}

impl Proposal<'_> {
    /// The transforms of one type, in order.
    pub fn of_type(&self, kind: u8) -> impl Iterator<Item = &Transform> + '_ {
        self.transforms.iter().filter(move |t| t.kind == kind)
    }
}

/// Parses an SA payload body into its proposals (§3.3).
pub fn parse_sa(body: &[u8]) -> Result<Vec<Proposal<'_>>, ParseError> {
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        need("proposal", rest, 8)?;
        let last = rest[0];
        let len = usize::from(be16(&rest[2..]));
        if len < 8 || len > rest.len() {
            return Err(ParseError::Length {
                what: "proposal",
                stated: len,
                have: rest.len(),
            });
        }
        let (p, after) = rest.split_at(len);
        let num = p[4];
        let protocol = p[5];
        let spi_size = usize::from(p[6]);
        let count = usize::from(p[7]);
        need("proposal SPI", &p[8..], spi_size)?;
        let spi = &p[8..8 + spi_size];
        let transforms = parse_transforms(&p[8 + spi_size..], count)?;
        // §3.3.1: proposal numbers start at 1 and go up one by one; an
        // answer's single proposal keeps the number of the one it accepts
        // ("the proposal number in the SA payload MUST match the number on
        // the proposal sent that was accepted").
        let only = out.is_empty() && last == 0;
        if usize::from(num) != out.len() + 1 && !(only && num >= 1) {
            return Err(ParseError::Malformed(
                "proposal numbers not consecutive from 1",
            ));
        }
        out.push(Proposal {
            num,
            protocol,
            spi,
            transforms,
        });
        match last {
            0 if after.is_empty() => return Ok(out),
            2 if !after.is_empty() => rest = after,
            0 | 2 => {
                return Err(ParseError::Malformed(
                    "last-proposal flag disagrees with length",
                ))
            }
            _ => {
                return Err(ParseError::Malformed(
                    "proposal substructure type not 0 or 2",
                ))
            }
        }
    }
}

fn parse_transforms(mut rest: &[u8], count: usize) -> Result<Vec<Transform>, ParseError> {
    let mut out = Vec::with_capacity(count.min(64));
    for i in 0..count {
        need("transform", rest, 8)?;
        let last = rest[0];
        let len = usize::from(be16(&rest[2..]));
        if len < 8 || len > rest.len() {
            return Err(ParseError::Length {
                what: "transform",
                stated: len,
                have: rest.len(),
            });
        }
        let (t, after) = rest.split_at(len);
        let is_last = i + 1 == count;
        if (last == 0) != is_last || (last != 0 && last != 3) {
            return Err(ParseError::Malformed(
                "last-transform flag disagrees with count",
            ));
        }
        let mut tr = Transform::new(t[4], be16(&t[6..]));
        let mut attrs = &t[8..];
        while !attrs.is_empty() {
            need("transform attribute", attrs, 4)?;
            let ty = be16(attrs);
            let (kind, tv) = (ty & 0x7fff, ty & 0x8000 != 0);
            let used = if tv {
                4
            } else {
                let l = usize::from(be16(&attrs[2..]));
                need("transform attribute value", &attrs[4..], l)?;
                4 + l
            };
            if tv && kind == transform::ATTR_KEY_LENGTH {
                tr.key_bits = Some(be16(&attrs[2..]));
            } else {
                tr.unknown_attribute = true;
            }
            attrs = &attrs[used..];
        }
        out.push(tr);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(ParseError::Malformed("bytes after the last transform"));
    }
    Ok(out)
}

/// Writes an SA payload body. Proposal numbers are taken as given.
pub fn emit_sa(out: &mut Vec<u8>, proposals: &[Proposal<'_>]) {
    for (i, p) in proposals.iter().enumerate() {
        let start = out.len();
        let last = if i + 1 == proposals.len() { 0 } else { 2 };
        out.extend_from_slice(&[
            last,
            0,
            0,
            0,
            p.num,
            p.protocol,
            p.spi.len() as u8,
            p.transforms.len() as u8,
        ]);
        out.extend_from_slice(p.spi);
        for (j, t) in p.transforms.iter().enumerate() {
            let last = if j + 1 == p.transforms.len() { 0 } else { 3 };
            let len: u16 = if t.key_bits.is_some() { 12 } else { 8 };
            out.extend_from_slice(&[last, 0]);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&[t.kind, 0]);
            out.extend_from_slice(&t.id.to_be_bytes());
            if let Some(bits) = t.key_bits {
                out.extend_from_slice(&(0x8000 | transform::ATTR_KEY_LENGTH).to_be_bytes());
                out.extend_from_slice(&bits.to_be_bytes());
            }
        }
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// Key Exchange payload (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyExchange<'a> {
    /// Diffie-Hellman group number.
    pub group: u16,
    /// The public value.
    pub data: &'a [u8],
}

impl<'a> KeyExchange<'a> {
    /// Parses the body.
    pub fn parse(body: &'a [u8]) -> Result<Self, ParseError> {
        need("KE payload", body, 4)?;
        Ok(KeyExchange {
            group: be16(body),
            data: &body[4..],
        })
    }

    /// Writes the body.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.group.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(self.data);
    }
}

/// Identification (§3.5) and Authentication (§3.8) payloads share a shape:
/// one type octet, three reserved, data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypedData<'a> {
    /// ID type or authentication method.
    pub kind: u8,
    /// Identification or authentication data.
    pub data: &'a [u8],
}

impl<'a> TypedData<'a> {
    /// Parses an IDi/IDr or AUTH body.
    pub fn parse(body: &'a [u8]) -> Result<Self, ParseError> {
        need("ID/AUTH payload", body, 4)?;
        Ok(TypedData {
            kind: body[0],
            data: &body[4..],
        })
    }

    /// Writes the body.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.kind, 0, 0, 0]);
        out.extend_from_slice(self.data);
    }
}

/// Checks a Nonce payload body: 16 to 256 octets (§3.9).
pub fn parse_nonce(body: &[u8]) -> Result<&[u8], ParseError> {
    if (16..=256).contains(&body.len()) {
        Ok(body)
    } else {
        Err(ParseError::Malformed("nonce not 16 to 256 octets"))
    }
}

/// Notify payload (§3.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify<'a> {
    /// Protocol ID (0 or IKE for the IKE SA, ESP for a CHILD SA).
    pub protocol: u8,
    /// SPI the notification is about, often empty.
    pub spi: &'a [u8],
    /// Notify message type, see [`notify`].
    pub kind: u16,
    /// Notification data.
    pub data: &'a [u8],
}

impl<'a> Notify<'a> {
    /// A notification about the IKE SA, without SPI.
    pub const fn new(kind: u16, data: &'a [u8]) -> Self {
        Notify {
            protocol: 0,
            spi: &[],
            kind,
            data,
        }
    }

    /// Parses the body.
    pub fn parse(body: &'a [u8]) -> Result<Self, ParseError> {
        need("Notify payload", body, 4)?;
        let spi_size = usize::from(body[1]);
        need("Notify SPI", &body[4..], spi_size)?;
        Ok(Notify {
            protocol: body[0],
            spi: &body[4..4 + spi_size],
            kind: be16(&body[2..]),
            data: &body[4 + spi_size..],
        })
    }

    /// Writes the body.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.protocol, self.spi.len() as u8]);
        out.extend_from_slice(&self.kind.to_be_bytes());
        out.extend_from_slice(self.spi);
        out.extend_from_slice(self.data);
    }
}

/// Delete payload (§3.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delete<'a> {
    /// IKE (no SPIs: the SA the message travels on) or ESP.
    pub protocol: u8,
    /// SPI size: 0 for IKE, 4 for ESP.
    pub spi_size: u8,
    /// The SPIs, concatenated.
    pub spis: &'a [u8],
}

impl<'a> Delete<'a> {
    /// Parses the body; the SPI count must match the bytes.
    pub fn parse(body: &'a [u8]) -> Result<Self, ParseError> {
        need("Delete payload", body, 4)?;
        let spi_size = body[1];
        let count = usize::from(be16(&body[2..]));
        let spis = &body[4..];
        if spis.len() != count * usize::from(spi_size) {
            return Err(ParseError::Length {
                what: "Delete payload SPIs",
                stated: count * usize::from(spi_size),
                have: spis.len(),
            });
        }
        Ok(Delete {
            protocol: body[0],
            spi_size,
            spis,
        })
    }

    /// 4-byte SPIs as numbers (ESP/AH); empty for other sizes.
    pub fn spis_u32(&self) -> impl Iterator<Item = u32> + '_ {
        let bytes = if self.spi_size == 4 {
            self.spis
        } else {
            &[][..]
        };
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// Writes a Delete body for ESP SPIs.
    pub fn emit_esp(out: &mut Vec<u8>, spis: &[u32]) {
        out.extend_from_slice(&[protocol::ESP, 4]);
        out.extend_from_slice(&(spis.len() as u16).to_be_bytes());
        for s in spis {
            out.extend_from_slice(&s.to_be_bytes());
        }
    }

    /// Writes a Delete body for the IKE SA itself.
    pub fn emit_ike(out: &mut Vec<u8>) {
        out.extend_from_slice(&[protocol::IKE, 0, 0, 0]);
    }
}

/// TS_IPV4_ADDR_RANGE and TS_IPV6_ADDR_RANGE (§3.13.1).
const TS_IPV4: u8 = 7;
const TS_IPV6: u8 = 8;

/// One traffic selector (§3.13.1): an address range, a port range and an
/// IP protocol (0 = any), both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// IP protocol, 0 for any.
    pub ip_proto: u8,
    /// First port.
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address.
    pub start: IpAddr,
    /// Last address; the same family as `start`.
    pub end: IpAddr,
}

fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn bits_addr(v6: bool, b: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::from(b as u32))
    }
}

impl TrafficSelector {
    /// Every address of `prefix/len`, any protocol and port.
    /// `None` if `len` is longer than the address.
    pub fn prefix(prefix: IpAddr, len: u8) -> Option<Self> {
        let width: u32 = if prefix.is_ipv4() { 32 } else { 128 };
        if u32::from(len) > width {
            return None;
        }
        let host_bits = width - u32::from(len);
        let mask: u128 = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let base = addr_bits(prefix) & !mask;
        let v6 = prefix.is_ipv6();
        let full = if v6 { u128::MAX } else { u128::from(u32::MAX) };
        Some(TrafficSelector {
            ip_proto: 0,
            start_port: 0,
            end_port: 65535,
            start: bits_addr(v6, base),
            end: bits_addr(v6, (base | mask) & full),
        })
    }

    /// Any IPv4 address, protocol and port.
    pub fn any_v4() -> Self {
        Self::prefix(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).expect("0 fits")
    }

    /// The intersection of two selectors, if they overlap (§2.9 narrowing).
    pub fn intersect(&self, other: &TrafficSelector) -> Option<TrafficSelector> {
        if self.start.is_ipv4() != other.start.is_ipv4() {
            return None;
        }
        let ip_proto = match (self.ip_proto, other.ip_proto) {
            (0, p) | (p, 0) => p,
            (a, b) if a == b => a,
            _ => return None,
        };
        let start_port = self.start_port.max(other.start_port);
        let end_port = self.end_port.min(other.end_port);
        let start = addr_bits(self.start).max(addr_bits(other.start));
        let end = addr_bits(self.end).min(addr_bits(other.end));
        if start_port > end_port || start > end {
            return None;
        }
        let v6 = self.start.is_ipv6();
        Some(TrafficSelector {
            ip_proto,
            start_port,
            end_port,
            start: bits_addr(v6, start),
            end: bits_addr(v6, end),
        })
    }

    /// Whether `other` lies entirely within this selector.
    pub fn contains(&self, other: &TrafficSelector) -> bool {
        self.intersect(other).as_ref() == Some(other)
    }

    /// The prefix this range is, if it is exactly one (any port and
    /// protocol aside): `(network, length)`.
    pub fn as_prefix(&self) -> Option<(IpAddr, u8)> {
        let width = if self.start.is_ipv4() { 32 } else { 128 };
        let (s, e) = (addr_bits(self.start), addr_bits(self.end));
        let span = s ^ e;
        let host_bits = 128 - span.leading_zeros();
        let mask = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        (s & mask == 0 && e & mask == mask).then(|| (self.start, (width - host_bits) as u8))
    }
}

/// Parses a TSi/TSr body (§3.13). Selectors of unknown types are skipped.
pub fn parse_ts(body: &[u8]) -> Result<Vec<TrafficSelector>, ParseError> {
    need("TS payload", body, 4)?;
    let count = usize::from(body[0]);
    let mut rest = &body[4..];
    let mut out = Vec::new();
    for _ in 0..count {
        need("traffic selector", rest, 8)?;
        let len = usize::from(be16(&rest[2..]));
        if len < 8 || len > rest.len() {
            return Err(ParseError::Length {
                what: "traffic selector",
                stated: len,
                have: rest.len(),
            });
        }
        let (ts, after) = rest.split_at(len);
        let alen = match ts[0] {
            TS_IPV4 => Some(4),
            TS_IPV6 => Some(16),
            _ => None,
        };
        if let Some(alen) = alen {
            if len != 8 + 2 * alen {
                return Err(ParseError::Malformed(
                    "address range selector of wrong length",
                ));
            }
            let addr = |b: &[u8]| -> IpAddr {
                if alen == 4 {
                    IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                } else {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(&b[..16]);
                    IpAddr::V6(Ipv6Addr::from(a))
                }
            };
            out.push(TrafficSelector {
                ip_proto: ts[1],
                start_port: be16(&ts[4..]),
                end_port: be16(&ts[6..]),
                start: addr(&ts[8..]),
                end: addr(&ts[8 + alen..]),
            });
        }
        rest = after;
    }
    if !rest.is_empty() {
        return Err(ParseError::Malformed(
            "bytes after the last traffic selector",
        ));
    }
    Ok(out)
}

/// Writes a TSi/TSr body. Selectors whose ends mix families are skipped;
/// past the 255 its count field holds (§3.13) the rest are left out, so
/// the count and the selectors always agree.
pub fn emit_ts(out: &mut Vec<u8>, selectors: &[TrafficSelector]) {
    let good: Vec<&TrafficSelector> = selectors
        .iter()
        .filter(|t| t.start.is_ipv4() == t.end.is_ipv4())
        .take(255)
        .collect();
    out.extend_from_slice(&[good.len() as u8, 0, 0, 0]);
    for t in good {
        let (ty, len): (u8, u16) = if t.start.is_ipv4() {
            (TS_IPV4, 16)
        } else {
            (TS_IPV6, 40)
        };
        out.extend_from_slice(&[ty, t.ip_proto]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&t.start_port.to_be_bytes());
        out.extend_from_slice(&t.end_port.to_be_bytes());
        for a in [t.start, t.end] {
            match a {
                IpAddr::V4(v) => out.extend_from_slice(&v.octets()),
                IpAddr::V6(v) => out.extend_from_slice(&v.octets()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp_proposal(spi: &[u8]) -> Proposal<'_> {
        Proposal {
            num: 1,
            protocol: protocol::ESP,
            spi,
            transforms: vec![
                Transform::with_key(transform::ENCR, transform::ENCR_AES_GCM_16, 256),
                Transform::new(transform::ENCR, transform::ENCR_CHACHA20_POLY1305),
                Transform::new(transform::ESN, transform::ESN_YES),
                Transform::new(transform::ESN, transform::ESN_NO),
            ],
        }
    }

    #[test]
    fn sa_round_trip_and_truncation() {
        let spi = [1, 2, 3, 4];
        let mut second = esp_proposal(&spi);
        second.num = 2;
        second.transforms.truncate(1);
        let props = vec![esp_proposal(&spi), second];
        let mut body = Vec::new();
        emit_sa(&mut body, &props);
        assert_eq!(parse_sa(&body).unwrap(), props);
        for cut in 0..body.len() {
            assert!(parse_sa(&body[..cut]).is_err(), "cut at {cut}");
        }
        // Wrong proposal number.
        let mut bad = body.clone();
        bad[4] = 5;
        assert!(parse_sa(&bad).is_err());
        // A last-transform flag in the middle.
        let mut bad = body;
        bad[8 + 4] = 0;
        assert!(parse_sa(&bad).is_err());
    }

    #[test]
    fn notify_delete_ke_id() {
        let mut b = Vec::new();
        Notify {
            protocol: protocol::ESP,
            spi: &[9, 9, 9, 9],
            kind: notify::REKEY_SA,
            data: b"x",
        }
        .emit(&mut b);
        let n = Notify::parse(&b).unwrap();
        assert_eq!(n.kind, notify::REKEY_SA);
        assert_eq!(n.spi, &[9, 9, 9, 9]);
        assert_eq!(n.data, b"x");
        assert!(Notify::parse(&b[..3]).is_err());
        let mut short = b.clone();
        short[1] = 40;
        assert!(Notify::parse(&short).is_err());

        let mut b = Vec::new();
        Delete::emit_esp(&mut b, &[0x1000, 0x2000]);
        let d = Delete::parse(&b).unwrap();
        assert_eq!(d.spis_u32().collect::<Vec<_>>(), [0x1000, 0x2000]);
        assert!(Delete::parse(&b[..b.len() - 1]).is_err());
        let mut b = Vec::new();
        Delete::emit_ike(&mut b);
        assert_eq!(Delete::parse(&b).unwrap().spis_u32().count(), 0);

        let mut b = Vec::new();
        KeyExchange {
            group: 31,
            data: &[7; 32],
        }
        .emit(&mut b);
        let ke = KeyExchange::parse(&b).unwrap();
        assert_eq!((ke.group, ke.data.len()), (31, 32));

        let mut b = Vec::new();
        TypedData {
            kind: id_type::FQDN,
            data: b"vcpe-0001",
        }
        .emit(&mut b);
        assert_eq!(TypedData::parse(&b).unwrap().data, b"vcpe-0001");
        assert!(parse_nonce(&[0; 15]).is_err());
        assert!(parse_nonce(&[0; 32]).is_ok());
    }

    #[test]
    fn selectors_round_trip_narrow_and_name_prefixes() {
        let lan = TrafficSelector::prefix("10.1.0.0".parse().unwrap(), 16).unwrap();
        let v6 = TrafficSelector::prefix("2001:db8::".parse().unwrap(), 32).unwrap();
        let mut b = Vec::new();
        emit_ts(&mut b, &[lan, v6]);
        assert_eq!(parse_ts(&b).unwrap(), vec![lan, v6]);
        for cut in 0..b.len() {
            assert!(parse_ts(&b[..cut]).is_err(), "cut {cut}");
        }
        let any = TrafficSelector::any_v4();
        assert_eq!(any.intersect(&lan), Some(lan));
        assert!(any.contains(&lan) && !lan.contains(&any));
        assert_eq!(lan.intersect(&v6), None);
        let other = TrafficSelector::prefix("10.2.0.0".parse().unwrap(), 16).unwrap();
        assert_eq!(lan.intersect(&other), None);
        assert_eq!(lan.as_prefix(), Some(("10.1.0.0".parse().unwrap(), 16)));
        assert_eq!(any.as_prefix(), Some(("0.0.0.0".parse().unwrap(), 0)));
        assert_eq!(v6.as_prefix(), Some(("2001:db8::".parse().unwrap(), 32)));
        assert!(TrafficSelector::prefix("10.0.0.0".parse().unwrap(), 33).is_none());
    }
}
