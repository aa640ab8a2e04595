//! DICOM CT series (dicom-rs): a folder of slice files becomes one volume in HU with its world
//! affine. Slices are grouped by SeriesInstanceUID, sorted along the slice normal by
//! ImagePositionPatient and checked for missing or uneven slices; RescaleSlope/Intercept give
//! HU; ImageOrientationPatient and PixelSpacing give the affine, in DICOM's LPS turned into RAS.
//!
//! Hostile headers are refused with an error naming the file and the attribute (a zero or
//! unreadable RescaleSlope, multi-frame or colour images, inconsistent bit depths, absurd
//! spacings, fewer than three slices, positions off one grid); what is legal but odd (gantry
//! tilt, MONOCHROME1, stray bits above BitsStored, extreme spacing) is read with a warning in
//! [`StorageInfo::warnings`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use glam::{DMat3, DVec3};

use crate::error::VolumeError;
use crate::geometry::Affine;
use crate::io::nifti::TransformSource;
use crate::io::{StorageInfo, StoredVolume};
use crate::validate::{self, InputWarning, WarningKind};
use crate::volume::Volume;

/// Largest series read (voxels): 2³¹, as for NIfTI.
const MAX_VOXELS: u64 = 1 << 31;

/// Fewest slices read as a volume: two give one step and no check that the slices are even.
const MIN_SLICES: usize = 3;

/// Whether `path` is a folder holding at least one DICOM file (the `DICM` magic at byte 128).
pub fn is_dicom_folder(path: &Path) -> bool {
    path.is_dir() && dicom_files(path).is_ok_and(|f| !f.is_empty())
}

/// Only regular files are opened: opening a FIFO blocks until someone writes to it, and a
/// device reads without end; neither can be a DICOM file.
fn has_dicom_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut head))
            .is_ok()
        && &head[128..132] == b"DICM"
}

