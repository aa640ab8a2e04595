//! Training steps per second on the CPU: `cargo bench --profile dev -p ape-training --bench
//! train_step` (the bench belongs to the trainer crate; its source sits beside the others).
//!
//! For 4 and 8 crop pairs of 96×96×64 voxels with 512 positives per pair, the default network
//! and the equiv loss: the median time of one optimisation step (forward, loss, backward,
//! AdamW) after warm-up, on burn's flex backend with burn's own convolutions and with ape's
//! (`ape::model::ops`), batches made beforehand; the time to make one batch (crop resampling
//! and augmentation, one thread); and PyTorch running the same network and loss on the same
//! cores (`benches/torch_train_step.py`, skipped with a message when torch is absent).
//!
//! Environment: `APE_BENCH_PAIRS=4,8` (which pair counts), `APE_BENCH_STEPS=5` (timed steps
//! after 2 warm-up steps), `APE_BENCH_PATHS=burn,ape` (which ops: `burn` all burn's, `conv` ape's
//! convolutions with burn's batch norms, `ape` ape's convolutions and fused batch norm + ReLU),
//! `APE_BENCH_DEVICE=wgpu` (the same on burn's wgpu backend: `burn` burn's convolutions, `ape`
//! ape's CubeCL kernels, `ape::model::ops::cube`; the torch reference then uses CUDA when it
//! has it), `APE_BENCH_LAYERS=1` (each kind of layer alone, burn's against ape's).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ape::model::{ApeModel, ModelMeta, ops};
use ape::resample::resample_linear_onto;
use ape_training::config::{TrainConfig, Variant};
use ape_training::data::{Batch, TrainScan, make_batch};
use ape_training::train::Trainer;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn config(pairs: usize) -> TrainConfig {
    TrainConfig::new(Variant::Equiv)
        .with_pairs(pairs)
        .with_positives_per_pair(512)
        .with_steps(100_000)
        .with_warmup_steps(10)
        .with_learning_rate(1e-4)
        .with_eval_every(0)
}

/// A training scan: btcv_02 from the shared data when it is there, else the demo phantom.
fn training_scan(dir: &Path) -> anyhow::Result<(TrainScan, String)> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repository = manifest
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(manifest);
    let btcv = ape::cohort::shared_data_dir(repository).join("btcv/btcv_02.nii.gz");
    let window = ape::intensity::HuWindow::MODEL;
    if btcv.is_file() {
        return Ok((TrainScan::load(&btcv, window)?, "btcv_02".to_owned()));
    }
    let files = ape::phantom::write_demo_cohort(dir, 1)?;
    let path = files
        .first()
        .ok_or_else(|| anyhow::anyhow!("no phantom written"))?;
    Ok((TrainScan::load(path, window)?, "demo phantom".to_owned()))
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    let pairs_list: Vec<usize> = env_list("APE_BENCH_PAIRS", "4,8")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let timed: usize = std::env::var("APE_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let paths = env_list("APE_BENCH_PATHS", "burn,ape");
    let dir = tempfile::tempdir()?;
    let (scan, scan_name) = training_scan(dir.path())?;
    let scans = Arc::new(vec![scan]);
    let on_wgpu = std::env::var("APE_BENCH_DEVICE").is_ok_and(|v| v == "wgpu");
    let device = if on_wgpu {
        ape::model::backend::wgpu()?
    } else {
        ape::model::backend::cpu()
    };
    println!(
        "train_step: 2 × pairs crops of 96×96×64, 512 positives per pair, {scan_name}, {}",
        device.description
    );
    println!("| path | pairs | ms per step (median of {timed}) | steps/s |");
    println!("| --- | --- | --- | --- |");
    let mut results = Vec::new();
    for &pairs in &pairs_list {
        let config = config(pairs);
        // Batches made beforehand (the step alone is timed); their cost is timed below.
        let batches: Vec<Batch> = (0..timed + 2)
            .map(|step| make_batch(&config, &scans, step))
            .collect();
        for path in &paths {
            let (fast, norm) = match path.as_str() {
                "burn" => (false, false),
                "conv" => (true, false),
                "ape" => (true, true),
                other => anyhow::bail!("unknown path {other:?}: use burn, conv or ape"),
            };
            ops::set_enabled(fast);
            ops::norm::set_enabled(norm);
            ops::set_cube_kernels(fast);
            let model =
                ApeModel::initialised(ModelMeta::fresh("bench".to_owned()), 7, &device.device);
            let mut trainer = Trainer::from_model(config.clone(), model, device.device.clone());
            let mut times = Vec::new();
            let mut phases: [Vec<f64>; 4] = Default::default();
            for (i, batch) in batches.iter().enumerate() {
                let began = Instant::now();
                let loss = trainer.train_step(batch);
                let seconds = began.elapsed().as_secs_f64();
                if !loss.total.is_finite() {
                    anyhow::bail!("{path}, {pairs} pairs: loss {}", loss.total);
                }
                if i >= 2 {
                    times.push(seconds);
                    let t = trainer.last_times;
                    for (list, v) in
                        phases
                            .iter_mut()
                            .zip([t.forward, t.loss, t.backward, t.optimizer])
                    {
                        list.push(v);
                    }
                }
            }
            let m = median(times);
            let [f, l, b, o] = phases.map(|p| median(p) * 1e3);
            println!(
                "| {path} | {pairs} | {:.0} (forward {f:.0}, loss {l:.0}, backward {b:.0}, AdamW {o:.0}) | {:.2} |",
                m * 1e3,
                1.0 / m
            );
            results.push((path.clone(), pairs, m));
        }
        // Data preparation: one batch on one thread (the trainer makes them on worker threads).
        let began = Instant::now();
        let n = 3;
        for step in 0..n {
            std::hint::black_box(make_batch(&config, &scans, 1000 + step));
        }
        let per_batch = began.elapsed().as_secs_f64() / n as f64;
        // Of which the trilinear resampling of the crops alone.
        let volume = &scans[0].volume;
        let began = Instant::now();
        for _ in 0..2 * pairs {
            let affine = ape::geometry::Affine::from_spacing(
                glam::DVec3::new(2.0, 2.0, 3.5),
                volume.world_bounds().min,
            )?;
            std::hint::black_box(resample_linear_onto(volume, [96, 96, 64], affine, 0.0)?);
        }
        let resampling = began.elapsed().as_secs_f64();
        println!(
            "| data preparation, one thread | {pairs} | {:.0} (of which resampling {:.0}) | |",
            per_batch * 1e3,
            resampling * 1e3
        );
    }
    ops::set_enabled(true);
    ops::norm::set_enabled(true);
    if std::env::var("APE_BENCH_LAYERS").is_ok_and(|v| v != "0") {
        layers(&device.device, timed)?;
    }
    torch_reference(&pairs_list, timed, on_wgpu);
    Ok(())
}

