//! IPv4 and IPv6 prefixes (`10.1.0.0/16`, `2001:db8::/32`).
//!
//! A prefix names a block of addresses; its host bits (the bits after the
//! prefix length) carry no meaning. Parsing and [`Ipv4Prefix::new`] *refuse*
//! host bits rather than silently clearing them: `10.1.2.3/16` in a route
//! configuration is far more often a mistyped interface address than an
//! intended `10.1.0.0/16`, and quietly installing the wider block would route
//! traffic nobody asked for. The error names the canonical form so the fix is
//! obvious. Code that really wants to clear host bits (for example deriving
//! the connected prefix of an interface address) uses `new_truncated`.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a prefix was refused. Every message starts with the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
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
        /// The prefix as given.
        input: String,
        /// The requested length.
        len: u32,
        /// The address width.
        max: u8,
    },
    /// Bits beyond the prefix length are set.
    #[error("{input}: host bits set after /{len} (did you mean {canonical}?)")]
    HostBitsSet {
        /// The prefix as given.
        input: String,
        /// The prefix length.
        len: u8,
        /// The prefix with its host bits cleared.
        canonical: String,
    },
}

/// Splits `ADDRESS/LENGTH` and parses the length; shared by all families.
fn split(input: &str, max: u8) -> Result<(&str, u8), PrefixError> {
    let (address, length) = input
        .split_once('/')
        .ok_or_else(|| PrefixError::MissingLength {
            input: input.to_owned(),
        })?;
    // Only plain decimal digits: `u32::from_str` would also take a leading `+`.
    if length.is_empty() || length.len() > 9 || !length.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PrefixError::BadLength {
            input: input.to_owned(),
            length: length.to_owned(),
        });
    }
    let len: u32 = length.parse().map_err(|_| PrefixError::BadLength {
        input: input.to_owned(),
        length: length.to_owned(),
    })?;
    if len > u32::from(max) {
        return Err(PrefixError::LengthTooLong {
            input: input.to_owned(),
            len,
            max,
        });
    }
    // `len <= max <= 128` was just checked, so this cannot truncate.
    Ok((address, len as u8))
}

fn bad_address(input: &str, address: &str, family: &'static str) -> PrefixError {
    PrefixError::BadAddress {
        input: input.to_owned(),
        address: address.to_owned(),
        family,
    }
}

/// Network mask: `len` leading ones.
const fn mask_u32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

const fn mask_u128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

/// An IPv4 prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

impl Ipv4Prefix {
    /// The whole IPv4 space, `0.0.0.0/0` (the default route).
    pub const ANY: Self = Self {
        addr: Ipv4Addr::UNSPECIFIED,
        len: 0,
    };

    /// A prefix; refuses `len > 32` and set host bits.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixError> {
        let p = Self::new_truncated(addr, len)?;
        if p.addr != addr {
            return Err(PrefixError::HostBitsSet {
                input: format!("{addr}/{len}"),
                len,
                canonical: p.to_string(),
            });
        }
        Ok(p)
    }

    /// A prefix with the host bits of `addr` cleared; refuses only `len > 32`.
    pub fn new_truncated(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 32 {
            return Err(PrefixError::LengthTooLong {
                input: format!("{addr}/{len}"),
                len: len.into(),
                max: 32,
            });
        }
        Ok(Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask_u32(len)),
            len,
        })
    }

    /// The host route for one address (`/32`).
    pub const fn host(addr: Ipv4Addr) -> Self {
        Self { addr, len: 32 }
    }

    /// The network address (host bits are zero).
    pub const fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length, 0..=32.
    // "Length" is the domain's word for the mask width; a prefix is never empty.
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(&self) -> u8 {
        self.len
    }

    /// Whether `addr` lies in this prefix.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask_u32(self.len) == u32::from(self.addr)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (address, len) = split(input, 32)?;
        let addr: Ipv4Addr = address
            .parse()
            .map_err(|_| bad_address(input, address, "IPv4"))?;
        Self::new(addr, len).map_err(|e| with_input(e, input))
    }
}

/// An IPv6 prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv6Prefix {
    addr: Ipv6Addr,
    len: u8,
}

impl Ipv6Prefix {
    /// The whole IPv6 space, `::/0` (the default route).
    pub const ANY: Self = Self {
        addr: Ipv6Addr::UNSPECIFIED,
        len: 0,
    };

