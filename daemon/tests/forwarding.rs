//! End-to-end: `straitd` forwarding between two host namespaces through
//! real veths and AF_XDP, with ARP resolved by the dataplane itself.
//!
//! Topology (scripts/topologies/forward.topo):
//! h1 10.1.0.2 — [left 10.1.0.1] dp [right 10.2.0.1] — h2 10.2.0.2
//!
//! Needs root (namespaces, veth, XDP) and iputils-ping / ethtool.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use strait_testbed::{require_program, require_root, Netns, Testbed, Topology};

const CONFIG: &str = r#"
[engine]
workers = 1
poll = "adaptive"

[[interface]]
name = "left"
addresses = ["10.1.0.1/24", "fd01::1/64"]

[[interface]]
name = "right"
addresses = ["10.2.0.1/24", "fd02::1/64"]
"#;

mod common;
use common::{assert_exactly_once, fnv, ping, udp_receiver, Daemon, ForwardBed};

fn bed(tag: &str) -> ForwardBed {
    ForwardBed::new(tag, CONFIG)
}

fn topology() -> Topology {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/topologies/forward.topo");
    Topology::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn ping_both_families_and_icmp_errors() {
    let bed = bed("fwd-ping");
    let (ok, out) = ping(&bed.h1, &["-c", "3", "-i", "0.2", "10.2.0.2"]);
    assert!(ok, "{out}");
    assert!(out.contains("ttl=63"), "one hop decremented the TTL: {out}");
    let (ok, out) = ping(&bed.h1, &["-c", "2", "-i", "0.2", "fd02::2"]);
    assert!(ok, "{out}");
    // The dataplane answers for its own addresses.
    let (ok, out) = ping(&bed.h1, &["-c", "1", "10.1.0.1"]);
    assert!(ok, "{out}");
    let (ok, out) = ping(&bed.h2, &["-c", "1", "fd02::1"]);
    assert!(ok, "{out}");
    // TTL expiry and unroutable destinations come back as ICMP errors from
    // the ingress interface's address.
    let (ok, out) = ping(&bed.h1, &["-c", "1", "-t", "1", "10.2.0.2"]);
    assert!(!ok);
    assert!(
        out.contains("From 10.1.0.1") && out.contains("Time to live exceeded"),
        "{out}"
    );
    let (ok, out) = ping(&bed.h1, &["-c", "1", "10.77.0.1"]);
    assert!(!ok);
    assert!(out.contains("Destination Net Unreachable"), "{out}");
    let (_, out) = ping(&bed.h1, &["-c", "1", "-t", "1", "fd02::2"]);
    assert!(out.contains("Time exceeded"), "{out}");
    // ARP was answered by the dataplane: h1 knows the dataplane's MAC.
    let mac = bed.dp.mac("left").unwrap();
    let mac = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let neigh = bed.h1.ip(&["neigh", "show", "10.1.0.1"]).unwrap();
    assert!(neigh.contains(&mac), "{neigh} lacks {mac}");
    // The dataplane's own neighbour cache (published every 500 ms).
    std::thread::sleep(Duration::from_millis(600));
    let neigh = bed.daemon.json(&["show", "neighbours"]);
    let h1_entry = neigh
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ip"] == "10.1.0.2")
        .unwrap_or_else(|| panic!("h1 not in the neighbour cache: {neigh}"));
    assert_eq!(h1_entry["interface"], "left");
    assert_eq!(h1_entry["state"], "reachable");
    assert!(bed.daemon.ctl(&["show", "neighbours"]).contains("10.2.0.2"));
    let drops = bed.drops();
    assert_eq!(drops["left"]["ttl_exceeded"], 2, "{drops}");
    assert_eq!(drops["left"]["no_route"], 1, "{drops}");
    let counters = bed.daemon.json(&["show", "counters"]);
    assert!(
        counters["left"]["forwarded"].as_u64().unwrap() >= 5,
        "{counters}"
    );
    assert!(
        counters["right"]["neighbour_requests"].as_u64().unwrap() >= 1,
        "{counters}"
    );
}

#[test]
fn tcp_and_udp_cross_the_forwarder_intact() {
    let bed = bed("fwd-data");
    // TCP: 8 MiB of patterned data, checksummed at both ends.
    const TOTAL: usize = 8 << 20;
    let h2 = bed.h2.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        h2.enter(move || {
            let l = TcpListener::bind("10.2.0.2:5201").unwrap();
            tx.send(()).unwrap();
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            let mut buf = vec![0u8; 65536];
            let mut n = 0;
            loop {
                let k = s.read(&mut buf).unwrap();
                if k == 0 {
                    break;
                }
                fnv(&mut h, &buf[..k]);
                n += k;
            }
            (n, h)
        })
        .unwrap()
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let sent_hash = bed
        .h1
        .enter(|| {
            let mut s = TcpStream::connect_timeout(
                &"10.2.0.2:5201".parse().unwrap(),
                Duration::from_secs(5),
            )
            .unwrap();
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            let mut chunk = vec![0u8; 65536];
            let mut sent = 0;
            let mut x = 7u32;
            while sent < TOTAL {
                for b in chunk.iter_mut() {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *b = (x >> 24) as u8;
                }
                s.write_all(&chunk).unwrap();
                fnv(&mut h, &chunk);
                sent += chunk.len();
            }
            h
        })
        .unwrap();
    let (received, recv_hash) = server.join().unwrap();
    assert_eq!(received, TOTAL);
    assert_eq!(recv_hash, sent_hash, "payload changed on the way");

    // UDP: numbered datagrams, paced, every one must arrive exactly once.
    const COUNT: u32 = 2000;
    let h2 = bed.h2.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        h2.enter(move || {
            let s = udp_receiver("10.2.0.2:5202", 16 << 20);
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            tx.send(()).unwrap();
            let mut seen = vec![0u32; COUNT as usize];
            let mut buf = [0u8; 2048];
            while let Ok(n) = s.recv(&mut buf) {
                assert_eq!(n, 1000);
                let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
                assert!(
                    buf[4..n].iter().all(|b| *b == (seq as u8)),
                    "payload of {seq} intact"
                );
                seen[seq as usize] += 1;
            }
            seen
        })
        .unwrap()
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    bed.h1
        .enter(|| {
            let s = UdpSocket::bind("10.1.0.2:0").unwrap();
            let to: SocketAddr = "10.2.0.2:5202".parse().unwrap();
            let mut buf = [0u8; 1000];
            for seq in 0..COUNT {
                buf[..4].copy_from_slice(&seq.to_be_bytes());
                buf[4..].fill(seq as u8);
                s.send_to(&buf, to).unwrap();
                if seq % 20 == 19 {
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        })
        .unwrap();
    let seen = server.join().unwrap();
    assert_exactly_once(&seen, "UDP through the forwarder");
}

/// Sends raw Ethernet frames from `ns`'s `eth0`.
fn inject(ns: &Netns, frames: Vec<Vec<u8>>) {
    let ifindex = ns.ifindex("eth0").unwrap();
    ns.enter(move || {
        // SAFETY: plain socket call.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        for f in &frames {
            // SAFETY: sockaddr_ll is plain data; all-zero is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&f[..6]);
            // SAFETY: f and sll are valid for the lengths passed.
            let n = unsafe {
                libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(n, f.len() as isize, "{}", std::io::Error::last_os_error());
        }
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
    })
    .unwrap();
}

fn ipv4_udp(dst_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 36, 0, 1, 0, 0, ttl, 17, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let ck = strait_wire::checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&ck.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x10, 0x00, 0x20, 0x00, 0, 16, 0, 0]);
    f.extend_from_slice(b"strait-e2e");
    f.resize(60, 0);
    f
}

#[test]
fn malformed_frames_are_dropped_and_counted_by_reason() {
    let bed = bed("fwd-bad");
    let dp_mac = bed.dp.mac("left").unwrap();
    let h1_mac = bed.h1.mac("eth0").unwrap();
    let good = ipv4_udp(dp_mac, h1_mac, [10, 1, 0, 2], [10, 2, 0, 2], 64);
    let mut frames = Vec::new();
    let mut bad_ck = good.clone();
    bad_ck[14 + 10] ^= 0x55;
    frames.push(bad_ck);
    let mut ihl = good.clone();
    ihl[14] = 0x43;
    frames.push(ihl);
    let mut version = good.clone();
    version[14] = 0x55;
    frames.push(version);
    let mut too_long = good.clone();
    too_long[14 + 2] = 0x10; // total length 4096 in a 60-byte frame
    frames.push(too_long);
    let mut truncated = good.clone();
    truncated.truncate(14 + 8);
    frames.push(truncated);
    let mut not_ip = good.clone();
    not_ip[12..14].copy_from_slice(&[0x88, 0xb5]);
    frames.push(not_ip);
    frames.push(ipv4_udp(dp_mac, h1_mac, [127, 0, 0, 1], [10, 2, 0, 2], 64));
    frames.push(ipv4_udp(dp_mac, h1_mac, [10, 1, 0, 2], [10, 2, 0, 2], 1));
    inject(&bed.h1, frames);
    let drops = bed.drops();
    let left = &drops["left"];
    for (reason, at_least) in [
        ("bad_checksum", 1),
        ("bad_header_length", 1),
        ("bad_version", 1),
        ("bad_total_length", 1),
        ("truncated", 1),
        ("not_ip", 1),
        ("martian_source", 1),
        ("ttl_exceeded", 1),
    ] {
        assert!(
            left[reason].as_u64().unwrap() >= at_least,
            "{reason} not counted: {drops}"
        );
    }
    // The worker survived all of it.
    let (ok, out) = ping(&bed.h1, &["-c", "1", "10.2.0.2"]);
    assert!(ok, "{out}");
}

/// Frames the kernel drops before the worker sees them (its AF_XDP RX
/// ring full, no free frame on the fill ring) are counted by reason: with
/// the daemon stopped, a burst larger than the rings cannot all be queued.
#[test]
fn frames_lost_while_the_worker_is_stalled_are_counted() {
    let bed = bed("fwd-stall");
    let (ok, out) = ping(&bed.h1, &["-c", "1", "10.2.0.2"]);
    assert!(ok, "{out}");
    let dp_mac = bed.dp.mac("left").unwrap();
    let h1_mac = bed.h1.mac("eth0").unwrap();
    let frame = ipv4_udp(dp_mac, h1_mac, [10, 1, 0, 2], [10, 2, 0, 2], 64);
    // The default RX ring (and the frames behind it) holds 2048; three
    // times that cannot all wait.
    const RING: u64 = 2048;
    const BURST: u64 = 3 * RING;
    let forwarded_before = forwarded(&bed);

    /// Resumes the daemon even when the test fails while it is stopped.
    struct Resume<'a>(&'a Daemon);
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            self.0.signal(libc::SIGCONT);
        }
    }
    bed.daemon.signal(libc::SIGSTOP);
    let resume = Resume(&bed.daemon);
    inject(&bed.h1, vec![frame; BURST as usize]);
    drop(resume);

    // Counters are published every 50 ms; wait for the worker's next ones.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (lost, drops) = loop {
        std::thread::sleep(Duration::from_millis(100));
        let drops = bed.drops();
        let left = &drops["left"];
        let lost = left["rx_ring_full"].as_u64().unwrap() + left["rx_no_frame"].as_u64().unwrap();
        if lost >= BURST - RING || std::time::Instant::now() > deadline {
            break (lost, drops);
        }
    };
    let through = forwarded(&bed) - forwarded_before;
    assert!(
        lost >= BURST - RING,
        "at most {RING} of {BURST} frames fit the rings, {lost} counted lost: {drops}"
    );
    // What was queued went through once the worker ran again, and nothing
    // was counted twice.
    assert!(through >= 1, "nothing forwarded after the stall");
    assert!(
        through + lost <= BURST + 8,
        "{through} forwarded + {lost} lost of {BURST}"
    );
    let (ok, out) = ping(&bed.h1, &["-c", "1", "10.2.0.2"]);
    assert!(ok, "{out}");
}

