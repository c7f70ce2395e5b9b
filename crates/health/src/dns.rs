//! DNS checks over UDP (RFC 1035): a query for an A record, and whether
//! the answer is a response to it with RCODE NOERROR.

use crate::Verdict;

/// Builds a standard query (RFC 1035 §4.1.1: QR=0, OPCODE=0, RD=1) with
/// identifier `id` for `name` (type A, class IN). `None` when a label is
/// empty or longer than 63 bytes, or the name longer than 253.
pub fn query(id: u16, name: &str) -> Option<Vec<u8>> {
    let name = name.trim_end_matches('.');
    if name.len() > 253 {
        return None;
    }
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
    }
    q.push(0);
    q.extend_from_slice(&[0, 1, 0, 1]);
    Some(q)
}

/// Judges a datagram received for the query `id`: a response (QR=1) with
/// the same identifier passes when its RCODE is 0 (RFC 1035 §4.1.1).
/// Anything else addressed to the check is ignored (`More`), so a stray
/// or spoofed datagram cannot fail or pass it; the deadline decides.
pub fn verdict(answer: &[u8], id: u16) -> Verdict {
    if answer.len() < 12 || answer[..2] != id.to_be_bytes() || answer[2] & 0x80 == 0 {
        return Verdict::More;
    }
    match answer[3] & 0x0f {
        0 => Verdict::Pass,
        rcode => Verdict::Fail(format!("rcode {rcode}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_queries_and_judges_answers() {
        let q = query(0x1234, "example.org.").unwrap();
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..], b"\x07example\x03org\x00\x00\x01\x00\x01");
        assert_eq!(&query(1, ".").unwrap()[12..], b"\x00\x00\x01\x00\x01");
        assert!(query(1, "a..b").is_none());
        let mut a = q.clone();
        a[2] |= 0x80;
        assert_eq!(verdict(&a, 0x1234), Verdict::Pass);
        assert_eq!(verdict(&a, 0x1235), Verdict::More);
        a[3] |= 2;
        assert_eq!(verdict(&a, 0x1234), Verdict::Fail("rcode 2".into()));
        assert_eq!(verdict(&q, 0x1234), Verdict::More);
        assert_eq!(verdict(&[0x12], 0x1234), Verdict::More);
    }
}
