//! Configured keys across restarts, reloads, renames and switches: no
//! (key, sequence number) is ever sealed twice, and nothing accepted once
//! is accepted again (RFC 4106 §3.1, RFC 4303 §3.4.3).

use std::path::{Path, PathBuf};

use super::esp::seal_at_branch;
use super::*;
use crate::sastore::{test_dir, IN_FLUSH, OUT_RESERVE};

fn build_at(text: &str, dir: &Path, previous: Option<&Tables>, generation: u64) -> Tables {
    let mut c = Config::parse(text, "site.toml").unwrap();
    c.engine.state_dir = Some(dir.to_path_buf());
    c.engine.manual_keying = true;
    Tables::build(&c, "site.toml", generation, 3, previous, |name| {
        Ok(KernelLink {
            ifindex: 2,
            mac: if name == "lan" { LAN_MAC } else { WAN_MAC },
            mtu: 1500,
        })
    })
    .unwrap()
}

/// The ESP sequence number of a sealed WAN frame (Ethernet, IPv4, UDP).
fn esp_seq(wire: &[u8]) -> u32 {
    let at = ETH_LEN + 20 + 8 + 4;
    u32::from_be_bytes(wire[at..at + 4].try_into().unwrap())
}

fn seal_n(t: &Tables, p: &mut Pipeline<u32>, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| esp_seq(&seal_at_branch(t, p, 40).0))
        .collect()
}

const OTHER_KEY: &str = "5a5b5c5d5e5f606162636465666768696a6b6c6d";
const BRANCH_OUT_KEY: &str = "000102030405060708090a0b0c0d0e0f10111213";

#[test]
fn restarts_reloads_renames_and_switches_never_repeat_a_sequence_number() {
    let dir: PathBuf = test_dir("branch-seq");
    let mut used: Vec<u32> = Vec::new();
    let record = |used: &mut Vec<u32>, seqs: Vec<u32>, what: &str| {
        let last = used.last().copied().unwrap_or(0);
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] > last,
            "{what}: {seqs:?} after {last}"
        );
        used.extend(seqs);
    };
    let t1 = build_at(BRANCH, &dir, None, 1);
    let mut p = pipeline();
    record(&mut used, seal_n(&t1, &mut p, 3), "first start");

    // A reload that changes the tunnel's prefixes (new selectors: a new SA
    // under the same key) continues the count.
    let wider = BRANCH.replace(
        r#"prefixes = ["10.2.0.0/16"]"#,
        r#"prefixes = ["10.2.0.0/16", "10.3.0.0/16"]"#,
    );
    let t2 = build_at(&wider, &dir, Some(&t1), 2);
    assert!(!Arc::ptr_eq(&t1.tunnels[0].out_sa, &t2.tunnels[0].out_sa));
    record(&mut used, seal_n(&t2, &mut p, 3), "after a prefix change");

    // So does a renamed tunnel.
    let renamed = wider.replace(r#"name = "hub""#, r#"name = "hub-east""#);
    let t3 = build_at(&renamed, &dir, Some(&t2), 3);
    record(&mut used, seal_n(&t3, &mut p, 3), "after a rename");

    // Switching to another key and back continues the first key's count.
    let switched = renamed.replace(BRANCH_OUT_KEY, OTHER_KEY);
    let t4 = build_at(&switched, &dir, Some(&t3), 4);
    let other = seal_n(&t4, &mut p, 2);
    assert_eq!(other, vec![1, 2], "a new key starts at 1");
    // The first key is out of use now: its exact position is recorded.
    drop((t1, t2, t3));
    p.esp.sync(&t4);
    t4.sa_store.as_ref().unwrap().maintain(Instant::now());
    let t5 = build_at(&renamed, &dir, Some(&t4), 5);
    record(&mut used, seal_n(&t5, &mut p, 3), "after switching back");

    // A crash: nothing recorded at exit. The next process continues above
    // the whole reservation.
    drop((t4, t5, p));
    let t6 = build_at(BRANCH, &dir, None, 1);
    let mut p = pipeline();
    let after_crash = seal_n(&t6, &mut p, 3);
    assert!(
        u64::from(after_crash[0]) > OUT_RESERVE,
        "after a crash: {after_crash:?}"
    );
    record(&mut used, after_crash, "after a crash");

    // A clean stop records the exact position: little is skipped.
    t6.sa_store.as_ref().unwrap().close();
    drop((t6, p));
    let t7 = build_at(BRANCH, &dir, None, 1);
    let mut p = pipeline();
    let after_stop = seal_n(&t7, &mut p, 3);
    let last = *used.last().unwrap();
    assert!(
        after_stop[0] > last && after_stop[0] <= last + strait_esp::DEFAULT_SEQ_BLOCK + 1,
        "after a clean stop: {after_stop:?}, last used {last}"
    );
    record(&mut used, after_stop, "after a clean stop");
}

