//! One AF_XDP socket bound to an (interface, queue): its four rings and
//! the bind sequence.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::ring::{ConsumerRing, ProducerRing};
use crate::sys::{self, Plain, RingMap};
use crate::{Error, Umem};

/// `XDP_MAX_TX_SKB_BUDGET` (include/uapi/linux/if_xdp.h, Linux 6.16+): the
/// number of descriptors one copy-mode `sendto` may turn into skbs (the
/// default is 32).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
/// What we ask for: one kick then drains a whole 256-frame batch.
const TX_SKB_BUDGET: u32 = 256;

/// Attempts at binding while the queue is still held by a socket that is
/// being torn down (EBUSY right after a previous process exited).
const BIND_ATTEMPTS: u32 = 10;

/// How a socket moves frames between the NIC and the UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// The driver DMAs straight into the UMEM.
    ZeroCopy,
    /// The kernel copies between its buffers and the UMEM (always works;
    /// the only mode veth offers).
    Copy,
}

/// Which bind mode to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindPolicy {
    /// Zero-copy if the driver supports it, copy otherwise.
    #[default]
    Auto,
    /// Copy mode only.
    ForceCopy,
    /// Zero-copy or fail.
    ForceZeroCopy,
}

/// Ring sizes (entries, powers of two) of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSizes {
    /// RX ring.
    pub rx: u32,
    /// TX ring.
    pub tx: u32,
    /// Fill ring.
    pub fill: u32,
    /// Completion ring.
    pub completion: u32,
}

impl Default for RingSizes {
    fn default() -> Self {
        RingSizes {
            rx: 1024,
            tx: 1024,
            fill: 1024,
            completion: 1024,
        }
    }
}

impl RingSizes {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for (name, n) in [
            ("rx", self.rx),
            ("tx", self.tx),
            ("fill", self.fill),
            ("completion", self.completion),
        ] {
            if !n.is_power_of_two() || !(64..=16384).contains(&n) {
                return Err(Error::Config(format!(
                    "{name} ring size {n} must be a power of two from 64 to 16384"
                )));
            }
        }
        Ok(())
    }
}

/// What binding found out, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BindOutcome {
    pub(crate) ebusy_retries: u32,
    pub(crate) tx_budget_raised: bool,
}

/// An AF_XDP socket with its rings mapped.
#[derive(Debug)]
pub(crate) struct XdpSocket {
    // Rings are unmapped before the socket closes (field drop order): a
    // mapped ring keeps the socket alive in the kernel.
    pub(crate) rx: ConsumerRing<libc::xdp_desc>,
    pub(crate) tx: ProducerRing<libc::xdp_desc>,
    pub(crate) fill: ProducerRing<u64>,
    pub(crate) completion: ConsumerRing<u64>,
    fd: OwnedFd,
}

fn setsockopt<T: Plain>(fd: BorrowedFd<'_>, name: libc::c_int, value: &T) -> io::Result<()> {
    sys::setsockopt(fd, libc::SOL_XDP, name, value)
}

fn sock_err(what: &'static str, ifindex: u32, queue: u32) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Socket {
        what,
        ifindex,
        queue,
        source,
    }
}

