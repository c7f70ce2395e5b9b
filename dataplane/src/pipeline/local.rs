//! Local delivery: traffic for one of our addresses. ESP and NAT-T to a
//! tunnel endpoint go to the ESP stage, echo requests are answered here,
//! everything else goes to the host stack; and the way back, the frames
//! the host stack sends ([`Pipeline::host_output`]).

use std::net::IpAddr;

use strait_wire::{
    Error as WireError, EtherType, Icmpv4Packet, Icmpv4Type, Icmpv6Packet, Icmpv6Repr, Icmpv6Type,
    IpProtocol, Ipv4Packet, Ipv6Packet,
};

use std::time::Instant;

use strait_fib::Disposition;

use super::l2::{swap_macs, ETH_LEN};
use super::reply::{emit_ipv6_icmp, reply_from_scratch};
use super::{esp_out, route, Ctx, FragmentPlan, FragmentTarget, Next, Pipeline, Verdict};
use crate::counters::DropReason;
use crate::packet::PacketBuf;
use crate::tables::{Egress, Tables};

impl<P> Pipeline<P> {
    /// A frame the host stack sent through the TAP of port `port`: an IP
    /// packet whose destination the dataplane routes into a tunnel (the
    /// host's answer to a packet that came out of one, or its own query to
    /// a resolver behind one) is sealed into it, its TCP SYN's MSS clamped
    /// as a forwarded one's is, and split when it is too big with DF clear
    /// (RFC 4459 §3, as [`route`]'s transmit does). Anything else is sent on
    /// the port as the host built it ([`Verdict::Reply`]): the host chose
    /// the port and resolved the neighbour. The host's packets are never
    /// sent in clear where the tables say a tunnel.
    pub fn host_output(
        &mut self,
        t: &Tables,
        port: u16,
        pkt: &mut PacketBuf<'_>,
        now: Instant,
    ) -> Verdict {
        let Some(host) = HostPacket::parse(pkt.data()) else {
            return Verdict::Reply;
        };
        let tun = match t.fib.lookup(host.dst, 0) {
            Some(Disposition::Forward(nh)) => match t.egress(nh.egress) {
                Some(Egress::Tunnel(tun)) => tun,
                _ => return Verdict::Reply,
            },
            _ => return Verdict::Reply,
        };
        self.esp.sync(t);
        pkt.pull_front(ETH_LEN);
        if let (Some(mss), Some(at)) = (tun.mss, host.tcp) {
            if let Some(segment) = pkt.data_mut().get_mut(at..) {
                route::clamp_mss(segment, mss);
            }
        }
        if host.total > usize::from(tun.mtu) {
            if host.dst.is_ipv4() && !host.dont_frag {
                return Verdict::Fragment(FragmentPlan {
                    mtu: tun.mtu,
                    target: FragmentTarget::Tunnel { tunnel: tun.id },
                });
            }
            self.count_drop(port, DropReason::HostTooBig);
            return Verdict::Drop(DropReason::HostTooBig);
        }
        let verdict = match esp_out::seal(self, t, tun, pkt, now) {
            Next::Done(v) => v,
            _ => Verdict::Drop(DropReason::EspSealFailed),
        };
        if let Verdict::Drop(reason) = verdict {
            self.count_drop(port, reason);
        }
        verdict
    }
}

/// What [`Pipeline::host_output`] needs of a host frame's IP header.
struct HostPacket {
    dst: IpAddr,
    /// IPv4 total length / IPv6 header plus payload.
    total: usize,
    dont_frag: bool,
    /// Offset of the TCP header after Ethernet, for a TCP first fragment.
    tcp: Option<usize>,
}

impl HostPacket {
    /// The IPv4 or IPv6 header after an untagged Ethernet header; `None`
    /// for anything else (ARP, NDP's own frames are IPv6 and parse).
    fn parse(frame: &[u8]) -> Option<HostPacket> {
        let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let ip = frame.get(ETH_LEN..)?;
        match EtherType(ethertype) {
            EtherType::IPV4 => {
                let ip = Ipv4Packet::new_checked(ip).ok()?;
                let first = ip.frag_offset() == 0;
                Some(HostPacket {
                    dst: IpAddr::V4(ip.dst_addr()),
                    total: usize::from(ip.total_len()),
                    dont_frag: ip.dont_frag(),
                    tcp: (ip.protocol() == IpProtocol::TCP && first).then(|| ip.header_len()),
                })
            }
            EtherType::IPV6 => {
                let ip = Ipv6Packet::new_checked(ip).ok()?;
                Some(HostPacket {
                    dst: IpAddr::V6(ip.dst_addr()),
                    total: IPV6_HEADER + usize::from(ip.payload_len()),
                    dont_frag: true,
                    tcp: (ip.next_header() == IpProtocol::TCP).then_some(IPV6_HEADER),
                })
            }
            _ => None,
        }
    }
}

/// The fixed IPv6 header (RFC 8200 §3).
const IPV6_HEADER: usize = 40;

