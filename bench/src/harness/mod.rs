//! The end-to-end benchmark harness behind `strait-bench`.
//!
//! It measures Strait and the kernel on the same namespace bed, in one
//! invocation, with the same generated traffic, and reports every figure as
//! the median and range of repeated trials ([`stats::Spread`]); what counts
//! is the ratio measured in one run, because the shared 2-vCPU hosts vary
//! by ±15–20 % between runs.
//!
//! * [`parts`]: the parts of a run (forwarding, ESP, NAT, peers), the
//!   figures they collect and the tables, JSON and charts made of them.
//! * [`trial`]: generator trials against a device under test (maximum
//!   rate, latency at a fraction of it, CPU per GB).
//! * [`tunnel`]: generator ports that seal or open ESP, so one Strait
//!   instance can be measured encrypting or decrypting on its own.
//! * [`branches`]: a fleet of IKEv2 initiators registering with one hub.
//! * [`daemon`]: a `straitd` per case, stopped on drop.
//! * [`config`]: the blocks of the `straitd` configurations the cases write.
//! * [`nat`]: Strait SNAT against nftables masquerade with many flows.
//! * [`peers`]: wireguard-go and boringtun as the site-to-site gateway pair.
//! * [`strongswan`]: strongSwan with userspace ESP (`kernel-libipsec`) as
//!   the same gateway pair.
//! * [`testpmd`]: DPDK's testpmd (AF_XDP PMD, MAC forwarding), the floor
//!   of what AF_XDP moves on the forwarding bed.
//! * [`iperf`]: iperf3 TCP and UDP through a path.
//! * [`host`]: the machine's load and description for the results.
//! * [`stats`]: median and range.
//! * [`plot`]: SVG charts of those figures for `docs/BENCHMARKS.md`.

pub mod branches;
pub mod config;
pub mod daemon;
pub mod host;
pub mod iperf;
pub mod nat;
pub mod parts;
pub mod peers;
pub mod plot;
pub mod stats;
pub mod strongswan;
pub mod testpmd;
pub mod trial;
pub mod tunnel;

/// Steers the kernel's receive processing of `ifaces` in `ns` to the CPUs
/// in hex `mask` (RPS; "0" turns it off): the kernel baselines use it.
pub fn set_rps(ns: &strait_testbed::Netns, ifaces: &[&str], mask: &str) -> anyhow::Result<()> {
    for i in ifaces {
        ns.run(&[
            "sh",
            "-c",
            &format!("echo {mask} > /sys/class/net/{i}/queues/rx-0/rps_cpus"),
        ])?;
    }
    Ok(())
}
