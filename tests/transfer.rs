//! Transfer of points between scans on synthetic APE maps whose embedding is each cell's
//! normalised world position: consensus recovers a known affine between two scans, the cycle
//! check rejects planted wrong matches, a point outside the target is flagged, and refinement by
//! the image corrects a map that misplaces the anatomy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

use ape::ape_map::ApeMap;
use ape::retrieval::{MapIndex, Target};
use ape::transfer::{TransferMode, TransferSettings, consensus_fit, support_matches, transfer};
use ape::{Affine, Volume};
use glam::{DMat3, DVec3};

/// The embedding of a source-space position: normalised, as APE's are meant to be.
fn embed(x: DVec3) -> [f32; 3] {
    let e = (x - DVec3::splat(80.0)) / 200.0;
    [e.x as f32, e.y as f32, e.z as f32]
}

/// A map of `shape` cells of 4 mm at `origin` whose cell at world y holds `embed(inverse(y))`.
fn map(shape: [usize; 3], origin: DVec3, inverse: impl Fn(DVec3) -> DVec3) -> ApeMap {
    let affine = Affine::from_spacing(DVec3::splat(4.0), origin).unwrap();
    let cells = Volume::from_fn(shape, affine, |i, j, k| {
        let y = affine.to_world(DVec3::new(i as f64, j as f64, k as f64));
        embed(inverse(y))
    })
    .unwrap();
    ApeMap::new(cells)
}

/// The known source → target affine: 10° about z and 5° about x, scaled by 1.08, shifted.
fn known() -> (DMat3, DVec3) {
    let linear = DMat3::from_rotation_z(10f64.to_radians())
        * DMat3::from_rotation_x(5f64.to_radians())
        * 1.08;
    (linear, DVec3::new(12.0, -7.0, 20.0))
}

fn pair() -> (ApeMap, ApeMap) {
    let (linear, offset) = known();
    let inverse = linear.inverse();
    let source = map([40, 40, 40], DVec3::ZERO, |x| x);
    let target = map([44, 44, 44], DVec3::splat(-10.0), move |y| {
        inverse * (y - offset)
    });
    (source, target)
}

/// A map as a target without an image (consensus and nearest need none).
fn plain<'a>(map: &'a ApeMap, index: &'a MapIndex) -> Target<'a> {
    Target {
        map,
        index,
        image: None,
    }
}

/// Supports within 30 mm: these maps are 160 mm across (the default reaches 100 mm).
fn small_maps() -> TransferSettings {
    TransferSettings {
        radius_mm: 30.0,
        ..TransferSettings::default()
    }
}

#[test]
fn consensus_recovers_a_known_affine_and_the_point() {
    let (source, target) = pair();
    let (si, ti) = (MapIndex::build(&source), MapIndex::build(&target));
    let from = plain(&source, &si);
    let to = plain(&target, &ti);
    let (linear, offset) = known();
    let settings = small_maps();
    for point in [
        DVec3::new(80.0, 80.0, 80.0),
        DVec3::new(50.0, 100.0, 70.0),
        DVec3::new(110.0, 60.0, 95.0),
    ] {
        let truth = linear * point + offset;
        let (fit, matches) = consensus_fit(from, point, to, &settings);
        let fit = fit.expect("a fit");
        assert!(matches.iter().all(|m| m.inlier), "no planted error here");
        for c in 0..3 {
            let d = (fit.linear.col(c) - linear.col(c)).length();
            assert!(d < 0.01, "column {c} of the affine off by {d}");
        }
        let t = transfer(from, point, to, TransferMode::Consensus, &settings).unwrap();
        assert_eq!(t.mode, TransferMode::Consensus);
        let error = (t.world - truth).length();
        assert!(error < 1.0, "{point}: {error} mm");
        assert!(t.confidence.cycle_error_mm < 1.0);
        assert!(!t.confidence.outside_fov && !t.confidence.doubtful());
        // The paper's single search is close too on a perfect map.
        let n = transfer(from, point, to, TransferMode::Nearest, &settings).unwrap();
        assert!((n.world - truth).length() < 2.0);
    }
}

#[test]
fn the_cycle_check_rejects_planted_wrong_matches() {
    let (linear, offset) = known();
    let inverse = linear.inverse();
    let source = map([40, 40, 40], DVec3::ZERO, |x| x);
    // On the target, a 48 mm block where the anatomy 30 mm to the query's +x should be holds
    // the embeddings of a place 120 mm away: the supports deep inside it have no true match.
    let block_centre = DVec3::new(110.0, 80.0, 80.0);
    let target = map([44, 44, 44], DVec3::splat(-10.0), move |y| {
        let x = inverse * (y - offset);
        if (x - block_centre).abs().max_element() < 24.0 {
            x + DVec3::new(0.0, 0.0, 120.0)
        } else {
            x
        }
    });
    let (si, ti) = (MapIndex::build(&source), MapIndex::build(&target));
    let from = plain(&source, &si);
    let to = plain(&target, &ti);
    let point = DVec3::new(80.0, 80.0, 80.0);
    let settings = small_maps();
    let matches = support_matches(from, point, to, &settings);
    let planted: Vec<_> = matches
        .iter()
        .filter(|m| (m.support - block_centre).abs().max_element() < 6.0)
        .collect();
    assert!(!planted.is_empty());
    for m in &planted {
        let wrong = (m.found - (linear * m.support + offset)).length();
        assert!(
            wrong > 5.0,
            "the planted support's match is wrong ({wrong} mm)"
        );
        assert!(!m.inlier, "rejected by the cycle check: {m:?}");
    }
    let truth = linear * point + offset;
    let t = transfer(from, point, to, TransferMode::Consensus, &settings).unwrap();
    let error = (t.world - truth).length();
    assert!(error < 1.5, "{error} mm");
    assert!(t.confidence.inliers < t.confidence.supports);
    // Without the cycle check the planted matches pull the fit away.
    let unchecked = TransferSettings {
        cycle_tolerance_mm: f64::INFINITY,
        ..settings
    };
    let u = transfer(from, point, to, TransferMode::Consensus, &unchecked).unwrap();
    let unchecked_error = (u.world - truth).length();
    assert!(
        unchecked_error > 1.3 * error,
        "{unchecked_error} vs {error} mm"
    );
}

