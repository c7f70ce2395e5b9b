//! Combined-mode ciphers for ESP: AES-GCM (RFC 4106) and ChaCha20-Poly1305
//! (RFC 7634), both with a 4-byte salt and an 8-byte explicit IV.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::error::ConfigError;
use crate::packet::{HEADER_LEN, ICV_LEN, IV_LEN};

/// Salt length: the last 4 bytes of the key material (RFC 4106 §8.1,
/// RFC 7634 §4).
pub const SALT_LEN: usize = 4;

/// Cipher suites an SA can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// AES-128-GCM with 16-byte ICV (RFC 4106, IKEv2 transform 20, 128-bit key).
    Aes128Gcm,
    /// AES-256-GCM with 16-byte ICV (RFC 4106, IKEv2 transform 20, 256-bit key).
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 7634, IKEv2 transform 28).
    ChaCha20Poly1305,
}

impl CipherSuite {
    /// All suites, for tests and benchmarks.
    pub const ALL: [CipherSuite; 3] = [
        CipherSuite::Aes128Gcm,
        CipherSuite::Aes256Gcm,
        CipherSuite::ChaCha20Poly1305,
    ];

    /// Cipher key length without the salt.
    pub const fn key_len(self) -> usize {
        match self {
            CipherSuite::Aes128Gcm => 16,
            CipherSuite::Aes256Gcm | CipherSuite::ChaCha20Poly1305 => 32,
        }
    }

    /// Key material length: key followed by the 4-byte salt.
    pub const fn key_material_len(self) -> usize {
        self.key_len() + SALT_LEN
    }

    /// Stable name for configuration and logs.
    pub const fn name(self) -> &'static str {
        match self {
            CipherSuite::Aes128Gcm => "aes128gcm16",
            CipherSuite::Aes256Gcm => "aes256gcm16",
            CipherSuite::ChaCha20Poly1305 => "chacha20poly1305",
        }
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            CipherSuite::Aes128Gcm => &aead::AES_128_GCM,
            CipherSuite::Aes256Gcm => &aead::AES_256_GCM,
            CipherSuite::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// Signals that ICV verification failed; deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuthFailed;

/// An expanded key plus salt. Immutable after construction, so one instance
/// is shared by every worker that uses the SA.
pub struct SaCipher {
    suite: CipherSuite,
    key: LessSafeKey,
    salt: [u8; SALT_LEN],
}

impl core::fmt::Debug for SaCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print key or salt.
        f.debug_struct("SaCipher")
            .field("suite", &self.suite)
            .finish()
    }
}

impl SaCipher {
    /// Expands `key_material` (key || 4-byte salt, as IKEv2 derives it).
    pub fn new(suite: CipherSuite, key_material: &[u8]) -> Result<Self, ConfigError> {
        if key_material.len() != suite.key_material_len() {
            return Err(ConfigError::KeyLength {
                cipher: suite.name(),
                got: key_material.len(),
                expected: suite.key_material_len(),
            });
        }
        let (key, salt) = key_material.split_at(suite.key_len());
        let unbound =
            UnboundKey::new(suite.algorithm(), key).map_err(|_| ConfigError::KeyLength {
                cipher: suite.name(),
                got: key_material.len(),
                expected: suite.key_material_len(),
            })?;
        let mut salt_arr = [0u8; SALT_LEN];
        salt_arr.copy_from_slice(salt);
        Ok(SaCipher {
            suite,
            key: LessSafeKey::new(unbound),
            salt: salt_arr,
        })
    }

    /// The cipher suite.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// Nonce = salt || explicit IV (RFC 4106 §4, RFC 7634 §2).
    fn nonce(&self, iv: &[u8]) -> Nonce {
        let mut n = [0u8; aead::NONCE_LEN];
        n[..SALT_LEN].copy_from_slice(&self.salt);
        n[SALT_LEN..].copy_from_slice(&iv[..IV_LEN]);
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypts and authenticates an ESP packet in place.
    ///
    /// `esp` is the whole packet: SPI, low sequence and IV already written,
    /// plaintext payload plus trailer after them, and `ICV_LEN` bytes at the
    /// end that receive the tag. `seq` is the full 64-bit sequence number.
    pub(crate) fn seal_packet(&self, esp: &mut [u8], seq: u64, esn: bool) {
        let (aad, aad_len) = build_aad(&esp[..HEADER_LEN], seq, esn);
        let nonce = self.nonce(&esp[HEADER_LEN..HEADER_LEN + IV_LEN]);
        let icv_at = esp.len() - ICV_LEN;
        let (body, icv) = esp.split_at_mut(icv_at);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce,
                Aad::from(&aad[..aad_len]),
                &mut body[HEADER_LEN + IV_LEN..],
            )
            // ring fails only when the input exceeds the cipher's maximum
            // length (2^36 bytes for GCM); a frame is orders below that.
            .expect("ESP payload within AEAD length limit");
        icv.copy_from_slice(tag.as_ref());
    }

