//! The embedding API: build an engine from a configuration, start its
//! workers, change its tables while it forwards, read its counters, stop it.
//!
//! ```no_run
//! use strait_dataplane::{Config, Engine};
//! let config = Config::load("/etc/strait/strait.toml")?;
//! let engine = Engine::start(config, "/etc/strait/strait.toml")?;
//! for (iface, c) in engine.counters() {
//!     println!("{iface}: rx {} tx {} dropped {}", c.rx_packets, c.tx_packets, c.total_drops());
//! }
//! engine.stop();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use strait_xdp::{
    BindPolicy, PortSet, PortSetConfig, PortSpec, RingSizes, UmemConfig, XdpMode, XdpProgram,
};

use crate::config::{
    BindConfig, Config, ConfigError, NatRuleConfig, RekeyStep, RouteConfig, XdpModeConfig,
};
use crate::counters::{PoolGauge, PortCounters, SharedCounters};
use crate::events::{self, EngineEvent};
use crate::punt::HostTap;
use crate::services::{ServiceDatagram, ServiceQueues};
use crate::status::NatSnapshot;
use crate::status::{sum_sas, NeighbourInfo, SaCounterInfo, WorkerStatus};
use crate::tables::{kernel_link, NatRuleInfo, SharedTables, Tables};
use crate::worker::{self, Doorbell, WorkerContext};

/// Why an engine could not start or change.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An AF_XDP port could not be opened.
    #[error("interface {interface}: {source}")]
    Xdp {
        /// The interface (or the comma-separated interfaces of a worker).
        interface: String,
        /// What AF_XDP refused.
        #[source]
        source: strait_xdp::Error,
    },
    /// The host-path TAP could not be created.
    #[error("host path for {interface}: {source}")]
    HostPath {
        /// The interface whose TAP device failed.
        interface: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A worker thread could not be started.
    #[error("worker {0}: {1}")]
    Thread(usize, std::io::Error),
    /// The thread that records SA sequence positions could not be started.
    #[error("SA state thread: {0}")]
    Keeper(std::io::Error),
    /// A worker could not be given the real-time priority asked for.
    #[error(
        "worker {worker}: engine.realtime_priority = {priority}: SCHED_FIFO refused: {source} \
         (it needs root or CAP_SYS_NICE)"
    )]
    Scheduling {
        /// The worker.
        worker: usize,
        /// The priority asked for.
        priority: u8,
        /// What the kernel answered.
        #[source]
        source: std::io::Error,
    },
}

/// One Security Association, without its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaSummary {
    /// SPI.
    pub spi: u32,
    /// Cipher suite name as written in the configuration.
    pub cipher: &'static str,
    /// 64-bit extended sequence numbers.
    pub esn: bool,
}

/// A tunnel's SAs and traffic, for `show sa`.
#[derive(Debug, Clone)]
pub struct TunnelSas {
    /// Tunnel name.
    pub tunnel: String,
    /// Our outer address.
    pub local: std::net::Ipv4Addr,
    /// The peer's outer address now (learned when the tunnel floats).
    pub peer: std::net::Ipv4Addr,
    /// The peer's UDP port; `None` for plain ESP.
    pub peer_port: Option<u16>,
    /// The SA we seal with.
    pub outbound: SaSummary,
    /// The SAs we open with (the primary first, then those installed for
    /// a rekey).
    pub inbound: Vec<SaSummary>,
    /// Inner bytes sealed with the outbound SA, as published by the
    /// workers for lifetime accounting.
    pub sealed_bytes: u64,
    /// Counters of the interface the tunnel's outer packets use: ESP
    /// sealed/opened packets and the `esp_*` drop reasons.
    pub egress_counters: Option<PortCounters>,
}

/// An interface the engine serves, as `show interfaces` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Kernel name.
    pub name: String,
    /// Kernel interface index.
    pub ifindex: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// IP-layer MTU used for forwarding decisions.
    pub mtu: u16,
    /// Addresses the dataplane owns on it, IPv4 first, with prefix lengths.
    pub addresses: Vec<(std::net::IpAddr, u8)>,
}

pub(crate) fn cipher_name(c: strait_esp::CipherSuite) -> &'static str {
    match c {
        strait_esp::CipherSuite::Aes128Gcm => "aes128-gcm",
        strait_esp::CipherSuite::Aes256Gcm => "aes256-gcm",
        strait_esp::CipherSuite::ChaCha20Poly1305 => "chacha20-poly1305",
    }
}

