//! The three linked slice views of the active scan and the cohort strip of matched slices.

use std::collections::HashMap;

use egui::{Align2, Color32, FontId, PointerButton, Pos2, Rect, Sense, Stroke, TextureHandle};
use glam::DVec3;

use ape::annotations::{BoxOrigin, OrganBox};
use ape::geometry::WorldBox;
use ape::slicing::{Plane, SliceGeometry, WindowLevel};

use super::box_edit::{BoxGrip, GRIP_PIXELS, grip_at};
use super::slice_picture::cpu::render_view;
use super::slice_picture::gpu;
use super::state::{OverlaySettings, ViewerState};

/// Zoom and pan of one view.
#[derive(Debug, Clone, Copy)]
pub struct ViewState {
    /// Magnification over "fit the scan in the view".
    pub zoom: f64,
    /// In-plane offset of the view's centre from the scan's centre, mm.
    pub pan: DVec3,
    /// The box drag under way, if any.
    pub drag: Option<BoxDrag>,
}

/// A left drag in box mode: drawing a new box, or editing the organ's box through a grip.
#[derive(Debug, Clone, Copy)]
pub enum BoxDrag {
    /// A new box from this world point.
    New { from: DVec3 },
    /// The box as it was when the drag began, what of it was grabbed, and where (world mm).
    Edit {
        grip: BoxGrip,
        original: WorldBox,
        from: DVec3,
    },
}

impl Default for ViewState {
    fn default() -> Self {
        Self {
            zoom: 1.0,
            pan: DVec3::ZERO,
            drag: None,
        }
    }
}

/// What the cursor is over: for the status bar.
#[derive(Debug, Clone, Copy)]
pub struct Hover {
    pub world: DVec3,
    pub hu: Option<f32>,
    pub embedding: Option<[f32; 3]>,
}

/// Everything that decides a picture, so that it is redrawn only when one of them changes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PictureKey {
    geometry: SliceGeometry,
    window: WindowLevel,
    overlay: OverlaySettings,
    has_map: bool,
}

/// Textures of the views, kept between frames.
#[derive(Default)]
pub struct Pictures {
    cache: HashMap<(usize, String), (PictureKey, TextureHandle)>,
}

impl std::fmt::Debug for Pictures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pictures({})", self.cache.len())
    }
}

impl Pictures {
    /// The texture of a picture, redrawn if its key changed.
    fn get(
        &mut self,
        ctx: &egui::Context,
        state: &ViewerState,
        scan_id: usize,
        slot: &str,
        geometry: SliceGeometry,
    ) -> Option<TextureHandle> {
        let entry = state.cohort.get(scan_id)?;
        let scan = entry.scan.as_ref()?;
        let key = PictureKey {
            geometry,
            window: state.window,
            overlay: state.overlay,
            has_map: entry.map.is_some(),
        };
        let id = (scan_id, slot.to_owned());
        if let Some((k, texture)) = self.cache.get(&id)
            && *k == key
        {
            return Some(texture.clone());
        }
        let rgba = render_view(
            &scan.volume,
            entry.map.as_deref(),
            &geometry,
            state.window,
            &state.overlay,
        );
        let image =
            egui::ColorImage::from_rgba_unmultiplied([geometry.width, geometry.height], &rgba);
        let texture = match self.cache.remove(&id) {
            Some((_, mut texture)) => {
                texture.set(image, egui::TextureOptions::NEAREST);
                texture
            }
            None => ctx.load_texture(
                format!("view-{scan_id}-{slot}"),
                image,
                egui::TextureOptions::NEAREST,
            ),
        };
        self.cache.insert(id, (key, texture.clone()));
        Some(texture)
    }
}

