//! The viewer driven through egui_kittest with the real app state: open two scans, click a
//! landmark on one, find its match on the other and jump there; image snapshots of the views
//! with the APE overlay. Rendering needs a wgpu adapter: Mesa's lavapipe is enough (CI installs
//! it); without any adapter the snapshot is skipped with a note.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use std::sync::Arc;
use std::time::Duration;

use ape::annotations::BoxOrigin;
use ape::cache::MapCache;
use ape::model::ApeModel;
use ape::model::backend::cpu;
use ape_app::viewer::ApeApp;
use ape_app::viewer::state::ScanStatus;
use egui_kittest::kittest::Queryable;
use egui_kittest::{Harness, SnapshotError};

#[path = "common/viewer.rs"]
mod viewer_steps;

fn step_until(harness: &mut Harness<'_, ApeApp>, what: &str, done: impl Fn(&ApeApp) -> bool) {
    viewer_steps::step_until(harness, what, Duration::from_secs(300), done);
}

/// The app with two demo phantoms opened and embedded by the bundled model (CPU), its folder and
/// map cache (kept alive by the caller).
fn two_embedded_phantoms() -> (
    Harness<'static, ApeApp>,
    tempfile::TempDir,
    tempfile::TempDir,
) {
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
    harness.state_mut().open(scans);
    step_until(&mut harness, "both scans to be embedded", |app| {
        app.state
            .cohort
            .iter()
            .all(|s| matches!(s.status, ScanStatus::Ready | ScanStatus::Failed(_)))
    });
    (harness, dir, cache)
}

#[test]
fn a_clicked_landmark_is_found_on_the_other_scan_and_one_click_jumps_there() {
    let (mut harness, _dir, _cache) = two_embedded_phantoms();
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
    // Consensus matches at once, then the image's refinement from a thread.
    assert!(
        harness.state().state.landmark.is_some(),
        "the click made a landmark before refinement"
    );
    step_until(&mut harness, "the matches to be refined", |app| {
        !app.state.refining()
    });
    let app = harness.state();
    let landmark = app
        .state
        .landmark
        .clone()
        .expect("the click made a landmark");
    assert_eq!(landmark.source, 0);
    assert!((app.state.crosshair - landmark.world).length() < 1e-9);
    let matched = landmark.matches[1].expect("a match on the second scan");
    assert!(matched.confidence.embedding_distance.is_finite());
    assert_eq!(matched.mode, ape::transfer::TransferMode::Refined);
    // Phantoms differ only a little: the match is consistent, not doubtful.
    assert!(!matched.confidence.doubtful(), "{:?}", matched.confidence);
    // The match lies inside the second scan.
    let second = app.state.cohort[1].scan.as_ref().unwrap();
    assert!(second.volume.world_bounds().contains(matched.world));

    // The matches list and the cohort strip offer the second scan; one click jumps there.
    harness.get_by_label_contains("phantom_01  ").click();
    harness.step();
    harness.step();
    let app = harness.state();
    assert_eq!(app.state.active, 1);
    assert!((app.state.crosshair - matched.world).length() < 1e-9);
    assert!(harness.query_by_label("axial view of phantom_01").is_some());

    snapshot(&mut harness, "viewer_match_on_second_scan");
}

