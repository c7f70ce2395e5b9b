//! Sans-I/O ESP (RFC 4303) tunnel mode with AES-GCM (RFC 4106) and
//! ChaCha20-Poly1305 (RFC 7634), UDP encapsulation (RFC 3948) and an
//! RFC 6479 anti-replay window.
//!
//! Nothing here does I/O, reads a clock or allocates per packet: callers
//! pass frames (`&mut [u8]` plus a range) and the current time, and get back
//! ranges and named drop reasons.
//!
//! # Outbound
//!
//! ```
//! use std::time::Duration;
//! use strait_esp::*;
//!
//! let key = [7u8; 20]; // AES-128 key || 4-byte salt
//! let now = Duration::ZERO;
//! let sa = OutboundSa::new(&SaConfig::new(0x1000, CipherSuite::Aes128Gcm, &key, now))?;
//! let mut worker = sa.worker(); // one per worker thread
//!
//! // A 2048-byte frame with the inner IPv4 packet after the headroom.
//! let mut frame = [0u8; 2048];
//! let inner = TUNNEL_HEADROOM..TUNNEL_HEADROOM + 20;
//! frame[inner.start] = 0x45;
//! frame[inner.start + 3] = 20; // total length
//! let sealed = worker.seal(&mut frame, inner, now)?;
//!
//! let mut inbound = InboundSa::new(&SaConfig::new(0x1000, CipherSuite::Aes128Gcm, &key, now))?;
//! let opened = inbound.open(&mut frame, sealed.esp, now)?;
//! assert_eq!(opened.next_header, NextHeader::Ipv4);
//! assert_eq!(opened.inner.len(), 20);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cipher;
mod encap;
mod error;
mod inbound;
mod inner;
mod lifetime;
mod outbound;
mod packet;
mod replay;
mod sa;
mod selector;
#[cfg(test)]
mod testutil;

pub use cipher::{CipherSuite, SaCipher, SALT_LEN};
pub use encap::{
    classify_outer, classify_udp_payload, Arrival, ArrivalKind, EncapCounters, KeepaliveDue,
    KeepaliveTimer, OuterHeader, OuterIpv4, OuterIpv6, UdpEncap, UdpPayload, IPV4_HEADER_LEN,
    IPV6_HEADER_LEN, KEEPALIVE_PAYLOAD, MAX_OUTER_LEN, NAT_T_PORT, NON_ESP_MARKER, TUNNEL_HEADROOM,
    UDP_HEADER_LEN,
};
pub use error::{ConfigError, DropReason};
pub use inbound::{InboundSa, Opened, SadIn};
pub use lifetime::{Lifetime, LifetimeState, SaEvent};
pub use outbound::{OutboundSa, OutboundWorker, Sealed, SeqSpace};
pub use packet::{
    pad_len_for, peek_spi, sealed_len, EspPacket, EspRepr, NextHeader, ESP_HEADROOM, ESP_TAILROOM,
    HEADER_LEN, ICV_LEN, IP_PROTO_ESP, IV_LEN, MIN_PACKET_LEN, PAD_ALIGN, TRAILER_LEN,
};
pub use replay::{ReplayWindow, DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW};
pub use sa::{SaConfig, SaCounters, DEFAULT_SEQ_BLOCK};
pub use selector::{TrafficSelector, TrafficSelectors};
/// Selector prefixes are `strait-wire`'s CIDR blocks, as routes and NAT rules.
pub use strait_wire::IpCidr;
