//! Errors of the message layer, the crypto and the API.

/// Why bytes are not a well-formed IKEv2 message or payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than a fixed part needs.
    #[error("{what}: {have} bytes, need at least {need}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes there are.
        have: usize,
    },
    /// A length field that disagrees with the bytes around it.
    #[error("{what}: length field says {stated}, {have} bytes available")]
    Length {
        /// The structure being read.
        what: &'static str,
        /// The length field.
        stated: usize,
        /// Bytes available.
        have: usize,
    },
    /// Not IKE major version 2 (RFC 7296 §3.1).
    #[error("IKE major version {0} is not 2")]
    MajorVersion(u8),
    /// An unrecognised payload with the critical bit (§2.5); the response
    /// carries UNSUPPORTED_CRITICAL_PAYLOAD with this type.
    #[error("unsupported critical payload type {0}")]
    UnsupportedCritical(u8),
    /// Any other structural fault.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// Why a call into the API was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// No IKE SA with this id.
    #[error("no IKE SA {0:#018x}")]
    UnknownSa(u64),
    /// The IKE SA is not (or no longer) established.
    #[error("IKE SA {0:#018x} is not established")]
    NotEstablished(u64),
    /// A cryptographic primitive failed (bad peer key, no randomness).
    #[error("crypto: {0}")]
    Crypto(&'static str),
}
