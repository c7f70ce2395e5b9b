//! End-to-end: `straitd` as a load balancer in front of three HTTP servers
//! (`python3 -m http.server`, each in a namespace of its own), with health
//! checks, drain, membership changes and hostile check answers.
//!
//! Topology (scripts/topologies/lb.topo):
//! client 198.51.100.2 — [wan] strait [b1|b2|b3] — be1 10.1.0.2, be2 10.2.0.2, be3 10.3.0.2
//!
//! Every backend serves a file `id` naming it, so the client learns which
//! backend answered each connection. Needs root (namespaces, veth, XDP),
//! python3 and ethtool.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_testbed::{require_program, require_root, Netns, Testbed};

mod common;
use common::{within, Daemon};

const VIP: &str = "203.0.113.10:80";
/// Check timing of the service under test: `fall` × `interval` is how
/// long a dead backend may still be offered new flows.
const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 150;
const RISE: u64 = 2;
const FALL: u64 = 2;

fn config(backends: &str, extra: &str) -> String {
    format!(
        r#"
[engine]
workers = 1
# Four ports: smaller fill rings leave frames for the host path and ARP.
rx_ring = 512

[[interface]]
name = "wan"
addresses = ["198.51.100.1/24"]

[[interface]]
name = "b1"
addresses = ["10.1.0.1/24"]

[[interface]]
name = "b2"
addresses = ["10.2.0.1/24"]

[[interface]]
name = "b3"
addresses = ["10.3.0.1/24"]

[[load_balancer]]
name = "web"
protocol = "tcp"
address = "{VIP}"
backends = [{backends}]

[load_balancer.check]
kind = "http"
path = "/id"
expect_body = "be"
interval_ms = {INTERVAL_MS}
timeout_ms = {TIMEOUT_MS}
rise = {RISE}
fall = {FALL}
{extra}"#
    )
}

const THREE: &str = r#"
  { address = "10.1.0.2:8000", weight = 1 },
  { address = "10.2.0.2:8000", weight = 1 },
  { address = "10.3.0.2:8000", weight = 2 },
"#;

struct Bed {
    daemon: Daemon,
    client: Netns,
    strait: Netns,
    backends: [Netns; 3],
    dir: PathBuf,
    servers: Vec<(String, Child)>,
    _tb: Testbed,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for (_, c) in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

impl Bed {
    fn new(tag: &str, config: &str) -> Bed {
        require_root();
        require_program("python3", "python3");
        require_program("ethtool", "ethtool");
        let (tb, ns, dir) = common::topology_bed("lb.topo", tag);
        let backends = [ns["be1"].clone(), ns["be2"].clone(), ns["be3"].clone()];
        // The servers first: the checks pass from the start.
        let servers = (0..3).map(|i| serve(&backends[i], &dir, i, 8000)).collect();
        Bed {
            daemon: Daemon::start(&ns["strait"], &dir, "strait", config),
            client: ns["client"].clone(),
            strait: ns["strait"].clone(),
            backends,
            dir,
            servers,
            _tb: tb,
        }
    }

    fn serve(&mut self, i: usize, port: u16) {
        let server = serve(&self.backends[i], &self.dir, i, port);
        self.servers.push(server);
    }

