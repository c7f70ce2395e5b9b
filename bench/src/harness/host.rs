//! The machine the benchmark runs on, as the results describe it: its CPUs
//! and kernel, its load (other work on a shared host moves every figure),
//! and the time.

use std::process::Command;

/// The 1-minute load average (NaN when `/proc/loadavg` cannot be read).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The time now in UTC, formatted by `date -u +<format>` (empty if `date`
/// fails).
pub fn utc_stamp(format: &str) -> String {
    Command::new("date")
        .args(["-u", &format!("+{format}")])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// One line for the results: CPUs, CPU model, kernel and load right now.
pub fn machine_notes() -> String {
    let cpus = crate::sys::cpus_online();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} vCPU {model}, Linux {}, load average {:.2} now",
        kernel.trim(),
        load_average()
    )
}
