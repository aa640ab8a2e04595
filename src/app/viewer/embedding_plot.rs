//! The cohort in APE space, like the paper's Figure 3: organ centres (from label maps beside the
//! scans), organ box centres and the current landmark's matches, each at its embedding, drawn in
//! three 2-D projections of the three channels. Same organ, same colour: anatomical alignment
//! shows as tight clusters; a hover names the point, a click opens its scan there.

use egui::{Align2, Color32, FontId, Pos2, Rect, Sense, Stroke};
use glam::DVec3;

use super::state::ViewerState;

/// What a point of the plot stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointKind {
    /// An organ's centre of mass from the scan's label map.
    OrganCentre,
    /// The centre of an organ box (drawn, predicted or accepted).
    BoxCentre,
    /// The clicked landmark (on its own scan) or its match on another scan.
    Landmark,
}

/// One point of the plot.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotPoint {
    pub embedding: [f32; 3],
    /// Organ name, or "landmark".
    pub label: String,
    pub scan: usize,
    pub world: DVec3,
    pub kind: PointKind,
}

/// Every point the cohort has to show, from the scans with an APE map.
pub fn plot_points(state: &ViewerState) -> Vec<PlotPoint> {
    let mut points = Vec::new();
    for (id, scan) in state.cohort.iter().enumerate() {
        let Some(map) = scan.map.as_deref() else {
            continue;
        };
        let mut push = |label: &str, world: DVec3, kind: PointKind| {
            if let Some(embedding) = map.embedding_at(world) {
                points.push(PlotPoint {
                    embedding,
                    label: label.to_owned(),
                    scan: id,
                    world,
                    kind,
                });
            }
        };
        for (organ, centre) in &scan.organs {
            push(organ, *centre, PointKind::OrganCentre);
        }
        for b in state.boxes.boxes.iter().filter(|b| b.scan == scan.name) {
            push(&b.organ, b.bbox.centre(), PointKind::BoxCentre);
        }
        if let Some(m) = state.match_on(id) {
            push("landmark", m.world, PointKind::Landmark);
        }
    }
    points
}

/// A colour per label, the same in every projection and every frame (labels in sorted order).
fn palette(index: usize) -> Color32 {
    const COLOURS: [Color32; 14] = [
        Color32::from_rgb(31, 119, 180),
        Color32::from_rgb(255, 127, 14),
        Color32::from_rgb(44, 160, 44),
        Color32::from_rgb(214, 39, 40),
        Color32::from_rgb(148, 103, 189),
        Color32::from_rgb(140, 86, 75),
        Color32::from_rgb(227, 119, 194),
        Color32::from_rgb(188, 189, 34),
        Color32::from_rgb(23, 190, 207),
        Color32::from_rgb(174, 199, 232),
        Color32::from_rgb(255, 187, 120),
        Color32::from_rgb(152, 223, 138),
        Color32::from_rgb(255, 152, 150),
        Color32::from_rgb(197, 176, 213),
    ];
    COLOURS[index % COLOURS.len()]
}

const LANDMARK: Color32 = Color32::from_rgb(255, 60, 200);

