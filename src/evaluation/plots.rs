//! PNG figures of an evaluation: per-organ IoU bars, the radial-error histogram, and organ
//! centres of every scan in APE space as three 2-D projections (the paper's Figure 3).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{EvalResults, MethodResults};

const FONT: &str = "sans-serif";
const APE_COLOUR: RGBColor = RGBColor(31, 119, 180);
const BASELINE_COLOUR: RGBColor = RGBColor(170, 170, 170);

/// Twenty distinguishable colours (Tableau 20 order), one per organ.
const PALETTE: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(255, 152, 150),
    RGBColor(197, 176, 213),
    RGBColor(196, 156, 148),
    RGBColor(247, 182, 210),
    RGBColor(199, 199, 199),
    RGBColor(219, 219, 141),
    RGBColor(158, 218, 229),
];

#[derive(Debug, thiserror::Error)]
#[error("{path}: could not draw the plot: {detail}")]
pub struct PlotError {
    pub path: String,
    pub detail: String,
}

/// Registers the bundled font (egui's Ubuntu Light) for plot text; once per process suffices.
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // A font that fails to parse leaves the plots without text, not without figures.
        let _ = plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

fn draw(
    path: &Path,
    size: (u32, u32),
    f: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), Box<dyn std::error::Error>>,
) -> Result<(), PlotError> {
    register_font();
    let fail = |e: &dyn std::fmt::Display| PlotError {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    f(&root).map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

/// Horizontal bars of per-organ IoU, APE beside the baseline.
pub fn iou_bars(
    path: &Path,
    ape: &MethodResults,
    baseline: &MethodResults,
) -> Result<(), PlotError> {
    let rows: Vec<(String, f64, f64)> = ape
        .organs
        .iter()
        .map(|o| {
            let b = baseline
                .organs
                .iter()
                .find(|b| b.label == o.label)
                .and_then(|b| b.iou)
                .unwrap_or(0.0);
            (o.organ.clone(), o.iou.unwrap_or(0.0), b)
        })
        .collect();
    let n = rows.len().max(1);
    let height = 80 + 34 * n as u32;
    draw(path, (900, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Few-shot organ boxes: IoU with the true box (blue APE, grey body-box baseline)",
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(190)
            .build_cartesian_2d(0.0..1.0f64, 0.0..n as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("IoU")
            .label_style((FONT, 14))
            .draw()?;
        for (i, (_, a, b)) in rows.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            chart.draw_series([
                Rectangle::new([(0.0, y + 0.52), (*a, y + 0.9)], APE_COLOUR.filled()),
                Rectangle::new([(0.0, y + 0.1), (*b, y + 0.48)], BASELINE_COLOUR.filled()),
            ])?;
        }
        let style =
            TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, (name, _, _)) in rows.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(0.0, (n - 1 - i) as f64 + 0.5));
            root.draw(&Text::new(name.clone(), (px - 8, py), style.clone()))?;
        }
        Ok(())
    })
}

/// Histogram of radial errors of organ centres, 10 mm bins, APE and baseline as outlines.
pub fn error_histogram(
    path: &Path,
    ape: &MethodResults,
    baseline: &MethodResults,
) -> Result<(), PlotError> {
    const BIN: f64 = 10.0;
    let top = ape
        .centre_errors
        .iter()
        .chain(&baseline.centre_errors)
        .fold(100.0f64, |m, e| m.max(*e))
        .min(600.0);
    let bins = (top / BIN).ceil() as usize;
    let histogram = |errors: &[f64]| {
        let mut counts = vec![0usize; bins];
        for e in errors {
            counts[((e / BIN) as usize).min(bins - 1)] += 1;
        }
        counts
    };
    let (a, b) = (
        histogram(&ape.centre_errors),
        histogram(&baseline.centre_errors),
    );
    let peak = a.iter().chain(&b).copied().max().unwrap_or(1).max(1);
    draw(path, (900, 450), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Radial error of organ centres (blue APE, grey body-box baseline)",
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..bins as f64 * BIN, 0.0..peak as f64 * 1.08)?;
        chart
            .configure_mesh()
            .x_desc("radial error, mm (last bin: that and more)")
            .y_desc("landmark pairs")
            .label_style((FONT, 14))
            .draw()?;
        for (counts, colour) in [(&b, BASELINE_COLOUR), (&a, APE_COLOUR)] {
            let steps = counts
                .iter()
                .enumerate()
                .flat_map(|(i, &c)| [(i as f64 * BIN, c as f64), ((i + 1) as f64 * BIN, c as f64)]);
            chart.draw_series(LineSeries::new(steps, colour.stroke_width(3)))?;
        }
        Ok(())
    })
}

