//! Routes from DNS answers: each address answered for an accelerated name
//! is routed into the tunnel (a /32 or /128 in the engine's `dns` overlay
//! part) for the answer's TTL clamped to `[dns] route_ttl`, refreshed by
//! every answer (cache hits too), and removed once it has expired and no
//! NAT session of ours still goes to it.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use strait_dataplane::{Overlay, TunnelPrefix};
use strait_dns::Accelerated;

/// The engine overlay part these routes live in.
pub const OVERLAY_DNS: &str = "dns";

/// One routed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The accelerated name whose answer gave it (the latest).
    pub name: String,
    /// Until when it stays routed without a new answer.
    pub expires: Instant,
}

/// The routed addresses.
#[derive(Debug)]
pub struct AcceleratedRoutes {
    tunnel: String,
    ttl: [u32; 2],
    entries: BTreeMap<IpAddr, Entry>,
    /// Addresses never routed: ours and our interfaces' subnets (they
    /// are reached directly), loopback, multicast and the like.
    own: Vec<(IpAddr, u8)>,
}

impl AcceleratedRoutes {
    /// Routes into `tunnel`, lifetimes clamped to `ttl`; `own` are the
    /// interfaces' addresses with prefix lengths.
    pub fn new(tunnel: String, ttl: [u32; 2], own: Vec<(IpAddr, u8)>) -> Self {
        AcceleratedRoutes {
            tunnel,
            ttl,
            entries: BTreeMap::new(),
            own,
        }
    }

    /// Takes new settings (a reload); routes already in place stay until
    /// they expire.
    pub fn configure(&mut self, tunnel: String, ttl: [u32; 2]) -> bool {
        let changed = tunnel != self.tunnel;
        self.tunnel = tunnel;
        self.ttl = ttl;
        changed
    }

    /// The routed addresses.
    pub fn entries(&self) -> &BTreeMap<IpAddr, Entry> {
        &self.entries
    }

    /// Whether `addr` may be routed into the tunnel.
    fn routable(&self, addr: IpAddr) -> bool {
        let special = match addr {
            IpAddr::V4(a) => {
                a.is_unspecified()
                    || a.is_loopback()
                    || a.is_multicast()
                    || a.is_broadcast()
                    || a.is_link_local()
            }
            IpAddr::V6(a) => {
                a.is_unspecified()
                    || a.is_loopback()
                    || a.is_multicast()
                    || (a.segments()[0] & 0xffc0) == 0xfe80
            }
        };
        !special
            && !self
                .own
                .iter()
                .any(|(net, len)| same_subnet(*net, addr, *len))
    }

    /// Takes an answer's addresses, except those in `never` (the tunnels'
    /// own peers: routed into a tunnel, its outer packets would loop);
    /// whether the routed set grew.
    pub fn learn(&mut self, answers: &[Accelerated], never: &[IpAddr], now: Instant) -> bool {
        let mut grew = false;
        for a in answers {
            if !self.routable(a.address) || never.contains(&a.address) {
                continue;
            }
            let life = Duration::from_secs(u64::from(a.ttl.clamp(self.ttl[0], self.ttl[1])));
            let expires = now + life;
            match self.entries.get_mut(&a.address) {
                Some(e) => {
                    e.expires = e.expires.max(expires);
                    e.name.clone_from(&a.name);
                }
                None => {
                    self.entries.insert(
                        a.address,
                        Entry {
                            name: a.name.clone(),
                            expires,
                        },
                    );
                    grew = true;
                }
            }
        }
        grew
    }

    /// Drops the expired addresses no NAT session goes to (`in_use`);
    /// whether the set shrank. An expired address still in use is kept
    /// a little longer and looked at again.
    pub fn expire(&mut self, now: Instant, in_use: &HashSet<IpAddr>) -> bool {
        let before = self.entries.len();
        self.entries.retain(|addr, e| {
            if e.expires > now {
                return true;
            }
            if in_use.contains(addr) {
                e.expires = now + Duration::from_secs(10);
                return true;
            }
            false
        });
        self.entries.len() != before
    }

    /// The next expiry.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.expires).min()
    }

    /// The engine overlay part holding them.
    pub fn overlay(&self) -> Overlay {
        Overlay {
            tunnel_prefixes: self
                .entries
                .keys()
                .map(|a| TunnelPrefix {
                    tunnel: self.tunnel.clone(),
                    prefix: match a {
                        IpAddr::V4(_) => format!("{a}/32"),
                        IpAddr::V6(_) => format!("{a}/128"),
                    },
                })
                .collect(),
            ..Overlay::default()
        }
    }
}

fn same_subnet(net: IpAddr, addr: IpAddr, len: u8) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(addr: &str, ttl: u32) -> Accelerated {
        Accelerated {
            name: "app.saas.example".into(),
            address: addr.parse().unwrap(),
            ttl,
        }
    }

    #[test]
    fn lifetimes_are_clamped_refreshed_and_kept_while_in_use() {
        let t0 = Instant::now();
        let own = vec![("10.1.0.1".parse().unwrap(), 24)];
        let mut r = AcceleratedRoutes::new("hub".into(), [60, 3600], own);
        assert!(r.learn(&[acc("203.0.113.7", 5)], &[], t0));
        assert!(
            !r.learn(&[acc("203.0.113.7", 5)], &[], t0),
            "a refresh does not grow the set"
        );
        assert!(
            !r.learn(&[acc("10.1.0.9", 300), acc("127.0.0.1", 300)], &[], t0),
            "ours and loopback are never routed"
        );
        let hub: IpAddr = "198.51.100.9".parse().unwrap();
        assert!(
            !r.learn(&[acc("198.51.100.9", 300)], &[hub], t0),
            "a tunnel's own peer is never routed into a tunnel"
        );
        assert_eq!(
            r.entries()[&"203.0.113.7".parse().unwrap()].expires,
            t0 + Duration::from_secs(60)
        );
        let none = HashSet::new();
        assert!(!r.expire(t0 + Duration::from_secs(59), &none));
        // Refreshed at 30 s: lives to 90 s.
        r.learn(&[acc("203.0.113.7", 5)], &[], t0 + Duration::from_secs(30));
        assert!(!r.expire(t0 + Duration::from_secs(60), &none));
        let busy: HashSet<IpAddr> = ["203.0.113.7".parse().unwrap()].into();
        assert!(
            !r.expire(t0 + Duration::from_secs(91), &busy),
            "a NAT session still uses it"
        );
        assert!(r.expire(t0 + Duration::from_secs(102), &none));
        assert!(r.entries().is_empty());
        // A day at most.
        r.learn(&[acc("2001:db8::7", u32::MAX)], &[], t0);
        assert_eq!(r.next_expiry(), Some(t0 + Duration::from_secs(3600)));
        assert_eq!(r.overlay().tunnel_prefixes[0].prefix, "2001:db8::7/128");
    }
}
