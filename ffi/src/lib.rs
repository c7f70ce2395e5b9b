//! The C ABI of the Strait engine, for appliance vendors whose management
//! software is written in C (or anything that calls C).
//!
//! It is a thin layer over the public API of `strait-dataplane`: an engine
//! is created from a TOML configuration string (the format of
//! docs/CONFIG.md), started, changed while it runs (a whole new
//! configuration, routes, NAT rules, rekey steps), read (counters, drop
//! reasons) and stopped. Events (SA lifetimes) reach a registered callback.
//! The header is `ffi/include/strait.h`, generated from this crate by
//! cbindgen; docs/EMBEDDING.md describes ownership and threading, and
//! `examples/c/embed.c` uses every function.
//!
//! Every function returns a [`StraitStatus`]; on failure the reason, with
//! the configuration line where there is one, is kept per thread for
//! `strait_last_error`. No panic unwinds into C: each entry point catches
//! it and returns `STRAIT_ERROR_PANIC`.
//!
//! Layout: this file holds the types and the safe logic; `abi` holds the
//! `extern "C"` entry points and every raw-pointer access, the crate's only
//! `unsafe` code.

#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::ffi::{c_char, c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use strait_dataplane::{
    Config, ConfigError, DropReason, Engine, EngineEvent, NatRuleConfig, RekeyStep, RouteConfig,
    SaDirection, SaEntryConfig, SaLimit,
};

#[allow(unsafe_code)]
mod abi;

/// What a call did. `STRAIT_OK` is 0; every other value is a failure whose
/// message `strait_last_error` returns.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StraitStatus {
    /// Done.
    StraitOk = 0,
    /// A NULL pointer where one is not allowed, or a string that is not
    /// UTF-8.
    StraitErrorArgument = 1,
    /// The configuration, or the route, NAT rule or SA given, was refused
    /// (the message names the item, the reason and the line).
    StraitErrorConfig = 2,
    /// The engine could not start (an interface, AF_XDP, a thread).
    StraitErrorEngine = 3,
    /// Not possible in the engine's state: started twice, or a change to
    /// an engine that is not running.
    StraitErrorState = 4,
    /// The caller's array is too small; the count says how many are needed.
    StraitErrorBuffer = 5,
    /// No such interface or drop reason.
    StraitErrorNotFound = 6,
    /// A bug in Strait: a panic was caught at the boundary.
    StraitErrorPanic = 7,
}

/// Which rekey step `strait_engine_rekey` takes, in the order a rekey
/// (RFC 7296 §2.8) needs them: install the new inbound SA, switch outbound
/// to the new one, retire the old inbound one.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StraitRekeyStep {
    /// Accept a new inbound SA alongside the current ones.
    StraitRekeyInstallInbound = 0,
    /// Seal with a new outbound SA from now on.
    StraitRekeySwitchOutbound = 1,
    /// Stop accepting the inbound SA with the SPI given.
    StraitRekeyRetireInbound = 2,
}

impl StraitRekeyStep {
    /// The step a C caller's number names.
    fn from_raw(raw: u32) -> Option<StraitRekeyStep> {
        [
            StraitRekeyStep::StraitRekeyInstallInbound,
            StraitRekeyStep::StraitRekeySwitchOutbound,
            StraitRekeyStep::StraitRekeyRetireInbound,
        ]
        .into_iter()
        .find(|s| *s as u32 == raw)
    }
}

/// The kind of an event.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StraitEventKind {
    /// An SA passed its soft lifetime: negotiate a replacement and rekey.
    StraitEventSaSoftExpired = 0,
    /// An SA passed its hard lifetime: it refuses traffic now.
    StraitEventSaHardExpired = 1,
    /// A kind this version of the header does not name (see `name`).
    StraitEventOther = 255,
}

/// Whether an SA seals or opens.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StraitSaDirection {
    /// We open (decrypt) with it.
    StraitSaInbound = 0,
    /// We seal (encrypt) with it.
    StraitSaOutbound = 1,
}

/// The lifetime an SA event is about.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StraitSaLimit {
    /// Its age.
    StraitLimitTime = 0,
    /// Its inner bytes.
    StraitLimitBytes = 1,
    /// Its sequence numbers.
    StraitLimitSequenceNumbers = 2,
}