/// Each organ centre's radial error against APE's confidence in it (dots), and the mean error
/// of each confidence quarter (line): a confidence worth showing falls as the error grows.
pub fn error_vs_confidence(path: &Path, ape: &MethodResults) -> Result<(), PlotError> {
    let points: Vec<(f64, f64)> = ape
        .centre_confidence
        .iter()
        .zip(&ape.centre_errors)
        .map(|(&c, &e)| (c, e.min(300.0)))
        .collect();
    let top = points.iter().fold(100.0f64, |m, p| m.max(p.1));
    draw(path, (900, 450), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Organ-centre error against confidence (line: mean per quarter)",
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..1.0, 0.0..top * 1.05)?;
        chart
            .configure_mesh()
            .x_desc("confidence (cycle error and agreeing neighbours)")
            .y_desc("radial error, mm (capped at 300)")
            .label_style((FONT, 14))
            .draw()?;
        chart.draw_series(
            points
                .iter()
                .map(|&p| Circle::new(p, 2, APE_COLOUR.mix(0.35).filled())),
        )?;
        let means = ape
            .error_by_confidence
            .iter()
            .map(|b| ((b.lo + b.hi) * 0.5, b.mre));
        chart.draw_series(LineSeries::new(means, BLACK.stroke_width(3)))?;
        Ok(())
    })
}

/// Organ centres of every scan in APE space, three 2-D projections, one colour per organ.
pub fn ape_space(path: &Path, results: &EvalResults) -> Result<(), PlotError> {
    let labels: Vec<u16> = results.label_names.keys().copied().collect();
    let colour_of = |label: u16| {
        let i = labels
            .iter()
            .position(|l| *l == label)
            .unwrap_or(label as usize);
        PALETTE[i % PALETTE.len()]
    };
    let points = &results.centres_in_ape_space;
    let range = |c: usize| {
        let (lo, hi) = points
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.embedding[c]), hi.max(p.embedding[c]))
            });
        if lo.is_finite() && hi > lo {
            let pad = 0.05 * (hi - lo);
            (lo - pad) as f64..(hi + pad) as f64
        } else {
            -1.0..1.0
        }
    };
    draw(path, (1500, 560), |root| {
        let (plots, legend) = root.split_horizontally(1260);
        let panels = plots.split_evenly((1, 3));
        for (panel, (u, v)) in panels.iter().zip([(0, 1), (0, 2), (1, 2)]) {
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("APE channels {u} and {v}"), (FONT, 18))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(44)
                .build_cartesian_2d(range(u), range(v))?;
            chart
                .configure_mesh()
                .x_desc(format!("channel {u}"))
                .y_desc(format!("channel {v}"))
                .label_style((FONT, 13))
                .draw()?;
            chart.draw_series(points.iter().map(|p| {
                Circle::new(
                    (p.embedding[u] as f64, p.embedding[v] as f64),
                    4,
                    colour_of(p.label).filled(),
                )
            }))?;
        }
        for (i, (label, name)) in results.label_names.iter().enumerate() {
            let y = 60 + 26 * i as i32;
            legend.draw(&Circle::new((14, y), 6, colour_of(*label).filled()))?;
            legend.draw(&Text::new(
                name.clone(),
                (28, y - 9),
                (FONT, 16).into_font(),
            ))?;
        }
        Ok(())
    })
}

/// One curve of [`log_curves`]: a label for the legend, an RGB colour and (x, y) points.
#[derive(Debug, Clone)]
pub struct Curve {
    pub label: String,
    pub colour: (u8, u8, u8),
    pub points: Vec<(f64, f64)>,
}

/// Curves over a logarithmic y axis, with a title, axis names and a legend (e.g. a training
/// run's loss terms against the step). Points with y ≤ 0 or not finite are left out.
pub fn log_curves(
    path: &Path,
    title: &str,
    [x_desc, y_desc]: [&str; 2],
    curves: &[Curve],
) -> Result<(), PlotError> {
    let shown = |p: &&(f64, f64)| p.1.is_finite() && p.1 > 0.0 && p.0.is_finite();
    let points = || curves.iter().flat_map(|c| c.points.iter().filter(shown));
    let (x_lo, x_hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.0), b.max(p.0))
    });
    let (y_lo, y_hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.1), b.max(p.1))
    });
    let (x_lo, x_hi) = if x_lo < x_hi {
        (x_lo, x_hi)
    } else {
        (0.0, 1.0)
    };
    let (y_lo, y_hi) = if y_lo.is_finite() && y_lo < y_hi {
        (y_lo / 1.2, y_hi * 1.2)
    } else {
        (0.1, 10.0)
    };
    draw(path, (900, 500), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_lo..x_hi, (y_lo..y_hi).log_scale())?;
        // Short tick labels: plotters would print a log axis' 0.6 as 0.6000000000000001.
        let short = |v: &f64| {
            let text = format!("{v:.3}");
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        };
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&short)
            .label_style((FONT, 14))
            .draw()?;
        for curve in curves {
            let (r, g, b) = curve.colour;
            let colour = RGBColor(r, g, b);
            chart
                .draw_series(LineSeries::new(
                    curve.points.iter().filter(shown).copied(),
                    colour.stroke_width(1),
                ))?
                .label(curve.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        Ok(())
    })
}
