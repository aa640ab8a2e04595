//! The viewer: an eframe/egui application over the library. Tri-planar views of the active scan
//! linked by a world-space crosshair, APE overlays, and landmark queries across the cohort.
//!
//! - [`state`]: what the viewer knows, free of GUI types (tested without a window).
//! - [`worker`]: reading and embedding scans on a background thread.
//! - [`slice_picture`]: a view's picture (slice, window/level, overlay), on the CPU or the GPU.
//! - [`views`]: the slice views and the cohort strip; [`sidebar`]: the left panel.
//! - [`commands`]: every command with its label, keys and help, in one table.
//! - [`embedding_plot`]: the cohort in APE space (organ centres, boxes, landmark).
//! - [`pacs`]: the "Open from PACS…" window (servers, search, retrieval).
//! - [`box_edit`]: what a drag grabs of an organ box (edges, corners, inside) and what it does.

pub mod box_edit;
pub mod commands;
pub mod embedding_plot;
pub mod pacs;
pub mod recent;
pub mod sidebar;
pub mod slice_picture;
pub mod state;
pub mod views;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::Device;

use ape::annotations::{BoxFormat, BoxSet};
use ape::cache::MapCache;
use ape::model::ApeModel;
use ape::slicing::Plane;

use commands::ViewerCommand;
use state::{ScanStatus, ViewerState};
use views::{Hover, Pictures, ViewState};
use worker::{Worker, WorkerEvent};

/// The scan-open dialog's filter: (name, extensions); `.gz` for `.nii.gz`.
const NIFTI_FILTER: (&str, &[&str]) = ("NIfTI", &["nii", "gz"]);

