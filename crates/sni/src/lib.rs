//! The server name a TCP stream opens with, read sans-I/O: the
//! `server_name` of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3) or
//! the `Host` header of an HTTP/1 request head (RFC 9112 §3.2, read with
//! `httparse`).
//!
//! The caller keeps the bytes received so far in its own buffer and asks
//! again after each read; [`sniff`] answers [`Sniff::NeedMore`] until the
//! head is complete. A ClientHello may be spread over several TLS records
//! (RFC 8446 §5.1: handshake messages may be fragmented across records)
//! and any number of TCP segments; it is read in place across the record
//! headers, so nothing is copied or allocated but the name itself, into a
//! fixed [`ServerName`].
//!
//! ```
//! use strait_sni::{sniff, Sniff};
//! let head = b"GET / HTTP/1.1\r\nHost: Example.COM:8080\r\n\r\n";
//! match sniff(&head[..10]) { Sniff::NeedMore => {}, other => panic!("{other:?}") }
//! match sniff(head) {
//!     Sniff::Http(name) => assert_eq!(name.as_str(), "example.com"),
//!     other => panic!("{other:?}"),
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod http;
#[doc(hidden)]
pub mod testing;
mod tls;

pub use tls::{client_hello_name, ClientHello};

/// The largest head read: a ClientHello (with its record headers) or an
/// HTTP request head longer than this is refused. Post-quantum key shares
/// (ML-KEM-768 + X25519 is 1216 bytes) make ClientHellos of 1.5-2 KiB
/// common, several records are allowed, and 16 KiB leaves room.
pub const MAX_HEAD: usize = 16 * 1024;

/// The longest name kept (a DNS name in text is at most 253 characters,
/// RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 253;

/// A server name, lower-cased, without a trailing dot: letters, digits,
/// `-`, `_` and `.`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ServerName {
    len: u8,
    bytes: [u8; MAX_NAME],
}

impl ServerName {
    /// Checks and keeps `raw` (a host name as sent on the wire).
    pub fn new(raw: &[u8]) -> Result<ServerName, HeadError> {
        let raw = raw.strip_suffix(b".").unwrap_or(raw);
        if raw.is_empty() {
            return Err(HeadError::BadName("empty"));
        }
        if raw.len() > MAX_NAME {
            return Err(HeadError::BadName("longer than 253 characters"));
        }
        let mut bytes = [0u8; MAX_NAME];
        for (d, s) in bytes.iter_mut().zip(raw) {
            if !(s.is_ascii_alphanumeric() || matches!(s, b'-' | b'_' | b'.')) {
                return Err(HeadError::BadName("a character other than a-z 0-9 - _ ."));
            }
            *d = s.to_ascii_lowercase();
        }
        // Only one trailing dot (the root's) is dropped: "a.." is an empty
        // label.
        if raw.starts_with(b".") || raw.ends_with(b".") || raw.windows(2).any(|w| w == b"..") {
            return Err(HeadError::BadName("an empty label"));
        }
        Ok(ServerName {
            len: raw.len() as u8,
            bytes,
        })
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `new`).
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Debug for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerName({:?})", self.as_str())
    }
}

impl std::fmt::Display for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the bytes received so far say.
// The name is held inline (no allocation); one answer per connection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// Not enough yet: read more and ask again with everything.
    NeedMore,
    /// A complete TLS ClientHello naming this server.
    Tls(ServerName),
    /// A complete TLS ClientHello without a `server_name` (RFC 6066 §3
    /// makes it optional).
    TlsWithoutName,
    /// A complete HTTP/1 request head whose `Host` names this server (the
    /// port, if any, removed).
    Http(ServerName),
    /// A complete HTTP/1 request head without a usable `Host`.
    HttpWithoutName,
    /// Neither TLS nor HTTP/1, or malformed: the reason.
    Invalid(HeadError),
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The stream starts with neither a TLS handshake record nor an HTTP
    /// request line.
    #[error("neither a TLS ClientHello nor an HTTP/1 request")]
    Unrecognised,
    /// The TLS records or the ClientHello do not parse.
    #[error("malformed ClientHello: {0}")]
    Tls(&'static str),
    /// The HTTP head does not parse.
    #[error("malformed HTTP request head: {0}")]
    Http(&'static str),
    /// The head is longer than [`MAX_HEAD`].
    #[error("head longer than {MAX_HEAD} bytes")]
    TooLong,
    /// The name is not a host name.
    #[error("server name is not a host name: {0}")]
    BadName(&'static str),
}

/// Reads the head of a stream from its first bytes (`buf`, everything
/// received so far, at most [`MAX_HEAD`] bytes are looked at).
///
/// A first byte of 22 (TLS handshake, RFC 8446 §5.1) means TLS; anything
/// else is tried as HTTP/1.
pub fn sniff(buf: &[u8]) -> Sniff {
    match buf.first() {
        None => Sniff::NeedMore,
        Some(&tls::HANDSHAKE) => match client_hello_name(buf) {
            Ok(ClientHello::NeedMore) => Sniff::NeedMore,
            Ok(ClientHello::Name(name)) => Sniff::Tls(name),
            Ok(ClientHello::NoName) => Sniff::TlsWithoutName,
            Err(e) => Sniff::Invalid(e),
        },
        Some(_) => http::host(buf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_lower_cased() {
        assert_eq!(
            ServerName::new(b"WWW.Example.com.").unwrap().as_str(),
            "www.example.com"
        );
        for bad in [
            &b""[..],
            b".",
            b"a..b",
            b"a..",
            b".a",
            b"a b",
            b"a/b",
            b"\xc3\xa9.example",
            b"a:443",
        ] {
            assert!(ServerName::new(bad).is_err(), "{bad:?}");
        }
        assert!(ServerName::new(&[b'a'; 253]).is_ok());
        assert!(ServerName::new(&[b'a'; 254]).is_err());
    }

    #[test]
    fn an_empty_stream_needs_more() {
        assert_eq!(sniff(b""), Sniff::NeedMore);
    }
}
