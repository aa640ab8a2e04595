//! `ape demo`: what ape reads, on a real scan when the shared data folder is there, else on the phantom.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use ape::summary::{VolumeKind, summarize};

use super::info::render;

pub fn run(data: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let folder = data
        .unwrap_or_else(|| ape::cohort::shared_data_dir(std::path::Path::new(".")).join("btcv"));
    let scan = folder.join("btcv_02.nii.gz");
    let labels = folder.join("btcv_02_label.nii.gz");
    if scan.is_file() && labels.is_file() {
        say!("ape demo on {}\n", folder.display());
        for path in [&scan, &labels] {
            say_raw!("{}", render(&summarize(path, VolumeKind::Auto)?));
        }
    } else {
        let dir = std::env::temp_dir().join("ape-demo");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (ct, organ_labels) = ape::phantom::demo_phantom()?;
        let scan = dir.join("phantom.nii.gz");
        let labels = dir.join("phantom_label.nii.gz");
        ape::io::nifti::write_nifti(&scan, &ct.map(|&hu| hu as i16))?;
        ape::io::nifti::write_nifti(&labels, &organ_labels)?;
        std::fs::write(dir.join("labels.json"), ape::phantom::labels_json())?;
        say!(
            "ape demo: {} not found, so on a synthetic phantom written to {}\n",
            folder.display(),
            dir.display()
        );
        for path in [&scan, &labels] {
            say_raw!("{}", render(&summarize(path, VolumeKind::Auto)?));
        }
    }
    say!("\nNext: `ape info FILE...` on your own scans (see README.md).");
    Ok(ExitCode::SUCCESS)
}
