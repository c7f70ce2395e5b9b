//! Load-balancer micro-benchmarks: what a membership change costs on the
//! control side (building a Maglev table of 65 537 slots for 3 to 1000
//! backends, and the share of flows it moves), and what a new flow costs
//! a worker (a UDP datagram from a new client endpoint through a DNAT rule
//! choosing its backend by Maglev: table slot, session creation,
//! translation), beside a packet of an existing flow.
//!
//! cargo bench -p strait-bench --bench lb -- --warm-up-time 1 --measurement-time 2

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strait_nat::maglev::DEFAULT_TABLE_SIZE;
use strait_nat::{
    BackendSelection, DnatRule, Endpoint, MaglevBackend, MaglevTable, NatConfig, NatRules,
    NatWorker, Protocol, RuleId,
};
use strait_wire::checksum::{add, checksum, pseudo_header_v4};
use strait_wire::IpProtocol;

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

fn backends(n: u16) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| MaglevBackend {
            endpoint: Endpoint::new(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8), 8000),
            weight: 1,
            index: i,
        })
        .collect()
}

/// Table builds: the control-side cost of one membership change. Also
/// prints, once per size, the share of slots (so of new flows) that
/// removing one backend moves, against the 1/N minimum.
fn table_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("lb/maglev_build");
    for n in [3u16, 10, 100, 1000] {
        let all = backends(n);
        let before = MaglevTable::build(DEFAULT_TABLE_SIZE, &all).expect("valid table");
        let after = MaglevTable::build(DEFAULT_TABLE_SIZE, &all[1..]).expect("valid table");
        let moved = f64::from(before.moved_slots(&after)) / f64::from(DEFAULT_TABLE_SIZE);
        eprintln!(
            "lb/maglev_build/{n}: removing one backend moves {:.2} % of slots (minimum {:.2} %)",
            moved * 100.0,
            100.0 / f64::from(n)
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &all, |b, all| {
            b.iter(|| black_box(MaglevTable::build(DEFAULT_TABLE_SIZE, all).expect("valid")));
        });
    }
    group.finish();
}

fn udp64(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> [u8; 64] {
    let mut p = [0u8; 64];
    p[..12].copy_from_slice(&[0x45, 0, 0, 64, 0, 1, 0x40, 0, 64, 17, 0, 0]);
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&44u16.to_be_bytes());
    let ph = pseudo_header_v4(src, dst, IpProtocol::UDP, 44);
    let c = !add(ph, strait_wire::checksum::sum(&p[20..]));
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

fn balancer(capacity: usize) -> NatWorker {
    let all = backends(10);
    let table = Arc::new(MaglevTable::build(DEFAULT_TABLE_SIZE, &all).expect("valid table"));
    let rules = NatRules::new(
        vec![],
        vec![DnatRule {
            full_nat: false,
            id: RuleId(1),
            protocol: Protocol::Udp,
            public: Endpoint::new(VIP, 53),
            backends: all.iter().map(|b| b.endpoint).collect(),
            selection: BackendSelection::Maglev(table),
        }],
        vec![],
    )
    .expect("valid rules");
    let config = NatConfig {
        max_sessions: capacity,
        inbound_sessions_per_remote_address: 0,
        inbound_sessions_per_rule: 0,
        ..NatConfig::default()
    };
    NatWorker::new(config, Arc::new(rules)).expect("valid config")
}

/// A new flow per packet: the worker's cost of a new connection.
fn new_flows(c: &mut Criterion) {
    let mut group = c.benchmark_group("lb/new_flow");
    group.throughput(Throughput::Elements(1));
    let capacity = 1usize << 18;
    let mut nat = balancer(capacity);
    let template = udp64(Ipv4Addr::new(198, 18, 0, 1), 1024, VIP, 53);
    // What is timed is a translation, not a refusal.
    let mut probe = template;
    probe[14..16].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(
        nat.translate_inbound(&mut probe, 0),
        strait_nat::Verdict::Translated
    );
    let mut now = 0u64;
    let mut next = 0u32;
    group.bench_function("maglev_10_backends", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let room = (capacity - nat.session_count()) as u64;
                let batch = room.min(iters - done);
                let start = Instant::now();
                for _ in 0..batch {
                    let k = next;
                    next = next.wrapping_add(1);
                    let mut p = template;
                    // A new client endpoint: address from the high bits,
                    // port from the low ones.
                    p[14..16].copy_from_slice(&((k >> 16) as u16).to_be_bytes());
                    p[20..22].copy_from_slice(&(1024 + (k as u16 % 60_000)).to_be_bytes());
                    black_box(nat.translate_inbound(&mut p, now));
                }
                elapsed += start.elapsed();
                done += batch;
                if nat.session_count() == capacity {
                    now += 1000;
                    nat.expire(now, usize::MAX);
                }
            }
            elapsed
        });
    });
    // The same packet again and again: an established flow.
    let mut nat = balancer(1024);
    let mut first = template;
    assert_eq!(
        nat.translate_inbound(&mut first, 0),
        strait_nat::Verdict::Translated
    );
    group.bench_function("existing_flow", |b| {
        b.iter(|| {
            let mut p = template;
            black_box(nat.translate_inbound(&mut p, 1))
        });
    });
    group.finish();
}

criterion_group!(benches, table_build, new_flows);
criterion_main!(benches);
