//! The daemon's control socket: a Unix stream socket (mode 0600) that
//! answers one command per connection, for `straitctl` and tests.
//!
//! Only root or the daemon's own user may connect (checked with
//! `SO_PEERCRED`, on top of the file mode). A request is one line, e.g.
//! `show drops --json`; the answer is text (or JSON) and the connection
//! closes. Answers that start with `error:` are failures.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::json;

use crate::config::{Config, NatKindConfig};
use crate::counters::DropReason;
use crate::engine::Engine;
use crate::nat;

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/strait/straitd.sock";

/// Serves the control socket at `path` until `stop` is set.
pub fn serve(
    engine: Arc<Engine>,
    path: &Path,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    let path: PathBuf = path.to_owned();
    std::thread::Builder::new()
        .name("strait-control".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(e) = handle(&engine, stream) {
                            tracing::debug!(error = %e, "control connection");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket accept");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
        })
}

fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of the sizes given.
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

fn handle(engine: &Engine, stream: UnixStream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let uid = peer_uid(&stream)?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut out = stream.try_clone()?;
    if uid != 0 && uid != me {
        writeln!(out, "error: permission denied (uid {uid} is not root)")?;
        return Ok(());
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    let answer = execute(engine, line.trim());
    out.write_all(answer.as_bytes())?;
    Ok(())
}

/// Runs one command against the engine and returns the answer.
pub fn execute(engine: &Engine, command: &str) -> String {
    let mut words: Vec<&str> = command.split_whitespace().collect();
    let json = if let Some(i) = words.iter().position(|w| *w == "--json") {
        words.remove(i);
        true
    } else {
        false
    };
    match words.as_slice() {
        ["show", "interfaces"] => show_interfaces(engine, json),
        ["show", "routes"] => show_routes(engine, json),
        ["show", "counters"] => show_counters(engine, json),
        ["show", "drops"] => show_drops(engine, json),
        ["show", "workers"] => show_workers(engine, json),
        ["show", "nat", "sessions"] => show_nat_sessions(engine, json),
        ["show", "nat", "rules"] => show_nat_rules(engine, json),
        ["show", "nat"] => show_nat(engine, json),
        ["reload"] => match Config::load(engine.path()).map_err(|e| e.to_string()).and_then(|c| {
            engine.apply(c).map_err(|e| e.to_string())
        }) {
            Ok(generation) => format!("reloaded: tables generation {generation}\n"),
            Err(e) => format!("error: {e} (running configuration kept)\n"),
        },
        _ => format!(
            "error: unknown command {command:?}; try: show interfaces|routes|counters|drops|workers|nat|nat rules|nat sessions [--json], reload\n"
        ),
    }
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn show_interfaces(engine: &Engine, json: bool) -> String {
    let t = engine.tables();
    if json {
        let v: Vec<_> = t
            .ports
            .iter()
            .map(|p| {
                json!({
                    "name": p.name, "ifindex": p.link.ifindex, "mac": mac(p.link.mac), "mtu": p.mtu,
                    "addresses": p.v4.iter().map(|(a, l)| format!("{a}/{l}"))
                        .chain(p.v6.iter().map(|(a, l)| format!("{a}/{l}"))).collect::<Vec<_>>(),
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(v));
    }
    let mut s = format!(
        "{:<12} {:>7} {:<17} {:>5}  addresses\n",
        "interface", "ifindex", "mac", "mtu"
    );
    for p in &t.ports {
        let addrs: Vec<String> =
            p.v4.iter()
                .map(|(a, l)| format!("{a}/{l}"))
                .chain(p.v6.iter().map(|(a, l)| format!("{a}/{l}")))
                .collect();
        let _ = writeln!(
            s,
            "{:<12} {:>7} {:<17} {:>5}  {}",
            p.name,
            p.link.ifindex,
            mac(p.link.mac),
            p.mtu,
            addrs.join(" ")
        );
    }
    s
}

fn show_routes(engine: &Engine, json: bool) -> String {
    let t = engine.tables();
    let mut routes: Vec<String> = t.routes.routes().map(|r| r.to_string()).collect();
    routes.sort();
    let names: Vec<&str> = t.ports.iter().map(|p| p.name.as_str()).collect();
    // Egress ids are port indexes: show interface names.
    let named: Vec<String> = routes
        .iter()
        .map(|r| {
            let mut r = r.clone();
            for (i, n) in names.iter().enumerate().rev() {
                r = r.replace(&format!("egress {i}"), &format!("dev {n}"));
            }
            r
        })
        .collect();
    if json {
        return format!("{}\n", json!(named));
    }
    named.into_iter().map(|r| r + "\n").collect()
}

fn show_counters(engine: &Engine, json: bool) -> String {
    let counters = engine.counters();
    if json {
        let v: serde_json::Map<String, serde_json::Value> = counters
            .iter()
            .map(|(n, c)| {
                (
                    n.clone(),
                    json!({
                        "rx_packets": c.rx_packets, "rx_bytes": c.rx_bytes,
                        "tx_packets": c.tx_packets, "tx_bytes": c.tx_bytes,
                        "forwarded": c.forwarded, "punted": c.punted,
                        "neighbour_requests": c.neighbour_requests,
                        "neighbour_replies": c.neighbour_replies,
                        "icmp_sent": c.icmp_sent, "dropped": c.total_drops(),
                        "esp_sealed": c.esp_sealed, "esp_opened": c.esp_opened,
                    }),
                )
            })
            .collect();
        return format!("{}\n", serde_json::Value::Object(v));
    }
    let mut s = format!(
        "{:<12} {:>12} {:>12} {:>12} {:>10} {:>8} {:>12} {:>12} {:>10}\n",
        "interface",
        "rx packets",
        "tx packets",
        "forwarded",
        "punted",
        "icmp",
        "esp sealed",
        "esp opened",
        "dropped"
    );
    for (n, c) in &counters {
        let _ = writeln!(
            s,
            "{:<12} {:>12} {:>12} {:>12} {:>10} {:>8} {:>12} {:>12} {:>10}",
            n,
            c.rx_packets,
            c.tx_packets,
            c.forwarded,
            c.punted,
            c.icmp_sent,
            c.esp_sealed,
            c.esp_opened,
            c.total_drops()
        );
    }
    s
}

fn show_drops(engine: &Engine, json: bool) -> String {
    let counters = engine.counters();
    if json {
        let v: serde_json::Map<String, serde_json::Value> = counters
            .iter()
            .map(|(n, c)| {
                let reasons: serde_json::Map<String, serde_json::Value> = DropReason::ALL
                    .iter()
                    .map(|r| (r.name().to_owned(), json!(c.drops[*r as usize])))
                    .collect();
                (n.clone(), serde_json::Value::Object(reasons))
            })
            .collect();
        return format!("{}\n", serde_json::Value::Object(v));
    }
    let mut s = format!("{:<12} {:<24} {:>12}\n", "interface", "reason", "packets");
    for (n, c) in &counters {
        for r in DropReason::ALL {
            let v = c.drops[r as usize];
            if v > 0 {
                let _ = writeln!(s, "{:<12} {:<24} {:>12}", n, r.name(), v);
            }
        }
    }
    s
}

fn show_workers(engine: &Engine, json: bool) -> String {
    let per = engine.worker_counters();
    if json {
        let v: Vec<_> = per
            .iter()
            .enumerate()
            .map(|(i, ports)| {
                json!({
                    "worker": i,
                    "rx_packets": ports.iter().map(|c| c.rx_packets).sum::<u64>(),
                    "tx_packets": ports.iter().map(|c| c.tx_packets).sum::<u64>(),
                    "dropped": ports.iter().map(|c| c.total_drops()).sum::<u64>(),
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(v));
    }
    let mut s = format!(
        "{:<8} {:>12} {:>12} {:>10}\n",
        "worker", "rx packets", "tx packets", "dropped"
    );
    for (i, ports) in per.iter().enumerate() {
        let _ = writeln!(
            s,
            "{:<8} {:>12} {:>12} {:>10}",
            i,
            ports.iter().map(|c| c.rx_packets).sum::<u64>(),
            ports.iter().map(|c| c.tx_packets).sum::<u64>(),
            ports.iter().map(|c| c.total_drops()).sum::<u64>()
        );
    }
    for line in engine.bind_reports() {
        let _ = writeln!(s, "{line}");
    }
    s
}

fn show_nat_rules(engine: &Engine, json: bool) -> String {
    let t = engine.tables();
    let snaps = t.nat.status.snapshots();
    let sessions = |id| {
        snaps
            .iter()
            .flat_map(|s| &s.sessions)
            .filter(|x| x.rule == id)
            .count()
    };
    let kind = |k| match k {
        NatKindConfig::Snat => "snat",
        NatKindConfig::Masquerade => "masquerade",
        NatKindConfig::Dnat => "dnat",
        NatKindConfig::Static => "static",
    };
    if json {
        let v: Vec<_> = t
            .nat
            .infos
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "id": r.id.0, "kind": kind(r.kind),
                    "rule": r.summary, "sessions": sessions(r.id),
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(v));
    }
    let mut s = format!("{:<16} {:<11} {:>8}  rule\n", "name", "kind", "sessions");
    for r in &t.nat.infos {
        let _ = writeln!(
            s,
            "{:<16} {:<11} {:>8}  {}",
            r.name,
            kind(r.kind),
            sessions(r.id),
            r.summary
        );
    }
    s
}

fn show_nat_sessions(engine: &Engine, json: bool) -> String {
    let t = engine.tables();
    let snaps = t.nat.status.snapshots();
    let rule = |id| t.nat.rule_name(id).unwrap_or("(removed)").to_owned();
    let total: usize = snaps.iter().map(|s| s.session_count).sum();
    let listed: usize = snaps.iter().map(|s| s.sessions.len()).sum();
    if json {
        let v: Vec<_> = snaps
            .iter()
            .enumerate()
            .flat_map(|(w, snap)| snap.sessions.iter().map(move |x| (w, x)))
            .map(|(w, x)| {
                let (o, tr) = (x.original(), x.translated());
                json!({
                    "worker": w, "rule": rule(x.rule), "rule_id": x.rule.0,
                    "kind": x.kind.name(), "protocol": x.protocol.name(),
                    "original": { "source": o.source.to_string(),
                                  "destination": o.destination.to_string() },
                    "translated": { "source": tr.source.to_string(),
                                    "destination": tr.destination.to_string() },
                    "inside": x.inside.to_string(), "external": x.external.to_string(),
                    "outside": x.outside.to_string(),
                    "initiator": match x.initiator {
                        strait_nat::Direction::Outbound => "inside",
                        strait_nat::Direction::Inbound => "outside",
                    },
                    "state": nat::session_state(x),
                    "age": x.age, "idle": x.idle, "expires_in": x.expires_in,
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(v));
    }
    let mut s = format!(
        "{:<5} {:<24} {:<24} {:<24} {:<24} {:<12} {:>7} {:>6}  rule\n",
        "proto",
        "original source",
        "original destination",
        "translated source",
        "translated dest",
        "state",
        "age",
        "idle"
    );
    for snap in &snaps {
        for x in &snap.sessions {
            let (o, tr) = (x.original(), x.translated());
            let _ = writeln!(
                s,
                "{:<5} {:<24} {:<24} {:<24} {:<24} {:<12} {:>7} {:>6}  {}",
                x.protocol.name(),
                o.source.to_string(),
                o.destination.to_string(),
                tr.source.to_string(),
                tr.destination.to_string(),
                nat::session_state(x),
                x.age,
                x.idle,
                rule(x.rule)
            );
        }
    }
    let _ = writeln!(s, "{total} sessions ({listed} listed)");
    s
}

fn show_nat(engine: &Engine, json: bool) -> String {
    let t = engine.tables();
    let snaps = t.nat.status.snapshots();
    if json {
        let v: Vec<_> = snaps
            .iter()
            .enumerate()
            .map(|(w, snap)| {
                let counters: serde_json::Map<String, serde_json::Value> = snap
                    .counters
                    .iter()
                    .map(|(n, v)| (n.to_owned(), json!(v)))
                    .collect();
                json!({
                    "worker": w, "sessions": snap.session_count, "capacity": snap.capacity,
                    "memory_bytes": snap.memory_bytes, "counters": counters,
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(v));
    }
    let mut s = String::new();
    for (w, snap) in snaps.iter().enumerate() {
        let _ = writeln!(
            s,
            "worker {w}: {} of {} sessions, {} KiB",
            snap.session_count,
            snap.capacity,
            snap.memory_bytes / 1024
        );
        for (name, v) in snap.counters.iter().filter(|(_, v)| *v > 0) {
            let _ = writeln!(s, "  {name:<28} {v:>12}");
        }
    }
    s
}

/// Client side: sends `command` to the socket at `path`, returns the answer.
pub fn request(path: &Path, command: &str) -> io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(stream, "{command}")?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    io::Read::read_to_string(&mut stream, &mut answer)?;
    Ok(answer)
}