/// One event, valid only for the duration of the callback.
#[repr(C)]
#[derive(Debug)]
pub struct StraitEvent {
    /// What happened.
    pub kind: StraitEventKind,
    /// Short name of the kind, e.g. `"sa-soft-expired"` (NUL-terminated).
    pub name: *const c_char,
    /// The tunnel (NUL-terminated).
    pub tunnel: *const c_char,
    /// The SA's SPI.
    pub spi: u32,
    /// Whether we seal or open with the SA.
    pub direction: StraitSaDirection,
    /// The limit that passed.
    pub limit: StraitSaLimit,
}

/// Receives events, on a thread of the engine (not the caller's), one at a
/// time, in the order the engine noticed them. It must return without
/// unwinding (no C++ exception may leave it).
pub type StraitEventCallback = Option<extern "C" fn(event: *const StraitEvent, user: *mut c_void)>;

/// Bytes of an interface name in [`StraitPortCounters`], NUL included
/// (Linux's IFNAMSIZ).
pub const STRAIT_INTERFACE_NAME_LEN: usize = 16;

/// One interface's counters, summed over the workers.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StraitPortCounters {
    /// The interface, NUL-terminated.
    pub interface: [c_char; STRAIT_INTERFACE_NAME_LEN],
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Frames routed to another port.
    pub forwarded: u64,
    /// Frames handed to the host stack.
    pub punted: u64,
    /// ICMP errors and echo replies generated.
    pub icmp_sent: u64,
    /// ESP packets sealed into a tunnel leaving by this interface.
    pub esp_sealed: u64,
    /// ESP packets opened after arriving on this interface.
    pub esp_opened: u64,
    /// Frames dropped, all reasons (`strait_engine_drop_count` for one).
    pub dropped: u64,
}

/// A failure: the status and the message for `strait_last_error`.
#[derive(Debug)]
struct Failure {
    status: StraitStatus,
    message: String,
}

