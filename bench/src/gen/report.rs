//! The result of a run: a table for people, JSON with a stable schema for
//! scripts (documented in `docs/GENERATOR.md`; bump [`SCHEMA_VERSION`] on
//! any incompatible change).

use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::receiver::{RxStats, SinkDrops};
use super::sender::{rate, TxStats};
use super::spec::{TrafficSpec, FCS_LEN, WIRE_OVERHEAD};

/// Version of the JSON schema.
pub const SCHEMA_VERSION: u32 = 3;

/// Said in every report of a max-rate run.
pub const SATURATION_NOTE: &str = "latency measured at saturation is queueing delay in \
     the generator, the device and the receiver, not a figure to quote; measure latency \
     at a fraction of the maximum rate (--latency-at)";

/// One frame size of the mix.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SizeShare {
    /// Frame size in bytes, FCS included.
    pub bytes: usize,
    /// Relative weight.
    pub weight: u32,
}

/// Transmit side.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TxReport {
    /// Frames sent in the measured period.
    pub packets: u64,
    /// Frame bytes, FCS included.
    pub bytes: u64,
    /// Bytes on the wire including preamble, SFD and inter-frame gap.
    pub wire_bytes: u64,
    /// Packets per second.
    pub pps: f64,
    /// Gbit/s on the wire (framing overhead included).
    pub wire_gbps: f64,
    /// Warm-up frames (not in the other counters).
    pub warmup_packets: u64,
    /// Frames written but never taken by the kernel.
    pub unsent: u64,
}

/// Receive side.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RxReport {
    /// Probe frames received in the measured period, duplicates included.
    pub packets: u64,
    /// Distinct probe frames (`packets − duplicates`).
    pub unique: u64,
    /// Frame bytes, FCS included.
    pub bytes: u64,
    /// Distinct packets per second over the sender's measured period.
    pub pps: f64,
    /// Gbit/s on the wire (framing overhead included).
    pub wire_gbps: f64,
    /// Warm-up probe frames.
    pub warmup_packets: u64,
    /// Frames without the probe (other traffic).
    pub foreign: u64,
    /// Frames the receiving socket itself dropped during the measurement
    /// (XDP or packet statistics); `null` if the port keeps none.
    pub sink_drops: Option<SinkDrops>,
}

/// One-way latency percentiles and distribution in nanoseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LatencyReport {
    /// Number of samples.
    pub samples: u64,
    /// Smallest.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// The distribution at [`CDF_QUANTILES`], for latency plots.
    pub cdf: Vec<CdfPoint>,
}

/// Quantiles the report samples the latency distribution at: evenly over the
/// body, then ever closer to 1 so the tail, where a dataplane's stalls show,
/// keeps its shape instead of collapsing into the last step.
pub const CDF_QUANTILES: [f64; 26] = [
    0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
    0.85, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
];

/// One point of a latency distribution: `quantile` of the samples took at
/// most `ns` nanoseconds.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct CdfPoint {
    /// In `[0, 1]`.
    pub quantile: f64,
    /// Latency in nanoseconds.
    pub ns: u64,
}

