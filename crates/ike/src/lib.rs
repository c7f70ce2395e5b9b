//! Sans-I/O IKEv2 (RFC 7296).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
pub mod crypto;
pub mod error;
mod ike;
pub mod message;
pub mod payload;

pub use config::{Config, Identity, PeerConfig, PeerDirectory, PeerEntry};
pub use crypto::DhGroup;
pub use error::{Error, ParseError};
pub use ike::{CloseReason, Datagram, Event, Ike, IkeSaId, KeyMaterial, Output, NON_ESP_MARKER};
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
}
