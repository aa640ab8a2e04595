//! The APE network in burn, generic over the device it runs on.
//!
//! - [`net`]: the network and its config.
//! - [`norm`]: batch norm without affine parameters (the output layer).
//! - [`ops`]: the convolutions as a burn backend extension with their own backward pass (fast
//!   kernels on the CPU backend).
//! - [`resize`]: differentiable trilinear resizing and point sampling.
//! - [`weights`]: model files, checked on load, and the bundled model.
//! - [`average`]: the mean of several copies of one network (weight averaging).
//! - [`backend`]: wgpu on a GPU, else the CPU backend.

pub mod average;
pub mod backend;
pub mod cpu_net;
pub mod net;
pub mod norm;
pub mod ops;
pub mod resize;
#[cfg(test)]
mod test_values;
pub mod weights;

pub use net::{ApeNet, ApeNetConfig, BlockNorm};
pub use weights::{ApeModel, ModelError, ModelMeta};