/// The slice geometry of a view of `rect`'s size: fitting the scan at zoom 1, centred on the
/// scan's centre plus the pan, cutting through the crosshair.
pub fn view_geometry(
    state: &ViewerState,
    scan_id: usize,
    plane: Plane,
    view: &ViewState,
    size: egui::Vec2,
    crosshair: DVec3,
) -> Option<SliceGeometry> {
    let scan = state.cohort.get(scan_id)?.scan.as_ref()?;
    let bounds = scan.volume.world_bounds();
    let (right, up, normal) = plane.axes();
    let extent = bounds.size();
    let across = extent.dot(right.abs());
    let tall = extent.dot(up.abs());
    let (w, h) = (size.x.max(8.0) as usize, size.y.max(8.0) as usize);
    let fit = (across / w as f64).max(tall / h as f64).max(1e-3);
    let centre = bounds.centre() + view.pan;
    let on_slice = centre + normal * (crosshair - centre).dot(normal);
    Some(SliceGeometry {
        plane,
        centre: on_slice,
        pixel_mm: fit / view.zoom.max(1e-3),
        width: w,
        height: h,
    })
}

/// Where a view's picture lies on the screen: world mm, picture pixels and screen points.
#[derive(Debug, Clone, Copy)]
struct OnScreen {
    rect: Rect,
    geometry: SliceGeometry,
}

impl OnScreen {
    /// The screen point of a world point (its pixel's centre), and how far off the slice it
    /// lies, mm.
    fn point(&self, world: DVec3) -> (Pos2, f64) {
        let (u, v, off) = self.geometry.pixel_of(world);
        (
            Pos2::new(
                self.rect.min.x + u as f32 + 0.5,
                self.rect.min.y + v as f32 + 0.5,
            ),
            off,
        )
    }

    /// The screen rectangle of a box, projected on the slice.
    fn rect_of(&self, b: &WorldBox) -> Rect {
        Rect::from_two_pos(self.point(b.min).0, self.point(b.max).0)
    }

    /// The picture pixel (continuous) under a screen point.
    fn pixel(&self, pos: Pos2) -> (f64, f64) {
        (
            (pos.x - self.rect.min.x) as f64,
            (pos.y - self.rect.min.y) as f64,
        )
    }

    /// The world point under a screen point.
    fn world(&self, pos: Pos2) -> DVec3 {
        let (u, v) = self.pixel(pos);
        self.geometry.world_at(u, v)
    }
}

/// One slice view of the active scan: its picture and marks, then its input.
pub fn slice_view(
    ui: &mut egui::Ui,
    state: &mut ViewerState,
    pictures: &mut Pictures,
    plane: Plane,
    view: &mut ViewState,
    hover: &mut Option<Hover>,
) {
    let size = ui.available_size();
    let (rect, response) = ui.allocate_exact_size(size, Sense::click_and_drag());
    let scan_name = state
        .active_scan()
        .map_or("", |s| s.name.as_str())
        .to_owned();
    response.widget_info(|| {
        egui::WidgetInfo::labeled(
            egui::Role::Image,
            true,
            format!("{} view of {scan_name}", plane.name()),
        )
    });
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, Color32::BLACK);
    let id = state.active;
    let Some(geometry) = view_geometry(state, id, plane, view, rect.size(), state.crosshair) else {
        painter.text(
            rect.center(),
            Align2::CENTER_CENTER,
            "open a scan: drag it here, or use Open…",
            FontId::proportional(14.0),
            Color32::GRAY,
        );
        return;
    };
    let screen = OnScreen { rect, geometry };
    let step = slice_step(state, id, plane);

    draw_picture(ui.ctx(), &painter, state, pictures, &screen);
    draw_crosshair(&painter, &screen, state.crosshair);
    draw_landmark_match(&painter, state, &screen, step);
    draw_organ_boxes(&painter, state, &screen, &scan_name);
    draw_orientation(&painter, rect, plane, state.crosshair);

    hover_and_wheel(ui, &response, state, view, &screen, step, hover);
    left_drag(ui, &response, state, view, &screen, &scan_name);
    if response.dragged_by(PointerButton::Secondary) {
        window_level_drag(state, response.drag_delta());
    }
    if response.clicked()
        && let Some(pos) = response.interact_pointer_pos()
    {
        let world = screen.world(pos);
        state.crosshair = world;
        if state.click_queries {
            state.query(id, world);
        }
    }
}

