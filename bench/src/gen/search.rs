//! RFC 2544 §26.1-style throughput search, run the way FD.io CSIT runs it:
//! one binary search that narrows two intervals at once, the non-drop rate
//! (NDR: highest rate with zero loss) and the partial-drop rate (PDR:
//! highest rate with loss at most a ratio, 0.1 % by default), each trial a
//! fixed-length run, the number of trials bounded.
//!
//! The search is sans-I/O: it proposes a rate, the caller runs a trial and
//! reports the loss ratio back. That keeps it testable with a model device.

use serde::Serialize;

/// Search bounds and goals.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SearchConfig {
    /// Lowest rate considered (pps).
    pub min_pps: f64,
    /// Highest rate considered (pps): usually the measured max of the sender.
    pub max_pps: f64,
    /// Loss ratio the PDR may have (0.001 = 0.1 %).
    pub pdr_loss: f64,
    /// Stop narrowing an interval when it is this narrow relative to its
    /// upper end (0.01 = 1 %).
    pub precision: f64,
    /// Most trials.
    pub max_trials: u32,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            min_pps: 1000.0,
            max_pps: 1_000_000.0,
            pdr_loss: 0.001,
            precision: 0.01,
            max_trials: 20,
        }
    }
}

/// One trial of a search.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Trial {
    /// Rate the search asked for (pps).
    pub offered_pps: f64,
    /// Rate the sender actually achieved (pps); the trial counts at this
    /// rate, so a sender that cannot keep up never inflates the result.
    pub achieved_pps: f64,
    /// Measured loss ratio (0..=1).
    pub loss_ratio: f64,
}

/// A search's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SearchResult {
    /// Highest rate seen with zero loss; `null` if even the minimum lost.
    pub ndr_pps: Option<f64>,
    /// Highest rate seen with loss ≤ the PDR ratio.
    pub pdr_pps: Option<f64>,
    /// The PDR loss ratio used.
    pub pdr_loss: f64,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
    /// True if both intervals reached the precision before the trial limit.
    pub converged: bool,
}

/// Lower bound (passed) and upper bound (failed) of one goal.
#[derive(Clone, Copy, Debug)]
struct Interval {
    lo: Option<f64>,
    hi: Option<f64>,
}

/// The state of an NDR/PDR search.
#[derive(Debug)]
pub struct RateSearch {
    cfg: SearchConfig,
    ndr: Interval,
    pdr: Interval,
    trials: Vec<Trial>,
}

impl RateSearch {
    /// A search over `cfg`.
    pub fn new(cfg: SearchConfig) -> Self {
        Self {
            cfg,
            ndr: Interval { lo: None, hi: None },
            pdr: Interval { lo: None, hi: None },
            trials: Vec::new(),
        }
    }

    fn narrow_enough(&self, i: Interval) -> bool {
        match (i.lo, i.hi) {
            (Some(lo), Some(hi)) => hi - lo <= self.cfg.precision * hi,
            // Passed at max: nothing above to find.
            (Some(lo), None) => lo >= self.cfg.max_pps,
            // Failed at min: nothing below to find.
            (None, Some(hi)) => hi <= self.cfg.min_pps,
            (None, None) => false,
        }
    }

    /// The next rate to try, or `None` when done (converged or out of trials).
    pub fn next_rate(&self) -> Option<f64> {
        if self.trials.len() as u32 >= self.cfg.max_trials {
            return None;
        }
        // NDR first, then PDR (whose interval the NDR trials already narrowed).
        for i in [self.ndr, self.pdr] {
            if self.narrow_enough(i) {
                continue;
            }
            return Some(match (i.lo, i.hi) {
                (None, None) => self.cfg.max_pps,
                (Some(lo), None) => (lo * 2.0).min(self.cfg.max_pps),
                (None, Some(hi)) => (hi / 2.0).max(self.cfg.min_pps),
                (Some(lo), Some(hi)) => (lo + hi) / 2.0,
            });
        }
        None
    }

    /// Records a trial's result: asked for `offered_pps`, sent at
    /// `achieved_pps`, lost `loss_ratio`. A pass counts at the achieved
    /// rate (a slow sender proves nothing above it); a failure at the
    /// offered one.
    pub fn record(&mut self, offered_pps: f64, achieved_pps: f64, loss_ratio: f64) {
        self.trials.push(Trial {
            offered_pps,
            achieved_pps,
            loss_ratio,
        });
        let passed_at = achieved_pps.min(offered_pps);
        let update = |i: &mut Interval, pass: bool| {
            if pass {
                i.lo = Some(i.lo.map_or(passed_at, |lo| lo.max(passed_at)));
            } else {
                i.hi = Some(i.hi.map_or(offered_pps, |hi| hi.min(offered_pps)));
            }
            // A noisy device can pass above a failure; trust the newer result.
            if let (Some(lo), Some(hi)) = (i.lo, i.hi) {
                if lo >= hi {
                    if pass {
                        i.hi = None;
                    } else {
                        i.lo = None;
                    }
                }
            }
        };
        update(&mut self.ndr, loss_ratio <= 0.0);
        update(&mut self.pdr, loss_ratio <= self.cfg.pdr_loss);
    }