    /// Verifies and decrypts an ESP packet in place; on success the bytes
    /// after the IV hold the plaintext payload and trailer (the ICV bytes are
    /// left as they were). Returns the plaintext length.
    pub(crate) fn open_packet(
        &self,
        esp: &mut [u8],
        seq: u64,
        esn: bool,
    ) -> Result<usize, AuthFailed> {
        let (aad, aad_len) = build_aad(&esp[..HEADER_LEN], seq, esn);
        let nonce = self.nonce(&esp[HEADER_LEN..HEADER_LEN + IV_LEN]);
        let plain = self
            .key
            .open_in_place(
                nonce,
                Aad::from(&aad[..aad_len]),
                &mut esp[HEADER_LEN + IV_LEN..],
            )
            .map_err(|_| AuthFailed)?;
        Ok(plain.len())
    }
}

/// AAD is SPI || seq (32-bit) or SPI || seq-high || seq-low with ESN
/// (RFC 4303 §2.2.1, RFC 4106 §5, RFC 7634 §3). The high half is never sent.
fn build_aad(header: &[u8], seq: u64, esn: bool) -> ([u8; 12], usize) {
    let mut aad = [0u8; 12];
    aad[..4].copy_from_slice(&header[..4]);
    if esn {
        aad[4..8].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
        aad[8..12].copy_from_slice(&header[4..8]);
        (aad, 12)
    } else {
        aad[4..8].copy_from_slice(&header[4..8]);
        (aad, 8)
    }
}

#[cfg(test)]
mod tests {
    //! Known-answer tests. Expected ciphertexts are quoted from
    //! draft-mcgrew-gcm-test-01 §4 (cases numbered as in the draft) and
    //! RFC 7634 Appendix A; none were produced by this code.
    //! Case 7 uses AES-192, which this crate does not offer, so it is absent.
    //! Cases are numbered by their order in the draft's AES-GCM list; the
    //! SPI is given as well so each can be found in the draft unambiguously.

    use super::*;
    use crate::testutil::hex;

    struct Vector {
        case: &'static str,
        suite: CipherSuite,
        key_material: &'static str,
        seq: u64,
        esn: bool,
        plaintext: &'static str,
        packet: &'static str,
    }

