//! The IKEv2 state machine for both roles (RFC 7296 §1.2, §1.4, §2).
//!
//! [`Ike`] owns every IKE SA of one endpoint. It is fed datagrams and the
//! time and answers with [`Output`]s: datagrams to send and [`Event`]s for
//! the dataplane (CHILD SAs to install or retire). It never reads a clock
//! or touches a socket; [`Ike::wake_at`] says when [`Ike::poll`] is due
//! for retransmissions, half-open expiry, liveness checks and rekeying.
//! Rekeying (CREATE_CHILD_SA) is described on [`Event`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use strait_esp::CipherSuite;

use crate::config::{Config, Identity, PeerConfig, PeerDirectory};
use crate::crypto::{self, DhGroup, IkeKeys, KeyShare, SkCipher};
use crate::error::{Error, ParseError};
use crate::message::{
    emit_plain, flags, parse_chain, payload_type as pt, ChainBuilder, ExchangeType, Header,
    Message, RawPayload, VERSION,
};
use crate::payload::{
    self, notify, protocol, transform, Delete, KeyExchange, Notify, Proposal, TrafficSelector,
    Transform, TypedData, AUTH_SHARED_KEY,
};
use crate::routes;

/// The non-ESP marker in front of IKE messages on the NAT-T port
/// (RFC 3948 §2.2).
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];

/// Nonce length we send: 32 octets, at least half the PRF key size (§2.10).
const NONCE_LEN: usize = 32;

/// How often an initiator follows COOKIE or INVALID_KE_PAYLOAD answers
/// before giving up on one IKE_SA_INIT.
const MAX_INIT_RESTARTS: u32 = 3;

/// Longest retransmission interval.
const MAX_RETRANSMIT_INTERVAL: Duration = Duration::from_secs(60);

/// Names one IKE SA: our own IKE SPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IkeSaId(pub u64);

impl std::fmt::Display for IkeSaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Key || 4-byte salt for one direction of a CHILD SA; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial(Vec<u8>);

impl KeyMaterial {
    /// The bytes, as `strait_esp::SaConfig::key_material` takes them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial({} bytes)", self.0.len())
    }
}

/// Why an IKE SA ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer deleted it (§1.4.1).
    DeletedByPeer,
    /// We deleted it ([`Ike::close`]).
    DeletedLocally,
    /// The peer's AUTH did not verify, or its identity is unknown, or the
    /// peer refused ours (§2.21.2).
    AuthenticationFailed,
    /// The peer answered with this error notification (§3.10.1), e.g.
    /// NO_PROPOSAL_CHOSEN or UNSUPPORTED_CRITICAL_PAYLOAD.
    PeerRefused(u16),
    /// The peer's answer could not be accepted (proposal or payloads not
    /// what was offered).
    ProtocolError(String),
    /// A request went unanswered through every retransmission (§2.4).
    Timeout,
    /// Responder: IKE_AUTH never came.
    HalfOpenExpired,
}

/// Something for the runtime to act on.
///
/// # Rekeying (CREATE_CHILD_SA, §1.3, §2.8, §2.18)
///
/// A CHILD SA rekey, whoever starts it, shows as:
///
/// 1. [`Event::ChildSaReady`] for the new CHILD SA, on the same `ike_sa`,
///    on both sides (the responder when it answers, the initiator when the
///    answer comes). Install it; keep the old inbound SA, traffic may
///    still arrive on it.
/// 2. [`Event::ChildSaDeleted`] with the *old* SPIs once the INFORMATIONAL
///    Delete that the rekey initiator sends for it (§2.8) is done: the
///    initiator on the answer, the responder when it answers.
///
/// So every `ChildSaReady` is eventually followed by exactly one
/// `ChildSaDeleted` with the same SPIs (or by `IkeSaClosed`). When both
/// ends rekey the same CHILD SA at once (§2.8.1) each side reports both
/// new CHILD SAs; the one made with the lowest nonce is then deleted by
/// the side that made it and the old one by the other side, each with its
/// `ChildSaDeleted`, so one new CHILD SA is left.
///
/// An IKE SA rekey shows as [`Event::IkeSaRekeyed`] `{ old, new }` on both
/// sides: from then on the CHILD SAs belong to `new` (later events name
/// `new`), nothing more is reported about `old`, which is deleted (the
/// rekey initiator sends the Delete) without an `IkeSaClosed`. With
/// simultaneous IKE rekeys the redundant new IKE SA is deleted silently
/// too and `IkeSaRekeyed` names the survivor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The IKE SA is authenticated both ways.
    IkeSaEstablished {
        /// Which SA.
        ike_sa: IkeSaId,
        /// IKE SPIs as on the wire (initiator's, responder's).
        spi_i: u64,
        /// Responder's IKE SPI.
        spi_r: u64,
        /// We are the original initiator.
        initiator: bool,
        /// The peer's authenticated identity.
        peer_id: Identity,
        /// The peer takes route announcements ([`Ike::send_routes`]).
        peer_routes: bool,
        /// Our address for this SA (port 4500 after NAT detection).
        local: SocketAddr,
        /// The peer's address.
        remote: SocketAddr,
        /// A NAT was detected between the two ends (§2.23): ESP is to be
        /// UDP-encapsulated (RFC 3948).
        nat_detected: bool,
    },
    /// A CHILD SA is negotiated: install `spi_in` inbound before switching
    /// outbound traffic to `spi_out`. A further one on the same `ike_sa`
    /// replaces an older CHILD SA (a rekey): the older one stays until its
    /// [`Event::ChildSaDeleted`].
    ChildSaReady {
        /// The IKE SA it belongs to.
        ike_sa: IkeSaId,
        /// Our inbound SPI (we chose it).
        spi_in: u32,
        /// Outbound SPI (the peer chose it).
        spi_out: u32,
        /// Inbound key || salt.
        keys_in: KeyMaterial,
        /// Outbound key || salt.
        keys_out: KeyMaterial,
        /// ESP cipher.
        cipher: CipherSuite,
        /// Extended sequence numbers.
        esn: bool,
        /// Inner addresses on our side.
        ts_local: Vec<TrafficSelector>,
        /// Inner addresses on the peer's side.
        ts_remote: Vec<TrafficSelector>,
        /// Outer addresses.
        local: SocketAddr,
        /// Peer's outer address.
        remote: SocketAddr,
        /// UDP-encapsulate ESP (NAT detected).
        udp_encap: bool,
        /// We sent the request that created it. As a rekey, the peer
        /// already accepts the new SA: seal with it at once. When we only
        /// answered, the peer installs it when our answer arrives: keep
        /// sealing with the SA it replaces until the peer deletes that one
        /// (RFC 7296 §2.8).
        initiator: bool,
    },
    /// The CHILD SA requested with the IKE SA was refused (the IKE SA
    /// stays up, §1.2), or the peer refused a rekey of ours (the old CHILD
    /// SA stays and is rekeyed again later); the notification type says
    /// why.
    ChildSaRefused {
        /// The IKE SA.
        ike_sa: IkeSaId,
        /// Error notification, e.g. TS_UNACCEPTABLE.
        notify: u16,
    },
    /// A CHILD SA is gone: remove both directions. After a rekey this names
    /// the old CHILD SA.
    ChildSaDeleted {
        /// The IKE SA it belonged to.
        ike_sa: IkeSaId,
        /// Our inbound SPI.
        spi_in: u32,
        /// Outbound SPI.
        spi_out: u32,
    },
    /// The IKE SA `old` was rekeyed (§1.3.2, §2.18) into `new`: its CHILD
    /// SAs now belong to `new`, unchanged (same SPIs and keys), and later
    /// events about them name `new`. `old` is deleted without further
    /// events. Addresses, peer identity and NAT state carry over.
    IkeSaRekeyed {
        /// The IKE SA that was replaced.
        old: IkeSaId,
        /// Its successor.
        new: IkeSaId,
        /// The new IKE SPIs as on the wire: the rekey initiator's.
        spi_i: u64,
        /// The rekey responder's new SPI.
        spi_r: u64,
    },
    /// The peer announced a whole route set ([`crate::routes`]): it
    /// replaces the one before.
    RoutesReceived {
        /// The IKE SA it came on.
        ike_sa: IkeSaId,
        /// The peer's generation of the set.
        generation: u32,
        /// The prefixes.
        prefixes: Vec<TrafficSelector>,
    },
    /// Responder: selectors of the peer's TSi that were dropped, outside
    /// what its [`PeerEntry`] allows or overlapping its `conflicts` (§2.9).
    /// Comes before the CHILD SA's `ChildSaReady` or `ChildSaRefused`.
    SelectorsRefused {
        /// The IKE SA.
        ike_sa: IkeSaId,
        /// The peer's selectors that got nothing.
        refused: Vec<TrafficSelector>,
    },
    /// The IKE SA is gone (its CHILD SAs were reported deleted first).
    IkeSaClosed {
        /// Which SA.
        ike_sa: IkeSaId,
        /// Why.
        reason: CloseReason,
    },
}

/// One IKE SA as [`Ike::sa_infos`] reports it, for an operator's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSaInfo {
    /// Which SA.
    pub id: IkeSaId,
    /// We started it.
    pub initiator: bool,
    /// `connecting`, `authenticating`, `half-open` or `established`.
    pub state: &'static str,
    /// The peer's identity once authenticated.
    pub peer_id: Option<Identity>,
    /// Our address.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// A NAT is between us (UDP 4500, ESP in UDP).
    pub nat_detected: bool,
    /// Its DH group.
    pub group: DhGroup,
    /// Its own rekey is due at this time (the core's clock), if timed.
    pub rekey_at: Option<Duration>,
    /// Its CHILD SAs: inbound SPI, outbound SPI, their rekey time.
    pub children: Vec<(u32, u32, Option<Duration>)>,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Source address (ours).
    pub local: SocketAddr,
    /// Destination.
    pub remote: SocketAddr,
    /// UDP payload, with the non-ESP marker when sent on the NAT-T port.
    pub bytes: Vec<u8>,
}

/// What a call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this.
    Send(Datagram),
    /// Act on this.
    Event(Event),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Initiator: IKE_SA_INIT request sent.
    InitSent,
    /// Initiator: IKE_AUTH request sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    HalfOpen,
    Established,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    Init,
    Auth,
    Liveness,
    DeleteChild(u32),
    DeleteIke,
    /// CREATE_CHILD_SA rekeying the CHILD SA with this inbound SPI.
    RekeyChild(u32),
    /// CREATE_CHILD_SA rekeying the IKE SA.
    RekeyIke,
    /// INFORMATIONAL with the next chunk of our route set.
    Routes,
}

#[derive(Debug)]
struct Pending {
    kind: RequestKind,
    message_id: u32,
    bytes: Vec<u8>,
    sent: u32,
    next_at: Duration,
}

#[derive(Debug, Clone)]
struct ChildSa {
    spi_in: u32,
    spi_out: u32,
    ts_local: Vec<TrafficSelector>,
    ts_remote: Vec<TrafficSelector>,
    /// When to rekey it (soft lifetime).
    rekey_at: Option<Duration>,
    /// A rekey replaced it; its Delete is due or under way.
    replaced: bool,
}

/// A CREATE_CHILD_SA request of ours in flight: what its answer needs.
#[derive(Debug)]
enum Creating {
    Child {
        /// Inbound SPI of the CHILD SA being rekeyed.
        old: u32,
        /// The new CHILD SA's inbound SPI.
        spi_in: u32,
        ni: Vec<u8>,
        share: Option<KeyShare>,
        /// An INVALID_KE_PAYLOAD answer was followed once already.
        retried: bool,
    },
    Ike {
        /// Our SPI for the new IKE SA.
        spi: u64,
        ni: Vec<u8>,
        share: Option<KeyShare>,
        retried: bool,
    },
}

/// We answered the peer's rekey of a CHILD SA while rekeying it ourselves
/// (§2.8.1): which one, and that exchange's nonces.
#[derive(Debug)]
struct ChildCollision {
    old: u32,
    ni: Vec<u8>,
    nr: Vec<u8>,
}

/// Likewise for the IKE SA: the IKE SA our answer made (kept on standby
/// until our own exchange settles which one survives).
#[derive(Debug)]
struct IkeCollision {
    made: IkeSaId,
    ni: Vec<u8>,
    nr: Vec<u8>,
}

/// A CHILD SA a CREATE_CHILD_SA made, before it is recorded.
struct NewChild {
    /// We sent the request that created it.
    initiator: bool,
    spi_in: u32,
    spi_out: u32,
    keys_in: Vec<u8>,
    keys_out: Vec<u8>,
    cipher: CipherSuite,
    esn: bool,
    ts_local: Vec<TrafficSelector>,
    ts_remote: Vec<TrafficSelector>,
}

/// §2.8.1: whether exchange `a` (its two nonces) holds the lowest of the
/// four nonces, octet by octet, a shorter prefix being lower.
fn holds_lowest_nonce(a: [&[u8]; 2], b: [&[u8]; 2]) -> bool {
    a[0].min(a[1]) < b[0].min(b[1])
}

#[derive(Debug)]
struct Cached {
    message_id: u32,
    bytes: Vec<u8>,
}

/// Initiator-only state from [`PeerConfig`] and the first exchange.
#[derive(Debug)]
struct InitiatorState {
    peer: PeerConfig,
    key_share: Option<KeyShare>,
    cookie: Option<Vec<u8>>,
    restarts: u32,
    child_spi: u32,
}

