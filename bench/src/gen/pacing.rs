//! Token-bucket pacing on the monotonic clock.
//!
//! The bucket is kept as a departure schedule: `next` is the time the next
//! packet may leave, and each packet sent pushes it by its cost (1/pps, or
//! its wire bits / bit rate). The bucket depth is how far `next` may lag
//! behind the clock: after a stall the sender catches up by at most that
//! many packets at once, then runs at the rate again. Time is kept in
//! picoseconds relative to the pacer's start, so per-packet costs are exact
//! to 1 ps and never accumulate rounding.

use super::spec::{Rate, SizeMix, TrafficSpec};

/// Deepest burst allowed after a stall, in time (also bounded by one batch).
const MAX_DEPTH_PS: u64 = 1_000_000_000; // 1 ms

/// Paces a sender to a [`Rate`].
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Cost of each position of the size pattern, in ps; empty = unlimited.
    costs: Vec<u64>,
    pos: usize,
    start_ns: u64,
    next_ps: u64,
    depth_ps: u64,
}

impl Pacer {
    /// A pacer for `rate` over frames sent in `sizes.pattern()` order,
    /// starting at `start_ns`, letting at most `batch` packets out at once
    /// after a stall.
    pub fn new(rate: Rate, sizes: &SizeMix, batch: usize, start_ns: u64) -> Self {
        let entries = sizes.entries();
        let costs: Vec<u64> = match rate {
            Rate::Max => Vec::new(),
            Rate::Pps(pps) => {
                let c = (1e12 / pps).round().max(1.0) as u64;
                vec![c; sizes.pattern().len()]
            }
            Rate::WireBps(bps) => sizes
                .pattern()
                .iter()
                .map(|&i| {
                    let bits = TrafficSpec::wire_bits(entries[usize::from(i)].0) as f64;
                    (bits * 1e12 / bps).round().max(1.0) as u64
                })
                .collect(),
        };
        let max_cost = costs.iter().copied().max().unwrap_or(0);
        let min_cost = costs.iter().copied().min().unwrap_or(0);
        let depth_ps = (min_cost.saturating_mul(batch as u64))
            .min(MAX_DEPTH_PS)
            .max(max_cost);
        Self {
            costs,
            pos: 0,
            start_ns,
            next_ps: 0,
            depth_ps,
        }
    }

    /// True if the pacer does not limit the rate.
    pub fn is_unlimited(&self) -> bool {
        self.costs.is_empty()
    }

    fn now_ps(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.start_ns).saturating_mul(1000)
    }

    /// How many packets (up to `max`) may leave at `now_ns`. Does not
    /// change the schedule; call [`Self::consume`] with the number sent.
    pub fn available(&mut self, now_ns: u64, max: usize) -> usize {
        if self.is_unlimited() {
            return max;
        }
        let now = self.now_ps(now_ns);
        // Bucket depth: do not bank more credit than one burst.
        self.next_ps = self.next_ps.max(now.saturating_sub(self.depth_ps));
        let mut t = self.next_ps;
        let mut pos = self.pos;
        let mut n = 0;
        while n < max && t <= now {
            t += self.costs[pos];
            pos += 1;
            if pos == self.costs.len() {
                pos = 0;
            }
            n += 1;
        }
        n
    }

    /// Records that `n` packets left.
    pub fn consume(&mut self, n: usize) {
        if self.is_unlimited() {
            return;
        }
        for _ in 0..n {
            self.next_ps += self.costs[self.pos];
            self.pos += 1;
            if self.pos == self.costs.len() {
                self.pos = 0;
            }
        }
    }

    /// Nanoseconds from `now_ns` until the next packet is due (0 if due).
    pub fn wait_ns(&self, now_ns: u64) -> u64 {
        if self.is_unlimited() {
            return 0;
        }
        self.next_ps
            .saturating_sub(self.now_ps(now_ns))
            .div_ceil(1000)
    }
}

/// Sleeps most of `ns`, then spins the rest: the kernel's timer slack
/// (50 µs by default, lowered by [`tighten_timer_slack`]) makes short
/// sleeps overshoot.
pub fn wait(ns: u64) {
    const SPIN_NS: u64 = 60_000;
    if ns > SPIN_NS {
        std::thread::sleep(std::time::Duration::from_nanos(ns - SPIN_NS / 2));
    } else if ns > 2_000 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// Lowers this thread's timer slack to 1 µs so paced sleeps wake on time.
pub fn tighten_timer_slack() {
    crate::sys::set_timer_slack_ns(1000);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a pacer with a simulated clock ticking `step_ns`, sending
    /// everything it allows, and returns the packets sent by `end_ns`.
    fn simulate(p: &mut Pacer, step_ns: u64, end_ns: u64, batch: usize) -> u64 {
        let mut sent = 0u64;
        let mut now = 0;
        while now <= end_ns {
            let n = p.available(now, batch);
            p.consume(n);
            sent += n as u64;
            now += step_ns;
        }
        sent
    }

    #[test]
    fn fixed_rate_is_exact_under_any_polling_step() {
        for step in [1_000, 7_919, 100_000, 1_000_000] {
            let mut p = Pacer::new(Rate::Pps(1000.0), &SizeMix::fixed(64), 64, 0);
            // Packets are due at 0, 1 ms, 2 ms, ...: 1001 by t = 1 s inclusive,
            // provided the step lands on 1 s exactly.
            let end = 1_000_000_000 / step * step;
            let expect = end / 1_000_000 + 1;
            assert_eq!(simulate(&mut p, step, end, 64), expect, "step {step}");
        }
    }

    #[test]
    fn bit_rate_accounts_for_each_size_and_framing() {
        // IMIX cycle: 7×64 + 4×594 + 1518 = 4342 bytes + 12×20 framing = 4582 bytes.
        let bits_per_cycle = 4582.0 * 8.0;
        let rate = bits_per_cycle * 1000.0; // 1000 cycles per second
        let mut p = Pacer::new(Rate::WireBps(rate), &SizeMix::imix(), 64, 0);
        let sent = simulate(&mut p, 10_000, 1_000_000_000, 64);
        // 12 000 packets in one second plus the one due at t = 1 s.
        assert!((12_000..=12_001).contains(&sent), "{sent}");
    }

    #[test]
    fn stall_catch_up_is_bounded_by_depth() {
        let mut p = Pacer::new(Rate::Pps(1_000_000.0), &SizeMix::fixed(64), 32, 0);
        assert_eq!(p.available(0, 1000), 1);
        p.consume(1);
        // A 10 ms stall would owe 10 000 packets; only one batch may burst.
        let n = p.available(10_000_000, 1000);
        assert!(n <= 33, "{n}");
        p.consume(n);
        assert_eq!(p.available(10_000_000, 1000), 0);
        assert_eq!(p.wait_ns(10_000_000), 1000);
    }

    #[test]
    fn unlimited_allows_whole_batches() {
        let mut p = Pacer::new(Rate::Max, &SizeMix::fixed(64), 64, 0);
        assert!(p.is_unlimited());
        assert_eq!(p.available(0, 64), 64);
        assert_eq!(p.wait_ns(0), 0);
    }
}
