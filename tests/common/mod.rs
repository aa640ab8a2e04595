#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers may fail loudly
//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The repository's folder (the tests belong to two packages: the library at the top and the
/// front ends in src/app).
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR")))
        .to_owned()
}

/// The shared data folder, where the real scans live ([`ape::cohort::shared_data_dir`]:
/// `$APE_SHARED_DATA`, else `../shared/data` beside the repository).
///
/// Returns `None` (and says so) when it is missing, so that the tests pass on a fresh clone
/// without it; under CI (`CI=true`) a missing folder fails the test instead.
pub fn shared_data(test: &str) -> Option<PathBuf> {
    let dir = ape::cohort::shared_data_dir(&repository());
    if dir.join("btcv").is_dir() {
        return Some(dir);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{test}: {} is missing, and under CI the real-data tests must run",
        dir.display()
    );
    eprintln!(
        "SKIPPED {test}: {} not found (set APE_SHARED_DATA)",
        dir.display()
    );
    None
}

/// The 20 BTCV case numbers in `../shared/data/btcv`.
pub const BTCV_CASES: [&str; 20] = [
    "02", "03", "05", "07", "08", "09", "11", "12", "14", "18", "19", "20", "21", "22", "24", "25",
    "26", "27", "28", "29",
];

/// The bytes of a file, gunzipped when it is gzip-compressed.
pub fn read_plain(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap();
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    }
}

/// Writes bytes, gzip-compressed when the name ends in `.gz`.
pub fn write_plain(path: &Path, bytes: &[u8]) {
    if path.extension().is_some_and(|e| e == "gz") {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        std::fs::write(path, enc.finish().unwrap()).unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

/// Byte offsets of NIfTI-1 header fields.
pub mod field {
    pub const DIM: usize = 40;
    pub const DATATYPE: usize = 70;
    pub const BITPIX: usize = 72;
    pub const PIXDIM: usize = 76;
    pub const VOX_OFFSET: usize = 108;
    pub const SCL_SLOPE: usize = 112;
    pub const QFORM_CODE: usize = 252;
    pub const SFORM_CODE: usize = 254;
    pub const SROW_X: usize = 280;
    pub const MAGIC: usize = 344;
}

/// Overwrites little-endian bytes of a (plain) NIfTI image in memory.
pub fn patch(bytes: &mut [u8], offset: usize, value: &[u8]) {
    bytes[offset..offset + value.len()].copy_from_slice(value);
}

pub fn i16s(values: &[i16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Runs the `ape` binary (from the tests of the ape-app package, which builds it) with the map
/// cache in `cache`: its output, and the arguments for messages.
fn ape_output<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    cache: &Path,
) -> (std::process::Output, Vec<std::ffi::OsString>) {
    let Some(exe) = option_env!("CARGO_BIN_EXE_ape") else {
        panic!("only the tests of ape-app, which builds the binary, can run it");
    };
    let run = std::process::Command::new(exe)
        .args(args)
        .env("APE_CACHE_DIR", cache)
        .output()
        .unwrap();
    (run, args.iter().map(|a| a.as_ref().to_owned()).collect())
}

/// Runs the `ape` binary; fails the test with its output unless it succeeds; returns its
/// stdout.
pub fn run_ape<S: AsRef<std::ffi::OsStr>>(args: &[S], cache: &Path) -> String {
    let (run, args) = ape_output(args, cache);
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "ape {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

/// Runs the `ape` binary expecting it to fail; returns its stderr.
pub fn run_ape_failing<S: AsRef<std::ffi::OsStr>>(args: &[S], cache: &Path) -> String {
    let (run, args) = ape_output(args, cache);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(
        !run.status.success(),
        "ape {args:?} succeeded: {}\n{stderr}",
        String::from_utf8_lossy(&run.stdout)
    );
    stderr
}

/// A tiny scan (8³ voxels of 2 mm: air beside soft tissue) and its label map (one organ,
/// "liver"), written as `NAME.nii.gz` and `NAME_label.nii.gz` for each name into
/// `dir/cohort`, with a labels.json: a labelled cohort in the BTCV layout. Returns the folder.
pub fn write_tiny_cohort(dir: &Path, names: &[&str]) -> PathBuf {
    use ape::io::nifti::write_nifti;
    use glam::DVec3;
    let affine = ape::Affine::from_spacing(DVec3::splat(2.0), DVec3::ZERO).unwrap();
    let scan = ape::Volume::from_fn(
        [8, 8, 8],
        affine,
        |i, _, _| if i < 2 { -1000i16 } else { 40 },
    )
    .unwrap();
    let labels = ape::Volume::from_fn([8, 8, 8], affine, |i, _, _| u8::from(i > 4)).unwrap();
    let cohort = dir.join("cohort");
    std::fs::create_dir(&cohort).unwrap();
    for name in names {
        write_nifti(cohort.join(format!("{name}.nii.gz")), &scan).unwrap();
        write_nifti(cohort.join(format!("{name}_label.nii.gz")), &labels).unwrap();
    }
    std::fs::write(cohort.join("labels.json"), r#"{"labels": {"1": "liver"}}"#).unwrap();
    cohort
}
