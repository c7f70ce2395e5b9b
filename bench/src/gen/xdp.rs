//! AF_XDP ports over `strait-xdp`: the fastest sender on veth (copy mode)
//! and on real NICs (zero-copy), and a receiver that keeps up with it.
//!
//! Each port opens its own [`PortSet`] with one socket on queue 0 of the
//! interface. Opening attaches the XDP redirect program to the interface,
//! which takes every received frame away from the kernel; ARP (and, on a
//! TX-only port, IPv6 so neighbour discovery keeps working) is passed to
//! the kernel so the host still answers for its addresses.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use strait_xdp::{
    BindMode, FrameBatch, PortId, PortSet, PortSetConfig, PortSpec, UmemConfig, XdpMode,
    DEFAULT_HEADROOM,
};

use super::error::{GenError, Result};
use super::receiver::{RxPort, SinkDrops};
use super::sender::{Fill, Holds, SendOutcome, TxPort};

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;

fn open_set(iface: &str, max_frame: usize, pass: Vec<u16>, mode: XdpMode) -> Result<PortSet> {
    let spec = PortSpec::named(iface, 0).map_err(|e| xdp_err(iface, e))?;
    // 2048-byte frames hold 1792-byte packets; larger ones need 4096.
    let frame_size = if max_frame + DEFAULT_HEADROOM as usize <= 2048 {
        2048
    } else {
        4096
    };
    let config = PortSetConfig {
        umem: UmemConfig {
            frame_count: if frame_size == 2048 { 4096 } else { 2048 },
            frame_size,
            headroom: DEFAULT_HEADROOM,
        },
        xdp_mode: mode,
        pass_ethertypes: pass,
        ..PortSetConfig::default()
    };
    if max_frame + DEFAULT_HEADROOM as usize > frame_size as usize {
        return Err(GenError::Unsupported {
            what: format!("{max_frame}-byte frames"),
            port: "af_xdp",
        });
    }
    PortSet::open(&config, &[spec]).map_err(|e| xdp_err(iface, e))
}

fn xdp_err(iface: &str, e: strait_xdp::Error) -> GenError {
    GenError::io("AF_XDP", iface, std::io::Error::other(e.to_string()))
}

/// AF_XDP transmit: frames are written straight into UMEM frames.
///
/// Frames that do not fit the TX ring are dropped at the generator and
/// reported as `unsent`; they never reach the wire.
pub struct XdpTx {
    ports: PortSet,
    batch: FrameBatch,
    max_frame: usize,
    in_flight: usize,
    /// What each UMEM frame holds from its last transmit. The port never
    /// receives, so a frame comes back from the completion ring with the
    /// bytes it was sent with.
    holds: Vec<Holds>,
    frame_size: u64,
}

impl std::fmt::Debug for XdpTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpTx")
            .field("mode", &self.ports.bind_mode())
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl XdpTx {
    /// Opens the port on `iface` (in the calling thread's namespace) for
    /// frames up to `max_frame` bytes (without FCS).
    pub fn open(iface: &str, max_frame: usize, mode: XdpMode) -> Result<Self> {
        let ports = open_set(iface, max_frame, vec![ETHERTYPE_ARP, ETHERTYPE_IPV6], mode)?;
        let umem = ports.umem().config();
        let (frames, frame_size) = (umem.frame_count as usize, u64::from(umem.frame_size));
        Ok(Self {
            ports,
            batch: FrameBatch::new(),
            max_frame,
            in_flight: 0,
            holds: vec![0; frames],
            frame_size,
        })
    }

    /// True if the socket runs in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.ports.bind_mode() == BindMode::ZeroCopy
    }
}

