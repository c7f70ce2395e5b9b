//! ClientHellos built to order, for tests, the differential test against
//! another TLS parser, the fuzz target's seeds and crafted clients.

/// A TLS 1.3 ClientHello handshake message (RFC 8446 §4.1.2) with
/// `server_name` (when given, RFC 6066 §3), supported_groups,
/// signature_algorithms, supported_versions and a key_share whose key is `key_share` bytes long
/// (post-quantum shares are over 1 KiB).
pub fn client_hello(name: Option<&[u8]>, key_share: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = name {
        let mut list = vec![0u8];
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
        let mut body = (list.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&list);
        extension(&mut ext, 0, &body);
    }
    // supported_groups: X25519MLKEM768, x25519.
    extension(&mut ext, 10, &[0, 4, 0x11, 0xec, 0, 0x1d]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256.
    extension(&mut ext, 13, &[0, 4, 4, 3, 8, 4]);
    // supported_versions: TLS 1.3.
    extension(&mut ext, 43, &[2, 3, 4]);
    let mut share = Vec::new();
    share.extend_from_slice(&0x11ecu16.to_be_bytes());
    share.extend_from_slice(&(key_share as u16).to_be_bytes());
    share.extend((0..key_share).map(|i| i as u8));
    let mut body = (share.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&share);
    extension(&mut ext, 51, &body);

    let mut hello = vec![3, 3];
    hello.extend((0..32).map(|i| i as u8 ^ 0x5a));
    hello.push(32);
    hello.extend([7u8; 32]);
    hello.extend_from_slice(&[0, 6, 0x13, 1, 0x13, 2, 0x13, 3]);
    hello.extend_from_slice(&[1, 0]);
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut msg = vec![1];
    msg.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&hello);
    msg
}

fn extension(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// `handshake` in TLS handshake records (RFC 8446 §5.1) whose fragment
/// sizes are taken from `sizes` in turn (the last one repeating; each
/// capped at 2^14 and at what is left).
pub fn records(handshake: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = handshake;
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes
            .get(i)
            .or(sizes.last())
            .copied()
            .unwrap_or(usize::MAX)
            .clamp(1, 1 << 14)
            .min(rest.len());
        i += 1;
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(size as u16).to_be_bytes());
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size..];
    }
    out
}
