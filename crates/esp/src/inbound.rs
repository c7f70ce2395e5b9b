//! Inbound processing (RFC 4303 §3.4): SPI lookup, replay check, ICV
//! verification and decryption in place, then trailer and inner checks.
//!
//! An [`InboundSa`] is owned by one worker (steer each SPI to one worker,
//! e.g. by RSS on the SPI), so its replay window needs no atomics.

use core::ops::Range;
use core::time::Duration;

use crate::cipher::CipherSuite;
use crate::error::{ConfigError, DropReason};
use crate::inner;
use crate::lifetime::{LifetimeState, SaEvent};
use crate::packet::{peek_spi, EspPacket, NextHeader, ESP_HEADROOM, MIN_PACKET_LEN, TRAILER_LEN};
use crate::replay::ReplayWindow;
use crate::sa::{SaConfig, SaCore, SaCounters};

/// Next header value of a dummy packet (RFC 4303 §2.6).
const NEXT_HEADER_NONE: u8 = 59;

/// A successfully opened packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Range of the decrypted inner IP packet in the buffer, without ESP
    /// padding or TFC padding.
    pub inner: Range<usize>,
    /// Inner protocol from the ESP trailer.
    pub next_header: NextHeader,
    /// Full (ESN-reconstructed) sequence number.
    pub seq: u64,
}

/// Inbound SA: immutable parameters plus the owner's replay window,
/// lifetime tally and counters.
#[derive(Debug)]
pub struct InboundSa {
    core: SaCore,
    window: ReplayWindow,
    /// Authenticated inner bytes, for the byte lifetime.
    bytes: u64,
    rekey_reported: bool,
    expired_reported: bool,
    counters: SaCounters,
}

impl InboundSa {
    /// Builds an SA with an empty replay window.
    pub fn new(config: &SaConfig<'_>) -> Result<Self, ConfigError> {
        Ok(InboundSa {
            core: SaCore::new(config)?,
            window: ReplayWindow::new(config.replay_window)?,
            bytes: 0,
            rekey_reported: false,
            expired_reported: false,
            counters: SaCounters::default(),
        })
    }

    /// Builds an SA whose highest received sequence number is `highest_seq`,
    /// e.g. on a standby after failover; everything at or below it is
    /// treated as already received.
    pub fn resumed(config: &SaConfig<'_>, highest_seq: u64) -> Result<Self, ConfigError> {
        let core = SaCore::new(config)?;
        if highest_seq > core.max_seq() {
            return Err(ConfigError::ResumeSeq(highest_seq));
        }
        Ok(InboundSa {
            window: ReplayWindow::resumed(config.replay_window, highest_seq)?,
            core,
            bytes: 0,
            rekey_reported: false,
            expired_reported: false,
            counters: SaCounters::default(),
        })
    }

    /// Rebuilds `from` for a changed `config` under the same key (new
    /// selectors or lifetimes): the replay window carries over, exactly
    /// when its size is unchanged, else resumed at its top; the byte tally
    /// carries over too. A fresh window would accept every packet seen
    /// under the key once more.
    pub fn carried_over(config: &SaConfig<'_>, from: &InboundSa) -> Result<Self, ConfigError> {
        let mut sa = if config.replay_window == from.window.size() {
            let mut sa = Self::new(config)?;
            sa.window = from.window.clone();
            sa
        } else {
            Self::resumed(config, from.window.top())?
        };
        sa.bytes = from.bytes;
        Ok(sa)
    }

    /// The SPI this SA receives.
    pub fn spi(&self) -> u32 {
        self.core.spi
    }

    /// Cipher suite.
    pub fn cipher(&self) -> CipherSuite {
        self.core.cipher.suite()
    }

    /// Whether 64-bit sequence numbers are in use.
    pub fn esn(&self) -> bool {
        self.core.esn
    }

    /// Counters, including a drop counter per reason.
    pub fn counters(&self) -> &SaCounters {
        &self.counters
    }

