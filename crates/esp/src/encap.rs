//! Tunnel-mode outer headers and UDP encapsulation of ESP (RFC 3948).
//!
//! Outer IPv4/IPv6 and UDP headers (fixed layouts, no options) are written
//! and read through `strait-wire`'s views, which name every field once.

use core::ops::Range;
use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use strait_wire::{IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket};

use crate::error::DropReason;
use crate::packet::ESP_HEADROOM;

/// UDP port for IKE and ESP behind NAT (RFC 3948 §2, RFC 7296 §2.23).
pub const NAT_T_PORT: u16 = 4500;
/// Outer IPv4 header written here (no options).
pub const IPV4_HEADER_LEN: usize = strait_wire::ipv4::HEADER_LEN;
/// Outer IPv6 header (no extension headers).
pub const IPV6_HEADER_LEN: usize = strait_wire::ipv6::HEADER_LEN;
/// UDP header.
pub const UDP_HEADER_LEN: usize = strait_wire::udp::HEADER_LEN;
/// Most bytes an outer header needs in front of the ESP packet.
pub const MAX_OUTER_LEN: usize = IPV6_HEADER_LEN + UDP_HEADER_LEN;
/// Headroom in front of an inner packet for ESP plus the largest outer
/// header (IPv6 + UDP). Link-layer headers come on top of this.
pub const TUNNEL_HEADROOM: usize = MAX_OUTER_LEN + ESP_HEADROOM;
/// Non-ESP marker that prefixes IKE messages on port 4500 (RFC 3948 §2.2).
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// Payload of a NAT-keepalive packet (RFC 3948 §2.3).
pub const KEEPALIVE_PAYLOAD: u8 = 0xff;

/// UDP ports for NAT traversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpEncap {
    /// Local port (4500 unless NAT-T floated elsewhere).
    pub src_port: u16,
    /// Peer port as seen after the NAT.
    pub dst_port: u16,
}

impl UdpEncap {
    /// Port 4500 on both ends.
    pub const DEFAULT: UdpEncap = UdpEncap {
        src_port: NAT_T_PORT,
        dst_port: NAT_T_PORT,
    };
}

/// Outer IPv4 header parameters for a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterIpv4 {
    /// Tunnel source.
    pub src: Ipv4Addr,
    /// Tunnel destination.
    pub dst: Ipv4Addr,
    /// Time to live.
    pub ttl: u8,
    /// DSCP and ECN octet; the caller derives it from the inner header
    /// (RFC 4301 §5.1.2.1, RFC 6040 for ECN).
    pub tos: u8,
    /// Identification field.
    pub ident: u16,
    /// Set DF: path-MTU discovery on the outer path (RFC 4301 §8.1).
    pub dont_fragment: bool,
    /// UDP encapsulation, if NAT traversal is in use.
    pub udp: Option<UdpEncap>,
}

/// Outer IPv6 header parameters for a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterIpv6 {
    /// Tunnel source.
    pub src: Ipv6Addr,
    /// Tunnel destination.
    pub dst: Ipv6Addr,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Flow label (20 bits), e.g. a hash of the inner flow.
    pub flow_label: u32,
    /// UDP encapsulation, if NAT traversal is in use.
    pub udp: Option<UdpEncap>,
}

/// An outer header to prepend to an ESP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OuterHeader {
    /// IPv4 tunnel.
    V4(OuterIpv4),
    /// IPv6 tunnel.
    V6(OuterIpv6),
}

impl OuterHeader {
    /// Bytes this header occupies in front of the ESP packet.
    pub fn len(&self) -> usize {
        let (ip, udp) = match self {
            OuterHeader::V4(h) => (IPV4_HEADER_LEN, h.udp.is_some()),
            OuterHeader::V6(h) => (IPV6_HEADER_LEN, h.udp.is_some()),
        };
        ip + if udp { UDP_HEADER_LEN } else { 0 }
    }