/// The slice of the active scan: by the shader when slicing on the GPU, else the CPU picture.
fn draw_picture(
    ctx: &egui::Context,
    painter: &egui::Painter,
    state: &ViewerState,
    pictures: &mut Pictures,
    screen: &OnScreen,
) {
    let (id, geometry, plane) = (state.active, screen.geometry, screen.geometry.plane);
    let on_gpu = state
        .gpu_slicing
        .then(|| {
            let entry = state.cohort.get(id)?;
            Some((entry.scan.clone()?, entry.map.clone()))
        })
        .flatten();
    if let Some((scan, map)) = on_gpu {
        let uniforms = gpu::ViewUniforms::new(
            &scan,
            map.as_deref(),
            &geometry,
            state.window,
            &state.overlay,
        );
        painter.add(eframe::egui_wgpu::Callback::new_paint_callback(
            screen.rect,
            gpu::SliceCallback {
                slot: format!("{id}-{}", plane.name()),
                scan_id: id,
                scan,
                map,
                uniforms,
            },
        ));
    } else if let Some(texture) = pictures.get(ctx, state, id, plane.name(), geometry) {
        // The picture is already sampled at the view's resolution: drawn pixel for pixel.
        painter.image(
            texture.id(),
            Rect::from_min_size(
                screen.rect.min,
                egui::vec2(geometry.width as f32, geometry.height as f32),
            ),
            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
            Color32::WHITE,
        );
    }
}

fn draw_crosshair(painter: &egui::Painter, screen: &OnScreen, crosshair: DVec3) {
    let (c, _) = screen.point(crosshair);
    let rect = screen.rect;
    let cross = Stroke::new(1.0, Color32::from_rgba_unmultiplied(255, 210, 0, 160));
    painter.line_segment(
        [Pos2::new(rect.min.x, c.y), Pos2::new(rect.max.x, c.y)],
        cross,
    );
    painter.line_segment(
        [Pos2::new(c.x, rect.min.y), Pos2::new(c.x, rect.max.y)],
        cross,
    );
}

/// The landmark's match on the active scan: filled on its slice, a ring when off it.
fn draw_landmark_match(painter: &egui::Painter, state: &ViewerState, screen: &OnScreen, step: f64) {
    let id = state.active;
    let Some(m) = state.match_on(id) else {
        return;
    };
    let (p, off) = screen.point(m.world);
    let is_source = state.landmark.as_ref().is_some_and(|l| l.source == id);
    let colour = if is_source {
        Color32::from_rgb(0, 200, 255)
    } else {
        Color32::from_rgb(255, 60, 200)
    };
    if off.abs() <= step * 0.5 + 1e-6 {
        painter.circle_filled(p, 5.0, colour);
    }
    painter.circle_stroke(p, 9.0, Stroke::new(2.0, colour));
}

/// The organ boxes of the active scan that the slice cuts: the current organ's with handles
/// while box drawing is on, predictions with their recall-safe (α-enlarged) box around them.
fn draw_organ_boxes(painter: &egui::Painter, state: &ViewerState, screen: &OnScreen, scan: &str) {
    let plane = screen.geometry.plane;
    let scan_bounds = state
        .active_scan()
        .and_then(|s| s.scan.as_ref())
        .map(|s| s.volume.world_bounds());
    let on_slice = state
        .boxes
        .boxes
        .iter()
        .filter(|b| b.scan == scan && box_cut_by_slice(&b.bbox, plane, state.crosshair));
    for b in on_slice {
        let colour = box_colour(b.origin);
        let r = screen.rect_of(&b.bbox);
        painter.rect_stroke(r, 0.0, Stroke::new(2.0, colour), egui::StrokeKind::Middle);
        painter.text(
            r.left_top() + egui::vec2(3.0, 2.0),
            Align2::LEFT_TOP,
            &b.organ,
            FontId::proportional(12.0),
            colour,
        );
        if let BoxOrigin::Predicted { alpha, .. } = b.origin
            && (alpha - 1.0).abs() > 1e-3
        {
            draw_recall_box(painter, screen, &b.bbox, alpha, scan_bounds, colour);
        }
        if state.draw_boxes && b.organ == state.organ {
            draw_box_handles(painter, r, colour);
        }
    }
}

