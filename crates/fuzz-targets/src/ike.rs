//! `ike`: IKEv2 messages from the wire, through every payload view
//! (`strait_ike::fuzz_parse`) and through a responder's state machine: an
//! input is up to eight datagrams (each a 16-bit length, then its bytes),
//! sent to a fresh responder on port 500 or 4500 (with the non-ESP marker)
//! with time passing between them, so a fuzzed message can follow a real
//! IKE_SA_INIT request.
//!
//! Invariants: no panic; every datagram the responder sends is from our
//! address to the sender, and is a message that parses.

use std::net::SocketAddr;
use std::time::Duration;

use strait_ike::{Config, Identity, Ike, Output, PeerConfig, PeerEntry, TrafficSelector};

const HUB: &str = "192.0.2.1:500";
const DEVICE: &str = "198.51.100.7:500";
const PSK: &[u8] = b"the device's key";

fn responder() -> Ike {
    let registry = |id: &Identity| {
        (*id == Identity::Fqdn("vcpe-0042".into())).then(|| PeerEntry {
            psk: PSK.to_vec(),
            remote_ts: vec![TrafficSelector::any_v4()],
            local_ts: None,
            conflicts: Vec::new(),
        })
    };
    let mut config = Config::new(Identity::Fqdn("hub.example".into()));
    config.cookie_threshold = Some(4);
    Ike::new(config, Box::new(registry)).expect("responder")
}

fn check(outs: &[Output], device: SocketAddr) {
    for out in outs {
        if let Output::Send(d) = out {
            assert_eq!(d.remote.ip(), device.ip(), "answered someone else");
            let bytes = match d.remote.port() {
                4500 => d.bytes.get(4..).unwrap_or_default(),
                _ => &d.bytes[..],
            };
            assert!(
                strait_ike::message::Message::parse(bytes).is_ok(),
                "sent a message that does not parse: {bytes:02x?}"
            );
        }
    }
}

/// The target body.
pub fn run(data: &[u8]) {
    strait_ike::fuzz_parse(data);
    let mut ike = responder();
    let hub: SocketAddr = HUB.parse().expect("address");
    let mut rest = data;
    let mut now = Duration::from_secs(1);
    for _ in 0..8 {
        let Some((&[hi, lo], tail)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]) & 0x0fff);
        let nat = hi & 0x80 != 0;
        let take = len.min(tail.len());
        let (datagram, tail) = tail.split_at(take);
        rest = tail;
        let (local, device) = if nat {
            (
                SocketAddr::new(hub.ip(), 4500),
                SocketAddr::new(DEVICE.parse::<SocketAddr>().expect("address").ip(), 4500),
            )
        } else {
            (hub, DEVICE.parse().expect("address"))
        };
        let mut bytes = datagram.to_vec();
        if nat {
            bytes.splice(0..0, strait_ike::NON_ESP_MARKER);
        }
        let outs = ike.handle_datagram(now, device, local, &bytes);
        check(&outs, device);
        now += Duration::from_millis(u64::from(lo) * 10);
        check(&ike.poll(now), device);
    }
}

/// Seeds: a real IKE_SA_INIT request from an initiator, alone and framed
/// for the state machine, and a few short ones.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut device = Ike::new(
        Config::new(Identity::Fqdn("vcpe-0042".into())),
        Box::new(|_: &Identity| None),
    )
    .expect("initiator");
    let peer = PeerConfig {
        local: DEVICE.parse().expect("address"),
        remote: HUB.parse().expect("address"),
        psk: PSK.to_vec(),
        remote_id: None,
        remote_ts: vec![TrafficSelector::any_v4()],
    };
    let init = device
        .initiate(Duration::ZERO, peer)
        .ok()
        .and_then(|(_, outs)| {
            outs.into_iter().find_map(|o| match o {
                Output::Send(d) => Some(d.bytes),
                _ => None,
            })
        })
        .unwrap_or_default();
    let framed = |msgs: &[&[u8]]| {
        let mut v = Vec::new();
        for m in msgs {
            v.extend_from_slice(&(m.len() as u16).to_be_bytes());
            v.extend_from_slice(m);
        }
        v
    };
    vec![
        ("ike-sa-init", framed(&[&init])),
        ("ike-sa-init-twice", framed(&[&init, &init])),
        ("ike-sa-init-raw", init.clone()),
        ("empty-header", framed(&[&[0u8; 28]])),
    ]
}