    /// Never empty; present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the header into the bytes just before `buf[payload]` (an ESP
    /// packet, or a keepalive/IKE payload when UDP is used) and returns the
    /// range of the whole outer packet.
    pub fn write(&self, buf: &mut [u8], payload: Range<usize>) -> Result<Range<usize>, DropReason> {
        let start = payload
            .start
            .checked_sub(self.len())
            .ok_or(DropReason::NoRoom)?;
        if payload.start > payload.end || payload.end > buf.len() {
            return Err(DropReason::NoRoom);
        }
        let payload_len = payload.end - payload.start;
        match self {
            OuterHeader::V4(h) => {
                let total = self.len() + payload_len;
                let total16 = u16::try_from(total).map_err(|_| DropReason::NoRoom)?;
                let mut ip = Ipv4Packet::new_unchecked(&mut buf[start..start + IPV4_HEADER_LEN]);
                ip.set_header_len(IPV4_HEADER_LEN);
                ip.set_dscp_ecn(h.tos >> 2, h.tos & 0x03);
                ip.set_total_len(total16);
                ip.set_ident(h.ident);
                ip.set_frag(h.dont_fragment, false, 0);
                ip.set_ttl(h.ttl);
                ip.set_protocol(outer_protocol(h.udp));
                ip.set_src_addr(h.src);
                ip.set_dst_addr(h.dst);
                ip.fill_checksum();
                if let Some(udp) = h.udp {
                    let at = start + IPV4_HEADER_LEN;
                    // RFC 3948 §3.1: the UDP checksum SHOULD be 0 over IPv4;
                    // ESP carries its own integrity check.
                    write_udp(&mut buf[at..at + UDP_HEADER_LEN], udp, payload_len)?;
                }
            }
            OuterHeader::V6(h) => {
                let udp_len = if h.udp.is_some() { UDP_HEADER_LEN } else { 0 };
                let plen = u16::try_from(udp_len + payload_len).map_err(|_| DropReason::NoRoom)?;
                let mut ip = Ipv6Packet::new_unchecked(&mut buf[start..start + IPV6_HEADER_LEN]);
                ip.set_version_tc_flow(h.traffic_class, h.flow_label);
                ip.set_payload_len(plen);
                ip.set_next_header(outer_protocol(h.udp));
                ip.set_hop_limit(h.hop_limit);
                ip.set_src_addr(h.src);
                ip.set_dst_addr(h.dst);
                if let Some(udp) = h.udp {
                    // IPv6 forbids a zero UDP checksum in general
                    // (RFC 8200 §8.1), so compute the real one (a computed
                    // 0 is sent as all ones, RFC 768).
                    let at = start + IPV6_HEADER_LEN;
                    write_udp(&mut buf[at..at + UDP_HEADER_LEN], udp, payload_len)?;
                    UdpPacket::new_unchecked(&mut buf[at..payload.end])
                        .fill_checksum_v6(h.src, h.dst);
                }
            }
        }
        Ok(start..payload.end)
    }
}

/// ESP directly in IP (protocol 50), or in UDP for NAT traversal.
fn outer_protocol(udp: Option<UdpEncap>) -> IpProtocol {
    if udp.is_some() {
        IpProtocol::UDP
    } else {
        IpProtocol::ESP
    }
}

/// Writes a UDP header with a zero checksum (filled in later over IPv6).
fn write_udp(udp: &mut [u8], ports: UdpEncap, payload_len: usize) -> Result<(), DropReason> {
    let len = u16::try_from(UDP_HEADER_LEN + payload_len).map_err(|_| DropReason::NoRoom)?;
    let mut udp = UdpPacket::new_unchecked(udp);
    udp.set_src_port(ports.src_port);
    udp.set_dst_port(ports.dst_port);
    udp.set_len(len);
    udp.set_checksum(0);
    Ok(())
}

/// What a UDP/4500 payload is (RFC 3948 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpPayload {
    /// NAT-keepalive (one 0xFF byte): ignore after counting.
    Keepalive,
    /// IKE message after the non-ESP marker: hand `ike` (relative to the UDP
    /// payload) to the control plane.
    Ike {
        /// The IKE message without the marker.
        ike: Range<usize>,
    },
    /// An ESP packet occupying the whole payload.
    Esp,
    /// Too short to be any of the above.
    Malformed,
}

