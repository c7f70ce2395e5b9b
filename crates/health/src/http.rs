//! HTTP/1.1 GET checks (RFC 9112): the request, and the verdict on the
//! answer read so far.

use crate::Verdict;

/// Status line and headers are judged within this many bytes: more is a
/// failure ("huge headers"), not a reason to keep reading.
pub const MAX_HEAD: usize = 16 * 1024;
/// Whole answers are read up to this many bytes; a body that has not shown
/// the expected text by then fails.
pub const MAX_ANSWER: usize = 64 * 1024;

/// The request: `GET path HTTP/1.1` with `Host` (required by RFC 9112
/// §3.2) and `Connection: close`, so the answer ends with the connection.
pub fn request(path: &str, host: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: strait-health-check\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// Judges `answer` (everything read so far; `closed`: the peer closed the
/// connection after it). Passes when the status line (RFC 9112 §4,
/// `HTTP/1.x NNN reason`) carries `status` and, with `body`, once the body
/// contains that text.
pub fn verdict(answer: &[u8], closed: bool, status: u16, body: Option<&str>) -> Verdict {
    let head_end = find(answer, b"\r\n\r\n").map(|i| i + 4);
    let line_end = find(answer, b"\r\n");
    let Some(line_end) = line_end else {
        if answer.len() >= MAX_HEAD {
            return Verdict::Fail("status line too long".into());
        }
        return more_or(closed, "closed before a status line");
    };
    if line_end > MAX_HEAD {
        return Verdict::Fail("status line too long".into());
    }
    let got = match status_code(&answer[..line_end]) {
        Ok(code) => code,
        Err(e) => return Verdict::Fail(e),
    };
    if got != status {
        return Verdict::Fail(format!("status {got}, expected {status}"));
    }
    let Some(head_end) = head_end else {
        return more_or(
            answer.len() >= MAX_HEAD || closed,
            "headers too long or cut",
        );
    };
    if head_end > MAX_HEAD {
        return Verdict::Fail("headers too long".into());
    }
    let Some(want) = body else {
        return Verdict::Pass;
    };
    let seen = &answer[head_end..answer.len().min(MAX_ANSWER)];
    if want.is_empty() || find(seen, want.as_bytes()).is_some() {
        return Verdict::Pass;
    }
    if closed || answer.len() >= MAX_ANSWER {
        return Verdict::Fail(format!("body does not contain {want:?}"));
    }
    Verdict::More
}

fn more_or(fail: bool, reason: &str) -> Verdict {
    if fail {
        Verdict::Fail(reason.into())
    } else {
        Verdict::More
    }
}

fn status_code(line: &[u8]) -> Result<u16, String> {
    let rest = line
        .strip_prefix(b"HTTP/1.")
        .ok_or_else(|| "not an HTTP/1.x status line".to_owned())?;
    // One minor-version digit, a space, three digits (RFC 9112 §4).
    match rest {
        [minor, b' ', a, b, c, ..]
            if minor.is_ascii_digit()
                && a.is_ascii_digit()
                && b.is_ascii_digit()
                && c.is_ascii_digit()
                && rest.get(5).is_none_or(|&x| x == b' ') =>
        {
            Ok(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => Err("malformed status line".into()),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OK: &[u8] =
        b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn passes_on_the_expected_status_and_body() {
        assert_eq!(verdict(OK, false, 200, None), Verdict::Pass);
        assert_eq!(verdict(OK, true, 200, Some("ell")), Verdict::Pass);
        assert_eq!(
            verdict(OK, false, 404, None),
            Verdict::Fail("status 200, expected 404".into())
        );
        assert!(matches!(
            verdict(OK, true, 200, Some("bye")),
            Verdict::Fail(_)
        ));
        assert_eq!(verdict(&OK[..40], false, 200, Some("hello")), Verdict::More);
    }

    #[test]
    fn waits_for_a_status_line_and_fails_a_cut_one() {
        assert_eq!(verdict(b"HTTP/1.1 2", false, 200, None), Verdict::More);
        assert!(matches!(
            verdict(b"HTTP/1.1 2", true, 200, None),
            Verdict::Fail(_)
        ));
        assert!(matches!(
            verdict(b"SSH-2.0-x\r\n", false, 200, None),
            Verdict::Fail(_)
        ));
        assert!(matches!(
            verdict(b"HTTP/1.1 2000 x\r\n", false, 200, None),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn huge_headers_fail_at_the_bound() {
        let mut a = b"HTTP/1.1 200 OK\r\n".to_vec();
        while a.len() < MAX_HEAD {
            a.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert!(matches!(
            verdict(&a, false, 200, Some("x")),
            Verdict::Fail(_)
        ));
        let long_line = vec![b'H'; MAX_HEAD + 10];
        assert!(matches!(
            verdict(&long_line, false, 200, None),
            Verdict::Fail(_)
        ));
    }

    proptest! {
        #[test]
        fn never_more_past_the_bound(data in proptest::collection::vec(any::<u8>(), 0..2048), pad in 0usize..3) {
            let mut a = data.clone();
            a.resize(MAX_ANSWER + pad, b'a');
            prop_assert_ne!(verdict(&a, false, 200, Some("needle-not-there")), Verdict::More);
            let _ = verdict(&data, false, 200, None);
        }
    }
}
