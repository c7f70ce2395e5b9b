//! Generator ports that speak ESP, so one Strait instance can be measured
//! as a tunnel endpoint on its own.
//!
//! * [`SealingTx`] wraps a transmit port: every frame the generator builds
//!   (Ethernet + inner IP + probe) is sealed as ESP tunnel mode (RFC 4303
//!   §3.1.2), UDP-encapsulated (RFC 3948) and sent as the peer gateway
//!   would. Feeding a decrypting hub this way isolates it: no second
//!   dataplane shares the CPUs, and every packet still carries a fresh
//!   sequence number, so the hub's anti-replay window accepts it.
//! * [`OpeningRx`] wraps a receive port: ESP arriving from an encrypting
//!   instance is verified and decrypted, and the inner packet (with an
//!   Ethernet header rebuilt in front) goes to the probe counter, so loss
//!   and latency are measured through the encryption.
//!
//! Both run on the generator's side of the bed, so their cost (one AES-GCM
//! pass, ~0.2 µs per 1 KB packet with `ring`) is paid by the generator's
//! CPU, like the peer gateway's would be.

use std::net::Ipv4Addr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_esp::{
    classify_outer, ArrivalKind, CipherSuite, InboundSa, NextHeader, OutboundSa, OutboundWorker,
    OuterHeader, OuterIpv4, SaConfig, UdpEncap, ESP_HEADROOM, ESP_TAILROOM, IPV4_HEADER_LEN,
    UDP_HEADER_LEN,
};

use crate::gen::{Fill, GenError, Result, RxPort, SendOutcome, TxPort};

const ETH_LEN: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];

/// Where the generator writes its frame: its Ethernet header sits just
/// before the inner IP packet, which starts where ESP wants its payload
/// after the outer Ethernet, IPv4, UDP and ESP header + IV. The inner
/// Ethernet header is overwritten by the ESP header when sealing.
const INNER_FRAME_AT: usize = ETH_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN + ESP_HEADROOM - ETH_LEN;

/// Bytes a sealed frame is longer than the generator's frame, at most:
/// outer IPv4 + UDP + ESP header/IV + padding/trailer/ICV (the inner
/// Ethernet header is replaced by the outer one).
pub const SEAL_OVERHEAD: usize = IPV4_HEADER_LEN + UDP_HEADER_LEN + ESP_HEADROOM + ESP_TAILROOM;

/// One direction of a static ESP-in-UDP tunnel, as the far gateway sees it.
#[derive(Debug, Clone)]
pub struct TunnelLeg {
    /// SPI of the SA.
    pub spi: u32,
    /// Cipher suite.
    pub cipher: CipherSuite,
    /// Key followed by the 4-byte salt (RFC 4106 §8.1).
    pub key: Vec<u8>,
    /// Outer source address.
    pub outer_src: Ipv4Addr,
    /// Outer destination address.
    pub outer_dst: Ipv4Addr,
    /// Outer Ethernet source.
    pub src_mac: [u8; 6],
    /// Outer Ethernet destination (the tunnel endpoint under test).
    pub dst_mac: [u8; 6],
}

/// Parses a key written in hex, as the daemon's configuration holds it.
pub fn key_from_hex(hex: &str) -> Result<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return Err(GenError::Spec(format!(
            "key {hex:?}: odd number of hex digits"
        )));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .map_err(|_| GenError::Spec(format!("key: {:?} is not hex", &hex[i..i + 2])))
        })
        .collect()
}

/// Counters shared between a tunnel port and the harness that gave it away.
#[derive(Debug, Default)]
pub struct TunnelPortStats {
    /// Frames sealed or opened.
    pub ok: AtomicU64,
    /// Frames that failed to seal or open (verification, replay, framing).
    pub failed: AtomicU64,
    /// Received frames that were not ESP for this SA (ARP, ...), passed on.
    pub passed: AtomicU64,
}

