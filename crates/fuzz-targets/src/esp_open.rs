//! `esp_open`: ESP inbound processing with a real SA.
//!
//! The first bytes choose the SA (cipher, ESN, replay window, a resumed
//! window top); the rest is a sequence of packets, each one of:
//!
//! * raw bytes opened as an ESP packet (SPI forced to the SA's on request,
//!   any range over the buffer), and classified as an outer packet;
//! * an inner packet from fuzzer bytes sealed by the peer's
//!   [`OutboundWorker`], then optionally mutated at fuzzer-chosen header,
//!   trailer or body positions;
//! * a fuzzer-chosen plaintext (payload, padding, pad length, next header)
//!   with a fuzzer-chosen sequence number, encrypted with the SA's key
//!   outside the crate: it passes the ICV and exercises the trailer and
//!   inner checks and the replay window;
//! * an earlier packet replayed.
//!
//! Invariants: no panic; an `Ok` has its inner range inside the ESP range
//! and the buffer, an inner packet of the version the trailer names, and a
//! sequence number never accepted before and not older than the window;
//! an unmutated sealed packet either opens to exactly what was sealed or
//! is refused as a replay.

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;

use ring::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, CHACHA20_POLY1305,
};
use strait_esp::{
    classify_outer, CipherSuite, DropReason, InboundSa, NextHeader, OutboundSa, SaConfig,
    ESP_HEADROOM, HEADER_LEN, ICV_LEN, TUNNEL_HEADROOM,
};

use crate::input::{Input, InputWriter};

const SPI: u32 = 0x0000_c0de;
const FRAME: usize = 2048;
const NOW: Duration = Duration::from_secs(1000);

fn key_for(suite: CipherSuite) -> Vec<u8> {
    (0..suite.key_material_len() as u8)
        .map(|i| i.wrapping_mul(37) ^ 0x5a)
        .collect()
}

/// Op codes, for seeds.
pub mod op {
    /// Raw bytes as an ESP packet.
    pub const RAW: u8 = 0;
    /// An inner packet sealed by the peer, maybe mutated.
    pub const SEALED: u8 = 1;
    /// A crafted plaintext encrypted with the SA's key.
    pub const CRAFTED: u8 = 2;
    /// An earlier packet again.
    pub const REPLAY: u8 = 3;
}

/// What the harness knows about the receiver, to check `Ok`s against.
struct Model {
    accepted: BTreeSet<u64>,
    top: u64,
    window: u64,
    esn: bool,
}

impl Model {
    fn check(
        &mut self,
        buf_len: usize,
        esp: &Range<usize>,
        r: &Result<strait_esp::Opened, DropReason>,
        buf: &[u8],
    ) {
        let Ok(o) = r else { return };
        assert!(
            o.inner.start <= o.inner.end,
            "inner range {:?} reversed",
            o.inner
        );
        assert!(
            o.inner.end <= buf_len,
            "inner {:?} past the buffer ({buf_len})",
            o.inner
        );
        assert!(
            o.inner.start >= esp.start + ESP_HEADROOM && o.inner.end <= esp.end - ICV_LEN,
            "inner {:?} outside the ESP payload of {esp:?}",
            o.inner
        );
        let inner = &buf[o.inner.clone()];
        match o.next_header {
            NextHeader::Ipv4 => assert!(inner.len() >= 20 && inner[0] >> 4 == 4, "bad inner v4"),
            NextHeader::Ipv6 => assert!(inner.len() >= 40 && inner[0] >> 4 == 6, "bad inner v6"),
        }
        assert!(o.seq != 0, "sequence number 0 accepted");
        assert!(
            self.esn || o.seq <= u64::from(u32::MAX),
            "seq {} without ESN",
            o.seq
        );
        assert!(
            self.accepted.insert(o.seq),
            "sequence number {} accepted twice",
            o.seq
        );
        assert!(
            o.seq > self.top || self.top - o.seq < self.window,
            "seq {} older than the window (top {})",
            o.seq,
            self.top
        );
    }
}

