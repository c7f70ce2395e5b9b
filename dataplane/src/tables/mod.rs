//! Table snapshots: everything a worker reads per packet, built whole by the
//! control side and published with one atomic swap.
//!
//! Workers load the current `Arc<Tables>` once per batch; a new
//! configuration is validated and built completely before the swap, so a
//! worker sees the old tables or the new ones, never a mix. The parts:
//! interfaces (`port.rs`), static routes (`routes.rs`), tunnels and their
//! SAs (`tunnel.rs`), NAT rules (`nat.rs`).
//!
//! # What workers write into a snapshot
//!
//! The tables are read-only to the workers but for two cells, each shared
//! on purpose and written without a lock:
//!
//! * [`Tunnel`]'s learned peer endpoint (one relaxed `AtomicU64` per
//!   tunnel): a floating peer's address moves with authenticated traffic
//!   seen by any worker, and every worker must send to the new one; it is
//!   carried across snapshots with the tunnel.
//! * the NAT status slots ([`NatTables::status`], `status.rs`): each worker
//!   publishes its session snapshot into its own slot with `try_lock`, so
//!   the control thread can read them whatever snapshot is current.
//!
//! The outbound SA ([`Tunnel::out_sa`]) hands out sequence blocks
//! atomically, but that is the SA's own state, not the table's; so is the
//! highest inbound sequence number a worker records in its key's state
//! (`sastore.rs`) for the store to make durable. Everything
//! else a worker writes (sessions, replay windows, counters, neighbours) is
//! the worker's own, and reaches the control side through `status.rs` and
//! `counters.rs`.

mod lb;
mod nat;
mod port;
mod routes;
mod tunnel;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use strait_fib::{EgressId, Fib, FlowHasher, RouteTable};

use crate::config::{Config, ConfigError, IcmpConfig, Invalid};
use crate::sastore::{SaStore, StoreMode};

pub use lb::{LbBackendInfo, LbInfo};
pub use nat::{session_state, NatRuleInfo, NatTables};
pub use port::{kernel_link, KernelLink, Port, StaticNeighbour};
#[cfg(test)]
pub use tunnel::TUNNEL_OVERHEAD_UDP;
pub use tunnel::{SaSpec, Tunnel};

/// What a FIB egress id names: a port, or a tunnel (ids past the ports).
#[derive(Debug, Clone, Copy)]
pub enum Egress<'a> {
    /// A port.
    Port(&'a Port),
    /// An ESP tunnel.
    Tunnel(&'a Tunnel),
}

impl Egress<'_> {
    /// MTU of the IP layer leaving by it.
    #[inline]
    pub fn mtu(&self) -> u16 {
        match self {
            Egress::Port(p) => p.mtu,
            Egress::Tunnel(t) => t.mtu,
        }
    }
}

/// Everything the workers read per packet.
#[derive(Debug)]
pub struct Tables {
    /// Increases with every published snapshot.
    pub generation: u64,
    /// Interfaces, indexed by port id.
    pub ports: Vec<Port>,
    /// Routes.
    pub fib: Fib,
    /// The routes the FIB was built from (for `show routes` and edits).
    pub routes: RouteTable,
    /// Configured neighbours.
    pub static_neighbours: Vec<StaticNeighbour>,
    /// ICMP generation limits.
    pub icmp: IcmpConfig,
    /// ECMP flow hash, seeded per device.
    pub flow_hasher: FlowHasher,
    /// ESP tunnels; tunnel `i` is FIB egress `ports.len() + i`.
    pub tunnels: Vec<Tunnel>,
    /// The tunnels' remote prefixes, each routed to its tunnel: a packet
    /// from one of these sources must arrive through that tunnel (RFC 4301
    /// §5.2), so one lookup finds the tunnel whose policy a cleartext
    /// packet would break.
    pub protected: Fib,
    /// The clock origin SA lifetimes and NAT timeouts count from (fixed
    /// for the engine's life).
    pub epoch: Instant,
    /// NAT rules, settings and the workers' session snapshots.
    pub nat: NatTables,
    /// IKE to our addresses goes to the engine's owner (`[ike]` is set).
    pub services: bool,
    /// `[dns] listen`'s IPv4 endpoints: UDP queries to them go to the
    /// engine's owner when it takes them (`Engine::dns_datagrams`).
    pub dns_listen: Vec<std::net::SocketAddrV4>,
    /// Where configured keys' sequence positions are recorded (opened
    /// with the first tunnel, then carried from snapshot to snapshot).
    pub(crate) sa_store: Option<Arc<SaStore>>,
    /// The same for keys negotiated per SA, which need no record.
    pub(crate) sa_memory: Arc<SaStore>,
}

