//! Two IKE instances, an initiator and a responder, driven against each
//! other in-process: datagrams are handed across by hand, time is a
//! number, so drops, replays, NAT and clock jumps are exact.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use strait_esp::{InboundSa, NextHeader, OutboundSa, SaConfig, TUNNEL_HEADROOM};
use strait_ike::message::{emit_plain, payload_type, ChainBuilder, Message};
use strait_ike::payload::{notify, Notify};
use strait_ike::{
    CipherSuite, CloseReason, Config, Datagram, DhGroup, Event, Identity, Ike, IkeSaId, Output,
    PeerConfig, PeerEntry, TrafficSelector,
};

const PSK: &[u8] = b"device key of vcpe-0042, 32 byte";

fn ts(prefix: &str) -> TrafficSelector {
    let (a, l) = prefix.split_once('/').unwrap();
    TrafficSelector::prefix(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

fn device_id() -> Identity {
    Identity::Fqdn("vcpe-0042".into())
}

fn hub_id() -> Identity {
    Identity::Fqdn("hub.example".into())
}

/// A registry that knows one device.
fn registry(
    id: Identity,
    psk: &'static [u8],
    allowed: Vec<TrafficSelector>,
) -> Box<dyn strait_ike::PeerDirectory> {
    Box::new(move |peer: &Identity| {
        (*peer == id).then(|| PeerEntry {
            psk: psk.to_vec(),
            remote_ts: allowed.clone(),
            local_ts: None,
            conflicts: Vec::new(),
        })
    })
}

fn no_registry() -> Box<dyn strait_ike::PeerDirectory> {
    Box::new(|_: &Identity| None)
}

/// Where datagrams go, with an optional NAT in front of the initiator
/// (it rewrites the initiator's source port 500 → 40500, 4500 → 44500 and
/// its address to 203.0.113.9).
struct Net {
    a: Ike,
    b: Ike,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    nat: bool,
    now: Duration,
    wire: VecDeque<Datagram>,
    events_a: Vec<Event>,
    events_b: Vec<Event>,
    /// Every datagram as the receiver got it: (to_b, src, dst, bytes).
    log: Vec<(bool, SocketAddr, SocketAddr, Vec<u8>)>,
}

const NAT_PUBLIC: &str = "203.0.113.9";

impl Net {
    fn new(a: Config, b: Config, registry: Box<dyn strait_ike::PeerDirectory>) -> Net {
        Net {
            a: Ike::new(a, no_registry()).unwrap(),
            b: Ike::new(b, registry).unwrap(),
            a_addr: "10.0.0.2:500".parse().unwrap(),
            b_addr: "192.0.2.1:500".parse().unwrap(),
            nat: false,
            now: Duration::from_secs(1000),
            wire: VecDeque::new(),
            events_a: Vec::new(),
            events_b: Vec::new(),
            log: Vec::new(),
        }
    }

    fn peer(&self) -> PeerConfig {
        PeerConfig {
            local: self.a_addr,
            remote: self.b_addr,
            psk: PSK.to_vec(),
            remote_id: Some(hub_id()),
            remote_ts: vec![ts("10.2.0.0/16")],
        }
    }

    fn absorb(&mut self, from_a: bool, outs: Vec<Output>) {
        for o in outs {
            match o {
                Output::Send(d) => self.wire.push_back(d),
                Output::Event(e) if from_a => self.events_a.push(e),
                Output::Event(e) => self.events_b.push(e),
            }
        }
    }

    fn initiate(&mut self) -> IkeSaId {
        let (id, outs) = self.a.initiate(self.now, self.peer()).unwrap();
        self.absorb(true, outs);
        id
    }

    /// Delivers one datagram; `false` if none is queued.
    fn step(&mut self) -> bool {
        let Some(d) = self.wire.pop_front() else {
            return false;
        };
        let to_b = d.remote.ip() == self.b_addr.ip();
        let (mut src, mut dst) = (d.local, d.remote);
        if self.nat {
            if to_b {
                src = SocketAddr::new(NAT_PUBLIC.parse().unwrap(), src.port() + 40000);
            } else {
                dst = SocketAddr::new(self.a_addr.ip(), dst.port() - 40000);
            }
        }
        self.log.push((to_b, src, dst, d.bytes.clone()));
        let outs = if to_b {
            self.b.handle_datagram(self.now, src, dst, &d.bytes)
        } else {
            self.a.handle_datagram(self.now, src, dst, &d.bytes)
        };
        self.absorb(!to_b, outs);
        true
    }

    fn run(&mut self) {
        for _ in 0..100 {
            if !self.step() {
                return;
            }
        }
        panic!("exchange did not settle in 100 datagrams");
    }

    /// Advances the clock to the earliest wake-up of either side and polls.
    fn advance(&mut self) {
        let next = [self.a.wake_at(), self.b.wake_at()]
            .into_iter()
            .flatten()
            .min()
            .expect("something scheduled");
        assert!(next >= self.now);
        self.now = next;
        let outs = self.a.poll(self.now);
        self.absorb(true, outs);
        let outs = self.b.poll(self.now);
        self.absorb(false, outs);
    }
}

fn configs() -> (Config, Config) {
    let mut a = Config::new(device_id());
    a.local_ts = vec![ts("10.1.0.0/16")];
    let mut b = Config::new(hub_id());
    b.local_ts = vec![ts("10.2.0.0/16")];
    (a, b)
}

fn established(events: &[Event]) -> Option<(&Identity, bool, u64, u64)> {
    events.iter().find_map(|e| match e {
        Event::IkeSaEstablished {
            peer_id,
            nat_detected,
            spi_i,
            spi_r,
            ..
        } => Some((peer_id, *nat_detected, *spi_i, *spi_r)),
        _ => None,
    })
}

struct Child {
    spi_in: u32,
    spi_out: u32,
    keys_in: Vec<u8>,
    keys_out: Vec<u8>,
    cipher: CipherSuite,
    esn: bool,
    ts_local: Vec<TrafficSelector>,
    ts_remote: Vec<TrafficSelector>,
    udp_encap: bool,
}

fn child(events: &[Event]) -> Option<Child> {
    events.iter().find_map(|e| match e {
        Event::ChildSaReady {
            spi_in,
            spi_out,
            keys_in,
            keys_out,
            cipher,
            esn,
            ts_local,
            ts_remote,
            udp_encap,
            ..
        } => Some(Child {
            spi_in: *spi_in,
            spi_out: *spi_out,
            keys_in: keys_in.as_bytes().to_vec(),
            keys_out: keys_out.as_bytes().to_vec(),
            cipher: *cipher,
            esn: *esn,
            ts_local: ts_local.clone(),
            ts_remote: ts_remote.clone(),
            udp_encap: *udp_encap,
        }),
        _ => None,
    })
}

fn closed(events: &[Event]) -> Option<CloseReason> {
    events.iter().find_map(|e| match e {
        Event::IkeSaClosed { reason, .. } => Some(reason.clone()),
        _ => None,
    })
}

/// The two CHILD SA halves agree, and a packet sealed by one side's ESP
/// with the negotiated keys opens on the other.
fn check_children_match(a: &Child, b: &Child) {
    assert_eq!(a.spi_in, b.spi_out);
    assert_eq!(a.spi_out, b.spi_in);
    assert_eq!(a.keys_in, b.keys_out);
    assert_eq!(a.keys_out, b.keys_in);
    assert_ne!(a.keys_in, a.keys_out);
    assert_eq!((a.cipher, a.esn), (b.cipher, b.esn));
    assert_eq!(a.ts_local, b.ts_remote);
    assert_eq!(a.ts_remote, b.ts_local);
    let now = Duration::ZERO;
    let mut cfg = SaConfig::new(a.spi_out, a.cipher, &a.keys_out, now);
    cfg.esn = a.esn;
    let out = OutboundSa::new(&cfg).unwrap();
    let mut worker = out.worker();
    let mut cfg = SaConfig::new(b.spi_in, b.cipher, &b.keys_in, now);
    cfg.esn = b.esn;
    let mut inb = InboundSa::new(&cfg).unwrap();
    let mut frame = [0u8; 2048];
    let inner = TUNNEL_HEADROOM..TUNNEL_HEADROOM + 20;
    frame[inner.start] = 0x45;
    frame[inner.start + 3] = 20;
    let sealed = worker.seal(&mut frame, inner, now).unwrap();
    let opened = inb.open(&mut frame, sealed.esp, now).unwrap();
    assert_eq!(opened.next_header, NextHeader::Ipv4);
}

#[test]
fn establishes_with_each_group_and_the_keys_work_in_esp() {
    for group in [DhGroup::Ecp256, DhGroup::Curve25519] {
        let (mut a, mut b) = configs();
        a.dh_groups = vec![group];
        b.dh_groups = vec![group];
        let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
        let id = net.initiate();
        net.run();
        let (peer_a, nat_a, spi_i, spi_r) = established(&net.events_a).expect("initiator up");
        let (peer_b, nat_b, spi_i_b, spi_r_b) = established(&net.events_b).expect("responder up");
        assert_eq!(id.0, spi_i);
        assert_eq!((spi_i, spi_r), (spi_i_b, spi_r_b));
        assert_eq!(peer_a, &hub_id());
        assert_eq!(peer_b, &device_id());
        assert!(!nat_a && !nat_b, "no NAT between the two");
        let (ca, cb) = (child(&net.events_a).unwrap(), child(&net.events_b).unwrap());
        check_children_match(&ca, &cb);
        assert_eq!(ca.cipher, CipherSuite::Aes256Gcm);
        assert!(ca.esn);
        assert!(!ca.udp_encap);
        assert_eq!(ca.ts_local, [ts("10.1.0.0/16")]);
        assert_eq!(ca.ts_remote, [ts("10.2.0.0/16")]);
        // Four datagrams: two exchanges, nothing retransmitted.
        assert_eq!(net.log.len(), 4);
        assert!(net
            .log
            .iter()
            .all(|(_, s, d, _)| s.port() == 500 && d.port() == 500));
        assert_eq!(net.a.wake_at(), None);
        assert_eq!(net.b.wake_at(), None);
    }
}

#[test]
fn nat_is_detected_and_ike_moves_to_4500() {
    let (a, b) = configs();
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    net.nat = true;
    net.initiate();
    net.run();
    assert!(established(&net.events_a).unwrap().1);
    assert!(established(&net.events_b).unwrap().1);
    let (ca, cb) = (child(&net.events_a).unwrap(), child(&net.events_b).unwrap());
    check_children_match(&ca, &cb);
    assert!(ca.udp_encap && cb.udp_encap);
    // IKE_SA_INIT on 500, IKE_AUTH on 4500 with the non-ESP marker.
    let ports: Vec<(u16, u16)> = net
        .log
        .iter()
        .map(|(_, s, d, _)| (s.port(), d.port()))
        .collect();
    assert_eq!(
        ports,
        [(40500, 500), (500, 500), (44500, 4500), (4500, 4500)]
    );
    assert_eq!(&net.log[2].3[..4], &[0, 0, 0, 0]);
    // The responder talks to the NAT's public side.
    match net
        .events_b
        .iter()
        .find(|e| matches!(e, Event::ChildSaReady { .. }))
    {
        Some(Event::ChildSaReady { remote, local, .. }) => {
            assert_eq!(remote.to_string(), "203.0.113.9:44500");
            assert_eq!(local.port(), 4500);
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_dropped_request_is_retransmitted_with_backoff() {
    let (a, b) = configs();
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    net.initiate();
    net.step(); // IKE_SA_INIT request
    net.step(); // response; IKE_AUTH request now queued
    let start = net.now;
    assert_eq!(net.wire.len(), 1);
    net.wire.clear(); // the IKE_AUTH request is lost
    net.advance();
    assert_eq!(net.now - start, Duration::from_secs(1));
    net.wire.clear(); // and its first retransmission
    net.advance();
    assert_eq!(
        net.now - start,
        Duration::from_secs(3),
        "second retry after 2 s more"
    );
    net.run();
    assert!(established(&net.events_a).is_some());
    assert!(child(&net.events_b).is_some());
    assert_eq!(net.a.wake_at(), None);
}

#[test]
fn an_unanswered_request_times_out() {
    let (a, b) = configs();
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![]));
    net.initiate();
    let start = net.now;
    let mut sends = Vec::new();
    while closed(&net.events_a).is_none() {
        sends.push(net.wire.len());
        net.wire.clear();
        net.advance();
    }
    // 5 transmissions at 0, 1, 3, 7, 15 s; given up at 31 s.
    assert_eq!(sends, [1, 1, 1, 1, 1]);
    assert_eq!(net.now - start, Duration::from_secs(31));
    assert_eq!(closed(&net.events_a), Some(CloseReason::Timeout));
    assert_eq!(net.a.sa_count(), 0);
}

#[test]
fn a_replayed_request_is_answered_from_the_cache() {
    let (a, b) = configs();
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    net.initiate();
    net.run();
    let events = net.events_b.len();
    for (req, resp) in [(0, 1), (2, 3)] {
        let (_, src, dst, bytes) = net.log[req].clone();
        let outs = net.b.handle_datagram(net.now, src, dst, &bytes);
        let [Output::Send(d)] = &outs[..] else {
            panic!("expected exactly one datagram, got {outs:?}");
        };
        assert_eq!(d.bytes, net.log[resp].3, "same bytes as the first answer");
    }
    assert_eq!(net.events_b.len(), events, "no new events for a replay");
}

#[test]
fn wrong_psk_and_unknown_identity_are_refused_and_leave_no_state() {
    for directory in [
        registry(device_id(), b"another key", vec![ts("10.1.0.0/16")]),
        registry(
            Identity::Fqdn("vcpe-9999".into()),
            PSK,
            vec![ts("10.1.0.0/16")],
        ),
    ] {
        let (a, b) = configs();
        let mut net = Net::new(a, b, directory);
        net.initiate();
        net.run();
        assert_eq!(
            closed(&net.events_a),
            Some(CloseReason::AuthenticationFailed)
        );
        assert_eq!(
            closed(&net.events_b),
            Some(CloseReason::AuthenticationFailed)
        );
        assert!(established(&net.events_a).is_none());
        assert!(established(&net.events_b).is_none());
        assert_eq!(net.b.sa_count(), 0, "responder keeps nothing");
        assert_eq!(net.a.sa_count(), 0);
    }
}

#[test]
fn the_responder_identity_is_checked_too() {
    let (a, b) = configs();
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    let mut peer = net.peer();
    peer.remote_id = Some(Identity::Fqdn("not-the-hub".into()));
    let (_, outs) = net.a.initiate(net.now, peer).unwrap();
    net.absorb(true, outs);
    net.run();
    assert_eq!(
        closed(&net.events_a),
        Some(CloseReason::AuthenticationFailed)
    );
    // The responder learnt of it through an INFORMATIONAL and dropped its SA.
    assert_eq!(
        closed(&net.events_b),
        Some(CloseReason::AuthenticationFailed)
    );
    assert_eq!(net.b.sa_count(), 0);
}

#[test]
fn an_unknown_critical_payload_is_refused() {
    let (a, b) = configs();
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![]));
    net.initiate();
    let d = net.wire.pop_front().unwrap();
    // Rebuild the IKE_SA_INIT with an extra payload of type 200, critical.
    let msg = Message::parse(&d.bytes).unwrap();
    let mut c = ChainBuilder::new();
    for p in &msg.payloads {
        c.push(p.kind, p.body);
    }
    c.push_with(200, true, |b| b.extend_from_slice(b"must be understood"));
    let bytes = emit_plain(msg.header, c);
    let outs = net.b.handle_datagram(net.now, d.local, d.remote, &bytes);
    let [Output::Send(resp)] = &outs[..] else {
        panic!("expected one answer, got {outs:?}");
    };
    let m = Message::parse(&resp.bytes).unwrap();
    let n = Notify::parse(m.payloads[0].body).unwrap();
    assert_eq!(n.kind, notify::UNSUPPORTED_CRITICAL_PAYLOAD);
    assert_eq!(n.data, [200]);
    assert_eq!(net.b.sa_count(), 0);
    // The same payload without the critical bit is skipped.
    let mut c = ChainBuilder::new();
    for p in &msg.payloads {
        c.push(p.kind, p.body);
    }
    c.push_with(200, false, |b| b.extend_from_slice(b"may be skipped"));
    let bytes = emit_plain(msg.header, c);
    let outs = net.b.handle_datagram(net.now, d.local, d.remote, &bytes);
    assert_eq!(net.b.sa_count(), 1, "accepted: {outs:?}");
    // The initiator gives up on the refusal.
    let outs = net
        .a
        .handle_datagram(net.now, resp.remote, resp.local, &resp.bytes);
    net.absorb(true, outs);
    assert_eq!(
        closed(&net.events_a),
        Some(CloseReason::PeerRefused(
            notify::UNSUPPORTED_CRITICAL_PAYLOAD
        ))
    );
}

fn first_notify(bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    let m = Message::parse(bytes).ok()?;
    let p = m.payloads.first()?;
    (p.kind == payload_type::NOTIFY).then(|| {
        let n = Notify::parse(p.body).unwrap();
        (n.kind, n.data.to_vec())
    })
}

#[test]
fn invalid_ke_payload_makes_the_initiator_retry_with_the_named_group() {
    let (mut a, mut b) = configs();
    a.dh_groups = vec![DhGroup::Ecp256, DhGroup::Curve25519];
    b.dh_groups = vec![DhGroup::Curve25519];
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    net.initiate();
    net.run();
    assert_eq!(
        first_notify(&net.log[1].3),
        Some((notify::INVALID_KE_PAYLOAD, 31u16.to_be_bytes().to_vec()))
    );
    // The retry carries a 32-byte Curve25519 KE.
    let retry = Message::parse(&net.log[2].3).unwrap();
    let ke = retry
        .payloads
        .iter()
        .find(|p| p.kind == payload_type::KE)
        .unwrap();
    assert_eq!(ke.body.len(), 4 + 32);
    assert_eq!(&ke.body[..2], &31u16.to_be_bytes());
    check_children_match(
        &child(&net.events_a).unwrap(),
        &child(&net.events_b).unwrap(),
    );
    assert_eq!(net.log.len(), 6);
}

#[test]
fn a_loaded_responder_demands_a_cookie_and_the_initiator_returns_it() {
    let (a, mut b) = configs();
    b.cookie_threshold = Some(0);
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    net.initiate();
    net.step();
    assert_eq!(net.b.sa_count(), 0, "no state before the cookie comes back");
    net.run();
    let (kind, cookie) = first_notify(&net.log[1].3).unwrap();
    assert_eq!(kind, notify::COOKIE);
    assert_eq!(first_notify(&net.log[2].3), Some((notify::COOKIE, cookie)));
    check_children_match(
        &child(&net.events_a).unwrap(),
        &child(&net.events_b).unwrap(),
    );
    // A cookie made for another SPIi gets a fresh cookie, not an SA.
    let (_, src, dst, mut hdr) = net.log[2].clone();
    hdr[0] ^= 1;
    let outs = net.b.handle_datagram(net.now, src, dst, &hdr);
    let [Output::Send(d)] = &outs[..] else {
        panic!("{outs:?}")
    };
    assert_eq!(first_notify(&d.bytes).unwrap().0, notify::COOKIE);
    assert_eq!(net.b.sa_count(), 1);
}

#[test]
fn liveness_checks_delete_child_and_close() {
    let (mut a, b) = configs();
    a.dpd_interval = Some(Duration::from_secs(10));
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    let id = net.initiate();
    net.run();
    let ca = child(&net.events_a).unwrap();
    // Quiet for 10 s: the initiator asks, the responder answers.
    let quiet_from = net.now;
    net.advance();
    assert_eq!(net.now - quiet_from, Duration::from_secs(10));
    assert_eq!(net.wire.len(), 1);
    net.run();
    assert_eq!(net.a.wake_at(), Some(net.now + Duration::from_secs(10)));
    // An explicit check while nothing else is pending.
    let outs = net.a.check_liveness(net.now, id).unwrap();
    net.absorb(true, outs);
    net.run();
    // Delete the CHILD SA: both sides retire it.
    let outs = net.a.delete_child(net.now, id, ca.spi_in).unwrap();
    net.absorb(true, outs);
    net.run();
    let deleted = |ev: &[Event]| {
        ev.iter()
            .filter_map(|e| match e {
                Event::ChildSaDeleted {
                    spi_in, spi_out, ..
                } => Some((*spi_in, *spi_out)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(deleted(&net.events_a), [(ca.spi_in, ca.spi_out)]);
    assert_eq!(deleted(&net.events_b), [(ca.spi_out, ca.spi_in)]);
    // Close the IKE SA.
    let outs = net.a.close(net.now, id).unwrap();
    net.absorb(true, outs);
    net.run();
    assert_eq!(closed(&net.events_a), Some(CloseReason::DeletedLocally));
    assert_eq!(closed(&net.events_b), Some(CloseReason::DeletedByPeer));
    assert_eq!((net.a.sa_count(), net.b.sa_count()), (0, 0));
    assert!(net.a.check_liveness(net.now, id).is_err());
}

#[test]
fn traffic_under_a_child_sa_puts_the_liveness_check_off() {
    let (mut a, b) = configs();
    a.dpd_interval = Some(Duration::from_secs(10));
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    let id = net.initiate();
    net.run();
    let up = net.now;
    assert_eq!(net.a.wake_at(), Some(up + Duration::from_secs(10)));
    // ESP keeps arriving: no check is due while it does.
    for s in [4, 8, 12, 16] {
        net.a.traffic_received(up + Duration::from_secs(s), id);
    }
    assert_eq!(net.a.wake_at(), Some(up + Duration::from_secs(26)));
    assert!(net.a.poll(up + Duration::from_secs(25)).is_empty());
    // An older report never brings the check forward.
    net.a.traffic_received(up, id);
    assert_eq!(net.a.wake_at(), Some(up + Duration::from_secs(26)));
    assert_eq!(net.a.liveness_checks(), 0);
    // Silence: the check goes out 10 s after the last packet.
    let outs = net.a.poll(up + Duration::from_secs(26));
    assert_eq!(outs.len(), 1);
    assert_eq!(net.a.liveness_checks(), 1);
}

#[test]
fn selectors_are_narrowed_to_the_registry_policy_or_refused() {
    let (mut a, b) = configs();
    a.local_ts = vec![ts("10.1.0.0/16")];
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.5.0/24")]));
    let mut peer = net.peer();
    peer.remote_ts = vec![TrafficSelector::any_v4()];
    let (_, outs) = net.a.initiate(net.now, peer).unwrap();
    net.absorb(true, outs);
    net.run();
    let ca = child(&net.events_a).unwrap();
    assert_eq!(ca.ts_local, [ts("10.1.5.0/24")]);
    assert_eq!(ca.ts_remote, [ts("10.2.0.0/16")]);
    check_children_match(&ca, &child(&net.events_b).unwrap());

    // A device claiming a prefix the registry does not give it.
    let (a, b) = configs();
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("192.168.0.0/16")]));
    net.initiate();
    net.run();
    assert!(established(&net.events_a).is_some(), "the IKE SA stays up");
    assert!(child(&net.events_a).is_none());
    let refused = |ev: &[Event]| {
        ev.iter().any(|e| {
            matches!(e, Event::ChildSaRefused { notify: n, .. } if *n == notify::TS_UNACCEPTABLE)
        })
    };
    assert!(refused(&net.events_a) && refused(&net.events_b));
}

/// The responder's registry entry can offer this peer less than
/// everything and refuse claims another peer holds: the claim that
/// overlaps is refused and reported, the rest of the CHILD SA stands.
#[test]
fn claims_held_by_others_are_refused_and_offers_narrow_tsr() {
    let (mut a, b) = configs();
    a.local_ts = vec![ts("10.1.0.0/16"), ts("10.7.0.0/16")];
    let id = device_id();
    let directory = Box::new(move |peer: &Identity| {
        (*peer == id).then(|| PeerEntry {
            psk: PSK.to_vec(),
            remote_ts: vec![ts("10.0.0.0/8")],
            local_ts: Some(vec![ts("10.2.0.0/16"), ts("10.3.0.0/16")]),
            conflicts: vec![ts("10.7.4.0/24")],
        })
    });
    let mut net = Net::new(a, b, directory);
    let mut peer = net.peer();
    peer.remote_ts = vec![TrafficSelector::any_v4()];
    let (_, outs) = net.a.initiate(net.now, peer).unwrap();
    net.absorb(true, outs);
    net.run();
    let ca = child(&net.events_a).unwrap();
    assert_eq!(
        ca.ts_local,
        [ts("10.1.0.0/16")],
        "10.7/16 overlaps a held /24"
    );
    assert_eq!(ca.ts_remote, [ts("10.2.0.0/16"), ts("10.3.0.0/16")]);
    let refused: Vec<_> = net
        .events_b
        .iter()
        .filter_map(|e| match e {
            Event::SelectorsRefused { refused, .. } => Some(refused.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(refused, [vec![ts("10.7.0.0/16")]]);
}

/// Route sets go either way once both sides said they take them: small
/// in one exchange, large in chunks, the latest replacing one not yet
/// sent, an empty one withdrawing everything.
#[test]
fn route_sets_are_announced_in_chunks_and_replace_each_other() {
    let (mut net, ia, ib) = up();
    let peer_routes = |ev: &[Event]| {
        ev.iter().any(|e| {
            matches!(
                e,
                Event::IkeSaEstablished {
                    peer_routes: true,
                    ..
                }
            )
        })
    };
    assert!(peer_routes(&net.events_a) && peer_routes(&net.events_b));
    let received = |ev: &[Event]| -> Vec<Vec<TrafficSelector>> {
        ev.iter()
            .filter_map(|e| match e {
                Event::RoutesReceived { prefixes, .. } => Some(prefixes.clone()),
                _ => None,
            })
            .collect()
    };
    let small = vec![ts("10.2.0.0/16"), ts("10.3.0.0/16")];
    let outs = net.b.send_routes(net.now, ib, &small).unwrap();
    net.absorb(false, outs);
    net.run();
    assert_eq!(received(&net.events_a), [small]);

    let large: Vec<TrafficSelector> = (0..3000u32)
        .map(|i| ts(&format!("10.{}.{}.0/24", 16 + i / 256, i % 256)))
        .collect();
    // Two sets in a row: the first's unsent chunks give way to the second.
    let outs = net.b.send_routes(net.now, ib, &large).unwrap();
    net.absorb(false, outs);
    let outs = net.b.send_routes(net.now, ib, &large[..5]).unwrap();
    net.absorb(false, outs);
    net.run();
    let got = received(&net.events_a);
    assert_eq!(got.last().unwrap(), &large[..5].to_vec());
    assert!(got.len() <= 3, "{} sets", got.len());
    // The device announces too; an empty set withdraws.
    let outs = net.a.send_routes(net.now, ia, &[]).unwrap();
    net.absorb(true, outs);
    net.run();
    assert_eq!(received(&net.events_b), [Vec::<TrafficSelector>::new()]);
    // A large set alone arrives whole.
    let outs = net.b.send_routes(net.now, ib, &large).unwrap();
    net.absorb(false, outs);
    net.run();
    assert_eq!(received(&net.events_a).last().unwrap(), &large);
    assert!(
        net.log.iter().all(|(_, _, _, b)| b.len() < 1280),
        "datagrams fit a 1280 path"
    );
}

#[test]
fn chacha_without_esn_and_key_id_identities() {
    let key_id = Identity::KeyId(b"SN-00042".to_vec());
    let (mut a, mut b) = configs();
    a.local_id = key_id.clone();
    a.esp_ciphers = vec![CipherSuite::ChaCha20Poly1305];
    a.esn = vec![false];
    a.ike_ciphers = vec![CipherSuite::Aes128Gcm];
    b.esn = vec![true, false];
    let mut net = Net::new(a, b, registry(key_id.clone(), PSK, vec![ts("10.1.0.0/16")]));
    net.initiate();
    net.run();
    assert_eq!(established(&net.events_b).unwrap().0, &key_id);
    let (ca, cb) = (child(&net.events_a).unwrap(), child(&net.events_b).unwrap());
    assert_eq!((ca.cipher, ca.esn), (CipherSuite::ChaCha20Poly1305, false));
    check_children_match(&ca, &cb);
}

/// Mangled and random input never panics the state machine or the views.
#[test]
fn mangled_datagrams_are_dropped_without_panics() {
    let (a, b) = configs();
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    net.initiate();
    net.run();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let log = net.log.clone();
    for (to_b, src, dst, bytes) in &log {
        for _ in 0..300 {
            let mut m = bytes.clone();
            match rnd() % 3 {
                0 => {
                    let i = (rnd() as usize) % m.len();
                    m[i] ^= 1 << (rnd() % 8);
                }
                1 => m.truncate((rnd() as usize) % m.len()),
                _ => {
                    let i = (rnd() as usize) % m.len();
                    m[i] = rnd() as u8;
                }
            }
            strait_ike::fuzz_parse(&m);
            let target = if *to_b { &mut net.b } else { &mut net.a };
            let _ = target.handle_datagram(net.now, *src, *dst, &m);
        }
    }
    for len in 0..200 {
        let junk: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        strait_ike::fuzz_parse(&junk);
        let _ = net.b.handle_datagram(net.now, log[0].1, log[0].2, &junk);
    }
    // Bit flips in an IKE_SA_INIT request can make other valid requests
    // (half-open SAs on the responder); the established pair still works.
    assert_eq!(net.a.sa_count(), 1);
    let id = match established(&net.events_a) {
        Some((_, _, spi_i, _)) => IkeSaId(spi_i),
        None => unreachable!(),
    };
    let outs = net.a.check_liveness(net.now, id).unwrap();
    net.absorb(true, outs);
    net.run();
    assert_eq!(net.a.wake_at(), None, "liveness check answered");
    assert!(closed(&net.events_a).is_none() && closed(&net.events_b).is_none());
}

// -------------------------------------------------------------------
// CREATE_CHILD_SA: rekeying (RFC 7296 §1.3, §2.8, §2.8.1, §2.18)
// -------------------------------------------------------------------

fn ike_id(events: &[Event]) -> IkeSaId {
    events
        .iter()
        .find_map(|e| match e {
            Event::IkeSaEstablished { ike_sa, .. } => Some(*ike_sa),
            _ => None,
        })
        .expect("an established IKE SA")
}

/// Every ChildSaReady, in order, with its IKE SA.
fn all_children(events: &[Event]) -> Vec<(IkeSaId, Child)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaReady { ike_sa, .. } => {
                Some((*ike_sa, child(std::slice::from_ref(e)).unwrap()))
            }
            _ => None,
        })
        .collect()
}

fn deleted(events: &[Event]) -> Vec<(u32, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaDeleted {
                spi_in, spi_out, ..
            } => Some((*spi_in, *spi_out)),
            _ => None,
        })
        .collect()
}

