//! Organ boxes as users keep them: one box per (scan, organ), drawn or predicted, saved and
//! loaded as JSON or CSV in world RAS mm, and as 3D Slicer ROI markups (`.mrk.json`, LPS) so a
//! box opens in Slicer; an undo/redo history of edits. Files are written atomically.
//!
//! Reading is hostile-input safe: every box read is finite, within ±[`MAX_COORDINATE_MM`] and
//! has its min at or below its max, so that whatever loads can be saved in every format and
//! read back; a file that breaks this is refused with the line (CSV) or the box (JSON,
//! markups) and the problem. What is legal but lossy (a rotated Slicer ROI) is read with an
//! [`InputWarning`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read;
use std::path::Path;

use glam::{DMat3, DVec3};
use serde::{Deserialize, Serialize};

use crate::geometry::WorldBox;
use crate::validate::{InputError, InputWarning, WarningKind};

/// Where a box came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BoxOrigin {
    /// Drawn or corrected by the user.
    Drawn,
    /// Predicted from `supports` support boxes, enlarged by `alpha`; not yet accepted.
    Predicted { supports: usize, alpha: f64 },
    /// A prediction the user accepted as it was.
    Accepted,
}

/// One organ's box on one scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganBox {
    pub scan: String,
    pub organ: String,
    /// World RAS mm.
    pub bbox: WorldBox,
    pub origin: BoxOrigin,
}

/// Every box of a cohort.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BoxSet {
    pub boxes: Vec<OrganBox>,
}

#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a box file ({detail})")]
    Parse { path: String, detail: String },
    /// Not found, or a FIFO, socket or device (reading one blocks or never ends).
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("{path}: is a folder; a box file is one file ({})", BoxFormat::list())]
    Folder { path: String },
    #[error(
        "{path}: {bytes} bytes ({}), too large for a box file (at most {}); is it one?",
        crate::validate::bytes_text(*bytes),
        crate::validate::bytes_text(MAX_FILE_BYTES)
    )]
    TooLarge { path: String, bytes: u64 },
    /// A box in memory that [`BoxSet::load`] would refuse: nothing was written.
    #[error("{path}: not written: {detail}")]
    Invalid { path: String, detail: String },
}

/// Coordinates (mm) beyond ± this are refused: no body is a kilometre across, and centres and
/// sizes of larger ones overflow (1e308 + 1e308 is infinite), so they would not read back.
pub const MAX_COORDINATE_MM: f64 = 1e6;
/// Box files above this are refused before reading: a box takes at most a few hundred bytes in
/// any format, so this is some 10⁶ boxes, and more is not a box file.
pub const MAX_FILE_BYTES: u64 = 256_000_000;
/// The largest enlargement α a predicted box may carry (the recall-safe α is near 1).
pub const MAX_ALPHA: f64 = 1e3;

const CSV_HEADER: &str = "scan,organ,x_min,y_min,z_min,x_max,y_max,z_max,origin";
const CSV_COLUMNS: [&str; 9] = [
    "scan", "organ", "x_min", "y_min", "z_min", "x_max", "y_max", "z_max", "origin",
];

impl BoxSet {
    /// The box of an organ on a scan.
    pub fn get(&self, scan: &str, organ: &str) -> Option<&OrganBox> {
        self.boxes
            .iter()
            .find(|b| b.scan == scan && b.organ == organ)
    }

    /// Sets the box of (scan, organ), replacing an earlier one. Linear in the boxes: for one
    /// edit; the readers index (scan, organ) instead.
    pub fn set(&mut self, organ_box: OrganBox) {
        match self
            .boxes
            .iter_mut()
            .find(|b| b.scan == organ_box.scan && b.organ == organ_box.organ)
        {
            Some(slot) => *slot = organ_box,
            None => self.boxes.push(organ_box),
        }
    }

    /// The first box that a reader would refuse, and why: a coordinate not finite or beyond
    /// ±[`MAX_COORDINATE_MM`], a min above its max, an α not finite or outside 0…[`MAX_ALPHA`].
    pub fn validate(&self) -> Result<(), String> {
        for (i, b) in self.boxes.iter().enumerate() {
            if let Some(problem) = box_problem(&b.bbox).or_else(|| origin_problem(&b.origin)) {
                return Err(format!(
                    "boxes[{i}] ({}): {problem}",
                    label(&b.scan, &b.organ)
                ));
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads what [`Self::to_json`] writes; every box is checked as [`Self::validate`] does.
    pub fn from_json(text: &str) -> Result<Self, String> {
        BoxFormat::Json.read(text)
    }

    /// One row per box, RAS mm; `origin` is drawn, accepted or predicted. Names that hold a
    /// comma, quote, line break or surrounding spaces are quoted as RFC 4180 (and spreadsheets)
    /// quote them, so that they read back as they were.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(CSV_HEADER);
        out.push('\n');
        for b in &self.boxes {
            let origin = match b.origin {
                BoxOrigin::Drawn => "drawn",
                BoxOrigin::Accepted => "accepted",
                BoxOrigin::Predicted { .. } => "predicted",
            };
            let (lo, hi) = (b.bbox.min, b.bbox.max);
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{origin}\n",
                csv_field(&b.scan),
                csv_field(&b.organ),
                lo.x,
                lo.y,
                lo.z,
                hi.x,
                hi.y,
                hi.z
            ));
        }
        out
    }

