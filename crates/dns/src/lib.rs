//! Split DNS for a site, sans-I/O: the runtime hands it client queries and
//! upstream answers as bytes with the time, and carries out what it says
//! (answer a client, send a query upstream over UDP or TCP).
//!
//! - **Private zones** ([`zone`]) are answered authoritatively (AA), with
//!   RFC 4592 wildcards, NXDOMAIN and NODATA carrying a synthesised SOA
//!   so resolvers cache them for the zone's negative TTL (RFC 2308 §3).
//! - Everything else is **forwarded**: to the upstreams of the longest
//!   configured suffix the name is at or below (conditional forwarding),
//!   else to the default ones, each query under a fresh random ID (RFC
//!   5452 §4; the runtime sends each from a fresh random port), checked
//!   against the question when the answer comes back; a timeout moves to
//!   the next upstream; a truncated answer is asked again over TCP (RFC
//!   7766 §5); EDNS0 (RFC 6891) towards upstreams with a 1232-byte
//!   payload, echoed to clients that use it.
//! - Answers are **cached** for their TTL ([`cache`]).
//! - Names on the **accelerate** list have the addresses of their answers
//!   (through CNAME chains) reported with the reply, so the runtime can
//!   route them into the tunnel before the client sees the answer; their
//!   HTTPS/SVCB queries are answered NODATA so clients keep a visible SNI.
//! - A malformed query is answered FORMERR when its header can be read,
//!   dropped otherwise, and counted.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod zone;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use simple_dns::rdata::{RData, A, AAAA, CNAME, OPT, SOA, TXT};
use simple_dns::{
    Packet, PacketFlag, Question, ResourceRecord, CLASS, OPCODE, QCLASS, QTYPE, RCODE, TYPE,
};
use strait_names::{Name, NameSet};

pub use cache::Cache;
pub use zone::{Record, RecordData, Zone, ZoneAnswer, Zones};

/// The EDNS0 payload size we offer and accept (the 2020 DNS flag day's
/// value: no IP fragmentation on common paths).
pub const EDNS_PAYLOAD: u16 = 1232;
/// A UDP answer to a client without EDNS0 (RFC 1035 §4.2.1).
pub const CLASSIC_PAYLOAD: usize = 512;
/// A DNS message over TCP (RFC 1035 §4.2.2: two-byte length).
pub const MAX_TCP_MESSAGE: usize = 65_535;
/// The HTTPS and SVCB types (RFC 9460).
const HTTPS: u16 = 65;
const SVCB: u16 = 64;

/// How a resolver is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Private zones, answered here.
    pub zones: Zones,
    /// Conditional forwarding: a suffix (matched as the name and its
    /// descendants) → its upstreams, in order of preference.
    pub forward: NameSet<Vec<SocketAddr>>,
    /// Upstreams for every other name.
    pub upstreams: Vec<SocketAddr>,
    /// Names whose answers' addresses are reported for routing.
    pub accelerate: NameSet<()>,
    /// Cached answers at most.
    pub cache_entries: usize,
    /// Queries waiting for an upstream at most; more are answered
    /// SERVFAIL.
    pub max_pending: usize,
    /// How long one upstream has to answer before the next is asked.
    pub timeout: Duration,
}

impl Settings {
    /// The upstreams for `name`: the longest configured suffix's, else
    /// the default ones.
    pub fn upstreams_for(&self, name: Option<&Name>) -> &[SocketAddr] {
        name.and_then(|n| self.forward.get(n))
            .map_or(&self.upstreams[..], |m| &m.value[..])
    }
}

/// An address an answer gave for an accelerated name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accelerated {
    /// The accelerated name the client asked for (or met in the chain).
    pub name: String,
    /// The address.
    pub address: IpAddr,
    /// The record's TTL, seconds.
    pub ttl: u32,
}

