//! DICOM series on the real IRCAD scan: shape, spacing and HU as its README states, the world
//! affine equal to that of its NIfTI liver mask, liver HU inside the mask; and broken series
//! (missing slice, mixed series, no pixel data, truncated file, no DICOM at all) each give a
//! clear error naming the problem, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ape::labels::LabelMap;
use ape::scan::Scan;
use ape::summary::{VolumeKind, summarize};
use ape::validate::WarningKind;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use glam::DVec3;

fn ircad(test: &str) -> Option<PathBuf> {
    common::shared_data(test).map(|d| d.join("ircad_17"))
}

#[test]
fn ircad_series_reads_with_the_affine_of_its_liver_mask_and_liver_hu() {
    let Some(dir) = ircad("ircad_series_reads_with_the_affine_of_its_liver_mask_and_liver_hu")
    else {
        return;
    };
    let summary = summarize(&dir.join("dicom"), VolumeKind::Auto).unwrap();
    assert_eq!(summary.shape, [512, 512, 119]);
    let s = summary.spacing_mm;
    assert!(
        (s[0] - 0.743).abs() < 1e-3 && (s[1] - 0.743).abs() < 1e-3,
        "{s:?}"
    );
    assert!((s[2] - 1.6).abs() < 1e-3, "{s:?}");
    assert_eq!(summary.kind, "scan");

    let scan = Scan::read(dir.join("dicom")).unwrap();
    let (lo, hi) = scan.hu_range();
    assert_eq!((lo, hi), (-1024.0, 1023.0));
    let mask = LabelMap::read(dir.join("liver_label.nii.gz")).unwrap();
    assert_eq!(mask.volume.shape(), scan.volume.shape());
    let [nx, ny, nz] = scan.volume.shape();
    for v in [
        [0, 0, 0],
        [nx - 1, 0, 0],
        [0, ny - 1, 0],
        [0, 0, nz - 1],
        [nx - 1, ny - 1, nz - 1],
    ] {
        let a = scan.volume.voxel_to_world(v);
        let b = mask.volume.voxel_to_world(v);
        assert!(
            (a - b).length() < 0.01,
            "voxel {v:?}: DICOM {a} vs mask {b}"
        );
    }
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (hu, label) in scan.volume.data().iter().zip(mask.volume.data()) {
        if *label > 0 {
            sum += *hu as f64;
            n += 1;
        }
    }
    let mean = sum / n as f64;
    assert!(
        (40.0..200.0).contains(&mean),
        "mean HU in the liver {mean} over {n} voxels"
    );
    // The liver lies on the patient's right: +x in RAS.
    let centre = mask.organs()[0].centre;
    assert!(centre.x > scan.volume.world_bounds().centre().x, "{centre}");
}

/// A copy of the first `n` IRCAD slices (as files named like the originals) in a temp folder.
fn copy_slices(src: &Path, n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..n {
        let name = format!("image_{i}");
        std::fs::copy(src.join(&name), dir.path().join(&name)).unwrap();
    }
    dir
}

fn error_of(dir: &Path) -> String {
    Scan::read(dir).map(|_| ()).unwrap_err().to_string()
}

