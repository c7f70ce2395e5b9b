//! Interop with strongSwan: charon in one network namespace, Strait's IKE
//! core over real UDP sockets (500 and 4500) in the other, both roles, DH
//! groups 19 and 31, right and wrong keys, and rekeying (CREATE_CHILD_SA)
//! of the CHILD SA and of the IKE SA started by either end.
//!
//! charon runs as the bench runs it (`bench/src/harness/strongswan.rs`):
//! `charon-systemd` with a private `strongswan.conf` naming its plugins
//! and a per-run vici socket. This host has no kernel ESP, so CHILD SAs go
//! to the `kernel-libipsec` plugin, which only handles UDP-encapsulated ESP:
//! the connection says `encap = yes`, charon then fakes its NAT detection
//! hash (RFC 7296 §2.23 allows forcing encapsulation this way) and both
//! sides must see "NAT" and move IKE to port 4500.
//!
//! The tests need root (namespaces) and the strongSwan packages; without
//! them they fail and say what is missing.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait_esp::{InboundSa, NextHeader, OutboundSa, SaConfig, TUNNEL_HEADROOM};
use strait_ike::{
    CipherSuite, CloseReason, Config, DhGroup, Event, Identity, Ike, Output, PeerConfig, PeerEntry,
    TrafficSelector,
};
use strait_testbed::strongswan::{require_strongswan, Charon};
use strait_testbed::{require_root, Netns, Testbed};

const SWAN_ADDR: &str = "192.0.2.1";
const STRAIT_ADDR: &str = "192.0.2.2";
const SWAN_LAN: &str = "10.2.0.0/16";
const STRAIT_LAN: &str = "10.1.0.0/16";
/// How long any one run may take before the test gives up.
const RUN_LIMIT: Duration = Duration::from_secs(25);

fn ts(prefix: &str) -> TrafficSelector {
    let (a, l) = prefix.split_once('/').unwrap();
    TrafficSelector::prefix(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// One scenario of the matrix.
#[derive(Debug, Clone)]
struct Case {
    tag: &'static str,
    group: DhGroup,
    /// Who starts: Strait (`true`) or charon.
    strait_initiates: bool,
    /// Strait's identity as both sides know it.
    strait_id: Identity,
    /// The same identity in swanctl.conf syntax.
    strait_id_swan: &'static str,
    /// Whether charon's key differs from Strait's.
    wrong_psk: bool,
    ike_cipher: CipherSuite,
    esp_proposal: &'static str,
    /// charon rekeys the CHILD SA after 8 s (`rekey_time` of the child;
    /// its hard `life_time` well after, or charon's short default margin
    /// lets the hard expiry win; `rand_time` 1 s, as it would default to
    /// the whole margin).
    swan_child_rekey: bool,
    /// charon rekeys the IKE SA after 8 s (`rekey_time` of the connection,
    /// with a wide `over_time` for the same reason).
    swan_ike_rekey: bool,
    /// Strait offers PFS when it rekeys a CHILD SA.
    strait_child_pfs: bool,
}

impl Case {
    fn dh_name(&self) -> &'static str {
        match self.group {
            DhGroup::Ecp256 => "ecp256",
            DhGroup::Curve25519 => "curve25519",
        }
    }

    fn ike_name(&self) -> &'static str {
        match self.ike_cipher {
            CipherSuite::Aes128Gcm => "aes128gcm16",
            CipherSuite::Aes256Gcm => "aes256gcm16",
            CipherSuite::ChaCha20Poly1305 => "chacha20poly1305",
        }
    }
}

/// charon set up for one case: the connection and its secret.
fn start_charon(ns: &Netns, dir: &Path, case: &Case, psk_hex: &str) -> Charon {
    let swan_secret = if case.wrong_psk {
        format!("0x{}", random_hex(32))
    } else {
        format!("0x{psk_hex}")
    };
    let conf = format!(
        "connections {{\n  strait {{\n    version = 2\n    local_addrs = {SWAN_ADDR}\n    \
         remote_addrs = {STRAIT_ADDR}\n    proposals = {ike}-prfsha256-{dh}\n    encap = yes\n    \
         mobike = no\n    fragmentation = no\n    local {{\n      auth = psk\n      id = hub.example\n    }}\n    \
         remote {{\n      auth = psk\n      id = {rid}\n    }}\n    children {{\n      strait {{\n        \
         mode = tunnel\n        local_ts = {SWAN_LAN}\n        remote_ts = {STRAIT_LAN}\n        \
         esp_proposals = {esp}\n        start_action = none\n      }}\n    }}\n  }}\n}}\n\
         secrets {{\n  ike-strait {{\n    id-hub = hub.example\n    id-strait = {rid}\n    \
         secret = {swan_secret}\n  }}\n}}\n",
        ike = case.ike_name(),
        dh = case.dh_name(),
        rid = case.strait_id_swan,
        esp = case.esp_proposal,
    );
    let conf = if case.swan_ike_rekey {
        conf.replacen(
            "    mobike = no\n",
            "    mobike = no\n    rekey_time = 8s\n    over_time = 20s\n    rand_time = 1s\n",
            1,
        )
    } else {
        conf
    };
    let conf = if case.swan_child_rekey {
        conf.replacen(
            "        start_action = none\n",
            "        start_action = none\n        rekey_time = 8s\n        life_time = 30s\n        \
             rand_time = 1s\n",
            1,
        )
    } else {
        conf
    };
    Charon::start(ns, dir, &conf, false)
}

