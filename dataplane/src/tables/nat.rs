//! NAT rules as the tables hold them: the rule snapshot compiled from
//! `[[nat]]` and `[nat_settings]`, which every worker's translator
//! installs. The per-packet stage is `pipeline/nat.rs`; what workers
//! publish about their sessions is `status.rs`.
//!
//! # Workers
//!
//! Sessions belong to one worker. With one RX queue per interface (veth,
//! the test bed) there is one worker and nothing to steer. With several
//! queues, RSS spreads flows by a hash the NAT does not control, so a reply
//! could reach a worker that does not hold its session. The library cuts
//! the external port space into 64-port blocks dealt to workers
//! ([`strait_nat::owner_worker_for_inbound`]): inbound packets belong to the
//! owner of their destination port, outbound ones to the owner of their
//! source port. Handing a frame to its owner needs a cross-worker queue
//! (or an XDP program that picks the socket by port block) which is not
//! wired yet, so a configuration with NAT rules and more than one worker is
//! refused. Each worker's translator is nevertheless built with its
//! [`WorkerPartition`], so only the steering is missing.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use strait_nat::{
    BackendSelection, DnatRule, EgressId, Endpoint, Filtering, Ipv4Cidr, NatConfig, NatRules,
    NatWorker, PortRange, Protocol, RuleError, RuleId, SessionInfo, SnatRule, SnatTarget,
    StaticNatRule, Timeouts, WorkerPartition,
};

use super::port::Port;
use super::tunnel::Tunnel;
use crate::config::{
    BackendSelectionConfig, Config, NatFilteringConfig, NatKindConfig, NatRuleConfig,
    NatSettingsConfig,
};
use crate::status::NatStatus;

/// External ports rules use when `ports` is not given. Port 0 is not a
/// port, and ports below 1024 are left to services published by DNAT.
pub const DEFAULT_PORTS: PortRange = PortRange::new(1024, 65535);

/// Distinct external addresses one worker allocates ports on (each costs
/// 96 KiB of port bitmaps with the reuse delay, allocated when first used).
const MAX_EXTERNAL_ADDRESSES: usize = 256;

/// Why the NAT part of a configuration was refused: the item (`nat rule
/// NAME`, `[nat_settings]`, ...), the field at fault whose line the error
/// names (`None`: the item or section as a whole), and the reason.
pub type NatConfigError = (String, Option<&'static str>, String);

/// A rule as operators know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatRuleInfo {
    /// The library's identifier (stable across reloads for a given name).
    pub id: RuleId,
    /// The configured name.
    pub name: String,
    /// Its kind.
    pub kind: NatKindConfig,
    /// One line describing what it matches and what it translates to.
    pub summary: String,
}

/// The NAT part of a table snapshot.
#[derive(Debug)]
pub struct NatTables {
    /// The validated rules the workers install.
    pub rules: Arc<NatRules>,
    /// Names and descriptions, in configuration order.
    pub infos: Vec<NatRuleInfo>,
    /// The settings in force (fixed for the engine's life).
    pub settings: NatSettingsConfig,
    config: NatConfig,
    workers: u16,
    /// Addresses inbound translation may concern, sorted: every other
    /// destination skips the inbound stage without a table lookup. Kept
    /// across reloads (sessions outlive the rules that created them).
    external: Vec<Ipv4Addr>,
    /// What the workers publish for the control thread; the same object
    /// across reloads.
    pub status: Arc<NatStatus>,
    /// The workers' translators, built on the control side; the same
    /// object across reloads.
    translators: Arc<Translators>,
    /// Load-balanced services (`tables/lb.rs`), whose DNAT rules are in
    /// `rules`.
    pub lbs: Vec<super::lb::LbInfo>,
}

