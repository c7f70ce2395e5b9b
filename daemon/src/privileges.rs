//! Giving up privileges once the daemon is set up.
//!
//! `straitd` needs root's powers to attach XDP programs, bind AF_XDP
//! sockets, register UMEMs, open TAP devices, give them addresses, and
//! put workers under SCHED_FIFO. All of that happens in `Engine::start`
//! and when the control socket and metrics endpoint are bound. What runs
//! afterwards — the workers' poll loops, table swaps on reload and on
//! `straitctl` changes, the servers — makes no privileged call, so the
//! daemon then keeps only what `runtime_capabilities` names, on every
//! thread: the rest leaves the effective, permitted, inheritable, ambient
//! and bounding sets; no_new_privs is set, so nothing it might execute can
//! gain privileges back; and the process is made non-dumpable, so a crash
//! writes no core holding keys and `/proc/PID` stays closed to processes
//! without CAP_SYS_PTRACE.

use std::fmt;
use std::io;

use strait_dataplane::EngineConfig;

use crate::sys;

/// A Linux capability (linux/capability.h numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    /// Network configuration: links, addresses, XDP attachment.
    NetAdmin = 12,
    /// Raw and packet sockets.
    NetRaw = 13,
    /// Locking memory (UMEM registration past RLIMIT_MEMLOCK).
    IpcLock = 14,
    /// Real-time scheduling.
    SysNice = 23,
    /// BPF programs and maps.
    Bpf = 39,
}

impl Capability {
    /// The name as capabilities(7) writes it.
    pub fn name(self) -> &'static str {
        match self {
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::NetRaw => "CAP_NET_RAW",
            Capability::IpcLock => "CAP_IPC_LOCK",
            Capability::SysNice => "CAP_SYS_NICE",
            Capability::Bpf => "CAP_BPF",
        }
    }

    /// The capabilities as a bit set, a bit per number.
    pub fn mask(caps: &[Capability]) -> u64 {
        caps.iter().fold(0, |m, c| m | 1 << *c as u32)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The capabilities the running daemon still needs once set up: none but
/// CAP_NET_ADMIN with the host path. Checked one by one (the daemon's
/// tests forward, tunnel, NAT, reload and stop with no more kept):
///
/// - CAP_NET_ADMIN: links and XDP programs are set up at start only; a
///   reload or a `straitctl` change builds and swaps tables and never
///   re-attaches a program (changing interfaces or `[engine]` needs a
///   restart). The programs detach when their link descriptors close,
///   which needs no privilege. Kept only with the host path
///   (`engine.host_punt`): a reload that changes an interface's addresses
///   gives them to its TAP device (`ip addr`, which under no_new_privs runs
///   with at most the daemon's permitted set).
/// - CAP_NET_RAW: AF_XDP sockets are opened at start; their TX/RX wakeups
///   (`sendto`/`recvfrom` on an open socket) need nothing.
/// - CAP_BPF: the program and its XSKMAP are created at start; removing a
///   socket from the map at stop goes through the map's descriptor (and
///   the kernel removes it anyway when the socket closes).
/// - CAP_IPC_LOCK: UMEM pages are charged and pinned when registered, at
///   start.
/// - CAP_SYS_NICE (with `engine.realtime_priority`): the workers' policy is
///   set when they start and stays when the capability goes.
///
/// A feature that changes links at run time would add its capability here.
pub fn runtime_capabilities(engine: &EngineConfig) -> Vec<Capability> {
    if engine.host_punt {
        vec![Capability::NetAdmin]
    } else {
        Vec::new()
    }
}

/// What `restrict` left in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// The capabilities kept (of those asked for, the ones the process had).
    pub kept: Vec<Capability>,
    /// Threads the restriction was applied on.
    pub threads: usize,
}

/// One thread's privileges as `/proc/…/status` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ThreadPrivileges {
    inheritable: u64,
    permitted: u64,
    effective: u64,
    bounding: u64,
    ambient: u64,
    no_new_privs: bool,
}

