//! Replays the fuzz corpus, and the hand-built samples it was seeded from,
//! through the same entry point as the fuzz target.

mod common;

use std::path::PathBuf;

use common::frames::{invalid_samples, valid_samples};
use strait_wire::fuzz_parse_all;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/parse_all")
}

#[test]
fn samples_reach_expected_depth() {
    for sample in valid_samples().into_iter().chain(invalid_samples()) {
        assert_eq!(
            fuzz_parse_all(&sample.bytes),
            sample.depth,
            "sample {}",
            sample.name
        );
    }
}

#[test]
fn every_corpus_file_replays() {
    let dir = corpus_dir();
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} unreadable: {e}", dir.display()));
    let mut replayed = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).expect("corpus file");
        let depth = fuzz_parse_all(&bytes);
        // Hand-built files carry their expected depth in the name.
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(rest) = name
            .strip_prefix("valid-depth")
            .or_else(|| name.strip_prefix("bad-depth"))
        {
            let expected: usize = rest[..1].parse().expect("depth digit");
            assert_eq!(depth, expected, "corpus file {name}");
        }
        replayed += 1;
    }
    let seeded = valid_samples().len() + invalid_samples().len();
    assert!(
        replayed >= seeded,
        "corpus has {replayed} files, fewer than the {seeded} hand-built samples: \
         run `cargo run -p strait-wire --example write_fuzz_corpus`"
    );
}
