//! Engine events: what the engine tells its embedder about, in the order it
//! noticed, e.g. an SA whose soft lifetime passed and needs a rekey.
//!
//! The SAs live in the workers (each its own inbound replay state; the
//! outbound sequence space shared), so the workers notice lifetime events,
//! at their status publication every 500 ms and never per packet, and hand
//! them to a bounded channel without waiting. The embedder drains it with
//! [`Engine::poll_events`](crate::Engine::poll_events).

use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Duration;

use strait_esp::{Lifetime, SaEvent};

use crate::status::SaDirection;
use crate::tables::SaSpec;

/// Events waiting for the embedder at most; past that new ones are
/// dropped (a worker never waits for a reader). Each SA reports each event
/// once, so only an embedder that never reads loses any.
const QUEUE: usize = 1024;

/// Something the engine reports to its embedder. More kinds will come
/// (peer up/down), hence `non_exhaustive`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// An SA passed its soft lifetime, or (outbound) came within a
    /// sixteenth of the end of its sequence numbers: negotiate a
    /// replacement and rekey ([`Engine::rekey`](crate::Engine::rekey));
    /// traffic still flows.
    SaSoftExpired(SaLifetimeEvent),
    /// An SA passed its hard lifetime or ran out of sequence numbers: it
    /// refuses traffic now and should be replaced and retired.
    SaHardExpired(SaLifetimeEvent),
}

/// Which SA an SA lifetime event is about, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaLifetimeEvent {
    /// Tunnel name.
    pub tunnel: String,
    /// SPI.
    pub spi: u32,
    /// Whether we seal or open with it.
    pub direction: SaDirection,
    /// The limit that passed.
    pub limit: SaLimit,
}

/// The limit an SA lifetime event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaLimit {
    /// Its age (`soft_seconds` / `hard_seconds`).
    Time,
    /// Its inner bytes (`soft_bytes` / `hard_bytes`).
    Bytes,
    /// Its sequence numbers (outbound): close to or at the end of the
    /// 32-bit (or, with ESN, 64-bit) space.
    SequenceNumbers,
}

impl EngineEvent {
    /// The SA the event is about, for SA events.
    pub fn sa(&self) -> Option<&SaLifetimeEvent> {
        match self {
            EngineEvent::SaSoftExpired(e) | EngineEvent::SaHardExpired(e) => Some(e),
        }
    }

    /// Short kebab-case name of the kind (`sa-soft-expired`, ...), for logs
    /// and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineEvent::SaSoftExpired(_) => "sa-soft-expired",
            EngineEvent::SaHardExpired(_) => "sa-hard-expired",
        }
    }
}

impl SaLimit {
    /// Operators' name: `time`, `bytes`, `sequence-numbers`.
    pub fn name(self) -> &'static str {
        match self {
            SaLimit::Time => "time",
            SaLimit::Bytes => "bytes",
            SaLimit::SequenceNumbers => "sequence-numbers",
        }
    }
}

impl std::fmt::Display for EngineEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let direction = |d: SaDirection| match d {
            SaDirection::Outbound => "outbound",
            SaDirection::Inbound => "inbound",
        };
        match self {
            EngineEvent::SaSoftExpired(e) => write!(
                f,
                "tunnel {}: {} SA {} passed its soft {} limit: rekey",
                e.tunnel,
                direction(e.direction),
                e.spi,
                e.limit.name()
            ),
            EngineEvent::SaHardExpired(e) => write!(
                f,
                "tunnel {}: {} SA {} passed its hard {} limit: it refuses traffic",
                e.tunnel,
                direction(e.direction),
                e.spi,
                e.limit.name()
            ),
        }
    }
}

/// A worker's end of the event channel.
#[derive(Debug, Clone)]
pub(crate) struct EventSender(SyncSender<EngineEvent>);

impl EventSender {
    /// Hands `event` over without waiting; dropped when the queue is full
    /// or the engine is gone.
    pub(crate) fn send(&self, event: EngineEvent) {
        let _ = self.0.try_send(event);
    }
}

/// The channel between the workers and [`Engine::poll_events`](crate::Engine::poll_events).
pub(crate) fn channel() -> (EventSender, Receiver<EngineEvent>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    (EventSender(tx), rx)
}

/// The engine event for `event` of the SA built from `spec`, which has
/// carried `bytes` inner bytes by `now` (on the tables' epoch). The esp
/// crate reports that a limit passed, not which: the limits that have
/// passed tell; when none has, it was the sequence space.
pub(crate) fn sa_event(
    event: SaEvent,
    tunnel: &str,
    spec: &SaSpec,
    direction: SaDirection,
    bytes: u64,
    now: Duration,
) -> EngineEvent {
    let Lifetime {
        soft_bytes,
        hard_bytes,
        soft_time,
        hard_time,
    } = spec.lifetime;
    let (by_bytes, by_time) = match event {
        SaEvent::RekeyNeeded => (soft_bytes, soft_time),
        SaEvent::Expired => (hard_bytes, hard_time),
    };
    let limit = if by_bytes.is_some_and(|b| bytes >= b) {
        SaLimit::Bytes
    } else if by_time.is_some_and(|t| now >= spec.created.saturating_add(t)) {
        SaLimit::Time
    } else {
        SaLimit::SequenceNumbers
    };
    let e = SaLifetimeEvent {
        tunnel: tunnel.to_owned(),
        spi: spec.spi,
        direction,
        limit,
    };
    match event {
        SaEvent::RekeyNeeded => EngineEvent::SaSoftExpired(e),
        SaEvent::Expired => EngineEvent::SaHardExpired(e),
    }
}
