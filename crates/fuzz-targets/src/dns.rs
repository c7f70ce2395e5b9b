//! `dns`: DNS messages from clients and upstreams through the split-DNS
//! resolver (`strait_dns::Resolver`) with zones, conditional forwarding
//! and accelerated names. An input is up to eight messages, each a kind
//! byte (0: a client query over UDP, 1: over TCP, 2: an answer to the
//! latest query sent upstream, its ID put in place so it is examined), a
//! 16-bit length and the bytes, with a second passing between them.
//!
//! Invariants: no panic; a UDP reply fits the client's payload (at most
//! 1232 bytes); a reply answers the query's ID; waiting queries stay
//! within the bound; a reply parses.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use strait_dns::{Action, Resolver, Settings, Transport, Zone, Zones, EDNS_PAYLOAD};
use strait_names::NameSet;

const UPSTREAM: &str = "192.0.2.53:53";
const CORP: &str = "192.0.2.54:53";
const MAX_PENDING: usize = 4;

fn resolver() -> Resolver<u8> {
    let zone = Zone::new(
        "teams.example".parse().expect("name"),
        [
            "*.teams.example 300 A 100.64.0.1",
            "teams.example 300 TXT \"apex\"",
            "cdn.teams.example 60 CNAME edge.cdn.example",
            "loop.teams.example 60 CNAME loop2.teams.example",
            "loop2.teams.example 60 CNAME loop.teams.example",
        ]
        .iter()
        .map(|r| r.parse().expect("record"))
        .collect(),
        30,
    )
    .expect("zone");
    let mut forward = NameSet::new();
    forward.insert(
        "*.corp.example".parse().expect("pattern"),
        vec![CORP.parse().expect("addr")],
    );
    let mut accelerate = NameSet::new();
    for p in ["*.saas.example", "*.teams.example", "edge.cdn.example"] {
        accelerate.insert(p.parse().expect("pattern"), ());
    }
    Resolver::new(Settings {
        zones: Zones::new(vec![zone]).expect("zones"),
        forward,
        upstreams: vec![UPSTREAM.parse().expect("addr")],
        accelerate,
        cache_entries: 16,
        max_pending: MAX_PENDING,
        timeout: Duration::from_secs(2),
    })
}

/// Checks a reply against the query of the client it goes to (the
/// client handle is the query's number).
fn check(action: &Action<u8>, queries: &[(Vec<u8>, Transport)]) {
    if let Action::Reply { client, bytes, .. } = action {
        let (query, transport) = &queries[usize::from(*client)];
        let transport = *transport;
        if transport == Transport::Udp {
            assert!(
                bytes.len() <= usize::from(EDNS_PAYLOAD),
                "UDP reply of {} bytes",
                bytes.len()
            );
        }
        if query.len() >= 2 {
            assert_eq!(bytes[..2], query[..2], "a reply to another ID");
        }
        assert!(
            simple_dns::Packet::parse(bytes).is_ok(),
            "a reply that does not parse: {bytes:02x?}"
        );
    }
}

/// The target body.
pub fn run(data: &[u8]) {
    let mut r = resolver();
    let start = Instant::now();
    let mut now = start;
    let mut next_id = 1u16;
    let mut last_sent: Option<(u16, SocketAddr, bool)> = None;
    let mut rest = data;
    let mut queries: Vec<(Vec<u8>, Transport)> = Vec::new();
    for _ in 0..8 {
        let [kind, a, b, tail @ ..] = rest else { break };
        let len = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        let mut ids = || {
            next_id = next_id.wrapping_mul(31).wrapping_add(7);
            next_id
        };
        let action = match kind % 3 {
            k @ (0 | 1) => {
                let transport = if k == 0 {
                    Transport::Udp
                } else {
                    Transport::Tcp
                };
                queries.push((msg.to_vec(), transport));
                let client = (queries.len() - 1) as u8;
                let a = r.query(client, msg, transport, now, &mut ids);
                if let Some(a) = &a {
                    check(a, &queries);
                }
                a
            }
            _ => {
                let Some((id, upstream, tcp)) = last_sent else {
                    continue;
                };
                let mut answer = msg.to_vec();
                if answer.len() >= 2 {
                    answer[..2].copy_from_slice(&id.to_be_bytes());
                }
                let a = r.upstream_answer(id, upstream, &answer, tcp, now);
                if let Some(a) = &a {
                    check(a, &queries);
                }
                a
            }
        };
        if let Some(Action::Query {
            id,
            upstream,
            tcp,
            bytes,
        }) = &action
        {
            assert!(
                simple_dns::Packet::parse(bytes).is_ok(),
                "an upstream query that does not parse"
            );
            last_sent = Some((*id, *upstream, *tcp));
        }
        assert!(r.pending_len() <= MAX_PENDING);
        now += Duration::from_secs(1);
        for a in r.tick(now) {
            if let Action::Query {
                id, upstream, tcp, ..
            } = a
            {
                last_sent = Some((id, upstream, tcp));
            }
        }
    }
}

