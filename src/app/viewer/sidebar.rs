//! The left panel: the cohort with each scan's progress, window/level presets, the APE overlay,
//! and the landmark's matches.

use egui::{ProgressBar, RichText};

use ape::annotations::BoxOrigin;
use ape::slicing::WindowLevel;
use ape::transfer::Transferred;

use super::commands::ViewerCommand;
use super::state::{CohortScan, OverlayMode, ScanStatus, ViewerState};

/// The panel; returns the commands it was asked for that the app carries out (it owns the
/// dialogs, windows and views); the state's own are carried out here.
pub fn sidebar(ui: &mut egui::Ui, state: &mut ViewerState) -> Vec<ViewerCommand> {
    let mut commands = Vec::new();
    toolbar(ui, &mut commands);
    ui.separator();
    cohort_list(ui, state);
    ui.separator();
    window_level(ui, state);
    ui.separator();
    if state.gpu_available {
        ui.checkbox(&mut state.gpu_slicing, "slice on the GPU")
            .on_hover_text(
                "Off: the CPU draws the views (the reference the GPU path is tested against)",
            );
    }
    overlay_settings(ui, state);
    ui.separator();
    landmark_matches(ui, state);
    ui.separator();
    organ_boxes(ui, state, &mut commands);
    commands
}

/// A button of the command table; returns whether it was clicked.
fn command_button(ui: &mut egui::Ui, command: ViewerCommand) -> bool {
    ui.button(command.label())
        .on_hover_text(command.tooltip())
        .clicked()
}

/// Open, screenshot, the APE-space window and the help.
fn toolbar(ui: &mut egui::Ui, commands: &mut Vec<ViewerCommand>) {
    ui.horizontal(|ui| {
        for command in [
            ViewerCommand::OpenScans,
            ViewerCommand::OpenFolder,
            ViewerCommand::OpenPacs,
            ViewerCommand::Screenshot,
            ViewerCommand::ToggleApeSpace,
            ViewerCommand::ToggleHelp,
        ] {
            if command_button(ui, command) {
                commands.push(command);
            }
        }
    });
}

/// Each scan with its progress; a click makes it the active one.
fn cohort_list(ui: &mut egui::Ui, state: &mut ViewerState) {
    ui.heading("Cohort");
    let mut activate = None;
    for (id, scan) in state.cohort.iter().enumerate() {
        ui.horizontal(|ui| {
            if ui
                .selectable_label(id == state.active, &scan.name)
                .clicked()
            {
                activate = Some(id);
            }
            scan_status(ui, scan);
        });
    }
    if let Some(id) = activate {
        state.activate(id);
    }
    if state.cohort.is_empty() {
        ui.label("No scans yet: drop NIfTI files on the window, or Open….");
    }
}

