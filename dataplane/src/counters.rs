//! Counters: kept per worker in plain integers, published to readers in
//! batches.
//!
//! The hot path increments plain `u64`s owned by one worker. Every few
//! batches the worker copies them into its [`SharedCounters`] with relaxed
//! stores (no read-modify-write, no cache line shared between writers);
//! readers sum the workers' mirrors. A reader may see a figure a few batches
//! old, never a torn or lost one.

use std::sync::atomic::{AtomicU64, Ordering};

/// The stage of the data path that owns a drop reason (VPP's per-node
/// error lists): `show drops` and the metrics name it beside the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The kernel, before the worker saw the frame (`XDP_STATISTICS`).
    Rx,
    /// Ethernet classification (`pipeline/l2.rs`).
    L2,
    /// IPv4 and IPv6 header checks (`pipeline/ipv4.rs`, `pipeline/ipv6.rs`).
    Ip,
    /// ARP, NDP and next-hop resolution (`pipeline/neighbour.rs`, the worker).
    Neighbour,
    /// NAT in and out (`pipeline/nat.rs`).
    Nat,
    /// Route lookup and egress checks (`pipeline/route.rs`).
    Route,
    /// Delivery to this box (`pipeline/local.rs`).
    Local,
    /// ESP arriving (`pipeline/esp_in.rs`).
    EspIn,
    /// ESP leaving (`pipeline/esp_out.rs`).
    EspOut,
    /// ICMP errors Strait generates (`pipeline/icmp.rs`).
    Icmp,
    /// IPv4 fragmentation (`pipeline/fragment.rs`, the worker).
    Fragment,
    /// Frames and transmit rings (the worker).
    Tx,
}

impl Stage {
    /// Stable snake_case name, used by the CLI and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Rx => "rx",
            Stage::L2 => "l2",
            Stage::Ip => "ip",
            Stage::Neighbour => "neighbour",
            Stage::Nat => "nat",
            Stage::Route => "route",
            Stage::Local => "local",
            Stage::EspIn => "esp_in",
            Stage::EspOut => "esp_out",
            Stage::Icmp => "icmp",
            Stage::Fragment => "fragment",
            Stage::Tx => "tx",
        }
    }
}

