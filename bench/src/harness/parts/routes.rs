//! Route exchange at scale: N sites with K prefixes each register with one
//! hub, which announces to every site the others' prefixes (transit) and
//! its own `advertise`.
//!
//! Bed: the registration part's ([`super::registration`]): namespaces
//! `branch` and `hub` joined by one veth pair, a real `straitd` hub (one
//! worker, liveness checks and rekeys by time off) with a registry of N + 1
//! devices, each allowed its own K prefixes (`10.X.Y.0/24`, consecutive,
//! distinct) and the hub advertising [`CLOUD`] (172.16.0.0/24); in the
//! branch namespace one thread drives N + 1 `strait-ike` initiators
//! ([`crate::harness::branches`]), each claiming its K prefixes as its TSi
//! and asking for [`CLOUD`] as its TSr (or 0.0.0.0/0 with
//! `--routes-ask any`, as a branch that learns its routes).
//!
//! Measured, for each N of `--routes-sites`:
//!
//! * convergence: the N register (all at once, or paced); from the first
//!   IKE_SA_INIT until every device's latest route set holds every other
//!   site's K prefixes and the advertise ((N − 1) × K + 1), and from the
//!   last CHILD SA up until then; per device, p50/p99/max;
//! * a newcomer: 2 s after convergence device N registers; from its first
//!   IKE_SA_INIT until each of the N holds a set with its K prefixes
//!   (p50/p99/max over them), and until its own set holds all N × K + 1;
//! * the hub's memory: VmRSS before any registration, once all converged
//!   and at the end, and per site;
//! * what the announcements cost: route sets received, INFORMATIONAL
//!   requests received (one chunk each, retransmissions and chunks of sets
//!   superseded before their end included) against the fewest that carry
//!   one full set to each site, and the hub's CPU (process and IKE thread)
//!   in each phase.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::registration::{
    bed, counters, device, drops, each_size, hub_config_with, hub_cpu, hub_log_lines, idle_cpu,
    log_warnings, moved, ms, pace_text, quantile, secs, site_prefixes, write_keys, HubCpu, BRANCH,
    FIRST_PORT, HUB, MAX_BRANCHES,
};
use super::Bench;
use crate::harness::branches::{
    self, DeviceSpec, FleetPlan, FleetReport, Progress, RouteWatch, Traffic,
};
use crate::harness::daemon::{vm_rss_kib, Straitd};

/// The hub's `[ike] advertise`: in every site's set.
pub const CLOUD: (Ipv4Addr, u8) = (Ipv4Addr::new(172, 16, 0, 0), 24);
/// /24s in 10.0.0.0/8: sites × prefixes at most.
pub const MAX_PREFIXES: usize = 65_536;
/// How often the monitor samples the hub.
const SAMPLE: Duration = Duration::from_millis(100);
/// Entry bytes of an IPv4 /24 in a route-set chunk, and entry bytes per
/// chunk (`strait_ike::routes`).
const ENTRY_BYTES: usize = 5;
const CHUNK_BYTES: usize = strait_ike::routes::CHUNK_BYTES;

/// What the devices ask to reach through the hub (their TSr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Ask {
    /// The hub's advertise (as a branch with `learn = false` and that in
    /// its `prefixes`): the IKE_AUTH answer stays small, the routes come
    /// in the announcements.
    Cloud,
    /// 0.0.0.0/0 (as a branch with `learn = true`): the hub narrows it to
    /// everything it offers, in the IKE_AUTH answer's TSr.
    Any,
}

/// How the part runs (`--routes-*` options).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RoutesPlan {
    /// One run per entry: that many sites (and one newcomer).
    pub sites: Vec<usize>,
    /// Prefixes per site.
    pub prefixes: usize,
    /// What the devices ask for.
    pub ask: Ask,
    /// Registrations started per second; `None`: all at once.
    pub pace: Option<f64>,
    /// Longest time until convergence, s.
    pub timeout_s: f64,
    /// Longest time the newcomer's phase may take, s.
    pub newcomer_timeout_s: f64,
    /// The devices' liveness checks after this many seconds of silence;
    /// `None`: off (the hub's are off too).
    pub dpd_s: Option<u64>,
}