/// One translator per worker, built by the control thread when a snapshot
/// first carries NAT rules ([`NatTables::prepare_translators`]) so the
/// session tables (tens or hundreds of MB for a large `max_sessions`) are
/// allocated while the configuration is applied, not in a worker's packet
/// loop. Each worker takes its own when it installs the first snapshot
/// with rules, with `try_lock` (never waiting); the slot is then empty for
/// the engine's life.
pub struct Translators {
    slots: Box<[Mutex<Option<NatWorker>>]>,
    /// Set once the slots were filled: reloads never build again (the
    /// settings cannot change without a restart, and workers keep their
    /// translator across snapshots).
    built: AtomicBool,
}

impl Translators {
    fn new(workers: usize) -> Translators {
        Translators {
            slots: (0..workers.max(1)).map(|_| Mutex::new(None)).collect(),
            built: AtomicBool::new(false),
        }
    }
}

impl std::fmt::Debug for Translators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Translators")
            .field("workers", &self.slots.len())
            .field("built", &self.built.load(Ordering::Relaxed))
            .finish()
    }
}

impl NatTables {
    /// True when no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.infos.is_empty()
    }

    /// The rule's name, for sessions and messages.
    pub fn rule_name(&self, id: RuleId) -> Option<&str> {
        self.infos
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.name.as_str())
    }

    /// Whether inbound translation may concern packets to `addr`.
    #[inline]
    pub fn is_external(&self, addr: Ipv4Addr) -> bool {
        self.external.binary_search(&addr).is_ok()
    }

    /// Control side: builds every worker's translator if this snapshot is
    /// the first with NAT rules. Nothing happens on later calls, with or
    /// without rules (workers keep the translator they took).
    pub fn prepare_translators(&self) {
        if self.is_empty() || self.translators.built.swap(true, Ordering::AcqRel) {
            return;
        }
        for (index, slot) in self.translators.slots.iter().enumerate() {
            let index = u16::try_from(index).unwrap_or(u16::MAX);
            // The configuration was validated when the tables were built.
            match NatWorker::new(self.worker_config(index), Arc::clone(&self.rules)) {
                Ok(w) => *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(w),
                Err(e) => tracing::error!(error = %e, "NAT translator not built"),
            }
        }
    }

    /// Worker side: takes worker `index`'s prebuilt translator, if there is
    /// one and nobody holds its slot (never waits).
    pub fn take_translator(&self, index: u16) -> Option<NatWorker> {
        self.translators
            .slots
            .get(usize::from(index))?
            .try_lock()
            .ok()?
            .take()
    }

    /// How many prebuilt translators no worker has taken yet.
    #[cfg(test)]
    pub fn prebuilt_translators(&self) -> usize {
        self.translators
            .slots
            .iter()
            .filter(|s| s.lock().is_ok_and(|s| s.is_some()))
            .count()
    }

    /// The translator configuration of worker `index`.
    pub fn worker_config(&self, index: u16) -> NatConfig {
        NatConfig {
            partition: WorkerPartition {
                index: index.min(self.workers.saturating_sub(1)),
                count: self.workers.max(1),
            },
            ..self.config
        }
    }

    /// Builds the NAT tables from `config`, resolving interface and tunnel
    /// names against `ports` and `tunnels`. On error: the item and the
    /// reason.
    pub fn build(
        config: &Config,
        ports: &[Port],
        tunnels: &[Tunnel],
        flow_seed: u64,
        previous: Option<&NatTables>,
    ) -> Result<NatTables, NatConfigError> {
        let settings = config.nat_settings.clone();
        let workers = u16::try_from(config.engine.workers).unwrap_or(u16::MAX);
        if let Some(prev) = previous {
            if prev.settings != settings {
                return Err((
                    "[nat_settings]".into(),
                    None,
                    "changes need a restart (session tables are sized and keyed at start)".into(),
                ));
            }
        }
        let lib_config = NatConfig {
            max_sessions: settings.max_sessions,
            max_external_addresses: MAX_EXTERNAL_ADDRESSES,
            timeouts: Timeouts {
                udp: settings.udp_timeout,
                tcp_established: settings.tcp_established_timeout,
                tcp_transitory: settings.tcp_transitory_timeout,
                icmp: settings.icmp_timeout,
            },
            filtering: match settings.filtering {
                NatFilteringConfig::AddressDependent => Filtering::AddressDependent,
                NatFilteringConfig::EndpointIndependent => Filtering::EndpointIndependent,
            },
            inbound_refresh: settings.inbound_refresh,
            port_reuse_delay: settings.port_reuse_delay,
            ports_per_inside_address: settings.ports_per_inside_address,
            sessions_per_inside_address: settings.sessions_per_inside_address,
            inbound_sessions_per_remote_address: settings.inbound_sessions_per_remote_address,
            inbound_sessions_per_rule: settings.inbound_sessions_per_rule,
            // Keyed from the device's random flow seed so remote hosts
            // cannot aim hash collisions at the session table; the same
            // for the engine's life.
            hash_key: flow_seed.rotate_left(29) ^ 0x6e61_745f_6b65_7921,
            partition: WorkerPartition::SINGLE,
            ..NatConfig::default()
        };
        lib_config
            .validate()
            .map_err(|e| ("[nat_settings]".to_owned(), None, e.to_string()))?;
        if (!config.nat.is_empty() || !config.load_balancers.is_empty()) && workers > 1 {
            return Err((
                "[[nat]]".into(),
                None,
                format!(
                    "NAT needs engine.workers = 1 (got {workers}): steering each session's \
                     packets to the worker that owns it is not available yet"
                ),
            ));
        }

        let egress_of = |name: &str| -> Option<(EgressId, Option<Ipv4Addr>)> {
            if let Some(p) = ports.iter().find(|p| p.name == name) {
                return Some((EgressId(p.id), p.icmp_source_v4()));
            }
            tunnels
                .iter()
                .find(|t| t.name == name)
                .map(|t| (t.egress, Some(t.local)))
        };

        let mut infos: Vec<NatRuleInfo> = Vec::with_capacity(config.nat.len());
        let mut snat = Vec::new();
        let mut dnat = Vec::new();
        let mut static_nat = Vec::new();
        let mut external: Vec<Ipv4Addr> = previous.map_or_else(Vec::new, |p| p.external.clone());
        for p in ports {
            external.extend(p.v4.iter().map(|(a, _)| *a));
        }
        let previous_lbs = previous.map_or(&[][..], |p| &p.lbs[..]);
        let lb_ids = super::lb::assign_ids(config, previous_lbs)?;
        let mut used: Vec<RuleId> = lb_ids.clone();
        for (i, rc) in config.nat.iter().enumerate() {
            let item = format!("nat rule {}", rc.name);
            if rc.name.is_empty() {
                let item = format!("nat rule #{}", i + 1);
                return Err((item, Some("name"), "name is empty".into()));
            }
            if config.nat[..i].iter().any(|o| o.name == rc.name) {
                return Err((item, Some("name"), "listed twice".into()));
            }
            check_fields(rc).map_err(|(field, reason)| (item.clone(), Some(field), reason))?;
            // A name keeps its identifier across reloads, so sessions
            // created under the old snapshot are still attributed to it.
            let kept = previous
                .and_then(|p| p.infos.iter().find(|r| r.name == rc.name))
                .map(|r| r.id)
                .filter(|id| !used.contains(id));
            let id = match kept {
                Some(id) => id,
                None => fresh_id(&used, previous, config).ok_or_else(|| {
                    let reason = "too many rules (at most 65535)".to_owned();
                    (item.clone(), Some("name"), reason)
                })?,
            };
            used.push(id);
            let summary = match rc.kind {
                NatKindConfig::Snat | NatKindConfig::Masquerade => {
                    let source = prefix(rc.source.as_deref().unwrap_or_default())
                        .map_err(|r| (item.clone(), Some("source"), format!("source: {r}")))?;
                    let destination =
                        rc.destination
                            .as_deref()
                            .map(prefix)
                            .transpose()
                            .map_err(|r| {
                                (
                                    item.clone(),
                                    Some("destination"),
                                    format!("destination: {r}"),
                                )
                            })?;
                    let out = match rc.out_interface.as_deref() {
                        None => None,
                        Some(name) => Some(egress_of(name).ok_or_else(|| {
                            (
                                item.clone(),
                                Some("out_interface"),
                                format!(
                                    "out_interface {name} is not a configured interface or tunnel"
                                ),
                            )
                        })?),
                    };
                    let ports = match rc.ports.as_deref() {
                        None => DEFAULT_PORTS,
                        Some(s) => port_range(s).map_err(|r| (item.clone(), Some("ports"), r))?,
                    };
                    let target = if rc.kind == NatKindConfig::Masquerade {
                        match out {
                            None => return Err((
                                item,
                                Some("out_interface"),
                                "masquerade needs out_interface (its address is the new source)"
                                    .into(),
                            )),
                            Some((_, None)) => {
                                return Err((
                                    item,
                                    Some("out_interface"),
                                    format!(
                                        "out_interface {} has no IPv4 address to masquerade as",
                                        rc.out_interface.as_deref().unwrap_or_default()
                                    ),
                                ))
                            }
                            Some((_, Some(_))) => SnatTarget::Masquerade { ports },
                        }
                    } else {
                        if rc.addresses.is_empty() {
                            let reason = "snat needs addresses (the pool)".into();
                            return Err((item, Some("addresses"), reason));
                        }
                        let mut pool = Vec::with_capacity(rc.addresses.len());
                        for a in &rc.addresses {
                            let addr: Ipv4Addr = a.parse().map_err(|_| {
                                (
                                    item.clone(),
                                    Some("addresses"),
                                    format!("address {a:?} is not an IPv4 address"),
                                )
                            })?;
                            if pool.contains(&addr) {
                                let reason = format!("address {addr} listed twice");
                                return Err((item, Some("addresses"), reason));
                            }
                            pool.push(addr);
                        }
                        external.extend(&pool);
                        SnatTarget::Pool {
                            addresses: pool,
                            ports,
                        }
                    };
                    let summary = format!(
                        "from {source}{}{} to {} ports {}-{}",
                        destination.map_or_else(String::new, |d| format!(" to {d}")),
                        rc.out_interface
                            .as_deref()
                            .map_or_else(String::new, |o| format!(" out {o}")),
                        match &target {
                            SnatTarget::Pool { addresses, .. } => addresses
                                .iter()
                                .map(Ipv4Addr::to_string)
                                .collect::<Vec<_>>()
                                .join(","),
                            SnatTarget::Masquerade { .. } => "the interface address".into(),
                        },
                        ports.first,
                        ports.last
                    );
                    snat.push(SnatRule {
                        id,
                        source,
                        destination,
                        egress: out.map(|(e, _)| e),
                        target,
                    });
                    summary
                }
                NatKindConfig::Dnat => {
                    let protocol = match rc.protocol.as_deref() {
                        Some("tcp") => Protocol::Tcp,
                        Some("udp") => Protocol::Udp,
                        Some(other) => {
                            let reason = format!("protocol {other:?} is not tcp or udp");
                            return Err((item, Some("protocol"), reason));
                        }
                        None => {
                            let reason = "dnat needs protocol (tcp or udp)".into();
                            return Err((item, Some("protocol"), reason));
                        }
                    };
                    let public = endpoint(rc.public.as_deref().unwrap_or_default())
                        .map_err(|r| (item.clone(), Some("public"), format!("public: {r}")))?;
                    if rc.backends.is_empty() {
                        let reason = "dnat needs at least one backend".into();
                        return Err((item, Some("backends"), reason));
                    }
                    let mut backends = Vec::with_capacity(rc.backends.len());
                    for b in &rc.backends {
                        backends.push(endpoint(b).map_err(|r| {
                            (item.clone(), Some("backends"), format!("backend: {r}"))
                        })?);
                    }
                    external.push(public.addr);
                    let selection = match rc.selection.unwrap_or_default() {
                        BackendSelectionConfig::Hash => BackendSelection::ClientHash,
                        BackendSelectionConfig::RoundRobin => BackendSelection::RoundRobin,
                    };
                    let summary = format!(
                        "{protocol} {public} to {} ({})",
                        backends
                            .iter()
                            .map(Endpoint::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        match selection {
                            BackendSelection::ClientHash => "hash",
                            BackendSelection::RoundRobin => "round-robin",
                            BackendSelection::Maglev(_) => "maglev",
                        }
                    );
                    dnat.push(DnatRule {
                        id,
                        protocol,
                        public,
                        backends,
                        selection,
                        full_nat: false,
                    });
                    summary
                }
                NatKindConfig::Static => {
                    let addr = |field: &'static str,
                                v: Option<&str>|
                     -> Result<Ipv4Addr, NatConfigError> {
                        let v = v.ok_or_else(|| {
                            (item.clone(), Some(field), format!("static needs {field}"))
                        })?;
                        v.parse().map_err(|_| {
                            (
                                item.clone(),
                                Some(field),
                                format!("{field} {v:?} is not an IPv4 address"),
                            )
                        })
                    };
                    let internal = addr("internal", rc.internal.as_deref())?;
                    let ext = addr("external", rc.external.as_deref())?;
                    external.push(ext);
                    static_nat.push(StaticNatRule {
                        id,
                        internal,
                        external: ext,
                    });
                    format!("{internal} <-> {ext}")
                }
            };
            infos.push(NatRuleInfo {
                id,
                name: rc.name.clone(),
                kind: rc.kind,
                summary,
            });
        }
        let (lb_rules, lbs) = super::lb::build(config, &lb_ids, previous_lbs)?;
        for lb in &lbs {
            external.push(lb.address.addr);
            infos.push(NatRuleInfo {
                id: lb.id,
                name: super::lb::rule_name(&lb.name),
                kind: NatKindConfig::Dnat,
                summary: format!(
                    "{} {} to {} backends (maglev{})",
                    lb.protocol,
                    lb.address,
                    lb.backends.len(),
                    if lb.full_nat { ", full NAT" } else { "" }
                ),
            });
        }
        dnat.extend(lb_rules);
        let rules = NatRules::new(snat, dnat, static_nat).map_err(|e| rule_error(&infos, &e))?;
        external.sort_unstable();
        external.dedup();
        let status = match previous {
            Some(p) => Arc::clone(&p.status),
            None => Arc::new(NatStatus::new(usize::from(workers.max(1)))),
        };
        let translators = match previous {
            Some(p) => Arc::clone(&p.translators),
            None => Arc::new(Translators::new(usize::from(workers))),
        };
        Ok(NatTables {
            rules: Arc::new(rules),
            infos,
            settings,
            config: lib_config,
            workers,
            external,
            status,
            translators,
            lbs,
        })
    }
}

