//! The load balancer's control side: the health checker (a service on the
//! shared network loop, `netloop.rs`), `straitctl show lb` and `lb
//! drain|undrain`, and the `strait_lb_*` metrics.
//!
//! Checks never run on a worker. Each backend with a `[load_balancer.check]`
//! is probed every `interval_ms` with non-blocking sockets: a TCP connect,
//! an HTTP/1.1 GET judged by `strait_health::http` (status, optional body
//! text, reads bounded), or a DNS query over UDP. Every probe has a
//! deadline of `timeout_ms` from its start, enforced by the loop's timers,
//! so a backend that accepts and then trickles bytes, or sends endless
//! headers, fails the check instead of holding it. `rise` passes in a row
//! bring a backend up, `fall` failures take it down (`strait_health::Health`);
//! each change is logged, counted and handed to the engine
//! (`Engine::set_lb_backend`), which rebuilds the service's Maglev table
//! and publishes it with the next table snapshot. Sessions stay, so
//! established flows keep their backend.
//!
//! Checks leave from the kernel's stack of the daemon's namespace: with the
//! dataplane's host path they go out through the interface facing the
//! backend, from its address (or from `check.source`), the path the
//! service's data takes.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::Interest;
use serde::Serialize;
use strait_dataplane::{CheckKindConfig, Engine, HealthCheckConfig, LbChange, LbInfo};
use strait_health::{dns, http, Health, Transition, Verdict};

use crate::netloop::{Ctx, Service};

/// What the checker last saw of one backend, for `show lb` and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckRecord {
    /// Service name.
    pub service: String,
    /// Backend `addr:port` as configured.
    pub backend: String,
    /// tcp, http or dns.
    pub kind: &'static str,
    /// The checker's verdict on its health.
    pub up: bool,
    /// Whether the last check passed (`None` before the first).
    pub last_passed: Option<bool>,
    /// Why the last failed check failed.
    pub last_error: String,
    /// How long the last check took, in microseconds.
    pub latency_us: Option<u64>,
    /// Checks passed.
    pub passed: u64,
    /// Checks failed.
    pub failed: u64,
    /// Times it went down.
    pub went_down: u64,
    /// Times it came up.
    pub went_up: u64,
}

/// The checker's published records; one per process (the daemon runs one
/// checker), read by the control socket and the metrics thread.
#[derive(Debug, Default)]
pub struct HealthBoard {
    records: Mutex<BTreeMap<(String, String), CheckRecord>>,
}

static BOARD: HealthBoard = HealthBoard {
    records: Mutex::new(BTreeMap::new()),
};

/// The process's health board.
pub fn board() -> &'static HealthBoard {
    &BOARD
}

impl HealthBoard {
    /// Every record, by service and backend.
    pub fn records(&self) -> Vec<CheckRecord> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), CheckRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, service: &str, backend: &str, f: impl FnOnce(&mut CheckRecord)) {
        let mut records = self.lock();
        let r = records
            .entry((service.to_owned(), backend.to_owned()))
            .or_default();
        f(r);
    }

    fn retain(&self, keep: impl Fn(&(String, String)) -> bool) {
        self.lock().retain(|k, _| keep(k));
    }
}

/// A socket of one probe in flight.
#[derive(Debug)]
enum Io {
    Tcp {
        stream: mio::net::TcpStream,
        connected: bool,
        request: Vec<u8>,
        sent: usize,
        answer: Vec<u8>,
    },
    Udp {
        socket: mio::net::UdpSocket,
        id: u16,
    },
}

#[derive(Debug)]
struct Probe {
    started: Instant,
    deadline: Instant,
    io: Io,
}

/// One backend under check.
#[derive(Debug)]
struct Target {
    /// The socket token's local number, unique for the checker's life.
    id: usize,
    service: String,
    backend: String,
    addr: SocketAddr,
    check: HealthCheckConfig,
    health: Health,
    next: Instant,
    probe: Option<Probe>,
}

impl Target {
    fn key(&self) -> (&str, &str, &HealthCheckConfig) {
        (&self.service, &self.backend, &self.check)
    }
}

/// The health checker service.
pub struct HealthChecker {
    engine: Arc<Engine>,
    generation: Option<u64>,
    targets: Vec<Target>,
    next_id: usize,
    queries: u16,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field("targets", &self.targets.len())
            .finish()
    }
}

impl HealthChecker {
    /// A checker for the engine's load balancers (its targets follow the
    /// configuration in force, reloads included).
    pub fn new(engine: Arc<Engine>) -> HealthChecker {
        HealthChecker {
            engine,
            generation: None,
            targets: Vec::new(),
            next_id: 0,
            queries: 0x5eed,
        }
    }

