//! The `health` target: the load balancer's health-check answer verdicts
//! (`strait_health`). The first byte picks the check: even, an HTTP answer
//! (expected status and body text from the next bytes) fed in growing
//! prefixes the way a socket delivers it; odd, a DNS datagram for a query
//! identifier taken from the next two bytes, and a query built from the
//! rest as a name.
//!
//! Invariants: an HTTP answer is never left undecided at or past
//! `MAX_ANSWER` bytes, nor once the peer closed; a decision made on a
//! prefix is the decision the checker acts on, so it must be made without
//! panicking whatever follows; a DNS query, when one is built, holds the
//! header, the name and the question's type and class.

use strait_health::{dns, http, Verdict};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if pick % 2 == 0 {
        let (status, body, answer) = match rest {
            [a, b, n, tail @ ..] => {
                let n = usize::from(*n % 8).min(tail.len());
                let body = std::str::from_utf8(&tail[..n]).ok();
                (u16::from_be_bytes([*a, *b]) % 600, body, &tail[n..])
            }
            _ => (200, None, rest),
        };
        let step = usize::from(pick / 2).max(1);
        let mut end = 0;
        loop {
            end = (end + step).min(answer.len());
            let v = http::verdict(&answer[..end], false, status, body);
            if v != Verdict::More || end == answer.len() {
                break;
            }
        }
        let closed = http::verdict(answer, true, status, body);
        assert_ne!(closed, Verdict::More, "a closed answer is decided");
        let mut big = answer.to_vec();
        big.resize(http::MAX_ANSWER, b'x');
        assert_ne!(
            http::verdict(&big, false, status, body),
            Verdict::More,
            "an answer at the bound is decided"
        );
    } else {
        let id = match rest {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 0,
        };
        let _ = dns::verdict(rest, id);
        if let Ok(name) = std::str::from_utf8(rest) {
            if let Some(q) = dns::query(id, name) {
                assert!(
                    q.len() >= 17 && q.len() <= 12 + 255 + 4,
                    "{} bytes",
                    q.len()
                );
                assert_eq!(&q[..2], &id.to_be_bytes());
                assert_eq!(&q[q.len() - 4..], &[0, 1, 0, 1]);
            }
        }
    }
}

/// Seeds: a passing answer, a wrong status, a cut status line, huge
/// headers, a body without the text, DNS answers good and bad.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let http_seed = |pick: u8, status: u16, body: &str, answer: &[u8]| {
        let mut v = vec![pick];
        v.extend_from_slice(&status.to_be_bytes());
        v.push(body.len() as u8);
        v.extend_from_slice(body.as_bytes());
        v.extend_from_slice(answer);
        v
    };
    let ok = b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6\r\nContent-Length: 5\r\n\r\nhello";
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    while huge.len() < 17_000 {
        huge.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let mut dns_ok = vec![1, 0x12, 0x34, 0x81, 0x80];
    dns_ok.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
    let mut dns_refused = dns_ok.clone();
    dns_refused[4] = 0x85;
    vec![
        ("http-ok", http_seed(2, 200, "", ok)),
        ("http-ok-body", http_seed(10, 200, "ell", ok)),
        ("http-wrong-status", http_seed(4, 404, "", ok)),
        ("http-cut", http_seed(6, 200, "", b"HTTP/1.1 2")),
        ("http-huge-headers", http_seed(254, 200, "x", &huge)),
        ("http-no-body-text", http_seed(8, 200, "bye", ok)),
        ("dns-ok", dns_ok),
        ("dns-refused", dns_refused),
        ("dns-name", b"\x03example.org".to_vec()),
    ]
}
