//! What `straitctl show dns` and the metrics read: published by the DNS
//! service once a second.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

use strait_dataplane::DnsConfig;
use strait_dns::{Resolver, Stats};

use super::routes::AcceleratedRoutes;

/// The published state.
#[derive(Debug, Default)]
pub struct DnsView {
    state: Mutex<Option<DnsState>>,
}

impl DnsView {
    /// The latest state; `None` without `[dns]`.
    pub fn get(&self) -> Option<DnsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn set(&self, state: DnsState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
    }
}

/// The forwarder's state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DnsState {
    /// Addresses served.
    pub listen: Vec<SocketAddr>,
    /// Private zones: apex and records.
    pub zones: Vec<(String, usize)>,
    /// Conditional forwarding suffixes with their upstreams.
    pub forward: Vec<(String, Vec<SocketAddr>)>,
    /// Default upstreams.
    pub upstreams: Vec<SocketAddr>,
    /// Per upstream: sent, answered, timeouts, last round trip (ms),
    /// timeouts since its last answer.
    pub upstream_health: Vec<UpstreamView>,
    /// Answers cached.
    pub cache_entries: usize,
    /// Queries waiting for an upstream.
    pub pending: usize,
    /// TCP clients connected.
    pub tcp_clients: usize,
    /// Counters.
    pub stats: Stats,
    /// Accelerated names.
    pub accelerate: Vec<String>,
    /// The tunnel their addresses go into.
    pub tunnel: Option<String>,
    /// Routed addresses.
    pub routes: Vec<DnsRouteView>,
    /// Route sets the engine refused.
    pub route_errors: u64,
}

/// One upstream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamView {
    /// Its address.
    pub address: SocketAddr,
    /// Queries sent.
    pub sent: u64,
    /// Answers.
    pub answered: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// The last answer's round trip, ms.
    pub last_rtt_ms: Option<f64>,
    /// Timeouts since its last answer.
    pub failing: u32,
}

/// One routed address.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DnsRouteView {
    /// The accelerated name.
    pub name: String,
    /// The address.
    pub address: IpAddr,
    /// Seconds until it expires without a new answer.
    pub expires_in: u64,
}

impl DnsState {
    pub(super) fn new<C: Clone>(
        config: &DnsConfig,
        resolver: &Resolver<C>,
        routes: &AcceleratedRoutes,
        route_errors: u64,
        tcp_clients: usize,
        now: Instant,
    ) -> DnsState {
        let s = resolver.settings();
        DnsState {
            listen: super::values(&config.listen),
            zones: s
                .zones
                .iter()
                .map(|z| (z.apex().to_string(), z.len()))
                .collect(),
            forward: config
                .forward
                .iter()
                .map(|f| (f.suffix.to_string(), super::values(&f.upstreams)))
                .collect(),
            upstreams: s.upstreams.clone(),
            upstream_health: resolver
                .health()
                .into_iter()
                .map(|(address, h)| UpstreamView {
                    address,
                    sent: h.sent,
                    answered: h.answered,
                    timeouts: h.timeouts,
                    last_rtt_ms: h.last_rtt.map(|d| d.as_secs_f64() * 1e3),
                    failing: h.failing,
                })
                .collect(),
            cache_entries: resolver.cache_len(),
            pending: resolver.pending_len(),
            tcp_clients,
            stats: resolver.stats(),
            accelerate: config.accelerate.iter().map(|p| p.to_string()).collect(),
            tunnel: config.tunnel.clone(),
            routes: routes
                .entries()
                .iter()
                .map(|(address, e)| DnsRouteView {
                    name: e.name.clone(),
                    address: *address,
                    expires_in: e.expires.saturating_duration_since(now).as_secs(),
                })
                .collect(),
            route_errors,
        }
    }
}
