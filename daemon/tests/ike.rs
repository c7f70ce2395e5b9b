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

use strait_testbed::{require_program, require_root, Netns, Testbed};

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
    let (tb, ns, dir) = common::topology_bed("site-to-hub.topo", tag);
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
    // The IKE SAs themselves, read once a second: identity, NAT-T, the
    // CHILD SA's SPIs.
    common::within("the hub lists the IKE SA", Duration::from_secs(3), || {
        let sas = &hub.json(&["show", "ike"])["sas"];
        sas[0]["identity"] == "vcpe-0042"
            && sas[0]["nat_t"] == true
            && sas[0]["state"] == "established"
            && sas[0]["children"].as_array().is_some_and(|c| c.len() == 1)
    });
    let text = hub.ctl(&["show", "ike"]);
    assert!(
        text.contains("vcpe-0042") && text.contains("established"),
        "{text}"
    );
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
    let charon = strongswan_hub(&ns, &dir);
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

/// charon as the hub in its namespace, waiting for vcpe-0042 (its LAN to
/// the branch's).
fn strongswan_hub(ns: &BTreeMap<String, Netns>, dir: &Path) -> strait_testbed::strongswan::Charon {
    let conf = swanctl_conf(
        "203.0.113.1",
        "%any",
        "hub.example",
        "vcpe-0042",
        "10.2.0.0/16",
        "10.1.0.0/16",
    );
    strait_testbed::strongswan::Charon::start(&ns["hub"], &dir.join("charon"), &conf, true)
}

/// charon as the branch in its namespace (vcpe-0042 with the right key,
/// its LAN to the hub's), registered: its CHILD SA initiated. Returns it
/// and its swanctl.conf.
fn strongswan_branch(
    ns: &BTreeMap<String, Netns>,
    dir: &Path,
) -> (strait_testbed::strongswan::Charon, String) {
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
    (charon, conf)
}

/// strongSwan as the branch (it initiates, behind the home NAT), `straitd`
/// as the hub with its device registry: the device is accepted and traffic
/// passes both ways; a strongSwan with the wrong key is refused.
#[test]
fn a_strongswan_branch_registers_with_a_strait_hub() {
    let (_tb, ns, dir) = interop_bed("ikesw-br", "branch");
    let config = hub_config(&dir).replace(
        "identity = \"hub.example\"\n",
        "identity = \"hub.example\"\ndpd_seconds = 2\n",
    );
    let hub = Daemon::start(&ns["hub"], &dir, "hub", &config);
    let (charon, conf) = strongswan_branch(&ns, &dir);
    assert_eq!(tunnels(&hub), ["site-branch-a"]);
    assert!(
        reachable(&ns["lana"], "10.2.0.2", Duration::from_secs(10)),
        "no traffic from a strongSwan branch: {}",
        charon.log()
    );
    let (ok, out) = ping(&ns["lanb"], &["-c", "3", "-i", "0.2", "10.1.0.2"]);
    assert!(ok, "lanb -> lana through the Strait hub: {out}");

    // strongSwan killed (no Delete): the hub's liveness check goes
    // unanswered and the device's tunnel goes within 2 + 15 s.
    drop(charon);
    let noticed = common::within(
        "the dead strongSwan branch noticed",
        Duration::from_secs(25),
        || tunnels(&hub).is_empty(),
    );
    assert!(
        noticed <= Duration::from_secs(19),
        "noticed after {noticed:?}"
    );
    assert_eq!(hub.json(&["show", "ike"])["counters"]["dead_peers"], 1);
    eprintln!("dead strongSwan branch noticed after {noticed:?}");

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
    let noticed = common::within("the dead hub noticed", Duration::from_secs(30), || {
        branch.json(&["show", "ike"])["hubs"][0]["state"] != "up"
    });
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
    let seen = common::numbered_stream(
        &ns["lana"],
        "10.1.0.2:0",
        &ns["lanb"],
        "10.2.0.2:5400",
        10_000,
    );
    common::assert_exactly_once(&seen, "UDP across CHILD and IKE rekeys");
    let last = (spi(&branch), spi(&hub));
    assert_ne!(
        first.0, last.0,
        "the branch's outbound SA was never rekeyed"
    );
    assert_ne!(first.1, last.1, "the hub's outbound SA was never rekeyed");
    assert_eq!(tunnels(&hub), ["site-branch-a"]);
}

