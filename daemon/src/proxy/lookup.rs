//! The proxy's stub resolver: one A or AAAA question to the configured
//! resolver (RFC 1035 §4.1, recursion desired), and the address at the
//! end of the answer's CNAME chain (RFC 1034 §3.6.2).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE};

/// The query for `name` (A when `v6` is false, else AAAA) with `id`.
pub(crate) fn query(id: u16, name: &str, v6: bool) -> Option<Vec<u8>> {
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    let qtype = if v6 { TYPE::AAAA } else { TYPE::A };
    packet.questions.push(Question::new(
        simple_dns::Name::new(name).ok()?,
        QTYPE::TYPE(qtype),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet.build_bytes_vec().ok()
}

/// Why an answer gave no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LookupError {
    /// Not a DNS response, or not to our question.
    Malformed,
    /// The resolver answered with an error (NXDOMAIN, SERVFAIL, ...).
    Rcode(u16),
    /// No address record on the chain from the name.
    NoAddress,
}

/// The message id of a response (what to match it with), if it is one.
pub(crate) fn response_id(bytes: &[u8]) -> Option<u16> {
    let header = bytes.get(..4)?;
    (header[2] & 0x80 != 0).then(|| u16::from_be_bytes([header[0], header[1]]))
}

/// The first address for `name` in `bytes`, the resolver's response to
/// [`query`], and how long it may be used: the smallest TTL on the chain
/// that led to it (RFC 1035 §3.2.1; RFC 2181 §5.2). The question must be
/// ours, and only records on the CNAME chain from `name` count (an answer
/// cannot name another host's address for it).
pub(crate) fn address(bytes: &[u8], name: &str, v6: bool) -> Result<(IpAddr, u32), LookupError> {
    let packet = Packet::parse(bytes).map_err(|_| LookupError::Malformed)?;
    let asked = packet
        .questions
        .first()
        .is_some_and(|q| same(&q.qname.to_string(), name));
    if !packet.has_flags(PacketFlag::RESPONSE) || !asked {
        return Err(LookupError::Malformed);
    }
    if packet.rcode() != RCODE::NoError {
        return Err(LookupError::Rcode(packet.rcode() as u16));
    }
    let mut owner = name.to_owned();
    let mut ttl = u32::MAX;
    // Each step follows one CNAME; a chain longer than the answer is a loop.
    for _ in 0..=packet.answers.len() {
        let mut next = None;
        for rr in packet
            .answers
            .iter()
            .filter(|rr| same(&rr.name.to_string(), &owner))
        {
            let ip = match &rr.rdata {
                RData::A(a) if !v6 => IpAddr::V4(Ipv4Addr::from(a.address)),
                RData::AAAA(a) if v6 => IpAddr::V6(Ipv6Addr::from(a.address)),
                RData::CNAME(c) => {
                    next = Some((c.0.to_string(), rr.ttl));
                    continue;
                }
                _ => continue,
            };
            return Ok((ip, ttl.min(rr.ttl)));
        }
        match next {
            Some((n, t)) => {
                owner = n;
                ttl = ttl.min(t);
            }
            None => break,
        }
    }
    Err(LookupError::NoAddress)
}

/// Names compare case-insensitively, a trailing dot ignored (RFC 4343).
fn same(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, CNAME};
    use simple_dns::ResourceRecord;

    fn answer(
        id: u16,
        qname: &str,
        records: Vec<ResourceRecord<'static>>,
        rcode: RCODE,
    ) -> Vec<u8> {
        let q = query(id, qname, false).unwrap();
        let q = Packet::parse(&q).unwrap();
        let mut r = q.into_reply();
        *r.rcode_mut() = rcode;
        r.answers = records;
        r.build_bytes_vec().unwrap()
    }

    fn rr(owner: &'static str, data: RData<'static>) -> ResourceRecord<'static> {
        ResourceRecord::new(simple_dns::Name::new_unchecked(owner), CLASS::IN, 60, data)
    }

    #[test]
    fn follows_the_cname_chain_and_ignores_others() {
        let a = |ip: [u8; 4]| {
            RData::A(A {
                address: u32::from_be_bytes(ip),
            })
        };
        let bytes = answer(
            7,
            "www.example.com",
            vec![
                rr("other.example", a([192, 0, 2, 66])),
                // The chain is as fresh as its shortest-lived link.
                ResourceRecord::new(
                    simple_dns::Name::new_unchecked("www.example.com"),
                    CLASS::IN,
                    30,
                    RData::CNAME(CNAME(simple_dns::Name::new_unchecked("edge.cdn.example"))),
                ),
                rr("edge.cdn.example", a([192, 0, 2, 10])),
            ],
            RCODE::NoError,
        );
        assert_eq!(response_id(&bytes), Some(7));
        assert_eq!(
            address(&bytes, "WWW.example.com.", false),
            Ok(("192.0.2.10".parse().unwrap(), 30))
        );
        assert_eq!(
            address(&bytes, "other.example", false),
            Err(LookupError::Malformed)
        );
        let only_other = answer(
            7,
            "www.example.com",
            vec![rr("other.example", a([192, 0, 2, 66]))],
            RCODE::NoError,
        );
        assert_eq!(
            address(&only_other, "www.example.com", false),
            Err(LookupError::NoAddress)
        );
        let nx = answer(8, "nx.example", Vec::new(), RCODE::NameError);
        assert_eq!(
            address(&nx, "nx.example", false),
            Err(LookupError::Rcode(3))
        );
        assert_eq!(
            address(b"\x00\x07\x80", "x", false),
            Err(LookupError::Malformed)
        );
        // A query is not an answer.
        assert_eq!(response_id(&query(9, "a.example", true).unwrap()), None);
    }
}
