//! Hub registration rate: N branches register with one hub at once.
//!
//! Bed: two namespaces, `branch` and `hub`, joined by one veth pair
//! (branch `wan` 203.0.113.2/24, kernel stack; hub `wan` 203.0.113.1/24,
//! Strait). The hub is a real `straitd` with an `[ike]` registry of N
//! devices (`bench-0000`…, each with its own key file of random hex, site
//! `s0000`…, prefix `10.X.Y.0/24`); liveness checks and rekeys by time are
//! off on it so that only the registrations and the rekeys the driver asks
//! for are measured. In the branch namespace one thread drives N
//! `strait-ike` initiators, one UDP socket each ([`crate::harness::branches`]).
//!
//! Measured, for each N of `--registration-branches`:
//!
//! * from the first IKE_SA_INIT until each device's CHILD SA is ready
//!   (the driver's events), until the last one is, and until the hub's
//!   `straitctl show devices --json` lists all N registered (polled every
//!   50 ms once the driver has all: an upper bound);
//! * handshakes per second, p50/p99 per-device registration time (from its
//!   own first IKE_SA_INIT, so time spent waiting for a retransmission
//!   counts);
//! * datagrams sent, retransmitted and received by the devices, and what
//!   the hub dropped (`show drops`: its IKE policer, its service queue);
//! * the hub's CPU time (utime + stime of the process from `/proc`, and by
//!   thread: the IKE thread, the worker, the rest) per registration, in
//!   all and in fifths of the run (first 20 % of the devices, …, last
//!   20 %), to show how the cost grows with the sites already registered;
//! * then every device rekeys its CHILD SA (CREATE_CHILD_SA and the Delete
//!   of the old SA): rekeys per second and the hub's CPU per rekey.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strait_testbed::{Netns, Testbed};

use super::Bench;
use crate::harness::branches::{self, DeviceSpec, FleetPlan, FleetReport, Progress, Traffic};
use crate::harness::config;
use crate::harness::daemon::Straitd;

/// The hub's and the branches' outer addresses.
pub(super) const HUB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub(super) const BRANCH: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// Device `i` sends from `BRANCH:FIRST_PORT + i`.
pub(super) const FIRST_PORT: u16 = 20_000;
/// Most devices one run takes (source ports, 16-bit egress ids).
pub const MAX_BRANCHES: usize = 20_000;
/// How often the monitor samples the hub's CPU time.
const SAMPLE: Duration = Duration::from_millis(50);

/// How the part runs (`--registration-*` options).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RegistrationPlan {
    /// One run per entry: that many devices.
    pub branches: Vec<usize>,
    /// Registrations started per second; `None`: all at once.
    pub pace: Option<f64>,
    /// Rekeys started per second; `None`: all at once.
    pub rekey_pace: Option<f64>,
    /// Longest time each phase (registration, rekey) may take.
    pub timeout_s: f64,
    /// Rekey every CHILD SA once all are up.
    pub rekey: bool,
}

impl Default for RegistrationPlan {
    fn default() -> Self {
        RegistrationPlan {
            branches: vec![1000],
            pace: None,
            rekey_pace: None,
            timeout_s: 90.0,
            rekey: true,
        }
    }
}

/// CPU time of the hub, seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct HubCpu {
    /// utime + stime of the process (`/proc/PID/stat`, 10-ms ticks).
    pub process: f64,
    /// The IKE thread (`strait-ike`), from its schedstat.
    pub ike: f64,
    /// The workers (`strait-w*`).
    pub workers: f64,
    /// Every other thread (control socket, main loop).
    pub other: f64,
}

impl HubCpu {
    pub(super) fn since(&self, earlier: &HubCpu) -> HubCpu {
        HubCpu {
            process: self.process - earlier.process,
            ike: self.ike - earlier.ike,
            workers: self.workers - earlier.workers,
            other: self.other - earlier.other,
        }
    }

    /// Milliseconds per `n` of each.
    pub(super) fn per_ms(&self, n: f64) -> HubCpu {
        let k = if n > 0.0 { 1e3 / n } else { f64::NAN };
        HubCpu {
            process: self.process * k,
            ike: self.ike * k,
            workers: self.workers * k,
            other: self.other * k,
        }
    }
}

/// USER_HZ: the unit of utime and stime in `/proc` on Linux.
const TICKS_PER_S: f64 = 100.0;

