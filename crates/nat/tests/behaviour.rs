//! Behaviour of the translator on real packets: RFC 4787 / 5382 / 5508.

mod common;

use common::*;
use strait_nat::*;

fn client() -> Endpoint {
    ep(ip(10, 0, 0, 2), 5000)
}

#[test]
fn eim_reuses_one_mapping_for_every_destination() {
    let mut nat = masquerade_worker(NatConfig::default());
    let mut externals = Vec::new();
    for (k, dst) in [
        ep(ip(192, 0, 2, 1), 53),
        ep(ip(192, 0, 2, 2), 53),
        ep(ip(198, 18, 0, 1), 4000),
    ]
    .into_iter()
    .enumerate()
    {
        let mut p = udp(client(), dst, b"hello", true);
        assert_eq!(
            nat.translate_outbound(&mut p, wan(), k as u64),
            Verdict::Translated
        );
        assert_checksums(&p);
        assert_eq!(dst_of(&p), dst);
        externals.push(src_of(&p));
    }
    // RFC 4787 REQ-1: same external endpoint; port preserved since it was free.
    assert_eq!(externals, vec![ep(WAN, 5000); 3]);
    assert_eq!((nat.session_count(), nat.mapping_count()), (3, 1));
    // A second internal host asking for the same port gets another one.
    let mut p = udp(
        ep(ip(10, 0, 0, 3), 5000),
        ep(ip(192, 0, 2, 1), 53),
        b"x",
        true,
    );
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 3),
        Verdict::Translated
    );
    let other = src_of(&p);
    assert_eq!(other.addr, WAN);
    assert_ne!(other.port, 5000, "REQ-3: no port overloading");
    assert_eq!(nat.mapping_count(), 2);
}

#[test]
fn replies_translate_back_with_valid_checksums_and_zero_udp_checksum_stays_zero() {
    let mut nat = masquerade_worker(NatConfig::default());
    let server = ep(ip(192, 0, 2, 1), 53);
    for with_checksum in [true, false] {
        let mut out = udp(client(), server, b"query", with_checksum);
        assert_eq!(
            nat.translate_outbound(&mut out, wan(), 0),
            Verdict::Translated
        );
        assert_eq!(out[20 + 6..20 + 8] == [0, 0], !with_checksum);
        let mut back = udp(server, src_of(&out), b"answer", with_checksum);
        assert_eq!(nat.translate_inbound(&mut back, 1), Verdict::Translated);
        assert_checksums(&back);
        assert_eq!(dst_of(&back), client());
        assert_eq!(back[20 + 6..20 + 8] == [0, 0], !with_checksum);
    }
}

#[test]
fn address_dependent_filtering_admits_only_contacted_addresses() {
    let mut nat = masquerade_worker(NatConfig::default());
    let server = ep(ip(192, 0, 2, 1), 3478);
    let mut out = udp(client(), server, b"bind", true);
    nat.translate_outbound(&mut out, wan(), 0);
    let external = src_of(&out);
    // Same address, other port: admitted under address-dependent filtering.
    let mut p = udp(ep(server.addr, 9999), external, b"x", true);
    assert_eq!(nat.translate_inbound(&mut p, 1), Verdict::Translated);
    assert_eq!(dst_of(&p), client());
    // Another address: refused.
    let mut p = udp(ep(ip(192, 0, 2, 77), 3478), external, b"x", true);
    assert_eq!(
        nat.translate_inbound(&mut p, 1),
        Verdict::Drop(DropReason::Filtered)
    );
    assert_eq!(nat.counters().drops(DropReason::Filtered), 1);
}

#[test]
fn endpoint_independent_filtering_admits_anyone_to_a_mapping() {
    let config = NatConfig {
        filtering: Filtering::EndpointIndependent,
        ..NatConfig::default()
    };
    let mut nat = masquerade_worker(config);
    let mut out = udp(client(), ep(ip(192, 0, 2, 1), 3478), b"bind", true);
    nat.translate_outbound(&mut out, wan(), 0);
    let mut p = udp(ep(ip(203, 0, 113, 200), 1), src_of(&out), b"peer", true);
    assert_eq!(nat.translate_inbound(&mut p, 1), Verdict::Translated);
    assert_eq!(dst_of(&p), client());
    assert_checksums(&p);
    // No mapping at all: pass on (masquerade address is the host's own).
    let mut p = udp(ep(ip(203, 0, 113, 200), 1), ep(WAN, 22), b"ssh?", true);
    assert_eq!(nat.translate_inbound(&mut p, 1), Verdict::NotTranslated);
}

#[test]
fn pool_address_without_mapping_is_dropped() {
    let pool = SnatRule {
        id: RuleId(7),
        source: Ipv4Cidr::new(ip(10, 0, 0, 0), 8).unwrap(),
        destination: None,
        egress: None,
        target: SnatTarget::Pool {
            addresses: vec![POOL_A],
            ports: PortRange::new(1024, 65535),
        },
    };
    let mut nat = worker_with(NatConfig::default(), vec![pool], vec![], vec![]);
    let mut p = udp(ep(ip(192, 0, 2, 1), 53), ep(POOL_A, 40000), b"x", true);
    assert_eq!(
        nat.translate_inbound(&mut p, 0),
        Verdict::Drop(DropReason::NoMapping)
    );
    let mut out = udp(client(), ep(ip(192, 0, 2, 1), 53), b"x", true);
    assert_eq!(
        nat.translate_outbound(&mut out, wan(), 0),
        Verdict::Translated
    );
    assert_eq!(
        src_of(&out).addr,
        POOL_A,
        "pool address, not the interface address"
    );
}

#[test]
fn hairpin_through_a_port_forward() {
    let public = ep(WAN, 8080);
    let backend = ep(ip(10, 0, 0, 80), 80);
    let dnat = DnatRule {
        full_nat: false,
        id: RuleId(2),
        protocol: Protocol::Tcp,
        public,
        backends: vec![backend],
        selection: BackendSelection::ClientHash,
    };
    let mut nat = worker_with(
        NatConfig::default(),
        vec![masquerade(1, PortRange::new(1024, 65535))],
        vec![dnat],
        vec![],
    );
    // Inside client reaches the published address.
    let mut syn = tcp(client(), public, SYN, b"");
    assert_eq!(nat.translate_outbound(&mut syn, wan(), 0), Verdict::Hairpin);
    assert_checksums(&syn);
    let client_external = src_of(&syn);
    assert_eq!(
        client_external.addr, WAN,
        "REQ-9 a): source is the external mapping"
    );
    assert_eq!(dst_of(&syn), backend);
    // The backend answers the client's external endpoint; it hairpins back.
    let mut syn_ack = tcp(backend, client_external, SYN_ACK, b"");
    assert_eq!(
        nat.translate_outbound(&mut syn_ack, wan(), 0),
        Verdict::Hairpin
    );
    assert_checksums(&syn_ack);
    assert_eq!(src_of(&syn_ack), public);
    assert_eq!(dst_of(&syn_ack), client());
    assert_eq!(nat.counters().hairpinned, 2);
    // Only the published endpoint hairpins: another port of the same
    // address is the box's own service (nothing maps it).
    assert!(nat.hairpins(&tcp(client(), public, SYN, b"")));
    assert!(!nat.hairpins(&tcp(client(), ep(WAN, 443), SYN, b"")));
    assert!(!nat.hairpins(&udp(client(), ep(WAN, 53), b"q", true)));
}