    /// Runs the search with `trial(rate) -> (achieved rate, loss ratio)`.
    pub fn run<E>(
        mut self,
        mut trial: impl FnMut(f64) -> Result<(f64, f64), E>,
    ) -> Result<SearchResult, E> {
        while let Some(rate) = self.next_rate() {
            let (achieved, loss) = trial(rate)?;
            self.record(rate, achieved, loss);
        }
        Ok(self.result())
    }

    /// The result so far.
    pub fn result(&self) -> SearchResult {
        SearchResult {
            ndr_pps: self.ndr.lo,
            pdr_pps: self.pdr.lo,
            pdr_loss: self.cfg.pdr_loss,
            trials: self.trials.clone(),
            converged: self.narrow_enough(self.ndr) && self.narrow_enough(self.pdr),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that forwards up to `capacity` pps losslessly, then drops
    /// the excess, plus a constant background loss below the PDR ratio
    /// from `noisy_above` pps.
    fn model(capacity: f64, noisy_above: f64) -> impl FnMut(f64) -> Result<(f64, f64), ()> {
        move |r| {
            let excess = if r > capacity {
                (r - capacity) / r
            } else {
                0.0
            };
            let background = if r > noisy_above { 0.0005 } else { 0.0 };
            Ok((r, excess + background))
        }
    }

    #[test]
    fn finds_ndr_and_pdr_within_precision() {
        let cfg = SearchConfig {
            min_pps: 10_000.0,
            max_pps: 2_000_000.0,
            precision: 0.005,
            max_trials: 40,
            ..SearchConfig::default()
        };
        let r = RateSearch::new(cfg)
            .run(model(700_000.0, 400_000.0))
            .unwrap();
        assert!(r.converged, "{r:?}");
        let ndr = r.ndr_pps.unwrap();
        let pdr = r.pdr_pps.unwrap();
        // Truth: NDR = 400 kpps (background loss above it), PDR ≈ 700 kpps
        // × (1 + 0.0005) (excess loss plus background ≤ 0.1 %).
        assert!((400_000.0 * 0.99..=400_000.0).contains(&ndr), "ndr {ndr}");
        let pdr_truth = 700_000.0 / (1.0 - 0.0005);
        assert!((pdr_truth * 0.99..=pdr_truth).contains(&pdr), "pdr {pdr}");
        assert!(r.trials.len() <= 40);
    }

    #[test]
    fn lossless_device_ends_at_max_in_one_trial() {
        let cfg = SearchConfig::default();
        let r = RateSearch::new(cfg)
            .run(model(f64::INFINITY, f64::INFINITY))
            .unwrap();
        assert_eq!(r.trials.len(), 1);
        assert_eq!(r.ndr_pps, Some(cfg.max_pps));
        assert_eq!(r.pdr_pps, Some(cfg.max_pps));
    }

    #[test]
    fn trial_limit_is_respected() {
        let cfg = SearchConfig {
            max_trials: 3,
            precision: 1e-9,
            ..SearchConfig::default()
        };
        let r = RateSearch::new(cfg)
            .run(model(123_456.0, f64::INFINITY))
            .unwrap();
        assert_eq!(r.trials.len(), 3);
        assert!(!r.converged);
    }

    #[test]
    fn a_sender_that_cannot_keep_up_does_not_inflate_the_ndr() {
        // The sender tops out at 300 kpps; the device would forward 1 Mpps.
        let cfg = SearchConfig {
            max_pps: 1_000_000.0,
            ..SearchConfig::default()
        };
        let r = RateSearch::new(cfg)
            .run(|rate: f64| Ok::<_, ()>((rate.min(300_000.0), 0.0)))
            .unwrap();
        assert_eq!(r.ndr_pps, Some(300_000.0), "{r:?}");
        assert!(r.trials.len() <= cfg.max_trials as usize);
    }

    #[test]
    fn device_dead_at_minimum_reports_none() {
        let cfg = SearchConfig::default();
        let r = RateSearch::new(cfg).run(|r| Ok::<_, ()>((r, 1.0))).unwrap();
        assert_eq!((r.ndr_pps, r.pdr_pps), (None, None));
        assert!(r.converged);
        assert!(r.trials.len() < 20);
    }
}
