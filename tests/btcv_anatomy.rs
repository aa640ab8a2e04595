//! Organ centres of the 20 BTCV scans in world RAS coordinates (+x toward the patient's right,
//! +y anterior, +z superior). Each comparison fails if its axis is flipped anywhere on the path
//! from file to world point.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use ape::labels::LabelMap;
use glam::DVec3;

fn centre_of(map: &LabelMap, organ: &str) -> DVec3 {
    let label = map
        .label_of(organ)
        .unwrap_or_else(|| panic!("no {organ} in labels.json"));
    map.organs()
        .into_iter()
        .find(|o| o.label == label)
        .unwrap_or_else(|| panic!("{}: no {organ} voxels", map.path.display()))
        .centre
}

#[test]
fn organ_centres_of_all_btcv_scans_lie_where_anatomy_puts_them() {
    let Some(data) = common::shared_data("organ_centres_of_all_btcv_scans") else {
        return;
    };
    for case in common::BTCV_CASES {
        let path = data.join(format!("btcv/btcv_{case}_label.nii.gz"));
        let map = LabelMap::read(&path).unwrap();
        let liver = centre_of(&map, "liver");
        let spleen = centre_of(&map, "spleen");
        let ivc = centre_of(&map, "inferior_vena_cava");
        let aorta = centre_of(&map, "aorta");
        let pancreas = centre_of(&map, "pancreas");
        let kidney_right = centre_of(&map, "kidney_right");
        let kidney_left = centre_of(&map, "kidney_left");
        assert!(
            liver.x > spleen.x,
            "case {case}: liver {liver} not right of spleen {spleen}"
        );
        assert!(
            ivc.x > aorta.x,
            "case {case}: IVC {ivc} not right of aorta {aorta}"
        );
        assert!(
            kidney_right.x > kidney_left.x,
            "case {case}: right kidney is left of the left one"
        );
        assert!(
            pancreas.y > aorta.y,
            "case {case}: pancreas {pancreas} not anterior of aorta {aorta}"
        );
        assert!(
            liver.z > kidney_right.z,
            "case {case}: liver {liver} not above right kidney {kidney_right}"
        );
    }
}

#[test]
fn edge_points_bound_each_organ() {
    let Some(data) = common::shared_data("edge_points_bound_each_organ") else {
        return;
    };
    let map = LabelMap::read(data.join("btcv/btcv_02_label.nii.gz")).unwrap();
    let organs = map.organs();
    assert_eq!(organs.len(), 13);
    for o in organs {
        for axis in 0..3 {
            assert!((o.edges.min[axis][axis] - o.bbox.min[axis]).abs() < 1e-9);
            assert!((o.edges.max[axis][axis] - o.bbox.max[axis]).abs() < 1e-9);
            assert!(o.bbox.min[axis] <= o.centre[axis] && o.centre[axis] <= o.bbox.max[axis]);
        }
        // Each edge point is an organ voxel.
        for p in o.edges.points() {
            let [i, j, k] = map.volume.nearest_voxel(p).unwrap();
            assert_eq!(map.volume.get(i, j, k), Some(&o.label));
        }
    }
}
