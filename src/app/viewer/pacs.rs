//! "Open from PACS…": a window with a list of servers (saved in the config folder), a search
//! form, the matching studies and their series, and retrieval with progress and cancel. Every
//! exchange with a server runs on its own thread ([`ape::pacs`] bounds each one by timeouts),
//! so a server that is down or stalls shows as a message here, never as a frozen UI.
//!
//! [`PacsWindow`] holds the state and talks to the threads; [`PacsWindow::show`] draws it and
//! returns a series once it is retrieved ([`OpenSeries`]), which the app opens into the cohort.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use ape::pacs::{Client, Control, Query, Retrieved, SeriesStore, Server, Study};

/// The server list's file in the config folder.
const SERVERS_FILE: &str = "pacs-servers.json";

/// How a server is reached, as the form edits it and the config folder keeps it (passwords
/// are kept for the session only, never written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerForm {
    /// What the list calls it.
    pub name: String,
    /// DICOMweb (`url`) rather than DIMSE (`host`, `port`, AE titles).
    pub web: bool,
    pub host: String,
    pub port: String,
    pub called_aet: String,
    pub calling_aet: String,
    pub url: String,
    #[serde(skip)]
    pub password: String,
}

impl Default for ServerForm {
    fn default() -> Self {
        Self {
            name: String::new(),
            web: false,
            host: "localhost".into(),
            port: "4242".into(),
            called_aet: "ORTHANC".into(),
            calling_aet: ape::pacs::DEFAULT_CALLING_AET.into(),
            url: "http://localhost:8042/dicom-web".into(),
            password: String::new(),
        }
    }
}

impl ServerForm {
    /// The server the form describes, or what is wrong with it.
    pub fn server(&self) -> Result<Server, String> {
        if self.web {
            let mut server = Server::parse_web(self.url.trim()).map_err(|e| e.to_string())?;
            if let Server::Web(web) = &mut server {
                if !self.password.is_empty() {
                    web.password = Some(self.password.clone());
                } else if web.password.as_deref() == Some("") {
                    web.password = None;
                }
            }
            Ok(server)
        } else {
            let port = self
                .port
                .trim()
                .parse::<u16>()
                .map_err(|_| format!("port {:?}: a number from 1 to 65535", self.port))?;
            let calling = Some(self.calling_aet.trim()).filter(|a| !a.is_empty());
            Server::dimse(self.host.trim(), port, self.called_aet.trim(), calling)
                .map_err(|e| e.to_string())
        }
    }

    /// The name shown in the list: its own, else the server's address.
    pub fn title(&self) -> String {
        if !self.name.trim().is_empty() {
            return self.name.trim().to_owned();
        }
        match self.server() {
            Ok(server) => server.name(),
            Err(_) => "(incomplete)".into(),
        }
    }

    /// As it is saved: a password typed into the URL is moved out of it, so that it is never
    /// written to disk.
    fn for_saving(&self) -> Self {
        let mut saved = self.clone();
        if let Ok(Server::Web(web)) = Server::parse_web(self.url.trim()) {
            if let Some(password) = web.password.filter(|p| !p.is_empty()) {
                saved.password = password;
            }
            saved.url = match (&web.user, web.url.split_once("://")) {
                (Some(user), Some((scheme, rest))) => format!("{scheme}://{user}@{rest}"),
                _ => web.url.clone(),
            };
        }
        saved
    }
}

/// The search form's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryForm {
    pub patient_name: String,
    pub patient_id: String,
    /// `YYYYMMDD-YYYYMMDD`, either side may be empty, or one date.
    pub dates: String,
    pub modality: String,
    pub description: String,
}

impl Default for QueryForm {
    fn default() -> Self {
        Self {
            patient_name: String::new(),
            patient_id: String::new(),
            dates: String::new(),
            modality: "CT".into(),
            description: String::new(),
        }
    }
}

impl QueryForm {
    /// The query, or what is wrong with the form.
    pub fn query(&self) -> Result<Query, String> {
        let field = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let query = Query {
            patient_name: field(&self.patient_name),
            patient_id: field(&self.patient_id),
            modality: field(&self.modality),
            description: field(&self.description),
            ..Query::default()
        };
        match field(&self.dates) {
            Some(range) => query.with_date_range(&range).map_err(|e| e.to_string()),
            None => Ok(query),
        }
    }
}

