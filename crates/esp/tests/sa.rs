//! End-to-end behaviour of outbound and inbound SAs through the public API.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use strait_esp::*;

const SPI: u32 = 0x0000_c0de;
const NOW: Duration = Duration::from_secs(1_000);
const FRAME: usize = 2048;

fn key_for(suite: CipherSuite) -> Vec<u8> {
    (0..suite.key_material_len() as u8)
        .map(|i| i.wrapping_mul(37) ^ 0x5a)
        .collect()
}

fn config(suite: CipherSuite, key: &[u8], esn: bool) -> SaConfig<'_> {
    let mut c = SaConfig::new(SPI, suite, key, NOW);
    c.esn = esn;
    c
}

/// Writes an IPv4 inner packet of `len` bytes at `at`; returns its range.
fn put_ipv4(frame: &mut [u8], at: usize, len: usize, src: [u8; 4], dst: [u8; 4]) -> Range<usize> {
    let p = &mut frame[at..at + len];
    p.fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    at..at + len
}

/// Writes an IPv6 inner packet of `len` bytes at `at`.
fn put_ipv6(frame: &mut [u8], at: usize, len: usize) -> Range<usize> {
    let p = &mut frame[at..at + len];
    p.fill(0);
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&"2001:db8:1::1".parse::<Ipv6Addr>().unwrap().octets());
    p[24..40].copy_from_slice(&"2001:db8:2::1".parse::<Ipv6Addr>().unwrap().octets());
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    at..at + len
}

fn ipv4_frame(len: usize) -> (Vec<u8>, Range<usize>) {
    let mut f = vec![0u8; FRAME];
    let r = put_ipv4(&mut f, TUNNEL_HEADROOM, len, [10, 1, 0, 1], [10, 2, 0, 1]);
    (f, r)
}

#[test]
fn round_trip_all_ciphers_families_and_encapsulations() {
    for suite in CipherSuite::ALL {
        let key = key_for(suite);
        for esn in [false, true] {
            let out = OutboundSa::new(&config(suite, &key, esn)).unwrap();
            let mut worker = out.worker();
            let mut sad =
                SadIn::from_sas([InboundSa::new(&config(suite, &key, esn)).unwrap()]).unwrap();
            for v6 in [false, true] {
                for udp in [None, Some(UdpEncap::DEFAULT)] {
                    for len in [40usize, 41, 42, 43, 64, 1024, 1400] {
                        let mut frame = vec![0u8; FRAME];
                        let inner = if v6 {
                            put_ipv6(&mut frame, TUNNEL_HEADROOM, len)
                        } else {
                            put_ipv4(
                                &mut frame,
                                TUNNEL_HEADROOM,
                                len,
                                [10, 1, 0, 1],
                                [10, 2, 0, 1],
                            )
                        };
                        let original = frame[inner.clone()].to_vec();
                        let sealed = worker.seal(&mut frame, inner.clone(), NOW).unwrap();
                        assert_eq!(sealed.esp.len(), sealed_len(len));
                        assert_eq!(sealed.esp.start, inner.start - ESP_HEADROOM);
                        assert_ne!(&frame[inner.clone()], &original[..], "not encrypted");
                        let outer = OuterHeader::V4(OuterIpv4 {
                            src: Ipv4Addr::new(192, 0, 2, 1),
                            dst: Ipv4Addr::new(198, 51, 100, 1),
                            ttl: 64,
                            tos: 0,
                            ident: 1,
                            dont_fragment: true,
                            udp,
                        });
                        let wire = outer.write(&mut frame, sealed.esp.clone()).unwrap();
                        // Receive: move the packet to a fresh frame offset 0, as a NIC would.
                        let mut rx = vec![0u8; FRAME];
                        rx[..wire.len()].copy_from_slice(&frame[wire.clone()]);
                        let arrival = classify_outer(&rx[..wire.len()]).unwrap();
                        assert_eq!(arrival.udp.is_some(), udp.is_some());
                        let ArrivalKind::Esp(esp) = arrival.kind else {
                            panic!("expected ESP, got {:?}", arrival.kind)
                        };
                        let opened = sad.open(&mut rx, esp, NOW).unwrap();
                        assert_eq!(opened.seq, sealed.seq);
                        assert_eq!(
                            opened.next_header,
                            if v6 {
                                NextHeader::Ipv6
                            } else {
                                NextHeader::Ipv4
                            }
                        );
                        assert_eq!(&rx[opened.inner], &original[..], "{suite:?} v6={v6} {len}");
                    }
                }
            }
            let c = sad.get(SPI).unwrap().counters();
            assert_eq!((c.packets, c.total_drops()), (28, 0));
            assert_eq!(worker.counters().packets, 28);
        }
    }
}