#[test]
fn hairpin_between_two_mappings() {
    let config = NatConfig {
        filtering: Filtering::EndpointIndependent,
        ..NatConfig::default()
    };
    let mut nat = masquerade_worker(config);
    let a = ep(ip(10, 0, 0, 2), 4000);
    let b = ep(ip(10, 0, 0, 3), 4001);
    let stun = ep(ip(192, 0, 2, 1), 3478);
    let mut pa = udp(a, stun, b"a", true);
    let mut pb = udp(b, stun, b"b", true);
    nat.translate_outbound(&mut pa, wan(), 0);
    nat.translate_outbound(&mut pb, wan(), 0);
    let (xa, xb) = (src_of(&pa), src_of(&pb));
    let mut p = udp(a, xb, b"to b", true);
    assert_eq!(nat.translate_outbound(&mut p, wan(), 1), Verdict::Hairpin);
    assert_checksums(&p);
    assert_eq!((src_of(&p), dst_of(&p)), (xa, b));
    let mut reply = udp(b, xa, b"to a", true);
    assert_eq!(
        nat.translate_outbound(&mut reply, wan(), 2),
        Verdict::Hairpin
    );
    assert_eq!((src_of(&reply), dst_of(&reply)), (xb, a));
    // A mapping hairpins; a port no mapping holds does not.
    assert!(nat.hairpins(&udp(a, xb, b"to b", true)));
    assert!(!nat.hairpins(&udp(a, ep(WAN, 9), b"x", true)));
}

#[test]
fn dnat_backends_by_client_hash_and_round_robin() {
    let backends = vec![
        ep(ip(10, 0, 1, 1), 80),
        ep(ip(10, 0, 1, 2), 80),
        ep(ip(10, 0, 1, 3), 8080),
    ];
    let rule = |id, selection, port| DnatRule {
        full_nat: false,
        id: RuleId(id),
        protocol: Protocol::Tcp,
        public: ep(WAN, port),
        backends: backends.clone(),
        selection,
    };
    let mut nat = worker_with(
        NatConfig::default(),
        vec![],
        vec![
            rule(1, BackendSelection::ClientHash, 80),
            rule(2, BackendSelection::RoundRobin, 81),
        ],
        vec![],
    );
    // Client hash: one client always lands on the same backend, clients spread.
    let mut chosen = std::collections::HashSet::new();
    for c in 0..64u8 {
        let client = ep(ip(192, 0, 2, c), 40000);
        let mut first = None;
        for port in 0..3u16 {
            let mut syn = tcp(ep(client.addr, 40000 + port), ep(WAN, 80), SYN, b"");
            assert_eq!(nat.translate_inbound(&mut syn, 0), Verdict::Translated);
            assert_checksums(&syn);
            let to = dst_of(&syn);
            assert!(backends.contains(&to));
            // Hash is over the client endpoint; record what each got.
            first.get_or_insert(to);
            chosen.insert(to);
        }
    }
    assert_eq!(chosen.len(), 3, "64 clients should reach every backend");
    // Round robin cycles.
    let got: Vec<Endpoint> = (0..6u16)
        .map(|k| {
            let mut syn = tcp(ep(ip(192, 0, 2, 9), 1000 + k), ep(WAN, 81), SYN, b"");
            assert_eq!(nat.translate_inbound(&mut syn, 0), Verdict::Translated);
            dst_of(&syn)
        })
        .collect();
    assert_eq!(got[..3], backends[..]);
    assert_eq!(got[3..], backends[..]);
    // The backend's reply leaves from the public endpoint.
    let mut reply = tcp(backends[0], ep(ip(192, 0, 2, 9), 1000), SYN_ACK, b"");
    assert_eq!(
        nat.translate_outbound(&mut reply, wan(), 1),
        Verdict::Translated
    );
    assert_eq!(src_of(&reply), ep(WAN, 81));
    assert_checksums(&reply);
    // Non-SYN to a port forward without a session.
    let mut ack = tcp(ep(ip(192, 0, 2, 10), 5), ep(WAN, 80), ACK, b"");
    assert_eq!(
        nat.translate_inbound(&mut ack, 1),
        Verdict::Drop(DropReason::TcpNotSyn)
    );
}

#[test]
fn static_one_to_one_both_directions() {
    let one = StaticNatRule {
        id: RuleId(3),
        internal: ip(10, 0, 0, 9),
        external: ip(198, 51, 100, 9),
    };
    let mut nat = worker_with(
        NatConfig::default(),
        vec![masquerade(1, PortRange::new(1024, 65535))],
        vec![],
        vec![one],
    );
    let mut out = udp(ep(one.internal, 1234), ep(ip(192, 0, 2, 1), 53), b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut out, wan(), 0),
        Verdict::Translated
    );
    assert_eq!(
        src_of(&out),
        ep(one.external, 1234),
        "static beats masquerade, port kept"
    );
    let mut inbound = tcp(ep(ip(192, 0, 2, 50), 999), ep(one.external, 22), SYN, b"");
    assert_eq!(nat.translate_inbound(&mut inbound, 0), Verdict::Translated);
    assert_eq!(dst_of(&inbound), ep(one.internal, 22));
    assert_checksums(&inbound);
    let mut ping = icmp_echo(ip(192, 0, 2, 50), one.external, true, 77, 1);
    assert_eq!(nat.translate_inbound(&mut ping, 0), Verdict::Translated);
    assert_eq!(dst_of(&ping), ep(one.internal, 77));
    assert_checksums(&ping);
    let mut pong = icmp_echo(one.internal, ip(192, 0, 2, 50), false, 77, 1);
    assert_eq!(
        nat.translate_outbound(&mut pong, wan(), 0),
        Verdict::Translated
    );
    assert_eq!(src_of(&pong), ep(one.external, 77));
}

#[test]
fn icmp_echo_identifier_is_translated_both_ways() {
    let mut nat = masquerade_worker(NatConfig::default());
    // Occupy identifier 4242 with another host so the second gets a new one.
    let mut first = icmp_echo(ip(10, 0, 0, 5), ip(192, 0, 2, 1), true, 4242, 1);
    nat.translate_outbound(&mut first, wan(), 0);
    let mut req = icmp_echo(ip(10, 0, 0, 6), ip(192, 0, 2, 1), true, 4242, 1);
    assert_eq!(
        nat.translate_outbound(&mut req, wan(), 0),
        Verdict::Translated
    );
    assert_checksums(&req);
    let external = src_of(&req);
    assert_ne!(external.port, 4242);
    let mut reply = icmp_echo(ip(192, 0, 2, 1), WAN, false, external.port, 1);
    assert_eq!(nat.translate_inbound(&mut reply, 1), Verdict::Translated);
    assert_checksums(&reply);
    assert_eq!(dst_of(&reply), ep(ip(10, 0, 0, 6), 4242));
    // An unsolicited echo request to the mapping is not forwarded.
    let mut probe = icmp_echo(ip(192, 0, 2, 7), WAN, true, external.port, 2);
    assert_eq!(
        nat.translate_inbound(&mut probe, 1),
        Verdict::Drop(DropReason::NoMapping)
    );
}

fn udp_timeout_case(config: NatConfig, expect_alive_at: u64, expect_dead_at: u64) {
    let mut nat = masquerade_worker(config);
    let mut p = udp(client(), ep(ip(192, 0, 2, 1), 53), b"q", true);
    nat.translate_outbound(&mut p, wan(), 1000);
    let ext = src_of(&p);
    assert_eq!(nat.expire(1000 + expect_alive_at, usize::MAX), 0);
    assert_eq!(nat.session_count(), 1);
    assert_eq!(nat.expire(1000 + expect_dead_at, usize::MAX), 1);
    assert_eq!(
        (nat.session_count(), nat.mapping_count(), nat.ports_in_use()),
        (0, 0, 0)
    );
    assert_eq!(nat.counters().sessions_expired, 1);
    let mut late = udp(ep(ip(192, 0, 2, 1), 53), ext, b"late", true);
    assert_eq!(
        nat.translate_inbound(&mut late, 1000 + expect_dead_at),
        Verdict::NotTranslated
    );
}

