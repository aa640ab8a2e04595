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
//! after 2 warm-up steps), `APE_BENCH_PATHS=burn,ape` (which convolutions).

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
    let device = ape::model::backend::cpu();
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
            let fast = match path.as_str() {
                "burn" => false,
                "ape" => true,
                other => anyhow::bail!("unknown path {other:?}: use burn or ape"),
            };
            ops::set_enabled(fast);
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
    torch_reference(&pairs_list, timed);
    Ok(())
}

fn torch_reference(pairs: &[usize], timed: usize) {
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
