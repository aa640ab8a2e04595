//! Resampling volumes onto other grids: linear for images, nearest for label maps.

use glam::DVec3;
use rayon::prelude::*;

use crate::error::GeometryError;
use crate::geometry::Affine;
use crate::volume::Volume;

/// The largest grid a resampling may create (2^31 voxels: 8 GiB of f32).
pub const MAX_RESAMPLED_VOXELS: u64 = 1 << 31;

/// The target grid for resampling `shape` voxels under `affine` to `spacing` mm, covering the
/// same field of view (the outer voxel faces stay put, as PyTorch's `align_corners=False`).
pub fn grid_with_spacing(
    shape: [usize; 3],
    affine: &Affine,
    spacing: DVec3,
) -> Result<([usize; 3], Affine), GeometryError> {
    if !(spacing.is_finite() && spacing.cmpgt(DVec3::ZERO).all()) {
        return Err(GeometryError::BadSpacing(spacing.to_array()));
    }
    let old = affine.spacing();
    let mut new_shape = [0usize; 3];
    let mut exact = spacing;
    for axis in 0..3 {
        let extent = shape[axis] as f64 * old[axis];
        let n = (extent / spacing[axis]).round().max(1.0);
        if n > MAX_RESAMPLED_VOXELS as f64 {
            return Err(GeometryError::TooLarge {
                voxels: u64::MAX,
                limit: MAX_RESAMPLED_VOXELS,
            });
        }
        new_shape[axis] = n as usize;
        // Rounding the count changes the spacing slightly, so the extent is kept exactly.
        exact[axis] = extent / n;
    }
    let voxels = voxel_count(new_shape);
    if voxels > MAX_RESAMPLED_VOXELS {
        return Err(GeometryError::TooLarge {
            voxels,
            limit: MAX_RESAMPLED_VOXELS,
        });
    }
    Ok((new_shape, affine.with_spacing(exact)?))
}

/// Resample an image to a voxel spacing, trilinearly, keeping its orientation and field of view.
pub fn resample_linear_to_spacing(
    src: &Volume<f32>,
    spacing: DVec3,
) -> Result<Volume<f32>, GeometryError> {
    let (shape, affine) = grid_with_spacing(src.shape(), src.affine(), spacing)?;
    resample_linear_onto(src, shape, affine, 0.0)
}

/// Resample a label map to a voxel spacing, taking the nearest voxel.
pub fn resample_nearest_to_spacing<T: Copy + Send + Sync>(
    src: &Volume<T>,
    spacing: DVec3,
    fill: T,
) -> Result<Volume<T>, GeometryError> {
    let (shape, affine) = grid_with_spacing(src.shape(), src.affine(), spacing)?;
    resample_nearest_onto(src, shape, affine, fill)
}

/// Voxel values that can be interpolated linearly: intensities and embeddings.
pub trait Interpolate: Copy + Send + Sync {
    fn lerp(a: Self, b: Self, t: f32) -> Self;
}

impl Interpolate for f32 {
    #[inline]
    fn lerp(a: f32, b: f32, t: f32) -> f32 {
        a + (b - a) * t
    }
}

impl<const N: usize> Interpolate for [f32; N] {
    #[inline]
    fn lerp(a: Self, b: Self, t: f32) -> Self {
        std::array::from_fn(|c| a[c] + (b[c] - a[c]) * t)
    }
}

/// Trilinear value at a continuous voxel index, edges clamped; `None` farther than half a voxel
/// outside the grid.
pub fn sample_linear<T: Interpolate>(volume: &Volume<T>, voxel: DVec3) -> Option<T> {
    let [nx, ny, nz] = volume.shape();
    let upper = DVec3::new(nx as f64 - 0.5, ny as f64 - 0.5, nz as f64 - 0.5);
    if !(voxel.cmpge(DVec3::splat(-0.5)).all() && voxel.cmple(upper).all()) {
        return None;
    }
    Some(trilinear(volume.data(), [nx, ny, nz], voxel))
}

