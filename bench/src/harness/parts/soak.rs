//! Soak: the site-to-site bed of the ESP part (branch encrypts, hub
//! decrypts and masquerades towards its LAN) carrying IMIX traffic at a
//! fixed moderate rate for a long time (30 minutes by default), in
//! consecutive intervals of 10 s. Some intervals carry a change to the
//! running daemons, in turn:
//!
//! * a static route added to both and deleted again (`straitctl route`);
//! * a reload of a rewritten configuration file (`straitctl reload`; the
//!   `[icmp]` limit alternates between 100 and 99 errors per second);
//! * a rekey of both directions without loss, in the order of RFC 7296
//!   §2.8 (docs/CLI.md): both ends install the new inbound SA, then both
//!   switch outbound, then both retire the old inbound SA. Every SA gets a
//!   fresh SPI and a fresh random key, handed over on standard input.
//!
//! After every interval it samples each daemon's resident memory (`VmRSS`)
//! and the free frames of its UMEM pool (`straitctl show workers`), and the
//! drop counters. The verdict: memory and pool occupancy must not grow
//! between the first and the last minutes, and packets may only be lost
//! in intervals with a change.
//!
//! The WAN link's MTU is raised to 1600 on this bed (the ESP part keeps
//! 1500) so the tunnel carries IMIX's 1518-byte frames whole: with 1500 the
//! tunnel MTU is 1435, and every twelfth frame (DF set) would be refused
//! as `oversized` all the time.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::esp::{branch_config_sas, hub_config_sas, IN, OUT};
use super::{ns, site_path, wait_through_tunnel, Bench, Poll};
use crate::gen::{FlowSpec, PortRange, Rate, RateSearch, SearchConfig, SizeMix};
use crate::harness::config::StaticSa;
use crate::harness::daemon::Straitd;
use crate::harness::host;
use crate::harness::trial::{run_mix, Path, Plan};

/// How the soak runs (`--soak-*` options).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SoakPlan {
    /// Length of the run, minutes.
    pub minutes: f64,
    /// Measured seconds per interval.
    pub interval_s: f64,
    /// Offered rate as a fraction of the NDR found at the start.
    pub load: f64,
    /// A fixed offered rate (pps) instead of `load` × the NDR.
    pub pps: Option<f64>,
    /// Every `change_every`-th interval carries a change (0: none).
    pub change_every: usize,
    /// Distinct UDP flows (source ports), each a NAT session at the hub.
    pub flows: u16,
}

impl Default for SoakPlan {
    fn default() -> Self {
        SoakPlan {
            minutes: 30.0,
            interval_s: 10.0,
            load: 0.25,
            pps: None,
            change_every: 3,
            flows: 64,
        }
    }
}

impl SoakPlan {
    /// Number of intervals in the run (at least one).
    pub fn intervals(&self) -> usize {
        ((self.minutes * 60.0 / self.interval_s).round() as usize).max(1)
    }

    /// The change interval `i` (from 0) carries, if any: the first
    /// interval of every `change_every` is clean, so the first change is
    /// in interval `change_every - 1`.
    pub fn change_at(&self, i: usize) -> Option<ChangeKind> {
        let every = self.change_every;
        if every == 0 || i % every != every - 1 {
            return None;
        }
        Some(ChangeKind::ALL[(i / every) % ChangeKind::ALL.len()])
    }
}

/// A change made to both daemons during an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// `straitctl route add`, then `route del` a few seconds later.
    Route,
    /// The configuration file rewritten and reloaded.
    Reload,
    /// Both directions rekeyed without loss.
    Rekey,
}

impl ChangeKind {
    /// In the order they take turns.
    pub const ALL: [ChangeKind; 3] = [ChangeKind::Route, ChangeKind::Reload, ChangeKind::Rekey];

    fn name(self) -> &'static str {
        match self {
            ChangeKind::Route => "route add/del",
            ChangeKind::Reload => "reload",
            ChangeKind::Rekey => "rekey",
        }
    }
}

/// One daemon's state after an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DaemonSample {
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// UMEM frames of all workers.
    pub frames: u64,
    /// Frames not free (on fill rings, in the kernel's rings, held by a
    /// worker), sampled under traffic, 20 % into the interval (before
    /// its change).
    pub in_use_loaded: u64,
    /// The same after the interval, the traffic stopped.
    pub in_use_idle: u64,
}

