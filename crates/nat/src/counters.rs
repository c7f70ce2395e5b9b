//! Per-worker counters with stable names, VPP `show errors` style: every
//! dropped packet is counted under exactly one reason.

/// Why the translator refused a packet. Names are stable: monitoring and
/// `straitctl` use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Truncated or inconsistent headers.
    Malformed = 0,
    /// A non-first IPv4 fragment of traffic a rule claims whose first
    /// fragment was not translated first (it came later, was refused, or
    /// its entry was evicted): without ports it cannot be matched to a
    /// session (RFC 4787 REQ-14; fragments are not held or reassembled).
    /// Also fragmented ICMP errors.
    Fragment,
    /// A protocol other than TCP, UDP and ICMP from or to a translated
    /// address.
    UnsupportedProtocol,
    /// A TCP segment other than an initial SYN for which no session exists.
    TcpNotSyn,
    /// Inbound packet refused by address-dependent filtering (RFC 4787 REQ-8).
    Filtered,
    /// Inbound packet to a pool address with no mapping, DNAT or static rule.
    NoMapping,
    /// Session table full or no free external port (the flow is new;
    /// existing flows are unaffected).
    NatExhausted,
    /// ICMP error whose embedded packet matches no session (RFC 5508 REQ-4
    /// and REQ-5: silently dropped; also what spoofed errors hit).
    IcmpErrorNoSession,
    /// ICMP error whose checksum or embedded IPv4 header checksum does not
    /// verify (RFC 5508 REQ-3).
    IcmpErrorChecksum,
    /// ICMP error about an ICMP error, or with an unusable embedded packet.
    IcmpErrorMalformed,
    /// ICMP message type the translator does not handle (neither echo nor
    /// destination-unreachable / time-exceeded / parameter-problem).
    IcmpUnsupported,
    /// TCP reset whose sequence number is outside the receiver's window
    /// (RFC 5961 section 3): a blind reset; the session is left as it was.
    TcpRstOutOfWindow,
    /// A new mapping refused: the inside address holds its quota of
    /// external ports (RFC 6888 REQ-4).
    QuotaInsidePorts,
    /// A new session refused: the inside address holds its quota of
    /// sessions (RFC 6888 REQ-5).
    QuotaInsideSessions,
    /// A new inbound session through a DNAT or static rule refused: the
    /// remote address has opened its quota of them.
    QuotaRemote,
    /// A new inbound session through a DNAT or static rule refused: the
    /// rule holds its quota of inbound sessions.
    QuotaRule,
    /// A new flow to a load-balanced service none of whose backends may
    /// take it (all down or drained).
    NoBackend,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 17] = [
        Self::Malformed,
        Self::Fragment,
        Self::UnsupportedProtocol,
        Self::TcpNotSyn,
        Self::Filtered,
        Self::NoMapping,
        Self::NatExhausted,
        Self::IcmpErrorNoSession,
        Self::IcmpErrorChecksum,
        Self::IcmpErrorMalformed,
        Self::IcmpUnsupported,
        Self::TcpRstOutOfWindow,
        Self::QuotaInsidePorts,
        Self::QuotaInsideSessions,
        Self::QuotaRemote,
        Self::QuotaRule,
        Self::NoBackend,
    ];

    /// Stable counter name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Fragment => "fragment",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::TcpNotSyn => "tcp_not_syn",
            Self::Filtered => "filtered",
            Self::NoMapping => "no_mapping",
            Self::NatExhausted => "nat_exhausted",
            Self::IcmpErrorNoSession => "icmp_error_no_session",
            Self::IcmpErrorChecksum => "icmp_error_checksum",
            Self::IcmpErrorMalformed => "icmp_error_malformed",
            Self::IcmpUnsupported => "icmp_unsupported",
            Self::TcpRstOutOfWindow => "tcp_rst_out_of_window",
            Self::QuotaInsidePorts => "quota_inside_ports",
            Self::QuotaInsideSessions => "quota_inside_sessions",
            Self::QuotaRemote => "quota_remote",
            Self::QuotaRule => "quota_rule",
            Self::NoBackend => "no_backend",
        }
    }
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters of one worker. Plain integers: only the owning worker writes
/// them; the dataplane copies them out for export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatCounters {
    drops: [u64; DropReason::ALL.len()],
    /// Packets translated outbound.
    pub translated_outbound: u64,
    /// Packets translated inbound.
    pub translated_inbound: u64,
    /// Packets translated both ways back to the inside (RFC 4787 REQ-9).
    pub hairpinned: u64,
    /// Packets no rule applied to, passed on unchanged.
    pub not_translated: u64,
    /// ICMP errors whose embedded packet was translated (RFC 5508).
    pub icmp_errors_translated: u64,
    /// Sessions created.
    pub sessions_created: u64,
    /// Sessions removed by idle timeout.
    pub sessions_expired: u64,
    /// Sessions never answered (a SYN, a datagram or an echo request
    /// without reply) removed, oldest first, to make room for a new flow
    /// in a full table (early drop, as Linux conntrack does).
    pub sessions_early_dropped: u64,
    /// Mappings created.
    pub mappings_created: u64,
    /// New mappings refused (`nat_exhausted`) because the rule's range had
    /// no free port while ports of that address were cooling after their
    /// last mapping went (RFC 6888 REQ-8 port reuse delay).
    pub mappings_refused_cooling: u64,
    /// Non-first fragments translated like their first fragment.
    pub fragments_translated: u64,
    /// First-fragment entries evicted before their timeout by newer ones
    /// (the fragment table is full).
    pub fragment_evictions: u64,
}

