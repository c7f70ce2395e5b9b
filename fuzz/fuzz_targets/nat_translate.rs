//! The `nat_translate` target: see `strait_fuzz_targets::nat_translate` for the input
//! format and the invariants checked.
//! Run: `cargo +nightly fuzz run nat_translate` (seeds in corpus/nat_translate).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strait_fuzz_targets::nat_translate::run(data);
});
