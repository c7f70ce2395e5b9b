//! Entry points for the fuzz targets (`fuzz/` and `crates/fuzz-targets`):
//! the pipeline over tables built from a configuration text, without
//! AF_XDP, and the table build on its own. Not part of the embedding API.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError};
use crate::counters::DropReason;
use crate::packet::PacketBuf;
use crate::pipeline::{fragment_ipv4, fragment_plan, FragmentTarget, Pipeline, Verdict};
use crate::sastore::StoreMode;
use crate::tables::{KernelLink, Tables};

/// Frame buffer size and where a received frame starts in it, as in a
/// UMEM chunk.
const FRAME_SIZE: usize = 2048;
const HEADROOM: usize = 256;

/// Resolves every interface to a fake link: ifindex 2, MTU 1500, and the
/// MAC `macs` gives for its name.
fn fake_link(macs: fn(&str) -> [u8; 6]) -> impl FnMut(&str) -> std::io::Result<KernelLink> {
    move |name| {
        Ok(KernelLink {
            ifindex: 2,
            mac: macs(name),
            mtu: 1500,
        })
    }
}

/// Builds the tables a configuration would run with (interfaces resolved
/// by a fake link), and drops them.
pub fn build_tables(config: &Config, path: &str) -> Result<(), ConfigError> {
    build(config, path, fake_link(|_| [2, 0, 0, 0, 0, 1])).map(drop)
}

/// Parses `text` as an SA state record; one that parses renders back to
/// text that parses to the same record. Never panics otherwise.
pub fn sa_record(text: &str) {
    if let Ok(r) = crate::sastore::Record::parse(text) {
        assert_eq!(
            crate::sastore::Record::parse(&r.render()).as_ref(),
            Ok(&r),
            "an SA record does not survive its own rendering"
        );
    }
}

/// Tables for fuzzing: whatever `state_dir` the input names, SA state goes
/// to one scratch directory that is only read ([`StoreMode::ReadOnly`]:
/// no lock, no records written), so fuzzed text never touches the disk
/// and several sites can share it.
fn build(
    config: &Config,
    path: &str,
    link: impl FnMut(&str) -> std::io::Result<KernelLink>,
) -> Result<Tables, ConfigError> {
    let mut config = config.clone();
    config.engine.state_dir =
        Some(std::env::temp_dir().join(format!("strait-fuzz-state-{}", std::process::id())));
    // Configured tunnels are what the pipeline fuzzer drives.
    config.engine.manual_keying = true;
    Tables::build_in(&config, path, 1, 3, None, link, StoreMode::ReadOnly)
}

/// What became of a frame (or of one of its fragments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An L3 packet leaving by `port` towards `neighbour`.
    Forward {
        /// Egress port.
        port: u16,
        /// Next hop.
        neighbour: IpAddr,
        /// The IPv4 or IPv6 packet.
        packet: Vec<u8>,
    },
    /// An Ethernet frame sent back on the ingress port.
    Reply(Vec<u8>),
    /// Handed to the host stack.
    Punt,
    /// Used up inside the pipeline.
    Consumed,
    /// IKE for the daemon.
    Service,
    /// Dropped for the reason.
    Drop(DropReason),
}

/// One worker's pipeline over one tables snapshot. Building tables is
/// far slower than a packet: build a site once and [`Site::reset`] it
/// between inputs.
#[derive(Debug)]
pub struct Site {
    tables: Tables,
    pipeline: Pipeline<u32>,
    start: Instant,
}

impl Site {
    /// Tables from `config` with each interface's MAC from `macs`, and a
    /// fresh pipeline.
    pub fn new(config: &Config, macs: fn(&str) -> [u8; 6]) -> Result<Site, ConfigError> {
        let tables = build(config, "fuzz.toml", fake_link(macs))?;
        let start = Instant::now();
        let pipeline = Pipeline::new(
            tables.ports.len(),
            tables.icmp.errors_per_second,
            tables.icmp.burst,
            start,
        );
        Ok(Site {
            tables,
            pipeline,
            start,
        })
    }

