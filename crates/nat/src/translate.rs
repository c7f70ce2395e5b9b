//! In-place translation of IPv4 packets.
//!
//! The dataplane passes the L3 packet inside its UMEM frame; addresses,
//! ports and ICMP identifiers are rewritten where they are and every
//! checksum is patched with RFC 1624 incremental updates (IPv4 header,
//! TCP/UDP including the pseudo-header, ICMP, and for ICMP errors the
//! embedded IPv4 header, embedded transport checksum and outer ICMP
//! checksum, RFC 5508 section 4). A UDP checksum of zero ("none") stays
//! zero. First fragments are translated like whole packets (their
//! transport checksum covers the whole datagram, which an incremental
//! update keeps right) and remembered; non-first fragments carry no ports
//! and get the addresses their first fragment got (`fragments.rs`,
//! RFC 4787 REQ-14).

use std::net::Ipv4Addr;

use strait_wire::checksum::{update16, update16_nonzero, update16_udp, update32, update32_udp};
use strait_wire::{icmpv4, Icmpv4Packet, Ipv4Packet};

use crate::counters::DropReason;
use crate::flow::{Direction, Endpoint, Protocol};
use crate::fragments::{FragmentKey, FragmentTranslation};
use crate::rules::Egress;
use crate::table::SessionKind;
use crate::tcp::Segment;
use crate::transport::{self, icmp_class, IcmpClass};
use crate::worker::{Leg, NatWorker, Opening};

/// What the dataplane should do with a packet after translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Rewritten; forward it on in its direction.
    Translated,
    /// Outbound packet addressed to one of the translator's own external
    /// endpoints: both source and destination were rewritten and it must be
    /// routed back inside (RFC 4787 REQ-9, RFC 5382 REQ-2, RFC 5508 REQ-7).
    Hairpin,
    /// Inbound packet whose destination a full-NAT rule translated: after
    /// the route lookup, pass it to [`NatWorker::translate_full_nat`] with
    /// the egress towards the backend, which translates its source too.
    FullNat,
    /// No rule applies; forward (or deliver locally) unchanged.
    NotTranslated,
    /// Drop; the reason has been counted.
    Drop(DropReason),
}

/// Offsets of a validated IPv4 packet.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    header_len: usize,
    end: usize,
    more_fragments: bool,
    /// Offset not zero: no transport header.
    later_fragment: bool,
    ident: u16,
    ip_protocol: u8,
    protocol: Option<Protocol>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

fn parse(packet: &[u8]) -> Result<Parsed, DropReason> {
    let ip = Ipv4Packet::new_checked(packet).map_err(|_| DropReason::Malformed)?;
    Ok(Parsed {
        header_len: ip.header_len(),
        end: usize::from(ip.total_len()),
        more_fragments: ip.more_frags(),
        later_fragment: ip.is_non_initial_fragment(),
        ident: ip.ident(),
        ip_protocol: ip.protocol().0,
        protocol: Protocol::from_number(ip.protocol().0),
        src: ip.src_addr(),
        dst: ip.dst_addr(),
    })
}

/// Endpoints of one leg as the session table keys them. ICMP echo carries
/// the identifier on the host side and port 0 on the remote side, so the
/// identifier is bound like a source port (RFC 5508 REQ-1).
fn leg_endpoints(
    protocol: Protocol,
    direction: Direction,
    src: Ipv4Addr,
    src_port: u16,
    dst: Ipv4Addr,
    dst_port: u16,
) -> (Endpoint, Endpoint) {
    match (protocol, direction) {
        (Protocol::Icmp, Direction::Outbound) => {
            (Endpoint::new(src, src_port), Endpoint::new(dst, 0))
        }
        (Protocol::Icmp, Direction::Inbound) => {
            (Endpoint::new(src, 0), Endpoint::new(dst, dst_port))
        }
        _ => (Endpoint::new(src, src_port), Endpoint::new(dst, dst_port)),
    }
}

