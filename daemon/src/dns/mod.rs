//! The split-DNS runtime: `[dns]` on the network services' loop
//! ([`crate::netloop`]). It serves UDP and TCP (RFC 7766) on our
//! addresses: UDP over IPv4 straight from the workers' queue
//! ([`Engine::dns_datagrams`], answers sent by worker 0, no TAP and no
//! socket), the rest through the host path (the interfaces' TAP devices:
//! TCP, IPv6, queries out of a tunnel), drives
//! the sans-I/O `strait-dns` resolver, asks upstreams from a fresh socket
//! per query (a random source port, RFC 5452 §9.2) and over TCP after a
//! truncated answer, and routes the addresses answered for accelerated
//! names into the tunnel before the client sees the answer ([`routes`]).

pub mod routes;
mod view;

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use crossbeam::channel::Receiver;
use mio::event::Event;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::Interest;
use strait_dataplane::{Checked, Config, DnsConfig, Engine, ServiceDatagram};
use strait_dns::{Action, Resolver, Settings, Transport, Zone, Zones};
use strait_names::NameSet;

use crate::netloop::{Ctx, Service};
pub use routes::{AcceleratedRoutes, OVERLAY_DNS};
pub use view::{DnsRouteView, DnsState, DnsView};

/// Token ranges (local to the service).
const UDP_LISTEN: usize = 0;
const TCP_LISTEN: usize = 0x100;
const UP_UDP: usize = 0x1_0000;
const UP_TCP: usize = 0x2_0000;
const CLIENTS: usize = 0x10_0000;
/// A TCP client idle this long is closed (RFC 7766 §6.2.3 suggests
/// seconds, not minutes).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Unsent answers to one TCP client at most before it is dropped.
const TCP_BACKLOG: usize = 256 * 1024;
/// How often expiry and reloads are looked at.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// The view is published at most this often (and only on a change).
const VIEW_EVERY: Duration = Duration::from_millis(50);
/// Queries taken from the workers' queue per wake at most; the loop comes
/// straight back for the rest, so sockets are not starved.
const QUEUE_BATCH: usize = 512;

/// Checks `[dns]` against the rest of the configuration: listen
/// addresses must be ours, accelerated names need a tunnel that exists,
/// zones must hold their records. Syntax, names and records were checked
/// with their lines while the file was parsed.
pub fn check(config: &Config) -> anyhow::Result<()> {
    let Some(dns) = &config.dns else {
        return Ok(());
    };
    let ours: Vec<IpAddr> = config
        .interfaces
        .iter()
        .flat_map(|i| &i.addresses)
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect();
    if dns.listen.is_empty() {
        bail!("[dns] listen: no address to answer on");
    }
    for l in values(&dns.listen) {
        if !ours.contains(&l.ip()) {
            bail!(
                "[dns] listen {l}: {} is not an address of any [[interface]]",
                l.ip()
            );
        }
    }
    if !dns.accelerate.is_empty() {
        let Some(t) = &dns.tunnel else {
            bail!("[dns] accelerate needs tunnel = \"NAME\": the tunnel accelerated addresses are routed into");
        };
        let known = config.tunnels.iter().any(|c| &c.name == t)
            || config
                .ike
                .as_ref()
                .is_some_and(|i| i.peer.iter().any(|p| &p.name == t));
        if !known {
            bail!("[dns] tunnel {t:?}: no [[tunnel]] or [[ike.peer]] has that name");
        }
    }
    if dns.route_ttl[0] == 0 || dns.route_ttl[0] > dns.route_ttl[1] {
        bail!(
            "[dns] route_ttl {:?}: needs [shortest, longest] with 0 < shortest <= longest",
            dns.route_ttl
        );
    }
    if dns.timeout_ms == 0 || dns.max_pending == 0 {
        bail!("[dns] timeout_ms and max_pending must be above 0");
    }
    settings(dns)?;
    Ok(())
}

