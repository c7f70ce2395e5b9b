//! `[[load_balancer]]` compiled into DNAT rules that pick their backend
//! with a Maglev table (`strait_nat::maglev`), built here on the control
//! side over the backends that are up and not drained, and published with
//! the rest of the NAT rule snapshot. A health change or a drain is a new
//! build of the tables (`Engine::set_lb_backend`): the workers pick up the
//! new table with the snapshot, without a lock, and keep their sessions,
//! so an established flow stays on its backend whatever the membership
//! does.

use std::net::Ipv4Addr;
use std::sync::Arc;

use strait_nat::maglev::{MaglevBackend, MaglevTable, DEFAULT_TABLE_SIZE};
use strait_nat::{BackendSelection, DnatRule, Endpoint, Protocol, RuleId};

use super::nat::{endpoint, NatConfigError};
use crate::config::{AllDownConfig, CheckKindConfig, Config, LoadBalancerConfig};

/// Identifiers of load-balancer rules start here, apart from `[[nat]]`'s
/// (numbered from 1), so each keeps its own across reloads.
const FIRST_ID: u16 = 0xf000;

/// One backend as the tables hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbBackendInfo {
    /// Address and port.
    pub endpoint: Endpoint,
    /// Weight.
    pub weight: u32,
    /// Health as last reported (true without a check).
    pub up: bool,
    /// Drained by the operator.
    pub drained: bool,
    /// Slots of the Maglev table it holds (0: no new flows).
    pub slots: u32,
    /// Live sessions to it, counted from the workers' published session
    /// snapshots by `Engine::load_balancers` (0 in the tables).
    pub sessions: usize,
}

/// A compiled service.
#[derive(Debug, Clone)]
pub struct LbInfo {
    /// The NAT rule implementing it.
    pub id: RuleId,
    /// The configured name.
    pub name: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The virtual endpoint.
    pub address: Endpoint,
    /// Backends in configuration order.
    pub backends: Vec<LbBackendInfo>,
    /// The table in force.
    pub table: Arc<MaglevTable>,
    /// Every backend is down or drained and the last table with one is
    /// kept (`when_all_down = "keep-last"`).
    pub keeping_last: bool,
    /// Packets to the backends leave from Strait's address towards them.
    pub full_nat: bool,
}

/// The NAT rule name of a service (shown with its sessions).
pub fn rule_name(service: &str) -> String {
    format!("lb/{service}")
}

/// Identifiers for the services, kept by name from `previous`.
pub fn assign_ids(config: &Config, previous: &[LbInfo]) -> Result<Vec<RuleId>, NatConfigError> {
    let mut ids: Vec<RuleId> = Vec::with_capacity(config.load_balancers.len());
    for lb in &config.load_balancers {
        let kept = previous
            .iter()
            .find(|p| p.name == lb.name)
            .map(|p| p.id)
            .filter(|id| !ids.contains(id));
        let id = match kept {
            Some(id) => id,
            None => (FIRST_ID..=u16::MAX)
                .map(RuleId)
                .find(|id| {
                    !ids.contains(id)
                        && !previous.iter().any(|p| {
                            p.id == *id && config.load_balancers.iter().any(|c| c.name == p.name)
                        })
                })
                .ok_or_else(|| {
                    (
                        item(&lb.name),
                        Some("name"),
                        "too many load balancers".to_owned(),
                    )
                })?,
        };
        ids.push(id);
    }
    Ok(ids)
}

fn item(name: &str) -> String {
    format!("load balancer {name}")
}

/// Compiles every service: its DNAT rule and what operators see.
pub fn build(
    config: &Config,
    ids: &[RuleId],
    previous: &[LbInfo],
) -> Result<(Vec<DnatRule>, Vec<LbInfo>), NatConfigError> {
    let mut rules = Vec::with_capacity(config.load_balancers.len());
    let mut infos: Vec<LbInfo> = Vec::with_capacity(config.load_balancers.len());
    for (i, lb) in config.load_balancers.iter().enumerate() {
        let info = compile(lb, ids[i], previous)?;
        if config.load_balancers[..i].iter().any(|o| o.name == lb.name) {
            return Err((item(&lb.name), Some("name"), "listed twice".into()));
        }
        rules.push(DnatRule {
            id: info.id,
            protocol: info.protocol,
            public: info.address,
            backends: info.backends.iter().map(|b| b.endpoint).collect(),
            selection: BackendSelection::Maglev(Arc::clone(&info.table)),
            full_nat: info.full_nat,
        });
        infos.push(info);
    }
    Ok((rules, infos))
}

