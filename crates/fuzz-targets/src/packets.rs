//! IPv4 packets built from fuzzer bytes, with valid checksums, and a
//! checker that recomputes every checksum of a packet.
//!
//! Random bytes rarely get past a header checksum; these builders let the
//! fuzzer choose the fields that matter (addresses from a small palette,
//! ports, TCP flags, ICMP types, quoted packets) and fix up the rest.

use std::net::Ipv4Addr;

use strait_wire::checksum::{add, checksum, pseudo_header_v4, sum};
use strait_wire::{IpProtocol, Ipv4Packet};

use crate::input::Input;

/// An IPv4 packet `src -> dst` carrying `l4` as `protocol`, with a valid
/// header checksum. `flags_frag` is the flags and fragment offset word.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ttl: u8,
    flags_frag: u16,
    l4: &[u8],
) -> Vec<u8> {
    let total = (20 + l4.len()).min(usize::from(u16::MAX));
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34]);
    p.extend_from_slice(&flags_frag.to_be_bytes());
    p.extend_from_slice(&[ttl, protocol, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&l4[..total - 20]);
    p
}

/// Fills the TCP or UDP checksum of `l4` (a zero UDP checksum becomes
/// 0xffff, RFC 768).
pub fn fill_l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &mut [u8]) {
    let at = match protocol {
        6 if l4.len() >= 20 => 16,
        17 if l4.len() >= 8 => 6,
        1 if l4.len() >= 4 => 2,
        _ => return,
    };
    l4[at..at + 2].fill(0);
    let c = if protocol == 1 {
        checksum(l4)
    } else {
        let ph = pseudo_header_v4(src, dst, IpProtocol(protocol), l4.len() as u16);
        let c = !add(ph, sum(l4));
        if protocol == 17 && c == 0 {
            0xffff
        } else {
            c
        }
    };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// TCP header (20 bytes, no options) plus payload.
pub fn tcp_segment(sport: u16, dport: u16, flags: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut l4 = vec![0u8; 20];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[12] = 5 << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
    l4.extend_from_slice(payload);
    l4
}

/// UDP header plus payload.
pub fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut l4 = Vec::with_capacity(len);
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&(len as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    l4
}

/// Addresses and ports the structured builder picks from; callers pass the
/// ones their rules and tables use, so packets hit sessions and rules.
#[derive(Debug, Clone, Copy)]
pub struct Palette<'a> {
    /// Addresses.
    pub addrs: &'a [Ipv4Addr],
    /// Ports (and ICMP identifiers).
    pub ports: &'a [u16],
}

impl Palette<'_> {
    fn addr(&self, input: &mut Input<'_>) -> Ipv4Addr {
        let b = input.u8();
        match self.addrs.get(usize::from(b) % (self.addrs.len() + 1)) {
            Some(&a) => a,
            None => Ipv4Addr::from(input.u32()),
        }
    }

    fn port(&self, input: &mut Input<'_>) -> u16 {
        let b = input.u8();
        match self.ports.get(usize::from(b) % (self.ports.len() + 1)) {
            Some(&p) => p,
            None => input.u16(),
        }
    }
}

/// A well-formed IPv4 packet chosen by the fuzzer: TCP, UDP, ICMP echo,
/// an ICMP error quoting one of `quotable` (or fuzzer bytes), or another
/// protocol; checksums valid unless the fuzzer asks for a broken one.
pub fn structured_ipv4(
    input: &mut Input<'_>,
    palette: &Palette<'_>,
    quotable: &[Vec<u8>],
) -> Vec<u8> {
    let kind = input.u8();
    let src = palette.addr(input);
    let dst = palette.addr(input);
    let ttl = match input.u8() {
        0..=7 => input.u8() % 3,
        _ => 64,
    };
    // Mostly unfragmented; sometimes DF, MF or an offset.
    let flags_frag = match input.u8() % 8 {
        0 => 0x2000,
        1 => input.u16(),
        _ => 0x4000,
    };
    let payload = input.chunk(1480);
    let (protocol, mut l4) = match kind % 6 {
        0 => {
            let (s, d, flags, seq) = (
                palette.port(input),
                palette.port(input),
                input.u8(),
                input.u32(),
            );
            (6, tcp_segment(s, d, flags, seq, payload))
        }
        1 | 2 => (
            17,
            udp_datagram(palette.port(input), palette.port(input), payload),
        ),
        3 => {
            // Echo request (8) or reply (0), or another query type.
            let ty = match input.u8() % 4 {
                0 => 0,
                1 => 13,
                _ => 8,
            };
            let mut l4 = vec![ty, 0, 0, 0];
            l4.extend_from_slice(&palette.port(input).to_be_bytes());
            l4.extend_from_slice(&input.u16().to_be_bytes());
            l4.extend_from_slice(payload);
            (1, l4)
        }
        4 => {
            // Destination unreachable, time exceeded, parameter problem,
            // or a fuzzer-chosen type; quoting an earlier packet or bytes.
            let ty = match input.u8() % 4 {
                0 => 11,
                1 => 12,
                2 => input.u8(),
                _ => 3,
            };
            let code = input.u8() % 5;
            let mut l4 = vec![ty, code, 0, 0, 0, 0, 0, 0];
            let pick = usize::from(input.u8());
            let quote: &[u8] = match quotable.get(pick % (quotable.len() + 1)) {
                Some(q) => q,
                None => payload,
            };
            let cut = match input.u8() % 4 {
                0 => usize::from(input.u8()),
                1 => 28,
                _ => quote.len(),
            };
            l4.extend_from_slice(&quote[..cut.min(quote.len())]);
            (1, l4)
        }
        _ => (input.u8(), payload.to_vec()),
    };
    fill_l4_checksum(src, dst, protocol, &mut l4);
    if input.u8() == 0xff {
        // A broken transport checksum, now and then.
        if let Some(b) = l4.get_mut(2) {
            *b ^= 0x5a;
        }
    }
    ipv4(src, dst, protocol, ttl, flags_frag, &l4)
}

/// Whether every checksum of the IPv4 packet `p` that can be checked is
/// valid: the header, and for an unfragmented packet TCP/UDP (with the
/// pseudo-header; a zero UDP checksum counts as absent) or ICMP, and for
/// an ICMP error the quoted IP header when it is all there. `None` when
/// `p` is not a valid IPv4 packet at all.
pub fn checksums_valid(p: &[u8]) -> Option<bool> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    if !ip.verify_checksum() {
        return Some(false);
    }
    if ip.is_fragment() {
        return Some(true);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let l4 = ip.payload();
    let ok = match ip.protocol().0 {
        17 if l4.len() >= 8 && l4[6..8] == [0, 0] => true,
        6 | 17 => {
            let ph = pseudo_header_v4(src, dst, ip.protocol(), l4.len() as u16);
            add(ph, sum(l4)) == 0xffff
        }
        1 => {
            let mut ok = sum(l4) == 0xffff;
            if l4.len() > 8 && matches!(l4[0], 3 | 11 | 12) {
                let quoted = &l4[8..];
                let qhl = usize::from(quoted[0] & 0x0f) * 4;
                if qhl >= 20 && quoted.len() >= qhl && quoted[0] >> 4 == 4 {
                    ok &= sum(&quoted[..qhl]) == 0xffff;
                }
            }
            ok
        }
        _ => true,
    };
    Some(ok)
}
