//! The `sni` target: see `strait_fuzz_targets::sni` for the input format
//! and the invariants checked.
//! Run: `cargo +nightly fuzz run sni` (seeds in corpus/sni).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strait_fuzz_targets::sni::run(data);
});
