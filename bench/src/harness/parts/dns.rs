//! The DNS forwarder against dnsmasq on one bed (`--only dns`): dnsperf
//! on the client asks the forwarder as fast as its window of outstanding
//! queries allows, for names it has cached (a small set, after a warm-up)
//! and for names it has not (each asked once, so every query goes to the
//! upstream). The forwarder (straitd with one worker, or dnsmasq) runs on
//! CPU 1; dnsperf and the upstream dnsmasq on CPU 0.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use strait_testbed::Netns;

use super::{ns, Bench};
use crate::harness::daemon::Straitd;
use crate::harness::stats::{ratio, show, Spread};

/// How the DNS part runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DnsPlan {
    /// Seconds per dnsperf run.
    pub seconds: u64,
    /// Queries dnsperf keeps outstanding.
    pub outstanding: u32,
}

impl Default for DnsPlan {
    fn default() -> Self {
        DnsPlan {
            seconds: 5,
            outstanding: 200,
        }
    }
}

/// One dnsperf run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PerfRun {
    /// Answers per second.
    pub qps: f64,
    /// Queries lost, percent.
    pub lost_pct: f64,
    /// Mean latency, ms.
    pub latency_ms: f64,
}

/// One forwarder's figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DnsRow {
    /// The system.
    pub system: String,
    /// Cached names.
    pub cached: Vec<PerfRun>,
    /// Names never asked before.
    pub uncached: Vec<PerfRun>,
}

impl DnsRow {
    fn qps(runs: &[PerfRun]) -> Option<Spread> {
        Spread::of(&runs.iter().map(|r| r.qps).collect::<Vec<_>>())
    }
    fn lost(runs: &[PerfRun]) -> Option<Spread> {
        Spread::of(&runs.iter().map(|r| r.lost_pct).collect::<Vec<_>>())
    }
    fn latency(runs: &[PerfRun]) -> Option<Spread> {
        Spread::of(&runs.iter().map(|r| r.latency_ms).collect::<Vec<_>>())
    }
}

/// The part's results.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DnsResults {
    /// How it ran.
    pub plan: DnsPlan,
    /// Strait, then dnsmasq.
    pub rows: Vec<DnsRow>,
}

const STRAIT: &str = "Strait [dns] (straitd, 1 worker)";
const DNSMASQ: &str = "dnsmasq (kernel sockets)";
const CACHED_NAMES: usize = 100;

impl DnsResults {
    /// The Markdown table.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.rows.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "\n### DNS forwarder: queries/s through the forwarder (dnsperf, {} outstanding, {} s runs; forwarder on CPU 1, dnsperf and the upstream on CPU 0)\n\n\
             | system | cached q/s | lost % | mean ms | uncached q/s | lost % | mean ms | cached × dnsmasq | uncached × dnsmasq |\n\
             |---|---|---|---|---|---|---|---|---|",
            self.plan.outstanding, self.plan.seconds
        );
        let base = self.rows.iter().find(|r| r.system == DNSMASQ);
        for r in &self.rows {
            let x = |mine: Option<Spread>, theirs: Option<Spread>| {
                ratio(mine, theirs).map_or("—".into(), |v| format!("{v:.2}×"))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.system,
                show(DnsRow::qps(&r.cached), 0),
                show(DnsRow::lost(&r.cached), 2),
                show(DnsRow::latency(&r.cached), 3),
                show(DnsRow::qps(&r.uncached), 0),
                show(DnsRow::lost(&r.uncached), 2),
                show(DnsRow::latency(&r.uncached), 3),
                x(
                    DnsRow::qps(&r.cached),
                    base.and_then(|b| DnsRow::qps(&b.cached))
                ),
                x(
                    DnsRow::qps(&r.uncached),
                    base.and_then(|b| DnsRow::qps(&b.uncached))
                ),
            );
        }
        s
    }
}

/// Reads dnsperf's statistics.
fn parse_dnsperf(out: &str) -> Result<PerfRun> {
    let field = |name: &str| -> Option<f64> {
        let line = out.lines().find(|l| l.trim_start().starts_with(name))?;
        let v = line.split(':').nth(1)?.split_whitespace().next()?;
        v.parse().ok()
    };
    let sent = field("Queries sent").context("dnsperf printed no statistics")?;
    let lost = field("Queries lost").unwrap_or(0.0);
    Ok(PerfRun {
        qps: field("Queries per second").context("no queries per second")?,
        lost_pct: if sent > 0.0 { 100.0 * lost / sent } else { 0.0 },
        latency_ms: field("Average Latency (s)").unwrap_or(0.0) * 1e3,
    })
}

fn dnsperf(client: &Netns, file: &Path, seconds: u64, outstanding: u32) -> Result<PerfRun> {
    let secs = seconds.to_string();
    let q = outstanding.to_string();
    let out = client.output(&[
        "taskset",
        "-c",
        "0",
        "dnsperf",
        "-s",
        "10.53.0.1",
        "-d",
        &file.to_string_lossy(),
        "-l",
        &secs,
        "-q",
        &q,
        "-t",
        "2",
        "-c",
        "1",
        "-T",
        "1",
    ])?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_dnsperf(&text)
}

/// A dnsmasq, killed on drop.
struct Dnsmasq(std::process::Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        crate::sys::terminate(&mut self.0, Duration::from_secs(2));
    }
}

fn dnsmasq(ns: &Netns, cpu: &str, args: &[&str]) -> Result<Dnsmasq> {
    let mut argv = vec![
        "taskset",
        "-c",
        cpu,
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-hosts",
        "--bind-interfaces",
        "--user=root",
        "--pid-file",
    ];
    argv.extend(args);
    let child = ns
        .command(&argv)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting dnsmasq")?;
    // It binds within milliseconds; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    Ok(Dnsmasq(child))
}

