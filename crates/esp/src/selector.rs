//! Traffic selectors: which inner source/destination prefixes an SA may carry
//! (RFC 4301 §4.4.1). Tunnel-mode SAs built by IKEv2 carry TSi/TSr pairs.

use core::fmt;
use std::net::IpAddr;

use crate::error::ConfigError;

/// An IPv4 or IPv6 prefix, stored with host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// Builds a prefix, clearing host bits; rejects a length beyond the
    /// address width.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, ConfigError> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if len > max {
            return Err(ConfigError::PrefixLength { addr, len, max });
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(len)).into()),
        };
        Ok(Prefix { addr, len })
    }

    /// 0.0.0.0/0.
    pub const ANY_V4: Prefix = Prefix {
        addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        len: 0,
    };

    /// ::/0.
    pub const ANY_V6: Prefix = Prefix {
        addr: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        len: 0,
    };

    /// Network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for a zero-length prefix (matches the whole family).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `addr` lies inside this prefix; families never match each other.
    #[inline]
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => u32::from(a) & mask32(self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                u128::from(a) & mask128(self.len) == u128::from(net)
            }
            _ => false,
        }
    }

    fn is_v4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// One allowed (inner source, inner destination) prefix pair, seen from the
/// sender of the SA: `src` is where inner packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    src: Prefix,
    dst: Prefix,
}

impl TrafficSelector {
    /// Pairs two prefixes of the same family.
    pub fn new(src: Prefix, dst: Prefix) -> Result<Self, ConfigError> {
        if src.is_v4() != dst.is_v4() {
            return Err(ConfigError::MixedFamilies {
                src: src.to_string(),
                dst: dst.to_string(),
            });
        }
        Ok(TrafficSelector { src, dst })
    }

    /// Anything IPv4.
    pub const ANY_V4: TrafficSelector = TrafficSelector {
        src: Prefix::ANY_V4,
        dst: Prefix::ANY_V4,
    };

    /// Anything IPv6.
    pub const ANY_V6: TrafficSelector = TrafficSelector {
        src: Prefix::ANY_V6,
        dst: Prefix::ANY_V6,
    };

    /// Source prefix.
    pub fn src(&self) -> Prefix {
        self.src
    }

    /// Destination prefix.
    pub fn dst(&self) -> Prefix {
        self.dst
    }

    /// Whether the pair of inner addresses is allowed by this selector.
    #[inline]
    pub fn matches(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.src.contains(src) && self.dst.contains(dst)
    }
}

/// The selectors of one SA. Usually one or two entries, so a linear scan
/// beats any index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSelectors {
    list: Box<[TrafficSelector]>,
}

impl TrafficSelectors {
    /// Builds a non-empty selector list.
    pub fn new(list: impl IntoIterator<Item = TrafficSelector>) -> Result<Self, ConfigError> {
        let list: Box<[TrafficSelector]> = list.into_iter().collect();
        if list.is_empty() {
            return Err(ConfigError::NoSelectors);
        }
        Ok(TrafficSelectors { list })
    }

    /// Allows every IPv4 and IPv6 inner packet.
    pub fn any() -> Self {
        TrafficSelectors {
            list: Box::new([TrafficSelector::ANY_V4, TrafficSelector::ANY_V6]),
        }
    }

    /// The selectors.
    pub fn as_slice(&self) -> &[TrafficSelector] {
        &self.list
    }

    /// Whether any selector allows this inner source/destination pair.
    #[inline]
    pub fn allows(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.list.iter().any(|ts| ts.matches(src, dst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str, len: u8) -> Prefix {
        Prefix::new(s.parse().unwrap(), len).unwrap()
    }

    #[test]
    fn prefix_contains_respects_length_and_family() {
        let net = p("10.1.2.3", 16);
        assert_eq!(net.addr(), "10.1.0.0".parse::<IpAddr>().unwrap());
        assert!(net.contains("10.1.255.1".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(p("0.0.0.0", 0).contains("255.255.255.255".parse().unwrap()));
        assert!(p("10.0.0.1", 32).contains("10.0.0.1".parse().unwrap()));
        assert!(!p("10.0.0.1", 32).contains("10.0.0.0".parse().unwrap()));
        let v6 = p("2001:db8::", 32);
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(p("::1", 128).contains("::1".parse().unwrap()));
    }

    #[test]
    fn bad_lengths_and_mixed_families_are_rejected() {
        assert!(matches!(
            Prefix::new("10.0.0.0".parse().unwrap(), 33),
            Err(ConfigError::PrefixLength {
                len: 33,
                max: 32,
                ..
            })
        ));
        assert!(Prefix::new("::".parse().unwrap(), 129).is_err());
        assert!(TrafficSelector::new(p("10.0.0.0", 8), p("::", 0)).is_err());
        assert_eq!(TrafficSelectors::new([]), Err(ConfigError::NoSelectors));
    }

    #[test]
    fn selectors_match_pairs() {
        let ts =
            TrafficSelectors::new([
                TrafficSelector::new(p("10.1.0.0", 16), p("192.168.0.0", 24)).unwrap(),
            ])
            .unwrap();
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(ts.allows(a("10.1.9.9"), a("192.168.0.7")));
        assert!(!ts.allows(a("192.168.0.7"), a("10.1.9.9")));
        assert!(!ts.allows(a("10.1.9.9"), a("192.168.1.7")));
        assert!(TrafficSelectors::any().allows(a("::1"), a("::2")));
    }
}