impl Default for RoutesPlan {
    fn default() -> Self {
        RoutesPlan {
            sites: vec![1000],
            prefixes: 4,
            ask: Ask::Cloud,
            pace: None,
            timeout_s: 300.0,
            newcomer_timeout_s: 120.0,
            dpd_s: None,
        }
    }
}

/// One monitor sample.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RouteSample {
    /// Seconds since the epoch of the run.
    pub t_s: f64,
    /// Devices up (driver).
    pub up: usize,
    /// Devices converged (driver).
    pub converged: usize,
    /// Devices holding the newcomer's prefixes.
    pub reached: usize,
    /// The hub's CPU time.
    pub cpu: HubCpu,
    /// The hub's VmRSS, KiB.
    pub rss_kib: u64,
}

/// p50, p99 and largest of some times, ms.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Spread {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(f64::total_cmp);
        Spread {
            p50: quantile(&v, 0.5),
            p99: quantile(&v, 0.99),
            max: v.last().copied(),
        }
    }
}

/// The newcomer's phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Newcomer {
    /// Its CHILD SA up, from its first IKE_SA_INIT, ms.
    pub up_ms: Option<f64>,
    /// Earlier sites that got a set with its prefixes.
    pub reached: usize,
    /// Of.
    pub of: usize,
    /// From its first IKE_SA_INIT until each earlier site held a set with
    /// its prefixes, ms.
    pub reach_ms: Spread,
    /// Until its own set held every other site's and the advertise, ms.
    pub own_set_ms: Option<f64>,
    /// The devices' datagrams and route sets in the phase.
    pub traffic: Traffic,
    /// The hub's CPU from its first IKE_SA_INIT until the last site was
    /// reached, ms.
    pub hub_cpu_ms: HubCpu,
    /// The driver's thread, s.
    pub driver_cpu_s: f64,
    /// The hub's drop counters that moved in the phase.
    pub hub_drops: BTreeMap<String, u64>,
}

/// One run: N sites.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoutesRun {
    /// N.
    pub sites: usize,
    /// K.
    pub prefixes: usize,
    /// What the devices asked for.
    pub ask: Ask,
    /// Registrations started per second (`None`: all at once).
    pub pace: Option<f64>,
    /// Devices of the N whose CHILD SA came up.
    pub up: usize,
    /// Devices of the N converged at the end of the phase.
    pub converged: usize,
    /// From the first IKE_SA_INIT until the last of the N was up, s.
    pub all_up_s: Option<f64>,
    /// Until the last converged (all N), s.
    pub converged_s: Option<f64>,
    /// From the last up until all converged, s.
    pub after_last_up_s: Option<f64>,
    /// Per device, from the first IKE_SA_INIT until it converged, ms.
    pub device_converged_ms: Spread,
    /// Prefixes a full set holds: (N − 1) × K + advertise.
    pub full_set: usize,
    /// Chunks of a full set.
    pub full_set_chunks: usize,
    /// The largest TSr an IKE_AUTH answer carried (selectors).
    pub ts_remote_max: Option<usize>,
    /// The registrations' and convergence's datagrams and route sets.
    pub traffic: Traffic,
    /// IKE SAs that failed before their CHILD SA came up.
    pub restarts: u32,
    /// IKE SAs that ended after it (the devices' liveness checks found
    /// the hub had forgotten them), each registered again.
    pub lost: u32,
    /// IKE SAs the hub declared dead (a request of its own, a route-set
    /// chunk here, unanswered through every retransmission: 1 + 2 + 4 +
    /// 8 s) and tore down without telling the device.
    pub hub_dead_peers: Option<u64>,
    /// Devices' liveness checks, s (`None`: off).
    pub dpd_s: Option<u64>,
    /// Why devices that never came up failed last, and how many.
    pub failures: BTreeMap<String, usize>,
    /// The hub's CPU from the first IKE_SA_INIT until all converged (or
    /// the phase ended), s.
    pub hub_cpu_s: HubCpu,
    /// The hub at rest before, ms per s.
    pub hub_idle_ms_per_s: HubCpu,
    /// The hub's VmRSS before any registration, KiB.
    pub rss_before_kib: Option<u64>,
    /// Once all converged (or the phase ended), KiB.
    pub rss_converged_kib: Option<u64>,
    /// At the end, KiB.
    pub rss_end_kib: Option<u64>,
    /// VmHWM at the end, KiB.
    pub hwm_end_kib: Option<u64>,
    /// (converged − before) / N, KiB.
    pub rss_per_site_kib: Option<f64>,
    /// The newcomer, if all had converged.
    pub newcomer: Option<Newcomer>,
    /// The hub's drop counters that moved until the newcomer's phase.
    pub hub_drops: BTreeMap<String, u64>,
    /// Warning and error lines the hub logged (the first 20), and their
    /// number.
    pub hub_log: (Vec<String>, usize),
    /// The driver's thread's CPU in the registration phase, s.
    pub driver_cpu_s: f64,
    /// Every monitor sample.
    pub samples: Vec<RouteSample>,
}