impl XdpSocket {
    /// Creates a socket on (`ifindex`, `queue`) using `umem`.
    ///
    /// With `shared_with = None` the socket registers the UMEM and binds
    /// in `mode`; otherwise it shares the UMEM of the given (already bound)
    /// socket and inherits its mode: the kernel refuses any other bind flag
    /// next to `XDP_SHARED_UMEM`. Each socket has its own fill and
    /// completion rings, as required when the (interface, queue) differs.
    pub(crate) fn open(
        ifindex: u32,
        queue: u32,
        umem: &Umem,
        shared_with: Option<RawFd>,
        mode: BindMode,
        sizes: RingSizes,
    ) -> Result<(XdpSocket, BindOutcome), Error> {
        let fd =
            sys::xdp_socket().map_err(sock_err("creating an AF_XDP socket", ifindex, queue))?;
        let f = fd.as_fd();

        if shared_with.is_none() {
            let reg = umem.registration();
            setsockopt(f, libc::XDP_UMEM_REG, &reg).map_err(|source| Error::UmemRegister {
                bytes: reg.len as usize,
                source,
            })?;
        }
        setsockopt(f, libc::XDP_UMEM_FILL_RING, &sizes.fill).map_err(sock_err(
            "sizing the fill ring",
            ifindex,
            queue,
        ))?;
        setsockopt(f, libc::XDP_UMEM_COMPLETION_RING, &sizes.completion).map_err(sock_err(
            "sizing the completion ring",
            ifindex,
            queue,
        ))?;
        setsockopt(f, libc::XDP_RX_RING, &sizes.rx).map_err(sock_err(
            "sizing the RX ring",
            ifindex,
            queue,
        ))?;
        setsockopt(f, libc::XDP_TX_RING, &sizes.tx).map_err(sock_err(
            "sizing the TX ring",
            ifindex,
            queue,
        ))?;

        let (off, optlen) =
            sys::getsockopt::<libc::xdp_mmap_offsets>(f, libc::SOL_XDP, libc::XDP_MMAP_OFFSETS)
                .map_err(sock_err("reading ring offsets", ifindex, queue))?;
        if optlen != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(Error::Config(format!(
                "kernel reports pre-5.4 AF_XDP ring offsets ({optlen} bytes); \
                 Linux 5.4 or later is required for need_wakeup"
            )));
        }
        let map_err = sock_err("mapping a ring", ifindex, queue);
        let rx = RingMap::map(f, libc::XDP_PGOFF_RX_RING, (&off.rx).into(), sizes.rx);
        let tx = RingMap::map(f, libc::XDP_PGOFF_TX_RING, (&off.tx).into(), sizes.tx);
        let fill = RingMap::map(
            f,
            libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
            (&off.fr).into(),
            sizes.fill,
        );
        let completion = RingMap::map(
            f,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
            (&off.cr).into(),
            sizes.completion,
        );
        let (rx, tx, fill, completion) = match (rx, tx, fill, completion) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
            (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                return Err(map_err(e))
            }
        };
        let mut addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: 0,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        match shared_with {
            Some(owner) => {
                addr.sxdp_flags = libc::XDP_SHARED_UMEM;
                addr.sxdp_shared_umem_fd = owner as u32;
            }
            None => {
                addr.sxdp_flags = libc::XDP_USE_NEED_WAKEUP
                    | match mode {
                        BindMode::ZeroCopy => libc::XDP_ZEROCOPY,
                        BindMode::Copy => libc::XDP_COPY,
                    };
            }
        }
        let mut ebusy_retries = 0;
        let mut backoff = Duration::from_millis(5);
        while let Err(err) = sys::bind_xdp(f, &addr) {
            if err.raw_os_error() == Some(libc::EBUSY) && ebusy_retries + 1 < BIND_ATTEMPTS {
                // The queue is still held by a socket being released
                // (typically the previous run of the daemon).
                ebusy_retries += 1;
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(100));
                continue;
            }
            return Err(Error::Bind {
                ifindex,
                queue,
                mode,
                attempts: ebusy_retries + 1,
                source: err,
            });
        }

        // Older kernels do not know the option: the default budget of 32
        // still works, only with more kicks.
        let tx_budget_raised = setsockopt(f, XDP_MAX_TX_SKB_BUDGET, &TX_SKB_BUDGET).is_ok();
        let socket = XdpSocket {
            rx: ConsumerRing::new(rx),
            tx: ProducerRing::new(tx),
            fill: ProducerRing::new(fill),
            completion: ConsumerRing::new(completion),
            fd,
        };
        Ok((
            socket,
            BindOutcome {
                ebusy_retries,
                tx_budget_raised,
            },
        ))
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Asks the kernel to process the TX ring (copy mode, or zero-copy when
    /// the driver set need_wakeup). Transient refusals are normal: the
    /// descriptors stay on the ring and the next kick retries.
    #[inline]
    pub(crate) fn kick_tx(&self) -> io::Result<()> {
        match sys::wake_tx(self.fd.as_fd()) {
            Err(err)
                if !matches!(
                    err.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN)
                ) =>
            {
                Err(err)
            }
            _ => Ok(()),
        }
    }

    /// Asks the driver to refill from the fill ring (need_wakeup set on it).
    #[inline]
    pub(crate) fn wake_rx(&self) {
        sys::wake_rx(self.fd.as_fd());
    }

    /// The kernel's drop counters for this socket (`XDP_STATISTICS`).
    pub(crate) fn statistics(&self) -> io::Result<libc::xdp_statistics> {
        sys::getsockopt(self.fd.as_fd(), libc::SOL_XDP, libc::XDP_STATISTICS).map(|(s, _)| s)
    }
}
