//! The receiver: counts frames carrying the probe, per stream, and measures
//! loss, reordering, duplicates and one-way latency.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::clock::monotonic_ns;
use super::error::{GenError, Result};
use super::probe::latency_ns;
use super::template::locate_probe;
use crate::sys::{MsgBatch, PacketDirection, PacketSocket, JUMBO_SLOT};

/// Sequence numbers remembered behind the highest one seen. A packet that
/// arrives more than this far behind cannot be told apart from a duplicate
/// and is counted as `late`.
pub const REORDER_WINDOW: u64 = 1 << 16;
const WORDS: usize = (REORDER_WINDOW / 64) as usize;

/// Per-stream sequence accounting with a sliding bitmap of the last
/// [`REORDER_WINDOW`] sequence numbers.
///
/// * a sequence number above the highest seen advances the window;
/// * one below it, not yet seen, is *reordered* (it was overtaken);
/// * one already seen is a *duplicate*;
/// * one older than the window is *late* (neither can be decided).
///
/// Unique packets are `received − duplicates`; loss is computed against
/// the sender's count, since packets missing at the end of a run leave no
/// gap the receiver could see.
#[derive(Clone, Debug)]
pub struct SequenceTracker {
    bits: Box<[u64; WORDS]>,
    /// Highest sequence seen + 1 (0: nothing yet).
    next: u64,
    /// Counters.
    pub counts: SequenceCounts,
}

/// How one arrival was classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Above every sequence number seen so far (gaps allowed).
    InOrder,
    /// Below the highest seen, first time.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Too old for the window.
    Late,
}

/// Counters of a [`SequenceTracker`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SequenceCounts {
    /// Frames with the probe.
    pub received: u64,
    /// Frames whose sequence number had been seen before.
    pub duplicates: u64,
    /// Frames that arrived after a higher sequence number.
    pub reordered: u64,
    /// Frames older than the reorder window.
    pub late: u64,
    /// Highest sequence number seen + 1.
    pub next_expected: u64,
}

impl Default for SequenceTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl SequenceTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self {
            bits: Box::new([0; WORDS]),
            next: 0,
            counts: SequenceCounts::default(),
        }
    }

    #[inline]
    fn bit(seq: u64) -> (usize, u64) {
        (((seq / 64) % WORDS as u64) as usize, 1 << (seq % 64))
    }

    /// Records one arrival and says how it was classified.
    #[inline]
    pub fn record(&mut self, seq: u64) -> Arrival {
        self.counts.received += 1;
        if seq >= self.next {
            // Clear the slots the window slides over: they now stand for
            // sequence numbers not seen yet.
            let gap = seq - self.next;
            if gap >= REORDER_WINDOW {
                self.bits.fill(0);
            } else {
                let mut s = self.next;
                while s < seq && s % 64 != 0 {
                    let (w, b) = Self::bit(s);
                    self.bits[w] &= !b;
                    s += 1;
                }
                while s + 64 <= seq {
                    self.bits[Self::bit(s).0] = 0;
                    s += 64;
                }
                while s < seq {
                    let (w, b) = Self::bit(s);
                    self.bits[w] &= !b;
                    s += 1;
                }
            }
            let (w, b) = Self::bit(seq);
            self.bits[w] |= b;
            self.next = seq + 1;
            self.counts.next_expected = self.next;
            return Arrival::InOrder;
        }
        if self.next - seq > REORDER_WINDOW {
            self.counts.late += 1;
            return Arrival::Late;
        }
        let (w, b) = Self::bit(seq);
        if self.bits[w] & b != 0 {
            self.counts.duplicates += 1;
            Arrival::Duplicate
        } else {
            self.bits[w] |= b;
            self.counts.reordered += 1;
            Arrival::Reordered
        }
    }
}

