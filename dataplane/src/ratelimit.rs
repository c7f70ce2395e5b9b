//! Token buckets: for locally generated ICMP errors (RFC 1812 §4.3.2.8: a
//! router must be able to limit the rate of ICMP errors it sends), for
//! frames handed to the host stack, and for new unresolved neighbours.
//!
//! Each bucket belongs to one worker; refilled from the worker's coarse
//! clock, so the check costs a subtraction and a compare.

use std::time::Instant;

/// A token bucket: `rate` tokens per second, at most `burst` saved.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u32,
    burst: u32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst: burst.max(1),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(f64::from(self.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert_eq!((0..5).filter(|_| b.take(t0)).count(), 3);
        // 100 ms at 10/s earns exactly one token.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // A long pause never saves more than the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(t2)).count(), 3);
    }

    #[test]
    fn zero_rate_allows_only_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 1, t0);
        assert!(b.take(t0));
        assert!(!b.take(t0 + Duration::from_secs(100)));
    }
}