/// The SA's key used outside the crate, to encrypt any plaintext.
struct Crafter {
    key: LessSafeKey,
    salt: [u8; 4],
    esn: bool,
}

impl Crafter {
    fn new(suite: CipherSuite, key: &[u8], esn: bool) -> Crafter {
        let alg = match suite {
            CipherSuite::Aes128Gcm => &AES_128_GCM,
            CipherSuite::Aes256Gcm => &AES_256_GCM,
            CipherSuite::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        };
        let (k, salt) = key.split_at(suite.key_len());
        Crafter {
            key: LessSafeKey::new(UnboundKey::new(alg, k).expect("key length")),
            salt: salt.try_into().expect("4-byte salt"),
            esn,
        }
    }

    /// Encrypts `plain` as the ESP packet with `seq` at `buf[at..]`
    /// (RFC 4106: nonce = salt || IV, AAD = SPI || [seq high] || seq low).
    fn seal(&self, buf: &mut [u8], at: usize, seq: u64, iv: u64, plain: &[u8]) -> Range<usize> {
        let (key, salt, esn) = (&self.key, self.salt, self.esn);
        let end = at + ESP_HEADROOM + plain.len() + ICV_LEN;
        let p = &mut buf[at..end];
        p[0..4].copy_from_slice(&SPI.to_be_bytes());
        p[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        p[8..16].copy_from_slice(&iv.to_be_bytes());
        let mut aad = Vec::with_capacity(12);
        aad.extend_from_slice(&SPI.to_be_bytes());
        if esn {
            aad.extend_from_slice(&((seq >> 32) as u32).to_be_bytes());
        }
        aad.extend_from_slice(&(seq as u32).to_be_bytes());
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&salt);
        nonce[4..].copy_from_slice(&iv.to_be_bytes());
        let (head, icv) = p.split_at_mut(ESP_HEADROOM + plain.len());
        let body = &mut head[ESP_HEADROOM..];
        body.copy_from_slice(plain);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..]),
                body,
            )
            .expect("seal");
        icv.copy_from_slice(tag.as_ref());
        at..end
    }
}

/// Makes `bytes` start like an IPv4 or IPv6 header of its own length, so
/// the sealing side accepts it (on request).
fn fix_inner(bytes: &mut Vec<u8>, v6: bool) {
    if v6 {
        bytes.resize(bytes.len().max(40), 0);
        bytes[0] = 0x60 | (bytes[0] & 0x0f);
        let len = (bytes.len() - 40) as u16;
        bytes[4..6].copy_from_slice(&len.to_be_bytes());
    } else {
        bytes.resize(bytes.len().max(20), 0);
        bytes[0] = 0x45;
        let len = bytes.len() as u16;
        bytes[2..4].copy_from_slice(&len.to_be_bytes());
    }
}

