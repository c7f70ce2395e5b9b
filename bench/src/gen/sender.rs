//! Senders: a paced loop over a [`TxPort`], and the ports themselves.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::clock::monotonic_ns;
use super::error::{GenError, Result};
use super::flows::FlowCursor;
use super::pacing::{self, Pacer};
use super::probe::FLAG_WARMUP;
use super::spec::{FlowOrder, Protocol, TrafficSpec, FCS_LEN, WIRE_OVERHEAD};
use super::template::FrameFactory;
use crate::sys::{MsgBatch, PacketDirection, PacketSocket, JUMBO_SLOT, SLOT};

/// What one [`TxPort::send`] call did.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SendOutcome {
    /// New frames written by the fill callback (they now carry sequence
    /// numbers and will be sent, possibly by a later call).
    pub filled: usize,
    /// Frames handed to the kernel by this call (new or held back before).
    pub sent: usize,
    /// Bytes (without FCS) of the frames sent.
    pub bytes: u64,
    /// Frames written but dropped by the port (no room in its ring).
    pub dropped: usize,
}

/// A way of putting frames on an interface.
///
/// A port owns its frame buffers. `send` first retries frames it could not
/// send before; only when none are left over does it offer up to `max` free
/// buffers to `fill`, which writes one complete Ethernet frame (without FCS)
/// and returns its length. Frames the kernel does not take are kept, in
/// order, for the next call, so sequence numbers never skip.
///
/// With each buffer `fill` gets the buffer's [`Holds`] tag: what the
/// buffer is known to still hold from its last use (0: unknown). A port
/// whose buffers keep their bytes between uses (UMEM frames, `sendmmsg`
/// slots) keeps one tag per buffer, so a frame factory writes a template
/// into a buffer once and afterwards only its per-packet fields; a port
/// that changes the bytes after `fill` (sealing) passes a fresh 0.
pub trait TxPort: Send {
    /// Short name for reports (`af_packet`, `udp`, `af_xdp`).
    fn kind(&self) -> &'static str;
    /// Most frames one call can send.
    fn max_batch(&self) -> usize;
    /// Largest frame (without FCS) a buffer holds.
    fn max_frame(&self) -> usize;
    /// Sends held-back frames, then up to `max` new ones.
    fn send(&mut self, max: usize, fill: &mut Fill<'_>) -> Result<SendOutcome>;
    /// Frames written but not yet handed to the kernel (retried next call).
    fn pending(&self) -> usize;
    /// Frames handed to the kernel whose transmission has not completed;
    /// calling `send(0, ..)` moves them along.
    fn in_flight(&self) -> usize {
        0
    }
}

/// What a transmit buffer holds from its last use, set by the frame
/// factory that wrote it ([`FrameFactory::write_over`]); 0 is unknown.
pub type Holds = u64;

/// The callback a [`TxPort`] hands each free buffer: writes one frame and
/// returns its length (0: nothing written, stop).
pub type Fill<'a> = dyn FnMut(&mut [u8], &mut Holds) -> usize + 'a;

/// Frames held in a [`MsgBatch`] and sent with `sendmmsg`.
#[derive(Debug)]
struct BatchQueue {
    batch: MsgBatch,
    /// What each slot holds from its last use.
    holds: Vec<Holds>,
    /// Slots `head..tail` hold frames not yet sent.
    head: usize,
    tail: usize,
}

impl BatchQueue {
    fn new(slots: usize, slot: usize) -> Self {
        Self {
            batch: MsgBatch::new(slots, slot),
            holds: vec![0; slots],
            head: 0,
            tail: 0,
        }
    }

