//! `nat_translate`: the NAT translator in both directions.
//!
//! The first bytes choose the worker's settings (capacity, filtering,
//! masquerade port range, backend selection, hash key); the rest is a
//! sequence of steps, each advancing the clock and then one of: a raw or
//! a structured packet outbound or inbound (structured: TCP, UDP, ICMP
//! echo, ICMP errors quoting earlier packets, built from fuzzer bytes with
//! valid checksums), the reply to the last translated outbound UDP
//! datagram, an expiry pass, or a change of egress.
//!
//! Invariants: no panic; a translated packet is still a valid IPv4 packet,
//! and its checksums are valid when the input's were; the reply to a
//! translated UDP datagram comes back translated to the original sender;
//! the session count stays within capacity.

use std::net::Ipv4Addr;
use std::sync::Arc;

use strait_nat::{
    BackendSelection, DnatRule, Egress, EgressId, Endpoint, Filtering, Ipv4Cidr, NatConfig,
    NatRules, NatWorker, PortRange, Protocol, RuleId, SnatRule, SnatTarget, StaticNatRule, Verdict,
};

use crate::input::{Input, InputWriter};
use crate::packets::{
    checksums_valid, fill_l4_checksum, ipv4, structured_ipv4, tcp_segment, udp_datagram, Palette,
};

const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const WAN2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

const ADDRS: &[Ipv4Addr] = &[
    Ipv4Addr::new(10, 0, 0, 2),
    Ipv4Addr::new(10, 0, 0, 3),
    Ipv4Addr::new(10, 0, 0, 80),
    Ipv4Addr::new(10, 9, 9, 9),
    Ipv4Addr::new(172, 16, 0, 5),
    WAN,
    WAN2,
    Ipv4Addr::new(198, 51, 100, 1),
    Ipv4Addr::new(198, 51, 100, 9),
    Ipv4Addr::new(192, 0, 2, 9),
    Ipv4Addr::new(8, 8, 8, 8),
];
const PORTS: &[u16] = &[53, 80, 443, 8080, 1024, 1025, 2000, 5000, 40000];

/// Step kinds (low three bits of a step's first byte), for seeds.
pub mod op {
    /// Raw bytes, outbound.
    pub const RAW_OUT: u8 = 0;
    /// Raw bytes, inbound.
    pub const RAW_IN: u8 = 1;
    /// A structured packet, outbound.
    pub const OUT: u8 = 2;
    /// A structured packet, inbound.
    pub const IN: u8 = 3;
    /// The reply to the last translated outbound UDP datagram.
    pub const REPLY: u8 = 4;
    /// An expiry pass.
    pub const EXPIRE: u8 = 5;
    /// The last translated packet again, mutated, inbound.
    pub const MUTATED_IN: u8 = 6;
    /// Switch the egress used outbound.
    pub const EGRESS: u8 = 7;
}

fn cidr(a: [u8; 4], len: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(Ipv4Addr::from(a), len).expect("valid prefix")
}

fn worker(input: &mut Input<'_>) -> NatWorker {
    let setup = input.u8();
    let masq_ports = match setup & 3 {
        0 => PortRange::new(1024, 65535),
        1 => PortRange::new(1024, 1087),
        2 => PortRange::new(40000, 40001),
        _ => PortRange::new(1, 65535),
    };
    let selection = if setup & 64 != 0 {
        // Maglev over the first backend only, or none (every flow to
        // the rule refused as no_backend).
        let members: Vec<strait_nat::MaglevBackend> = (0..(setup >> 7))
            .map(|i| strait_nat::MaglevBackend {
                endpoint: Endpoint::new(Ipv4Addr::new(10, 0, 0, 80), 80),
                weight: 1,
                index: i as u16,
            })
            .collect();
        BackendSelection::Maglev(std::sync::Arc::new(
            strait_nat::MaglevTable::build(251, &members).expect("a valid table"),
        ))
    } else if setup & 4 == 0 {
        BackendSelection::ClientHash
    } else {
        BackendSelection::RoundRobin
    };
    let config = NatConfig {
        max_sessions: if setup & 8 == 0 { 256 } else { 4 },
        filtering: if setup & 16 == 0 {
            Filtering::AddressDependent
        } else {
            Filtering::EndpointIndependent
        },
        inbound_refresh: setup & 32 == 0,
        hash_key: u64::from(input.u32()),
        ..NatConfig::default()
    };
    let snat = vec![
        SnatRule {
            id: RuleId(1),
            source: cidr([10, 0, 0, 0], 8),
            destination: None,
            egress: None,
            target: SnatTarget::Masquerade { ports: masq_ports },
        },
        SnatRule {
            id: RuleId(2),
            source: cidr([172, 16, 0, 0], 12),
            destination: None,
            egress: Some(EgressId(1)),
            target: SnatTarget::Pool {
                addresses: vec![
                    Ipv4Addr::new(198, 51, 100, 1),
                    Ipv4Addr::new(198, 51, 100, 2),
                ],
                ports: PortRange::new(2000, 2063),
            },
        },
    ];
    let dnat = vec![
        DnatRule {
            full_nat: false,
            id: RuleId(3),
            protocol: Protocol::Udp,
            public: Endpoint::new(WAN, 8080),
            backends: vec![
                Endpoint::new(Ipv4Addr::new(10, 0, 0, 80), 80),
                Endpoint::new(Ipv4Addr::new(10, 0, 0, 81), 80),
            ],
            selection: selection.clone(),
        },
        // The TCP service is full NAT: its packets take both halves.
        DnatRule {
            full_nat: true,
            id: RuleId(4),
            protocol: Protocol::Tcp,
            public: Endpoint::new(WAN, 443),
            backends: vec![Endpoint::new(Ipv4Addr::new(10, 0, 0, 80), 443)],
            selection,
        },
    ];
    let static_nat = vec![StaticNatRule {
        id: RuleId(5),
        internal: Ipv4Addr::new(10, 9, 9, 9),
        external: Ipv4Addr::new(198, 51, 100, 9),
    }];
    let rules = NatRules::new(snat, dnat, static_nat).expect("valid rules");
    NatWorker::new(config, Arc::new(rules)).expect("valid config")
}