#[test]
fn a_map_that_folds_along_s_i_is_flagged_in_the_sidebar_status_and_info_panel() {
    // The phantoms do not fold (ape embed checks them alike); the worker's event is sent as
    // it would be for a chest-abdomen scan whose map runs back over the heart.
    let (mut harness, _dir, _cache) = two_embedded_phantoms();
    for s in &harness.state().state.cohort {
        assert!(s.si_fault.is_none(), "{}: {:?}", s.name, s.si_fault);
    }
    let fold = ape::SuperiorFold {
        z_range_mm: [-199.0, -52.0],
        trough_z_mm: -125.0,
        same_level_z_mm: -278.0,
        drop_units: 0.5,
        depth_mm: 79.0,
        slope_per_mm: 0.0025,
    };
    harness
        .state_mut()
        .state
        .si_fault_found(1, ape::SiFault::Fold(fold));
    harness.state_mut().state.activate(1);
    harness.step();
    harness.step();
    let app = harness.state();
    assert!(
        app.state.message.contains("phantom_01 folded along S–I"),
        "{}",
        app.state.message
    );
    // The sidebar's entry and the info panel of the active scan both say it, with heights.
    assert!(harness.query_by_label("S–I fold z -199…-52 mm").is_some());
    assert!(
        harness
            .query_by_label_contains(
                "warning: the APE map folded along S–I: from z = -199 to -52 mm"
            )
            .is_some()
    );
    // The other scan stays unflagged.
    assert!(harness.state().state.cohort[0].si_fault.is_none());
    snapshot(&mut harness, "viewer_fold_warning");
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

/// Compares the window with its image in tests/snapshots/; skipped, with a note, where no wgpu
/// adapter can render it.
fn snapshot(harness: &mut Harness<'_, ApeApp>, name: &str) {
    // The images live in the top-level tests/snapshots, whichever package runs the test.
    // Up to 500 of the window's 1.1 M pixels may differ: the same code drew the accepted-box
    // picture with 227 pixels of the sagittal view a shade apart in two sittings of one session
    // (cause not found; training/README.md, Session 16). A real change of the picture moves
    // far more (a new model: 260,000).
    let options = egui_kittest::SnapshotOptions::new()
        .output_path(common::repository().join("tests/snapshots"))
        .max_failed_pixels(500);
    match harness.try_snapshot_options(name, &options) {
        Ok(()) => {}
        Err(SnapshotError::RenderError { err }) => {
            eprintln!("SKIPPED snapshot {name}: no wgpu adapter to render with ({err})");
        }
        Err(e) => panic!("{e}"),
    }
}

/// A left drag from `a` to `b` through the harness's input, one frame per event.
fn drag(harness: &mut Harness<'_, ApeApp>, a: egui::Pos2, b: egui::Pos2) {
    let press = |pos, pressed| egui::Event::PointerButton {
        pos,
        button: egui::PointerButton::Primary,
        pressed,
        modifiers: egui::Modifiers::default(),
    };
    let nudge = a + (b - a) * 0.25;
    for event in [
        egui::Event::PointerMoved(a),
        press(a, true),
        egui::Event::PointerMoved(nudge),
        egui::Event::PointerMoved(b),
        press(b, false),
    ] {
        harness.input_mut().events.push(event);
        harness.step();
    }
}

#[test]
fn a_box_is_resized_by_its_edge_and_moved_from_inside() {
    let (mut harness, _dir, _cache) = two_embedded_phantoms();
    harness
        .get_by_label("left drag draws the organ's box")
        .click();
    harness.step();
    let rect = harness.get_by_label("axial view of phantom_00").rect();
    let (a, b) = (
        rect.center() - egui::vec2(60.0, 40.0),
        rect.center() + egui::vec2(50.0, 30.0),
    );
    drag(&mut harness, a, b);
    let boxed = |h: &Harness<'_, ApeApp>| {
        h.state()
            .state
            .boxes
            .get("phantom_00", "liver")
            .unwrap()
            .bbox
    };
    let drawn = boxed(&harness);

    // The right edge (screen) dragged 30 points further right: that face alone moves, by
    // 30/110 of the drawn width; the view's right is the patient's left (−x).
    drag(
        &mut harness,
        egui::pos2(b.x, rect.center().y - 5.0),
        egui::pos2(b.x + 30.0, rect.center().y),
    );
    let grown = boxed(&harness);
    assert!(
        (grown.max.x - drawn.max.x).abs() < 1e-9,
        "{drawn} → {grown}"
    );
    let expected = drawn.size().x * 30.0 / 110.0;
    assert!(
        ((drawn.min.x - grown.min.x) - expected).abs() < 0.1 * expected,
        "{drawn} → {grown}"
    );
    assert_eq!(
        (grown.min.y, grown.max.y, grown.min.z, grown.max.z),
        (drawn.min.y, drawn.max.y, drawn.min.z, drawn.max.z)
    );
    assert_eq!(
        harness
            .state()
            .state
            .boxes
            .get("phantom_00", "liver")
            .unwrap()
            .origin,
        BoxOrigin::Drawn
    );

    // Dragged from inside: the box moves, its size stays.
    let inside = rect.center();
    drag(&mut harness, inside, inside + egui::vec2(0.0, 20.0));
    let moved = boxed(&harness);
    assert!(
        (moved.size() - grown.size()).length() < 1e-6,
        "{grown} → {moved}"
    );
    assert!(
        moved.min.y < grown.min.y - 1.0,
        "down on screen is posterior: {grown} → {moved}"
    );

    // Each edit is one undo step.
    assert!(harness.state_mut().state.undo());
    assert_eq!(boxed(&harness), grown);
    assert!(harness.state_mut().state.undo());
    assert_eq!(boxed(&harness), drawn);
}