    /// A prefix; refuses `len > 128` and set host bits.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        let p = Self::new_truncated(addr, len)?;
        if p.addr != addr {
            return Err(PrefixError::HostBitsSet {
                input: format!("{addr}/{len}"),
                len,
                canonical: p.to_string(),
            });
        }
        Ok(p)
    }

    /// A prefix with the host bits of `addr` cleared; refuses only `len > 128`.
    pub fn new_truncated(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 128 {
            return Err(PrefixError::LengthTooLong {
                input: format!("{addr}/{len}"),
                len: len.into(),
                max: 128,
            });
        }
        Ok(Self {
            addr: Ipv6Addr::from(u128::from(addr) & mask_u128(len)),
            len,
        })
    }

    /// The host route for one address (`/128`).
    pub const fn host(addr: Ipv6Addr) -> Self {
        Self { addr, len: 128 }
    }

    /// The network address (host bits are zero).
    pub const fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    /// The prefix length, 0..=128.
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(&self) -> u8 {
        self.len
    }

    /// Whether `addr` lies in this prefix.
    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        u128::from(addr) & mask_u128(self.len) == u128::from(self.addr)
    }
}

impl fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv6Prefix {
    type Err = PrefixError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (address, len) = split(input, 128)?;
        let addr: Ipv6Addr = address
            .parse()
            .map_err(|_| bad_address(input, address, "IPv6"))?;
        Self::new(addr, len).map_err(|e| with_input(e, input))
    }
}

/// Reports errors against the text the user wrote, not our re-rendering of it.
fn with_input(e: PrefixError, input: &str) -> PrefixError {
    match e {
        PrefixError::HostBitsSet { len, canonical, .. } => PrefixError::HostBitsSet {
            input: input.to_owned(),
            len,
            canonical,
        },
        other => other,
    }
}

/// An IPv4 or IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpPrefix {
    /// An IPv4 prefix.
    V4(Ipv4Prefix),
    /// An IPv6 prefix.
    V6(Ipv6Prefix),
}

impl IpPrefix {
    /// A prefix; refuses a length beyond the family's width and set host bits.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        Ok(match addr {
            IpAddr::V4(a) => Self::V4(Ipv4Prefix::new(a, len)?),
            IpAddr::V6(a) => Self::V6(Ipv6Prefix::new(a, len)?),
        })
    }

    /// A prefix with host bits cleared; refuses only an over-long length.
    pub fn new_truncated(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        Ok(match addr {
            IpAddr::V4(a) => Self::V4(Ipv4Prefix::new_truncated(a, len)?),
            IpAddr::V6(a) => Self::V6(Ipv6Prefix::new_truncated(a, len)?),
        })
    }

    /// The host route for one address (`/32` or `/128`).
    pub const fn host(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Self::V4(Ipv4Prefix::host(a)),
            IpAddr::V6(a) => Self::V6(Ipv6Prefix::host(a)),
        }
    }

    /// The network address.
    pub const fn addr(&self) -> IpAddr {
        match self {
            Self::V4(p) => IpAddr::V4(p.addr),
            Self::V6(p) => IpAddr::V6(p.addr),
        }
    }

    /// The prefix length.
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(&self) -> u8 {
        match self {
            Self::V4(p) => p.len,
            Self::V6(p) => p.len,
        }
    }

    /// Whether `addr` lies in this prefix (never across families).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self, addr) {
            (Self::V4(p), IpAddr::V4(a)) => p.contains(a),
            (Self::V6(p), IpAddr::V6(a)) => p.contains(a),
            _ => false,
        }
    }
}

impl From<Ipv4Prefix> for IpPrefix {
    fn from(p: Ipv4Prefix) -> Self {
        Self::V4(p)
    }
}

impl From<Ipv6Prefix> for IpPrefix {
    fn from(p: Ipv6Prefix) -> Self {
        Self::V6(p)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(p) => p.fmt(f),
            Self::V6(p) => p.fmt(f),
        }
    }
}

