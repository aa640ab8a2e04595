//! `Volume<T>`: a 3-D grid of voxels placed in world space by its affine.

use glam::DVec3;

use crate::error::GeometryError;
use crate::geometry::{Affine, WorldBox};

/// A 3-D voxel grid in physical space.
///
/// Voxels are stored once, in NIfTI's on-disk order: `i` (the first voxel axis) fastest, then
/// `j`, then `k`. Which world direction each axis points to is the affine's business only.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    data: Vec<T>,
    shape: [usize; 3],
    affine: Affine,
}

impl<T> Volume<T> {
    pub fn new(data: Vec<T>, shape: [usize; 3], affine: Affine) -> Result<Self, GeometryError> {
        if shape.contains(&0) {
            return Err(GeometryError::EmptyShape(shape));
        }
        let expected = shape[0]
            .checked_mul(shape[1])
            .and_then(|n| n.checked_mul(shape[2]));
        if expected != Some(data.len()) {
            return Err(GeometryError::ShapeMismatch {
                len: data.len(),
                shape,
            });
        }
        Ok(Self {
            data,
            shape,
            affine,
        })
    }

    /// A volume of `shape` with every voxel computed by `f(i, j, k)`.
    pub fn from_fn(
        shape: [usize; 3],
        affine: Affine,
        mut f: impl FnMut(usize, usize, usize) -> T,
    ) -> Result<Self, GeometryError> {
        let mut data = Vec::with_capacity(shape.iter().product());
        for k in 0..shape[2] {
            for j in 0..shape[1] {
                for i in 0..shape[0] {
                    data.push(f(i, j, k));
                }
            }
        }
        Self::new(data, shape, affine)
    }

    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn affine(&self) -> &Affine {
        &self.affine
    }

    /// Voxel size along each voxel axis, in mm.
    pub fn spacing(&self) -> DVec3 {
        self.affine.spacing()
    }

    /// All voxels, `i` fastest.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// Index into `data()` of voxel (i, j, k). The caller keeps (i, j, k) inside the shape.
    #[inline]
    pub fn linear_index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.shape[0] * (j + self.shape[1] * k)
    }

    /// Voxel (i, j, k) from a linear index into `data()`.
    #[inline]
    pub fn voxel_of(&self, index: usize) -> [usize; 3] {
        let i = index % self.shape[0];
        let rest = index / self.shape[0];
        [i, rest % self.shape[1], rest / self.shape[1]]
    }

    pub fn get(&self, i: usize, j: usize, k: usize) -> Option<&T> {
        if i < self.shape[0] && j < self.shape[1] && k < self.shape[2] {
            self.data.get(self.linear_index(i, j, k))
        } else {
            None
        }
    }

    /// World point of the centre of voxel (i, j, k).
    pub fn voxel_to_world(&self, voxel: [usize; 3]) -> DVec3 {
        self.affine.to_world(DVec3::new(
            voxel[0] as f64,
            voxel[1] as f64,
            voxel[2] as f64,
        ))
    }

    /// Continuous voxel index of a world point (may lie outside the grid).
    pub fn world_to_voxel(&self, world: DVec3) -> DVec3 {
        self.affine.to_voxel(world)
    }

    /// The nearest voxel to a world point, if the point lies inside the grid's extent.
    pub fn nearest_voxel(&self, world: DVec3) -> Option<[usize; 3]> {
        let v = self.world_to_voxel(world).round();
        let inside = (0..3).all(|a| v[a] >= 0.0 && v[a] <= (self.shape[a] - 1) as f64);
        inside.then_some([v.x as usize, v.y as usize, v.z as usize])
    }

    /// The world box covered by the grid: the outer faces of its corner voxels.
    pub fn world_bounds(&self) -> WorldBox {
        self.box_of_voxel_range([0.0; 3], self.shape.map(|n| n as f64 - 1.0), 0.5)
    }

    /// The world box of the centres of the corner voxels.
    pub fn centre_bounds(&self) -> WorldBox {
        self.box_of_voxel_range([0.0; 3], self.shape.map(|n| n as f64 - 1.0), 0.0)
    }

    fn box_of_voxel_range(&self, lo: [f64; 3], hi: [f64; 3], pad: f64) -> WorldBox {
        let corners = (0..8).map(|c: usize| {
            let pick = |axis: usize| {
                if c >> axis & 1 == 0 {
                    lo[axis] - pad
                } else {
                    hi[axis] + pad
                }
            };
            self.affine.to_world(DVec3::new(pick(0), pick(1), pick(2)))
        });
        // Eight corners always exist.
        WorldBox::from_points(corners).unwrap_or(WorldBox::new(DVec3::ZERO, DVec3::ZERO))
    }

    /// Voxel-index ranges `[lo, hi)` per axis of the voxels a world box touches, clipped to the
    /// grid; `None` when the box misses the grid.
    pub fn voxel_range_of(&self, bbox: &WorldBox) -> Option<[std::ops::Range<usize>; 3]> {
        let corners = bbox.corners().map(|c| self.world_to_voxel(c));
        let mut ranges: [std::ops::Range<usize>; 3] = [0..0, 0..0, 0..0];
        for axis in 0..3 {
            let lo = corners
                .iter()
                .map(|c| c[axis])
                .fold(f64::INFINITY, f64::min);
            let hi = corners
                .iter()
                .map(|c| c[axis])
                .fold(f64::NEG_INFINITY, f64::max);
            let n = self.shape[axis] as f64;
            // A voxel is touched when its extent [v-0.5, v+0.5] meets [lo, hi].
            let first = (lo - 0.5).ceil().max(0.0);
            let last = (hi + 0.5).floor().min(n - 1.0);
            if first.is_nan() || last.is_nan() || first > last {
                return None;
            }
            ranges[axis] = first as usize..last as usize + 1;
        }
        Some(ranges)
    }

    /// A new volume of the same grid with every voxel mapped by `f`.
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> Volume<U> {
        Volume {
            data: self.data.iter().map(f).collect(),
            shape: self.shape,
            affine: self.affine,
        }
    }
}

