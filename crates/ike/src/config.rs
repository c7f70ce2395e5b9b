//! What an [`crate::Ike`] instance is configured with, and what it asks the
//! device registry.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use strait_esp::CipherSuite;

use crate::crypto::DhGroup;
use crate::payload::{id_type, TrafficSelector};

/// An IKE identity (RFC 7296 §3.5). A vCPE identifies itself by its serial
/// number, as an FQDN-typed name or as an opaque key ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// ID_FQDN: a name, e.g. a serial number `vcpe-0042`.
    Fqdn(String),
    /// ID_KEY_ID: opaque octets.
    KeyId(Vec<u8>),
    /// ID_RFC822_ADDR: `user@domain`.
    Rfc822(String),
    /// ID_IPV4_ADDR.
    Ipv4(Ipv4Addr),
    /// ID_IPV6_ADDR.
    Ipv6(Ipv6Addr),
    /// Any other type, kept as sent.
    Other {
        /// ID type.
        kind: u8,
        /// Identification data.
        data: Vec<u8>,
    },
}

impl Identity {
    /// The ID type octet.
    pub fn kind(&self) -> u8 {
        match self {
            Identity::Fqdn(_) => id_type::FQDN,
            Identity::KeyId(_) => id_type::KEY_ID,
            Identity::Rfc822(_) => id_type::RFC822_ADDR,
            Identity::Ipv4(_) => id_type::IPV4_ADDR,
            Identity::Ipv6(_) => id_type::IPV6_ADDR,
            Identity::Other { kind, .. } => *kind,
        }
    }

    /// The identification data.
    pub fn data(&self) -> Vec<u8> {
        match self {
            Identity::Fqdn(s) | Identity::Rfc822(s) => s.as_bytes().to_vec(),
            Identity::KeyId(d) | Identity::Other { data: d, .. } => d.clone(),
            Identity::Ipv4(a) => a.octets().to_vec(),
            Identity::Ipv6(a) => a.octets().to_vec(),
        }
    }

    /// The ID payload body (ID type, three reserved octets, data): the
    /// RestOfIDPayload that AUTH covers (§2.15).
    pub fn payload_body(&self) -> Vec<u8> {
        let mut b = vec![self.kind(), 0, 0, 0];
        b.extend_from_slice(&self.data());
        b
    }

    /// From a received ID payload.
    pub fn from_payload(kind: u8, data: &[u8]) -> Identity {
        let text = || String::from_utf8(data.to_vec()).ok();
        match kind {
            id_type::FQDN => text().map(Identity::Fqdn),
            id_type::RFC822_ADDR => text().map(Identity::Rfc822),
            id_type::KEY_ID => Some(Identity::KeyId(data.to_vec())),
            id_type::IPV4_ADDR => <[u8; 4]>::try_from(data)
                .ok()
                .map(|a| Identity::Ipv4(a.into())),
            id_type::IPV6_ADDR => <[u8; 16]>::try_from(data)
                .ok()
                .map(|a| Identity::Ipv6(a.into())),
            _ => None,
        }
        .unwrap_or_else(|| Identity::Other {
            kind,
            data: data.to_vec(),
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Fqdn(s) | Identity::Rfc822(s) => f.write_str(s),
            Identity::KeyId(d) => match std::str::from_utf8(d) {
                Ok(s) if s.chars().all(|c| c.is_ascii_graphic()) => write!(f, "keyid:{s}"),
                _ => {
                    f.write_str("keyid:#")?;
                    d.iter().try_for_each(|b| write!(f, "{b:02x}"))
                }
            },
            Identity::Ipv4(a) => a.fmt(f),
            Identity::Ipv6(a) => a.fmt(f),
            Identity::Other { kind, data } => write!(f, "id type {kind} ({} bytes)", data.len()),
        }
    }
}

/// What the registry knows about a peer that may connect.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// The pre-shared key (§2.15).
    pub psk: Vec<u8>,
    /// Inner addresses the peer may have behind it: the responder narrows
    /// the peer's TSi to these (§2.9).
    pub remote_ts: Vec<TrafficSelector>,
    /// What the peer may reach through us: its TSr is narrowed to these
    /// (`None`: [`Config::local_ts`]).
    pub local_ts: Option<Vec<TrafficSelector>>,
    /// Addresses others hold: a TSi selector overlapping any of these is
    /// refused ([`crate::Event::SelectorsRefused`]), the rest of the
    /// CHILD SA stands.
    pub conflicts: Vec<TrafficSelector>,
}

impl fmt::Debug for PeerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerEntry")
            .field("remote_ts", &self.remote_ts)
            .finish_non_exhaustive()
    }
}

/// The device registry, as the responder sees it: the PSK and policy for
/// an identity, or `None` for an unknown one (answered with
/// AUTHENTICATION_FAILED, RFC 7296 §2.21.2).
pub trait PeerDirectory: Send {
    /// Looks the initiator's IDi up.
    fn lookup(&self, id: &Identity) -> Option<PeerEntry>;
}

impl<F> PeerDirectory for F
where
    F: Fn(&Identity) -> Option<PeerEntry> + Send,
{
    fn lookup(&self, id: &Identity) -> Option<PeerEntry> {
        self(id)
    }
}

