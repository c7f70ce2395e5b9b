//! SVG charts for `docs/BENCHMARKS.md`: throughput against frame size and
//! latency distributions.
//!
//! Pure functions over plain data, so any figure the harness or a script has
//! can be drawn. Text is written as SVG `<text>` and laid out by the viewer,
//! so rendering needs no font on the machine that draws the chart.
//!
//! Series take colours from [`PALETTE`] in the order given: pass Strait's
//! series first so Strait has the same colour on every chart.

use std::fmt::Display;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::gen::CdfPoint;

/// One measured point: the median `y` of repeated trials at `x`, and the
/// range `lo..=hi` the trials spanned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Position on the x axis (a frame size in bytes).
    pub x: f64,
    /// Median.
    pub y: f64,
    /// Smallest trial.
    pub lo: f64,
    /// Largest trial.
    pub hi: f64,
}

/// One system's line on a throughput chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Points in any order (drawn sorted by `x`).
    pub points: Vec<Point>,
}

/// One system's latency distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct Cdf {
    /// Legend text.
    pub label: String,
    /// Points by rising quantile, as the generator reports them.
    pub points: Vec<CdfPoint>,
}

/// Series colours in order; the first is Strait's. Chosen to stay apart
/// from each other for the common kinds of colour blindness.
pub const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // blue: Strait
    RGBColor(213, 94, 0),    // vermilion
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(120, 120, 120), // grey
    RGBColor(0, 0, 0),       // black
];

/// Chart size in pixels: wide enough for a legend beside the lines and
/// readable at the width of a rendered Markdown page.
const SIZE: (u32, u32) = (900, 540);
const FONT: &str = "sans-serif";

/// Draws throughput (or any rate) against frame size: one coloured line
/// per series through the medians, a marker and a vertical bar over the
/// range of the trials at each point, a legend and axis labels. The x axis
/// is logarithmic in base 2, because frame sizes are usually powers of two
/// (64 … 1024) plus 1518, and a linear axis would crowd the small ones.
pub fn throughput_vs_size(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
) -> Result<()> {
    check_series_count(series.len(), "throughput chart")?;
    for s in series {
        check_label(&s.label)?;
        if s.points.is_empty() {
            bail!("series {:?} has no points", s.label);
        }
        for p in &s.points {
            check_point(&s.label, p)?;
        }
    }
    let (x_min, x_max) = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.x)));
    let (_, y_max) = bounds(series.iter().flat_map(|s| s.points.iter().map(|p| p.hi)));
    // Room around the extremes so markers and range bars are not cut by the
    // frame; an all-zero chart still needs a non-empty axis.
    let x_range = (x_min / 1.25)..(x_max * 1.25);
    let y_range = 0.0..if y_max > 0.0 { y_max * 1.12 } else { 1.0 };

    let root = open(path)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.log_scale().base(2.0), y_range)
        .map_err(drawing(path))?;
    chart
        .configure_mesh()
        .x_desc("frame size (bytes)")
        .y_desc(y_label)
        // Few enough labels that the log axis marks only powers of two.
        .x_labels(8)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| tick(*v))
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 14))
        .draw()
        .map_err(drawing(path))?;

    for (s, &colour) in series.iter().zip(PALETTE.iter()) {
        let mut points = s.points.clone();
        points.sort_by(|a, b| a.x.total_cmp(&b.x));
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.x, p.y)),
                colour.stroke_width(2),
            ))
            .map_err(drawing(path))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)));
        // The bar says how far apart the trials were: on a shared host a
        // difference smaller than the bars is noise.
        chart
            .draw_series(points.iter().map(|p| {
                ErrorBar::new_vertical(p.x, p.lo, p.y, p.hi, colour.filled().stroke_width(2), 10)
            }))
            .map_err(drawing(path))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft, path)?;
    finish(&root, path)
}

