//! The resolver driven with real DNS messages, as the runtime drives it.

use super::*;

const UP1: &str = "192.0.2.53:53";
const UP2: &str = "192.0.2.54:53";
const CORP: &str = "10.200.0.53:53";

fn settings() -> Settings {
    let zone = Zone::new(
        "teams.example".parse().unwrap(),
        [
            "*.teams.example 300 A 100.64.0.1",
            "teams.example 300 TXT \"apex\"",
            "cdn.teams.example 120 CNAME edge.cdn.example",
        ]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect(),
        30,
    )
    .unwrap();
    let mut forward = NameSet::new();
    for p in ["corp.example", "*.corp.example"] {
        forward.insert(p.parse().unwrap(), vec![CORP.parse().unwrap()]);
    }
    let mut accelerate = NameSet::new();
    for p in ["*.teams.example", "*.saas.example", "edge.cdn.example"] {
        accelerate.insert(p.parse().unwrap(), ());
    }
    Settings {
        zones: Zones::new(vec![zone]).unwrap(),
        forward,
        upstreams: vec![UP1.parse().unwrap(), UP2.parse().unwrap()],
        accelerate,
        cache_entries: 100,
        max_pending: 4,
        timeout: Duration::from_secs(1),
    }
}

fn query(id: u16, name: &str, qtype: TYPE, edns: bool) -> Vec<u8> {
    let mut q = Packet::new_query(id);
    q.set_flags(PacketFlag::RECURSION_DESIRED);
    q.questions.push(Question::new(
        simple_dns::Name::new(name).unwrap(),
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    if edns {
        *q.opt_mut() = Some(edns_opt(4096));
    }
    q.build_bytes_vec().unwrap()
}

fn edns_opt<'a>(size: u16) -> OPT<'a> {
    OPT {
        opt_codes: Vec::new(),
        udp_packet_size: size,
        version: 0,
    }
}

/// An upstream's answer to `q` with A records for `name`.
fn answer_to(q: &[u8], records: &[(&str, u32, &str)], tc: bool) -> Vec<u8> {
    let q = Packet::parse(q).unwrap();
    let mut a = Packet::new_reply(q.id());
    a.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if tc {
        a.set_flags(PacketFlag::TRUNCATION);
    }
    a.questions.push(q.questions[0].clone());
    for (owner, ttl, value) in records {
        let rdata = if let Ok(ip) = value.parse::<Ipv4Addr>() {
            RData::A(A {
                address: u32::from(ip),
            })
        } else {
            RData::CNAME(CNAME(simple_dns::Name::new(value).unwrap()))
        };
        a.answers.push(ResourceRecord::new(
            simple_dns::Name::new(owner).unwrap(),
            CLASS::IN,
            *ttl,
            rdata,
        ));
    }
    *a.opt_mut() = Some(edns_opt(1232));
    a.build_bytes_vec().unwrap()
}

struct Bed {
    r: Resolver<u32>,
    now: Instant,
    next_id: u16,
}

impl Bed {
    fn new() -> Bed {
        Bed {
            r: Resolver::new(settings()),
            now: Instant::now(),
            next_id: 1000,
        }
    }

    fn ask(&mut self, bytes: &[u8]) -> Option<Action<u32>> {
        let mut id = self.next_id;
        let mut ids = || {
            id = id.wrapping_add(7);
            id
        };
        let a = self.r.query(1, bytes, Transport::Udp, self.now, &mut ids);
        self.next_id = id;
        a
    }

    fn reply(a: Option<Action<u32>>) -> (Packet<'static>, Vec<Accelerated>) {
        match a {
            Some(Action::Reply {
                bytes, accelerated, ..
            }) => (
                Packet::parse(Box::leak(bytes.into_boxed_slice())).unwrap(),
                accelerated,
            ),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn sent(a: Option<Action<u32>>) -> (u16, SocketAddr, bool, Vec<u8>) {
        match a {
            Some(Action::Query {
                id,
                upstream,
                tcp,
                bytes,
            }) => (id, upstream, tcp, bytes),
            other => panic!("expected an upstream query, got {other:?}"),
        }
    }
}

fn addresses(p: &Packet<'_>) -> Vec<String> {
    p.answers
        .iter()
        .filter_map(|r| match &r.rdata {
            RData::A(a) => Some(Ipv4Addr::from(a.address).to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn private_zone_answers_are_authoritative_with_wildcards() {
    let mut b = Bed::new();
    let (p, acc) = Bed::reply(b.ask(&query(7, "EU.teams.example", TYPE::A, true)));
    assert_eq!(p.id(), 7);
    assert!(p.has_flags(PacketFlag::AUTHORITATIVE_ANSWER));
    assert_eq!(addresses(&p), ["100.64.0.1"]);
    assert_eq!(
        p.answers[0].name.to_string().to_lowercase(),
        "eu.teams.example"
    );
    assert!(p.opt().is_some(), "EDNS echoed");
    assert_eq!(
        acc.len(),
        1,
        "an accelerated name's private answer is routed too"
    );
    assert_eq!(acc[0].address, "100.64.0.1".parse::<IpAddr>().unwrap());
    // The apex is not covered by the wildcard: NODATA with the SOA.
    let (p, _) = Bed::reply(b.ask(&query(8, "teams.example", TYPE::A, false)));
    assert_eq!(p.rcode(), RCODE::NoError);
    assert!(p.answers.is_empty());
    assert!(matches!(p.name_servers[0].rdata, RData::SOA(_)));
    assert_eq!(p.name_servers[0].ttl, 30);
    assert!(p.opt().is_none(), "no OPT to a client without EDNS0");
    assert_eq!(b.r.stats().zone_answers, 2);
    assert_eq!(b.r.stats().forwarded, 0);
}

#[test]
fn other_names_are_forwarded_cached_and_routed_when_accelerated() {
    let mut b = Bed::new();
    let q = query(42, "app.saas.example", TYPE::A, true);
    let (id, up, tcp, sent) = Bed::sent(b.ask(&q));
    assert_eq!((up, tcp), (UP1.parse().unwrap(), false));
    assert_ne!(id, 42, "the upstream sees a fresh ID");
    let ans = answer_to(
        &sent,
        &[
            ("app.saas.example", 300, "app.edge.example"),
            ("app.edge.example", 20, "203.0.113.7"),
        ],
        false,
    );
    // A forged answer (other question) is ignored.
    let forged = answer_to(
        &query(id, "evil.example", TYPE::A, true),
        &[("evil.example", 60, "6.6.6.6")],
        false,
    );
    assert!(b.r.upstream_answer(id, up, &forged, false, b.now).is_none());
    // From the wrong address too.
    assert!(b
        .r
        .upstream_answer(id, UP2.parse().unwrap(), &ans, false, b.now)
        .is_none());
    assert_eq!(b.r.stats().unexpected_answers, 2);
    let (p, acc) = Bed::reply(b.r.upstream_answer(id, up, &ans, false, b.now));
    assert_eq!(p.id(), 42);
    assert_eq!(addresses(&p), ["203.0.113.7"]);
    assert_eq!(
        acc,
        vec![Accelerated {
            name: "app.saas.example".into(),
            address: "203.0.113.7".parse().unwrap(),
            ttl: 20
        }]
    );
    // Cached: answered without an upstream, TTLs aged, routed again.
    b.now += Duration::from_secs(5);
    let (p, acc) = Bed::reply(b.ask(&query(43, "app.saas.example", TYPE::A, false)));
    assert_eq!(p.id(), 43);
    assert_eq!(p.answers[1].ttl, 15);
    assert_eq!(acc[0].ttl, 15);
    assert_eq!(b.r.stats().cache_hits, 1);
    assert_eq!(b.r.stats().forwarded, 1);
    // Past the smallest TTL it is asked again.
    b.now += Duration::from_secs(20);
    Bed::sent(b.ask(&query(44, "app.saas.example", TYPE::A, false)));
}

#[test]
fn unlisted_names_are_not_routed_and_an_answer_cannot_route_an_unrelated_name() {
    let mut b = Bed::new();
    let (id, up, _, sent) = Bed::sent(b.ask(&query(1, "news.example", TYPE::A, true)));
    let ans = answer_to(
        &sent,
        &[
            ("news.example", 60, "198.51.100.1"),
            ("x.saas.example", 60, "6.6.6.6"),
        ],
        false,
    );
    let (_, acc) = Bed::reply(b.r.upstream_answer(id, up, &ans, false, b.now));
    assert!(acc.is_empty());
}

#[test]
fn a_private_cname_leaving_the_zones_is_resolved_upstream() {
    let mut b = Bed::new();
    let (id, up, _, sent) = Bed::sent(b.ask(&query(5, "cdn.teams.example", TYPE::A, true)));
    let asked = Packet::parse(&sent).unwrap();
    assert_eq!(asked.questions[0].qname.to_string(), "edge.cdn.example");
    let ans = answer_to(&sent, &[("edge.cdn.example", 60, "203.0.113.9")], false);
    let (p, acc) = Bed::reply(b.r.upstream_answer(id, up, &ans, false, b.now));
    assert_eq!(p.questions[0].qname.to_string(), "cdn.teams.example");
    assert!(matches!(p.answers[0].rdata, RData::CNAME(_)));
    assert_eq!(addresses(&p), ["203.0.113.9"]);
    assert_eq!(acc.len(), 1);
}

#[test]
fn conditional_forwarding_picks_the_suffix_upstream() {
    let mut b = Bed::new();
    let (_, up, _, _) = Bed::sent(b.ask(&query(1, "git.corp.example", TYPE::A, false)));
    assert_eq!(up, CORP.parse().unwrap());
    let (_, up, _, _) = Bed::sent(b.ask(&query(2, "corp.example", TYPE::A, false)));
    assert_eq!(up, CORP.parse().unwrap());
    let (_, up, _, _) = Bed::sent(b.ask(&query(3, "notcorp.example", TYPE::A, false)));
    assert_eq!(up, UP1.parse().unwrap());
}

#[test]
fn a_truncated_answer_is_asked_again_over_tcp() {
    let mut b = Bed::new();
    let (id, up, _, sent) = Bed::sent(b.ask(&query(9, "big.example", TYPE::A, true)));
    let tc = answer_to(&sent, &[], true);
    let (id2, up2, tcp, again) = Bed::sent(b.r.upstream_answer(id, up, &tc, false, b.now));
    assert_eq!((id2, up2, tcp), (id, up, true));
    assert_eq!(again, sent);
    let full = answer_to(&sent, &[("big.example", 60, "192.0.2.1")], false);
    // A UDP answer now is not the one awaited.
    assert!(b.r.upstream_answer(id, up, &full, false, b.now).is_none());
    let (p, _) = Bed::reply(b.r.upstream_answer(id, up, &full, true, b.now));
    assert_eq!(addresses(&p), ["192.0.2.1"]);
    assert_eq!(b.r.stats().tcp_retries, 1);
}

#[test]
fn an_answer_too_big_for_the_client_is_truncated() {
    let mut b = Bed::new();
    let (id, up, _, sent) = Bed::sent(b.ask(&query(9, "many.example", TYPE::A, false)));
    let records: Vec<(String, u32, String)> = (0..60)
        .map(|i| ("many.example".to_owned(), 60, format!("192.0.2.{i}")))
        .collect();
    let refs: Vec<(&str, u32, &str)> = records
        .iter()
        .map(|(a, t, v)| (a.as_str(), *t, v.as_str()))
        .collect();
    let ans = answer_to(&sent, &refs, false);
    assert!(ans.len() > CLASSIC_PAYLOAD);
    let (p, _) = Bed::reply(b.r.upstream_answer(id, up, &ans, false, b.now));
    assert!(p.has_flags(PacketFlag::TRUNCATION));
    assert!(p.answers.is_empty());
}

#[test]
fn timeouts_move_to_the_next_upstream_then_servfail() {
    let mut b = Bed::new();
    let (id, up, _, _) = Bed::sent(b.ask(&query(3, "slow.example", TYPE::A, false)));
    assert_eq!(up, UP1.parse().unwrap());
    assert!(b.r.tick(b.now).is_empty());
    b.now += Duration::from_secs(1);
    let mut a = b.r.tick(b.now);
    let (id2, up2, _, _) = Bed::sent(a.pop());
    assert_eq!((id2, up2), (id, UP2.parse().unwrap()));
    b.now += Duration::from_secs(1);
    let mut a = b.r.tick(b.now);
    let (p, _) = Bed::reply(a.pop());
    assert_eq!(p.rcode(), RCODE::ServerFailure);
    assert_eq!(p.id(), 3);
    assert_eq!(b.r.pending_len(), 0);
    let h = b.r.health();
    assert_eq!(h[0].1.timeouts, 1);
    assert_eq!(b.r.stats().servfail, 1);
}

#[test]
fn waiting_queries_are_bounded() {
    let mut b = Bed::new();
    for i in 0..4 {
        Bed::sent(b.ask(&query(i, &format!("n{i}.example"), TYPE::A, false)));
    }
    let (p, _) = Bed::reply(b.ask(&query(9, "n9.example", TYPE::A, false)));
    assert_eq!(p.rcode(), RCODE::ServerFailure);
}

#[test]
fn https_queries_for_accelerated_names_get_nodata() {
    let mut b = Bed::new();
    let (p, _) = Bed::reply(b.ask(&query(3, "app.saas.example", TYPE::HTTPS, false)));
    assert_eq!(p.rcode(), RCODE::NoError);
    assert!(p.answers.is_empty());
    assert_eq!(b.r.stats().svcb_refused, 1);
    // Not accelerated: forwarded.
    Bed::sent(b.ask(&query(4, "other.example", TYPE::HTTPS, false)));
}

#[test]
fn malformed_queries_get_formerr_or_nothing() {
    let mut b = Bed::new();
    let mut bad = query(77, "x.example", TYPE::A, false);
    bad.truncate(bad.len() - 3);
    let (p, _) = Bed::reply(b.ask(&bad));
    assert_eq!(p.id(), 77);
    assert_eq!(p.rcode(), RCODE::FormatError);
    assert!(b.ask(&[1, 2, 3]).is_none());
    // An answer sent as a query is dropped.
    let a = answer_to(&query(5, "x.example", TYPE::A, false), &[], false);
    assert!(b.ask(&a).is_none());
    assert_eq!(b.r.stats().malformed, 3);
}

#[test]
fn negative_answers_are_cached_for_the_soa_minimum() {
    let mut b = Bed::new();
    let (id, up, _, sent) = Bed::sent(b.ask(&query(1, "gone.example", TYPE::A, false)));
    let q = Packet::parse(&sent).unwrap();
    let mut a = Packet::new_reply(q.id());
    *a.rcode_mut() = RCODE::NameError;
    a.questions.push(q.questions[0].clone());
    a.name_servers.push(ResourceRecord::new(
        simple_dns::Name::new("example").unwrap(),
        CLASS::IN,
        900,
        RData::SOA(SOA {
            mname: simple_dns::Name::new("ns.example").unwrap(),
            rname: simple_dns::Name::new("h.example").unwrap(),
            serial: 1,
            refresh: 1,
            retry: 1,
            expire: 1,
            minimum: 40,
        }),
    ));
    let bytes = a.build_bytes_vec().unwrap();
    let (p, _) = Bed::reply(b.r.upstream_answer(id, up, &bytes, false, b.now));
    assert_eq!(p.rcode(), RCODE::NameError);
    b.now += Duration::from_secs(39);
    let (p, _) = Bed::reply(b.ask(&query(2, "gone.example", TYPE::A, false)));
    assert_eq!(p.rcode(), RCODE::NameError);
    b.now += Duration::from_secs(1);
    Bed::sent(b.ask(&query(3, "gone.example", TYPE::A, false)));
}
