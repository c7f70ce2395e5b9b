//! The per-worker set of AF_XDP ports sharing one UMEM.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::sync::Arc;

use crate::socket::{BindOutcome, XdpSocket};
use crate::sys;
use crate::{
    BindMode, BindPolicy, Error, FrameBatch, FrameDesc, PortId, RingSizes, Umem, UmemConfig,
    XdpMode, XdpProgram,
};

/// Completions reclaimed per port per [`PortSet::poll_completions`] call:
/// bounded, because copy-mode completions can stall when skbs are freed on
/// the other CPU and the worker must not spin on them.
const COMPLETION_BUDGET: u32 = 512;

/// Where a port's XDP program comes from.
#[derive(Debug, Clone, Default)]
pub enum ProgramSource {
    /// The set attaches its own program to the interface (one per
    /// interface, shared by the set's ports on it) and detaches it on drop.
    #[default]
    Attach,
    /// A program already attached to the interface, shared with the
    /// workers serving its other RX queues.
    Shared(Arc<XdpProgram>),
}

/// One (interface, RX queue) to serve.
#[derive(Debug, Clone)]
pub struct PortSpec {
    /// Interface index in the namespace the set is opened in.
    pub ifindex: u32,
    /// RX queue (the XSKMAP key).
    pub queue: u32,
    /// Where the XDP program comes from.
    pub program: ProgramSource,
}

impl PortSpec {
    /// Queue `queue` of interface `ifindex`, with its own program.
    pub fn new(ifindex: u32, queue: u32) -> Self {
        PortSpec {
            ifindex,
            queue,
            program: ProgramSource::Attach,
        }
    }

    /// Queue `queue` of the interface named `name` in the calling thread's
    /// network namespace.
    pub fn named(name: &str, queue: u32) -> Result<Self, Error> {
        let cname = CString::new(name).map_err(|_| Error::NoSuchInterface(name.to_owned()))?;
        let ifindex =
            sys::if_nametoindex(&cname).ok_or_else(|| Error::NoSuchInterface(name.to_owned()))?;
        Ok(Self::new(ifindex, queue))
    }

    /// Uses an already attached program.
    pub fn with_program(mut self, program: Arc<XdpProgram>) -> Self {
        self.program = ProgramSource::Shared(program);
        self
    }
}

/// Settings of a [`PortSet`].
#[derive(Debug, Clone)]
pub struct PortSetConfig {
    /// Frame memory.
    pub umem: UmemConfig,
    /// Ring sizes of every socket.
    pub rings: RingSizes,
    /// Zero-copy or copy.
    pub bind: BindPolicy,
    /// Where programs this set attaches run.
    pub xdp_mode: XdpMode,
    /// EtherTypes the programs this set attaches pass to the kernel stack
    /// instead of redirecting (e.g. `0x0806` for ARP). Empty: redirect all.
    pub pass_ethertypes: Vec<u16>,
    /// Most frames taken from one port's RX ring per `receive` call.
    pub rx_batch: u32,
}

impl Default for PortSetConfig {
    fn default() -> Self {
        PortSetConfig {
            umem: UmemConfig::default(),
            rings: RingSizes::default(),
            bind: BindPolicy::Auto,
            xdp_mode: XdpMode::Native,
            pass_ethertypes: Vec::new(),
            rx_batch: 64,
        }
    }
}

/// Per-port counters, plain integers owned by the worker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames put on the TX ring.
    pub tx_packets: u64,
    /// Bytes put on the TX ring.
    pub tx_bytes: u64,
    /// Frames whose transmission completed (returned to the pool).
    pub tx_completed: u64,
    /// `receive` found this port's RX ring empty.
    pub rx_empty_polls: u64,
    /// The fill ring had room but the pool had too few free frames.
    pub fill_shortage: u64,
    /// Frames dropped because the TX ring was full.
    pub tx_ring_full: u64,
    /// TX wakeups (`sendto`) issued.
    pub tx_kicks: u64,
    /// TX wakeups the kernel refused with an unexpected error.
    pub tx_kick_errors: u64,
    /// RX wakeups (`recvfrom`) issued because the fill ring asked.
    pub rx_wakeups: u64,
    /// RX descriptors pointing outside one UMEM frame (kernel bug; the
    /// frame is lost).
    pub rx_invalid_descs: u64,
}