#[test]
fn any_tampered_byte_fails_and_leaves_the_window_alone() {
    for suite in CipherSuite::ALL {
        let key = key_for(suite);
        let out = OutboundSa::new(&config(suite, &key, true)).unwrap();
        let mut worker = out.worker();
        // Use the second packet: flipping the low bit of sequence number 1
        // would give 0, which is rejected before authentication as too old.
        let (mut frame, inner) = ipv4_frame(64);
        worker.seal(&mut frame.clone(), inner.clone(), NOW).unwrap();
        let sealed = worker.seal(&mut frame, inner, NOW).unwrap();
        assert_eq!(sealed.seq, 2);
        let mut sad =
            SadIn::from_sas([InboundSa::new(&config(suite, &key, true)).unwrap()]).unwrap();
        for i in sealed.esp.clone() {
            for bit in [0x01u8, 0x80] {
                let mut copy = frame.clone();
                copy[i] ^= bit;
                let got = sad.open(&mut copy, sealed.esp.clone(), NOW);
                let offset = i - sealed.esp.start;
                let expected = if offset < 4 {
                    DropReason::BadSpi
                } else {
                    DropReason::AuthFailed
                };
                assert_eq!(got, Err(expected), "{suite:?} byte {offset} bit {bit:#x}");
            }
        }
        let sa = sad.get(SPI).unwrap();
        assert_eq!(
            sa.replay_window().top(),
            0,
            "window moved before authentication"
        );
        assert_eq!(
            sa.counters().drops(DropReason::AuthFailed),
            2 * (sealed.esp.len() as u64 - 4)
        );
        // The genuine packet still opens.
        sad.open(&mut frame, sealed.esp, NOW).unwrap();
    }
}

#[test]
fn replay_and_replay_old() {
    let key = key_for(CipherSuite::Aes256Gcm);
    let mut cfg = config(CipherSuite::Aes256Gcm, &key, false);
    cfg.replay_window = 64;
    let out = OutboundSa::new(&cfg).unwrap();
    let mut worker = out.worker();
    let mut inbound = InboundSa::new(&cfg).unwrap();
    let mut packets = Vec::new();
    for _ in 0..70 {
        let (mut f, inner) = ipv4_frame(100);
        let s = worker.seal(&mut f, inner, NOW).unwrap();
        packets.push((f, s.esp));
    }
    let (mut f, esp) = packets[0].clone();
    inbound.open(&mut f, esp.clone(), NOW).unwrap();
    let (mut f, _) = packets[0].clone();
    assert_eq!(
        inbound.open(&mut f, esp.clone(), NOW),
        Err(DropReason::Replay)
    );
    // Packet 70 moves the window to 70; packet 6 (seq 6) is 64 behind: old.
    let (mut f, e) = packets[69].clone();
    inbound.open(&mut f, e, NOW).unwrap();
    let (mut f, e) = packets[5].clone();
    assert_eq!(inbound.open(&mut f, e, NOW), Err(DropReason::ReplayOld));
    // Seq 7 is exactly at the left edge and still accepted once.
    let (mut f, e) = packets[6].clone();
    inbound.open(&mut f, e.clone(), NOW).unwrap();
    let (mut f, _) = packets[6].clone();
    assert_eq!(inbound.open(&mut f, e, NOW), Err(DropReason::Replay));
    let c = inbound.counters();
    assert_eq!(c.drops(DropReason::Replay), 2);
    assert_eq!(c.drops(DropReason::ReplayOld), 1);
    assert_eq!(c.packets, 3);
}

