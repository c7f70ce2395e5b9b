//! The host path: traffic for the dataplane's own addresses that it does not
//! handle itself (SSH to the box, a routing daemon, ...) is handed to the
//! kernel through a TAP device per interface, and what the kernel sends
//! back is transmitted on the interface.
//!
//! The XDP program redirects every frame to AF_XDP, so the kernel never
//! sees the interface's traffic; the TAP carries the interface's MAC and
//! addresses instead, and the kernel answers from it as if it were the
//! wire. This is the slow path: one `read`/`write` per punted frame, polled
//! by the worker only between batches.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use crate::sys;

/// Where `ip` (iproute2) is looked for: by absolute path, never through
/// `PATH`, which a caller of a privileged daemon could point elsewhere.
const IP_PATHS: [&str; 4] = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"];

/// Runs `ip ARGS`, by absolute path.
fn ip(args: &[&str]) -> io::Result<()> {
    let ip = IP_PATHS
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or_else(|| io::Error::other(format!("ip (iproute2) not found in {IP_PATHS:?}")))?;
    let out = Command::new(ip).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Gives the TAP of interface `iface` the addresses of a reloaded
/// configuration (`addr/len`): removes those no longer listed, then makes
/// sure every listed one is there (removing a subnet's primary address
/// also removes its secondaries, so those are put back). Run by the
/// control side, never a worker.
pub fn update_addresses(iface: &str, old: &[String], new: &[String]) -> io::Result<()> {
    let name = tap_name(iface);
    for a in old.iter().filter(|a| !new.contains(a)) {
        ip(&["addr", "del", a, "dev", &name])?;
    }
    for a in new {
        ip(&["addr", "replace", a, "dev", &name])?;
    }
    Ok(())
}

/// A TAP device standing for one dataplane interface in the host stack.
#[derive(Debug)]
pub struct HostTap {
    fd: OwnedFd,
    name: String,
}

/// Name of the TAP device for interface `iface` (at most 15 bytes).
pub fn tap_name(iface: &str) -> String {
    let mut name = format!("st-{iface}");
    name.truncate(15);
    name
}

impl HostTap {
    /// Creates the TAP device, gives it `mac`, `mtu` and `addresses`
    /// (`addr/len`), and brings it up. The device disappears when the last
    /// descriptor closes, so a crashed process leaves nothing behind.
    pub fn open(iface: &str, mac: [u8; 6], mtu: u16, addresses: &[String]) -> io::Result<HostTap> {
        let name = tap_name(iface);
        let fd = sys::open_tap(&name)?;
        let tap = HostTap { fd, name };
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        ip(&[
            "link",
            "set",
            "dev",
            &tap.name,
            "address",
            &mac,
            "mtu",
            &mtu.to_string(),
        ])?;
        for a in addresses {
            ip(&["addr", "add", a, "dev", &tap.name])?;
        }
        ip(&["link", "set", "dev", &tap.name, "up"])?;
        Ok(tap)
    }

    /// Hands one Ethernet frame to the host stack.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        sys::write(self.fd.as_fd(), frame).map(|_| ())
    }

    /// The device's descriptor: readable once the host stack sent a frame.
    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads one frame the host stack sent, if any (never blocks).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match sys::read(self.fd.as_fd(), buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_ifnamsiz() {
        assert_eq!(tap_name("lan"), "st-lan");
        assert_eq!(tap_name("averyverylongname").len(), 15);
    }

    #[test]
    fn tap_round_trip_through_the_kernel() {
        strait_testbed::require_root();
        let mut tb = strait_testbed::Testbed::new("tap");
        let ns = tb.netns("h").unwrap();
        let mac = [2, 0, 0, 0, 0, 0x42];
        let frames = ns
            .enter(|| {
                let tap = HostTap::open("x0", mac, 1500, &["198.51.100.1/24".into()]).unwrap();
                // An ARP request for our address must be answered by the
                // kernel through the TAP.
                let mut req = vec![0xff; 6];
                req.extend_from_slice(&[2, 0, 0, 0, 0, 0x99, 0x08, 0x06]);
                req.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
                req.extend_from_slice(&[2, 0, 0, 0, 0, 0x99, 198, 51, 100, 2]);
                req.extend_from_slice(&[0, 0, 0, 0, 0, 0, 198, 51, 100, 1]);
                tap.send(&req).unwrap();
                let mut buf = [0u8; 2048];
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
                let mut got = vec![];
                while std::time::Instant::now() < deadline {
                    if let Some(n) = tap.recv(&mut buf).unwrap() {
                        got.push(buf[..n].to_vec());
                        if buf[12..14] == [0x08, 0x06] && buf[21] == 2 {
                            break;
                        }
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
                got
            })
            .unwrap();
        let reply = frames
            .iter()
            .find(|f| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[21] == 2)
            .expect("kernel answered ARP through the TAP");
        assert_eq!(&reply[0..6], &[2, 0, 0, 0, 0, 0x99]);
        assert_eq!(&reply[6..12], &mac);
    }
}