/// Classifies the payload of a UDP datagram received on port 4500.
pub fn classify_udp_payload(payload: &[u8]) -> UdpPayload {
    match payload {
        [KEEPALIVE_PAYLOAD] => UdpPayload::Keepalive,
        [0, 0, 0, 0, ..] => UdpPayload::Ike {
            ike: NON_ESP_MARKER.len()..payload.len(),
        },
        // An SPI is never 0, so four bytes that are not all zero start ESP.
        [_, _, _, _, ..] => UdpPayload::Esp,
        _ => UdpPayload::Malformed,
    }
}

/// Counters for the UDP encapsulation demultiplexer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncapCounters {
    /// NAT-keepalives received and ignored.
    pub keepalives: u64,
    /// IKE messages handed to the control plane.
    pub ike: u64,
    /// ESP packets passed on.
    pub esp: u64,
    /// Payloads too short to classify (dropped).
    pub malformed: u64,
}

impl EncapCounters {
    /// Counts one classified payload.
    pub fn record(&mut self, kind: &UdpPayload) {
        match kind {
            UdpPayload::Keepalive => self.keepalives += 1,
            UdpPayload::Ike { .. } => self.ike += 1,
            UdpPayload::Esp => self.esp += 1,
            UdpPayload::Malformed => self.malformed += 1,
        }
    }
}

/// Where an outer packet came from and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// Outer source address.
    pub src: IpAddr,
    /// Outer destination address.
    pub dst: IpAddr,
    /// UDP source/destination ports when encapsulated.
    pub udp: Option<(u16, u16)>,
    /// What the packet carries.
    pub kind: ArrivalKind,
}

/// Payload of an outer packet addressed to the tunnel endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrivalKind {
    /// ESP at this range of the outer packet.
    Esp(Range<usize>),
    /// NAT-keepalive.
    Keepalive,
    /// IKE message (marker stripped) at this range of the outer packet.
    Ike(Range<usize>),
    /// Neither ESP (protocol 50) nor UDP to port 4500.
    Other,
}

/// Parses an outer IPv4/IPv6 packet far enough to find ESP, either raw
/// (protocol 50) or UDP-encapsulated on port 4500. IPv6 extension headers
/// and IPv4 fragments are reported as `Other` for the slow path.
pub fn classify_outer(packet: &[u8]) -> Result<Arrival, DropReason> {
    let first = *packet.first().ok_or(DropReason::Truncated)?;
    // Every length problem (short header, IHL, total or payload length
    // beyond the buffer) is the same drop here.
    let (src, dst, proto, l4, end) = match first >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).map_err(|_| DropReason::Truncated)?;
            let src = IpAddr::V4(ip.src_addr());
            let dst = IpAddr::V4(ip.dst_addr());
            // More-fragments set or a non-zero offset: reassembly first.
            if ip.is_fragment() {
                return Ok(Arrival {
                    src,
                    dst,
                    udp: None,
                    kind: ArrivalKind::Other,
                });
            }
            (
                src,
                dst,
                ip.protocol(),
                ip.header_len(),
                usize::from(ip.total_len()),
            )
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).map_err(|_| DropReason::Truncated)?;
            (
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                ip.next_header(),
                IPV6_HEADER_LEN,
                IPV6_HEADER_LEN + usize::from(ip.payload_len()),
            )
        }
        _ => return Err(DropReason::BadInner),
    };
    let kind = match proto {
        IpProtocol::ESP => ArrivalKind::Esp(l4..end),
        IpProtocol::UDP => {
            let udp =
                UdpPacket::new_checked(&packet[l4..end]).map_err(|_| DropReason::Truncated)?;
            let (sport, dport) = (udp.src_port(), udp.dst_port());
            let ulen = usize::from(udp.len());
            if dport != NAT_T_PORT {
                return Ok(Arrival {
                    src,
                    dst,
                    udp: Some((sport, dport)),
                    kind: ArrivalKind::Other,
                });
            }
            let at = l4 + UDP_HEADER_LEN;
            let kind = match classify_udp_payload(udp.payload()) {
                UdpPayload::Keepalive => ArrivalKind::Keepalive,
                UdpPayload::Ike { ike } => ArrivalKind::Ike(at + ike.start..at + ike.end),
                UdpPayload::Esp => ArrivalKind::Esp(at..l4 + ulen),
                UdpPayload::Malformed => return Err(DropReason::Truncated),
            };
            return Ok(Arrival {
                src,
                dst,
                udp: Some((sport, dport)),
                kind,
            });
        }
        _ => ArrivalKind::Other,
    };
    Ok(Arrival {
        src,
        dst,
        udp: None,
        kind,
    })
}