    /// Reads what [`Self::to_csv`] writes (predicted boxes come back without their α), and the
    /// same saved by a spreadsheet: a byte-order mark, CRLF line ends, quoted fields, the
    /// columns in another order, empty rows.
    pub fn from_csv(text: &str) -> Result<Self, String> {
        BoxFormat::Csv.read(text)
    }

    /// 3D Slicer markups: one ROI per box, in LPS as Slicer stores them.
    pub fn to_slicer_markups(&self) -> String {
        let markups: Vec<serde_json::Value> = self
            .boxes
            .iter()
            .map(|b| {
                let c = ras_to_lps(b.bbox.centre());
                let s = b.bbox.size();
                serde_json::json!({
                    "type": "ROI",
                    "coordinateSystem": "LPS",
                    "coordinateUnits": "mm",
                    "name": format!("{} {}", b.scan, b.organ),
                    "roiType": "Box",
                    "center": [c.x, c.y, c.z],
                    "size": [s.x, s.y, s.z],
                    "orientation": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                    "controlPoints": [{
                        "id": "1",
                        "label": b.organ,
                        "position": [c.x, c.y, c.z],
                        "orientation": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                        "positionStatus": "defined"
                    }],
                    "description": b.scan,
                })
            })
            .collect();
        serde_json::to_string_pretty(&serde_json::json!({
            "@schema": "https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
            "markups": markups,
        }))
        .unwrap_or_default()
    }

    /// Reads ROI boxes from 3D Slicer markups (LPS or RAS, mm or µm); the scan comes from the
    /// ROI's description, the organ from its control point's label (or, without control
    /// points, the ROI's name). A rotated ROI becomes the axis-aligned box enclosing it; see
    /// [`BoxFormat::read_with_warnings`] for the warning that says so.
    pub fn from_slicer_markups(text: &str) -> Result<Self, String> {
        BoxFormat::SlicerMarkups.read(text)
    }

    /// Saves in the format the extension names ([`BoxFormat::from_path`]); atomically. Boxes
    /// that [`Self::load`] would refuse ([`Self::validate`]) are refused here, before writing.
    pub fn save(&self, path: &Path) -> Result<(), AnnotationError> {
        self.validate().map_err(|detail| AnnotationError::Invalid {
            path: path.display().to_string(),
            detail,
        })?;
        let text = BoxFormat::from_path(path).write(self);
        crate::io::atomic::write_atomically(path, text.as_bytes()).map_err(|source| {
            AnnotationError::Io {
                path: path.display().to_string(),
                source,
            }
        })
    }

    /// Loads what [`Self::save`] writes; warnings are dropped (see [`Self::load_with_warnings`]).
    pub fn load(path: &Path) -> Result<Self, AnnotationError> {
        Self::load_with_warnings(path).map(|(set, _)| set)
    }

    /// Loads a box file with what it lost on the way in: a rotated Slicer ROI read as the box
    /// enclosing it ([`WarningKind::BoxApproximated`]), boxes repeating an earlier (scan, organ)
    /// (the last one wins, in the place of the first), markups that are not ROIs.
    ///
    /// Refused before opening: a FIFO, socket or device (one would block, the other never end),
    /// a folder, a file above [`MAX_FILE_BYTES`].
    pub fn load_with_warnings(path: &Path) -> Result<(Self, Vec<InputWarning>), AnnotationError> {
        let name = path.display().to_string();
        crate::validate::input_path(path)?;
        let bytes = read_limited(path, &name)?;
        let parse = |detail: String| AnnotationError::Parse {
            path: name.clone(),
            detail,
        };
        let text = utf8_text(bytes).map_err(parse)?;
        BoxFormat::from_path(path)
            .read_with_warnings(&text, &name)
            .map_err(parse)
    }
}

/// The bytes of a box file, refusing a folder, or a file above [`MAX_FILE_BYTES`] before
/// reading it.
fn read_limited(path: &Path, name: &str) -> Result<Vec<u8>, AnnotationError> {
    let io = |source: std::io::Error| AnnotationError::Io {
        path: name.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(AnnotationError::Folder {
            path: name.to_owned(),
        });
    }
    if !meta.is_file() {
        // Swapped for a device since `input_path` looked.
        return Err(InputError::NotARegularFile {
            path: path.to_owned(),
            kind: "special file",
        }
        .into());
    }
    let too_large = |bytes| AnnotationError::TooLarge {
        path: name.to_owned(),
        bytes,
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // At most one byte more than allowed: a file growing while read is caught too.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// UTF-8 text without its byte-order mark; UTF-16 (a spreadsheet's "Unicode text") and other
/// bytes are refused with the line they start on.
fn utf8_text(bytes: Vec<u8>) -> Result<String, String> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err("UTF-16 text; save it as UTF-8".to_owned());
    }
    String::from_utf8(bytes)
        .map(|text| strip_bom(&text).to_owned())
        .map_err(|e| {
            let valid = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..valid]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            format!("line {line}: not UTF-8 text")
        })
}

fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// The box file formats: one list for saving, loading, file dialogs and help texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxFormat {
    /// 3D Slicer ROI markups, LPS: a box opens in Slicer.
    SlicerMarkups,
    /// [`BoxSet`] as JSON, RAS mm, predictions with their α.
    Json,
    /// One row per box, RAS mm.
    Csv,
}

impl BoxFormat {
    pub const ALL: [Self; 3] = [Self::SlicerMarkups, Self::Json, Self::Csv];

    pub fn name(self) -> &'static str {
        match self {
            Self::SlicerMarkups => "3D Slicer ROI markups, LPS",
            Self::Json => "JSON",
            Self::Csv => "CSV",
        }
    }

    /// The file name's ending, without the first dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::SlicerMarkups => "mrk.json",
            Self::Json => "json",
            Self::Csv => "csv",
        }
    }

    /// The format a file name's ending names, the longest ending first (`.mrk.json` is also
    /// `.json`); JSON for any other name.
    pub fn from_path(path: &Path) -> Self {
        let name = path.to_string_lossy().to_lowercase();
        Self::ALL
            .into_iter()
            .filter(|f| {
                name.strip_suffix(f.extension())
                    .is_some_and(|stem| stem.ends_with('.'))
            })
            .max_by_key(|f| f.extension().len())
            .unwrap_or(Self::Json)
    }

    /// Every format for a help text: `.mrk.json (3D Slicer ROI markups, LPS), .json (JSON), …`.
    pub fn list() -> String {
        Self::ALL
            .iter()
            .map(|f| format!(".{} ({})", f.extension(), f.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The file's text; call [`BoxSet::validate`] first ([`BoxSet::save`] does).
    pub fn write(self, set: &BoxSet) -> String {
        match self {
            Self::SlicerMarkups => set.to_slicer_markups(),
            Self::Json => set.to_json(),
            Self::Csv => set.to_csv(),
        }
    }

    pub fn read(self, text: &str) -> Result<BoxSet, String> {
        self.read_with_warnings(text, "").map(|(set, _)| set)
    }

    /// Reads a file's text (a leading byte-order mark is skipped); `source` names the file in
    /// the warnings.
    pub fn read_with_warnings(
        self,
        text: &str,
        source: &str,
    ) -> Result<(BoxSet, Vec<InputWarning>), String> {
        let text = strip_bom(text);
        match self {
            Self::SlicerMarkups => read_slicer(text, source),
            Self::Json => read_json(text, source),
            Self::Csv => read_csv(text, source),
        }
    }
}

/// A box set as a reader builds it: (scan, organ) indexed so that a file of n boxes reads in
/// O(n); the last box of a (scan, organ) wins, in the place of the first, as [`BoxSet::set`].
#[derive(Default)]
struct Builder {
    set: BoxSet,
    index: HashMap<(String, String), usize>,
    replaced: usize,
    /// Where the first replacing box stands in the file ("line 7", "boxes[3]").
    first_replaced: Option<String>,
}

impl Builder {
    fn push(&mut self, organ_box: OrganBox, place: impl FnOnce() -> String) {
        match self
            .index
            .entry((organ_box.scan.clone(), organ_box.organ.clone()))
        {
            Entry::Occupied(e) => {
                if let Some(slot) = self.set.boxes.get_mut(*e.get()) {
                    *slot = organ_box;
                }
                self.replaced += 1;
                self.first_replaced.get_or_insert_with(place);
            }
            Entry::Vacant(e) => {
                e.insert(self.set.boxes.len());
                self.set.boxes.push(organ_box);
            }
        }
    }

    fn finish(self, source: &str, warnings: &mut Vec<InputWarning>) -> BoxSet {
        if let Some(first) = self.first_replaced {
            warnings.push(InputWarning::new(
                WarningKind::Other,
                source,
                if self.replaced == 1 {
                    format!("1 box repeats an earlier (scan, organ) and replaces it ({first})")
                } else {
                    format!(
                        "{} boxes repeat an earlier (scan, organ) and replace it (the first at \
                         {first})",
                        self.replaced
                    )
                },
            ));
        }
        self.set
    }
}

/// Why a coordinate cannot be kept: not finite, or beyond ±[`MAX_COORDINATE_MM`].
fn coordinate_problem(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("NaN is not a number".to_owned())
    } else if !v.is_finite() {
        Some(format!("{v} is not a finite number"))
    } else if v.abs() > MAX_COORDINATE_MM {
        Some(format!(
            "{} mm is beyond ±{MAX_COORDINATE_MM} mm",
            short_number(v)
        ))
    } else {
        None
    }
}

/// Why a box cannot be kept, naming the coordinate: see [`BoxSet::validate`].
fn box_problem(b: &WorldBox) -> Option<String> {
    let (lo, hi) = (b.min.to_array(), b.max.to_array());
    for (axis, name) in ["x", "y", "z"].into_iter().enumerate() {
        for (end, v) in [("min", lo[axis]), ("max", hi[axis])] {
            if let Some(problem) = coordinate_problem(v) {
                return Some(format!("{name}_{end} {problem}"));
            }
        }
        if lo[axis] > hi[axis] {
            return Some(format!(
                "{name}_min {} above {name}_max {}",
                short_number(lo[axis]),
                short_number(hi[axis])
            ));
        }
    }
    None
}

fn origin_problem(origin: &BoxOrigin) -> Option<String> {
    match *origin {
        BoxOrigin::Predicted { alpha, .. } if !(alpha > 0.0 && alpha <= MAX_ALPHA) => Some(
            format!("alpha {alpha} is not an enlargement (above 0, at most {MAX_ALPHA})"),
        ),
        _ => None,
    }
}

/// A number for an error message: 1e308 as `1e308`, not 309 digits.
fn short_number(v: f64) -> String {
    if v != 0.0 && !(1e-4..1e7).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// "scan liver" for an error message, cut short if long.
fn label(scan: &str, organ: &str) -> String {
    let text = format!("{scan} {organ}");
    cut(&text, 60)
}

fn cut(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(max_chars).collect();
        format!("{head:?}…")
    }
}

fn read_json(text: &str, source: &str) -> Result<(BoxSet, Vec<InputWarning>), String> {
    let parsed: BoxSet = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut builder = Builder::default();
    for (i, b) in parsed.boxes.into_iter().enumerate() {
        if let Some(problem) = box_problem(&b.bbox).or_else(|| origin_problem(&b.origin)) {
            return Err(format!(
                "boxes[{i}] ({}): {problem}",
                label(&b.scan, &b.organ)
            ));
        }
        builder.push(b, || format!("boxes[{i}]"));
    }
    let mut warnings = Vec::new();
    let set = builder.finish(source, &mut warnings);
    Ok((set, warnings))
}

/// A CSV field as written: quoted fields keep their spaces.
struct Field {
    text: String,
    quoted: bool,
}

/// RFC 4180 records: fields split by commas, optionally in double quotes (`""` is a quote, and
/// a quoted field may span lines); records end at LF, CRLF or a lone CR.
struct CsvRecords<'a> {
    text: &'a str,
    pos: usize,
    /// The line `pos` is on, from 1.
    line: usize,
}

