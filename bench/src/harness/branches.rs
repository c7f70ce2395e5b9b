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

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
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
    /// The prefix behind it (its TSi).
    pub prefix: (Ipv4Addr, u8),
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

struct Driver<'a> {
    devices: Vec<Device>,
    poll: Poll,
    epoch: Instant,
    progress: &'a Progress,
    buf: Vec<u8>,
}

impl Driver<'_> {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Sends what `outs` asks and acts on its events, for device `i`.
    fn carry_out(&mut self, i: usize, outs: Vec<Output>, retransmit: bool, t: &mut Traffic) {
        let now = self.now().as_secs_f64();
        let progress = self.progress;
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
                    Event::ChildSaReady { spi_in, .. } => match d.state {
                        State::Registering => {
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
                    Event::RoutesReceived { .. } | Event::SelectorsRefused { .. } => {}
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
                let now = self.epoch.elapsed();
                let outs = d.ike.handle_datagram(now, src, d.local, &self.buf[..n]);
                self.carry_out(i, outs, false, t);
            }
        }
        Ok(())
    }

    /// Runs one phase: `start(i)` for every device (paced), then services
    /// until `done` holds or `timeout` passes.
    fn phase(
        &mut self,
        pace: Option<f64>,
        timeout: Duration,
        mut start: impl FnMut(&mut Self, usize, &mut Traffic),
        done: impl Fn(&Self) -> bool,
    ) -> Result<Traffic> {
        let mut t = Traffic::default();
        let mut events = Events::with_capacity(1024);
        let t0 = self.now();
        let deadline = t0 + timeout;
        let n = self.devices.len();
        let mut next = 0;
        while self.now() < deadline && !self.progress.stop.load(Ordering::Relaxed) {
            let now = self.now();
            let due = match pace {
                None => n,
                Some(p) => (((now - t0).as_secs_f64() * p).floor() as usize + 1).min(n),
            };
            while next < due {
                start(self, next, &mut t);
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
        let ts = TrafficSelector::prefix(spec.prefix.0.into(), spec.prefix.1)
            .ok_or_else(|| anyhow!("bad prefix for {}", spec.serial))?;
        let mut config = Config::new(Identity::Fqdn(spec.serial.clone()));
        config.local_ts = vec![ts];
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
                remote_ts: vec![TrafficSelector::any_v4()],
            },
            sa: None,
            child_in: None,
            state: State::Idle,
            wake: None,
            retry_at: None,
            rec: DeviceRecord::default(),
        });
    }
    let mut d = Driver {
        devices,
        poll,
        epoch,
        progress,
        buf: vec![0; 65536],
    };
    let mut report = FleetReport {
        start_s: epoch.elapsed().as_secs_f64(),
        ..FleetReport::default()
    };
    let cpu0 = thread_cpu_s();
    let all_up = |d: &Driver<'_>| d.devices.iter().all(|x| x.rec.up_s.is_some());
    report.registration = d.phase(plan.pace, plan.timeout, Driver::initiate, all_up)?;
    let cpu1 = thread_cpu_s();
    if let Some(settle) = plan.rekey {
        // Let the hub finish what the registrations left (its tables, its
        // views) so the rekeys are measured alone; keep answering.
        let mut idle = Traffic::default();
        let mut events = Events::with_capacity(1024);
        let until = d.now() + settle;
        while d.now() < until && !progress.stop.load(Ordering::Relaxed) {
            d.service(&mut events, until, &mut idle)?;
        }
        report.registration.received += idle.received;
        report.registration.sent += idle.sent;
        report.registration.retransmitted += idle.retransmitted;
        let cpu2 = thread_cpu_s();
        report.rekey_start_s = Some(epoch.elapsed().as_secs_f64());
        progress.rekeying.store(true, Ordering::Relaxed);
        let all_rekeyed = |d: &Driver<'_>| {
            d.devices
                .iter()
                .all(|x| !matches!(x.state, State::Rekeying(_)))
        };
        report.rekey = d.phase(plan.rekey_pace, plan.timeout, Driver::rekey, all_rekeyed)?;
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
    /// answering until `stop`.
    fn hub(
        keys: HashMap<String, Vec<u8>>,
        stop: Arc<AtomicBool>,
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
            while !stop.load(Ordering::Relaxed) {
                let mut outs = Vec::new();
                if let Ok((n, src)) = sock.recv_from(&mut buf) {
                    let local = SocketAddr::V4(addr);
                    outs = ike.handle_datagram(epoch.elapsed(), src, local, &buf[..n]);
                }
                outs.extend(ike.poll(epoch.elapsed()));
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
                prefix: (Ipv4Addr::new(10, 0, i as u8, 0), 24),
            })
            .collect();
        let mut keys: HashMap<String, Vec<u8>> = devices
            .iter()
            .map(|d| (d.serial.clone(), d.psk.clone()))
            .collect();
        // One device with a wrong key on the hub: refused, never up.
        keys.insert("bench-0011".into(), b"another key".to_vec());
        let stop = Arc::new(AtomicBool::new(false));
        let (addr, thread) = hub(keys, Arc::clone(&stop));
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
}
