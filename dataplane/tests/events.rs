//! End-to-end through the embedding API alone: an engine whose tunnel SAs
//! have short lifetimes reports their soft and then hard expiry as engine
//! events, per tunnel and SPI, in both directions.
//!
//! Topology: h1 — [left 10.1.0.1] dp [right 10.2.0.1] — h2, the engine in
//! `dp`. No traffic: time lifetimes pass on their own.
//!
//! Needs root (namespaces, veth, XDP).

use std::time::{Duration, Instant};

use strait_dataplane::{Config, Engine, EngineEvent, SaDirection, SaLifetimeEvent, SaLimit};
use strait_testbed::{require_root, Testbed, Topology};

const KEY_OUT: &str = "000102030405060708090a0b0c0d0e0f10111213";
const KEY_IN: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3";

fn config(state: &std::path::Path) -> String {
    let state = state.display();
    format!(
        r#"
[engine]
workers = 1
host_punt = false
state_dir = "{state}"
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
outbound = {{ spi = 4096, cipher = "aes128-gcm", key = "{KEY_OUT}", soft_seconds = 1, hard_seconds = 2 }}
inbound = {{ spi = 4097, cipher = "aes128-gcm", key = "{KEY_IN}", soft_seconds = 1, hard_seconds = 2 }}
"#
    )
}

/// Set in the copy of this test that runs inside the namespace.
const IN_NAMESPACE: &str = "STRAIT_EVENTS_TEST_IN_NAMESPACE";

#[test]
fn sa_lifetimes_reach_the_embedder_as_events() {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        return engine_reports_sa_lifetimes();
    }
    require_root();
    let topo = Topology::parse(
        "ns h1\nns dp\nns h2\nlink h1:eth0 dp:left\nlink dp:right h2:eth0\n\
         addr h1:eth0 10.1.0.2/24\naddr h2:eth0 10.2.0.2/24\n",
    )
    .unwrap();
    let mut tb = Testbed::new("dpev");
    let ns = topo.build(&mut tb).unwrap();
    // The engine reads the interfaces from sysfs, which only `ip netns
    // exec` shows as the namespace's: run this test again in there.
    let exe = std::env::current_exe().unwrap();
    let out = ns["dp"]
        .command(&[
            exe.to_str().unwrap(),
            "--exact",
            "sa_lifetimes_reach_the_embedder_as_events",
            "--nocapture",
        ])
        .env(IN_NAMESPACE, "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes a directory when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn engine_reports_sa_lifetimes() {
    // A fresh directory each run: the namespace copy of the test runs once.
    let state = std::env::temp_dir().join(format!("strait-events-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let config = Config::parse(&config(&state), "events.toml").unwrap();
    let engine = Engine::start(config, "events.toml").unwrap();
    let _cleanup = RemoveOnDrop(state.clone());
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while events.len() < 4 && Instant::now() < deadline {
        engine.poll_events(&mut events);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing is delivered twice.
    std::thread::sleep(Duration::from_millis(700));
    engine.poll_events(&mut events);
    engine.stop();
    let sa = |spi, direction| SaLifetimeEvent {
        tunnel: "hub".into(),
        spi,
        direction,
        limit: SaLimit::Time,
    };
    for (spi, dir) in [(4096, SaDirection::Outbound), (4097, SaDirection::Inbound)] {
        let soft = events
            .iter()
            .position(|e| *e == EngineEvent::SaSoftExpired(sa(spi, dir)));
        let hard = events
            .iter()
            .position(|e| *e == EngineEvent::SaHardExpired(sa(spi, dir)));
        assert!(
            matches!((soft, hard), (Some(s), Some(h)) if s < h),
            "SPI {spi}: soft then hard expiry expected in {events:?}"
        );
    }
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        events[0].to_string().starts_with("tunnel hub: "),
        "{}",
        events[0]
    );
}