/// The resolver's settings from `[dns]`.
pub fn settings(dns: &DnsConfig) -> anyhow::Result<Settings> {
    let mut zones = Vec::new();
    for z in &dns.zone {
        let records = checked(&z.records)?;
        let apex = one(&z.name)?;
        zones.push(
            Zone::new(apex, records, z.negative_ttl)
                .map_err(|e| anyhow::anyhow!("[[dns.zone]] {}: {e}", z.name))?,
        );
    }
    let zones = Zones::new(zones).map_err(|e| anyhow::anyhow!("[[dns.zone]]: {e}"))?;
    let mut forward = NameSet::new();
    for f in &dns.forward {
        if f.upstreams.is_empty() {
            bail!("[[dns.forward]] {}: no upstreams", f.suffix);
        }
        let ups: Vec<SocketAddr> = checked(&f.upstreams)?;
        let suffix = one(&f.suffix)?;
        // A suffix stands for itself and everything below it.
        forward.insert(strait_names::Pattern::Exact(suffix.clone()), ups.clone());
        forward.insert(strait_names::Pattern::Wildcard(suffix), ups);
    }
    let accelerate = checked(&dns.accelerate)?
        .into_iter()
        .map(|p| (p, ()))
        .collect();
    Ok(Settings {
        zones,
        forward,
        upstreams: checked(&dns.upstreams)?,
        accelerate,
        cache_entries: dns.cache_entries,
        max_pending: dns.max_pending,
        timeout: Duration::from_millis(dns.timeout_ms),
    })
}

/// A value `Config::parse` checked.
fn one<T: Clone>(c: &Checked<T>) -> anyhow::Result<T> {
    c.value()
        .cloned()
        .map_err(|e| anyhow::anyhow!("[dns]: {e}"))
}

/// Checked values, all of them.
fn checked<T: Clone>(v: &[Checked<T>]) -> anyhow::Result<Vec<T>> {
    v.iter().map(one).collect()
}

/// The values that were accepted (for views and logs).
pub(crate) fn values<T: Clone>(v: &[Checked<T>]) -> Vec<T> {
    v.iter().filter_map(|c| c.value().ok().cloned()).collect()
}

/// Who a reply goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Udp {
        socket: usize,
        peer: SocketAddr,
    },
    /// A query the workers queued: answered from `local` to `remote`.
    Dataplane {
        local: SocketAddrV4,
        remote: SocketAddrV4,
    },
    Tcp {
        conn: usize,
    },
}

/// A TCP client: length-prefixed messages both ways (RFC 1035 §4.2.2).
#[derive(Debug)]
struct TcpClient {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    last: Instant,
}

/// A query to an upstream over TCP.
#[derive(Debug)]
struct UpstreamTcp {
    stream: TcpStream,
    upstream: SocketAddr,
    output: Vec<u8>,
    input: Vec<u8>,
}

/// `[dns]` as a service of the network loop.
pub struct DnsService {
    engine: Arc<Engine>,
    view: Arc<DnsView>,
    config: DnsConfig,
    resolver: Resolver<Client>,
    udp: Vec<UdpSocket>,
    listeners: Vec<TcpListener>,
    clients: HashMap<usize, TcpClient>,
    next_client: usize,
    up_udp: HashMap<u16, (UdpSocket, SocketAddr)>,
    up_tcp: HashMap<u16, UpstreamTcp>,
    routes: AcceleratedRoutes,
    route_errors: u64,
    next_housekeeping: Instant,
    next_view: Instant,
    shown: Option<(strait_dns::Stats, usize, usize, usize)>,
    generation: u64,
    buf: Vec<u8>,
    /// Queries from the workers, and the answers to hand back to them
    /// (sent once per wake).
    queued: Receiver<ServiceDatagram>,
    outbox: Vec<ServiceDatagram>,
}

impl std::fmt::Debug for DnsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsService")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