/// What the runtime does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<C> {
    /// Send `bytes` to the client; first route `accelerated` into the
    /// tunnel.
    Reply {
        /// The runtime's handle of the client.
        client: C,
        /// The DNS message (without TCP length prefix).
        bytes: Vec<u8>,
        /// Addresses to route.
        accelerated: Vec<Accelerated>,
    },
    /// Send a query upstream; its answer comes back through
    /// [`Resolver::upstream_answer`] with `id`.
    Query {
        /// The query's ID.
        id: u16,
        /// Where to.
        upstream: SocketAddr,
        /// Over TCP (after a truncated UDP answer).
        tcp: bool,
        /// The DNS message.
        bytes: Vec<u8>,
    },
}

/// Counters (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Client queries read.
    pub queries: u64,
    /// Answered from a private zone.
    pub zone_answers: u64,
    /// Answered from the cache.
    pub cache_hits: u64,
    /// Sent upstream.
    pub forwarded: u64,
    /// Malformed queries (FORMERR or dropped).
    pub malformed: u64,
    /// Answers that matched no waiting query (late, duplicate, spoofed).
    pub unexpected_answers: u64,
    /// Truncated upstream answers asked again over TCP.
    pub tcp_retries: u64,
    /// Upstream attempts that timed out.
    pub timeouts: u64,
    /// Clients answered SERVFAIL (every upstream failed, or too many
    /// waiting).
    pub servfail: u64,
    /// HTTPS/SVCB queries for accelerated names answered NODATA.
    pub svcb_refused: u64,
    /// Answers that carried accelerated addresses.
    pub accelerated_answers: u64,
}

/// One upstream's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamHealth {
    /// Queries sent.
    pub sent: u64,
    /// Answers received.
    pub answered: u64,
    /// Timeouts.
    pub timeouts: u64,
    /// The last answer's round trip.
    pub last_rtt: Option<Duration>,
    /// Timeouts since the last answer.
    pub failing: u32,
}

#[derive(Debug)]
struct Pending<C> {
    client: C,
    client_id: u16,
    client_rd: bool,
    /// The client's question as asked (name as text, type, class).
    qname: String,
    qtype: u16,
    qclass: u16,
    /// The name asked upstream (the client's, or where a private CNAME
    /// chain left the zones) and the records of that chain.
    asked: String,
    prefix: Vec<(Name, u32, RecordData)>,
    client_edns: bool,
    client_max: usize,
    upstreams: Vec<SocketAddr>,
    attempt: usize,
    tcp: bool,
    sent: Instant,
    deadline: Instant,
    query: Vec<u8>,
}

/// The resolver: settings, cache, waiting queries, counters.
#[derive(Debug)]
pub struct Resolver<C> {
    settings: Settings,
    cache: Cache,
    pending: HashMap<u16, Pending<C>>,
    stats: Stats,
    health: HashMap<SocketAddr, UpstreamHealth>,
}

/// Where a client query came in: UDP with the payload it can take, or TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP: no size limit but the message's.
    Tcp,
}

impl<C: Clone> Resolver<C> {
    /// A resolver with `settings` and an empty cache.
    pub fn new(settings: Settings) -> Resolver<C> {
        let cache = Cache::new(settings.cache_entries);
        Resolver {
            settings,
            cache,
            pending: HashMap::new(),
            stats: Stats::default(),
            health: HashMap::new(),
        }
    }