#[test]
fn udp_timeout_default_and_configured() {
    udp_timeout_case(NatConfig::default(), 299, 300);
    let mut config = NatConfig::default();
    config.timeouts.udp = 120;
    udp_timeout_case(config, 119, 120);
}

#[test]
fn inbound_refresh_is_configurable_and_outbound_always_refreshes() {
    for inbound_refresh in [true, false] {
        let mut nat = masquerade_worker(NatConfig {
            inbound_refresh,
            ..NatConfig::default()
        });
        let server = ep(ip(192, 0, 2, 1), 53);
        let mut p = udp(client(), server, b"q", true);
        nat.translate_outbound(&mut p, wan(), 0);
        let ext = src_of(&p);
        let mut back = udp(server, ext, b"a", true);
        nat.translate_inbound(&mut back, 200);
        nat.expire(350, usize::MAX);
        assert_eq!(nat.session_count() == 1, inbound_refresh);
    }
}

#[test]
fn lookups_never_use_an_expired_session_even_without_expire_calls() {
    let mut nat = masquerade_worker(NatConfig::default());
    let server = ep(ip(192, 0, 2, 1), 53);
    let mut p = udp(client(), server, b"q", true);
    nat.translate_outbound(&mut p, wan(), 0);
    let mut back = udp(server, src_of(&p), b"a", true);
    assert_eq!(
        nat.translate_inbound(&mut back, 300),
        Verdict::NotTranslated
    );
    assert_eq!(nat.session_count(), 0);
}

#[test]
fn icmp_timeout_is_60_seconds() {
    let mut nat = masquerade_worker(NatConfig::default());
    let mut req = icmp_echo(ip(10, 0, 0, 6), ip(192, 0, 2, 1), true, 9, 1);
    nat.translate_outbound(&mut req, wan(), 0);
    assert_eq!(nat.expire(59, 10), 0);
    assert_eq!(nat.expire(60, 10), 1);
}

#[test]
fn tcp_states_drive_established_and_transitory_timeouts() {
    let mut nat = masquerade_worker(NatConfig::default());
    let server = ep(ip(192, 0, 2, 1), 443);
    let state = |nat: &NatWorker| nat.sessions(0).next().and_then(|s| s.tcp_state);
    let mut syn = tcp(client(), server, SYN, b"");
    nat.translate_outbound(&mut syn, wan(), 0);
    let ext = src_of(&syn);
    assert_eq!(state(&nat), Some(TcpState::SynSent));
    // Half-open: transitory 240 s.
    assert_eq!(nat.expire(239, 10), 0);
    let mut syn_ack = tcp(server, ext, SYN_ACK, b"");
    assert_eq!(
        nat.translate_inbound(&mut syn_ack, 100),
        Verdict::Translated
    );
    assert_eq!(state(&nat), Some(TcpState::SynReceived));
    let mut ack = tcp(client(), server, ACK, b"");
    nat.translate_outbound(&mut ack, wan(), 100);
    assert_eq!(state(&nat), Some(TcpState::Established));
    // Established: 7440 s.
    assert_eq!(nat.expire(100 + 7439, 10), 0);
    let mut data = tcp(server, ext, ACK, b"data");
    nat.translate_inbound(&mut data, 200);
    assert_eq!(nat.expire(200 + 7439, 10), 0);
    let mut fin = tcp(client(), server, FIN_ACK, b"");
    nat.translate_outbound(&mut fin, wan(), 300);
    assert_eq!(state(&nat), Some(TcpState::FinOutbound));
    let mut fin_back = tcp(server, ext, FIN_ACK, b"");
    nat.translate_inbound(&mut fin_back, 300);
    assert_eq!(state(&nat), Some(TcpState::TimeWait));
    assert_eq!(nat.expire(300 + 239, 10), 0);
    assert_eq!(nat.expire(300 + 240, 10), 1);
    // Without a session only an initial SYN may open one.
    let mut stray = tcp(client(), server, ACK, b"");
    assert_eq!(
        nat.translate_outbound(&mut stray, wan(), 600),
        Verdict::Drop(DropReason::TcpNotSyn)
    );
}

#[test]
fn tcp_established_timeout_expires_after_7440_seconds() {
    let mut nat = masquerade_worker(NatConfig::default());
    let server = ep(ip(192, 0, 2, 1), 443);
    let mut syn = tcp(client(), server, SYN, b"");
    nat.translate_outbound(&mut syn, wan(), 0);
    let ext = src_of(&syn);
    nat.translate_inbound(&mut tcp(server, ext, SYN_ACK, b""), 0);
    nat.translate_outbound(&mut tcp(client(), server, ACK, b""), wan(), 0);
    assert_eq!(nat.expire(7439, 10), 0);
    assert_eq!(nat.expire(7440, 10), 1);
}

/// An established connection client -> server through the worker, with
/// realistic sequence numbers; returns the external endpoint and the next
/// sequence numbers of client and server.
fn established(nat: &mut NatWorker, server: Endpoint) -> (Endpoint, u32, u32) {
    let (c, s) = (1_000_000u32, 5_000_000u32);
    let mut syn = tcp_seq(client(), server, SYN, c, 0, b"");
    nat.translate_outbound(&mut syn, wan(), 0);
    let ext = src_of(&syn);
    let mut syn_ack = tcp_seq(server, ext, SYN_ACK, s, c + 1, b"");
    assert_eq!(nat.translate_inbound(&mut syn_ack, 0), Verdict::Translated);
    let mut ack = tcp_seq(client(), server, ACK, c + 1, s + 1, b"hello");
    nat.translate_outbound(&mut ack, wan(), 0);
    (ext, c + 6, s + 1)
}

#[test]
fn rst_moves_to_transitory() {
    let mut nat = masquerade_worker(NatConfig::default());
    let server = ep(ip(192, 0, 2, 1), 443);
    let (ext, _, s) = established(&mut nat, server);
    let mut rst = tcp_seq(server, ext, RST, s, 0, b"");
    assert_eq!(nat.translate_inbound(&mut rst, 10), Verdict::Translated);
    assert_eq!(
        nat.sessions(10).next().unwrap().tcp_state,
        Some(TcpState::Reset)
    );
    assert_eq!(nat.expire(250, 10), 1);
}

#[test]
fn rst_outside_the_receive_window_is_refused_and_changes_nothing() {
    // RFC 5961 section 3: a blind attacker who knows the 4-tuple but not
    // the sequence numbers must not be able to reset the session.
    let mut nat = masquerade_worker(NatConfig::default());
    let server = ep(ip(192, 0, 2, 1), 443);
    let (ext, c, s) = established(&mut nat, server);
    let state = |nat: &NatWorker| nat.sessions(0).next().unwrap().tcp_state;
    for seq in [
        s.wrapping_add(1 << 20),
        s.wrapping_sub(1),
        s ^ 0x8000_0000,
        0,
    ] {
        let mut blind = tcp_seq(server, ext, RST, seq, 0, b"");
        assert_eq!(
            nat.translate_inbound(&mut blind, 5),
            Verdict::Drop(DropReason::TcpRstOutOfWindow),
            "seq {seq}"
        );
        assert_eq!(state(&nat), Some(TcpState::Established));
    }
    assert_eq!(nat.counters().drops(DropReason::TcpRstOutOfWindow), 4);
    // Inside the client's advertised window (64 000 bytes past what it
    // acknowledged) it is accepted (RFC 5961 would challenge it; the
    // endpoint still judges it).
    let mut near = tcp_seq(server, ext, RST | ACK, s + 30_000, c, b"");
    assert_eq!(nat.translate_inbound(&mut near, 6), Verdict::Translated);
    assert_eq!(state(&nat), Some(TcpState::Reset));
}

