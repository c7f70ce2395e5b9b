//! The results of a run as Markdown tables, ready for
//! `docs/BENCHMARKS.md` (one per part, then iperf3 and every system in one
//! table with its ratio to the matching Strait system), and as the JSON
//! and Markdown files the run leaves in its results directory.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::{Bench, Case, SITE, SITE_SNAT};
use crate::harness::host;
use crate::harness::stats::{ratio, show, Spread};
use crate::harness::trial::Figure;

/// The encrypted throughput the commercial vCPE we replace claims on 2
/// vCPUs at 1024 B (its datasheet), Gbit/s.
const COMMERCIAL_GBPS: f64 = 0.35;

/// How the testpmd rows' system names begin.
const TESTPMD_PREFIX: &str = "DPDK testpmd";

impl Bench {
    /// Ends the run: draws the charts into `plots` (default `<out>/img`),
    /// prints the tables and writes them with the JSON of every figure to
    /// `results.md` and `results.json` in the results directory. `elapsed`
    /// is how long the parts took.
    pub fn finish(&mut self, plots: Option<PathBuf>, elapsed: Duration) -> Result<()> {
        let plots = plots.unwrap_or_else(|| self.out.join("img"));
        self.plots(&plots);
        let text = self.render(elapsed);
        println!("{text}");
        std::fs::write(self.out.join("results.md"), &text)?;
        let json = serde_json::json!({
            "date": host::utc_stamp("%Y-%m-%d %H:%M UTC"),
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "machine": host::machine_notes(),
            "placement": self.settings.site_placement.describe(self.settings.dut_cpu),
            "notes": self.notes,
            "cases": self.cases,
            "nat": self.nat,
            "soak": self.soak,
            "registration": self.registration,
            "routes": self.routes,
            "dns": self.dns,
        });
        std::fs::write(
            self.out.join("results.json"),
            serde_json::to_string_pretty(&json)?,
        )?;
        eprintln!("results in {}", self.out.display());
        Ok(())
    }

