//! TCP header (RFC 9293): ports, flags, options, checksums, and the MSS
//! clamping rewrite used on tunnel paths.

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::error::{need, room, Error, Result};
use crate::IpProtocol;

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    pub const OFFSET_FLAGS: Range<usize> = 12..14;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
    pub const OPTIONS: usize = 20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;

/// Header bytes up to the end of the checksum field: a header cut shorter
/// (the 8 bytes an ICMP error must quote, RFC 792) has no checksum to patch.
pub const CHECKSUM_END: usize = field::CHECKSUM.end;

/// Option kinds (RFC 9293 §3.2).
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_MSS_LEN: usize = 4;

/// TCP control bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: Self = Self(0x001);
    /// Synchronise sequence numbers.
    pub const SYN: Self = Self(0x002);
    /// Reset the connection.
    pub const RST: Self = Self(0x004);
    /// Push function.
    pub const PSH: Self = Self(0x008);
    /// Acknowledgment field significant.
    pub const ACK: Self = Self(0x010);
    /// Urgent pointer significant.
    pub const URG: Self = Self(0x020);
    /// ECN-Echo (RFC 3168).
    pub const ECE: Self = Self(0x040);
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: Self = Self(0x080);

    /// True when every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for TcpFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A read/write view of a TCP segment.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking the data offset against the buffer.
    /// The segment runs to the end of the buffer: pass exactly the IP payload.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let buf = buffer.as_ref();
        need("tcp header", buf, HEADER_LEN)?;
        let header_len = usize::from(buf[field::OFFSET_FLAGS.start] >> 4) * 4;
        if header_len < HEADER_LEN {
            return Err(Error::BadHeaderLength {
                what: "tcp",
                length: header_len,
            });
        }
        need("tcp options", buf, header_len)?;
        Ok(Self { buffer })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn word(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    fn dword(&self, at: usize) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        self.word(field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        self.word(field::DST_PORT.start)
    }

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        self.dword(field::SEQ_NUM.start)
    }

    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        self.dword(field::ACK_NUM.start)
    }

    /// Header length in bytes (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFFSET_FLAGS.start] >> 4) * 4
    }

    /// Control bits.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.word(field::OFFSET_FLAGS.start) & 0x0fff)
    }

    /// Receive window.
    pub fn window(&self) -> u16 {
        self.word(field::WINDOW.start)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        self.word(field::CHECKSUM.start)
    }

    /// Urgent pointer.
    pub fn urgent(&self) -> u16 {
        self.word(field::URGENT.start)
    }

    /// Option bytes.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// Segment data.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// The Maximum Segment Size option, if present and well formed.
    pub fn mss(&self) -> Option<u16> {
        let at = find_mss(self.options())?;
        let o = self.options();
        Some(u16::from_be_bytes([o[at + 2], o[at + 3]]))
    }

    /// Verifies the checksum over the IPv4 pseudo-header.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let buf = self.buffer.as_ref();
        let Ok(len) = u16::try_from(buf.len()) else {
            return false;
        };
        let ph = checksum::pseudo_header_v4(src, dst, IpProtocol::TCP, len);
        checksum::add(ph, checksum::sum(buf)) == 0xffff
    }

    /// Verifies the checksum over the IPv6 pseudo-header.
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let buf = self.buffer.as_ref();
        let Ok(len) = u32::try_from(buf.len()) else {
            return false;
        };
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::TCP, len);
        checksum::add(ph, checksum::sum(buf)) == 0xffff
    }
}