/// One interval of the soak.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SoakInterval {
    /// Index, from 0.
    pub index: usize,
    /// Seconds since the first interval started.
    pub start_s: f64,
    /// The change made during it.
    pub change: Option<ChangeKind>,
    /// How long the change took, ms; its error if it failed.
    pub change_ms: Option<f64>,
    /// Why the change failed.
    pub change_error: Option<String>,
    /// Frames sent.
    pub sent: u64,
    /// Unique probe frames received.
    pub received: u64,
    /// Sent less received (never below 0).
    pub lost: u64,
    /// One-way latency percentiles, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile.
    pub p99_us: Option<f64>,
    /// 99.9th percentile.
    pub p999_us: Option<f64>,
    /// Largest.
    pub max_us: Option<f64>,
    /// Share of samples that found another program runnable, percent.
    pub foreign_pct: f64,
    /// Branch.
    pub branch: DaemonSample,
    /// Hub.
    pub hub: DaemonSample,
    /// Drop counters of both daemons that moved during the interval
    /// (`branch:reason`, `hub:reason`).
    pub drops: BTreeMap<String, u64>,
}

/// Growth of one gauge between the first and the last window of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Growth {
    /// What was measured.
    pub what: String,
    /// Mean over the first window.
    pub first: f64,
    /// Mean over the last window.
    pub last: f64,
    /// `last - first`.
    pub growth: f64,
    /// Largest growth that passes.
    pub tolerance: f64,
    /// Within the tolerance.
    pub ok: bool,
}

/// Loss during the intervals with one kind of change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChangeCost {
    /// The change.
    pub kind: ChangeKind,
    /// Intervals that carried it.
    pub intervals: usize,
    /// Of those, how many failed.
    pub failed: usize,
    /// Packets lost in those intervals, in all.
    pub lost: u64,
    /// Most lost in one of them.
    pub max_lost: u64,
    /// Median time the change took, ms.
    pub median_ms: Option<f64>,
}

/// What the soak found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SoakResults {
    /// How it ran.
    pub plan: SoakPlan,
    /// Mean IMIX frame size, bytes with FCS.
    pub mean_frame: f64,
    /// NDR found before the soak (IMIX), pps.
    pub ndr_pps: Option<f64>,
    /// The rate offered during the soak, pps.
    pub rate_pps: f64,
    /// Length of the windows compared, s.
    pub window_s: f64,
    /// Intervals of the first cycle of changes, left out of the growth
    /// comparison.
    pub settle: usize,
    /// Samples before the first interval (after the NDR search).
    pub before: (DaemonSample, DaemonSample),
    /// Every interval.
    pub intervals: Vec<SoakInterval>,
    /// Memory and pool growth.
    pub growth: Vec<Growth>,
    /// Loss per kind of change.
    pub costs: Vec<ChangeCost>,
    /// Intervals without a change that lost packets.
    pub unexplained_loss: Vec<usize>,
    /// Warnings and errors the daemons logged.
    pub daemon_log: Vec<String>,
    /// Wall time, s.
    pub elapsed_s: f64,
}

/// Random key material: AES-128 key and 4-byte salt (RFC 4106 §8.1), hex.
fn fresh_key(used: &mut HashSet<String>) -> String {
    use rand::RngCore as _;
    loop {
        let mut k = [0u8; 20];
        rand::rng().fill_bytes(&mut k);
        let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
        // Every key of the run differs (the daemon refuses one key for two
        // SAs); 160 random bits never repeat, the check says so.
        if used.insert(hex.clone()) {
            return hex;
        }
    }
}

/// An SA the harness made: SPI and key.
#[derive(Debug, Clone)]
struct Sa {
    spi: u32,
    key: String,
}

impl Sa {
    fn of(s: StaticSa<'_>) -> Sa {
        Sa {
            spi: s.spi,
            key: s.key.to_owned(),
        }
    }

    fn as_static(&self) -> StaticSa<'_> {
        StaticSa {
            spi: self.spi,
            key: &self.key,
        }
    }
}

/// The running configuration of both daemons as the harness knows it, so
/// a rewritten file states what runs.
#[derive(Debug)]
struct Configs {
    cpu_b: usize,
    cpu_h: usize,
    poll: Poll,
    /// Branch → hub (branch outbound, hub inbound).
    up: Sa,
    /// Hub → branch.
    down: Sa,
    icmp_per_second: u32,
    next_spi: u32,
    used_keys: HashSet<String>,
}

