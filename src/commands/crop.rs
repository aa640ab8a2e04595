//! `ape crop SCAN --organ liver --support DIR -o crop.nii.gz`: crops a scan to an organ's
//! few-shot box, enlarged for 0.99 recall.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ape::boxes::{
    Support, TARGET_RECALL, calibrate_alpha_leave_one_out, predict_box, volume_ratio,
};
use ape::cache::{MapCache, embed_file_cached};
use ape::cohort::labelled_cases;
use ape::evaluation::EvalScan;
use ape::labels::DatasetSidecar;
use ape::model::backend::{BackendChoice, select};
use ape::retrieval::{MapIndex, Target};
use ape::scan::Scan;
use glam::DVec3;

use super::model::load_model;

#[derive(Debug, clap::Args)]
pub struct CropArgs {
    /// The CT scan to crop: a NIfTI file or a DICOM series folder.
    scan: PathBuf,
    /// The organ, by its name in the supports' labels.json (e.g. liver, spleen).
    #[arg(long)]
    organ: String,
    /// Folder of support scans with label maps beside them (the BTCV layout).
    #[arg(long)]
    support: PathBuf,
    /// Where to write the cropped scan (.nii or .nii.gz; int16 HU, with its affine).
    #[arg(short, long)]
    output: PathBuf,
    /// At most this many supports (the first by name; default: all).
    #[arg(long)]
    shots: Option<usize>,
    /// Enlargement of the predicted box about its centre (default: calibrated on the supports
    /// for 0.99 recall).
    #[arg(long)]
    alpha: Option<f64>,
    /// A model file instead of the bundled model.
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
}

pub fn run(args: &CropArgs) -> anyhow::Result<ExitCode> {
    let compute = select(args.backend)?;
    let model = load_model(args.model.as_deref(), &compute.device)?;
    let cache = MapCache::default_location();
    let target_path = args.scan.canonicalize().ok();
    let mut cases = labelled_cases(&args.support)?;
    // The scan itself is no support of its own crop.
    cases.retain(|c| c.scan.canonicalize().ok() != target_path);
    let label = cases
        .first()
        .and_then(|c| DatasetSidecar::find_for(&c.labels))
        .and_then(|s| {
            s.labels
                .iter()
                .find(|(_, n)| n.eq_ignore_ascii_case(&args.organ))
                .map(|(l, _)| *l)
        })
        .with_context(|| {
            format!(
                "{}: no organ named {:?} in its labels.json",
                args.support.display(),
                args.organ
            )
        })?;
    if let Some(k) = args.shots {
        cases.truncate(k);
    }
    let mut supports = Vec::new();
    for case in &cases {
        let s = EvalScan::load(case, &model, &compute.device, Some(&cache))?;
        if s.organ(label).is_some() {
            supports.push(s);
        } else {
            eprintln!("note: {} has no {}; not a support", case.name, args.organ);
        }
    }
    anyhow::ensure!(
        !supports.is_empty(),
        "{}: no support scan has a {}",
        args.support.display(),
        args.organ
    );
    say!(
        "supports  {} ({})",
        supports.len(),
        supports
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let scan = Scan::read(&args.scan)?;
    let (map, _) = embed_file_cached(
        Some(&cache),
        &model,
        &compute.device,
        &args.scan,
        &scan.volume,
        &mut |_| {},
    )?;
    let index = MapIndex::build_in_body(&map, &scan);
    let edges: Vec<[DVec3; 6]> = supports
        .iter()
        .filter_map(|s| s.organ(label).map(|o| o.edges.points()))
        .collect();
    let support_refs: Vec<Support<'_>> = supports
        .iter()
        .zip(&edges)
        .map(|(s, e)| Support {
            map: &s.map,
            edges: *e,
        })
        .collect();
    let predicted = predict_box(
        Target {
            map: &map,
            index: &index,
        },
        &support_refs,
    )
    .context("no support's edge points could be located on the scan")?;
    let alpha = match args.alpha {
        Some(a) => a,
        None => {
            let voxels: Vec<&[DVec3]> = supports
                .iter()
                .map(|s| s.organ_voxels.get(&label).map_or(&[][..], Vec::as_slice))
                .collect();
            calibrate_alpha_leave_one_out(
                &edges,
                &voxels,
                |from, p, to| supports[to].target().locate(&supports[from].map, p),
                TARGET_RECALL,
            )
            .context("calibrating α needs at least two supports with the organ; give --alpha")?
        }
    };
    let extent = scan.volume.world_bounds();
    let enlarged = predicted.scaled(alpha);
    let crop_box = enlarged
        .intersection(&extent)
        .context("the enlarged box lies outside the scan")?;
    let cropped = scan
        .volume
        .crop_to_world_box(&crop_box)?
        .map(|&hu| hu.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16);
    ape::io::nifti::write_nifti(&args.output, &cropped)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let [x, y, z] = cropped.shape();
    say!("predicted {predicted}");
    say!(
        "alpha     {alpha:.2}{}",
        if args.alpha.is_some() {
            " (given)"
        } else {
            " (calibrated on the supports for 0.99 recall)"
        }
    );
    say!("crop      {crop_box}");
    say!("wrote     {} ({x}×{y}×{z} voxels)", args.output.display());
    say!(
        "volume ratio {:.1} (scan ÷ crop)",
        volume_ratio(&extent, &enlarged)
    );
    Ok(ExitCode::SUCCESS)
}
