//! The convolutions of [`super`] on plain slices: forward, gradient with respect to the input
//! and gradient with respect to the weights, for the two kinds of convolution the network has.
//!
//! Tensors come and go in burn's layout: activations `[b, c, d, h, w]`, weights
//! `[cout, cin, k, k, k]`, row-major f32.
//!
//! - **Same** (3×3×3, stride 1, padding 1): each batch item is moved channels-last with a zero
//!   border (`cpu_net`'s layout) and convolved there by `cpu_net`'s tiles (its AVX-512 kernel
//!   where the CPU has it, nine in-place `gemm` products elsewhere). The input gradient is the
//!   same convolution of the output gradient with the kernel flipped and its channels swapped.
//!   The weight gradient is, per (dz, dy) shift, one product of the shifted input's channel
//!   runs (3·cin per position, read in place) with the output gradient over all positions,
//!   split into chunks of positions over the threads and summed.
//! - **Patch** (stride = kernel, no padding: the 4×4×4 stem, the 2×2×2 downsamplings,
//!   1×1×1): patches do not overlap, so each is a plain product with the im2col matrix, which
//!   is a permutation of the input (none at all for 1×1×1): forward `W · col`, input gradient
//!   `Wᵀ · grad` scattered back, weight gradient `grad · colᵀ` over chunks of positions.
//!
//! [`Path::Portable`] keeps to `gemm` (tests compare it with the AVX-512 path and with burn).
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::transpose::{Lines, deinterleave, interleave};
use crate::model::cpu_net::{CpuLayer, FoldedNorm, Mat, Padded, Pool, gemm_into, same_conv};

/// Which kernels compute the 3×3×3 convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// `cpu_net`'s AVX-512 kernel where the CPU has it, else `gemm`.
    Fastest,
    /// `gemm` only.
    Portable,
}

/// The geometry of one convolution (cubic kernel, the same stride and padding on every axis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub cin: usize,
    pub cout: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    /// Input size (d, h, w).
    pub input: [usize; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Same,
    Patch,
}

impl ConvShape {
    fn kind(&self) -> Option<Kind> {
        let nonempty = self.batch > 0 && self.cin > 0 && self.cout > 0;
        if !nonempty || self.input.contains(&0) {
            return None;
        }
        if self.kernel == 3 && self.stride == 1 && self.padding == 1 {
            Some(Kind::Same)
        } else if self.kernel >= 1
            && self.stride == self.kernel
            && self.padding == 0
            && self.input.iter().all(|&n| n >= self.kernel)
        {
            Some(Kind::Patch)
        } else {
            None
        }
    }

    /// Output size (d, h, w): `(n + 2·padding − kernel) / stride + 1` per axis, 0 where the
    /// window does not fit.
    pub fn output(&self) -> [usize; 3] {
        self.input.map(|n| {
            (n + 2 * self.padding)
                .checked_sub(self.kernel)
                .map_or(0, |span| span / self.stride.max(1) + 1)
        })
    }

    pub fn input_dims(&self) -> [usize; 5] {
        let [d, h, w] = self.input;
        [self.batch, self.cin, d, h, w]
    }

    pub fn output_dims(&self) -> [usize; 5] {
        let [d, h, w] = self.output();
        [self.batch, self.cout, d, h, w]
    }

    fn taps(&self) -> usize {
        self.kernel.pow(3)
    }
}

/// Whether these kernels compute this convolution.
pub fn covers(shape: &ConvShape) -> bool {
    shape.kind().is_some()
}

fn input_len(s: &ConvShape) -> usize {
    s.input_dims().iter().product()
}

fn output_len(s: &ConvShape) -> usize {
    s.output_dims().iter().product()
}

/// The convolution of `x` `[b, cin, d, h, w]` with `weight` `[cout, cin, k, k, k]`; `None`
/// when the shape is not covered or the slices do not match it.
pub fn forward(shape: &ConvShape, x: &[f32], weight: &[f32], path: Path) -> Option<Vec<f32>> {
    let s = shape;
    (x.len() == input_len(s) && weight.len() == s.cout * s.cin * s.taps()).then_some(())?;
    match s.kind()? {
        Kind::Same => {
            let layer = plain_layer(weight, [s.cout, s.cin, s.kernel])?;
            Some(same_each(s, x, [s.cin, s.cout], &layer, path))
        }
        Kind::Patch => Some(patch_forward(s, x, weight, path)),
    }
}

