//! The parts of the end-to-end benchmark behind `strait-bench`. On
//! namespace beds they measure, in one invocation and with the same
//! generated traffic:
//!
//! 1. [`forward`]: plain forwarding, Strait (one pinned poll-mode worker)
//!    against the kernel (`ip_forward`, RPS) and DPDK testpmd (AF_XDP PMD,
//!    MAC forwarding, the AF_XDP floor), at each frame size: maximum rate,
//!    loss, latency at half the maximum, CPU per GB, iperf3 TCP;
//! 2. [`esp`]: one Strait instance encrypting (the generator opens the ESP
//!    it emits), one decrypting (the generator seals what it sends), and a
//!    branch/hub pair site to site (generator and iperf3 TCP), as ratios to
//!    Strait's own plain forwarding measured minutes earlier;
//! 3. [`nat`]: Strait SNAT against nftables masquerade / SNAT with 1k, 100k
//!    and 1M concurrent UDP flows, and the session setup rate (the part
//!    itself is [`super::nat`]);
//! 4. [`peers`]: wireguard-go, boringtun and strongSwan (kernel-libipsec)
//!    as the site-to-site gateway pair instead of Strait;
//! 5. [`soak`]: the site-to-site pair with hub SNAT under IMIX for 30
//!    minutes, with route changes, reloads and rekeys while it runs:
//!    memory, frame pool and loss over time;
//! 6. [`registration`]: N branches (IKEv2 initiators) registering with one
//!    hub at once: handshakes per second, time until all are up, the hub's
//!    CPU per registration and per rekey;
//! 7. [`routes`]: N sites with K prefixes each registering with one hub
//!    that announces every site the others' (transit): time until all
//!    have converged, time for one more site's prefixes to reach the
//!    others, the hub's memory per site and the announcements' cost;
//! 8. [`dns`]: the DNS forwarder against dnsmasq, cached and uncached
//!    queries per second (dnsperf).
//!
//! Every figure has a maximum rate, an NDR/PDR search (RFC 2544 §26.1) and
//! latency at half the NDR; every path also gets iperf3 TCP and UDP. Each
//! part adds its figures to one [`Bench`]; [`report`] turns them into the
//! tables of every system (the ratio to the matching Strait system and the
//! commercial claim) and the JSON, [`charts`] into SVG charts.

mod charts;
mod dns;
mod esp;
mod forward;
mod nat;
mod peers;
mod registration;
mod report;
mod routes;
mod soak;

pub use dns::{DnsPlan, DnsResults};
pub use registration::{RegistrationPlan, RegistrationResults, MAX_BRANCHES};
pub use routes::{Ask as RoutesAsk, RoutesPlan, RoutesResults, MAX_PREFIXES};
pub use soak::{ChangeKind, SoakPlan, SoakResults};

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strait_testbed::{Netns, Testbed, Topology};

use super::daemon::{idle_cpu_percent, Binaries, SchedTime, Straitd};
use super::host::load_average;
use super::iperf;
use super::nat::NatResults;
use super::peers::ping_until_reachable;
use super::trial::{measure, Figure, Path, Plan, TrialFigures};
use crate::harness::stats::Spread;

/// System names of the site-to-site cases (the poll mode follows).
const SITE: &str = "Strait site to site";
const SITE_SNAT: &str = "Strait site to site + hub SNAT";

/// How Strait's workers wait for frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Busy polling: the lowest latency, a whole core.
    Spin,
    /// Spins while there is traffic, sleeps when there is none.
    Adaptive,
}

impl Poll {
    /// The `[engine] poll` value.
    pub fn toml(self) -> &'static str {
        match self {
            Poll::Spin => "spin",
            Poll::Adaptive => "adaptive",
        }
    }
}

/// CPU placement of the site-to-site bed's two gateways, the same for
/// every system (Strait's processes and each peer's), so the figures
/// compare the implementations, not their placement. The generator runs on
/// `--gen-cpu` either way; the kernel's veth and softirq work runs where
/// the sending thread is and cannot be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The branch shares the generator's CPU, the hub has `--dut-cpu`.
    Split,
    /// Both gateways on `--dut-cpu`; the generator's CPU is its own.
    Shared,
}

impl Placement {
    /// The (branch, hub) CPUs with the hub's being `dut_cpu` (0 or 1).
    pub fn cpus(self, dut_cpu: usize) -> (usize, usize) {
        let hub = dut_cpu.min(1);
        match self {
            Placement::Split => (1 - hub, hub),
            Placement::Shared => (hub, hub),
        }
    }