/// Draws latency distributions the way dataplane latency is usually shown:
/// x is latency in µs on a log axis, y is the percentile on an inverse-log
/// axis (0, 90, 99, 99.9, 99.99, max), so each "nine" gets the same height
/// and the tail, where stalls show, is as readable as the median.
pub fn latency_cdf(path: &Path, title: &str, series: &[Cdf]) -> Result<()> {
    check_series_count(series.len(), "latency chart")?;
    for s in series {
        check_label(&s.label)?;
        check_cdf(s)?;
    }
    // The top of the y axis holds quantile 1 (the maximum), which has
    // infinitely many nines: put it one step above the highest finite one.
    let finite_nines = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.quantile < 1.0)
        .map(|p| nines(p.quantile))
        .fold(0.0_f64, f64::max);
    // 1 - 0.9999 is not exactly 1e-4 in binary: a little slack keeps four
    // nines at four.
    let top = ((finite_nines - 1e-6).ceil() + 1.0).max(4.0);
    let to_y = |q: f64| {
        if q >= 1.0 {
            top
        } else {
            nines(q).min(top)
        }
    };

    let us = |ns: u64| ns as f64 / 1000.0;
    let all_ns = || series.iter().flat_map(|s| s.points.iter().map(|p| p.ns));
    let max_ns = all_ns().max().unwrap_or(0);
    let Some(min_pos_ns) = all_ns().filter(|&ns| ns > 0).min() else {
        bail!("every latency is 0 ns: nothing to draw on a log axis");
    };
    let x_lo = us(min_pos_ns) / 1.5;
    let x_range = x_lo..(us(max_ns) * 1.5).max(x_lo * 2.0);

    let root = open(path)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.log_scale(), 0.0..top)
        .map_err(drawing(path))?;
    chart
        .configure_mesh()
        .x_desc("latency (µs)")
        .y_desc("percentile")
        .x_labels(12)
        .x_label_formatter(&|v| tick(*v))
        // One label per nine.
        .y_labels(top as usize + 1)
        .y_label_formatter(&|n| percentile_label(*n, top))
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 14))
        .draw()
        .map_err(drawing(path))?;

    for (s, &colour) in series.iter().zip(PALETTE.iter()) {
        // A 0 ns sample cannot sit on a log axis: pin it to the left edge.
        let xy: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|p| (us(p.ns).max(x_lo), to_y(p.quantile)))
            .collect();
        chart
            .draw_series(LineSeries::new(xy.iter().copied(), colour.stroke_width(2)))
            .map_err(drawing(path))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)));
        chart
            .draw_series(xy.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(drawing(path))?;
    }
    legend(&mut chart, SeriesLabelPosition::LowerRight, path)?;
    finish(&root, path)
}

/// The number of nines in `q`: 0.9 → 1, 0.99 → 2, 0.999 → 3.
fn nines(q: f64) -> f64 {
    -(1.0 - q).log10()
}

/// The percentile at `n` nines (`top` is the maximum).
fn percentile_label(n: f64, top: f64) -> String {
    if (n - top).abs() < 1e-9 {
        return "max".to_owned();
    }
    let percent = 100.0 * (1.0 - 10f64.powf(-n));
    // 99.9 needs one decimal, 99.99 two: as many as nines beyond the second.
    let decimals = (n.round() as i64 - 2).clamp(0, 6) as usize;
    format!("{percent:.decimals$}")
}

/// A tick label with as many digits as its size needs, without the float
/// noise (`0.30000000000000004`) a plain `{}` shows.
fn tick(v: f64) -> String {
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

fn check_series_count(n: usize, what: &str) -> Result<()> {
    if n == 0 {
        bail!("{what}: no series to draw");
    }
    if n > PALETTE.len() {
        bail!(
            "{what}: {n} series but only {} distinct colours; split the chart",
            PALETTE.len()
        );
    }
    Ok(())
}

fn check_label(label: &str) -> Result<()> {
    if label.trim().is_empty() {
        bail!("a series has an empty label: the legend could not name it");
    }
    Ok(())
}

fn check_point(label: &str, p: &Point) -> Result<()> {
    let Point { x, y, lo, hi } = *p;
    if ![x, y, lo, hi].iter().all(|v| v.is_finite()) {
        bail!("series {label:?}: point {p:?} has a value that is not a finite number");
    }
    if x <= 0.0 {
        bail!("series {label:?}: x = {x} is not a frame size (the x axis is logarithmic)");
    }
    if lo < 0.0 {
        bail!(
            "series {label:?}: at x = {x} the range starts below 0 ({lo}); the y axis starts at 0"
        );
    }
    if !(lo <= y && y <= hi) {
        bail!("series {label:?}: at x = {x} the median {y} is outside its range {lo}..={hi}");
    }
    Ok(())
}

fn check_cdf(s: &Cdf) -> Result<()> {
    let label = &s.label;
    let Some(first) = s.points.first() else {
        bail!("distribution {label:?} has no points");
    };
    let mut prev = *first;
    for (i, p) in s.points.iter().enumerate() {
        if !(0.0..=1.0).contains(&p.quantile) {
            bail!(
                "distribution {label:?}: point {i} has quantile {} outside 0..=1",
                p.quantile
            );
        }
        if i > 0 && (p.quantile <= prev.quantile || p.ns < prev.ns) {
            bail!(
                "distribution {label:?}: point {i} ({} at {} ns) does not follow ({} at {} ns): \
                 quantiles must rise and latency never fall",
                p.quantile,
                p.ns,
                prev.quantile,
                prev.ns
            );
        }
        prev = *p;
    }
    Ok(())
}

/// Smallest and largest of finite values (checked before).
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

fn open(path: &Path) -> Result<DrawingArea<SVGBackend<'_>, Shift>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} for a chart", dir.display()))?;
    }
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(drawing(path))?;
    Ok(root)
}