/// Offset of a well-formed MSS option within `options`. The walk is bounded
/// by the option area (at most 40 bytes) and stops at End of Option List or
/// at the first malformed length.
fn find_mss(options: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at < options.len() {
        match options[at] {
            OPT_END => return None,
            OPT_NOP => at += 1,
            kind => {
                let len = usize::from(*options.get(at + 1)?);
                if len < 2 || at + len > options.len() {
                    return None;
                }
                if kind == OPT_MSS && len == OPT_MSS_LEN {
                    return Some(at);
                }
                at += len;
            }
        }
    }
    None
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    fn set_word(&mut self, at: usize, value: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }

    fn set_dword(&mut self, at: usize, value: u32) {
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the source port (checksum not updated).
    pub fn set_src_port(&mut self, port: u16) {
        self.set_word(field::SRC_PORT.start, port);
    }

    /// Sets the destination port (checksum not updated).
    pub fn set_dst_port(&mut self, port: u16) {
        self.set_word(field::DST_PORT.start, port);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, value: u32) {
        self.set_dword(field::SEQ_NUM.start, value);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, value: u32) {
        self.set_dword(field::ACK_NUM.start, value);
    }

    /// Sets data offset (header length in bytes, multiple of 4) and flags.
    pub fn set_header_len_and_flags(&mut self, header_len: usize, flags: TcpFlags) {
        let w = (((header_len / 4) as u16 & 0xf) << 12) | (flags.0 & 0x0fff);
        self.set_word(field::OFFSET_FLAGS.start, w);
    }

    /// Sets the window.
    pub fn set_window(&mut self, value: u16) {
        self.set_word(field::WINDOW.start, value);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        self.set_word(field::CHECKSUM.start, value);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent(&mut self, value: u16) {
        self.set_word(field::URGENT.start, value);
    }

    /// Mutable option bytes.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..end]
    }

    /// Mutable segment data.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }

    /// Computes and stores the checksum over the IPv4 pseudo-header.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) -> Result<()> {
        self.set_checksum(0);
        let buf = self.buffer.as_ref();
        let len = u16::try_from(buf.len()).map_err(|_| Error::BadTotalLength {
            what: "tcp",
            length: buf.len(),
            header_len: HEADER_LEN,
            available: usize::from(u16::MAX),
        })?;
        let ph = checksum::pseudo_header_v4(src, dst, IpProtocol::TCP, len);
        let c = !checksum::add(ph, checksum::sum(buf));
        self.set_checksum(c);
        Ok(())
    }

    /// Computes and stores the checksum over the IPv6 pseudo-header.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) -> Result<()> {
        self.set_checksum(0);
        let buf = self.buffer.as_ref();
        let len = u32::try_from(buf.len()).map_err(|_| Error::BadTotalLength {
            what: "tcp",
            length: buf.len(),
            header_len: HEADER_LEN,
            available: u32::MAX as usize,
        })?;
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::TCP, len);
        let c = !checksum::add(ph, checksum::sum(buf));
        self.set_checksum(c);
        Ok(())
    }

    /// Rewrites the source port with an incremental checksum update.
    pub fn rewrite_src_port(&mut self, port: u16) -> u16 {
        let old = self.src_port();
        let c = checksum::update16(self.checksum(), old, port);
        self.set_src_port(port);
        self.set_checksum(c);
        old
    }

    /// Rewrites the destination port with an incremental checksum update.
    pub fn rewrite_dst_port(&mut self, port: u16) -> u16 {
        let old = self.dst_port();
        let c = checksum::update16(self.checksum(), old, port);
        self.set_dst_port(port);
        self.set_checksum(c);
        old
    }

    /// Accounts for an IPv4 pseudo-header address change in the checksum.
    pub fn update_checksum_for_addr_v4(&mut self, old: Ipv4Addr, new: Ipv4Addr) {
        let c = checksum::update32(self.checksum(), old.to_bits(), new.to_bits());
        self.set_checksum(c);
    }

    /// Accounts for an IPv6 pseudo-header address change in the checksum.
    pub fn update_checksum_for_addr_v6(&mut self, old: Ipv6Addr, new: Ipv6Addr) {
        let c = checksum::update_bytes(self.checksum(), &old.octets(), &new.octets());
        self.set_checksum(c);
    }

    /// MSS clamping: if the segment carries an MSS option larger than
    /// `max_mss`, lowers it to `max_mss` and updates the checksum
    /// incrementally. Returns the original MSS when it was rewritten.
    ///
    /// Tunnels lower the path MTU; clamping the MSS in SYNs keeps TCP from
    /// relying on ICMP "fragmentation needed" that middleboxes often drop.
    pub fn clamp_mss(&mut self, max_mss: u16) -> Option<u16> {
        let at = find_mss(self.options())?;
        let value_at = field::OPTIONS + at + 2;
        let old = self.word(value_at);
        if old <= max_mss {
            return None;
        }
        // The option may sit at an odd offset; the one's-complement sum is
        // byte-order independent, so an odd-aligned word is updated swapped.
        let c = if value_at % 2 == 0 {
            checksum::update16(self.checksum(), old, max_mss)
        } else {
            checksum::update16(self.checksum(), old.swap_bytes(), max_mss.swap_bytes())
        };
        self.set_word(value_at, max_mss);
        self.set_checksum(c);
        Some(old)
    }
}

/// A TCP header in meaning form (only the MSS option is represented).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// Control bits.
    pub flags: TcpFlags,
    /// Receive window.
    pub window: u16,
    /// MSS option to emit, if any.
    pub mss: Option<u16>,
}