impl DnsService {
    /// Binds `[dns] listen` (UDP and TCP) now, while binding port 53 is
    /// still allowed; `None` without `[dns]`.
    /// Queries over UDP/IPv4 come from the workers instead of the sockets
    /// from now on; `waker` wakes the loop the service runs on when they
    /// queue some.
    pub fn bind(
        engine: Arc<Engine>,
        view: Arc<DnsView>,
        waker: Arc<mio::Waker>,
    ) -> anyhow::Result<Option<DnsService>> {
        let config = engine.config();
        let Some(dns) = config.dns.clone() else {
            return Ok(None);
        };
        check(&config)?;
        let mut udp = Vec::new();
        let mut listeners = Vec::new();
        for l in checked(&dns.listen)? {
            udp.push(UdpSocket::bind(l).with_context(|| format!("[dns] listen {l} (UDP)"))?);
            listeners
                .push(TcpListener::bind(l).with_context(|| format!("[dns] listen {l} (TCP)"))?);
        }
        let own = engine
            .interfaces()
            .into_iter()
            .flat_map(|i| i.addresses)
            .collect();
        let routes =
            AcceleratedRoutes::new(dns.tunnel.clone().unwrap_or_default(), dns.route_ttl, own);
        let resolver = Resolver::new(settings(&dns)?);
        let queued = engine.dns_datagrams(move || {
            let _ = waker.wake();
        });
        tracing::info!(
            listen = ?values(&dns.listen),
            zones = dns.zone.len(),
            accelerate = dns.accelerate.len(),
            "DNS forwarder"
        );
        Ok(Some(DnsService {
            generation: engine.generation(),
            engine,
            view,
            config: dns,
            resolver,
            udp,
            listeners,
            clients: HashMap::new(),
            next_client: 0,
            up_udp: HashMap::new(),
            up_tcp: HashMap::new(),
            routes,
            route_errors: 0,
            next_housekeeping: Instant::now(),
            next_view: Instant::now(),
            shown: None,
            buf: vec![0u8; 65_535],
            queued,
            outbox: Vec::new(),
        }))
    }

    fn random_id() -> u16 {
        rand::random()
    }

