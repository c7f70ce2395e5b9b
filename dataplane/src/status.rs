//! What workers tell the control side. Two mechanisms, one per kind of
//! figure:
//!
//! * counters change per packet: plain integers the worker owns, mirrored
//!   into relaxed atomics every 50 ms (`counters.rs`, [`SharedCounters`]);
//! * everything else a worker owns and the control side shows (neighbour
//!   cache, per-SA counters, NAT sessions) is copied by the worker into a
//!   [`Slot`] every 500 ms. The worker only ever `try_lock`s its slot and
//!   skips a publication when the control thread is reading, so it never
//!   waits; the control thread reads a copy a fraction of a second old.
//!
//! [`SharedCounters`]: crate::counters::SharedCounters

use std::net::IpAddr;
use std::sync::Mutex;

use strait_nat::{NatCounters, SessionInfo};

use crate::neigh::NeighbourState;

/// Most sessions a worker copies into its snapshot for `show nat sessions`
/// (the count of all sessions is always exact).
pub const SNAPSHOT_LIMIT: usize = 10_000;

/// One worker's published copy of something it owns.
#[derive(Debug, Default)]
pub struct Slot<T>(Mutex<T>);

impl<T: Clone> Slot<T> {
    /// Worker side: refreshes the copy unless the control thread is
    /// reading it right now.
    pub fn publish(&self, fill: impl FnOnce(&mut T)) {
        if let Ok(mut s) = self.0.try_lock() {
            fill(&mut s);
        }
    }

    /// Control side: a copy of the last publication.
    pub fn read(&self) -> T {
        match self.0.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// Where a worker publishes its neighbour cache and SA counters.
pub type WorkerStatus = Slot<StatusSnapshot>;

/// What one worker last published about its translator.
#[derive(Debug, Clone, Default)]
pub struct NatSnapshot {
    /// When, in seconds on the tables' epoch; `None` before the first.
    pub taken_at: Option<u64>,
    /// Live sessions (exact).
    pub session_count: usize,
    /// Session capacity.
    pub capacity: usize,
    /// Heap bytes held by the translator.
    pub memory_bytes: usize,
    /// Up to [`SNAPSHOT_LIMIT`] sessions.
    pub sessions: Vec<SessionInfo>,
    /// The translator's counters.
    pub counters: NatCounters,
}

/// Every worker's NAT slot. Lives in the table snapshot (the one shared
/// cell there workers write, see `tables/mod.rs`), the same object across
/// reloads.
#[derive(Debug)]
pub struct NatStatus {
    workers: Box<[Slot<NatSnapshot>]>,
}

impl NatStatus {
    /// Slots for `workers` workers.
    pub fn new(workers: usize) -> NatStatus {
        NatStatus {
            workers: (0..workers).map(|_| Slot::default()).collect(),
        }
    }

    /// Worker side: publishes worker `worker`'s snapshot (skipped while the
    /// control thread reads it).
    pub fn publish(&self, worker: usize, fill: impl FnOnce(&mut NatSnapshot)) {
        if let Some(slot) = self.workers.get(worker) {
            slot.publish(fill);
        }
    }

    /// Copies of every worker's last snapshot (control thread).
    pub fn snapshots(&self) -> Vec<NatSnapshot> {
        self.workers.iter().map(Slot::read).collect()
    }
}

/// One neighbour cache entry of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourInfo {
    /// Worker that holds it.
    pub worker: usize,
    /// Port index.
    pub port: u16,
    /// Neighbour address.
    pub ip: IpAddr,
    /// Its MAC (zero while incomplete).
    pub mac: [u8; 6],
    /// Resolution state.
    pub state: NeighbourState,
}

/// Direction of an SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaDirection {
    /// We seal with it.
    Outbound,
    /// We open with it.
    Inbound,
}

/// One worker's counters of one SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaCounterInfo {
    /// Tunnel index.
    pub tunnel: u16,
    /// SPI.
    pub spi: u32,
    /// Direction.
    pub direction: SaDirection,
    /// Packets sealed or opened.
    pub packets: u64,
    /// Inner bytes sealed or opened.
    pub bytes: u64,
    /// Drops by reason (esp crate names: auth_failed, replay, ...), non-zero only.
    pub drops: Vec<(&'static str, u64)>,
}

/// A worker's last published snapshot.
#[derive(Debug, Clone, Default)]
pub struct StatusSnapshot {
    /// Neighbour cache.
    pub neighbours: Vec<NeighbourInfo>,
    /// SA counters.
    pub sas: Vec<SaCounterInfo>,
}

/// Adds up the per-worker counters of each SA.
pub fn sum_sas(snapshots: &[StatusSnapshot]) -> Vec<SaCounterInfo> {
    let mut out: Vec<SaCounterInfo> = Vec::new();
    for s in snapshots {
        for sa in &s.sas {
            match out
                .iter_mut()
                .find(|o| o.spi == sa.spi && o.direction == sa.direction && o.tunnel == sa.tunnel)
            {
                Some(o) => {
                    o.packets += sa.packets;
                    o.bytes += sa.bytes;
                    for (name, n) in &sa.drops {
                        match o.drops.iter_mut().find(|(k, _)| k == name) {
                            Some((_, m)) => *m += n,
                            None => o.drops.push((name, *n)),
                        }
                    }
                }
                None => out.push(sa.clone()),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(
        spi: u32,
        dir: SaDirection,
        packets: u64,
        drops: Vec<(&'static str, u64)>,
    ) -> SaCounterInfo {
        SaCounterInfo {
            tunnel: 0,
            spi,
            direction: dir,
            packets,
            bytes: packets * 100,
            drops,
        }
    }

    #[test]
    fn sums_workers_per_sa_and_direction() {
        let a = StatusSnapshot {
            neighbours: vec![],
            sas: vec![
                sa(1, SaDirection::Outbound, 5, vec![]),
                sa(2, SaDirection::Inbound, 3, vec![("replay", 1)]),
            ],
        };
        let b = StatusSnapshot {
            neighbours: vec![],
            sas: vec![sa(
                2,
                SaDirection::Inbound,
                4,
                vec![("replay", 2), ("auth_failed", 1)],
            )],
        };
        let sum = sum_sas(&[a, b]);
        assert_eq!(sum.len(), 2);
        let inbound = sum.iter().find(|s| s.spi == 2).unwrap();
        assert_eq!(inbound.packets, 7);
        assert_eq!(inbound.drops, vec![("replay", 3), ("auth_failed", 1)]);
    }

    #[test]
    fn a_busy_reader_never_blocks_the_worker() {
        let st = WorkerStatus::default();
        let guard = st.0.lock().unwrap();
        // The worker's publication is skipped, not waited for.
        st.publish(|s| s.sas.push(sa(9, SaDirection::Outbound, 1, vec![])));
        drop(guard);
        assert!(st.read().sas.is_empty());
        st.publish(|s| s.sas.push(sa(9, SaDirection::Outbound, 1, vec![])));
        assert_eq!(st.read().sas.len(), 1);
    }
}
