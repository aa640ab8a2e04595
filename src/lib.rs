//! ape: Anatomical Positional Embeddings of CT scans.
//!
//! The library holds the domain and every use case once; the viewer and the `ape` command line
//! (`src/app`, crate `ape-app`) and the trainer (`training`) are thin front ends over it, and no
//! GUI or argument-parser type appears here. Every coordinate a public function returns is physical: RAS millimetres, from the
//! file's affine.
//!
//! - [`geometry`]: the voxel→world [`Affine`](geometry::Affine), axis codes, world boxes.
//! - [`volume`]: [`Volume<T>`](volume::Volume), a voxel grid placed in world space.
//! - [`resample`]: resampling to a spacing or onto another grid.
//! - [`io`]: NIfTI reading and writing, with typed errors for bad input.
//! - [`intensity`]: Hounsfield units and the model's HU window.
//! - [`scan`]: a CT scan in HU, however its file stores intensities.
//! - [`labels`]: organ label maps, their centres, edge points and boxes.
//! - [`model`]: the APE network in burn, model files, the compute backend.
//! - [`embed`]: whole-scan inference, tiled without seams, to an [`ApeMap`](ape_map::ApeMap).
//! - [`phantom`]: a synthetic abdominal CT with labels, for demos and tests.
//! - [`retrieval`]: nearest-embedding retrieval, errors per axis, the body-box baseline.
//! - [`transfer`]: a point carried to another scan: nearest or consensus, with a confidence.
//! - [`superior_fold`]: whether a map's S–I channel runs back over a range of heights (a fold),
//!   where points found on it are unreliable.
//! - [`annotations`]: organ boxes saved as JSON, CSV or 3D Slicer markups; undo/redo.
//! - [`boxes`]: few-shot organ boxes, the recall-safe enlargement α, volume ratios.
//! - [`cohort`]: the scans in a folder, labelled cohorts (BTCV layout), the shared data folder.
//! - [`locate`]: points of one scan found on others (`ape locate`).
//! - [`crop`]: a scan cropped to an organ's few-shot box from labelled supports.
//! - [`evaluation`]: method.md's protocol on a labelled cohort, with its report and plots.
//! - [`hash`]: content hashes of files, volumes and bytes.
//! - [`cache`]: APE maps cached on disk by scan content and model; the one way a scan is embedded.
//! - [`summary`]: what `ape info` reports about a file.
//! - [`slicing`]: axial, coronal and sagittal slices in world space, window/level.
//! - [`pacs`]: studies from a PACS: echo, search and retrieval over DIMSE or DICOMweb.
//! - [`validate`]: what a user hands in, checked in one place: values, paths, memory, warnings.

pub mod annotations;
pub mod ape_map;
#[cfg(feature = "full")]
pub mod boxes;
#[cfg(feature = "full")]
pub mod cache;
pub mod cohort;
#[cfg(feature = "full")]
pub mod crop;
#[cfg(feature = "full")]
pub mod embed;
pub mod error;
#[cfg(feature = "full")]
pub mod evaluation;
mod fold;
pub mod geometry;
pub mod hash;
pub mod intensity;
pub mod io;
pub mod labels;
#[cfg(feature = "full")]
pub mod locate;
#[cfg(feature = "full")]
pub mod model;
#[cfg(feature = "pacs")]
pub mod pacs;
pub mod phantom;
#[cfg(feature = "full")]
pub mod refine;
pub mod resample;
#[cfg(feature = "full")]
pub mod retrieval;
pub mod scan;
pub mod slicing;
pub mod summary;
#[cfg(feature = "full")]
pub mod transfer;
pub mod validate;
pub mod volume;

pub use error::{GeometryError, VolumeError};
pub use fold::{SiFault, SuperiorFold, superior_fold, unfolded};
pub use geometry::{Affine, WorldBox};
pub use volume::Volume;
