//! End-to-end: a branch registers with its hub by serial number and key
//! over IKEv2 (both `straitd`, the branch behind the home router's NAT),
//! the negotiated ESP tunnel carries LAN traffic both ways, and a wrong key
//! or an unknown serial gets no tunnel — while its prefixes are never
//! reached in clear.
//!
//! Topology (scripts/topologies/site-to-hub.topo):
//! lana 10.1.0.2 — branch — home (NAT) — hub — lanb 10.2.0.2
//!
//! Needs root (namespaces, veth, XDP, nftables), iputils-ping, ethtool, nft.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strait_testbed::{require_program, require_root, Netns, Testbed, Topology};

mod common;
use common::{ping, Daemon};

fn hub_config(dir: &Path) -> String {
    format!(
        r#"
[engine]
workers = 1

[[interface]]
name = "wan"
addresses = ["203.0.113.1/24"]

[[interface]]
name = "lan"
addresses = ["10.2.0.1/24"]

[ike]
identity = "hub.example"

[[ike.device]]
serial = "vcpe-0042"
key_file = "{}"
site = "branch-a"
prefixes = ["10.1.0.0/16"]
local = "203.0.113.1"
"#,
        dir.join("vcpe-0042.key").display()
    )
}

fn branch_config(dir: &Path, serial: &str) -> String {
    format!(
        r#"
[engine]
workers = 1

[[interface]]
name = "lan"
addresses = ["10.1.0.1/24"]

[[interface]]
name = "wan"
addresses = ["192.168.77.2/24"]

[[route]]
prefix = "0.0.0.0/0"
via = ["192.168.77.1"]

[ike]
identity = "{serial}"
key_file = "{}"
dpd_seconds = 2

[[ike.peer]]
name = "hub"
local = "192.168.77.2"
remote = "203.0.113.1"
remote_identity = "hub.example"
prefixes = ["10.2.0.0/16"]
local_prefixes = ["10.1.0.0/16"]
"#,
        dir.join("branch.key").display()
    )
}

/// The site-to-hub bed (namespaces torn down when the `Testbed` drops),
/// a directory for the run's files, and both ends' key files holding the
/// registered key.
fn bed(tag: &str) -> (Testbed, BTreeMap<String, Netns>, PathBuf) {
    require_root();
    require_program("ping", "iputils-ping");
    require_program("nft", "nftables");
    require_program("ethtool", "ethtool");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/topologies/site-to-hub.topo");
    let topo = Topology::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut tb = Testbed::new(tag);
    let ns = topo.build(&mut tb).unwrap();
    let dir = std::env::temp_dir().join(tb.prefix());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vcpe-0042.key"), "correct horse battery staple\n").unwrap();
    std::fs::write(dir.join("branch.key"), "correct horse battery staple\n").unwrap();
    (tb, ns, dir)
}

/// Pings once a second until one answers or `within` passes.
fn reachable(from: &Netns, to: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ping(from, &["-c", "1", "-W", "1", to]).0 {
            return true;
        }
    }
    false
}

