//! End-to-end: the Debian package. `scripts/package` packs the binaries
//! cargo built for the tests (no second build); lintian reports no error
//! and no warning; `dpkg -i` installs the binaries, the conffile, both
//! systemd units, man pages and completions; `systemd-analyze verify`
//! accepts the installed units; the installed `straitd`, with the shipped
//! example configuration, runs under the unit's capability bounding set,
//! `NoNewPrivileges` and `LimitCORE=0` (setpriv, prlimit: no systemd runs as
//! PID 1 here) in a namespace bed, forwards and masquerades a ping, reloads
//! on the unit's SIGHUP and answers the installed `straitctl`; `dpkg -r`
//! removes all but the conffile and `dpkg --purge` that too. A guard purges
//! the package even when the test fails.
//!
//! Topology: h1 10.1.0.2 — [lan0 10.1.0.1] dp [wan0 192.0.2.2] — h2 192.0.2.1
//! (the example configuration's interfaces and gateway).
//!
//! Needs root (dpkg, namespaces, XDP) and dpkg-dev, lintian, systemd
//! (systemd-analyze), util-linux (setpriv, prlimit), help2man, binutils,
//! iputils-ping, ethtool; `scripts/install-deps` installs them. It installs
//! the package on this host, so it refuses to run where a package named
//! strait is already installed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use strait_testbed::{require_program, require_root, Testbed, Topology};

mod common;
use common::Daemon;

const TOPOLOGY: &str = "
ns h1
ns dp
ns h2
link h1:eth0 dp:lan0
link dp:wan0 h2:eth0
addr h1:eth0 10.1.0.2/24
addr h2:eth0 192.0.2.1/24
route h1 default via 10.1.0.1
offload-off h1:eth0
offload-off h2:eth0
";

/// What the package installs (besides its documentation).
const FILES: &[&str] = &[
    "/usr/bin/straitd",
    "/usr/bin/straitctl",
    "/usr/bin/strait-gen",
    "/usr/bin/strait-bench",
    "/lib/systemd/system/straitd.service",
    "/lib/systemd/system/straitd@.service",
    "/usr/share/man/man1/straitctl.1.gz",
    "/usr/share/man/man1/straitd.1.gz",
    "/usr/share/man/man1/strait-gen.1.gz",
    "/usr/share/man/man1/strait-bench.1.gz",
    "/usr/share/bash-completion/completions/straitctl",
    "/usr/share/zsh/vendor-completions/_straitctl",
    "/usr/share/fish/vendor_completions.d/straitctl.fish",
    "/usr/share/doc/strait/copyright",
];
const CONFFILE: &str = "/etc/strait/strait.toml";

fn run(argv: &[&str]) -> Output {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn installed() -> bool {
    let out = run(&["dpkg-query", "-W", "-f=${Status}", "strait"]);
    String::from_utf8_lossy(&out.stdout).contains("install ok installed")
}

/// Purges the package on drop, so a failed assertion leaves the host as
/// it was.
struct Installation;

impl Drop for Installation {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "strait"]).output();
    }
}

/// The directory holding the binaries cargo built for this test run.
fn bin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_straitd")).parent().unwrap();
    for b in ["strait-gen", "strait-bench"] {
        assert!(
            dir.join(b).exists(),
            "no {b} in {} (`cargo test --workspace` builds it; alone: `cargo build -p strait-bench`)",
            dir.display()
        );
    }
    dir.to_owned()
}

/// The unit's `KEY=` values (every line of the key, in order).
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

/// `CapabilityBoundingSet=CAP_A CAP_B` as setpriv's `-all,+a,+b`.
fn setpriv_bounding_set(unit: &str) -> String {
    let caps: Vec<String> = unit_values(unit, "CapabilityBoundingSet")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty(), "no CapabilityBoundingSet in the unit");
    format!("-all,{}", caps.join(","))
}

