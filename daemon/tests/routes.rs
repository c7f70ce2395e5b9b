//! End-to-end route exchange: branches claim their LAN prefixes when they
//! register, the hub refuses a claim another site holds, and every site
//! learns the cloud's prefixes and the other sites' (transit), IPv4 and
//! IPv6, as they come and go — all `straitd`, one per namespace.
//!
//! Topologies: scripts/topologies/hub-sites.topo (four branches b1..b4,
//! each with its LAN lanN (10.N.0.0/24, fd0N::/64), and the hub with the
//! cloud 172.16.0.0/24, across a plain router) and two-hubs.topo (a branch
//! on each of two hubs, hub h1 attached to hub h2).
//!
//! Needs root (namespaces, veth, XDP), iputils-ping, ethtool.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use strait_testbed::{require_program, require_root, Netns, Testbed};

mod common;
use common::{ping, Daemon};

const SECRET: &str = "hub secret for the route exchange tests";

fn hub_config() -> String {
    let mut c = String::from(
        r#"
[engine]
workers = 1

[[interface]]
name = "wan"
addresses = ["203.0.113.1/24"]

[[interface]]
name = "lan"
addresses = ["172.16.0.1/24"]

[[route]]
prefix = "100.64.0.0/16"
via = ["203.0.113.254"]

[ike]
identity = "hub.example"
device_secret_file = "hub.secret"
dpd_seconds = 2
advertise = ["172.16.0.0/24"]
"#,
    );
    // Every device may claim anything in 10/8 and fd00::/8: what keeps
    // two sites apart is who holds what.
    for n in 1..=4 {
        c.push_str(&format!(
            "\n[[ike.device]]\nserial = \"vcpe-{n}\"\nsite = \"s{n}\"\nprefixes = [\"10.0.0.0/8\", \"fd00::/8\"]\nlocal = \"203.0.113.1\"\n"
        ));
    }
    c
}

/// Branch `n` claiming `claims`, learning what the hub announces.
fn branch_config(n: u8, claims: &[&str]) -> String {
    let claims: Vec<String> = claims.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        r#"
[engine]
workers = 1

[[interface]]
name = "lan"
addresses = ["10.{n}.0.1/24", "fd0{n}::1/64"]

[[interface]]
name = "wan"
addresses = ["100.64.{n}.2/24"]

[[route]]
prefix = "0.0.0.0/0"
via = ["100.64.{n}.1"]

[ike]
identity = "vcpe-{n}"
key_file = "vcpe-{n}.key"
dpd_seconds = 2

[[ike.peer]]
name = "hub"
local = "100.64.{n}.2"
remote = "203.0.113.1"
remote_identity = "hub.example"
local_prefixes = [{}]
"#,
        claims.join(", ")
    )
}

struct Bed {
    _tb: Testbed,
    ns: BTreeMap<String, Netns>,
    dir: PathBuf,
    hub: Daemon,
}

fn bed(tag: &str) -> Bed {
    require_root();
    require_program("ping", "iputils-ping");
    require_program("ethtool", "ethtool");
    let (tb, ns, dir) = common::topology_bed("hub-sites.topo", tag);
    std::fs::write(dir.join("hub.secret"), SECRET).unwrap();
    for n in 1..=4 {
        let key = strait_ike::crypto::device_key(SECRET.as_bytes(), &format!("vcpe-{n}"));
        std::fs::write(dir.join(format!("vcpe-{n}.key")), key).unwrap();
    }
    let hub = Daemon::start(&ns["hub"], &dir, "hub", &hub_config());
    Bed {
        _tb: tb,
        ns,
        dir,
        hub,
    }
}

impl Bed {
    fn branch(&self, n: u8, claims: &[&str]) -> Daemon {
        Daemon::start(
            &self.ns[&format!("b{n}")],
            &self.dir,
            &format!("b{n}"),
            &branch_config(n, claims),
        )
    }

