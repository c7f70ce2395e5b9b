//! End-to-end: `examples/c/embed.c`, compiled with `cc` against the
//! generated header and `libstrait.so`, runs the engine in a namespace and
//! forwards real traffic; every call of the C ABI is made from C, and its
//! effect is checked from outside (pings through the engine, a route that
//! works once added and no longer once deleted, an SA lifetime event
//! delivered to the C callback, refusals with their status and line).
//!
//! Topology (scripts/topologies/forward.topo):
//! h1 10.1.0.2 — [left 10.1.0.1] dp [right 10.2.0.1] — h2 10.2.0.2 (+10.9.0.1)
//!
//! Needs root (namespaces, veth, XDP), a C compiler (gcc), iputils-ping and
//! ethtool.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use strait_testbed::{require_program, require_root, Netns, Testbed, Topology};

const CONFIG: &str = r#"
[engine]
workers = 1
state_dir = "STATE_DIR"
manual_keying = true
poll = "adaptive"

[[interface]]
name = "left"
addresses = ["10.1.0.1/24"]

[[interface]]
name = "right"
addresses = ["10.2.0.1/24"]

[[tunnel]]
name = "hub"
local = "10.2.0.1"
remote = "10.2.0.9"
prefixes = ["10.8.0.0/16"]
outbound = { spi = 4096, cipher = "aes128-gcm", key = "000102030405060708090a0b0c0d0e0f10111213" }
inbound = { spi = 4097, cipher = "aes128-gcm", key = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3" }
"#;

/// The C example's process: its output lines arrive on a channel so every
/// wait is bounded; killed on drop (the testbed also kills whatever is
/// left in its namespaces).
struct Example {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Example {
    /// Reads lines until one starts with `prefix` (10 s at most); returns it.
    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    assert!(
                        !line.starts_with("failed"),
                        "embed.c: {line}\n{:#?}",
                        self.seen
                    );
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("embed.c: no {prefix:?} within 10 s; saw {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("embed.c exited before {prefix:?}; saw {:#?}", self.seen)
                }
            }
        }
    }

    /// Lets the example go on to its next step.
    fn next(&mut self) {
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where cargo put `libstrait.so` and `libstrait.a`: `cargo test` leaves
/// them in `deps/` beside the test binary; `cargo build` also copies them
/// one level up.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    let candidates = [deps.clone(), deps.parent().unwrap().to_path_buf()];
    candidates
        .iter()
        .find(|d| d.join("libstrait.so").exists() && d.join("libstrait.a").exists())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no libstrait.so and libstrait.a in {} or its parent (cargo builds them with the strait-ffi tests)",
                deps.display()
            )
        })
}

/// Compiles the example with warnings as errors; returns the program.
fn compile(out: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lib = library_dir();
    let program = out.join("embed");
    let status = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&program)
        .arg(root.join("examples/c/embed.c"))
        .arg("-I")
        .arg(root.join("ffi/include"))
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lstrait")
        .status()
        .expect("running cc");
    assert!(status.success(), "cc examples/c/embed.c: {status}");
    program
}

