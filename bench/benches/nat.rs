//! NAT micro-benchmarks: translating a 64-byte UDP packet of an existing
//! session in tables of 1k, 100k and 1M sessions, an inbound packet when one
//! remote address holds 16 to 60 000 sessions with one mapping (the lookup
//! must not grow with them), and new-session setup.
//!
//! cargo bench -p strait-bench --bench nat -- --warm-up-time 1 --measurement-time 3

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use strait_nat::{
    Egress, EgressId, Filtering, Ipv4Cidr, NatConfig, NatRules, NatWorker, PortRange, RuleId,
    SnatRule, SnatTarget, Verdict,
};
use strait_wire::checksum::{add, checksum, pseudo_header_v4};
use strait_wire::IpProtocol;

const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Remote endpoints per internal endpoint (sessions sharing one mapping).
const DESTINATIONS: u32 = 16;

fn egress() -> Egress {
    Egress::new(EgressId(1), WAN)
}

fn snat(target: SnatTarget) -> Arc<NatRules> {
    let rule = SnatRule {
        id: RuleId(1),
        source: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 8).expect("valid prefix"),
        destination: None,
        egress: None,
        target,
    };
    Arc::new(NatRules::new(vec![rule], vec![], vec![]).expect("valid rules"))
}

/// A 64-byte IPv4/UDP packet (36 bytes of payload) with a valid checksum.
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
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let ph = pseudo_header_v4(src, dst, IpProtocol::UDP, 44);
    let c = !add(ph, strait_wire::checksum::sum(&p[20..]));
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

/// Flow `k`: internal endpoint `k / DESTINATIONS`, remote `k % DESTINATIONS`.
fn flow(k: u32) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let endpoint = k / DESTINATIONS;
    let host = endpoint / 16;
    (
        Ipv4Addr::new(10, (host >> 8) as u8, host as u8, 1),
        10_000 + (endpoint % 16) as u16,
        Ipv4Addr::new(192, 0, 2, (k % DESTINATIONS) as u8 + 1),
        443,
    )
}

fn populated(sessions: u32) -> NatWorker {
    let config = NatConfig {
        max_sessions: (sessions as usize).next_power_of_two(),
        filtering: Filtering::EndpointIndependent,
        ..NatConfig::default()
    };
    let mut nat = NatWorker::new(
        config,
        snat(SnatTarget::Masquerade {
            ports: PortRange::new(1024, 65535),
        }),
    )
    .expect("valid config");
    for k in 0..sessions {
        let (s, sp, d, dp) = flow(k);
        let mut p = udp64(s, sp, d, dp);
        assert_eq!(
            nat.translate_outbound(&mut p, egress(), 0),
            Verdict::Translated
        );
    }
    assert_eq!(nat.session_count(), sessions as usize);
    nat
}

fn translate_existing(c: &mut Criterion) {
    let mut group = c.benchmark_group("nat/translate_udp64_existing");
    group.throughput(Throughput::Elements(1));
    for sessions in [1_000u32, 100_000, 1_000_000] {
        let mut nat = populated(sessions);
        // Spread probes over the table so caches see a realistic mix.
        let probes: Vec<[u8; 64]> = (0..1024u32)
            .map(|i| {
                let (s, sp, d, dp) = flow((i.wrapping_mul(2_654_435_761)) % sessions);
                udp64(s, sp, d, dp)
            })
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(sessions), &sessions, |b, _| {
            let mut i = 0usize;
            let mut buf = [0u8; 64];
            b.iter(|| {
                // The packet is rewritten in place, so start from a fresh copy.
                buf.copy_from_slice(&probes[i & 1023]);
                i = i.wrapping_add(1);
                black_box(nat.translate_outbound(black_box(&mut buf), egress(), 1))
            });
        });
    }
    group.finish();
}

