//! A small TCP state tracker. It picks the idle timeout (RFC 5382 REQ-5:
//! established vs. transitory) and keeps, per direction, the highest
//! sequence number sent, the highest acknowledgment and the advertised
//! window ([`TcpWindow`]), so that a reset is believed only when its
//! sequence number falls in the receiver's window (RFC 5961 section 3,
//! loosely: a middlebox cannot send the challenge ACK, so an in-window RST
//! is passed on for the endpoint to judge, and one outside it is dropped).
//! Nothing else is refused on sequence numbers: both directions cross the
//! NAT, but segments lost behind it make stricter checks misfire.

use crate::flow::Direction;

/// The TCP control bits the tracker looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
}

impl TcpFlags {
    /// Decodes the flags byte of a TCP header (byte 13).
    pub fn from_byte(byte: u8) -> Self {
        Self {
            fin: byte & 0x01 != 0,
            syn: byte & 0x02 != 0,
            rst: byte & 0x04 != 0,
            ack: byte & 0x10 != 0,
        }
    }

    /// A connection-opening segment: SYN without ACK. Only these may create
    /// a session; RFC 5382 section 7 lets the NAT drop other segments of
    /// unknown connections.
    pub fn is_initial_syn(self) -> bool {
        self.syn && !self.ack && !self.rst
    }
}

/// The fields of a TCP segment the window tracker reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Segment {
    pub(crate) flags: TcpFlags,
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) window: u16,
    /// Payload bytes (SYN and FIN not counted).
    pub(crate) len: u32,
    /// The window scale option of a SYN (RFC 7323 section 2).
    pub(crate) wscale: Option<u8>,
}

impl Segment {
    /// Reads a TCP segment whose header is in `l4` (already checked to be
    /// at least 20 bytes) and whose data runs to the end of `l4`.
    pub(crate) fn parse(l4: &[u8]) -> Self {
        let word = |at: usize| u32::from_be_bytes([l4[at], l4[at + 1], l4[at + 2], l4[at + 3]]);
        let offset = (usize::from(l4[12] >> 4) * 4).clamp(20, l4.len().max(20));
        let flags = TcpFlags::from_byte(l4[13]);
        let mut wscale = None;
        if flags.syn {
            // RFC 793 options: kind 0 ends, kind 1 pads, others carry a
            // length; window scale is kind 3, length 3.
            let options = l4.get(20..offset).unwrap_or(&[]);
            let mut i = 0;
            while i < options.len() {
                match options[i] {
                    0 => break,
                    1 => i += 1,
                    kind => {
                        let Some(&len) = options.get(i + 1) else {
                            break;
                        };
                        if len < 2 {
                            break;
                        }
                        if kind == 3 && len == 3 {
                            wscale = options.get(i + 2).copied();
                        }
                        i += usize::from(len);
                    }
                }
            }
        }
        Self {
            flags,
            seq: word(4),
            ack: word(8),
            window: u16::from_be_bytes([l4[14], l4[15]]),
            len: u32::try_from(l4.len().saturating_sub(offset)).unwrap_or(u32::MAX),
            wscale,
        }
    }
}

/// What one direction of a connection has shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Side {
    /// One past the highest sequence number sent (SYN and FIN count).
    end: u32,
    /// Highest acknowledgment sent.
    ack: u32,
    /// Last advertised window, unscaled.
    window: u16,
    /// Window scale offered in this side's SYN (RFC 7323).
    scale: Option<u8>,
    seen: bool,
    acked: bool,
}

/// `a` is later than `b` in sequence space (RFC 793 section 3.3).
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// Per-direction sequence state of one TCP session (index 0: segments
/// travelling outbound, 1: inbound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TcpWindow {
    sides: [Side; 2],
}

fn side(direction: Direction) -> usize {
    match direction {
        Direction::Outbound => 0,
        Direction::Inbound => 1,
    }
}

impl TcpWindow {
    /// Records a segment travelling `direction`.
    pub(crate) fn update(&mut self, direction: Direction, seg: &Segment) {
        let s = &mut self.sides[side(direction)];
        if seg.flags.syn {
            // RFC 7323 section 2.3: shifts above 14 are taken as 14.
            s.scale = seg.wscale.map(|w| w.min(14));
        }
        let end = seg
            .seq
            .wrapping_add(seg.len)
            .wrapping_add(u32::from(seg.flags.syn) + u32::from(seg.flags.fin));
        if !s.seen || after(end, s.end) {
            s.end = end;
            s.seen = true;
        }
        if seg.flags.ack && (!s.acked || after(seg.ack, s.ack)) {
            s.ack = seg.ack;
            s.acked = true;
        }
        s.window = seg.window;
    }

