//! Durable state of SAs with configured keys, so no restart, reload or
//! switch ever seals twice under one (key, sequence number) or accepts a
//! replay again.
//!
//! With AES-GCM and ChaCha20-Poly1305 the IV is the sequence number
//! (RFC 4106 §3.1, RFC 7634 §2): two packets sealed under one key with one
//! number reveal their XOR and let an observer forge packets. A key typed
//! into the configuration outlives the process, so its position must too.
//!
//! * **Outbound**: before workers seal under numbers up to `L`, a record
//!   "numbers up to `L` may have been used" is written and fsynced; only
//!   then is the [`SeqSpace`] limit raised to `L`. A maintenance pass keeps
//!   the limit [`OUT_RESERVE`] numbers ahead of use (about a second of a
//!   saturated tunnel), so workers never wait in practice; if they do they
//!   drop as `seq_unreserved` rather than seal unrecorded. After a crash
//!   the sender continues above `L`; after a clean stop at the exact next
//!   number.
//! * **Inbound**: the highest authenticated sequence number is recorded
//!   every [`IN_FLUSH`] and at a clean stop; a restarted receiver treats
//!   everything at or below it as seen ([`InboundSa::resumed`]). A crash can
//!   leave at most the last `IN_FLUSH` of traffic replayable once; a clean
//!   stop leaves none.
//!
//! Records are keyed by a fingerprint of the key alone (SHA-256 under a
//! label, never the key): the nonce space belongs to the key, so a new SPI,
//! a renamed tunnel, a changed prefix or a switch back to an earlier key
//! all continue where the key left off. A key recorded for one direction
//! is refused for the other: the peer would seal under it from its own
//! counter. One file per key in `state_dir/sa/`; a lock file keeps a second
//! daemon off the same directory.
//!
//! [`InboundSa::resumed`]: strait_esp::InboundSa::resumed

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait_esp::{CipherSuite, SeqSpace};

/// Sequence numbers reserved ahead of use, per outbound key.
pub const OUT_RESERVE: u64 = 1 << 20;
/// How often inbound positions are recorded.
pub const IN_FLUSH: Duration = Duration::from_secs(1);
/// How often [`SaStore::maintain`] should run while some outbound key
/// seals (the engine's keeper does).
pub const MAINTAIN_EVERY: Duration = Duration::from_millis(10);
/// How often it should run while none sealed since the last pass. Safe
/// because a pass leaves every reservation at least half of
/// [`OUT_RESERVE`] ahead of use: a tunnel that starts sealing at once
/// at 1 Mpps (more than one worker seals on this bed) uses 100 000 numbers
/// before the next pass, a fifth of that margin.
pub const MAINTAIN_IDLE_EVERY: Duration = Duration::from_millis(100);

/// How long opening waits for another holder of the directory to leave.
const LOCK_WAIT: Duration = Duration::from_secs(2);

const FORMAT: &str = "strait-sa-state 1";

/// Which way an SA carries traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaDir {
    /// We seal.
    Outbound,
    /// We open.
    Inbound,
}

impl SaDir {
    fn name(self) -> &'static str {
        match self {
            SaDir::Outbound => "outbound",
            SaDir::Inbound => "inbound",
        }
    }
}

/// A key's fingerprint: names its record without revealing it.
pub type Fingerprint = [u8; 16];

/// The fingerprint of `key` (key material including the salt).
pub fn fingerprint(key: &[u8]) -> Fingerprint {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"strait sa state key fingerprint\0");
    ctx.update(key);
    let digest = ctx.finish();
    let mut fp = [0u8; 16];
    fp.copy_from_slice(&digest.as_ref()[..16]);
    fp
}

/// One key's live position.
#[derive(Debug)]
pub struct SaState {
    spi: u32,
    cipher: CipherSuite,
    max_seq: u64,
    kind: Kind,
    /// The sequence number last made durable.
    written: AtomicU64,
    /// Outbound: the next unused number at the last maintenance pass.
    seen_next: AtomicU64,
}

