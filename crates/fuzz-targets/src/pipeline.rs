//! `pipeline`: the whole per-packet path of a branch site (two ports, an
//! ESP tunnel to a hub, masquerade, SNAT into the tunnel and DNAT) and of
//! its hub, over tables built from TOML with a fake link.
//!
//! The input is a sequence of steps, each advancing the clock and then
//! delivering one frame:
//!
//! * raw bytes, on the branch's LAN or WAN port;
//! * a structured frame (Ethernet to the port's MAC or broadcast, then an
//!   IPv4 packet from [`structured_ipv4`], an ARP request or an IPv6
//!   header with fuzzer bytes) on either port;
//! * a structured IPv4 packet entering the hub's LAN, sealed by the hub
//!   and delivered to the branch's WAN, optionally with one byte flipped:
//!   the branch's decapsulation sees authentic ESP with fuzzer-chosen
//!   inner packets;
//! * the branch's last WAN output delivered to the hub's WAN.
//!
//! Invariants: no panic; a forwarded packet is a valid IPv4 or IPv6
//! packet leaving by an existing port, and an IPv4 one has valid checksums
//! when the packet that caused it had; a reply is at least an Ethernet
//! header.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::sync::OnceLock;
use std::time::Duration;

use strait_dataplane::fuzzing::{Outcome, Site};
use strait_dataplane::Config;

use crate::input::{Input, InputWriter};
use crate::packets::{checksums_valid, structured_ipv4, Palette};

const BRANCH_LAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const BRANCH_WAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const HUB_LAN_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const HUB_WAN_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];
const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
const ETH_LEN: usize = 14;

/// A scratch directory for this process (tunnel state, once the engine
/// persists any), created on first use.
/// The `[engine]` section both sites share. Their SA state directory is
/// chosen by `strait_dataplane::fuzzing` (a scratch one, only read).
fn engine_section() -> String {
    "[engine]\nworkers = 1\n".to_owned()
}

