//! What to send: addresses, protocol, frame sizes, flows, rate and length.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use strait_wire::EthernetAddress;

use super::error::{GenError, Result};

/// Bytes of Ethernet framing on the wire not counted in a frame's size:
/// preamble and start-of-frame delimiter (8) and the minimum inter-frame
/// gap (12), IEEE 802.3 clause 4.4. Frame sizes include the 4-byte FCS, as
/// in RFC 2544 §9, so a 64-byte frame occupies 84 byte times on the wire.
pub const WIRE_OVERHEAD: usize = 20;
/// Length of the Ethernet frame check sequence, counted in frame sizes but
/// appended by the NIC, never written by the generator.
pub const FCS_LEN: usize = 4;
/// Smallest frame size accepted (the Ethernet minimum, RFC 2544 §9.1).
pub const MIN_FRAME: usize = 64;
/// Largest frame size accepted (a 9000-byte jumbo MTU plus Ethernet header and FCS).
pub const MAX_FRAME: usize = 9018;

/// The L4 protocol of generated packets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    /// UDP datagrams; the probe is the start of the payload.
    Udp,
    /// TCP segments with only SYN set, the probe as SYN data (RFC 9293 §3.4
    /// allows data on a SYN); exercises the NAT's TCP session setup path.
    TcpSyn,
    /// ICMP (ICMPv6 for IPv6) echo requests, the probe as echo data.
    IcmpEcho,
}

impl Protocol {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::TcpSyn => "tcp-syn",
            Self::IcmpEcho => "icmp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = GenError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Self::Udp),
            "tcp-syn" | "tcp" | "syn" => Ok(Self::TcpSyn),
            "icmp" | "icmp-echo" | "ping" => Ok(Self::IcmpEcho),
            _ => Err(GenError::parse(
                "protocol",
                s,
                "expected udp, tcp-syn or icmp",
            )),
        }
    }
}

/// A mix of frame sizes with integer weights, sent in a fixed interleaved
/// order (smooth weighted round robin) so any window of packets has close
/// to the configured proportions.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SizeMix {
    entries: Vec<(usize, u32)>,
}

impl SizeMix {
    /// Every frame the same size (bytes, FCS included).
    pub fn fixed(size: usize) -> Self {
        Self {
            entries: vec![(size, 1)],
        }
    }

    /// The simple IMIX: 64, 594 and 1518-byte frames in the ratio 7:4:1.
    pub fn imix() -> Self {
        Self {
            entries: vec![(64, 7), (594, 4), (1518, 1)],
        }
    }

    /// A mix from `(size, weight)` pairs.
    pub fn weighted(entries: Vec<(usize, u32)>) -> Result<Self> {
        let mix = Self { entries };
        mix.validate()?;
        Ok(mix)
    }

    /// The `(size, weight)` pairs.
    pub fn entries(&self) -> &[(usize, u32)] {
        &self.entries
    }

    /// Checks sizes and weights.
    pub fn validate(&self) -> Result<()> {
        if self.entries.is_empty() {
            return Err(GenError::Spec("size mix is empty".into()));
        }
        let total: u64 = self.entries.iter().map(|&(_, w)| u64::from(w)).sum();
        if total == 0 || total > 10_000 {
            return Err(GenError::Spec(format!(
                "size mix weights sum to {total}; they must sum to 1..=10000"
            )));
        }
        for &(size, _) in &self.entries {
            if !(MIN_FRAME..=MAX_FRAME).contains(&size) {
                return Err(GenError::Spec(format!(
                    "frame size {size} outside {MIN_FRAME}..={MAX_FRAME} (sizes include the FCS)"
                )));
            }
        }
        Ok(())
    }

