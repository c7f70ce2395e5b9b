//! Load-balancer health checks without I/O: what to send, whether an
//! answer read so far passes, fails or needs more bytes, and the rise/fall
//! state of a backend. The daemon's checker (`daemon/src/lb.rs`) owns the
//! sockets and the deadlines; everything here works on byte slices so it
//! is unit tested and fuzzed (`strait_fuzz_targets::health`).
//!
//! Every verdict is bounded: an HTTP answer is judged within
//! [`http::MAX_HEAD`] bytes of status line and headers and
//! [`http::MAX_ANSWER`] bytes in all, so a backend sending huge headers or
//! an endless body is failed as soon as the bound is reached, whatever
//! the deadline.
#![forbid(unsafe_code)]

pub mod dns;
pub mod http;
mod state;

pub use state::{Health, Transition};

/// The outcome of an answer as far as it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The check passed.
    Pass,
    /// The check failed, and why.
    Fail(String),
    /// Not decided yet: read more (the caller's deadline still applies).
    More,
}
