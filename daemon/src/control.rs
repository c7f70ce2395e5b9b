//! The daemon's control socket: a Unix stream socket (mode 0600) that
//! answers one command per connection, for `straitctl` and tests.
//!
//! Only root or the daemon's own user may connect (checked with
//! `SO_PEERCRED`, on top of the file mode). A request is one line, e.g.
//! `show drops --json`; the answer is text (or JSON) and the connection
//! closes. Answers that start with `error:` are failures.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::json;
use zeroize::Zeroizing;

use crate::dns::{DnsState, DnsView};
use crate::events::EventLog;
use crate::ike::{IkeState, IkeView};
use crate::server::{self, Client, Limits, RequestError, ServerStats};
use crate::sys;
use strait_dataplane::{
    session_state, Config, DropReason, Engine, InterfaceInfo, NatDirection, NatKindConfig,
    NatRuleConfig, NeighbourState, PortCounters, RekeyStep, RouteConfig, SaDirection,
    SaEntryConfig, Stage,
};

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/strait/straitd.sock";

/// The control socket's bounds (docs/CLI.md, "Limits"): a command is one
/// short line sent at once by `straitctl`; an answer is read as fast as
/// it is written. The cap is generous for operators and scripts, and
/// bounds the threads and memory a misbehaving local client can take.
pub const LIMITS: Limits = Limits {
    max_clients: 16,
    max_request: 4096,
    request_timeout: Duration::from_secs(5),
    answer_timeout: Duration::from_secs(10),
};

/// What a client over the cap is told before it is closed.
const BUSY: &[u8] = b"error: busy: 16 control clients connected (the limit); try again\n";

/// What the daemon's runtimes publish for the control socket to read.
#[derive(Debug, Clone, Default)]
pub struct Views {
    /// The key exchange (`show ike`, `sites`, `devices`, route origins).
    pub ike: Arc<IkeView>,
    /// The DNS forwarder (`show dns`).
    pub dns: Arc<DnsView>,
}

/// Serves the control socket at `path` until `stop` is set; `show events`
/// answers from `events`, `stats` counts the clients.
pub fn serve(
    engine: Arc<Engine>,
    events: Arc<EventLog>,
    views: Views,
    path: &Path,
    stats: Arc<ServerStats>,
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
    let accept = server::serve(
        "strait-control",
        listener,
        LIMITS,
        stats,
        Arc::clone(&stop),
        BUSY,
        move |client: &mut Client<UnixStream>| handle(&engine, &events, &views, client),
    )?;
    // The socket file goes once nothing answers on it any more.
    std::thread::Builder::new()
        .name("strait-control-end".into())
        .spawn(move || {
            let _ = accept.join();
            let _ = std::fs::remove_file(&path);
        })
}

fn handle(engine: &Engine, events: &EventLog, views: &Views, client: &mut Client<UnixStream>) {
    let uid = match sys::peer_uid(client.stream()) {
        Ok(uid) => uid,
        Err(e) => {
            tracing::debug!(error = %e, "control connection: peer credentials");
            return;
        }
    };
    let me = sys::effective_uid();
    if uid != 0 && uid != me {
        let answer = format!("error: permission denied (uid {uid} is not root)\n");
        let _ = client.write_answer(answer.as_bytes());
        return;
    }
    let request = match client.read_request(|r| r.contains(&b'\n')) {
        // A command may carry a key: the buffers are wiped when dropped.
        Ok(r) => Zeroizing::new(r),
        Err(RequestError::TooLong) => {
            let answer = format!(
                "error: request longer than {} bytes refused\n",
                LIMITS.max_request
            );
            let _ = client.write_answer(answer.as_bytes());
            return;
        }
        Err(RequestError::TimedOut) => {
            let answer = format!(
                "error: no complete request within {} s\n",
                LIMITS.request_timeout.as_secs()
            );
            let _ = client.write_answer(answer.as_bytes());
            return;
        }
        Err(RequestError::Io(e)) => {
            tracing::debug!(error = %e, "control connection");
            return;
        }
    };
    let line = request.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = Zeroizing::new(String::from_utf8_lossy(line).into_owned());
    let answer = execute(engine, events, views, line.trim());
    if let Err(e) = client.write_answer(answer.as_bytes()) {
        tracing::debug!(error = %e, "control connection: answer");
    }
}

