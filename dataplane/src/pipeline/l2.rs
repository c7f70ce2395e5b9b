//! L2: is the frame for us, and which protocol does it carry?

use strait_wire::{EtherType, EthernetAddress, EthernetFrame};

use super::{wire_drop, Ctx, Next, Verdict};
use crate::counters::DropReason;
use crate::packet::PacketBuf;

/// Ethernet header length (untagged; frames are sent untagged).
pub const ETH_LEN: usize = strait_wire::ethernet::HEADER_LEN;

/// Checks the destination MAC and dispatches on the EtherType; sets the
/// offset of the L3 header (after any VLAN tags).
#[inline]
pub(super) fn classify<'t>(cx: &mut Ctx<'t>, pkt: &PacketBuf<'_>) -> Next<'t> {
    let (dst_mac, ethertype, l3) = {
        let frame = match EthernetFrame::new_checked(pkt.data()) {
            Ok(f) => f,
            Err(e) => return drop(wire_drop(e, DropReason::Malformed)),
        };
        let enc = match frame.encapsulation() {
            Ok(enc) => enc,
            Err(e) => return drop(wire_drop(e, DropReason::Malformed)),
        };
        (frame.dst_addr(), enc.ethertype, enc.header_len)
    };
    if dst_mac.is_unicast() && dst_mac.0 != cx.port.link.mac {
        return drop(DropReason::NotForUs);
    }
    cx.l3 = l3;
    match ethertype {
        EtherType::ARP => Next::Arp,
        EtherType::IPV4 => Next::Ipv4,
        EtherType::IPV6 => Next::Ipv6,
        _ => drop(DropReason::NotIp),
    }
}

fn drop<'t>(reason: DropReason) -> Next<'t> {
    Next::Done(Verdict::Drop(reason))
}

/// Writes an untagged Ethernet header at the start of `frame`.
#[inline]
pub fn write_eth(frame: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: EtherType) {
    let mut eth = EthernetFrame::new_unchecked(frame);
    eth.set_dst_addr(EthernetAddress(dst));
    eth.set_src_addr(EthernetAddress(src));
    eth.set_ethertype(ethertype);
}

/// Turns the Ethernet header at the start of `frame` back to its sender.
pub(super) fn swap_macs(frame: &mut [u8]) {
    let (dst, rest) = frame.split_at_mut(6);
    dst.swap_with_slice(&mut rest[..6]);
}

/// The source MAC of the frame in the window.
pub(super) fn sender_mac(pkt: &PacketBuf<'_>) -> [u8; 6] {
    EthernetFrame::new_unchecked(pkt.data()).src_addr().0
}
