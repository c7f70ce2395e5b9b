//! The ClientHello's `server_name`, read in place across TLS records.
//!
//! RFC 8446 §5.1: a record is `type(1) legacy_record_version(2)
//! length(2) fragment`; the length MUST NOT exceed 2^14; handshake
//! messages may be split over several records, which MUST NOT be
//! interleaved with records of another type, and zero-length handshake
//! fragments MUST NOT be sent. RFC 8446 §4.1.2 gives the ClientHello (the
//! same layout as TLS 1.2's, RFC 5246 §7.4.1.2, whose extensions may be
//! absent); RFC 6066 §3 the `server_name` extension.

use crate::{HeadError, ServerName, MAX_HEAD, MAX_NAME};

/// ContentType handshake (RFC 8446 §5.1).
pub(crate) const HANDSHAKE: u8 = 22;
/// HandshakeType client_hello (RFC 8446 §4).
const CLIENT_HELLO: u8 = 1;
/// ExtensionType server_name (RFC 8446 §4.2, RFC 6066 §3).
const SERVER_NAME: u16 = 0;
/// NameType host_name (RFC 6066 §3).
const HOST_NAME: u8 = 0;
const RECORD_HEADER: usize = 5;
/// RFC 8446 §5.1: "The length MUST NOT exceed 2^14 bytes."
const MAX_FRAGMENT: usize = 1 << 14;

/// What a complete ClientHello names.
// The name is held inline (no allocation); one answer per connection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientHello {
    /// Not complete yet.
    NeedMore,
    /// Its `host_name`.
    Name(ServerName),
    /// It has no `server_name` extension (or no host_name in it).
    NoName,
}

/// Why reading stopped.
enum Stop {
    /// The buffer ends first.
    More,
    /// The bytes are wrong.
    Bad(HeadError),
}

impl From<HeadError> for Stop {
    fn from(e: HeadError) -> Stop {
        Stop::Bad(e)
    }
}

fn bad(reason: &'static str) -> Stop {
    Stop::Bad(HeadError::Tls(reason))
}

/// The handshake stream carried by consecutive handshake records of
/// `buf`, read without copying: `pos` is the next byte in `buf`,
/// `record_end` where the current record's fragment ends (possibly past
/// the end of `buf`), `consumed` how many handshake bytes were read.
struct Fragments<'a> {
    buf: &'a [u8],
    pos: usize,
    record_end: usize,
    consumed: usize,
}

