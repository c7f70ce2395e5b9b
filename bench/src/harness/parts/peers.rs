//! Site to site with the gateway pair swapped: the userspace tunnels a
//! user would pick instead of Strait ([`crate::harness::peers`],
//! [`crate::harness::strongswan`]) on a fresh copy of the same bed, with the
//! same generator traffic and iperf3 as Strait's own pair.

use anyhow::Result;

use super::{ns, pin_process, wait_through_tunnel, Bench, Case, SITE};
use crate::harness::peers::{self, GatewayPair, Implementation};
use crate::harness::strongswan;
use crate::harness::trial::measure;

/// Starts a peer implementation as the gateway pair (A side, B side).
type StartPair<'a> =
    dyn Fn(&peers::Gateway<'_>, &peers::Gateway<'_>) -> Result<Box<dyn GatewayPair>> + 'a;

impl Bench {
    /// Site to site with the gateway pair swapped: Strait (branch/hub,
    /// static SAs), then wireguard-go and boringtun on a fresh copy of the
    /// same bed, with the same generator traffic and iperf3.
    pub fn peers(&mut self) -> Result<()> {
        strait_testbed::require_program("wireguard-go", "wireguard-go");
        strait_testbed::require_program("wg", "wireguard-tools");
        // Installing boringtun can take minutes: before anything is measured.
        let mut imps = vec![Implementation::WireguardGo];
        match peers::boringtun(&self.settings.peers_cache) {
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
        // The same placement as Strait's pair: side A is the branch.
        let (cpu_b, cpu_h) = self.settings.site_placement.cpus(self.settings.dut_cpu);
        let pids = pair.pids();
        for (pid, cpu) in pids.iter().zip([cpu_b, cpu_h]) {
            pin_process(*pid, cpu)?;
        }
        wait_through_tunnel(lana, label)?;
        let path = self.placed_site_path(lana, lanb, branch)?;
        self.idle_into("peers-idle", label, &pair.pids());
        for &size in &self.settings.esp_sizes.clone() {
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
}