/// (old, new, spi_i, spi_r) of each IkeSaRekeyed.
fn rekeyed(events: &[Event]) -> Vec<(IkeSaId, IkeSaId, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaRekeyed {
                old,
                new,
                spi_i,
                spi_r,
            } => Some((*old, *new, *spi_i, *spi_r)),
            _ => None,
        })
        .collect()
}

/// The CHILD SAs reported ready and not deleted since.
fn live(events: &[Event]) -> Vec<Child> {
    let gone = deleted(events);
    all_children(events)
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| !gone.contains(&(c.spi_in, c.spi_out)))
        .collect()
}

fn up() -> (Net, IkeSaId, IkeSaId) {
    let (a, b) = configs();
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    let ia = net.initiate();
    net.run();
    let ib = ike_id(&net.events_b);
    (net, ia, ib)
}

impl Net {
    /// `rekey_child` on side a (`true`) or b.
    fn rekey_child(&mut self, on_a: bool, id: IkeSaId) {
        let outs = if on_a {
            self.a.rekey_child(self.now, id)
        } else {
            self.b.rekey_child(self.now, id)
        }
        .unwrap();
        self.absorb(on_a, outs);
    }

    fn rekey_ike(&mut self, on_a: bool, id: IkeSaId) {
        let outs = if on_a {
            self.a.rekey_ike(self.now, id)
        } else {
            self.b.rekey_ike(self.now, id)
        }
        .unwrap();
        self.absorb(on_a, outs);
    }