fn legend<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
    path: &Path,
) -> Result<()>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 15))
        .draw()
        .map_err(drawing(path))
}

/// Writes the file: done explicitly because the backend's drop would
/// swallow a write error.
fn finish(root: &DrawingArea<SVGBackend<'_>, Shift>, path: &Path) -> Result<()> {
    root.present().map_err(drawing(path))
}

fn drawing<E: Display>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("drawing {}: {e}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A directory of its own per test, removed on drop even if the test fails.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "strait-plot-{}-{name}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn point(x: f64, y: f64, spread: f64) -> Point {
        Point {
            x,
            y,
            lo: y - spread,
            hi: y + spread,
        }
    }

    fn throughput_series() -> Vec<Series> {
        let sizes = [64.0, 128.0, 256.0, 512.0, 1024.0, 1518.0];
        vec![
            Series {
                label: "Strait".into(),
                points: sizes.iter().map(|&s| point(s, s / 200.0, 0.2)).collect(),
            },
            Series {
                label: "kernel forward".into(),
                // Deliberately unsorted: the chart sorts by x.
                points: sizes
                    .iter()
                    .rev()
                    .map(|&s| point(s, s / 400.0, 0.1))
                    .collect(),
            },
        ]
    }

    fn cdf(label: &str, scale: u64) -> Cdf {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
        for i in 0..10_000u64 {
            h.record(scale * (10 + i % 50)).unwrap();
        }
        h.record(scale * 5_000).unwrap();
        Cdf {
            label: label.into(),
            points: crate::gen::LatencyReport::from_histogram(&h).unwrap().cdf,
        }
    }

    /// The text of every `<text>` element, unescaped enough for plain labels.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_owned())
            })
            .collect()
    }

    fn assert_svg(path: &Path, want: &[&str]) -> Vec<String> {
        let svg = std::fs::read_to_string(path).expect("the chart was written");
        assert!(svg.trim_start().starts_with("<svg"), "{svg:.200}");
        assert!(svg.trim_end().ends_with("</svg>"), "SVG is closed");
        assert_eq!(svg.matches("<svg").count(), svg.matches("</svg>").count());
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        let texts = texts(&svg);
        for w in want {
            assert!(
                texts.iter().any(|t| t == w),
                "no <text> {w:?} among {texts:?}"
            );
        }
        texts
    }

    #[test]
    fn throughput_chart_has_series_labels_and_axes() {
        let dir = TempDir::new("tput");
        // A parent that does not exist yet: the chart creates it.
        let path = dir.0.join("figures/tput.svg");
        throughput_vs_size(&path, "UDP forwarding", "Gbit/s", &throughput_series()).unwrap();
        let texts = assert_svg(
            &path,
            &[
                "UDP forwarding",
                "Gbit/s",
                "frame size (bytes)",
                "Strait",
                "kernel forward",
                "64",
                "1024",
            ],
        );
        // Only powers of two on the size axis, no in-between ticks.
        assert!(!texts.iter().any(|t| t == "96" || t == "192"), "{texts:?}");
    }

    #[test]
    fn latency_chart_has_series_labels_and_percentile_axis() {
        let dir = TempDir::new("cdf");
        let path = dir.0.join("cdf.svg");
        let series = [cdf("Strait", 1_000), cdf("wireguard-go", 10_000)];
        latency_cdf(&path, "Latency at 50 % of NDR", &series).unwrap();
        let texts = assert_svg(
            &path,
            &[
                "Latency at 50 % of NDR",
                "latency (µs)",
                "percentile",
                "Strait",
                "wireguard-go",
                "0",
                "90",
                "99",
                "99.9",
                "99.99",
                "max",
            ],
        );
        assert!(
            !texts.iter().any(|t| t == "99.999"),
            "four nines and the max: {texts:?}"
        );
    }

    #[test]
    fn zero_latency_and_single_points_draw() {
        let dir = TempDir::new("edge");
        let zero_start = Cdf {
            label: "Strait".into(),
            points: vec![
                CdfPoint {
                    quantile: 0.0,
                    ns: 0,
                },
                CdfPoint {
                    quantile: 1.0,
                    ns: 800,
                },
            ],
        };
        latency_cdf(&dir.0.join("a.svg"), "t", &[zero_start]).unwrap();
        let one = Series {
            label: "Strait".into(),
            points: vec![point(1024.0, 0.0, 0.0)],
        };
        throughput_vs_size(&dir.0.join("b.svg"), "t", "Mpps", &[one]).unwrap();
    }

    fn refused_throughput(series: &[Series], why: &str) {
        let dir = TempDir::new("bad-tput");
        let path = dir.0.join("bad.svg");
        let err = throughput_vs_size(&path, "t", "Gbit/s", series)
            .expect_err("bad input must be refused");
        assert!(err.to_string().contains(why), "{err:#}");
        assert!(!path.exists(), "no chart is written for bad input");
    }

    #[test]
    fn throughput_refuses_bad_input() {
        refused_throughput(&[], "no series");
        let mut s = throughput_series();
        s[0].points.clear();
        refused_throughput(&s, "has no points");
        let mut s = throughput_series();
        s[1].points[2].y = f64::NAN;
        refused_throughput(&s, "not a finite number");
        let mut s = throughput_series();
        s[0].points[0].hi = f64::INFINITY;
        refused_throughput(&s, "not a finite number");
        let mut s = throughput_series();
        s[0].points[0].lo = s[0].points[0].y + 1.0;
        refused_throughput(&s, "outside its range");
        let mut s = throughput_series();
        s[0].points[0].x = 0.0;
        refused_throughput(&s, "logarithmic");
        let mut s = throughput_series();
        s[0].label = " ".into();
        refused_throughput(&s, "empty label");
        let many: Vec<Series> = (0..PALETTE.len() + 1)
            .map(|i| Series {
                label: format!("s{i}"),
                points: vec![point(64.0, 1.0, 0.0)],
            })
            .collect();
        refused_throughput(&many, "distinct colours");
    }

    fn refused_cdf(series: &[Cdf], why: &str) {
        let dir = TempDir::new("bad-cdf");
        let path = dir.0.join("bad.svg");
        let err = latency_cdf(&path, "t", series).expect_err("bad input must be refused");
        assert!(err.to_string().contains(why), "{err:#}");
        assert!(!path.exists(), "no chart is written for bad input");
    }

    #[test]
    fn latency_refuses_bad_input() {
        refused_cdf(&[], "no series");
        refused_cdf(
            &[Cdf {
                label: "Strait".into(),
                points: vec![],
            }],
            "has no points",
        );
        let mut c = cdf("Strait", 1_000);
        c.points[3].quantile = f64::NAN;
        refused_cdf(&[c], "outside 0..=1");
        let mut c = cdf("Strait", 1_000);
        c.points.last_mut().unwrap().quantile = 1.5;
        refused_cdf(&[c], "outside 0..=1");
        let mut c = cdf("Strait", 1_000);
        c.points.swap(4, 5);
        refused_cdf(&[c], "must rise");
        let mut c = cdf("Strait", 1_000);
        c.points.last_mut().unwrap().ns = 0;
        refused_cdf(&[c], "never fall");
        let zeros = Cdf {
            label: "Strait".into(),
            points: vec![
                CdfPoint {
                    quantile: 0.5,
                    ns: 0,
                },
                CdfPoint {
                    quantile: 1.0,
                    ns: 0,
                },
            ],
        };
        refused_cdf(&[zeros], "every latency is 0 ns");
    }

    #[test]
    fn percentile_labels_count_nines() {
        assert_eq!(percentile_label(0.0, 5.0), "0");
        assert_eq!(percentile_label(1.0, 5.0), "90");
        assert_eq!(percentile_label(2.0, 5.0), "99");
        assert_eq!(percentile_label(3.0, 5.0), "99.9");
        assert_eq!(percentile_label(4.0, 5.0), "99.99");
        assert_eq!(percentile_label(5.0, 5.0), "max");
        assert!((nines(0.999) - 3.0).abs() < 1e-9);
        assert_eq!(tick(0.30000000000000004), "0.3");
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(1500.0), "1500");
    }
}
