//! Subcommands of `ape`: each a thin front end over the library.

mod demo;
mod info;

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
        None => demo::run(None),
    }
}
