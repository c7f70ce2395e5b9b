//! `strait-sni` against an independent TLS parser (`tls-parser`): on
//! real ClientHellos captured from `openssl s_client` and `curl`
//! (`tests/data/`), and on generated ones with random names, key-share
//! sizes, record fragmentation and byte flips, both must agree on the
//! host name, and `strait-sni` must find none where `tls-parser` refuses
//! the message.

use proptest::prelude::*;
use strait_sni::testing::{client_hello, records};
use strait_sni::{client_hello_name, ClientHello};
use tls_parser::{
    parse_tls_extensions, parse_tls_message_handshake, parse_tls_raw_record, SNIType, TlsExtension,
    TlsMessage, TlsMessageHandshake,
};

/// The other parser's view: the records' payloads joined, then the
/// ClientHello and its extensions. `None`: it refuses the bytes.
fn reference(buf: &[u8]) -> Option<Option<String>> {
    let mut rest = buf;
    let mut handshake = Vec::new();
    while !rest.is_empty() {
        let (r, record) = parse_tls_raw_record(rest).ok()?;
        if record.hdr.record_type.0 != 22 {
            return None;
        }
        handshake.extend_from_slice(record.data);
        rest = r;
    }
    let (left, msg) = parse_tls_message_handshake(&handshake).ok()?;
    if !left.is_empty() {
        return None;
    }
    let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) = msg else {
        return None;
    };
    let Some(ext) = hello.ext else {
        return Some(None);
    };
    let (_, exts) = parse_tls_extensions(ext).ok()?;
    for e in exts {
        if let TlsExtension::SNI(names) = e {
            return Some(
                names
                    .iter()
                    .find(|(t, _)| *t == SNIType::HostName)
                    .map(|(_, n)| String::from_utf8_lossy(n).to_ascii_lowercase()),
            );
        }
    }
    Some(None)
}

fn ours(buf: &[u8]) -> Option<Option<String>> {
    match client_hello_name(buf) {
        Ok(ClientHello::Name(n)) => Some(Some(n.as_str().to_owned())),
        Ok(ClientHello::NoName) => Some(None),
        Ok(ClientHello::NeedMore) | Err(_) => None,
    }
}

#[test]
fn real_client_hellos() {
    let cases = [
        ("openssl-s_client.bin", "www.example.com"),
        ("openssl-many-groups.bin", "many.example.org"),
        ("openssl-tls12.bin", "v12.example.net"),
        ("curl.bin", "curl.example.test"),
    ];
    for (file, name) in cases {
        let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
        let buf = std::fs::read(&path).unwrap();
        assert_eq!(ours(&buf), Some(Some(name.to_owned())), "{file}");
        assert_eq!(reference(&buf), ours(&buf), "{file}");
        // Re-cut into small records: same name, and every prefix waits.
        let hs = &buf[5..];
        let split = records(hs, &[3, 1, 50]);
        assert_eq!(ours(&split), Some(Some(name.to_owned())), "{file} re-cut");
        assert_eq!(reference(&split), ours(&split), "{file} re-cut");
        for cut in 0..split.len() {
            assert_eq!(
                client_hello_name(&split[..cut]),
                Ok(ClientHello::NeedMore),
                "{file} cut at {cut}"
            );
        }
    }
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec("[a-zA-Z0-9-]{1,20}", 1..5).prop_map(|l| l.join(".").into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn generated_hellos_agree(
        name in prop::option::of(name()),
        share in 0usize..3000,
        sizes in prop::collection::vec(1usize..600, 1..6),
    ) {
        let buf = records(&client_hello(name.as_deref(), share), &sizes);
        let want = name.map(|n| String::from_utf8(n).unwrap().to_ascii_lowercase());
        prop_assert_eq!(ours(&buf), Some(want.clone()));
        prop_assert_eq!(reference(&buf), Some(want));
    }

    /// A flipped byte: whatever `strait-sni` accepts, `tls-parser` reads
    /// the same way.
    #[test]
    fn damaged_hellos_never_disagree_on_a_name(
        name in name(),
        share in 0usize..400,
        sizes in prop::collection::vec(1usize..300, 1..4),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut buf = records(&client_hello(Some(&name), share), &sizes);
        let i = at.index(buf.len());
        buf[i] ^= xor;
        if let Some(found) = ours(&buf) {
            if let Some(theirs) = reference(&buf) {
                prop_assert_eq!(found, theirs);
            }
        }
    }
}