/// The target body.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let setup = input.u8();
    let suite = CipherSuite::ALL[usize::from(setup & 3) % 3];
    let esn = setup & 4 == 0;
    let window = [64u32, 128, 1024, 4096][usize::from(setup >> 3) & 3];
    let key = key_for(suite);
    let mut config = SaConfig::new(SPI, suite, &key, NOW);
    config.esn = esn;
    config.replay_window = window;
    // Sometimes resume near the 2^32 boundary so ESN inference has work.
    let resumed_top = if setup & 0x20 != 0 {
        let top = u64::from(input.u32())
            | if esn {
                u64::from(input.u8() & 1) << 32
            } else {
                0
            };
        Some(top)
    } else {
        None
    };
    let mut inbound = match resumed_top {
        Some(top) => match InboundSa::resumed(&config, top) {
            Ok(sa) => sa,
            Err(_) => return,
        },
        None => InboundSa::new(&config).expect("valid SA"),
    };
    let outbound = OutboundSa::resumed(
        &config,
        resumed_top.map_or(1, |t| t.saturating_add(1).max(1)),
    )
    .or_else(|_| OutboundSa::new(&config))
    .expect("valid SA");
    let mut worker = outbound.worker();
    let crafter = Crafter::new(suite, &key, esn);
    let mut model = Model {
        accepted: BTreeSet::new(),
        top: resumed_top.unwrap_or(0),
        window: u64::from(window),
        esn,
    };
    let mut history: Vec<(Vec<u8>, Range<usize>)> = Vec::new();
    let mut now = NOW;

    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        let code = input.u8();
        now += Duration::from_millis(u64::from(code >> 4) * 100);
        let mut buf = vec![0u8; FRAME];
        let mut expect: Option<(Vec<u8>, u64)> = None;
        let esp = match code & 3 {
            op::RAW => {
                let flags = input.u8();
                let at = usize::from(input.u8());
                let bytes = input.chunk(FRAME - 256);
                buf[at..at + bytes.len()].copy_from_slice(bytes);
                if flags & 1 != 0 && bytes.len() >= 4 {
                    buf[at..at + 4].copy_from_slice(&SPI.to_be_bytes());
                }
                let _ = classify_outer(bytes);
                let _ = strait_esp::peek_spi(bytes);
                if flags & 2 != 0 {
                    // Any range, even past the buffer or reversed.
                    let s = usize::from(input.u16());
                    let e = usize::from(input.u16());
                    s..e
                } else {
                    at..at + bytes.len()
                }
            }
            op::SEALED => {
                let flags = input.u8();
                let mut inner = input.chunk(1400).to_vec();
                if flags & 1 == 0 {
                    fix_inner(&mut inner, flags & 2 != 0);
                }
                let range = TUNNEL_HEADROOM..TUNNEL_HEADROOM + inner.len();
                buf[range.clone()].copy_from_slice(&inner);
                let Ok(sealed) = worker.seal(&mut buf, range, now) else {
                    continue;
                };
                let esp = sealed.esp;
                let mutations = (flags >> 2) & 7;
                for _ in 0..mutations {
                    let len = esp.len();
                    let pos = match input.u8() % 3 {
                        // SPI and sequence number.
                        0 => usize::from(input.u8()) % HEADER_LEN,
                        // Pad length, next header and ICV.
                        1 => len - 1 - usize::from(input.u8()) % (ICV_LEN + 2),
                        _ => usize::from(input.u16()) % len,
                    };
                    buf[esp.start + pos] ^= input.u8() | 1;
                }
                if mutations == 0 {
                    expect = Some((inner, sealed.seq));
                }
                esp
            }
            op::CRAFTED => {
                let seq_mode = input.u8();
                let seq = match seq_mode & 3 {
                    0 => model.top.wrapping_add(1 + u64::from(seq_mode >> 2)),
                    1 => model.top.wrapping_sub(u64::from(input.u16())),
                    2 => u64::from(input.u32()) | (u64::from(input.u8() & 3) << 32),
                    _ => model.top.wrapping_add(u64::from(input.u32())),
                };
                let seq = if esn { seq } else { seq & u64::from(u32::MAX) };
                let plain = input.chunk(1400);
                let at = 64 + usize::from(input.u8());
                let iv = u64::from(input.u32());
                crafter.seal(&mut buf, at, seq, iv, plain)
            }
            _ => {
                let Some((old, esp)) = history.get(usize::from(input.u8()) % history.len().max(1))
                else {
                    continue;
                };
                buf.copy_from_slice(old);
                esp.clone()
            }
        };
        if history.len() < 8 {
            history.push((buf.clone(), esp.clone()));
        }
        let top_before = inbound.replay_window().top();
        let r = inbound.open(&mut buf, esp.clone(), now);
        model.top = top_before;
        model.check(FRAME, &esp, &r, &buf);
        model.top = inbound.replay_window().top();
        assert!(model.top >= top_before, "the replay window went back");
        if let Some((inner, seq)) = expect {
            match &r {
                Ok(o) => {
                    assert_eq!(o.seq, seq, "opened under another sequence number");
                    assert_eq!(&buf[o.inner.clone()], &inner[..], "opened something else");
                }
                // Crafted packets may have moved the window past it: then
                // it is old, or its high half is inferred as another one.
                Err(DropReason::Replay | DropReason::ReplayOld | DropReason::AuthFailed)
                    if seq <= top_before => {}
                Err(e) => {
                    panic!("a fresh sealed packet (seq {seq}, top {top_before}) was refused: {e:?}")
                }
            }
        }
        let _ = inbound.poll_event(now);
    }
    let c = inbound.counters();
    let _ = (c.packets, c.total_drops());
}

