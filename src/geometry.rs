//! Physical space: the voxel→world affine (RAS, millimetres), axis codes and world boxes.
//!
//! World coordinates follow NIfTI's RAS+ convention: +x toward the patient's Right, +y Anterior,
//! +z Superior. Voxel indices are continuous `DVec3`s whose integer values are voxel centres;
//! they never leave the library's public functions without their affine.

use glam::{DMat3, DVec3};
use serde::{Deserialize, Serialize};

use crate::error::GeometryError;

/// An invertible map from voxel indices (i, j, k) to world RAS millimetres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Affine {
    /// Columns: the world step of one voxel along i, j and k.
    linear: DMat3,
    /// World position of voxel (0, 0, 0).
    origin: DVec3,
    inverse_linear: DMat3,
}

impl Affine {
    /// An affine from its 3×3 linear part (columns = voxel axes) and the world origin.
    pub fn new(linear: DMat3, origin: DVec3) -> Result<Self, GeometryError> {
        let det = linear.determinant();
        let finite = linear.to_cols_array().iter().all(|v| v.is_finite()) && origin.is_finite();
        // Relative to the product of column lengths, so that tiny voxels are not "singular".
        let scale = linear.x_axis.length() * linear.y_axis.length() * linear.z_axis.length();
        let well_conditioned = det.abs() > 1e-9 * scale && scale > 0.0;
        if !finite || !well_conditioned {
            return Err(GeometryError::SingularAffine(format!(
                "columns {:?} {:?} {:?}, origin {:?}",
                linear.x_axis.to_array(),
                linear.y_axis.to_array(),
                linear.z_axis.to_array(),
                origin.to_array()
            )));
        }
        Ok(Self {
            linear,
            origin,
            inverse_linear: linear.inverse(),
        })
    }

    /// An axis-aligned affine with the given spacing: voxel axes along +x, +y, +z.
    pub fn from_spacing(spacing: DVec3, origin: DVec3) -> Result<Self, GeometryError> {
        Self::new(DMat3::from_diagonal(spacing), origin)
    }

    /// From the first three rows of a 4×4 matrix, as stored in NIfTI's sform.
    pub fn from_rows(rows: [[f64; 4]; 3]) -> Result<Self, GeometryError> {
        let linear = DMat3::from_cols(
            DVec3::new(rows[0][0], rows[1][0], rows[2][0]),
            DVec3::new(rows[0][1], rows[1][1], rows[2][1]),
            DVec3::new(rows[0][2], rows[1][2], rows[2][2]),
        );
        let origin = DVec3::new(rows[0][3], rows[1][3], rows[2][3]);
        Self::new(linear, origin)
    }

    /// The first three rows of the 4×4 matrix.
    pub fn to_rows(&self) -> [[f64; 4]; 3] {
        let m = self.linear;
        let o = self.origin;
        [
            [m.x_axis.x, m.y_axis.x, m.z_axis.x, o.x],
            [m.x_axis.y, m.y_axis.y, m.z_axis.y, o.y],
            [m.x_axis.z, m.y_axis.z, m.z_axis.z, o.z],
        ]
    }

    pub fn linear(&self) -> DMat3 {
        self.linear
    }

    pub fn origin(&self) -> DVec3 {
        self.origin
    }

    /// World point (mm, RAS) of a continuous voxel index.
    #[inline]
    pub fn to_world(&self, voxel: DVec3) -> DVec3 {
        self.linear * voxel + self.origin
    }

    /// Continuous voxel index of a world point.
    #[inline]
    pub fn to_voxel(&self, world: DVec3) -> DVec3 {
        self.inverse_linear * (world - self.origin)
    }

    /// World step of one voxel along each voxel axis.
    pub fn axis_step(&self, axis: usize) -> DVec3 {
        self.linear.col(axis)
    }

    /// Voxel size along each voxel axis, in mm.
    pub fn spacing(&self) -> DVec3 {
        DVec3::new(
            self.linear.x_axis.length(),
            self.linear.y_axis.length(),
            self.linear.z_axis.length(),
        )
    }

