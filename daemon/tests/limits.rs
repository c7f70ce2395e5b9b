//! End-to-end: the control socket and the metrics endpoint of a running
//! `straitd` against misbehaving clients — silent ones, slow ones (a byte
//! at a time), oversized requests and more clients than the cap. None of
//! them may delay another client or the daemon's shutdown.
//!
//! Topology (scripts/topologies/forward.topo):
//! h1 10.1.0.2 — [left 10.1.0.1] dp [right 10.2.0.1] — h2 10.2.0.2
//!
//! Needs root (namespaces, veth, XDP) and ethtool.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use strait_daemon::{control, metrics};

mod common;
use common::{ForwardBed, FORWARD_WITH_METRICS as CONFIG};

const METRICS: &str = "127.0.0.1:9464";

/// A TCP connection to the metrics endpoint, from inside dp.
fn metrics_client(bed: &ForwardBed) -> TcpStream {
    bed.dp
        .enter(|| TcpStream::connect(METRICS).unwrap())
        .unwrap()
}

/// `request` to the metrics endpoint; the whole answer (until close).
fn http(bed: &ForwardBed, request: &[u8]) -> String {
    let mut s = metrics_client(bed);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    read_all(&mut s)
}

/// A scrape that must succeed; its body.
fn scrape(bed: &ForwardBed) -> String {
    let text = http(bed, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// Everything until the peer closes, a reset or the read timeout, as text.
fn read_all(s: &mut impl Read) -> String {
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The value of `series` in a metrics page.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

#[test]
fn silent_clients_delay_neither_other_clients_nor_sigterm() {
    let mut bed = ForwardBed::new("lim-silent", CONFIG);
    let d = &bed.daemon;
    // Connected, sending nothing, on both servers.
    let silent_control = UnixStream::connect(&d.sock).unwrap();
    let silent_metrics = metrics_client(&bed);
    // And one that asks for an answer and never reads it.
    let mut unread = metrics_client(&bed);
    unread.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let started = Instant::now();
    let counters = d.ctl(&["show", "counters"]);
    assert!(counters.contains("left"), "{counters}");
    let page = scrape(&bed);
    assert!(page.contains("strait_rx_packets_total"), "{page}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "straitctl and a scrape took {took:?} beside silent clients"
    );
    assert!(
        metric(
            &page,
            "strait_server_clients_accepted_total{server=\"control\"}"
        ) >= 2.0
    );

    // SIGTERM ends the daemon well before the silent clients' 5 s request
    // deadline: the servers close their clients rather than wait.
    let started = Instant::now();
    d.signal(libc::SIGTERM);
    let mut child = bed.daemon.child.take().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("straitd still running 10 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        took < metrics::LIMITS
            .request_timeout
            .min(control::LIMITS.request_timeout),
        "SIGTERM took {took:?} with silent clients connected"
    );
    drop((silent_control, silent_metrics, unread));
}

#[test]
fn oversized_requests_and_too_many_control_clients_are_refused() {
    let bed = ForwardBed::new("lim-ctl", CONFIG);
    let d = &bed.daemon;
    // 64 KiB without a newline: refused after the limit, with the reason.
    let mut s = UnixStream::connect(&d.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(&vec![b'a'; 64 << 10]);
    let _ = s.shutdown(Shutdown::Write);
    let answer = read_all(&mut s);
    assert_eq!(
        answer,
        format!(
            "error: request longer than {} bytes refused\n",
            control::LIMITS.max_request
        )
    );
    // Through straitctl too: an over-long command is an error, not a hang.
    let long = "x".repeat(control::LIMITS.max_request + 10);
    let err = d.try_ctl(&["show", &long]).unwrap_err();
    assert!(err.contains("request longer than 4096 bytes"), "{err}");

    // Twice the cap of silent clients: those past it are told so at once.
    let cap = control::LIMITS.max_clients;
    let clients: Vec<UnixStream> = (0..2 * cap)
        .map(|_| UnixStream::connect(&d.sock).unwrap())
        .collect();
    let mut busy = 0;
    for c in &clients[cap..] {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut c = c;
        let line = read_all(&mut c);
        assert!(line.starts_with("error: busy:"), "{line:?}");
        busy += 1;
    }
    assert_eq!(busy, cap);
    // While the cap is held, straitctl gets the same clear answer.
    let err = d.try_ctl(&["show", "counters"]).unwrap_err();
    assert!(err.contains("error: busy: 16 control clients"), "{err}");
    // Once they go, the daemon answers again (bounded wait).
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(3);
    let counters = loop {
        match d.try_ctl(&["show", "counters"]) {
            Ok(text) => break text,
            Err(e) => assert!(Instant::now() < deadline, "still refused: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(counters.contains("left"), "{counters}");
    let page = scrape(&bed);
    let refused = |reason: &str| {
        metric(
            &page,
            &format!(
                "strait_server_clients_refused_total{{server=\"control\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert!(refused("busy") >= (cap + 1) as f64, "{page}");
    assert!(refused("request_too_long") >= 2.0, "{page}");
}

#[test]
fn the_metrics_endpoint_resists_slow_oversized_and_crowding_clients() {
    let bed = ForwardBed::new("lim-metrics", CONFIG);
    // Slowloris: a valid start, then one header byte every 250 ms. Each
    // byte comes well within any per-read timeout; the 5 s deadline for
    // the whole head still cuts it off.
    let mut slow = metrics_client(&bed);
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    slow.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut closed = false;
    for i in 0..60 {
        if slow.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 1024];
        match slow.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        // Meanwhile a well-behaved scrape is served at once.
        if i == 4 {
            let t = Instant::now();
            scrape(&bed);
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(closed, "a slow client was kept {took:?}");
    assert!(
        took >= metrics::LIMITS.request_timeout - Duration::from_millis(500)
            && took < metrics::LIMITS.request_timeout + Duration::from_secs(3),
        "cut off after {took:?}"
    );
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // A head past the limit: refused with 431, not buffered.
    let mut head = b"GET /metrics HTTP/1.1\r\n".to_vec();
    head.extend(std::iter::repeat_n(b'X', 2 * metrics::LIMITS.max_request));
    let text = http(&bed, &head);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");

    // More silent clients than the cap: the rest get 503 at once.
    let cap = metrics::LIMITS.max_clients;
    let crowd: Vec<TcpStream> = (0..cap + 4).map(|_| metrics_client(&bed)).collect();
    for c in &crowd[cap..] {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut c = c;
        let text = read_all(&mut c);
        assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
    }
    drop(crowd);
    let deadline = Instant::now() + Duration::from_secs(3);
    let page = loop {
        let text = http(&bed, b"GET /metrics HTTP/1.1\r\n\r\n");
        if text.starts_with("HTTP/1.1 200") {
            break text;
        }
        assert!(Instant::now() < deadline, "still refused: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let refused = |reason: &str| {
        metric(
            &page,
            &format!(
                "strait_server_clients_refused_total{{server=\"metrics\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert!(refused("busy") >= 4.0, "{page}");
    assert!(refused("request_timeout") >= 1.0, "{page}");
    assert!(refused("request_too_long") >= 1.0, "{page}");
}