fn compile(
    lb: &LoadBalancerConfig,
    id: RuleId,
    previous: &[LbInfo],
) -> Result<LbInfo, NatConfigError> {
    let it = || item(&lb.name);
    if lb.name.is_empty() || lb.name.contains(char::is_whitespace) {
        return Err((it(), Some("name"), "name is empty or has spaces".into()));
    }
    let protocol = match lb.protocol.as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            let reason = format!("protocol {other:?} is not tcp or udp");
            return Err((it(), Some("protocol"), reason));
        }
    };
    let address = endpoint(&lb.address).map_err(|r| (it(), Some("address"), r))?;
    if lb.backends.is_empty() {
        return Err((it(), Some("backends"), "needs at least one backend".into()));
    }
    let mut backends: Vec<LbBackendInfo> = Vec::with_capacity(lb.backends.len());
    for b in &lb.backends {
        let endpoint =
            endpoint(&b.address).map_err(|r| (it(), Some("backends"), format!("backend: {r}")))?;
        if backends.iter().any(|o| o.endpoint == endpoint) {
            let reason = format!("backend {endpoint} listed twice");
            return Err((it(), Some("backends"), reason));
        }
        if !(1..=65_535).contains(&b.weight) {
            let reason = format!("backend {endpoint}: weight {} is not 1-65535", b.weight);
            return Err((it(), Some("backends"), reason));
        }
        backends.push(LbBackendInfo {
            endpoint,
            weight: b.weight,
            up: b.up,
            drained: b.drained,
            slots: 0,
            sessions: 0,
        });
    }
    if let Some(check) = &lb.check {
        check_check(lb, check).map_err(|r| (it(), Some("check"), r))?;
    }
    let size = lb.table_size.unwrap_or(DEFAULT_TABLE_SIZE);
    let members: Vec<MaglevBackend> = backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.up && !b.drained)
        .map(|(i, b)| MaglevBackend {
            endpoint: b.endpoint,
            weight: b.weight,
            index: i as u16,
        })
        .collect();
    let mut table = MaglevTable::build(size, &members)
        .map(Arc::new)
        .map_err(|e| (it(), Some("table_size"), e.to_string()))?;
    let mut keeping_last = false;
    if table.is_empty() && lb.when_all_down == AllDownConfig::KeepLast {
        // The last table that had a backend, if it named the same
        // backends in the same order (its indices are into that list).
        if let Some(prev) = previous.iter().find(|p| {
            p.name == lb.name
                && p.table.size() == size
                && !p.table.is_empty()
                && p.backends
                    .iter()
                    .map(|b| b.endpoint)
                    .eq(backends.iter().map(|b| b.endpoint))
        }) {
            table = Arc::clone(&prev.table);
            keeping_last = true;
        }
    }
    for (i, n) in table.shares() {
        if let Some(b) = backends.get_mut(usize::from(i)) {
            b.slots = n;
        }
    }
    Ok(LbInfo {
        id,
        name: lb.name.clone(),
        protocol,
        address,
        backends,
        table,
        keeping_last,
        full_nat: lb.full_nat,
    })
}