/// One remote address reaching one mapping from `sessions` source ports.
fn one_remote(sessions: u16) -> (NatWorker, [u8; 64], u16) {
    let config = NatConfig {
        max_sessions: usize::from(sessions).next_power_of_two() * 2,
        filtering: Filtering::EndpointIndependent,
        ..NatConfig::default()
    };
    let mut nat = NatWorker::new(
        config,
        snat(SnatTarget::Masquerade {
            ports: PortRange::new(1024, 65535),
        }),
    )
    .expect("valid config");
    let remote = Ipv4Addr::new(192, 0, 2, 1);
    let mut p = udp64(Ipv4Addr::new(10, 0, 0, 1), 10_000, remote, 443);
    assert_eq!(
        nat.translate_outbound(&mut p, egress(), 0),
        Verdict::Translated
    );
    let external = u16::from_be_bytes([p[20], p[21]]);
    for port in 1..=sessions {
        let mut q = udp64(remote, port, WAN, external);
        assert_eq!(nat.translate_inbound(&mut q, 0), Verdict::Translated);
    }
    (nat, udp64(remote, 0, WAN, external), external)
}

fn inbound_one_remote(c: &mut Criterion) {
    let mut group = c.benchmark_group("nat/inbound_one_remote_address");
    group.throughput(Throughput::Elements(1));
    for sessions in [16u16, 1024, 16_384, 60_000] {
        let (mut nat, template, _) = one_remote(sessions);
        group.bench_with_input(BenchmarkId::from_parameter(sessions), &sessions, |b, _| {
            let mut i = 0u16;
            let mut buf = [0u8; 64];
            b.iter(|| {
                buf.copy_from_slice(&template);
                // Source ports spread over the sessions; the UDP checksum
                // is patched, not verified, so it need not be right.
                let port = 1 + i.wrapping_mul(40_503) % sessions;
                buf[20..22].copy_from_slice(&port.to_be_bytes());
                i = i.wrapping_add(1);
                black_box(nat.translate_inbound(black_box(&mut buf), 1))
            });
        });
    }
    group.finish();
}

fn session_setup(c: &mut Criterion) {
    let mut group = c.benchmark_group("nat/session_setup");
    group.throughput(Throughput::Elements(1));
    // Every new flow comes from a new internal endpoint: a new mapping, a
    // port allocation and a session. 32 pool addresses hold 2M ports.
    let pool: Vec<Ipv4Addr> = (1..=32).map(|i| Ipv4Addr::new(198, 51, 100, i)).collect();
    let capacity = 1usize << 18;
    let config = NatConfig {
        max_sessions: capacity,
        max_external_addresses: 32,
        ..NatConfig::default()
    };
    let mut nat = NatWorker::new(
        config,
        snat(SnatTarget::Pool {
            addresses: pool,
            ports: PortRange::new(1024, 65535),
        }),
    )
    .expect("valid config");
    let template = udp64(
        Ipv4Addr::new(10, 0, 0, 1),
        40_000,
        Ipv4Addr::new(192, 0, 2, 1),
        443,
    );
    let mut now = 0u64;
    let mut next = 0u32;
    group.bench_function("new_mapping_and_session", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let room = (capacity - nat.session_count()) as u64;
                let batch = room.min(iters - done);
                let start = Instant::now();
                for _ in 0..batch {
                    let host = next;
                    next = next.wrapping_add(1);
                    let src = Ipv4Addr::from(0x0a00_0000 | (host & 0x00ff_ffff));
                    // Only the source changes; the translator does not
                    // verify checksums, it patches them.
                    let mut p = template;
                    p[12..16].copy_from_slice(&src.octets());
                    black_box(nat.translate_outbound(&mut p, egress(), now));
                }
                elapsed += start.elapsed();
                done += batch;
                if nat.session_count() == capacity {
                    // Untimed: age everything out to make room again.
                    now += 1000;
                    nat.expire(now, usize::MAX);
                }
            }
            elapsed
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    translate_existing,
    inbound_one_remote,
    session_setup
);
criterion_main!(benches);
