//! The Strait daemon's servers, shared by `straitd`, `straitctl` and the
//! end-to-end tests: the control socket and the Prometheus endpoint. They
//! read the engine only through the `strait-dataplane` embedding API, as
//! any vendor's management software would.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod control;
pub mod events;
pub mod ike;
pub mod metrics;
pub mod privileges;
pub mod server;
#[allow(unsafe_code)]
mod sys;