    /// Unit direction of each voxel axis in world space (the columns, normalised).
    pub fn directions(&self) -> DMat3 {
        let s = self.spacing();
        DMat3::from_cols(
            self.linear.x_axis / s.x,
            self.linear.y_axis / s.y,
            self.linear.z_axis / s.z,
        )
    }

    /// The same orientation with another spacing, keeping the world position of the
    /// outer corner of voxel (0, 0, 0), so that a resampled grid covers the same field of view.
    pub fn with_spacing(&self, spacing: DVec3) -> Result<Self, GeometryError> {
        let directions = self.directions();
        let linear = DMat3::from_cols(
            directions.x_axis * spacing.x,
            directions.y_axis * spacing.y,
            directions.z_axis * spacing.z,
        );
        let corner = self.to_world(DVec3::splat(-0.5));
        let origin = corner + linear * DVec3::splat(0.5);
        Self::new(linear, origin)
    }

    /// The same orientation and spacing, with voxel `offset` as the new voxel (0, 0, 0).
    pub fn shifted(&self, offset: [usize; 3]) -> Self {
        let origin = self.to_world(DVec3::new(
            offset[0] as f64,
            offset[1] as f64,
            offset[2] as f64,
        ));
        Self { origin, ..*self }
    }

    /// The direction each voxel axis points toward, as nibabel's `aff2axcodes`: for each voxel
    /// axis the world axis it is closest to, with `R`/`L`, `A`/`P`, `S`/`I` for its sign.
    pub fn axis_codes(&self) -> [char; 3] {
        let mut codes = ['?'; 3];
        let mut used = [false; 3];
        // Assign the most clearly aligned voxel axes first so that oblique scans stay a permutation.
        let mut order: Vec<(usize, usize, f64)> = Vec::with_capacity(9);
        for axis in 0..3 {
            let column = self.linear.col(axis).normalize_or_zero();
            for world in 0..3 {
                order.push((axis, world, column[world]));
            }
        }
        order.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
        let mut assigned = [false; 3];
        for (axis, world, value) in order {
            if assigned[axis] || used[world] {
                continue;
            }
            assigned[axis] = true;
            used[world] = true;
            let letters = [('R', 'L'), ('A', 'P'), ('S', 'I')][world];
            codes[axis] = if value >= 0.0 { letters.0 } else { letters.1 };
        }
        codes
    }

    /// Whether each voxel axis is parallel to a world axis (within `tolerance` in cosine).
    pub fn is_oblique(&self, tolerance: f64) -> bool {
        let d = self.directions();
        (0..3).any(|axis| d.col(axis).abs().max_element() < 1.0 - tolerance)
    }
}

/// An axis-aligned box in world space (mm, RAS). `min` ≤ `max` on every axis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WorldBox {
    pub min: DVec3,
    pub max: DVec3,
}

impl WorldBox {
    pub fn new(a: DVec3, b: DVec3) -> Self {
        Self {
            min: a.min(b),
            max: a.max(b),
        }
    }

    /// The smallest box holding every point; `None` for no points.
    pub fn from_points(points: impl IntoIterator<Item = DVec3>) -> Option<Self> {
        let mut points = points.into_iter();
        let first = points.next()?;
        Some(points.fold(Self::new(first, first), |b, p| Self {
            min: b.min.min(p),
            max: b.max.max(p),
        }))
    }

    pub fn size(&self) -> DVec3 {
        (self.max - self.min).max(DVec3::ZERO)
    }

    pub fn centre(&self) -> DVec3 {
        (self.min + self.max) * 0.5
    }

    /// Volume in mm³.
    pub fn volume(&self) -> f64 {
        let s = self.size();
        s.x * s.y * s.z
    }

    pub fn intersection(&self, other: &Self) -> Option<Self> {
        let min = self.min.max(other.min);
        let max = self.max.min(other.max);
        (min.cmple(max).all()).then_some(Self { min, max })
    }

