//! Training curves as CSV and as a PNG plot.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::model::EpochStats;

/// The font the plots are drawn with, shipped in `assets/` (DejaVu Sans Mono, free
/// licence in `assets/DejaVu-LICENSE.txt`), so that no system font is needed.
const FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

/// A named curve.
pub struct Series<'a> {
    /// Legend label, e.g. `"pretrain"`.
    pub name: &'a str,
    /// The points.
    pub points: &'a [EpochStats],
}

/// The curves as CSV: `phase,epoch,loss,accuracy`.
pub fn csv(series: &[Series<'_>]) -> String {
    let mut out = String::from("phase,epoch,loss,accuracy\n");
    for s in series {
        for p in s.points {
            let _ = writeln!(out, "{},{},{},{}", s.name, p.epoch, p.loss, p.accuracy);
        }
    }
    out
}

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

/// Draws loss (left) and accuracy (right) per epoch, one line per series, into a PNG.
pub fn png(path: &Path, title: &str, series: &[Series<'_>]) -> Result<(), String> {
    register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| "plot: the embedded font could not be loaded".to_string())?;
    let root = BitMapBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let (left, right) = root.split_horizontally(600);
    let epochs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.epoch))
        .max()
        .unwrap_or(1)
        .max(1);
    let max_loss = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.loss))
        .filter(|l| l.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for (area, metric, top) in [(&left, "loss", max_loss * 1.05), (&right, "accuracy", 1.0)] {
        let mut chart = ChartBuilder::on(area)
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .caption(metric, ("sans-serif", 18))
            .build_cartesian_2d(0usize..epochs, 0.0f64..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(metric)
            .draw()
            .map_err(err)?;
        for (s, color) in series.iter().zip(colors.iter().cycle()) {
            let points = s.points.iter().map(|p| {
                let y = if metric == "loss" { p.loss } else { p.accuracy };
                (p.epoch, y)
            });
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(err)?
                .label(s.name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Writes `FILE.png`-style output: the PNG at `path` and the CSV beside it (same name,
/// `.csv`).
pub fn write(path: &Path, title: &str, series: &[Series<'_>]) -> Result<(), String> {
    png(path, title, series)?;
    let csv_path = path.with_extension("csv");
    std::fs::write(&csv_path, csv(series))
        .map_err(|e| format!("{}: cannot write: {e}", csv_path.display()))
}