    /// The replay window.
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.window
    }

    /// Lifetime state at `now`.
    pub fn lifetime_state(&self, now: Duration) -> LifetimeState {
        self.core.deadlines.state(self.bytes, now)
    }

    /// Reports `RekeyNeeded` once a soft limit passes and `Expired` once a
    /// hard limit passes, each once.
    pub fn poll_event(&mut self, now: Duration) -> Option<SaEvent> {
        let state = self.lifetime_state(now);
        if state >= LifetimeState::RekeyNeeded && !self.rekey_reported {
            self.rekey_reported = true;
            return Some(SaEvent::RekeyNeeded);
        }
        if state == LifetimeState::Expired && !self.expired_reported {
            self.expired_reported = true;
            return Some(SaEvent::Expired);
        }
        None
    }

    /// Verifies and decrypts the ESP packet at `buf[esp]` in place and
    /// returns where the inner packet is. Every failure is counted under
    /// its reason.
    pub fn open(
        &mut self,
        buf: &mut [u8],
        esp: Range<usize>,
        now: Duration,
    ) -> Result<Opened, DropReason> {
        let r = self.open_inner(buf, esp, now);
        match &r {
            Ok(o) => self.counters.count_ok(o.inner.len()),
            Err(reason) => self.counters.count_drop(*reason),
        }
        r
    }

    fn open_inner(
        &mut self,
        buf: &mut [u8],
        esp: Range<usize>,
        now: Duration,
    ) -> Result<Opened, DropReason> {
        let packet = buf.get_mut(esp.clone()).ok_or(DropReason::Truncated)?;
        let pkt = EspPacket::new_checked(&packet[..])?;
        if pkt.spi() != self.core.spi {
            return Err(DropReason::BadSpi);
        }
        let seq = if self.core.esn {
            self.window.infer_esn(pkt.seq_low())?
        } else {
            u64::from(pkt.seq_low())
        };
        // Cheap duplicate rejection before spending cycles on the ICV
        // (RFC 4303 §3.4.3); the window itself changes only after the ICV.
        self.window.check(seq)?;
        if self.core.deadlines.state(self.bytes, now) == LifetimeState::Expired {
            return Err(DropReason::SaExpired);
        }

        let plain_len = self
            .core
            .cipher
            .open_packet(packet, seq, self.core.esn)
            .map_err(|_| DropReason::AuthFailed)?;
        // Authenticated: the sender really used this number, so record it
        // even if the payload turns out malformed below.
        self.window.accept(seq)?;
        self.bytes = self.bytes.saturating_add(plain_len as u64);

        let plain = &packet[ESP_HEADROOM..ESP_HEADROOM + plain_len];
        debug_assert!(plain_len >= MIN_PACKET_LEN - ESP_HEADROOM - 16);
        let pad_len = usize::from(plain[plain_len - 2]);
        let next_header = plain[plain_len - 1];
        let payload_len = plain_len
            .checked_sub(TRAILER_LEN + pad_len)
            .ok_or(DropReason::BadPadding)?;
        // RFC 4303 §2.4: default padding is 1, 2, 3, ...; the receiver
        // SHOULD check it.
        let pad = &plain[payload_len..payload_len + pad_len];
        if pad
            .iter()
            .enumerate()
            .any(|(i, &b)| usize::from(b) != i + 1)
        {
            return Err(DropReason::BadPadding);
        }
        let expected = match next_header {
            4 => NextHeader::Ipv4,
            41 => NextHeader::Ipv6,
            NEXT_HEADER_NONE => return Err(DropReason::DummyPacket),
            _ => return Err(DropReason::BadInner),
        };
        let info = inner::inspect(&plain[..payload_len])?;
        if info.next_header != expected {
            return Err(DropReason::BadInner);
        }
        // RFC 4301 §5.2 step 4: inner addresses must match the SA's selectors.
        if !self.core.selectors.allows(info.src, info.dst) {
            return Err(DropReason::SelectorMismatch);
        }
        let inner_start = esp.start + ESP_HEADROOM;
        Ok(Opened {
            inner: inner_start..inner_start + info.len,
            next_header: expected,
            seq,
        })
    }
}

