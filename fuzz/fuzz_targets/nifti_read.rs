//! Any bytes as a `.nii` (or gzipped) file: the NIfTI reader returns a volume or a typed error,
//! and never panics, aborts or allocates more than the file can hold.
#![no_main]

mod scratch;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = scratch::scratch_dir("nifti").join("input.nii");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = ape::io::nifti::read_nifti(&path);
    let _ = ape::io::nifti::read_label_volume(&path);
    let _ = ape::scan::Scan::read(&path);
});
