//! Embedding Strait in an appliance's own management software.
//!
//! `cargo run --example embed -- strait.toml [seconds]` (as root, in the
//! network namespace that holds the interfaces): starts the engine, prints
//! per-interface counters every second, applies the same configuration
//! again (a live table swap, as a management system would after an edit),
//! then stops cleanly.

use std::time::Duration;

use strait_dataplane::{Config, Engine};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: embed CONFIG.toml [SECONDS]")?;
    let seconds: u64 = args.next().map_or(Ok(5), |s| s.parse())?;

    let config = Config::load(&path)?;
    let engine = Engine::start(config.clone(), &path)?;
    for line in engine.bind_reports() {
        println!("{line}");
    }
    for second in 1..=seconds {
        std::thread::sleep(Duration::from_secs(1));
        for (iface, c) in engine.counters() {
            println!(
                "t={second}s {iface}: rx {} tx {} forwarded {} dropped {}",
                c.rx_packets,
                c.tx_packets,
                c.forwarded,
                c.total_drops()
            );
        }
        if second == seconds / 2 {
            // Validated whole, published with one atomic swap; workers
            // never stop forwarding.
            let generation = engine.apply(config.clone())?;
            println!("tables generation {generation} published");
        }
    }
    engine.stop();
    Ok(())
}