    /// The results as Markdown tables, ready for docs/BENCHMARKS.md.
    fn render(&self, elapsed: Duration) -> String {
        let mut s = String::new();
        let p = &self.plan;
        let _ = writeln!(
            s,
            "strait-bench, {} — {} rep(s) × {:.1} s per trial (+{:.1} s warm-up), latency at {:.0} % of the NDR (of the median max rate without a search); sender {:?}, receiver {:?}, generator CPU {}; took {:.0} s",
            host::utc_stamp("%Y-%m-%d %H:%M UTC"),
            p.reps,
            p.duration.as_secs_f64(),
            p.warmup.as_secs_f64(),
            p.latency_at * 100.0,
            p.sender,
            p.receiver,
            p.gen_cpu.map_or("any".into(), |c| c.to_string()),
            elapsed.as_secs_f64()
        );
        let _ = writeln!(s, "machine: {}", host::machine_notes());
        if self
            .cases
            .iter()
            .any(|c| c.section.starts_with("esp") || c.section.starts_with("peers"))
        {
            let _ = writeln!(
                s,
                "placement: {}",
                self.settings.site_placement.describe(self.settings.dut_cpu)
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        let columns = "| system | frame | Mpps | Gbit/s | loss % | p50 µs | p99 µs | CPU s/GB | worker on CPU | box shared |";
        let header = |ratios: &[&str]| {
            let mut h = columns.to_owned();
            for r in ratios {
                let _ = write!(h, " {r} |");
            }
            h.push_str("\n|");
            h.push_str(&"---|".repeat(10 + ratios.len()));
            h
        };
        let row = |s: &mut String, c: &Case, ratios: &[Option<f64>]| {
            let f = &c.figure;
            let _ = write!(
                s,
                "| {} | {} B | {} | {} | {} | {} | {} | {} | {} | {} |",
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
            );
            for r in ratios {
                let _ = write!(s, " {} |", r.map_or("—".into(), |r| format!("{r:.2}×")));
            }
            s.push('\n');
        };
        if self.cases.iter().any(|c| c.section == "forward") {
            let _ = writeln!(
                s,
                "\n### Forwarding (ratios: Strait / kernel and Strait / DPDK testpmd mac forward, median pps)\n\n{}",
                header(&["Strait / kernel", "Strait / testpmd"])
            );
            for c in self.cases.iter().filter(|c| c.section == "forward") {
                let over = |prefix: &str| {
                    if c.system.starts_with("Strait") {
                        self.find("forward", prefix, c.size)
                            .and_then(|k| ratio(c.figure.pps(), k.figure.pps()))
                    } else {
                        None
                    }
                };
                row(&mut s, c, &[over("kernel"), over(TESTPMD_PREFIX)]);
            }
        }
        if self.cases.iter().any(|c| c.section == "esp") {
            let _ = writeln!(
                s,
                "\n### ESP, AES-128-GCM, UDP-encapsulated (ratio: / Strait plain forwarding at the same frame size, this run)\n\n{}",
                header(&["ratio"])
            );
            for c in self.cases.iter().filter(|c| c.section == "esp") {
                let r = self
                    .find("forward", "Strait", c.size)
                    .and_then(|k| ratio(c.figure.pps(), k.figure.pps()));
                row(&mut s, c, &[r]);
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
                 Strait worker (testpmd: its forwarding lcore) ran; box shared: largest share of samples in a trial that found another program \
                 runnable (trials above {:.0} % are repeated, at most twice).",
                self.plan.latency_at * 100.0,
                self.plan.max_foreign_pct
            );
        }
        s.push_str(&self.nat.render());
        if let Some(soak) = &self.soak {
            s.push_str(&soak.render());
        }
        if let Some(r) = &self.registration {
            s.push_str(&r.render());
        }
        if let Some(r) = &self.routes {
            s.push_str(&r.render());
        }
        if let Some(r) = &self.dns {
            s.push_str(&r.render());
        }
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
        let idle: Vec<&Case> = self
            .cases
            .iter()
            .filter(|c| c.section.ends_with("-idle"))
            .collect();
        if !idle.is_empty() {
            s.push_str(
                "\n### Idle cost: the gateway pair with its tunnel up and no traffic\n\n\
                 CPU of both gateways' processes together (every thread, schedstat), \
                 percent of one core.\n\n| path | idle CPU % |\n|---|---|\n",
            );
            for c in idle {
                let v = c.idle_cpu_pct.map_or("—".into(), |p| format!("{p:.2}"));
                let _ = writeln!(s, "| {} | {v} |", c.system);
            }
        }
        self.render_summary(&mut s);
        s
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::FlowSpec;
    use crate::harness::daemon::Binaries;
    use crate::harness::parts::{Placement, Poll, Settings};
    use crate::harness::trial::{Plan, ReceiverKind, SenderKind, TrialFigures};

    fn bench() -> Bench {
        let settings = Settings {
            quick: true,
            duration_chosen: false,
            sizes: vec![64, 1024],
            esp_sizes: vec![1024],
            nat_sizes: vec![64],
            dut_cpu: 1,
            kernel_rps: true,
            testpmd: true,
            site_poll: Poll::Adaptive,
            site_placement: Placement::Split,
            topologies: PathBuf::from("scripts/topologies"),
            peers_cache: PathBuf::from("/nonexistent"),
            idle_load: 0.0,
            soak: Default::default(),
            registration: Default::default(),
            routes: Default::default(),
            dns: Default::default(),
        };
        let plan = Plan {
            reps: 1,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            latency_at: 0.5,
            sender: SenderKind::AfXdp,
            receiver: ReceiverKind::AfXdp,
            gen_cpu: Some(0),
            max_foreign_pct: 10.0,
            flows: FlowSpec::default(),
            search: None,
            latency_of_ndr: true,
        };
        let bins = Binaries {
            straitd: PathBuf::from("straitd"),
            straitctl: PathBuf::from("straitctl"),
        };
        Bench::new(settings, plan, bins, PathBuf::from("/nonexistent"), 0)
    }

    /// A figure of one max-rate trial at `mpps` and `gbps`.
    fn figure(mpps: f64, gbps: f64) -> Figure {
        let t = TrialFigures {
            offered_pps: None,
            tx_pps: mpps * 1e6,
            rx_pps: mpps * 1e6,
            rx_gbps: gbps,
            loss_pct: 0.0,
            p50_us: None,
            p99_us: None,
            cpu_s_per_gb: None,
            dut_cpu_s_per_gb: None,
            tunnel_failures: 0,
            foreign_pct: 0.0,
        };
        Figure {
            max: vec![t],
            ..Figure::default()
        }
    }

    /// The last cell of the first row for `system` after `heading`.
    fn last_cell<'a>(text: &'a str, heading: &str, system: &str) -> &'a str {
        cell(text, heading, system, 1)
    }

    /// The `n`th cell from the end (1: the last) of the first row for
    /// `system` after `heading`.
    fn cell<'a>(text: &'a str, heading: &str, system: &str, n: usize) -> &'a str {
        let section = &text[text.find(heading).expect("heading")..];
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| {system} |")))
            .expect("row");
        row.trim_end_matches(" |").rsplit(" | ").nth(n - 1).unwrap()
    }

    #[test]
    fn forwarding_ratio_is_strait_over_the_kernel_at_the_same_size() {
        let mut b = bench();
        b.push_fig(
            "forward",
            "kernel ip_forward",
            64,
            figure(1.0, 0.67),
            vec![],
        );
        b.push_fig(
            "forward",
            "Strait (1 worker, spin)",
            64,
            figure(2.5, 1.68),
            vec![],
        );
        b.push_fig(
            "forward",
            crate::harness::testpmd::LABEL,
            64,
            figure(2.0, 1.34),
            vec![],
        );
        let text = b.render(Duration::ZERO);
        let fwd = "### Forwarding";
        let strait = "Strait (1 worker, spin)";
        // Strait / kernel, then Strait / testpmd.
        assert_eq!(cell(&text, fwd, strait, 2), "2.50×");
        assert_eq!(cell(&text, fwd, strait, 1), "1.25×");
        assert_eq!(cell(&text, fwd, "kernel ip_forward", 2), "—");
        assert_eq!(cell(&text, fwd, "kernel ip_forward", 1), "—");
        assert_eq!(cell(&text, fwd, crate::harness::testpmd::LABEL, 1), "—");
        // The summary puts Strait's factor on the others' rows, in Gbit/s.
        let all = "### Every system";
        assert_eq!(last_cell(&text, all, "kernel ip_forward"), "2.51×");
        assert_eq!(
            last_cell(&text, all, crate::harness::testpmd::LABEL),
            "1.25×"
        );
        assert_eq!(last_cell(&text, all, strait), "—");
    }

    #[test]
    fn peers_compare_with_strait_site_to_site_without_snat() {
        let mut b = bench();
        let site = format!("{SITE} (adaptive)");
        let snat = format!("{SITE_SNAT} (adaptive)");
        b.push_fig("esp", &site, 1024, figure(0.2, 1.4), vec![]);
        b.push_fig("esp", &snat, 1024, figure(0.1, 0.7), vec![]);
        b.push_fig(
            "peers",
            "wireguard-go 0.0.1",
            1024,
            figure(0.05, 0.35),
            vec![],
        );
        let text = b.render(Duration::ZERO);
        let peers = "### Site to site";
        let table = &text[text.find(peers).expect("peers table")..];
        let first = table.lines().find(|l| l.starts_with("| ")).unwrap();
        assert!(first.contains("system"), "{first}");
        let rows: Vec<&str> = table
            .lines()
            .skip_while(|l| !l.starts_with("|---"))
            .skip(1)
            .take_while(|l| l.starts_with("| "))
            .collect();
        assert!(rows[0].starts_with(&format!("| {site} |")), "{rows:?}");
        assert!(!rows.iter().any(|r| r.starts_with(&format!("| {snat} |"))));
        // wireguard-go carries a quarter of Strait's Gbit/s.
        let wg = rows
            .iter()
            .find(|r| r.starts_with("| wireguard-go"))
            .unwrap();
        assert!(wg.contains("| 0.25× |"), "{wg}");
        // The summary's commercial claim: Strait site to site over 0.35.
        let all = "### Every system";
        let claim = "commercial vCPE, encrypted (datasheet, 2 vCPUs)";
        assert_eq!(last_cell(&text, all, claim), "4.00×");
        assert_eq!(last_cell(&text, all, "wireguard-go 0.0.1"), "4.00×");
    }

    #[test]
    fn nothing_measured_renders_only_the_header() {
        let text = bench().render(Duration::ZERO);
        assert!(text.starts_with("strait-bench, "));
        assert!(!text.contains("###"), "{text}");
    }
}