fn check_check(
    lb: &LoadBalancerConfig,
    c: &crate::config::HealthCheckConfig,
) -> Result<(), String> {
    if c.interval_ms < 100 || c.interval_ms > 3_600_000 {
        return Err(format!(
            "check interval_ms {} is not 100-3600000",
            c.interval_ms
        ));
    }
    if c.timeout_ms == 0 || c.timeout_ms > c.interval_ms {
        return Err(format!(
            "check timeout_ms {} must be between 1 and interval_ms ({})",
            c.timeout_ms, c.interval_ms
        ));
    }
    if c.rise == 0 || c.fall == 0 || c.rise > 100 || c.fall > 100 {
        return Err("check rise and fall must be 1-100".into());
    }
    if c.port == Some(0) {
        return Err("check port 0".into());
    }
    match c.kind {
        CheckKindConfig::Http => {
            if lb.protocol != "tcp" && c.port.is_none() {
                return Err("an http check of a udp service needs port".into());
            }
            if !c.path.starts_with('/') || c.path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(format!(
                    "check path {:?} must start with / and have no spaces or controls",
                    c.path
                ));
            }
            if !(100..=599).contains(&c.expect_status) {
                return Err(format!(
                    "check expect_status {} is not 100-599",
                    c.expect_status
                ));
            }
        }
        CheckKindConfig::Tcp => {
            if lb.protocol != "tcp" && c.port.is_none() {
                return Err("a tcp check of a udp service needs port".into());
            }
        }
        CheckKindConfig::Dns => {
            if let Some(name) = &c.dns_name {
                if name.len() > 253 || name.split('.').any(|l| l.len() > 63) {
                    return Err(format!("check dns_name {name:?} is not a DNS name"));
                }
            }
        }
    }
    if c.kind != CheckKindConfig::Http
        && (c.expect_body.is_some() || c.path != "/" || c.expect_status != 200)
    {
        return Err("path, expect_status and expect_body apply to http checks".into());
    }
    if c.kind != CheckKindConfig::Dns && c.dns_name.is_some() {
        return Err("dns_name applies to dns checks".into());
    }
    if let Some(s) = &c.source {
        s.parse::<Ipv4Addr>()
            .map_err(|_| format!("check source {s:?} is not an IPv4 address"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, "lb.toml").unwrap()
    }

    const THREE: &str = r#"
[[load_balancer]]
name = "web"
protocol = "tcp"
address = "192.0.2.10:80"
backends = [
  { address = "10.1.0.2:8000", weight = 1 },
  { address = "10.2.0.2:8000", weight = 2 },
  { address = "10.3.0.2:8000" },
]
"#;

    #[test]
    fn compiles_a_service_with_weighted_slots() {
        let c = config(THREE);
        let ids = assign_ids(&c, &[]).unwrap();
        let (rules, infos) = build(&c, &ids, &[]).unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(infos[0].id, RuleId(FIRST_ID));
        let slots: Vec<u32> = infos[0].backends.iter().map(|b| b.slots).collect();
        assert_eq!(slots.iter().sum::<u32>(), DEFAULT_TABLE_SIZE);
        assert!(slots[1] > slots[0] * 19 / 10 && slots[1] > slots[2] * 19 / 10);
    }

    #[test]
    fn down_and_drained_backends_leave_the_table_and_keep_last_holds() {
        let mut c = config(THREE);
        c.load_balancers[0].backends[0].up = false;
        c.load_balancers[0].backends[1].drained = true;
        let ids = assign_ids(&c, &[]).unwrap();
        let (_, infos) = build(&c, &ids, &[]).unwrap();
        let slots: Vec<u32> = infos[0].backends.iter().map(|b| b.slots).collect();
        assert_eq!(slots, vec![0, 0, DEFAULT_TABLE_SIZE]);
        c.load_balancers[0].backends[2].up = false;
        let (_, rejecting) = build(&c, &ids, &infos).unwrap();
        assert!(rejecting[0].table.is_empty());
        c.load_balancers[0].when_all_down = AllDownConfig::KeepLast;
        let (_, kept) = build(&c, &ids, &infos).unwrap();
        assert!(kept[0].keeping_last);
        assert_eq!(kept[0].backends[2].slots, DEFAULT_TABLE_SIZE);
    }

    #[test]
    fn bad_services_are_refused_with_the_field() {
        let bad = |text: &str| {
            let c = config(text);
            let ids = assign_ids(&c, &[]).unwrap();
            build(&c, &ids, &[]).unwrap_err()
        };
        let e = bad(&THREE.replace("\"tcp\"", "\"sctp\""));
        assert_eq!(e.1, Some("protocol"));
        let e = bad(&THREE.replace("10.3.0.2:8000", "10.1.0.2:8000"));
        assert!(e.2.contains("listed twice"), "{e:?}");
        let e = bad(&format!("{THREE}table_size = 65536\n"));
        assert_eq!(e.1, Some("table_size"));
        let e = bad(&format!(
            "{THREE}[load_balancer.check]\nkind = \"tcp\"\ninterval_ms = 100\ntimeout_ms = 200\n"
        ));
        assert_eq!(e.1, Some("check"));
    }
}