    /// Re-reads the targets when the tables changed: unchanged targets keep
    /// their state and probe.
    fn refresh(&mut self, ctx: &mut Ctx<'_>) {
        let generation = self.engine.generation();
        if self.generation == Some(generation) {
            return;
        }
        self.generation = Some(generation);
        let config = self.engine.config();
        let mut old = std::mem::take(&mut self.targets);
        for lb in &config.load_balancers {
            let Some(check) = &lb.check else { continue };
            for b in &lb.backends {
                let Ok(mut addr) = b.address.parse::<SocketAddr>() else {
                    continue;
                };
                if let Some(port) = check.port {
                    addr.set_port(port);
                }
                if let Some(at) = old
                    .iter()
                    .position(|t| t.key() == (lb.name.as_str(), b.address.as_str(), check))
                {
                    self.targets.push(old.swap_remove(at));
                    continue;
                }
                let id = self.next_id;
                self.next_id += 1;
                board().update(&lb.name, &b.address, |r| {
                    *r = CheckRecord {
                        service: lb.name.clone(),
                        backend: b.address.clone(),
                        kind: kind_name(check.kind),
                        up: true,
                        ..CheckRecord::default()
                    };
                });
                self.targets.push(Target {
                    id,
                    service: lb.name.clone(),
                    backend: b.address.clone(),
                    addr,
                    check: check.clone(),
                    health: Health::new(check.rise, check.fall),
                    next: ctx.now,
                    probe: None,
                });
            }
        }
        for mut t in old {
            if let Some(p) = t.probe.as_mut() {
                deregister(ctx, &mut p.io);
            }
        }
        let keep: Vec<(String, String)> = self
            .targets
            .iter()
            .map(|t| (t.service.clone(), t.backend.clone()))
            .collect();
        board().retain(|k| keep.contains(k));
    }

    fn start_probe(&mut self, ctx: &mut Ctx<'_>, at: usize) {
        self.queries = self.queries.wrapping_add(0x9e37);
        let id = self.queries;
        let t = &mut self.targets[at];
        let source = t
            .check
            .source
            .as_deref()
            .and_then(|s| s.parse::<Ipv4Addr>().ok());
        let token = ctx.token(t.id);
        let io = match open(t, source, id).and_then(|mut io| {
            match &mut io {
                Io::Tcp { stream, .. } => {
                    ctx.registry
                        .register(stream, token, Interest::READABLE | Interest::WRITABLE)?
                }
                Io::Udp { socket, .. } => {
                    ctx.registry.register(socket, token, Interest::READABLE)?
                }
            }
            Ok(io)
        }) {
            Ok(io) => io,
            Err(e) => {
                let started = ctx.now;
                self.finish(ctx, at, started, Err(format!("socket: {e}")));
                return;
            }
        };
        let t = &mut self.targets[at];
        t.probe = Some(Probe {
            started: ctx.now,
            deadline: ctx.now + Duration::from_millis(t.check.timeout_ms),
            io,
        });
        // A UDP query is sent at once; TCP waits for the connect.
        self.drive(ctx, at);
    }

    /// Moves a probe on after readiness; finishes it when decided.
    fn drive(&mut self, ctx: &mut Ctx<'_>, at: usize) {
        let t = &mut self.targets[at];
        let kind = t.check.kind;
        let status = t.check.expect_status;
        let body = t.check.expect_body.clone();
        let Some(probe) = t.probe.as_mut() else {
            return;
        };
        let started = probe.started;
        let outcome = match &mut probe.io {
            Io::Tcp {
                stream,
                connected,
                request,
                sent,
                answer,
            } => drive_tcp(
                stream,
                connected,
                request,
                sent,
                answer,
                kind,
                status,
                body.as_deref(),
            ),
            Io::Udp { socket, id } => drive_udp(socket, *id),
        };
        if let Some(result) = outcome {
            self.finish(ctx, at, started, result);
        }
    }