#[test]
fn rst_answering_a_syn_must_acknowledge_it() {
    // RFC 793 section 3.9, SYN-SENT: a reset is acceptable if its ACK
    // acknowledges the SYN.
    let mut nat = masquerade_worker(NatConfig::default());
    let server = ep(ip(192, 0, 2, 1), 443);
    let mut syn = tcp_seq(client(), server, SYN, 77, 0, b"");
    nat.translate_outbound(&mut syn, wan(), 0);
    let ext = src_of(&syn);
    let mut wrong = tcp_seq(server, ext, RST | ACK, 0, 12345, b"");
    assert_eq!(
        nat.translate_inbound(&mut wrong, 0),
        Verdict::Drop(DropReason::TcpRstOutOfWindow)
    );
    let mut refused = tcp_seq(server, ext, RST | ACK, 0, 78, b"");
    assert_eq!(nat.translate_inbound(&mut refused, 0), Verdict::Translated);
    assert_eq!(
        nat.sessions(0).next().unwrap().tcp_state,
        Some(TcpState::Reset)
    );
}

#[test]
fn icmp_error_from_outside_rewrites_quoted_packet() {
    let mut nat = masquerade_worker(NatConfig::default());
    let server = ep(ip(192, 0, 2, 1), 33434);
    for (udp_checksum, quote_all) in [(true, true), (false, true), (true, false)] {
        let src = ep(
            ip(10, 0, 0, 2),
            6000 + u16::from(quote_all) + 2 * u16::from(udp_checksum),
        );
        let mut out = udp(src, server, b"traceroute probe", udp_checksum);
        nat.translate_outbound(&mut out, wan(), 0);
        let router = ip(198, 18, 0, 1);
        let quote_len = if quote_all { out.len() } else { 28 };
        let mut err = icmp_error(router, WAN, 11, 0, &out, quote_len);
        assert_eq!(nat.translate_inbound(&mut err, 1), Verdict::Translated);
        assert_checksums(&err);
        assert_eq!(dst_of(&err).addr, src.addr, "REQ-4 c) outer destination");
        let quoted = &err[28..];
        assert_eq!(src_of(quoted), src, "quoted source reverted");
        assert_eq!(dst_of(quoted), server);
        if quote_all {
            assert_quoted_transport_checksum(&err);
        }
    }
    assert_eq!(nat.counters().icmp_errors_translated, 3);
}

#[test]
fn icmp_error_about_tcp_and_echo() {
    let mut nat = masquerade_worker(NatConfig::default());
    let server = ep(ip(192, 0, 2, 1), 443);
    let mut syn = tcp(client(), server, SYN, b"");
    nat.translate_outbound(&mut syn, wan(), 0);
    let mut err = icmp_error(server.addr, WAN, 3, 3, &syn, syn.len());
    assert_eq!(nat.translate_inbound(&mut err, 1), Verdict::Translated);
    assert_checksums(&err);
    assert_quoted_transport_checksum(&err);
    assert_eq!(src_of(&err[28..]), client());

    let mut ping = icmp_echo(ip(10, 0, 0, 6), ip(192, 0, 2, 99), true, 7, 1);
    nat.translate_outbound(&mut ping, wan(), 0);
    let mut err = icmp_error(ip(198, 18, 0, 1), WAN, 3, 1, &ping, ping.len());
    assert_eq!(nat.translate_inbound(&mut err, 1), Verdict::Translated);
    assert_checksums(&err);
    assert_quoted_transport_checksum(&err);
    assert_eq!(src_of(&err[28..]), ep(ip(10, 0, 0, 6), 7));
}

#[test]
fn icmp_error_from_inside_hides_internal_sender() {
    let dnat = DnatRule {
        full_nat: false,
        id: RuleId(2),
        protocol: Protocol::Udp,
        public: ep(WAN, 5353),
        backends: vec![ep(ip(10, 0, 0, 53), 53)],
        selection: BackendSelection::ClientHash,
    };
    let mut nat = worker_with(
        NatConfig::default(),
        vec![masquerade(1, PortRange::new(1024, 65535))],
        vec![dnat],
        vec![],
    );
    let remote = ep(ip(192, 0, 2, 8), 777);
    let mut query = udp(remote, ep(WAN, 5353), b"query", true);
    assert_eq!(nat.translate_inbound(&mut query, 0), Verdict::Translated);
    // The backend answers "port unreachable" about the translated query.
    let mut err = icmp_error(ip(10, 0, 0, 53), remote.addr, 3, 3, &query, query.len());
    assert_eq!(
        nat.translate_outbound(&mut err, wan(), 1),
        Verdict::Translated
    );
    assert_checksums(&err);
    assert_quoted_transport_checksum(&err);
    assert_eq!(src_of(&err).addr, WAN, "REQ-5 c) outer source is public");
    assert_eq!(dst_of(&err[28..]), ep(WAN, 5353));
    assert_eq!(src_of(&err[28..]), remote);
}

#[test]
fn spoofed_and_broken_icmp_errors_are_dropped() {
    let one = StaticNatRule {
        id: RuleId(3),
        internal: ip(10, 0, 0, 9),
        external: ip(198, 51, 100, 9),
    };
    let mut nat = worker_with(
        NatConfig::default(),
        vec![masquerade(1, PortRange::new(1024, 65535))],
        vec![],
        vec![one],
    );
    let mut out = udp(client(), ep(ip(192, 0, 2, 1), 53), b"q", true);
    nat.translate_outbound(&mut out, wan(), 0);
    // A forged error quoting a flow that was never translated: to a
    // translated address it is dropped; to the masquerade (host's own)
    // address it is left to the host stack.
    let forged = udp(ep(one.external, 1), ep(ip(192, 0, 2, 1), 53), b"q", true);
    let mut err = icmp_error(ip(192, 0, 2, 1), one.external, 3, 3, &forged, forged.len());
    assert_eq!(
        nat.translate_inbound(&mut err, 1),
        Verdict::Drop(DropReason::IcmpErrorNoSession)
    );
    let forged = udp(ep(WAN, 1), ep(ip(192, 0, 2, 1), 53), b"q", true);
    let mut err = icmp_error(ip(192, 0, 2, 1), WAN, 3, 3, &forged, forged.len());
    assert_eq!(nat.translate_inbound(&mut err, 1), Verdict::NotTranslated);
    // From the inside, about a flow with no session: dropped.
    let inbound_never_seen = udp(ep(ip(192, 0, 2, 1), 54), client(), b"q", true);
    let mut err = icmp_error(
        client().addr,
        ip(192, 0, 2, 1),
        3,
        3,
        &inbound_never_seen,
        48,
    );
    assert_eq!(
        nat.translate_outbound(&mut err, wan(), 1),
        Verdict::Drop(DropReason::IcmpErrorNoSession)
    );
    // Bad ICMP checksum.
    let mut err = icmp_error(ip(198, 18, 0, 1), WAN, 11, 0, &out, out.len());
    err[22] ^= 0x55;
    assert_eq!(
        nat.translate_inbound(&mut err, 1),
        Verdict::Drop(DropReason::IcmpErrorChecksum)
    );
    // Error about an error.
    let inner = icmp_error(ip(1, 1, 1, 1), ip(2, 2, 2, 2), 3, 3, &out, 28);
    let mut err = icmp_error(ip(198, 18, 0, 1), WAN, 11, 0, &inner, 56);
    assert_eq!(
        nat.translate_inbound(&mut err, 1),
        Verdict::Drop(DropReason::IcmpErrorMalformed)
    );
}