    /// Replaces the settings (a reload); the cache is emptied since zones
    /// and forwarding may have changed, waiting queries finish.
    pub fn set_settings(&mut self, settings: Settings) {
        self.cache = Cache::new(settings.cache_entries);
        self.settings = settings;
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Cached answers.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Queries waiting for an upstream.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether query `id` still waits for an upstream.
    pub fn is_pending(&self, id: u16) -> bool {
        self.pending.contains_key(&id)
    }

    /// Each upstream's record.
    pub fn health(&self) -> Vec<(SocketAddr, UpstreamHealth)> {
        let mut v: Vec<_> = self.health.iter().map(|(a, h)| (*a, *h)).collect();
        v.sort_by_key(|(a, _)| *a);
        v
    }

    /// The earliest upstream deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// A client's query. `random_id` draws query IDs (from a CSPRNG).
    pub fn query(
        &mut self,
        client: C,
        bytes: &[u8],
        transport: Transport,
        now: Instant,
        random_id: &mut dyn FnMut() -> u16,
    ) -> Option<Action<C>> {
        self.stats.queries += 1;
        let packet = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(_) => {
                self.stats.malformed += 1;
                return formerr(bytes).map(|bytes| Action::Reply {
                    client,
                    bytes,
                    accelerated: Vec::new(),
                });
            }
        };
        if packet.has_flags(PacketFlag::RESPONSE) {
            // Never answer an answer (reflection loops).
            self.stats.malformed += 1;
            return None;
        }
        let reply = |bytes| Action::Reply {
            client: client.clone(),
            bytes,
            accelerated: Vec::new(),
        };
        if packet.opcode() != OPCODE::StandardQuery {
            return status_reply(&packet, RCODE::NotImplemented).map(reply);
        }
        let [question] = &packet.questions[..] else {
            self.stats.malformed += 1;
            return status_reply(&packet, RCODE::FormatError).map(reply);
        };
        let client_edns = packet.opt().is_some();
        let client_max = match transport {
            Transport::Tcp => MAX_TCP_MESSAGE,
            Transport::Udp => packet.opt().map_or(CLASSIC_PAYLOAD, |o| {
                usize::from(o.udp_packet_size).clamp(CLASSIC_PAYLOAD, usize::from(EDNS_PAYLOAD))
            }),
        };
        let qname_text = question.qname.to_string().to_ascii_lowercase();
        let qname: Option<Name> = qname_text.parse().ok();
        let qtype = u16::from(question.qtype);
        let qclass = qclass_code(question.qclass);
        let rd = packet.has_flags(PacketFlag::RECURSION_DESIRED);

        let accelerated_name = qname
            .as_ref()
            .is_some_and(|n| self.settings.accelerate.contains(n));
        if accelerated_name && (qtype == HTTPS || qtype == SVCB) {
            self.stats.svcb_refused += 1;
            return build_reply(&packet, RCODE::NoError, false, &[], None, client_max).map(reply);
        }

        let mut prefix = Vec::new();
        let mut asked = qname_text.clone();
        if let Some(name) = &qname {
            if let Some(zone) = self.settings.zones.zone_of(name) {
                self.stats.zone_answers += 1;
                let apex = zone.apex().clone();
                let negative_ttl = zone.negative_ttl();
                match self.settings.zones.answer(name, qtype) {
                    ZoneAnswer::Records {
                        records,
                        follow: None,
                    } => {
                        let accelerated = self.accelerated_in(name, &records);
                        return build_reply(
                            &packet,
                            RCODE::NoError,
                            true,
                            &records,
                            None,
                            client_max,
                        )
                        .map(|bytes| Action::Reply {
                            client,
                            bytes,
                            accelerated,
                        });
                    }
                    ZoneAnswer::Records {
                        records,
                        follow: Some(target),
                    } => {
                        self.stats.zone_answers -= 1;
                        asked = target.as_str().to_owned();
                        prefix = records;
                    }
                    ZoneAnswer::NoData => {
                        let soa = (apex, negative_ttl);
                        return build_reply(
                            &packet,
                            RCODE::NoError,
                            true,
                            &[],
                            Some(soa),
                            client_max,
                        )
                        .map(reply);
                    }
                    ZoneAnswer::NxDomain => {
                        let soa = (apex, negative_ttl);
                        return build_reply(
                            &packet,
                            RCODE::NameError,
                            true,
                            &[],
                            Some(soa),
                            client_max,
                        )
                        .map(reply);
                    }
                }
            }
        }

        let key = (asked.clone(), qtype, qclass);
        // The client's side of the exchange; upstream, deadline and query
        // are filled in when it is forwarded.
        let mut p = Pending {
            client: client.clone(),
            client_id: packet.id(),
            client_rd: rd,
            qname: question.qname.to_string(),
            qtype,
            qclass,
            asked,
            prefix,
            client_edns,
            client_max,
            upstreams: Vec::new(),
            attempt: 0,
            tcp: false,
            sent: now,
            deadline: now,
            query: Vec::new(),
        };
        if let Some((cached, age)) = self.cache.get(&key, now) {
            if let Ok(mut answer) = Packet::parse(&cached) {
                cache::age_records(&mut answer, age);
                self.stats.cache_hits += 1;
                return self.answer_client(&p, &answer, None);
            }
        }

        let asked_name: Option<Name> = p.asked.parse().ok();
        let upstreams = self.settings.upstreams_for(asked_name.as_ref()).to_vec();
        if upstreams.is_empty() || self.pending.len() >= self.settings.max_pending {
            self.stats.servfail += 1;
            return status_reply(&packet, RCODE::ServerFailure).map(reply);
        }
        let id = loop {
            let id = random_id();
            if !self.pending.contains_key(&id) {
                break id;
            }
        };
        let query = upstream_query(id, &p.asked, qtype, question.qclass)?;
        p.upstreams = upstreams;
        p.deadline = now + self.settings.timeout;
        p.query = query.clone();
        let upstream = p.upstreams[0];
        self.pending.insert(id, p);
        self.sent_to(upstream);
        Some(Action::Query {
            id,
            upstream,
            tcp: false,
            bytes: query,
        })
    }