impl TunnelPortStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(ok, failed, passed)` now.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.passed.load(Ordering::Relaxed),
        )
    }
}

/// The outbound SA a sealing port draws sequence numbers from. Keep one
/// for a whole benchmark: the endpoint under test remembers the highest
/// sequence number it accepted, so every trial must continue above it.
pub fn outbound_sa(leg: &TunnelLeg) -> Result<Arc<OutboundSa>> {
    OutboundSa::new(&SaConfig::new(
        leg.spi,
        leg.cipher,
        &leg.key,
        Duration::ZERO,
    ))
    .map_err(|e| GenError::Spec(format!("SA {:#x}: {e}", leg.spi)))
}

/// A transmit port that sends every generated frame ESP-sealed.
pub struct SealingTx {
    inner: Box<dyn TxPort>,
    sa: OutboundWorker,
    outer: OuterIpv4,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    epoch: Instant,
    stats: Arc<TunnelPortStats>,
}

impl std::fmt::Debug for SealingTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingTx")
            .field("port", &self.inner.kind())
            .field("spi", &self.sa.sa().spi())
            .finish()
    }
}

impl SealingTx {
    /// Wraps `inner`; frames are sealed with `sa` and framed per `leg`.
    pub fn new(
        inner: Box<dyn TxPort>,
        sa: &Arc<OutboundSa>,
        leg: &TunnelLeg,
        stats: Arc<TunnelPortStats>,
    ) -> SealingTx {
        SealingTx {
            inner,
            sa: sa.worker(),
            outer: OuterIpv4 {
                src: leg.outer_src,
                dst: leg.outer_dst,
                ttl: 64,
                tos: 0,
                ident: 0,
                dont_fragment: true,
                udp: Some(UdpEncap::DEFAULT),
            },
            src_mac: leg.src_mac,
            dst_mac: leg.dst_mac,
            epoch: Instant::now(),
            stats,
        }
    }
}

/// Seals the generator's frame, written by `fill` at [`INNER_FRAME_AT`], in
/// place into a complete outer frame; returns its length, 0 on failure.
fn seal_frame(
    buf: &mut [u8],
    fill: &mut Fill<'_>,
    sa: &mut OutboundWorker,
    outer: &mut OuterIpv4,
    macs: ([u8; 6], [u8; 6]),
    now: Duration,
) -> Option<usize> {
    let limit = buf.len().checked_sub(ESP_TAILROOM)?;
    // Sealing rewrites the buffer: what it held is never known.
    let n = fill(buf.get_mut(INNER_FRAME_AT..limit)?, &mut 0);
    let inner_ip = INNER_FRAME_AT + ETH_LEN;
    let ip_len = inner_ip_len(buf.get(inner_ip..INNER_FRAME_AT + n)?)?;
    let sealed = sa.seal(buf, inner_ip..inner_ip + ip_len, now).ok()?;
    outer.ident = outer.ident.wrapping_add(1);
    let frame = OuterHeader::V4(*outer).write(buf, sealed.esp).ok()?;
    let eth = frame.start.checked_sub(ETH_LEN)?;
    buf[eth..eth + 6].copy_from_slice(&macs.1);
    buf[eth + 6..eth + 12].copy_from_slice(&macs.0);
    buf[eth + 12..eth + 14].copy_from_slice(&ETHERTYPE_IPV4);
    // The outer header lands exactly at the start of the buffer: the
    // offsets above are computed for an IPv4 + UDP outer header.
    (eth == 0).then_some(frame.end)
}

/// Length of the IP packet at the start of `packet`, from its header,
/// checked against the bytes present (frames may carry Ethernet padding).
fn inner_ip_len(packet: &[u8]) -> Option<usize> {
    let len = match packet.first()? >> 4 {
        4 => usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?])),
        6 => 40 + usize::from(u16::from_be_bytes([*packet.get(4)?, *packet.get(5)?])),
        _ => return None,
    };
    (len <= packet.len()).then_some(len)
}

impl TxPort for SealingTx {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    fn max_frame(&self) -> usize {
        self.inner.max_frame().saturating_sub(SEAL_OVERHEAD)
    }

    fn send(&mut self, max: usize, fill: &mut Fill<'_>) -> Result<SendOutcome> {
        let SealingTx {
            inner,
            sa,
            outer,
            src_mac,
            dst_mac,
            epoch,
            stats,
        } = self;
        let now = epoch.elapsed();
        let macs = (*src_mac, *dst_mac);
        inner.send(
            max,
            &mut |buf, holds| match seal_frame(buf, fill, sa, outer, macs, now) {
                Some(n) => {
                    *holds = 0;
                    TunnelPortStats::bump(&stats.ok);
                    n
                }
                None => {
                    *holds = 0;
                    TunnelPortStats::bump(&stats.failed);
                    0
                }
            },
        )
    }

    fn pending(&self) -> usize {
        self.inner.pending()
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
}

/// A receive port that opens ESP for one inbound SA and hands the inner
/// packets on as Ethernet frames; other frames pass through unchanged.
pub struct OpeningRx {
    inner: Box<dyn RxPort>,
    sa: InboundSa,
    scratch: Vec<u8>,
    epoch: Instant,
    stats: Arc<TunnelPortStats>,
}

impl std::fmt::Debug for OpeningRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpeningRx")
            .field("port", &self.inner.kind())
            .field("spi", &self.sa.spi())
            .finish()
    }
}

impl OpeningRx {
    /// Wraps `inner`, opening ESP that matches `leg`'s SPI and key.
    pub fn new(
        inner: Box<dyn RxPort>,
        leg: &TunnelLeg,
        stats: Arc<TunnelPortStats>,
    ) -> Result<Self> {
        let sa = InboundSa::new(&SaConfig::new(
            leg.spi,
            leg.cipher,
            &leg.key,
            Duration::ZERO,
        ))
        .map_err(|e| GenError::Spec(format!("SA {:#x}: {e}", leg.spi)))?;
        Ok(OpeningRx {
            inner,
            sa,
            scratch: vec![0; 9216 + ETH_LEN],
            epoch: Instant::now(),
            stats,
        })
    }
}

/// Copies `frame` into `scratch`, opens the ESP it carries and rebuilds an
/// Ethernet header before the inner packet; returns where that frame lies.
/// `None` if the frame is not ESP for this SA (or fails to open; then
/// `failed` is set).
fn open_frame(
    frame: &[u8],
    scratch: &mut [u8],
    sa: &mut InboundSa,
    now: Duration,
    failed: &mut bool,
) -> Option<Range<usize>> {
    let ethertype = frame.get(12..14)?;
    if ethertype != ETHERTYPE_IPV4 && ethertype != ETHERTYPE_IPV6 {
        return None;
    }
    let copy = scratch.get_mut(..frame.len())?;
    copy.copy_from_slice(frame);
    let arrival = classify_outer(&scratch[ETH_LEN..frame.len()]).ok()?;
    let ArrivalKind::Esp(esp) = arrival.kind else {
        return None;
    };
    let esp = esp.start + ETH_LEN..esp.end + ETH_LEN;
    if strait_esp::peek_spi(&scratch[esp.clone()]).ok() != Some(sa.spi()) {
        return None;
    }
    let Ok(opened) = sa.open(scratch, esp, now) else {
        *failed = true;
        return None;
    };
    let ethertype = match opened.next_header {
        NextHeader::Ipv4 => ETHERTYPE_IPV4,
        NextHeader::Ipv6 => ETHERTYPE_IPV6,
    };
    // The ESP header and IV (16 bytes) and the outer headers lie before
    // the inner packet, so there is always room for 14 bytes of Ethernet.
    let eth = opened.inner.start.checked_sub(ETH_LEN)?;
    scratch.copy_within(0..12, eth);
    scratch[eth + 12..eth + 14].copy_from_slice(&ethertype);
    Some(eth..opened.inner.end)
}

impl RxPort for OpeningRx {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn receive(&mut self, timeout: Duration, frame: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let OpeningRx {
            inner,
            sa,
            scratch,
            epoch,
            stats,
        } = self;
        let now = epoch.elapsed();
        inner.receive(timeout, &mut |f| {
            let mut failed = false;
            match open_frame(f, scratch, sa, now, &mut failed) {
                Some(range) => {
                    TunnelPortStats::bump(&stats.ok);
                    frame(&scratch[range]);
                }
                None if failed => TunnelPortStats::bump(&stats.failed),
                None => {
                    TunnelPortStats::bump(&stats.passed);
                    frame(f);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::{FlowCursor, FlowSpec, FrameFactory, TrafficSpec};
    use std::collections::VecDeque;
    use strait_wire::EthernetAddress;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f10111213";

    fn leg() -> TunnelLeg {
        TunnelLeg {
            spi: 0x1001,
            cipher: CipherSuite::Aes128Gcm,
            key: key_from_hex(KEY).unwrap(),
            outer_src: Ipv4Addr::new(203, 0, 113, 2),
            outer_dst: Ipv4Addr::new(203, 0, 113, 1),
            src_mac: [2, 0, 0, 0, 0, 2],
            dst_mac: [2, 0, 0, 0, 0, 1],
        }
    }

    /// Frames a [`Loopback`] holds.
    type Wire = Arc<std::sync::Mutex<VecDeque<Vec<u8>>>>;

    /// Keeps what is "sent" so a test can read it back.
    struct Loopback {
        frames: Wire,
    }

    impl TxPort for Loopback {
        fn kind(&self) -> &'static str {
            "loopback"
        }
        fn max_batch(&self) -> usize {
            8
        }
        fn max_frame(&self) -> usize {
            1792
        }
        fn send(&mut self, max: usize, fill: &mut Fill<'_>) -> Result<SendOutcome> {
            let mut out = SendOutcome::default();
            for _ in 0..max {
                let mut buf = vec![0u8; 1792];
                let n = fill(&mut buf, &mut 0);
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                out.filled += 1;
                out.sent += 1;
                out.bytes += n as u64;
                self.frames.lock().unwrap().push_back(buf);
            }
            Ok(out)
        }
        fn pending(&self) -> usize {
            0
        }
    }

    impl RxPort for Loopback {
        fn kind(&self) -> &'static str {
            "loopback"
        }
        fn receive(&mut self, _: Duration, frame: &mut dyn FnMut(&[u8])) -> Result<usize> {
            let mut q = self.frames.lock().unwrap();
            let n = q.len();
            for f in q.drain(..) {
                frame(&f);
            }
            Ok(n)
        }
    }

    fn spec(size: usize) -> TrafficSpec {
        let mut spec = TrafficSpec::new(
            EthernetAddress([2, 0, 0, 0, 1, 1]),
            EthernetAddress([2, 0, 0, 0, 1, 2]),
            "10.2.0.2".parse().unwrap(),
            "10.1.0.2".parse().unwrap(),
        );
        spec.sizes = format!("{size}").parse().unwrap();
        spec
    }

    /// Seals `count` generated frames through a loopback port and returns
    /// the generated originals and the sealed frames.
    fn seal_some(size: usize, count: usize) -> (Vec<Vec<u8>>, Wire) {
        let frames = Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let l = leg();
        let sa = outbound_sa(&l).unwrap();
        let stats = Arc::new(TunnelPortStats::default());
        let mut tx = SealingTx::new(
            Box::new(Loopback {
                frames: Arc::clone(&frames),
            }),
            &sa,
            &l,
            Arc::clone(&stats),
        );
        let s = spec(size);
        let mut factory = FrameFactory::new(&s).unwrap();
        let mut flows = FlowCursor::new(FlowSpec::default(), 0);
        let mut originals = Vec::new();
        let mut seq = 0;
        let out = tx
            .send(count, &mut |buf, _| {
                let n = factory.write(buf, flows.next_flow(), seq, 1000 + seq, 0);
                seq += 1;
                originals.push(buf[..n].to_vec());
                n
            })
            .unwrap();
        assert_eq!(out.sent, count);
        assert_eq!(stats.snapshot(), (count as u64, 0, 0));
        (originals, frames)
    }

    #[test]
    fn sealed_frames_are_esp_in_udp_to_the_endpoint() {
        let (originals, frames) = seal_some(1024, 3);
        let frames = frames.lock().unwrap();
        for (orig, f) in originals.iter().zip(frames.iter()) {
            assert_eq!(&f[0..6], &leg().dst_mac);
            assert_eq!(&f[6..12], &leg().src_mac);
            assert_eq!(&f[12..14], &ETHERTYPE_IPV4);
            let arrival = classify_outer(&f[ETH_LEN..]).unwrap();
            assert_eq!(arrival.udp, Some((4500, 4500)));
            assert!(matches!(arrival.kind, ArrivalKind::Esp(_)));
            // Inner IP packet + outer IPv4/UDP/ESP/IV/pad/trailer/ICV.
            assert!(f.len() > orig.len() + IPV4_HEADER_LEN + UDP_HEADER_LEN + 16 + 16);
            assert!(f.len() <= orig.len() + SEAL_OVERHEAD);
            // The payload is not in clear.
            assert!(!f.windows(32).any(|w| w == &orig[orig.len() - 32..]));
        }
    }

    #[test]
    fn opening_restores_the_generated_frame_and_its_probe() {
        for size in [64, 1024, 1518] {
            let (originals, frames) = seal_some(size, 5);
            let stats = Arc::new(TunnelPortStats::default());
            let mut rx = OpeningRx::new(
                Box::new(Loopback {
                    frames: Arc::clone(&frames),
                }),
                &leg(),
                Arc::clone(&stats),
            )
            .unwrap();
            let mut got = Vec::new();
            rx.receive(Duration::ZERO, &mut |f| got.push(f.to_vec()))
                .unwrap();
            assert_eq!(got.len(), originals.len());
            for (orig, g) in originals.iter().zip(&got) {
                // Same IP packet and payload; the Ethernet header is rebuilt.
                assert_eq!(&g[ETH_LEN..], &orig[ETH_LEN..orig.len()], "size {size}");
                assert_eq!(&g[12..14], &ETHERTYPE_IPV4);
                assert!(crate::gen::locate_probe(g).is_some());
            }
            assert_eq!(stats.snapshot(), (5, 0, 0));
        }
    }

    #[test]
    fn replays_and_tampering_fail_and_other_frames_pass() {
        let (_, frames) = seal_some(128, 2);
        let mut sealed: Vec<Vec<u8>> = frames.lock().unwrap().drain(..).collect();
        let mut tampered = sealed[1].clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let arp = {
            let mut f = vec![0u8; 60];
            f[12..14].copy_from_slice(&[0x08, 0x06]);
            f
        };
        // First packet, the same again (replay), a tampered one, ARP, a runt.
        let replay = sealed[0].clone();
        let order = vec![sealed.remove(0), replay, tampered, arp, vec![0u8; 5]];
        let queue = Arc::new(std::sync::Mutex::new(order.into_iter().collect()));
        let stats = Arc::new(TunnelPortStats::default());
        let mut rx = OpeningRx::new(
            Box::new(Loopback { frames: queue }),
            &leg(),
            Arc::clone(&stats),
        )
        .unwrap();
        let mut passed_on = 0;
        rx.receive(Duration::ZERO, &mut |_| passed_on += 1).unwrap();
        assert_eq!(stats.snapshot(), (1, 2, 2));
        assert_eq!(passed_on, 3);
    }

    #[test]
    fn frames_too_large_for_the_port_are_refused_before_sealing() {
        let frames = Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let l = leg();
        let sa = outbound_sa(&l).unwrap();
        let tx = SealingTx::new(Box::new(Loopback { frames }), &sa, &l, Arc::default());
        assert_eq!(tx.max_frame(), 1792 - SEAL_OVERHEAD);
        assert!(crate::gen::Sender::new(&spec(1792), Box::new(tx)).is_err());
    }

    #[test]
    fn hex_keys() {
        assert_eq!(key_from_hex("00ff10").unwrap(), vec![0, 255, 16]);
        assert!(key_from_hex("0").is_err());
        assert!(key_from_hex("zz").is_err());
    }
}