#[derive(Debug)]
struct IkeSa {
    id: IkeSaId,
    initiator: bool,
    state: State,
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
    cipher: CipherSuite,
    group: DhGroup,
    ni: Vec<u8>,
    nr: Vec<u8>,
    keys: Option<IkeKeys>,
    seal: Option<SkCipher>,
    open: Option<SkCipher>,
    iv: u64,
    /// RealMessage1 and RealMessage2 for AUTH (§2.15).
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    next_request_id: u32,
    next_peer_id: u32,
    last_response: Option<Cached>,
    pending: Option<Pending>,
    queued: VecDeque<RequestKind>,
    children: Vec<ChildSa>,
    nat_detected: bool,
    peer_id: Option<Identity>,
    last_heard: Duration,
    created: Duration,
    init: Option<InitiatorState>,
    /// The bound for the peer's side of CHILD SAs: the registry's prefixes
    /// for it (responder), or the prefixes asked for (initiator).
    remote_ts_allowed: Vec<TrafficSelector>,
    /// Our CREATE_CHILD_SA in flight.
    creating: Option<Creating>,
    child_collisions: Vec<ChildCollision>,
    ike_collision: Option<IkeCollision>,
    /// When to rekey the IKE SA (soft lifetime).
    rekey_at: Option<Duration>,
    /// Not to be reported on: rekeyed away, or a colliding rekey's SA on
    /// standby. No liveness checks or rekeys of its own.
    silent: bool,
    /// A rekeyed-away SA is dropped at this time if its Delete never
    /// completes.
    expires: Option<Duration>,
    /// Route announcements both ways ([`crate::routes`]).
    routes: RouteState,
}

/// An IKE SA's route announcements.
#[derive(Debug, Default)]
struct RouteState {
    /// The peer said it understands them (ROUTES_SUPPORTED in IKE_AUTH).
    peer_supports: bool,
    /// Chunks of our latest set still to send.
    out: VecDeque<Vec<u8>>,
    /// Generation of our latest set.
    generation: u32,
    /// The peer's set being received.
    assembly: crate::routes::Assembly,
}

impl IkeSa {
    fn header(&self, exchange: ExchangeType, response: bool, message_id: u32) -> Header {
        let mut f = 0;
        if self.initiator {
            f |= flags::INITIATOR;
        }
        if response {
            f |= flags::RESPONSE;
        }
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: 0,
            version: VERSION,
            exchange,
            flags: f,
            message_id,
            length: 0,
        }
    }

    fn encrypt(&mut self, header: Header, chain: ChainBuilder) -> Vec<u8> {
        let (first, inner) = chain.finish();
        self.iv += 1;
        match &self.seal {
            Some(s) => s.seal(header, first, &inner, self.iv),
            None => Vec::new(),
        }
    }
}

/// One IKEv2 endpoint: every IKE SA it initiated or answered.
pub struct Ike {
    config: Config,
    directory: Box<dyn PeerDirectory>,
    rng: SystemRandom,
    sas: HashMap<IkeSaId, IkeSa>,
    /// Responder: (SPIi, peer address) to our SA, to answer a retransmitted
    /// IKE_SA_INIT from the cached response (§2.1).
    by_initiator: HashMap<(u64, SocketAddr), IkeSaId>,
    half_open: usize,
    cookie_secret: [u8; 32],
    spis_in: HashSet<u32>,
    out: Vec<Output>,
    /// SAs made by a rekey whose waiting requests are to start.
    kick: Vec<IkeSaId>,
    /// Liveness checks started (timed and asked for).
    liveness_checks: u64,
}

impl std::fmt::Debug for Ike {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ike")
            .field("local_id", &self.config.local_id)
            .field("sas", &self.sas.len())
            .field("half_open", &self.half_open)
            .finish_non_exhaustive()
    }
}

/// Parsed payloads of one message, borrowed from its (decrypted) bytes.
#[derive(Debug, Default)]
struct Payloads<'a> {
    sa: Option<&'a [u8]>,
    ke: Option<KeyExchange<'a>>,
    nonce: Option<&'a [u8]>,
    idi: Option<TypedData<'a>>,
    idr: Option<TypedData<'a>>,
    auth: Option<TypedData<'a>>,
    tsi: Option<Vec<TrafficSelector>>,
    tsr: Option<Vec<TrafficSelector>>,
    notifies: Vec<Notify<'a>>,
    deletes: Vec<Delete<'a>>,
}

impl<'a> Payloads<'a> {
    fn collect(raw: &[RawPayload<'a>]) -> Result<Self, ParseError> {
        let mut p = Payloads::default();
        for r in raw {
            match r.kind {
                pt::SA => p.sa = Some(r.body),
                pt::KE => p.ke = Some(KeyExchange::parse(r.body)?),
                pt::NONCE => p.nonce = Some(payload::parse_nonce(r.body)?),
                pt::IDI => p.idi = Some(TypedData::parse(r.body)?),
                pt::IDR => p.idr = Some(TypedData::parse(r.body)?),
                pt::AUTH => p.auth = Some(TypedData::parse(r.body)?),
                pt::TSI => p.tsi = Some(payload::parse_ts(r.body)?),
                pt::TSR => p.tsr = Some(payload::parse_ts(r.body)?),
                pt::NOTIFY => p.notifies.push(Notify::parse(r.body)?),
                pt::DELETE => p.deletes.push(Delete::parse(r.body)?),
                _ => {}
            }
        }
        Ok(p)
    }

    fn notify(&self, kind: u16) -> Option<&Notify<'a>> {
        self.notifies.iter().find(|n| n.kind == kind)
    }

    fn first_error(&self) -> Option<u16> {
        self.notifies
            .iter()
            .map(|n| n.kind)
            .find(|&k| notify::is_error(k))
    }
}

fn notify_chain(kind: u16, data: &[u8]) -> ChainBuilder {
    let mut c = ChainBuilder::new();
    c.push_with(pt::NOTIFY, false, |b| Notify::new(kind, data).emit(b));
    c
}

fn push_id(c: &mut ChainBuilder, kind: u8, id: &Identity) {
    c.push(kind, &id.payload_body());
}

fn push_ts(c: &mut ChainBuilder, kind: u8, ts: &[TrafficSelector]) {
    c.push_with(kind, false, |b| payload::emit_ts(b, ts));
}

fn push_sa(c: &mut ChainBuilder, proposals: &[Proposal<'_>]) {
    c.push_with(pt::SA, false, |b| payload::emit_sa(b, proposals));
}

/// Whether a proposal offers no integrity algorithm, or only NONE: the
/// only form that goes with an AEAD cipher (RFC 5282 §8).
fn no_integrity(p: &Proposal<'_>) -> bool {
    p.of_type(transform::INTEG).all(|t| t.id == 0)
}

/// The ESP proposal for a CHILD SA.
fn esp_proposal<'a>(config: &Config, spi: &'a [u8]) -> Proposal<'a> {
    let mut transforms: Vec<Transform> = config
        .esp_ciphers
        .iter()
        .map(|&c| crypto::encr_transform(c))
        .collect();
    for &esn in &config.esn {
        transforms.push(Transform::new(
            transform::ESN,
            if esn {
                transform::ESN_YES
            } else {
                transform::ESN_NO
            },
        ));
    }
    Proposal {
        num: 1,
        protocol: protocol::ESP,
        spi,
        transforms,
    }
}

/// What a responder picked from an ESP SA payload.
struct EspChoice {
    num: u8,
    peer_spi: u32,
    cipher: CipherSuite,
    esn: bool,
    /// The PFS group (CREATE_CHILD_SA with a KE payload).
    group: Option<DhGroup>,
}

/// Picks an ESP proposal. `ke` is the group of the KE payload that came
/// with the SA payload: `None` in IKE_AUTH (§1.2: no DH transform but
/// NONE) and in a CREATE_CHILD_SA without PFS. Refuses with
/// NO_PROPOSAL_CHOSEN, or INVALID_KE_PAYLOAD and the group we want when a
/// proposal fits but for the KE group (§1.3).
fn choose_esp(
    config: &Config,
    proposals: &[Proposal<'_>],
    ke: Option<u16>,
) -> Result<EspChoice, (u16, Option<DhGroup>)> {
    let mut wanted_group = None;
    for p in proposals {
        if p.protocol != protocol::ESP || p.spi.len() != 4 || !no_integrity(p) {
            continue;
        }
        let Some(cipher) = p
            .of_type(transform::ENCR)
            .filter_map(crypto::cipher_of)
            .find(|c| config.esp_ciphers.contains(c))
        else {
            continue;
        };
        let offered: Vec<bool> = p
            .of_type(transform::ESN)
            .filter_map(|t| match t.id {
                transform::ESN_NO => Some(false),
                transform::ESN_YES => Some(true),
                _ => None,
            })
            .collect();
        // No ESN transform at all means no ESN.
        let esn = if p.of_type(transform::ESN).next().is_none() {
            if !config.esn.contains(&false) {
                continue;
            }
            false
        } else {
            match offered.iter().find(|e| config.esn.contains(e)) {
                Some(e) => *e,
                None => continue,
            }
        };
        let dh: Vec<u16> = p.of_type(transform::DH).map(|t| t.id).collect();
        let group = match ke {
            None if dh.is_empty() || dh.contains(&0) => None,
            None => continue,
            Some(g) => {
                let ours = DhGroup::from_id(g).filter(|x| config.dh_groups.contains(x));
                match ours {
                    Some(x) if dh.contains(&g) => Some(x),
                    _ => {
                        if wanted_group.is_none() {
                            wanted_group = config
                                .dh_groups
                                .iter()
                                .copied()
                                .find(|x| dh.contains(&x.id()));
                        }
                        continue;
                    }
                }
            }
        };
        let peer_spi = u32::from_be_bytes([p.spi[0], p.spi[1], p.spi[2], p.spi[3]]);
        return Ok(EspChoice {
            num: p.num,
            peer_spi,
            cipher,
            esn,
            group,
        });
    }
    Err(match wanted_group {
        Some(g) => (notify::INVALID_KE_PAYLOAD, Some(g)),
        None => (notify::NO_PROPOSAL_CHOSEN, None),
    })
}

/// The responder's ESP proposal: the chosen one, with our SPI.
fn esp_answer<'a>(choice: &EspChoice, spi: &'a [u8]) -> Proposal<'a> {
    let mut transforms = vec![crypto::encr_transform(choice.cipher)];
    if let Some(g) = choice.group {
        transforms.push(Transform::new(transform::DH, g.id()));
    }
    transforms.push(Transform::new(
        transform::ESN,
        if choice.esn {
            transform::ESN_YES
        } else {
            transform::ESN_NO
        },
    ));
    Proposal {
        num: choice.num,
        protocol: protocol::ESP,
        spi,
        transforms,
    }
}

/// A notification answer, with the data of INVALID_KE_PAYLOAD.
fn refusal_chain(kind: u16, group: Option<DhGroup>) -> ChainBuilder {
    match group {
        Some(g) => notify_chain(kind, &g.id().to_be_bytes()),
        None => notify_chain(kind, &[]),
    }
}

/// §2.9 narrowing: every overlap of what was proposed with what policy
/// allows.
fn narrow(proposed: &[TrafficSelector], allowed: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for p in proposed {
        for a in allowed {
            if let Some(t) = p.intersect(a) {
                if !out.contains(&t) {
                    out.push(t);
                }
            }
        }
    }
    out
}

