//! `ape boxes IN -o OUT`: converts organ box files between JSON, CSV and 3D Slicer markups
//! (`.mrk.json`), by extension.

use std::path::PathBuf;
use std::process::ExitCode;

use ape::annotations::BoxSet;

#[derive(Debug, clap::Args)]
pub struct BoxesArgs {
    /// A box file: .json, .csv or .mrk.json.
    input: PathBuf,
    /// Where to write it: .json, .csv or .mrk.json (3D Slicer ROI markups, LPS).
    #[arg(short, long)]
    output: PathBuf,
}

pub fn run(args: &BoxesArgs) -> anyhow::Result<ExitCode> {
    let set = BoxSet::load(&args.input)?;
    set.save(&args.output)?;
    for b in &set.boxes {
        say!("{:<12} {:<24} {}", b.scan, b.organ, b.bbox);
    }
    say!(
        "wrote {} ({} boxes)",
        args.output.display(),
        set.boxes.len()
    );
    Ok(ExitCode::SUCCESS)
}