    /// The receive window `side` last advertised, in bytes: scaled when
    /// both SYNs offered scaling (RFC 7323 section 2.2), at least 1.
    fn receive_window(&self, index: usize) -> u32 {
        let s = &self.sides[index];
        let shift = match (self.sides[0].scale, self.sides[1].scale) {
            (Some(_), Some(_)) => s.scale.unwrap_or(0),
            _ => 0,
        };
        (u32::from(s.window) << shift).max(1)
    }

    /// Whether an RST travelling `direction` may end the connection
    /// (RFC 5961 section 3.2, loosely): its sequence number is the next
    /// one expected, or falls in the window the receiver advertised past
    /// what it acknowledged. A reset answering a SYN (nothing seen from its
    /// sender yet) must acknowledge the SYN (RFC 793 section 3.9,
    /// SYN-SENT).
    pub(crate) fn rst_acceptable(&self, direction: Direction, seg: &Segment) -> bool {
        let me = self.sides[side(direction)];
        let other_index = side(direction.reverse());
        let other = self.sides[other_index];
        if !me.seen {
            return seg.flags.ack && other.seen && seg.ack == other.end;
        }
        if seg.seq == me.end {
            return true;
        }
        other.acked && seg.seq.wrapping_sub(other.ack) < self.receive_window(other_index)
    }
}

/// Connection state as seen by the translator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpState {
    /// The initiator's SYN was seen.
    SynSent,
    /// The answering SYN (or a simultaneous-open SYN) was seen.
    SynReceived,
    /// The handshake completed.
    Established,
    /// A FIN went outbound only.
    FinOutbound,
    /// A FIN came inbound only.
    FinInbound,
    /// FINs went both ways.
    TimeWait,
    /// An RST was seen.
    Reset,
}

impl TcpState {
    /// Whether the established (long) idle timeout applies. Every other
    /// state is "partially open or partially closed": RFC 5382 REQ-5
    /// transitory timeout.
    pub fn is_established(self) -> bool {
        self == Self::Established
    }

