//! Private zones: the records an operator types into the configuration,
//! answered authoritatively (RFC 1034 §4.3.2) with wildcards as RFC 4592
//! defines them.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use strait_names::Name;

/// TTL of the synthesised SOA and the negative-caching time of a zone's
/// NXDOMAIN/NODATA answers (RFC 2308 §5: the SOA's MINIMUM) unless a zone
/// says otherwise.
pub const NEGATIVE_TTL: u32 = 60;
/// CNAMEs followed inside the zones before giving up (a loop).
pub const MAX_CHAIN: usize = 8;

/// A record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Alias to another name.
    Cname(Name),
    /// One text string (≤ 255 bytes).
    Txt(String),
}

impl RecordData {
    /// The record type's number (RFC 1035 §3.2.2, RFC 3596).
    pub fn rtype(&self) -> u16 {
        match self {
            RecordData::A(_) => 1,
            RecordData::Aaaa(_) => 28,
            RecordData::Cname(_) => 5,
            RecordData::Txt(_) => 16,
        }
    }
}

/// One record of a private zone: `name TTL TYPE value`, e.g.
/// `*.teams.example 300 A 100.64.0.1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The owner: a name, or `*.` and a name (a wildcard, RFC 4592).
    pub owner: Name,
    /// Whether the owner is `*.owner`.
    pub wildcard: bool,
    /// Seconds.
    pub ttl: u32,
    /// The data.
    pub data: RecordData,
}

impl FromStr for Record {
    type Err = String;
    fn from_str(s: &str) -> Result<Record, String> {
        let mut parts = s.split_whitespace();
        let (Some(owner), Some(ttl), Some(kind)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "record {s:?}: expected \"NAME TTL TYPE VALUE\" (e.g. \"*.teams.example 300 A 100.64.0.1\")"
            ));
        };
        let value = parts.collect::<Vec<_>>().join(" ");
        let (wildcard, owner) = match owner.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, owner),
        };
        let owner: Name = owner
            .parse()
            .map_err(|e| format!("record {s:?}: name: {e}"))?;
        let ttl: u32 = ttl
            .parse()
            .ok()
            .filter(|t| *t <= i32::MAX as u32)
            .ok_or_else(|| format!("record {s:?}: TTL {ttl:?} is not a number of seconds"))?;
        let bad = |what: &str| format!("record {s:?}: {value:?} is not {what}");
        let data = match kind.to_ascii_uppercase().as_str() {
            "A" => RecordData::A(value.parse().map_err(|_| bad("an IPv4 address"))?),
            "AAAA" => RecordData::Aaaa(value.parse().map_err(|_| bad("an IPv6 address"))?),
            "CNAME" => RecordData::Cname(value.parse().map_err(|_| bad("a domain name"))?),
            "TXT" => {
                let text = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(&value);
                if text.len() > 255 {
                    return Err(bad("a text of at most 255 bytes"));
                }
                RecordData::Txt(text.to_owned())
            }
            other => {
                return Err(format!(
                "record {s:?}: type {other} is not one a private zone holds (A, AAAA, CNAME, TXT)"
            ))
            }
        };
        Ok(Record {
            owner,
            wildcard,
            ttl,
            data,
        })
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let star = if self.wildcard { "*." } else { "" };
        write!(f, "{star}{} {} ", self.owner, self.ttl)?;
        match &self.data {
            RecordData::A(a) => write!(f, "A {a}"),
            RecordData::Aaaa(a) => write!(f, "AAAA {a}"),
            RecordData::Cname(n) => write!(f, "CNAME {n}"),
            RecordData::Txt(t) => write!(f, "TXT \"{t}\""),
        }
    }
}

/// One private zone: its apex and records.
#[derive(Debug, Clone)]
pub struct Zone {
    apex: Name,
    /// Records by owner; a wildcard `*.x` is kept under the text `*.x`.
    nodes: HashMap<String, Vec<Record>>,
    /// Every name that exists in the zone: owners and the empty
    /// non-terminals between them and the apex (RFC 4592 §2.2.2).
    existing: HashSet<String>,
    negative_ttl: u32,
}

