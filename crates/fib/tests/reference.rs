//! The trie against the definition of longest-prefix match: a linear scan of
//! every route, on random tables built and changed through the incremental
//! path, including snapshots taken before later changes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use strait_fib::{Disposition, EgressId, Fib, IpCidr, NextHop, Route, RouteKind, RouteTable};

/// The longest route containing `addr`, by exhaustive search.
fn reference(routes: &HashMap<IpCidr, RouteKind>, addr: IpAddr, hash: u32) -> Option<Disposition> {
    let (_, kind) = routes
        .iter()
        .filter(|(p, _)| p.contains_addr(addr))
        .max_by_key(|(p, _)| p.prefix_len())?;
    Some(match *kind {
        RouteKind::Connected { egress } => Disposition::Forward(NextHop::on_link(egress)),
        RouteKind::Static { next_hops } => Disposition::Forward(next_hops.select(hash)),
        RouteKind::Local => Disposition::Local,
        RouteKind::Blackhole => Disposition::Blackhole,
        RouteKind::Unreachable => Disposition::Unreachable,
    })
}

#[derive(Debug, Clone)]
enum Change {
    Insert(Route),
    Remove(IpCidr),
}

/// Route behaviours drawn from a small pool so that routes share actions,
/// as they do in real tables.
fn kind() -> impl Strategy<Value = RouteKind> + Clone {
    prop_oneof![
        (0u16..4).prop_map(|e| RouteKind::Connected {
            egress: EgressId(e)
        }),
        (1usize..=4, 0u8..3).prop_map(|(n, g)| {
            let hops: Vec<_> = (0..n)
                .map(|i| {
                    NextHop::via(
                        EgressId(i as u16),
                        IpAddr::V4(Ipv4Addr::new(192, 0, 2, g * 4 + i as u8)),
                    )
                })
                .collect();
            Route::ecmp(IpCidr::ANY_V4, &hops).unwrap().kind
        }),
        Just(RouteKind::Local),
        Just(RouteKind::Blackhole),
        Just(RouteKind::Unreachable),
    ]
}

/// IPv4 prefixes clustered under a few bases so that they nest and overlap
/// at every level of the trie (root, /16../24, /24../32).
fn v4_prefix() -> impl Strategy<Value = IpCidr> + Clone {
    (0usize..3, any::<u32>(), 0u8..=32).prop_map(|(base, noise, len)| {
        let bases = [0x0a00_0000u32, 0x0a01_0000, 0xc0a8_0100];
        // Vary mostly the low bits: lengths near the node boundaries collide.
        let addr = bases[base] ^ (noise & 0x0003_ffff) ^ (noise & 0x8000_0000);
        IpCidr::new_truncated(IpAddr::V4(Ipv4Addr::from(addr)), len).unwrap()
    })
}

fn v6_prefix() -> impl Strategy<Value = IpCidr> + Clone {
    (0usize..2, any::<u128>(), 0u8..=128).prop_map(|(base, noise, len)| {
        let bases = [0x2001_0db8u128 << 96, 0x2001_0db8_00aa_u128 << 80];
        let addr = bases[base]
            ^ (noise & 0xffff_ffff_0000_0000_0000_ffff_ff00_00ffu128.rotate_right(base as u32 * 8));
        IpCidr::new_truncated(IpAddr::V6(Ipv6Addr::from(addr)), len).unwrap()
    })
}

fn change(prefix: impl Strategy<Value = IpCidr> + Clone) -> impl Strategy<Value = Change> + Clone {
    prop_oneof![
        3 => (prefix.clone(), kind()).prop_map(|(prefix, kind)| Change::Insert(Route { prefix, kind })),
        2 => prefix.prop_map(Change::Remove),
    ]
}

/// Addresses at and around every prefix boundary, plus random ones.
fn probes(routes: &HashMap<IpCidr, RouteKind>, extra: &[IpAddr]) -> Vec<IpAddr> {
    let mut out = extra.to_vec();
    for p in routes.keys() {
        match p.network() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                let size = if p.prefix_len() == 0 {
                    u32::MAX
                } else {
                    (1u32 << (32 - p.prefix_len())) - 1
                };
                for x in [
                    a,
                    a.wrapping_sub(1),
                    a.wrapping_add(size),
                    a.wrapping_add(size).wrapping_add(1),
                    a | (size / 3),
                ] {
                    out.push(IpAddr::V4(Ipv4Addr::from(x)));
                }
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                let size = if p.prefix_len() == 0 {
                    u128::MAX
                } else {
                    (1u128 << (128 - p.prefix_len())) - 1
                };
                for x in [
                    a,
                    a.wrapping_sub(1),
                    a.wrapping_add(size),
                    a.wrapping_add(size).wrapping_add(1),
                    a | (size / 3),
                ] {
                    out.push(IpAddr::V6(Ipv6Addr::from(x)));
                }
            }
        }
    }
    out
}