/// Rewrites the source (or destination) address and port of the packet,
/// patching the IPv4 and transport checksums.
fn rewrite(packet: &mut [u8], p: &Parsed, protocol: Protocol, source_side: bool, new: Endpoint) {
    let mut ip = Ipv4Packet::new_unchecked(&mut *packet);
    let old_addr = if source_side {
        ip.rewrite_src_addr(new.addr)
    } else {
        ip.rewrite_dst_addr(new.addr)
    };
    let l4 = &mut packet[p.header_len..p.end];
    let old_port = transport::set_port(protocol, l4, source_side, new.port);
    if let Some(hc) = transport::checksum(protocol, l4) {
        let (old_a, new_a) = (old_addr.to_bits(), new.addr.to_bits());
        let updated = match protocol {
            Protocol::Udp => update16_udp(update32_udp(hc, old_a, new_a), old_port, new.port),
            Protocol::Tcp => update16(update32(hc, old_a, new_a), old_port, new.port),
            // ICMP has no pseudo-header.
            Protocol::Icmp => update16_nonzero(hc, old_port, new.port),
        };
        transport::set_checksum(protocol, l4, updated);
    }
}

/// Offset of the quoted IPv4 header inside an ICMP error message: right
/// after the ICMP header (RFC 792).
const ICMP_ERROR_QUOTE: usize = icmpv4::HEADER_LEN;

/// Folds the change of one 16-bit word of an ICMP message into the running
/// ICMP checksum `sum` (RFC 1624 eqn. 3). Every field touched is at an even
/// offset from the start of the message; unchanged words leave `sum` as it
/// is.
fn fold(sum: &mut u16, old: u16, new: u16) {
    if old != new {
        *sum = update16_nonzero(*sum, old, new);
    }
}

/// Rewrites one side of the packet quoted in an ICMP error: address (and
/// the quoted IPv4 checksum), port or identifier (and the quoted transport
/// checksum when the quote reaches it), keeping the ICMP checksum right.
fn rewrite_quoted(
    icmp: &mut [u8],
    quoted_hl: usize,
    protocol: Protocol,
    source_side: bool,
    new: Endpoint,
) {
    let mut sum = Icmpv4Packet::new_unchecked(&*icmp).checksum();
    let mut quoted = Ipv4Packet::new_unchecked(&mut icmp[ICMP_ERROR_QUOTE..]);
    let old_addr = if source_side {
        quoted.src_addr()
    } else {
        quoted.dst_addr()
    }
    .to_bits();
    let new_addr = new.addr.to_bits();
    let old_ip_checksum = quoted.checksum();
    let ip_checksum = update32(old_ip_checksum, old_addr, new_addr);
    if source_side {
        quoted.set_src_addr(new.addr);
    } else {
        quoted.set_dst_addr(new.addr);
    }
    quoted.set_checksum(ip_checksum);
    fold(&mut sum, (old_addr >> 16) as u16, (new_addr >> 16) as u16);
    fold(&mut sum, old_addr as u16, new_addr as u16);
    fold(&mut sum, old_ip_checksum, ip_checksum);
    let l4 = &mut icmp[ICMP_ERROR_QUOTE + quoted_hl..];
    let old_port = transport::set_port(protocol, l4, source_side, new.port);
    fold(&mut sum, old_port, new.port);
    if let Some(hc) = transport::checksum(protocol, l4) {
        let updated = match protocol {
            Protocol::Udp => update16_udp(update32_udp(hc, old_addr, new_addr), old_port, new.port),
            Protocol::Tcp => update16(update32(hc, old_addr, new_addr), old_port, new.port),
            Protocol::Icmp => update16_nonzero(hc, old_port, new.port),
        };
        transport::set_checksum(protocol, l4, updated);
        fold(&mut sum, hc, updated);
    }
    Icmpv4Packet::new_unchecked(icmp).set_checksum(sum);
}

impl NatWorker {
    /// Translates an IPv4 packet going from the inside out through
    /// `egress`, in place. `now` is monotonic time in seconds.
    pub fn translate_outbound(&mut self, packet: &mut [u8], egress: Egress, now: u64) -> Verdict {
        let verdict = self.outbound_packet(packet, egress, now);
        self.count(verdict, Direction::Outbound);
        verdict
    }

    /// Translates an IPv4 packet arriving from the outside, in place.
    pub fn translate_inbound(&mut self, packet: &mut [u8], now: u64) -> Verdict {
        let verdict = self.inbound_packet(packet, now);
        self.count(verdict, Direction::Inbound);
        verdict
    }

    /// The second half of a [`Verdict::FullNat`] packet, once routed:
    /// its source becomes the `egress` address (with a port of this
    /// worker's), so the backend answers through the translator. ICMP
    /// errors and later fragments of such flows are translated the same
    /// way.
    pub fn translate_full_nat(&mut self, packet: &mut [u8], egress: Egress, now: u64) -> Verdict {
        let verdict = self.outbound_packet_as(packet, egress, now, true);
        self.count(verdict, Direction::Outbound);
        verdict
    }

