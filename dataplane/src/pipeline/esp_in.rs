//! ESP arriving at one of our tunnel endpoints (protocol 50, or UDP/4500
//! per RFC 3948): opened with the inbound SA its SPI names, and the inner
//! packet classified again as if it had arrived on the same port.

use std::net::IpAddr;
use std::time::Instant;

use strait_esp::{classify_outer, ArrivalKind, DropReason as EspDrop};
use strait_wire::EtherType;

use super::l2::{write_eth, ETH_LEN};
use super::{Ctx, IpMeta, NatDone, Next, Pipeline, Verdict};
use crate::counters::DropReason;
use crate::packet::PacketBuf;
use crate::tables::Tables;

/// Opens the ESP packet at `cx.l3`; the inner packet continues at L2 with
/// `cx.decap` naming its tunnel. IKE goes to the host, NAT-keepalives are
/// used up, other UDP is for the host.
pub(super) fn open<'t, P>(
    p: &mut Pipeline<P>,
    t: &'t Tables,
    cx: &mut Ctx<'t>,
    pkt: &mut PacketBuf<'_>,
    now: Instant,
) -> Next<'t> {
    let l3 = cx.l3;
    let arrival = match classify_outer(&pkt.data()[l3..]) {
        Ok(a) => a,
        Err(_) => return drop(DropReason::EspTruncated),
    };
    let esp = match arrival.kind {
        ArrivalKind::Other => return Next::Host,
        ArrivalKind::Keepalive => return Next::Done(Verdict::Consumed),
        // Key exchange belongs to the control plane in the host stack.
        ArrivalKind::Ike(_) => return cx.punt(),
        ArrivalKind::Esp(r) => r,
    };
    let clock = now.saturating_duration_since(t.epoch);
    let base = pkt.start() + l3;
    let abs = base + esp.start..base + esp.end;
    let (buf, _, _) = pkt.raw_mut();
    let Ok(spi) = strait_esp::peek_spi(&buf[abs.clone()]) else {
        return drop(DropReason::EspTruncated);
    };
    let Some(entry) = p.esp.inbound.get_mut(spi) else {
        return drop(DropReason::EspBadSpi);
    };
    let top = entry.sa.replay_window().top();
    let opened = match entry.sa.open(buf, abs, clock) {
        Ok(o) => o,
        Err(e) => return drop(esp_drop(e)),
    };
    let Some(tun) = t.tunnels.get(usize::from(entry.tunnel)) else {
        return drop(DropReason::EspBadSpi);
    };
    if opened.seq > top {
        entry.state.note_top(opened.seq);
    }
    // NAT traversal: answer where authenticated traffic comes from, but
    // only traffic that advanced the window: an old packet replayed from
    // elsewhere (authentic, inside the window) must not move the peer.
    if let (IpAddr::V4(src), Some((sport, _)), true) = (arrival.src, arrival.udp, opened.seq > top)
    {
        tun.learn_peer(src, sport);
    }
    p.counters[usize::from(cx.port.id)].esp_opened += 1;
    // The inner packet continues as if it had arrived on this port,
    // behind a synthetic Ethernet header.
    let inner = opened.inner;
    let Some(frame_start) = inner.start.checked_sub(ETH_LEN) else {
        return drop(DropReason::NoHeadroom);
    };
    if !pkt.set_window(frame_start, ETH_LEN + inner.len()) {
        return drop(DropReason::NoHeadroom);
    }
    let ethertype = match pkt.data().get(ETH_LEN).map(|b| b >> 4) {
        Some(6) => EtherType::IPV6,
        _ => EtherType::IPV4,
    };
    let mac = cx.port.link.mac;
    write_eth(pkt.data_mut(), mac, mac, ethertype);
    cx.decap = Some(tun.egress);
    cx.ip = IpMeta::NONE;
    cx.nat = NatDone::No;
    Next::L2
}

/// RFC 4301 §5.2: a packet that did not come out of a tunnel, whose source
/// is one of a tunnel's remote prefixes and whose source and destination
/// that tunnel's inbound selectors cover, is refused: it claims to be
/// protected traffic but arrived in clear. One FIB lookup on the source
/// (flat in the number of tunnels), then that tunnel's selectors.
#[inline]
pub(super) fn policy_violation(t: &Tables, cx: &Ctx<'_>, src: IpAddr) -> bool {
    if cx.decap.is_some() || t.tunnels.is_empty() {
        return false;
    }
    let Some(strait_fib::Disposition::Forward(nh)) = t.protected.lookup(src, 0) else {
        return false;
    };
    match t.egress(nh.egress) {
        Some(crate::tables::Egress::Tunnel(tun)) => tun
            .in_specs
            .iter()
            .any(|spec| spec.selectors.allows(src, cx.ip.dst)),
        _ => false,
    }
}

fn drop<'t>(reason: DropReason) -> Next<'t> {
    Next::Done(Verdict::Drop(reason))
}

fn esp_drop(e: EspDrop) -> DropReason {
    match e {
        EspDrop::BadSpi => DropReason::EspBadSpi,
        EspDrop::AuthFailed => DropReason::EspAuthFailed,
        EspDrop::Replay => DropReason::EspReplay,
        EspDrop::ReplayOld => DropReason::EspReplayOld,
        EspDrop::Truncated => DropReason::EspTruncated,
        _ => DropReason::EspInvalid,
    }
}