impl Ike {
    /// A new endpoint. `directory` is asked for the PSK and policy of each
    /// initiator that connects to us.
    pub fn new(config: Config, directory: Box<dyn PeerDirectory>) -> Result<Ike, Error> {
        config.check()?;
        let rng = SystemRandom::new();
        let mut cookie_secret = [0u8; 32];
        rng.fill(&mut cookie_secret)
            .map_err(|_| Error::Crypto("no randomness"))?;
        Ok(Ike {
            config,
            directory,
            rng,
            sas: HashMap::new(),
            by_initiator: HashMap::new(),
            half_open: 0,
            cookie_secret,
            spis_in: HashSet::new(),
            out: Vec::new(),
            kick: Vec::new(),
            liveness_checks: 0,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of IKE SAs, half-open ones included.
    pub fn sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Every IKE SA that is not rekeyed away, for an operator's view.
    pub fn sa_infos(&self) -> Vec<IkeSaInfo> {
        let mut out: Vec<IkeSaInfo> = self
            .sas
            .values()
            .filter(|sa| !sa.silent)
            .map(|sa| IkeSaInfo {
                id: sa.id,
                initiator: sa.initiator,
                state: match sa.state {
                    State::InitSent => "connecting",
                    State::AuthSent => "authenticating",
                    State::HalfOpen => "half-open",
                    State::Established => "established",
                },
                peer_id: sa.peer_id.clone(),
                local: sa.local,
                remote: sa.remote,
                nat_detected: sa.nat_detected,
                group: sa.group,
                rekey_at: sa.rekey_at,
                children: sa
                    .children
                    .iter()
                    .filter(|c| !c.replaced)
                    .map(|c| (c.spi_in, c.spi_out, c.rekey_at))
                    .collect(),
            })
            .collect();
        out.sort_by_key(|i| i.id);
        out
    }

    /// Liveness checks started so far, by time or by
    /// [`Ike::check_liveness`].
    pub fn liveness_checks(&self) -> u64 {
        self.liveness_checks
    }

    fn random(&self, buf: &mut [u8]) {
        // SystemRandom only fails if the OS has no entropy source at all,
        // in which case nothing here could work.
        self.rng
            .fill(buf)
            .expect("the operating system's random number generator failed");
    }

    fn new_ike_spi(&self) -> u64 {
        loop {
            let mut b = [0u8; 8];
            self.random(&mut b);
            let spi = u64::from_be_bytes(b);
            if spi != 0 && !self.sas.contains_key(&IkeSaId(spi)) {
                return spi;
            }
        }
    }

    fn new_child_spi(&mut self) -> u32 {
        loop {
            let mut b = [0u8; 4];
            self.random(&mut b);
            let spi = u32::from_be_bytes(b);
            // RFC 4303 §2.1: 1..=255 are reserved, 0 is never used.
            if spi >= 256 && self.spis_in.insert(spi) {
                return spi;
            }
        }
    }

    fn nonce(&self) -> Vec<u8> {
        let mut n = vec![0u8; NONCE_LEN];
        self.random(&mut n);
        n
    }

    /// `now + after`, give or take a random 10% (§2.8.1: fewer collisions).
    fn rekey_time(&self, now: Duration, after: Option<Duration>) -> Option<Duration> {
        let after = after?;
        let mut b = [0u8; 2];
        self.random(&mut b);
        // 0.9 … 1.1 in steps of 1/65536 of 0.2.
        let factor = 0.9 + 0.2 * f64::from(u16::from_be_bytes(b)) / 65535.0;
        Some(now + after.mul_f64(factor))
    }

    /// How long a rekeyed-away IKE SA waits for its Delete: the whole
    /// retransmission schedule of one request, twice.
    fn retire_span(&self) -> Duration {
        let mut total = Duration::ZERO;
        for k in 0..self.config.retransmit_tries {
            total += self
                .config
                .retransmit_timeout
                .saturating_mul(1 << k.min(16))
                .min(MAX_RETRANSMIT_INTERVAL);
        }
        total * 2
    }

    fn take(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    fn send(&mut self, local: SocketAddr, remote: SocketAddr, msg: &[u8]) {
        let bytes = if local.port() == self.config.nat_t_port {
            [&NON_ESP_MARKER[..], msg].concat()
        } else {
            msg.to_vec()
        };
        self.out.push(Output::Send(Datagram {
            local,
            remote,
            bytes,
        }));
    }

    fn event(&mut self, e: Event) {
        self.out.push(Output::Event(e));
    }

    // ---------------------------------------------------------------
    // Initiator: IKE_SA_INIT (§1.2)
    // ---------------------------------------------------------------

    /// Starts an IKE SA with `peer`: returns its id and the IKE_SA_INIT
    /// request to send.
    pub fn initiate(
        &mut self,
        now: Duration,
        peer: PeerConfig,
    ) -> Result<(IkeSaId, Vec<Output>), Error> {
        let group = self.config.dh_groups[0];
        let key_share = KeyShare::generate(group, &self.rng)?;
        let spi_i = self.new_ike_spi();
        let id = IkeSaId(spi_i);
        let child_spi = self.new_child_spi();
        let mut sa = IkeSa {
            id,
            initiator: true,
            state: State::InitSent,
            spi_i,
            spi_r: 0,
            local: peer.local,
            remote: peer.remote,
            cipher: self.config.ike_ciphers[0],
            group,
            ni: self.nonce(),
            nr: Vec::new(),
            keys: None,
            seal: None,
            open: None,
            iv: 0,
            init_request: Vec::new(),
            init_response: Vec::new(),
            next_request_id: 0,
            next_peer_id: 0,
            last_response: None,
            pending: None,
            queued: VecDeque::new(),
            children: Vec::new(),
            nat_detected: false,
            peer_id: None,
            last_heard: now,
            created: now,
            remote_ts_allowed: peer.remote_ts.clone(),
            creating: None,
            child_collisions: Vec::new(),
            ike_collision: None,
            rekey_at: None,
            silent: false,
            expires: None,
            routes: RouteState::default(),
            init: Some(InitiatorState {
                peer,
                key_share: Some(key_share),
                cookie: None,
                restarts: 0,
                child_spi,
            }),
        };
        let msg = self.init_request(&sa);
        sa.init_request = msg.clone();
        self.start_request(now, &mut sa, RequestKind::Init, msg);
        self.sas.insert(id, sa);
        Ok((id, self.take()))
    }

    fn init_request(&self, sa: &IkeSa) -> Vec<u8> {
        let init = sa.init.as_ref().expect("initiator state");
        let mut c = ChainBuilder::new();
        // §2.6: the COOKIE notification comes first.
        if let Some(cookie) = &init.cookie {
            c.push_with(pt::NOTIFY, false, |b| {
                Notify::new(notify::COOKIE, cookie).emit(b)
            });
        }
        let mut transforms: Vec<Transform> = self
            .config
            .ike_ciphers
            .iter()
            .map(|&c| crypto::encr_transform(c))
            .collect();
        transforms.push(Transform::new(transform::PRF, transform::PRF_HMAC_SHA2_256));
        // The group of the KE payload first, then the others we accept.
        transforms.push(Transform::new(transform::DH, sa.group.id()));
        for g in &self.config.dh_groups {
            if *g != sa.group {
                transforms.push(Transform::new(transform::DH, g.id()));
            }
        }
        push_sa(
            &mut c,
            &[Proposal {
                num: 1,
                protocol: protocol::IKE,
                spi: &[],
                transforms,
            }],
        );
        let public = init.key_share.as_ref().map(|k| k.public()).unwrap_or(&[]);
        c.push_with(pt::KE, false, |b| {
            KeyExchange {
                group: sa.group.id(),
                data: public,
            }
            .emit(b)
        });
        c.push(pt::NONCE, &sa.ni);
        // §2.23: hashes over SPIi, a zero SPIr and each end's address.
        let src = crypto::nat_hash(sa.spi_i, 0, sa.local);
        let dst = crypto::nat_hash(sa.spi_i, 0, sa.remote);
        c.push_with(pt::NOTIFY, false, |b| {
            Notify::new(notify::NAT_DETECTION_SOURCE_IP, &src).emit(b)
        });
        c.push_with(pt::NOTIFY, false, |b| {
            Notify::new(notify::NAT_DETECTION_DESTINATION_IP, &dst).emit(b)
        });
        emit_plain(sa.header(ExchangeType::IkeSaInit, false, 0), c)
    }

    fn start_request(&mut self, now: Duration, sa: &mut IkeSa, kind: RequestKind, bytes: Vec<u8>) {
        let message_id = sa.next_request_id;
        self.send(sa.local, sa.remote, &bytes);
        sa.pending = Some(Pending {
            kind,
            message_id,
            bytes,
            sent: 1,
            next_at: now + self.config.retransmit_timeout,
        });
    }

    fn init_response(
        &mut self,
        now: Duration,
        mut sa: IkeSa,
        msg: &Message<'_>,
        src: SocketAddr,
        dst: SocketAddr,
    ) {
        let p = match Payloads::collect(&msg.payloads) {
            Ok(p) => p,
            Err(_) => {
                // An unprotected message can be forged; a broken one is
                // dropped and the request retransmitted (§2.21).
                self.sas.insert(sa.id, sa);
                return;
            }
        };
        let restarts = sa.init.as_ref().map_or(0, |i| i.restarts);
        if let Some(c) = p.notify(notify::COOKIE) {
            // §2.6: retry with the cookie, same SPIi, nonce and KE.
            if restarts >= MAX_INIT_RESTARTS || c.data.is_empty() || c.data.len() > 64 {
                return self.fail(sa, CloseReason::PeerRefused(notify::COOKIE));
            }
            let init = sa.init.as_mut().expect("initiator");
            init.cookie = Some(c.data.to_vec());
            init.restarts += 1;
            return self.restart_init(now, sa);
        }
        if let Some(n) = p.notify(notify::INVALID_KE_PAYLOAD) {
            // §1.2, §3.10.1: the responder names the group it wants.
            let wanted = <[u8; 2]>::try_from(n.data)
                .ok()
                .map(u16::from_be_bytes)
                .and_then(DhGroup::from_id)
                .filter(|g| self.config.dh_groups.contains(g) && *g != sa.group);
            let Some(group) = wanted.filter(|_| restarts < MAX_INIT_RESTARTS) else {
                return self.fail(sa, CloseReason::PeerRefused(notify::INVALID_KE_PAYLOAD));
            };
            match KeyShare::generate(group, &self.rng) {
                Ok(k) => {
                    sa.group = group;
                    let init = sa.init.as_mut().expect("initiator");
                    init.key_share = Some(k);
                    init.restarts += 1;
                    return self.restart_init(now, sa);
                }
                Err(e) => return self.fail(sa, CloseReason::ProtocolError(e.to_string())),
            }
        }
        if let Some(err) = p.first_error() {
            return self.fail(sa, CloseReason::PeerRefused(err));
        }
        match self.accept_init_response(&mut sa, &p, msg, src, dst) {
            Ok(()) => {}
            Err(why) => return self.fail(sa, CloseReason::ProtocolError(why)),
        }
        sa.pending = None;
        sa.next_request_id = 1;
        sa.last_heard = now;
        if sa.nat_detected {
            // §2.23: an initiator behind or facing a NAT moves to port
            // 4500 for IKE_AUTH and everything after.
            sa.local.set_port(self.config.nat_t_port);
            sa.remote.set_port(self.config.nat_t_port);
        }
        let bytes = self.auth_request(&mut sa);
        sa.state = State::AuthSent;
        self.start_request(now, &mut sa, RequestKind::Auth, bytes);
        self.sas.insert(sa.id, sa);
    }

    fn restart_init(&mut self, now: Duration, mut sa: IkeSa) {
        let msg = self.init_request(&sa);
        sa.init_request = msg.clone();
        self.start_request(now, &mut sa, RequestKind::Init, msg);
        self.sas.insert(sa.id, sa);
    }

    fn accept_init_response(
        &mut self,
        sa: &mut IkeSa,
        p: &Payloads<'_>,
        msg: &Message<'_>,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Result<(), String> {
        if msg.header.spi_r == 0 {
            return Err("IKE_SA_INIT response with a zero responder SPI".into());
        }
        let (Some(sa_body), Some(ke), Some(nr)) = (p.sa, p.ke, p.nonce) else {
            return Err("IKE_SA_INIT response lacks SA, KE or Nonce".into());
        };
        let props = payload::parse_sa(sa_body).map_err(|e| e.to_string())?;
        let [prop] = &props[..] else {
            return Err("responder chose more than one proposal".into());
        };
        let encr: Vec<&Transform> = prop.of_type(transform::ENCR).collect();
        let prf: Vec<&Transform> = prop.of_type(transform::PRF).collect();
        let dh: Vec<&Transform> = prop.of_type(transform::DH).collect();
        let cipher = match encr[..] {
            [t] => crypto::cipher_of(t).filter(|c| self.config.ike_ciphers.contains(c)),
            _ => None,
        }
        .ok_or("responder chose an encryption algorithm not offered")?;
        if prop.protocol != protocol::IKE
            || !matches!(prf[..], [t] if t.id == transform::PRF_HMAC_SHA2_256)
            || !matches!(dh[..], [t] if t.id == sa.group.id())
            || !no_integrity(prop)
            || ke.group != sa.group.id()
        {
            return Err("responder's proposal or KE group is not what was offered".into());
        }
        sa.spi_r = msg.header.spi_r;
        sa.cipher = cipher;
        sa.nr = nr.to_vec();
        let share = sa
            .init
            .as_mut()
            .and_then(|i| i.key_share.take())
            .ok_or("no key share")?;
        let shared = share.agree(ke.data).map_err(|e| e.to_string())?;
        self.nat_check(sa, p, src, dst);
        sa.init_response = msg.bytes.to_vec();
        let keys = crypto::derive_ike_keys(cipher, &sa.ni, &sa.nr, &shared, sa.spi_i, sa.spi_r)
            .map_err(|e| e.to_string())?;
        sa.seal = Some(SkCipher::new(cipher, &keys.sk_ei).map_err(|e| e.to_string())?);
        sa.open = Some(SkCipher::new(cipher, &keys.sk_er).map_err(|e| e.to_string())?);
        sa.keys = Some(keys);
        Ok(())
    }

    /// §2.23: compares the peer's NAT_DETECTION hashes with the addresses
    /// the datagram really carried. The hashes use both SPIs except in the
    /// IKE_SA_INIT request, where SPIr is still zero.
    fn nat_check(&self, sa: &mut IkeSa, p: &Payloads<'_>, src: SocketAddr, dst: SocketAddr) {
        let spi_r = if sa.initiator { sa.spi_r } else { 0 };
        let sources: Vec<&Notify<'_>> = p
            .notifies
            .iter()
            .filter(|n| n.kind == notify::NAT_DETECTION_SOURCE_IP)
            .collect();
        let dest = p.notify(notify::NAT_DETECTION_DESTINATION_IP);
        let (Some(dest), false) = (dest, sources.is_empty()) else {
            // The peer does not do NAT traversal.
            sa.nat_detected = false;
            return;
        };
        let src_hash = crypto::nat_hash(sa.spi_i, spi_r, src);
        let dst_hash = crypto::nat_hash(sa.spi_i, spi_r, dst);
        let peer_behind_nat = !sources.iter().any(|n| n.data == src_hash);
        let us_behind_nat = dest.data != dst_hash;
        sa.nat_detected = peer_behind_nat || us_behind_nat;
    }

    fn auth_request(&mut self, sa: &mut IkeSa) -> Vec<u8> {
        let init = sa.init.as_ref().expect("initiator");
        let keys = sa.keys.as_ref().expect("keys");
        let idi = self.config.local_id.payload_body();
        let auth = crypto::psk_auth(&init.peer.psk, &keys.sk_pi, &sa.init_request, &sa.nr, &idi);
        let spi = init.child_spi.to_be_bytes();
        let mut c = ChainBuilder::new();
        c.push(pt::IDI, &idi);
        if let Some(r) = &init.peer.remote_id {
            push_id(&mut c, pt::IDR, r);
        }
        c.push_with(pt::AUTH, false, |b| {
            TypedData {
                kind: AUTH_SHARED_KEY,
                data: &auth,
            }
            .emit(b)
        });
        push_sa(&mut c, &[esp_proposal(&self.config, &spi)]);
        push_ts(&mut c, pt::TSI, &self.config.local_ts);
        push_ts(&mut c, pt::TSR, &init.peer.remote_ts);
        c.push_with(pt::NOTIFY, false, |b| {
            Notify::new(routes::ROUTES_SUPPORTED, &[]).emit(b)
        });
        let header = sa.header(ExchangeType::IkeAuth, false, 1);
        sa.encrypt(header, c)
    }

    fn auth_response(&mut self, now: Duration, mut sa: IkeSa, p: &Payloads<'_>) {
        if p.notify(notify::AUTHENTICATION_FAILED).is_some() {
            return self.fail(sa, CloseReason::AuthenticationFailed);
        }
        let (Some(idr), Some(auth)) = (p.idr, p.auth) else {
            let why = p
                .first_error()
                .map(CloseReason::PeerRefused)
                .unwrap_or_else(|| {
                    CloseReason::ProtocolError("IKE_AUTH response lacks IDr or AUTH".into())
                });
            return self.fail(sa, why);
        };
        let init = sa.init.as_ref().expect("initiator");
        let keys = sa.keys.as_ref().expect("keys");
        let peer_id = Identity::from_payload(idr.kind, idr.data);
        let id_ok = init
            .peer
            .remote_id
            .as_ref()
            .is_none_or(|want| *want == peer_id);
        let mut idr_body = vec![idr.kind, 0, 0, 0];
        idr_body.extend_from_slice(idr.data);
        let auth_ok = auth.kind == AUTH_SHARED_KEY
            && crypto::verify_psk_auth(
                &init.peer.psk,
                &keys.sk_pr,
                &sa.init_response,
                &sa.ni,
                &idr_body,
                auth.data,
            );
        if !id_ok || !auth_ok {
            // §2.21.2: tell the responder, then forget the SA.
            // IKE_AUTH was message 1; this is the next request.
            let header = sa.header(ExchangeType::Informational, false, 2);
            let bytes = sa.encrypt(header, notify_chain(notify::AUTHENTICATION_FAILED, &[]));
            self.send(sa.local, sa.remote, &bytes);
            return self.fail(sa, CloseReason::AuthenticationFailed);
        }
        sa.pending = None;
        sa.next_request_id = 2;
        sa.state = State::Established;
        sa.peer_id = Some(peer_id.clone());
        sa.last_heard = now;
        sa.rekey_at = self.rekey_time(now, self.config.ike_rekey_after);
        sa.routes.peer_supports = p.notify(routes::ROUTES_SUPPORTED).is_some();
        self.event(Event::IkeSaEstablished {
            ike_sa: sa.id,
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            initiator: true,
            peer_routes: sa.routes.peer_supports,
            peer_id,
            local: sa.local,
            remote: sa.remote,
            nat_detected: sa.nat_detected,
        });
        let child_spi = init.child_spi;
        match self.accept_child(&sa, p) {
            Ok((spi_out, cipher, esn, ts_local, ts_remote)) => {
                let keys = sa.keys.as_ref().expect("keys");
                match crypto::child_keys(&keys.sk_d, cipher, None, &sa.ni, &sa.nr) {
                    Ok((i2r, r2i)) => {
                        sa.children.push(ChildSa {
                            spi_in: child_spi,
                            spi_out,
                            ts_local: ts_local.clone(),
                            ts_remote: ts_remote.clone(),
                            rekey_at: self.rekey_time(now, self.config.child_rekey_after),
                            replaced: false,
                        });
                        self.event(Event::ChildSaReady {
                            ike_sa: sa.id,
                            spi_in: child_spi,
                            spi_out,
                            keys_in: KeyMaterial(r2i),
                            keys_out: KeyMaterial(i2r),
                            cipher,
                            esn,
                            ts_local,
                            ts_remote,
                            local: sa.local,
                            remote: sa.remote,
                            udp_encap: sa.nat_detected,
                            initiator: true,
                        });
                    }
                    Err(_) => {
                        self.spis_in.remove(&child_spi);
                        self.event(Event::ChildSaRefused {
                            ike_sa: sa.id,
                            notify: notify::NO_PROPOSAL_CHOSEN,
                        });
                    }
                }
            }
            Err(notify) => {
                self.spis_in.remove(&child_spi);
                self.event(Event::ChildSaRefused {
                    ike_sa: sa.id,
                    notify,
                });
            }
        }
        self.next_queued(now, &mut sa);
        self.sas.insert(sa.id, sa);
    }

    /// Checks the responder's CHILD SA answer against what we offered.
    #[allow(clippy::type_complexity)]
    fn accept_child(
        &self,
        sa: &IkeSa,
        p: &Payloads<'_>,
    ) -> Result<
        (
            u32,
            CipherSuite,
            bool,
            Vec<TrafficSelector>,
            Vec<TrafficSelector>,
        ),
        u16,
    > {
        let (Some(sa_body), Some(tsi), Some(tsr)) = (p.sa, &p.tsi, &p.tsr) else {
            return Err(p.first_error().unwrap_or(notify::NO_PROPOSAL_CHOSEN));
        };
        let init = sa.init.as_ref().expect("initiator");
        let props = payload::parse_sa(sa_body).map_err(|_| notify::INVALID_SYNTAX)?;
        let [prop] = &props[..] else {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        };
        let choice = choose_esp(&self.config, &props, None).map_err(|(n, _)| n)?;
        if prop.of_type(transform::ENCR).count() != 1 || prop.of_type(transform::ESN).count() > 1 {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        }
        // The answer may only narrow what we asked for (§2.9).
        let within = |got: &[TrafficSelector], asked: &[TrafficSelector]| {
            !got.is_empty() && got.iter().all(|g| asked.iter().any(|a| a.contains(g)))
        };
        if !within(tsi, &self.config.local_ts) || !within(tsr, &init.peer.remote_ts) {
            return Err(notify::TS_UNACCEPTABLE);
        }
        Ok((
            choice.peer_spi,
            choice.cipher,
            choice.esn,
            tsi.clone(),
            tsr.clone(),
        ))
    }

    // ---------------------------------------------------------------
    // Responder: IKE_SA_INIT and IKE_AUTH
    // ---------------------------------------------------------------

    fn respond_plain(
        &mut self,
        header: &Header,
        chain: ChainBuilder,
        src: SocketAddr,
        dst: SocketAddr,
    ) {
        let h = Header {
            spi_i: header.spi_i,
            spi_r: 0,
            next_payload: 0,
            version: VERSION,
            exchange: header.exchange,
            flags: flags::RESPONSE,
            message_id: header.message_id,
            length: 0,
        };
        let bytes = emit_plain(h, chain);
        self.send(dst, src, &bytes);
    }

    fn init_request_received(
        &mut self,
        now: Duration,
        msg: &Message<'_>,
        src: SocketAddr,
        dst: SocketAddr,
    ) {
        let h = msg.header;
        if h.spi_r != 0 || h.message_id != 0 || !h.from_initiator() {
            return;
        }
        // §2.1: a retransmitted request gets the same answer.
        if let Some(id) = self.by_initiator.get(&(h.spi_i, src)) {
            if let Some(sa) = self.sas.get(id) {
                let (local, bytes) = (dst, sa.init_response.clone());
                self.send(local, src, &bytes);
            }
            return;
        }
        let Ok(p) = Payloads::collect(&msg.payloads) else {
            return self.respond_plain(&h, notify_chain(notify::INVALID_SYNTAX, &[]), src, dst);
        };
        let (Some(sa_body), Some(ke), Some(ni)) = (p.sa, p.ke, p.nonce) else {
            return self.respond_plain(&h, notify_chain(notify::INVALID_SYNTAX, &[]), src, dst);
        };
        // §2.6: under load, only a returning initiator with our cookie
        // gets state.
        if let Some(threshold) = self.config.cookie_threshold {
            if self.half_open >= threshold {
                let want = crypto::cookie(&self.cookie_secret, 0, ni, src.ip(), h.spi_i);
                let ok = p.notify(notify::COOKIE).is_some_and(|c| c.data == want);
                if !ok {
                    return self.respond_plain(&h, notify_chain(notify::COOKIE, &want), src, dst);
                }
            }
        }
        let Ok(props) = payload::parse_sa(sa_body) else {
            return self.respond_plain(&h, notify_chain(notify::INVALID_SYNTAX, &[]), src, dst);
        };
        let Some((num, cipher, group, _)) = self.choose_ike(&props, ke.group, 0) else {
            return self.respond_plain(&h, notify_chain(notify::NO_PROPOSAL_CHOSEN, &[]), src, dst);
        };
        if ke.group != group.id() {
            // §1.2: name the group we want; keep no state.
            return self.respond_plain(
                &h,
                notify_chain(notify::INVALID_KE_PAYLOAD, &group.id().to_be_bytes()),
                src,
                dst,
            );
        }
        let Ok(share) = KeyShare::generate(group, &self.rng) else {
            return;
        };
        let public = share.public().to_vec();
        let Ok(shared) = share.agree(ke.data) else {
            return self.respond_plain(&h, notify_chain(notify::INVALID_SYNTAX, &[]), src, dst);
        };
        let spi_r = self.new_ike_spi();
        let mut sa = IkeSa {
            id: IkeSaId(spi_r),
            initiator: false,
            state: State::HalfOpen,
            spi_i: h.spi_i,
            spi_r,
            local: dst,
            remote: src,
            cipher,
            group,
            ni: ni.to_vec(),
            nr: self.nonce(),
            keys: None,
            seal: None,
            open: None,
            iv: 0,
            init_request: msg.bytes.to_vec(),
            init_response: Vec::new(),
            next_request_id: 0,
            next_peer_id: 1,
            last_response: None,
            pending: None,
            queued: VecDeque::new(),
            children: Vec::new(),
            nat_detected: false,
            peer_id: None,
            last_heard: now,
            created: now,
            init: None,
            remote_ts_allowed: Vec::new(),
            creating: None,
            child_collisions: Vec::new(),
            ike_collision: None,
            rekey_at: None,
            silent: false,
            expires: None,
            routes: RouteState::default(),
        };
        self.nat_check(&mut sa, &p, src, dst);
        let Ok(keys) = crypto::derive_ike_keys(cipher, &sa.ni, &sa.nr, &shared, sa.spi_i, spi_r)
        else {
            return;
        };
        let (Ok(seal), Ok(open)) = (
            SkCipher::new(cipher, &keys.sk_er),
            SkCipher::new(cipher, &keys.sk_ei),
        ) else {
            return;
        };
        sa.seal = Some(seal);
        sa.open = Some(open);
        sa.keys = Some(keys);

        let mut c = ChainBuilder::new();
        push_sa(
            &mut c,
            &[Proposal {
                num,
                protocol: protocol::IKE,
                spi: &[],
                transforms: vec![
                    crypto::encr_transform(cipher),
                    Transform::new(transform::PRF, transform::PRF_HMAC_SHA2_256),
                    Transform::new(transform::DH, group.id()),
                ],
            }],
        );
        c.push_with(pt::KE, false, |b| {
            KeyExchange {
                group: group.id(),
                data: &public,
            }
            .emit(b)
        });
        c.push(pt::NONCE, &sa.nr);
        if p.notify(notify::NAT_DETECTION_SOURCE_IP).is_some() {
            let s = crypto::nat_hash(sa.spi_i, spi_r, dst);
            let d = crypto::nat_hash(sa.spi_i, spi_r, src);
            c.push_with(pt::NOTIFY, false, |b| {
                Notify::new(notify::NAT_DETECTION_SOURCE_IP, &s).emit(b)
            });
            c.push_with(pt::NOTIFY, false, |b| {
                Notify::new(notify::NAT_DETECTION_DESTINATION_IP, &d).emit(b)
            });
        }
        let bytes = emit_plain(sa.header(ExchangeType::IkeSaInit, true, 0), c);
        sa.init_response = bytes.clone();
        self.send(dst, src, &bytes);
        self.by_initiator.insert((sa.spi_i, src), sa.id);
        self.half_open += 1;
        self.sas.insert(sa.id, sa);
    }

    /// Picks (proposal number, cipher, group, SPI) from an IKE SA payload:
    /// SPIs of `spi_len` octets (none in IKE_SA_INIT, 8 when rekeying,
    /// §3.3.1). The group of the initiator's KE wins if we accept it, else
    /// our most preferred group among those offered.
    fn choose_ike(
        &self,
        props: &[Proposal<'_>],
        ke_group: u16,
        spi_len: usize,
    ) -> Option<(u8, CipherSuite, DhGroup, u64)> {
        props.iter().find_map(|p| {
            if p.protocol != protocol::IKE || p.spi.len() != spi_len || !no_integrity(p) {
                return None;
            }
            if !p
                .of_type(transform::PRF)
                .any(|t| t.id == transform::PRF_HMAC_SHA2_256 && !t.unknown_attribute)
            {
                return None;
            }
            let cipher = p
                .of_type(transform::ENCR)
                .filter_map(crypto::cipher_of)
                .find(|c| self.config.ike_ciphers.contains(c))?;
            let offered: Vec<DhGroup> = p
                .of_type(transform::DH)
                .filter_map(|t| DhGroup::from_id(t.id))
                .filter(|g| self.config.dh_groups.contains(g))
                .collect();
            let group = offered
                .iter()
                .copied()
                .find(|g| g.id() == ke_group)
                .or_else(|| {
                    self.config
                        .dh_groups
                        .iter()
                        .copied()
                        .find(|g| offered.contains(g))
                })?;
            let spi = p.spi.iter().fold(0u64, |a, &b| a << 8 | u64::from(b));
            Some((p.num, cipher, group, spi))
        })
    }

    /// IKE_AUTH request on a half-open SA (§1.2, §2.15). Returns the
    /// response chain, or `None` when the SA is to be dropped after the
    /// answer (authentication failed).
    fn auth_request_received(
        &mut self,
        now: Duration,
        sa: &mut IkeSa,
        p: &Payloads<'_>,
    ) -> Result<ChainBuilder, ChainBuilder> {
        let refuse = || Err(notify_chain(notify::AUTHENTICATION_FAILED, &[]));
        let (Some(idi), Some(auth)) = (p.idi, p.auth) else {
            return refuse();
        };
        if auth.kind != AUTH_SHARED_KEY {
            return refuse();
        }
        let peer_id = Identity::from_payload(idi.kind, idi.data);
        let Some(entry) = self.directory.lookup(&peer_id) else {
            return refuse();
        };
        let keys = sa.keys.as_ref().expect("keys");
        let mut idi_body = vec![idi.kind, 0, 0, 0];
        idi_body.extend_from_slice(idi.data);
        if !crypto::verify_psk_auth(
            &entry.psk,
            &keys.sk_pi,
            &sa.init_request,
            &sa.nr,
            &idi_body,
            auth.data,
        ) {
            return refuse();
        }
        let idr = self.config.local_id.payload_body();
        let my_auth = crypto::psk_auth(&entry.psk, &keys.sk_pr, &sa.init_response, &sa.ni, &idr);
        let mut c = ChainBuilder::new();
        c.push(pt::IDR, &idr);
        c.push_with(pt::AUTH, false, |b| {
            TypedData {
                kind: AUTH_SHARED_KEY,
                data: &my_auth,
            }
            .emit(b)
        });
        sa.state = State::Established;
        sa.peer_id = Some(peer_id.clone());
        sa.remote_ts_allowed = entry.remote_ts.clone();
        sa.rekey_at = self.rekey_time(now, self.config.ike_rekey_after);
        self.half_open -= 1;
        sa.routes.peer_supports = p.notify(routes::ROUTES_SUPPORTED).is_some();
        if sa.routes.peer_supports {
            c.push_with(pt::NOTIFY, false, |b| {
                Notify::new(routes::ROUTES_SUPPORTED, &[]).emit(b)
            });
        }
        self.event(Event::IkeSaEstablished {
            ike_sa: sa.id,
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            initiator: false,
            peer_routes: sa.routes.peer_supports,
            peer_id,
            local: sa.local,
            remote: sa.remote,
            nat_detected: sa.nat_detected,
        });

        // The first CHILD SA (§1.2); its failure leaves the IKE SA up.
        let child = (|| {
            let (Some(sa_body), Some(tsi), Some(tsr)) = (p.sa, &p.tsi, &p.tsr) else {
                return Err(notify::NO_PROPOSAL_CHOSEN);
            };
            let props = payload::parse_sa(sa_body).map_err(|_| notify::INVALID_SYNTAX)?;
            let choice =
                choose_esp(&self.config, &props, None).map_err(|_| notify::NO_PROPOSAL_CHOSEN)?;
            // §2.9: narrow TSi to what the registry allows the peer and
            // nothing another peer holds, TSr to what we offer it.
            let allowed = |t: &TrafficSelector| {
                let mut n = narrow(std::slice::from_ref(t), &entry.remote_ts);
                n.retain(|t| !entry.conflicts.iter().any(|c| c.intersect(t).is_some()));
                n
            };
            let ts_i: Vec<TrafficSelector> = tsi.iter().flat_map(allowed).collect();
            let refused: Vec<TrafficSelector> = tsi
                .iter()
                .filter(|t| allowed(t).is_empty())
                .cloned()
                .collect();
            if !refused.is_empty() {
                self.event(Event::SelectorsRefused {
                    ike_sa: sa.id,
                    refused,
                });
            }
            let offer = entry.local_ts.as_deref().unwrap_or(&self.config.local_ts);
            let ts_r = narrow(tsr, offer);
            if ts_i.is_empty() || ts_r.is_empty() {
                return Err(notify::TS_UNACCEPTABLE);
            }
            Ok((choice, ts_i, ts_r))
        })();
        match child {
            Ok((choice, ts_i, ts_r)) => {
                let keys = sa.keys.as_ref().expect("keys");
                match crypto::child_keys(&keys.sk_d, choice.cipher, None, &sa.ni, &sa.nr) {
                    Ok((i2r, r2i)) => {
                        let spi_in = self.new_child_spi();
                        let spi = spi_in.to_be_bytes();
                        push_sa(&mut c, &[esp_answer(&choice, &spi)]);
                        push_ts(&mut c, pt::TSI, &ts_i);
                        push_ts(&mut c, pt::TSR, &ts_r);
                        sa.children.push(ChildSa {
                            spi_in,
                            spi_out: choice.peer_spi,
                            ts_local: ts_r.clone(),
                            ts_remote: ts_i.clone(),
                            rekey_at: self.rekey_time(now, self.config.child_rekey_after),
                            replaced: false,
                        });
                        self.event(Event::ChildSaReady {
                            ike_sa: sa.id,
                            spi_in,
                            spi_out: choice.peer_spi,
                            keys_in: KeyMaterial(i2r),
                            keys_out: KeyMaterial(r2i),
                            cipher: choice.cipher,
                            esn: choice.esn,
                            ts_local: ts_r,
                            ts_remote: ts_i,
                            local: sa.local,
                            remote: sa.remote,
                            udp_encap: sa.nat_detected,
                            initiator: false,
                        });
                    }
                    Err(_) => {
                        c.push_with(pt::NOTIFY, false, |b| {
                            Notify::new(notify::NO_PROPOSAL_CHOSEN, &[]).emit(b)
                        });
                    }
                }
            }
            Err(n) => {
                c.push_with(pt::NOTIFY, false, |b| Notify::new(n, &[]).emit(b));
                self.event(Event::ChildSaRefused {
                    ike_sa: sa.id,
                    notify: n,
                });
            }
        }
        sa.last_heard = now;
        Ok(c)
    }

    // ---------------------------------------------------------------
    // Datagram entry point
    // ---------------------------------------------------------------

    /// Handles one UDP payload that arrived from `src` at our address
    /// `dst`. On the NAT-T port the payload must start with the non-ESP
    /// marker (ESP packets are the dataplane's, not ours). Malformed or
    /// unauthenticated messages are dropped without an answer, as §2.21
    /// asks for anything not protected.
    pub fn handle_datagram(
        &mut self,
        now: Duration,
        src: SocketAddr,
        dst: SocketAddr,
        bytes: &[u8],
    ) -> Vec<Output> {
        let data = if dst.port() == self.config.nat_t_port {
            match bytes.strip_prefix(&NON_ESP_MARKER[..]) {
                Some(d) => d,
                None => return Vec::new(),
            }
        } else {
            bytes
        };
        let header = match Header::parse(data) {
            Ok(h) => h,
            Err(_) => return Vec::new(),
        };
        let msg = match Message::parse(data) {
            Ok(m) => m,
            Err(ParseError::UnsupportedCritical(t))
                if header.exchange == ExchangeType::IkeSaInit && !header.is_response() =>
            {
                // §2.5: the answer names the payload type.
                self.respond_plain(
                    &header,
                    notify_chain(notify::UNSUPPORTED_CRITICAL_PAYLOAD, &[t]),
                    src,
                    dst,
                );
                return self.take();
            }
            Err(_) => return Vec::new(),
        };
        if header.exchange == ExchangeType::IkeSaInit && !header.is_response() {
            self.init_request_received(now, &msg, src, dst);
            return self.take();
        }
        let ours = if header.from_initiator() {
            header.spi_r
        } else {
            header.spi_i
        };
        let Some(sa) = self.sas.remove(&IkeSaId(ours)) else {
            return Vec::new();
        };
        // The peer's role is the opposite of ours.
        if header.from_initiator() == sa.initiator || (!sa.initiator && header.spi_i != sa.spi_i) {
            self.sas.insert(sa.id, sa);
            return Vec::new();
        }
        if header.exchange == ExchangeType::IkeSaInit {
            let expected = sa.state == State::InitSent
                && header.is_response()
                && header.message_id == 0
                && sa
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.kind == RequestKind::Init);
            if expected {
                self.init_response(now, sa, &msg, src, dst);
            } else {
                self.sas.insert(sa.id, sa);
            }
            return self.take();
        }
        if header.is_response() {
            self.response_received(now, sa, &msg, src, dst);
        } else {
            self.request_received(now, sa, &msg, src, dst);
        }
        self.take()
    }

    fn decrypt(&self, sa: &IkeSa, msg: &Message<'_>) -> Option<(u8, Vec<u8>)> {
        sa.open.as_ref()?.open(msg).ok()
    }

    fn response_received(
        &mut self,
        now: Duration,
        mut sa: IkeSa,
        msg: &Message<'_>,
        src: SocketAddr,
        dst: SocketAddr,
    ) {
        let matches = sa
            .pending
            .as_ref()
            .is_some_and(|p| p.message_id == msg.header.message_id);
        let Some((first, inner)) = matches.then(|| self.decrypt(&sa, msg)).flatten() else {
            self.sas.insert(sa.id, sa);
            return;
        };
        let payloads = parse_chain(first, &inner).and_then(|raw| Payloads::collect(&raw));
        let Ok(p) = payloads else {
            // Authenticated but malformed: the exchange cannot complete.
            return self.fail(sa, CloseReason::ProtocolError("malformed response".into()));
        };
        sa.last_heard = now;
        self.follow_peer(&mut sa, src, dst);
        let kind = sa.pending.as_ref().map(|p| p.kind);
        match kind {
            Some(RequestKind::Auth) if msg.header.exchange == ExchangeType::IkeAuth => {
                self.auth_response(now, sa, &p)
            }
            Some(RequestKind::RekeyChild(_))
                if msg.header.exchange == ExchangeType::CreateChildSa =>
            {
                sa.pending = None;
                sa.next_request_id += 1;
                self.child_rekey_response(now, &mut sa, &p);
                if sa.pending.is_none() {
                    self.next_queued(now, &mut sa);
                }
                self.sas.insert(sa.id, sa);
            }
            Some(RequestKind::RekeyIke) if msg.header.exchange == ExchangeType::CreateChildSa => {
                sa.pending = None;
                sa.next_request_id += 1;
                self.ike_rekey_response(now, &mut sa, &p);
                if sa.pending.is_none() {
                    self.next_queued(now, &mut sa);
                }
                self.sas.insert(sa.id, sa);
            }
            Some(RequestKind::DeleteIke) => self.close_now(sa, CloseReason::DeletedLocally),
            Some(RequestKind::DeleteChild(spi_in)) => {
                sa.pending = None;
                sa.next_request_id += 1;
                self.remove_child(&mut sa, spi_in);
                self.next_queued(now, &mut sa);
                self.sas.insert(sa.id, sa);
            }
            Some(RequestKind::Liveness) => {
                sa.pending = None;
                sa.next_request_id += 1;
                self.next_queued(now, &mut sa);
                self.sas.insert(sa.id, sa);
            }
            Some(RequestKind::Routes) => {
                sa.pending = None;
                sa.next_request_id += 1;
                if !sa.routes.out.is_empty() && !sa.queued.contains(&RequestKind::Routes) {
                    sa.queued.push_front(RequestKind::Routes);
                }
                self.next_queued(now, &mut sa);
                self.sas.insert(sa.id, sa);
            }
            _ => {
                self.sas.insert(sa.id, sa);
            }
        }
    }

    /// §2.23: with a NAT in the path, the peer's address is whatever its
    /// latest authenticated message came from.
    fn follow_peer(&self, sa: &mut IkeSa, src: SocketAddr, dst: SocketAddr) {
        if sa.nat_detected {
            sa.remote = src;
            sa.local = dst;
        }
    }

    fn request_received(
        &mut self,
        now: Duration,
        mut sa: IkeSa,
        msg: &Message<'_>,
        src: SocketAddr,
        dst: SocketAddr,
    ) {
        let id = msg.header.message_id;
        // §2.1/§2.2: the previous request again gets the cached answer;
        // anything else out of order is dropped.
        if id.wrapping_add(1) == sa.next_peer_id {
            if let Some(c) = sa.last_response.as_ref().filter(|c| c.message_id == id) {
                let bytes = c.bytes.clone();
                self.send(dst, src, &bytes);
            }
            self.sas.insert(sa.id, sa);
            return;
        }
        if id != sa.next_peer_id {
            self.sas.insert(sa.id, sa);
            return;
        }
        let Some((first, inner)) = self.decrypt(&sa, msg) else {
            self.sas.insert(sa.id, sa);
            return;
        };
        sa.last_heard = now;
        let exchange = msg.header.exchange;
        // What to answer, and whether the SA ends with the answer.
        let (chain, close): (ChainBuilder, Option<CloseReason>) =
            match parse_chain(first, &inner).and_then(|raw| Payloads::collect(&raw)) {
                Err(ParseError::UnsupportedCritical(t)) => (
                    notify_chain(notify::UNSUPPORTED_CRITICAL_PAYLOAD, &[t]),
                    (sa.state == State::HalfOpen).then_some(CloseReason::PeerRefused(
                        notify::UNSUPPORTED_CRITICAL_PAYLOAD,
                    )),
                ),
                Err(_) => (
                    notify_chain(notify::INVALID_SYNTAX, &[]),
                    (sa.state == State::HalfOpen)
                        .then(|| CloseReason::ProtocolError("malformed IKE_AUTH".into())),
                ),
                Ok(p) => match (sa.state, exchange) {
                    (State::HalfOpen, ExchangeType::IkeAuth) => {
                        self.follow_peer(&mut sa, src, dst);
                        match self.auth_request_received(now, &mut sa, &p) {
                            Ok(c) => (c, None),
                            Err(c) => (c, Some(CloseReason::AuthenticationFailed)),
                        }
                    }
                    (State::Established, ExchangeType::Informational) => {
                        self.follow_peer(&mut sa, src, dst);
                        self.informational(now, &mut sa, &p)
                    }
                    (State::Established, ExchangeType::CreateChildSa) => {
                        self.follow_peer(&mut sa, src, dst);
                        (self.create_child_request(now, &mut sa, &p), None)
                    }
                    _ => {
                        self.sas.insert(sa.id, sa);
                        return;
                    }
                },
            };
        let header = sa.header(exchange, true, id);
        let bytes = sa.encrypt(header, chain);
        self.send(dst, src, &bytes);
        sa.next_peer_id = id.wrapping_add(1);
        sa.last_response = Some(Cached {
            message_id: id,
            bytes,
        });
        match close {
            // The answer is sent; nothing of the SA is kept (§2.21.2).
            Some(reason) => self.close_now(sa, reason),
            None => {
                self.sas.insert(sa.id, sa);
            }
        }
        self.run_kicks(now);
    }

    /// INFORMATIONAL requests (§1.4): Delete payloads, notifications, or
    /// nothing (a liveness check).
    fn informational(
        &mut self,
        now: Duration,
        sa: &mut IkeSa,
        p: &Payloads<'_>,
    ) -> (ChainBuilder, Option<CloseReason>) {
        if p.deletes.iter().any(|d| d.protocol == protocol::IKE) {
            // Colliding IKE rekeys (§2.8.1) where the peer's won and its
            // Delete overtook the answer to ours: its new SA takes over.
            if let Some(c) = sa.ike_collision.take() {
                if let Some(mut standby) = self.sas.remove(&c.made) {
                    self.hand_over(now, sa, &mut standby);
                    self.sas.insert(standby.id, standby);
                }
            }
            return (ChainBuilder::new(), Some(CloseReason::DeletedByPeer));
        }
        if p.notify(notify::AUTHENTICATION_FAILED).is_some() {
            return (ChainBuilder::new(), Some(CloseReason::AuthenticationFailed));
        }
        // A chunk of the peer's route set; a malformed one is ignored
        // like an unknown status notification.
        if let Some(chunk) = p
            .notify(routes::ROUTES)
            .and_then(|n| routes::decode(n.data))
        {
            if let Some((generation, prefixes)) = sa.routes.assembly.take(chunk) {
                self.event(Event::RoutesReceived {
                    ike_sa: sa.id,
                    generation,
                    prefixes,
                });
            }
        }
        let mut ours = Vec::new();
        for d in p.deletes.iter().filter(|d| d.protocol == protocol::ESP) {
            for spi_out in d.spis_u32() {
                if let Some(c) = sa.children.iter().find(|c| c.spi_out == spi_out) {
                    ours.push(c.spi_in);
                }
            }
        }
        let mut c = ChainBuilder::new();
        if !ours.is_empty() {
            // §1.4.1: answer with the SPIs of our own inbound halves.
            c.push_with(pt::DELETE, false, |b| Delete::emit_esp(b, &ours));
            for spi_in in ours {
                self.remove_child(sa, spi_in);
            }
        }
        (c, None)
    }

    fn remove_child(&mut self, sa: &mut IkeSa, spi_in: u32) {
        if let Some(i) = sa.children.iter().position(|c| c.spi_in == spi_in) {
            let c = sa.children.remove(i);
            self.spis_in.remove(&c.spi_in);
            self.event(Event::ChildSaDeleted {
                ike_sa: sa.id,
                spi_in: c.spi_in,
                spi_out: c.spi_out,
            });
        }
    }

    /// Ends the SA: its CHILD SAs are reported deleted, then the SA
    /// (unless it was rekeyed away or on standby: no events then).
    fn close_now(&mut self, mut sa: IkeSa, reason: CloseReason) {
        for spi_in in sa.children.iter().map(|c| c.spi_in).collect::<Vec<_>>() {
            self.remove_child(&mut sa, spi_in);
        }
        if let Some(Creating::Child { spi_in, .. }) = &sa.creating {
            self.spis_in.remove(spi_in);
        }
        if let Some(c) = sa.ike_collision.take() {
            if let Some(standby) = self.sas.remove(&c.made) {
                self.close_now(standby, reason.clone());
            }
        }
        if sa.state == State::HalfOpen {
            self.half_open -= 1;
        }
        if let Some(init) = &sa.init {
            if sa.state != State::Established {
                self.spis_in.remove(&init.child_spi);
            }
        }
        // The peer's address may have moved since (NAT-T): search by id.
        self.by_initiator.retain(|_, v| *v != sa.id);
        if !sa.silent {
            self.event(Event::IkeSaClosed {
                ike_sa: sa.id,
                reason,
            });
        }
    }

    fn fail(&mut self, sa: IkeSa, reason: CloseReason) {
        self.close_now(sa, reason);
    }

    // ---------------------------------------------------------------
    // Requests we start on an established SA
    // ---------------------------------------------------------------

    fn request_bytes(&mut self, sa: &mut IkeSa, kind: RequestKind) -> Option<Vec<u8>> {
        match kind {
            RequestKind::RekeyChild(old) => {
                let share = if self.config.child_pfs {
                    Some(KeyShare::generate(self.config.dh_groups[0], &self.rng).ok()?)
                } else {
                    None
                };
                let spi_in = self.new_child_spi();
                sa.creating = Some(Creating::Child {
                    old,
                    spi_in,
                    ni: self.nonce(),
                    share,
                    retried: false,
                });
                return self.rekey_child_bytes(sa);
            }
            RequestKind::RekeyIke => {
                let share = KeyShare::generate(sa.group, &self.rng).ok()?;
                sa.creating = Some(Creating::Ike {
                    spi: self.new_ike_spi(),
                    ni: self.nonce(),
                    share: Some(share),
                    retried: false,
                });
                return self.rekey_ike_bytes(sa);
            }
            _ => {}
        }
        let mut c = ChainBuilder::new();
        match kind {
            RequestKind::DeleteChild(spi_in) => {
                c.push_with(pt::DELETE, false, |b| Delete::emit_esp(b, &[spi_in]));
            }
            RequestKind::DeleteIke => c.push_with(pt::DELETE, false, Delete::emit_ike),
            RequestKind::Routes => {
                let chunk = sa.routes.out.pop_front()?;
                c.push_with(pt::NOTIFY, false, |b| {
                    Notify::new(routes::ROUTES, &chunk).emit(b)
                });
            }
            _ => {}
        }
        let header = sa.header(ExchangeType::Informational, false, sa.next_request_id);
        Some(sa.encrypt(header, c))
    }

    fn enqueue(&mut self, now: Duration, sa: &mut IkeSa, kind: RequestKind) {
        // Window size 1 (§2.3): one request in flight, the rest wait.
        if sa.pending.is_some() {
            if !sa.queued.contains(&kind) {
                sa.queued.push_back(kind);
            }
            return;
        }
        let bytes = Self::still_wanted(sa, kind)
            .then(|| self.request_bytes(sa, kind))
            .flatten();
        match bytes {
            Some(bytes) => self.start_request(now, sa, kind, bytes),
            None => self.next_queued(now, sa),
        }
    }

    fn next_queued(&mut self, now: Duration, sa: &mut IkeSa) {
        if let Some(kind) = sa.queued.pop_front() {
            self.enqueue(now, sa, kind);
        }
    }

    fn established(&mut self, id: IkeSaId) -> Result<IkeSa, Error> {
        match self.sas.get(&id) {
            None => Err(Error::UnknownSa(id.0)),
            Some(sa) if sa.state != State::Established || sa.silent => {
                Err(Error::NotEstablished(id.0))
            }
            Some(_) => Ok(self.sas.remove(&id).expect("present")),
        }
    }

    /// Traffic arrived under a CHILD SA of `id` at `now`: proof of
    /// liveness (§2.4: only a peer from which nothing came needs a
    /// check), so its next liveness check is put off. An unknown SA is
    /// ignored.
    pub fn traffic_received(&mut self, now: Duration, id: IkeSaId) {
        if let Some(sa) = self.sas.get_mut(&id) {
            sa.last_heard = sa.last_heard.max(now);
        }
    }

    /// Sends a liveness check (an empty INFORMATIONAL request, §1.4);
    /// no answer through every retransmission closes the SA.
    pub fn check_liveness(&mut self, now: Duration, id: IkeSaId) -> Result<Vec<Output>, Error> {
        self.with_established(now, id, |ike, _| {
            ike.liveness_checks += 1;
            vec![RequestKind::Liveness]
        })
    }

    /// Queues the requests `what` picks for the established SA `id` (it
    /// may prepare the SA first) and returns what is to be sent.
    fn with_established(
        &mut self,
        now: Duration,
        id: IkeSaId,
        what: impl FnOnce(&mut Self, &mut IkeSa) -> Vec<RequestKind>,
    ) -> Result<Vec<Output>, Error> {
        let mut sa = self.established(id)?;
        for kind in what(self, &mut sa) {
            self.enqueue(now, &mut sa, kind);
        }
        self.sas.insert(id, sa);
        Ok(self.take())
    }

    /// Deletes the CHILD SA whose inbound SPI is `spi_in` (§1.4.1). The
    /// ChildSaDeleted event comes with the peer's answer.
    pub fn delete_child(
        &mut self,
        now: Duration,
        id: IkeSaId,
        spi_in: u32,
    ) -> Result<Vec<Output>, Error> {
        self.with_established(now, id, |_, sa| {
            let known = sa.children.iter().any(|c| c.spi_in == spi_in);
            known
                .then_some(RequestKind::DeleteChild(spi_in))
                .into_iter()
                .collect()
        })
    }

    /// Deletes the IKE SA and its CHILD SAs (§1.4.1).
    pub fn close(&mut self, now: Duration, id: IkeSaId) -> Result<Vec<Output>, Error> {
        self.with_established(now, id, |_, _| vec![RequestKind::DeleteIke])
    }

    // ---------------------------------------------------------------
    // CREATE_CHILD_SA (§1.3): rekeying CHILD SAs and the IKE SA
    // ---------------------------------------------------------------

    /// Whether a queued request still makes sense when its turn comes.
    fn still_wanted(sa: &IkeSa, kind: RequestKind) -> bool {
        let up = sa.state == State::Established && !sa.silent;
        match kind {
            RequestKind::RekeyChild(old) => {
                up && sa.children.iter().any(|c| c.spi_in == old && !c.replaced)
                    && !sa.queued.contains(&RequestKind::DeleteChild(old))
            }
            RequestKind::RekeyIke => up,
            RequestKind::DeleteChild(spi) => sa.children.iter().any(|c| c.spi_in == spi),
            RequestKind::Routes => up && !sa.routes.out.is_empty(),
            _ => true,
        }
    }

    /// Records a new CHILD SA and reports it.
    fn add_child(&mut self, now: Duration, sa: &mut IkeSa, n: NewChild) {
        sa.children.push(ChildSa {
            spi_in: n.spi_in,
            spi_out: n.spi_out,
            ts_local: n.ts_local.clone(),
            ts_remote: n.ts_remote.clone(),
            rekey_at: self.rekey_time(now, self.config.child_rekey_after),
            replaced: false,
        });
        self.event(Event::ChildSaReady {
            ike_sa: sa.id,
            spi_in: n.spi_in,
            spi_out: n.spi_out,
            keys_in: KeyMaterial(n.keys_in),
            keys_out: KeyMaterial(n.keys_out),
            cipher: n.cipher,
            esn: n.esn,
            ts_local: n.ts_local,
            ts_remote: n.ts_remote,
            local: sa.local,
            remote: sa.remote,
            udp_encap: sa.nat_detected,
            initiator: n.initiator,
        });
    }

    /// When to try a refused rekey again: a tenth of the soft lifetime
    /// later (at least a second), or never if rekeying is not timed.
    fn retry_rekey(&self, now: Duration, after: Option<Duration>) -> Option<Duration> {
        after.map(|a| now + (a / 10).max(Duration::from_secs(1)))
    }

    /// The IKE SA a rekey of `old` makes (§2.18): the same peer, addresses
    /// and NAT state; new SPIs, nonces and keys; message IDs from zero.
    /// The rekey initiator is the new SA's initiator (§2.2, §3.1).
    #[allow(clippy::too_many_arguments)]
    fn successor(
        &self,
        now: Duration,
        old: &IkeSa,
        initiator: bool,
        (spi_i, spi_r): (u64, u64),
        cipher: CipherSuite,
        group: DhGroup,
        (ni, nr): (Vec<u8>, Vec<u8>),
        keys: IkeKeys,
    ) -> Result<IkeSa, Error> {
        let (seal, open) = if initiator {
            (&keys.sk_ei, &keys.sk_er)
        } else {
            (&keys.sk_er, &keys.sk_ei)
        };
        let seal = SkCipher::new(cipher, seal)?;
        let open = SkCipher::new(cipher, open)?;
        Ok(IkeSa {
            id: IkeSaId(if initiator { spi_i } else { spi_r }),
            initiator,
            state: State::Established,
            spi_i,
            spi_r,
            local: old.local,
            remote: old.remote,
            cipher,
            group,
            ni,
            nr,
            keys: Some(keys),
            seal: Some(seal),
            open: Some(open),
            iv: 0,
            init_request: Vec::new(),
            init_response: Vec::new(),
            next_request_id: 0,
            next_peer_id: 0,
            last_response: None,
            pending: None,
            queued: VecDeque::new(),
            children: Vec::new(),
            nat_detected: old.nat_detected,
            peer_id: old.peer_id.clone(),
            last_heard: now,
            created: now,
            init: None,
            remote_ts_allowed: old.remote_ts_allowed.clone(),
            creating: None,
            child_collisions: Vec::new(),
            ike_collision: None,
            rekey_at: None,
            silent: false,
            expires: None,
            routes: RouteState {
                peer_supports: old.routes.peer_supports,
                generation: old.routes.generation,
                ..RouteState::default()
            },
        })
    }

    /// Moves `old`'s CHILD SAs and waiting requests to `new`, reports the
    /// rekey and retires `old` (it waits for its Delete, silently).
    fn hand_over(&mut self, now: Duration, old: &mut IkeSa, new: &mut IkeSa) {
        new.children = std::mem::take(&mut old.children);
        new.routes.out = std::mem::take(&mut old.routes.out);
        for k in std::mem::take(&mut old.queued) {
            if k != RequestKind::RekeyIke && !new.queued.contains(&k) {
                new.queued.push_back(k);
            }
        }
        old.child_collisions.clear();
        new.silent = false;
        new.expires = None;
        new.rekey_at = self.rekey_time(now, self.config.ike_rekey_after);
        old.silent = true;
        old.rekey_at = None;
        old.expires = Some(now + self.retire_span());
        self.kick.push(new.id);
        self.event(Event::IkeSaRekeyed {
            old: old.id,
            new: new.id,
            spi_i: new.spi_i,
            spi_r: new.spi_r,
        });
    }

    /// Starts the waiting requests of SAs that a rekey just made, once the
    /// answer that makes them known to the peer is out.
    fn run_kicks(&mut self, now: Duration) {
        for id in std::mem::take(&mut self.kick) {
            if let Some(mut sa) = self.sas.remove(&id) {
                if sa.pending.is_none() {
                    self.next_queued(now, &mut sa);
                }
                self.sas.insert(id, sa);
            }
        }
    }

    /// A CREATE_CHILD_SA request (§1.3): the answer.
    fn create_child_request(
        &mut self,
        now: Duration,
        sa: &mut IkeSa,
        p: &Payloads<'_>,
    ) -> ChainBuilder {
        if sa.silent {
            // Rekeyed away or on standby: nothing new on it.
            return notify_chain(notify::TEMPORARY_FAILURE, &[]);
        }
        let Some(body) = p.sa else {
            return notify_chain(notify::INVALID_SYNTAX, &[]);
        };
        let Ok(props) = payload::parse_sa(body) else {
            return notify_chain(notify::INVALID_SYNTAX, &[]);
        };
        if props.iter().any(|x| x.protocol == protocol::IKE) {
            self.ike_rekey_request(now, sa, &props, p)
        } else if let Some(rekey) = p.notify(notify::REKEY_SA) {
            self.child_rekey_request(now, sa, &props, p, rekey)
        } else if sa.children.is_empty() && !matches!(sa.creating, Some(Creating::Ike { .. })) {
            // A CHILD SA for an IKE SA that has none left (the peer let
            // the last one expire and creates it anew, §1.3.1).
            self.answer_child(now, sa, &props, p, None)
        } else {
            // A further CHILD SA: one per IKE SA is what the runtime
            // keeps, so §1.3 lets us refuse.
            notify_chain(notify::NO_ADDITIONAL_SAS, &[])
        }
    }

    /// The peer rekeys a CHILD SA (§1.3.3).
    fn child_rekey_request(
        &mut self,
        now: Duration,
        sa: &mut IkeSa,
        props: &[Proposal<'_>],
        p: &Payloads<'_>,
        rekey: &Notify<'_>,
    ) -> ChainBuilder {
        let not_found = || {
            let mut c = ChainBuilder::new();
            c.push_with(pt::NOTIFY, false, |b| {
                Notify {
                    protocol: protocol::ESP,
                    spi: rekey.spi,
                    kind: notify::CHILD_SA_NOT_FOUND,
                    data: &[],
                }
                .emit(b)
            });
            c
        };
        // The SPI the peer receives on: our outbound one.
        let old_out = match <[u8; 4]>::try_from(rekey.spi) {
            Ok(b) if rekey.protocol == protocol::ESP => u32::from_be_bytes(b),
            _ => return not_found(),
        };
        let Some(old) = sa.children.iter().find(|c| c.spi_out == old_out) else {
            return not_found();
        };
        let old_in = old.spi_in;
        let deleting = old.replaced
            || sa.queued.contains(&RequestKind::DeleteChild(old_in))
            || sa
                .pending
                .as_ref()
                .is_some_and(|q| q.kind == RequestKind::DeleteChild(old_in));
        // §2.25: a CHILD SA being closed, or an IKE rekey of ours under way.
        if deleting || matches!(sa.creating, Some(Creating::Ike { .. })) {
            return notify_chain(notify::TEMPORARY_FAILURE, &[]);
        }
        self.answer_child(now, sa, props, p, Some(old_in))
    }

    /// Answers a CREATE_CHILD_SA for a CHILD SA: the rekey of `old_in`, or
    /// (`None`) a new one (§1.3.1, §1.3.3).
    fn answer_child(
        &mut self,
        now: Duration,
        sa: &mut IkeSa,
        props: &[Proposal<'_>],
        p: &Payloads<'_>,
        old_in: Option<u32>,
    ) -> ChainBuilder {
        let (Some(ni), Some(tsi), Some(tsr)) = (p.nonce, &p.tsi, &p.tsr) else {
            return notify_chain(notify::INVALID_SYNTAX, &[]);
        };
        let choice = match choose_esp(&self.config, props, p.ke.map(|k| k.group)) {
            Ok(c) => c,
            Err((n, g)) => return refusal_chain(n, g),
        };
        // §2.9 as in IKE_AUTH: the peer's side to what it may have, ours
        // to our own prefixes.
        let ts_i = narrow(tsi, &sa.remote_ts_allowed);
        let ts_r = narrow(tsr, &self.config.local_ts);
        if ts_i.is_empty() || ts_r.is_empty() {
            return notify_chain(notify::TS_UNACCEPTABLE, &[]);
        }
        let mut ke_out = None;
        let mut shared = None;
        if let (Some(g), Some(ke)) = (choice.group, p.ke) {
            let Ok(share) = KeyShare::generate(g, &self.rng) else {
                return notify_chain(notify::NO_PROPOSAL_CHOSEN, &[]);
            };
            ke_out = Some((g, share.public().to_vec()));
            match share.agree(ke.data) {
                Ok(s) => shared = Some(s),
                Err(_) => return notify_chain(notify::INVALID_SYNTAX, &[]),
            }
        }
        let nr = self.nonce();
        let keys = sa.keys.as_ref().expect("keys");
        let Ok((i2r, r2i)) =
            crypto::child_keys(&keys.sk_d, choice.cipher, shared.as_deref(), ni, &nr)
        else {
            return notify_chain(notify::NO_PROPOSAL_CHOSEN, &[]);
        };
        let spi_in = self.new_child_spi();
        let spi = spi_in.to_be_bytes();
        let mut c = ChainBuilder::new();
        push_sa(&mut c, &[esp_answer(&choice, &spi)]);
        c.push(pt::NONCE, &nr);
        if let Some((g, public)) = &ke_out {
            c.push_with(pt::KE, false, |b| {
                KeyExchange {
                    group: g.id(),
                    data: public,
                }
                .emit(b)
            });
        }
        push_ts(&mut c, pt::TSI, &ts_i);
        push_ts(&mut c, pt::TSR, &ts_r);
        if let Some(o) = sa.children.iter_mut().find(|c| Some(c.spi_in) == old_in) {
            o.replaced = true;
            o.rekey_at = None;
        }
        if let Some(old_in) =
            old_in.filter(|o| matches!(&sa.creating, Some(Creating::Child { old, .. }) if old == o))
        {
            // §2.8.1: we are rekeying it too; our answer settles which of
            // the two new CHILD SAs stays.
            sa.child_collisions.push(ChildCollision {
                old: old_in,
                ni: ni.to_vec(),
                nr: nr.clone(),
            });
        }
        self.add_child(
            now,
            sa,
            NewChild {
                initiator: false,
                spi_in,
                spi_out: choice.peer_spi,
                keys_in: i2r,
                keys_out: r2i,
                cipher: choice.cipher,
                esn: choice.esn,
                ts_local: ts_r,
                ts_remote: ts_i,
            },
        );
        c
    }

    /// The peer rekeys the IKE SA (§1.3.2, §2.18).
    fn ike_rekey_request(
        &mut self,
        now: Duration,
        sa: &mut IkeSa,
        props: &[Proposal<'_>],
        p: &Payloads<'_>,
    ) -> ChainBuilder {
        // §2.25: not while a CHILD SA exchange of ours is under way (its
        // answer would come on the old SA).
        let busy = matches!(sa.creating, Some(Creating::Child { .. }))
            || sa.ike_collision.is_some()
            || sa
                .pending
                .as_ref()
                .is_some_and(|q| !matches!(q.kind, RequestKind::Liveness | RequestKind::RekeyIke));
        if busy {
            return notify_chain(notify::TEMPORARY_FAILURE, &[]);
        }
        let (Some(ni), Some(ke)) = (p.nonce, p.ke) else {
            return notify_chain(notify::INVALID_SYNTAX, &[]);
        };
        let Some((num, cipher, group, spi_i)) = self.choose_ike(props, ke.group, 8) else {
            return notify_chain(notify::NO_PROPOSAL_CHOSEN, &[]);
        };
        if ke.group != group.id() {
            return refusal_chain(notify::INVALID_KE_PAYLOAD, Some(group));
        }
        if spi_i == 0 {
            return notify_chain(notify::INVALID_SYNTAX, &[]);
        }
        let Ok(share) = KeyShare::generate(group, &self.rng) else {
            return notify_chain(notify::NO_PROPOSAL_CHOSEN, &[]);
        };
        let public = share.public().to_vec();
        let Ok(shared) = share.agree(ke.data) else {
            return notify_chain(notify::INVALID_SYNTAX, &[]);
        };
        let nr = self.nonce();
        let spi_r = self.new_ike_spi();
        let old_keys = sa.keys.as_ref().expect("keys");
        let made = crypto::rekey_ike_keys(cipher, &old_keys.sk_d, &shared, ni, &nr, spi_i, spi_r)
            .and_then(|keys| {
                self.successor(
                    now,
                    sa,
                    false,
                    (spi_i, spi_r),
                    cipher,
                    group,
                    (ni.to_vec(), nr.clone()),
                    keys,
                )
            });
        let Ok(mut new) = made else {
            return notify_chain(notify::NO_PROPOSAL_CHOSEN, &[]);
        };
        let mut c = ChainBuilder::new();
        let spi = spi_r.to_be_bytes();
        push_sa(
            &mut c,
            &[Proposal {
                num,
                protocol: protocol::IKE,
                spi: &spi,
                transforms: vec![
                    crypto::encr_transform(cipher),
                    Transform::new(transform::PRF, transform::PRF_HMAC_SHA2_256),
                    Transform::new(transform::DH, group.id()),
                ],
            }],
        );
        c.push(pt::NONCE, &nr);
        c.push_with(pt::KE, false, |b| {
            KeyExchange {
                group: group.id(),
                data: &public,
            }
            .emit(b)
        });
        if matches!(sa.creating, Some(Creating::Ike { .. })) {
            // §2.8.1: both ends rekey the IKE SA. Ours settles which new
            // one stays; until then this one waits on standby.
            new.silent = true;
            sa.ike_collision = Some(IkeCollision {
                made: new.id,
                ni: ni.to_vec(),
                nr,
            });
        } else {
            self.hand_over(now, sa, &mut new);
        }
        self.sas.insert(new.id, new);
        c
    }

    /// Our CHILD SA rekey request, from `sa.creating`.
    fn rekey_child_bytes(&mut self, sa: &mut IkeSa) -> Option<Vec<u8>> {
        let Some(Creating::Child {
            old,
            spi_in,
            ni,
            share,
            ..
        }) = &sa.creating
        else {
            return None;
        };
        let child = sa.children.iter().find(|c| c.spi_in == *old)?;
        let spi = spi_in.to_be_bytes();
        let old_spi = old.to_be_bytes();
        let mut proposal = esp_proposal(&self.config, &spi);
        let ke = share.as_ref().map(|k| (k.group(), k.public()));
        if let Some((g, _)) = ke {
            // PFS (§1.3.1): the KE group first, then the others we accept.
            proposal
                .transforms
                .push(Transform::new(transform::DH, g.id()));
            for o in self.config.dh_groups.iter().filter(|o| **o != g) {
                proposal
                    .transforms
                    .push(Transform::new(transform::DH, o.id()));
            }
        }
        let mut c = ChainBuilder::new();
        c.push_with(pt::NOTIFY, false, |b| {
            Notify {
                protocol: protocol::ESP,
                spi: &old_spi,
                kind: notify::REKEY_SA,
                data: &[],
            }
            .emit(b)
        });
        push_sa(&mut c, &[proposal]);
        c.push(pt::NONCE, ni);
        if let Some((g, public)) = ke {
            c.push_with(pt::KE, false, |b| {
                KeyExchange {
                    group: g.id(),
                    data: public,
                }
                .emit(b)
            });
        }
        push_ts(&mut c, pt::TSI, &child.ts_local);
        push_ts(&mut c, pt::TSR, &child.ts_remote);
        let header = sa.header(ExchangeType::CreateChildSa, false, sa.next_request_id);
        Some(sa.encrypt(header, c))
    }

    /// Our IKE SA rekey request, from `sa.creating`.
    fn rekey_ike_bytes(&mut self, sa: &mut IkeSa) -> Option<Vec<u8>> {
        let Some(Creating::Ike { spi, ni, share, .. }) = &sa.creating else {
            return None;
        };
        let share = share.as_ref()?;
        let mut transforms: Vec<Transform> = self
            .config
            .ike_ciphers
            .iter()
            .map(|&c| crypto::encr_transform(c))
            .collect();
        transforms.push(Transform::new(transform::PRF, transform::PRF_HMAC_SHA2_256));
        transforms.push(Transform::new(transform::DH, share.group().id()));
        for g in self
            .config
            .dh_groups
            .iter()
            .filter(|g| **g != share.group())
        {
            transforms.push(Transform::new(transform::DH, g.id()));
        }
        let spi = spi.to_be_bytes();
        let mut c = ChainBuilder::new();
        push_sa(
            &mut c,
            &[Proposal {
                num: 1,
                protocol: protocol::IKE,
                spi: &spi,
                transforms,
            }],
        );
        c.push(pt::NONCE, ni);
        c.push_with(pt::KE, false, |b| {
            KeyExchange {
                group: share.group().id(),
                data: share.public(),
            }
            .emit(b)
        });
        let header = sa.header(ExchangeType::CreateChildSa, false, sa.next_request_id);
        Some(sa.encrypt(header, c))
    }

    /// The group an INVALID_KE_PAYLOAD answer names, if we take it and it
    /// is not the one we sent.
    fn named_group(&self, p: &Payloads<'_>, sent: Option<DhGroup>) -> Option<DhGroup> {
        let n = p.notify(notify::INVALID_KE_PAYLOAD)?;
        <[u8; 2]>::try_from(n.data)
            .ok()
            .map(u16::from_be_bytes)
            .and_then(DhGroup::from_id)
            .filter(|g| self.config.dh_groups.contains(g) && Some(*g) != sent)
    }

    /// The answer to our CHILD SA rekey.
    fn child_rekey_response(&mut self, now: Duration, sa: &mut IkeSa, p: &Payloads<'_>) {
        let Some(Creating::Child {
            old,
            spi_in,
            ni,
            share,
            retried,
        }) = sa.creating.take()
        else {
            return;
        };
        let sent = share.as_ref().map(KeyShare::group);
        if let (false, Some(_), Some(g)) = (retried, sent, self.named_group(p, sent)) {
            // §1.3: once more, with the group the responder wants.
            if let Ok(k) = KeyShare::generate(g, &self.rng) {
                sa.creating = Some(Creating::Child {
                    old,
                    spi_in,
                    ni: self.nonce(),
                    share: Some(k),
                    retried: true,
                });
                if let Some(bytes) = self.rekey_child_bytes(sa) {
                    self.start_request(now, sa, RequestKind::RekeyChild(old), bytes);
                    return;
                }
                sa.creating = None;
            }
        }
        let collision = sa
            .child_collisions
            .iter()
            .position(|c| c.old == old)
            .map(|i| sa.child_collisions.remove(i));
        match self.accept_child_rekey(sa, p, share, &ni, spi_in) {
            Err(n) => {
                self.spis_in.remove(&spi_in);
                if collision.is_none() {
                    let retry = self.retry_rekey(now, self.config.child_rekey_after);
                    if let Some(c) = sa
                        .children
                        .iter_mut()
                        .find(|c| c.spi_in == old && !c.replaced)
                    {
                        c.rekey_at = retry;
                    }
                }
                // TEMPORARY_FAILURE is a collision (§2.25): not news.
                if n != notify::TEMPORARY_FAILURE {
                    self.event(Event::ChildSaRefused {
                        ike_sa: sa.id,
                        notify: n,
                    });
                }
            }
            Ok((child, nr)) => {
                self.add_child(now, sa, child);
                let redundant = match collision {
                    // §2.8.1: the new CHILD SA made with the lowest nonce
                    // goes, deleted by the side that made it; the other
                    // side deletes the old one.
                    Some(c) if holds_lowest_nonce([&ni, &nr], [&c.ni, &c.nr]) => spi_in,
                    _ => old,
                };
                if let Some(o) = sa.children.iter_mut().find(|c| c.spi_in == old) {
                    o.replaced = true;
                    o.rekey_at = None;
                }
                self.enqueue(now, sa, RequestKind::DeleteChild(redundant));
            }
        }
    }

    /// Checks the answer to our CHILD SA rekey: the new CHILD SA and Nr.
    fn accept_child_rekey(
        &self,
        sa: &IkeSa,
        p: &Payloads<'_>,
        share: Option<KeyShare>,
        ni: &[u8],
        spi_in: u32,
    ) -> Result<(NewChild, Vec<u8>), u16> {
        if let Some(e) = p.first_error() {
            return Err(e);
        }
        let (Some(body), Some(nr), Some(tsi), Some(tsr)) = (p.sa, p.nonce, &p.tsi, &p.tsr) else {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        };
        let props = payload::parse_sa(body).map_err(|_| notify::INVALID_SYNTAX)?;
        let [prop] = &props[..] else {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        };
        let want = share.as_ref().map(|k| k.group().id());
        if p.ke.map(|k| k.group) != want {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        }
        let choice = choose_esp(&self.config, &props, want).map_err(|(n, _)| n)?;
        if choice.group.map(DhGroup::id) != want
            || prop.of_type(transform::ENCR).count() != 1
            || prop.of_type(transform::ESN).count() > 1
            || prop.of_type(transform::DH).count() > 1
        {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        }
        let within = |got: &[TrafficSelector], asked: &[TrafficSelector]| {
            !got.is_empty() && got.iter().all(|g| asked.iter().any(|a| a.contains(g)))
        };
        if !within(tsi, &self.config.local_ts) || !within(tsr, &sa.remote_ts_allowed) {
            return Err(notify::TS_UNACCEPTABLE);
        }
        let shared = match (share, p.ke) {
            (Some(k), Some(ke)) => Some(k.agree(ke.data).map_err(|_| notify::INVALID_SYNTAX)?),
            _ => None,
        };
        let keys = sa.keys.as_ref().expect("keys");
        let (i2r, r2i) = crypto::child_keys(&keys.sk_d, choice.cipher, shared.as_deref(), ni, nr)
            .map_err(|_| notify::NO_PROPOSAL_CHOSEN)?;
        Ok((
            NewChild {
                initiator: true,
                spi_in,
                spi_out: choice.peer_spi,
                keys_in: r2i,
                keys_out: i2r,
                cipher: choice.cipher,
                esn: choice.esn,
                ts_local: tsi.clone(),
                ts_remote: tsr.clone(),
            },
            nr.to_vec(),
        ))
    }

    /// The answer to our IKE SA rekey, on the old SA.
    fn ike_rekey_response(&mut self, now: Duration, sa: &mut IkeSa, p: &Payloads<'_>) {
        let Some(Creating::Ike {
            spi,
            ni,
            share,
            retried,
        }) = sa.creating.take()
        else {
            return;
        };
        let sent = share.as_ref().map(KeyShare::group);
        if let (false, Some(g)) = (retried, self.named_group(p, sent)) {
            if let Ok(k) = KeyShare::generate(g, &self.rng) {
                sa.creating = Some(Creating::Ike {
                    spi,
                    ni: self.nonce(),
                    share: Some(k),
                    retried: true,
                });
                if let Some(bytes) = self.rekey_ike_bytes(sa) {
                    self.start_request(now, sa, RequestKind::RekeyIke, bytes);
                    return;
                }
                sa.creating = None;
            }
        }
        let collision = sa.ike_collision.take();
        let standby = collision.as_ref().and_then(|c| self.sas.remove(&c.made));
        match (self.accept_ike_rekey(now, sa, p, spi, &ni, share), standby) {
            (Err(_), Some(mut standby)) => {
                // Ours failed; the peer's rekey stands.
                self.hand_over(now, sa, &mut standby);
                self.sas.insert(standby.id, standby);
            }
            (Err(_), None) => {
                sa.rekey_at = self.retry_rekey(now, self.config.ike_rekey_after);
            }
            (Ok(mut new), Some(mut standby)) => {
                let c = collision.expect("standby comes from a collision");
                if holds_lowest_nonce([&ni, &new.nr], [&c.ni, &c.nr]) {
                    // §2.8.1: ours is redundant and ours to delete; the
                    // peer's survives and the peer deletes the old one.
                    self.hand_over(now, sa, &mut standby);
                    new.silent = true;
                    new.expires = Some(now + self.retire_span());
                    self.enqueue(now, &mut new, RequestKind::DeleteIke);
                } else {
                    // Ours survives; the peer deletes its redundant one.
                    standby.expires = Some(now + self.retire_span());
                    self.hand_over(now, sa, &mut new);
                    self.enqueue(now, sa, RequestKind::DeleteIke);
                }
                self.sas.insert(standby.id, standby);
                self.sas.insert(new.id, new);
            }
            (Ok(mut new), None) => {
                self.hand_over(now, sa, &mut new);
                // §1.3.2: the rekey initiator deletes the old IKE SA.
                self.enqueue(now, sa, RequestKind::DeleteIke);
                self.sas.insert(new.id, new);
            }
        }
        self.run_kicks(now);
    }

    /// Checks the answer to our IKE SA rekey and makes the new IKE SA.
    fn accept_ike_rekey(
        &self,
        now: Duration,
        old: &IkeSa,
        p: &Payloads<'_>,
        spi_i: u64,
        ni: &[u8],
        share: Option<KeyShare>,
    ) -> Result<IkeSa, u16> {
        if let Some(e) = p.first_error() {
            return Err(e);
        }
        let (Some(body), Some(ke), Some(nr), Some(share)) = (p.sa, p.ke, p.nonce, share) else {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        };
        let props = payload::parse_sa(body).map_err(|_| notify::INVALID_SYNTAX)?;
        let [prop] = &props[..] else {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        };
        let encr: Vec<&Transform> = prop.of_type(transform::ENCR).collect();
        let prf: Vec<&Transform> = prop.of_type(transform::PRF).collect();
        let dh: Vec<&Transform> = prop.of_type(transform::DH).collect();
        let group = share.group();
        let cipher = match encr[..] {
            [t] => crypto::cipher_of(t).filter(|c| self.config.ike_ciphers.contains(c)),
            _ => None,
        }
        .ok_or(notify::NO_PROPOSAL_CHOSEN)?;
        if prop.protocol != protocol::IKE
            || prop.spi.len() != 8
            || !matches!(prf[..], [t] if t.id == transform::PRF_HMAC_SHA2_256)
            || !matches!(dh[..], [t] if t.id == group.id())
            || !no_integrity(prop)
            || ke.group != group.id()
        {
            return Err(notify::NO_PROPOSAL_CHOSEN);
        }
        let spi_r = prop.spi.iter().fold(0u64, |a, &b| a << 8 | u64::from(b));
        if spi_r == 0 {
            return Err(notify::INVALID_SYNTAX);
        }
        let shared = share.agree(ke.data).map_err(|_| notify::INVALID_SYNTAX)?;
        let old_keys = old.keys.as_ref().expect("keys");
        let keys = crypto::rekey_ike_keys(cipher, &old_keys.sk_d, &shared, ni, nr, spi_i, spi_r)
            .map_err(|_| notify::NO_PROPOSAL_CHOSEN)?;
        self.successor(
            now,
            old,
            true,
            (spi_i, spi_r),
            cipher,
            group,
            (ni.to_vec(), nr.to_vec()),
            keys,
        )
        .map_err(|_| notify::NO_PROPOSAL_CHOSEN)
    }

    /// Rekeys the CHILD SAs of `id` (§1.3.3): a CREATE_CHILD_SA with
    /// REKEY_SA for each, PFS if [`Config::child_pfs`]. Events as in the
    /// module documentation.
    pub fn rekey_child(&mut self, now: Duration, id: IkeSaId) -> Result<Vec<Output>, Error> {
        self.with_established(now, id, |_, sa| {
            sa.children
                .iter()
                .filter(|c| !c.replaced)
                .map(|c| RequestKind::RekeyChild(c.spi_in))
                .collect()
        })
    }

    /// Announces `prefixes` to the peer of `id` as our whole route set,
    /// replacing the one before ([`crate::routes`]: INFORMATIONAL
    /// exchanges, one per chunk, in turn with other requests). A set not
    /// yet fully sent is dropped for this one. Only for peers that take
    /// them ([`Event::IkeSaEstablished`] `peer_routes`); others would
    /// ignore it.
    pub fn send_routes(
        &mut self,
        now: Duration,
        id: IkeSaId,
        prefixes: &[TrafficSelector],
    ) -> Result<Vec<Output>, Error> {
        self.with_established(now, id, |_, sa| {
            sa.routes.generation = sa.routes.generation.wrapping_add(1);
            sa.routes.out = routes::encode(sa.routes.generation, prefixes).into();
            vec![RequestKind::Routes]
        })
    }

    /// Rekeys the IKE SA `id` (§1.3.2), ending in [`Event::IkeSaRekeyed`].
    pub fn rekey_ike(&mut self, now: Duration, id: IkeSaId) -> Result<Vec<Output>, Error> {
        self.with_established(now, id, |_, _| vec![RequestKind::RekeyIke])
    }

    // ---------------------------------------------------------------
    // Time
    // ---------------------------------------------------------------

    /// Retransmits due requests (exponential backoff, §2.4), expires
    /// half-open SAs and starts due liveness checks.
    pub fn poll(&mut self, now: Duration) -> Vec<Output> {
        let ids: Vec<IkeSaId> = self.sas.keys().copied().collect();
        for id in ids {
            let Some(mut sa) = self.sas.remove(&id) else {
                continue;
            };
            if sa.state == State::HalfOpen && now >= sa.created + self.config.half_open_timeout {
                self.close_now(sa, CloseReason::HalfOpenExpired);
                continue;
            }
            if sa.expires.is_some_and(|t| now >= t) {
                // A rekeyed-away SA whose Delete never came: silently.
                self.close_now(sa, CloseReason::Timeout);
                continue;
            }
            if let Some(p) = sa.pending.as_mut() {
                if now >= p.next_at {
                    if p.sent >= self.config.retransmit_tries {
                        self.close_now(sa, CloseReason::Timeout);
                        continue;
                    }
                    let backoff = self
                        .config
                        .retransmit_timeout
                        .saturating_mul(1 << p.sent.min(16))
                        .min(MAX_RETRANSMIT_INTERVAL);
                    p.sent += 1;
                    p.next_at = now + backoff;
                    let bytes = p.bytes.clone();
                    self.send(sa.local, sa.remote, &bytes);
                }
            } else if let Some(dpd) = self.config.dpd_interval {
                if sa.state == State::Established && !sa.silent && now >= sa.last_heard + dpd {
                    self.liveness_checks += 1;
                    self.enqueue(now, &mut sa, RequestKind::Liveness);
                }
            }
            if sa.state == State::Established && !sa.silent {
                if sa.rekey_at.is_some_and(|t| now >= t) {
                    sa.rekey_at = None;
                    self.enqueue(now, &mut sa, RequestKind::RekeyIke);
                }
                let mut due = Vec::new();
                for c in sa.children.iter_mut().filter(|c| !c.replaced) {
                    if c.rekey_at.is_some_and(|t| now >= t) {
                        c.rekey_at = None;
                        due.push(c.spi_in);
                    }
                }
                for spi in due {
                    self.enqueue(now, &mut sa, RequestKind::RekeyChild(spi));
                }
            }
            self.sas.insert(id, sa);
        }
        self.take()
    }

    /// When [`Ike::poll`] should next be called, if anything is scheduled.
    pub fn wake_at(&self) -> Option<Duration> {
        self.sas
            .values()
            .filter_map(|sa| {
                let mut t: Option<Duration> = sa.pending.as_ref().map(|p| p.next_at);
                let mut at = |x: Duration| t = Some(t.map_or(x, |y| y.min(x)));
                if sa.state == State::HalfOpen {
                    at(sa.created + self.config.half_open_timeout);
                }
                if let Some(x) = sa.expires {
                    at(x);
                }
                if sa.state == State::Established && !sa.silent {
                    if let (None, Some(dpd)) = (&sa.pending, self.config.dpd_interval) {
                        at(sa.last_heard + dpd);
                    }
                    if let Some(x) = sa.rekey_at {
                        at(x);
                    }
                    for c in sa.children.iter().filter(|c| !c.replaced) {
                        if let Some(x) = c.rekey_at {
                            at(x);
                        }
                    }
                }
                t
            })
            .min()
    }
}