/// The hub's CPU time now.
/// The hub's CPU over one second at rest (ms per second, by thread): what
/// its threads cost with nothing to do.
pub(super) fn idle_cpu(pid: u32) -> Result<HubCpu> {
    let before = hub_cpu(pid).context("reading the hub's CPU time")?;
    std::thread::sleep(Duration::from_secs(1));
    Ok(hub_cpu(pid)
        .context("reading the hub's CPU time")?
        .since(&before)
        .per_ms(1.0))
}

/// One run per size in `sizes`, announced by `banner`, its summary printed;
/// a failed run is reported and the others still run. Returns the runs
/// and the first failure.
pub(super) fn each_size<R>(
    sizes: &[usize],
    banner: impl Fn(usize) -> String,
    summary: impl Fn(&R) -> String,
    mut run: impl FnMut(usize) -> Result<R>,
) -> (Vec<R>, Option<anyhow::Error>) {
    let (mut runs, mut failure) = (Vec::new(), None);
    for &n in sizes {
        eprintln!("== {}", banner(n));
        match run(n) {
            Ok(r) => {
                eprintln!("{}", summary(&r));
                runs.push(r);
            }
            Err(e) => {
                eprintln!("  {} failed: {e:#}", banner(n));
                failure.get_or_insert(e);
            }
        }
    }
    (runs, failure)
}

/// The hub's first warnings or errors (`(first lines, how many)`), as
/// Markdown list items.
pub(super) fn hub_log_lines(s: &mut String, log: &(Vec<String>, usize)) {
    if log.1 > 0 {
        let _ = writeln!(s, "- the hub logged {} warnings or errors, first:", log.1);
        for l in log.0.iter().take(5) {
            let _ = writeln!(s, "  - `{l}`");
        }
    }
}

/// `(all at once)` or `(N per second)`.
pub(super) fn pace_text(pace: Option<f64>) -> String {
    pace.map_or("all at once".into(), |p| format!("{p:.0} per second"))
}

pub(super) fn hub_cpu(pid: u32) -> Option<HubCpu> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is 3,
    // utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let mut cpu = HubCpu {
        process: ticks as f64 / TICKS_PER_S,
        ..HubCpu::default()
    };
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let Some(ns) = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        else {
            continue;
        };
        let s = ns as f64 / 1e9;
        match comm.trim() {
            "strait-ike" => cpu.ike += s,
            c if c.starts_with("strait-w") => cpu.workers += s,
            _ => cpu.other += s,
        }
    }
    Some(cpu)
}

/// One sample of the monitor.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    /// Seconds since the epoch of the run.
    pub t_s: f64,
    /// Devices up (driver).
    pub up: usize,
    /// Devices rekeyed (driver).
    pub rekeyed: usize,
    /// The hub's CPU time.
    pub cpu: HubCpu,
}

/// The cost of a slice of the registrations.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Window {
    /// Devices up at its start (driver's count at the sample).
    pub from: usize,
    /// And at its end.
    pub to: usize,
    /// Wall time per registration in it, ms.
    pub wall_ms: f64,
    /// Median registration time of the devices that came up in it (each
    /// from its own first IKE_SA_INIT), ms.
    pub device_p50_ms: Option<f64>,
    /// Hub CPU per registration in it, ms.
    pub cpu_ms: HubCpu,
}

/// One phase (registration or rekey) of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseResult {
    /// Devices that finished.
    pub done: usize,
    /// Devices that failed (never up; their rekey's IKE SA ended).
    pub failed: usize,
    /// From the phase's first message to the last device finished, s.
    pub all_s: Option<f64>,
    /// `done` / `all_s`.
    pub per_s: Option<f64>,
    /// Per device, from its own first message to finished: p50, ms.
    pub p50_ms: Option<f64>,
    /// p99, ms.
    pub p99_ms: Option<f64>,
    /// Largest, ms.
    pub max_ms: Option<f64>,
    /// The devices' datagrams.
    pub traffic: Traffic,
    /// The hub's CPU time in the phase (to the last device finished), s.
    pub hub_cpu_s: HubCpu,
    /// Per device finished, ms.
    pub hub_cpu_ms: HubCpu,
    /// The driver's thread's CPU time in the phase, s.
    pub driver_cpu_s: f64,
}

