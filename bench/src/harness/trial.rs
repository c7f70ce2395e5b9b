//! Repeated generator trials against one device under test: the maximum
//! rate (pps, Gbit/s, loss) and latency at a fraction of it, each repeated
//! and summarised as median and range.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use strait_esp::OutboundSa;
use strait_wire::EthernetAddress;
use strait_xdp::XdpMode;

use super::stats::Spread;
use super::tunnel::{OpeningRx, SealingTx, TunnelLeg, TunnelPortStats, SEAL_OVERHEAD};
use crate::gen::{
    in_netns, run_trial, AfPacketRx, AfPacketTx, CdfPoint, FlowSpec, Rate, RateSearch, Report,
    RxPort, SearchConfig, SizeMix, TrafficSpec, TxPort, XdpRx, XdpTx, FCS_LEN,
};
use crate::sys;

/// Which generator port sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SenderKind {
    /// AF_XDP TX (copy mode on veth): the only sender that saturates the
    /// device under test on a 2-vCPU host.
    AfXdp,
    /// Raw AF_PACKET with qdisc bypass.
    AfPacket,
}

/// Which generator port receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiverKind {
    /// AF_XDP RX: frames never become skbs in the sink namespace.
    AfXdp,
    /// AF_PACKET RX.
    AfPacket,
}

/// One side of the generator: a namespace and an interface in it.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Full namespace name.
    pub netns: String,
    /// Interface name inside it.
    pub iface: String,
}

/// Everything about one traffic path through a device under test.
#[derive(Debug, Clone)]
pub struct Path {
    /// Where frames are sent.
    pub tx: Attachment,
    /// Where they are counted.
    pub rx: Attachment,
    /// Ethernet source of the generated frames.
    pub src_mac: [u8; 6],
    /// Ethernet destination (the device under test's MAC on that link).
    pub dst_mac: [u8; 6],
    /// Inner source address.
    pub src_ip: IpAddr,
    /// Inner destination address.
    pub dst_ip: IpAddr,
    /// Seal frames as this tunnel leg before sending (the generator plays
    /// the peer gateway).
    pub seal: Option<(TunnelLeg, Arc<OutboundSa>)>,
    /// Open ESP of this leg at the receiver (the generator plays the peer
    /// gateway that decrypts).
    pub open: Option<TunnelLeg>,
    /// CPU of the generator's receiver (`None`: the generator's CPU).
    pub sink_cpu: Option<usize>,
}

impl Path {
    /// Clear traffic from `eth0` of `tx` to `eth0` of `rx`, `src_ip` →
    /// `dst_ip`, first hop the device under test's interface `dut_iface`
    /// in `dut`. Set [`Path::seal`] / [`Path::open`] for tunnel legs.
    pub fn between(
        tx: &strait_testbed::Netns,
        rx: &strait_testbed::Netns,
        dut: &strait_testbed::Netns,
        dut_iface: &str,
        src_ip: IpAddr,
        dst_ip: IpAddr,
    ) -> Result<Path> {
        Ok(Path {
            tx: Attachment {
                netns: tx.name().into(),
                iface: "eth0".into(),
            },
            rx: Attachment {
                netns: rx.name().into(),
                iface: "eth0".into(),
            },
            src_mac: tx.mac("eth0")?,
            dst_mac: dut.mac(dut_iface)?,
            src_ip,
            dst_ip,
            seal: None,
            open: None,
            sink_cpu: None,
        })
    }
}

/// How trials run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Repetitions of every figure.
    pub reps: usize,
    /// Measured seconds per trial.
    pub duration: Duration,
    /// Warm-up before measuring (neighbour resolution, caches, rings).
    pub warmup: Duration,
    /// Latency is measured at this fraction of the median maximum rate.
    pub latency_at: f64,
    /// Sender.
    pub sender: SenderKind,
    /// Receiver.
    pub receiver: ReceiverKind,
    /// CPU the generator's threads are pinned to, if any.
    pub gen_cpu: Option<usize>,
    /// A trial during which other programs were runnable in more than this
    /// share of the samples (percent) is repeated, at most
    /// [`MAX_RETRIES`] times, after the machine quietens.
    pub max_foreign_pct: f64,
    /// The flows every trial cycles through (one flow by default; the NAT
    /// part sends many).
    pub flows: FlowSpec,
    /// Search the NDR and PDR after the maximum-rate trials (and measure
    /// latency at a fraction of the NDR), or skip the search.
    pub search: Option<SearchPlan>,
    /// Latency trials run at `latency_at` × the NDR when one was found
    /// (true), or always × the median maximum (false).
    pub latency_of_ndr: bool,
}