/// Inbound SA database: an immutable map from SPI to `T`, built once by the
/// control plane and published whole (swap the snapshot, never edit it).
///
/// `T` is whatever the owner needs per SPI: the [`InboundSa`] itself when a
/// worker owns its table, or an index into worker-owned state when the
/// table is shared. Lookup is a binary search over a sorted SPI array.
#[derive(Debug, Clone)]
pub struct SadIn<T> {
    spis: Box<[u32]>,
    entries: Box<[T]>,
}

impl<T> Default for SadIn<T> {
    fn default() -> Self {
        SadIn {
            spis: Box::new([]),
            entries: Box::new([]),
        }
    }
}

impl<T> SadIn<T> {
    /// Builds the map, refusing reserved and duplicate SPIs.
    pub fn new(entries: impl IntoIterator<Item = (u32, T)>) -> Result<Self, ConfigError> {
        let mut pairs: Vec<(u32, T)> = entries.into_iter().collect();
        pairs.sort_unstable_by_key(|(spi, _)| *spi);
        for w in pairs.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(ConfigError::DuplicateSpi(w[0].0));
            }
        }
        if let Some((spi, _)) = pairs.iter().find(|(spi, _)| *spi < 256) {
            return Err(ConfigError::ReservedSpi(*spi));
        }
        let spis = pairs.iter().map(|(spi, _)| *spi).collect();
        let entries = pairs.into_iter().map(|(_, t)| t).collect();
        Ok(SadIn { spis, entries })
    }

    /// Number of SAs.
    pub fn len(&self) -> usize {
        self.spis.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spis.is_empty()
    }

    /// Entry for `spi`.
    #[inline]
    pub fn get(&self, spi: u32) -> Option<&T> {
        self.spis.binary_search(&spi).ok().map(|i| &self.entries[i])
    }

    /// Mutable entry for `spi` (the map's shape stays fixed).
    #[inline]
    pub fn get_mut(&mut self, spi: u32) -> Option<&mut T> {
        match self.spis.binary_search(&spi) {
            Ok(i) => Some(&mut self.entries[i]),
            Err(_) => None,
        }
    }

    /// Entry for the SPI at the start of an ESP packet.
    #[inline]
    pub fn lookup(&self, esp_packet: &[u8]) -> Result<&T, DropReason> {
        self.get(peek_spi(esp_packet)?).ok_or(DropReason::BadSpi)
    }

    /// Mutable entry for the SPI at the start of an ESP packet.
    #[inline]
    pub fn lookup_mut(&mut self, esp_packet: &[u8]) -> Result<&mut T, DropReason> {
        self.get_mut(peek_spi(esp_packet)?)
            .ok_or(DropReason::BadSpi)
    }

    /// SPIs and entries in SPI order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.spis.iter().copied().zip(self.entries.iter())
    }

    /// Mutable entries in SPI order (the map's shape stays fixed).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        self.spis.iter().copied().zip(self.entries.iter_mut())
    }

    /// The entries, in SPI order, taking the map apart (to rebuild it with
    /// what a new configuration keeps).
    pub fn into_entries(self) -> impl Iterator<Item = T> {
        self.entries.into_vec().into_iter()
    }
}

impl SadIn<InboundSa> {
    /// Builds a SAD keyed by each SA's own SPI.
    pub fn from_sas(sas: impl IntoIterator<Item = InboundSa>) -> Result<Self, ConfigError> {
        Self::new(sas.into_iter().map(|sa| (sa.spi(), sa)))
    }

    /// Looks the packet's SPI up and opens it with that SA.
    pub fn open(
        &mut self,
        buf: &mut [u8],
        esp: Range<usize>,
        now: Duration,
    ) -> Result<Opened, DropReason> {
        let packet = buf.get(esp.clone()).ok_or(DropReason::Truncated)?;
        let sa = self.lookup_mut(packet)?;
        sa.open(buf, esp, now)
    }
}