    /// The standard claims of branch `n`: its LAN, both families.
    fn site(&self, n: u8) -> Daemon {
        self.branch(n, &[&format!("10.{n}.0.0/16"), &format!("fd0{n}::/64")])
    }
}

fn routes(d: &Daemon) -> String {
    d.ctl(&["show", "routes"])
}

fn reaches(from: &Netns, to: &str) -> bool {
    ping(from, &["-c", "1", "-W", "1", to]).0
}

/// Three sites reach each other (transit) and the cloud, both families; a
/// fourth claiming a prefix a registered site holds is refused, with the
/// reason on both ends, while a numbered stream between two others loses
/// nothing.
#[test]
fn sites_learn_each_other_and_an_overlapping_claim_is_refused() {
    let bed = bed("rtx");
    let branches: Vec<Daemon> = (1..=3).map(|n| bed.site(n)).collect();
    common::within("three sites registered", Duration::from_secs(20), || {
        bed.hub.json(&["show", "sites"]).as_array().unwrap().len() == 3
    });
    let took = common::within(
        "every site learned the others",
        Duration::from_secs(5),
        || {
            branches.iter().enumerate().all(|(i, b)| {
                let r = routes(b);
                (1..=3)
                    .filter(|m| *m != i + 1)
                    .all(|m| r.contains(&format!("10.{m}.0.0/16")))
                    && r.contains("172.16.0.0/24")
            })
        },
    );
    eprintln!("routes converged {took:?} after the third registration");
    let lan1 = &bed.ns["lan1"];
    for to in ["10.2.0.2", "10.3.0.2", "172.16.0.2", "fd02::2", "fd03::2"] {
        assert!(
            common::within(&format!("lan1 -> {to}"), Duration::from_secs(10), || {
                reaches(lan1, to)
            }) < Duration::from_secs(10)
        );
    }
    assert!(reaches(&bed.ns["lan3"], "10.2.0.2"), "lan3 -> lan2");
    // Origins: the hub's routes name the sites, a branch's the hub.
    let hub_routes = routes(&bed.hub);
    assert!(
        hub_routes.contains("10.2.0.0/16 connected tunnel site-s2  (site s2)"),
        "{hub_routes}"
    );
    let b1 = routes(&branches[0]);
    assert!(
        b1.contains("10.3.0.0/16 connected tunnel hub  (hub hub)"),
        "{b1}"
    );
    assert!(
        b1.contains("fd03::/64 connected tunnel hub  (hub hub)"),
        "{b1}"
    );
    // A branch never learns its own LAN back.
    assert!(!b1.contains("10.1.0.0/16 connected tunnel"), "{b1}");

    // The fourth claims its LAN and site s2's prefix while lan1 streams to
    // lan2.
    let lan2 = bed.ns["lan2"].clone();
    let stream = std::thread::spawn({
        let lan1 = lan1.clone();
        move || common::numbered_stream(&lan1, "10.1.0.2:0", &lan2, "10.2.0.2:5400", 5_000)
    });
    let b4 = bed.branch(4, &["10.4.0.0/16", "10.2.0.0/16"]);
    let seen = stream.join().unwrap();
    common::assert_exactly_once(&seen, "lan1 -> lan2 while a fourth site claims 10.2/16");
    common::within(
        "the overlapping claim refused",
        Duration::from_secs(10),
        || {
            bed.hub
                .json(&["show", "sites"])
                .as_array()
                .unwrap()
                .iter()
                .any(|s| {
                    s["site"] == "s4"
                        && s["refused"].as_array().is_some_and(|r| {
                            r.iter().any(|r| {
                                r.as_str()
                                    .unwrap()
                                    .contains("10.2.0.0/16 overlaps 10.2.0.0/16 held by site s2")
                            })
                        })
                })
        },
    );
    // It keeps what does not overlap; the branch says what was refused.
    let sites = bed.hub.json(&["show", "sites"]);
    let s4 = sites
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"] == "s4")
        .unwrap()
        .clone();
    assert_eq!(
        s4["prefixes"],
        serde_json::json!(["10.4.0.0/16"]),
        "{sites}"
    );
    let ike = b4.json(&["show", "ike"]);
    let claims = ike["hubs"][0]["claims_refused"]
        .as_str()
        .unwrap_or_default();
    assert!(
        claims.contains("10.2.0.0/16") && claims.contains("accepted 10.4.0.0/16"),
        "{ike}"
    );
    // Site s2 still owns its prefix at the hub.
    assert!(routes(&bed.hub).contains("10.2.0.0/16 connected tunnel site-s2"));
    let text = bed.hub.ctl(&["show", "sites"]);
    assert!(text.contains("refused: 10.2.0.0/16 overlaps"), "{text}");
}

