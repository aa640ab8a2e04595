//! `ape info` as a user runs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use std::process::Command;

fn ape(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ape"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn info_reports_btcv_02_geometry() {
    let Some(data) = common::shared_data("info_reports_btcv_02_geometry") else {
        return;
    };
    let scan = data.join("btcv/btcv_02.nii.gz");
    let (ok, stdout, stderr) = ape(&["info", scan.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("257 × 257 × 199 voxels"), "{stdout}");
    assert!(stdout.contains("1.572 × 1.572 × 3.000 mm"), "{stdout}");
    assert!(stdout.contains("axis codes   L,P,S"), "{stdout}");
    assert!(stdout.contains("-125.0 … 275.0 HU"), "{stdout}");

    let labels = data.join("btcv/btcv_02_label.nii.gz");
    let (ok, stdout, _) = ape(&["info", labels.to_str().unwrap()]);
    assert!(ok);
    assert!(stdout.contains("13 present"), "{stdout}");
    assert!(stdout.contains("liver"), "{stdout}");
}

#[test]
fn info_json_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (scan, labels) = ape::phantom::demo_phantom().unwrap();
    let scan_path = dir.path().join("phantom.nii.gz");
    let label_path = dir.path().join("phantom_label.nii.gz");
    ape::io::nifti::write_nifti(&scan_path, &scan).unwrap();
    ape::io::nifti::write_nifti(&label_path, &labels).unwrap();
    std::fs::write(dir.path().join("labels.json"), ape::phantom::labels_json()).unwrap();
    let missing = dir.path().join("missing.nii.gz");

    let (ok, stdout, stderr) = ape(&[
        "info",
        "--json",
        scan_path.to_str().unwrap(),
        missing.to_str().unwrap(),
        label_path.to_str().unwrap(),
    ]);
    // The missing file fails the command and is named, the others are still reported.
    assert!(!ok);
    assert!(
        stderr.contains("missing.nii.gz: file not found"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let files = report.as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["axis_codes"], serde_json::json!(["L", "P", "S"]));
    let organs = files[1]["organs"].as_array().unwrap();
    let liver = organs.iter().find(|o| o["name"] == "liver").unwrap();
    let centre = liver["centre"].as_array().unwrap();
    assert!((centre[0].as_f64().unwrap() - 70.0).abs() < 1.0, "{liver}");
}

#[test]
fn demo_runs_without_shared_data() {
    let (ok, stdout, stderr) = ape(&["demo", "--data", "/nonexistent"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("synthetic phantom"), "{stdout}");
    assert!(stdout.contains("liver"), "{stdout}");
}