    fn finish(
        &mut self,
        ctx: &mut Ctx<'_>,
        at: usize,
        started: Instant,
        result: Result<(), String>,
    ) {
        let t = &mut self.targets[at];
        if let Some(mut p) = t.probe.take() {
            deregister(ctx, &mut p.io);
        }
        let now = Instant::now();
        let latency = now.saturating_duration_since(started);
        // The next check is due an interval after this one started, so a
        // slow backend is not checked less often.
        t.next = started + Duration::from_millis(t.check.interval_ms);
        if t.next <= now {
            t.next = now;
        }
        let passed = result.is_ok();
        let transition = t.health.record(passed);
        let (service, backend) = (t.service.clone(), t.backend.clone());
        board().update(&service, &backend, |r| {
            r.last_passed = Some(passed);
            r.latency_us = Some(latency.as_micros().min(u128::from(u64::MAX)) as u64);
            match &result {
                Ok(()) => r.passed += 1,
                Err(e) => {
                    r.failed += 1;
                    r.last_error.clone_from(e);
                }
            }
            match transition {
                Transition::WentUp => {
                    r.went_up += 1;
                    r.up = true;
                }
                Transition::WentDown => {
                    r.went_down += 1;
                    r.up = false;
                }
                Transition::Stay => {}
            }
        });
        let up = match transition {
            Transition::Stay => return,
            Transition::WentUp => {
                tracing::info!(service = %service, backend = %backend, "load balancer backend up");
                true
            }
            Transition::WentDown => {
                tracing::warn!(
                    service = %service,
                    backend = %backend,
                    reason = %result.err().unwrap_or_default(),
                    "load balancer backend down"
                );
                false
            }
        };
        if let Err(e) = self
            .engine
            .set_lb_backend(&service, &backend, LbChange::Health { up })
        {
            tracing::error!(service = %service, backend = %backend, error = %e, "backend health not applied");
        }
    }
}

fn kind_name(kind: CheckKindConfig) -> &'static str {
    match kind {
        CheckKindConfig::Tcp => "tcp",
        CheckKindConfig::Http => "http",
        CheckKindConfig::Dns => "dns",
    }
}

fn deregister(ctx: &mut Ctx<'_>, io: &mut Io) {
    let _ = match io {
        Io::Tcp { stream, .. } => ctx.registry.deregister(stream),
        Io::Udp { socket, .. } => ctx.registry.deregister(socket),
    };
}

