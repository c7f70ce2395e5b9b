//! The daemon's libc calls behind safe wrappers; the rest of the crate
//! denies `unsafe` code.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The user id of the process at the other end of `stream` (`SO_PEERCRED`:
/// what the kernel recorded at connect, not what the peer claims).
pub(crate) fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of the sizes given, and the
    // descriptor is borrowed from a live stream.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Waits until `fd` is readable (a listener has a connection waiting) or
/// `timeout` passes; `true` if it is readable. An interrupted wait counts
/// as a timeout: the caller looks again.
pub(crate) fn wait_readable(fd: &impl AsRawFd, timeout: std::time::Duration) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: p is one valid pollfd for the duration of the call, and the
    // descriptor is borrowed from a live listener.
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    rc > 0 && p.revents & libc::POLLIN != 0
}

/// This process's effective user id.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

// ---------------------------------------------------------------------------
// Privileges
//
// Capabilities, the bounding set and no_new_privs belong to each thread,
// not to the process: `capset(2)` and `prctl(2)` change only the calling
// thread. The engine's workers (which parse every packet from the wire)
// are already running when the daemon gives its privileges up, so every
// thread has to make the calls itself. As glibc does for `setuid` and
// libcap's "psx" for `cap_set_proc`, the caller signals each thread and
// the signal handler makes the calls on that thread.

/// `_LINUX_CAPABILITY_VERSION_3` (linux/capability.h): 64-bit sets as
/// two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// What the signal handler applies: the capabilities kept (a bit per
/// capability number) and the highest capability the kernel knows.
static KEEP: AtomicU64 = AtomicU64::new(0);
static LAST_CAP: AtomicU32 = AtomicU32::new(0);
/// Threads done, and the first failure: `step << 16 | errno`.
static DONE: AtomicUsize = AtomicUsize::new(0);
static FAILURE: AtomicI32 = AtomicI32::new(0);

/// The calls that fail, named in the error.
const STEPS: [&str; 5] = [
    "",
    "prctl(PR_CAPBSET_DROP) (needs CAP_SETPCAP)",
    "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
    "capget/capset",
    "prctl(PR_SET_NO_NEW_PRIVS)",
];

/// Drops, on the calling thread, every capability not in `keep` from the
/// bounding set, the ambient set, and the effective, permitted and
/// inheritable sets (inheritable is emptied), then sets no_new_privs.
/// Only raw system calls: it also runs in a signal handler.
fn restrict_this_thread(keep: u64, last_cap: u32) -> Result<(), (i32, i32)> {
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(0);
    for cap in 0..=last_cap.min(63) {
        if keep & (1 << cap) != 0 {
            continue;
        }
        let cap = libc::c_ulong::from(cap);
        // SAFETY: prctl with integer arguments only.
        let present = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) };
        // SAFETY: as above.
        if present == 1 && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            return Err((1, errno()));
        }
    }
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err((2, errno()));
    }
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are live and of the sizes version 3 uses
    // (one header, two data words); pid 0 is the calling thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err((3, errno()));
    }
    for (i, d) in data.iter_mut().enumerate() {
        let word = (keep >> (32 * i)) as u32;
        d.effective &= word;
        d.permitted &= word;
        d.inheritable = 0;
    }
    // SAFETY: as for capget; the kernel only reads header and data.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err((3, errno()));
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err((4, errno()));
    }
    Ok(())
}

extern "C" fn on_restrict_signal(_: libc::c_int) {
    // SAFETY: errno is this thread's; saved and restored so the
    // interrupted code sees its own.
    let saved = unsafe { *libc::__errno_location() };
    if let Err((step, e)) =
        restrict_this_thread(KEEP.load(Ordering::SeqCst), LAST_CAP.load(Ordering::SeqCst))
    {
        let _ = FAILURE.compare_exchange(0, step << 16 | e, Ordering::SeqCst, Ordering::SeqCst);
    }
    DONE.fetch_add(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

fn failure(code: i32) -> io::Error {
    let step = STEPS.get((code >> 16) as usize).copied().unwrap_or("?");
    let e = io::Error::from_raw_os_error(code & 0xffff);
    io::Error::new(e.kind(), format!("{step}: {e}"))
}

/// The ids of this process's threads (`/proc/self/task`).
pub(crate) fn thread_ids() -> io::Result<Vec<libc::pid_t>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        if let Some(id) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Applies `restrict_this_thread(keep)` on every thread of the process:
/// the caller directly, the others from a signal handler. Returns once all
/// of them have, or with the first failure. The caller makes sure no
/// thread is being started meanwhile and checks the result
/// (`/proc/self/task/*/status`).
pub(crate) fn restrict_all_threads(keep: u64, last_cap: u32) -> io::Result<usize> {
    KEEP.store(keep, Ordering::SeqCst);
    LAST_CAP.store(last_cap, Ordering::SeqCst);
    DONE.store(0, Ordering::SeqCst);
    FAILURE.store(0, Ordering::SeqCst);
    let signal = libc::SIGRTMIN() + 5;
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value
    // filled in below; the handler only makes system calls and touches
    // atomics (async-signal-safe).
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_restrict_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: sa_mask is a live sigset_t; the handler must not nest.
    unsafe { libc::sigfillset(&mut action.sa_mask) };
    // SAFETY: action and old are live sigaction values.
    if unsafe { libc::sigaction(signal, &action, &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        // SAFETY: getpid and gettid have no preconditions.
        let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
        let mut signalled = 0usize;
        for tid in thread_ids()? {
            if tid == me {
                continue;
            }
            // SAFETY: tgkill with integer arguments; a thread that has
            // ended meanwhile answers ESRCH.
            let rc = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal) };
            if rc == 0 {
                signalled += 1;
            } else if io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) {
                return Err(io::Error::last_os_error());
            }
        }
        restrict_this_thread(keep, last_cap).map_err(|(s, e)| failure(s << 16 | e))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while DONE.load(Ordering::SeqCst) < signalled {
            if std::time::Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} of {signalled} threads did not drop their privileges within 5 s",
                        signalled - DONE.load(Ordering::SeqCst)
                    ),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        match FAILURE.load(Ordering::SeqCst) {
            0 => Ok(signalled + 1),
            code => Err(failure(code)),
        }
    })();
    // Every signalled thread has run the handler (or the wait failed, and
    // the process is about to exit): ignore any late copy rather than let
    // the default action (termination) take it.
    // SAFETY: SIG_IGN is a valid disposition.
    unsafe { libc::signal(signal, libc::SIG_IGN) };
    result
}

/// `prctl(PR_SET_DUMPABLE, 0)`: no core dump (it would hold keys), and
/// `/proc/PID` files and ptrace closed to anyone without CAP_SYS_PTRACE.
pub(crate) fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