/// Seconds the clock moves before a step, from the step byte's top bits.
fn advance(code: u8, input: &mut Input<'_>) -> u64 {
    match code >> 3 {
        0 => 0,
        n @ 1..=28 => u64::from(n),
        29 => 121,
        30 => 7441,
        _ => u64::from(input.u16()),
    }
}

/// The UDP datagram `(src, dst)` of an IPv4 packet, when it is one.
fn udp_tuple(p: &[u8]) -> Option<(Endpoint, Endpoint)> {
    let ip = strait_wire::Ipv4Packet::new_checked(p).ok()?;
    if ip.protocol().0 != 17 || ip.is_fragment() || ip.payload().len() < 8 {
        return None;
    }
    let l4 = ip.payload();
    Some((
        Endpoint::new(ip.src_addr(), u16::from_be_bytes([l4[0], l4[1]])),
        Endpoint::new(ip.dst_addr(), u16::from_be_bytes([l4[2], l4[3]])),
    ))
}

fn check_translated(before_valid: Option<bool>, after: &[u8], what: &str) {
    let after_valid = checksums_valid(after);
    assert!(
        after_valid.is_some(),
        "{what}: translated packet no longer parses"
    );
    if before_valid == Some(true) {
        assert_eq!(
            after_valid,
            Some(true),
            "{what}: a valid checksum became invalid"
        );
    }
}

/// The answer to the translated packet `p` (UDP, TCP with fuzzer-chosen
/// flags, or an echo reply to an echo request), from where it went to
/// where it came from, with valid checksums.
fn reply_to(p: &[u8], input: &mut Input<'_>) -> Option<Vec<u8>> {
    let ip = strait_wire::Ipv4Packet::new_checked(p).ok()?;
    let (src, dst) = (ip.dst_addr(), ip.src_addr());
    let l4 = ip.payload();
    let (protocol, mut reply) = match ip.protocol().0 {
        17 if l4.len() >= 8 => {
            let sport = u16::from_be_bytes([l4[2], l4[3]]);
            let dport = u16::from_be_bytes([l4[0], l4[1]]);
            (17, udp_datagram(sport, dport, input.chunk(32)))
        }
        6 if l4.len() >= 20 => {
            let sport = u16::from_be_bytes([l4[2], l4[3]]);
            let dport = u16::from_be_bytes([l4[0], l4[1]]);
            (
                6,
                tcp_segment(sport, dport, input.u8(), input.u32(), input.chunk(32)),
            )
        }
        1 if l4.len() >= 8 && l4[0] == 8 => {
            let mut r = l4.to_vec();
            r[0] = 0;
            (1, r)
        }
        _ => return None,
    };
    fill_l4_checksum(src, dst, protocol, &mut reply);
    Some(ipv4(src, dst, protocol, 64, 0x4000, &reply))
}

