//! IPv4 and IPv6 CIDR blocks (`10.1.0.0/16`, `2001:db8::/32`, RFC 4632 §3.1).
//!
//! One type per family and one for either, used for routes (FIB), ESP
//! traffic selectors and NAT rule matches, so a prefix means the same thing
//! wherever an operator writes it.
//!
//! A block names a set of addresses; its host bits (the bits after the
//! prefix length) carry no meaning. [`Ipv4Cidr::new`] and every parser
//! here *refuse* host bits instead of clearing them: `10.1.2.3/16` in a
//! configuration is far more often a mistyped interface address than an
//! intended `10.1.0.0/16`, and quietly using the wider block would route,
//! encrypt or translate traffic nobody asked for. The error names the
//! canonical form so the fix is obvious. Code that really means to clear host
//! bits (deriving the connected subnet of an interface address `10.0.1.1/24`)
//! says so with `new_truncated`.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a CIDR block was refused. Every message starts with the offending
/// input, then the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// No `/` separating the address from the length.
    #[error("{input}: missing prefix length (expected ADDRESS/LENGTH)")]
    MissingLength {
        /// The text that was parsed.
        input: String,
    },
    /// The part before `/` is not an address of the expected family.
    #[error("{input}: {address:?} is not a valid {family} address")]
    BadAddress {
        /// The text that was parsed.
        input: String,
        /// The address part.
        address: String,
        /// `IPv4`, `IPv6` or `IP`.
        family: &'static str,
    },
    /// The part after `/` is not a decimal number.
    #[error("{input}: prefix length {length:?} is not a number")]
    BadLength {
        /// The text that was parsed.
        input: String,
        /// The length part.
        length: String,
    },
    /// The length exceeds the address width (32 or 128).
    #[error("{input}: prefix length {len} exceeds {max}")]
    LengthTooLong {
        /// The block as given.
        input: String,
        /// The requested length.
        len: u32,
        /// The address width.
        max: u8,
    },
    /// Bits beyond the prefix length are set.
    #[error("{input}: host bits set after /{len} (did you mean {canonical}?)")]
    HostBitsSet {
        /// The block as given.
        input: String,
        /// The prefix length.
        len: u8,
        /// The block with its host bits cleared.
        canonical: String,
    },
}

impl CidrError {
    /// The text that was refused.
    pub fn input(&self) -> &str {
        match self {
            CidrError::MissingLength { input }
            | CidrError::BadAddress { input, .. }
            | CidrError::BadLength { input, .. }
            | CidrError::LengthTooLong { input, .. }
            | CidrError::HostBitsSet { input, .. } => input,
        }
    }

    /// The reason alone, for messages that already name the input.
    pub fn reason(&self) -> String {
        let full = self.to_string();
        match full
            .strip_prefix(self.input())
            .and_then(|r| r.strip_prefix(": "))
        {
            Some(r) => r.to_owned(),
            None => full,
        }
    }
}

// The only mask arithmetic for prefixes in the workspace; callers use
// `netmask()`, `contains_addr()` or `new_truncated()`.

/// The IPv4 network mask of `len` leading ones; `len` must be at most 32.
#[inline]
const fn ipv4_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

/// The IPv6 network mask of `len` leading ones; `len` must be at most 128.
#[inline]
const fn ipv6_mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

/// Splits `ADDRESS/LENGTH` and parses the length; shared by both families.
fn split(input: &str, max: u8) -> Result<(&str, u8), CidrError> {
    let (address, length) = input
        .split_once('/')
        .ok_or_else(|| CidrError::MissingLength {
            input: input.to_owned(),
        })?;
    // Only plain decimal digits: `u32::from_str` would also take a leading `+`.
    let bad_length = || CidrError::BadLength {
        input: input.to_owned(),
        length: length.to_owned(),
    };
    if length.is_empty() || length.len() > 9 || !length.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_length());
    }
    let len: u32 = length.parse().map_err(|_| bad_length())?;
    if len > u32::from(max) {
        return Err(CidrError::LengthTooLong {
            input: input.to_owned(),
            len,
            max,
        });
    }
    // `len <= max <= 128` was just checked, so this cannot truncate.
    Ok((address, len as u8))
}

fn bad_address(input: &str, address: &str, family: &'static str) -> CidrError {
    CidrError::BadAddress {
        input: input.to_owned(),
        address: address.to_owned(),
        family,
    }
}

