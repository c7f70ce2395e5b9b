//! The SNI/Host forward proxy (`[proxy]`): a service on the network
//! loop (`netloop`) that accepts TCP clients, reads the server name their
//! stream opens with (`strait-sni`: the TLS ClientHello's `server_name`,
//! or the HTTP/1 `Host`), checks it against the allow/deny names, asks
//! the resolver for its address, connects to it from the egress address
//! on the listener's port, sends the head it read and then relays bytes
//! both ways. Nothing of the TLS session is terminated: the proxy sees
//! only the clear ClientHello, as nginx's `ssl_preread` does.
//!
//! ```text
//! accept ─► Head (≤ 16 KiB, head_timeout) ─► refused: TLS alert / HTTP 403
//!             │ allowed name
//!             ▼
//!          Resolving (remembered answer, or a UDP query sent again half-way
//!          through resolve_timeout) ─► Connecting (connect_timeout)
//!             ─► Relay (a 16 KiB buffer each way, half-close, idle_timeout)
//! ```
//!
//! Every refusal and failure has a counter (`straitctl show proxy`,
//! `strait_proxy_*` metrics).

mod lookup;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mio::event::Event;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::Interest;
use serde::Serialize;
use strait_dataplane::ProxyPlan;
use strait_sni::{sniff, ServerName, Sniff, MAX_HEAD};

use crate::netloop::{Ctx, Service};

/// Local token of the resolver socket; listeners are 0..n.
const RESOLVER: usize = 1 << 20;
/// Connection `slot` has tokens `CONNS + 2 * slot` (client) and `+ 1`
/// (upstream).
const CONNS: usize = 1 << 21;
/// Bytes buffered per direction of a relayed connection.
const PIPE: usize = 16 * 1024;
/// How long a refused client is given to read our answer.
const LINGER: Duration = Duration::from_secs(2);
/// Names whose addresses the proxy remembers at most.
const MAX_ANSWERS: usize = 4096;
/// The longest an answer is kept, whatever its TTL.
const MAX_ANSWER_TTL: u32 = 3600;

/// The proxy's counters, shared with the control socket and metrics.
#[derive(Debug, Default)]
pub struct ProxyStats {
    accepted: AtomicU64,
    active: AtomicU64,
    over_capacity: AtomicU64,
    relayed_tls: AtomicU64,
    relayed_http: AtomicU64,
    refused_name: AtomicU64,
    no_name: AtomicU64,
    bad_head: AtomicU64,
    head_timeout: AtomicU64,
    client_gone: AtomicU64,
    resolve_failed: AtomicU64,
    resolve_cached: AtomicU64,
    connect_failed: AtomicU64,
    looped: AtomicU64,
    idle_closed: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// The counters at one moment (`show proxy`, metrics).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ProxyCounts {
    /// Clients accepted.
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Clients closed on accept: `max_connections` were open.
    pub over_capacity: u64,
    /// Connections relayed after a ClientHello.
    pub relayed_tls: u64,
    /// Connections relayed after an HTTP request head.
    pub relayed_http: u64,
    /// Refused: the name is denied or not allowed (TLS alert
    /// unrecognized_name / HTTP 403).
    pub refused_name: u64,
    /// Refused: the head names no server.
    pub no_name: u64,
    /// Closed: neither TLS nor HTTP/1, malformed, or over 16 KiB.
    pub bad_head: u64,
    /// Closed: no complete head within `head_timeout`.
    pub head_timeout: u64,
    /// The client closed before its head was complete.
    pub client_gone: u64,
    /// The name did not resolve (error, no address, no answer in time).
    pub resolve_failed: u64,
    /// Names answered from the proxy's cache of the resolver's answers
    /// (kept for their TTL, at most an hour), without a query.
    pub resolve_cached: u64,
    /// The upstream refused or did not accept in time.
    pub connect_failed: u64,
    /// Refused: the name resolved to one of the proxy's own listeners.
    pub looped: u64,
    /// Relayed connections closed after `idle_timeout` without traffic.
    pub idle_closed: u64,
    /// Bytes relayed from clients to upstreams (heads included).
    pub bytes_up: u64,
    /// Bytes relayed from upstreams to clients.
    pub bytes_down: u64,
}

