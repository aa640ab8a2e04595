//! Editing an organ box with the mouse, free of GUI types: what a drag that starts at a pixel of
//! a view grabs of a box (a face, a corner, or the whole box), and the box that dragging it to
//! another world point gives. As in 3D Slicer's ROI widget: an edge moves one face, a corner
//! moves two, the inside moves the box.

use glam::DVec3;

use ape::geometry::WorldBox;
use ape::slicing::SliceGeometry;

/// How close to an edge (pixels) a drag must start to grab it.
pub const GRIP_PIXELS: f64 = 6.0;

/// What a drag holds of a box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BoxGrip {
    /// Per world axis: `None` keeps it, `Some(false)` moves the box's min face, `Some(true)`
    /// its max face.
    Faces([Option<bool>; 3]),
    /// The whole box, in the view's plane.
    Move,
}

/// The world axis (0 = x, 1 = y, 2 = z) a view direction runs along.
fn axis_of(direction: DVec3) -> usize {
    let a = direction.abs();
    if a.x >= a.y && a.x >= a.z {
        0
    } else if a.y >= a.z {
        1
    } else {
        2
    }
}

/// What a drag starting at pixel (`u`, `v`) of a view with `geometry` grabs of `bbox`: the
/// faces whose edges lie within `tolerance` pixels, the whole box from inside it, or nothing
/// outside it.
pub fn grip_at(
    bbox: &WorldBox,
    geometry: &SliceGeometry,
    u: f64,
    v: f64,
    tolerance: f64,
) -> Option<BoxGrip> {
    let (right, up, _) = geometry.plane.axes();
    let (across, down) = (axis_of(right), axis_of(up));
    let (u_min, v_min, _) = geometry.pixel_of(bbox.min);
    let (u_max, v_max, _) = geometry.pixel_of(bbox.max);
    let within = |x: f64, a: f64, b: f64| x >= a.min(b) - tolerance && x <= a.max(b) + tolerance;
    if !within(u, u_min, u_max) || !within(v, v_min, v_max) {
        return None;
    }
    let mut faces = [None; 3];
    let (du_min, du_max) = ((u - u_min).abs(), (u - u_max).abs());
    if du_min.min(du_max) <= tolerance {
        faces[across] = Some(du_max < du_min);
    }
    let (dv_min, dv_max) = ((v - v_min).abs(), (v - v_max).abs());
    if dv_min.min(dv_max) <= tolerance {
        faces[down] = Some(dv_max < dv_min);
    }
    if faces.iter().all(Option::is_none) {
        Some(BoxGrip::Move)
    } else {
        Some(BoxGrip::Faces(faces))
    }
}

impl BoxGrip {
    /// The box `original` after its grabbed part was dragged from world point `from` to `to`.
    /// A face dragged past its opposite face swaps with it (the box never turns inside out).
    pub fn apply(&self, original: &WorldBox, from: DVec3, to: DVec3) -> WorldBox {
        match self {
            BoxGrip::Move => WorldBox::new(original.min + (to - from), original.max + (to - from)),
            BoxGrip::Faces(faces) => {
                let (mut lo, mut hi) = (original.min, original.max);
                for (axis, face) in faces.iter().enumerate() {
                    match face {
                        Some(true) => hi[axis] = to[axis],
                        Some(false) => lo[axis] = to[axis],
                        None => {}
                    }
                }
                WorldBox::new(lo, hi)
            }
        }
    }

    /// The mouse cursor that shows what a drag would do.
    pub fn cursor(&self, geometry: &SliceGeometry) -> egui::CursorIcon {
        let (right, up, _) = geometry.plane.axes();
        match self {
            BoxGrip::Move => egui::CursorIcon::Move,
            BoxGrip::Faces(faces) => {
                match (
                    faces[axis_of(right)].is_some(),
                    faces[axis_of(up)].is_some(),
                ) {
                    (true, true) => egui::CursorIcon::Crosshair,
                    (true, false) => egui::CursorIcon::ResizeHorizontal,
                    _ => egui::CursorIcon::ResizeVertical,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ape::slicing::Plane;

    /// An axial view 200 px square, 1 mm per pixel, centred on the origin.
    fn axial() -> SliceGeometry {
        SliceGeometry {
            plane: Plane::Axial,
            centre: DVec3::ZERO,
            pixel_mm: 1.0,
            width: 200,
            height: 200,
        }
    }

    fn screen(g: &SliceGeometry, p: DVec3) -> (f64, f64) {
        let (u, v, _) = g.pixel_of(p);
        (u, v)
    }

    #[test]
    fn edges_corners_and_inside_grab_what_slicer_users_expect() {
        let g = axial();
        let b = WorldBox::new(DVec3::new(-20.0, -30.0, -5.0), DVec3::new(40.0, 10.0, 5.0));
        // On the edge through x = 40 (max x face), half way up it.
        let (u, v) = screen(&g, DVec3::new(40.0, -10.0, 0.0));
        assert_eq!(
            grip_at(&b, &g, u, v, GRIP_PIXELS),
            Some(BoxGrip::Faces([Some(true), None, None]))
        );
        // Near the corner (x min, y min): two faces.
        let (u, v) = screen(&g, DVec3::new(-18.0, -28.0, 0.0));
        assert_eq!(
            grip_at(&b, &g, u, v, GRIP_PIXELS),
            Some(BoxGrip::Faces([Some(false), Some(false), None]))
        );
        // Inside: the whole box; outside: nothing.
        let (u, v) = screen(&g, DVec3::new(10.0, -10.0, 0.0));
        assert_eq!(grip_at(&b, &g, u, v, GRIP_PIXELS), Some(BoxGrip::Move));
        let (u, v) = screen(&g, DVec3::new(80.0, -10.0, 0.0));
        assert_eq!(grip_at(&b, &g, u, v, GRIP_PIXELS), None);
    }

    #[test]
    fn dragging_a_face_moves_only_that_face_and_never_inverts_the_box() {
        let b = WorldBox::new(DVec3::new(-20.0, -30.0, -5.0), DVec3::new(40.0, 10.0, 5.0));
        let grip = BoxGrip::Faces([Some(true), None, None]);
        let moved = grip.apply(&b, DVec3::new(40.0, 0.0, 0.0), DVec3::new(55.0, 3.0, 0.0));
        assert_eq!(moved.min, b.min);
        assert_eq!(moved.max, DVec3::new(55.0, 10.0, 5.0));
        // Past the opposite face: the faces swap, the box stays valid.
        let flipped = grip.apply(&b, DVec3::new(40.0, 0.0, 0.0), DVec3::new(-50.0, 0.0, 0.0));
        assert_eq!(flipped.min.x, -50.0);
        assert_eq!(flipped.max.x, -20.0);
        // Moving keeps the size.
        let shifted = BoxGrip::Move.apply(&b, DVec3::ZERO, DVec3::new(5.0, -2.0, 0.0));
        assert!((shifted.size() - b.size()).length() < 1e-12);
        assert_eq!(shifted.min, DVec3::new(-15.0, -32.0, -5.0));
    }

    #[test]
    fn a_coronal_edge_grabs_the_z_face() {
        let g = SliceGeometry {
            plane: Plane::Coronal,
            ..axial()
        };
        let b = WorldBox::new(
            DVec3::new(-20.0, -30.0, -40.0),
            DVec3::new(40.0, 10.0, 60.0),
        );
        let (u, v) = screen(&g, DVec3::new(0.0, 0.0, 60.0));
        assert_eq!(
            grip_at(&b, &g, u, v, GRIP_PIXELS),
            Some(BoxGrip::Faces([None, None, Some(true)]))
        );
    }
}
