//! `ape boxes IN -o OUT`: converts organ box files between the formats of
//! [`BoxFormat::ALL`], by extension.

use std::path::PathBuf;
use std::process::ExitCode;

use ape::annotations::{BoxFormat, BoxSet};

#[derive(Debug, clap::Args)]
pub struct BoxesArgs {
    #[arg(help = format!("A box file: {}", BoxFormat::list()))]
    input: PathBuf,
    #[arg(short, long, help = format!("Where to write it: {}", BoxFormat::list()))]
    output: PathBuf,
}

pub fn run(args: &BoxesArgs) -> anyhow::Result<ExitCode> {
    super::check_output_file(
        &args.output,
        "the box file",
        &[ape::validate::Input::new("the input box file", &args.input)],
    )?;
    let (set, warnings) = BoxSet::load_with_warnings(&args.input)?;
    super::print_warnings(&warnings);
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
