//! Text descriptions of test topologies.
//!
//! One statement per line, `#` starts a comment:
//!
//! ```text
//! ns lan                          # a namespace, short name "lan"
//! ns vcpe
//! link lan:eth0 vcpe:lan          # a veth pair between two namespaces
//! addr lan:eth0 10.0.1.2/24       # an address on an interface
//! route lan default via 10.0.1.1  # `ip route add` arguments
//! sysctl vcpe net.ipv4.ip_forward=1
//! offload-off lan:eth0            # ethtool -K eth0 tx off
//! exec vcpe nft -f rules.nft      # any command, run once at build time
//! ```

use std::collections::BTreeMap;

use crate::{Netns, Testbed};

/// A refused description line.
#[derive(Debug, thiserror::Error)]
#[error("topology line {line}: {reason}")]
pub struct TopologyError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Link((String, String), (String, String)),
    Addr(String, String, String),
    Route(String, Vec<String>),
    Sysctl(String, String, String),
    OffloadOff(String, String),
    Exec(String, Vec<String>),
}

/// A parsed topology, ready to build inside a [`Testbed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    namespaces: Vec<String>,
    steps: Vec<(usize, Step)>,
}

fn endpoint(word: &str, line: usize, known: &[String]) -> Result<(String, String), TopologyError> {
    let (ns, ifname) = word.split_once(':').ok_or_else(|| TopologyError {
        line,
        reason: format!("{word:?} is not <namespace>:<interface>"),
    })?;
    check_ns(ns, line, known)?;
    if ifname.is_empty() || ifname.len() > 15 {
        return Err(TopologyError {
            line,
            reason: format!("interface name {ifname:?} must be 1 to 15 characters"),
        });
    }
    Ok((ns.to_owned(), ifname.to_owned()))
}

fn check_ns(ns: &str, line: usize, known: &[String]) -> Result<(), TopologyError> {
    if known.iter().any(|k| k == ns) {
        Ok(())
    } else {
        Err(TopologyError {
            line,
            reason: format!("namespace {ns:?} is not declared with `ns {ns}` above"),
        })
    }
}

