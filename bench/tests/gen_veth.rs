//! The generator against itself over veth pairs in private network
//! namespaces (needs root: CAP_SYS_ADMIN / CAP_NET_ADMIN, CAP_BPF for AF_XDP).

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use strait_bench::gen::*;
use strait_testbed::{require_program, require_root, Netns, Testbed};
use strait_wire::EthernetAddress;

const A_IP: &str = "10.77.0.1";
const B_IP: &str = "10.77.0.2";

/// Two namespaces `a` and `b` joined by a veth pair `eth0`–`eth0`, with
/// addresses, software checksums and static neighbours.
fn pair(tag: &str) -> (Testbed, Netns, Netns) {
    require_root();
    require_program("ethtool", "ethtool");
    let mut tb = Testbed::new(tag);
    let a = tb.netns("a").expect("netns a");
    let b = tb.netns("b").expect("netns b");
    tb.veth((&a, "eth0"), (&b, "eth0")).expect("veth");
    a.addr("eth0", &format!("{A_IP}/24")).unwrap();
    b.addr("eth0", &format!("{B_IP}/24")).unwrap();
    for ns in [&a, &b] {
        ns.disable_tx_offload("eth0").unwrap();
    }
    let mac_b = fmt_mac(b.mac("eth0").unwrap());
    a.ip(&[
        "neigh",
        "replace",
        B_IP,
        "lladdr",
        &mac_b,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])
    .unwrap();
    (tb, a, b)
}

fn fmt_mac(m: [u8; 6]) -> String {
    EthernetAddress(m).to_string()
}

fn spec_between(a: &Netns, dst_mac: [u8; 6]) -> TrafficSpec {
    TrafficSpec::new(
        EthernetAddress(a.mac("eth0").unwrap()),
        EthernetAddress(dst_mac),
        A_IP.parse().unwrap(),
        B_IP.parse().unwrap(),
    )
}

fn open_tx(kind: &str, a: &Netns, spec: &TrafficSpec) -> Box<dyn TxPort> {
    in_netns(a.name(), || {
        Ok(match kind {
            "af_packet" => {
                Box::new(AfPacketTx::open("eth0", spec.batch, false)?) as Box<dyn TxPort>
            }
            "udp" => Box::new(UdpTx::open(spec)?),
            "af_xdp" => Box::new(XdpTx::open("eth0", 1514, strait_xdp::XdpMode::Native)?),
            other => unreachable!("sender {other}"),
        })
    })
    .unwrap_or_else(|e| panic!("opening the {kind} sender: {e}"))
}

fn open_rx(kind: &str, b: &Netns) -> Box<dyn RxPort> {
    in_netns(b.name(), || {
        Ok(match kind {
            "af_packet" => Box::new(AfPacketRx::open("eth0")?) as Box<dyn RxPort>,
            "af_xdp" => Box::new(XdpRx::open("eth0", strait_xdp::XdpMode::Native)?),
            other => unreachable!("receiver {other}"),
        })
    })
    .unwrap_or_else(|e| panic!("opening the {kind} receiver: {e}"))
}

fn assert_clean(report: &Report, count: u64, what: &str) {
    assert_eq!(report.tx.packets, count, "{what}: sent\n{report}");
    assert_eq!(report.rx.unique, count, "{what}: received\n{report}");
    assert_eq!(report.lost, 0, "{what}: lost\n{report}");
    assert_eq!(report.duplicates, 0, "{what}: duplicates\n{report}");
    assert_eq!(report.reordered, 0, "{what}: reordered\n{report}");
    assert_eq!(report.tx.unsent, 0, "{what}: unsent\n{report}");
    let lat = report.latency_ns.as_ref().expect("latency samples");
    assert_eq!(lat.samples, count, "{what}: one latency sample per packet");
    assert!(
        lat.p50 > 0 && lat.p50 <= lat.p99 && lat.p99 <= lat.max,
        "{what}: {lat:?}"
    );
}

