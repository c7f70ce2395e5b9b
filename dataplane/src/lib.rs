//! The Strait engine: wires AF_XDP ports, routing, NAT and ESP into
//! poll-mode workers, and exposes the embedding API.

pub mod config;
pub mod counters;
pub mod neigh;
pub mod packet;
pub mod pipeline;
pub mod punt;
pub mod ratelimit;
pub mod tables;
pub mod worker;
