//! Destination MAC from the kernel's neighbour table.
//!
//! The generator writes whole Ethernet frames, so it needs the next hop's
//! MAC. Given `--dst-mac auto`, it sends one ICMP echo to the next hop
//! through the kernel (`ping -c 1 -W 1 -I <iface> <addr>`), which makes the
//! kernel resolve it (ARP, or neighbour discovery for IPv6), and then reads
//! the entry with `ip neigh show to <addr> dev <iface>`. Whether the ping
//! is answered does not matter, only the neighbour entry.

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strait_wire::EthernetAddress;

use super::error::{GenError, Result};
use crate::sys::parse_mac;

/// Resolves `addr` on `iface` to a MAC, waiting up to 3 s.
pub fn resolve_neighbour(iface: &str, addr: IpAddr) -> Result<EthernetAddress> {
    let fail = |reason: String| GenError::Neighbour {
        addr: addr.to_string(),
        iface: iface.to_owned(),
        reason,
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut pinged = false;
    loop {
        let out = Command::new("ip")
            .args(["neigh", "show", "to", &addr.to_string(), "dev", iface])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| fail(format!("cannot run `ip neigh`: {e}")))?;
        if let Some(mac) = parse_neigh(&String::from_utf8_lossy(&out.stdout)) {
            return Ok(EthernetAddress(mac));
        }
        if Instant::now() >= deadline {
            return Err(fail(
                "no reachable neighbour entry after a ping; give --dst-mac explicitly".into(),
            ));
        }
        if !pinged {
            pinged = true;
            // The exit status is irrelevant: only the resolution it triggers.
            let _ = Command::new("ping")
                .args(["-c", "1", "-W", "1", "-I", iface, &addr.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The `lladdr` of the first usable line of `ip neigh show` output
/// (FAILED and INCOMPLETE entries have none).
fn parse_neigh(text: &str) -> Option<[u8; 6]> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        parse_mac(words.next()?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reachable_and_skips_failed_entries() {
        let text = "10.0.0.2  FAILED\n10.0.0.2 lladdr 02:aa:bb:cc:dd:ee REACHABLE\n";
        assert_eq!(parse_neigh(text), Some([2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]));
        assert_eq!(parse_neigh("10.0.0.2 INCOMPLETE\n"), None);
        assert_eq!(parse_neigh(""), None);
    }
}
