//! `strait-bench`: the end-to-end benchmark. On namespace beds it measures,
//! in one invocation and with the same generated traffic:
//!
//! 1. plain forwarding, Strait (one pinned poll-mode worker) against the
//!    kernel (`ip_forward`, RPS), at each frame size: maximum rate, loss,
//!    latency at half the maximum, CPU per GB, iperf3 TCP;
//! 2. ESP: one Strait instance encrypting (the generator opens the ESP it
//!    emits), one decrypting (the generator seals what it sends), and a
//!    branch/hub pair site to site (generator and iperf3 TCP), as ratios to
//!    Strait's own plain forwarding measured minutes earlier;
//! 3. NAT (`--only nat`): Strait SNAT against nftables masquerade / SNAT
//!    with 1k, 100k and 1M concurrent UDP flows, and the session setup rate;
//! 4. peers (`--only peers`): wireguard-go, boringtun and strongSwan
//!    (kernel-libipsec) as the site-to-site gateway pair instead of Strait.
//!
//! Every figure has a maximum rate, an NDR/PDR search (RFC 2544 §26.1) and
//! latency at half the NDR; every path also gets iperf3 TCP and UDP. The
//! run ends with a table of every system (the ratio to the matching Strait
//! system and the commercial claim) and SVG charts (`--plots`).
//!
//! Every figure is the median and range of `--reps` trials. Run it through
//! `scripts/bench`, which installs what it needs and builds release.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use strait_bench::gen::FlowSpec;
use strait_bench::harness::daemon::{Binaries, SchedTime, Straitd};
use strait_bench::harness::nat::{NatPart, NatResults, SCALES};
use strait_bench::harness::peers::{self, GatewayPair, Implementation};
use strait_bench::harness::set_rps;
use strait_bench::harness::stats::{ratio, show, Spread};
use strait_bench::harness::trial::{
    measure, Figure, Path, Plan, ReceiverKind, SearchPlan, SenderKind, TrialFigures,
};
use strait_bench::harness::tunnel::{key_from_hex, outbound_sa, TunnelLeg};
use strait_bench::harness::{plot, strongswan};
use strait_esp::CipherSuite;
use strait_testbed::{Netns, Testbed, Topology};

/// Keys of the static SAs (key || 4-byte salt, RFC 4106 §8.1). Benchmark
/// keys only: they are printed in the configs the harness writes.
const KEY_OUT: &str = "000102030405060708090a0b0c0d0e0f10111213";
const KEY_IN: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3";
const SPI_OUT: u32 = 4097;
const SPI_IN: u32 = 8194;

/// The encrypted throughput the commercial vCPE we replace claims on 2
/// vCPUs at 1024 B (its datasheet), Gbit/s.
const COMMERCIAL_GBPS: f64 = 0.35;

/// Starts a peer implementation as the gateway pair (A side, B side).
type StartPair<'a> =
    dyn Fn(&peers::Gateway<'_>, &peers::Gateway<'_>) -> Result<Box<dyn GatewayPair>> + 'a;

/// System names of the site-to-site cases (the poll mode follows).
const SITE: &str = "Strait site to site";
const SITE_SNAT: &str = "Strait site to site + hub SNAT";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Plain forwarding, Strait vs kernel.
    Forward,
    /// ESP: encrypt, decrypt, site to site.
    Esp,
    /// NAT: Strait SNAT vs nftables masquerade, 1k to 1M flows.
    Nat,
    /// Site to site: Strait vs wireguard-go and boringtun as the gateways.
    Peers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SenderArg {
    AfXdp,
    AfPacket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReceiverArg {
    AfXdp,
    AfPacket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum PollArg {
    Spin,
    Adaptive,
}

impl PollArg {
    fn toml(self) -> &'static str {
        match self {
            PollArg::Spin => "spin",
            PollArg::Adaptive => "adaptive",
        }
    }
}

/// Strait vs the kernel, and Strait as an ESP endpoint, on netns beds.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Smoke run: one repetition of 1 s per figure, no TCP.
    #[arg(long)]
    quick: bool,
    /// Parts to run (default: forward,esp; nat and peers add about 5
    /// minutes each and run only when named).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Repetitions of every figure.
    #[arg(long)]
    reps: Option<usize>,
    /// Measured seconds per generator trial.
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up seconds before each trial.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Seconds per iperf3 TCP run (0: skip TCP).
    #[arg(long)]
    tcp_duration: Option<u64>,
    /// Frame sizes (FCS included) for plain forwarding.
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 512, 1024, 1518])]
    sizes: Vec<usize>,
    /// Inner frame sizes for the ESP cases and the peers.
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 1024])]
    esp_sizes: Vec<usize>,
    /// Frame sizes for the NAT part.
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 1024])]
    nat_sizes: Vec<usize>,
    /// Skip the NDR/PDR search of every figure (latency is then measured
    /// at a fraction of the maximum rate).
    #[arg(long)]
    no_search: bool,
    /// Where the SVG charts go (default: `<out>/img`).
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Latency is measured at this fraction of the median maximum rate.
    #[arg(long, default_value_t = 0.5)]
    latency_at: f64,
    /// Generator sender.
    #[arg(long, value_enum, default_value = "af-xdp")]
    sender: SenderArg,
    /// Generator receiver.
    #[arg(long, value_enum, default_value = "af-xdp")]
    receiver: ReceiverArg,
    /// CPU for the generator threads (`none`: let the scheduler place them).
    #[arg(long, default_value = "0")]
    gen_cpu: String,
    /// CPU for Strait's worker in single-instance cases (and the kernel's
    /// RPS target).
    #[arg(long, default_value_t = 1)]
    dut_cpu: usize,
    /// Steer the kernel's receive processing to --dut-cpu with RPS.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    kernel_rps: bool,
    /// Poll mode of the branch and hub in the site-to-site case (both on a
    /// 2-vCPU host with the generator: spin leaves it no CPU of its own).
    #[arg(long, value_enum, default_value = "adaptive")]
    site_poll: PollArg,
    /// Directory holding straitd and straitctl.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Directory of the .topo files.
    #[arg(long, default_value = "scripts/topologies")]
    topologies: PathBuf,
    /// Where boringtun-cli is installed (`cargo install --root`) when it
    /// is not on PATH, for `--only peers`.
    #[arg(long, default_value = "/var/cache/strait-bench/boringtun")]
    peers_cache: PathBuf,
    /// Where results (JSON, Markdown, daemon logs) go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Repeat a trial (at most twice) when other programs were runnable in
    /// more than this percentage of its samples.
    #[arg(long, default_value_t = 10.0)]
    max_foreign: f64,
    /// Wait (up to 3 min) for the 1-minute load average to fall below this
    /// before starting; 0 disables the wait.
    #[arg(long, default_value_t = 1.0)]
    idle_load: f64,
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

