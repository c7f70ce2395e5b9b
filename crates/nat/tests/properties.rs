//! Property tests: incremental checksum updates equal a full recompute on
//! random packets, and no input makes the translator panic.

mod common;

use common::*;
use proptest::prelude::*;
use strait_nat::*;

fn eif_worker() -> NatWorker {
    masquerade_worker(NatConfig {
        filtering: Filtering::EndpointIndependent,
        ..NatConfig::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn incremental_equals_full_recompute(
        host in any::<[u8; 3]>(),
        remote in any::<[u8; 4]>(),
        sport in 1u16..,
        dport in 1u16..,
        payload in proptest::collection::vec(any::<u8>(), 0..80),
        use_tcp in any::<bool>(),
        udp_checksum in any::<bool>(),
        occupy in any::<bool>(),
    ) {
        let mut nat = eif_worker();
        let inside = ep(ip(10, host[0], host[1], host[2]), sport);
        let remote = ep(remote.into(), dport);
        if occupy {
            // Another host holds the port: forces a port change too.
            let mut other = udp(ep(ip(10, 255, 255, 254), sport), remote, b"", true);
            let mut other_tcp = tcp(ep(ip(10, 255, 255, 254), sport), remote, SYN, b"");
            nat.translate_outbound(&mut other, wan(), 0);
            nat.translate_outbound(&mut other_tcp, wan(), 0);
        }
        let make = |src, dst, flags| if use_tcp {
            tcp(src, dst, flags, &payload)
        } else {
            udp(src, dst, &payload, udp_checksum)
        };
        let mut out = make(inside, remote, SYN);
        prop_assert_eq!(nat.translate_outbound(&mut out, wan(), 1), Verdict::Translated);
        assert_checksums(&out);
        let external = src_of(&out);
        prop_assert_eq!(external.addr, WAN);
        // Translated packet equals a packet built from scratch.
        let expected = make(external, remote, SYN);
        prop_assert_eq!(&out, &expected);
        let mut back = make(remote, external, SYN_ACK);
        prop_assert_eq!(nat.translate_inbound(&mut back, 2), Verdict::Translated);
        prop_assert_eq!(&back, &make(remote, inside, SYN_ACK));
        // ICMP error about the outbound packet, quoting a random length.
        let quote = 28 + payload.len() % (out.len() - 27);
        let mut err = icmp_error(ip(198, 18, 0, 1), WAN, 11, 0, &out, quote);
        prop_assert_eq!(nat.translate_inbound(&mut err, 3), Verdict::Translated);
        assert_checksums(&err);
        let original = make(inside, remote, SYN);
        // A quote ending inside the TCP checksum field (one byte of it) cannot
        // be patched; every other byte must be the original's.
        let compare = if use_tcp && quote == 20 + 17 { quote - 1 } else { quote };
        prop_assert_eq!(&err[28..28 + compare], &original[..compare]);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut nat = eif_worker();
        let mut a = bytes.clone();
        let _ = nat.translate_outbound(&mut a, wan(), 0);
        let mut b = bytes;
        let _ = nat.translate_inbound(&mut b, 0);
    }

    #[test]
    fn corrupted_valid_packets_never_panic(
        flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..6),
        kind in 0u8..4,
        cut in 0usize..100,
    ) {
        let mut nat = eif_worker();
        let remote = ep(ip(192, 0, 2, 1), 53);
        let mut seed = udp(ep(ip(10, 0, 0, 2), 5000), remote, b"seed", true);
        nat.translate_outbound(&mut seed, wan(), 0);
        let mut p = match kind {
            0 => udp(remote, src_of(&seed), b"reply", true),
            1 => tcp(remote, src_of(&seed), ACK, b"data"),
            2 => icmp_echo(remote.addr, WAN, false, 5000, 1),
            _ => icmp_error(ip(198, 18, 0, 1), WAN, 3, 4, &seed, seed.len()),
        };
        for (at, value) in flips {
            let n = p.len();
            p[at % n] = value;
        }
        let keep = p.len().saturating_sub(cut % 8);
        p.truncate(keep);
        let _ = nat.translate_inbound(&mut p.clone(), 1);
        let _ = nat.translate_outbound(&mut p, wan(), 1);
    }
}