/// The branch's key-exchange counters.
fn ike_counter(d: &Daemon, name: &str) -> u64 {
    d.json(&["show", "ike"])["counters"][name].as_u64().unwrap()
}

/// Liveness checks go only to a silent peer: while ESP arrives from the
/// hub the branch sends none (it reads the workers' SA counters); idle, it
/// checks every 2 s. CHILD SAs rekey by bytes (the engine's lifetime
/// events) under a numbered stream without losing or repeating a datagram.
#[test]
fn traffic_puts_liveness_checks_off_and_bytes_drive_rekeys() {
    let (_tb, ns, dir) = bed("ikelv");
    let hub = Daemon::start(&ns["hub"], &dir, "hub", &hub_config(&dir));
    let config = branch_config(&dir, "vcpe-0042").replace(
        "dpd_seconds = 2\n",
        "dpd_seconds = 2\nrekey_seconds = 0\nrekey_bytes = 400000\n",
    );
    let branch = Daemon::start(&ns["branch"], &dir, "branch", &config);
    assert!(reachable(&ns["lana"], "10.2.0.2", Duration::from_secs(15)));
    let spi = branch.json(&["show", "sa"])[0]["inbound"][0]["spi"].clone();

    let idle_from = ike_counter(&branch, "liveness_checks");
    std::thread::sleep(Duration::from_secs(7));
    let idle = ike_counter(&branch, "liveness_checks") - idle_from;
    assert!(idle >= 2, "{idle} liveness checks in 7 idle seconds");

    // 8 s from the hub's side to the branch's LAN: about 1.8 MB of inner
    // bytes, four or five rekeys at 400 kB.
    let busy_from = ike_counter(&branch, "liveness_checks");
    let seen = common::numbered_stream(
        &ns["lanb"],
        "10.2.0.2:0",
        &ns["lana"],
        "10.1.0.2:5400",
        8_000,
    );
    let busy = ike_counter(&branch, "liveness_checks") - busy_from;
    common::assert_exactly_once(&seen, "UDP across rekeys by bytes");
    // The stream's last 3 s of receive timeout are idle again.
    assert!(busy <= 2, "{busy} liveness checks while traffic arrived");
    let lifetime = ike_counter(&branch, "lifetime_rekeys") + ike_counter(&hub, "lifetime_rekeys");
    assert!(lifetime >= 2, "{lifetime} rekeys started by byte lifetimes");
    assert!(ike_counter(&branch, "child_rekeys") >= 2);
    assert_ne!(branch.json(&["show", "sa"])[0]["inbound"][0]["spi"], spi);
    assert_eq!(ike_counter(&branch, "dead_peers"), 0);
    eprintln!("liveness checks: {idle} idle, {busy} busy; {lifetime} rekeys by bytes");
}