/// `show dns`: zones, forwarding, upstreams and their health, the cache,
/// the counters.
fn show_dns(state: Option<&DnsState>, json: bool) -> String {
    let Some(s) = state else {
        return if json {
            "null\n".into()
        } else {
            "no [dns] configured\n".into()
        };
    };
    if json {
        return format!("{}\n", serde_json::to_string(s).unwrap_or_default());
    }
    let addrs = |v: &[std::net::SocketAddr]| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    let _ = writeln!(out, "listen: {}", addrs(&s.listen));
    for (apex, n) in &s.zones {
        let _ = writeln!(out, "zone {apex}: {n} records");
    }
    for (suffix, ups) in &s.forward {
        let _ = writeln!(out, "forward {suffix} -> {}", addrs(ups));
    }
    let _ = writeln!(out, "upstreams: {}", addrs(&s.upstreams));
    for u in &s.upstream_health {
        let rtt = u.last_rtt_ms.map_or("-".into(), |r| format!("{r:.2} ms"));
        let health = if u.failing == 0 {
            "ok".to_owned()
        } else {
            format!("{} timeouts in a row", u.failing)
        };
        let _ = writeln!(
            out,
            "  {}: sent {}, answered {}, timeouts {}, last rtt {rtt}, {health}",
            u.address, u.sent, u.answered, u.timeouts
        );
    }
    let st = &s.stats;
    let hit_rate = if st.queries > 0 {
        100.0 * st.cache_hits as f64 / st.queries as f64
    } else {
        0.0
    };
    let _ = writeln!(
        out,
        "cache: {} answers, hit rate {hit_rate:.1}% ({} of {} queries)",
        s.cache_entries, st.cache_hits, st.queries
    );
    let _ = writeln!(
        out,
        "queries {}, zone answers {}, forwarded {}, tcp retries {}, timeouts {}, servfail {}, malformed {}, unexpected answers {}, https/svcb refused {}, pending {}, tcp clients {}",
        st.queries, st.zone_answers, st.forwarded, st.tcp_retries, st.timeouts, st.servfail, st.malformed, st.unexpected_answers, st.svcb_refused, s.pending, s.tcp_clients
    );
    if !s.accelerate.is_empty() {
        let _ = writeln!(
            out,
            "accelerate ({} routes into {}): {}",
            s.routes.len(),
            s.tunnel.as_deref().unwrap_or("-"),
            s.accelerate.join(", ")
        );
    }
    out
}

/// `show dns routes`: the addresses routed from answers.
fn show_dns_routes(state: Option<&DnsState>, json: bool) -> String {
    let Some(s) = state else {
        return if json {
            "[]\n".into()
        } else {
            "no [dns] configured\n".into()
        };
    };
    if json {
        return format!("{}\n", serde_json::to_string(&s.routes).unwrap_or_default());
    }
    let mut out = format!("{:<40} {:<40} {:>10}\n", "name", "address", "expires (s)");
    for r in &s.routes {
        let _ = writeln!(out, "{:<40} {:<40} {:>10}", r.name, r.address, r.expires_in);
    }
    out
}

/// `show ike`: the hubs this device registers with, and the registrations
/// refused here.
fn show_ike(state: &IkeState, json: bool) -> String {
    if json {
        return format!("{}\n", serde_json::to_string(state).unwrap_or_default());
    }
    let mut out = String::new();
    for h in &state.hubs {
        let _ = write!(out, "hub {}: {} (remote {})", h.name, h.state, h.remote);
        if let Some((spi_in, spi_out)) = h.spis {
            let _ = write!(out, "  spi in {spi_in} out {spi_out}");
        }
        if let Some(e) = &h.last_error {
            let _ = write!(out, "  last failure: {e}");
        }
        out.push('\n');
        if !h.learned.is_empty() {
            let _ = writeln!(out, "  learned: {}", h.learned.join(", "));
        }
        if let Some(r) = &h.claims_refused {
            let _ = writeln!(out, "  claims: {r}");
        }
    }
    if !state.sas.is_empty() {
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<16} {:<13} {:<5} {:>6} {:>9}  child SAs (in/out, rekey in s)",
            "ike spi", "peer", "identity", "state", "nat-t", "group", "rekey (s)"
        );
        for sa in &state.sas {
            let children: Vec<String> = sa
                .children
                .iter()
                .map(|(i, o, t)| format!("{i}/{o} {}", t.map_or("-".into(), |t| t.to_string())))
                .collect();
            let _ = writeln!(
                out,
                "{:<16} {:<22} {:<16} {:<13} {:<5} {:>6} {:>9}  {}",
                sa.spi,
                sa.peer,
                sa.identity.as_deref().unwrap_or("-"),
                sa.state,
                if sa.nat_t { "yes" } else { "no" },
                sa.group,
                sa.rekey_in.map_or("-".into(), |t| t.to_string()),
                children.join(", ")
            );
        }
    }
    let registered = state.devices.iter().filter(|d| d.registered).count();
    if !state.devices.is_empty() {
        let _ = writeln!(
            out,
            "devices: {registered} of {} registered",
            state.devices.len()
        );
    }
    if !state.refused.is_empty() {
        let reasons: Vec<String> = state
            .refused
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "refused: {}", reasons.join(", "));
    }
    if !out.is_empty() {
        let c = &state.counters;
        let _ = writeln!(
            out,
            "ike sas {}, established {}, child rekeys {}, ike rekeys {}, lifetime rekeys {}, liveness checks {}, dead peers {}, rate limited {} ({} sources)",
            state.ike_sas,
            c.established,
            c.child_rekeys,
            c.ike_rekeys,
            c.lifetime_rekeys,
            c.liveness_checks,
            c.dead_peers,
            c.rate_limited,
            state.limited_sources
        );
    }
    if out.is_empty() {
        out.push_str("no [ike] configured\n");
    }
    out
}

