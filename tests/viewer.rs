//! The viewer driven through egui_kittest with the real app state: open two scans, click a
//! landmark on one, find its match on the other and jump there; image snapshots of the views
//! with the APE overlay. Rendering needs a wgpu adapter: Mesa's lavapipe is enough (CI installs
//! it); without any adapter the snapshot is skipped with a note.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

use std::sync::Arc;
use std::time::{Duration, Instant};

use ape::app::ApeApp;
use ape::app::state::ScanStatus;
use ape::cache::MapCache;
use ape::model::ApeModel;
use ape::model::backend::cpu;
use egui_kittest::kittest::Queryable;
use egui_kittest::{Harness, SnapshotError};

fn step_until(harness: &mut Harness<'_, ApeApp>, what: &str, done: impl Fn(&ApeApp) -> bool) {
    let start = Instant::now();
    while !done(harness.state()) {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}"
        );
        harness.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    harness.step();
}

#[test]
fn a_clicked_landmark_is_found_on_the_other_scan_and_one_click_jumps_there() {
    let dir = tempfile::tempdir().unwrap();
    let scans = ape::phantom::write_demo_cohort(dir.path(), 2).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let compute = cpu();
    let model = Arc::new(ApeModel::bundled(&compute.device).unwrap());
    let device = compute.device.clone();
    let cache_dir = cache.path().to_owned();
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1280.0, 860.0))
        .build_eframe(move |cc| {
            ApeApp::new(
                &cc.egui_ctx,
                Some(model),
                device,
                Some(MapCache::new(cache_dir)),
                "test".into(),
            )
        });
    harness.state_mut().open(scans.clone());
    step_until(&mut harness, "both scans to be embedded", |app| {
        app.state
            .cohort
            .iter()
            .all(|s| matches!(s.status, ScanStatus::Ready | ScanStatus::Failed(_)))
    });
    for s in &harness.state().state.cohort {
        assert!(
            matches!(s.status, ScanStatus::Ready),
            "{}: {:?}",
            s.name,
            s.status
        );
    }

    // Click the middle of the axial view of the first scan: the crosshair moves there and the
    // point is looked up on the second scan.
    harness.get_by_label("axial view of phantom_00").click();
    harness.step();
    harness.step();
    let app = harness.state();
    let landmark = app
        .state
        .landmark
        .clone()
        .expect("the click made a landmark");
    assert_eq!(landmark.source, 0);
    assert!((app.state.crosshair - landmark.world).length() < 1e-9);
    let matched = landmark.matches[1].expect("a match on the second scan");
    assert!(matched.distance.is_finite());
    // The match lies inside the second scan.
    let second = app.state.cohort[1].scan.as_ref().unwrap();
    assert!(second.volume.world_bounds().contains(matched.world));

    // The matches list and the cohort strip offer the second scan; one click jumps there.
    harness.get_by_label_contains("phantom_01  d=").click();
    harness.step();
    harness.step();
    let app = harness.state();
    assert_eq!(app.state.active, 1);
    assert!((app.state.crosshair - matched.world).length() < 1e-9);
    assert!(harness.query_by_label("axial view of phantom_01").is_some());

    match harness.try_snapshot("viewer_match_on_second_scan") {
        Ok(()) => {}
        Err(SnapshotError::RenderError { err }) => {
            eprintln!("SKIPPED snapshot: no wgpu adapter to render with ({err})");
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn without_a_model_the_viewer_still_opens_and_shows_the_scan() {
    // What `ape view` does when the model file is corrupt or foreign: no model, a note.
    let dir = tempfile::tempdir().unwrap();
    let scans = ape::phantom::write_demo_cohort(dir.path(), 1).unwrap();
    let broken = dir.path().join("broken.apemodel");
    std::fs::write(&broken, b"not a model").unwrap();
    let error = ApeModel::load(&broken, &cpu().device)
        .unwrap_err()
        .to_string();
    assert!(error.contains("broken.apemodel"), "{error}");
    let note = format!("no APE model: {error}");
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1280.0, 860.0))
        .build_eframe(move |cc| ApeApp::new(&cc.egui_ctx, None, cpu().device, None, note));
    harness.state_mut().open(scans);
    step_until(&mut harness, "the scan to be read", |app| {
        matches!(app.state.cohort[0].status, ScanStatus::Failed(_))
    });
    let app = harness.state();
    assert!(app.state.cohort[0].scan.is_some(), "the scan is shown");
    assert!(app.state.cohort[0].map.is_none());
    match &app.state.cohort[0].status {
        ScanStatus::Failed(why) => assert!(why.contains("no model"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(harness.query_by_label("axial view of phantom_00").is_some());
}