    /// The order sizes are sent in: indices into [`Self::entries`], one
    /// cycle long (the sum of the weights). Smooth weighted round robin:
    /// each step every entry gains its weight, the largest is picked and
    /// pays the total back.
    pub fn pattern(&self) -> Vec<u16> {
        let total: i64 = self.entries.iter().map(|&(_, w)| i64::from(w)).sum();
        let mut current = vec![0i64; self.entries.len()];
        let mut out = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, &(_, w)) in self.entries.iter().enumerate() {
                current[i] += i64::from(w);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            out.push(best as u16);
        }
        out
    }

    /// Mean frame size in bytes (FCS included).
    pub fn mean_size(&self) -> f64 {
        let total: f64 = self.entries.iter().map(|&(_, w)| f64::from(w)).sum();
        self.entries
            .iter()
            .map(|&(s, w)| s as f64 * f64::from(w))
            .sum::<f64>()
            / total
    }
}

impl FromStr for SizeMix {
    type Err = GenError;
    /// `64`, `imix`, or `64:7,594:4,1518:1` (size:weight, weight defaults to 1).
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(Self::imix());
        }
        let mut entries = Vec::new();
        for part in s.split(',') {
            let (size, weight) = match part.split_once(':') {
                Some((a, b)) => (a, b),
                None => (part, "1"),
            };
            let size = size
                .trim()
                .parse()
                .map_err(|_| GenError::parse("size mix", s, format!("bad size {size:?}")))?;
            let weight = weight
                .trim()
                .parse()
                .map_err(|_| GenError::parse("size mix", s, format!("bad weight {weight:?}")))?;
            entries.push((size, weight));
        }
        Self::weighted(entries)
    }
}

/// In which order flows are visited.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FlowOrder {
    /// Source address fastest, then source port, then destination port.
    Sequential,
    /// Each packet picks every field uniformly at random (a fast PRNG).
    Random,
}

impl FromStr for FlowOrder {
    type Err = GenError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "seq" | "sequential" => Ok(Self::Sequential),
            "random" | "rand" => Ok(Self::Random),
            _ => Err(GenError::parse("flow order", s, "expected seq or random")),
        }
    }
}

/// An inclusive port range parsed from `9` or `1024-65535`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl PortRange {
    /// A single port.
    pub const fn single(port: u16) -> Self {
        Self {
            first: port,
            last: port,
        }
    }

    /// Number of ports in the range.
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// Always false: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for PortRange {
    type Err = GenError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |r: &str| GenError::parse("port range", s, r.to_owned());
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first: u16 = a.trim().parse().map_err(|_| bad("not a port number"))?;
        let last: u16 = b.trim().parse().map_err(|_| bad("not a port number"))?;
        if last < first {
            return Err(bad("last port below first"));
        }
        Ok(Self { first, last })
    }
}

/// The set of flows: consecutive source addresses from the spec's source
/// address, times source ports, times destination ports. For ICMP echo the
/// source "port" is the echo identifier and destination ports are unused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FlowSpec {
    /// Number of consecutive source addresses (1 = just the source address).
    pub src_addrs: u32,
    /// Source ports.
    pub src_ports: PortRange,
    /// Destination ports.
    pub dst_ports: PortRange,
    /// Visiting order.
    pub order: FlowOrder,
}

impl FlowSpec {
    /// Number of distinct flows (5-tuples).
    pub fn count(&self) -> u64 {
        u64::from(self.src_addrs)
            * u64::from(self.src_ports.len())
            * u64::from(self.dst_ports.len())
    }
}

impl Default for FlowSpec {
    fn default() -> Self {
        Self {
            src_addrs: 1,
            src_ports: PortRange::single(10_000),
            dst_ports: PortRange::single(9),
            order: FlowOrder::Sequential,
        }
    }
}

/// The offered load.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Rate {
    /// As fast as the sender can go.
    Max,
    /// Packets per second.
    Pps(f64),
    /// Bits per second on the wire, Ethernet framing overhead included
    /// (frame size + [`WIRE_OVERHEAD`]).
    WireBps(f64),
}

impl Rate {
    /// The packet rate this load means for a mix with the given mean frame size.
    pub fn pps(&self, mean_frame: f64) -> Option<f64> {
        match *self {
            Self::Max => None,
            Self::Pps(p) => Some(p),
            Self::WireBps(b) => Some(b / ((mean_frame + WIRE_OVERHEAD as f64) * 8.0)),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Max => f.write_str("max"),
            Self::Pps(p) => write!(f, "{p:.0}pps"),
            Self::WireBps(b) => write!(f, "{b:.0}bps"),
        }
    }
}

