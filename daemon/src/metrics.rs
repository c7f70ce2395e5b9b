//! A Prometheus text-format endpoint (exposition format 0.0.4) for the
//! daemon's counters, served on a loopback port by a thread of its own.
//!
//! Each scrape reads the counters the workers already publish every 50 ms
//! and the NAT snapshots; nothing here touches the per-packet path.

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use strait_dataplane::{DropReason, Engine, PortCounters};

use crate::control::Views;
use crate::dns::DnsState;
use crate::ike::IkeState;
use crate::server::{self, Client, Limits, RequestError, ServerStats};

/// What one scrape reports, read from the engine at once.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// Per interface, summed over the workers.
    pub interfaces: Vec<(String, PortCounters)>,
    /// Per worker, summed over the interfaces.
    pub workers: Vec<PortCounters>,
    /// NAT sessions and capacity per worker.
    pub nat: Vec<(usize, usize)>,
    /// Generation of the tables in force.
    pub generation: u64,
    /// Per tunnel: inner bytes sealed with its current outbound SA.
    pub tunnels: Vec<(String, u64)>,
    /// Per management server (control, metrics): clients accepted, and
    /// refused by reason.
    pub servers: Vec<(String, ServerCounts)>,
    /// The key exchange, when `[ike]` is configured.
    pub ike: Option<IkeState>,
    /// The DNS forwarder, when `[dns]` is configured.
    pub dns: Option<DnsState>,
    /// Routes in force by origin (`connected`, `static`, `site`, `hub`,
    /// `local`).
    pub routes: std::collections::BTreeMap<String, u64>,
    /// The SNI/Host proxy's counters, when `[proxy]` is configured.
    pub proxy: Option<crate::proxy::ProxyCounts>,
    /// Load-balanced services and their health checks.
    pub lb: crate::lb::LbMetrics,
}

/// One management server's client counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerCounts {
    /// Clients accepted and served.
    pub accepted: u64,
    /// Refused: the cap on clients was reached.
    pub busy: u64,
    /// Cut off: no complete request in time.
    pub request_timeout: u64,
    /// Refused: the request was too long.
    pub request_too_long: u64,
    /// Cut off: the answer was not taken in time.
    pub answer_timeout: u64,
}

impl ServerCounts {
    /// Reads `stats` now.
    pub fn read(stats: &ServerStats) -> ServerCounts {
        let r = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        ServerCounts {
            accepted: r(&stats.served),
            busy: r(&stats.refused_busy),
            request_timeout: r(&stats.request_timeouts),
            request_too_long: r(&stats.oversized),
            answer_timeout: r(&stats.answer_timeouts),
        }
    }
}

