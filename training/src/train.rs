//! The training loop: batches prepared on a worker thread, AdamW with warm-up and cosine decay,
//! checkpoints that resume exactly, a CSV of the loss and periodic retrieval evaluation.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use ape::model::{ApeModel, ApeNet, ModelMeta};
use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use rayon::prelude::*;

use crate::config::{TrainConfig, Variant};
use crate::cross::Teacher;
use crate::data::{Batch, TrainScan, make_batch_with};
use crate::evaluate::HeldOut;
use crate::loss::{Targets, ape_loss, normalised_positions};

/// The columns of `loss.csv`, in order: written by [`run`], read by name by the plot.
pub const LOSS_COLUMNS: [&str; 8] = [
    "step",
    "loss",
    "distance",
    "equivariance",
    "lr",
    "z_weight",
    "seconds",
    "axis",
];

/// Losses of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLoss {
    pub step: usize,
    pub total: f32,
    pub distance: f32,
    pub equivariance: f32,
    /// The axis anchor term (0 when its weight is 0).
    pub axis: f32,
}

/// Where the last step's time went, seconds (the CPU backend computes eagerly, so each phase's
/// wall time is its own).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    /// Batch to tensors, forward pass of every crop, sampling the positives.
    pub forward: f64,
    /// Target distances and the loss terms, read back.
    pub loss: f64,
    pub backward: f64,
    /// Gradient clipping and the AdamW update.
    pub optimizer: f64,
}

/// Whether a run continues from the last checkpoint in its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// A new run (or one started from `--init`).
    No,
    /// Weights, AdamW state and step as saved: the run continues exactly.
    Exact,
    /// Weights and step as saved, a fresh AdamW: for a checkpoint whose optimiser state was lost
    /// (the repository keeps only the model of a long run's checkpoint). Not an exact resume.
    FreshOptimizer,
}

impl From<bool> for Resume {
    fn from(resume: bool) -> Self {
        if resume { Self::Exact } else { Self::No }
    }
}

pub struct Trainer {
    pub config: TrainConfig,
    pub meta: ModelMeta,
    pub net: ApeNet,
    optim: ModuleOptimizer,
    device: Device,
    /// The next step to run.
    pub step: usize,
    /// Where the last step's time went.
    pub last_times: StepTimes,
    /// The moving average of the weights (`ema_decay` > 0), an inference copy.
    pub ema: Option<ApeModel>,
}

/// AdamW as the config asks.
fn optimizer_config(config: &TrainConfig) -> AdamWConfig {
    AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .with_epsilon(config.adam_epsilon as f32)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(config.grad_clip_norm)))
}

/// The network as the config trains it.
fn prepared(config: &TrainConfig, net: ApeNet) -> ApeNet {
    net.with_fixed_output_norm(config.fixed_output_norm)
}

impl Trainer {
    /// A new run starting from the weights of an existing model (fine-tuning).
    pub fn from_model(config: TrainConfig, model: ApeModel, device: Device) -> Self {
        let device = device.autodiff();
        let optim = optimizer_config(&config).init();
        Self {
            net: prepared(&config, model.net.to_device(&device).train()),
            config,
            meta: model.meta,
            optim,
            device,
            step: 0,
            last_times: StepTimes::default(),
            ema: None,
        }
    }

    /// How a run starts: from the last checkpoint in `out` when `resume` and there is one; else
    /// from the weights of the model file `init` when given (fine-tuning, fresh optimiser; its
    /// network must be the one `meta` describes, or grow into it by context levels or a mask
    /// channel; its input
    /// spacing is kept); else from a seeded initialisation.
    pub fn start(
        config: TrainConfig,
        meta: ModelMeta,
        device: Device,
        out: &Path,
        resume: impl Into<Resume>,
        init: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let resume = resume.into();
        let resumable = resume != Resume::No && checkpoint_dir(out).is_some();
        match init {
            Some(path) if !resumable => {
                let mut model = ApeModel::load(path, &device)?;
                if model.meta.net != meta.net && model.meta.net.grows_into(&meta.net) {
                    // Context levels or a mask channel added: the same function until their
                    // new weights move.
                    model.net = model
                        .net
                        .grown(&model.meta.net, &meta.net, &device)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    model.meta.net = meta.net.clone();
                }
                anyhow::ensure!(
                    model.meta.net == meta.net,
                    "{}: its network ({:?}) is not the one being trained ({:?}), nor grows into it",
                    path.display(),
                    model.meta.net,
                    meta.net
                );
                // The inference spacing was chosen for these weights (a sweep on validation):
                // copies of the run keep it, whatever the run's description says.
                let input_spacing_mm = model.meta.input_spacing_mm;
                let mut trainer = Self::from_model(config, model, device);
                trainer.meta = ModelMeta {
                    input_spacing_mm,
                    ..meta
                };
                Ok(trainer)
            }
            _ => Self::new(config, meta, device, out, resume),
        }
    }

