//! Traffic selectors: which inner source/destination prefixes an SA may carry
//! (RFC 4301 §4.4.1). Tunnel-mode SAs built by IKEv2 carry TSi/TSr pairs.
//!
//! Prefixes are [`IpCidr`] blocks: host bits are refused when the block is
//! built, so a selector never silently widens to more than was written.

use std::net::IpAddr;

use strait_wire::IpCidr;

use crate::error::ConfigError;

/// One allowed (inner source, inner destination) prefix pair, seen from the
/// sender of the SA: `src` is where inner packets come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    src: IpCidr,
    dst: IpCidr,
}

impl TrafficSelector {
    /// Pairs two prefixes of the same family.
    pub fn new(src: IpCidr, dst: IpCidr) -> Result<Self, ConfigError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(ConfigError::MixedFamilies {
                src: src.to_string(),
                dst: dst.to_string(),
            });
        }
        Ok(TrafficSelector { src, dst })
    }

    /// Anything IPv4.
    pub const ANY_V4: TrafficSelector = TrafficSelector {
        src: IpCidr::ANY_V4,
        dst: IpCidr::ANY_V4,
    };

    /// Anything IPv6.
    pub const ANY_V6: TrafficSelector = TrafficSelector {
        src: IpCidr::ANY_V6,
        dst: IpCidr::ANY_V6,
    };

    /// Source prefix.
    pub fn src(&self) -> IpCidr {
        self.src
    }

    /// Destination prefix.
    pub fn dst(&self) -> IpCidr {
        self.dst
    }

    /// Whether the pair of inner addresses is allowed by this selector.
    #[inline]
    pub fn matches(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.src.contains_addr(src) && self.dst.contains_addr(dst)
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

    fn p(s: &str, len: u8) -> IpCidr {
        IpCidr::new(s.parse().unwrap(), len).unwrap()
    }

    #[test]
    fn prefix_contains_respects_length_and_family() {
        let net = p("10.1.0.0", 16);
        assert!(net.contains_addr("10.1.255.1".parse().unwrap()));
        assert!(!net.contains_addr("10.2.0.1".parse().unwrap()));
        assert!(!net.contains_addr("::ffff:10.1.0.1".parse().unwrap()));
        assert!(p("0.0.0.0", 0).contains_addr("255.255.255.255".parse().unwrap()));
        assert!(p("10.0.0.1", 32).contains_addr("10.0.0.1".parse().unwrap()));
        assert!(!p("10.0.0.1", 32).contains_addr("10.0.0.0".parse().unwrap()));
        let v6 = p("2001:db8::", 32);
        assert!(v6.contains_addr("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains_addr("2001:db9::1".parse().unwrap()));
        assert!(p("::1", 128).contains_addr("::1".parse().unwrap()));
    }

    #[test]
    fn bad_prefixes_and_mixed_families_are_rejected() {
        // A selector wider than written would let the peer send (or us
        // encrypt) traffic nobody configured: host bits are refused.
        assert!(IpCidr::new("10.1.2.3".parse().unwrap(), 16).is_err());
        assert!(IpCidr::new("10.0.0.0".parse().unwrap(), 33).is_err());
        assert!(IpCidr::new("::".parse().unwrap(), 129).is_err());
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
