//! The report's charts: PNG files drawn with `plotters`' bitmap backend and encoded with the
//! `png` crate (cargo feature `plot`). Text needs a TrueType font: the first of
//! [`FONT_PATHS`] that exists (DejaVu Sans on Debian and Ubuntu).

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::report::PAIRS;
use super::{PeerResult, StoreKind, WorkloadResult};

/// Where the charts look for a font, in order (`FLOWSTATE_FONT` first when set).
pub const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers the font as "sans-serif" once; an error says why charts cannot have text.
fn font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let from_env = std::env::var("FLOWSTATE_FONT").ok();
        let path = from_env
            .iter()
            .map(String::as_str)
            .chain(FONT_PATHS)
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| {
                format!("no font found (set FLOWSTATE_FONT; looked in {FONT_PATHS:?})")
            })?;
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        plotters::style::register_font("sans-serif", FontStyle::Normal, Vec::leak(bytes))
            .map_err(|_| format!("{path}: not a usable font"))
    })
    .clone()
}

/// Whether charts can be drawn (a font was found); the error says why not.
pub fn available() -> Result<(), String> {
    font()
}

const WIDTH: u32 = 1100;
const BAND: u32 = 34;

/// Draws `draw` on a white `WIDTH x height` bitmap and writes it to `path` as PNG.
fn render(
    path: &Path,
    height: u32,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> PeerResult<()>,
) -> PeerResult<()> {
    font()?;
    let mut buf = vec![0u8; (WIDTH * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, WIDTH, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&buf)?;
    Ok(())
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

/// Horizontal grouped bars on a log axis: one band per workload (the first at the top), one
/// bar per series. `values[series][workload]`; `None` draws nothing.
#[allow(clippy::too_many_arguments)]
fn bars(
    path: &Path,
    title: &str,
    x_desc: &str,
    names: &[String],
    series: &[String],
    values: &[Vec<Option<f64>>],
    x_range: (f64, f64),
    reference: Option<f64>,
) -> PeerResult<()> {
    let n = names.len();
    let legend_height = 16 + 24 * series.len() as u32;
    let height = 110 + BAND * n as u32 + legend_height;
    render(path, height, |root| {
        let (plot, legend) = root.split_vertically(height - legend_height);
        // The legend below the chart, one series a line, so it never hides a bar.
        for (s, name) in series.iter().enumerate() {
            let color = COLORS[s % COLORS.len()];
            let y = 4 + 24 * s as i32;
            legend.draw(&Rectangle::new(
                [(210, y + 3), (228, y + 17)],
                color.filled(),
            ))?;
            legend.draw(&Text::new(
                name.as_str(),
                (236, y + 2),
                ("sans-serif", 16).into_font().color(&BLACK),
            ))?;
        }
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(46)
            .y_label_area_size(190)
            .build_cartesian_2d((x_range.0..x_range.1).log_scale(), -0.5f64..n as f64 - 0.5)?;
        let label = |y: &f64| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                names[n - 1 - i as usize].clone()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n + 1)
            .y_label_formatter(&label)
            .x_label_formatter(&|x: &f64| {
                if *x >= 1000.0 {
                    super::report::si(*x)
                } else {
                    format!("{x}")
                }
            })
            .x_desc(x_desc)
            .label_style(("sans-serif", 15))
            .draw()?;
        let k = series.len().max(1) as f64;
        let height = 0.8 / k;
        for s in 0..series.len() {
            let color = COLORS[s % COLORS.len()];
            let rects = values[s].iter().enumerate().filter_map(|(i, v)| {
                let v = (*v)?;
                let y0 = (n - 1 - i) as f64 + 0.4 - height * (s as f64 + 1.0);
                let x = v.clamp(x_range.0, x_range.1);
                Some(Rectangle::new(
                    [(x_range.0, y0), (x, y0 + height * 0.9)],
                    color.filled(),
                ))
            });
            chart.draw_series(rects)?;
            let texts = values[s].iter().enumerate().filter_map(|(i, v)| {
                let v = (*v)?;
                let y = (n - 1 - i) as f64 + 0.4 - height * (s as f64 + 0.5);
                let x = v.clamp(x_range.0, x_range.1);
                let text = if v >= 1000.0 {
                    super::report::si(v)
                } else {
                    super::report::ratio(v)
                };
                Some(Text::new(
                    format!(" {text}"),
                    (x, y),
                    ("sans-serif", 12).into_font().color(&BLACK).pos(
                        plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Left,
                            plotters::style::text_anchor::VPos::Center,
                        ),
                    ),
                ))
            });
            chart.draw_series(texts)?;
        }
        if let Some(r) = reference {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(r, -0.5), (r, n as f64 - 0.5)],
                BLACK.stroke_width(2),
            )))?;
        }
        Ok(())
    })
}

/// `ratios.png`: the headline ratios (flowstate / peer) of every workload on a log axis, with
/// a line at 1.
pub fn ratio_chart(results: &[WorkloadResult], path: &Path) -> PeerResult<()> {
    let names: Vec<String> = results.iter().map(|r| r.workload.name()).collect();
    let pairs: Vec<(StoreKind, StoreKind)> = PAIRS
        .into_iter()
        .filter(|&(a, b)| results.iter().any(|r| r.ratio(a, b).is_some()))
        .collect();
    let series: Vec<String> = pairs
        .iter()
        .map(|(a, b)| format!("{} / {}", a.label(), b.label()))
        .collect();
    let values: Vec<Vec<Option<f64>>> = pairs
        .iter()
        .map(|&(a, b)| results.iter().map(|r| r.ratio(a, b)).collect())
        .collect();
    let all: Vec<f64> = values.iter().flatten().flatten().copied().collect();
    let lo = all.iter().copied().fold(1.0, f64::min) / 2.0;
    let hi = all.iter().copied().fold(1.0, f64::max) * 2.5;
    bars(
        path,
        "flowstate / peer throughput, same run (> 1: flowstate faster)",
        "ratio (log scale)",
        &names,
        &series,
        &values,
        (lo.max(1e-3), hi),
        Some(1.0),
    )
}

/// `throughput.png`: every store's median throughput per workload on a log axis.
pub fn throughput_chart(results: &[WorkloadResult], path: &Path) -> PeerResult<()> {
    let names: Vec<String> = results
        .iter()
        .map(|r| format!("{} ({})", r.workload.name(), r.workload.unit()))
        .collect();
    let stores: Vec<StoreKind> = StoreKind::ALL
        .into_iter()
        .filter(|&s| {
            results
                .iter()
                .any(|r| r.row(s).is_some_and(|row| !row.runs.is_empty()))
        })
        .collect();
    let series: Vec<String> = stores.iter().map(|s| s.label().to_owned()).collect();
    let values: Vec<Vec<Option<f64>>> = stores
        .iter()
        .map(|&s| {
            results
                .iter()
                .map(|r| {
                    r.row(s)
                        .filter(|row| !row.runs.is_empty())
                        .map(|row| super::median(&row.runs))
                })
                .collect()
        })
        .collect();
    let all: Vec<f64> = values.iter().flatten().flatten().copied().collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).min(1e6) / 2.0;
    let hi = all.iter().copied().fold(1.0, f64::max) * 4.0;
    bars(
        path,
        "throughput per store (median of runs)",
        "operations per second (log scale)",
        &names,
        &series,
        &values,
        (lo.max(1.0), hi),
        None,
    )
}
