//! Every kind of bad input gets its own typed error naming the file, and nothing panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use std::path::{Path, PathBuf};

use ape::io::nifti::{ReadOptions, read_label_volume, read_nifti, read_nifti_with, write_nifti};
use ape::scan::Scan;
use ape::validate::WarningKind;
use ape::{Affine, Volume, VolumeError};
use common::{f32s, field, patch, read_plain, write_plain};
use glam::DVec3;

/// A valid little `.nii` (or `.nii.gz`) of 6×5×4 int16 voxels; returns its path.
fn valid_file(dir: &Path, name: &str) -> PathBuf {
    let affine =
        Affine::from_spacing(DVec3::new(1.0, 1.5, 2.0), DVec3::new(-3.0, 2.0, 1.0)).unwrap();
    let v = Volume::from_fn([6, 5, 4], affine, |i, j, k| (i + 10 * j + 100 * k) as i16).unwrap();
    let path = dir.join(name);
    write_nifti(&path, &v).unwrap();
    path
}

/// A copy of a valid file with its plain bytes changed by `edit`.
fn edited(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let source = valid_file(dir, &format!("source-{name}"));
    let mut bytes = read_plain(&source);
    edit(&mut bytes);
    let path = dir.join(name);
    write_plain(&path, &bytes);
    path
}

fn assert_names_file(e: &VolumeError, path: &Path) {
    let message = e.to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(
        message.contains(name.as_ref()),
        "{message:?} does not name {name}"
    );
}

#[test]
fn a_valid_file_reads() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["ok.nii", "ok.nii.gz"] {
        let v = read_nifti(valid_file(dir.path(), name)).unwrap();
        assert_eq!(v.volume.shape(), [6, 5, 4]);
        assert_eq!(v.volume.get(5, 4, 3), Some(&345.0));
    }
}

#[test]
fn missing_file() {
    let path = Path::new("/nonexistent/scan.nii.gz");
    let e = read_nifti(path).unwrap_err();
    assert!(matches!(e, VolumeError::NotFound { .. }), "{e}");
    assert_names_file(&e, path);
}

#[test]
fn truncated_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let source = valid_file(dir.path(), "whole.nii.gz");
    let bytes = std::fs::read(&source).unwrap();
    let path = dir.path().join("cut.nii.gz");
    std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = read_nifti(&path).unwrap_err();
    assert!(matches!(e, VolumeError::CorruptGzip { .. }), "{e}");
    assert_names_file(&e, &path);
    // Cut inside the header, too.
    std::fs::write(&path, &bytes[..30]).unwrap();
    let e = read_nifti(&path).unwrap_err();
    assert!(
        matches!(
            e,
            VolumeError::CorruptGzip { .. } | VolumeError::Truncated { .. }
        ),
        "{e}"
    );
}

#[test]
fn corrupt_gzip_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let source = valid_file(dir.path(), "whole.nii.gz");
    let mut bytes = std::fs::read(&source).unwrap();
    let n = bytes.len();
    bytes[n - 6] ^= 0xff; // inside the CRC32 of the trailer
    let path = dir.path().join("crc.nii.gz");
    std::fs::write(&path, &bytes).unwrap();
    let e = read_nifti(&path).unwrap_err();
    assert!(matches!(e, VolumeError::CorruptGzip { .. }), "{e}");
}

#[test]
fn bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited(dir.path(), "magic.nii", |b| {
        patch(b, field::MAGIC, b"xyz\0")
    });
    let e = read_nifti(&path).unwrap_err();
    assert!(matches!(e, VolumeError::BadMagic { .. }), "{e}");
    assert_names_file(&e, &path);

    let text = dir.path().join("notes.nii");
    std::fs::write(
        &text,
        "this is not an image at all, just a text file ".repeat(20),
    )
    .unwrap();
    let e = read_nifti(&text).unwrap_err();
    assert!(matches!(e, VolumeError::BadMagic { .. }), "{e}");

    let short = dir.path().join("short.nii");
    std::fs::write(&short, [0u8; 100]).unwrap();
    let e = read_nifti(&short).unwrap_err();
    assert!(
        matches!(e, VolumeError::Truncated { what: "header", .. }),
        "{e}"
    );
}