fn query(id: u16, name: &str, qtype: simple_dns::TYPE, edns: bool) -> Vec<u8> {
    let mut q = simple_dns::Packet::new_query(id);
    q.set_flags(simple_dns::PacketFlag::RECURSION_DESIRED);
    q.questions.push(simple_dns::Question::new(
        simple_dns::Name::new(name).expect("name"),
        simple_dns::QTYPE::TYPE(qtype),
        simple_dns::QCLASS::CLASS(simple_dns::CLASS::IN),
        false,
    ));
    if edns {
        *q.opt_mut() = Some(simple_dns::rdata::OPT {
            opt_codes: Vec::new(),
            udp_packet_size: 4096,
            version: 0,
        });
    }
    q.build_bytes_vec().expect("query")
}

/// An upstream's answer with `n` A records for `name`.
fn answer(name: &str, n: u8, tc: bool) -> Vec<u8> {
    let q = query(0, name, simple_dns::TYPE::A, true);
    let q = simple_dns::Packet::parse(&q).expect("query");
    let mut a = simple_dns::Packet::new_reply(0);
    if tc {
        a.set_flags(simple_dns::PacketFlag::TRUNCATION);
    }
    a.questions.push(q.questions[0].clone());
    for i in 0..n {
        a.answers.push(simple_dns::ResourceRecord::new(
            simple_dns::Name::new(name).expect("name"),
            simple_dns::CLASS::IN,
            60,
            simple_dns::rdata::RData::A(simple_dns::rdata::A {
                address: u32::from_be_bytes([203, 0, 113, i]),
            }),
        ));
    }
    a.build_bytes_vec().expect("answer")
}

fn frame(kind: u8, msg: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

/// Seeds: zone answers, a forwarded query and its answer, a truncated
/// answer then the TCP one, a cache hit, malformed bytes.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use simple_dns::TYPE;
    let q = query(9, "app.saas.example", TYPE::A, true);
    vec![
        (
            "zone-wildcard",
            frame(0, &query(1, "eu.teams.example", TYPE::A, true)),
        ),
        (
            "zone-cname-out",
            [
                frame(0, &query(2, "cdn.teams.example", TYPE::A, false)),
                frame(2, &answer("edge.cdn.example", 2, false)),
            ]
            .concat(),
        ),
        (
            "zone-loop",
            frame(1, &query(3, "loop.teams.example", TYPE::A, false)),
        ),
        (
            "forward-and-cache",
            [
                frame(0, &q),
                frame(2, &answer("app.saas.example", 3, false)),
                frame(0, &q),
            ]
            .concat(),
        ),
        (
            "truncated-then-tcp",
            [
                frame(0, &q),
                frame(2, &answer("app.saas.example", 1, true)),
                frame(2, &answer("app.saas.example", 100, false)),
            ]
            .concat(),
        ),
        (
            "https-nodata",
            frame(0, &query(4, "x.saas.example", TYPE::HTTPS, false)),
        ),
        (
            "corp",
            frame(0, &query(5, "git.corp.example", TYPE::AAAA, true)),
        ),
        (
            "malformed",
            frame(0, &[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e']),
        ),
    ]
}