/// Everything the part measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RoutesResults {
    /// How it ran.
    pub plan: RoutesPlan,
    /// One per N.
    pub runs: Vec<RoutesRun>,
}

/// `VmHWM` of `/proc/<pid>/status`, KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Chunks that carry a set of `prefixes` IPv4 /24s.
fn chunks_of(prefixes: usize) -> usize {
    (prefixes * ENTRY_BYTES).div_ceil(CHUNK_BYTES).max(1)
}

/// The hub's CPU between the last sample at or before `a` and the first at
/// or after `b`.
fn cpu_between(samples: &[RouteSample], a: f64, b: f64) -> HubCpu {
    let from = samples.iter().rev().find(|s| s.t_s <= a);
    let to = samples.iter().find(|s| s.t_s >= b).or(samples.last());
    match (from, to) {
        (Some(x), Some(y)) => y.cpu.since(&x.cpu),
        _ => HubCpu::default(),
    }
}

/// The run's figures from what the driver and the monitor saw.
fn figures(
    n: usize,
    k: usize,
    report: &FleetReport,
    samples: &[RouteSample],
) -> (RoutesRun, Option<f64>) {
    let start = report.start_s;
    let first = &report.devices[..n.min(report.devices.len())];
    let up = first.iter().filter(|d| d.up_s.is_some()).count();
    let converged = first.iter().filter(|d| d.converged_s.is_some()).count();
    let last_up = first.iter().filter_map(|d| d.up_s).max_by(f64::total_cmp);
    let all_up_s = (up == n).then(|| last_up.map(|t| t - start)).flatten();
    let last_converged = first
        .iter()
        .filter_map(|d| d.converged_s)
        .max_by(f64::total_cmp);
    let all_converged = (converged == n).then_some(last_converged).flatten();
    let converged_s = all_converged.map(|t| t - start);
    let mut failures = BTreeMap::new();
    for d in first.iter().filter(|d| d.up_s.is_none()) {
        *failures
            .entry(d.last_failure.clone().unwrap_or_else(|| "no answer".into()))
            .or_default() += 1;
    }
    let phase_end = all_converged
        .or(report.newcomer_start_s)
        .or_else(|| samples.last().map(|s| s.t_s))
        .unwrap_or(start);
    let full_set = (n - 1) * k + 1;
    let run = RoutesRun {
        sites: n,
        prefixes: k,
        ask: Ask::Cloud,
        pace: None,
        up,
        converged,
        all_up_s,
        converged_s,
        after_last_up_s: converged_s.zip(all_up_s).map(|(c, u)| c - u),
        device_converged_ms: Spread::of(
            first
                .iter()
                .filter_map(|d| Some((d.converged_s? - start) * 1e3))
                .collect(),
        ),
        full_set,
        full_set_chunks: chunks_of(full_set),
        ts_remote_max: report.devices.iter().filter_map(|d| d.ts_remote).max(),
        traffic: report.registration,
        restarts: first.iter().map(|d| d.restarts).sum(),
        lost: report.devices.iter().map(|d| d.lost).sum(),
        hub_dead_peers: None,
        dpd_s: None,
        failures,
        hub_cpu_s: cpu_between(samples, start, phase_end),
        hub_idle_ms_per_s: HubCpu::default(),
        rss_before_kib: None,
        rss_converged_kib: None,
        rss_end_kib: None,
        hwm_end_kib: None,
        rss_per_site_kib: None,
        newcomer: report.newcomer_start_s.map(|t0| {
            let new = &report.devices[n..];
            let reached: Vec<f64> = first
                .iter()
                .filter_map(|d| Some((d.newcomer_s? - t0) * 1e3))
                .collect();
            let last = first
                .iter()
                .filter_map(|d| d.newcomer_s)
                .max_by(f64::total_cmp)
                .unwrap_or(t0);
            Newcomer {
                up_ms: new.first().and_then(|d| Some((d.up_s? - d.init_s?) * 1e3)),
                reached: reached.len(),
                of: n,
                reach_ms: Spread::of(reached),
                own_set_ms: new
                    .first()
                    .and_then(|d| Some((d.converged_s? - d.init_s?) * 1e3)),
                traffic: report.newcomer,
                hub_cpu_ms: cpu_between(samples, t0, last).per_ms(1.0),
                driver_cpu_s: report.driver_cpu_newcomer_s,
                hub_drops: BTreeMap::new(),
            }
        }),
        hub_drops: BTreeMap::new(),
        hub_log: (Vec::new(), 0),
        driver_cpu_s: report.driver_cpu_s.0,
        samples: Vec::new(),
    };
    (run, all_converged)
}

