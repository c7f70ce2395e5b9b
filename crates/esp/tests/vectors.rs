//! Published ESP packets opened through the public inbound API.
//!
//! Sources: RFC 7634 Appendix A (ChaCha20-Poly1305, tunnel mode, IPv4 inner)
//! and draft-mcgrew-gcm-test-01 §4 (AES-GCM). The draft's payloads carry
//! next header 1, i.e. they are not tunnel-mode packets, so this crate must
//! authenticate them (the replay window advances to the reconstructed
//! sequence number) and then drop them as `bad_inner`.

use std::time::Duration;

use strait_esp::*;

fn hex(text: &str) -> Vec<u8> {
    let t: String = text.split_whitespace().collect();
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap())
        .collect()
}

const NOW: Duration = Duration::ZERO;

#[test]
fn rfc7634_appendix_a_opens_to_the_published_inner_packet() {
    let key = hex("808182838485868788898a8b8c8d8e8f 909192939495969798999a9b9c9d9e9f a0a1a2a3");
    let mut cfg = SaConfig::new(0x0102_0304, CipherSuite::ChaCha20Poly1305, &key, NOW);
    cfg.esn = false;
    // The appendix's inner packet goes from 198.51.100.5 to 192.0.2.5.
    cfg.selectors = TrafficSelectors::new([TrafficSelector::new(
        IpCidr::new("198.51.100.5".parse().unwrap(), 32).unwrap(),
        IpCidr::new("192.0.2.5".parse().unwrap(), 32).unwrap(),
    )
    .unwrap()])
    .unwrap();
    let mut sad = SadIn::from_sas([InboundSa::new(&cfg).unwrap()]).unwrap();
    let mut packet = hex(
        "01020304000000051011121314151617 24039428b97f417e3c13753a4f05087b
         67c352e6a7fab1b982d466ef407ae5c6 14ee8099d52844eb61aa95dfab4c02f7
         2aa71e7c4c4f64c9befe2facc638e8f3 cbec163fac469b502773f6fb94e664da
         9165b82829f641e076aaa8266b7fb0f7 b11b369907e1ad43",
    );
    let inner = hex(
        "45000054a6f200004001e778c6336405 c000020508005b7a3a080000553bec10
         0007362708090a0b0c0d0e0f10111213 1415161718191a1b1c1d1e1f20212223
         2425262728292a2b2c2d2e2f30313233 34353637",
    );
    let len = packet.len();
    let opened = sad.open(&mut packet, 0..len, NOW).unwrap();
    assert_eq!(opened.seq, 5);
    assert_eq!(opened.next_header, NextHeader::Ipv4);
    assert_eq!(&packet[opened.inner], &inner[..]);

    // The same packet with a selector that excludes its source is refused.
    let mut narrow = cfg.clone();
    narrow.selectors = TrafficSelectors::new([TrafficSelector::new(
        IpCidr::new("198.51.100.6".parse().unwrap(), 32).unwrap(),
        IpCidr::new("192.0.2.5".parse().unwrap(), 32).unwrap(),
    )
    .unwrap()])
    .unwrap();
    let mut sa = InboundSa::new(&narrow).unwrap();
    let mut packet = hex(
        "01020304000000051011121314151617 24039428b97f417e3c13753a4f05087b
         67c352e6a7fab1b982d466ef407ae5c6 14ee8099d52844eb61aa95dfab4c02f7
         2aa71e7c4c4f64c9befe2facc638e8f3 cbec163fac469b502773f6fb94e664da
         9165b82829f641e076aaa8266b7fb0f7 b11b369907e1ad43",
    );
    assert_eq!(
        sa.open(&mut packet, 0..len, NOW),
        Err(DropReason::SelectorMismatch)
    );
}

struct Case {
    name: &'static str,
    suite: CipherSuite,
    key_material: &'static str,
    esn: bool,
    /// Highest sequence number the receiver has seen before this packet.
    resume_top: u64,
    expected_seq: u64,
    packet: &'static str,
}