/// Sends IKE to the daemon (with `[ike]`), tunnel traffic to the ESP
/// stage, the rest to the host.
#[inline]
pub(super) fn deliver<'t>(t: &Tables, cx: &Ctx<'t>, pkt: &PacketBuf<'_>) -> Next<'t> {
    if cx.ip.proto == IpProtocol::UDP && cx.decap.is_none() && is_service(t, cx, pkt) {
        return Next::Done(Verdict::Service);
    }
    let esp_candidate = cx.ip.dst.is_ipv4()
        && (cx.ip.proto == IpProtocol::UDP || cx.ip.proto == IpProtocol::ESP)
        && !t.tunnels.is_empty();
    match (esp_candidate, cx.decap) {
        (false, _) => Next::Host,
        (true, None) => Next::EspIn,
        // ESP inside ESP: never peel more than one layer. Other UDP from a
        // tunnel (a site's DNS query to us) is for the host.
        (true, Some(_)) => match pkt.data().get(cx.l3..).map(strait_esp::classify_outer) {
            Some(Ok(a)) if matches!(a.kind, strait_esp::ArrivalKind::Other) => Next::Host,
            _ => drop(DropReason::EspNested),
        },
    }
}

/// Whether the IPv4 UDP datagram at `cx.l3` is IKE (with `[ike]`) or a
/// query to `[dns] listen`: the engine's owner serves both. Answers to a
/// tunnel's clients go back through the host path instead, which routes
/// them into the tunnel (the services' own datagrams leave by ports).
fn is_service(t: &Tables, cx: &Ctx<'_>, pkt: &PacketBuf<'_>) -> bool {
    if !t.services && t.dns_listen.is_empty() {
        return false;
    }
    let Some(ip) = pkt.data().get(cx.l3..) else {
        return false;
    };
    match Ipv4Packet::new_checked(ip) {
        Ok(ip) if !ip.is_fragment() => {
            (t.services && crate::services::is_ike(ip.payload()))
                || crate::services::is_dns(&t.dns_listen, ip.dst_addr(), ip.payload())
        }
        _ => false,
    }
}

/// Answers echo requests to our addresses; punts the rest.
pub(super) fn host<'t, P>(
    p: &mut Pipeline<P>,
    t: &Tables,
    cx: &Ctx<'t>,
    pkt: &mut PacketBuf<'_>,
) -> Next<'t> {
    // What claims to come from behind a tunnel must not reach the host in
    // clear either (RFC 4301 §5.2).
    if super::esp_in::policy_violation(t, cx, cx.ip.src) {
        return drop(DropReason::EspPolicyViolation);
    }
    match cx.ip.dst {
        IpAddr::V4(_) if cx.ip.proto == IpProtocol::ICMP => echo_v4(p, cx, pkt),
        IpAddr::V6(_) if cx.ip.proto == IpProtocol::ICMPV6 => echo_v6(p, cx, pkt),
        _ => cx.punt(),
    }
}

fn echo_v4<'t, P>(p: &mut Pipeline<P>, cx: &Ctx<'t>, pkt: &mut PacketBuf<'_>) -> Next<'t> {
    let data = pkt.data_mut();
    let (eth, rest) = data.split_at_mut(cx.l3);
    let mut ip = Ipv4Packet::new_unchecked(rest);
    let hl = ip.header_len();
    {
        let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
            return drop(DropReason::EchoTruncated);
        };
        if icmp.msg_type() != Icmpv4Type::ECHO_REQUEST {
            return cx.punt();
        }
        if !icmp.verify_checksum() {
            return drop(DropReason::EchoBadChecksum);
        }
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    ip.set_src_addr(dst);
    ip.set_dst_addr(src);
    ip.set_ttl(64);
    ip.fill_checksum();
    let total = usize::from(ip.total_len());
    let rest = ip.into_inner();
    let mut icmp = Icmpv4Packet::new_unchecked(&mut rest[hl..total]);
    if icmp.make_echo_reply().is_err() {
        return cx.punt();
    }
    swap_macs(eth);
    p.counters[usize::from(cx.port.id)].icmp_sent += 1;
    cx.reply(pkt)
}

fn echo_v6<'t, P>(p: &mut Pipeline<P>, cx: &Ctx<'t>, pkt: &mut PacketBuf<'_>) -> Next<'t> {
    let n = {
        let ip = Ipv6Packet::new_unchecked(&pkt.data()[cx.l3..]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let Ok(icmp) = Icmpv6Packet::new_checked(ip.payload()) else {
            return drop(DropReason::EchoTruncated);
        };
        if icmp.msg_type() != Icmpv6Type::ECHO_REQUEST {
            return cx.punt();
        }
        let (ident, seq_no, data) = match Icmpv6Repr::parse(&icmp, src, dst) {
            Ok(Icmpv6Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }) => (ident, seq_no, data),
            Err(WireError::BadChecksum { .. }) => return drop(DropReason::EchoBadChecksum),
            _ => return drop(DropReason::EchoMalformed),
        };
        let reply = Icmpv6Repr::EchoReply {
            ident,
            seq_no,
            data,
        };
        match emit_ipv6_icmp(&mut p.scratch[..], dst, src, 64, &reply) {
            Some(n) => n,
            None => return drop(DropReason::EchoMalformed),
        }
    };
    p.counters[usize::from(cx.port.id)].icmp_sent += 1;
    match reply_from_scratch(p, cx.port, pkt, n, EtherType::IPV6) {
        Ok(()) => cx.reply(pkt),
        Err(reason) => drop(reason),
    }
}

fn drop<'t>(reason: DropReason) -> Next<'t> {
    Next::Done(Verdict::Drop(reason))
}
