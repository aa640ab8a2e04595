//! Retrieval: the k-d tree agrees with brute force, and a map equal to each voxel's normalised
//! world position finds a point on a shifted scan where it moved to.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

use ape::ape_map::ApeMap;
use ape::retrieval::{MapIndex, nearest_cell};
use ape::scan::Scan;
use ape::{Affine, Volume};
use glam::DVec3;

/// A "map" whose embedding is the world position scaled to roughly unit size.
fn position_map(origin: DVec3) -> ApeMap {
    let affine = Affine::from_spacing(DVec3::new(8.0, 8.0, 12.0), origin).unwrap();
    let cells = Volume::from_fn([40, 30, 25], affine, |i, j, k| {
        let w = affine.to_world(DVec3::new(i as f64, j as f64, k as f64));
        [
            (w.x / 100.0) as f32,
            (w.y / 100.0) as f32,
            (w.z / 100.0) as f32,
        ]
    })
    .unwrap();
    ApeMap::new(cells)
}

#[test]
fn kd_tree_retrieval_equals_brute_force() {
    let map = position_map(DVec3::new(-160.0, -120.0, -150.0));
    // Also a scrambled map, where neighbouring cells are far apart in embedding space.
    let mut state = 12345u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let random: Vec<[f32; 3]> = (0..map.cells().len())
        .map(|_| [next() * 4.0 - 2.0, next() * 4.0 - 2.0, next() * 4.0 - 2.0])
        .collect();
    let scrambled = ApeMap::new(Volume::new(random, map.shape(), *map.affine()).unwrap());
    for m in [&map, &scrambled] {
        let index = MapIndex::build(m);
        for _ in 0..300 {
            let q = [next() * 4.0 - 2.0, next() * 4.0 - 2.0, next() * 4.0 - 2.0];
            let fast = index.nearest_cell(m, q);
            let (world, distance) = nearest_cell(m, q);
            assert!(
                (fast.distance - distance).abs() < 1e-5,
                "{} vs {distance}",
                fast.distance
            );
            if (fast.world - world).length() > 1e-9 {
                // A tie: both cells are equally near.
                let e = m.embedding_at(fast.world).unwrap();
                let d = (0..3).map(|c| (e[c] - q[c]).powi(2)).sum::<f32>().sqrt();
                assert!((d - distance).abs() < 1e-5);
            }
        }
    }
}

#[test]
fn retrieval_on_a_shifted_scan_returns_the_shifted_point() {
    let shift = DVec3::new(23.0, -17.0, 31.0);
    // Target scan: the same anatomy moved by `shift`, so its map is the source map moved too.
    let source = position_map(DVec3::new(-160.0, -120.0, -150.0));
    let target_affine = Affine::from_spacing(
        DVec3::new(8.0, 8.0, 12.0),
        DVec3::new(-160.0, -120.0, -150.0) + shift,
    )
    .unwrap();
    let target = ApeMap::new(
        Volume::from_fn([40, 30, 25], target_affine, |i, j, k| {
            let w = target_affine.to_world(DVec3::new(i as f64, j as f64, k as f64)) - shift;
            [
                (w.x / 100.0) as f32,
                (w.y / 100.0) as f32,
                (w.z / 100.0) as f32,
            ]
        })
        .unwrap(),
    );
    let index = MapIndex::build(&target);
    for point in [
        DVec3::new(0.0, 0.0, 0.0),
        DVec3::new(-50.5, 33.3, 71.0),
        DVec3::new(100.0, -80.0, -60.0),
    ] {
        let q = source.embedding_at(point).unwrap();
        let found = index.retrieve(&target, q);
        let error = (found.world - (point + shift)).length();
        // Refinement brings the error well below the 8–12 mm cell size.
        assert!(
            error < 3.0,
            "retrieved {} for {}, {error} mm off",
            found.world,
            point + shift
        );
    }
}

/// A scan in HU over the same world region as `position_map`: air, with soft tissue inside
/// the world box `body`.
fn scan_with_body(origin: DVec3, body: (DVec3, DVec3)) -> Scan {
    let affine = Affine::from_spacing(DVec3::new(2.0, 2.0, 3.0), origin).unwrap();
    let volume = ape::phantom::box_body([160, 120, 100], affine, body).unwrap();
    Scan::from_hu(volume, "synthetic.nii").unwrap()
}

#[test]
fn retrieval_inside_the_body_ignores_matches_in_the_air() {
    let origin = DVec3::new(-160.0, -120.0, -150.0);
    let body = (
        DVec3::new(-100.0, -80.0, -100.0),
        DVec3::new(100.0, 80.0, 100.0),
    );
    let scan = scan_with_body(origin, body);
    let clean = position_map(origin);
    // The query: the embedding of a point inside the body. An air cell far from it (the
    // corner cell) is given exactly that embedding, as a map may give air any value.
    let inside = DVec3::new(20.0, -10.0, 30.0);
    let query = clean.embedding_at(inside).unwrap();
    let mut cells = clean.cells().data().to_vec();
    cells[0] = query;
    let map = ApeMap::new(Volume::new(cells, clean.shape(), *clean.affine()).unwrap());
    let corner = map.cells().voxel_to_world([0, 0, 0]);

    let everywhere = MapIndex::build(&map).nearest_cell(&map, query);
    assert!(
        (everywhere.world - corner).length() < 1e-6,
        "the air cell is the nearest"
    );
    let in_body = MapIndex::build_in_body(&map, &scan).nearest_cell(&map, query);
    assert!(
        (in_body.world - inside).length() < 12.0,
        "found {:?}, expected near {inside:?}",
        in_body.world
    );
    let refined = MapIndex::build_in_body(&map, &scan).retrieve(&map, query);
    assert!(
        (refined.world - inside).length() < 3.0,
        "{:?}",
        refined.world
    );
}
