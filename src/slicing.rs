//! Axial, coronal and sagittal slices through a volume at a world point, sampled on a grid of
//! square world pixels, so that the picture has the right physical aspect whatever the voxel
//! order, spacing or obliquity. Radiological convention, as 3D Slicer shows them: the patient's
//! right on the screen's left in axial and coronal views, anterior on the left in sagittal.

use glam::DVec3;
use serde::{Deserialize, Serialize};

use crate::volume::Volume;

/// The three standard planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

impl Plane {
    pub const ALL: [Plane; 3] = [Plane::Axial, Plane::Coronal, Plane::Sagittal];

    /// World (RAS) directions of the screen's right and up, and the plane's normal (the axis
    /// slices scroll along).
    pub fn axes(self) -> (DVec3, DVec3, DVec3) {
        match self {
            // Screen right = patient left (−x), up = anterior (+y); scroll S–I.
            Plane::Axial => (DVec3::NEG_X, DVec3::Y, DVec3::Z),
            // Screen right = patient left, up = superior; scroll A–P.
            Plane::Coronal => (DVec3::NEG_X, DVec3::Z, DVec3::Y),
            // Screen right = posterior (−y), up = superior; scroll R–L.
            Plane::Sagittal => (DVec3::NEG_Y, DVec3::Z, DVec3::X),
        }
    }

    /// Orientation letters at the screen's left, right, top and bottom edges.
    pub fn edge_letters(self) -> [char; 4] {
        let (right, up, _) = self.axes();
        [letter(-right), letter(right), letter(up), letter(-up)]
    }

    pub fn name(self) -> &'static str {
        match self {
            Plane::Axial => "axial",
            Plane::Coronal => "coronal",
            Plane::Sagittal => "sagittal",
        }
    }
}

/// The anatomical letter of an axis-aligned RAS direction.
fn letter(d: DVec3) -> char {
    let a = d.abs();
    if a.x >= a.y && a.x >= a.z {
        if d.x > 0.0 { 'R' } else { 'L' }
    } else if a.y >= a.z {
        if d.y > 0.0 { 'A' } else { 'P' }
    } else if d.z > 0.0 {
        'S'
    } else {
        'I'
    }
}

/// Where a view looks: the plane, the world point at the picture's centre (its normal
/// coordinate fixes the slice), and the size of one picture pixel in mm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceGeometry {
    pub plane: Plane,
    pub centre: DVec3,
    pub pixel_mm: f64,
    pub width: usize,
    pub height: usize,
}

impl SliceGeometry {
    /// The world point at the centre of picture pixel (column `u`, row `v`; rows go down), as
    /// continuous pixel coordinates.
    pub fn world_at(&self, u: f64, v: f64) -> DVec3 {
        let (right, up, _) = self.plane.axes();
        let du = u + 0.5 - self.width as f64 * 0.5;
        let dv = self.height as f64 * 0.5 - (v + 0.5);
        self.centre + right * (du * self.pixel_mm) + up * (dv * self.pixel_mm)
    }

    /// The picture position (continuous pixels) of a world point, and its distance from the
    /// slice plane in mm.
    pub fn pixel_of(&self, world: DVec3) -> (f64, f64, f64) {
        let (right, up, normal) = self.plane.axes();
        let d = world - self.centre;
        let u = d.dot(right) / self.pixel_mm + self.width as f64 * 0.5 - 0.5;
        let v = self.height as f64 * 0.5 - d.dot(up) / self.pixel_mm - 0.5;
        (u, v, d.dot(normal))
    }
}

/// Samples `volume` on the slice (nearest voxel, as viewers show CT by default); `None` where
/// the pixel lies outside the volume. Row-major, rows going down.
pub fn sample_slice<T: Copy>(volume: &Volume<T>, geometry: &SliceGeometry) -> Vec<Option<T>> {
    let (w, h) = (geometry.width, geometry.height);
    let mut out = Vec::with_capacity(w * h);
    let affine = volume.affine();
    // Voxel coordinates move linearly across the picture: step once per pixel.
    let origin = affine.to_voxel(geometry.world_at(0.0, 0.0));
    let step_u = affine.to_voxel(geometry.world_at(1.0, 0.0)) - origin;
    let step_v = affine.to_voxel(geometry.world_at(0.0, 1.0)) - origin;
    let shape = volume.shape();
    let limit = DVec3::new(shape[0] as f64, shape[1] as f64, shape[2] as f64) - 0.5;
    let data = volume.data();
    for v in 0..h {
        let row = origin + step_v * v as f64;
        for u in 0..w {
            let p = row + step_u * u as f64;
            let inside = p.cmpge(DVec3::splat(-0.5)).all() && p.cmplt(limit).all();
            out.push(inside.then(|| {
                let r = p.round();
                data[volume.linear_index(r.x as usize, r.y as usize, r.z as usize)]
            }));
        }
    }
    out
}

