//! A fleet of branches registering with one hub: one IKEv2 initiator
//! (`strait-ike`) per device, each with its own identity (its serial), its
//! own key and its own UDP socket (a distinct source port), all driven by
//! one thread over non-blocking sockets (mio). It is meant to run on a
//! thread that entered the branch namespace ([`strait_testbed::Netns::enter`]).
//!
//! The driver does what a device's runtime does and nothing more: it
//! starts every registration (all at once, or paced), feeds each initiator
//! the datagrams its socket receives and the time, runs its
//! retransmissions (`Ike::poll`, RFC 7296 §2.4, which also answers a
//! COOKIE, §2.6), starts again one second after an IKE SA that failed, and
//! records when each device's IKE SA and CHILD SA came up. With
//! [`FleetPlan::rekey`] it then rekeys every device's CHILD SA
//! (`Ike::rekey_child`: CREATE_CHILD_SA, then the Delete of the old SA)
//! and records when each finished.
//!
//! Every datagram a device sends is counted, and those sent by
//! `Ike::poll` (retransmissions: liveness checks and rekeys by time are
//! off here) separately, so what the hub's policer or queues dropped shows.
//!
//! With [`FleetPlan::routes`] it also follows the hub's route exchange:
//! every device claims its prefixes as its TSi, and the driver records the
//! route sets the hub announces to it (`Event::RoutesReceived`, each set in
//! chunks, one INFORMATIONAL request each: counted as they arrive). The
//! first [`RouteWatch::first`] devices register; once each of them holds a
//! set with every other one's prefixes and the hub's `advertise`
//! (converged), the rest (the newcomers) register, and the driver records
//! when each earlier device first holds a set with all the newcomers'
//! prefixes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use strait_ike::{
    CloseReason, Config, Event, Identity, Ike, IkeSaId, Output, PeerConfig, TrafficSelector,
};

/// One device of the fleet.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Its serial number: its IKE identity (ID_FQDN).
    pub serial: String,
    /// The pre-shared key it registers with (the key file's content).
    pub psk: Vec<u8>,
    /// The prefixes behind it (its TSi: what it claims at the hub).
    pub prefixes: Vec<(Ipv4Addr, u8)>,
}

/// What the fleet watches of the hub's route announcements.
#[derive(Debug, Clone)]
pub struct RouteWatch {
    /// The devices registered first (`0..first`); the rest register once
    /// all of these have converged.
    pub first: usize,
    /// The hub's `[ike] advertise` prefixes: in every device's set.
    pub advertise: Vec<(Ipv4Addr, u8)>,
    /// Between convergence and the newcomers' registrations.
    pub settle: Duration,
    /// Longest time the newcomers' phase may take.
    pub newcomer_timeout: Duration,
}

/// What the fleet does.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    /// Our address in the branch namespace.
    pub local: Ipv4Addr,
    /// Device `i` sends from `local:first_port + i` (0: from a port the
    /// kernel picks).
    pub first_port: u16,
    /// The hub's IKE address (port 500).
    pub hub: SocketAddrV4,
    /// The identity the hub must prove.
    pub hub_identity: String,
    /// The devices.
    pub devices: Vec<DeviceSpec>,
    /// Registrations started per second; `None`: all at once, as fast as
    /// the driver makes their first messages.
    pub pace: Option<f64>,
    /// Rekeys started per second; `None`: all at once.
    pub rekey_pace: Option<f64>,
    /// Longest time each phase may take.
    pub timeout: Duration,
    /// After every device is up (or the timeout), wait this long, then
    /// rekey every CHILD SA.
    pub rekey: Option<Duration>,
    /// What every device asks to reach through the hub (its TSr); empty:
    /// 0.0.0.0/0, as a branch that learns its routes from the hub.
    pub ask: Vec<(Ipv4Addr, u8)>,
    /// Follow the route exchange (and register the devices from
    /// [`RouteWatch::first`] on only once the others have converged).
    pub routes: Option<RouteWatch>,
    /// Each device's liveness check after this much silence (with four
    /// transmissions, as `straitd` does: a hub that forgot the IKE SA is
    /// noticed and the device registers again); `None`: off. Its checks
    /// count as retransmissions.
    pub dpd: Option<Duration>,
}