#[test]
fn esn_wraps_from_2_pow_32_minus_1_to_2_pow_32_on_both_ends() {
    for suite in CipherSuite::ALL {
        let key = key_for(suite);
        let cfg = config(suite, &key, true);
        let out = OutboundSa::resumed(&cfg, (1 << 32) - 2).unwrap();
        let mut worker = out.worker();
        let mut inbound = InboundSa::resumed(&cfg, (1 << 32) - 3).unwrap();
        let mut sealed = Vec::new();
        for _ in 0..3 {
            let (mut f, inner) = ipv4_frame(60);
            let s = worker.seal(&mut f, inner, NOW).unwrap();
            sealed.push((f, s));
        }
        let seqs: Vec<u64> = sealed.iter().map(|(_, s)| s.seq).collect();
        assert_eq!(seqs, vec![(1 << 32) - 2, (1 << 32) - 1, 1 << 32]);
        let (f, s) = &sealed[2];
        let wire_low = u32::from_be_bytes(f[s.esp.start + 4..s.esp.start + 8].try_into().unwrap());
        assert_eq!(wire_low, 0, "only the low half is on the wire");
        // Deliver the post-wrap packet first, then the two before it.
        for i in [2, 0, 1] {
            let (mut f, s) = sealed[i].clone();
            let o = inbound.open(&mut f, s.esp.clone(), NOW).unwrap();
            assert_eq!(o.seq, s.seq);
        }
        assert_eq!(inbound.replay_window().top(), 1 << 32);
        // Without ESN the same keys refuse the post-wrap packet's AAD.
        let mut plain = InboundSa::resumed(&config(suite, &key, false), 10).unwrap();
        let (mut f, s) = sealed[2].clone();
        assert_eq!(plain.open(&mut f, s.esp, NOW), Err(DropReason::ReplayOld));
    }
}

#[test]
fn sequence_space_exhaustion_refuses_and_reports() {
    let key = key_for(CipherSuite::Aes128Gcm);
    // 32-bit: 2^32-1 is the last number that may be sent (RFC 4303 §3.3.3).
    let cfg = config(CipherSuite::Aes128Gcm, &key, false);
    let out = OutboundSa::resumed(&cfg, u64::from(u32::MAX) - 1).unwrap();
    let mut w = out.worker();
    let (mut f, inner) = ipv4_frame(60);
    assert_eq!(
        w.seal(&mut f, inner.clone(), NOW).unwrap().seq,
        u64::from(u32::MAX) - 1
    );
    let (mut f, inner) = ipv4_frame(60);
    assert_eq!(
        w.seal(&mut f, inner.clone(), NOW).unwrap().seq,
        u64::from(u32::MAX)
    );
    for _ in 0..3 {
        let (mut f, inner) = ipv4_frame(60);
        assert_eq!(w.seal(&mut f, inner, NOW), Err(DropReason::SeqExhausted));
    }
    // A second worker sees the same exhausted space.
    let (mut f, inner) = ipv4_frame(60);
    assert_eq!(
        out.worker().seal(&mut f, inner, NOW),
        Err(DropReason::SeqExhausted)
    );
    assert_eq!(w.counters().drops(DropReason::SeqExhausted), 3);
    assert_eq!(out.poll_event(NOW), Some(SaEvent::RekeyNeeded));
    assert_eq!(out.poll_event(NOW), Some(SaEvent::Expired));
    assert_eq!(out.poll_event(NOW), None);

    // 64-bit: 2^64-1 is the last.
    let chacha_key = key_for(CipherSuite::ChaCha20Poly1305);
    let cfg = config(CipherSuite::ChaCha20Poly1305, &chacha_key, true);
    let out = OutboundSa::resumed(&cfg, u64::MAX).unwrap();
    let mut w = out.worker();
    let (mut f, inner) = ipv4_frame(60);
    let s = w.seal(&mut f, inner, NOW).unwrap();
    assert_eq!(s.seq, u64::MAX);
    let mut inbound = InboundSa::resumed(&cfg, u64::MAX - 1).unwrap();
    inbound.open(&mut f, s.esp, NOW).unwrap();
    let (mut f, inner) = ipv4_frame(60);
    assert_eq!(w.seal(&mut f, inner, NOW), Err(DropReason::SeqExhausted));
    assert_eq!(out.lifetime_state(NOW), LifetimeState::Expired);
    assert!(OutboundSa::resumed(&config(CipherSuite::Aes128Gcm, &key, false), 1 << 32).is_err());
}

