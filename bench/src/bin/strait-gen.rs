//! `strait-gen`: traffic generator for verifying Strait (and any other
//! forwarding device) — throughput, loss, reordering, duplicates, one-way
//! latency, NDR/PDR search. See `docs/GENERATOR.md`.

#![deny(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use strait_bench::gen::{
    iface_mac, in_netns, parse_mac, resolve_neighbour, run_trial, search_rates, AfPacketRx,
    AfPacketTx, FlowOrder, FlowSpec, LiveProgress, PortRange, Protocol, Rate, Report, RxPort,
    SearchConfig, SearchResult, SizeMix, TrafficSpec, TxPort, UdpTx, XdpRx, XdpTx, SCHEMA_VERSION,
};
use strait_wire::EthernetAddress;
use strait_xdp::XdpMode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SenderKind {
    /// Raw frames on an AF_PACKET socket, qdisc bypassed, `sendmmsg`.
    AfPacket,
    /// An ordinary UDP socket (`sendmmsg`); UDP only, one source port.
    Udp,
    /// AF_XDP (copy or zero-copy): the fastest.
    AfXdp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ReceiverKind {
    /// AF_PACKET socket, `recvmmsg`.
    AfPacket,
    /// AF_XDP socket (takes the interface's traffic away from the kernel; ARP still passes).
    AfXdp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum XdpModeArg {
    Native,
    Generic,
}

/// Traffic generator: sends probe-carrying frames on one interface, counts
/// them on another, and reports loss, reordering, duplicates, rates and
/// one-way latency.
#[derive(Debug, Parser)]
#[command(name = "strait-gen", version, about)]
struct Cli {
    /// Interface to send on.
    #[arg(long)]
    iface: String,
    /// Network namespace (as in `ip netns`) of the sending interface.
    #[arg(long)]
    netns: Option<String>,
    /// Interface to receive on (default: the sending interface).
    #[arg(long)]
    rx_iface: Option<String>,
    /// Network namespace of the receiving interface (default: --netns).
    #[arg(long)]
    rx_netns: Option<String>,
    /// First source address; --src-ip-count consecutive addresses are used.
    #[arg(long)]
    src_ip: IpAddr,
    /// Destination address.
    #[arg(long)]
    dst_ip: IpAddr,
    /// Destination MAC, or `auto`: ping the next hop and read `ip neigh`.
    #[arg(long, default_value = "auto")]
    dst_mac: String,
    /// Next hop to resolve for `--dst-mac auto` (default: the destination).
    #[arg(long)]
    gateway: Option<IpAddr>,
    /// Source MAC (default: the sending interface's).
    #[arg(long)]
    src_mac: Option<String>,
    /// udp, tcp-syn or icmp.
    #[arg(long, default_value = "udp")]
    proto: Protocol,
    /// Frame size(s) in bytes incl. FCS: `64`, `imix` (7:4:1 of 64/594/1518) or `64:7,594:4,1518:1`.
    #[arg(long, default_value = "64")]
    size: SizeMix,
    /// Number of consecutive source addresses.
    #[arg(long, default_value_t = 1)]
    src_ip_count: u32,
    /// Source port or range (ICMP: echo identifier).
    #[arg(long, default_value = "10000")]
    src_port: PortRange,
    /// Destination port or range.
    #[arg(long, default_value = "9")]
    dst_port: PortRange,
    /// Flow order: seq or random.
    #[arg(long, default_value = "seq")]
    flow_order: FlowOrder,
    /// max, or pps (`20000`, `20kpps`, `1.5Mpps`) or wire bit rate (`500Mbps`, `2Gbps`).
    #[arg(long, default_value = "max")]
    rate: Rate,
    /// Measured seconds (the run always stops by then).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many measured packets.
    #[arg(long)]
    count: Option<u64>,
    /// Warm-up seconds before measuring (sent, flagged, excluded).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Sender.
    #[arg(long, value_enum, default_value = "af-packet")]
    sender: SenderKind,
    /// Receiver.
    #[arg(long, value_enum, default_value = "af-packet")]
    receiver: ReceiverKind,
    /// XDP attach mode for AF_XDP ports.
    #[arg(long, value_enum, default_value = "native")]
    xdp_mode: XdpModeArg,
    /// Stream id carried in the probe (0-255).
    #[arg(long, default_value_t = 0)]
    stream: u8,
    /// IP TTL / hop limit.
    #[arg(long, default_value_t = 64)]
    ttl: u8,
    /// Frames per system call.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Measure latency at this fraction (0-1] of the max rate: one max-rate
    /// trial of --trial-duration first, then the run at the fraction.
    #[arg(long)]
    latency_at: Option<f64>,
    /// NDR/PDR binary search instead of a single run.
    #[arg(long)]
    search: bool,
    /// Search: lowest rate (pps).
    #[arg(long, default_value_t = 1000.0)]
    search_min: f64,
    /// Search: highest rate (pps); default: measured with a max-rate trial.
    #[arg(long)]
    search_max: Option<f64>,
    /// Search / latency reference: seconds per trial.
    #[arg(long, default_value_t = 2.0)]
    trial_duration: f64,
    /// Search: most trials.
    #[arg(long, default_value_t = 14)]
    max_trials: u32,
    /// Search: PDR loss in percent.
    #[arg(long, default_value_t = 0.1)]
    pdr_loss: f64,
    /// Search: stop when an interval is this narrow, in percent of its upper end.
    #[arg(long, default_value_t = 1.0)]
    precision: f64,
    /// Print the report as JSON on stdout (schema in docs/GENERATOR.md).
    #[arg(long)]
    json: bool,
}

/// Output of `--search --json`.
#[derive(Serialize)]
struct SearchOutput {
    schema_version: u32,
    mode: &'static str,
    max_pps: f64,
    search: SearchResult,
}

fn seconds(what: &str, s: f64) -> Result<Duration> {
    if !(s.is_finite() && (0.0..=86_400.0).contains(&s)) {
        bail!("{what} {s}: must be between 0 and 86400 seconds");
    }
    Ok(Duration::from_secs_f64(s))
}

/// Runs `f` in namespace `ns` if given, else here.
fn maybe_in<T: Send>(
    ns: Option<&str>,
    f: impl FnOnce() -> strait_bench::gen::Result<T> + Send,
) -> strait_bench::gen::Result<T> {
    match ns {
        Some(ns) => in_netns(ns, f),
        None => f(),
    }
}

struct Setup {
    cli: Cli,
    spec: TrafficSpec,
}

impl Setup {
    fn ports(
        &self,
        spec: &TrafficSpec,
    ) -> strait_bench::gen::Result<(Box<dyn TxPort>, Box<dyn RxPort>)> {
        let cli = &self.cli;
        let mode = match cli.xdp_mode {
            XdpModeArg::Native => XdpMode::Native,
            XdpModeArg::Generic => XdpMode::Generic,
        };
        let max_frame = spec.sizes.entries().iter().map(|e| e.0).max().unwrap_or(64);
        let rx_iface = cli.rx_iface.as_deref().unwrap_or(&cli.iface);
        let rx_ns = cli.rx_netns.as_deref().or(cli.netns.as_deref());
        // The receiver first: it must be listening before the first frame.
        let rx: Box<dyn RxPort> = maybe_in(rx_ns, || {
            Ok(match cli.receiver {
                ReceiverKind::AfPacket => Box::new(AfPacketRx::open(rx_iface)?) as Box<dyn RxPort>,
                ReceiverKind::AfXdp => Box::new(XdpRx::open(rx_iface, mode)?),
            })
        })?;
        let tx: Box<dyn TxPort> = maybe_in(cli.netns.as_deref(), || {
            Ok(match cli.sender {
                SenderKind::AfPacket => {
                    Box::new(AfPacketTx::open(&cli.iface, spec.batch, max_frame > 2048)?)
                        as Box<dyn TxPort>
                }
                SenderKind::Udp => Box::new(UdpTx::open(spec)?),
                SenderKind::AfXdp => Box::new(XdpTx::open(&cli.iface, max_frame, mode)?),
            })
        })?;
        Ok((tx, rx))
    }

    fn trial(&self, spec: &TrafficSpec, live: bool) -> Result<Report> {
        let (tx, rx) = self.ports(spec)?;
        let mut progress = Progress::new(live && std::io::stderr().is_terminal());
        let report = run_trial(spec, tx, rx, &mut |p| progress.show(p))?;
        progress.clear();
        Ok(report)
    }
}

struct Progress {
    on: bool,
    last: Option<(f64, u64, u64)>,
}

impl Progress {
    fn new(on: bool) -> Self {
        Self { on, last: None }
    }

    fn show(&mut self, p: &LiveProgress) {
        if !self.on {
            return;
        }
        let (tx_pps, rx_pps) = match self.last {
            Some((t, s, r)) if p.elapsed_s > t => (
                (p.sent - s) as f64 / (p.elapsed_s - t),
                (p.received.saturating_sub(r)) as f64 / (p.elapsed_s - t),
            ),
            _ => (0.0, 0.0),
        };
        self.last = Some((p.elapsed_s, p.sent, p.received));
        let phase = if p.measuring { "run" } else { "warm-up" };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{phase:>7} {:>6.1}s  sent {:>11}  recv {:>11}  tx {:>9.0} pps  rx {:>9.0} pps ",
            p.elapsed_s, p.sent, p.received, tx_pps, rx_pps
        );
        let _ = err.flush();
    }

    fn clear(&mut self) {
        if self.on && self.last.is_some() {
            let _ = write!(std::io::stderr(), "\r{:100}\r", "");
        }
    }
}

fn build_spec(cli: &Cli) -> Result<TrafficSpec> {
    let src_mac = match &cli.src_mac {
        Some(m) => parse_mac(m).with_context(|| format!("--src-mac {m:?} is not a MAC address"))?,
        None => maybe_in(cli.netns.as_deref(), || iface_mac(&cli.iface))?,
    };
    let dst_mac = if cli.dst_mac.eq_ignore_ascii_case("auto") {
        let hop = cli.gateway.unwrap_or(cli.dst_ip);
        maybe_in(cli.netns.as_deref(), || resolve_neighbour(&cli.iface, hop))?
    } else {
        EthernetAddress(parse_mac(&cli.dst_mac).with_context(|| {
            format!("--dst-mac {:?} is not a MAC address or `auto`", cli.dst_mac)
        })?)
    };
    let mut spec = TrafficSpec::new(EthernetAddress(src_mac), dst_mac, cli.src_ip, cli.dst_ip);
    spec.protocol = cli.proto;
    spec.sizes = cli.size.clone();
    spec.flows = FlowSpec {
        src_addrs: cli.src_ip_count,
        src_ports: cli.src_port,
        dst_ports: cli.dst_port,
        order: cli.flow_order,
    };
    spec.rate = cli.rate;
    spec.duration = seconds("--duration", cli.duration)?;
    spec.count = cli.count;
    spec.warmup = seconds("--warmup", cli.warmup)?;
    spec.stream = cli.stream;
    spec.ttl = cli.ttl;
    spec.batch = cli.batch;
    spec.validate()?;
    Ok(spec)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let spec = build_spec(&cli)?;
    let json = cli.json;
    let setup = Setup { cli, spec };
    let cli = &setup.cli;

    // A max-rate reference trial, for --latency-at and a search without --search-max.
    let needs_max = cli.latency_at.is_some() || (cli.search && cli.search_max.is_none());
    let max_pps = if needs_max {
        let mut s = setup.spec.clone();
        s.rate = Rate::Max;
        s.duration = seconds("--trial-duration", cli.trial_duration)?;
        s.count = None;
        let r = setup.trial(&s, !json)?;
        if !json {
            eprintln!("max-rate reference trial:\n{r}");
        }
        if r.rx.pps <= 0.0 {
            bail!(
                "the max-rate reference trial received nothing: check addresses, MACs and the path"
            );
        }
        Some(r.rx.pps)
    } else {
        None
    };

    if cli.search {
        let cfg = SearchConfig {
            min_pps: cli.search_min,
            max_pps: cli.search_max.or(max_pps).unwrap_or(cli.search_min),
            pdr_loss: cli.pdr_loss / 100.0,
            precision: cli.precision / 100.0,
            max_trials: cli.max_trials,
        };
        if !(cfg.min_pps > 0.0 && cfg.max_pps >= cfg.min_pps) {
            bail!("search range {}..{} pps is empty", cfg.min_pps, cfg.max_pps);
        }
        let mut s = setup.spec.clone();
        s.duration = seconds("--trial-duration", cli.trial_duration)?;
        s.count = None;
        let result = search_rates(
            &s,
            cfg,
            || setup.ports(&s),
            |r| {
                if !json {
                    eprintln!(
                        "trial {:>10.0} pps offered: {:>10.0} pps received, loss {:.4} % \
                         ({} dropped by the receiving socket, not counted)",
                        r.offered_pps.unwrap_or(0.0),
                        r.rx.pps,
                        r.loss_percent,
                        r.lost_at_sink
                    );
                }
            },
        )?;
        if json {
            let out = SearchOutput {
                schema_version: SCHEMA_VERSION,
                mode: "search",
                max_pps: cfg.max_pps,
                search: result,
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            let fmt = |r: Option<f64>| r.map_or("none".to_owned(), |r| format!("{r:.0} pps"));
            println!(
                "NDR {}  PDR({} %) {}  after {} trials{}",
                fmt(result.ndr_pps),
                cli.pdr_loss,
                fmt(result.pdr_pps),
                result.trials.len(),
                if result.converged {
                    ""
                } else {
                    " (trial limit reached before the precision)"
                }
            );
        }
        return Ok(());
    }

    let mut spec = setup.spec.clone();
    if let Some(fraction) = cli.latency_at {
        if !(fraction > 0.0 && fraction <= 1.0) {
            bail!("--latency-at {fraction}: must be in (0, 1]");
        }
        spec.rate = Rate::Pps(max_pps.unwrap_or(0.0) * fraction);
    }
    let mut report = setup.trial(&spec, !json)?;
    report.reference_max_pps = max_pps;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(())
}
