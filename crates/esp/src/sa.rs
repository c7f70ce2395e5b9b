//! Security association parameters shared by both directions, and counters.

use core::time::Duration;

use crate::cipher::{CipherSuite, SaCipher};
use crate::error::{ConfigError, DropReason};
use crate::lifetime::{Deadlines, Lifetime};
use crate::replay::DEFAULT_REPLAY_WINDOW;
use crate::selector::TrafficSelectors;

/// Sequence numbers a worker reserves at a time from an outbound SA shared
/// by several workers.
///
/// Trade-off: a larger block means fewer atomic operations, but when two
/// workers transmit on one SA at once the receiver sees the blocks
/// interleaved, and a worker that lags more than the peer's replay window
/// behind another has its packets dropped as too old. Keep
/// `workers * block` within the peer's window, or give each SA one worker.
pub const DEFAULT_SEQ_BLOCK: u32 = 4096;

/// Everything needed to build an SA in one direction.
#[derive(Debug, Clone)]
pub struct SaConfig<'k> {
    /// Security Parameters Index (RFC 4303 §2.1); 256 and above.
    pub spi: u32,
    /// Cipher suite.
    pub cipher: CipherSuite,
    /// Key followed by the 4-byte salt, as IKEv2 derives it
    /// (RFC 4106 §8.1, RFC 7634 §4).
    pub key_material: &'k [u8],
    /// Extended (64-bit) sequence numbers (RFC 4303 §2.2.1).
    pub esn: bool,
    /// Soft and hard lifetimes.
    pub lifetime: Lifetime,
    /// Inner prefixes allowed on this SA.
    pub selectors: TrafficSelectors,
    /// Inbound only: anti-replay window size (multiple of 64, at most 4096).
    pub replay_window: u32,
    /// Outbound only: sequence numbers reserved per worker at a time.
    pub seq_block: u32,
    /// Creation time on the caller's clock; lifetimes count from here.
    pub created: Duration,
}

impl<'k> SaConfig<'k> {
    /// A configuration with ESN on, no lifetimes, any inner addresses, the
    /// default replay window and sequence block.
    pub fn new(spi: u32, cipher: CipherSuite, key_material: &'k [u8], created: Duration) -> Self {
        SaConfig {
            spi,
            cipher,
            key_material,
            esn: true,
            lifetime: Lifetime::UNLIMITED,
            selectors: TrafficSelectors::any(),
            replay_window: DEFAULT_REPLAY_WINDOW,
            seq_block: DEFAULT_SEQ_BLOCK,
            created,
        }
    }
}

/// Immutable parameters common to inbound and outbound SAs.
#[derive(Debug)]
pub(crate) struct SaCore {
    pub spi: u32,
    pub cipher: SaCipher,
    pub esn: bool,
    pub deadlines: Deadlines,
    pub selectors: TrafficSelectors,
}

impl SaCore {
    pub fn new(config: &SaConfig<'_>) -> Result<Self, ConfigError> {
        // RFC 4303 §2.1: 1-255 are reserved by IANA and 0 is for local use
        // only; neither may appear on the wire.
        if config.spi < 256 {
            return Err(ConfigError::ReservedSpi(config.spi));
        }
        config.lifetime.validate()?;
        Ok(SaCore {
            spi: config.spi,
            cipher: SaCipher::new(config.cipher, config.key_material)?,
            esn: config.esn,
            deadlines: Deadlines::new(&config.lifetime, config.created),
            selectors: config.selectors.clone(),
        })
    }

    /// Highest sequence number the SA may carry (RFC 4303 §3.3.3).
    pub fn max_seq(&self) -> u64 {
        if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        }
    }
}

/// Per-SA, per-direction counters, owned by whoever owns the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaCounters {
    /// Packets sealed or opened successfully.
    pub packets: u64,
    /// Inner packet bytes sealed or opened successfully.
    pub bytes: u64,
    drops: [u64; DropReason::COUNT],
}

impl Default for SaCounters {
    fn default() -> Self {
        SaCounters {
            packets: 0,
            bytes: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl SaCounters {
    /// Packets dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// All drops, summed.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Non-zero drop counters with their names, for display.
    pub fn nonzero_drops(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.drops[r.index()]))
            .filter(|(_, n)| *n != 0)
    }

    #[inline]
    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    #[inline]
    pub(crate) fn count_ok(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_spis_and_bad_keys_are_refused() {
        let key = [0u8; 20];
        let c = SaConfig::new(255, CipherSuite::Aes128Gcm, &key, Duration::ZERO);
        assert_eq!(SaCore::new(&c).unwrap_err(), ConfigError::ReservedSpi(255));
        let c = SaConfig::new(256, CipherSuite::Aes256Gcm, &key, Duration::ZERO);
        assert!(matches!(
            SaCore::new(&c).unwrap_err(),
            ConfigError::KeyLength { expected: 36, .. }
        ));
        let c = SaConfig::new(256, CipherSuite::Aes128Gcm, &key, Duration::ZERO);
        let core = SaCore::new(&c).unwrap();
        assert_eq!(core.max_seq(), u64::MAX);
    }

    #[test]
    fn counters_report_by_name() {
        let mut c = SaCounters::default();
        c.count_drop(DropReason::Replay);
        c.count_drop(DropReason::Replay);
        c.count_ok(100);
        assert_eq!(c.drops(DropReason::Replay), 2);
        assert_eq!(c.total_drops(), 2);
        assert_eq!(c.nonzero_drops().collect::<Vec<_>>(), vec![("replay", 2)]);
        assert_eq!((c.packets, c.bytes), (1, 100));
    }
}
