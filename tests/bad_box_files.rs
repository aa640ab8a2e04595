//! Hostile box files (JSON, CSV, 3D Slicer ROI markups): each is read, refused with an error
//! naming the file, the line or box, and the problem, or read with a warning; loading is
//! linear in the boxes; whatever ape writes reads back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ape::WorldBox;
use ape::annotations::{AnnotationError, BoxOrigin, BoxSet, MAX_FILE_BYTES, OrganBox};
use ape::validate::WarningKind;
use glam::DVec3;
use serde_json::{Value, json};

const HEADER: &str = "scan,organ,x_min,y_min,z_min,x_max,y_max,z_max,origin";

fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The error of loading `text` as `name`; it must name the file.
fn refused(name: &str, text: impl AsRef<[u8]>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, text);
    let e = BoxSet::load(&path)
        .map(|set| format!("{} boxes", set.boxes.len()))
        .expect_err("refused")
        .to_string();
    assert!(e.contains(name), "{e:?} does not name {name}");
    e
}

fn loaded(name: &str, text: impl AsRef<[u8]>) -> (BoxSet, Vec<ape::validate::InputWarning>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), name, text);
    let (set, warnings) = BoxSet::load_with_warnings(&path).unwrap();
    // `load` reads the same boxes.
    assert_eq!(BoxSet::load(&path).unwrap(), set);
    (set, warnings)
}

fn csv(rows: &[&str]) -> String {
    let mut text = format!("{HEADER}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text
}

fn world_box(min: [f64; 3], max: [f64; 3]) -> WorldBox {
    WorldBox {
        min: DVec3::from_array(min),
        max: DVec3::from_array(max),
    }
}

fn organ_box(scan: &str, organ: &str, min: [f64; 3], max: [f64; 3]) -> OrganBox {
    OrganBox {
        scan: scan.into(),
        organ: organ.into(),
        bbox: world_box(min, max),
        origin: BoxOrigin::Drawn,
    }
}

/// Markups of one ROI: a valid one (LPS, mm, centre (1, 2, 3), size (10, 20, 30)) with `edit`
/// applied; a `null` value removes the key.
fn roi(edit: Value) -> String {
    let mut m = json!({
        "type": "ROI",
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "name": "btcv_01 liver",
        "roiType": "Box",
        "center": [1.0, 2.0, 3.0],
        "size": [10.0, 20.0, 30.0],
        "orientation": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        "controlPoints": [{"id": "1", "label": "liver", "position": [1.0, 2.0, 3.0]}],
        "description": "btcv_01",
    });
    let object = m.as_object_mut().unwrap();
    for (key, value) in edit.as_object().unwrap() {
        if value.is_null() {
            object.remove(key);
        } else {
            object.insert(key.clone(), value.clone());
        }
    }
    json!({"@schema": "x", "markups": [m]}).to_string()
}

fn roi_box(edit: Value) -> (WorldBox, Vec<ape::validate::InputWarning>) {
    let (set, warnings) = loaded("boxes.mrk.json", roi(edit));
    assert_eq!(set.boxes.len(), 1);
    (set.boxes[0].bbox, warnings)
}

fn roi_refused(edit: Value) -> String {
    refused("boxes.mrk.json", roi(edit))
}

fn close(a: DVec3, b: DVec3) -> bool {
    (a - b).abs().max_element() < 1e-9
}

// --- 1. Loading is linear ---------------------------------------------------------------

/// `n` boxes with distinct (scan, organ), then `n / 10` that repeat earlier ones.
fn many_boxes(n: usize) -> BoxSet {
    let mut boxes: Vec<OrganBox> = (0..n)
        .map(|i| {
            let x = (i % 1000) as f64;
            organ_box(
                &format!("scan{}", i % 1000),
                &format!("organ{}", i / 1000),
                [x, 0.0, 0.0],
                [x + 1.0, 1.0, 1.0],
            )
        })
        .collect();
    for i in (0..n).step_by(10) {
        let mut again = boxes[i].clone();
        again.bbox.max.z = 2.0;
        boxes.push(again);
    }
    BoxSet { boxes }
}

fn timed_load(path: &Path) -> (BoxSet, Duration) {
    let start = Instant::now();
    let set = BoxSet::load(path).unwrap();
    (set, start.elapsed())
}

#[test]
fn two_hundred_thousand_boxes_load_in_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["csv", "json"] {
        let write_set = |n: usize| {
            let set = many_boxes(n);
            let text = if ext == "csv" {
                set.to_csv()
            } else {
                serde_json::to_string(&set).unwrap()
            };
            write(dir.path(), &format!("boxes{n}.{ext}"), text)
        };
        let (small, big) = (write_set(20_000), write_set(200_000));
        let t_small = (0..3).map(|_| timed_load(&small).1).min().unwrap();
        let (set, t_big) = timed_load(&big);
        // Linear: about 10×; the quadratic reader took 100× (minutes for 10⁵ boxes).
        assert!(
            t_big < t_small * 40 + Duration::from_secs(2),
            "{ext}: 200 000 boxes took {t_big:?}, 20 000 took {t_small:?}"
        );
        // The last box of each (scan, organ) wins, in the place of the first.
        assert_eq!(set.boxes.len(), 200_000, "{ext}");
        for i in [0, 10, 199_990] {
            assert_eq!(set.boxes[i].bbox.max.z, 2.0, "{ext} box {i}");
            assert_eq!(set.boxes[i + 1].bbox.max.z, 1.0, "{ext} box {}", i + 1);
        }
        assert_eq!(set.boxes[199_999].scan, "scan999");
        assert_eq!(set.boxes[199_999].organ, "organ199");
    }
}

