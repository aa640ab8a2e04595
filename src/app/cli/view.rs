//! `ape view [SCAN|FOLDER]...`: the viewer. Without paths it opens a demo cohort: four BTCV
//! scans from the shared data folder when present, else four synthetic phantoms it writes itself.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use ape::cache::MapCache;
use ape::cohort::{scans_in, shared_data_dir};
use ape::model::backend::select;
use ape_app::viewer::ApeApp;

use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct ViewArgs {
    /// Scans (NIfTI) or folders of scans; none: the demo cohort.
    paths: Vec<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

impl ViewArgs {
    /// No paths, the bundled model, automatic backend: what `ape` alone opens.
    pub fn demo() -> Self {
        Self {
            paths: Vec::new(),
            model: ModelArgs::default(),
        }
    }
}

/// The demo cohort's scans, and what they are.
pub fn demo_cohort() -> anyhow::Result<(Vec<PathBuf>, String)> {
    let btcv = shared_data_dir(Path::new(".")).join("btcv");
    let cases: Vec<PathBuf> = ["btcv_02", "btcv_05", "btcv_25", "btcv_28"]
        .iter()
        .map(|c| btcv.join(format!("{c}.nii.gz")))
        .collect();
    if cases.iter().all(|c| c.is_file()) {
        return Ok((
            cases,
            format!("demo: four BTCV scans from {}", btcv.display()),
        ));
    }
    let dir = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/ape/demo"))
        .unwrap_or_else(|| std::env::temp_dir().join("ape-demo-cohort"))
        .join(format!("v{}", ape::phantom::VERSION));
    let scans = ape::phantom::write_demo_cohort(&dir, 4)?;
    Ok((
        scans,
        format!(
            "demo: four synthetic phantoms in {} (no ../shared/data here)",
            dir.display()
        ),
    ))
}

pub fn run(args: ViewArgs) -> anyhow::Result<ExitCode> {
    let (paths, what) = if args.paths.is_empty() {
        demo_cohort()?
    } else {
        let mut paths = Vec::new();
        for p in &args.paths {
            if p.is_dir() {
                paths.extend(scans_in(p)?);
            } else {
                paths.push(p.clone());
            }
        }
        (paths, String::new())
    };
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("ape: Anatomical Positional Embeddings")
            .with_inner_size([1400.0, 950.0])
            .with_drag_and_drop(true),
        // The renderer's device gets the adapter's full limits, so that burn can share it.
        wgpu_options: eframe::egui_wgpu::WgpuConfiguration {
            wgpu_setup: eframe::egui_wgpu::WgpuSetup::CreateNew(
                eframe::egui_wgpu::WgpuSetupCreateNew {
                    device_descriptor: Arc::new(ape::model::backend::device_descriptor),
                    ..eframe::egui_wgpu::WgpuSetupCreateNew::without_display_handle()
                },
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    let (choice, model_args) = (args.model.backend, args.model);
    eframe::run_native(
        "ape",
        options,
        Box::new(move |cc| {
            // On a hardware GPU the network runs on the renderer's own wgpu device; otherwise
            // on the device `--backend` selects (flex where the only adapter is a software one).
            let shared = cc.wgpu_render_state.as_ref().and_then(|rs| {
                ape::model::backend::shared_wgpu(
                    ape::model::backend::WgpuSetup {
                        instance: rs.instance.clone(),
                        adapter: rs.adapter.clone(),
                        device: rs.device.clone(),
                        queue: rs.queue.clone(),
                        backend: rs.adapter.get_info().backend,
                    },
                    choice,
                )
            });
            let compute = match shared {
                Some(c) => c,
                None => select(choice)?,
            };
            // A model that cannot be read must not keep the viewer from opening: scans show.
            let (model, note) = match model_args.load_on(&compute.device) {
                Ok(m) => (
                    Some(Arc::new(m)),
                    format!("{what}  ·  {}", compute.description),
                ),
                Err(e) => (None, format!("no APE model: {e:#}")),
            };
            let mut app = ApeApp::new(
                &cc.egui_ctx,
                model,
                compute.device.clone(),
                Some(MapCache::default_location()),
                note,
            )
            .with_gpu(cc.wgpu_render_state.as_ref());
            if let Some(dir) = ape_app::viewer::recent::config_dir() {
                app = app.with_recent_files(dir);
            }
            app.open(paths);
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the viewer could not start: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