impl ProxyStats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// A snapshot.
    pub fn counts(&self) -> ProxyCounts {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProxyCounts {
            accepted: r(&self.accepted),
            active: r(&self.active),
            over_capacity: r(&self.over_capacity),
            relayed_tls: r(&self.relayed_tls),
            relayed_http: r(&self.relayed_http),
            refused_name: r(&self.refused_name),
            no_name: r(&self.no_name),
            bad_head: r(&self.bad_head),
            head_timeout: r(&self.head_timeout),
            client_gone: r(&self.client_gone),
            resolve_failed: r(&self.resolve_failed),
            resolve_cached: r(&self.resolve_cached),
            connect_failed: r(&self.connect_failed),
            looped: r(&self.looped),
            idle_closed: r(&self.idle_closed),
            bytes_up: r(&self.bytes_up),
            bytes_down: r(&self.bytes_down),
        }
    }
}

/// The running proxy's counters, once one is bound in this process.
static STATS: OnceLock<Arc<ProxyStats>> = OnceLock::new();

/// The counters of the proxy running in this process, if any.
pub fn counts() -> Option<ProxyCounts> {
    STATS.get().map(|s| s.counts())
}

/// `straitctl show proxy [--json]`.
pub fn show(json: bool) -> String {
    let Some(c) = counts() else {
        return if json {
            "null\n".into()
        } else {
            "proxy: not configured\n".into()
        };
    };
    if json {
        return serde_json::to_string(&c).unwrap_or_default() + "\n";
    }
    let v = serde_json::to_value(c).unwrap_or_default();
    let mut out = String::new();
    if let Some(map) = v.as_object() {
        for (k, v) in map {
            out.push_str(&format!("{k:<16} {v}\n"));
        }
    }
    out
}

/// The `strait_proxy_*` families.
pub(crate) fn render_metrics(out: &mut String, c: &ProxyCounts) {
    use crate::metrics::family;
    let one = |v: u64| vec![(String::new(), v)];
    family(
        out,
        "strait_proxy_accepted_total",
        "counter",
        "Proxy clients accepted.",
        one(c.accepted),
    );
    family(
        out,
        "strait_proxy_connections",
        "gauge",
        "Proxy connections open.",
        one(c.active),
    );
    family(
        out,
        "strait_proxy_relayed_total",
        "counter",
        "Proxy connections relayed to their upstream, by the protocol of their head.",
        vec![
            ("protocol=\"tls\"".into(), c.relayed_tls),
            ("protocol=\"http\"".into(), c.relayed_http),
        ],
    );
    let reasons = [
        ("name", c.refused_name),
        ("no_name", c.no_name),
        ("bad_head", c.bad_head),
        ("head_timeout", c.head_timeout),
        ("client_gone", c.client_gone),
        ("resolve_failed", c.resolve_failed),
        ("connect_failed", c.connect_failed),
        ("loop", c.looped),
        ("over_capacity", c.over_capacity),
    ];
    family(
        out,
        "strait_proxy_refusals_total",
        "counter",
        "Proxy connections refused or closed before relaying, by reason.",
        reasons.iter().map(|(r, v)| (format!("reason=\"{r}\""), *v)),
    );
    family(
        out,
        "strait_proxy_resolve_cached_total",
        "counter",
        "Proxy names answered from its cache of the resolver's answers.",
        one(c.resolve_cached),
    );
    family(
        out,
        "strait_proxy_idle_closed_total",
        "counter",
        "Relayed proxy connections closed after idle_timeout.",
        one(c.idle_closed),
    );
    family(
        out,
        "strait_proxy_bytes_total",
        "counter",
        "Bytes relayed by the proxy (up: client to upstream).",
        vec![
            ("direction=\"up\"".into(), c.bytes_up),
            ("direction=\"down\"".into(), c.bytes_down),
        ],
    );
}

