//! The cryptography of IKEv2 with *ring*: Diffie-Hellman groups 19 and 31,
//! PRF HMAC-SHA-256 and prf+ (RFC 7296 §2.13), the IKE SA keys (§2.14),
//! the SK payload with an AEAD cipher (RFC 5282), shared-key AUTH (§2.15),
//! CHILD SA keying material (§2.17), NAT detection hashes (§2.23) and
//! cookies (§2.6).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use ring::digest;
use ring::hmac;
use ring::rand::SecureRandom;
use strait_esp::CipherSuite;

use crate::error::{Error, ParseError};
use crate::message::{Header, Message, HEADER_LEN, PAYLOAD_HEADER_LEN};
use crate::payload::transform;

/// Output length of PRF_HMAC_SHA2_256, also the length of SK_d, SK_pi and
/// SK_pr (§2.14: the PRF's preferred key size).
pub const PRF_LEN: usize = 32;

/// Diffie-Hellman groups (IANA "Transform Type 4").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// Group 19: 256-bit random ECP group (RFC 5903).
    Ecp256,
    /// Group 31: Curve25519 (RFC 8031).
    Curve25519,
}

impl DhGroup {
    /// The transform ID.
    pub const fn id(self) -> u16 {
        match self {
            DhGroup::Ecp256 => transform::DH_ECP256,
            DhGroup::Curve25519 => transform::DH_CURVE25519,
        }
    }

    /// The group for a transform ID, if supported.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            transform::DH_ECP256 => Some(DhGroup::Ecp256),
            transform::DH_CURVE25519 => Some(DhGroup::Curve25519),
            _ => None,
        }
    }

    /// Length of the Key Exchange data: x || y for ECP-256 (RFC 5903 §7),
    /// the u-coordinate for Curve25519 (RFC 8031 §2).
    pub const fn public_len(self) -> usize {
        match self {
            DhGroup::Ecp256 => 64,
            DhGroup::Curve25519 => 32,
        }
    }

    fn algorithm(self) -> &'static agreement::Algorithm {
        match self {
            DhGroup::Ecp256 => &agreement::ECDH_P256,
            DhGroup::Curve25519 => &agreement::X25519,
        }
    }
}

/// An ephemeral Diffie-Hellman key pair, used for one agreement.
pub struct KeyShare {
    group: DhGroup,
    private: EphemeralPrivateKey,
    public: Vec<u8>,
}

impl core::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyShare")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl KeyShare {
    /// A fresh key pair in `group`.
    pub fn generate(group: DhGroup, rng: &dyn SecureRandom) -> Result<Self, Error> {
        let private = EphemeralPrivateKey::generate(group.algorithm(), rng)
            .map_err(|_| Error::Crypto("generating a DH key"))?;
        let public = private
            .compute_public_key()
            .map_err(|_| Error::Crypto("computing a DH public key"))?;
        let public = match group {
            // ring gives the SEC1 uncompressed point 0x04 || x || y; IKEv2
            // carries x || y without the prefix (RFC 5903 §7).
            DhGroup::Ecp256 => public.as_ref()[1..].to_vec(),
            DhGroup::Curve25519 => public.as_ref().to_vec(),
        };
        Ok(KeyShare {
            group,
            private,
            public,
        })
    }

    /// The group.
    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// The Key Exchange payload data.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// g^ir from the peer's Key Exchange data: the x-coordinate for
    /// ECP-256 (RFC 5903 §7), the X25519 output for Curve25519 (RFC 8031
    /// §2, which also requires refusing the all-zero result; ring does).
    pub fn agree(self, peer: &[u8]) -> Result<Vec<u8>, Error> {
        if peer.len() != self.group.public_len() {
            return Err(Error::Crypto("peer KE data has the wrong length"));
        }
        let mut point = Vec::with_capacity(65);
        if self.group == DhGroup::Ecp256 {
            point.push(0x04);
        }
        point.extend_from_slice(peer);
        agreement::agree_ephemeral(
            self.private,
            &UnparsedPublicKey::new(self.group.algorithm(), &point),
            |secret| secret.to_vec(),
        )
        .map_err(|_| Error::Crypto("peer KE data is not a valid public key"))
    }
}

fn hmac_key(key: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, key)
}

