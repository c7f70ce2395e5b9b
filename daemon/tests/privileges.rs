//! End-to-end: a running `straitd` has given up its privileges — no
//! capability on any thread, no_new_privs, not dumpable — and still
//! reloads, reconfigures forwarding and stops cleanly; `straitctl` refuses
//! SA keys on its command line and reads them from standard input.
//!
//! Topology (scripts/topologies/forward.topo):
//! h1 10.1.0.2 — [left 10.1.0.1] dp [right 10.2.0.1] — h2 10.2.0.2
//!
//! Needs root (namespaces, veth, XDP), iputils-ping, ethtool and setpriv.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strait_testbed::{require_program, require_root};

mod common;
use common::{ping, Daemon, ForwardBed};

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
prefixes = ["10.9.0.0/16"]
outbound = { spi = 4096, cipher = "aes128-gcm", key = "000102030405060708090a0b0c0d0e0f10111213" }
inbound = { spi = 4097, cipher = "aes128-gcm", key = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3" }
"#;

/// [`CONFIG`] with its SA state directory in `dir`.
fn config(dir: &Path) -> String {
    CONFIG.replace("STATE_DIR", &dir.join("state").display().to_string())
}

fn bed(tag: &str) -> ForwardBed {
    require_program("setpriv", "util-linux");
    ForwardBed::new(tag, CONFIG)
}

/// The value of `field` in a `/proc/.../status` text.
fn field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
}

#[test]
fn straitd_keeps_only_net_admin_on_any_thread_once_set_up() {
    let bed = bed("priv-caps");
    // CAP_NET_ADMIN (12), for the host path's TAP addresses on reload.
    const NET_ADMIN: &str = "0000000000001000";
    let pid = bed.daemon.pid();
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap();
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        for (set, want) in [
            ("CapInh", "0000000000000000"),
            ("CapPrm", NET_ADMIN),
            ("CapEff", NET_ADMIN),
            ("CapBnd", NET_ADMIN),
            ("CapAmb", "0000000000000000"),
        ] {
            assert_eq!(field(&status, set), want, "{set} of thread {}", comm.trim());
        }
        assert_eq!(field(&status, "NoNewPrivs"), "1", "thread {}", comm.trim());
        threads.push(comm.trim().to_owned());
    }
    // The workers, which parse every packet, are among them.
    assert!(threads.iter().any(|t| t == "strait-w0"), "{threads:?}");
    assert!(threads.iter().any(|t| t == "strait-control"), "{threads:?}");

    // It still answers, forwards and stops cleanly, leaving no program.
    let (ok, out) = ping(&bed.h1, &["-c", "2", "-i", "0.2", "10.2.0.2"]);
    assert!(ok, "{out}");
    let mut bed = bed;
    bed.daemon.signal(libc::SIGTERM);
    let mut child = bed.daemon.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "straitd did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    for iface in ["left", "right"] {
        let link = bed.dp.ip(&["link", "show", "dev", iface]).unwrap();
        assert!(!link.contains("xdp"), "{iface} kept a program: {link}");
    }
}

/// The owner of `/proc/PID/status`: the process's user while it is
/// dumpable, root once it is not (proc(5), PR_SET_DUMPABLE).
fn proc_owner(pid: u32) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/status"))
        .unwrap()
        .uid()
}

