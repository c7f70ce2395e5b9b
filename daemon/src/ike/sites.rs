//! Route exchange at the hub: which prefixes each site holds, what each
//! site is offered, and why a claim was refused.
//!
//! A device claims its LAN prefixes as its TSi when it registers. The hub
//! keeps of them what the registry lets that device claim and what no
//! *other* site holds (the same site registering again, after a restart or
//! from its second device, reclaims its own). Every site is offered the
//! hub's `advertise` prefixes and, with `transit`, every other site's
//! held prefixes, announced to it again whenever they change.

use std::collections::BTreeMap;

use strait_ike::TrafficSelector;

/// `ADDRESS/LENGTH` of a selector that is a prefix.
pub fn prefix_text(ts: &TrafficSelector) -> Option<String> {
    ts.as_prefix().map(|(a, l)| format!("{a}/{l}"))
}

/// The prefixes of `list` written out; ranges that are not prefixes are
/// left out (Strait's routes are prefixes).
pub fn prefix_texts(list: &[TrafficSelector]) -> Vec<String> {
    list.iter().filter_map(prefix_text).collect()
}

/// A 64-bit fingerprint of a route set, to tell whether it changed
/// without keeping it.
pub fn fingerprint(set: &[TrafficSelector]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    set.hash(&mut h);
    h.finish()
}

/// What the sites hold now, by site name; and what the hubs we are
/// registered with announced, under `hub NAME` (they conflict with claims
/// and are offered like a site's, but are never claimed onwards).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Holdings {
    by_site: BTreeMap<String, Vec<TrafficSelector>>,
}

/// The key of a hub's announced prefixes.
const HUB: &str = "hub ";

impl Holdings {
    /// Sets what `site` holds (empty: nothing, it is gone).
    pub fn set(&mut self, site: &str, held: Vec<TrafficSelector>) {
        if held.is_empty() {
            self.by_site.remove(site);
        } else {
            self.by_site.insert(site.to_owned(), held);
        }
    }

    /// Sets what the hub `name` announced we reach through it.
    pub fn set_hub(&mut self, name: &str, learned: Vec<TrafficSelector>) {
        self.set(&format!("{HUB}{name}"), learned);
    }

    /// What our own sites hold (not the hubs'): what we claim onwards.
    pub fn own(&self) -> Vec<TrafficSelector> {
        self.by_site
            .iter()
            .filter(|(s, _)| !s.starts_with(HUB))
            .flat_map(|(_, h)| h.iter().cloned())
            .collect()
    }

    /// What sites other than `site` hold: a claim of `site` overlapping
    /// any of it is refused.
    pub fn others(&self, site: &str) -> Vec<TrafficSelector> {
        self.by_site
            .iter()
            .filter(|(s, _)| s.as_str() != site)
            .flat_map(|(_, h)| h.iter().cloned())
            .collect()
    }

    /// What `site` is offered: `advertise`, and with `transit` what the
    /// other sites hold; in a stable order, without repeats.
    pub fn offer(
        &self,
        site: &str,
        advertise: &[TrafficSelector],
        transit: bool,
    ) -> Vec<TrafficSelector> {
        let mut out: Vec<TrafficSelector> = advertise.to_vec();
        if transit {
            let mut seen: std::collections::HashSet<TrafficSelector> =
                out.iter().copied().collect();
            for ts in self.others(site) {
                if seen.insert(ts) {
                    out.push(ts);
                }
            }
        }
        out
    }

    /// Why the claim `claim` of `site` got nothing: the other site whose
    /// prefix it overlaps, or else the registry.
    pub fn why_refused(&self, site: &str, claim: &TrafficSelector) -> String {
        let claim_text = prefix_text(claim).unwrap_or_else(|| format!("{claim:?}"));
        for (other, held) in self.by_site.iter().filter(|(s, _)| s.as_str() != site) {
            if let Some(h) = held.iter().find(|h| h.intersect(claim).is_some()) {
                let h = prefix_text(h).unwrap_or_default();
                return match other.strip_prefix(HUB) {
                    Some(hub) => format!("{claim_text} overlaps {h} reached through hub {hub}"),
                    None => format!("{claim_text} overlaps {h} held by site {other}"),
                };
            }
        }
        format!("{claim_text} is outside the prefixes the registry lets it claim")
    }

    /// The sites holding anything.
    pub fn sites(&self) -> impl Iterator<Item = (&String, &Vec<TrafficSelector>)> {
        self.by_site.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TrafficSelector {
        let (a, l) = s.split_once('/').unwrap();
        TrafficSelector::prefix(a.parse().unwrap(), l.parse().unwrap()).unwrap()
    }

    #[test]
    fn offers_leave_a_site_its_own_prefixes_out() {
        let mut h = Holdings::default();
        h.set("a", vec![p("10.1.0.0/16"), p("2001:db8:1::/48")]);
        h.set("b", vec![p("10.3.0.0/16")]);
        let cloud = [p("10.2.0.0/16")];
        assert_eq!(
            h.offer("a", &cloud, true),
            [p("10.2.0.0/16"), p("10.3.0.0/16")]
        );
        assert_eq!(h.offer("a", &cloud, false), [p("10.2.0.0/16")]);
        assert_eq!(h.offer("c", &[], true).len(), 3);
        assert_eq!(h.others("b").len(), 2);
        h.set("b", Vec::new());
        assert_eq!(h.offer("a", &cloud, true), [p("10.2.0.0/16")]);
        // A hub's announcement: offered and conflicting, never our own.
        h.set_hub("core", vec![p("10.8.0.0/16")]);
        assert_eq!(h.offer("a", &[], true), [p("10.8.0.0/16")]);
        assert_eq!(h.own(), [p("10.1.0.0/16"), p("2001:db8:1::/48")]);
        assert_eq!(
            h.why_refused("a", &p("10.8.1.0/24")),
            "10.8.1.0/24 overlaps 10.8.0.0/16 reached through hub core"
        );
    }

    #[test]
    fn a_refusal_names_the_other_site_and_its_prefix() {
        let mut h = Holdings::default();
        h.set("a", vec![p("10.1.0.0/16")]);
        assert_eq!(
            h.why_refused("d", &p("10.1.2.0/24")),
            "10.1.2.0/24 overlaps 10.1.0.0/16 held by site a"
        );
        assert!(h.why_refused("a", &p("10.1.2.0/24")).contains("registry"));
        assert_eq!(prefix_texts(&[p("10.9.0.0/16")]), ["10.9.0.0/16"]);
    }
}