/// `show sites`: the hub's sites, the prefixes each holds, what was
/// refused and why.
fn show_sites(state: &IkeState, json: bool) -> String {
    if json {
        return format!(
            "{}\n",
            serde_json::to_string(&state.sites).unwrap_or_default()
        );
    }
    let mut out = format!(
        "{:<16} {:<20} {:<40} {:>11}\n",
        "site", "devices", "prefixes", "changed (s)"
    );
    for s in &state.sites {
        let _ = writeln!(
            out,
            "{:<16} {:<20} {:<40} {:>11}",
            s.site,
            if s.devices.is_empty() {
                "-".into()
            } else {
                s.devices.join(",")
            },
            if s.prefixes.is_empty() {
                "-".into()
            } else {
                s.prefixes.join(",")
            },
            s.changed_seconds_ago.map_or("-".into(), |t| t.to_string())
        );
        for r in &s.refused {
            let _ = writeln!(out, "  refused: {r}");
        }
    }
    out
}

/// `show devices`: the hub's registry, who is registered and refusals.
fn show_devices(state: &IkeState, json: bool) -> String {
    if json {
        return format!(
            "{}\n",
            serde_json::to_string(&state.devices).unwrap_or_default()
        );
    }
    let mut out = format!(
        "{:<16} {:<16} {:<11} {:<22} {:>10} {:>8}\n",
        "serial", "site", "state", "from", "since (s)", "refused"
    );
    for d in &state.devices {
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:<11} {:<22} {:>10} {:>8}",
            d.serial,
            d.site,
            if d.registered { "registered" } else { "-" },
            d.remote.as_deref().unwrap_or("-"),
            d.registered_seconds_ago
                .map_or("-".into(), |s| s.to_string()),
            d.refused
        );
    }
    out
}