impl LatencyReport {
    /// Summarises `h` (one-way latencies in ns); `None` without samples.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        Some(LatencyReport {
            samples: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            cdf: CDF_QUANTILES
                .iter()
                .map(|&quantile| CdfPoint {
                    quantile,
                    ns: h.value_at_quantile(quantile),
                })
                .collect(),
        })
    }
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    /// JSON schema version.
    pub schema_version: u32,
    /// Sender port kind.
    pub sender: String,
    /// Receiver port kind.
    pub receiver: String,
    /// `udp`, `tcp-syn` or `icmp`.
    pub protocol: String,
    /// 4 or 6.
    pub ip_version: u8,
    /// Frame size mix.
    pub sizes: Vec<SizeShare>,
    /// Number of flows.
    pub flows: u64,
    /// The requested rate as given (`max`, `1000pps`, `500000000bps`).
    pub rate_requested: String,
    /// The requested packet rate, `null` at max rate.
    pub offered_pps: Option<f64>,
    /// Warm-up seconds (excluded).
    pub warmup_s: f64,
    /// Measured period in seconds.
    pub duration_s: f64,
    /// Transmit counters.
    pub tx: TxReport,
    /// Receive counters.
    pub rx: RxReport,
    /// `tx.packets − rx.unique`: frames that did not reach the receiver,
    /// wherever they died (negative would mean probe frames from another
    /// source).
    pub missing: i64,
    /// The part of `missing` the receiving socket dropped itself:
    /// `min(rx.sink_drops.total, missing)`, 0 without sink counters.
    pub lost_at_sink: u64,
    /// `missing − lost_at_sink`: frames the system under test lost.
    pub lost: i64,
    /// `lost / tx.packets` in percent: the loss of the system under test.
    pub loss_percent: f64,
    /// `missing / tx.packets` in percent, the sink's drops included.
    pub loss_percent_raw: f64,
    /// Frames that arrived after a higher sequence number.
    pub reordered: u64,
    /// Frames whose sequence number arrived before.
    pub duplicates: u64,
    /// Frames too old for the reorder window (neither classified).
    pub late: u64,
    /// One-way latency, `null` without samples.
    pub latency_ns: Option<LatencyReport>,
    /// True when the run was at max rate: latency is then queueing delay.
    pub latency_at_saturation: bool,
    /// With `--latency-at`: the receive rate (pps) of the max-rate trial
    /// this run's rate is a fraction of; `null` otherwise.
    pub reference_max_pps: Option<f64>,
    /// Caveats about the figures, `null` if none.
    pub note: Option<String>,
}

/// Splits the frames that did not arrive between the sink and the path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossAccount {
    /// Sent minus received (distinct).
    pub missing: i64,
    /// Of those, dropped by the receiving socket.
    pub lost_at_sink: u64,
    /// Of those, lost before the sink: the system under test's.
    pub lost: i64,
    /// `lost` in percent of the sent frames.
    pub loss_percent: f64,
    /// `missing` in percent of the sent frames.
    pub loss_percent_raw: f64,
}

impl LossAccount {
    /// `sent` frames of which `unique` arrived, with `sink_drops` dropped by
    /// the receiving socket. The sink's drops may include frames that were
    /// not ours (warm-up stragglers, other traffic), so they are charged
    /// to the sink only up to the number actually missing.
    pub fn new(sent: u64, unique: u64, sink_drops: u64) -> Self {
        let missing = sent as i64 - unique as i64;
        let lost_at_sink = sink_drops.min(missing.max(0) as u64);
        let lost = missing - lost_at_sink as i64;
        let percent = |n: i64| {
            if sent > 0 {
                n as f64 * 100.0 / sent as f64
            } else {
                0.0
            }
        };
        LossAccount {
            missing,
            lost_at_sink,
            lost,
            loss_percent: percent(lost),
            loss_percent_raw: percent(missing),
        }
    }
}

fn gbps(wire_bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        wire_bytes as f64 * 8.0 / secs / 1e9
    } else {
        0.0
    }
}

