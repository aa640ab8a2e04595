//! Studies from a PACS: echo, search and retrieval of CT series over DIMSE (C-ECHO, C-FIND,
//! C-GET; dicom-ul) or DICOMweb (QIDO-RS, WADO-RS; ureq), into a local store that the DICOM
//! reader ([`crate::io::dicom`]) opens like any folder.
//!
//! Every network read has a timeout, every operation a deadline and every response a size cap
//! ([`Limits`]), so a server that stalls or sends garbage ends in a [`PacsError`] naming it,
//! never in a hang or a panic. Passwords never appear in a message or a `Debug` print.
//!
//! ```no_run
//! use ape::pacs::{Client, Query, Server};
//! let client = Client::new(Server::parse_web("http://localhost:8042/dicom-web")?);
//! let studies = client.find(&Query { modality: Some("CT".into()), ..Query::default() })?;
//! let series = &studies[0].series[0];
//! let folder = client.get_stored(Some(&studies[0].uid), &series.uid, &Default::default())?;
//! let scan = ape::io::read_volume(&folder)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dimse;
mod multipart;
mod store;
mod web;
mod wire;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use store::{SeriesStore, default_store_dir};

/// The SOP class of the slices ape reads (CT Image Storage).
const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// A PACS to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// A DICOM node reached by DIMSE associations.
    Dimse(DimseServer),
    /// A DICOMweb service (QIDO-RS and WADO-RS under one root URL).
    Web(WebServer),
}

/// A DICOM node: where it listens and the AE titles of the association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimseServer {
    pub host: String,
    pub port: u16,
    /// The server's AE title.
    pub called_aet: String,
    /// Ours.
    pub calling_aet: String,
}

/// A DICOMweb root, e.g. `http://localhost:8042/dicom-web`, with optional HTTP basic
/// credentials (kept out of every message and `Debug` print).
#[derive(Clone, PartialEq, Eq)]
pub struct WebServer {
    /// Without a trailing slash, without credentials.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for WebServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebServer")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Our AE title when none is given.
pub const DEFAULT_CALLING_AET: &str = "APE";

impl Server {
    /// A DIMSE server; AE titles are 1–16 printable ASCII characters without backslashes.
    pub fn dimse(
        host: &str,
        port: u16,
        called_aet: &str,
        calling_aet: Option<&str>,
    ) -> Result<Self, PacsError> {
        let calling_aet = calling_aet.unwrap_or(DEFAULT_CALLING_AET);
        for aet in [called_aet, calling_aet] {
            let valid = !aet.trim().is_empty()
                && aet.len() <= 16
                && aet.chars().all(|c| c.is_ascii_graphic() || c == ' ')
                && !aet.contains('\\');
            if !valid {
                return Err(PacsError::BadArgument(format!(
                    "AE title {aet:?}: 1 to 16 printable ASCII characters, no backslash"
                )));
            }
        }
        if host.trim().is_empty() || port == 0 {
            return Err(PacsError::BadArgument(format!(
                "DICOM address {host}:{port}: needs a host and a port above 0"
            )));
        }
        Ok(Self::Dimse(DimseServer {
            host: host.to_owned(),
            port,
            called_aet: called_aet.to_owned(),
            calling_aet: calling_aet.to_owned(),
        }))
    }