#[test]
fn every_sender_delivers_exact_counts_without_loss_at_a_low_rate() {
    for (sender, receiver) in [
        ("af_packet", "af_packet"),
        ("udp", "af_packet"),
        ("af_xdp", "af_packet"),
        ("af_packet", "af_xdp"),
    ] {
        let (_tb, a, b) = pair("gen-self");
        let mut spec = spec_between(&a, b.mac("eth0").unwrap());
        spec.rate = Rate::Pps(20_000.0);
        spec.count = Some(3_000);
        spec.duration = Duration::from_secs(10);
        spec.warmup = Duration::from_millis(100);
        spec.sizes = SizeMix::fixed(128);
        let rx = open_rx(receiver, &b);
        let tx = open_tx(sender, &a, &spec);
        let report = run_trial(&spec, tx, rx, &mut |_| {}).expect("trial");
        let what = format!("{sender} -> {receiver}");
        assert_eq!(report.sender, sender);
        assert_eq!(report.receiver, receiver);
        assert_clean(&report, 3_000, &what);
        assert!(
            report.tx.warmup_packets > 0,
            "{what}: warm-up frames were sent"
        );
        assert_eq!(
            report.rx.warmup_packets, report.tx.warmup_packets,
            "{what}: warm-up frames are counted apart"
        );
        assert!(!report.latency_at_saturation);
    }
}

#[test]
fn ipv6_tcp_syn_icmp_and_imix_many_flows_arrive_intact() {
    let (_tb, a, b) = pair("gen-proto");
    a.addr("eth0", "fd00:77::1/64").unwrap();
    b.addr("eth0", "fd00:77::2/64").unwrap();
    let mac_b = b.mac("eth0").unwrap();
    let cases: [(&str, &str, Protocol, SizeMix); 4] = [
        (A_IP, B_IP, Protocol::TcpSyn, SizeMix::fixed(100)),
        (A_IP, B_IP, Protocol::IcmpEcho, SizeMix::imix()),
        (
            "fd00:77::1",
            "fd00:77::2",
            Protocol::Udp,
            "84:7,594:4,1518:1".parse().unwrap(),
        ),
        (
            "fd00:77::1",
            "fd00:77::2",
            Protocol::IcmpEcho,
            SizeMix::fixed(100),
        ),
    ];
    for (src, dst, protocol, sizes) in cases {
        let mut spec = spec_between(&a, mac_b);
        spec.src_ip = src.parse().unwrap();
        spec.dst_ip = dst.parse().unwrap();
        spec.protocol = protocol;
        spec.sizes = sizes;
        spec.flows = FlowSpec {
            src_addrs: 16,
            src_ports: "1024-1087".parse().unwrap(),
            dst_ports: "5000-5003".parse().unwrap(),
            order: FlowOrder::Random,
        };
        spec.rate = Rate::Pps(20_000.0);
        spec.count = Some(2_400);
        let rx = open_rx("af_packet", &b);
        let tx = open_tx("af_packet", &a, &spec);
        let report = run_trial(&spec, tx, rx, &mut |_| {}).expect("trial");
        assert_clean(&report, 2_400, &format!("{protocol} {src}"));
        assert_eq!(report.flows, 16 * 64 * 4);
    }
}

#[test]
fn pacing_never_exceeds_the_rate() {
    let (_tb, a, b) = pair("gen-pace");
    let mut spec = spec_between(&a, b.mac("eth0").unwrap());
    let rate = 2_000.0;
    spec.rate = Rate::Pps(rate);
    spec.count = Some(1_000);
    spec.duration = Duration::from_secs(20);
    let rx = open_rx("af_packet", &b);
    let tx = open_tx("af_packet", &a, &spec);
    let report = run_trial(&spec, tx, rx, &mut |_| {}).expect("trial");
    assert_clean(&report, 1_000, "paced");
    // Packet k leaves no earlier than k / rate minus the bucket depth
    // (1 ms at this rate), whatever the scheduler does: a lower bound on
    // the elapsed time that cannot flake.
    let min = (1_000.0 - 1.0) / rate - 0.001;
    assert!(
        report.duration_s >= min,
        "999 gaps of 0.5 ms took {} s",
        report.duration_s
    );

    // Duration-bound run: never more than rate × duration + 1 + one bucket.
    let mut spec = spec.clone();
    spec.count = None;
    spec.duration = Duration::from_millis(700);
    let rx = open_rx("af_packet", &b);
    let tx = open_tx("af_packet", &a, &spec);
    let report = run_trial(&spec, tx, rx, &mut |_| {}).expect("trial");
    let ceiling = (rate * 0.7) as u64 + 1 + 2;
    assert!(
        report.tx.packets <= ceiling,
        "{} packets in 0.7 s at 2000 pps",
        report.tx.packets
    );
    assert!(report.tx.packets > 0);
    assert_eq!(report.rx.unique, report.tx.packets);
}

