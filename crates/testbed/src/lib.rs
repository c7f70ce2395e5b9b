//! Network-namespace test beds for Strait's end-to-end tests, demo and
//! benchmarks.
//!
//! A [`Testbed`] owns a set of namespaces whose names are unique to this
//! process and call (`st-<tag>-<pid>-<n>-<short>`), so tests can run in
//! parallel and next to a running demo. Dropping the testbed kills every
//! process left in its namespaces and deletes them, which also removes the
//! veth pairs inside: a failing test tears its topology down too.
//!
//! Interfaces are created directly inside their namespaces, so their short
//! names (`eth0`, `wan`, ...) never clash between test runs.
//!
//! The same topology can be described as text and built with
//! [`Topology`]; the `strait-netns` binary does that for shell scripts.
//!
//! Every libc call is in one module, `sys`, behind safe wrappers; the
//! crate root denies `unsafe_code` elsewhere. Its public part
//! ([`PacketSocket`], [`pin_thread_to_cpu`], the signal helpers) lets tests
//! and the `strait-netns` binary inject frames, pin threads and handle
//! signals without `unsafe` of their own.

#![deny(unsafe_code)]

use std::fmt;
use std::os::fd::AsFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod strongswan;
#[allow(unsafe_code)]
mod sys;
mod topology;
pub use sys::{
    default_termination_signals_in_child, ignore_termination_signals, pin_thread_to_cpu,
    PacketSocket, Received,
};
pub use topology::{Topology, TopologyError};

/// Errors from building or driving a testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command could not be started at all.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    /// Entering a namespace failed.
    #[error("cannot enter network namespace {ns}: {source}")]
    Setns {
        ns: String,
        #[source]
        source: std::io::Error,
    },
    /// A wait for a condition ran out of time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

/// Result alias for testbed operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Fails loudly unless the process runs as root.
///
/// Network namespaces, veth pairs and XDP programs need `CAP_SYS_ADMIN`,
/// `CAP_NET_ADMIN` and `CAP_BPF`; a test that needs them must not pass
/// silently without them.
pub fn require_root() {
    assert!(
        sys::effective_uid() == 0,
        "this test needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN for network namespaces and \
         veth pairs, CAP_BPF for XDP); run the test suite as root: `sudo scripts/test`"
    );
}

/// True if `prog` is found on `PATH`.
pub fn have_program(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(prog).is_file()))
        .unwrap_or(false)
}

/// Panics with a message naming the missing tool and its Debian package.
pub fn require_program(prog: &str, package: &str) {
    assert!(
        have_program(prog),
        "this test needs `{prog}` (Debian package `{package}`); `scripts/test` installs it"
    );
}

static NEXT_BED: AtomicU32 = AtomicU32::new(0);

/// A set of network namespaces created for one test, deleted on drop.
#[derive(Debug)]
pub struct Testbed {
    prefix: String,
    namespaces: Vec<String>,
}

impl Testbed {
    /// Starts a testbed whose namespace names begin with a prefix unique to
    /// this process and call.
    pub fn new(tag: &str) -> Testbed {
        let n = NEXT_BED.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(16)
            .collect();
        Testbed {
            prefix: format!("st-{tag}-{}-{n}", std::process::id()),
            namespaces: Vec::new(),
        }
    }