/// Runs one command against the engine and returns the answer.
pub fn execute(engine: &Engine, events: &EventLog, views: &Views, command: &str) -> String {
    let ike = &views.ike;
    let mut words: Vec<&str> = command.split_whitespace().collect();
    let json = if let Some(i) = words.iter().position(|w| *w == "--json") {
        words.remove(i);
        true
    } else {
        false
    };
    match words.as_slice() {
        ["show", "interfaces"] => show_interfaces(engine, json),
        ["show", "routes"] => show_routes(engine, &ike.get(), views.dns.get().as_ref(), json),
        ["show", "dns"] => show_dns(views.dns.get().as_ref(), json),
        ["show", "dns", "routes"] => show_dns_routes(views.dns.get().as_ref(), json),
        ["show", "sites"] => show_sites(&ike.get(), json),
        ["show", "counters"] => show_counters(engine, json),
        ["show", "drops"] => show_drops(engine, json),
        ["show", "workers"] => show_workers(engine, json),
        ["show", "nat", "sessions"] => show_nat_sessions(engine, json),
        ["show", "nat", "rules"] => show_nat_rules(engine, json),
        ["show", "nat"] => show_nat(engine, json),
        ["show", "sa"] | ["sa", "list"] => show_sa(engine, json),
        ["show", "neighbours"] | ["show", "neighbors"] => show_neighbours(engine, json),
        ["show", "events"] => show_events(events, json),
        ["show", "ike"] => show_ike(&ike.get(), json),
        ["show", "devices"] => show_devices(&ike.get(), json),
        ["show", "proxy"] => crate::proxy::show(json),
        ["show", "lb"] => crate::lb::show(engine, json),
        ["lb", "drain", rest @ ..] => changed(crate::lb::drain(engine, true, rest)),
        ["lb", "undrain", rest @ ..] => changed(crate::lb::drain(engine, false, rest)),
        ["route", "add", prefix, rest @ ..] => {
            changed(parse_route(prefix, rest).and_then(|r| engine.add_route(r).map_err(|e| e.to_string())))
        }
        ["route", "del", prefix] => changed(engine.delete_route(prefix).map_err(|e| e.to_string())),
        ["nat", "add", rest @ ..] => {
            changed(parse_nat_rule(rest).and_then(|r| engine.add_nat_rule(r).map_err(|e| e.to_string())))
        }
        ["nat", "del", name] => changed(engine.delete_nat_rule(name).map_err(|e| e.to_string())),
        ["sa", step, tunnel, rest @ ..] => match parse_rekey_step(step, rest) {
            Ok(step) => changed(engine.rekey(tunnel, step).map_err(|e| e.to_string())),
            Err(e) => format!("error: {e}\n"),
        },
        ["reload"] => match Config::load(engine.path()).map_err(|e| e.to_string()).and_then(|c| {
            crate::ike::check_reload(&engine.config(), &c, engine.path()).map_err(|e| format!("{}: {e:#}", engine.path()))?;
            crate::proxy::check_reload(&engine.config(), &c).map_err(|e| format!("{}: {e}", engine.path()))?;
            crate::dns::check(&c).map_err(|e| format!("{}: {e:#}", engine.path()))?;
            engine.apply(c).map_err(|e| e.to_string())
        }) {
            Ok(generation) => {
                ike.config_reloaded();
                format!("reloaded: tables generation {generation}\n")
            }
            Err(e) => format!("error: {e} (running configuration kept)\n"),
        },
        // Only the first two words are echoed: an `sa` command carries a key.
        _ => format!(
            "error: unknown command {:?}; try: show interfaces|routes|counters|drops|workers|sa|events|nat|nat rules|nat sessions|dns|dns routes|proxy|lb [--json], \
             lb drain|undrain [SERVICE] BACKEND, route add|del, nat add|del, sa list|install-inbound|switch-outbound|retire-inbound, reload\n",
            words.iter().take(2).copied().collect::<Vec<_>>().join(" ")
        ),
    }
}

/// The answer to a change: the new tables' generation, or why nothing
/// changed.
fn changed(result: Result<u64, String>) -> String {
    match result {
        Ok(generation) => format!("ok: tables generation {generation}\n"),
        Err(e) => format!("error: {e} (running configuration kept)\n"),
    }
}

/// `PREFIX via GW[,GW..] [dev IF]`, `PREFIX dev IF`, `PREFIX blackhole`,
/// `PREFIX unreachable`.
pub fn parse_route(prefix: &str, rest: &[&str]) -> Result<RouteConfig, String> {
    let mut route = RouteConfig {
        prefix: prefix.to_owned(),
        via: Vec::new(),
        dev: None,
        kind: None,
        spans: Default::default(),
    };
    let mut words = rest.iter();
    while let Some(word) = words.next() {
        let mut value = || {
            words
                .next()
                .copied()
                .ok_or_else(|| format!("route {prefix}: {word} needs a value"))
        };
        match *word {
            "via" => route.via.extend(
                value()?
                    .split(',')
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned),
            ),
            "dev" => route.dev = Some(value()?.to_owned()),
            "blackhole" | "unreachable" => route.kind = Some((*word).to_owned()),
            other => {
                return Err(format!(
                    "route {prefix}: {other:?} is not via, dev, blackhole or unreachable"
                ))
            }
        }
    }
    Ok(route)
}