#[test]
fn pool_exhaustion_drops_new_flows_and_keeps_old_ones() {
    let mut nat = worker_with(
        NatConfig::default(),
        vec![masquerade(1, PortRange::new(2000, 2001))],
        vec![],
        vec![],
    );
    let server = ep(ip(192, 0, 2, 1), 53);
    let mut externals = Vec::new();
    for k in 0..2u8 {
        let mut p = udp(ep(ip(10, 0, 0, 10 + k), 5000), server, b"q", true);
        assert_eq!(
            nat.translate_outbound(&mut p, wan(), 0),
            Verdict::Translated
        );
        externals.push(src_of(&p));
    }
    let mut p = udp(ep(ip(10, 0, 0, 12), 5000), server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 0),
        Verdict::Drop(DropReason::NatExhausted)
    );
    assert_eq!(nat.counters().drops(DropReason::NatExhausted), 1);
    // Existing flows still work both ways.
    let mut p = udp(ep(ip(10, 0, 0, 10), 5000), server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 1),
        Verdict::Translated
    );
    let mut back = udp(server, externals[1], b"a", true);
    assert_eq!(nat.translate_inbound(&mut back, 1), Verdict::Translated);
    // After expiry the ports cool first (RFC 6888 REQ-8), then come back.
    nat.expire(400, usize::MAX);
    let mut p = udp(ep(ip(10, 0, 0, 12), 5000), server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 400),
        Verdict::Drop(DropReason::NatExhausted)
    );
    let mut p = udp(ep(ip(10, 0, 0, 12), 5000), server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 600),
        Verdict::Translated
    );
}

#[test]
fn full_session_table_drops_new_flows() {
    let config = NatConfig {
        max_sessions: 4,
        ..NatConfig::default()
    };
    let mut nat = masquerade_worker(config);
    for k in 0..4u16 {
        let server = ep(ip(192, 0, 2, 1), 100 + k);
        let mut p = udp(client(), server, b"q", true);
        assert_eq!(
            nat.translate_outbound(&mut p, wan(), 0),
            Verdict::Translated
        );
        // Every session answered: none may be dropped early.
        let mut back = udp(server, src_of(&p), b"a", true);
        assert_eq!(nat.translate_inbound(&mut back, 0), Verdict::Translated);
    }
    let mut p = udp(client(), ep(ip(192, 0, 2, 1), 200), b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 10),
        Verdict::Drop(DropReason::NatExhausted)
    );
    let mut p = udp(client(), ep(ip(192, 0, 2, 1), 100), b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 10),
        Verdict::Translated
    );
    // Once the oldest has expired, a new flow reclaims its slot on the spot.
    let mut p = udp(client(), ep(ip(192, 0, 2, 1), 200), b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 300),
        Verdict::Translated
    );
    assert_eq!(nat.counters().sessions_early_dropped, 0);
}

#[test]
fn a_full_table_drops_the_oldest_unanswered_session_for_a_new_flow() {
    // Like Linux conntrack's early drop: a flood of unanswered SYNs or
    // datagrams cannot lock answered flows out, nor new flows.
    let config = NatConfig {
        max_sessions: 4,
        ..NatConfig::default()
    };
    let mut nat = masquerade_worker(config);
    let server = |k: u16| ep(ip(192, 0, 2, 1), 100 + k);
    // 0: answered UDP; 1: an unanswered SYN; 2: unanswered UDP; 3: answered.
    let mut p = udp(client(), server(0), b"q", true);
    nat.translate_outbound(&mut p, wan(), 0);
    nat.translate_inbound(&mut udp(server(0), src_of(&p), b"a", true), 0);
    let mut syn = tcp_seq(client(), server(1), SYN, 1, 0, b"");
    nat.translate_outbound(&mut syn, wan(), 1);
    nat.translate_outbound(&mut udp(client(), server(2), b"q", true), wan(), 2);
    let mut p = udp(client(), server(3), b"q", true);
    nat.translate_outbound(&mut p, wan(), 3);
    nat.translate_inbound(&mut udp(server(3), src_of(&p), b"a", true), 3);
    assert_eq!(nat.session_count(), 4);
    let open = |nat: &NatWorker| {
        let mut v: Vec<u16> = nat.sessions(10).map(|s| s.outside.port - 100).collect();
        v.sort_unstable();
        v
    };
    // The oldest unanswered session (the SYN) makes room...
    let mut p = udp(client(), server(4), b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 10),
        Verdict::Translated
    );
    assert_eq!(open(&nat), [0, 2, 3, 4]);
    // ...then the next oldest, never an answered one.
    let mut p = udp(client(), server(5), b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 11),
        Verdict::Translated
    );
    assert_eq!(open(&nat), [0, 3, 4, 5]);
    assert_eq!(nat.counters().sessions_early_dropped, 2);
}

#[test]
fn fragments_and_unknown_protocols() {
    let mut nat = masquerade_worker(NatConfig::default());
    let mut p = udp(client(), ep(ip(192, 0, 2, 1), 53), &[7; 64], true);
    // Non-first fragment: offset 8 (in 8-byte units), recompute IP checksum.
    p[6] = 0x00;
    p[7] = 0x08;
    p[10] = 0;
    p[11] = 0;
    let c = strait_wire::checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 0),
        Verdict::Drop(DropReason::Fragment)
    );
    assert_eq!(nat.counters().drops(DropReason::Fragment), 1);
    // First fragment (MF set): translated, transport checksum patched.
    let mut first = udp(client(), ep(ip(192, 0, 2, 1), 53), &[7; 64], true);
    first[6] = 0x20;
    assert_eq!(
        nat.translate_outbound(&mut first, wan(), 0),
        Verdict::Translated
    );
    // ESP from a NATed source cannot be translated; from elsewhere it passes.
    let mut esp = udp(client(), ep(ip(192, 0, 2, 1), 53), b"x", false);
    esp[9] = 50;
    assert_eq!(
        nat.translate_outbound(&mut esp, wan(), 0),
        Verdict::Drop(DropReason::UnsupportedProtocol)
    );
    let mut esp = udp(
        ep(ip(172, 16, 0, 1), 1),
        ep(ip(192, 0, 2, 1), 53),
        b"x",
        false,
    );
    esp[9] = 50;
    assert_eq!(
        nat.translate_outbound(&mut esp, wan(), 0),
        Verdict::NotTranslated
    );
    assert_eq!(
        nat.translate_outbound(&mut [0x45, 0, 0], wan(), 0),
        Verdict::Drop(DropReason::Malformed)
    );
}

#[test]
fn inspection_lists_sessions_and_counts_by_rule() {
    let dnat = DnatRule {
        full_nat: false,
        id: RuleId(9),
        protocol: Protocol::Tcp,
        public: ep(WAN, 443),
        backends: vec![ep(ip(10, 0, 0, 44), 8443)],
        selection: BackendSelection::RoundRobin,
    };
    let mut nat = worker_with(
        NatConfig::default(),
        vec![masquerade(1, PortRange::new(1024, 65535))],
        vec![dnat],
        vec![],
    );
    nat.translate_outbound(
        &mut udp(client(), ep(ip(192, 0, 2, 1), 53), b"q", true),
        wan(),
        10,
    );
    nat.translate_outbound(
        &mut udp(client(), ep(ip(192, 0, 2, 2), 53), b"q", true),
        wan(),
        10,
    );
    nat.translate_inbound(
        &mut tcp(ep(ip(192, 0, 2, 3), 5555), ep(WAN, 443), SYN, b""),
        20,
    );
    assert_eq!(
        nat.session_count_by_rule(),
        vec![(RuleId(1), 2), (RuleId(9), 1)]
    );
    let sessions: Vec<SessionInfo> = nat.sessions(30).collect();
    assert_eq!(sessions.len(), 3);
    let d = sessions
        .iter()
        .find(|s| s.kind == SessionKind::Dnat)
        .unwrap();
    assert_eq!(
        d.original().to_string(),
        "tcp 192.0.2.3:5555 -> 203.0.113.1:443"
    );
    assert_eq!(
        d.translated().to_string(),
        "tcp 192.0.2.3:5555 -> 10.0.0.44:8443"
    );
    assert_eq!((d.age, d.idle, d.expires_in), (10, 10, 230));
    assert_eq!(d.tcp_state, Some(TcpState::SynSent));
    let s = sessions
        .iter()
        .find(|s| s.kind == SessionKind::Snat)
        .unwrap();
    assert_eq!(s.original().source, client());
    assert_eq!(s.translated().source, ep(WAN, 5000));
    assert_eq!((s.age, s.expires_in), (20, 280));
}