impl FromStr for Rate {
    type Err = GenError;
    /// `max`, `20000`, `20kpps`, `1.5Mpps`, `500Mbps`, `2Gbps`, `100kbps`.
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Self::Max);
        }
        let lower = s.to_ascii_lowercase();
        let (num, unit) = lower
            .find(|c: char| c.is_ascii_alphabetic())
            .map_or((lower.as_str(), ""), |i| lower.split_at(i));
        let value: f64 = num
            .trim()
            .parse()
            .map_err(|_| GenError::parse("rate", s, "not a number"))?;
        let (mult, bits) = match unit {
            "" | "pps" => (1.0, false),
            "kpps" => (1e3, false),
            "mpps" => (1e6, false),
            "bps" => (1.0, true),
            "kbps" => (1e3, true),
            "mbps" => (1e6, true),
            "gbps" => (1e9, true),
            _ => {
                return Err(GenError::parse(
                    "rate",
                    s,
                    "unit must be pps, kpps, Mpps, bps, kbps, Mbps or Gbps",
                ))
            }
        };
        let v = value * mult;
        if !v.is_finite() || v <= 0.0 {
            return Err(GenError::parse("rate", s, "must be positive"));
        }
        Ok(if bits { Self::WireBps(v) } else { Self::Pps(v) })
    }
}

/// Everything a [`super::Sender`] needs to know about the traffic.
#[derive(Clone, Debug)]
pub struct TrafficSpec {
    /// Source MAC (the sending interface's address).
    pub src_mac: EthernetAddress,
    /// Destination MAC (the next hop: the device under test or the sink).
    pub dst_mac: EthernetAddress,
    /// First source address; flows add to its low 32 bits.
    pub src_ip: IpAddr,
    /// Destination address (same family as the source).
    pub dst_ip: IpAddr,
    /// L4 protocol.
    pub protocol: Protocol,
    /// Frame sizes.
    pub sizes: SizeMix,
    /// Flows.
    pub flows: FlowSpec,
    /// Offered load.
    pub rate: Rate,
    /// Measured duration (after warm-up). The run always ends by then.
    pub duration: Duration,
    /// Stop after this many measured packets (the duration still bounds the run).
    pub count: Option<u64>,
    /// Warm-up period: packets are sent and flagged, and left out of results.
    pub warmup: Duration,
    /// Stream id carried in the probe (tells concurrent senders apart).
    pub stream: u8,
    /// IP TTL / hop limit.
    pub ttl: u8,
    /// Most frames handed to the kernel per call.
    pub batch: usize,
    /// CPU the receiver thread pins itself to (`None`: it keeps the
    /// calling thread's affinity, like the sender).
    pub rx_cpu: Option<usize>,
}

impl TrafficSpec {
    /// A UDP spec with defaults: 64-byte frames, one flow (10000 → 9),
    /// max rate for 10 s, no warm-up, stream 0, TTL 64, batches of 64.
    pub fn new(
        src_mac: EthernetAddress,
        dst_mac: EthernetAddress,
        src_ip: IpAddr,
        dst_ip: IpAddr,
    ) -> Self {
        Self {
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            protocol: Protocol::Udp,
            sizes: SizeMix::fixed(64),
            flows: FlowSpec::default(),
            rate: Rate::Max,
            duration: Duration::from_secs(10),
            count: None,
            warmup: Duration::ZERO,
            stream: 0,
            ttl: 64,
            batch: 64,
            rx_cpu: None,
        }
    }