    fn check_liveness(&mut self, on_a: bool, id: IkeSaId) {
        let outs = if on_a {
            self.a.check_liveness(self.now, id)
        } else {
            self.b.check_liveness(self.now, id)
        }
        .unwrap();
        self.absorb(on_a, outs);
        self.run();
        let ike = if on_a { &self.a } else { &self.b };
        assert_eq!(ike.wake_at(), None, "liveness check answered");
    }
}

/// After one CHILD rekey: one new CHILD SA on each side that matches the
/// other and works in ESP, the old one deleted on both, nothing else.
fn check_one_child_rekey(net: &Net, old: &Child, ike_a: IkeSaId, ike_b: IkeSaId) -> Child {
    let ca = all_children(&net.events_a);
    let cb = all_children(&net.events_b);
    assert_eq!((ca.len(), cb.len()), (2, 2), "one new CHILD SA each side");
    let (ia, new_a) = ca.into_iter().nth(1).unwrap();
    let (ib, new_b) = cb.into_iter().nth(1).unwrap();
    assert_eq!((ia, ib), (ike_a, ike_b), "on the same IKE SA");
    check_children_match(&new_a, &new_b);
    assert_ne!(new_a.spi_in, old.spi_in);
    assert_ne!(new_a.spi_out, old.spi_out);
    assert_ne!(new_a.keys_in, old.keys_in, "fresh keys");
    assert_eq!(new_a.ts_local, old.ts_local);
    assert_eq!(new_a.ts_remote, old.ts_remote);
    assert_eq!(deleted(&net.events_a), [(old.spi_in, old.spi_out)]);
    assert_eq!(deleted(&net.events_b), [(old.spi_out, old.spi_in)]);
    assert!(closed(&net.events_a).is_none() && closed(&net.events_b).is_none());
    new_a
}