    /// Whether an inside host's IPv4 packet to one of our external
    /// addresses is for another inside host through NAT: a mapping, a port
    /// forward or a static NAT claims its destination, so it must hairpin
    /// (RFC 4787 REQ-9, RFC 5382 REQ-2). One to an endpoint nothing maps is
    /// for the box itself (its host stack: a proxy, a resolver) and is not
    /// translated, as on a router whose NAT runs only on forwarded
    /// traffic. ICMP errors and later fragments answer `true`: their
    /// translation follows the flow they belong to.
    pub fn hairpins(&self, packet: &[u8]) -> bool {
        let Ok(p) = parse(packet) else {
            return false;
        };
        if p.later_fragment {
            return true;
        }
        let Some(protocol) = p.protocol else {
            return false;
        };
        let Some(l4) = packet.get(p.header_len..p.end) else {
            return false;
        };
        if l4.len() < transport::min_header(protocol) {
            return false;
        }
        if let (_, Err(IcmpClass::Error)) = Self::classify(protocol, l4, Direction::Outbound) {
            return true;
        }
        let (sport, dport) = transport::ports(protocol, l4);
        let (_, dst) = leg_endpoints(protocol, Direction::Outbound, p.src, sport, p.dst, dport);
        self.is_own_external(protocol, dst)
    }

    /// [`Self::translate_outbound`] or [`Self::translate_inbound`] by
    /// direction (`egress` is ignored inbound).
    pub fn translate(
        &mut self,
        direction: Direction,
        packet: &mut [u8],
        egress: Egress,
        now: u64,
    ) -> Verdict {
        match direction {
            Direction::Outbound => self.translate_outbound(packet, egress, now),
            Direction::Inbound => self.translate_inbound(packet, now),
        }
    }

    fn count(&mut self, verdict: Verdict, direction: Direction) {
        let c = &mut self.counters;
        match (verdict, direction) {
            (Verdict::Translated, Direction::Outbound) => c.translated_outbound += 1,
            (Verdict::Translated | Verdict::FullNat, Direction::Inbound) => {
                c.translated_inbound += 1
            }
            (Verdict::FullNat, Direction::Outbound) => c.translated_outbound += 1,
            (Verdict::Hairpin, _) => c.hairpinned += 1,
            (Verdict::NotTranslated, _) => c.not_translated += 1,
            (Verdict::Drop(reason), _) => c.drop(reason),
        }
    }

    /// Whether a rule claims this traffic: decides between dropping what
    /// cannot be translated and passing on what is none of NAT's business
    /// (tunnel traffic, the host's own traffic).
    fn claimed(
        &self,
        direction: Direction,
        inside_or_src: Ipv4Addr,
        other: Ipv4Addr,
        egress: Egress,
    ) -> bool {
        let rules = self.rules();
        match direction {
            Direction::Outbound => {
                rules.match_static_internal(inside_or_src).is_some()
                    || rules.match_snat(inside_or_src, other, egress.id).is_some()
            }
            Direction::Inbound => {
                rules.is_pool_address(other) || rules.match_static_external(other).is_some()
            }
        }
    }

    fn refuse(
        &self,
        direction: Direction,
        p: &Parsed,
        egress: Egress,
        reason: DropReason,
    ) -> Verdict {
        if self.claimed(direction, p.src, p.dst, egress) {
            Verdict::Drop(reason)
        } else {
            Verdict::NotTranslated
        }
    }

    /// Protocol, TCP flags and whether a new session may be opened.
    fn classify(
        protocol: Protocol,
        l4: &[u8],
        direction: Direction,
    ) -> (Segment, Result<Opening, IcmpClass>) {
        match protocol {
            Protocol::Tcp => {
                let segment = transport::tcp_segment(l4);
                let opening = if segment.flags.is_initial_syn() {
                    Opening::Allowed
                } else {
                    Opening::Refused(DropReason::TcpNotSyn)
                };
                (segment, Ok(opening))
            }
            Protocol::Udp => (Segment::default(), Ok(Opening::Allowed)),
            Protocol::Icmp => {
                let class = icmp_class(transport::icmp_type_of(l4));
                let opening = match (class, direction) {
                    (IcmpClass::EchoRequest, _) => Ok(Opening::Allowed),
                    // Replies only ever answer an existing session.
                    (IcmpClass::EchoReply, _) => Ok(Opening::Refused(DropReason::NoMapping)),
                    (other, _) => Err(other),
                };
                (Segment::default(), opening)
            }
        }
    }

