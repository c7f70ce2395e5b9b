//! Interfaces as the tables hold them: what the kernel knows of each link,
//! its addresses (which become connected and local routes), and the
//! configured static neighbours.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use strait_fib::{EgressId, IpCidr, Route, RouteTable};

use crate::config::{Config, ConfigError, Invalid};

/// Interface attributes the kernel knows and the dataplane needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelLink {
    /// Interface index.
    pub ifindex: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u16,
}

/// Reads an interface's index, MAC and MTU from sysfs (in the calling
/// thread's network namespace).
pub fn kernel_link(name: &str) -> std::io::Result<KernelLink> {
    let read = |attr: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{name}/{attr}"))
            .map(|s| s.trim().to_owned())
    };
    let bad = |what: &str, v: &str| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what} {v:?}"))
    };
    let ifindex = read("ifindex")?;
    let mac = read("address")?;
    let mtu = read("mtu")?;
    Ok(KernelLink {
        ifindex: ifindex.parse().map_err(|_| bad("ifindex", &ifindex))?,
        mac: parse_mac(&mac).ok_or_else(|| bad("MAC address", &mac))?,
        mtu: mtu.parse().map_err(|_| bad("MTU", &mtu))?,
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// One interface the dataplane serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Index in [`Tables::ports`]; also the FIB egress id.
    pub id: u16,
    /// Kernel name.
    pub name: String,
    /// Kernel attributes.
    pub link: KernelLink,
    /// IP-layer MTU used for forwarding decisions.
    pub mtu: u16,
    /// IPv4 addresses owned here, with prefix lengths.
    pub v4: Vec<(Ipv4Addr, u8)>,
    /// IPv6 addresses owned here, with prefix lengths.
    pub v6: Vec<(Ipv6Addr, u8)>,
    /// Ingress filtering: sources must be routed back out of this port.
    pub source_check: bool,
}

impl Port {
    /// True if `addr` is one of this port's IPv4 addresses.
    #[inline]
    pub fn owns_v4(&self, addr: Ipv4Addr) -> bool {
        self.v4.iter().any(|(a, _)| *a == addr)
    }

    /// True if `addr` is one of this port's IPv6 addresses.
    #[inline]
    pub fn owns_v6(&self, addr: Ipv6Addr) -> bool {
        self.v6.iter().any(|(a, _)| *a == addr)
    }

    /// True if `addr` is on one of this port's subnets (for IPv6, also any
    /// link-local address): the only neighbours worth learning here.
    pub fn on_link(&self, addr: IpAddr) -> bool {
        matches!(addr, IpAddr::V6(a) if a.is_unicast_link_local()) || self.in_subnet(addr)
    }

    /// True if `addr` is on one of this port's configured subnets.
    pub fn in_subnet(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(_) => self.v4.iter().any(|(pa, len)| {
                IpCidr::new_truncated(IpAddr::V4(*pa), *len).is_ok_and(|n| n.contains_addr(addr))
            }),
            IpAddr::V6(_) => self.v6.iter().any(|(pa, len)| {
                IpCidr::new_truncated(IpAddr::V6(*pa), *len).is_ok_and(|n| n.contains_addr(addr))
            }),
        }
    }

    /// The address ICMP errors sent from this port come from
    /// (RFC 1812 §4.3.2.4).
    pub fn icmp_source_v4(&self) -> Option<Ipv4Addr> {
        self.v4.first().map(|(a, _)| *a)
    }

    /// IPv6 counterpart of [`Self::icmp_source_v4`].
    pub fn icmp_source_v6(&self) -> Option<Ipv6Addr> {
        self.v6.first().map(|(a, _)| *a)
    }
}

/// A static neighbour from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticNeighbour {
    /// Port.
    pub port: u16,
    /// Address.
    pub ip: IpAddr,
    /// MAC.
    pub mac: [u8; 6],
}