impl Configs {
    fn branch(&self) -> String {
        branch_config_sas(
            self.cpu_b,
            self.poll,
            self.up.as_static(),
            self.down.as_static(),
        ) + &self.icmp()
    }

    fn hub(&self) -> String {
        hub_config_sas(
            self.cpu_h,
            self.poll,
            true,
            self.down.as_static(),
            self.up.as_static(),
        ) + &self.icmp()
    }

    fn icmp(&self) -> String {
        format!(
            "\n[icmp]\nerrors_per_second = {}\nburst = 20\n",
            self.icmp_per_second
        )
    }

    fn fresh_sa(&mut self) -> Sa {
        let spi = self.next_spi;
        self.next_spi += 1;
        Sa {
            spi,
            key: fresh_key(&mut self.used_keys),
        }
    }
}

/// Makes `kind` of change to both daemons; `hold` is how long a route
/// stays and the old inbound SAs stay installed after the switch.
fn make_change(
    kind: ChangeKind,
    branch: &Straitd,
    hub: &Straitd,
    cfg: &mut Configs,
    hold: Duration,
) -> Result<()> {
    match kind {
        ChangeKind::Route => {
            let prefix = "198.18.0.0/24";
            branch.query(&format!("route add {prefix} via 10.1.0.2"))?;
            hub.query(&format!("route add {prefix} via 10.2.0.2"))?;
            std::thread::sleep(hold);
            branch.query(&format!("route del {prefix}"))?;
            hub.query(&format!("route del {prefix}"))?;
        }
        ChangeKind::Reload => {
            cfg.icmp_per_second = if cfg.icmp_per_second == 100 { 99 } else { 100 };
            branch.reload_with(&cfg.branch())?;
            hub.reload_with(&cfg.hub())?;
        }
        ChangeKind::Rekey => {
            let (up, down) = (cfg.fresh_sa(), cfg.fresh_sa());
            let sa = |verb: &str, tunnel: &str, s: &Sa| {
                format!("sa {verb} {tunnel} spi={} cipher=aes128-gcm key=-", s.spi)
            };
            // RFC 7296 §2.8: each end can open the new SA before its peer
            // seals with it; the old inbound SA goes only after the switch
            // and a pause for what is still in flight.
            hub.query_with_input(&sa("install-inbound", "branch", &up), &up.key)?;
            branch.query_with_input(&sa("install-inbound", "hub", &down), &down.key)?;
            branch.query_with_input(&sa("switch-outbound", "hub", &up), &up.key)?;
            hub.query_with_input(&sa("switch-outbound", "branch", &down), &down.key)?;
            let (old_up, old_down) = (
                std::mem::replace(&mut cfg.up, up),
                std::mem::replace(&mut cfg.down, down),
            );
            std::thread::sleep(hold);
            hub.query(&format!("sa retire-inbound branch {}", old_up.spi))?;
            branch.query(&format!("sa retire-inbound hub {}", old_down.spi))?;
        }
    }
    Ok(())
}

/// Frames and frames not free of all workers (`show workers --json`).
fn pool(d: &Straitd) -> Option<(u64, u64)> {
    let v = d.show_json("workers").ok()?;
    let (mut frames, mut free) = (0, 0);
    for w in v.as_array()? {
        frames += w.get("umem_frames")?.as_u64()?;
        free += w.get("umem_free")?.as_u64()?;
    }
    Some((frames, frames.saturating_sub(free)))
}

/// Every drop counter of `d`, summed over its interfaces.
fn drops(d: &Straitd) -> BTreeMap<String, u64> {
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

/// Counters of `now` that moved since `before`, named `tag:reason`.
fn moved(
    tag: &str,
    before: &BTreeMap<String, u64>,
    now: &BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    now.iter()
        .filter_map(|(k, &v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (format!("{tag}:{k}"), d))
        })
        .collect()
}

/// A daemon's memory and pool now, with `loaded` the pool sampled under
/// traffic.
fn sample(d: &Straitd, loaded: Option<(u64, u64)>) -> DaemonSample {
    let idle = pool(d).unwrap_or_default();
    DaemonSample {
        rss_kib: d.rss_kib().unwrap_or(0),
        frames: idle.0,
        in_use_loaded: loaded.map_or(0, |p| p.1),
        in_use_idle: idle.1,
    }
}