/// A site killed without a word: the hub's liveness check declares it
/// dead, its prefixes vanish from the hub and from the other sites; back,
/// they come back.
#[test]
fn a_dead_site_is_withdrawn_from_the_others_and_returns() {
    let bed = bed("rtd");
    let b1 = bed.site(1);
    let mut b3 = bed.site(3);
    common::within(
        "two sites learned each other",
        Duration::from_secs(20),
        || routes(&b1).contains("10.3.0.0/16 connected tunnel hub"),
    );
    assert!(
        common::within("lan1 -> lan3", Duration::from_secs(10), || reaches(
            &bed.ns["lan1"],
            "10.3.0.2"
        )) < Duration::from_secs(10)
    );

    b3.kill_hard();
    let gone = common::within("s3 withdrawn from b1", Duration::from_secs(30), || {
        !routes(&b1).contains("10.3.0.0/16")
    });
    assert!(
        gone <= Duration::from_secs(2 + 15 + 5),
        "withdrawn after {gone:?}"
    );
    assert!(!routes(&bed.hub).contains("10.3.0.0/16"));
    b3.spawn();
    let back = common::within("s3 back at b1", Duration::from_secs(30), || {
        routes(&b1).contains("10.3.0.0/16 connected tunnel hub")
    });
    assert!(
        common::within("lan1 -> lan3 again", Duration::from_secs(10), || reaches(
            &bed.ns["lan1"],
            "10.3.0.2"
        )) < Duration::from_secs(10)
    );
    eprintln!("s3 withdrawn after {gone:?}, back after {back:?}");
}

/// A hub's configuration: its WAN and cloud LAN, default route, secret
/// and `advertise`, and `rest` (devices, an upstream hub).
fn hub(wan: &str, gw: &str, lan: &str, identity: &str, cloud: &str, rest: &str) -> String {
    format!(
        r#"
[engine]
workers = 1

[[interface]]
name = "wan"
addresses = ["{wan}"]

[[interface]]
name = "lan"
addresses = ["{lan}"]

[[route]]
prefix = "0.0.0.0/0"
via = ["{gw}"]

[ike]
identity = "{identity}"
device_secret_file = "{identity}.secret"
dpd_seconds = 2
advertise = ["{cloud}"]
{rest}"#
    )
}

fn device(serial: &str, site: &str, local: &str) -> String {
    format!(
        "\n[[ike.device]]\nserial = \"{serial}\"\nsite = \"{site}\"\nprefixes = [\"10.0.0.0/8\", \"172.16.0.0/12\", \"fd00::/8\"]\nlocal = \"{local}\"\n"
    )
}

