//! Sans-I/O SNAT/DNAT with connection tracking (RFC 4787, 5382, 5508).
#![forbid(unsafe_code)]
