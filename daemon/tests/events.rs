//! End-to-end: `straitd` logs the engine's SA lifetime events and
//! `straitctl show events` lists them.
//!
//! Topology: h1 — [left 10.1.0.1] dp [right 10.2.0.1] — h2, `straitd` in
//! `dp`. No traffic: time lifetimes pass on their own.
//!
//! Needs root (namespaces, veth, XDP).

use std::time::{Duration, Instant};

use strait_testbed::{require_root, Testbed, Topology};

mod common;
use common::Daemon;

const CONFIG: &str = r#"
[engine]
workers = 1
host_punt = false
state_dir = "STATE_DIR"
manual_keying = true

[[interface]]
name = "left"
addresses = ["10.1.0.1/24"]

[[interface]]
name = "right"
addresses = ["10.2.0.1/24"]

[[tunnel]]
name = "hub"
local = "10.2.0.1"
remote = "10.2.0.9"
prefixes = ["10.9.0.0/16"]
outbound = { spi = 4096, cipher = "aes128-gcm", key = "000102030405060708090a0b0c0d0e0f10111213", soft_seconds = 1, hard_seconds = 2 }
inbound = { spi = 4097, cipher = "aes128-gcm", key = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3", soft_seconds = 1 }
"#;

#[test]
fn show_events_lists_sa_lifetime_events() {
    require_root();
    let topo = Topology::parse(
        "ns h1\nns dp\nns h2\nlink h1:eth0 dp:left\nlink dp:right h2:eth0\n\
         addr h1:eth0 10.1.0.2/24\naddr h2:eth0 10.2.0.2/24\n",
    )
    .unwrap();
    let mut tb = Testbed::new("dmev");
    let ns = topo.build(&mut tb).unwrap();
    let dir = std::env::temp_dir().join(tb.prefix());
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let config = CONFIG.replace("STATE_DIR", &state.display().to_string());
    let daemon = Daemon::start(&ns["dp"], &dir, "strait", &config);
    assert_eq!(daemon.json(&["show", "events"]), serde_json::json!([]));
    let deadline = Instant::now() + Duration::from_secs(8);
    let events = loop {
        let events = daemon.json(&["show", "events"]);
        if events.as_array().unwrap().len() >= 3 || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let has = |kind: &str, spi: u32, direction: &str| {
        events.as_array().unwrap().iter().any(|e| {
            e["kind"] == kind
                && e["tunnel"] == "hub"
                && e["spi"] == spi
                && e["direction"] == direction
                && e["limit"] == "time"
        })
    };
    assert!(has("sa-soft-expired", 4096, "outbound"), "{events}");
    assert!(has("sa-hard-expired", 4096, "outbound"), "{events}");
    // The inbound SA has no hard lifetime.
    assert!(has("sa-soft-expired", 4097, "inbound"), "{events}");
    assert_eq!(events.as_array().unwrap().len(), 3, "{events}");
    let text = daemon.ctl(&["show", "events"]);
    assert!(
        text.contains("tunnel hub: outbound SA 4096 passed its soft time limit: rekey"),
        "{text}"
    );
}
