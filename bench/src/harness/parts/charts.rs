//! The charts of a run as SVG files (through [`crate::harness::plot`]):
//! Gbit/s against frame size and latency distributions, for plain
//! forwarding and for the tunnels.

use super::{Bench, Case, SITE};
use crate::harness::plot;

impl Bench {
    /// The charts of the run, as SVG files in `dir`: Gbit/s against frame
    /// size and latency distributions at 1024 B, for plain forwarding and
    /// for the tunnels. A chart without data is skipped; a failure becomes
    /// a note.
    pub(super) fn plots(&mut self, dir: &std::path::Path) {
        let forward = |c: &Case| c.section == "forward";
        let tunnels =
            |c: &Case| (c.section == "esp" && c.system.starts_with(SITE)) || c.section == "peers";
        let mut made = Vec::new();
        let mut failed = Vec::new();
        struct Chart<'a> {
            name: &'a str,
            title: &'a str,
            latency_title: &'a str,
            pick: &'a dyn Fn(&Case) -> bool,
        }
        let charts = [
            Chart {
                name: "forwarding",
                title: "Plain forwarding, one core",
                latency_title: "Plain forwarding: latency at 1024 B, half the NDR",
                pick: &forward,
            },
            Chart {
                name: "site-to-site",
                title: "Site to site, AES-128-GCM (inner frames)",
                latency_title: "Site to site: latency at 1024 B, half the NDR",
                pick: &tunnels,
            },
        ];
        for c in charts {
            let series = self.throughput_series(c.pick);
            if series.iter().any(|s| s.points.len() > 1) {
                let file = dir.join(format!("{}-throughput.svg", c.name));
                let y = "Gbit/s at the maximum rate";
                match plot::throughput_vs_size(&file, c.title, y, &series) {
                    Ok(()) => made.push(file),
                    Err(e) => failed.push(format!("{}: {e:#}", file.display())),
                }
            }
            let cdfs = self.latency_series(c.pick, 1024);
            if !cdfs.is_empty() {
                let file = dir.join(format!("{}-latency-1024.svg", c.name));
                match plot::latency_cdf(&file, c.latency_title, &cdfs) {
                    Ok(()) => made.push(file),
                    Err(e) => failed.push(format!("{}: {e:#}", file.display())),
                }
            }
        }
        for f in &made {
            eprintln!("chart: {}", f.display());
        }
        for f in failed {
            let note = format!("chart not drawn: {f}");
            eprintln!("strait-bench: {note}");
            self.notes.push(note);
        }
    }

    /// One series per system among the picked cases, Strait's first.
    fn throughput_series(&self, pick: &dyn Fn(&Case) -> bool) -> Vec<plot::Series> {
        let mut series: Vec<plot::Series> = Vec::new();
        for c in self.cases.iter().filter(|c| pick(c)) {
            let Some(g) = c.figure.gbps() else { continue };
            let point = plot::Point {
                x: c.size as f64,
                y: g.median,
                lo: g.min,
                hi: g.max,
            };
            match series.iter_mut().find(|s| s.label == c.system) {
                Some(s) => s.points.push(point),
                None => series.push(plot::Series {
                    label: c.system.clone(),
                    points: vec![point],
                }),
            }
        }
        series.sort_by_key(|s| !s.label.starts_with("Strait"));
        series.truncate(plot::PALETTE.len());
        series
    }

    /// The latency distributions of the picked cases at `size`, Strait's
    /// first.
    fn latency_series(&self, pick: &dyn Fn(&Case) -> bool, size: usize) -> Vec<plot::Cdf> {
        let mut cdfs: Vec<plot::Cdf> = self
            .cases
            .iter()
            .filter(|c| pick(c) && c.size == size)
            .filter_map(|c| {
                Some(plot::Cdf {
                    label: c.system.clone(),
                    points: c.figure.latency_cdf.clone()?,
                })
            })
            .collect();
        cdfs.dedup_by(|a, b| a.label == b.label);
        cdfs.sort_by_key(|c| !c.label.starts_with("Strait"));
        cdfs.truncate(plot::PALETTE.len());
        cdfs
    }
}