/// Where in the config folder the boxes are kept between sessions.
const AUTOSAVE_FILE: &str = "boxes-autosave.json";

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
    choose_series: Option<(PathBuf, Vec<ape::io::dicom::SeriesInfo>)>,
    /// Recently opened scans, and where that list is kept (`None`: not kept, as in tests).
    recent: Vec<PathBuf>,
    recent_dir: Option<PathBuf>,
    /// The boxes as last autosaved.
    autosaved: Option<BoxSet>,
    pacs: pacs::PacsWindow,
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
            pacs: pacs::PacsWindow::default(),
        }
    }

    /// Slices on the GPU through the renderer's own wgpu device (see [`slice_picture::gpu`])
    /// when there is one; otherwise the views stay on the CPU path.
    pub fn with_gpu(mut self, render_state: Option<&eframe::egui_wgpu::RenderState>) -> Self {
        let installed = render_state.is_some_and(slice_picture::gpu::SliceRenderer::install);
        self.state.gpu_available = installed;
        self.state.gpu_slicing = installed;
        self
    }

    /// Remembers opened scans, boxes and PACS servers in `dir` across sessions (see
    /// [`recent`]).
    pub fn with_recent_files(mut self, dir: PathBuf) -> Self {
        self.pacs = std::mem::take(&mut self.pacs).with_config_dir(&dir);
        self.recent = recent::load(&dir);
        // Boxes of the last session come back (the autosave is written atomically).
        let autosave = dir.join(AUTOSAVE_FILE);
        if let Ok(set) = BoxSet::load(&autosave) {
            self.autosaved = Some(set.clone());
            self.state.boxes = set;
        }
        self.recent_dir = Some(dir);
        self
    }

    /// Series retrieved from a PACS go to `store` instead of the default one
    /// ([`ape::pacs::default_store_dir`]).
    pub fn with_pacs_store(mut self, store: ape::pacs::SeriesStore) -> Self {
        self.pacs = std::mem::take(&mut self.pacs).with_store(store);
        self
    }

    /// The "Open from PACS…" window's state.
    pub fn pacs(&self) -> &pacs::PacsWindow {
        &self.pacs
    }

    pub fn pacs_mut(&mut self) -> &mut pacs::PacsWindow {
        &mut self.pacs
    }

    /// Adds scans to the cohort; they are read and embedded in the background. A DICOM folder
    /// with several series asks which one to open.
    pub fn open(&mut self, paths: impl IntoIterator<Item = PathBuf>) {
        for path in paths {
            if path.is_dir()
                && ape::io::dicom::is_dicom_folder(&path)
                && let Ok(series) = ape::io::dicom::list_series(&path)
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

    /// Adds the scans of a folder (see [`ape::cohort::scans_in`]).
    pub fn open_folder(&mut self, dir: &Path) {
        match ape::cohort::scans_in(dir) {
            Ok(scans) if scans.is_empty() => {
                self.state.message = format!("{}: no scans in this folder", dir.display());
            }
            Ok(scans) => self.open(scans),
            Err(e) => self.state.message = e.to_string(),
        }
    }

    /// Whether any scan is still being read or embedded, or a landmark refined.
    pub fn busy(&self) -> bool {
        self.state.refining()
            || self
                .state
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
                WorkerEvent::Embedded(id, map, index, image) => {
                    self.state.map_ready(id, map, index, image);
                }
                WorkerEvent::Organs(id, organs) => match (organs, self.state.cohort.get_mut(id)) {
                    (Ok(organs), Some(s)) => {
                        s.organs = organs
                            .stats
                            .iter()
                            .map(|o| (organs.name_of(o.label), o.centre))
                            .collect();
                        s.labelled = Some(organs);
                    }
                    (Err(e), Some(s)) => {
                        self.state.message =
                            format!("{}: its label map was not read: {e}", s.path.display());
                    }
                    (_, None) => {}
                },
                WorkerEvent::SiFault(id, fault) => self.state.si_fault_found(id, fault),
                WorkerEvent::Warning(id, w) => {
                    if let Some(s) = self.state.cohort.get(id) {
                        self.state.message = format!("{}: {w}", s.name);
                    }
                }
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
        self.state.poll_refinement();
        self.keyboard(ui.ctx());
        self.dropped_files(ui.ctx());

        let mut reopen = None;
        let commands = egui::Panel::left("sidebar")
            .default_size(300.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .show(ui, |ui| {
                        let commands = sidebar::sidebar(ui, &mut self.state);
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
                        commands
                    })
                    .inner
            })
            .inner;
        if let Some(path) = reopen {
            self.open([path]);
        }
        for command in commands {
            self.run(ui.ctx(), command);
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
                .show(ui.ctx(), help_window);
        }
        self.series_chooser(ui.ctx());
        if let Some(series) = self.pacs.show(ui.ctx()) {
            let before = self.state.cohort.len();
            self.open([series.folder]);
            if self.state.cohort.len() == before + 1
                && let Some(scan) = self.state.cohort.last_mut()
            {
                scan.name = series.name;
            }
        }
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
                            chosen.push(ape::io::dicom::series_path(&dir, &s.uid));
                        }
                        ui.end_row();
                    }
                });
                if ui.button("Open all").clicked() {
                    chosen = series
                        .iter()
                        .map(|s| ape::io::dicom::series_path(&dir, &s.uid))
                        .collect();
                }
            });
        if !chosen.is_empty() || !open {
            self.choose_series = None;
        }
        self.open(chosen);
    }

    /// Carries out a command: the state's own through [`ViewerCommand::apply`], the rest here.
    fn run(&mut self, ctx: &egui::Context, command: ViewerCommand) {
        if command.apply(&mut self.state) {
            return;
        }
        match command {
            ViewerCommand::OpenScans => {
                let (name, extensions) = NIFTI_FILTER;
                let files = rfd::FileDialog::new()
                    .add_filter(name, extensions)
                    .pick_files();
                self.open(files.unwrap_or_default());
            }
            ViewerCommand::OpenFolder => {
                if let Some(dir) = rfd::FileDialog::new().pick_folder() {
                    self.open_folder(&dir);
                }
            }
            ViewerCommand::OpenPacs => self.pacs.open = true,
            ViewerCommand::Screenshot => request_screenshot(ctx),
            ViewerCommand::ToggleApeSpace => self.show_embedding_plot ^= true,
            ViewerCommand::ToggleHelp => self.show_help ^= true,
            ViewerCommand::ResetViews => self.views = [ViewState::default(); 3],
            ViewerCommand::SaveBoxes => {
                let default_name = format!("boxes.{}", BoxFormat::SlicerMarkups.extension());
                if let Some(path) = box_file_dialog().set_file_name(default_name).save_file() {
                    self.state.message = match self.state.save_boxes(&path) {
                        Ok(()) => format!("boxes saved to {}", path.display()),
                        Err(e) => e,
                    };
                }
            }
            ViewerCommand::LoadBoxes => {
                if let Some(path) = box_file_dialog().pick_file() {
                    self.load_boxes(&path);
                }
            }
            // Carried out by `apply` above.
            ViewerCommand::Preset(_)
            | ViewerCommand::ToggleOverlay
            | ViewerCommand::ToggleIsolines
            | ViewerCommand::NextScan
            | ViewerCommand::Undo
            | ViewerCommand::Redo => {}
        }
    }

    /// Replaces the boxes with those of a file (one undo step).
    pub fn load_boxes(&mut self, path: &Path) {
        match BoxSet::load_with_warnings(path) {
            Ok((set, warnings)) => {
                self.state.replace_boxes(set);
                self.state.message = match warnings.first() {
                    None => format!("boxes loaded from {}", path.display()),
                    Some(w) => format!(
                        "boxes loaded from {} with {} warning(s): {}",
                        path.display(),
                        warnings.len(),
                        w.message
                    ),
                };
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
        let path = dir.join(AUTOSAVE_FILE);
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
            for w in s.warnings() {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!("warning: {}", w.message),
                );
            }
        }
        if let Some(fault) = &scan.si_fault {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("warning: the APE map {fault}"),
            );
        }
        ui.label(format!(
            "crosshair ({:.1}, {:.1}, {:.1}) mm RAS",
            self.state.crosshair.x, self.state.crosshair.y, self.state.crosshair.z
        ));
        let reset = ViewerCommand::ResetViews;
        if ui.button(reset.label_with_shortcut()).clicked() {
            self.run(ui.ctx(), reset);
        }
    }

    /// Runs the commands whose keys were pressed, unless a text field has the keyboard.
    fn keyboard(&mut self, ctx: &egui::Context) {
        if ctx.egui_wants_keyboard_input() {
            return;
        }
        // Collected first: a command may open a dialog, which must not run inside `input`.
        let pressed: Vec<ViewerCommand> =
            ctx.input(|i| ViewerCommand::all().filter(|c| c.pressed(i)).collect());
        for command in pressed {
            self.run(ctx, command);
        }
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
                self.open_folder(&path);
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

/// The box file dialog, filtered to the endings of [`BoxFormat::ALL`] (`.mrk.json` is `.json`
/// to the dialog).
fn box_file_dialog() -> rfd::FileDialog {
    let mut extensions: Vec<&str> = Vec::new();
    for format in BoxFormat::ALL {
        let last = format.extension().rsplit('.').next().unwrap_or_default();
        if !extensions.contains(&last) {
            extensions.push(last);
        }
    }
    rfd::FileDialog::new().add_filter("boxes", &extensions)
}

/// Every control, from the tables of [`commands`].
fn help_window(ui: &mut egui::Ui) {
    egui::Grid::new("help").striped(true).show(ui, |ui| {
        for (what, how) in commands::help_rows() {
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
