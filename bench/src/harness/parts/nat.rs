//! The NAT part's place in a run: [`crate::harness::nat::NatPart`] does the
//! measuring and renders its own tables; this takes its plan and frame
//! sizes from the run's settings and keeps its results with the others.

use std::time::Duration;

use anyhow::Result;

use super::Bench;
use crate::harness::nat::{NatPart, SCALES};
use crate::harness::trial::TrialFigures;

impl Bench {
    /// NAT: the kernel (nftables) then Strait translating 1k, 100k and 1M
    /// flows; `--quick` runs only the smallest two sets.
    pub fn nat(&mut self) -> Result<()> {
        eprintln!("== NAT: kernel nftables vs Strait SNAT (scripts/topologies/bench-nat.topo)");
        let mut plan = self.plan.clone();
        let quick = self.settings.quick;
        if !self.settings.duration_chosen && !quick {
            // 2 s trials keep the part near 5 minutes with three flow sets.
            plan.duration = Duration::from_secs(2);
        }
        let part = NatPart {
            plan,
            bins: &self.bins,
            out: &self.out,
            topologies: &self.settings.topologies,
            dut_cpu: self.settings.dut_cpu,
            kernel_rps: self.settings.kernel_rps,
            sizes: self.settings.nat_sizes.clone(),
            scales: SCALES[..if quick { 2 } else { 3 }].to_vec(),
            setup_reps: if quick { 1 } else { 3 },
        };
        let mut progress = |label: &str, kind: &str, t: &TrialFigures| {
            Self::progress(label)(kind, t);
        };
        self.nat = part.run(&mut progress)?;
        Ok(())
    }
}