impl<'a> CsvRecords<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            pos: 0,
            line: 1,
        }
    }

    /// The next record and the line it starts on; `None` at the end. More than `max_fields`
    /// fields is an error (a line of 10⁸ commas must not become 10⁸ fields).
    fn next_record(&mut self, max_fields: usize) -> Option<Result<(usize, Vec<Field>), String>> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start_line = self.line;
        let mut fields = Vec::new();
        loop {
            let field = match self.field() {
                Ok(f) => f,
                Err(e) => return Some(Err(e)),
            };
            fields.push(field);
            if fields.len() > max_fields {
                return Some(Err(format!(
                    "line {start_line}: more than {max_fields} fields"
                )));
            }
            let bytes = self.text.as_bytes();
            match bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                None => return Some(Ok((start_line, fields))),
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                    return Some(Ok((start_line, fields)));
                }
                Some(b'\r') => {
                    self.pos += 1;
                    if bytes.get(self.pos) == Some(&b'\n') {
                        self.pos += 1;
                    }
                    self.line += 1;
                    return Some(Ok((start_line, fields)));
                }
                Some(_) => {
                    return Some(Err(format!(
                        "line {}: text after the closing quote of field {}",
                        self.line,
                        fields.len()
                    )));
                }
            }
        }
    }

    /// One field; `pos` is left on the comma or line end after it.
    fn field(&mut self) -> Result<Field, String> {
        let bytes = self.text.as_bytes();
        let start = self.pos;
        let mut p = self.pos;
        while matches!(bytes.get(p), Some(b' ' | b'\t')) {
            p += 1;
        }
        if bytes.get(p) != Some(&b'"') {
            while !matches!(bytes.get(self.pos), None | Some(b',' | b'\n' | b'\r')) {
                self.pos += 1;
            }
            return Ok(Field {
                text: self.text[start..self.pos].to_owned(),
                quoted: false,
            });
        }
        let opened_on = self.line;
        let mut text = String::new();
        p += 1;
        let mut segment = p;
        loop {
            match bytes.get(p) {
                None => {
                    return Err(format!("line {opened_on}: a quoted field is never closed"));
                }
                Some(b'"') if bytes.get(p + 1) == Some(&b'"') => {
                    text.push_str(&self.text[segment..=p]);
                    p += 2;
                    segment = p;
                }
                Some(b'"') => {
                    text.push_str(&self.text[segment..p]);
                    p += 1;
                    break;
                }
                Some(b'\n') => {
                    self.line += 1;
                    p += 1;
                }
                Some(_) => p += 1,
            }
        }
        while matches!(bytes.get(p), Some(b' ' | b'\t')) {
            p += 1;
        }
        self.pos = p;
        Ok(Field { text, quoted: true })
    }
}