/// `swanctl --list-sas --raw`, reduced to the fields compared here.
fn charon_sas(charon: &Charon) -> SwanSas {
    let out = charon.swanctl(&["--list-sas", "--raw"]);
    assert!(out.status.success(), "swanctl --list-sas failed");
    SwanSas::parse(&String::from_utf8_lossy(&out.stdout))
}

/// What charon reports about its SAs.
#[derive(Debug, Default, PartialEq, Eq)]
struct SwanSas {
    ike_state: Option<String>,
    spi_i: Option<u64>,
    spi_r: Option<u64>,
    child_state: Option<String>,
    spi_in: Option<u32>,
    spi_out: Option<u32>,
    encr: Option<String>,
    dh: Option<String>,
    encap: bool,
}

/// Value of `key=value` in swanctl's raw output (values end at a space or
/// a brace).
fn raw_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let at = text.find(&pat)? + pat.len();
    let rest = &text[at..];
    let end = rest.find([' ', '}']).unwrap_or(rest.len());
    Some(&rest[..end])
}

impl SwanSas {
    fn parse(raw: &str) -> SwanSas {
        let hex64 = |k| raw_value(raw, k).and_then(|v| u64::from_str_radix(v, 16).ok());
        let child = raw.find("child-sas").map(|i| &raw[i..]).unwrap_or("");
        SwanSas {
            ike_state: raw_value(raw, "state").map(str::to_owned),
            spi_i: hex64("initiator-spi"),
            spi_r: hex64("responder-spi"),
            child_state: raw_value(child, "state").map(str::to_owned),
            spi_in: raw_value(child, "spi-in").and_then(|v| u32::from_str_radix(v, 16).ok()),
            spi_out: raw_value(child, "spi-out").and_then(|v| u32::from_str_radix(v, 16).ok()),
            encr: raw_value(raw, "encr-alg").map(str::to_owned),
            dh: raw_value(raw, "dh-group").map(str::to_owned),
            encap: raw_value(child, "encap") == Some("yes"),
        }
    }
}

/// Every CHILD SA charon lists: (state, spi-in, spi-out).
fn charon_children(charon: &Charon) -> Vec<(String, u32, u32)> {
    let out = charon.swanctl(&["--list-sas", "--raw"]);
    assert!(out.status.success(), "swanctl --list-sas failed");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let Some(at) = raw.find("child-sas") else {
        return Vec::new();
    };
    let mut rest = &raw[at..];
    let mut found = Vec::new();
    // Each CHILD SA is a block with name=, state=, spi-in= and spi-out=.
    while let Some(i) = rest.find(" reqid=") {
        rest = &rest[i + 1..];
        let end = rest[1..].find(" reqid=").map_or(rest.len(), |j| j + 1);
        let block = &rest[..end];
        let hex32 = |k| raw_value(block, k).and_then(|v| u32::from_str_radix(v, 16).ok());
        if let (Some(state), Some(i), Some(o)) =
            (raw_value(block, "state"), hex32("spi-in"), hex32("spi-out"))
        {
            found.push((state.to_owned(), i, o));
        }
        rest = &rest[end..];
    }
    found
}

/// Strait's side: the IKE core on two UDP sockets in the namespace,
/// driven by a loop that sleeps until a datagram or the core's wake-up.
struct Driver {
    events: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
    /// Datagrams the driver got on port 4500 that were not IKE (ESP).
    esp_rx: Arc<Mutex<Vec<Vec<u8>>>>,
    /// ESP datagrams to send from port 4500 to charon.
    esp_tx: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Calls for the driver to make on the current IKE SA.
    commands: Arc<Mutex<Vec<Command>>>,
}