/// Writes [`DropReason`] once: each reason with its stage, its stable name
/// and its meaning; the enum, [`DropReason::ALL`], [`DropReason::name`] and
/// [`DropReason::stage`] are generated from that one list.
macro_rules! drop_reasons {
    ($( $stage:ident { $( $(#[doc = $doc:literal])+ $variant:ident = $name:literal, )+ } )+) => {
        /// Why a packet was dropped. Each reason has its own counter per
        /// interface and belongs to one [`Stage`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $( $( $(#[doc = $doc])+ $variant, )+ )+
        }

        impl DropReason {
            /// Number of reasons.
            pub const COUNT: usize = <[&str]>::len(&[$( $( $name, )+ )+]);

            /// Every reason, in display order (= enum order).
            pub const ALL: [DropReason; Self::COUNT] = [$( $( DropReason::$variant, )+ )+];

            /// Stable snake_case name, used by the CLI and metrics.
            pub fn name(self) -> &'static str {
                match self {
                    $( $( DropReason::$variant => $name, )+ )+
                }
            }

            /// The stage that drops for this reason.
            pub fn stage(self) -> Stage {
                match self {
                    $( $( DropReason::$variant => Stage::$stage, )+ )+
                }
            }
        }
    };
}

drop_reasons! {
    Rx {
        /// The kernel found the port's AF_XDP RX ring full: the worker fell
        /// behind and the frame was lost before it saw it (`XDP_STATISTICS`
        /// `rx_ring_full`).
        RxRingFull = "rx_ring_full",
        /// The kernel had no free frame on the port's fill ring for an
        /// arriving frame (or the frame was larger than a UMEM frame) and
        /// dropped it (`XDP_STATISTICS` `rx_dropped`).
        RxNoFrame = "rx_no_frame",
    }
    L2 {
        /// Frame or header shorter than its headers claim.
        Truncated = "truncated",
        /// EtherType the dataplane does not forward.
        NotIp = "not_ip",
        /// Frame for another station's MAC address (or a link-local IPv6
        /// destination that is not ours).
        NotForUs = "not_for_us",
        /// Malformed Ethernet encapsulation (VLAN tags), or a frame from a
        /// port the tables do not know.
        Malformed = "malformed",
    }
    Ip {
        /// IP version field does not match the EtherType.
        BadVersion = "bad_version",
        /// IPv4 IHL below 5 or beyond the packet.
        BadHeaderLength = "bad_header_length",
        /// IPv4 total length / IPv6 payload length beyond the frame.
        BadTotalLength = "bad_total_length",
        /// IPv4 header checksum wrong.
        BadChecksum = "bad_checksum",
        /// Malformed IP header of another kind (bad options, extension
        /// headers).
        IpMalformed = "ip_malformed",
        /// Source address that can never be a sender (RFC 1812 §5.3.7), or
        /// one of this port's own addresses.
        MartianSource = "martian_source",
        /// On a port with `source_check`: the source is not routed back out
        /// of the port it arrived on (BCP 38 ingress filtering, RFC 3704
        /// §2.2; any member of an ECMP group counts).
        SourceCheckFailed = "source_check_failed",
    }
    Neighbour {
        /// ARP packet that does not parse (RFC 826).
        ArpMalformed = "arp_malformed",
        /// NDP message that does not parse or whose checksum is wrong
        /// (RFC 4861 §7.1).
        NdpMalformed = "ndp_malformed",
        /// NDP message not sent with hop limit 255 (RFC 4861 §7.1.1/§7.1.2).
        NdpBadHopLimit = "ndp_bad_hop_limit",
        /// Next hop did not answer ARP/NDP in time.
        NeighbourUnresolved = "neighbour_unresolved",
        /// The pending queue of an unresolved neighbour was full.
        NeighbourQueueFull = "neighbour_queue_full",
        /// The neighbour table was full.
        NeighbourTableFull = "neighbour_table_full",
        /// The packets held for unresolved neighbours, all together,
        /// reached their cap.
        NeighbourHeldLimit = "neighbour_held_limit",
        /// Too many new unresolved neighbours this second.
        NeighbourRateLimited = "neighbour_rate_limited",
    }
    Nat {
        /// NAT: transport header too short to translate.
        NatMalformed = "nat_malformed",
        /// NAT: a non-first fragment of traffic a NAT rule claims that came
        /// before its first fragment (or whose first fragment was refused):
        /// no ports to match, and fragments are neither held nor
        /// reassembled. Fragments no rule claims pass (RFC 4787 REQ-14).
        NatFragment = "nat_fragment",
        /// NAT: a protocol other than TCP, UDP or ICMP to or from a
        /// translated address.
        NatUnsupportedProtocol = "nat_unsupported_protocol",
        /// NAT: a TCP segment other than a SYN without a session.
        NatTcpNotSyn = "nat_tcp_not_syn",
        /// NAT: refused by address-dependent filtering (RFC 4787 REQ-8).
        NatFiltered = "nat_filtered",
        /// NAT: inbound packet to a translated address with no session,
        /// mapping or rule behind it.
        NatNoSession = "nat_no_session",
        /// NAT: session table full or no free external port for a new flow.
        NatExhausted = "nat_exhausted",
        /// NAT: ICMP error about no known session (RFC 5508 REQ-4/5).
        NatIcmpErrorNoSession = "nat_icmp_error_no_session",
        /// NAT: ICMP error whose checksums do not verify (RFC 5508 REQ-3).
        NatIcmpErrorChecksum = "nat_icmp_error_checksum",
        /// NAT: ICMP error about an error, or with an unusable quoted packet.
        NatIcmpErrorMalformed = "nat_icmp_error_malformed",
        /// NAT: ICMP type the translator does not handle.
        NatIcmpUnsupported = "nat_icmp_unsupported",
        /// NAT: TCP reset outside the receiver's window (RFC 5961 §3):
        /// a blind reset, the session is kept.
        NatTcpRstOutOfWindow = "nat_tcp_rst_out_of_window",
        /// NAT: the inside address holds its quota of external ports
        /// (`ports_per_inside_address`, RFC 6888 REQ-4).
        NatQuotaInsidePorts = "nat_quota_inside_ports",
        /// NAT: the inside address holds its quota of sessions
        /// (`sessions_per_inside_address`, RFC 6888 REQ-5).
        NatQuotaInsideSessions = "nat_quota_inside_sessions",
        /// NAT: the remote address opened its quota of inbound sessions
        /// (`inbound_sessions_per_remote_address`).
        NatQuotaRemote = "nat_quota_remote",
        /// NAT: the DNAT or static rule holds its quota of inbound sessions
        /// (`inbound_sessions_per_rule`).
        NatQuotaRule = "nat_quota_rule",
        /// Load balancer: a new flow to a service with no backend up and
        /// undrained (ICMP port unreachable sent when allowed).
        LbNoBackend = "lb_no_backend",
    }
    Route {
        /// No route to the destination (ICMP unreachable sent when allowed).
        NoRoute = "no_route",
        /// The route says unreachable (ICMP unreachable sent when allowed).
        Unreachable = "unreachable",
        /// The route says blackhole.
        Blackhole = "blackhole",
        /// The route names an egress the tables do not hold (a route to a
        /// tunnel endpoint behind another tunnel).
        NoEgress = "no_egress",
        /// TTL or hop limit ran out here (ICMP time-exceeded sent when
        /// allowed).
        TtlExceeded = "ttl_exceeded",
        /// Larger than the egress MTU with DF set, or IPv6 (ICMP frag-needed
        /// or packet-too-big sent when allowed).
        Oversized = "oversized",
    }
    Local {
        /// ICMP echo request to this box that is too short.
        EchoTruncated = "echo_truncated",
        /// ICMP echo request to this box whose checksum is wrong.
        EchoBadChecksum = "echo_bad_checksum",
        /// ICMPv6 echo request to this box that does not parse, or whose
        /// answer cannot be built.
        EchoMalformed = "echo_malformed",
        /// Traffic for the host stack could not be handed over (no TAP, or
        /// the TAP refused it).
        HostPuntFailed = "host_punt_failed",
        /// Traffic for the host stack above `engine.host_punt_rate`.
        HostPuntPoliced = "host_punt_policed",
        /// IKE for the daemon above 10 000 datagrams per second per worker
        /// (burst 4 000).
        ServicePoliced = "service_policed",
        /// IKE or DNS for the daemon while its queue (4 096 IKE, 8 192 DNS
        /// datagrams) is full, or not a well-formed UDP datagram.
        ServiceQueueFull = "service_queue_full",
        /// A packet the host stack sent, routed into a tunnel, was larger
        /// than the tunnel's MTU with DF set (or IPv6): dropped, the host
        /// keeps it from happening again by the MSS clamp of its TCP SYNs.
        HostTooBig = "host_too_big",
    }
    EspIn {
        /// UDP or ESP to a tunnel endpoint too short for its headers.
        EspTruncated = "esp_truncated",
        /// ESP for an SPI we have no inbound SA for.
        EspBadSpi = "esp_bad_spi",
        /// ESP whose integrity check failed (RFC 4303 §3.4.4).
        EspAuthFailed = "esp_auth_failed",
        /// ESP sequence number already seen inside the window.
        EspReplay = "esp_replay",
        /// ESP sequence number left of the window.
        EspReplayOld = "esp_replay_old",
        /// ESP that failed otherwise (padding, inner packet, selectors,
        /// lifetime).
        EspInvalid = "esp_invalid",
        /// ESP inside ESP: never more than one layer is opened.
        EspNested = "esp_nested",
        /// A cleartext packet whose source and destination a tunnel's
        /// inbound policy covers: it must arrive through that tunnel
        /// (RFC 4301 §5.2).
        EspPolicyViolation = "esp_policy_violation",
    }
    EspOut {
        /// A packet could not be sealed (selectors, sequence exhausted,
        /// expired SA).
        EspSealFailed = "esp_seal_failed",
        /// The key's recorded sequence reservation is used up and not yet
        /// extended (the state directory is slow or failing): the packet
        /// is dropped rather than sealed under an unrecorded number.
        EspSeqUnreserved = "esp_seq_unreserved",
        /// No route out of a port to the tunnel's peer.
        TunnelNoRoute = "tunnel_no_route",
    }
    Icmp {
        /// A locally generated ICMP error was suppressed by the rate limit.
        IcmpRateLimited = "icmp_rate_limited",
    }
    Fragment {
        /// An IPv4 packet to fragment whose header does not allow it.
        FragmentFailed = "fragment_failed",
    }
    Tx {
        /// No free frame in the UMEM pool for a generated packet or a
        /// fragment.
        NoFrame = "no_frame",
        /// No room in the frame for the headers to prepend (Ethernet, outer
        /// IP/UDP/ESP) or the packet to build.
        NoHeadroom = "no_headroom",
        /// The egress TX ring was full.
        TxRingFull = "tx_ring_full",
    }
}

impl DropReason {
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
    /// The worker's UMEM: frames in all, frames in its free pool (not on a
    /// fill ring, in a ring of the kernel's or held by the worker).
    pool: [AtomicU64; 2],
}

/// How many of a worker's UMEM frames are free, published with its
/// counters: a frame that never comes back shows as a free count that
/// falls over time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolGauge {
    /// Frames in the worker's UMEM.
    pub frames: u64,
    /// Frames in its free pool when last published.
    pub free: u64,
}

impl SharedCounters {
    /// Room for `ports` interfaces.
    pub fn new(ports: usize) -> SharedCounters {
        SharedCounters {
            ports: (0..ports)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
            pool: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Publishes the free-pool gauge (owner only).
    pub fn publish_pool(&self, gauge: PoolGauge) {
        self.pool[0].store(gauge.frames, Ordering::Relaxed);
        self.pool[1].store(gauge.free, Ordering::Relaxed);
    }

    /// The last published free-pool gauge.
    pub fn pool(&self) -> PoolGauge {
        PoolGauge {
            frames: self.pool[0].load(Ordering::Relaxed),
            free: self.pool[1].load(Ordering::Relaxed),
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
    fn every_stage_owns_a_reason() {
        for stage in [
            Stage::Rx,
            Stage::L2,
            Stage::Ip,
            Stage::Neighbour,
            Stage::Nat,
            Stage::Route,
            Stage::Local,
            Stage::EspIn,
            Stage::EspOut,
            Stage::Icmp,
            Stage::Fragment,
            Stage::Tx,
        ] {
            assert!(
                DropReason::ALL.iter().any(|r| r.stage() == stage),
                "{}",
                stage.name()
            );
        }
    }

    #[test]
    fn every_reason_is_documented_with_its_stage() {
        let doc = include_str!("../../docs/CLI.md");
        for r in DropReason::ALL {
            let row = format!("| `{}` | `{}` |", r.stage().name(), r.name());
            assert!(doc.contains(&row), "docs/CLI.md lacks the row {row}");
        }
    }

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
        assert_eq!(shared.pool(), PoolGauge::default());
        let gauge = PoolGauge {
            frames: 4096,
            free: 1000,
        };
        shared.publish_pool(gauge);
        assert_eq!(shared.pool(), gauge);
        let mut sum = read;
        sum.add(&read);
        assert_eq!(sum.rx_packets, 14);
        assert_eq!(sum.total_drops(), 4);
    }
}