#[inline]
fn trilinear<T: Interpolate>(data: &[T], [nx, ny, nz]: [usize; 3], c: DVec3) -> T {
    let (x0, x1, fx) = axis_weights(c.x, nx);
    let (y0, y1, fy) = axis_weights(c.y, ny);
    let (z0, z1, fz) = axis_weights(c.z, nz);
    let at = |i: usize, j: usize, k: usize| data[i + nx * (j + ny * k)];
    let c00 = T::lerp(at(x0, y0, z0), at(x1, y0, z0), fx);
    let c10 = T::lerp(at(x0, y1, z0), at(x1, y1, z0), fx);
    let c01 = T::lerp(at(x0, y0, z1), at(x1, y0, z1), fx);
    let c11 = T::lerp(at(x0, y1, z1), at(x1, y1, z1), fx);
    T::lerp(T::lerp(c00, c10, fy), T::lerp(c01, c11, fy), fz)
}

/// Resample an image (or embedding map) onto any grid, any orientation, by trilinear
/// interpolation. Points farther than half a voxel outside the source grid get `fill`.
pub fn resample_linear_onto<T: Interpolate>(
    src: &Volume<T>,
    shape: [usize; 3],
    affine: Affine,
    fill: T,
) -> Result<Volume<T>, GeometryError> {
    let dims = src.shape();
    let data = src.data();
    if let Some(taps) = SeparableTaps::new(src.affine(), dims, shape, &affine)? {
        return taps.resample(data, shape, affine, fill);
    }
    resample_with(src.affine(), dims, shape, affine, fill, |c| {
        trilinear(data, dims, c)
    })
}

/// Taps of a resampling whose target axes each run along one source axis (any order, either
/// sign): scans and crops are resampled onto grids aligned with them, and then each voxel's
/// weights and neighbours come from three small per-axis tables instead of an affine
/// transform, bounds test and floor per voxel. The values equal [`trilinear`]'s up to the
/// rounding of the source coordinates.
struct SeparableTaps {
    /// Per target axis: the source axis it runs along.
    source_axis: [usize; 3],
    /// Per target axis and index: the two source neighbours (as offsets into the source data),
    /// the weight of the upper one, or `None` farther than half a voxel outside the source.
    taps: [Vec<Option<(usize, usize, f32)>>; 3],
}

impl SeparableTaps {
    /// `None` when the target axes are not aligned with the source's within 1e-6 voxel over
    /// the whole grid.
    fn new(
        src_affine: &Affine,
        src_shape: [usize; 3],
        shape: [usize; 3],
        affine: &Affine,
    ) -> Result<Option<Self>, GeometryError> {
        let (origin, steps) = target_in_source(src_affine, shape, affine)?;
        let mut source_axis = [0usize; 3];
        for (t, step) in steps.iter().enumerate() {
            let step = step.to_array();
            let main = (0..3)
                .max_by(|&a, &b| step[a].abs().total_cmp(&step[b].abs()))
                .unwrap_or(0);
            // What the other components would add up to across the grid, in source voxels.
            let off: f64 = (0..3).filter(|&a| a != main).map(|a| step[a].abs()).sum();
            if off * shape[t] as f64 > 1e-6 || source_axis[..t].contains(&main) {
                return Ok(None);
            }
            source_axis[t] = main;
        }
        let strides = [1, src_shape[0], src_shape[0] * src_shape[1]];
        let taps = [0, 1, 2].map(|t| {
            let a = source_axis[t];
            let (n, step, start) = (src_shape[a], steps[t][a], origin[a]);
            (0..shape[t])
                .map(|i| {
                    let v = start + step * i as f64;
                    // The tolerance of `resample_with`: grids sharing the outer faces are
                    // covered.
                    if !(v >= -0.5 - 1e-9 && v <= n as f64 - 0.5 + 1e-9) {
                        return None;
                    }
                    let (lo, hi, w) = axis_weights(v, n);
                    Some((lo * strides[a], hi * strides[a], w))
                })
                .collect()
        });
        Ok(Some(Self { source_axis, taps }))
    }