    /// Checks the spec for consistency.
    pub fn validate(&self) -> Result<()> {
        self.sizes.validate()?;
        if self.src_ip.is_ipv4() != self.dst_ip.is_ipv4() {
            return Err(GenError::Spec(format!(
                "source {} and destination {} are of different IP versions",
                self.src_ip, self.dst_ip
            )));
        }
        let flows = self.flows.count();
        if flows == 0 || flows > 1 << 24 {
            return Err(GenError::Spec(format!(
                "{flows} flows: must be 1..=16777216"
            )));
        }
        if self.flows.src_addrs == 0 {
            return Err(GenError::Spec(
                "source address count must be at least 1".into(),
            ));
        }
        if self.batch == 0 || self.batch > 1024 {
            return Err(GenError::Spec(format!(
                "batch {} outside 1..=1024",
                self.batch
            )));
        }
        if self.duration.is_zero() && self.count.is_none() {
            return Err(GenError::Spec(
                "duration is zero and no packet count given".into(),
            ));
        }
        if let Rate::Pps(p) | Rate::WireBps(p) = self.rate {
            if !(p.is_finite() && p > 0.0) {
                return Err(GenError::Spec(format!("rate {p} must be positive")));
            }
        }
        let min = super::template::min_frame_size(self.protocol, self.src_ip.is_ipv6());
        for &(size, _) in self.sizes.entries() {
            if size < min {
                return Err(GenError::Spec(format!(
                    "frame size {size} too small for {}/{}: headers plus the {}-byte probe need {min}",
                    self.protocol,
                    if self.src_ip.is_ipv6() { "IPv6" } else { "IPv4" },
                    super::probe::PROBE_LEN
                )));
            }
        }
        Ok(())
    }

    /// Wire bits one frame of `size` bytes occupies.
    pub fn wire_bits(size: usize) -> u64 {
        ((size + WIRE_OVERHEAD) * 8) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imix_pattern_is_interleaved_with_exact_weights() {
        let mix = SizeMix::imix();
        let p = mix.pattern();
        assert_eq!(p.len(), 12);
        for (i, &(_, w)) in mix.entries().iter().enumerate() {
            assert_eq!(p.iter().filter(|&&x| x as usize == i).count(), w as usize);
        }
        // The 1518-byte frame must not sit next to itself across the cycle,
        // and 64-byte frames never run more than two in a row.
        let runs = p.windows(3).filter(|w| w.iter().all(|&x| x == 0)).count();
        assert_eq!(runs, 0, "{p:?}");
        assert!((mix.mean_size() - (64.0 * 7.0 + 594.0 * 4.0 + 1518.0) / 12.0).abs() < 1e-9);
    }

    #[test]
    fn parses_rates_and_units() {
        assert_eq!("max".parse::<Rate>().unwrap(), Rate::Max);
        assert_eq!("20kpps".parse::<Rate>().unwrap(), Rate::Pps(20_000.0));
        assert_eq!("1.5Mpps".parse::<Rate>().unwrap(), Rate::Pps(1_500_000.0));
        assert_eq!("2Gbps".parse::<Rate>().unwrap(), Rate::WireBps(2e9));
        assert_eq!("100".parse::<Rate>().unwrap(), Rate::Pps(100.0));
        assert!("-5pps".parse::<Rate>().is_err());
        assert!("5furlongs".parse::<Rate>().is_err());
        // 64-byte frames take 84 bytes on the wire: 1 Gbit/s is 1.488 Mpps.
        let pps = Rate::WireBps(1e9).pps(64.0).unwrap();
        assert!((pps - 1e9 / 672.0).abs() < 1e-6);
    }

    #[test]
    fn parses_mixes_and_ports() {
        assert_eq!("imix".parse::<SizeMix>().unwrap(), SizeMix::imix());
        let mix: SizeMix = "128:3,1024".parse().unwrap();
        assert_eq!(mix.entries(), &[(128, 3), (1024, 1)]);
        assert!("63".parse::<SizeMix>().is_err());
        assert!("64:0".parse::<SizeMix>().is_err());
        let r: PortRange = "1024-65535".parse().unwrap();
        assert_eq!(r.len(), 64_512);
        assert!("9-8".parse::<PortRange>().is_err());
    }

    #[test]
    fn validate_names_the_minimum_frame() {
        let mut spec = TrafficSpec::new(
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            EthernetAddress([2, 0, 0, 0, 0, 2]),
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let err = spec.validate().unwrap_err().to_string();
        assert!(err.contains("need 84"), "{err}");
        spec.sizes = SizeMix::fixed(84);
        spec.validate().unwrap();
        spec.dst_ip = "10.0.0.1".parse().unwrap();
        assert!(spec.validate().is_err());
    }
}