    /// The prefix every namespace of this testbed starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Creates a namespace `<prefix>-<short>` with its loopback up.
    pub fn netns(&mut self, short: &str) -> Result<Netns> {
        let name = format!("{}-{short}", self.prefix);
        run(&["ip", "netns", "add", &name])?;
        self.namespaces.push(name.clone());
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates a veth pair with one end in each namespace, one TX and one RX
    /// queue each (the XSKMAP key is the RX queue index), both ends up.
    pub fn veth(&self, a: (&Netns, &str), b: (&Netns, &str)) -> Result<()> {
        let (ns_a, if_a) = a;
        let (ns_b, if_b) = b;
        run(&[
            "ip",
            "-n",
            &ns_a.name,
            "link",
            "add",
            if_a,
            "numtxqueues",
            "1",
            "numrxqueues",
            "1",
            "type",
            "veth",
            "peer",
            "name",
            if_b,
            "netns",
            &ns_b.name,
            "numtxqueues",
            "1",
            "numrxqueues",
            "1",
        ])?;
        ns_a.ip(&["link", "set", if_a, "up"])?;
        ns_b.ip(&["link", "set", if_b, "up"])?;
        Ok(())
    }

    /// Deletes every namespace now (also done on drop).
    pub fn teardown(&mut self) {
        for name in self.namespaces.drain(..).rev() {
            kill_namespace_processes(&name);
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn kill_namespace_processes(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            // The pid came from the kernel's list of processes in the
            // namespace; one that already exited is no error.
            let _ = sys::kill_hard(pid);
        }
    }
}

/// One network namespace of a [`Testbed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Netns {
    /// Refers to an existing namespace by its full name (not owned: never
    /// deleted by this handle).
    pub fn existing(name: &str) -> Netns {
        Netns {
            name: name.to_owned(),
        }
    }

    /// The full namespace name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `argv` inside this namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    /// Runs `argv` in the namespace; its stdout on success, an error with
    /// stderr otherwise.
    pub fn run(&self, argv: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(argv);
        run(&full)
    }

    /// Runs `argv` in the namespace and returns its raw output whatever the
    /// exit status.
    pub fn output(&self, argv: &[&str]) -> Result<Output> {
        self.command(argv).output().map_err(|source| Error::Spawn {
            cmd: argv.join(" "),
            source,
        })
    }

    /// Starts `argv` in the namespace in the background.
    pub fn spawn(&self, argv: &[&str]) -> Result<Child> {
        self.command(argv).spawn().map_err(|source| Error::Spawn {
            cmd: argv.join(" "),
            source,
        })
    }

    /// `ip <args>` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Adds an address (`"10.0.0.1/24"`) to an interface.
    pub fn addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        let family = if cidr.contains(':') { "-6" } else { "-4" };
        self.ip(&[family, "addr", "add", cidr, "dev", ifname, "nodad"])
            .or_else(|_| self.ip(&[family, "addr", "add", cidr, "dev", ifname]))
            .map(drop)
    }

    /// Adds a route, e.g. `&["default", "via", "10.0.0.1"]`.
    pub fn route(&self, spec: &[&str]) -> Result<()> {
        let family = if spec.iter().any(|s| s.contains(':')) {
            "-6"
        } else {
            "-4"
        };
        let mut args = vec![family, "route", "add"];
        args.extend_from_slice(spec);
        self.ip(&args).map(drop)
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Turns TX checksum offload off on an interface.
    ///
    /// Kernel-built UDP on veth leaves `CHECKSUM_PARTIAL`; a dataplane that
    /// forwards such frames verbatim delivers unfinished checksums, so
    /// traffic endpoints in tests compute checksums in software.
    pub fn disable_tx_offload(&self, ifname: &str) -> Result<()> {
        self.run(&["ethtool", "-K", ifname, "tx", "off"]).map(drop)
    }

    /// The interface's MAC address.
    pub fn mac(&self, ifname: &str) -> Result<[u8; 6]> {
        let out = self.ip(&["-br", "link", "show", "dev", ifname])?;
        out.split_whitespace()
            .find_map(parse_mac)
            .ok_or_else(|| Error::Failed {
                cmd: format!("ip -br link show dev {ifname}"),
                status: "ok".into(),
                stderr: format!("no MAC address in {out:?}"),
            })
    }

    /// The interface index inside this namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let out = self.run(&["cat", &format!("/sys/class/net/{ifname}/ifindex")])?;
        out.trim().parse().map_err(|_| Error::Failed {
            cmd: format!("cat /sys/class/net/{ifname}/ifindex"),
            status: "ok".into(),
            stderr: format!("not a number: {out:?}"),
        })
    }