    const VECTORS: &[Vector] = &[
        Vector {
            case: "mcgrew case 1 (ESN)",
            suite: CipherSuite::Aes128Gcm,
            key_material: "4c80cdefbb5d10da906ac73c3613a634 2e443b68",
            seq: 0x8765_4321_0000_0000,
            esn: true,
            plaintext: "45000048699a000080114db7c0a80102 c0a801010a9bf15638d3010000010000
                        00000000045f736970045f7564700373 69700963796265726369747902646b00
                        0021000101020201",
            packet: "00004321000000004956ed7e3b244cfe fecf537e729d5b07dc30df528dd22b76
                     8d1b98736696a6fd348509fa13ceac34 cfa2436f14a3f3cf65925bf1f4a13c5d
                     15b21e1884f5ff6247aeabb786b93bce 61bc17d768fd9732459018148f6cbe72
                     2fd04796562dfdb4",
        },
        Vector {
            case: "mcgrew case 2",
            suite: CipherSuite::Aes128Gcm,
            key_material: "feffe9928665731c6d6a8f9467308308 cafebabe",
            seq: 0xa,
            esn: false,
            plaintext: "4500003e698f000080114dccc0a80102 c0a801010a980035002a2343b2d00100
                        00010000000000000373697009637962 65726369747902646b00000100010001",
            packet: "0000a5f80000000afacedbaddecaf888 deb22cd9b07c72c16e3a65beeb8df304
                     a5a5897d33ae530f1ba76d5d114d2a5c 3de81827c10e9a4f51330d0eec416642
                     cfbb85a5b47e48a4ec3b9ba95d918bd1 83b70d3aa8bc6ee4c309e9d85a41ad4a",
        },
        Vector {
            case: "mcgrew case 3",
            suite: CipherSuite::Aes256Gcm,
            key_material: "abbccddef00112233445566778899aab abbccddef00112233445566778899aab
                           11223344",
            seq: 2,
            esn: false,
            plaintext: "4500003069a6400080062690c0a80102 9389155e0a9e008b2dc57ee000000000
                        7002400020bf0000020405b401010402 01020201",
            packet: "4a2cbfe3000000020102030405060708 ff425c9b724599df7a3bcd510194e00d
                     6a78107f1b0b1cbf06efae9d65a5d763 748a637985771d347f0545659f14e99d
                     ef842d8eb335f4eecfdbf831824b4c49 15956c96",
        },
        Vector {
            case: "mcgrew case 4",
            suite: CipherSuite::Aes128Gcm,
            key_material: "00000000000000000000000000000000 00000000",
            seq: 1,
            esn: false,
            plaintext: "4500003c99c500008001cb7a40679318 010101010800075c0200440061626364
                        65666768696a6b6c6d6e6f7071727374 75767761626364656667686901020201",
            packet: "00000000000000010000000000000000 4688daf2f973a392732909c331d56d60
                     f694abaa414b5e7ff5fdcdfff5e9a284 456476492719ffb64de7d9dca1e1d894
                     bc3bd57873ed4d181d19d4d5c8c18af3 f821d496eeb096e98ad2b69e4799c71d",
        },
        Vector {
            case: "mcgrew case 5 (ESN)",
            suite: CipherSuite::Aes128Gcm,
            key_material: "3de09874b388e6491988d0c3607eae1f 57690e43",
            seq: 0x1010_1010_1010_1010,
            esn: true,
            plaintext: "4500003c99c300008001cb7c40679318 010101010800085c0200430061626364
                        65666768696a6b6c6d6e6f7071727374 75767761626364656667686901020201",
            packet: "42f67e3f101010104e280000a2fca1a3 fba2caa4853cf9f0f22cb10d86dd83b0
                     fec75691cf1a04b00d1138ec9c357917 65acbd8701ad79845bf9fe3fba487bc9
                     1755e6662b4c8d0d1f5e22739530320a e0d731cc978ecafaeae88f00e80d6e48",
        },
        Vector {
            case: "mcgrew case 6 (ESN)",
            suite: CipherSuite::Aes128Gcm,
            key_material: "3de09874b388e6491988d0c3607eae1f 57690e43",
            seq: 0x1010_1010_1010_1010,
            esn: true,
            plaintext: "4500001c42a200008001441f406793b6 e00000020a00f5ff01020201",
            packet: "42f67e3f101010104e280000a2fca1a3 fba2ca845e5df9f0f22c3e6e86dd831e
                     1fc65792cd1af9130e1379ed369f071f 35e034be95f112e4e7d05d35",
        },
        Vector {
            case: "mcgrew case 8 (SPI 00000100, ESN, high half 0)",
            suite: CipherSuite::Aes128Gcm,
            key_material: "abbccddef00112233445566778899aab decaf888",
            seq: 1,
            esn: true,
            plaintext: "4500004933ba00007f119106c3fb1d10 c2b1d326c02831ce0035dd7b800302d5
                        00004e20001e8c18d75b81dc91baa047 6b91b924b280389d92c963bac046ec95
                        9b6266c04722b14923010101",
            packet: "0000010000000001cafedebaceface74 18a6fd42f72cbf4ab2a2ea901f73d814
                     e3e7f243d95412e1c349c1d2fbec168f 9190feebaf2cb01984e65863965d7472
                     b79da345e0e780191f0d2f0e0f496c22 6f2127b27db35724e7845d68651f57e6
                     5f354f75ff17015769623436",
        },
        Vector {
            case: "mcgrew case 9 (SPI 17405e67, ESN)",
            suite: CipherSuite::Aes256Gcm,
            key_material: "abbccddef00112233445566778899aab abbccddef00112233445566778899aab
                           73616c74",
            seq: 0x156f_3126_dd0d_b99b,
            esn: true,
            plaintext: "45080028732c00004006e9f90a010612 0a01038f06b88023dd6bafbecb712602
                        50101f646d540001",
            packet: "17405e67dd0db99b616e640169766563 f2d69ecdbd5a0d5b8d5ef38bad4da58d
                     1f278fde98ef67549d524a3018d9a57f f4d3a31ce673119e451626c2415771e3
                     b7eebca614c89b35",
        },
        Vector {
            case: "mcgrew case 12 (SPI 335467ae, seq 2^32-1)",
            suite: CipherSuite::Aes128Gcm,
            key_material: "7d773d00c144c525ac619d18c84a3f47 d9664267",
            seq: 0xffff_ffff,
            esn: false,
            plaintext: "01020201",
            packet: "335467aeffffffff43457e9182443bc6 437f866bcb3f699fe9b0822bac961c45
                     04bef270",
        },
        Vector {
            case: "mcgrew case 14 (SPI 796b6963, ESN seq 2^64-1)",
            suite: CipherSuite::Aes256Gcm,
            key_material: "6c6567616c697a656d6172696a75616e 61616e64646f69746265666f72656961
                           7475726e",
            seq: u64::MAX,
            esn: true,
            plaintext: "45000030da3a00008001df3bc0a80005 c0a800010800c6cd0200070061626364
                        65666768696a6b6c6d6e6f7071727374 01020201",
            packet: "796b6963ffffffff333021696765746d f97ab2aa356d8edce17644ac8c78e25d
                     d24dedbb29ebf1b64a274b39b49c3a86 4cd3d78ca4ae68a32b42458fb57dbe82
                     1dcc63b9d0937ba2945f669368661a32 9fb4c053",
        },
        Vector {
            case: "RFC 7634 Appendix A",
            suite: CipherSuite::ChaCha20Poly1305,
            key_material: "808182838485868788898a8b8c8d8e8f 909192939495969798999a9b9c9d9e9f
                           a0a1a2a3",
            seq: 5,
            esn: false,
            plaintext: "45000054a6f200004001e778c6336405 c000020508005b7a3a080000553bec10
                        0007362708090a0b0c0d0e0f10111213 1415161718191a1b1c1d1e1f20212223
                        2425262728292a2b2c2d2e2f30313233 3435363701020204",
            packet: "01020304000000051011121314151617 24039428b97f417e3c13753a4f05087b
                     67c352e6a7fab1b982d466ef407ae5c6 14ee8099d52844eb61aa95dfab4c02f7
                     2aa71e7c4c4f64c9befe2facc638e8f3 cbec163fac469b502773f6fb94e664da
                     9165b82829f641e076aaa8266b7fb0f7 b11b369907e1ad43",
        },
    ];