    /// An answer from `from` to query `id` (over TCP when `tcp`).
    pub fn upstream_answer(
        &mut self,
        id: u16,
        from: SocketAddr,
        bytes: &[u8],
        tcp: bool,
        now: Instant,
    ) -> Option<Action<C>> {
        let Some(p) = self.pending.get(&id) else {
            self.stats.unexpected_answers += 1;
            return None;
        };
        let Ok(answer) = Packet::parse(bytes) else {
            self.stats.unexpected_answers += 1;
            return None;
        };
        // RFC 5452 §4.2: the answer must come from where the query went and
        // carry its question.
        let matches = from == p.upstreams[p.attempt]
            && tcp == p.tcp
            && answer.has_flags(PacketFlag::RESPONSE)
            && answer.questions.len() == 1
            && answer.questions[0]
                .qname
                .to_string()
                .eq_ignore_ascii_case(&p.asked)
            && u16::from(answer.questions[0].qtype) == p.qtype
            && qclass_code(answer.questions[0].qclass) == p.qclass;
        if !matches {
            self.stats.unexpected_answers += 1;
            return None;
        }
        let rtt = now.saturating_duration_since(p.sent);
        let h = self.health.entry(from).or_default();
        h.answered += 1;
        h.last_rtt = Some(rtt);
        h.failing = 0;
        if answer.has_flags(PacketFlag::TRUNCATION) && !tcp {
            // RFC 7766 §5: ask the same server again over TCP.
            self.stats.tcp_retries += 1;
            let p = self.pending.get_mut(&id)?;
            p.tcp = true;
            p.sent = now;
            p.deadline = now + self.settings.timeout;
            let (upstream, bytes) = (p.upstreams[p.attempt], p.query.clone());
            self.sent_to(upstream);
            return Some(Action::Query {
                id,
                upstream,
                tcp: true,
                bytes,
            });
        }
        let rcode = answer.rcode();
        if matches!(rcode, RCODE::ServerFailure | RCODE::Refused) {
            let p = self.pending.get(&id)?;
            if p.attempt + 1 < p.upstreams.len() {
                return self.next_upstream(id, now);
            }
        }
        let p = self.pending.remove(&id)?;
        if let Some(ttl) = Cache::lifetime(&answer) {
            let key = (p.asked.clone(), p.qtype, p.qclass);
            self.cache.insert(key, bytes.to_vec(), ttl, now);
        }
        // Verbatim when nothing needs changing but the ID.
        let verbatim = p.prefix.is_empty()
            && p.client_edns
            && bytes.len() <= p.client_max
            && p.asked.eq_ignore_ascii_case(&p.qname);
        self.answer_client(&p, &answer, verbatim.then_some(bytes))
    }