    /// A non-first fragment: the addresses its first fragment got, or, if
    /// that is not known, dropped when a rule claims it and passed on
    /// unchanged when none does (RFC 4787 REQ-14).
    fn later_fragment(
        &mut self,
        packet: &mut [u8],
        p: &Parsed,
        direction: Direction,
        egress: Egress,
        now: u64,
    ) -> Verdict {
        let key = FragmentKey::new(p.src, p.dst, p.ip_protocol, p.ident, direction);
        let Some(to) = self.fragments.lookup(&key, now) else {
            return self.refuse(direction, p, egress, DropReason::Fragment);
        };
        let mut ip = Ipv4Packet::new_unchecked(packet);
        if to.src != p.src {
            ip.rewrite_src_addr(to.src);
        }
        if to.dst != p.dst {
            ip.rewrite_dst_addr(to.dst);
        }
        self.counters.fragments_translated += 1;
        if to.hairpin {
            Verdict::Hairpin
        } else if to.full_nat {
            Verdict::FullNat
        } else {
            Verdict::Translated
        }
    }

    /// Remembers how a translated first fragment was rewritten, for the
    /// fragments that follow it.
    fn first_fragment(
        &mut self,
        p: &Parsed,
        direction: Direction,
        to: FragmentTranslation,
        now: u64,
    ) {
        if !p.more_fragments {
            return;
        }
        let key = FragmentKey::new(p.src, p.dst, p.ip_protocol, p.ident, direction);
        if self.fragments.insert(key, to, now) {
            self.counters.fragment_evictions += 1;
        }
    }

    fn outbound_packet(&mut self, packet: &mut [u8], egress: Egress, now: u64) -> Verdict {
        self.outbound_packet_as(packet, egress, now, false)
    }

    /// An outbound packet, by the SNAT rules or (`full_nat`) as the source
    /// half of full NAT.
    fn outbound_packet_as(
        &mut self,
        packet: &mut [u8],
        egress: Egress,
        now: u64,
        full_nat: bool,
    ) -> Verdict {
        let p = match parse(packet) {
            Ok(p) => p,
            Err(reason) => return Verdict::Drop(reason),
        };
        if p.later_fragment {
            return self.later_fragment(packet, &p, Direction::Outbound, egress, now);
        }
        let Some(protocol) = p.protocol else {
            return self.refuse(
                Direction::Outbound,
                &p,
                egress,
                DropReason::UnsupportedProtocol,
            );
        };
        let l4 = &packet[p.header_len..p.end];
        if l4.len() < transport::min_header(protocol) {
            return Verdict::Drop(DropReason::Malformed);
        }
        let (tcp, opening) = Self::classify(protocol, l4, Direction::Outbound);
        let opening = match opening {
            Ok(opening) => opening,
            Err(IcmpClass::Error) => {
                return self.icmp_error(packet, &p, Direction::Outbound, egress, now)
            }
            Err(_) => {
                return self.refuse(Direction::Outbound, &p, egress, DropReason::IcmpUnsupported)
            }
        };
        let (sport, dport) = transport::ports(protocol, l4);
        let (src, dst) = leg_endpoints(protocol, Direction::Outbound, p.src, sport, p.dst, dport);
        let leg = Leg {
            protocol,
            source: src,
            destination: dst,
            tcp,
            opening,
        };
        let found = if full_nat {
            self.full_nat_source(leg, egress, now).map(Some)
        } else {
            self.outbound(leg, egress, now)
        };
        let binding = match found {
            Ok(Some(binding)) => binding,
            Ok(None) => return Verdict::NotTranslated,
            Err(reason) => return Verdict::Drop(reason),
        };
        rewrite(packet, &p, protocol, true, binding.external);
        if !binding.hairpin {
            let to = FragmentTranslation {
                src: binding.external.addr,
                dst: p.dst,
                hairpin: false,
                full_nat: false,
            };
            self.first_fragment(&p, Direction::Outbound, to, now);
            return Verdict::Translated;
        }
        // RFC 4787 REQ-9: the packet now leaves from our external endpoint
        // towards another of our external endpoints; translate it in again.
        let (src, dst) = leg_endpoints(
            protocol,
            Direction::Inbound,
            binding.external.addr,
            binding.external.port,
            p.dst,
            if protocol == Protocol::Icmp {
                binding.external.port
            } else {
                dport
            },
        );
        match self.inbound(
            Leg {
                protocol,
                source: src,
                destination: dst,
                tcp,
                opening,
            },
            true,
            now,
        ) {
            Ok(Some(back)) => {
                rewrite(packet, &p, protocol, false, back.inside);
                let to = FragmentTranslation {
                    src: binding.external.addr,
                    dst: back.inside.addr,
                    hairpin: true,
                    full_nat: false,
                };
                self.first_fragment(&p, Direction::Outbound, to, now);
                Verdict::Hairpin
            }
            Ok(None) => {
                let to = FragmentTranslation {
                    src: binding.external.addr,
                    dst: p.dst,
                    hairpin: false,
                    full_nat: false,
                };
                self.first_fragment(&p, Direction::Outbound, to, now);
                Verdict::Translated
            }
            Err(reason) => Verdict::Drop(reason),
        }
    }

