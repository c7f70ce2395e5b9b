//! The `extern "C"` entry points: each turns its pointers into references
//! and strings, runs the safe logic of the crate root under
//! `catch_unwind`, and turns the outcome into a status code plus, on
//! failure, the thread's last error message.
//!
//! Ownership (also in the header): an engine returned by
//! `strait_engine_new` belongs to the caller until `strait_engine_free`;
//! strings passed in are borrowed for the call only; the pointer
//! `strait_last_error` returns stays valid until the next `strait_*` call
//! on the same thread; an event and its strings, only during the callback.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use strait_dataplane::EngineEvent;

use crate::{
    Callback, EventView, Failure, Outcome, StraitEngine, StraitEvent, StraitEventCallback,
    StraitPortCounters, StraitRekeyStep, StraitStatus,
};

// SAFETY: `user` is never dereferenced by Strait, only passed back to the
// embedder's own callback, which the header requires to be callable from
// the engine's event thread.
unsafe impl Send for Callback {}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A NUL inside a message (from a name in the configuration) would end
    // the C string early: show it as an escape instead.
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// Runs `f`, catching a panic; stores the failure message and returns the
/// status.
fn guard(f: impl FnOnce() -> Outcome<()>) -> StraitStatus {
    set_last_error("");
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => StraitStatus::StraitOk,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_last_error(&format!("internal error (please report): {what}"));
            StraitStatus::StraitErrorPanic
        }
    }
}

fn null(what: &str) -> Failure {
    Failure::new(StraitStatus::StraitErrorArgument, format!("{what} is NULL"))
}

/// A borrowed C string as UTF-8; NULL is `None`.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the call.
unsafe fn opt_str<'a>(p: *const c_char, what: &str) -> Outcome<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, NUL-terminated and valid for the call (caller).
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map(Some).map_err(|_| {
        Failure::new(
            StraitStatus::StraitErrorArgument,
            format!("{what} is not UTF-8"),
        )
    })
}

/// # Safety
/// As [`opt_str`].
unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Outcome<&'a str> {
    // SAFETY: forwarded from the caller.
    unsafe { opt_str(p, what) }?.ok_or_else(|| null(what))
}

/// # Safety
/// `p` is NULL or was returned by `strait_engine_new` and not yet freed.
unsafe fn engine<'a>(p: *const StraitEngine) -> Outcome<&'a StraitEngine> {
    // SAFETY: a live engine from `strait_engine_new` (caller).
    unsafe { p.as_ref() }.ok_or_else(|| null("engine"))
}

/// Writes a table generation to an optional out-pointer.
///
/// # Safety
/// `out` is NULL or valid for one `u64` write.
unsafe fn put_generation(out: *mut u64, generation: u64) {
    // SAFETY: NULL or writable (caller).
    if let Some(out) = unsafe { out.as_mut() } {
        *out = generation;
    }
}

/// Hands one event to the embedder's callback.
pub(crate) fn call(cb: Callback, event: &EngineEvent) {
    if let Some(view) = EventView::new(event) {
        let c: StraitEvent = view.c();
        (cb.function)(&c, cb.user);
    }
}

/// Parses and validates a configuration (TOML, the format of
/// docs/CONFIG.md) without touching any interface, and returns an engine
/// that is not running yet in `*out`. `path` names the configuration in
/// error messages and is what relative paths in it (key files,
/// `state_dir`) are resolved against; NULL means `"<embedded>"`. Free the
/// engine with `strait_engine_free`.
///
/// # Safety
/// `toml` is a NUL-terminated string; `path` is NULL or one; `out` is
/// valid for one pointer write.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_new(
    toml: *const c_char,
    path: *const c_char,
    out: *mut *mut StraitEngine,
) -> StraitStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let out = unsafe { out.as_mut() }.ok_or_else(|| null("out"))?;
        *out = std::ptr::null_mut();
        // SAFETY: per this function's contract.
        let toml = unsafe { str_arg(toml, "toml") }?;
        // SAFETY: per this function's contract.
        let path = unsafe { opt_str(path, "path") }?.unwrap_or("<embedded>");
        *out = Box::into_raw(Box::new(StraitEngine::new(toml, path)?));
        Ok(())
    })
}

/// Stops the engine if it runs and frees it. NULL is allowed.
///
/// # Safety
/// `engine` is NULL or from `strait_engine_new`, not yet freed, and no
/// other thread is using it; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_free(engine: *mut StraitEngine) {
    if engine.is_null() {
        return;
    }
    // A panic while stopping is caught; the memory is released either way.
    guard(|| {
        // SAFETY: from `Box::into_raw` in `strait_engine_new`, freed once.
        drop(unsafe { Box::from_raw(engine) });
        Ok(())
    });
}