    /// True if an XDP program is attached to the interface.
    pub fn has_xdp(&self, ifname: &str) -> Result<bool> {
        let out = self.ip(&["-d", "link", "show", "dev", ifname])?;
        Ok(out.contains("prog/xdp") || out.contains(" xdp"))
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns
    /// its result. Sockets opened by `f` belong to the namespace.
    pub fn enter<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter_netns(&path).map_err(|source| Error::Setns {
                        ns: self.name.clone(),
                        source,
                    })?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Polls `probe` until it returns true or `timeout` passes.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut(&Netns) -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if probe(self) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(Error::Timeout(timeout, what.to_owned()))
    }
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter_netns(path: &str) -> std::io::Result<()> {
    // Read-only and close-on-exec, as std opens every file; closed on return.
    let ns = std::fs::File::open(path)?;
    sys::setns_net(ns.as_fd())
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Runs a command in the current namespace; stdout on success.
pub fn run(argv: &[&str]) -> Result<String> {
    let (prog, args) = argv.split_first().expect("empty command");
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            cmd: argv.join(" "),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Failed {
            cmd: argv.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_macs() {
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01"),
            Some([2, 0, 0x0a, 0xff, 0, 1])
        );
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:02"), None);
        assert_eq!(parse_mac("<BROADCAST,UP>"), None);
    }

    #[test]
    fn pinning_refuses_cpus_beyond_the_set() {
        assert!(pin_thread_to_cpu(usize::MAX).is_err());
        std::thread::spawn(|| pin_thread_to_cpu(0).unwrap())
            .join()
            .unwrap();
    }

    #[test]
    fn packet_sockets_inject_and_capture_frames() {
        require_root();
        let mut tb = Testbed::new("pktsock");
        let a = tb.netns("a").unwrap();
        let b = tb.netns("b").unwrap();
        tb.veth((&a, "eth0"), (&b, "eth0")).unwrap();
        let open = |ns: &Netns| {
            ns.enter(|| {
                let s = PacketSocket::open("eth0")?;
                s.set_read_timeout(Duration::from_millis(50))?;
                Ok::<_, std::io::Error>(s)
            })
            .unwrap()
            .unwrap()
        };
        let (tx, watch, rx) = (open(&a), open(&a), open(&b));
        let mut frame = vec![0u8; 60];
        frame[..6].fill(0xff);
        frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        frame[14..20].copy_from_slice(b"pktsok");
        assert_eq!(tx.send(&frame).unwrap(), 60);
        let mut buf = [0u8; 2048];
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "frame never arrived"
            );
            let Ok(r) = rx.recv(&mut buf) else { continue };
            if !r.outgoing && buf[..r.len] == frame[..] {
                break;
            }
        }
        // Another socket on the sending side sees the frame as outgoing
        // (among whatever else the kernel sends on a new veth: IPv6 ND/MLD).
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "the sending side never saw the frame"
            );
            let Ok(seen) = watch.recv(&mut buf) else {
                continue;
            };
            if buf[..seen.len] == frame[..] {
                assert!(seen.outgoing, "our own frame seen as incoming");
                break;
            }
        }
        let err = a.enter(|| PacketSocket::open("no-such-if0")).unwrap();
        assert!(err.is_err());
    }

    #[test]
    fn veth_pair_carries_ping_and_is_torn_down() {
        require_root();
        require_program("ping", "iputils-ping");
        let prefix;
        {
            let mut tb = Testbed::new("selftest");
            prefix = tb.prefix().to_owned();
            let a = tb.netns("a").unwrap();
            let b = tb.netns("b").unwrap();
            tb.veth((&a, "eth0"), (&b, "eth0")).unwrap();
            a.addr("eth0", "192.0.2.1/24").unwrap();
            b.addr("eth0", "192.0.2.2/24").unwrap();
            a.run(&["ping", "-c", "1", "-W", "2", "192.0.2.2"]).unwrap();
            assert_eq!(a.mac("eth0").unwrap().len(), 6);
            assert!(!a.has_xdp("eth0").unwrap());
            let idx = a.ifindex("eth0").unwrap();
            assert!(idx > 1);
            let inside = a
                .enter(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap())
                .unwrap();
            assert!(inside.contains("eth0"));
        }
        let left = run(&["ip", "netns", "list"]).unwrap();
        assert!(!left.contains(&prefix), "namespaces left behind: {left}");
    }
}