/// Live counts for a monitor on another thread.
#[derive(Debug, Default)]
pub struct Progress {
    /// Devices whose CHILD SA came up (each counted once).
    pub up: AtomicUsize,
    /// Devices whose CHILD SA rekey finished (the old SA deleted).
    pub rekeyed: AtomicUsize,
    /// The rekey phase started.
    pub rekeying: AtomicBool,
    /// The driver has finished.
    pub done: AtomicBool,
    /// Set by the monitor to end the driver early.
    pub stop: AtomicBool,
    /// Devices whose latest route set holds every prefix expected of the
    /// first devices and the hub's advertise.
    pub converged: AtomicUsize,
    /// The newcomers' phase started.
    pub newcomers: AtomicBool,
    /// Devices (of the first) that hold the newcomers' prefixes.
    pub reached: AtomicUsize,
}

/// One device's timeline, seconds since the shared epoch.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeviceRecord {
    /// Its first IKE_SA_INIT.
    pub init_s: Option<f64>,
    /// Its IKE SA authenticated (IKE_AUTH answer).
    pub established_s: Option<f64>,
    /// Its CHILD SA ready (same answer): registered.
    pub up_s: Option<f64>,
    /// Its CHILD SA rekey started.
    pub rekey_start_s: Option<f64>,
    /// The new CHILD SA ready.
    pub rekey_ready_s: Option<f64>,
    /// The old CHILD SA deleted: the rekey done.
    pub rekey_done_s: Option<f64>,
    /// IKE SAs that ended before their CHILD SA came up (registration
    /// started again a second later).
    pub restarts: u32,
    /// IKE SAs that ended after it came up (a rekey unanswered through
    /// every retransmission): the device registered again.
    pub lost: u32,
    /// Its rekey failed (the IKE SA ended first).
    pub rekey_failed: bool,
    /// Why the last one ended.
    pub last_failure: Option<String>,
    /// Selectors of the hub's TSr in the IKE_AUTH answer (what it offered
    /// in the CHILD SA).
    pub ts_remote: Option<usize>,
    /// Route sets received (whole sets: their last chunk arrived).
    pub route_sets: u32,
    /// Prefixes in the latest.
    pub last_set: Option<usize>,
    /// Since when its latest set holds every prefix expected (of the first
    /// devices but itself, and the advertise); `None` while it does not.
    pub converged_s: Option<f64>,
    /// The first set after the newcomers' phase started that held all the
    /// newcomers' prefixes (but its own).
    pub newcomer_s: Option<f64>,
}

/// Datagrams of one phase, all devices.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Traffic {
    /// Sent (first transmissions, retransmissions and answers).
    pub sent: u64,
    /// Of those, retransmissions (sent by `Ike::poll`).
    pub retransmitted: u64,
    /// Received.
    pub received: u64,
    /// Sends the socket refused (counted, left to the retransmissions).
    pub send_errors: u64,
    /// INFORMATIONAL requests received from the hub (route-set chunks
    /// here: its liveness checks are off), retransmissions included.
    pub informational: u64,
    /// Whole route sets received.
    pub route_sets: u64,
    /// Prefixes in them, in all.
    pub route_prefixes: u64,
}

impl Traffic {
    fn add(&mut self, o: &Traffic) {
        self.sent += o.sent;
        self.retransmitted += o.retransmitted;
        self.received += o.received;
        self.send_errors += o.send_errors;
        self.informational += o.informational;
        self.route_sets += o.route_sets;
        self.route_prefixes += o.route_prefixes;
    }
}

/// What the fleet saw.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FleetReport {
    /// Every device, in order.
    pub devices: Vec<DeviceRecord>,
    /// The registration phase.
    pub registration: Traffic,
    /// The rekey phase.
    pub rekey: Traffic,
    /// When the registration phase started (the first IKE_SA_INIT), s.
    pub start_s: f64,
    /// When the rekey phase started, s.
    pub rekey_start_s: Option<f64>,
    /// CPU time of the driver's thread in each phase, s.
    pub driver_cpu_s: (f64, f64),
    /// The newcomers' phase (route exchange).
    pub newcomer: Traffic,
    /// When it started (the newcomers' first IKE_SA_INIT), s.
    pub newcomer_start_s: Option<f64>,
    /// The driver's thread's CPU time in it, s.
    pub driver_cpu_newcomer_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not started, or waiting to start again.
    Idle,
    Registering,
    Up,
    /// Rekey of the CHILD SA with this inbound SPI under way.
    Rekeying(u32),
    Rekeyed,
}

struct Device {
    ike: Ike,
    sock: UdpSocket,
    local: SocketAddr,
    peer: PeerConfig,
    sa: Option<IkeSaId>,
    /// Inbound SPI of the CHILD SA in use.
    child_in: Option<u32>,
    state: State,
    /// When to call `Ike::poll` next.
    wake: Option<Duration>,
    /// When to start registering again after a failure.
    retry_at: Option<Duration>,
    rec: DeviceRecord,
}