#[test]
fn child_rekey_by_either_side_with_and_without_pfs() {
    let mut request_len = Vec::new();
    for pfs in [false, true] {
        for by_a in [true, false] {
            let (mut a, mut b) = configs();
            a.child_pfs = pfs;
            b.child_pfs = pfs;
            let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
            let ia = net.initiate();
            net.run();
            let ib = ike_id(&net.events_b);
            let old = child(&net.events_a).unwrap();
            let before = net.log.len();
            net.rekey_child(by_a, if by_a { ia } else { ib });
            net.run();
            check_one_child_rekey(&net, &old, ia, ib);
            // CREATE_CHILD_SA and INFORMATIONAL (the Delete): 4 datagrams,
            // the requests from the side that rekeyed.
            let exchange: Vec<bool> = net.log[before..].iter().map(|l| l.0).collect();
            assert_eq!(exchange, [by_a, !by_a, by_a, !by_a]);
            request_len.push(net.log[before].3.len());
            assert_eq!((net.a.wake_at(), net.b.wake_at()), (None, None));
            // And once more on the new CHILD SA, from the other side.
            let old = live(&net.events_a).pop().unwrap();
            net.events_a.clear();
            net.events_b.clear();
            net.rekey_child(!by_a, if by_a { ib } else { ia });
            net.run();
            let ra = live(&net.events_a);
            let rb = live(&net.events_b);
            assert_eq!((ra.len(), rb.len()), (1, 1));
            check_children_match(&ra[0], &rb[0]);
            assert_eq!(deleted(&net.events_a), [(old.spi_in, old.spi_out)]);
        }
    }
    // With PFS the request carries a KE payload (and DH transforms):
    // Curve25519's 32 octets and more.
    assert!(request_len[2] >= request_len[0] + 40, "{request_len:?}");
    assert!(request_len[3] >= request_len[1] + 40, "{request_len:?}");
}

