//! One million sessions created and expired with memory fixed up front.

mod common;

use common::*;
use strait_nat::*;

const SESSIONS: u32 = 1_000_000;
const DESTINATIONS: u32 = 16;

fn flow(k: u32) -> (Endpoint, Endpoint) {
    let endpoint = k / DESTINATIONS;
    let host = endpoint / 16;
    let inside = ep(
        ip(10, (host >> 8) as u8, host as u8, 1),
        10_000 + (endpoint % 16) as u16,
    );
    let remote = ep(ip(192, 0, 2, (k % DESTINATIONS) as u8 + 1), 443);
    (inside, remote)
}

fn open(nat: &mut NatWorker, count: u32, now: u64) {
    let mut packet = udp(ep(ip(10, 0, 0, 1), 1), ep(ip(192, 0, 2, 1), 1), b"", false);
    for k in 0..count {
        let (inside, remote) = flow(k);
        // Rewrite the template in place: addresses and ports only.
        packet[12..16].copy_from_slice(&inside.addr.octets());
        packet[16..20].copy_from_slice(&remote.addr.octets());
        packet[20..22].copy_from_slice(&inside.port.to_be_bytes());
        packet[22..24].copy_from_slice(&remote.port.to_be_bytes());
        assert_eq!(
            nat.translate_outbound(&mut packet, wan(), now),
            Verdict::Translated,
            "flow {k}"
        );
    }
}

#[test]
fn a_million_sessions_fit_in_preallocated_memory() {
    let config = NatConfig {
        max_sessions: 1 << 20,
        ..NatConfig::default()
    };
    let mut nat = masquerade_worker(config);
    open(&mut nat, 1, 0);
    let before = nat.memory_bytes();

    open(&mut nat, SESSIONS, 0);
    assert_eq!(nat.session_count(), SESSIONS as usize);
    assert_eq!(nat.mapping_count(), (SESSIONS / DESTINATIONS) as usize);
    assert_eq!(nat.memory_bytes(), before, "no growth while filling");

    // Replies still find their sessions in the full table.
    for k in [0, 77_777, 999_999] {
        let (inside, remote) = flow(k);
        let mut probe = udp(inside, remote, b"", false);
        nat.translate_outbound(&mut probe, wan(), 1);
        let mut reply = udp(remote, src_of(&probe), b"", false);
        assert_eq!(nat.translate_inbound(&mut reply, 1), Verdict::Translated);
        assert_eq!(dst_of(&reply), inside);
    }

    // Everything idle for the UDP timeout goes; probes were refreshed at 1.
    assert_eq!(nat.expire(300, usize::MAX), SESSIONS as usize - 3);
    assert_eq!(nat.expire(301, usize::MAX), 3);
    assert_eq!(
        (nat.session_count(), nat.mapping_count(), nat.ports_in_use()),
        (0, 0, 0)
    );
    assert_eq!(nat.counters().sessions_expired, u64::from(SESSIONS));

    // Churn reuses the slots.
    open(&mut nat, SESSIONS / 4, 1000);
    assert_eq!(nat.memory_bytes(), before, "no growth after churn");

    let per_session = nat.memory_bytes() as f64 / nat.capacity() as f64;
    // Port bitmaps for the one masquerade address (3 protocols x 8 KiB,
    // plus the cooling generations) and the per-rule counts are the only
    // memory outside the per-slot bound.
    let bound = nat.capacity() * bytes_per_session_bound()
        + port_bitmap_bytes_per_address(true)
        + RULE_COUNT_BYTES
        + 1024;
    println!(
        "nat memory: {} bytes for {} session slots = {per_session:.1} bytes/session (bound {} bytes/session from struct sizes)",
        nat.memory_bytes(),
        nat.capacity(),
        bytes_per_session_bound()
    );
    assert!(
        nat.memory_bytes() <= bound,
        "{} > {bound}",
        nat.memory_bytes()
    );
}