#[test]
fn a_repeated_box_replaces_the_first_in_its_place_with_a_warning() {
    let (set, warnings) = loaded(
        "boxes.csv",
        csv(&[
            "s,a,0,0,0,1,1,1,drawn",
            "s,b,0,0,0,2,2,2,drawn",
            "s,a,0,0,0,3,3,3,drawn",
        ]),
    );
    assert_eq!(set.boxes.len(), 2);
    assert_eq!(
        (set.boxes[0].organ.as_str(), set.boxes[0].bbox.max.x),
        ("a", 3.0)
    );
    assert_eq!(set.boxes[1].organ, "b");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].message.contains("line 4"), "{warnings:?}");

    // JSON too (the JSON reader used to keep both).
    let json = BoxSet {
        boxes: vec![
            organ_box("s", "a", [0.0; 3], [1.0; 3]),
            organ_box("s", "b", [0.0; 3], [2.0; 3]),
            organ_box("s", "a", [0.0; 3], [3.0; 3]),
        ],
    };
    let (set, warnings) = loaded("boxes.json", serde_json::to_string(&json).unwrap());
    assert_eq!(set.boxes.len(), 2);
    assert_eq!(set.boxes[0].bbox.max.x, 3.0);
    assert!(warnings[0].message.contains("boxes[2]"), "{warnings:?}");
}

// --- 2. Absurd coordinates, min above max ----------------------------------------------

#[test]
fn csv_absurd_coordinates_are_refused_with_their_line() {
    for (value, problem) in [
        ("1e308", "beyond"),
        ("-1e7", "beyond"),
        ("1000000.5", "beyond"),
        ("inf", "not a finite number"),
        ("-infinity", "not a finite number"),
        ("NaN", "not a number"),
        ("abc", "not a number"),
        ("", "not a number"),
    ] {
        let text = csv(&[
            "s,liver,0,0,0,1,1,1,drawn",
            "",
            &format!("s,spleen,0,{value},0,1,1,1,drawn"),
        ]);
        let e = refused("boxes.csv", text);
        assert!(
            e.contains("line 4: y_min") && e.contains(problem),
            "{value}: {e}"
        );
    }
    // The bound itself is a box.
    let (set, _) = loaded(
        "boxes.csv",
        csv(&["s,liver,-1e6,-1000000,0,1e6,1000000,1e-300,drawn"]),
    );
    assert_eq!(set.boxes[0].bbox.min.x, -1e6);
}