impl Bench {
    /// `--only dns`.
    pub fn dns(&mut self) -> Result<()> {
        for prog in ["dnsperf", "dnsmasq", "taskset"] {
            if !strait_testbed::have_program(prog) {
                bail!("the DNS part needs {prog} (scripts/install-deps installs dnsperf and dnsmasq-base)");
            }
        }
        let plan = self.settings.dns.clone();
        eprintln!("\n== DNS forwarder: Strait vs dnsmasq (dnsperf)");
        let (_tb, nets) = self.bed("bench-dns.topo", "bench-dns")?;
        let (client, fwd, up) = (ns(&nets, "client")?, ns(&nets, "fwd")?, ns(&nets, "up")?);
        let _upstream = dnsmasq(
            up,
            "0",
            &[
                "--no-resolv",
                "--listen-address=10.54.0.53",
                "--address=/bench.example/192.0.2.1",
                "--local-ttl=3600",
                "--cache-size=0",
            ],
        )?;
        let cached = self.out.join("dns-cached.txt");
        let names: String = (0..CACHED_NAMES)
            .map(|i| format!("c{i}.bench.example A\n"))
            .collect();
        std::fs::write(&cached, names)?;
        let mut rows = Vec::new();
        let mut round = 0usize;
        let mut uncached_file = |label: &str| -> Result<std::path::PathBuf> {
            // Enough fresh names for a run at 400k q/s.
            round += 1;
            let path = self.out.join(format!("dns-uncached-{label}-{round}.txt"));
            let n = 400_000 * plan.seconds as usize;
            let mut text = String::with_capacity(n * 32);
            for i in 0..n {
                let _ = writeln!(text, "u{round}x{i}.bench.example A");
            }
            std::fs::write(&path, text)?;
            Ok(path)
        };

        // Strait: the interfaces are the dataplane's (no kernel addresses).
        {
            let config = r#"
[engine]
workers = 1
cores = [1]
poll = "adaptive"
host_punt_rate = 2000000
host_punt_burst = 100000

[[interface]]
name = "lan"
addresses = ["10.53.0.1/24"]

[[interface]]
name = "wan"
addresses = ["10.54.0.1/24"]

[dns]
listen = ["10.53.0.1"]
upstreams = ["10.54.0.53"]
cache_entries = 10000
max_pending = 1024
"#;
            let d = Straitd::start(fwd, &self.bins, &self.out, "dns-strait", config)?;
            fwd.run(&["taskset", "-a", "-p", "-c", "1", &d.pid().to_string()])?;
            let mut row = DnsRow {
                system: STRAIT.into(),
                ..Default::default()
            };
            self.dns_runs(
                client,
                &cached,
                &mut uncached_file,
                "strait",
                &plan,
                &mut row,
            )?;
            rows.push(row);
        }
        // dnsmasq on the same addresses, kernel sockets.
        {
            fwd.addr("lan", "10.53.0.1/24")?;
            fwd.addr("wan", "10.54.0.1/24")?;
            let _fwd = dnsmasq(
                fwd,
                "1",
                &[
                    "--no-resolv",
                    "--server=10.54.0.53",
                    "--listen-address=10.53.0.1",
                    "--cache-size=10000",
                    "--dns-forward-max=1024",
                ],
            )?;
            let mut row = DnsRow {
                system: DNSMASQ.into(),
                ..Default::default()
            };
            self.dns_runs(
                client,
                &cached,
                &mut uncached_file,
                "dnsmasq",
                &plan,
                &mut row,
            )?;
            rows.push(row);
        }
        self.dns = Some(DnsResults { plan, rows });
        Ok(())
    }

    fn dns_runs(
        &self,
        client: &Netns,
        cached: &Path,
        uncached: &mut dyn FnMut(&str) -> Result<std::path::PathBuf>,
        label: &str,
        plan: &DnsPlan,
        row: &mut DnsRow,
    ) -> Result<()> {
        // Warm the cache (and the neighbours) first.
        dnsperf(client, cached, 1, plan.outstanding)?;
        for _ in 0..self.plan.reps {
            let r = dnsperf(client, cached, plan.seconds, plan.outstanding)?;
            eprintln!(
                "  {:<34} cached    {:>9.0} q/s  lost {:>6.2} %  mean {:.3} ms",
                row.system, r.qps, r.lost_pct, r.latency_ms
            );
            row.cached.push(r);
        }
        for _ in 0..self.plan.reps {
            let file = uncached(label)?;
            let r = dnsperf(client, &file, plan.seconds, plan.outstanding);
            let _ = std::fs::remove_file(&file);
            let r = r?;
            eprintln!(
                "  {:<34} uncached  {:>9.0} q/s  lost {:>6.2} %  mean {:.3} ms",
                row.system, r.qps, r.lost_pct, r.latency_ms
            );
            row.uncached.push(r);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsperf_statistics_are_read() {
        let out = "Statistics:\n\n  Queries sent:         1000\n  Queries completed:    990 (99.00%)\n  Queries lost:         10 (1.00%)\n\n  Run time (s):         1.000118\n  Queries per second:   98765.432100\n\n  Average Latency (s):  0.000250 (min 0.000010, max 0.001000)\n";
        let r = parse_dnsperf(out).unwrap();
        assert!((r.qps - 98765.4321).abs() < 1e-6);
        assert!((r.lost_pct - 1.0).abs() < 1e-9);
        assert!((r.latency_ms - 0.25).abs() < 1e-9);
        assert!(parse_dnsperf("nothing").is_err());
    }
}
