//! `strait-bench`: the end-to-end benchmark. It parses the command line
//! and runs the parts named by `--only` one after the other
//! ([`strait_bench::harness::parts`]: plain forwarding, ESP, NAT, peers,
//! soak, hub registration, route exchange),
//! then writes the tables, JSON and charts of every figure.
//!
//! Every figure is the median and range of `--reps` trials. Run it through
//! `scripts/bench`, which installs what it needs and builds release.

#![deny(unsafe_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use strait_bench::gen::FlowSpec;
use strait_bench::harness::daemon::Binaries;
use strait_bench::harness::host::utc_stamp;
use strait_bench::harness::parts::{
    Bench, Placement, Poll, RegistrationPlan, RoutesAsk, RoutesPlan, Settings, SoakPlan,
    MAX_BRANCHES, MAX_PREFIXES,
};
use strait_bench::harness::trial::{Plan, ReceiverKind, SearchPlan, SenderKind};

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
    /// Site to site + hub SNAT for --soak-minutes under IMIX, with route
    /// changes, reloads and rekeys: memory, frame pool, loss over time.
    Soak,
    /// N branches (IKEv2 initiators) registering with one hub at once:
    /// handshakes/s, time until all are up, hub CPU per registration and
    /// per rekey (--registration-branches).
    Registration,
    /// N sites × K prefixes registering with a hub that announces each the
    /// others': time to converge, one more site's prefixes reaching all,
    /// hub memory per site, announcement cost (--routes-sites).
    Routes,
    /// The DNS forwarder against dnsmasq: cached and uncached queries/s
    /// (dnsperf; --dns-seconds).
    Dns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AskArg {
    /// The hub's advertise (172.16.0.0/24).
    Cloud,
    /// 0.0.0.0/0: the hub narrows it to all it offers.
    Any,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlacementArg {
    Split,
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PollArg {
    Spin,
    Adaptive,
}

/// Strait vs the kernel, and Strait as an ESP endpoint, on netns beds.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Smoke run: one repetition of 1 s per figure, no TCP.
    #[arg(long)]
    quick: bool,
    /// Parts to run (default: forward,esp; nat and peers add about 5
    /// minutes each, soak --soak-minutes; they run only when named).
    #[arg(long, value_enum, num_args = 1.., value_delimiter = ',')]
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
    #[arg(long, num_args = 1.., value_delimiter = ',', default_values_t = [64usize, 512, 1024, 1518])]
    sizes: Vec<usize>,
    /// Inner frame sizes for the ESP cases and the peers.
    #[arg(long, num_args = 1.., value_delimiter = ',', default_values_t = [64usize, 1024])]
    esp_sizes: Vec<usize>,
    /// Frame sizes for the NAT part.
    #[arg(long, num_args = 1.., value_delimiter = ',', default_values_t = [64usize, 1024])]
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
    /// Measure DPDK testpmd (AF_XDP PMD, MAC forwarding) in the forwarding
    /// part, the floor of what AF_XDP moves on the bed (needs Debian's
    /// dpdk-dev; `false` leaves it out).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    testpmd: bool,
    /// Poll mode of the branch and hub in the site-to-site case (both on a
    /// 2-vCPU host with the generator: spin leaves it no CPU of its own).
    #[arg(long, value_enum, default_value = "adaptive")]
    site_poll: PollArg,
    /// CPUs of the site-to-site bed's two gateways, the same for every
    /// system: `split` puts the branch with the generator's sender and the
    /// hub and the generator's receiver on --dut-cpu; `shared` puts both
    /// gateways on --dut-cpu, the generator alone.
    #[arg(long, value_enum, default_value = "split")]
    site_placement: PlacementArg,
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
    /// Soak: length of the run, minutes.
    #[arg(long, default_value_t = 30.0)]
    soak_minutes: f64,
    /// Soak: measured seconds per interval.
    #[arg(long, default_value_t = 10.0)]
    soak_interval: f64,
    /// Soak: offered rate as a fraction of the IMIX NDR found at the start.
    #[arg(long, default_value_t = 0.25)]
    soak_load: f64,
    /// Soak: a fixed offered rate in pps (skips the NDR search).
    #[arg(long)]
    soak_pps: Option<f64>,
    /// Soak: every Nth interval carries a change (route add/del, reload,
    /// rekey in turn); 0: no changes.
    #[arg(long, default_value_t = 3)]
    soak_change_every: usize,
    /// Soak: distinct UDP flows (each a NAT session at the hub).
    #[arg(long, default_value_t = 64)]
    soak_flows: u16,
    /// Registration: branches per run, one run each (e.g. 100,300,1000).
    #[arg(long, num_args = 1.., value_delimiter = ',', default_values_t = [1000usize])]
    registration_branches: Vec<usize>,
    /// Registration: registrations started per second; 0: all at once.
    #[arg(long, default_value_t = 0.0)]
    registration_pace: f64,
    /// Registration: rekeys started per second once all are up; 0: all at
    /// once.
    #[arg(long, default_value_t = 0.0)]
    registration_rekey_pace: f64,
    /// Registration: longest time the registrations (and the rekeys) may
    /// take, seconds.
    #[arg(long, default_value_t = 90.0)]
    registration_timeout: f64,
    /// Registration: rekey every CHILD SA once all are up.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    registration_rekey: bool,
    /// Route exchange: sites per run, one run each (e.g. 100,300,1000);
    /// one more registers once they have converged.
    #[arg(long, num_args = 1.., value_delimiter = ',', default_values_t = [1000usize])]
    routes_sites: Vec<usize>,
    /// Route exchange: prefixes each site claims (10.X.Y.0/24, distinct).
    #[arg(long, default_value_t = 4)]
    routes_prefixes: usize,
    /// Route exchange: what each site asks to reach through the hub (its
    /// TSr): the hub's advertise, or 0.0.0.0/0 (narrowed by the hub to
    /// everything it offers, in the IKE_AUTH answer).
    #[arg(long, value_enum, default_value_t = AskArg::Cloud)]
    routes_ask: AskArg,
    /// Route exchange: registrations started per second; 0: all at once.
    #[arg(long, default_value_t = 0.0)]
    routes_pace: f64,
    /// Route exchange: longest time until every site has converged,
    /// seconds.
    #[arg(long, default_value_t = 300.0)]
    routes_timeout: f64,
    /// Route exchange: longest time the newcomer's phase may take, seconds.
    #[arg(long, default_value_t = 120.0)]
    routes_newcomer_timeout: f64,
    /// Route exchange: each site's liveness check after this many seconds
    /// of silence (as straitd's dpd_seconds, four transmissions); 0: off.
    #[arg(long, default_value_t = 0)]
    routes_dpd: u64,
    /// DNS: seconds per dnsperf run.
    #[arg(long, default_value_t = 5)]
    dns_seconds: u64,
    /// DNS: queries dnsperf keeps outstanding.
    #[arg(long, default_value_t = 200)]
    dns_outstanding: u32,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(n) = args
        .registration_branches
        .iter()
        .find(|&&n| n == 0 || n > MAX_BRANCHES)
    {
        anyhow::bail!("--registration-branches: {n} is not between 1 and {MAX_BRANCHES}");
    }
    let k = args.routes_prefixes.max(1);
    if let Some(n) = args
        .routes_sites
        .iter()
        .find(|&&n| !(2..MAX_BRANCHES).contains(&n) || (n + 1) * k > MAX_PREFIXES)
    {
        anyhow::bail!(
            "--routes-sites {n} with --routes-prefixes {k}: 2 to {} sites, (sites + 1) × prefixes at most {MAX_PREFIXES}",
            MAX_BRANCHES - 1
        );
    }
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
    let settings = Settings {
        quick,
        duration_chosen: args.duration.is_some(),
        sizes: args.sizes,
        esp_sizes: args.esp_sizes,
        nat_sizes: args.nat_sizes,
        dut_cpu: args.dut_cpu,
        kernel_rps: args.kernel_rps,
        testpmd: args.testpmd,
        site_poll: match args.site_poll {
            PollArg::Spin => Poll::Spin,
            PollArg::Adaptive => Poll::Adaptive,
        },
        site_placement: match args.site_placement {
            PlacementArg::Split => Placement::Split,
            PlacementArg::Shared => Placement::Shared,
        },
        topologies: args.topologies,
        peers_cache: args.peers_cache,
        idle_load: args.idle_load,
        soak: SoakPlan {
            minutes: args.soak_minutes,
            interval_s: args.soak_interval.max(1.0),
            load: args.soak_load,
            pps: args.soak_pps,
            change_every: args.soak_change_every,
            flows: args.soak_flows.max(1),
        },
        registration: RegistrationPlan {
            branches: args.registration_branches,
            pace: (args.registration_pace > 0.0).then_some(args.registration_pace),
            rekey_pace: (args.registration_rekey_pace > 0.0)
                .then_some(args.registration_rekey_pace),
            timeout_s: args.registration_timeout.max(1.0),
            rekey: args.registration_rekey,
        },
        routes: RoutesPlan {
            sites: args.routes_sites,
            prefixes: k,
            ask: match args.routes_ask {
                AskArg::Cloud => RoutesAsk::Cloud,
                AskArg::Any => RoutesAsk::Any,
            },
            pace: (args.routes_pace > 0.0).then_some(args.routes_pace),
            timeout_s: args.routes_timeout.max(1.0),
            newcomer_timeout_s: args.routes_newcomer_timeout.max(1.0),
            dpd_s: (args.routes_dpd > 0).then_some(args.routes_dpd),
        },
        dns: strait_bench::harness::parts::DnsPlan {
            seconds: args.dns_seconds.max(1),
            outstanding: args.dns_outstanding.max(1),
        },
    };
    let mut bench = Bench::new(settings, plan, bins, out, tcp_secs);
    bench.wait_idle();
    let started = Instant::now();
    let parts = if args.only.is_empty() {
        vec![Part::Forward, Part::Esp]
    } else {
        args.only
    };
    let mut failure = None;
    for part in parts {
        let r = match part {
            Part::Forward => bench.forwarding(),
            Part::Esp => bench.esp(),
            Part::Nat => bench.nat(),
            Part::Peers => bench.peers(),
            Part::Soak => bench.soak(),
            Part::Registration => bench.registration(),
            Part::Routes => bench.routes(),
            Part::Dns => bench.dns(),
        };
        if let Err(e) = r {
            eprintln!("strait-bench: {part:?} failed: {e:#}");
            failure.get_or_insert(e);
        }
    }
    bench.finish(args.plots, started.elapsed())?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let mut argv = vec!["strait-bench"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn size_lists_take_spaces_commas_and_repeated_flags() {
        for args in [
            &["--sizes", "64", "1024"][..],
            &["--sizes", "64,1024"],
            &["--sizes", "64", "--sizes", "1024"],
        ] {
            assert_eq!(parse(args).sizes, [64, 1024], "{args:?}");
        }
        // A list ends at the next flag, which keeps its own values.
        let a = parse(&[
            "--sizes",
            "64",
            "1518",
            "--esp-sizes",
            "1024",
            "--nat-sizes",
            "64",
            "512",
            "--quick",
        ]);
        assert_eq!(a.sizes, [64, 1518]);
        assert_eq!(a.esp_sizes, [1024]);
        assert_eq!(a.nat_sizes, [64, 512]);
        assert!(a.quick);
        let a = parse(&[
            "--only",
            "forward",
            "esp",
            "--registration-branches",
            "10",
            "100",
        ]);
        assert_eq!(a.only.len(), 2);
        assert_eq!(a.registration_branches, [10, 100]);
        // Defaults stay when the flag is absent; a value that is not a size fails.
        assert_eq!(parse(&[]).sizes, [64, 512, 1024, 1518]);
        assert!(Args::try_parse_from(["strait-bench", "--sizes", "64", "big"]).is_err());
        assert!(Args::try_parse_from(["strait-bench", "--sizes"]).is_err());
    }
}