    fn flush(&mut self, fd: i32, iface: &str, out: &mut SendOutcome) -> Result<()> {
        let n = self
            .batch
            .send(fd, self.head..self.tail)
            .map_err(|e| GenError::io("sendmmsg", iface, e))?;
        for i in self.head..self.head + n {
            out.bytes += self.batch.message(i).len() as u64;
        }
        out.sent += n;
        self.head += n;
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
        Ok(())
    }
}

/// AF_PACKET transmit with `PACKET_QDISC_BYPASS`, batched with `sendmmsg`.
#[derive(Debug)]
pub struct AfPacketTx {
    sock: PacketSocket,
    queue: BatchQueue,
}

impl AfPacketTx {
    /// Opens the port on `iface` (in the calling thread's namespace).
    pub fn open(iface: &str, batch: usize, jumbo: bool) -> Result<Self> {
        Ok(Self {
            sock: PacketSocket::open(iface, PacketDirection::Tx)?,
            queue: BatchQueue::new(batch.max(1), if jumbo { JUMBO_SLOT } else { SLOT }),
        })
    }
}

impl TxPort for AfPacketTx {
    fn kind(&self) -> &'static str {
        "af_packet"
    }
    fn max_batch(&self) -> usize {
        self.queue.batch.slots()
    }
    fn max_frame(&self) -> usize {
        self.queue.batch.slot_size()
    }
    fn pending(&self) -> usize {
        self.queue.tail - self.queue.head
    }
    fn send(&mut self, max: usize, fill: &mut Fill<'_>) -> Result<SendOutcome> {
        let mut out = SendOutcome::default();
        let fd = self.sock.as_raw_fd();
        if self.queue.head != self.queue.tail {
            self.queue.flush(fd, self.sock.iface(), &mut out)?;
            if self.queue.head != self.queue.tail {
                return Ok(out);
            }
        }
        let n = max.min(self.queue.batch.slots());
        for i in 0..n {
            let len = fill(self.queue.batch.slot_mut(i), &mut self.queue.holds[i]);
            if len == 0 {
                break;
            }
            self.queue.batch.set_message(i, 0, len);
            self.queue.tail += 1;
        }
        out.filled = self.queue.tail;
        self.queue.flush(fd, self.sock.iface(), &mut out)?;
        Ok(out)
    }
}

/// Ordinary UDP socket transmit with `sendmmsg`: works anywhere, without
/// privileges, but the kernel builds the headers, so only UDP, one source
/// address and one source port (the socket's), and it tops out far below
/// the raw senders. The datagram payload is the generated frame's, so the
/// probe and the frame size on the wire are the same.
#[derive(Debug)]
pub struct UdpTx {
    sock: UdpSocket,
    queue: BatchQueue,
    payload_at: usize,
    dst: IpAddr,
}

impl UdpTx {
    /// Binds a socket to the spec's source address and first source port.
    pub fn open(spec: &TrafficSpec) -> Result<Self> {
        if spec.protocol != Protocol::Udp {
            return Err(GenError::Unsupported {
                what: format!("protocol {}", spec.protocol),
                port: "udp",
            });
        }
        if spec.flows.src_addrs != 1 || spec.flows.src_ports.len() != 1 {
            return Err(GenError::Unsupported {
                what: "several source addresses or ports".into(),
                port: "udp",
            });
        }
        let local = SocketAddr::new(spec.src_ip, spec.flows.src_ports.first);
        let sock =
            UdpSocket::bind(local).map_err(|e| GenError::io("bind", &local.to_string(), e))?;
        let _ = sock.set_nonblocking(true);
        let payload_at = 14 + if spec.src_ip.is_ipv6() { 40 } else { 20 } + 8;
        Ok(Self {
            sock,
            queue: BatchQueue::new(spec.batch, JUMBO_SLOT),
            payload_at,
            dst: spec.dst_ip,
        })
    }
}

