//! Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Sums are kept as the folded 16-bit one's-complement sum (not inverted);
//! the checksum field holds its complement. Partial sums of disjoint pieces
//! (pseudo-header, header, payload) combine with [`add`].

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::IpProtocol;

/// Folds a wide accumulator to a 16-bit one's-complement sum (end-around carry).
#[inline]
fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// One's-complement sum of `data` as big-endian 16-bit words, folded to 16 bits.
///
/// An odd trailing byte is padded with a zero byte (RFC 1071 §1). The loop adds
/// native-endian 32-bit words into a 64-bit accumulator and swaps the result
/// once at the end: the one's-complement sum is byte-order independent
/// (RFC 1071 §2(B)), so this is exact and lets the compiler vectorise.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut blocks = data.chunks_exact(16);
    for b in &mut blocks {
        acc += u64::from(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        acc += u64::from(u32::from_ne_bytes([b[4], b[5], b[6], b[7]]));
        acc += u64::from(u32::from_ne_bytes([b[8], b[9], b[10], b[11]]));
        acc += u64::from(u32::from_ne_bytes([b[12], b[13], b[14], b[15]]));
    }
    let mut words = blocks.remainder().chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_ne_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    // A native-endian sum is the byte-swapped big-endian sum on little-endian hosts.
    u16::from_be(fold(acc))
}

/// One's-complement addition of two folded sums.
#[inline]
pub fn add(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// The Internet checksum of `data`: the complement of its one's-complement sum.
///
/// Computing it over a header whose checksum field is already filled yields 0
/// when the checksum is correct.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Sum of the IPv4 pseudo-header used by TCP and UDP (RFC 768, RFC 9293 §3.1).
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, length: u16) -> u16 {
    let s = src.octets();
    let d = dst.octets();
    let acc = u64::from(u16::from_be_bytes([s[0], s[1]]))
        + u64::from(u16::from_be_bytes([s[2], s[3]]))
        + u64::from(u16::from_be_bytes([d[0], d[1]]))
        + u64::from(u16::from_be_bytes([d[2], d[3]]))
        + u64::from(protocol.0)
        + u64::from(length);
    fold(acc)
}

/// Sum of the IPv6 pseudo-header used by TCP, UDP and ICMPv6 (RFC 8200 §8.1).
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, protocol: IpProtocol, length: u32) -> u16 {
    let acc = u64::from(sum(&src.octets()))
        + u64::from(sum(&dst.octets()))
        + u64::from(length >> 16)
        + u64::from(length & 0xffff)
        + u64::from(protocol.0);
    fold(acc)
}

/// Finishes a checksum from a sum, mapping a computed 0 to 0xffff as UDP
/// requires: 0 on the wire means "no checksum" (RFC 768, RFC 8200 §8.1).
#[inline]
pub fn finish_udp(sum: u16) -> u16 {
    match !sum {
        0 => 0xffff,
        c => c,
    }
}

/// RFC 1624 eqn. 3: the checksum after a 16-bit word changes from `old` to `new`.
///
/// `HC' = ~(~HC + ~m + m')`. Unlike eqn. 2 of RFC 1141 this never produces
/// the wrong zero. A field at an odd byte offset from the start of the summed
/// region is updated by passing both values byte-swapped
/// (`old.swap_bytes()`, `new.swap_bytes()`).
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!hc) + u64::from(!old) + u64::from(new))
}

/// RFC 1624 eqn. 3 for a 32-bit field (an IPv4 address), as two 16-bit words.
#[inline]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let acc = u64::from(!hc)
        + u64::from(!(old >> 16) as u16)
        + u64::from(!(old as u16))
        + u64::from((new >> 16) as u16)
        + u64::from(new as u16);
    !fold(acc)
}

/// RFC 1624 eqn. 3 for an arbitrary even-aligned field (an IPv6 address).
#[inline]
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    // ~m summed word by word equals ~(sum m) in one's-complement arithmetic.
    !fold(u64::from(!hc) + u64::from(!sum(old)) + u64::from(sum(new)))
}

/// [`update16`] for a checksum over data that may be all zero (ICMP): the
/// update cannot tell data summing to 0xffff (where 0x0000 is right) from
/// all-zero data (where only 0xffff verifies), so it never answers 0x0000;
/// 0xffff verifies in both cases (RFC 1624 §3).
#[inline]
pub fn update16_nonzero(hc: u16, old: u16, new: u16) -> u16 {
    match update16(hc, old, new) {
        0 => 0xffff,
        c => c,
    }
}

/// [`update16`] for a UDP checksum: a zero checksum means "none" over IPv4 and
/// stays zero; an update that yields 0 is sent as 0xffff (RFC 768).
#[inline]
pub fn update16_udp(hc: u16, old: u16, new: u16) -> u16 {
    match hc {
        0 => 0,
        _ => match update16(hc, old, new) {
            0 => 0xffff,
            c => c,
        },
    }
}

/// [`update32`] with the UDP zero rules of [`update16_udp`].
#[inline]
pub fn update32_udp(hc: u16, old: u32, new: u32) -> u16 {
    match hc {
        0 => 0,
        _ => match update32(hc, old, new) {
            0 => 0xffff,
            c => c,
        },
    }
}

/// [`update_bytes`] with the UDP zero rules of [`update16_udp`].
#[inline]
pub fn update_bytes_udp(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    match hc {
        0 => 0,
        _ => match update_bytes(hc, old, new) {
            0 => 0xffff,
            c => c,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward reference: big-endian 16-bit words, carry folded at the end.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for pair in data.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u64::from);
            acc += hi | lo;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 numerical example: sum of 0001 f203 f4f5 f6f7 is ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A classic IPv4 header whose checksum is b861.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        hdr[10] = 0xb8;
        hdr[11] = 0x61;
        assert_eq!(checksum(&hdr), 0);
    }

    #[test]
    fn odd_lengths_and_alignment_match_reference() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 151 + 7) as u8).collect();
        for start in 0..5 {
            for end in start..data.len() {
                assert_eq!(sum(&data[start..end]), reference_sum(&data[start..end]));
            }
        }
    }

    #[test]
    fn all_ones_sums_to_negative_zero() {
        assert_eq!(sum(&[0xff; 64]), 0xffff);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut data = [0x12u8, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
        let hc = checksum(&data);
        data[2] = 0xab;
        data[3] = 0xcd;
        assert_eq!(update16(hc, 0x5678, 0xabcd), checksum(&data));
    }

    #[test]
    fn odd_offset_update_uses_swapped_words() {
        let mut data = [0x01u8, 0x02, 0x03, 0x04, 0x05, 0x06];
        let hc = checksum(&data);
        // Field at byte offset 1..3 holds 0x0203.
        data[1] = 0xfe;
        data[2] = 0x99;
        let updated = update16(hc, 0x0203u16.swap_bytes(), 0xfe99u16.swap_bytes());
        assert_eq!(updated, checksum(&data));
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        assert_eq!(update16_udp(0, 0x1234, 0x4321), 0);
        assert_eq!(update32_udp(0, 1, 2), 0);
        assert_eq!(update_bytes_udp(0, &[1, 2], &[3, 4]), 0);
        assert_eq!(finish_udp(0xffff), 0xffff);
    }

    #[test]
    fn pseudo_header_v6_matches_byte_sum() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "fe80::2".parse().unwrap();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&src.octets());
        bytes.extend_from_slice(&dst.octets());
        bytes.extend_from_slice(&70000u32.to_be_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 17]);
        assert_eq!(
            pseudo_header_v6(src, dst, IpProtocol::UDP, 70000),
            reference_sum(&bytes)
        );
    }
}
