//! Walking the flow set packet by packet, without division on the hot path.

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use super::spec::{FlowOrder, FlowSpec};

/// The per-flow fields of one packet.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FlowKey {
    /// Added to the low 32 bits of the first source address.
    pub src_offset: u32,
    /// Source port (ICMP: echo identifier).
    pub src_port: u16,
    /// Destination port (unused for ICMP).
    pub dst_port: u16,
}

/// Produces the flow of each successive packet.
#[derive(Debug)]
pub struct FlowCursor {
    spec: FlowSpec,
    current: FlowKey,
    rng: SmallRng,
}

impl FlowCursor {
    /// Starts at the first flow; `seed` fixes the random order.
    pub fn new(spec: FlowSpec, seed: u64) -> Self {
        Self {
            spec,
            current: FlowKey {
                src_offset: 0,
                src_port: spec.src_ports.first,
                dst_port: spec.dst_ports.first,
            },
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The flow for the next packet.
    #[inline]
    pub fn next_flow(&mut self) -> FlowKey {
        match self.spec.order {
            FlowOrder::Sequential => {
                let key = self.current;
                self.advance();
                key
            }
            FlowOrder::Random => {
                let r = self.rng.next_u64();
                // Multiply-high maps 32 random bits onto 0..n without division.
                let pick = |bits: u64, n: u32| ((bits & 0xffff_ffff) * u64::from(n)) >> 32;
                FlowKey {
                    src_offset: pick(r, self.spec.src_addrs) as u32,
                    src_port: self.spec.src_ports.first
                        + pick(r >> 32, self.spec.src_ports.len()) as u16,
                    dst_port: self.spec.dst_ports.first
                        + pick(self.rng.next_u64(), self.spec.dst_ports.len()) as u16,
                }
            }
        }
    }

    /// Odometer step: source address fastest, then source port, then
    /// destination port; wraps to the first flow.
    #[inline]
    fn advance(&mut self) {
        let c = &mut self.current;
        c.src_offset += 1;
        if c.src_offset < self.spec.src_addrs {
            return;
        }
        c.src_offset = 0;
        if c.src_port < self.spec.src_ports.last {
            c.src_port += 1;
            return;
        }
        c.src_port = self.spec.src_ports.first;
        c.dst_port = if c.dst_port < self.spec.dst_ports.last {
            c.dst_port + 1
        } else {
            self.spec.dst_ports.first
        };
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::gen::spec::PortRange;

    fn spec(order: FlowOrder) -> FlowSpec {
        FlowSpec {
            src_addrs: 3,
            src_ports: PortRange {
                first: 100,
                last: 104,
            },
            dst_ports: PortRange { first: 7, last: 8 },
            order,
        }
    }

    #[test]
    fn sequential_visits_every_flow_once_per_cycle() {
        let s = spec(FlowOrder::Sequential);
        let mut cursor = FlowCursor::new(s, 1);
        let n = s.count() as usize;
        let first: Vec<_> = (0..n).map(|_| cursor.next_flow()).collect();
        let unique: HashSet<_> = first.iter().copied().collect();
        assert_eq!(unique.len(), n);
        // The next cycle repeats the first one exactly.
        let second: Vec<_> = (0..n).map(|_| cursor.next_flow()).collect();
        assert_eq!(first, second);
    }

    #[test]
    fn random_stays_in_range_and_covers_the_set() {
        let s = spec(FlowOrder::Random);
        let mut cursor = FlowCursor::new(s, 42);
        let mut seen = HashSet::new();
        for _ in 0..5_000 {
            let k = cursor.next_flow();
            assert!(k.src_offset < 3);
            assert!((100..=104).contains(&k.src_port));
            assert!((7..=8).contains(&k.dst_port));
            seen.insert(k);
        }
        assert_eq!(seen.len() as u64, s.count());
    }

    #[test]
    fn a_million_flows_cycle_exactly() {
        let s = FlowSpec {
            src_addrs: 16,
            src_ports: PortRange {
                first: 1024,
                last: 1024 + 255,
            },
            dst_ports: PortRange {
                first: 1,
                last: 256,
            },
            order: FlowOrder::Sequential,
        };
        assert_eq!(s.count(), 1 << 20);
        let mut cursor = FlowCursor::new(s, 0);
        let first = cursor.next_flow();
        for _ in 1..s.count() {
            assert_ne!(cursor.next_flow(), first);
        }
        assert_eq!(cursor.next_flow(), first);
    }
}