/// What the relay does to the frame with sequence number `seq`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Action {
    Drop,
    Hold,
    Duplicate,
    Forward,
}

fn action(seq: u64) -> Action {
    if seq % 10 == 9 {
        Action::Drop
    } else if seq % 13 == 5 {
        Action::Hold
    } else if seq % 7 == 3 {
        Action::Duplicate
    } else {
        Action::Forward
    }
}

/// The relay's rules applied to `0..n`: a held frame leaves right after
/// the next frame that is forwarded.
fn model(n: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut held = None;
    for seq in 0..n {
        match action(seq) {
            Action::Drop => continue,
            Action::Hold => {
                held = Some(seq);
                continue;
            }
            Action::Duplicate => out.extend([seq, seq]),
            Action::Forward => out.push(seq),
        }
        if let Some(h) = held.take() {
            out.push(h);
        }
    }
    out.extend(held);
    out
}

/// Classification by definition, with a hash set and a running maximum.
fn classify(arrivals: &[u64]) -> (u64, u64, u64) {
    let mut seen = HashSet::new();
    let (mut dups, mut reordered, mut max) = (0, 0, None::<u64>);
    for &s in arrivals {
        if !seen.insert(s) {
            dups += 1;
        } else if max.is_some_and(|m| s < m) {
            reordered += 1;
        }
        max = max.max(Some(s));
    }
    (seen.len() as u64, dups, reordered)
}

/// A tiny AF_PACKET relay: frames in on `m0`, out on `m1` to `dst_mac`,
/// applying [`action`] by probe sequence number. Stops 400 ms after the
/// last frame, or after `limit`.
fn relay(mid: &Netns, dst_mac: [u8; 6], limit: Duration) -> std::thread::JoinHandle<u64> {
    let (rx, tx) = in_netns(mid.name(), || {
        Ok((
            PacketSocket::open("m0", PacketDirection::Rx)?,
            PacketSocket::open("m1", PacketDirection::Tx)?,
        ))
    })
    .expect("relay sockets");
    std::thread::spawn(move || {
        let mut inb = MsgBatch::new(64, 2048);
        let mut out = MsgBatch::new(8, 2048);
        let mut held: Option<Vec<u8>> = None;
        let mut relayed = 0u64;
        let start = Instant::now();
        let mut last = None::<Instant>;
        let send = |out: &mut MsgBatch, frame: &[u8], copies: usize| {
            for i in 0..copies {
                let slot = out.slot_mut(i);
                slot[..frame.len()].copy_from_slice(frame);
                slot[..6].copy_from_slice(&dst_mac);
                out.set_message(i, 0, frame.len());
            }
            let mut sent = 0;
            while sent < copies {
                sent += out.send(tx.as_raw_fd(), sent..copies).expect("relay send");
            }
        };
        while start.elapsed() < limit
            && last.is_none_or(|t| t.elapsed() < Duration::from_millis(400))
        {
            if !rx.poll_readable(20).expect("poll") {
                continue;
            }
            let n = inb.receive(rx.as_raw_fd()).expect("relay receive");
            for i in 0..n {
                let frame = inb.message(i).to_vec();
                let Some(probe) = locate_probe(&frame) else {
                    continue;
                };
                last = Some(Instant::now());
                relayed += 1;
                match action(probe.sequence()) {
                    Action::Drop => continue,
                    Action::Hold => {
                        held = Some(frame);
                        continue;
                    }
                    Action::Duplicate => send(&mut out, &frame, 2),
                    Action::Forward => send(&mut out, &frame, 1),
                }
                if let Some(h) = held.take() {
                    send(&mut out, &h, 1);
                }
            }
        }
        if let Some(h) = held.take() {
            send(&mut out, &h, 1);
        }
        relayed
    })
}