/// How long to wait before registering again after a failure (as the
/// daemon's first backoff).
const RETRY: Duration = Duration::from_secs(1);

/// Longest wait in the event loop.
const TICK: Duration = Duration::from_millis(50);

/// The driver's thread's CPU time so far (`/proc/thread-self/schedstat`).
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// Where each prefix a device may be announced comes from.
const ADVERTISED: usize = usize::MAX;

/// The driver's view of the route exchange.
struct Watch {
    /// Each expected prefix: its slot (for `stamps`) and its owner (a
    /// device, or [`ADVERTISED`]).
    slots: HashMap<(Ipv4Addr, u8), (usize, usize)>,
    /// The set each slot was last counted in: repeats count once.
    stamps: Vec<u64>,
    stamp: u64,
    first: usize,
    /// Prefixes of each device.
    own: Vec<usize>,
    /// Of the first devices' and the advertise, in all.
    base: usize,
    /// Of the newcomers, in all.
    newcomer_total: usize,
    /// The newcomers' phase started.
    newcomers: bool,
}

impl Watch {
    fn new(specs: &[DeviceSpec], w: &RouteWatch) -> Watch {
        let first = w.first.min(specs.len());
        let mut slots = HashMap::new();
        for &p in &w.advertise {
            let n = slots.len();
            slots.entry(p).or_insert((n, ADVERTISED));
        }
        for (i, spec) in specs.iter().enumerate() {
            for &p in &spec.prefixes {
                let n = slots.len();
                slots.entry(p).or_insert((n, i));
            }
        }
        let own: Vec<usize> = specs.iter().map(|d| d.prefixes.len()).collect();
        let advertised = slots.values().filter(|s| s.1 == ADVERTISED).count();
        Watch {
            stamps: vec![0; slots.len()],
            stamp: 0,
            first,
            base: advertised + own[..first].iter().sum::<usize>(),
            newcomer_total: own[first..].iter().sum(),
            own,
            slots,
            newcomers: false,
        }
    }

    /// Of the set `prefixes` received by device `i`: does it hold every
    /// prefix of the first devices (but `i`'s) and the advertise, and
    /// every newcomer's (but `i`'s)?
    fn judge(&mut self, i: usize, prefixes: &[TrafficSelector]) -> (bool, bool) {
        self.stamp += 1;
        let (mut base, mut new) = (0, 0);
        for ts in prefixes {
            let Some((IpAddr::V4(a), len)) = ts.as_prefix() else {
                continue;
            };
            let Some(&(slot, owner)) = self.slots.get(&(a, len)) else {
                continue;
            };
            if owner == i || self.stamps[slot] == self.stamp {
                continue;
            }
            self.stamps[slot] = self.stamp;
            if owner == ADVERTISED || owner < self.first {
                base += 1;
            } else {
                new += 1;
            }
        }
        let own = self.own.get(i).copied().unwrap_or(0);
        let (want_base, want_new) = if i < self.first {
            (self.base - own, self.newcomer_total)
        } else {
            (self.base, self.newcomer_total - own)
        };
        (base == want_base, new == want_new)
    }
}

/// An INFORMATIONAL request (RFC 7296 §3.1: exchange type 37, the
/// Response flag clear) on port 500.
fn is_informational_request(dg: &[u8]) -> bool {
    dg.len() >= 28 && dg[18] == 37 && dg[19] & 0x20 == 0
}

struct Driver<'a> {
    devices: Vec<Device>,
    poll: Poll,
    epoch: Instant,
    progress: &'a Progress,
    buf: Vec<u8>,
    watch: Option<Watch>,
}