#[test]
fn workers_only_hand_out_ports_they_own() {
    for index in 0..2u16 {
        let config = NatConfig {
            partition: WorkerPartition { index, count: 2 },
            ..NatConfig::default()
        };
        let mut nat = masquerade_worker(config);
        for k in 0..300u16 {
            let mut p = udp(
                ep(ip(10, 0, 1, 1), 20000 + k),
                ep(ip(192, 0, 2, 1), 53),
                b"q",
                true,
            );
            // Steering sends a packet to the owner of its source port.
            if owner_worker_for_inbound(20000 + k, 2) != index {
                continue;
            }
            assert_eq!(
                nat.translate_outbound(&mut p, wan(), 0),
                Verdict::Translated
            );
            let port = src_of(&p).port;
            assert_eq!(port, 20000 + k, "owned free port is preserved");
        }
        // Port in use by another host: the replacement is still owned.
        for k in 0..100u16 {
            let mut p = udp(
                ep(ip(10, 0, 2, 1), 20000 + k),
                ep(ip(192, 0, 2, 1), 53),
                b"q",
                true,
            );
            if owner_worker_for_inbound(20000 + k, 2) != index {
                continue;
            }
            assert_eq!(
                nat.translate_outbound(&mut p, wan(), 0),
                Verdict::Translated
            );
            assert_eq!(owner_worker_for_inbound(src_of(&p).port, 2), index);
        }
    }
}

/// RFC 6888 REQ-8: a freed external port is not handed to another inside
/// endpoint for at least the reuse delay (120 s by default); the endpoint
/// that held it may have it back at once.
#[test]
fn freed_ports_cool_before_another_inside_host_gets_them() {
    let mut nat = worker_with(
        NatConfig::default(),
        vec![masquerade(1, PortRange::new(2000, 2000))],
        vec![],
        vec![],
    );
    let server = ep(ip(192, 0, 2, 1), 53);
    let first = ep(ip(10, 0, 0, 10), 5000);
    let second = ep(ip(10, 0, 0, 11), 5000);
    let mut p = udp(first, server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 0),
        Verdict::Translated
    );
    assert_eq!(src_of(&p), ep(WAN, 2000));
    // The session (and the mapping with it) expires at 300.
    assert_eq!(nat.expire(300, usize::MAX), 1);
    assert_eq!((nat.mapping_count(), nat.ports_in_use()), (0, 0));
    // Another inside host cannot have port 2000 before 120 s have passed.
    for now in [300, 360, 419] {
        let mut p = udp(second, server, b"q", true);
        assert_eq!(
            nat.translate_outbound(&mut p, wan(), now),
            Verdict::Drop(DropReason::NatExhausted),
            "at {now}"
        );
    }
    assert_eq!(nat.counters().mappings_refused_cooling, 3);
    // The host that held it gets the same port back (its mapping stays
    // stable, RFC 4787 REQ-1), then frees it again.
    let mut p = udp(first, server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 420),
        Verdict::Translated
    );
    assert_eq!(src_of(&p), ep(WAN, 2000));
    assert_eq!(nat.expire(720, usize::MAX), 1);
    let mut p = udp(second, server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 839),
        Verdict::Drop(DropReason::NatExhausted)
    );
    // Long enough: the port is anyone's again.
    let mut p = udp(second, server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 920),
        Verdict::Translated
    );
    assert_eq!(src_of(&p), ep(WAN, 2000));
}

/// Cooling ports are never handed out while another port is free.
#[test]
fn allocation_prefers_ports_that_are_not_cooling() {
    let mut nat = worker_with(
        NatConfig::default(),
        vec![masquerade(1, PortRange::new(2000, 2001))],
        vec![],
        vec![],
    );
    let server = ep(ip(192, 0, 2, 1), 53);
    let mut p = udp(ep(ip(10, 0, 0, 10), 2000), server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 0),
        Verdict::Translated
    );
    assert_eq!(src_of(&p), ep(WAN, 2000));
    nat.expire(300, usize::MAX);
    // This host asks for 2000 (port preservation) but it is cooling.
    let mut p = udp(ep(ip(10, 0, 0, 11), 2000), server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 301),
        Verdict::Translated
    );
    assert_eq!(src_of(&p), ep(WAN, 2001));
}

/// RFC 6888 REQ-4: a limit on the external ports (mappings) one inside
/// address holds; existing mappings keep working.
#[test]
fn ports_per_inside_address_are_limited() {
    let config = NatConfig {
        ports_per_inside_address: 2,
        ..NatConfig::default()
    };
    let mut nat = masquerade_worker(config);
    let host = ip(10, 0, 0, 2);
    let server = ep(ip(192, 0, 2, 1), 53);
    for port in [5000, 5001] {
        let mut p = udp(ep(host, port), server, b"q", true);
        assert_eq!(
            nat.translate_outbound(&mut p, wan(), 0),
            Verdict::Translated
        );
    }
    let mut p = udp(ep(host, 5002), server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 0),
        Verdict::Drop(DropReason::QuotaInsidePorts)
    );
    assert_eq!(nat.counters().drops(DropReason::QuotaInsidePorts), 1);
    // A held mapping still opens sessions to new destinations.
    let mut p = udp(ep(host, 5000), ep(ip(192, 0, 2, 2), 53), b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 0),
        Verdict::Translated
    );
    // Another inside host has its own quota.
    let mut p = udp(ep(ip(10, 0, 0, 3), 5002), server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 0),
        Verdict::Translated
    );
    // Mappings that go give the quota back.
    nat.expire(300, usize::MAX);
    let mut p = udp(ep(host, 5002), server, b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 300),
        Verdict::Translated
    );
}

/// RFC 6888 REQ-5: a limit on the sessions (state) one inside address
/// holds, whichever rule creates them.
#[test]
fn sessions_per_inside_address_are_limited() {
    let config = NatConfig {
        sessions_per_inside_address: 3,
        ..NatConfig::default()
    };
    let camera = StaticNatRule {
        id: RuleId(2),
        internal: ip(10, 1, 0, 5),
        external: ip(198, 51, 100, 5),
    };
    let mut nat = worker_with(
        config,
        vec![masquerade(1, PortRange::new(1024, 65535))],
        vec![],
        vec![camera],
    );
    for host in [ip(10, 0, 0, 2), ip(10, 1, 0, 5)] {
        for d in 1..=3 {
            let mut p = udp(ep(host, 5000), ep(ip(192, 0, 2, d), 53), b"q", true);
            assert_eq!(
                nat.translate_outbound(&mut p, wan(), 0),
                Verdict::Translated
            );
        }
        let mut p = udp(ep(host, 5000), ep(ip(192, 0, 2, 4), 53), b"q", true);
        assert_eq!(
            nat.translate_outbound(&mut p, wan(), 0),
            Verdict::Drop(DropReason::QuotaInsideSessions),
            "{host}"
        );
    }
    // Unsolicited inbound sessions through a host's own mapping count too
    // (endpoint-independent filtering lets anyone open one).
    let config = NatConfig {
        sessions_per_inside_address: 1,
        filtering: Filtering::EndpointIndependent,
        ..NatConfig::default()
    };
    let mut nat = masquerade_worker(config);
    let mut p = udp(client(), ep(ip(192, 0, 2, 1), 53), b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 0),
        Verdict::Translated
    );
    let mut inbound = udp(ep(ip(192, 0, 2, 9), 53), src_of(&p), b"a", true);
    assert_eq!(
        nat.translate_inbound(&mut inbound, 0),
        Verdict::Drop(DropReason::QuotaInsideSessions)
    );
    assert_eq!(nat.counters().drops(DropReason::QuotaInsideSessions), 1);
}

