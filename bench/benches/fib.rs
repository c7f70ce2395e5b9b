//! FIB benchmarks: longest-prefix-match lookups on 100k-route IPv4 and IPv6
//! tables, and the cost of one live route change plus a new snapshot.
//!
//! Run: `cargo bench -p strait-bench --bench fib -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strait_fib::{EgressId, Fib, IpCidr, NextHop, Route, RouteTable};

const ROUTES: usize = 100_000;
/// Probe addresses per benchmark: larger than the caches would hold if the
/// table were tiny, so lookups see realistic misses.
const PROBES: usize = 1 << 20;

/// xorshift64*: deterministic tables across runs, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Route behaviours a real edge table has: a few gateways, some ECMP groups,
/// connected subnets. Routes share them.
fn kind_for(rng: &mut Rng, prefix: IpCidr) -> Route {
    let gw = |i: u64| {
        NextHop::via(
            EgressId(i as u16 % 4),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8)),
        )
    };
    match rng.below(10) {
        0 => Route::connected(prefix, EgressId(rng.below(4) as u16)),
        1 | 2 => {
            let n = 2 + rng.below(3);
            let first = rng.below(8) * 4;
            let hops: Vec<_> = (0..n).map(|i| gw(first + i)).collect();
            Route::ecmp(prefix, &hops).expect("2..=4 next hops")
        }
        _ => Route::via(
            prefix,
            EgressId(rng.below(4) as u16),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, rng.below(32) as u8)),
        ),
    }
}

/// IPv4 prefix lengths of an Internet-like table: mostly /24, a spread of
/// /8../23, a few more-specifics and host routes.
fn v4_len(rng: &mut Rng) -> u8 {
    match rng.below(100) {
        0..=54 => 24,
        55..=74 => 17 + rng.below(7) as u8,
        75..=86 => 8 + rng.below(9) as u8,
        87..=91 => 25 + rng.below(7) as u8,
        _ => 32,
    }
}

/// IPv6 lengths: mostly /48, with /32../44 allocations, /56, /64 and hosts,
/// all inside 2000::/3 (global unicast).
fn v6_len(rng: &mut Rng) -> u8 {
    match rng.below(100) {
        0..=4 => 32,
        5..=19 => 36 + 4 * rng.below(3) as u8,
        20..=69 => 48,
        70..=84 => 56,
        85..=94 => 64,
        _ => 128,
    }
}

fn v4_prefix(rng: &mut Rng) -> IpCidr {
    let len = v4_len(rng);
    IpCidr::new_truncated(IpAddr::V4(Ipv4Addr::from(rng.next() as u32)), len).expect("len <= 32")
}

fn v6_prefix(rng: &mut Rng) -> IpCidr {
    let len = v6_len(rng);
    let addr = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 3 | 1u128 << 125;
    IpCidr::new_truncated(IpAddr::V6(Ipv6Addr::from(addr)), len).expect("len <= 128")
}

/// A random address inside `prefix`.
fn inside(rng: &mut Rng, prefix: IpCidr) -> IpAddr {
    match prefix {
        IpCidr::V4(c) => {
            let host = !u32::from(c.netmask());
            IpAddr::V4(Ipv4Addr::from(
                u32::from(c.network()) | (rng.next() as u32 & host),
            ))
        }
        IpCidr::V6(c) => {
            let host = !u128::from(c.netmask());
            let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
            IpAddr::V6(Ipv6Addr::from(u128::from(c.network()) | (r & host)))
        }
    }
}

struct Setup {
    table: RouteTable,
    prefixes: Vec<IpCidr>,
}

fn build(name: &str, rng: &mut Rng, prefix: fn(&mut Rng) -> IpCidr) -> Setup {
    let started = Instant::now();
    let mut table = RouteTable::new();
    let mut prefixes = Vec::with_capacity(ROUTES);
    while table.len() < ROUTES {
        let p = prefix(rng);
        if table.insert(kind_for(rng, p)).is_none() {
            prefixes.push(p);
        }
    }
    let stats = table.stats();
    eprintln!(
        "{name}: built {} routes in {:.0} ms; {} actions, {} v4 nodes, {} v6 nodes, {:.1} MiB",
        stats.routes,
        started.elapsed().as_secs_f64() * 1e3,
        stats.actions,
        stats.v4_nodes,
        stats.v6_nodes,
        stats.bytes as f64 / (1024.0 * 1024.0)
    );
    Setup { table, prefixes }
}

