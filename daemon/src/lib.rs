//! The Strait daemon's servers, shared by `straitd`, `straitctl` and the
//! end-to-end tests: the control socket, the Prometheus endpoint, the IKE runtime and the
//! network services' event loop. They
//! read the engine only through the `strait-dataplane` embedding API, as
//! any vendor's management software would.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod control;
pub mod dns;
pub mod events;
pub mod ike;
pub mod lb;
pub mod metrics;
pub mod netloop;
pub mod privileges;
pub mod proxy;
pub mod server;
#[allow(unsafe_code)]
mod sys;
