//! `ape-train`: self-supervised training of the APE model (method.md), on wgpu by default or on
//! burn's CPU backend (`flex`) with `--backend cpu`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use ape::model::ModelMeta;
use ape::model::backend::{BackendChoice, select};
use burn::config::Config;
use clap::{Parser, Subcommand};

use ape_training::config::{TrainConfig, Variant};
use ape_training::{data, evaluate, plot, train};

/// The labelled scans kept out of the bundled model's training, for evaluation.
const HELD_OUT: &str = "btcv_25,btcv_26,btcv_27,btcv_28,btcv_29";

#[derive(Debug, Parser)]
#[command(
    name = "ape-train",
    version,
    about = "Self-supervised training of the APE model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model on the scans (NIfTI) of the given folders; no labels are used.
    Train(TrainArgs),
    /// Redraw `loss.png` from a run's `loss.csv`.
    Plot {
        #[arg(long, default_value = "runs/ape")]
        out: PathBuf,
    },
    /// Retrieval error (MRE_c, per axis) of a model on held-out labelled scans, beside the
    /// body-box baseline.
    Evaluate {
        /// A model file (default: the bundled model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Folder of labelled scans (BTCV layout; default: btcv in the shared data folder,
        /// `$APE_SHARED_DATA` or ../shared/data).
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, value_delimiter = ',', default_value = HELD_OUT)]
        scans: Vec<String>,
        /// Retrieve among all map cells, not only those inside the body.
        #[arg(long)]
        everywhere: bool,
    },
    /// The mean of several model files' weights (copies of one run: stochastic weight
    /// averaging), written as one model file.
    Average {
        /// Model files of the same network.
        #[arg(required = true)]
        models: Vec<PathBuf>,
        #[arg(long, short)]
        out: PathBuf,
        /// The averaged model's description (default: the first one's, with the list).
        #[arg(long)]
        description: Option<String>,
        /// Recompute the batch norms' running statistics over the scans of these folders,
        /// leaving out --hold-out: over training batches (--crops-config) or whole scans.
        #[arg(long)]
        recalibrate: Vec<PathBuf>,
        /// Recalibrate on the batches of this training config (its crops and augmentations),
        /// `--batches` of them, instead of on whole scans.
        #[arg(long)]
        crops_config: Option<PathBuf>,
        #[arg(long, default_value_t = 200)]
        batches: usize,
        #[arg(long, value_delimiter = ',', default_value = HELD_OUT)]
        hold_out: Vec<String>,
        /// The input spacing (mm, X,Y,Z) the written model embeds at, instead of the first
        /// model's (e.g. the one a sweep chose for it).
        #[arg(long, value_delimiter = ',')]
        input_spacing: Option<Vec<f64>>,
    },
    /// List the scans found in the folders, read exactly as training reads them.
    Inventory {
        #[arg(required = true)]
        folders: Vec<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// Folders of scans to train on.
    #[arg(long = "data", required = true)]
    data: Vec<PathBuf>,
    /// Run folder: config.json, checkpoint/, loss.csv, loss.png, eval.csv.
    #[arg(long, default_value = "runs/ape")]
    out: PathBuf,
    /// wgpu (the application's backend) or cpu (burn flex: the fast one without a GPU).
    #[arg(long, default_value = "wgpu")]
    backend: BackendChoice,
    #[arg(long, value_enum, default_value = "equiv")]
    variant: VariantArg,
    /// A config file (JSON, as saved in a run folder) instead of the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// With --resume: a fresh AdamW instead of the checkpoint's state (for a checkpoint whose
    /// optimizer.bin was lost, as the repository's copies of long runs; not an exact resume).
    #[arg(long, requires = "resume")]
    fresh_optimizer: bool,
    /// Start from the weights of this model file instead of a fresh initialisation.
    #[arg(long, conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// Labelled scans kept out of training and used for retrieval evaluation (names without
    /// .nii.gz, found in the --data folders with their `_label` maps).
    #[arg(long, value_delimiter = ',', default_value = HELD_OUT)]
    hold_out: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum VariantArg {
    Naive,
    Aug,
    Equiv,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Train(args) => train(args),
        Command::Plot { out } => {
            plot::plot_csv(&out.join("loss.csv"), &out.join("loss.png"))?;
            println!("wrote {}", out.join("loss.png").display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Inventory { folders } => inventory(&folders),
        Command::Average {
            models,
            out,
            description,
            recalibrate,
            crops_config,
            batches,
            hold_out,
            input_spacing,
        } => average(
            &models,
            &out,
            description,
            &recalibrate,
            crops_config.as_deref().map(|c| (c, batches)),
            &hold_out,
            input_spacing.as_deref(),
        ),
        Command::Evaluate {
            model,
            data,
            scans,
            everywhere,
        } => {
            let cpu = ape::model::backend::cpu();
            let model = match model {
                Some(path) => ape::model::ApeModel::load(&path, &cpu.device)?,
                None => ape::model::ApeModel::bundled(&cpu.device)?,
            };
            let data = data.unwrap_or_else(|| {
                ape::cohort::shared_data_dir(std::path::Path::new(".")).join("btcv")
            });
            let cases = ape::cohort::labelled_cases_named(&data, &scans)?;
            anyhow::ensure!(
                cases.len() >= 2,
                "need at least two labelled scans in {}",
                data.display()
            );
            let mut held_out = evaluate::HeldOut::load(&cases, cpu.device)?;
            held_out.search_everywhere = everywhere;
            println!("model: {}", model.meta.description);
            println!("scans: {}", held_out.names().join(", "));
            let report = held_out.evaluate(&model)?;
            println!("MRE_c APE       {}", report.ape);
            println!("MRE_c baseline  {}", report.baseline);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    // The run folder must not be, hold or lie inside a data folder: checkpoints and loss.csv
    // would mix with (or replace) the scans.
    let mut inputs: Vec<ape::validate::Input<'_>> = args
        .data
        .iter()
        .map(|d| ape::validate::Input::new("a data folder", d))
        .collect();
    if let Some(init) = &args.init {
        inputs.push(ape::validate::Input::new("the --init model", init));
    }
    ape::validate::output_path(
        &args.out,
        ape::validate::OutputKind::Folder,
        "the run folder",
        &inputs,
    )?;
    for d in &args.data {
        let (out, data) = (
            ape::validate::resolved(&args.out),
            ape::validate::resolved(d),
        );
        anyhow::ensure!(
            !out.starts_with(&data),
            "{}: the run folder lies inside the data folder {}; choose another --out",
            args.out.display(),
            d.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let saved = args.out.join("config.json");
    let mut config = match (&args.config, args.resume && saved.is_file()) {
        (Some(path), _) => TrainConfig::load_with_defaults(path)?,
        (None, true) => TrainConfig::load_with_defaults(&saved)?,
        (None, false) => TrainConfig::new(match args.variant {
            VariantArg::Naive => Variant::Naive,
            VariantArg::Aug => Variant::Aug,
            VariantArg::Equiv => Variant::Equiv,
        }),
    };
    if let Some(steps) = args.steps {
        config.steps = steps;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    config
        .save(&saved)
        .map_err(|e| anyhow::anyhow!("saving {}: {e}", saved.display()))?;

    let compute = select(args.backend)?;
    println!("backend: {}", compute.description);
    let files = data::training_files(&args.data, &args.hold_out)?;
    anyhow::ensure!(!files.is_empty(), "no scans found in {:?}", args.data);
    let meta = ModelMeta {
        net: config.network(ape::model::ApeNetConfig::new()),
        trained: true,
        held_out: args
            .hold_out
            .iter()
            .map(|h| ape::cohort::nifti_stem(std::path::Path::new(h)).unwrap_or_else(|| h.clone()))
            .collect(),
        ..ModelMeta::fresh(format!(
            "APE-{:?}, trained by ape-train on {} scans for {} steps (seed {})",
            config.variant,
            files.len(),
            config.steps,
            config.seed
        ))
    };
    meta.net
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: the network: {e}", saved.display()))?;
    let mut scans = Vec::with_capacity(files.len());
    for path in &files {
        scans.push(data::TrainScan::load(path, meta.hu_window)?);
    }
    println!("training on {} scans: {}", scans.len(), names(&files));
    if config.girth_position_scale {
        let girths: Vec<String> = scans.iter().map(|s| format!("{:.0}", s.girth_mm)).collect();
        println!(
            "their girths, mm (the position scale's factor): {}",
            girths.join(", ")
        );
    }
    let held_cases: Vec<_> = args
        .data
        .iter()
        .filter_map(|folder| ape::cohort::labelled_cases(folder).ok())
        .flatten()
        .filter(|c| args.hold_out.contains(&c.name))
        .collect();
    let held_out = if held_cases.is_empty() || config.eval_every == 0 {
        None
    } else {
        let h = evaluate::HeldOut::load(&held_cases, compute.device.clone())?;
        println!("held out for evaluation: {}", h.names().join(", "));
        Some(h)
    };

    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    let _ = ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed));

    // clap lets --fresh-optimizer come only with --resume.
    let resume = match (args.resume, args.fresh_optimizer) {
        (false, _) => train::Resume::No,
        (true, false) => train::Resume::Exact,
        (true, true) => train::Resume::FreshOptimizer,
    };
    let mut trainer = train::Trainer::start(
        config,
        meta,
        compute.device.clone(),
        &args.out,
        resume,
        args.init.as_deref(),
    )?;
    if trainer.step > 0 {
        let optimiser = match resume {
            train::Resume::FreshOptimizer => " with a fresh optimiser",
            train::Resume::No | train::Resume::Exact => "",
        };
        println!("resuming at step {}{optimiser}", trainer.step);
    }
    let started = std::time::Instant::now();
    let first = trainer.step;
    let losses = train::run(
        &mut trainer,
        Arc::new(scans),
        &args.out,
        held_out.as_ref(),
        stop,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    plot::plot_csv(&args.out.join("loss.csv"), &args.out.join("loss.png"))?;
    let done = trainer.step - first;
    println!(
        "{done} steps in {seconds:.0} s ({:.2} steps/s); final loss {:.4}; model {}",
        done as f64 / seconds.max(1e-9),
        losses.last().map_or(f32::NAN, |l| l.total),
        args.out.join("checkpoint/model.apemodel").display()
    );
    Ok(ExitCode::SUCCESS)
}

fn average(
    paths: &[PathBuf],
    out: &std::path::Path,
    description: Option<String>,
    recalibrate: &[PathBuf],
    crops: Option<(&std::path::Path, usize)>,
    hold_out: &[String],
    input_spacing: Option<&[f64]>,
) -> anyhow::Result<ExitCode> {
    let cpu = ape::model::backend::cpu();
    let models = paths
        .iter()
        .map(|p| ape::model::ApeModel::load(p, &cpu.device))
        .collect::<Result<Vec<_>, _>>()?;
    let first = models
        .first()
        .map(|m| m.meta.description.clone())
        .unwrap_or_default();
    let mut model = ape::model::average::average(models)?;
    let mut what = format!("mean of the weights of {}", names(paths));
    match input_spacing {
        None => {}
        Some(&[x, y, z]) => {
            model = model.with_input_spacing([x, y, z])?;
            what.push_str(&format!(", embedding at {x} × {y} × {z} mm"));
        }
        Some(other) => anyhow::bail!("--input-spacing takes X,Y,Z in mm, not {other:?}"),
    }
    if !recalibrate.is_empty() {
        let files = data::training_files(recalibrate, hold_out)?;
        anyhow::ensure!(!files.is_empty(), "no scans found in {recalibrate:?}");
        let inputs: Box<dyn Iterator<Item = burn::tensor::TensorData>> =
            if let Some((config, count)) = crops {
                let config = TrainConfig::load_with_defaults(config)?;
                let mut scans = Vec::with_capacity(files.len());
                for path in &files {
                    scans.push(data::TrainScan::load(path, model.meta.hu_window)?);
                }
                let scans_used = format!("{} scans ({})", files.len(), names(&files));
                what.push_str(&format!(
                    ", batch-norm statistics recomputed on {count} training batches of {scans_used}"
                ));
                // Made one at a time: a batch is tens of megabytes.
                Box::new((0..count).map(move |step| {
                    data::make_batch(&config, &scans, step).to_tensor_data(&config)
                }))
            } else {
                let mut inputs = Vec::with_capacity(files.len());
                for path in &files {
                    let scan = ape::scan::Scan::read(path)?;
                    let input = ape::embed::prepare_input(&model, &scan.volume)
                        .with_context(|| format!("preparing {}", path.display()))?;
                    let (voxels, [x, y, z]) = ape::embed::padded_input(&model, &input);
                    inputs.push(burn::tensor::TensorData::new(voxels, [1, 1, z, y, x]));
                }
                what.push_str(&format!(
                    ", batch-norm statistics recomputed on {} whole scans ({})",
                    files.len(),
                    names(&files)
                ));
                Box::new(inputs.into_iter())
            };
        model = ape::model::average::recalibrate_norms(model, inputs, &cpu.device);
        println!("recalibrated on {}", names(&files));
    }
    model.meta.description = description.unwrap_or_else(|| format!("{what}: {first}"));
    model.save(out)?;
    println!("wrote {} ({what})", out.display());
    Ok(ExitCode::SUCCESS)
}

fn names(files: &[PathBuf]) -> String {
    files
        .iter()
        .filter_map(|f| {
            f.file_name()
                .map(|n| n.to_string_lossy().replace(".nii.gz", ""))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn inventory(folders: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let files = data::training_files(folders, &[])?;
    let mut failed = 0;
    for path in &files {
        match ape::scan::Scan::read(path) {
            Ok(scan) => {
                let [nx, ny, nz] = scan.volume.shape();
                let s = scan.volume.spacing();
                let (lo, hi) = scan.hu_range();
                println!(
                    "{}  {nx}×{ny}×{nz}  {:.2}×{:.2}×{:.2} mm  {}  HU {lo:.0}…{hi:.0}",
                    path.display(),
                    s.x,
                    s.y,
                    s.z,
                    scan.volume.affine().axis_codes().iter().collect::<String>()
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    println!(
        "{} scans readable, {failed} unreadable",
        files.len() - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