    fn resample<T: Interpolate>(
        &self,
        data: &[T],
        shape: [usize; 3],
        affine: Affine,
        fill: T,
    ) -> Result<Volume<T>, GeometryError> {
        let [nx, ny, _] = shape;
        // Which target axis runs along source x, y and z: the lerps go in source order, as in
        // `trilinear`.
        let mut target_of = [0usize; 3];
        for (t, &a) in self.source_axis.iter().enumerate() {
            target_of[a] = t;
        }
        let mut out = vec![fill; nx * ny * shape[2]];
        out.par_chunks_mut(nx * ny)
            .enumerate()
            .for_each(|(k, slice)| {
                let Some(tk) = self.taps[2][k] else { return };
                for (j, row) in slice.chunks_exact_mut(nx).enumerate() {
                    let Some(tj) = self.taps[1][j] else { continue };
                    for (out, ti) in row.iter_mut().zip(&self.taps[0]) {
                        let Some(ti) = *ti else { continue };
                        let by_target = [ti, tj, tk];
                        let (x0, x1, fx) = by_target[target_of[0]];
                        let (y0, y1, fy) = by_target[target_of[1]];
                        let (z0, z1, fz) = by_target[target_of[2]];
                        let c00 = T::lerp(data[x0 + y0 + z0], data[x1 + y0 + z0], fx);
                        let c10 = T::lerp(data[x0 + y1 + z0], data[x1 + y1 + z0], fx);
                        let c01 = T::lerp(data[x0 + y0 + z1], data[x1 + y0 + z1], fx);
                        let c11 = T::lerp(data[x0 + y1 + z1], data[x1 + y1 + z1], fx);
                        *out = T::lerp(T::lerp(c00, c10, fy), T::lerp(c01, c11, fy), fz);
                    }
                }
            });
        Volume::new(out, shape, affine)
    }
}

/// Resample a label map onto any grid by taking the nearest source voxel.
pub fn resample_nearest_onto<T: Copy + Send + Sync>(
    src: &Volume<T>,
    shape: [usize; 3],
    affine: Affine,
    fill: T,
) -> Result<Volume<T>, GeometryError> {
    let [nx, ny, nz] = src.shape();
    let data = src.data();
    resample_with(src.affine(), src.shape(), shape, affine, fill, |c| {
        let near = |v: f64, n: usize| (v.round().max(0.0) as usize).min(n - 1);
        data[near(c.x, nx) + nx * (near(c.y, ny) + ny * near(c.z, nz))]
    })
}

/// Number of voxels of a shape, saturating instead of overflowing.
fn voxel_count(shape: [usize; 3]) -> u64 {
    shape.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64))
}

/// Sample index and weight of a coordinate already known to lie within [-0.5, n-0.5].
#[inline]
fn axis_weights(v: f64, n: usize) -> (usize, usize, f32) {
    let v = v.clamp(0.0, (n - 1) as f64);
    // v ≥ 0, so truncation is the floor (and no libm call: `floor` is not an instruction on
    // baseline x86-64).
    let i0 = v as usize;
    let lo = i0 as f64;
    let i1 = (i0 + 1).min(n - 1);
    (i0, i1, (v - lo) as f32)
}

/// Where the target grid lies in source voxels: its first voxel and one step vector per
/// target axis (target voxel → source voxel is itself affine); refuses empty or oversized
/// grids.
fn target_in_source(
    src_affine: &Affine,
    shape: [usize; 3],
    affine: &Affine,
) -> Result<(DVec3, [DVec3; 3]), GeometryError> {
    let voxels = voxel_count(shape);
    if voxels > MAX_RESAMPLED_VOXELS {
        return Err(GeometryError::TooLarge {
            voxels,
            limit: MAX_RESAMPLED_VOXELS,
        });
    }
    if shape.contains(&0) {
        return Err(GeometryError::EmptyShape(shape));
    }
    let origin = src_affine.to_voxel(affine.origin());
    let steps =
        [0, 1, 2].map(|a| src_affine.to_voxel(affine.origin() + affine.axis_step(a)) - origin);
    Ok((origin, steps))
}

