//! Zero-copy packet header views and builders for the Strait dataplane.
#![forbid(unsafe_code)]