/// The target body.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut nat = worker(&mut input);
    let capacity = nat.capacity();
    let palette = Palette {
        addrs: ADDRS,
        ports: PORTS,
    };
    let mut egress = Egress::new(EgressId(1), WAN);
    let mut now: u64 = 1;
    let mut history: Vec<Vec<u8>> = Vec::new();
    // The last translated outbound packet: before, after, when.
    let mut last_out: Option<(Vec<u8>, Vec<u8>, u64)> = None;
    let mut last_translated: Option<Vec<u8>> = None;
    // Sessions evicted early (a full table admitting a new flow) when
    // `last_out` was translated: an unanswered session may be one of them.
    let mut early_drops_at_out = 0;

    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        let code = input.u8();
        now += advance(code, &mut input);
        let (outbound, mut packet) = match code & 7 {
            op::RAW_OUT => (true, input.chunk(1500).to_vec()),
            op::RAW_IN => (false, input.chunk(1500).to_vec()),
            op::OUT => (true, structured_ipv4(&mut input, &palette, &history)),
            op::IN => (false, structured_ipv4(&mut input, &palette, &history)),
            op::REPLY => {
                let Some((original, translated, at)) = last_out.clone() else {
                    continue;
                };
                let Some(mut p) = reply_to(&translated, &mut input) else {
                    continue;
                };
                let before = checksums_valid(&p);
                let v = nat.translate_inbound(&mut p, now);
                // A UDP mapping holds within the UDP timeout (the session
                // was refreshed at `at`): the reply goes back to the sender,
                // unless a full table evicted the still unanswered session
                // early to admit another flow (as Linux conntrack does).
                let sender = udp_tuple(&original).map(|t| t.0);
                let evicted = nat.counters().sessions_early_dropped != early_drops_at_out;
                if let (Some(sender), true, false) = (sender, now - at < 300, evicted) {
                    assert_eq!(v, Verdict::Translated, "reply to {sender:?} refused");
                    assert_eq!(
                        udp_tuple(&p).map(|t| t.1),
                        Some(sender),
                        "reply not sent back to the sender"
                    );
                }
                if matches!(v, Verdict::Translated | Verdict::Hairpin) {
                    check_translated(before, &p, "reply");
                }
                continue;
            }
            op::EXPIRE => {
                let budget = usize::from(input.u8());
                nat.expire(now, budget);
                continue;
            }
            op::MUTATED_IN => {
                let Some(mut p) = last_translated.clone() else {
                    continue;
                };
                if !p.is_empty() {
                    let at = usize::from(input.u16()) % p.len();
                    p[at] ^= input.u8();
                }
                (false, p)
            }
            _ => {
                egress = match input.u8() % 3 {
                    0 => Egress::new(EgressId(1), WAN),
                    1 => Egress::new(EgressId(2), WAN2),
                    _ => Egress::new(EgressId(3), Ipv4Addr::from(input.u32())),
                };
                continue;
            }
        };
        let before = checksums_valid(&packet);
        let copy = packet.clone();
        // The hairpin query reads any bytes without a panic or a change.
        let _ = nat.hairpins(&packet);
        let v = if outbound {
            nat.translate_outbound(&mut packet, egress, now)
        } else {
            nat.translate_inbound(&mut packet, now)
        };
        match v {
            Verdict::Translated | Verdict::Hairpin => {
                check_translated(
                    before,
                    &packet,
                    if outbound { "outbound" } else { "inbound" },
                );
                if outbound && v == Verdict::Translated && before == Some(true) {
                    last_out = Some((copy.clone(), packet.clone(), now));
                    early_drops_at_out = nat.counters().sessions_early_dropped;
                }
                last_translated = Some(packet.clone());
            }
            Verdict::FullNat => {
                check_translated(before, &packet, "full NAT, destination");
                let half = packet.clone();
                match nat.translate_full_nat(&mut packet, egress, now) {
                    Verdict::Translated | Verdict::FullNat => {
                        check_translated(before, &packet, "full NAT, source");
                        last_translated = Some(packet.clone());
                    }
                    Verdict::NotTranslated => {
                        assert_eq!(packet, half, "an untranslated packet was changed");
                    }
                    Verdict::Hairpin | Verdict::Drop(_) => {}
                }
            }
            Verdict::NotTranslated => {
                assert_eq!(packet, copy, "an untranslated packet was changed");
            }
            Verdict::Drop(_) => {}
        }
        if history.len() < 8 {
            history.push(copy);
            if v == Verdict::Translated {
                history.push(packet);
            }
        }
        assert!(
            nat.session_count() <= capacity,
            "more sessions than capacity"
        );
    }
    let listed = nat.sessions(now).count();
    assert!(
        listed <= nat.session_count(),
        "sessions() lists more than session_count()"
    );
    let _ = nat.counters();
}

