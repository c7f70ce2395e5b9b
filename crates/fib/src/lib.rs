//! Longest-prefix-match forwarding tables (IPv4 and IPv6) with ECMP.
#![forbid(unsafe_code)]