struct Bench {
    args: Args,
    plan: Plan,
    bins: Binaries,
    out: PathBuf,
    tcp_secs: u64,
    cases: Vec<Case>,
    nat: NatResults,
    notes: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    strait_testbed::require_root();
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("executable has no directory")?
            .to_path_buf(),
    };
    let bins = Binaries::in_dir(&bin_dir)?;
    for (prog, pkg) in [("iperf3", "iperf3"), ("ethtool", "ethtool")] {
        strait_testbed::require_program(prog, pkg);
    }
    let stamp = utc_stamp("%Y%m%d-%H%M%S");
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/bench-results/{stamp}")));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let quick = args.quick;
    let plan = Plan {
        reps: args.reps.unwrap_or(if quick { 1 } else { 3 }).max(1),
        duration: Duration::from_secs_f64(args.duration.unwrap_or(if quick { 1.0 } else { 3.0 })),
        warmup: Duration::from_secs_f64(if quick {
            args.warmup.min(0.3)
        } else {
            args.warmup
        }),
        latency_at: args.latency_at,
        sender: match args.sender {
            SenderArg::AfXdp => SenderKind::AfXdp,
            SenderArg::AfPacket => SenderKind::AfPacket,
        },
        receiver: match args.receiver {
            ReceiverArg::AfXdp => ReceiverKind::AfXdp,
            ReceiverArg::AfPacket => ReceiverKind::AfPacket,
        },
        gen_cpu: match args.gen_cpu.as_str() {
            "none" => None,
            c => Some(c.parse().context("--gen-cpu: a CPU number or `none`")?),
        },
        max_foreign_pct: args.max_foreign,
        flows: FlowSpec::default(),
        search: (!args.no_search).then(|| {
            if quick {
                SearchPlan {
                    trial: Duration::from_millis(500),
                    max_trials: 5,
                    ..SearchPlan::default()
                }
            } else {
                SearchPlan::default()
            }
        }),
        latency_of_ndr: true,
    };
    let tcp_secs = args.tcp_duration.unwrap_or(if quick { 0 } else { 4 });
    let mut bench = Bench {
        args,
        plan,
        bins,
        out,
        tcp_secs,
        cases: Vec::new(),
        nat: NatResults::default(),
        notes: Vec::new(),
    };
    bench.wait_idle();
    let started = Instant::now();
    let parts = if bench.args.only.is_empty() {
        vec![Part::Forward, Part::Esp]
    } else {
        bench.args.only.clone()
    };
    let mut failure = None;
    for part in parts {
        let r = match part {
            Part::Forward => bench.forwarding(),
            Part::Esp => bench.esp(),
            Part::Nat => bench.nat(),
            Part::Peers => bench.peers(),
        };
        if let Err(e) = r {
            eprintln!("strait-bench: {part:?} failed: {e:#}");
            failure.get_or_insert(e);
        }
    }
    let plots = bench
        .args
        .plots
        .clone()
        .unwrap_or_else(|| bench.out.join("img"));
    bench.plots(&plots);
    let text = bench.render(started.elapsed());
    println!("{text}");
    std::fs::write(bench.out.join("results.md"), &text)?;
    let json = serde_json::json!({
        "date": utc_stamp("%Y-%m-%d %H:%M UTC"),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": machine_notes(),
        "notes": bench.notes,
        "cases": bench.cases,
        "nat": bench.nat,
    });
    std::fs::write(
        bench.out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    eprintln!("results in {}", bench.out.display());
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Bench {
    fn wait_idle(&mut self) {
        if self.args.idle_load <= 0.0 {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let load = load_average();
            if load < self.args.idle_load {
                return;
            }
            if Instant::now() > deadline {
                let note = format!(
                    "load average {load:.2} at start (wanted < {}): other work shared the CPUs",
                    self.args.idle_load
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
        let path = self.args.topologies.join(file);
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

    /// iperf3 between `client` and `server` (`ip`): `reps` TCP runs of one
    /// stream, then `reps` UDP runs at an unlimited send rate with
    /// 1024-byte frames, into `case`. Failures are reported, not fatal.
    fn iperf_into(&self, case: &mut Case, client: &Netns, server: &Netns, ip: &str) {
        if self.tcp_secs == 0 {
            return;
        }
        for _ in 0..self.plan.reps {
            match iperf_tcp(client, server, ip, self.tcp_secs) {
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
            match iperf_udp(client, server, ip, self.tcp_secs) {
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

    /// Plain forwarding: kernel then Strait on the same bed.
    fn forwarding(&mut self) -> Result<()> {
        eprintln!("== forwarding: kernel vs Strait (scripts/topologies/forward.topo)");
        let (_tb, nets) = self.bed("forward.topo", "bench-fwd")?;
        let (h1, dp, h2) = (ns(&nets, "h1")?, ns(&nets, "dp")?, ns(&nets, "h2")?);
        let path = Path::between(h1, h2, dp, "left", ip("10.1.0.2"), ip("10.2.0.2"))?;

        // The kernel: addresses on the router, forwarding on, and RPS so
        // its receive processing runs on the CPU Strait's worker gets.
        dp.addr("left", "10.1.0.1/24")?;
        dp.addr("right", "10.2.0.1/24")?;
        dp.sysctl("net.ipv4.ip_forward", "1")?;
        let rps = format!("{:x}", 1u64 << self.args.dut_cpu);
        if self.args.kernel_rps {
            set_rps(dp, &["left", "right"], &rps)?;
        }
        let label = format!(
            "kernel ip_forward{}",
            if self.args.kernel_rps { " + RPS" } else { "" }
        );
        for &size in &self.args.sizes.clone() {
            let fig = measure(&path, &self.plan, size, &[], &mut Self::progress(&label))?;
            self.cases.push(Case::figure("forward", &label, size, fig));
        }
        let mut case = Case::iperf("forward-tcp", &label);
        self.iperf_into(&mut case, h1, h2, "10.2.0.2");
        self.cases.push(case);
        set_rps(dp, &["left", "right"], "0")?;
        dp.sysctl("net.ipv4.ip_forward", "0")?;
        dp.ip(&["addr", "flush", "dev", "left"])?;
        dp.ip(&["addr", "flush", "dev", "right"])?;
        h1.ip(&["neigh", "flush", "all"])?;
        h2.ip(&["neigh", "flush", "all"])?;

        // Strait: one worker, spinning, pinned.
        let config = format!(
            r#"[engine]
workers = 1
cores = [{cpu}]
poll = "spin"

[[interface]]
name = "left"
addresses = ["10.1.0.1/24"]

[[interface]]
name = "right"
addresses = ["10.2.0.1/24"]
"#,
            cpu = self.args.dut_cpu
        );
        let d = Straitd::start(dp, &self.bins, &self.out, "forward", &config)?;
        let label = "Strait (1 worker, spin)".to_owned();
        for &size in &self.args.sizes.clone() {
            let (fig, share) = self.measure_dut(&path, size, &label, &[&d])?;
            self.push_fig("forward", &label, size, fig, share);
        }
        d.save_shows(&self.out, "forward", &["counters", "drops", "workers"]);
        let mut case = Case::iperf("forward-tcp", &label);
        self.iperf_into(&mut case, h1, h2, "10.2.0.2");
        self.cases.push(case);
        Ok(())
    }

    /// NAT: the kernel (nftables) then Strait translating 1k, 100k and 1M
    /// flows; `--quick` runs only the smallest two sets.
    fn nat(&mut self) -> Result<()> {
        eprintln!("== NAT: kernel nftables vs Strait SNAT (scripts/topologies/bench-nat.topo)");
        let mut plan = self.plan.clone();
        if self.args.duration.is_none() && !self.args.quick {
            // 2 s trials keep the part near 5 minutes with three flow sets.
            plan.duration = Duration::from_secs(2);
        }
        let quick = self.args.quick;
        let part = NatPart {
            plan,
            bins: &self.bins,
            out: &self.out,
            topologies: &self.args.topologies,
            dut_cpu: self.args.dut_cpu,
            kernel_rps: self.args.kernel_rps,
            sizes: self.args.nat_sizes.clone(),
            scales: SCALES[..if quick { 2 } else { 3 }].to_vec(),
            setup_reps: if quick { 1 } else { 3 },
        };
        let mut progress = |label: &str, kind: &str, t: &TrialFigures| {
            Self::progress(label)(kind, t);
        };
        self.nat = part.run(&mut progress)?;
        Ok(())
    }

    /// Site to site with the gateway pair swapped: Strait (branch/hub,
    /// static SAs), then wireguard-go and boringtun on a fresh copy of the
    /// same bed, with the same generator traffic and iperf3.
    fn peers(&mut self) -> Result<()> {
        strait_testbed::require_program("wireguard-go", "wireguard-go");
        strait_testbed::require_program("wg", "wireguard-tools");
        // Installing boringtun can take minutes: before anything is measured.
        let mut imps = vec![Implementation::WireguardGo];
        match peers::boringtun(&self.args.peers_cache) {
            Ok(bin) => imps.push(Implementation::Boringtun(bin)),
            Err(why) => {
                let note = format!("boringtun skipped: {why}");
                eprintln!("strait-bench: {note}");
                self.notes.push(note);
            }
        }
        // Strait's figures for the ratios: from the ESP part of this run,
        // or measured here on the same bed.
        if !self
            .cases
            .iter()
            .any(|c| c.section == "esp" && c.system.starts_with(SITE))
        {
            self.site_strait("peers", false)?;
        }
        let tag = format!("{}", std::process::id() % 10_000);
        let out = self.out.clone();
        for imp in imps {
            let label = format!("{} {}", imp.label(), imp.version());
            self.peer_case(&label, &|a, b| {
                Ok(Box::new(peers::WgPair::start(&imp, a, b, &tag, &out)?))
            })?;
        }
        match strongswan::available() {
            Ok(()) => {
                let label = format!("strongSwan {} (kernel-libipsec)", strongswan::version());
                self.peer_case(&label, &|a, b| {
                    Ok(Box::new(strongswan::StrongswanPair::start(
                        a, b, &tag, &out,
                    )?))
                })?;
            }
            Err(why) => {
                let note = format!("strongSwan skipped: {why}");
                eprintln!("strait-bench: {note}");
                self.notes.push(note);
            }
        }
        Ok(())
    }

    /// One peer implementation as the gateway pair of a fresh site-to-site
    /// bed: the generator figures and iperf3 through it.
    fn peer_case(&mut self, label: &str, start: &StartPair<'_>) -> Result<()> {
        eprintln!("== peers: {label} as both gateways (scripts/topologies/bench-site.topo)");
        let (_tb, nets) = self.bed("bench-site.topo", "bench-peer")?;
        let (lana, branch, hub, lanb) = (
            ns(&nets, "lana")?,
            ns(&nets, "branch")?,
            ns(&nets, "hub")?,
            ns(&nets, "lanb")?,
        );
        let (a, b) = peers::site_gateways(branch, hub);
        let pair = start(&a, &b)?;
        wait_through_tunnel(lana, label)?;
        let path = site_path(lana, lanb, branch)?;
        for &size in &self.args.esp_sizes.clone() {
            let fig = measure(
                &path,
                &self.plan,
                size,
                &pair.pids(),
                &mut Self::progress(label),
            )?;
            self.push_fig("peers", label, size, fig, vec![]);
        }
        let mut case = Case::iperf("peers-tcp", label);
        self.iperf_into(&mut case, lana, lanb, "10.2.0.2");
        self.cases.push(case);
        drop(pair);
        Ok(())
    }

    /// Every system of the run in one table: the figures BENCHMARKING.md
    /// asks for, each with how many times faster Strait's matching system
    /// was in this run.
    fn render_summary(&self, s: &mut String) {
        struct Row<'a> {
            system: String,
            size: usize,
            fig: &'a Figure,
            strait: Option<&'a Figure>,
            latency_note: &'static str,
        }
        let mut rows: Vec<Row<'_>> = Vec::new();
        let strait_site = |size| {
            self.cases
                .iter()
                .find(|c| {
                    c.system.starts_with(SITE)
                        && !c.system.starts_with(SITE_SNAT)
                        && c.size == size
                        && (c.section == "esp" || c.section == "peers")
                })
                .map(|c| &c.figure)
        };
        for c in &self.cases {
            let strait = match c.section {
                "forward" if !c.system.starts_with("Strait") => {
                    self.find("forward", "Strait", c.size).map(|k| &k.figure)
                }
                "peers" if !c.system.starts_with("Strait") => strait_site(c.size),
                "forward" | "esp" | "peers" => None,
                _ => continue,
            };
            if c.section == "peers"
                && c.system.starts_with("Strait")
                && rows
                    .iter()
                    .any(|r| r.system == c.system && r.size == c.size)
            {
                continue;
            }
            rows.push(Row {
                system: c.system.clone(),
                size: c.size,
                fig: &c.figure,
                strait,
                latency_note: "",
            });
        }
        // NAT: the masquerade flow set, the seed guide's rule.
        let nat_flows = self.nat.cases.iter().map(|c| c.flows).min();
        for c in self.nat.cases.iter().filter(|c| Some(c.flows) == nat_flows) {
            let strait = (!c.system.starts_with("Strait"))
                .then(|| {
                    self.nat
                        .cases
                        .iter()
                        .find(|k| {
                            k.system.starts_with("Strait") && k.flows == c.flows && k.size == c.size
                        })
                        .map(|k| &k.figure)
                })
                .flatten();
            rows.push(Row {
                system: format!("{} {}, {} flows", c.system, c.rule, c.flows),
                size: c.size,
                fig: &c.figure,
                strait,
                latency_note: " ¹",
            });
        }
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\n### Every system in this run\n\n\
             | system | frame | Mpps | Gbit/s | NDR Mpps | PDR Mpps | p50 µs | p99 µs | CPU s/GB | Strait × |\n\
             |---|---|---|---|---|---|---|---|---|---|"
        );
        let mpps = |x: Option<f64>| x.map_or("—".to_owned(), |p| format!("{:.3}", p / 1e6));
        for r in &rows {
            let f = r.fig;
            let _ = writeln!(
                s,
                "| {} | {} B | {} | {} | {} | {} | {}{} | {}{} | {} | {} |",
                r.system,
                r.size,
                show(f.pps().map(|x| x.scaled(1e-6)), 3),
                show(f.gbps(), 2),
                mpps(f.ndr_pps()),
                mpps(f.pdr_pps()),
                show(f.p50(), 0),
                r.latency_note,
                show(f.p99(), 0),
                r.latency_note,
                show(f.dut_cpu_per_gb(), 1),
                r.strait
                    .and_then(|k| ratio(k.gbps(), f.gbps()))
                    .map_or("—".into(), |x| format!("{x:.2}×")),
            );
        }
        let claim = strait_site(1024)
            .and_then(|k| k.gbps())
            .map_or("—".into(), |g| {
                format!("{:.2}×", g.median / COMMERCIAL_GBPS)
            });
        let _ = writeln!(
            s,
            "| commercial vCPE, encrypted (datasheet, 2 vCPUs) | 1024 B | — | {COMMERCIAL_GBPS:.2} | — | — | — | — | — | {claim} |\n\n\
             Mpps, Gbit/s: received at the maximum rate the sender reaches (median and range of the trials; Gbit/s \
             with Ethernet framing, inner frames for tunnels). NDR/PDR: highest rate with zero / ≤ 0.1 % loss in \
             1-s trials (RFC 2544 §26.1 binary search, at most 12 trials, below the median sending rate). \
             p50/p99: one-way latency at {:.0} % of the NDR (of the maximum where no rate was loss-free); \
             ¹ NAT rows: at 80 % of the maximum, the NAT part's loss check. CPU s/GB: busy CPU time of the whole \
             machine minus the generator's own, per GB received: the system's processes and the kernel work \
             they cause. Strait ×: Strait's median Gbit/s over this row's, same frame size, same run (plain \
             forwarding for the kernel, Strait SNAT for nftables, Strait site to site for the tunnels and the \
             commercial claim).",
            self.plan.latency_at * 100.0
        );
    }

    /// The charts of the run, as SVG files in `dir`: Gbit/s against frame
    /// size and latency distributions at 1024 B, for plain forwarding and
    /// for the tunnels. A chart without data is skipped; a failure becomes
    /// a note.
    fn plots(&mut self, dir: &std::path::Path) {
        let forward = |c: &Case| c.section == "forward";
        let tunnels =
            |c: &Case| (c.section == "esp" && c.system.starts_with(SITE)) || c.section == "peers";
        let mut made = Vec::new();
        let mut failed = Vec::new();
        struct Chart<'a> {
            name: &'a str,
            title: &'a str,
            latency_title: &'a str,
            pick: &'a dyn Fn(&Case) -> bool,
        }
        let charts = [
            Chart {
                name: "forwarding",
                title: "Plain forwarding, one core",
                latency_title: "Plain forwarding: latency at 1024 B, half the NDR",
                pick: &forward,
            },
            Chart {
                name: "site-to-site",
                title: "Site to site, AES-128-GCM (inner frames)",
                latency_title: "Site to site: latency at 1024 B, half the NDR",
                pick: &tunnels,
            },
        ];
        for c in charts {
            let series = self.throughput_series(c.pick);
            if series.iter().any(|s| s.points.len() > 1) {
                let file = dir.join(format!("{}-throughput.svg", c.name));
                let y = "Gbit/s at the maximum rate";
                match plot::throughput_vs_size(&file, c.title, y, &series) {
                    Ok(()) => made.push(file),
                    Err(e) => failed.push(format!("{}: {e:#}", file.display())),
                }
            }
            let cdfs = self.latency_series(c.pick, 1024);
            if !cdfs.is_empty() {
                let file = dir.join(format!("{}-latency-1024.svg", c.name));
                match plot::latency_cdf(&file, c.latency_title, &cdfs) {
                    Ok(()) => made.push(file),
                    Err(e) => failed.push(format!("{}: {e:#}", file.display())),
                }
            }
        }
        for f in &made {
            eprintln!("chart: {}", f.display());
        }
        for f in failed {
            let note = format!("chart not drawn: {f}");
            eprintln!("strait-bench: {note}");
            self.notes.push(note);
        }
    }

    /// One series per system among the picked cases, Strait's first.
    fn throughput_series(&self, pick: &dyn Fn(&Case) -> bool) -> Vec<plot::Series> {
        let mut series: Vec<plot::Series> = Vec::new();
        for c in self.cases.iter().filter(|c| pick(c)) {
            let Some(g) = c.figure.gbps() else { continue };
            let point = plot::Point {
                x: c.size as f64,
                y: g.median,
                lo: g.min,
                hi: g.max,
            };
            match series.iter_mut().find(|s| s.label == c.system) {
                Some(s) => s.points.push(point),
                None => series.push(plot::Series {
                    label: c.system.clone(),
                    points: vec![point],
                }),
            }
        }
        series.sort_by_key(|s| !s.label.starts_with("Strait"));
        series.truncate(plot::PALETTE.len());
        series
    }

    /// The latency distributions of the picked cases at `size`, Strait's
    /// first.
    fn latency_series(&self, pick: &dyn Fn(&Case) -> bool, size: usize) -> Vec<plot::Cdf> {
        let mut cdfs: Vec<plot::Cdf> = self
            .cases
            .iter()
            .filter(|c| pick(c) && c.size == size)
            .filter_map(|c| {
                Some(plot::Cdf {
                    label: c.system.clone(),
                    points: c.figure.latency_cdf.clone()?,
                })
            })
            .collect();
        cdfs.dedup_by(|a, b| a.label == b.label);
        cdfs.sort_by_key(|c| !c.label.starts_with("Strait"));
        cdfs.truncate(plot::PALETTE.len());
        cdfs
    }

    /// The peers table: each system's generator and iperf3 figures as
    /// ratios to Strait site to site in the same run, and the commercial
    /// claim.
    fn render_peers(&self, s: &mut String) {
        if !self.cases.iter().any(|c| c.section == "peers") {
            return;
        }
        let iperf_of = |system: &str| {
            self.cases
                .iter()
                .find(|c| c.section.ends_with("-tcp") && c.system == system)
        };
        let is_strait = |c: &Case| {
            c.system.starts_with(SITE)
                && !c.system.starts_with(SITE_SNAT)
                && (c.section == "esp" || c.section == "peers")
        };
        // Strait first (from the ESP part when it ran), then the peers.
        let mut rows: Vec<&Case> = self.cases.iter().filter(|c| is_strait(c)).collect();
        rows.dedup_by(|a, b| a.system == b.system && a.size == b.size);
        rows.extend(
            self.cases
                .iter()
                .filter(|c| c.section == "peers" && !is_strait(c)),
        );
        let strait_at = |size| {
            rows.iter()
                .find(|c| is_strait(c) && c.size == size)
                .copied()
        };
        let _ = writeln!(
            s,
            "\n### Site to site: Strait vs userspace peers (ratio: / Strait site to site, this run)\n\n\
             | system | frame | Gbit/s | kpps | NDR kpps | p50 µs | p99 µs | CPU s/GB | TCP Gbit/s | UDP Gbit/s (iperf3) | Gbit/s ratio | TCP ratio |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for c in &rows {
            let strait = strait_at(c.size);
            let f = &c.figure;
            let io = iperf_of(&c.system);
            let tcp = io.and_then(Case::tcp);
            let _ = writeln!(
                s,
                "| {} | {} B | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.system,
                c.size,
                show(f.gbps(), 3),
                show(f.pps().map(|x| x.scaled(1e-3)), 1),
                f.ndr_pps()
                    .map_or("—".into(), |p| format!("{:.1}", p / 1e3)),
                show(f.p50(), 0),
                show(f.p99(), 0),
                show(f.dut_cpu_per_gb(), 1),
                show(tcp, 2),
                show(io.and_then(Case::udp), 2),
                strait
                    .and_then(|k| ratio(f.gbps(), k.figure.gbps()))
                    .map_or("—".into(), |r| format!("{r:.2}×")),
                strait
                    .and_then(|k| ratio(tcp, iperf_of(&k.system).and_then(Case::tcp)))
                    .map_or("—".into(), |r| format!("{r:.2}×")),
            );
        }
        let _ = writeln!(
            s,
            "| commercial vCPE (datasheet, 2 vCPUs) | 1024 B | {COMMERCIAL_GBPS:.2} | — | — | — | — | — | — | — | {} | — |\n\n\
             Gbit/s, kpps: at the maximum rate the generator reaches; NDR: highest zero-loss rate; p50/p99: one-way \
             latency at {:.0} % of the NDR; CPU s/GB: the machine's busy CPU minus the generator's, per GB received; \
             TCP: iperf3, one stream; UDP: iperf3 at an unlimited rate, payload received. Ratios: median over \
             Strait's median in this run.",
            strait_at(1024)
                .and_then(|k| k.figure.gbps())
                .map_or("—".into(), |g| format!("{:.2}×", COMMERCIAL_GBPS / g.median)),
            self.plan.latency_at * 100.0
        );
    }

    /// ESP: one instance encrypting, one decrypting, then site to site.
    fn esp(&mut self) -> Result<()> {
        eprintln!(
            "== ESP: one endpoint encrypting / decrypting (scripts/topologies/bench-esp.topo)"
        );
        {
            let (_tb, nets) = self.bed("bench-esp.topo", "bench-esp")?;
            let (lan, dut, peer) = (ns(&nets, "lan")?, ns(&nets, "dut")?, ns(&nets, "peer")?);
            let peer_mac = peer.mac("eth0")?;
            let config = format!(
                r#"[engine]
workers = 1
cores = [{cpu}]
poll = "spin"

[[interface]]
name = "lan"
addresses = ["10.1.0.1/24"]

[[interface]]
name = "wan"
addresses = ["203.0.113.1/24"]

# The peer gateway is the generator: it answers no ARP.
[[neighbour]]
interface = "wan"
ip = "203.0.113.2"
mac = "{mac}"

[[tunnel]]
name = "peer"
local = "203.0.113.1"
remote = "203.0.113.2"
prefixes = ["10.2.0.0/16"]
keepalive = 0
outbound = {{ spi = {SPI_OUT}, cipher = "aes128-gcm", key = "{KEY_OUT}" }}
inbound = {{ spi = {SPI_IN}, cipher = "aes128-gcm", key = "{KEY_IN}" }}
"#,
                cpu = self.args.dut_cpu,
                mac = fmt_mac(peer_mac),
            );
            let d = Straitd::start(dut, &self.bins, &self.out, "esp-endpoint", &config)?;
            let dut_wan = dut.mac("wan")?;
            let peer_leg = |spi, key: &str| -> Result<TunnelLeg> {
                Ok(TunnelLeg {
                    spi,
                    cipher: CipherSuite::Aes128Gcm,
                    key: key_from_hex(key)?,
                    outer_src: Ipv4Addr::new(203, 0, 113, 2),
                    outer_dst: Ipv4Addr::new(203, 0, 113, 1),
                    src_mac: peer_mac,
                    dst_mac: dut_wan,
                })
            };
            // (i) Encrypt: clear LAN traffic in, ESP out to the peer, which
            // opens it and counts the probes.
            let mut encrypt = Path::between(lan, peer, dut, "lan", ip("10.1.0.2"), ip("10.2.0.2"))?;
            encrypt.open = Some(peer_leg(SPI_OUT, KEY_OUT)?);
            // (ii) Decrypt: the peer seals with fresh sequence numbers (one
            // SA for the whole run: the endpoint's replay window remembers).
            let leg = peer_leg(SPI_IN, KEY_IN)?;
            let sa = outbound_sa(&leg)?;
            let mut decrypt = Path::between(peer, lan, dut, "wan", ip("10.2.0.2"), ip("10.1.0.2"))?;
            decrypt.seal = Some((leg, Arc::clone(&sa)));
            for &size in &self.args.esp_sizes.clone() {
                let label = "Strait encrypt (AES-128-GCM)";
                let (fig, share) = self.measure_dut(&encrypt, size, label, &[&d])?;
                self.push_fig("esp", label, size, fig, share);
                let label = "Strait decrypt (AES-128-GCM)";
                let (fig, share) = self.measure_dut(&decrypt, size, label, &[&d])?;
                self.push_fig("esp", label, size, fig, share);
            }
            d.save_shows(&self.out, "esp-endpoint", &["counters", "drops", "workers"]);
        }
        self.site_strait("esp", false)?;
        self.site_strait("esp", true)
    }

    /// Strait as the branch/hub pair on the site-to-site bed: generator
    /// figures into `section`, iperf3 into `<section>-tcp`. With `snat` the
    /// hub also masquerades what leaves the tunnel towards its LAN: the
    /// seed guide's whole path (tunnel in, SNAT out).
    fn site_strait(&mut self, section: &'static str, snat: bool) -> Result<()> {
        eprintln!(
            "== ESP: site to site, branch encrypts, hub decrypts{} (scripts/topologies/bench-site.topo)",
            if snat { " and SNATs" } else { "" }
        );
        let (_tb, nets) = self.bed("bench-site.topo", "bench-site")?;
        let (lana, branch, hub, lanb) = (
            ns(&nets, "lana")?,
            ns(&nets, "branch")?,
            ns(&nets, "hub")?,
            ns(&nets, "lanb")?,
        );
        let poll = self.args.site_poll.toml();
        let (cpu_b, cpu_h) = (1 - self.args.dut_cpu.min(1), self.args.dut_cpu.min(1));
        let branch_cfg = format!(
            r#"[engine]
workers = 1
cores = [{cpu_b}]
poll = "{poll}"

[[interface]]
name = "lan"
addresses = ["10.1.0.1/24"]

[[interface]]
name = "wan"
addresses = ["203.0.113.2/24"]

[[tunnel]]
name = "hub"
local = "203.0.113.2"
remote = "203.0.113.1"
prefixes = ["10.2.0.0/16"]
keepalive = 0
outbound = {{ spi = {SPI_OUT}, cipher = "aes128-gcm", key = "{KEY_OUT}" }}
inbound = {{ spi = {SPI_IN}, cipher = "aes128-gcm", key = "{KEY_IN}" }}
"#
        );
        let hub_cfg = format!(
            r#"[engine]
workers = 1
cores = [{cpu_h}]
poll = "{poll}"

[[interface]]
name = "wan"
addresses = ["203.0.113.1/24"]

[[interface]]
name = "lan"
addresses = ["10.2.0.1/24"]

[[tunnel]]
name = "branch"
local = "203.0.113.1"
remote = "203.0.113.2"
prefixes = ["10.1.0.0/16"]
keepalive = 0
outbound = {{ spi = {SPI_IN}, cipher = "aes128-gcm", key = "{KEY_IN}" }}
inbound = {{ spi = {SPI_OUT}, cipher = "aes128-gcm", key = "{KEY_OUT}" }}
{nat}"#,
            nat = if snat {
                "\n[[nat]]\nname = \"site-out\"\nkind = \"masquerade\"\nsource = \"10.1.0.0/16\"\nout_interface = \"lan\"\n"
            } else {
                ""
            }
        );
        let db = Straitd::start(branch, &self.bins, &self.out, "site-branch", &branch_cfg)?;
        let dh = Straitd::start(hub, &self.bins, &self.out, "site-hub", &hub_cfg)?;
        // The first packet makes the branch resolve the hub and the hub
        // resolve the sink; ping until the path works (bounded).
        wait_through_tunnel(lana, "site to site")?;
        let site = site_path(lana, lanb, branch)?;
        let label = if snat {
            format!("{SITE_SNAT} ({poll})")
        } else {
            format!("{SITE} ({poll})")
        };
        for &size in &self.args.esp_sizes.clone() {
            let (fig, share) = self.measure_dut(&site, size, &label, &[&db, &dh])?;
            self.push_fig(section, &label, size, fig, share);
        }
        let mut case = Case::iperf(
            if section == "esp" {
                "esp-tcp"
            } else {
                "peers-tcp"
            },
            &label,
        );
        self.iperf_into(&mut case, lana, lanb, "10.2.0.2");
        self.cases.push(case);
        let tag = if snat { "site-snat" } else { "site" };
        db.save_shows(
            &self.out,
            &format!("{tag}-branch"),
            &["counters", "drops", "workers"],
        );
        let mut shows = vec!["counters", "drops", "workers"];
        if snat {
            shows.push("nat rules");
        }
        dh.save_shows(&self.out, &format!("{tag}-hub"), &shows);
        Ok(())
    }

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

    /// The results as Markdown tables, ready for docs/BENCHMARKS.md.
    fn render(&self, elapsed: Duration) -> String {
        let mut s = String::new();
        let p = &self.plan;
        let _ = writeln!(
            s,
            "strait-bench, {} — {} rep(s) × {:.1} s per trial (+{:.1} s warm-up), latency at {:.0} % of the NDR (of the median max rate without a search); sender {:?}, receiver {:?}, generator CPU {}; took {:.0} s",
            utc_stamp("%Y-%m-%d %H:%M UTC"),
            p.reps,
            p.duration.as_secs_f64(),
            p.warmup.as_secs_f64(),
            p.latency_at * 100.0,
            p.sender,
            p.receiver,
            p.gen_cpu.map_or("any".into(), |c| c.to_string()),
            elapsed.as_secs_f64()
        );
        let _ = writeln!(s, "machine: {}", machine_notes());
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        let header = "| system | frame | Mpps | Gbit/s | loss % | p50 µs | p99 µs | CPU s/GB | worker on CPU | box shared | ratio |\n|---|---|---|---|---|---|---|---|---|---|---|";
        let row = |s: &mut String, c: &Case, r: Option<f64>| {
            let f = &c.figure;
            let _ = writeln!(
                s,
                "| {} | {} B | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.system,
                c.size,
                show(f.pps().map(|x| x.scaled(1e-6)), 3),
                show(f.gbps(), 2),
                show(f.loss(), 2),
                show(f.p50(), 0),
                show(f.p99(), 0),
                show(f.cpu_per_gb(), 1),
                if c.worker_on_cpu.is_empty() {
                    "—".to_owned()
                } else {
                    c.worker_on_cpu
                        .iter()
                        .map(|p| format!("{p:.0} %"))
                        .collect::<Vec<_>>()
                        .join(" / ")
                },
                f.foreign().map_or("—".into(), |x| {
                    let retried = if f.retried > 0 {
                        format!(", {} retried", f.retried)
                    } else {
                        String::new()
                    };
                    format!("{:.0} %{retried}", x.max)
                }),
                r.map_or("—".into(), |r| format!("{r:.2}×")),
            );
        };
        if self.cases.iter().any(|c| c.section == "forward") {
            let _ = writeln!(
                s,
                "\n### Forwarding (ratio: Strait / kernel, median pps)\n\n{header}"
            );
            for c in self.cases.iter().filter(|c| c.section == "forward") {
                let r = if c.system.starts_with("Strait") {
                    self.find("forward", "kernel", c.size)
                        .and_then(|k| ratio(c.figure.pps(), k.figure.pps()))
                } else {
                    None
                };
                row(&mut s, c, r);
            }
        }
        if self.cases.iter().any(|c| c.section == "esp") {
            let _ = writeln!(
                s,
                "\n### ESP, AES-128-GCM, UDP-encapsulated (ratio: / Strait plain forwarding at the same frame size, this run)\n\n{header}"
            );
            for c in self.cases.iter().filter(|c| c.section == "esp") {
                let r = self
                    .find("forward", "Strait", c.size)
                    .and_then(|k| ratio(c.figure.pps(), k.figure.pps()));
                row(&mut s, c, r);
            }
        }
        if self
            .cases
            .iter()
            .any(|c| c.section == "forward" || c.section == "esp")
        {
            let _ = writeln!(
                s,
                "\nMpps/Gbit/s/loss: at the maximum rate (Gbit/s with Ethernet framing, inner frames for ESP); \
                 p50/p99: one-way latency at {:.0} % of the median maximum; CPU s/GB: busy CPU seconds of the whole \
                 machine (generator included) per GB received; worker on CPU: share of its runnable time each \
                 Strait worker ran; box shared: largest share of samples in a trial that found another program \
                 runnable (trials above {:.0} % are repeated, at most twice).",
                self.plan.latency_at * 100.0,
                self.plan.max_foreign_pct
            );
        }
        s.push_str(&self.nat.render());
        self.render_peers(&mut s);
        let iperf: Vec<&Case> = self
            .cases
            .iter()
            .filter(|c| {
                c.section.ends_with("-tcp") && !(c.tcp_gbps.is_empty() && c.udp_gbps.is_empty())
            })
            .collect();
        if !iperf.is_empty() {
            let _ = writeln!(
                s,
                "\n### iperf3 through each path, {} s runs\n\n\
                 TCP: one stream. UDP: unlimited send rate, 978-byte payloads (1024-byte frames); \
                 Gbit/s of payload received and the loss iperf3 reports.\n\n\
                 | path | TCP Gbit/s | TCP retransmits (median) | UDP Gbit/s received | UDP loss % |\n|---|---|---|---|---|",
                self.tcp_secs
            );
            for c in iperf {
                let mut r = c.tcp_retransmits.clone();
                r.sort_unstable();
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} |",
                    c.system,
                    show(c.tcp(), 2),
                    r.get(r.len() / 2).map_or("—".into(), u64::to_string),
                    show(c.udp(), 2),
                    show(Spread::of(&c.udp_loss_pct), 1),
                );
            }
        }
        self.render_summary(&mut s);
        s
    }
}

fn ns<'a>(nets: &'a BTreeMap<String, Netns>, short: &str) -> Result<&'a Netns> {
    nets.get(short)
        .with_context(|| format!("topology has no namespace {short}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The generator path of the site-to-site bed: lana → lanb, first hop the
/// branch gateway's LAN port.
fn site_path(lana: &Netns, lanb: &Netns, branch: &Netns) -> Result<Path> {
    Path::between(lana, lanb, branch, "lan", ip("10.1.0.2"), ip("10.2.0.2"))
}

/// Pings lanb from lana until the tunnel carries it (the first packets make
/// the gateways resolve their neighbours); bounded to 20 tries.
fn wait_through_tunnel(lana: &Netns, label: &str) -> Result<()> {
    let ready = (0..20).any(|_| {
        lana.output(&["ping", "-c", "1", "-W", "1", "10.2.0.2"])
            .is_ok_and(|o| o.status.success())
    });
    if !ready {
        bail!("{label}: lana cannot reach lanb through the tunnel");
    }
    Ok(())
}

/// Runs one iperf3 client against a one-shot server in `server` and
/// returns the client's JSON report.
fn iperf(
    client: &Netns,
    server: &Netns,
    server_ip: &str,
    secs: u64,
    extra: &[&str],
) -> Result<serde_json::Value> {
    let mut srv = server
        .command(&["iperf3", "-s", "-1", "-B", server_ip, "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(300));
    let limit = (secs + 10).to_string();
    let secs = secs.to_string();
    let mut argv = vec![
        "timeout", &limit, "iperf3", "-c", server_ip, "-p", "5201", "-t", &secs, "-J",
    ];
    argv.extend_from_slice(extra);
    let out = client.command(&argv).output();
    let _ = srv.kill();
    let _ = srv.wait();
    let out = out.context("running iperf3 -c")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 output: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    Ok(v)
}

/// One iperf3 TCP run; Gbit/s received and retransmits.
fn iperf_tcp(client: &Netns, server: &Netns, server_ip: &str, secs: u64) -> Result<(f64, u64)> {
    let v = iperf(client, server, server_ip, secs, &[])?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no sum_received")?;
    let retr = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    Ok((bps / 1e9, retr))
}

/// UDP payload that makes 1024-byte frames (FCS included): 1024 − 4 − 14
/// − 20 − 8.
const IPERF_UDP_PAYLOAD: &str = "978";

/// One iperf3 UDP run at an unlimited send rate; payload Gbit/s received
/// and the loss in percent, as the receiving end counted them.
fn iperf_udp(client: &Netns, server: &Netns, server_ip: &str, secs: u64) -> Result<(f64, f64)> {
    let v = iperf(
        client,
        server,
        server_ip,
        secs,
        &["-u", "-b", "0", "-l", IPERF_UDP_PAYLOAD],
    )?;
    let rx = &v["end"]["sum_received"];
    let bps = rx["bits_per_second"]
        .as_f64()
        .context("iperf3: no sum_received")?;
    let loss = rx["lost_percent"].as_f64().unwrap_or(f64::NAN);
    Ok((bps / 1e9, loss))
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn utc_stamp(format: &str) -> String {
    Command::new("date")
        .args(["-u", &format!("+{format}")])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine_notes() -> String {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} vCPU {model}, Linux {}, load average {:.2} now",
        kernel.trim(),
        load_average()
    )
}
