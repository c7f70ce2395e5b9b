//! End-to-end: a branch vCPE and a cloud hub, both `straitd`, carry LAN
//! traffic through an ESP tunnel (AES-GCM, UDP-encapsulated) across a home
//! router that NATs like a real one (nftables masquerade).
//!
//! Topology (scripts/topologies/site-to-hub.topo):
//! lana 10.1.0.2 — branch — home (NAT) — hub — lanb 10.2.0.2
//!
//! Needs root (namespaces, veth, XDP, nftables) and iputils-ping, ethtool, nft.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strait_testbed::{require_program, require_root, Netns};

const KEY_A: &str = "000102030405060708090a0b0c0d0e0f10111213";
const KEY_B: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3";

fn branch_config(state: &Path) -> String {
    let state = state.display();
    format!(
        r#"
[engine]
workers = 1
state_dir = "{state}"
manual_keying = true

[[interface]]
name = "lan"
addresses = ["10.1.0.1/24"]

[[interface]]
name = "wan"
addresses = ["192.168.77.2/24"]

[[route]]
prefix = "0.0.0.0/0"
via = ["192.168.77.1"]

[[tunnel]]
name = "hub"
local = "192.168.77.2"
remote = "203.0.113.1"
prefixes = ["10.2.0.0/16"]
keepalive = 1
outbound = {{ spi = 4097, cipher = "aes128-gcm", key = "{KEY_A}" }}
inbound = {{ spi = 8194, cipher = "aes128-gcm", key = "{KEY_B}" }}
"#
    )
}

fn hub_config(state: &Path) -> String {
    let state = state.display();
    format!(
        r#"
[engine]
workers = 1
state_dir = "{state}"
manual_keying = true

[[interface]]
name = "wan"
addresses = ["203.0.113.1/24"]

[[interface]]
name = "lan"
addresses = ["10.2.0.1/24"]

[[tunnel]]
name = "branch"
local = "203.0.113.1"
remote = "203.0.113.2"
float = true
prefixes = ["10.1.0.0/16"]
outbound = {{ spi = 8194, cipher = "aes128-gcm", key = "{KEY_B}" }}
inbound = {{ spi = 4097, cipher = "aes128-gcm", key = "{KEY_A}" }}
"#
    )
}

mod common;
use common::{assert_exactly_once, fnv, ping, udp_receiver, Daemon};

/// A raw capture of every frame on one interface, on its own thread.
struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<Vec<u8>>>>,
}