/// Reports an error against the text the user wrote, not a re-rendering.
fn with_input(e: CidrError, input: &str) -> CidrError {
    match e {
        CidrError::HostBitsSet { len, canonical, .. } => CidrError::HostBitsSet {
            input: input.to_owned(),
            len,
            canonical,
        },
        other => other,
    }
}

/// An IPv4 CIDR block with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// The whole IPv4 space, `0.0.0.0/0`.
    pub const ANY: Self = Self {
        network: Ipv4Addr::UNSPECIFIED,
        prefix_len: 0,
    };

    /// A block; refuses `prefix_len > 32` and set host bits.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, CidrError> {
        let c = Self::new_truncated(network, prefix_len)?;
        if c.network != network {
            return Err(CidrError::HostBitsSet {
                input: format!("{network}/{prefix_len}"),
                len: prefix_len,
                canonical: c.to_string(),
            });
        }
        Ok(c)
    }

    /// The block holding `addr` with its host bits cleared (the subnet of an
    /// interface address); refuses only `prefix_len > 32`.
    pub fn new_truncated(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, CidrError> {
        if prefix_len > 32 {
            return Err(CidrError::LengthTooLong {
                input: format!("{addr}/{prefix_len}"),
                len: prefix_len.into(),
                max: 32,
            });
        }
        Ok(Self {
            network: Ipv4Addr::from(u32::from(addr) & ipv4_mask(prefix_len)),
            prefix_len,
        })
    }

    /// The block of one address (`/32`).
    pub const fn host(addr: Ipv4Addr) -> Self {
        Self {
            network: addr,
            prefix_len: 32,
        }
    }

    /// The network address (host bits are zero).
    pub const fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length, 0..=32.
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The network mask (`255.255.0.0` for a /16).
    pub const fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from_bits(ipv4_mask(self.prefix_len))
    }

    /// Whether `addr` lies in this block.
    #[inline]
    pub fn contains_addr(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & ipv4_mask(self.prefix_len) == u32::from(self.network)
    }

    /// Whether every address of `other` lies in this block.
    pub fn contains_cidr(&self, other: &Self) -> bool {
        self.prefix_len <= other.prefix_len && self.contains_addr(other.network)
    }

    /// Whether the two blocks share an address (one then holds the other).
    pub fn overlaps(&self, other: &Self) -> bool {
        self.contains_cidr(other) || other.contains_cidr(self)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (address, len) = split(input, 32)?;
        let addr: Ipv4Addr = address
            .parse()
            .map_err(|_| bad_address(input, address, "IPv4"))?;
        Self::new(addr, len).map_err(|e| with_input(e, input))
    }
}

/// An IPv6 CIDR block with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Cidr {
    network: Ipv6Addr,
    prefix_len: u8,
}

impl Ipv6Cidr {
    /// The whole IPv6 space, `::/0`.
    pub const ANY: Self = Self {
        network: Ipv6Addr::UNSPECIFIED,
        prefix_len: 0,
    };

    /// A block; refuses `prefix_len > 128` and set host bits.
    pub fn new(network: Ipv6Addr, prefix_len: u8) -> Result<Self, CidrError> {
        let c = Self::new_truncated(network, prefix_len)?;
        if c.network != network {
            return Err(CidrError::HostBitsSet {
                input: format!("{network}/{prefix_len}"),
                len: prefix_len,
                canonical: c.to_string(),
            });
        }
        Ok(c)
    }

    /// The block holding `addr` with its host bits cleared; refuses only
    /// `prefix_len > 128`.
    pub fn new_truncated(addr: Ipv6Addr, prefix_len: u8) -> Result<Self, CidrError> {
        if prefix_len > 128 {
            return Err(CidrError::LengthTooLong {
                input: format!("{addr}/{prefix_len}"),
                len: prefix_len.into(),
                max: 128,
            });
        }
        Ok(Self {
            network: Ipv6Addr::from(u128::from(addr) & ipv6_mask(prefix_len)),
            prefix_len,
        })
    }

    /// The block of one address (`/128`).
    pub const fn host(addr: Ipv6Addr) -> Self {
        Self {
            network: addr,
            prefix_len: 128,
        }
    }

    /// The network address (host bits are zero).
    pub const fn network(&self) -> Ipv6Addr {
        self.network
    }

