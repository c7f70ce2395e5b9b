//! The `dns` target: see `strait_fuzz_targets::dns` for the input format
//! and the invariants checked.
//! Run: `cargo +nightly fuzz run dns` (seeds in corpus/dns).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strait_fuzz_targets::dns::run(data);
});