/// A NAT-keepalive should be sent now (RFC 3948 §2.3): one byte
/// [`KEEPALIVE_PAYLOAD`] in UDP to the peer's port 4500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveDue;

/// Sans-I/O NAT-keepalive timer for one peer. A keepalive is due only when
/// nothing else was sent to the peer for a whole interval (RFC 3948 §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepaliveTimer {
    interval: Duration,
    deadline: Duration,
}

impl KeepaliveTimer {
    /// RFC 3948 §4: default interval of 20 seconds.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(20);

    /// A timer whose first keepalive falls one interval after `now`.
    pub fn new(interval: Duration, now: Duration) -> Self {
        KeepaliveTimer {
            interval,
            deadline: now.saturating_add(interval),
        }
    }

    /// A timer whose first keepalive is due at once (a new tunnel opens
    /// its NAT binding before any traffic), then every idle interval.
    pub fn due_now(interval: Duration, now: Duration) -> Self {
        KeepaliveTimer {
            interval,
            deadline: now,
        }
    }

    /// Note that some packet (ESP or IKE) went to the peer at `now`; it
    /// refreshes the NAT binding as well as a keepalive would.
    pub fn on_sent(&mut self, now: Duration) {
        self.deadline = self.deadline.max(now.saturating_add(self.interval));
    }

