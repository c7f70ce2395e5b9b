//! `CLOCK_MONOTONIC` in nanoseconds: the clock the probe timestamps use.
//!
//! `std::time::Instant` reads the same clock but does not expose its value,
//! and sender and receiver (same host, possibly different processes) must
//! agree on the epoch, so the raw clock is read here.

pub use crate::sys::monotonic_ns;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_monotonic_and_tracks_sleep() {
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_ns();
        assert!(b >= a + 2_000_000, "{a} -> {b}");
    }
}
