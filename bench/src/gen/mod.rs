//! `strait-gen`: the traffic generator users and vendors verify Strait with.
//!
//! A [`TrafficSpec`] says what to send. A [`Sender`] builds each frame size
//! once ([`FrameFactory`]) and paces ([`Pacer`]) frames out of a
//! [`TxPort`]: [`AfPacketTx`] (raw frames, qdisc bypass, `sendmmsg`),
//! [`UdpTx`] (ordinary UDP socket, unprivileged) or `XdpTx` (AF_XDP, the
//! only one that saturates the dataplane on a 2-vCPU host). Every packet
//! carries a [`probe`] (magic, stream, 64-bit sequence number, monotonic
//! TX timestamp). A [`Receiver`] on its own thread counts probe frames from
//! an [`RxPort`] and classifies them with a sliding bitmap per stream
//! ([`SequenceTracker`]): loss, reordering, duplicates, one-way latency
//! (HDR histogram). [`run_trial`] runs both and returns a [`Report`];
//! [`RateSearch`] finds NDR and PDR with repeated trials.
//!
//! ```no_run
//! use strait_bench::gen::*;
//! # fn main() -> Result<(), GenError> {
//! let mut spec = TrafficSpec::new(
//!     strait_wire::EthernetAddress(iface_mac("eth0")?),
//!     resolve_neighbour("eth0", "10.0.0.2".parse().unwrap())?,
//!     "10.0.0.1".parse().unwrap(),
//!     "10.0.0.2".parse().unwrap(),
//! );
//! spec.rate = "10kpps".parse()?;
//! spec.duration = std::time::Duration::from_secs(2);
//! let tx = Box::new(AfPacketTx::open("eth0", spec.batch, false)?);
//! let rx = Box::new(AfPacketRx::open("eth1")?);
//! let report = run_trial(&spec, tx, rx, &mut |_| {})?;
//! println!("{report}");
//! # Ok(()) }
//! ```

mod clock;
mod error;
mod flows;
mod neigh;
mod pacing;
pub mod probe;
mod receiver;
mod report;
mod search;
mod sender;
mod spec;
mod template;
mod xdp;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use crate::sys::{
    iface_mac, ifindex, in_netns, parse_mac, MsgBatch, PacketDirection, PacketSocket,
};
pub use clock::monotonic_ns;
pub use error::{GenError, Result};
pub use flows::{FlowCursor, FlowKey};
pub use neigh::resolve_neighbour;
pub use pacing::Pacer;
pub use receiver::{
    AfPacketRx, Arrival, Receiver, ReceiverHandle, RxPort, RxProgress, RxStats, SequenceCounts,
    SequenceTracker, SinkDrops, REORDER_WINDOW,
};
pub use report::{
    CdfPoint, LatencyReport, LossAccount, Report, RxReport, SizeShare, TxReport, CDF_QUANTILES,
    SATURATION_NOTE, SCHEMA_VERSION,
};
pub use search::{RateSearch, SearchConfig, SearchResult, Trial};
pub use sender::{
    AfPacketTx, Fill, Holds, SendOutcome, Sender, TxPort, TxProgress, TxStats, UdpTx,
};
pub use spec::{
    FlowOrder, FlowSpec, PortRange, Protocol, Rate, SizeMix, TrafficSpec, FCS_LEN, MAX_FRAME,
    MIN_FRAME, WIRE_OVERHEAD,
};
pub use template::{locate_probe, min_frame_size, FrameFactory};
pub use xdp::{XdpRx, XdpTx};

/// How long the receiver keeps counting after the sender stops: frames
/// still queued in the device under test.
pub const LINGER: Duration = Duration::from_millis(300);

/// Live counters passed to a [`run_trial`] observer about four times a second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LiveProgress {
    /// Seconds since the start (warm-up included).
    pub elapsed_s: f64,
    /// True once warm-up is over.
    pub measuring: bool,
    /// Frames sent so far.
    pub sent: u64,
    /// Probe frames received so far.
    pub received: u64,
}

/// Runs one trial: the receiver on its own thread, the sender on another,
/// the observer on the calling thread; returns the combined report.
pub fn run_trial(
    spec: &TrafficSpec,
    tx: Box<dyn TxPort>,
    rx: Box<dyn RxPort>,
    observer: &mut dyn FnMut(&LiveProgress),
) -> Result<Report> {
    let mut sender = Sender::new(spec, tx)?;
    let limit = spec.warmup + spec.duration + LINGER + Duration::from_secs(5);
    let progress = std::sync::Arc::new(TxProgress::default());
    let mut receiver = Receiver::new(rx).on_cpu(spec.rx_cpu);
    if !spec.warmup.is_zero() {
        receiver = receiver.after_warmup_of(progress.clone());
    }
    let receiver = receiver.spawn(LINGER, limit);
    let stop = AtomicBool::new(false);
    let start = std::time::Instant::now();
    let tx_stats = std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("strait-gen-tx".into())
            .spawn_scoped(s, || sender.run(&stop, &progress))
            .expect("spawning a thread only fails when the process is out of resources");
        // The observer loop ends with the sender; a sender stuck in the
        // kernel is stopped at the hard limit.
        while !handle.is_finished() {
            std::thread::sleep(Duration::from_millis(50));
            let elapsed = start.elapsed();
            if elapsed > limit {
                stop.store(true, Ordering::Relaxed);
            }
            if elapsed.as_millis() % 250 < 50 {
                observer(&LiveProgress {
                    elapsed_s: elapsed.as_secs_f64(),
                    measuring: progress.measuring.load(Ordering::Relaxed),
                    sent: progress.sent.load(Ordering::Relaxed),
                    received: receiver.progress().received.load(Ordering::Relaxed),
                });
            }
        }
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    // Stop the receiver even if the sender failed.
    let rx_stats = receiver.finish();
    let tx_stats = tx_stats?;
    Ok(Report::new(spec, &tx_stats, &rx_stats?))
}

/// Runs an NDR/PDR search: each trial opens fresh ports with `ports` and
/// runs `spec` at the rate the search proposes.
pub fn search_rates(
    spec: &TrafficSpec,
    cfg: SearchConfig,
    mut ports: impl FnMut() -> Result<(Box<dyn TxPort>, Box<dyn RxPort>)>,
    mut on_trial: impl FnMut(&Report),
) -> Result<SearchResult> {
    RateSearch::new(cfg).run(|pps| {
        let mut trial = spec.clone();
        trial.rate = Rate::Pps(pps);
        let (tx, rx) = ports()?;
        let report = run_trial(&trial, tx, rx, &mut |_| {})?;
        on_trial(&report);
        // The path's loss: frames the receiving socket dropped itself say
        // nothing about the system under test.
        let loss = if report.tx.packets == 0 {
            1.0
        } else {
            (report.lost.max(0) as f64) / report.tx.packets as f64
        };
        Ok((report.tx.pps, loss))
    })
}
