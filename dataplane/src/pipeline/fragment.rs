//! IPv4 fragmentation (RFC 791 §3.2, RFC 1812 §4.2.2.7): how a packet with
//! DF clear that is bigger than its egress MTU is split. The worker does
//! the splitting into fresh frames; this file decides the pieces.

use strait_wire::Ipv4Packet;

/// Where the fragments of an IPv4 packet go (RFC 791 §3.2): payload bytes
/// per fragment (a multiple of 8, all but the last) and their number.
pub fn fragment_plan(header_len: usize, total_len: usize, mtu: usize) -> Option<(usize, usize)> {
    let per = mtu.checked_sub(header_len)? & !7;
    if per == 0 || total_len < header_len {
        return None;
    }
    let payload = total_len - header_len;
    Some((per, payload.div_ceil(per)))
}

/// Writes fragment `index` of the IPv4 packet `original` into `out`
/// (header copied, then its slice of the payload) and returns its length.
/// Offsets add to the original's own, and MF stays set on the last
/// fragment of an already fragmented packet.
pub fn fragment_ipv4(original: &[u8], mtu: usize, index: usize, out: &mut [u8]) -> Option<usize> {
    let ip = Ipv4Packet::new_checked(original).ok()?;
    let hl = ip.header_len();
    let total = usize::from(ip.total_len());
    let (per, count) = fragment_plan(hl, total, mtu)?;
    if index >= count {
        return None;
    }
    let start = hl + index * per;
    let end = (start + per).min(total);
    let len = hl + (end - start);
    let out = out.get_mut(..len)?;
    out[..hl].copy_from_slice(&original[..hl]);
    out[hl..].copy_from_slice(&original[start..end]);
    let offset = u16::try_from(usize::from(ip.frag_offset()) + index * per).ok()?;
    let more = index + 1 < count || ip.more_frags();
    let mut frag = Ipv4Packet::new_unchecked(out);
    frag.set_total_len(len as u16);
    frag.set_frag(false, more, offset);
    frag.fill_checksum();
    Some(len)
}