#[test]
fn unsupported_datatype() {
    let dir = tempfile::tempdir().unwrap();
    // 32 is complex64, 128 RGB24, 1 binary, 1234 not a NIfTI type at all.
    for code in [32i16, 128, 1, 1234] {
        let path = edited(dir.path(), &format!("type{code}.nii"), |b| {
            patch(b, field::DATATYPE, &code.to_le_bytes())
        });
        let e = read_nifti(&path).unwrap_err();
        assert!(
            matches!(e, VolumeError::UnsupportedDatatype { code: c, .. } if c == code),
            "{e}"
        );
        assert_names_file(&e, &path);
    }
}

#[test]
fn zero_or_negative_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    for (index, value) in [(2usize, 0i16), (3, -5), (0, 0), (0, 9)] {
        let path = edited(dir.path(), &format!("dim{index}_{value}.nii"), |b| {
            patch(b, field::DIM + 2 * index, &value.to_le_bytes())
        });
        let e = read_nifti(&path).unwrap_err();
        assert!(matches!(e, VolumeError::BadDimensions { .. }), "{e}");
        assert_names_file(&e, &path);
    }
}

#[test]
fn header_claiming_more_voxels_than_the_file_holds() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["claims.nii", "claims.nii.gz"] {
        // 6×5×400 voxels claimed, 6×5×4 stored.
        let path = edited(dir.path(), name, |b| {
            patch(b, field::DIM + 6, &400i16.to_le_bytes())
        });
        let e = read_nifti(&path).unwrap_err();
        assert!(
            matches!(
                e,
                VolumeError::Truncated {
                    what: "voxel data",
                    ..
                }
            ),
            "{name}: {e}"
        );
        assert_names_file(&e, &path);
    }
}

#[test]
fn header_claiming_more_than_memory_allows_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // 30000³ float64 voxels: 216 TB. Any attempt to allocate would abort the test process.
    let path = edited(dir.path(), "huge.nii.gz", |b| {
        for axis in 1..=3 {
            patch(b, field::DIM + 2 * axis, &30000i16.to_le_bytes());
        }
        patch(b, field::DATATYPE, &64i16.to_le_bytes());
    });
    let e = read_nifti(&path).unwrap_err();
    assert!(matches!(e, VolumeError::TooLarge { .. }), "{e}");
    assert_names_file(&e, &path);
    // A lower limit applies to an otherwise valid file.
    let ok = valid_file(dir.path(), "small.nii");
    let e = read_nifti_with(
        &ok,
        &ReadOptions {
            max_voxels: 100,
            ..ReadOptions::default()
        },
        Some,
    )
    .unwrap_err();
    assert!(
        matches!(e, VolumeError::TooLarge { voxels: 120, .. }),
        "{e}"
    );
}

#[test]
fn two_dimensional_and_multi_volume_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited(dir.path(), "flat.nii", |b| {
        patch(b, field::DIM, &2i16.to_le_bytes())
    });
    let e = read_nifti(&path).unwrap_err();
    assert!(matches!(e, VolumeError::NotThreeD { .. }), "{e}");
    assert_names_file(&e, &path);

    // 4-D with 3 volumes: refused. 4-D with one volume: accepted.
    let path = edited(dir.path(), "series.nii", |b| {
        patch(b, field::DIM, &4i16.to_le_bytes());
        patch(b, field::DIM + 8, &3i16.to_le_bytes());
    });
    let e = read_nifti(&path).unwrap_err();
    assert!(matches!(e, VolumeError::NotThreeD { .. }), "{e}");
    let path = edited(dir.path(), "single.nii", |b| {
        patch(b, field::DIM, &4i16.to_le_bytes());
        patch(b, field::DIM + 8, &1i16.to_le_bytes());
    });
    assert_eq!(read_nifti(&path).unwrap().volume.shape(), [6, 5, 4]);

    // A single slice stored as 3-D.
    let path = edited(dir.path(), "slice.nii", |b| {
        patch(b, field::DIM + 6, &1i16.to_le_bytes())
    });
    let e = read_nifti(&path).unwrap_err();
    assert!(matches!(e, VolumeError::NotThreeD { .. }), "{e}");
}

