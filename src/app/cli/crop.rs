//! `ape crop SCAN --organ liver --support DIR -o crop.nii.gz`: crops a scan to an organ's
//! few-shot box, enlarged for 0.99 recall.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ape::cache::{CacheUse, MapCache};
use ape::crop::{CropRequest, crop_to_organ};

use super::ModelArgs;

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
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: &CropArgs) -> anyhow::Result<ExitCode> {
    use ape::validate::Input;
    let request = CropRequest {
        scan: args.scan.clone(),
        organ: args.organ.clone(),
        supports: args.support.clone(),
        shots: args.shots,
        alpha: args.alpha,
    };
    request.check("--alpha", "--shots")?;
    let files = request.input_files()?;
    let mut inputs: Vec<Input<'_>> = files.iter().map(|(role, p)| Input::new(role, p)).collect();
    if let Some(m) = &args.model.model {
        inputs.push(Input::new("the model", m));
    }
    super::check_output_file(&args.output, "the cropped scan", &inputs)?;
    let (compute, model) = args.model.load()?;
    let cache = MapCache::default_location();
    let crop = crop_to_organ(
        &request,
        &model,
        &compute.device,
        CacheUse::ReadWrite(&cache),
    )?;
    for w in &crop.warnings {
        eprintln!("note: {w}");
    }
    ape::io::nifti::write_nifti(&args.output, &crop.volume)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let [x, y, z] = crop.volume.shape();
    say!(
        "supports  {} ({})",
        crop.supports.len(),
        crop.supports.join(", ")
    );
    say!("predicted {}", crop.prediction.bbox);
    if let Some(alpha) = crop.prediction.alpha {
        say!(
            "alpha     {alpha:.2}{}",
            if crop.alpha_given {
                " (given)"
            } else {
                " (calibrated on the supports for 0.99 recall)"
            }
        );
    }
    say!("crop      {}", crop.crop_box);
    say!("wrote     {} ({x}×{y}×{z} voxels)", args.output.display());
    say!("volume ratio {:.1} (scan ÷ crop)", crop.volume_ratio);
    Ok(ExitCode::SUCCESS)
}