/// CPU seconds process `pid` has used so far: every thread's time on a
/// CPU from schedstat (nanoseconds, where `/proc/PID/stat` counts 10 ms
/// ticks).
fn cpu_seconds(pid: u32) -> f64 {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    ns as f64 / 1e9
}

#[test]
fn an_idle_daemon_costs_almost_no_cpu_and_wakes_for_the_next_frame() {
    let bed = bed("fwd-idle");
    let (ok, out) = ping(&bed.h1, &["-c", "2", "-i", "0.2", "10.2.0.2"]);
    assert!(ok, "{out}");
    let pid = bed.daemon.child.as_ref().unwrap().id();
    // Adaptive polling: a worker with nothing to do waits in poll(2).
    std::thread::sleep(Duration::from_millis(500));
    let window = Duration::from_secs(4);
    let before = cpu_seconds(pid);
    std::thread::sleep(window);
    let share = (cpu_seconds(pid) - before) / window.as_secs_f64();
    // The goal is 2 % for a release build (about 1 % measured alone,
    // docs/BENCHMARKS.md). This debug build, measured while the file's
    // other tests run beside it, used 2.7-4.2 %; the old sleep loop cost
    // 10-17 % released, so 6 % still tells the two apart.
    assert!(
        share < 0.06,
        "an idle daemon used {:.2} % of a core (2 % released, 6 % here in a debug build beside other tests)",
        share * 100.0
    );
    // The first frame after the idle time wakes the worker, both ways.
    let (ok, out) = ping(&bed.h1, &["-c", "3", "-i", "0.3", "10.2.0.2"]);
    assert!(ok, "{out}");
    assert!(out.contains(" 0% packet loss"), "{out}");
}

