//! Every kind of bad input gets its own typed error naming the file, and nothing panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use std::path::{Path, PathBuf};

use ape::io::nifti::{ReadOptions, read_label_volume, read_nifti, read_nifti_with, write_nifti};
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
    // A NaN slope makes every voxel NaN: refused as a bad header.
    let path = edited(dir.path(), "nan_slope.nii", |b| {
        patch(b, field::SCL_SLOPE, &f32s(&[f32::NAN]))
    });
    let e = read_nifti(&path).unwrap_err();
    assert!(
        matches!(
            e,
            VolumeError::BadHeader {
                field: "scl_slope/scl_inter",
                ..
            }
        ),
        "{e}"
    );
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