    #[test]
    fn seal_matches_published_vectors() {
        for v in VECTORS {
            let cipher = SaCipher::new(v.suite, &hex(v.key_material)).unwrap();
            let expected = hex(v.packet);
            let plain = hex(v.plaintext);
            let mut buf = vec![0u8; HEADER_LEN + IV_LEN + plain.len() + ICV_LEN];
            // Header and IV come from the vector; the payload is plaintext.
            buf[..HEADER_LEN + IV_LEN].copy_from_slice(&expected[..HEADER_LEN + IV_LEN]);
            buf[HEADER_LEN + IV_LEN..HEADER_LEN + IV_LEN + plain.len()].copy_from_slice(&plain);
            cipher.seal_packet(&mut buf, v.seq, v.esn);
            assert_eq!(buf, expected, "{}", v.case);
        }
    }

    #[test]
    fn open_recovers_published_plaintext() {
        for v in VECTORS {
            let cipher = SaCipher::new(v.suite, &hex(v.key_material)).unwrap();
            let mut buf = hex(v.packet);
            let plain = hex(v.plaintext);
            let n = cipher.open_packet(&mut buf, v.seq, v.esn).unwrap();
            assert_eq!(&buf[HEADER_LEN + IV_LEN..][..n], &plain[..], "{}", v.case);
        }
    }

    #[test]
    fn wrong_high_sequence_half_fails_authentication() {
        // The ESN high half is only in the AAD: guessing it wrong must fail.
        let v = &VECTORS[0];
        let cipher = SaCipher::new(v.suite, &hex(v.key_material)).unwrap();
        let mut buf = hex(v.packet);
        assert_eq!(
            cipher.open_packet(&mut buf, v.seq + (1 << 32), true),
            Err(AuthFailed)
        );
        let mut buf = hex(v.packet);
        assert_eq!(cipher.open_packet(&mut buf, v.seq, false), Err(AuthFailed));
    }

    #[test]
    fn key_material_length_is_checked() {
        for suite in CipherSuite::ALL {
            let err = SaCipher::new(suite, &[0u8; 16]).unwrap_err();
            assert!(matches!(err, ConfigError::KeyLength { got: 16, .. }));
            assert!(SaCipher::new(suite, &vec![0u8; suite.key_material_len()]).is_ok());
        }
    }
}