fn forwarded(bed: &ForwardBed) -> u64 {
    let c = bed.daemon.json(&["show", "counters"]);
    c["left"]["forwarded"]
        .as_u64()
        .unwrap_or_else(|| panic!("{c}"))
}

/// The forwarding bed without a daemon, its scratch directory, and the
/// forwarding configuration with `realtime_priority = 7`.
fn realtime_bed(
    tag: &str,
) -> (
    Testbed,
    std::collections::BTreeMap<String, Netns>,
    std::path::PathBuf,
    String,
) {
    require_root();
    let mut tb = Testbed::new(tag);
    let ns = topology().build(&mut tb).unwrap();
    let dir = std::env::temp_dir().join(tb.prefix());
    std::fs::create_dir_all(&dir).unwrap();
    let config = CONFIG.replace(
        "poll = \"adaptive\"\n",
        "poll = \"adaptive\"\nrealtime_priority = 7\n",
    );
    assert!(config.contains("realtime_priority = 7"));
    (tb, ns, dir, config)
}

/// `realtime_priority` puts the worker thread under SCHED_FIFO at that
/// priority (as the kernel reports it), and it forwards.
#[test]
fn workers_can_run_under_sched_fifo() {
    require_program("ping", "iputils-ping");
    let (_tb, ns, dir, config) = realtime_bed("fwd-rt");
    let daemon = Daemon::start(&ns["dp"], &dir, "strait", &config);
    let pid = daemon.child.as_ref().unwrap().id();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let worker = tasks
        .flatten()
        .find(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "strait-w0")
        })
        .expect("a thread named strait-w0");
    let stat = std::fs::read_to_string(worker.path().join("stat")).unwrap();
    // Fields after the parenthesised name start at field 3 (state); 40 is
    // rt_priority and 41 policy (proc(5)).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let (rt_priority, policy) = (fields[40 - 3], fields[41 - 3]);
    assert_eq!(
        (rt_priority, policy),
        ("7", "1"),
        "rt_priority 7 and policy SCHED_FIFO (1): {stat}"
    );
    let (ok, out) = ping(&ns["h1"], &["-c", "2", "-i", "0.2", "10.2.0.2"]);
    assert!(ok, "{out}");
}