#[test]
fn a_drawn_box_is_predicted_on_the_other_scan_exported_and_reimported() {
    let (mut harness, dir, _cache) = two_embedded_phantoms();

    // Turn on box drawing, then drag a rectangle on the axial view of the first scan.
    harness
        .get_by_label("left drag draws the organ's box")
        .click();
    harness.step();
    assert!(harness.state().state.draw_boxes);
    let rect = harness.get_by_label("axial view of phantom_00").rect();
    let (a, b) = (
        rect.center() - egui::vec2(60.0, 40.0),
        rect.center() + egui::vec2(50.0, 30.0),
    );
    drag(&mut harness, a, b);
    let drawn = harness
        .state()
        .state
        .boxes
        .get("phantom_00", "liver")
        .cloned()
        .expect("a drawn liver box");
    assert_eq!(drawn.origin, BoxOrigin::Drawn);
    // 110 × 70 screen points at the view's scale; 50 mm along S–I by default.
    let size = drawn.bbox.size();
    assert!(
        size.x > 20.0 && size.y > 10.0 && (size.z - 50.0).abs() < 1e-9,
        "{size}"
    );

    harness.get_by_label("Predict on the other scans").click();
    harness.step();
    let predicted = harness
        .state()
        .state
        .boxes
        .get("phantom_01", "liver")
        .cloned()
        .expect("a predicted box on the second scan");
    assert!(matches!(
        predicted.origin,
        BoxOrigin::Predicted { supports: 1, .. }
    ));
    harness.get_by_label("accept").scroll_to_me();
    harness.step();
    harness.get_by_label("accept").click();
    harness.step();
    assert_eq!(
        harness
            .state()
            .state
            .boxes
            .get("phantom_01", "liver")
            .unwrap()
            .origin,
        BoxOrigin::Accepted
    );

    // The drawn box on the first scan's views, the accepted one on the second's.
    harness.state_mut().state.activate(1);
    harness.step();
    snapshot(&mut harness, "viewer_accepted_box");

    // Export for 3D Slicer, undo everything, re-import: the same boxes.
    let file = dir.path().join("boxes.mrk.json");
    harness.state().state.boxes.save(&file).unwrap();
    let before = harness.state().state.boxes.clone();
    harness.state_mut().state.boxes = Default::default();
    harness.state_mut().load_boxes(&file);
    let after = &harness.state().state.boxes;
    for (x, y) in before.boxes.iter().zip(&after.boxes) {
        assert_eq!((&x.scan, &x.organ), (&y.scan, &y.organ));
        assert!(
            (x.bbox.min - y.bbox.min).length() < 1e-9 && (x.bbox.max - y.bbox.max).length() < 1e-9
        );
    }
    // Undo goes back to the empty set the import replaced, redo brings the boxes back.
    harness.get_by_label("Undo").scroll_to_me();
    harness.step();
    harness.get_by_label("Undo").click();
    harness.step();
    assert!(harness.state().state.boxes.boxes.is_empty());
    harness.get_by_label("Redo").scroll_to_me();
    harness.step();
    harness.get_by_label("Redo").click();
    harness.step();
    assert_eq!(harness.state().state.boxes.boxes.len(), 2);
}

#[test]
fn the_cohort_is_plotted_in_ape_space_with_organ_centres_from_the_label_maps() {
    let (mut harness, _dir, _cache) = two_embedded_phantoms();
    // The label maps beside the phantoms were read: organ centres in world mm.
    step_until(&mut harness, "organ centres", |app| {
        app.state.cohort.iter().all(|s| !s.organs.is_empty())
    });
    let organs: Vec<&str> = harness.state().state.cohort[0]
        .organs
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        organs.contains(&"liver") && organs.contains(&"spleen"),
        "{organs:?}"
    );
    // A landmark, then the plot.
    harness.get_by_label("axial view of phantom_00").click();
    harness.step();
    step_until(&mut harness, "the matches to be refined", |app| {
        !app.state.refining()
    });
    harness.get_by_label("APE space").click();
    harness.step();
    harness.step();
    assert!(
        harness
            .query_by_label("APE channel 0 against channel 2")
            .is_some()
    );
    let points = ape_app::viewer::embedding_plot::plot_points(&harness.state().state);
    // Every organ of both scans, plus the landmark on each.
    let n_organs: usize = harness
        .state()
        .state
        .cohort
        .iter()
        .map(|s| s.organs.len())
        .sum();
    assert_eq!(points.len(), n_organs + 2);
    snapshot(&mut harness, "viewer_ape_space");
}

