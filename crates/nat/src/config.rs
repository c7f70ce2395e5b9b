//! Per-worker translator configuration: capacities, timeouts, filtering and
//! the worker's share of the external port space.

/// Idle timeouts in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// UDP sessions. RFC 4787 REQ-5: at least 120 s, 300 s recommended.
    pub udp: u64,
    /// Established TCP sessions. RFC 5382 REQ-5: at least 2 h 4 min.
    pub tcp_established: u64,
    /// Partially open or closing TCP sessions. RFC 5382 REQ-5: at least 4 min.
    pub tcp_transitory: u64,
    /// ICMP echo sessions. RFC 5508 REQ-2: at least 60 s.
    pub icmp: u64,
}

impl Timeouts {
    /// RFC 4787 REQ-5 floor for UDP.
    pub const UDP_MIN: u64 = 120;
    /// RFC 5382 REQ-5 floor for established TCP (2 h 4 min).
    pub const TCP_ESTABLISHED_MIN: u64 = 7440;
    /// RFC 5382 REQ-5 floor for transitory TCP.
    pub const TCP_TRANSITORY_MIN: u64 = 240;
    /// RFC 5508 REQ-2 floor for ICMP query sessions.
    pub const ICMP_MIN: u64 = 60;
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            udp: 300,
            tcp_established: Self::TCP_ESTABLISHED_MIN,
            tcp_transitory: Self::TCP_TRANSITORY_MIN,
            icmp: Self::ICMP_MIN,
        }
    }
}

/// Which unsolicited inbound packets reach an existing mapping
/// (RFC 4787 section 5, REQ-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Filtering {
    /// Any external endpoint may use the mapping (best application
    /// transparency, REQ-8 first case).
    EndpointIndependent,
    /// Only external addresses the internal endpoint has already sent to
    /// (REQ-8 recommendation when stricter filtering is wanted).
    #[default]
    AddressDependent,
}

/// This worker's place among the dataplane's workers. External ports are
/// split into blocks of [`PORT_BLOCK`] ports dealt round-robin to workers,
/// so the destination port of return traffic names the worker that owns its
/// session (see [`owner_worker_for_inbound`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerPartition {
    /// This worker's index, below `count`.
    pub index: u16,
    /// Number of workers, at least 1.
    pub count: u16,
}

impl WorkerPartition {
    /// A single worker owning every port.
    pub const SINGLE: Self = Self { index: 0, count: 1 };

    /// Whether this worker owns external `port`.
    pub fn owns(&self, port: u16) -> bool {
        owner_worker_for_inbound(port, self.count) == self.index
    }
}

impl Default for WorkerPartition {
    fn default() -> Self {
        Self::SINGLE
    }
}

/// Ports per ownership block: one 64-bit word of the port bitmap, so a
/// worker scans only whole words it owns.
pub const PORT_BLOCK: u16 = 64;

/// The worker (of `workers`) that owns sessions whose external port is
/// `port`. Inbound packets are steered by their destination port (or ICMP
/// echo identifier); outbound packets by their source port, which works
/// because a worker tries to keep the source port and otherwise only hands
/// out ports it owns. Workers count of 0 is treated as 1.
pub fn owner_worker_for_inbound(port: u16, workers: u16) -> u16 {
    (port / PORT_BLOCK) % workers.max(1)
}

/// Errors in a [`NatConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A timeout below the floor its RFC sets.
    #[error("{name} timeout {value} s is below the {min} s required by {rfc}")]
    TimeoutTooShort {
        /// Which timeout.
        name: &'static str,
        /// Configured value.
        value: u64,
        /// Required floor.
        min: u64,
        /// The requirement.
        rfc: &'static str,
    },
    /// A port reuse delay other than 0 (off) below the RFC 6888 REQ-8 floor.
    #[error(
        "port reuse delay {0} s is below the {min} s required by RFC 6888 REQ-8 (0 turns it off)",
        min = NatConfig::PORT_REUSE_DELAY_MIN
    )]
    PortReuseDelay(u64),
    /// Capacity zero or beyond the index range.
    #[error("session capacity {0} must be between 1 and {max}", max = NatConfig::MAX_SESSIONS)]
    Capacity(usize),
    /// Worker index outside the worker count.
    #[error("worker index {index} is not below worker count {count}")]
    Partition {
        /// Index.
        index: u16,
        /// Count.
        count: u16,
    },
}

