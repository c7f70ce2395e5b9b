//! Replays every committed corpus (`fuzz/corpus/<target>/`) and the
//! known-crash directory (`fuzz/artifacts-known/<target>/`, inputs that
//! once crashed a target and must not any more) through the same bodies as
//! the fuzz targets, so a regression fails `cargo test` without nightly.

use std::path::{Path, PathBuf};

use strait_fuzz_targets::{Target, TARGETS};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn replay_dir(target: &Target, dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut replayed = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).expect("corpus file");
        let run = target.run;
        if std::panic::catch_unwind(|| run(&bytes)).is_err() {
            panic!("{} failed on {}", target.name, path.display());
        }
        replayed += 1;
    }
    replayed
}

fn replay(name: &str) {
    let target = TARGETS.iter().find(|t| t.name == name).expect("target");
    let corpus = fuzz_dir().join("corpus").join(name);
    let replayed = replay_dir(target, &corpus);
    let seeds = (target.seeds)().len();
    assert!(
        replayed >= seeds,
        "{} holds {replayed} files, fewer than the {seeds} seeds: \
         run `cargo run -p strait-fuzz-targets --example write_corpus`",
        corpus.display()
    );
    replay_dir(target, &fuzz_dir().join("artifacts-known").join(name));
}

#[test]
fn esp_open_corpus_replays() {
    replay("esp_open");
}

#[test]
fn nat_translate_corpus_replays() {
    replay("nat_translate");
}

#[test]
fn pipeline_corpus_replays() {
    replay("pipeline");
}

#[test]
fn config_corpus_replays() {
    replay("config");
}

#[test]
fn seeds_run_cleanly() {
    for target in TARGETS {
        for (name, bytes) in (target.seeds)() {
            let run = target.run;
            if std::panic::catch_unwind(|| run(&bytes)).is_err() {
                panic!("{} seed {name} failed", target.name);
            }
        }
    }
}

#[test]
fn ike_corpus_replays() {
    replay("ike");
}

#[test]
fn dns_corpus_replays() {
    replay("dns");
}

#[test]
fn sni_corpus_replays() {
    replay("sni");
}

#[test]
fn health_corpus_replays() {
    replay("health");
}