/// `key=value` words into a TOML table; `lists` name the fields that take
/// comma-separated lists, `integers` and `booleans` the typed ones.
fn key_values(
    words: &[&str],
    lists: &[&str],
    integers: &[&str],
    booleans: &[&str],
) -> Result<toml::Table, String> {
    let mut table = toml::Table::new();
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not key=value"))?;
        let v = if lists.contains(&key) {
            toml::Value::Array(
                value
                    .split(',')
                    .filter(|x| !x.is_empty())
                    .map(|x| toml::Value::String(x.to_owned()))
                    .collect(),
            )
        } else if integers.contains(&key) {
            toml::Value::Integer(
                value
                    .parse()
                    .map_err(|_| format!("{key}: {value:?} is not a number"))?,
            )
        } else if booleans.contains(&key) {
            toml::Value::Boolean(
                value
                    .parse()
                    .map_err(|_| format!("{key}: {value:?} is not true or false"))?,
            )
        } else {
            toml::Value::String(value.to_owned())
        };
        if table.insert(key.to_owned(), v).is_some() {
            return Err(format!("{key} given twice"));
        }
    }
    Ok(table)
}

/// `name=N kind=K field=value ...`: the fields of a `[[nat]]` rule, lists
/// (`addresses`, `backends`) comma-separated.
pub fn parse_nat_rule(words: &[&str]) -> Result<NatRuleConfig, String> {
    let table = key_values(words, &["addresses", "backends"], &[], &[])?;
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| format!("nat rule: {}", e.message()))
}

/// `install-inbound spi=N cipher=C key=HEX [esn=B] [replay_window=N]`,
/// `switch-outbound spi=N cipher=C key=HEX [...]`, `retire-inbound SPI`.
pub fn parse_rekey_step(step: &str, words: &[&str]) -> Result<RekeyStep, String> {
    let sa = |words: &[&str]| -> Result<SaEntryConfig, String> {
        let table = key_values(
            words,
            &[],
            &[
                "spi",
                "replay_window",
                "soft_seconds",
                "hard_seconds",
                "soft_bytes",
                "hard_bytes",
            ],
            &["esn"],
        )?;
        // The message names the field, never the key's value.
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| format!("sa {step}: {}", e.message()))
    };
    match (step, words) {
        ("install-inbound", w) => sa(w).map(RekeyStep::InstallInbound),
        ("switch-outbound", w) => sa(w).map(RekeyStep::SwitchOutbound),
        ("retire-inbound", [spi]) => spi
            .parse()
            .map(RekeyStep::RetireInbound)
            .map_err(|_| format!("sa retire-inbound: SPI {spi:?} is not a number")),
        _ => Err(format!(
            "sa {step}: expected install-inbound|switch-outbound TUNNEL spi=N cipher=C key=HEX (straitctl: key=-), \
             or retire-inbound TUNNEL SPI"
        )),
    }
}