/// Warning and error lines of a daemon's log.
fn log_warnings(out: &std::path::Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(out.join(format!("{name}.log"))).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .map(|l| format!("{name}: {l}"))
        .collect()
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (n, s) = v.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

impl SoakResults {
    /// The verdict: growth of memory and pool between the first and last
    /// windows, the cost of each kind of change, loss without a change.
    fn judge(&mut self) {
        // The first cycle of changes settles: the first route change,
        // reload and rekey each allocate once (a new table generation, the
        // first extra SA), and that is not a leak. Growth is measured from
        // the first window after it to the last window of the run.
        let all = &self.intervals[..];
        self.settle = (self.plan.change_every * ChangeKind::ALL.len()).min(all.len() / 2);
        let steady = &all[self.settle..];
        let n = steady.len();
        if n == 0 {
            return;
        }
        // Windows of 5 minutes, or a third of a shorter run.
        let per = (300.0 / self.plan.interval_s).round().max(1.0) as usize;
        let w = per.min(n / 3).max(1);
        self.window_s = w as f64 * self.plan.interval_s;
        let (first, last) = (&steady[..w], &steady[n - w..]);
        type Pick = fn(&SoakInterval) -> &DaemonSample;
        let daemons: [(&str, Pick); 2] = [("branch", |i| &i.branch), ("hub", |i| &i.hub)];
        for (name, pick) in daemons {
            let a = mean(first.iter().map(|i| pick(i).rss_kib as f64));
            let b = mean(last.iter().map(|i| pick(i).rss_kib as f64));
            // 1 % of the memory, at least 1 MiB: allocator noise, not a leak.
            let tol = (a * 0.01).max(1024.0);
            self.growth.push(Growth {
                what: format!("{name} RSS, KiB"),
                first: a,
                last: b,
                growth: b - a,
                tolerance: tol,
                ok: b - a <= tol,
            });
            let a = mean(first.iter().map(|i| pick(i).in_use_idle as f64));
            let b = mean(last.iter().map(|i| pick(i).in_use_idle as f64));
            // One RX batch per worker and port: frames in flight, not lost.
            let tol = 128.0;
            self.growth.push(Growth {
                what: format!("{name} UMEM frames in use (idle), frames"),
                first: a,
                last: b,
                growth: b - a,
                tolerance: tol,
                ok: b - a <= tol,
            });
        }
        for kind in ChangeKind::ALL {
            let with: Vec<&SoakInterval> = self
                .intervals
                .iter()
                .filter(|i| i.change == Some(kind))
                .collect();
            if with.is_empty() {
                continue;
            }
            let ms: Vec<f64> = with.iter().filter_map(|i| i.change_ms).collect();
            self.costs.push(ChangeCost {
                kind,
                intervals: with.len(),
                failed: with.iter().filter(|i| i.change_error.is_some()).count(),
                lost: with.iter().map(|i| i.lost).sum(),
                max_lost: with.iter().map(|i| i.lost).max().unwrap_or(0),
                median_ms: crate::harness::stats::Spread::of(&ms).map(|s| s.median),
            });
        }
        self.unexplained_loss = self
            .intervals
            .iter()
            .filter(|i| i.change.is_none() && i.lost > 0)
            .map(|i| i.index)
            .collect();
    }

    /// True when nothing grew and loss came only with changes.
    pub fn passed(&self) -> bool {
        self.growth.iter().all(|g| g.ok)
            && self.unexplained_loss.is_empty()
            && self.costs.iter().all(|c| c.failed == 0)
    }

    /// The results as Markdown.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let p = &self.plan;
        let _ = writeln!(
            s,
            "\n### Soak: site to site + hub SNAT, IMIX ({:.0} B mean), {:.0} pps ({}), {} intervals of {:.0} s, {} flows; took {:.1} min\n",
            self.mean_frame,
            self.rate_pps,
            match (p.pps, self.ndr_pps) {
                (Some(_), _) => "fixed".to_owned(),
                (None, Some(ndr)) => format!("{:.0} % of the NDR {:.0} pps", p.load * 100.0, ndr),
                (None, None) => "no NDR found".to_owned(),
            },
            self.intervals.len(),
            p.interval_s,
            p.flows,
            self.elapsed_s / 60.0,
        );
        let _ = writeln!(
            s,
            "| min | RSS branch / hub MiB | frames in use branch / hub (loaded, idle) | offered | received | lost | p50 / p99 / max µs | change | drops | box shared |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        let lat = |x: Option<f64>| x.map_or("—".into(), |v| format!("{v:.0}"));
        for i in &self.intervals {
            let change = match (i.change, &i.change_error) {
                (None, _) => String::new(),
                (Some(k), None) => format!("{} ({:.0} ms)", k.name(), i.change_ms.unwrap_or(0.0)),
                (Some(k), Some(e)) => format!("{} FAILED: {e}", k.name()),
            };
            let drops = i
                .drops
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                s,
                "| {:.1} | {:.1} / {:.1} | {}, {} / {}, {} | {} | {} | {} | {} / {} / {} | {change} | {drops} | {:.0} % |",
                i.start_s / 60.0,
                i.branch.rss_kib as f64 / 1024.0,
                i.hub.rss_kib as f64 / 1024.0,
                i.branch.in_use_loaded,
                i.branch.in_use_idle,
                i.hub.in_use_loaded,
                i.hub.in_use_idle,
                i.sent,
                i.received,
                i.lost,
                lat(i.p50_us),
                lat(i.p99_us),
                lat(i.max_us),
                i.foreign_pct,
            );
        }
        let _ = writeln!(
            s,
            "\nframes in use: UMEM frames not in the free pool, of {} (branch) / {} (hub): loaded = 20 % into the interval under traffic (before its change), idle = after it. Before the first interval: RSS {:.1} / {:.1} MiB, frames in use {} / {}.",
            self.before.0.frames,
            self.before.1.frames,
            self.before.0.rss_kib as f64 / 1024.0,
            self.before.1.rss_kib as f64 / 1024.0,
            self.before.0.in_use_idle,
            self.before.1.in_use_idle,
        );
        if let Some(settled) = self.intervals.get(self.settle) {
            let _ = writeln!(
                s,
                "\nSettling: the first {} intervals (one change of each kind) are left out of the growth comparison; over them RSS went {:.1} → {:.1} MiB (branch), {:.1} → {:.1} MiB (hub).",
                self.settle,
                self.before.0.rss_kib as f64 / 1024.0,
                settled.branch.rss_kib as f64 / 1024.0,
                self.before.1.rss_kib as f64 / 1024.0,
                settled.hub.rss_kib as f64 / 1024.0,
            );
        }
        let _ = writeln!(
            s,
            "\n**Verdict: {}** (first {:.0} s after settling vs. the last {:.0} s; RSS may grow by 1 % or 1 MiB, whichever is more, frames in use by 128)\n\n| gauge | first | last | growth | tolerance | |\n|---|---|---|---|---|---|",
            if self.passed() { "pass" } else { "FAIL" },
            self.window_s,
            self.window_s
        );
        for g in &self.growth {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {:+.0} | {:.0} | {} |",
                g.what,
                g.first,
                g.last,
                g.growth,
                g.tolerance,
                if g.ok { "ok" } else { "GROWS" }
            );
        }
        let _ = writeln!(
            s,
            "\n| change | intervals | failed | lost in all | most lost in one | median duration ms |\n|---|---|---|---|---|---|"
        );
        for c in &self.costs {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                c.kind.name(),
                c.intervals,
                c.failed,
                c.lost,
                c.max_lost,
                c.median_ms.map_or("—".into(), |m| format!("{m:.0}"))
            );
        }
        let clean = self.intervals.iter().filter(|i| i.change.is_none()).count();
        let _ = writeln!(
            s,
            "\nIntervals without a change that lost packets: {} of {clean}{}",
            self.unexplained_loss.len(),
            if self.unexplained_loss.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    self.unexplained_loss
                        .iter()
                        .filter_map(|&i| self.intervals.get(i))
                        .map(|i| format!(
                            "interval {}: {} lost, box shared {:.0} %",
                            i.index, i.lost, i.foreign_pct
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        );
        if !self.daemon_log.is_empty() {
            let _ = writeln!(
                s,
                "\nThe daemons logged {} warnings or errors:",
                self.daemon_log.len()
            );
            for l in self.daemon_log.iter().take(20) {
                let _ = writeln!(s, "- `{l}`");
            }
        }
        s
    }
}