    /// When the next keepalive falls due if nothing else is sent.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Returns `Some` once the interval passed without traffic, and counts
    /// the keepalive as sent at `now`.
    pub fn poll(&mut self, now: Duration) -> Option<KeepaliveDue> {
        if now >= self.deadline {
            self.deadline = now.saturating_add(self.interval);
            Some(KeepaliveDue)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_wire::checksum;

    #[test]
    fn ipv4_udp_outer_header() {
        let mut buf = [0u8; 64];
        let esp = 28..60;
        buf[esp.clone()].fill(0xab);
        let h = OuterHeader::V4(OuterIpv4 {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 2),
            ttl: 64,
            tos: 0,
            ident: 0x1234,
            dont_fragment: true,
            udp: Some(UdpEncap::DEFAULT),
        });
        assert_eq!(h.len(), 28);
        let frame = h.write(&mut buf, esp.clone()).unwrap();
        assert_eq!(frame, 0..60);
        let ip = &buf[..20];
        assert_eq!(ip[0], 0x45);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 60);
        assert_eq!(ip[6], 0x40);
        assert_eq!(ip[9], 17);
        // A correct header checksums to zero.
        assert_eq!(checksum::checksum(ip), 0);
        let udp = &buf[20..28];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 4500);
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4500);
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]), 40);
        assert_eq!(&udp[6..8], &[0, 0], "RFC 3948 §3.1: zero checksum");
        let arrival = classify_outer(&buf[frame]).unwrap();
        assert_eq!(arrival.kind, ArrivalKind::Esp(esp));
        assert_eq!(arrival.udp, Some((4500, 4500)));
        assert_eq!(arrival.src, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        // No room in front.
        assert_eq!(h.write(&mut buf, 27..60), Err(DropReason::NoRoom));
    }

    #[test]
    fn ipv6_outer_header_checksums_udp() {
        let mut buf = [0u8; 100];
        let esp = 48..91;
        for (i, b) in buf[esp.clone()].iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let h = OuterHeader::V6(OuterIpv6 {
            src,
            dst,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0x12345,
            udp: Some(UdpEncap::DEFAULT),
        });
        let frame = h.write(&mut buf, esp.clone()).unwrap();
        assert_eq!(frame, 0..91);
        assert_eq!(buf[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([buf[4], buf[5]]), 51);
        // Verify: pseudo-header + UDP header + payload sums to zero.
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol(17), 51);
        assert_eq!(!checksum::add(pseudo, checksum::sum(&buf[40..91])), 0);
        assert_ne!(&buf[46..48], &[0, 0]);
        assert_eq!(
            classify_outer(&buf[frame]).unwrap().kind,
            ArrivalKind::Esp(esp)
        );
    }

    #[test]
    fn raw_esp_outer_header() {
        let mut buf = [0u8; 60];
        let h = OuterHeader::V4(OuterIpv4 {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_fragment: false,
            udp: None,
        });
        let frame = h.write(&mut buf, 20..60).unwrap();
        assert_eq!(buf[9], 50);
        let a = classify_outer(&buf[frame]).unwrap();
        assert_eq!((a.kind, a.udp), (ArrivalKind::Esp(20..60), None));
    }

    #[test]
    fn udp_payload_classification() {
        let mut c = EncapCounters::default();
        for (payload, expect) in [
            (&[0xff][..], UdpPayload::Keepalive),
            (&[0, 0, 0, 0, 1, 2][..], UdpPayload::Ike { ike: 4..6 }),
            (&[0, 0, 1, 0, 0, 0, 0, 1][..], UdpPayload::Esp),
            (&[0, 0][..], UdpPayload::Malformed),
            (&[][..], UdpPayload::Malformed),
            (&[0xfe][..], UdpPayload::Malformed),
        ] {
            let got = classify_udp_payload(payload);
            c.record(&got);
            assert_eq!(got, expect, "{payload:?}");
        }
        assert_eq!((c.keepalives, c.ike, c.esp, c.malformed), (1, 1, 1, 3));
    }

    #[test]
    fn keepalive_and_ike_arrivals() {
        let mut buf = [0u8; 64];
        let h = OuterHeader::V4(OuterIpv4 {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_fragment: false,
            udp: Some(UdpEncap::DEFAULT),
        });
        buf[28] = KEEPALIVE_PAYLOAD;
        let frame = h.write(&mut buf, 28..29).unwrap();
        assert_eq!(
            classify_outer(&buf[frame]).unwrap().kind,
            ArrivalKind::Keepalive
        );
        buf[28..32].copy_from_slice(&NON_ESP_MARKER);
        buf[32..40].fill(7);
        let frame = h.write(&mut buf, 28..40).unwrap();
        assert_eq!(
            classify_outer(&buf[frame]).unwrap().kind,
            ArrivalKind::Ike(32..40)
        );
        // Truncated UDP length.
        buf[25] = 200;
        assert_eq!(classify_outer(&buf[..40]), Err(DropReason::Truncated));
        assert_eq!(classify_outer(&[]), Err(DropReason::Truncated));
        assert_eq!(classify_outer(&[0x45; 10]), Err(DropReason::Truncated));
    }

    #[test]
    fn keepalive_timer_waits_for_idle_interval() {
        let s = Duration::from_secs;
        let mut t = KeepaliveTimer::new(KeepaliveTimer::DEFAULT_INTERVAL, s(100));
        assert_eq!(t.poll(s(119)), None);
        t.on_sent(s(115));
        assert_eq!(t.deadline(), s(135));
        assert_eq!(t.poll(s(134)), None);
        assert_eq!(t.poll(s(135)), Some(KeepaliveDue));
        assert_eq!(t.poll(s(136)), None);
        assert_eq!(t.poll(s(155)), Some(KeepaliveDue));
        // A late clock reading never moves the last send backwards.
        t.on_sent(s(10));
        assert_eq!(t.deadline(), s(175));
        let mut first = KeepaliveTimer::due_now(s(20), s(0));
        assert_eq!(first.poll(s(0)), Some(KeepaliveDue));
        assert_eq!(first.poll(s(19)), None);
        assert_eq!(first.poll(s(20)), Some(KeepaliveDue));
    }
}