    /// The CPU of the generator's receiver. Split: the hub's, the CPU with
    /// headroom (the sender and the branch saturate the other, and a
    /// receiver woken there waited about 86 µs to run, which every frame's
    /// latency carried). Shared: the generator's own.
    pub fn sink_cpu(self, dut_cpu: usize) -> Option<usize> {
        match self {
            Placement::Split => Some(self.cpus(dut_cpu).1),
            Placement::Shared => None,
        }
    }

    /// How the tables state it.
    pub fn describe(self, dut_cpu: usize) -> String {
        let (b, h) = self.cpus(dut_cpu);
        match self {
            Placement::Split => format!(
                "site to site, every system alike: branch gateway on CPU {b} \
                 (with the generator's sender), hub gateway and the generator's receiver on CPU {h}"
            ),
            Placement::Shared => format!(
                "site to site, every system alike: both gateways on CPU {h}, \
                 the generator alone on CPU {}",
                1 - h
            ),
        }
    }
}

/// Pins every thread of `pid` (and the threads it starts later) to `cpu`.
fn pin_process(pid: u32, cpu: usize) -> Result<()> {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()
        .context("running taskset (util-linux)")?;
    if !out.status.success() {
        bail!(
            "taskset -a -p -c {cpu} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// What the parts need to know beyond the trial [`Plan`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// Smoke run: the NAT part measures only its two smaller flow sets.
    pub quick: bool,
    /// The trial duration was chosen on the command line: the NAT part
    /// keeps it instead of its own 2 s.
    pub duration_chosen: bool,
    /// Frame sizes (FCS included) for plain forwarding.
    pub sizes: Vec<usize>,
    /// Inner frame sizes for the ESP cases and the peers.
    pub esp_sizes: Vec<usize>,
    /// Frame sizes for the NAT part.
    pub nat_sizes: Vec<usize>,
    /// CPU for Strait's worker in single-instance cases (and the kernel's
    /// RPS target).
    pub dut_cpu: usize,
    /// Steer the kernel's receive processing to `dut_cpu` with RPS.
    pub kernel_rps: bool,
    /// Measure DPDK testpmd (AF_XDP PMD, MAC forwarding) in the forwarding
    /// part; when on and testpmd is missing, the part fails.
    pub testpmd: bool,
    /// Poll mode of the branch and hub in the site-to-site case.
    pub site_poll: Poll,
    /// Where the two gateways of the site-to-site bed run, for every
    /// system alike.
    pub site_placement: Placement,
    /// Directory of the .topo files.
    pub topologies: PathBuf,
    /// Where boringtun-cli is installed when it is not on PATH.
    pub peers_cache: PathBuf,
    /// Wait (up to 3 min) for the 1-minute load average to fall below
    /// this before starting; 0 disables the wait.
    pub idle_load: f64,
    /// How the soak part runs.
    pub soak: SoakPlan,
    /// How the registration part runs.
    pub registration: RegistrationPlan,
    /// How the route-exchange part runs.
    pub routes: RoutesPlan,
    /// How the DNS part runs.
    pub dns: DnsPlan,
}

/// A generator figure with a name, for the results.
#[derive(Debug, serde::Serialize)]
struct Case {
    section: &'static str,
    system: String,
    size: usize,
    figure: Figure,
    /// Per Strait worker: percent of its runnable time it was on a CPU
    /// during the figure (below ~95 %: something else shared its core).
    worker_on_cpu: Vec<f64>,
    tcp_gbps: Vec<f64>,
    tcp_retransmits: Vec<u64>,
    /// iperf3 UDP at an unlimited send rate: Gbit/s of payload received.
    udp_gbps: Vec<f64>,
    /// iperf3 UDP loss, percent.
    udp_loss_pct: Vec<f64>,
    /// With the tunnel up and no traffic: CPU of both gateways' processes
    /// together, percent of one core (an `-idle` section's case).
    idle_cpu_pct: Option<f64>,
}

impl Case {
    /// A generator figure of `system` at `size`.
    fn figure(section: &'static str, system: &str, size: usize, figure: Figure) -> Case {
        Case {
            section,
            system: system.to_owned(),
            size,
            figure,
            worker_on_cpu: vec![],
            tcp_gbps: vec![],
            tcp_retransmits: vec![],
            udp_gbps: vec![],
            udp_loss_pct: vec![],
            idle_cpu_pct: None,
        }
    }

    /// The iperf3 results of `system`, filled by [`Bench::iperf_into`].
    fn iperf(section: &'static str, system: &str) -> Case {
        Case::figure(section, system, 0, Figure::default())
    }

    fn tcp(&self) -> Option<Spread> {
        Spread::of(&self.tcp_gbps)
    }

    fn udp(&self) -> Option<Spread> {
        Spread::of(&self.udp_gbps)
    }
}

/// One run of the benchmark: what to measure, and every figure the parts
/// have measured so far.
#[derive(Debug)]
pub struct Bench {
    settings: Settings,
    plan: Plan,
    bins: Binaries,
    out: PathBuf,
    tcp_secs: u64,
    cases: Vec<Case>,
    nat: NatResults,
    soak: Option<SoakResults>,
    registration: Option<RegistrationResults>,
    routes: Option<RoutesResults>,
    dns: Option<DnsResults>,
    notes: Vec<String>,
}

impl Bench {
    /// A run with `plan` for every generator trial and `tcp_secs` per
    /// iperf3 run (0: none); results and daemon logs go to `out`.
    pub fn new(
        settings: Settings,
        plan: Plan,
        bins: Binaries,
        out: PathBuf,
        tcp_secs: u64,
    ) -> Bench {
        Bench {
            settings,
            plan,
            bins,
            out,
            tcp_secs,
            cases: Vec::new(),
            nat: NatResults::default(),
            soak: None,
            registration: None,
            routes: None,
            dns: None,
            notes: Vec::new(),
        }
    }

    /// Waits (up to 3 min) for an idle machine; a machine that stays busy
    /// becomes a note in the results.
    pub fn wait_idle(&mut self) {
        let idle_load = self.settings.idle_load;
        if idle_load <= 0.0 {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let load = load_average();
            if load < idle_load {
                return;
            }
            if Instant::now() > deadline {
                let note = format!(
                    "load average {load:.2} at start (wanted < {idle_load}): other work shared the CPUs"
                );
                eprintln!("strait-bench: {note}");
                self.notes.push(note);
                return;
            }
            eprintln!("waiting for an idle machine (load {load:.2})…");
            std::thread::sleep(Duration::from_secs(10));
        }
    }

    fn bed(&self, file: &str, tag: &str) -> Result<(Testbed, BTreeMap<String, Netns>)> {
        let path = self.settings.topologies.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading topology {}", path.display()))?;
        let topo = Topology::parse(&text).with_context(|| path.display().to_string())?;
        let mut tb = Testbed::new(tag);
        let nets = topo.build(&mut tb)?;
        Ok((tb, nets))
    }

    fn progress(label: &str) -> impl FnMut(&str, &TrialFigures) + '_ {
        move |kind, t| {
            eprintln!(
                "  {label:<28} {kind:<8} tx {:>9.0} pps  rx {:>9.0} pps  {:>6.3} Gb/s  loss {:>7.3} %  p50 {:>8} us  p99 {:>8} us  shared {:>3.0} %",
                t.tx_pps,
                t.rx_pps,
                t.rx_gbps,
                t.loss_pct,
                t.p50_us.map_or("—".into(), |x| format!("{x:.1}")),
                t.p99_us.map_or("—".into(), |x| format!("{x:.1}")),
                t.foreign_pct,
            );
        }
    }

    /// Measures a figure with Strait daemons in the path, recording how
    /// much of their cores their workers really had.
    fn measure_dut(
        &self,
        path: &Path,
        size: usize,
        label: &str,
        daemons: &[&Straitd],
    ) -> Result<(Figure, Vec<f64>)> {
        let before: Vec<Option<SchedTime>> = daemons.iter().map(|d| d.worker_sched()).collect();
        let own: Vec<u32> = daemons.iter().map(|d| d.pid()).collect();
        let fig = measure(path, &self.plan, size, &own, &mut Self::progress(label))?;
        let share = daemons
            .iter()
            .zip(before)
            .filter_map(|(d, b)| d.worker_sched()?.on_cpu_percent_since(&b?))
            .collect();
        Ok((fig, share))
    }

    /// The idle cost of a gateway pair: with its tunnel up and no traffic,
    /// the CPU time of `pids` (every thread) over a few seconds, as a case
    /// of section `<section>-idle`.
    fn idle_into(&mut self, section: &'static str, system: &str, pids: &[u32]) {
        let window = if self.settings.quick {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(5)
        };
        // Whatever the tunnel's set-up left running settles first.
        std::thread::sleep(Duration::from_millis(500));
        let mut case = Case::iperf(section, system);
        case.idle_cpu_pct = idle_cpu_percent(pids, window);
        match case.idle_cpu_pct {
            Some(p) => eprintln!("  {system:<28} idle     {p:.2} % of a core (both gateways)"),
            None => eprintln!("  {system:<28} idle     not measured (no schedstat)"),
        }
        self.cases.push(case);
    }

    /// iperf3 between `client` and `server` (`ip`): `reps` TCP runs of one
    /// stream, then `reps` UDP runs at an unlimited send rate with
    /// 1024-byte frames, into `case`. Failures are reported, not fatal.
    fn iperf_into(&self, case: &mut Case, client: &Netns, server: &Netns, ip: &str) {
        if self.tcp_secs == 0 {
            return;
        }
        for _ in 0..self.plan.reps {
            match iperf::tcp(client, server, ip, self.tcp_secs) {
                Ok((g, r)) => {
                    eprintln!(
                        "  {:<28} tcp      {g:.3} Gbit/s, {r} retransmits",
                        case.system
                    );
                    case.tcp_gbps.push(g);
                    case.tcp_retransmits.push(r);
                }
                Err(e) => eprintln!("  {:<28} tcp      failed: {e:#}", case.system),
            }
        }
        for _ in 0..self.plan.reps {
            match iperf::udp(client, server, ip, self.tcp_secs) {
                Ok((g, loss)) => {
                    eprintln!(
                        "  {:<28} udp      {g:.3} Gbit/s received, loss {loss:.2} %",
                        case.system
                    );
                    case.udp_gbps.push(g);
                    case.udp_loss_pct.push(loss);
                }
                Err(e) => eprintln!("  {:<28} udp      failed: {e:#}", case.system),
            }
        }
    }

    /// Adds a generator figure, with a note when the generator failed to
    /// seal or open some of its frames.
    fn push_fig(
        &mut self,
        section: &'static str,
        system: &str,
        size: usize,
        figure: Figure,
        worker_on_cpu: Vec<f64>,
    ) {
        let failures: u64 = figure
            .max
            .iter()
            .chain(&figure.latency)
            .map(|t| t.tunnel_failures)
            .sum();
        if failures > 0 {
            self.notes.push(format!(
                "{system}, {size} B: {failures} frames failed to seal/open at the generator"
            ));
        }
        let mut case = Case::figure(section, system, size, figure);
        case.worker_on_cpu = worker_on_cpu;
        self.cases.push(case);
    }

    fn find(&self, section: &str, prefix: &str, size: usize) -> Option<&Case> {
        self.cases
            .iter()
            .find(|c| c.section == section && c.system.starts_with(prefix) && c.size == size)
    }
}

fn ns<'a>(nets: &'a BTreeMap<String, Netns>, short: &str) -> Result<&'a Netns> {
    nets.get(short)
        .with_context(|| format!("topology has no namespace {short}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// The generator path of the site-to-site bed: lana → lanb, first hop the
/// branch gateway's LAN port.
fn site_path(lana: &Netns, lanb: &Netns, branch: &Netns) -> Result<Path> {
    Path::between(lana, lanb, branch, "lan", ip("10.1.0.2"), ip("10.2.0.2"))
}

impl Bench {
    /// [`site_path`] with the generator's receiver where `--site-placement`
    /// puts it, the same for every system of the site-to-site parts.
    fn placed_site_path(&self, lana: &Netns, lanb: &Netns, branch: &Netns) -> Result<Path> {
        let mut path = site_path(lana, lanb, branch)?;
        path.sink_cpu = self.settings.site_placement.sink_cpu(self.settings.dut_cpu);
        Ok(path)
    }
}

/// Pings lanb from lana until the tunnel carries it (the first packets make
/// the gateways resolve their neighbours); bounded to 20 tries.
fn wait_through_tunnel(lana: &Netns, label: &str) -> Result<()> {
    if !ping_until_reachable(lana, "10.2.0.2") {
        bail!("{label}: lana cannot reach lanb through the tunnel");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Placement;

    #[test]
    fn placements_put_the_hub_on_the_dut_cpu_and_say_so() {
        assert_eq!(Placement::Split.cpus(1), (0, 1));
        assert_eq!(Placement::Split.cpus(0), (1, 0));
        assert_eq!(Placement::Shared.cpus(1), (1, 1));
        // Only two CPUs on the bed: a larger --dut-cpu means CPU 1.
        assert_eq!(Placement::Shared.cpus(5), (1, 1));
        let shared = Placement::Shared.describe(1);
        assert!(shared.contains("both gateways on CPU 1"), "{shared}");
        assert!(shared.contains("generator alone on CPU 0"), "{shared}");
        let split = Placement::Split.describe(1);
        assert!(split.contains("branch gateway on CPU 0"), "{split}");
        assert!(split.contains("receiver on CPU 1"), "{split}");
        // The receiver goes where the CPU has headroom: the hub's when the
        // branch shares the generator's, the generator's when it is alone.
        assert_eq!(Placement::Split.sink_cpu(1), Some(1));
        assert_eq!(Placement::Split.sink_cpu(0), Some(0));
        assert_eq!(Placement::Shared.sink_cpu(1), None);
    }
}