/// The smallest identifier neither assigned in this build nor held by a
/// rule of the previous snapshot that this configuration still names.
fn fresh_id(used: &[RuleId], previous: Option<&NatTables>, config: &Config) -> Option<RuleId> {
    let reserved = |id: RuleId| {
        previous.is_some_and(|p| {
            p.infos
                .iter()
                .any(|r| r.id == id && config.nat.iter().any(|c| c.name == r.name))
        })
    };
    (1..=u16::MAX)
        .map(RuleId)
        .find(|id| !used.contains(id) && !reserved(*id))
}

/// Refuses fields that do not belong to the rule's kind: a typo'd kind
/// must not silently drop half of a rule.
fn check_fields(rc: &NatRuleConfig) -> Result<(), (&'static str, String)> {
    let present = [
        ("source", rc.source.is_some()),
        ("destination", rc.destination.is_some()),
        ("out_interface", rc.out_interface.is_some()),
        ("addresses", !rc.addresses.is_empty()),
        ("ports", rc.ports.is_some()),
        ("protocol", rc.protocol.is_some()),
        ("public", rc.public.is_some()),
        ("backends", !rc.backends.is_empty()),
        ("selection", rc.selection.is_some()),
        ("internal", rc.internal.is_some()),
        ("external", rc.external.is_some()),
    ];
    let (kind, allowed): (&str, &[&str]) = match rc.kind {
        NatKindConfig::Snat => (
            "snat",
            &[
                "source",
                "destination",
                "out_interface",
                "addresses",
                "ports",
            ],
        ),
        NatKindConfig::Masquerade => (
            "masquerade",
            &["source", "destination", "out_interface", "ports"],
        ),
        NatKindConfig::Dnat => ("dnat", &["protocol", "public", "backends", "selection"]),
        NatKindConfig::Static => ("static", &["internal", "external"]),
    };
    if let Some((field, _)) = present
        .iter()
        .find(|(field, set)| *set && !allowed.contains(field))
    {
        return Err((field, format!("{field} does not apply to a {kind} rule")));
    }
    if matches!(rc.kind, NatKindConfig::Snat | NatKindConfig::Masquerade) && rc.source.is_none() {
        return Err(("source", format!("{kind} needs source (an IPv4 prefix)")));
    }
    Ok(())
}

