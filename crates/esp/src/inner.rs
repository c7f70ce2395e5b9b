//! The few inner IP header fields tunnel-mode ESP must check: version,
//! length and addresses. Reads only; nothing here allocates.
//!
//! This is deliberately minimal so the crate does not depend on the wire
//! crate's full header views; it could switch to `strait-wire` views later.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::DropReason;
use crate::packet::NextHeader;

const IPV4_MIN_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;

/// What the ESP layer learned about an inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InnerInfo {
    pub len: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub next_header: NextHeader,
}

/// Checks an inner packet at the start of `payload` and returns its length
/// from the IP header. Bytes after that length are TFC padding
/// (RFC 4303 §2.7) and are not part of the packet.
pub(crate) fn inspect(payload: &[u8]) -> Result<InnerInfo, DropReason> {
    let first = *payload.first().ok_or(DropReason::BadInner)?;
    match first >> 4 {
        4 => {
            if payload.len() < IPV4_MIN_HEADER {
                return Err(DropReason::BadInner);
            }
            let ihl = usize::from(first & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([payload[2], payload[3]]));
            if ihl < IPV4_MIN_HEADER || total < ihl || total > payload.len() {
                return Err(DropReason::BadInner);
            }
            Ok(InnerInfo {
                len: total,
                src: IpAddr::V4(Ipv4Addr::new(
                    payload[12],
                    payload[13],
                    payload[14],
                    payload[15],
                )),
                dst: IpAddr::V4(Ipv4Addr::new(
                    payload[16],
                    payload[17],
                    payload[18],
                    payload[19],
                )),
                next_header: NextHeader::Ipv4,
            })
        }
        6 => {
            if payload.len() < IPV6_HEADER {
                return Err(DropReason::BadInner);
            }
            // Payload length 0 is either a header-only packet or a jumbogram
            // (RFC 2675); a jumbogram cannot fit a frame, so both read as a
            // 40-byte packet and anything after it as TFC padding.
            let plen = usize::from(u16::from_be_bytes([payload[4], payload[5]]));
            let total = IPV6_HEADER + plen;
            if total > payload.len() {
                return Err(DropReason::BadInner);
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&payload[8..24]);
            d.copy_from_slice(&payload[24..40]);
            Ok(InnerInfo {
                len: total,
                src: IpAddr::V6(Ipv6Addr::from(s)),
                dst: IpAddr::V6(Ipv6Addr::from(d)),
                next_header: NextHeader::Ipv6,
            })
        }
        _ => Err(DropReason::BadInner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(total: u16, extra: usize) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(total) + extra];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p
    }

    #[test]
    fn ipv4_lengths() {
        let info = inspect(&v4(28, 0)).unwrap();
        assert_eq!(info.len, 28);
        assert_eq!(info.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(info.next_header, NextHeader::Ipv4);
        // TFC padding after the packet is allowed and not counted.
        assert_eq!(inspect(&v4(28, 5)).unwrap().len, 28);
        // Total length beyond the payload.
        let mut p = v4(28, 0);
        p[3] = 29;
        assert_eq!(inspect(&p), Err(DropReason::BadInner));
        // IHL below 5.
        let mut p = v4(28, 0);
        p[0] = 0x44;
        assert_eq!(inspect(&p), Err(DropReason::BadInner));
        assert_eq!(inspect(&v4(28, 0)[..19]), Err(DropReason::BadInner));
    }

    #[test]
    fn ipv6_and_other_versions() {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[5] = 8;
        p[23] = 1;
        p[39] = 2;
        let info = inspect(&p).unwrap();
        assert_eq!(info.len, 48);
        assert_eq!(info.dst, "::2".parse::<IpAddr>().unwrap());
        p[5] = 9;
        assert_eq!(inspect(&p), Err(DropReason::BadInner));
        assert_eq!(inspect(&[0x50; 40]), Err(DropReason::BadInner));
        assert_eq!(inspect(&[]), Err(DropReason::BadInner));
    }
}