/// What a zone says about a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneAnswer {
    /// Records (owners rewritten to the query name where a wildcard
    /// synthesised them), CNAMEs first; it may end in a name outside the
    /// zone (`follow`), to resolve elsewhere.
    Records {
        /// (owner, ttl, data) in answer order.
        records: Vec<(Name, u32, RecordData)>,
        /// A CNAME target outside every private zone, if the chain left.
        follow: Option<Name>,
    },
    /// The name exists but has no record of the type (NODATA).
    NoData,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
}

impl Zone {
    /// A zone at `apex` with `records` (each at or below the apex), its
    /// negative answers cached for `negative_ttl` seconds.
    pub fn new(apex: Name, records: Vec<Record>, negative_ttl: u32) -> Result<Zone, String> {
        let mut nodes: HashMap<String, Vec<Record>> = HashMap::new();
        let mut existing = HashSet::new();
        existing.insert(apex.as_str().to_owned());
        for r in records {
            if !r.owner.is_at_or_below(&apex) {
                return Err(format!("record \"{r}\" is outside the zone {apex}"));
            }
            let key = if r.wildcard {
                format!("*.{}", r.owner)
            } else {
                r.owner.as_str().to_owned()
            };
            // RFC 1034 §3.6.2: a CNAME owner has no other data.
            let node = nodes.entry(key.clone()).or_default();
            let cname = |x: &Record| matches!(x.data, RecordData::Cname(_));
            if node.iter().any(|x| cname(x) != cname(&r)) || (cname(&r) && !node.is_empty()) {
                return Err(format!(
                    "record \"{r}\": a name with a CNAME has no other records (RFC 1034 §3.6.2)"
                ));
            }
            node.push(r.clone());
            existing.insert(key);
            let mut n = Some(r.owner.clone());
            while let Some(name) = n {
                if name == apex {
                    break;
                }
                existing.insert(name.as_str().to_owned());
                n = name.parent();
            }
        }
        Ok(Zone {
            apex,
            nodes,
            existing,
            negative_ttl,
        })
    }

    /// The apex.
    pub fn apex(&self) -> &Name {
        &self.apex
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.nodes.values().map(Vec::len).sum()
    }

    /// Whether it has no records.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Its negative-caching time (the synthesised SOA's MINIMUM).
    pub fn negative_ttl(&self) -> u32 {
        self.negative_ttl
    }

    /// The records at `name` (which is in this zone): its own node, else
    /// the wildcard at its closest encloser (RFC 4592 §3.3.1), else none
    /// (`Err(exists)`: whether the name exists as an empty non-terminal).
    fn node(&self, name: &Name) -> Result<&[Record], bool> {
        if let Some(records) = self.nodes.get(name.as_str()) {
            return Ok(records);
        }
        if self.existing.contains(name.as_str()) {
            return Err(true);
        }
        // The closest encloser: the longest existing ancestor; only its
        // wildcard may synthesise (a wildcard further up does not reach
        // below an existing name).
        let mut up = name.parent();
        while let Some(n) = up {
            if self.existing.contains(n.as_str()) {
                return self
                    .nodes
                    .get(&format!("*.{n}"))
                    .map(Vec::as_slice)
                    .ok_or(false);
            }
            if n == self.apex {
                break;
            }
            up = n.parent();
        }
        Err(false)
    }
}

/// The zones together: a question goes to the zone with the longest apex
/// at or above its name.
#[derive(Debug, Clone, Default)]
pub struct Zones {
    zones: Vec<Zone>,
}

impl Zones {
    /// The set; two zones with one apex are refused.
    pub fn new(zones: Vec<Zone>) -> Result<Zones, String> {
        let mut seen = HashSet::new();
        for z in &zones {
            if !seen.insert(z.apex.clone()) {
                return Err(format!("zone {} is configured twice", z.apex));
            }
        }
        Ok(Zones { zones })
    }

    /// The zones.
    pub fn iter(&self) -> impl Iterator<Item = &Zone> {
        self.zones.iter()
    }

    /// The zone `name` belongs to, if any.
    pub fn zone_of(&self, name: &Name) -> Option<&Zone> {
        self.zones
            .iter()
            .filter(|z| name.is_at_or_below(&z.apex))
            .max_by_key(|z| z.apex.as_str().len())
    }

