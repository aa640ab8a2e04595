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

mod demo;
mod embed;
mod info;
mod model;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Anatomical Positional Embeddings of CT scans.
#[derive(Debug, Parser)]
#[command(name = "ape", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print shape, spacing, orientation, intensities and world extent of volumes; for label
    /// maps also the organs present with their centres (RAS mm).
    Info(info::InfoArgs),
    /// Compute the APE map of a scan and write it as a 3-channel NIfTI; prints time per stage.
    Embed(embed::EmbedArgs),
    /// Print the model's size, FLOPs per patch, receptive field, input spacing and HU window.
    ModelInfo {
        /// A model file instead of the bundled model.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Write a freshly initialised (untrained) model file.
    #[command(hide = true)]
    ModelInit {
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Show what ape reads, on a demo scan (a BTCV scan from ../shared when present, else a
    /// synthetic phantom). Runs when no command is given.
    Demo {
        /// Folder with the demo data set (default: ../shared/data/btcv).
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Some(Command::Info(args)) => info::run(&args),
        Some(Command::Demo { data }) => demo::run(data),
        Some(Command::Embed(args)) => embed::run(&args),
        Some(Command::ModelInfo { model }) => model::info(model),
        Some(Command::ModelInit { seed, output }) => model::init(seed, &output),
        None => demo::run(None),
    }
}