fn scan_status(ui: &mut egui::Ui, scan: &CohortScan) {
    match &scan.status {
        ScanStatus::Loading => {
            ui.label("reading…");
        }
        ScanStatus::Embedding(p) => {
            ui.add(ProgressBar::new(*p).desired_width(80.0).text("APE"));
        }
        ScanStatus::Ready => match &scan.si_fault {
            None => {
                ui.label(RichText::new("ready").weak());
            }
            Some(fault) => {
                let short = match fault {
                    ape::SiFault::Fold(f) => {
                        format!(
                            "S–I fold z {:.0}…{:.0} mm",
                            f.z_range_mm[0], f.z_range_mm[1]
                        )
                    }
                    ape::SiFault::NotRising { .. } => "not S–I".to_owned(),
                };
                ui.label(RichText::new(short).color(ui.visuals().warn_fg_color))
                    .on_hover_text(format!("The APE map {fault}"));
            }
        },
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
}

/// The presets of the command table, and width and level by number.
fn window_level(ui: &mut egui::Ui, state: &mut ViewerState) {
    ui.heading("Window / level");
    ui.horizontal_wrapped(|ui| {
        for (n, (_, preset)) in WindowLevel::PRESETS.iter().enumerate() {
            let command = ViewerCommand::Preset(n);
            if ui
                .selectable_label(state.window == *preset, command.label())
                .on_hover_text(command.tooltip())
                .clicked()
            {
                command.apply(state);
            }
        }
    });
    ui.horizontal(|ui| {
        let w = ui.label("W");
        let (lo, hi) = WindowLevel::WIDTH_RANGE;
        ui.add(egui::DragValue::new(&mut state.window.width).range(lo..=hi))
            .labelled_by(w.id);
        let l = ui.label("L");
        let (lo, hi) = WindowLevel::LEVEL_RANGE;
        ui.add(egui::DragValue::new(&mut state.window.level).range(lo..=hi))
            .labelled_by(l.id);
    });
    state.window = state.window.sanitized();
}

fn overlay_settings(ui: &mut egui::Ui, state: &mut ViewerState) {
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
}

/// The landmark and its match on every scan; a click on one shows that scan there.
fn landmark_matches(ui: &mut egui::Ui, state: &mut ViewerState) {
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
            ui.label(RichText::new("confidence").strong())
                .on_hover_text(
                    "from the cycle error (the match carried back lands this far from the \
                     click) and the share of neighbouring matches that agree; \
                     'outside?': found at the scan's edge and not coming back",
                );
            ui.end_row();
            let source = state.cohort.get(l.source).map_or("?", |s| s.name.as_str());
            if match_row(ui, source, l.matches[l.source].as_ref(), true) {
                jump = Some(l.source);
            }
            ui.end_row();
            // Most confident first; scans without a map yet last.
            for (id, m) in l.ranked() {
                let name = state.cohort.get(id).map_or("?", |s| s.name.as_str());
                if match_row(ui, name, Some(&m), false) {
                    jump = Some(id);
                }
                ui.end_row();
            }
            for (id, _) in l.matches.iter().enumerate().filter(|(_, m)| m.is_none()) {
                let name = state.cohort.get(id).map_or("?", |s| s.name.as_str());
                match_row(ui, name, None, false);
                ui.end_row();
            }
        });
    }
    if let Some(id) = jump {
        state.activate(id);
    }
}

/// One scan's row of the matches grid; returns whether its link was clicked.
fn match_row(ui: &mut egui::Ui, name: &str, m: Option<&Transferred>, is_source: bool) -> bool {
    let Some(m) = m else {
        ui.label(name);
        ui.label("not embedded yet");
        ui.label("");
        return false;
    };
    let clicked = ui
        .link(name)
        .on_hover_text("show the scan at its match")
        .clicked();
    ui.label(format!(
        "{:.1}, {:.1}, {:.1}",
        m.world.x, m.world.y, m.world.z
    ));
    if is_source {
        ui.label("query");
    } else {
        let c = m.confidence;
        let text = format!(
            "{:.0}%{}",
            c.score() * 100.0,
            if c.outside_fov {
                "  outside?"
            } else if c.doubtful() {
                "  doubtful"
            } else {
                ""
            }
        );
        let image = c.image_ncc.map_or_else(
            || "not refined by the image".to_owned(),
            |ncc| format!("image patches correlate at {ncc:.2}"),
        );
        let detail = format!(
            "cycle error {:.1} mm, {} of {} neighbouring matches agree, embedding distance {:.3}, {image}",
            c.cycle_error_mm, c.inliers, c.supports, c.embedding_distance
        );
        if c.doubtful() {
            ui.colored_label(ui.visuals().warn_fg_color, text)
        } else {
            ui.label(text)
        }
        .on_hover_text(detail);
    }
    clicked
}

/// The organ being drawn, prediction, undo, files, and the list of boxes.
fn organ_boxes(ui: &mut egui::Ui, state: &mut ViewerState, commands: &mut Vec<ViewerCommand>) {
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
        for command in [ViewerCommand::Undo, ViewerCommand::Redo] {
            if command_button(ui, command) {
                command.apply(state);
            }
        }
        for command in [ViewerCommand::SaveBoxes, ViewerCommand::LoadBoxes] {
            if command_button(ui, command) {
                commands.push(command);
            }
        }
    });
    box_list(ui, state);
}

/// Every box with where it came from; predictions can be accepted as they are.
fn box_list(ui: &mut egui::Ui, state: &mut ViewerState) {
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
        state.accept_box(n);
    }
}