#[test]
fn singular_affine() {
    let dir = tempfile::tempdir().unwrap();
    // sform whose x row is a copy of the y row.
    let path = edited(dir.path(), "singular.nii", |b| {
        let y_row: Vec<u8> = b[field::SROW_X + 16..field::SROW_X + 32].to_vec();
        patch(b, field::SROW_X, &y_row);
    });
    let e = read_nifti(&path).unwrap_err();
    assert!(
        matches!(
            e,
            VolumeError::SingularAffine {
                source_name: "sform",
                ..
            }
        ),
        "{e}"
    );
    assert_names_file(&e, &path);

    // No sform, no qform, and a zero voxel size.
    let path = edited(dir.path(), "zero_pixdim.nii", |b| {
        patch(b, field::SFORM_CODE, &0i16.to_le_bytes());
        patch(b, field::QFORM_CODE, &0i16.to_le_bytes());
        patch(b, field::PIXDIM + 8, &f32s(&[0.0]));
    });
    let e = read_nifti(&path).unwrap_err();
    assert!(
        matches!(
            e,
            VolumeError::SingularAffine {
                source_name: "pixdim",
                ..
            }
        ),
        "{e}"
    );

    // NaN in the sform.
    let path = edited(dir.path(), "nan_sform.nii", |b| {
        patch(b, field::SROW_X + 12, &f32s(&[f32::NAN]))
    });
    let e = read_nifti(&path).unwrap_err();
    assert!(matches!(e, VolumeError::SingularAffine { .. }), "{e}");
}

#[test]
fn nan_or_infinite_voxels() {
    let dir = tempfile::tempdir().unwrap();
    let affine = Affine::from_spacing(DVec3::ONE, DVec3::ZERO).unwrap();
    for (name, bad) in [("nan.nii.gz", f32::NAN), ("inf.nii", f32::INFINITY)] {
        let v = Volume::from_fn([4, 4, 4], affine, |i, j, k| {
            if (i, j, k) == (1, 2, 3) || (i, j, k) == (3, 3, 3) {
                bad
            } else {
                1.0
            }
        })
        .unwrap();
        let path = dir.path().join(name);
        write_nifti(&path, &v).unwrap();
        let e = read_nifti(&path).unwrap_err();
        assert!(
            matches!(
                e,
                VolumeError::NonFinite {
                    count: 2,
                    first: [1, 2, 3],
                    ..
                }
            ),
            "{e}"
        );
        assert_names_file(&e, &path);
    }
    // A NaN slope means "no scaling" (NIfTI-1 as nibabel and nifti_io read it): the stored
    // values, not a refusal.
    let path = edited(dir.path(), "nan_slope.nii", |b| {
        patch(b, field::SCL_SLOPE, &f32s(&[f32::NAN]))
    });
    let v = read_nifti(&path).unwrap();
    assert_eq!(v.volume.get(5, 4, 3), Some(&345.0));
}

#[test]
fn absurd_header_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited(dir.path(), "offset.nii", |b| {
        patch(b, field::VOX_OFFSET, &f32s(&[-7.0]))
    });
    let e = read_nifti(&path).unwrap_err();
    assert!(
        matches!(
            e,
            VolumeError::BadHeader {
                field: "vox_offset",
                ..
            }
        ),
        "{e}"
    );
    let path = edited(dir.path(), "hdr.nii", |b| patch(b, field::MAGIC, b"ni1\0"));
    assert!(matches!(
        read_nifti(&path).unwrap_err(),
        VolumeError::BadMagic { .. }
    ));
}