impl Tables {
    /// The port or tunnel a FIB egress id names.
    #[inline]
    pub fn egress(&self, id: EgressId) -> Option<Egress<'_>> {
        let id = id.index();
        match id.checked_sub(self.ports.len()) {
            None => self.ports.get(id).map(Egress::Port),
            Some(i) => self.tunnels.get(i).map(Egress::Tunnel),
        }
    }

    /// Port by kernel name.
    pub fn port_by_name(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// Builds tables from a configuration, resolving interfaces with
    /// `link` (normally [`kernel_link`]). Refuses the whole configuration
    /// on the first inconsistency, naming the item and the reason. The
    /// first snapshot with NAT rules also builds the workers' translators
    /// ([`NatTables::prepare_translators`]); a check does not.
    pub fn build(
        config: &Config,
        path: &str,
        generation: u64,
        flow_seed: u64,
        previous: Option<&Tables>,
        link: impl FnMut(&str) -> std::io::Result<KernelLink>,
    ) -> Result<Tables, ConfigError> {
        let tables = Self::build_in(
            config,
            path,
            generation,
            flow_seed,
            previous,
            link,
            StoreMode::Write,
        )?;
        // Here, on the control side, not in a worker's first batch.
        tables.nat.prepare_translators();
        Ok(tables)
    }

    /// [`build`](Self::build), with the SA state directory only read when
    /// `mode` says so (a check beside a running daemon that holds it).
    pub(crate) fn build_in(
        config: &Config,
        path: &str,
        generation: u64,
        flow_seed: u64,
        previous: Option<&Tables>,
        link: impl FnMut(&str) -> std::io::Result<KernelLink>,
        mode: StoreMode,
    ) -> Result<Tables, ConfigError> {
        let invalid = Invalid(path);
        config
            .check_sections()
            .map_err(|(item, reason)| invalid.item(item, reason))?;
        if let Some(proxy) = &config.proxy {
            proxy.checked(path)?;
        }
        let sa_store = match (
            previous.and_then(|p| p.sa_store.clone()),
            &config.engine.state_dir,
        ) {
            (Some(store), _) => Some(store),
            (None, Some(dir)) if !config.tunnels.is_empty() => {
                Some(SaStore::open(dir, mode).map_err(|e| {
                    invalid.item(
                        "[engine]".into(),
                        format!("state_dir {}: {e}", dir.display()),
                    )
                })?)
            }
            (None, _) => None,
        };
        let sa_memory = previous.map_or_else(SaStore::memory, |p| Arc::clone(&p.sa_memory));
        let mut routes = RouteTable::new();
        let ports = port::build_ports(config, &invalid, &mut routes, link)?;
        let epoch = previous.map_or_else(Instant::now, |p| p.epoch);
        let tunnels = tunnel::build_tunnels(
            config,
            &invalid,
            &ports,
            &mut routes,
            epoch,
            previous.map(|p| &p.tunnels[..]),
            tunnel::Stores {
                disk: sa_store.as_deref(),
                memory: &sa_memory,
            },
        )?;
        routes::add_static(config, &invalid, &ports, &mut routes)?;
        let static_neighbours = port::static_neighbours(config, &invalid, &ports)?;
        let nat = NatTables::build(
            config,
            &ports,
            &tunnels,
            flow_seed,
            previous.map(|p| &p.nat),
        )
        .map_err(|(item, field, reason)| {
            let rule = item
                .strip_prefix("nat rule ")
                // The last rule of that name: "listed twice" is about it.
                .and_then(|name| config.nat.iter().rev().find(|r| r.name == name));
            let span = rule.and_then(|r| match field {
                Some(f) => r.spans.span(f),
                None => r.spans.first(),
            });
            // A load balancer's field, or the rule compiled from it.
            let lb = item
                .strip_prefix("load balancer ")
                .or_else(|| item.strip_prefix("nat rule lb/"))
                .and_then(|name| config.load_balancers.iter().rev().find(|l| l.name == name));
            let span = span.or_else(|| {
                lb.and_then(|l| match field {
                    Some(f) => l.spans.span(if f == "public" { "address" } else { f }),
                    None => l.spans.first(),
                })
            });
            invalid.at(span, item, reason)
        })?;
        // Everything is valid: now the new keys' first reservations may be
        // recorded (a refused configuration leaves no trace on disk).
        if let Some(store) = &sa_store {
            store
                .prepare()
                .map_err(|reason| invalid.item("[engine] state_dir".into(), reason))?;
        }
        sa_memory
            .prepare()
            .map_err(|reason| invalid.item("[[tunnel]]".into(), reason))?;
        Ok(Tables {
            nat,
            protected: tunnel::protected_sources(&tunnels),
            generation,
            fib: routes.snapshot(),
            routes,
            ports,
            static_neighbours,
            icmp: config.icmp.clone(),
            flow_hasher: FlowHasher::new(flow_seed),
            tunnels,
            epoch,
            sa_store,
            sa_memory,
            services: config.ike.is_some(),
            dns_listen: config
                .dns
                .iter()
                .flat_map(|d| d.listen.iter())
                .filter_map(|l| match l.value() {
                    Ok(std::net::SocketAddr::V4(a)) => Some(*a),
                    _ => None,
                })
                .collect(),
        })
    }
}

