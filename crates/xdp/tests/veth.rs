//! AF_XDP ports on real veth pairs inside network namespaces (needs root).

#![deny(unsafe_code)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{pair, size_for, test_frame, test_seq, RawSocket, TEST_ETHERTYPE};
use strait_testbed::Netns;
use strait_xdp::{
    BindMode, BindPolicy, Error, FrameBatch, PortId, PortSet, PortSetConfig, PortSpec, XdpMode,
    DEFAULT_HEADROOM,
};

const FRAMES: u32 = 120;
const TIMEOUT: Duration = Duration::from_secs(3);

fn open(ns: &Netns, config: &PortSetConfig, ifnames: &[&str]) -> PortSet {
    ns.enter(|| {
        let specs: Vec<PortSpec> = ifnames
            .iter()
            .map(|name| PortSpec::named(name, 0))
            .collect::<Result<_, _>>()?;
        PortSet::open(config, &specs)
    })
    .expect("enter namespace")
    .unwrap_or_else(|e| panic!("opening AF_XDP ports {ifnames:?} in {ns}: {e}"))
}

/// Receives until `count` test frames arrived (or the timeout), checks
/// each against what was sent, and returns their descriptors' frames to
/// the pool. Returns sequence -> (ingress port, headroom).
fn receive_test_frames(ports: &mut PortSet, count: usize) -> BTreeMap<u32, (PortId, usize)> {
    let mut seen = BTreeMap::new();
    let mut batch = FrameBatch::new();
    let start = Instant::now();
    while seen.len() < count && start.elapsed() < TIMEOUT {
        if ports.receive(&mut batch) == 0 {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        for desc in batch.drain() {
            let bytes = ports.frame(&desc);
            if let Some(seq) = test_seq(bytes, TEST_ETHERTYPE) {
                assert_eq!(
                    bytes,
                    &test_frame(TEST_ETHERTYPE, seq, size_for(seq))[..],
                    "frame {seq} arrived altered"
                );
                let headroom = ports.umem().headroom(&desc);
                assert!(
                    seen.insert(seq, (desc.ingress(), headroom)).is_none(),
                    "frame {seq} twice"
                );
            }
            ports.drop_frame(desc);
        }
    }
    seen
}

fn inject(sock: &RawSocket, ethertype: u16, count: u32) {
    for seq in 0..count {
        sock.send(&test_frame(ethertype, seq, size_for(seq)));
    }
}

fn transmit_test_frames(ports: &mut PortSet, port: PortId, count: u32) {
    let mut batch = FrameBatch::new();
    for seq in 0..count {
        let mut desc = ports.alloc_frame().expect("free frame");
        let frame = test_frame(TEST_ETHERTYPE, seq, size_for(seq));
        ports.umem().set_len(&mut desc, frame.len()).unwrap();
        ports.frame_mut(&desc).copy_from_slice(&frame);
        if let Err(desc) = batch.push(desc) {
            ports.drop_frame(desc);
            panic!("batch full");
        }
        if batch.len() == 64 {
            assert_eq!(ports.transmit(port, &mut batch), 64);
        }
    }
    ports.transmit(port, &mut batch);
    assert!(batch.is_empty());
}

fn wait_completions(ports: &mut PortSet, port: PortId, count: u64) {
    let start = Instant::now();
    while ports.counters(port).unwrap().tx_completed < count && start.elapsed() < TIMEOUT {
        if ports.poll_completions() == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    assert_eq!(ports.counters(port).unwrap().tx_completed, count);
}

fn assert_all(seen: &BTreeMap<u32, (PortId, usize)>, count: u32, port: PortId) {
    let missing: Vec<u32> = (0..count).filter(|s| !seen.contains_key(s)).collect();
    assert!(missing.is_empty(), "frames never received: {missing:?}");
    for (seq, (ingress, headroom)) in seen {
        assert_eq!(*ingress, port, "frame {seq}");
        // Exactly the configured headroom: the kernel's own reservation
        // is part of it, not added on top.
        assert_eq!(*headroom, DEFAULT_HEADROOM as usize, "frame {seq} headroom");
    }
}

#[test]
fn native_mode_receives_injected_frames() {
    let (_tb, a, b) = pair("xdp-rx");
    let mut ports = open(&a, &PortSetConfig::default(), &["eth0"]);
    let report = ports.report().clone();
    eprintln!("{report}");
    // veth has no zero-copy: Auto must fall back and say so.
    if ports.bind_mode() == BindMode::Copy {
        assert!(report.zero_copy_refused.is_some(), "{report}");
    }
    assert_eq!(report.xdp_mode, XdpMode::Native);
    assert!(a.has_xdp("eth0").unwrap());

    let peer = RawSocket::open_in(&b, "eth0");
    inject(&peer, TEST_ETHERTYPE, FRAMES);
    let seen = receive_test_frames(&mut ports, FRAMES as usize);
    assert_all(&seen, FRAMES, PortId(0));
    let c = *ports.counters(PortId(0)).unwrap();
    assert!(c.rx_packets >= u64::from(FRAMES), "{c:?}");
    let sent_bytes: u64 = (0..FRAMES).map(|s| size_for(s) as u64).sum();
    assert!(c.rx_bytes >= sent_bytes, "{c:?}");
    assert_eq!(c.rx_invalid_descs, 0);
}

#[test]
fn transmitted_batches_reach_the_peer() {
    let (_tb, a, b) = pair("xdp-tx");
    let mut ports = open(&a, &PortSetConfig::default(), &["eth0"]);
    let peer = RawSocket::open_in(&b, "eth0");
    let pool_before = ports.umem().pool().len();

    transmit_test_frames(&mut ports, PortId(0), FRAMES);
    wait_completions(&mut ports, PortId(0), u64::from(FRAMES));
    let got = peer.capture(TEST_ETHERTYPE, FRAMES as usize, TIMEOUT);
    let mut seqs: Vec<u32> = got
        .iter()
        .map(|f| {
            let seq = test_seq(f, TEST_ETHERTYPE).unwrap();
            assert_eq!(f, &test_frame(TEST_ETHERTYPE, seq, size_for(seq)));
            seq
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..FRAMES).collect::<Vec<_>>());

    let c = *ports.counters(PortId(0)).unwrap();
    assert_eq!(c.tx_packets, u64::from(FRAMES));
    assert_eq!(c.tx_ring_full, 0);
    assert!(c.tx_kicks >= 1, "{c:?}");
    // Two batches of 64 and one of the rest: one kick each in copy mode,
    // never one per packet.
    assert!(c.tx_kicks < u64::from(FRAMES) / 8, "{c:?}");
    // Every transmitted frame came back to the pool.
    assert_eq!(ports.umem().pool().len(), pool_before);
}

#[test]
fn shared_umem_forwards_between_interfaces_without_copy() {
    strait_testbed::require_root();
    let mut tb = strait_testbed::Testbed::new("xdp-fwd");
    let a = tb.netns("a").unwrap();
    let dut = tb.netns("dut").unwrap();
    let b = tb.netns("b").unwrap();
    tb.veth((&a, "eth0"), (&dut, "p0")).unwrap();
    tb.veth((&dut, "p1"), (&b, "eth0")).unwrap();
    let mut ports = open(&dut, &PortSetConfig::default(), &["p0", "p1"]);
    assert_eq!(ports.len(), 2);
    let sender = RawSocket::open_in(&a, "eth0");
    let sink = RawSocket::open_in(&b, "eth0");

    inject(&sender, TEST_ETHERTYPE, FRAMES);
    let mut rx = FrameBatch::new();
    let mut out = FrameBatch::new();
    let mut forwarded = 0u32;
    let start = Instant::now();
    while forwarded < FRAMES && start.elapsed() < TIMEOUT {
        ports.receive(&mut rx);
        for desc in rx.drain() {
            if test_seq(ports.frame(&desc), TEST_ETHERTYPE).is_none() {
                ports.drop_frame(desc);
                continue;
            }
            assert_eq!(desc.ingress(), PortId(0));
            // The same UMEM address goes out of the other port: the frame
            // is not copied in userspace.
            if let Err(desc) = out.push(desc) {
                ports.drop_frame(desc);
            }
        }
        let addrs: Vec<u64> = out.iter().map(|d| d.addr()).collect();
        let sent = ports.transmit(PortId(1), &mut out);
        assert_eq!(sent, addrs.len());
        forwarded += sent as u32;
        ports.poll_completions();
    }
    assert_eq!(forwarded, FRAMES);
    wait_completions(&mut ports, PortId(1), u64::from(FRAMES));
    let got = sink.capture(TEST_ETHERTYPE, FRAMES as usize, TIMEOUT);
    assert_eq!(got.len(), FRAMES as usize);
    for f in &got {
        let seq = test_seq(f, TEST_ETHERTYPE).unwrap();
        assert_eq!(f, &test_frame(TEST_ETHERTYPE, seq, size_for(seq)));
    }
    let c0 = *ports.counters(PortId(0)).unwrap();
    let c1 = *ports.counters(PortId(1)).unwrap();
    assert!(c0.rx_packets >= u64::from(FRAMES));
    assert_eq!(c0.tx_packets, 0);
    assert_eq!(c1.tx_packets, u64::from(FRAMES));
}

#[test]
fn generic_mode_receives_and_transmits() {
    let (_tb, a, b) = pair("xdp-gen");
    let config = PortSetConfig {
        xdp_mode: XdpMode::Generic,
        bind: BindPolicy::ForceCopy,
        ..PortSetConfig::default()
    };
    let mut ports = open(&a, &config, &["eth0"]);
    assert_eq!(ports.bind_mode(), BindMode::Copy);
    assert!(ports.report().zero_copy_refused.is_none());
    let link = a.ip(&["-d", "link", "show", "dev", "eth0"]).unwrap();
    assert!(link.contains("xdpgeneric"), "{link}");

    let peer = RawSocket::open_in(&b, "eth0");
    inject(&peer, TEST_ETHERTYPE, FRAMES);
    let seen = receive_test_frames(&mut ports, FRAMES as usize);
    assert_all(&seen, FRAMES, PortId(0));

    transmit_test_frames(&mut ports, PortId(0), FRAMES);
    wait_completions(&mut ports, PortId(0), u64::from(FRAMES));
    assert_eq!(
        peer.capture(TEST_ETHERTYPE, FRAMES as usize, TIMEOUT).len(),
        FRAMES as usize
    );
}

#[test]
fn dropping_the_ports_detaches_the_program() {
    let (_tb, a, _b) = pair("xdp-drop");
    let ports = open(&a, &PortSetConfig::default(), &["eth0"]);
    assert!(a.has_xdp("eth0").unwrap(), "program attached while open");
    // A second attachment on the same interface is refused with a clear
    // error, not silently replaced.
    let err = a
        .enter(|| PortSet::open(&PortSetConfig::default(), &[PortSpec::named("eth0", 0)?]))
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Attach { .. }), "{err}");
    drop(ports);
    // The link is released when its last file reference goes; a process
    // another test thread is spawning holds a copy of our descriptors until
    // it execs, so allow a moment.
    a.wait_until("the XDP program to detach", Duration::from_secs(2), |ns| {
        !ns.has_xdp("eth0").unwrap()
    })
    .unwrap_or_else(|e| {
        let link = a.ip(&["-d", "link", "show", "dev", "eth0"]).unwrap();
        panic!("{e}: {link}")
    });
    // And the queue can be bound again right away.
    let again = open(&a, &PortSetConfig::default(), &["eth0"]);
    assert!(a.has_xdp("eth0").unwrap());
    drop(again);
}

