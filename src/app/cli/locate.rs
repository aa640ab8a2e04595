//! `ape locate --from SCAN --at=X,Y,Z TARGET…`: points of one scan found on others, with their
//! confidence.

use std::path::PathBuf;
use std::process::ExitCode;

use ape::cache::{CacheUse, MapCache};
use ape::locate::{NamedPoint, locate_points, parse_point, parse_points};
use ape::transfer::TransferMode;

use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct LocateArgs {
    /// The scan the points are on: a NIfTI file or a DICOM series folder.
    #[arg(long)]
    from: PathBuf,
    /// A point, RAS mm: `--at=-150,-230,420` or `--at -150,-230,420`; repeat for more.
    #[arg(long, value_parser = parse_point, allow_hyphen_values = true)]
    at: Vec<[f64; 3]>,
    /// A file of points, one `x,y,z[,name]` per line (RAS mm).
    #[arg(long)]
    points: Option<PathBuf>,
    /// The scans to find the points on.
    #[arg(required = true)]
    targets: Vec<PathBuf>,
    /// How points are carried: refined (consensus, then image patches), consensus, or nearest
    /// (the paper's single search).
    #[arg(long, default_value_t = TransferMode::DEFAULT)]
    transfer: TransferMode,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: &LocateArgs) -> anyhow::Result<ExitCode> {
    let mut points: Vec<NamedPoint> = args
        .at
        .iter()
        .map(|&world| NamedPoint { name: None, world })
        .collect();
    if let Some(file) = &args.points {
        ape::validate::input_path(file)?;
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        points.extend(parse_points(&text, &file.display().to_string())?);
    }
    if points.is_empty() {
        anyhow::bail!("no points: give --at=X,Y,Z (RAS mm) or --points FILE");
    }
    let (compute, model) = args.model.load()?;
    let cache = MapCache::default_location();
    let (located, warnings) = locate_points(
        &args.from,
        &points,
        &args.targets,
        &model,
        &compute.device,
        CacheUse::ReadWrite(&cache),
        args.transfer,
    )?;
    super::print_warnings(&warnings);
    if args.json {
        say!("{}", serde_json::to_string_pretty(&located)?);
        return Ok(ExitCode::SUCCESS);
    }
    say!(
        "{:<16} {:<28} {:>26}  {:>10}  {:>5}  {:>5}  note",
        "point",
        "target",
        "found (RAS mm)",
        "confidence",
        "cycle",
        "image"
    );
    for l in &located {
        let [x, y, z] = l.point.world;
        let point = l
            .point
            .name
            .clone()
            .unwrap_or_else(|| format!("{x:.0},{y:.0},{z:.0}"));
        let target = l.target.file_name().map_or_else(
            || l.target.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        match &l.found {
            None => say!("{point:<16} {target:<28} outside the source scan"),
            Some(t) => {
                let c = t.confidence;
                let note = if c.outside_fov {
                    "probably outside this scan's field of view"
                } else if c.doubtful() {
                    "doubtful"
                } else {
                    ""
                };
                // The image patches' correlation (refined transfer only).
                let image = c
                    .image_ncc
                    .map_or_else(|| "-".to_owned(), |ncc| format!("{ncc:.2}"));
                say!(
                    "{point:<16} {target:<28} {:>8.1} {:>8.1} {:>8.1}  {:>9.0}%  {:>5.1}  {image:>5}  {note}",
                    t.world.x,
                    t.world.y,
                    t.world.z,
                    c.score() * 100.0,
                    c.cycle_error_mm,
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