/// One bounded ping from `ns` to `dst`: whether an answer came.
fn ping(ns: &Netns, dst: &str) -> bool {
    ns.output(&["ping", "-c", "3", "-i", "0.2", "-W", "1", dst])
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn the_c_example_drives_a_real_engine_through_every_call() {
    require_root();
    require_program("cc", "gcc");
    require_program("ping", "iputils-ping");
    require_program("ethtool", "ethtool");
    let topo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/topologies/forward.topo");
    let topo = Topology::parse(&std::fs::read_to_string(topo).unwrap()).unwrap();
    let mut tb = Testbed::new("ffi");
    let ns = topo.build(&mut tb).unwrap();
    let (h1, dp, h2) = (&ns["h1"], &ns["dp"], &ns["h2"]);
    h2.addr("eth0", "10.9.0.1/32").unwrap();
    let dir = std::env::temp_dir().join(tb.prefix());
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("strait.toml");
    let state = dir.join("state");
    std::fs::write(
        &config,
        CONFIG.replace("STATE_DIR", state.to_str().unwrap()),
    )
    .unwrap();
    let program = compile(&dir);

    let mut child = dp
        .command(&[program.to_str().unwrap(), config.to_str().unwrap()])
        .env("STRAIT_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stdin = child.stdin.take().unwrap();
    let mut ex = Example {
        child,
        stdin,
        lines,
        seen: Vec::new(),
    };

    ex.expect("started generation=");
    assert!(ping(h1, "10.2.0.2"), "h1 → h2 through the engine");
    // Workers publish counters every 50 ms.
    std::thread::sleep(Duration::from_millis(200));
    ex.next();
    let left = ex.expect("counters left rx=");
    let field = |line: &str, key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    assert!(field(&left, "forwarded") >= 3, "{left}");
    ex.expect("counters right rx=");
    ex.expect("counters left no_route=");

    // No route to 10.9.0.0/16 yet: the engine answers unreachable.
    assert!(!ping(h1, "10.9.0.1"));
    ex.next();
    ex.expect("route added generation=");
    assert!(
        ping(h1, "10.9.0.1"),
        "the route added from C carries traffic"
    );
    ex.next();
    ex.expect("route deleted generation=");
    let again = ex.expect("route delete again");
    assert!(again.contains("status=2"), "{again}");
    assert!(!ping(h1, "10.9.0.1"), "the route deleted from C is gone");

    ex.next();
    ex.expect("nat added generation=");
    assert!(ping(h1, "10.2.0.2"), "h1 → h2 while SNAT is in force");
    ex.next();
    ex.expect("nat deleted generation=");

    ex.next();
    ex.expect("rekeyed generation=");
    let bad = ex.expect("rekey bad step");
    assert!(bad.contains("status=1"), "{bad}");
    let event = ex.expect("event sa-soft-expired");
    assert!(
        event.contains("tunnel=hub spi=4099 direction=outbound"),
        "{event}"
    );
    ex.expect("soft expired events=");
    let refused = ex.expect("apply refused");
    assert!(refused.contains("status=2"), "{refused}");
    // embed.c appends a blank line, `[[route]]` and the bad prefix.
    let line = CONFIG.matches('\n').count() + 3;
    assert!(refused.contains(&format!("line {line}")), "{refused}");
    ex.expect("applied generation=");
    assert!(ping(h1, "10.2.0.2"), "forwarding after apply");

    ex.next();
    let stopped = ex.expect("stopped");
    assert!(stopped.contains("status=4"), "{stopped}");
    ex.expect("freed");
    let status = ex.child.wait().unwrap();
    assert!(status.success(), "embed.c: {status}; {:#?}", ex.seen);
    assert!(!dp.has_xdp("left").unwrap(), "XDP detached after stop");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_c_example_links_statically_against_libstrait_a() {
    require_program("cc", "gcc");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lib = library_dir();
    let dir = std::env::temp_dir().join(format!("strait-ffi-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join("embed-static");
    // The link line of docs/EMBEDDING.md.
    let status = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&program)
        .arg(root.join("examples/c/embed.c"))
        .arg("-I")
        .arg(root.join("ffi/include"))
        .arg(lib.join("libstrait.a"))
        .args(["-lpthread", "-ldl", "-lm", "-lgcc_s"])
        .status()
        .expect("running cc");
    assert!(status.success(), "cc ... libstrait.a: {status}");
    // Without arguments it prints its usage and exits 2, before any call.
    let out = Command::new(&program).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    // And a configuration it cannot parse is refused through the C ABI
    // with the line, without touching any interface.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[engine]\nworkers = \"two\"\n").unwrap();
    let out = Command::new(&program).arg(&bad).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("failed new: status 2: ") && stdout.contains("line 2"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