/// A prediction's box enlarged by α (within the scan), dashed, with its α.
fn draw_recall_box(
    painter: &egui::Painter,
    screen: &OnScreen,
    bbox: &WorldBox,
    alpha: f64,
    scan_bounds: Option<WorldBox>,
    colour: Color32,
) {
    let enlarged = bbox.scaled(alpha);
    let enlarged = scan_bounds
        .and_then(|s| enlarged.intersection(&s))
        .unwrap_or(enlarged);
    let e = screen.rect_of(&enlarged);
    let corners = [
        e.left_top(),
        e.right_top(),
        e.right_bottom(),
        e.left_bottom(),
        e.left_top(),
    ];
    painter.extend(egui::Shape::dashed_line(
        &corners,
        Stroke::new(1.0, colour),
        6.0,
        4.0,
    ));
    painter.text(
        e.right_bottom() - egui::vec2(3.0, 2.0),
        Align2::RIGHT_BOTTOM,
        format!("α {alpha:.2}: 0.99 recall"),
        FontId::proportional(11.0),
        colour,
    );
}

/// The eight handles of a box being edited: its corners and the middles of its edges.
fn draw_box_handles(painter: &egui::Painter, r: Rect, colour: Color32) {
    for p in [
        r.left_top(),
        r.center_top(),
        r.right_top(),
        r.right_center(),
        r.right_bottom(),
        r.center_bottom(),
        r.left_bottom(),
        r.left_center(),
    ] {
        let handle = Rect::from_center_size(p, egui::vec2(7.0, 7.0));
        painter.rect_filled(handle, 1.0, Color32::WHITE);
        painter.rect_stroke(
            handle,
            1.0,
            Stroke::new(1.0, colour),
            egui::StrokeKind::Middle,
        );
    }
}

/// Orientation letters at the four edges, and the view's name with the slice's position.
fn draw_orientation(painter: &egui::Painter, rect: Rect, plane: Plane, crosshair: DVec3) {
    let letters = plane.edge_letters();
    let font = FontId::proportional(15.0);
    let letter_colour = Color32::from_rgb(230, 230, 120);
    for (text, pos, align) in [
        (
            letters[0],
            Pos2::new(rect.min.x + 6.0, rect.center().y),
            Align2::LEFT_CENTER,
        ),
        (
            letters[1],
            Pos2::new(rect.max.x - 6.0, rect.center().y),
            Align2::RIGHT_CENTER,
        ),
        (
            letters[2],
            Pos2::new(rect.center().x, rect.min.y + 4.0),
            Align2::CENTER_TOP,
        ),
        (
            letters[3],
            Pos2::new(rect.center().x, rect.max.y - 4.0),
            Align2::CENTER_BOTTOM,
        ),
    ] {
        let galley = painter.layout_no_wrap(text.to_string(), font.clone(), letter_colour);
        let text_rect = align.anchor_size(pos, galley.size()).expand(2.0);
        painter.rect_filled(text_rect, 3.0, Color32::from_black_alpha(160));
        painter.galley(text_rect.min + egui::vec2(2.0, 2.0), galley, letter_colour);
    }
    let (_, _, normal) = plane.axes();
    painter.text(
        rect.min + egui::vec2(6.0, 4.0),
        Align2::LEFT_TOP,
        format!("{} {:.1} mm", plane.name(), crosshair.dot(normal)),
        FontId::proportional(12.0),
        Color32::LIGHT_GRAY,
    );
}

/// Under the pointer: the status bar's readout, Ctrl+wheel (or pinch) zooms, the wheel
/// scrolls slices.
fn hover_and_wheel(
    ui: &egui::Ui,
    response: &egui::Response,
    state: &mut ViewerState,
    view: &mut ViewState,
    screen: &OnScreen,
    step: f64,
    hover: &mut Option<Hover>,
) {
    let Some(pos) = response.hover_pos() else {
        return;
    };
    let world = screen.world(pos);
    if let Some(entry) = state.active_scan() {
        *hover = Some(Hover {
            world,
            hu: entry.scan.as_ref().and_then(|s| {
                let v = s.volume.nearest_voxel(world)?;
                s.volume.get(v[0], v[1], v[2]).copied()
            }),
            embedding: entry.map.as_ref().and_then(|m| m.embedding_at(world)),
        });
    }
    let (scroll, zoom, command) = ui.input(|i| {
        (
            i.smooth_scroll_delta().y,
            i.zoom_delta(),
            i.modifiers.command,
        )
    });
    if zoom != 1.0 {
        view.zoom = (view.zoom * zoom as f64).clamp(0.2, 40.0);
    } else if scroll != 0.0 && !command {
        let slices = (scroll / 40.0).round().clamp(-10.0, 10.0);
        let slices = if slices == 0.0 {
            scroll.signum()
        } else {
            slices
        };
        let (_, _, normal) = screen.geometry.plane.axes();
        state.crosshair += normal * (slices as f64 * step);
    }
}