    /// The prefix length, 0..=128.
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The network mask (`ffff:ffff::` for a /32).
    pub const fn netmask(&self) -> Ipv6Addr {
        Ipv6Addr::from_bits(ipv6_mask(self.prefix_len))
    }

    /// Whether `addr` lies in this block.
    #[inline]
    pub fn contains_addr(&self, addr: Ipv6Addr) -> bool {
        u128::from(addr) & ipv6_mask(self.prefix_len) == u128::from(self.network)
    }

    /// Whether every address of `other` lies in this block.
    pub fn contains_cidr(&self, other: &Self) -> bool {
        self.prefix_len <= other.prefix_len && self.contains_addr(other.network)
    }

    /// Whether the two blocks share an address (one then holds the other).
    pub fn overlaps(&self, other: &Self) -> bool {
        self.contains_cidr(other) || other.contains_cidr(self)
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (address, len) = split(input, 128)?;
        let addr: Ipv6Addr = address
            .parse()
            .map_err(|_| bad_address(input, address, "IPv6"))?;
        Self::new(addr, len).map_err(|e| with_input(e, input))
    }
}

/// An IPv4 or IPv6 CIDR block. Blocks of different families never contain
/// or overlap each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpCidr {
    /// An IPv4 block.
    V4(Ipv4Cidr),
    /// An IPv6 block.
    V6(Ipv6Cidr),
}

impl IpCidr {
    /// `0.0.0.0/0`.
    pub const ANY_V4: Self = Self::V4(Ipv4Cidr::ANY);
    /// `::/0`.
    pub const ANY_V6: Self = Self::V6(Ipv6Cidr::ANY);

    /// A block; refuses a length beyond the family's width and set host bits.
    pub fn new(network: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        Ok(match network {
            IpAddr::V4(a) => Self::V4(Ipv4Cidr::new(a, prefix_len)?),
            IpAddr::V6(a) => Self::V6(Ipv6Cidr::new(a, prefix_len)?),
        })
    }

    /// The block holding `addr` with host bits cleared; refuses only an
    /// over-long length.
    pub fn new_truncated(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        Ok(match addr {
            IpAddr::V4(a) => Self::V4(Ipv4Cidr::new_truncated(a, prefix_len)?),
            IpAddr::V6(a) => Self::V6(Ipv6Cidr::new_truncated(a, prefix_len)?),
        })
    }

    /// The block of one address (`/32` or `/128`).
    pub const fn host(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Self::V4(Ipv4Cidr::host(a)),
            IpAddr::V6(a) => Self::V6(Ipv6Cidr::host(a)),
        }
    }

    /// The network address.
    pub const fn network(&self) -> IpAddr {
        match self {
            Self::V4(c) => IpAddr::V4(c.network),
            Self::V6(c) => IpAddr::V6(c.network),
        }
    }

    /// The prefix length.
    pub const fn prefix_len(&self) -> u8 {
        match self {
            Self::V4(c) => c.prefix_len,
            Self::V6(c) => c.prefix_len,
        }
    }

    /// Whether this is an IPv4 block.
    pub const fn is_ipv4(&self) -> bool {
        matches!(self, Self::V4(_))
    }

    /// Whether `addr` lies in this block (never across families).
    #[inline]
    pub fn contains_addr(&self, addr: IpAddr) -> bool {
        match (self, addr) {
            (Self::V4(c), IpAddr::V4(a)) => c.contains_addr(a),
            (Self::V6(c), IpAddr::V6(a)) => c.contains_addr(a),
            _ => false,
        }
    }

    /// Whether every address of `other` lies in this block.
    pub fn contains_cidr(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::V4(a), Self::V4(b)) => a.contains_cidr(b),
            (Self::V6(a), Self::V6(b)) => a.contains_cidr(b),
            _ => false,
        }
    }

    /// Whether the two blocks share an address.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.contains_cidr(other) || other.contains_cidr(self)
    }
}

impl From<Ipv4Cidr> for IpCidr {
    fn from(c: Ipv4Cidr) -> Self {
        Self::V4(c)
    }
}

impl From<Ipv6Cidr> for IpCidr {
    fn from(c: Ipv6Cidr) -> Self {
        Self::V6(c)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(c) => c.fmt(f),
            Self::V6(c) => c.fmt(f),
        }
    }
}

