//! `include/strait.h` is what cbindgen generates from the crate today:
//! a change to the ABI that forgot the header fails here.
//! `STRAIT_BLESS=1 cargo test -p strait-ffi --test header` rewrites it.

use std::path::Path;

#[test]
fn the_committed_header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = dir.join("include/strait.h");
    if std::env::var_os("STRAIT_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is not what cbindgen generates from ffi/src; regenerate it with \
         STRAIT_BLESS=1 cargo test -p strait-ffi --test header",
        path.display()
    );
}
