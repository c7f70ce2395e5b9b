//! Rate limiting of refused sources: a source whose registrations keep
//! failing (a wrong key, an unknown serial, or someone guessing) may start
//! a new IKE SA only now and then, so a hub does not spend a DH exchange
//! and an AUTH check on every guess.
//!
//! Each source has a bucket of [`BURST`] attempts, one back every
//! [`REFILL`]; each refusal takes one. An empty bucket drops the source's
//! new IKE_SA_INIT requests (counted); its established IKE SAs carry on,
//! and so do other devices behind the same address once a token is back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Refusals a source may collect before it is limited. Devices behind
/// one NAT share a source: a misconfigured one retrying with backoff
/// (1, 2, 4 … 30 s) must not use up the allowance of a good one beside
/// it, so the refill (12 a minute) outpaces such a device; a guesser
/// firing as fast as answers come is held to it.
pub const BURST: u32 = 10;
/// Time that gives a limited source one more attempt.
pub const REFILL: Duration = Duration::from_secs(5);
/// Sources remembered at most; past that, the ones whose buckets are full
/// again are forgotten, and when none is, new sources go unlimited (a
/// flood from many addresses is the COOKIE's job, RFC 7296 §2.6).
pub const SOURCES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Duration,
}

/// The buckets of all sources refused lately.
#[derive(Debug, Default)]
pub struct RefusalLimiter {
    sources: HashMap<IpAddr, Bucket>,
}

impl RefusalLimiter {
    fn refill(b: &mut Bucket, now: Duration) {
        let gained = now.saturating_sub(b.at).as_secs_f64() / REFILL.as_secs_f64();
        b.tokens = (b.tokens + gained).min(f64::from(BURST));
        b.at = now;
    }

    /// A registration from `ip` was refused at `now`. True when this
    /// refusal empties its bucket (worth one log line).
    pub fn refused(&mut self, ip: IpAddr, now: Duration) -> bool {
        if !self.sources.contains_key(&ip) && self.sources.len() >= SOURCES {
            self.sources.retain(|_, b| {
                Self::refill(b, now);
                b.tokens < f64::from(BURST)
            });
            if self.sources.len() >= SOURCES {
                return false;
            }
        }
        let b = self.sources.entry(ip).or_insert(Bucket {
            tokens: f64::from(BURST),
            at: now,
        });
        Self::refill(b, now);
        let was = b.tokens >= 1.0;
        b.tokens = (b.tokens - 1.0).max(0.0);
        was && b.tokens < 1.0
    }

    /// Whether `ip` may start a new IKE SA at `now`.
    pub fn allows(&mut self, ip: IpAddr, now: Duration) -> bool {
        match self.sources.get_mut(&ip) {
            None => true,
            Some(b) => {
                Self::refill(b, now);
                b.tokens >= 1.0
            }
        }
    }

    /// Sources remembered now.
    pub fn len(&self) -> usize {
        self.sources.len()
    }
}

/// Whether `payload` (a UDP payload to port 500, or to 4500 with the
/// non-ESP marker) is an IKE_SA_INIT request: the start of a new IKE SA
/// (RFC 7296 §3.1: exchange type 34, Response flag clear, responder's
/// SPI zero).
pub fn is_ike_sa_init_request(payload: &[u8], port: u16) -> bool {
    let h = if port == strait_dataplane::IKE_PORT {
        payload
    } else {
        payload.get(4..).unwrap_or_default()
    };
    h.len() >= 28 && h[18] == 34 && h[19] & 0x20 == 0 && h[8..16] == [0; 8]
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 8));

    #[test]
    fn a_source_is_limited_after_its_burst_and_recovers_with_time() {
        let mut l = RefusalLimiter::default();
        let t = Duration::from_secs(100);
        for i in 1..BURST {
            assert!(!l.refused(A, t), "refusal {i}");
            assert!(l.allows(A, t));
        }
        assert!(l.refused(A, t), "the last token goes");
        assert!(!l.allows(A, t));
        assert!(l.allows(B, t), "other sources are not affected");
        assert!(!l.allows(A, t + REFILL / 2));
        assert!(l.allows(A, t + REFILL), "one attempt back");
        // That attempt fails too: limited again at once.
        assert!(l.refused(A, t + REFILL));
        assert!(!l.allows(A, t + REFILL));
        assert!(l.allows(A, t + REFILL * 2));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_forgiven_sources_first() {
        let mut l = RefusalLimiter::default();
        let t = Duration::from_secs(1);
        for i in 0..SOURCES as u32 {
            l.refused(IpAddr::V4(i.into()), t);
        }
        assert_eq!(l.len(), SOURCES);
        // Still within the refill time: nothing forgiven, a new source
        // goes unrecorded.
        assert!(!l.refused(A, t));
        assert_eq!(l.len(), SOURCES);
        // Long after: the old ones are full again and forgotten.
        let later = t + REFILL * 10;
        l.refused(A, later);
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn only_ike_sa_init_requests_are_recognised() {
        let mut h = [0u8; 28];
        h[..8].copy_from_slice(&[1; 8]);
        h[17] = 0x20;
        h[18] = 34;
        h[19] = 0x08;
        assert!(is_ike_sa_init_request(&h, 500));
        let mut marked = vec![0u8; 4];
        marked.extend_from_slice(&h);
        assert!(is_ike_sa_init_request(&marked, 4500));
        let mut answer = h;
        answer[19] = 0x20;
        assert!(!is_ike_sa_init_request(&answer, 500));
        let mut auth = h;
        auth[18] = 35;
        assert!(!is_ike_sa_init_request(&auth, 500));
        let mut with_spi_r = h;
        with_spi_r[12] = 1;
        assert!(!is_ike_sa_init_request(&with_spi_r, 500));
        assert!(!is_ike_sa_init_request(&h[..27], 500));
    }
}
