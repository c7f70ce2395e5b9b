//! Answers Strait builds in place of the frame (ICMP errors, echo
//! replies, NDP advertisements): built in the worker's scratch buffer, then
//! copied behind an Ethernet header back to the sender.

use std::net::Ipv6Addr;
use std::time::Instant;

use strait_wire::ipv6::HEADER_LEN as IPV6_LEN;
use strait_wire::{emit_tcp_reset, EtherType, Icmpv6Repr, IpProtocol, Ipv6Repr};

use super::l2::{sender_mac, write_eth, ETH_LEN};
use super::{Ctx, Next, Pipeline, Verdict};
use crate::counters::DropReason;
use crate::packet::PacketBuf;
use crate::tables::Port;

/// Replaces the frame by an Ethernet header back to the sender followed
/// by `scratch[..n]`.
pub(super) fn reply_from_scratch<P>(
    p: &Pipeline<P>,
    port: &Port,
    pkt: &mut PacketBuf<'_>,
    n: usize,
    ethertype: EtherType,
) -> Result<(), DropReason> {
    let sender = sender_mac(pkt);
    let start = pkt.start();
    if !pkt.set_window(start, ETH_LEN + n) {
        return Err(DropReason::NoHeadroom);
    }
    let data = pkt.data_mut();
    write_eth(data, sender, port.link.mac, ethertype);
    data[ETH_LEN..].copy_from_slice(&p.scratch[..n]);
    Ok(())
}

/// Writes an IPv6 header and an ICMPv6 message into `out`; its length.
pub(super) fn emit_ipv6_icmp(
    out: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    icmp: &Icmpv6Repr<'_>,
) -> Option<usize> {
    let len = icmp.buffer_len();
    Ipv6Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::ICMPV6,
        payload_len: len,
        hop_limit,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(out)
    .ok()?;
    icmp.emit(out.get_mut(IPV6_LEN..IPV6_LEN + len)?, src, dst)
        .ok()?;
    Some(IPV6_LEN + len)
}

/// Counts the packet's drop under `reason` and answers its TCP segment
/// with a reset from the address and port it was sent to (RFC 9293
/// §3.10.7.1, what a closed port answers), back the way it came. Shares
/// the ICMP errors' rate limit: both are answers a flood could provoke.
pub(super) fn tcp_reset<'t, P>(
    p: &mut Pipeline<P>,
    cx: &Ctx<'t>,
    pkt: &mut PacketBuf<'_>,
    reason: DropReason,
    now: Instant,
) -> Next<'t> {
    let port = cx.port;
    p.count_drop(port.id, reason);
    if !p.icmp_bucket.take(now) {
        p.count_drop(port.id, DropReason::IcmpRateLimited);
        return Next::Done(Verdict::Consumed);
    }
    let Ok(n) = emit_tcp_reset(&pkt.data()[cx.l3..], &mut p.scratch[..]) else {
        return Next::Done(Verdict::Consumed);
    };
    if let Err(reason) = reply_from_scratch(p, port, pkt, n, EtherType::IPV4) {
        return Next::Done(Verdict::Drop(reason));
    }
    cx.reply(pkt)
}