#[test]
fn pfs_offered_by_the_peer_is_accepted_in_a_configured_group_only() {
    // The rekey initiator offers ECP-256 first; the responder takes only
    // Curve25519: INVALID_KE_PAYLOAD, then the retry in Curve25519.
    let (mut a, mut b) = configs();
    a.child_pfs = true;
    a.dh_groups = vec![DhGroup::Ecp256, DhGroup::Curve25519];
    b.dh_groups = vec![DhGroup::Curve25519];
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    let ia = net.initiate();
    net.run();
    let ib = ike_id(&net.events_b);
    let old = child(&net.events_a).unwrap();
    let before = net.log.len();
    net.rekey_child(true, ia);
    net.run();
    check_one_child_rekey(&net, &old, ia, ib);
    assert_eq!(net.log.len() - before, 6, "refused once, then done");
}

#[test]
fn child_rekey_by_time_with_jitter() {
    let (mut a, b) = configs();
    a.child_rekey_after = Some(Duration::from_secs(100));
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    let ia = net.initiate();
    net.run();
    let ib = ike_id(&net.events_b);
    let old = child(&net.events_a).unwrap();
    let start = net.now;
    assert!(
        net.b.wake_at().is_none(),
        "the responder does not rekey by time"
    );
    net.advance();
    let waited = net.now - start;
    assert!(
        (90..=110).contains(&waited.as_secs()),
        "soft lifetime 100 s ± 10%: {waited:?}"
    );
    net.run();
    let new = check_one_child_rekey(&net, &old, ia, ib);
    // The new CHILD SA has its own soft lifetime.
    let next = net.a.wake_at().expect("next rekey scheduled");
    assert!(next >= net.now + Duration::from_secs(90));
    net.advance();
    net.run();
    assert_eq!(all_children(&net.events_a).len(), 3);
    assert_eq!(
        deleted(&net.events_a).last(),
        Some(&(new.spi_in, new.spi_out))
    );
}