#[test]
fn a_scan_is_not_a_label_map() {
    let dir = tempfile::tempdir().unwrap();
    let affine = Affine::from_spacing(DVec3::ONE, DVec3::ZERO).unwrap();
    let v = Volume::from_fn([3, 3, 3], affine, |i, _, _| i as f32 - 0.5).unwrap();
    let path = dir.path().join("seg.nii");
    write_nifti(&path, &v).unwrap();
    let e = read_label_volume(&path).unwrap_err();
    assert!(matches!(e, VolumeError::NotALabelMap { .. }), "{e}");
    assert_names_file(&e, &path);
}

#[test]
fn a_label_map_on_another_grid_than_its_scan() {
    let dir = tempfile::tempdir().unwrap();
    let scan_path = valid_file(dir.path(), "scan.nii");
    let scan = read_nifti(&scan_path).unwrap().volume;
    let write_labels = |name: &str, shape: [usize; 3], affine: Affine| {
        let v = Volume::from_fn(shape, affine, |i, _, _| (i % 2) as u8).unwrap();
        let path = dir.path().join(name);
        write_nifti(&path, &v).unwrap();
        path
    };
    // The scan's own grid: accepted.
    let same = write_labels("same_label.nii", [6, 5, 4], *scan.affine());
    ape::labels::LabelMap::read_for_scan(&same, &scan, &scan_path).unwrap();
    // Another shape, and the same shape shifted by 2 mm: refused, naming both files.
    let shifted_affine =
        Affine::from_spacing(DVec3::new(1.0, 1.5, 2.0), DVec3::new(-1.0, 2.0, 1.0)).unwrap();
    for (path, hint) in [
        (
            write_labels("small_label.nii", [6, 5, 3], *scan.affine()),
            "6 × 5 × 3 voxels against 6 × 5 × 4",
        ),
        (
            write_labels("shifted_label.nii", [6, 5, 4], shifted_affine),
            "lies at",
        ),
    ] {
        let e = ape::labels::LabelMap::read_for_scan(&path, &scan, &scan_path).unwrap_err();
        assert!(matches!(e, VolumeError::LabelGridMismatch { .. }), "{e}");
        assert_names_file(&e, &path);
        assert_names_file(&e, &scan_path);
        assert!(e.to_string().contains(hint), "{e}");
    }
}

#[test]
fn big_endian_files_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let source = valid_file(dir.path(), "little.nii");
    let mut b = read_plain(&source);
    // Swap every header field of 2 or 4 bytes that this small file uses, and every voxel.
    let swap = |b: &mut Vec<u8>, offset: usize, width: usize| b[offset..offset + width].reverse();
    swap(&mut b, 0, 4);
    for i in 0..8 {
        swap(&mut b, field::DIM + 2 * i, 2);
    }
    swap(&mut b, field::DATATYPE, 2);
    swap(&mut b, field::BITPIX, 2);
    for i in 0..8 {
        swap(&mut b, field::PIXDIM + 4 * i, 4);
    }
    swap(&mut b, field::VOX_OFFSET, 4);
    swap(&mut b, field::SCL_SLOPE, 4);
    swap(&mut b, field::SCL_SLOPE + 4, 4);
    swap(&mut b, field::QFORM_CODE, 2);
    swap(&mut b, field::SFORM_CODE, 2);
    for i in 0..6 {
        swap(&mut b, 256 + 4 * i, 4); // quatern_b … qoffset_z
    }
    for i in 0..12 {
        swap(&mut b, field::SROW_X + 4 * i, 4);
    }
    for voxel in 0..120 {
        swap(&mut b, 352 + 2 * voxel, 2);
    }
    let path = dir.path().join("big.nii");
    write_plain(&path, &b);
    let big = read_nifti(&path).unwrap();
    let little = read_nifti(&source).unwrap();
    assert_eq!(big.volume, little.volume);
}

