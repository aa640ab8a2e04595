//! What the benchmarks share: a clinical-size scan made from a real one.

use std::path::{Path, PathBuf};

use ape::resample::resample_linear_onto;
use ape::scan::Scan;
use glam::DVec3;

/// The shared data folder ([`ape::cohort::shared_data_dir`] beside the repository, whichever of
/// its two packages the bench belongs to).
pub fn shared_data() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repository = manifest
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(manifest);
    ape::cohort::shared_data_dir(repository)
}

/// The scans the benches time: btcv_02 from the shared data and the 512×512×300 scan made
/// from it (`make_big_scan`) in a temporary folder, which the caller keeps alive. `None`, after
/// saying so, when the shared data is missing.
// Each bench uses some of the fields (the file is a module of each bench).
#[allow(dead_code)]
#[derive(Debug)]
pub struct BenchScans {
    pub btcv_folder: PathBuf,
    pub btcv_02: PathBuf,
    pub big: PathBuf,
    pub dir: tempfile::TempDir,
}

pub fn bench_scans(bench: &str) -> anyhow::Result<Option<BenchScans>> {
    let btcv_folder = shared_data().join("btcv");
    let btcv_02 = btcv_folder.join("btcv_02.nii.gz");
    if !btcv_02.is_file() {
        println!(
            "bench {bench}: {} not found; nothing to measure",
            btcv_02.display()
        );
        return Ok(None);
    }
    let dir = tempfile::tempdir()?;
    let big = dir.path().join("resampled_512x512x300.nii.gz");
    make_big_scan(&btcv_02, &big)?;
    Ok(Some(BenchScans {
        btcv_folder,
        btcv_02,
        big,
        dir,
    }))
}

/// The BTCV scan resampled (trilinear, in HU) onto 512×512×300 voxels over the same field of
/// view, written as int16 NIfTI like a typical clinical CT.
pub fn make_big_scan(source: &Path, out: &Path) -> anyhow::Result<()> {
    let scan = Scan::read(source)?;
    let v = &scan.volume;
    let shape = [512, 512, 300];
    let extent = v.spacing()
        * DVec3::new(
            v.shape()[0] as f64,
            v.shape()[1] as f64,
            v.shape()[2] as f64,
        );
    let spacing = extent / DVec3::new(512.0, 512.0, 300.0);
    let affine = v.affine().with_spacing(spacing)?;
    let big = resample_linear_onto(v, shape, affine, -1024.0)?;
    ape::io::nifti::write_nifti(out, &big.map(|&hu| hu.round() as i16))?;
    Ok(())
}
