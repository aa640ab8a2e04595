//! The evaluation protocol end to end on a cohort of phantoms written to disk, with hand-made
//! "APE maps" equal to each voxel's position relative to its phantom's body (a perfect model):
//! landmarks are found where they are, few-shot boxes match the true boxes, α reaches 0.99
//! recall on new scans, the report and JSON are written. And `ape eval` on real BTCV scans.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use std::path::Path;
use std::process::Command;

use ape::ape_map::ApeMap;
use ape::cohort::labelled_cases;
use ape::evaluation::report::{ReportContext, write_report};
use ape::evaluation::{EvalOptions, LabelledScan, evaluate};
use ape::io::nifti::write_nifti;
use ape::labels::{DatasetSidecar, LabelMap};
use ape::phantom::{labels_json, phantom};
use ape::scan::Scan;
use ape::{Affine, Volume};
use glam::DVec3;

/// Phantom `i`: where its body is centred and how large it is.
fn body_of(i: usize) -> (DVec3, f64) {
    let i = i as f64;
    (
        DVec3::new(10.0 * i - 25.0, 5.0 * i - 10.0, 8.0 * i - 20.0),
        0.9 + 0.04 * i,
    )
}

fn write_cohort(dir: &Path, n: usize) {
    let shape = [96, 72, 50];
    let spacing = DVec3::new(4.0, 4.0, 6.0);
    let origin = -spacing * DVec3::new(47.5, 35.5, 24.5);
    let affine = Affine::from_spacing(spacing, origin).unwrap();
    for i in 0..n {
        let (centre, scale) = body_of(i);
        let (scan, labels) = phantom(shape, affine, centre, scale).unwrap();
        write_nifti(
            dir.join(format!("case_{i:02}.nii.gz")),
            &scan.map(|v| *v as i16),
        )
        .unwrap();
        write_nifti(dir.join(format!("case_{i:02}_label.nii.gz")), &labels).unwrap();
    }
    std::fs::write(dir.join("labels.json"), labels_json()).unwrap();
}

/// A perfect model's map of phantom `i`: position relative to the body, in units of 100 mm
/// of the unscaled phantom, on an 8 × 8 × 12 mm grid over the scan.
fn perfect_map(scan: &Volume<f32>, i: usize) -> ApeMap {
    let (centre, scale) = body_of(i);
    let bounds = scan.world_bounds();
    let spacing = DVec3::new(8.0, 8.0, 12.0);
    let affine = Affine::from_spacing(spacing, bounds.min + spacing * 0.5).unwrap();
    let n = (bounds.size() / spacing).floor();
    let shape = [n.x as usize, n.y as usize, n.z as usize];
    let cells = Volume::from_fn(shape, affine, |a, b, c| {
        let w = affine.to_world(DVec3::new(a as f64, b as f64, c as f64));
        let p = (w - centre) / (scale * 100.0);
        [p.x as f32, p.y as f32, p.z as f32]
    })
    .unwrap();
    ApeMap::new(cells)
}

/// The cohort in `dir` read as evaluation scans with perfect maps.
fn perfect_scans(dir: &Path) -> Vec<LabelledScan> {
    scans_with_maps(dir, |i, scan| perfect_map(&scan.volume, i))
}

/// The cohort in `dir` read as evaluation scans, scan `i` with the map `map_of(i, scan)`.
fn scans_with_maps(dir: &Path, map_of: impl Fn(usize, &Scan) -> ApeMap) -> Vec<LabelledScan> {
    labelled_cases(dir)
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let scan = Scan::read(&case.scan).unwrap();
            let labels = LabelMap::read(&case.labels).unwrap();
            let map = map_of(i, &scan);
            LabelledScan::new(case.name.clone(), &scan, &labels, map, Some(0.0)).unwrap()
        })
        .collect()
}

