//! What the end-to-end tests share: a `straitd` process in a namespace with
//! its control socket, and small helpers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use strait_testbed::{require_program, require_root, Netns, Testbed, Topology};

/// A running `straitd`, stopped with SIGTERM (then SIGKILL) on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub sock: PathBuf,
    pub config: PathBuf,
    ns: Netns,
    /// A command `straitd` is started under (e.g. `setpriv ...`).
    wrapper: Vec<String>,
    /// The `straitd` executable: the one cargo built, or an installed one.
    program: PathBuf,
}

impl Daemon {
    /// Writes `config` to `dir/<name>.toml` and starts `straitd` with it in
    /// `ns`; returns once the control socket answers.
    pub fn start(ns: &Netns, dir: &Path, name: &str, config: &str) -> Daemon {
        Daemon::start_under(ns, dir, name, config, &[])
    }

    /// As `start`, with `straitd` run under `wrapper` (a command that
    /// execs its arguments, such as `setpriv ...`).
    pub fn start_under(
        ns: &Netns,
        dir: &Path,
        name: &str,
        config: &str,
        wrapper: &[&str],
    ) -> Daemon {
        let program = Path::new(env!("CARGO_BIN_EXE_straitd"));
        Daemon::start_program(ns, dir, name, config, wrapper, program)
    }

    /// As `start_under`, running the `straitd` at `program` (e.g. the one
    /// a package installed).
    pub fn start_program(
        ns: &Netns,
        dir: &Path,
        name: &str,
        config: &str,
        wrapper: &[&str],
        program: &Path,
    ) -> Daemon {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let mut d = Daemon {
            child: None,
            sock: dir.join(format!("{name}.sock")),
            config: path,
            ns: ns.clone(),
            wrapper: wrapper.iter().map(|w| (*w).to_owned()).collect(),
            program: program.to_owned(),
        };
        d.spawn();
        d
    }

    /// (Re)starts the process with the same configuration and socket.
    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.sock);
        let mut argv: Vec<&str> = self.wrapper.iter().map(String::as_str).collect();
        argv.extend([
            self.program.to_str().unwrap(),
            "--config",
            self.config.to_str().unwrap(),
            "--control",
            self.sock.to_str().unwrap(),
        ]);
        let mut child = self
            .ns
            .command(&argv)
            .env("STRAIT_LOG", "warn")
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.sock.exists() && self.try_ctl(&["show", "interfaces"]).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "straitd: no control socket at {:?}",
                self.sock
            );
            if let Some(status) = child.try_wait().unwrap() {
                panic!("straitd exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    /// `straitctl ARGS`: stdout on success, stdout+stderr otherwise.
    pub fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_straitctl"))
            .arg("--socket")
            .arg(&self.sock)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// `straitctl ARGS`, which must succeed.
    pub fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("straitctl {args:?}: {e}"))
    }

    /// `straitctl ARGS --json`, parsed, after the workers' next counter
    /// publication (every 50 ms).
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        std::thread::sleep(Duration::from_millis(150));
        let mut argv = args.to_vec();
        argv.push("--json");
        let text = self.ctl(&argv);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().expect("daemon running").id();
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // child, not yet reaped.
        let rc = unsafe { libc::kill(pid as i32, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// Kills the process without letting it clean up.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Daemon {
    /// Stops the process with SIGTERM (a clean stop), SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds a UDP receiver at `addr` with a `bytes` receive buffer (forced,
/// past `rmem_max`: the tests run as root). A burst must not overflow the
/// default buffer while the receiving thread waits for a CPU on a busy
/// host: the tests are about the dataplane, not the socket.
pub fn udp_receiver(addr: &str, bytes: usize) -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_option(&s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size)
        .unwrap_or_else(|e| panic!("SO_RCVBUFFORCE: {e}"));
    s
}

/// `setsockopt(level, name)` with an int value.
pub fn set_int_option(
    socket: &impl std::os::fd::AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: a valid socket descriptor and a c_int option value of the
    // length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Checks that every numbered datagram arrived exactly once; on failure
/// names the lost and duplicated sequence numbers (the first few).
pub fn assert_exactly_once(seen: &[u32], what: &str) {
    let lost: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == 0).collect();
    let dup: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] > 1).collect();
    assert!(
        lost.is_empty() && dup.is_empty(),
        "{what}: {} of {} lost (first {:?}), {} duplicated (first {:?})",
        lost.len(),
        seen.len(),
        &lost[..lost.len().min(10)],
        dup.len(),
        &dup[..dup.len().min(10)]
    );
}

