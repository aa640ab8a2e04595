//! Self-supervised training of the APE model (method.md): the `ape-train` binary is a thin shell
//! over these modules.
//!
//! - [`config`]: the training configuration, saved beside checkpoints.
//! - [`data`]: scans in memory, crop pairs at random spacings, positives, augmentations.
//! - [`cross`]: cross-scan pairs, placed by a teacher model's landmark transfer.
//! - [`loss`]: the distance and equivariance terms.
//! - [`fused`]: the distance term as one op with its own backward on the CPU backend.
//! - [`train`]: the loop, checkpoints, resume, loss CSV.
//! - [`evaluate`]: retrieval error per axis on held-out labelled scans, beside the baseline.
//! - [`plot`]: the loss curves as a PNG.

pub mod config;
pub mod cross;
pub mod data;
pub mod evaluate;
pub mod fused;
pub mod loss;
pub mod plot;
pub mod train;