const BRANCH: &str = r#"
[[interface]]
name = "lan"
addresses = ["10.1.0.1/24", "fd00:1::1/64"]
[[interface]]
name = "wan"
addresses = ["192.0.2.1/24", "fd00:2::1/64"]
mtu = 1400
[[route]]
prefix = "0.0.0.0/0"
via = ["192.0.2.254"]
[[route]]
prefix = "::/0"
via = ["fd00:2::fe"]
[[route]]
prefix = "203.0.113.0/24"
kind = "blackhole"
[[tunnel]]
name = "hub"
local = "192.0.2.1"
remote = "198.51.100.1"
prefixes = ["10.2.0.0/16"]
outbound = { spi = 4097, cipher = "aes128-gcm", key = "000102030405060708090a0b0c0d0e0f10111213" }
inbound = { spi = 8194, cipher = "aes128-gcm", key = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff10111213" }
[[nat]]
name = "into-tunnel"
kind = "snat"
source = "10.1.0.128/25"
out_interface = "hub"
addresses = ["10.1.255.1"]
[[nat]]
name = "lan-out"
kind = "masquerade"
source = "10.1.0.0/24"
out_interface = "wan"
ports = "20000-20063"
[[nat]]
name = "web"
kind = "dnat"
protocol = "udp"
public = "192.0.2.1:8080"
backends = ["10.1.0.80:80"]
[[nat]]
name = "ssh"
kind = "dnat"
protocol = "tcp"
public = "192.0.2.1:2222"
backends = ["10.1.0.80:22", "10.1.0.81:22"]
[nat_settings]
max_sessions = 64
"#;

const HUB: &str = r#"
[[interface]]
name = "lan"
addresses = ["10.2.0.1/24"]
[[interface]]
name = "wan"
addresses = ["198.51.100.1/24"]
[[route]]
prefix = "0.0.0.0/0"
via = ["198.51.100.254"]
[[tunnel]]
name = "branch"
local = "198.51.100.1"
remote = "192.0.2.1"
float = true
prefixes = ["10.1.0.0/16"]
outbound = { spi = 8194, cipher = "aes128-gcm", key = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff10111213" }
inbound = { spi = 4097, cipher = "aes128-gcm", key = "000102030405060708090a0b0c0d0e0f10111213" }
"#;

/// The two sites' configuration texts after the `engine` section (the
/// config target uses them as seeds).
pub fn config_texts(engine: &str) -> [(&'static str, String); 2] {
    [
        ("pipeline-branch", format!("{engine}{BRANCH}")),
        ("pipeline-hub", format!("{engine}{HUB}")),
    ]
}

/// The two sites' configurations, parsed once.
fn configs() -> &'static (Config, Config) {
    static CONFIGS: OnceLock<(Config, Config)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let [(_, branch), (_, hub)] = config_texts(&engine_section());
        let parse = |text: &str, name: &str| {
            Config::parse(text, name).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        (parse(&branch, "branch.toml"), parse(&hub, "hub.toml"))
    })
}

fn branch_mac(name: &str) -> [u8; 6] {
    if name == "lan" {
        BRANCH_LAN_MAC
    } else {
        BRANCH_WAN_MAC
    }
}

fn hub_mac(name: &str) -> [u8; 6] {
    if name == "lan" {
        HUB_LAN_MAC
    } else {
        HUB_WAN_MAC
    }
}

const ADDRS: &[Ipv4Addr] = &[
    Ipv4Addr::new(10, 1, 0, 2),
    Ipv4Addr::new(10, 1, 0, 130),
    Ipv4Addr::new(10, 1, 0, 80),
    Ipv4Addr::new(10, 1, 0, 1),
    Ipv4Addr::new(192, 0, 2, 1),
    Ipv4Addr::new(192, 0, 2, 254),
    Ipv4Addr::new(10, 2, 0, 2),
    Ipv4Addr::new(198, 51, 100, 1),
    Ipv4Addr::new(8, 8, 8, 8),
    Ipv4Addr::new(203, 0, 113, 5),
    Ipv4Addr::new(255, 255, 255, 255),
    Ipv4Addr::new(127, 0, 0, 1),
    Ipv4Addr::new(224, 0, 0, 1),
];
const PORTS: &[u16] = &[4500, 500, 53, 8080, 80, 2222, 22, 20000, 33434, 7];

/// Step kinds (low two bits of a step's first byte), for seeds.
pub mod op {
    /// Raw bytes on a branch port (bit 2: WAN).
    pub const RAW: u8 = 0;
    /// A structured frame on a branch port (bit 2: WAN).
    pub const FRAME: u8 = 1;
    /// A packet sealed by the hub, delivered to the branch's WAN.
    pub const FROM_HUB: u8 = 2;
    /// The branch's last WAN output, delivered to the hub's WAN.
    pub const TO_HUB: u8 = 3;
    /// Bit 2 of a step byte: the WAN port.
    pub const WAN: u8 = 4;
}

fn eth(dst: [u8; 6], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_LEN + l3.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

fn arp_request(target: Ipv4Addr, sender: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&HOST_MAC);
    a.extend_from_slice(&sender.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    a
}

/// A structured frame for a port whose MAC is `mac`; also returns its L3
/// packet, to judge what comes out.
fn structured_frame(
    input: &mut Input<'_>,
    mac: [u8; 6],
    quotable: &[Vec<u8>],
) -> (Vec<u8>, Vec<u8>) {
    let palette = Palette {
        addrs: ADDRS,
        ports: PORTS,
    };
    let sel = input.u8();
    let dst = match sel >> 6 {
        0 => [0xff; 6],
        1 => std::array::from_fn(|_| input.u8()),
        _ => mac,
    };
    match sel % 8 {
        0 => {
            let target = ADDRS[usize::from(input.u8()) % ADDRS.len()];
            let sender = ADDRS[usize::from(input.u8()) % ADDRS.len()];
            let a = arp_request(target, sender);
            (eth(dst, 0x0806, &a), Vec::new())
        }
        1 => {
            // IPv6: a header with the payload length fixed up, then bytes.
            let mut p = vec![0u8; 40];
            p[0] = 0x60;
            p[6] = [58, 17, 6, 50, 0, 44][usize::from(input.u8()) % 6];
            p[7] = input.u8();
            p[8..24].copy_from_slice(&[0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            let dsts: [[u8; 16]; 3] = [
                [0xfd, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 1],
            ];
            p[24..40].copy_from_slice(&dsts[usize::from(input.u8()) % 3]);
            p.extend_from_slice(input.chunk(200));
            let len = (p.len() - 40) as u16;
            p[4..6].copy_from_slice(&len.to_be_bytes());
            (eth(dst, 0x86dd, &p), Vec::new())
        }
        _ => {
            let p = structured_ipv4(input, &palette, quotable);
            (eth(dst, 0x0800, &p), p)
        }
    }
}

/// Checks what a site did with a frame; `cause` is the IPv4 packet it
/// carried, when the harness built one.
fn check(outcomes: &[Outcome], cause_valid: Option<bool>, ports: u16) {
    for o in outcomes {
        match o {
            Outcome::Forward { port, packet, .. } => {
                assert!(*port < ports, "forwarded to port {port} of {ports}");
                match packet.first().map(|b| b >> 4) {
                    Some(4) => {
                        let valid = checksums_valid(packet);
                        assert!(
                            valid.is_some(),
                            "forwarded an invalid IPv4 packet: {packet:02x?}"
                        );
                        if cause_valid == Some(true) {
                            assert_eq!(
                                valid,
                                Some(true),
                                "forwarded with a broken checksum: {packet:02x?}"
                            );
                        }
                    }
                    Some(6) => assert!(
                        strait_wire::Ipv6Packet::new_checked(&packet[..]).is_ok(),
                        "forwarded an invalid IPv6 packet: {packet:02x?}"
                    ),
                    _ => panic!("forwarded something that is not IP: {packet:02x?}"),
                }
            }
            Outcome::Reply(frame) => {
                assert!(frame.len() >= ETH_LEN, "reply shorter than Ethernet");
                if frame[12..14] == [8, 0] {
                    let valid = checksums_valid(&frame[ETH_LEN..]);
                    assert_eq!(
                        valid,
                        Some(true),
                        "reply with a broken IPv4 packet: {frame:02x?}"
                    );
                }
            }
            Outcome::Punt | Outcome::Service | Outcome::Consumed | Outcome::Drop(_) => {}
        }
    }
}

thread_local! {
    /// Both sites, built once per thread: building tables costs far more
    /// than a run, so each input gets fresh pipelines over the same tables.
    static SITES: RefCell<Option<(Site, Site)>> = const { RefCell::new(None) };
}

/// The target body.
pub fn run(data: &[u8]) {
    SITES.with(|sites| {
        let mut sites = sites.borrow_mut();
        let (branch, hub) = sites.get_or_insert_with(|| {
            let (branch_config, hub_config) = configs();
            (
                Site::new(branch_config, branch_mac).expect("branch tables"),
                Site::new(hub_config, hub_mac).expect("hub tables"),
            )
        });
        branch.reset();
        hub.reset();
        run_with(branch, hub, data);
    });
}

fn run_with(branch: &mut Site, hub: &mut Site, data: &[u8]) {
    let mut input = Input::new(data);
    let mut elapsed = Duration::ZERO;
    let mut quotable: Vec<Vec<u8>> = Vec::new();
    let mut last_wan_out: Option<Vec<u8>> = None;

    for _ in 0..32 {
        if input.is_empty() {
            break;
        }
        let code = input.u8();
        elapsed += match code >> 3 {
            31 => Duration::from_secs(u64::from(input.u16())),
            n => Duration::from_millis(u64::from(n) * 250),
        };
        let wan = code & op::WAN != 0;
        let port = u16::from(wan);
        let (outcomes, cause_valid) = match code & 3 {
            op::RAW => {
                let frame = input.chunk(1600);
                let l3 = frame.get(ETH_LEN..).unwrap_or_default();
                let valid = if frame.get(12..14) == Some(&[8, 0]) {
                    checksums_valid(l3)
                } else {
                    None
                };
                // The same bytes as the hub's host stack sending them:
                // sealed (a valid outer packet), or left exactly as the
                // host built them.
                let from_host = hub.host_frame(port, frame, elapsed);
                for o in &from_host {
                    if let Outcome::Reply(out) = o {
                        assert_eq!(&out[..], frame, "the host's frame was changed");
                    }
                }
                let forwarded: Vec<_> = from_host
                    .into_iter()
                    .filter(|o| matches!(o, Outcome::Forward { .. }))
                    .collect();
                check(&forwarded, None, 2);
                (branch.run_frame(port, frame, elapsed), valid)
            }
            op::FRAME => {
                let mac = if wan { BRANCH_WAN_MAC } else { BRANCH_LAN_MAC };
                let (frame, l3) = structured_frame(&mut input, mac, &quotable);
                let valid = checksums_valid(&l3);
                if quotable.len() < 8 && !l3.is_empty() {
                    quotable.push(l3);
                }
                (branch.run_frame(port, &frame, elapsed), valid)
            }
            op::FROM_HUB => {
                let palette = Palette {
                    addrs: ADDRS,
                    ports: PORTS,
                };
                let inner = structured_ipv4(&mut input, &palette, &quotable);
                let flip = input.u16();
                let sealed = hub.run_frame(0, &eth(HUB_LAN_MAC, 0x0800, &inner), elapsed);
                check(&sealed, checksums_valid(&inner), 2);
                let Some(Outcome::Forward {
                    port: 1, packet, ..
                }) = sealed.into_iter().next()
                else {
                    continue;
                };
                let mut frame = eth(BRANCH_WAN_MAC, 0x0800, &packet);
                if flip != 0 {
                    let at = usize::from(flip) % frame.len();
                    frame[at] ^= (flip >> 8) as u8 | 1;
                }
                let valid = if flip == 0 {
                    checksums_valid(&inner)
                } else {
                    None
                };
                (branch.run_frame(1, &frame, elapsed), valid)
            }
            _ => {
                let Some(packet) = last_wan_out.take() else {
                    continue;
                };
                let out = hub.run_frame(1, &eth(HUB_WAN_MAC, 0x0800, &packet), elapsed);
                check(&out, None, 2);
                continue;
            }
        };
        check(&outcomes, cause_valid, 2);
        for o in outcomes {
            if let Outcome::Forward {
                port: 1, packet, ..
            } = o
            {
                last_wan_out = Some(packet);
            }
        }
    }
}

/// Seeds: forwarding, NAT both ways, the tunnel both ways, ARP, IPv6.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    // Structured IPv4 (see packets::structured_ipv4): kind, src, dst,
    // ttl, frag, payload, then protocol fields. Palette: 0 10.1.0.2,
    // 1 10.1.0.130, 2 10.1.0.80, 4 192.0.2.1, 6 10.2.0.2, 8 8.8.8.8;
    // ports 2 53, 3 8080, 4 80, 5 2222, 9 7.
    let udp = |w: &mut InputWriter, src: u8, dst: u8, sp: u8, dp: u8| {
        w.u8(1)
            .u8(src)
            .u8(dst)
            .u8(64)
            .u8(2)
            .chunk(b"payload")
            .u8(sp)
            .u8(dp)
            .u8(0);
    };
    let frame = |w: &mut InputWriter, wan: bool| {
        w.u8(op::FRAME | if wan { op::WAN } else { 0 }).u8(0x80 | 2);
    };
    let mut seeds = Vec::new();

    let mut w = InputWriter::default();
    frame(&mut w, false);
    udp(&mut w, 0, 8, 9, 2);
    frame(&mut w, true);
    udp(&mut w, 8, 4, 2, 7);
    seeds.push(("masquerade", w.bytes));

    let mut w = InputWriter::default();
    frame(&mut w, true);
    udp(&mut w, 8, 4, 9, 3);
    frame(&mut w, true);
    w.u8(0)
        .u8(8)
        .u8(4)
        .u8(64)
        .u8(2)
        .chunk(b"")
        .u8(9)
        .u8(5)
        .u8(0x02)
        .u32(1)
        .u8(0);
    seeds.push(("dnat", w.bytes));

    let mut w = InputWriter::default();
    frame(&mut w, false);
    udp(&mut w, 0, 6, 9, 9);
    w.u8(op::TO_HUB);
    w.u8(op::FROM_HUB);
    udp(&mut w, 6, 0, 9, 9);
    w.u16(0);
    w.u8(op::FROM_HUB);
    udp(&mut w, 6, 0, 9, 9);
    w.u16(0x0130);
    seeds.push(("tunnel", w.bytes));

    let mut w = InputWriter::default();
    frame(&mut w, false);
    udp(&mut w, 1, 6, 9, 9);
    w.u8(op::TO_HUB);
    w.u8(op::FROM_HUB);
    udp(&mut w, 6, 1, 9, 9);
    w.u16(0);
    seeds.push(("tunnel-snat", w.bytes));

    let mut w = InputWriter::default();
    // TTL 1: time exceeded; then ICMP echo to us; ARP; IPv6.
    w.u8(op::FRAME)
        .u8(0x80 | 2)
        .u8(1)
        .u8(0)
        .u8(8)
        .u8(0)
        .u8(1)
        .u8(2)
        .chunk(b"x")
        .u8(9)
        .u8(9)
        .u8(0);
    w.u8(op::FRAME)
        .u8(0x80 | 2)
        .u8(3)
        .u8(0)
        .u8(3)
        .u8(64)
        .u8(2)
        .chunk(b"ping")
        .u8(2)
        .u8(9)
        .u16(1)
        .u8(0);
    w.u8(op::FRAME).u8(0).u8(3).u8(0);
    w.u8(op::FRAME)
        .u8(0x80 | 1)
        .u8(0)
        .u8(64)
        .u8(0)
        .chunk(&[0u8; 8]);
    seeds.push(("icmp-arp-v6", w.bytes));

    let mut w = InputWriter::default();
    // A big datagram to the WAN (MTU 1400): fragments, and into the tunnel.
    frame(&mut w, false);
    w.u8(1)
        .u8(0)
        .u8(8)
        .u8(64)
        .u8(2)
        .chunk(&[7u8; 1450])
        .u8(9)
        .u8(9)
        .u8(0);
    frame(&mut w, false);
    w.u8(1)
        .u8(0)
        .u8(6)
        .u8(64)
        .u8(2)
        .chunk(&[7u8; 1450])
        .u8(9)
        .u8(9)
        .u8(0);
    w.u8(op::RAW).chunk(&[0xff; 60]);
    w.u8(op::RAW | op::WAN).chunk(&[0u8; 14]);
    seeds.push(("raw", w.bytes));
    seeds
}