/// `map` with its S–I channel folded as a chest scan's can be: rising to `start`, falling back
/// by `depth` (both in map units), then rising again at the same rate.
fn folded(map: &ApeMap, start: f32, depth: f32) -> ApeMap {
    let mut cells = map.cells().clone();
    for e in cells.data_mut() {
        let z = e[2];
        e[2] = if z <= start {
            z
        } else if z <= start + depth {
            start - (z - start)
        } else {
            z - 2.0 * depth
        };
    }
    ApeMap::new(cells)
}

#[test]
fn a_folded_map_is_undone_before_landmarks_are_searched_on_it() {
    let dir = tempfile::tempdir().unwrap();
    write_cohort(dir.path(), 3);
    let options = EvalOptions {
        shots: 1,
        held_out: Vec::new(),
        label_names: Default::default(),
        transfer: ape::transfer::TransferMode::Consensus,
        consensus: Default::default(),
        prior: None,
    };
    let perfect = evaluate(&perfect_scans(dir.path()), &options).unwrap();
    // Phantom 1's map folds 50 mm deep (0.5 units of 100 mm) a little above its body's centre,
    // which puts the organs above the fold where those below it belong.
    let scans = scans_with_maps(dir.path(), |i, scan| {
        let map = perfect_map(&scan.volume, i);
        if i != 1 {
            return map;
        }
        let map = folded(&map, 0.05, 0.5);
        assert!(matches!(
            ape::superior_fold(&map, scan),
            Some(ape::SiFault::Fold(_))
        ));
        map
    });
    // The fold is reported, and the map searched is undone.
    let cases = labelled_cases(dir.path()).unwrap();
    for (i, (case, loaded)) in cases.iter().zip(&scans).enumerate() {
        let scan = Scan::read(&case.scan).unwrap();
        assert_eq!(loaded.si_fault.is_some(), i == 1, "{}", case.name);
        assert_eq!(
            ape::superior_fold(&loaded.map, &scan),
            None,
            "{}",
            case.name
        );
    }
    let results = evaluate(&scans, &options).unwrap();
    let (a, b) = (&perfect.all.ape.mre_c, &results.all.ape.mre_c);
    assert_eq!(a.count, b.count);
    assert!(
        (a.mean - b.mean).abs() < 0.5,
        "perfect {a}, folded and undone {b}"
    );
    assert!(results.scans[1].si_fault.is_some());
}