/// Frames the receiving socket itself dropped before the receiver read
/// them: the sink's loss, not the path's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SinkDrops {
    /// Every dropped frame, the sum of `kinds`.
    pub total: u64,
    /// Drops by the kernel's name for them: `rx_dropped` and
    /// `rx_ring_full` (AF_XDP), `tp_drops` (AF_PACKET).
    pub kinds: BTreeMap<&'static str, u64>,
    /// AF_XDP: times a frame arrived to an empty fill ring. Not a drop
    /// count (in copy mode those drops are in `rx_dropped`; in zero-copy
    /// mode the driver drops them unseen by the socket), a sign the
    /// receiver did not return frames fast enough. `null` for AF_PACKET.
    pub fill_ring_empty: Option<u64>,
}

impl SinkDrops {
    /// Counters from `kinds`.
    pub fn new(kinds: &[(&'static str, u64)], fill_ring_empty: Option<u64>) -> Self {
        Self {
            total: kinds.iter().map(|k| k.1).sum(),
            kinds: kinds.iter().copied().collect(),
            fill_ring_empty,
        }
    }

    /// What happened between `earlier` and `self` (both counted since the
    /// socket was opened).
    pub fn since(&self, earlier: &SinkDrops) -> SinkDrops {
        let kinds: BTreeMap<&'static str, u64> = self
            .kinds
            .iter()
            .map(|(&k, &v)| {
                (
                    k,
                    v.saturating_sub(earlier.kinds.get(k).copied().unwrap_or(0)),
                )
            })
            .collect();
        SinkDrops {
            total: kinds.values().sum(),
            kinds,
            fill_ring_empty: self
                .fill_ring_empty
                .map(|n| n.saturating_sub(earlier.fill_ring_empty.unwrap_or(0))),
        }
    }
}

/// A way of receiving frames from an interface.
pub trait RxPort: Send {
    /// Short name for reports.
    fn kind(&self) -> &'static str;
    /// Waits up to `timeout` for frames and passes each to `frame`;
    /// returns how many there were.
    fn receive(&mut self, timeout: Duration, frame: &mut dyn FnMut(&[u8])) -> Result<usize>;
    /// The socket's own drop counters since it was opened; `None` if the
    /// kernel does not keep them for this kind of port.
    fn sink_drops(&mut self) -> Option<SinkDrops> {
        None
    }
}

/// AF_PACKET receive (every EtherType, outgoing frames ignored) with `recvmmsg`.
#[derive(Debug)]
pub struct AfPacketRx {
    sock: PacketSocket,
    batch: MsgBatch,
    /// `tp_drops` so far: the kernel resets the counter on every read.
    drops: u64,
}

impl AfPacketRx {
    /// Opens the port on `iface` (in the calling thread's namespace).
    pub fn open(iface: &str) -> Result<Self> {
        let sock = PacketSocket::open(iface, PacketDirection::Rx)?;
        // Start the drop count at the socket's opening: between socket(2)
        // and bind(2) it may have counted frames of other interfaces.
        sock.take_statistics()
            .map_err(|e| GenError::io("PACKET_STATISTICS", iface, e))?;
        Ok(Self {
            sock,
            batch: MsgBatch::new(64, JUMBO_SLOT),
            drops: 0,
        })
    }

    /// Shrinks (or grows) the socket's receive buffer, e.g. to see how the
    /// report tells a sink that cannot keep up from a lossy path.
    pub fn set_receive_buffer(&mut self, bytes: i32) -> Result<()> {
        self.sock
            .set_receive_buffer(bytes)
            .map_err(|e| GenError::io("SO_RCVBUFFORCE", self.sock.iface(), e))
    }
}

impl RxPort for AfPacketRx {
    fn kind(&self) -> &'static str {
        "af_packet"
    }

    fn receive(&mut self, timeout: Duration, frame: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let fd = self.sock.as_raw_fd();
        let mut n = self
            .batch
            .receive(fd)
            .map_err(|e| GenError::io("recvmmsg", self.sock.iface(), e))?;
        if n == 0 {
            let ms = timeout.as_millis().min(1000) as i32;
            if !self
                .sock
                .poll_readable(ms)
                .map_err(|e| GenError::io("poll", self.sock.iface(), e))?
            {
                return Ok(0);
            }
            n = self
                .batch
                .receive(fd)
                .map_err(|e| GenError::io("recvmmsg", self.sock.iface(), e))?;
        }
        for i in 0..n {
            frame(self.batch.message(i));
        }
        Ok(n)
    }

    fn sink_drops(&mut self) -> Option<SinkDrops> {
        let (_, drops) = self.sock.take_statistics().ok()?;
        self.drops += drops;
        Some(SinkDrops::new(&[("tp_drops", self.drops)], None))
    }
}

/// Most streams one receiver tracks (stream ids are one byte).
const STREAMS: usize = 256;

/// What a receiver saw, per stream merged.
#[derive(Clone, Debug)]
pub struct RxStats {
    /// Port kind.
    pub port: &'static str,
    /// Measured (non-warm-up) frames with the probe, duplicates included.
    pub received: u64,
    /// Warm-up frames with the probe (not part of the results).
    pub warmup_received: u64,
    /// Duplicates among the measured frames.
    pub duplicates: u64,
    /// Reordered among the measured frames.
    pub reordered: u64,
    /// Frames too old to classify.
    pub late: u64,
    /// Bytes of measured frames, FCS not included (as delivered).
    pub bytes: u64,
    /// Frames seen without the probe (other traffic on the interface).
    pub foreign: u64,
    /// Frames the receiving socket dropped during the measurement;
    /// `None` if the port kind keeps no such counters.
    pub sink_drops: Option<SinkDrops>,
    /// One-way latency of measured frames, in ns.
    pub latency: Histogram<u64>,
    /// First and last measured arrival (monotonic ns; 0 if none).
    pub first_ns: u64,
    /// Last measured arrival.
    pub last_ns: u64,
}

/// Live counters of a running receiver.
#[derive(Debug, Default)]
pub struct RxProgress {
    /// Frames with the probe so far (warm-up included).
    pub received: AtomicU64,
}

/// Counts probe frames from an [`RxPort`] on its own thread.
pub struct Receiver {
    port: Box<dyn RxPort>,
    /// The sender's live counters: when its warm-up ends, the sink's drop
    /// counters start again.
    sender: Option<Arc<super::sender::TxProgress>>,
    trackers: Vec<Option<SequenceTracker>>,
    stats: RxStats,
    /// CPU the receiving thread pins itself to.
    cpu: Option<usize>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("port", &self.port.kind())
            .finish()
    }
}

