//! Packet rates through AF_XDP on veth (needs root; measurement, not a
//! pass/fail check, so ignored by default):
//!
//! `cargo test --release -p strait-xdp --test rate -- --ignored --nocapture`

#![deny(unsafe_code)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{test_frame, TEST_ETHERTYPE};
use strait_testbed::{Netns, Testbed};
use strait_xdp::{FrameBatch, PortId, PortSet, PortSetConfig, PortSpec};

const RUN: Duration = Duration::from_secs(2);

fn open(ns: &Netns, names: &[&str]) -> PortSet {
    ns.enter(|| {
        let specs: Vec<PortSpec> = names
            .iter()
            .map(|n| PortSpec::named(n, 0))
            .collect::<Result<_, _>>()?;
        PortSet::open(&PortSetConfig::default(), &specs)
    })
    .unwrap()
    .unwrap()
}

fn rx_packets(ns: &Netns, ifname: &str) -> u64 {
    ns.run(&[
        "cat",
        &format!("/sys/class/net/{ifname}/statistics/rx_packets"),
    ])
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

fn pin(cpu: usize) {
    // Best effort, as before: an unpinned thread only makes the figures
    // noisier.
    let _ = strait_testbed::pin_thread_to_cpu(cpu);
}

/// Transmits `size`-byte frames on port 0 until `stop`; returns frames
/// completed.
fn generate(ports: &mut PortSet, size: usize, stop: &AtomicBool) -> u64 {
    let template = test_frame(TEST_ETHERTYPE, 0, size);
    pin(0);
    let mut batch = FrameBatch::new();
    while !stop.load(Ordering::Relaxed) {
        ports.poll_completions();
        while batch.len() < 64 {
            let Some(mut desc) = ports.alloc_frame() else {
                break;
            };
            ports.umem().set_len(&mut desc, size).unwrap();
            ports.frame_mut(&desc).copy_from_slice(&template);
            if let Err(desc) = batch.push(desc) {
                ports.drop_frame(desc);
            }
        }
        ports.transmit(PortId(0), &mut batch);
    }
    ports.counters(PortId(0)).unwrap().tx_completed
}

#[test]
#[ignore = "measurement; run with --ignored --nocapture as root"]
fn rates() {
    strait_testbed::require_root();
    let mut tb = Testbed::new("xdp-rate");
    let a = tb.netns("a").unwrap();
    let dut = tb.netns("dut").unwrap();
    let b = tb.netns("b").unwrap();
    tb.veth((&a, "eth0"), (&dut, "p0")).unwrap();
    tb.veth((&dut, "p1"), (&b, "eth0")).unwrap();

    println!("| test | frame B | Mpps | Gbit/s |");
    for size in [64usize, 1024] {
        // AF_XDP transmit alone: generator in a, frames counted at dut's p0
        // (no program there yet: the kernel drops them after counting).
        let mut gen = open(&a, &["eth0"]);
        let stop = AtomicBool::new(false);
        let before = rx_packets(&dut, "p0");
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| generate(&mut gen, size, &stop));
            std::thread::sleep(RUN);
            stop.store(true, Ordering::Relaxed);
        });
        let secs = start.elapsed().as_secs_f64();
        let got = rx_packets(&dut, "p0") - before;
        let mpps = got as f64 / secs / 1e6;
        println!(
            "| AF_XDP TX (copy) | {size} | {mpps:.3} | {:.2} |",
            mpps * size as f64 * 8.0 / 1e3
        );

        // Forwarding p0 -> p1 through one worker loop, generator in a.
        let mut fwd = open(&dut, &["p0", "p1"]);
        let gen_before = gen.counters(PortId(0)).unwrap().tx_completed;
        let stop = Arc::new(AtomicBool::new(false));
        let before = rx_packets(&b, "eth0");
        let start = Instant::now();
        let offered = std::thread::scope(|s| {
            let fwd_stop = Arc::clone(&stop);
            s.spawn(move || {
                pin(1);
                let mut rx = FrameBatch::new();
                while !fwd_stop.load(Ordering::Relaxed) {
                    fwd.receive(&mut rx);
                    fwd.transmit(PortId(1), &mut rx);
                    fwd.poll_completions();
                }
                let c = fwd.counters(PortId(0)).unwrap();
                let k = fwd.kernel_statistics(PortId(0)).unwrap();
                eprintln!("p0 counters: {c:?}\np0 kernel: {k:?}");
            });
            let g = s.spawn(|| generate(&mut gen, size, &stop));
            std::thread::sleep(RUN);
            stop.store(true, Ordering::Relaxed);
            g.join().unwrap() - gen_before
        });
        let secs = start.elapsed().as_secs_f64();
        let got = rx_packets(&b, "eth0") - before;
        let mpps = got as f64 / secs / 1e6;
        println!(
            "| AF_XDP forward p0->p1 (copy, shared UMEM) | {size} | {mpps:.3} | {:.2} | offered {:.3} Mpps, loss {:.1} %",
            mpps * size as f64 * 8.0 / 1e3,
            offered as f64 / secs / 1e6,
            100.0 * (1.0 - got as f64 / offered.max(1) as f64)
        );
    }
}