/// The published tables, shared by the control side and the workers.
#[derive(Debug)]
pub struct SharedTables(ArcSwap<Tables>);

impl SharedTables {
    /// Starts with `tables`.
    pub fn new(tables: Tables) -> SharedTables {
        SharedTables(ArcSwap::from_pointee(tables))
    }

    /// The current snapshot (workers: once per batch).
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Tables>> {
        self.0.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn load_full(&self) -> Arc<Tables> {
        self.0.load_full()
    }

    /// Publishes a complete new snapshot.
    pub fn publish(&self, tables: Tables) {
        self.0.store(Arc::new(tables));
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use strait_fib::NextHop;

    use super::port::parse_mac;
    use super::*;

    fn fake_link(name: &str) -> std::io::Result<KernelLink> {
        match name {
            "lan" => Ok(KernelLink {
                ifindex: 2,
                mac: [2, 0, 0, 0, 0, 1],
                mtu: 1500,
            }),
            "wan" => Ok(KernelLink {
                ifindex: 3,
                mac: [2, 0, 0, 0, 0, 2],
                mtu: 1500,
            }),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    }

    const BASE: &str = r#"
[[interface]]
name = "lan"
addresses = ["10.0.1.1/24", "fd00:1::1/64"]
[[interface]]
name = "wan"
addresses = ["192.0.2.1/24"]
"#;

    fn build(extra: &str) -> Result<Tables, ConfigError> {
        let mut c = Config::parse(&format!("{BASE}{extra}"), "t.toml")?;
        c.engine.state_dir = Some(crate::sastore::test_dir("t"));
        c.engine.manual_keying = true;
        Tables::build(&c, "t.toml", 1, 7, None, fake_link)
    }

    #[test]
    fn builds_connected_local_and_static_routes() {
        let t = build("[[route]]\nprefix = \"0.0.0.0/0\"\nvia = [\"192.0.2.254\"]\n").unwrap();
        use strait_fib::Disposition;
        let d = |a: &str| t.fib.lookup(a.parse().unwrap(), 0);
        assert_eq!(d("10.0.1.1"), Some(Disposition::Local));
        assert_eq!(
            d("10.0.1.9"),
            Some(Disposition::Forward(NextHop::on_link(EgressId(0))))
        );
        assert_eq!(
            d("8.8.8.8"),
            Some(Disposition::Forward(NextHop::via(
                EgressId(1),
                "192.0.2.254".parse().unwrap()
            )))
        );
        assert_eq!(d("fd00:1::1"), Some(Disposition::Local));
        assert_eq!(d("fd00:2::1"), None);
        assert_eq!(
            t.ports[0].icmp_source_v4(),
            Some(Ipv4Addr::new(10, 0, 1, 1))
        );
    }

    #[test]
    fn refuses_bad_configs_naming_item_and_reason() {
        let cases = [
            ("[[route]]\nprefix = \"10.9.0.0/33\"\nvia = [\"192.0.2.254\"]\n", "route 10.9.0.0/33", Some(9)),
            ("[[route]]\nprefix = \"10.9.0.0/16\"\nvia = [\"203.0.113.1\"]\n", "not on any interface", Some(10)),
            ("[[route]]\nprefix = \"10.9.0.0/16\"\n", "needs via", Some(9)),
            ("[[route]]\nprefix = \"10.9.0.0/16\"\ndev = \"eth9\"\n", "dev eth9", Some(10)),
            ("[[route]]\nprefix = \"10.9.0.0/16\"\nkind = \"magic\"\n", "magic", Some(10)),
            (
                "[[route]]\nprefix = \"10.9.0.0/16\"\nvia = [\"192.0.2.2\",\"192.0.2.3\",\"192.0.2.4\",\"192.0.2.5\",\"192.0.2.6\"]\n",
                "route 10.9.0.0/16", Some(9)),
            ("[[route]]\nprefix = \"fd00:9::/64\"\nvia = [\"192.0.2.2\"]\n", "address family", Some(10)),
            ("[[interface]]\nname = \"eth7\"\n", "interface eth7: not found", Some(9)),
            ("[[interface]]\nname = \"lan\"\n", "listed twice", Some(9)),
            ("[[neighbour]]\ninterface = \"lan\"\nip = \"10.0.1.2\"\nmac = \"zz\"\n", "mac", Some(11)),
            ("[engine]\nworkers = 0\n", "engine.workers", None),
            ("[engine]\nworkers = 2\ncores = [1]\n", "engine.cores", None),
            ("[engine]\nrealtime_priority = 100\n", "engine.realtime_priority: 100 is above 99", None),
            ("[engine]\nrx_ring = 1000\n", "engine.rx_ring: 1000 must be a power of two", None),
            ("[engine]\ntx_ring = 32768\n", "engine.tx_ring: 32768 must be a power of two from 64 to 16384", None),
            (
                "[[nat]]\nname = \"m\"\nkind = \"masquerade\"\nsource = \"10.0.1.0/24\"\n",
                "nat rule m: masquerade needs out_interface", Some(9)),
            (
                "[[nat]]\nname = \"m\"\nkind = \"masquerade\"\nsource = \"10.0.1.0/24\"\nout_interface = \"eth9\"\n",
                "out_interface eth9 is not a configured interface or tunnel", Some(12)),
            (
                "[[nat]]\nname = \"s\"\nkind = \"snat\"\nsource = \"10.0.1.0/33\"\naddresses = [\"192.0.2.9\"]\n",
                "nat rule s: source: 10.0.1.0/33: prefix length 33 exceeds 32", Some(11)),
            // Host bits are refused as in routes, not silently cleared to
            // translate the whole 10.1.0.0/16.
            (
                "[[nat]]\nname = \"s\"\nkind = \"snat\"\nsource = \"10.1.2.3/16\"\naddresses = [\"192.0.2.9\"]\n",
                "nat rule s: source: 10.1.2.3/16: host bits set after /16 (did you mean 10.1.0.0/16?)", Some(11)),
            (
                "[[nat]]\nname = \"s\"\nkind = \"snat\"\nsource = \"10.1.0.0/16\"\ndestination = \"192.0.2.77/24\"\naddresses = [\"192.0.2.9\"]\n",
                "nat rule s: destination: 192.0.2.77/24: host bits set after /24 (did you mean 192.0.2.0/24?)", Some(12)),
            (
                "[[route]]\nprefix = \"10.9.1.0/16\"\nvia = [\"192.0.2.254\"]\n",
                "route 10.9.1.0/16: host bits set after /16 (did you mean 10.9.0.0/16?)", Some(9)),
            (
                "[[nat]]\nname = \"s\"\nkind = \"snat\"\nsource = \"10.0.1.0/24\"\n",
                "snat needs addresses", Some(9)),
            (
                "[[nat]]\nname = \"s\"\nkind = \"snat\"\nsource = \"10.0.1.0/24\"\naddresses = [\"192.0.2.9\"]\nports = \"2000-1000\"\n",
                "ports \"2000-1000\"", Some(13)),
            (
                "[[nat]]\nname = \"x\"\nkind = \"static\"\ninternal = \"10.0.1.5\"\nexternal = \"192.0.2.5\"\nsource = \"10.0.0.0/8\"\n",
                "nat rule x: source does not apply to a static rule", Some(13)),
            (
                "[[nat]]\nname = \"d\"\nkind = \"dnat\"\nprotocol = \"icmp\"\npublic = \"192.0.2.1:80\"\nbackends = [\"10.0.1.2:80\"]\n",
                "protocol \"icmp\" is not tcp or udp", Some(11)),
            (
                "[[nat]]\nname = \"d\"\nkind = \"dnat\"\nprotocol = \"tcp\"\npublic = \"192.0.2.1:80\"\nbackends = [\"10.0.1.2\"]\n",
                "nat rule d: backend: \"10.0.1.2\" is not an IPv4 addr:port", Some(13)),
            (
                "[[nat]]\nname = \"a\"\nkind = \"dnat\"\nprotocol = \"tcp\"\npublic = \"192.0.2.1:80\"\nbackends = [\"10.0.1.2:80\"]\n\
                 [[nat]]\nname = \"b\"\nkind = \"dnat\"\nprotocol = \"tcp\"\npublic = \"192.0.2.1:80\"\nbackends = [\"10.0.1.3:80\"]\n",
                "nat rule b: public endpoint tcp 192.0.2.1:80 already published by nat rule a", Some(18)),
            (
                "[[nat]]\nname = \"a\"\nkind = \"static\"\ninternal = \"10.0.1.5\"\nexternal = \"192.0.2.5\"\n\
                 [[nat]]\nname = \"a\"\nkind = \"static\"\ninternal = \"10.0.1.6\"\nexternal = \"192.0.2.6\"\n",
                "nat rule a: listed twice", Some(14)),
            (
                "[metrics]\nlisten = \"0.0.0.0:9464\"\n",
                "[metrics]: listen 0.0.0.0:9464: only a loopback address is allowed",
                None,
            ),
            (
                "[nat_settings]\nudp_timeout = 30\n",
                "[nat_settings]: udp timeout 30 s is below the 120 s required by RFC 4787 REQ-5", None),
            (
                "[engine]\nworkers = 2\n[[nat]]\nname = \"a\"\nkind = \"static\"\ninternal = \"10.0.1.5\"\nexternal = \"192.0.2.5\"\n",
                "[[nat]]: NAT needs engine.workers = 1", None),
            (
                "[engine]\nworkers = 2\n[[tunnel]]\nname = \"t\"\nlocal = \"192.0.2.1\"\nremote = \"198.51.100.1\"\nprefixes = [\"10.9.0.0/16\"]\noutbound = { spi = 4097, cipher = \"aes128-gcm\", key = \"000102030405060708090a0b0c0d0e0f10111213\" }\ninbound = { spi = 8194, cipher = \"aes128-gcm\", key = \"a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3\" }\n",
                "[[tunnel]]: tunnels need engine.workers = 1", Some(11)),
        ];
        // BASE takes 7 lines; an item's line is where its field at fault
        // (or its first field) is written.
        for (extra, want, line) in cases {
            let err = build(extra).unwrap_err().to_string();
            let at = line
                .map(|l| format!("t.toml line {l}: "))
                .unwrap_or("t.toml: ".into());
            assert!(err.starts_with(&at), "{extra:?}: {err} (want {at:?})");
            assert!(err.contains(want), "{extra:?}: {err}");
        }
        let c = Config::parse(
            "[[interface]]\nname = \"lan\"\naddresses = [\"10.0.0.1/40\"]\n",
            "t",
        )
        .unwrap();
        let err = Tables::build(&c, "t", 1, 7, None, fake_link)
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefix length 40 exceeds 32"), "{err}");
        assert!(
            err.starts_with("t line 3: interface lan address 10.0.0.1/40"),
            "{err}"
        );
    }

    fn tunnel_with(out_key: &str, in_key: &str) -> String {
        format!(
            "[[tunnel]]\nname = \"hub\"\nlocal = \"192.0.2.1\"\nremote = \"198.51.100.1\"\n\
             prefixes = [\"10.2.0.0/16\"]\n\
             outbound = {{ spi = 4096, cipher = \"aes128-gcm\", key = \"{out_key}\" }}\n\
             inbound = {{ spi = 4097, cipher = \"aes128-gcm\", key = \"{in_key}\" }}\n"
        )
    }

    #[test]
    fn configured_keys_need_a_state_dir_and_one_sa_each() {
        const K1: &str = "000102030405060708090a0b0c0d0e0f10111213";
        const K2: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3";
        const K3: &str = "5a5b5c5d5e5f606162636465666768696a6b6c6d";
        // Without the manual-keying switch: refused, naming the tunnel's
        // line and the switch.
        let mut c = Config::parse(&format!("{BASE}{}", tunnel_with(K1, K2)), "t.toml").unwrap();
        let err = Tables::build(&c, "t.toml", 1, 7, None, fake_link).unwrap_err();
        assert_eq!(err.line(), Some(9), "{err}");
        assert!(err.to_string().contains("manual_keying = true"), "{err}");
        // No state directory: refused, naming the tunnel's line.
        c.engine.manual_keying = true;
        let err = Tables::build(&c, "t.toml", 1, 7, None, fake_link).unwrap_err();
        assert_eq!(err.line(), Some(9), "{err}");
        assert!(err.to_string().contains("need [engine] state_dir"), "{err}");
        // One key for both directions: refused at the inbound line.
        let err = build(&tunnel_with(K1, K1)).unwrap_err();
        assert_eq!(err.line(), Some(14), "{err}");
        assert!(
            err.to_string()
                .contains("inbound SPI 4097 has the same key as tunnel hub outbound SPI 4096"),
            "{err}"
        );
        // Two tunnels sharing a key: refused too.
        let second = tunnel_with(K3, K1)
            .replace("name = \"hub\"", "name = \"hub2\"")
            .replace("10.2.0.0/16", "10.3.0.0/16")
            .replace("4096", "5000")
            .replace("4097", "5001");
        let err = build(&format!("{}{second}", tunnel_with(K1, K2))).unwrap_err();
        assert!(err.to_string().contains("tunnel hub2"), "{err}");
        assert!(err.to_string().contains("same key"), "{err}");
        // A key that sealed here may not later open: the peer would seal
        // under it from its own counter.
        let dir = crate::sastore::test_dir("swap");
        let mut c = Config::parse(&format!("{BASE}{}", tunnel_with(K1, K2)), "t.toml").unwrap();
        c.engine.state_dir = Some(dir.clone());
        c.engine.manual_keying = true;
        let t = Tables::build(&c, "t.toml", 1, 7, None, fake_link).unwrap();
        let mut swapped =
            Config::parse(&format!("{BASE}{}", tunnel_with(K2, K1)), "t.toml").unwrap();
        swapped.engine.state_dir = Some(dir.clone());
        swapped.engine.manual_keying = true;
        let err = Tables::build(&swapped, "t.toml", 2, 7, Some(&t), fake_link).unwrap_err();
        assert!(err.to_string().contains("one direction only"), "{err}");
        // Also across a restart, from the records alone.
        drop(t);
        let err = Tables::build(&swapped, "t.toml", 1, 7, None, fake_link).unwrap_err();
        assert!(err.to_string().contains("one direction only"), "{err}");
        // A second daemon on the same directory is refused.
        let t = Tables::build(&c, "t.toml", 1, 7, None, fake_link).unwrap();
        let err = Tables::build(&c, "t.toml", 1, 7, None, fake_link).unwrap_err();
        assert!(err.to_string().contains("another straitd holds"), "{err}");
        drop(t);
    }

    /// A tunnel of seven lines (eight with `extra`): `[[tunnel]]`, name,
    /// local, remote, prefixes, outbound, inbound, then `extra` as is.
    fn site(name: &str, prefix: &str, out: (u32, &str), inb: (u32, &str), extra: &str) -> String {
        format!(
            "[[tunnel]]\nname = \"{name}\"\nlocal = \"192.0.2.1\"\nremote = \"198.51.100.1\"\n\
             prefixes = [\"{prefix}\"]\n\
             outbound = {{ spi = {}, cipher = \"aes128-gcm\", key = \"{}\" }}\n\
             inbound = {{ spi = {}, cipher = \"aes128-gcm\", key = \"{}\" }}\n{extra}",
            out.0, out.1, inb.0, inb.1
        )
    }

    #[test]
    fn conflicts_between_tunnels_name_the_later_one_first_problem_first() {
        const K1: &str = "000102030405060708090a0b0c0d0e0f10111213";
        const K2: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3";
        const K3: &str = "5a5b5c5d5e5f606162636465666768696a6b6c6d";
        const K4: &str = "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3";
        const K5: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3";
        let hub = site("hub", "10.2.0.0/16", (4096, K1), (4097, K2), "");
        let nonces = "two SAs under one key repeat AES-GCM/ChaCha20-Poly1305 nonces; \
                      give each SA its own key";
        // BASE takes 7 lines and `hub` 7: the second tunnel's name is line
        // 16, prefixes 19, outbound 20, inbound 21.
        let cases = [
            (
                site("hub2", "10.3.0.0/16", (5000, K3), (5001, K1), ""),
                format!(
                    "t.toml line 21: tunnel hub2: inbound SPI 5001 has the same key as \
                     tunnel hub outbound SPI 4096: {nonces}"
                ),
            ),
            (
                site("hub2", "10.3.0.0/16", (5000, K2), (5001, K1), ""),
                format!(
                    "t.toml line 20: tunnel hub2: outbound SPI 5000 has the same key as \
                     tunnel hub inbound SPI 4097: {nonces}"
                ),
            ),
            (
                site(
                    "hub2",
                    "10.3.0.0/16",
                    (5000, K3),
                    (5001, K4),
                    "inbound_extra = [{ spi = 5002, cipher = \"aes128-gcm\", key = \"000102030405060708090a0b0c0d0e0f10111213\" }]\n",
                ),
                format!(
                    "t.toml line 22: tunnel hub2: inbound_extra SPI 5002 has the same key as \
                     tunnel hub outbound SPI 4096: {nonces}"
                ),
            ),
            // A shared key is found before anything else.
            (
                site("hub", "10.2.0.0/16", (4096, K3), (4097, K1), ""),
                format!(
                    "t.toml line 21: tunnel hub: inbound SPI 4097 has the same key as \
                     tunnel hub outbound SPI 4096: {nonces}"
                ),
            ),
            // Then, tunnel by tunnel: the name, the tunnel's own fields, its
            // prefixes, its inbound SPIs.
            (
                site("hub", "10.2.0.0/16", (4096, K3), (4097, K4), ""),
                "t.toml line 16: tunnel hub: listed twice".to_owned(),
            ),
            (
                site("hub2", "10.2.0.0/16", (5000, K3), (4097, K4), ""),
                "t.toml line 19: tunnel hub2: prefix 10.2.0.0/16 is already routed \
                 (an interface subnet or another tunnel)"
                    .to_owned(),
            ),
            (
                site("hub2", "10.3.0.0/16", (5000, K3), (4097, K4), ""),
                "t.toml line 21: tunnel hub2: inbound SPI 4097 is used by another tunnel"
                    .to_owned(),
            ),
            // An extra inbound SA is named at the inbound line too.
            (
                site(
                    "hub2",
                    "10.3.0.0/16",
                    (5000, K3),
                    (5001, K4),
                    "inbound_extra = [{ spi = 4097, cipher = \"aes128-gcm\", key = \"c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3\" }]\n",
                ),
                "t.toml line 21: tunnel hub2: inbound SPI 4097 is used by another tunnel"
                    .to_owned(),
            ),
            // The same SPI outbound in two tunnels is no conflict: the third
            // tunnel (name line 24) is the first at fault.
            (
                format!(
                    "{}{}",
                    site("hub2", "10.3.0.0/16", (4096, K3), (5001, K4), ""),
                    site("hub3", "10.4.0.0/16", (6000, K5), (5001, "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3"), ""),
                ),
                "t.toml line 28: tunnel hub3: inbound SPI 5001 is used by another tunnel"
                    .to_owned(),
            ),
            (
                format!(
                    "{}{}",
                    site("hub2", "10.3.0.0/16", (5000, K3), (5001, K4), ""),
                    site("hub2", "10.4.0.0/16", (6000, K5), (4097, "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3"), ""),
                ),
                "t.toml line 23: tunnel hub2: listed twice".to_owned(),
            ),
        ];
        for (second, want) in cases {
            let err = build(&format!("{hub}{second}")).unwrap_err();
            assert_eq!(err.to_string(), want, "{second}");
        }
        // Distinct names, SPIs and keys build.
        let ok = site("hub2", "10.3.0.0/16", (5000, K3), (5001, K4), "");
        assert!(build(&format!("{hub}{ok}")).is_ok());
    }

    #[test]
    fn a_rebuild_keeps_each_tunnels_sas_by_name() {
        const K: [&str; 4] = [
            "000102030405060708090a0b0c0d0e0f10111213",
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3",
            "5a5b5c5d5e5f606162636465666768696a6b6c6d",
            "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3",
        ];
        let a = site("a", "10.2.0.0/16", (4096, K[0]), (4097, K[1]), "");
        let b = site("b", "10.3.0.0/16", (5000, K[2]), (5001, K[3]), "");
        let config = |text: &str| {
            let mut c = Config::parse(&format!("{BASE}{text}"), "t.toml").unwrap();
            c.engine.state_dir = Some(crate::sastore::test_dir("rebuild"));
            c.engine.manual_keying = true;
            c
        };
        let first =
            Tables::build(&config(&format!("{a}{b}")), "t.toml", 1, 7, None, fake_link).unwrap();
        // Listed the other way round: each tunnel finds its own SAs again.
        let second = Tables::build(
            &config(&format!("{b}{a}")),
            "t.toml",
            2,
            7,
            Some(&first),
            fake_link,
        )
        .unwrap();
        for t in &second.tunnels {
            let old = first.tunnels.iter().find(|o| o.name == t.name).unwrap();
            assert!(Arc::ptr_eq(&t.out_sa, &old.out_sa), "{}", t.name);
            assert!(Arc::ptr_eq(&t.in_specs[0], &old.in_specs[0]), "{}", t.name);
            assert!(
                Arc::ptr_eq(&t.in_states[0], &old.in_states[0]),
                "{}",
                t.name
            );
            assert_ne!(t.id, old.id, "{}", t.name);
        }
    }

    #[test]
    fn tunnel_errors_name_the_line_of_the_field_at_fault() {
        let tunnel = |local: &str, cipher: &str| {
            format!(
                "[[tunnel]]\nname = \"hub\"\nlocal = \"{local}\"\nremote = \"198.51.100.1\"\n\
                 prefixes = [\"10.2.0.0/16\"]\n\
                 outbound = {{ spi = 4096, cipher = \"aes128-gcm\", key = \"{KEY}\" }}\n\
                 inbound = {{ spi = 4097, cipher = \"{cipher}\", key = \"{KEY2}\" }}\n"
            )
        };
        const KEY: &str = "000102030405060708090a0b0c0d0e0f10111213";
        const KEY2: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3";
        // BASE takes 7 lines: [[tunnel]] is line 8, local line 10,
        // inbound line 14.
        let err = build(&tunnel("192.0.2.9", "aes128-gcm")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml line 10: tunnel hub: local 192.0.2.9 is not an address of any interface"
        );
        assert_eq!(err.line(), Some(10));
        let err = build(&tunnel("192.0.2.1", "rot13")).unwrap_err();
        assert_eq!(err.line(), Some(14), "{err}");
        assert!(err.to_string().contains("cipher \"rot13\""), "{err}");
        assert!(build(&tunnel("192.0.2.1", "aes128-gcm")).is_ok());
        // A change made at run time has no line to name.
        let mut c = Config::parse(BASE, "t.toml").unwrap();
        c.routes.push(crate::config::RouteConfig {
            prefix: "10.9.0.0/33".into(),
            via: vec!["192.0.2.254".into()],
            dev: None,
            kind: None,
            spans: Default::default(),
        });
        let err = Tables::build(&c, "t.toml", 1, 7, None, fake_link).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml: route 10.9.0.0/33: prefix length 33 exceeds 32",
            "the prefix is named once"
        );
        assert_eq!(err.line(), None);
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("2:0:0:0:0:a"), None);
        assert_eq!(parse_mac("02:00:00:00:00"), None);
    }
}