/// A left drag: with box drawing on, draws the organ's box or edits it through the grip under
/// the pointer; else pans.
fn left_drag(
    ui: &egui::Ui,
    response: &egui::Response,
    state: &mut ViewerState,
    view: &mut ViewState,
    screen: &OnScreen,
    scan_name: &str,
) {
    let plane = screen.geometry.plane;
    // The current organ's box on this slice: what a drag may grab.
    let organ_box = state
        .boxes
        .get(scan_name, &state.organ)
        .map(|b| b.bbox)
        .filter(|b| box_cut_by_slice(b, plane, state.crosshair));
    if state.draw_boxes
        && view.drag.is_none()
        && let Some((grip, _)) = response
            .hover_pos()
            .and_then(|pos| grip_under(screen, organ_box, pos))
    {
        ui.ctx().set_cursor_icon(grip.cursor(&screen.geometry));
    }
    if state.draw_boxes && response.dragged_by(PointerButton::Primary) {
        if let Some(pos) = response.interact_pointer_pos() {
            box_drag(response, state, view, screen, scan_name, organ_box, pos);
        }
    } else if response.dragged_by(PointerButton::Primary) {
        let d = response.drag_delta();
        let (right, up, _) = plane.axes();
        view.pan -= (right * d.x as f64 - up * d.y as f64) * screen.geometry.pixel_mm;
    }
    if response.drag_stopped() {
        view.drag = None;
    }
}

/// What a drag from `pos` grabs of the organ's box, and that box.
fn grip_under(
    screen: &OnScreen,
    organ_box: Option<WorldBox>,
    pos: Pos2,
) -> Option<(BoxGrip, WorldBox)> {
    let (u, v) = screen.pixel(pos);
    let b = organ_box?;
    grip_at(&b, &screen.geometry, u, v, GRIP_PIXELS).map(|g| (g, b))
}

/// One frame of a box drag with the pointer at `pos`: its first frame decides what the drag
/// does (a new box, or the grip under its start); each frame sets the box so far, the whole
/// drag one undo step.
fn box_drag(
    response: &egui::Response,
    state: &mut ViewerState,
    view: &mut ViewState,
    screen: &OnScreen,
    scan_name: &str,
    organ_box: Option<WorldBox>,
    pos: Pos2,
) {
    let first_frame = response.drag_started() || view.drag.is_none();
    if first_frame {
        let start = pos - response.drag_delta();
        let from = screen.world(start);
        view.drag = Some(match grip_under(screen, organ_box, start) {
            Some((grip, original)) => BoxDrag::Edit {
                grip,
                original,
                from,
            },
            None => BoxDrag::New { from },
        });
    }
    let here = screen.world(pos);
    let plane = screen.geometry.plane;
    let bbox = match view.drag {
        Some(BoxDrag::New { from }) => new_box_extent(state, plane, scan_name, from, here),
        Some(BoxDrag::Edit {
            grip,
            original,
            from,
        }) => grip.apply(&original, from, here),
        None => return,
    };
    let dragged = OrganBox {
        scan: scan_name.to_owned(),
        organ: state.organ.clone(),
        bbox,
        origin: BoxOrigin::Drawn,
    };
    state.drag_box(dragged, first_frame);
}

/// A right drag, as in ITK-SNAP: horizontal widens the window, vertical moves the level.
fn window_level_drag(state: &mut ViewerState, d: egui::Vec2) {
    state.window.width = (state.window.width + d.x * 4.0).clamp(1.0, 5000.0);
    state.window = state.window.sanitized();
    state.window.level = (state.window.level - d.y * 2.0).clamp(-1500.0, 3000.0);
}

/// Whether the slice through `crosshair` of a view cuts a box.
fn box_cut_by_slice(b: &WorldBox, plane: Plane, crosshair: DVec3) -> bool {
    let (_, _, normal) = plane.axes();
    let at = crosshair.dot(normal);
    let (lo, hi) = (b.min.dot(normal), b.max.dot(normal));
    at >= lo.min(hi) - 1e-6 && at <= lo.max(hi) + 1e-6
}

