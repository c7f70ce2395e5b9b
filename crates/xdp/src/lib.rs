//! AF_XDP ports for Strait: UMEM, rings, the XDP redirect program and frame
//! batches.
//!
//! # Design
//!
//! One poll-mode worker thread owns one [`PortSet`]: a [`Umem`] (the frame
//! memory, with its [`FramePool`] of free frames) and one AF_XDP socket per
//! (interface, RX queue) the worker serves. All sockets share the UMEM
//! (`XDP_SHARED_UMEM`), each with its own fill and completion rings, so a
//! frame received on one port is transmitted on another by moving its
//! descriptor: no copy. The set is `Send` (built on the control thread, in
//! the right network namespace, then moved) but not `Sync`; nothing on its
//! packet path allocates, locks, or makes a system call except the kicks the
//! kernel asks for.
//!
//! The worker loop:
//!
//! ```no_run
//! # use strait_xdp::*;
//! # fn run(ports: &mut PortSet) {
//! let mut rx = FrameBatch::new();
//! let mut out = FrameBatch::new();
//! loop {
//!     ports.receive(&mut rx);
//!     for desc in rx.drain() {
//!         let _bytes = ports.frame_mut(&desc); // parse / rewrite in place
//!         if let Err(desc) = out.push(desc) {
//!             ports.drop_frame(desc);
//!         }
//!     }
//!     ports.transmit(PortId(1), &mut out);
//!     ports.poll_completions();
//! }
//! # }
//! ```
//!
//! Frames are named by [`FrameDesc`]s, which are move-only: holding one is
//! owning the frame, and the kernel never touches a frame a descriptor names.
//! A stage grows a packet at its front into the headroom
//! ([`Umem::grow_front`]) to prepend an encapsulation header, or at its tail
//! ([`Umem::set_len`]) for an ESP trailer.
//!
//! # Kernel interface
//!
//! The sockets and rings are driven directly through `libc` (the structs and
//! constants of `<linux/if_xdp.h>`). Every system call, raw pointer and
//! mapping is in one module, `sys`, behind safe wrappers with documented
//! invariants; the rest of the crate is safe code, and the crate root denies
//! `unsafe_code` so the compiler keeps it that way.
//!
//! `xsk-rs` was evaluated and not used: its frame descriptors fix the
//! transmitted address at the start of the data segment, so headers
//! written into the headroom cannot be sent without copying the packet,
//! which defeats zero-copy encapsulation; it also ties the build to a C
//! toolchain for libxdp.
//!
//! The XDP program ([`XdpProgram`]) is assembled here (five instructions,
//! plus an optional EtherType pass list) and attached with
//! `BPF_LINK_CREATE`, so the kernel detaches it when the process dies.
//!
//! Binding tries zero-copy first and falls back to copy mode when the driver
//! refuses it (`EOPNOTSUPP`, e.g. veth); [`PortSet::report`] says what was
//! chosen, for the daemon to log. `EBUSY` (a queue still held by a socket
//! being torn down) is retried with a short bounded back-off.
//!
//! # Modules
//!
//! - `sys`: the only `unsafe` code: mappings (UMEM region, rings), socket
//!   options, wakeups, `bpf(2)` commands.
//! - `bpf`: the redirect program, XSKMAP and link.
//! - `ring`: the producer/consumer protocol on the shared rings.
//! - `socket`: one socket, its rings and the bind sequence.
//! - `umem`: frame memory, descriptors, pool.
//! - `batch`: [`FrameBatch`].
//! - `ports`: [`PortSet`], the per-worker object, and its counters.

#![deny(unsafe_code)]

mod batch;
mod bpf;
mod ports;
mod ring;
mod socket;
#[allow(unsafe_code)]
mod sys;
mod umem;

use std::io;

pub use batch::{Drain, FrameBatch, BATCH_CAPACITY};
pub use bpf::{XdpMode, XdpProgram, MAX_PASS_ETHERTYPES, XSKMAP_ENTRIES};
pub use ports::{
    BindReport, KernelStatistics, PortCounters, PortSet, PortSetConfig, PortSpec, ProgramSource,
};
pub use socket::{BindMode, BindPolicy, RingSizes};
pub use umem::{
    FrameDesc, FrameError, FramePool, Umem, UmemConfig, DEFAULT_FRAME_COUNT, DEFAULT_FRAME_SIZE,
    DEFAULT_HEADROOM, XDP_PACKET_HEADROOM,
};

/// Index of a port inside its [`PortSet`], in the order the ports were
/// specified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub u16);

impl PortId {
    /// The "ingress port" of frames the worker allocated itself.
    pub const LOCAL: PortId = PortId(u16::MAX);

    /// The index as a `usize`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Errors from setting up AF_XDP ports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `bpf(2)` command failed; `log` holds the verifier log if any.
    #[error("{what}: {source}{}", verifier_log(.log))]
    Bpf {
        /// What was being done.
        what: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
        /// Verifier output (empty if none).
        log: String,
    },
    /// `BPF_LINK_CREATE` refused to attach the program.
    #[error("attaching the XDP program to ifindex {ifindex} in {mode} mode: {source}{}", attach_hint(.source))]
    Attach {
        /// Interface.
        ifindex: u32,
        /// Requested mode.
        mode: XdpMode,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// A socket call failed.
    #[error("AF_XDP socket on ifindex {ifindex} queue {queue}: {what}: {source}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// Interface.
        ifindex: u32,
        /// RX queue.
        queue: u32,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The frame memory could not be mapped.
    #[error("mapping a {bytes}-byte UMEM: {source}")]
    UmemMap {
        /// Size requested.
        bytes: usize,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused to register (pin) the frame memory.
    #[error("registering a {bytes}-byte UMEM: {source}{}", umem_hint(.source))]
    UmemRegister {
        /// Size requested.
        bytes: usize,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// `bind` failed (after retrying `EBUSY`).
    #[error("binding an AF_XDP socket to ifindex {ifindex} queue {queue} ({mode:?} mode) failed after {attempts} attempt(s): {source}")]
    Bind {
        /// Interface.
        ifindex: u32,
        /// RX queue.
        queue: u32,
        /// Mode asked for.
        mode: BindMode,
        /// Attempts made.
        attempts: u32,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// No interface by that name in the calling thread's namespace.
    #[error("no network interface named {0:?} in this network namespace")]
    NoSuchInterface(String),
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
}

fn verifier_log(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!("\nverifier log:\n{log}")
    }
}

fn attach_hint(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::EBUSY) | Some(libc::EEXIST) => {
            " (another XDP program is attached; `ip link set dev <if> xdp off` removes a stale one)"
        }
        Some(libc::EOPNOTSUPP) => " (the driver has no native XDP: use generic mode)",
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN and CAP_BPF)",
        _ => "",
    }
}

fn umem_hint(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {
            " (locked memory: RLIMIT_MEMLOCK is too low and CAP_IPC_LOCK is missing, or the \
             frame count is too large)"
        }
        _ => "",
    }
}