fn bench_lookups(c: &mut Criterion, family: &str, fib: &Fib, random: &[IpAddr], routed: &[IpAddr]) {
    let mut group = c.benchmark_group(format!("fib/{family}/100k"));
    for (name, probes) in [
        ("lookup_random_address", random),
        ("lookup_routed_address", routed),
    ] {
        group.bench_function(name, |b| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & (PROBES - 1);
                black_box(fib.lookup(black_box(probes[i]), i as u32))
            })
        });
    }
    // The dataplane's way: a batch of destinations walked in lockstep.
    const BATCH: usize = 16;
    let hashes: [u32; BATCH] = core::array::from_fn(|i| (i as u32).wrapping_mul(0x9e37_79b9));
    group.throughput(Throughput::Elements(BATCH as u64));
    match routed[0] {
        IpAddr::V4(_) => {
            let routed: Vec<Ipv4Addr> = routed
                .iter()
                .map(|a| match a {
                    IpAddr::V4(a) => *a,
                    IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                })
                .collect();
            group.bench_function("lookup_routed_address_batch16", |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + BATCH) & (PROBES - 1);
                    let batch: &[Ipv4Addr; BATCH] =
                        routed[i..i + BATCH].try_into().expect("16 addresses");
                    black_box(fib.lookup_batch_v4(black_box(batch), &hashes))
                })
            });
        }
        IpAddr::V6(_) => {
            let routed: Vec<Ipv6Addr> = routed
                .iter()
                .map(|a| match a {
                    IpAddr::V6(a) => *a,
                    IpAddr::V4(_) => Ipv6Addr::UNSPECIFIED,
                })
                .collect();
            group.bench_function("lookup_routed_address_batch16", |b| {
                let mut i = 0usize;
                b.iter(|| {
                    i = (i + BATCH) & (PROBES - 1);
                    let batch: &[Ipv6Addr; BATCH] =
                        routed[i..i + BATCH].try_into().expect("16 addresses");
                    black_box(fib.lookup_batch_v6(black_box(batch), &hashes))
                })
            });
        }
    }
    group.finish();
}

/// One live route change (alternately installing and withdrawing a route
/// not in the table) followed by a snapshot, with the previous snapshot
/// still held as a worker would hold it.
fn bench_update(
    c: &mut Criterion,
    family: &str,
    setup: &mut Setup,
    rng: &mut Rng,
    prefix: fn(&mut Rng) -> IpCidr,
) {
    let mut changes = Vec::new();
    while changes.len() < 1000 {
        let p = prefix(rng);
        if setup.table.get(p).is_none() && !changes.iter().any(|r: &Route| r.prefix == p) {
            changes.push(kind_for(rng, p));
        }
    }
    let table = &mut setup.table;
    let mut held = table.snapshot();
    let mut step = 0usize;
    c.bench_function(&format!("fib/{family}/100k/change_and_snapshot"), |b| {
        b.iter(|| {
            let route = changes[(step / 2) % changes.len()];
            if step % 2 == 0 {
                table.insert(route);
            } else {
                table.remove(route.prefix);
            }
            step += 1;
            held = black_box(table.snapshot());
        })
    });
    black_box(held.route_count());
}

/// Context for the lookup figures: the latency of one dependent load that
/// misses the caches on this machine (a pointer chase over 64 MiB). A trie
/// walk costs roughly this per level it descends.
fn bench_memory_latency(c: &mut Criterion, rng: &mut Rng) {
    let n = 64 << 17; // 64 MiB of u64 indices
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut next = vec![0usize; n];
    for w in 0..n {
        next[order[w]] = order[(w + 1) % n];
    }
    let mut at = 0usize;
    c.bench_function("fib/context/dependent_load_64MiB", |b| {
        b.iter(|| {
            at = next[at];
            black_box(at)
        })
    });
}

fn fib(c: &mut Criterion) {
    let mut rng = Rng(0x5eed_f1b0_0000_0001);
    bench_memory_latency(c, &mut rng);

    let mut v4 = build("ipv4", &mut rng, v4_prefix);
    let fib4 = v4.table.snapshot();
    let random: Vec<IpAddr> = (0..PROBES)
        .map(|_| IpAddr::V4(Ipv4Addr::from(rng.next() as u32)))
        .collect();
    let routed: Vec<IpAddr> = (0..PROBES)
        .map(|_| {
            let p = v4.prefixes[rng.below(ROUTES as u64) as usize];
            inside(&mut rng, p)
        })
        .collect();
    let covered = random
        .iter()
        .filter(|a| fib4.lookup(**a, 0).is_some())
        .count();
    eprintln!(
        "ipv4: {:.0}% of random addresses are routed",
        100.0 * covered as f64 / PROBES as f64
    );
    bench_lookups(c, "ipv4", &fib4, &random, &routed);
    drop(fib4);
    bench_update(c, "ipv4", &mut v4, &mut rng, v4_prefix);
    drop(v4);

    let mut v6 = build("ipv6", &mut rng, v6_prefix);
    let fib6 = v6.table.snapshot();
    let random: Vec<IpAddr> = (0..PROBES)
        .map(|_| {
            // Random global-unicast addresses: half under an installed /32..
            // block's first 32 bits, so the walk goes past the root.
            let p = v6.prefixes[rng.below(ROUTES as u64) as usize];
            let p32 = IpCidr::new_truncated(p.network(), 32.min(p.prefix_len())).expect("valid");
            if rng.below(2) == 0 {
                inside(&mut rng, p32)
            } else {
                inside(&mut rng, "2000::/3".parse().expect("valid prefix"))
            }
        })
        .collect();
    let routed: Vec<IpAddr> = (0..PROBES)
        .map(|_| {
            let p = v6.prefixes[rng.below(ROUTES as u64) as usize];
            inside(&mut rng, p)
        })
        .collect();
    bench_lookups(c, "ipv6", &fib6, &random, &routed);
    drop(fib6);
    bench_update(c, "ipv6", &mut v6, &mut rng, v6_prefix);
}

criterion_group!(benches, fib);
criterion_main!(benches);