    /// Carries out what the resolver said.
    fn act(&mut self, ctx: &mut Ctx<'_>, action: Action<Client>) {
        match action {
            Action::Reply {
                client,
                bytes,
                accelerated,
            } => {
                if !accelerated.is_empty()
                    && self
                        .routes
                        .learn(&accelerated, &self.engine.tunnel_peers(), ctx.now)
                {
                    // Routed before the client can use the answer.
                    self.publish_routes();
                }
                self.reply(ctx, client, &bytes);
            }
            Action::Query {
                id,
                upstream,
                tcp: false,
                bytes,
            } => {
                self.drop_upstream(ctx, id);
                let any: SocketAddr = if upstream.is_ipv4() {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let sent = UdpSocket::bind(any).and_then(|mut s| {
                    s.connect(upstream)?;
                    s.send(&bytes)?;
                    ctx.registry.register(
                        &mut s,
                        ctx.token(UP_UDP + usize::from(id)),
                        Interest::READABLE,
                    )?;
                    Ok(s)
                });
                match sent {
                    Ok(s) => {
                        self.up_udp.insert(id, (s, upstream));
                    }
                    Err(e) => tracing::debug!(%upstream, error = %e, "DNS query not sent"),
                }
            }
            Action::Query {
                id,
                upstream,
                tcp: true,
                bytes,
            } => {
                self.drop_upstream(ctx, id);
                let started = TcpStream::connect(upstream).and_then(|mut s| {
                    ctx.registry.register(
                        &mut s,
                        ctx.token(UP_TCP + usize::from(id)),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    Ok(s)
                });
                match started {
                    Ok(stream) => {
                        let mut output = (bytes.len() as u16).to_be_bytes().to_vec();
                        output.extend_from_slice(&bytes);
                        self.up_tcp.insert(
                            id,
                            UpstreamTcp {
                                stream,
                                upstream,
                                output,
                                input: Vec::new(),
                            },
                        );
                    }
                    Err(e) => tracing::debug!(%upstream, error = %e, "DNS TCP query not sent"),
                }
            }
        }
    }

    fn drop_upstream(&mut self, ctx: &mut Ctx<'_>, id: u16) {
        if let Some((mut s, _)) = self.up_udp.remove(&id) {
            let _ = ctx.registry.deregister(&mut s);
        }
        if let Some(mut t) = self.up_tcp.remove(&id) {
            let _ = ctx.registry.deregister(&mut t.stream);
        }
    }

    fn reply(&mut self, ctx: &mut Ctx<'_>, client: Client, bytes: &[u8]) {
        match client {
            Client::Udp { socket, peer } => {
                if let Some(s) = self.udp.get(socket) {
                    let _ = s.send_to(bytes, peer);
                }
            }
            Client::Dataplane { local, remote } => self.outbox.push(ServiceDatagram {
                local,
                remote,
                payload: bytes.to_vec(),
            }),
            Client::Tcp { conn } => {
                let Some(c) = self.clients.get_mut(&conn) else {
                    return;
                };
                if c.output.len() + bytes.len() > TCP_BACKLOG {
                    self.close_client(ctx, conn);
                    return;
                }
                c.output
                    .extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                c.output.extend_from_slice(bytes);
                self.flush_client(ctx, conn);
            }
        }
    }

    fn publish_routes(&mut self) {
        if let Err(e) = self
            .engine
            .set_overlay_part(OVERLAY_DNS, self.routes.overlay())
        {
            self.route_errors += 1;
            tracing::warn!(error = %e, "routes from DNS answers not applied");
        }
    }

    fn udp_ready(&mut self, ctx: &mut Ctx<'_>, socket: usize) {
        for _ in 0..256 {
            let Some(s) = self.udp.get(socket) else {
                return;
            };
            let (n, peer) = match s.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            };
            let query = self.buf[..n].to_vec();
            let client = Client::Udp { socket, peer };
            let mut ids = Self::random_id;
            if let Some(a) = self
                .resolver
                .query(client, &query, Transport::Udp, ctx.now, &mut ids)
            {
                self.act(ctx, a);
            }
        }
    }

    /// Answers what the workers queued, a batch at a time; `true` if more
    /// are waiting.
    fn take_queued(&mut self, ctx: &mut Ctx<'_>) -> bool {
        for _ in 0..QUEUE_BATCH {
            let Ok(d) = self.queued.try_recv() else {
                return false;
            };
            let client = Client::Dataplane {
                local: d.local,
                remote: d.remote,
            };
            let mut ids = Self::random_id;
            if let Some(a) =
                self.resolver
                    .query(client, &d.payload, Transport::Udp, ctx.now, &mut ids)
            {
                self.act(ctx, a);
            }
        }
        !self.queued.is_empty()
    }

    /// Hands the answers of this wake to worker 0 at once.
    fn flush_outbox(&mut self) {
        if !self.outbox.is_empty() {
            // A full queue drops the rest: the clients retry.
            self.engine.send_services(self.outbox.drain(..));
        }
    }

    fn accept(&mut self, ctx: &mut Ctx<'_>, listener: usize) {
        loop {
            let Some(l) = self.listeners.get(listener) else {
                return;
            };
            let (mut stream, _) = match l.accept() {
                Ok(x) => x,
                Err(_) => return,
            };
            if self.clients.len() >= self.config.tcp_clients {
                // Refused by closing: the client retries elsewhere.
                continue;
            }
            let conn = self.next_client;
            self.next_client = (self.next_client + 1) % (UP_TCP_LIMIT);
            if ctx
                .registry
                .register(&mut stream, ctx.token(CLIENTS + conn), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            self.clients.insert(
                conn,
                TcpClient {
                    stream,
                    input: Vec::new(),
                    output: Vec::new(),
                    last: ctx.now,
                },
            );
        }
    }

    fn client_ready(&mut self, ctx: &mut Ctx<'_>, conn: usize, event: &Event) {
        if event.is_writable() {
            self.flush_client(ctx, conn);
        }
        if !event.is_readable() && !event.is_read_closed() {
            return;
        }
        let mut closed = false;
        {
            let Some(c) = self.clients.get_mut(&conn) else {
                return;
            };
            c.last = ctx.now;
            loop {
                match c.stream.read(&mut self.buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        c.input.extend_from_slice(&self.buf[..n]);
                        if c.input.len() > 2 * strait_dns::MAX_TCP_MESSAGE {
                            closed = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        // Every whole message read so far (pipelined queries, RFC 7766 §6.2.1.1).
        loop {
            let Some(c) = self.clients.get_mut(&conn) else {
                return;
            };
            if c.input.len() < 2 {
                break;
            }
            let len = usize::from(u16::from_be_bytes([c.input[0], c.input[1]]));
            if c.input.len() < 2 + len {
                break;
            }
            let query: Vec<u8> = c.input.drain(..2 + len).skip(2).collect();
            let mut ids = Self::random_id;
            if let Some(a) = self.resolver.query(
                Client::Tcp { conn },
                &query,
                Transport::Tcp,
                ctx.now,
                &mut ids,
            ) {
                self.act(ctx, a);
            }
        }
        if closed {
            // Answers still owed are written first when possible.
            self.flush_client(ctx, conn);
            self.close_client(ctx, conn);
        }
    }

    fn flush_client(&mut self, ctx: &mut Ctx<'_>, conn: usize) {
        let Some(c) = self.clients.get_mut(&conn) else {
            return;
        };
        while !c.output.is_empty() {
            match c.stream.write(&c.output) {
                Ok(0) => break,
                Ok(n) => {
                    c.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.close_client(ctx, conn);
                    return;
                }
            }
        }
        let interest = if c.output.is_empty() {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        let _ = ctx
            .registry
            .reregister(&mut c.stream, ctx.token(CLIENTS + conn), interest);
    }

    fn close_client(&mut self, ctx: &mut Ctx<'_>, conn: usize) {
        if let Some(mut c) = self.clients.remove(&conn) {
            let _ = ctx.registry.deregister(&mut c.stream);
        }
    }

    fn upstream_udp_ready(&mut self, ctx: &mut Ctx<'_>, id: u16) {
        let Some((s, upstream)) = self.up_udp.get(&id) else {
            return;
        };
        let upstream = *upstream;
        let n = match s.recv(&mut self.buf) {
            Ok(n) => n,
            Err(_) => return,
        };
        // The socket is connected to the upstream; the ID must be ours.
        if n < 2 || self.buf[..2] != id.to_be_bytes() {
            return;
        }
        let answer = self.buf[..n].to_vec();
        self.drop_upstream(ctx, id);
        if let Some(a) = self
            .resolver
            .upstream_answer(id, upstream, &answer, false, ctx.now)
        {
            self.act(ctx, a);
        }
    }

    fn upstream_tcp_ready(&mut self, ctx: &mut Ctx<'_>, id: u16, event: &Event) {
        let mut done: Option<Vec<u8>> = None;
        let mut failed = false;
        {
            let Some(t) = self.up_tcp.get_mut(&id) else {
                return;
            };
            if event.is_writable() && !t.output.is_empty() {
                match t.stream.write(&t.output) {
                    Ok(n) => {
                        t.output.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => failed = true,
                }
            }
            if event.is_readable() || event.is_read_closed() {
                loop {
                    match t.stream.read(&mut self.buf) {
                        Ok(0) => {
                            failed = true;
                            break;
                        }
                        Ok(n) => t.input.extend_from_slice(&self.buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                    if t.input.len() >= 2 {
                        let len = usize::from(u16::from_be_bytes([t.input[0], t.input[1]]));
                        if t.input.len() >= 2 + len {
                            done = Some(t.input[2..2 + len].to_vec());
                            break;
                        }
                    }
                }
            }
        }
        let upstream = self.up_tcp.get(&id).map(|t| t.upstream);
        if let (Some(answer), Some(upstream)) = (done, upstream) {
            self.drop_upstream(ctx, id);
            if let Some(a) = self
                .resolver
                .upstream_answer(id, upstream, &answer, true, ctx.now)
            {
                self.act(ctx, a);
            }
        } else if failed {
            // The resolver's timeout moves on to the next upstream.
            self.drop_upstream(ctx, id);
        }
    }

    fn housekeeping(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        // TCP clients idle too long.
        let idle: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.last) > TCP_IDLE)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            self.close_client(ctx, k);
        }
        // A reload of the file: new zones, forwarding, accelerated names.
        let generation = self.engine.generation();
        if generation != self.generation {
            self.generation = generation;
            if let Some(dns) = self.engine.config().dns {
                if dns != self.config {
                    if dns.listen != self.config.listen {
                        tracing::warn!("[dns] listen changed: it takes effect at the next restart");
                    }
                    match settings(&dns) {
                        Ok(s) => {
                            self.resolver.set_settings(s);
                            let tunnel = dns.tunnel.clone().unwrap_or_default();
                            if self.routes.configure(tunnel, dns.route_ttl) {
                                self.publish_routes();
                            }
                            self.config = dns;
                            tracing::info!("[dns] reloaded");
                        }
                        Err(e) => tracing::error!(error = %e, "[dns] not reloaded"),
                    }
                }
            }
        }
        // Expired routes, unless a NAT session still goes there.
        if self.routes.next_expiry().is_some_and(|t| t <= now) {
            let in_use: HashSet<IpAddr> = self
                .engine
                .nat_snapshots()
                .iter()
                .flat_map(|s| &s.sessions)
                .map(|s| IpAddr::V4(s.outside.addr))
                .collect();
            if self.routes.expire(now, &in_use) {
                self.publish_routes();
            }
        }
        self.shown = None;
    }

    /// Publishes the view when something changed (and at every
    /// housekeeping round, for the routes' remaining lives).
    fn publish_view(&mut self, now: Instant) {
        let seen = (
            self.resolver.stats(),
            self.routes.entries().len(),
            self.resolver.cache_len(),
            self.clients.len(),
        );
        if self.shown == Some(seen) {
            return;
        }
        self.shown = Some(seen);
        self.view.set(DnsState::new(
            &self.config,
            &self.resolver,
            &self.routes,
            self.route_errors,
            self.clients.len(),
            now,
        ));
    }
}

/// Client connection numbers wrap below this.
const UP_TCP_LIMIT: usize = 1 << 30;

impl Service for DnsService {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn start(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
        for (i, s) in self.udp.iter_mut().enumerate() {
            ctx.registry
                .register(s, ctx.token(UDP_LISTEN + i), Interest::READABLE)?;
        }
        for (i, l) in self.listeners.iter_mut().enumerate() {
            ctx.registry
                .register(l, ctx.token(TCP_LISTEN + i), Interest::READABLE)?;
        }
        Ok(())
    }

    fn ready(&mut self, ctx: &mut Ctx<'_>, local: usize, event: &Event) {
        match local {
            l if l >= CLIENTS => self.client_ready(ctx, l - CLIENTS, event),
            l if l >= UP_TCP => self.upstream_tcp_ready(ctx, (l - UP_TCP) as u16, event),
            l if l >= UP_UDP => self.upstream_udp_ready(ctx, (l - UP_UDP) as u16),
            l if l >= TCP_LISTEN => self.accept(ctx, l - TCP_LISTEN),
            l => self.udp_ready(ctx, l - UDP_LISTEN),
        }
    }

    fn tick(&mut self, ctx: &mut Ctx<'_>) -> Option<Instant> {
        let more = self.take_queued(ctx);
        let mut timed_out = false;
        for a in self.resolver.tick(ctx.now) {
            timed_out = true;
            self.act(ctx, a);
        }
        // Sockets of queries the resolver gave up on: looked for when its
        // timers acted and once per housekeeping, not on every wake (a
        // scan of every outstanding query).
        if timed_out || ctx.now >= self.next_housekeeping {
            let waiting: Vec<u16> = self
                .up_udp
                .keys()
                .chain(self.up_tcp.keys())
                .copied()
                .filter(|id| !self.resolver.is_pending(*id))
                .collect();
            for id in waiting {
                self.drop_upstream(ctx, id);
            }
        }
        if ctx.now >= self.next_housekeeping {
            self.next_housekeeping = ctx.now + HOUSEKEEPING;
            self.housekeeping(ctx);
        }
        if ctx.now >= self.next_view {
            self.next_view = ctx.now + VIEW_EVERY;
            self.publish_view(ctx.now);
        }
        self.flush_outbox();
        if more {
            return Some(ctx.now);
        }
        let next = self
            .resolver
            .next_deadline()
            .map_or(self.next_housekeeping, |d| d.min(self.next_housekeeping))
            .min(self.next_view);
        Some(next)
    }
}