/// The bit of each `CAP_...` name in the unit (linux/capability.h).
fn unit_capability_mask(unit: &str) -> u64 {
    unit_values(unit, "CapabilityBoundingSet")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(|c| match c {
            "CAP_SETPCAP" => 1u64 << 8,
            "CAP_NET_ADMIN" => 1 << 12,
            "CAP_NET_RAW" => 1 << 13,
            "CAP_IPC_LOCK" => 1 << 14,
            "CAP_SYS_NICE" => 1 << 23,
            "CAP_BPF" => 1 << 39,
            other => panic!("the unit names {other}, which this test does not know"),
        })
        .fold(0, |m, b| m | b)
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

#[test]
fn the_package_installs_runs_under_its_unit_and_removes_cleanly() {
    require_root();
    for (prog, package) in [
        ("dpkg-deb", "dpkg"),
        ("dpkg-shlibdeps", "dpkg-dev"),
        ("lintian", "lintian"),
        ("systemd-analyze", "systemd"),
        ("setpriv", "util-linux"),
        ("prlimit", "util-linux"),
        ("help2man", "help2man"),
        ("strip", "binutils"),
        ("ping", "iputils-ping"),
        ("ethtool", "ethtool"),
    ] {
        require_program(prog, package);
    }
    assert!(
        !installed(),
        "a package named strait is installed on this host; this test installs and purges its \
         own build, so remove it first (dpkg -r strait)"
    );

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut tb = Testbed::new("pkg");
    let dir = std::env::temp_dir().join(tb.prefix());
    std::fs::create_dir_all(&dir).unwrap();

    // Build from the test's binaries.
    let bins = bin_dir();
    let out = run(&[
        root.join("scripts/package").to_str().unwrap(),
        "--bin-dir",
        bins.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "scripts/package: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout.lines().last().unwrap().trim().to_owned();
    assert!(
        deb.ends_with(".deb") && Path::new(&deb).exists(),
        "{stdout}"
    );

    // lintian: no error, no warning (info tags are explained in
    // docs/PACKAGING.md).
    let out = run(&["lintian", "--fail-on", "error,warning", &deb]);
    assert!(out.status.success(), "lintian: {}", text(&out));
    let tags = text(&out);
    assert!(
        !tags
            .lines()
            .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian: {tags}"
    );

    let _installation = Installation;
    let out = run(&["dpkg", "-i", &deb]);
    assert!(out.status.success(), "dpkg -i: {}", text(&out));
    assert!(installed());
    for f in FILES.iter().chain([&CONFFILE]) {
        assert!(Path::new(f).exists(), "dpkg -i did not install {f}");
    }
    let conffiles = text(&run(&["dpkg-query", "-W", "-f=${Conffiles}", "strait"]));
    assert!(conffiles.contains(CONFFILE), "conffiles: {conffiles}");
    let version = text(&run(&["/usr/bin/straitctl", "--version"]));
    assert!(version.starts_with("straitctl "), "{version}");

    // The units, as systemd itself would load them.
    for unit in ["straitd.service", "straitd@.service"] {
        let path = format!("/lib/systemd/system/{unit}");
        let out = run(&["systemd-analyze", "verify", &path]);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify {unit}: {}",
            text(&out)
        );
    }
    // An instance of the template, as `systemctl start straitd@NAME` would
    // load it (%i expanded), and its paths consistent with each other and
    // with docs/PACKAGING.md.
    let template = std::fs::read_to_string("/lib/systemd/system/straitd@.service").unwrap();
    let instance = dir.join("straitd@edge.service");
    std::fs::write(&instance, &template).unwrap();
    let out = run(&["systemd-analyze", "verify", instance.to_str().unwrap()]);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify straitd@edge.service: {}",
        text(&out)
    );
    for (key, want) in [
        ("NetworkNamespacePath", "/run/netns/%i"),
        (
            "ExecStart",
            "/usr/bin/straitd --config /etc/strait/%i.toml --control /run/strait-%i/straitd.sock",
        ),
        ("RuntimeDirectory", "strait-%i"),
        ("StateDirectory", "strait/%i"),
        ("NoNewPrivileges", "yes"),
        ("LimitCORE", "0"),
    ] {
        assert_eq!(
            unit_values(&template, key),
            [want],
            "{key}= in straitd@.service"
        );
    }
    let unit = std::fs::read_to_string("/lib/systemd/system/straitd.service").unwrap();
    assert_eq!(
        unit_values(&unit, "CapabilityBoundingSet"),
        unit_values(&template, "CapabilityBoundingSet"),
        "both units bound the same capabilities"
    );
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("LimitCORE", "0"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("RuntimeDirectory", "strait"),
        ("RuntimeDirectoryMode", "0700"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(unit_values(&unit, key), [want], "{key}= in straitd.service");
    }

    // The installed daemon under the unit's limits, with the shipped
    // configuration (its state_dir moved into this run's directory).
    let topo = Topology::parse(TOPOLOGY).unwrap();
    let ns = topo.build(&mut tb).unwrap();
    let config = std::fs::read_to_string(CONFFILE).unwrap().replace(
        "state_dir = \"/var/lib/strait\"",
        &format!("state_dir = \"{}\"", dir.join("state").display()),
    );
    let check = ns["dp"]
        .output(&["/usr/bin/straitd", "--config", CONFFILE, "--check"])
        .unwrap();
    assert!(
        check.status.success(),
        "the shipped configuration, checked where its interfaces exist: {}",
        text(&check)
    );
    let bounding = setpriv_bounding_set(&unit);
    let wrapper = [
        "prlimit",
        "--core=0",
        "--",
        "setpriv",
        "--bounding-set",
        &bounding,
        "--inh-caps=-all",
        "--no-new-privs",
    ];
    let mut daemon = Daemon::start_program(
        &ns["dp"],
        &dir,
        "strait",
        &config,
        &wrapper,
        Path::new("/usr/bin/straitd"),
    );
    let pid = daemon.pid();
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let bnd = u64::from_str_radix(&status_field(pid, "CapBnd"), 16).unwrap();
    assert_eq!(
        bnd & !unit_capability_mask(&unit),
        0,
        "capabilities outside the unit's bounding set: {bnd:x}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(
        core.split_whitespace().nth(4) == Some("0"),
        "LimitCORE=0: {core}"
    );

    let ping = |what: &str| {
        let out = ns["h1"]
            .output(&["ping", "-c", "3", "-i", "0.2", "-W", "1", "192.0.2.1"])
            .unwrap();
        assert!(out.status.success(), "{what}: {}", text(&out));
    };
    ping("h1 → h2 masqueraded by the installed straitd");
    // ExecReload: SIGHUP re-reads the file; the daemon keeps forwarding.
    daemon.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    ping("after the unit's reload");
    // The README's command, with the installed straitctl.
    let sock = daemon.sock.to_str().unwrap().to_owned();
    let counters = run(&["/usr/bin/straitctl", "--socket", &sock, "show", "counters"]);
    assert!(counters.status.success(), "{}", text(&counters));
    let counters = text(&counters);
    assert!(
        counters.contains("lan0") && counters.contains("wan0"),
        "{counters}"
    );
    let sessions = daemon.json(&["show", "nat", "sessions"]);
    assert!(
        sessions.to_string().contains("192.0.2.2"),
        "the ping was masqueraded to the WAN address: {sessions}"
    );
    daemon.stop();

    // Removal: everything but the conffile, then purge.
    let out = run(&["dpkg", "-r", "strait"]);
    assert!(out.status.success(), "dpkg -r: {}", text(&out));
    for f in FILES {
        assert!(!Path::new(f).exists(), "dpkg -r left {f}");
    }
    assert!(Path::new(CONFFILE).exists(), "dpkg -r keeps the conffile");
    let out = run(&["dpkg", "--purge", "strait"]);
    assert!(out.status.success(), "dpkg --purge: {}", text(&out));
    assert!(
        !Path::new(CONFFILE).exists(),
        "dpkg --purge removes the conffile"
    );
    assert!(
        !Path::new("/etc/strait").exists(),
        "dpkg --purge removes /etc/strait"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