/// How the NDR/PDR search of a figure runs (RFC 2544 §26.1, the way FD.io
/// CSIT reports dataplanes): short fixed-length trials, a bounded number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchPlan {
    /// Measured seconds per search trial.
    pub trial: Duration,
    /// Most trials per search.
    pub max_trials: u32,
    /// Stop when the interval is this narrow relative to its top.
    pub precision: f64,
    /// Loss ratio the PDR may have.
    pub pdr_loss: f64,
}

impl Default for SearchPlan {
    fn default() -> Self {
        SearchPlan {
            trial: Duration::from_secs(1),
            max_trials: 12,
            precision: 0.02,
            pdr_loss: 0.001,
        }
    }
}

/// What the NDR/PDR search of a figure found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RateLimits {
    /// Highest rate with zero loss (pps received = sent), if any passed.
    pub ndr_pps: Option<f64>,
    /// Highest rate with loss ≤ `pdr_loss`.
    pub pdr_pps: Option<f64>,
    /// The PDR's loss ratio.
    pub pdr_loss: f64,
    /// Both intervals narrowed to the precision within the trial limit.
    pub converged: bool,
    /// Every search trial: offered, achieved, loss ratio.
    pub trials: Vec<crate::gen::Trial>,
}

/// Most repetitions of one trial spoiled by other programs.
pub const MAX_RETRIES: usize = 2;

/// The numbers kept from one trial.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TrialFigures {
    /// Requested rate (pps), `None` at max.
    pub offered_pps: Option<f64>,
    /// Rate the sender achieved.
    pub tx_pps: f64,
    /// Unique probe frames received per second.
    pub rx_pps: f64,
    /// Received rate in Gbit/s including Ethernet framing (frame + FCS +
    /// 20 B preamble/IFG), inner frames for tunnels.
    pub rx_gbps: f64,
    /// Loss in percent of the frames sent.
    pub loss_pct: f64,
    /// One-way latency percentiles, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile, µs.
    pub p99_us: Option<f64>,
    /// Busy CPU seconds of the whole machine per GB received (inner bytes).
    pub cpu_s_per_gb: Option<f64>,
    /// The same without the generator's own CPU time: what the system
    /// under test (its processes and the kernel work they cause) spent.
    pub dut_cpu_s_per_gb: Option<f64>,
    /// Frames the tunnel port could not seal or open.
    pub tunnel_failures: u64,
    /// Share of samples (percent) that found a program outside the
    /// benchmark runnable: how much the machine was shared.
    pub foreign_pct: f64,
}

impl TrialFigures {
    fn from_report(
        r: &Report,
        cpu: Option<CpuUse>,
        tunnel_failures: u64,
        foreign_pct: f64,
    ) -> TrialFigures {
        let gb = r.rx.bytes as f64 / 1e9;
        let per_gb = |s: f64| Some(s / gb).filter(|_| gb > 0.0);
        TrialFigures {
            offered_pps: r.offered_pps,
            tx_pps: r.tx.pps,
            rx_pps: r.rx.pps,
            rx_gbps: r.rx.wire_gbps,
            loss_pct: r.loss_percent,
            p50_us: r.latency_ns.as_ref().map(|l| l.p50 as f64 / 1e3),
            p99_us: r.latency_ns.as_ref().map(|l| l.p99 as f64 / 1e3),
            cpu_s_per_gb: cpu.and_then(|c| per_gb(c.machine_s)),
            dut_cpu_s_per_gb: cpu.and_then(|c| per_gb((c.machine_s - c.generator_s).max(0.0))),
            tunnel_failures,
            foreign_pct,
        }
    }
}

/// A figure: repeated max-rate trials and repeated latency trials.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Figure {
    /// Trials at the maximum rate.
    pub max: Vec<TrialFigures>,
    /// Trials at `latency_at` × the median maximum.
    pub latency: Vec<TrialFigures>,
    /// Trials repeated because other programs shared the machine.
    pub retried: usize,
    /// The NDR/PDR search, when the plan asked for one.
    pub limits: Option<RateLimits>,
    /// The rate the latency trials ran at (pps) and what it was a fraction
    /// of: `"ndr"` or `"max"` (no NDR found or no search).
    pub latency_pps: Option<f64>,
    /// See [`Figure::latency_pps`].
    pub latency_basis: Option<&'static str>,
    /// One-way latency distribution of the latency trial with the median
    /// p99.
    pub latency_cdf: Option<Vec<CdfPoint>>,
}

