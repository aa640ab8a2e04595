//! World coordinates survive any voxel order, any oblique affine, resampling and cropping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use ape::io::nifti::{read_label_volume, read_nifti, write_nifti};
use ape::labels::{LabelMap, organ_stats};
use ape::resample::{resample_linear_to_spacing, resample_nearest_to_spacing};
use ape::{Affine, Volume};
use glam::{DMat3, DQuat, DVec3};

/// A small deterministic random source (xorshift), so that failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next()
    }
}

/// An affine with a random rotation, random spacings, a random flip and a random origin, its
/// entries rounded to f32 as NIfTI stores them.
fn random_oblique_affine(rng: &mut Rng) -> Affine {
    let axis = DVec3::new(
        rng.range(-1.0, 1.0),
        rng.range(-1.0, 1.0),
        rng.range(-1.0, 1.0),
    )
    .normalize();
    let rotation = DMat3::from_quat(DQuat::from_axis_angle(axis, rng.range(0.1, 3.0)));
    let flip = if rng.next() < 0.5 { -1.0 } else { 1.0 };
    let spacing = DVec3::new(
        rng.range(0.5, 2.0),
        rng.range(0.5, 2.0),
        flip * rng.range(1.0, 5.0),
    );
    let origin = DVec3::new(
        rng.range(-300.0, 300.0),
        rng.range(-300.0, 300.0),
        rng.range(-300.0, 300.0),
    );
    let rows = Affine::new(rotation * DMat3::from_diagonal(spacing), origin)
        .unwrap()
        .to_rows()
        .map(|row| row.map(|v| v as f32 as f64));
    Affine::from_rows(rows).unwrap()
}

#[test]
fn oblique_affine_round_trips_through_nifti() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for trial in 0..20 {
        let affine = random_oblique_affine(&mut rng);
        let shape = [17, 13, 9];
        let v = Volume::from_fn(shape, affine, |i, j, k| (i * 3 + j * 5 + k * 7) as f32).unwrap();
        let path = dir.path().join(format!("oblique{trial}.nii.gz"));
        write_nifti(&path, &v).unwrap();
        let back = read_nifti(&path).unwrap().volume;
        assert_eq!(back.data(), v.data());
        for index in [0, 1, 100, 1000, v.len() - 1] {
            let voxel = v.voxel_of(index);
            let error = (back.voxel_to_world(voxel) - v.voxel_to_world(voxel)).length();
            assert!(
                error < 1e-4,
                "trial {trial}: world points differ by {error} mm"
            );
        }
    }
}

#[test]
fn qform_alone_places_voxels_too() {
    // Tools that ignore the sform read the qform we write beside it: it must agree.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(42);
    for trial in 0..10 {
        let affine = random_oblique_affine(&mut rng);
        let v = Volume::from_fn([5, 6, 7], affine, |i, _, _| i as i16).unwrap();
        let path = dir.path().join(format!("q{trial}.nii"));
        write_nifti(&path, &v).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        common::patch(&mut bytes, common::field::SFORM_CODE, &0i16.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let back = read_nifti(&path).unwrap().volume;
        for voxel in [[0, 0, 0], [4, 5, 6], [2, 0, 6]] {
            let error = (back.voxel_to_world(voxel) - v.voxel_to_world(voxel)).length();
            assert!(error < 1e-3, "trial {trial}: qform is off by {error} mm");
        }
    }
}

#[test]
fn a_btcv_scan_in_any_voxel_order_has_the_same_organs_in_the_same_places() {
    let Some(data) = common::shared_data("btcv_scan_in_any_voxel_order") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let labels = read_label_volume(data.join("btcv/btcv_03_label.nii.gz")).unwrap();
    let scan = read_nifti(data.join("btcv/btcv_03.nii.gz")).unwrap().volume;
    let reference = organ_stats(&labels);
    assert!(reference.len() >= 12);

    for (order, flip) in [
        ([2, 0, 1], [true, false, true]),
        ([1, 0, 2], [false, true, false]),
    ] {
        let reordered = labels.reordered(order, flip).unwrap();
        assert_ne!(
            reordered.affine().axis_codes(),
            labels.affine().axis_codes()
        );
        let path = dir.path().join("reordered_label.nii.gz");
        write_nifti(&path, &reordered).unwrap();
        let back = LabelMap::read(&path).unwrap();
        let organs = back.organs();
        assert_eq!(organs.len(), reference.len());
        for (a, b) in reference.iter().zip(&organs) {
            assert_eq!(a.label, b.label);
            assert_eq!(a.voxels, b.voxels);
            let moved = (a.centre - b.centre).length();
            assert!(
                moved < 0.01,
                "{order:?}/{flip:?}: organ {} centre moved {moved} mm",
                a.label
            );
            for (p, q) in a.edges.points().iter().zip(b.edges.points()) {
                assert!(
                    (*p - q).length() < 0.01,
                    "organ {} edge point moved",
                    a.label
                );
            }
        }

        // The scan's voxels, too, keep their world positions.
        let path = dir.path().join("reordered.nii.gz");
        write_nifti(
            &path,
            &scan.reordered(order, flip).unwrap().map(|&v| v as u8),
        )
        .unwrap();
        let back = read_nifti(&path).unwrap().volume;
        for world in [
            DVec3::new(-150.0, -200.0, 300.0),
            DVec3::new(-250.0, -150.0, 250.0),
        ] {
            let [i, j, k] = scan.nearest_voxel(world).unwrap();
            let [a, b, c] = back.nearest_voxel(world).unwrap();
            assert_eq!(scan.get(i, j, k), back.get(a, b, c));
        }
    }
}

#[test]
fn resampling_and_cropping_keep_organs_in_place() {
    let Some(data) = common::shared_data("resampling_and_cropping_keep_organs_in_place") else {
        return;
    };
    let labels = read_label_volume(data.join("btcv/btcv_05_label.nii.gz")).unwrap();
    let reference = organ_stats(&labels);
    let coarse = resample_nearest_to_spacing(&labels, DVec3::new(2.0, 2.0, 2.0), 0).unwrap();
    assert!((coarse.spacing() - DVec3::splat(2.0)).abs().max_element() < 0.05);
    assert!((coarse.world_bounds().min - labels.world_bounds().min).length() < 1e-6);
    for (a, b) in reference.iter().zip(organ_stats(&coarse)) {
        assert_eq!(a.label, b.label);
        // Large organs move by well under a voxel; small ones by at most about one.
        let moved = (a.centre - b.centre).length();
        let limit = if a.volume_ml > 50.0 { 1.0 } else { 3.0 };
        assert!(
            moved < limit,
            "organ {} centre moved {moved} mm when resampled",
            a.label
        );
    }

    // Cropping to an organ's box keeps every voxel of it, in place.
    let liver = reference.iter().find(|o| o.label == 6).unwrap();
    let crop = labels.crop_to_world_box(&liver.bbox).unwrap();
    let cropped_liver = organ_stats(&crop)
        .into_iter()
        .find(|o| o.label == 6)
        .unwrap();
    assert_eq!(cropped_liver.voxels, liver.voxels);
    assert!((cropped_liver.centre - liver.centre).length() < 1e-6);
    assert!(crop.len() < labels.len() / 3);

    // Linear resampling of the scan stays within its value range.
    let scan = read_nifti(data.join("btcv/btcv_05.nii.gz")).unwrap().volume;
    let fine = resample_linear_to_spacing(&scan, DVec3::new(1.0, 1.0, 1.5)).unwrap();
    let (lo, hi) = fine.value_range();
    assert!(lo >= 0.0 && hi <= 255.0);
}
