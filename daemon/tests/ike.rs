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

use std::path::Path;
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
    require_root();
    require_program("ping", "iputils-ping");
    require_program("nft", "nftables");
    require_program("ethtool", "ethtool");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/topologies/site-to-hub.topo");
    let topo = Topology::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut tb = Testbed::new("ike");
    let ns = topo.build(&mut tb).unwrap();
    let dir = std::env::temp_dir().join(tb.prefix());
    std::fs::create_dir_all(&dir).unwrap();
    let (lana, lanb) = (&ns["lana"], &ns["lanb"]);
    std::fs::write(dir.join("vcpe-0042.key"), "correct horse battery staple\n").unwrap();
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
    // A reload of the file keeps the negotiated tunnel.
    hub.ctl(&["reload"]);
    let (ok, out) = ping(lana, &["-c", "2", "-i", "0.2", "10.2.0.2"]);
    assert!(ok, "after the hub's reload: {out}");
}