    /// A DICOMweb server from its root URL (`http://` or `https://`); credentials written in
    /// the URL (`http://user:password@host/…`) are taken out of it into the basic-auth fields.
    pub fn parse_web(url: &str) -> Result<Self, PacsError> {
        let bad = |why: &str| PacsError::BadArgument(format!("DICOMweb URL: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(s, _)| matches!(s.to_ascii_lowercase().as_str(), "http" | "https"))
            .ok_or_else(|| bad("must start with http:// or https://"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (credentials, host) = match authority.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let (user, password) = match credentials.map(|c| c.split_once(':').unwrap_or((c, ""))) {
            Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
            None => (None, None),
        };
        Ok(Self::Web(WebServer {
            url: format!("{scheme}://{host}{}", path.trim_end_matches('/')),
            user,
            password,
        }))
    }

    /// How messages name the server: `AET@host:port` or the URL (never credentials).
    pub fn name(&self) -> String {
        match self {
            Self::Dimse(s) => format!("{}@{}:{}", s.called_aet, s.host, s.port),
            Self::Web(s) => s.url.clone(),
        }
    }
}

/// Bounds on every exchange with a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// To open a connection.
    pub connect: Duration,
    /// The longest wait for any one read (a stalled server).
    pub read: Duration,
    /// The whole of one operation (an echo, a search, a retrieval).
    pub total: Duration,
    /// Bytes one operation may receive (a retrieval: the whole series).
    pub max_bytes: u64,
    /// Matches one search may return.
    pub max_matches: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(30),
            total: Duration::from_secs(600),
            max_bytes: 4 << 30,
            max_matches: 5000,
        }
    }
}

/// When an operation must be over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    end: Instant,
    total: Duration,
}

impl Deadline {
    pub(crate) fn after(total: Duration) -> Self {
        Self {
            end: Instant::now() + total,
            total,
        }
    }

    /// Time left, or the timeout error.
    pub(crate) fn left(&self, server: &str) -> Result<Duration, PacsError> {
        let left = self.end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(PacsError::Timeout {
                server: server.to_owned(),
                after: self.total,
            })
        } else {
            Ok(left)
        }
    }
}

/// What a search looks for; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Patient name; without `*` or `?` it matches names that contain it.
    pub patient_name: Option<String>,
    pub patient_id: Option<String>,
    /// StudyDate from and to, `YYYYMMDD`, inclusive.
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    /// Series modality (CT, MR…).
    pub modality: Option<String>,
    /// Text that the study's or the series' description contains (any case).
    pub description: Option<String>,
}

impl Query {
    /// Sets the dates from `FROM-TO` (`YYYYMMDD-YYYYMMDD`, either side may be empty) or one
    /// `YYYYMMDD`.
    pub fn with_date_range(mut self, range: &str) -> Result<Self, PacsError> {
        let (from, to) = range.split_once('-').unwrap_or((range, range));
        for date in [from, to] {
            let valid =
                date.is_empty() || (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()));
            if !valid {
                return Err(PacsError::BadArgument(format!(
                    "date range {range:?}: dates are YYYYMMDD, as FROM-TO (either side may be empty)"
                )));
            }
        }
        if from.is_empty() && to.is_empty() {
            return Err(PacsError::BadArgument(format!(
                "date range {range:?}: no date"
            )));
        }
        self.date_from = (!from.is_empty()).then(|| from.to_owned());
        self.date_to = (!to.is_empty()).then(|| to.to_owned());
        Ok(self)
    }

    /// The DICOM range matching key (`A-B`, `A-`, `-B`), if any date is set.
    fn date_key(&self) -> Option<String> {
        match (&self.date_from, &self.date_to) {
            (None, None) => None,
            (Some(a), Some(b)) if a == b => Some(a.clone()),
            (a, b) => Some(format!(
                "{}-{}",
                a.as_deref().unwrap_or(""),
                b.as_deref().unwrap_or("")
            )),
        }
    }

    /// The patient name matching key: wildcards kept, else "contains".
    fn name_key(&self) -> Option<String> {
        self.patient_name.as_ref().map(|n| {
            if n.contains(['*', '?']) {
                n.clone()
            } else {
                format!("*{n}*")
            }
        })
    }

    /// Keeps the studies and series whose description contains the query's text: a study whose
    /// own description matches keeps all its series, else only the matching ones.
    fn filter_descriptions(&self, studies: Vec<Study>) -> Vec<Study> {
        let Some(text) = self.description.as_ref().map(|t| t.to_lowercase()) else {
            return studies;
        };
        let contains = |s: &str| s.to_lowercase().contains(&text);
        studies
            .into_iter()
            .filter_map(|mut study| {
                if !contains(&study.description) {
                    study.series.retain(|s| contains(&s.description));
                }
                (!study.series.is_empty()).then_some(study)
            })
            .collect()
    }
}