#[test]
fn lifetimes_soft_then_hard() {
    let key = key_for(CipherSuite::Aes128Gcm);
    let mut cfg = config(CipherSuite::Aes128Gcm, &key, true);
    cfg.lifetime = Lifetime {
        soft_bytes: Some(250),
        hard_bytes: Some(500),
        soft_time: Some(Duration::from_secs(60)),
        hard_time: Some(Duration::from_secs(120)),
    };
    let out = OutboundSa::new(&cfg).unwrap();
    let mut w = out.worker();
    let mut inbound = InboundSa::new(&cfg).unwrap();
    assert_eq!(out.poll_event(NOW), None);
    let mut results = Vec::new();
    for _ in 0..6 {
        let (mut f, inner) = ipv4_frame(100);
        let r = w.seal(&mut f, inner, NOW);
        if let Ok(s) = &r {
            inbound.open(&mut f, s.esp.clone(), NOW).unwrap();
        }
        results.push(r.map(|s| s.seq));
    }
    // 100-byte packets, checked against the bytes sealed before them: the
    // fourth sees 300 >= 250 (soft, still sent), the sixth sees 500 (hard).
    assert_eq!(
        results,
        vec![
            Ok(1),
            Ok(2),
            Ok(3),
            Ok(4),
            Ok(5),
            Err(DropReason::SaExpired)
        ]
    );
    w.flush();
    assert_eq!(out.poll_event(NOW), Some(SaEvent::RekeyNeeded));
    assert_eq!(out.poll_event(NOW), Some(SaEvent::Expired));
    assert_eq!(inbound.poll_event(NOW), Some(SaEvent::RekeyNeeded));
    assert_eq!(inbound.poll_event(NOW), Some(SaEvent::Expired));
    let (mut f, inner) = ipv4_frame(100);
    assert_eq!(w.seal(&mut f, inner, NOW), Err(DropReason::SaExpired));

    // By time alone: soft at +60 s, hard at +120 s after creation.
    let mut cfg = config(CipherSuite::Aes128Gcm, &key, true);
    cfg.lifetime = Lifetime {
        soft_time: Some(Duration::from_secs(60)),
        hard_time: Some(Duration::from_secs(120)),
        ..Lifetime::UNLIMITED
    };
    let out = OutboundSa::new(&cfg).unwrap();
    let mut w = out.worker();
    let mut inbound = InboundSa::new(&cfg).unwrap();
    let t = |s: u64| NOW + Duration::from_secs(s);
    assert_eq!(out.poll_event(t(59)), None);
    assert_eq!(out.poll_event(t(60)), Some(SaEvent::RekeyNeeded));
    assert_eq!(out.poll_event(t(61)), None);
    let (mut f, inner) = ipv4_frame(100);
    let s = w.seal(&mut f, inner, t(119)).unwrap();
    assert_eq!(inbound.lifetime_state(t(119)), LifetimeState::RekeyNeeded);
    let mut late = f.clone();
    inbound.open(&mut f, s.esp.clone(), t(119)).unwrap();
    let (mut f2, inner) = ipv4_frame(100);
    let s2 = w.seal(&mut f2, inner.clone(), t(119)).unwrap();
    assert_eq!(
        inbound.open(&mut f2, s2.esp, t(120)),
        Err(DropReason::SaExpired)
    );
    let (mut f3, _) = ipv4_frame(100);
    assert_eq!(w.seal(&mut f3, inner, t(120)), Err(DropReason::SaExpired));
    assert_eq!(out.poll_event(t(120)), Some(SaEvent::Expired));
    assert_eq!(
        inbound.open(&mut late, s.esp, t(500)),
        Err(DropReason::Replay)
    );
}