/// Opens the interfaces and starts the workers.
///
/// # Safety
/// `engine` is from `strait_engine_new` and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_start(engine: *mut StraitEngine) -> StraitStatus {
    // SAFETY: per this function's contract.
    guard(|| unsafe { self::engine(engine) }?.start())
}

/// Stops the workers cleanly (rings drained, programs detached). The
/// engine keeps the configuration in force, so a later
/// `strait_engine_start` resumes with it.
///
/// # Safety
/// `engine` is from `strait_engine_new` and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_stop(engine: *mut StraitEngine) -> StraitStatus {
    // SAFETY: per this function's contract.
    guard(|| unsafe { self::engine(engine) }?.stop())
}

/// Registers the function that receives the engine's events (NULL
/// unregisters). It is called on a thread of the engine with `user`
/// passed back; events with no callback registered are dropped. An event
/// being delivered while the callback is replaced may still reach the old
/// one; after `strait_engine_stop` returns, none does.
///
/// # Safety
/// `engine` is from `strait_engine_new` and not yet freed; `callback`,
/// with `user`, may be called from another thread until it is replaced or
/// the engine is stopped.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_set_event_callback(
    engine: *mut StraitEngine,
    callback: StraitEventCallback,
    user: *mut c_void,
) -> StraitStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let engine = unsafe { self::engine(engine) }?;
        engine.set_callback(callback.map(|function| Callback { function, user }));
        Ok(())
    })
}

/// Replaces the running configuration with `toml` (validated whole,
/// published to the workers at once; refused, it changes nothing).
/// Writes the new table generation to `*generation` if not NULL.
///
/// # Safety
/// `engine` is from `strait_engine_new` and not yet freed; `toml` is a
/// NUL-terminated string; `generation` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_apply(
    engine: *mut StraitEngine,
    toml: *const c_char,
    generation: *mut u64,
) -> StraitStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (engine, toml) = unsafe { (self::engine(engine)?, str_arg(toml, "toml")?) };
        let g = engine.apply(toml)?;
        // SAFETY: per this function's contract.
        unsafe { put_generation(generation, g) };
        Ok(())
    })
}

/// Adds a route given as the fields of a `[[route]]` table in TOML, e.g.
/// `prefix = "10.9.0.0/16"\nvia = ["10.2.0.2"]`.
///
/// # Safety
/// As `strait_engine_apply`.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_add_route(
    engine: *mut StraitEngine,
    route_toml: *const c_char,
    generation: *mut u64,
) -> StraitStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (engine, toml) = unsafe { (self::engine(engine)?, str_arg(route_toml, "route")?) };
        let g = engine.add_route(toml)?;
        // SAFETY: per this function's contract.
        unsafe { put_generation(generation, g) };
        Ok(())
    })
}

/// Deletes the route for `prefix` (`"10.9.0.0/16"`).
///
/// # Safety
/// As `strait_engine_apply`.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_delete_route(
    engine: *mut StraitEngine,
    prefix: *const c_char,
    generation: *mut u64,
) -> StraitStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (engine, prefix) = unsafe { (self::engine(engine)?, str_arg(prefix, "prefix")?) };
        let g = engine.delete_route(prefix)?;
        // SAFETY: per this function's contract.
        unsafe { put_generation(generation, g) };
        Ok(())
    })
}

/// Adds a NAT rule given as the fields of a `[[nat]]` table in TOML.
///
/// # Safety
/// As `strait_engine_apply`.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_add_nat_rule(
    engine: *mut StraitEngine,
    rule_toml: *const c_char,
    generation: *mut u64,
) -> StraitStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (engine, toml) = unsafe { (self::engine(engine)?, str_arg(rule_toml, "rule")?) };
        let g = engine.add_nat_rule(toml)?;
        // SAFETY: per this function's contract.
        unsafe { put_generation(generation, g) };
        Ok(())
    })
}

/// Deletes the NAT rule `name` and its sessions.
///
/// # Safety
/// As `strait_engine_apply`.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_delete_nat_rule(
    engine: *mut StraitEngine,
    name: *const c_char,
    generation: *mut u64,
) -> StraitStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (engine, name) = unsafe { (self::engine(engine)?, str_arg(name, "name")?) };
        let g = engine.delete_nat_rule(name)?;
        // SAFETY: per this function's contract.
        unsafe { put_generation(generation, g) };
        Ok(())
    })
}