#[test]
fn broken_series_give_clear_errors() {
    let Some(ircad) = ircad("broken_series_give_clear_errors") else {
        return;
    };
    let src = ircad.join("dicom");
    // Slice positions: which file is which slice is not in the names; find two adjacent ones by
    // reading a small series and dropping its middle file by position.
    let dir = copy_slices(&src, 12);
    let whole = Scan::read(dir.path()).unwrap();
    assert_eq!(whole.volume.shape()[2], 12);

    // A missing slice: remove the file whose position is in the middle of the stack.
    let middle = whole.volume.voxel_to_world([0, 0, 6]);
    let mut removed = false;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let obj = dicom_object::open_file(&path).unwrap();
        let p = obj
            .element(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .to_multi_float64()
            .unwrap();
        let ras = DVec3::new(-p[0], -p[1], p[2]);
        if (ras - middle).length() < 0.01 {
            std::fs::remove_file(&path).unwrap();
            removed = true;
        }
    }
    assert!(removed, "no slice at {middle}");
    let e = error_of(dir.path());
    assert!(
        e.contains("uneven slices") && e.contains("missing slice"),
        "{e}"
    );

    // Two series in one folder.
    let dir = copy_slices(&src, 4);
    let path = dir.path().join("image_0");
    let mut obj = dicom_object::open_file(&path).unwrap();
    obj.put(DataElement::new(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from("1.2.3.4"),
    ));
    obj.write_to_file(&path).unwrap();
    let e = error_of(dir.path());
    assert!(
        e.contains("2 series in one folder") && e.contains("1.2.3.4") && e.contains("open one as"),
        "{e}"
    );
    // Each series can be listed and opened by its path `DIR/<SeriesInstanceUID>`.
    let series = ape::io::dicom::list_series(dir.path()).unwrap();
    assert_eq!(series.len(), 2, "{series:?}");
    let other = series.iter().find(|s| s.uid != "1.2.3.4").unwrap();
    assert_eq!(other.slices, 3);
    let path = ape::io::dicom::series_path(dir.path(), &other.uid);
    assert_eq!(Scan::read(&path).unwrap().volume.shape(), [512, 512, 3]);
    let e = error_of(&ape::io::dicom::series_path(dir.path(), "9.9"));
    assert!(
        e.contains("no series 9.9") && e.contains("1.2.3.4 (1 slices)"),
        "{e}"
    );

    // No pixel data.
    let dir = copy_slices(&src, 3);
    let path = dir.path().join("image_1");
    let mut obj = dicom_object::open_file(&path).unwrap();
    obj.remove_element(tags::PIXEL_DATA);
    obj.write_to_file(&path).unwrap();
    let e = error_of(dir.path());
    assert!(e.contains("no pixel data") && e.contains("image_1"), "{e}");

    // A file cut short inside its pixel data.
    let dir = copy_slices(&src, 3);
    let path = dir.path().join("image_2");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100_000]).unwrap();
    let e = error_of(dir.path());
    assert!(e.contains("image_2"), "{e}");

    // A folder without DICOM files.
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("notes.txt"), "not DICOM").unwrap();
    let e = error_of(empty.path());
    assert!(e.contains("no DICOM files"), "{e}");
}

/// A DICOM file: preamble, `DICM`, a meta group naming explicit VR little endian, then `data`.
fn dicom_bytes(data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; 128];
    bytes.extend_from_slice(b"DICM");
    let syntax = b"1.2.840.10008.1.2.1\0";
    let mut meta = Vec::new();
    meta.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
    meta.extend_from_slice(&(syntax.len() as u16).to_le_bytes());
    meta.extend_from_slice(syntax);
    bytes.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
    bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&meta);
    bytes.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N', 8, 0]);
    bytes.extend_from_slice(b"DOE^JOHN");
    bytes.extend_from_slice(data);
    bytes
}

/// Files of a few hundred bytes that made dicom-rs allocate 0.8–2 GB (found by fuzzing): an
/// element claiming more than the file holds, an unknown VR, a binary value of a partial number,
/// an undefined length with no items, a sequence never closed. Each is refused before parsing, naming the file and the element.
#[test]
fn corrupt_element_lengths_are_refused_before_parsing() {
    let long = |tag: [u8; 4], vr: &[u8; 2], length: u32, tail: &[u8]| {
        let mut e = tag.to_vec();
        e.extend_from_slice(vr);
        e.extend_from_slice(&[0, 0]);
        e.extend_from_slice(&length.to_le_bytes());
        e.extend_from_slice(tail);
        e
    };
    let cases = [
        (
            long([0x09, 0x00, 0x10, 0x10], b"OB", 0x7FFF_FFF0, &[1; 10]),
            "(0009,1010) claims 2147483632 bytes",
        ),
        (
            vec![
                0x08, 0x00, 0x30, 0x00, b'@', b'I', 6, 0, b'1', b'2', b'3', b'4', b'5', b'6',
            ],
            "(0008,0030) has no valid value representation",
        ),
        (
            vec![0x10, 0x00, 0x20, 0x00, b'S', b'L', 5, 0, 1, 2, 3, 4, 5],
            "(0010,0020) (SL) holds 5 bytes, not a multiple of 4",
        ),
        (
            long([0x09, 0x00, 0x10, 0x10], b"UN", u32::MAX, &[0; 16]),
            "(0009,1010) has an undefined length but holds no items",
        ),
        (
            long(
                [0x08, 0x00, 0x15, 0x11],
                b"SQ",
                u32::MAX,
                &[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0],
            ),
            "ends inside a sequence of undefined length",
        ),
    ];
    for (data, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("slice_1"), dicom_bytes(&data)).unwrap();
        let e = error_of(dir.path());
        assert!(e.contains("slice_1") && e.contains(expected), "{e}");
    }
}

