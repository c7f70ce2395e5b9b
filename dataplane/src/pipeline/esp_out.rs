//! ESP leaving: the L3 packet in the window sealed into its tunnel
//! (RFC 4303 tunnel mode), the outer IPv4 (+ UDP, RFC 3948) header
//! written, and the outer packet routed out of a port. NAT-keepalives
//! (RFC 3948 §2.3) take the same way out.

use std::net::{IpAddr, SocketAddrV4};
use std::time::Instant;

use strait_esp::{DropReason as EspDrop, OuterHeader, OuterIpv4, UdpEncap};

use super::{route, Next, Pipeline, Verdict};
use crate::counters::DropReason;
use crate::packet::PacketBuf;
use crate::tables::{Tables, Tunnel};

/// Seals the packet into `tun` and routes the outer packet.
pub(super) fn seal<'t, P>(
    p: &mut Pipeline<P>,
    t: &Tables,
    tun: &Tunnel,
    pkt: &mut PacketBuf<'_>,
    now: Instant,
) -> Next<'t> {
    let clock = now.saturating_duration_since(t.epoch);
    let Some(out) = p.esp.out.get_mut(usize::from(tun.id)) else {
        return drop(DropReason::EspSealFailed);
    };
    // RFC 4301 §5.1.2.1: the outer DSCP is copied from the inner header;
    // ECN is not propagated (RFC 6040's compatibility mode).
    let tos = match pkt.data().first().map(|b| b >> 4) {
        Some(4) => pkt.data().get(1).copied().unwrap_or(0) & 0xfc,
        Some(6) => {
            let d = pkt.data();
            ((u16::from_be_bytes([d[0], d[1]]) >> 4) as u8) & 0xfc
        }
        _ => 0,
    };
    let (buf, start, end) = pkt.raw_mut();
    let sealed = match out.seal(buf, start..end, clock) {
        Ok(s) => s,
        Err(EspDrop::NoRoom) => return drop(DropReason::NoHeadroom),
        Err(EspDrop::SeqUnreserved) => return drop(DropReason::EspSeqUnreserved),
        Err(_) => return drop(DropReason::EspSealFailed),
    };
    let (dst, dst_port) = tun.peer();
    let header = OuterHeader::V4(OuterIpv4 {
        src: tun.local,
        dst,
        ttl: 64,
        tos,
        ident: 0,
        // RFC 4301 §8.1: set DF and let PMTU discovery work on the
        // outer path.
        dont_fragment: true,
        udp: tun.local_port.map(|p| UdpEncap {
            src_port: p,
            dst_port,
        }),
    });
    let outer = match header.write(buf, sealed.esp) {
        Ok(r) => r,
        Err(_) => return drop(DropReason::NoHeadroom),
    };
    if !pkt.set_window(outer.start, outer.len()) {
        return drop(DropReason::NoHeadroom);
    }
    match route::outer(t, IpAddr::V4(dst)) {
        Some((port, neighbour)) => {
            p.counters[usize::from(port)].esp_sealed += 1;
            Next::Done(Verdict::Forward { port, neighbour })
        }
        None => drop(DropReason::TunnelNoRoute),
    }
}

fn drop<'t>(reason: DropReason) -> Next<'t> {
    Next::Done(Verdict::Drop(reason))
}

impl<P> Pipeline<P> {
    /// Turns the (empty) window into a NAT-keepalive for `tun` (RFC 3948
    /// §2.3: one 0xFF byte in UDP to the peer) and routes it.
    pub fn keepalive(&mut self, t: &Tables, tun: &Tunnel, pkt: &mut PacketBuf<'_>) -> Verdict {
        let Some(src_port) = tun.local_port else {
            return Verdict::Consumed;
        };
        let (dst, dst_port) = tun.peer();
        let from = SocketAddrV4::new(tun.local, src_port);
        let to = SocketAddrV4::new(dst, dst_port);
        self.udp_from_us(t, from, to, &[strait_esp::KEEPALIVE_PAYLOAD], pkt)
    }

    /// Turns the (empty) window into a UDP datagram from one of our
    /// addresses (`from`) carrying `payload` (IKE, keepalives) and routes
    /// it as the tunnels' outer packets are.
    pub fn udp_from_us(
        &mut self,
        t: &Tables,
        from: SocketAddrV4,
        to: SocketAddrV4,
        payload: &[u8],
        pkt: &mut PacketBuf<'_>,
    ) -> Verdict {
        let start = pkt.start();
        if payload.is_empty() || !pkt.set_window(start, payload.len()) {
            return Verdict::Drop(DropReason::NoHeadroom);
        }
        pkt.data_mut().copy_from_slice(payload);
        let header = OuterHeader::V4(OuterIpv4 {
            src: *from.ip(),
            dst: *to.ip(),
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_fragment: true,
            udp: Some(UdpEncap {
                src_port: from.port(),
                dst_port: to.port(),
            }),
        });
        let (buf, start, end) = pkt.raw_mut();
        let Ok(outer) = header.write(buf, start..end) else {
            return Verdict::Drop(DropReason::NoHeadroom);
        };
        pkt.set_window(outer.start, outer.len());
        match route::outer(t, IpAddr::V4(*to.ip())) {
            Some((port, neighbour)) => Verdict::Forward { port, neighbour },
            None => Verdict::Drop(DropReason::TunnelNoRoute),
        }
    }
}