/// Longest one-way latency the histogram records (larger values saturate).
const MAX_LATENCY_NS: u64 = 60_000_000_000;

impl Receiver {
    /// A receiver over `port`.
    pub fn new(port: Box<dyn RxPort>) -> Self {
        let latency = Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
            .expect("constant histogram bounds are valid");
        Self {
            stats: RxStats {
                port: port.kind(),
                received: 0,
                warmup_received: 0,
                duplicates: 0,
                reordered: 0,
                late: 0,
                bytes: 0,
                foreign: 0,
                sink_drops: None,
                latency,
                first_ns: 0,
                last_ns: 0,
            },
            port,
            sender: None,
            trackers: vec![None; STREAMS],
            cpu: None,
        }
    }

    /// Counts the sink's drops from the end of `sender`'s warm-up rather
    /// than from the start.
    pub fn after_warmup_of(mut self, sender: Arc<super::sender::TxProgress>) -> Self {
        self.sender = Some(sender);
        self
    }

    /// Handles one frame received at `now_ns`.
    pub fn on_frame(&mut self, frame: &[u8], now_ns: u64) {
        let Some(probe) = locate_probe(frame) else {
            self.stats.foreign += 1;
            return;
        };
        // Warm-up frames still advance the sequence window, so the first
        // measured frames are not mistaken for reordered ones.
        let tracker =
            self.trackers[usize::from(probe.stream())].get_or_insert_with(SequenceTracker::new);
        let arrival = tracker.record(probe.sequence());
        if probe.is_warmup() {
            self.stats.warmup_received += 1;
            return;
        }
        self.stats.received += 1;
        match arrival {
            Arrival::InOrder => {}
            Arrival::Reordered => self.stats.reordered += 1,
            Arrival::Duplicate => self.stats.duplicates += 1,
            Arrival::Late => self.stats.late += 1,
        }
        self.stats.bytes += frame.len() as u64;
        if self.stats.first_ns == 0 {
            self.stats.first_ns = now_ns;
        }
        self.stats.last_ns = now_ns;
        let lat = latency_ns(probe.timestamp(), now_ns).clamp(1, MAX_LATENCY_NS);
        self.stats.latency.saturating_record(lat);
    }