impl NatCounters {
    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// Packets dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Every counter with its stable name (drops as `drop_<reason>`).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        const DROP_NAMES: [&str; DropReason::ALL.len()] = [
            "drop_malformed",
            "drop_fragment",
            "drop_unsupported_protocol",
            "drop_tcp_not_syn",
            "drop_filtered",
            "drop_no_mapping",
            "drop_nat_exhausted",
            "drop_icmp_error_no_session",
            "drop_icmp_error_checksum",
            "drop_icmp_error_malformed",
            "drop_icmp_unsupported",
            "drop_tcp_rst_out_of_window",
            "drop_quota_inside_ports",
            "drop_quota_inside_sessions",
            "drop_quota_remote",
            "drop_quota_rule",
            "drop_no_backend",
        ];
        [
            ("translated_outbound", self.translated_outbound),
            ("translated_inbound", self.translated_inbound),
            ("hairpinned", self.hairpinned),
            ("not_translated", self.not_translated),
            ("icmp_errors_translated", self.icmp_errors_translated),
            ("sessions_created", self.sessions_created),
            ("sessions_expired", self.sessions_expired),
            ("sessions_early_dropped", self.sessions_early_dropped),
            ("mappings_created", self.mappings_created),
            ("mappings_refused_cooling", self.mappings_refused_cooling),
            ("fragments_translated", self.fragments_translated),
            ("fragment_evictions", self.fragment_evictions),
        ]
        .into_iter()
        .chain(DROP_NAMES.into_iter().zip(self.drops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_names_line_up_with_reasons() {
        let mut c = NatCounters::default();
        for (k, reason) in DropReason::ALL.into_iter().enumerate() {
            for _ in 0..=k {
                c.drop(reason);
            }
        }
        for (k, reason) in DropReason::ALL.into_iter().enumerate() {
            let name = format!("drop_{}", reason.name());
            let value = c.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
            assert_eq!(value, Some(k as u64 + 1), "{name}");
            assert_eq!(c.drops(reason), k as u64 + 1);
        }
        assert_eq!(DropReason::NatExhausted.name(), "nat_exhausted");
        assert_eq!(DropReason::Fragment.name(), "fragment");
    }
}