#[derive(Debug)]
struct WorkerHandle {
    thread: Option<JoinHandle<()>>,
    counters: Arc<SharedCounters>,
    status: Arc<WorkerStatus>,
    doorbell: Arc<Doorbell>,
}

/// Sets the stop flag, wakes every worker that waits while idle, and
/// joins them.
fn halt(stop: &AtomicBool, workers: &mut [WorkerHandle]) {
    stop.store(true, Ordering::Relaxed);
    for h in workers.iter() {
        h.doorbell.ring();
    }
    for h in workers {
        if let Some(t) = h.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running dataplane.
#[derive(Debug)]
pub struct Engine {
    path: String,
    tables: Arc<SharedTables>,
    stop: Arc<AtomicBool>,
    workers: Vec<WorkerHandle>,
    /// The configuration in force and the next generation number; only the
    /// control side touches it.
    control: Mutex<(Config, u64, Overlays)>,
    flow_seed: u64,
    reports: Vec<String>,
    events: Mutex<EventQueue>,
    /// Keeps configured keys' sequence reservations ahead of use.
    keeper: Option<JoinHandle<()>>,
    /// IKE datagrams from the workers, and to worker 0.
    services: ServiceQueues,
    /// Load-balancer backends' health and drain, by (service, backend
    /// `addr:port`), merged into every apply; locked after `control`.
    lb_state: Mutex<std::collections::BTreeMap<(String, String), LbBackendState>>,
}

/// Run-time state of one load-balancer backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LbBackendState {
    up: bool,
    drained: bool,
}

/// A change to one load-balancer backend ([`Engine::set_lb_backend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbChange {
    /// The health checker's verdict.
    Health {
        /// Whether it answers.
        up: bool,
    },
    /// The operator's drain (true) or undrain (false).
    Drain(bool),
}

/// The embedder's end of the workers' event channel.
#[derive(Debug)]
struct EventQueue {
    rx: std::sync::mpsc::Receiver<EngineEvent>,
    /// Events already passed on. Every worker's inbound SA counts its own
    /// traffic, so several may report the same SA: the embedder hears it
    /// once. A handful per SA ever, so a list does.
    seen: Vec<EngineEvent>,
}