/// The kernel's own counters for a socket (`XDP_STATISTICS`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelStatistics {
    /// Dropped for reasons other than an invalid descriptor.
    pub rx_dropped: u64,
    /// Invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

/// How the set was bound, for the daemon's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindReport {
    /// The mode every socket of the set uses.
    pub mode: BindMode,
    /// Set when zero-copy was tried and refused: the interface and error.
    pub zero_copy_refused: Option<(u32, String)>,
    /// Where the programs attached by this set run.
    pub xdp_mode: XdpMode,
    /// `setrlimit(RLIMIT_MEMLOCK, infinity)` succeeded.
    pub memlock_raised: bool,
    /// `XDP_MAX_TX_SKB_BUDGET` was accepted on every socket.
    pub tx_budget_raised: bool,
    /// `EBUSY` bind retries, summed over the sockets.
    pub ebusy_retries: u32,
    /// (ifindex, queue) of each port, by [`PortId`].
    pub ports: Vec<(u32, u32)>,
    /// UMEM geometry.
    pub umem: UmemConfig,
}

impl fmt::Display for BindReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AF_XDP: {} port(s) [", self.ports.len())?;
        for (i, (ifindex, queue)) in self.ports.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}ifindex {ifindex} queue {queue}")?;
        }
        let mode = match self.mode {
            BindMode::ZeroCopy => "zero-copy",
            BindMode::Copy => "copy",
        };
        write!(f, "] bound in {mode} mode")?;
        if let Some((ifindex, err)) = &self.zero_copy_refused {
            write!(f, " (zero-copy refused on ifindex {ifindex}: {err})")?;
        }
        write!(
            f,
            ", XDP {} mode, UMEM {} x {} B (headroom {}), memlock raised: {}, TX skb budget 256: {}, EBUSY retries: {}",
            self.xdp_mode,
            self.umem.frame_count,
            self.umem.frame_size,
            self.umem.headroom,
            if self.memlock_raised { "yes" } else { "no" },
            if self.tx_budget_raised { "yes" } else { "no (older kernel, default 32)" },
            self.ebusy_retries
        )
    }
}

#[derive(Debug)]
struct Port {
    // Drop order: socket (rings, then fd) before the program reference, so
    // the XSKMAP entry goes away with the socket and the link last.
    socket: XdpSocket,
    program: Arc<XdpProgram>,
    ifindex: u32,
    queue: u32,
    counters: PortCounters,
}

impl Drop for Port {
    fn drop(&mut self) {
        // Stop steering before the socket closes; closing would remove the
        // entry too, this just makes the order explicit for shared programs.
        self.program.remove_socket(self.queue);
    }
}

/// The AF_XDP ports one worker serves, their shared UMEM and free pool.
///
/// `Send` but not `Sync`: one worker thread owns it.
///
/// Dropping it removes the sockets from the XSKMAPs, unmaps the rings,
/// closes the sockets, closes the program links it created (detaching the
/// programs) and unmaps the UMEM. All its descriptors are close-on-exec, but
/// a child another thread is forking at that moment holds copies until it
/// execs, so the kernel may finish the detach a few milliseconds later.
#[derive(Debug)]
pub struct PortSet {
    // Sockets close before the UMEM is unmapped.
    ports: Vec<Port>,
    umem: Umem,
    report: BindReport,
    rx_batch: u32,
    rx_next: usize,
    misrouted: u64,
}

fn raise_memlock() -> bool {
    // Failure is fine: with CAP_IPC_LOCK (or a large enough limit)
    // registration still works, and if not, registration reports ENOBUFS
    // with a hint.
    sys::raise_memlock().is_ok()
}

