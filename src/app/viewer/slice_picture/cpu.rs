//! A view's picture on the CPU: the scan's slice through window/level, with the APE map blended
//! over it (one channel through a colour map, or three as RGB) and optional iso-lines.

use ape::ape_map::ApeMap;
use ape::slicing::{SliceGeometry, WindowLevel, sample_slice};
use ape::volume::Volume;

use crate::viewer::state::{OverlayMode, OverlaySettings};

/// Embedding values mapped to the colour range: the output batch norm makes each channel
/// roughly zero-mean, unit-variance, so ±2.5 holds nearly all of it.
const EMBEDDING_RANGE: f32 = 2.5;

fn unit(v: f32) -> f32 {
    ((v + EMBEDDING_RANGE) / (2.0 * EMBEDDING_RANGE)).clamp(0.0, 1.0)
}

/// A perceptually ordered rainbow (blue → cyan → green → yellow → red) for one channel.
pub fn colour_map(t: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [0.19, 0.07, 0.55],
        [0.10, 0.60, 0.90],
        [0.20, 0.80, 0.30],
        [0.98, 0.85, 0.15],
        [0.85, 0.10, 0.10],
    ];
    let x = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let f = x - i as f32;
    let c = |k: usize| ((STOPS[i][k] * (1.0 - f) + STOPS[i + 1][k] * f) * 255.0).round() as u8;
    [c(0), c(1), c(2)]
}

/// RGBA pixels (row-major, rows down) of one view. Outside the scan: black.
pub fn render_view(
    scan: &Volume<f32>,
    map: Option<&ApeMap>,
    geometry: &SliceGeometry,
    window: WindowLevel,
    overlay: &OverlaySettings,
) -> Vec<u8> {
    let hu = sample_slice(scan, geometry);
    let (w, h) = (geometry.width, geometry.height);
    let mut rgba = Vec::with_capacity(w * h * 4);
    for v in hu.iter() {
        let g = v.map_or(0, |hu| window.grey(hu));
        rgba.extend_from_slice(&[g, g, g, 255]);
    }
    let (Some(map), true) = (map, overlay.mode != OverlayMode::Off) else {
        return rgba;
    };
    // Trilinear lookups dominate a frame: rows in parallel.
    let embeddings: Vec<Option<[f32; 3]>> = {
        use rayon::prelude::*;
        let mut out = vec![None; w * h];
        out.par_chunks_mut(w.max(1))
            .enumerate()
            .for_each(|(y, row)| {
                for (x, e) in row.iter_mut().enumerate() {
                    if hu[y * w + x].is_some() {
                        *e = map.embedding_at(geometry.world_at(x as f64, y as f64));
                    }
                }
            });
        out
    };
    let alpha = overlay.opacity.clamp(0.0, 1.0);
    for (i, e) in embeddings.iter().enumerate() {
        let Some(e) = e else { continue };
        let colour = match overlay.mode {
            OverlayMode::Channel(c) => colour_map(unit(e[c.min(2)])),
            _ => [
                (unit(e[0]) * 255.0) as u8,
                (unit(e[1]) * 255.0) as u8,
                (unit(e[2]) * 255.0) as u8,
            ],
        };
        for k in 0..3 {
            let base = rgba[i * 4 + k] as f32;
            rgba[i * 4 + k] = (base * (1.0 - alpha) + colour[k] as f32 * alpha).round() as u8;
        }
    }
    if overlay.isolines && overlay.isoline_step > 0.0 {
        let channels: Vec<usize> = match overlay.mode {
            OverlayMode::Channel(c) => vec![c.min(2)],
            _ => vec![0, 1, 2],
        };
        let level = |i: usize, c: usize| {
            embeddings[i].map(|e| (e[c] / overlay.isoline_step).floor() as i32)
        };
        for y in 1..h {
            for x in 1..w {
                let i = y * w + x;
                let crosses = channels.iter().any(|&c| {
                    let here = level(i, c);
                    here.is_some()
                        && ((level(i - 1, c).is_some() && level(i - 1, c) != here)
                            || (level(i - w, c).is_some() && level(i - w, c) != here))
                });
                if crosses {
                    rgba[i * 4..i * 4 + 3].copy_from_slice(&[255, 255, 255]);
                }
            }
        }
    }
    rgba
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_map_runs_from_blue_to_red() {
        let lo = colour_map(0.0);
        let hi = colour_map(1.0);
        assert!(lo[2] > lo[0], "{lo:?}");
        assert!(hi[0] > hi[2], "{hi:?}");
        assert_eq!(colour_map(-1.0), lo);
    }
}
