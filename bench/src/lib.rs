//! Strait's traffic generator and end-to-end benchmark harness.