/// The gradient with respect to the input, from the output's gradient `grad`.
pub fn x_backward(shape: &ConvShape, weight: &[f32], grad: &[f32], path: Path) -> Option<Vec<f32>> {
    let s = shape;
    (grad.len() == output_len(s) && weight.len() == s.cout * s.cin * s.taps()).then_some(())?;
    match s.kind()? {
        Kind::Same => {
            // The flipped kernel with input and output channels swapped.
            let taps = s.taps();
            let mut flipped = vec![0.0f32; weight.len()];
            for co in 0..s.cout {
                for ci in 0..s.cin {
                    let from = &weight[(co * s.cin + ci) * taps..][..taps];
                    let to = &mut flipped[(ci * s.cout + co) * taps..][..taps];
                    for (t, v) in to.iter_mut().enumerate() {
                        *v = from[taps - 1 - t];
                    }
                }
            }
            let layer = plain_layer(&flipped, [s.cin, s.cout, s.kernel])?;
            Some(same_each(s, grad, [s.cout, s.cin], &layer, path))
        }
        Kind::Patch => Some(patch_x_backward(s, weight, grad)),
    }
}

/// The gradient with respect to the weights, `[cout, cin, k, k, k]`.
pub fn weight_backward(shape: &ConvShape, x: &[f32], grad: &[f32], path: Path) -> Option<Vec<f32>> {
    let s = shape;
    (x.len() == input_len(s) && grad.len() == output_len(s)).then_some(())?;
    match s.kind()? {
        Kind::Same => Some(same_weight_backward(s, x, grad, path)),
        Kind::Patch => Some(patch_weight_backward(s, x, grad, path)),
    }
}

/// A convolution layer of `cpu_net` without norm, shift or activation.
fn plain_layer(weight: &[f32], [cout, cin, kernel]: [usize; 3]) -> Option<CpuLayer> {
    let identity = FoldedNorm {
        scale: vec![1.0; cout],
        shift: vec![0.0; cout],
    };
    CpuLayer::conv_norm(weight, [cout, cin, kernel], &identity, false).ok()
}

/// A dense `[c][z][y][x]` block as padded channels-last activations.
fn to_padded(dense: &[f32], channels: usize, dims: [usize; 3], pool: &mut Pool) -> Padded {
    let mut p = Padded::new(channels, dims, pool);
    let (zs, ys) = p.strides();
    let [z, y, x] = dims;
    let plane = zs * channels;
    p.data
        .par_chunks_mut(plane)
        .enumerate()
        .filter(|(k, _)| (1..=z).contains(k))
        .for_each(|(k, plane)| {
            for j in 0..y {
                let row = &mut plane[((j + 1) * ys + 1) * channels..][..x * channels];
                let lines = Lines {
                    offset: ((k - 1) * y + j) * x,
                    channel_stride: z * y * x,
                };
                interleave(dense, lines, channels, row);
            }
        });
    p
}

/// The interior of padded activations into a dense `[c][z][y][x]` block (one thread: callers
/// run the batch items in parallel).
fn from_padded(p: &Padded, dense: &mut [f32]) {
    let [z, y, x] = p.dims;
    let c = p.channels;
    let (zs, ys) = p.strides();
    for k in 0..z {
        for j in 0..y {
            let from = ((k + 1) * zs + (j + 1) * ys + 1) * c;
            let lines = Lines {
                offset: (k * y + j) * x,
                channel_stride: z * y * x,
            };
            deinterleave(&p.data[from..from + x * c], c, dense, lines);
        }
    }
}

/// A same-size convolution of every batch item of `input`, `[channels, out_channels]` the
/// layer's cin and cout; dense out.
fn same_each(
    s: &ConvShape,
    input: &[f32],
    [channels, out_channels]: [usize; 2],
    layer: &CpuLayer,
    path: Path,
) -> Vec<f32> {
    let dims = s.input;
    let voxels: usize = dims.iter().product();
    let mut out = vec![0.0f32; s.batch * out_channels * voxels];
    // Batch items in parallel too (each convolution is parallel over its tiles inside): on the
    // small levels one item's tiles are too few to keep both threads busy between regions.
    input
        .par_chunks_exact(channels * voxels)
        .zip(out.par_chunks_exact_mut(out_channels * voxels))
        .for_each_init(Pool::default, |pool, (item, dst)| {
            let padded = to_padded(item, channels, dims, pool);
            let result = same_conv(layer, &[&padded], pool, path == Path::Fastest);
            from_padded(&result, dst);
            pool.give(padded);
            pool.give(result);
        });
    out
}

