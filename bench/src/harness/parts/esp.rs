//! ESP, AES-128-GCM, UDP-encapsulated, with static SAs: one Strait
//! endpoint encrypting and decrypting against the generator playing its
//! peer (`scripts/topologies/bench-esp.topo`), then Strait as both
//! gateways of a site-to-site pair (`scripts/topologies/bench-site.topo`),
//! also with SNAT at the hub.

use std::net::Ipv4Addr;
use std::sync::Arc;

use anyhow::Result;
use strait_esp::CipherSuite;
use strait_wire::EthernetAddress;

use super::{ip, ns, pin_process, wait_through_tunnel, Bench, Case, Poll, SITE, SITE_SNAT};
use crate::harness::config::{self, StaticSa};
use crate::harness::daemon::Straitd;
use crate::harness::trial::Path;
use crate::harness::tunnel::{key_from_hex, outbound_sa, TunnelLeg};

/// Keys of the static SAs (key || 4-byte salt, RFC 4106 §8.1). Benchmark
/// keys only: they are printed in the configs the harness writes.
const KEY_OUT: &str = "000102030405060708090a0b0c0d0e0f10111213";
const KEY_IN: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3";
const SPI_OUT: u32 = 4097;
const SPI_IN: u32 = 8194;

/// The SA from the endpoint (or branch) towards its peer, and back.
pub(super) const OUT: StaticSa<'static> = StaticSa {
    spi: SPI_OUT,
    key: KEY_OUT,
};
pub(super) const IN: StaticSa<'static> = StaticSa {
    spi: SPI_IN,
    key: KEY_IN,
};

/// The single endpoint: LAN 10.1.0.0/24, WAN 203.0.113.1, the tunnel to
/// the generator at 203.0.113.2 (whose MAC it is told).
fn endpoint_config(cpu: usize, peer_mac: [u8; 6]) -> String {
    format!(
        "{}{}{}\n# The peer gateway is the generator: it answers no ARP.\n\
         [[neighbour]]\ninterface = \"wan\"\nip = \"203.0.113.2\"\nmac = \"{}\"\n{}",
        config::engine(cpu, "spin"),
        config::interface("lan", "10.1.0.1/24"),
        config::interface("wan", "203.0.113.1/24"),
        EthernetAddress(peer_mac),
        config::static_tunnel("peer", "203.0.113.1", "203.0.113.2", "10.2.0.0/16", OUT, IN),
    )
}

/// The branch of the site-to-site bed: LAN 10.1.0.0/16 behind it, the
/// tunnel to the hub for 10.2.0.0/16.
pub(super) fn branch_config(cpu: usize, poll: Poll) -> String {
    branch_config_sas(cpu, poll, OUT, IN)
}

/// [`branch_config`] sealing with `out` and opening `inbound` (the soak
/// part rewrites it after a rekey).
pub(super) fn branch_config_sas(
    cpu: usize,
    poll: Poll,
    out: StaticSa<'_>,
    inbound: StaticSa<'_>,
) -> String {
    config::engine(cpu, poll.toml())
        + &config::interface("lan", "10.1.0.1/24")
        + &config::interface("wan", "203.0.113.2/24")
        + &config::static_tunnel(
            "hub",
            "203.0.113.2",
            "203.0.113.1",
            "10.2.0.0/16",
            out,
            inbound,
        )
}

/// The hub: the branch's SAs mirrored, and with `snat` a masquerade of
/// the branch's LAN towards its own.
pub(super) fn hub_config(cpu: usize, poll: Poll, snat: bool) -> String {
    hub_config_sas(cpu, poll, snat, IN, OUT)
}

/// [`hub_config`] sealing with `out` and opening `inbound`.
pub(super) fn hub_config_sas(
    cpu: usize,
    poll: Poll,
    snat: bool,
    out: StaticSa<'_>,
    inbound: StaticSa<'_>,
) -> String {
    let mut c = config::engine(cpu, poll.toml())
        + &config::interface("wan", "203.0.113.1/24")
        + &config::interface("lan", "10.2.0.1/24")
        + &config::static_tunnel(
            "branch",
            "203.0.113.1",
            "203.0.113.2",
            "10.1.0.0/16",
            out,
            inbound,
        );
    if snat {
        c.push('\n');
        c += &config::nat_rule("site-out", "masquerade", "10.1.0.0/16", "lan");
    }
    c
}