    /// Runs the upstream timeouts: the next upstream is asked, or the
    /// client answered SERVFAIL.
    pub fn tick(&mut self, now: Instant) -> Vec<Action<C>> {
        let due: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in due {
            self.stats.timeouts += 1;
            if let Some(p) = self.pending.get(&id) {
                let h = self.health.entry(p.upstreams[p.attempt]).or_default();
                h.timeouts += 1;
                h.failing += 1;
            }
            out.extend(self.next_upstream(id, now));
        }
        out
    }

    fn next_upstream(&mut self, id: u16, now: Instant) -> Option<Action<C>> {
        let timeout = self.settings.timeout;
        let p = self.pending.get_mut(&id)?;
        if p.attempt + 1 < p.upstreams.len() {
            p.attempt += 1;
            p.tcp = false;
            p.sent = now;
            p.deadline = now + timeout;
            let (upstream, bytes) = (p.upstreams[p.attempt], p.query.clone());
            self.sent_to(upstream);
            return Some(Action::Query {
                id,
                upstream,
                tcp: false,
                bytes,
            });
        }
        let p = self.pending.remove(&id)?;
        self.stats.servfail += 1;
        let bytes = servfail_for(&p)?;
        Some(Action::Reply {
            client: p.client,
            bytes,
            accelerated: Vec::new(),
        })
    }

    fn sent_to(&mut self, upstream: SocketAddr) {
        self.stats.forwarded += 1;
        self.health.entry(upstream).or_default().sent += 1;
    }

    /// The reply to `p`'s client from an upstream or cached `answer`.
    fn answer_client(
        &mut self,
        p: &Pending<C>,
        answer: &Packet<'_>,
        verbatim: Option<&[u8]>,
    ) -> Option<Action<C>> {
        let accelerated = self.accelerated_in_answer(p, answer);
        if !accelerated.is_empty() {
            self.stats.accelerated_answers += 1;
        }
        let bytes = match verbatim {
            Some(b) => {
                let mut b = b.to_vec();
                b[..2].copy_from_slice(&p.client_id.to_be_bytes());
                b
            }
            None => relay(p, answer)?,
        };
        Some(Action::Reply {
            client: p.client.clone(),
            bytes,
            accelerated,
        })
    }

    /// Accelerated addresses among a private zone's records.
    fn accelerated_in(
        &self,
        qname: &Name,
        records: &[(Name, u32, RecordData)],
    ) -> Vec<Accelerated> {
        let mut hit = self
            .settings
            .accelerate
            .contains(qname)
            .then(|| qname.as_str().to_owned());
        let mut out = Vec::new();
        for (owner, ttl, data) in records {
            if hit.is_none() && self.settings.accelerate.contains(owner) {
                hit = Some(owner.as_str().to_owned());
            }
            let Some(name) = &hit else { continue };
            let address = match data {
                RecordData::A(a) => IpAddr::V4(*a),
                RecordData::Aaaa(a) => IpAddr::V6(*a),
                RecordData::Cname(target) => {
                    if self.settings.accelerate.contains(target) && hit.is_none() {
                        hit = Some(target.as_str().to_owned());
                    }
                    continue;
                }
                RecordData::Txt(_) => continue,
            };
            out.push(Accelerated {
                name: name.clone(),
                address,
                ttl: *ttl,
            });
        }
        out
    }