/// FNV-1a, to compare what was sent with what arrived.
pub fn fnv(h: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *h ^= u64::from(*b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// `ping -n -W 2 ARGS` in `ns`: success and stdout.
pub fn ping(ns: &Netns, args: &[&str]) -> (bool, String) {
    let mut argv = vec!["ping", "-n", "-W", "2"];
    argv.extend_from_slice(args);
    let out = ns.output(&argv).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The forwarding bed's daemon with the metrics endpoint on loopback.
pub const FORWARD_WITH_METRICS: &str = r#"
[engine]
workers = 1
poll = "adaptive"

[[interface]]
name = "left"
addresses = ["10.1.0.1/24"]

[[interface]]
name = "right"
addresses = ["10.2.0.1/24"]

[metrics]
listen = "127.0.0.1:9464"
"#;

/// The forwarding bed (scripts/topologies/forward.topo):
/// h1 10.1.0.2 — [left 10.1.0.1] dp [right 10.2.0.1] — h2 10.2.0.2, with
/// `straitd` in `dp` running `config`, in which `STATE_DIR` names a
/// directory of this run.
pub struct ForwardBed {
    pub daemon: Daemon,
    pub h1: Netns,
    pub dp: Netns,
    pub h2: Netns,
    /// Where the run keeps its files.
    pub dir: PathBuf,
    // Dropped last: deletes the namespaces.
    _tb: Testbed,
}

impl ForwardBed {
    pub fn new(tag: &str, config: &str) -> ForwardBed {
        require_root();
        require_program("ping", "iputils-ping");
        require_program("ethtool", "ethtool");
        let (tb, ns, dir) = topology_bed("forward.topo", tag);
        let config = config.replace("STATE_DIR", &dir.join("state").display().to_string());
        ForwardBed {
            daemon: Daemon::start(&ns["dp"], &dir, "strait", &config),
            h1: ns["h1"].clone(),
            dp: ns["dp"].clone(),
            h2: ns["h2"].clone(),
            dir,
            _tb: tb,
        }
    }

    /// `show drops`, as JSON.
    pub fn drops(&self) -> serde_json::Value {
        self.daemon.json(&["show", "drops"])
    }
}

/// Polls `done` every 100 ms until it holds; panics with `what` after
/// `within`. Returns how long it took.
pub fn within(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// Sends `count` numbered 200-byte datagrams from `src` (in `from`) to
/// `dst` (in `to`), one a millisecond, and returns how often each arrived.
pub fn numbered_stream(from: &Netns, src: &str, to: &Netns, dst: &str, count: u32) -> Vec<u32> {
    let (srv, dst_owned, src) = (to.clone(), dst.to_owned(), src.to_owned());
    let (tx, rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        srv.enter(move || {
            let s = udp_receiver(&dst_owned, 8 << 20);
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            tx.send(()).unwrap();
            let mut seen = vec![0u32; count as usize];
            let mut buf = [0u8; 256];
            while let Ok(n) = s.recv(&mut buf) {
                if n >= 4 {
                    let seq = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                    if let Some(c) = seen.get_mut(seq) {
                        *c += 1;
                    }
                }
            }
            seen
        })
        .unwrap()
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    from.enter(|| {
        let s = std::net::UdpSocket::bind(&src).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 200];
        for seq in 0..count {
            buf[..4].copy_from_slice(&seq.to_be_bytes());
            s.send_to(&buf, dst).unwrap();
            let due = start + Duration::from_millis(u64::from(seq));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    })
    .unwrap();
    receiver.join().unwrap()
}

/// A background process (a server a test talks to), killed on drop.
pub struct Process {
    child: Child,
    what: String,
}

impl Process {
    /// Starts `argv` in `ns`, its output discarded.
    pub fn start(ns: &Netns, what: &str, argv: &[&str]) -> Process {
        let child = ns
            .command(argv)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        Process {
            child,
            what: what.to_owned(),
        }
    }

    /// Panics if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited: {status}", self.what);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds `scripts/topologies/FILE` under a fresh testbed tagged `tag`
/// (torn down when the returned `Testbed` drops), with a scratch directory
/// named after it for configurations, keys and state.
pub fn topology_bed(
    file: &str,
    tag: &str,
) -> (Testbed, std::collections::BTreeMap<String, Netns>, PathBuf) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts/topologies")
        .join(file);
    let topo = Topology::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut tb = Testbed::new(tag);
    let ns = topo.build(&mut tb).unwrap();
    let dir = std::env::temp_dir().join(tb.prefix());
    std::fs::create_dir_all(&dir).unwrap();
    (tb, ns, dir)
}
