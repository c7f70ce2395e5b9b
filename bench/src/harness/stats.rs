//! Median and range of repeated trials.
//!
//! The test machines are shared and noisy (±15–20 % between runs), so every
//! figure is repeated and quoted as its median with the smallest and largest
//! value seen, never as a single trial or a mean that one outlier drags.

use std::fmt;

/// Median, minimum and maximum of a set of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Number of values.
    pub n: usize,
}

impl Spread {
    /// The spread of `values`, ignoring NaNs; `None` when nothing is left.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// Every field multiplied by `k` (unit changes).
    pub fn scaled(self, k: f64) -> Spread {
        let (a, b) = (self.min * k, self.max * k);
        Spread {
            median: self.median * k,
            min: a.min(b),
            max: a.max(b),
            n: self.n,
        }
    }

    /// Formats as `median (min–max)` with `decimals` places.
    pub fn show(&self, decimals: usize) -> String {
        if self.n == 1 || self.min == self.max {
            format!("{:.*}", decimals, self.median)
        } else {
            format!(
                "{:.*} ({:.*}–{:.*})",
                decimals, self.median, decimals, self.min, decimals, self.max
            )
        }
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.show(f.precision().unwrap_or(2)))
    }
}

/// Formats an optional spread, `—` when absent.
pub fn show(s: Option<Spread>, decimals: usize) -> String {
    s.map_or_else(|| "—".to_owned(), |s| s.show(decimals))
}

/// Ratio of two medians, `None` if the denominator is zero or missing.
pub fn ratio(num: Option<Spread>, den: Option<Spread>) -> Option<f64> {
    let (n, d) = (num?, den?);
    (d.median > 0.0).then(|| n.median / d.median)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_count_takes_the_middle_value() {
        let s = Spread::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 5.0, 3));
    }

    #[test]
    fn even_count_averages_the_middle_pair() {
        let s = Spread::of(&[4.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!(s.median, 3.0);
        assert_eq!((s.min, s.max), (1.0, 10.0));
    }

    #[test]
    fn nans_are_ignored_and_empty_is_none() {
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[f64::NAN]).is_none());
        let s = Spread::of(&[f64::NAN, 2.0]).unwrap();
        assert_eq!((s.median, s.n), (2.0, 1));
    }

    #[test]
    fn scaling_by_a_negative_keeps_min_below_max() {
        let s = Spread::of(&[1.0, 2.0, 3.0]).unwrap().scaled(-1.0);
        assert_eq!((s.median, s.min, s.max), (-2.0, -3.0, -1.0));
    }

    #[test]
    fn display_shows_range_only_when_there_is_one() {
        assert_eq!(
            Spread::of(&[1.0, 2.0, 4.0]).unwrap().show(1),
            "2.0 (1.0–4.0)"
        );
        assert_eq!(Spread::of(&[7.0]).unwrap().show(0), "7");
        assert_eq!(show(None, 1), "—");
    }

    #[test]
    fn ratio_of_medians() {
        let a = Spread::of(&[2.0, 4.0, 6.0]);
        let b = Spread::of(&[1.0, 2.0, 3.0]);
        assert_eq!(ratio(a, b), Some(2.0));
        assert_eq!(ratio(a, Spread::of(&[0.0])), None);
        assert_eq!(ratio(None, b), None);
    }
}
