//! Subcommands of `ape`: each a thin front end over the library.

/// `println!` that ignores a closed stdout (`ape info … | head`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

mod boxes;
mod crop;
mod demo;
mod embed;
mod eval;
mod info;
mod locate;
mod model;
mod pacs;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use ape::model::ApeModel;
use ape::model::backend::{BackendChoice, ComputeDevice, select};
use ape::validate::{Input, InputWarning, OutputKind, output_path};
use clap::{Parser, Subcommand};

/// Which model runs where: the options every command that embeds shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ModelArgs {
    /// A model file instead of the bundled model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where the network runs: auto (wgpu on a hardware GPU, else CPU), wgpu or cpu.
    #[arg(long, default_value = "auto")]
    pub backend: BackendChoice,
}

impl ModelArgs {
    /// The selected device and the model loaded onto it.
    pub fn load(&self) -> anyhow::Result<(ComputeDevice, ApeModel)> {
        let compute = select(self.backend)?;
        let model = self.load_on(&compute.device)?;
        Ok((compute, model))
    }

    /// The model (the bundled one unless `--model`) on `device`.
    pub fn load_on(&self, device: &burn::tensor::Device) -> anyhow::Result<ApeModel> {
        Ok(match &self.model {
            Some(path) => ApeModel::load(path, device)?,
            None => ApeModel::bundled(device)?,
        })
    }

    /// "bundled: …" or "PATH: …", for reports.
    pub fn describe(&self, model: &ApeModel) -> String {
        self.model.as_ref().map_or_else(
            || format!("bundled: {}", model.meta.description),
            |p| format!("{}: {}", p.display(), model.meta.description),
        )
    }
}

/// Prints what a reader found odd, one `warning:` line each, on stderr.
pub fn print_warnings(warnings: &[InputWarning]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Refuses an output file that is an input (by any spelling or link) or a folder, before any
/// work is done.
pub fn check_output_file(
    output: &std::path::Path,
    what: &str,
    inputs: &[Input<'_>],
) -> anyhow::Result<()> {
    Ok(output_path(output, OutputKind::File, what, inputs)?)
}

/// Anatomical Positional Embeddings of CT scans.
#[derive(Debug, Parser)]
#[command(name = "ape", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open the viewer on scans or folders (none: a demo cohort). Runs when no command is given.
    View(view::ViewArgs),
    /// Print shape, spacing, orientation, intensities and world extent of volumes; for label
    /// maps also the organs present with their centres (RAS mm).
    Info(info::InfoArgs),
    /// Compute the APE map of a scan and write it as a 3-channel NIfTI; prints time per stage.
    Embed(embed::EmbedArgs),
    /// Evaluate on a labelled cohort (method.md): landmark errors per axis and organ, few-shot
    /// box IoU, α and VR@99, beside the body-box baseline; writes a Markdown report with plots.
    Eval(eval::EvalArgs),
    /// Find points of one scan (RAS mm) on other scans, each with its confidence.
    Locate(locate::LocateArgs),
    /// Crop a scan to an organ's few-shot box from labelled supports, enlarged for 0.99 recall.
    Crop(crop::CropArgs),
    /// Convert organ box files between the formats ape reads and writes.
    #[command(long_about = format!(
        "Convert organ box files between the formats ape reads and writes: {}.",
        ape::annotations::BoxFormat::list()
    ))]
    Boxes(boxes::BoxesArgs),
    /// Studies from a PACS: echo, find studies and series, get a series into a folder (DIMSE
    /// with --host/--port/--called-aet, or DICOMweb with --url).
    Pacs(pacs::PacsArgs),
    /// Print the model's size, FLOPs per patch, receptive field, input spacing and HU window.
    ModelInfo {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Write a freshly initialised (untrained) model file.
    #[command(hide = true)]
    ModelInit {
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Rewrite a model file's metadata (description, held-out scans); the weights are unchanged.
    #[command(hide = true)]
    ModelDescribe {
        #[arg(long)]
        model: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long)]
        description: Option<String>,
        /// Scans kept out of training (names without extension), comma-separated.
        #[arg(long, value_delimiter = ',')]
        held_out: Option<Vec<String>>,
        /// The spacing the model embeds at (mm, X,Y,Z).
        #[arg(long, value_delimiter = ',')]
        input_spacing: Option<Vec<f64>>,
    },
    /// Show what ape reads, on a demo scan (a BTCV scan from ../shared when present, else a
    /// synthetic phantom).
    Demo {
        /// Folder with the demo data set (default: btcv in the shared data folder,
        /// `$APE_SHARED_DATA` or ../shared/data).
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Info(args)) => info::run(&args),
        Some(Command::Demo { data }) => demo::run(data),
        Some(Command::Embed(args)) => embed::run(&args),
        Some(Command::Eval(args)) => eval::run(&args),
        Some(Command::Crop(args)) => crop::run(&args),
        Some(Command::Locate(args)) => locate::run(&args),
        Some(Command::Boxes(args)) => boxes::run(&args),
        Some(Command::Pacs(args)) => pacs::run(&args),
        Some(Command::ModelInfo { model }) => model::info(&model),
        Some(Command::ModelInit { seed, output }) => model::init(seed, &output),
        Some(Command::View(args)) => view::run(args),
        Some(Command::ModelDescribe {
            model,
            output,
            description,
            held_out,
            input_spacing,
        }) => model::describe(&model, &output, description, held_out, input_spacing),
        None => view::run(view::ViewArgs::demo()),
    }
}
