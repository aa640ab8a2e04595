//! ape: Anatomical Positional Embeddings of CT scans.
//!
//! The library holds the domain; the `ape` application and the `training` crate are thin shells
//! over it. Every coordinate a public function returns is physical: RAS millimetres, from the
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
//! - [`summary`]: what `ape info` reports about a file.

pub mod ape_map;
pub mod cache;
pub mod embed;
pub mod error;
pub mod geometry;
pub mod intensity;
pub mod io;
pub mod labels;
pub mod model;
pub mod phantom;
pub mod resample;
pub mod retrieval;
pub mod scan;
pub mod summary;
pub mod volume;

pub use error::{GeometryError, VolumeError};
pub use geometry::{Affine, WorldBox};
pub use volume::Volume;