#[test]
fn drops_duplicates_and_reorders_through_a_relay_are_counted_exactly() {
    require_root();
    let mut tb = Testbed::new("gen-relay");
    let a = tb.netns("a").unwrap();
    let mid = tb.netns("m").unwrap();
    let b = tb.netns("b").unwrap();
    tb.veth((&a, "eth0"), (&mid, "m0")).unwrap();
    tb.veth((&mid, "m1"), (&b, "eth0")).unwrap();
    let n = 3_000u64;
    let relay = relay(&mid, b.mac("eth0").unwrap(), Duration::from_secs(20));
    let mut spec = spec_between(&a, mid.mac("m0").unwrap());
    spec.rate = Rate::Pps(5_000.0);
    spec.count = Some(n);
    let rx = open_rx("af_packet", &b);
    let tx = open_tx("af_packet", &a, &spec);
    let report = run_trial(&spec, tx, rx, &mut |_| {}).expect("trial");
    assert_eq!(
        relay.join().expect("relay thread"),
        n,
        "the relay saw every frame"
    );

    let arrivals = model(n);
    let (unique, dups, reordered) = classify(&arrivals);
    let dropped = (0..n).filter(|&s| action(s) == Action::Drop).count() as u64;
    assert_eq!(unique, n - dropped);
    assert!(
        dups > 0 && reordered > 0 && dropped > 0,
        "the model exercises every case"
    );
    assert_eq!(report.tx.packets, n, "{report}");
    assert_eq!(report.rx.packets, arrivals.len() as u64, "{report}");
    assert_eq!(report.rx.unique, unique, "{report}");
    assert_eq!(report.lost, dropped as i64, "{report}");
    assert_eq!(report.duplicates, dups, "{report}");
    assert_eq!(report.reordered, reordered, "{report}");
    assert_eq!(report.late, 0);
    let expect_loss = dropped as f64 * 100.0 / n as f64;
    assert!((report.loss_percent - expect_loss).abs() < 1e-9);
}

/// Every field docs/GENERATOR.md documents for the JSON report.
const REPORT_FIELDS: &[&str] = &[
    "schema_version",
    "sender",
    "receiver",
    "protocol",
    "ip_version",
    "sizes",
    "flows",
    "rate_requested",
    "offered_pps",
    "warmup_s",
    "duration_s",
    "tx",
    "rx",
    "missing",
    "lost_at_sink",
    "lost",
    "loss_percent",
    "loss_percent_raw",
    "reordered",
    "duplicates",
    "late",
    "latency_ns",
    "latency_at_saturation",
    "reference_max_pps",
    "note",
];
const TX_FIELDS: &[&str] = &[
    "packets",
    "bytes",
    "wire_bytes",
    "pps",
    "wire_gbps",
    "warmup_packets",
    "unsent",
];
const RX_FIELDS: &[&str] = &[
    "packets",
    "unique",
    "bytes",
    "pps",
    "wire_gbps",
    "warmup_packets",
    "foreign",
    "sink_drops",
];
const LATENCY_FIELDS: &[&str] = &[
    "samples", "min", "mean", "p50", "p90", "p99", "p999", "max", "cdf",
];

fn has_all(v: &serde_json::Value, fields: &[&str], what: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {v}"));
    for f in fields {
        assert!(
            obj.contains_key(*f),
            "{what} lacks documented field {f:?}: {v}"
        );
    }
    assert_eq!(
        obj.len(),
        fields.len(),
        "{what} has undocumented fields: {v}"
    );
}

