//! The viewer's network on the renderer's own wgpu device (lavapipe here, the GPU where there is
//! one): the map it makes equals the CPU backend's. Its own test binary, because burn's wgpu
//! runtime is set up once per process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ape::model::ApeModel;
use ape::model::backend::{BackendChoice, WgpuSetup, cpu, shared_wgpu};
use ape_app::viewer::ApeApp;
use ape_app::viewer::state::ScanStatus;
use egui_kittest::Harness;

#[test]
fn the_network_runs_on_the_renderers_device_and_matches_the_cpu() {
    // Small (64 × 64 × 32 voxels): wgpu on lavapipe tunes its kernels on first use.
    let dir = tempfile::tempdir().unwrap();
    let affine =
        ape::Affine::from_spacing(glam::DVec3::new(3.0, 3.0, 4.0), glam::DVec3::ZERO).unwrap();
    let volume = ape::Volume::from_fn([64, 64, 32], affine, |i, j, k| {
        let r = ((i as f32 - 32.0).powi(2) + (j as f32 - 30.0).powi(2)).sqrt();
        if r < 26.0 {
            (40.0 + 3.0 * k as f32 + (i as f32 * 0.7).sin() * 60.0) as i16
        } else {
            -1000
        }
    })
    .unwrap();
    let scans = vec![dir.path().join("small.nii.gz")];
    ape::io::nifti::write_nifti(&scans[0], &volume).unwrap();
    let description = Arc::new(Mutex::new(None));
    let seen = description.clone();
    let mut harness = Harness::builder()
        .with_size(egui::vec2(800.0, 600.0))
        // The renderer's device as `ape view` asks for it.
        .wgpu_setup(eframe::egui_wgpu::WgpuSetup::CreateNew(
            eframe::egui_wgpu::WgpuSetupCreateNew {
                device_descriptor: Arc::new(ape::model::backend::device_descriptor),
                ..eframe::egui_wgpu::WgpuSetupCreateNew::without_display_handle()
            },
        ))
        .build_eframe(move |cc| {
            let rs = cc
                .wgpu_render_state
                .as_ref()
                .expect("kittest's wgpu renderer");
            let setup = WgpuSetup {
                instance: rs.instance.clone(),
                adapter: rs.adapter.clone(),
                device: rs.device.clone(),
                queue: rs.queue.clone(),
                backend: rs.adapter.get_info().backend,
            };
            // Auto keeps a software adapter for the views only (flex computes faster).
            let software = rs.adapter.get_info().device_type == eframe::wgpu::DeviceType::Cpu;
            if software {
                assert!(shared_wgpu(setup.clone(), BackendChoice::Auto).is_none());
            }
            let compute =
                shared_wgpu(setup, BackendChoice::Wgpu).expect("burn on the renderer's device");
            *seen.lock().unwrap() = Some(compute.description.clone());
            let model = Arc::new(ApeModel::bundled(&compute.device).unwrap());
            ApeApp::new(
                &cc.egui_ctx,
                Some(model),
                compute.device,
                None,
                "test".into(),
            )
            .with_gpu(cc.wgpu_render_state.as_ref())
        });
    let described = description.lock().unwrap().clone().unwrap();
    assert!(described.contains("shared with the viewer"), "{described}");
    harness.state_mut().open(scans.clone());
    let start = Instant::now();
    while !matches!(
        harness.state().state.cohort[0].status,
        ScanStatus::Ready | ScanStatus::Failed(_)
    ) {
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "embedding timed out"
        );
        harness.step();
        std::thread::sleep(Duration::from_millis(50));
    }
    let on_gpu = harness.state().state.cohort[0].map.clone().expect("a map");

    let flex = cpu();
    let model = ApeModel::bundled(&flex.device).unwrap();
    let scan = ape::scan::Scan::read(&scans[0]).unwrap();
    let (on_cpu, _) = ape::embed::embed_scan(
        &model,
        &flex.device,
        &scan.volume,
        &ape::embed::EmbedOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(on_gpu.shape(), on_cpu.shape());
    let max = on_gpu
        .cells()
        .data()
        .iter()
        .zip(on_cpu.cells().data())
        .flat_map(|(a, b)| (0..3).map(move |c| (a[c] - b[c]).abs()))
        .fold(0.0f32, f32::max);
    eprintln!("{described}: max difference from flex {max:.2e}");
    assert!(max < 1e-3, "{max}");
}