    /// Short lower-case name for inspection output.
    pub fn name(self) -> &'static str {
        match self {
            Self::SynSent => "syn-sent",
            Self::SynReceived => "syn-received",
            Self::Established => "established",
            Self::FinOutbound => "fin-outbound",
            Self::FinInbound => "fin-inbound",
            Self::TimeWait => "time-wait",
            Self::Reset => "reset",
        }
    }

    /// The state after a segment with `flags` travelling `direction`, for a
    /// connection opened by a packet travelling `initiator`.
    pub fn on_segment(self, direction: Direction, initiator: Direction, flags: TcpFlags) -> Self {
        if flags.rst {
            return Self::Reset;
        }
        let fin_state = |dir| match dir {
            Direction::Outbound => Self::FinOutbound,
            Direction::Inbound => Self::FinInbound,
        };
        match self {
            Self::SynSent if flags.fin => fin_state(direction),
            // SYN+ACK from the responder, or a bare SYN crossing ours
            // (simultaneous open, RFC 5382 REQ-3 / RFC 793 section 3.4).
            Self::SynSent if flags.syn && direction != initiator => Self::SynReceived,
            Self::SynReceived if flags.fin => fin_state(direction),
            Self::SynReceived if flags.ack && !flags.syn => Self::Established,
            Self::Established if flags.fin => fin_state(direction),
            Self::FinOutbound if flags.fin && direction == Direction::Inbound => Self::TimeWait,
            Self::FinInbound if flags.fin && direction == Direction::Outbound => Self::TimeWait,
            // A new connection reusing the tuple after close.
            Self::TimeWait | Self::Reset if flags.is_initial_syn() => Self::SynSent,
            state => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Inbound as In, Outbound as Out};

    const SYN: TcpFlags = TcpFlags {
        syn: true,
        ack: false,
        fin: false,
        rst: false,
    };
    const SYN_ACK: TcpFlags = TcpFlags {
        syn: true,
        ack: true,
        fin: false,
        rst: false,
    };
    const ACK: TcpFlags = TcpFlags {
        syn: false,
        ack: true,
        fin: false,
        rst: false,
    };
    const FIN_ACK: TcpFlags = TcpFlags {
        syn: false,
        ack: true,
        fin: true,
        rst: false,
    };
    const RST: TcpFlags = TcpFlags {
        syn: false,
        ack: false,
        fin: false,
        rst: true,
    };

    fn run(initiator: Direction, steps: &[(Direction, TcpFlags)]) -> Vec<TcpState> {
        let mut state = TcpState::SynSent;
        steps
            .iter()
            .map(|&(dir, flags)| {
                state = state.on_segment(dir, initiator, flags);
                state
            })
            .collect()
    }

    #[test]
    fn flags_decode_from_header_byte() {
        assert_eq!(TcpFlags::from_byte(0x12), SYN_ACK);
        assert_eq!(TcpFlags::from_byte(0x02), SYN);
        assert!(TcpFlags::from_byte(0x02).is_initial_syn());
        assert!(!TcpFlags::from_byte(0x12).is_initial_syn());
        assert_eq!(TcpFlags::from_byte(0x11), FIN_ACK);
        assert_eq!(TcpFlags::from_byte(0x04), RST);
    }

    #[test]
    fn handshake_data_and_close() {
        use TcpState::*;
        let states = run(
            Out,
            &[
                (Out, SYN),
                (In, SYN_ACK),
                (Out, ACK),
                (In, ACK),
                (Out, FIN_ACK),
                (In, ACK),
                (In, FIN_ACK),
                (Out, ACK),
                (Out, SYN),
            ],
        );
        assert_eq!(
            states,
            [
                SynSent,
                SynReceived,
                Established,
                Established,
                FinOutbound,
                FinOutbound,
                TimeWait,
                TimeWait,
                SynSent
            ]
        );
    }

    #[test]
    fn inbound_initiated_close_from_inside_first() {
        use TcpState::*;
        let states = run(
            In,
            &[
                (In, SYN),
                (Out, SYN_ACK),
                (In, ACK),
                (In, FIN_ACK),
                (Out, FIN_ACK),
            ],
        );
        assert_eq!(
            states,
            [SynSent, SynReceived, Established, FinInbound, TimeWait]
        );
    }

    #[test]
    fn retransmitted_syn_keeps_syn_sent_and_simultaneous_open_works() {
        use TcpState::*;
        assert_eq!(run(Out, &[(Out, SYN), (Out, SYN)]), [SynSent, SynSent]);
        assert_eq!(
            run(Out, &[(In, SYN), (Out, SYN_ACK), (In, ACK)]),
            [SynReceived, SynReceived, Established]
        );
    }

    #[test]
    fn reset_from_any_state_and_timeout_class() {
        for start in [
            TcpState::SynSent,
            TcpState::Established,
            TcpState::FinInbound,
            TcpState::TimeWait,
        ] {
            assert_eq!(start.on_segment(In, Out, RST), TcpState::Reset);
        }
        assert!(TcpState::Established.is_established());
        assert!(!TcpState::FinOutbound.is_established());
        assert!(!TcpState::Reset.is_established());
    }

    fn segment(flags: TcpFlags, seq: u32, ack: u32, window: u16, wscale: Option<u8>) -> Segment {
        Segment {
            flags,
            seq,
            ack,
            window,
            len: 0,
            wscale,
        }
    }

    #[test]
    fn parses_window_scale_and_scales_only_when_both_sides_offer_it() {
        // SYN with MSS (kind 2), NOP, window scale 7, NOP padding.
        let mut l4 = [0u8; 32];
        l4[4..8].copy_from_slice(&100u32.to_be_bytes());
        l4[12] = 8 << 4;
        l4[13] = 0x02;
        l4[14..16].copy_from_slice(&1000u16.to_be_bytes());
        l4[20..32].copy_from_slice(&[2, 4, 5, 0xb4, 1, 3, 3, 7, 1, 1, 1, 0]);
        let syn = Segment::parse(&l4);
        assert_eq!(
            (syn.seq, syn.window, syn.wscale, syn.len),
            (100, 1000, Some(7), 0)
        );
        let mut w = TcpWindow::default();
        w.update(Out, &syn);
        let syn_ack = segment(SYN_ACK, 5000, 101, 500, Some(2));
        w.update(In, &syn_ack);
        w.update(Out, &segment(ACK, 101, 5001, 1000, None));
        // The inside advertised 1000 << 7 bytes past 5001.
        assert!(w.rst_acceptable(In, &segment(RST, 5001 + 120_000, 0, 0, None)));
        assert!(!w.rst_acceptable(In, &segment(RST, 5001 + 130_000, 0, 0, None)));
        // Without scaling from the other side, the raw window counts.
        let mut w = TcpWindow::default();
        w.update(Out, &syn);
        w.update(In, &segment(SYN_ACK, 5000, 101, 500, None));
        w.update(Out, &segment(ACK, 101, 5001, 1000, None));
        assert!(w.rst_acceptable(In, &segment(RST, 5001 + 999, 0, 0, None)));
        assert!(!w.rst_acceptable(In, &segment(RST, 5001 + 1000, 0, 0, None)));
        // The exact next sequence number always resets.
        assert!(w.rst_acceptable(Out, &segment(RST, 101, 0, 0, None)));
    }
}