    /// Receives until `stop` is set, then for `linger` more, bounded by
    /// `limit` overall.
    pub fn run(
        mut self,
        stop: &AtomicBool,
        linger: Duration,
        limit: Duration,
        progress: &RxProgress,
    ) -> Result<RxStats> {
        let start = monotonic_ns();
        let hard_end = start + limit.as_nanos() as u64;
        let mut stop_at: Option<u64> = None;
        let sender = self.sender.take();
        let mut port = std::mem::replace(&mut self.port, Box::new(NullRx));
        // The socket is counted from here and again when the sender's
        // warm-up ends, so drops of warm-up frames are not charged to the
        // measurement. The boundary is as exact as one turn of this loop.
        let mut baseline = port.sink_drops();
        let mut rebased = false;
        loop {
            let now = monotonic_ns();
            if stop_at.is_none() && stop.load(Ordering::Relaxed) {
                stop_at = Some(now + linger.as_nanos() as u64);
            }
            if now >= hard_end || stop_at.is_some_and(|t| now >= t) {
                break;
            }
            let before = self.stats.received + self.stats.warmup_received;
            // One clock read per batch: frames of a batch arrived together.
            let mut at = 0u64;
            let mut handle = |f: &[u8]| {
                if at == 0 {
                    at = monotonic_ns();
                }
                self.on_frame(f, at);
            };
            port.receive(Duration::from_millis(10), &mut handle)?;
            let after = self.stats.received + self.stats.warmup_received;
            progress
                .received
                .fetch_add(after - before, Ordering::Relaxed);
            if !rebased {
                if let Some(sender) = &sender {
                    if sender.measuring.load(Ordering::Relaxed) {
                        rebased = true;
                        baseline = port.sink_drops();
                    }
                }
            }
        }
        self.stats.sink_drops = match (port.sink_drops(), &baseline) {
            (Some(end), Some(start)) => Some(end.since(start)),
            _ => None,
        };
        self.port = port;
        Ok(self.finish())
    }

    /// The final statistics.
    pub fn finish(self) -> RxStats {
        self.stats
    }

    /// Runs the receiver on its own thread.
    /// Pins the receiving thread to `cpu` once spawned (`None`: it keeps
    /// the spawning thread's affinity).
    pub fn on_cpu(mut self, cpu: Option<usize>) -> Self {
        self.cpu = cpu;
        self
    }

    pub fn spawn(self, linger: Duration, limit: Duration) -> ReceiverHandle {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(RxProgress::default());
        let (s, p) = (stop.clone(), progress.clone());
        let thread = std::thread::Builder::new()
            .name("strait-gen-rx".into())
            .spawn(move || {
                if let Some(cpu) = self.cpu {
                    crate::sys::set_affinity(Some(cpu))
                        .map_err(|e| GenError::io("sched_setaffinity", "receiver", e))?;
                }
                self.run(&s, linger, limit, &p)
            })
            .expect("spawning a thread only fails when the process is out of resources");
        ReceiverHandle {
            stop,
            progress,
            thread,
        }
    }
}

/// A receiver running on its own thread.
#[derive(Debug)]
pub struct ReceiverHandle {
    stop: Arc<AtomicBool>,
    progress: Arc<RxProgress>,
    thread: JoinHandle<Result<RxStats>>,
}