#[test]
fn selectors_are_enforced_both_ways() {
    let key = key_for(CipherSuite::Aes128Gcm);
    let lan = |s: &str, l| IpCidr::new(s.parse().unwrap(), l).unwrap();
    let mut narrow = config(CipherSuite::Aes128Gcm, &key, true);
    narrow.selectors =
        TrafficSelectors::new([
            TrafficSelector::new(lan("10.1.0.0", 16), lan("10.2.0.0", 16)).unwrap(),
        ])
        .unwrap();
    let wide = config(CipherSuite::Aes128Gcm, &key, true);

    let narrow_out = OutboundSa::new(&narrow).unwrap();
    let mut f = vec![0u8; FRAME];
    let inner = put_ipv4(&mut f, TUNNEL_HEADROOM, 60, [10, 9, 0, 1], [10, 2, 0, 1]);
    assert_eq!(
        narrow_out.worker().seal(&mut f, inner, NOW),
        Err(DropReason::SelectorMismatch)
    );

    let wide_out = OutboundSa::new(&wide).unwrap();
    let mut w = wide_out.worker();
    let mut inbound = InboundSa::new(&narrow).unwrap();
    let inner = put_ipv4(&mut f, TUNNEL_HEADROOM, 60, [10, 9, 0, 1], [10, 2, 0, 1]);
    let s = w.seal(&mut f, inner, NOW).unwrap();
    assert_eq!(
        inbound.open(&mut f, s.esp, NOW),
        Err(DropReason::SelectorMismatch)
    );
    let inner = put_ipv4(&mut f, TUNNEL_HEADROOM, 60, [10, 1, 3, 4], [10, 2, 5, 6]);
    let s = w.seal(&mut f, inner, NOW).unwrap();
    inbound.open(&mut f, s.esp, NOW).unwrap();
    // IPv6 is not covered by an IPv4-only selector list.
    let inner = put_ipv6(&mut f, TUNNEL_HEADROOM, 80);
    let s = w.seal(&mut f, inner, NOW).unwrap();
    assert_eq!(
        inbound.open(&mut f, s.esp, NOW),
        Err(DropReason::SelectorMismatch)
    );
    assert_eq!(inbound.counters().drops(DropReason::SelectorMismatch), 2);
}

#[test]
fn seal_checks_room_and_inner_packet() {
    let key = key_for(CipherSuite::Aes128Gcm);
    let out = OutboundSa::new(&config(CipherSuite::Aes128Gcm, &key, true)).unwrap();
    let mut w = out.worker();
    let mut f = vec![0u8; 200];
    let inner = put_ipv4(&mut f, ESP_HEADROOM - 1, 60, [10, 0, 0, 1], [10, 0, 0, 2]);
    assert_eq!(w.seal(&mut f, inner, NOW), Err(DropReason::NoRoom));
    // 61 bytes need 1 pad + 2 trailer + 16 ICV = 19 bytes of tail room.
    let inner = put_ipv4(&mut f, 200 - 61 - 18, 61, [10, 0, 0, 1], [10, 0, 0, 2]);
    assert_eq!(w.seal(&mut f, inner, NOW), Err(DropReason::NoRoom));
    let inner = put_ipv4(&mut f, 200 - 61 - 19, 61, [10, 0, 0, 1], [10, 0, 0, 2]);
    assert_eq!(w.seal(&mut f, inner, NOW).unwrap().esp.end, 200);
    // Range disagrees with the IP total length.
    let inner = put_ipv4(&mut f, 16, 60, [10, 0, 0, 1], [10, 0, 0, 2]);
    assert_eq!(w.seal(&mut f, 16..70, NOW), Err(DropReason::BadInner));
    assert_eq!(
        w.seal(&mut f, inner.start..inner.start + 10, NOW),
        Err(DropReason::BadInner)
    );
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 50..40;
    assert_eq!(w.seal(&mut f, backwards, NOW), Err(DropReason::NoRoom));
    assert_eq!(w.counters().packets, 1);
    assert_eq!(w.counters().drops(DropReason::NoRoom), 3);
}