/// prf(key, data[0] | data[1] | …) with PRF_HMAC_SHA2_256.
pub fn prf(key: &[u8], data: &[&[u8]]) -> [u8; PRF_LEN] {
    let mut ctx = hmac::Context::with_key(&hmac_key(key));
    for d in data {
        ctx.update(d);
    }
    let mut out = [0u8; PRF_LEN];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// prf+ (§2.13): T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n), output
/// T1 | T2 | … cut to `len`. At most 255 blocks.
pub fn prf_plus(key: &[u8], seed: &[&[u8]], len: usize) -> Result<Vec<u8>, Error> {
    if len > 255 * PRF_LEN {
        return Err(Error::Crypto("prf+ asked for more than 255 blocks"));
    }
    let key = hmac_key(key);
    let mut out = Vec::with_capacity(len + PRF_LEN);
    let mut prev: Option<hmac::Tag> = None;
    let mut n: u8 = 1;
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(&key);
        if let Some(t) = &prev {
            ctx.update(t.as_ref());
        }
        for s in seed {
            ctx.update(s);
        }
        ctx.update(&[n]);
        let t = ctx.sign();
        out.extend_from_slice(t.as_ref());
        prev = Some(t);
        n = n.wrapping_add(1);
    }
    out.truncate(len);
    Ok(out)
}

/// The IKE SA's encryption algorithm: an AEAD with an 8-byte explicit IV
/// and a 4-byte salt taken from the keying material (RFC 5282 §7.1 for
/// AES-GCM, RFC 7634 §3 for ChaCha20-Poly1305). No integrity transform.
pub type IkeCipher = CipherSuite;

/// The transform for an AEAD cipher (IKE or ESP).
pub fn encr_transform(c: CipherSuite) -> crate::payload::Transform {
    use crate::payload::Transform;
    match c {
        CipherSuite::Aes128Gcm => {
            Transform::with_key(transform::ENCR, transform::ENCR_AES_GCM_16, 128)
        }
        CipherSuite::Aes256Gcm => {
            Transform::with_key(transform::ENCR, transform::ENCR_AES_GCM_16, 256)
        }
        CipherSuite::ChaCha20Poly1305 => {
            Transform::new(transform::ENCR, transform::ENCR_CHACHA20_POLY1305)
        }
    }
}

/// The cipher an ENCR transform names, if supported. ChaCha20-Poly1305
/// takes no Key Length attribute (RFC 7634 §2); AES-GCM needs one.
pub fn cipher_of(t: &crate::payload::Transform) -> Option<CipherSuite> {
    if t.kind != transform::ENCR || t.unknown_attribute {
        return None;
    }
    match (t.id, t.key_bits) {
        (transform::ENCR_AES_GCM_16, Some(128)) => Some(CipherSuite::Aes128Gcm),
        (transform::ENCR_AES_GCM_16, Some(256)) => Some(CipherSuite::Aes256Gcm),
        (transform::ENCR_CHACHA20_POLY1305, None) => Some(CipherSuite::ChaCha20Poly1305),
        _ => None,
    }
}

fn algorithm(c: CipherSuite) -> &'static aead::Algorithm {
    match c {
        CipherSuite::Aes128Gcm => &aead::AES_128_GCM,
        CipherSuite::Aes256Gcm => &aead::AES_256_GCM,
        CipherSuite::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
    }
}

/// Explicit IV length in the SK payload (RFC 5282 §3, RFC 7634 §3).
pub const SK_IV_LEN: usize = 8;
/// ICV length: 16 for AES-GCM-16 and Poly1305.
pub const SK_ICV_LEN: usize = 16;

/// One direction of the SK payload: key and salt.
pub struct SkCipher {
    key: LessSafeKey,
    salt: [u8; 4],
}

impl core::fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SkCipher").finish_non_exhaustive()
    }
}

impl SkCipher {
    /// From SK_ei or SK_er: key || 4-byte salt.
    pub fn new(cipher: CipherSuite, material: &[u8]) -> Result<Self, Error> {
        if material.len() != cipher.key_material_len() {
            return Err(Error::Crypto("SK_e has the wrong length"));
        }
        let (k, s) = material.split_at(cipher.key_len());
        let key = UnboundKey::new(algorithm(cipher), k).map_err(|_| Error::Crypto("SK_e"))?;
        let mut salt = [0u8; 4];
        salt.copy_from_slice(s);
        Ok(SkCipher {
            key: LessSafeKey::new(key),
            salt,
        })
    }