impl TcpRepr {
    /// Parses a checked segment.
    pub fn parse<T: AsRef<[u8]>>(packet: &TcpPacket<T>) -> Self {
        Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window: packet.window(),
            mss: packet.mss(),
        }
    }

    /// Header length this representation emits.
    pub const fn header_len(&self) -> usize {
        match self.mss {
            Some(_) => HEADER_LEN + OPT_MSS_LEN,
            None => HEADER_LEN,
        }
    }

    /// Writes the header at the start of `buf` with a zero checksum (fill it
    /// once the payload is in place). Returns the header length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.header_len();
        room(buf, len)?;
        let mut packet = TcpPacket::new_unchecked(&mut buf[..len]);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.set_header_len_and_flags(len, self.flags);
        packet.set_window(self.window);
        packet.set_checksum(0);
        packet.set_urgent(0);
        if let Some(mss) = self.mss {
            let o = packet.options_mut();
            o[0] = OPT_MSS;
            o[1] = OPT_MSS_LEN as u8;
            o[2..4].copy_from_slice(&mss.to_be_bytes());
        }
        Ok(len)
    }
}

/// Writes into `out` the IPv4 reset that answers `offending` (an IPv4
/// packet carrying a TCP segment) as a TCP in the CLOSED state does,
/// RFC 9293 §3.10.7.1: if the segment has ACK set the reset is
/// `<SEQ=SEG.ACK><CTL=RST>`, otherwise `<SEQ=0><ACK=SEG.SEQ+SEG.LEN>
/// <CTL=RST,ACK>` (SYN and FIN each count one in SEG.LEN). It comes from
/// the address and port the segment was sent to. A reset is never
/// answered, nor a fragment without the whole header. Returns the length
/// written (40 bytes).
pub fn emit_tcp_reset(offending: &[u8], out: &mut [u8]) -> Result<usize> {
    let ip = crate::Ipv4Packet::new_checked(offending)?;
    if ip.protocol() != IpProtocol::TCP || ip.is_non_initial_fragment() {
        return Err(Error::Unsupported {
            what: "tcp reset",
            reason: "not the first part of a TCP segment",
        });
    }
    let segment = TcpPacket::new_checked(ip.payload())?;
    let flags = segment.flags();
    if flags.contains(TcpFlags::RST) {
        return Err(Error::Unsupported {
            what: "tcp reset",
            reason: "a reset is never answered",
        });
    }
    let (seq, ack, reply) = if flags.contains(TcpFlags::ACK) {
        (segment.ack_number(), 0, TcpFlags::RST)
    } else {
        let len = segment.payload().len() as u32
            + u32::from(flags.contains(TcpFlags::SYN))
            + u32::from(flags.contains(TcpFlags::FIN));
        (
            0,
            segment.seq_number().wrapping_add(len),
            TcpFlags::RST | TcpFlags::ACK,
        )
    };
    let (src, dst) = (ip.dst_addr(), ip.src_addr());
    let total = crate::ipv4::HEADER_LEN + HEADER_LEN;
    room(out, total)?;
    crate::Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::TCP,
        payload_len: HEADER_LEN,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(out)?;
    let tcp = &mut out[crate::ipv4::HEADER_LEN..total];
    TcpRepr {
        src_port: segment.dst_port(),
        dst_port: segment.src_port(),
        seq_number: seq,
        ack_number: ack,
        flags: reply,
        window: 0,
        mss: None,
    }
    .emit(tcp)?;
    TcpPacket::new_unchecked(tcp).fill_checksum_v4(src, dst)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
    const DST: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

    fn syn(mss: u16) -> Vec<u8> {
        let repr = TcpRepr {
            src_port: 40000,
            dst_port: 443,
            seq_number: 0x0102_0304,
            ack_number: 0,
            flags: TcpFlags::SYN,
            window: 64240,
            mss: Some(mss),
        };
        let mut buf = vec![0u8; repr.header_len()];
        repr.emit(&mut buf).unwrap();
        TcpPacket::new_checked(&mut buf[..])
            .unwrap()
            .fill_checksum_v4(SRC, DST)
            .unwrap();
        buf
    }

    #[test]
    fn emit_parse_round_trip() {
        let buf = syn(1460);
        let packet = TcpPacket::new_checked(&buf[..]).unwrap();
        assert!(packet.verify_checksum_v4(SRC, DST));
        let repr = TcpRepr::parse(&packet);
        assert_eq!(repr.mss, Some(1460));
        assert!(repr.flags.contains(TcpFlags::SYN));
        assert!(!repr.flags.contains(TcpFlags::ACK));
        assert_eq!(packet.header_len(), 24);
    }

    #[test]
    fn bad_data_offset() {
        let mut buf = syn(1460);
        buf[12] = 0x40;
        assert!(matches!(
            TcpPacket::new_checked(&buf[..]),
            Err(Error::BadHeaderLength { length: 16, .. })
        ));
        buf[12] = 0x70;
        assert!(matches!(
            TcpPacket::new_checked(&buf[..]),
            Err(Error::Truncated { needed: 28, .. })
        ));
    }

    #[test]
    fn clamp_lowers_only_larger_mss() {
        let mut buf = syn(1460);
        let mut packet = TcpPacket::new_checked(&mut buf[..]).unwrap();
        assert_eq!(packet.clamp_mss(1500), None);
        assert_eq!(packet.clamp_mss(1360), Some(1460));
        assert_eq!(packet.mss(), Some(1360));
        assert!(packet.verify_checksum_v4(SRC, DST));
    }

    #[test]
    fn clamp_at_odd_offset_behind_nop() {
        // Options: NOP, MSS(1460), NOP, NOP, NOP -> MSS value at header offset 23.
        let mut buf = [0u8; 28];
        let mut packet = TcpPacket::new_unchecked(&mut buf[..]);
        packet.set_header_len_and_flags(28, TcpFlags::SYN);
        packet
            .options_mut()
            .copy_from_slice(&[1, 2, 4, 0x05, 0xb4, 1, 1, 1]);
        packet.fill_checksum_v4(SRC, DST).unwrap();
        assert_eq!(packet.mss(), Some(1460));
        assert_eq!(packet.clamp_mss(1200), Some(1460));
        assert_eq!(packet.mss(), Some(1200));
        assert!(packet.verify_checksum_v4(SRC, DST));
    }

    #[test]
    fn malformed_options_are_ignored() {
        for opts in [[2u8, 0, 0, 0], [3, 9, 0, 0], [8, 1, 2, 4], [0, 2, 4, 5]] {
            let mut buf = [0u8; 24];
            let mut packet = TcpPacket::new_unchecked(&mut buf[..]);
            packet.set_header_len_and_flags(24, TcpFlags::SYN);
            packet.options_mut().copy_from_slice(&opts);
            assert_eq!(packet.mss(), None);
            assert_eq!(packet.clamp_mss(100), None);
        }
    }

    #[test]
    fn port_and_address_rewrite_matches_full_recompute() {
        let mut buf = syn(1460);
        let new_src = Ipv4Addr::new(198, 51, 100, 20);
        let mut packet = TcpPacket::new_checked(&mut buf[..]).unwrap();
        packet.rewrite_src_port(1024);
        packet.update_checksum_for_addr_v4(SRC, new_src);
        let incremental = packet.checksum();
        packet.fill_checksum_v4(new_src, DST).unwrap();
        assert_eq!(incremental, packet.checksum());
    }

    #[test]
    fn a_reset_answers_a_syn_and_an_ack_as_a_closed_port_does() {
        let ip = |tcp: &[u8]| {
            let mut p = vec![0u8; 20 + tcp.len()];
            crate::Ipv4Repr {
                src_addr: SRC,
                dst_addr: DST,
                protocol: IpProtocol::TCP,
                payload_len: tcp.len(),
                ttl: 63,
                dscp: 0,
                ecn: 0,
                ident: 7,
                dont_frag: true,
                more_frags: false,
                frag_offset: 0,
            }
            .emit(&mut p)
            .unwrap();
            p[20..].copy_from_slice(tcp);
            p
        };
        let mut out = [0u8; 64];
        let n = emit_tcp_reset(&ip(&syn(1460)), &mut out).unwrap();
        assert_eq!(n, 40);
        let r = crate::Ipv4Packet::new_checked(&out[..n]).unwrap();
        assert!(r.verify_checksum());
        assert_eq!((r.src_addr(), r.dst_addr()), (DST, SRC));
        let t = TcpPacket::new_checked(r.payload()).unwrap();
        assert!(t.verify_checksum_v4(DST, SRC));
        assert_eq!((t.src_port(), t.dst_port()), (443, 40000));
        assert_eq!(t.flags(), TcpFlags::RST | TcpFlags::ACK);
        assert_eq!((t.seq_number(), t.ack_number()), (0, 0x0102_0305));

        // With ACK set: the reset's sequence number is the segment's ACK.
        let mut seg = syn(1460);
        TcpPacket::new_unchecked(&mut seg[..]).set_header_len_and_flags(24, TcpFlags::ACK);
        TcpPacket::new_unchecked(&mut seg[..]).set_ack_number(99);
        let n = emit_tcp_reset(&ip(&seg), &mut out).unwrap();
        let r = crate::Ipv4Packet::new_checked(&out[..n]).unwrap();
        let t = TcpPacket::new_checked(r.payload()).unwrap();
        assert_eq!(t.flags(), TcpFlags::RST);
        assert_eq!(t.seq_number(), 99);

        // Never a reset for a reset.
        TcpPacket::new_unchecked(&mut seg[..]).set_header_len_and_flags(24, TcpFlags::RST);
        assert!(emit_tcp_reset(&ip(&seg), &mut out).is_err());
    }
}