/// A retrieved series for the cohort: its folder in the local store (which every reader
/// opens) and the name the cohort shows, from the search results (the folder's is a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSeries {
    pub folder: PathBuf,
    pub name: String,
}

/// What a background exchange reports.
#[derive(Debug)]
enum Reply {
    Echoed(String, Result<f64, String>),
    Found(String, Result<Vec<Study>, String>),
    Progress(usize, Option<usize>),
    Retrieved(String, Result<(Retrieved, f64), String>),
}

/// An exchange under way.
#[derive(Debug)]
struct Busy {
    /// "searching ORTHANC@host:4242", for the progress line.
    what: String,
    /// Set by Cancel; only retrievals look at it.
    cancel: Arc<AtomicBool>,
    /// Instances received and expected, for retrievals.
    progress: Option<(usize, Option<usize>)>,
}

/// The window's state.
#[derive(Debug)]
pub struct PacsWindow {
    pub open: bool,
    /// The saved servers, and the one the form started from.
    pub servers: Vec<ServerForm>,
    pub selected: Option<usize>,
    /// The server in use: a saved one, or edited.
    pub form: ServerForm,
    pub query: QueryForm,
    /// The last search's studies, and which server they came from.
    pub studies: Vec<Study>,
    results_from: Option<Server>,
    /// The last outcome: (is an error, text).
    pub message: Option<(bool, String)>,
    busy: Option<Busy>,
    replies: Receiver<Reply>,
    reply_tx: Sender<Reply>,
    /// Where the server list is saved (`None`: not saved, as in tests).
    config_dir: Option<PathBuf>,
    store: SeriesStore,
}

impl Default for PacsWindow {
    fn default() -> Self {
        let (reply_tx, replies) = channel();
        Self {
            open: false,
            servers: Vec::new(),
            selected: None,
            form: ServerForm::default(),
            query: QueryForm::default(),
            studies: Vec::new(),
            results_from: None,
            message: None,
            busy: None,
            replies,
            reply_tx,
            config_dir: None,
            store: SeriesStore::new(ape::pacs::default_store_dir()),
        }
    }
}

impl PacsWindow {
    /// Keeps the server list in `dir` (and reads the one saved there).
    pub fn with_config_dir(mut self, dir: &Path) -> Self {
        self.servers = std::fs::read(dir.join(SERVERS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Some(first) = self.servers.first() {
            self.form = first.clone();
            self.selected = Some(0);
        }
        self.config_dir = Some(dir.to_owned());
        self
    }

    /// Retrieved series go to `store` instead of the default one.
    pub fn with_store(mut self, store: SeriesStore) -> Self {
        self.store = store;
        self
    }

    /// Whether an exchange is under way.
    pub fn busy(&self) -> bool {
        self.busy.is_some()
    }

    /// Adds the form's server to the list, or updates the selected one, and saves the list.
    pub fn save_server(&mut self) {
        if let Err(e) = self.form.server() {
            self.message = Some((true, e));
            return;
        }
        let saved = self.form.for_saving();
        self.form.password.clone_from(&saved.password);
        match self.selected.filter(|&i| i < self.servers.len()) {
            Some(i) => self.servers[i] = saved,
            None => {
                self.servers.push(saved);
                self.selected = Some(self.servers.len() - 1);
            }
        }
        self.write_servers();
    }

    /// Removes the selected server from the list and saves it.
    pub fn remove_server(&mut self) {
        if let Some(i) = self.selected.take().filter(|&i| i < self.servers.len()) {
            self.servers.remove(i);
            self.write_servers();
        }
    }

    fn write_servers(&mut self) {
        let Some(dir) = &self.config_dir else { return };
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            let json = serde_json::to_vec_pretty(&self.servers).map_err(std::io::Error::other)?;
            ape::io::atomic::write_atomically(&dir.join(SERVERS_FILE), &json)
        });
        if let Err(e) = written {
            self.message = Some((
                true,
                format!("the server list was not saved to {}: {e}", dir.display()),
            ));
        }
    }