impl ThreadPrivileges {
    fn parse(status: &str) -> Option<ThreadPrivileges> {
        let hex = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        };
        let no_new_privs = status
            .lines()
            .find_map(|l| l.strip_prefix("NoNewPrivs:"))?
            .trim()
            == "1";
        Some(ThreadPrivileges {
            inheritable: hex("CapInh")?,
            permitted: hex("CapPrm")?,
            effective: hex("CapEff")?,
            bounding: hex("CapBnd")?,
            ambient: hex("CapAmb")?,
            no_new_privs,
        })
    }

    fn within(&self, keep: u64) -> bool {
        self.inheritable == 0
            && self.ambient == 0
            && self.permitted & !keep == 0
            && self.effective & !keep == 0
            && self.bounding & !keep == 0
            && self.no_new_privs
    }
}

/// Keeps only `keep` on every thread of the process, sets no_new_privs and
/// makes the process non-dumpable. Call it once set up, when no thread is
/// being started. Fails (and the daemon should not go on) unless every
/// thread is then seen restricted in `/proc/self/task`.
pub fn restrict(keep: &[Capability]) -> io::Result<Restriction> {
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?
        .trim()
        .parse()
        .map_err(|_| io::Error::other("/proc/sys/kernel/cap_last_cap: not a number"))?;
    let mask = Capability::mask(keep);
    let before = std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| ThreadPrivileges::parse(&s))
        .unwrap_or_default();
    let mut threads = 0;
    // A thread started by one of them meanwhile inherits its creator's
    // sets, restricted or not: check every thread, and go again for any
    // that is not (a bounded number of times).
    let mut unrestricted = Vec::new();
    for _ in 0..3 {
        threads = sys::restrict_all_threads(mask, last_cap)?;
        unrestricted.clear();
        for tid in sys::thread_ids()? {
            // A thread that has ended meanwhile has no status to read.
            let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
            else {
                continue;
            };
            match ThreadPrivileges::parse(&status) {
                Some(p) if p.within(mask) => {}
                _ => unrestricted.push(tid),
            }
        }
        if unrestricted.is_empty() {
            break;
        }
    }
    if !unrestricted.is_empty() {
        return Err(io::Error::other(format!(
            "threads {unrestricted:?} still hold capabilities beyond those kept"
        )));
    }
    sys::set_not_dumpable()?;
    let kept = keep
        .iter()
        .copied()
        .filter(|c| before.permitted & (1 << *c as u32) != 0)
        .collect();
    Ok(Restriction { kept, threads })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse_into_sets() {
        let status = "Name:\tstraitd\nCapInh:\t0000000000000000\nCapPrm:\t0000008000003000\n\
                      CapEff:\t0000008000003000\nCapBnd:\t0000008000003000\n\
                      CapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t0\n";
        let p = ThreadPrivileges::parse(status).unwrap();
        let keep = Capability::mask(&[Capability::NetAdmin, Capability::NetRaw, Capability::Bpf]);
        assert_eq!(keep, 0x0000_0080_0000_3000);
        assert_eq!(p.effective, keep);
        assert!(p.within(keep));
        assert!(!p.within(Capability::mask(&[Capability::NetAdmin])));
        let p = ThreadPrivileges::parse(&status.replace("NoNewPrivs:\t1", "NoNewPrivs:\t0"));
        assert!(!p.unwrap().within(keep));
        assert!(ThreadPrivileges::parse("Name:\tx\n").is_none());
    }

    #[test]
    fn only_the_host_path_keeps_net_admin_at_run_time() {
        let mut engine = EngineConfig::default();
        assert_eq!(runtime_capabilities(&engine), [Capability::NetAdmin]);
        engine.realtime_priority = 7;
        assert_eq!(runtime_capabilities(&engine), [Capability::NetAdmin]);
        engine.host_punt = false;
        assert_eq!(runtime_capabilities(&engine), []);
    }
}
