//! PNG plots of a case: the true clock error and the frequency correction
//! against time. Text uses an embedded DejaVu Sans font, so no system font
//! library is needed.

use std::path::Path as FsPath;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::cases::CaseResult;

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// Drawing or encoding failed.
    #[error("plot: {0}")]
    Draw(String),
    /// Nothing to plot.
    #[error("plot: empty trace")]
    Empty,
}

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

const FONT: &str = "sans-serif";

/// A line of the frequency chart: label, colour and value.
type Series = (&'static str, RGBColor, fn(&crate::Record) -> f64);

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A failure leaves text undrawn; drawing then reports the error.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// The range `[lo, hi]` padded by 10%, at least `min_span` wide.
fn padded(lo: f64, hi: f64, min_span: f64) -> (f64, f64) {
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
    let mid = (lo + hi) / 2.0;
    let half = ((hi - lo) / 2.0 * 1.1).max(min_span / 2.0);
    (mid - half, mid + half)
}

/// Writes `result` as a 1000×700 PNG at `path`: the true error (µs,
/// clipped to a range around the steady state so the lock is visible)
/// and the frequency (ppm) against time (h).
pub fn write_png(result: &CaseResult, path: &FsPath) -> Result<(), PlotError> {
    let last = result.trace.last().ok_or(PlotError::Empty)?;
    register_font();
    let hours = (last.t / 3600.0).max(1e-3);
    let root = BitMapBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let (top, bottom) = root.split_vertically(350);

    // Error: ±4× the steady-state maximum (at least ±20 µs) so the steady
    // state shows at microsecond scale; larger values (the lock) are
    // clipped.
    let lim = (result.metrics.steady_max * 4.0 * 1e6).max(20.0);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "{}: true clock error (µs, clipped to ±{lim:.0})",
                result.name
            ),
            (FONT, 20),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..hours, -lim..lim)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("time (h)")
        .y_desc("error (µs)")
        .label_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(
            result
                .trace
                .iter()
                .map(|r| (r.t / 3600.0, (r.error * 1e6).clamp(-lim, lim))),
            &BLUE,
        ))
        .map_err(draw_err)?;

    // Frequency: the applied correction, the discipline's estimate and
    // the value that would cancel the oscillator's error.
    let values = result
        .trace
        .iter()
        .flat_map(|r| [r.correction_ppm, r.frequency_ppm, -r.oscillator_ppm]);
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = padded(lo.max(-600.0), hi.min(600.0), 1.0);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("frequency correction (ppm)", (FONT, 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..hours, lo..hi)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("time (h)")
        .y_desc("ppm")
        .label_style((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    let series: [Series; 3] = [
        ("ideal (−oscillator error)", BLACK, |r| -r.oscillator_ppm),
        ("applied correction", RED, |r| r.correction_ppm),
        ("frequency estimate", BLUE, |r| r.frequency_ppm),
    ];
    for (label, color, f) in series {
        chart
            .draw_series(LineSeries::new(
                result
                    .trace
                    .iter()
                    .map(|r| (r.t / 3600.0, f(r).clamp(lo, hi))),
                &color,
            ))
            .map_err(draw_err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}