/// One run: N devices.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RegistrationRun {
    /// N.
    pub branches: usize,
    /// Registrations started per second (`None`: all at once).
    pub pace: Option<f64>,
    /// Registration.
    pub registration: PhaseResult,
    /// From the first IKE_SA_INIT until `show devices` listed all N, s
    /// (polled: an upper bound).
    pub hub_all_s: Option<f64>,
    /// Registered as the hub last listed them.
    pub hub_registered: usize,
    /// IKE SAs that failed before their CHILD SA came up (each device
    /// started again a second later).
    pub restarts: u32,
    /// Why devices that never came up failed last, and how many.
    pub failures: BTreeMap<String, usize>,
    /// Registration cost by fifths of the devices.
    pub windows: Vec<Window>,
    /// The hub's CPU time per second before the run (idle), ms.
    pub hub_idle_ms_per_s: HubCpu,
    /// The hub's drop counters that moved during the registrations.
    pub hub_drops: BTreeMap<String, u64>,
    /// And during the rekeys.
    pub hub_drops_rekey: BTreeMap<String, u64>,
    /// Devices that lost their IKE SA after it was up (a rekey unanswered
    /// through every retransmission) and registered again.
    pub lost: u32,
    /// Rekeying, if measured.
    pub rekey: Option<PhaseResult>,
    /// Warning and error lines the hub logged (the first 20) and their
    /// number.
    pub hub_log: (Vec<String>, usize),
    /// Every monitor sample, for charts.
    pub samples: Vec<Sample>,
}

/// Everything the part measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RegistrationResults {
    /// How it ran.
    pub plan: RegistrationPlan,
    /// One per N.
    pub runs: Vec<RegistrationRun>,
}

/// The device `i`: serial, site, prefix.
pub(super) fn device(i: usize) -> (String, String, (Ipv4Addr, u8)) {
    (
        format!("bench-{i:04}"),
        format!("s{i:04}"),
        (Ipv4Addr::new(10, (i / 256) as u8, (i % 256) as u8, 0), 24),
    )
}

/// Writes a random key (32 bytes, hex) for each of `n` devices into
/// `dir/<serial>.key`; returns them.
pub(super) fn write_keys(dir: &Path, n: usize) -> Result<Vec<Vec<u8>>> {
    use rand::RngCore as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("{}.key", device(i).0));
        std::fs::write(&path, format!("{hex}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        keys.push(hex.into_bytes());
    }
    Ok(keys)
}

/// The `k` prefixes of device `i` when each holds `k`: consecutive
/// `10.X.Y.0/24`, distinct for every device while `n × k` ≤ 65 536 (one
/// each: [`device`]'s).
pub(super) fn site_prefixes(i: usize, k: usize) -> Vec<(Ipv4Addr, u8)> {
    (i * k..(i + 1) * k)
        .map(|x| (Ipv4Addr::new(10, (x / 256) as u8, (x % 256) as u8, 0), 24))
        .collect()
}

/// The hub's configuration: one worker on `cpu`, the WAN port, and a
/// registry of `n` devices whose keys are in `keys`.
fn hub_config(cpu: usize, poll: &str, n: usize, keys: &Path) -> String {
    hub_config_with(cpu, poll, n, keys, 1, &[])
}