const MCGREW: &[Case] = &[
    Case {
        name: "case 1: ESN, high half inferred across a 2^32 boundary",
        suite: CipherSuite::Aes128Gcm,
        key_material: "4c80cdefbb5d10da906ac73c3613a634 2e443b68",
        esn: true,
        resume_top: 0x8765_4320_ffff_fff0,
        expected_seq: 0x8765_4321_0000_0000,
        packet: "00004321000000004956ed7e3b244cfe fecf537e729d5b07dc30df528dd22b76
                 8d1b98736696a6fd348509fa13ceac34 cfa2436f14a3f3cf65925bf1f4a13c5d
                 15b21e1884f5ff6247aeabb786b93bce 61bc17d768fd9732459018148f6cbe72
                 2fd04796562dfdb4",
    },
    Case {
        name: "case 2: 32-bit sequence",
        suite: CipherSuite::Aes128Gcm,
        key_material: "feffe9928665731c6d6a8f9467308308 cafebabe",
        esn: false,
        resume_top: 0,
        expected_seq: 0xa,
        packet: "0000a5f80000000afacedbaddecaf888 deb22cd9b07c72c16e3a65beeb8df304
                 a5a5897d33ae530f1ba76d5d114d2a5c 3de81827c10e9a4f51330d0eec416642
                 cfbb85a5b47e48a4ec3b9ba95d918bd1 83b70d3aa8bc6ee4c309e9d85a41ad4a",
    },
    Case {
        name: "case 3: AES-256, 32-bit sequence",
        suite: CipherSuite::Aes256Gcm,
        key_material: "abbccddef00112233445566778899aab abbccddef00112233445566778899aab
                       11223344",
        esn: false,
        resume_top: 0,
        expected_seq: 2,
        packet: "4a2cbfe3000000020102030405060708 ff425c9b724599df7a3bcd510194e00d
                 6a78107f1b0b1cbf06efae9d65a5d763 748a637985771d347f0545659f14e99d
                 ef842d8eb335f4eecfdbf831824b4c49 15956c96",
    },
    Case {
        name: "case 5: ESN 0x1010101010101010",
        suite: CipherSuite::Aes128Gcm,
        key_material: "3de09874b388e6491988d0c3607eae1f 57690e43",
        esn: true,
        resume_top: 0x1010_1010_1010_0000,
        expected_seq: 0x1010_1010_1010_1010,
        packet: "42f67e3f101010104e280000a2fca1a3 fba2caa4853cf9f0f22cb10d86dd83b0
                 fec75691cf1a04b00d1138ec9c357917 65acbd8701ad79845bf9fe3fba487bc9
                 1755e6662b4c8d0d1f5e22739530320a e0d731cc978ecafaeae88f00e80d6e48",
    },
    Case {
        name: "case 14 (SPI 796b6963): AES-256, ESN 2^64-1",
        suite: CipherSuite::Aes256Gcm,
        key_material: "6c6567616c697a656d6172696a75616e 61616e64646f69746265666f72656961
                       7475726e",
        esn: true,
        resume_top: u64::MAX - 100,
        expected_seq: u64::MAX,
        packet: "796b6963ffffffff333021696765746d f97ab2aa356d8edce17644ac8c78e25d
                 d24dedbb29ebf1b64a274b39b49c3a86 4cd3d78ca4ae68a32b42458fb57dbe82
                 1dcc63b9d0937ba2945f669368661a32 9fb4c053",
    },
];

#[test]
fn mcgrew_packets_authenticate_with_reconstructed_sequence_numbers() {
    for case in MCGREW {
        let key = hex(case.key_material);
        let mut packet = hex(case.packet);
        let spi = peek_spi(&packet).unwrap();
        let mut cfg = SaConfig::new(spi, case.suite, &key, NOW);
        cfg.esn = case.esn;
        let mut sa = InboundSa::resumed(&cfg, case.resume_top).unwrap();
        let len = packet.len();
        let pristine = packet.clone();
        assert_eq!(
            sa.open(&mut packet, 0..len, NOW),
            Err(DropReason::BadInner),
            "{}",
            case.name
        );
        assert_eq!(sa.replay_window().top(), case.expected_seq, "{}", case.name);
        assert_eq!(
            sa.counters().drops(DropReason::AuthFailed),
            0,
            "{}",
            case.name
        );
        // Delivered again it is a replay, caught before decryption.
        let mut again = pristine;
        assert_eq!(sa.open(&mut again, 0..len, NOW), Err(DropReason::Replay));
    }
}
