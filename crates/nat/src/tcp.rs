//! A small TCP state tracker. It exists to pick the idle timeout
//! (RFC 5382 REQ-5: established vs. transitory), not to validate sequence
//! numbers: a NAT that is not on every path cannot judge windows.

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
    /// The flags the tracker uses, from a TCP header read by `strait-wire`.
    pub(crate) fn from_wire(flags: strait_wire::TcpFlags) -> Self {
        use strait_wire::TcpFlags as F;
        Self {
            fin: flags.contains(F::FIN),
            syn: flags.contains(F::SYN),
            rst: flags.contains(F::RST),
            ack: flags.contains(F::ACK),
        }
    }

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
}
