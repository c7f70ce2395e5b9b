//! The flow hash that steers packets of one flow to one ECMP next hop (and,
//! in the dataplane, to one worker).
//!
//! Two modes:
//! - [`FlowHasher::hash`] is *directional*: `a:p -> b:q` and `b:q -> a:p`
//!   usually differ. Use it for ECMP, where the two directions of a flow
//!   leave by different tables anyway.
//! - [`FlowHasher::hash_symmetric`] gives both directions the *same* value by
//!   ordering the two endpoints before mixing. Use it wherever both directions
//!   must land on the same state, e.g. steering a NAT session's outbound and
//!   return traffic to the worker that owns the session.
//!
//! The mixer is a few 64-bit multiply / xor-shift rounds over the words of
//! the tuple with a final avalanche: a handful of nanoseconds, no table, no
//! allocation. It is *not* a keyed PRF like SipHash: a sender who knows the
//! seed can aim flows at one next hop. Seed it from a random per-device value
//! so that neighbouring routers do not all split traffic the same way (ECMP
//! polarisation) and outsiders cannot predict the split.

use std::net::IpAddr;

/// The five fields that identify a transport flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (or ICMP identifier; 0 when the protocol has none).
    pub src_port: u16,
    /// Destination port (0 when the protocol has none).
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub protocol: u8,
}

impl FiveTuple {
    /// The same flow seen from the other end.
    pub fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            protocol: self.protocol,
        }
    }
}

/// A seeded 5-tuple hash; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowHasher {
    seed: u64,
}

/// An odd constant with well-spread bits (2^64 / golden ratio).
const K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn absorb(state: u64, word: u64) -> u64 {
    let x = (state ^ word).wrapping_mul(K);
    x ^ (x >> 29)
}

/// Final avalanche so every input bit reaches the high output bits, which
/// [`crate::EcmpGroup::select`] uses.
#[inline(always)]
fn finish(mut x: u64) -> u32 {
    x ^= x >> 32;
    x = x.wrapping_mul(0xd6e8_feb8_6659_fd93);
    x ^= x >> 32;
    x = x.wrapping_mul(0xd6e8_feb8_6659_fd93);
    (x ^ (x >> 32)) as u32
}

/// An address as a 128-bit number; IPv4 is kept distinct from its IPv4-mapped
/// IPv6 form by a family tag in the port word.
#[inline(always)]
fn bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl FlowHasher {
    /// A hasher with the given seed (pick it at random per device).
    pub const fn new(seed: u64) -> Self {
        Self { seed }
    }

    #[inline(always)]
    fn mix(&self, a: u128, a_port: u16, b: u128, b_port: u16, protocol: u8, v6: bool) -> u32 {
        let tail = u64::from(a_port) << 32
            | u64::from(b_port) << 16
            | u64::from(protocol) << 8
            | u64::from(v6);
        let mut h = absorb(self.seed, tail);
        h = absorb(h, a as u64);
        h = absorb(h, b as u64);
        if v6 {
            h = absorb(h, (a >> 64) as u64);
            h = absorb(h, (b >> 64) as u64);
        }
        finish(h)
    }

    /// Directional hash: the two directions of a flow usually differ.
    #[inline]
    pub fn hash(&self, flow: &FiveTuple) -> u32 {
        self.mix(
            bits(flow.src),
            flow.src_port,
            bits(flow.dst),
            flow.dst_port,
            flow.protocol,
            flow.src.is_ipv6(),
        )
    }

    /// Symmetric hash: `hash_symmetric(f) == hash_symmetric(&f.reversed())`.
    /// The endpoints (address, port) are put in a canonical order first, so
    /// the result is the directional hash of that ordering.
    #[inline]
    pub fn hash_symmetric(&self, flow: &FiveTuple) -> u32 {
        let s = (bits(flow.src), flow.src_port);
        let d = (bits(flow.dst), flow.dst_port);
        let (lo, hi) = if s <= d { (s, d) } else { (d, s) };
        self.mix(lo.0, lo.1, hi.0, hi.1, flow.protocol, flow.src.is_ipv6())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn tuple(src: u32, dst: u32, sp: u16, dp: u16) -> FiveTuple {
        FiveTuple {
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            src_port: sp,
            dst_port: dp,
            protocol: 17,
        }
    }

    #[test]
    fn directional_differs_symmetric_agrees() {
        let h = FlowHasher::new(1);
        let f = tuple(0x0a00_0001, 0xc633_6401, 5000, 53);
        assert_ne!(h.hash(&f), h.hash(&f.reversed()));
        assert_eq!(h.hash_symmetric(&f), h.hash_symmetric(&f.reversed()));
        // The seed matters.
        assert_ne!(h.hash(&f), FlowHasher::new(2).hash(&f));
        // Ports and protocol matter.
        assert_ne!(
            h.hash(&f),
            h.hash(&tuple(0x0a00_0001, 0xc633_6401, 5001, 53))
        );
        let tcp = FiveTuple { protocol: 6, ..f };
        assert_ne!(h.hash(&f), h.hash(&tcp));
    }

    #[test]
    fn high_bits_are_balanced() {
        // ECMP uses the top bits; sequential source ports must spread evenly.
        let h = FlowHasher::new(0);
        let mut top = [0u32; 8];
        for port in 0..16_000u16 {
            top[(h.hash(&tuple(0x0a00_0001, 0x0a00_0002, port, 80)) >> 29) as usize] += 1;
        }
        for c in top {
            assert!((1_700..2_300).contains(&c), "skewed top bits: {top:?}");
        }
    }

    proptest! {
        #[test]
        fn symmetric_for_any_v6_flow(a in any::<u128>(), b in any::<u128>(), p in any::<u16>(), q in any::<u16>(), seed in any::<u64>()) {
            let f = FiveTuple {
                src: IpAddr::V6(Ipv6Addr::from(a)),
                dst: IpAddr::V6(Ipv6Addr::from(b)),
                src_port: p,
                dst_port: q,
                protocol: 6,
            };
            let h = FlowHasher::new(seed);
            prop_assert_eq!(h.hash_symmetric(&f), h.hash_symmetric(&f.reversed()));
        }
    }
}