#[test]
fn a_lost_create_child_sa_answer_is_resent_from_the_cache() {
    let (mut net, ia, ib) = up();
    let old = child(&net.events_a).unwrap();
    net.rekey_child(true, ia);
    net.step(); // the request reaches b, which answers
    let events_b = net.events_b.len();
    let (_, src, dst, request) = net.log.last().unwrap().clone();
    let answer = net.wire.pop_front().expect("b's answer"); // and it is lost
    assert!(net.wire.is_empty());
    // A replay of the request gets the same answer, and no new CHILD SA.
    let outs = net.b.handle_datagram(net.now, src, dst, &request);
    let [Output::Send(d)] = &outs[..] else {
        panic!("expected one datagram, got {outs:?}");
    };
    assert_eq!(d.bytes, answer.bytes);
    // a retransmits after a second; b answers from its cache again.
    net.advance();
    let retransmitted = net.wire.front().unwrap().bytes.clone();
    assert_eq!(retransmitted, request, "the same request bytes");
    net.step();
    assert_eq!(net.wire.front().unwrap().bytes, answer.bytes);
    assert_eq!(net.events_b.len(), events_b, "nothing new on b");
    net.run();
    check_one_child_rekey(&net, &old, ia, ib);
}

#[test]
fn simultaneous_child_rekeys_leave_one_new_child_sa() {
    for _ in 0..8 {
        let (mut net, ia, ib) = up();
        let old = child(&net.events_a).unwrap();
        // Both requests are on the wire before either arrives.
        net.rekey_child(true, ia);
        net.rekey_child(false, ib);
        assert_eq!(net.wire.len(), 2);
        net.run();
        // Each side reports both new CHILD SAs, then deletes two: the old
        // one and the redundant one (lowest nonce).
        assert_eq!(all_children(&net.events_a).len(), 3);
        assert_eq!(all_children(&net.events_b).len(), 3);
        let (da, db) = (deleted(&net.events_a), deleted(&net.events_b));
        assert_eq!((da.len(), db.len()), (2, 2), "{da:?} {db:?}");
        assert!(da.contains(&(old.spi_in, old.spi_out)));
        assert!(db.contains(&(old.spi_out, old.spi_in)));
        let (la, lb) = (live(&net.events_a), live(&net.events_b));
        assert_eq!((la.len(), lb.len()), (1, 1));
        check_children_match(&la[0], &lb[0]);
        assert_ne!(la[0].spi_in, old.spi_in);
        assert!(closed(&net.events_a).is_none() && closed(&net.events_b).is_none());
        assert_eq!((net.a.wake_at(), net.b.wake_at()), (None, None));
        // The survivor rekeys normally.
        let survivor = la.into_iter().next().unwrap();
        net.events_a.clear();
        net.events_b.clear();
        net.rekey_child(false, ib);
        net.run();
        assert_eq!(
            deleted(&net.events_a),
            [(survivor.spi_in, survivor.spi_out)]
        );
        check_children_match(&live(&net.events_a)[0], &live(&net.events_b)[0]);
    }
}