/// Seeds: one per op and a few mixes.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let ipv4 = {
        let mut p = vec![0u8; 60];
        p[0] = 0x45;
        p[3] = 60;
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 1, 0, 1]);
        p[16..20].copy_from_slice(&[10, 2, 0, 1]);
        p
    };
    let mut v6 = vec![0u8; 48];
    v6[0] = 0x60;
    v6[5] = 8;
    v6[6] = 17;
    // Payload, pad 1 2, pad length 2, next header 4.
    let mut trailer_ok = ipv4.clone();
    trailer_ok.extend_from_slice(&[1, 2, 2, 4]);
    let mut bad_pad = ipv4.clone();
    bad_pad.extend_from_slice(&[7, 7, 2, 4]);
    let mut dummy = ipv4.clone();
    dummy.extend_from_slice(&[0, 59]);
    let mut seeds = Vec::new();
    for setup in [0u8, 1, 2, 4, 0x08, 0x18] {
        let mut w = InputWriter::default();
        w.u8(setup);
        w.u8(op::SEALED).u8(0).chunk(&ipv4);
        w.u8(op::SEALED).u8(2).chunk(&v6);
        w.u8(op::REPLAY).u8(0);
        w.u8(op::SEALED)
            .u8(1 << 2)
            .chunk(&ipv4)
            .u8(1)
            .u8(0)
            .u8(0xff);
        seeds.push(("sealed", w.bytes));
    }
    for (name, plain) in [
        ("crafted-ok", &trailer_ok),
        ("crafted-bad-pad", &bad_pad),
        ("crafted-dummy", &dummy),
    ] {
        let mut w = InputWriter::default();
        w.u8(0);
        w.u8(op::CRAFTED).u8(0).chunk(plain).u8(0).u32(7);
        w.u8(op::CRAFTED).u8(1).u16(0).chunk(plain).u8(0).u32(8);
        w.u8(op::CRAFTED).u8(3).u32(5000).chunk(plain).u8(3).u32(9);
        seeds.push((name, w.bytes));
    }
    // ESN: resumed just below 2^32, crafted packets on either side.
    let mut w = InputWriter::default();
    w.u8(0x20).u32(u32::MAX - 10).u8(0);
    w.u8(op::CRAFTED).u8(0).chunk(&trailer_ok).u8(0).u32(1);
    w.u8(op::CRAFTED)
        .u8(3)
        .u32(20)
        .chunk(&trailer_ok)
        .u8(0)
        .u32(2);
    w.u8(op::SEALED).u8(0).chunk(&ipv4);
    seeds.push(("esn-wrap", w.bytes));
    let mut w = InputWriter::default();
    w.u8(0);
    w.u8(op::RAW).u8(1).u8(0).chunk(&[0u8; 40]);
    w.u8(op::RAW)
        .u8(3)
        .u8(0)
        .chunk(&[0u8; 40])
        .u16(2040)
        .u16(4000);
    seeds.push(("raw", w.bytes));
    seeds
}
