//! End-to-end: `straitd` as the NAT gateway of a private LAN.
//!
//! Topology (scripts/topologies/nat.topo):
//! client 10.0.0.2 — [lan 10.0.0.1] strait [wan 198.51.100.1] — server 198.51.100.2
//!
//! The LAN is masqueraded behind the WAN address; a TCP and a UDP port on
//! the WAN address are forwarded to the client. Everything is checked from
//! the far side: the server must only ever see 198.51.100.1, and the
//! forwarded service must see the server's real address.
//!
//! Needs root (namespaces, veth, XDP) and iputils-ping, iputils-tracepath,
//! ethtool.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use strait_testbed::{require_program, require_root, Netns};

const CONFIG: &str = r#"
[engine]
workers = 1

[[interface]]
name = "lan"
addresses = ["10.0.0.1/24"]

[[interface]]
name = "wan"
addresses = ["198.51.100.1/24"]

[nat_settings]
filtering = "address-dependent"

[[nat]]
name = "lan-out"
kind = "masquerade"
source = "10.0.0.0/24"
out_interface = "wan"
ports = "20000-29999"

[[nat]]
name = "web"
kind = "dnat"
protocol = "tcp"
public = "198.51.100.1:8080"
backends = ["10.0.0.2:8080"]

[[nat]]
name = "dns"
kind = "dnat"
protocol = "udp"
public = "198.51.100.1:5353"
backends = ["10.0.0.2:5353"]
"#;

const WAN: &str = "198.51.100.1";
const SERVER: &str = "198.51.100.2";

mod common;
use common::{fnv, set_int_option, Daemon};

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// `dialer` connects to `target`, which `listener_ns` serves on `listen`;
/// `total` bytes go each way and are checked by hash. Returns the peer
/// address the listening side accepted.
fn tcp_exchange(
    dialer: &Netns,
    listener_ns: &Netns,
    listen: &'static str,
    target: &'static str,
    total: usize,
) -> SocketAddr {
    let srv = listener_ns.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        srv.enter(move || {
            let l = TcpListener::bind(listen).unwrap();
            tx.send(()).unwrap();
            l.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let (mut s, peer) = loop {
                match l.accept() {
                    Ok(x) => break x,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "no connection on {listen}");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => panic!("accept on {listen}: {e}"),
                }
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = vec![0u8; total];
            s.read_exact(&mut got).unwrap();
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            fnv(&mut h, &got);
            // Answer with a different pattern so both directions carry data.
            s.write_all(&pattern(7, total)).unwrap();
            (peer, h)
        })
        .unwrap()
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let sent = pattern(3, total);
    let answer = dialer
        .enter(move || {
            let mut s =
                TcpStream::connect_timeout(&target.parse().unwrap(), Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connect {target}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&pattern(3, total)).unwrap();
            let mut back = vec![0u8; total];
            s.read_exact(&mut back).unwrap();
            back
        })
        .unwrap();
    let (peer, h) = server.join().unwrap();
    let mut want = 0xcbf2_9ce4_8422_2325u64;
    fnv(&mut want, &sent);
    assert_eq!(h, want, "TCP payload to {target} changed");
    assert!(
        answer == pattern(7, total),
        "TCP answer from {target} changed"
    );
    peer
}

/// `count` numbered datagrams from `dialer` to `target`, each echoed by
/// `listener_ns` on `listen`. Returns the sources the listener saw and how
/// many echoes came back intact.
fn udp_echo(
    dialer: &Netns,
    listener_ns: &Netns,
    listen: &'static str,
    target: &'static str,
    count: u32,
) -> (Vec<SocketAddr>, u32) {
    let srv = listener_ns.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        srv.enter(move || {
            let s = UdpSocket::bind(listen).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            tx.send(()).unwrap();
            let mut sources = Vec::new();
            let mut buf = [0u8; 2048];
            for _ in 0..count {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    break;
                };
                if !sources.contains(&from) {
                    sources.push(from);
                }
                s.send_to(&buf[..n], from).unwrap();
            }
            sources
        })
        .unwrap()
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let echoed = dialer
        .enter(move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.connect(target).unwrap();
            let mut ok = 0;
            let mut buf = [0u8; 2048];
            for seq in 0..count {
                let mut msg = pattern(seq, 600);
                msg[..4].copy_from_slice(&seq.to_be_bytes());
                s.send(&msg).unwrap();
                if let Ok(n) = s.recv(&mut buf) {
                    if buf[..n] == msg[..] {
                        ok += 1;
                    }
                }
            }
            ok
        })
        .unwrap();
    (server.join().unwrap(), echoed)
}

