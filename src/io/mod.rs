//! Reading and writing volumes on disk.

pub mod nifti;