/// A study found by a search, with its series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Study {
    /// StudyInstanceUID.
    pub uid: String,
    pub patient_name: String,
    pub patient_id: String,
    /// StudyDate, `YYYYMMDD` (empty when unknown).
    pub date: String,
    pub description: String,
    pub series: Vec<Series>,
}

/// A series of a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Series {
    /// SeriesInstanceUID.
    pub uid: String,
    pub modality: String,
    pub description: String,
    pub number: Option<i64>,
    /// NumberOfSeriesRelatedInstances, when the server says.
    pub slices: Option<usize>,
}

impl Series {
    /// A series from its attributes as a C-FIND response or a QIDO-RS result carries them
    /// (`text` reads one); `None` without a series UID.
    fn from_attributes(text: impl Fn(wire::Tag) -> Option<String>) -> Option<Self> {
        use wire::tags;
        let trimmed = |tag| text(tag).map(|n: String| n.trim().to_owned());
        Some(Self {
            uid: text(tags::SERIES_INSTANCE_UID).filter(|u| !u.is_empty())?,
            modality: text(tags::MODALITY).unwrap_or_default(),
            description: text(tags::SERIES_DESCRIPTION).unwrap_or_default(),
            number: trimmed(tags::SERIES_NUMBER).and_then(|n| n.parse().ok()),
            slices: trimmed(tags::NUMBER_OF_SERIES_RELATED_INSTANCES).and_then(|n| n.parse().ok()),
        })
    }
}

impl Study {
    /// A study from its attributes (`text` reads one) and its series, which it sorts by
    /// series number, then UID.
    fn from_attributes(
        uid: String,
        text: impl Fn(wire::Tag) -> Option<String>,
        mut series: Vec<Series>,
    ) -> Self {
        use wire::tags;
        series.sort_by(|a, b| a.number.cmp(&b.number).then_with(|| a.uid.cmp(&b.uid)));
        Self {
            uid,
            patient_name: text(tags::PATIENT_NAME).unwrap_or_default(),
            patient_id: text(tags::PATIENT_ID).unwrap_or_default(),
            date: text(tags::STUDY_DATE).unwrap_or_default(),
            description: text(tags::STUDY_DESCRIPTION).unwrap_or_default(),
            series,
        }
    }
}

/// Progress and cancellation of a retrieval.
#[derive(Default)]
pub struct Control<'a> {
    /// Set from another thread to stop a retrieval (then [`PacsError::Cancelled`]).
    pub cancel: Option<&'a AtomicBool>,
    /// Called with (instances received, instances expected when known).
    pub progress: Option<&'a (dyn Fn(usize, Option<usize>) + Sync)>,
}

impl std::fmt::Debug for Control<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("cancel", &self.cancel)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Control<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    fn report(&self, done: usize, total: Option<usize>) {
        if let Some(progress) = self.progress {
            progress(done, total);
        }
    }
}

/// Where a retrieved series went and how it got there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrieved {
    /// The folder holding the series' slices.
    pub folder: PathBuf,
    pub instances: usize,
    /// Found in the local store: nothing was transferred.
    pub from_store: bool,
}