impl ReceiverHandle {
    /// Live counters.
    pub fn progress(&self) -> &RxProgress {
        &self.progress
    }

    /// Asks the receiver to stop after its linger time and waits for it.
    pub fn finish(self) -> Result<RxStats> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// Placeholder while the port is borrowed out of the receiver.
struct NullRx;

impl RxPort for NullRx {
    fn kind(&self) -> &'static str {
        "none"
    }
    fn receive(&mut self, _: Duration, _: &mut dyn FnMut(&[u8])) -> Result<usize> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> SequenceCounts {
        let mut t = SequenceTracker::new();
        for &s in seqs {
            t.record(s);
        }
        t.counts
    }

    #[test]
    fn in_order_stream_has_nothing_to_report() {
        let seqs: Vec<u64> = (0..200_000).collect();
        let c = run(&seqs);
        assert_eq!(
            (c.received, c.duplicates, c.reordered, c.late),
            (200_000, 0, 0, 0)
        );
        assert_eq!(c.next_expected, 200_000);
    }

    #[test]
    fn gaps_duplicates_and_reorders_are_told_apart() {
        // 0 1 3 2 2 5 1 7: 3 overtakes 2 (reordered), second 2 and 1 dups,
        // 4 and 6 never arrive (gaps, not counted here).
        let c = run(&[0, 1, 3, 2, 2, 5, 1, 7]);
        assert_eq!(c.received, 8);
        assert_eq!(c.reordered, 1);
        assert_eq!(c.duplicates, 2);
        assert_eq!(c.late, 0);
        assert_eq!(c.next_expected, 8);
    }

    #[test]
    fn window_slides_and_clears_stale_bits() {
        let w = REORDER_WINDOW;
        // Seq 5 seen, then the window jumps far past it; a new arrival of
        // sequence 5 + w (same bitmap slot) must not be a duplicate.
        let c = run(&[5, 10, 3 * w, 5 + 2 * w + 1, 5 + 2 * w + 1]);
        assert_eq!(c.reordered, 1, "{c:?}");
        assert_eq!(c.duplicates, 1);
        // Gaps of every length up to the window keep the bitmap exact.
        let mut t = SequenceTracker::new();
        let mut s = 0;
        for gap in [1u64, 2, 63, 64, 65, 127, 128, 1000, w - 1, w, w + 1] {
            s += gap;
            t.record(s);
            t.record(s - 1); // the one just skipped: reordered once
            t.record(s - 1); // and now a duplicate
        }
        assert_eq!(t.counts.reordered, 11);
        assert_eq!(t.counts.duplicates, 11);
        t.record(s - w - 1);
        assert_eq!(t.counts.late, 1);
    }

    #[test]
    fn receiver_counts_probes_and_splits_warmup() {
        use crate::gen::flows::FlowKey;
        use crate::gen::spec::TrafficSpec;
        use crate::gen::template::FrameFactory;
        use strait_wire::EthernetAddress;
        let spec = TrafficSpec::new(
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            EthernetAddress([2, 0, 0, 0, 0, 2]),
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
        );
        let mut f = FrameFactory::new(&spec).unwrap();
        let mut rx = Receiver::new(Box::new(NullRx));
        let mut buf = [0u8; 128];
        for seq in 0..10u64 {
            let flags = if seq < 3 {
                crate::gen::probe::FLAG_WARMUP
            } else {
                0
            };
            let n = f.write(&mut buf, FlowKey::default(), seq, 1_000 + seq, flags);
            rx.on_frame(&buf[..n], 1_000 + seq + 500);
        }
        rx.on_frame(&[0u8; 60], 0);
        let s = rx.finish();
        assert_eq!((s.received, s.warmup_received, s.foreign), (7, 3, 1));
        assert_eq!(s.latency.len(), 7);
        assert_eq!(s.latency.max(), s.latency.highest_equivalent(500));
        assert_eq!(s.reordered + s.duplicates, 0);
    }
}
