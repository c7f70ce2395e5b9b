//! ESP seal and open per packet, for each cipher suite and three inner
//! packet sizes. Buffers are prepared outside the timed region
//! (`iter_batched`), so the figures are the ESP work alone: framing,
//! AEAD, trailer and inner checks, replay window.

use std::hint::black_box;
use std::ops::Range;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use strait_esp::{CipherSuite, InboundSa, OutboundSa, SaConfig, TUNNEL_HEADROOM};

const SIZES: [usize; 3] = [64, 1024, 1400];
const FRAME: usize = 2048;
const SPI: u32 = 0x1000;
const NOW: Duration = Duration::from_secs(1);

/// A UMEM-sized frame holding an IPv4/UDP inner packet of `len` bytes after
/// the tunnel headroom.
fn frame_with_inner(len: usize) -> (Vec<u8>, Range<usize>) {
    let mut f = vec![0u8; FRAME];
    let at = TUNNEL_HEADROOM;
    let p = &mut f[at..at + len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 1, 0, 1]);
    p[16..20].copy_from_slice(&[10, 2, 0, 1]);
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    (f, at..at + len)
}

fn key(suite: CipherSuite) -> Vec<u8> {
    (0..suite.key_material_len())
        .map(|i| i as u8 ^ 0xa5)
        .collect()
}

fn bench_esp(c: &mut Criterion) {
    for suite in CipherSuite::ALL {
        let key = key(suite);
        let config = SaConfig::new(SPI, suite, &key, NOW);
        let mut group = c.benchmark_group(format!("esp/{}", suite.name()));
        for len in SIZES {
            group.throughput(Throughput::Bytes(len as u64));
            let (template, inner) = frame_with_inner(len);

            let out = OutboundSa::new(&config).expect("valid SA");
            let mut worker = out.worker();
            group.bench_function(format!("seal/{len}"), |b| {
                b.iter_batched_ref(
                    || template.clone(),
                    |frame| black_box(worker.seal(frame, inner.clone(), NOW).expect("seal")),
                    BatchSize::SmallInput,
                )
            });

            let mut sealer = out.worker();
            let mut inbound = InboundSa::new(&config).expect("valid SA");
            group.bench_function(format!("open/{len}"), |b| {
                b.iter_batched_ref(
                    || {
                        let mut frame = template.clone();
                        let esp = sealer
                            .seal(&mut frame, inner.clone(), NOW)
                            .expect("seal")
                            .esp;
                        (frame, esp)
                    },
                    |(frame, esp)| black_box(inbound.open(frame, esp.clone(), NOW).expect("open")),
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_esp);
criterion_main!(benches);