/// Positions per pass of the weight-gradient kernel: the output gradient's rows of one pass
/// stay in the first-level cache over the nine shifts.
#[cfg(target_arch = "x86_64")]
const WEIGHT_GRAD_POSITIONS: usize = 128;

/// The weight gradient of a 3×3×3 same convolution.
fn same_weight_backward(s: &ConvShape, x: &[f32], grad: &[f32], path: Path) -> Vec<f32> {
    let dims = s.input;
    let voxels: usize = dims.iter().product();
    let (cin, cout) = (s.cin, s.cout);
    // Items in parallel, as in `same_each`.
    let xs: Vec<Padded> = x
        .par_chunks_exact(cin * voxels)
        .map_init(Pool::default, |pool, item| to_padded(item, cin, dims, pool))
        .collect();
    let gs: Vec<Padded> = grad
        .par_chunks_exact(cout * voxels)
        .map_init(Pool::default, |pool, item| {
            to_padded(item, cout, dims, pool)
        })
        .collect();
    let Some(first) = xs.first() else {
        return vec![0.0; cout * cin * 27];
    };
    let (zs, ys) = first.strides();
    let [z, y, x_len] = dims;
    // Per interior plane, the output positions from its first interior voxel to its last; the
    // border positions in between have a zero gradient, so they add nothing.
    let per_plane = (y - 1) * ys + x_len;
    let plane_start = |k: usize| k * zs + ys + 1;
    let shifts: Vec<isize> = (0..9)
        .map(|o| {
            let (dz, dy) = ((o / 3) as isize - 1, (o % 3) as isize - 1);
            dz * zs as isize + dy * ys as isize - 1
        })
        .collect();
    let run = 3 * cin;
    let block = run * cout;
    // Tasks of whole planes, enough for every thread, each summing into its own blocks.
    let planes_per_task = (xs.len() * z)
        .div_ceil(4 * rayon::current_num_threads())
        .clamp(1, z);
    let tasks: Vec<(usize, usize)> = (0..xs.len())
        .flat_map(|item| (1..=z).step_by(planes_per_task).map(move |k0| (item, k0)))
        .collect();
    let partial = tasks
        .par_iter()
        .map(|&(item, k0)| {
            let (xp, gp) = (&xs[item], &gs[item]);
            let planes = k0..(k0 + planes_per_task).min(z + 1);
            let mut blocks = vec![0.0f32; 9 * block];
            #[cfg(target_arch = "x86_64")]
            {
                let product = |shift: isize, q0: usize, n: usize| super::weight_grad::Product {
                    x: &xp.data,
                    x_stride: cin,
                    rows: run,
                    shift,
                    g: &gp.data,
                    cout,
                    q0,
                    n,
                };
                let fits = |k: usize| {
                    shifts
                        .iter()
                        .all(|&sh| product(sh, plane_start(k), per_plane).fits(block))
                };
                if path == Path::Fastest && planes.clone().all(fits) {
                    for k in planes {
                        let (start, end) = (plane_start(k), plane_start(k) + per_plane);
                        for p0 in (start..end).step_by(WEIGHT_GRAD_POSITIONS) {
                            let m = WEIGHT_GRAD_POSITIONS.min(end - p0);
                            for (&shift, dst) in shifts.iter().zip(blocks.chunks_exact_mut(block)) {
                                // Inside the planes just checked, so it fits.
                                product(shift, p0, m).accumulate(dst);
                            }
                        }
                    }
                    return blocks;
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = path;
            for k in planes {
                let q0 = plane_start(k);
                for (&shift, dst) in shifts.iter().zip(blocks.chunks_exact_mut(block)) {
                    // dst[r][co] += Σ_q x[(q + shift)·cin + r] · g[q·cout + co]
                    let lhs = Mat {
                        data: &xp.data,
                        offset: q0.wrapping_add_signed(shift) * cin,
                        rs: 1,
                        cs: cin,
                    };
                    let rhs = Mat {
                        data: &gp.data,
                        offset: q0 * cout,
                        rs: cout,
                        cs: 1,
                    };
                    matmul(
                        dst,
                        [cout, 1],
                        lhs,
                        rhs,
                        [run, cout, per_plane],
                        true,
                        false,
                    );
                }
            }
            blocks
        })
        .reduce(
            || vec![0.0f32; 9 * block],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(u, v)| *u += v);
                a
            },
        );
    // blocks[(dz, dy)][(dx·cin + ci)·cout + co] → burn's [co][ci][dz][dy][dx].
    let mut out = vec![0.0f32; cout * cin * 27];
    for o in 0..9 {
        for dx in 0..3 {
            for ci in 0..cin {
                for co in 0..cout {
                    out[(co * cin + ci) * 27 + o * 3 + dx] =
                        partial[o * block + (dx * cin + ci) * cout + co];
                }
            }
        }
    }
    out
}

