//! Counters: kept per worker in plain integers, published to readers in
//! batches.
//!
//! The hot path increments plain `u64`s owned by one worker. Every few
//! batches the worker copies them into its [`SharedCounters`] with relaxed
//! stores (no read-modify-write, no cache line shared between writers);
//! readers sum the workers' mirrors. A reader may see a figure a few batches
//! old, never a torn or lost one.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a packet was dropped. Each reason has its own counter per interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Frame shorter than its headers claim.
    Truncated,
    /// EtherType the dataplane does not forward.
    NotIp,
    /// IP version field does not match the EtherType.
    BadVersion,
    /// IPv4 IHL below 5 or beyond the packet.
    BadHeaderLength,
    /// IPv4 total length / IPv6 payload length beyond the frame.
    BadTotalLength,
    /// IPv4 header checksum wrong.
    BadChecksum,
    /// Malformed packet of another kind (bad options, bad ARP, ...).
    Malformed,
    /// TTL or hop limit ran out here (ICMP time-exceeded sent when allowed).
    TtlExceeded,
    /// Source address that can never be a sender (RFC 1812 §5.3.7).
    MartianSource,
    /// Larger than the egress MTU with DF set (ICMP frag-needed sent).
    Oversized,
    /// Larger than the egress MTU without DF: fragmentation is not done on
    /// the plain forwarding path.
    FragmentationNeeded,
    /// No route to the destination (ICMP unreachable sent when allowed).
    NoRoute,
    /// The route says blackhole or unreachable.
    Blackhole,
    /// Next hop did not answer ARP/NDP in time.
    NeighbourUnresolved,
    /// The pending queue of an unresolved neighbour was full.
    NeighbourQueueFull,
    /// The neighbour table was full.
    NeighbourTableFull,
    /// Frame for another station's MAC address.
    NotForUs,
    /// A locally generated ICMP error was suppressed by the rate limit.
    IcmpRateLimited,
    /// Traffic for the host stack could not be handed over.
    HostPuntFailed,
    /// No free frame in the UMEM pool for a generated packet.
    NoFrame,
    /// The egress TX ring was full.
    TxRingFull,
    /// The kernel found the port's AF_XDP RX ring full: the worker fell
    /// behind and the frame was lost before it saw it (`XDP_STATISTICS`
    /// `rx_ring_full`).
    RxRingFull,
    /// The kernel had no free frame on the port's fill ring for an arriving
    /// frame (or the frame was larger than a UMEM frame) and dropped it
    /// (`XDP_STATISTICS` `rx_dropped`).
    RxNoFrame,
    /// IPv4 fragment where the stage needs ports.
    Fragment,
    /// ESP for an SPI we have no inbound SA for.
    EspBadSpi,
    /// ESP whose integrity check failed (RFC 4303 §3.4.4).
    EspAuthFailed,
    /// ESP sequence number already seen inside the window.
    EspReplay,
    /// ESP sequence number left of the window.
    EspReplayOld,
    /// ESP that failed otherwise (padding, inner packet, selectors, lifetime).
    EspInvalid,
    /// A packet could not be sealed (selectors, sequence exhausted, expired SA).
    EspSealFailed,
    /// NAT: transport header too short to translate.
    NatMalformed,
    /// NAT: a non-first fragment of a translated flow (no ports to match;
    /// fragments are not reassembled).
    NatFragment,
    /// NAT: a protocol other than TCP, UDP or ICMP to or from a translated
    /// address.
    NatUnsupportedProtocol,
    /// NAT: a TCP segment other than a SYN without a session.
    NatTcpNotSyn,
    /// NAT: refused by address-dependent filtering (RFC 4787 REQ-8).
    NatFiltered,
    /// NAT: inbound packet to a translated address with no session, mapping
    /// or rule behind it.
    NatNoSession,
    /// NAT: session table full or no free external port for a new flow.
    NatExhausted,
    /// NAT: ICMP error about no known session (RFC 5508 REQ-4/5).
    NatIcmpErrorNoSession,
    /// NAT: ICMP error whose checksums do not verify (RFC 5508 REQ-3).
    NatIcmpErrorChecksum,
    /// NAT: ICMP error about an error, or with an unusable quoted packet.
    NatIcmpErrorMalformed,
    /// NAT: ICMP type the translator does not handle.
    NatIcmpUnsupported,
}