    /// A new run, or the last checkpoint in `out` when `resume`.
    pub fn new(
        config: TrainConfig,
        meta: ModelMeta,
        device: Device,
        out: &Path,
        resume: impl Into<Resume>,
    ) -> anyhow::Result<Self> {
        let device = device.autodiff();
        let optim_config = optimizer_config(&config);
        let resume = resume.into();
        if let (Resume::Exact | Resume::FreshOptimizer, Some(checkpoint)) =
            (resume, checkpoint_dir(out))
        {
            let state: serde_json::Value =
                serde_json::from_slice(&std::fs::read(checkpoint.join("state.json"))?)?;
            let step = state["step"]
                .as_u64()
                .context("checkpoint state has no step")? as usize;
            let model = ApeModel::load(&checkpoint.join("model.apemodel"), &device)?;
            let optimizer_file = checkpoint.join("optimizer.bin");
            let optim = match resume {
                Resume::FreshOptimizer => optim_config.init(),
                Resume::Exact | Resume::No => {
                    anyhow::ensure!(
                        optimizer_file.is_file(),
                        "{}: missing, so the AdamW state of this checkpoint is lost; \
                         --resume --fresh-optimizer continues from its weights and step \
                         with a fresh optimiser (not an exact resume)",
                        optimizer_file.display()
                    );
                    optim_config.init().load(&optimizer_file).map_err(|e| {
                        anyhow::anyhow!("{}: optimizer state: {e:?}", optimizer_file.display())
                    })?
                }
            };
            let ema_path = checkpoint.join("ema.apemodel");
            let ema = match (config.ema_decay > 0.0, ema_path.is_file()) {
                (true, true) => Some(ApeModel::load(&ema_path, &device.clone().inner())?),
                _ => None,
            };
            return Ok(Self {
                net: prepared(&config, model.net.train()),
                config,
                meta: model.meta,
                optim,
                device,
                step,
                last_times: StepTimes::default(),
                ema,
            });
        }
        let model = ApeModel::initialised(meta, config.seed, &device);
        Ok(Self {
            net: prepared(&config, model.net),
            config,
            meta: model.meta,
            optim: optim_config.init(),
            device,
            step: 0,
            last_times: StepTimes::default(),
            ema: None,
        })
    }

    /// One optimisation step on a batch.
    pub fn train_step(&mut self, batch: &Batch) -> StepLoss {
        // A step opens hundreds of parallel regions: entered from a pool thread, none of them
        // puts the caller to sleep.
        ape::model::backend::on_cpu_pool(|| self.step_here(batch))
    }