/// What the test asks of Strait's side while it runs.
#[derive(Debug, Clone, Copy)]
enum Command {
    RekeyChild,
    RekeyIke,
}

impl Driver {
    fn start(ns: &Netns, case: &Case, psk: Vec<u8>) -> Driver {
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let esp_rx = Arc::new(Mutex::new(Vec::new()));
        let esp_tx = Arc::new(Mutex::new(Vec::new()));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let path = format!("/var/run/netns/{}", ns.name());
        let (ev, st, rx, tx) = (events.clone(), stop.clone(), esp_rx.clone(), esp_tx.clone());
        let cmds = commands.clone();
        let case = case.clone();
        let thread = std::thread::spawn(move || {
            strait_testbed::enter_netns(&path).expect("entering the Strait namespace");
            let io = DriverIo {
                events: &ev,
                stop: &st,
                esp_rx: &rx,
                esp_tx: &tx,
                commands: &cmds,
            };
            run_driver(&case, psk, io)
        });
        Driver {
            events,
            stop,
            thread: Some(thread),
            esp_rx,
            esp_tx,
            commands,
        }
    }

    fn command(&self, c: Command) {
        self.commands.lock().unwrap().push(c);
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Waits (bounded) until `pred` holds for the events so far.
    fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&[Event]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if pred(&self.events()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{what}: not seen within {limit:?}; events: {:#?}",
            self.events()
        );
        false
    }

    fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the driver thread shares with the test.
struct DriverIo<'a> {
    events: &'a Mutex<Vec<Event>>,
    stop: &'a AtomicBool,
    esp_rx: &'a Mutex<Vec<Vec<u8>>>,
    esp_tx: &'a Mutex<Vec<Vec<u8>>>,
    commands: &'a Mutex<Vec<Command>>,
}

fn run_driver(case: &Case, psk: Vec<u8>, io: DriverIo<'_>) -> Vec<String> {
    let DriverIo {
        events,
        stop,
        esp_rx,
        esp_tx,
        commands,
    } = io;
    let mut trace = Vec::new();
    let local500: SocketAddr = format!("{STRAIT_ADDR}:500").parse().unwrap();
    let local4500: SocketAddr = format!("{STRAIT_ADDR}:4500").parse().unwrap();
    let swan4500: SocketAddr = format!("{SWAN_ADDR}:4500").parse().unwrap();
    let s500 = UdpSocket::bind(local500).expect("binding UDP 500");
    let s4500 = UdpSocket::bind(local4500).expect("binding UDP 4500");
    for s in [&s500, &s4500] {
        s.set_nonblocking(true).unwrap();
    }
    let mut config = Config::new(case.strait_id.clone());
    config.dh_groups = vec![case.group];
    config.ike_ciphers = vec![case.ike_cipher];
    config.local_ts = vec![ts(STRAIT_LAN)];
    config.retransmit_timeout = Duration::from_millis(500);
    config.child_pfs = case.strait_child_pfs;
    let expected_id = Identity::Fqdn("hub.example".into());
    let mut ike = if case.strait_initiates {
        Ike::new(config, Box::new(|_: &Identity| None)).unwrap()
    } else {
        let psk = psk.clone();
        Ike::new(
            config,
            Box::new(move |id: &Identity| {
                (*id == expected_id).then(|| PeerEntry {
                    psk: psk.clone(),
                    remote_ts: vec![ts(SWAN_LAN)],
                    local_ts: None,
                    conflicts: Vec::new(),
                })
            }),
        )
        .unwrap()
    };
    let start = Instant::now();
    let mut pending: Vec<Output> = Vec::new();
    if case.strait_initiates {
        let (_, outs) = ike
            .initiate(
                start.elapsed(),
                PeerConfig {
                    local: local500,
                    remote: format!("{SWAN_ADDR}:500").parse().unwrap(),
                    psk,
                    remote_id: Some(Identity::Fqdn("hub.example".into())),
                    remote_ts: vec![ts(SWAN_LAN)],
                },
            )
            .unwrap();
        pending.extend(outs);
    }
    let mut buf = vec![0u8; 65536];
    let mut current = None;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < RUN_LIMIT {
        for c in commands.lock().unwrap().drain(..) {
            let Some(id) = current else {
                trace.push(format!("{c:?}: no IKE SA yet"));
                continue;
            };
            let outs = match c {
                Command::RekeyChild => ike.rekey_child(start.elapsed(), id),
                Command::RekeyIke => ike.rekey_ike(start.elapsed(), id),
            };
            pending.extend(outs.expect("a call on the current IKE SA"));
        }
        for (sock, local) in [(&s500, local500), (&s4500, local4500)] {
            while let Ok((n, src)) = sock.recv_from(&mut buf) {
                let data = &buf[..n];
                if local.port() == 4500 && (n < 4 || data[..4] != [0, 0, 0, 0]) {
                    if n > 1 {
                        esp_rx.lock().unwrap().push(data.to_vec());
                    }
                    continue;
                }
                trace.push(format!("{:?} <- {src} {n} bytes", start.elapsed()));
                pending.extend(ike.handle_datagram(start.elapsed(), src, local, data));
            }
        }
        if ike.wake_at().is_some_and(|t| t <= start.elapsed()) {
            pending.extend(ike.poll(start.elapsed()));
        }
        for o in pending.drain(..) {
            match o {
                Output::Send(d) => {
                    let sock = if d.local.port() == 4500 {
                        &s4500
                    } else {
                        &s500
                    };
                    trace.push(format!(
                        "{:?} -> {} {} bytes",
                        start.elapsed(),
                        d.remote,
                        d.bytes.len()
                    ));
                    sock.send_to(&d.bytes, d.remote)
                        .expect("sending a datagram");
                }
                Output::Event(e) => {
                    match &e {
                        Event::IkeSaEstablished { ike_sa, .. } => current = Some(*ike_sa),
                        Event::IkeSaRekeyed { new, .. } => current = Some(*new),
                        _ => {}
                    }
                    trace.push(format!("{:?} {e:?}", start.elapsed()));
                    events.lock().unwrap().push(e);
                }
            }
        }
        for p in esp_tx.lock().unwrap().drain(..) {
            s4500.send_to(&p, swan4500).expect("sending ESP");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    trace
}

fn established(ev: &[Event]) -> Option<(u64, u64, bool, Identity)> {
    ev.iter().find_map(|e| match e {
        Event::IkeSaEstablished {
            spi_i,
            spi_r,
            nat_detected,
            peer_id,
            ..
        } => Some((*spi_i, *spi_r, *nat_detected, peer_id.clone())),
        _ => None,
    })
}

struct ChildInfo {
    spi_in: u32,
    spi_out: u32,
    keys_in: Vec<u8>,
    keys_out: Vec<u8>,
    cipher: CipherSuite,
    esn: bool,
    udp_encap: bool,
    ts_local: Vec<TrafficSelector>,
    ts_remote: Vec<TrafficSelector>,
}

fn child(ev: &[Event]) -> Option<ChildInfo> {
    ev.iter().find_map(|e| match e {
        Event::ChildSaReady {
            spi_in,
            spi_out,
            keys_in,
            keys_out,
            cipher,
            esn,
            udp_encap,
            ts_local,
            ts_remote,
            ..
        } => Some(ChildInfo {
            spi_in: *spi_in,
            spi_out: *spi_out,
            keys_in: keys_in.as_bytes().to_vec(),
            keys_out: keys_out.as_bytes().to_vec(),
            cipher: *cipher,
            esn: *esn,
            udp_encap: *udp_encap,
            ts_local: ts_local.clone(),
            ts_remote: ts_remote.clone(),
        }),
        _ => None,
    })
}

fn closed(ev: &[Event]) -> Option<CloseReason> {
    ev.iter().find_map(|e| match e {
        Event::IkeSaClosed { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

/// Builds the bed: two namespaces joined by a veth, charon on one side.
fn bed(tag: &str) -> (Testbed, Netns, Netns) {
    require_root();
    require_strongswan();
    let mut tb = Testbed::new(tag);
    let swan = tb.netns("swan").unwrap();
    let strait = tb.netns("strait").unwrap();
    tb.veth((&swan, "eth0"), (&strait, "eth0")).unwrap();
    swan.addr("eth0", &format!("{SWAN_ADDR}/24")).unwrap();
    strait.addr("eth0", &format!("{STRAIT_ADDR}/24")).unwrap();
    // An address inside charon's protected prefix, so a packet coming
    // out of the tunnel has somewhere to go (and an echo reply to send).
    swan.addr("lo", "10.2.0.1/32").unwrap();
    (tb, swan, strait)
}

fn run_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("strait-ike-{tag}-{}", std::process::id()))
}

/// An ICMP echo request 10.1.0.1 → 10.2.0.1 as an inner IPv4 packet.
fn echo_request(frame: &mut [u8], at: usize) -> std::ops::Range<usize> {
    let pkt: [u8; 28] = {
        let mut p = [0u8; 28];
        p[0] = 0x45;
        p[3] = 28;
        p[8] = 64;
        p[9] = 1; // ICMP
        p[12..16].copy_from_slice(&[10, 1, 0, 1]);
        p[16..20].copy_from_slice(&[10, 2, 0, 1]);
        let sum = checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p[20] = 8; // echo request
        p[24..26].copy_from_slice(&0x5354u16.to_be_bytes());
        p[26..28].copy_from_slice(&1u16.to_be_bytes());
        let sum = checksum(&p[20..]);
        p[22..24].copy_from_slice(&sum.to_be_bytes());
        p
    };
    frame[at..at + 28].copy_from_slice(&pkt);
    at..at + 28
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one ESP-in-UDP echo request sealed with Strait's outbound keys;
/// charon (libipsec) must open it, the namespace answers, and the reply
/// comes back sealed with charon's keys, which Strait's inbound keys open.
/// This proves the CHILD SA keying material (RFC 7296 §2.17) matches in
/// both directions.
fn esp_round_trip(driver: &Driver, c: &ChildInfo) -> Result<(), String> {
    let now = Duration::ZERO;
    let mut cfg = SaConfig::new(c.spi_out, c.cipher, &c.keys_out, now);
    cfg.esn = c.esn;
    let out = OutboundSa::new(&cfg).map_err(|e| e.to_string())?;
    let mut worker = out.worker();
    let mut frame = vec![0u8; 2048];
    let inner = echo_request(&mut frame, TUNNEL_HEADROOM);
    let sealed = worker
        .seal(&mut frame, inner, now)
        .map_err(|e| e.to_string())?;
    driver
        .esp_tx
        .lock()
        .unwrap()
        .push(frame[sealed.esp.clone()].to_vec());
    let mut cfg = SaConfig::new(c.spi_in, c.cipher, &c.keys_in, now);
    cfg.esn = c.esn;
    let mut inb = InboundSa::new(&cfg).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let got: Vec<Vec<u8>> = driver.esp_rx.lock().unwrap().drain(..).collect();
        for pkt in got {
            let mut frame = pkt.clone();
            let len = frame.len();
            let opened = inb
                .open(&mut frame, 0..len, now)
                .map_err(|e| format!("charon's ESP reply did not open: {e:?}"))?;
            if opened.next_header != NextHeader::Ipv4 {
                return Err("reply is not IPv4".into());
            }
            let ip = &frame[opened.inner];
            // An echo reply (type 0) from 10.2.0.1 to 10.1.0.1.
            if ip[9] == 1 && ip[20] == 0 && ip[12..16] == [10, 2, 0, 1] {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("no ESP echo reply from charon within 5 s".into())
}

fn run_case(case: Case) {
    let (_tb, swan, strait) = bed(case.tag);
    let psk_hex = random_hex(32);
    let psk = unhex(&psk_hex);
    let charon = start_charon(&swan, &run_dir(case.tag), &case, &psk_hex);
    let driver = Driver::start(&strait, &case, psk);
    let mut initiate_out = None;
    if !case.strait_initiates {
        // Give the driver a moment to bind its sockets.
        std::thread::sleep(Duration::from_millis(200));
        initiate_out =
            Some(charon.swanctl(&["--initiate", "--child", "strait", "--timeout", "15"]));
    }
    if case.wrong_psk {
        assert!(
            driver.wait_for("IKE SA closed", RUN_LIMIT, |ev| closed(ev).is_some()),
            "Strait never gave up on the wrong key"
        );
        let ev = driver.events();
        assert_eq!(closed(&ev), Some(CloseReason::AuthenticationFailed));
        assert!(established(&ev).is_none());
        if let Some(out) = initiate_out {
            assert!(
                !out.status.success(),
                "charon's initiate succeeded with the wrong key"
            );
        }
        let sas = charon_sas(&charon);
        assert_ne!(sas.ike_state.as_deref(), Some("ESTABLISHED"), "{sas:?}");
        let log = charon.log();
        assert!(
            log.contains("AUTH_FAILED") || log.contains("AUTHENTICATION_FAILED"),
            "charon's log does not mention the refusal"
        );
        drop(driver);
        return;
    }
    if let Some(out) = &initiate_out {
        assert!(
            out.status.success(),
            "swanctl --initiate failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(
        driver.wait_for("CHILD SA", RUN_LIMIT, |ev| child(ev).is_some()),
        "no CHILD SA on Strait's side"
    );
    let ev = driver.events();
    let (spi_i, spi_r, nat, peer) = established(&ev).unwrap();
    let c = child(&ev).unwrap();
    // charon's view of the same SAs.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sas = charon_sas(&charon);
    while sas.child_state.as_deref() != Some("INSTALLED") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        sas = charon_sas(&charon);
    }
    eprintln!("{}: charon {sas:?}", case.tag);
    assert_eq!(sas.ike_state.as_deref(), Some("ESTABLISHED"));
    assert_eq!(sas.spi_i, Some(spi_i), "IKE SPIi");
    assert_eq!(sas.spi_r, Some(spi_r), "IKE SPIr");
    assert_eq!(sas.child_state.as_deref(), Some("INSTALLED"));
    assert_eq!(
        sas.spi_in,
        Some(c.spi_out),
        "charon's inbound SPI is our outbound"
    );
    assert_eq!(
        sas.spi_out,
        Some(c.spi_in),
        "charon's outbound SPI is our inbound"
    );
    assert!(sas.encap, "charon UDP-encapsulates");
    assert!(nat, "charon's forced encapsulation shows as NAT");
    assert!(c.udp_encap);
    assert_eq!(peer, Identity::Fqdn("hub.example".into()));
    assert_eq!(c.ts_local, [ts(STRAIT_LAN)]);
    assert_eq!(c.ts_remote, [ts(SWAN_LAN)]);
    let want_dh = match case.group {
        DhGroup::Ecp256 => "ECP_256",
        DhGroup::Curve25519 => "CURVE_25519",
    };
    assert_eq!(sas.dh.as_deref(), Some(want_dh));
    esp_round_trip(&driver, &c).unwrap_or_else(|e| panic!("{}: {e}", case.tag));
    let trace = driver.finish();
    eprintln!("{}: Strait datagrams\n{}", case.tag, trace.join("\n"));
    assert!(!c.esn, "libipsec has no ESN, so none was negotiated");
}

fn case(tag: &'static str, group: DhGroup, strait_initiates: bool) -> Case {
    Case {
        tag,
        group,
        strait_initiates,
        strait_id: Identity::Fqdn("vcpe-0042".into()),
        strait_id_swan: "vcpe-0042",
        wrong_psk: false,
        ike_cipher: CipherSuite::Aes256Gcm,
        esp_proposal: "aes256gcm16",
        swan_child_rekey: false,
        swan_ike_rekey: false,
        strait_child_pfs: false,
    }
}

#[test]
fn strait_initiates_to_charon_ecp256() {
    run_case(case("si-ecp", DhGroup::Ecp256, true));
}

#[test]
fn strait_initiates_to_charon_curve25519_with_key_id() {
    let mut c = case("si-x25519", DhGroup::Curve25519, true);
    c.strait_id = Identity::KeyId(b"SN-00042".to_vec());
    c.strait_id_swan = "keyid:SN-00042";
    c.ike_cipher = CipherSuite::Aes128Gcm;
    // libipsec refuses ESN ("IPsec SA: ESN not supported"): none here.
    c.esp_proposal = "aes128gcm16";
    run_case(c);
}

#[test]
fn charon_initiates_to_strait_ecp256() {
    run_case(case("ci-ecp", DhGroup::Ecp256, false));
}

#[test]
fn charon_initiates_to_strait_curve25519() {
    let mut c = case("ci-x25519", DhGroup::Curve25519, false);
    c.esp_proposal = "chacha20poly1305-noesn";
    run_case(c);
}

#[test]
fn wrong_psk_is_refused_by_charon() {
    let mut c = case("si-badkey", DhGroup::Curve25519, true);
    c.wrong_psk = true;
    run_case(c);
}

#[test]
fn wrong_psk_is_refused_by_strait() {
    let mut c = case("ci-badkey", DhGroup::Ecp256, false);
    c.wrong_psk = true;
    run_case(c);
}

// -------------------------------------------------------------------
// Rekeying (CREATE_CHILD_SA) with charon
// -------------------------------------------------------------------

fn all_children(ev: &[Event]) -> Vec<ChildInfo> {
    ev.iter()
        .filter(|e| matches!(e, Event::ChildSaReady { .. }))
        .filter_map(|e| child(std::slice::from_ref(e)))
        .collect()
}

fn deleted(ev: &[Event]) -> Vec<(u32, u32)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::ChildSaDeleted {
                spi_in, spi_out, ..
            } => Some((*spi_in, *spi_out)),
            _ => None,
        })
        .collect()
}

fn rekeyed(ev: &[Event]) -> Option<(u64, u64)> {
    ev.iter().find_map(|e| match e {
        Event::IkeSaRekeyed { spi_i, spi_r, .. } => Some((*spi_i, *spi_r)),
        _ => None,
    })
}

/// The IKE SPIs of every IKE SA charon lists.
fn charon_ike_spis(charon: &Charon) -> Vec<(u64, u64)> {
    let out = charon.swanctl(&["--list-sas", "--raw"]);
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut found = Vec::new();
    let mut rest = raw.as_str();
    while let Some(i) = rest.find(" initiator-spi=") {
        rest = &rest[i..];
        let hex64 = |k| raw_value(rest, k).and_then(|v| u64::from_str_radix(v, 16).ok());
        if let (Some(a), Some(b)) = (hex64("initiator-spi"), hex64("responder-spi")) {
            found.push((a, b));
        }
        rest = &rest[1..];
    }
    found
}

/// Polls charon (bounded) until `pred` holds for its CHILD SAs.
fn wait_charon_children(
    charon: &Charon,
    what: &str,
    pred: impl Fn(&[(String, u32, u32)]) -> bool,
) -> Vec<(String, u32, u32)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = charon_children(charon);
        if pred(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "charon: {what}; it lists {got:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Who rekeys what in a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rekey {
    /// charon, by its `rekey_time` on the CHILD SA.
    SwanChild,
    /// charon, by its `rekey_time` on the IKE SA; then Strait rekeys the
    /// CHILD SA over the new IKE SA.
    SwanIke,
    /// Strait, by `Ike::rekey_child`.
    StraitChild,
    /// Strait, by `Ike::rekey_ike`; then a CHILD rekey over the new one.
    StraitIke,
}

/// Waits for one CHILD rekey of `old` to complete on both ends and checks
/// it: Strait reports the new CHILD SA and the old one deleted, charon
/// lists exactly the new SPIs, and ESP works with the new keys.
fn check_child_rekey(tag: &str, charon: &Charon, driver: &Driver, old: &ChildInfo, n: usize) {
    let old_spis = (old.spi_in, old.spi_out);
    assert!(
        driver.wait_for("CHILD rekey", Duration::from_secs(20), |ev| {
            all_children(ev).len() > n && deleted(ev).contains(&old_spis)
        }),
        "{tag}: no CHILD rekey on Strait's side"
    );
    let ev = driver.events();
    let children = all_children(&ev);
    assert_eq!(children.len(), n + 1, "{tag}: exactly one new CHILD SA");
    let new = &children[n];
    assert_ne!((new.spi_in, new.spi_out), old_spis);
    assert_eq!(new.ts_local, [ts(STRAIT_LAN)]);
    assert_eq!(new.ts_remote, [ts(SWAN_LAN)]);
    // charon keeps a rekeyed CHILD SA's inbound half for a few seconds
    // (`delete_rekeyed_delay`), listed as DELETED: only the new one is
    // INSTALLED, and the old one is at most DELETED.
    let old_swan = (old.spi_out, old.spi_in);
    let listed = wait_charon_children(charon, "the new CHILD SA installed, the old one not", |c| {
        let installed: Vec<(u32, u32)> = c
            .iter()
            .filter(|x| x.0 == "INSTALLED")
            .map(|x| (x.1, x.2))
            .collect();
        installed == [(new.spi_out, new.spi_in)]
            && c.iter()
                .all(|x| x.0 == "INSTALLED" || (x.0 == "DELETED" && (x.1, x.2) == old_swan))
    });
    eprintln!("{tag}: charon lists {listed:x?} after the CHILD rekey");
    esp_round_trip(driver, new).unwrap_or_else(|e| panic!("{tag}: after the CHILD rekey: {e}"));
}

fn run_rekey_case(case: Case, rekey: Rekey) {
    let tag = case.tag;
    let (_tb, swan, strait) = bed(tag);
    let psk_hex = random_hex(32);
    let psk = unhex(&psk_hex);
    let charon = start_charon(&swan, &run_dir(tag), &case, &psk_hex);
    let driver = Driver::start(&strait, &case, psk);
    if !case.strait_initiates {
        std::thread::sleep(Duration::from_millis(200));
        let out = charon.swanctl(&["--initiate", "--child", "strait", "--timeout", "15"]);
        assert!(out.status.success(), "swanctl --initiate failed");
    }
    assert!(
        driver.wait_for("CHILD SA", Duration::from_secs(10), |ev| child(ev)
            .is_some()),
        "{tag}: no CHILD SA on Strait's side"
    );
    let first = child(&driver.events()).unwrap();
    wait_charon_children(&charon, "the first CHILD SA installed", |c| {
        c.iter()
            .any(|x| *x == ("INSTALLED".to_owned(), first.spi_out, first.spi_in))
    });
    let started = Instant::now();
    match rekey {
        Rekey::SwanChild => check_child_rekey(tag, &charon, &driver, &first, 1),
        Rekey::StraitChild => {
            driver.command(Command::RekeyChild);
            check_child_rekey(tag, &charon, &driver, &first, 1);
        }
        Rekey::SwanIke | Rekey::StraitIke => {
            if rekey == Rekey::StraitIke {
                driver.command(Command::RekeyIke);
            }
            assert!(
                driver.wait_for("IKE rekey", Duration::from_secs(20), |ev| rekeyed(ev)
                    .is_some()),
                "{tag}: no IKE rekey on Strait's side"
            );
            let ev = driver.events();
            let (spi_i, spi_r) = rekeyed(&ev).unwrap();
            let (old_i, old_r, _, _) = established(&ev).unwrap();
            assert_ne!((spi_i, spi_r), (old_i, old_r));
            // charon has the new IKE SA only, with the same SPIs.
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut listed = charon_ike_spis(&charon);
            while listed != [(spi_i, spi_r)] && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                listed = charon_ike_spis(&charon);
            }
            assert_eq!(listed, [(spi_i, spi_r)], "{tag}: charon's IKE SAs");
            // The CHILD SA moved over unchanged and still works.
            wait_charon_children(&charon, "the CHILD SA kept", |c| {
                c.len() == 1 && c[0] == ("INSTALLED".to_owned(), first.spi_out, first.spi_in)
            });
            let ev = driver.events();
            assert!(closed(&ev).is_none() && deleted(&ev).is_empty(), "{ev:#?}");
            esp_round_trip(&driver, &first)
                .unwrap_or_else(|e| panic!("{tag}: after the IKE rekey: {e}"));
            // A CHILD rekey over the new IKE SA.
            driver.command(Command::RekeyChild);
            check_child_rekey(tag, &charon, &driver, &first, 1);
            // Still one IKE SA, the new one.
            assert_eq!(charon_ike_spis(&charon), [(spi_i, spi_r)]);
        }
    }
    let ev = driver.events();
    assert!(closed(&ev).is_none(), "{tag}: the IKE SA stays up");
    eprintln!(
        "{tag}: rekey checked {:?} after the first CHILD SA",
        started.elapsed()
    );
    let trace = driver.finish();
    eprintln!("{tag}: Strait datagrams and events\n{}", trace.join("\n"));
}

#[test]
fn charon_rekeys_the_child_sa_of_strait_as_responder() {
    let mut c = case("ci-crk", DhGroup::Ecp256, false);
    c.swan_child_rekey = true;
    run_rekey_case(c, Rekey::SwanChild);
}

#[test]
fn charon_rekeys_the_child_sa_with_pfs_of_strait_as_initiator() {
    let mut c = case("si-crk", DhGroup::Curve25519, true);
    c.swan_child_rekey = true;
    // With a DH group in the ESP proposal charon's rekey carries a KE.
    c.esp_proposal = "aes256gcm16-curve25519";
    run_rekey_case(c, Rekey::SwanChild);
}

#[test]
fn charon_rekeys_the_ike_sa_of_strait_as_responder() {
    let mut c = case("ci-irk", DhGroup::Curve25519, false);
    c.swan_ike_rekey = true;
    run_rekey_case(c, Rekey::SwanIke);
}

#[test]
fn charon_rekeys_the_ike_sa_of_strait_as_initiator() {
    let mut c = case("si-irk", DhGroup::Ecp256, true);
    c.swan_ike_rekey = true;
    run_rekey_case(c, Rekey::SwanIke);
}

#[test]
fn strait_rekeys_the_child_sa_towards_charon() {
    run_rekey_case(case("si-src", DhGroup::Ecp256, true), Rekey::StraitChild);
}

#[test]
fn strait_rekeys_the_child_sa_with_pfs_towards_charon_as_responder() {
    let mut c = case("ci-src", DhGroup::Curve25519, false);
    c.strait_child_pfs = true;
    c.esp_proposal = "aes256gcm16-curve25519";
    run_rekey_case(c, Rekey::StraitChild);
}

#[test]
fn strait_rekeys_the_ike_sa_towards_charon() {
    run_rekey_case(case("si-sri", DhGroup::Curve25519, true), Rekey::StraitIke);
}