fn port_forward(config: NatConfig) -> NatWorker {
    let dnat = DnatRule {
        full_nat: false,
        id: RuleId(2),
        protocol: Protocol::Udp,
        public: ep(WAN, 8080),
        backends: vec![ep(ip(10, 0, 0, 80), 80)],
        selection: BackendSelection::ClientHash,
    };
    worker_with(
        config,
        vec![masquerade(1, PortRange::new(1024, 65535))],
        vec![dnat],
        vec![],
    )
}

/// One remote address may open only so many sessions inbound through
/// DNAT and static rules (RFC 6888 REQ-5 for state created from outside).
#[test]
fn inbound_sessions_per_remote_address_are_limited() {
    let mut nat = port_forward(NatConfig {
        inbound_sessions_per_remote_address: 2,
        ..NatConfig::default()
    });
    let remote = ip(198, 18, 0, 1);
    for port in [40000, 40001] {
        let mut p = udp(ep(remote, port), ep(WAN, 8080), b"q", true);
        assert_eq!(nat.translate_inbound(&mut p, 0), Verdict::Translated);
    }
    let mut p = udp(ep(remote, 40002), ep(WAN, 8080), b"q", true);
    assert_eq!(
        nat.translate_inbound(&mut p, 0),
        Verdict::Drop(DropReason::QuotaRemote)
    );
    assert_eq!(nat.counters().drops(DropReason::QuotaRemote), 1);
    // Its open sessions go on; another remote address is not affected.
    let mut p = udp(ep(remote, 40000), ep(WAN, 8080), b"q", true);
    assert_eq!(nat.translate_inbound(&mut p, 1), Verdict::Translated);
    let mut p = udp(ep(ip(198, 18, 0, 2), 40000), ep(WAN, 8080), b"q", true);
    assert_eq!(nat.translate_inbound(&mut p, 1), Verdict::Translated);
    // Inside hosts reaching the service by hairpin share the external
    // address, but each counts against its own inside quota instead.
    for port in [6000, 6001, 6002] {
        let mut p = udp(ep(ip(10, 0, 0, 7), port), ep(WAN, 8080), b"q", true);
        assert_eq!(nat.translate_outbound(&mut p, wan(), 1), Verdict::Hairpin);
    }
}

/// A published service (one DNAT or static rule) holds at most so many
/// inbound sessions, so a flood on it cannot take the whole table.
#[test]
fn inbound_sessions_per_rule_are_limited() {
    let mut nat = port_forward(NatConfig {
        inbound_sessions_per_rule: 3,
        ..NatConfig::default()
    });
    for k in 1..=3 {
        let mut p = udp(ep(ip(198, 18, 0, k), 40000), ep(WAN, 8080), b"q", true);
        assert_eq!(nat.translate_inbound(&mut p, 0), Verdict::Translated);
    }
    let mut p = udp(ep(ip(198, 18, 0, 4), 40000), ep(WAN, 8080), b"q", true);
    assert_eq!(
        nat.translate_inbound(&mut p, 0),
        Verdict::Drop(DropReason::QuotaRule)
    );
    assert_eq!(nat.counters().drops(DropReason::QuotaRule), 1);
    // Outbound flows are not held back by the service's quota.
    let mut p = udp(client(), ep(ip(192, 0, 2, 1), 53), b"q", true);
    assert_eq!(
        nat.translate_outbound(&mut p, wan(), 0),
        Verdict::Translated
    );
    // Sessions that end give the quota back.
    nat.expire(300, usize::MAX);
    let mut p = udp(ep(ip(198, 18, 0, 4), 40000), ep(WAN, 8080), b"q", true);
    assert_eq!(nat.translate_inbound(&mut p, 300), Verdict::Translated);
}

#[test]
fn maglev_flows_keep_their_backend_across_tables_and_an_empty_table_refuses() {
    let backends = vec![
        ep(ip(10, 0, 1, 1), 80),
        ep(ip(10, 0, 1, 2), 80),
        ep(ip(10, 0, 1, 3), 80),
    ];
    let table = |members: &[u16]| {
        let m: Vec<MaglevBackend> = members
            .iter()
            .map(|&i| MaglevBackend {
                endpoint: backends[usize::from(i)],
                weight: 1,
                index: i,
            })
            .collect();
        std::sync::Arc::new(MaglevTable::build(65_537, &m).unwrap())
    };
    let rules = |members: &[u16]| {
        std::sync::Arc::new(
            NatRules::new(
                vec![],
                vec![DnatRule {
                    full_nat: false,
                    id: RuleId(9),
                    protocol: Protocol::Tcp,
                    public: ep(WAN, 80),
                    backends: backends.clone(),
                    selection: BackendSelection::Maglev(table(members)),
                }],
                vec![],
            )
            .unwrap(),
        )
    };
    let mut nat = NatWorker::new(NatConfig::default(), rules(&[0, 1, 2])).unwrap();
    let syn_to = |nat: &mut NatWorker, port: u16, now: u64| {
        let mut syn = tcp(ep(ip(192, 0, 2, 7), port), ep(WAN, 80), SYN, b"");
        let v = nat.translate_inbound(&mut syn, now);
        (v, dst_of(&syn))
    };
    let mut first = Vec::new();
    for port in 1000..1300u16 {
        let (v, to) = syn_to(&mut nat, port, 0);
        assert_eq!(v, Verdict::Translated);
        first.push(to);
    }
    assert!(backends.iter().all(|b| first.contains(b)));
    // Backend 1 leaves the table: established flows stay where they are,
    // their packets still reach the old backend.
    nat.install_rules(rules(&[0, 2]));
    for (k, port) in (1000..1300u16).enumerate() {
        let mut ack = tcp(ep(ip(192, 0, 2, 7), port), ep(WAN, 80), ACK, b"x");
        assert_eq!(nat.translate_inbound(&mut ack, 1), Verdict::Translated);
        assert_eq!(dst_of(&ack), first[k], "flow {port} moved");
    }
    // New flows avoid it; flows of the other backends keep theirs (only
    // backend 1's slots moved).
    for port in 2000..2300u16 {
        let (v, to) = syn_to(&mut nat, port, 1);
        assert_eq!(v, Verdict::Translated);
        assert_ne!(to, backends[1]);
    }
    // No backend left: new flows are refused, a stray ACK is still not a
    // new flow.
    nat.install_rules(rules(&[]));
    assert_eq!(
        syn_to(&mut nat, 3000, 2).0,
        Verdict::Drop(DropReason::NoBackend)
    );
    assert_eq!(nat.counters().drops(DropReason::NoBackend), 1);
    let mut ack = tcp(ep(ip(192, 0, 2, 7), 3001), ep(WAN, 80), ACK, b"");
    assert_eq!(
        nat.translate_inbound(&mut ack, 2),
        Verdict::Drop(DropReason::TcpNotSyn)
    );
}