#[test]
fn open_rejects_short_and_unknown() {
    let key = key_for(CipherSuite::Aes128Gcm);
    let mut sad =
        SadIn::from_sas([InboundSa::new(&config(CipherSuite::Aes128Gcm, &key, true)).unwrap()])
            .unwrap();
    let mut buf = vec![0u8; 64];
    assert_eq!(sad.open(&mut buf, 0..3, NOW), Err(DropReason::Truncated));
    buf[..4].copy_from_slice(&SPI.to_be_bytes());
    assert_eq!(sad.open(&mut buf, 0..33, NOW), Err(DropReason::Truncated));
    assert_eq!(sad.open(&mut buf, 0..65, NOW), Err(DropReason::Truncated));
    buf[..4].copy_from_slice(&0x9999u32.to_be_bytes());
    assert_eq!(sad.open(&mut buf, 0..64, NOW), Err(DropReason::BadSpi));
    assert!(matches!(
        SadIn::new([(300u32, ()), (300, ())]),
        Err(ConfigError::DuplicateSpi(300))
    ));
    assert!(matches!(
        SadIn::new([(5u32, ())]),
        Err(ConfigError::ReservedSpi(5))
    ));
}

/// Builds an ESP packet with ring directly, bypassing the crate's framing,
/// so malformed trailers can be authenticated.
fn craft(key: &[u8], seq: u32, plaintext_with_trailer: &[u8]) -> Vec<u8> {
    let sealing = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key[..16]).unwrap());
    let iv = (u64::from(seq) ^ 0xdead_beef).to_be_bytes();
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&key[16..20]);
    nonce[4..].copy_from_slice(&iv);
    let mut pkt = Vec::new();
    pkt.extend_from_slice(&SPI.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(&iv);
    let mut body = plaintext_with_trailer.to_vec();
    let tag = sealing
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&pkt[..8]),
            &mut body,
        )
        .unwrap();
    pkt.extend_from_slice(&body);
    pkt.extend_from_slice(tag.as_ref());
    pkt
}

#[test]
fn authenticated_but_malformed_payloads_have_named_reasons() {
    let key = key_for(CipherSuite::Aes128Gcm);
    let mut inbound = InboundSa::new(&config(CipherSuite::Aes128Gcm, &key, false)).unwrap();
    let mut v4 = vec![0u8; FRAME];
    put_ipv4(&mut v4, 0, 42, [10, 0, 0, 1], [10, 0, 0, 2]);
    let v4 = &v4[..42];
    let mut v6 = vec![0u8; FRAME];
    put_ipv6(&mut v6, 0, 42);
    let v6 = &v6[..42];
    let with = |p: &[u8], t: &[u8]| [p, t].concat();
    let cases: Vec<(&str, Vec<u8>, Result<usize, DropReason>)> = vec![
        ("good, no padding", with(v4, &[0, 4]), Ok(42)),
        (
            "good, TFC padding after the packet",
            with(&with(v4, &[9; 4]), &[0, 4]),
            Ok(42),
        ),
        (
            "pad bytes not 1,2,3",
            with(v4, &[1, 3, 2, 4]),
            Err(DropReason::BadPadding),
        ),
        (
            "pad length beyond payload",
            vec![0x45, 0, 200, 4],
            Err(DropReason::BadPadding),
        ),
        (
            "dummy packet",
            with(v4, &[0, 59]),
            Err(DropReason::DummyPacket),
        ),
        (
            "transport-mode next header",
            with(v4, &[0, 6]),
            Err(DropReason::BadInner),
        ),
        (
            "IPv6 under next header 4",
            with(v6, &[0, 4]),
            Err(DropReason::BadInner),
        ),
        (
            "IPv4 under next header 41",
            with(v4, &[0, 41]),
            Err(DropReason::BadInner),
        ),
        (
            "total length beyond payload",
            with(&v4[..40], &[1, 2, 2, 4]),
            Err(DropReason::BadInner),
        ),
        ("empty payload", vec![1, 2, 2, 4], Err(DropReason::BadInner)),
    ];
    for (seq, (what, plain, expected)) in cases.into_iter().enumerate() {
        let mut pkt = craft(&key, seq as u32 + 1, &plain);
        let len = pkt.len();
        let got = inbound.open(&mut pkt, 0..len, NOW).map(|o| o.inner.len());
        assert_eq!(got, expected, "{what}");
        // Authenticated packets always advance the window.
        assert_eq!(inbound.replay_window().top(), seq as u64 + 1, "{what}");
    }
    assert_eq!(inbound.counters().packets, 2);
    assert_eq!(inbound.counters().drops(DropReason::BadInner), 5);
}