impl Report {
    /// Combines both sides of a run.
    pub fn new(spec: &TrafficSpec, tx: &TxStats, rx: &RxStats) -> Self {
        let secs = tx.elapsed.as_secs_f64();
        let unique = rx.received.saturating_sub(rx.duplicates);
        let rx_bytes = rx.bytes + rx.received * FCS_LEN as u64;
        let rx_wire = rx_bytes + rx.received * WIRE_OVERHEAD as u64;
        let sink_total = rx.sink_drops.as_ref().map_or(0, |d| d.total);
        let loss = LossAccount::new(tx.sent, unique, sink_total);
        let latency_ns = LatencyReport::from_histogram(&rx.latency);
        let saturated = matches!(spec.rate, super::spec::Rate::Max);
        let mut notes = Vec::new();
        if saturated {
            notes.push(SATURATION_NOTE.to_owned());
        }
        if loss.lost_at_sink > 0 {
            notes.push(format!(
                "the receiving socket dropped {} frames itself; they are not counted as the \
                 path's loss (raw loss {:.4} %)",
                loss.lost_at_sink, loss.loss_percent_raw
            ));
        }
        if rx.late > 0 {
            notes.push(format!(
                "{} frames arrived more than {} sequence numbers late and could not be classified",
                rx.late,
                super::receiver::REORDER_WINDOW
            ));
        }
        Report {
            schema_version: SCHEMA_VERSION,
            sender: tx.port.to_owned(),
            receiver: rx.port.to_owned(),
            protocol: spec.protocol.name().to_owned(),
            ip_version: if spec.src_ip.is_ipv6() { 6 } else { 4 },
            sizes: spec
                .sizes
                .entries()
                .iter()
                .map(|&(bytes, weight)| SizeShare { bytes, weight })
                .collect(),
            flows: spec.flows.count(),
            rate_requested: spec.rate.to_string(),
            offered_pps: spec.rate.pps(spec.sizes.mean_size()),
            warmup_s: spec.warmup.as_secs_f64(),
            duration_s: secs,
            tx: TxReport {
                packets: tx.sent,
                bytes: tx.bytes,
                wire_bytes: tx.wire_bytes,
                pps: tx.pps(),
                wire_gbps: gbps(tx.wire_bytes, secs),
                warmup_packets: tx.warmup_sent,
                unsent: tx.unsent,
            },
            rx: RxReport {
                packets: rx.received,
                unique,
                bytes: rx_bytes,
                pps: rate(unique as f64, tx.elapsed),
                wire_gbps: gbps(rx_wire, secs),
                warmup_packets: rx.warmup_received,
                foreign: rx.foreign,
                sink_drops: rx.sink_drops.clone(),
            },
            missing: loss.missing,
            lost_at_sink: loss.lost_at_sink,
            lost: loss.lost,
            loss_percent: loss.loss_percent,
            loss_percent_raw: loss.loss_percent_raw,
            reordered: rx.reordered,
            duplicates: rx.duplicates,
            late: rx.late,
            latency_ns,
            latency_at_saturation: saturated,
            reference_max_pps: None,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        }
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

impl fmt::Display for Report {
    /// The final table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let sizes: Vec<String> = self
            .sizes
            .iter()
            .map(|s| {
                if self.sizes.len() == 1 {
                    s.bytes.to_string()
                } else {
                    format!("{}:{}", s.bytes, s.weight)
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "{} IPv{} {} B, {} flow(s), rate {}, {:.2} s measured ({} -> {})",
            self.protocol,
            self.ip_version,
            sizes.join(","),
            self.flows,
            self.rate_requested,
            self.duration_s,
            self.sender,
            self.receiver
        );
        let _ = writeln!(
            out,
            "{:>12} {:>12} {:>9} {:>10} {:>9} {:>6} {:>11} {:>11} {:>9} {:>9} {:>9} {:>9}",
            "sent",
            "received",
            "loss %",
            "sink drop",
            "reorder",
            "dup",
            "tx pps",
            "rx pps",
            "rx Gb/s",
            "p50 us",
            "p99 us",
            "p99.9 us"
        );
        let (p50, p99, p999, max) = match &self.latency_ns {
            Some(l) => (us(l.p50), us(l.p99), us(l.p999), us(l.max)),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{:>12} {:>12} {:>9.4} {:>10} {:>9} {:>6} {:>11.0} {:>11.0} {:>9.3} {:>9} {:>9} {:>9}",
            self.tx.packets,
            self.rx.unique,
            self.loss_percent,
            self.rx
                .sink_drops
                .as_ref()
                .map_or("-".to_owned(), |d| d.total.to_string()),
            self.reordered,
            self.duplicates,
            self.tx.pps,
            self.rx.pps,
            self.rx.wire_gbps,
            p50,
            p99,
            p999
        );
        let _ = writeln!(
            out,
            "latency max {max} us; loss % excludes the receiving socket's own drops \
             (sink drop; raw loss {:.4} %); Gb/s count Ethernet framing (frame + 20 B \
             preamble/SFD/IFG)",
            self.loss_percent_raw
        );
        if let Some(note) = &self.note {
            let _ = writeln!(out, "note: {note}");
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_drops_are_not_charged_to_the_path() {
        // 1000 sent, 900 arrived, the sink dropped 60: the path lost 40.
        let a = LossAccount::new(1000, 900, 60);
        assert_eq!((a.missing, a.lost_at_sink, a.lost), (100, 60, 40));
        assert!((a.loss_percent - 4.0).abs() < 1e-12);
        assert!((a.loss_percent_raw - 10.0).abs() < 1e-12);
        // More sink drops than missing frames (warm-up stragglers, other
        // traffic): the sink is charged only what is missing.
        let a = LossAccount::new(1000, 990, 500);
        assert_eq!((a.missing, a.lost_at_sink, a.lost), (10, 10, 0));
        assert_eq!(a.loss_percent, 0.0);
        assert!((a.loss_percent_raw - 1.0).abs() < 1e-12);
        // No sink counters: everything is the path's.
        let a = LossAccount::new(1000, 990, 0);
        assert_eq!((a.lost_at_sink, a.lost), (0, 10));
        // Extra probe frames (another source): nothing charged to the sink.
        let a = LossAccount::new(100, 120, 7);
        assert_eq!((a.missing, a.lost_at_sink, a.lost), (-20, 0, -20));
        // Nothing sent: no division by zero.
        let a = LossAccount::new(0, 0, 3);
        assert_eq!((a.loss_percent, a.loss_percent_raw), (0.0, 0.0));
    }

    #[test]
    fn empty_histogram_has_no_latency_report() {
        let h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        assert!(LatencyReport::from_histogram(&h).is_none());
    }

    #[test]
    fn cdf_is_monotone_and_ends_at_max() {
        // A body of 10 000 samples from 1 to 100 us plus a sparse tail up to
        // 5 ms: the shape a dataplane with rare stalls produces.
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for i in 0..10_000u64 {
            h.record(1_000 + i * 10).unwrap();
        }
        for i in 1..=5u64 {
            h.record(i * 1_000_000).unwrap();
        }
        let r = LatencyReport::from_histogram(&h).expect("samples were recorded");
        assert_eq!(r.cdf.len(), CDF_QUANTILES.len());
        for (p, q) in r.cdf.iter().zip(CDF_QUANTILES) {
            assert_eq!(p.quantile, q);
        }
        for w in r.cdf.windows(2) {
            assert!(w[0].quantile < w[1].quantile, "quantiles rise: {w:?}");
            assert!(w[0].ns <= w[1].ns, "latency never falls: {w:?}");
        }
        let first = r.cdf.first().unwrap();
        let last = r.cdf.last().unwrap();
        assert_eq!(first.quantile, 0.0);
        assert_eq!(last.quantile, 1.0);
        assert_eq!(last.ns, r.max, "the CDF ends at the maximum");
        assert!(
            h.equivalent(first.ns, r.min),
            "the CDF starts at the minimum"
        );
        // The tail points resolve the stalls the body points cannot see.
        let at = |q: f64| r.cdf.iter().find(|p| p.quantile == q).unwrap().ns;
        assert!(at(0.99) < 200_000, "p99 is in the body");
        assert!(at(0.9999) > 1_000_000, "p99.99 is in the tail");
        assert_eq!(at(0.5), r.p50);
        assert_eq!(at(0.99), r.p99);
    }

    #[test]
    fn cdf_serialises_as_documented() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000, 3).unwrap();
        h.record(1_500).unwrap();
        let r = LatencyReport::from_histogram(&h).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        let cdf = v["cdf"].as_array().expect("cdf is an array");
        assert_eq!(cdf.len(), CDF_QUANTILES.len());
        assert_eq!(cdf[22]["quantile"], 0.999);
        assert!(h.equivalent(cdf[22]["ns"].as_u64().unwrap(), 1_500));
        assert_eq!(cdf[0].as_object().unwrap().len(), 2);
    }
}