/// Window/level: HU to grey 0…255.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowLevel {
    pub width: f32,
    pub level: f32,
}

impl WindowLevel {
    /// The presets radiologists know: (name, window).
    pub const PRESETS: [(&'static str, WindowLevel); 5] = [
        ("Abdomen", WindowLevel::new(350.0, 40.0)),
        ("Liver", WindowLevel::new(150.0, 90.0)),
        ("Lung", WindowLevel::new(1400.0, -500.0)),
        ("Bone", WindowLevel::new(1000.0, 400.0)),
        ("Soft tissue", WindowLevel::new(400.0, 40.0)),
    ];

    pub const fn new(width: f32, level: f32) -> Self {
        Self { width, level }
    }

    /// Widths and levels a user may set (HU): outside, clamped; not a number, the abdomen
    /// preset's value. Typed or dragged values go through this before they are drawn.
    pub const WIDTH_RANGE: (f32, f32) = (1.0, 5000.0);
    pub const LEVEL_RANGE: (f32, f32) = (-1500.0, 3000.0);

    pub fn sanitized(self) -> Self {
        let fix = |v: f32, (lo, hi): (f32, f32), default: f32| {
            if v.is_nan() { default } else { v.clamp(lo, hi) }
        };
        let abdomen = Self::PRESETS[0].1;
        Self {
            width: fix(self.width, Self::WIDTH_RANGE, abdomen.width),
            level: fix(self.level, Self::LEVEL_RANGE, abdomen.level),
        }
    }

    pub fn grey(&self, hu: f32) -> u8 {
        let t = (hu - (self.level - self.width * 0.5)) / self.width.max(1.0);
        (t.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Affine;

    #[test]
    fn absurd_window_values_are_brought_back() {
        let w = WindowLevel::new(f32::NAN, 1e30).sanitized();
        assert_eq!(w, WindowLevel::new(350.0, 3000.0));
        let w = WindowLevel::new(-5.0, f32::NEG_INFINITY).sanitized();
        assert_eq!(w, WindowLevel::new(1.0, -1500.0));
    }

    #[test]
    fn letters_follow_the_radiological_convention() {
        assert_eq!(Plane::Axial.edge_letters(), ['R', 'L', 'A', 'P']);
        assert_eq!(Plane::Coronal.edge_letters(), ['R', 'L', 'S', 'I']);
        assert_eq!(Plane::Sagittal.edge_letters(), ['A', 'P', 'S', 'I']);
    }

    #[test]
    fn pixel_and_world_round_trip() {
        for plane in Plane::ALL {
            let g = SliceGeometry {
                plane,
                centre: DVec3::new(10.0, -20.0, 30.0),
                pixel_mm: 0.7,
                width: 200,
                height: 150,
            };
            let w = g.world_at(37.0, 101.0);
            let (u, v, off) = g.pixel_of(w);
            assert!((u - 37.0).abs() < 1e-9 && (v - 101.0).abs() < 1e-9 && off.abs() < 1e-9);
        }
    }

    #[test]
    fn a_slice_shows_anatomy_the_right_way_round_in_any_voxel_order() {
        // A volume in L,P,S order (as BTCV) with a bright block on the patient's right (+x).
        let affine = Affine::new(
            glam::DMat3::from_diagonal(DVec3::new(-2.0, -2.0, 3.0)),
            DVec3::new(50.0, 50.0, -30.0),
        )
        .unwrap();
        let vol = Volume::from_fn([50, 50, 20], affine, |i, j, k| {
            let w = affine.to_world(DVec3::new(i as f64, j as f64, k as f64));
            if w.x > 20.0 { 1000.0f32 } else { 0.0 }
        })
        .unwrap();
        let g = SliceGeometry {
            plane: Plane::Axial,
            centre: DVec3::new(0.0, 0.0, 0.0),
            pixel_mm: 1.0,
            width: 80,
            height: 80,
        };
        let s = sample_slice(&vol, &g);
        // Patient right is on the screen's left: the block shows in the left columns.
        assert_eq!(s[40 * 80 + 5], Some(1000.0));
        assert_eq!(s[40 * 80 + 75], Some(0.0));
        // Outside the volume's extent (x > 50 mm lies left of column 0 here): None.
        let far = SliceGeometry {
            centre: DVec3::new(0.0, 0.0, 500.0),
            ..g
        };
        assert!(sample_slice(&vol, &far).iter().all(Option::is_none));
    }

    #[test]
    fn window_level_maps_hu_to_grey() {
        let wl = WindowLevel::new(400.0, 40.0);
        assert_eq!(wl.grey(-160.0), 0);
        assert_eq!(wl.grey(240.0), 255);
        assert_eq!(wl.grey(40.0), 128);
    }
}
