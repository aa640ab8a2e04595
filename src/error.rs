//! Errors of reading, writing and handling volumes. Each names the file and the problem.

use std::path::PathBuf;

/// Why a volume could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{path}: file not found")]
    NotFound { path: PathBuf },

    #[error(
        "{labels}: not on the grid of its scan {scan} ({detail}); a label map must match its scan voxel for voxel"
    )]
    LabelGridMismatch {
        labels: PathBuf,
        scan: PathBuf,
        detail: String,
    },

    #[error("{path}: {detail}")]
    Dicom { path: PathBuf, detail: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: the gzip stream is truncated or corrupt ({detail})")]
    CorruptGzip { path: PathBuf, detail: String },

    #[error("{path}: not a NIfTI-1 file ({detail})")]
    BadMagic { path: PathBuf, detail: String },

    #[error("{path}: the file ends inside the {what} (needs {needed} bytes, holds {found})")]
    Truncated {
        path: PathBuf,
        what: &'static str,
        needed: u64,
        found: u64,
    },

    #[error(
        "{path}: unsupported voxel datatype {name} (NIfTI code {code}); ape reads integer and real scalar voxels"
    )]
    UnsupportedDatatype {
        path: PathBuf,
        code: i16,
        name: String,
    },

    #[error("{path}: invalid dimensions {dims:?}: {detail}")]
    BadDimensions {
        path: PathBuf,
        dims: Vec<i64>,
        detail: String,
    },

    #[error("{path}: {detail}; ape needs one 3-D volume")]
    NotThreeD { path: PathBuf, detail: String },

    #[error(
        "{path}: the header claims {voxels} voxels ({bytes} bytes), over the limit of {limit} voxels"
    )]
    TooLarge {
        path: PathBuf,
        voxels: u64,
        bytes: u64,
        limit: u64,
    },

    #[error("{path}: invalid header field {field}: {detail}")]
    BadHeader {
        path: PathBuf,
        field: &'static str,
        detail: String,
    },

    #[error(
        "{path}: the voxel-to-world transform ({source_name}) is singular or not finite: {detail}"
    )]
    SingularAffine {
        path: PathBuf,
        source_name: &'static str,
        detail: String,
    },

    #[error("{path}: {count} voxels are NaN or infinite (the first at voxel {first:?})")]
    NonFinite {
        path: PathBuf,
        count: usize,
        first: [usize; 3],
    },

    #[error("{path}: invalid data set sidecar: {detail}")]
    BadSidecar { path: PathBuf, detail: String },

    #[error("{path}: not a label map: {detail}")]
    NotALabelMap { path: PathBuf, detail: String },

    #[error("{path}: cannot write NIfTI: {detail}")]
    Write { path: PathBuf, detail: String },

    #[error(
        "{path}: the voxels need {} of memory and the allocation failed; free memory or use a smaller scan",
        crate::validate::bytes_text(*bytes)
    )]
    OutOfMemory { path: PathBuf, bytes: u64 },

    /// Refused by [`crate::validate`]: the message names the file and the problem.
    #[error(transparent)]
    Input(#[from] crate::validate::InputError),
}

/// Errors of geometry that do not involve a file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeometryError {
    #[error("the voxel-to-world transform is singular or not finite: {0}")]
    SingularAffine(String),

    #[error("data length {len} does not match shape {shape:?}")]
    ShapeMismatch { len: usize, shape: [usize; 3] },

    #[error("shape {0:?} has a zero dimension")]
    EmptyShape([usize; 3]),

    #[error("spacing {0:?} must be finite and positive")]
    BadSpacing([f64; 3]),

    #[error("the box {0} does not intersect the volume")]
    OutsideVolume(String),

    #[error("the grid of {voxels} voxels is too large (limit {limit})")]
    TooLarge { voxels: u64, limit: u64 },
}