impl Topology {
    /// Parses a description; the error names the line and the reason.
    pub fn parse(text: &str) -> Result<Topology, TopologyError> {
        let mut namespaces: Vec<String> = Vec::new();
        let mut steps = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let body = raw.split('#').next().unwrap_or("");
            let words: Vec<&str> = body.split_whitespace().collect();
            let Some((&verb, args)) = words.split_first() else {
                continue;
            };
            let need = |n: usize| {
                if args.len() < n {
                    Err(TopologyError {
                        line,
                        reason: format!("`{verb}` needs {n} argument(s), got {}", args.len()),
                    })
                } else {
                    Ok(())
                }
            };
            match verb {
                "ns" => {
                    need(1)?;
                    let name = args[0];
                    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                        return Err(TopologyError {
                            line,
                            reason: format!("namespace name {name:?} may hold only letters, digits and '-'"),
                        });
                    }
                    if namespaces.iter().any(|n| n == name) {
                        return Err(TopologyError {
                            line,
                            reason: format!("namespace {name:?} declared twice"),
                        });
                    }
                    namespaces.push(name.to_owned());
                }
                "link" => {
                    need(2)?;
                    let a = endpoint(args[0], line, &namespaces)?;
                    let b = endpoint(args[1], line, &namespaces)?;
                    steps.push((line, Step::Link(a, b)));
                }
                "addr" => {
                    need(2)?;
                    let (ns, ifname) = endpoint(args[0], line, &namespaces)?;
                    steps.push((line, Step::Addr(ns, ifname, args[1].to_owned())));
                }
                "route" => {
                    need(2)?;
                    check_ns(args[0], line, &namespaces)?;
                    let spec = args[1..].iter().map(|s| s.to_string()).collect();
                    steps.push((line, Step::Route(args[0].to_owned(), spec)));
                }
                "sysctl" => {
                    need(2)?;
                    check_ns(args[0], line, &namespaces)?;
                    let (k, v) = args[1].split_once('=').ok_or_else(|| TopologyError {
                        line,
                        reason: format!("{:?} is not key=value", args[1]),
                    })?;
                    steps.push((line, Step::Sysctl(args[0].to_owned(), k.to_owned(), v.to_owned())));
                }
                "offload-off" => {
                    need(1)?;
                    let (ns, ifname) = endpoint(args[0], line, &namespaces)?;
                    steps.push((line, Step::OffloadOff(ns, ifname)));
                }
                "exec" => {
                    need(2)?;
                    check_ns(args[0], line, &namespaces)?;
                    let argv = args[1..].iter().map(|s| s.to_string()).collect();
                    steps.push((line, Step::Exec(args[0].to_owned(), argv)));
                }
                other => {
                    return Err(TopologyError {
                        line,
                        reason: format!(
                            "unknown statement {other:?} (expected ns, link, addr, route, sysctl, offload-off or exec)"
                        ),
                    })
                }
            }
        }
        Ok(Topology { namespaces, steps })
    }

    /// Short names of the namespaces, in declaration order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Creates everything in `tb`; returns the namespaces by short name.
    pub fn build(&self, tb: &mut Testbed) -> crate::Result<BTreeMap<String, Netns>> {
        let mut map = BTreeMap::new();
        for short in &self.namespaces {
            map.insert(short.clone(), tb.netns(short)?);
        }
        for (_, step) in &self.steps {
            match step {
                Step::Link((na, ia), (nb, ib)) => tb.veth((&map[na], ia), (&map[nb], ib))?,
                Step::Addr(ns, ifname, cidr) => map[ns].addr(ifname, cidr)?,
                Step::Route(ns, spec) => {
                    let spec: Vec<&str> = spec.iter().map(String::as_str).collect();
                    map[ns].route(&spec)?
                }
                Step::Sysctl(ns, k, v) => map[ns].sysctl(k, v)?,
                Step::OffloadOff(ns, ifname) => map[ns].disable_tx_offload(ifname)?,
                Step::Exec(ns, argv) => {
                    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                    map[ns].run(&argv).map(drop)?
                }
            }
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_description() {
        let t = Topology::parse(
            "ns a\nns b # two hosts\n\nlink a:eth0 b:eth0\naddr a:eth0 10.0.0.1/24\n\
             route a default via 10.0.0.2\nsysctl b net.ipv4.ip_forward=1\noffload-off a:eth0\n\
             exec b true\n",
        )
        .unwrap();
        assert_eq!(t.namespaces(), ["a", "b"]);
        assert_eq!(t.steps.len(), 6);
    }

    #[test]
    fn refuses_bad_lines_with_their_number() {
        let cases = [
            ("ns a\nlink a:eth0 b:eth0", 2, "not declared"),
            ("ns a\nns a", 2, "declared twice"),
            ("ns a\naddr a 10.0.0.1/24", 2, "<namespace>:<interface>"),
            ("ns a\nlink a:averyveryverylongname a:x", 2, "1 to 15"),
            ("ns a\nsysctl a net.ipv4.ip_forward", 2, "key=value"),
            ("bridge x", 1, "unknown statement"),
            ("ns a\nroute a", 2, "needs 2"),
            ("ns a/b", 1, "only letters"),
        ];
        for (text, line, reason) in cases {
            let err = Topology::parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}");
            assert!(err.reason.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn builds_and_forwards_through_a_router() {
        crate::require_root();
        crate::require_program("ping", "iputils-ping");
        let t = Topology::parse(
            "ns h1\nns r\nns h2\nlink h1:eth0 r:left\nlink r:right h2:eth0\n\
             addr h1:eth0 198.51.100.2/24\naddr r:left 198.51.100.1/24\n\
             addr r:right 203.0.113.1/24\naddr h2:eth0 203.0.113.2/24\n\
             route h1 default via 198.51.100.1\nroute h2 default via 203.0.113.1\n\
             sysctl r net.ipv4.ip_forward=1\n",
        )
        .unwrap();
        let mut tb = Testbed::new("topo");
        let ns = t.build(&mut tb).unwrap();
        ns["h1"]
            .run(&["ping", "-c", "1", "-W", "2", "203.0.113.2"])
            .unwrap();
    }
}
