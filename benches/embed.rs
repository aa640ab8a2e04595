//! Load → APE map timings: a BTCV scan and a 512×512×300 scan made by resampling it, on the CPU
//! backend (flex) and on wgpu (a real GPU where there is one, lavapipe otherwise), and the same
//! network in PyTorch on the same CPU (`benches/torch_reference.py`, when torch is installed).
//!
//! `cargo bench --bench embed` (needs ../shared/data). Prints figures; asserts nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

use anyhow::Context;
use ape::ape_map::ApeMap;
use ape::embed::{EmbedOptions, embed_scan, padded_input, prepare_input};
use ape::model::ApeModel;
use ape::model::backend::{self, ComputeDevice};
use ape::scan::Scan;
use burn::tensor::{Tensor, TensorData};

const RUNS: usize = 3;

fn main() -> anyhow::Result<()> {
    let Some(scans) = common::bench_scans("embed")? else {
        return Ok(());
    };
    let dir = &scans.dir;
    let cases = [
        ("btcv_02 (257×257×199)", scans.btcv_02.clone()),
        ("512×512×300 int16", scans.big.clone()),
    ];

    let mut devices = vec![backend::cpu()];
    match backend::wgpu() {
        Ok(gpu) => devices.push(gpu),
        Err(e) => println!("wgpu: {e}"),
    }
    println!(
        "threads: {} (rayon), runs: median of {RUNS}\n",
        rayon::current_num_threads()
    );
    // The first case's map on each device, to check that the backends agree on a real scan.
    let mut maps = Vec::new();
    for compute in &devices {
        let model = ApeModel::bundled(&compute.device)?;
        for (i, (name, path)) in cases.iter().enumerate() {
            let map = bench_case(&model, compute, name, path)?;
            if i == 0 {
                maps.push((compute.description.clone(), map));
            }
        }
    }
    if let [(cpu_name, cpu_map), (gpu_name, gpu_map)] = maps.as_slice() {
        let worst = cpu_map
            .cells()
            .data()
            .iter()
            .zip(gpu_map.cells().data())
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0.0f32, f32::max);
        println!(
            "{}: max |{cpu_name} − {gpu_name}| = {worst:.2e}\n",
            cases[0].0
        );
    }
    torch_reference(&cases, dir.path())?;
    Ok(())
}

fn bench_case(
    model: &ApeModel,
    compute: &ComputeDevice,
    name: &str,
    path: &Path,
) -> anyhow::Result<ApeMap> {
    let options = EmbedOptions::default();
    // One untimed run: wgpu compiles its shaders on first use.
    let warm = Instant::now();
    let scan = Scan::read(path)?;
    embed_scan(model, &compute.device, &scan.volume, &options, &mut |_| {})?;
    let warm_up = warm.elapsed();
    drop(scan);
    let mut load = Vec::new();
    let mut pre = Vec::new();
    let mut net = Vec::new();
    let mut total = Vec::new();
    let mut last = None;
    // A software adapter (lavapipe) is ~40× slower than flex: one timed run is enough there.
    let runs = if compute.description.contains("software") {
        1
    } else {
        RUNS
    };
    for _ in 0..runs {
        let start = Instant::now();
        let scan = Scan::read(path)?;
        load.push(start.elapsed());
        let (map, times) = embed_scan(model, &compute.device, &scan.volume, &options, &mut |_| {})?;
        total.push(start.elapsed());
        last = Some(map);
        pre.push(times.preprocess);
        net.push(times.network);
    }
    println!(
        "{:<44} {:<24} load {:6.3} s  preprocess {:6.3} s  network {:6.3} s  total {:6.3} s  (first run {:.1} s)",
        compute.description,
        name,
        median(&mut load),
        median(&mut pre),
        median(&mut net),
        median(&mut total),
        warm_up.as_secs_f64()
    );
    last.context("no timed run")
}

fn median(times: &mut [Duration]) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64()
}

/// Exports the bundled weights and each case's network input and output, then runs the PyTorch
/// reference on them.
fn torch_reference(cases: &[(&str, PathBuf)], dir: &Path) -> anyhow::Result<()> {
    let cpu = backend::cpu();
    let model = ApeModel::bundled(&cpu.device)?;
    let mut blob: Vec<u8> = Vec::new();
    let mut tensors = Vec::new();
    for t in model.net.named_tensors() {
        tensors
            .push(serde_json::json!({"name": t.name, "shape": t.shape, "offset": blob.len() / 4}));
        blob.extend(t.values.iter().flat_map(|v| v.to_le_bytes()));
    }
    std::fs::write(dir.join("weights.bin"), &blob)?;
    let mut exported = Vec::new();
    for (i, (name, path)) in cases.iter().enumerate() {
        let scan = Scan::read(path)?;
        let input = prepare_input(&model, &scan.volume)?;
        let (values, [x, y, z]) = padded_input(&model, &input);
        let shape = [1, 1, z, y, x];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join(format!("input{i}.bin")), bytes)?;
        let tensor = Tensor::<5>::from_data(TensorData::new(values, shape), &cpu.device);
        let start = Instant::now();
        let out: Vec<f32> = model
            .net
            .forward(tensor)
            .into_data()
            .try_into_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        println!(
            "burn   {name:<28} network {:7.3} s (one pass on {x}×{y}×{z}, flex)",
            start.elapsed().as_secs_f64()
        );
        // What `ape` runs on the CPU: the same network without burn (src/model/cpu_net.rs).
        let fast = model.net.cpu_inference().map_err(|e| anyhow::anyhow!(e))?;
        let flat: Vec<f32> = bytes_to_f32(&std::fs::read(dir.join(format!("input{i}.bin")))?);
        fast.forward(&flat, [z, y, x]);
        let mut times = Vec::new();
        let mut ours = Vec::new();
        for _ in 0..RUNS {
            let start = Instant::now();
            ours = fast.forward(&flat, [z, y, x]);
            times.push(start.elapsed());
        }
        let worst = ours
            .iter()
            .zip(&out)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "ape    {name:<28} network {:7.3} s (median of {RUNS}, cpu_net, {} threads)  max |cpu_net - burn| = {worst:.2e}",
            median(&mut times),
            rayon::current_num_threads()
        );
        let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(dir.join(format!("output{i}.bin")), bytes)?;
        exported.push(serde_json::json!({
            "name": name, "input": format!("input{i}.bin"), "output": format!("output{i}.bin"),
            "input_shape": shape,
        }));
    }
    let index = serde_json::json!({
        "config": model.meta.net,
        "tensors": tensors,
        "cases": exported,
        "threads": rayon::current_num_threads(),
    });
    std::fs::write(dir.join("weights.json"), serde_json::to_vec_pretty(&index)?)?;
    // Beside the working directory first: a bench binary carried to another machine runs there.
    let local = Path::new("benches/torch_reference.py");
    let script = if local.is_file() {
        local.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/torch_reference.py")
    };
    let status = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir)
        .status()
        .context("running python3")?;
    if !status.success() {
        println!("torch reference did not run (is torch installed? `pip install torch`)");
    }
    Ok(())
}

fn bytes_to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}