/// The im2col matrix of one batch item for a patch convolution: row-major `[K × P]`, row
/// `((ci·s + a)·s + b)·s + c`, column the output voxel. The s rows of one (ci, a, b) are filled
/// together, each input line read once and dealt out to them (a row alone would read every
/// s-th value: s times the memory traffic).
fn im2col(s: &ConvShape, item: &[f32], col: &mut [f32]) {
    let k = s.kernel;
    let [d, h, w] = s.input;
    let [od, oh, ow] = s.output();
    let p = od * oh * ow;
    col.par_chunks_mut(k * p)
        .enumerate()
        .for_each(|(group, rows)| {
            let (ci, a, b) = (group / (k * k), group / k % k, group % k);
            for oz in 0..od {
                for oy in 0..oh {
                    let from = ((ci * d + oz * k + a) * h + oy * k + b) * w;
                    let line = &item[from..from + ow * k];
                    let at = (oz * oh + oy) * ow;
                    for (ox, patch) in line.chunks_exact(k).enumerate() {
                        for (c, v) in patch.iter().enumerate() {
                            rows[c * p + at + ox] = *v;
                        }
                    }
                }
            }
        });
}

/// The inverse of [`im2col`]: adds nothing, each input voxel is in one patch at most (voxels
/// past the last whole patch get 0).
fn col2im(s: &ConvShape, col: &[f32], item: &mut [f32]) {
    let k = s.kernel;
    let [d, h, w] = s.input;
    let [od, oh, ow] = s.output();
    let p = od * oh * ow;
    // One thread per item (the callers run the items in parallel).
    for (plane_index, plane) in item.chunks_exact_mut(h * w).enumerate() {
        let (ci, z) = (plane_index / d, plane_index % d);
        plane.fill(0.0);
        let (oz, a) = (z / k, z % k);
        if oz >= od {
            continue;
        }
        for yy in 0..oh * k {
            let (oy, b) = (yy / k, yy % k);
            let first_row = ((ci * k + a) * k + b) * k;
            let at = (oz * oh + oy) * ow;
            let line = &mut plane[yy * w..yy * w + ow * k];
            for (c, run) in (0..k).map(|c| (c, &col[(first_row + c) * p + at..][..ow])) {
                for (ox, v) in run.iter().enumerate() {
                    line[ox * k + c] = *v;
                }
            }
        }
    }
}

fn patch_forward(s: &ConvShape, x: &[f32], weight: &[f32], path: Path) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if path == Path::Fastest
        && let Some(out) = patch_forward_direct(s, x, weight)
    {
        return out;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = path;
    let kk = s.cin * s.taps();
    let p: usize = s.output().iter().product();
    let in_len = s.cin * s.input.iter().product::<usize>();
    let mut out = vec![0.0f32; s.batch * s.cout * p];
    let mut col = if s.kernel == 1 {
        Vec::new()
    } else {
        vec![0.0f32; kk * p]
    };
    for (item, dst) in x.chunks_exact(in_len).zip(out.chunks_exact_mut(s.cout * p)) {
        let col: &[f32] = if s.kernel == 1 {
            item
        } else {
            im2col(s, item, &mut col);
            &col
        };
        let lhs = Mat {
            data: weight,
            offset: 0,
            rs: kk,
            cs: 1,
        };
        let rhs = Mat {
            data: col,
            offset: 0,
            rs: p,
            cs: 1,
        };
        matmul(dst, [p, 1], lhs, rhs, [s.cout, p, kk], false, true);
    }
    out
}

