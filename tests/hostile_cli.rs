//! The `ape` command line against careless and hostile input: absurd numbers are refused by
//! flag name before any work, special files never block, a volume larger than the memory the
//! process may use is refused with an error instead of an abort, and odd but legal input is
//! read with a warning.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use ape::io::nifti::write_nifti;
use ape::{Affine, Volume};
use common::{run_ape, run_ape_failing};
use glam::DVec3;

fn little_cohort(dir: &Path) -> std::path::PathBuf {
    common::write_tiny_cohort(dir, &["a", "b"])
}

#[test]
fn absurd_numbers_are_refused_by_flag_name() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = little_cohort(dir.path());
    let cache = dir.path().join("cache");
    let (scan, out) = (cohort.join("a.nii.gz"), dir.path().join("crop.nii.gz"));
    let crop = |extra: &[&str]| {
        let mut args = vec![
            "crop",
            scan.to_str().unwrap(),
            "--organ",
            "liver",
            "--support",
            cohort.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run_ape_failing(&args, &cache)
    };
    for alpha in ["nan", "inf", "-inf", "0", "-1", "1e308"] {
        let e = crop(&[&format!("--alpha={alpha}")]);
        assert!(e.contains("--alpha"), "--alpha {alpha}: {e}");
    }
    let e = crop(&["--shots", "0"]);
    assert!(e.contains("--shots"), "{e}");
    assert!(!out.exists());

    let data = cohort.to_str().unwrap();
    let report = dir.path().join("report");
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--data", data, "--out", report.to_str().unwrap()];
        args.extend_from_slice(extra);
        run_ape_failing(&args, &cache)
    };
    for spacing in ["3,3", "0,3,3", "nan,3,3", "3,3,1e30", "3,3,-4"] {
        let e = eval(&[&format!("--input-spacing={spacing}")]);
        assert!(e.contains("--input-spacing"), "{spacing}: {e}");
    }
    let e = eval(&["--shots", "0"]);
    assert!(e.contains("--shots"), "{e}");
    // Too few scans for the shots asked for: said before any scan is embedded, naming the
    // folder.
    let e = eval(&["--shots", "5"]);
    assert!(e.contains("cohort") && e.contains("--shots 5"), "{e}");
    assert!(!report.exists());
}

/// Runs the binary, failing the test if it runs longer than 20 s (a hang).
fn run_with_deadline(args: &[&str]) -> std::process::Output {
    let exe = env!("CARGO_BIN_EXE_ape");
    let mut child = std::process::Command::new(exe)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("ape {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[cfg(unix)]
#[test]
fn special_files_are_refused_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("scan.nii.gz");
    if !std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIPPED: mkfifo is not available");
        return;
    }
    let f = fifo.to_str().unwrap();
    let out = dir.path().join("out.csv");
    let o = out.to_str().unwrap();
    for args in [
        vec!["info", f],
        vec!["embed", f, "-o", o],
        vec!["boxes", f, "-o", o],
        vec!["model-info", "--model", f],
    ] {
        let run = run_with_deadline(&args);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?}");
        assert!(
            stderr.contains("named pipe") || stderr.contains("FIFO"),
            "{args:?}: {stderr}"
        );
    }
    // An output onto a FIFO is refused too (writing would block until a reader comes).
    let scan_dir = tempfile::tempdir().unwrap();
    let cohort = little_cohort(scan_dir.path());
    let run = run_with_deadline(&["embed", cohort.join("a.nii.gz").to_str().unwrap(), "-o", f]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("not a regular file"));
}

#[test]
fn a_volume_beyond_the_address_space_limit_is_an_error_not_an_abort() {
    let prlimit = std::process::Command::new("prlimit")
        .arg("--version")
        .output();
    if !prlimit.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: prlimit is not available");
        return;
    }
    // A 0.4 MB .nii.gz holding 600³ int16 zeros: 432 MB of voxels, 1.3 GB with their f32 copy.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.nii.gz");
    let n = 600usize;
    let mut header = vec![0u8; 352];
    header[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (i, d) in [3i16, n as i16, n as i16, n as i16, 1, 1, 1, 1]
        .iter()
        .enumerate()
    {
        header[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    header[70..72].copy_from_slice(&4i16.to_le_bytes()); // int16
    header[72..74].copy_from_slice(&16i16.to_le_bytes());
    for i in 0..8 {
        header[76 + 4 * i..80 + 4 * i].copy_from_slice(&1f32.to_le_bytes());
    }
    header[108..112].copy_from_slice(&352f32.to_le_bytes());
    header[344..348].copy_from_slice(b"n+1\0");
    let file = std::fs::File::create(&path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(&header).unwrap();
    let zeros = vec![0u8; 1 << 22];
    let mut left = n * n * n * 2;
    while left > 0 {
        let k = left.min(zeros.len());
        gz.write_all(&zeros[..k]).unwrap();
        left -= k;
    }
    gz.finish().unwrap();

    let run = std::process::Command::new("prlimit")
        .arg(format!("--as={}", 1u64 << 30))
        .arg(env!("CARGO_BIN_EXE_ape"))
        .args(["info", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    // Exit code 1 with a message: not killed by a signal (an abort is SIGABRT).
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bomb.nii.gz") && stderr.contains("memory"),
        "{stderr}"
    );
}

#[test]
fn odd_but_legal_volumes_are_read_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let affine = Affine::from_spacing(DVec3::ONE, DVec3::ZERO).unwrap();
    let mr = Volume::from_fn([6, 6, 6], affine, |i, j, _| ((i * j) * 100) as i16).unwrap();
    let path = dir.path().join("mr.nii.gz");
    write_nifti(&path, &mr).unwrap();
    let out = run_ape(&["info", path.to_str().unwrap()], &dir.path().join("cache"));
    assert!(out.contains("warning") && out.contains("not CT"), "{out}");
}
