//! The viewer: an eframe/egui application over the library. Tri-planar views of the active scan
//! linked by a world-space crosshair, APE overlays, and landmark queries across the cohort.
//!
//! - [`state`]: what the viewer knows, free of GUI types (tested without a window).
//! - [`worker`]: reading and embedding scans on a background thread.
//! - [`render`]: a view's picture (slice, window/level, overlay) on the CPU.
//! - [`views`]: the slice views and the cohort strip; [`sidebar`]: the left panel.
//! - [`embedding_plot`]: the cohort in APE space (organ centres, boxes, landmark).
//! - [`box_edit`]: what a drag grabs of an organ box (edges, corners, inside) and what it does.

pub mod box_edit;
pub mod embedding_plot;
pub mod gpu_slice;
pub mod recent;
pub mod render;
pub mod sidebar;
pub mod state;
pub mod views;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::Device;

use crate::cache::MapCache;
use crate::model::ApeModel;
use crate::slicing::{Plane, WindowLevel};

use state::{OverlayMode, ScanStatus, ViewerState};
use views::{Hover, Pictures, ViewState};
use worker::{Worker, WorkerEvent};

/// The application: state, the views' zoom and pan, textures, the background worker.
#[derive(Debug)]
pub struct ApeApp {
    pub state: ViewerState,
    views: [ViewState; 3],
    pictures: Pictures,
    worker: Worker,
    hover: Option<Hover>,
    show_help: bool,
    show_embedding_plot: bool,
    /// A DICOM folder with several series, waiting for the user to choose.
    choose_series: Option<(PathBuf, Vec<crate::io::dicom::SeriesInfo>)>,
    /// Recently opened scans, and where that list is kept (`None`: not kept, as in tests).
    recent: Vec<PathBuf>,
    recent_dir: Option<PathBuf>,
    /// The boxes as last autosaved.
    autosaved: Option<crate::annotations::BoxSet>,
}

impl ApeApp {
    /// An app whose worker embeds with `model` on `device` (no model: scans shown without APE;
    /// `model_note` says why in the status bar).
    pub fn new(
        ctx: &egui::Context,
        model: Option<Arc<ApeModel>>,
        device: Device,
        cache: Option<MapCache>,
        model_note: String,
    ) -> Self {
        let wake_ctx = ctx.clone();
        let worker = Worker::spawn(model, device, cache, move || wake_ctx.request_repaint());
        let state = ViewerState {
            message: model_note,
            ..ViewerState::default()
        };
        Self {
            state,
            views: [ViewState::default(); 3],
            pictures: Pictures::default(),
            worker,
            hover: None,
            show_help: false,
            show_embedding_plot: false,
            choose_series: None,
            recent: Vec::new(),
            recent_dir: None,
            autosaved: None,
        }
    }

    /// Slices on the GPU through the renderer's own wgpu device (see [`gpu_slice`]) when there
    /// is one; otherwise the views stay on the CPU path.
    pub fn with_gpu(mut self, render_state: Option<&eframe::egui_wgpu::RenderState>) -> Self {
        let installed = render_state.is_some_and(gpu_slice::SliceRenderer::install);
        self.state.gpu_available = installed;
        self.state.gpu_slicing = installed;
        self
    }

    /// Remembers opened scans in `dir` across sessions (see [`recent`]).
    pub fn with_recent_files(mut self, dir: PathBuf) -> Self {
        self.recent = recent::load(&dir);
        // Boxes of the last session come back (the autosave is written atomically).
        let autosave = dir.join("boxes-autosave.json");
        if let Ok(set) = crate::annotations::BoxSet::load(&autosave) {
            self.autosaved = Some(set.clone());
            self.state.boxes = set;
        }
        self.recent_dir = Some(dir);
        self
    }

    /// Adds scans to the cohort; they are read and embedded in the background. A DICOM folder
    /// with several series asks which one to open.
    pub fn open(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        for path in paths {
            if path.is_dir()
                && crate::io::dicom::is_dicom_folder(&path)
                && let Ok(series) = crate::io::dicom::list_series(&path)
                && series.len() > 1
            {
                self.choose_series = Some((path, series));
                continue;
            }
            if let Some(dir) = &self.recent_dir {
                self.recent = recent::remember(&self.recent, &path);
                if let Err(e) = recent::save(dir, &self.recent) {
                    self.state.message = format!("could not save the recent files list: {e}");
                }
            }
            let id = self.state.add(path.clone());
            if !self.worker.open(id, path) {
                self.state.cohort[id].status =
                    ScanStatus::Failed("the background worker has stopped".into());
            }
        }
    }

    /// Whether any scan is still being read or embedded.
    pub fn busy(&self) -> bool {
        self.state
            .cohort
            .iter()
            .any(|s| matches!(s.status, ScanStatus::Loading | ScanStatus::Embedding(_)))
    }