#[derive(Debug)]
enum Kind {
    Outbound(Arc<SeqSpace>),
    /// Highest authenticated sequence number, raised by the worker that
    /// owns the SA.
    Inbound(AtomicU64),
}

impl SaState {
    /// The sequence space outbound SAs under this key reserve from.
    pub fn space(&self) -> Option<&Arc<SeqSpace>> {
        match &self.kind {
            Kind::Outbound(s) => Some(s),
            Kind::Inbound(_) => None,
        }
    }

    /// The highest inbound sequence number known (0: none).
    pub fn top(&self) -> u64 {
        match &self.kind {
            Kind::Inbound(top) => top.load(Ordering::Relaxed),
            Kind::Outbound(_) => 0,
        }
    }

    /// Records that `seq` was authenticated (per packet that advances the
    /// window: one relaxed load, and a store when it grew).
    #[inline]
    pub fn note_top(&self, seq: u64) {
        if let Kind::Inbound(top) = &self.kind {
            if seq > top.load(Ordering::Relaxed) {
                top.store(seq, Ordering::Relaxed);
            }
        }
    }

    fn dir(&self) -> SaDir {
        match self.kind {
            Kind::Outbound(_) => SaDir::Outbound,
            Kind::Inbound(_) => SaDir::Inbound,
        }
    }

    /// Whether only the store still refers to this state (and, outbound,
    /// no SA still reserves from its space).
    fn unused(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1
            && match &self.kind {
                Kind::Outbound(space) => Arc::strong_count(space) == 1,
                Kind::Inbound(_) => true,
            }
    }
}

/// A record as written on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Direction the key served.
    pub dir: SaDir,
    /// SPI it was last used with (informational).
    pub spi: u32,
    /// Cipher (informational).
    pub cipher: String,
    /// Outbound: every number above this is unused. Inbound: the highest
    /// number authenticated.
    pub seq: u64,
}

impl Record {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(160);
        let _ = writeln!(s, "{FORMAT}");
        let _ = writeln!(
            s,
            "# Written by straitd. Deleting it lets a restart reuse AES-GCM nonces under this key."
        );
        let _ = writeln!(s, "direction {}", self.dir.name());
        let _ = writeln!(s, "spi {}", self.spi);
        let _ = writeln!(s, "cipher {}", self.cipher);
        let _ = writeln!(s, "seq {}", self.seq);
        s
    }

    /// Parses a record file's text; every line must be understood.
    pub fn parse(text: &str) -> Result<Record, String> {
        let mut lines = text.lines();
        if lines.next() != Some(FORMAT) {
            return Err(format!("first line is not {FORMAT:?}"));
        }
        let (mut dir, mut spi, mut cipher, mut seq) = (None, None, None, None);
        for (n, line) in lines.enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = n + 2;
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| format!("line {at}: expected \"name value\""))?;
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| format!("line {at}: {key} {v:?} is not a number"))
            };
            let slot_taken = match key {
                "direction" => dir
                    .replace(match value {
                        "outbound" => SaDir::Outbound,
                        "inbound" => SaDir::Inbound,
                        v => return Err(format!("line {at}: direction {v:?}")),
                    })
                    .is_some(),
                "spi" => spi
                    .replace(
                        u32::try_from(number(value)?)
                            .map_err(|_| format!("line {at}: spi {value} out of range"))?,
                    )
                    .is_some(),
                "cipher" => cipher.replace(value.to_owned()).is_some(),
                "seq" => seq.replace(number(value)?).is_some(),
                other => return Err(format!("line {at}: unknown field {other:?}")),
            };
            if slot_taken {
                return Err(format!("line {at}: {key} given twice"));
            }
        }
        Ok(Record {
            dir: dir.ok_or("no direction line")?,
            spi: spi.ok_or("no spi line")?,
            cipher: cipher.ok_or("no cipher line")?,
            seq: seq.ok_or("no seq line")?,
        })
    }
}

