//! DPDK's `dpdk-testpmd` with the AF_XDP poll-mode driver as the floor of
//! what AF_XDP moves on a bed: two `net_af_xdp` ports on the router's
//! interfaces, MAC forwarding between them (each frame leaves the other
//! port with that port's MAC as source and the configured peer's MAC as
//! destination; no lookup, no TTL, no checksum). Strait's routed
//! forwarding on the same bed, with the same traffic and the same CPU, is
//! measured against it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strait_testbed::Netns;

/// The system's name in the results.
pub const LABEL: &str = "DPDK testpmd (AF_XDP PMD, mac forward)";

/// The program, from Debian's `dpdk-dev`.
pub const PROGRAM: &str = "dpdk-testpmd";

/// What to install when it is missing.
pub const INSTALL_HINT: &str = "apt-get install --no-install-recommends dpdk-dev librte-net-af-xdp23 librte-mempool-ring23 (scripts/install-deps --bench does it)";

/// Mbufs in testpmd's pool: the fill and completion rings of both ports
/// (2048 descriptors each by default) with room to spare. testpmd's own
/// default (~155 k mbufs) does not fit in `-m 512` without huge pages.
const MBUFS: u32 = 32768;

/// The PMD's preferred busy polling (`SO_PREFER_BUSY_POLL`, on by default
/// with a budget of 64) turned off: without the NAPI tuning it is meant for
/// (`napi_defer_hard_irqs`, `gro_flush_timeout`) it costs a `recvfrom` per
/// receive burst; in two runs here testpmd forwarded 0.41 Mpps at 64 B
/// with it and 0.76 without (the first on a busier box). The floor is
/// testpmd's best configuration on the bed, not its default.
const BUSY_BUDGET: u32 = 0;

/// The line testpmd prints once forwarding has started.
const STARTED: &str = "packet forwarding - ports=";

/// One testpmd port: the interface it drives and the MAC its frames are
/// rewritten to when they leave through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port<'a> {
    /// The kernel interface under the `net_af_xdp` vdev.
    pub iface: &'a str,
    /// The next hop's MAC on that link (`--eth-peer`).
    pub peer: [u8; 6],
}

/// The command line: no huge pages, no PCI scan, both lcores (the
/// sleeping main one and the forwarding one) on `cpu`, runtime files
/// under `prefix`, MAC forwarding started at once; non-interactive, it runs
/// until SIGTERM/SIGINT (`--stats-period` keeps it from waiting on stdin).
pub fn argv(ports: &[Port<'_>; 2], cpu: usize, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        PROGRAM,
        "--no-huge",
        "--no-pci",
        "--no-telemetry",
        "-m",
        "512",
        "--file-prefix",
        prefix,
        "--lcores",
        &format!("0@{cpu},1@{cpu}"),
        "--main-lcore",
        "0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for (i, p) in ports.iter().enumerate() {
        v.push("--vdev".into());
        v.push(format!(
            "net_af_xdp{i},iface={},busy_budget={BUSY_BUDGET}",
            p.iface
        ));
    }
    v.push("--".into());
    v.push("--forward-mode=mac".into());
    for (i, p) in ports.iter().enumerate() {
        v.push(format!("--eth-peer={i},{}", mac_text(&p.peer)));
    }
    v.push(format!("--total-num-mbufs={MBUFS}"));
    v.push("--stats-period=3600".into());
    v
}

fn mac_text(m: &[u8; 6]) -> String {
    let mut s = String::new();
    for (i, b) in m.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Fails, saying what to install, when testpmd is not on `PATH`.
pub fn require() -> Result<()> {
    if !strait_testbed::have_program(PROGRAM) {
        bail!("{PROGRAM} not found: {INSTALL_HINT}; or leave it out with --testpmd false");
    }
    Ok(())
}

/// The Debian version of the installed testpmd, if dpkg knows it.
pub fn version() -> Option<String> {
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "dpdk-dev"])
        .output()
        .ok()?;
    let v = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !v.is_empty()).then_some(v)
}

/// testpmd's own totals, from the statistics it prints when it stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Frames received on all ports.
    pub rx: u64,
    /// Frames it failed to receive (the PMD's `RX-dropped`/missed).
    pub rx_dropped: u64,
    /// Frames sent.
    pub tx: u64,
    /// Frames the TX queue refused (ring full): lost inside testpmd.
    pub tx_dropped: u64,
}

/// Reads the "Accumulated forward statistics for all ports" block of
/// testpmd's exit output.
pub fn parse_totals(log: &str) -> Option<Totals> {
    let block = &log[log.find("Accumulated forward statistics")?..];
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let mut t = Totals::default();
    let mut seen = (false, false);
    for line in block.lines().skip(1).take(4) {
        if line.contains("RX-packets:") {
            t.rx = field(line, "RX-packets:")?;
            t.rx_dropped = field(line, "RX-dropped:")?;
            seen.0 = true;
        } else if line.contains("TX-packets:") {
            t.tx = field(line, "TX-packets:")?;
            t.tx_dropped = field(line, "TX-dropped:")?;
            seen.1 = true;
        }
    }
    (seen.0 && seen.1).then_some(t)
}

