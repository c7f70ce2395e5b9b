//! Strait's traffic generator and end-to-end benchmark harness.
//!
//! [`gen`] is the library behind the `strait-gen` binary: traffic
//! specifications, frame templates, paced senders (AF_PACKET, UDP socket,
//! AF_XDP), a probe-counting receiver with loss/reorder/duplicate detection
//! and one-way latency, reports and an RFC 2544 NDR/PDR search.
//!
//! [`harness`] is the end-to-end benchmark behind `strait-bench`
//! (`scripts/bench`): Strait against the kernel and as an ESP tunnel
//! endpoint on one namespace bed, repeated trials, medians and ratios.

#![deny(unsafe_code)]

pub mod gen;
pub mod harness;
#[allow(unsafe_code)]
pub mod sys;
