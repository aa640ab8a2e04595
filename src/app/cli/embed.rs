//! `ape embed SCAN -o MAP.nii.gz`: the APE map of a scan, as a 3-channel NIfTI.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use ape::cache::{CacheUse, MapCache, embed_cached};
use ape::scan::Scan;

use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// The CT scan: a NIfTI file or a folder holding one DICOM series.
    scan: PathBuf,
    /// Where to write the map (.nii or .nii.gz): 3 channels, with an affine that puts it on top
    /// of the scan in 3D Slicer.
    #[arg(short, long)]
    output: PathBuf,
    /// Write the map on the scan's own voxel grid instead of at 1/4 of the model's resolution.
    #[arg(long)]
    full_res: bool,
    #[command(flatten)]
    model: ModelArgs,
    /// Recompute even if the map is cached.
    #[arg(long)]
    no_cache: bool,
    /// Write the map as the network gave it, a fold along S–I included (by default a fold is
    /// undone as everywhere else in ape: the part above it shifted to rise on).
    #[arg(long)]
    keep_folds: bool,
}

pub fn run(args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let total = Instant::now();
    let mut inputs = vec![ape::validate::Input::new("the scan", &args.scan)];
    if let Some(m) = &args.model.model {
        inputs.push(ape::validate::Input::new("the model", m));
    }
    super::check_output_file(&args.output, "the APE map", &inputs)?;
    let (compute, model) = args.model.load()?;
    say!("backend     {}", compute.description);
    say!("model       {}", model.meta.description);

    let t = Instant::now();
    let scan = Scan::read(&args.scan)?;
    super::print_warnings(scan.warnings());
    say!(
        "load        {:>8.3} s  {}",
        t.elapsed().as_secs_f64(),
        args.scan.display()
    );

    let cache = MapCache::default_location();
    let cache_use = if args.no_cache {
        CacheUse::Refresh(&cache)
    } else {
        CacheUse::ReadWrite(&cache)
    };
    let embedded = embed_cached(
        cache_use,
        &model,
        &compute.device,
        &args.scan,
        &scan.volume,
        &mut |_| {},
    )?;
    match embedded.times {
        None => say!("cache hit   {}", cache.dir().display()),
        Some(times) => {
            say!("preprocess  {:>8.3} s", times.preprocess.as_secs_f64());
            say!(
                "network     {:>8.3} s  ({} tile{})",
                times.network.as_secs_f64(),
                times.tiles,
                if times.tiles == 1 { "" } else { "s" }
            );
        }
    }
    if let Some(w) = &embedded.warning {
        eprintln!("warning: {w}");
    }
    // On the coarse map, before any --full-res resampling: its slices are the model's own.
    let map = if args.keep_folds {
        if let Some(fault) = ape::superior_fold(&embedded.map, &scan) {
            eprintln!(
                "warning: the APE map of {} {}; written as the network gave it (--keep-folds): \
                 points found in the fold are unreliable",
                args.scan.display(),
                fault.as_found()
            );
        }
        embedded.map
    } else {
        let (map, fault) = ape::unfolded(embedded.map, &scan);
        if let Some(fault) = fault {
            eprintln!("warning: the APE map of {} {fault}", args.scan.display());
        }
        map
    };

    let t = Instant::now();
    let out = if args.full_res {
        map.resampled_onto(scan.volume.shape(), *scan.volume.affine())?
    } else {
        map
    };
    drop(scan);
    out.write_nifti(&args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let [x, y, z] = out.shape();
    say!(
        "write       {:>8.3} s  {} ({x}×{y}×{z}×3)",
        t.elapsed().as_secs_f64(),
        args.output.display()
    );
    say!("total       {:>8.3} s", total.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