#[test]
fn csv_min_above_max_is_refused_not_swapped() {
    let e = refused(
        "boxes.csv",
        csv(&["s,liver,0,0,0,1,1,1,drawn", "s,kidney,10,0,0,5,1,1,drawn"]),
    );
    assert!(e.contains("line 3: x_min 10 above x_max 5"), "{e}");
    let e = refused("boxes.csv", csv(&["s,liver,0,0,7,1,1,-7,drawn"]));
    assert!(e.contains("line 2: z_min 7 above z_max -7"), "{e}");
    // A flat box (min = max) is a box.
    let (set, _) = loaded("boxes.csv", csv(&["s,liver,1,1,1,1,1,1,drawn"]));
    assert_eq!(set.boxes[0].bbox.size(), DVec3::ZERO);
}

fn json_box(min: Value, max: Value, origin: Value) -> String {
    json!({"boxes": [
        {"scan": "s", "organ": "liver", "bbox": {"min": [0, 0, 0], "max": [1, 1, 1]}, "origin": {"kind": "drawn"}},
        {"scan": "s", "organ": "kidney", "bbox": {"min": min, "max": max}, "origin": origin},
    ]})
    .to_string()
}

#[test]
fn json_boxes_are_checked_after_reading() {
    let drawn = json!({"kind": "drawn"});
    let cases = [
        (
            json_box(json!([10, 0, 0]), json!([5, 1, 1]), drawn.clone()),
            "x_min 10 above x_max 5",
        ),
        (
            json_box(json!([0, 0, 0]), json!([1, 1e308, 1]), drawn.clone()),
            "y_max 1e308 mm is beyond",
        ),
        (
            json_box(json!([-2e6, 0, 0]), json!([1, 1, 1]), drawn.clone()),
            "x_min -2000000 mm is beyond",
        ),
        (
            json_box(
                json!([0, 0, 0]),
                json!([1, 1, 1]),
                json!({"kind": "predicted", "supports": 3, "alpha": -1.0}),
            ),
            "alpha -1",
        ),
        (
            json_box(
                json!([0, 0, 0]),
                json!([1, 1, 1]),
                json!({"kind": "predicted", "supports": 3, "alpha": 1e9}),
            ),
            "alpha 1000000000",
        ),
    ];
    for (text, problem) in cases {
        let e = refused("boxes.json", text);
        assert!(
            e.contains("boxes[1] (\"s kidney\")") && e.contains(problem),
            "{e}"
        );
    }
    // Numbers beyond f64 and non-numbers are serde's errors, with line and column.
    let e = refused(
        "boxes.json",
        json_box(json!([0, 0, 0]), json!([1, 1, 1]), drawn).replace("[1,1,1]", "[1,1e400,1]"),
    );
    assert!(e.contains("line 1"), "{e}");
    let e = refused(
        "boxes.json",
        r#"{"boxes": [{"scan": "s", "organ": "o", "bbox": {"min": [0, "x", 0], "max": [1, 1, 1]}, "origin": {"kind": "drawn"}}]}"#,
    );
    assert!(e.contains("column"), "{e}");
}

#[test]
fn slicer_absurd_and_negative_sizes_are_refused() {
    let e = roi_refused(json!({"size": [-10.0, 20.0, 30.0]}));
    assert!(
        e.contains("markups[0] (\"btcv_01 liver\")") && e.contains("size x -10 is negative"),
        "{e}"
    );
    let e = roi_refused(json!({"size": [10.0, 1e308, 30.0]}));
    assert!(e.contains("size y 1e308 mm is beyond"), "{e}");
    let e = roi_refused(json!({"center": [1e308, 0.0, 0.0]}));
    assert!(e.contains("center x 1e308 mm is beyond"), "{e}");
    // A centre and size within bounds whose box is not.
    let e = roi_refused(json!({"center": [0.0, 0.0, 9e5], "size": [1.0, 1.0, 1e6]}));
    assert!(e.contains("z_max") && e.contains("beyond"), "{e}");
    // A size of zero is a (flat) box.
    let (b, _) = roi_box(json!({"size": [0.0, 20.0, 30.0]}));
    assert_eq!(b.size().x, 0.0);
}

// --- 3. Slicer markups: coordinate systems, units, orientation, numbers ------------------

