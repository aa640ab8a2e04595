//! `ape-train`: self-supervised training of the APE model (issue 4 brings the trainer).
//!
//! For now it takes stock of a training set: every scan it would train on, read through the
//! library exactly as training will read it, so that bad files show up before a long run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ape-train", version, about = "Self-supervised training of the APE model")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the scans (NIfTI) found in the folders, with shape, spacing and HU range; label
    /// maps (`*_label*`, `*seg*`, `*mask*`) are skipped, since training uses no labels.
    Inventory {
        #[arg(required = true)]
        folders: Vec<PathBuf>,
    },
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
    let Command::Inventory { folders } = cli.command;
    let mut failed = 0;
    let mut count = 0;
    for folder in folders {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&folder)
            .with_context(|| format!("reading folder {}", folder.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| is_training_scan(p))
            .collect();
        paths.sort();
        for path in paths {
            match ape::scan::Scan::read(&path) {
                Ok(scan) => {
                    count += 1;
                    let [nx, ny, nz] = scan.volume.shape();
                    let s = scan.volume.spacing();
                    let (lo, hi) = scan.hu_range();
                    println!(
                        "{}  {nx}×{ny}×{nz}  {:.2}×{:.2}×{:.2} mm  {}  HU {lo:.0}…{hi:.0}",
                        path.display(),
                        s.x,
                        s.y,
                        s.z,
                        scan.volume.affine().axis_codes().iter().collect::<String>(),
                    );
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {e}");
                }
            }
        }
    }
    println!("{count} scans readable, {failed} unreadable");
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn is_training_scan(path: &std::path::Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let nifti = name.ends_with(".nii") || name.ends_with(".nii.gz");
    let labels = ["label", "seg", "mask"].iter().any(|hint| name.contains(hint));
    nifti && !labels
}