/// After an IKE rekey: the same IkeSaRekeyed on both sides (SPIs agree),
/// the old IKE SA gone without IkeSaClosed, the CHILD SA kept.
fn check_ike_rekey(net: &mut Net, ia: IkeSaId, ib: IkeSaId) -> (IkeSaId, IkeSaId) {
    let (ra, rb) = (rekeyed(&net.events_a), rekeyed(&net.events_b));
    assert_eq!((ra.len(), rb.len()), (1, 1), "{ra:?} {rb:?}");
    let (old_a, new_a, spi_i, spi_r) = ra[0];
    let (old_b, new_b, spi_i_b, spi_r_b) = rb[0];
    assert_eq!((old_a, old_b), (ia, ib));
    assert_eq!((spi_i, spi_r), (spi_i_b, spi_r_b));
    assert!(new_a.0 == spi_i || new_a.0 == spi_r);
    assert!(new_b.0 == spi_i || new_b.0 == spi_r);
    assert_ne!(new_a, new_b);
    assert_ne!(new_a, ia);
    assert_eq!(
        (net.a.sa_count(), net.b.sa_count()),
        (1, 1),
        "old IKE SAs gone"
    );
    assert!(closed(&net.events_a).is_none() && closed(&net.events_b).is_none());
    assert!(deleted(&net.events_a).is_empty() && deleted(&net.events_b).is_empty());
    assert!(net.a.check_liveness(net.now, ia).is_err());
    (new_a, new_b)
}