/// Green: drawn or corrected by the user; cyan: an accepted prediction; orange: a prediction.
fn box_colour(origin: BoxOrigin) -> Color32 {
    match origin {
        BoxOrigin::Drawn => Color32::from_rgb(80, 230, 80),
        BoxOrigin::Accepted => Color32::from_rgb(80, 200, 255),
        BoxOrigin::Predicted { .. } => Color32::from_rgb(255, 160, 40),
    }
}

/// The box a drag from `from` to `to` draws in a view: its two in-plane extents; along the
/// view's normal it keeps the organ's existing extent, or spans ±25 mm about the crosshair.
fn new_box_extent(
    state: &ViewerState,
    plane: Plane,
    scan_name: &str,
    from: DVec3,
    to: DVec3,
) -> WorldBox {
    let (_, _, normal) = plane.axes();
    let axis = (0..3).find(|&a| normal[a].abs() > 0.5).unwrap_or(2);
    let (mut lo, mut hi) = (from.min(to), from.max(to));
    match state.boxes.get(scan_name, &state.organ) {
        Some(existing) => {
            lo[axis] = existing.bbox.min[axis];
            hi[axis] = existing.bbox.max[axis];
        }
        None => {
            lo[axis] = state.crosshair[axis] - 25.0;
            hi[axis] = state.crosshair[axis] + 25.0;
        }
    }
    WorldBox::new(lo, hi)
}

/// One slice's thickness along a view's normal: the voxel step of the scan along it, mm.
pub fn slice_step(state: &ViewerState, scan_id: usize, plane: Plane) -> f64 {
    let Some(scan) = state.cohort.get(scan_id).and_then(|s| s.scan.as_ref()) else {
        return 1.0;
    };
    let (_, _, normal) = plane.axes();
    let affine = scan.volume.affine();
    let voxels_per_mm = affine.to_voxel(normal) - affine.to_voxel(DVec3::ZERO);
    1.0 / voxels_per_mm.abs().max_element().max(1e-6)
}

/// The cohort strip: each other scan's axial slice through the landmark's match, with its
/// distance; a click opens that scan at the match.
pub fn cohort_strip(ui: &mut egui::Ui, state: &mut ViewerState, pictures: &mut Pictures) {
    let Some(landmark) = state.landmark.clone() else {
        ui.label("Click a point on a view: its matches on every scan of the cohort appear here.");
        return;
    };
    let mut activate = None;
    egui::ScrollArea::horizontal().show(ui, |ui| {
        ui.horizontal(|ui| {
            for (id, m) in landmark.matches.iter().enumerate() {
                let Some(m) = m else { continue };
                if id == state.active {
                    continue;
                }
                ui.vertical(|ui| {
                    let size = egui::vec2(150.0, 150.0);
                    let view = ViewState::default();
                    let Some(mut geometry) =
                        view_geometry(state, id, Plane::Axial, &view, size, m.world)
                    else {
                        return;
                    };
                    geometry.centre = m.world;
                    geometry.pixel_mm *= 0.6;
                    let (rect, response) = ui.allocate_exact_size(size, Sense::click());
                    if let Some(texture) = pictures.get(ui.ctx(), state, id, "strip", geometry) {
                        ui.painter().image(
                            texture.id(),
                            rect,
                            Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0)),
                            Color32::WHITE,
                        );
                    }
                    ui.painter().circle_stroke(
                        rect.center(),
                        8.0,
                        Stroke::new(2.0, Color32::from_rgb(255, 60, 200)),
                    );
                    let name = &state.cohort[id].name;
                    let clicked = response
                        .on_hover_text(format!("open {name} at the match"))
                        .clicked();
                    let c = m.confidence;
                    let label = ui.button(format!(
                        "{name}  {:.0}%{}",
                        c.score() * 100.0,
                        if c.doubtful() { " ?" } else { "" }
                    ));
                    if clicked || label.clicked() {
                        activate = Some(id);
                    }
                });
            }
        });
    });
    if let Some(id) = activate {
        state.activate(id);
    }
}