    /// Intersection over union; 0 for disjoint boxes.
    pub fn iou(&self, other: &Self) -> f64 {
        let inter = self.intersection(other).map_or(0.0, |b| b.volume());
        let union = self.volume() + other.volume() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// Scaled about its centre by `factor` along every axis.
    pub fn scaled(&self, factor: f64) -> Self {
        let c = self.centre();
        let half = self.size() * 0.5 * factor;
        Self::new(c - half, c + half)
    }

    pub fn contains(&self, p: DVec3) -> bool {
        p.cmpge(self.min).all() && p.cmple(self.max).all()
    }

    /// The eight corners.
    pub fn corners(&self) -> [DVec3; 8] {
        let (a, b) = (self.min, self.max);
        [
            DVec3::new(a.x, a.y, a.z),
            DVec3::new(b.x, a.y, a.z),
            DVec3::new(a.x, b.y, a.z),
            DVec3::new(b.x, b.y, a.z),
            DVec3::new(a.x, a.y, b.z),
            DVec3::new(b.x, a.y, b.z),
            DVec3::new(a.x, b.y, b.z),
            DVec3::new(b.x, b.y, b.z),
        ]
    }
}

impl std::fmt::Display for WorldBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "x {:.1}…{:.1}, y {:.1}…{:.1}, z {:.1}…{:.1} mm",
            self.min.x, self.max.x, self.min.y, self.max.y, self.min.z, self.max.z
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_codes_follow_the_columns() {
        let a = Affine::new(
            DMat3::from_cols(
                DVec3::new(-1.5, 0.0, 0.0),
                DVec3::new(0.0, -1.5, 0.0),
                DVec3::new(0.0, 0.0, 3.0),
            ),
            DVec3::ZERO,
        )
        .unwrap();
        assert_eq!(a.axis_codes(), ['L', 'P', 'S']);
        let permuted = Affine::new(
            DMat3::from_cols(
                DVec3::new(0.0, 0.0, -2.0),
                DVec3::X,
                DVec3::new(0.0, 1.0, 0.0),
            ),
            DVec3::ZERO,
        )
        .unwrap();
        assert_eq!(permuted.axis_codes(), ['I', 'R', 'A']);
    }

    #[test]
    fn world_and_voxel_are_inverse() {
        let a = Affine::new(
            DMat3::from_cols(
                DVec3::new(0.9, 0.1, 0.0),
                DVec3::new(-0.1, 0.8, 0.2),
                DVec3::new(0.0, -0.3, 2.5),
            ),
            DVec3::new(-100.0, 20.0, 7.0),
        )
        .unwrap();
        let v = DVec3::new(10.0, 20.5, 3.25);
        assert!((a.to_voxel(a.to_world(v)) - v).length() < 1e-10);
    }

    #[test]
    fn singular_affines_are_refused() {
        let flat = DMat3::from_cols(DVec3::X, DVec3::Y, DVec3::ZERO);
        assert!(Affine::new(flat, DVec3::ZERO).is_err());
        assert!(Affine::new(DMat3::IDENTITY, DVec3::splat(f64::NAN)).is_err());
    }

    #[test]
    fn with_spacing_keeps_the_field_of_view() {
        let a = Affine::from_spacing(DVec3::new(1.0, 1.0, 3.0), DVec3::new(5.0, 6.0, 7.0)).unwrap();
        let b = a.with_spacing(DVec3::new(2.0, 0.5, 1.5)).unwrap();
        let corner_a = a.to_world(DVec3::splat(-0.5));
        let corner_b = b.to_world(DVec3::splat(-0.5));
        assert!((corner_a - corner_b).length() < 1e-12);
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = WorldBox::new(DVec3::ZERO, DVec3::splat(2.0));
        let b = WorldBox::new(DVec3::new(1.0, 0.0, 0.0), DVec3::new(3.0, 2.0, 2.0));
        assert!((a.iou(&b) - 4.0 / 12.0).abs() < 1e-12);
        assert_eq!(
            a.iou(&WorldBox::new(DVec3::splat(5.0), DVec3::splat(6.0))),
            0.0
        );
    }
}