/// Random corruption of header bytes: every outcome is a value or an error, never a panic
/// or an abort from a giant allocation.
#[test]
fn random_header_corruption_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let source = valid_file(dir.path(), "fuzz-source.nii");
    let original = read_plain(&source);
    let path = dir.path().join("fuzz.nii");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut errors = 0;
    for _ in 0..3000 {
        let mut bytes = original.clone();
        for _ in 0..1 + next() % 4 {
            let offset = (next() % 352) as usize;
            bytes[offset] = next() as u8;
        }
        if next() % 4 == 0 {
            bytes.truncate((next() % bytes.len() as u64) as usize);
        }
        std::fs::write(&path, &bytes).unwrap();
        if read_nifti(&path).is_err() {
            errors += 1;
        }
    }
    assert!(errors > 0);
}

// ---- Hostile input: absurd headers, suspicious volumes, special files, memory ----

#[test]
fn absurd_scaling_factors_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (name, slope, inter, field_name) in [
        ("huge_slope.nii", 1e30_f32, 0.0_f32, "scl_slope"),
        ("tiny_slope.nii", 1e-30, 0.0, "scl_slope"),
        ("nan_inter.nii", 1.0, f32::NAN, "scl_inter"),
        ("huge_inter.nii", 1.0, 1e20, "scl_inter"),
    ] {
        let path = edited(dir.path(), name, |b| {
            patch(b, field::SCL_SLOPE, &f32s(&[slope, inter]))
        });
        let e = read_nifti(&path).unwrap_err();
        assert!(
            matches!(e, VolumeError::BadHeader { field, .. } if field == field_name),
            "{name}: {e}"
        );
        assert_names_file(&e, &path);
    }
}

/// A valid file whose sform scales every axis by `s` (and pixdim alike).
fn with_spacing(dir: &Path, name: &str, s: f32) -> PathBuf {
    edited(dir, name, |b| {
        patch(b, field::PIXDIM + 4, &f32s(&[s, s, s]));
        patch(b, field::SROW_X, &f32s(&[s, 0.0, 0.0, 0.0]));
        patch(b, field::SROW_X + 16, &f32s(&[0.0, s, 0.0, 0.0]));
        patch(b, field::SROW_X + 32, &f32s(&[0.0, 0.0, s, 0.0]));
    })
}

#[test]
fn absurd_voxel_sizes_are_refused_naming_the_field_and_extreme_ones_warn() {
    let dir = tempfile::tempdir().unwrap();
    for (name, s) in [("huge.nii", 1e30_f32), ("tiny.nii", 1e-30)] {
        let path = with_spacing(dir.path(), name, s);
        let e = read_nifti(&path).unwrap_err();
        let message = e.to_string();
        assert!(message.contains("sform"), "{message}");
        assert!(message.contains("is not a voxel size"), "{message}");
        assert_names_file(&e, &path);
    }
    // 25 mm voxels: possible, unusual, read with a warning.
    let path = with_spacing(dir.path(), "coarse.nii", 25.0);
    let v = read_nifti(&path).unwrap();
    assert_eq!(v.info.warnings.len(), 1, "{:?}", v.info.warnings);
    assert_eq!(v.info.warnings[0].kind, WarningKind::ExtremeSpacing);
    // A grid placed 10^9 mm away is not a scan's.
    let path = edited(dir.path(), "far.nii", |b| {
        patch(b, field::SROW_X + 12, &f32s(&[1e9]))
    });
    let e = read_nifti(&path).unwrap_err();
    assert!(e.to_string().contains("beyond 100 m"), "{e}");
}

fn scan_file(dir: &Path, name: &str, value: impl Fn(usize, usize, usize) -> f32) -> PathBuf {
    let affine = Affine::from_spacing(DVec3::ONE, DVec3::ZERO).unwrap();
    let v = Volume::from_fn([8, 8, 8], affine, value).unwrap();
    let path = dir.join(name);
    write_nifti(&path, &v).unwrap();
    path
}