impl Bench {
    /// The route-exchange part (see the module's documentation).
    pub fn routes(&mut self) -> Result<()> {
        let plan = self.settings.routes.clone();
        for &n in &plan.sites {
            if n < 2 || n + 1 > MAX_BRANCHES || (n + 1) * plan.prefixes > MAX_PREFIXES {
                bail!(
                    "--routes-sites {n} × --routes-prefixes {}: 2 to {} sites, (sites + 1) × prefixes at most {MAX_PREFIXES}",
                    plan.prefixes,
                    MAX_BRANCHES - 1
                );
            }
        }
        let (runs, failure) = each_size(
            &plan.sites,
            |n| {
                format!(
                    "Route exchange: {n} sites × {} prefixes → one hub ({}), then one more",
                    plan.prefixes,
                    pace_text(plan.pace)
                )
            },
            RoutesRun::summary,
            |n| self.routes_run(n, &plan),
        );
        self.routes = Some(RoutesResults {
            plan: plan.clone(),
            runs,
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn routes_run(&mut self, n: usize, plan: &RoutesPlan) -> Result<RoutesRun> {
        let total = n + 1;
        let k = plan.prefixes.max(1);
        crate::sys::raise_open_files(total as u64 + 256).context("raising the open-file limit")?;
        let (_tb, branch, hub_ns) = bed("bench-rt")?;
        let name = format!("routes-hub-{n}x{k}");
        let keys_dir = self.out.join(format!("routes-keys-{n}"));
        let keys = write_keys(&keys_dir, total)?;
        let cfg = hub_config_with(
            self.settings.dut_cpu,
            self.settings.site_poll.toml(),
            total,
            &keys_dir,
            k,
            &[CLOUD],
        );
        let hub = Straitd::start(&hub_ns, &self.bins, &self.out, &name, &cfg)?;
        let pid = hub.pid();
        let timeout = Duration::from_secs_f64(plan.timeout_s);
        let newcomer_timeout = Duration::from_secs_f64(plan.newcomer_timeout_s);
        let fleet = FleetPlan {
            local: BRANCH,
            first_port: FIRST_PORT,
            hub: SocketAddrV4::new(HUB, 500),
            hub_identity: "hub.example".into(),
            devices: (0..total)
                .map(|i| DeviceSpec {
                    serial: device(i).0,
                    psk: keys[i].clone(),
                    prefixes: site_prefixes(i, k),
                })
                .collect(),
            pace: plan.pace,
            rekey_pace: None,
            timeout,
            rekey: None,
            ask: match plan.ask {
                Ask::Cloud => vec![CLOUD],
                Ask::Any => Vec::new(),
            },
            routes: Some(RouteWatch {
                first: n,
                advertise: vec![CLOUD],
                settle: Duration::from_secs(2),
                newcomer_timeout,
            }),
            dpd: plan.dpd_s.map(Duration::from_secs),
        };
        // The hub at rest: its CPU with nothing to do, and its memory.
        let idle = idle_cpu(pid)?;
        let rss_before = vm_rss_kib(pid);
        let drops_before = drops(&hub);
        let progress = Progress::default();
        let epoch = Instant::now();
        let bound = timeout + newcomer_timeout + Duration::from_secs(30);
        let mut samples: Vec<RouteSample> = Vec::new();
        let mut rss_converged = None;
        let mut drops_at_newcomer = None;
        let sample = |progress: &Progress| {
            Some(RouteSample {
                t_s: epoch.elapsed().as_secs_f64(),
                up: progress.up.load(Ordering::Relaxed),
                converged: progress.converged.load(Ordering::Relaxed),
                reached: progress.reached.load(Ordering::Relaxed),
                cpu: hub_cpu(pid)?,
                rss_kib: vm_rss_kib(pid)?,
            })
        };
        let report: Result<FleetReport> = std::thread::scope(|s| {
            let driver = s.spawn(|| {
                branch
                    .enter(|| branches::run(&fleet, epoch, &progress))
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r)
            });
            let mut next = Instant::now();
            let mut next_line = Instant::now() + Duration::from_secs(10);
            while !driver.is_finished() && !progress.done.load(Ordering::Relaxed) {
                if let Some(x) = sample(&progress) {
                    if rss_converged.is_none()
                        && (x.converged >= n || progress.newcomers.load(Ordering::Relaxed))
                    {
                        rss_converged = Some(x.rss_kib);
                    }
                    if Instant::now() >= next_line {
                        next_line += Duration::from_secs(10);
                        eprintln!(
                            "  {:.0} s: {} up, {} converged, {} reached; hub CPU {:.1} s (IKE thread {:.1}), RSS {} KiB",
                            x.t_s,
                            x.up,
                            x.converged,
                            x.reached,
                            x.cpu.process,
                            x.cpu.ike,
                            x.rss_kib
                        );
                    }
                    samples.push(x);
                }
                if drops_at_newcomer.is_none() && progress.newcomers.load(Ordering::Relaxed) {
                    drops_at_newcomer = Some(drops(&hub));
                }
                if epoch.elapsed() > bound {
                    progress.stop.store(true, Ordering::Relaxed);
                }
                next += SAMPLE;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            driver.join().expect("the driver does not panic")
        });
        if let Some(x) = sample(&progress) {
            samples.push(x);
        }
        let report = report?;
        let rss_end = vm_rss_kib(pid);
        let hwm_end = vm_hwm_kib(pid);
        let drops_after = drops(&hub);
        let dead = hub
            .show_json("ike")
            .ok()
            .and_then(|v| v["counters"]["dead_peers"].as_u64());
        hub.save_shows(&self.out, &name, &["ike", "drops", "counters", "workers"]);
        drop(hub);
        let _ = std::fs::write(
            self.out.join(format!("{name}.fleet.json")),
            serde_json::to_string(&report).unwrap_or_default(),
        );
        let (mut run, all_converged) = figures(n, k, &report, &samples);
        if all_converged.is_none() {
            // Memory once the phase ended: the last sample before the end.
            rss_converged = samples.last().map(|s| s.rss_kib);
        }
        run.ask = plan.ask;
        run.hub_dead_peers = dead;
        run.dpd_s = plan.dpd_s;
        run.pace = plan.pace;
        run.hub_idle_ms_per_s = idle;
        run.rss_before_kib = rss_before;
        run.rss_converged_kib = rss_converged;
        run.rss_end_kib = rss_end;
        run.hwm_end_kib = hwm_end;
        run.rss_per_site_kib = rss_before
            .zip(rss_converged)
            .map(|(a, b)| (b as f64 - a as f64) / n as f64);
        match (&drops_at_newcomer, run.newcomer.as_mut()) {
            (Some(mid), Some(c)) => {
                run.hub_drops = moved(&drops_before, mid);
                c.hub_drops = moved(mid, &drops_after);
            }
            _ => run.hub_drops = moved(&drops_before, &drops_after),
        }
        run.hub_log = log_warnings(&self.out, &name);
        run.samples = samples;
        Ok(run)
    }
}

fn mib(x: Option<u64>) -> String {
    x.map_or("—".into(), |v| format!("{:.1}", v as f64 / 1024.0))
}

fn spread_s(s: &Spread) -> String {
    let f = |x: Option<f64>| x.map_or("—".into(), |v| format!("{:.2}", v / 1e3));
    format!("{} / {} / {}", f(s.p50), f(s.p99), f(s.max))
}

fn spread_ms(s: &Spread) -> String {
    format!("{} / {} / {}", ms(s.p50), ms(s.p99), ms(s.max))
}

impl RoutesRun {
    /// One paragraph for the console.
    fn summary(&self) -> String {
        let t = &self.traffic;
        let mut s = format!(
            "  {} of {} up in {} s ({} restarts, {} lost, hub declared {} dead), {} converged in {} s ({} s after the last up); per device converged p50/p99/max {} s; {} route sets, {} INFORMATIONAL requests (a full set: {} prefixes, {} chunks); TSr at most {} selectors; hub CPU {:.1} s (IKE thread {:.1}); RSS {} → {} MiB ({} KiB per site); hub drops: {}",
            self.up,
            self.sites,
            secs(self.all_up_s),
            self.restarts,
            self.lost,
            self.hub_dead_peers.map_or("?".into(), |d| d.to_string()),
            self.converged,
            secs(self.converged_s),
            secs(self.after_last_up_s),
            spread_s(&self.device_converged_ms),
            t.route_sets,
            t.informational,
            self.full_set,
            self.full_set_chunks,
            self.ts_remote_max.map_or("—".into(), |v| v.to_string()),
            self.hub_cpu_s.process,
            self.hub_cpu_s.ike,
            mib(self.rss_before_kib),
            mib(self.rss_converged_kib),
            self.rss_per_site_kib
                .map_or("—".into(), |v| format!("{v:.1}")),
            counters(&self.hub_drops),
        );
        if let Some(c) = &self.newcomer {
            let _ = write!(
                s,
                "\n  newcomer: up in {} ms; its prefixes reached {} of {} sites, p50/p99/max {} ms; its own set complete in {} ms; {} sets, {} INFORMATIONAL requests; hub CPU {:.0} ms (IKE thread {:.0}); hub drops: {}",
                ms(c.up_ms),
                c.reached,
                c.of,
                spread_ms(&c.reach_ms),
                ms(c.own_set_ms),
                c.traffic.route_sets,
                c.traffic.informational,
                c.hub_cpu_ms.process,
                c.hub_cpu_ms.ike,
                counters(&c.hub_drops),
            );
        }
        s
    }
}

impl RoutesResults {
    /// The part's tables.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.runs.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "\n### Route exchange at the hub (hub: straitd, 1 worker, IKE on its own thread, transit on, advertise {}/{}; sites: one driver thread, one strait-ike initiator per site claiming its prefixes)\n\n\
             | sites × prefixes | asked (TSr) | up | converged | all up s | all converged s | after the last up s | per device converged p50 / p99 / max s | route sets | INFORMATIONAL requests (full set: chunks) | largest TSr | hub CPU s (process; IKE thread) | hub RSS before → converged MiB | KiB per site | hub drops |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            CLOUD.0, CLOUD.1
        );
        for r in &self.runs {
            let _ = writeln!(
                s,
                "| {} × {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {:.1}; {:.1} | {} → {} | {} | {} |",
                r.sites,
                r.prefixes,
                match r.ask {
                    Ask::Cloud => "cloud",
                    Ask::Any => "0.0.0.0/0",
                },
                r.up,
                r.converged,
                secs(r.all_up_s),
                secs(r.converged_s),
                secs(r.after_last_up_s),
                spread_s(&r.device_converged_ms),
                r.traffic.route_sets,
                r.traffic.informational,
                r.full_set_chunks,
                r.ts_remote_max.map_or("—".into(), |v| v.to_string()),
                r.hub_cpu_s.process,
                r.hub_cpu_s.ike,
                mib(r.rss_before_kib),
                mib(r.rss_converged_kib),
                r.rss_per_site_kib
                    .map_or("—".into(), |v| format!("{v:.1}")),
                counters(&r.hub_drops),
            );
        }
        if self.runs.iter().any(|r| r.newcomer.is_some()) {
            let _ = writeln!(
                s,
                "\nOne more site once all had converged:\n\n\
                 | sites | its registration ms | sites reached | reach p50 / p99 / max ms | its own set ms | route sets | INFORMATIONAL requests | hub CPU ms (process; IKE thread) | hub drops |\n|---|---|---|---|---|---|---|---|---|"
            );
            for r in &self.runs {
                if let Some(c) = &r.newcomer {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} of {} | {} | {} | {} | {} | {:.0}; {:.0} | {} |",
                        r.sites,
                        ms(c.up_ms),
                        c.reached,
                        c.of,
                        spread_ms(&c.reach_ms),
                        ms(c.own_set_ms),
                        c.traffic.route_sets,
                        c.traffic.informational,
                        c.hub_cpu_ms.process,
                        c.hub_cpu_ms.ike,
                        counters(&c.hub_drops),
                    );
                }
            }
        }
        for r in &self.runs {
            let _ = writeln!(
                s,
                "\n{} sites ({}): hub idle {:.1} ms CPU/s; RSS at the end {} MiB (peak {} MiB); devices' liveness checks {}; {} restarts, {} IKE SAs the hub declared dead, {} found gone by the devices and registered again",
                r.sites,
                r.pace
                    .map_or("all at once".into(), |p| format!("{p:.0} registrations/s")),
                r.hub_idle_ms_per_s.process,
                mib(r.rss_end_kib),
                mib(r.hwm_end_kib),
                r.dpd_s.map_or("off".into(), |d| format!("after {d} s")),
                r.restarts,
                r.hub_dead_peers.map_or("?".into(), |d| d.to_string()),
                r.lost,
            );
            if !r.failures.is_empty() {
                let _ = writeln!(s, "- never up: {:?}", r.failures);
            }
            hub_log_lines(&mut s, &r.hub_log);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::branches::DeviceRecord;

    #[test]
    fn a_full_set_of_1000_sites_with_4_prefixes_is_20_chunks() {
        assert_eq!(chunks_of(999 * 4 + 1), 20);
        assert_eq!(chunks_of(1), 1);
        assert_eq!(chunks_of(0), 1);
        assert_eq!(chunks_of(200), 1);
        assert_eq!(chunks_of(201), 2);
    }

    fn sample(t_s: f64, ike: f64) -> RouteSample {
        RouteSample {
            t_s,
            up: 0,
            converged: 0,
            reached: 0,
            cpu: HubCpu {
                process: ike,
                ike,
                workers: 0.0,
                other: 0.0,
            },
            rss_kib: 0,
        }
    }

    #[test]
    fn figures_time_convergence_and_the_newcomer_from_the_driver_s_records() {
        let rec = |init: f64, up: f64, conv: Option<f64>, new: Option<f64>| DeviceRecord {
            init_s: Some(init),
            up_s: Some(up),
            converged_s: conv,
            newcomer_s: new,
            ..DeviceRecord::default()
        };
        let report = FleetReport {
            devices: vec![
                rec(1.0, 1.1, Some(1.5), Some(10.2)),
                rec(1.0, 1.3, Some(2.0), Some(10.4)),
                rec(10.0, 10.1, Some(10.3), None),
            ],
            start_s: 1.0,
            newcomer_start_s: Some(10.0),
            ..FleetReport::default()
        };
        let s: Vec<RouteSample> = (0..=12)
            .map(|i| sample(f64::from(i), 0.5 * f64::from(i)))
            .collect();
        let (r, all) = figures(2, 4, &report, &s);
        assert_eq!((r.up, r.converged), (2, 2));
        assert_eq!(all, Some(2.0));
        assert!((r.all_up_s.unwrap() - 0.3).abs() < 1e-9);
        assert!((r.converged_s.unwrap() - 1.0).abs() < 1e-9);
        assert!((r.after_last_up_s.unwrap() - 0.7).abs() < 1e-9);
        assert_eq!(r.full_set, 5);
        // The hub's CPU from the sample at 1 s to the one at 2 s.
        assert!((r.hub_cpu_s.ike - 0.5).abs() < 1e-9);
        let c = r.newcomer.unwrap();
        assert_eq!((c.reached, c.of), (2, 2));
        assert!((c.reach_ms.p50.unwrap() - 200.0).abs() < 1e-6);
        assert!((c.reach_ms.max.unwrap() - 400.0).abs() < 1e-6);
        assert!((c.up_ms.unwrap() - 100.0).abs() < 1e-6);
        assert!((c.own_set_ms.unwrap() - 300.0).abs() < 1e-6);
        // From the sample at 10 s to the one at 11 s (10.4 s rounds up).
        assert!((c.hub_cpu_ms.ike - 500.0).abs() < 1e-6);
    }
}