/// A source whose registrations keep failing is limited: after ten
/// refusals its next IKE_SA_INIT goes unanswered, counted in `show ike`
/// and on the metrics endpoint. The "device" here is a bare IKEv2
/// initiator (the `strait-ike` core over two UDP sockets) with a wrong
/// key, behind the home NAT, so attempts come as fast as answers do.
#[test]
fn a_source_refused_again_and_again_is_rate_limited() {
    use std::net::{SocketAddr, UdpSocket};
    use strait_ike::{Config, Event, Identity, Ike, Output, PeerConfig, TrafficSelector};

    let (_tb, ns, dir) = bed("ikerl");
    let config = hub_config(&dir).replace(
        "[ike]\n",
        "[metrics]\nlisten = \"127.0.0.1:9464\"\n\n[ike]\n",
    );
    let hub = Daemon::start(&ns["hub"], &dir, "hub", &config);
    let br = &ns["branch"];
    br.addr("wan", "192.168.77.2/24").unwrap();
    br.ip(&["route", "add", "default", "via", "192.168.77.1"])
        .unwrap();

    // Each attempt: Some(true) refused with an answer, Some(false) no
    // answer to its IKE_SA_INIT, None established (must not happen).
    let outcomes: Vec<Option<bool>> = br
        .enter(|| {
            let local: SocketAddr = "192.168.77.2:500".parse().unwrap();
            let sockets = [
                UdpSocket::bind(local).unwrap(),
                UdpSocket::bind("192.168.77.2:4500").unwrap(),
            ];
            for s in &sockets {
                s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            }
            let mut cfg = Config::new(Identity::Fqdn("vcpe-0042".into()));
            cfg.retransmit_tries = 1;
            let mut ike = Ike::new(cfg, Box::new(|_: &Identity| None)).unwrap();
            let epoch = Instant::now();
            let mut outcomes = Vec::new();
            for _ in 0..12 {
                let peer = PeerConfig {
                    local,
                    remote: "203.0.113.1:500".parse().unwrap(),
                    psk: b"not the key".to_vec(),
                    remote_id: None,
                    remote_ts: vec![
                        TrafficSelector::prefix("10.2.0.0".parse().unwrap(), 16).unwrap()
                    ],
                };
                let (_, mut outs) = ike.initiate(epoch.elapsed(), peer).unwrap();
                let (mut answered, mut outcome) = (false, Some(false));
                let deadline = Instant::now() + Duration::from_secs(3);
                'attempt: while Instant::now() < deadline {
                    for out in std::mem::take(&mut outs) {
                        match out {
                            Output::Send(d) => {
                                let s = &sockets[usize::from(d.local.port() == 4500)];
                                s.send_to(&d.bytes, d.remote).unwrap();
                            }
                            Output::Event(Event::IkeSaClosed { .. }) => {
                                outcome = Some(answered);
                                break 'attempt;
                            }
                            Output::Event(Event::ChildSaReady { .. }) => {
                                outcome = None;
                                break 'attempt;
                            }
                            Output::Event(_) => {}
                        }
                    }
                    let mut buf = [0u8; 2048];
                    for s in &sockets {
                        if let Ok((n, from)) = s.recv_from(&mut buf) {
                            answered = true;
                            let to = s.local_addr().unwrap();
                            outs.extend(ike.handle_datagram(epoch.elapsed(), from, to, &buf[..n]));
                        }
                    }
                    outs.extend(ike.poll(epoch.elapsed()));
                }
                outcomes.push(outcome);
            }
            outcomes
        })
        .unwrap();
    assert_eq!(
        outcomes[..10],
        [Some(true); 10],
        "the first ten are refused: {outcomes:?}"
    );
    assert_eq!(
        outcomes[10..],
        [Some(false); 2],
        "then the source is limited: {outcomes:?}"
    );
    let ike = hub.json(&["show", "ike"]);
    assert_eq!(ike["refused"]["wrong key"], 10, "{ike}");
    assert!(
        ike["counters"]["rate_limited"].as_u64().unwrap() >= 2,
        "{ike}"
    );
    assert_eq!(ike["limited_sources"], 1, "{ike}");
    let metrics = ns["hub"]
        .enter(|| {
            use std::io::{Read, Write};
            let mut c = std::net::TcpStream::connect("127.0.0.1:9464").unwrap();
            c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut text = String::new();
            c.read_to_string(&mut text).unwrap();
            text
        })
        .unwrap();
    assert!(
        metrics.contains("\nstrait_ike_refusals_total{reason=\"wrong_key\"} 10\n"),
        "{metrics}"
    );
    let limited = metrics
        .lines()
        .find_map(|l| l.strip_prefix("strait_ike_rate_limited_total "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(limited.is_some_and(|v| v >= 2), "{metrics}");
}

/// The hub's registry follows a reload without a restart, and a device's
/// key can be derived from one hub secret (`straitd --device-key`): a
/// device unknown at first registers once it is added; a reload naming a
/// missing key file is refused with the reason and changes nothing; a
/// device removed loses its tunnel at once.
#[test]
fn the_registry_follows_a_reload_and_keys_derive_from_a_hub_secret() {
    let (_tb, ns, dir) = bed("ikerg");
    std::fs::write(dir.join("hub.secret"), "a long random hub secret\n").unwrap();
    let registry = |devices: &str| {
        let base = hub_config(&dir);
        let head = &base[..base.find("[[ike.device]]").unwrap()];
        head.replace(
            "identity = \"hub.example\"\n",
            "identity = \"hub.example\"\ndevice_secret_file = \"hub.secret\"\n",
        ) + devices
    };
    let device = |serial: &str, site: &str, prefix: &str, key: &str| {
        format!(
            "\n[[ike.device]]\nserial = \"{serial}\"\nsite = \"{site}\"\nprefixes = [\"{prefix}\"]\nlocal = \"203.0.113.1\"\n{key}"
        )
    };
    let other = device("vcpe-0001", "elsewhere", "10.9.0.0/16", "");
    let mut hub = Daemon::start(&ns["hub"], &dir, "hub", &registry(&other));

    // Provisioning: the device's key file from the hub's secret.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_straitd"))
        .args([
            "--config",
            hub.config.to_str().unwrap(),
            "--device-key",
            "vcpe-0042",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap();
    assert_eq!(key.trim().len(), 64, "{key}");
    std::fs::write(dir.join("branch.key"), &key).unwrap();
    let branch = Daemon::start(
        &ns["branch"],
        &dir,
        "branch",
        &branch_config(&dir, "vcpe-0042"),
    );
    common::within(
        "the unknown device refused",
        Duration::from_secs(10),
        || {
            hub.json(&["show", "ike"])["refused"]["unknown serial"]
                .as_u64()
                .is_some_and(|n| n > 0)
        },
    );

    // A reload whose new device names a key file that is not there.
    let missing = device(
        "vcpe-0042",
        "branch-a",
        "10.1.0.0/16",
        "key_file = \"missing.key\"\n",
    );
    std::fs::write(&hub.config, registry(&(other.clone() + &missing))).unwrap();
    let answer = hub.try_ctl(&["reload"]).unwrap_err();
    assert!(
        answer.starts_with("error:") && answer.contains("missing.key"),
        "{answer}"
    );
    // Changing the identity needs a restart.
    std::fs::write(
        &hub.config,
        registry(&other).replace("\"hub.example\"", "\"hub2.example\""),
    )
    .unwrap();
    let answer = hub.try_ctl(&["reload"]).unwrap_err();
    assert!(answer.contains("needs a restart"), "{answer}");

    // The device added with a derived key: it registers by itself.
    let added = device("vcpe-0042", "branch-a", "10.1.0.0/16", "");
    std::fs::write(&hub.config, registry(&(other.clone() + &added))).unwrap();
    let answer = hub.ctl(&["reload"]);
    assert!(answer.starts_with("reloaded"), "{answer}");
    assert!(
        reachable(&ns["lana"], "10.2.0.2", Duration::from_secs(30)),
        "the added device never registered"
    );
    assert_eq!(tunnels(&hub), ["site-branch-a"]);

    // Removed: its tunnel goes with the reload.
    std::fs::write(&hub.config, registry(&other)).unwrap();
    let answer = hub.ctl(&["reload"]);
    assert!(answer.starts_with("reloaded"), "{answer}");
    common::within(
        "the removed device's tunnel gone",
        Duration::from_secs(3),
        || tunnels(&hub).is_empty(),
    );
    assert!(!ping(&ns["lana"], &["-c", "1", "-W", "1", "10.2.0.2"]).0);
    let devices = hub.json(&["show", "devices"]);
    assert_eq!(devices.as_array().unwrap().len(), 1, "{devices}");
    drop(branch);
    hub.stop();
}

/// strongSwan as the hub rekeys the CHILD SA (at 3 s and 8 s) and the IKE
/// SA (at 6 s), the Strait branch its CHILD SA every 5 s, while numbered
/// streams run both ways through Strait's dataplane and charon's userspace
/// ESP: every datagram arrives exactly once. (charon's own rekeys by
/// lifetime do not fire with its userspace ESP, which reports only the
/// hard expiry; `swanctl --rekey` forces them as a lifetime would.)
#[test]
fn rekeys_by_either_side_with_strongswan_lose_nothing() {
    let (_tb, ns, dir) = interop_bed("ikesw-rk", "hub");
    let charon = strongswan_hub(&ns, &dir);
    let config = branch_config(&dir, "vcpe-0042")
        .replace("dpd_seconds = 2\n", "dpd_seconds = 2\nrekey_seconds = 5\n");
    let branch = Daemon::start(&ns["branch"], &dir, "branch", &config);
    assert!(
        reachable(&ns["lana"], "10.2.0.2", Duration::from_secs(20)),
        "no traffic through strongSwan: {}",
        charon.log()
    );
    let streams: Vec<_> = [
        ("lana", "10.1.0.2:0", "lanb", "10.2.0.2:5400"),
        ("lanb", "10.2.0.2:0", "lana", "10.1.0.2:5401"),
    ]
    .into_iter()
    .map(|(from, src, to, dst)| {
        let (from, to) = (ns[from].clone(), ns[to].clone());
        std::thread::spawn(move || common::numbered_stream(&from, src, &to, dst, 12_000))
    })
    .collect();
    let start = Instant::now();
    for (at, what) in [(3, "--child"), (6, "--ike"), (8, "--child")] {
        std::thread::sleep(
            (start + Duration::from_secs(at)).saturating_duration_since(Instant::now()),
        );
        let out = charon.swanctl(&["--rekey", what, "c"]);
        assert!(
            out.status.success(),
            "swanctl --rekey {what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let seen: Vec<Vec<u32>> = streams.into_iter().map(|t| t.join().unwrap()).collect();
    common::assert_exactly_once(&seen[0], "branch -> strongSwan hub across rekeys");
    common::assert_exactly_once(&seen[1], "strongSwan hub -> branch across rekeys");
    let c = &branch.json(&["show", "ike"])["counters"];
    assert!(c["child_rekeys"].as_u64().unwrap() >= 3, "{c}");
    assert!(c["ike_rekeys"].as_u64().unwrap() >= 1, "{c}");
    assert_eq!(c["established"], 1, "registered once: {c}");
    eprintln!("rekeys with strongSwan: {c}");
}

/// A strongSwan branch that deletes its CHILD SA and creates a new one on
/// the same IKE SA (as it does after a hard expiry, and on `swanctl
/// --terminate --child` then `--initiate --child`): the Strait hub accepts
/// the new CHILD SA and the site's tunnel comes back without a new
/// registration.
#[test]
fn a_strongswan_branch_that_recreates_its_child_sa_keeps_its_site() {
    let (_tb, ns, dir) = interop_bed("ikesw-re", "branch");
    let hub = Daemon::start(&ns["hub"], &dir, "hub", &hub_config(&dir));
    let (charon, _) = strongswan_branch(&ns, &dir);
    let spi = || {
        hub.json(&["show", "sa"])
            .get(0)
            .and_then(|t| t["inbound"][0]["spi"].as_u64())
    };
    let first = spi();
    assert!(first.is_some());
    let out = charon.swanctl(&["--terminate", "--child", "c", "--timeout", "10"]);
    assert!(
        out.status.success(),
        "swanctl --terminate: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    common::within(
        "the site's tunnel gone with its CHILD SA",
        Duration::from_secs(5),
        || spi().is_none(),
    );
    let out = charon.swanctl(&["--initiate", "--child", "c", "--timeout", "15"]);
    assert!(
        out.status.success(),
        "swanctl --initiate again: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let log = charon.log();
    assert!(log.contains("CREATE_CHILD_SA request"), "{log}");
    common::within(
        "a new CHILD SA on the same IKE SA",
        Duration::from_secs(5),
        || spi().is_some_and(|s| Some(s) != first),
    );
    assert!(
        reachable(&ns["lana"], "10.2.0.2", Duration::from_secs(10)),
        "no traffic after the CHILD SA was created again: {}",
        charon.log()
    );
    assert_eq!(
        hub.json(&["show", "ike"])["counters"]["established"],
        1,
        "no new registration"
    );
}