#[test]
fn pass_list_hands_chosen_ethertypes_to_the_kernel() {
    let (_tb, a, b) = pair("xdp-pass");
    let config = PortSetConfig {
        pass_ethertypes: vec![TEST_ETHERTYPE],
        ..PortSetConfig::default()
    };
    let mut ports = open(&a, &config, &["eth0"]);
    let kernel_side = RawSocket::open_in(&a, "eth0");
    let peer = RawSocket::open_in(&b, "eth0");
    let other = TEST_ETHERTYPE + 1;
    inject(&peer, TEST_ETHERTYPE, 20);
    inject(&peer, other, 20);

    // The passed EtherType reaches the kernel (and its packet sockets)...
    let passed = kernel_side.capture(TEST_ETHERTYPE, 20, TIMEOUT);
    assert_eq!(passed.len(), 20);
    // ...and the other one only the AF_XDP socket.
    let mut batch = FrameBatch::new();
    let mut redirected = 0;
    let mut leaked = 0;
    let start = Instant::now();
    while redirected < 20 && start.elapsed() < TIMEOUT {
        ports.receive(&mut batch);
        for desc in batch.drain() {
            let f = ports.frame(&desc);
            redirected += usize::from(test_seq(f, other).is_some());
            leaked += usize::from(test_seq(f, TEST_ETHERTYPE).is_some());
            ports.drop_frame(desc);
        }
    }
    assert_eq!(redirected, 20);
    assert_eq!(leaked, 0);
    assert!(kernel_side
        .capture(other, 1, Duration::from_millis(200))
        .is_empty());
}

#[test]
fn attaching_to_a_missing_interface_names_it() {
    strait_testbed::require_root();
    let err = PortSet::open(&PortSetConfig::default(), &[PortSpec::new(999_999, 0)]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Attach {
                ifindex: 999_999,
                ..
            }
        ),
        "{err}"
    );
}