    /// The form's server, or the message saying what is wrong (and `None`).
    fn client(&mut self) -> Option<Client> {
        match self.form.server() {
            Ok(server) => Some(Client::new(server).with_store(self.store.clone())),
            Err(e) => {
                self.message = Some((true, e));
                None
            }
        }
    }

    /// Runs `work` on a thread; its reply wakes the UI.
    fn start(
        &mut self,
        what: String,
        ctx: &egui::Context,
        work: impl FnOnce(&Sender<Reply>, &AtomicBool) + Send + 'static,
    ) {
        if self.busy.is_some() {
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, flag, wake) = (self.reply_tx.clone(), cancel.clone(), ctx.clone());
        let spawned = std::thread::Builder::new()
            .name("ape-pacs".into())
            .spawn(move || {
                work(&tx, &flag);
                wake.request_repaint();
            });
        match spawned {
            Ok(_) => {
                self.message = None;
                self.busy = Some(Busy {
                    what,
                    cancel,
                    progress: None,
                });
            }
            Err(e) => self.message = Some((true, format!("could not start a thread: {e}"))),
        }
    }

    /// Checks that the form's server answers.
    pub fn test_connection(&mut self, ctx: &egui::Context) {
        let Some(client) = self.client() else { return };
        let name = client.server().name();
        self.start(format!("asking {name}"), ctx, move |tx, _| {
            let start = Instant::now();
            let result = client.echo().map(|()| start.elapsed().as_secs_f64());
            let _ = tx.send(Reply::Echoed(name, result.map_err(|e| e.to_string())));
        });
    }

    /// Searches the form's server.
    pub fn search(&mut self, ctx: &egui::Context) {
        let query = match self.query.query() {
            Ok(q) => q,
            Err(e) => return self.message = Some((true, e)),
        };
        let Some(client) = self.client() else { return };
        let name = client.server().name();
        self.results_from = Some(client.server().clone());
        self.start(format!("searching {name}"), ctx, move |tx, _| {
            let found = client.find(&query).map_err(|e| e.to_string());
            let _ = tx.send(Reply::Found(name, found));
        });
    }

    /// Retrieves a series of the last search into the store (or finds it there).
    pub fn retrieve(&mut self, ctx: &egui::Context, study: &str, series: &str) {
        let Some(server) = self.results_from.clone() else {
            return;
        };
        let client = Client::new(server).with_store(self.store.clone());
        let name = self.series_name(series);
        let (study, series) = (study.to_owned(), series.to_owned());
        self.start(format!("retrieving {name}"), ctx, move |tx, cancel| {
            let progress = |done, total| {
                let _ = tx.send(Reply::Progress(done, total));
            };
            let control = Control {
                cancel: Some(cancel),
                progress: Some(&progress),
            };
            let start = Instant::now();
            let got = client
                .retrieve_to_store(Some(&study), &series, &control)
                .map(|r| (r, start.elapsed().as_secs_f64()))
                .map_err(|e| e.to_string());
            let _ = tx.send(Reply::Retrieved(name, got));
        });
    }

    /// How messages and the cohort name a series of the results: the patient, then the
    /// series' description (or modality and number).
    fn series_name(&self, uid: &str) -> String {
        self.studies
            .iter()
            .flat_map(|st| st.series.iter().map(move |se| (st, se)))
            .find(|(_, se)| se.uid == uid)
            .map_or_else(
                || uid.to_owned(),
                |(st, se)| {
                    let what = match (se.description.trim(), se.number) {
                        ("", Some(n)) => format!("{} #{n}", se.modality),
                        ("", None) => se.modality.clone(),
                        (text, _) => text.to_owned(),
                    };
                    format!("{} · {what}", display_name(&st.patient_name))
                },
            )
    }