#[test]
fn a_new_syn_on_a_closed_inbound_session_chooses_again() {
    let backends = vec![ep(ip(10, 0, 1, 1), 80), ep(ip(10, 0, 1, 2), 80)];
    let rules = |members: &[u16]| {
        let m: Vec<MaglevBackend> = members
            .iter()
            .map(|&i| MaglevBackend {
                endpoint: backends[usize::from(i)],
                weight: 1,
                index: i,
            })
            .collect();
        std::sync::Arc::new(
            NatRules::new(
                vec![],
                vec![DnatRule {
                    full_nat: false,
                    id: RuleId(9),
                    protocol: Protocol::Tcp,
                    public: ep(WAN, 80),
                    backends: backends.clone(),
                    selection: BackendSelection::Maglev(std::sync::Arc::new(
                        MaglevTable::build(251, &m).unwrap(),
                    )),
                }],
                vec![],
            )
            .unwrap(),
        )
    };
    let mut nat = NatWorker::new(NatConfig::default(), rules(&[0])).unwrap();
    let client = ep(ip(192, 0, 2, 7), 4242);
    let mut syn = tcp(client, ep(WAN, 80), SYN, b"");
    assert_eq!(nat.translate_inbound(&mut syn, 0), Verdict::Translated);
    assert_eq!(dst_of(&syn), backends[0]);
    // Handshake, then both FINs: the connection is over.
    let mut synack = tcp(backends[0], client, SYN_ACK, b"");
    assert_eq!(
        nat.translate_outbound(&mut synack, wan(), 0),
        Verdict::Translated
    );
    for (from_client, flags) in [(true, ACK), (false, FIN_ACK), (true, FIN_ACK), (false, ACK)] {
        let v = if from_client {
            let mut p = tcp(client, ep(WAN, 80), flags, b"");
            nat.translate_inbound(&mut p, 0)
        } else {
            let mut p = tcp(backends[0], client, flags, b"");
            nat.translate_outbound(&mut p, wan(), 0)
        };
        assert_eq!(v, Verdict::Translated);
    }
    // Backend 0 is gone; the client reuses its port for a new connection.
    nat.install_rules(rules(&[1]));
    let mut again = tcp(client, ep(WAN, 80), SYN, b"");
    assert_eq!(nat.translate_inbound(&mut again, 1), Verdict::Translated);
    assert_eq!(dst_of(&again), backends[1]);
}

/// Full NAT (a load balancer whose backends have no route back through
/// the translator): the backend sees the translator's address towards it,
/// and its replies are translated back twice.
#[test]
fn full_nat_hides_the_client_from_the_backend_and_back() {
    let vip = ep(ip(198, 51, 100, 10), 80);
    let backend = ep(ip(10, 1, 0, 2), 8000);
    let lan = Egress::new(EgressId(2), ip(10, 1, 0, 1));
    let rule = DnatRule {
        full_nat: true,
        id: RuleId(9),
        protocol: Protocol::Tcp,
        public: vip,
        backends: vec![backend],
        selection: BackendSelection::ClientHash,
    };
    let mut nat = worker_with(NatConfig::default(), vec![], vec![rule], vec![]);
    let client = ep(ip(192, 0, 2, 7), 40000);

    // The client's SYN: destination first, then the source at the egress.
    let mut syn = tcp(client, vip, SYN, b"");
    assert_eq!(nat.translate_inbound(&mut syn, 0), Verdict::FullNat);
    assert_eq!((src_of(&syn), dst_of(&syn)), (client, backend));
    assert_eq!(
        nat.translate_full_nat(&mut syn, lan, 0),
        Verdict::Translated
    );
    assert_checksums(&syn);
    let seen = src_of(&syn);
    assert_eq!(seen, ep(lan.addr, 40000), "the egress address, port kept");
    assert_eq!(dst_of(&syn), backend);

    // The backend answers the translator; the client sees the service.
    let mut syn_ack = tcp(backend, seen, SYN_ACK, b"");
    assert_eq!(nat.translate_inbound(&mut syn_ack, 0), Verdict::Translated);
    assert_checksums(&syn_ack);
    assert_eq!((src_of(&syn_ack), dst_of(&syn_ack)), (vip, client));

    // Later packets take the same two sessions.
    let mut ack = tcp(client, vip, ACK, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(nat.translate_inbound(&mut ack, 1), Verdict::FullNat);
    assert_eq!(
        nat.translate_full_nat(&mut ack, lan, 1),
        Verdict::Translated
    );
    assert_checksums(&ack);
    assert_eq!((src_of(&ack), dst_of(&ack)), (seen, backend));
    let mut data = tcp(backend, seen, ACK, b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(nat.translate_inbound(&mut data, 1), Verdict::Translated);
    assert_checksums(&data);
    assert_eq!((src_of(&data), dst_of(&data)), (vip, client));

    // An error from the backend about what it received reaches the
    // client quoting what the client sent, from the service's address.
    let mut err = icmp_error(backend.addr, lan.addr, 3, 4, &ack, ack.len());
    assert_eq!(nat.translate_inbound(&mut err, 2), Verdict::Translated);
    assert_checksums(&err);
    assert_quoted_transport_checksum(&err);
    assert_eq!(
        (src_of(&err).addr, dst_of(&err).addr),
        (vip.addr, client.addr)
    );
    assert_eq!((src_of(&err[28..]), dst_of(&err[28..])), (client, vip));

    // The mapping towards the backends admits nobody else.
    let mut stray = tcp(ep(ip(10, 1, 0, 3), 1234), seen, SYN, b"");
    assert_eq!(
        nat.translate_inbound(&mut stray, 2),
        Verdict::Drop(DropReason::Filtered)
    );
    // A segment that is not a SYN cannot open the source half.
    let mut late = tcp(ep(ip(192, 0, 2, 8), 5555), backend, ACK, b"");
    assert_eq!(
        nat.translate_full_nat(&mut late, lan, 2),
        Verdict::Drop(DropReason::TcpNotSyn)
    );

    let kinds: Vec<&str> = nat.sessions(2).map(|s| s.kind.name()).collect();
    assert_eq!(kinds.len(), 2);
    assert!(kinds.contains(&"full-nat") && kinds.contains(&"full-nat-src"));
}

/// A UDP service through full NAT, and a first fragment's translation
/// carried to the fragment after it.
#[test]
fn full_nat_udp_and_fragments() {
    let vip = ep(ip(198, 51, 100, 10), 53);
    let backend = ep(ip(10, 1, 0, 2), 53);
    let lan = Egress::new(EgressId(2), ip(10, 1, 0, 1));
    let rule = DnatRule {
        full_nat: true,
        id: RuleId(9),
        protocol: Protocol::Udp,
        public: vip,
        backends: vec![backend],
        selection: BackendSelection::ClientHash,
    };
    let mut nat = worker_with(NatConfig::default(), vec![], vec![rule], vec![]);
    let client = ep(ip(192, 0, 2, 7), 5353);
    let mut q = udp(client, vip, b"query", true);
    assert_eq!(nat.translate_inbound(&mut q, 0), Verdict::FullNat);
    assert_eq!(nat.translate_full_nat(&mut q, lan, 0), Verdict::Translated);
    assert_checksums(&q);
    let seen = src_of(&q);
    assert_eq!(seen.addr, lan.addr);
    let mut a = udp(backend, seen, b"answer", true);
    assert_eq!(nat.translate_inbound(&mut a, 0), Verdict::Translated);
    assert_checksums(&a);
    assert_eq!((src_of(&a), dst_of(&a)), (vip, client));

    // A fragmented query: first fragment (MF, offset 0), then the rest.
    let mut first = udp(client, vip, &[7u8; 64], true);
    first[6] = 0x20; // MF
    first[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
    refill_ip_checksum(&mut first);
    assert_eq!(nat.translate_inbound(&mut first, 1), Verdict::FullNat);
    assert_eq!(
        nat.translate_full_nat(&mut first, lan, 1),
        Verdict::Translated
    );
    let mut rest = udp(client, vip, &[7u8; 64], true);
    rest[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
    rest[6] = 0x00;
    rest[7] = 0x09; // offset 72 bytes
    refill_ip_checksum(&mut rest);
    assert_eq!(nat.translate_inbound(&mut rest, 1), Verdict::FullNat);
    assert_eq!(
        nat.translate_full_nat(&mut rest, lan, 1),
        Verdict::Translated
    );
    assert_eq!(&rest[12..16], &lan.addr.octets());
    assert_eq!(&rest[16..20], &backend.addr.octets());
    assert_eq!(nat.counters().fragments_translated, 2);
}

fn refill_ip_checksum(p: &mut [u8]) {
    p[10] = 0;
    p[11] = 0;
    let c = strait_wire::checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}