#[test]
fn volumes_unlike_ct_are_read_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let ct = scan_file(
        dir.path(),
        "ct.nii",
        |i, _, _| if i < 2 { -1000.0 } else { 40.0 },
    );
    assert!(Scan::read(&ct).unwrap().warnings().is_empty());
    for (name, value, kind) in [
        ("constant.nii", 0.0_f32, WarningKind::ConstantVolume),
        ("mr.nii", 3000.0, WarningKind::NotCtLike),
        ("unit.nii", 1.0, WarningKind::NotCtLike),
    ] {
        let path = scan_file(dir.path(), name, |i, j, _| {
            if kind == WarningKind::ConstantVolume {
                value
            } else {
                value * ((i + j) % 2) as f32
            }
        });
        let scan = Scan::read(&path).unwrap();
        let kinds: Vec<_> = scan.warnings().iter().map(|w| w.kind).collect();
        assert_eq!(kinds, [kind], "{name}");
        assert!(scan.warnings()[0].to_string().contains(name));
    }
}

#[test]
fn a_label_map_stored_as_floats_reads_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = scan_file(dir.path(), "seg.nii", |i, _, _| (i % 3) as f32);
    let map = ape::labels::LabelMap::read(&path).unwrap();
    assert_eq!(map.volume.get(2, 0, 0), Some(&2));
    assert_eq!(map.warnings.len(), 1);
    assert_eq!(map.warnings[0].kind, WarningKind::FloatLabels);
    // Stored as integers: no warning.
    let affine = Affine::from_spacing(DVec3::ONE, DVec3::ZERO).unwrap();
    let v = Volume::from_fn([4, 4, 4], affine, |i, _, _| i as u8).unwrap();
    let int = dir.path().join("int_seg.nii");
    write_nifti(&int, &v).unwrap();
    assert!(
        ape::labels::LabelMap::read(&int)
            .unwrap()
            .warnings
            .is_empty()
    );
}

#[test]
fn an_absurd_sidecar_window_is_refused_naming_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let path = scan_file(dir.path(), "scan.nii", |i, _, _| i as f32);
    for window in ["[-1e30, 1e30]", "[100, 100]", "[300, -100]"] {
        std::fs::write(
            dir.path().join("labels.json"),
            format!(r#"{{"labels": {{"1": "liver"}}, "intensity": {{"hu_window": {window}}}}}"#),
        )
        .unwrap();
        let e = Scan::read(&path).unwrap_err();
        assert!(matches!(e, VolumeError::BadSidecar { .. }), "{window}: {e}");
        assert!(e.to_string().contains("labels.json"), "{e}");
    }
    // A sidecar that is not JSON is no longer skipped in silence either.
    std::fs::write(dir.path().join("labels.json"), "{not json").unwrap();
    assert!(matches!(
        Scan::read(&path).unwrap_err(),
        VolumeError::BadSidecar { .. }
    ));
}

/// Runs `f` on another thread; fails the test if it takes longer than 10 s (a hang).
fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("hung on a special file")
}

#[cfg(unix)]
#[test]
fn a_fifo_is_refused_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("scan.nii.gz");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: mkfifo is not available");
        return;
    }
    let path = fifo.clone();
    let e = within_seconds(move || read_nifti(&path).map(|_| ()).unwrap_err().to_string());
    assert!(e.contains("named pipe"), "{e}");
    assert!(e.contains("scan.nii.gz"), "{e}");
    let path = fifo.clone();
    let e = within_seconds(move || {
        ape::io::read_volume(&path)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    });
    assert!(e.contains("named pipe"), "{e}");
    // A device reads without end.
    let e = within_seconds(|| read_nifti("/dev/zero").map(|_| ()).unwrap_err().to_string());
    assert!(e.contains("character device"), "{e}");
}

#[test]
fn a_volume_that_cannot_fit_in_memory_is_refused_before_allocating() {
    // What the checks see here: some limit is always readable on Linux.
    #[cfg(target_os = "linux")]
    {
        let (available, _) = ape::validate::memory_available().unwrap();
        let e = ape::validate::memory_for(Path::new("big.nii.gz"), available.saturating_mul(2))
            .unwrap_err();
        assert!(
            matches!(e, ape::validate::InputError::OutOfMemory { .. }),
            "{e}"
        );
        assert!(e.to_string().starts_with("big.nii.gz: needs"), "{e}");
    }
}