impl Bench {
    /// The soak (see the module's documentation).
    pub fn soak(&mut self) -> Result<()> {
        let sp = self.settings.soak;
        eprintln!(
            "== Soak: site to site + hub SNAT, IMIX, {} intervals of {:.0} s (scripts/topologies/bench-site.topo)",
            sp.intervals(),
            sp.interval_s
        );
        let started = Instant::now();
        let (_tb, nets) = self.bed("bench-site.topo", "bench-soak")?;
        let (lana, branch, hub, lanb) = (
            ns(&nets, "lana")?,
            ns(&nets, "branch")?,
            ns(&nets, "hub")?,
            ns(&nets, "lanb")?,
        );
        for n in [branch, hub] {
            n.ip(&["link", "set", "wan", "mtu", "1600"])
                .context("raising the WAN MTU for IMIX's 1518-byte frames")?;
        }
        let dut_cpu = self.settings.dut_cpu.min(1);
        let mut cfg = Configs {
            cpu_b: 1 - dut_cpu,
            cpu_h: dut_cpu,
            poll: self.settings.site_poll,
            up: Sa::of(OUT),
            down: Sa::of(IN),
            icmp_per_second: 100,
            next_spi: 0x1_0000,
            used_keys: [OUT.key, IN.key].iter().map(|k| (*k).to_owned()).collect(),
        };
        let db = Straitd::start(branch, &self.bins, &self.out, "soak-branch", &cfg.branch())?;
        let dh = Straitd::start(hub, &self.bins, &self.out, "soak-hub", &cfg.hub())?;
        wait_through_tunnel(lana, "soak")?;
        let path: Path = site_path(lana, lanb, branch)?;
        let mix = SizeMix::imix();
        let mut plan: Plan = self.plan.clone();
        plan.flows = FlowSpec {
            src_ports: PortRange {
                first: 10_000,
                last: 10_000 + sp.flows.max(1) - 1,
            },
            ..FlowSpec::default()
        };
        let own = [db.pid(), dh.pid()];
        // The rate: a fraction of the NDR of this bed with this traffic.
        let mut ndr = None;
        let rate_pps = match sp.pps {
            Some(pps) => pps,
            None => {
                let mut short = plan.clone();
                short.duration = Duration::from_secs(2);
                short.warmup = Duration::from_millis(300);
                let (max, _) = run_mix(&path, &short, &mix, Rate::Max, &own)?;
                Self::progress("soak IMIX")("max", &max);
                short.duration = Duration::from_secs(1);
                let search = RateSearch::new(SearchConfig {
                    min_pps: 1000.0_f64.min(max.tx_pps),
                    max_pps: max.tx_pps,
                    pdr_loss: 0.001,
                    precision: 0.02,
                    max_trials: 10,
                })
                .run(|pps| {
                    let (t, _) = run_mix(&path, &short, &mix, Rate::Pps(pps), &own)?;
                    Self::progress("soak IMIX")("search", &t);
                    anyhow::Ok((t.tx_pps, t.loss_pct / 100.0))
                })?;
                ndr = search.ndr_pps;
                let basis = search.ndr_pps.or(search.pdr_pps).unwrap_or(max.rx_pps);
                (basis * sp.load).max(1000.0)
            }
        };
        eprintln!("  soak rate {rate_pps:.0} pps (IMIX), NDR {ndr:?}");
        let mut results = SoakResults {
            plan: sp,
            mean_frame: mix.mean_size(),
            ndr_pps: ndr,
            rate_pps,
            window_s: 0.0,
            settle: 0,
            before: (sample(&db, None), sample(&dh, None)),
            intervals: Vec::new(),
            growth: Vec::new(),
            costs: Vec::new(),
            unexplained_loss: Vec::new(),
            daemon_log: Vec::new(),
            elapsed_s: 0.0,
        };
        plan.duration = Duration::from_secs_f64(sp.interval_s);
        plan.warmup = Duration::from_millis(200);
        let interval = plan.duration;
        // A change starts 30 % into the interval; a route stays, and old
        // inbound SAs stay after the switch, for another 30 % (at most 3 s
        // and 1 s).
        let offset = plan.warmup + interval.mul_f64(0.3);
        let sample_at = plan.warmup + interval.mul_f64(0.2);
        let route_hold = interval.mul_f64(0.3).min(Duration::from_secs(3));
        let sa_hold = interval.mul_f64(0.1).min(Duration::from_secs(1));
        let mut drops_before = (drops(&db), drops(&dh));
        let soak_start = Instant::now();
        for index in 0..sp.intervals() {
            let change = sp.change_at(index);
            let start_s = soak_start.elapsed().as_secs_f64();
            let (db_ref, dh_ref, cfg_ref) = (&db, &dh, &mut cfg);
            let (trial, side) = std::thread::scope(|s| {
                let side = s.spawn(move || {
                    let t0 = Instant::now();
                    // The pool under traffic, before any change.
                    std::thread::sleep(sample_at);
                    let loaded = (pool(db_ref), pool(dh_ref));
                    let outcome = change.map(|kind| {
                        std::thread::sleep(offset.saturating_sub(t0.elapsed()));
                        let c0 = Instant::now();
                        let hold = match kind {
                            ChangeKind::Route => route_hold,
                            _ => sa_hold,
                        };
                        let r = make_change(kind, db_ref, dh_ref, cfg_ref, hold);
                        (c0.elapsed(), r)
                    });
                    (outcome, loaded)
                });
                let trial = run_mix(&path, &plan, &mix, Rate::Pps(rate_pps), &own);
                (
                    trial,
                    side.join().expect("the change thread does not panic"),
                )
            });
            let (fig, report) = trial?;
            let (outcome, loaded) = side;
            let drops_now = (drops(&db), drops(&dh));
            let mut moved_drops: BTreeMap<String, u64> = BTreeMap::new();
            moved_drops.extend(moved("branch", &drops_before.0, &drops_now.0));
            moved_drops.extend(moved("hub", &drops_before.1, &drops_now.1));
            drops_before = drops_now;
            let lat = report.latency_ns.as_ref();
            let us = |f: fn(&crate::gen::LatencyReport) -> u64| lat.map(|l| f(l) as f64 / 1e3);
            let row = SoakInterval {
                index,
                start_s,
                change,
                change_ms: outcome.as_ref().map(|(d, _)| d.as_secs_f64() * 1e3),
                change_error: outcome
                    .as_ref()
                    .and_then(|(_, r)| r.as_ref().err().map(|e| format!("{e:#}"))),
                sent: report.tx.packets,
                received: report.rx.unique,
                lost: report.lost.max(0) as u64,
                p50_us: us(|l| l.p50),
                p99_us: us(|l| l.p99),
                p999_us: us(|l| l.p999),
                max_us: us(|l| l.max),
                foreign_pct: fig.foreign_pct,
                branch: sample(&db, loaded.0),
                hub: sample(&dh, loaded.1),
                drops: moved_drops,
            };
            eprintln!(
                "  soak {:>4}/{} {:>6.1} min  sent {:>8}  lost {:>6}  p99 {:>6} us  RSS {:>6.1}/{:>6.1} MiB  in use {:>5}/{:>5}  {}{}",
                index + 1,
                sp.intervals(),
                start_s / 60.0,
                row.sent,
                row.lost,
                row.p99_us.map_or("—".into(), |x| format!("{x:.0}")),
                row.branch.rss_kib as f64 / 1024.0,
                row.hub.rss_kib as f64 / 1024.0,
                row.branch.in_use_idle,
                row.hub.in_use_idle,
                change.map_or("", |k| k.name()),
                row.change_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" FAILED: {e}")),
            );
            results.intervals.push(row);
            // A daemon that died ends the soak: the rest would measure
            // nothing.
            if db.rss_kib().is_none() || dh.rss_kib().is_none() {
                bail!("soak: a daemon exited during interval {index}");
            }
        }
        for (d, name) in [(&db, "soak-branch"), (&dh, "soak-hub")] {
            d.save_shows(
                &self.out,
                name,
                &["counters", "drops", "workers", "sa", "events", "nat rules"],
            );
        }
        drop(db);
        drop(dh);
        results.daemon_log = [
            log_warnings(&self.out, "soak-branch"),
            log_warnings(&self.out, "soak-hub"),
        ]
        .concat();
        results.elapsed_s = started.elapsed().as_secs_f64();
        results.judge();
        if !results.passed() {
            self.notes.push(format!(
                "soak: verdict FAIL at {}",
                host::utc_stamp("%H:%M UTC")
            ));
        }
        self.soak = Some(results);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_take_turns_after_clean_intervals() {
        let p = SoakPlan::default();
        assert_eq!(p.intervals(), 180);
        let kinds: Vec<_> = (0..9).map(|i| p.change_at(i)).collect();
        assert_eq!(
            kinds,
            [
                None,
                None,
                Some(ChangeKind::Route),
                None,
                None,
                Some(ChangeKind::Reload),
                None,
                None,
                Some(ChangeKind::Rekey)
            ]
        );
        let none = SoakPlan {
            change_every: 0,
            ..p
        };
        assert!((0..10).all(|i| none.change_at(i).is_none()));
    }

    #[test]
    fn fresh_keys_are_aes128_gcm_sized_and_never_repeat() {
        let mut used = HashSet::new();
        let a = fresh_key(&mut used);
        let b = fresh_key(&mut used);
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(used.len(), 2);
    }

    #[test]
    fn rewritten_configs_state_the_sas_that_run_and_mirror_each_other() {
        let mut cfg = Configs {
            cpu_b: 0,
            cpu_h: 1,
            poll: Poll::Adaptive,
            up: Sa::of(OUT),
            down: Sa::of(IN),
            icmp_per_second: 100,
            next_spi: 0x1_0000,
            used_keys: HashSet::new(),
        };
        cfg.up = cfg.fresh_sa();
        let (b, h) = (cfg.branch(), cfg.hub());
        let line = format!(
            "outbound = {{ spi = 65536, cipher = \"aes128-gcm\", key = \"{}\" }}",
            cfg.up.key
        );
        assert!(b.contains(&line), "{b}");
        assert!(h.contains(&line.replace("outbound", "inbound")), "{h}");
        assert!(h.contains("[[nat]]") && h.contains("errors_per_second = 100"));
        assert_eq!(cfg.next_spi, 0x1_0001);
    }

    fn row(index: usize, change: Option<ChangeKind>, lost: u64, rss: u64) -> SoakInterval {
        let d = DaemonSample {
            rss_kib: rss,
            frames: 8192,
            in_use_loaded: 4200,
            in_use_idle: 4100,
        };
        SoakInterval {
            index,
            start_s: index as f64 * 10.0,
            change,
            change_ms: change.map(|_| 5.0),
            change_error: None,
            sent: 1000,
            received: 1000 - lost,
            lost,
            p50_us: Some(10.0),
            p99_us: Some(20.0),
            p999_us: Some(30.0),
            max_us: Some(40.0),
            foreign_pct: 0.0,
            branch: d,
            hub: d,
            drops: BTreeMap::new(),
        }
    }

    fn results(intervals: Vec<SoakInterval>) -> SoakResults {
        SoakResults {
            plan: SoakPlan::default(),
            mean_frame: 353.8,
            ndr_pps: Some(100_000.0),
            rate_pps: 25_000.0,
            window_s: 0.0,
            settle: 0,
            before: Default::default(),
            intervals,
            growth: vec![],
            costs: vec![],
            unexplained_loss: vec![],
            daemon_log: vec![],
            elapsed_s: 60.0,
        }
    }

    #[test]
    fn verdict_passes_flat_memory_and_loss_only_with_changes() {
        let mut r = results(
            (0..9)
                .map(|i| {
                    let c = SoakPlan::default().change_at(i);
                    row(
                        i,
                        c,
                        if c == Some(ChangeKind::Rekey) { 7 } else { 0 },
                        50_000,
                    )
                })
                .collect(),
        );
        r.judge();
        assert!(r.passed(), "{}", r.render());
        // Nine intervals: the first cycle of changes settles (four, half
        // the run at most), windows of a third of the other five.
        assert_eq!(r.settle, 4);
        assert_eq!(r.window_s, 10.0);
        let rekey = r
            .costs
            .iter()
            .find(|c| c.kind == ChangeKind::Rekey)
            .unwrap();
        assert_eq!((rekey.intervals, rekey.lost), (1, 7));
        assert!(r.render().contains("**Verdict: pass**"));
    }

    #[test]
    fn a_step_while_settling_is_not_growth() {
        let mut r = results(
            (0..30)
                .map(|i| row(i, None, 0, if i < 9 { 50_000 } else { 52_000 }))
                .collect(),
        );
        r.judge();
        assert_eq!(r.settle, 9);
        assert!(r.passed(), "{}", r.render());
    }

    #[test]
    fn verdict_fails_on_growing_memory_or_loss_without_a_change() {
        let mut r = results(
            (0..9)
                .map(|i| row(i, None, 0, 50_000 + i as u64 * 1000))
                .collect(),
        );
        r.judge();
        assert!(!r.passed());
        assert!(r
            .growth
            .iter()
            .any(|g| !g.ok && g.what.starts_with("branch RSS")));
        let mut r = results(
            (0..9)
                .map(|i| row(i, None, u64::from(i == 4), 50_000))
                .collect(),
        );
        r.judge();
        assert_eq!(r.unexplained_loss, [4]);
        assert!(r.render().contains("**Verdict: FAIL**"));
    }
}
