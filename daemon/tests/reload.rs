//! End-to-end: a reload (SIGHUP) carries everything it changes to where it
//! is used — interface addresses into the host path's TAP devices (so the
//! host stack answers for new addresses and stops answering for old ones)
//! and `[icmp]` limits into the workers.
//!
//! Topology (scripts/topologies/forward.topo):
//! h1 10.1.0.2 — [left 10.1.0.1] dp [right 10.2.0.1] — h2 10.2.0.2
//!
//! Needs root (namespaces, veth, XDP), iputils-ping and ethtool.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use strait_testbed::Netns;

mod common;
use common::{ping, ForwardBed};

fn config(left: &[&str], icmp: (u32, u32)) -> String {
    let left: Vec<String> = left.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[engine]
workers = 1

[[interface]]
name = "left"
addresses = [{}]

[[interface]]
name = "right"
addresses = ["10.2.0.1/24"]

[icmp]
errors_per_second = {}
burst = {}
"#,
        left.join(", "),
        icmp.0,
        icmp.1
    )
}

/// The addresses the kernel has on the TAP of `left`.
fn tap_addresses(dp: &Netns) -> String {
    let out = dp
        .output(&["ip", "-br", "addr", "show", "dev", "st-left"])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP connection from h1 to `addr` served by the host stack in `dp`
/// (through the TAP): true when it connects and echoes a byte.
fn host_answers(h1: &Netns, dp: &Netns, addr: &'static str) -> bool {
    use std::io::{Read, Write};
    let (tx, rx) = std::sync::mpsc::channel();
    let server = {
        let dp = dp.clone();
        std::thread::spawn(move || {
            dp.enter(move || {
                let l = TcpListener::bind(addr);
                tx.send(l.is_ok()).unwrap();
                let l = l.ok()?;
                l.set_nonblocking(true).unwrap();
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    if let Ok((mut s, _)) = l.accept() {
                        s.set_nonblocking(false).unwrap();
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).ok()?;
                        s.write_all(&b).ok()?;
                        return Some(());
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                None
            })
            .unwrap()
        })
    };
    if !rx.recv_timeout(Duration::from_secs(5)).unwrap() {
        let _ = server.join();
        return false;
    }
    let connected = h1
        .enter(move || {
            let mut s =
                TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.write_all(b"x").ok()?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).ok()?;
            Some(b == *b"x")
        })
        .unwrap()
        == Some(true);
    let served = server.join().unwrap().is_some();
    connected && served
}

/// Pings from h1 to h2 with TTL 1: how many "Time to live exceeded"
/// answers the dataplane sent.
fn ttl_exceeded_answers(h1: &Netns) -> usize {
    let (_, out) = ping(h1, &["-t", "1", "-c", "6", "-i", "0.01", "10.2.0.2"]);
    out.matches("Time to live exceeded").count()
}

#[test]
fn a_reload_updates_host_path_addresses_and_icmp_limits() {
    let bed = ForwardBed::new("reld", &config(&["10.1.0.1/24"], (100, 20)));
    let (h1, dp, daemon) = (&bed.h1, &bed.dp, &bed.daemon);
    assert!(tap_addresses(dp).contains("10.1.0.1/24"));
    assert!(
        host_answers(h1, dp, "10.1.0.1:7001"),
        "host path before reload"
    );
    assert_eq!(
        ttl_exceeded_answers(h1),
        6,
        "default limits answer every probe"
    );

    // Add an address and throttle ICMP errors hard.
    std::fs::write(
        &daemon.config,
        config(&["10.1.0.1/24", "10.1.0.9/24"], (1, 1)),
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    wait_for("10.1.0.9 on the TAP", || {
        tap_addresses(dp).contains("10.1.0.9/24")
    });
    assert!(
        host_answers(h1, dp, "10.1.0.9:7002"),
        "host path to the new address"
    );
    let answered = ttl_exceeded_answers(h1);
    assert!(
        answered <= 2,
        "{answered} ICMP errors with a 1/s, burst 1 limit"
    );

    // Remove the first address: the host stack stops answering for it.
    std::fs::write(&daemon.config, config(&["10.1.0.9/24"], (100, 20))).unwrap();
    daemon.signal(libc::SIGHUP);
    wait_for("10.1.0.1 gone from the TAP", || {
        !tap_addresses(dp).contains("10.1.0.1/24")
    });
    assert!(tap_addresses(dp).contains("10.1.0.9/24"));
    assert!(host_answers(h1, dp, "10.1.0.9:7003"));
}