    /// Answers `qtype` (255: ANY) for `name`, which `zone_of` placed in
    /// a zone: RFC 1034 §4.3.2 step 3, CNAMEs followed while they stay in
    /// a private zone.
    pub fn answer(&self, name: &Name, qtype: u16) -> ZoneAnswer {
        let mut records = Vec::new();
        let mut current = name.clone();
        for _ in 0..MAX_CHAIN {
            let Some(zone) = self.zone_of(&current) else {
                return ZoneAnswer::Records {
                    records,
                    follow: Some(current),
                };
            };
            let node = match zone.node(&current) {
                Ok(node) => node,
                Err(_) if !records.is_empty() => {
                    // The chain ended on a name with no data: what was
                    // found stands (RFC 1034 §4.3.2 step 3.c).
                    return ZoneAnswer::Records {
                        records,
                        follow: None,
                    };
                }
                Err(true) => return ZoneAnswer::NoData,
                Err(false) => return ZoneAnswer::NxDomain,
            };
            if let [Record {
                data: RecordData::Cname(target),
                ttl,
                ..
            }] = node
            {
                if qtype != 5 {
                    records.push((current.clone(), *ttl, RecordData::Cname(target.clone())));
                    current = target.clone();
                    continue;
                }
            }
            let wanted: Vec<_> = node
                .iter()
                .filter(|r| qtype == 255 || r.data.rtype() == qtype)
                .map(|r| (current.clone(), r.ttl, r.data.clone()))
                .collect();
            if wanted.is_empty() && records.is_empty() {
                return ZoneAnswer::NoData;
            }
            records.extend(wanted);
            return ZoneAnswer::Records {
                records,
                follow: None,
            };
        }
        // A CNAME loop inside the zones: what was found so far.
        ZoneAnswer::Records {
            records,
            follow: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    fn zones(apex: &str, records: &[&str]) -> Zones {
        let records = records.iter().map(|r| r.parse().unwrap()).collect();
        Zones::new(vec![Zone::new(name(apex), records, 60).unwrap()]).unwrap()
    }

    fn a(s: &str) -> RecordData {
        RecordData::A(s.parse().unwrap())
    }

    #[test]
    fn records_parse_and_bad_ones_say_why() {
        let r: Record = "*.Teams.Example. 300 A 100.64.0.1".parse().unwrap();
        assert!(r.wildcard);
        assert_eq!(r.owner, name("teams.example"));
        assert_eq!(r.to_string(), "*.teams.example 300 A 100.64.0.1");
        let t: Record = "x.example 60 TXT \"hello world\"".parse().unwrap();
        assert_eq!(t.data, RecordData::Txt("hello world".into()));
        for (bad, why) in [
            ("x.example 60", "expected"),
            ("x.example sixty A 1.2.3.4", "TTL"),
            ("x.example 60 A 1.2.3", "IPv4"),
            ("x.example 60 MX 10 mail", "MX is not one"),
            ("x..example 60 A 1.2.3.4", "name"),
        ] {
            let e = bad.parse::<Record>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn exact_names_wildcards_and_the_apex() {
        // RFC 4592 §2.2.1's example, reduced.
        let z = zones(
            "example",
            &[
                "example 60 TXT \"apex\"",
                "*.example 60 TXT \"wild\"",
                "host1.example 60 A 192.0.2.1",
                "_ssh._tcp.host1.example 60 TXT \"srv\"",
                "*.sub2.example 60 A 192.0.2.9",
            ],
        );
        let txt = |t: &str| RecordData::Txt(t.into());
        // Exact beats the wildcard; the apex is not matched by "*.example".
        assert_eq!(
            z.answer(&name("example"), 16),
            ZoneAnswer::Records {
                records: vec![(name("example"), 60, txt("apex"))],
                follow: None
            }
        );
        assert_eq!(
            z.answer(&name("host1.example"), 1),
            ZoneAnswer::Records {
                records: vec![(name("host1.example"), 60, a("192.0.2.1"))],
                follow: None
            }
        );
        // Synthesised, owner rewritten to the query name, at any depth.
        assert_eq!(
            z.answer(&name("a.b.example"), 16),
            ZoneAnswer::Records {
                records: vec![(name("a.b.example"), 60, txt("wild"))],
                follow: None
            }
        );
        // An existing name with no such type: NODATA, no synthesis.
        assert_eq!(z.answer(&name("host1.example"), 28), ZoneAnswer::NoData);
        // Below an existing name the wildcard at the apex does not reach
        // (the closest encloser is host1.example, which has no wildcard).
        assert_eq!(
            z.answer(&name("foo.host1.example"), 16),
            ZoneAnswer::NxDomain
        );
        // An empty non-terminal exists: NODATA.
        assert_eq!(
            z.answer(&name("_tcp.host1.example"), 16),
            ZoneAnswer::NoData
        );
        // sub2.example exists only as the wildcard's parent: NODATA for it,
        // the wildcard for below.
        assert_eq!(z.answer(&name("sub2.example"), 1), ZoneAnswer::NoData);
        assert_eq!(
            z.answer(&name("x.sub2.example"), 1),
            ZoneAnswer::Records {
                records: vec![(name("x.sub2.example"), 60, a("192.0.2.9"))],
                follow: None
            }
        );
    }

    #[test]
    fn no_wildcard_means_nxdomain() {
        let z = zones("corp.example", &["www.corp.example 60 A 10.0.0.1"]);
        assert_eq!(
            z.answer(&name("nope.corp.example"), 1),
            ZoneAnswer::NxDomain
        );
        assert_eq!(z.answer(&name("corp.example"), 1), ZoneAnswer::NoData);
    }

    #[test]
    fn cnames_are_followed_inside_and_handed_out_outside() {
        let z = zones(
            "corp.example",
            &[
                "www.corp.example 60 CNAME web.corp.example",
                "web.corp.example 30 A 10.0.0.2",
                "saas.corp.example 60 CNAME app.saas.example",
                "loop1.corp.example 60 CNAME loop2.corp.example",
                "loop2.corp.example 60 CNAME loop1.corp.example",
            ],
        );
        assert_eq!(
            z.answer(&name("www.corp.example"), 1),
            ZoneAnswer::Records {
                records: vec![
                    (
                        name("www.corp.example"),
                        60,
                        RecordData::Cname(name("web.corp.example"))
                    ),
                    (name("web.corp.example"), 30, a("10.0.0.2")),
                ],
                follow: None
            }
        );
        // Asked for the CNAME itself: just it.
        assert!(matches!(
            z.answer(&name("www.corp.example"), 5),
            ZoneAnswer::Records { records, .. } if records.len() == 1
        ));
        match z.answer(&name("saas.corp.example"), 1) {
            ZoneAnswer::Records { records, follow } => {
                assert_eq!(records.len(), 1);
                assert_eq!(follow, Some(name("app.saas.example")));
            }
            other => panic!("{other:?}"),
        }
        match z.answer(&name("loop1.corp.example"), 1) {
            ZoneAnswer::Records { records, follow } => {
                assert_eq!(records.len(), MAX_CHAIN);
                assert_eq!(follow, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_longest_apex_owns_a_name() {
        let parent = Zone::new(
            name("example"),
            vec!["*.example 60 A 192.0.2.1".parse().unwrap()],
            60,
        )
        .unwrap();
        let child = Zone::new(
            name("teams.example"),
            vec!["eu.teams.example 60 A 192.0.2.2".parse().unwrap()],
            60,
        )
        .unwrap();
        let z = Zones::new(vec![parent, child]).unwrap();
        assert_eq!(
            z.zone_of(&name("x.teams.example")).unwrap().apex(),
            &name("teams.example")
        );
        assert_eq!(z.answer(&name("x.teams.example"), 1), ZoneAnswer::NxDomain);
        assert!(Zone::new(
            name("a.example"),
            vec!["b.example 1 A 1.1.1.1".parse().unwrap()],
            60
        )
        .is_err());
        assert!(Zone::new(
            name("a.example"),
            vec![
                "b.a.example 1 A 1.1.1.1".parse().unwrap(),
                "b.a.example 1 CNAME c.example".parse().unwrap()
            ],
            60
        )
        .is_err());
    }
}
