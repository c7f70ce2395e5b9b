//! ARP (RFC 826) and neighbour discovery (RFC 4861): answers for our
//! addresses, learning from what neighbours send (which releases packets
//! held for them), and the requests the worker sends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use strait_wire::icmpv6::NeighborFlags;
use strait_wire::{
    ArpOperation, ArpPacket, ArpRepr, Error as WireError, EtherType, EthernetAddress, Icmpv6Packet,
    Icmpv6Repr, Icmpv6Type, Ipv6Packet,
};

use super::l2::{sender_mac, write_eth, ETH_LEN};
use super::reply::{emit_ipv6_icmp, reply_from_scratch};
use super::{Ctx, Next, Pipeline, Verdict};
use crate::counters::DropReason;
use crate::packet::PacketBuf;
use crate::tables::Port;

/// Answers ARP requests for our addresses and learns senders.
pub(super) fn arp<'t, P>(
    p: &mut Pipeline<P>,
    cx: &Ctx<'t>,
    pkt: &mut PacketBuf<'_>,
    now: Instant,
) -> Next<'t> {
    let port = cx.port;
    let repr = match ArpPacket::new_checked(&pkt.data()[cx.l3..]).and_then(|a| ArpRepr::parse(&a)) {
        Ok(r) => r,
        Err(WireError::Truncated { .. }) => return drop(DropReason::Truncated),
        Err(_) => return drop(DropReason::ArpMalformed),
    };
    let for_us = port.owns_v4(repr.target_protocol_addr);
    let sender = IpAddr::V4(repr.source_protocol_addr);
    let key = (port.id, sender);
    let released = &mut p.released;
    // RFC 826 "merge": update a known sender; create it if the packet
    // was for us and the sender is on one of the port's subnets (anything
    // else would let a flood of made-up senders fill the table).
    if !repr.source_protocol_addr.is_unspecified() {
        let create = for_us && port.on_link(sender);
        p.neighbours
            .confirm(key, repr.source_hardware_addr.0, create, now, |held| {
                released.push((key, held))
            });
    }
    if !for_us || repr.operation != ArpOperation::REQUEST {
        // Replies are also useful to the host stack behind the TAP.
        return if for_us {
            cx.punt()
        } else {
            Next::Done(Verdict::Consumed)
        };
    }
    let reply = repr.reply_to(EthernetAddress(port.link.mac));
    let start = pkt.start();
    if !pkt.set_window(start, 60) {
        return drop(DropReason::NoHeadroom);
    }
    let data = pkt.data_mut();
    data.fill(0);
    write_eth(
        data,
        repr.source_hardware_addr.0,
        port.link.mac,
        EtherType::ARP,
    );
    if reply.emit(&mut data[ETH_LEN..]).is_err() {
        return drop(DropReason::ArpMalformed);
    }
    p.counters[usize::from(port.id)].neighbour_replies += 1;
    Next::Done(Verdict::Reply)
}

