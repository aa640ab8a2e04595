//! Query latency of landmark retrieval: one point on one scan and across a 50-scan cohort
//! (goal: under 2 ms on a 2-core CPU for the nearest search, under 50 ms for consensus
//! transfer), refined transfer (consensus, then image patches), k-d index build time, and brute
//! force beside them.
//!
//! `cargo bench --profile dev --bench retrieval`. The maps are synthetic but sized like real
//! ones: the 1/4-resolution map of a 512×512×300 scan of 0.8×0.8×1 mm at the model's
//! 2×2×3 mm input spacing is 52×52×25 cells; a large one (Ø 500 mm, 600 mm long) 63×63×50.

#![allow(clippy::panic)] // a bench with broken fixtures may stop loudly

use std::hint::black_box;

use ape::ape_map::ApeMap;
use ape::refine::PatchImage;
use ape::retrieval::{MapIndex, Target, nearest_cell, retrieve_many};
use ape::transfer::{TransferMode, TransferSettings, transfer};
use ape::{Affine, Volume};
use criterion::{Criterion, criterion_group, criterion_main};
use glam::DVec3;
use rayon::prelude::*;

/// A smooth, non-linear map of world position (a perturbed position field), shifted per scan.
fn map(seed: usize) -> ApeMap {
    let shift = DVec3::new(seed as f64 * 1.7, -(seed as f64) * 1.3, seed as f64 * 2.1);
    let affine = Affine::from_spacing(
        DVec3::new(8.0, 8.0, 12.0),
        DVec3::new(-250.0, -250.0, -300.0) + shift,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cells = Volume::from_fn([63, 63, 50], affine, |i, j, k| {
        let w = affine.to_world(DVec3::new(i as f64, j as f64, k as f64)) - shift;
        let p = w / 150.0;
        [
            (p.x + 0.1 * (p.y * 2.0).sin()) as f32,
            (p.y + 0.1 * (p.z * 2.0).sin()) as f32,
            (p.z + 0.1 * (p.x * 2.0).sin()) as f32,
        ]
    })
    .unwrap_or_else(|e| panic!("{e}"));
    ApeMap::new(cells)
}

/// A textured HU image over the maps' extent at the refinement's 3 mm: the cost of refinement
/// does not depend on the content, so one image serves every target.
fn image() -> PatchImage {
    let affine = Affine::from_spacing(DVec3::splat(3.0), DVec3::new(-250.0, -250.0, -300.0))
        .unwrap_or_else(|e| panic!("{e}"));
    let hu = Volume::from_fn([167, 167, 200], affine, |i, j, k| {
        let w = affine.to_world(DVec3::new(i as f64, j as f64, k as f64));
        (200.0 * ((w.x / 13.0).sin() * (w.y / 17.0).cos() + (w.z / 11.0).sin())) as f32
    })
    .unwrap_or_else(|e| panic!("{e}"));
    PatchImage::new(&hu, PatchImage::DEFAULT_STEP_MM).unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let image = image();
    let maps: Vec<ApeMap> = (0..50).map(map).collect();
    let indices: Vec<MapIndex> = maps.iter().map(MapIndex::build).collect();
    let targets: Vec<Target<'_>> = maps
        .iter()
        .zip(&indices)
        .map(|(map, index)| Target {
            map,
            index,
            image: Some(&image),
        })
        .collect();
    let query = maps[0]
        .embedding_at(DVec3::new(40.0, -30.0, 20.0))
        .unwrap_or_else(|| panic!("query point outside the map"));
    let cells = maps[0].cells().len();

    let mut group = c.benchmark_group(format!("retrieval ({cells} cells per map)"));
    group.bench_function("index build, one map", |b| {
        b.iter(|| MapIndex::build(black_box(&maps[0])))
    });
    group.bench_function("query, one scan (k-d tree + refinement)", |b| {
        b.iter(|| indices[1].retrieve(&maps[1], black_box(query)))
    });
    group.bench_function("query, one scan (k-d tree, cell only)", |b| {
        b.iter(|| indices[1].nearest_cell(&maps[1], black_box(query)))
    });
    group.bench_function("query, one scan (brute force, cell only)", |b| {
        b.iter(|| nearest_cell(&maps[1], black_box(query)))
    });
    group.bench_function("query, 50 scans (k-d tree + refinement, parallel)", |b| {
        b.iter(|| retrieve_many(black_box(&[query]), &targets))
    });
    let point = DVec3::new(40.0, -30.0, 20.0);
    let settings = TransferSettings::default();
    // The refinement before Session 20, beside the default: seven patches instead of thirteen.
    let seven = TransferSettings {
        refine: ape::refine::RefineSettings {
            outer_spread_mm: 0.0,
            ..Default::default()
        },
        ..Default::default()
    };
    let cases = TransferMode::ALL
        .map(|mode| (mode.to_string(), mode, settings))
        .into_iter()
        .chain([(
            "refined with seven patches".to_owned(),
            TransferMode::Refined,
            seven,
        )]);
    for (label, mode, settings) in cases {
        group.bench_function(
            format!("transfer, 50 scans ({label}, with confidence, parallel)"),
            |b| {
                b.iter(|| {
                    targets[1..]
                        .par_iter()
                        .map(|t| transfer(targets[0], black_box(point), *t, mode, &settings))
                        .collect::<Vec<_>>()
                })
            },
        );
    }
    group.bench_function("query, 50 scans (brute force)", |b| {
        b.iter(|| {
            maps.iter()
                .map(|m| nearest_cell(m, black_box(query)))
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