    fn kill(&mut self, name: &str) {
        let at = self.servers.iter().position(|(n, _)| n == name).unwrap();
        let (_, mut c) = self.servers.remove(at);
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// The backends' health as `show lb --json` says: `backend -> health`.
    fn health(&self) -> Vec<(String, String)> {
        let v = self.daemon.json(&["show", "lb"]);
        v[0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["backend"].as_str().unwrap().to_owned(),
                    b["health"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn health_of(&self, backend: &str) -> String {
        self.health()
            .into_iter()
            .find(|(b, _)| b == backend)
            .map(|(_, h)| h)
            .unwrap_or_default()
    }

    /// Waits until every backend's check passed at least once.
    fn wait_checked(&self, service: usize) {
        within("first checks", Duration::from_secs(10), || {
            let v = self.daemon.json(&["show", "lb"]);
            v[service]["backends"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["check"]["passed"].as_u64().unwrap_or(0) >= 1)
        });
    }
}

/// Starts `python3 -m http.server PORT` in backend `i`'s namespace,
/// serving a directory whose `id` file names it (`be1:8000`).
fn serve(ns: &Netns, dir: &Path, i: usize, port: u16) -> (String, Child) {
    let name = format!("be{}:{port}", i + 1);
    let root = dir.join(name.replace(':', "-"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("id"), &name).unwrap();
    let addr = format!("10.{}.0.2", i + 1);
    let child = ns
        .command(&[
            python(),
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            &addr,
        ])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // The access log names the address each request came from.
        .stderr(std::fs::File::create(root.join("access.log")).unwrap())
        .spawn()
        .unwrap();
    // Listening once a connection from its own namespace succeeds.
    let target: SocketAddr = format!("{addr}:{port}").parse().unwrap();
    let ns = ns.clone();
    within(
        &format!("{name} listening"),
        Duration::from_secs(10),
        || {
            ns.enter(move || {
                TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok()
            })
            .unwrap()
        },
    );
    (name, child)
}

/// One request on a new connection: the backend's name, or the error.
fn fetch_id() -> Result<String, std::io::Error> {
    let mut s = TcpStream::connect_timeout(&VIP.parse().unwrap(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /id HTTP/1.0\r\n\r\n")?;
    read_id(&mut s)
}

fn read_id(s: &mut TcpStream) -> Result<String, std::io::Error> {
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))
}

/// `count` connections from the client, `threads` at a time; each result
/// in order.
fn connections(client: &Netns, count: usize, threads: usize) -> Vec<Result<String, String>> {
    client
        .enter(move || {
            let per = count.div_ceil(threads);
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    std::thread::spawn(move || {
                        (0..per.min(count.saturating_sub(t * per)))
                            .map(|_| fetch_id().map_err(|e| e.to_string()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        })
        .unwrap()
}

fn tally(results: &[Result<String, String>]) -> (std::collections::BTreeMap<String, usize>, usize) {
    let mut by = std::collections::BTreeMap::new();
    let mut failed = 0;
    for r in results {
        match r {
            Ok(id) => *by.entry(id.clone()).or_insert(0) += 1,
            Err(_) => failed += 1,
        }
    }
    (by, failed)
}

/// Open connections to the VIP that have not sent their request yet,
/// each with the backend the NAT session sent it to.
fn open_idle(bed: &Bed, count: usize) -> Vec<(TcpStream, String)> {
    let streams: Vec<TcpStream> = bed
        .client
        .enter(move || {
            (0..count)
                .map(|_| {
                    let s =
                        TcpStream::connect_timeout(&VIP.parse().unwrap(), Duration::from_secs(2))
                            .unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    s
                })
                .collect()
        })
        .unwrap();
    // Sessions are published every 500 ms.
    let mut sessions = serde_json::Value::Null;
    let find = |sessions: &serde_json::Value, me: &str| {
        sessions.as_array().and_then(|a| {
            a.iter()
                .find(|x| x["outside"] == me)
                .and_then(|x| x["inside"].as_str().map(str::to_owned))
        })
    };
    within("sessions published", Duration::from_secs(5), || {
        sessions = bed.daemon.json(&["show", "nat", "sessions"]);
        streams
            .iter()
            .all(|s| find(&sessions, &s.local_addr().unwrap().to_string()).is_some())
    });
    streams
        .into_iter()
        .map(|s| {
            let backend = find(&sessions, &s.local_addr().unwrap().to_string()).unwrap();
            (s, backend)
        })
        .collect()
}

/// Each idle connection now sends its request: the answer must come from
/// the backend its session named when it was opened.
fn check_flows_stayed(flows: Vec<(TcpStream, String)>, what: &str) {
    for (mut s, backend) in flows {
        s.write_all(b"GET /id HTTP/1.0\r\n\r\n").unwrap();
        let id = read_id(&mut s).unwrap_or_else(|e| panic!("{what}: flow to {backend}: {e}"));
        let want = format!(
            "be{}:{}",
            &backend[3..4],
            backend.rsplit(':').next().unwrap()
        );
        assert_eq!(id, want, "{what}: a flow moved from {backend}");
    }
}

#[test]
fn spreads_by_weight_fails_over_comes_back_and_drains() {
    let metrics_section = "\n[metrics]\nlisten = \"127.0.0.1:9107\"\n";
    let mut bed = Bed::new("lbw", &config(THREE, metrics_section));
    bed.wait_checked(0);

    // Weights 1:1:2 over 3 000 connections, within ±10 % of each share.
    let started = Instant::now();
    let results = connections(&bed.client, 3000, 4);
    let took = started.elapsed();
    let (by, failed) = tally(&results);
    assert_eq!(failed, 0, "{by:?}");
    for (id, share) in [("be1:8000", 0.25), ("be2:8000", 0.25), ("be3:8000", 0.5)] {
        let got = by.get(id).copied().unwrap_or(0) as f64 / 3000.0;
        assert!(
            (got - share).abs() <= share * 0.10,
            "{id}: {:.1} % of connections, weight share {:.1} % ({by:?})",
            got * 100.0,
            share * 100.0
        );
    }
    eprintln!("3000 connections in {took:?}: {by:?}");

    // Connections to the other backends, open across the failure.
    let survivors: Vec<_> = open_idle(&bed, 30)
        .into_iter()
        .filter(|(_, b)| !b.starts_with("10.1."))
        .collect();
    assert!(!survivors.is_empty());

    // be1 dies: after fall × interval (+ one check's timeout and the
    // table swap) no new connection goes to it.
    let killed = Instant::now();
    bed.kill("be1:8000");
    let down = within(
        "be1 marked down",
        Duration::from_millis(FALL * INTERVAL_MS + TIMEOUT_MS + 1000),
        || bed.health_of("10.1.0.2:8000") == "down",
    );
    eprintln!(
        "be1 down after {down:?} (fall × interval = {} ms)",
        FALL * INTERVAL_MS
    );
    assert!(killed.elapsed() < Duration::from_millis(FALL * INTERVAL_MS + TIMEOUT_MS + 1000));
    let after = connections(&bed.client, 400, 4);
    let (by, failed) = tally(&after);
    assert_eq!(failed, 0, "connections failed with be1 down: {by:?}");
    assert!(!by.contains_key("be1:8000"), "be1 still chosen: {by:?}");
    check_flows_stayed(survivors, "be1 failure");

    // be1 comes back: it is offered new flows after rise × interval.
    bed.serve(0, 8000);
    let up = within(
        "be1 back up",
        Duration::from_millis(RISE * INTERVAL_MS + TIMEOUT_MS + 1500),
        || bed.health_of("10.1.0.2:8000") == "up",
    );
    eprintln!(
        "be1 up again after {up:?} (rise × interval = {} ms)",
        RISE * INTERVAL_MS
    );
    let (by, failed) = tally(&connections(&bed.client, 400, 4));
    assert_eq!(failed, 0);
    assert!(
        by.get("be1:8000").copied().unwrap_or(0) > 50,
        "be1 not chosen again: {by:?}"
    );

    // Drain be2: open flows to it finish, new ones avoid it.
    let to_be2: Vec<_> = open_idle(&bed, 30)
        .into_iter()
        .filter(|(_, b)| b.starts_with("10.2."))
        .collect();
    assert!(!to_be2.is_empty());
    let answer = bed.daemon.ctl(&["lb", "drain", "10.2.0.2:8000"]);
    assert!(answer.starts_with("ok"), "{answer}");
    assert_eq!(bed.health_of("10.2.0.2:8000"), "drained");
    let (by, failed) = tally(&connections(&bed.client, 300, 4));
    assert_eq!(failed, 0);
    assert!(
        !by.contains_key("be2:8000"),
        "drained be2 still chosen: {by:?}"
    );
    check_flows_stayed(to_be2, "be2 drain");
    let text = bed.daemon.ctl(&["show", "lb"]);
    assert!(
        text.contains("drained") && text.contains("http ok"),
        "{text}"
    );
    bed.daemon.ctl(&["lb", "undrain", "web", "10.2.0.2:8000"]);
    assert_eq!(bed.health_of("10.2.0.2:8000"), "up");
    let bad = bed.daemon.try_ctl(&["lb", "drain", "10.9.9.9:1"]);
    assert!(
        bad.as_ref().is_ok_and(|s| s.starts_with("error")) || bad.is_err(),
        "{bad:?}"
    );

    // Metrics name the backends and their checks.
    let json = bed.daemon.ctl(&["show", "lb", "--json"]);
    assert!(json.contains("\"went_down\":1"), "{json}");
    let metrics = bed
        .strait
        .enter(|| {
            let mut s = TcpStream::connect("127.0.0.1:9107").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            text
        })
        .unwrap();
    for line in [
        "strait_lb_backend_up{service=\"web\",backend=\"10.1.0.2:8000\"} 1",
        "strait_lb_backend_down_total{service=\"web\",backend=\"10.1.0.2:8000\"} 1",
        "strait_lb_backend_up_total{service=\"web\",backend=\"10.1.0.2:8000\"} 1",
        "strait_lb_backend_weight{service=\"web\",backend=\"10.3.0.2:8000\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

/// Serves, on `addr`, an HTTP answer that never completes: a status line
/// then one byte every 50 ms (`trickle`), or endless headers (`huge`),
/// until `stop`.
fn hostile_server(ns: &Netns, addr: &'static str, huge: bool, stop: Arc<AtomicBool>) {
    let ns = ns.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        ns.enter(move || {
            let l = std::net::TcpListener::bind(addr).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut conns: Vec<TcpStream> = Vec::new();
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((s, _)) = l.accept() {
                    s.set_nonblocking(true).unwrap();
                    let mut s = s;
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
                    conns.push(s);
                }
                for s in &mut conns {
                    if huge {
                        let _ = s.write_all(
                            &b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(512),
                        );
                    } else {
                        let _ = s.write_all(b"X");
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .unwrap();
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

#[test]
fn flows_stay_put_through_membership_changes_and_hostile_checks_do_not_hang() {
    let hostile = r#"
[[load_balancer]]
name = "hostile"
protocol = "tcp"
address = "203.0.113.11:80"
backends = [{ address = "10.3.0.2:8002" }, { address = "10.3.0.2:8003" }]

[load_balancer.check]
kind = "http"
expect_body = "never"
interval_ms = 500
timeout_ms = 300
rise = 1
fall = 1
"#;
    let mut bed = Bed::new("lbm", &config(THREE, hostile));
    let stop = Arc::new(AtomicBool::new(false));
    hostile_server(&bed.backends[2], "10.3.0.2:8002", false, Arc::clone(&stop));
    hostile_server(&bed.backends[2], "10.3.0.2:8003", true, Arc::clone(&stop));
    bed.serve(2, 8001);
    bed.wait_checked(0);

    // The hostile answers fail within one check's timeout; the loop goes
    // on checking the healthy service meanwhile.
    let checks_before = bed.daemon.json(&["show", "lb"])[0]["backends"][0]["check"]["passed"]
        .as_u64()
        .unwrap();
    within("hostile backends down", Duration::from_secs(3), || {
        let v = bed.daemon.json(&["show", "lb"]);
        v[1]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["health"] == "down")
    });
    // The daemon may have checked before the hostile servers listened
    // (then "connection refused" took them down): wait for checks that
    // met their answers.
    within("hostile answers judged", Duration::from_secs(3), || {
        let v = bed.daemon.json(&["show", "lb"]);
        let error = |i: usize| {
            v[1]["backends"][i]["check"]["last_error"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        !error(0).contains("refused") && !error(1).contains("refused")
    });
    let v = bed.daemon.json(&["show", "lb"]);
    let trickle = v[1]["backends"][0]["check"]["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    let huge = v[1]["backends"][1]["check"]["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(trickle.contains("no answer within 300 ms"), "{trickle}");
    assert!(huge.contains("headers too long"), "{huge}");
    let latency = v[1]["backends"][1]["check"]["latency_us"].as_u64().unwrap();
    assert!(latency < 300_000, "huge headers failed after {latency} us");
    let checks_after = v[0]["backends"][0]["check"]["passed"].as_u64().unwrap();
    assert!(checks_after > checks_before, "healthy checks stalled");
    // With every backend down, a new flow is refused at once (a TCP
    // reset, as from a closed port: no ICMP error is sent) and counted.
    let icmp_sent = || bed.daemon.json(&["show", "counters"])["wan"]["icmp_sent"].as_u64();
    let icmp_before = icmp_sent();
    let refused = bed
        .client
        .enter(|| {
            TcpStream::connect_timeout(&"203.0.113.11:80".parse().unwrap(), Duration::from_secs(3))
        })
        .unwrap();
    let e = refused.expect_err("no backend is up");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    let drops = bed.daemon.json(&["show", "drops"]);
    assert!(drops.to_string().contains("lb_no_backend"), "{drops}");
    assert_eq!(icmp_sent(), icmp_before, "refused by a reset, not ICMP");
    stop.store(true, Ordering::Relaxed);

    // A backend added by reload: open flows stay where they were.
    let flows = open_idle(&bed, 40);
    let four = format!("{THREE}  {{ address = \"10.3.0.2:8001\", weight = 1 }},\n");
    std::fs::write(&bed.daemon.config, config(&four, hostile)).unwrap();
    let answer = bed.daemon.ctl(&["reload"]);
    assert!(answer.starts_with("reloaded"), "{answer}");
    let v = bed.daemon.json(&["show", "lb"]);
    assert_eq!(v[0]["backends"].as_array().unwrap().len(), 4);
    check_flows_stayed(flows, "backend added");
    within("be3:8001 checked", Duration::from_secs(5), || {
        bed.health_of("10.3.0.2:8001") == "up"
    });
    let (by, failed) = tally(&connections(&bed.client, 300, 4));
    assert_eq!(failed, 0);
    assert!(
        by.contains_key("be3:8001"),
        "the new backend gets flows: {by:?}"
    );

    // A backend removed by reload: its open flows and everyone else's
    // finish on the backend they started on.
    let flows = open_idle(&bed, 40);
    assert!(flows.iter().any(|(_, b)| b.starts_with("10.2.")));
    let without_be2 = four.replace("  { address = \"10.2.0.2:8000\", weight = 1 },\n", "");
    std::fs::write(&bed.daemon.config, config(&without_be2, hostile)).unwrap();
    let answer = bed.daemon.ctl(&["reload"]);
    assert!(answer.starts_with("reloaded"), "{answer}");
    check_flows_stayed(flows, "backend removed");
    let (by, _) = tally(&connections(&bed.client, 200, 4));
    assert!(
        !by.contains_key("be2:8000"),
        "removed be2 still chosen: {by:?}"
    );

    // A bad [[load_balancer]] is refused with its line; the running one
    // stays.
    let bad = config(&without_be2, hostile).replace("weight = 2", "weight = 0");
    let line = bad.lines().position(|l| l.contains("weight = 0")).unwrap();
    let backends_line = bad[..bad.find("backends = [").unwrap()].lines().count() + 1;
    std::fs::write(&bed.daemon.config, &bad).unwrap();
    let answer = bed.daemon.try_ctl(&["reload"]).expect_err("refused");
    assert!(
        answer.contains(&format!("line {backends_line}"))
            && answer.contains("load balancer web")
            && answer.contains("weight 0"),
        "{answer} (weight on line {})",
        line + 1
    );
    let (_, failed) = tally(&connections(&bed.client, 50, 2));
    assert_eq!(failed, 0);
}

#[test]
fn a_service_added_by_reload_is_checked() {
    // No load balancer at start: the file has none.
    let full = config(THREE, "");
    let none = &full[..full.find("[[load_balancer]]").unwrap()];
    let bed = Bed::new("lb-add", none);
    assert_eq!(bed.daemon.json(&["show", "lb"]), serde_json::json!([]));
    // The reload adds one, with a fourth backend nothing listens on.
    let four = format!("{THREE}  {{ address = \"10.3.0.2:8009\", weight = 1 }},\n");
    std::fs::write(&bed.daemon.config, config(&four, "")).unwrap();
    let answer = bed.daemon.ctl(&["reload"]);
    assert!(answer.starts_with("reloaded"), "{answer}");
    within(
        "the dead backend found down",
        Duration::from_millis(FALL * INTERVAL_MS + 3000),
        || bed.health_of("10.3.0.2:8009") == "down",
    );
    // The live ones were checked too, and passed.
    within("the live backends checked", Duration::from_secs(5), || {
        let v = bed.daemon.json(&["show", "lb"]);
        v[0]["backends"].as_array().unwrap().iter().all(|b| {
            b["backend"] == "10.3.0.2:8009"
                || (b["health"] == "up" && b["check"]["passed"].as_u64().unwrap_or(0) >= 1)
        })
    });
    let (by, failed) = tally(&connections(&bed.client, 200, 4));
    assert_eq!(failed, 0, "{by:?}");
    assert!(!by.contains_key("be3:8009"), "{by:?}");
}

/// The addresses backend `name` (`be1:8000`) logged requests for `/id`
/// from.
fn requesters(dir: &Path, name: &str) -> Vec<String> {
    let log = std::fs::read_to_string(dir.join(name.replace(':', "-")).join("access.log"))
        .unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("\"GET /id HTTP/1.0\""))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn full_nat_serves_backends_that_have_no_route_back() {
    let full = config(THREE, "").replace("backends = [", "full_nat = true\nbackends = [");
    let bed = Bed::new("lb-full", &full);
    // The backends know only their own subnet: replies to the client can
    // only leave for Strait's address on it.
    for be in &bed.backends {
        let out = be
            .command(&["ip", "route", "del", "default"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bed.wait_checked(0);
    let rules = bed.daemon.ctl(&["show", "nat", "rules"]);
    assert!(rules.contains("full NAT"), "{rules}");

    let (by, failed) = tally(&connections(&bed.client, 300, 4));
    assert_eq!(failed, 0, "every connection answered: {by:?}");
    assert_eq!(by.len(), 3, "every backend served: {by:?}");
    for (i, be) in ["be1:8000", "be2:8000", "be3:8000"].iter().enumerate() {
        let from = requesters(&bed.dir, be);
        assert_eq!(from.len(), by[*be], "{be} logged every request it served");
        let ours = format!("10.{}.0.1", i + 1);
        assert!(
            from.iter().all(|a| *a == ours),
            "{be} saw only Strait's address {ours}, not the client's: {from:?}"
        );
    }

    // Both halves of each flow are listed; the service counts its
    // sessions once, by backend.
    let flows = open_idle(&bed, 6);
    let sessions = bed.daemon.json(&["show", "nat", "sessions"]);
    let kinds: Vec<&str> = sessions
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"full-nat") && kinds.contains(&"full-nat-src"),
        "{kinds:?}"
    );
    check_flows_stayed(flows, "full NAT");
}

/// A DNS-like responder on `addr` in `ns` until `stop` (or 60 s): every
/// datagram of 12 bytes or more comes back as a NOERROR response (QR set)
/// followed by `name`, so checks pass and clients learn who answered.
fn udp_responder(ns: &Netns, addr: &'static str, name: &'static str, stop: Arc<AtomicBool>) {
    let ns = ns.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        ns.enter(move || {
            let s = std::net::UdpSocket::bind(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    if n >= 12 {
                        let mut answer = buf[..n].to_vec();
                        answer[2] |= 0x80;
                        answer[3] &= 0xf0;
                        answer.extend_from_slice(name.as_bytes());
                        let _ = s.send_to(&answer, from);
                    }
                }
            }
        })
        .unwrap();
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

/// One query from each client port in `ports` to the UDP service: who
/// answered each (or `lost`). Ports are given, not ephemeral: a reused
/// port would be an existing flow (UDP sessions last 300 s) and keep its
/// backend.
fn udp_queries(
    client: &Netns,
    ports: std::ops::Range<u16>,
) -> std::collections::BTreeMap<String, usize> {
    client
        .enter(move || {
            let mut by = std::collections::BTreeMap::new();
            for (k, port) in ports.enumerate() {
                let s = std::net::UdpSocket::bind(("198.51.100.2", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut q = vec![0u8; 12];
                q[..2].copy_from_slice(&(k as u16).to_be_bytes());
                s.send_to(&q, "203.0.113.12:53").unwrap();
                let mut buf = [0u8; 512];
                let who = match s.recv(&mut buf) {
                    Ok(n) if n > 12 => String::from_utf8_lossy(&buf[12..n]).into_owned(),
                    _ => "lost".to_owned(),
                };
                *by.entry(who).or_insert(0) += 1;
            }
            by
        })
        .unwrap()
}

#[test]
fn a_udp_service_with_dns_checks_fails_over() {
    let dns = r#"
[[load_balancer]]
name = "dns"
protocol = "udp"
address = "203.0.113.12:53"
backends = [{ address = "10.1.0.2:5353" }, { address = "10.2.0.2:5353" }]

[load_balancer.check]
kind = "dns"
dns_name = "example.org"
interval_ms = 200
timeout_ms = 150
rise = 2
fall = 2
"#;
    let bed = Bed::new("lbu", &config(THREE, dns));
    let stop1 = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::new(AtomicBool::new(false));
    udp_responder(
        &bed.backends[0],
        "10.1.0.2:5353",
        "dns1",
        Arc::clone(&stop1),
    );
    udp_responder(
        &bed.backends[1],
        "10.2.0.2:5353",
        "dns2",
        Arc::clone(&stop2),
    );
    bed.wait_checked(1);
    let by = udp_queries(&bed.client, 20_000..20_200);
    assert!(
        by.get("dns1").copied().unwrap_or(0) > 60 && by.get("dns2").copied().unwrap_or(0) > 60,
        "{by:?}"
    );
    assert!(!by.contains_key("lost"), "{by:?}");
    // dns1 stops answering: its check times out, it goes down, new flows
    // go to dns2 only.
    stop1.store(true, Ordering::Relaxed);
    within("dns1 down", Duration::from_secs(3), || {
        let v = bed.daemon.json(&["show", "lb"]);
        v[1]["backends"][0]["health"] == "down"
    });
    let v = bed.daemon.json(&["show", "lb"]);
    let e = v[1]["backends"][0]["check"]["last_error"].as_str().unwrap();
    // Closed, its host answers port unreachable; either way it failed.
    assert!(
        e.contains("no answer within 150 ms") || e.contains("refused"),
        "{e}"
    );
    let by = udp_queries(&bed.client, 21_000..21_100);
    assert_eq!(by.get("dns2").copied(), Some(100), "{by:?}");
    stop2.store(true, Ordering::Relaxed);
}