    fn step_here(&mut self, batch: &Batch) -> StepLoss {
        let began = Instant::now();
        let config = &self.config;
        let pairs = config.pairs;
        let k = config.positives_per_pair;
        let naive = config.variant == Variant::Naive;
        let crops = if naive {
            &batch.crops[..pairs]
        } else {
            &batch.crops[..]
        };
        let input = Tensor::<5>::from_data(batch.to_tensor_data(config), &self.device);
        let mut cells = Vec::with_capacity(crops.len() * k * 3);
        for (index, crop) in crops.iter().enumerate() {
            for p in batch.points_of_crop(index) {
                cells.extend_from_slice(&crop.cell_of(*p));
            }
        }
        let cells =
            Tensor::<3>::from_data(TensorData::new(cells, [crops.len(), k, 3]), &self.device);
        let maps = self.net.forward(input); // [crops, 3, z/4, y/4, x/4]
        let embeddings = ape::model::resize::sample_trilinear(maps, cells); // [crops, k, 3]
        let n = pairs * k;
        let a: Tensor<2> = embeddings.clone().narrow(0, 0, pairs).reshape([n, 3]);
        let a_plus: Tensor<2> = if naive {
            a.clone()
        } else {
            embeddings.narrow(0, pairs, pairs).reshape([n, 3])
        };
        let forward_done = Instant::now();
        let points: Vec<_> = batch.points.iter().flatten().copied().collect();
        let weights = glam::DVec3::new(batch.x_weight, 1.0, batch.z_weight);
        let scale = config.position_scale(batch.girth);
        let step_weight = if config.equal_step_weight {
            crate::loss::step_weight(&points, weights, scale)
        } else {
            1.0
        };
        let target = Targets::of(&points, weights, scale, &self.device);
        let weights = crate::loss::LossWeights {
            targets: step_weight,
            ..config.loss_weights()
        };
        let positions =
            (weights.axis > 0.0).then(|| normalised_positions(&points, scale, &self.device));
        let terms = ape_loss(a, a_plus, target, weights, positions);
        let scalar = |t: &Tensor<1>| {
            t.clone()
                .into_data()
                .try_into_vec::<f32>()
                .ok()
                .and_then(|v| v.first().copied())
                .unwrap_or(f32::NAN)
        };
        let loss = StepLoss {
            step: batch.step,
            total: scalar(&terms.total),
            distance: scalar(&terms.distance),
            equivariance: scalar(&terms.equivariance),
            axis: scalar(&terms.axis),
        };
        let loss_done = Instant::now();
        let grads = GradientsParams::from_grads(terms.total.backward(), &self.net);
        let backward_done = Instant::now();
        let lr = config.learning_rate_at(batch.step);
        self.net = self.optim.step(lr, self.net.clone(), grads);
        self.step = batch.step + 1;
        if config.ema_decay > 0.0 {
            let current = self.model();
            // The first step's weights start the average.
            self.ema = Some(match self.ema.take() {
                Some(average) => ape::model::average::blend(average, &current, config.ema_decay)
                    .unwrap_or(current),
                None => current,
            });
        }
        let seconds = |from: Instant, to: Instant| (to - from).as_secs_f64();
        self.last_times = StepTimes {
            forward: seconds(began, forward_done),
            loss: seconds(forward_done, loss_done),
            backward: seconds(loss_done, backward_done),
            optimizer: seconds(backward_done, Instant::now()),
        };
        loss
    }

    /// The current weights as a model file's content (inference copy).
    pub fn model(&self) -> ApeModel {
        let mut meta = self.meta.clone();
        meta.trained = self.step > 0;
        ApeModel {
            net: self.net.valid(),
            meta,
            id: 0,
        }
    }

    /// Writes model, optimizer state and step as one checkpoint, whole or not at all: into a
    /// fresh folder, which then replaces `checkpoint/` (the previous one is kept as
    /// `checkpoint.old/` until the swap is done, and [`checkpoint_dir`] falls back to it).
    pub fn save_checkpoint(&self, out: &Path) -> anyhow::Result<()> {
        let partial = out.join(format!("checkpoint.partial-{}", std::process::id()));
        if partial.exists() {
            std::fs::remove_dir_all(&partial)?;
        }
        std::fs::create_dir_all(&partial)?;
        self.model().save(&partial.join("model.apemodel"))?;
        let bytes: Bytes = self
            .optim
            .into_bytes()
            .map_err(|e| anyhow::anyhow!("optimizer state: {e:?}"))?;
        ape::io::atomic::write_atomically(&partial.join("optimizer.bin"), &bytes[..])?;
        if let Some(ema) = &self.ema {
            ema.save(&partial.join("ema.apemodel"))?;
        }
        let state = serde_json::json!({ "step": self.step });
        ape::io::atomic::write_atomically(
            &partial.join("state.json"),
            &serde_json::to_vec_pretty(&state)?,
        )?;
        let current = out.join("checkpoint");
        let old = out.join("checkpoint.old");
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        if current.exists() {
            std::fs::rename(&current, &old)?;
        }
        std::fs::rename(&partial, &current)?;
        if let Ok(folder) = std::fs::File::open(out) {
            let _ = folder.sync_all();
        }
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        Ok(())
    }
}