impl MetricsSnapshot {
    /// Reads everything from `engine` and the counters of `servers`.
    pub fn read(
        engine: &Engine,
        servers: &[(&'static str, Arc<ServerStats>)],
        views: &Views,
    ) -> MetricsSnapshot {
        let ike = engine.config().ike.is_some().then(|| views.ike.get());
        let dns = views.dns.get();
        MetricsSnapshot {
            interfaces: engine.counters(),
            workers: engine
                .worker_counters()
                .iter()
                .map(|ports| {
                    let mut sum = PortCounters::default();
                    for p in ports {
                        sum.add(p);
                    }
                    sum
                })
                .collect(),
            nat: engine
                .nat_snapshots()
                .iter()
                .map(|s| (s.session_count, s.capacity))
                .collect(),
            generation: engine.generation(),
            tunnels: engine
                .security_associations()
                .into_iter()
                .map(|t| (t.tunnel, t.sealed_bytes))
                .collect(),
            servers: servers
                .iter()
                .map(|(n, s)| ((*n).to_owned(), ServerCounts::read(s)))
                .collect(),
            routes: {
                let state = ike.clone().unwrap_or_default();
                let mut by = std::collections::BTreeMap::new();
                for r in engine.routes() {
                    let origin = crate::control::route_origin(&r, &state, dns.as_ref());
                    let kind = origin.split_whitespace().next().unwrap_or("static");
                    *by.entry(kind.to_owned()).or_default() += 1;
                }
                by
            },
            ike,
            dns,
            proxy: crate::proxy::counts(),
            lb: crate::lb::LbMetrics::read(engine),
        }
    }
}

/// Reads one counter of an interface.
type CounterField = fn(&PortCounters) -> u64;

/// Label values may hold `\`, `"` and newlines, escaped as the format says.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: HELP and TYPE lines, then its samples.
pub(crate) fn family<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)> + 'a,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// The snapshot in the Prometheus text format.
pub fn render(s: &MetricsSnapshot) -> String {
    let mut out = String::new();
    let per_iface = |f: fn(&PortCounters) -> u64| {
        s.interfaces
            .iter()
            .map(move |(n, c)| (format!("iface=\"{}\"", escape(n)), f(c)))
    };
    let iface_counters: [(&str, &str, CounterField); 10] = [
        ("strait_rx_packets_total", "Frames received.", |c| {
            c.rx_packets
        }),
        ("strait_rx_bytes_total", "Bytes received.", |c| c.rx_bytes),
        ("strait_tx_packets_total", "Frames transmitted.", |c| {
            c.tx_packets
        }),
        ("strait_tx_bytes_total", "Bytes transmitted.", |c| {
            c.tx_bytes
        }),
        (
            "strait_forwarded_packets_total",
            "Frames routed to another interface or tunnel, by ingress interface.",
            |c| c.forwarded,
        ),
        (
            "strait_punted_packets_total",
            "Frames handed to the host stack.",
            |c| c.punted,
        ),
        (
            "strait_icmp_sent_total",
            "ICMP errors and echo replies generated.",
            |c| c.icmp_sent,
        ),
        (
            "strait_neighbour_requests_total",
            "ARP/NDP requests sent.",
            |c| c.neighbour_requests,
        ),
        (
            "strait_esp_sealed_total",
            "ESP packets sealed into a tunnel leaving by the interface.",
            |c| c.esp_sealed,
        ),
        (
            "strait_esp_opened_total",
            "ESP packets opened after arriving on the interface.",
            |c| c.esp_opened,
        ),
    ];
    for (name, help, f) in iface_counters {
        family(&mut out, name, "counter", help, per_iface(f));
    }
    family(
        &mut out,
        "strait_drops_total",
        "counter",
        "Frames dropped, by interface, the data-path stage that dropped them, and reason.",
        s.interfaces.iter().flat_map(|(n, c)| {
            DropReason::ALL.iter().map(move |r| {
                (
                    format!(
                        "iface=\"{}\",stage=\"{}\",reason=\"{}\"",
                        escape(n),
                        r.stage().name(),
                        r.name()
                    ),
                    c.drops[*r as usize],
                )
            })
        }),
    );
    family(
        &mut out,
        "strait_worker_rx_packets_total",
        "counter",
        "Frames received, by worker.",
        s.workers
            .iter()
            .enumerate()
            .map(|(w, c)| (format!("worker=\"{w}\""), c.rx_packets)),
    );
    family(
        &mut out,
        "strait_worker_tx_packets_total",
        "counter",
        "Frames transmitted, by worker.",
        s.workers
            .iter()
            .enumerate()
            .map(|(w, c)| (format!("worker=\"{w}\""), c.tx_packets)),
    );
    family(
        &mut out,
        "strait_nat_sessions",
        "gauge",
        "NAT sessions held, by worker.",
        s.nat
            .iter()
            .enumerate()
            .map(|(w, (n, _))| (format!("worker=\"{w}\""), *n as u64)),
    );
    family(
        &mut out,
        "strait_nat_sessions_capacity",
        "gauge",
        "NAT sessions a worker can hold.",
        s.nat
            .iter()
            .enumerate()
            .map(|(w, (_, c))| (format!("worker=\"{w}\""), *c as u64)),
    );
    family(
        &mut out,
        "strait_esp_outbound_sa_sealed_bytes",
        "gauge",
        "Inner bytes sealed with the tunnel's current outbound SA (restarts at a rekey).",
        s.tunnels
            .iter()
            .map(|(t, b)| (format!("tunnel=\"{}\"", escape(t)), *b)),
    );
    family(
        &mut out,
        "strait_server_clients_accepted_total",
        "counter",
        "Clients of a management server (control socket, metrics endpoint) accepted.",
        s.servers
            .iter()
            .map(|(n, c)| (format!("server=\"{}\"", escape(n)), c.accepted)),
    );
    family(
        &mut out,
        "strait_server_clients_refused_total",
        "counter",
        "Clients of a management server refused or cut off, by reason.",
        s.servers.iter().flat_map(|(n, c)| {
            [
                ("busy", c.busy),
                ("request_timeout", c.request_timeout),
                ("request_too_long", c.request_too_long),
                ("answer_timeout", c.answer_timeout),
            ]
            .map(|(reason, v)| (format!("server=\"{}\",reason=\"{reason}\"", escape(n)), v))
        }),
    );
    family(
        &mut out,
        "strait_tables_generation",
        "gauge",
        "Generation of the route, NAT and SA tables in force.",
        [(String::new(), s.generation)],
    );
    family(
        &mut out,
        "strait_routes",
        "gauge",
        "Routes in force by origin: connected, local, static, site (a registered site's claim), hub (announced by a hub), dns (an address answered for an accelerated name).",
        ["connected", "local", "static", "site", "hub", "dns"]
            .map(|o| (format!("origin=\"{o}\""), s.routes.get(o).copied().unwrap_or(0))),
    );
    if let Some(ike) = &s.ike {
        render_ike(&mut out, ike);
    }
    if let Some(p) = &s.proxy {
        crate::proxy::render_metrics(&mut out, p);
    }
    if let Some(dns) = &s.dns {
        render_dns(&mut out, dns);
    }
    crate::lb::render_metrics(&mut out, &s.lb);
    out
}

/// The DNS forwarder's families (`strait_dns_*`).
fn render_dns(out: &mut String, dns: &DnsState) {
    let one = |v: u64| [(String::new(), v)];
    let st = &dns.stats;
    family(
        out,
        "strait_dns_queries_total",
        "counter",
        "Client queries, by how they were answered (upstream: forwarded, retries included).",
        [
            ("zone", st.zone_answers),
            ("cache", st.cache_hits),
            ("upstream", st.forwarded),
            ("servfail", st.servfail),
            ("malformed", st.malformed),
            ("svcb_refused", st.svcb_refused),
        ]
        .map(|(k, v)| (format!("answer=\"{k}\""), v)),
    );
    family(
        out,
        "strait_dns_upstream_timeouts_total",
        "counter",
        "Upstream queries that timed out, by upstream.",
        dns.upstream_health
            .iter()
            .map(|u| (format!("upstream=\"{}\"", u.address), u.timeouts)),
    );
    family(
        out,
        "strait_dns_tcp_retries_total",
        "counter",
        "Truncated upstream answers asked again over TCP.",
        one(st.tcp_retries),
    );
    family(
        out,
        "strait_dns_unexpected_answers_total",
        "counter",
        "Upstream answers that matched no waiting query (late, duplicate or forged).",
        one(st.unexpected_answers),
    );
    family(
        out,
        "strait_dns_cache_entries",
        "gauge",
        "Answers in the cache.",
        one(dns.cache_entries as u64),
    );
    family(
        out,
        "strait_dns_accelerated_routes",
        "gauge",
        "Addresses routed into the tunnel from answers for accelerated names.",
        one(dns.routes.len() as u64),
    );
}

/// The key exchange's families (`strait_ike_*`).
fn render_ike(out: &mut String, ike: &IkeState) {
    let one = |v: u64| [(String::new(), v)];
    let c = &ike.counters;
    family(
        out,
        "strait_ike_sas",
        "gauge",
        "IKE SAs now, half-open ones included.",
        one(ike.ike_sas as u64),
    );
    family(
        out,
        "strait_ike_devices",
        "gauge",
        "Devices in the hub's registry, by whether they are registered now.",
        [true, false].map(|r| {
            let n = ike.devices.iter().filter(|d| d.registered == r).count();
            (format!("registered=\"{r}\""), n as u64)
        }),
    );
    family(
        out,
        "strait_ike_hubs_up",
        "gauge",
        "Hubs this device is registered with now.",
        one(ike.hubs.iter().filter(|h| h.state == "up").count() as u64),
    );
    family(
        out,
        "strait_ike_established_total",
        "counter",
        "IKE SAs established, both roles.",
        one(c.established),
    );
    family(
        out,
        "strait_ike_rekeys_total",
        "counter",
        "Rekeys completed, by what was rekeyed.",
        [("child", c.child_rekeys), ("ike", c.ike_rekeys)].map(|(k, v)| (format!("sa=\"{k}\""), v)),
    );
    family(
        out,
        "strait_ike_lifetime_rekeys_total",
        "counter",
        "CHILD SA rekeys started because an SA neared its byte or sequence-number limit.",
        one(c.lifetime_rekeys),
    );
    family(
        out,
        "strait_ike_liveness_checks_total",
        "counter",
        "Liveness checks sent (only to peers from which no traffic came).",
        one(c.liveness_checks),
    );
    family(
        out,
        "strait_ike_dead_peers_total",
        "counter",
        "Peers declared dead (a request unanswered through its retransmissions).",
        one(c.dead_peers),
    );
    family(
        out,
        "strait_ike_refusals_total",
        "counter",
        "Registrations refused, by reason.",
        ["wrong key", "unknown serial"].map(|r| {
            let v = ike.refused.get(r).copied().unwrap_or(0);
            (format!("reason=\"{}\"", r.replace(' ', "_")), v)
        }),
    );
    family(
        out,
        "strait_ike_rate_limited_total",
        "counter",
        "New IKE SAs from sources refused too often, dropped unanswered.",
        one(c.rate_limited),
    );
}

/// The endpoint's bounds (docs/CLI.md, "Limits"): Prometheus sends one
/// short request head and reads the answer at once; a scraper, not a
/// crowd, is expected, so the cap is small.
pub const LIMITS: Limits = Limits {
    max_clients: 8,
    max_request: 8192,
    request_timeout: Duration::from_secs(5),
    answer_timeout: Duration::from_secs(10),
};

/// What a client over the cap is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
Content-Length: 17\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many clients\n";

/// Serves `GET /metrics` on `addr` until `stop` is set; the page includes
/// the counters of `servers` (this endpoint's own among them: `stats`).
pub fn serve(
    engine: Arc<Engine>,
    addr: SocketAddr,
    stats: Arc<ServerStats>,
    servers: Vec<(&'static str, Arc<ServerStats>)>,
    views: Views,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    server::serve(
        "strait-metrics",
        listener,
        LIMITS,
        stats,
        stop,
        BUSY,
        move |client: &mut Client<TcpStream>| {
            if let Err(e) = answer(&engine, &servers, &views, client) {
                tracing::debug!(error = %e, "metrics connection");
            }
        },
    )
}

/// One HTTP/1.0-style exchange: read the request head, answer, close.
fn answer(
    engine: &Engine,
    servers: &[(&'static str, Arc<ServerStats>)],
    views: &Views,
    client: &mut Client<TcpStream>,
) -> io::Result<()> {
    let complete =
        |h: &[u8]| h.windows(4).any(|w| w == b"\r\n\r\n") || h.windows(2).any(|w| w == b"\n\n");
    let (status, body) = match client.read_request(complete) {
        Ok(head) => {
            let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some("GET"), Some("/metrics")) => (
                    "200 OK",
                    render(&MetricsSnapshot::read(engine, servers, views)),
                ),
                (Some("GET"), _) => ("404 Not Found", "only /metrics is served\n".to_owned()),
                (None, _) => return Ok(()),
                _ => ("405 Method Not Allowed", "only GET\n".to_owned()),
            }
        }
        Err(RequestError::TooLong) => (
            "431 Request Header Fields Too Large",
            format!("request head longer than {} bytes\n", LIMITS.max_request),
        ),
        Err(RequestError::TimedOut) => (
            "408 Request Timeout",
            format!(
                "no complete request within {} s\n",
                LIMITS.request_timeout.as_secs()
            ),
        ),
        Err(RequestError::Io(e)) => return Err(e),
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    client.write_answer(answer.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_with_help_type_and_labels() {
        let mut lan = PortCounters {
            rx_packets: 10,
            tx_packets: 7,
            forwarded: 6,
            ..PortCounters::default()
        };
        lan.drop(DropReason::ALL[0]);
        lan.drop(DropReason::ALL[0]);
        let s = MetricsSnapshot {
            interfaces: vec![
                ("lan".into(), lan),
                ("w\"an".into(), PortCounters::default()),
            ],
            workers: vec![lan],
            nat: vec![(3, 1024)],
            generation: 5,
            tunnels: vec![("hub".into(), 4096)],
            servers: vec![(
                "control".into(),
                ServerCounts {
                    accepted: 9,
                    busy: 2,
                    ..ServerCounts::default()
                },
            )],
            routes: [("site".to_owned(), 3)].into(),
            ike: Some(IkeState {
                ike_sas: 2,
                refused: [("wrong key".to_owned(), 3)].into(),
                counters: crate::ike::IkeCounters {
                    child_rekeys: 4,
                    ..Default::default()
                },
                ..Default::default()
            }),
            proxy: Some(crate::proxy::ProxyCounts {
                refused_name: 2,
                relayed_tls: 5,
                ..Default::default()
            }),
            dns: None,
            lb: Default::default(),
        };
        let text = render(&s);
        assert!(text.contains("\nstrait_proxy_refusals_total{reason=\"name\"} 2\n"));
        assert!(text.contains("\nstrait_proxy_relayed_total{protocol=\"tls\"} 5\n"));
        assert!(text.contains("\nstrait_ike_sas 2\n"));
        assert!(text.contains("\nstrait_routes{origin=\"site\"} 3\n"));
        assert!(text.contains("\nstrait_routes{origin=\"hub\"} 0\n"));
        assert!(text.contains("\nstrait_ike_refusals_total{reason=\"wrong_key\"} 3\n"));
        assert!(text.contains("\nstrait_ike_refusals_total{reason=\"unknown_serial\"} 0\n"));
        assert!(text.contains("\nstrait_ike_rekeys_total{sa=\"child\"} 4\n"));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&"strait_rx_packets_total{iface=\"lan\"} 10"));
        assert!(lines.contains(&"strait_tx_packets_total{iface=\"lan\"} 7"));
        assert!(lines.contains(&"strait_forwarded_packets_total{iface=\"w\\\"an\"} 0"));
        let drop = format!(
            "strait_drops_total{{iface=\"lan\",stage=\"{}\",reason=\"{}\"}} 2",
            DropReason::ALL[0].stage().name(),
            DropReason::ALL[0].name()
        );
        assert!(lines.contains(&drop.as_str()), "{text}");
        assert!(lines.contains(&"strait_nat_sessions{worker=\"0\"} 3"));
        assert!(lines.contains(&"strait_tables_generation 5"));
        assert!(lines.contains(&"strait_esp_outbound_sa_sealed_bytes{tunnel=\"hub\"} 4096"));
        assert!(lines.contains(&"strait_server_clients_accepted_total{server=\"control\"} 9"));
        assert!(lines.contains(
            &"strait_server_clients_refused_total{server=\"control\",reason=\"busy\"} 2"
        ));
        // Every sample belongs to a family announced just before it.
        let mut current = "";
        for l in &lines {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap();
                assert!(
                    rest.ends_with(" counter") || rest.ends_with(" gauge"),
                    "{l}"
                );
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{l}");
                if current.ends_with("_total") {
                    assert!(text.contains(&format!("# TYPE {current} counter")));
                }
            }
        }
    }
}