    /// Applies what the worker has reported.
    pub fn poll_worker(&mut self) {
        for event in self.worker.poll() {
            match event {
                WorkerEvent::Loaded(id, scan) => self.state.scan_loaded(id, scan),
                WorkerEvent::Progress(id, p) => {
                    if let Some(s) = self.state.cohort.get_mut(id) {
                        s.status = ScanStatus::Embedding(p);
                    }
                }
                WorkerEvent::Embedded(id, map, index) => self.state.map_ready(id, map, index),
                WorkerEvent::Organs(id, organs) => match (organs, self.state.cohort.get_mut(id)) {
                    (Ok(organs), Some(s)) => s.organs = organs,
                    (Err(e), Some(s)) => {
                        self.state.message =
                            format!("{}: its label map was not read: {e}", s.path.display());
                    }
                    (_, None) => {}
                },
                WorkerEvent::Failed(id, e) => {
                    if let Some(s) = self.state.cohort.get_mut(id) {
                        self.state.message = format!("{}: {e}", s.path.display());
                        s.status = ScanStatus::Failed(e);
                    }
                }
            }
        }
    }

    /// The whole window's UI.
    pub fn show(&mut self, ui: &mut egui::Ui) {
        self.poll_worker();
        self.keyboard(ui.ctx());
        self.dropped_files(ui.ctx());

        let mut reopen = None;
        let actions = egui::Panel::left("sidebar")
            .default_size(300.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .show(ui, |ui| {
                        let actions = sidebar::sidebar(ui, &mut self.state);
                        if !self.recent.is_empty() {
                            ui.separator();
                            ui.collapsing("Recent", |ui| {
                                for path in &self.recent {
                                    let name = path.file_name().map_or_else(
                                        || path.display().to_string(),
                                        |n| n.to_string_lossy().into_owned(),
                                    );
                                    if ui
                                        .link(name)
                                        .on_hover_text(path.display().to_string())
                                        .clicked()
                                    {
                                        reopen = Some(path.clone());
                                    }
                                }
                            });
                        }
                        actions
                    })
                    .inner
            })
            .inner;
        if let Some(path) = reopen {
            self.open([path]);
        }
        if actions.open_files {
            let files = rfd::FileDialog::new()
                .add_filter("NIfTI", &["nii", "gz"])
                .pick_files();
            self.open(files.unwrap_or_default());
        }
        if actions.open_folder
            && let Some(dir) = rfd::FileDialog::new().pick_folder()
        {
            self.open(scans_in(&dir));
        }
        if actions.screenshot {
            request_screenshot(ui.ctx());
        }
        self.show_help ^= actions.help;
        self.show_embedding_plot ^= actions.embedding_plot;
        if actions.save_boxes
            && let Some(path) = rfd::FileDialog::new()
                .add_filter("boxes", &["json", "csv"])
                .set_file_name("boxes.mrk.json")
                .save_file()
        {
            self.state.message = match self.state.boxes.save(&path) {
                Ok(()) => format!("boxes saved to {}", path.display()),
                Err(e) => e.to_string(),
            };
        }
        if actions.load_boxes
            && let Some(path) = rfd::FileDialog::new()
                .add_filter("boxes", &["json", "csv"])
                .pick_file()
        {
            self.load_boxes(&path);
        }
        self.autosave_boxes();
        self.save_screenshots(ui.ctx());

        egui::Panel::bottom("status").show(ui, |ui| {
            ui.horizontal(|ui| {
                match self.hover {
                    Some(h) => {
                        ui.monospace(format!(
                            "RAS ({:7.1}, {:7.1}, {:7.1}) mm",
                            h.world.x, h.world.y, h.world.z
                        ));
                        if let Some(hu) = h.hu {
                            ui.monospace(format!("{hu:6.0} HU"));
                        }
                        if let Some(e) = h.embedding {
                            ui.monospace(format!("APE ({:+.2}, {:+.2}, {:+.2})", e[0], e[1], e[2]));
                        }
                    }
                    None => {
                        ui.monospace("");
                    }
                }
                ui.separator();
                ui.label(&self.state.message);
            });
        });
        egui::Panel::bottom("cohort strip")
            .default_size(200.0)
            .show(ui, |ui| {
                views::cohort_strip(ui, &mut self.state, &mut self.pictures)
            });

