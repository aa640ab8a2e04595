//! The network's convolutions on burn's cubecl backend (wgpu): ape's own compute kernels,
//! forward and both gradients, written in CubeCL (compiled to WGSL, SPIR-V, … by cubecl for
//! the device at hand).
//!
//! Direct convolutions on channels-first tensors (burn's `[b, c, d, h, w]`), any stride and
//! padding, dilation 1, one group:
//!
//! - forward: a thread per run of four output voxels along x and block of output channels
//!   (register blocking both ways); neighbouring threads read neighbouring voxels, every
//!   thread of a cube reads the same weights.
//! - input gradient: the same shape of work per input voxel and block of input channels,
//!   gathering the output gradient through the stride.
//! - weight gradient: a thread per weight and block of output channels sums over a share of
//!   the batch's rows; the shares are summed by burn afterwards. Without the split a layer has
//!   only as many threads as weights (7,000 for 16 → 16 channels), too few to fill a GPU.
//!
//! Launches are unchecked (no bounds test per index on the device); each states why its
//! indices stay inside its tensors. Tensors that are not f32 are declined (`None`) and the caller falls back to burn.
#![allow(unsafe_code)]

use burn::backend::ops::FloatTensorOps;
use burn::backend::{Cube, DType};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

use super::kernels::ConvShape;
use super::{ConvGeometry, conv_shape};

/// Output channels (or input channels, for the input gradient) one thread computes: the
/// largest of these that divides the count, so that every input value read serves several
/// products.
fn channel_block(channels: usize) -> usize {
    [8, 4, 3, 2, 1]
        .into_iter()
        .find(|b| channels.is_multiple_of(*b))
        .unwrap_or(1)
}

