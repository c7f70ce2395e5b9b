//! Sans-I/O ESP (RFC 4303) tunnel mode with AES-GCM and ChaCha20-Poly1305.
#![forbid(unsafe_code)]
