//! Plain forwarding on `scripts/topologies/forward.topo` (h1 — dp — h2):
//! the kernel, then Strait, then DPDK's testpmd (AF_XDP PMD, MAC
//! forwarding: the floor of what AF_XDP moves on the bed), on the same bed
//! with the same traffic, Strait's worker and testpmd's forwarding lcore on
//! the same CPU.

use anyhow::Result;

use super::{ip, ns, Bench, Case};
use crate::harness::config;
use crate::harness::daemon::{sched_time, Straitd};
use crate::harness::set_rps;
use crate::harness::testpmd::{self, Port, Testpmd};
use crate::harness::trial::{measure, Path};

/// Strait on the router: one worker, spinning, pinned to `cpu`.
fn strait_config(cpu: usize) -> String {
    config::engine(cpu, "spin")
        + &config::interface("left", "10.1.0.1/24")
        + &config::interface("right", "10.2.0.1/24")
}

impl Bench {
    /// Plain forwarding: kernel, Strait, then testpmd on the same bed.
    pub fn forwarding(&mut self) -> Result<()> {
        let with_testpmd = self.settings.testpmd;
        if with_testpmd {
            // Before anything is measured: a run that cannot finish says so
            // at once.
            testpmd::require()?;
        }
        eprintln!(
            "== forwarding: kernel vs Strait{} (scripts/topologies/forward.topo)",
            if with_testpmd { " vs DPDK testpmd" } else { "" }
        );
        let (_tb, nets) = self.bed("forward.topo", "bench-fwd")?;
        let (h1, dp, h2) = (ns(&nets, "h1")?, ns(&nets, "dp")?, ns(&nets, "h2")?);
        let path = Path::between(h1, h2, dp, "left", ip("10.1.0.2"), ip("10.2.0.2"))?;
        let kernel_rps = self.settings.kernel_rps;

        // The kernel: addresses on the router, forwarding on, and RPS so
        // its receive processing runs on the CPU Strait's worker gets.
        dp.addr("left", "10.1.0.1/24")?;
        dp.addr("right", "10.2.0.1/24")?;
        dp.sysctl("net.ipv4.ip_forward", "1")?;
        let rps = format!("{:x}", 1u64 << self.settings.dut_cpu);
        if kernel_rps {
            set_rps(dp, &["left", "right"], &rps)?;
        }
        let label = format!(
            "kernel ip_forward{}",
            if kernel_rps { " + RPS" } else { "" }
        );
        for &size in &self.settings.sizes.clone() {
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
        let config = strait_config(self.settings.dut_cpu);
        let d = Straitd::start(dp, &self.bins, &self.out, "forward", &config)?;
        let label = "Strait (1 worker, spin)".to_owned();
        for &size in &self.settings.sizes.clone() {
            let (fig, share) = self.measure_dut(&path, size, &label, &[&d])?;
            self.push_fig("forward", &label, size, fig, share);
        }
        d.save_shows(&self.out, "forward", &["counters", "drops", "workers"]);
        let mut case = Case::iperf("forward-tcp", &label);
        self.iperf_into(&mut case, h1, h2, "10.2.0.2");
        self.cases.push(case);
        drop(d);
        if with_testpmd {
            self.forwarding_testpmd(&path, h1, dp, h2)?;
        }
        Ok(())
    }

    /// testpmd on the router's two interfaces, MAC forwarding: frames from
    /// h1 leave `right` addressed to h2's MAC (the generator's receiver),
    /// frames from h2 leave `left` addressed to h1's. The generator sends
    /// to `left`'s MAC, as it does for Strait.
    fn forwarding_testpmd(
        &mut self,
        path: &Path,
        h1: &strait_testbed::Netns,
        dp: &strait_testbed::Netns,
        h2: &strait_testbed::Netns,
    ) -> Result<()> {
        let ports = [
            Port {
                iface: "left",
                peer: h1.mac("eth0")?,
            },
            Port {
                iface: "right",
                peer: h2.mac("eth0")?,
            },
        ];
        let tp = Testpmd::start(dp, &ports, self.settings.dut_cpu, &self.out, "forward")?;
        if let Some(v) = testpmd::version() {
            self.notes.push(format!("{}: dpdk-dev {v}", testpmd::LABEL));
        }
        let label = testpmd::LABEL.to_owned();
        for &size in &self.settings.sizes.clone() {
            let before = sched_time(tp.pid(), "rte-worker");
            let fig = measure(
                path,
                &self.plan,
                size,
                &[tp.pid()],
                &mut Self::progress(&label),
            )?;
            let share = sched_time(tp.pid(), "rte-worker")
                .zip(before)
                .and_then(|(a, b)| a.on_cpu_percent_since(&b))
                .into_iter()
                .collect();
            self.push_fig("forward", &label, size, fig, share);
        }
        // iperf3: testpmd answers no ARP, so the hosts get their gateways'
        // MACs pinned (any destination MAC would do: it is rewritten).
        let pin = |host: &strait_testbed::Netns, gw: &str, dev: &str| -> Result<()> {
            let mac = dp.mac(dev)?.map(|b| format!("{b:02x}")).join(":");
            host.ip(&[
                "neigh",
                "replace",
                gw,
                "lladdr",
                &mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ])?;
            Ok(())
        };
        pin(h1, "10.1.0.1", "left")?;
        pin(h2, "10.2.0.1", "right")?;
        let mut case = Case::iperf("forward-tcp", &label);
        self.iperf_into(&mut case, h1, h2, "10.2.0.2");
        self.cases.push(case);
        h1.ip(&["neigh", "del", "10.1.0.1", "dev", "eth0"])?;
        h2.ip(&["neigh", "del", "10.2.0.1", "dev", "eth0"])?;
        if let Some(t) = tp.stop() {
            self.notes.push(format!(
                "{}: received {} frames, sent {}, {} refused by its TX queues, {} missed at RX (its own counters, whole part)",
                testpmd::LABEL,
                t.rx,
                t.tx,
                t.tx_dropped,
                t.rx_dropped
            ));
        }
        Ok(())
    }
}
