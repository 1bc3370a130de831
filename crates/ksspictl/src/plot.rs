//! The scale benchmark's plot: how handshake cost grows with concurrency.
//!
//! One PNG, two panels side by side: handshakes per second against the
//! number of handshakes at once (log x; a server and a client session
//! each), and the median and 99th percentile handshake latency in
//! milliseconds (log x, log y). A footnote
//! gives the memory per session at rest at each concurrency.
//!
//! Text is drawn by plotters' `ab_glyph` backend from DejaVu Sans embedded in
//! the binary (the `dejavu` crate), so drawing needs no system fonts, no
//! fontconfig and no freetype: it works the same on a fresh CI machine.

use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;

/// One measured point of the scale benchmark.
pub struct ScalePoint {
    /// Handshakes at once (1, 16, 256, 4096, 10000, 100000).
    pub concurrency: u32,
    /// Handshakes per second at that concurrency.
    pub handshakes_per_second: f64,
    /// Handshake latency, median and 99th percentile, microseconds.
    pub p50_us: u64,
    pub p99_us: u64,
    /// Bytes of memory per session (engine + device state, at its largest
    /// during the handshake).
    pub bytes_per_session: u64,
}

/// The image's size in pixels.
const SIZE: (u32, u32) = (1200, 800);

/// The family every text style below names; [`register_font`] binds it.
const FAMILY: &str = "sans-serif";

/// Registers the embedded font once per process (plotters keeps a global
/// table; with `ab_glyph` nothing is found unless registered).
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "plot: the embedded DejaVu Sans font did not parse".to_string())
        })
        .clone()
}

/// `v` with `decimals` decimals, less trailing zeros: "5", "2.5", "0.25".
fn trimmed(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// "1", "10", "100", "1k", "10k": short labels for the concurrency axis.
fn concurrency_label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", trimmed(v / 1000.0, 1))
    } else {
        trimmed(v, 0)
    }
}

/// Handshakes per second on the y axis: "950", "5k", "12.5k", "1.2M".
fn rate_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trimmed(v / 1e6, 2))
    } else if v >= 1e3 {
        format!("{}k", trimmed(v / 1e3, 1))
    } else {
        trimmed(v, 1)
    }
}

/// Milliseconds on the latency axis, with as many decimals as a log axis
/// down to microseconds needs: "1000", "10", "1", "0.2", "0.005".
fn ms_label(v: f64) -> String {
    if v >= 1.0 {
        trimmed(v, 1)
    } else {
        trimmed(v, 3)
    }
}

/// "2.1 KiB", "512 B", "1.3 MiB".
fn bytes_label(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// A log-axis range around `lo..=hi` (both > 0), widened to whole decades'
/// worth of margin so the extreme points are not drawn on the frame.
fn log_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let lo = lo / 2.0;
    let hi = if hi > lo * 4.0 { hi * 2.0 } else { lo * 8.0 };
    lo..hi
}

/// Draw `points` to `path` (PNG, 1200x800): left panel handshakes/s vs
/// concurrency (log x axis), right panel p50 and p99 latency in ms vs
/// concurrency (log x, log y), title including `title`.
///
/// Points may come in any order (they are drawn sorted by concurrency). Errors
/// (as text): no points, a concurrency of 0, a rate that is negative or not
/// finite, or a failure to draw or write the file.
pub fn scale_png(path: &Path, title: &str, points: &[ScalePoint]) -> Result<(), String> {
    if points.is_empty() {
        return Err("plot: no points to draw".into());
    }
    if let Some(p) = points.iter().find(|p| p.concurrency == 0) {
        return Err(format!(
            "plot: concurrency 0 cannot be drawn on a log axis ({} handshakes/s)",
            p.handshakes_per_second
        ));
    }
    if let Some(p) = points
        .iter()
        .find(|p| !p.handshakes_per_second.is_finite() || p.handshakes_per_second < 0.0)
    {
        return Err(format!(
            "plot: handshakes/s at concurrency {} is {}",
            p.concurrency, p.handshakes_per_second
        ));
    }
    register_font()?;
    draw(path, title, points).map_err(|e| format!("plot: drawing {}: {e}", path.display()))
}

