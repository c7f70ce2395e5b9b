//! Answers Strait builds in place of the frame (ICMP errors, echo
//! replies, NDP advertisements): built in the worker's scratch buffer, then
//! copied behind an Ethernet header back to the sender.

use std::net::Ipv6Addr;

use strait_wire::ipv6::HEADER_LEN as IPV6_LEN;
use strait_wire::{EtherType, Icmpv6Repr, IpProtocol, Ipv6Repr};

use super::l2::{sender_mac, write_eth, ETH_LEN};
use super::Pipeline;
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
