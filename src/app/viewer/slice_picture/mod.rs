//! A view's picture: the scan's slice through window/level with the APE map blended over it
//! and optional iso-lines. One job, two targets that must agree pixel for pixel: [`cpu`] fills
//! RGBA pixels (machines without a wgpu renderer, and the reference), [`gpu`] draws it with
//! `shaders/slice.wgsl` in egui's render pass.

pub mod cpu;
pub mod gpu;