/// Builds the ports from `[[interface]]`, reading each link with `link`,
/// and adds their connected and local routes to `routes`.
pub(super) fn build_ports(
    config: &Config,
    invalid: &Invalid<'_>,
    routes: &mut RouteTable,
    mut link: impl FnMut(&str) -> std::io::Result<KernelLink>,
) -> Result<Vec<Port>, ConfigError> {
    if config.interfaces.is_empty() {
        return Err(invalid.item(
            "[[interface]]".into(),
            "at least one interface is needed".into(),
        ));
    }
    if config.interfaces.len() > usize::from(u16::MAX) {
        return Err(invalid.item("[[interface]]".into(), "too many interfaces".into()));
    }
    let mut ports = Vec::with_capacity(config.interfaces.len());
    for (i, ic) in config.interfaces.iter().enumerate() {
        let item = format!("interface {}", ic.name);
        let at = |field: &str| ic.spans.span(field);
        if config.interfaces[..i].iter().any(|o| o.name == ic.name) {
            return Err(invalid.at(at("name"), item, "listed twice".into()));
        }
        let kl = link(&ic.name).map_err(|e| {
            invalid.at(
                at("name"),
                item.clone(),
                format!("not found in this network namespace ({e})"),
            )
        })?;
        let id = i as u16;
        let mut port = Port {
            id,
            name: ic.name.clone(),
            mtu: ic.mtu.unwrap_or(kl.mtu),
            link: kl,
            v4: Vec::new(),
            v6: Vec::new(),
            source_check: ic.source_check,
        };
        if port.mtu < 576 || port.mtu > port.link.mtu {
            return Err(invalid.at(
                at("mtu"),
                item,
                format!(
                    "mtu {} must be between 576 and the link's {}",
                    port.mtu, port.link.mtu
                ),
            ));
        }
        for a in &ic.addresses {
            let bad =
                |reason: String| invalid.at(at("addresses"), format!("{item} address {a}"), reason);
            let (addr, len) = parse_addr_len(a).map_err(bad)?;
            let host = IpCidr::new_truncated(addr, if addr.is_ipv4() { 32 } else { 128 })
                .map_err(|e| bad(e.to_string()))?;
            let subnet = IpCidr::new_truncated(addr, len).map_err(|e| bad(e.to_string()))?;
            if routes.get(host).is_some() {
                return Err(invalid.at(
                    at("addresses"),
                    format!("{item} address {a}"),
                    "address configured twice".into(),
                ));
            }
            routes.insert(Route::connected(subnet, EgressId(id)));
            routes.insert(Route::local(host));
            match addr {
                IpAddr::V4(v4) => port.v4.push((v4, len)),
                IpAddr::V6(v6) => port.v6.push((v6, len)),
            }
        }
        ports.push(port);
    }
    Ok(ports)
}

/// The port of a configured interface name.
pub(super) fn port_of(ports: &[Port], name: &str) -> Option<u16> {
    ports.iter().find(|p| p.name == name).map(|p| p.id)
}

/// The `[[neighbour]]` entries, checked against the ports.
pub(super) fn static_neighbours(
    config: &Config,
    invalid: &Invalid<'_>,
    ports: &[Port],
) -> Result<Vec<StaticNeighbour>, ConfigError> {
    let mut out = Vec::with_capacity(config.neighbours.len());
    for n in &config.neighbours {
        let item = format!("neighbour {} on {}", n.ip, n.interface);
        let invalid = |field: &str, item: String, reason: String| {
            invalid.at(n.spans.span(field), item, reason)
        };
        let port = port_of(ports, &n.interface).ok_or_else(|| {
            invalid(
                "interface",
                item.clone(),
                "not a configured interface".into(),
            )
        })?;
        let ip: IpAddr =
            n.ip.parse()
                .map_err(|_| invalid("ip", item.clone(), "ip is not an IP address".into()))?;
        let mac = parse_mac(&n.mac).ok_or_else(|| {
            invalid(
                "mac",
                item.clone(),
                format!("mac {:?} is not aa:bb:cc:dd:ee:ff", n.mac),
            )
        })?;
        out.push(StaticNeighbour { port, ip, mac });
    }
    Ok(out)
}

/// The port whose subnet holds `addr`.
pub(super) fn connected_port(ports: &[Port], addr: IpAddr) -> Option<u16> {
    ports.iter().find(|p| p.in_subnet(addr)).map(|p| p.id)
}

/// Parses an interface address `addr/len`, keeping the host bits.
fn parse_addr_len(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, l) = s
        .split_once('/')
        .ok_or_else(|| "expected address/prefix-length".to_owned())?;
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{a:?} is not an IP address"))?;
    let len: u8 = l
        .parse()
        .map_err(|_| format!("prefix length {l:?} is not a number"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix length {len} exceeds {max}"));
    }
    Ok((addr, len))
}
