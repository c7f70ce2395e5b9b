//! strongSwan with userspace ESP as the site-to-site gateway pair, on the
//! benchmark's own bed (`scripts/topologies/bench-site.topo`): the SA comes
//! up, LAN traffic crosses, the WAN carries only ESP in UDP/4500, and
//! nothing of it is left running afterwards. Needs root (namespaces), the
//! strongSwan packages and tcpdump.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use strait_bench::harness::peers::site_gateways;
use strait_bench::harness::strongswan::{self, StrongswanPair};
use strait_testbed::{require_program, require_root, Netns, Testbed, Topology};

const TOPOLOGY: &str = include_str!("../../scripts/topologies/bench-site.topo");

/// Echo requests sent through the tunnel; each shows on the WAN twice
/// (request and reply).
const PINGS: usize = 5;

fn bed(tb: &mut Testbed) -> BTreeMap<String, Netns> {
    require_root();
    require_program("tcpdump", "tcpdump");
    require_program("ethtool", "ethtool");
    if let Err(why) = strongswan::available() {
        panic!("this test needs strongSwan: {why}");
    }
    let topo = Topology::parse(TOPOLOGY).expect("bench-site.topo parses");
    topo.build(tb).expect("bench-site bed")
}

/// Pids of every process inside `ns`.
fn pids_in(ns: &Netns) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", ns.name()])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn strongswan_pair_carries_lan_traffic_as_esp_in_udp() {
    let mut tb = Testbed::new("swan");
    let ns = bed(&mut tb);
    let (lana, branch, hub) = (&ns["lana"], &ns["branch"], &ns["hub"]);
    let log_dir = std::env::temp_dir().join(format!("strait-swan-test-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).unwrap();

    let (a, b) = site_gateways(branch, hub);
    let pair = StrongswanPair::start(&a, &b, "t", &log_dir)
        .unwrap_or_else(|e| panic!("{e:#} (logs in {})", log_dir.display()));
    let charons = pair.pids();
    assert_eq!(charons.len(), 2);

    let sas = pair.list_sas().unwrap();
    assert!(sas.contains("ESTABLISHED"), "{sas}");
    assert!(sas.contains("TUNNEL-in-UDP"), "{sas}");
    assert!(sas.contains("AES_GCM_16-128"), "{sas}");

    // Capture IPv4 on the branch's WAN while LAN hosts ping each other:
    // exactly the echo requests and replies, nothing else is sent there.
    // IKE itself (port 500, or 4500 behind the non-ESP marker, RFC 3948
    // §2.2) is left out: charon may send an INFORMATIONAL just after the
    // SA is up, and that is not the LAN's traffic.
    let capture = log_dir.join("wan.txt");
    let capture_err = log_dir.join("wan.err");
    let count = (2 * PINGS).to_string();
    let mut tcpdump = branch
        .command(&[
            "timeout",
            "20",
            "tcpdump",
            "-i",
            "wan",
            "-n",
            "-l",
            "-p",
            "-c",
            &count,
            "ip and not udp port 500 and not (udp port 4500 and udp[8:4] = 0)",
        ])
        .stdout(std::fs::File::create(&capture).unwrap())
        .stderr(std::fs::File::create(&capture_err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .expect("tcpdump");
    wait_for_text(&capture_err, "listening on", Duration::from_secs(10));
    let ping = lana
        .output(&[
            "ping",
            "-c",
            &PINGS.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            "10.2.0.2",
        ])
        .unwrap();
    let ping_text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        ping.status.success(),
        "lana → lanb through strongSwan: {ping_text}"
    );
    assert!(
        ping_text.contains(&format!("{PINGS} received")),
        "{ping_text}"
    );

    let status = tcpdump.wait().unwrap();
    let wan = std::fs::read_to_string(&capture).unwrap();
    assert!(
        status.success(),
        "tcpdump did not see {count} packets in 20 s ({status}):\n{wan}"
    );
    let lines: Vec<&str> = wan.lines().collect();
    assert_eq!(lines.len(), 2 * PINGS, "{wan}");
    for l in &lines {
        // tcpdump decodes port 4500 as "UDP-encap: ESP(spi=…,seq=…)".
        assert!(
            l.contains(".4500 > ") && l.contains("ESP(spi="),
            "not ESP-in-UDP/4500: {l}"
        );
        assert!(
            !l.contains("ICMP") && !l.contains("10.1.0.2"),
            "plaintext on the WAN: {l}"
        );
    }

    drop(pair);
    for pid in &charons {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "charon {pid} still running after drop"
        );
    }
    for gw in [branch, hub] {
        assert!(
            pids_in(gw).is_empty(),
            "processes left in {gw}: {:?}",
            pids_in(gw)
        );
        let links = gw.ip(&["-o", "link", "show"]).unwrap();
        assert!(!links.contains("ipsec0"), "ipsec0 left in {gw}: {links}");
    }
    let _ = std::fs::remove_dir_all(&log_dir);
}

/// Waits (bounded) until `path` contains `needle`.
fn wait_for_text(path: &Path, needle: &str, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {needle:?} in {} after {timeout:?}", path.display());
}
