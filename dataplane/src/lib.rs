//! The Strait engine: wires AF_XDP ports, routing, NAT and ESP into
//! poll-mode workers, and exposes the embedding API.
//!
//! An appliance's management software builds a [`Config`] (from TOML with
//! [`Config::load`] or field by field), starts an [`Engine`] with it, and
//! from then on changes the running tables ([`Engine::apply`],
//! [`Engine::add_route`], [`Engine::rekey`], ...), reads counters and
//! read-only views ([`Engine::counters`], [`Engine::security_associations`],
//! [`Engine::nat_snapshots`], ...), drains its events
//! ([`Engine::poll_events`]: SA lifetimes passing), and finally stops it. Everything else —
//! the pipeline, the workers, the table snapshots — is private: the daemon
//! (`strait-daemon`) is built on this API alone.
//!
//! See `dataplane/examples/embed.rs`.

#![warn(missing_docs)]
#![deny(unsafe_code)]

mod config;
mod counters;
mod engine;
mod events;
#[doc(hidden)]
pub mod fuzzing;
mod neigh;
mod packet;
mod pipeline;
mod punt;
mod ratelimit;
mod sastore;
mod services;
mod status;
#[allow(unsafe_code)]
mod sys;
mod tables;
mod worker;

pub use config::{
    AllDownConfig, BackendSelectionConfig, BindConfig, CheckKindConfig, Checked, Config,
    ConfigError, DnsConfig, DnsForwardConfig, DnsName, DnsPattern, DnsRecord, DnsServer,
    DnsZoneConfig, EncapConfig, EngineConfig, FieldSpans, HealthCheckConfig, IcmpConfig, IkeConfig,
    IkeDeviceConfig, IkePeerConfig, InterfaceConfig, LbBackendConfig, LoadBalancerConfig,
    MetricsConfig, NatFilteringConfig, NatKindConfig, NatRuleConfig, NatSettingsConfig,
    NeighbourConfigEntry, Parsed, PollConfig, ProxyConfig, ProxyPlan, RekeyStep, RouteConfig,
    SaEntryConfig, Secret, Span, TunnelConfig, XdpModeConfig,
};
pub use counters::{DropReason, PoolGauge, PortCounters, Stage};
pub use engine::{
    Engine, EngineError, InterfaceInfo, LbChange, Overlay, SaSummary, TunnelPrefix, TunnelSas,
    OVERLAY_IKE,
};
pub use events::{EngineEvent, SaLifetimeEvent, SaLimit};
pub use neigh::NeighbourState;
pub use services::{ServiceDatagram, IKE_PORT};
pub use status::{NatSnapshot, NeighbourInfo, SaCounterInfo, SaDirection};
/// NAT session types as the sans-I/O translator reports them, for reading
/// [`NatSnapshot`]s.
pub use strait_nat::{
    Direction as NatDirection, NatCounters, RuleId as NatRuleId, SessionInfo as NatSessionInfo,
};
pub use tables::{session_state, LbBackendInfo, LbInfo, NatRuleInfo};