impl Engine {
    /// Validates `config`, takes over its interfaces with AF_XDP and starts
    /// the workers. `path` names the configuration in messages.
    pub fn start(config: Config, path: &str) -> Result<Engine, EngineError> {
        let flow_seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let tables = Tables::build(&config, path, 1, flow_seed, None, kernel_link)?;
        let e = &config.engine;
        // Each port's fill ring starts with up to half of its share of the
        // frames (the rest serve TX and refills); fewer frames than that
        // leave part of every RX ring without a buffer behind it.
        let wanted = 2 * u64::from(e.rx_ring) * tables.ports.len() as u64;
        if u64::from(e.frames) < wanted {
            tracing::warn!(
                frames = e.frames,
                wanted,
                "engine.frames is below 2 x rx_ring x interfaces: bursts may be dropped as rx_no_frame"
            );
        }
        let pcfg = PortSetConfig {
            umem: UmemConfig {
                frame_count: e.frames,
                ..UmemConfig::default()
            },
            bind: match e.bind {
                BindConfig::Auto => BindPolicy::Auto,
                BindConfig::Copy => BindPolicy::ForceCopy,
                BindConfig::ZeroCopy => BindPolicy::ForceZeroCopy,
            },
            xdp_mode: match e.xdp_mode {
                XdpModeConfig::Native => XdpMode::Native,
                XdpModeConfig::Generic => XdpMode::Generic,
            },
            rings: RingSizes {
                rx: e.rx_ring,
                fill: e.rx_ring,
                tx: e.tx_ring,
                completion: e.tx_ring,
            },
            rx_batch: e.batch as u32,
            ..PortSetConfig::default()
        };
        // One program per interface, shared by the workers serving its
        // queues; attached before any socket so nothing is lost meanwhile
        // (frames pass to the kernel until a queue's socket is in the map).
        let mut programs = Vec::with_capacity(tables.ports.len());
        for p in &tables.ports {
            let prog = XdpProgram::attach(p.link.ifindex, pcfg.xdp_mode, &pcfg.pass_ethertypes)
                .map_err(|source| EngineError::Xdp {
                    interface: p.name.clone(),
                    source,
                })?;
            programs.push(Arc::new(prog));
        }
        let shared = Arc::new(SharedTables::new(tables));
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(e.workers);
        let mut reports = Vec::new();
        let mut contexts = Vec::with_capacity(e.workers);
        let (event_tx, event_rx) = events::channel();
        let services = ServiceQueues::new();
        for w in 0..e.workers {
            let snapshot = shared.load_full();
            let specs: Vec<PortSpec> = snapshot
                .ports
                .iter()
                .zip(&programs)
                .map(|(p, prog)| {
                    PortSpec::new(p.link.ifindex, w as u32).with_program(Arc::clone(prog))
                })
                .collect();
            let ports = PortSet::open(&pcfg, &specs).map_err(|source| EngineError::Xdp {
                interface: snapshot
                    .ports
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                source,
            })?;
            reports.push(format!("worker {w}: {}", ports.report()));
            let taps = if w == 0 && e.host_punt {
                let mut taps = Vec::with_capacity(snapshot.ports.len());
                for p in &snapshot.ports {
                    let addrs = host_addresses(p);
                    let tap =
                        HostTap::open(&p.name, p.link.mac, p.mtu, &addrs).map_err(|source| {
                            EngineError::HostPath {
                                interface: p.name.clone(),
                                source,
                            }
                        })?;
                    taps.push(Some(tap));
                }
                taps
            } else {
                (0..snapshot.ports.len()).map(|_| None).collect()
            };
            let counters = Arc::new(SharedCounters::new(snapshot.ports.len()));
            let status = Arc::new(WorkerStatus::default());
            let doorbell = Arc::new(Doorbell::new().map_err(|e| EngineError::Thread(w, e))?);
            contexts.push(WorkerContext {
                id: w,
                ports,
                tables: Arc::clone(&shared),
                counters: Arc::clone(&counters),
                stop: Arc::clone(&stop),
                core: e.cores.get(w).copied(),
                poll: e.poll,
                punt_limit: (e.host_punt_rate, e.host_punt_burst),
                taps,
                status: Arc::clone(&status),
                events: event_tx.clone(),
                services: (
                    services.to_owner.0.clone(),
                    (w == 0).then(|| services.to_worker.1.clone()),
                ),
                dns: (
                    services.dns_to_owner.0.clone(),
                    Arc::clone(&services.dns_bell),
                ),
                doorbell: Arc::clone(&doorbell),
            });
            workers.push(WorkerHandle {
                thread: None,
                counters,
                status,
                doorbell,
            });
        }
        // The programs stay attached while any port set holds them.
        drop(programs);
        for (w, ctx) in contexts.into_iter().enumerate() {
            let started = std::thread::Builder::new()
                .name(format!("strait-w{w}"))
                .spawn(move || worker::run(ctx))
                .map_err(|e| EngineError::Thread(w, e))
                .and_then(|thread| {
                    let priority = e.realtime_priority;
                    let r = match priority {
                        0 => Ok(()),
                        p => crate::sys::set_fifo(&thread, p).map_err(|source| {
                            EngineError::Scheduling {
                                worker: w,
                                priority: p,
                                source,
                            }
                        }),
                    };
                    workers[w].thread = Some(thread);
                    r
                });
            if let Err(err) = started {
                // The workers already running stop before their ports close.
                halt(&stop, &mut workers);
                return Err(err);
            }
        }
        let keeper = {
            let (tables, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("strait-sa".into())
                .spawn(move || keep_sa_state(&tables, &stop))
                .map_err(EngineError::Keeper)
        };
        let keeper = match keeper {
            Ok(k) => Some(k),
            Err(err) => {
                halt(&stop, &mut workers);
                return Err(err);
            }
        };
        Ok(Engine {
            keeper,
            services,
            path: path.to_owned(),
            tables: shared,
            stop,
            workers,
            control: Mutex::new((config, 2, Overlays::default())),
            flow_seed,
            reports,
            events: Mutex::new(EventQueue {
                rx: event_rx,
                seen: Vec::new(),
            }),
            lb_state: Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    /// IKE datagrams the workers received for our addresses (with `[ike]`
    /// configured); the key exchange reads them here. Clones share one
    /// queue.
    pub fn service_datagrams(&self) -> crossbeam::channel::Receiver<ServiceDatagram> {
        self.services.to_owner.1.clone()
    }

    /// Queues a datagram to send from one of our addresses (worker 0 sends
    /// it within a millisecond, routed by the dataplane's tables). False
    /// when the queue is full.
    pub fn send_service(&self, datagram: ServiceDatagram) -> bool {
        self.send_services(std::iter::once(datagram)) == 1
    }

    /// [`Engine::send_service`] for several datagrams, waking worker 0
    /// once; how many were queued (the rest found the queue full).
    pub fn send_services(&self, datagrams: impl IntoIterator<Item = ServiceDatagram>) -> usize {
        let mut queued = 0;
        for d in datagrams {
            if self.services.to_worker.0.try_send(d).is_err() {
                break;
            }
            queued += 1;
        }
        if queued > 0 {
            // Worker 0 sends them; it may be waiting while idle.
            if let Some(w) = self.workers.first() {
                w.doorbell.ring();
            }
        }
        queued
    }

    /// Takes the UDP queries to `[dns] listen`'s IPv4 endpoints off the
    /// host path: from now on the workers queue them here (at most
    /// [`crate::services::DNS_QUEUE`] waiting, policed per interface like
    /// the host path) and call `bell` after each batch that queued any;
    /// answers go back with [`Engine::send_services`]. Queries over TCP,
    /// IPv6, or out of a tunnel still reach the host's sockets.
    pub fn dns_datagrams(
        &self,
        bell: impl Fn() + Send + Sync + 'static,
    ) -> crossbeam::channel::Receiver<ServiceDatagram> {
        self.services
            .dns_bell
            .store(Some(Arc::new(crate::services::Bell::new(bell))));
        self.services.dns_to_owner.1.clone()
    }

    /// The outer addresses of every tunnel's peer: configured, learned
    /// when a tunnel floats, and each `[[ike.peer]]`'s `remote` before its
    /// tunnel exists. Routing one of them into a tunnel would send the
    /// tunnel's own packets into itself; route sources that learn
    /// addresses at run time (DNS answers) leave them out.
    pub fn tunnel_peers(&self) -> Vec<std::net::IpAddr> {
        let tables = self.tables.load_full();
        let mut peers: Vec<std::net::IpAddr> = tables
            .tunnels
            .iter()
            .flat_map(|t| [t.remote.0, t.peer().0])
            .map(std::net::IpAddr::V4)
            .collect();
        {
            let control = self.control.lock().expect("control lock");
            if let Some(ike) = &control.0.ike {
                peers.extend(
                    ike.peer
                        .iter()
                        .filter_map(|p| p.remote.parse::<std::net::IpAddr>().ok()),
                );
            }
        }
        peers.sort_unstable();
        peers.dedup();
        peers
    }

    /// Moves the events reported since the last call into `out` (oldest
    /// first) and returns how many. The workers notice SA lifetime events
    /// at most 500 ms late; call this about as often (the daemon does every
    /// 50 ms). Each event is delivered once, to whichever caller drains it;
    /// about a thousand wait at most, newer ones are dropped meanwhile.
    pub fn poll_events(&self, out: &mut Vec<EngineEvent>) -> usize {
        let mut q = self.events.lock().expect("event queue lock");
        let before = out.len();
        while let Ok(e) = q.rx.try_recv() {
            if !q.seen.contains(&e) {
                q.seen.push(e.clone());
                out.push(e);
            }
        }
        out.len() - before
    }

    /// How each worker's ports were bound (zero-copy or copy, XDP mode).
    pub fn bind_reports(&self) -> &[String] {
        &self.reports
    }

    /// The configuration file's name, as given at start.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Checks `config` as [`Engine::start`] would (content, interfaces
    /// present in this network namespace) without taking anything over:
    /// what `straitd --check` runs.
    pub fn check(config: &Config, path: &str) -> Result<(), ConfigError> {
        Tables::build_in(
            config,
            path,
            0,
            0,
            None,
            kernel_link,
            crate::sastore::StoreMode::ReadOnly,
        )
        .map(|_| ())
    }

    /// Generation of the tables in force; every accepted change publishes
    /// the next one.
    pub fn generation(&self) -> u64 {
        self.tables.load().generation
    }

    /// The interfaces served, in configuration order (the order the `port`
    /// of [`NeighbourInfo`] indexes).
    pub fn interfaces(&self) -> Vec<InterfaceInfo> {
        self.tables
            .load()
            .ports
            .iter()
            .map(|p| InterfaceInfo {
                name: p.name.clone(),
                ifindex: p.link.ifindex,
                mac: p.link.mac,
                mtu: p.mtu,
                addresses: p
                    .v4
                    .iter()
                    .map(|(a, l)| (std::net::IpAddr::V4(*a), *l))
                    .chain(p.v6.iter().map(|(a, l)| (std::net::IpAddr::V6(*a), *l)))
                    .collect(),
            })
            .collect()
    }

    /// Every route in force (connected, local and static), one line each,
    /// sorted, egress interfaces by name.
    pub fn routes(&self) -> Vec<String> {
        let t = self.tables.load();
        let mut routes: Vec<String> = t.routes.routes().map(|r| r.to_string()).collect();
        routes.sort();
        // Egress ids are port indexes, then tunnels: show their names. The
        // highest index first, so `egress 1` is not taken for the start of
        // `egress 12`.
        let mut names: Vec<(usize, String)> = t
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| (i, format!("dev {}", p.name)))
            .chain(
                t.tunnels
                    .iter()
                    .map(|tun| (tun.egress.index(), format!("tunnel {}", tun.name))),
            )
            .collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.0));
        routes
            .into_iter()
            .map(|mut r| {
                for (i, name) in &names {
                    r = r.replace(&format!("egress {i}"), name);
                }
                r
            })
            .collect()
    }

    /// The NAT rules in force, in configuration order.
    pub fn nat_rules(&self) -> Vec<NatRuleInfo> {
        self.tables.load().nat.infos.clone()
    }

    /// The name of the NAT rule `id` in force, `None` once it is removed
    /// (its sessions live on until they expire).
    pub fn nat_rule_name(&self, id: strait_nat::RuleId) -> Option<String> {
        self.tables.load().nat.rule_name(id).map(str::to_owned)
    }

    /// Each worker's last NAT snapshot: sessions, capacity, counters
    /// (published by the workers; a fraction of a second old).
    pub fn nat_snapshots(&self) -> Vec<NatSnapshot> {
        self.tables.load().nat.status.snapshots()
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.control.lock().expect("control lock").0.clone()
    }

    /// Validates `config` completely and publishes its tables; workers move
    /// to them at their next batch without stopping. The interfaces and the
    /// `[engine]` section are fixed for the engine's life: changing them is
    /// refused (restart instead). On error nothing changes.
    pub fn apply(&self, config: Config) -> Result<u64, ConfigError> {
        let mut control = self.control.lock().expect("control lock");
        self.apply_locked(&mut control, config)
    }

    /// One step of a lossless rekey of `tunnel` (what key exchange calls):
    /// install the new inbound SA, let the peer switch, switch outbound,
    /// retire the old inbound SA. Each step is a table swap; packets sealed
    /// with either SA keep opening while both are installed.
    pub fn rekey(&self, tunnel: &str, step: RekeyStep) -> Result<u64, ConfigError> {
        let mut control = self.control.lock().expect("control lock");
        let next = control
            .0
            .with_rekey(tunnel, step)
            .map_err(|reason| ConfigError::Invalid {
                path: self.path.clone(),
                span: None,
                item: format!("tunnel {tunnel}"),
                reason,
            })?;
        self.apply_locked(&mut control, next)
    }

    /// Adds a static route (validated with the rest of the configuration,
    /// published with one swap). Changes made at run time last until the
    /// next reload of the file.
    pub fn add_route(&self, route: RouteConfig) -> Result<u64, ConfigError> {
        let item = format!("route {}", route.prefix);
        self.edit(item, |c| {
            c.routes.push(route);
            Ok(())
        })
    }

    /// Removes the static route for `prefix` (written as in the
    /// configuration or in any equivalent form, e.g. `10.9.0.0/16`).
    pub fn delete_route(&self, prefix: &str) -> Result<u64, ConfigError> {
        let want = prefix.parse::<strait_fib::IpCidr>().ok();
        self.edit(format!("route {prefix}"), |c| {
            let at = c
                .routes
                .iter()
                .position(|r| {
                    r.prefix == prefix
                        || (want.is_some() && r.prefix.parse::<strait_fib::IpCidr>().ok() == want)
                })
                .ok_or_else(|| "no such static route".to_owned())?;
            c.routes.remove(at);
            Ok(())
        })
    }

    /// Appends a NAT rule (matched after the existing ones).
    pub fn add_nat_rule(&self, rule: NatRuleConfig) -> Result<u64, ConfigError> {
        let item = format!("nat rule {}", rule.name);
        self.edit(item, |c| {
            c.nat.push(rule);
            Ok(())
        })
    }

    /// Removes the NAT rule called `name`; its sessions expire as idle.
    pub fn delete_nat_rule(&self, name: &str) -> Result<u64, ConfigError> {
        self.edit(format!("nat rule {name}"), |c| {
            let at = c
                .nat
                .iter()
                .position(|r| r.name == name)
                .ok_or_else(|| "no such rule".to_owned())?;
            c.nat.remove(at);
            Ok(())
        })
    }

    /// Changes a copy of the running configuration with `change` and
    /// applies it whole; on any error the running one stays.
    fn edit(
        &self,
        item: String,
        change: impl FnOnce(&mut Config) -> Result<(), String>,
    ) -> Result<u64, ConfigError> {
        let mut control = self.control.lock().expect("control lock");
        let mut next = control.0.clone();
        change(&mut next).map_err(|reason| ConfigError::Invalid {
            path: self.path.clone(),
            span: None,
            item,
            reason,
        })?;
        self.apply_locked(&mut control, next)
    }

    /// Replaces the tunnels and routes kept in force beside the
    /// configuration (what a key exchange negotiated) and applies them
    /// with the configuration in force; later applies, reloads included,
    /// keep merging them. On error the previous overlay stays. This is the
    /// key exchange's part: [`Engine::set_overlay_part`] with `"ike"`.
    pub fn set_overlay(&self, next: Overlay) -> Result<u64, ConfigError> {
        self.set_overlay_part(OVERLAY_IKE, next)
    }

    /// Replaces one owner's part of the overlay (`"ike"`: negotiated
    /// tunnels; `"dns"`: addresses answered for accelerated names) and
    /// applies all parts with the configuration in force. Each owner
    /// changes only its own part; on error the previous part stays.
    pub fn set_overlay_part(&self, owner: &str, next: Overlay) -> Result<u64, ConfigError> {
        let mut control = self.control.lock().expect("control lock");
        let previous = control.2.parts.insert(owner.to_owned(), next);
        let config = control.0.clone();
        let result = self.apply_locked(&mut control, config);
        if result.is_err() {
            match previous {
                Some(p) => control.2.parts.insert(owner.to_owned(), p),
                None => control.2.parts.remove(owner),
            };
        }
        result
    }

    /// Changes one backend of the load balancer `service` (health or
    /// drain) and republishes the tables: its Maglev table is rebuilt over
    /// the backends that are up and not drained; sessions, so established
    /// flows, are untouched. The state survives reloads of the file.
    pub fn set_lb_backend(
        &self,
        service: &str,
        backend: &str,
        change: LbChange,
    ) -> Result<u64, ConfigError> {
        let mut control = self.control.lock().expect("control lock");
        let item = format!("load balancer {service}");
        let invalid = |reason: String| ConfigError::Invalid {
            path: self.path.clone(),
            span: None,
            item: item.clone(),
            reason,
        };
        let lb = control
            .0
            .load_balancers
            .iter()
            .find(|l| l.name == service)
            .ok_or_else(|| invalid("no such load balancer".into()))?;
        let want: Option<std::net::SocketAddrV4> = backend.parse().ok();
        let address = lb
            .backends
            .iter()
            .map(|b| &b.address)
            .find(|a| *a == backend || (want.is_some() && a.parse().ok() == want))
            .cloned()
            .ok_or_else(|| invalid(format!("no backend {backend}")))?;
        let key = (service.to_owned(), address);
        let old = {
            let mut states = self.lb_state.lock().expect("lb state lock");
            let entry = states.entry(key.clone()).or_insert(LbBackendState {
                up: true,
                drained: false,
            });
            let old = *entry;
            match change {
                LbChange::Health { up } => entry.up = up,
                LbChange::Drain(d) => entry.drained = d,
            }
            if *entry == old {
                return Ok(control.1.saturating_sub(1));
            }
            old
        };
        let config = control.0.clone();
        let result = self.apply_locked(&mut control, config);
        if result.is_err() {
            self.lb_state
                .lock()
                .expect("lb state lock")
                .insert(key, old);
        }
        result
    }

    /// The load-balanced services as the workers use them now, with each
    /// backend's live sessions (from the sessions the workers last
    /// published, at most 10 000 per worker).
    pub fn load_balancers(&self) -> Vec<crate::tables::LbInfo> {
        let tables = self.tables.load_full();
        let mut lbs = tables.nat.lbs.clone();
        if lbs.is_empty() {
            return lbs;
        }
        for snap in tables.nat.status.snapshots() {
            for s in &snap.sessions {
                if let Some(lb) = lbs.iter_mut().find(|l| l.id == s.rule) {
                    if let Some(b) = lb.backends.iter_mut().find(|b| b.endpoint == s.inside) {
                        b.sessions += 1;
                    }
                }
            }
        }
        lbs
    }

    /// The tunnels' Security Associations as the workers use them now.
    pub fn security_associations(&self) -> Vec<TunnelSas> {
        let tables = self.tables.load_full();
        let counters = self.counters();
        tables
            .tunnels
            .iter()
            .map(|t| {
                let (peer, peer_port) = t.peer();
                let egress = tables.ports.iter().find(|p| p.owns_v4(t.local));
                let port_counters =
                    egress.and_then(|p| counters.iter().find(|(n, _)| *n == p.name));
                TunnelSas {
                    tunnel: t.name.clone(),
                    local: t.local,
                    peer,
                    peer_port: t.local_port.map(|_| peer_port),
                    outbound: SaSummary {
                        spi: t.out_spec.spi,
                        cipher: cipher_name(t.out_spec.cipher),
                        esn: t.out_spec.esn,
                    },
                    inbound: t
                        .in_specs
                        .iter()
                        .map(|s| SaSummary {
                            spi: s.spi,
                            cipher: cipher_name(s.cipher),
                            esn: s.esn,
                        })
                        .collect(),
                    sealed_bytes: t.out_sa.bytes_published(),
                    egress_counters: port_counters.map(|(_, c)| *c),
                }
            })
            .collect()
    }

    fn apply_locked(
        &self,
        control: &mut (Config, u64, Overlays),
        config: Config,
    ) -> Result<u64, ConfigError> {
        let (current, next_gen, overlay) = control;
        if config.engine != current.engine {
            return Err(ConfigError::Invalid {
                path: self.path.clone(),
                span: None,
                item: "[engine]".into(),
                reason: "changes to workers, cores, XDP or polling need a restart".into(),
            });
        }
        if config.metrics != current.metrics {
            return Err(ConfigError::Invalid {
                path: self.path.clone(),
                span: None,
                item: "[metrics]".into(),
                reason: "changing the metrics endpoint needs a restart".into(),
            });
        }
        let names = |c: &Config| {
            c.interfaces
                .iter()
                .map(|i| i.name.clone())
                .collect::<Vec<_>>()
        };
        if names(&config) != names(current) {
            return Err(ConfigError::Invalid {
                path: self.path.clone(),
                span: None,
                item: "[[interface]]".into(),
                reason: "adding, removing or reordering interfaces needs a restart".into(),
            });
        }
        let old = self.tables.load_full();
        let mut merged = overlay.merged(&config);
        {
            let states = self.lb_state.lock().expect("lb state lock");
            for lb in &mut merged.load_balancers {
                for b in &mut lb.backends {
                    if let Some(st) = states.get(&(lb.name.clone(), b.address.clone())) {
                        b.up = st.up;
                        b.drained = st.drained;
                    }
                }
            }
        }
        let tables = Tables::build(
            &merged,
            &self.path,
            *next_gen,
            self.flow_seed,
            Some(&old),
            |name| {
                old.port_by_name(name)
                    .map(|p| p.link.clone())
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
            },
        )?;
        let generation = tables.generation;
        // The host stack behind each TAP answers for the interface's
        // addresses: it follows a reload too.
        let taps: Vec<_> = if config.engine.host_punt {
            old.ports
                .iter()
                .zip(&tables.ports)
                .map(|(o, n)| (n.name.clone(), host_addresses(o), host_addresses(n)))
                .filter(|(_, o, n)| o != n)
                .collect()
        } else {
            Vec::new()
        };
        self.tables.publish(tables);
        for (name, old_addrs, new_addrs) in taps {
            if let Err(e) = crate::punt::update_addresses(&name, &old_addrs, &new_addrs) {
                tracing::warn!(interface = %name, error = %e, "host path addresses not updated");
            }
        }
        *next_gen += 1;
        *current = config;
        Ok(generation)
    }

    /// Counters per interface, summed over the workers (a few ms old).
    pub fn counters(&self) -> Vec<(String, PortCounters)> {
        let tables = self.tables.load_full();
        tables
            .ports
            .iter()
            .map(|p| {
                let mut sum = PortCounters::default();
                for w in &self.workers {
                    sum.add(&w.counters.read(usize::from(p.id)));
                }
                (p.name.clone(), sum)
            })
            .collect()
    }

    /// Counters per worker and interface.
    pub fn worker_counters(&self) -> Vec<Vec<PortCounters>> {
        let n = self.tables.load().ports.len();
        self.workers
            .iter()
            .map(|w| (0..n).map(|i| w.counters.read(i)).collect())
            .collect()
    }

    /// Every worker's UMEM free-pool gauge (≤ 50 ms old).
    pub fn worker_pools(&self) -> Vec<PoolGauge> {
        self.workers.iter().map(|w| w.counters.pool()).collect()
    }

    /// Every worker's neighbour cache (≤ 500 ms old).
    pub fn neighbours(&self) -> Vec<NeighbourInfo> {
        self.workers
            .iter()
            .flat_map(|w| w.status.read().neighbours)
            .collect()
    }

    /// Per-SA counters summed over the workers (≤ 500 ms old).
    pub fn sa_counters(&self) -> Vec<SaCounterInfo> {
        let snapshots: Vec<_> = self.workers.iter().map(|w| w.status.read()).collect();
        sum_sas(&snapshots)
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Workers whose thread ended while the engine runs (a bug: the
    /// daemon exits so a supervisor restarts it rather than silently
    /// forwarding nothing).
    pub fn dead_workers(&self) -> Vec<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.thread.as_ref().is_some_and(|t| t.is_finished()))
            .map(|(i, _)| i)
            .collect()
    }

    /// Stops the workers, drains their rings, detaches the programs and
    /// frees the UMEMs.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        halt(&self.stop, &mut self.workers);
        if let Some(k) = self.keeper.take() {
            k.thread().unpark();
            let _ = k.join();
            // Nothing seals or opens any more: record exact positions.
            if let Some(store) = &self.tables.load().sa_store {
                store.close();
            }
        }
    }
}