/// Each kind of layer of the default network at 4 crop pairs (8 crops of 96×96×64), forward
/// and backward under autodiff, burn's convolutions against ape's: where a step's time goes.
/// Each timing ends by waiting for the device, so that a GPU's queued work is counted.
fn layers(device: &burn::tensor::Device, timed: usize) -> anyhow::Result<()> {
    use burn::tensor::{Distribution, Tensor};
    let device = device.clone().autodiff();
    let sync = || device.sync().map_err(|e| anyhow::anyhow!("device: {e:?}"));
    let b = 8;
    // (name, cin, cout, kernel, input d/h/w, how many the network has)
    type Layer = (&'static str, usize, usize, usize, [usize; 3], usize);
    let convs: [Layer; 11] = [
        ("stem 4×4×4/4, 1→16", 1, 16, 4, [64, 96, 96], 1),
        ("3×3×3 16→16 at 16×24×24", 16, 16, 3, [16, 24, 24], 3),
        ("3×3×3 32→16 at 16×24×24", 32, 16, 3, [16, 24, 24], 1),
        ("down 2×2×2/2 16→32", 16, 32, 2, [16, 24, 24], 1),
        ("3×3×3 32→32 at 8×12×12", 32, 32, 3, [8, 12, 12], 3),
        ("3×3×3 64→32 at 8×12×12", 64, 32, 3, [8, 12, 12], 1),
        ("down 2×2×2/2 32→64", 32, 64, 2, [8, 12, 12], 1),
        ("3×3×3 64→64 at 4×6×6", 64, 64, 3, [4, 6, 6], 2),
        // The up blocks run before their nearest upsampling, which they commute with.
        ("up 1×1×1 32→16 at 8×12×12", 32, 16, 1, [8, 12, 12], 1),
        ("up 1×1×1 64→32 at 4×6×6", 64, 32, 1, [4, 6, 6], 1),
        ("head 1×1×1 16→3 at 16×24×24", 16, 3, 1, [16, 24, 24], 1),
    ];
    println!();
    println!(
        "Layers at 8 crops, ms (median of {timed}), forward / backward; × how many the network has"
    );
    println!("| layer | × | burn | ape |");
    println!("| --- | --- | --- | --- |");
    let time = |f: &mut dyn FnMut() -> f64| -> f64 {
        let mut v: Vec<f64> = (0..timed + 1).map(|_| f()).collect();
        v.remove(0);
        median(v) * 1e3
    };
    let mut totals = [[0.0f64; 2]; 2];
    for (name, cin, cout, k, [d, h, w], count) in convs {
        let stride = if k == 3 { 1 } else { k };
        let padding = usize::from(k == 3);
        let mut cells = Vec::new();
        for (path, fast) in [(0, false), (1, true)] {
            ops::set_enabled(fast);
            ops::set_cube_kernels(fast);
            let x = Tensor::<5>::random([b, cin, d, h, w], Distribution::Default, &device)
                .require_grad();
            let weight = Tensor::<5>::random([cout, cin, k, k, k], Distribution::Default, &device)
                .require_grad();
            let mut fwd = Vec::new();
            let mut bwd = Vec::new();
            for _ in 0..timed + 1 {
                sync()?;
                let began = Instant::now();
                let out = ops::conv3d(x.clone(), weight.clone(), stride, padding);
                let out_dims = out.dims();
                std::hint::black_box(&out);
                sync()?;
                fwd.push(began.elapsed().as_secs_f64());
                let r = Tensor::<5>::ones(out_dims, &device);
                let loss = (out * r).sum();
                sync()?;
                let began = Instant::now();
                std::hint::black_box(loss.backward());
                sync()?;
                bwd.push(began.elapsed().as_secs_f64());
            }
            fwd.remove(0);
            bwd.remove(0);
            let (f, bk) = (median(fwd) * 1e3, median(bwd) * 1e3);
            totals[path][0] += f * count as f64;
            totals[path][1] += bk * count as f64;
            cells.push(format!("{f:.1} / {bk:.1}"));
        }
        println!("| {name} | {count} | {} | {} |", cells[0], cells[1]);
    }
    for (name, c, [d, h, w], count) in [
        ("batch norm + ReLU, 16 ch at 16×24×24", 16, [16, 24, 24], 5),
        ("batch norm + ReLU, 16 ch at 8×12×12", 16, [8, 12, 12], 1),
        ("batch norm + ReLU, 32 ch at 8×12×12", 32, [8, 12, 12], 5),
        ("batch norm + ReLU, 32 ch at 4×6×6", 32, [4, 6, 6], 1),
        ("batch norm + ReLU, 64 ch at 4×6×6", 64, [4, 6, 6], 3),
    ] {
        let mut cells = Vec::new();
        for (path, fast) in [(0, false), (1, true)] {
            ops::set_enabled(fast);
            let norm = burn::nn::BatchNormConfig::new(c).init(&device);
            let x =
                Tensor::<5>::random([b, c, d, h, w], Distribution::Default, &device).require_grad();
            let r = Tensor::<5>::random([b, c, d, h, w], Distribution::Default, &device);
            let mut bwd = Vec::new();
            let f = time(&mut || {
                let _ = sync();
                let began = Instant::now();
                let out = ops::norm::batch_norm(&norm, x.clone(), true);
                let _ = sync();
                let t = began.elapsed().as_secs_f64();
                // A contiguous output gradient, as the next convolution gives.
                let loss = (out * r.clone()).sum();
                let _ = sync();
                let began = Instant::now();
                std::hint::black_box(loss.backward());
                let _ = sync();
                bwd.push(began.elapsed().as_secs_f64());
                t
            });
            bwd.remove(0);
            let bk = median(bwd) * 1e3;
            totals[path][0] += f * count as f64;
            totals[path][1] += bk * count as f64;
            cells.push(format!("{f:.1} / {bk:.1}"));
        }
        println!("| {name} | {count} | {} | {} |", cells[0], cells[1]);
    }
    ops::set_enabled(true);
    ops::set_cube_kernels(false);
    println!(
        "| all of these, summed by count | | {:.0} / {:.0} | {:.0} / {:.0} |",
        totals[0][0], totals[0][1], totals[1][0], totals[1][1]
    );
    Ok(())
}

fn torch_reference(pairs: &[usize], timed: usize, gpu: bool) {
    let local = Path::new("benches/torch_train_step.py");
    let script = if local.is_file() {
        local.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/torch_train_step.py")
    };
    let list: Vec<String> = pairs.iter().map(ToString::to_string).collect();
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg("--pairs")
        .arg(list.join(","))
        .arg("--steps")
        .arg(timed.to_string())
        .arg("--threads")
        .arg(rayon::current_num_threads().to_string())
        .arg("--device")
        .arg(if gpu { "cuda" } else { "cpu" })
        .output();
    match output {
        Ok(out) if out.status.success() => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Ok(out) => println!(
            "torch reference did not run (is torch installed? `pip install torch`): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("torch reference did not run: python3: {e}"),
    }
}