fn patch_x_backward(s: &ConvShape, weight: &[f32], grad: &[f32]) -> Vec<f32> {
    let kk = s.cin * s.taps();
    let p: usize = s.output().iter().product();
    let in_len = s.cin * s.input.iter().product::<usize>();
    let mut out = vec![0.0f32; s.batch * in_len];
    // Items in parallel, each product and scatter on one thread: an item's product is small.
    grad.par_chunks_exact(s.cout * p)
        .zip(out.par_chunks_exact_mut(in_len))
        .for_each(|(g, dst)| {
            // colᵀ = Wᵀ · g: Wᵀ(i, j) = W[j·K + i].
            let lhs = Mat {
                data: weight,
                offset: 0,
                rs: 1,
                cs: kk,
            };
            let rhs = Mat {
                data: g,
                offset: 0,
                rs: p,
                cs: 1,
            };
            if s.kernel == 1 {
                matmul(dst, [p, 1], lhs, rhs, [kk, p, s.cout], false, false);
            } else {
                let mut col = vec![0.0f32; kk * p];
                matmul(&mut col, [p, 1], lhs, rhs, [kk, p, s.cout], false, false);
                col2im(s, &col, dst);
            }
        });
    out
}

fn patch_weight_backward(s: &ConvShape, x: &[f32], grad: &[f32], path: Path) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if path == Path::Fastest
        && let Some(out) = patch_weight_backward_direct(s, x, grad)
    {
        return out;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = path;
    let kk = s.cin * s.taps();
    let p: usize = s.output().iter().product();
    let in_len = s.cin * s.input.iter().product::<usize>();
    let cols: Vec<Vec<f32>> = if s.kernel == 1 {
        Vec::new()
    } else {
        x.chunks_exact(in_len)
            .map(|item| {
                let mut col = vec![0.0f32; kk * p];
                im2col(s, item, &mut col);
                col
            })
            .collect()
    };
    let chunk = p.div_ceil(2 * rayon::current_num_threads()).max(512);
    let tasks: Vec<(usize, usize)> = (0..s.batch)
        .flat_map(|item| (0..p).step_by(chunk).map(move |p0| (item, p0)))
        .collect();
    tasks
        .par_iter()
        .map(|&(item, p0)| {
            let n = chunk.min(p - p0);
            let col: &[f32] = if s.kernel == 1 {
                &x[item * in_len..(item + 1) * in_len]
            } else {
                &cols[item]
            };
            // dW(co, j) = Σ_p g[co·P + p] · col[j·P + p]
            let lhs = Mat {
                data: grad,
                offset: item * s.cout * p + p0,
                rs: p,
                cs: 1,
            };
            let rhs = Mat {
                data: col,
                offset: p0,
                rs: 1,
                cs: p,
            };
            let mut dw = vec![0.0f32; s.cout * kk];
            matmul(&mut dw, [kk, 1], lhs, rhs, [s.cout, kk, n], false, false);
            dw
        })
        .reduce(
            || vec![0.0f32; s.cout * kk],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(u, v)| *u += v);
                a
            },
        )
}

/// Every batch item of a patch convolution (kernel ≥ 2) as [`super::patches`] reads it;
/// `None` for 1×1×1 (a plain product, no im2col to save) or when its kernels do not fit.
#[cfg(target_arch = "x86_64")]
fn patch_items<'a>(
    s: &ConvShape,
    x: &'a [f32],
    offsets: &'a [usize],
) -> Option<Vec<super::patches::Patches<'a>>> {
    let in_len = s.cin * s.input.iter().product::<usize>();
    let items: Vec<_> = x
        .chunks_exact(in_len)
        .map(|item| super::patches::Patches {
            x: item,
            kernel: s.kernel,
            input: s.input,
            output: s.output(),
            offsets,
            cout: s.cout,
        })
        .collect();
    (s.kernel >= 2 && items.len() == s.batch && items.iter().all(|p| p.fits())).then_some(items)
}

