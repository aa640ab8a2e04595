//! The left panel: the cohort with each scan's progress, window/level presets, the APE overlay,
//! and the landmark's matches.

use egui::{ProgressBar, RichText};

use crate::annotations::BoxOrigin;
use crate::slicing::WindowLevel;

use super::state::{OverlayMode, ScanStatus, ViewerState};

/// What the user asked for in the panel that the app must do (it owns dialogs and the worker).
#[derive(Debug, Default)]
pub struct SidebarActions {
    pub open_files: bool,
    pub open_folder: bool,
    pub screenshot: bool,
    pub help: bool,
    pub embedding_plot: bool,
    pub save_boxes: bool,
    pub load_boxes: bool,
}

pub fn sidebar(ui: &mut egui::Ui, state: &mut ViewerState) -> SidebarActions {
    let mut actions = SidebarActions::default();
    ui.horizontal(|ui| {
        actions.open_files = ui
            .button("Open…")
            .on_hover_text("Open NIfTI scans (Ctrl+O)")
            .clicked();
        actions.open_folder = ui.button("Open folder…").clicked();
        actions.screenshot = ui
            .button("Screenshot")
            .on_hover_text("Save the window as PNG")
            .clicked();
        actions.embedding_plot = ui
            .button("APE space")
            .on_hover_text("Organ centres, boxes and the landmark of the cohort in APE space (E)")
            .clicked();
        actions.help = ui
            .button("?")
            .on_hover_text("Mouse and keyboard controls (F1)")
            .clicked();
    });
    ui.separator();
    ui.heading("Cohort");
    let mut activate = None;
    for (id, scan) in state.cohort.iter().enumerate() {
        ui.horizontal(|ui| {
            let selected = id == state.active;
            if ui.selectable_label(selected, &scan.name).clicked() {
                activate = Some(id);
            }
            match &scan.status {
                ScanStatus::Loading => {
                    ui.label("reading…");
                }
                ScanStatus::Embedding(p) => {
                    ui.add(ProgressBar::new(*p).desired_width(80.0).text("APE"));
                }
                ScanStatus::Ready => {
                    ui.label(RichText::new("ready").weak());
                }
                ScanStatus::Failed(e) => {
                    // A scan that was read but not embedded is still shown: say what is missing.
                    let what = if scan.scan.is_some() {
                        "no APE"
                    } else {
                        "failed"
                    };
                    ui.label(RichText::new(what).color(egui::Color32::LIGHT_RED))
                        .on_hover_text(e);
                }
            }
        });
    }
    if let Some(id) = activate {
        state.activate(id);
    }
    if state.cohort.is_empty() {
        ui.label("No scans yet: drop NIfTI files on the window, or Open….");
    }

    ui.separator();
    ui.heading("Window / level");
    ui.horizontal_wrapped(|ui| {
        for (i, (name, preset)) in WindowLevel::PRESETS.iter().enumerate() {
            if ui
                .selectable_label(state.window == *preset, *name)
                .on_hover_text(format!(
                    "{} / {} (key {})",
                    preset.width,
                    preset.level,
                    i + 1
                ))
                .clicked()
            {
                state.window = *preset;
            }
        }
    });
    ui.horizontal(|ui| {
        let w = ui.label("W");
        ui.add(egui::DragValue::new(&mut state.window.width).range(1.0..=5000.0))
            .labelled_by(w.id);
        let l = ui.label("L");
        ui.add(egui::DragValue::new(&mut state.window.level).range(-1500.0..=3000.0))
            .labelled_by(l.id);
    });

    ui.separator();
    if state.gpu_available {
        ui.checkbox(&mut state.gpu_slicing, "slice on the GPU")
            .on_hover_text(
                "Off: the CPU draws the views (the reference the GPU path is tested against)",
            );
    }
    ui.heading("APE overlay");
    ui.horizontal_wrapped(|ui| {
        let o = &mut state.overlay.mode;
        ui.radio_value(o, OverlayMode::Off, "off");
        ui.radio_value(o, OverlayMode::Rgb, "RGB");
        for c in 0..3 {
            ui.radio_value(o, OverlayMode::Channel(c), format!("ch {c}"));
        }
    });
    ui.add(egui::Slider::new(&mut state.overlay.opacity, 0.0..=1.0).text("opacity"));
    ui.horizontal(|ui| {
        let label = ui.checkbox(&mut state.overlay.isolines, "iso-lines every");
        ui.add(
            egui::DragValue::new(&mut state.overlay.isoline_step)
                .range(0.05..=2.0)
                .speed(0.01),
        )
        .labelled_by(label.id);
    });

    ui.separator();
    ui.heading("Landmark");
    ui.checkbox(
        &mut state.click_queries,
        "a click finds the point on every scan",
    );
    let mut jump = None;
    if let Some(l) = &state.landmark {
        ui.label(format!(
            "on {}: ({:.1}, {:.1}, {:.1}) mm RAS",
            state.cohort.get(l.source).map_or("?", |s| s.name.as_str()),
            l.world.x,
            l.world.y,
            l.world.z
        ));
        egui::Grid::new("matches").striped(true).show(ui, |ui| {
            ui.label(RichText::new("scan").strong());
            ui.label(RichText::new("match (RAS mm)").strong());
            ui.label(RichText::new("distance").strong());
            ui.end_row();
            for (id, m) in l.matches.iter().enumerate() {
                let name = state.cohort.get(id).map_or("?", |s| s.name.as_str());
                match m {
                    Some(m) => {
                        if ui
                            .link(name)
                            .on_hover_text("show the scan at its match")
                            .clicked()
                        {
                            jump = Some(id);
                        }
                        ui.label(format!(
                            "{:.1}, {:.1}, {:.1}",
                            m.world.x, m.world.y, m.world.z
                        ));
                        ui.label(if id == l.source {
                            "query".to_owned()
                        } else {
                            format!("{:.3}", m.distance)
                        });
                    }
                    None => {
                        ui.label(name);
                        ui.label("not embedded yet");
                        ui.label("");
                    }
                }
                ui.end_row();
            }
        });
    }
    if let Some(id) = jump {
        state.activate(id);
    }

    ui.separator();
    ui.heading("Organ boxes");
    ui.horizontal(|ui| {
        let label = ui.label("organ");
        ui.text_edit_singleline(&mut state.organ)
            .labelled_by(label.id);
    });
    ui.checkbox(&mut state.draw_boxes, "left drag draws the organ's box");
    ui.horizontal(|ui| {
        if ui
            .button("Predict on the other scans")
            .on_hover_text("few-shot: from every drawn or accepted box of this organ")
            .clicked()
        {
            state.predict_boxes();
        }
    });
    ui.horizontal(|ui| {
        if ui.button("Undo").on_hover_text("Ctrl+Z").clicked() {
            state.undo();
        }
        if ui.button("Redo").on_hover_text("Ctrl+Y").clicked() {
            state.redo();
        }
        actions.save_boxes = ui.button("Save…").clicked();
        actions.load_boxes = ui.button("Load…").clicked();
    });
    let mut accept = None;
    for (n, b) in state.boxes.boxes.iter().enumerate() {
        ui.horizontal(|ui| {
            let kind = match b.origin {
                BoxOrigin::Drawn => "drawn".to_owned(),
                BoxOrigin::Accepted => "accepted".to_owned(),
                BoxOrigin::Predicted { supports, alpha } => {
                    format!("predicted ({supports} shots, α {alpha:.2})")
                }
            };
            ui.label(format!("{} {}: {kind}", b.scan, b.organ))
                .on_hover_text(b.bbox.to_string());
            if matches!(b.origin, BoxOrigin::Predicted { .. })
                && ui.small_button("accept").clicked()
            {
                accept = Some(n);
            }
        });
    }
    if let Some(n) = accept {
        state.history.record(&state.boxes);
        state.boxes.boxes[n].origin = BoxOrigin::Accepted;
    }
    actions
}