#[cube(launch_unchecked)]
fn forward_kernel(
    x: &Tensor<f32>,
    w: &Tensor<f32>,
    out: &mut Tensor<f32>,
    kernel: usize,
    stride: usize,
    padding: usize,
    #[comptime] block: usize,
    #[comptime] run: usize,
) {
    // A thread: `block` output channels at `run` neighbouring voxels along x, so that each
    // weight read serves `run` products and each input read `block`.
    let cout = out.shape(1);
    let od = out.shape(2);
    let oh = out.shape(3);
    let ow = out.shape(4);
    let runs = ow.div_ceil(run);
    let places = od * oh * runs;
    let blocks = cout / block;
    if ABSOLUTE_POS >= out.shape(0) * blocks * places {
        terminate!();
    }
    let v = ABSOLUTE_POS % places;
    let rest = ABSOLUTE_POS / places;
    let co0 = (rest % blocks) * block;
    let b = rest / blocks;
    let ox0 = (v % runs) * run;
    let oy = (v / runs) % oh;
    let oz = v / (runs * oh);

    let cin = x.shape(1);
    let d = x.shape(2) as i32;
    let h = x.shape(3) as i32;
    let wd = x.shape(4) as i32;
    let kvol = kernel * kernel * kernel;
    let per_cout = cin * kvol;

    let mut acc = Array::<f32>::new(block * run);
    #[unroll]
    for j in 0..block * run {
        acc[j] = 0.0;
    }
    let mut weights = Array::<f32>::new(block);
    let z0 = (oz * stride) as i32 - padding as i32;
    let y0 = (oy * stride) as i32 - padding as i32;
    let x0 = (ox0 * stride) as i32 - padding as i32;
    for ci in 0..cin {
        let x_base = (b * cin + ci) * x.shape(2) * x.shape(3) * x.shape(4);
        let w_base = co0 * per_cout + ci * kvol;
        for kz in 0..kernel {
            let z = z0 + kz as i32;
            if z >= 0 && z < d {
                for ky in 0..kernel {
                    let y = y0 + ky as i32;
                    if y >= 0 && y < h {
                        let row = x_base + ((z * h + y) * wd) as usize;
                        for kx in 0..kernel {
                            let tap = w_base + (kz * kernel + ky) * kernel + kx;
                            #[unroll]
                            for j in 0..block {
                                weights[j] = w[tap + j * per_cout];
                            }
                            #[unroll]
                            for t in 0..run {
                                // Outside the input, or past the output's last voxel: a
                                // clamped read that counts zero.
                                let xx = x0 + (t * stride + kx) as i32;
                                let inside = xx >= 0 && xx < wd && ox0 + t < ow;
                                let value =
                                    select(inside, x[row + clamp(xx, 0, wd - 1) as usize], 0.0);
                                #[unroll]
                                for j in 0..block {
                                    acc[j * run + t] += value * weights[j];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let row_out = (oz * oh + oy) * ow + ox0;
    #[unroll]
    for t in 0..run {
        if ox0 + t < ow {
            #[unroll]
            for j in 0..block {
                out[(b * cout + co0 + j) * od * oh * ow + row_out + t] = acc[j * run + t];
            }
        }
    }
}

#[cube(launch_unchecked)]
fn x_backward_kernel(
    grad: &Tensor<f32>,
    w: &Tensor<f32>,
    dx: &mut Tensor<f32>,
    kernel: usize,
    stride: usize,
    padding: usize,
    #[comptime] block: usize,
) {
    let cin = dx.shape(1);
    let d = dx.shape(2);
    let h = dx.shape(3);
    let wd = dx.shape(4);
    let voxels = d * h * wd;
    let blocks = cin / block;
    if ABSOLUTE_POS >= dx.shape(0) * blocks * voxels {
        terminate!();
    }
    let v = ABSOLUTE_POS % voxels;
    let rest = ABSOLUTE_POS / voxels;
    let ci0 = (rest % blocks) * block;
    let b = rest / blocks;
    let ix = (v % wd) as i32;
    let iy = ((v / wd) % h) as i32;
    let iz = (v / (wd * h)) as i32;

    let cout = grad.shape(1);
    let od = grad.shape(2) as i32;
    let oh = grad.shape(3) as i32;
    let ow = grad.shape(4) as i32;
    let out_voxels = grad.shape(2) * grad.shape(3) * grad.shape(4);
    let kvol = kernel * kernel * kernel;
    let s = stride as i32;
    let p = padding as i32;

    let mut acc = Array::<f32>::new(block);
    #[unroll]
    for j in 0..block {
        acc[j] = 0.0;
    }
    // The taps that put an output voxel on this input voxel: those ≡ (i + padding) mod
    // stride, one in `stride`.
    let first_z = ((iz + p) % s) as usize;
    let first_y = ((iy + p) % s) as usize;
    let first_x = ((ix + p) % s) as usize;
    for co in 0..cout {
        let g_base = (b * cout + co) * out_voxels;
        let w_base = (co * cin + ci0) * kvol;
        let mut kz = first_z;
        while kz < kernel {
            let oz = (iz + p - kz as i32) / s;
            if oz >= 0 && oz < od && iz + p >= kz as i32 {
                let mut ky = first_y;
                while ky < kernel {
                    let oy = (iy + p - ky as i32) / s;
                    if oy >= 0 && oy < oh && iy + p >= ky as i32 {
                        let row = g_base + ((oz * oh + oy) * ow) as usize;
                        let mut kx = first_x;
                        while kx < kernel {
                            let ox = (ix + p - kx as i32) / s;
                            if ox >= 0 && ox < ow && ix + p >= kx as i32 {
                                let g = grad[row + ox as usize];
                                let tap = w_base + (kz * kernel + ky) * kernel + kx;
                                #[unroll]
                                for j in 0..block {
                                    acc[j] += g * w[tap + j * kvol];
                                }
                            }
                            kx += stride;
                        }
                    }
                    ky += stride;
                }
            }
            kz += stride;
        }
    }
    #[unroll]
    for j in 0..block {
        dx[(b * cin + ci0 + j) * voxels + v] = acc[j];
    }
}

/// `partial[share, co, ci, kz, ky, kx]`: the weight gradient summed over one share of the
/// rows `(b, oz)` of the output gradient.
#[cube(launch_unchecked)]
fn weight_backward_kernel(
    x: &Tensor<f32>,
    grad: &Tensor<f32>,
    partial: &mut Tensor<f32>,
    kernel: usize,
    stride: usize,
    padding: usize,
    shares: usize,
    #[comptime] block: usize,
) {
    let cin = x.shape(1);
    let d = x.shape(2) as i32;
    let h = x.shape(3) as i32;
    let wd = x.shape(4) as i32;
    let cout = grad.shape(1);
    let od = grad.shape(2);
    let oh = grad.shape(3);
    let ow = grad.shape(4);
    let kvol = kernel * kernel * kernel;
    let blocks = cout / block;
    let per_share = blocks * cin * kvol;
    if ABSOLUTE_POS >= shares * per_share {
        terminate!();
    }
    let tap = ABSOLUTE_POS % kvol;
    let rest = ABSOLUTE_POS / kvol;
    let ci = rest % cin;
    let rest = rest / cin;
    let co0 = (rest % blocks) * block;
    let share = rest / blocks;
    let kx = (tap % kernel) as i32;
    let ky = ((tap / kernel) % kernel) as i32;
    let kz = (tap / (kernel * kernel)) as i32;
    let s = stride as i32;
    let p = padding as i32;

    let rows = grad.shape(0) * od;
    let first = share * rows / shares;
    let last = (share + 1) * rows / shares;
    let in_voxels = x.shape(2) * x.shape(3) * x.shape(4);
    let out_voxels = od * oh * ow;

    let mut acc = Array::<f32>::new(block);
    #[unroll]
    for j in 0..block {
        acc[j] = 0.0;
    }
    for r in first..last {
        let b = r / od;
        let oz = r % od;
        let z = (oz as i32) * s - p + kz;
        if z >= 0 && z < d {
            let x_base = (b * cin + ci) * in_voxels;
            let g_base = (b * cout + co0) * out_voxels + oz * oh * ow;
            for oy in 0..oh {
                let y = (oy as i32) * s - p + ky;
                if y >= 0 && y < h {
                    let x_row = x_base + ((z * h + y) * wd) as usize;
                    let g_row = g_base + oy * ow;
                    for ox in 0..ow {
                        let xx = (ox as i32) * s - p + kx;
                        if xx >= 0 && xx < wd {
                            let value = x[x_row + xx as usize];
                            #[unroll]
                            for j in 0..block {
                                acc[j] += value * grad[g_row + j * out_voxels + ox];
                            }
                        }
                    }
                }
            }
        }
    }
    let w_elems = cout * cin * kvol;
    #[unroll]
    for j in 0..block {
        partial[share * w_elems + ((co0 + j) * cin + ci) * kvol + tap] = acc[j];
    }
}

/// An f32 tensor in row-major order (burn's `into_contiguous` returns one that already is as
/// it is), or `None` for other dtypes.
fn contiguous_f32(t: CubeTensor) -> Option<CubeTensor> {
    (t.dtype == DType::F32).then(|| into_contiguous(t))
}

/// The convolution's shape, checked, when the window fits the padded input along every axis
/// (burn's convolution reports the error otherwise).
fn shape_of(x: &CubeTensor, w: &CubeTensor, g: ConvGeometry) -> Option<ConvShape> {
    let shape = conv_shape(x.meta.shape().as_slice(), w.meta.shape().as_slice(), g)?;
    shape
        .input
        .iter()
        .all(|&n| n + 2 * g.padding >= shape.kernel)
        .then_some(shape)
}

/// Whether `grad` has the shape of the convolution's output.
fn is_output_of(grad: &CubeTensor, shape: &ConvShape) -> bool {
    grad.meta.shape().as_slice() == shape.output_dims()
}

fn weight_dims(shape: &ConvShape) -> [usize; 5] {
    let k = shape.kernel;
    [shape.cout, shape.cin, k, k, k]
}

fn empty_like(template: &CubeTensor, dims: [usize; 5]) -> CubeTensor {
    empty_device_dtype(
        template.client.clone(),
        template.device.clone(),
        dims.into(),
        DType::F32,
    )
}

/// The work of `units` threads as a launch.
fn grid(t: &CubeTensor, units: usize) -> (CubeCount, CubeDim) {
    let cube_dim = CubeDim::new(&t.client, units);
    let count = calculate_cube_count_elemwise(&t.client, units, cube_dim);
    (count, cube_dim)
}

/// Output voxels along x one forward thread computes.
const FORWARD_RUN: usize = 4;

/// `conv3d(x, w)`; `None` when declined.
pub fn forward(x: CubeTensor, w: CubeTensor, g: ConvGeometry) -> Option<CubeTensor> {
    let shape = shape_of(&x, &w, g)?;
    let x = contiguous_f32(x)?;
    let w = contiguous_f32(w)?;
    let out_dims = shape.output_dims();
    let out = empty_like(&x, out_dims);
    let block = channel_block(shape.cout);
    let run = FORWARD_RUN;
    let [b, cout, od, oh, ow] = out_dims;
    let units = b * (cout / block) * od * oh * ow.div_ceil(run);
    if units == 0 {
        return Some(out);
    }
    let (count, dim) = grid(&x, units);
    // SAFETY: every index the kernel forms lies inside the contiguous tensors whose shapes
    // `shape_of` checked: thread positions past the work return first.
    unsafe {
        forward_kernel::launch_unchecked(
            &x.client,
            count,
            dim,
            x.clone().into_tensor_arg(),
            w.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            shape.kernel,
            g.stride,
            g.padding,
            block,
            run,
        );
    }
    Some(out)
}

/// The gradient with respect to `x`; `None` when declined.
pub fn x_backward(
    x: CubeTensor,
    w: CubeTensor,
    grad: CubeTensor,
    g: ConvGeometry,
) -> Option<CubeTensor> {
    let shape = shape_of(&x, &w, g)?;
    if !is_output_of(&grad, &shape) {
        return None;
    }
    let w = contiguous_f32(w)?;
    let grad = contiguous_f32(grad)?;
    let xs = shape.input_dims();
    let dx = empty_like(&grad, xs);
    let block = channel_block(shape.cin);
    let units = xs.iter().product::<usize>() / block;
    if units == 0 {
        return Some(dx);
    }
    let (count, dim) = grid(&grad, units);
    // SAFETY: as in `forward`; the output gradient's shape was checked against the geometry.
    unsafe {
        x_backward_kernel::launch_unchecked(
            &grad.client,
            count,
            dim,
            grad.clone().into_tensor_arg(),
            w.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            shape.kernel,
            g.stride,
            g.padding,
            block,
        );
    }
    Some(dx)
}

/// Threads wanted for a weight gradient: enough to fill a large GPU several times over.
const WEIGHT_GRADIENT_THREADS: usize = 1 << 17;

/// The gradient with respect to `w`; `None` when declined.
pub fn weight_backward(
    x: CubeTensor,
    w: CubeTensor,
    grad: CubeTensor,
    g: ConvGeometry,
) -> Option<CubeTensor> {
    let shape = shape_of(&x, &w, g)?;
    if !is_output_of(&grad, &shape) {
        return None;
    }
    let x = contiguous_f32(x)?;
    let grad = contiguous_f32(grad)?;
    let ws = weight_dims(&shape);
    let block = channel_block(shape.cout);
    let per_share = ws.iter().product::<usize>() / block;
    let rows = shape.batch * shape.output()[0];
    let shares = (WEIGHT_GRADIENT_THREADS / per_share.max(1)).clamp(1, rows.max(1));
    let partial = empty_like(&x, [shares, ws[0], ws[1], ws[2], ws[3] * ws[4]]);
    let (count, dim) = grid(&x, shares * per_share);
    // SAFETY: as in `forward`; each share writes its own slice of `partial`.
    unsafe {
        weight_backward_kernel::launch_unchecked(
            &x.client,
            count,
            dim,
            x.clone().into_tensor_arg(),
            grad.into_tensor_arg(),
            partial.clone().into_tensor_arg(),
            shape.kernel,
            g.stride,
            g.padding,
            shares,
            block,
        );
    }
    let summed = Cube::float_sum_dim(partial, 0);
    Some(Cube::float_reshape(summed, ws.into()))
}
