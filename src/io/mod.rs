//! Reading and writing volumes on disk.

pub mod atomic;
pub mod dicom;
pub mod nifti;

use std::path::Path;

use std::path::PathBuf;

use serde::Serialize;

use crate::error::VolumeError;
use crate::volume::Volume;
use nifti::TransformSource;

/// Reads a scan from a NIfTI file or a folder holding one DICOM series.
pub fn read_volume(path: impl AsRef<Path>) -> Result<StoredVolume, VolumeError> {
    let path = path.as_ref();
    if path.is_dir() {
        dicom::read_dicom_series(path)
    } else if let Some((dir, uid)) = dicom::split_series_path(path) {
        dicom::read_dicom_series_uid(&dir, &uid)
    } else {
        nifti::read_nifti(path)
    }
}

/// Refuses an input that is missing (as [`VolumeError::NotFound`]) or not a regular file or
/// folder (a FIFO would block forever).
pub(crate) fn check_input(path: &Path) -> Result<(), VolumeError> {
    crate::validate::input_path(path).map_err(|e| match e {
        crate::validate::InputError::NotFound { path } => VolumeError::NotFound { path },
        other => VolumeError::Input(other),
    })
}

/// What the header says beyond the geometry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageInfo {
    pub path: PathBuf,
    /// Stored voxel type, lower case as NIfTI names it (`uint8`, `int16`, `float32`, …).
    pub datatype: &'static str,
    pub scl_slope: f32,
    pub scl_inter: f32,
    pub transform: TransformSource,
    pub gzipped: bool,
    pub description: String,
    /// Channels per voxel: 1, or more for a vector image.
    pub channels: usize,
    /// What the reader found legal but suspicious (extreme spacing, gantry tilt, …); the
    /// front ends show these.
    pub warnings: Vec<crate::validate::InputWarning>,
}

impl StorageInfo {
    /// Whether values are stored as integers without rescaling (so they may be labels).
    pub fn is_unscaled_integer(&self) -> bool {
        !self.datatype.starts_with("float") && !nifti::has_scaling(self.scl_slope, self.scl_inter)
    }
}

/// A volume file (NIfTI, or a DICOM series) read into memory: its voxels as f32 after the
/// file's slope and intercept, and how the file stored them.
#[derive(Debug, Clone)]
pub struct StoredVolume {
    pub info: StorageInfo,
    pub volume: Volume<f32>,
}