/// One rekey step on `tunnel`; `step` is a `strait_rekey_step` value
/// (any other is refused). Install-inbound and switch-outbound take
/// the new SA as the fields of an SA table in TOML (`spi = 4098\ncipher =
/// "aes128-gcm"\nkey = "..."`, the `spi` argument unused); retire-inbound takes
/// `spi` (`sa_toml` may be NULL).
///
/// # Safety
/// As `strait_engine_apply`; `sa_toml` is NULL or a NUL-terminated
/// string.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_rekey(
    engine: *mut StraitEngine,
    tunnel: *const c_char,
    step: u32,
    sa_toml: *const c_char,
    spi: u32,
    generation: *mut u64,
) -> StraitStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (engine, tunnel, sa) = unsafe {
            (
                self::engine(engine)?,
                str_arg(tunnel, "tunnel")?,
                opt_str(sa_toml, "sa")?,
            )
        };
        let step = StraitRekeyStep::from_raw(step).ok_or_else(|| {
            Failure::new(
                StraitStatus::StraitErrorArgument,
                format!("rekey step {step} is none of strait_rekey_step"),
            )
        })?;
        let g = engine.rekey(tunnel, step, sa, spi)?;
        // SAFETY: per this function's contract.
        unsafe { put_generation(generation, g) };
        Ok(())
    })
}

/// The generation of the tables the workers run (each change adds one).
///
/// # Safety
/// `engine` is from `strait_engine_new` and not yet freed; `generation`
/// is writable.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_generation(
    engine: *const StraitEngine,
    generation: *mut u64,
) -> StraitStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let engine = unsafe { self::engine(engine) }?;
        if generation.is_null() {
            return Err(null("generation"));
        }
        // SAFETY: non-NULL and writable (contract).
        unsafe { put_generation(generation, engine.generation()?) };
        Ok(())
    })
}

/// Copies each interface's counters into `out` (room for `capacity`) and
/// the number of interfaces into `*count`. With too little room it copies
/// nothing and returns `STRAIT_ERROR_BUFFER`, `*count` saying how many are
/// needed; `out` may be NULL when `capacity` is 0.
///
/// # Safety
/// `engine` is from `strait_engine_new` and not yet freed; `out` is valid
/// for `capacity` writes; `count` is writable.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_counters(
    engine: *const StraitEngine,
    out: *mut StraitPortCounters,
    capacity: usize,
    count: *mut usize,
) -> StraitStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let engine = unsafe { self::engine(engine) }?;
        // SAFETY: per this function's contract.
        let count = unsafe { count.as_mut() }.ok_or_else(|| null("count"))?;
        let counters = engine.counters()?;
        *count = counters.len();
        if counters.len() > capacity {
            return Err(Failure::new(
                StraitStatus::StraitErrorBuffer,
                format!("{} interfaces, room for {capacity}", counters.len()),
            ));
        }
        if counters.is_empty() {
            return Ok(());
        }
        if out.is_null() {
            return Err(null("out"));
        }
        // SAFETY: non-NULL and valid for `capacity` ≥ len writes (contract).
        let out = unsafe { std::slice::from_raw_parts_mut(out, counters.len()) };
        out.copy_from_slice(&counters);
        Ok(())
    })
}

/// The frames `interface` dropped for `reason` (a name from `straitctl
/// show drops`, e.g. `"no_route"`), summed over the workers.
///
/// # Safety
/// `engine` is from `strait_engine_new` and not yet freed; the strings are
/// NUL-terminated; `value` is writable.
#[no_mangle]
pub unsafe extern "C" fn strait_engine_drop_count(
    engine: *const StraitEngine,
    interface: *const c_char,
    reason: *const c_char,
    value: *mut u64,
) -> StraitStatus {
    guard(|| {
        // SAFETY: per this function's contract.
        let (engine, interface, reason) = unsafe {
            (
                self::engine(engine)?,
                str_arg(interface, "interface")?,
                str_arg(reason, "reason")?,
            )
        };
        // SAFETY: per this function's contract.
        let value = unsafe { value.as_mut() }.ok_or_else(|| null("value"))?;
        *value = engine.drop_count(interface, reason)?;
        Ok(())
    })
}

/// Why the last failed `strait_*` call on this thread failed ("" after a
/// success). Owned by Strait: valid until the next `strait_*` call on
/// this thread; never NULL.
#[no_mangle]
pub extern "C" fn strait_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
