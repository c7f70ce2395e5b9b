//! End-to-end split DNS: a branch's `straitd` answers `dig` from its LAN
//! out of a private zone, forwards other names to two real resolvers
//! (dnsmasq, each in its own namespace: the default upstream and the one
//! for `corp.example`), caches, falls back to TCP on a truncated answer,
//! and routes the addresses answered for accelerated names into its tunnel
//! to the hub, so a SaaS server sees those connections come from the hub
//! and the others straight from the branch; routes expire with their TTL.
//!
//! Topology: scripts/topologies/dns.topo. Needs root (namespaces, veth,
//! XDP), dig (bind9-dnsutils), dnsmasq, curl, python3.

use std::path::PathBuf;
use std::time::Duration;

use strait_testbed::{require_program, require_root, Netns, Testbed};

mod common;
use common::{Daemon, Process};

const SECRET: &str = "hub secret for the DNS tests";

const HUB: &str = r#"
[engine]
workers = 1

[[interface]]
name = "wan"
addresses = ["203.0.113.1/24"]

[[route]]
prefix = "0.0.0.0/0"
via = ["203.0.113.254"]

[ike]
identity = "hub.example"
device_secret_file = "hub.secret"

[[ike.device]]
serial = "vcpe-1"
site = "s1"
prefixes = ["10.1.0.0/16"]
local = "203.0.113.1"

# What the branch sends through the tunnel leaves by the hub's address.
[[nat]]
name = "egress"
kind = "masquerade"
source = "10.1.0.0/16"
out_interface = "wan"
"#;

/// The branch; `extra` is appended inside `[dns]`'s zones.
fn branch(extra_zone: &str) -> String {
    format!(
        r#"
[engine]
workers = 1

[[interface]]
name = "lan"
addresses = ["10.1.0.1/24"]

[[interface]]
name = "wan"
addresses = ["100.64.1.2/24"]

[[route]]
prefix = "0.0.0.0/0"
via = ["100.64.1.1"]

[ike]
identity = "vcpe-1"
key_file = "vcpe-1.key"

[[ike.peer]]
name = "hub"
local = "100.64.1.2"
remote = "203.0.113.1"
remote_identity = "hub.example"
local_prefixes = ["10.1.0.0/16"]

[[nat]]
name = "local-breakout"
kind = "masquerade"
source = "10.1.0.0/16"
out_interface = "wan"

[dns]
listen = ["10.1.0.1"]
upstreams = ["198.18.1.53"]
accelerate = ["*.saas.example", "*.teams.example"]
tunnel = "hub"
route_ttl = [2, 3600]
timeout_ms = 800

[[dns.forward]]
suffix = "corp.example"
upstreams = ["198.18.2.53:53"]

[[dns.zone]]
name = "teams.example"
negative_ttl = 30
records = [
  "*.teams.example 1 A 198.51.100.9",
  "teams.example 300 TXT \"the teams apex\"",
]
{extra_zone}
"#
    )
}

/// Answers every GET with the address it came from.
const WHO: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#;