        self.hover = None;
        egui::CentralPanel::default().show(ui, |ui| {
            let size = ui.available_size();
            let cell = egui::vec2((size.x - 6.0) / 2.0, (size.y - 6.0) / 2.0);
            let planes = [Plane::Axial, Plane::Coronal, Plane::Sagittal];
            egui::Grid::new("views")
                .spacing(egui::vec2(6.0, 6.0))
                .show(ui, |ui| {
                    for (n, plane) in planes.iter().enumerate() {
                        ui.allocate_ui(cell, |ui| {
                            ui.set_min_size(cell);
                            views::slice_view(
                                ui,
                                &mut self.state,
                                &mut self.pictures,
                                *plane,
                                &mut self.views[n],
                                &mut self.hover,
                            );
                        });
                        if n == 1 {
                            ui.end_row();
                        }
                    }
                    ui.allocate_ui(cell, |ui| {
                        ui.set_min_size(cell);
                        ui.vertical(|ui| self.info_panel(ui));
                    });
                });
        });

        if self.show_help {
            egui::Window::new("Controls")
                .collapsible(false)
                .open(&mut self.show_help)
                .show(ui.ctx(), help);
        }
        self.series_chooser(ui.ctx());
        if self.show_embedding_plot {
            let mut open = true;
            let mut clicked = None;
            egui::Window::new("APE space")
                .open(&mut open)
                .default_width(760.0)
                .show(ui.ctx(), |ui| {
                    clicked = embedding_plot::embedding_plot(ui, &self.state)
                });
            self.show_embedding_plot = open;
            if let Some(p) = clicked {
                self.state.activate(p.scan);
                self.state.crosshair = p.world;
            }
        }
        if self.busy() {
            ui.ctx()
                .request_repaint_after(std::time::Duration::from_millis(100));
        }
    }

    /// The window that asks which series of a DICOM folder to open.
    fn series_chooser(&mut self, ctx: &egui::Context) {
        let Some((dir, series)) = self.choose_series.clone() else {
            return;
        };
        let mut chosen: Vec<PathBuf> = Vec::new();
        let mut open = true;
        egui::Window::new("Choose a DICOM series")
            .collapsible(false)
            .open(&mut open)
            .show(ctx, |ui| {
                ui.label(format!("{} holds {} series:", dir.display(), series.len()));
                egui::Grid::new("series").striped(true).show(ui, |ui| {
                    for s in &series {
                        ui.label(if s.description.is_empty() {
                            "(no description)"
                        } else {
                            s.description.as_str()
                        });
                        ui.label(format!("{} slices", s.slices));
                        ui.monospace(&s.uid);
                        if ui.button("Open").clicked() {
                            chosen.push(crate::io::dicom::series_path(&dir, &s.uid));
                        }
                        ui.end_row();
                    }
                });
                if ui.button("Open all").clicked() {
                    chosen = series
                        .iter()
                        .map(|s| crate::io::dicom::series_path(&dir, &s.uid))
                        .collect();
                }
            });
        if !chosen.is_empty() || !open {
            self.choose_series = None;
        }
        self.open(chosen);
    }

    /// Replaces the boxes with those of a file (one undo step).
    pub fn load_boxes(&mut self, path: &Path) {
        match crate::annotations::BoxSet::load(path) {
            Ok(set) => {
                self.state.history.record(&self.state.boxes);
                self.state.boxes = set;
                self.state.message = format!("boxes loaded from {}", path.display());
            }
            Err(e) => self.state.message = e.to_string(),
        }
    }

    /// Writes the boxes to `boxes-autosave.json` in the config folder whenever they change, so
    /// that a crash loses nothing.
    fn autosave_boxes(&mut self) {
        let Some(dir) = &self.recent_dir else {
            return;
        };
        if self.autosaved.as_ref() == Some(&self.state.boxes) {
            return;
        }
        let path = dir.join("boxes-autosave.json");
        if let Err(e) = std::fs::create_dir_all(dir)
            .map_err(|e| e.to_string())
            .and_then(|()| self.state.boxes.save(&path).map_err(|e| e.to_string()))
        {
            self.state.message = format!("autosave failed: {e}");
        }
        self.autosaved = Some(self.state.boxes.clone());
    }

    fn info_panel(&mut self, ui: &mut egui::Ui) {
        let Some(scan) = self.state.active_scan() else {
            return;
        };
        ui.heading(&scan.name)
            .on_hover_text(scan.path.display().to_string());
        if let Some(s) = &scan.scan {
            let [x, y, z] = s.volume.shape();
            let sp = s.volume.affine().spacing();
            let codes: String = s.volume.affine().axis_codes().iter().collect();
            ui.label(format!(
                "{x} × {y} × {z} voxels, {:.2} × {:.2} × {:.2} mm, {codes}",
                sp.x, sp.y, sp.z
            ));
            let (lo, hi) = s.hu_range();
            ui.label(format!("HU {lo:.0} … {hi:.0}"));
        }
        ui.label(format!(
            "crosshair ({:.1}, {:.1}, {:.1}) mm RAS",
            self.state.crosshair.x, self.state.crosshair.y, self.state.crosshair.z
        ));
        if ui.button("Reset views (R)").clicked() {
            self.views = [ViewState::default(); 3];
        }
    }

    fn keyboard(&mut self, ctx: &egui::Context) {
        use egui::Key;
        let typing = ctx.egui_wants_keyboard_input();
        if typing {
            return;
        }
        ctx.input(|i| {
            for (n, key) in [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::Num5]
                .iter()
                .enumerate()
            {
                if i.key_pressed(*key) {
                    self.state.window = WindowLevel::PRESETS[n].1;
                }
            }
            if i.key_pressed(Key::O) {
                self.state.overlay.mode = match self.state.overlay.mode {
                    OverlayMode::Off => OverlayMode::Rgb,
                    _ => OverlayMode::Off,
                };
            }
            if i.key_pressed(Key::I) {
                self.state.overlay.isolines ^= true;
            }
            if i.key_pressed(Key::R) {
                self.views = [ViewState::default(); 3];
            }
            if i.key_pressed(Key::E) {
                self.show_embedding_plot ^= true;
            }
            if i.key_pressed(Key::F1) || i.key_pressed(Key::H) {
                self.show_help ^= true;
            }
            if i.modifiers.command && i.key_pressed(Key::Z) {
                self.state.undo();
            }
            if i.modifiers.command && i.key_pressed(Key::Y) {
                self.state.redo();
            }
            if i.key_pressed(Key::Tab) && !self.state.cohort.is_empty() {
                let next = (self.state.active + 1) % self.state.cohort.len();
                self.state.activate(next);
            }
        });
    }

    fn dropped_files(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        for path in dropped {
            if path.is_dir() {
                self.open(scans_in(&path));
            } else {
                self.open([path]);
            }
        }
    }

    fn save_screenshots(&mut self, ctx: &egui::Context) {
        if let Some(result) = ctx.data_mut(|d| d.remove_temp::<String>(screenshot_id())) {
            self.state.message = result;
        }
    }
}