#[test]
fn lan_behind_masquerade_with_port_forwards() {
    require_root();
    require_program("ping", "iputils-ping");
    require_program("tracepath", "iputils-tracepath");
    require_program("ethtool", "ethtool");
    let (_tb, ns, dir) = common::topology_bed("nat.topo", "nat");
    let (client, server) = (&ns["client"], &ns["server"]);
    let daemon = Daemon::start(&ns["strait"], &dir, "strait", CONFIG);

    // Ping through (ICMP echo identifiers are mapped like ports).
    let out = client
        .output(&["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", SERVER])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client -> server ping: {text}");

    // TCP out: the server accepts a connection from the WAN address only.
    let peer = tcp_exchange(
        client,
        server,
        "198.51.100.2:5401",
        "198.51.100.2:5401",
        1 << 20,
    );
    assert_eq!(peer.ip().to_string(), WAN, "server saw {peer}");
    assert!((20000..=29999).contains(&peer.port()), "port {peer}");

    // UDP out, echoed back: same.
    let (sources, echoed) = udp_echo(
        client,
        server,
        "198.51.100.2:5402",
        "198.51.100.2:5402",
        200,
    );
    assert_eq!(sources.len(), 1, "one mapping: {sources:?}");
    assert_eq!(sources[0].ip().to_string(), WAN, "server saw {sources:?}");
    assert_eq!(echoed, 200, "UDP echoes lost or changed");

    // Port forwards on the WAN address reach the client, which sees the
    // server's real address.
    let peer = tcp_exchange(
        server,
        client,
        "10.0.0.2:8080",
        "198.51.100.1:8080",
        256 << 10,
    );
    assert_eq!(peer.ip().to_string(), SERVER, "backend saw {peer}");
    let (sources, echoed) = udp_echo(server, client, "10.0.0.2:5353", "198.51.100.1:5353", 50);
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0].ip().to_string(), SERVER);
    assert_eq!(echoed, 50);

    // Strait's own ICMP errors about a port-forwarded packet quote what the
    // sender sent (RFC 5508 REQ-5): a datagram to the UDP forward that
    // expires at Strait comes back as a time-exceeded the sender's kernel
    // matches to its socket (IP_RECVERR reports it as EHOSTUNREACH). One
    // quoting the backend's private address would match no socket.
    let err = server
        .enter(|| {
            let s = UdpSocket::bind("198.51.100.2:0").unwrap();
            s.set_ttl(1).unwrap();
            set_int_option(&s, libc::IPPROTO_IP, libc::IP_RECVERR, 1).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.connect("198.51.100.1:5353").unwrap();
            s.send(b"expires at Strait").unwrap();
            let mut buf = [0u8; 64];
            s.recv(&mut buf).map(|_| ()).unwrap_err()
        })
        .unwrap();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EHOSTUNREACH),
        "the time-exceeded did not match the sender's socket: {err}"
    );

    // tracepath: hop 1 is Strait's LAN address (time-exceeded sent before
    // translation), and the server's port-unreachable finds its way back
    // through the translator (RFC 5508).
    let out = client
        .output(&["tracepath", "-n", "-m", "5", "-p", "33434", SERVER])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("1:") && l.contains("10.0.0.1")),
        "no Strait hop in tracepath:\n{text}"
    );
    assert!(
        text.contains(SERVER) && text.contains("reached"),
        "tracepath did not reach the server:\n{text}"
    );

    // The sessions as operators see them (published every 500 ms).
    std::thread::sleep(Duration::from_millis(700));
    let sessions = daemon.json(&["show", "nat", "sessions"]);
    let list = sessions.as_array().expect("a JSON array");
    let find = |proto: &str, dst: &str| {
        list.iter()
            .find(|s| s["protocol"] == proto && s["original"]["destination"] == dst)
            .unwrap_or_else(|| panic!("no {proto} session to {dst} in {sessions}"))
    };
    let tcp = find("tcp", "198.51.100.2:5401");
    assert_eq!(tcp["rule"], "lan-out");
    assert_eq!(tcp["kind"], "snat");
    assert!(tcp["original"]["source"]
        .as_str()
        .unwrap()
        .starts_with("10.0.0.2:"));
    assert!(tcp["translated"]["source"]
        .as_str()
        .unwrap()
        .starts_with("198.51.100.1:"));
    assert!(tcp["state"].is_string() && tcp["idle"].is_u64() && tcp["age"].is_u64());
    let udp = find("udp", "198.51.100.2:5402");
    assert_eq!(udp["translated"]["destination"], "198.51.100.2:5402");
    let web = find("tcp", "198.51.100.1:8080");
    assert_eq!(web["rule"], "web");
    assert_eq!(web["kind"], "dnat");
    assert_eq!(web["translated"]["destination"], "10.0.0.2:8080");
    assert!(list.iter().any(|s| s["protocol"] == "icmp"), "{sessions}");
    let text = daemon.ctl(&["show", "nat", "sessions"]);
    assert!(
        text.contains("lan-out") && text.contains("sessions ("),
        "{text}"
    );

    let rules = daemon.json(&["show", "nat", "rules"]);
    let names: Vec<&str> = rules
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lan-out", "web", "dns"]);
    assert!(rules[0]["sessions"].as_u64().unwrap() >= 3, "{rules}");

    // Nothing was dropped for a NAT reason on the way.
    let drops = daemon.json(&["show", "drops"]);
    for iface in ["lan", "wan"] {
        for (reason, n) in drops[iface].as_object().unwrap() {
            if reason.starts_with("nat_") {
                assert_eq!(n, 0, "{iface} {reason}: {drops}");
            }
        }
    }
    let summary = daemon.json(&["show", "nat"]);
    let counters = &summary[0]["counters"];
    assert!(
        counters["translated_outbound"].as_u64().unwrap() > 200,
        "{summary}"
    );
    assert!(
        counters["icmp_errors_translated"].as_u64().unwrap() >= 1,
        "{summary}"
    );
}