    fn inbound_packet(&mut self, packet: &mut [u8], now: u64) -> Verdict {
        let egress_unused = Egress::new(strait_wire::EgressId(0), Ipv4Addr::UNSPECIFIED);
        let p = match parse(packet) {
            Ok(p) => p,
            Err(reason) => return Verdict::Drop(reason),
        };
        if p.later_fragment {
            return self.later_fragment(packet, &p, Direction::Inbound, egress_unused, now);
        }
        let Some(protocol) = p.protocol else {
            return self.refuse(
                Direction::Inbound,
                &p,
                egress_unused,
                DropReason::UnsupportedProtocol,
            );
        };
        let l4 = &packet[p.header_len..p.end];
        if l4.len() < transport::min_header(protocol) {
            return Verdict::Drop(DropReason::Malformed);
        }
        let (tcp, opening) = Self::classify(protocol, l4, Direction::Inbound);
        let opening = match opening {
            Ok(opening) => opening,
            Err(IcmpClass::Error) => {
                return self.icmp_error(packet, &p, Direction::Inbound, egress_unused, now)
            }
            Err(_) => {
                return self.refuse(
                    Direction::Inbound,
                    &p,
                    egress_unused,
                    DropReason::IcmpUnsupported,
                )
            }
        };
        let (sport, dport) = transport::ports(protocol, l4);
        let (src, dst) = leg_endpoints(protocol, Direction::Inbound, p.src, sport, p.dst, dport);
        match self.inbound(
            Leg {
                protocol,
                source: src,
                destination: dst,
                tcp,
                opening,
            },
            false,
            now,
        ) {
            Ok(Some(binding)) => {
                rewrite(packet, &p, protocol, false, binding.inside);
                let mut to = FragmentTranslation {
                    src: p.src,
                    dst: binding.inside.addr,
                    hairpin: false,
                    full_nat: binding.kind == SessionKind::FullNat,
                };
                if binding.kind == SessionKind::FullNatSource {
                    // A backend's reply through full NAT: now to the
                    // client, and from the virtual endpoint.
                    let backend = src;
                    match self.full_nat_reply(protocol, backend, binding.inside, tcp, now) {
                        Ok(front) => {
                            rewrite(packet, &p, protocol, true, front.external);
                            to.src = front.external.addr;
                        }
                        Err(reason) => return Verdict::Drop(reason),
                    }
                }
                self.first_fragment(&p, Direction::Inbound, to, now);
                if to.full_nat {
                    Verdict::FullNat
                } else {
                    Verdict::Translated
                }
            }
            Ok(None) => Verdict::NotTranslated,
            Err(reason) => Verdict::Drop(reason),
        }
    }

