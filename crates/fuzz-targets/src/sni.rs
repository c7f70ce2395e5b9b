//! `sni`: the first bytes of a proxied TCP stream through
//! `strait_sni::sniff` (TLS ClientHello over any number of records, or an
//! HTTP/1 request head). An input whose first byte is `0xff` is instead
//! read as a recipe: a host name (a length byte, then its bytes), a
//! key-share size and record sizes, built into a well-formed ClientHello.
//!
//! Invariants: no panic; a name found is a host name of at most 253
//! characters, lower case; a complete answer on the whole input is
//! `NeedMore` or the same answer on its prefixes (nothing is decided
//! before the head ends);
//! a built ClientHello yields exactly its name, whatever the records.

use strait_sni::testing::{client_hello, records};
use strait_sni::{sniff, ServerName, Sniff, MAX_HEAD};

fn check_name(n: &ServerName) {
    let s = n.as_str();
    assert!(!s.is_empty() && s.len() <= 253, "name {s:?}");
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)),
        "name {s:?}"
    );
}

/// The target body.
pub fn run(data: &[u8]) {
    if let Some((&0xff, recipe)) = data.split_first() {
        built(recipe);
        return;
    }
    let data = &data[..data.len().min(MAX_HEAD + 64)];
    let whole = sniff(data);
    match &whole {
        Sniff::Tls(n) | Sniff::Http(n) => check_name(n),
        _ => {}
    }
    if matches!(
        whole,
        Sniff::Tls(_) | Sniff::TlsWithoutName | Sniff::Http(_) | Sniff::HttpWithoutName
    ) {
        // Nothing is decided before the head ends: a prefix either waits
        // or, when it already holds the whole head, answers the same.
        for cut in [
            0,
            1,
            data.len() / 3,
            data.len() / 2,
            data.len().saturating_sub(1),
        ] {
            let part = sniff(&data[..cut]);
            assert!(
                part == Sniff::NeedMore || part == whole,
                "prefix {cut} of {}: {part:?}, whole: {whole:?}",
                data.len()
            );
        }
    }
}

fn built(recipe: &[u8]) {
    let Some((&len, rest)) = recipe.split_first() else {
        return;
    };
    let len = usize::from(len).min(rest.len());
    let (raw, rest) = rest.split_at(len);
    let name = ServerName::new(raw).ok();
    let share = rest.first().map_or(0, |&b| usize::from(b) * 16);
    let sizes: Vec<usize> = rest
        .iter()
        .skip(1)
        .map(|&b| usize::from(b) + 1)
        .chain(std::iter::once(usize::MAX))
        .collect();
    let hello = client_hello(name.as_ref().map(|n| n.as_str().as_bytes()), share);
    let buf = records(&hello, &sizes);
    match (sniff(&buf), name) {
        (Sniff::Tls(found), Some(n)) => assert_eq!(found, n),
        (Sniff::TlsWithoutName, None) => {}
        (got, want) => panic!("built hello for {want:?}: {got:?}"),
    }
}

/// Seeds: ClientHellos captured from `openssl s_client` (TLS 1.3, many
/// groups, TLS 1.2) and `curl`, one cut into small records, an HTTP head
/// and a recipe.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let data = |f: &str| {
        std::fs::read(format!(
            "{}/../sni/tests/data/{f}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("captured ClientHello")
    };
    let curl = data("curl.bin");
    vec![
        ("openssl-tls13", data("openssl-s_client.bin")),
        ("openssl-many-groups", data("openssl-many-groups.bin")),
        ("openssl-tls12", data("openssl-tls12.bin")),
        ("curl-split", records(&curl[5..], &[7, 1, 60])),
        ("curl", curl),
        (
            "http-host",
            b"GET /index.html HTTP/1.1\r\nHost: www.example.com:80\r\nAccept: */*\r\n\r\n".to_vec(),
        ),
        ("recipe", b"\xff\x0bapi.example\x40\x05\x01\x30".to_vec()),
    ]
}