fn read_csv(text: &str, source: &str) -> Result<(BoxSet, Vec<InputWarning>), String> {
    let header_error = |problem: String| {
        format!(
            "the first line must be the header `{CSV_HEADER}` (columns in any order): {problem}"
        )
    };
    let mut records = CsvRecords::new(text);
    let (_, header) = match records.next_record(64) {
        None => return Err(header_error("the file is empty".to_owned())),
        Some(Err(e)) => return Err(header_error(e)),
        Some(Ok(record)) => record,
    };
    // Where each of CSV_COLUMNS is in a row.
    let mut column = [usize::MAX; 9];
    for (i, f) in header.iter().enumerate() {
        let name = f.text.trim().to_lowercase();
        match CSV_COLUMNS.iter().position(|&c| c == name) {
            Some(c) if column[c] != usize::MAX => {
                return Err(header_error(format!("{name:?} is there twice")));
            }
            Some(c) => column[c] = i,
            None => return Err(header_error(format!("unknown column {}", cut(&name, 40)))),
        }
    }
    if let Some(c) = column.iter().position(|&i| i == usize::MAX) {
        return Err(header_error(format!("no column {:?}", CSV_COLUMNS[c])));
    }
    let width = header.len();
    let mut builder = Builder::default();
    while let Some(record) = records.next_record(width) {
        let (line, fields) = record?;
        // Blank lines, and the empty rows a spreadsheet writes as ",,,,,,,,".
        if fields.iter().all(|f| !f.quoted && f.text.trim().is_empty()) {
            continue;
        }
        if fields.len() != width {
            return Err(format!(
                "line {line}: {} fields, {width} expected",
                fields.len()
            ));
        }
        let field = |c: usize| fields.get(column[c]).map_or("", |f| f.text.as_str());
        let name = |c: usize| match fields.get(column[c]) {
            Some(f) if f.quoted => f.text.clone(),
            Some(f) => f.text.trim().to_owned(),
            None => String::new(),
        };
        let number = |c: usize| -> Result<f64, String> {
            let text = field(c).trim();
            let v: f64 = text.parse().map_err(|_| {
                format!(
                    "line {line}: {} {} is not a number",
                    CSV_COLUMNS[c],
                    cut(text, 40)
                )
            })?;
            match coordinate_problem(v) {
                Some(problem) => Err(format!("line {line}: {} {problem}", CSV_COLUMNS[c])),
                None => Ok(v),
            }
        };
        let lo = DVec3::new(number(2)?, number(3)?, number(4)?);
        let hi = DVec3::new(number(5)?, number(6)?, number(7)?);
        let bbox = WorldBox { min: lo, max: hi };
        // Stated min and max the wrong way round is a mistake in the file: not swapped.
        if let Some(problem) = box_problem(&bbox) {
            return Err(format!("line {line}: {problem}"));
        }
        let origin = match field(8).trim().to_lowercase().as_str() {
            "drawn" => BoxOrigin::Drawn,
            "accepted" => BoxOrigin::Accepted,
            "predicted" => BoxOrigin::Predicted {
                supports: 0,
                alpha: 1.0,
            },
            _ => {
                return Err(format!(
                    "line {line}: unknown origin {} (drawn, accepted or predicted)",
                    cut(field(8).trim(), 40)
                ));
            }
        };
        builder.push(
            OrganBox {
                scan: name(0),
                organ: name(1),
                bbox,
                origin,
            },
            || format!("line {line}"),
        );
    }
    let mut warnings = Vec::new();
    let set = builder.finish(source, &mut warnings);
    Ok((set, warnings))
}

/// Rotated ROIs warned about one by one up to this; then one warning counts the rest.
const MAX_ROTATION_WARNINGS: usize = 20;
/// How far from orthonormal (each entry of OᵀO − I) an ROI's orientation may be.
const ORTHONORMAL_TOLERANCE: f64 = 1e-3;