    /// RFC 5508 section 4: an ICMP error about a translated flow gets the
    /// quoted packet reverted to what its sender saw, and the outer address
    /// on our side translated.
    fn icmp_error(
        &mut self,
        packet: &mut [u8],
        p: &Parsed,
        direction: Direction,
        egress: Egress,
        now: u64,
    ) -> Verdict {
        // A fragmented error cannot have its checksum verified.
        if p.more_fragments {
            return Verdict::Drop(DropReason::Fragment);
        }
        let icmp = &packet[p.header_len..p.end];
        // RFC 5508 REQ-3: drop errors whose ICMP checksum fails.
        if strait_wire::checksum::sum(icmp) != 0xffff {
            return Verdict::Drop(DropReason::IcmpErrorChecksum);
        }
        let Some(quote) = icmp.get(ICMP_ERROR_QUOTE..) else {
            return Verdict::Drop(DropReason::IcmpErrorMalformed);
        };
        let Ok(quoted) = Ipv4Packet::new_header_checked(quote) else {
            return Verdict::Drop(DropReason::IcmpErrorMalformed);
        };
        // REQ-3 a): the quoted IPv4 header checksum must verify.
        if !quoted.verify_checksum() {
            return Verdict::Drop(DropReason::IcmpErrorChecksum);
        }
        if quoted.is_non_initial_fragment() {
            return Verdict::Drop(DropReason::IcmpErrorMalformed);
        }
        // REQ-3 b): the transport header starts after the quoted options.
        let quoted_hl = quoted.header_len();
        let (q_src, q_dst) = (quoted.src_addr(), quoted.dst_addr());
        let Some(q_protocol) = Protocol::from_number(quoted.protocol().0) else {
            return self.error_without_session(direction, p, q_src, q_dst, egress);
        };
        let q_l4 = &quote[quoted_hl..];
        if q_l4.len() < transport::MIN_QUOTED {
            return Verdict::Drop(DropReason::IcmpErrorMalformed);
        }
        if q_protocol == Protocol::Icmp {
            match icmp_class(transport::icmp_type_of(q_l4)) {
                IcmpClass::EchoRequest | IcmpClass::EchoReply => {}
                // No error is ever sent about an error (RFC 1122 3.2.2).
                IcmpClass::Error => return Verdict::Drop(DropReason::IcmpErrorMalformed),
                IcmpClass::Other => {
                    return self.error_without_session(direction, p, q_src, q_dst, egress)
                }
            }
        }
        let (sport, dport) = transport::ports(q_protocol, q_l4);
        // The quoted packet travelled the other way.
        let (e_src, e_dst) =
            leg_endpoints(q_protocol, direction.reverse(), q_src, sport, q_dst, dport);
        let Some(binding) = self.session_for_error(direction, q_protocol, e_src, e_dst, now) else {
            return self.error_without_session(direction, p, q_src, q_dst, egress);
        };
        let mut ip = Ipv4Packet::new_unchecked(&mut *packet);
        let icmp_start = p.header_len;
        let end = p.end;
        match direction {
            Direction::Inbound => {
                // REQ-4 c): the outer destination becomes the quoted source
                // after translation.
                ip.rewrite_dst_addr(binding.inside.addr);
                rewrite_quoted(
                    &mut packet[icmp_start..end],
                    quoted_hl,
                    q_protocol,
                    true,
                    binding.inside,
                );
                match binding.kind {
                    // About a packet to a backend: the error goes on to
                    // the client from the translator's egress address.
                    SessionKind::FullNat => {
                        self.counters.icmp_errors_translated += 1;
                        return Verdict::FullNat;
                    }
                    // From a backend, about a packet full NAT sent it: its
                    // quote now names the client; it must also come from
                    // the virtual endpoint the client called.
                    SessionKind::FullNatSource => {
                        let Ok(again) = parse(packet) else {
                            return Verdict::Drop(DropReason::IcmpErrorMalformed);
                        };
                        return match self.icmp_error(
                            packet,
                            &again,
                            Direction::Outbound,
                            egress,
                            now,
                        ) {
                            Verdict::Translated => Verdict::Translated,
                            Verdict::Drop(reason) => Verdict::Drop(reason),
                            _ => Verdict::Drop(DropReason::IcmpErrorNoSession),
                        };
                    }
                    _ => {}
                }
            }
            Direction::Outbound => {
                // REQ-5 c): the error leaves from the public address of the
                // session (the internal sender, host or router, is hidden).
                ip.rewrite_src_addr(binding.external.addr);
                rewrite_quoted(
                    &mut packet[icmp_start..end],
                    quoted_hl,
                    q_protocol,
                    false,
                    binding.external,
                );
            }
        }
        self.counters.icmp_errors_translated += 1;
        Verdict::Translated
    }

    /// An ICMP error that matches no session: dropped when it concerns a
    /// translated address (REQ-4/REQ-5 "silently drop", which is also what
    /// stops spoofed errors), passed on otherwise (errors about the host's
    /// own or tunnel traffic).
    fn error_without_session(
        &self,
        direction: Direction,
        p: &Parsed,
        q_src: Ipv4Addr,
        q_dst: Ipv4Addr,
        egress: Egress,
    ) -> Verdict {
        let claimed = match direction {
            Direction::Inbound => self.claimed(Direction::Inbound, p.src, p.dst, egress),
            // The quoted packet came in to the inside host `q_dst`.
            Direction::Outbound => self.claimed(Direction::Outbound, q_dst, q_src, egress),
        };
        if claimed {
            Verdict::Drop(DropReason::IcmpErrorNoSession)
        } else {
            Verdict::NotTranslated
        }
    }
}