impl TxPort for UdpTx {
    fn kind(&self) -> &'static str {
        "udp"
    }
    fn max_batch(&self) -> usize {
        self.queue.batch.slots()
    }
    fn max_frame(&self) -> usize {
        self.queue.batch.slot_size()
    }
    fn pending(&self) -> usize {
        self.queue.tail - self.queue.head
    }
    fn send(&mut self, max: usize, fill: &mut Fill<'_>) -> Result<SendOutcome> {
        let mut out = SendOutcome::default();
        let fd = self.sock.as_raw_fd();
        let name = "udp socket";
        if self.queue.head != self.queue.tail {
            self.queue.flush(fd, name, &mut out)?;
            if self.queue.head != self.queue.tail {
                return Ok(out);
            }
        }
        let n = max.min(self.queue.batch.slots());
        for i in 0..n {
            let slot = self.queue.batch.slot_mut(i);
            let len = fill(slot, &mut self.queue.holds[i]);
            if len <= self.payload_at {
                break;
            }
            // The destination port is the frame's UDP destination port.
            let at = self.payload_at - 6;
            let port = u16::from_be_bytes([slot[at], slot[at + 1]]);
            self.queue
                .batch
                .set_message(i, self.payload_at, len - self.payload_at);
            self.queue
                .batch
                .set_name(i, SocketAddr::new(self.dst, port));
            self.queue.tail += 1;
        }
        out.filled = self.queue.tail;
        self.queue.flush(fd, name, &mut out)?;
        // Report frame bytes, not datagram bytes, like the raw senders.
        out.bytes += (out.sent * self.payload_at) as u64;
        Ok(out)
    }
}

/// Live counters of a running sender, readable from another thread.
#[derive(Debug, Default)]
pub struct TxProgress {
    /// Frames sent so far (warm-up included).
    pub sent: AtomicU64,
    /// Set once warm-up is over.
    pub measuring: AtomicBool,
}

/// What a sender did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TxStats {
    /// Port kind.
    pub port: &'static str,
    /// Frames sent after warm-up.
    pub sent: u64,
    /// Frames sent during warm-up (not part of the results).
    pub warmup_sent: u64,
    /// Bytes sent after warm-up, FCS included (the frame sizes).
    pub bytes: u64,
    /// Bytes on the wire after warm-up: frame sizes plus preamble, SFD and
    /// inter-frame gap.
    pub wire_bytes: u64,
    /// Frames written but never taken by the kernel when the run ended.
    pub unsent: u64,
    /// Measured period: from the end of warm-up to the last frame sent.
    pub elapsed: Duration,
}

impl TxStats {
    /// Adds one send call's frames to the warm-up or measured counters;
    /// the first `warm_pending` frames sent belong to warm-up.
    fn account(&mut self, out: &SendOutcome, warm_pending: &mut usize, measuring: bool) {
        self.unsent += out.dropped as u64;
        if out.sent == 0 {
            return;
        }
        let warm = if measuring {
            (*warm_pending).min(out.sent)
        } else {
            out.sent
        };
        *warm_pending -= warm.min(*warm_pending);
        self.warmup_sent += warm as u64;
        let measured = out.sent - warm;
        if measured == 0 {
            return;
        }
        // Bytes of a mixed call are split by frame count (sizes of held-back
        // warm-up frames are not tracked one by one).
        let bytes = out.bytes * measured as u64 / out.sent as u64 + (measured * FCS_LEN) as u64;
        self.sent += measured as u64;
        self.bytes += bytes;
        self.wire_bytes += bytes + (measured * WIRE_OVERHEAD) as u64;
    }

    /// Packets per second over the measured period.
    pub fn pps(&self) -> f64 {
        rate(self.sent as f64, self.elapsed)
    }
}

pub(crate) fn rate(n: f64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        n / s
    } else {
        0.0
    }
}

/// Generates the traffic of a [`TrafficSpec`] on a [`TxPort`].
pub struct Sender {
    spec: TrafficSpec,
    factory: FrameFactory,
    port: Box<dyn TxPort>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("port", &self.port.kind())
            .field("spec", &self.spec)
            .finish()
    }
}

/// Stop checks consult the clock once per batch; pending frames at the end
/// get this long to drain before they count as unsent.
const DRAIN_LIMIT: Duration = Duration::from_millis(200);

impl Sender {
    /// Builds the frame templates for `spec` and checks they fit the port.
    pub fn new(spec: &TrafficSpec, port: Box<dyn TxPort>) -> Result<Self> {
        let factory = FrameFactory::new(spec)?;
        if factory.max_len() > port.max_frame() {
            return Err(GenError::Spec(format!(
                "frames of {} bytes do not fit the {} port's {}-byte buffers",
                factory.max_len() + FCS_LEN,
                port.kind(),
                port.max_frame()
            )));
        }
        Ok(Self {
            spec: spec.clone(),
            factory,
            port,
        })
    }