/// Walks every voxel of the target grid, in parallel over slices, and calls `sample` with the
/// continuous source voxel index of its centre (only for points inside the source's extent).
fn resample_with<T: Copy + Send + Sync>(
    src_affine: &Affine,
    src_shape: [usize; 3],
    shape: [usize; 3],
    affine: Affine,
    fill: T,
    sample: impl Fn(DVec3) -> T + Sync,
) -> Result<Volume<T>, GeometryError> {
    let (origin, steps) = target_in_source(src_affine, shape, &affine)?;
    let upper = DVec3::new(
        src_shape[0] as f64 - 0.5,
        src_shape[1] as f64 - 0.5,
        src_shape[2] as f64 - 0.5,
    );
    let [nx, ny, _] = shape;
    let mut data = vec![fill; voxel_count(shape) as usize];
    data.par_chunks_mut(nx * ny)
        .enumerate()
        .for_each(|(k, slice)| {
            for j in 0..ny {
                let row = origin + steps[1] * j as f64 + steps[2] * k as f64;
                for (i, out) in slice[j * nx..(j + 1) * nx].iter_mut().enumerate() {
                    let c = row + steps[0] * i as f64;
                    // Tolerance so that grids sharing the source's outer faces are fully covered.
                    if c.cmpge(DVec3::splat(-0.5 - 1e-9)).all() && c.cmple(upper + 1e-9).all() {
                        *out = sample(c);
                    }
                }
            }
        });
    Volume::new(data, shape, affine)
}

#[cfg(test)]
mod tests {
    use glam::DMat3;

    use super::*;

    fn linear_ramp(shape: [usize; 3], spacing: DVec3) -> Volume<f32> {
        let affine = Affine::from_spacing(spacing, DVec3::new(-3.0, 4.0, 10.0)).unwrap();
        Volume::from_fn(shape, affine, |i, j, k| {
            let w = affine.to_world(DVec3::new(i as f64, j as f64, k as f64));
            (w.x + 2.0 * w.y - 0.5 * w.z) as f32
        })
        .unwrap()
    }

    #[test]
    fn linear_resampling_reproduces_a_linear_field() {
        let src = linear_ramp([20, 18, 12], DVec3::new(1.0, 1.5, 3.0));
        let out = resample_linear_to_spacing(&src, DVec3::new(2.0, 0.75, 1.0)).unwrap();
        assert_eq!(out.shape(), [10, 36, 36]);
        // Inside the region covered by voxel centres, trilinear interpolation is exact.
        let inner = src.centre_bounds();
        for (index, &v) in out.data().iter().enumerate() {
            let w = out.voxel_to_world(out.voxel_of(index));
            if inner.contains(w) {
                let expected = w.x + 2.0 * w.y - 0.5 * w.z;
                assert!(
                    (v as f64 - expected).abs() < 1e-3,
                    "{v} vs {expected} at {w}"
                );
            }
        }
        assert!((out.world_bounds().min - src.world_bounds().min).length() < 1e-9);
        assert!((out.world_bounds().max - src.world_bounds().max).length() < 1e-9);
    }

    /// The general path, which the separable one must equal.
    fn general_linear<T: Interpolate>(
        src: &Volume<T>,
        shape: [usize; 3],
        affine: Affine,
        fill: T,
    ) -> Volume<T> {
        let dims = src.shape();
        resample_with(src.affine(), dims, shape, affine, fill, |c| {
            trilinear(src.data(), dims, c)
        })
        .unwrap()
    }

