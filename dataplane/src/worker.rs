//! Poll-mode workers: one thread per RX queue, pinned to a core, owning its
//! AF_XDP ports, frame pool, neighbour cache, counters and (worker 0) the
//! host-path TAPs.
//!
//! The loop works in batches: receive up to a batch from every port, run
//! each frame through the [`Pipeline`], collect frames per egress port, then
//! one transmit (and at most one kick) per port, then completions. The table
//! snapshot is loaded once per batch. Timers (neighbour retries, host path,
//! counter publication) run every millisecond or so, never per packet.

use std::net::{IpAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam::channel::{Receiver, Sender};
use strait_esp::KeepaliveTimer;
use strait_wire::EtherType;
use strait_xdp::{FrameBatch, FrameDesc, PortId, PortSet};

use crate::config::PollConfig;
use crate::counters::{DropReason, PoolGauge, SharedCounters};
use crate::events::EventSender;
use crate::neigh::{RefuseReason, Resolution, TimerAction};
use crate::packet::PacketBuf;
use crate::pipeline::{
    arp_request, fragment_ipv4, fragment_plan, neighbour_solicitation, write_eth, FragmentPlan,
    FragmentTarget, Pipeline, Verdict, ETH_LEN,
};
use crate::punt::HostTap;
use crate::ratelimit::TokenBucket;
use crate::services::{self, ServiceDatagram};
use crate::status::{NeighbourInfo, WorkerStatus};
use crate::tables::{SharedTables, Tables};

/// Everything a worker thread owns.
#[derive(Debug)]
pub struct WorkerContext {
    /// Worker number (= RX queue served).
    pub id: usize,
    /// The AF_XDP ports, one per interface, sharing one UMEM.
    pub ports: PortSet,
    /// Published tables.
    pub tables: Arc<SharedTables>,
    /// Where this worker publishes its counters.
    pub counters: Arc<SharedCounters>,
    /// Set to stop the loop.
    pub stop: Arc<AtomicBool>,
    /// Core to pin to.
    pub core: Option<usize>,
    /// Idle behaviour.
    pub poll: PollConfig,
    /// Host-path TAP per port (worker 0 only).
    pub taps: Vec<Option<HostTap>>,
    /// Frames per second and burst each port hands the host at most.
    pub punt_limit: (u32, u32),
    /// Where this worker publishes its neighbour cache and SA counters.
    pub status: Arc<WorkerStatus>,
    /// Where this worker reports SA lifetime events.
    pub events: EventSender,
    /// IKE for the engine's owner, and (worker 0) what it sends.
    pub services: (Sender<ServiceDatagram>, Option<Receiver<ServiceDatagram>>),
    /// DNS queries to the owner, and the bell it rings its loop with
    /// (empty until it takes them).
    pub dns: (Sender<ServiceDatagram>, Arc<ArcSwapOption<services::Bell>>),
    /// Rung when the worker has work that arrives by no socket: a service
    /// datagram to send, or the stop flag.
    pub doorbell: Arc<Doorbell>,
}

/// Wakes a worker that waits in `poll(2)` while idle (an `eventfd`).
#[derive(Debug)]
pub struct Doorbell {
    fd: std::os::fd::OwnedFd,
}

impl Doorbell {
    /// A new doorbell.
    pub fn new() -> std::io::Result<Self> {
        Ok(Doorbell {
            fd: crate::sys::eventfd()?,
        })
    }

    /// Wakes the worker (or makes its next wait return at once).
    pub fn ring(&self) {
        use std::os::fd::AsFd;
        // A full counter already means "rung": nothing to do on EAGAIN.
        let _ = crate::sys::write(self.fd.as_fd(), &1u64.to_ne_bytes());
    }

    /// Clears the doorbell.
    fn clear(&self) {
        use std::os::fd::AsFd;
        let mut buf = [0u8; 8];
        let _ = crate::sys::read(self.fd.as_fd(), &mut buf);
    }
}

/// How often timers run.
const TIMER_PERIOD: Duration = Duration::from_millis(1);
/// How often the neighbour cache and SA counters are published.
const STATUS_PERIOD: Duration = Duration::from_millis(500);
/// How often counters are published for readers.
const PUBLISH_PERIOD: Duration = Duration::from_millis(50);
/// How often the NAT session snapshot is published for `show nat`.
const NAT_PUBLISH_PERIOD: Duration = Duration::from_millis(500);
/// Adaptive mode: the longest a worker spins after its last frame before
/// it waits in `poll(2)`. It spins about twice the recent gap between
/// arrivals when that is shorter, so a steady stream is caught without a
/// wakeup; a sparse one (gaps beyond this) gets [`MIN_SPIN`].
const MAX_SPIN: Duration = Duration::from_micros(50);
/// Adaptive mode: the shortest spin, for the frames that follow closely
/// (the rest of a burst, an answer).
const MIN_SPIN: Duration = Duration::from_micros(5);
/// Adaptive mode: the longest wait in `poll(2)`; timers (neighbour
/// retries, keepalives, counter publication, NAT expiry) run at least
/// this often while idle.
const MAX_WAIT: Duration = Duration::from_millis(20);

/// Frames a worker reads from one TAP per turn of the host path.
const HOST_BUDGET: usize = 32;

/// The addresses and payload of the IPv4 UDP datagram in an Ethernet
/// frame (one VLAN tag at most, as the L2 stage accepts).
fn service_datagram(frame: &[u8]) -> Option<ServiceDatagram> {
    let l3 = match frame.get(12..14)? {
        [0x81, 0x00] => 18,
        _ => 14,
    };
    let ip = strait_wire::Ipv4Packet::new_checked(frame.get(l3..)?).ok()?;
    let udp = strait_wire::UdpPacket::new_checked(ip.payload()).ok()?;
    Some(ServiceDatagram {
        local: SocketAddrV4::new(ip.dst_addr(), udp.dst_port()),
        remote: SocketAddrV4::new(ip.src_addr(), udp.src_port()),
        payload: udp.payload().to_vec(),
    })
}

/// Whether the frame (one the pipeline called a service datagram) is a
/// query to `[dns] listen` rather than IKE.
fn is_dns_frame(tables: &Tables, frame: &[u8]) -> bool {
    if tables.dns_listen.is_empty() {
        return false;
    }
    let l3 = match frame.get(12..14) {
        Some([0x81, 0x00]) => 18,
        _ => 14,
    };
    match frame.get(l3..).map(strait_wire::Ipv4Packet::new_checked) {
        Some(Ok(ip)) => crate::services::is_dns(&tables.dns_listen, ip.dst_addr(), ip.payload()),
        _ => false,
    }
}

/// Runs the worker until `stop` is set.
pub fn run(mut ctx: WorkerContext) {
    if let Some(core) = ctx.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            tracing::warn!(worker = ctx.id, core, "could not pin worker to core");
        }
    }
    let n_ports = ctx.ports.len();
    let now = Instant::now();
    let icmp = ctx.tables.load().icmp.clone();
    let mut pipeline = Pipeline::new(n_ports, icmp.errors_per_second, icmp.burst, now);
    pipeline.set_worker_index(ctx.id);
    let mut w = Worker {
        pipeline,
        tx: (0..n_ports).map(|_| FrameBatch::new()).collect(),
        generation: 0,
        keepalives: Vec::new(),
        sends_keepalives: ctx.id == 0,
        copy: Box::new([0; 2048]),
        punt_buckets: (0..n_ports)
            .map(|_| TokenBucket::new(ctx.punt_limit.0, ctx.punt_limit.1, now))
            .collect(),
        service_out: ctx.services.0.clone(),
        service_bucket: TokenBucket::new(services::RATE.0, services::RATE.1, now),
        service_in: ctx.services.1.take(),
        dns_out: ctx.dns.0.clone(),
        dns_bell: Arc::clone(&ctx.dns.1),
        dns_queued: false,
    };
    let mut rx = FrameBatch::new();
    let mut next_timer = now;
    let mut next_publish = now;
    let mut next_status = now;
    let mut next_nat_publish = now;
    // Adaptive polling: when the last frame came, and the average gap
    // between receives that brought frames.
    let mut last_rx = now;
    let mut gap_avg = MAX_WAIT;
    let mut ready = [false; WAIT_FDS];
    // Whether this worker serves a host path at all (TAPs or the services
    // queue), and whether its last turn left frames behind.
    let host_path = ctx.taps.iter().any(Option::is_some) || w.service_in.is_some();
    let mut host_busy = false;
    while !ctx.stop.load(Ordering::Relaxed) {
        let tables = ctx.tables.load_full();
        let now = Instant::now();
        if tables.generation != w.generation {
            w.adopt(&tables, now);
        }
        let got = ctx.ports.receive(&mut rx);
        for desc in rx.drain() {
            w.handle(&mut ctx.ports, &ctx.taps, &tables, desc, now);
        }
        w.ring_dns();
        w.release_resolved(&mut ctx.ports, &tables, now);
        w.flush(&mut ctx.ports);
        ctx.ports.poll_completions();

        // The host path is read on every timer tick, on every round that
        // found the rings empty (the worker would only spin) and on every
        // round while it had more than its budget: its frames (a local
        // DNS answer, a proxied stream) wait at most one round, not a tick.
        let host_due = host_busy || got == 0 || now >= next_timer;
        if host_due && host_path {
            host_busy = w.host_path(&mut ctx.ports, &ctx.taps, &tables, now);
            w.flush(&mut ctx.ports);
        }
        if now >= next_timer {
            next_timer = now + TIMER_PERIOD;
            w.timers(&mut ctx.ports, &tables, now);
            w.flush(&mut ctx.ports);
            w.pipeline.nat_timer(&tables, now);
            if now >= next_publish {
                next_publish = now + PUBLISH_PERIOD;
                w.publish(&ctx.ports, &ctx.counters);
            }
            if now >= next_status {
                next_status = now + STATUS_PERIOD;
                let (id, pipeline) = (ctx.id, &w.pipeline);
                ctx.status.publish(|s| {
                    s.neighbours.clear();
                    s.neighbours.extend(pipeline.neighbours.entries().map(
                        |((port, ip), mac, state)| NeighbourInfo {
                            worker: id,
                            port,
                            ip,
                            mac,
                            state,
                        },
                    ));
                    s.sas.clear();
                    pipeline.sa_counters(&mut s.sas);
                });
                let events = &ctx.events;
                w.pipeline.sa_events(&tables, now, |e| events.send(e));
            }
            if now >= next_nat_publish {
                next_nat_publish = now + NAT_PUBLISH_PERIOD;
                w.pipeline.nat_publish(&tables, ctx.id, now);
            }
        }
        if got > 0 {
            // A gap longer than a wait is "sparse" whatever its length:
            // clamping it lets a new steady stream pull the average down
            // within a few dozen arrivals.
            let gap = now.saturating_duration_since(last_rx).min(MAX_WAIT);
            gap_avg = (gap_avg * 7 + gap) / 8;
            last_rx = now;
        } else if ctx.poll == PollConfig::Adaptive
            && now.saturating_duration_since(last_rx) >= spin_window(gap_avg)
            && !ctx.ports.tx_pending()
            && !host_busy
        {
            wait_for_work(&ctx, &mut ready);
            // Whatever woke the worker (a frame, the host path, a service
            // datagram, the timeout), the timers see it now.
            next_timer = Instant::now();
        } else if ctx.poll == PollConfig::Adaptive {
            // Spinning for the next frame: a thread sharing this CPU (the
            // daemon's DNS forwarder or proxy, a second gateway, the
            // generator) runs now instead of after the time slice.
            // Alone on the CPU this returns at once.
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    w.publish(&ctx.ports, &ctx.counters);
    w.pipeline
        .nat_publish(&ctx.tables.load_full(), ctx.id, Instant::now());
    for b in &mut w.tx {
        ctx.ports.drop_batch(b);
    }
    w.pipeline.tick(
        Instant::now() + Duration::from_secs(3600),
        |_| {},
        |desc| ctx.ports.drop_frame(desc),
    );
}

/// Descriptors a waiting worker watches at most: its ports' sockets, its
/// TAPs and the doorbell.
const WAIT_FDS: usize = 64;

/// How long an adaptive worker spins after its last frame.
fn spin_window(gap_avg: Duration) -> Duration {
    if gap_avg <= MAX_SPIN {
        (gap_avg * 2).clamp(MIN_SPIN, MAX_SPIN)
    } else {
        MIN_SPIN
    }
}

/// Waits in `poll(2)` until a port has frames, a TAP has a frame from the
/// host, the doorbell rings or [`MAX_WAIT`] passes. The
/// doorbell is level-triggered: a ring before the wait ends it at once.
fn wait_for_work(ctx: &WorkerContext, ready: &mut [bool; WAIT_FDS]) {
    use std::os::fd::{AsFd, BorrowedFd};
    let bell = ctx.doorbell.fd.as_fd();
    let mut fds: [BorrowedFd<'_>; WAIT_FDS] = [bell; WAIT_FDS];
    let mut n = 1;
    for fd in ctx
        .ports
        .fds()
        .chain(ctx.taps.iter().flatten().map(HostTap::as_fd))
        .take(WAIT_FDS - 1)
    {
        fds[n] = fd;
        n += 1;
    }
    if ctx.stop.load(Ordering::Relaxed) {
        return;
    }
    if crate::sys::wait_readable(&fds[..n], MAX_WAIT, ready).is_err() {
        // poll(2) cannot fail on valid descriptors; if it does, do not
        // turn the worker into a busy loop.
        std::thread::sleep(MIN_SPIN);
    }
    if ready[0] {
        ctx.doorbell.clear();
    }
}

/// Runs `stage` on the packet of `desc` with the whole UMEM frame open
/// (so it may move the packet's start and end), then shrinks the
/// descriptor to the result. `None` if the frame had to be dropped.
fn on_frame(
    ports: &mut PortSet,
    mut desc: FrameDesc,
    stage: impl FnOnce(&mut PacketBuf<'_>) -> Verdict,
) -> Option<(FrameDesc, Verdict)> {
    let umem = ports.umem();
    let head = umem.headroom(&desc);
    let len = desc.len();
    let full = head + len + umem.tailroom(&desc);
    if umem.grow_front(&mut desc, head).is_err() || umem.set_len(&mut desc, full).is_err() {
        ports.drop_frame(desc);
        return None;
    }
    let (verdict, start, plen) = {
        let mut pkt = PacketBuf::new(ports.frame_mut(&desc), head, len);
        let v = stage(&mut pkt);
        (v, pkt.start(), pkt.len())
    };
    let umem = ports.umem();
    if umem.shrink_front(&mut desc, start).is_err() || umem.set_len(&mut desc, plen).is_err() {
        ports.drop_frame(desc);
        return None;
    }
    Some((desc, verdict))
}

/// A neighbour request to send: port, target, unicast MAC when re-probing.
type Solicitation = (u16, IpAddr, Option<[u8; 6]>);

struct Worker {
    pipeline: Pipeline<FrameDesc>,
    tx: Vec<FrameBatch>,
    generation: u64,
    /// Copy of a packet being fragmented (the fragments are written into
    /// frames of the same UMEM).
    copy: Box<[u8; 2048]>,
    /// Each tunnel's NAT-keepalive timer (worker 0 only), on the tables'
    /// epoch.
    keepalives: Vec<Option<KeepaliveTimer>>,
    sends_keepalives: bool,
    /// Polices what each port hands the host (one syscall per frame).
    punt_buckets: Vec<TokenBucket>,
    /// IKE to the engine's owner (policed: each costs an allocation).
    service_out: Sender<ServiceDatagram>,
    service_bucket: TokenBucket,
    /// What the owner sends (worker 0 only).
    service_in: Option<Receiver<ServiceDatagram>>,
    /// DNS queries to the owner (policed as the host path is).
    dns_out: Sender<ServiceDatagram>,
    dns_bell: Arc<ArcSwapOption<services::Bell>>,
    /// The batch being handled queued a query: ring the bell after it.
    dns_queued: bool,
}

impl Worker {
    /// Picks up what a new snapshot changes for per-worker state.
    fn adopt(&mut self, tables: &Tables, now: Instant) {
        for n in &tables.static_neighbours {
            self.pipeline
                .neighbours
                .add_static((n.port, n.ip), n.mac, now);
        }
        self.generation = tables.generation;
        let icmp = &tables.icmp;
        self.pipeline
            .set_icmp_limit(icmp.errors_per_second, icmp.burst, now);
        let clock = now.saturating_duration_since(tables.epoch);
        self.keepalives = tables
            .tunnels
            .iter()
            .map(|t| {
                t.keepalive
                    .filter(|_| self.sends_keepalives)
                    .map(|every| KeepaliveTimer::due_now(every, clock))
            })
            .collect();
    }

    /// Sends the NAT-keepalives that are due.
    fn send_keepalives(&mut self, ports: &mut PortSet, tables: &Tables, now: Instant) {
        let clock = now.saturating_duration_since(tables.epoch);
        for (i, tun) in tables.tunnels.iter().enumerate() {
            let Some(Some(timer)) = self.keepalives.get_mut(i) else {
                continue;
            };
            if timer.poll(clock).is_none() {
                continue;
            }
            let Some(desc) = ports.alloc_frame() else {
                continue;
            };
            let pipeline = &mut self.pipeline;
            let Some((desc, verdict)) =
                on_frame(ports, desc, |pkt| pipeline.keepalive(tables, tun, pkt))
            else {
                continue;
            };
            match verdict {
                Verdict::Forward { port, neighbour } => {
                    self.forward(ports, tables, desc, port, neighbour, now)
                }
                _ => ports.drop_frame(desc),
            }
        }
    }

    fn handle(
        &mut self,
        ports: &mut PortSet,
        taps: &[Option<HostTap>],
        tables: &Tables,
        desc: FrameDesc,
        now: Instant,
    ) {
        let ingress = desc.ingress().0;
        let pipeline = &mut self.pipeline;
        let Some((desc, verdict)) = on_frame(ports, desc, |pkt| {
            pipeline.process(tables, pkt, ingress, now)
        }) else {
            return;
        };
        match verdict {
            Verdict::Punt => self.punt(ports, taps, desc, ingress, now),
            Verdict::Service if is_dns_frame(tables, ports.frame(&desc)) => {
                self.dns_query(ports, taps, desc, ingress, now)
            }
            Verdict::Service => {
                let reason = if !self.service_bucket.take(now) {
                    Some(DropReason::ServicePoliced)
                } else {
                    match service_datagram(ports.frame(&desc)) {
                        Some(d) => self
                            .service_out
                            .try_send(d)
                            .err()
                            .map(|_| DropReason::ServiceQueueFull),
                        None => Some(DropReason::ServiceQueueFull),
                    }
                };
                if let Some(reason) = reason {
                    self.pipeline.count_drop(ingress, reason);
                }
                ports.drop_frame(desc);
            }
            other => self.send(ports, tables, desc, other, ingress, now),
        }
    }

    /// Carries out the verdicts that send a frame on: forwarded, answered
    /// on `port` (the one it came by), or split; any other frees it.
    fn send(
        &mut self,
        ports: &mut PortSet,
        tables: &Tables,
        desc: FrameDesc,
        verdict: Verdict,
        port: u16,
        now: Instant,
    ) {
        match verdict {
            Verdict::Forward { port, neighbour } => {
                self.forward(ports, tables, desc, port, neighbour, now)
            }
            Verdict::Reply => self.queue(ports, port, desc),
            Verdict::Fragment(plan) => self.fragment(ports, tables, desc, plan, port, now),
            _ => ports.drop_frame(desc),
        }
    }

    /// Sends a frame the host stack wrote to the TAP of `port`: sealed
    /// into a tunnel when the tables route its destination into one, else
    /// on the port as it is.
    fn send_from_host(
        &mut self,
        ports: &mut PortSet,
        tables: &Tables,
        port: u16,
        desc: FrameDesc,
        now: Instant,
    ) {
        let pipeline = &mut self.pipeline;
        let Some((desc, verdict)) = on_frame(ports, desc, |pkt| {
            pipeline.host_output(tables, port, pkt, now)
        }) else {
            return;
        };
        self.send(ports, tables, desc, verdict, port, now);
    }

    /// Whether the host path's policer of `ingress` lets one more frame
    /// through (the TAP and the DNS queue share it).
    fn host_admits(&mut self, ingress: u16, now: Instant) -> bool {
        self.punt_buckets
            .get_mut(usize::from(ingress))
            .is_some_and(|b| b.take(now))
    }

    /// Hands the frame to the host stack by the TAP of `ingress`, within
    /// the interface's policer.
    fn punt(
        &mut self,
        ports: &mut PortSet,
        taps: &[Option<HostTap>],
        desc: FrameDesc,
        ingress: u16,
        now: Instant,
    ) {
        let admitted = self.host_admits(ingress, now);
        match taps.get(usize::from(ingress)).and_then(Option::as_ref) {
            Some(_) if !admitted => self
                .pipeline
                .count_drop(ingress, DropReason::HostPuntPoliced),
            Some(tap) if tap.send(ports.frame(&desc)).is_ok() => {
                self.pipeline.counters[usize::from(ingress)].punted += 1;
            }
            _ => self
                .pipeline
                .count_drop(ingress, DropReason::HostPuntFailed),
        }
        ports.drop_frame(desc);
    }

    /// A UDP query to `[dns] listen`: queued for the owner's resolver once
    /// it takes them (no TAP, no syscall here; its loop is woken once per
    /// batch), within the same per-interface policer as the host path;
    /// punted to the host's socket until then.
    fn dns_query(
        &mut self,
        ports: &mut PortSet,
        taps: &[Option<HostTap>],
        desc: FrameDesc,
        ingress: u16,
        now: Instant,
    ) {
        if self.dns_bell.load().is_none() {
            return self.punt(ports, taps, desc, ingress, now);
        }
        let admitted = self.host_admits(ingress, now);
        let refused = if !admitted {
            Some(DropReason::HostPuntPoliced)
        } else {
            match service_datagram(ports.frame(&desc)).map(|d| self.dns_out.try_send(d)) {
                Some(Ok(())) => {
                    self.dns_queued = true;
                    None
                }
                _ => Some(DropReason::ServiceQueueFull),
            }
        };
        if let Some(reason) = refused {
            self.pipeline.count_drop(ingress, reason);
        }
        ports.drop_frame(desc);
    }

    /// Rings the owner's DNS bell if the last batch queued queries.
    fn ring_dns(&mut self) {
        if std::mem::take(&mut self.dns_queued) {
            if let Some(bell) = self.dns_bell.load().as_ref() {
                bell.ring();
            }
        }
    }

    /// Service datagrams queued beyond what the last turn of the host path
    /// sent (64 per turn): the worker comes back for them on its next round
    /// instead of waiting, or a registration storm's answers would leave 64
    /// per wait.
    fn services_waiting(&self) -> bool {
        self.service_in.as_ref().is_some_and(|rx| !rx.is_empty())
    }

    /// Sends what the engine's owner queued (IKE), from our addresses,
    /// routed like keepalives; at most 64 per turn of the host path.
    fn send_services(&mut self, ports: &mut PortSet, tables: &Tables, now: Instant) {
        let Some(rx) = self.service_in.take() else {
            return;
        };
        for d in rx.try_iter().take(64) {
            let Some(desc) = ports.alloc_frame() else {
                break;
            };
            let pipeline = &mut self.pipeline;
            let Some((desc, verdict)) = on_frame(ports, desc, |pkt| {
                pipeline.udp_from_us(tables, d.local, d.remote, &d.payload, pkt)
            }) else {
                continue;
            };
            match verdict {
                Verdict::Forward { port, neighbour } => {
                    self.forward(ports, tables, desc, port, neighbour, now)
                }
                _ => ports.drop_frame(desc),
            }
        }
        self.service_in = Some(rx);
    }

    /// Splits an IPv4 packet too big for its egress into fragments
    /// (RFC 791 §3.2) and sends each to `target` (a neighbour, or sealed
    /// into a tunnel on its own).
    fn fragment(
        &mut self,
        ports: &mut PortSet,
        tables: &Tables,
        desc: FrameDesc,
        FragmentPlan { mtu, target }: FragmentPlan,
        ingress: u16,
        now: Instant,
    ) {
        let mtu = usize::from(mtu);
        let original_len = desc.len();
        self.copy[..original_len].copy_from_slice(ports.frame(&desc));
        let original = &self.copy[..original_len];
        let count = strait_wire::Ipv4Packet::new_checked(original)
            .ok()
            .and_then(|ip| fragment_plan(ip.header_len(), usize::from(ip.total_len()), mtu))
            .map_or(0, |(_, count)| count);
        if count == 0 {
            self.pipeline
                .count_drop(ingress, DropReason::FragmentFailed);
            ports.drop_frame(desc);
            return;
        }
        // The original frame carries the first fragment; the others get
        // fresh frames from the pool.
        let mut frames = Some(desc);
        for index in 0..count {
            let frame = match frames.take() {
                Some(d) => Some(d),
                None => ports.alloc_frame(),
            };
            let Some(mut frame) = frame else {
                self.pipeline.count_drop(ingress, DropReason::NoFrame);
                return;
            };
            let room = ports.umem().tailroom(&frame) + frame.len();
            let _ = ports.umem().set_len(&mut frame, room);
            let Some(n) = fragment_ipv4(
                &self.copy[..original_len],
                mtu,
                index,
                ports.frame_mut(&frame),
            ) else {
                self.pipeline
                    .count_drop(ingress, DropReason::FragmentFailed);
                ports.drop_frame(frame);
                return;
            };
            let _ = ports.umem().set_len(&mut frame, n);
            let tunnel = match target {
                FragmentTarget::Port { port, neighbour } => {
                    self.forward(ports, tables, frame, port, neighbour, now);
                    continue;
                }
                FragmentTarget::Tunnel { tunnel } => tunnel,
            };
            let pipeline = &mut self.pipeline;
            let Some((frame, verdict)) = on_frame(ports, frame, |pkt| {
                pipeline.tunnel_output(tables, tunnel, pkt, now)
            }) else {
                continue;
            };
            match verdict {
                Verdict::Forward { port, neighbour } => {
                    self.forward(ports, tables, frame, port, neighbour, now)
                }
                Verdict::Drop(reason) => {
                    self.pipeline.count_drop(ingress, reason);
                    ports.drop_frame(frame);
                }
                _ => ports.drop_frame(frame),
            }
        }
    }

    /// Resolves the next hop of a routed packet and queues it, or holds it.
    fn forward(
        &mut self,
        ports: &mut PortSet,
        tables: &Tables,
        desc: FrameDesc,
        port: u16,
        neighbour: IpAddr,
        now: Instant,
    ) {
        match self.pipeline.resolve((port, neighbour), desc, now) {
            Resolution::Known { mac, probe, packet } => {
                self.send_l3(ports, tables, port, mac, packet);
                if let Some(m) = probe {
                    self.solicit(ports, tables, port, neighbour, Some(m));
                }
            }
            Resolution::Queued { request } => {
                if request {
                    self.solicit(ports, tables, port, neighbour, None);
                }
            }
            Resolution::Refused(desc, reason) => {
                let r = match reason {
                    RefuseReason::QueueFull => DropReason::NeighbourQueueFull,
                    RefuseReason::TableFull => DropReason::NeighbourTableFull,
                    RefuseReason::HeldLimit => DropReason::NeighbourHeldLimit,
                    RefuseReason::RateLimited => DropReason::NeighbourRateLimited,
                };
                self.pipeline.count_drop(port, r);
                ports.drop_frame(desc);
            }
        }
    }

    /// Prepends Ethernet to an L3 packet and queues it on `port`.
    fn send_l3(
        &mut self,
        ports: &mut PortSet,
        tables: &Tables,
        port: u16,
        mac: [u8; 6],
        mut desc: FrameDesc,
    ) {
        let Some(p) = tables.ports.get(usize::from(port)) else {
            ports.drop_frame(desc);
            return;
        };
        if ports.umem().grow_front(&mut desc, ETH_LEN).is_err() {
            self.pipeline.count_drop(port, DropReason::NoHeadroom);
            ports.drop_frame(desc);
            return;
        }
        let frame = ports.frame_mut(&desc);
        let ethertype = if frame[ETH_LEN] >> 4 == 6 {
            EtherType::IPV6
        } else {
            EtherType::IPV4
        };
        write_eth(frame, mac, p.link.mac, ethertype);
        self.queue(ports, port, desc);
    }

    fn queue(&mut self, ports: &mut PortSet, port: u16, desc: FrameDesc) {
        let Some(batch) = self.tx.get_mut(usize::from(port)) else {
            ports.drop_frame(desc);
            return;
        };
        if batch.is_full() {
            ports.transmit(PortId(port), batch);
        }
        if let Err(desc) = batch.push(desc) {
            self.pipeline.count_drop(port, DropReason::NoFrame);
            ports.drop_frame(desc);
        }
    }

    /// Sends an ARP request or neighbour solicitation for `target`.
    fn solicit(
        &mut self,
        ports: &mut PortSet,
        tables: &Tables,
        port: u16,
        target: IpAddr,
        unicast: Option<[u8; 6]>,
    ) {
        let Some(p) = tables.ports.get(usize::from(port)) else {
            return;
        };
        let Some(mut desc) = ports.alloc_frame() else {
            self.pipeline.count_drop(port, DropReason::NoFrame);
            return;
        };
        let room = ports.umem().tailroom(&desc);
        let _ = ports.umem().set_len(&mut desc, room.min(128));
        let frame = ports.frame_mut(&desc);
        let n = match target {
            IpAddr::V4(t) => arp_request(frame, p, t, unicast),
            IpAddr::V6(t) => neighbour_solicitation(frame, p, t, unicast),
        };
        match n {
            Some(n) => {
                let _ = ports.umem().set_len(&mut desc, n);
                self.pipeline.counters[usize::from(port)].neighbour_requests += 1;
                self.queue(ports, port, desc);
            }
            None => ports.drop_frame(desc),
        }
    }

    /// Sends the packets a neighbour answer released.
    fn release_resolved(&mut self, ports: &mut PortSet, tables: &Tables, now: Instant) {
        if self.pipeline.released.is_empty() {
            return;
        }
        let mut released = std::mem::take(&mut self.pipeline.released);
        for (key, desc) in released.drain(..) {
            self.forward(ports, tables, desc, key.0, key.1, now);
        }
        self.pipeline.released = released;
    }

    fn flush(&mut self, ports: &mut PortSet) {
        for (i, batch) in self.tx.iter_mut().enumerate() {
            if !batch.is_empty() {
                ports.transmit(PortId(i as u16), batch);
            }
        }
    }

    fn timers(&mut self, ports: &mut PortSet, tables: &Tables, now: Instant) {
        let mut requests: [Option<Solicitation>; 16] = [None; 16];
        let mut n_requests = 0;
        let Pipeline {
            neighbours,
            counters,
            ..
        } = &mut self.pipeline;
        neighbours.tick(
            now,
            |action| {
                if let TimerAction::Request { key, unicast } = action {
                    if n_requests < requests.len() {
                        requests[n_requests] = Some((key.0, key.1, unicast));
                        n_requests += 1;
                    }
                }
            },
            |desc| {
                // A held frame still names the port it arrived on.
                if let Some(c) = counters.get_mut(desc.ingress().index()) {
                    c.drop(DropReason::NeighbourUnresolved);
                }
                ports.drop_frame(desc);
            },
        );
        for (port, target, unicast) in requests.iter().take(n_requests).flatten() {
            self.solicit(ports, tables, *port, *target, *unicast);
        }
        self.send_keepalives(ports, tables, now);
    }

    /// The host path's outbound half: service datagrams the daemon queued
    /// (IKE) and frames the kernel sent through a TAP, each leaving by its
    /// port. A bounded amount per call; `true` if a queue or a TAP still
    /// had more when the budget ran out, so the caller comes back on its
    /// next round instead of its next timer tick.
    fn host_path(
        &mut self,
        ports: &mut PortSet,
        taps: &[Option<HostTap>],
        tables: &Tables,
        now: Instant,
    ) -> bool {
        self.send_services(ports, tables, now);
        let mut more = self.services_waiting();
        for (port, tap) in taps.iter().enumerate() {
            let Some(tap) = tap else { continue };
            let mut read = 0;
            while read < HOST_BUDGET {
                let Some(mut desc) = ports.alloc_frame() else {
                    break;
                };
                let room = ports.umem().tailroom(&desc);
                let _ = ports.umem().set_len(&mut desc, room);
                match tap.recv(ports.frame_mut(&desc)) {
                    Ok(Some(n)) if n >= ETH_LEN => {
                        let _ = ports.umem().set_len(&mut desc, n);
                        self.send_from_host(ports, tables, port as u16, desc, now);
                        read += 1;
                    }
                    _ => {
                        ports.drop_frame(desc);
                        break;
                    }
                }
            }
            more |= read == HOST_BUDGET;
        }
        more
    }

    fn publish(&mut self, ports: &PortSet, shared: &SharedCounters) {
        for (i, c) in self.pipeline.counters.iter_mut().enumerate() {
            if let Some(x) = ports.counters(PortId(i as u16)) {
                c.rx_packets = x.rx_packets;
                c.rx_bytes = x.rx_bytes;
                c.tx_packets = x.tx_packets;
                c.tx_bytes = x.tx_bytes;
                c.drops[DropReason::TxRingFull as usize] = x.tx_ring_full;
            }
            // Frames the kernel dropped before the worker saw them: one
            // getsockopt per port per publication, never per packet. A
            // failed read keeps the last figures.
            if let Ok(k) = ports.kernel_statistics(PortId(i as u16)) {
                c.drops[DropReason::RxRingFull as usize] = k.rx_ring_full;
                c.drops[DropReason::RxNoFrame as usize] = k.rx_dropped;
            }
        }
        shared.publish(&self.pipeline.counters);
        let umem = ports.umem();
        shared.publish_pool(PoolGauge {
            frames: u64::from(umem.config().frame_count),
            free: umem.pool().len() as u64,
        });
    }
}