/// The library's message with rule numbers replaced by names.
fn rule_error(infos: &[NatRuleInfo], e: &RuleError) -> NatConfigError {
    let name = |id: RuleId| {
        infos
            .iter()
            .find(|r| r.id == id)
            .map_or_else(|| id.to_string(), |r| r.name.clone())
    };
    // The rule at fault, another rule the message names, and the field.
    let (rule, other, field) = match e {
        RuleError::PortRange { rule, .. } => (Some(*rule), None, Some("ports")),
        RuleError::EmptyPool { rule } => (Some(*rule), None, Some("addresses")),
        RuleError::NoBackends { rule } => (Some(*rule), None, Some("backends")),
        RuleError::DnatPortZero { rule, .. } => (Some(*rule), None, Some("public")),
        RuleError::DnatProtocol { rule, .. } => (Some(*rule), None, Some("protocol")),
        RuleError::DuplicateRuleId { rule } => (Some(*rule), None, Some("name")),
        RuleError::DuplicatePublicEndpoint { rule, other, .. } => {
            (Some(*rule), Some(*other), Some("public"))
        }
        RuleError::DuplicateStaticAddress { rule, other, .. } => (Some(*rule), Some(*other), None),
        RuleError::StaticInPool {
            rule, pool_rule, ..
        } => (Some(*rule), Some(*pool_rule), None),
    };
    let mut msg = e.to_string();
    if let Some(rule) = rule {
        let head = format!("{rule}: ");
        if let Some(rest) = msg.strip_prefix(&head) {
            msg = rest.to_owned();
        }
    }
    if let Some(other) = other {
        msg = msg.replace(&other.to_string(), &format!("nat rule {}", name(other)));
    }
    let item = rule.map_or_else(|| "[[nat]]".to_owned(), |r| format!("nat rule {}", name(r)));
    (item, field, msg)
}

/// The one prefix parser routes and tunnels use too: host bits are refused
/// with the reason, never silently cleared.
fn prefix(s: &str) -> Result<Ipv4Cidr, String> {
    s.parse().map_err(|e: strait_nat::CidrError| e.to_string())
}

pub(super) fn endpoint(s: &str) -> Result<Endpoint, String> {
    let sa: SocketAddrV4 = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 addr:port"))?;
    if sa.port() == 0 {
        return Err(format!("{s}: port 0 cannot be forwarded"));
    }
    Ok(Endpoint::new(*sa.ip(), sa.port()))
}

fn port_range(s: &str) -> Result<PortRange, String> {
    let bad = || format!("ports {s:?} is not first-last with 1 <= first <= last <= 65535");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let first: u16 = a.trim().parse().map_err(|_| bad())?;
    let last: u16 = b.trim().parse().map_err(|_| bad())?;
    if first == 0 || first > last {
        return Err(bad());
    }
    Ok(PortRange::new(first, last))
}

/// Operators' name of a session's protocol and state.
pub fn session_state(s: &SessionInfo) -> &'static str {
    match s.tcp_state {
        Some(state) => state.name(),
        None => "active",
    }
}
