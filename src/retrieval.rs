//! Landmark retrieval in embedding space, its error in millimetres, and the model-free
//! body-box baseline of method.md.

use glam::DVec3;
use rayon::prelude::*;
use serde::Serialize;

use crate::ape_map::{ApeMap, Embedding};
use crate::geometry::WorldBox;
use crate::scan::Scan;
use crate::volume::Volume;

/// A retrieved point: where, and how far its embedding is from the query's (a confidence).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retrieved {
    pub world: DVec3,
    pub distance: f32,
}

/// A k-d tree over the embeddings of a map's cells, for fast nearest-embedding queries.
#[derive(Debug)]
pub struct MapIndex {
    tree: kiddo::ImmutableKdTree<f32, 3>,
    /// The map cell of each tree item, when only some cells are indexed.
    cells: Option<Vec<u32>>,
}

impl MapIndex {
    /// Every cell of the map.
    pub fn build(map: &ApeMap) -> Self {
        Self {
            tree: kiddo::ImmutableKdTree::new_from_slice(map.cells().data()),
            cells: None,
        }
    }

    /// Only the cells inside the body of the mapped scan: cells whose centre, sampled on the
    /// scan, is above its body threshold ([`Scan::is_body_at`], the body box's test). A
    /// landmark is anatomy, and the embeddings of air, table and padding, which training never
    /// asks to mean a position, only add false matches (on the held-out BTCV scans they made
    /// most of the errors above 100 mm). All cells if no cell is inside.
    pub fn build_in_body(map: &ApeMap, scan: &Scan) -> Self {
        Self::build_where(map, |world| scan.is_body_at(world))
    }

    /// Only the cells whose centre (world mm) satisfies `inside`; all cells if none does.
    pub fn build_where(map: &ApeMap, inside: impl Fn(DVec3) -> bool + Sync) -> Self {
        let cells = map.cells();
        let inside: Vec<u32> = (0..cells.data().len())
            .into_par_iter()
            .filter(|&i| inside(cells.voxel_to_world(cells.voxel_of(i))))
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        if inside.is_empty() {
            return Self::build(map);
        }
        let embeddings: Vec<[f32; 3]> = inside.iter().map(|&i| cells.data()[i as usize]).collect();
        Self {
            tree: kiddo::ImmutableKdTree::new_from_slice(&embeddings),
            cells: Some(inside),
        }
    }

    /// The map cell index of a tree item.
    fn cell_index(&self, item: u64) -> usize {
        match &self.cells {
            Some(cells) => cells.get(item as usize).map_or(0, |&c| c as usize),
            None => item as usize,
        }
    }

    /// The cell whose embedding is nearest to `query`, then refined below the cell size.
    pub fn retrieve(&self, map: &ApeMap, query: Embedding) -> Retrieved {
        let hit = self.tree.nearest_one::<kiddo::SquaredEuclidean>(&query);
        let cells = map.cells();
        let cell = cells.voxel_of(self.cell_index(hit.item));
        refine(map, cell, query)
    }

    /// The nearest cell only (no refinement): equals [`nearest_cell`] for an index of every cell.
    pub fn nearest_cell(&self, map: &ApeMap, query: Embedding) -> Retrieved {
        let hit = self.tree.nearest_one::<kiddo::SquaredEuclidean>(&query);
        let cells = map.cells();
        Retrieved {
            world: cells.voxel_to_world(cells.voxel_of(self.cell_index(hit.item))),
            distance: hit.distance.sqrt(),
        }
    }
}

/// Searches the trilinear map around `cell` for the point whose embedding is nearest to
/// `query`: retrieval finer than the 1/4-resolution grid. Coarse to fine: a half-cell lattice
/// over ±1 cell (125 samples), then 3×3×3 at a quarter and an eighth of a cell around the best.
pub fn refine(map: &ApeMap, cell: [usize; 3], query: Embedding) -> Retrieved {
    let cells = map.cells();
    let distance_at = |v: DVec3| {
        crate::resample::sample_linear(cells, v).map(|e| {
            (0..3)
                .map(|c| (e[c] - query[c]).powi(2))
                .sum::<f32>()
                .sqrt()
        })
    };
    let start = DVec3::new(cell[0] as f64, cell[1] as f64, cell[2] as f64);
    let mut best = (start, distance_at(start).unwrap_or(f32::INFINITY));
    for (step, reach) in [(0.5, 2), (0.25, 1), (0.125, 1)] {
        let centre = best.0;
        for dz in -reach..=reach {
            for dy in -reach..=reach {
                for dx in -reach..=reach {
                    let v = centre + DVec3::new(dx as f64, dy as f64, dz as f64) * step;
                    if let Some(d) = distance_at(v)
                        && d < best.1
                    {
                        best = (v, d);
                    }
                }
            }
        }
    }
    Retrieved {
        world: cells.affine().to_world(best.0),
        distance: best.1,
    }
}

/// A map with its index: one target of a query.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub map: &'a ApeMap,
    pub index: &'a MapIndex,
    /// The scan's intensities for [`crate::transfer::TransferMode::Refined`]; without them a
    /// refined transfer is a consensus one.
    pub image: Option<&'a crate::refine::PatchImage>,
}

impl Target<'_> {
    /// Where `point` of the scan mapped by `from` lies on this target: the world point whose
    /// embedding is nearest to the embedding there (`None` when `point` is outside `from`).
    pub fn locate(&self, from: &ApeMap, point: DVec3) -> Option<DVec3> {
        let e = from.embedding_at(point)?;
        Some(self.index.retrieve(self.map, e).world)
    }
}

/// Every query on every target, in parallel: `result[q][t]`.
pub fn retrieve_many(queries: &[Embedding], targets: &[Target<'_>]) -> Vec<Vec<Retrieved>> {
    queries
        .par_iter()
        .map(|q| {
            targets
                .par_iter()
                .map(|t| t.index.retrieve(t.map, *q))
                .collect()
        })
        .collect()
}

/// The world point of the map cell whose embedding is nearest to `query` (brute force), with
/// the embedding distance as a confidence. The oracle for [`MapIndex`].
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