#[test]
fn a_point_outside_the_target_is_flagged() {
    let source = map([40, 40, 40], DVec3::ZERO, |x| x);
    // The target covers z up to 76 mm only: an abdomen-only scan under a chest landmark.
    let target = map([40, 40, 20], DVec3::ZERO, |y| y);
    let (si, ti) = (MapIndex::build(&source), MapIndex::build(&target));
    let from = plain(&source, &si);
    let to = plain(&target, &ti);
    let settings = TransferSettings::default();
    for mode in TransferMode::ALL {
        let outside = transfer(from, DVec3::new(80.0, 80.0, 140.0), to, mode, &settings).unwrap();
        assert!(outside.confidence.outside_fov, "{mode}: {outside:?}");
        assert!(outside.confidence.doubtful() && outside.confidence.score() == 0.0);
        let inside = transfer(from, DVec3::new(80.0, 80.0, 40.0), to, mode, &settings).unwrap();
        assert!(!inside.confidence.outside_fov, "{mode}: {inside:?}");
        assert!((inside.world - DVec3::new(80.0, 80.0, 40.0)).length() < 1.0);
    }
}

#[test]
fn modes_parse_by_name() {
    assert_eq!(
        "Consensus".parse::<TransferMode>(),
        Ok(TransferMode::Consensus)
    );
    assert_eq!(
        " nearest".parse::<TransferMode>(),
        Ok(TransferMode::Nearest)
    );
    assert!("best".parse::<TransferMode>().is_err());
}

/// A textured CT-like image (HU) of blobs scattered through a 160 mm cube, as seen from a
/// scan whose anatomy sits `shift` mm along.
fn textured(shift: DVec3) -> Volume<f32> {
    let affine = Affine::from_spacing(DVec3::splat(2.0), DVec3::splat(-10.0)).unwrap();
    // Deterministic scatter: a small linear congruential generator.
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let blobs: Vec<(DVec3, f64, f32)> = (0..120)
        .map(|_| {
            let c = DVec3::new(next(), next(), next()) * 180.0 - DVec3::splat(10.0);
            (c, 4.0 + 8.0 * next(), (next() * 300.0) as f32 - 100.0)
        })
        .collect();
    Volume::from_fn([90, 90, 90], affine, |i, j, k| {
        let x = affine.to_world(DVec3::new(i as f64, j as f64, k as f64)) - shift;
        blobs
            .iter()
            .filter(|(c, r, _)| (x - *c).length() < *r)
            .map(|(_, _, hu)| *hu)
            .sum::<f32>()
            - 50.0
    })
    .unwrap()
}

#[test]
fn refinement_finds_what_the_image_shows_where_the_map_is_off() {
    use ape::refine::PatchImage;
    let offset = DVec3::new(12.0, -7.0, 9.0);
    // The target's embedding misplaces its anatomy by `bias`; its image does not.
    let bias = DVec3::new(7.0, -6.0, 5.0);
    let source = map([40, 40, 40], DVec3::ZERO, |x| x);
    let target = map([44, 44, 44], DVec3::splat(-10.0), move |y| {
        y - offset - bias
    });
    let (si, ti) = (MapIndex::build(&source), MapIndex::build(&target));
    let (source_image, target_image) = (
        PatchImage::new(&textured(DVec3::ZERO), 3.0).unwrap(),
        PatchImage::new(&textured(offset), 3.0).unwrap(),
    );
    let settings = small_maps();
    let with = |map, index, image| Target { map, index, image };
    let from = with(&source, &si, Some(&source_image));
    let to = with(&target, &ti, Some(&target_image));
    for point in [DVec3::new(80.0, 80.0, 80.0), DVec3::new(60.0, 95.0, 70.0)] {
        let truth = point + offset;
        let consensus = transfer(from, point, to, TransferMode::Consensus, &settings).unwrap();
        assert!(
            ((consensus.world - truth) - bias).length() < 1.0,
            "consensus follows the map"
        );
        let refined = transfer(from, point, to, TransferMode::Refined, &settings).unwrap();
        assert_eq!(refined.mode, TransferMode::Refined);
        let error = (refined.world - truth).length();
        assert!(error < 2.0, "{point}: refined {error} mm off");
        assert!(refined.confidence.image_ncc.unwrap() > 0.8);
        // Without images, refined is consensus.
        let plain = transfer(
            with(&source, &si, None),
            point,
            with(&target, &ti, None),
            TransferMode::Refined,
            &settings,
        )
        .unwrap();
        assert_eq!(plain.mode, TransferMode::Consensus);
        assert_eq!(plain.world, consensus.world);
    }
}
