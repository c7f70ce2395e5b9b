//! The `health` target: see `strait_fuzz_targets::health` for the input
//! format and the invariants checked.
//! Run: `cargo +nightly fuzz run health` (seeds in corpus/health).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strait_fuzz_targets::health::run(data);
});