/// The same with `k` prefixes a device may claim ([`site_prefixes`]) and
/// the hub's `[ike] advertise`.
pub(super) fn hub_config_with(
    cpu: usize,
    poll: &str,
    n: usize,
    keys: &Path,
    k: usize,
    advertise: &[(Ipv4Addr, u8)],
) -> String {
    let mut s = config::engine(cpu, poll) + &config::interface("wan", &format!("{HUB}/24"));
    // No liveness checks and no rekeys by time: only what the driver asks
    // for is measured.
    let _ = write!(
        s,
        "\n[ike]\nidentity = \"hub.example\"\ndpd_seconds = 0\nrekey_seconds = 0\n"
    );
    let list = |p: &[(Ipv4Addr, u8)]| {
        p.iter()
            .map(|(a, l)| format!("\"{a}/{l}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !advertise.is_empty() {
        let _ = writeln!(s, "advertise = [{}]", list(advertise));
    }
    for i in 0..n {
        let (serial, site, _) = device(i);
        let _ = write!(
            s,
            "\n[[ike.device]]\nserial = \"{serial}\"\nkey_file = \"{}\"\nsite = \"{site}\"\nprefixes = [{}]\nlocal = \"{HUB}\"\n",
            keys.join(format!("{serial}.key")).display(),
            list(&site_prefixes(i, k)),
        );
    }
    s
}

/// Counters of `now` that moved since `before`.
pub(super) fn moved(
    before: &BTreeMap<String, u64>,
    now: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    now.iter()
        .filter_map(|(k, &v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

/// Every drop counter of `d`, summed over its interfaces.
pub(super) fn drops(d: &Straitd) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    if let Ok(serde_json::Value::Object(ifaces)) = d.show_json("drops") {
        for reasons in ifaces.values() {
            if let Some(r) = reasons.as_object() {
                for (k, v) in r {
                    *out.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                }
            }
        }
    }
    out
}

/// Devices the hub lists as registered.
fn hub_registered(d: &Straitd) -> Option<usize> {
    let v = d.show_json("devices").ok()?;
    Some(
        v.as_array()?
            .iter()
            .filter(|d| d["registered"].as_bool() == Some(true))
            .count(),
    )
}

/// The `q`-quantile of sorted `v`.
pub(super) fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

/// The last sample at or before `t`, and the first at or after it.
fn around(samples: &[Sample], t: f64) -> (Option<&Sample>, Option<&Sample>) {
    (
        samples.iter().rev().find(|s| s.t_s <= t),
        samples.iter().find(|s| s.t_s >= t),
    )
}

/// A phase's figures from each device's (start, finish) times.
fn phase_result(
    spans: &[(Option<f64>, Option<f64>)],
    failed: usize,
    traffic: Traffic,
    start_s: f64,
    samples: &[Sample],
    driver_cpu_s: f64,
) -> PhaseResult {
    let mut per: Vec<f64> = spans
        .iter()
        .filter_map(|&(a, b)| Some((b? - a?) * 1e3))
        .collect();
    per.sort_by(f64::total_cmp);
    let last = spans
        .iter()
        .filter_map(|s| s.1)
        .max_by(f64::total_cmp)
        .map(|t| t - start_s);
    let done = per.len();
    // The hub's CPU from the last sample before the first message to the
    // first sample after the last device finished.
    let hub_cpu_s = match (
        around(samples, start_s).0,
        last.and_then(|l| around(samples, start_s + l).1),
    ) {
        (Some(a), Some(b)) => b.cpu.since(&a.cpu),
        _ => HubCpu::default(),
    };
    PhaseResult {
        done,
        failed,
        all_s: last,
        per_s: last.filter(|&l| l > 0.0).map(|l| done as f64 / l),
        p50_ms: quantile(&per, 0.5),
        p99_ms: quantile(&per, 0.99),
        max_ms: per.last().copied(),
        traffic,
        hub_cpu_ms: hub_cpu_s.per_ms(done as f64),
        hub_cpu_s,
        driver_cpu_s,
    }
}

/// Registration cost by fifths of the devices, from the samples;
/// `latency` holds each device's registration time, ms, in the order they
/// came up.
fn windows(samples: &[Sample], n: usize, latency: &[f64]) -> Vec<Window> {
    let mut marks: Vec<&Sample> = Vec::new();
    if let Some(first) = samples.first() {
        marks.push(first);
    }
    for k in 1..=5 {
        let want = (n * k).div_ceil(5);
        if let Some(s) = samples.iter().find(|s| s.up >= want) {
            marks.push(s);
        }
    }
    marks
        .windows(2)
        .filter_map(|w| {
            let (a, b) = (w[0], w[1]);
            let d = b.up.checked_sub(a.up).filter(|&d| d > 0)? as f64;
            let mut lat: Vec<f64> = latency
                .get(a.up..b.up.min(latency.len()))
                .unwrap_or_default()
                .to_vec();
            lat.sort_by(f64::total_cmp);
            Some(Window {
                from: a.up,
                to: b.up,
                wall_ms: (b.t_s - a.t_s) * 1e3 / d,
                device_p50_ms: quantile(&lat, 0.5),
                cpu_ms: b.cpu.since(&a.cpu).per_ms(d),
            })
        })
        .collect()
}

/// Warning and error lines of a daemon's log.
pub(super) fn log_warnings(out: &Path, name: &str) -> (Vec<String>, usize) {
    let text = std::fs::read_to_string(out.join(format!("{name}.log"))).unwrap_or_default();
    let all: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    (
        all.iter().take(20).map(|l| (*l).to_owned()).collect(),
        all.len(),
    )
}

/// The bed: branch and hub joined by one veth pair.
pub(super) fn bed(tag: &str) -> Result<(Testbed, Netns, Netns)> {
    let mut tb = Testbed::new(tag);
    let branch = tb.netns("branch")?;
    let hub = tb.netns("hub")?;
    tb.veth((&branch, "wan"), (&hub, "wan"))?;
    branch.addr("wan", &format!("{BRANCH}/24"))?;
    // The kernel's UDP checksums are finished in software, not left to an
    // offload the hub's XDP never sees done.
    branch.disable_tx_offload("wan")?;
    Ok((tb, branch, hub))
}

impl Bench {
    /// The registration part (see the module's documentation).
    pub fn registration(&mut self) -> Result<()> {
        let plan = self.settings.registration.clone();
        if let Some(n) = plan.branches.iter().find(|&&n| n == 0 || n > MAX_BRANCHES) {
            bail!("--registration-branches: {n} is not between 1 and {MAX_BRANCHES}");
        }
        let (runs, failure) = each_size(
            &plan.branches,
            |n| {
                format!(
                    "Registration: {n} branches → one hub ({})",
                    pace_text(plan.pace)
                )
            },
            RegistrationRun::summary,
            |n| self.registration_run(n, &plan),
        );
        self.registration = Some(RegistrationResults {
            plan: plan.clone(),
            runs,
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn registration_run(&mut self, n: usize, plan: &RegistrationPlan) -> Result<RegistrationRun> {
        crate::sys::raise_open_files(n as u64 + 256).context("raising the open-file limit")?;
        let (_tb, branch, hub_ns) = bed("bench-reg")?;
        let name = format!("reg-hub-{n}");
        let keys_dir = self.out.join(format!("reg-keys-{n}"));
        let keys = write_keys(&keys_dir, n)?;
        let cfg = hub_config(
            self.settings.dut_cpu,
            self.settings.site_poll.toml(),
            n,
            &keys_dir,
        );
        let hub = Straitd::start(&hub_ns, &self.bins, &self.out, &name, &cfg)?;
        let pid = hub.pid();
        let fleet = FleetPlan {
            local: BRANCH,
            first_port: FIRST_PORT,
            hub: SocketAddrV4::new(HUB, 500),
            hub_identity: "hub.example".into(),
            devices: (0..n)
                .map(|i| {
                    let (serial, _, prefix) = device(i);
                    DeviceSpec {
                        serial,
                        psk: keys[i].clone(),
                        prefixes: vec![prefix],
                    }
                })
                .collect(),
            pace: plan.pace,
            rekey_pace: plan.rekey_pace,
            timeout: Duration::from_secs_f64(plan.timeout_s),
            rekey: plan.rekey.then_some(Duration::from_secs(2)),
            // 0.0.0.0/0, as a branch that learns its routes.
            ask: Vec::new(),
            routes: None,
            dpd: None,
        };
        let idle = idle_cpu(pid)?;
        let drops_before = drops(&hub);
        let progress = Progress::default();
        let epoch = Instant::now();
        let bound = Duration::from_secs_f64(plan.timeout_s * 2.0 + 30.0);
        let mut samples = Vec::new();
        let mut hub_all: Option<f64> = None;
        let mut hub_count = 0;
        let mut drops_at_rekey = None;
        let report: Result<FleetReport> = std::thread::scope(|s| {
            let driver = s.spawn(|| {
                branch
                    .enter(|| branches::run(&fleet, epoch, &progress))
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r)
            });
            let mut last_query = Instant::now();
            let mut next = Instant::now();
            while !driver.is_finished() && !progress.done.load(Ordering::Relaxed) {
                if let Some(cpu) = hub_cpu(pid) {
                    samples.push(Sample {
                        t_s: epoch.elapsed().as_secs_f64(),
                        up: progress.up.load(Ordering::Relaxed),
                        rekeyed: progress.rekeyed.load(Ordering::Relaxed),
                        cpu,
                    });
                }
                // The hub's own view: once a second, and every sample once
                // the driver has every device up, until the hub agrees.
                let all_driver = progress.up.load(Ordering::Relaxed) == n;
                if hub_all.is_none()
                    && (last_query.elapsed() >= Duration::from_secs(1) || all_driver)
                {
                    last_query = Instant::now();
                    if let Some(c) = hub_registered(&hub) {
                        hub_count = c;
                        if c == n {
                            hub_all = Some(epoch.elapsed().as_secs_f64());
                        }
                    }
                }
                if drops_at_rekey.is_none() && progress.rekeying.load(Ordering::Relaxed) {
                    drops_at_rekey = Some(drops(&hub));
                }
                if epoch.elapsed() > bound {
                    progress.stop.store(true, Ordering::Relaxed);
                }
                next += SAMPLE;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            driver.join().expect("the driver does not panic")
        });
        if let Some(cpu) = hub_cpu(pid) {
            samples.push(Sample {
                t_s: epoch.elapsed().as_secs_f64(),
                up: progress.up.load(Ordering::Relaxed),
                rekeyed: progress.rekeyed.load(Ordering::Relaxed),
                cpu,
            });
        }
        let report = report?;
        if let Some(c) = hub_registered(&hub) {
            hub_count = c;
        }
        let drops_after = drops(&hub);
        let (hub_drops, hub_drops_rekey) = match &drops_at_rekey {
            Some(mid) => (moved(&drops_before, mid), moved(mid, &drops_after)),
            None => (moved(&drops_before, &drops_after), BTreeMap::new()),
        };
        hub.save_shows(&self.out, &name, &["ike", "drops", "counters", "workers"]);
        drop(hub);
        let _ = std::fs::write(
            self.out.join(format!("{name}.fleet.json")),
            serde_json::to_string(&report).unwrap_or_default(),
        );
        let reg_spans: Vec<_> = report.devices.iter().map(|d| (d.init_s, d.up_s)).collect();
        let never_up = report.devices.iter().filter(|d| d.up_s.is_none()).count();
        let registration = phase_result(
            &reg_spans,
            never_up,
            report.registration,
            report.start_s,
            &samples,
            report.driver_cpu_s.0,
        );
        let rekey = report.rekey_start_s.map(|start| {
            let spans: Vec<_> = report
                .devices
                .iter()
                .map(|d| (d.rekey_start_s, d.rekey_done_s))
                .collect();
            let failed = report.devices.iter().filter(|d| d.rekey_failed).count();
            phase_result(
                &spans,
                failed,
                report.rekey,
                start,
                &samples,
                report.driver_cpu_s.1,
            )
        });
        let mut failures = BTreeMap::new();
        for d in report.devices.iter().filter(|d| d.up_s.is_none()) {
            *failures
                .entry(d.last_failure.clone().unwrap_or_else(|| "no answer".into()))
                .or_default() += 1;
        }
        let mut in_order: Vec<(f64, f64)> = report
            .devices
            .iter()
            .filter_map(|d| Some((d.up_s?, (d.up_s? - d.init_s?) * 1e3)))
            .collect();
        in_order.sort_by(|a, b| a.0.total_cmp(&b.0));
        let in_order: Vec<f64> = in_order.into_iter().map(|x| x.1).collect();
        let reg_samples: Vec<Sample> = samples
            .iter()
            .copied()
            .filter(|s| report.rekey_start_s.is_none_or(|r| s.t_s <= r))
            .collect();
        Ok(RegistrationRun {
            branches: n,
            pace: plan.pace,
            registration,
            hub_all_s: hub_all.map(|t| t - report.start_s),
            hub_registered: hub_count,
            restarts: report.devices.iter().map(|d| d.restarts).sum(),
            failures,
            windows: windows(&reg_samples, n, &in_order),
            hub_idle_ms_per_s: idle,
            hub_drops,
            hub_drops_rekey,
            lost: report.devices.iter().map(|d| d.lost).sum(),
            rekey,
            hub_log: log_warnings(&self.out, &name),
            samples,
        })
    }
}

/// Table cell (shared with the routes part).
pub(super) fn ms(x: Option<f64>) -> String {
    x.map_or("—".into(), |v| format!("{v:.0}"))
}

/// Table cell (shared with the routes part).
pub(super) fn secs(x: Option<f64>) -> String {
    x.map_or("—".into(), |v| format!("{v:.2}"))
}

fn rate(x: Option<f64>) -> String {
    x.map_or("—".into(), |v| format!("{v:.0}"))
}

fn pace(p: Option<f64>) -> String {
    p.map_or("all at once".into(), |p| format!("{p:.0}/s"))
}

/// Table cell (shared with the routes part).
pub(super) fn counters(c: &BTreeMap<String, u64>) -> String {
    if c.is_empty() {
        return "—".into();
    }
    c.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl RegistrationRun {
    /// One paragraph for the console.
    fn summary(&self) -> String {
        let r = &self.registration;
        let mut s = format!(
            "  {} of {} up in {} s ({} handshakes/s), hub listed all in {} s; per device p50 {} ms p99 {} ms; sent {} ({} retransmitted), {} restarts, hub drops: {}; hub CPU {:.2} ms/registration (IKE thread {:.2})",
            r.done,
            self.branches,
            secs(r.all_s),
            rate(r.per_s),
            secs(self.hub_all_s),
            ms(r.p50_ms),
            ms(r.p99_ms),
            r.traffic.sent,
            r.traffic.retransmitted,
            self.restarts,
            counters(&self.hub_drops),
            r.hub_cpu_ms.process,
            r.hub_cpu_ms.ike,
        );
        if let Some(k) = &self.rekey {
            let _ = write!(
                s,
                "\n  rekeys: {} done, {} failed, in {} s ({} /s); sent {} ({} retransmitted), hub drops: {}; hub CPU {:.2} ms/rekey (IKE thread {:.2})",
                k.done,
                k.failed,
                secs(k.all_s),
                rate(k.per_s),
                k.traffic.sent,
                k.traffic.retransmitted,
                counters(&self.hub_drops_rekey),
                k.hub_cpu_ms.process,
                k.hub_cpu_ms.ike,
            );
        }
        s
    }
}

impl RegistrationResults {
    /// The part's tables.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.runs.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "\n### Hub registration rate (hub: straitd, 1 worker, IKE on its own thread; branches: one driver thread, one strait-ike initiator and UDP socket per branch)\n\n\
             | branches | started | up | all up s (driver) | hub lists all s | handshakes/s | per device p50 / p99 ms | datagrams sent | retransmitted | restarts | hub drops | hub CPU ms/registration (process; IKE thread / worker) | driver CPU s |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in &self.runs {
            let g = &r.registration;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {:.2}; {:.2} / {:.2} | {:.2} |",
                r.branches,
                pace(r.pace),
                g.done,
                secs(g.all_s),
                secs(r.hub_all_s),
                rate(g.per_s),
                ms(g.p50_ms),
                ms(g.p99_ms),
                g.traffic.sent,
                g.traffic.retransmitted,
                r.restarts,
                counters(&r.hub_drops),
                g.hub_cpu_ms.process,
                g.hub_cpu_ms.ike,
                g.hub_cpu_ms.workers,
                g.driver_cpu_s,
            );
        }
        let _ = writeln!(
            s,
            "\nCost as the registry fills (by fifths of the devices, as they came up):\n\n\
             | branches | devices | wall ms/registration | per device p50 ms | hub CPU ms/registration (process; IKE thread) |\n|---|---|---|---|---|"
        );
        for r in &self.runs {
            for w in &r.windows {
                let _ = writeln!(
                    s,
                    "| {} | {}–{} | {:.2} | {} | {:.2}; {:.2} |",
                    r.branches,
                    w.from,
                    w.to,
                    w.wall_ms,
                    ms(w.device_p50_ms),
                    w.cpu_ms.process,
                    w.cpu_ms.ike
                );
            }
        }
        if self.runs.iter().any(|r| r.rekey.is_some()) {
            let _ = writeln!(
                s,
                "\nRekeys once all were up (every branch's CHILD SA: CREATE_CHILD_SA, then the Delete of the old SA):\n\n\
                 | branches | started | rekeyed | failed | all done s | rekeys/s | per device p50 / p99 ms | datagrams sent | retransmitted | hub drops | hub CPU ms/rekey (process; IKE thread / worker) |\n\
                 |---|---|---|---|---|---|---|---|---|---|---|"
            );
            for r in &self.runs {
                if let Some(k) = &r.rekey {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {:.2}; {:.2} / {:.2} |",
                        r.branches,
                        pace(self.plan.rekey_pace),
                        k.done,
                        k.failed,
                        secs(k.all_s),
                        rate(k.per_s),
                        ms(k.p50_ms),
                        ms(k.p99_ms),
                        k.traffic.sent,
                        k.traffic.retransmitted,
                        counters(&r.hub_drops_rekey),
                        k.hub_cpu_ms.process,
                        k.hub_cpu_ms.ike,
                        k.hub_cpu_ms.workers,
                    );
                }
            }
        }
        for r in &self.runs {
            let _ = writeln!(
                s,
                "\n{} branches: hub idle {:.1} ms CPU/s (IKE thread {:.1}, worker {:.1}); the hub listed {} registered at the end",
                r.branches,
                r.hub_idle_ms_per_s.process,
                r.hub_idle_ms_per_s.ike,
                r.hub_idle_ms_per_s.workers,
                r.hub_registered
            );
            if !r.failures.is_empty() {
                let _ = writeln!(s, "- never up: {:?}", r.failures);
            }
            if r.lost > 0 {
                let _ = writeln!(
                    s,
                    "- {} IKE SAs ended after they were up (a rekey unanswered through every retransmission, 31 s) and registered again",
                    r.lost
                );
            }
            hub_log_lines(&mut s, &r.hub_log);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_get_distinct_serials_sites_and_prefixes() {
        assert_eq!(
            device(0),
            (
                "bench-0000".into(),
                "s0000".into(),
                ([10, 0, 0, 0].into(), 24)
            )
        );
        assert_eq!(device(999).2, ([10, 3, 231, 0].into(), 24));
        let mut seen = std::collections::HashSet::new();
        assert!((0..MAX_BRANCHES).all(|i| seen.insert(device(i).2)));
    }

    #[test]
    fn hub_config_lists_every_device_with_its_key_file() {
        let c = hub_config(1, "adaptive", 3, Path::new("/k"));
        assert!(c.contains("identity = \"hub.example\""), "{c}");
        assert_eq!(c.matches("[[ike.device]]").count(), 3);
        assert!(c.contains("serial = \"bench-0002\"\nkey_file = \"/k/bench-0002.key\"\nsite = \"s0002\"\nprefixes = [\"10.0.2.0/24\"]\nlocal = \"203.0.113.1\"\n"), "{c}");
    }

    #[test]
    fn sites_with_several_prefixes_get_distinct_ones_all_in_the_registry() {
        assert_eq!(site_prefixes(7, 1), vec![device(7).2]);
        assert_eq!(
            site_prefixes(64, 4),
            vec![
                ([10, 1, 0, 0].into(), 24),
                ([10, 1, 1, 0].into(), 24),
                ([10, 1, 2, 0].into(), 24),
                ([10, 1, 3, 0].into(), 24)
            ]
        );
        let mut seen = std::collections::HashSet::new();
        assert!((0..16_384).all(|i| site_prefixes(i, 4).into_iter().all(|p| seen.insert(p))));
        let cloud = [([172, 16, 0, 0].into(), 24)];
        let c = hub_config_with(1, "adaptive", 2, Path::new("/k"), 4, &cloud);
        assert!(c.contains("advertise = [\"172.16.0.0/24\"]\n"), "{c}");
        assert!(
            c.contains("site = \"s0001\"\nprefixes = [\"10.0.4.0/24\", \"10.0.5.0/24\", \"10.0.6.0/24\", \"10.0.7.0/24\"]\n"),
            "{c}"
        );
        assert!(!hub_config(1, "adaptive", 2, Path::new("/k")).contains("advertise"));
    }

    #[test]
    fn keys_are_random_hex_one_file_each() {
        let dir = std::env::temp_dir().join(format!("strait-reg-keys-{}", std::process::id()));
        let keys = write_keys(&dir, 2).unwrap();
        assert_ne!(keys[0], keys[1]);
        let text = std::fs::read_to_string(dir.join("bench-0001.key")).unwrap();
        assert_eq!(text.trim().as_bytes(), &keys[1][..]);
        assert_eq!(text.trim().len(), 64);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn sample(t_s: f64, up: usize, ike: f64) -> Sample {
        Sample {
            t_s,
            up,
            rekeyed: 0,
            cpu: HubCpu {
                process: ike,
                ike,
                workers: 0.0,
                other: 0.0,
            },
        }
    }

    #[test]
    fn windows_divide_the_cost_by_the_devices_that_came_up() {
        // 10 devices; the first five cost 1 ms each, the last five 3 ms.
        let s: Vec<Sample> = (0..=10)
            .map(|i| {
                let cpu = if i <= 5 {
                    i as f64 * 1e-3
                } else {
                    5e-3 + (i - 5) as f64 * 3e-3
                };
                sample(i as f64 * 0.1, i, cpu)
            })
            .collect();
        let lat: Vec<f64> = (0..10).map(f64::from).collect();
        let w = windows(&s, 10, &lat);
        assert_eq!(w.len(), 5);
        assert_eq!((w[0].from, w[0].to), (0, 2));
        assert!((w[0].cpu_ms.ike - 1.0).abs() < 1e-9);
        assert!((w[4].cpu_ms.ike - 3.0).abs() < 1e-9);
        assert!((w[4].wall_ms - 100.0).abs() < 1e-9);
        assert_eq!(w[0].device_p50_ms, Some(0.0));
        assert_eq!(w[4].device_p50_ms, Some(8.0));
    }

    #[test]
    fn phase_figures_come_from_each_device_s_own_span() {
        let spans = [
            (Some(1.0), Some(1.1)),
            (Some(1.0), Some(1.5)),
            (Some(1.0), None),
        ];
        let s = [sample(0.9, 0, 0.0), sample(1.6, 2, 0.004)];
        let p = phase_result(&spans, 1, Traffic::default(), 1.0, &s, 0.1);
        assert_eq!(p.done, 2);
        assert!((p.all_s.unwrap() - 0.5).abs() < 1e-9);
        assert!((p.per_s.unwrap() - 4.0).abs() < 1e-9);
        assert!((p.p50_ms.unwrap() - 100.0).abs() < 1e-6);
        assert!((p.p99_ms.unwrap() - 500.0).abs() < 1e-6);
        assert!((p.hub_cpu_ms.ike - 2.0).abs() < 1e-9);
    }
}