/// Without the right to use SCHED_FIFO the daemon refuses to start, says
/// why, and leaves nothing attached.
#[test]
fn realtime_priority_without_the_capability_is_refused() {
    require_program("setpriv", "util-linux");
    let (_tb, ns, dir, config) = realtime_bed("fwd-rtno");
    let path = dir.join("rt.toml");
    std::fs::write(&path, config).unwrap();
    let sock = dir.join("rt.sock");
    let out = ns["dp"]
        .output(&[
            "timeout",
            "20",
            "setpriv",
            "--bounding-set=-sys_nice",
            "--inh-caps=-sys_nice",
            env!("CARGO_BIN_EXE_straitd"),
            "--config",
            path.to_str().unwrap(),
            "--control",
            sock.to_str().unwrap(),
        ])
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without CAP_SYS_NICE: {err}");
    assert!(
        err.contains("engine.realtime_priority = 7: SCHED_FIFO refused")
            && err.contains("CAP_SYS_NICE"),
        "{err}"
    );
    for iface in ["left", "right"] {
        let link = ns["dp"].ip(&["link", "show", "dev", iface]).unwrap();
        assert!(!link.contains("xdp"), "{iface} kept a program: {link}");
    }
}

#[test]
fn sigkill_leaves_no_program_attached_and_restart_works() {
    let mut bed = bed("fwd-kill");
    let (ok, out) = ping(&bed.h1, &["-c", "1", "10.2.0.2"]);
    assert!(ok, "{out}");
    assert!(bed.dp.has_xdp("left").unwrap());
    bed.daemon.kill_hard();
    bed.dp
        .wait_until("XDP programs detached", Duration::from_secs(5), |ns| {
            !ns.has_xdp("left").unwrap() && !ns.has_xdp("right").unwrap()
        })
        .unwrap();
    let links = bed.dp.ip(&["-br", "link"]).unwrap();
    assert!(
        !links.contains("st-left"),
        "host-path TAP left behind: {links}"
    );
    bed.daemon.spawn();
    let (ok, out) = ping(&bed.h1, &["-c", "2", "-i", "0.2", "10.2.0.2"]);
    assert!(ok, "after restart: {out}");
}

#[test]
fn traffic_for_the_box_reaches_the_host_stack() {
    let bed = bed("fwd-host");
    // A kernel service in the dataplane's namespace, reached through the
    // host-path TAP (like SSH to the box).
    let dp = bed.dp.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        dp.enter(move || {
            let l = TcpListener::bind("0.0.0.0:2222").unwrap();
            tx.send(()).unwrap();
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"hello from the box\n").unwrap();
        })
        .unwrap()
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let greeting = bed
        .h1
        .enter(|| {
            let mut s = TcpStream::connect_timeout(
                &"10.1.0.1:2222".parse().unwrap(),
                Duration::from_secs(5),
            )
            .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).unwrap();
            buf
        })
        .unwrap();
    server.join().unwrap();
    assert_eq!(greeting, "hello from the box\n");
    let counters = bed.daemon.json(&["show", "counters"]);
    assert!(
        counters["left"]["punted"].as_u64().unwrap() >= 2,
        "{counters}"
    );
}