impl Driver<'_> {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Sends what `outs` asks and acts on its events, for device `i`.
    fn carry_out(&mut self, i: usize, outs: Vec<Output>, retransmit: bool, t: &mut Traffic) {
        let now = self.now().as_secs_f64();
        let progress = self.progress;
        let watch = &mut self.watch;
        let d = &mut self.devices[i];
        // An IKE SA that ends reports its CHILD SAs deleted first, in the
        // same batch: those deletions finish no rekey.
        let closing = outs
            .iter()
            .any(|o| matches!(o, Output::Event(Event::IkeSaClosed { .. })));
        for out in outs {
            match out {
                Output::Send(dg) => {
                    t.sent += 1;
                    if retransmit {
                        t.retransmitted += 1;
                    }
                    if d.sock.send_to(&dg.bytes, dg.remote).is_err() {
                        t.send_errors += 1;
                    }
                }
                Output::Event(e) => match e {
                    Event::IkeSaEstablished { .. } => {
                        d.rec.established_s.get_or_insert(now);
                    }
                    Event::ChildSaReady {
                        spi_in, ts_remote, ..
                    } => match d.state {
                        State::Registering => {
                            d.rec.ts_remote = Some(ts_remote.len());
                            d.child_in = Some(spi_in);
                            d.state = State::Up;
                            if d.rec.up_s.is_none() {
                                d.rec.up_s = Some(now);
                                progress.up.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        State::Rekeying(_) => {
                            d.rec.rekey_ready_s.get_or_insert(now);
                            d.child_in = Some(spi_in);
                        }
                        _ => d.child_in = Some(spi_in),
                    },
                    Event::ChildSaDeleted { spi_in, .. } => {
                        if d.state == State::Rekeying(spi_in) && !closing {
                            d.state = State::Rekeyed;
                            d.rec.rekey_done_s = Some(now);
                            progress.rekeyed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Event::ChildSaRefused { notify, .. } => {
                        d.rec.last_failure = Some(format!("CHILD SA refused (notify {notify})"));
                    }
                    Event::IkeSaRekeyed { new, .. } => d.sa = Some(new),
                    Event::RoutesReceived { prefixes, .. } => {
                        t.route_sets += 1;
                        t.route_prefixes += prefixes.len() as u64;
                        d.rec.route_sets += 1;
                        d.rec.last_set = Some(prefixes.len());
                        if let Some(w) = watch.as_mut() {
                            let (complete, newcomers) = w.judge(i, &prefixes);
                            match (complete, d.rec.converged_s.is_some()) {
                                (true, false) => {
                                    d.rec.converged_s = Some(now);
                                    progress.converged.fetch_add(1, Ordering::Relaxed);
                                }
                                (false, true) => {
                                    d.rec.converged_s = None;
                                    progress.converged.fetch_sub(1, Ordering::Relaxed);
                                }
                                _ => {}
                            }
                            if w.newcomers && newcomers && d.rec.newcomer_s.is_none() {
                                d.rec.newcomer_s = Some(now);
                                if i < w.first {
                                    progress.reached.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Event::SelectorsRefused { .. } => {}
                    Event::IkeSaClosed { reason, .. } => {
                        d.rec.last_failure = Some(match &reason {
                            CloseReason::PeerRefused(n) => format!("refused (notify {n})"),
                            r => format!("{r:?}"),
                        });
                        match d.state {
                            State::Registering => d.rec.restarts += 1,
                            State::Idle => {}
                            State::Rekeying(_) => {
                                d.rec.rekey_failed = true;
                                d.rec.lost += 1;
                            }
                            State::Up | State::Rekeyed => d.rec.lost += 1,
                        }
                        d.sa = None;
                        d.child_in = None;
                        d.state = State::Idle;
                        d.retry_at = Some(self.epoch.elapsed() + RETRY);
                    }
                },
            }
        }
        d.wake = d.ike.wake_at();
    }

    fn initiate(&mut self, i: usize, t: &mut Traffic) {
        let now = self.now();
        let d = &mut self.devices[i];
        d.retry_at = None;
        match d.ike.initiate(now, d.peer.clone()) {
            Ok((id, outs)) => {
                d.sa = Some(id);
                d.state = State::Registering;
                d.rec.init_s.get_or_insert(now.as_secs_f64());
                self.carry_out(i, outs, false, t);
            }
            Err(e) => {
                d.rec.last_failure = Some(format!("initiate: {e}"));
                d.retry_at = Some(now + RETRY);
            }
        }
    }

    fn rekey(&mut self, i: usize, t: &mut Traffic) {
        let now = self.now();
        let d = &mut self.devices[i];
        let (Some(id), Some(spi), State::Up) = (d.sa, d.child_in, d.state) else {
            return;
        };
        match d.ike.rekey_child(now, id) {
            Ok(outs) => {
                d.state = State::Rekeying(spi);
                d.rec.rekey_start_s = Some(now.as_secs_f64());
                self.carry_out(i, outs, false, t);
            }
            Err(e) => d.rec.last_failure = Some(format!("rekey: {e}")),
        }
    }

    /// Receives on every readable socket, runs due retransmissions and
    /// retries, waiting at most until `until`.
    fn service(&mut self, events: &mut Events, until: Duration, t: &mut Traffic) -> Result<()> {
        let now = self.now();
        for i in 0..self.devices.len() {
            let d = &self.devices[i];
            if d.state == State::Idle && d.retry_at.is_some_and(|r| r <= now) {
                self.initiate(i, t);
            } else if d.wake.is_some_and(|w| w <= now) {
                let outs = self.devices[i].ike.poll(now);
                self.carry_out(i, outs, true, t);
            }
        }
        let next = self
            .devices
            .iter()
            .filter_map(|d| match (d.wake, d.retry_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
            .min()
            .unwrap_or(Duration::MAX)
            .min(until);
        let wait = next.saturating_sub(self.now()).min(TICK);
        match self.poll.poll(events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e).context("epoll_wait"),
        }
        let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        for i in ready {
            loop {
                let d = &mut self.devices[i];
                let (n, src) = match d.sock.recv_from(&mut self.buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // ICMP errors and the like: the retransmissions go on.
                    Err(_) => break,
                };
                t.received += 1;
                if is_informational_request(&self.buf[..n]) {
                    t.informational += 1;
                }
                let now = self.epoch.elapsed();
                let outs = d.ike.handle_datagram(now, src, d.local, &self.buf[..n]);
                self.carry_out(i, outs, false, t);
            }
        }
        Ok(())
    }

    /// Runs one phase: `start(i)` for every device of `range` (paced),
    /// then services until `done` holds or `timeout` passes.
    fn phase(
        &mut self,
        pace: Option<f64>,
        timeout: Duration,
        range: Range<usize>,
        mut start: impl FnMut(&mut Self, usize, &mut Traffic),
        done: impl Fn(&Self) -> bool,
    ) -> Result<Traffic> {
        let mut t = Traffic::default();
        let mut events = Events::with_capacity(1024);
        let t0 = self.now();
        let deadline = t0 + timeout;
        let n = range.len();
        let mut next = 0;
        while self.now() < deadline && !self.progress.stop.load(Ordering::Relaxed) {
            let now = self.now();
            let due = match pace {
                None => n,
                Some(p) => (((now - t0).as_secs_f64() * p).floor() as usize + 1).min(n),
            };
            while next < due {
                start(self, range.start + next, &mut t);
                next += 1;
            }
            if next == n && done(self) {
                break;
            }
            let until = match pace {
                Some(p) if next < n => t0 + Duration::from_secs_f64(next as f64 / p),
                _ => deadline,
            };
            self.service(&mut events, until, &mut t)?;
        }
        Ok(t)
    }

    /// Keeps answering for `how_long` (the hub's retransmissions, its
    /// route chunks) without starting anything.
    fn idle(&mut self, how_long: Duration, t: &mut Traffic) -> Result<()> {
        let mut events = Events::with_capacity(1024);
        let until = self.now() + how_long;
        while self.now() < until && !self.progress.stop.load(Ordering::Relaxed) {
            self.service(&mut events, until, t)?;
        }
        Ok(())
    }
}

/// Selectors of `prefixes`; `None` if one is not a prefix.
fn selectors(prefixes: &[(Ipv4Addr, u8)]) -> Option<Vec<TrafficSelector>> {
    prefixes
        .iter()
        .map(|&(a, l)| TrafficSelector::prefix(a.into(), l))
        .collect()
}

/// Runs the fleet (on the calling thread, which must be in the branch
/// namespace): registers every device, then rekeys them if asked.
/// Timestamps are seconds since `epoch`.
pub fn run(plan: &FleetPlan, epoch: Instant, progress: &Progress) -> Result<FleetReport> {
    let result = drive(plan, epoch, progress);
    progress.done.store(true, Ordering::Relaxed);
    result
}

fn drive(plan: &FleetPlan, epoch: Instant, progress: &Progress) -> Result<FleetReport> {
    let poll = Poll::new().context("epoll")?;
    let mut devices = Vec::with_capacity(plan.devices.len());
    let hub = SocketAddr::V4(plan.hub);
    let ask = if plan.ask.is_empty() {
        vec![TrafficSelector::any_v4()]
    } else {
        selectors(&plan.ask).ok_or_else(|| anyhow!("bad prefix to ask for"))?
    };
    for (i, spec) in plan.devices.iter().enumerate() {
        let port = match plan.first_port {
            0 => 0,
            first => u16::try_from(usize::from(first) + i)
                .map_err(|_| anyhow!("too many devices for ports from {first}"))?,
        };
        let bind = SocketAddr::V4(SocketAddrV4::new(plan.local, port));
        let mut sock = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
        let local = sock.local_addr().context("getsockname")?;
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE)
            .context("epoll_ctl")?;
        let claims =
            selectors(&spec.prefixes).ok_or_else(|| anyhow!("bad prefix for {}", spec.serial))?;
        let mut config = Config::new(Identity::Fqdn(spec.serial.clone()));
        config.local_ts = claims;
        if let Some(dpd) = plan.dpd {
            config.dpd_interval = Some(dpd);
            config.retransmit_tries = 4;
        }
        let ike = Ike::new(config, Box::new(|_: &Identity| None))
            .map_err(|e| anyhow!("{}: {e}", spec.serial))?;
        devices.push(Device {
            ike,
            sock,
            local,
            peer: PeerConfig {
                local,
                remote: hub,
                psk: spec.psk.clone(),
                remote_id: Some(Identity::Fqdn(plan.hub_identity.clone())),
                remote_ts: ask.clone(),
            },
            sa: None,
            child_in: None,
            state: State::Idle,
            wake: None,
            retry_at: None,
            rec: DeviceRecord::default(),
        });
    }
    let n = devices.len();
    let mut d = Driver {
        devices,
        poll,
        epoch,
        progress,
        buf: vec![0; 65536],
        watch: plan.routes.as_ref().map(|w| Watch::new(&plan.devices, w)),
    };
    let mut report = FleetReport {
        start_s: epoch.elapsed().as_secs_f64(),
        ..FleetReport::default()
    };
    let cpu0 = thread_cpu_s();
    let first = plan.routes.as_ref().map_or(n, |w| w.first.min(n));
    let routes = plan.routes.is_some();
    // Every device of the first up, and with routes watched every one of
    // them converged.
    let first_done = |d: &Driver<'_>| {
        d.devices[..first].iter().all(|x| x.rec.up_s.is_some())
            && (!routes || d.progress.converged.load(Ordering::Relaxed) >= first)
    };
    report.registration = d.phase(
        plan.pace,
        plan.timeout,
        0..first,
        Driver::initiate,
        first_done,
    )?;
    let mut cpu1 = thread_cpu_s();
    if let Some(w) = plan.routes.as_ref().filter(|_| first < n) {
        if first_done(&d) {
            let mut idle = Traffic::default();
            d.idle(w.settle, &mut idle)?;
            report.registration.add(&idle);
            cpu1 = thread_cpu_s();
            report.newcomer_start_s = Some(epoch.elapsed().as_secs_f64());
            if let Some(watch) = d.watch.as_mut() {
                watch.newcomers = true;
            }
            progress.newcomers.store(true, Ordering::Relaxed);
            let reached = |d: &Driver<'_>| {
                d.devices[first..]
                    .iter()
                    .all(|x| x.rec.converged_s.is_some())
                    && d.progress.reached.load(Ordering::Relaxed) >= first
            };
            report.newcomer = d.phase(
                None,
                w.newcomer_timeout,
                first..n,
                Driver::initiate,
                reached,
            )?;
            report.driver_cpu_newcomer_s = thread_cpu_s() - cpu1;
        }
    }
    if let Some(settle) = plan.rekey {
        // Let the hub finish what the registrations left (its tables, its
        // views) so the rekeys are measured alone; keep answering.
        let mut idle = Traffic::default();
        d.idle(settle, &mut idle)?;
        report.registration.add(&idle);
        let cpu2 = thread_cpu_s();
        report.rekey_start_s = Some(epoch.elapsed().as_secs_f64());
        progress.rekeying.store(true, Ordering::Relaxed);
        let all_rekeyed = |d: &Driver<'_>| {
            d.devices
                .iter()
                .all(|x| !matches!(x.state, State::Rekeying(_)))
        };
        report.rekey = d.phase(
            plan.rekey_pace,
            plan.timeout,
            0..n,
            Driver::rekey,
            all_rekeyed,
        )?;
        report.driver_cpu_s.1 = thread_cpu_s() - cpu2;
    }
    report.driver_cpu_s.0 = cpu1 - cpu0;
    report.devices = d.devices.into_iter().map(|x| x.rec).collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;
    use strait_ike::PeerEntry;

    /// A responder on loopback: one `Ike` with a registry of `keys`,
    /// answering until `stop`; with `advertise`, it announces to every
    /// device those and what every other device claimed, on each
    /// registration (as a hub with transit).
    fn hub(
        keys: HashMap<String, Vec<u8>>,
        stop: Arc<AtomicBool>,
        advertise: Option<Vec<TrafficSelector>>,
    ) -> (SocketAddrV4, std::thread::JoinHandle<()>) {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let SocketAddr::V4(addr) = sock.local_addr().unwrap() else {
            unreachable!()
        };
        let directory = move |id: &Identity| {
            let Identity::Fqdn(serial) = id else {
                return None;
            };
            Some(PeerEntry {
                psk: keys.get(serial)?.clone(),
                remote_ts: vec![TrafficSelector::any_v4()],
                local_ts: None,
                conflicts: Vec::new(),
            })
        };
        let mut ike = Ike::new(
            Config::new(Identity::Fqdn("hub.example".into())),
            Box::new(directory),
        )
        .unwrap();
        let epoch = Instant::now();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let mut sites: Vec<(IkeSaId, Vec<TrafficSelector>)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let mut outs = Vec::new();
                if let Ok((n, src)) = sock.recv_from(&mut buf) {
                    let local = SocketAddr::V4(addr);
                    outs = ike.handle_datagram(epoch.elapsed(), src, local, &buf[..n]);
                }
                outs.extend(ike.poll(epoch.elapsed()));
                let mut changed = false;
                for o in &outs {
                    if let Output::Event(Event::ChildSaReady {
                        ike_sa, ts_remote, ..
                    }) = o
                    {
                        if !sites.iter().any(|s| s.0 == *ike_sa) {
                            sites.push((*ike_sa, ts_remote.clone()));
                            changed = true;
                        }
                    }
                }
                if let Some(adv) = advertise.as_ref().filter(|_| changed) {
                    for (id, _) in &sites {
                        let mut offer = adv.clone();
                        for (other, held) in &sites {
                            if other != id {
                                offer.extend(held.iter().copied());
                            }
                        }
                        outs.extend(ike.send_routes(epoch.elapsed(), *id, &offer).unwrap());
                    }
                }
                for o in outs {
                    if let Output::Send(d) = o {
                        let _ = sock.send_to(&d.bytes, d.remote);
                    }
                }
            }
        });
        (addr, thread)
    }

    #[test]
    fn a_fleet_registers_and_rekeys_against_a_responder() {
        let n = 12;
        let devices: Vec<DeviceSpec> = (0..n)
            .map(|i| DeviceSpec {
                serial: format!("bench-{i:04}"),
                psk: format!("key {i}").into_bytes(),
                prefixes: vec![(Ipv4Addr::new(10, 0, i as u8, 0), 24)],
            })
            .collect();
        let mut keys: HashMap<String, Vec<u8>> = devices
            .iter()
            .map(|d| (d.serial.clone(), d.psk.clone()))
            .collect();
        // One device with a wrong key on the hub: refused, never up.
        keys.insert("bench-0011".into(), b"another key".to_vec());
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, thread) = hub(keys, Arc::clone(&stop), None);
        let plan = FleetPlan {
            local: Ipv4Addr::LOCALHOST,
            first_port: 0,
            hub: addr,
            hub_identity: "hub.example".into(),
            devices,
            pace: None,
            rekey_pace: Some(200.0),
            timeout: Duration::from_secs(3),
            rekey: Some(Duration::from_millis(50)),
            ask: Vec::new(),
            routes: None,
            dpd: None,
        };
        let progress = Progress::default();
        let report = run(&plan, Instant::now(), &progress).unwrap();
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        assert!(progress.done.load(Ordering::Relaxed));
        assert_eq!(progress.up.load(Ordering::Relaxed), n - 1);
        assert_eq!(progress.rekeyed.load(Ordering::Relaxed), n - 1);
        let good = &report.devices[..n - 1];
        for d in good {
            let (init, est, up) = (d.init_s.unwrap(), d.established_s.unwrap(), d.up_s.unwrap());
            assert!(init <= est && est <= up, "{d:?}");
            let (a, b, c) = (
                d.rekey_start_s.unwrap(),
                d.rekey_ready_s.unwrap(),
                d.rekey_done_s.unwrap(),
            );
            assert!(up < a && a <= b && b <= c, "{d:?}");
            assert!(!d.rekey_failed && d.lost == 0, "{d:?}");
        }
        let bad = &report.devices[n - 1];
        assert!(bad.up_s.is_none() && bad.restarts >= 1, "{bad:?}");
        assert_eq!(bad.last_failure.as_deref(), Some("AuthenticationFailed"));
        // IKE_SA_INIT and IKE_AUTH per device, then CREATE_CHILD_SA and
        // the Delete per rekey; nothing lost on loopback.
        assert!(report.registration.sent >= 2 * n as u64);
        assert_eq!(report.registration.retransmitted, 0);
        assert_eq!(report.rekey.sent, 2 * (n as u64 - 1));
        assert_eq!(report.rekey.received, 2 * (n as u64 - 1));
    }

    #[test]
    fn a_fleet_follows_the_route_sets_to_convergence_and_a_newcomer() {
        // Five devices with three prefixes each; four first, then one.
        let (n, first) = (5usize, 4usize);
        let devices: Vec<DeviceSpec> = (0..n)
            .map(|i| DeviceSpec {
                serial: format!("bench-{i:04}"),
                psk: format!("key {i}").into_bytes(),
                prefixes: (0..3)
                    .map(|j| (Ipv4Addr::new(10, i as u8, j, 0), 24))
                    .collect(),
            })
            .collect();
        let keys: HashMap<String, Vec<u8>> = devices
            .iter()
            .map(|d| (d.serial.clone(), d.psk.clone()))
            .collect();
        let cloud = (Ipv4Addr::new(172, 16, 0, 0), 24);
        let stop = Arc::new(AtomicBool::new(false));
        let adv = selectors(&[cloud]).unwrap();
        let (addr, thread) = hub(keys, Arc::clone(&stop), Some(adv));
        let plan = FleetPlan {
            local: Ipv4Addr::LOCALHOST,
            first_port: 0,
            hub: addr,
            hub_identity: "hub.example".into(),
            devices,
            pace: None,
            rekey_pace: None,
            timeout: Duration::from_secs(5),
            rekey: None,
            ask: vec![cloud],
            routes: Some(RouteWatch {
                first,
                advertise: vec![cloud],
                settle: Duration::from_millis(20),
                newcomer_timeout: Duration::from_secs(5),
            }),
            dpd: None,
        };
        let progress = Progress::default();
        let report = run(&plan, Instant::now(), &progress).unwrap();
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        assert_eq!(progress.converged.load(Ordering::Relaxed), n);
        assert_eq!(progress.reached.load(Ordering::Relaxed), first);
        let start = report.newcomer_start_s.unwrap();
        for (i, d) in report.devices.iter().enumerate() {
            // Asked for the cloud only: the CHILD SA offers just that.
            assert_eq!(d.ts_remote, Some(1), "{i}: {d:?}");
            assert!(d.converged_s.is_some(), "{i}: {d:?}");
            if i < first {
                // Every other first device's 3 and the cloud, before the
                // newcomer; then the newcomer's 3 as well.
                assert!(d.converged_s.unwrap() < start, "{i}: {d:?}");
                assert!(d.newcomer_s.unwrap() > start, "{i}: {d:?}");
                assert_eq!(d.last_set, Some(3 * (n - 1) + 1), "{i}: {d:?}");
            } else {
                assert!(d.init_s.unwrap() >= start, "{d:?}");
                assert_eq!(d.last_set, Some(3 * first + 1), "{d:?}");
            }
        }
        // One chunk per set here, each an INFORMATIONAL request.
        let sets = report.registration.route_sets + report.newcomer.route_sets;
        assert!(sets >= (n + first) as u64, "{report:?}");
        assert_eq!(
            report.registration.informational + report.newcomer.informational,
            sets
        );
        assert_eq!(report.newcomer.route_sets, (first + 1) as u64);
    }

    #[test]
    fn a_set_missing_a_prefix_or_repeating_one_is_not_complete() {
        let p = |a: u8, b: u8| (Ipv4Addr::new(10, a, b, 0), 24);
        let specs: Vec<DeviceSpec> = (0..3)
            .map(|i| DeviceSpec {
                serial: format!("d{i}"),
                psk: Vec::new(),
                prefixes: vec![p(i, 0), p(i, 1)],
            })
            .collect();
        let cloud = (Ipv4Addr::new(172, 16, 0, 0), 24);
        let mut w = Watch::new(
            &specs,
            &RouteWatch {
                first: 2,
                advertise: vec![cloud],
                settle: Duration::ZERO,
                newcomer_timeout: Duration::ZERO,
            },
        );
        let ts = |l: &[(Ipv4Addr, u8)]| selectors(l).unwrap();
        // Device 0: device 1's two and the cloud; then device 2's too.
        assert_eq!(w.judge(0, &ts(&[cloud, p(1, 0), p(1, 1)])), (true, false));
        assert_eq!(
            w.judge(0, &ts(&[cloud, p(1, 0), p(1, 1), p(2, 0), p(2, 1)])),
            (true, true)
        );
        // Its own prefixes and strangers do not count; a repeat counts once.
        assert_eq!(
            w.judge(0, &ts(&[cloud, p(1, 0), p(1, 0), p(0, 0), p(9, 9)])),
            (false, false)
        );
        // The newcomer expects both first devices' and the cloud.
        assert_eq!(
            w.judge(2, &ts(&[cloud, p(0, 0), p(0, 1), p(1, 0), p(1, 1)])),
            (true, true)
        );
        assert!(is_informational_request(
            &[&[0u8; 18][..], &[37, 0x08], &[0; 8]].concat()
        ));
        assert!(!is_informational_request(
            &[&[0u8; 18][..], &[37, 0x20], &[0; 8]].concat()
        ));
    }
}