    fn nonce(&self, iv: &[u8]) -> Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.salt);
        n[4..].copy_from_slice(&iv[..SK_IV_LEN]);
        Nonce::assume_unique_for_key(n)
    }

    /// A complete encrypted message: `header` (next payload SK, length
    /// set here), the SK payload with `iv` and the sealed inner chain
    /// (first type `first_inner`). Padding is empty, the Pad Length octet
    /// zero (§3.14). The IV must never repeat under this key; the caller
    /// passes a counter.
    pub fn seal(&self, mut header: Header, first_inner: u8, inner: &[u8], iv: u64) -> Vec<u8> {
        let sk_len = PAYLOAD_HEADER_LEN + SK_IV_LEN + inner.len() + 1 + SK_ICV_LEN;
        header.next_payload = crate::message::payload_type::SK;
        header.length = (HEADER_LEN + sk_len) as u32;
        let mut out = vec![0u8; HEADER_LEN];
        header.emit(&mut out);
        out.push(first_inner);
        out.push(0);
        out.extend_from_slice(&(sk_len as u16).to_be_bytes());
        let iv = iv.to_be_bytes();
        out.extend_from_slice(&iv);
        out.extend_from_slice(inner);
        out.push(0); // Pad Length
                     // RFC 5282 §5.1: the AAD runs from the first octet of the IKE
                     // header to the last octet of the SK payload's generic header.
        let (aad, rest) = out.split_at_mut(HEADER_LEN + PAYLOAD_HEADER_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(&iv), Aad::from(&*aad), &mut rest[SK_IV_LEN..])
            .expect("AEAD seal of an IKE message within size limits");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Opens the SK payload of `msg`: the first inner payload type and the
    /// inner chain without padding.
    pub fn open(&self, msg: &Message<'_>) -> Result<(u8, Vec<u8>), OpenError> {
        let sk = msg.encrypted.ok_or(OpenError::NoSk)?;
        if sk.body.len() < SK_IV_LEN + 1 + SK_ICV_LEN {
            return Err(OpenError::Parse(ParseError::Truncated {
                what: "SK payload",
                need: SK_IV_LEN + 1 + SK_ICV_LEN,
                have: sk.body.len(),
            }));
        }
        let aad_end = sk.header_offset + PAYLOAD_HEADER_LEN;
        let aad = msg.bytes.get(..aad_end).ok_or(OpenError::NoSk)?;
        let (iv, sealed) = sk.body.split_at(SK_IV_LEN);
        let mut buf = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(self.nonce(iv), Aad::from(aad), &mut buf)
            .map_err(|_| OpenError::Integrity)?;
        let pad = usize::from(*plain.last().ok_or(OpenError::Integrity)?);
        if pad + 1 > plain.len() {
            return Err(OpenError::Parse(ParseError::Malformed(
                "SK pad length exceeds the plaintext",
            )));
        }
        let inner_len = plain.len() - pad - 1;
        buf.truncate(inner_len);
        Ok((sk.first_inner, buf))
    }
}

/// Why an SK payload did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The message has no SK payload.
    #[error("message has no SK payload")]
    NoSk,
    /// The ICV did not verify (wrong key or tampering, §2.21.2: drop).
    #[error("SK payload integrity check failed")]
    Integrity,
    /// Structure fault inside.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// The keys of one IKE SA (§2.14). With an AEAD cipher SK_ai and SK_ar
/// are empty.
pub struct IkeKeys {
    /// Key for CHILD SA keying material.
    pub sk_d: Vec<u8>,
    /// Initiator's encryption key || salt.
    pub sk_ei: Vec<u8>,
    /// Responder's encryption key || salt.
    pub sk_er: Vec<u8>,
    /// Initiator's AUTH key.
    pub sk_pi: Vec<u8>,
    /// Responder's AUTH key.
    pub sk_pr: Vec<u8>,
}

impl core::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IkeKeys").finish_non_exhaustive()
    }
}