    /// The spec this sender generates.
    pub fn spec(&self) -> &TrafficSpec {
        &self.spec
    }

    /// Sends until the measured duration passes, the packet count is
    /// reached, or `stop` is set, whichever comes first.
    pub fn run(&mut self, stop: &AtomicBool, progress: &TxProgress) -> Result<TxStats> {
        pacing::tighten_timer_slack();
        let spec = &self.spec;
        let start = monotonic_ns();
        let warmup_end = start + spec.warmup.as_nanos() as u64;
        let end = warmup_end + spec.duration.as_nanos() as u64;
        let limit = spec.count.unwrap_or(u64::MAX);
        let mut pacer = Pacer::new(
            spec.rate,
            &spec.sizes,
            spec.batch.min(self.port.max_batch()),
            start,
        );
        let seed = start ^ (u64::from(spec.stream) << 56);
        let mut flows = FlowCursor::new(
            spec.flows,
            if spec.flows.order == FlowOrder::Random {
                seed
            } else {
                0
            },
        );
        let mut stats = TxStats {
            port: self.port.kind(),
            ..TxStats::default()
        };
        let mut seq: u64 = 0;
        // Frames written (sequence numbers used) during measurement.
        let mut filled_measured: u64 = 0;
        let mut measuring = spec.warmup.is_zero();
        progress.measuring.store(measuring, Ordering::Relaxed);
        let mut last_tx = warmup_end;
        let mut warm_pending = 0usize;
        let batch = spec.batch.min(self.port.max_batch());
        let factory = &mut self.factory;
        let mut now = start;
        loop {
            if !measuring && now >= warmup_end {
                measuring = true;
                // Frames written during warm-up but still held by the port
                // are warm-up frames whenever they leave.
                warm_pending = self.port.pending();
                progress.measuring.store(true, Ordering::Relaxed);
            }
            if now >= end || filled_measured >= limit || stop.load(Ordering::Relaxed) {
                break;
            }
            let want = if measuring {
                batch.min((limit - filled_measured) as usize)
            } else {
                batch
            };
            let allowed = pacer.available(now, want);
            if allowed == 0 && self.port.pending() == 0 {
                pacing::wait(pacer.wait_ns(now));
                now = monotonic_ns();
                continue;
            }
            let flags = if measuring { 0 } else { FLAG_WARMUP };
            let ts = monotonic_ns();
            let mut fill = |buf: &mut [u8], holds: &mut Holds| {
                let n = factory.write_over(buf, holds, flows.next_flow(), seq, ts, flags);
                seq += 1;
                n
            };
            let out = self.port.send(allowed, &mut fill)?;
            pacer.consume(out.filled);
            if measuring {
                filled_measured += out.filled as u64;
            }
            stats.account(&out, &mut warm_pending, measuring);
            progress.sent.fetch_add(out.sent as u64, Ordering::Relaxed);
            now = monotonic_ns();
            if out.sent > 0 {
                last_tx = now;
            }
        }
        // Drain what the kernel has not taken yet, bounded in time.
        let drain_until = monotonic_ns() + DRAIN_LIMIT.as_nanos() as u64;
        while (self.port.pending() > 0 || self.port.in_flight() > 0) && monotonic_ns() < drain_until
        {
            let out = self.port.send(0, &mut |_, _| 0)?;
            stats.account(&out, &mut warm_pending, measuring);
            progress.sent.fetch_add(out.sent as u64, Ordering::Relaxed);
            if out.sent > 0 {
                last_tx = monotonic_ns();
            } else {
                std::thread::yield_now();
            }
        }
        stats.unsent += self.port.pending() as u64;
        stats.elapsed = Duration::from_nanos(last_tx.saturating_sub(warmup_end));
        Ok(stats)
    }
}