/// The key exchange's overlay part.
pub const OVERLAY_IKE: &str = "ike";

/// Tunnels and routes the engine's owner keeps beside the configuration
/// file's: what a key exchange negotiated (tunnels with negotiated SAs)
/// and what stands in while it has not (blackhole routes, so traffic meant
/// for a tunnel that is down is dropped rather than sent in clear).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    /// Tunnels, after the file's.
    pub tunnels: Vec<crate::config::TunnelConfig>,
    /// Routes, after the file's.
    pub routes: Vec<crate::config::RouteConfig>,
    /// Prefixes added to a tunnel of the file or of any part, by name
    /// (its routes and its inbound policy both grow): e.g. the addresses
    /// a DNS answer gave for an accelerated name. While no such tunnel
    /// exists the prefix is blackholed, never sent in clear; a prefix the
    /// configuration already routes exactly is left as it is.
    pub tunnel_prefixes: Vec<TunnelPrefix>,
}

/// One prefix for one tunnel (see [`Overlay::tunnel_prefixes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPrefix {
    /// The tunnel's name.
    pub tunnel: String,
    /// `addr/len`.
    pub prefix: String,
}

/// Every owner's part, merged in the owners' name order.
#[derive(Debug, Clone, Default)]
struct Overlays {
    parts: std::collections::BTreeMap<String, Overlay>,
}