fn spread(v: impl Iterator<Item = f64>) -> Option<Spread> {
    Spread::of(&v.collect::<Vec<_>>())
}

impl Figure {
    /// Received packets per second at the maximum.
    pub fn pps(&self) -> Option<Spread> {
        spread(self.max.iter().map(|t| t.rx_pps))
    }
    /// Received Gbit/s at the maximum.
    pub fn gbps(&self) -> Option<Spread> {
        spread(self.max.iter().map(|t| t.rx_gbps))
    }
    /// Loss at the maximum, percent.
    pub fn loss(&self) -> Option<Spread> {
        spread(self.max.iter().map(|t| t.loss_pct))
    }
    /// CPU seconds per GB at the maximum, the whole machine.
    pub fn cpu_per_gb(&self) -> Option<Spread> {
        spread(self.max.iter().filter_map(|t| t.cpu_s_per_gb))
    }
    /// CPU seconds per GB at the maximum, without the generator.
    pub fn dut_cpu_per_gb(&self) -> Option<Spread> {
        spread(self.max.iter().filter_map(|t| t.dut_cpu_s_per_gb))
    }
    /// NDR in pps, if the search found one.
    pub fn ndr_pps(&self) -> Option<f64> {
        self.limits.as_ref()?.ndr_pps
    }
    /// PDR in pps, if the search found one.
    pub fn pdr_pps(&self) -> Option<f64> {
        self.limits.as_ref()?.pdr_pps
    }
    /// p50 latency at the reduced rate, µs.
    pub fn p50(&self) -> Option<Spread> {
        spread(self.latency.iter().filter_map(|t| t.p50_us))
    }
    /// p99 latency at the reduced rate, µs.
    pub fn p99(&self) -> Option<Spread> {
        spread(self.latency.iter().filter_map(|t| t.p99_us))
    }
    /// Share of samples with other programs runnable, over all trials kept.
    pub fn foreign(&self) -> Option<Spread> {
        spread(self.max.iter().chain(&self.latency).map(|t| t.foreign_pct))
    }
    /// Loss during the latency trials, percent.
    pub fn latency_loss(&self) -> Option<Spread> {
        spread(self.latency.iter().map(|t| t.loss_pct))
    }
}

/// Busy and total jiffies of the machine (`/proc/stat`, first line).
fn cpu_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

/// CPU seconds one trial cost: the machine's busy time, and the part of
/// it the generator (this process) spent.
#[derive(Debug, Clone, Copy)]
struct CpuUse {
    machine_s: f64,
    generator_s: f64,
}

/// Pins the calling thread (and the threads it starts afterwards) to `cpu`,
/// or to every CPU with `None`.
pub fn pin_current_thread(cpu: Option<usize>) -> Result<()> {
    sys::set_affinity(cpu).context("sched_setaffinity")
}

/// Counts runnable threads of user programs other than `own` (and their
/// threads): builds or tests sharing the CPUs with the benchmark. Kernel
/// threads (softirq work is part of forwarding) are not counted.
pub fn foreign_runnable(own: &[u32]) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if own.contains(&pid) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(e.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            // Fields after the parenthesised command name: state, ppid,
            // ..., flags (the 7th).
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            let f: Vec<&str> = rest.split_whitespace().take(7).collect();
            let flags: u64 = f.get(6).and_then(|x| x.parse().ok()).unwrap_or(0);
            const PF_KTHREAD: u64 = 0x0020_0000;
            if f.first() == Some(&"R") && flags & PF_KTHREAD == 0 {
                n += 1;
            }
        }
    }
    n
}