fn show_events(events: &EventLog, json: bool) -> String {
    let events = events.recent();
    let direction = |d: SaDirection| match d {
        SaDirection::Outbound => "outbound",
        SaDirection::Inbound => "inbound",
    };
    if json {
        let v: Vec<_> = events
            .iter()
            .map(|(at, e)| {
                let mut o = json!({ "kind": e.kind(), "age": at.elapsed().as_secs_f64() });
                if let Some(sa) = e.sa() {
                    o["tunnel"] = json!(sa.tunnel);
                    o["spi"] = json!(sa.spi);
                    o["direction"] = json!(direction(sa.direction));
                    o["limit"] = json!(sa.limit.name());
                }
                o
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(v));
    }
    let mut s = format!("{:>9}  event\n", "age (s)");
    for (at, e) in &events {
        let _ = writeln!(s, "{:>9.1}  {e}", at.elapsed().as_secs_f64());
    }
    s
}

fn show_neighbours(engine: &Engine, json: bool) -> String {
    let ports = engine.interfaces();
    let port = |i: u16| ports.get(usize::from(i)).map_or("?", |p| p.name.as_str());
    let mut n = engine.neighbours();
    n.sort_by_key(|e| (e.port, e.ip, e.worker));
    let state = |s: NeighbourState| match s {
        NeighbourState::Incomplete => "incomplete",
        NeighbourState::Reachable => "reachable",
        NeighbourState::Stale => "stale",
        NeighbourState::Static => "static",
    };
    if json {
        let v: Vec<_> = n
            .iter()
            .map(|e| {
                json!({ "interface": port(e.port), "ip": e.ip.to_string(), "mac": mac(e.mac),
                        "state": state(e.state), "worker": e.worker })
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(v));
    }
    let mut s = format!(
        "{:<12} {:<40} {:<17} {:<11} {:>6}\n",
        "interface", "address", "mac", "state", "worker"
    );
    for e in &n {
        let _ = writeln!(
            s,
            "{:<12} {:<40} {:<17} {:<11} {:>6}",
            port(e.port),
            e.ip.to_string(),
            mac(e.mac),
            state(e.state),
            e.worker
        );
    }
    s
}

fn show_sa(engine: &Engine, json: bool) -> String {
    let sas = engine.security_associations();
    // Per-SA counters from the workers' status snapshots (≤ 500 ms old).
    let per_sa = engine.sa_counters();
    let counters = |spi: u32, dir: SaDirection| {
        per_sa
            .iter()
            .find(|c| c.spi == spi && c.direction == dir)
            .map_or((0, 0, Vec::new()), |c| {
                (c.packets, c.bytes, c.drops.clone())
            })
    };
    let drops_json = |d: &[(&'static str, u64)]| {
        d.iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect::<serde_json::Map<String, serde_json::Value>>()
    };
    let esp_drops = |c: &PortCounters| {
        DropReason::ALL
            .iter()
            .filter(|r| matches!(r.stage(), Stage::EspIn | Stage::EspOut))
            .map(|r| c.drops[*r as usize])
            .sum::<u64>()
    };
    if json {
        let v: Vec<_> = sas
            .iter()
            .map(|t| {
                let c = t.egress_counters.unwrap_or_default();
                let (p, b, d) = counters(t.outbound.spi, SaDirection::Outbound);
                let outbound = json!({ "spi": t.outbound.spi, "cipher": t.outbound.cipher,
                                       "esn": t.outbound.esn, "sealed_bytes": t.sealed_bytes,
                                       "packets": p, "bytes": b, "drops": drops_json(&d) });
                let inbound: Vec<_> = t
                    .inbound
                    .iter()
                    .map(|s| {
                        let (p, b, d) = counters(s.spi, SaDirection::Inbound);
                        json!({ "spi": s.spi, "cipher": s.cipher, "esn": s.esn,
                                "packets": p, "bytes": b, "drops": drops_json(&d) })
                    })
                    .collect();
                json!({
                    "tunnel": t.tunnel, "local": t.local.to_string(),
                    "peer": match t.peer_port {
                        Some(p) => format!("{}:{p}", t.peer),
                        None => t.peer.to_string(),
                    },
                    "outbound": outbound,
                    "inbound": inbound,
                    "interface": { "esp_sealed": c.esp_sealed, "esp_opened": c.esp_opened,
                                   "esp_drops": esp_drops(&c) },
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(v));
    }
    let mut s = String::new();
    for t in &sas {
        let peer = match t.peer_port {
            Some(p) => format!("{}:{p} (udp)", t.peer),
            None => format!("{} (esp)", t.peer),
        };
        let _ = writeln!(s, "tunnel {}: {} -> {peer}", t.tunnel, t.local);
        let fmt_drops = |d: &[(&'static str, u64)]| {
            d.iter()
                .map(|(k, v)| format!(" {k} {v}"))
                .collect::<String>()
        };
        let (p, b, d) = counters(t.outbound.spi, SaDirection::Outbound);
        let _ = writeln!(
            s,
            "  outbound spi {:<10} {:<18} esn {:<5} packets {p} bytes {b}{}",
            t.outbound.spi,
            t.outbound.cipher,
            t.outbound.esn,
            fmt_drops(&d)
        );
        for sa in &t.inbound {
            let (p, b, d) = counters(sa.spi, SaDirection::Inbound);
            let _ = writeln!(
                s,
                "  inbound  spi {:<10} {:<18} esn {:<5} packets {p} bytes {b}{}",
                sa.spi,
                sa.cipher,
                sa.esn,
                fmt_drops(&d)
            );
        }
        if let Some(c) = &t.egress_counters {
            let _ = writeln!(
                s,
                "  interface: esp sealed {} opened {} dropped {}",
                c.esp_sealed,
                c.esp_opened,
                esp_drops(c)
            );
        }
    }
    s
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn show_interfaces(engine: &Engine, json: bool) -> String {
    let ports = engine.interfaces();
    let addresses = |p: &InterfaceInfo| -> Vec<String> {
        p.addresses
            .iter()
            .map(|(a, l)| format!("{a}/{l}"))
            .collect()
    };
    if json {
        let v: Vec<_> = ports
            .iter()
            .map(|p| {
                json!({
                    "name": p.name, "ifindex": p.ifindex, "mac": mac(p.mac), "mtu": p.mtu,
                    "addresses": addresses(p),
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(v));
    }
    let mut s = format!(
        "{:<12} {:>7} {:<17} {:>5}  addresses\n",
        "interface", "ifindex", "mac", "mtu"
    );
    for p in &ports {
        let _ = writeln!(
            s,
            "{:<12} {:>7} {:<17} {:>5}  {}",
            p.name,
            p.ifindex,
            mac(p.mac),
            p.mtu,
            addresses(p).join(" ")
        );
    }
    s
}

/// Where a route (as `Engine::routes` writes it) comes from: `connected`,
/// `local`, `static` (the file, `route add`, a configured tunnel), `site
/// NAME` (a registered site's claim), `hub NAME` (what a hub announced, or
/// a down hub's blackhole), `dns NAME` (an address answered for an
/// accelerated name).
pub fn route_origin(route: &str, ike: &IkeState, dns: Option<&DnsState>) -> String {
    let prefix = route.split_whitespace().next().unwrap_or_default();
    if let Some(r) = dns.and_then(|d| {
        d.routes.iter().find(|r| {
            prefix.split('/').next() == Some(&r.address.to_string())
                && (prefix.ends_with("/32") || prefix.ends_with("/128"))
        })
    }) {
        return format!("dns {}", r.name);
    }
    if let Some(tunnel) = route.split(" tunnel ").nth(1) {
        let tunnel = tunnel.split_whitespace().next().unwrap_or_default();
        if let Some(site) = tunnel.strip_prefix("site-") {
            if ike.sites.iter().any(|s| s.site == site) {
                return format!("site {site}");
            }
        }
        if ike.hubs.iter().any(|h| h.name == tunnel) {
            return format!("hub {tunnel}");
        }
        return "static".into();
    }
    if route.ends_with(" blackhole") {
        if let Some(h) = ike
            .hubs
            .iter()
            .find(|h| h.state != "up" && h.learned.iter().chain(&h.prefixes).any(|p| p == prefix))
        {
            return format!("hub {} (down)", h.name);
        }
    }
    if route.contains(" local") {
        return "local".into();
    }
    if route.contains(" connected ") {
        return "connected".into();
    }
    "static".into()
}

fn show_routes(engine: &Engine, ike: &IkeState, dns: Option<&DnsState>, json: bool) -> String {
    let named: Vec<String> = engine
        .routes()
        .into_iter()
        .map(|r| {
            let origin = route_origin(&r, ike, dns);
            format!("{r}  ({origin})")
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
    let mut s = format!(
        "{:<12} {:<10} {:<26} {:>12}\n",
        "interface", "stage", "reason", "packets"
    );
    for (n, c) in &counters {
        for r in DropReason::ALL {
            let v = c.drops[r as usize];
            if v > 0 {
                let _ = writeln!(
                    s,
                    "{:<12} {:<10} {:<26} {:>12}",
                    n,
                    r.stage().name(),
                    r.name(),
                    v
                );
            }
        }
    }
    s
}

fn show_workers(engine: &Engine, json: bool) -> String {
    let per = engine.worker_counters();
    let pools = engine.worker_pools();
    let pool = |i: usize| pools.get(i).copied().unwrap_or_default();
    if json {
        let v: Vec<_> = per
            .iter()
            .enumerate()
            .map(|(i, ports)| {
                json!({
                    "worker": i,
                    "rx_packets": ports.iter().map(|c| c.rx_packets).sum::<u64>(),
                    "rx_bytes": ports.iter().map(|c| c.rx_bytes).sum::<u64>(),
                    "tx_packets": ports.iter().map(|c| c.tx_packets).sum::<u64>(),
                    "tx_bytes": ports.iter().map(|c| c.tx_bytes).sum::<u64>(),
                    "dropped": ports.iter().map(|c| c.total_drops()).sum::<u64>(),
                    "umem_frames": pool(i).frames,
                    "umem_free": pool(i).free,
                })
            })
            .collect();
        return format!("{}\n", serde_json::Value::Array(v));
    }
    let mut s = format!(
        "{:<8} {:>12} {:>12} {:>10} {:>15}\n",
        "worker", "rx packets", "tx packets", "dropped", "frames free"
    );
    for (i, ports) in per.iter().enumerate() {
        let _ = writeln!(
            s,
            "{:<8} {:>12} {:>12} {:>10} {:>15}",
            i,
            ports.iter().map(|c| c.rx_packets).sum::<u64>(),
            ports.iter().map(|c| c.tx_packets).sum::<u64>(),
            ports.iter().map(|c| c.total_drops()).sum::<u64>(),
            format!("{}/{}", pool(i).free, pool(i).frames),
        );
    }
    for line in engine.bind_reports() {
        let _ = writeln!(s, "{line}");
    }
    s
}

fn show_nat_rules(engine: &Engine, json: bool) -> String {
    let rules = engine.nat_rules();
    let snaps = engine.nat_snapshots();
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
        let v: Vec<_> = rules
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
    for r in &rules {
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
    let rules = engine.nat_rules();
    let snaps = engine.nat_snapshots();
    let rule = |id| {
        rules
            .iter()
            .find(|r| r.id == id)
            .map_or("(removed)", |r| r.name.as_str())
            .to_owned()
    };
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
                        NatDirection::Outbound => "inside",
                        NatDirection::Inbound => "outside",
                    },
                    "state": session_state(x),
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
                session_state(x),
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
    let snaps = engine.nat_snapshots();
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
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    // The command may carry a key: its copy here is wiped when dropped.
    let mut line = Zeroizing::new(Vec::with_capacity(command.len() + 1));
    line.extend_from_slice(command.as_bytes());
    line.push(b'\n');
    let sent = stream.write_all(&line);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // A daemon that refuses the client (too many clients, a request too
    // long) may close before reading all of it; its answer still arrives.
    let mut answer = String::new();
    let read = io::Read::read_to_string(&mut stream, &mut answer);
    match (sent, read) {
        (_, Ok(_)) if !answer.is_empty() => Ok(answer),
        (_, Err(e)) if !answer.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
            Ok(answer)
        }
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(_)) => Ok(answer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_verbs_parse_into_config_items() {
        let r = parse_route("10.9.0.0/16", &["via", "10.2.0.2,10.2.0.3"]).unwrap();
        assert_eq!(r.via, ["10.2.0.2", "10.2.0.3"]);
        assert_eq!((r.dev, r.kind), (None, None));
        let r = parse_route("10.9.0.0/16", &["dev", "right"]).unwrap();
        assert_eq!(r.dev.as_deref(), Some("right"));
        let r = parse_route("10.9.0.0/16", &["blackhole"]).unwrap();
        assert_eq!(r.kind.as_deref(), Some("blackhole"));
        let e = parse_route("10.9.0.0/16", &["via"]).unwrap_err();
        assert!(e.contains("via needs a value"), "{e}");
        let e = parse_route("10.9.0.0/16", &["through", "x"]).unwrap_err();
        assert!(e.contains("\"through\""), "{e}");
    }

    #[test]
    fn nat_rules_parse_from_key_values() {
        let r = parse_nat_rule(&[
            "name=out",
            "kind=snat",
            "source=10.1.0.0/24",
            "addresses=192.0.2.9,192.0.2.10",
        ])
        .unwrap();
        assert_eq!(r.kind, NatKindConfig::Snat);
        assert_eq!(r.addresses, ["192.0.2.9", "192.0.2.10"]);
        let e = parse_nat_rule(&["name=x", "kind=teleport"]).unwrap_err();
        assert!(e.starts_with("nat rule:") && e.contains("teleport"), "{e}");
        let e = parse_nat_rule(&["name=x", "kind=snat", "colour=red"]).unwrap_err();
        assert!(e.contains("colour"), "{e}");
        assert!(parse_nat_rule(&["name"]).unwrap_err().contains("key=value"));
    }

    #[test]
    fn rekey_steps_parse_and_never_echo_the_key() {
        let key = "00112233445566778899aabbccddeeff01020304";
        let kv = format!("key={key}");
        let step =
            parse_rekey_step("install-inbound", &["spi=4097", "cipher=aes128-gcm", &kv]).unwrap();
        let RekeyStep::InstallInbound(sa) = step else {
            panic!("{step:?}")
        };
        assert_eq!(
            (sa.spi, sa.cipher.as_str(), sa.key.0.as_str()),
            (4097, "aes128-gcm", key)
        );
        assert!(!format!("{sa:?}").contains(key));
        assert_eq!(
            parse_rekey_step("retire-inbound", &["4096"]).unwrap(),
            RekeyStep::RetireInbound(4096)
        );
        for words in [
            vec!["spi=x", kv.as_str()],
            vec!["cipher=aes128-gcm", kv.as_str()],
            vec!["spi=5000", "cipher=aes128-gcm", kv.as_str(), "bogus=1"],
        ] {
            let e = parse_rekey_step("switch-outbound", &words).unwrap_err();
            assert!(!e.contains(key), "{e}");
        }
        assert!(parse_rekey_step("rotate", &[]).is_err());
    }
}