#[test]
fn cli_json_report_has_every_documented_field() {
    let (_tb, a, b) = pair("gen-json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strait-gen"))
        .args([
            "--netns",
            a.name(),
            "--iface",
            "eth0",
            "--rx-netns",
            b.name(),
            "--rx-iface",
            "eth0",
            "--src-ip",
            A_IP,
            "--dst-ip",
            B_IP,
            "--dst-mac",
            "auto",
            "--rate",
            "10kpps",
            "--count",
            "500",
            "--duration",
            "10",
            "--size",
            "imix",
            "--json",
        ])
        .output()
        .expect("run strait-gen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "strait-gen failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    has_all(&v, REPORT_FIELDS, "report");
    has_all(&v["tx"], TX_FIELDS, "tx");
    has_all(&v["rx"], RX_FIELDS, "rx");
    has_all(&v["latency_ns"], LATENCY_FIELDS, "latency_ns");
    let cdf = v["latency_ns"]["cdf"].as_array().expect("cdf array");
    assert_eq!(cdf.len(), CDF_QUANTILES.len());
    for (p, q) in cdf.iter().zip(CDF_QUANTILES) {
        has_all(p, &["quantile", "ns"], "latency_ns.cdf[]");
        assert_eq!(p["quantile"], q);
    }
    assert_eq!(cdf.last().unwrap()["ns"], v["latency_ns"]["max"]);
    for s in v["sizes"].as_array().expect("sizes array") {
        has_all(s, &["bytes", "weight"], "sizes[]");
    }
    assert_eq!(v["schema_version"], SCHEMA_VERSION);
    assert_eq!(v["tx"]["packets"], 500);
    assert_eq!(v["rx"]["unique"], 500);
    assert_eq!(v["lost"], 0);
    assert_eq!(v["missing"], 0);
    has_all(
        &v["rx"]["sink_drops"],
        &["total", "kinds", "fill_ring_empty"],
        "rx.sink_drops",
    );
    assert_eq!(v["rx"]["sink_drops"]["kinds"]["tp_drops"], 0);
    assert_eq!(v["ip_version"], 4);
    assert_eq!(v["offered_pps"], 10_000.0);
}

/// A receiver that reads late: it sleeps before every read, as a sink on a
/// loaded host does, so its socket's small buffer overflows.
struct SlowRx(Box<dyn RxPort>);

impl RxPort for SlowRx {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn receive(&mut self, timeout: Duration, frame: &mut dyn FnMut(&[u8])) -> Result<usize> {
        std::thread::sleep(Duration::from_millis(2));
        self.0.receive(timeout, frame)
    }
    fn sink_drops(&mut self) -> Option<SinkDrops> {
        self.0.sink_drops()
    }
}

#[test]
fn an_overrun_sink_is_charged_with_its_own_drops_not_the_path() {
    let (_tb, a, b) = pair("gen-sink");
    let n = 6_000u64;
    let mut spec = spec_between(&a, b.mac("eth0").unwrap());
    spec.sizes = SizeMix::fixed(1024);
    spec.rate = Rate::Pps(20_000.0);
    spec.count = Some(n);
    // No warm-up: the socket's counters then cover exactly the measurement.
    spec.warmup = Duration::ZERO;
    let rx = in_netns(b.name(), || {
        let mut rx = AfPacketRx::open("eth0")?;
        // A few frames' worth: the kernel keeps at least its minimum.
        rx.set_receive_buffer(4096)?;
        Ok(Box::new(SlowRx(Box::new(rx))) as Box<dyn RxPort>)
    })
    .expect("receiver");
    let tx = open_tx("af_packet", &a, &spec);
    let report = run_trial(&spec, tx, rx, &mut |_| {}).expect("trial");
    let drops = report
        .rx
        .sink_drops
        .as_ref()
        .expect("AF_PACKET keeps drop counters");
    assert!(drops.total > 0, "the sink was overrun\n{report}");
    assert_eq!(drops.kinds["tp_drops"], drops.total);
    assert_eq!(report.tx.packets, n, "{report}");
    assert!(report.missing > 0, "{report}");
    // A veth pair loses nothing at 20 kpps: every missing frame is the sink's.
    assert_eq!(report.lost_at_sink, report.missing as u64, "{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.loss_percent, 0.0, "{report}");
    let raw = report.missing as f64 * 100.0 / n as f64;
    assert!((report.loss_percent_raw - raw).abs() < 1e-9, "{report}");
    assert!(report.to_string().contains("sink drop"), "{report}");
}