#[test]
fn a_dicom_folder_with_two_series_asks_which_to_open() {
    let Some(data) = common::shared_data("a_dicom_folder_with_two_series_asks_which_to_open")
    else {
        return;
    };
    // Four IRCAD slices, one of them moved to a second series.
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("study");
    std::fs::create_dir(&study).unwrap();
    for i in 0..4 {
        let name = format!("image_{i}");
        std::fs::copy(data.join("ircad_17/dicom").join(&name), study.join(&name)).unwrap();
    }
    let path = study.join("image_0");
    let mut obj = dicom_object::open_file(&path).unwrap();
    obj.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::SERIES_INSTANCE_UID,
        dicom_core::VR::UI,
        dicom_core::PrimitiveValue::from("1.2.3.4"),
    ));
    obj.write_to_file(&path).unwrap();

    let mut harness = Harness::builder()
        .with_size(egui::vec2(1280.0, 860.0))
        .build_eframe(|cc| ApeApp::new(&cc.egui_ctx, None, cpu().device, None, "test".into()));
    harness.state_mut().open_folder(&study);
    for _ in 0..3 {
        harness.step(); // a new window is sized on its first frame, shown on the next
    }
    // Nothing opened yet: the chooser lists both series.
    assert!(harness.state().state.cohort.is_empty());
    assert!(harness.query_by_label_contains("holds 2 series").is_some());
    assert!(harness.query_by_label("1.2.3.4").is_some());
    // "Open" on the row of the three-slice series (rows in the order of `list_series`).
    let row = ape::io::dicom::list_series(&study)
        .unwrap()
        .iter()
        .position(|s| s.slices == 3)
        .unwrap();
    let opens: Vec<_> = harness.get_all_by_label("Open").collect();
    assert_eq!(opens.len(), 2);
    opens[row].click();
    harness.step();
    step_until(&mut harness, "the series to be read", |app| {
        app.state.cohort.len() == 1 && app.state.cohort[0].scan.is_some()
    });
    let app = harness.state();
    assert!(
        app.state.cohort[0].name.starts_with("study · …"),
        "{}",
        app.state.cohort[0].name
    );
    assert_eq!(
        app.state.cohort[0].scan.as_ref().unwrap().volume.shape(),
        [512, 512, 3]
    );
    assert!(
        harness.query_by_label_contains("holds 2 series").is_none(),
        "the chooser closed"
    );
}

