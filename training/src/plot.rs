//! A PNG of the loss curves (log scale, smoothed): total in black, distance term in blue,
//! equivariance term in orange. Grid lines mark powers of ten and every tenth of the steps.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::train::StepLoss;

const WIDTH: u32 = 900;
const HEIGHT: u32 = 500;
const MARGIN: u32 = 30;

/// Reads `loss.csv` and writes `loss.png` beside it.
pub fn plot_csv(csv: &Path, png: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(csv)?;
    let losses: Vec<StepLoss> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some(StepLoss {
                step: f.first()?.parse().ok()?,
                total: f.get(1)?.parse().ok()?,
                distance: f.get(2)?.parse().ok()?,
                equivariance: f.get(3)?.parse().ok()?,
                axis: f.get(7).and_then(|v| v.parse().ok()).unwrap_or(0.0),
            })
        })
        .collect();
    plot(&losses, png)
}

pub fn plot(losses: &[StepLoss], png: &Path) -> anyhow::Result<()> {
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, Rgb([255, 255, 255]));
    if losses.is_empty() {
        img.save(png)?;
        return Ok(());
    }
    let series: [(Vec<f32>, Rgb<u8>); 3] = [
        (losses.iter().map(|l| l.total).collect(), Rgb([0, 0, 0])),
        (
            losses.iter().map(|l| l.distance).collect(),
            Rgb([40, 90, 200]),
        ),
        (
            losses.iter().map(|l| l.equivariance).collect(),
            Rgb([230, 120, 20]),
        ),
    ];
    let positive = |v: f32| v.is_finite() && v > 0.0;
    let (lo, hi) = series
        .iter()
        .flat_map(|(s, _)| s.iter().copied().filter(|v| positive(*v)))
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        img.save(png)?;
        return Ok(());
    }
    let (log_lo, log_hi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let plot_w = (WIDTH - 2 * MARGIN) as f32;
    let plot_h = (HEIGHT - 2 * MARGIN) as f32;
    let x_of = |i: usize| MARGIN as f32 + plot_w * i as f32 / (losses.len().max(2) - 1) as f32;
    let y_of = |v: f32| MARGIN as f32 + plot_h * (1.0 - (v.log10() - log_lo) / (log_hi - log_lo));
    let grey = Rgb([220, 220, 220]);
    let mut decade = log_lo;
    while decade <= log_hi {
        let y = y_of(10f32.powf(decade)) as u32;
        for x in MARGIN..WIDTH - MARGIN {
            img.put_pixel(x, y.min(HEIGHT - 1), grey);
        }
        decade += 1.0;
    }
    for tenth in 0..=10 {
        let x = (MARGIN as f32 + plot_w * tenth as f32 / 10.0) as u32;
        for y in MARGIN..HEIGHT - MARGIN {
            img.put_pixel(x.min(WIDTH - 1), y, grey);
        }
    }
    let window = (losses.len() / 200).max(1);
    for (values, colour) in &series {
        let mut previous: Option<(f32, f32)> = None;
        for i in 0..values.len() {
            let from = i.saturating_sub(window);
            let chunk: Vec<f32> = values[from..=i]
                .iter()
                .copied()
                .filter(|v| positive(*v))
                .collect();
            if chunk.is_empty() {
                continue;
            }
            let mean = chunk.iter().sum::<f32>() / chunk.len() as f32;
            let point = (x_of(i), y_of(mean));
            if let Some(p) = previous {
                draw_line(&mut img, p, point, *colour);
            }
            previous = Some(point);
        }
    }
    img.save(png)?;
    Ok(())
}

fn draw_line(img: &mut RgbImage, a: (f32, f32), b: (f32, f32), colour: Rgb<u8>) {
    let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
    for s in 0..=steps {
        let t = s as f32 / steps as f32;
        let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        if x >= 0.0 && y >= 0.0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, colour);
        }
    }
}