fn read_slicer(text: &str, source: &str) -> Result<(BoxSet, Vec<InputWarning>), String> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let markups = doc
        .get("markups")
        .and_then(serde_json::Value::as_array)
        .ok_or("no `markups` list")?;
    let mut builder = Builder::default();
    let mut warnings = Vec::new();
    let mut rotated = 0;
    // Markups that are not ROIs: how many, and the first few kinds.
    let mut skipped = 0;
    let mut skipped_kinds: Vec<String> = Vec::new();
    for (i, m) in markups.iter().enumerate() {
        if !m.is_object() {
            return Err(format!("markups[{i}] is not an object"));
        }
        let kind = m.get("type").and_then(serde_json::Value::as_str);
        if kind != Some("ROI") {
            let kind = kind.map_or_else(|| "without a type".to_owned(), |k| cut(k, 20));
            skipped += 1;
            if skipped_kinds.len() < 5 && !skipped_kinds.contains(&kind) {
                skipped_kinds.push(kind);
            }
            continue;
        }
        let name = m
            .get("name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        let at = format!("markups[{i}] ({})", cut(name, 60));
        let roi = read_roi(m).map_err(|problem| format!("{at}: {problem}"))?;
        if roi.rotated {
            rotated += 1;
            if rotated <= MAX_ROTATION_WARNINGS {
                warnings.push(InputWarning::new(
                    WarningKind::BoxApproximated,
                    source,
                    format!(
                        "{at} is rotated; read as the axis-aligned box that encloses it \
                         (larger than drawn)"
                    ),
                ));
            }
        }
        let organ = m
            .get("controlPoints")
            .and_then(|p| p.get(0))
            .and_then(|p| p.get("label"))
            .and_then(serde_json::Value::as_str)
            // Slicer's own ROIs have no control points: the name is the organ.
            .unwrap_or(name);
        let scan = m
            .get("description")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        builder.push(
            OrganBox {
                scan: scan.to_owned(),
                organ: organ.to_owned(),
                bbox: roi.bbox,
                origin: BoxOrigin::Drawn,
            },
            || format!("markups[{i}]"),
        );
    }
    if rotated > MAX_ROTATION_WARNINGS {
        warnings.push(InputWarning::new(
            WarningKind::BoxApproximated,
            source,
            format!(
                "{} more rotated ROIs read as the axis-aligned boxes that enclose them",
                rotated - MAX_ROTATION_WARNINGS
            ),
        ));
    }
    if skipped > 0 {
        warnings.push(InputWarning::new(
            WarningKind::Other,
            source,
            format!(
                "{skipped} markup{} that {} not ROIs skipped ({}): only ROIs are boxes",
                if skipped == 1 { "" } else { "s" },
                if skipped == 1 { "is" } else { "are" },
                skipped_kinds.join(", ")
            ),
        ));
    }
    let set = builder.finish(source, &mut warnings);
    Ok((set, warnings))
}

/// An ROI as a world RAS box.
struct Roi {
    bbox: WorldBox,
    /// Not along the world axes: `bbox` encloses the ROI and is larger.
    rotated: bool,
}