/// DICOM RLE Lossless (PS3.5 Annex G) of 16-bit pixels: two byte planes (high bytes, then low
/// bytes), each PackBits-encoded as literal runs of up to 128 bytes.
fn rle_fragment(pixels: &[u16]) -> Vec<u8> {
    let plane = |bytes: Vec<u8>| {
        let mut out = Vec::new();
        for run in bytes.chunks(128) {
            out.push((run.len() - 1) as u8);
            out.extend_from_slice(run);
        }
        if out.len() % 2 == 1 {
            out.push(0);
        }
        out
    };
    let high = plane(pixels.iter().map(|p| (p >> 8) as u8).collect());
    let low = plane(pixels.iter().map(|p| (p & 0xFF) as u8).collect());
    let mut header = [0u32; 16];
    header[0] = 2;
    header[1] = 64;
    header[2] = 64 + high.len() as u32;
    let mut fragment: Vec<u8> = header.iter().flat_map(|v| v.to_le_bytes()).collect();
    fragment.extend(high);
    fragment.extend(low);
    fragment
}

/// A series whose slices are RLE Lossless compressed reads to the very same volume as the
/// uncompressed original; a syntax without a decoder here (JPEG-LS) is named in the error.
#[test]
fn compressed_series_decode_to_the_uncompressed_volume() {
    let Some(ircad) = ircad("compressed_series_decode_to_the_uncompressed_volume") else {
        return;
    };
    let plain = copy_slices(&ircad.join("dicom"), 3);
    let rle = tempfile::tempdir().unwrap();
    for i in 0..3 {
        let name = format!("image_{i}");
        let mut obj = dicom_object::open_file(plain.path().join(&name)).unwrap();
        let raw = obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap()
            .to_vec();
        let pixels: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            dicom_core::value::Value::PixelSequence(dicom_core::value::PixelFragmentSequence::new(
                Vec::<u32>::new(),
                vec![rle_fragment(&pixels)],
            )),
        ));
        obj.update_meta(|m| m.transfer_syntax = "1.2.840.10008.1.2.5\0".to_owned());
        obj.write_to_file(rle.path().join(&name)).unwrap();
    }
    let a = Scan::read(plain.path()).unwrap();
    let b = Scan::read(rle.path()).unwrap();
    assert_eq!(a.volume.shape(), b.volume.shape());
    assert_eq!(a.volume.affine(), b.volume.affine());
    assert!(
        a.volume.data() == b.volume.data(),
        "RLE pixels differ from the originals"
    );

    // JPEG-LS: no pure-Rust decoder is built in; the error names the syntax.
    let path = rle.path().join("image_1");
    let mut obj = dicom_object::open_file(&path).unwrap();
    obj.update_meta(|m| m.transfer_syntax = "1.2.840.10008.1.2.4.80\0".to_owned());
    obj.write_to_file(&path).unwrap();
    let e = error_of(rle.path());
    assert!(e.contains("JPEG-LS") && e.contains("image_1"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Hostile headers on synthetic series: each case is refused naming the file and the attribute,
// or read with a warning in `StorageInfo::warnings`.

/// One explicit VR little endian element (values padded to even length as DICOM requires).
fn element(tag: dicom_core::Tag, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut value = value.to_vec();
    if value.len() % 2 == 1 {
        value.push(if matches!(vr, b"UI" | b"OB") { 0 } else { b' ' });
    }
    let mut e = Vec::new();
    e.extend_from_slice(&tag.group().to_le_bytes());
    e.extend_from_slice(&tag.element().to_le_bytes());
    e.extend_from_slice(vr);
    if matches!(vr, b"OB" | b"OW" | b"SQ" | b"UN" | b"UT") {
        e.extend_from_slice(&[0, 0]);
        e.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        e.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    e.extend_from_slice(&value);
    e
}

/// A synthetic CT slice of 4 × 4 signed 16-bit pixels, attribute by attribute; `bytes` writes
/// it with [`dicom_bytes`]. Slice `k` lies at z = 2.5·k mm, pixel i holds 100·k + i, HU is that
/// less 1024.
struct Slice {
    elements: BTreeMap<dicom_core::Tag, (&'static [u8; 2], Vec<u8>)>,
}

const SIDE: usize = 4;

impl Slice {
    fn ct(k: usize) -> Self {
        let mut s = Slice {
            elements: BTreeMap::new(),
        };
        s.text(tags::SERIES_INSTANCE_UID, b"UI", "1.2.826.0.1.3680043.99");
        s.position([10.0, 20.0, 2.5 * k as f64]);
        s.text(tags::IMAGE_ORIENTATION_PATIENT, b"DS", "1\\0\\0\\0\\1\\0");
        s.us(tags::SAMPLES_PER_PIXEL, 1);
        s.text(tags::PHOTOMETRIC_INTERPRETATION, b"CS", "MONOCHROME2");
        s.us(tags::ROWS, SIDE as u16);
        s.us(tags::COLUMNS, SIDE as u16);
        s.text(tags::PIXEL_SPACING, b"DS", "0.8\\0.8");
        s.us(tags::BITS_ALLOCATED, 16);
        s.us(tags::BITS_STORED, 16);
        s.us(tags::HIGH_BIT, 15);
        s.us(tags::PIXEL_REPRESENTATION, 1);
        s.text(tags::RESCALE_INTERCEPT, b"DS", "-1024");
        s.text(tags::RESCALE_SLOPE, b"DS", "1");
        let pixels: Vec<u16> = (0..SIDE * SIDE).map(|i| (100 * k + i) as u16).collect();
        s.pixels(&pixels);
        s
    }
    fn text(&mut self, tag: dicom_core::Tag, vr: &'static [u8; 2], value: &str) -> &mut Self {
        self.elements.insert(tag, (vr, value.as_bytes().to_vec()));
        self
    }
    fn us(&mut self, tag: dicom_core::Tag, value: u16) -> &mut Self {
        self.elements
            .insert(tag, (b"US", value.to_le_bytes().to_vec()));
        self
    }
    fn position(&mut self, p: [f64; 3]) -> &mut Self {
        let text = format!("{}\\{}\\{}", p[0], p[1], p[2]);
        self.text(tags::IMAGE_POSITION_PATIENT, b"DS", &text)
    }
    fn pixels(&mut self, cells: &[u16]) -> &mut Self {
        let bytes = cells.iter().flat_map(|c| c.to_le_bytes()).collect();
        self.elements.insert(tags::PIXEL_DATA, (b"OW", bytes));
        self
    }
    fn remove(&mut self, tag: dicom_core::Tag) -> &mut Self {
        self.elements.remove(&tag);
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let data: Vec<u8> = self
            .elements
            .iter()
            .flat_map(|(tag, (vr, value))| element(*tag, vr, value))
            .collect();
        dicom_bytes(&data)
    }
}

/// A folder of `n` synthetic slices `slice_0 …`, each edited by `edit(k, slice)` first.
fn synthetic_series(n: usize, edit: impl Fn(usize, &mut Slice)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for k in 0..n {
        let mut s = Slice::ct(k);
        edit(k, &mut s);
        std::fs::write(dir.path().join(format!("slice_{k}")), s.bytes()).unwrap();
    }
    dir
}

fn read_stored(dir: &Path) -> ape::io::StoredVolume {
    ape::io::read_volume(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// The error of reading `dir`, which must contain each of `expected`.
fn refused(dir: &Path, expected: &[&str]) -> String {
    let e = match ape::io::read_volume(dir) {
        Ok(_) => panic!(
            "{} was read; expected an error with {expected:?}",
            dir.display()
        ),
        Err(e) => e.to_string(),
    };
    for part in expected {
        assert!(e.contains(part), "{part:?} not in: {e}");
    }
    e
}

fn warnings_of(v: &ape::io::StoredVolume, kind: WarningKind) -> Vec<String> {
    v.info
        .warnings
        .iter()
        .filter(|w| w.kind == kind)
        .map(|w| w.to_string())
        .collect()
}

#[test]
fn a_synthetic_series_reads_in_hu_and_a_missing_rescale_means_identity() {
    let v = read_stored(synthetic_series(3, |_, _| {}).path());
    assert_eq!(v.volume.shape(), [SIDE, SIDE, 3]);
    assert!(v.info.warnings.is_empty(), "{:?}", v.info.warnings);
    assert_eq!(v.volume.data()[SIDE * SIDE + 5], 100.0 + 5.0 - 1024.0);
    // LPS (10, 20, 5) is RAS (−10, −20, 5).
    let w = v.volume.voxel_to_world([0, 0, 2]);
    assert!((w - DVec3::new(-10.0, -20.0, 5.0)).length() < 1e-9, "{w}");

    let v = read_stored(
        synthetic_series(3, |_, s| {
            s.remove(tags::RESCALE_SLOPE)
                .remove(tags::RESCALE_INTERCEPT);
        })
        .path(),
    );
    assert_eq!(v.volume.data()[SIDE * SIDE + 5], 105.0);
}

/// Case 1: a slope of 0 (or −0) makes every voxel the intercept, a non-finite or unreadable one
/// makes no HU at all; each is refused naming the attribute and the file, as is an unreadable
/// intercept.
#[test]
fn unusable_rescale_slopes_and_intercepts_are_refused() {
    for slope in ["0", "-0", "0.0", "NaN", "inf", "-Infinity", "abc"] {
        let dir = synthetic_series(3, |k, s| {
            if k == 1 {
                s.text(tags::RESCALE_SLOPE, b"DS", slope);
            }
        });
        refused(dir.path(), &["slice_1", "RescaleSlope (0028,1053)"]);
    }
    for intercept in ["abc", "NaN"] {
        let dir = synthetic_series(3, |k, s| {
            if k == 2 {
                s.text(tags::RESCALE_INTERCEPT, b"DS", intercept);
            }
        });
        refused(dir.path(), &["slice_2", "RescaleIntercept (0028,1052)"]);
    }
}

/// Case 2: a tilted gantry shifts each slice across the normal by the same amount. The grid
/// follows the positions (sheared) with a GantryTilt warning giving the angle, so that every
/// voxel lies where its slice's ImagePositionPatient puts it.
#[test]
fn a_tilted_gantry_reads_sheared_with_a_warning() {
    let tilt = 15f64.to_radians();
    let lps = |k: usize| DVec3::new(10.0, 20.0 + 2.5 * k as f64 * tilt.tan(), 2.5 * k as f64);
    let dir = synthetic_series(5, |k, s| {
        let p = lps(k);
        s.position([p.x, p.y, p.z])
            .text(tags::GANTRY_DETECTOR_TILT, b"DS", "15");
    });
    let v = read_stored(dir.path());
    let w = warnings_of(&v, WarningKind::GantryTilt);
    assert!(
        w.len() == 1 && w[0].contains("15.00°") && w[0].contains("GantryDetectorTilt (0018,1120)"),
        "{:?}",
        v.info.warnings
    );
    for (i, j, k) in [(0, 0, 0), (3, 0, 2), (0, 3, 4), (3, 3, 4)] {
        let p = lps(k) + DVec3::new(0.8 * i as f64, 0.8 * j as f64, 0.0);
        let expected = DVec3::new(-p.x, -p.y, p.z);
        let got = v.volume.voxel_to_world([i, j, k]);
        assert!(
            (got - expected).length() < 1e-6,
            "voxel {i},{j},{k}: {got} vs {expected}"
        );
    }

    // A tilt stated in the header, with the positions along the normal: an orthogonal grid,
    // and the warning says so.
    let dir = synthetic_series(3, |_, s| {
        s.text(tags::GANTRY_DETECTOR_TILT, b"DS", "-12.5");
    });
    let v = read_stored(dir.path());
    let w = warnings_of(&v, WarningKind::GantryTilt);
    assert!(
        w.len() == 1 && w[0].contains("-12.5°") && w[0].contains("not sheared"),
        "{w:?}"
    );
    let z = v.volume.affine().axis_step(2);
    assert!((z - DVec3::new(0.0, 0.0, 2.5)).length() < 1e-9, "{z}");
}

/// Case 2, refused: positions that step evenly along the normal but jump about across it form
/// no grid.
#[test]
fn slice_positions_off_one_grid_are_refused() {
    let dir = synthetic_series(5, |k, s| {
        s.position([10.0 + 3.0 * (k % 2) as f64, 20.0, 2.5 * k as f64]);
    });
    refused(
        dir.path(),
        &["ImagePositionPatient (0020,0032)", "off the line", "slice_"],
    );
}

/// Case 3: only the first frame of a multi-frame image was read.
#[test]
fn multi_frame_images_are_refused() {
    let dir = synthetic_series(3, |_, s| {
        s.text(tags::NUMBER_OF_FRAMES, b"IS", "2")
            .pixels(&[7u16; 2 * SIDE * SIDE]);
    });
    refused(
        dir.path(),
        &[
            "slice_0",
            "multi-frame DICOM (2 frames",
            "NumberOfFrames (0028,0008)",
            "not supported; convert with dcm2niix",
        ],
    );
    // One frame, stated, is an ordinary slice.
    let dir = synthetic_series(3, |_, s| {
        s.text(tags::NUMBER_OF_FRAMES, b"IS", "1");
    });
    read_stored(dir.path());
}

/// Case 4: colour or palette pixels have no HU; MONOCHROME1 only inverts the display, so its
/// values are read as stored (not inverted) with a warning.
#[test]
fn colour_pixel_data_is_refused_and_monochrome1_warns() {
    let dir = synthetic_series(3, |_, s| {
        s.us(tags::SAMPLES_PER_PIXEL, 3)
            .text(tags::PHOTOMETRIC_INTERPRETATION, b"CS", "RGB")
            .pixels(&[7u16; 3 * SIDE * SIDE]);
    });
    refused(dir.path(), &["slice_0", "SamplesPerPixel (0028,0002) is 3"]);
    for photometric in ["PALETTE COLOR", "YBR_FULL", "RGB"] {
        let dir = synthetic_series(3, |_, s| {
            s.text(tags::PHOTOMETRIC_INTERPRETATION, b"CS", photometric);
        });
        refused(
            dir.path(),
            &["slice_0", "PhotometricInterpretation (0028,0004)"],
        );
    }
    let plain = read_stored(synthetic_series(3, |_, _| {}).path());
    let inverted = read_stored(
        synthetic_series(3, |_, s| {
            s.text(tags::PHOTOMETRIC_INTERPRETATION, b"CS", "MONOCHROME1");
        })
        .path(),
    );
    assert_eq!(plain.volume.data(), inverted.volume.data());
    let w = warnings_of(&inverted, WarningKind::Other);
    assert!(
        w.len() == 1 && w[0].contains("MONOCHROME1") && w[0].contains("not inverted"),
        "{w:?}"
    );
}

/// Case 5: bit depths that contradict each other, or a pixel representation that is neither
/// unsigned nor two's complement.
#[test]
fn inconsistent_bit_depths_are_refused() {
    type Edit = fn(&mut Slice);
    let cases: [(&str, Edit); 7] = [
        ("PixelRepresentation (0028,0103)", |s| {
            s.us(tags::PIXEL_REPRESENTATION, 2);
        }),
        ("BitsStored (0028,0101)", |s| {
            s.us(tags::BITS_STORED, 0);
        }),
        ("BitsStored (0028,0101)", |s| {
            s.us(tags::BITS_STORED, 17).us(tags::HIGH_BIT, 16);
        }),
        ("BitsAllocated (0028,0100)", |s| {
            s.us(tags::BITS_ALLOCATED, 12)
                .us(tags::BITS_STORED, 12)
                .us(tags::HIGH_BIT, 11);
        }),
        ("BitsAllocated (0028,0100) is 32", |s| {
            s.us(tags::BITS_ALLOCATED, 32)
                .pixels(&[0u16; 2 * SIDE * SIDE]);
        }),
        ("BitsAllocated (0028,0100)", |s| {
            s.us(tags::BITS_ALLOCATED, 0);
        }),
        ("HighBit (0028,0102)", |s| {
            s.us(tags::BITS_STORED, 12).us(tags::HIGH_BIT, 3);
        }),
    ];
    for (expected, edit) in cases {
        let dir = synthetic_series(3, |k, s| {
            if k == 1 {
                edit(s);
            }
        });
        refused(dir.path(), &["slice_1", expected]);
    }
}

/// Case 5, values beyond BitsStored: the bits above it are not part of the value (PS3.5
/// 8.1.1), so they are masked off, with a warning counting the pixels; a signed value
/// sign-extended into them, as writers commonly store it, is read as itself without one.
#[test]
fn bits_above_bits_stored_are_masked_with_a_warning() {
    let dir = synthetic_series(3, |k, s| {
        s.us(tags::PIXEL_REPRESENTATION, 0)
            .us(tags::BITS_STORED, 12)
            .us(tags::HIGH_BIT, 11);
        if k == 0 {
            let mut cells = vec![100u16; SIDE * SIDE];
            cells[0] = 65535;
            cells[1] = 0x1005;
            s.pixels(&cells);
        }
    });
    let v = read_stored(dir.path());
    assert_eq!(
        &v.volume.data()[..3],
        &[4095.0 - 1024.0, 5.0 - 1024.0, 100.0 - 1024.0]
    );
    let w = warnings_of(&v, WarningKind::Other);
    assert!(
        w.len() == 1 && w[0].contains("2 pixels") && w[0].contains("BitsStored (0028,0101) 12"),
        "{w:?}"
    );

    let dir = synthetic_series(3, |_, s| {
        s.us(tags::BITS_STORED, 12).us(tags::HIGH_BIT, 11);
        let mut cells = vec![100u16; SIDE * SIDE];
        cells[0] = (-5i16) as u16; // sign-extended: 0xFFFB
        cells[1] = 0x0FFB; // −5 in 12 bits, upper bits clear
        cells[2] = 0x07FF; // 2047, the largest
        s.pixels(&cells);
    });
    let v = read_stored(dir.path());
    assert_eq!(
        &v.volume.data()[..3],
        &[-5.0 - 1024.0, -5.0 - 1024.0, 2047.0 - 1024.0]
    );
    assert!(v.info.warnings.is_empty(), "{:?}", v.info.warnings);
}

/// Case 6: one slice (a scout, a key image) or two are no volume with a slice step to check.
#[test]
fn one_or_two_slices_are_not_a_volume() {
    let e = refused(
        synthetic_series(1, |_, _| {}).path(),
        &["one slice is not a volume", "at least 3 slices"],
    );
    assert!(!e.contains("slice_0"), "names the folder: {e}");
    refused(
        synthetic_series(2, |_, _| {}).path(),
        &["2 slices are too few", "at least 3 slices"],
    );
    read_stored(synthetic_series(3, |_, _| {}).path());
}

/// Case 7: spacings no scanner makes are refused naming PixelSpacing or the slice positions;
/// possible but extreme ones are read with an ExtremeSpacing warning.
#[test]
fn absurd_spacings_are_refused_and_extreme_ones_warn() {
    for spacing in [
        "0\\0.8",
        "0.8\\-1",
        "1e30\\1e30",
        "NaN\\NaN",
        "0.8\\inf",
        "abc\\1",
    ] {
        let dir = synthetic_series(3, |k, s| {
            if k == 2 {
                s.text(tags::PIXEL_SPACING, b"DS", spacing);
            }
        });
        refused(dir.path(), &["slice_2", "PixelSpacing (0028,0030)"]);
    }
    for step in [1e30, 5000.0, 1e-4] {
        let dir = synthetic_series(3, |k, s| {
            s.position([10.0, 20.0, step * k as f64]);
        });
        refused(
            dir.path(),
            &["ImagePositionPatient (0020,0032)", "not a voxel size"],
        );
    }
    // 25 mm slices, 0.01 mm pixels: possible, but far outside CT's usual range.
    let dir = synthetic_series(3, |k, s| {
        s.position([10.0, 20.0, 25.0 * k as f64]);
    });
    let v = read_stored(dir.path());
    let w = warnings_of(&v, WarningKind::ExtremeSpacing);
    assert!(w.len() == 1 && w[0].contains("25.000"), "{w:?}");
    let dir = synthetic_series(3, |_, s| {
        s.text(tags::PIXEL_SPACING, b"DS", "0.01\\0.01");
    });
    let v = read_stored(dir.path());
    assert_eq!(warnings_of(&v, WarningKind::ExtremeSpacing).len(), 1);
}

/// Runs `f` on another thread and fails the test if it takes longer than a minute (a FIFO
/// opened for reading blocks forever).
fn within_a_minute<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not return within a minute (blocked on a FIFO?)"))
}

/// Case 8: a FIFO or a device in a series folder is not a DICOM file and is never opened; a
/// FIFO given as the folder is named as what it is.
#[test]
fn fifos_and_devices_are_never_opened() {
    let dir = synthetic_series(3, |_, _| {});
    let fifo = dir.path().join("pipe");
    match std::process::Command::new("mkfifo").arg(&fifo).status() {
        Ok(s) if s.success() => {}
        _ => {
            eprintln!("SKIPPED fifos_and_devices_are_never_opened: mkfifo is not available");
            return;
        }
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero")).unwrap();
    let path = dir.path().to_owned();
    let (shape, listed, is_folder) = within_a_minute("reading a folder with a FIFO", move || {
        (
            ape::io::read_volume(&path).map(|v| v.volume.shape()),
            ape::io::dicom::list_series(&path).map(|s| s[0].slices),
            ape::io::dicom::is_dicom_folder(&path),
        )
    });
    assert_eq!(shape.unwrap(), [SIDE, SIDE, 3]);
    assert_eq!(listed.unwrap(), 3);
    assert!(is_folder);

    let e = within_a_minute("reading a FIFO as a series", move || {
        ape::io::dicom::read_dicom_series(&fifo)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    });
    assert!(e.contains("pipe") && e.contains("FIFO"), "{e}");
}

/// Case 9: a series whose voxels need more memory than the process may have is refused with a
/// typed error before the volume is allocated. The reading runs in a copy of this test binary
/// under `ulimit -v` (2 GB), on three RLE slices that claim 16384 × 16384 pixels each (3.2 GB
/// as f32) in a few hundred bytes: compressed files bound nothing, so only the memory check
/// stands between the claim and an allocation.
#[test]
fn a_series_larger_than_memory_is_refused_before_allocating() {
    if let Some(dir) = std::env::var_os("APE_DICOM_MEMORY_CHILD") {
        let e = ape::io::read_volume(Path::new(&dir))
            .map(|_| ())
            .unwrap_err()
            .to_string();
        println!("CHILD ERROR: {e}");
        assert!(
            e.contains("GB of memory, but only") && e.contains("address-space limit"),
            "{e}"
        );
        return;
    }
    if !cfg!(target_os = "linux") {
        eprintln!("SKIPPED a_series_larger_than_memory_is_refused_before_allocating: not Linux");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for k in 0..3 {
        let mut s = Slice::ct(k);
        s.us(tags::ROWS, 16384).us(tags::COLUMNS, 16384);
        s.remove(tags::PIXEL_DATA);
        let mut data: Vec<u8> = s
            .elements
            .iter()
            .flat_map(|(tag, (vr, value))| element(*tag, vr, value))
            .collect();
        // Encapsulated pixel data: an empty offset table, one fragment, the delimiter.
        data.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 64, 0, 0, 0]);
        data.extend_from_slice(&[0u8; 64]);
        data.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        let mut bytes = dicom_bytes(&data);
        // The meta group names explicit VR little endian; make it RLE Lossless (same length).
        let at = bytes
            .windows(20)
            .position(|w| w == b"1.2.840.10008.1.2.1\0")
            .unwrap();
        bytes[at..at + 20].copy_from_slice(b"1.2.840.10008.1.2.5\0");
        std::fs::write(dir.path().join(format!("slice_{k}")), bytes).unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let run = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 2000000 && exec \"$0\" \"$@\"")
        .arg(&exe)
        .args([
            "--exact",
            "a_series_larger_than_memory_is_refused_before_allocating",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("APE_DICOM_MEMORY_CHILD", dir.path())
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success() && out.contains("CHILD ERROR"), "{out}");
}

/// The real IRCAD series is ordinary CT: none of the checks above warns about it.
#[test]
fn the_ircad_series_reads_without_warnings() {
    let Some(dir) = ircad("the_ircad_series_reads_without_warnings") else {
        return;
    };
    let v = read_stored(&dir.join("dicom"));
    assert!(v.info.warnings.is_empty(), "{:?}", v.info.warnings);
    assert_eq!(v.volume.shape(), [512, 512, 119]);
}