    /// Asks the retrieval under way to stop.
    pub fn cancel(&self) {
        if let Some(busy) = &self.busy {
            busy.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Takes in what the threads have reported; returns a series retrieved since.
    pub fn poll(&mut self) -> Option<OpenSeries> {
        let mut opened = None;
        for reply in self.replies.try_iter() {
            match reply {
                Reply::Progress(done, total) => {
                    if let Some(busy) = &mut self.busy {
                        busy.progress = Some((done, total));
                    }
                    continue;
                }
                Reply::Echoed(name, result) => {
                    self.message = Some(match result {
                        Ok(s) => (false, format!("{name} answers ({:.0} ms)", s * 1e3)),
                        Err(e) => (true, e),
                    });
                }
                Reply::Found(name, result) => match result {
                    Ok(studies) => {
                        let series: usize = studies.iter().map(|s| s.series.len()).sum();
                        self.message = Some((
                            false,
                            format!("{} studies, {series} series on {name}", studies.len()),
                        ));
                        self.studies = studies;
                    }
                    Err(e) => {
                        self.studies.clear();
                        self.message = Some((true, e));
                    }
                },
                Reply::Retrieved(name, result) => match result {
                    Ok((got, seconds)) => {
                        let how = if got.from_store {
                            "already in the local store".to_owned()
                        } else {
                            format!("retrieved in {seconds:.1} s")
                        };
                        self.message = Some((
                            false,
                            format!("{name}: {} slices, {how}; opened", got.instances),
                        ));
                        opened = Some(OpenSeries {
                            folder: got.folder,
                            name,
                        });
                    }
                    Err(e) => self.message = Some((true, format!("{name}: {e}"))),
                },
            }
            self.busy = None;
        }
        opened
    }

    /// The window, when open; returns a series retrieved since the last frame.
    pub fn show(&mut self, ctx: &egui::Context) -> Option<OpenSeries> {
        let opened = self.poll();
        if !self.open {
            return opened;
        }
        let mut open = true;
        egui::Window::new("Open from PACS")
            .open(&mut open)
            .default_width(620.0)
            .show(ctx, |ui| {
                self.server_section(ui);
                ui.separator();
                self.search_section(ui);
                ui.separator();
                self.results(ui);
                ui.separator();
                self.status(ui);
            });
        self.open = open;
        if self.busy.is_some() {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
        opened
    }

    fn server_section(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.label("Server");
            let current = self
                .selected
                .and_then(|i| self.servers.get(i))
                .map_or_else(|| "(new)".to_owned(), ServerForm::title);
            let mut chosen = None;
            egui::ComboBox::from_id_salt("pacs servers")
                .selected_text(current)
                .show_ui(ui, |ui| {
                    for (i, s) in self.servers.iter().enumerate() {
                        if ui
                            .selectable_label(self.selected == Some(i), s.title())
                            .clicked()
                        {
                            chosen = Some(Some(i));
                        }
                    }
                    if ui
                        .selectable_label(self.selected.is_none(), "(new)")
                        .clicked()
                    {
                        chosen = Some(None);
                    }
                });
            if let Some(choice) = chosen {
                self.selected = choice;
                self.form = choice
                    .and_then(|i| self.servers.get(i).cloned())
                    .unwrap_or_default();
            }
            if ui
                .button("Save server")
                .on_hover_text("keep it in the list (passwords are not saved)")
                .clicked()
            {
                self.save_server();
            }
            if self.selected.is_some() && ui.button("Remove").clicked() {
                self.remove_server();
            }
        });
        ui.horizontal(|ui| {
            ui.radio_value(&mut self.form.web, false, "DIMSE");
            ui.radio_value(&mut self.form.web, true, "DICOMweb");
            labelled_field(ui, "Name", &mut self.form.name, 180.0);
        });
        ui.horizontal(|ui| {
            if self.form.web {
                labelled_field(ui, "URL", &mut self.form.url, 300.0);
                let label = ui.label("Password");
                ui.add(
                    egui::TextEdit::singleline(&mut self.form.password)
                        .password(true)
                        .desired_width(90.0),
                )
                .labelled_by(label.id)
                .on_hover_text("kept for this session only, never saved");
            } else {
                labelled_field(ui, "Host", &mut self.form.host, 130.0);
                labelled_field(ui, "Port", &mut self.form.port, 60.0);
                labelled_field(ui, "Server AE", &mut self.form.called_aet, 90.0);
                labelled_field(ui, "Our AE", &mut self.form.calling_aet, 70.0);
            }
        });
        let idle = self.busy.is_none();
        if ui
            .add_enabled(idle, egui::Button::new("Test connection"))
            .clicked()
        {
            self.test_connection(ui.ctx());
        }
    }

    fn search_section(&mut self, ui: &mut egui::Ui) {
        egui::Grid::new("pacs query").num_columns(4).show(ui, |ui| {
            labelled_field(ui, "Patient name", &mut self.query.patient_name, 150.0);
            labelled_field(ui, "Patient ID", &mut self.query.patient_id, 120.0);
            ui.end_row();
            labelled_field(ui, "Study dates", &mut self.query.dates, 150.0)
                .on_hover_text("YYYYMMDD-YYYYMMDD; either side may be empty, or one date");
            labelled_field(ui, "Modality", &mut self.query.modality, 120.0);
            ui.end_row();
            labelled_field(ui, "Description", &mut self.query.description, 150.0);
            ui.end_row();
        });
        let idle = self.busy.is_none();
        if ui.add_enabled(idle, egui::Button::new("Search")).clicked() {
            self.search(ui.ctx());
        }
    }

    fn results(&mut self, ui: &mut egui::Ui) {
        if self.studies.is_empty() {
            ui.weak("No studies yet: search a server.");
            return;
        }
        let idle = self.busy.is_none();
        let mut retrieve = None;
        egui::ScrollArea::vertical()
            .max_height(320.0)
            .show(ui, |ui| {
                for study in &self.studies {
                    let title = format!(
                        "{} · ID {} · {} · {}",
                        display_name(&study.patient_name),
                        or_dash(&study.patient_id),
                        display_date(&study.date),
                        or_dash(&study.description),
                    );
                    egui::CollapsingHeader::new(title)
                        .id_salt(&study.uid)
                        .default_open(true)
                        .show(ui, |ui| {
                            egui::Grid::new(("series", &study.uid))
                                .striped(true)
                                .show(ui, |ui| {
                                    for series in &study.series {
                                        ui.label(
                                            series
                                                .number
                                                .map_or_else(String::new, |n| format!("#{n}")),
                                        );
                                        ui.label(or_dash(&series.description));
                                        ui.label(&series.modality);
                                        ui.label(series.slices.map_or_else(
                                            || "? slices".to_owned(),
                                            |n| format!("{n} slices"),
                                        ));
                                        let button = ui
                                            .add_enabled(idle, egui::Button::new("Open"))
                                            .on_hover_text(format!(
                                                "retrieve and open series {}",
                                                series.uid
                                            ));
                                        if button.clicked() {
                                            retrieve =
                                                Some((study.uid.clone(), series.uid.clone()));
                                        }
                                        ui.end_row();
                                    }
                                });
                        });
                }
            });
        if let Some((study, series)) = retrieve {
            self.retrieve(ui.ctx(), &study, &series);
        }
    }

    fn status(&mut self, ui: &mut egui::Ui) {
        if let Some(busy) = &self.busy {
            let mut cancel = false;
            ui.horizontal(|ui| {
                let bar = match busy.progress {
                    Some((done, Some(total))) if total > 0 => {
                        egui::ProgressBar::new(done as f32 / total as f32)
                            .text(format!("{} · {done}/{total}", busy.what))
                    }
                    Some((done, _)) => egui::ProgressBar::new(0.0)
                        .animate(true)
                        .text(format!("{} · {done}", busy.what)),
                    None => egui::ProgressBar::new(0.0).animate(true).text(&busy.what),
                };
                ui.add(bar.desired_width(460.0));
                cancel = ui.button("Cancel").clicked();
            });
            if cancel {
                self.cancel();
            }
        }
        if let Some((error, text)) = &self.message {
            if *error {
                ui.colored_label(ui.visuals().error_fg_color, text);
            } else {
                ui.label(text);
            }
        }
    }
}

/// A text field with a label that names it (for screen readers and tests).
fn labelled_field(ui: &mut egui::Ui, label: &str, text: &mut String, width: f32) -> egui::Response {
    let label = ui.label(label);
    // Sized, not desired: a grid cell would otherwise offer last frame's (narrow) width.
    let size = egui::vec2(width, ui.spacing().interact_size.y);
    ui.add_sized(size, egui::TextEdit::singleline(text))
        .labelled_by(label.id)
}

fn or_dash(s: &str) -> &str {
    if s.trim().is_empty() { "—" } else { s }
}

/// `Doe^John` as `Doe John`.
fn display_name(name: &str) -> String {
    let name = name.replace('^', " ");
    let name = name.trim();
    if name.is_empty() {
        "(no name)".into()
    } else {
        name.to_owned()
    }
}

/// `YYYYMMDD` as `YYYY-MM-DD`.
fn display_date(date: &str) -> String {
    match (date.get(0..4), date.get(4..6), date.get(6..8)) {
        (Some(y), Some(m), Some(d)) if date.len() == 8 => format!("{y}-{m}-{d}"),
        _ => or_dash(date).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_server_list_survives_a_restart_without_its_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let mut window = PacsWindow::default().with_config_dir(dir.path());
        window.form = ServerForm {
            name: "web".into(),
            web: true,
            url: "http://bob:secret@pacs.local:8042/dicom-web/".into(),
            ..ServerForm::default()
        };
        window.save_server();
        window.selected = None;
        window.form = ServerForm {
            port: "104".into(),
            ..ServerForm::default()
        };
        window.save_server();
        // The form still reaches the server with the password this session.
        window.selected = Some(0);
        window.form = window.servers[0].clone();
        assert_eq!(window.form.password, "secret");

        let text = std::fs::read_to_string(dir.path().join(SERVERS_FILE)).unwrap();
        assert!(!text.contains("secret"), "{text}");
        let again = PacsWindow::default().with_config_dir(dir.path());
        assert_eq!(again.servers.len(), 2);
        assert_eq!(again.servers[0].url, "http://bob@pacs.local:8042/dicom-web");
        let Ok(Server::Web(web)) = again.servers[0].server() else {
            panic!("a DICOMweb server")
        };
        assert_eq!((web.user.as_deref(), web.password), (Some("bob"), None));
        assert_eq!(again.servers[1].title(), "ORTHANC@localhost:104");

        let mut again = again;
        again.selected = Some(0);
        again.remove_server();
        assert_eq!(
            PacsWindow::default()
                .with_config_dir(dir.path())
                .servers
                .len(),
            1
        );
    }

    #[test]
    fn forms_with_mistakes_say_what_is_wrong() {
        let bad_port = ServerForm {
            port: "99999".into(),
            ..ServerForm::default()
        };
        assert!(bad_port.server().unwrap_err().contains("port"));
        let bad_url = ServerForm {
            web: true,
            url: "pacs.local".into(),
            ..ServerForm::default()
        };
        assert!(bad_url.server().unwrap_err().contains("http://"));
        let dates = QueryForm {
            dates: "2020-01-01".into(),
            ..QueryForm::default()
        };
        assert!(dates.query().unwrap_err().contains("YYYYMMDD"));
        let query = QueryForm {
            patient_name: " liver ".into(),
            dates: "20200101-".into(),
            ..QueryForm::default()
        }
        .query()
        .unwrap();
        assert_eq!(query.patient_name.as_deref(), Some("liver"));
        assert_eq!(query.modality.as_deref(), Some("CT"));
        assert_eq!(query.date_from.as_deref(), Some("20200101"));
        assert_eq!(query.date_to, None);

        let mut window = PacsWindow {
            form: bad_port,
            ..PacsWindow::default()
        };
        window.save_server();
        assert!(window.servers.is_empty());
        assert!(window.message.as_ref().is_some_and(|(error, _)| *error));
    }

    #[test]
    fn names_and_dates_read_as_people_write_them() {
        assert_eq!(display_name("liver_17^patient"), "liver_17 patient");
        assert_eq!(display_name(""), "(no name)");
        assert_eq!(display_date("20240131"), "2024-01-31");
        assert_eq!(display_date(""), "—");
    }
}