/// One ROI's centre, size and orientation, in its coordinate system and units, as an RAS mm
/// box. Slicer's schema: `coordinateSystem` "LPS" (the default) or "RAS"; `coordinateUnits`
/// "mm" (the default) or "um", or `[code, "UCUM", meaning]`; `orientation` a 3×3 matrix row
/// by row whose columns are the ROI's axes.
fn read_roi(m: &serde_json::Value) -> Result<Roi, String> {
    let lps = match m.get("coordinateSystem") {
        None => true,
        Some(serde_json::Value::String(s)) if s.is_empty() || s.eq_ignore_ascii_case("LPS") => true,
        Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case("RAS") => false,
        Some(other) => {
            return Err(format!(
                "coordinateSystem {} is not LPS or RAS",
                short_json(other)
            ));
        }
    };
    let mm_per_unit = mm_per_unit(m.get("coordinateUnits"))?;
    let centre = numbers::<3>(m.get("center"), "center")?;
    let size = numbers::<3>(m.get("size"), "size")?;
    let orientation = match m.get("orientation") {
        None => [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        some => numbers::<9>(some, "orientation")?,
    };
    let centre = DVec3::from_array(centre) * mm_per_unit;
    let size = DVec3::from_array(size) * mm_per_unit;
    for (axis, v) in ["x", "y", "z"].into_iter().zip(centre.to_array()) {
        if let Some(problem) = coordinate_problem(v) {
            return Err(format!("center {axis} {problem}"));
        }
    }
    for (axis, v) in ["x", "y", "z"].into_iter().zip(size.to_array()) {
        if v < 0.0 {
            return Err(format!("size {axis} {} is negative", short_number(v)));
        }
        if v > 2.0 * MAX_COORDINATE_MM {
            return Err(format!(
                "size {axis} {} mm is beyond {} mm",
                short_number(v),
                2.0 * MAX_COORDINATE_MM
            ));
        }
    }
    // Row by row: column j, the ROI's axis j, is (o[j], o[3 + j], o[6 + j]).
    let axes = DMat3::from_cols_array(&orientation).transpose();
    let gram = axes.transpose() * axes;
    let off = (gram - DMat3::IDENTITY)
        .to_cols_array()
        .iter()
        .fold(0.0_f64, |worst, v| worst.max(v.abs()));
    if off > ORTHONORMAL_TOLERANCE {
        return Err(format!(
            "orientation {} is not a rotation (its columns are not orthonormal within \
             {ORTHONORMAL_TOLERANCE})",
            short_json(m.get("orientation").unwrap_or(&serde_json::Value::Null))
        ));
    }
    // Half the box's extent along each world axis: Σ_j |O_ij| s_j / 2 (the same in LPS and
    // RAS, which differ by signs). Exact for a signed permutation, enclosing otherwise.
    let abs = DMat3::from_cols(axes.x_axis.abs(), axes.y_axis.abs(), axes.z_axis.abs());
    let half = abs * (size * 0.5);
    let rotated = orientation
        .iter()
        .any(|v| v.abs() > 1e-6 && (v.abs() - 1.0).abs() > 1e-6);
    let centre = if lps { ras_to_lps(centre) } else { centre }; // the same flip both ways
    let bbox = WorldBox {
        min: clamp_to_bounds(centre - half),
        max: clamp_to_bounds(centre + half),
    };
    if let Some(problem) = box_problem(&bbox) {
        return Err(format!("the box it spans: {problem}"));
    }
    Ok(Roi { bbox, rotated })
}

/// A corner computed from a centre and size can land an ulp beyond the bound that the box
/// saved was within: brought back, so that every saved box reads back.
fn clamp_to_bounds(p: DVec3) -> DVec3 {
    let slack = MAX_COORDINATE_MM * (1.0 + 1e-9);
    let clamp = |v: f64| {
        if v.abs() > MAX_COORDINATE_MM && v.abs() <= slack {
            v.signum() * MAX_COORDINATE_MM
        } else {
            v
        }
    };
    DVec3::new(clamp(p.x), clamp(p.y), clamp(p.z))
}

/// Millimetres per unit of an ROI's `coordinateUnits`. µm, the schema's other unit, is
/// converted; anything else is refused (Slicer itself refuses units other than its scene's).
fn mm_per_unit(units: Option<&serde_json::Value>) -> Result<f64, String> {
    let code = match units {
        None => return Ok(1.0),
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(serde_json::Value::Array(a)) => {
            let scheme = a.get(1).and_then(serde_json::Value::as_str).unwrap_or("");
            if !(scheme.is_empty() || scheme == "UCUM") {
                return Err(format!(
                    "coordinateUnits {}: only UCUM units are read",
                    short_json(&serde_json::Value::Array(a.clone()))
                ));
            }
            match a.first().and_then(serde_json::Value::as_str) {
                Some(code) => code,
                None => {
                    return Err(format!(
                        "coordinateUnits {} names no unit",
                        short_json(&serde_json::Value::Array(a.clone()))
                    ));
                }
            }
        }
        Some(other) => {
            return Err(format!(
                "coordinateUnits {} is not a unit",
                short_json(other)
            ));
        }
    };
    match code {
        "" | "mm" => Ok(1.0),
        "um" => Ok(1e-3),
        other => Err(format!(
            "coordinateUnits {} is not mm or um (µm)",
            cut(other, 20)
        )),
    }
}

/// Exactly `N` numbers, or an error naming `what`: `[1, "x", 3]` is not three numbers.
fn numbers<const N: usize>(v: Option<&serde_json::Value>, what: &str) -> Result<[f64; N], String> {
    let Some(v) = v else {
        return Err(format!("no {what}"));
    };
    let bad = || format!("{what} {} is not {N} numbers", short_json(v));
    let list = v.as_array().ok_or_else(bad)?;
    if list.len() != N {
        return Err(bad());
    }
    let mut out = [0.0; N];
    for (slot, item) in out.iter_mut().zip(list) {
        *slot = item.as_f64().filter(|x| x.is_finite()).ok_or_else(bad)?;
    }
    Ok(out)
}

/// A JSON value for an error message, cut short if long.
fn short_json(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 80 {
        text
    } else {
        let head: String = text.chars().take(80).collect();
        format!("{head}…")
    }
}

fn ras_to_lps(p: DVec3) -> DVec3 {
    DVec3::new(-p.x, -p.y, p.z)
}

/// A scan or organ name as a CSV field: quoted (quotes doubled) where it holds a comma, quote
/// or line break, or begins or ends with a space the reader would trim.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.trim() != s {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Undo and redo over snapshots of a value (a few boxes: snapshots are cheap).
#[derive(Debug, Clone, Default)]
pub struct History<T> {
    undo: Vec<T>,
    redo: Vec<T>,
}

impl<T: Clone> History<T> {
    /// Call before changing `current`: the old state can then be restored.
    pub fn record(&mut self, current: &T) {
        self.undo.push(current.clone());
        self.redo.clear();
    }

    /// Restores the state before the last change; `false` when there is none.
    pub fn undo(&mut self, current: &mut T) -> bool {
        match self.undo.pop() {
            Some(previous) => {
                self.redo.push(std::mem::replace(current, previous));
                true
            }
            None => false,
        }
    }

    /// Re-applies the last undone change; `false` when there is none.
    pub fn redo(&mut self, current: &mut T) -> bool {
        match self.redo.pop() {
            Some(next) => {
                self.undo.push(std::mem::replace(current, next));
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BoxSet {
        let mut set = BoxSet::default();
        set.set(OrganBox {
            scan: "btcv_02".into(),
            organ: "liver".into(),
            bbox: WorldBox::new(
                DVec3::new(-200.5, -300.25, 380.0),
                DVec3::new(-40.0, -150.0, 560.125),
            ),
            origin: BoxOrigin::Drawn,
        });
        set.set(OrganBox {
            scan: "btcv_05".into(),
            organ: "liver".into(),
            bbox: WorldBox::new(
                DVec3::new(-190.0, -280.0, 300.0),
                DVec3::new(-30.0, -140.0, 470.0),
            ),
            origin: BoxOrigin::Accepted,
        });
        set
    }

    #[test]
    fn every_format_round_trips_the_boxes() {
        let set = sample();
        assert_eq!(BoxSet::from_json(&set.to_json()).unwrap(), set);
        assert_eq!(BoxSet::from_csv(&set.to_csv()).unwrap(), set);
        let slicer = BoxSet::from_slicer_markups(&set.to_slicer_markups()).unwrap();
        for (a, b) in set.boxes.iter().zip(&slicer.boxes) {
            assert_eq!(
                (a.scan.as_str(), a.organ.as_str()),
                (b.scan.as_str(), b.organ.as_str())
            );
            assert!(
                (a.bbox.min - b.bbox.min).length() < 1e-9
                    && (a.bbox.max - b.bbox.max).length() < 1e-9
            );
        }
        let dir = tempfile::tempdir().unwrap();
        for name in ["boxes.json", "boxes.csv", "boxes.mrk.json"] {
            let path = dir.path().join(name);
            set.save(&path).unwrap();
            let back = BoxSet::load(&path).unwrap();
            assert_eq!(back.boxes.len(), 2, "{name}");
            assert!(
                (back.boxes[0].bbox.min - set.boxes[0].bbox.min).length() < 1e-9,
                "{name}"
            );
        }
    }

    #[test]
    fn the_longest_ending_names_the_format() {
        let of = |name: &str| BoxFormat::from_path(Path::new(name));
        assert_eq!(of("a/boxes.mrk.json"), BoxFormat::SlicerMarkups);
        assert_eq!(of("BOXES.MRK.JSON"), BoxFormat::SlicerMarkups);
        assert_eq!(of("boxes.json"), BoxFormat::Json);
        assert_eq!(of("boxes.csv"), BoxFormat::Csv);
        assert_eq!(of("boxes.txt"), BoxFormat::Json);
        assert_eq!(of("boxesmrk.json"), BoxFormat::Json);
        for f in BoxFormat::ALL {
            assert_eq!(of(&format!("x.{}", f.extension())), f);
        }
    }

    #[test]
    fn slicer_gets_lps_coordinates() {
        let text = sample().to_slicer_markups();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let centre = &doc["markups"][0]["center"];
        // RAS centre (-120.25, -225.125, 470.0625) is LPS (120.25, 225.125, 470.0625).
        assert_eq!(centre[0].as_f64(), Some(120.25));
        assert_eq!(centre[1].as_f64(), Some(225.125));
        assert_eq!(doc["markups"][0]["coordinateSystem"], "LPS");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        assert!(
            BoxSet::from_csv("a,b\n")
                .unwrap_err()
                .contains("first line")
        );
        let row = format!("{CSV_HEADER}\nx,liver,1,2,3,4,5,NaN,drawn\n");
        assert!(BoxSet::from_csv(&row).unwrap_err().contains("not a number"));
        assert!(
            BoxSet::from_slicer_markups("{}")
                .unwrap_err()
                .contains("markups")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boxes.json");
        std::fs::write(&path, "[1, 2").unwrap();
        let e = BoxSet::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("boxes.json") && e.contains("not a box file"),
            "{e}"
        );
    }

    #[test]
    fn undo_and_redo_walk_the_edits() {
        let mut set = BoxSet::default();
        let mut history = History::default();
        for b in sample().boxes {
            history.record(&set);
            set.set(b);
        }
        assert_eq!(set.boxes.len(), 2);
        assert!(history.undo(&mut set));
        assert_eq!(set.boxes.len(), 1);
        assert!(history.undo(&mut set));
        assert!(set.boxes.is_empty());
        assert!(!history.undo(&mut set));
        assert!(history.redo(&mut set));
        assert_eq!(set.boxes.len(), 1);
        // A new edit drops what could have been redone.
        history.record(&set);
        set.boxes.clear();
        assert!(!history.redo(&mut set));
    }
}