impl DropReason {
    /// Every reason, in display order.
    pub const ALL: [DropReason; 41] = [
        DropReason::Truncated,
        DropReason::NotIp,
        DropReason::BadVersion,
        DropReason::BadHeaderLength,
        DropReason::BadTotalLength,
        DropReason::BadChecksum,
        DropReason::Malformed,
        DropReason::TtlExceeded,
        DropReason::MartianSource,
        DropReason::Oversized,
        DropReason::FragmentationNeeded,
        DropReason::NoRoute,
        DropReason::Blackhole,
        DropReason::NeighbourUnresolved,
        DropReason::NeighbourQueueFull,
        DropReason::NeighbourTableFull,
        DropReason::NotForUs,
        DropReason::IcmpRateLimited,
        DropReason::HostPuntFailed,
        DropReason::NoFrame,
        DropReason::TxRingFull,
        DropReason::RxRingFull,
        DropReason::RxNoFrame,
        DropReason::Fragment,
        DropReason::EspBadSpi,
        DropReason::EspAuthFailed,
        DropReason::EspReplay,
        DropReason::EspReplayOld,
        DropReason::EspInvalid,
        DropReason::EspSealFailed,
        DropReason::NatMalformed,
        DropReason::NatFragment,
        DropReason::NatUnsupportedProtocol,
        DropReason::NatTcpNotSyn,
        DropReason::NatFiltered,
        DropReason::NatNoSession,
        DropReason::NatExhausted,
        DropReason::NatIcmpErrorNoSession,
        DropReason::NatIcmpErrorChecksum,
        DropReason::NatIcmpErrorMalformed,
        DropReason::NatIcmpUnsupported,
    ];

    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Stable snake_case name, used by the CLI and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::NotIp => "not_ip",
            DropReason::BadVersion => "bad_version",
            DropReason::BadHeaderLength => "bad_header_length",
            DropReason::BadTotalLength => "bad_total_length",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::Malformed => "malformed",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::MartianSource => "martian_source",
            DropReason::Oversized => "oversized",
            DropReason::FragmentationNeeded => "fragmentation_needed",
            DropReason::NoRoute => "no_route",
            DropReason::Blackhole => "blackhole",
            DropReason::NeighbourUnresolved => "neighbour_unresolved",
            DropReason::NeighbourQueueFull => "neighbour_queue_full",
            DropReason::NeighbourTableFull => "neighbour_table_full",
            DropReason::NotForUs => "not_for_us",
            DropReason::IcmpRateLimited => "icmp_rate_limited",
            DropReason::HostPuntFailed => "host_punt_failed",
            DropReason::NoFrame => "no_frame",
            DropReason::TxRingFull => "tx_ring_full",
            DropReason::RxRingFull => "rx_ring_full",
            DropReason::RxNoFrame => "rx_no_frame",
            DropReason::Fragment => "fragment",
            DropReason::EspBadSpi => "esp_bad_spi",
            DropReason::EspAuthFailed => "esp_auth_failed",
            DropReason::EspReplay => "esp_replay",
            DropReason::EspReplayOld => "esp_replay_old",
            DropReason::EspInvalid => "esp_invalid",
            DropReason::EspSealFailed => "esp_seal_failed",
            DropReason::NatMalformed => "nat_malformed",
            DropReason::NatFragment => "nat_fragment",
            DropReason::NatUnsupportedProtocol => "nat_unsupported_protocol",
            DropReason::NatTcpNotSyn => "nat_tcp_not_syn",
            DropReason::NatFiltered => "nat_filtered",
            DropReason::NatNoSession => "nat_no_session",
            DropReason::NatExhausted => "nat_exhausted",
            DropReason::NatIcmpErrorNoSession => "nat_icmp_error_no_session",
            DropReason::NatIcmpErrorChecksum => "nat_icmp_error_checksum",
            DropReason::NatIcmpErrorMalformed => "nat_icmp_error_malformed",
            DropReason::NatIcmpUnsupported => "nat_icmp_unsupported",
        }
    }

    /// Looks a reason up by its [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<DropReason> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// Plain per-interface counters of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Frames forwarded to another port (routed).
    pub forwarded: u64,
    /// Frames handed to the host stack.
    pub punted: u64,
    /// ARP/NDP requests answered.
    pub neighbour_replies: u64,
    /// ARP/NDP requests sent.
    pub neighbour_requests: u64,
    /// ICMP errors and echo replies generated.
    pub icmp_sent: u64,
    /// ESP packets sealed into a tunnel leaving by this port.
    pub esp_sealed: u64,
    /// ESP packets opened after arriving on this port.
    pub esp_opened: u64,
    /// Drops by reason, indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
}