/// [`patch_forward`] on [`super::patches`]' kernel: channels-last output rows in parallel,
/// then each item's output turned channels-first.
#[cfg(target_arch = "x86_64")]
fn patch_forward_direct(s: &ConvShape, x: &[f32], weight: &[f32]) -> Option<Vec<f32>> {
    use super::patches::Patches;
    let taps = s.cin * s.taps();
    let offsets = Patches::offsets(s.cin, s.kernel, s.input);
    let items = patch_items(s, x, &offsets)?;
    let mut weights_t = vec![0.0f32; taps * s.cout];
    for (co, w) in weight.chunks_exact(taps).enumerate() {
        for (t, v) in w.iter().enumerate() {
            weights_t[t * s.cout + co] = *v;
        }
    }
    let [od, oh, ow] = s.output();
    let p = od * oh * ow;
    let mut channels_last = vec![0.0f32; s.batch * p * s.cout];
    let written = channels_last
        .par_chunks_mut(ow * s.cout)
        .enumerate()
        .all(|(r, row)| items[r / (od * oh)].forward_row(&weights_t, r / oh % od, r % oh, row));
    if !written {
        return None;
    }
    let mut out = vec![0.0f32; s.batch * s.cout * p];
    out.par_chunks_mut(s.cout * p)
        .zip(channels_last.par_chunks(p * s.cout))
        .for_each(|(dst, src)| {
            let lines = Lines {
                offset: 0,
                channel_stride: p,
            };
            deinterleave(src, s.cout, dst, lines);
        });
    Some(out)
}

/// [`patch_weight_backward`] on [`super::patches`]' kernel: the output gradient channels-last,
/// then chunks of output rows in parallel, summed.
#[cfg(target_arch = "x86_64")]
fn patch_weight_backward_direct(s: &ConvShape, x: &[f32], grad: &[f32]) -> Option<Vec<f32>> {
    use super::patches::Patches;
    let taps = s.cin * s.taps();
    let offsets = Patches::offsets(s.cin, s.kernel, s.input);
    let items = patch_items(s, x, &offsets)?;
    let [od, oh, _] = s.output();
    let p: usize = s.output().iter().product();
    let mut g = vec![0.0f32; s.batch * p * s.cout];
    g.par_chunks_mut(p * s.cout)
        .zip(grad.par_chunks(s.cout * p))
        .for_each(|(row, item)| {
            let lines = Lines {
                offset: 0,
                channel_stride: p,
            };
            interleave(item, lines, s.cout, row);
        });
    let rows: Vec<(usize, usize)> = (0..od)
        .flat_map(|oz| (0..oh).map(move |oy| (oz, oy)))
        .collect();
    let chunk = (s.batch * rows.len())
        .div_ceil(4 * rayon::current_num_threads())
        .clamp(1, rows.len());
    let tasks: Vec<(usize, &[(usize, usize)])> = (0..s.batch)
        .flat_map(|b| rows.chunks(chunk).map(move |r| (b, r)))
        .collect();
    let sum = tasks
        .par_iter()
        .map(|&(b, rows)| {
            let mut dw = vec![0.0f32; taps * s.cout];
            let g_item = &g[b * p * s.cout..(b + 1) * p * s.cout];
            items[b]
                .add_weight_grad(g_item, rows, &mut dw)
                .then_some(dw)
        })
        .try_reduce(
            || vec![0.0f32; taps * s.cout],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(u, v)| *u += v);
                Some(a)
            },
        )?;
    // [taps][cout] → burn's [cout][taps]
    let mut out = vec![0.0f32; s.cout * taps];
    for (t, row) in sum.chunks_exact(s.cout).enumerate() {
        for (co, v) in row.iter().enumerate() {
            out[co * taps + t] = *v;
        }
    }
    Some(out)
}

/// `dst(i, j) (+)= Σ_k lhs(i, k) · rhs(k, j)` for i < m, j < n, dst(i, j) at
/// `i·dst_rs + j·dst_cs`; on rayon's threads if `parallel`. Does nothing if an index of any
/// of the three would fall outside its slice.
fn matmul(
    dst: &mut [f32],
    [dst_rs, dst_cs]: [usize; 2],
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    [m, n, k]: [usize; 3],
    accumulate: bool,
    parallel: bool,
) {
    let out = Mat {
        data: dst,
        offset: 0,
        rs: dst_rs,
        cs: dst_cs,
    };
    if m == 0 || n == 0 || !(lhs.fits(m, k) && rhs.fits(k, n) && out.fits(m, n)) {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index of dst was bounds-checked above (lhs and rhs too); dst is borrowed
    // mutably for the call, so nothing else reads or writes it.
    unsafe {
        gemm_into(
            dst.as_mut_ptr(),
            [dst_rs, dst_cs],
            lhs,
            rhs,
            [m, n, k],
            accumulate,
            parallelism,
        );
    }
}