/// The plot's contents: three projections side by side and a legend. Returns the point the user
/// clicked, if any.
pub fn embedding_plot(ui: &mut egui::Ui, state: &ViewerState) -> Option<PlotPoint> {
    let points = plot_points(state);
    if points.is_empty() {
        ui.label(
            "Nothing to plot yet: organ centres come from label maps beside the scans \
             (X_label.nii.gz), boxes from the organ box tools, and the landmark from a click.",
        );
        return None;
    }
    let mut labels: Vec<&str> = points
        .iter()
        .filter(|p| p.kind != PointKind::Landmark)
        .map(|p| p.label.as_str())
        .collect();
    labels.sort_unstable();
    labels.dedup();
    let colour_of = |p: &PlotPoint| match p.kind {
        PointKind::Landmark => LANDMARK,
        _ => palette(labels.binary_search(&p.label.as_str()).unwrap_or(0)),
    };
    // One scale for every channel, so that distances look like what retrieval measures; each
    // channel centred on its own range.
    let mut lo = [f32::MAX; 3];
    let mut hi = [f32::MIN; 3];
    for p in &points {
        for c in 0..3 {
            lo[c] = lo[c].min(p.embedding[c]);
            hi[c] = hi[c].max(p.embedding[c]);
        }
    }
    let span = (0..3).map(|c| hi[c] - lo[c]).fold(1e-3_f32, f32::max) * 1.1;
    let low: [f32; 3] = std::array::from_fn(|c| (lo[c] + hi[c]) * 0.5 - span * 0.5);

    let mut clicked = None;
    let side = ((ui.available_width() - 20.0) / 3.0).clamp(140.0, 320.0);
    ui.horizontal(|ui| {
        for (cx, cy) in [(0, 1), (0, 2), (1, 2)] {
            let (rect, response) = ui.allocate_exact_size(egui::vec2(side, side), Sense::click());
            response.widget_info(|| {
                egui::WidgetInfo::labeled(
                    egui::Role::Image,
                    true,
                    format!("APE channel {cx} against channel {cy}"),
                )
            });
            let painter = ui.painter_at(rect);
            painter.rect_filled(rect, 2.0, Color32::from_gray(20));
            painter.rect_stroke(
                rect,
                2.0,
                Stroke::new(1.0, Color32::from_gray(90)),
                egui::StrokeKind::Inside,
            );
            let inner = rect.shrink(14.0);
            let to_screen = |e: [f32; 3]| {
                Pos2::new(
                    inner.min.x + (e[cx] - low[cx]) / span * inner.width(),
                    inner.max.y - (e[cy] - low[cy]) / span * inner.height(),
                )
            };
            painter.text(
                Pos2::new(rect.max.x - 4.0, rect.max.y - 2.0),
                Align2::RIGHT_BOTTOM,
                format!("channel {cx}"),
                FontId::proportional(11.0),
                Color32::GRAY,
            );
            painter.text(
                rect.min + egui::vec2(4.0, 2.0),
                Align2::LEFT_TOP,
                format!("channel {cy}"),
                FontId::proportional(11.0),
                Color32::GRAY,
            );
            for p in &points {
                let at = to_screen(p.embedding);
                marker(&painter, at, colour_of(p), p.kind);
                if p.kind == PointKind::OrganCentre && p.scan == state.active {
                    painter.circle_stroke(at, 5.0, Stroke::new(1.0, Color32::WHITE));
                }
            }
            // The point under the pointer: named on hover, opened on click.
            let nearest = response.hover_pos().and_then(|pos| {
                points
                    .iter()
                    .map(|p| (p, to_screen(p.embedding).distance(pos)))
                    .filter(|(_, d)| *d < 8.0)
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(p, _)| p)
            });
            if let Some(p) = nearest {
                let scan = state.cohort.get(p.scan).map_or("?", |s| s.name.as_str());
                let e = p.embedding;
                let response = response.clone().on_hover_text(format!(
                    "{} on {scan}\nAPE ({:+.2}, {:+.2}, {:+.2})\nRAS ({:.1}, {:.1}, {:.1}) mm\nclick: open it there",
                    p.label, e[0], e[1], e[2], p.world.x, p.world.y, p.world.z
                ));
                if response.clicked() {
                    clicked = Some(p.clone());
                }
            }
        }
    });
    // Legend.
    ui.horizontal_wrapped(|ui| {
        for (i, label) in labels.iter().enumerate() {
            swatch(ui, palette(i), PointKind::OrganCentre);
            ui.label(*label);
        }
        if points.iter().any(|p| p.kind == PointKind::Landmark) {
            swatch(ui, LANDMARK, PointKind::Landmark);
            ui.label("landmark and its matches");
        }
    });
    ui.horizontal_wrapped(|ui| {
        swatch(ui, Color32::GRAY, PointKind::OrganCentre);
        ui.label("organ centre (label map)");
        swatch(ui, Color32::GRAY, PointKind::BoxCentre);
        ui.label("organ box centre; white ring: the active scan; all axes on one scale");
    });
    clicked
}

