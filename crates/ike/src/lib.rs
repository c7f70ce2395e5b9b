//! Sans-I/O IKEv2 (RFC 7296) for Strait: the key exchange that registers
//! a vCPE with its hub by serial number and pre-shared key and hands the
//! dataplane the keys of its ESP tunnels.
//!
//! Like boringtun's `noise` module, the core never touches a socket, a
//! thread or a clock. The runtime (a mio loop on UDP 500 and 4500) feeds
//! it datagrams and the current time and carries out what comes back:
//!
//! * [`Ike::initiate`] starts an IKE SA towards a peer;
//! * [`Ike::handle_datagram`] takes one UDP payload (with the non-ESP
//!   marker on port 4500, RFC 3948 §2.2);
//! * [`Ike::poll`] runs retransmissions (§2.4), half-open expiry,
//!   liveness checks and rekeying by time, due at [`Ike::wake_at`];
//! * [`Ike::check_liveness`], [`Ike::delete_child`], [`Ike::close`],
//!   [`Ike::rekey_child`], [`Ike::rekey_ike`].
//!
//! Each returns [`Output`]s: [`Datagram`]s to send (from the address they
//! name) and [`Event`]s: [`Event::ChildSaReady`] carries the SPIs and the
//! key || salt material `strait_esp::SaConfig` takes, for both directions.
//! Rekeys (CREATE_CHILD_SA, §1.3) show as a further `ChildSaReady` and a
//! `ChildSaDeleted` for the old CHILD SA, or as [`Event::IkeSaRekeyed`];
//! [`Event`] gives the exact order.
//!
//! ```
//! use std::time::Duration;
//! use strait_ike::*;
//!
//! let device = Identity::Fqdn("vcpe-0042".into());
//! let psk = b"the device's key".to_vec();
//! let mut vcpe = Ike::new(Config::new(device.clone()), Box::new(|_: &Identity| None))?;
//! let registry = move |id: &Identity| {
//!     (*id == device).then(|| PeerEntry {
//!         psk: b"the device's key".to_vec(),
//!         remote_ts: vec![TrafficSelector::any_v4()],
//!         local_ts: None,
//!         conflicts: Vec::new(),
//!     })
//! };
//! let mut hub = Ike::new(Config::new(Identity::Fqdn("hub".into())), Box::new(registry))?;
//!
//! let now = Duration::ZERO;
//! let peer = PeerConfig {
//!     local: "198.51.100.2:500".parse()?,
//!     remote: "192.0.2.1:500".parse()?,
//!     psk,
//!     remote_id: None,
//!     remote_ts: vec![TrafficSelector::any_v4()],
//! };
//! let (_id, mut wire) = vcpe.initiate(now, peer)?;
//! let mut ready = 0;
//! while let Some(out) = wire.pop() {
//!     match out {
//!         Output::Send(d) if d.remote.port() == 500 || d.remote.port() == 4500 => {
//!             let to_hub = d.remote.ip().to_string() == "192.0.2.1";
//!             let target = if to_hub { &mut hub } else { &mut vcpe };
//!             wire.extend(target.handle_datagram(now, d.local, d.remote, &d.bytes));
//!         }
//!         Output::Event(Event::ChildSaReady { .. }) => ready += 1,
//!         _ => {}
//!     }
//! }
//! assert_eq!(ready, 2); // one CHILD SA, reported to each side
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The layers underneath are public for tests and tools: [`message`]
//! (header and payload chain, RFC 7296 §3.1–§3.2), [`payload`] (the
//! payload bodies, §3.3–§3.13), [`crypto`] (DH, prf+, key schedules, SK
//! payload, AUTH). `README.md` lists what is implemented and what is not.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
pub mod crypto;
pub mod error;
mod ike;
pub mod message;
pub mod payload;
pub mod routes;

pub use config::{Config, Identity, PeerConfig, PeerDirectory, PeerEntry};
pub use crypto::DhGroup;
pub use error::{Error, ParseError};
pub use ike::{
    CloseReason, Datagram, Event, Ike, IkeSaId, IkeSaInfo, KeyMaterial, Output, NON_ESP_MARKER,
};
pub use payload::TrafficSelector;
pub use strait_esp::CipherSuite;

/// Parses arbitrary bytes through every view: the message, each payload
/// body as every payload type, and the SK payload with a fixed key. For
/// a fuzz target; must never panic.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    use payload::*;
    let bodies: Vec<&[u8]> = match message::Message::parse(data) {
        Ok(m) => {
            if let Ok(sk) = crypto::SkCipher::new(strait_esp::CipherSuite::Aes128Gcm, &[0; 20]) {
                if let Ok((first, inner)) = sk.open(&m) {
                    let _ = message::parse_chain(first, &inner);
                }
            }
            m.payloads.iter().map(|p| p.body).collect()
        }
        Err(_) => vec![data],
    };
    for b in bodies
        .into_iter()
        .chain([data, data.get(1..).unwrap_or_default()])
    {
        let _ = parse_sa(b);
        let _ = KeyExchange::parse(b);
        let _ = TypedData::parse(b);
        let _ = parse_nonce(b);
        let _ = Notify::parse(b);
        let _ = Delete::parse(b).map(|d| d.spis_u32().count());
        let _ = parse_ts(b);
    }
    if let Some((&first, rest)) = data.split_first() {
        let _ = message::parse_chain(first, rest);
    }
    let mut assembly = routes::Assembly::default();
    for chunk in [data, data.get(4..).unwrap_or_default()] {
        if let Some(c) = routes::decode(chunk) {
            let _ = assembly.take(c);
        }
    }
}
