//! Errors of the generator library.

use std::io;

/// Why the generator could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// A traffic specification is inconsistent or out of range.
    #[error("invalid traffic specification: {0}")]
    Spec(String),
    /// A value given as text could not be parsed.
    #[error("cannot parse {what} {input:?}: {reason}")]
    Parse {
        /// What was being parsed (`rate`, `size mix`, ...).
        what: &'static str,
        /// The text.
        input: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A frame could not be built.
    #[error("cannot build {what} frame: {source}")]
    Build {
        /// Which frame.
        what: &'static str,
        /// The wire-layer error.
        #[source]
        source: strait_wire::Error,
    },
    /// A system call on a socket failed.
    #[error("{op} on {iface}: {source}")]
    Io {
        /// The operation (`socket(AF_PACKET)`, `bind`, `sendmmsg`, ...).
        op: &'static str,
        /// The interface or address involved.
        iface: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The destination MAC could not be resolved from the neighbour table.
    #[error("cannot resolve the MAC of {addr} on {iface}: {reason}")]
    Neighbour {
        /// The IP address looked up.
        addr: String,
        /// The interface.
        iface: String,
        /// Why not.
        reason: String,
    },
    /// A sender or receiver was asked for something it does not support.
    #[error("{what} is not supported by the {port} port")]
    Unsupported {
        /// The feature.
        what: String,
        /// The port kind.
        port: &'static str,
    },
}

impl GenError {
    pub(crate) fn io(op: &'static str, iface: &str, source: io::Error) -> Self {
        Self::Io {
            op,
            iface: iface.to_owned(),
            source,
        }
    }

    pub(crate) fn parse(what: &'static str, input: &str, reason: impl Into<String>) -> Self {
        Self::Parse {
            what,
            input: input.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Result alias of the generator.
pub type Result<T, E = GenError> = std::result::Result<T, E>;
