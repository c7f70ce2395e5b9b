//! The IKEv2 state machine for both roles (RFC 7296 §1.2, §1.4, §2).
//!
//! [`Ike`] owns every IKE SA of one endpoint. It is fed datagrams and the
//! time and answers with [`Output`]s: datagrams to send and [`Event`]s for
//! the dataplane (CHILD SAs to install or retire). It never reads a clock
//! or touches a socket; [`Ike::wake_at`] says when [`Ike::poll`] is due
//! for retransmissions, half-open expiry and liveness checks.

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
        /// Our address for this SA (port 4500 after NAT detection).
        local: SocketAddr,
        /// The peer's address.
        remote: SocketAddr,
        /// A NAT was detected between the two ends (§2.23): ESP is to be
        /// UDP-encapsulated (RFC 3948).
        nat_detected: bool,
    },
    /// A CHILD SA is negotiated: install `spi_in` inbound before switching
    /// outbound traffic to `spi_out`.
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
    },
    /// The CHILD SA requested with the IKE SA was refused (the IKE SA
    /// stays up, §1.2); the notification type says why.
    ChildSaRefused {
        /// The IKE SA.
        ike_sa: IkeSaId,
        /// Error notification, e.g. TS_UNACCEPTABLE.
        notify: u16,
    },
    /// A CHILD SA is gone: remove both directions.
    ChildSaDeleted {
        /// The IKE SA it belonged to.
        ike_sa: IkeSaId,
        /// Our inbound SPI.
        spi_in: u32,
        /// Outbound SPI.
        spi_out: u32,
    },
    /// The IKE SA is gone (its CHILD SAs were reported deleted first).
    IkeSaClosed {
        /// Which SA.
        ike_sa: IkeSaId,
        /// Why.
        reason: CloseReason,
    },
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
}