impl Failure {
    fn new(status: StraitStatus, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    fn config(e: ConfigError) -> Failure {
        Failure::new(StraitStatus::StraitErrorConfig, e.to_string())
    }

    fn not_running() -> Failure {
        Failure::new(
            StraitStatus::StraitErrorState,
            "the engine is not running (strait_engine_start)",
        )
    }
}

type Outcome<T> = Result<T, Failure>;

/// The embedder's callback and its pointer, called from the event thread.
#[derive(Debug, Clone, Copy)]
struct Callback {
    function: extern "C" fn(*const StraitEvent, *mut c_void),
    user: *mut c_void,
}

/// A running engine and the thread that delivers its events.
#[derive(Debug)]
struct Running {
    engine: Arc<Engine>,
    stop: Arc<AtomicBool>,
    events: JoinHandle<()>,
}

#[derive(Debug)]
struct State {
    /// The configuration the next start uses: the one given, or the one
    /// in force when the engine last stopped.
    config: Config,
    /// The name errors and relative paths refer to.
    path: String,
    running: Option<Running>,
}

/// An engine as C holds it (`strait_engine *`): an opaque handle.
#[derive(Debug)]
pub struct StraitEngine {
    state: Mutex<State>,
    callback: Arc<Mutex<Option<Callback>>>,
}

/// How often the event thread drains the engine's events. The engine
/// notices SA lifetimes every 500 ms, so this adds little delay.
const EVENT_POLL: Duration = Duration::from_millis(50);

impl StraitEngine {
    /// Parses and validates `toml` (as `straitd --check` does) without
    /// touching any interface.
    fn new(toml: &str, path: &str) -> Outcome<StraitEngine> {
        let config = Config::parse(toml, path).map_err(Failure::config)?;
        Engine::check(&config, path).map_err(Failure::config)?;
        Ok(StraitEngine {
            state: Mutex::new(State {
                config,
                path: path.to_owned(),
                running: None,
            }),
            callback: Arc::new(Mutex::new(None)),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic caught while the lock was held leaves the state as the
        // last completed call made it: keep going with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn engine(&self) -> Outcome<Arc<Engine>> {
        let state = self.state();
        let running = state.running.as_ref().ok_or_else(Failure::not_running)?;
        Ok(running.engine.clone())
    }

    fn start(&self) -> Outcome<()> {
        let mut state = self.state();
        if state.running.is_some() {
            return Err(Failure::new(
                StraitStatus::StraitErrorState,
                "the engine is already running",
            ));
        }
        let engine = Engine::start(state.config.clone(), &state.path).map_err(|e| {
            Failure::new(
                match e {
                    strait_dataplane::EngineError::Config(_) => StraitStatus::StraitErrorConfig,
                    _ => StraitStatus::StraitErrorEngine,
                },
                e.to_string(),
            )
        })?;
        let engine = Arc::new(engine);
        let stop = Arc::new(AtomicBool::new(false));
        let events = {
            let (engine, stop, callback) = (engine.clone(), stop.clone(), self.callback.clone());
            std::thread::Builder::new()
                .name("strait-ffi-events".into())
                .spawn(move || deliver_events(&engine, &stop, &callback))
                .map_err(|e| {
                    Failure::new(
                        StraitStatus::StraitErrorEngine,
                        format!("event thread: {e}"),
                    )
                })?
        };
        state.running = Some(Running {
            engine,
            stop,
            events,
        });
        Ok(())
    }

    fn stop(&self) -> Outcome<()> {
        let mut state = self.state();
        let running = state.running.take().ok_or_else(Failure::not_running)?;
        state.config = running.engine.config();
        running.stop.store(true, Ordering::Relaxed);
        let _ = running.events.join();
        match Arc::try_unwrap(running.engine) {
            Ok(engine) => engine.stop(),
            // Another call is using it this instant (calls may come from
            // several threads); dropping the last reference stops it too.
            Err(engine) => drop(engine),
        }
        Ok(())
    }

    fn set_callback(&self, callback: Option<Callback>) {
        *self.callback.lock().unwrap_or_else(|p| p.into_inner()) = callback;
    }

    fn apply(&self, toml: &str) -> Outcome<u64> {
        let engine = self.engine()?;
        let path = engine.path().to_owned();
        let config = Config::parse(toml, &path).map_err(Failure::config)?;
        engine.apply(config).map_err(Failure::config)
    }

    fn add_route(&self, toml: &str) -> Outcome<u64> {
        let route: RouteConfig = item("route", toml)?;
        self.engine()?.add_route(route).map_err(Failure::config)
    }

    fn delete_route(&self, prefix: &str) -> Outcome<u64> {
        self.engine()?.delete_route(prefix).map_err(Failure::config)
    }

    fn add_nat_rule(&self, toml: &str) -> Outcome<u64> {
        let rule: NatRuleConfig = item("nat rule", toml)?;
        self.engine()?.add_nat_rule(rule).map_err(Failure::config)
    }

    fn delete_nat_rule(&self, name: &str) -> Outcome<u64> {
        self.engine()?
            .delete_nat_rule(name)
            .map_err(Failure::config)
    }

    fn rekey(
        &self,
        tunnel: &str,
        step: StraitRekeyStep,
        sa: Option<&str>,
        spi: u32,
    ) -> Outcome<u64> {
        let engine = self.engine()?;
        let sa = || -> Outcome<SaEntryConfig> {
            item(
                "SA",
                sa.ok_or_else(|| {
                    Failure::new(
                        StraitStatus::StraitErrorArgument,
                        "this rekey step needs the new SA (TOML: spi, cipher, key)",
                    )
                })?,
            )
        };
        let step = match step {
            StraitRekeyStep::StraitRekeyInstallInbound => RekeyStep::InstallInbound(sa()?),
            StraitRekeyStep::StraitRekeySwitchOutbound => RekeyStep::SwitchOutbound(sa()?),
            StraitRekeyStep::StraitRekeyRetireInbound => RekeyStep::RetireInbound(spi),
        };
        engine.rekey(tunnel, step).map_err(Failure::config)
    }

    fn generation(&self) -> Outcome<u64> {
        Ok(self.engine()?.generation())
    }

    fn counters(&self) -> Outcome<Vec<StraitPortCounters>> {
        let engine = self.engine()?;
        Ok(engine
            .counters()
            .iter()
            .map(|(name, c)| StraitPortCounters {
                interface: interface_name(name),
                rx_packets: c.rx_packets,
                rx_bytes: c.rx_bytes,
                tx_packets: c.tx_packets,
                tx_bytes: c.tx_bytes,
                forwarded: c.forwarded,
                punted: c.punted,
                icmp_sent: c.icmp_sent,
                esp_sealed: c.esp_sealed,
                esp_opened: c.esp_opened,
                dropped: c.total_drops(),
            })
            .collect())
    }

    fn drop_count(&self, interface: &str, reason: &str) -> Outcome<u64> {
        let reason = DropReason::from_name(reason).ok_or_else(|| {
            Failure::new(
                StraitStatus::StraitErrorNotFound,
                format!("no drop reason named {reason:?} (straitctl show drops lists them)"),
            )
        })?;
        let engine = self.engine()?;
        let counters = engine.counters();
        let (_, c) = counters
            .iter()
            .find(|(name, _)| name == interface)
            .ok_or_else(|| {
                Failure::new(
                    StraitStatus::StraitErrorNotFound,
                    format!("no interface named {interface:?}"),
                )
            })?;
        Ok(c.drops[reason as usize])
    }
}

impl Drop for StraitEngine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One configuration item (a `[[route]]`, `[[nat]]` or SA table's fields)
/// from TOML, with the same fields and checks as in the file.
fn item<T: serde::de::DeserializeOwned>(what: &str, toml: &str) -> Outcome<T> {
    Config::parse_item(toml, what).map_err(Failure::config)
}

/// `name` as a NUL-terminated C array, cut to fit (Linux names fit).
fn interface_name(name: &str) -> [c_char; STRAIT_INTERFACE_NAME_LEN] {
    let mut out = [0 as c_char; STRAIT_INTERFACE_NAME_LEN];
    for (o, b) in out
        .iter_mut()
        .zip(name.bytes().take(STRAIT_INTERFACE_NAME_LEN - 1))
    {
        *o = b as c_char;
    }
    out
}

/// The event thread: drains the engine's events and hands each to the
/// callback registered at that moment (events with none registered are
/// dropped).
fn deliver_events(engine: &Engine, stop: &AtomicBool, callback: &Mutex<Option<Callback>>) {
    let mut events = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        events.clear();
        engine.poll_events(&mut events);
        for event in &events {
            let current = *callback.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(cb) = current {
                abi::call(cb, event);
            }
        }
        std::thread::sleep(EVENT_POLL);
    }
}

/// The C view of an event and the strings it points into, kept alive
/// while the callback runs.
#[derive(Debug)]
struct EventView {
    name: CString,
    tunnel: CString,
    kind: StraitEventKind,
    spi: u32,
    direction: StraitSaDirection,
    limit: StraitSaLimit,
}

impl EventView {
    fn new(event: &EngineEvent) -> Option<EventView> {
        let sa = event.sa()?;
        Some(EventView {
            name: CString::new(event.kind()).ok()?,
            tunnel: CString::new(sa.tunnel.as_str()).ok()?,
            kind: match event {
                EngineEvent::SaSoftExpired(_) => StraitEventKind::StraitEventSaSoftExpired,
                EngineEvent::SaHardExpired(_) => StraitEventKind::StraitEventSaHardExpired,
                _ => StraitEventKind::StraitEventOther,
            },
            spi: sa.spi,
            direction: match sa.direction {
                SaDirection::Inbound => StraitSaDirection::StraitSaInbound,
                SaDirection::Outbound => StraitSaDirection::StraitSaOutbound,
            },
            limit: match sa.limit {
                SaLimit::Time => StraitSaLimit::StraitLimitTime,
                SaLimit::Bytes => StraitSaLimit::StraitLimitBytes,
                SaLimit::SequenceNumbers => StraitSaLimit::StraitLimitSequenceNumbers,
            },
        })
    }

    fn c(&self) -> StraitEvent {
        StraitEvent {
            kind: self.kind,
            name: self.name.as_ptr(),
            tunnel: self.tunnel.as_ptr(),
            spi: self.spi,
            direction: self.direction,
            limit: self.limit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_with_an_unknown_field_is_refused_with_its_line() {
        let e =
            item::<RouteConfig>("route", "prefix = \"10.0.0.0/8\"\ngateway = \"x\"\n").unwrap_err();
        assert_eq!(e.status, StraitStatus::StraitErrorConfig);
        assert!(
            e.message.starts_with("route line 2, column 1: "),
            "{}",
            e.message
        );
    }

    #[test]
    fn interface_names_are_nul_terminated() {
        let n = interface_name("a-very-long-interface-name");
        assert_eq!(n[STRAIT_INTERFACE_NAME_LEN - 1], 0);
        assert_eq!(n[0], b'a' as c_char);
    }
}