impl<T: Copy> Volume<T> {
    /// The sub-volume of the voxels touched by a world box, with its own affine so that every
    /// voxel keeps its world position.
    pub fn crop_to_world_box(&self, bbox: &WorldBox) -> Result<Self, GeometryError> {
        let [ri, rj, rk] = self
            .voxel_range_of(bbox)
            .ok_or_else(|| GeometryError::OutsideVolume(bbox.to_string()))?;
        let shape = [ri.len(), rj.len(), rk.len()];
        let mut data = Vec::with_capacity(shape.iter().product());
        for k in rk.clone() {
            for j in rj.clone() {
                let row = self.linear_index(ri.start, j, k);
                data.extend_from_slice(&self.data[row..row + ri.len()]);
            }
        }
        let affine = self.affine.shifted([ri.start, rj.start, rk.start]);
        Self::new(data, shape, affine)
    }
}

impl<T: Copy> Volume<T> {
    /// The same voxels in another storage order: new axis `a` runs along old axis `order[a]`,
    /// reversed where `flip[a]`. The affine follows, so every voxel keeps its world position.
    pub fn reordered(&self, order: [usize; 3], flip: [bool; 3]) -> Result<Self, GeometryError> {
        let mut seen = [false; 3];
        for &a in &order {
            if a > 2 || std::mem::replace(&mut seen[a], true) {
                return Err(GeometryError::SingularAffine(format!(
                    "axis order {order:?} is not a permutation of 0, 1, 2"
                )));
            }
        }
        let old = self.shape;
        let shape = order.map(|a| old[a]);
        // Old voxel index of new voxel (0, 0, 0), and the old step per new axis.
        let mut start = [0usize; 3];
        let mut old_strides = [1isize, old[0] as isize, (old[0] * old[1]) as isize];
        old_strides = order.map(|a| old_strides[a]);
        let mut steps = [0isize; 3];
        for a in 0..3 {
            if flip[a] {
                start[order[a]] = old[order[a]] - 1;
                steps[a] = -old_strides[a];
            } else {
                steps[a] = old_strides[a];
            }
        }
        let base = self.linear_index(start[0], start[1], start[2]) as isize;
        let mut data = Vec::with_capacity(self.data.len());
        for k in 0..shape[2] as isize {
            for j in 0..shape[1] as isize {
                let row = base + j * steps[1] + k * steps[2];
                data.extend(
                    (0..shape[0] as isize).map(|i| self.data[(row + i * steps[0]) as usize]),
                );
            }
        }
        let linear = glam::DMat3::from_cols(
            self.affine.axis_step(order[0]) * if flip[0] { -1.0 } else { 1.0 },
            self.affine.axis_step(order[1]) * if flip[1] { -1.0 } else { 1.0 },
            self.affine.axis_step(order[2]) * if flip[2] { -1.0 } else { 1.0 },
        );
        let origin = self.voxel_to_world(start);
        Self::new(data, shape, Affine::new(linear, origin)?)
    }

