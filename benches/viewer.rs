//! The viewer's figures: time from opening a scan to its first slice, frame time while scrolling
//! 512×512 slices with the APE overlay, and memory with 20 scans loaded and embedded.
//!
//! `cargo bench --profile dev --bench viewer` (needs ../shared/data). Prints figures; asserts
//! nothing. Frames are driven through egui_kittest with the real app: a frame is the UI pass
//! (layout, the views' CPU slicing and overlay, texture upload requests, tessellation); the
//! GPU's rasterising of the finished frame is not in it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

use ape::cache::MapCache;
use ape::model::ApeModel;
use ape::model::backend::cpu;
use ape::scan::Scan;
use ape::slicing::{Plane, SliceGeometry, WindowLevel};
use ape_app::viewer::ApeApp;
use ape_app::viewer::slice_picture::cpu::render_view;
use ape_app::viewer::state::{OverlaySettings, ScanStatus};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

const FRAMES: usize = 120;

fn main() -> anyhow::Result<()> {
    let Some(scans) = common::bench_scans("viewer")? else {
        return Ok(());
    };
    let (btcv, big, dir) = (&scans.btcv_folder, &scans.big, &scans.dir);
    let model = Arc::new(ApeModel::bundled(&cpu().device)?);

    first_slice(big)?;
    slice_rendering(big, &model)?;
    scrolling_frames(big, &model, dir.path())?;
    twenty_scans(btcv, &model, dir.path())?;
    Ok(())
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median_ms(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e3
}

fn axial(scan: &Scan, z_offset: f64) -> SliceGeometry {
    let bounds = scan.volume.world_bounds();
    let mut centre = bounds.centre();
    centre.z += z_offset;
    SliceGeometry {
        plane: Plane::Axial,
        centre,
        pixel_mm: bounds.size().x / 512.0,
        width: 512,
        height: 512,
    }
}

/// Opening a scan to its first picture: reading the file (the worker's part), then the three
/// views' pictures at 512 × 512 pixels (the UI's part, before any map exists).
fn first_slice(path: &Path) -> anyhow::Result<()> {
    let mut read = Vec::new();
    let mut pictures = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let scan = Scan::read(path)?;
        read.push(t.elapsed());
        let t = Instant::now();
        for plane in Plane::ALL {
            let g = SliceGeometry {
                plane,
                ..axial(&scan, 0.0)
            };
            std::hint::black_box(render_view(
                &scan.volume,
                None,
                &g,
                WindowLevel::PRESETS[0].1,
                &OverlaySettings::default(),
            ));
        }
        pictures.push(t.elapsed());
    }
    let (r, p) = (median_ms(read), median_ms(pictures));
    println!(
        "open → first slice, 512×512×300 int16 (.nii.gz): {:.0} ms (read {r:.0} ms + three 512×512 views {p:.1} ms)",
        r + p
    );
    Ok(())
}

/// One axial picture of 512 × 512 pixels per scrolled slice, with the RGB overlay and with
/// iso-lines: the work a scroll step costs the CPU path.
fn slice_rendering(path: &Path, model: &ApeModel) -> anyhow::Result<()> {
    let scan = Scan::read(path)?;
    let (map, _) = ape::embed::embed_scan(
        model,
        &cpu().device,
        &scan.volume,
        &ape::embed::EmbedOptions::default(),
        &mut |_| {},
    )?;
    for (what, overlay) in [
        ("RGB overlay", OverlaySettings::default()),
        (
            "RGB overlay + iso-lines",
            OverlaySettings {
                isolines: true,
                ..OverlaySettings::default()
            },
        ),
    ] {
        let mut times = Vec::new();
        for i in 0..FRAMES {
            let g = axial(&scan, (i as f64 - FRAMES as f64 / 2.0) * 0.9);
            let t = Instant::now();
            std::hint::black_box(render_view(
                &scan.volume,
                Some(&map),
                &g,
                WindowLevel::PRESETS[0].1,
                &overlay,
            ));
            times.push(t.elapsed());
        }
        let ms = median_ms(times);
        println!(
            "one 512×512 axial picture while scrolling, {what}: {ms:.2} ms ({:.0} pictures/s)",
            1e3 / ms
        );
    }
    Ok(())
}

fn app_harness(model: &Arc<ApeModel>, cache: &Path) -> Harness<'static, ApeApp> {
    let model = model.clone();
    let cache = cache.to_owned();
    Harness::builder()
        .with_size(egui::vec2(1600.0, 1100.0))
        .build_eframe(move |cc| {
            ApeApp::new(
                &cc.egui_ctx,
                Some(model),
                cpu().device,
                Some(MapCache::new(cache)),
                "bench".into(),
            )
        })
}

fn wait_ready(harness: &mut Harness<'_, ApeApp>) {
    let start = Instant::now();
    while harness
        .state()
        .state
        .cohort
        .iter()
        .any(|s| matches!(s.status, ScanStatus::Loading | ScanStatus::Embedding(_)))
        && start.elapsed() < Duration::from_secs(900)
    {
        harness.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    harness.step();
}

/// Whole UI frames while the mouse wheel scrolls the axial view of the 512×512×300 scan with
/// its overlay on.
fn scrolling_frames(path: &Path, model: &Arc<ApeModel>, dir: &Path) -> anyhow::Result<()> {
    let mut harness = app_harness(model, &dir.join("cache-scroll"));
    harness.state_mut().open([path.to_owned()]);
    wait_ready(&mut harness);
    let rect = harness.get_by_label_contains("axial view of").rect();
    harness
        .input_mut()
        .events
        .push(egui::Event::PointerMoved(rect.center()));
    harness.step();
    let mut times = Vec::new();
    for i in 0..FRAMES {
        let delta = if i < FRAMES / 2 { 40.0 } else { -40.0 };
        harness.input_mut().events.push(egui::Event::MouseWheel {
            unit: egui::MouseWheelUnit::Point,
            delta: egui::vec2(0.0, delta),
            modifiers: egui::Modifiers::default(),
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Wheel,
        });
        let t = Instant::now();
        harness.step();
        times.push(t.elapsed());
    }
    let ms = median_ms(times);
    let view = harness.get_by_label_contains("axial view of").rect();
    println!(
        "UI frame while scrolling (1600×1100 window, axial view {:.0}×{:.0} px, RGB overlay): {ms:.1} ms median ({:.0} fps)",
        view.width(),
        view.height(),
        1e3 / ms
    );
    Ok(())
}

/// The process's memory with the 20 BTCV scans opened, read and embedded in the app.
fn twenty_scans(btcv: &Path, model: &Arc<ApeModel>, dir: &Path) -> anyhow::Result<()> {
    let scans = ape::cohort::scans_in(btcv)?;
    let before = rss_mb();
    let mut harness = app_harness(model, &dir.join("cache-20"));
    let t = Instant::now();
    harness.state_mut().open(scans.clone());
    wait_ready(&mut harness);
    let seconds = t.elapsed().as_secs_f64();
    let state = &harness.state().state;
    let ready = state
        .cohort
        .iter()
        .filter(|s| matches!(s.status, ScanStatus::Ready))
        .count();
    let voxels: usize = state
        .cohort
        .iter()
        .filter_map(|s| s.scan.as_ref())
        .map(|s| s.volume.data().len())
        .sum();
    let after = rss_mb();
    println!(
        "{} scans opened ({ready} embedded, {:.0} M voxels) in {seconds:.0} s: resident memory {after:.0} MB ({:.0} MB more than before)",
        scans.len(),
        voxels as f64 / 1e6,
        after - before
    );
    Ok(())
}
