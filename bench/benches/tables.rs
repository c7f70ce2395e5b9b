//! Table build benchmark: one complete `Tables` build (what every site
//! registration on a hub costs) for 100, 1000 and 3000 tunnels, each with
//! its own /24, SPIs and negotiated keys, through the public
//! `strait_dataplane::fuzzing::build_tables` (fake links, no devices).
//!
//! Run: `cargo bench -p strait-bench --bench tables -- --warm-up-time 1 --measurement-time 5`

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use strait_dataplane::Config;

/// A hub with `n` tunnels: one WAN interface, tunnel `i` routing
/// 10.x.y.0/24 and holding distinct outbound and inbound SPIs and keys,
/// all marked negotiated (no state directory involved).
fn hub(n: u32) -> Config {
    let mut text = String::from(
        "[[interface]]\nname = \"wan\"\naddresses = [\"192.0.2.1/24\"]\n\
         [[interface]]\nname = \"lan\"\naddresses = [\"172.16.0.1/16\"]\n",
    );
    for i in 0..n {
        let key = |dir: u32| format!("{:08x}{:032x}", dir, u128::from(i) * 0x9e37_79b9 + 1);
        let _ = write!(
            text,
            "[[tunnel]]\nname = \"site{i}\"\nlocal = \"192.0.2.1\"\n\
             remote = \"198.51.{}.{}\"\nprefixes = [\"10.{}.{}.0/24\"]\n\
             outbound = {{ spi = {}, cipher = \"aes128-gcm\", key = \"{}\" }}\n\
             inbound = {{ spi = {}, cipher = \"aes128-gcm\", key = \"{}\" }}\n",
            i / 256,
            i % 256,
            i / 256,
            i % 256,
            0x1000 + 2 * i,
            key(1),
            0x1001 + 2 * i,
            key(2),
        );
    }
    let mut config = Config::parse(&text, "hub.toml").expect("hub config parses");
    for t in &mut config.tunnels {
        t.outbound.negotiated = true;
        t.inbound.negotiated = true;
    }
    config
}

fn tables(c: &mut Criterion) {
    let mut g = c.benchmark_group("tables_build");
    g.sample_size(10);
    for n in [100u32, 1000, 3000] {
        let config = hub(n);
        strait_dataplane::fuzzing::build_tables(&config, "hub.toml").expect("hub tables build");
        g.bench_with_input(BenchmarkId::new("tunnels", n), &config, |b, config| {
            b.iter(|| strait_dataplane::fuzzing::build_tables(black_box(config), "hub.toml"))
        });
    }
    g.finish();
}

criterion_group!(benches, tables);
criterion_main!(benches);