#[test]
fn workers_share_an_sa_without_repeating_a_sequence_number() {
    let key = key_for(CipherSuite::Aes128Gcm);
    let mut cfg = config(CipherSuite::Aes128Gcm, &key, true);
    cfg.seq_block = 64;
    let out: Arc<OutboundSa> = OutboundSa::new(&cfg).unwrap();
    let per_worker = 3_000;
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let mut w = out.worker();
            std::thread::spawn(move || {
                let (mut f, inner) = ipv4_frame(64);
                let template = f.clone();
                (0..per_worker)
                    .map(|_| {
                        f.copy_from_slice(&template);
                        w.seal(&mut f, inner.clone(), NOW).unwrap().seq
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for h in handles {
        let seqs = h.join().unwrap();
        // Within one worker, numbers only increase.
        assert!(seqs.windows(2).all(|p| p[0] < p[1]));
        all.extend(seqs);
    }
    assert_eq!(all.len(), 3 * per_worker);
    // Blocks are handed out contiguously: at most 3 partly used blocks.
    assert!(*all.last().unwrap() <= 3 * per_worker as u64 + 3 * 64);
}

#[test]
fn a_limited_space_stops_at_its_limit_until_extended() {
    let key = key_for(CipherSuite::Aes128Gcm);
    let mut cfg = config(CipherSuite::Aes128Gcm, &key, true);
    cfg.seq_block = 4;
    // Numbers 101..=110 are reserved (e.g. recorded durably by the owner).
    let space = SeqSpace::limited(101, 110);
    let out = OutboundSa::with_space(&cfg, Arc::clone(&space)).unwrap();
    let mut w = out.worker();
    let seal = |w: &mut OutboundWorker| {
        let (mut f, inner) = ipv4_frame(60);
        w.seal(&mut f, inner, NOW).map(|s| s.seq)
    };
    let got: Vec<u64> = (0..10).map(|_| seal(&mut w).unwrap()).collect();
    assert_eq!(got, (101..=110).collect::<Vec<_>>());
    // The last block was cut at the limit; nothing above it is sealed.
    assert_eq!(seal(&mut w), Err(DropReason::SeqUnreserved));
    assert_eq!(seal(&mut w), Err(DropReason::SeqUnreserved));
    assert_eq!(w.counters().drops(DropReason::SeqUnreserved), 2);
    // Waiting for a reservation is not the end of the SA.
    assert_eq!(out.lifetime_state(NOW), LifetimeState::Fresh);
    assert_eq!(out.poll_event(NOW), None);
    space.extend(112);
    assert_eq!(seal(&mut w), Ok(111));
    assert_eq!(seal(&mut w), Ok(112));
    assert_eq!(seal(&mut w), Err(DropReason::SeqUnreserved));
    // Extending never lowers the limit.
    space.extend(50);
    assert_eq!(space.limit(), 112);
    space.extend(200);
    // Freezing stops reservations and says where sealing stopped.
    assert_eq!(seal(&mut w), Ok(113));
    assert_eq!(
        space.freeze(),
        117,
        "the worker holds 114..=116 in its block"
    );
    assert_eq!(seal(&mut w), Ok(114), "a block already reserved is used up");
    let mut fresh = out.worker();
    assert_eq!(seal(&mut fresh), Err(DropReason::SeqUnreserved));
}

#[test]
fn a_rebuilt_inbound_sa_keeps_its_replay_window() {
    let key = key_for(CipherSuite::Aes128Gcm);
    let cfg = config(CipherSuite::Aes128Gcm, &key, true);
    let out = OutboundSa::new(&cfg).unwrap();
    let mut w = out.worker();
    let mut inbound = InboundSa::new(&cfg).unwrap();
    let mut sent = Vec::new();
    for _ in 0..5 {
        let (mut f, inner) = ipv4_frame(60);
        let s = w.seal(&mut f, inner, NOW).unwrap();
        sent.push((f.clone(), s.esp.clone()));
        inbound.open(&mut f, s.esp, NOW).unwrap();
    }
    for window in [cfg.replay_window, 2 * cfg.replay_window] {
        let mut cfg2 = cfg.clone();
        cfg2.replay_window = window;
        let mut rebuilt = InboundSa::carried_over(&cfg2, &inbound).unwrap();
        assert_eq!(rebuilt.replay_window().top(), 5);
        for (f, esp) in &sent {
            let mut f = f.clone();
            assert_eq!(
                rebuilt.open(&mut f, esp.clone(), NOW).map(|o| o.seq),
                Err(DropReason::Replay),
                "window {window}"
            );
        }
    }
}

#[test]
fn sas_sharing_a_space_never_repeat_a_number() {
    // An SA rebuilt for a changed selector or lifetime while workers may
    // still seal with the old one: both draw from one space.
    let key = key_for(CipherSuite::Aes256Gcm);
    let mut cfg = config(CipherSuite::Aes256Gcm, &key, true);
    cfg.seq_block = 8;
    let space = SeqSpace::unlimited(1);
    let old = OutboundSa::with_space(&cfg, Arc::clone(&space)).unwrap();
    let mut cfg2 = cfg.clone();
    cfg2.lifetime.soft_bytes = Some(1 << 40);
    cfg2.lifetime.hard_bytes = Some(1 << 41);
    let new = OutboundSa::with_space(&cfg2, Arc::clone(&space)).unwrap();
    let (mut a, mut b) = (old.worker(), new.worker());
    let mut seen = BTreeSet::new();
    for i in 0..100 {
        let w = if i % 3 == 0 { &mut a } else { &mut b };
        let (mut f, inner) = ipv4_frame(60);
        assert!(seen.insert(w.seal(&mut f, inner, NOW).unwrap().seq));
    }
    assert_eq!(seen.len(), 100);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Reordered and duplicated delivery within the window: each sealed
    /// packet is accepted exactly once, matching a naive model.
    #[test]
    fn reordering_accepted_exactly_once(
        order in proptest::collection::vec(0usize..40, 1..120),
        window_blocks in 1u32..4,
    ) {
        let key = key_for(CipherSuite::ChaCha20Poly1305);
        let mut cfg = config(CipherSuite::ChaCha20Poly1305, &key, true);
        cfg.replay_window = window_blocks * 64;
        let out = OutboundSa::new(&cfg).unwrap();
        let mut w = out.worker();
        let sealed: Vec<(Vec<u8>, Range<usize>)> = (0..40)
            .map(|_| {
                let (mut f, inner) = ipv4_frame(48);
                let s = w.seal(&mut f, inner, NOW).unwrap();
                (f, s.esp)
            })
            .collect();
        let mut inbound = InboundSa::new(&cfg).unwrap();
        let mut seen = BTreeSet::new();
        let mut top = 0u64;
        for i in order {
            let seq = i as u64 + 1;
            let expected = if seq + u64::from(cfg.replay_window) <= top {
                Err(DropReason::ReplayOld)
            } else if !seen.insert(seq) {
                Err(DropReason::Replay)
            } else {
                top = top.max(seq);
                Ok(seq)
            };
            let (mut f, esp) = sealed[i].clone();
            let got = inbound.open(&mut f, esp, NOW).map(|o| o.seq);
            prop_assert_eq!(got, expected);
        }
        prop_assert_eq!(inbound.counters().packets, seen.len() as u64);
    }
}

#[test]
fn addresses_in_arrival_are_reported() {
    let mut buf = vec![0u8; 200];
    let h = OuterHeader::V6(OuterIpv6 {
        src: "2001:db8::a".parse().unwrap(),
        dst: "2001:db8::b".parse().unwrap(),
        hop_limit: 9,
        traffic_class: 0,
        flow_label: 0,
        udp: None,
    });
    let frame = h.write(&mut buf, 40..120).unwrap();
    let a = classify_outer(&buf[frame]).unwrap();
    assert_eq!(a.src, "2001:db8::a".parse::<IpAddr>().unwrap());
    assert_eq!(a.kind, ArrivalKind::Esp(40..120));
}