fn tunnels(d: &Daemon) -> Vec<String> {
    d.json(&["show", "sa"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tunnel"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_branch_registers_with_serial_and_key_and_the_tunnel_carries_traffic() {
    let (_tb, ns, dir) = bed("ike");
    let (lana, lanb) = (&ns["lana"], &ns["lanb"]);
    let hub = Daemon::start(&ns["hub"], &dir, "hub", &hub_config(&dir));

    // A wrong key: refused, no tunnel on either end, nothing in clear.
    std::fs::write(dir.join("branch.key"), "wrong key\n").unwrap();
    let mut branch = Daemon::start(
        &ns["branch"],
        &dir,
        "branch",
        &branch_config(&dir, "vcpe-0042"),
    );
    assert!(
        !reachable(lana, "10.2.0.2", Duration::from_secs(4)),
        "reached with a wrong key"
    );
    assert!(tunnels(&branch).is_empty(), "{:?}", tunnels(&branch));
    assert!(tunnels(&hub).is_empty(), "{:?}", tunnels(&hub));
    // The hub's prefixes are blackholed while the tunnel is down.
    let routes = branch.ctl(&["show", "routes"]);
    assert!(routes.contains("10.2.0.0/16"), "{routes}");
    branch.stop();

    // An unknown serial with the right key: refused too.
    std::fs::write(dir.join("branch.key"), "correct horse battery staple\n").unwrap();
    std::fs::write(&branch.config, branch_config(&dir, "vcpe-9999")).unwrap();
    branch.spawn();
    assert!(
        !reachable(lana, "10.2.0.2", Duration::from_secs(4)),
        "reached as an unknown device"
    );
    assert!(tunnels(&hub).is_empty(), "{:?}", tunnels(&hub));
    branch.stop();

    // The registered serial and its key: the tunnel comes up through the
    // NAT and carries traffic both ways.
    std::fs::write(&branch.config, branch_config(&dir, "vcpe-0042")).unwrap();
    branch.spawn();
    assert!(
        reachable(lana, "10.2.0.2", Duration::from_secs(15)),
        "the branch never registered"
    );
    let (ok, out) = ping(lanb, &["-c", "3", "-i", "0.2", "10.1.0.2"]);
    assert!(ok, "lanb -> lana: {out}");
    assert_eq!(tunnels(&hub), ["site-branch-a"]);
    assert_eq!(tunnels(&branch), ["hub"]);
    let sa = hub.json(&["show", "sa"]);
    // Behind the NAT: UDP-encapsulated, to the NAT's address and port.
    assert!(
        sa[0]["peer"].as_str().unwrap().starts_with("203.0.113.2:"),
        "{sa}"
    );
    let counters = hub.json(&["show", "counters"]);
    assert!(
        counters["wan"]["esp_opened"].as_u64().unwrap() >= 3,
        "{counters}"
    );
    // The operator's view on both ends: who is registered, what was refused.
    let devices = hub.json(&["show", "devices"]);
    assert_eq!(devices[0]["serial"], "vcpe-0042", "{devices}");
    assert_eq!(devices[0]["registered"], true, "{devices}");
    assert!(devices[0]["refused"].as_u64().unwrap() >= 1, "{devices}");
    let ike = hub.json(&["show", "ike"]);
    assert!(ike["refused"]["wrong key"].as_u64().unwrap() >= 1, "{ike}");
    assert!(
        ike["refused"]["unknown serial"].as_u64().unwrap() >= 1,
        "{ike}"
    );
    let ike = branch.json(&["show", "ike"]);
    assert_eq!(ike["hubs"][0]["state"], "up", "{ike}");
    let text = hub.ctl(&["show", "devices"]);
    assert!(text.contains("registered"), "{text}");
    // A reload of the file keeps the negotiated tunnel.
    hub.ctl(&["reload"]);
    let (ok, out) = ping(lana, &["-c", "2", "-i", "0.2", "10.2.0.2"]);
    assert!(ok, "after the hub's reload: {out}");
}

/// The site-to-hub bed with the keys in place; `swan` names the namespace
/// strongSwan takes over from `straitd` (its interfaces get kernel
/// addresses and it forwards between them).
fn interop_bed(tag: &str, swan: &str) -> (Testbed, BTreeMap<String, Netns>, PathBuf) {
    strait_testbed::strongswan::require_strongswan();
    let (tb, ns, dir) = bed(tag);
    let s = &ns[swan];
    let (addrs, gateway): (&[(&str, &str)], Option<&str>) = match swan {
        "hub" => (&[("wan", "203.0.113.1/24"), ("lan", "10.2.0.1/24")], None),
        _ => (
            &[("wan", "192.168.77.2/24"), ("lan", "10.1.0.1/24")],
            Some("192.168.77.1"),
        ),
    };
    for (dev, a) in addrs {
        s.addr(dev, a).unwrap();
    }
    if let Some(gw) = gateway {
        s.ip(&["route", "add", "default", "via", gw]).unwrap();
    }
    s.output(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    (tb, ns, dir)
}

/// charon's swanctl.conf: one connection with one CHILD SA, PSK, UDP
/// encapsulation (its userspace ESP needs it), no ESN.
fn swanctl_conf(
    local: &str,
    remote: &str,
    local_id: &str,
    remote_id: &str,
    local_ts: &str,
    remote_ts: &str,
) -> String {
    format!(
        "connections {{\n  c {{\n    version = 2\n    local_addrs = {local}\n    remote_addrs = {remote}\n    \
         proposals = aes256gcm16-prfsha256-ecp256\n    encap = yes\n    mobike = no\n    fragmentation = no\n    \
         local {{\n      auth = psk\n      id = {local_id}\n    }}\n    remote {{\n      auth = psk\n      id = {remote_id}\n    }}\n    \
         children {{\n      c {{\n        mode = tunnel\n        local_ts = {local_ts}\n        remote_ts = {remote_ts}\n        \
         esp_proposals = aes256gcm16\n        start_action = none\n      }}\n    }}\n  }}\n}}\n\
         secrets {{\n  ike-c {{\n    id-a = {local_id}\n    id-b = {remote_id}\n    secret = \"correct horse battery staple\"\n  }}\n}}\n"
    )
}

/// strongSwan as the hub, `straitd` as the branch behind the home NAT:
/// the branch registers (charon offers only ECP-256, so Strait's first
/// guess is answered INVALID_KE_PAYLOAD and retried), and LAN traffic
/// passes both ways through Strait's dataplane and charon's userspace ESP.
#[test]
fn a_strait_branch_registers_with_a_strongswan_hub() {
    let (_tb, ns, dir) = interop_bed("ikesw-hub", "hub");
    let conf = swanctl_conf(
        "203.0.113.1",
        "%any",
        "hub.example",
        "vcpe-0042",
        "10.2.0.0/16",
        "10.1.0.0/16",
    );
    let charon =
        strait_testbed::strongswan::Charon::start(&ns["hub"], &dir.join("charon"), &conf, true);
    let _branch = Daemon::start(
        &ns["branch"],
        &dir,
        "branch",
        &branch_config(&dir, "vcpe-0042"),
    );
    assert!(
        reachable(&ns["lana"], "10.2.0.2", Duration::from_secs(20)),
        "no traffic through strongSwan: {}",
        charon.log()
    );
    let (ok, out) = ping(&ns["lanb"], &["-c", "3", "-i", "0.2", "10.1.0.2"]);
    assert!(ok, "lanb -> lana through charon: {out}");
    let sas = charon.swanctl(&["--list-sas"]);
    let sas = String::from_utf8_lossy(&sas.stdout);
    assert!(
        sas.contains("ESTABLISHED") && sas.contains("INSTALLED"),
        "{sas}"
    );
    assert!(sas.contains("vcpe-0042"), "{sas}");
}

/// strongSwan as the branch (it initiates, behind the home NAT), `straitd`
/// as the hub with its device registry: the device is accepted and traffic
/// passes both ways; a strongSwan with the wrong key is refused.
#[test]
fn a_strongswan_branch_registers_with_a_strait_hub() {
    let (_tb, ns, dir) = interop_bed("ikesw-br", "branch");
    let hub = Daemon::start(&ns["hub"], &dir, "hub", &hub_config(&dir));
    let conf = swanctl_conf(
        "192.168.77.2",
        "203.0.113.1",
        "vcpe-0042",
        "hub.example",
        "10.1.0.0/16",
        "10.2.0.0/16",
    );
    let charon =
        strait_testbed::strongswan::Charon::start(&ns["branch"], &dir.join("charon"), &conf, true);
    let out = charon.swanctl(&["--initiate", "--child", "c", "--timeout", "15"]);
    assert!(
        out.status.success(),
        "swanctl --initiate: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(tunnels(&hub), ["site-branch-a"]);
    assert!(
        reachable(&ns["lana"], "10.2.0.2", Duration::from_secs(10)),
        "no traffic from a strongSwan branch: {}",
        charon.log()
    );
    let (ok, out) = ping(&ns["lanb"], &["-c", "3", "-i", "0.2", "10.1.0.2"]);
    assert!(ok, "lanb -> lana through the Strait hub: {out}");
    drop(charon);

    // The same device with a wrong key.
    let wrong = conf.replace("correct horse battery staple", "not the key");
    let charon = strait_testbed::strongswan::Charon::start(
        &ns["branch"],
        &dir.join("charon2"),
        &wrong,
        true,
    );
    let out = charon.swanctl(&["--initiate", "--child", "c", "--timeout", "10"]);
    assert!(!out.status.success(), "a wrong key was accepted");
    let log = charon.log();
    assert!(log.contains("AUTHENTICATION_FAILED"), "{log}");
}

/// A hub that dies is noticed by the device's liveness checks (2 s of
/// silence, then 1 + 2 + 4 + 8 s of unanswered retransmissions): its
/// tunnel goes and its prefixes are blackholed; when the hub is back the
/// device registers again by itself.
#[test]
fn a_dead_hub_is_noticed_and_the_branch_registers_again_when_it_returns() {
    let (_tb, ns, dir) = bed("ikedpd");
    let mut hub = Daemon::start(&ns["hub"], &dir, "hub", &hub_config(&dir));
    let branch = Daemon::start(
        &ns["branch"],
        &dir,
        "branch",
        &branch_config(&dir, "vcpe-0042"),
    );
    assert!(reachable(&ns["lana"], "10.2.0.2", Duration::from_secs(15)));

    hub.kill_hard();
    let died = Instant::now();
    let deadline = died + Duration::from_secs(30);
    loop {
        let ike = branch.json(&["show", "ike"]);
        if ike["hubs"][0]["state"] != "up" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead hub was never noticed: {ike}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let noticed = died.elapsed();
    assert!(
        noticed <= Duration::from_secs(25),
        "noticed after {noticed:?}"
    );
    assert!(tunnels(&branch).is_empty(), "{:?}", tunnels(&branch));

    hub.spawn();
    assert!(
        reachable(&ns["lana"], "10.2.0.2", Duration::from_secs(40)),
        "the branch did not register again"
    );
    eprintln!("dead hub noticed after {noticed:?}");
}

/// The device rekeys its CHILD SA every 3 s (and its IKE SA every 12 s)
/// while a numbered UDP stream runs from lana to lanb: the SPIs change,
/// the tunnel stays, and every datagram arrives exactly once.
#[test]
fn rekeys_under_traffic_lose_nothing() {
    let (_tb, ns, dir) = bed("ikerk");
    let hub = Daemon::start(&ns["hub"], &dir, "hub", &hub_config(&dir));
    let config = branch_config(&dir, "vcpe-0042")
        .replace("dpd_seconds = 2\n", "dpd_seconds = 2\nrekey_seconds = 3\n");
    let branch = Daemon::start(&ns["branch"], &dir, "branch", &config);
    assert!(reachable(&ns["lana"], "10.2.0.2", Duration::from_secs(15)));
    let spi = |d: &Daemon| {
        d.json(&["show", "sa"])[0]["outbound"]["spi"]
            .as_u64()
            .unwrap()
    };
    let first = (spi(&branch), spi(&hub));

    // 10 s of datagrams at 1 000/s.
    const COUNT: u32 = 10_000;
    let srv = ns["lanb"].clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        srv.enter(move || {
            let s = common::udp_receiver("10.2.0.2:5400", 8 << 20);
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            tx.send(()).unwrap();
            let mut seen = vec![0u32; COUNT as usize];
            let mut buf = [0u8; 256];
            while let Ok(n) = s.recv(&mut buf) {
                if n >= 4 {
                    let seq = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                    if let Some(c) = seen.get_mut(seq) {
                        *c += 1;
                    }
                }
            }
            seen
        })
        .unwrap()
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    ns["lana"]
        .enter(|| {
            let s = std::net::UdpSocket::bind("10.1.0.2:0").unwrap();
            let start = Instant::now();
            let mut buf = [0u8; 200];
            for seq in 0..COUNT {
                buf[..4].copy_from_slice(&seq.to_be_bytes());
                s.send_to(&buf, "10.2.0.2:5400").unwrap();
                let due = start + Duration::from_millis(u64::from(seq));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        })
        .unwrap();
    let seen = receiver.join().unwrap();
    common::assert_exactly_once(&seen, "UDP across CHILD and IKE rekeys");
    let last = (spi(&branch), spi(&hub));
    assert_ne!(
        first.0, last.0,
        "the branch's outbound SA was never rekeyed"
    );
    assert_ne!(first.1, last.1, "the hub's outbound SA was never rekeyed");
    assert_eq!(tunnels(&hub), ["site-branch-a"]);
}