/// An instance's configuration (both roles).
#[derive(Debug, Clone)]
pub struct Config {
    /// Our identity (IDi or IDr).
    pub local_id: Identity,
    /// IKE SA ciphers, most preferred first.
    pub ike_ciphers: Vec<CipherSuite>,
    /// DH groups, most preferred first; an initiator sends its KE for the
    /// first and offers all (§1.2).
    pub dh_groups: Vec<DhGroup>,
    /// ESP ciphers for CHILD SAs, most preferred first.
    pub esp_ciphers: Vec<CipherSuite>,
    /// ESN choices offered/accepted, preferred first (`true` = ESN).
    pub esn: Vec<bool>,
    /// Our side's inner prefixes: TSi as initiator, the bound for TSr as
    /// responder.
    pub local_ts: Vec<TrafficSelector>,
    /// First retransmission timeout; doubled at each retry (§2.4).
    pub retransmit_timeout: Duration,
    /// Transmissions of a request before the peer is declared dead.
    pub retransmit_tries: u32,
    /// Responder: demand a COOKIE (§2.6) once this many half-open SAs
    /// exist; `Some(0)` always, `None` never.
    pub cookie_threshold: Option<usize>,
    /// Responder: how long a half-open SA (IKE_SA_INIT done, no IKE_AUTH)
    /// is kept.
    pub half_open_timeout: Duration,
    /// Send a liveness check (empty INFORMATIONAL, §1.4) when nothing was
    /// heard for this long.
    pub dpd_interval: Option<Duration>,
    /// Port for IKE after NAT detection, with the non-ESP marker (RFC 3948
    /// §2.2, RFC 7296 §2.23).
    pub nat_t_port: u16,
    /// Soft lifetime of a CHILD SA: rekey it (RFC 7296 §1.3.3) this long
    /// after it was made, give or take a random 10% so that the two ends
    /// rarely start at the same moment (§2.8.1). `None`: only on request
    /// ([`crate::Ike::rekey_child`]) or when the peer does it.
    pub child_rekey_after: Option<Duration>,
    /// Soft lifetime of the IKE SA, likewise (§1.3.2, §2.18).
    pub ike_rekey_after: Option<Duration>,
    /// Offer a KE payload (PFS, §1.3.1) when we rekey a CHILD SA, in the
    /// first of `dh_groups`. As responder a KE offered by the peer is
    /// always accepted in a configured group.
    pub child_pfs: bool,
}

impl Config {
    /// Defaults: AES-256-GCM then AES-128-GCM for IKE; Curve25519 then
    /// ECP-256; AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305 for ESP; ESN
    /// preferred; any IPv4 inner address; 1 s first retransmit, 5 tries;
    /// no cookies; 30 s half-open; no DPD; NAT-T on 4500; no rekeying
    /// by time (the peer's rekeys are answered) and no PFS offered.
    pub fn new(local_id: Identity) -> Self {
        Config {
            local_id,
            ike_ciphers: vec![CipherSuite::Aes256Gcm, CipherSuite::Aes128Gcm],
            dh_groups: vec![DhGroup::Curve25519, DhGroup::Ecp256],
            esp_ciphers: vec![
                CipherSuite::Aes256Gcm,
                CipherSuite::Aes128Gcm,
                CipherSuite::ChaCha20Poly1305,
            ],
            esn: vec![true, false],
            local_ts: vec![TrafficSelector::any_v4()],
            retransmit_timeout: Duration::from_secs(1),
            retransmit_tries: 5,
            cookie_threshold: None,
            half_open_timeout: Duration::from_secs(30),
            dpd_interval: None,
            nat_t_port: 4500,
            child_rekey_after: None,
            ike_rekey_after: None,
            child_pfs: false,
        }
    }

    pub(crate) fn check(&self) -> Result<(), crate::Error> {
        let bad = |s: &str| Err(crate::Error::Config(s.to_owned()));
        if self.ike_ciphers.is_empty() {
            return bad("no IKE cipher");
        }
        if self.dh_groups.is_empty() {
            return bad("no DH group");
        }
        if self.esp_ciphers.is_empty() {
            return bad("no ESP cipher");
        }
        if self.esn.is_empty() {
            return bad("no ESN choice");
        }
        if self.local_ts.is_empty() {
            return bad("no local traffic selector");
        }
        if self.retransmit_tries == 0 {
            return bad("retransmit_tries is 0");
        }
        if self.child_rekey_after == Some(Duration::ZERO)
            || self.ike_rekey_after == Some(Duration::ZERO)
        {
            return bad("a rekey interval is 0");
        }
        Ok(())
    }
}

/// What an initiator needs about the peer it connects to.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Our address (port 500 to start with).
    pub local: SocketAddr,
    /// The responder's address (port 500).
    pub remote: SocketAddr,
    /// The pre-shared key.
    pub psk: Vec<u8>,
    /// The identity the responder must prove, or `None` to accept any
    /// identity that knows the key. Also sent as IDr.
    pub remote_id: Option<Identity>,
    /// Inner prefixes asked for on the far side (TSr).
    pub remote_ts: Vec<TrafficSelector>,
}

impl fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerConfig")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("remote_id", &self.remote_id)
            .field("remote_ts", &self.remote_ts)
            .finish_non_exhaustive()
    }
}