impl PortSet {
    /// Attaches the XDP programs, creates the UMEM and binds one socket per
    /// spec, in the calling thread's network namespace. Port `i` of the set
    /// is `specs[i]` ([`PortId`]`(i)`).
    pub fn open(config: &PortSetConfig, specs: &[PortSpec]) -> Result<PortSet, Error> {
        if specs.is_empty() || specs.len() >= usize::from(PortId::LOCAL.0) {
            return Err(Error::Config(format!(
                "a port set needs 1 to {} ports, {} given",
                PortId::LOCAL.0 - 1,
                specs.len()
            )));
        }
        if config.rx_batch == 0 || config.rx_batch > config.rings.rx {
            return Err(Error::Config(format!(
                "rx batch {} must be between 1 and the RX ring size {}",
                config.rx_batch, config.rings.rx
            )));
        }
        config.rings.validate()?;
        for (i, a) in specs.iter().enumerate() {
            if specs[..i]
                .iter()
                .any(|b| (b.ifindex, b.queue) == (a.ifindex, a.queue))
            {
                return Err(Error::Config(format!(
                    "ifindex {} queue {} is listed twice",
                    a.ifindex, a.queue
                )));
            }
        }
        let memlock_raised = raise_memlock();

        // One program per interface, attached before any socket exists: its
        // map is empty, so until the sockets are in, frames pass to the
        // kernel as before.
        let mut programs: Vec<Arc<XdpProgram>> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let program = match &spec.program {
                ProgramSource::Shared(p) => Arc::clone(p),
                ProgramSource::Attach => {
                    let earlier = specs[..i]
                        .iter()
                        .position(|s| s.ifindex == spec.ifindex)
                        .map(|j| Arc::clone(&programs[j]));
                    match earlier {
                        Some(p) => p,
                        None => Arc::new(XdpProgram::attach(
                            spec.ifindex,
                            config.xdp_mode,
                            &config.pass_ethertypes,
                        )?),
                    }
                }
            };
            programs.push(program);
        }