/// A point's mark: a dot for an organ centre, a square for a box centre, a cross for the
/// landmark.
fn marker(painter: &egui::Painter, at: Pos2, colour: Color32, kind: PointKind) {
    match kind {
        PointKind::OrganCentre => {
            painter.circle_filled(at, 3.5, colour);
        }
        PointKind::BoxCentre => {
            let r = Rect::from_center_size(at, egui::vec2(7.0, 7.0));
            painter.rect_stroke(r, 0.0, Stroke::new(1.5, colour), egui::StrokeKind::Middle);
        }
        PointKind::Landmark => {
            let d = 5.0;
            let stroke = Stroke::new(2.0, colour);
            painter.line_segment([at - egui::vec2(d, d), at + egui::vec2(d, d)], stroke);
            painter.line_segment([at + egui::vec2(-d, d), at + egui::vec2(d, -d)], stroke);
        }
    }
}

/// A legend entry's mark.
fn swatch(ui: &mut egui::Ui, colour: Color32, kind: PointKind) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(14.0, 14.0), Sense::hover());
    marker(ui.painter(), rect.center(), colour, kind);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ape::ape_map::ApeMap;
    use ape::geometry::Affine;
    use ape::volume::Volume;
    use std::sync::Arc;

    /// A map whose embedding is the world position / 100 (a perfect APE).
    fn identity_map() -> ApeMap {
        let affine = Affine::from_spacing(DVec3::splat(10.0), DVec3::splat(-100.0)).unwrap();
        let mut cells = Vec::new();
        for k in 0..21 {
            for j in 0..21 {
                for i in 0..21 {
                    let w = affine.to_world(DVec3::new(i as f64, j as f64, k as f64)) / 100.0;
                    cells.push([w.x as f32, w.y as f32, w.z as f32]);
                }
            }
        }
        ApeMap::new(Volume::new(cells, [21, 21, 21], affine).unwrap())
    }

    #[test]
    fn organs_boxes_and_the_landmark_become_points_at_their_embeddings() {
        let mut state = ViewerState::default();
        for name in ["a", "b"] {
            let id = state.add(format!("{name}.nii.gz").into());
            state.cohort[id].map = Some(Arc::new(identity_map()));
        }
        state.cohort[0].organs = vec![("liver".into(), DVec3::new(-50.0, 10.0, 20.0))];
        state.cohort[1].organs = vec![
            ("liver".into(), DVec3::new(-40.0, 0.0, 30.0)),
            // Outside the map: left out, not a point at a wrong place.
            ("far".into(), DVec3::new(900.0, 0.0, 0.0)),
        ];
        state.boxes.set(ape::annotations::OrganBox {
            scan: "b".into(),
            organ: "spleen".into(),
            bbox: ape::geometry::WorldBox::new(DVec3::splat(0.0), DVec3::splat(20.0)),
            origin: ape::annotations::BoxOrigin::Drawn,
        });
        let points = plot_points(&state);
        assert_eq!(points.len(), 3, "{points:?}");
        let liver_b = points
            .iter()
            .find(|p| p.scan == 1 && p.label == "liver")
            .unwrap();
        assert_eq!(liver_b.kind, PointKind::OrganCentre);
        for (e, w) in liver_b.embedding.iter().zip([-0.4, 0.0, 0.3]) {
            assert!((e - w).abs() < 1e-4, "{:?}", liver_b.embedding);
        }
        let spleen = points.iter().find(|p| p.label == "spleen").unwrap();
        assert_eq!(spleen.kind, PointKind::BoxCentre);
        assert_eq!(spleen.world, DVec3::splat(10.0));
    }
}
