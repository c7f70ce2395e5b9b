//! The daemon's record of the engine's recent events, for `show events`:
//! `straitd`'s main loop drains the engine's queue into it (and logs each
//! event); the control socket reads it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use strait_dataplane::EngineEvent;

/// Events kept; older ones are forgotten (they were logged).
const KEEP: usize = 256;

/// The last 256 engine events, with when the daemon received them.
#[derive(Debug, Default)]
pub struct EventLog(Mutex<VecDeque<(Instant, EngineEvent)>>);

impl EventLog {
    /// Adds an event received now.
    pub fn record(&self, event: EngineEvent) {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() == KEEP {
            log.pop_front();
        }
        log.push_back((Instant::now(), event));
    }

    /// The events kept, oldest first.
    pub fn recent(&self) -> Vec<(Instant, EngineEvent)> {
        let log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().cloned().collect()
    }
}