#[test]
fn slicer_coordinate_systems_are_lps_ras_or_refused() {
    // LPS (1, 2, 3) is RAS (-1, -2, 3); missing means LPS, as in Slicer's schema.
    let lps = roi_box(json!({})).0;
    assert!(close(lps.centre(), DVec3::new(-1.0, -2.0, 3.0)), "{lps}");
    assert_eq!(roi_box(json!({"coordinateSystem": null})).0, lps);
    let ras = roi_box(json!({"coordinateSystem": "RAS"})).0;
    assert!(close(ras.centre(), DVec3::new(1.0, 2.0, 3.0)), "{ras}");
    assert!(close(ras.size(), DVec3::new(10.0, 20.0, 30.0)));
    for bad in [json!("IJK"), json!("XYZ"), json!(1), json!(["LPS"])] {
        let e = roi_refused(json!({ "coordinateSystem": bad }));
        assert!(
            e.contains("coordinateSystem") && e.contains(&bad.to_string()),
            "{e}"
        );
    }
}

#[test]
fn slicer_micrometres_are_converted_and_other_units_refused() {
    let mm = roi_box(json!({})).0;
    assert_eq!(roi_box(json!({"coordinateUnits": null})).0, mm);
    assert_eq!(
        roi_box(json!({"coordinateUnits": ["mm", "UCUM", "millimeter"]})).0,
        mm
    );
    for um in [json!("um"), json!(["um", "UCUM", "micrometer"])] {
        let b = roi_box(json!({
            "coordinateUnits": um,
            "center": [1000.0, 2000.0, 3000.0],
            "size": [10000.0, 20000.0, 30000.0],
        }))
        .0;
        assert!(close(b.min, mm.min) && close(b.max, mm.max), "{b} vs {mm}");
    }
    for bad in [
        json!("m"),
        json!("cm"),
        json!("inch"),
        json!(["mm", "DCM", "millimeter"]),
        json!(5),
    ] {
        let e = roi_refused(json!({ "coordinateUnits": bad }));
        assert!(e.contains("coordinateUnits"), "{e}");
    }
    let e = roi_refused(json!({"coordinateUnits": "m"}));
    assert!(e.contains("\"m\" is not mm or um"), "{e}");
}