/// Why talking to a PACS failed; each names the server.
#[derive(Debug, thiserror::Error)]
pub enum PacsError {
    #[error("{0}")]
    BadArgument(String),
    #[error("{server}: cannot connect ({detail}); is the server running and the address right?")]
    Unreachable { server: String, detail: String },
    #[error("{server}: association rejected: {reason}")]
    Rejected { server: String, reason: String },
    #[error("{server}: no answer within {after:?}")]
    Timeout { server: String, after: Duration },
    #[error("{server}: HTTP {status} for {what}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Http {
        server: String,
        status: u16,
        what: String,
        body: String,
    },
    #[error("{server}: {operation} failed with status 0x{status:04X}{}", if comment.is_empty() { String::new() } else { format!(" ({comment})") })]
    Status {
        server: String,
        operation: &'static str,
        status: u16,
        comment: String,
    },
    #[error("{server}: protocol error: {detail}")]
    Protocol { server: String, detail: String },
    #[error("{server}: the response exceeds the limit of {limit} {unit}")]
    TooLarge {
        server: String,
        limit: u64,
        unit: &'static str,
    },
    #[error("{server}: no series {series} found")]
    NoSuchSeries { server: String, series: String },
    #[error("{server}: series {series} is not CT ({what}); ape reads CT series")]
    NotCt {
        server: String,
        series: String,
        what: String,
    },
    #[error("{server}: retrieval of series {series} ended with no instances{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    Empty {
        server: String,
        series: String,
        detail: String,
    },
    #[error("retrieval cancelled")]
    Cancelled,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl PacsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn protocol(server: &str, detail: impl Into<String>) -> Self {
        Self::Protocol {
            server: server.to_owned(),
            detail: detail.into(),
        }
    }
}

/// A server and the limits of every exchange with it.
#[derive(Debug, Clone)]
pub struct Client {
    server: Server,
    limits: Limits,
    store: SeriesStore,
}