#[test]
fn a_perfect_map_finds_landmarks_and_boxes_and_reaches_the_recall() {
    let dir = tempfile::tempdir().unwrap();
    write_cohort(dir.path(), 7);
    let cases = labelled_cases(dir.path()).unwrap();
    assert_eq!(cases.len(), 7);
    let scans = perfect_scans(dir.path());
    let label_names = DatasetSidecar::find_for(&cases[0].labels)
        .unwrap()
        .unwrap()
        .labels;
    let options = EvalOptions {
        shots: 3,
        held_out: vec!["case_05".into(), "case_06".into()],
        label_names,
        // The maps' own accuracy: refinement by the image would measure the phantoms'
        // (scaled copies of one shape, which a shifted patch matches only roughly).
        transfer: ape::transfer::TransferMode::Consensus,
        consensus: Default::default(),
        prior: None,
    };
    let results = evaluate(&scans, &options).unwrap();

    // Two folds of three supports; case_06 is only ever a target.
    assert_eq!(results.folds.len(), 2);
    assert_eq!(results.folds[0], ["case_00", "case_01", "case_02"]);
    let ape = &results.all.ape;
    let base = &results.all.baseline;
    // 7 × 6 ordered pairs × 6 organs.
    assert_eq!(ape.mre_c.count, 7 * 6 * 6);
    assert_eq!(ape.mre_ep.count, 7 * 6 * 6 * 6);
    // Consensus retrieval on 8–12 mm cells of a perfect map: a few mm at most (voxels are 4–6 mm,
    // and a scaled phantom's edge voxels move by up to a voxel). The aorta and IVC run the
    // whole scan length, so their "centre" and S–I ends are the field of view's, not anatomy's:
    // only their in-plane errors are small.
    assert!(
        ape.mre_c.per_axis[0] < 1.5 && ape.mre_c.per_axis[1] < 1.5,
        "{}",
        ape.mre_c
    );
    for organ in &ape.organs {
        let whole = !matches!(organ.organ.as_str(), "aorta" | "inferior_vena_cava");
        if whole {
            assert!(
                organ.mre_c.mean < 3.0,
                "{}: MRE_c {}",
                organ.organ,
                organ.mre_c
            );
            assert!(
                organ.mre_ep.mean < 6.0,
                "{}: MRE_ep {}",
                organ.organ,
                organ.mre_ep
            );
        }
    }
    // The body box runs the whole scan in z, so the baseline misses the bodies' z shifts.
    assert!(base.mre_c.per_axis[2] > 5.0, "baseline {}", base.mre_c);
    assert!(ape.mre_c.mean < base.mre_c.mean);
    let iou = ape.iou.unwrap();
    assert!(iou > 0.75, "IoU {iou}");
    // α calibrated on supports carries to targets: every organ reaches 0.99 on most targets.
    for organ in &ape.organs {
        let alpha = organ.alpha.unwrap();
        assert!((0.8..1.6).contains(&alpha), "{}: α {alpha}", organ.organ);
        assert!(
            organ.recall.unwrap() > 0.97,
            "{}: {:?}",
            organ.organ,
            organ.recall
        );
        assert!(organ.vr99.unwrap() > 1.0);
    }
    // The held-out subset: landmark pairs within it (2 × 1 pairs × 6 organs), boxes on it.
    let held = results.held_out.as_ref().unwrap();
    assert_eq!(held.scans, ["case_05", "case_06"]);
    assert_eq!(held.ape.mre_c.count, 2 * 6);
    // Figure 3: every organ centre of every scan embedded.
    assert_eq!(results.centres_in_ape_space.len(), 7 * 6);

    let line = results.summary_line();
    assert!(
        line.starts_with("MRE_c=")
            && line.contains(" RL=")
            && line.contains(" SI=")
            && line.contains(" MRE_ep=")
            && line.contains(" IoU=")
            && line.contains(" VR99=")
            && line.contains(" baseline_MRE_c="),
        "{line}"
    );

    let out = tempfile::tempdir().unwrap();
    let context = ReportContext {
        data: "phantoms".into(),
        model: "perfect".into(),
        backend: "none".into(),
    };
    let md = write_report(out.path(), &results, &context).unwrap();
    let text = std::fs::read_to_string(md).unwrap();
    assert!(text.contains("| liver |"), "{text}");
    assert!(text.contains("Held out of training"));
    for png in ["iou.png", "radial_errors.png", "ape_space.png"] {
        let img = image_size(&out.path().join(png));
        assert!(img.0 > 400 && img.1 > 200, "{png}: {img:?}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    assert!(json["all"]["ape"]["mre_c"]["mean"].as_f64().unwrap() < base.mre_c.mean);
    // A perfect map rises along S–I: no scan is reported folded.
    for scan in json["scans"].as_array().unwrap() {
        assert!(scan["si_fault"].is_null(), "{scan}");
    }
    assert!(text.contains("| no fold |"), "{text}");
}

#[test]
fn too_few_scans_for_the_shots_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write_cohort(dir.path(), 2);
    let scans = perfect_scans(dir.path());
    let options = EvalOptions {
        shots: 5,
        held_out: Vec::new(),
        label_names: Default::default(),
        transfer: ape::transfer::TransferMode::DEFAULT,
        consensus: Default::default(),
        prior: None,
    };
    let err = evaluate(&scans, &options).unwrap_err().to_string();
    assert!(err.contains("at least 6"), "{err}");
}

/// Width and height from a PNG's IHDR chunk.
fn image_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn ape_eval_on_btcv_prints_the_summary_line_last() {
    let Some(data) = common::shared_data("ape_eval_on_btcv_prints_the_summary_line_last") else {
        return;
    };
    // Six scans (two of them held out of the bundled model's training), three shots: the
    // whole protocol in seconds.
    let cohort = tempfile::tempdir().unwrap();
    let btcv = data.join("btcv");
    for case in ["02", "03", "05", "07", "25", "26"] {
        for suffix in ["", "_label"] {
            let name = format!("btcv_{case}{suffix}.nii.gz");
            std::os::unix::fs::symlink(btcv.join(&name), cohort.path().join(&name)).unwrap();
        }
    }
    std::fs::copy(btcv.join("labels.json"), cohort.path().join("labels.json")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_ape"))
        .args([
            "eval",
            "--backend",
            "cpu",
            "--shots",
            "3",
            "--held-out",
            "btcv_25,btcv_26",
            "--transfer",
            "consensus,nearest",
        ])
        .arg("--data")
        .arg(cohort.path())
        .arg("--out")
        .arg(out.path())
        .env("APE_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let last = stdout.lines().last().unwrap();
    assert!(
        last.starts_with("MRE_c=") && last.contains("baseline_MRE_c="),
        "{stdout}"
    );
    // Both transfer modes in one table, and per organ, beside the body box.
    for expected in [
        "transfer modes",
        "consensus",
        "nearest",
        "per organ",
        "liver",
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
    assert!(
        stdout.contains("held out of training (btcv_25, btcv_26)"),
        "{stdout}"
    );
    for file in [
        "report.md",
        "results.json",
        "iou.png",
        "radial_errors.png",
        "ape_space.png",
        "error_vs_confidence.png",
    ] {
        assert!(out.path().join(file).is_file(), "{file} missing");
    }
    // The baseline figure does not depend on the model: on these six scans it is fixed.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    let base = json["all"]["baseline"]["mre_c"]["mean"].as_f64().unwrap();
    assert!((20.0..100.0).contains(&base), "baseline MRE_c {base}");
    // Every APE centre carries a confidence; the quarters by confidence and the interval are
    // reported.
    let ape = &json["all"]["ape"];
    assert_eq!(
        ape["centre_confidence"].as_array().unwrap().len(),
        ape["centre_errors"].as_array().unwrap().len()
    );
    assert_eq!(ape["error_by_confidence"].as_array().unwrap().len(), 4);
    let [lo, hi] = [0, 1].map(|i| ape["mre_c_interval"][i].as_f64().unwrap());
    let mean = ape["mre_c"]["mean"].as_f64().unwrap();
    assert!(lo <= mean && mean <= hi, "{lo} {mean} {hi}");
}

#[test]
fn ape_crop_writes_the_scan_inside_the_enlarged_box_voxel_for_voxel() {
    let dir = tempfile::tempdir().unwrap();
    write_cohort(dir.path(), 4);
    let target = dir.path().join("case_03.nii.gz");
    let out = dir.path().join("crop.nii.gz");
    let cache = tempfile::tempdir().unwrap();
    let crop = |organ: &str| {
        Command::new(env!("CARGO_BIN_EXE_ape"))
            .args(["crop", "--backend", "cpu", "--organ", organ])
            .arg(&target)
            .arg("--support")
            .arg(dir.path())
            .arg("-o")
            .arg(&out)
            .env("APE_CACHE_DIR", cache.path())
            .output()
            .unwrap()
    };
    // case_03 lies in the support folder: it must not serve as its own support.
    let run = crop("Liver");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("supports  3 (case_00, case_01, case_02)"),
        "{stdout}"
    );
    assert!(stdout.contains("calibrated"), "{stdout}");
    assert!(stdout.contains("volume ratio"), "{stdout}");

    let original = Scan::read(&target).unwrap();
    let cropped = Scan::read(&out).unwrap();
    let outer = original.volume.world_bounds();
    let inner = cropped.volume.world_bounds();
    assert!(
        inner.min.cmpge(outer.min - 1e-6).all() && inner.max.cmple(outer.max + 1e-6).all(),
        "{inner} outside {outer}"
    );
    let [nx, ny, nz] = cropped.volume.shape();
    for (i, j, k) in [
        (0, 0, 0),
        (nx - 1, ny / 2, nz / 3),
        (nx / 2, ny - 1, nz - 1),
    ] {
        let world = cropped.volume.voxel_to_world([i, j, k]);
        let v = original.volume.nearest_voxel(world).unwrap();
        let expected = original.volume.get(v[0], v[1], v[2]).unwrap();
        assert_eq!(*cropped.volume.get(i, j, k).unwrap(), expected.round());
    }

    // An organ the supports do not name is a clear error.
    let run = crop("brain");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("no organ named \"brain\""), "{stderr}");
}

/// The few-shot pipeline exists once: from the same supports (case_00..02 with their label
/// maps) and the same target (case_03), `ape crop`, the viewer's prediction and `ape eval`
/// give the same box.
#[test]
fn crop_viewer_and_eval_predict_the_same_box() {
    use ape::cache::{CacheUse, MapCache, embed_cached};
    use ape::labels::Organs;
    use ape::model::ApeModel;
    use ape::model::backend::cpu;
    use ape::retrieval::MapIndex;
    use ape_app::viewer::state::ViewerState;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    write_cohort(dir.path(), 4);
    let cache = tempfile::tempdir().unwrap();
    let ape = |args: &[&str]| common::run_ape(args, cache.path());
    let folder = dir.path().to_str().unwrap();
    let target = dir.path().join("case_03.nii.gz");
    let out = dir.path().join("crop.nii.gz");

    // ape crop: supports are the folder's other scans.
    let crop = ape(&[
        "crop",
        "--backend",
        "cpu",
        "--organ",
        "liver",
        "--support",
        folder,
        "-o",
        out.to_str().unwrap(),
        target.to_str().unwrap(),
    ]);
    let crop_box = crop
        .lines()
        .find_map(|l| l.strip_prefix("predicted "))
        .unwrap_or_else(|| panic!("no predicted box in {crop}"))
        .trim()
        .to_owned();

    // ape eval with 3 shots: one fold (case_00..02), case_03 its one target.
    let report = dir.path().join("report");
    ape(&[
        "eval",
        "--backend",
        "cpu",
        "--shots",
        "3",
        "--data",
        folder,
        "--out",
        report.to_str().unwrap(),
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("results.json")).unwrap())
            .unwrap();
    let liver = 6;
    let eval_box = json["predicted_boxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["target"] == "case_03" && b["label"] == liver)
        .expect("eval predicted no liver box on case_03");
    assert_eq!(
        eval_box["supports"],
        serde_json::json!(["case_00", "case_01", "case_02"])
    );
    let eval_box: ape::WorldBox = serde_json::from_value(eval_box["bbox"].clone()).unwrap();

    // The viewer: the three supports with their label maps, the target without one.
    let model = ApeModel::bundled(&cpu().device).unwrap();
    let map_cache = MapCache::new(cache.path());
    let mut state = ViewerState::default();
    for i in 0..4 {
        let path = dir.path().join(format!("case_{i:02}.nii.gz"));
        let id = state.add(path.clone());
        let scan = Arc::new(Scan::read(&path).unwrap());
        let map = embed_cached(
            CacheUse::ReadWrite(&map_cache),
            &model,
            &cpu().device,
            &path,
            &scan.volume,
            &mut |_| {},
        )
        .unwrap()
        .map;
        let index = Arc::new(MapIndex::build_in_body(&map, &scan));
        if i < 3 {
            let labels = dir.path().join(format!("case_{i:02}_label.nii.gz"));
            let labels = LabelMap::read_for_scan(&labels, &scan.volume, &path).unwrap();
            state.cohort[id].labelled = Some(Arc::new(Organs::of(&labels)));
        }
        let image = ape::refine::PatchImage::of_scan(&scan).ok().map(Arc::new);
        state.scan_loaded(id, scan);
        state.map_ready(id, Arc::new(map), index, image);
    }
    state.organ = "liver".to_owned();
    assert_eq!(state.predict_boxes(), 1, "{}", state.message);
    let viewer_box = state.boxes.get("case_03", "liver").unwrap().bbox;

    // results.json is printed and parsed as decimal text: equal to within rounding.
    let apart = (viewer_box.min - eval_box.min)
        .abs()
        .max_element()
        .max((viewer_box.max - eval_box.max).abs().max_element());
    assert!(apart < 1e-9, "viewer {viewer_box} and ape eval {eval_box}");
    assert_eq!(viewer_box.to_string(), crop_box, "viewer and ape crop");
}

/// `ape locate` carries points of a BTCV scan to another BTCV scan and to the IRCAD DICOM
/// series, through the cache, with a confidence; negative coordinates parse in both spellings;
/// a point below the IRCAD scan's field of view is flagged.
#[test]
fn ape_locate_finds_points_on_btcv_and_on_a_dicom_series() {
    let Some(data) = common::shared_data("ape_locate_finds_points_on_btcv_and_on_a_dicom_series")
    else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let btcv = data.join("btcv");
    let (from, other) = (btcv.join("btcv_02.nii.gz"), btcv.join("btcv_05.nii.gz"));
    let ircad = data.join("ircad_17").join("dicom");
    let points = cache.path().join("points.csv");
    std::fs::write(&points, "x,y,z,name\n-114.8,-231.9,477.5,liver centre\n").unwrap();
    let out = common::run_ape(
        &[
            "locate",
            "--backend",
            "cpu",
            "--json",
            "--from",
            from.to_str().unwrap(),
            "--at=-200,-200,10",
            "--points",
            points.to_str().unwrap(),
            other.to_str().unwrap(),
            ircad.to_str().unwrap(),
        ],
        cache.path(),
    );
    let located: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = located.as_array().unwrap();
    assert_eq!(rows.len(), 4, "two points on two targets");
    let row = |target: &str, name: Option<&str>| {
        rows.iter()
            .find(|r| {
                r["target"].as_str().unwrap().contains(target)
                    && r["point"]["name"].as_str() == name
            })
            .unwrap()
    };
    // The liver centre of btcv_02 lands near btcv_05's (-116.3, -204.9, 305.0).
    let liver = &row("btcv_05", Some("liver centre"))["found"];
    let w = &liver["world"];
    let found = DVec3::new(
        w[0].as_f64().unwrap(),
        w[1].as_f64().unwrap(),
        w[2].as_f64().unwrap(),
    );
    let error = (found - DVec3::new(-116.3, -204.9, 305.0)).length();
    assert!(error < 60.0, "liver centre {error:.1} mm off");
    assert_eq!(liver["confidence"]["outside_fov"], false);
    // The default mode, refined by the image patches.
    assert_eq!(liver["mode"], "refined", "{liver}");
    assert!(
        liver["confidence"]["image_ncc"].as_f64().is_some(),
        "{liver}"
    );
    // Low in the pelvis of btcv_02: below the IRCAD scan (an abdomen from the liver down).
    let pelvis = &row("dicom", None)["found"];
    assert_eq!(pelvis["confidence"]["outside_fov"], true, "{pelvis}");

    // The other spelling of a negative point, and the table.
    let table = common::run_ape(
        &[
            "locate",
            "--backend",
            "cpu",
            "--from",
            from.to_str().unwrap(),
            "--at",
            "-200,-200,10",
            ircad.to_str().unwrap(),
        ],
        cache.path(),
    );
    assert!(
        table.contains("outside this scan's field of view"),
        "{table}"
    );
}