impl FromStr for IpCidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (address, _) = input
            .split_once('/')
            .ok_or_else(|| CidrError::MissingLength {
                input: input.to_owned(),
            })?;
        // The family decides the maximum length, so pick it before the length check.
        if address.contains(':') {
            input.parse().map(Self::V6)
        } else if address.contains('.') {
            input.parse().map(Self::V4)
        } else {
            Err(bad_address(input, address, "IP"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let c: Ipv4Cidr = "10.1.0.0/16".parse().unwrap();
        assert_eq!(c.network(), Ipv4Addr::new(10, 1, 0, 0));
        assert_eq!(c.prefix_len(), 16);
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(c.to_string(), "10.1.0.0/16");
        let c: Ipv6Cidr = "2001:db8::/32".parse().unwrap();
        assert_eq!(c.to_string(), "2001:db8::/32");
        assert_eq!(c.netmask(), "ffff:ffff::".parse::<Ipv6Addr>().unwrap());
        assert_eq!("0.0.0.0/0".parse::<IpCidr>().unwrap(), IpCidr::ANY_V4);
        assert_eq!("::/0".parse::<IpCidr>().unwrap(), IpCidr::ANY_V6);
        let c: IpCidr = "192.0.2.7/32".parse().unwrap();
        assert_eq!(c, IpCidr::host("192.0.2.7".parse().unwrap()));
        assert!(c.is_ipv4());
    }

    #[test]
    fn error_messages_name_input_and_reason() {
        let e = "10.1.0.0/33".parse::<Ipv4Cidr>().unwrap_err();
        assert_eq!(e.to_string(), "10.1.0.0/33: prefix length 33 exceeds 32");
        assert_eq!(e.reason(), "prefix length 33 exceeds 32");
        let e = "2001:db8::/129".parse::<IpCidr>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "2001:db8::/129: prefix length 129 exceeds 128"
        );
        let e = "10.1.2.3/16".parse::<IpCidr>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "10.1.2.3/16: host bits set after /16 (did you mean 10.1.0.0/16?)"
        );
        let e = "2001:db8::1/64".parse::<IpCidr>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "2001:db8::1/64: host bits set after /64 (did you mean 2001:db8::/64?)"
        );
        let e = "10.1.0.0".parse::<Ipv4Cidr>().unwrap_err();
        assert!(matches!(e, CidrError::MissingLength { .. }), "{e}");
        let e = "10.1.0/16".parse::<Ipv4Cidr>().unwrap_err();
        assert!(matches!(e, CidrError::BadAddress { .. }), "{e}");
        let e = "2001:db8::/16".parse::<Ipv4Cidr>().unwrap_err();
        assert!(matches!(e, CidrError::BadAddress { .. }), "{e}");
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8x",
            "10.0.0.0/ 8",
        ] {
            let e = bad.parse::<Ipv4Cidr>().unwrap_err();
            assert!(matches!(e, CidrError::BadLength { .. }), "{bad}: {e}");
        }
        let e = "10.0.0.0/99999999999999999999"
            .parse::<Ipv4Cidr>()
            .unwrap_err();
        assert!(matches!(e, CidrError::BadLength { .. }), "{e}");
        let e = "hello/8".parse::<IpCidr>().unwrap_err();
        assert!(matches!(e, CidrError::BadAddress { .. }), "{e}");
    }

    #[test]
    fn constructors_refuse_what_the_parser_refuses() {
        let e = Ipv4Cidr::new(Ipv4Addr::new(10, 1, 2, 3), 16).unwrap_err();
        assert_eq!(
            e.to_string(),
            "10.1.2.3/16: host bits set after /16 (did you mean 10.1.0.0/16?)"
        );
        let e = IpCidr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)), 33).unwrap_err();
        assert_eq!(e.to_string(), "10.1.0.0/33: prefix length 33 exceeds 32");
        assert_eq!(e.reason(), "prefix length 33 exceeds 32");
        assert!(Ipv6Cidr::new(Ipv6Addr::UNSPECIFIED, 129).is_err());
        assert!(Ipv6Cidr::new("::1".parse().unwrap(), 127).is_err());
        assert!(Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 1), 32).is_ok());
    }

    #[test]
    fn truncation_and_containment() {
        let c = Ipv4Cidr::new_truncated(Ipv4Addr::new(10, 1, 2, 3), 16).unwrap();
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert!(c.contains_addr(Ipv4Addr::new(10, 1, 255, 255)));
        assert!(!c.contains_addr(Ipv4Addr::new(10, 2, 0, 0)));
        assert!(Ipv4Cidr::ANY.contains_addr(Ipv4Addr::BROADCAST));
        let c6 = Ipv6Cidr::new_truncated("2001:db8:1::1".parse().unwrap(), 48).unwrap();
        assert_eq!(c6.to_string(), "2001:db8:1::/48");
        assert!(c6.contains_addr("2001:db8:1:ffff::9".parse().unwrap()));
        assert!(!c6.contains_addr("2001:db8:2::".parse().unwrap()));
        assert!(Ipv4Cidr::new_truncated(Ipv4Addr::LOCALHOST, 33).is_err());
        let any6: IpCidr = c6.into();
        assert!(!any6.contains_addr(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!IpCidr::ANY_V4.contains_addr("::ffff:10.1.0.1".parse().unwrap()));
    }

    #[test]
    fn containment_and_overlap_of_blocks() {
        let p = |s: &str| s.parse::<IpCidr>().unwrap();
        assert!(p("10.0.0.0/8").contains_cidr(&p("10.1.0.0/16")));
        assert!(!p("10.1.0.0/16").contains_cidr(&p("10.0.0.0/8")));
        assert!(p("10.1.0.0/16").contains_cidr(&p("10.1.0.0/16")));
        assert!(p("10.0.0.0/8").overlaps(&p("10.1.0.0/16")));
        assert!(p("10.1.0.0/16").overlaps(&p("10.0.0.0/8")));
        assert!(!p("10.1.0.0/16").overlaps(&p("10.2.0.0/16")));
        assert!(p("0.0.0.0/0").contains_cidr(&p("192.0.2.1/32")));
        assert!(!p("0.0.0.0/0").overlaps(&p("::/0")));
        assert!(p("2001:db8::/32").contains_cidr(&p("2001:db8:aa::/48")));
        assert!(!p("2001:db8::/32").overlaps(&p("2001:db9::/32")));
    }

    proptest::proptest! {
        #[test]
        fn from_str_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<IpCidr>();
            let _ = s.parse::<Ipv4Cidr>();
            let _ = s.parse::<Ipv6Cidr>();
        }

        #[test]
        fn display_round_trips(a in proptest::prelude::any::<u128>(), len in 0u8..=128) {
            let c = Ipv6Cidr::new_truncated(Ipv6Addr::from(a), len).unwrap();
            proptest::prop_assert_eq!(c.to_string().parse::<Ipv6Cidr>().unwrap(), c);
            let c4 = Ipv4Cidr::new_truncated(Ipv4Addr::from(a as u32), len % 33).unwrap();
            proptest::prop_assert_eq!(c4.to_string().parse::<IpCidr>().unwrap(), IpCidr::V4(c4));
        }

        #[test]
        fn new_accepts_exactly_the_canonical_form(a in proptest::prelude::any::<u32>(), len in 0u8..=32) {
            let addr = Ipv4Addr::from(a);
            let truncated = Ipv4Cidr::new_truncated(addr, len).unwrap();
            proptest::prop_assert_eq!(Ipv4Cidr::new(addr, len).is_ok(), truncated.network() == addr);
            proptest::prop_assert!(truncated.contains_addr(addr));
        }

        #[test]
        fn overlap_agrees_with_addresses(a in proptest::prelude::any::<u32>(), la in 0u8..=32,
                                         b in proptest::prelude::any::<u32>(), lb in 0u8..=32) {
            let x = Ipv4Cidr::new_truncated(Ipv4Addr::from(a), la).unwrap();
            let y = Ipv4Cidr::new_truncated(Ipv4Addr::from(b), lb).unwrap();
            // Blocks nest or are disjoint, so they overlap exactly when the
            // shorter one holds the other's network address.
            let shorter_holds = if la <= lb { x.contains_addr(y.network()) } else { y.contains_addr(x.network()) };
            proptest::prop_assert_eq!(x.overlaps(&y), shorter_holds);
            proptest::prop_assert_eq!(x.contains_cidr(&y), la <= lb && x.contains_addr(y.network()));
        }
    }
}
