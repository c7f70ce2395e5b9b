//! Every wire parser and in-place rewrite over arbitrary bytes.
//! Run: `cargo fuzz run parse_all` (the corpus seeds are in corpus/parse_all).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = strait_wire::fuzz_parse_all(data);
});