impl Client {
    /// A client with the default limits and the default store ([`default_store_dir`]).
    pub fn new(server: Server) -> Self {
        Self {
            server,
            limits: Limits::default(),
            store: SeriesStore::new(default_store_dir()),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_store(mut self, store: SeriesStore) -> Self {
        self.store = store;
        self
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    pub fn store(&self) -> &SeriesStore {
        &self.store
    }

    /// Checks that the server answers: a C-ECHO, or for DICOMweb a QIDO-RS search for one
    /// study.
    pub fn echo(&self) -> Result<(), PacsError> {
        match &self.server {
            Server::Dimse(s) => dimse::echo(s, &self.limits),
            Server::Web(s) => web::echo(s, &self.limits),
        }
    }

    /// The studies that match, each with its matching series.
    pub fn find(&self, query: &Query) -> Result<Vec<Study>, PacsError> {
        let studies = match &self.server {
            Server::Dimse(s) => dimse::find(s, query, &self.limits)?,
            Server::Web(s) => web::find(s, query, &self.limits)?,
        };
        Ok(query.filter_descriptions(studies))
    }

    /// The StudyInstanceUID of a series (a series-level search).
    pub fn study_of(&self, series: &str) -> Result<String, PacsError> {
        let found = match &self.server {
            Server::Dimse(s) => dimse::study_of(s, series, &self.limits)?,
            Server::Web(s) => web::study_of(s, series, &self.limits)?,
        };
        found.ok_or_else(|| PacsError::NoSuchSeries {
            server: self.server.name(),
            series: series.to_owned(),
        })
    }

    /// Retrieves a series into the local store (or finds it there) and returns its folder.
    /// `study` is looked up when not given.
    pub fn get_stored(
        &self,
        study: Option<&str>,
        series: &str,
        control: &Control<'_>,
    ) -> Result<PathBuf, PacsError> {
        Ok(self.retrieve_to_store(study, series, control)?.folder)
    }

    /// As [`get_stored`](Self::get_stored), saying whether the store already had it.
    pub fn retrieve_to_store(
        &self,
        study: Option<&str>,
        series: &str,
        control: &Control<'_>,
    ) -> Result<Retrieved, PacsError> {
        let key = self.store.folder_of(&self.server.name(), series);
        if let Some(instances) = store::complete_series(&key) {
            return Ok(Retrieved {
                folder: key,
                instances,
                from_store: true,
            });
        }
        match self.retrieve_into(study, series, &key, control) {
            Ok(instances) => Ok(Retrieved {
                folder: key,
                instances,
                from_store: false,
            }),
            // Another process stored the same series meanwhile: its folder is as good.
            Err(e) => match store::complete_series(&key) {
                Some(instances) => Ok(Retrieved {
                    folder: key,
                    instances,
                    from_store: true,
                }),
                None => Err(e),
            },
        }
    }

    /// Retrieves a series into `dest`, a folder that must not exist yet or be empty: the
    /// slices go into a temporary folder beside it, renamed onto it when all are there.
    /// Returns how many instances it holds.
    pub fn retrieve_into(
        &self,
        study: Option<&str>,
        series: &str,
        dest: &Path,
        control: &Control<'_>,
    ) -> Result<usize, PacsError> {
        store::check_destination(dest)?;
        let study = match study {
            Some(s) => s.to_owned(),
            None => self.study_of(series)?,
        };
        let partial = store::Partial::beside(dest)?;
        let count = match &self.server {
            Server::Dimse(s) => {
                dimse::get_series(s, &study, series, partial.path(), &self.limits, control)?
            }
            Server::Web(s) => {
                web::get_series(s, &study, series, partial.path(), &self.limits, control)?
            }
        };
        if count == 0 {
            return Err(PacsError::Empty {
                server: self.server.name(),
                series: series.to_owned(),
                detail: String::new(),
            });
        }
        store::check_ct(partial.path(), &self.server.name(), series)?;
        partial.commit(dest)?;
        Ok(count)
    }
}

/// A name made only of UID characters, so that an instance's file name cannot leave its
/// folder; anything else is replaced by a hash.
pub(crate) fn instance_file_name(sop_instance_uid: &str, serial: usize) -> String {
    let uid = sop_instance_uid.trim_end_matches(['\0', ' ']);
    if !uid.is_empty() && uid.len() <= 64 && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        format!("{uid}.dcm")
    } else {
        format!(
            "instance-{serial:06}-{:016x}.dcm",
            xxhash_rust::xxh3::xxh3_64(uid.as_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn web_url_credentials_are_taken_out() {
        let Server::Web(s) =
            Server::parse_web("http://bob:secret@pacs.local:8042/dicom-web/").unwrap()
        else {
            unreachable!()
        };
        assert_eq!(s.url, "http://pacs.local:8042/dicom-web");
        assert_eq!(s.user.as_deref(), Some("bob"));
        assert_eq!(s.password.as_deref(), Some("secret"));
        assert!(!format!("{s:?}").contains("secret"));
        assert!(Server::parse_web("ftp://x").is_err());
        assert!(Server::parse_web("http:///x").is_err());
    }

    #[test]
    fn ae_titles_are_checked() {
        assert!(Server::dimse("localhost", 104, "ORTHANC", None).is_ok());
        assert!(Server::dimse("localhost", 104, "", None).is_err());
        assert!(Server::dimse("localhost", 104, "A_TITLE_FAR_TOO_LONG", None).is_err());
        assert!(Server::dimse("localhost", 0, "ORTHANC", None).is_err());
    }

    #[test]
    fn date_ranges() {
        let q = Query::default()
            .with_date_range("20200101-20201231")
            .unwrap();
        assert_eq!(q.date_key().as_deref(), Some("20200101-20201231"));
        let q = Query::default().with_date_range("20200101-").unwrap();
        assert_eq!(q.date_key().as_deref(), Some("20200101-"));
        let q = Query::default().with_date_range("20200101").unwrap();
        assert_eq!(q.date_key().as_deref(), Some("20200101"));
        assert!(Query::default().with_date_range("2020-01-01").is_err());
        assert!(Query::default().with_date_range("-").is_err());
    }

    #[test]
    fn names_match_by_contains_unless_wildcards() {
        let q = Query {
            patient_name: Some("liver".into()),
            ..Query::default()
        };
        assert_eq!(q.name_key().as_deref(), Some("*liver*"));
        let q = Query {
            patient_name: Some("liver_1?^*".into()),
            ..Query::default()
        };
        assert_eq!(q.name_key().as_deref(), Some("liver_1?^*"));
    }

    #[test]
    fn instance_names_stay_in_their_folder() {
        assert_eq!(instance_file_name("1.2.3\0", 0), "1.2.3.dcm");
        let odd = instance_file_name("../../etc/passwd", 3);
        assert!(odd.starts_with("instance-000003-") && !odd.contains('/'));
    }
}
