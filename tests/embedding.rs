//! The APE network and whole-scan inference: seamless tiles, backend agreement, invariance to the
//! voxel order, model files that refuse bad input, and `ape embed` on a real scan.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use ape::embed::{EmbedOptions, ModelInput, embed_input, embed_scan, prepare_input};
use ape::model::backend;
use ape::model::{ApeModel, ModelError};
use ape::{Affine, Volume};
use glam::DVec3;

fn bundled() -> ApeModel {
    ApeModel::bundled(&backend::cpu().device).unwrap()
}

/// A phantom scan at the bundled model's input spacing, so that the model grid equals the
/// scan's own grid.
fn phantom_scan(shape: [usize; 3]) -> Volume<f32> {
    let spacing = DVec3::from_array(bundled().meta.input_spacing_mm);
    let half = spacing * DVec3::new(shape[0] as f64, shape[1] as f64, shape[2] as f64) * 0.5;
    let affine = Affine::from_spacing(spacing, -half).unwrap();
    ape::phantom::phantom(shape, affine, DVec3::ZERO, 0.6)
        .unwrap()
        .0
}

fn max_difference(a: &ape::ape_map::ApeMap, b: &ape::ape_map::ApeMap) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.cells()
        .data()
        .iter()
        .zip(b.cells().data())
        .flat_map(|(x, y)| (0..3).map(move |c| (x[c] - y[c]).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn tiled_inference_equals_a_single_pass() {
    let model = bundled();
    let device = backend::cpu().device;
    // Long along x, so that 256-voxel tiles (cores of 32 voxels) cut it many times.
    let input = ModelInput {
        volume: prepare_input(&model, &phantom_scan([300, 64, 48]))
            .unwrap()
            .volume,
    };
    let (single, tiles) = embed_input(
        &model,
        &device,
        &input,
        &EmbedOptions { max_tile: 1024 },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(tiles, 1);
    let (tiled, tiles) = embed_input(
        &model,
        &device,
        &input,
        &EmbedOptions { max_tile: 256 },
        &mut |_| {},
    )
    .unwrap();
    assert!(tiles > 5, "only {tiles} tiles");
    let scale = single
        .cells()
        .data()
        .iter()
        .flat_map(|e| e.iter())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = max_difference(&single, &tiled);
    eprintln!("tiled vs single pass: max difference {diff}, values up to {scale}");
    assert!(
        diff < 1e-3,
        "tiles differ from a single pass by {diff} (values up to {scale})"
    );
}

#[test]
fn a_scan_in_another_voxel_order_has_the_same_map() {
    let model = bundled();
    let device = backend::cpu().device;
    let scan = phantom_scan([96, 80, 48]);
    let reordered = scan.reordered([2, 0, 1], [true, false, true]).unwrap();
    let options = EmbedOptions::default();
    let (a, _) = embed_scan(&model, &device, &scan, &options, &mut |_| {}).unwrap();
    let (b, _) = embed_scan(&model, &device, &reordered, &options, &mut |_| {}).unwrap();
    let mut compared = 0;
    for world in [
        DVec3::new(60.0, 0.0, 20.0),
        DVec3::new(-40.0, -30.0, -10.0),
        DVec3::new(5.0, 17.0, 33.0),
    ] {
        let (Some(x), Some(y)) = (a.embedding_at(world), b.embedding_at(world)) else {
            panic!("{world} outside the map");
        };
        for c in 0..3 {
            assert!((x[c] - y[c]).abs() < 1e-3, "at {world}: {x:?} vs {y:?}");
        }
        compared += 1;
    }
    assert_eq!(compared, 3);
}

#[test]
fn cpu_and_wgpu_agree() {
    let gpu = match backend::wgpu() {
        Ok(gpu) => gpu,
        Err(e) => {
            eprintln!("SKIPPED cpu_and_wgpu_agree: {e} (install mesa-vulkan-drivers for lavapipe)");
            return;
        }
    };
    eprintln!("cpu_and_wgpu_agree on {}", gpu.description);
    let cpu = backend::cpu();
    let scan = phantom_scan([64, 64, 32]);
    let on_cpu = ApeModel::bundled(&cpu.device).unwrap();
    let on_gpu = ApeModel::bundled(&gpu.device).unwrap();
    let options = EmbedOptions::default();
    let (a, _) = embed_scan(&on_cpu, &cpu.device, &scan, &options, &mut |_| {}).unwrap();
    let (b, _) = embed_scan(&on_gpu, &gpu.device, &scan, &options, &mut |_| {}).unwrap();
    let diff = max_difference(&a, &b);
    assert!(diff < 1e-3, "CPU and {} differ by {diff}", gpu.description);
}

#[test]
fn model_files_round_trip_and_bad_ones_are_refused() {
    let device = backend::cpu().device;
    let model = bundled();
    let bytes = model.to_bytes().unwrap();
    let again = ApeModel::from_bytes(&bytes, "copy", &device).unwrap();
    assert_eq!(again.meta, model.meta);
    assert_eq!(again.id, ape::hash::bytes_hash(&bytes));
    let scan = phantom_scan([64, 48, 32]);
    let options = EmbedOptions::default();
    let (a, _) = embed_scan(&model, &device, &scan, &options, &mut |_| {}).unwrap();
    let (b, _) = embed_scan(&again, &device, &scan, &options, &mut |_| {}).unwrap();
    assert_eq!(max_difference(&a, &b), 0.0);

    let foreign = b"PK\x03\x04 this is a zip file, not a model";
    assert!(matches!(
        ApeModel::from_bytes(foreign, "foreign.zip", &device),
        Err(ModelError::NotAModelFile { .. })
    ));
    let e = ApeModel::from_bytes(&bytes[..bytes.len() / 2], "cut.apemodel", &device).unwrap_err();
    assert!(matches!(e, ModelError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("cut.apemodel"));
    let mut wrong_version = bytes.clone();
    wrong_version[8] = 99;
    assert!(matches!(
        ApeModel::from_bytes(&wrong_version, "v99", &device),
        Err(ModelError::UnsupportedVersion { found: 99, .. })
    ));
    // Metadata claiming another architecture than the weights hold.
    let meta_start = 16;
    let meta_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut meta: serde_json::Value =
        serde_json::from_slice(&bytes[meta_start..meta_start + meta_len]).unwrap();
    meta["net"]["widths"][2] = serde_json::json!(48);
    let meta = serde_json::to_vec(&meta).unwrap();
    let mut other = bytes[..12].to_vec();
    other.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    other.extend_from_slice(&meta);
    other.extend_from_slice(&bytes[meta_start + meta_len..]);
    let e = ApeModel::from_bytes(&other, "other.apemodel", &device).unwrap_err();
    assert!(matches!(e, ModelError::IncompatibleWeights { .. }), "{e}");
    // Nonsense in the metadata.
    let mut bad_meta = bytes.clone();
    bad_meta[meta_start] = b'!';
    assert!(matches!(
        ApeModel::from_bytes(&bad_meta, "bad", &device),
        Err(ModelError::BadMetadata { .. })
    ));
}

#[test]
fn trilinear_resize_follows_pytorch_rules() {
    use ape::model::resize::{linear_resize_matrix, resize_trilinear, sample_trilinear};
    use burn::tensor::{Tensor, TensorData};
    // F.interpolate(torch.tensor([[[0., 1.]]]), size=4, mode="linear", align_corners=False)
    // gives [0, 0.25, 0.75, 1].
    let m = linear_resize_matrix(2, 4);
    let applied: Vec<f32> = (0..4).map(|o| m[o * 2 + 1]).collect();
    assert_eq!(applied, vec![0.0, 0.25, 0.75, 1.0]);

    let device = backend::cpu().device;
    let values: Vec<f32> = (0..2 * 3 * 4).map(|v| v as f32).collect();
    let x = Tensor::<5>::from_data(TensorData::new(values, [1, 1, 2, 3, 4]), &device);
    let up = resize_trilinear(x.clone(), [4, 6, 8]);
    assert_eq!(up.dims(), [1, 1, 4, 6, 8]);
    // Point sampling at cell centres returns the cells themselves.
    let points = Tensor::<3>::from_data(
        TensorData::new(
            vec![1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.5],
            [1, 3, 3],
        ),
        &device,
    );
    let sampled: Vec<f32> = sample_trilinear(x, points)
        .into_data()
        .try_into_vec()
        .unwrap();
    assert_eq!(sampled, vec![23.0, 0.0, 0.5 * 12.0 + 4.0 + 1.5]);
}

#[test]
fn embed_writes_a_map_on_top_of_the_scan() {
    let Some(data) = common::shared_data("embed_writes_a_map_on_top_of_the_scan") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let scan_path = data.join("btcv/btcv_02.nii.gz");
    let map_path = dir.path().join("map.nii.gz");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ape"))
        .args([
            "embed",
            scan_path.to_str().unwrap(),
            "-o",
            map_path.to_str().unwrap(),
            "--backend",
            "cpu",
        ])
        .env("APE_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("network"), "{stdout}");
    let channels = ape::io::nifti::read_nifti_vector(&map_path).unwrap();
    assert_eq!(channels.len(), 3);
    let scan = ape::io::nifti::read_nifti(&scan_path).unwrap().volume;
    // The map covers the scan's field of view: same world box within one map cell.
    let (m, s) = (channels[0].world_bounds(), scan.world_bounds());
    let cell = channels[0].spacing().max_element();
    assert!((m.min - s.min).abs().max_element() <= cell, "{m} vs {s}");
    assert!((m.max - s.max).abs().max_element() <= cell, "{m} vs {s}");
    assert!(
        channels
            .iter()
            .all(|c| c.data().iter().all(|v| v.is_finite()))
    );
}

/// `ape embed` on a DICOM series folder goes through the map cache like a NIfTI file: the
/// second run is a cache hit and says so, and writes the same map.
#[test]
fn embedding_a_dicom_series_twice_hits_the_cache() {
    let Some(data) = common::shared_data("embedding_a_dicom_series_twice_hits_the_cache") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let series = data.join("ircad_17/dicom");
    let embed = |out: &str| {
        let map = dir.path().join(out);
        let args = [
            "embed".as_ref(),
            "--backend".as_ref(),
            "cpu".as_ref(),
            "-o".as_ref(),
            map.as_os_str(),
            series.as_os_str(),
        ];
        let stdout = common::run_ape(&args, &dir.path().join("cache"));
        (stdout, ape::io::nifti::read_nifti_vector(&map).unwrap())
    };
    let (first, first_map) = embed("first.nii.gz");
    assert!(first.contains("network"), "{first}");
    assert!(!first.contains("cache hit"), "{first}");
    let (second, second_map) = embed("second.nii.gz");
    assert!(second.contains("cache hit"), "{second}");
    assert!(!second.contains("network"), "{second}");
    for (a, b) in first_map.iter().zip(&second_map) {
        assert_eq!(a.data(), b.data());
    }
}