impl Bench {
    /// ESP: one instance encrypting, one decrypting, then site to site.
    pub fn esp(&mut self) -> Result<()> {
        eprintln!(
            "== ESP: one endpoint encrypting / decrypting (scripts/topologies/bench-esp.topo)"
        );
        {
            let (_tb, nets) = self.bed("bench-esp.topo", "bench-esp")?;
            let (lan, dut, peer) = (ns(&nets, "lan")?, ns(&nets, "dut")?, ns(&nets, "peer")?);
            let peer_mac = peer.mac("eth0")?;
            let config = endpoint_config(self.settings.dut_cpu, peer_mac);
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
            for &size in &self.settings.esp_sizes.clone() {
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
    pub(super) fn site_strait(&mut self, section: &'static str, snat: bool) -> Result<()> {
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
        let poll = self.settings.site_poll;
        let (cpu_b, cpu_h) = self.settings.site_placement.cpus(self.settings.dut_cpu);
        let branch_cfg = branch_config(cpu_b, poll);
        let hub_cfg = hub_config(cpu_h, poll, snat);
        let db = Straitd::start(branch, &self.bins, &self.out, "site-branch", &branch_cfg)?;
        let dh = Straitd::start(hub, &self.bins, &self.out, "site-hub", &hub_cfg)?;
        // The worker pins itself; the daemon's other threads go with it,
        // as every thread of a peer does.
        pin_process(db.pid(), cpu_b)?;
        pin_process(dh.pid(), cpu_h)?;
        // The first packet makes the branch resolve the hub and the hub
        // resolve the sink; ping until the path works (bounded).
        wait_through_tunnel(lana, "site to site")?;
        let site = self.placed_site_path(lana, lanb, branch)?;
        let poll = poll.toml();
        let label = if snat {
            format!("{SITE_SNAT} ({poll})")
        } else {
            format!("{SITE} ({poll})")
        };
        let idle = if section == "esp" {
            "esp-idle"
        } else {
            "peers-idle"
        };
        self.idle_into(idle, &label, &[db.pid(), dh.pid()]);
        for &size in &self.settings.esp_sizes.clone() {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `key = …` lines of a config, in order.
    fn values<'a>(config: &'a str, key: &str) -> Vec<&'a str> {
        config
            .lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix(" = "))
            .collect()
    }

    #[test]
    fn hub_opens_what_the_branch_seals_and_back() {
        let branch = branch_config(0, Poll::Adaptive);
        let hub = hub_config(1, Poll::Adaptive, false);
        assert_eq!(values(&branch, "outbound"), values(&hub, "inbound"));
        assert_eq!(values(&branch, "inbound"), values(&hub, "outbound"));
        assert_ne!(values(&branch, "outbound"), values(&branch, "inbound"));
        // Each routes the other's LAN into the tunnel.
        assert_eq!(values(&branch, "prefixes"), ["[\"10.2.0.0/16\"]"]);
        assert_eq!(values(&hub, "prefixes"), ["[\"10.1.0.0/16\"]"]);
        assert_eq!(values(&branch, "local"), values(&hub, "remote"));
    }

    #[test]
    fn only_the_snat_hub_masquerades_and_poll_mode_is_the_sites() {
        assert!(!hub_config(1, Poll::Spin, false).contains("[[nat]]"));
        let snat = hub_config(1, Poll::Spin, true);
        assert_eq!(values(&snat, "kind"), ["\"masquerade\""]);
        assert_eq!(values(&snat, "out_interface"), ["\"lan\""]);
        assert_eq!(values(&snat, "poll"), ["\"spin\""]);
        assert_eq!(
            values(&branch_config(0, Poll::Adaptive), "poll"),
            ["\"adaptive\""]
        );
    }

    #[test]
    fn endpoint_knows_the_generator_peer_by_mac_and_keys() {
        let c = endpoint_config(1, [0x02, 0, 0, 0, 0xab, 0x0c]);
        assert_eq!(values(&c, "mac"), ["\"02:00:00:00:ab:0c\""]);
        assert_eq!(values(&c, "cores"), ["[1]"]);
        assert!(values(&c, "outbound")[0].contains(KEY_OUT));
        assert!(values(&c, "inbound")[0].contains(&format!("spi = {SPI_IN},")));
    }
}
