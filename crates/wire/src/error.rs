//! The single error type of the wire layer.
//!
//! Every parser validates a buffer once (`new_checked` / `Repr::parse`) and
//! reports the first problem as one of these variants; accessors called after
//! a successful check never panic.

/// Why a packet could not be parsed or emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer ends before the header (or a length field) says it does.
    #[error("truncated: {what} needs {needed} bytes, buffer has {available}")]
    Truncated {
        /// Which header or field was cut short.
        what: &'static str,
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The IP version nibble is not the one the parser expects.
    #[error("bad IP version {found}, expected {expected}")]
    BadVersion {
        /// Version the parser was asked to read.
        expected: u8,
        /// Version found in the packet.
        found: u8,
    },
    /// A header-length field is smaller than the fixed header or larger than the buffer.
    #[error("bad {what} header length {length}")]
    BadHeaderLength {
        /// Which header.
        what: &'static str,
        /// The length in bytes the field encodes.
        length: usize,
    },
    /// A total/payload-length field disagrees with the header or the frame.
    #[error("bad {what} length {length} (header {header_len}, buffer {available})")]
    BadTotalLength {
        /// Which header.
        what: &'static str,
        /// The length the field claims.
        length: usize,
        /// The header length it must at least cover.
        header_len: usize,
        /// Bytes present in the buffer.
        available: usize,
    },
    /// A checksum did not verify.
    #[error("bad {what} checksum")]
    BadChecksum {
        /// Which header or message.
        what: &'static str,
    },
    /// The bytes are present but do not form a valid header.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which header.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A well-formed header that this layer does not handle (e.g. three VLAN tags).
    #[error("unsupported {what}: {reason}")]
    Unsupported {
        /// Which header.
        what: &'static str,
        /// What is not supported.
        reason: &'static str,
    },
    /// The TTL / hop limit would reach zero: the packet must not be forwarded
    /// (RFC 1812 §5.3.1, RFC 8200 §3) and a time-exceeded error is due.
    #[error("TTL/hop limit expired")]
    TtlExpired,
    /// The output buffer is too small for what is being emitted.
    #[error("output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// An ICMP error must not be sent about this packet (RFC 1812 §4.3.2.7,
    /// RFC 4443 §2.4(e)).
    #[error("ICMP error suppressed: {reason}")]
    IcmpErrorSuppressed {
        /// Which rule forbids it.
        reason: &'static str,
    },
}

/// Result alias for the wire layer.
pub type Result<T> = core::result::Result<T, Error>;

/// Checks that `buf` has at least `needed` bytes.
#[inline]
pub(crate) fn need(what: &'static str, buf: &[u8], needed: usize) -> Result<()> {
    if buf.len() < needed {
        Err(Error::Truncated {
            what,
            needed,
            available: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// Checks that an output buffer has room for `needed` bytes.
#[inline]
pub(crate) fn room(buf: &[u8], needed: usize) -> Result<()> {
    if buf.len() < needed {
        Err(Error::BufferTooSmall {
            needed,
            available: buf.len(),
        })
    } else {
        Ok(())
    }
}