impl FromStr for IpPrefix {
    type Err = PrefixError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (address, _) = input
            .split_once('/')
            .ok_or_else(|| PrefixError::MissingLength {
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
        let p: Ipv4Prefix = "10.1.0.0/16".parse().unwrap();
        assert_eq!(p.addr(), Ipv4Addr::new(10, 1, 0, 0));
        assert_eq!(p.len(), 16);
        assert_eq!(p.to_string(), "10.1.0.0/16");
        let p: Ipv6Prefix = "2001:db8::/32".parse().unwrap();
        assert_eq!(p.to_string(), "2001:db8::/32");
        let p: IpPrefix = "0.0.0.0/0".parse().unwrap();
        assert_eq!(p, IpPrefix::V4(Ipv4Prefix::ANY));
        let p: IpPrefix = "::/0".parse().unwrap();
        assert_eq!(p, IpPrefix::V6(Ipv6Prefix::ANY));
        let p: IpPrefix = "192.0.2.7/32".parse().unwrap();
        assert_eq!(p, IpPrefix::host("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn error_messages_name_input_and_reason() {
        let e = "10.1.0.0/33".parse::<Ipv4Prefix>().unwrap_err();
        assert_eq!(e.to_string(), "10.1.0.0/33: prefix length 33 exceeds 32");
        let e = "2001:db8::/129".parse::<IpPrefix>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "2001:db8::/129: prefix length 129 exceeds 128"
        );
        let e = "10.1.2.3/16".parse::<IpPrefix>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "10.1.2.3/16: host bits set after /16 (did you mean 10.1.0.0/16?)"
        );
        let e = "10.1.0.0".parse::<Ipv4Prefix>().unwrap_err();
        assert!(matches!(e, PrefixError::MissingLength { .. }), "{e}");
        let e = "10.1.0/16".parse::<Ipv4Prefix>().unwrap_err();
        assert!(matches!(e, PrefixError::BadAddress { .. }), "{e}");
        let e = "2001:db8::/16".parse::<Ipv4Prefix>().unwrap_err();
        assert!(matches!(e, PrefixError::BadAddress { .. }), "{e}");
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8x",
            "10.0.0.0/ 8",
        ] {
            let e = bad.parse::<Ipv4Prefix>().unwrap_err();
            assert!(matches!(e, PrefixError::BadLength { .. }), "{bad}: {e}");
        }
        let e = "10.0.0.0/99999999999999999999"
            .parse::<Ipv4Prefix>()
            .unwrap_err();
        assert!(matches!(e, PrefixError::BadLength { .. }), "{e}");
        let e = "hello/8".parse::<IpPrefix>().unwrap_err();
        assert!(matches!(e, PrefixError::BadAddress { .. }), "{e}");
    }

    #[test]
    fn truncation_and_containment() {
        let p = Ipv4Prefix::new_truncated(Ipv4Addr::new(10, 1, 2, 3), 16).unwrap();
        assert_eq!(p.to_string(), "10.1.0.0/16");
        assert!(p.contains(Ipv4Addr::new(10, 1, 255, 255)));
        assert!(!p.contains(Ipv4Addr::new(10, 2, 0, 0)));
        assert!(Ipv4Prefix::ANY.contains(Ipv4Addr::BROADCAST));
        let p = Ipv6Prefix::new_truncated("2001:db8:1::1".parse().unwrap(), 48).unwrap();
        assert_eq!(p.to_string(), "2001:db8:1::/48");
        assert!(p.contains("2001:db8:1:ffff::9".parse().unwrap()));
        assert!(!p.contains("2001:db8:2::".parse().unwrap()));
        assert!(Ipv4Prefix::new_truncated(Ipv4Addr::LOCALHOST, 33).is_err());
        let v4: IpPrefix = p.into();
        assert!(!v4.contains(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    proptest::proptest! {
        #[test]
        fn from_str_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<IpPrefix>();
            let _ = s.parse::<Ipv4Prefix>();
            let _ = s.parse::<Ipv6Prefix>();
        }

        #[test]
        fn display_round_trips(a in proptest::prelude::any::<u128>(), len in 0u8..=128) {
            let p = Ipv6Prefix::new_truncated(Ipv6Addr::from(a), len).unwrap();
            proptest::prop_assert_eq!(p.to_string().parse::<Ipv6Prefix>().unwrap(), p);
            let p4 = Ipv4Prefix::new_truncated(Ipv4Addr::from(a as u32), len % 33).unwrap();
            proptest::prop_assert_eq!(p4.to_string().parse::<IpPrefix>().unwrap(), IpPrefix::V4(p4));
        }
    }
}