fn dicom_files(dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    // A FIFO or device given as the folder is named as such (reading it as a folder fails).
    validate::input_path(dir)?;
    let entries = std::fs::read_dir(dir).map_err(|source| VolumeError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| has_dicom_magic(p))
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

/// A DICOM attribute as errors name it: keyword and tag.
#[derive(Debug, Clone, Copy)]
struct Attr {
    tag: Tag,
    name: &'static str,
}

const fn attr(tag: Tag, name: &'static str) -> Attr {
    Attr { tag, name }
}

const SAMPLES_PER_PIXEL: Attr = attr(tags::SAMPLES_PER_PIXEL, "SamplesPerPixel (0028,0002)");
const PHOTOMETRIC: Attr = attr(
    tags::PHOTOMETRIC_INTERPRETATION,
    "PhotometricInterpretation (0028,0004)",
);
const NUMBER_OF_FRAMES: Attr = attr(tags::NUMBER_OF_FRAMES, "NumberOfFrames (0028,0008)");
const ROWS: Attr = attr(tags::ROWS, "Rows (0028,0010)");
const COLUMNS: Attr = attr(tags::COLUMNS, "Columns (0028,0011)");
const PIXEL_SPACING: Attr = attr(tags::PIXEL_SPACING, "PixelSpacing (0028,0030)");
const BITS_ALLOCATED: Attr = attr(tags::BITS_ALLOCATED, "BitsAllocated (0028,0100)");
const BITS_STORED: Attr = attr(tags::BITS_STORED, "BitsStored (0028,0101)");
const HIGH_BIT: Attr = attr(tags::HIGH_BIT, "HighBit (0028,0102)");
const PIXEL_REPRESENTATION: Attr = attr(
    tags::PIXEL_REPRESENTATION,
    "PixelRepresentation (0028,0103)",
);
const RESCALE_INTERCEPT: Attr = attr(tags::RESCALE_INTERCEPT, "RescaleIntercept (0028,1052)");
const RESCALE_SLOPE: Attr = attr(tags::RESCALE_SLOPE, "RescaleSlope (0028,1053)");
const GANTRY_TILT: Attr = attr(tags::GANTRY_DETECTOR_TILT, "GantryDetectorTilt (0018,1120)");
const POSITION: Attr = attr(
    tags::IMAGE_POSITION_PATIENT,
    "ImagePositionPatient (0020,0032)",
);
const ORIENTATION: Attr = attr(
    tags::IMAGE_ORIENTATION_PATIENT,
    "ImageOrientationPatient (0020,0037)",
);

/// How stored pixel values sit in their cells (PS3.5 8.1.1).
#[derive(Debug, Clone, Copy)]
struct PixelCell {
    /// BitsAllocated: 8 or 16.
    allocated: u16,
    /// BitsStored: 1 to `allocated`, from bit 0 (HighBit = BitsStored − 1).
    stored: u16,
    signed: bool,
}

impl PixelCell {
    /// The value of one cell, and whether bits outside BitsStored were set. Those bits are not
    /// part of the value (the standard's rule), so they are masked off; a writer that
    /// sign-extends a signed value into them is common and not counted.
    fn value(self, raw: u16) -> (f32, bool) {
        let (stored, raw) = (u32::from(self.stored), u32::from(raw));
        let v = raw & ((1u32 << stored) - 1);
        if self.signed {
            let shift = 32 - stored;
            let value = ((v << shift) as i32) >> shift;
            let extended = value as u32 & ((1u32 << self.allocated) - 1);
            (value as f32, raw != v && raw != extended)
        } else {
            (v as f32, raw != v)
        }
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
    cell: PixelCell,
    /// PhotometricInterpretation MONOCHROME1 (the lowest value displayed white).
    monochrome1: bool,
    /// GantryDetectorTilt in degrees, when stated.
    gantry_tilt: Option<f64>,
    /// Uncompressed pixel data (a native transfer syntax), which the file's size bounds.
    native: bool,
    slope: f64,
    intercept: f64,
}

/// The element of `tag` when the file has it with a value: an empty value counts as absent.
fn present(obj: &DefaultDicomObject, tag: Tag) -> Option<&dicom_object::mem::InMemElement> {
    let e = obj.element(tag).ok()?;
    let empty = match e.value() {
        Value::Primitive(PrimitiveValue::Empty) => true,
        Value::Primitive(_) => e
            .to_str()
            .is_ok_and(|s| s.trim_matches(['\0', ' ']).is_empty()),
        _ => false,
    };
    (!empty).then_some(e)
}

fn header(path: &Path) -> Result<SliceHeader, VolumeError> {
    check_element_lengths(path)?;
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| bad(path, format!("not a readable DICOM file: {e}")))?;
    let syntax = obj.meta().transfer_syntax().trim_end_matches('\0');
    let native = matches!(
        syntax,
        "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1" | "1.2.840.10008.1.2.2"
    );
    let invalid = |a: Attr, detail: String| VolumeError::BadHeader {
        path: path.to_owned(),
        field: a.name,
        detail,
    };
    let missing = |a: Attr| bad(path, format!("no {}", a.name));
    let shown = |e: &dicom_object::mem::InMemElement| {
        e.to_str()
            .map_or_else(|_| "?".to_owned(), |s| format!("{:?}", s.trim()))
    };
    let uint = |a: Attr| -> Result<Option<u16>, VolumeError> {
        present(&obj, a.tag)
            .map(|e| {
                e.to_int::<u16>()
                    .map_err(|_| invalid(a, format!("{} is not a whole number 0…65535", shown(e))))
            })
            .transpose()
    };
    let real = |a: Attr| -> Result<Option<f64>, VolumeError> {
        present(&obj, a.tag)
            .map(|e| {
                e.to_float64()
                    .map_err(|_| invalid(a, format!("{} is not a number", shown(e))))
            })
            .transpose()
    };
    let reals = |a: Attr, count: usize| -> Result<Vec<f64>, VolumeError> {
        let e = present(&obj, a.tag).ok_or_else(|| missing(a))?;
        let v = e
            .to_multi_float64()
            .map_err(|_| invalid(a, format!("{} is not a list of numbers", shown(e))))?;
        if v.len() != count {
            return Err(invalid(a, format!("holds {} values, not {count}", v.len())));
        }
        Ok(v)
    };
    let text = |tag| {
        present(&obj, tag)
            .and_then(|e| {
                e.to_str()
                    .ok()
                    .map(|s| s.trim_matches(['\0', ' ']).to_owned())
            })
            .unwrap_or_default()
    };

    // Frames first: an Enhanced CT keeps its geometry per frame, so the checks below would
    // only report what is missing at the top level.
    if let Some(e) = present(&obj, NUMBER_OF_FRAMES.tag) {
        let frames = e.to_int::<i64>().map_err(|_| {
            invalid(
                NUMBER_OF_FRAMES,
                format!("{} is not a whole number", shown(e)),
            )
        })?;
        if frames > 1 {
            return Err(bad(
                path,
                format!(
                    "multi-frame DICOM ({frames} frames, {}) is not supported; convert with \
                     dcm2niix",
                    NUMBER_OF_FRAMES.name
                ),
            ));
        }
        if frames < 1 {
            return Err(invalid(
                NUMBER_OF_FRAMES,
                format!("is {frames}; an image has a frame"),
            ));
        }
    }
    // A CT is monochrome: colour or palette pixels have no HU (absent attributes: as a CT).
    let samples = uint(SAMPLES_PER_PIXEL)?.unwrap_or(1);
    if samples != 1 {
        return Err(bad(
            path,
            format!(
                "{} is {samples}: colour pixel data; a CT has 1 sample per pixel",
                SAMPLES_PER_PIXEL.name
            ),
        ));
    }
    let monochrome1 = match text(PHOTOMETRIC.tag).to_ascii_uppercase().as_str() {
        "" | "MONOCHROME2" => false,
        "MONOCHROME1" => true,
        other => {
            return Err(bad(
                path,
                format!(
                    "{} is {other}: colour or palette pixel data; a CT is MONOCHROME2 \
                     (or MONOCHROME1)",
                    PHOTOMETRIC.name
                ),
            ));
        }
    };
    let allocated = uint(BITS_ALLOCATED)?.ok_or_else(|| missing(BITS_ALLOCATED))?;
    match allocated {
        8 | 16 => {}
        1 | 24 | 32 | 64 => {
            return Err(bad(
                path,
                format!(
                    "{} is {allocated}: ape reads CT pixel data of 8 or 16 bits; convert with \
                     dcm2niix",
                    BITS_ALLOCATED.name
                ),
            ));
        }
        _ => {
            return Err(invalid(
                BITS_ALLOCATED,
                format!("is {allocated}; pixel cells are 1 bit or whole bytes (8, 16, 32)"),
            ));
        }
    }
    let stored = uint(BITS_STORED)?.unwrap_or(allocated);
    if stored == 0 || stored > allocated {
        return Err(invalid(
            BITS_STORED,
            format!(
                "is {stored}, with {} {allocated}: a value is stored in 1 to {allocated} bits",
                BITS_ALLOCATED.name
            ),
        ));
    }
    let high_bit = uint(HIGH_BIT)?.unwrap_or(stored - 1);
    if high_bit != stored - 1 {
        return Err(invalid(
            HIGH_BIT,
            format!(
                "is {high_bit}, but {} {stored} puts it at {}: values start at bit 0 (PS3.5 \
                 8.1.1)",
                BITS_STORED.name,
                stored - 1
            ),
        ));
    }
    let signed = match uint(PIXEL_REPRESENTATION)?.ok_or_else(|| missing(PIXEL_REPRESENTATION))? {
        0 => false,
        1 => true,
        other => {
            return Err(invalid(
                PIXEL_REPRESENTATION,
                format!("is {other}; 0 means unsigned values, 1 two's complement"),
            ));
        }
    };
    // A missing slope means 1, a missing intercept 0 (PS3.3 C.11.1.1.2). A slope of 0 would
    // turn every voxel into the intercept; dcm2niix refuses it too.
    let slope = real(RESCALE_SLOPE)?.unwrap_or(1.0);
    if !slope.is_finite() || slope == 0.0 {
        return Err(invalid(
            RESCALE_SLOPE,
            format!(
                "is {slope}: HU = stored value × slope + intercept needs a finite slope other \
                 than 0"
            ),
        ));
    }
    let intercept = real(RESCALE_INTERCEPT)?.unwrap_or(0.0);
    if !intercept.is_finite() {
        return Err(invalid(
            RESCALE_INTERCEPT,
            format!("is {intercept}, not a finite number"),
        ));
    }
    // Informative only (the slice positions give the geometry): an unreadable tilt is ignored.
    let gantry_tilt = real(GANTRY_TILT)
        .ok()
        .flatten()
        .filter(|t| t.is_finite() && *t != 0.0);

    let position = reals(POSITION, 3)?;
    let orientation = reals(ORIENTATION, 6)?;
    let spacing = reals(PIXEL_SPACING, 2)?;
    if position.iter().any(|v| !v.is_finite()) {
        return Err(invalid(
            POSITION,
            format!("{position:?} is not a finite point"),
        ));
    }
    let row_dir = DVec3::new(orientation[0], orientation[1], orientation[2]);
    let col_dir = DVec3::new(orientation[3], orientation[4], orientation[5]);
    let orthonormal = (row_dir.length() - 1.0).abs() < 1e-3
        && (col_dir.length() - 1.0).abs() < 1e-3
        && row_dir.dot(col_dir).abs() < 1e-3;
    if !orthonormal {
        return Err(invalid(
            ORIENTATION,
            format!("{orientation:?} are not two orthogonal unit vectors"),
        ));
    }
    // Axis n of the error is value n of the attribute (the third repeats the second).
    validate::file_spacing(
        path,
        PIXEL_SPACING.name,
        [spacing[0], spacing[1], spacing[1]],
    )?;
    let size = |a: Attr| -> Result<usize, VolumeError> {
        match uint(a)?.ok_or_else(|| missing(a))? {
            0 => Err(invalid(a, "is 0: an image without pixels".to_owned())),
            n => Ok(usize::from(n)),
        }
    };
    Ok(SliceHeader {
        path: path.to_owned(),
        series: text(tags::SERIES_INSTANCE_UID),
        description: text(tags::SERIES_DESCRIPTION),
        position: DVec3::new(position[0], position[1], position[2]),
        row_dir: row_dir.normalize(),
        col_dir: col_dir.normalize(),
        spacing: [spacing[0], spacing[1]],
        rows: size(ROWS)?,
        columns: size(COLUMNS)?,
        cell: PixelCell {
            allocated,
            stored,
            signed,
        },
        monochrome1,
        gantry_tilt,
        native,
        slope,
        intercept,
    })
}

/// The stored values of one slice's pixel data, row by row, and how many cells had bits set
/// outside BitsStored (masked off).
fn pixels(h: &SliceHeader) -> Result<(Vec<f32>, usize), VolumeError> {
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
        .map_err(|_| bad(path, "no pixel data (PixelData (7FE0,0010))"))?;
    let n = h.rows * h.columns;
    // Raw cells, each widened to u16.
    let cells: Vec<u16> = match element.value() {
        Value::PixelSequence(_) => decode_compressed(&obj, h, &syntax)?,
        Value::Primitive(p) => match (p, h.cell.allocated) {
            (PrimitiveValue::U16(v), 16) => v.to_vec(),
            (PrimitiveValue::I16(v), 16) => v.iter().map(|&x| x as u16).collect(),
            (PrimitiveValue::U8(b), 16) => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
            (PrimitiveValue::U8(b), 8) => b.iter().map(|&x| u16::from(x)).collect(),
            // 8-bit cells in a value read as words (OW): two cells each, low byte first.
            (PrimitiveValue::U16(v), 8) => v
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .map(u16::from)
                .collect(),
            (_, bits) => {
                return Err(bad(
                    path,
                    format!("unsupported pixel data: {bits} bits allocated ({syntax})"),
                ));
            }
        },
        Value::Sequence(_) => return Err(bad(path, "pixel data is a sequence")),
    };
    if cells.len() < n {
        return Err(VolumeError::Truncated {
            path: path.clone(),
            what: "pixel data",
            needed: n as u64,
            found: cells.len() as u64,
        });
    }
    let mut stray = 0usize;
    let values = cells[..n]
        .iter()
        .map(|&c| {
            let (v, outside) = h.cell.value(c);
            stray += usize::from(outside);
            v
        })
        .collect();
    Ok((values, stray))
}

/// Compressed pixel data through dicom-pixeldata's pure-Rust decoders (JPEG baseline, extended
/// and lossless, RLE Lossless, deflate); other syntaxes (JPEG-LS, JPEG 2000) get an error naming
/// the syntax. Returns the raw cells (masking and rescaling are the caller's).
fn decode_compressed(
    obj: &dicom_object::DefaultDicomObject,
    h: &SliceHeader,
    syntax: &str,
) -> Result<Vec<u16>, VolumeError> {
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
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
        8 => bytes.iter().map(|&b| u16::from(b)).collect(),
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
    let nz = slices.len();
    // Fewer slices give no slice step to check (a scout, a key image), not a CT volume.
    if nz < MIN_SLICES {
        let what = if nz == 1 {
            "one slice is not a volume".to_owned()
        } else {
            format!("{nz} slices are too few")
        };
        return Err(bad(
            dir,
            format!("{what}; ape needs a series of at least {MIN_SLICES} slices, evenly spaced"),
        ));
    }
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
    let gaps: Vec<f64> = slices
        .windows(2)
        .map(|w| (w[1].position - w[0].position).dot(normal))
        .collect();
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    let step = sorted[sorted.len() / 2];
    if step <= 1e-6 {
        return Err(bad(dir, "several slices share one position (duplicates?)"));
    }
    for (i, g) in gaps.iter().enumerate() {
        if (g - step).abs() > 0.01 * step + 0.01 {
            return Err(bad(
                dir,
                format!(
                    "uneven slices: {:.3} mm between {} and {} where the series steps {step:.3} mm \
                     (a missing slice?)",
                    g,
                    slices[i].path.display(),
                    slices[i + 1].path.display()
                ),
            ));
        }
    }
    validate::file_spacing(
        dir,
        &format!("the slice step along the normal, from {}", POSITION.name),
        [step; 3],
    )?;

    // Across the normal the positions may drift by the same amount each slice: a tilted gantry.
    // The slice axis then follows the positions (a sheared grid), so that every voxel lies
    // where its slice's position puts it. Drift below a tenth of a pixel is rounding.
    let origin = slices[0].position;
    let across = |v: DVec3| v - normal * v.dot(normal);
    let tolerance = 0.1 * first.spacing[0].min(first.spacing[1]);
    let drift = across(slices[nz - 1].position - origin);
    let shear = if drift.length() > tolerance {
        drift / (nz - 1) as f64
    } else {
        DVec3::ZERO
    };
    for (k, s) in slices.iter().enumerate() {
        let off = across(s.position - origin) - shear * k as f64;
        if off.length() > tolerance {
            return Err(bad(
                &s.path,
                format!(
                    "its {} lies {:.3} mm off the line through the other slices' positions \
                     (the series does not form one grid)",
                    POSITION.name,
                    off.length()
                ),
            ));
        }
    }
    let mut warnings = Vec::new();
    let source = dir.display().to_string();
    let tilt = shear.length().atan2(step).to_degrees();
    let stated = first.gantry_tilt.map_or(String::new(), |t| {
        format!(" ({} is {t}°)", GANTRY_TILT.name)
    });
    if shear != DVec3::ZERO {
        warnings.push(InputWarning::new(
            WarningKind::GantryTilt,
            source.clone(),
            format!(
                "gantry tilt of {tilt:.2}°{stated}: the slices shift {:.3} mm across the normal \
                 per slice; the grid follows {} (sheared), so voxels lie where the scanner put \
                 them",
                shear.length(),
                POSITION.name
            ),
        ));
    } else if let Some(t) = first.gantry_tilt {
        warnings.push(InputWarning::new(
            WarningKind::GantryTilt,
            source.clone(),
            format!(
                "{} is {t}°, but the slice positions lie along the slice normal: the grid is \
                 not sheared (the scanner resampled the tilt, or the image plane holds it)",
                GANTRY_TILT.name
            ),
        ));
    }
    warnings.extend(validate::file_spacing(
        dir,
        "PixelSpacing and the slice step",
        [first.spacing[1], first.spacing[0], step],
    )?);
    let monochrome1: Vec<&&SliceHeader> = slices.iter().filter(|s| s.monochrome1).collect();
    if let Some(m) = monochrome1.first() {
        warnings.push(InputWarning::new(
            WarningKind::Other,
            m.path.display().to_string(),
            format!(
                "{} is MONOCHROME1 ({} of {nz} slices): it inverts the display only; values are \
                 read as stored and rescaled to HU, not inverted",
                PHOTOMETRIC.name,
                monochrome1.len()
            ),
        ));
    }

    let (nx, ny) = (first.columns, first.rows);
    let voxels = (nx * ny) as u64 * nz as u64;
    if voxels > MAX_VOXELS {
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
        normal * step + shear,
    );
    let to_ras = DMat3::from_diagonal(DVec3::new(-1.0, -1.0, 1.0));
    let affine = Affine::new(to_ras * lps, to_ras * origin)
        .map_err(|e| bad(dir, format!("singular geometry: {e}")))?;

    // An uncompressed file holds its pixels, so Rows × Columns, only a claim until each slice
    // is read, is reserved no further than the files can hold; compressed files bound nothing
    // (RLE shrinks a blank slice 64-fold), and there the memory check must do.
    let sizes: Vec<u64> = slices
        .iter()
        .map(|s| std::fs::metadata(&s.path).map_or(0, |m| m.len()))
        .collect();
    let bytes_per_voxel = u64::from(first.cell.allocated / 8);
    let reserve = if slices.iter().all(|s| s.native) {
        voxels.min(sizes.iter().sum::<u64>() / bytes_per_voxel)
    } else {
        voxels
    };
    // The volume, and while a slice is read its file and its values.
    let slice_bytes = sizes.iter().max().copied().unwrap_or(0) + (nx * ny) as u64 * 6;
    validate::memory_for(dir, reserve * 4 + slice_bytes)?;
    let mut data: Vec<f32> = Vec::new();
    data.try_reserve_exact(reserve as usize)
        .map_err(|_| VolumeError::OutOfMemory {
            path: dir.to_owned(),
            bytes: reserve * 4,
        })?;
    let (mut slope, mut intercept) = (first.slope, first.intercept);
    let mut stray = 0usize;
    for s in &slices {
        let (raw, outside) = pixels(s)?;
        stray += outside;
        data.extend(
            raw.iter()
                .map(|&v| (v as f64 * s.slope + s.intercept) as f32),
        );
        slope = slope.min(s.slope);
        intercept = intercept.min(s.intercept);
    }
    if stray > 0 {
        let c = first.cell;
        warnings.push(InputWarning::new(
            WarningKind::Other,
            source,
            format!(
                "{stray} pixels have bits set above {} {} (of {} {}): those bits are not part \
                 of the value and were masked off, as the standard says; if the scan looks \
                 wrong, its BitsStored is wrong",
                BITS_STORED.name, c.stored, BITS_ALLOCATED.name, c.allocated
            ),
        ));
    }
    if let Some(v) = data.iter().find(|v| !v.is_finite()) {
        return Err(bad(dir, format!("non-finite value {v} after rescaling")));
    }
    let volume = Volume::new(data, [nx, ny, nz], affine)
        .map_err(|e| bad(dir, format!("cannot form a volume: {e}")))?;
    let datatype = match (first.cell.allocated, first.cell.signed) {
        (8, false) => "uint8",
        (8, true) => "int8",
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
            warnings,
        },
        volume,
    })
}