/// Branch A on hub h1, branch B on hub h2, h1 attached to h2: each branch
/// reaches the other's LAN (both families) and the far cloud, both ways;
/// each hub carries the other's sites, and nothing is announced back to
/// where it came from, so the routes stay put.
#[test]
fn transit_between_hubs_carries_both_ways_without_bouncing() {
    require_root();
    require_program("ping", "iputils-ping");
    require_program("ethtool", "ethtool");
    let (_tb, ns, dir) = common::topology_bed("two-hubs.topo", "rth");
    let key =
        |secret: &str, serial: &str| strait_ike::crypto::device_key(secret.as_bytes(), serial);
    std::fs::write(dir.join("hub-1.secret"), "secret of hub one").unwrap();
    std::fs::write(dir.join("hub-2.secret"), "secret of hub two").unwrap();
    std::fs::write(dir.join("vcpe-1.key"), key("secret of hub one", "vcpe-1")).unwrap();
    std::fs::write(dir.join("vcpe-2.key"), key("secret of hub two", "vcpe-2")).unwrap();
    std::fs::write(dir.join("hub-1.key"), key("secret of hub two", "hub-1")).unwrap();

    let h2 = Daemon::start(
        &ns["h2"],
        &dir,
        "h2",
        &hub(
            "198.51.100.1/24",
            "198.51.100.254",
            "172.16.2.1/24",
            "hub-2",
            "172.16.2.0/24",
            &(device("vcpe-2", "s2", "198.51.100.1") + &device("hub-1", "hub1", "198.51.100.1")),
        ),
    );
    // h1 registers with h2 like a device, claiming its cloud, then its
    // sites' prefixes as they come.
    let upstream = "key_file = \"hub-1.key\"\n\n[[ike.peer]]\nname = \"core\"\nlocal = \"203.0.113.1\"\nremote = \"198.51.100.1\"\nremote_identity = \"hub-2\"\nlocal_prefixes = [\"172.16.1.0/24\"]\n";
    let h1 = Daemon::start(
        &ns["h1"],
        &dir,
        "h1",
        &hub(
            "203.0.113.1/24",
            "203.0.113.254",
            "172.16.1.1/24",
            "hub-1",
            "172.16.1.0/24",
            &(upstream.to_owned() + &device("vcpe-1", "s1", "203.0.113.1")),
        ),
    );
    let branch = |n: u8, hub_addr: &str, hub_id: &str| {
        let c = branch_config(n, &[&format!("10.{n}.0.0/16"), &format!("fd0{n}::/64")])
            .replace(
                "remote = \"203.0.113.1\"",
                &format!("remote = \"{hub_addr}\""),
            )
            .replace(
                "remote_identity = \"hub.example\"",
                &format!("remote_identity = \"{hub_id}\""),
            );
        Daemon::start(&ns[&format!("b{n}")], &dir, &format!("b{n}"), &c)
    };
    let b1 = branch(1, "203.0.113.1", "hub-1");
    let b2 = branch(2, "198.51.100.1", "hub-2");

    let took = common::within(
        "both branches learned the far side",
        Duration::from_secs(30),
        || {
            let (r1, r2) = (routes(&b1), routes(&b2));
            r1.contains("10.2.0.0/16 connected tunnel hub")
                && r1.contains("172.16.2.0/24 connected tunnel hub")
                && r1.contains("fd02::/64 connected tunnel hub")
                && r2.contains("10.1.0.0/16 connected tunnel hub")
                && r2.contains("172.16.1.0/24 connected tunnel hub")
        },
    );
    eprintln!("transit converged after {took:?}");
    for (from, to) in [
        ("lan1", "10.2.0.2"),
        ("lan2", "10.1.0.2"),
        ("lan1", "fd02::2"),
        ("lan1", "172.16.2.2"),
        ("lan2", "172.16.1.2"),
    ] {
        common::within(&format!("{from} -> {to}"), Duration::from_secs(10), || {
            reaches(&ns[from], to)
        });
    }
    let (r1, r2) = (routes(&h1), routes(&h2));
    assert!(
        r2.contains("10.1.0.0/16 connected tunnel site-hub1  (site hub1)"),
        "{r2}"
    );
    assert!(
        r1.contains("10.2.0.0/16 connected tunnel core  (hub core)"),
        "{r1}"
    );
    // Never back where it came from.
    assert!(!r1.contains("10.1.0.0/16 connected tunnel core"), "{r1}");
    assert!(
        !r2.contains("10.2.0.0/16 connected tunnel site-hub1"),
        "{r2}"
    );
    // Settled: nothing changes any more.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        (routes(&h1), routes(&h2)),
        (r1, r2),
        "routes moved while nothing changed"
    );
}