#[test]
fn a_restarted_hub_refuses_what_it_accepted_and_a_restarted_branch_gets_through() {
    let (bdir, hdir) = (test_dir("b"), test_dir("h"));
    let branch = build_at(BRANCH, &bdir, None, 1);
    let hub = build_at(HUB, &hdir, None, 1);
    let (mut pb, mut ph) = (pipeline(), pipeline());
    let mut sent = Vec::new();
    for _ in 0..5 {
        let (wire, _) = seal_at_branch(&branch, &mut pb, 40);
        assert!(matches!(
            Frame::new(&wire).run(&mut ph, &hub, 1),
            Verdict::Forward { .. }
        ));
        sent.push(wire);
    }
    // The hub crashes after its periodic record.
    hub.sa_store
        .as_ref()
        .unwrap()
        .maintain(Instant::now() + IN_FLUSH);
    drop((hub, ph));
    let hub = build_at(HUB, &hdir, None, 1);
    let mut ph = pipeline();
    for wire in &sent {
        assert_eq!(
            Frame::new(wire).run(&mut ph, &hub, 1),
            Verdict::Drop(DropReason::EspReplay),
            "a replay after the hub's restart"
        );
    }
    let (wire, _) = seal_at_branch(&branch, &mut pb, 40);
    assert!(matches!(
        Frame::new(&wire).run(&mut ph, &hub, 1),
        Verdict::Forward { .. }
    ));

    // Now the branch crashes; the hub keeps its window. The branch resumes
    // above everything it reserved, so the hub takes its packets (before,
    // a restarted sender started at 1 and its traffic died as replays).
    drop((branch, pb));
    let branch = build_at(BRANCH, &bdir, None, 1);
    let mut pb = pipeline();
    for _ in 0..3 {
        let (wire, _) = seal_at_branch(&branch, &mut pb, 40);
        assert!(matches!(
            Frame::new(&wire).run(&mut ph, &hub, 1),
            Verdict::Forward { .. }
        ));
    }
    assert_eq!(ph.counters[1].esp_opened, 1 + 3, "since the hub restarted");
}

#[test]
fn a_hub_reload_keeps_the_replay_window_of_a_changed_sa() {
    let (bdir, hdir) = (test_dir("b"), test_dir("h"));
    let branch = build_at(BRANCH, &bdir, None, 1);
    let hub1 = build_at(HUB, &hdir, None, 1);
    let (mut pb, mut ph) = (pipeline(), pipeline());
    let (wire, _) = seal_at_branch(&branch, &mut pb, 40);
    assert!(matches!(
        Frame::new(&wire).run(&mut ph, &hub1, 1),
        Verdict::Forward { .. }
    ));
    // A changed lifetime makes a new inbound SA under the same key.
    let changed = HUB.replace(
        r#"key = "000102030405060708090a0b0c0d0e0f10111213" }"#,
        r#"key = "000102030405060708090a0b0c0d0e0f10111213", soft_bytes = 1000000, hard_bytes = 2000000 }"#,
    );
    assert_ne!(changed, HUB);
    let hub2 = build_at(&changed, &hdir, Some(&hub1), 2);
    assert!(!Arc::ptr_eq(
        &hub1.tunnels[0].in_specs[0],
        &hub2.tunnels[0].in_specs[0]
    ));
    assert_eq!(
        Frame::new(&wire).run(&mut ph, &hub2, 1),
        Verdict::Drop(DropReason::EspReplay)
    );
}

#[test]
fn negotiated_keys_need_no_state_dir_and_keep_counting_across_reloads() {
    let parse = |text: &str| {
        let mut c = Config::parse(text, "site.toml").unwrap();
        for t in &mut c.tunnels {
            t.outbound.negotiated = true;
            t.inbound.negotiated = true;
        }
        c
    };
    let link = |name: &str| {
        Ok(KernelLink {
            ifindex: 2,
            mac: if name == "lan" { LAN_MAC } else { WAN_MAC },
            mtu: 1500,
        })
    };
    let t1 = Tables::build(&parse(BRANCH), "site.toml", 1, 3, None, link).unwrap();
    assert!(t1.sa_store.is_none(), "nothing to record");
    let mut p = pipeline();
    assert_eq!(seal_n(&t1, &mut p, 3), vec![1, 2, 3]);
    let wider = BRANCH.replace(
        r#"prefixes = ["10.2.0.0/16"]"#,
        r#"prefixes = ["10.2.0.0/16", "10.3.0.0/16"]"#,
    );
    let t2 = Tables::build(&parse(&wider), "site.toml", 2, 3, Some(&t1), link).unwrap();
    let after = seal_n(&t2, &mut p, 2);
    assert!(
        after[0] > 3 && after[1] > after[0],
        "{after:?}: the count goes on"
    );
}