/// The run's last complete checkpoint: `checkpoint/`, or `checkpoint.old/` when a kill came
/// between the two renames of [`Trainer::save_checkpoint`].
pub fn checkpoint_dir(out: &Path) -> Option<std::path::PathBuf> {
    ["checkpoint", "checkpoint.old"]
        .iter()
        .map(|name| out.join(name))
        .find(|dir| dir.join("state.json").is_file())
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

/// Runs a whole training: `steps` of the config from the trainer's current step, with logging.
pub fn run(
    trainer: &mut Trainer,
    scans: Arc<Vec<TrainScan>>,
    out: &Path,
    held_out: Option<&HeldOut>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<StepLoss>> {
    let config = trainer.config.clone();
    let start_step = trainer.step;
    let teacher = if config.cross_pairs > 0 {
        Some(Arc::new(teacher_of(trainer, &scans, out)?))
    } else {
        None
    };
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Batch>(2);
    let worker_scans = Arc::clone(&scans);
    let worker_config = config.clone();
    let worker_stop = Arc::clone(&stop);
    // Batches are pure functions of the step, so several are made at once on rayon's threads
    // and sent in step order: on a GPU one thread of crop sampling could not keep up.
    let batch_threads = rayon::current_num_threads().clamp(1, 8);
    let worker = std::thread::spawn(move || {
        let end = worker_config.steps;
        for first in (start_step..end).step_by(batch_threads) {
            if worker_stop.load(Ordering::Relaxed) {
                break;
            }
            let batches: Vec<Batch> = (first..(first + batch_threads).min(end))
                .into_par_iter()
                .map(|step| {
                    make_batch_with(&worker_config, &worker_scans, step, teacher.as_deref())
                })
                .collect();
            for batch in batches {
                if sender.send(batch).is_err() {
                    return;
                }
            }
        }
    });

    let csv_path = out.join("loss.csv");
    let mut csv = open_csv(&csv_path, start_step)?;
    let progress =
        indicatif::ProgressBar::new(config.steps as u64).with_position(start_step as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut losses = Vec::new();
    let began = Instant::now();
    for batch in receiver {
        let loss = trainer.train_step(&batch);
        // In the order of LOSS_COLUMNS.
        let row = [
            loss.step.to_string(),
            loss.total.to_string(),
            loss.distance.to_string(),
            loss.equivariance.to_string(),
            config.learning_rate_at(loss.step).to_string(),
            batch.z_weight.to_string(),
            format!("{:.2}", began.elapsed().as_secs_f64()),
            loss.axis.to_string(),
        ];
        writeln!(csv, "{}", row.join(","))?;
        progress.set_message(format!("loss {:.4}", loss.total));
        progress.inc(1);
        losses.push(loss);
        let done = trainer.step;
        if done.is_multiple_of(config.checkpoint_every) || done == config.steps {
            trainer.save_checkpoint(out)?;
            csv.flush()?;
        }
        if config.keep_every > 0 && done.is_multiple_of(config.keep_every) {
            trainer
                .model()
                .save(&out.join(format!("model-{done}.apemodel")))?;
            if let Some(ema) = &trainer.ema {
                ema.save(&out.join(format!("ema-{done}.apemodel")))?;
            }
        }
        let eval_due = config.eval_every > 0
            && (done.is_multiple_of(config.eval_every) || done == config.steps);
        if let (Some(held_out), true) = (held_out, eval_due) {
            let report = held_out.evaluate(&trainer.model())?;
            progress.println(format!("step {done}: {report}"));
            let mut log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out.join("eval.csv"))?;
            writeln!(log, "{done},{}", report.csv_row())?;
        }
        if stop.load(Ordering::Relaxed) {
            trainer.save_checkpoint(out)?;
            break;
        }
    }
    progress.finish();
    drop(worker);
    csv.flush()?;
    Ok(losses)
}

/// The run's teacher for cross pairs: `teacher.apemodel` in `out`, written from the trainer's
/// model when the run first needs one (so that a resumed run pairs its crops as before), and
/// its maps of the training scans.
fn teacher_of(trainer: &Trainer, scans: &[TrainScan], out: &Path) -> anyhow::Result<Teacher> {
    let cpu = ape::model::backend::cpu();
    let path = out.join("teacher.apemodel");
    if !path.is_file() {
        trainer.model().save(&path)?;
    }
    // Read back from the file either way: on the CPU, whatever the training backend.
    let model = ApeModel::load(&path, &cpu.device)
        .with_context(|| format!("the run's teacher {}", path.display()))?;
    let began = Instant::now();
    // The scans were windowed with the trained model's window; undone with the same.
    let teacher = Teacher::embed(&model, scans, trainer.meta.hu_window, &cpu.device)?;
    println!(
        "teacher for cross pairs: {} ({} scans embedded in {:.1} s)",
        path.display(),
        teacher.len(),
        began.elapsed().as_secs_f64()
    );
    Ok(teacher)
}

/// The loss CSV, keeping only rows before `start_step` (so a resumed run continues it).
fn open_csv(path: &Path, start_step: usize) -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
    let mut kept = vec![LOSS_COLUMNS.join(",")];
    let previous = if start_step > 0 {
        std::fs::read_to_string(path).unwrap_or_default()
    } else {
        String::new()
    };
    kept.extend(
        previous
            .lines()
            .skip(1)
            .filter(|l| {
                l.split(',')
                    .next()
                    .and_then(|s| s.parse::<usize>().ok())
                    .is_some_and(|s| s < start_step)
            })
            .map(str::to_owned),
    );
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for line in kept {
        writeln!(file, "{line}")?;
    }
    Ok(file)
}