/// Opens a probe's socket: a non-blocking connect under way, or a
/// connected UDP socket with its query sent.
fn open(t: &Target, source: Option<Ipv4Addr>, id: u16) -> io::Result<Io> {
    let bind = SocketAddr::new(IpAddr::V4(source.unwrap_or(Ipv4Addr::UNSPECIFIED)), 0);
    match t.check.kind {
        CheckKindConfig::Tcp | CheckKindConfig::Http => {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.set_nonblocking(true)?;
            if source.is_some() {
                socket.bind(&bind.into())?;
            }
            match socket.connect(&t.addr.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            let stream = mio::net::TcpStream::from_std(socket.into());
            let request = match t.check.kind {
                CheckKindConfig::Http => http::request(&t.check.path, &t.addr.to_string()),
                _ => Vec::new(),
            };
            Ok(Io::Tcp {
                stream,
                connected: false,
                request,
                sent: 0,
                answer: Vec::new(),
            })
        }
        CheckKindConfig::Dns => {
            let socket = std::net::UdpSocket::bind(bind)?;
            socket.set_nonblocking(true)?;
            socket.connect(t.addr)?;
            let name = t.check.dns_name.as_deref().unwrap_or(".");
            let query = dns::query(id, name)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad dns_name"))?;
            socket.send(&query)?;
            Ok(Io::Udp {
                socket: mio::net::UdpSocket::from_std(socket),
                id,
            })
        }
    }
}

/// `None`: not decided, wait for readiness or the deadline.
#[allow(clippy::too_many_arguments)]
fn drive_tcp(
    stream: &mut mio::net::TcpStream,
    connected: &mut bool,
    request: &[u8],
    sent: &mut usize,
    answer: &mut Vec<u8>,
    kind: CheckKindConfig,
    status: u16,
    body: Option<&str>,
) -> Option<Result<(), String>> {
    if !*connected {
        if let Ok(Some(e)) | Err(e) = stream.take_error() {
            return Some(Err(format!("connect: {e}")));
        }
        match stream.peer_addr() {
            Ok(_) => *connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
            Err(e) => return Some(Err(format!("connect: {e}"))),
        }
        if kind == CheckKindConfig::Tcp {
            return Some(Ok(()));
        }
    }
    while *sent < request.len() {
        match stream.write(&request[*sent..]) {
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(Err(format!("send: {e}"))),
        }
    }
    let mut chunk = [0u8; 4096];
    loop {
        // Never more than the verdict's bound is kept.
        let room = http::MAX_ANSWER
            .saturating_sub(answer.len())
            .min(chunk.len());
        if room == 0 {
            break;
        }
        match stream.read(&mut chunk[..room]) {
            Ok(0) => {
                return Some(decided(http::verdict(answer, true, status, body)));
            }
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                match http::verdict(answer, false, status, body) {
                    Verdict::More => {}
                    v => return Some(decided(v)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(Err(format!("receive: {e}"))),
        }
    }
    Some(decided(http::verdict(answer, false, status, body)))
}

fn drive_udp(socket: &mut mio::net::UdpSocket, id: u16) -> Option<Result<(), String>> {
    let mut buf = [0u8; 1500];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => match dns::verdict(&buf[..n], id) {
                Verdict::More => {}
                v => return Some(decided(v)),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(Err(format!("receive: {e}"))),
        }
    }
}

fn decided(v: Verdict) -> Result<(), String> {
    match v {
        Verdict::Pass => Ok(()),
        Verdict::Fail(e) => Err(e),
        Verdict::More => Err("answer cut short".into()),
    }
}

impl Service for HealthChecker {
    fn name(&self) -> &'static str {
        "lb-health"
    }

    fn start(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.refresh(ctx);
        Ok(())
    }

    fn ready(&mut self, ctx: &mut Ctx<'_>, local: usize, _event: &Event) {
        if let Some(at) = self.targets.iter().position(|t| t.id == local) {
            self.drive(ctx, at);
        }
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>) -> Option<Instant> {
        self.refresh(ctx);
        let mut next: Option<Instant> = None;
        for at in 0..self.targets.len() {
            let now = Instant::now();
            let t = &self.targets[at];
            match &t.probe {
                Some(p) if now >= p.deadline => {
                    let started = p.started;
                    let ms = t.check.timeout_ms;
                    self.finish(ctx, at, started, Err(format!("no answer within {ms} ms")));
                }
                None if now >= t.next => self.start_probe(ctx, at),
                _ => {}
            }
            let t = &self.targets[at];
            let due = t.probe.as_ref().map_or(t.next, |p| p.deadline);
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        next
    }
}

/// `show lb`: services, backends, health, weight, table share, sessions,
/// the last check.
pub fn show(engine: &Engine, json: bool) -> String {
    let lbs = engine.load_balancers();
    let records = board().records();
    let record = |service: &str, backend: &str| {
        records
            .iter()
            .find(|r| r.service == service && r.backend == backend)
    };
    if json {
        let v: Vec<serde_json::Value> = lbs
            .iter()
            .map(|lb| {
                serde_json::json!({
                    "service": lb.name,
                    "protocol": lb.protocol.to_string(),
                    "address": lb.address.to_string(),
                    "table_size": lb.table.size(),
                    "keeping_last": lb.keeping_last,
                    "backends": lb.backends.iter().map(|b| {
                        let backend = b.endpoint.to_string();
                        let r = record(&lb.name, &backend);
                        serde_json::json!({
                            "backend": backend,
                            "weight": b.weight,
                            "health": health_word(b.up, b.drained),
                            "up": b.up,
                            "drained": b.drained,
                            "slots": b.slots,
                            "sessions": b.sessions,
                            "check": r,
                        })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(v));
    }
    let mut out = String::new();
    if lbs.is_empty() {
        out.push_str("no load balancers\n");
        return out;
    }
    for lb in &lbs {
        out.push_str(&format!(
            "{} {} {}{}\n",
            lb.name,
            lb.protocol,
            lb.address,
            if lb.keeping_last {
                " (every backend down: last table kept)"
            } else if lb.table.is_empty() {
                " (no backend: new flows refused)"
            } else {
                ""
            }
        ));
        out.push_str(&format!(
            "  {:<22} {:>6} {:<8} {:>7} {:>8}  check\n",
            "backend", "weight", "health", "share", "sessions"
        ));
        for b in &lb.backends {
            let backend = b.endpoint.to_string();
            let check = match record(&lb.name, &backend) {
                None => "none".to_owned(),
                Some(r) => match (r.last_passed, r.latency_us) {
                    (None, _) => format!("{} pending", r.kind),
                    (Some(true), Some(us)) => {
                        format!("{} ok {:.1} ms", r.kind, us as f64 / 1000.0)
                    }
                    (Some(_), _) => format!("{} failed: {}", r.kind, r.last_error),
                },
            };
            out.push_str(&format!(
                "  {:<22} {:>6} {:<8} {:>6.1}% {:>8}  {}\n",
                backend,
                b.weight,
                health_word(b.up, b.drained),
                f64::from(b.slots) * 100.0 / f64::from(lb.table.size()),
                b.sessions,
                check
            ));
        }
    }
    out
}

fn health_word(up: bool, drained: bool) -> &'static str {
    match (up, drained) {
        (_, true) => "drained",
        (true, false) => "up",
        (false, false) => "down",
    }
}

/// `lb drain|undrain [SERVICE] BACKEND`: no new flows to the backend
/// (existing ones finish), or new flows again.
pub fn drain(engine: &Engine, drain: bool, words: &[&str]) -> Result<u64, String> {
    let (service, backend) = match words {
        [service, backend] => ((*service).to_owned(), *backend),
        [backend] => {
            let config = engine.config();
            let want: Option<SocketAddr> = backend.parse().ok();
            let holding: Vec<&str> = config
                .load_balancers
                .iter()
                .filter(|l| {
                    l.backends.iter().any(|b| {
                        b.address == *backend || (want.is_some() && b.address.parse().ok() == want)
                    })
                })
                .map(|l| l.name.as_str())
                .collect();
            match holding.as_slice() {
                [one] => ((*one).to_owned(), *backend),
                [] => return Err(format!("no load balancer has backend {backend}")),
                more => {
                    return Err(format!(
                        "backend {backend} is in {}: name the service",
                        more.join(", ")
                    ))
                }
            }
        }
        _ => return Err("usage: lb drain|undrain [SERVICE] BACKEND".into()),
    };
    engine
        .set_lb_backend(&service, backend, LbChange::Drain(drain))
        .map_err(|e| e.to_string())
}

/// What the metrics endpoint reports: the services and the check records.
#[derive(Debug, Clone, Default)]
pub struct LbMetrics {
    /// Services as the tables hold them.
    pub services: Vec<LbInfo>,
    /// Check records.
    pub checks: Vec<CheckRecord>,
}

impl LbMetrics {
    /// Reads both now.
    pub fn read(engine: &Engine) -> LbMetrics {
        LbMetrics {
            services: engine.load_balancers(),
            checks: board().records(),
        }
    }
}

/// The `strait_lb_*` families.
pub fn render_metrics(out: &mut String, m: &LbMetrics) {
    use crate::metrics::{escape, family};
    if m.services.is_empty() {
        return;
    }
    let per_backend = |f: &dyn Fn(&strait_dataplane::LbBackendInfo) -> u64| {
        m.services
            .iter()
            .flat_map(|lb| {
                lb.backends.iter().map(|b| {
                    (
                        format!(
                            "service=\"{}\",backend=\"{}\"",
                            escape(&lb.name),
                            b.endpoint
                        ),
                        f(b),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        out,
        "strait_lb_backend_up",
        "gauge",
        "1 when the backend's health checks pass (or it has none).",
        per_backend(&|b| u64::from(b.up)),
    );
    family(
        out,
        "strait_lb_backend_drained",
        "gauge",
        "1 when the backend is drained (no new flows).",
        per_backend(&|b| u64::from(b.drained)),
    );
    family(
        out,
        "strait_lb_backend_weight",
        "gauge",
        "Configured weight.",
        per_backend(&|b| u64::from(b.weight)),
    );
    family(
        out,
        "strait_lb_backend_slots",
        "gauge",
        "Maglev table slots the backend holds (its share of new flows).",
        per_backend(&|b| u64::from(b.slots)),
    );
    family(
        out,
        "strait_lb_backend_sessions",
        "gauge",
        "Live sessions to the backend (from the published session snapshots).",
        per_backend(&|b| b.sessions as u64),
    );
    let per_check = |f: &dyn Fn(&CheckRecord) -> u64| {
        m.checks
            .iter()
            .map(|r| {
                (
                    format!(
                        "service=\"{}\",backend=\"{}\"",
                        escape(&r.service),
                        escape(&r.backend)
                    ),
                    f(r),
                )
            })
            .collect::<Vec<_>>()
    };
    family(
        out,
        "strait_lb_checks_passed_total",
        "counter",
        "Health checks passed.",
        per_check(&|r| r.passed),
    );
    family(
        out,
        "strait_lb_checks_failed_total",
        "counter",
        "Health checks failed.",
        per_check(&|r| r.failed),
    );
    family(
        out,
        "strait_lb_backend_down_total",
        "counter",
        "Times the backend went down.",
        per_check(&|r| r.went_down),
    );
    family(
        out,
        "strait_lb_backend_up_total",
        "counter",
        "Times the backend came back up.",
        per_check(&|r| r.went_up),
    );
    family(
        out,
        "strait_lb_check_latency_microseconds",
        "gauge",
        "Duration of the last health check.",
        per_check(&|r| r.latency_us.unwrap_or(0)),
    );
}
