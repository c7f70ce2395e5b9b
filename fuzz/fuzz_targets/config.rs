//! The `config` target: see `strait_fuzz_targets::config` for the input
//! format and the invariants checked.
//! Run: `cargo +nightly fuzz run config` (seeds in corpus/config).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strait_fuzz_targets::config::run(data);
});
