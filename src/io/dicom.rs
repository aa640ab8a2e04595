//! DICOM CT series (dicom-rs): a folder of slice files becomes one volume in HU with its world
//! affine. Slices are grouped by SeriesInstanceUID, sorted along the slice normal by
//! ImagePositionPatient and checked for missing or uneven slices; RescaleSlope/Intercept give
//! HU; ImageOrientationPatient and PixelSpacing give the affine, in DICOM's LPS turned into RAS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_core::value::{PrimitiveValue, Value};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use glam::{DMat3, DVec3};

use crate::error::VolumeError;
use crate::geometry::Affine;
use crate::io::nifti::TransformSource;
use crate::io::{StorageInfo, StoredVolume};
use crate::volume::Volume;

/// Largest series read (voxels): 2³¹, as for NIfTI.
const MAX_VOXELS: u64 = 1 << 31;

/// Whether `path` is a folder holding at least one DICOM file (the `DICM` magic at byte 128).
pub fn is_dicom_folder(path: &Path) -> bool {
    path.is_dir() && dicom_files(path).is_ok_and(|f| !f.is_empty())
}

fn has_dicom_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head[128..132] == b"DICM"
}

fn dicom_files(dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    let entries = std::fs::read_dir(dir).map_err(|source| VolumeError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && has_dicom_magic(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Walks a DICOM file's elements before dicom-rs parses it, and refuses one whose declared
/// value length runs past the end of the file. A parser allocates what an element claims, so a
/// corrupt length of a few gigabytes in a small file must be stopped here (found by fuzzing).
/// Sequences and items are walked into; the fragments of compressed pixel data are skipped.
fn check_element_lengths(path: &Path) -> Result<(), VolumeError> {
    use std::io::{Read, Seek, SeekFrom};
    const VRS: [&[u8; 2]; 34] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
        b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
        b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
    ];
    const LONG_VRS: [&[u8; 2]; 13] = [
        b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
    ];
    let io = |source| VolumeError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
    let size = file.get_ref().metadata().map_err(io)?.len();
    // After the preamble and `DICM`, the meta group: its length (0002,0000) first, then as many
    // explicit VR little endian elements as that length covers, read as dicom-rs reads them, so
    // that the data set starts where dicom-rs will start it.
    let mut first = [0u8; 12];
    file.seek(SeekFrom::Start(132)).map_err(io)?;
    if size < 144
        || file.read_exact(&mut first).is_err()
        || first[..8] != [2, 0, 0, 0, b'U', b'L', 4, 0]
    {
        return Err(bad(
            path,
            "the file meta group does not start with its length, (0002,0000) UL: a corrupt file",
        ));
    }
    let mut meta_left = u64::from(u32::from_le_bytes([
        first[8], first[9], first[10], first[11],
    ]));
    let mut pos: u64 = 144;
    // The transfer syntax decides how the data set is encoded.
    let (mut explicit, mut big_endian) = (true, false);
    let mut in_fragments = false;
    // Sequences and items of undefined length not yet closed by their delimiter.
    let mut open_undefined = 0usize;
    let mut head = [0u8; 8];
    while pos + 8 <= size {
        file.read_exact(&mut head).map_err(io)?;
        let element_start = pos;
        pos += 8;
        let meta = meta_left > 0;
        let be = big_endian && !meta;
        let u16_at = |i: usize| {
            let b = [head[i], head[i + 1]];
            if be {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let (group, element) = (u16_at(0), u16_at(2));
        let tag = format!("({group:04X},{element:04X})");
        // Item tags carry no VR.
        let element_explicit = meta || explicit && group != 0xFFFE;
        let vr = [head[4], head[5]];
        let length = if !element_explicit {
            let b = [head[4], head[5], head[6], head[7]];
            if be {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        } else if !VRS.contains(&&vr) {
            return Err(bad(
                path,
                format!(
                    "element {tag} has no valid value representation ({:?}): a corrupt file",
                    String::from_utf8_lossy(&vr)
                ),
            ));
        } else if LONG_VRS.contains(&&vr) {
            let mut more = [0u8; 4];
            file.read_exact(&mut more).map_err(io)?;
            pos += 4;
            if be {
                u32::from_be_bytes(more)
            } else {
                u32::from_le_bytes(more)
            }
        } else {
            u32::from(u16_at(6))
        };
        if length == u32::MAX && meta {
            return Err(bad(
                path,
                format!("meta element {tag} has an undefined length"),
            ));
        }
        if meta {
            meta_left = meta_left.saturating_sub(pos - element_start + u64::from(length));
        }
        if length == u32::MAX {
            // Undefined length: a sequence, an item, or compressed pixel data; walk into it. What
            // follows a sequence must be an item or its end, and every one must be closed.
            if group != 0xFFFE {
                let mut next = [0u8; 4];
                let follows = file.read_exact(&mut next).is_ok();
                file.seek(SeekFrom::Current(if follows { -4 } else { 0 }))
                    .map_err(io)?;
                let item = |e: u16| {
                    if be {
                        next == [0xFF, 0xFE, (e >> 8) as u8, e as u8]
                    } else {
                        next == [0xFE, 0xFF, e as u8, (e >> 8) as u8]
                    }
                };
                if !(follows && (item(0xE000) || item(0xE0DD))) {
                    return Err(bad(
                        path,
                        format!("element {tag} has an undefined length but holds no items"),
                    ));
                }
            }
            if (group, element) == (0x7FE0, 0x0010) {
                in_fragments = true;
            }
            open_undefined += 1;
            continue;
        }
        if group == 0xFFFE && (element == 0xE00D || element == 0xE0DD) {
            open_undefined = open_undefined.saturating_sub(1);
        }
        let length = u64::from(length);
        // Binary values come in whole numbers of their size; a parser that reads only the whole
        // numbers loses its place in the file on the rest (found by fuzzing).
        let unit: u64 = match &vr {
            _ if !element_explicit => 1,
            b"SS" | b"US" | b"OW" => 2,
            b"SL" | b"UL" | b"FL" | b"AT" | b"OF" | b"OL" => 4,
            b"FD" | b"SV" | b"UV" | b"OD" | b"OV" => 8,
            _ => 1,
        };
        if length % unit != 0 {
            return Err(bad(
                path,
                format!(
                    "element {tag} ({}) holds {length} bytes, not a multiple of {unit}: a corrupt file",
                    String::from_utf8_lossy(&vr)
                ),
            ));
        }
        if pos + length > size {
            return Err(bad(
                path,
                format!(
                    "element {tag} claims {length} bytes but the file holds {} after it \
                     (a corrupt or truncated file)",
                    size - pos
                ),
            ));
        }
        if (group, element) == (0xFFFE, 0xE0DD) {
            in_fragments = false;
        }
        if meta && (group, element) == (0x0002, 0x0010) {
            let mut uid = vec![0u8; length as usize];
            file.read_exact(&mut uid).map_err(io)?;
            pos += length;
            let uid = String::from_utf8_lossy(&uid);
            let uid = uid.trim_end_matches(['\0', ' ']);
            if uid == "1.2.840.10008.1.2.1.99" {
                // A deflated data set: dicom-rs inflates it; not walked here.
                return Ok(());
            }
            explicit = uid != "1.2.840.10008.1.2";
            big_endian = uid == "1.2.840.10008.1.2.2";
            continue;
        }
        // Walk into sequences and items (their values are elements again), skip other values.
        let mut peek = [0u8; 4];
        let starts_with_item = |peek: &[u8; 4]| {
            if be {
                *peek == [0xFF, 0xFE, 0xE0, 0x00]
            } else {
                *peek == [0xFE, 0xFF, 0x00, 0xE0]
            }
        };
        let walk_in = !meta
            && !in_fragments
            && length >= 8
            && (element_explicit && vr == *b"SQ"
                || (group, element) == (0xFFFE, 0xE000)
                || !element_explicit && {
                    file.read_exact(&mut peek).map_err(io)?;
                    file.seek(SeekFrom::Current(-4)).map_err(io)?;
                    starts_with_item(&peek)
                });
        if !walk_in {
            file.seek(SeekFrom::Current(length as i64)).map_err(io)?;
            pos += length;
        }
    }
    if open_undefined > 0 {
        return Err(bad(
            path,
            "the file ends inside a sequence of undefined length (a truncated or corrupt file)",
        ));
    }
    Ok(())
}

fn bad(path: &Path, detail: impl Into<String>) -> VolumeError {
    VolumeError::Dicom {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// One slice's header.
#[derive(Debug, Clone)]
struct SliceHeader {
    path: PathBuf,
    series: String,
    /// SeriesDescription, empty when absent.
    description: String,
    position: DVec3,
    row_dir: DVec3,
    col_dir: DVec3,
    /// (between rows, between columns), mm.
    spacing: [f64; 2],
    rows: usize,
    columns: usize,
    bits_allocated: u16,
    signed: bool,
    slope: f64,
    intercept: f64,
}

fn floats(
    obj: &DefaultDicomObject,
    tag: dicom_core::Tag,
    path: &Path,
    what: &str,
) -> Result<Vec<f64>, VolumeError> {
    obj.element(tag)
        .map_err(|_| bad(path, format!("no {what}")))?
        .to_multi_float64()
        .map_err(|e| bad(path, format!("unreadable {what}: {e}")))
}

fn header(path: &Path) -> Result<SliceHeader, VolumeError> {
    check_element_lengths(path)?;
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| bad(path, format!("not a readable DICOM file: {e}")))?;
    let int = |tag, what: &str| -> Result<u16, VolumeError> {
        obj.element(tag)
            .map_err(|_| bad(path, format!("no {what}")))?
            .to_int::<u16>()
            .map_err(|e| bad(path, format!("unreadable {what}: {e}")))
    };
    let optional = |tag, default: f64| {
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_float64().ok())
            .unwrap_or(default)
    };
    let position = floats(
        &obj,
        tags::IMAGE_POSITION_PATIENT,
        path,
        "ImagePositionPatient",
    )?;
    let orientation = floats(
        &obj,
        tags::IMAGE_ORIENTATION_PATIENT,
        path,
        "ImageOrientationPatient",
    )?;
    let spacing = floats(&obj, tags::PIXEL_SPACING, path, "PixelSpacing")?;
    if position.len() != 3 || orientation.len() != 6 || spacing.len() != 2 {
        return Err(bad(
            path,
            "ImagePositionPatient, ImageOrientationPatient or PixelSpacing has the wrong number of values",
        ));
    }
    let row_dir = DVec3::new(orientation[0], orientation[1], orientation[2]);
    let col_dir = DVec3::new(orientation[3], orientation[4], orientation[5]);
    let orthonormal = (row_dir.length() - 1.0).abs() < 1e-3
        && (col_dir.length() - 1.0).abs() < 1e-3
        && row_dir.dot(col_dir).abs() < 1e-3;
    let finite = position.iter().chain(&spacing).all(|v| v.is_finite());
    if !orthonormal || !finite || spacing.iter().any(|s| *s <= 0.0 || *s > 100.0) {
        return Err(bad(
            path,
            format!(
                "absurd geometry: orientation {orientation:?}, spacing {spacing:?}, position {position:?}"
            ),
        ));
    }
    let text = |tag| {
        obj.element(tag)
            .ok()
            .and_then(|e| {
                e.to_str()
                    .ok()
                    .map(|s| s.trim_end_matches('\0').trim().to_owned())
            })
            .unwrap_or_default()
    };
    Ok(SliceHeader {
        path: path.to_owned(),
        series: text(tags::SERIES_INSTANCE_UID),
        description: text(tags::SERIES_DESCRIPTION),
        position: DVec3::new(position[0], position[1], position[2]),
        row_dir: row_dir.normalize(),
        col_dir: col_dir.normalize(),
        spacing: [spacing[0], spacing[1]],
        rows: int(tags::ROWS, "Rows")? as usize,
        columns: int(tags::COLUMNS, "Columns")? as usize,
        bits_allocated: int(tags::BITS_ALLOCATED, "BitsAllocated")?,
        signed: int(tags::PIXEL_REPRESENTATION, "PixelRepresentation")? == 1,
        slope: optional(tags::RESCALE_SLOPE, 1.0),
        intercept: optional(tags::RESCALE_INTERCEPT, 0.0),
    })
}

/// The stored values of one slice's pixel data, row by row.
fn pixels(h: &SliceHeader) -> Result<Vec<f32>, VolumeError> {
    let path = &h.path;
    let obj = dicom_object::open_file(path)
        .map_err(|e| bad(path, format!("not a readable DICOM file: {e}")))?;
    let syntax = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned();
    let element = obj
        .element(tags::PIXEL_DATA)
        .map_err(|_| bad(path, "no pixel data"))?;
    let n = h.rows * h.columns;
    let truncated = |found: usize| VolumeError::Truncated {
        path: path.clone(),
        what: "pixel data",
        needed: n as u64,
        found: found as u64,
    };
    let values: Vec<f32> = match element.value() {
        Value::PixelSequence(_) => decode_compressed(&obj, h, &syntax)?,
        Value::Primitive(p) => match (p, h.bits_allocated, h.signed) {
            (PrimitiveValue::U16(v), 16, false) => v.iter().map(|&x| x as f32).collect(),
            (PrimitiveValue::U16(v), 16, true) => v.iter().map(|&x| x as i16 as f32).collect(),
            (PrimitiveValue::I16(v), 16, _) => v.iter().map(|&x| x as f32).collect(),
            (PrimitiveValue::U8(b), 16, signed) => b
                .chunks_exact(2)
                .map(|c| {
                    let raw = u16::from_le_bytes([c[0], c[1]]);
                    if signed {
                        raw as i16 as f32
                    } else {
                        raw as f32
                    }
                })
                .collect(),
            (PrimitiveValue::U8(b), 8, _) => b.iter().map(|&x| x as f32).collect(),
            (_, bits, _) => {
                return Err(bad(
                    path,
                    format!("unsupported pixel data: {bits} bits allocated ({syntax})"),
                ));
            }
        },
        Value::Sequence(_) => return Err(bad(path, "pixel data is a sequence")),
    };
    if values.len() < n {
        return Err(truncated(values.len()));
    }
    Ok(values.into_iter().take(n).collect())
}

/// Compressed pixel data through dicom-pixeldata's pure-Rust decoders (JPEG baseline, extended
/// and lossless, RLE Lossless, deflate); other syntaxes (JPEG-LS, JPEG 2000) get an error naming
/// the syntax. Returns the stored values (rescaling is applied by the caller).
fn decode_compressed(
    obj: &dicom_object::DefaultDicomObject,
    h: &SliceHeader,
    syntax: &str,
) -> Result<Vec<f32>, VolumeError> {
    use dicom_pixeldata::PixelDecoder;
    let unsupported = |why: String| {
        bad(
            &h.path,
            format!(
                "compressed pixel data (transfer syntax {syntax}{}) could not be decoded: {why}; \
                 decompress the series first (e.g. `gdcmconv --raw`)",
                transfer_syntax_name(syntax).map_or(String::new(), |n| format!(", {n}"))
            ),
        )
    };
    let decoded = obj
        .decode_pixel_data()
        .map_err(|e| unsupported(e.to_string()))?;
    if decoded.samples_per_pixel() != 1 || decoded.number_of_frames() != 1 {
        return Err(unsupported(format!(
            "{} samples per pixel, {} frames (a CT slice has one of each)",
            decoded.samples_per_pixel(),
            decoded.number_of_frames()
        )));
    }
    let bytes = decoded.data();
    Ok(match decoded.bits_allocated() {
        16 => bytes
            .chunks_exact(2)
            .map(|c| {
                let raw = u16::from_le_bytes([c[0], c[1]]);
                if h.signed {
                    raw as i16 as f32
                } else {
                    raw as f32
                }
            })
            .collect(),
        8 => bytes.iter().map(|&b| b as f32).collect(),
        bits => return Err(unsupported(format!("{bits} bits allocated"))),
    })
}

fn transfer_syntax_name(uid: &str) -> Option<&'static str> {
    Some(match uid {
        "1.2.840.10008.1.2.4.50" => "JPEG Baseline",
        "1.2.840.10008.1.2.4.51" => "JPEG Extended",
        "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70" => "JPEG Lossless",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "JPEG-LS",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "JPEG 2000",
        "1.2.840.10008.1.2.5" => "RLE Lossless",
        _ => return None,
    })
}

/// One series of a DICOM folder, for choosing among several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesInfo {
    /// SeriesInstanceUID.
    pub uid: String,
    /// SeriesDescription, empty when absent.
    pub description: String,
    pub slices: usize,
}

/// The series of a DICOM folder, by UID. Files whose headers cannot be read are left out of the
/// list (reading the series will name them); a folder with none readable is an error.
pub fn list_series(dir: &Path) -> Result<Vec<SeriesInfo>, VolumeError> {
    let files = dicom_files(dir)?;
    let mut first_error = None;
    let mut series: BTreeMap<String, SeriesInfo> = BTreeMap::new();
    for file in &files {
        match header(file) {
            Ok(h) => {
                let entry = series
                    .entry(h.series.clone())
                    .or_insert_with(|| SeriesInfo {
                        uid: h.series.clone(),
                        description: h.description.clone(),
                        slices: 0,
                    });
                entry.slices += 1;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (series.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(bad(dir, "no DICOM files (none has the DICM marker)")),
        _ => Ok(series.into_values().collect()),
    }
}

/// The path that names one series of a DICOM folder: `dir/<SeriesInstanceUID>`. Every reader of
/// ape (CLI, viewer, trainer) accepts it where it accepts a folder.
pub fn series_path(dir: &Path, uid: &str) -> PathBuf {
    dir.join(uid)
}

/// The folder and series UID of a path made by [`series_path`]: a path that does not exist,
/// whose last part looks like a UID (digits and dots) and whose parent is a DICOM folder.
pub fn split_series_path(path: &Path) -> Option<(PathBuf, String)> {
    if path.exists() {
        return None;
    }
    let uid = path.file_name()?.to_str()?;
    let looks_like_uid = !uid.is_empty() && uid.chars().all(|c| c.is_ascii_digit() || c == '.');
    let dir = path.parent()?;
    (looks_like_uid && is_dicom_folder(dir)).then(|| (dir.to_owned(), uid.to_owned()))
}

/// Reads the one CT series in `dir` (several series: an error listing them and how to name one).
pub fn read_dicom_series(dir: &Path) -> Result<StoredVolume, VolumeError> {
    read_series(dir, None)
}

/// Reads the series `uid` of the folder `dir`.
pub fn read_dicom_series_uid(dir: &Path, uid: &str) -> Result<StoredVolume, VolumeError> {
    read_series(dir, Some(uid))
}

fn read_series(dir: &Path, uid: Option<&str>) -> Result<StoredVolume, VolumeError> {
    let files = dicom_files(dir)?;
    if files.is_empty() {
        return Err(bad(dir, "no DICOM files (none has the DICM marker)"));
    }
    let mut headers: Vec<SliceHeader> =
        files.iter().map(|f| header(f)).collect::<Result<_, _>>()?;
    let mut series: BTreeMap<&str, Vec<&SliceHeader>> = BTreeMap::new();
    for h in &headers {
        series.entry(h.series.as_str()).or_default().push(h);
    }
    let list = || {
        series
            .iter()
            .map(|(uid, s)| format!("{uid} ({} slices)", s.len()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match uid {
        Some(uid) if !series.contains_key(uid) => {
            return Err(bad(
                dir,
                format!("no series {uid} in this folder; it holds {}", list()),
            ));
        }
        None if series.len() > 1 => {
            return Err(bad(
                dir,
                format!(
                    "{} series in one folder: {}; open one as {}",
                    series.len(),
                    list(),
                    series_path(dir, "<SeriesInstanceUID>").display()
                ),
            ));
        }
        _ => {}
    }
    if let Some(uid) = uid {
        headers.retain(|h| h.series == uid);
    }
    let mut slices: Vec<&SliceHeader> = headers.iter().collect();
    let first = slices[0];
    for s in &slices {
        let same = s.rows == first.rows
            && s.columns == first.columns
            && (s.row_dir - first.row_dir).length() < 1e-4
            && (s.col_dir - first.col_dir).length() < 1e-4
            && (s.spacing[0] - first.spacing[0]).abs() < 1e-4
            && (s.spacing[1] - first.spacing[1]).abs() < 1e-4;
        if !same {
            return Err(bad(
                &s.path,
                format!(
                    "its size, orientation or pixel spacing differs from {}'s",
                    first.path.display()
                ),
            ));
        }
    }
    let normal = first.row_dir.cross(first.col_dir).normalize();
    slices.sort_by(|a, b| a.position.dot(normal).total_cmp(&b.position.dot(normal)));
    let nz = slices.len();
    let slice_step = if nz > 1 {
        let gaps: Vec<f64> = slices
            .windows(2)
            .map(|w| (w[1].position - w[0].position).dot(normal))
            .collect();
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        if median <= 1e-6 {
            return Err(bad(dir, "several slices share one position (duplicates?)"));
        }
        for (i, g) in gaps.iter().enumerate() {
            if (g - median).abs() > 0.01 * median + 0.01 {
                return Err(bad(
                    dir,
                    format!(
                        "uneven slices: {:.3} mm between {} and {} where the series steps {median:.3} mm \
                         (a missing slice?)",
                        g,
                        slices[i].path.display(),
                        slices[i + 1].path.display()
                    ),
                ));
            }
        }
        median
    } else {
        1.0
    };
    let (nx, ny) = (first.columns, first.rows);
    let voxels = (nx * ny) as u64 * nz as u64;
    if voxels == 0 || voxels > MAX_VOXELS {
        return Err(VolumeError::TooLarge {
            path: dir.to_owned(),
            voxels,
            bytes: voxels * 2,
            limit: MAX_VOXELS,
        });
    }
    // Voxel (i, j, k): column i, row j, slice k. LPS world, then RAS.
    let lps = DMat3::from_cols(
        first.row_dir * first.spacing[1],
        first.col_dir * first.spacing[0],
        normal * slice_step,
    );
    let to_ras = DMat3::from_diagonal(DVec3::new(-1.0, -1.0, 1.0));
    let affine = Affine::new(to_ras * lps, to_ras * slices[0].position)
        .map_err(|e| bad(dir, format!("singular geometry: {e}")))?;

    // Reserve no more than the files can hold: Rows × Columns is only a claim until each
    // slice's pixels are read (and checked) below.
    let held: u64 = slices
        .iter()
        .filter_map(|s| std::fs::metadata(&s.path).ok())
        .map(|m| m.len())
        .sum();
    let bytes_per_voxel = u64::from(first.bits_allocated.max(8) / 8);
    let mut data = Vec::with_capacity(voxels.min(held / bytes_per_voxel) as usize);
    let (mut slope, mut intercept) = (first.slope, first.intercept);
    for s in &slices {
        let raw = pixels(s)?;
        data.extend(
            raw.iter()
                .map(|&v| (v as f64 * s.slope + s.intercept) as f32),
        );
        slope = slope.min(s.slope);
        intercept = intercept.min(s.intercept);
    }
    if let Some(v) = data.iter().find(|v| !v.is_finite()) {
        return Err(bad(dir, format!("non-finite value {v} after rescaling")));
    }
    let volume = Volume::new(data, [nx, ny, nz], affine)
        .map_err(|e| bad(dir, format!("cannot form a volume: {e}")))?;
    let datatype = match (first.bits_allocated, first.signed) {
        (8, _) => "uint8",
        (16, true) => "int16",
        _ => "uint16",
    };
    Ok(StoredVolume {
        info: StorageInfo {
            path: dir.to_owned(),
            datatype,
            scl_slope: slope as f32,
            scl_inter: intercept as f32,
            transform: TransformSource::DicomPatient,
            gzipped: false,
            description: format!("DICOM series {} ({} slices)", first.series, nz),
            channels: 1,
            warnings: Vec::new(),
        },
        volume,
    })
}