impl Overlays {
    fn merged(&self, config: &Config) -> Config {
        let mut c = config.clone();
        for part in self.parts.values() {
            c.tunnels.extend(part.tunnels.iter().cloned());
            c.routes.extend(part.routes.iter().cloned());
        }
        let cidr = |p: &str| p.parse::<strait_fib::IpCidr>().ok();
        for tp in self.parts.values().flat_map(|p| &p.tunnel_prefixes) {
            let Some(want) = cidr(&tp.prefix) else {
                continue;
            };
            let routed = c.routes.iter().any(|r| cidr(&r.prefix) == Some(want))
                || c.tunnels
                    .iter()
                    .any(|t| t.prefixes.iter().any(|p| cidr(p) == Some(want)));
            if routed {
                continue;
            }
            match c.tunnels.iter_mut().find(|t| t.name == tp.tunnel) {
                Some(t) => t.prefixes.push(tp.prefix.clone()),
                None => c.routes.push(crate::config::RouteConfig {
                    prefix: tp.prefix.clone(),
                    via: Vec::new(),
                    dev: None,
                    kind: Some("blackhole".into()),
                    spans: Default::default(),
                }),
            }
        }
        c
    }
}

/// An interface's addresses as `ip addr` takes them (`addr/len`).
fn host_addresses(p: &crate::tables::Port) -> Vec<String> {
    p.v4.iter()
        .map(|(a, l)| format!("{a}/{l}"))
        .chain(p.v6.iter().map(|(a, l)| format!("{a}/{l}")))
        .collect()
}

/// The SA state keeper: extends outbound reservations before workers run
/// out and records inbound positions, off the workers (it writes files).
fn keep_sa_state(tables: &SharedTables, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let t = tables.load_full();
        let now = std::time::Instant::now();
        // Negotiated keys live in memory; configured ones, if any, on disk.
        let mut wait = t.sa_memory.maintain(now);
        if let Some(store) = &t.sa_store {
            wait = wait.min(store.maintain(now));
        }
        drop(t);
        // Shutdown unparks the thread, so a long wait never delays it.
        std::thread::park_timeout(wait);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