fn check(
    fib: &Fib,
    routes: &HashMap<IpCidr, RouteKind>,
    addrs: &[IpAddr],
) -> Result<(), TestCaseError> {
    let hash = |i: usize| (i as u32).wrapping_mul(0x9e37_79b9);
    for (i, &addr) in addrs.iter().enumerate() {
        prop_assert_eq!(
            fib.lookup(addr, hash(i)),
            reference(routes, addr, hash(i)),
            "address {}",
            addr
        );
    }
    // The batched walk answers exactly as the single one.
    let v4: Vec<Ipv4Addr> = addrs
        .iter()
        .filter_map(|a| {
            if let IpAddr::V4(a) = a {
                Some(*a)
            } else {
                None
            }
        })
        .collect();
    let v6: Vec<Ipv6Addr> = addrs
        .iter()
        .filter_map(|a| {
            if let IpAddr::V6(a) = a {
                Some(*a)
            } else {
                None
            }
        })
        .collect();
    for (c, batch) in v4.chunks_exact(8).enumerate() {
        let batch: [Ipv4Addr; 8] = batch.try_into().unwrap();
        let hashes: [u32; 8] = core::array::from_fn(|i| hash(c * 8 + i));
        let got = fib.lookup_batch_v4(&batch, &hashes);
        for i in 0..8 {
            prop_assert_eq!(got[i], fib.lookup_v4(batch[i], hashes[i]));
        }
    }
    for (c, batch) in v6.chunks_exact(8).enumerate() {
        let batch: [Ipv6Addr; 8] = batch.try_into().unwrap();
        let hashes: [u32; 8] = core::array::from_fn(|i| hash(c * 8 + i));
        let got = fib.lookup_batch_v6(&batch, &hashes);
        for i in 0..8 {
            prop_assert_eq!(got[i], fib.lookup_v6(batch[i], hashes[i]));
        }
    }
    Ok(())
}

fn run(changes: Vec<Change>, extra: Vec<IpAddr>) -> Result<(), TestCaseError> {
    let mut table = RouteTable::new();
    let mut model: HashMap<IpCidr, RouteKind> = HashMap::new();
    let mut history: Vec<(Fib, HashMap<IpCidr, RouteKind>)> = Vec::new();
    for (step, change) in changes.into_iter().enumerate() {
        match change {
            Change::Insert(route) => {
                let old = model.insert(route.prefix, route.kind);
                let got = table.insert(route).map(|r| r.kind);
                prop_assert_eq!(got, old);
            }
            Change::Remove(prefix) => {
                let old = model.remove(&prefix);
                prop_assert_eq!(table.remove(prefix).map(|r| r.kind), old);
            }
        }
        if step % 4 == 0 {
            history.push((table.snapshot(), model.clone()));
        }
    }
    let fib = table.snapshot();
    let addrs = probes(&model, &extra);
    check(&fib, &model, &addrs)?;
    prop_assert_eq!(table.len(), model.len());
    // Older snapshots still answer as the table did when they were taken.
    for (old, old_model) in &history {
        check(old, old_model, &probes(old_model, &extra))?;
    }
    // Withdrawing everything leaves no nodes behind.
    let prefixes: Vec<_> = model.keys().copied().collect();
    for p in prefixes {
        prop_assert!(table.remove(p).is_some());
    }
    let stats = table.stats();
    prop_assert_eq!(
        (stats.routes, stats.actions, stats.v4_nodes, stats.v6_nodes),
        (0, 0, 0, 0)
    );
    check(&table.snapshot(), &HashMap::new(), &addrs)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ipv4_matches_linear_scan(
        changes in prop::collection::vec(change(v4_prefix()), 1..120),
        extra in prop::collection::vec(any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))), 32),
    ) {
        run(changes, extra)?;
    }

    #[test]
    fn ipv6_matches_linear_scan(
        changes in prop::collection::vec(change(v6_prefix()), 1..120),
        extra in prop::collection::vec(any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))), 32),
    ) {
        run(changes, extra)?;
    }

    #[test]
    fn mixed_families_match_linear_scan(
        changes in prop::collection::vec(prop_oneof![change(v4_prefix()), change(v6_prefix())], 1..80),
    ) {
        run(changes, vec![])?;
    }
}
