//! iperf3 through a path of the bed: one TCP stream, or UDP at an
//! unlimited send rate, against a one-shot server, each run reporting what
//! the receiving end counted.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use strait_testbed::Netns;

/// UDP payload that makes 1024-byte frames (FCS included): 1024 − 4 − 14
/// − 20 − 8.
pub const UDP_PAYLOAD: &str = "978";

/// Runs one iperf3 client against a one-shot server in `server` and
/// returns the client's JSON report.
fn run(
    client: &Netns,
    server: &Netns,
    server_ip: &str,
    secs: u64,
    extra: &[&str],
) -> Result<serde_json::Value> {
    let mut srv = server
        .command(&["iperf3", "-s", "-1", "-B", server_ip, "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(300));
    let limit = (secs + 10).to_string();
    let secs = secs.to_string();
    let mut argv = vec![
        "timeout", &limit, "iperf3", "-c", server_ip, "-p", "5201", "-t", &secs, "-J",
    ];
    argv.extend_from_slice(extra);
    let out = client.command(&argv).output();
    let _ = srv.kill();
    let _ = srv.wait();
    let out = out.context("running iperf3 -c")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 output: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    Ok(v)
}

/// Gbit/s received and retransmits from a TCP report.
pub fn tcp_result(report: &serde_json::Value) -> Result<(f64, u64)> {
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no sum_received")?;
    let retr = report["end"]["sum_sent"]["retransmits"]
        .as_u64()
        .unwrap_or(0);
    Ok((bps / 1e9, retr))
}

/// Payload Gbit/s received and the loss in percent (NaN when iperf3 gave
/// none) from a UDP report.
pub fn udp_result(report: &serde_json::Value) -> Result<(f64, f64)> {
    let rx = &report["end"]["sum_received"];
    let bps = rx["bits_per_second"]
        .as_f64()
        .context("iperf3: no sum_received")?;
    let loss = rx["lost_percent"].as_f64().unwrap_or(f64::NAN);
    Ok((bps / 1e9, loss))
}

/// One iperf3 TCP run; Gbit/s received and retransmits.
pub fn tcp(client: &Netns, server: &Netns, server_ip: &str, secs: u64) -> Result<(f64, u64)> {
    tcp_result(&run(client, server, server_ip, secs, &[])?)
}

/// One iperf3 UDP run at an unlimited send rate; payload Gbit/s received
/// and the loss in percent, as the receiving end counted them.
pub fn udp(client: &Netns, server: &Netns, server_ip: &str, secs: u64) -> Result<(f64, f64)> {
    udp_result(&run(
        client,
        server,
        server_ip,
        secs,
        &["-u", "-b", "0", "-l", UDP_PAYLOAD],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_payload_makes_1024_byte_frames() {
        let payload: usize = UDP_PAYLOAD.parse().unwrap();
        assert_eq!(payload + 8 + 20 + 14 + 4, 1024);
    }

    #[test]
    fn tcp_reads_the_receiver_rate_and_the_sender_retransmits() {
        let v = serde_json::json!({"end": {
            "sum_received": {"bits_per_second": 2.5e9},
            "sum_sent": {"bits_per_second": 2.6e9, "retransmits": 17},
        }});
        assert_eq!(tcp_result(&v).unwrap(), (2.5, 17));
        let no_retr = serde_json::json!({"end": {"sum_received": {"bits_per_second": 1e9}}});
        assert_eq!(tcp_result(&no_retr).unwrap(), (1.0, 0));
        assert!(tcp_result(&serde_json::json!({"end": {}})).is_err());
    }

    #[test]
    fn udp_reads_what_the_receiver_counted() {
        let v = serde_json::json!({"end": {"sum_received": {
            "bits_per_second": 5e8, "lost_percent": 1.5,
        }}});
        assert_eq!(udp_result(&v).unwrap(), (0.5, 1.5));
        let no_loss = serde_json::json!({"end": {"sum_received": {"bits_per_second": 5e8}}});
        assert!(udp_result(&no_loss).unwrap().1.is_nan());
    }
}