/// SKEYSEED = prf(Ni | Nr, g^ir) and
/// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
///   = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)   (§2.14).
pub fn derive_ike_keys(
    cipher: IkeCipher,
    ni: &[u8],
    nr: &[u8],
    shared: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> Result<IkeKeys, Error> {
    let nonces = [ni, nr].concat();
    let skeyseed = prf(&nonces, &[shared]);
    derive_from_skeyseed(cipher, &skeyseed, ni, nr, spi_i, spi_r)
}

/// The keys of an IKE SA made by rekeying (§2.18):
/// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), then the schedule of
/// §2.14 with the new nonces and SPIs (SPIi from the rekey initiator).
pub fn rekey_ike_keys(
    cipher: IkeCipher,
    old_sk_d: &[u8],
    shared: &[u8],
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> Result<IkeKeys, Error> {
    let skeyseed = prf(old_sk_d, &[shared, ni, nr]);
    derive_from_skeyseed(cipher, &skeyseed, ni, nr, spi_i, spi_r)
}

/// The key schedule after SKEYSEED (shared by IKE SA rekeying, §2.18).
pub fn derive_from_skeyseed(
    cipher: IkeCipher,
    skeyseed: &[u8],
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> Result<IkeKeys, Error> {
    let e = cipher.key_material_len();
    let total = PRF_LEN + 2 * e + 2 * PRF_LEN;
    let km = prf_plus(
        skeyseed,
        &[ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()],
        total,
    )?;
    let mut at = 0;
    let mut take = |n: usize| {
        let v = km[at..at + n].to_vec();
        at += n;
        v
    };
    Ok(IkeKeys {
        sk_d: take(PRF_LEN),
        sk_ei: take(e),
        sk_er: take(e),
        sk_pi: take(PRF_LEN),
        sk_pr: take(PRF_LEN),
    })
}

/// The padded shared secret of §2.15.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// AUTH for a shared key (§2.15):
/// prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>) where
/// SignedOctets = RealMessage | NonceData of the peer | prf(SK_p, RestOfIDPayload).
/// `id_body` is the ID payload without its generic header.
pub fn psk_auth(
    psk: &[u8],
    sk_p: &[u8],
    real_message: &[u8],
    peer_nonce: &[u8],
    id_body: &[u8],
) -> [u8; PRF_LEN] {
    let maced_id = prf(sk_p, &[id_body]);
    let k = prf(psk, &[KEY_PAD]);
    prf(&k, &[real_message, peer_nonce, &maced_id])
}

/// Checks a received shared-key AUTH in constant time.
pub fn verify_psk_auth(
    psk: &[u8],
    sk_p: &[u8],
    real_message: &[u8],
    peer_nonce: &[u8],
    id_body: &[u8],
    received: &[u8],
) -> bool {
    let maced_id = prf(sk_p, &[id_body]);
    let k = prf(psk, &[KEY_PAD]);
    let key = hmac_key(&k);
    let signed = [real_message, peer_nonce, &maced_id].concat();
    hmac::verify(&key, &signed, received).is_ok()
}

/// CHILD SA keying material (§2.17): KEYMAT = prf+(SK_d, [g^ir (new) |]
/// Ni | Nr), taken first for the initiator-to-responder SA, then for the
/// other direction. With a combined-mode cipher there is no integrity key,
/// so each direction is key || 4-byte salt (RFC 4106 §8.1, RFC 7634 §4).
/// Returns (initiator → responder, responder → initiator).
pub fn child_keys(
    sk_d: &[u8],
    cipher: CipherSuite,
    pfs_shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let each = cipher.key_material_len();
    let g: &[u8] = pfs_shared.unwrap_or(&[]);
    let mut km = prf_plus(sk_d, &[g, ni, nr], 2 * each)?;
    let r_to_i = km.split_off(each);
    Ok((km, r_to_i))
}

/// A device's registration key derived from the hub's secret and the
/// device's serial number: HMAC-SHA-256(secret, "strait device key" 0x00
/// serial) as 64 lowercase hex digits. The hub keeps one secret instead of
/// a key per device; a device gets its key file at provisioning
/// (`straitd --device-key SERIAL`). The hex text itself is the IKE
/// pre-shared key, exactly as a device reads it from its key file.
pub fn device_key(secret: &[u8], serial: &str) -> String {
    let mac = prf(secret, &[b"strait device key\0", serial.as_bytes()]);
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

/// NAT_DETECTION_*_IP data (§2.23): SHA-1(SPIi | SPIr | IP | Port).
pub fn nat_hash(spi_i: u64, spi_r: u64, addr: std::net::SocketAddr) -> [u8; 20] {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        std::net::IpAddr::V4(v) => ctx.update(&v.octets()),
        std::net::IpAddr::V6(v) => ctx.update(&v.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A stateless cookie (§2.6): Hash(Ni | IPi | SPIi | secret), prefixed
/// with the secret's version so secrets can be rotated.
pub fn cookie(secret: &[u8], version: u32, ni: &[u8], ip: std::net::IpAddr, spi_i: u64) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(ni);
    match ip {
        std::net::IpAddr::V4(v) => ctx.update(&v.octets()),
        std::net::IpAddr::V6(v) => ctx.update(&v.octets()),
    }
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(secret);
    let mut out = version.to_be_bytes().to_vec();
    out.extend_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{emit_plain, flags, ChainBuilder, ExchangeType, VERSION};

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The derivation, checked against Python's `hmac` module.
    #[test]
    fn device_keys_are_hmac_of_the_serial() {
        assert_eq!(
            device_key(b"hub secret", "vcpe-0042"),
            "aa00d7ce0dcb8eeb95776b149e0c8fbff08b221b05b295c7e3c6b5aa164997e4"
        );
        assert_ne!(
            device_key(b"hub secret", "vcpe-0043"),
            device_key(b"hub secret", "vcpe-0042")
        );
    }

    /// RFC 4231 §4.2–§4.8, HMAC-SHA-256 outputs (test case 5, a
    /// truncated output, does not apply to a PRF).
    #[test]
    fn hmac_sha256_rfc4231() {
        let long_key = vec![0xaa; 131];
        let cases: [(&[u8], &[u8], &str); 6] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                &[0xaa; 20],
                &[0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                &hex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
                &[0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                &long_key,
                b"This is a test using a larger than block-size key and a larger than \
                  block-size data. The key needs to be hashed before being used by the \
                  HMAC algorithm.",
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, data, want) in cases {
            assert_eq!(prf(key, &[data]).to_vec(), hex(want));
            // Split input gives the same answer.
            let (a, b) = data.split_at(data.len() / 2);
            assert_eq!(prf(key, &[a, b]).to_vec(), hex(want));
        }
    }

    /// No IETF document publishes a prf+ vector for HMAC-SHA-256; this one
    /// was computed independently (Python's hmac module, the §2.13
    /// construction written out by hand).
    #[test]
    fn prf_plus_independent_vector() {
        let key = b"prf+ test key";
        let seed = b"seed for IKEv2 prf+";
        let out = prf_plus(key, &[seed], 100).unwrap();
        assert_eq!(out, hex(PRF_PLUS_EXPECTED));
        // Prefix property and block structure.
        assert_eq!(prf_plus(key, &[seed], 32).unwrap(), &out[..32]);
        assert_eq!(out[..32], prf(key, &[seed, &[1]]));
        assert_eq!(out[32..64], prf(key, &[&out[..32], seed, &[2]]));
        assert!(prf_plus(key, &[seed], 255 * 32).is_ok());
        assert!(prf_plus(key, &[seed], 255 * 32 + 1).is_err());
    }

    const PRF_PLUS_EXPECTED: &str = include_str!("../testdata/prf_plus_sha256.hex");

    #[allow(deprecated)]
    fn fixed(bytes: &[u8]) -> ring::test::rand::FixedSliceRandom<'_> {
        ring::test::rand::FixedSliceRandom { bytes }
    }

    /// RFC 7748 §6.1 (the vectors RFC 8031 points to), with the private
    /// scalars injected through ring's fixed-output test RNG.
    #[test]
    fn x25519_rfc7748() {
        let a_priv = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let a_pub = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let b_priv = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let b_pub = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        let a = KeyShare::generate(DhGroup::Curve25519, &fixed(&a_priv)).unwrap();
        let b = KeyShare::generate(DhGroup::Curve25519, &fixed(&b_priv)).unwrap();
        assert_eq!(a.public(), &a_pub[..]);
        assert_eq!(b.public(), &b_pub[..]);
        assert_eq!(a.agree(&b_pub).unwrap(), shared);
        assert_eq!(b.agree(&a_pub).unwrap(), shared);
        // RFC 8031 §2: an all-zero shared secret (a low-order point) is refused.
        let c = KeyShare::generate(DhGroup::Curve25519, &fixed(&a_priv)).unwrap();
        assert!(c.agree(&[0u8; 32]).is_err());
    }

    /// RFC 5903 §8.1, 256-bit random ECP group: both public values in the
    /// IKEv2 x || y form and the shared x-coordinate.
    #[test]
    fn ecp256_rfc5903() {
        let i = hex("C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433");
        let gix = hex("DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180");
        let giy = hex("5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3");
        let r = hex("C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53");
        let grx = hex("D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63");
        let gry = hex("56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB");
        let girx = hex("D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE");
        let ki = KeyShare::generate(DhGroup::Ecp256, &fixed(&i)).unwrap();
        let kr = KeyShare::generate(DhGroup::Ecp256, &fixed(&r)).unwrap();
        assert_eq!(ki.public(), [gix.clone(), giy.clone()].concat());
        assert_eq!(kr.public(), [grx.clone(), gry.clone()].concat());
        assert_eq!(ki.agree(&[grx, gry].concat()).unwrap(), girx);
        assert_eq!(kr.agree(&[gix, giy.clone()].concat()).unwrap(), girx);
        // A point off the curve and a wrong length are refused.
        let bad = KeyShare::generate(DhGroup::Ecp256, &ring::rand::SystemRandom::new()).unwrap();
        assert!(bad.agree(&[1u8; 64]).is_err());
        let bad = KeyShare::generate(DhGroup::Ecp256, &ring::rand::SystemRandom::new()).unwrap();
        assert!(bad.agree(&giy).is_err());
    }

    #[test]
    fn sk_payload_round_trip_and_tamper() {
        let keys =
            derive_ike_keys(CipherSuite::Aes256Gcm, &[1; 32], &[2; 32], &[3; 32], 7, 9).unwrap();
        assert_eq!(keys.sk_ei.len(), 36);
        assert_ne!(keys.sk_ei, keys.sk_er);
        let seal = SkCipher::new(CipherSuite::Aes256Gcm, &keys.sk_ei).unwrap();
        let header = Header {
            spi_i: 7,
            spi_r: 9,
            next_payload: 0,
            version: VERSION,
            exchange: ExchangeType::IkeAuth,
            flags: flags::INITIATOR,
            message_id: 1,
            length: 0,
        };
        let mut chain = ChainBuilder::new();
        chain.push(crate::message::payload_type::NONCE, &[5; 16]);
        let (first, inner) = chain.finish();
        let bytes = seal.seal(header, first, &inner, 1);
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(msg.header.length as usize, bytes.len());
        let (f, plain) = seal.open(&msg).unwrap();
        assert_eq!((f, plain), (first, inner));
        // Any flipped bit, header included (it is associated data), fails.
        for at in [0, 20, 30, 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            if let Ok(m) = Message::parse(&bad) {
                assert!(seal.open(&m).is_err(), "flip at {at}");
            }
        }
        // The other direction's key does not open it.
        let other = SkCipher::new(CipherSuite::Aes256Gcm, &keys.sk_er).unwrap();
        assert_eq!(other.open(&msg), Err(OpenError::Integrity));
        let plain = emit_plain(header, ChainBuilder::new());
        assert_eq!(
            seal.open(&Message::parse(&plain).unwrap()),
            Err(OpenError::NoSk)
        );
    }

    #[test]
    fn psk_auth_verifies_only_the_same_inputs() {
        let a = psk_auth(b"secret", &[1; 32], b"msg", &[2; 32], b"\x02\0\0\0id");
        assert!(verify_psk_auth(
            b"secret",
            &[1; 32],
            b"msg",
            &[2; 32],
            b"\x02\0\0\0id",
            &a
        ));
        assert!(!verify_psk_auth(
            b"wrong",
            &[1; 32],
            b"msg",
            &[2; 32],
            b"\x02\0\0\0id",
            &a
        ));
        assert!(!verify_psk_auth(
            b"secret",
            &[1; 32],
            b"msg",
            &[2; 32],
            b"\x02\0\0\0ie",
            &a
        ));
        // By hand: prf(prf(K, pad), octets).
        let k = prf(b"secret", &[b"Key Pad for IKEv2"]);
        let id = prf(&[1; 32], &[b"\x02\0\0\0id"]);
        assert_eq!(a, prf(&k, &[b"msg", &[2; 32], &id]));
    }

    #[test]
    fn child_keys_follow_rfc_order() {
        for c in CipherSuite::ALL {
            let (i2r, r2i) = child_keys(&[4; 32], c, None, &[1; 32], &[2; 32]).unwrap();
            let km = prf_plus(&[4; 32], &[&[1; 32], &[2; 32]], 2 * c.key_material_len()).unwrap();
            assert_eq!(i2r, km[..c.key_material_len()]);
            assert_eq!(r2i, km[c.key_material_len()..]);
            // The ESP crate accepts them as they are.
            strait_esp::SaCipher::new(c, &i2r).unwrap();
        }
    }

    #[test]
    fn nat_hash_depends_on_every_input() {
        let a: std::net::SocketAddr = "192.0.2.1:500".parse().unwrap();
        let b: std::net::SocketAddr = "192.0.2.1:4500".parse().unwrap();
        assert_ne!(nat_hash(1, 2, a), nat_hash(1, 2, b));
        assert_ne!(nat_hash(1, 2, a), nat_hash(1, 3, a));
        assert_eq!(nat_hash(1, 2, a), nat_hash(1, 2, a));
    }
}
