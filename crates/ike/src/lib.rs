//! Sans-I/O IKEv2 (RFC 7296).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error;
pub mod message;
pub mod payload;

pub use error::{Error, ParseError};

/// Parses arbitrary bytes through every view: the message, each payload
/// body as every payload type, For
/// a fuzz target; must never panic.
#[doc(hidden)]
pub fn fuzz_parse(data: &[u8]) {
    use payload::*;
    let bodies: Vec<&[u8]> = match message::Message::parse(data) {
        Ok(m) => m.payloads.iter().map(|p| p.body).collect(),
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