    /// A fresh pipeline (no NAT sessions, replay windows, neighbours or
    /// counters) over the same tables and clock origin. Outbound SA
    /// sequence numbers live in the tables and keep increasing.
    pub fn reset(&mut self) {
        self.pipeline = Pipeline::new(
            self.tables.ports.len(),
            self.tables.icmp.errors_per_second,
            self.tables.icmp.burst,
            self.start,
        );
    }

    /// Runs the Ethernet frame `frame`, received on `ingress`, through the
    /// pipeline at `elapsed` after the site was built; fragments what the
    /// pipeline asks to fragment (sealing each into its tunnel), as the
    /// worker does.
    pub fn run_frame(&mut self, ingress: u16, frame: &[u8], elapsed: Duration) -> Vec<Outcome> {
        self.run_stage(frame, elapsed, |p, t, pkt, now| {
            p.process(t, pkt, ingress, now)
        })
    }

    /// Runs `frame` as the host stack would send it through the TAP of
    /// `port` ([`Pipeline::host_output`]), fragments as [`Site::run_frame`].
    pub fn host_frame(&mut self, port: u16, frame: &[u8], elapsed: Duration) -> Vec<Outcome> {
        self.run_stage(frame, elapsed, |p, t, pkt, now| {
            p.host_output(t, port, pkt, now)
        })
    }

    fn run_stage(
        &mut self,
        frame: &[u8],
        elapsed: Duration,
        stage: impl FnOnce(&mut Pipeline<u32>, &Tables, &mut PacketBuf<'_>, Instant) -> Verdict,
    ) -> Vec<Outcome> {
        let now = self.start + elapsed;
        let mut buf = vec![0u8; FRAME_SIZE];
        let len = frame.len().min(FRAME_SIZE - HEADROOM);
        buf[HEADROOM..HEADROOM + len].copy_from_slice(&frame[..len]);
        let mut pkt = PacketBuf::new(&mut buf, HEADROOM, len);
        let verdict = stage(&mut self.pipeline, &self.tables, &mut pkt, now);
        let plan = match verdict {
            Verdict::Fragment(plan) => plan,
            other => return vec![outcome(other, pkt.data())],
        };
        let original = pkt.data().to_vec();
        let mtu = usize::from(plan.mtu);
        let count = strait_wire::Ipv4Packet::new_checked(&original[..])
            .ok()
            .and_then(|ip| fragment_plan(ip.header_len(), usize::from(ip.total_len()), mtu))
            .map_or(0, |(_, count)| count);
        if count == 0 {
            return vec![Outcome::Drop(DropReason::FragmentFailed)];
        }
        let mut out = Vec::with_capacity(count);
        for index in 0..count {
            let mut piece = vec![0u8; FRAME_SIZE];
            let Some(n) = fragment_ipv4(&original, mtu, index, &mut piece[HEADROOM..]) else {
                out.push(Outcome::Drop(DropReason::FragmentFailed));
                break;
            };
            let mut pkt = PacketBuf::new(&mut piece, HEADROOM, n);
            let verdict = match plan.target {
                FragmentTarget::Port { port, neighbour } => Verdict::Forward { port, neighbour },
                FragmentTarget::Tunnel { tunnel } => {
                    self.pipeline
                        .tunnel_output(&self.tables, tunnel, &mut pkt, now)
                }
            };
            out.push(outcome(verdict, pkt.data()));
        }
        out
    }
}

fn outcome(verdict: Verdict, data: &[u8]) -> Outcome {
    match verdict {
        Verdict::Forward { port, neighbour } => Outcome::Forward {
            port,
            neighbour,
            packet: data.to_vec(),
        },
        Verdict::Reply => Outcome::Reply(data.to_vec()),
        Verdict::Punt => Outcome::Punt,
        Verdict::Consumed => Outcome::Consumed,
        Verdict::Service => Outcome::Service,
        // Fragments of fragments are not asked for: the plan's MTU fits.
        Verdict::Fragment(_) => Outcome::Drop(DropReason::FragmentFailed),
        Verdict::Drop(reason) => Outcome::Drop(reason),
    }
}
