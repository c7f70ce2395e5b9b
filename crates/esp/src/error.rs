//! Why a packet was dropped, and why an SA could not be built.
//!
//! Every per-packet failure is a [`DropReason`] with a stable snake_case
//! [`name`](DropReason::name) so operators can read counters ("show errors")
//! and scripts can match on them across releases.

use thiserror::Error;

/// Why the ESP layer refused a packet. Each variant is a named drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[non_exhaustive]
pub enum DropReason {
    /// The buffer is shorter than the headers or trailer it must hold.
    #[error("packet truncated: shorter than the ESP header, IV, trailer and ICV")]
    Truncated,
    /// The caller's buffer lacks the head or tail room the operation needs.
    #[error("buffer lacks head or tail room for ESP encapsulation")]
    NoRoom,
    /// No inbound SA has this SPI, or the packet was handed to the wrong SA.
    #[error("no security association for this SPI")]
    BadSpi,
    /// ICV verification failed (RFC 4303 §3.4.4).
    #[error("integrity check value mismatch")]
    AuthFailed,
    /// The sequence number is inside the replay window and was already seen
    /// (RFC 4303 §3.4.3).
    #[error("duplicate sequence number inside the replay window")]
    Replay,
    /// The sequence number is left of the replay window (RFC 4303 §3.4.3).
    #[error("sequence number older than the replay window")]
    ReplayOld,
    /// Pad length exceeds the payload or pad bytes are not 1, 2, 3, ...
    /// (RFC 4303 §2.4).
    #[error("malformed ESP padding")]
    BadPadding,
    /// Next header is not IPv4/IPv6, or the inner IP header is inconsistent.
    #[error("inner packet is not a well-formed IPv4/IPv6 packet")]
    BadInner,
    /// Next header 59: a traffic-flow-confidentiality dummy packet, which the
    /// receiver discards (RFC 4303 §2.6).
    #[error("dummy packet (next header 59)")]
    DummyPacket,
    /// Inner source or destination is outside the SA's traffic selectors
    /// (RFC 4301 §5.2, step 4 on inbound; §5.1 on outbound).
    #[error("inner addresses outside the SA traffic selectors")]
    SelectorMismatch,
    /// The sequence number space is used up; the SA must be replaced
    /// (RFC 4303 §3.3.3).
    #[error("sequence number space exhausted")]
    SeqExhausted,
    /// The SA passed its hard lifetime (RFC 4301 §4.4.2.1).
    #[error("security association passed its hard lifetime")]
    SaExpired,
    /// Every sequence number reserved so far is used and the owner of the
    /// [`SeqSpace`](crate::SeqSpace) has not extended the reservation yet
    /// (it records each reservation durably before sealing under it).
    #[error("no reserved sequence number left: the reservation is being extended")]
    SeqUnreserved,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 13] = [
        DropReason::Truncated,
        DropReason::NoRoom,
        DropReason::BadSpi,
        DropReason::AuthFailed,
        DropReason::Replay,
        DropReason::ReplayOld,
        DropReason::BadPadding,
        DropReason::BadInner,
        DropReason::DummyPacket,
        DropReason::SelectorMismatch,
        DropReason::SeqExhausted,
        DropReason::SaExpired,
        DropReason::SeqUnreserved,
    ];

    /// Number of distinct reasons (size of a counter array).
    pub const COUNT: usize = Self::ALL.len();

    /// Stable snake_case name for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::NoRoom => "no_room",
            DropReason::BadSpi => "bad_spi",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Replay => "replay",
            DropReason::ReplayOld => "replay_old",
            DropReason::BadPadding => "bad_padding",
            DropReason::BadInner => "bad_inner",
            DropReason::DummyPacket => "dummy_packet",
            DropReason::SelectorMismatch => "selector_mismatch",
            DropReason::SeqExhausted => "seq_exhausted",
            DropReason::SaExpired => "sa_expired",
            DropReason::SeqUnreserved => "seq_unreserved",
        }
    }

    /// Index into a `[u64; DropReason::COUNT]` counter array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Why a security association could not be configured.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Key material length does not match the cipher (key plus 4-byte salt).
    #[error("{cipher}: key material is {got} bytes, expected {expected} (key plus 4-byte salt)")]
    KeyLength {
        /// The cipher suite's name.
        cipher: &'static str,
        /// Bytes supplied.
        got: usize,
        /// Bytes required.
        expected: usize,
    },
    /// SPI values 0..=255 are reserved (RFC 4303 §2.1).
    #[error("SPI {0:#010x} is reserved (RFC 4303 §2.1: 0-255 must not be used)")]
    ReservedSpi(u32),
    /// The same SPI appears twice in one inbound SAD.
    #[error("SPI {0:#010x} appears more than once in the inbound SAD")]
    DuplicateSpi(u32),
    /// Replay window must be a multiple of 64 between 64 and 4096.
    #[error("replay window {0} is not a multiple of 64 in 64..=4096")]
    ReplayWindow(u32),
    /// A sequence block must hold at least one sequence number.
    #[error("sequence block size must be at least 1")]
    SeqBlock,
    /// A soft lifetime must be below its hard lifetime.
    #[error("soft {kind} lifetime {soft} is not below hard lifetime {hard}")]
    Lifetime {
        /// "byte" or "time".
        kind: &'static str,
        /// Soft limit.
        soft: u64,
        /// Hard limit.
        hard: u64,
    },
    /// A traffic selector mixes IPv4 and IPv6 prefixes.
    #[error("traffic selector {src} -> {dst} mixes address families")]
    MixedFamilies {
        /// Source prefix as text.
        src: String,
        /// Destination prefix as text.
        dst: String,
    },
    /// An SA must allow at least one traffic selector.
    #[error("security association has no traffic selectors")]
    NoSelectors,
    /// A resumed sequence number is outside the SA's sequence space.
    #[error("resume sequence number {0} is outside the sequence space")]
    ResumeSeq(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indices_dense() {
        let mut names: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{} out of order", r.name());
        }
    }
}
