//! The `pipeline` target: see `strait_fuzz_targets::pipeline` for the input
//! format and the invariants checked.
//! Run: `cargo +nightly fuzz run pipeline` (seeds in corpus/pipeline).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strait_fuzz_targets::pipeline::run(data);
});
