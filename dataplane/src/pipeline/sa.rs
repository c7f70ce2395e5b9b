//! One worker's ESP state: its outbound sequence blocks and its inbound
//! replay windows, per tunnel. Kept across table swaps as long as the SA
//! stays the same; both ESP stages use it.

use std::sync::Arc;
use std::time::Instant;

use strait_esp::{InboundSa, OutboundWorker, SadIn};

use super::Pipeline;
use crate::events::{sa_event, EngineEvent};
use crate::sastore::SaState;
use crate::status::{SaCounterInfo, SaDirection};
use crate::tables::{SaSpec, Tables};

#[derive(Debug, Default)]
pub(super) struct EspState {
    generation: Option<u64>,
    /// Per tunnel, by tunnel index.
    pub(super) out: Vec<OutboundWorker>,
    /// By SPI: a binary search, flat in the number of tunnels.
    pub(super) inbound: SadIn<InboundEntry>,
}

#[derive(Debug)]
pub(super) struct InboundEntry {
    pub(super) spi: u32,
    pub(super) tunnel: u16,
    spec: Arc<SaSpec>,
    /// The key's durable position, raised as the window advances.
    pub(super) state: Arc<SaState>,
    pub(super) sa: InboundSa,
}

impl EspState {
    /// Adopts the snapshot `t` if it is new: SAs it still holds keep their
    /// state, new ones start, retired ones flush their sequence block.
    #[inline]
    pub(super) fn sync(&mut self, t: &Tables) {
        if self.generation != Some(t.generation) {
            self.install(t);
        }
    }

    fn install(&mut self, t: &Tables) {
        let mut old_out = std::mem::take(&mut self.out);
        let mut old_in: Vec<InboundEntry> =
            std::mem::take(&mut self.inbound).into_entries().collect();
        let mut inbound = Vec::with_capacity(old_in.len());
        for tun in &t.tunnels {
            let out = match old_out
                .iter()
                .position(|w| Arc::ptr_eq(w.sa(), &tun.out_sa))
            {
                Some(i) => old_out.swap_remove(i),
                None => tun.out_sa.worker(),
            };
            self.out.push(out);
            for (spec, state) in tun.in_specs.iter().zip(&tun.in_states) {
                let entry = match old_in.iter().position(|e| Arc::ptr_eq(&e.spec, spec)) {
                    Some(i) => {
                        let mut e = old_in.swap_remove(i);
                        e.tunnel = tun.id;
                        Some(e)
                    }
                    // Validated when the tables were built.
                    None => {
                        let config = spec.sa_config();
                        // A changed SA under a key this worker already
                        // opens with keeps its window; otherwise the window
                        // starts at the key's recorded position (everything
                        // at or below it counts as seen).
                        let sa = match old_in.iter().position(|e| Arc::ptr_eq(&e.state, state)) {
                            Some(i) => InboundSa::carried_over(&config, &old_in[i].sa),
                            None => match state.top() {
                                0 => InboundSa::new(&config),
                                top => InboundSa::resumed(&config, top),
                            },
                        };
                        sa.ok().map(|sa| InboundEntry {
                            spi: spec.spi,
                            tunnel: tun.id,
                            spec: Arc::clone(spec),
                            state: Arc::clone(state),
                            sa,
                        })
                    }
                };
                inbound.extend(entry);
            }
        }
        // The tables refused duplicate and reserved SPIs already.
        self.inbound = SadIn::new(inbound.into_iter().map(|e| (e.spi, e))).unwrap_or_else(|e| {
            tracing::error!(error = %e, "inbound SAs not installed");
            SadIn::default()
        });
        for mut w in old_out {
            w.flush();
        }
        self.generation = Some(t.generation);
    }
}

impl<P> Pipeline<P> {
    /// Reports the SA lifetime events this worker sees (status period,
    /// never per packet): its inbound SAs' own, and the shared outbound
    /// SAs' (each reported once, by whichever worker polls first).
    pub fn sa_events(&mut self, t: &Tables, now: Instant, mut report: impl FnMut(EngineEvent)) {
        let clock = now.saturating_duration_since(t.epoch);
        for tun in &t.tunnels {
            while let Some(e) = tun.out_sa.poll_event(clock) {
                let bytes = tun.out_sa.bytes_published();
                let dir = SaDirection::Outbound;
                report(sa_event(e, &tun.name, &tun.out_spec, dir, bytes, clock));
            }
        }
        for (_, entry) in self.esp.inbound.iter_mut() {
            let Some(tun) = t.tunnels.get(usize::from(entry.tunnel)) else {
                continue;
            };
            while let Some(e) = entry.sa.poll_event(clock) {
                let bytes = entry.sa.counters().bytes;
                let dir = SaDirection::Inbound;
                report(sa_event(e, &tun.name, &entry.spec, dir, bytes, clock));
            }
        }
    }

    /// This worker's per-SA counters, for the status snapshot.
    pub fn sa_counters(&self, out: &mut Vec<SaCounterInfo>) {
        let info = |tunnel: u16, spi: u32, direction, c: &strait_esp::SaCounters| SaCounterInfo {
            tunnel,
            spi,
            direction,
            packets: c.packets,
            bytes: c.bytes,
            drops: c.nonzero_drops().collect(),
        };
        for (i, w) in self.esp.out.iter().enumerate() {
            out.push(info(
                i as u16,
                w.sa().spi(),
                SaDirection::Outbound,
                w.counters(),
            ));
        }
        for (_, e) in self.esp.inbound.iter() {
            out.push(info(e.tunnel, e.spi, SaDirection::Inbound, e.sa.counters()));
        }
    }
}
