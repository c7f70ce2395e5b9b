//! Plain forwarding on `scripts/topologies/forward.topo` (h1 — dp — h2):
//! the kernel, then Strait, on the same bed with the same traffic.

use anyhow::Result;

use super::{ip, ns, Bench, Case};
use crate::harness::config;
use crate::harness::daemon::Straitd;
use crate::harness::set_rps;
use crate::harness::trial::{measure, Path};

/// Strait on the router: one worker, spinning, pinned to `cpu`.
fn strait_config(cpu: usize) -> String {
    config::engine(cpu, "spin")
        + &config::interface("left", "10.1.0.1/24")
        + &config::interface("right", "10.2.0.1/24")
}

impl Bench {
    /// Plain forwarding: kernel then Strait on the same bed.
    pub fn forwarding(&mut self) -> Result<()> {
        eprintln!("== forwarding: kernel vs Strait (scripts/topologies/forward.topo)");
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
        Ok(())
    }
}