    #[test]
    fn aligned_grids_take_the_separable_path_with_the_general_paths_values() {
        // A scan stored with permuted and flipped axes (as DICOM-derived files are), values
        // that are not linear, and target grids that reach past its faces.
        let linear = DMat3::from_cols(
            DVec3::new(0.0, -1.5, 0.0),
            DVec3::new(-0.8, 0.0, 0.0),
            DVec3::new(0.0, 0.0, 2.5),
        );
        let src_affine = Affine::new(linear, DVec3::new(10.0, 20.0, -5.0)).unwrap();
        let src = Volume::from_fn([13, 11, 7], src_affine, |i, j, k| {
            ((i * 7 + j * 13 + k * 29) % 17) as f32 + 0.25 * (i as f32).sin()
        })
        .unwrap();
        let (ras_shape, ras_affine) =
            crate::volume::closest_ras_grid(src.shape(), src.affine()).unwrap();
        let grids = [
            (ras_shape, ras_affine),
            grid_with_spacing(ras_shape, &ras_affine, DVec3::new(0.7, 2.0, 1.1)).unwrap(),
            (
                [30, 9, 12],
                Affine::from_spacing(DVec3::new(0.5, 2.1, 1.3), DVec3::new(-2.0, 2.0, -8.0))
                    .unwrap(),
            ),
        ];
        for (shape, affine) in grids {
            assert!(
                SeparableTaps::new(src.affine(), src.shape(), shape, &affine)
                    .unwrap()
                    .is_some()
            );
            let fast = resample_linear_onto(&src, shape, affine, -1.0).unwrap();
            let general = general_linear(&src, shape, affine, -1.0);
            assert_eq!(fast.affine(), general.affine());
            let filled = general.data().iter().filter(|&&v| v == -1.0).count();
            assert_eq!(filled, fast.data().iter().filter(|&&v| v == -1.0).count());
            for (a, b) in fast.data().iter().zip(general.data()) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        // Channels too (embedding maps).
        let map = src.map(|&v| [v, -v, 2.0 * v]);
        let (shape, affine) = grids[1];
        let fast = resample_linear_onto(&map, shape, affine, [0.0; 3]).unwrap();
        let general = general_linear(&map, shape, affine, [0.0; 3]);
        for (a, b) in fast.data().iter().zip(general.data()) {
            assert!((0..3).all(|c| (a[c] - b[c]).abs() < 1e-5));
        }
    }

    #[test]
    fn oblique_grids_take_the_general_path() {
        let src = linear_ramp([12, 12, 12], DVec3::ONE);
        let tilt = glam::DMat3::from_rotation_z(0.01);
        let affine = Affine::new(tilt, src.affine().origin()).unwrap();
        assert!(
            SeparableTaps::new(src.affine(), src.shape(), [12, 12, 12], &affine)
                .unwrap()
                .is_none()
        );
        // Linear fields stay exact on it.
        let out = resample_linear_onto(&src, [12, 12, 12], affine, 0.0).unwrap();
        let w = out.voxel_to_world([5, 6, 7]);
        let expected = w.x + 2.0 * w.y - 0.5 * w.z;
        assert!((*out.get(5, 6, 7).unwrap() as f64 - expected).abs() < 1e-3);
    }

    #[test]
    fn nearest_resampling_keeps_labels() {
        let affine = Affine::from_spacing(DVec3::ONE, DVec3::ZERO).unwrap();
        let labels = Volume::from_fn([8, 8, 8], affine, |i, _, _| (i / 4) as u16 + 1).unwrap();
        let out = resample_nearest_to_spacing(&labels, DVec3::splat(0.5), 0).unwrap();
        assert_eq!(out.shape(), [16, 16, 16]);
        assert!(out.data().iter().all(|&l| l == 1 || l == 2));
        assert_eq!(out.get(7, 0, 0), Some(&1));
        assert_eq!(out.get(8, 0, 0), Some(&2));
    }

    #[test]
    fn absurd_spacings_are_refused() {
        let src = linear_ramp([4, 4, 4], DVec3::ONE);
        assert!(resample_linear_to_spacing(&src, DVec3::new(0.0, 1.0, 1.0)).is_err());
        assert!(resample_linear_to_spacing(&src, DVec3::splat(1e-6)).is_err());
    }
}