/// A running testpmd, stopped on drop (SIGTERM, then SIGKILL) with the XDP
/// programs it attached removed.
#[derive(Debug)]
pub struct Testpmd {
    ns: Netns,
    child: Child,
    ifaces: Vec<String>,
    prefix: String,
    log: PathBuf,
}

impl Testpmd {
    /// Starts testpmd in `ns` on `ports`, its lcores on `cpu`, output in
    /// `log_dir/testpmd-<tag>.log`; returns once it forwards (20 s at
    /// most), or fails with the end of its output.
    pub fn start(
        ns: &Netns,
        ports: &[Port<'_>; 2],
        cpu: usize,
        log_dir: &Path,
        tag: &str,
    ) -> Result<Testpmd> {
        require()?;
        let prefix = format!("strait-bench-{}-{tag}", std::process::id());
        let args = argv(ports, cpu, &prefix);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = log_dir.join(format!("testpmd-{tag}.log"));
        // A previous process's socket may still be bound for a few tens of
        // milliseconds after it exits (EBUSY): a second try after a pause.
        let mut last_err = None;
        for attempt in 0..2 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            let file = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            let child = ns
                .command(&args)
                .stdin(Stdio::null())
                .stdout(file.try_clone()?)
                .stderr(file)
                .spawn()
                .with_context(|| format!("starting {}", args.join(" ")))?;
            let mut t = Testpmd {
                ns: ns.clone(),
                child,
                ifaces: ports.iter().map(|p| p.iface.to_owned()).collect(),
                prefix: prefix.clone(),
                log: log.clone(),
            };
            match t.wait_started(Duration::from_secs(20)) {
                Ok(()) => return Ok(t),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("two attempts")).with_context(|| {
            format!(
                "{PROGRAM} did not start forwarding (its output: {}); the AF_XDP PMD is in librte-net-af-xdp23",
                log.display()
            )
        })
    }

    fn wait_started(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(STARTED) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{PROGRAM} exited ({status}): {}", tail(&text, 6));
            }
            if Instant::now() > deadline {
                bail!(
                    "{PROGRAM} not forwarding after {limit:?}: {}",
                    tail(&text, 6)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its process id (the forwarding lcore is one of its threads).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it and returns its totals, if it printed them.
    pub fn stop(mut self) -> Option<Totals> {
        self.shut_down();
        parse_totals(&std::fs::read_to_string(&self.log).ok()?)
    }

    fn shut_down(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            crate::sys::terminate(&mut self.child, Duration::from_secs(5));
        }
        // libxdp attaches its program through netlink: a testpmd that was
        // killed leaves it behind.
        for i in &self.ifaces {
            let _ = self.ns.ip(&["link", "set", "dev", i, "xdp", "off"]);
        }
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("libbpf:") && !l.starts_with("libxdp:"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_pins_both_lcores_and_sets_each_ports_peer() {
        let ports = [
            Port {
                iface: "left",
                peer: [0x02, 0, 0, 0, 0, 0x0a],
            },
            Port {
                iface: "right",
                peer: [0x12, 0x72, 0x7e, 0x18, 0x8f, 0x95],
            },
        ];
        let v = argv(&ports, 1, "p");
        let s = v.join(" ");
        assert!(s.starts_with("dpdk-testpmd --no-huge --no-pci "), "{s}");
        assert!(s.contains(" --lcores 0@1,1@1 --main-lcore 0 "), "{s}");
        assert!(
            s.contains(
                " --vdev net_af_xdp0,iface=left,busy_budget=0 --vdev net_af_xdp1,iface=right,busy_budget=0 -- "
            ),
            "{s}"
        );
        // EAL options before `--`, testpmd's after.
        let dd = v.iter().position(|a| a == "--").unwrap();
        assert!(v[..dd].iter().all(|a| !a.starts_with("--eth-peer")));
        assert!(v[dd..].contains(&"--forward-mode=mac".to_owned()));
        assert!(v[dd..].contains(&"--eth-peer=0,02:00:00:00:00:0a".to_owned()));
        assert!(v[dd..].contains(&"--eth-peer=1,12:72:7e:18:8f:95".to_owned()));
        // Never interactive: it would wait for a terminal.
        assert!(!v.iter().any(|a| a == "-i" || a == "--interactive"));
        assert!(v.iter().any(|a| a.starts_with("--stats-period=")));
    }

    #[test]
    fn totals_come_from_the_accumulated_block() {
        let log = "\
  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 3              RX-dropped: 0             RX-total: 3
  TX-packets: 3              TX-dropped: 0             TX-total: 3
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 1843770        RX-dropped: 12            RX-total: 1843782
  TX-packets: 1843001        TX-dropped: 769           TX-total: 1843770
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++

Done.
";
        assert_eq!(
            parse_totals(log),
            Some(Totals {
                rx: 1_843_770,
                rx_dropped: 12,
                tx: 1_843_001,
                tx_dropped: 769,
            })
        );
        assert_eq!(parse_totals("Bye...\n"), None);
    }
}
