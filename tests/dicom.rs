//! DICOM series on the real IRCAD scan: shape, spacing and HU as its README states, the world
//! affine equal to that of its NIfTI liver mask, liver HU inside the mask; and broken series
//! (missing slice, mixed series, no pixel data, truncated file, no DICOM at all) each give a
//! clear error naming the problem, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use std::path::{Path, PathBuf};

use ape::labels::LabelMap;
use ape::scan::Scan;
use ape::summary::{VolumeKind, summarize};
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