    /// Accelerated addresses in an upstream answer: the chain from the
    /// client's name through the private CNAMEs and the answer's CNAMEs;
    /// from the first accelerated name on, its A/AAAA records count.
    fn accelerated_in_answer(&self, p: &Pending<C>, answer: &Packet<'_>) -> Vec<Accelerated> {
        let mut records = p.prefix.clone();
        for rr in &answer.answers {
            let Ok(owner) = rr.name.to_string().parse::<Name>() else {
                continue;
            };
            let data = match &rr.rdata {
                RData::A(a) => RecordData::A(Ipv4Addr::from(a.address)),
                RData::AAAA(a) => RecordData::Aaaa(Ipv6Addr::from(a.address)),
                RData::CNAME(c) => match c.0.to_string().parse() {
                    Ok(n) => RecordData::Cname(n),
                    Err(_) => continue,
                },
                _ => continue,
            };
            records.push((owner, rr.ttl, data));
        }
        // Only records on the chain from the client's name count (an
        // upstream cannot make us route an unrelated name's address).
        let Ok(qname) = p.qname.to_ascii_lowercase().parse::<Name>() else {
            return Vec::new();
        };
        let mut chain = vec![qname.clone()];
        for (owner, _, data) in &records {
            if let RecordData::Cname(target) = data {
                if chain.contains(owner) && !chain.contains(target) {
                    chain.push(target.clone());
                }
            }
        }
        let on_chain: Vec<_> = records
            .into_iter()
            .filter(|(owner, _, _)| chain.contains(owner))
            .collect();
        self.accelerated_in(&qname, &on_chain)
    }
}

fn qclass_code(c: QCLASS) -> u16 {
    match c {
        QCLASS::CLASS(c) => c as u16,
        QCLASS::ANY => 255,
    }
}

/// FORMERR for an unparsable query whose 12-byte header can be read and
/// is a query (RFC 1035 §4.1.1); `None`: drop it.
fn formerr(bytes: &[u8]) -> Option<Vec<u8>> {
    let header = bytes.get(..12)?;
    if header[2] & 0x80 != 0 {
        return None;
    }
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&header[..2]);
    // QR, the opcode and RD copied; RA; RCODE 1.
    out[2] = 0x80 | (header[2] & 0x79);
    out[3] = 0x80 | 1;
    Some(out)
}

/// An answer with no records and `rcode` to a parsed query.
fn status_reply(query: &Packet<'_>, rcode: RCODE) -> Option<Vec<u8>> {
    let mut r = Packet::new_reply(query.id());
    *r.opcode_mut() = query.opcode();
    *r.rcode_mut() = rcode;
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        r.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    r.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if query.questions.len() == 1 {
        r.questions.push(query.questions[0].clone());
    }
    if query.opt().is_some() {
        *r.opt_mut() = Some(edns());
    }
    r.build_bytes_vec_compressed().ok()
}

fn edns<'a>() -> OPT<'a> {
    OPT {
        opt_codes: Vec::new(),
        udp_packet_size: EDNS_PAYLOAD,
        version: 0,
    }
}

fn record<'a>(owner: &'a str, ttl: u32, data: &'a RecordData) -> Option<ResourceRecord<'a>> {
    let name = simple_dns::Name::new(owner).ok()?;
    let rdata = match data {
        RecordData::A(a) => RData::A(A {
            address: u32::from(*a),
        }),
        RecordData::Aaaa(a) => RData::AAAA(AAAA {
            address: u128::from(*a),
        }),
        RecordData::Cname(n) => RData::CNAME(CNAME(simple_dns::Name::new(n.as_str()).ok()?)),
        RecordData::Txt(t) => RData::TXT(TXT::new().with_string(t).ok()?),
    };
    Some(ResourceRecord::new(name, CLASS::IN, ttl, rdata))
}

/// An answer built here (a private zone's, or NODATA): `records` in the
/// answer section, the zone's SOA in the authority section for negative
/// answers, AA when authoritative; truncated to `max` (TC, RFC 2181 §9).
fn build_reply(
    query: &Packet<'_>,
    rcode: RCODE,
    authoritative: bool,
    records: &[(Name, u32, RecordData)],
    soa: Option<(Name, u32)>,
    max: usize,
) -> Option<Vec<u8>> {
    let mut r = Packet::new_reply(query.id());
    *r.rcode_mut() = rcode;
    if authoritative {
        r.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    }
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        r.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    r.set_flags(PacketFlag::RECURSION_AVAILABLE);
    r.questions.push(query.questions[0].clone());
    let owners: Vec<String> = records
        .iter()
        .map(|(o, _, _)| o.as_str().to_owned())
        .collect();
    for ((_, ttl, data), owner) in records.iter().zip(&owners) {
        r.answers.push(record(owner, *ttl, data)?);
    }
    let soa_names = soa.as_ref().map(|(apex, ttl)| {
        (
            apex.as_str().to_owned(),
            format!("ns.{apex}"),
            format!("hostmaster.{apex}"),
            *ttl,
        )
    });
    if let Some((apex, mname, rname, ttl)) = &soa_names {
        r.name_servers.push(ResourceRecord::new(
            simple_dns::Name::new(apex).ok()?,
            CLASS::IN,
            *ttl,
            RData::SOA(SOA {
                mname: simple_dns::Name::new(mname).ok()?,
                rname: simple_dns::Name::new(rname).ok()?,
                serial: 1,
                refresh: 3600,
                retry: 600,
                expire: 86_400,
                minimum: *ttl,
            }),
        ));
    }
    if query.opt().is_some() {
        *r.opt_mut() = Some(edns());
    }
    fit(r, max)
}