#[test]
fn ike_rekey_by_either_side_then_child_rekey_and_liveness() {
    for by_a in [true, false] {
        let (mut net, ia, ib) = up();
        let old = child(&net.events_a).unwrap();
        net.rekey_ike(by_a, if by_a { ia } else { ib });
        net.run();
        let (na, nb) = check_ike_rekey(&mut net, ia, ib);
        // The rekey initiator is the new SA's initiator (§2.18).
        let (_, _, spi_i, _) = rekeyed(&net.events_a)[0];
        assert_eq!(if by_a { na.0 } else { nb.0 }, spi_i);
        // The CHILD SA, now under the new IKE SA, rekeys there.
        net.rekey_child(!by_a, if by_a { nb } else { na });
        net.run();
        check_one_child_rekey(&net, &old, na, nb);
        net.check_liveness(true, na);
        net.check_liveness(false, nb);
        // And the new IKE SA rekeys again, and closes normally.
        net.events_a.clear();
        net.events_b.clear();
        net.rekey_ike(!by_a, if by_a { nb } else { na });
        net.run();
        let (na2, _) = check_ike_rekey(&mut net, na, nb);
        let outs = net.a.close(net.now, na2).unwrap();
        net.absorb(true, outs);
        net.run();
        assert_eq!(closed(&net.events_a), Some(CloseReason::DeletedLocally));
        assert_eq!(deleted(&net.events_a).len(), 1, "the CHILD SA goes with it");
        assert_eq!((net.a.sa_count(), net.b.sa_count()), (0, 0));
    }
}

#[test]
fn ike_rekey_by_time() {
    let (a, mut b) = configs();
    b.ike_rekey_after = Some(Duration::from_secs(500));
    let mut net = Net::new(a, b, registry(device_id(), PSK, vec![ts("10.1.0.0/16")]));
    let ia = net.initiate();
    net.run();
    let ib = ike_id(&net.events_b);
    let start = net.now;
    net.advance();
    assert!((450..=550).contains(&(net.now - start).as_secs()));
    net.run();
    let (na, _) = check_ike_rekey(&mut net, ia, ib);
    net.check_liveness(true, na);
    assert!(
        net.b.wake_at().is_some(),
        "the new IKE SA has its soft lifetime"
    );
}

#[test]
fn simultaneous_ike_rekeys_leave_one_new_ike_sa() {
    for _ in 0..8 {
        let (mut net, ia, ib) = up();
        let old = child(&net.events_a).unwrap();
        net.rekey_ike(true, ia);
        net.rekey_ike(false, ib);
        assert_eq!(net.wire.len(), 2);
        net.run();
        let (na, nb) = check_ike_rekey(&mut net, ia, ib);
        assert_eq!((net.a.wake_at(), net.b.wake_at()), (None, None));
        net.check_liveness(true, na);
        net.check_liveness(false, nb);
        net.rekey_child(true, na);
        net.run();
        check_one_child_rekey(&net, &old, na, nb);
    }
}

#[test]
fn a_child_rekey_during_an_ike_rekey_waits_and_moves_with_it() {
    let (mut net, ia, ib) = up();
    let old = child(&net.events_a).unwrap();
    net.rekey_ike(true, ia);
    net.rekey_child(true, ia); // queued behind the IKE rekey
    assert_eq!(net.wire.len(), 1);
    net.run();
    let ra = rekeyed(&net.events_a);
    let rb = rekeyed(&net.events_b);
    assert_eq!((ra.len(), rb.len()), (1, 1));
    assert_eq!((ra[0].0, rb[0].0), (ia, ib));
    let (na, nb) = (ra[0].1, rb[0].1);
    let new = all_children(&net.events_a);
    assert_eq!(new.len(), 2);
    assert_eq!(new[1].0, na, "made on the new IKE SA");
    assert_eq!(all_children(&net.events_b)[1].0, nb);
    check_children_match(&new[1].1, &all_children(&net.events_b)[1].1);
    assert_eq!(deleted(&net.events_a), [(old.spi_in, old.spi_out)]);
    assert_eq!(deleted(&net.events_b), [(old.spi_out, old.spi_in)]);
    assert_eq!((net.a.sa_count(), net.b.sa_count()), (1, 1));
}