        let modes: &[BindMode] = match config.bind {
            BindPolicy::Auto => &[BindMode::ZeroCopy, BindMode::Copy],
            BindPolicy::ForceCopy => &[BindMode::Copy],
            BindPolicy::ForceZeroCopy => &[BindMode::ZeroCopy],
        };
        let mut zero_copy_refused = None;
        for (attempt, &mode) in modes.iter().enumerate() {
            let last = attempt + 1 == modes.len();
            let umem = Umem::new(config.umem)?;
            match Self::bind_all(&umem, specs, mode, config.rings) {
                Ok((sockets, outcomes)) => {
                    let report = BindReport {
                        mode,
                        zero_copy_refused,
                        xdp_mode: config.xdp_mode,
                        memlock_raised,
                        tx_budget_raised: outcomes.iter().all(|o| o.tx_budget_raised),
                        ebusy_retries: outcomes.iter().map(|o| o.ebusy_retries).sum(),
                        ports: specs.iter().map(|s| (s.ifindex, s.queue)).collect(),
                        umem: config.umem,
                    };
                    return Self::assemble(umem, sockets, specs, programs, report, config.rx_batch);
                }
                Err(Error::Bind {
                    ifindex, source, ..
                }) if !last
                    && mode == BindMode::ZeroCopy
                    && source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
                {
                    zero_copy_refused = Some((ifindex, source.to_string()));
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last bind mode returns")
    }

    fn bind_all(
        umem: &Umem,
        specs: &[PortSpec],
        mode: BindMode,
        rings: RingSizes,
    ) -> Result<(Vec<XdpSocket>, Vec<BindOutcome>), Error> {
        let mut sockets: Vec<XdpSocket> = Vec::with_capacity(specs.len());
        let mut outcomes = Vec::with_capacity(specs.len());
        for spec in specs {
            let owner = sockets.first().map(XdpSocket::fd);
            let (socket, outcome) =
                XdpSocket::open(spec.ifindex, spec.queue, umem, owner, mode, rings)?;
            sockets.push(socket);
            outcomes.push(outcome);
        }
        Ok((sockets, outcomes))
    }

    fn assemble(
        mut umem: Umem,
        sockets: Vec<XdpSocket>,
        specs: &[PortSpec],
        programs: Vec<Arc<XdpProgram>>,
        report: BindReport,
        rx_batch: u32,
    ) -> Result<PortSet, Error> {
        let mut ports: Vec<Port> = Vec::with_capacity(sockets.len());
        // Give each fill ring up to half of its share of the frames; the
        // rest stays in the pool for TX of locally built frames and refill.
        let share = umem.config().frame_count as usize / (2 * sockets.len());
        for ((mut socket, spec), program) in sockets.into_iter().zip(specs).zip(programs) {
            let want = share.min(socket.fill.free(u32::MAX) as usize);
            for _ in 0..want {
                match umem.pool_mut().pop() {
                    Some(chunk) => socket.fill.push(chunk),
                    None => break,
                }
            }
            socket.fill.submit();
            // Only now steer the queue to the socket: its fill ring has
            // frames, so the first packets are not dropped.
            program.insert_socket(spec.queue, socket.fd())?;
            ports.push(Port {
                socket,
                program,
                ifindex: spec.ifindex,
                queue: spec.queue,
                counters: PortCounters::default(),
            });
        }
        Ok(PortSet {
            ports,
            umem,
            report,
            rx_batch,
            rx_next: 0,
            misrouted: 0,
        })
    }

    /// How the set was bound; its `Display` is one log line.
    pub fn report(&self) -> &BindReport {
        &self.report
    }

    /// Zero-copy or copy (the same for every port of the set).
    pub fn bind_mode(&self) -> BindMode {
        self.report.mode
    }

    /// Number of ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Never true: a set has at least one port.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The interface index of a port.
    pub fn ifindex(&self, port: PortId) -> Option<u32> {
        self.ports.get(port.index()).map(|p| p.ifindex)
    }

    /// The RX queue of a port.
    pub fn queue(&self, port: PortId) -> Option<u32> {
        self.ports.get(port.index()).map(|p| p.queue)
    }

    /// A port's counters.
    pub fn counters(&self, port: PortId) -> Option<&PortCounters> {
        self.ports.get(port.index()).map(|p| &p.counters)
    }

    /// Frames handed to `transmit` for a port this set does not have (they
    /// went back to the pool).
    pub fn misrouted(&self) -> u64 {
        self.misrouted
    }

    /// The kernel's counters for a port's socket (a system call: control
    /// path only).
    pub fn kernel_statistics(&self, port: PortId) -> io::Result<KernelStatistics> {
        let p = self
            .ports
            .get(port.index())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such port"))?;
        let s = p.socket.statistics()?;
        Ok(KernelStatistics {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// The frame memory (read packets, resize descriptors).
    pub fn umem(&self) -> &Umem {
        &self.umem
    }

    /// The frame memory, writable.
    pub fn umem_mut(&mut self) -> &mut Umem {
        &mut self.umem
    }

    /// Packet bytes of a frame ([`Umem::frame`]).
    #[inline]
    pub fn frame(&self, desc: &FrameDesc) -> &[u8] {
        self.umem.frame(desc)
    }

    /// Packet bytes of a frame, writable ([`Umem::frame_mut`]).
    #[inline]
    pub fn frame_mut(&mut self, desc: &FrameDesc) -> &mut [u8] {
        self.umem.frame_mut(desc)
    }

    /// A free frame for a packet the worker builds itself.
    #[inline]
    pub fn alloc_frame(&mut self) -> Option<FrameDesc> {
        self.umem.alloc_frame()
    }

    /// Gives a frame back to the pool (the packet is dropped).
    #[inline]
    pub fn drop_frame(&mut self, desc: FrameDesc) {
        self.umem.free_frame(desc);
    }

    /// Gives every frame of `batch` back to the pool.
    pub fn drop_batch(&mut self, batch: &mut FrameBatch) {
        for desc in batch.drain() {
            self.umem.free_frame(desc);
        }
    }

    /// Moves received frames into `batch`: up to the configured RX batch
    /// per port, as much as `batch` has room for, starting with a different
    /// port each call so no port starves. Refills each port's fill ring from
    /// the pool first. Returns the number of frames added.
    pub fn receive(&mut self, batch: &mut FrameBatch) -> usize {
        let n_ports = self.ports.len();
        let start = self.rx_next;
        self.rx_next = (start + 1) % n_ports;
        let mut added = 0;
        for i in 0..n_ports {
            let room = batch.remaining() as u32;
            if room == 0 {
                break;
            }
            let index = (start + i) % n_ports;
            let port = &mut self.ports[index];
            refill(&mut port.socket, &mut self.umem, &mut port.counters);
            let ready = port.socket.rx.available(room.min(self.rx_batch));
            if ready == 0 {
                port.counters.rx_empty_polls += 1;
                // Zero-copy drivers stop when the fill ring ran dry and
                // ask to be woken once it has frames again.
                if port.socket.fill.needs_wakeup() {
                    port.socket.wake_rx();
                    port.counters.rx_wakeups += 1;
                }
                continue;
            }
            let id = PortId(index as u16);
            for _ in 0..ready {
                let d = port.socket.rx.pop();
                match self.umem.desc_from_kernel(d.addr, d.len, id) {
                    Some(desc) => {
                        port.counters.rx_bytes += u64::from(d.len);
                        // Cannot fail: `ready` is at most the room left.
                        if let Err(desc) = batch.push(desc) {
                            self.umem.free_frame(desc);
                        }
                    }
                    None => port.counters.rx_invalid_descs += 1,
                }
            }
            port.socket.rx.release();
            port.counters.rx_packets += u64::from(ready);
            added += ready as usize;
        }
        added
    }

    /// Puts every frame of `batch` on `port`'s TX ring, emptying the batch,
    /// and kicks the kernel once if it asks for it (always in copy mode).
    /// Frames that do not fit are dropped back to the pool and counted in
    /// `tx_ring_full`. Returns the number of frames queued.
    pub fn transmit(&mut self, port: PortId, batch: &mut FrameBatch) -> usize {
        let want = batch.len() as u32;
        if want == 0 {
            return 0;
        }
        let Some(p) = self.ports.get_mut(port.index()) else {
            self.misrouted += u64::from(want);
            for desc in batch.drain() {
                self.umem.free_frame(desc);
            }
            return 0;
        };
        let mut room = p.socket.tx.free(want);
        if room < want {
            // The kernel may be waiting for completion-ring room before it
            // consumes more TX descriptors: make some.
            reap_completions(&mut p.socket, &mut self.umem, &mut p.counters);
            room = p.socket.tx.free(want);
        }
        let fits = room.min(want);
        let mut queued = 0u32;
        for desc in batch.drain() {
            if queued < fits {
                self.umem.check(&desc);
                let (addr, len) = desc.into_raw();
                p.socket.tx.push(libc::xdp_desc {
                    addr,
                    len,
                    options: 0,
                });
                p.counters.tx_bytes += u64::from(len);
                queued += 1;
            } else {
                self.umem.free_frame(desc);
                p.counters.tx_ring_full += 1;
            }
        }
        if queued > 0 {
            p.socket.tx.submit();
            p.counters.tx_packets += u64::from(queued);
            kick_if_asked(&p.socket, &mut p.counters);
        }
        queued as usize
    }

    /// Each port's socket descriptor, for a worker that waits in `poll(2)`
    /// while idle: it is readable (`POLLIN`) once the RX ring holds frames,
    /// and polling it also wakes a zero-copy driver that asked for it.
    pub fn fds(&self) -> impl Iterator<Item = std::os::fd::BorrowedFd<'_>> {
        self.ports.iter().map(|p| p.socket.as_fd())
    }

    /// True while some TX ring holds descriptors the kernel has not taken
    /// yet: a worker must keep kicking rather than wait.
    pub fn tx_pending(&self) -> bool {
        self.ports.iter().any(|p| p.socket.tx.outstanding() > 0)
    }

    /// Returns frames whose transmission completed to the pool (bounded per
    /// port), and re-kicks ports whose TX ring still holds descriptors the
    /// kernel has not taken (copy mode sends at most the skb budget per
    /// kick and gives up on transient errors). Returns frames reclaimed.
    pub fn poll_completions(&mut self) -> usize {
        let mut reclaimed = 0;
        for p in &mut self.ports {
            reclaimed += reap_completions(&mut p.socket, &mut self.umem, &mut p.counters);
            if p.socket.tx.outstanding() > 0 {
                kick_if_asked(&p.socket, &mut p.counters);
            }
        }
        reclaimed
    }
}

#[inline]
fn refill(socket: &mut XdpSocket, umem: &mut Umem, counters: &mut PortCounters) {
    let free = socket.fill.free(64);
    if free == 0 {
        return;
    }
    let pool = umem.pool_mut();
    let n = free.min(pool.len() as u32);
    if n < free.min(64) {
        counters.fill_shortage += 1;
    }
    if n == 0 {
        return;
    }
    for _ in 0..n {
        if let Some(chunk) = pool.pop() {
            socket.fill.push(chunk);
        }
    }
    socket.fill.submit();
}

#[inline]
fn reap_completions(socket: &mut XdpSocket, umem: &mut Umem, counters: &mut PortCounters) -> usize {
    let n = socket.completion.available(COMPLETION_BUDGET);
    for _ in 0..n {
        let addr = socket.completion.pop();
        let chunk = umem.chunk_of(addr);
        umem.pool_mut().push(chunk);
    }
    if n > 0 {
        socket.completion.release();
        counters.tx_completed += u64::from(n);
    }
    n as usize
}

#[inline]
fn kick_if_asked(socket: &XdpSocket, counters: &mut PortCounters) {
    if socket.tx.needs_wakeup() {
        counters.tx_kicks += 1;
        if socket.kick_tx().is_err() {
            counters.tx_kick_errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_names_mode_and_fallback() {
        let report = BindReport {
            mode: BindMode::Copy,
            zero_copy_refused: Some((5, "Operation not supported".into())),
            xdp_mode: XdpMode::Native,
            memlock_raised: false,
            tx_budget_raised: true,
            ebusy_retries: 2,
            ports: vec![(5, 0), (6, 0)],
            umem: UmemConfig::default(),
        };
        let line = report.to_string();
        assert!(line.contains("2 port(s)"), "{line}");
        assert!(line.contains("bound in copy mode"), "{line}");
        assert!(line.contains("zero-copy refused on ifindex 5"), "{line}");
        assert!(line.contains("UMEM 4096 x 2048 B"), "{line}");
        assert!(line.contains("EBUSY retries: 2"), "{line}");
    }

    #[test]
    fn bad_configurations_are_refused_before_touching_the_kernel() {
        let cfg = PortSetConfig::default();
        assert!(matches!(PortSet::open(&cfg, &[]), Err(Error::Config(_))));
        let twice = [PortSpec::new(1, 0), PortSpec::new(1, 0)];
        let err = PortSet::open(&cfg, &twice).unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        let mut odd = cfg.clone();
        odd.rings.tx = 1000;
        let err = PortSet::open(&odd, &[PortSpec::new(1, 0)]).unwrap_err();
        assert!(err.to_string().contains("power of two"), "{err}");
        let mut big = cfg;
        big.rx_batch = 4096;
        assert!(matches!(
            PortSet::open(&big, &[PortSpec::new(1, 0)]),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn unknown_interface_name_is_reported() {
        let err = PortSpec::named("no-such-if0", 0).unwrap_err();
        assert!(err.to_string().contains("no-such-if0"), "{err}");
    }

    #[test]
    fn port_set_is_send() {
        fn send<T: Send>() {}
        send::<PortSet>();
    }
}
