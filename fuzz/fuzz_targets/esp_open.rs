//! The `esp_open` target: see `strait_fuzz_targets::esp_open` for the input
//! format and the invariants checked.
//! Run: `cargo +nightly fuzz run esp_open` (seeds in corpus/esp_open).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    strait_fuzz_targets::esp_open::run(data);
});
