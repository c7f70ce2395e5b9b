//! What the IKE runtime shows: `straitctl show ike`, `show devices` and
//! the Prometheus IKE families read the state it publishes here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The runtime's published state, and the control side's word that the
/// configuration was reloaded.
#[derive(Debug, Default)]
pub struct IkeView {
    state: Mutex<IkeState>,
    reloaded: AtomicBool,
}

/// The published state.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct IkeState {
    /// Hubs this device registers with.
    pub hubs: Vec<HubView>,
    /// The hub's registry and who is registered.
    pub devices: Vec<DeviceView>,
    /// The hub's sites: what each holds, what was refused.
    pub sites: Vec<SiteView>,
    /// Every IKE SA (read once a second).
    pub sas: Vec<IkeSaView>,
    /// Registrations refused, by reason (`wrong key`, `unknown serial`).
    pub refused: BTreeMap<String, u64>,
    /// IKE SAs now (half-open ones included).
    pub ike_sas: usize,
    /// Sources limited now for their refusals.
    pub limited_sources: usize,
    /// Counters since start.
    pub counters: IkeCounters,
}

/// Counters of the key exchange since start.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct IkeCounters {
    /// IKE SAs established (both roles).
    pub established: u64,
    /// CHILD SA rekeys completed (either side started them).
    pub child_rekeys: u64,
    /// IKE SA rekeys completed.
    pub ike_rekeys: u64,
    /// Rekeys started because an SA neared a lifetime limit (bytes,
    /// sequence numbers) the engine reported.
    pub lifetime_rekeys: u64,
    /// Liveness checks sent (only to peers from which nothing came, not
    /// even ESP).
    pub liveness_checks: u64,
    /// Peers declared dead: a request (a liveness check among them) went
    /// unanswered through its retransmissions.
    pub dead_peers: u64,
    /// New IKE SAs from a rate-limited source dropped unanswered.
    pub rate_limited: u64,
}

/// One hub as the device sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HubView {
    /// Its tunnel's name.
    pub name: String,
    /// Its address.
    pub remote: String,
    /// `registering`, `up` or `waiting` (to try again).
    pub state: &'static str,
    /// The tunnel's SPIs once up (inbound, outbound).
    pub spis: Option<(u32, u32)>,
    /// Why the last attempt ended, if it failed.
    pub last_error: Option<String>,
    /// Prefixes configured to go through it.
    pub prefixes: Vec<String>,
    /// Prefixes it announced we reach through it.
    pub learned: Vec<String>,
    /// Our claims it refused or narrowed, if it did.
    pub claims_refused: Option<String>,
}

/// One IKE SA.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IkeSaView {
    /// Our IKE SPI, hex.
    pub spi: String,
    /// The peer's address.
    pub peer: String,
    /// The peer's identity once authenticated.
    pub identity: Option<String>,
    /// `connecting`, `authenticating`, `half-open`, `established`.
    pub state: &'static str,
    /// We started it.
    pub initiator: bool,
    /// NAT between us (ESP in UDP 4500).
    pub nat_t: bool,
    /// DH group number.
    pub group: u16,
    /// Seconds until its rekey, if timed.
    pub rekey_in: Option<u64>,
    /// CHILD SAs: inbound SPI, outbound SPI, seconds until their rekey.
    pub children: Vec<(u32, u32, Option<u64>)>,
}

/// One site as the hub sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteView {
    /// Its name (its tunnel is `site-NAME`).
    pub site: String,
    /// Its devices registered now.
    pub devices: Vec<String>,
    /// The prefixes it holds: its accepted claims, routed into its tunnel.
    pub prefixes: Vec<String>,
    /// Claims refused at its last registration, each with the reason.
    pub refused: Vec<String>,
    /// Seconds since it last changed (registered, went, was refused).
    pub changed_seconds_ago: Option<u64>,
}

/// One device of the registry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceView {
    /// Serial number.
    pub serial: String,
    /// Site (its tunnel is `site-SITE`).
    pub site: String,
    /// Registered now.
    pub registered: bool,
    /// Where it registered from.
    pub remote: Option<String>,
    /// Seconds since it last registered (daemon's clock).
    pub registered_seconds_ago: Option<u64>,
    /// Refused attempts with its serial.
    pub refused: u64,
}

impl IkeView {
    /// A copy of the state.
    pub fn get(&self) -> IkeState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn set(&self, state: IkeState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// The configuration file was reloaded: the runtime takes up its
    /// `[ike]` registry.
    pub fn config_reloaded(&self) {
        self.reloaded.store(true, Ordering::Release);
    }

    pub(super) fn take_reload(&self) -> bool {
        self.reloaded.swap(false, Ordering::AcqRel)
    }
}