fn choose_esp(config: &Config, proposals: &[Proposal<'_>]) -> Option<EspChoice> {
    proposals.iter().find_map(|p| {
        if p.protocol != protocol::ESP || p.spi.len() != 4 || !no_integrity(p) {
            return None;
        }
        // A DH transform here would ask for PFS, which the CHILD SA of
        // IKE_AUTH cannot have (§1.2); only NONE is accepted.
        if p.of_type(transform::DH).any(|t| t.id != 0) {
            return None;
        }
        let cipher = p
            .of_type(transform::ENCR)
            .filter_map(crypto::cipher_of)
            .find(|c| config.esp_ciphers.contains(c))?;
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
                return None;
            }
            false
        } else {
            *offered.iter().find(|e| config.esn.contains(e))?
        };
        let peer_spi = u32::from_be_bytes([p.spi[0], p.spi[1], p.spi[2], p.spi[3]]);
        Some(EspChoice {
            num: p.num,
            peer_spi,
            cipher,
            esn,
        })
    })
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
        self.event(Event::IkeSaEstablished {
            ike_sa: sa.id,
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            initiator: true,
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
        let choice = choose_esp(&self.config, &props).ok_or(notify::NO_PROPOSAL_CHOSEN)?;
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
        let Some((num, cipher, group)) = self.choose_ike(&props, ke.group) else {
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

    /// Picks (proposal number, cipher, group) from an IKE SA payload.
    /// The group of the initiator's KE wins if we accept it, else our most
    /// preferred group among those offered.
    fn choose_ike(
        &self,
        props: &[Proposal<'_>],
        ke_group: u16,
    ) -> Option<(u8, CipherSuite, DhGroup)> {
        props.iter().find_map(|p| {
            if p.protocol != protocol::IKE || !p.spi.is_empty() || !no_integrity(p) {
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
            Some((p.num, cipher, group))
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
        self.half_open -= 1;
        self.event(Event::IkeSaEstablished {
            ike_sa: sa.id,
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            initiator: false,
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
            let choice = choose_esp(&self.config, &props).ok_or(notify::NO_PROPOSAL_CHOSEN)?;
            // §2.9: narrow TSi to what the registry allows the peer, TSr
            // to our own side.
            let ts_i = narrow(tsi, &entry.remote_ts);
            let ts_r = narrow(tsr, &self.config.local_ts);
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
                        let mut transforms = vec![crypto::encr_transform(choice.cipher)];
                        transforms.push(Transform::new(
                            transform::ESN,
                            if choice.esn {
                                transform::ESN_YES
                            } else {
                                transform::ESN_NO
                            },
                        ));
                        push_sa(
                            &mut c,
                            &[Proposal {
                                num: choice.num,
                                protocol: protocol::ESP,
                                spi: &spi,
                                transforms,
                            }],
                        );
                        push_ts(&mut c, pt::TSI, &ts_i);
                        push_ts(&mut c, pt::TSR, &ts_r);
                        sa.children.push(ChildSa {
                            spi_in,
                            spi_out: choice.peer_spi,
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
                        self.informational(&mut sa, &p)
                    }
                    (State::Established, ExchangeType::CreateChildSa) => {
                        // Rekeying is not implemented yet: §1.3 lets a
                        // responder refuse further SAs.
                        (notify_chain(notify::NO_ADDITIONAL_SAS, &[]), None)
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
    }

    /// INFORMATIONAL requests (§1.4): Delete payloads, notifications, or
    /// nothing (a liveness check).
    fn informational(
        &mut self,
        sa: &mut IkeSa,
        p: &Payloads<'_>,
    ) -> (ChainBuilder, Option<CloseReason>) {
        if p.deletes.iter().any(|d| d.protocol == protocol::IKE) {
            return (ChainBuilder::new(), Some(CloseReason::DeletedByPeer));
        }
        if p.notify(notify::AUTHENTICATION_FAILED).is_some() {
            return (ChainBuilder::new(), Some(CloseReason::AuthenticationFailed));
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

    /// Ends the SA: its CHILD SAs are reported deleted, then the SA.
    fn close_now(&mut self, mut sa: IkeSa, reason: CloseReason) {
        for spi_in in sa.children.iter().map(|c| c.spi_in).collect::<Vec<_>>() {
            self.remove_child(&mut sa, spi_in);
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
        self.event(Event::IkeSaClosed {
            ike_sa: sa.id,
            reason,
        });
    }

    fn fail(&mut self, sa: IkeSa, reason: CloseReason) {
        self.close_now(sa, reason);
    }

    // ---------------------------------------------------------------
    // Requests we start on an established SA
    // ---------------------------------------------------------------

    fn request_bytes(&mut self, sa: &mut IkeSa, kind: RequestKind) -> Vec<u8> {
        let mut c = ChainBuilder::new();
        match kind {
            RequestKind::DeleteChild(spi_in) => {
                c.push_with(pt::DELETE, false, |b| Delete::emit_esp(b, &[spi_in]));
            }
            RequestKind::DeleteIke => c.push_with(pt::DELETE, false, Delete::emit_ike),
            _ => {}
        }
        let header = sa.header(ExchangeType::Informational, false, sa.next_request_id);
        sa.encrypt(header, c)
    }

    fn enqueue(&mut self, now: Duration, sa: &mut IkeSa, kind: RequestKind) {
        // Window size 1 (§2.3): one request in flight, the rest wait.
        if sa.pending.is_some() {
            if !sa.queued.contains(&kind) {
                sa.queued.push_back(kind);
            }
            return;
        }
        let bytes = self.request_bytes(sa, kind);
        self.start_request(now, sa, kind, bytes);
    }

    fn next_queued(&mut self, now: Duration, sa: &mut IkeSa) {
        if let Some(kind) = sa.queued.pop_front() {
            self.enqueue(now, sa, kind);
        }
    }

    fn established(&mut self, id: IkeSaId) -> Result<IkeSa, Error> {
        match self.sas.get(&id) {
            None => Err(Error::UnknownSa(id.0)),
            Some(sa) if sa.state != State::Established => Err(Error::NotEstablished(id.0)),
            Some(_) => Ok(self.sas.remove(&id).expect("present")),
        }
    }

    /// Sends a liveness check (an empty INFORMATIONAL request, §1.4);
    /// no answer through every retransmission closes the SA.
    pub fn check_liveness(&mut self, now: Duration, id: IkeSaId) -> Result<Vec<Output>, Error> {
        let mut sa = self.established(id)?;
        self.enqueue(now, &mut sa, RequestKind::Liveness);
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
        let mut sa = self.established(id)?;
        if sa.children.iter().any(|c| c.spi_in == spi_in) {
            self.enqueue(now, &mut sa, RequestKind::DeleteChild(spi_in));
        }
        self.sas.insert(id, sa);
        Ok(self.take())
    }

    /// Deletes the IKE SA and its CHILD SAs (§1.4.1).
    pub fn close(&mut self, now: Duration, id: IkeSaId) -> Result<Vec<Output>, Error> {
        let mut sa = self.established(id)?;
        self.enqueue(now, &mut sa, RequestKind::DeleteIke);
        self.sas.insert(id, sa);
        Ok(self.take())
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
                if sa.state == State::Established && now >= sa.last_heard + dpd {
                    self.enqueue(now, &mut sa, RequestKind::Liveness);
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
                if sa.state == State::HalfOpen {
                    let exp = sa.created + self.config.half_open_timeout;
                    t = Some(t.map_or(exp, |x| x.min(exp)));
                }
                if let (None, Some(dpd), State::Established) =
                    (&sa.pending, self.config.dpd_interval, sa.state)
                {
                    t = Some(sa.last_heard + dpd);
                }
                t
            })
            .min()
    }
}