fn dnsmasq(ns: &Netns, listen: &str, records: &[String]) -> Process {
    let mut argv: Vec<String> = [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--user=root",
        "--pid-file",
        "--local-ttl=60",
        "--neg-ttl=60",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    argv.push(format!("--listen-address={listen}"));
    argv.extend(records.iter().cloned());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    Process::start(ns, "dnsmasq", &argv)
}

struct Bed {
    _tb: Testbed,
    ns: std::collections::BTreeMap<String, Netns>,
    _dir: PathBuf,
    hub: Daemon,
    branch: Daemon,
    _servers: Vec<Process>,
}

fn bed(tag: &str) -> Bed {
    require_root();
    require_program("dig", "bind9-dnsutils");
    require_program("dnsmasq", "dnsmasq-base");
    require_program("curl", "curl");
    require_program("python3", "python3");
    let (tb, ns, dir) = common::topology_bed("dns.topo", tag);
    std::fs::write(dir.join("hub.secret"), SECRET).unwrap();
    let key = strait_ike::crypto::device_key(SECRET.as_bytes(), "vcpe-1");
    std::fs::write(dir.join("vcpe-1.key"), key).unwrap();

    // The default upstream: the SaaS names, a name that does not exist,
    // and one whose answer (eight 250-byte TXT strings) outgrows UDP.
    let big = "x".repeat(250);
    let mut public = vec![
        "--local=/example/".to_owned(),
        "--address=/app.saas.example/198.51.100.7".to_owned(),
        "--address=/news.example/198.51.100.8".to_owned(),
    ];
    for i in 0..8 {
        public.push(format!("--txt-record=big.example,{i}{big}"));
    }
    let servers = vec![
        dnsmasq(&ns["dns1"], "198.18.1.53", &public),
        dnsmasq(
            &ns["dns2"],
            "198.18.2.53",
            &["--address=/corp.example/10.9.9.9".to_owned()],
        ),
        Process::start(&ns["saas"], "http server", &["python3", "-c", WHO]),
    ];
    let hub = Daemon::start(&ns["hub"], &dir, "hub", HUB);
    let branch = Daemon::start(&ns["branch"], &dir, "branch", &branch(""));
    // The branch's own queries leave by the host path (the TAP of its
    // WAN interface): the kernel needs a route there.
    ns["branch"]
        .route(&["default", "via", "100.64.1.1", "dev", "st-wan"])
        .unwrap();
    common::within("the branch registered", Duration::from_secs(20), || {
        branch.ctl(&["show", "ike"]).contains(": up")
    });
    Bed {
        _tb: tb,
        ns,
        _dir: dir,
        hub,
        branch,
        _servers: servers,
    }
}

/// `dig @10.1.0.1 ARGS` from the LAN: its whole output.
fn dig(lan: &Netns, args: &[&str]) -> String {
    let mut argv = vec!["dig", "@10.1.0.1", "+time=2", "+tries=2"];
    argv.extend(args);
    let out = lan.output(&argv).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The answer section's records' data (`dig +short`).
fn short(lan: &Netns, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["+short"];
    argv.extend(args);
    dig(lan, &argv)
        .lines()
        .map(|l| l.trim().trim_matches('"').to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

fn stats(d: &Daemon) -> serde_json::Value {
    d.json(&["show", "dns"])["stats"].clone()
}

/// The address the SaaS server saw a GET from the LAN come from.
fn seen_from(lan: &Netns, server: &str) -> String {
    let url = format!("http://{server}:8080/");
    lan.run(&["curl", "-sS", "--max-time", "5", &url])
        .unwrap_or_else(|e| format!("curl failed: {e}"))
}

#[test]
fn split_dns_answers_forwards_caches_and_routes_accelerated_names() {
    let bed = bed("dns");
    let lan = &bed.ns["lan"];
    let b = &bed.branch;

    // Private zone: wildcard answers, authoritative; the apex is NODATA.
    let out = dig(lan, &["EU.Teams.Example", "A"]);
    assert!(out.contains("flags: qr aa rd ra"), "{out}");
    assert!(out.contains("198.51.100.9"), "{out}");
    let out = dig(lan, &["teams.example", "A"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("ANSWER: 0"),
        "{out}"
    );
    assert!(out.contains("SOA"), "NODATA carries the zone's SOA: {out}");
    assert_eq!(short(lan, &["teams.example", "TXT"]), ["the teams apex"]);

    // Forwarded: NXDOMAIN passes through; conditional forwarding reaches
    // the second resolver (the first says NXDOMAIN for all of example).
    let out = dig(lan, &["gone.example", "A"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert_eq!(short(lan, &["git.corp.example", "A"]), ["10.9.9.9"]);

    // UDP queries reach the forwarder from the workers' queue, not by the
    // host path: twenty of them punt (almost) nothing to the LAN's TAP.
    let punted = |b: &Daemon| {
        b.json(&["show", "counters"])["lan"]["punted"]
            .as_u64()
            .unwrap()
    };
    let before = punted(b);
    for i in 0..20 {
        let name = format!("q{i}.teams.example");
        assert_eq!(short(lan, &[&name, "A"]), ["198.51.100.9"]);
    }
    let through_tap = punted(b) - before;
    assert!(
        through_tap < 5,
        "{through_tap} frames punted for 20 queries"
    );

    // Cached after the first answer.
    assert_eq!(short(lan, &["app.saas.example", "A"]), ["198.51.100.7"]);
    let before = stats(b);
    assert_eq!(short(lan, &["app.saas.example", "A"]), ["198.51.100.7"]);
    let after = stats(b);
    assert_eq!(
        after["forwarded"], before["forwarded"],
        "answered from the cache"
    );
    assert!(after["cache_hits"].as_u64() > before["cache_hits"].as_u64());

    // Truncated over UDP: we ask again over TCP, and dig, truncated by us
    // in turn, asks us over TCP.
    let txt = short(lan, &["big.example", "TXT"]);
    assert_eq!(txt.len(), 8, "{txt:?}");
    assert!(stats(b)["tcp_retries"].as_u64() >= Some(1));
    assert_eq!(short(lan, &["+tcp", "news.example", "A"]), ["198.51.100.8"]);

    // HTTPS records of accelerated names: NODATA, so the client keeps an
    // SNI the hub can see.
    let out = dig(lan, &["app.saas.example", "HTTPS"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("ANSWER: 0"),
        "{out}"
    );

    // Accelerated names are routed into the tunnel: the server sees those
    // connections from the hub, the others from the branch.
    let routes = b.ctl(&["show", "dns", "routes"]);
    assert!(routes.contains("198.51.100.7"), "{routes}");
    assert!(!routes.contains("198.51.100.8"), "{routes}");
    let fib = b.ctl(&["show", "routes"]);
    assert!(
        fib.contains("198.51.100.7/32") && fib.contains("(dns app.saas.example)"),
        "{fib}"
    );
    assert_eq!(seen_from(lan, "198.51.100.7"), "203.0.113.1");
    assert_eq!(seen_from(lan, "198.51.100.8"), "100.64.1.2");
    let sealed = b.json(&["show", "counters"]);
    let esp: u64 = sealed
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["esp_sealed"].as_u64().unwrap_or(0))
        .sum();
    assert!(esp > 0, "{sealed}");

    // The private zone's 1 s TTL is clamped to 2 s: the route goes; the
    // SaaS name's 60 s one stays.
    short(lan, &["x.teams.example", "A"]);
    assert!(b.ctl(&["show", "dns", "routes"]).contains("198.51.100.9"));
    common::within("the clamped route expired", Duration::from_secs(8), || {
        !b.ctl(&["show", "dns", "routes"]).contains("198.51.100.9")
    });
    assert!(!b.ctl(&["show", "routes"]).contains("198.51.100.9/32"));
    assert!(b.ctl(&["show", "dns", "routes"]).contains("198.51.100.7"));

    // A malformed query gets FORMERR, counted; the forwarder goes on.
    let reply = lan
        .enter(|| {
            let s = std::net::UdpSocket::bind("10.1.0.2:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut junk = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
            junk.extend_from_slice(&[7, b'e', b'x']);
            s.send_to(&junk, "10.1.0.1:53").unwrap();
            let mut buf = [0u8; 512];
            s.recv(&mut buf).map(|n| buf[..n].to_vec())
        })
        .unwrap()
        .expect("a FORMERR answer");
    assert_eq!(&reply[..2], &[0xab, 0xcd]);
    assert_eq!(reply[3] & 0x0f, 1, "RCODE FORMERR");
    assert!(stats(b)["malformed"].as_u64() >= Some(1));

    // A bad [dns] on reload is refused with its line, the running one
    // kept; a good one takes effect (a new zone).
    let bad = branch(
        "[[dns.zone]]\nname = \"lab.example\"\nrecords = [\"x.lab.example 60 A 192.0.2.300\"]\n",
    );
    std::fs::write(&b.config, &bad).unwrap();
    let line = 1 + bad.lines().position(|l| l.contains("192.0.2.300")).unwrap();
    let err = b.try_ctl(&["reload"]).unwrap_err();
    assert!(
        err.contains(&format!("line {line}")) && err.contains("192.0.2.300"),
        "{err}"
    );
    assert_eq!(short(lan, &["git.corp.example", "A"]), ["10.9.9.9"]);
    std::fs::write(
        &b.config,
        branch(
            "[[dns.zone]]\nname = \"lab.example\"\nrecords = [\"x.lab.example 60 A 192.0.2.77\"]\n",
        ),
    )
    .unwrap();
    b.ctl(&["reload"]);
    common::within("the new zone answers", Duration::from_secs(5), || {
        short(lan, &["x.lab.example", "A"]) == ["192.0.2.77"]
    });

    let show = b.ctl(&["show", "dns"]);
    assert!(show.contains("zone teams.example: 2 records"), "{show}");
    assert!(
        show.contains("forward corp.example -> 198.18.2.53:53"),
        "{show}"
    );
    assert!(show.contains("198.18.1.53:53: sent"), "{show}");
    // The hub carried the accelerated flows.
    assert!(bed.hub.ctl(&["show", "sites"]).contains("s1"));
}
