//! The Strait engine: wires AF_XDP ports, routing, NAT and ESP into
//! poll-mode workers, and exposes the embedding API.

pub mod config;
pub mod counters;
pub mod engine;
pub mod nat;
pub mod neigh;
pub mod packet;
pub mod pipeline;
pub mod punt;
pub mod ratelimit;
pub mod status;
pub mod tables;
pub mod worker;

pub use config::{Config, ConfigError, RekeyStep};
pub use counters::{DropReason, PortCounters};
pub use engine::{Engine, EngineError};
pub use tables::Tables;