#[test]
fn a_rotated_roi_is_the_box_enclosing_it_with_a_warning() {
    let (c, s) = (
        std::f64::consts::FRAC_1_SQRT_2,
        std::f64::consts::FRAC_1_SQRT_2,
    );
    let (b, warnings) = roi_box(json!({
        "coordinateSystem": "RAS",
        "center": [0.0, 0.0, 0.0],
        "orientation": [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0],
    }));
    let half = 30.0 * std::f64::consts::FRAC_1_SQRT_2 / 2.0;
    assert!(close(b.max, DVec3::new(half, half, 15.0)), "{b}");
    assert!(close(b.min, -b.max), "{b}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].kind, WarningKind::BoxApproximated);
    assert!(
        warnings[0].source.contains("boxes.mrk.json"),
        "{warnings:?}"
    );
    assert!(warnings[0].message.contains("markups[0]"), "{warnings:?}");
}

#[test]
fn an_roi_along_permuted_axes_is_read_exactly_row_by_row() {
    // Row by row, as Slicer writes it: the ROI's x axis (column 0) is world y, its y axis world
    // z, its z axis world x; sizes (10, 20, 30) span world (30, 10, 20).
    let (b, warnings) = roi_box(json!({
        "coordinateSystem": "RAS",
        "center": [0.0, 0.0, 0.0],
        "orientation": [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    }));
    assert!(close(b.size(), DVec3::new(30.0, 10.0, 20.0)), "{b}");
    assert!(warnings.is_empty(), "{warnings:?}");
    // Slicer writes an RAS-aligned ROI in LPS with the x and y axes negated: not rotated.
    let (b, warnings) =
        roi_box(json!({"orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]}));
    assert_eq!(b, roi_box(json!({})).0);
    assert!(warnings.is_empty(), "{warnings:?}");
    // Missing means the identity.
    assert_eq!(roi_box(json!({"orientation": null})).0, b);
}

#[test]
fn an_orientation_that_is_not_nine_numbers_of_a_rotation_is_refused() {
    for bad in [
        json!([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
        json!([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        json!([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, "1"]),
        json!([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, null]),
        json!("identity"),
    ] {
        let e = roi_refused(json!({ "orientation": bad }));
        assert!(
            e.contains("orientation") && e.contains("is not 9 numbers"),
            "{e}"
        );
    }
    for bad in [
        json!([2.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 2.0]),
        json!([1.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
        json!([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        json!([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]),
    ] {
        let e = roi_refused(json!({ "orientation": bad }));
        assert!(e.contains("is not a rotation"), "{e}");
    }
    // Within 1e-3 of orthonormal (Slicer writes float-rounded matrices).
    roi_box(json!({"orientation": [1.0, 2e-4, 0.0, -2e-4, 1.0, 0.0, 0.0, 0.0, 1.0]}));
}

#[test]
fn a_centre_or_size_with_a_non_number_is_refused() {
    for (key, bad) in [
        ("center", json!([1, "x", 3])),
        ("center", json!([1, null, 3])),
        ("center", json!([1, 2])),
        ("center", json!([1, 2, 3, 4])),
        ("center", json!("1 2 3")),
        ("size", json!([10, [20], 30])),
        ("size", json!({"x": 1})),
    ] {
        let e = roi_refused(json!({ key: bad }));
        assert!(
            e.contains(&format!("{key} ")) && e.contains("is not 3 numbers"),
            "{key} {bad}: {e}"
        );
    }
    let e = roi_refused(json!({"center": null}));
    assert!(e.contains("no center"), "{e}");
    let e = roi_refused(json!({"size": null}));
    assert!(e.contains("no size"), "{e}");
}

#[test]
fn slicer_files_without_our_fields_still_name_their_boxes() {
    // Slicer's own ROIs have no control points and no description: the name is the organ.
    let (set, _) = loaded(
        "boxes.mrk.json",
        roi(json!({"controlPoints": null, "description": null, "name": "spleen"})),
    );
    assert_eq!(
        (set.boxes[0].scan.as_str(), set.boxes[0].organ.as_str()),
        ("", "spleen")
    );
    // Markups that are not ROIs are skipped, with a warning naming their kind.
    let mut doc: Value = serde_json::from_str(&roi(json!({}))).unwrap();
    doc["markups"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"type": "Fiducial", "controlPoints": []}));
    let (set, warnings) = loaded("boxes.mrk.json", doc.to_string());
    assert_eq!(set.boxes.len(), 1);
    assert!(
        warnings
            .iter()
            .any(|w| w.kind == WarningKind::Other && w.message.contains("Fiducial")),
        "{warnings:?}"
    );
    // Not markups at all.
    for bad in [
        "[]",
        "{}",
        r#"{"markups": 5}"#,
        r#"{"markups": [5]}"#,
        "5",
        "",
    ] {
        refused("boxes.mrk.json", bad);
    }
}

// --- 4. Warnings --------------------------------------------------------------------------

#[test]
fn load_with_warnings_names_the_file_and_load_drops_them() {
    let rotated = roi(json!({"orientation": [0.6, -0.8, 0.0, 0.8, 0.6, 0.0, 0.0, 0.0, 1.0]}));
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "rotated.mrk.json", &rotated);
    let (set, warnings) = BoxSet::load_with_warnings(&path).unwrap();
    assert_eq!(BoxSet::load(&path).unwrap(), set);
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].kind, WarningKind::BoxApproximated);
    assert!(
        warnings[0]
            .to_string()
            .starts_with(&path.display().to_string()),
        "{}",
        warnings[0]
    );
    // An ordinary file has none.
    let path = write(dir.path(), "plain.mrk.json", roi(json!({})));
    assert!(BoxSet::load_with_warnings(&path).unwrap().1.is_empty());
}

// --- 5. CSV from a spreadsheet -----------------------------------------------------------

#[test]
fn a_spreadsheet_csv_reads() {
    let text = "\u{feff}scan,organ,x_min,y_min,z_min,x_max,y_max,z_max,origin\r\n\
                \"btcv 01\",\"liver, left lobe\",\"-1.5\",-2,-3,4,5,6,\"Drawn\"\r\n\
                ,,,,,,,,\r\n\
                \r\n\
                btcv_02 , \"spleen \" ,1,2,3,4,5,6,accepted\r\n\
                \"say \"\"hi\"\"\",\"two\r\nlines\",1,2,3,4,5,6,predicted\r\n";
    let (set, warnings) = loaded("boxes.csv", text);
    assert!(warnings.is_empty(), "{warnings:?}");
    let names: Vec<(&str, &str)> = set
        .boxes
        .iter()
        .map(|b| (b.scan.as_str(), b.organ.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("btcv 01", "liver, left lobe"),
            ("btcv_02", "spleen "),
            ("say \"hi\"", "two\r\nlines")
        ]
    );
    assert_eq!(
        set.boxes[0].bbox,
        world_box([-1.5, -2.0, -3.0], [4.0, 5.0, 6.0])
    );
    assert_eq!(set.boxes[0].origin, BoxOrigin::Drawn);
    // Old Mac line ends (a lone CR) and no line end at the end of the file.
    let (set, _) = loaded(
        "boxes.csv",
        format!("{HEADER}\rs,a,0,0,0,1,1,1,drawn\rs,b,0,0,0,1,1,1,drawn"),
    );
    assert_eq!(set.boxes.len(), 2);
}

#[test]
fn csv_columns_are_found_by_name() {
    let text = "organ,scan,origin,x_max,y_max,z_max,x_min,y_min,z_min\nliver,s,drawn,4,5,6,1,2,3\n";
    let (set, _) = loaded("boxes.csv", text);
    assert_eq!(
        set.boxes[0].bbox,
        world_box([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    );
    assert_eq!(
        (set.boxes[0].scan.as_str(), set.boxes[0].organ.as_str()),
        ("s", "liver")
    );
    // Upper case and spaces in the header are fine too.
    let (set, _) = loaded(
        "boxes.csv",
        format!(
            "{}\ns,liver,1,2,3,4,5,6,drawn\n",
            HEADER.to_uppercase().replace(',', ", ")
        ),
    );
    assert_eq!(set.boxes.len(), 1);
}

#[test]
fn a_csv_needs_its_header() {
    for (text, problem) in [
        ("".to_owned(), "empty"),
        ("\u{feff}".to_owned(), "empty"),
        (
            "s,liver,1,2,3,4,5,6,drawn\n".to_owned(),
            "unknown column \"s\"",
        ),
        (
            "scan,organ,x_min,y_min,z_min,x_max,y_max,z_max\n".to_owned(),
            "no column \"origin\"",
        ),
        (format!("{HEADER},notes\n"), "unknown column \"notes\""),
        (
            "scan,organ,x_min,x_min,z_min,x_max,y_max,z_max,origin\n".to_owned(),
            "\"x_min\" is there twice",
        ),
        (format!("{},", HEADER.repeat(10)), "more than 64 fields"),
    ] {
        let e = refused("boxes.csv", text);
        assert!(e.contains("first line") && e.contains(problem), "{e}");
    }
}

#[test]
fn csv_rows_are_checked_with_their_line() {
    for (rows, problem) in [
        (vec!["s,liver,1,2,3,4,5,6"], "line 2: 8 fields, 9 expected"),
        (
            vec!["s,liver,0,0,0,1,1,1,drawn", "s,kidney,1,2,3,4,5,6,drawn,x"],
            "line 3: more than 9 fields",
        ),
        (
            vec!["s,liver,1,2,3,4,5,6,guessed"],
            "line 2: unknown origin \"guessed\"",
        ),
        (
            vec!["s,liver,1,2,3,4,5,6,drawn", "\"s,kidney,1,2,3,4,5,6,drawn"],
            "line 3: a quoted field is never closed",
        ),
        (
            vec!["\"s\"x,liver,1,2,3,4,5,6,drawn"],
            "line 2: text after the closing quote of field 1",
        ),
        (
            vec![
                "\"two\nlines\",liver,1,2,3,4,5,6,drawn",
                "s,kidney,9,2,3,4,5,6,drawn",
            ],
            "line 4: x_min 9 above x_max 4",
        ),
    ] {
        let e = refused("boxes.csv", csv(&rows));
        assert!(e.contains(problem), "{problem}: {e}");
    }
}

#[test]
fn text_that_is_not_utf8_is_refused_with_its_line() {
    let mut bytes = csv(&["s,liver,1,2,3,4,5,6,drawn"]).into_bytes();
    bytes.extend_from_slice(b"s,\xffkidney,1,2,3,4,5,6,drawn\n");
    let e = refused("boxes.csv", bytes);
    assert!(e.contains("line 3: not UTF-8"), "{e}");
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(HEADER.bytes().flat_map(|b| [b, 0]))
        .collect();
    let e = refused("boxes.csv", utf16);
    assert!(e.contains("UTF-16"), "{e}");
    // A byte-order mark before JSON (Windows Notepad) is fine.
    let (set, _) = loaded(
        "boxes.json",
        format!("\u{feff}{}", BoxSet::default().to_json()),
    );
    assert!(set.boxes.is_empty());
}

// --- 6. What is not a box file is refused before it is read ------------------------------

#[cfg(unix)]
#[test]
fn a_fifo_socket_or_device_is_refused_before_opening() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("boxes.csv");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || tx.send(BoxSet::load(&path).map_err(|e| e.to_string())));
    let Ok(result) = rx.recv_timeout(Duration::from_secs(10)) else {
        // Unblock the reader (open the other end and close it) before failing.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        panic!("loading a FIFO blocked");
    };
    let e = result.unwrap_err();
    assert!(e.contains("boxes.csv") && e.contains("FIFO"), "{e}");

    let socket = dir.path().join("boxes.json");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let e = BoxSet::load(&socket).unwrap_err().to_string();
    assert!(e.contains("boxes.json") && e.contains("socket"), "{e}");

    let e = BoxSet::load(Path::new("/dev/null")).unwrap_err();
    assert!(matches!(e, AnnotationError::Input(_)), "{e:?}");
    assert!(
        e.to_string().contains("/dev/null") && e.to_string().contains("character device"),
        "{e}"
    );
}

#[test]
fn a_file_above_the_limit_is_refused_by_its_size_unread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boxes.csv");
    // Sparse: nothing is written, and nothing must be read.
    std::fs::File::create(&path)
        .unwrap()
        .set_len(MAX_FILE_BYTES + 1)
        .unwrap();
    let start = Instant::now();
    let e = BoxSet::load(&path).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(matches!(e, AnnotationError::TooLarge { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("boxes.csv") && e.contains("256 MB"), "{e}");
}

#[test]
fn a_folder_or_a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("boxes.json");
    std::fs::create_dir(&folder).unwrap();
    let e = BoxSet::load(&folder).unwrap_err().to_string();
    assert!(e.contains("boxes.json") && e.contains("is a folder"), "{e}");
    let e = BoxSet::load(&dir.path().join("none.csv"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("none.csv") && e.contains("not found"), "{e}");
}

// --- 7. Whatever ape writes reads back -----------------------------------------------------

fn extreme_set() -> BoxSet {
    let names = [
        "",
        "liver",
        "a,b",
        "semi;colon",
        "quote\"d",
        "\"",
        "\"\"",
        "  spaced  ",
        "line\nbreak",
        "crlf\r\nend",
        "tab\tin",
        "ünïcødé 肝臓 🫁",
        ",",
        "scan organ",
    ];
    let corners = [
        ([-1e6, -1e6, -1e6], [1e6, 1e6, 1e6]),
        ([1e6 - 1e-6, -1e6, 0.0], [1e6, -1e6 + 1e-6, 1e-6]),
        ([-0.0, 0.0, 5e-324], [0.0, 0.0, 1e-300]),
        ([0.1, 0.2, 0.3], [0.1 + 1e-6, 0.2 + 1e-6, 0.3 + 1e-6]),
        ([-123.456789012345, 7.0, 7.0], [-123.456789012344, 7.0, 7.0]),
    ];
    let origins = [
        BoxOrigin::Drawn,
        BoxOrigin::Accepted,
        BoxOrigin::Predicted {
            supports: 7,
            alpha: 1.25,
        },
    ];
    let mut boxes = Vec::new();
    for (i, scan) in names.iter().enumerate() {
        for (j, organ) in names.iter().enumerate() {
            let (min, max) = corners[(i + j) % corners.len()];
            boxes.push(OrganBox {
                scan: (*scan).to_owned(),
                organ: (*organ).to_owned(),
                bbox: world_box(min, max),
                origin: origins[(i * 3 + j) % origins.len()],
            });
        }
    }
    BoxSet { boxes }
}

#[test]
fn every_format_reads_back_extreme_but_valid_boxes() {
    let set = extreme_set();
    assert!(set.validate().is_ok());
    let dir = tempfile::tempdir().unwrap();
    for name in ["boxes.json", "boxes.csv", "boxes.mrk.json"] {
        let path = dir.path().join(name);
        set.save(&path).unwrap();
        let (back, warnings) = BoxSet::load_with_warnings(&path).unwrap();
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
        assert_eq!(back.boxes.len(), set.boxes.len(), "{name}");
        for (a, b) in set.boxes.iter().zip(&back.boxes) {
            assert_eq!((&a.scan, &a.organ), (&b.scan, &b.organ), "{name}");
            match name {
                "boxes.json" => assert_eq!(a, b),
                "boxes.csv" => {
                    assert_eq!(a.bbox, b.bbox, "{name}");
                    // CSV keeps whether a box was predicted, not from what.
                    let origin = match a.origin {
                        BoxOrigin::Predicted { .. } => BoxOrigin::Predicted {
                            supports: 0,
                            alpha: 1.0,
                        },
                        other => other,
                    };
                    assert_eq!(b.origin, origin);
                }
                _ => {
                    // A centre and size: exact to the rounding of 1e6 (1e-10 mm).
                    assert!(
                        (a.bbox.min - b.bbox.min).abs().max_element() < 1e-8
                            && (a.bbox.max - b.bbox.max).abs().max_element() < 1e-8,
                        "{name}: {} vs {}",
                        a.bbox,
                        b.bbox
                    );
                    assert_eq!(b.origin, BoxOrigin::Drawn);
                }
            }
        }
        // And once more: what was read saves and reads back the same.
        back.save(&path).unwrap();
        assert_eq!(
            BoxSet::load(&path).unwrap().boxes.len(),
            set.boxes.len(),
            "{name}"
        );
    }
}

#[test]
fn save_refuses_boxes_that_would_not_read_back() {
    let good = organ_box("s", "liver", [0.0; 3], [1.0; 3]);
    let bad = |edit: &dyn Fn(&mut OrganBox)| {
        let mut b = organ_box("s", "kidney", [0.0; 3], [1.0; 3]);
        edit(&mut b);
        BoxSet {
            boxes: vec![good.clone(), b],
        }
    };
    let cases: [(BoxSet, &str); 6] = [
        (bad(&|b| b.bbox.min.x = f64::NAN), "x_min NaN"),
        (bad(&|b| b.bbox.max.y = f64::INFINITY), "y_max inf"),
        (bad(&|b| b.bbox.max.z = 1e308), "z_max 1e308"),
        (bad(&|b| b.bbox.min.x = 2.0), "x_min 2 above x_max 1"),
        (
            bad(&|b| {
                b.origin = BoxOrigin::Predicted {
                    supports: 1,
                    alpha: f64::NAN,
                };
            }),
            "alpha NaN",
        ),
        (
            bad(&|b| {
                b.origin = BoxOrigin::Predicted {
                    supports: 1,
                    alpha: 0.0,
                };
            }),
            "alpha 0",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (set, problem) in cases {
        for name in ["boxes.json", "boxes.csv", "boxes.mrk.json"] {
            let path = dir.path().join(name);
            let e = set.save(&path).unwrap_err();
            assert!(matches!(e, AnnotationError::Invalid { .. }), "{e:?}");
            let e = e.to_string();
            assert!(
                e.contains(name) && e.contains("boxes[1] (\"s kidney\")") && e.contains(problem),
                "{e}"
            );
            assert!(!path.exists(), "{name} was written");
        }
    }
}
