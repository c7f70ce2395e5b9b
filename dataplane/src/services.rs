//! Datagrams of the control plane's own protocols: IKE (RFC 7296) on UDP
//! 500, and on 4500 behind the non-ESP marker (RFC 3948 §2.2); and DNS
//! queries to `[dns] listen` (IPv4, UDP), once the engine's owner asked for
//! them ([`crate::Engine::dns_datagrams`]).
//!
//! With `[ike]` configured, a worker hands IKE addressed to one of our
//! addresses to the engine's owner through a bounded queue instead of the
//! host stack (policed per worker, counted when refused), and worker 0
//! sends what the owner answers from our addresses, routed by the
//! dataplane's own tables like a NAT-keepalive. The key exchange then
//! needs neither the TAP devices nor kernel routes, and follows exactly
//! the path its ESP will take.

use std::net::SocketAddrV4;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use crossbeam::channel::{bounded, Receiver, Sender};

/// The IKE port (RFC 7296 §2).
pub const IKE_PORT: u16 = 500;
/// Datagrams waiting in each direction at most; more are dropped. A
/// round of route announcements starts one exchange with every site at
/// once.
pub const QUEUE: usize = 4096;
/// IKE datagrams per second each worker hands over at most, and the burst:
/// a registration storm (a thousand devices' first IKE_SA_INIT at once)
/// and the answers to a round of route announcements to every site pass;
/// a flood beyond costs the IKE thread no DH past the COOKIE threshold.
pub const RATE: (u32, u32) = (10_000, 4_000);

/// One UDP payload to or from one of our addresses. On port 4500 the
/// payload starts with the non-ESP marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDatagram {
    /// Our address and port.
    pub local: SocketAddrV4,
    /// The peer's.
    pub remote: SocketAddrV4,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// DNS queries waiting for the owner at most; more are dropped
/// (`service_queue_full`) and the client retries.
pub const DNS_QUEUE: usize = 8192;

/// What the workers call after a batch that queued DNS queries, to wake
/// the owner's loop (once per batch, not per query).
pub struct Bell(Box<dyn Fn() + Send + Sync>);

impl Bell {
    pub(crate) fn new(ring: impl Fn() + Send + Sync + 'static) -> Bell {
        Bell(Box::new(ring))
    }

    pub(crate) fn ring(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Bell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bell")
    }
}

/// The queues: workers → owner (IKE, and DNS), owner → worker 0 (both).
#[derive(Debug)]
pub(crate) struct ServiceQueues {
    pub(crate) to_owner: (Sender<ServiceDatagram>, Receiver<ServiceDatagram>),
    pub(crate) to_worker: (Sender<ServiceDatagram>, Receiver<ServiceDatagram>),
    pub(crate) dns_to_owner: (Sender<ServiceDatagram>, Receiver<ServiceDatagram>),
    /// Set once the owner takes the DNS queries; until then they go to
    /// the host stack like any other traffic for us.
    pub(crate) dns_bell: Arc<ArcSwapOption<Bell>>,
}

impl ServiceQueues {
    pub(crate) fn new() -> Self {
        ServiceQueues {
            to_owner: bounded(QUEUE),
            to_worker: bounded(QUEUE),
            dns_to_owner: bounded(DNS_QUEUE),
            dns_bell: Arc::new(ArcSwapOption::empty()),
        }
    }
}

/// Whether `udp` (a UDP header and payload, to one of our addresses) is a
/// query to one of `listen` (the `[dns] listen` IPv4 endpoints) at `dst`.
#[inline]
pub(crate) fn is_dns(listen: &[SocketAddrV4], dst: std::net::Ipv4Addr, udp: &[u8]) -> bool {
    let Some(dport) = udp.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]])) else {
        return false;
    };
    listen.iter().any(|l| *l.ip() == dst && l.port() == dport)
}

/// Whether `udp` (a UDP header and payload, to one of our addresses) is
/// IKE: port 500, or 4500 with the non-ESP marker.
#[inline]
pub(crate) fn is_ike(udp: &[u8]) -> bool {
    let Some(dport) = udp.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]])) else {
        return false;
    };
    match dport {
        IKE_PORT => true,
        strait_esp::NAT_T_PORT => udp.get(8..12) == Some(&strait_esp::NON_ESP_MARKER[..]),
        _ => false,
    }
}