/// As an unprivileged user given the setup capabilities as ambient ones
/// (what systemd's `User=` with `AmbientCapabilities=` does), `straitd`
/// starts, drops them all, and is not dumpable: its `/proc/PID` files are
/// root's, not its user's, so that user cannot read its memory or
/// environment. The same check on a dumpable process of that user sees
/// the user's own files.
#[test]
fn as_a_user_with_ambient_capabilities_straitd_drops_them_and_is_not_dumpable() {
    require_root();
    require_program("setpriv", "util-linux");
    require_program("ethtool", "ethtool");
    const NOBODY: u32 = 65534;
    let (tb, ns, dir) = common::topology_bed("forward.topo", "priv-user");
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    // /dev/net/tun may be root's alone: no host path here.
    let config = config(&dir).replace(
        "poll = \"adaptive\"\n",
        "poll = \"adaptive\"\nhost_punt = false\n",
    );
    let caps = "+net_admin,+net_raw,+bpf,+ipc_lock,+setpcap";
    let d = Daemon::start_under(
        &ns["dp"],
        &dir,
        "strait",
        &config,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
        ],
    );
    let pid = d.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(field(&status, "Uid").starts_with("65534"), "{status}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(&status, set), "0000000000000000", "{set}");
    }
    assert_eq!(field(&status, "NoNewPrivs"), "1");
    assert_eq!(proc_owner(pid), 0, "/proc/{pid} is its user's: dumpable");
    // The daemon's own user may not read its environment.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(format!("/proc/{pid}/environ"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "its user read the daemon's environment"
    );

    let mut dumpable = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "10",
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut owner = proc_owner(dumpable.id());
    while owner != NOBODY && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        owner = proc_owner(dumpable.id());
    }
    let _ = dumpable.kill();
    let _ = dumpable.wait();
    assert_eq!(owner, NOBODY, "the check itself does not tell");
    // It answers its user's straitctl and forwards.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_straitctl"))
        .arg("--socket")
        .arg(&d.sock)
        .args(["show", "interfaces"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("left"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, out) = ping(&ns["h1"], &["-c", "2", "-i", "0.2", "10.2.0.2"]);
    assert!(ok, "{out}");
    drop(d);
    drop(tb);
}

#[test]
fn a_reload_by_sighup_after_dropping_privileges_still_reconfigures_forwarding() {
    let bed = bed("priv-hup");
    let d = &bed.daemon;
    bed.h2.addr("eth0", "10.77.0.1/32").unwrap();
    let (ok, out) = ping(&bed.h1, &["-c", "1", "10.77.0.1"]);
    assert!(!ok && out.contains("Destination Net Unreachable"), "{out}");

    let base = std::fs::read_to_string(&d.config).unwrap();
    let config = format!("{base}\n[[route]]\nprefix = \"10.77.0.0/24\"\nvia = [\"10.2.0.2\"]\n");
    std::fs::write(&d.config, config).unwrap();
    d.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.ctl(&["show", "routes"]).contains("10.77.0.0/24") {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, out) = ping(&bed.h1, &["-c", "2", "-i", "0.2", "10.77.0.1"]);
    assert!(ok, "after the reload: {out}");

    // And back, through straitctl this time.
    std::fs::write(&d.config, base).unwrap();
    let answer = d.ctl(&["reload"]);
    assert!(answer.starts_with("reloaded:"), "{answer}");
    let (ok, out) = ping(&bed.h1, &["-c", "1", "10.77.0.1"]);
    assert!(!ok && out.contains("Destination Net Unreachable"), "{out}");
}

#[test]
fn straitctl_refuses_a_key_on_its_command_line_and_reads_one_from_stdin() {
    let bed = bed("priv-key");
    let d = &bed.daemon;
    let key = "00112233445566778899aabbccddeeff01020304";
    let err = d
        .try_ctl(&[
            "sa",
            "install-inbound",
            "hub",
            "spi=4098",
            "cipher=aes128-gcm",
            &format!("key={key}"),
        ])
        .unwrap_err();
    assert!(
        err.contains("visible to every local user") && err.contains("key=-"),
        "{err}"
    );
    assert!(!err.contains(key), "{err}");
    let spis = |sa: &serde_json::Value| -> Vec<u64> {
        sa[0]["inbound"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["spi"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(spis(&d.json(&["show", "sa"])), [4097], "nothing installed");

    let mut child = Command::new(env!("CARGO_BIN_EXE_straitctl"))
        .arg("--socket")
        .arg(&d.sock)
        .args([
            "sa",
            "install-inbound",
            "hub",
            "spi=4098",
            "cipher=aes128-gcm",
            "key=-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("ok: tables generation"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(spis(&d.json(&["show", "sa"])), [4097, 4098]);
}
