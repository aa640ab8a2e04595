//! Reading and writing volumes on disk.

pub mod atomic;
pub mod dicom;
pub mod nifti;

use std::path::Path;

use crate::error::VolumeError;
use nifti::NiftiVolume;

/// Reads a scan from a NIfTI file or a folder holding one DICOM series.
pub fn read_volume(path: impl AsRef<Path>) -> Result<NiftiVolume, VolumeError> {
    let path = path.as_ref();
    if path.is_dir() {
        dicom::read_dicom_series(path)
    } else if let Some((dir, uid)) = dicom::split_series_path(path) {
        dicom::read_dicom_series_uid(&dir, &uid)
    } else {
        nifti::read_nifti(path)
    }
}
