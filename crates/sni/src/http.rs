//! The server an HTTP/1 request head names (RFC 9112 §3.2), parsed with
//! `httparse` into a fixed array of headers on the stack.

use crate::{HeadError, ServerName, Sniff, MAX_HEAD};

/// Headers looked at; a head with more is refused.
const MAX_HEADERS: usize = 64;

pub(crate) fn host(buf: &[u8]) -> Sniff {
    let buf = &buf[..buf.len().min(MAX_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            Sniff::Invalid(HeadError::TooLong)
        }
        Ok(httparse::Status::Partial) => Sniff::NeedMore,
        Ok(httparse::Status::Complete(_)) => match name(&request) {
            Ok(Some(n)) => Sniff::Http(n),
            Ok(None) => Sniff::HttpWithoutName,
            Err(e) => Sniff::Invalid(e),
        },
        Err(httparse::Error::TooManyHeaders) => {
            Sniff::Invalid(HeadError::Http("more than 64 header fields"))
        }
        Err(_) if !looks_like_request_line(buf) => Sniff::Invalid(HeadError::Unrecognised),
        Err(e) => Sniff::Invalid(HeadError::Http(reason(e))),
    }
}

/// A method token then a space: what an HTTP/1 request starts with.
fn looks_like_request_line(buf: &[u8]) -> bool {
    let token = buf.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    token > 0 && buf.get(token) == Some(&b' ')
}

fn reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// RFC 9112 §3.2.2: an absolute-form target's authority wins over Host;
/// §3.2: more than one Host field is an error.
fn name(request: &httparse::Request<'_, '_>) -> Result<Option<ServerName>, HeadError> {
    if let Some(authority) = request.path.and_then(absolute_authority) {
        return host_of(authority.as_bytes()).map(Some);
    }
    let mut hosts = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let Some(first) = hosts.next() else {
        return Ok(None);
    };
    if hosts.next().is_some() {
        return Err(HeadError::Http("more than one Host field"));
    }
    host_of(first.value.trim_ascii()).map(Some)
}

fn absolute_authority(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `host [ ":" port ]` (RFC 9110 §7.2); IP literals are not names.
fn host_of(value: &[u8]) -> Result<ServerName, HeadError> {
    if value.contains(&b'@') {
        return Err(HeadError::BadName("user information in the authority"));
    }
    let host = match value.iter().rposition(|b| *b == b':') {
        Some(i) if value[i + 1..].iter().all(u8::is_ascii_digit) => &value[..i],
        _ => value,
    };
    ServerName::new(host)
}

#[cfg(test)]
mod tests {
    use crate::{sniff, HeadError, Sniff};

    fn http(head: &[u8]) -> String {
        match sniff(head) {
            Sniff::Http(n) => n.as_str().to_owned(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn host_header_and_absolute_form() {
        assert_eq!(
            http(b"GET / HTTP/1.1\r\nhost: A.example\r\n\r\n"),
            "a.example"
        );
        assert_eq!(
            http(b"GET / HTTP/1.1\r\nHost: a.example:80\r\n\r\n"),
            "a.example"
        );
        assert_eq!(
            http(b"GET http://b.example:8080/x HTTP/1.1\r\nHost: a.example\r\n\r\n"),
            "b.example"
        );
        assert_eq!(sniff(b"GET / HTTP/1.0\r\n\r\n"), Sniff::HttpWithoutName);
    }

    #[test]
    fn partial_and_refused_heads() {
        let head = b"POST /x HTTP/1.1\r\nHost: a.example\r\nX: y\r\n\r\n";
        for cut in 1..head.len() {
            assert_eq!(sniff(&head[..cut]), Sniff::NeedMore, "cut at {cut}");
        }
        assert!(matches!(
            sniff(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Sniff::Invalid(HeadError::Http(_))
        ));
        assert!(matches!(
            sniff(b"GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n"),
            Sniff::Invalid(HeadError::BadName(_))
        ));
        assert_eq!(
            sniff(b"SSH-2.0-OpenSSH_9.2\r\n"),
            Sniff::Invalid(HeadError::Unrecognised)
        );
        assert_eq!(
            sniff(b"\x00\x01\x02"),
            Sniff::Invalid(HeadError::Unrecognised)
        );
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..70 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(sniff(&many), Sniff::Invalid(HeadError::Http(_))));
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(crate::MAX_HEAD + 10, b'a');
        assert_eq!(sniff(&long), Sniff::Invalid(HeadError::TooLong));
    }
}