impl Capture {
    fn start(ns: &Netns, ifname: &str) -> Capture {
        let ifindex = ns.ifindex(ifname).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns = ns.clone();
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            ns.enter(move || {
                let proto = (libc::ETH_P_ALL as u16).to_be();
                // SAFETY: plain socket calls with valid arguments.
                let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
                assert!(fd >= 0);
                // SAFETY: sockaddr_ll is plain data.
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = proto;
                sll.sll_ifindex = ifindex as i32;
                // SAFETY: sll is valid for its size.
                let rc = unsafe {
                    libc::bind(
                        fd,
                        (&sll as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    )
                };
                assert_eq!(rc, 0);
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 50_000,
                };
                // SAFETY: valid option value.
                unsafe {
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        (&tv as *const libc::timeval).cast(),
                        std::mem::size_of::<libc::timeval>() as u32,
                    )
                };
                ready_tx.send(()).unwrap();
                let mut frames = Vec::new();
                let mut buf = vec![0u8; 4096];
                while !flag.load(Ordering::Relaxed) && frames.len() < 200_000 {
                    // SAFETY: buf is valid for writes of its length.
                    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                    if n > 0 {
                        frames.push(buf[..n as usize].to_vec());
                    }
                }
                // SAFETY: fd is ours.
                unsafe { libc::close(fd) };
                frames
            })
            .unwrap()
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Capture {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

const MARKER: &[u8] = b"STRAIT-PLAINTEXT-MARKER";

/// Sends `total` bytes of patterned data (with markers) over TCP from
/// `client` to `server_addr` served in `server`; checks both hashes.
fn tcp_transfer(client: &Netns, server: &Netns, listen: &'static str, total: usize) {
    let srv = server.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        srv.enter(move || {
            let l = TcpListener::bind(listen).unwrap();
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
    let sent = client
        .enter(move || {
            let mut s =
                TcpStream::connect_timeout(&listen.parse().unwrap(), Duration::from_secs(5))
                    .unwrap();
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            let mut chunk = vec![0u8; 32768];
            let mut x = 11u32;
            let mut sent = 0;
            while sent < total {
                for b in chunk.iter_mut() {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    *b = (x >> 24) as u8;
                }
                chunk[..MARKER.len()].copy_from_slice(MARKER);
                s.write_all(&chunk).unwrap();
                fnv(&mut h, &chunk);
                sent += chunk.len();
            }
            h
        })
        .unwrap();
    let (n, h) = handle.join().unwrap();
    assert_eq!(n, total);
    assert_eq!(h, sent, "payload changed inside the tunnel");
}

#[test]
fn lan_to_lan_through_an_esp_tunnel_across_a_nat() {
    require_root();
    require_program("ping", "iputils-ping");
    require_program("nft", "nftables");
    require_program("ethtool", "ethtool");
    let (_tb, ns, dir) = common::topology_bed("site-to-hub.topo", "tunnel");
    let (lana, lanb, home) = (&ns["lana"], &ns["lanb"], &ns["home"]);
    let hub = Daemon::start(&ns["hub"], &dir, "hub", &hub_config(&dir.join("hub.state")));
    let branch = Daemon::start(
        &ns["branch"],
        &dir,
        "branch",
        &branch_config(&dir.join("branch.state")),
    );

    let capture = Capture::start(home, "wan");

    // The branch speaks first (it is behind the NAT); then both ways.
    let (ok, out) = ping(lana, &["-c", "3", "-i", "0.2", "10.2.0.2"]);
    assert!(ok, "lana -> lanb: {out}");
    let (ok, out) = ping(lanb, &["-c", "3", "-i", "0.2", "10.1.0.2"]);
    assert!(ok, "lanb -> lana: {out}");
    // The hub's own LAN address answers through the tunnel too.
    let (ok, out) = ping(lana, &["-c", "1", "10.2.0.1"]);
    assert!(ok, "lana -> hub lan address: {out}");

    // Bigger than the tunnel MTU: with DF clear the branch fragments the
    // inner packet before sealing and lanb reassembles; with DF set the
    // sender learns the tunnel MTU (RFC 1191).
    let (ok, out) = ping(
        lana,
        &[
            "-c", "2", "-i", "0.2", "-M", "dont", "-s", "1472", "10.2.0.2",
        ],
    );
    assert!(ok, "1500-byte ping, DF clear: {out}");
    let (_, out) = ping(
        lana,
        &["-c", "2", "-i", "0.2", "-M", "do", "-s", "1472", "10.2.0.2"],
    );
    assert!(
        out.contains("mtu = 1435") || out.contains("mtu=1435"),
        "1500-byte ping, DF set: {out}"
    );

    // TCP both directions, 4 MiB each, verified end to end.
    tcp_transfer(lana, lanb, "10.2.0.2:5301", 4 << 20);
    tcp_transfer(lanb, lana, "10.1.0.2:5302", 4 << 20);

    // UDP, numbered and paced: every datagram exactly once.
    const COUNT: u32 = 1000;
    let srv = lanb.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        srv.enter(move || {
            let s = udp_receiver("10.2.0.2:5303", 16 << 20);
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            tx.send(()).unwrap();
            let mut seen = vec![0u32; COUNT as usize];
            let mut buf = [0u8; 2048];
            while let Ok(n) = s.recv(&mut buf) {
                let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
                assert_eq!(&buf[4..4 + MARKER.len()], MARKER);
                assert_eq!(n, 1200);
                seen[seq as usize] += 1;
            }
            seen
        })
        .unwrap()
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    lana.enter(|| {
        let s = UdpSocket::bind("10.1.0.2:0").unwrap();
        let mut buf = [0u8; 1200];
        buf[4..4 + MARKER.len()].copy_from_slice(MARKER);
        for seq in 0..COUNT {
            buf[..4].copy_from_slice(&seq.to_be_bytes());
            s.send_to(&buf, "10.2.0.2:5303").unwrap();
            if seq % 10 == 9 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
    })
    .unwrap();
    let seen = server.join().unwrap();
    assert_exactly_once(&seen, "UDP through the tunnel");

    // Keepalives (1 s here) keep the NAT mapping warm.
    std::thread::sleep(Duration::from_millis(1500));
    let frames = capture.finish();

    // On the WAN between the home router and the hub: only UDP/4500 (and
    // ARP), never the inner plaintext.
    let mut esp = 0;
    let mut keepalives = 0;
    for f in &frames {
        assert!(
            !f.windows(MARKER.len()).any(|w| w == MARKER),
            "plaintext leaked onto the WAN"
        );
        let ethertype = u16::from_be_bytes([f[12], f[13]]);
        // ARP, and the kernel's own IPv6 multicast (ND, MLD) on the veths.
        if ethertype == 0x0806 || (ethertype == 0x86dd && f[0..2] == [0x33, 0x33]) {
            continue;
        }
        assert_eq!(
            ethertype,
            0x0800,
            "unexpected frame on the WAN: {:02x?}",
            &f[..f.len().min(64)]
        );
        let ip = &f[14..];
        assert_eq!(
            ip[9],
            17,
            "non-UDP packet on the WAN: {:02x?}",
            &ip[..ip.len().min(40)]
        );
        let ihl = usize::from(ip[0] & 0xf) * 4;
        let udp = &ip[ihl..];
        let (sport, dport) = (
            u16::from_be_bytes([udp[0], udp[1]]),
            u16::from_be_bytes([udp[2], udp[3]]),
        );
        assert!(
            sport == 4500 || dport == 4500,
            "UDP {sport}->{dport} on the WAN"
        );
        assert!(
            !f.windows(MARKER.len()).any(|w| w == MARKER),
            "plaintext leaked onto the WAN"
        );
        if udp.len() == 9 && udp[8] == 0xff {
            keepalives += 1;
        } else {
            esp += 1;
        }
    }
    assert!(esp > 1000, "only {esp} ESP packets captured");
    assert!(keepalives >= 1, "no NAT keepalive seen");

    let b = branch.json(&["show", "counters"]);
    let h = hub.json(&["show", "counters"]);
    assert!(b["wan"]["esp_sealed"].as_u64().unwrap() > 1000, "{b}");
    assert!(h["wan"]["esp_opened"].as_u64().unwrap() > 1000, "{h}");
    // Per-SA counters, summed over the workers' snapshots (500 ms).
    std::thread::sleep(Duration::from_millis(600));
    let hub_sa = hub.json(&["show", "sa"]);
    let inbound = &hub_sa[0]["inbound"][0];
    assert_eq!(inbound["spi"], 4097, "{hub_sa}");
    assert!(inbound["packets"].as_u64().unwrap() > 1000, "{hub_sa}");
    assert!(inbound["drops"].as_object().unwrap().is_empty(), "{hub_sa}");
    let branch_sa = branch.json(&["show", "sa"]);
    assert!(
        branch_sa[0]["outbound"]["packets"].as_u64().unwrap() > 1000,
        "{branch_sa}"
    );
    let hd = hub.json(&["show", "drops"]);
    assert_eq!(hd["wan"]["esp_auth_failed"], 0, "{hd}");

    cleartext_claiming_the_branch_is_refused(home, &ns["hub"], lanb, &hub);
}

/// RFC 4301 §5.2 on the real path: a packet from the branch's prefix sent
/// in clear to the hub's WAN (from the home router's side) must not reach
/// the hub's LAN; the hub counts it as a policy violation.
fn cleartext_claiming_the_branch_is_refused(
    home: &Netns,
    hub_ns: &Netns,
    lanb: &Netns,
    hub: &Daemon,
) {
    use strait_wire::{EtherType, EthernetAddress, EthernetFrame, IpProtocol, Ipv4Repr, UdpRepr};
    let (src, dst) = ("10.1.0.99".parse().unwrap(), "10.2.0.2".parse().unwrap());
    let mut frame = vec![0u8; 14 + 20 + 8 + 16];
    {
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst_addr(EthernetAddress(hub_ns.mac("wan").unwrap()));
        eth.set_src_addr(EthernetAddress(home.mac("wan").unwrap()));
        eth.set_ethertype(EtherType::IPV4);
    }
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::UDP,
        payload_len: 8 + 16,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        ident: 7,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
    }
    .emit(&mut frame[14..])
    .unwrap();
    UdpRepr {
        src_port: 5305,
        dst_port: 5304,
    }
    .emit(&mut frame[34..], 16)
    .unwrap();
    let mut udp = strait_wire::UdpPacket::new_unchecked(&mut frame[34..]);
    udp.fill_checksum_v4(src, dst);

    let srv = lanb.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        srv.enter(move || {
            let s = udp_receiver("10.2.0.2:5304", 1 << 20);
            s.set_read_timeout(Some(Duration::from_millis(700)))
                .unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 256];
            let mut got = 0;
            while s.recv(&mut buf).is_ok() {
                got += 1;
            }
            got
        })
        .unwrap()
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    home.enter(move || {
        let sock = strait_testbed::PacketSocket::open("wan").unwrap();
        for _ in 0..5 {
            sock.send(&frame).unwrap();
        }
    })
    .unwrap();
    assert_eq!(
        receiver.join().unwrap(),
        0,
        "spoofed cleartext reached lanb"
    );
    let drops = hub.json(&["show", "drops"]);
    assert!(
        drops["wan"]["esp_policy_violation"].as_u64().unwrap() >= 5,
        "{drops}"
    );
}

/// The (SPI, sequence number) of every ESP-in-UDP frame in `frames`
/// (Ethernet, IPv4, UDP/4500), in capture order, with the frame.
fn esp_frames(frames: &[Vec<u8>]) -> Vec<(u32, u32, &Vec<u8>)> {
    frames
        .iter()
        .filter_map(|f| {
            if f.len() < 14 + 20 + 8 + 8 || f[12..14] != [0x08, 0x00] || f[14 + 9] != 17 {
                return None;
            }
            let ihl = usize::from(f[14] & 0xf) * 4;
            let udp = &f[14 + ihl..];
            let (sport, dport) = (
                u16::from_be_bytes([udp[0], udp[1]]),
                u16::from_be_bytes([udp[2], udp[3]]),
            );
            // Keepalives are one byte; a zero SPI marks IKE (RFC 3948).
            if (sport != 4500 && dport != 4500) || udp.len() < 16 || udp[8..12] == [0; 4] {
                return None;
            }
            let spi = u32::from_be_bytes(udp[8..12].try_into().unwrap());
            let seq = u32::from_be_bytes(udp[12..16].try_into().unwrap());
            Some((spi, seq, f))
        })
        .collect()
}

/// Configured keys across restarts of either end (RFC 4106 §3.1): a crashed
/// and a cleanly stopped daemon both continue above every sequence number
/// they used, so no (SPI, number) appears twice on the wire and the peer
/// keeps accepting the restarted side's traffic; a restarted receiver
/// refuses what it accepted before.
#[test]
fn restarts_never_reuse_a_sequence_number_nor_black_hole_the_tunnel() {
    require_root();
    require_program("ping", "iputils-ping");
    require_program("nft", "nftables");
    require_program("ethtool", "ethtool");
    let (_tb, ns, dir) = common::topology_bed("site-to-hub.topo", "tunrs");
    let (lana, home) = (&ns["lana"], &ns["home"]);
    let mut hub = Daemon::start(&ns["hub"], &dir, "hub", &hub_config(&dir.join("hub.state")));
    let mut branch = Daemon::start(
        &ns["branch"],
        &dir,
        "branch",
        &branch_config(&dir.join("branch.state")),
    );
    let capture = Capture::start(home, "wan");
    let pings = |what: &str| {
        let (ok, out) = ping(lana, &["-c", "5", "-i", "0.2", "10.2.0.2"]);
        assert!(ok && out.contains(" 0% packet loss"), "{what}: {out}");
    };
    pings("before any restart");

    // The branch crashes: nothing is recorded at exit.
    branch.kill_hard();
    branch.spawn();
    pings("after the branch crashed");

    // The hub stops cleanly and comes back.
    hub.stop();
    hub.spawn();
    pings("after the hub restarted");

    // The branch stops cleanly too.
    branch.stop();
    branch.spawn();
    pings("after the branch restarted");

    let frames = capture.finish();
    let esp = esp_frames(&frames);
    let mut seen = std::collections::HashSet::new();
    for (spi, seq, _) in &esp {
        assert!(
            seen.insert((*spi, *seq)),
            "SPI {spi} sequence number {seq} sent twice under one key"
        );
    }
    for spi in [4097, 8194] {
        let n = esp.iter().filter(|(s, _, _)| *s == spi).count();
        assert!(n >= 20, "only {n} ESP packets with SPI {spi}");
    }

    // Replay what the branch sent before it first crashed: the restarted
    // hub still refuses it (with a fresh window it would deliver it again).
    // Far below the window, an extended sequence number is inferred in the
    // next 2^32 cycle (RFC 4303 Appendix A2.1), so it fails the ICV.
    let refused = |hub: &Daemon| {
        let d = hub.json(&["show", "drops"]);
        let n = |k: &str| d["wan"][k].as_u64().unwrap_or(0);
        n("esp_replay") + n("esp_replay_old") + n("esp_auth_failed")
    };
    let before = refused(&hub);
    let old: Vec<Vec<u8>> = esp
        .iter()
        .filter(|(spi, seq, _)| *spi == 4097 && *seq < 1 << 20)
        .map(|(_, _, f)| (*f).clone())
        .collect();
    assert!(old.len() >= 5, "{} early branch packets", old.len());
    let hub_mac = ns["hub"].mac("wan").unwrap();
    let count = old.len() as u64;
    home.enter(move || {
        let sock = strait_testbed::PacketSocket::open("wan").unwrap();
        for f in &old {
            // Frames the home router sent towards the hub.
            if f[0..6] == hub_mac {
                sock.send(f).unwrap();
            }
        }
    })
    .unwrap();
    let after = refused(&hub);
    assert!(
        after >= before + count,
        "replays after the restart: {before} -> {after} of {count} sent"
    );
}