    /// The same voxels stored in the order closest to RAS (axis codes R, A, S), as nibabel's
    /// `as_closest_canonical`: what slice views and the model want.
    pub fn to_closest_ras(&self) -> Result<Self, GeometryError> {
        let (order, flip) = closest_ras_order(&self.affine);
        self.reordered(order, flip)
    }
}

/// The axis order and flips that make a grid's axis codes R, A, S (see [`Volume::reordered`]).
pub fn closest_ras_order(affine: &Affine) -> ([usize; 3], [bool; 3]) {
    let mut order = [0usize, 1, 2];
    let mut flip = [false; 3];
    for (axis, code) in affine.axis_codes().iter().enumerate() {
        let (world, negative) = match code {
            'R' => (0, false),
            'L' => (0, true),
            'A' => (1, false),
            'P' => (1, true),
            'S' => (2, false),
            _ => (2, true),
        };
        order[world] = axis;
        flip[world] = negative;
    }
    (order, flip)
}

/// The grid (shape and affine) of the same field of view stored in the order closest to RAS,
/// without touching any voxel.
pub fn closest_ras_grid(
    shape: [usize; 3],
    affine: &Affine,
) -> Result<([usize; 3], Affine), GeometryError> {
    let (order, flip) = closest_ras_order(affine);
    let new_shape = order.map(|a| shape[a]);
    let mut start = glam::DVec3::ZERO;
    let mut columns = [glam::DVec3::ZERO; 3];
    for a in 0..3 {
        let step = affine.axis_step(order[a]);
        if flip[a] {
            start[order[a]] = (shape[order[a]] - 1) as f64;
            columns[a] = -step;
        } else {
            columns[a] = step;
        }
    }
    let linear = glam::DMat3::from_cols(columns[0], columns[1], columns[2]);
    Ok((new_shape, Affine::new(linear, affine.to_world(start))?))
}

impl Volume<f32> {
    /// Smallest and largest voxel value (NaN-free volumes only, as all read volumes are).
    pub fn value_range(&self) -> (f32, f32) {
        self.data
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Volume<f32> {
        let affine =
            Affine::from_spacing(DVec3::new(1.0, 2.0, 3.0), DVec3::new(10.0, 0.0, -5.0)).unwrap();
        Volume::from_fn([4, 5, 6], affine, |i, j, k| (i + 10 * j + 100 * k) as f32).unwrap()
    }

    #[test]
    fn indexing_is_i_fastest() {
        let v = ramp();
        assert_eq!(v.get(1, 2, 3), Some(&321.0));
        assert_eq!(v.voxel_of(v.linear_index(3, 4, 5)), [3, 4, 5]);
        assert_eq!(v.get(4, 0, 0), None);
    }

    #[test]
    fn crop_keeps_world_positions() {
        let v = ramp();
        let bbox = WorldBox::new(DVec3::new(11.0, 2.0, -2.0), DVec3::new(12.0, 6.0, 4.0));
        let c = v.crop_to_world_box(&bbox).unwrap();
        assert_eq!(c.shape(), [2, 3, 3]);
        for k in 0..3 {
            for j in 0..3 {
                for i in 0..2 {
                    let w = c.voxel_to_world([i, j, k]);
                    let src = v.nearest_voxel(w).unwrap();
                    assert_eq!(c.get(i, j, k), v.get(src[0], src[1], src[2]));
                }
            }
        }
        let far = WorldBox::new(DVec3::splat(1000.0), DVec3::splat(1001.0));
        assert!(v.crop_to_world_box(&far).is_err());
    }

    #[test]
    fn reordering_keeps_every_voxel_in_place() {
        let v = ramp();
        for order in [[0, 1, 2], [2, 0, 1], [1, 2, 0], [2, 1, 0]] {
            for flip in [
                [false, false, false],
                [true, false, true],
                [false, true, false],
            ] {
                let r = v.reordered(order, flip).unwrap();
                for (index, value) in r.data().iter().enumerate() {
                    let w = r.voxel_to_world(r.voxel_of(index));
                    let [i, j, k] = v.nearest_voxel(w).unwrap();
                    assert_eq!(v.get(i, j, k), Some(value));
                }
            }
        }
        let ras = v
            .reordered([1, 2, 0], [true, false, true])
            .unwrap()
            .to_closest_ras()
            .unwrap();
        assert_eq!(ras, v);
    }

    #[test]
    fn shape_must_match_data() {
        let a = Affine::from_spacing(DVec3::ONE, DVec3::ZERO).unwrap();
        assert!(Volume::new(vec![0u8; 5], [2, 2, 2], a).is_err());
        assert!(Volume::new(Vec::<u8>::new(), [0, 2, 2], a).is_err());
    }
}