#[test]
fn every_nifti_ape_writes_reads_back_with_extreme_but_valid_values() {
    let dir = tempfile::tempdir().unwrap();
    for (name, spacing, origin) in [
        ("fine.nii.gz", 0.001, -90_000.0),
        ("coarse.nii", 1000.0, 90_000.0),
        ("plain.nii.gz", 0.7, 0.0),
    ] {
        let affine = Affine::from_spacing(DVec3::splat(spacing), DVec3::splat(origin)).unwrap();
        let ints = Volume::from_fn([4, 3, 2], affine, |i, j, k| match (i + j + k) % 3 {
            0 => i16::MIN,
            1 => i16::MAX,
            _ => 0,
        })
        .unwrap();
        let path = dir.path().join(format!("i16-{name}"));
        write_nifti(&path, &ints).unwrap();
        let back = read_nifti(&path).unwrap();
        // The header holds f32: the far corner agrees to f32 precision.
        let corner = DVec3::new(3.0, 2.0, 1.0);
        let (a, b) = (
            back.volume.affine().to_world(corner),
            ints.affine().to_world(corner),
        );
        assert!(
            (a - b).length() <= 1e-6 * b.length().max(1.0),
            "{name}: {a} vs {b}"
        );
        assert!(
            back.volume
                .data()
                .iter()
                .zip(ints.data())
                .all(|(&a, &b)| a == b as f32)
        );

        let floats = Volume::from_fn([4, 3, 2], affine, |i, _, _| match i {
            0 => f32::MAX,
            1 => -f32::MAX,
            2 => f32::MIN_POSITIVE,
            _ => -0.0,
        })
        .unwrap();
        let path = dir.path().join(format!("f32-{name}"));
        write_nifti(&path, &floats).unwrap();
        assert_eq!(read_nifti(&path).unwrap().volume.data(), floats.data());

        let labels = Volume::from_fn([4, 3, 2], affine, |i, _, _| [0u16, 1, 65535, 7][i]).unwrap();
        let path = dir.path().join(format!("labels-{name}"));
        write_nifti(&path, &labels).unwrap();
        assert_eq!(read_label_volume(&path).unwrap().data(), labels.data());

        let path = dir.path().join(format!("vector-{name}"));
        ape::io::nifti::write_nifti_vector(&path, &[&floats, &floats, &floats]).unwrap();
        assert_eq!(ape::io::nifti::read_nifti_vector(&path).unwrap().len(), 3);
    }
    // A grid the reader would refuse is not written at all.
    let affine = Affine::from_spacing(DVec3::splat(1e-5), DVec3::ZERO).unwrap();
    let tiny = Volume::from_fn([2, 2, 2], affine, |_, _, _| 0i16).unwrap();
    let path = dir.path().join("tiny.nii");
    let e = write_nifti(&path, &tiny).unwrap_err();
    assert!(matches!(e, VolumeError::Write { .. }), "{e}");
    assert!(!path.exists());
}

#[test]
fn a_tiny_gzip_claiming_gigabytes_is_truncated_without_reserving_them() {
    // A bare header claiming 1024³ float64 voxels, gzipped to 57 bytes (found by review of the
    // fuzz campaign: it reserved 8 GiB before reading a voxel).
    let dir = tempfile::tempdir().unwrap();
    let path = edited(dir.path(), "claim.nii", |b| {
        patch(
            b,
            field::DIM,
            &[3, 0, 0, 4, 0, 4, 0, 4, 1, 0, 1, 0, 1, 0, 1, 0],
        );
        patch(b, field::DATATYPE, &64i16.to_le_bytes());
        patch(b, field::BITPIX, &64i16.to_le_bytes());
        b.truncate(352);
    });
    let header = std::fs::read(&path).unwrap();
    let gz = dir.path().join("claim.nii.gz");
    write_plain(&gz, &header);
    assert!(std::fs::metadata(&gz).unwrap().len() < 200);
    let e = read_nifti(&gz).unwrap_err();
    assert!(matches!(e, VolumeError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("cannot hold"), "{e}");
}