/// Neighbour discovery (RFC 4861): answers solicitations for our
/// addresses, learns from advertisements. `None` when the packet is not
/// NDP and continues on the normal path.
pub(super) fn ndp<'t, P>(
    p: &mut Pipeline<P>,
    cx: &Ctx<'t>,
    pkt: &mut PacketBuf<'_>,
    now: Instant,
) -> Option<Next<'t>> {
    enum Ndp {
        Solicit(Ipv6Addr, Option<EthernetAddress>),
        Advert(Ipv6Addr, Option<EthernetAddress>),
    }
    let port = cx.port;
    let (src, msg, hop_limit) = {
        let ip = Ipv6Packet::new_unchecked(&pkt.data()[cx.l3..]);
        let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
        if !matches!(
            icmp.msg_type(),
            Icmpv6Type::NEIGHBOR_SOLICIT | Icmpv6Type::NEIGHBOR_ADVERT
        ) {
            return None;
        }
        let msg = match Icmpv6Repr::parse(&icmp, ip.src_addr(), ip.dst_addr()) {
            Ok(Icmpv6Repr::NeighborSolicit {
                target,
                source_lladdr,
            }) => Ndp::Solicit(target, source_lladdr),
            Ok(Icmpv6Repr::NeighborAdvert {
                target,
                target_lladdr,
                ..
            }) => Ndp::Advert(target, target_lladdr),
            Ok(_) => return None,
            Err(_) => return Some(drop(DropReason::NdpMalformed)),
        };
        (ip.src_addr(), msg, ip.hop_limit())
    };
    // RFC 4861 §7.1.1/§7.1.2: NDP must arrive with hop limit 255.
    if hop_limit != 255 {
        return Some(drop(DropReason::NdpBadHopLimit));
    }
    match msg {
        Ndp::Solicit(target, source_lladdr) => {
            // RFC 4861 §7.2.3: only a solicitation for one of our addresses
            // is processed (and only then is its sender learned).
            if !port.owns_v6(target) {
                return Some(Next::Done(Verdict::Consumed));
            }
            if let (Some(mac), false) = (source_lladdr, src.is_unspecified()) {
                let key = (port.id, IpAddr::V6(src));
                let create = port.on_link(IpAddr::V6(src));
                let released = &mut p.released;
                p.neighbours
                    .confirm(key, mac.0, create, now, |held| released.push((key, held)));
            }
            // RFC 4861 §7.2.4: answer a DAD probe (unspecified source)
            // to all-nodes.
            let dst = if src.is_unspecified() {
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
            } else {
                src
            };
            let answer = Icmpv6Repr::NeighborAdvert {
                flags: NeighborFlags {
                    router: true,
                    solicited: !src.is_unspecified(),
                    override_: true,
                },
                target,
                target_lladdr: Some(EthernetAddress(port.link.mac)),
            };
            let n = emit_ipv6_icmp(&mut p.scratch[..], target, dst, 255, &answer)?;
            p.counters[usize::from(port.id)].neighbour_replies += 1;
            Some(match reply_from_scratch(p, port, pkt, n, EtherType::IPV6) {
                Ok(()) => cx.reply(pkt),
                Err(reason) => drop(reason),
            })
        }
        Ndp::Advert(target, target_lladdr) => {
            let mac = match target_lladdr {
                Some(m) => m.0,
                None => sender_mac(pkt),
            };
            let key = (port.id, IpAddr::V6(target));
            let released = &mut p.released;
            p.neighbours
                .confirm(key, mac, false, now, |held| released.push((key, held)));
            Some(Next::Done(Verdict::Consumed))
        }
    }
}

fn drop<'t>(reason: DropReason) -> Next<'t> {
    Next::Done(Verdict::Drop(reason))
}

/// Builds an ARP request for `target` from `port` into `buf` (broadcast,
/// or unicast to a stale neighbour); returns the frame length.
pub fn arp_request(
    buf: &mut [u8],
    port: &Port,
    target: Ipv4Addr,
    unicast: Option<[u8; 6]>,
) -> Option<usize> {
    let src_ip = port.v4.first()?.0;
    let repr = ArpRepr::request(EthernetAddress(port.link.mac), src_ip, target);
    let frame = buf.get_mut(..60)?;
    frame.fill(0);
    write_eth(
        frame,
        unicast.unwrap_or([0xff; 6]),
        port.link.mac,
        EtherType::ARP,
    );
    repr.emit(&mut frame[ETH_LEN..]).ok()?;
    Some(60)
}

/// Builds a neighbour solicitation (RFC 4861 §7.2.2) for `target`, to its
/// solicited-node multicast address (or unicast when re-probing).
pub fn neighbour_solicitation(
    buf: &mut [u8],
    port: &Port,
    target: Ipv6Addr,
    unicast: Option<[u8; 6]>,
) -> Option<usize> {
    let src_ip = port.v6.first()?.0;
    let t = target.octets();
    let (dst_ip, dst_mac) = match unicast {
        Some(mac) => (target, mac),
        None => (
            Ipv6Addr::new(
                0xff02,
                0,
                0,
                0,
                0,
                1,
                0xff00 | u16::from(t[13]),
                u16::from_be_bytes([t[14], t[15]]),
            ),
            [0x33, 0x33, 0xff, t[13], t[14], t[15]],
        ),
    };
    let repr = Icmpv6Repr::NeighborSolicit {
        target,
        source_lladdr: Some(EthernetAddress(port.link.mac)),
    };
    let frame = buf.get_mut(ETH_LEN..)?;
    let n = emit_ipv6_icmp(frame, src_ip, dst_ip, 255, &repr)?;
    write_eth(buf, dst_mac, port.link.mac, EtherType::IPV6);
    Some(ETH_LEN + n)
}