/// The message as bytes, or when longer than `max` its truncated form:
/// header and question with TC (the client asks again over TCP).
fn fit(mut r: Packet<'_>, max: usize) -> Option<Vec<u8>> {
    let bytes = r.build_bytes_vec_compressed().ok()?;
    if bytes.len() <= max {
        return Some(bytes);
    }
    r.answers.clear();
    r.name_servers.clear();
    r.additional_records.clear();
    r.set_flags(PacketFlag::TRUNCATION);
    r.build_bytes_vec_compressed().ok()
}

/// The query sent upstream: RD, one question, EDNS0.
fn upstream_query(id: u16, name: &str, qtype: u16, qclass: QCLASS) -> Option<Vec<u8>> {
    let mut q = Packet::new_query(id);
    q.set_flags(PacketFlag::RECURSION_DESIRED);
    let qtype = QTYPE::try_from(qtype).unwrap_or(QTYPE::TYPE(TYPE::from(qtype)));
    q.questions.push(Question::new(
        simple_dns::Name::new(name).ok()?,
        qtype,
        qclass,
        false,
    ));
    *q.opt_mut() = Some(edns());
    q.build_bytes_vec().ok()
}

/// An upstream or cached answer rebuilt for `p`'s client: its ID and
/// question, the private CNAME chain first, no OPT for a client without
/// EDNS0 (RFC 6891 §7), AA cleared, fitted to the client's size.
fn relay<C>(p: &Pending<C>, answer: &Packet<'_>) -> Option<Vec<u8>> {
    let mut r = Packet::new_reply(p.client_id);
    *r.rcode_mut() = answer.rcode();
    if p.client_rd {
        r.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    r.set_flags(PacketFlag::RECURSION_AVAILABLE);
    let qtype = QTYPE::try_from(p.qtype).unwrap_or(QTYPE::TYPE(TYPE::from(p.qtype)));
    let qclass = QCLASS::try_from(p.qclass).unwrap_or(QCLASS::CLASS(CLASS::IN));
    r.questions.push(Question::new(
        simple_dns::Name::new(&p.qname).ok()?,
        qtype,
        qclass,
        false,
    ));
    let owners: Vec<String> = p
        .prefix
        .iter()
        .map(|(o, _, _)| o.as_str().to_owned())
        .collect();
    for ((_, ttl, data), owner) in p.prefix.iter().zip(&owners) {
        r.answers.push(record(owner, *ttl, data)?);
    }
    r.answers.extend(answer.answers.iter().cloned());
    r.name_servers.extend(answer.name_servers.iter().cloned());
    r.additional_records
        .extend(answer.additional_records.iter().cloned());
    if p.client_edns {
        *r.opt_mut() = Some(edns());
    }
    fit(r, p.client_max)
}

fn servfail_for<C>(p: &Pending<C>) -> Option<Vec<u8>> {
    let empty = Packet::new_reply(0);
    let mut bytes = relay(p, &empty)?;
    // RCODE 2 (RFC 1035 §4.1.1).
    bytes[3] = (bytes[3] & 0xf0) | 2;
    Some(bytes)
}

#[cfg(test)]
mod tests;
