//! Landmark retrieval in embedding space, its error in millimetres, and the model-free
//! body-box baseline of method.md.

use glam::DVec3;
use rayon::prelude::*;
use serde::Serialize;

use crate::ape_map::{ApeMap, Embedding};
use crate::geometry::WorldBox;
use crate::volume::Volume;

/// The world point of the map cell whose embedding is nearest to `query` (brute force), with
/// the embedding distance as a confidence.
pub fn nearest_cell(map: &ApeMap, query: Embedding) -> (DVec3, f32) {
    let cells = map.cells();
    let (index, d2) = cells
        .data()
        .par_iter()
        .enumerate()
        .map(|(i, e)| {
            let d2 = (0..3).map(|c| (e[c] - query[c]).powi(2)).sum::<f32>();
            (i, d2)
        })
        .reduce(
            || (0, f32::INFINITY),
            |a, b| {
                if b.1 < a.1 || (b.1 == a.1 && b.0 < a.0) {
                    b
                } else {
                    a
                }
            },
        );
    (cells.voxel_to_world(cells.voxel_of(index)), d2.sqrt())
}

/// The body's world box: voxels above `threshold_hu` (method.md: about −500 HU, or the window
/// floor for pre-windowed data, whose air and fat are both stored at the floor).
pub fn body_box(scan_hu: &Volume<f32>, threshold_hu: f32) -> Option<WorldBox> {
    let [nx, ny, nz] = scan_hu.shape();
    let mut lo = DVec3::INFINITY;
    let mut hi = DVec3::NEG_INFINITY;
    let data = scan_hu.data();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                if data[i + nx * (j + ny * k)] > threshold_hu {
                    let w = scan_hu.voxel_to_world([i, j, k]);
                    lo = lo.min(w);
                    hi = hi.max(w);
                }
            }
        }
    }
    lo.x.is_finite().then(|| WorldBox::new(lo, hi))
}

/// The baseline: a point's relative position in one body box, carried to another.
pub fn body_box_transfer(point: DVec3, from: &WorldBox, to: &WorldBox) -> DVec3 {
    let rel = (point - from.min) / from.size().max(DVec3::splat(1e-6));
    to.min + rel * to.size()
}

/// Radial and per-axis errors of a set of retrievals.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ErrorStats {
    pub count: usize,
    /// Mean radial error and its standard deviation, mm.
    pub mean: f64,
    pub std: f64,
    /// Mean absolute error along x (R–L), y (A–P), z (S–I), mm.
    pub per_axis: [f64; 3],
}

impl ErrorStats {
    /// From (retrieved, truth) pairs.
    pub fn from_pairs(pairs: &[(DVec3, DVec3)]) -> Self {
        let n = pairs.len();
        if n == 0 {
            return Self::default();
        }
        let radial: Vec<f64> = pairs.iter().map(|(a, b)| (*a - *b).length()).collect();
        let mean = radial.iter().sum::<f64>() / n as f64;
        let var = radial.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n as f64;
        let mut per_axis = [0.0; 3];
        for (a, b) in pairs {
            let d = (*a - *b).abs();
            for (axis, slot) in per_axis.iter_mut().enumerate() {
                *slot += d[axis] / n as f64;
            }
        }
        Self {
            count: n,
            mean,
            std: var.sqrt(),
            per_axis,
        }
    }
}

impl std::fmt::Display for ErrorStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} ± {:.1} mm (R–L {:.1}, A–P {:.1}, S–I {:.1}; n = {})",
            self.mean, self.std, self.per_axis[0], self.per_axis[1], self.per_axis[2], self.count
        )
    }
}