impl TxPort for XdpTx {
    fn kind(&self) -> &'static str {
        "af_xdp"
    }
    fn max_batch(&self) -> usize {
        strait_xdp::BATCH_CAPACITY
    }
    fn max_frame(&self) -> usize {
        self.max_frame
    }
    fn pending(&self) -> usize {
        0
    }
    fn in_flight(&self) -> usize {
        self.in_flight
    }
    fn send(&mut self, max: usize, fill: &mut Fill<'_>) -> Result<SendOutcome> {
        let mut out = SendOutcome::default();
        self.in_flight = self.in_flight.saturating_sub(self.ports.poll_completions());
        let n = max.min(strait_xdp::BATCH_CAPACITY);
        for _ in 0..n {
            let Some(mut desc) = self.ports.alloc_frame() else {
                break;
            };
            let umem = self.ports.umem();
            if umem.set_len(&mut desc, self.max_frame).is_err() {
                self.ports.drop_frame(desc);
                break;
            }
            let mut scratch = 0;
            let holds = usize::try_from(desc.addr() / self.frame_size)
                .ok()
                .and_then(|i| self.holds.get_mut(i))
                .unwrap_or(&mut scratch);
            let len = fill(self.ports.frame_mut(&desc), holds);
            if len == 0 || self.ports.umem().set_len(&mut desc, len).is_err() {
                self.ports.drop_frame(desc);
                break;
            }
            out.filled += 1;
            out.bytes += len as u64;
            if let Err(desc) = self.batch.push(desc) {
                self.ports.drop_frame(desc);
            }
        }
        if out.filled == 0 {
            return Ok(out);
        }
        let queued = self.ports.transmit(PortId(0), &mut self.batch);
        // Bytes of dropped frames are not known individually: scale.
        out.bytes = out.bytes * queued as u64 / out.filled as u64;
        out.sent = queued;
        out.dropped = out.filled - queued;
        self.in_flight += queued;
        Ok(out)
    }
}

/// AF_XDP receive, waiting in `poll(2)` on the socket when idle so it does
/// not take a whole CPU from the device under test on a small host.
pub struct XdpRx {
    ports: PortSet,
    batch: FrameBatch,
}

impl std::fmt::Debug for XdpRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpRx")
            .field("mode", &self.ports.bind_mode())
            .finish()
    }
}

impl XdpRx {
    /// Opens the port on `iface` (in the calling thread's namespace).
    pub fn open(iface: &str, mode: XdpMode) -> Result<Self> {
        Ok(Self {
            ports: open_set(iface, 1792, vec![ETHERTYPE_ARP], mode)?,
            batch: FrameBatch::new(),
        })
    }
}

impl RxPort for XdpRx {
    fn kind(&self) -> &'static str {
        "af_xdp"
    }
    fn receive(&mut self, timeout: Duration, frame: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.ports.receive(&mut self.batch);
            if n > 0 {
                for desc in self.batch.drain() {
                    frame(self.ports.frame(&desc));
                    self.ports.drop_frame(desc);
                }
                return Ok(n);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(0);
            }
            // Wait in poll(2) on the socket: woken when frames land in its
            // RX ring, so a frame's receive timestamp is taken when it
            // arrives, not at the end of a sleep (a 20 µs sleep lasted
            // about 70 with the default timer slack, and every frame that
            // arrived meanwhile was charged the difference as latency).
            let left = deadline - now;
            let ms = i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX);
            if let Some(fd) = self.ports.fds().next() {
                crate::sys::poll_in(fd.as_raw_fd(), ms)
                    .map_err(|e| GenError::io("poll", "af_xdp receiver", e))?;
            } else {
                std::thread::sleep(left);
            }
        }
    }

    fn sink_drops(&mut self) -> Option<SinkDrops> {
        // The socket is opened per trial, so its counters start with it.
        let k = self.ports.kernel_statistics(PortId(0)).ok()?;
        Some(SinkDrops::new(
            &[
                ("rx_dropped", k.rx_dropped),
                ("rx_ring_full", k.rx_ring_full),
            ],
            Some(k.rx_fill_ring_empty_descs),
        ))
    }
}