impl<'a> Fragments<'a> {
    fn new(buf: &'a [u8]) -> Fragments<'a> {
        Fragments {
            buf,
            pos: 0,
            record_end: 0,
            consumed: 0,
        }
    }

    /// Moves to the next record when the current one is used up.
    fn ensure(&mut self) -> Result<(), Stop> {
        if self.pos < self.record_end {
            return if self.pos < self.buf.len() {
                Ok(())
            } else {
                Err(Stop::More)
            };
        }
        let at = self.record_end;
        let Some(header) = self.buf.get(at..at + RECORD_HEADER) else {
            return Err(Stop::More);
        };
        if header[0] != HANDSHAKE {
            return Err(bad("a record of another type inside the ClientHello"));
        }
        if header[1] != 3 {
            return Err(bad("record version is not 3.x"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 {
            return Err(bad("an empty handshake record"));
        }
        if len > MAX_FRAGMENT {
            return Err(bad("a record longer than 2^14 bytes"));
        }
        self.pos = at + RECORD_HEADER;
        self.record_end = self.pos + len;
        if self.record_end > MAX_HEAD {
            return Err(Stop::Bad(HeadError::TooLong));
        }
        if self.pos < self.buf.len() {
            Ok(())
        } else {
            Err(Stop::More)
        }
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        self.ensure()?;
        let b = self.buf[self.pos];
        self.pos += 1;
        self.consumed += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, Stop> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn u24(&mut self) -> Result<usize, Stop> {
        let [a, b, c] = [self.u8()?, self.u8()?, self.u8()?];
        Ok(usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c))
    }

    fn skip(&mut self, mut n: usize) -> Result<(), Stop> {
        while n > 0 {
            self.ensure()?;
            let here = n
                .min(self.record_end - self.pos)
                .min(self.buf.len() - self.pos);
            self.pos += here;
            self.consumed += here;
            n -= here;
        }
        Ok(())
    }
}

/// Reads the ClientHello at the start of `buf` (TLS records, the first
/// of which starts at byte 0) and returns the host name it asks for.
/// Answers [`ClientHello::NeedMore`] until the whole handshake message
/// is in `buf`, so a name is only returned from a ClientHello that parses
/// to its end.
pub fn client_hello_name(buf: &[u8]) -> Result<ClientHello, HeadError> {
    match read(&mut Fragments::new(buf)) {
        Ok(Some(name)) => Ok(ClientHello::Name(name)),
        Ok(None) => Ok(ClientHello::NoName),
        Err(Stop::More) if buf.len() >= MAX_HEAD => Err(HeadError::TooLong),
        Err(Stop::More) => Ok(ClientHello::NeedMore),
        Err(Stop::Bad(e)) => Err(e),
    }
}

fn read(f: &mut Fragments<'_>) -> Result<Option<ServerName>, Stop> {
    if f.u8()? != CLIENT_HELLO {
        return Err(bad("the first handshake message is not a ClientHello"));
    }
    let len = f.u24()?;
    if len > MAX_HEAD {
        return Err(Stop::Bad(HeadError::TooLong));
    }
    let end = f.consumed + len;
    // Every vector must lie inside the message.
    let within = |f: &Fragments<'_>, n: usize| {
        if f.consumed + n <= end {
            Ok(())
        } else {
            Err(bad("a field runs past the end of the ClientHello"))
        }
    };
    // legacy_version, random.
    within(f, 34)?;
    f.skip(34)?;
    let session_id = usize::from(f.u8()?);
    if session_id > 32 {
        return Err(bad("legacy_session_id longer than 32 bytes"));
    }
    within(f, session_id)?;
    f.skip(session_id)?;
    within(f, 2)?;
    let suites = usize::from(f.u16()?);
    if suites < 2 || suites % 2 != 0 {
        return Err(bad("cipher_suites is empty or of odd length"));
    }
    within(f, suites)?;
    f.skip(suites)?;
    within(f, 1)?;
    let compression = usize::from(f.u8()?);
    if compression == 0 {
        return Err(bad("legacy_compression_methods is empty"));
    }
    within(f, compression)?;
    f.skip(compression)?;
    if f.consumed == end {
        // A TLS 1.2 ClientHello may have no extensions (RFC 5246 §7.4.1.2).
        return Ok(None);
    }
    within(f, 2)?;
    let extensions = usize::from(f.u16()?);
    if f.consumed + extensions != end {
        return Err(bad("the extensions do not fill the ClientHello"));
    }
    let mut name = None;
    let mut seen_server_name = false;
    while f.consumed < end {
        within(f, 4)?;
        let kind = f.u16()?;
        let len = usize::from(f.u16()?);
        within(f, len)?;
        if kind != SERVER_NAME {
            f.skip(len)?;
            continue;
        }
        // RFC 8446 §4.2: at most one extension of each type.
        if seen_server_name {
            return Err(bad("two server_name extensions"));
        }
        seen_server_name = true;
        name = server_name_list(f, len)?;
    }
    Ok(name)
}

/// RFC 6066 §3: `ServerName server_name_list<1..2^16-1>`, each entry a
/// NameType and a `HostName<1..2^16-1>`; at most one name of each type.
fn server_name_list(f: &mut Fragments<'_>, len: usize) -> Result<Option<ServerName>, Stop> {
    // RFC 6066 §3: a server's own (empty) server_name reply; a client's
    // list has at least one entry.
    if len < 2 {
        return Err(bad("server_name extension without a list"));
    }
    let list = usize::from(f.u16()?);
    if list + 2 != len || list == 0 {
        return Err(bad("server_name list length does not match its extension"));
    }
    let end = f.consumed + list;
    let mut found = None;
    while f.consumed < end {
        if f.consumed + 3 > end {
            return Err(bad("a server_name entry runs past its list"));
        }
        let kind = f.u8()?;
        let n = usize::from(f.u16()?);
        if n == 0 || f.consumed + n > end {
            return Err(bad("a server_name entry is empty or runs past its list"));
        }
        if kind != HOST_NAME {
            f.skip(n)?;
            continue;
        }
        if found.is_some() {
            return Err(bad("two host_name entries"));
        }
        if n > MAX_NAME + 1 {
            return Err(Stop::Bad(HeadError::BadName("longer than 253 characters")));
        }
        let mut raw = [0u8; MAX_NAME + 1];
        for b in &mut raw[..n] {
            *b = f.u8()?;
        }
        found = Some(ServerName::new(&raw[..n])?);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{client_hello, records};

    fn name(buf: &[u8]) -> Result<ClientHello, HeadError> {
        client_hello_name(buf)
    }

    #[test]
    fn one_record() {
        let hello = client_hello(Some(b"Api.Example.com"), 200);
        let buf = records(&hello, &[usize::MAX]);
        match name(&buf).unwrap() {
            ClientHello::Name(n) => assert_eq!(n.as_str(), "api.example.com"),
            other => panic!("{other:?}"),
        }
        for cut in 0..buf.len() {
            assert_eq!(name(&buf[..cut]), Ok(ClientHello::NeedMore), "cut at {cut}");
        }
    }

    #[test]
    fn many_records_and_a_name_split_between_them() {
        let hello = client_hello(Some(b"split.example"), 3000);
        // Cut inside the name's bytes, then in 1-byte and 7-byte records.
        let at = hello.windows(5).position(|w| w == b"split").unwrap() + 2;
        let buf = records(&hello, &[at, 1, 1, 7, 500, usize::MAX]);
        assert!(buf.len() > hello.len() + 5 * 5);
        match name(&buf).unwrap() {
            ClientHello::Name(n) => assert_eq!(n.as_str(), "split.example"),
            other => panic!("{other:?}"),
        }
        // With bytes of the next record following, the answer is the same.
        let mut more = buf.clone();
        more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert!(matches!(name(&more), Ok(ClientHello::Name(_))));
    }

    #[test]
    fn without_a_name_or_extensions() {
        let hello = client_hello(None, 10);
        assert_eq!(
            name(&records(&hello, &[usize::MAX])),
            Ok(ClientHello::NoName)
        );
        // TLS 1.2 without extensions at all: drop them and fix the length.
        // header, version, random, session id, suites, compression.
        let mut bare = hello[..4 + 2 + 32 + 1 + 32 + 8 + 2].to_vec();
        let n = bare.len() - 4;
        bare[1..4].copy_from_slice(&(n as u32).to_be_bytes()[1..]);
        assert_eq!(
            name(&records(&bare, &[usize::MAX])),
            Ok(ClientHello::NoName)
        );
    }

    #[test]
    fn refusals() {
        let hello = client_hello(Some(b"a.example"), 0);
        let good = records(&hello, &[usize::MAX]);
        let mut other_type = records(&hello, &[10, usize::MAX]);
        other_type[5 + 10] = 21;
        assert!(matches!(name(&other_type), Err(HeadError::Tls(_))));
        let mut server_hello = good.clone();
        server_hello[5] = 2;
        assert!(matches!(name(&server_hello), Err(HeadError::Tls(_))));
        let mut long = good.clone();
        long[3..5].copy_from_slice(&0x4001u16.to_be_bytes());
        assert!(matches!(name(&long), Err(HeadError::Tls(_))));
        let mut empty = good.clone();
        empty[3..5].copy_from_slice(&[0, 0]);
        assert!(matches!(name(&empty), Err(HeadError::Tls(_))));
        // A handshake length past the cap.
        let mut huge = good.clone();
        huge[6..9].copy_from_slice(&[0x01, 0, 0]);
        assert_eq!(name(&huge), Err(HeadError::TooLong));
        let bad_name = client_hello(Some(b"a b"), 0);
        assert!(matches!(
            name(&records(&bad_name, &[usize::MAX])),
            Err(HeadError::BadName(_))
        ));
        // Stuck waiting at the cap: too long.
        let big = client_hello(Some(b"a.example"), 20_000);
        let buf = records(&big, &[usize::MAX]);
        assert_eq!(name(&buf[..MAX_HEAD]), Err(HeadError::TooLong));
    }
}
