//! SA lifetimes (RFC 4301 §4.4.2.1): a soft limit asks the key exchange to
//! rekey, a hard limit retires the SA. Time is whatever monotonic clock the
//! caller uses, passed in as a [`Duration`] since its epoch; this crate never
//! reads a clock.

use core::time::Duration;

use crate::error::ConfigError;

/// Soft and hard limits in bytes of inner packets and in seconds of age.
/// `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifetime {
    /// Bytes after which a rekey is requested.
    pub soft_bytes: Option<u64>,
    /// Bytes after which the SA refuses traffic.
    pub hard_bytes: Option<u64>,
    /// Age after which a rekey is requested.
    pub soft_time: Option<Duration>,
    /// Age after which the SA refuses traffic.
    pub hard_time: Option<Duration>,
}

impl Lifetime {
    /// No limits at all.
    pub const UNLIMITED: Lifetime = Lifetime {
        soft_bytes: None,
        hard_bytes: None,
        soft_time: None,
        hard_time: None,
    };

    /// Checks that each soft limit lies below its hard limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let (Some(soft), Some(hard)) = (self.soft_bytes, self.hard_bytes) {
            if soft >= hard {
                return Err(ConfigError::Lifetime {
                    kind: "byte",
                    soft,
                    hard,
                });
            }
        }
        if let (Some(soft), Some(hard)) = (self.soft_time, self.hard_time) {
            if soft >= hard {
                return Err(ConfigError::Lifetime {
                    kind: "time",
                    soft: soft.as_secs(),
                    hard: hard.as_secs(),
                });
            }
        }
        Ok(())
    }
}

/// Where an SA stands against its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LifetimeState {
    /// Below every soft limit.
    Fresh,
    /// A soft limit passed: rekey now, traffic still flows.
    RekeyNeeded,
    /// A hard limit passed: the SA refuses traffic.
    Expired,
}

/// Absolute deadlines computed once at SA creation, so the per-packet check
/// is two comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadlines {
    pub soft_bytes: u64,
    pub hard_bytes: u64,
    pub soft_at: Duration,
    pub hard_at: Duration,
}

impl Deadlines {
    pub fn new(lifetime: &Lifetime, created: Duration) -> Self {
        let at = |d: Option<Duration>| d.map_or(Duration::MAX, |d| created.saturating_add(d));
        Deadlines {
            soft_bytes: lifetime.soft_bytes.unwrap_or(u64::MAX),
            hard_bytes: lifetime.hard_bytes.unwrap_or(u64::MAX),
            soft_at: at(lifetime.soft_time),
            hard_at: at(lifetime.hard_time),
        }
    }

    /// State after `bytes` bytes at time `now`.
    #[inline]
    pub fn state(&self, bytes: u64, now: Duration) -> LifetimeState {
        if bytes >= self.hard_bytes || now >= self.hard_at {
            LifetimeState::Expired
        } else if bytes >= self.soft_bytes || now >= self.soft_at {
            LifetimeState::RekeyNeeded
        } else {
            LifetimeState::Fresh
        }
    }
}

/// Events an SA reports to the control plane, each at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaEvent {
    /// A soft lifetime passed: negotiate a replacement SA.
    RekeyNeeded,
    /// A hard lifetime passed or the sequence space ran out: the SA now
    /// refuses traffic and should be removed.
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_must_be_below_hard() {
        let l = Lifetime {
            soft_bytes: Some(10),
            hard_bytes: Some(10),
            ..Lifetime::UNLIMITED
        };
        assert!(matches!(
            l.validate(),
            Err(ConfigError::Lifetime { kind: "byte", .. })
        ));
        let l = Lifetime {
            soft_time: Some(Duration::from_secs(5)),
            hard_time: Some(Duration::from_secs(4)),
            ..Lifetime::UNLIMITED
        };
        assert!(l.validate().is_err());
        assert!(Lifetime::UNLIMITED.validate().is_ok());
    }

    #[test]
    fn deadlines_count_from_creation() {
        let l = Lifetime {
            soft_bytes: Some(100),
            hard_bytes: Some(200),
            soft_time: Some(Duration::from_secs(10)),
            hard_time: Some(Duration::from_secs(20)),
        };
        let d = Deadlines::new(&l, Duration::from_secs(1000));
        let t = |s| Duration::from_secs(s);
        assert_eq!(d.state(0, t(1009)), LifetimeState::Fresh);
        assert_eq!(d.state(0, t(1010)), LifetimeState::RekeyNeeded);
        assert_eq!(d.state(99, t(1000)), LifetimeState::Fresh);
        assert_eq!(d.state(100, t(1000)), LifetimeState::RekeyNeeded);
        assert_eq!(d.state(200, t(1000)), LifetimeState::Expired);
        assert_eq!(d.state(0, t(1020)), LifetimeState::Expired);
        let never = Deadlines::new(&Lifetime::UNLIMITED, t(5));
        assert_eq!(
            never.state(u64::MAX - 1, Duration::from_secs(u64::MAX / 2)),
            LifetimeState::Fresh
        );
    }
}
