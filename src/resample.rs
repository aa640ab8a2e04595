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
    resample_with(src.affine(), dims, shape, affine, fill, |c| {
        trilinear(data, dims, c)
    })
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
    // Target voxel → source voxel is itself affine: one step vector per target axis.
    let origin = src_affine.to_voxel(affine.origin());
    let steps =
        [0, 1, 2].map(|a| src_affine.to_voxel(affine.origin() + affine.axis_step(a)) - origin);
    let upper = DVec3::new(
        src_shape[0] as f64 - 0.5,
        src_shape[1] as f64 - 0.5,
        src_shape[2] as f64 - 0.5,
    );
    let [nx, ny, _] = shape;
    let mut data = vec![fill; voxels as usize];
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