// Written out: `Default` is derived for arrays of at most 32 elements.
impl Default for PortCounters {
    fn default() -> Self {
        PortCounters {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            forwarded: 0,
            punted: 0,
            neighbour_replies: 0,
            neighbour_requests: 0,
            icmp_sent: 0,
            esp_sealed: 0,
            esp_opened: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl PortCounters {
    /// Counts one drop.
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// Sum of all drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds another set (used to sum workers).
    pub fn add(&mut self, other: &PortCounters) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.forwarded += other.forwarded;
        self.punted += other.punted;
        self.neighbour_replies += other.neighbour_replies;
        self.neighbour_requests += other.neighbour_requests;
        self.icmp_sent += other.icmp_sent;
        self.esp_sealed += other.esp_sealed;
        self.esp_opened += other.esp_opened;
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += b;
        }
    }
}

const SCALARS: usize = 11;
const SLOTS: usize = SCALARS + DropReason::COUNT;

/// The readable mirror of one worker's counters.
#[derive(Debug)]
pub struct SharedCounters {
    ports: Box<[[AtomicU64; SLOTS]]>,
}

impl SharedCounters {
    /// Room for `ports` interfaces.
    pub fn new(ports: usize) -> SharedCounters {
        SharedCounters {
            ports: (0..ports)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Copies the worker's plain counters out (owner only).
    pub fn publish(&self, local: &[PortCounters]) {
        for (slots, c) in self.ports.iter().zip(local) {
            let scalars = [
                c.rx_packets,
                c.rx_bytes,
                c.tx_packets,
                c.tx_bytes,
                c.forwarded,
                c.punted,
                c.neighbour_replies,
                c.neighbour_requests,
                c.icmp_sent,
                c.esp_sealed,
                c.esp_opened,
            ];
            for (slot, v) in slots.iter().zip(scalars.iter().chain(c.drops.iter())) {
                slot.store(*v, Ordering::Relaxed);
            }
        }
    }

    /// Reads one interface's counters.
    pub fn read(&self, port: usize) -> PortCounters {
        let Some(slots) = self.ports.get(port) else {
            return PortCounters::default();
        };
        let v = |i: usize| slots[i].load(Ordering::Relaxed);
        PortCounters {
            rx_packets: v(0),
            rx_bytes: v(1),
            tx_packets: v(2),
            tx_bytes: v(3),
            forwarded: v(4),
            punted: v(5),
            neighbour_replies: v(6),
            neighbour_requests: v(7),
            icmp_sent: v(8),
            esp_sealed: v(9),
            esp_opened: v(10),
            drops: std::array::from_fn(|i| v(SCALARS + i)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for r in DropReason::ALL {
            assert_eq!(DropReason::from_name(r.name()), Some(r));
            assert_eq!(DropReason::ALL[r as usize], r, "ALL is in enum order");
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn publish_then_read_and_sum() {
        let shared = SharedCounters::new(2);
        let mut local = [PortCounters::default(); 2];
        local[1].rx_packets = 7;
        local[1].icmp_sent = 3;
        local[1].drop(DropReason::BadChecksum);
        local[1].drop(DropReason::BadChecksum);
        shared.publish(&local);
        let read = shared.read(1);
        assert_eq!(read, local[1]);
        assert_eq!(read.drops[DropReason::BadChecksum as usize], 2);
        assert_eq!(shared.read(0), PortCounters::default());
        assert_eq!(shared.read(9), PortCounters::default());
        let mut sum = read;
        sum.add(&read);
        assert_eq!(sum.rx_packets, 14);
        assert_eq!(sum.total_drops(), 4);
    }
}