/// The GPU path (shaders/slice.wgsl in egui's render pass, lavapipe here) draws the three views
/// as the CPU path does: the same app state rendered both ways, compared pixel by pixel inside
/// each view (the views' markers and letters are drawn on top the same way in both).
#[test]
fn gpu_slicing_draws_what_the_cpu_draws() {
    let dir = tempfile::tempdir().unwrap();
    let scans = ape::phantom::write_demo_cohort(dir.path(), 1).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let model = Arc::new(ApeModel::bundled(&cpu().device).unwrap());
    let cache_dir = cache.path().to_owned();
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1280.0, 860.0))
        .wgpu()
        .build_eframe(move |cc| {
            ApeApp::new(
                &cc.egui_ctx,
                Some(model),
                cpu().device,
                Some(MapCache::new(cache_dir)),
                "test".into(),
            )
            .with_gpu(cc.wgpu_render_state.as_ref())
        });
    if !harness.state().state.gpu_available {
        eprintln!("SKIPPED: no wgpu renderer for GPU slicing");
        return;
    }
    harness.state_mut().open(scans);
    step_until(&mut harness, "the scan to be embedded", |app| {
        matches!(app.state.cohort[0].status, ScanStatus::Ready)
    });
    for overlay in [
        ape_app::viewer::state::OverlaySettings {
            isolines: true,
            ..Default::default()
        },
        ape_app::viewer::state::OverlaySettings {
            mode: ape_app::viewer::state::OverlayMode::Channel(2),
            opacity: 0.6,
            ..Default::default()
        },
    ] {
        harness.state_mut().state.overlay = overlay;
        harness.state_mut().state.gpu_slicing = true;
        harness.step();
        let gpu = match harness.render() {
            Ok(image) => image,
            Err(e) => {
                eprintln!("SKIPPED: could not render ({e})");
                return;
            }
        };
        harness.state_mut().state.gpu_slicing = false;
        harness.step();
        let cpu_image = harness.render().unwrap();
        if let Some(debug) = std::env::var_os("APE_DEBUG_IMAGES") {
            let debug = std::path::PathBuf::from(debug);
            gpu.save(debug.join("gpu.png")).unwrap();
            cpu_image.save(debug.join("cpu.png")).unwrap();
        }
        for plane in ["axial", "coronal", "sagittal"] {
            let rect = harness
                .get_by_label(&format!("{plane} view of phantom_00"))
                .rect()
                .shrink(1.0);
            let (mut n, mut off, mut total) = (0u64, 0u64, 0u64);
            let (mut white_gpu, mut white_cpu) = (0u64, 0u64);
            for y in rect.min.y as u32..rect.max.y as u32 {
                for x in rect.min.x as u32..rect.max.x as u32 {
                    let (a, b) = (gpu.get_pixel(x, y), cpu_image.get_pixel(x, y));
                    let d = (0..3)
                        .map(|c| (a[c] as i32 - b[c] as i32).unsigned_abs())
                        .max()
                        .unwrap_or(0);
                    n += 1;
                    total += u64::from(d);
                    white_gpu += u64::from(a.0[..3].iter().all(|&v| v >= 250));
                    white_cpu += u64::from(b.0[..3].iter().all(|&v| v >= 250));
                    if d > 8 {
                        off += 1;
                    }
                }
            }
            let mean = total as f64 / n as f64;
            let share = off as f64 / n as f64;
            eprintln!(
                "{plane} ({overlay:?}): mean difference {mean:.2}, {:.2} % of pixels off by more than 8",
                share * 100.0
            );
            if overlay.isolines {
                // One-pixel lines where a level is crossed move by a pixel with the last bit of
                // an embedding: compare how much of the view they cover, not where exactly.
                let ratio = white_gpu as f64 / white_cpu.max(1) as f64;
                eprintln!("  iso-line pixels: GPU {white_gpu}, CPU {white_cpu}");
                assert!(
                    (0.85..1.18).contains(&ratio),
                    "{plane}: iso-line pixels {ratio}"
                );
            } else {
                assert!(
                    mean < 1.5 && share < 0.02,
                    "{plane}: mean {mean}, share off {share}"
                );
            }
        }
    }
}

#[test]
fn the_viewer_shows_what_is_odd_about_a_scan_and_never_saves_boxes_over_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut scans = ape::phantom::write_demo_cohort(dir.path(), 1).unwrap();
    // A volume with no air: not CT in HU.
    let affine = ape::Affine::from_spacing(glam::DVec3::splat(2.0), glam::DVec3::ZERO).unwrap();
    let odd = ape::Volume::from_fn([16, 16, 16], affine, |i, j, _| ((i * j) * 10) as i16).unwrap();
    let odd_path = dir.path().join("odd.nii.gz");
    ape::io::nifti::write_nifti(&odd_path, &odd).unwrap();
    scans.insert(0, odd_path.clone());
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1280.0, 860.0))
        .build_eframe(move |cc| {
            ApeApp::new(&cc.egui_ctx, None, cpu().device, None, "no model".into())
        });
    harness.state_mut().open(scans.clone());
    step_until(&mut harness, "the scans to be read", |app| {
        app.state.cohort.iter().all(|s| s.scan.is_some())
    });
    harness.state_mut().state.activate(0);
    harness.run_steps(3);
    assert!(
        harness.query_by_label_contains("not CT").is_some(),
        "the info panel shows the warning"
    );
    // Saving boxes onto a scan of the cohort (or its label map) is refused; the scan is intact.
    for target in [&scans[0], &scans[1]] {
        let before = std::fs::read(target).unwrap();
        let e = harness.state().state.save_boxes(target).unwrap_err();
        assert!(e.contains("refusing"), "{e}");
        assert_eq!(std::fs::read(target).unwrap(), before);
    }
    if let Some(labels) = ape::cohort::label_map_for(&scans[1]) {
        assert!(harness.state().state.save_boxes(&labels).is_err());
    }
    assert!(
        harness
            .state()
            .state
            .save_boxes(&dir.path().join("boxes.csv"))
            .is_ok()
    );
}
