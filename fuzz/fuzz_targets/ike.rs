//! The `ike` target: see `strait_fuzz_targets::ike` for the input format
//! and the invariants checked.
//! Run: `cargo +nightly fuzz run ike` (seeds in corpus/ike).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strait_fuzz_targets::ike::run(data);
});