fn draw(path: &Path, title: &str, points: &[ScalePoint]) -> Result<(), Box<dyn std::error::Error>> {
    let mut pts: Vec<&ScalePoint> = points.iter().collect();
    pts.sort_by_key(|p| p.concurrency);

    // A latency of 0 µs (below the timer's resolution) is drawn at 1 µs.
    let ms = |us: u64| us.max(1) as f64 / 1000.0;
    let conc: Vec<f64> = pts.iter().map(|p| f64::from(p.concurrency)).collect();
    let rate: Vec<f64> = pts.iter().map(|p| p.handshakes_per_second).collect();
    let p50: Vec<f64> = pts.iter().map(|p| ms(p.p50_us)).collect();
    let p99: Vec<f64> = pts.iter().map(|p| ms(p.p99_us)).collect();

    let fold = |v: &[f64]| {
        v.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            })
    };
    let (c_lo, c_hi) = fold(&conc);
    let x_range = log_range(c_lo, c_hi);
    let (_, r_hi) = fold(&rate);
    let r_top = if r_hi > 0.0 { r_hi * 1.15 } else { 1.0 };
    let all_latencies: Vec<f64> = p50.iter().chain(&p99).copied().collect();
    let (l_lo, l_hi) = fold(&all_latencies);
    let y_lat = log_range(l_lo, l_hi);

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!("{title}: how handshake cost grows with concurrency"),
        (FAMILY, 30).into_font().color(&BLACK),
    )?;
    let (body, foot) = root.split_vertically(SIZE.1 - 50 - 40);
    let panels = body.split_evenly((1, 2));

    let label = (FAMILY, 20).into_font();
    let ticks = (FAMILY, 16).into_font();
    let caption = (FAMILY, 22).into_font();
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    let red = RGBColor(214, 39, 40);

    // Left: throughput.
    let mut left = ChartBuilder::on(&panels[0])
        .caption("Throughput", caption.clone())
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.clone().log_scale(), 0.0..r_top)?;
    left.configure_mesh()
        .x_desc("handshakes at once (a server and a client session each)")
        .y_desc("handshakes / s")
        .axis_desc_style(label.clone())
        .label_style(ticks.clone())
        .x_label_formatter(&|v| concurrency_label(*v))
        .y_label_formatter(&|v| rate_label(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let series: Vec<(f64, f64)> = conc.iter().copied().zip(rate.iter().copied()).collect();
    left.draw_series(LineSeries::new(series.clone(), blue.stroke_width(3)))?
        .label("handshakes / s")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], blue.stroke_width(3)));
    left.draw_series(
        series
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 5, blue.filled())),
    )?;
    left.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(ticks.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    // Right: latency.
    let mut right = ChartBuilder::on(&panels[1])
        .caption("Handshake latency", caption)
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.log_scale(), y_lat.log_scale())?;
    right
        .configure_mesh()
        .x_desc("handshakes at once (a server and a client session each)")
        .y_desc("latency (ms)")
        .axis_desc_style(label)
        .label_style(ticks.clone())
        .x_label_formatter(&|v| concurrency_label(*v))
        .y_label_formatter(&|v| ms_label(*v))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (name, values, color) in [("p50", &p50, orange), ("p99", &p99, red)] {
        let series: Vec<(f64, f64)> = conc.iter().copied().zip(values.iter().copied()).collect();
        right
            .draw_series(LineSeries::new(series.clone(), color.stroke_width(3)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
            });
        right.draw_series(
            series
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 5, color.filled())),
        )?;
    }
    right
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(ticks.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;

    // Footnote: memory per session (engine + device, during the handshake).
    let memory: Vec<String> = if pts
        .windows(2)
        .all(|w| w[0].bytes_per_session == w[1].bytes_per_session)
    {
        vec![format!(
            "{} at every point",
            bytes_label(pts[0].bytes_per_session)
        )]
    } else {
        pts.iter()
            .map(|p| format!("{}: {}", p.concurrency, bytes_label(p.bytes_per_session)))
            .collect()
    };
    foot.draw_text(
        &format!(
            "memory per session in a handshake (engine + device state; the provider's apart):  {}",
            memory.join(",  ")
        ),
        &ticks.color(&BLACK),
        (20, 10),
    )?;

    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic() -> Vec<ScalePoint> {
        [
            (1, 950.0, 900, 1_400, 2_300),
            (16, 11_800.0, 1_250, 2_900, 2_300),
            (256, 41_000.0, 5_800, 14_000, 2_350),
            (4096, 44_500.0, 88_000, 210_000, 2_400),
            (10_000, 43_000.0, 225_000, 610_000, 2_420),
        ]
        .into_iter()
        .map(
            |(concurrency, handshakes_per_second, p50_us, p99_us, bytes_per_session)| ScalePoint {
                concurrency,
                handshakes_per_second,
                p50_us,
                p99_us,
                bytes_per_session,
            },
        )
        .collect()
    }

    #[test]
    fn plot_scale_png_writes_a_png() {
        let path =
            std::env::temp_dir().join(format!("ksspictl-plot-test-{}.png", std::process::id()));
        let _ = std::fs::remove_file(&path);
        scale_png(&path, "ksspi scale (synthetic)", &synthetic()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 8 * 1024, "only {} bytes", bytes.len());
    }

    #[test]
    fn plot_scale_png_rejects_what_it_cannot_draw() {
        let path = std::env::temp_dir().join("ksspictl-plot-never-written.png");
        assert!(scale_png(&path, "t", &[]).is_err());
        let mut bad = synthetic();
        bad[0].concurrency = 0;
        assert!(scale_png(&path, "t", &bad).is_err());
        let mut bad = synthetic();
        bad[2].handshakes_per_second = f64::NAN;
        assert!(scale_png(&path, "t", &bad).is_err());
        assert!(!path.exists());
    }
}