/// Waits (bounded) until other programs leave the CPUs alone for a second.
pub fn wait_for_quiet(own: &[u32], limit: Duration) -> bool {
    let start = std::time::Instant::now();
    let mut quiet_since = start;
    while start.elapsed() < limit {
        if foreign_runnable(own) > 0 {
            quiet_since = std::time::Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_secs(1) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The ports of one trial and the counters of their tunnel wrappers.
struct TrialPorts {
    tx: Box<dyn TxPort>,
    rx: Box<dyn RxPort>,
    tunnel: Arc<TunnelPortStats>,
}

/// Opens fresh generator ports for one trial.
fn open_ports(path: &Path, plan: &Plan, frame: usize) -> Result<TrialPorts> {
    let stats = Arc::new(TunnelPortStats::default());
    let sender = plan.sender;
    let max_frame = (frame
        + if path.seal.is_some() {
            SEAL_OVERHEAD
        } else {
            0
        })
    .min(1792);
    let iface = path.tx.iface.clone();
    let mut tx: Box<dyn TxPort> = in_netns(&path.tx.netns, move || {
        Ok(match sender {
            SenderKind::AfXdp => Box::new(XdpTx::open(&iface, max_frame, XdpMode::Native)?) as _,
            SenderKind::AfPacket => Box::new(AfPacketTx::open(&iface, 64, false)?) as _,
        })
    })
    .with_context(|| format!("opening the sender on {}:{}", path.tx.netns, path.tx.iface))?;
    if let Some((leg, sa)) = &path.seal {
        tx = Box::new(SealingTx::new(tx, sa, leg, Arc::clone(&stats)));
    }
    let receiver = plan.receiver;
    let iface = path.rx.iface.clone();
    let mut rx: Box<dyn RxPort> = in_netns(&path.rx.netns, move || {
        Ok(match receiver {
            ReceiverKind::AfXdp => Box::new(XdpRx::open(&iface, XdpMode::Native)?) as _,
            ReceiverKind::AfPacket => Box::new(AfPacketRx::open(&iface)?) as _,
        })
    })
    .with_context(|| {
        format!(
            "opening the receiver on {}:{}",
            path.rx.netns, path.rx.iface
        )
    })?;
    if let Some(leg) = &path.open {
        rx = Box::new(OpeningRx::new(rx, leg, Arc::clone(&stats))?);
    }
    Ok(TrialPorts {
        tx,
        rx,
        tunnel: stats,
    })
}

/// Runs one trial of `size`-byte frames (FCS included) at `rate`. `own`
/// lists the processes of the benchmark itself (this one is added).
pub fn run_once(
    path: &Path,
    plan: &Plan,
    size: usize,
    rate: Rate,
    own: &[u32],
) -> Result<TrialFigures> {
    run_with_cdf(path, plan, size, rate, own).map(|(t, _)| t)
}

/// [`run_once`], also returning the trial's latency distribution.
fn run_with_cdf(
    path: &Path,
    plan: &Plan,
    size: usize,
    rate: Rate,
    own: &[u32],
) -> Result<(TrialFigures, Vec<CdfPoint>)> {
    let (t, report) = run_mix(path, plan, &SizeMix::fixed(size), rate, own)?;
    let cdf = report
        .latency_ns
        .as_ref()
        .map(|l| l.cdf.clone())
        .unwrap_or_default();
    Ok((t, cdf))
}

/// Runs one trial of frames of the mix `sizes` (FCS included) at `rate`;
/// the figures and the generator's whole report. `own` lists the
/// processes of the benchmark itself (this one is added).
pub fn run_mix(
    path: &Path,
    plan: &Plan,
    sizes: &SizeMix,
    rate: Rate,
    own: &[u32],
) -> Result<(TrialFigures, Report)> {
    let mut spec = TrafficSpec::new(
        EthernetAddress(path.src_mac),
        EthernetAddress(path.dst_mac),
        path.src_ip,
        path.dst_ip,
    );
    spec.sizes = sizes.clone();
    spec.rate = rate;
    spec.duration = plan.duration;
    spec.warmup = plan.warmup;
    spec.flows = plan.flows;
    spec.rx_cpu = path.sink_cpu;
    let largest = sizes.entries().iter().map(|&(s, _)| s).max().unwrap_or(64);
    let TrialPorts { tx, rx, tunnel } = open_ports(path, plan, largest - FCS_LEN)?;
    pin_current_thread(plan.gen_cpu)?;
    let before = cpu_jiffies();
    let own_before = sys::own_cpu_seconds();
    let mut own = own.to_vec();
    own.push(std::process::id());
    let (mut samples, mut foreign) = (0u32, 0u32);
    let report = run_trial(&spec, tx, rx, &mut |p| {
        if p.measuring {
            samples += 1;
            foreign += u32::from(foreign_runnable(&own) > 0);
        }
    });
    let after = cpu_jiffies();
    let own_after = sys::own_cpu_seconds();
    pin_current_thread(None)?;
    let report = report?;
    // The whole trial (warm-up and linger included) against the bytes
    // counted: an upper bound on CPU per GB, the same for every system.
    let cpu = before
        .zip(after)
        .zip(own_before.zip(own_after))
        .map(|((b, a), (ob, oa))| CpuUse {
            machine_s: (a.0 - b.0) as f64 / sys::ticks_per_second(),
            generator_s: oa - ob,
        });
    let (_, failed, _) = tunnel.snapshot();
    let foreign_pct = if samples == 0 {
        0.0
    } else {
        100.0 * f64::from(foreign) / f64::from(samples)
    };
    Ok((
        TrialFigures::from_report(&report, cpu, failed, foreign_pct),
        report,
    ))
}

/// The rate (pps) latency trials run at, and what it is a fraction of:
/// `plan.latency_at` × the NDR when the plan asks for that and the search
/// found one, else × the median maximum; never below 1000 pps.
fn latency_rate(fig: &Figure, plan: &Plan) -> Option<(f64, &'static str)> {
    let basis = match (fig.ndr_pps().filter(|_| plan.latency_of_ndr), fig.pps()) {
        (Some(ndr), _) if ndr > 0.0 => (ndr, "ndr"),
        (_, Some(max)) if max.median > 0.0 => (max.median, "max"),
        _ => return None,
    };
    Some(((basis.0 * plan.latency_at).max(1000.0), basis.1))
}

/// Measures one figure: `plan.reps` trials at the maximum rate; then, with
/// a [`SearchPlan`], the NDR/PDR search below their median sending rate;
/// then `plan.reps` trials at `plan.latency_at` × the NDR (× the median
/// maximum when there is no NDR): RFC 2544 §26.2, latency at a known
/// sustainable rate, not queueing at saturation. A trial spoiled by other
/// programs (see [`Plan::max_foreign_pct`]) is repeated after the machine
/// quietens. `own` lists the benchmark's other processes (the daemons
/// under test); `progress` hears about every trial.
pub fn measure(
    path: &Path,
    plan: &Plan,
    size: usize,
    own: &[u32],
    progress: &mut dyn FnMut(&str, &TrialFigures),
) -> Result<Figure> {
    let mut fig = Figure::default();
    let mut own_all = own.to_vec();
    own_all.push(std::process::id());
    let mut retried = 0;
    let mut cdfs: Vec<(f64, Vec<CdfPoint>)> = Vec::new();
    let mut trial = |plan: &Plan, rate: Rate, kind: &str, retried: &mut usize| {
        let mut attempt = 0;
        loop {
            let (t, cdf) = run_with_cdf(path, plan, size, rate, own)?;
            progress(kind, &t);
            if t.foreign_pct <= plan.max_foreign_pct || attempt == MAX_RETRIES {
                if kind == "latency" {
                    if let Some(p99) = t.p99_us.filter(|_| !cdf.is_empty()) {
                        cdfs.push((p99, cdf));
                    }
                }
                return anyhow::Ok(t);
            }
            attempt += 1;
            *retried += 1;
            wait_for_quiet(&own_all, Duration::from_secs(60));
        }
    };
    for _ in 0..plan.reps {
        let t = trial(plan, Rate::Max, "max", &mut retried)?;
        fig.max.push(t);
    }
    let max_tx = spread(fig.max.iter().map(|t| t.tx_pps)).map(|s| s.median);
    if let (Some(search), Some(top)) = (plan.search, max_tx.filter(|&p| p > 0.0)) {
        let mut short = plan.clone();
        short.duration = search.trial;
        short.warmup = plan.warmup.min(Duration::from_millis(300));
        let cfg = SearchConfig {
            min_pps: 1000.0_f64.min(top),
            max_pps: top,
            pdr_loss: search.pdr_loss,
            precision: search.precision,
            max_trials: search.max_trials,
        };
        // Search trials are short and not repeated when the box is shared:
        // the bounded trial count is the point.
        let mut quiet = short.clone();
        quiet.max_foreign_pct = f64::INFINITY;
        let result = RateSearch::new(cfg).run(|pps| {
            let t = trial(&quiet, Rate::Pps(pps), "search", &mut retried)?;
            anyhow::Ok((t.tx_pps, t.loss_pct / 100.0))
        })?;
        fig.limits = Some(RateLimits {
            ndr_pps: result.ndr_pps,
            pdr_pps: result.pdr_pps,
            pdr_loss: result.pdr_loss,
            converged: result.converged,
            trials: result.trials,
        });
    }
    if let Some((pps, name)) = latency_rate(&fig, plan) {
        fig.latency_pps = Some(pps);
        fig.latency_basis = Some(name);
        for _ in 0..plan.reps {
            let t = trial(plan, Rate::Pps(pps), "latency", &mut retried)?;
            fig.latency.push(t);
        }
    }
    fig.retried = retried;
    // The distribution of the latency trial with the median p99 stands
    // for the figure.
    cdfs.sort_by(|a, b| a.0.total_cmp(&b.0));
    fig.latency_cdf = cdfs.get(cdfs.len() / 2).map(|(_, c)| c.clone());
    Ok(fig)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(rx_pps: f64, p50: Option<f64>) -> TrialFigures {
        TrialFigures {
            offered_pps: None,
            tx_pps: rx_pps,
            rx_pps,
            rx_gbps: rx_pps * 1e-6,
            loss_pct: 0.5,
            p50_us: p50,
            p99_us: p50.map(|x| x * 2.0),
            cpu_s_per_gb: None,
            dut_cpu_s_per_gb: None,
            tunnel_failures: 0,
            foreign_pct: 0.0,
        }
    }

    #[test]
    fn figure_summaries_use_the_right_trials() {
        let fig = Figure {
            max: vec![trial(3.0, None), trial(1.0, None), trial(2.0, None)],
            latency: vec![trial(1.0, Some(10.0)), trial(1.0, Some(30.0))],
            ..Figure::default()
        };
        assert_eq!(fig.pps().unwrap().median, 2.0);
        assert_eq!(fig.p50().unwrap().median, 20.0);
        assert_eq!(fig.p99().unwrap().max, 60.0);
        assert!(fig.cpu_per_gb().is_none());
    }

    fn plan(latency_of_ndr: bool) -> Plan {
        Plan {
            reps: 3,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            latency_at: 0.5,
            sender: SenderKind::AfXdp,
            receiver: ReceiverKind::AfXdp,
            gen_cpu: None,
            max_foreign_pct: 10.0,
            flows: FlowSpec::default(),
            search: Some(SearchPlan::default()),
            latency_of_ndr,
        }
    }

    fn limits(ndr: Option<f64>) -> RateLimits {
        RateLimits {
            ndr_pps: ndr,
            pdr_pps: ndr,
            pdr_loss: 0.001,
            converged: true,
            trials: vec![],
        }
    }

    #[test]
    fn latency_runs_at_a_fraction_of_the_ndr_or_else_the_max() {
        let mut fig = Figure {
            max: vec![trial(400_000.0, None), trial(600_000.0, None)],
            limits: Some(limits(Some(300_000.0))),
            ..Figure::default()
        };
        assert_eq!(latency_rate(&fig, &plan(true)), Some((150_000.0, "ndr")));
        // The NAT part checks loss at a fraction of the maximum.
        assert_eq!(latency_rate(&fig, &plan(false)), Some((250_000.0, "max")));
        // Nothing loss-free: the maximum it is.
        fig.limits = Some(limits(None));
        assert_eq!(latency_rate(&fig, &plan(true)), Some((250_000.0, "max")));
        // A floor for systems that carried almost nothing.
        fig.max = vec![trial(10.0, None)];
        assert_eq!(latency_rate(&fig, &plan(true)), Some((1000.0, "max")));
        fig.max.clear();
        assert_eq!(latency_rate(&fig, &plan(true)), None);
    }

    #[test]
    fn cpu_counters_move_forward() {
        let (busy_a, total_a) = cpu_jiffies().unwrap();
        let t0 = std::time::Instant::now();
        while t0.elapsed() < Duration::from_millis(50) {
            std::hint::spin_loop();
        }
        let (busy_b, total_b) = cpu_jiffies().unwrap();
        assert!(busy_b >= busy_a && total_b >= total_a);
        assert!(busy_b - busy_a <= total_b - total_a);
    }

    #[test]
    fn a_spinning_thread_of_another_process_counts_as_foreign() {
        // A child process that spins: runnable (or running) most of the time.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let seen = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            foreign_runnable(&[std::process::id()]) > 0
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen, "a spinning child was never seen runnable");
    }

    #[test]
    fn pinning_to_one_cpu_and_back() {
        pin_current_thread(Some(0)).unwrap();
        assert_eq!(crate::sys::current_cpu(), 0);
        pin_current_thread(None).unwrap();
        let all = std::thread::available_parallelism().unwrap().get();
        let online = crate::sys::cpus_online();
        assert_eq!(all, online, "unpinning restores every CPU");
    }
}