/// Seeds: UDP, TCP and ICMP flows each way, DNAT, static NAT, ICMP errors.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    // Structured packet: kind, src, dst, ttl, frag, payload, protocol fields.
    // Palette indices: 0 10.0.0.2, 2 10.0.0.80, 3 10.9.9.9, 4 172.16.0.5,
    // 5 WAN, 7 198.51.100.1, 8 198.51.100.9, 10 8.8.8.8; ports 0 53,
    // 1 80, 2 443, 3 8080, 7 5000.
    let udp = |w: &mut InputWriter, src: u8, dst: u8, sp: u8, dp: u8| {
        w.u8(1)
            .u8(src)
            .u8(dst)
            .u8(64)
            .u8(2)
            .chunk(b"hello")
            .u8(sp)
            .u8(dp)
            .u8(0);
    };
    let tcp = |w: &mut InputWriter, src: u8, dst: u8, sp: u8, dp: u8, flags: u8| {
        w.u8(0)
            .u8(src)
            .u8(dst)
            .u8(64)
            .u8(2)
            .chunk(b"")
            .u8(sp)
            .u8(dp)
            .u8(flags)
            .u32(1)
            .u8(0);
    };
    let mut seeds = Vec::new();

    let mut w = InputWriter::default();
    w.u8(0).u32(7);
    w.u8(op::OUT);
    udp(&mut w, 0, 10, 7, 0);
    w.u8(op::REPLY).chunk(b"answer");
    w.u8(op::MUTATED_IN).u16(20).u8(1);
    w.u8(op::EXPIRE | (30 << 3)).u8(10);
    w.u8(op::REPLY).chunk(b"late");
    seeds.push(("udp-masquerade", w.bytes));

    let mut w = InputWriter::default();
    w.u8(1).u32(9);
    w.u8(op::OUT);
    tcp(&mut w, 0, 10, 7, 2, 0x02);
    w.u8(op::REPLY).u8(0x12).u32(77).chunk(b"");
    w.u8(op::IN);
    tcp(&mut w, 10, 5, 2, 7, 0x12);
    w.u8(op::OUT);
    tcp(&mut w, 0, 10, 7, 2, 0x10);
    w.u8(op::OUT | (1 << 3));
    tcp(&mut w, 0, 10, 7, 2, 0x11);
    seeds.push(("tcp-handshake", w.bytes));

    let mut w = InputWriter::default();
    w.u8(4).u32(1);
    w.u8(op::IN);
    udp(&mut w, 10, 5, 7, 3);
    w.u8(op::OUT);
    udp(&mut w, 2, 10, 1, 7);
    w.u8(op::IN);
    tcp(&mut w, 10, 5, 7, 2, 0x02);
    seeds.push(("dnat", w.bytes));

    let mut w = InputWriter::default();
    w.u8(0).u32(3);
    w.u8(op::OUT);
    w.u8(3)
        .u8(3)
        .u8(10)
        .u8(64)
        .u8(2)
        .chunk(b"ping")
        .u8(2)
        .u8(7)
        .u16(1)
        .u8(0);
    w.u8(op::REPLY);
    w.u8(op::OUT);
    w.u8(3)
        .u8(0)
        .u8(10)
        .u8(64)
        .u8(2)
        .chunk(b"ping")
        .u8(2)
        .u8(7)
        .u16(2)
        .u8(0);
    w.u8(op::REPLY);
    w.u8(op::IN);
    w.u8(3)
        .u8(10)
        .u8(8)
        .u8(64)
        .u8(2)
        .chunk(b"ping")
        .u8(0)
        .u8(7)
        .u16(1)
        .u8(0);
    w.u8(op::OUT);
    udp(&mut w, 4, 10, 7, 0);
    seeds.push(("icmp-static-pool", w.bytes));

    // An outbound datagram, then an ICMP error about its translation.
    let mut w = InputWriter::default();
    w.u8(8).u32(5);
    w.u8(op::OUT);
    udp(&mut w, 0, 10, 7, 0);
    w.u8(op::IN);
    w.u8(4)
        .u8(10)
        .u8(5)
        .u8(64)
        .u8(2)
        .chunk(b"")
        .u8(3)
        .u8(3)
        .u8(1)
        .u8(3)
        .u8(0);
    w.u8(op::IN);
    w.u8(4)
        .u8(10)
        .u8(5)
        .u8(64)
        .u8(2)
        .chunk(b"")
        .u8(0)
        .u8(0)
        .u8(1)
        .u8(1)
        .u8(0);
    w.u8(op::EGRESS).u8(1);
    w.u8(op::OUT);
    udp(&mut w, 1, 10, 7, 0);
    seeds.push(("icmp-error", w.bytes));

    let mut w = InputWriter::default();
    w.u8(2).u32(0);
    w.u8(op::RAW_OUT).chunk(&[
        0x45, 0, 0, 20, 0, 0, 0x20, 0, 64, 17, 0, 0, 10, 0, 0, 2, 8, 8, 8, 8,
    ]);
    w.u8(op::RAW_IN).chunk(&[0x46, 0, 0, 28]);
    seeds.push(("raw", w.bytes));
    seeds
}