/// Whether the store may write (a running engine) or only read (a
/// configuration check beside a running daemon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    /// Locks the directory; reserves and records.
    Write,
    /// Reads records to validate; never locks or writes.
    ReadOnly,
    /// No directory: for keys negotiated per SA by a key exchange, which no
    /// restart can bring back. Keys in use are still shared between SAs
    /// rebuilt under them, and their numbers are never limited.
    Memory,
}

/// The directory of records, and every key in use.
#[derive(Debug)]
pub struct SaStore {
    dir: PathBuf,
    mode: StoreMode,
    /// Held for the store's life: `flock` on `state_dir/lock`.
    _lock: Option<File>,
    inner: Mutex<Live>,
}

#[derive(Debug)]
struct Live {
    states: HashMap<Fingerprint, Arc<SaState>>,
    last_in_flush: Instant,
    /// Keys whose last write failed, so the log says it once.
    failing: Vec<Fingerprint>,
}

impl SaStore {
    /// Opens (creating it, mode 0700) the state directory `dir`.
    pub fn open(dir: &Path, mode: StoreMode) -> io::Result<Arc<SaStore>> {
        let sa = dir.join("sa");
        if mode == StoreMode::Memory {
            return Ok(Self::memory());
        }
        let lock = match mode {
            StoreMode::Write => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&sa)?;
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .open(dir.join("lock"))?;
                // A daemon that is still exiting (a restart) or a child
                // between fork and exec briefly holds the lock: wait a
                // little before concluding another daemon owns it.
                let deadline = Instant::now() + LOCK_WAIT;
                loop {
                    match crate::sys::try_lock_exclusive(&f) {
                        Ok(()) => break,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if Instant::now() >= deadline {
                                return Err(io::Error::new(
                                    io::ErrorKind::AddrInUse,
                                    "another straitd holds this state directory",
                                ));
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Some(f)
            }
            StoreMode::ReadOnly | StoreMode::Memory => None,
        };
        Ok(Arc::new(SaStore {
            dir: sa,
            mode,
            _lock: lock,
            inner: Mutex::new(Live {
                states: HashMap::new(),
                last_in_flush: Instant::now(),
                failing: Vec::new(),
            }),
        }))
    }

    /// A store without a directory ([`StoreMode::Memory`]).
    pub fn memory() -> Arc<SaStore> {
        Arc::new(SaStore {
            dir: PathBuf::new(),
            mode: StoreMode::Memory,
            _lock: None,
            inner: Mutex::new(Live {
                states: HashMap::new(),
                last_in_flush: Instant::now(),
                failing: Vec::new(),
            }),
        })
    }

    fn path(&self, fp: &Fingerprint) -> PathBuf {
        let mut name = String::with_capacity(32);
        for b in fp {
            let _ = write!(name, "{b:02x}");
        }
        self.dir.join(name)
    }

    fn read(&self, fp: &Fingerprint) -> Result<Option<Record>, String> {
        if self.mode == StoreMode::Memory {
            return Ok(None);
        }
        let path = self.path(fp);
        match std::fs::read_to_string(&path) {
            Ok(text) => Record::parse(&text)
                .map(Some)
                .map_err(|e| format!("SA state {}: {e}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("SA state {}: {e}", path.display())),
        }
    }

    /// Writes the record durably: temporary file, fsync, rename, fsync of
    /// the directory.
    fn write(&self, fp: &Fingerprint, record: &Record) -> io::Result<()> {
        if self.mode != StoreMode::Write {
            return Ok(());
        }
        let path = self.path(fp);
        let tmp = path.with_extension("tmp");
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(record.render().as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()
    }

    fn record_of(state: &SaState, seq: u64) -> Record {
        Record {
            dir: state.dir(),
            spi: state.spi,
            cipher: crate::engine::cipher_name(state.cipher).to_owned(),
            seq,
        }
    }

    /// The state of `key` as the sealing side of SA `spi`: the live one if
    /// another SA uses the key now, else resumed from its record (or from
    /// 1) with a fresh reservation recorded before it is returned.
    pub fn outbound(
        &self,
        spi: u32,
        cipher: CipherSuite,
        key: &[u8],
        max_seq: u64,
    ) -> Result<Arc<SaState>, String> {
        self.state(SaDir::Outbound, spi, cipher, key, max_seq)
    }

    /// The state of `key` as the opening side of SA `spi`: the live one,
    /// or resumed from its record.
    pub fn inbound(
        &self,
        spi: u32,
        cipher: CipherSuite,
        key: &[u8],
        max_seq: u64,
    ) -> Result<Arc<SaState>, String> {
        self.state(SaDir::Inbound, spi, cipher, key, max_seq)
    }

    fn state(
        &self,
        dir: SaDir,
        spi: u32,
        cipher: CipherSuite,
        key: &[u8],
        max_seq: u64,
    ) -> Result<Arc<SaState>, String> {
        let fp = fingerprint(key);
        let mut live = self.inner.lock().expect("SA store lock");
        let refuse_other_way = |used: SaDir, used_spi: u32| {
            format!(
                "its key was used for {} SPI {used_spi}; a key must serve one direction only \
                 (the peer would seal under it from its own counter)",
                used.name()
            )
        };
        // A state nothing uses any more (e.g. left by a refused
        // configuration) is retired first, exactly as maintenance would.
        if live.states.get(&fp).is_some_and(|s| s.unused()) {
            if let Some(s) = live.states.remove(&fp) {
                self.retire(&fp, &s)
                    .map_err(|e| format!("recording its last position: {e}"))?;
            }
        }
        if let Some(s) = live.states.get(&fp) {
            if s.dir() != dir {
                return Err(refuse_other_way(s.dir(), s.spi));
            }
            return Ok(Arc::clone(s));
        }
        let record = self.read(&fp)?;
        if let Some(r) = &record {
            if r.dir != dir {
                return Err(refuse_other_way(r.dir, r.spi));
            }
        }
        let state = match dir {
            SaDir::Outbound => {
                let first = match &record {
                    Some(r) if r.seq >= max_seq => {
                        return Err(format!(
                        "its key has used up its sequence numbers (up to {}): configure a new key",
                        r.seq
                    ))
                    }
                    Some(r) => r.seq + 1,
                    None => 1,
                };
                // Nothing may be sealed until `prepare` has recorded a
                // reservation, once the whole configuration is accepted.
                SaState {
                    spi,
                    cipher,
                    max_seq,
                    kind: Kind::Outbound(SeqSpace::limited(first, 0)),
                    written: AtomicU64::new(0),
                    seen_next: AtomicU64::new(0),
                }
            }
            SaDir::Inbound => {
                let top = record.as_ref().map_or(0, |r| r.seq).min(max_seq);
                SaState {
                    spi,
                    cipher,
                    max_seq,
                    kind: Kind::Inbound(AtomicU64::new(top)),
                    written: AtomicU64::new(top),
                    seen_next: AtomicU64::new(0),
                }
            }
        };
        let state = Arc::new(state);
        live.states.insert(fp, Arc::clone(&state));
        Ok(state)
    }

    /// Records the first reservation of every outbound key taken into use
    /// since the last call, then lets workers seal under it. Called once a
    /// configuration is accepted whole, so a refused one leaves no record.
    pub fn prepare(&self) -> Result<(), String> {
        let live = self.inner.lock().expect("SA store lock");
        for (fp, state) in &live.states {
            let Kind::Outbound(space) = &state.kind else {
                continue;
            };
            if state.written.load(Ordering::Relaxed) != 0 || space.limit() != 0 {
                continue;
            }
            let next = space.next();
            if next == 0 {
                continue;
            }
            let limit = match self.mode {
                StoreMode::Memory => state.max_seq,
                _ => next.saturating_add(OUT_RESERVE - 1).min(state.max_seq),
            };
            self.write(fp, &Self::record_of(state, limit))
                .map_err(|e| {
                    format!(
                        "outbound SPI {}: recording its sequence reservation in {}: {e}",
                        state.spi,
                        self.dir.display()
                    )
                })?;
            state.written.store(limit, Ordering::Relaxed);
            space.extend(limit);
        }
        Ok(())
    }

    /// Records the exact last position of a state nothing uses any more
    /// (nothing for a key that never sealed or opened anything here).
    fn retire(&self, fp: &Fingerprint, state: &SaState) -> io::Result<()> {
        let seq = match &state.kind {
            Kind::Outbound(space) => {
                if state.written.load(Ordering::Relaxed) == 0 {
                    return Ok(());
                }
                space.next().wrapping_sub(1).min(state.max_seq)
            }
            Kind::Inbound(top) => {
                let top = top.load(Ordering::Relaxed);
                if top == state.written.load(Ordering::Relaxed) {
                    return Ok(());
                }
                top
            }
        };
        self.write(fp, &Self::record_of(state, seq))?;
        state.written.store(seq, Ordering::Relaxed);
        Ok(())
    }

    /// Keeps every outbound reservation ahead of use and records inbound
    /// positions every [`IN_FLUSH`]; retires keys nothing uses any more,
    /// recording their exact position. Never on a worker: it writes files.
    /// Returns how long the caller may wait before the next pass:
    /// [`MAINTAIN_EVERY`] while some outbound key sealed since the last
    /// one, [`MAINTAIN_IDLE_EVERY`] otherwise.
    pub fn maintain(&self, now: Instant) -> Duration {
        let mut busy = false;
        let mut live = self.inner.lock().expect("SA store lock");
        let flush_in = now.saturating_duration_since(live.last_in_flush) >= IN_FLUSH;
        if flush_in {
            live.last_in_flush = now;
        }
        let mut retire = Vec::new();
        let mut failed = Vec::new();
        let mut recovered = Vec::new();
        for (fp, state) in &live.states {
            let unused = state.unused();
            if unused {
                match self.retire(fp, state) {
                    Ok(()) => retire.push(*fp),
                    Err(e) => {
                        tracing::error!(spi = state.spi, error = %e, "recording SA state failed");
                        failed.push(*fp);
                    }
                }
                continue;
            }
            let want = match &state.kind {
                Kind::Outbound(space) => {
                    let (next, limit) = (space.next(), space.limit());
                    if state.seen_next.swap(next, Ordering::Relaxed) != next {
                        busy = true;
                    }
                    // Not prepared yet, exhausted, frozen, or reserved to
                    // the end: nothing to extend.
                    if state.written.load(Ordering::Relaxed) == 0
                        || next == 0
                        || limit == 0
                        || limit >= state.max_seq
                    {
                        None
                    } else if limit.saturating_sub(next) < OUT_RESERVE / 2 {
                        Some(next.saturating_add(OUT_RESERVE - 1).min(state.max_seq))
                    } else {
                        None
                    }
                }
                Kind::Inbound(top) => {
                    let top = top.load(Ordering::Relaxed);
                    (flush_in && top != state.written.load(Ordering::Relaxed)).then_some(top)
                }
            };
            if let Some(seq) = want {
                match self.write(fp, &Self::record_of(state, seq)) {
                    Ok(()) => {
                        state.written.store(seq, Ordering::Relaxed);
                        if let Some(space) = state.space() {
                            space.extend(seq);
                        }
                        recovered.push(*fp);
                    }
                    Err(e) => {
                        // Not extended: workers stop sealing rather than
                        // seal unrecorded numbers.
                        if !live.failing.contains(fp) {
                            tracing::error!(spi = state.spi, error = %e,
                                "recording SA state failed; the SA stops sealing when its reservation runs out");
                        }
                        failed.push(*fp);
                    }
                }
            }
        }
        for fp in retire {
            live.states.remove(&fp);
        }
        live.failing.retain(|fp| !recovered.contains(fp));
        for fp in failed {
            if !live.failing.contains(&fp) {
                live.failing.push(fp);
            }
        }
        if busy {
            MAINTAIN_EVERY
        } else {
            MAINTAIN_IDLE_EVERY
        }
    }

    /// Records every key's exact position once nothing seals or opens any
    /// more (the workers have stopped): outbound reservations are frozen
    /// at the next unused number, inbound at the highest one seen.
    pub fn close(&self) {
        let mut live = self.inner.lock().expect("SA store lock");
        for (fp, state) in &live.states {
            let seq = match &state.kind {
                Kind::Outbound(space) => {
                    let next = space.freeze();
                    if state.written.load(Ordering::Relaxed) == 0 {
                        // Never prepared: nothing was sealed under it.
                        continue;
                    }
                    if next == 0 {
                        state.max_seq
                    } else {
                        next - 1
                    }
                }
                Kind::Inbound(top) => top.load(Ordering::Relaxed),
            };
            if let Err(e) = self.write(fp, &Self::record_of(state, seq)) {
                tracing::error!(spi = state.spi, error = %e, "recording SA state at stop failed");
            }
        }
        live.states.clear();
    }
}

/// A fresh state directory for a test (unique per call).
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("strait-state-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 20] = [0x11; 20];
    const MAX32: u64 = u32::MAX as u64;

    fn tempdir(name: &str) -> PathBuf {
        test_dir(name)
    }

    fn on_disk(store: &SaStore, key: &[u8]) -> Record {
        store.read(&fingerprint(key)).unwrap().unwrap()
    }

    #[test]
    fn records_round_trip_and_refuse_what_they_do_not_understand() {
        let r = Record {
            dir: SaDir::Inbound,
            spi: 4097,
            cipher: "aes128-gcm".into(),
            seq: 1 << 40,
        };
        assert_eq!(Record::parse(&r.render()), Ok(r.clone()));
        let text = r.render();
        for (bad, why) in [
            ("", "first line"),
            (&text.replace("seq ", "sequence "), "unknown field"),
            (&text.replace("inbound", "sideways"), "direction"),
            (&text.replace("seq 1099511627776", "seq -1"), "not a number"),
            (&text.replace("seq 1099511627776\n", ""), "no seq"),
            (&format!("{text}seq 5\n"), "twice"),
            (&text.replace("spi 4097", "spi 99999999999"), "out of range"),
        ] {
            let err = Record::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn outbound_reserves_before_use_and_resumes_above_the_reservation() {
        let dir = tempdir("out");
        let store = SaStore::open(&dir, StoreMode::Write).unwrap();
        let s = store
            .outbound(4097, CipherSuite::Aes128Gcm, &KEY, MAX32)
            .unwrap();
        // Nothing may be sealed, and nothing is on disk, until the
        // configuration is accepted and the reservation recorded.
        assert_eq!(s.space().unwrap().limit(), 0);
        assert_eq!(store.read(&fingerprint(&KEY)), Ok(None));
        store.prepare().unwrap();
        let space = s.space().unwrap();
        assert_eq!(space.next(), 1);
        assert_eq!(space.limit(), OUT_RESERVE);
        assert_eq!(on_disk(&store, &KEY).seq, OUT_RESERVE);
        // The same key asked for again (another SPI, a rebuilt SA) is the
        // same live state.
        let again = store
            .outbound(5000, CipherSuite::Aes128Gcm, &KEY, MAX32)
            .unwrap();
        assert!(Arc::ptr_eq(&s, &again));
        drop(again);
        // A crash: the next process resumes above everything reserved.
        drop((s, store));
        let store = SaStore::open(&dir, StoreMode::Write).unwrap();
        let s = store
            .outbound(4097, CipherSuite::Aes128Gcm, &KEY, MAX32)
            .unwrap();
        store.prepare().unwrap();
        assert_eq!(s.space().unwrap().next(), OUT_RESERVE + 1);
        assert_eq!(on_disk(&store, &KEY).seq, 2 * OUT_RESERVE);
        // A clean stop records the exact position.
        let cfg = strait_esp::SaConfig::new(4097, CipherSuite::Aes128Gcm, &KEY, Duration::ZERO);
        let sa = strait_esp::OutboundSa::with_space(&cfg, Arc::clone(s.space().unwrap())).unwrap();
        let mut w = sa.worker();
        let mut f = vec![0u8; 256];
        let inner = strait_esp::TUNNEL_HEADROOM..strait_esp::TUNNEL_HEADROOM + 20;
        f[inner.start] = 0x45;
        f[inner.start + 3] = 20;
        let sealed = w.seal(&mut f, inner, Duration::ZERO).unwrap();
        assert_eq!(sealed.seq, OUT_RESERVE + 1);
        store.close();
        let used_up_to = on_disk(&store, &KEY).seq;
        assert!(
            used_up_to > OUT_RESERVE && used_up_to <= OUT_RESERVE + 1 + u64::from(cfg.seq_block),
            "{used_up_to}"
        );
        drop((w, sa, s, store));
        let store = SaStore::open(&dir, StoreMode::Write).unwrap();
        let s = store
            .outbound(4097, CipherSuite::Aes128Gcm, &KEY, MAX32)
            .unwrap();
        store.prepare().unwrap();
        assert_eq!(s.space().unwrap().next(), used_up_to + 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn maintenance_keeps_the_reservation_ahead_and_retires_unused_keys() {
        let dir = tempdir("maintain");
        let store = SaStore::open(&dir, StoreMode::Write).unwrap();
        let s = store
            .outbound(4097, CipherSuite::Aes128Gcm, &KEY, MAX32)
            .unwrap();
        store.prepare().unwrap();
        let mut cfg = strait_esp::SaConfig::new(4097, CipherSuite::Aes128Gcm, &KEY, Duration::ZERO);
        // Big blocks: each seal below reserves 2^16 numbers.
        cfg.seq_block = 1 << 16;
        let sa = strait_esp::OutboundSa::with_space(&cfg, Arc::clone(s.space().unwrap())).unwrap();
        store.maintain(Instant::now());
        assert_eq!(s.space().unwrap().limit(), OUT_RESERVE, "plenty left");
        // Nothing sealed since the last pass: the keeper may wait longer.
        assert_eq!(store.maintain(Instant::now()), MAINTAIN_IDLE_EVERY);
        // Reserve most of the reservation: a new worker takes a block.
        let inner = strait_esp::TUNNEL_HEADROOM..strait_esp::TUNNEL_HEADROOM + 20;
        let mut template = vec![0u8; 256];
        template[inner.start] = 0x45;
        template[inner.start + 3] = 20;
        while s.space().unwrap().next() < OUT_RESERVE * 3 / 4 {
            let mut f = template.clone();
            let mut worker = sa.worker();
            worker.seal(&mut f, inner.clone(), Duration::ZERO).unwrap();
        }
        assert_eq!(store.maintain(Instant::now()), MAINTAIN_EVERY, "sealing");
        let limit = s.space().unwrap().limit();
        assert!(limit > OUT_RESERVE + OUT_RESERVE / 2, "{limit}");
        assert_eq!(store.maintain(Instant::now()), MAINTAIN_IDLE_EVERY);
        assert_eq!(on_disk(&store, &KEY).seq, limit, "recorded before use");
        // Nothing uses the key any more: its exact position is recorded
        // and it leaves the live set.
        let next = s.space().unwrap().next();
        drop((sa, s));
        store.maintain(Instant::now());
        assert_eq!(on_disk(&store, &KEY).seq, next - 1);
        assert!(store.inner.lock().unwrap().states.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn inbound_positions_survive_a_restart() {
        let dir = tempdir("in");
        let store = SaStore::open(&dir, StoreMode::Write).unwrap();
        let s = store
            .inbound(8194, CipherSuite::Aes128Gcm, &KEY, MAX32)
            .unwrap();
        assert_eq!(s.top(), 0);
        s.note_top(41);
        s.note_top(40);
        assert_eq!(s.top(), 41);
        // Recorded at the flush interval.
        store.maintain(Instant::now() + IN_FLUSH);
        assert_eq!(on_disk(&store, &KEY).seq, 41);
        s.note_top(99);
        store.close();
        assert_eq!(on_disk(&store, &KEY).seq, 99);
        drop((s, store));
        let store = SaStore::open(&dir, StoreMode::Write).unwrap();
        let s = store
            .inbound(8194, CipherSuite::Aes128Gcm, &KEY, MAX32)
            .unwrap();
        assert_eq!(s.top(), 99);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn negotiated_keys_are_shared_while_in_use_and_never_limited() {
        let store = SaStore::memory();
        let s = store
            .outbound(4097, CipherSuite::Aes128Gcm, &KEY, u64::MAX)
            .unwrap();
        store.prepare().unwrap();
        assert_eq!(s.space().unwrap().next(), 1);
        assert_eq!(s.space().unwrap().limit(), u64::MAX);
        let again = store
            .outbound(4097, CipherSuite::Aes128Gcm, &KEY, u64::MAX)
            .unwrap();
        assert!(Arc::ptr_eq(&s, &again));
        assert!(store
            .inbound(1, CipherSuite::Aes128Gcm, &KEY, u64::MAX)
            .is_err());
        store.close();
    }

    #[test]
    fn a_key_serves_one_direction_and_one_daemon() {
        let dir = tempdir("dir");
        let store = SaStore::open(&dir, StoreMode::Write).unwrap();
        let err = SaStore::open(&dir, StoreMode::Write).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        // A check beside the running daemon only reads.
        let check = SaStore::open(&dir, StoreMode::ReadOnly).unwrap();
        let s = store
            .outbound(4097, CipherSuite::Aes128Gcm, &KEY, MAX32)
            .unwrap();
        store.prepare().unwrap();
        let err = store
            .inbound(4097, CipherSuite::Aes128Gcm, &KEY, MAX32)
            .unwrap_err();
        assert!(err.contains("used for outbound SPI 4097"), "{err}");
        // Also once the outbound use is only on disk.
        drop(s);
        store.maintain(Instant::now());
        let err = check
            .inbound(1, CipherSuite::Aes128Gcm, &KEY, MAX32)
            .unwrap_err();
        assert!(err.contains("one direction"), "{err}");
        // A used-up key is refused rather than restarted.
        let spent = [0x22; 20];
        std::fs::write(
            store.path(&fingerprint(&spent)),
            Record {
                dir: SaDir::Outbound,
                spi: 7,
                cipher: "aes128-gcm".into(),
                seq: MAX32,
            }
            .render(),
        )
        .unwrap();
        let err = store
            .outbound(7, CipherSuite::Aes128Gcm, &spent, MAX32)
            .unwrap_err();
        assert!(err.contains("used up"), "{err}");
        // A damaged record is an error naming the file, never a restart at 1.
        std::fs::write(store.path(&fingerprint(&spent)), "garbage").unwrap();
        let err = store
            .outbound(7, CipherSuite::Aes128Gcm, &spent, MAX32)
            .unwrap_err();
        assert!(err.contains("first line"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