/// Configuration of one [`crate::NatWorker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatConfig {
    /// Maximum sessions (and mappings) this worker holds. All memory is
    /// allocated up front from this number.
    pub max_sessions: usize,
    /// Most external addresses (pool addresses plus masquerade interface
    /// addresses) this worker allocates ports on; each costs 96 KiB of port
    /// bitmaps (8 KiB per protocol, four times that with a port reuse
    /// delay: [`crate::port_bitmap_bytes_per_address`]).
    pub max_external_addresses: usize,
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// Inbound filtering behaviour for dynamic mappings.
    pub filtering: Filtering,
    /// Whether inbound UDP packets refresh the session timer. RFC 4787
    /// REQ-6 only requires outbound refresh; inbound refresh is allowed.
    pub inbound_refresh: bool,
    /// Key for the flow hash, port choice and backend choice. The dataplane
    /// should draw it from a random source at start-up so remote hosts
    /// cannot aim collisions at the tables.
    pub hash_key: u64,
    /// This worker's share of the port space.
    pub partition: WorkerPartition,
    /// Fragmented datagrams whose first fragment's translation is
    /// remembered for the later fragments (RFC 4787 REQ-14), rounded up to
    /// a power of two; 28 bytes each, allocated up front.
    pub fragment_flows: usize,
    /// Seconds a freed external port cools before another internal
    /// endpoint may have it (RFC 6888 REQ-8: at least 120); the endpoint
    /// that held it may have it back meanwhile. 0 turns the delay off.
    pub port_reuse_delay: u64,
    /// External ports (mappings, all protocols and external addresses
    /// together) one inside address may hold (RFC 6888 REQ-4); 0: no
    /// limit.
    pub ports_per_inside_address: u32,
    /// Sessions one inside address may hold (RFC 6888 REQ-5): those it
    /// opened and those opened to it through its own mappings; 0: no
    /// limit.
    pub sessions_per_inside_address: u32,
    /// Sessions one remote address may open inbound through DNAT and
    /// static rules (RFC 6888 REQ-5 for state created from outside); 0:
    /// no limit.
    pub inbound_sessions_per_remote_address: u32,
    /// Inbound-initiated sessions one DNAT or static rule may hold; 0: no
    /// limit.
    pub inbound_sessions_per_rule: u32,
}

impl NatConfig {
    /// Upper bound for `max_sessions` (slab indices are `u32`).
    pub const MAX_SESSIONS: usize = 1 << 26;
    /// RFC 6888 REQ-8 floor for [`Self::port_reuse_delay`].
    pub const PORT_REUSE_DELAY_MIN: u64 = 120;

    /// Checks the RFC floors, capacity and partition.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.timeouts;
        let checks = [
            ("udp", t.udp, Timeouts::UDP_MIN, "RFC 4787 REQ-5"),
            (
                "tcp established",
                t.tcp_established,
                Timeouts::TCP_ESTABLISHED_MIN,
                "RFC 5382 REQ-5",
            ),
            (
                "tcp transitory",
                t.tcp_transitory,
                Timeouts::TCP_TRANSITORY_MIN,
                "RFC 5382 REQ-5",
            ),
            ("icmp", t.icmp, Timeouts::ICMP_MIN, "RFC 5508 REQ-2"),
        ];
        for (name, value, min, rfc) in checks {
            if value < min {
                return Err(ConfigError::TimeoutTooShort {
                    name,
                    value,
                    min,
                    rfc,
                });
            }
        }
        if self.port_reuse_delay != 0 && self.port_reuse_delay < Self::PORT_REUSE_DELAY_MIN {
            return Err(ConfigError::PortReuseDelay(self.port_reuse_delay));
        }
        if self.max_sessions == 0 || self.max_sessions > Self::MAX_SESSIONS {
            return Err(ConfigError::Capacity(self.max_sessions));
        }
        if self.partition.count == 0 || self.partition.index >= self.partition.count {
            return Err(ConfigError::Partition {
                index: self.partition.index,
                count: self.partition.count,
            });
        }
        Ok(())
    }
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            max_sessions: 65_536,
            max_external_addresses: 16,
            timeouts: Timeouts::default(),
            filtering: Filtering::default(),
            inbound_refresh: true,
            hash_key: 0x5eed_0f57_4a17,
            partition: WorkerPartition::SINGLE,
            fragment_flows: 1024,
            port_reuse_delay: Self::PORT_REUSE_DELAY_MIN,
            ports_per_inside_address: 4096,
            sessions_per_inside_address: 16_384,
            inbound_sessions_per_remote_address: 4096,
            inbound_sessions_per_rule: 32_768,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_meet_rfc_floors() {
        assert_eq!(NatConfig::default().validate(), Ok(()));
        let t = Timeouts::default();
        assert_eq!(
            (t.udp, t.tcp_established, t.tcp_transitory, t.icmp),
            (300, 7440, 240, 60)
        );
    }

    #[test]
    fn rejects_short_timeouts_and_bad_partition() {
        let mut c = NatConfig::default();
        c.timeouts.udp = 119;
        let err = c.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "udp timeout 119 s is below the 120 s required by RFC 4787 REQ-5"
        );
        let c = NatConfig {
            partition: WorkerPartition { index: 2, count: 2 },
            ..NatConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Partition { .. })));
        let c = NatConfig {
            max_sessions: 0,
            ..NatConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::Capacity(0))));
        let c = NatConfig {
            port_reuse_delay: 60,
            ..NatConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "port reuse delay 60 s is below the 120 s required by RFC 6888 REQ-8 (0 turns it off)"
        );
        let c = NatConfig {
            port_reuse_delay: 0,
            ..NatConfig::default()
        };
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn port_blocks_alternate_between_workers() {
        assert_eq!(owner_worker_for_inbound(0, 2), 0);
        assert_eq!(owner_worker_for_inbound(63, 2), 0);
        assert_eq!(owner_worker_for_inbound(64, 2), 1);
        assert_eq!(owner_worker_for_inbound(128, 2), 0);
        assert_eq!(owner_worker_for_inbound(65535, 1), 0);
        assert_eq!(owner_worker_for_inbound(65535, 0), 0);
        let p = WorkerPartition { index: 1, count: 2 };
        assert!(p.owns(100) && !p.owns(130));
    }
}
