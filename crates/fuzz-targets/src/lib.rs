//! The bodies of Strait's cargo-fuzz targets (`fuzz/fuzz_targets/`), kept
//! in the workspace so a plain `cargo test` replays every committed corpus
//! (`tests/corpus.rs`) on stable, and their seed inputs
//! (`cargo run -p strait-fuzz-targets --example write_corpus`).
//!
//! | target | body | what it drives |
//! |---|---|---|
//! | `esp_open` | [`esp_open::run`] | ESP inbound open with a real SA |
//! | `nat_translate` | [`nat_translate::run`] | the NAT translator both ways |
//! | `pipeline` | [`pipeline::run`] | a branch and hub pipeline, tunnel and NAT |
//! | `config` | [`config::run`] | TOML parsing, validation, table build |
//! | `ike` | [`ike::run`] | IKEv2 message views and a responder's state machine |
//! | `dns` | [`dns::run`] | the split-DNS resolver: client queries and upstream answers |
//! | `sni` | [`sni::run`] | the proxy's TLS ClientHello / HTTP head reader |
//! | `health` | [`health::run`] | load-balancer health-check answer verdicts |
//!
//! (`parse_all` lives in `strait-wire` as `fuzz_parse_all`.)
//!
//! Every body panics on a broken invariant, which libFuzzer reports as a
//! crash.

pub mod config;
pub mod dns;
pub mod esp_open;
pub mod health;
pub mod ike;
pub mod input;
pub mod nat_translate;
pub mod packets;
pub mod pipeline;
pub mod sni;

/// A target: its name (the corpus directory under `fuzz/corpus/`), its
/// body and its seeds.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// cargo-fuzz target name.
    pub name: &'static str,
    /// Runs one input.
    pub run: fn(&[u8]),
    /// Hand-built seed inputs, named.
    pub seeds: fn() -> Vec<(&'static str, Vec<u8>)>,
}

/// Every target defined here.
pub const TARGETS: [Target; 8] = [
    Target {
        name: "esp_open",
        run: esp_open::run,
        seeds: esp_open::seeds,
    },
    Target {
        name: "nat_translate",
        run: nat_translate::run,
        seeds: nat_translate::seeds,
    },
    Target {
        name: "pipeline",
        run: pipeline::run,
        seeds: pipeline::seeds,
    },
    Target {
        name: "config",
        run: config::run,
        seeds: config::seeds,
    },
    Target {
        name: "ike",
        run: ike::run,
        seeds: ike::seeds,
    },
    Target {
        name: "dns",
        run: dns::run,
        seeds: dns::seeds,
    },
    Target {
        name: "sni",
        run: sni::run,
        seeds: sni::seeds,
    },
    Target {
        name: "health",
        run: health::run,
        seeds: health::seeds,
    },
];