/// A reload keeps the running proxy: its sockets were bound at start.
pub fn check_reload(
    old: &strait_dataplane::Config,
    new: &strait_dataplane::Config,
) -> Result<(), String> {
    if old.proxy != new.proxy {
        return Err("[proxy]: a change needs a restart (its listeners are bound at start)".into());
    }
    Ok(())
}

/// Which protocol the head was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tls,
    Http,
}

/// What the client is told when refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// The name is not ours to relay: TLS alert unrecognized_name (112,
    /// RFC 8446 §6.2), HTTP 403.
    Name,
    /// No server named: TLS unrecognized_name, HTTP 400 (RFC 9112 §3.2:
    /// a request without Host).
    NoName,
    /// The upstream could not be reached: TLS internal_error (80),
    /// HTTP 502.
    Upstream,
}

impl Refusal {
    fn message(self, kind: Kind) -> &'static [u8] {
        // An alert record: type 21, version 3.3, length 2, level fatal (2),
        // description (RFC 8446 §6).
        match (kind, self) {
            (Kind::Tls, Refusal::Name | Refusal::NoName) => &[21, 3, 3, 0, 2, 2, 112],
            (Kind::Tls, Refusal::Upstream) => &[21, 3, 3, 0, 2, 2, 80],
            (Kind::Http, Refusal::Name) => {
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            (Kind::Http, Refusal::NoName) => {
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            (Kind::Http, Refusal::Upstream) => {
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Resolving,
    Connecting,
    Relay,
    /// Refused: our answer is flushed, then the client's bytes are
    /// discarded until it closes (so it reads the answer, not a reset).
    Refusing,
}

/// One direction's bytes in flight.
#[derive(Debug)]
struct Pipe {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The source closed its side.
    eof: bool,
    /// Our write side to the destination is shut (after `eof`, flushed).
    shut: bool,
}

impl Pipe {
    fn new() -> Pipe {
        Pipe {
            buf: vec![0u8; PIPE].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            shut: false,
        }
    }

    /// Reads what `src` has into free space; `Ok(bytes read)`.
    fn fill(&mut self, src: &mut TcpStream) -> io::Result<usize> {
        let mut total = 0;
        while !self.eof && self.end < self.buf.len() {
            match src.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.end += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// Writes what is buffered to `dst`, shutting its write side once the
    /// source ended and all is written; `Ok(bytes written)`.
    fn flush(&mut self, dst: &mut TcpStream) -> io::Result<usize> {
        let mut total = 0;
        while self.start < self.end {
            match dst.write(&self.buf[self.start..self.end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.start += n;
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.eof && !self.shut {
                self.shut = true;
                let _ = dst.shutdown(Shutdown::Write);
            }
        }
        Ok(total)
    }

    fn done(&self) -> bool {
        self.shut
    }
}

#[derive(Debug)]
struct Conn {
    client: TcpStream,
    upstream: Option<TcpStream>,
    /// The listener's port: the upstream's too.
    port: u16,
    state: State,
    kind: Kind,
    name: Option<ServerName>,
    /// Client → upstream; holds the head until the upstream is connected.
    up: Pipe,
    /// Upstream → client (or our refusal).
    down: Pipe,
    deadline: Instant,
    query: Option<u16>,
    /// The query was sent a second time (half-way through
    /// `resolve_timeout`, RFC 1035 §4.2.1: UDP may lose it).
    retried: bool,
}

/// The proxy service.
pub struct Proxy {
    plan: ProxyPlan,
    listeners: Vec<TcpListener>,
    resolver: UdpSocket,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Outstanding queries: id → connection slot.
    queries: HashMap<u16, usize>,
    /// The resolver's answers, name → address and until when it holds
    /// (the chain's smallest TTL): a name the proxy connected to a moment
    /// ago is not asked again, as nginx's `resolver` caches.
    answers: HashMap<String, (IpAddr, Instant)>,
    stats: Arc<ProxyStats>,
    /// No deadline is earlier than this (scans are skipped before it).
    next_scan: Option<Instant>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("listen", &self.plan.listen)
            .field("conns", &(self.conns.len() - self.free.len()))
            .finish()
    }
}

impl Proxy {
    /// Binds the listeners and the resolver socket (before privileges are
    /// dropped: low ports).
    pub fn bind(plan: ProxyPlan) -> anyhow::Result<Proxy> {
        let mut listeners = Vec::new();
        for addr in &plan.listen {
            let l = std::net::TcpListener::bind(addr)
                .with_context(|| format!("[proxy] listen {addr}"))?;
            l.set_nonblocking(true)?;
            listeners.push(TcpListener::from_std(l));
        }
        let local: SocketAddr = match (plan.egress, plan.resolver) {
            (Some(ip), _) => SocketAddr::new(ip, 0),
            (None, SocketAddr::V4(_)) => "0.0.0.0:0".parse()?,
            (None, SocketAddr::V6(_)) => "[::]:0".parse()?,
        };
        // One socket for every query: its port is the kernel's random
        // ephemeral choice, and each query's id is random.
        let resolver = std::net::UdpSocket::bind(local)
            .with_context(|| format!("[proxy] resolver socket on {local}"))?;
        resolver
            .connect(plan.resolver)
            .with_context(|| format!("[proxy] resolver {}", plan.resolver))?;
        resolver.set_nonblocking(true)?;
        let stats = Arc::clone(STATS.get_or_init(Arc::default));
        Ok(Proxy {
            plan,
            listeners,
            resolver: UdpSocket::from_std(resolver),
            conns: Vec::new(),
            free: Vec::new(),
            queries: HashMap::new(),
            answers: HashMap::new(),
            stats,
            next_scan: None,
        })
    }

    /// The counters.
    pub fn stats(&self) -> Arc<ProxyStats> {
        Arc::clone(&self.stats)
    }

    fn open(&self) -> usize {
        self.conns.len() - self.free.len()
    }

    fn schedule(&mut self, at: Instant) {
        self.next_scan = Some(self.next_scan.map_or(at, |n| n.min(at)));
    }

    fn accept(&mut self, ctx: &mut Ctx<'_>, index: usize) {
        loop {
            let (client, _) = match self.listeners[index].accept() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "proxy: accept failed");
                    return;
                }
            };
            ProxyStats::add(&self.stats.accepted, 1);
            if self.open() >= self.plan.max_connections {
                ProxyStats::add(&self.stats.over_capacity, 1);
                continue;
            }
            let port = self.plan.listen[index].port();
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let mut conn = Conn {
                client,
                upstream: None,
                port,
                state: State::Head,
                kind: Kind::Tls,
                name: None,
                up: Pipe::new(),
                down: Pipe::new(),
                deadline: ctx.now + self.plan.head_timeout,
                query: None,
                retried: false,
            };
            if let Err(e) = ctx.registry.register(
                &mut conn.client,
                ctx.token(CONNS + 2 * slot),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(error = %e, "proxy: registering a client failed");
                self.free.push(slot);
                continue;
            }
            self.schedule(conn.deadline);
            self.conns[slot] = Some(conn);
            ProxyStats::add(&self.stats.active, 1);
            // Its first bytes may already be there (edge-triggered).
            self.drive(ctx, slot);
        }
    }

    fn close(&mut self, ctx: &mut Ctx<'_>, slot: usize) {
        let Some(mut conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let _ = ctx.registry.deregister(&mut conn.client);
        if let Some(u) = conn.upstream.as_mut() {
            let _ = ctx.registry.deregister(u);
        }
        if let Some(id) = conn.query {
            self.queries.remove(&id);
        }
        self.free.push(slot);
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Answers the client `refusal` and lets it read it.
    fn refuse(&mut self, ctx: &mut Ctx<'_>, slot: usize, refusal: Refusal) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if let Some(mut u) = conn.upstream.take() {
            let _ = ctx.registry.deregister(&mut u);
        }
        if let Some(id) = conn.query.take() {
            self.queries.remove(&id);
        }
        let msg = refusal.message(conn.kind);
        conn.down.buf[..msg.len()].copy_from_slice(msg);
        conn.down.start = 0;
        conn.down.end = msg.len();
        conn.down.eof = true;
        conn.state = State::Refusing;
        conn.deadline = ctx.now + LINGER;
        let d = conn.deadline;
        self.schedule(d);
        self.drive(ctx, slot);
    }

    /// Moves connection `slot` on as far as its sockets allow.
    fn drive(&mut self, ctx: &mut Ctx<'_>, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        match conn.state {
            State::Head => self.read_head(ctx, slot),
            State::Resolving => {
                // Nothing to do until the answer; a client that closes now
                // is seen once relaying (its EOF stays readable).
            }
            State::Connecting => self.check_connected(ctx, slot),
            State::Relay => self.relay(ctx, slot),
            State::Refusing => {
                let flushed = conn.down.flush(&mut conn.client);
                let mut sink = [0u8; 4096];
                let gone = loop {
                    match conn.client.read(&mut sink) {
                        Ok(0) => break true,
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break true,
                    }
                };
                if flushed.is_err() || (gone && conn.down.done()) {
                    self.close(ctx, slot);
                }
            }
        }
    }

    fn read_head(&mut self, ctx: &mut Ctx<'_>, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if conn.up.fill(&mut conn.client).is_err() {
            ProxyStats::add(&self.stats.client_gone, 1);
            return self.close(ctx, slot);
        }
        let head = &conn.up.buf[..conn.up.end.min(MAX_HEAD)];
        let (kind, name) = match sniff(head) {
            Sniff::NeedMore if conn.up.eof => {
                ProxyStats::add(&self.stats.client_gone, 1);
                return self.close(ctx, slot);
            }
            Sniff::NeedMore => return,
            Sniff::Tls(n) => (Kind::Tls, Some(n)),
            Sniff::Http(n) => (Kind::Http, Some(n)),
            Sniff::TlsWithoutName => (Kind::Tls, None),
            Sniff::HttpWithoutName => (Kind::Http, None),
            Sniff::Invalid(e) => {
                tracing::debug!(error = %e, "proxy: head refused");
                ProxyStats::add(&self.stats.bad_head, 1);
                return self.close(ctx, slot);
            }
        };
        conn.kind = kind;
        let Some(name) = name else {
            ProxyStats::add(&self.stats.no_name, 1);
            return self.refuse(ctx, slot, Refusal::NoName);
        };
        conn.name = Some(name);
        let allowed = name
            .as_str()
            .parse::<strait_names::Name>()
            .ok()
            .and_then(|n| self.plan.names.get(&n).map(|m| *m.value))
            .unwrap_or(false);
        if !allowed {
            tracing::debug!(name = %name, "proxy: name refused");
            ProxyStats::add(&self.stats.refused_name, 1);
            return self.refuse(ctx, slot, Refusal::Name);
        }
        self.resolve(ctx, slot, name);
    }

    fn resolve(&mut self, ctx: &mut Ctx<'_>, slot: usize, name: ServerName) {
        if let Some(&(ip, until)) = self.answers.get(name.as_str()) {
            if until > ctx.now {
                ProxyStats::add(&self.stats.resolve_cached, 1);
                return self.connect(ctx, slot, ip);
            }
        }
        let id = loop {
            let id: u16 = rand::random();
            if !self.queries.contains_key(&id) {
                break id;
            }
        };
        let sent = self.send_query(id, name);
        if !sent {
            ProxyStats::add(&self.stats.resolve_failed, 1);
            return self.refuse(ctx, slot, Refusal::Upstream);
        }
        self.queries.insert(id, slot);
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        conn.query = Some(id);
        conn.state = State::Resolving;
        conn.retried = false;
        conn.deadline = ctx.now + self.plan.resolve_timeout / 2;
        let d = conn.deadline;
        self.schedule(d);
    }

    /// Sends the A (AAAA with an IPv6 resolver) query `id` for `name`.
    fn send_query(&self, id: u16, name: ServerName) -> bool {
        lookup::query(id, name.as_str(), self.plan.resolver.is_ipv6())
            .map(|q| self.resolver.send(&q).is_ok())
            .unwrap_or(false)
    }

    fn answers(&mut self, ctx: &mut Ctx<'_>) {
        let mut buf = [0u8; 4096];
        loop {
            let n = match self.resolver.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // E.g. ICMP port unreachable from the resolver: the
                // queries time out.
                Err(_) => return,
            };
            let Some(id) = lookup::response_id(&buf[..n]) else {
                continue;
            };
            let Some(&slot) = self.queries.get(&id) else {
                continue;
            };
            let Some(conn) = self.conns[slot].as_ref() else {
                continue;
            };
            let Some(name) = conn.name else {
                continue;
            };
            match lookup::address(&buf[..n], name.as_str(), self.plan.resolver.is_ipv6()) {
                // Not an answer to our question: keep waiting.
                Err(lookup::LookupError::Malformed) => continue,
                Err(e) => {
                    tracing::debug!(name = %name, error = ?e, "proxy: name did not resolve");
                    self.queries.remove(&id);
                    if let Some(c) = self.conns[slot].as_mut() {
                        c.query = None;
                    }
                    ProxyStats::add(&self.stats.resolve_failed, 1);
                    self.refuse(ctx, slot, Refusal::Upstream);
                }
                Ok((ip, ttl)) => {
                    self.queries.remove(&id);
                    if let Some(c) = self.conns[slot].as_mut() {
                        c.query = None;
                    }
                    self.remember(ctx.now, name, ip, ttl);
                    self.connect(ctx, slot, ip);
                }
            }
        }
    }

    /// Keeps `name`'s address for `ttl` seconds (at most an hour; a zero
    /// TTL is not kept). A full cache first forgets what expired, then
    /// everything: memory stays bounded and the next answers refill it.
    fn remember(&mut self, now: Instant, name: ServerName, ip: IpAddr, ttl: u32) {
        if ttl == 0 {
            return;
        }
        if self.answers.len() >= MAX_ANSWERS && !self.answers.contains_key(name.as_str()) {
            self.answers.retain(|_, (_, until)| *until > now);
            if self.answers.len() >= MAX_ANSWERS {
                self.answers.clear();
            }
        }
        let until = now + Duration::from_secs(u64::from(ttl.min(MAX_ANSWER_TTL)));
        self.answers.insert(name.as_str().to_owned(), (ip, until));
    }

    fn connect(&mut self, ctx: &mut Ctx<'_>, slot: usize, ip: IpAddr) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let target = SocketAddr::new(ip, conn.port);
        if self
            .plan
            .listen
            .iter()
            .any(|l| *l == target || (l.port() == target.port() && l.ip().is_unspecified()))
        {
            ProxyStats::add(&self.stats.looped, 1);
            return self.refuse(ctx, slot, Refusal::Upstream);
        }
        let stream = match connect_from(self.plan.egress, target) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%target, error = %e, "proxy: connect failed");
                return self.connect_failed(ctx, slot);
            }
        };
        let mut stream = TcpStream::from_std(stream);
        if ctx
            .registry
            .register(
                &mut stream,
                ctx.token(CONNS + 2 * slot + 1),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            return self.connect_failed(ctx, slot);
        }
        conn.upstream = Some(stream);
        conn.state = State::Connecting;
        conn.deadline = ctx.now + self.plan.connect_timeout;
        let d = conn.deadline;
        self.schedule(d);
    }

    /// The upstream refused or did not answer in time: counted, the client
    /// refused, and the name's remembered address forgotten, so the next
    /// client for it asks the resolver again.
    fn connect_failed(&mut self, ctx: &mut Ctx<'_>, slot: usize) {
        if let Some(name) = self.conns[slot].as_ref().and_then(|c| c.name) {
            self.answers.remove(name.as_str());
        }
        ProxyStats::add(&self.stats.connect_failed, 1);
        self.refuse(ctx, slot, Refusal::Upstream);
    }

    fn check_connected(&mut self, ctx: &mut Ctx<'_>, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let Some(up) = conn.upstream.as_ref() else {
            return;
        };
        match up.take_error() {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) => {
                return self.connect_failed(ctx, slot);
            }
        }
        match up.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(_) => {
                return self.connect_failed(ctx, slot);
            }
        }
        conn.state = State::Relay;
        let relayed = match conn.kind {
            Kind::Tls => &self.stats.relayed_tls,
            Kind::Http => &self.stats.relayed_http,
        };
        ProxyStats::add(relayed, 1);
        self.relay(ctx, slot);
    }

    fn relay(&mut self, ctx: &mut Ctx<'_>, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let Some(up) = conn.upstream.as_mut() else {
            return;
        };
        let mut moved = false;
        let result = (|| -> io::Result<()> {
            loop {
                let a = conn.up.fill(&mut conn.client)?;
                let b = conn.up.flush(up)?;
                let c = conn.down.fill(up)?;
                let d = conn.down.flush(&mut conn.client)?;
                ProxyStats::add(&self.stats.bytes_up, b as u64);
                ProxyStats::add(&self.stats.bytes_down, d as u64);
                if a + b + c + d == 0 {
                    return Ok(());
                }
                moved = true;
            }
        })();
        let finished = conn.up.done() && conn.down.done();
        if result.is_err() || finished {
            return self.close(ctx, slot);
        }
        if moved {
            conn.deadline = ctx.now + self.plan.idle_timeout;
        }
    }

    /// Closes what is past its deadline; the earliest remaining deadline.
    fn expire(&mut self, ctx: &mut Ctx<'_>) {
        let mut next: Option<Instant> = None;
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_ref() else {
                continue;
            };
            if conn.deadline > ctx.now {
                next = Some(next.map_or(conn.deadline, |n| n.min(conn.deadline)));
                continue;
            }
            match conn.state {
                State::Head => {
                    ProxyStats::add(&self.stats.head_timeout, 1);
                    self.close(ctx, slot);
                }
                State::Resolving if !conn.retried => {
                    // No answer in half the time: ask once more, same id.
                    let (id, name) = (conn.query, conn.name);
                    if let (Some(id), Some(name)) = (id, name) {
                        self.send_query(id, name);
                    }
                    let half = self.plan.resolve_timeout / 2;
                    if let Some(c) = self.conns[slot].as_mut() {
                        c.retried = true;
                        c.deadline = ctx.now + half;
                        let d = c.deadline;
                        next = Some(next.map_or(d, |n| n.min(d)));
                    }
                }
                State::Resolving => {
                    ProxyStats::add(&self.stats.resolve_failed, 1);
                    self.refuse(ctx, slot, Refusal::Upstream);
                }
                State::Connecting => self.connect_failed(ctx, slot),
                State::Relay => {
                    ProxyStats::add(&self.stats.idle_closed, 1);
                    self.close(ctx, slot);
                }
                State::Refusing => self.close(ctx, slot),
            }
            // A refusal set a new deadline.
            if let Some(c) = self.conns[slot].as_ref() {
                next = Some(next.map_or(c.deadline, |n| n.min(c.deadline)));
            }
        }
        self.next_scan = next;
    }
}

/// A non-blocking connect to `target`, from `egress` when given.
fn connect_from(egress: Option<IpAddr>, target: SocketAddr) -> io::Result<std::net::TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(ip) = egress {
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    match socket.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

impl Service for Proxy {
    fn name(&self) -> &'static str {
        "proxy"
    }

    fn start(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            ctx.registry.register(l, ctx.token(i), Interest::READABLE)?;
        }
        ctx.registry
            .register(&mut self.resolver, ctx.token(RESOLVER), Interest::READABLE)?;
        for addr in &self.plan.listen {
            tracing::info!(%addr, "proxy: listening");
        }
        Ok(())
    }

    fn ready(&mut self, ctx: &mut Ctx<'_>, local: usize, _event: &Event) {
        if local < self.listeners.len() {
            self.accept(ctx, local);
        } else if local == RESOLVER {
            self.answers(ctx);
        } else if local >= CONNS {
            self.drive(ctx, (local - CONNS) / 2);
        }
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>) -> Option<Instant> {
        if self.next_scan.is_some_and(|t| t <= ctx.now) {
            self.expire(ctx);
        }
        self.next_scan
    }
}
