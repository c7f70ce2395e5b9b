//! Static routes from `[[route]]`: gateways (ECMP up to the FIB's limit),
//! on-link routes, blackhole and unreachable.

use std::net::IpAddr;

use strait_fib::{EgressId, IpCidr, NextHop, Route, RouteTable};

use super::port::{connected_port, port_of, Port};
use crate::config::{Config, ConfigError, Invalid};

/// Adds the configured routes to `routes`; a prefix routed already (an
/// interface subnet, a tunnel prefix, a duplicate) is refused.
pub(super) fn add_static(
    config: &Config,
    invalid: &Invalid<'_>,
    ports: &[Port],
    routes: &mut RouteTable,
) -> Result<(), ConfigError> {
    let outer = invalid;
    for rc in &config.routes {
        let item = format!("route {}", rc.prefix);
        // `field`: the one at fault, whose line the error names.
        let invalid = |field: &str, item: String, reason: String| {
            outer.at(rc.spans.span(field), item, reason)
        };
        let prefix: IpCidr = rc
            .prefix
            .parse()
            .map_err(|e: strait_fib::CidrError| invalid("prefix", item.clone(), e.reason()))?;
        let route = match rc.kind.as_deref() {
            Some("blackhole") | Some("unreachable") if !rc.via.is_empty() || rc.dev.is_some() => {
                return Err(invalid(
                    "kind",
                    item,
                    "kind blackhole or unreachable takes no via or dev".into(),
                ))
            }
            Some("blackhole") => Route::blackhole(prefix),
            Some("unreachable") => Route::unreachable(prefix),
            Some(other) => {
                return Err(invalid(
                    "kind",
                    item,
                    format!("kind {other:?} is not one of blackhole, unreachable"),
                ))
            }
            None => {
                let dev = match &rc.dev {
                    Some(d) => Some(port_of(ports, d).ok_or_else(|| {
                        invalid(
                            "dev",
                            item.clone(),
                            format!("dev {d} is not a configured interface"),
                        )
                    })?),
                    None => None,
                };
                if rc.via.is_empty() {
                    let Some(dev) = dev else {
                        return Err(invalid(
                            "prefix",
                            item,
                            "needs via (gateways) or dev (on-link)".into(),
                        ));
                    };
                    Route::connected(prefix, EgressId(dev))
                } else {
                    let mut hops = Vec::with_capacity(rc.via.len());
                    for gw in &rc.via {
                        let gw: IpAddr = gw.parse().map_err(|_| {
                            invalid(
                                "via",
                                item.clone(),
                                format!("via {gw} is not an IP address"),
                            )
                        })?;
                        if gw.is_ipv4() != prefix.is_ipv4() {
                            return Err(invalid(
                                "via",
                                item.clone(),
                                format!("via {gw} is not of the prefix's address family"),
                            ));
                        }
                        let egress = match dev {
                            Some(d) => d,
                            None => connected_port(ports, gw).ok_or_else(|| {
                                invalid(
                                    "via",
                                    item.clone(),
                                    format!("gateway {gw} is not on any interface's subnet"),
                                )
                            })?,
                        };
                        hops.push(NextHop::via(EgressId(egress), gw));
                    }
                    Route::ecmp(prefix, &hops)
                        .map_err(|e| invalid("prefix", item.clone(), e.to_string()))?
                }
            }
        };
        if routes.get(prefix).is_some() {
            return Err(invalid(
                "prefix",
                item,
                "prefix already routed (a duplicate route or an interface's own subnet)".into(),
            ));
        }
        routes.insert(route);
    }
    Ok(())
}