fn screenshot_id() -> egui::Id {
    egui::Id::unique("ape-screenshot-result")
}

/// Asks for a screenshot; when the pixels arrive they are written to a PNG in the working
/// folder and the status bar says where.
fn request_screenshot(ctx: &egui::Context) {
    let reply = ctx.clone();
    ctx.request_screenshot(move |image| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let path = PathBuf::from(format!("ape-screenshot-{stamp}.png"));
        let [w, h] = image.size;
        let bytes: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
        let message = match image::RgbaImage::from_raw(w as u32, h as u32, bytes)
            .map(|img| img.save(&path))
        {
            Some(Ok(())) => format!("screenshot saved to {}", path.display()),
            Some(Err(e)) => format!("screenshot not saved: {e}"),
            None => "screenshot not saved: bad image size".to_owned(),
        };
        reply.data_mut(|d| d.insert_temp(screenshot_id(), message));
        reply.request_repaint();
    });
}

fn help(ui: &mut egui::Ui) {
    egui::Grid::new("help").striped(true).show(ui, |ui| {
        for (what, how) in [
            (
                "set the crosshair, find the point on every scan",
                "left click",
            ),
            ("scroll slices", "mouse wheel"),
            ("zoom", "Ctrl + wheel (or pinch)"),
            ("pan", "left drag"),
            (
                "window / level",
                "right drag (horizontal: width, vertical: level)",
            ),
            ("presets abdomen, liver, lung, bone, soft tissue", "1 … 5"),
            ("APE overlay on / off; iso-lines", "O; I"),
            ("next scan of the cohort", "Tab"),
            (
                "the cohort in APE space (organ centres, boxes, landmark)",
                "E",
            ),
            (
                "draw an organ box (with the box option on)",
                "left drag, in two views",
            ),
            (
                "adjust a box (box option on)",
                "drag an edge or corner handle; drag inside to move it",
            ),
            ("undo / redo box edits", "Ctrl+Z / Ctrl+Y"),
            ("reset zoom and pan", "R"),
            ("this help", "F1 or H"),
            ("open scans", "drag files or folders onto the window"),
        ] {
            ui.label(what);
            ui.label(how);
            ui.end_row();
        }
    });
}

impl eframe::App for ApeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.show(ui);
    }
}

/// The scans in a folder: the folder itself when it holds a DICOM series, else its NIfTI scans
/// (not label maps), by name.
pub fn scans_in(dir: &Path) -> Vec<PathBuf> {
    if crate::io::dicom::is_dicom_folder(dir) {
        return vec![dir.to_owned()];
    }
    let mut scans: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    crate::cohort::nifti_stem(p).is_some()
                        && !crate::labels::named_like_label_map(p)
                })
                .collect()
        })
        .unwrap_or_default();
    scans.sort();
    scans
}
