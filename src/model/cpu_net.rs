//! The APE network for inference on the CPU, without burn.
//!
//! burn's `flex` backend runs the network's 3-D convolutions at ~15 GFLOP/s on this project's
//! 2-core CPU, ~7× slower than PyTorch, and they are nearly all of an embedding's time. This
//! module runs the same network with every batch norm folded into its convolution (inference
//! uses the running statistics, so a block is one affine map and a ReLU) and every convolution
//! as `gemm` matrix products over tiles of voxels, in parallel over tiles.
//!
//! Activations are channels-last with a zero border: `[z+2][y+2][x+2][channels]`. Flatten the
//! padded grid to positions q; a 3×3×3 convolution's output at q reads q + shift for 27
//! constant shifts, and for each of the 9 (dz, dy) shifts the three dx neighbours' channels are
//! one contiguous run of 3·cin floats per position. So a tile of positions is 9 matrix
//! products of K = 3·cin, read in place and accumulated into the tile's output (no im2col copy),
//! written in the same layout, ready for the next convolution. Positions on the y/x border get
//! values of no voxel and are zeroed after.
//!
//! Where the CPU has AVX-512 (checked at run time), the same-size convolutions whose output
//! width is a multiple of 16 run on this module's own kernel instead (`avx512`): a block of
//! positions × output channels held in registers over all 27 taps, written once, activated.
//! `gemm` 0.19 uses AVX-512 only on nightly Rust; on this project's CPU the kernel makes a
//! 208³ pass ~1.6× faster than gemm's AVX2 products.
//!
//! `tests` check both paths against burn's forward pass (the reference) within 1e-4.
//!
//! The crate's only `unsafe` lives here: `gemm` takes raw pointers, the AVX-512 kernel reads
//! through pointers after one bounds check per tile, and tiles write their own disjoint parts
//! of one output in parallel. Each block states why it is sound.
#![allow(unsafe_code)]

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// One convolution with its batch norm folded in: `out = act(W ⋆ in + shift)`.
#[derive(Debug, Clone)]
pub struct CpuLayer {
    cin: usize,
    cout: usize,
    kernel: usize,
    /// Column-major `[K × cout]`, K = kernel³·cin, rows in (dz, dy, dx, ci) order (the order
    /// of channels-last activations), batch-norm scale folded in.
    tap_major: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
    /// A layer norm over the output's channels, then a ReLU (`BlockNorm::Layer`): applied
    /// after the convolution, whose `shift` is then its bias and `relu` off.
    channel_norm: Option<ChannelNorm>,
}

impl CpuLayer {
    /// A convolution without bias followed by a batch norm (running statistics) and,
    /// if `relu`, a ReLU. `weight` is burn's `[cout, cin, k, k, k]`, row-major.
    pub fn conv_norm(
        weight: &[f32],
        [cout, cin, kernel]: [usize; 3],
        norm: &FoldedNorm,
        relu: bool,
    ) -> Result<Self, String> {
        let k = cin * kernel.pow(3);
        if weight.len() != cout * k || norm.scale.len() != cout || norm.shift.len() != cout {
            return Err(format!(
                "a {cin}→{cout} convolution of kernel {kernel} has {} weights and {} norm channels",
                weight.len(),
                norm.scale.len()
            ));
        }
        // burn's rows are (ci, dz, dy, dx) for each output channel.
        let taps = kernel.pow(3);
        let mut tap_major = Vec::with_capacity(weight.len());
        for (row, &scale) in weight.chunks_exact(k).zip(&norm.scale) {
            for tap in 0..taps {
                tap_major.extend((0..cin).map(|ci| row[ci * taps + tap] * scale));
            }
        }
        Ok(Self {
            cin,
            cout,
            kernel,
            tap_major,
            shift: norm.shift.clone(),
            relu,
            channel_norm: None,
        })
    }

    /// A convolution with `bias` followed by a layer norm over its output channels and a ReLU.
    pub fn conv_layer_norm(
        weight: &[f32],
        [cout, cin, kernel]: [usize; 3],
        bias: &[f32],
        norm: ChannelNorm,
    ) -> Result<Self, String> {
        if norm.gamma.len() != cout || norm.beta.len() != cout || bias.len() != cout {
            return Err(format!(
                "a layer norm of {} channels after a convolution of {cout} with {} biases",
                norm.gamma.len(),
                bias.len()
            ));
        }
        let identity = FoldedNorm {
            scale: vec![1.0; cout],
            shift: bias.to_vec(),
        };
        Ok(Self {
            channel_norm: Some(norm),
            ..Self::conv_norm(weight, [cout, cin, kernel], &identity, false)?
        })
    }

    fn k(&self) -> usize {
        self.cin * self.kernel.pow(3)
    }
}

/// A layer norm over channels in each voxel: `y = (x − mean) / √(var + ε) · gamma + beta`.
#[derive(Debug, Clone)]
pub struct ChannelNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub epsilon: f32,
}

impl ChannelNorm {
    /// Normalises every interior position of `act` (channels-last, so one contiguous run of
    /// channels each), then ReLU; the zero border stays zero.
    fn apply_relu(&self, act: &mut Padded) {
        let c = act.channels;
        if c != self.gamma.len() {
            return;
        }
        act.par_interior_rows_mut(|_, _, row| {
            for values in row.chunks_exact_mut(c) {
                self.normalise_relu(values);
            }
        });
    }

    fn normalise_relu(&self, values: &mut [f32]) {
        let n = values.len() as f32;
        let mean = values.iter().sum::<f32>() / n;
        let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (variance + self.epsilon).sqrt();
        for ((v, g), b) in values.iter_mut().zip(&self.gamma).zip(&self.beta) {
            *v = ((*v - mean) * inv * g + b).max(0.0);
        }
    }
}

/// A batch norm in inference: `y = x · scale + shift` per channel.
#[derive(Debug, Clone)]
pub struct FoldedNorm {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

impl FoldedNorm {
    /// From a batch norm's parameters; `gamma`/`beta` absent for a norm without affine terms.
    /// `bias` is a preceding convolution's bias, if any.
    pub fn new(
        mean: &[f32],
        var: &[f32],
        epsilon: f64,
        affine: Option<(&[f32], &[f32])>,
        bias: Option<&[f32]>,
    ) -> Self {
        let mut scale = Vec::with_capacity(mean.len());
        let mut shift = Vec::with_capacity(mean.len());
        for c in 0..mean.len() {
            let inv = 1.0 / (f64::from(var[c]) + epsilon).sqrt();
            let (g, b) = affine.map_or((1.0, 0.0), |(g, b)| (f64::from(g[c]), f64::from(b[c])));
            let s = g * inv;
            let bias = bias.map_or(0.0, |b| f64::from(b[c]));
            scale.push(s as f32);
            shift.push((b + (bias - f64::from(mean[c])) * s) as f32);
        }
        Self { scale, shift }
    }
}

/// The whole network: the same structure as [`super::ApeNet`].
#[derive(Debug, Clone)]
pub struct CpuNet {
    pub(super) stem: CpuLayer,
    pub(super) encoders: Vec<Vec<CpuLayer>>,
    pub(super) downs: Vec<CpuLayer>,
    pub(super) ups: Vec<CpuLayer>,
    pub(super) decoders: Vec<Vec<CpuLayer>>,
    pub(super) head: CpuLayer,
    /// The context levels and the level heads (see `ApeNetConfig::context_widths`).
    pub(super) context_downs: Vec<CpuLayer>,
    pub(super) context_levels: Vec<Vec<CpuLayer>>,
    pub(super) heads: Vec<CpuLayer>,
    /// The sigmoid output's scale per channel (`ApeNetConfig::output_scale`), applied after
    /// the heads are summed; `None`: the output batch norm, folded into the heads.
    pub(super) output_scale: Option<Vec<f32>>,
    /// Whether convolutions may use the AVX-512 kernel where the CPU has it (else `gemm`
    /// only; tests compare the two).
    pub(super) wide_kernel: bool,
}

impl CpuNet {
    /// Runs the network on one block of model input, `[z][y][x]` row-major with each side a
    /// multiple of the network's size multiple; returns `[channels][z/4][y/4][x/4]`.
    pub fn forward(&self, input: &[f32], dims: [usize; 3]) -> Vec<f32> {
        super::backend::on_cpu_pool(|| self.forward_here(input, dims))
    }

    fn forward_here(&self, input: &[f32], [z, y, x]: [usize; 3]) -> Vec<f32> {
        let mut pool = Pool::default();
        let stride = self.stem.kernel;
        let source = Strided::dense(input, [z, y, x]);
        let dims = [z / stride, y / stride, x / stride];
        let mut act = strided_conv(&self.stem, &source, dims, &mut pool);
        // Each level's output, kept for the decoder's skip connection (moved, not copied).
        let mut skips: Vec<Padded> = Vec::with_capacity(self.encoders.len());
        for (depth, encoder) in self.encoders.iter().enumerate() {
            if depth > 0 {
                let down = &self.downs[depth - 1];
                let d = act.dims.map(|n| n / down.kernel);
                let next = strided_conv(down, &act.interior(), d, &mut pool);
                skips.push(std::mem::replace(&mut act, next));
            }
            for layer in encoder {
                let next = same_conv(layer, &[&act], &mut pool, self.wide_kernel);
                pool.give(std::mem::replace(&mut act, next));
            }
        }
        // The levels' head outputs (dense, 3 channels), each with its level, summed in at the end.
        let mut level_outputs: Vec<(usize, Vec<f32>, [usize; 3])> = Vec::new();
        let deepest = self.encoders.len() - 1;
        if !self.heads.is_empty() {
            let mut context: Option<Padded> = None;
            for (c, (down, level)) in self
                .context_downs
                .iter()
                .zip(&self.context_levels)
                .enumerate()
            {
                let above = context.as_ref().unwrap_or(&act);
                let d = above.dims.map(|n| n / down.kernel);
                let mut next = strided_conv(down, &above.interior(), d, &mut pool);
                for layer in level {
                    let conv = same_conv(layer, &[&next], &mut pool, self.wide_kernel);
                    pool.give(std::mem::replace(&mut next, conv));
                }
                level_outputs.push(self.level_head(deepest + c, deepest + 1 + c, &next, &mut pool));
                if let Some(old) = context.replace(next) {
                    pool.give(old);
                }
            }
            if let Some(last) = context {
                pool.give(last);
            }
            if deepest > 0 {
                level_outputs.push(self.level_head(deepest - 1, deepest, &act, &mut pool));
            }
        }
        for (depth, decoder) in self.decoders.iter().enumerate().rev() {
            // A 1×1 convolution commutes with nearest upsampling: run it at low resolution.
            let low = same_conv(&self.ups[depth], &[&act], &mut pool, self.wide_kernel);
            pool.give(std::mem::replace(&mut act, low));
            let Some(skip) = skips.pop() else { break };
            let up = upsample(&act, skip.dims, &mut pool);
            let mut layers = decoder.iter();
            if let Some(first) = layers.next() {
                // The concatenation [up, skip] is read in place.
                let next = same_conv(first, &[&up, &skip], &mut pool, self.wide_kernel);
                pool.give(std::mem::replace(&mut act, next));
            }
            pool.give(up);
            pool.give(skip);
            for layer in layers {
                let next = same_conv(layer, &[&act], &mut pool, self.wide_kernel);
                pool.give(std::mem::replace(&mut act, next));
            }
            if depth > 0 && !self.heads.is_empty() {
                level_outputs.push(self.level_head(depth - 1, depth, &act, &mut pool));
            }
        }
        let mut out = same_conv(&self.head, &[&act], &mut pool, self.wide_kernel).dense();
        let channels = self.head.cout;
        for (level, mut head, mut dims) in level_outputs {
            for _ in 0..level {
                (head, dims) = upsample_linear2(head, channels, dims);
            }
            if head.len() == out.len() {
                for (o, h) in out.iter_mut().zip(&head) {
                    *o += h;
                }
            }
        }
        if let Some(scale) = &self.output_scale {
            let cells = out.len() / channels.max(1);
            for (channel, &s) in out.chunks_exact_mut(cells.max(1)).zip(scale) {
                for v in channel {
                    *v = s / (1.0 + (-*v).exp());
                }
            }
        }
        out
    }

    /// Head `index` on the features of `level`: dense `[channels][z][y][x]`, its level and dims.
    fn level_head(
        &self,
        index: usize,
        level: usize,
        features: &Padded,
        pool: &mut Pool,
    ) -> (usize, Vec<f32>, [usize; 3]) {
        let head = same_conv(&self.heads[index], &[features], pool, self.wide_kernel);
        let dense = head.dense();
        let dims = head.dims;
        pool.give(head);
        (level, dense, dims)
    }
}

/// Trilinear ×2 upsampling of dense `[channels][z][y][x]` (as `net::upsample_linear2`: cell
/// centres kept, edges clamped), one axis at a time.
fn upsample_linear2(
    mut data: Vec<f32>,
    channels: usize,
    mut dims: [usize; 3],
) -> (Vec<f32>, [usize; 3]) {
    for axis in (0..3).rev() {
        let n = dims[axis];
        let inner: usize = dims[axis + 1..].iter().product();
        let outer = channels * dims[..axis].iter().product::<usize>();
        let mut out = vec![0.0f32; data.len() * 2];
        for o in 0..outer {
            let src = &data[o * n * inner..][..n * inner];
            let dst = &mut out[o * 2 * n * inner..][..2 * n * inner];
            for i in 0..n {
                let (prev, next) = (i.saturating_sub(1), (i + 1).min(n - 1));
                for j in 0..inner {
                    let own = src[i * inner + j];
                    dst[2 * i * inner + j] = 0.75 * own + 0.25 * src[prev * inner + j];
                    dst[(2 * i + 1) * inner + j] = 0.75 * own + 0.25 * src[next * inner + j];
                }
            }
        }
        data = out;
        dims[axis] *= 2;
    }
    (data, dims)
}

/// Activation buffers handed back for reuse within one forward pass: fresh large allocations
/// cost a page fault per 4 KiB, several milliseconds a layer.
#[derive(Debug, Default)]
pub(in crate::model) struct Pool(Vec<Vec<f32>>);

impl Pool {
    /// A buffer of `len` elements whose contents are unspecified (callers write every element
    /// or zero what they do not write).
    pub(in crate::model) fn take(&mut self, len: usize) -> Vec<f32> {
        let best = self
            .0
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let mut buffer = match best {
            Some(i) => self.0.swap_remove(i),
            // Zeroed by the allocator (fresh pages from the kernel), not by a write pass here:
            // the pages are then first touched by the parallel tiles that fill them.
            None => return vec![0.0; len],
        };
        if buffer.len() > len {
            buffer.truncate(len);
        } else {
            buffer.resize(len, 0.0);
        }
        buffer
    }

    pub(in crate::model) fn give(&mut self, padded: Padded) {
        self.0.push(padded.data);
    }
}

/// Activations channels-last with a zero border: `[z+2][y+2][x+2][channels]`.
#[derive(Debug, Clone)]
pub(in crate::model) struct Padded {
    pub(in crate::model) channels: usize,
    /// Interior size (z, y, x).
    pub(in crate::model) dims: [usize; 3],
    pub(in crate::model) data: Vec<f32>,
}

impl Padded {
    /// Padded activations from the pool, border zeroed, interior unspecified.
    pub(in crate::model) fn new(channels: usize, dims: [usize; 3], pool: &mut Pool) -> Self {
        let len = channels * dims.iter().map(|n| n + 2).product::<usize>();
        let mut padded = Self {
            channels,
            dims,
            data: pool.take(len),
        };
        padded.zero_borders();
        padded
    }

    /// Runs `f(z, y, row)` on every interior row (`x · channels` values, the border left out),
    /// z and y counted from the first interior plane and row; planes in parallel.
    fn par_interior_rows_mut(&mut self, f: impl Fn(usize, usize, &mut [f32]) + Sync) {
        let [z, y, x] = self.dims;
        let (zs, ys) = self.strides();
        let c = self.channels;
        self.data
            .par_chunks_mut(zs * c)
            .enumerate()
            .filter(|(k, _)| (1..=z).contains(k))
            .for_each(|(k, plane)| {
                for j in 1..=y {
                    f(k - 1, j - 1, &mut plane[(j * ys + 1) * c..][..x * c]);
                }
            });
    }

    /// Positions per z plane and per y row of the padded grid.
    pub(in crate::model) fn strides(&self) -> (usize, usize) {
        let [_, y, x] = self.dims.map(|n| n + 2);
        (y * x, x)
    }

    fn interior(&self) -> Strided<'_> {
        let (zs, ys) = self.strides();
        let c = self.channels;
        Strided {
            data: &self.data,
            base: (zs + ys + 1) * c,
            strides: [1, zs * c, ys * c, c],
        }
    }

    /// The interior as dense `[channels][z][y][x]`.
    pub(in crate::model) fn dense(&self) -> Vec<f32> {
        let [z, y, x] = self.dims;
        let src = self.interior();
        let mut out = vec![0.0; self.channels * z * y * x];
        for (c, channel) in out.chunks_exact_mut(z * y * x).enumerate() {
            for k in 0..z {
                for j in 0..y {
                    let row = &mut channel[(k * y + j) * x..][..x];
                    let at = src.index(c, k, j, 0);
                    for (i, v) in row.iter_mut().enumerate() {
                        *v = src.data[at + i * src.strides[3]];
                    }
                }
            }
        }
        out
    }

    /// Zeroes the border: the first and last z planes, the first and last row of every plane
    /// in between, and the first and last position of every row.
    fn zero_borders(&mut self) {
        let [z, y, x] = self.dims;
        let (zs, ys) = self.strides();
        let c = self.channels;
        let (plane, row) = (zs * c, ys * c);
        self.data
            .par_chunks_mut(plane)
            .enumerate()
            .for_each(|(k, plane)| {
                if k == 0 || k == z + 1 {
                    plane.fill(0.0);
                    return;
                }
                plane[..row].fill(0.0);
                plane[(y + 1) * row..].fill(0.0);
                for r in plane[row..(y + 1) * row].chunks_exact_mut(row) {
                    r[..c].fill(0.0);
                    r[(x + 1) * c..].fill(0.0);
                }
            });
    }
}

/// A read-only strided view `[channels][z][y][x]` of a buffer.
#[derive(Debug, Clone, Copy)]
struct Strided<'a> {
    data: &'a [f32],
    base: usize,
    /// Channel, z, y and x strides.
    strides: [usize; 4],
}

impl<'a> Strided<'a> {
    /// A dense single-channel block `[z][y][x]`.
    fn dense(data: &'a [f32], [_, y, x]: [usize; 3]) -> Self {
        Self {
            data,
            base: 0,
            strides: [0, y * x, x, 1],
        }
    }

    fn index(&self, c: usize, z: usize, y: usize, x: usize) -> usize {
        let [cs, zs, ys, xs] = self.strides;
        self.base + c * cs + z * zs + y * ys + x * xs
    }
}

/// A pointer to the output that tiles write to in parallel, each to its own positions.
#[derive(Debug, Clone, Copy)]
struct Output(*mut f32);
// SAFETY: shared only between tiles that write disjoint elements (see the callers).
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

impl Output {
    /// The pointer `offset` elements in (a method, so closures capture the whole `Output`).
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// A matrix in a slice: element (i, j) at `offset + i·rs + j·cs`.
#[derive(Debug, Clone, Copy)]
pub(in crate::model) struct Mat<'a> {
    pub(in crate::model) data: &'a [f32],
    pub(in crate::model) offset: usize,
    pub(in crate::model) rs: usize,
    pub(in crate::model) cs: usize,
}

impl Mat<'_> {
    /// Whether every element of a rows × cols matrix lies inside the slice.
    pub(in crate::model) fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// `dst(i, j) (+)= Σ_k lhs(i, k) · rhs(k, j)` for i < m, j < n, with dst(i, j) at
/// `dst + i·dst_rs + j·dst_cs`; added to what `dst` holds if `accumulate`; on gemm's threads
/// by `parallelism`. Does nothing if an index of `lhs` or `rhs` would fall outside its slice.
///
/// # Safety
/// `dst` must be valid for writes at every `i·dst_rs + j·dst_cs` (i < m, j < n), and no other
/// thread may read or write those elements during the call (gemm's own threads write
/// disjoint blocks of them).
pub(in crate::model) unsafe fn gemm_into(
    dst: *mut f32,
    [dst_rs, dst_cs]: [usize; 2],
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    [m, n, k]: [usize; 3],
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    if !(lhs.fits(m, k) && rhs.fits(k, n)) {
        return;
    }
    // SAFETY: lhs and rhs indices were checked above; dst is the caller's promise.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A stride-1 convolution of kernel 1 or 3 (padding kernel/2), padded layout in and out.
/// `inputs` are concatenated along channels (same dims).
pub(in crate::model) fn same_conv(
    layer: &CpuLayer,
    inputs: &[&Padded],
    pool: &mut Pool,
    wide_kernel: bool,
) -> Padded {
    let Some(input) = inputs.first() else {
        return Padded::new(layer.cout, [0; 3], pool);
    };
    let mut out = Padded::new(layer.cout, input.dims, pool);
    let total: usize = inputs.iter().map(|p| p.channels).sum();
    if total != layer.cin || inputs.iter().any(|p| p.dims != input.dims) {
        return out;
    }
    let (zs, ys) = input.strides();
    let kernel = layer.kernel;
    let cout = layer.cout;
    // (dz, dy) shifts in positions; each product covers the kernel's dx run from dx = −r.
    let r = kernel / 2;
    let shifts: Vec<isize> = (0..kernel * kernel)
        .map(|o| {
            let (dz, dy) = (
                (o / kernel) as isize - r as isize,
                (o % kernel) as isize - r as isize,
            );
            dz * zs as isize + dy * ys as isize - r as isize
        })
        .collect();
    // Per input and shift, the weights as row-major [kernel·c × cout], row dx·c + ci: the
    // input's channel range of each dx tap's row run.
    let mut blocks: Vec<Vec<Vec<f32>>> = Vec::with_capacity(inputs.len());
    let mut first_channel = 0;
    let k = layer.k();
    for p in inputs {
        let c = p.channels;
        let per_shift = (0..kernel * kernel)
            .map(|o| {
                let mut block = Vec::with_capacity(kernel * c * cout);
                for dx in 0..kernel {
                    let from = (o * kernel + dx) * layer.cin + first_channel;
                    for row in from..from + c {
                        block.extend((0..cout).map(|co| layer.tap_major[co * k + row]));
                    }
                }
                block
            })
            .collect();
        blocks.push(per_shift);
        first_channel += c;
    }
    // Output positions, flattened: in each interior plane, from its first interior voxel to its
    // last (the y/x border positions in between get values of no voxel and are zeroed after).
    // Every read stays inside the buffer: the first voxel's lowest neighbour is position 0, the
    // last one's highest the buffer's last position.
    let [z, y, x] = input.dims;
    let per_plane = (y - 1) * ys + x;
    // Enough tiles for both threads to stay busy on the small levels.
    let tile = ((1 << 16) / cout.max(1)).clamp(256, 4096).min(
        (z * per_plane)
            .div_ceil(4 * rayon::current_num_threads())
            .max(64),
    );
    let tiles: Vec<(usize, usize)> = (1..=z)
        .flat_map(|k| {
            let start = k * zs + ys + 1;
            (start..start + per_plane)
                .step_by(tile)
                .map(move |q0| (q0, tile.min(start + per_plane - q0)))
        })
        .collect();
    let dst = Output(out.data.as_mut_ptr());
    let dst_len = out.data.len();
    #[cfg(not(target_arch = "x86_64"))]
    let _ = wide_kernel;
    #[cfg(target_arch = "x86_64")]
    let kernel_inputs: Vec<avx512::KernelInput<'_>> = inputs
        .iter()
        .zip(&blocks)
        .map(|(p, b)| avx512::KernelInput {
            data: &p.data,
            channels: p.channels,
            blocks: b,
        })
        .collect();
    #[cfg(target_arch = "x86_64")]
    let wide = avx512::Conv {
        inputs: &kernel_inputs,
        shifts: &shifts,
        kernel,
        cout,
        shift: &layer.shift,
        relu: layer.relu,
    };
    #[cfg(target_arch = "x86_64")]
    let use_wide = wide_kernel && avx512::available() && wide.fits();
    tiles.par_iter().for_each(|&(q0, n)| {
        if (q0 + n) * cout > dst_len {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if use_wide && wide.reads_inside(q0, n) {
            // SAFETY: AVX-512 is available and the layer fits the kernel (checked above), the
            // reads were just bounded, and this tile alone writes positions q0..q0+n (in
            // bounds, checked above).
            unsafe { wide.tile(dst.at(0), q0, n) };
            return;
        }
        let mut accumulate = false;
        for (p, per_shift) in inputs.iter().zip(&blocks) {
            let c = p.channels;
            for (&shift, block) in shifts.iter().zip(per_shift) {
                let lhs = Mat {
                    data: &p.data,
                    offset: q0.wrapping_add_signed(shift) * c,
                    rs: c,
                    cs: 1,
                };
                let rhs = Mat {
                    data: block,
                    offset: 0,
                    rs: cout,
                    cs: 1,
                };
                // SAFETY: this tile writes positions q0..q0+n (all channels), which no other
                // tile writes (the tiles are disjoint ranges); the bound was checked above.
                unsafe {
                    gemm_into(
                        dst.at(q0 * cout),
                        [cout, 1],
                        lhs,
                        rhs,
                        [n, cout, kernel * c],
                        accumulate,
                        gemm::Parallelism::None,
                    );
                }
                accumulate = true;
            }
        }
        // SAFETY: as above; this tile's own positions.
        let values = unsafe { std::slice::from_raw_parts_mut(dst.at(q0 * cout), n * cout) };
        activate(values, &layer.shift, layer.relu);
    });
    out.zero_borders();
    if let Some(norm) = &layer.channel_norm {
        norm.apply_relu(&mut out);
    }
    out
}

/// A convolution whose stride equals its kernel (the stem and the downsamplings): output
/// `dims`, padded layout. Tiles of whole output rows, im2col gathered, one product each.
fn strided_conv(
    layer: &CpuLayer,
    input: &Strided<'_>,
    dims: [usize; 3],
    pool: &mut Pool,
) -> Padded {
    let mut out = Padded::new(layer.cout, dims, pool);
    let (zs, ys) = out.strides();
    let cout = layer.cout;
    let s = layer.kernel;
    let k = layer.k();
    let x_len = dims[2];
    let rows_per_tile = (((1 << 18) / k.max(1)) / x_len.max(1)).max(1);
    let rows: Vec<usize> = (0..dims[0] * dims[1]).step_by(rows_per_tile).collect();
    let dst = Output(out.data.as_mut_ptr());
    let dst_len = out.data.len();
    let xs = input.strides[3];
    rows.par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(cols, res), &r0| {
            let r1 = (r0 + rows_per_tile).min(dims[0] * dims[1]);
            let n = (r1 - r0) * x_len;
            // im2col, row-major [n × K], column ((a·s + b)·s + c)·cin + ci (`tap_major`): for
            // each (a, b) the s·cin values of c and ci are one contiguous run of the input.
            cols.resize(k * n, 0.0);
            res.resize(cout * n, 0.0);
            let run = s * layer.cin;
            for (i, r) in (r0..r1).enumerate() {
                let (oz, oy) = (r / dims[1], r % dims[1]);
                for a in 0..s {
                    for b in 0..s {
                        let at = input.index(0, s * oz + a, s * oy + b, 0);
                        let Some(row) = input.data.get(at..at + x_len * s * xs) else {
                            continue;
                        };
                        let kk = (a * s + b) * run;
                        let tile_row = &mut cols[i * x_len * k..(i + 1) * x_len * k];
                        for (values, to) in
                            row.chunks_exact(s * xs).zip(tile_row.chunks_exact_mut(k))
                        {
                            // An element loop: runs are short (4 floats in the stem), too short
                            // for a memcpy call each.
                            for (d, v) in to[kk..kk + run].iter_mut().zip(values) {
                                *d = *v;
                            }
                        }
                    }
                }
            }
            let lhs = Mat {
                data: cols,
                offset: 0,
                rs: k,
                cs: 1,
            };
            let rhs = Mat {
                data: &layer.tap_major,
                offset: 0,
                rs: 1,
                cs: k,
            };
            // SAFETY: `res` is this tile's own buffer, row-major [n × cout].
            unsafe {
                gemm_into(
                    res.as_mut_ptr(),
                    [cout, 1],
                    lhs,
                    rhs,
                    [n, cout, k],
                    false,
                    gemm::Parallelism::None,
                );
            }
            activate(res, &layer.shift, layer.relu);
            for (r, chunk) in (r0..r1).zip(res.chunks_exact(x_len * cout)) {
                let (oz, oy) = (r / dims[1], r % dims[1]);
                let at = ((oz + 1) * zs + (oy + 1) * ys + 1) * cout;
                if at + chunk.len() > dst_len {
                    return;
                }
                // SAFETY: rows (oz, oy) belong to this tile alone; bound checked above.
                unsafe {
                    std::ptr::copy_nonoverlapping(chunk.as_ptr(), dst.at(at), chunk.len());
                }
            }
        },
    );
    if let Some(norm) = &layer.channel_norm {
        norm.apply_relu(&mut out);
    }
    out
}

/// Nearest ×2 upsampling of `low` onto `dims`.
fn upsample(low: &Padded, dims: [usize; 3], pool: &mut Pool) -> Padded {
    let mut out = Padded::new(low.channels, dims, pool);
    let (lzs, lys) = low.strides();
    let c = low.channels;
    out.par_interior_rows_mut(|k, j, row| {
        let from = ((k / 2 + 1) * lzs + (j / 2 + 1) * lys + 1) * c;
        for (i, v) in row.chunks_exact_mut(c).enumerate() {
            let at = from + (i / 2) * c;
            v.copy_from_slice(&low.data[at..at + c]);
        }
    });
    out
}

/// Adds each channel's shift (values are position-major: channels fastest) and applies ReLU.
fn activate(values: &mut [f32], shift: &[f32], relu: bool) {
    for position in values.chunks_exact_mut(shift.len().max(1)) {
        for (v, s) in position.iter_mut().zip(shift) {
            *v += s;
            if relu {
                *v = v.max(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ApeModel;
    use crate::model::backend;

    /// burn's forward pass is the reference: the bundled (trained) weights, an input of
    /// unequal sides with values across the model's range.
    #[test]
    fn cpu_net_computes_what_burn_computes() {
        let device = backend::cpu().device;
        let model = ApeModel::bundled(&device).expect("bundled model");
        let net = model.net.cpu_inference().expect("fold");
        let dims = [32usize, 48, 64];
        let input = crate::model::test_values::image(dims);
        let tensor = crate::model::test_values::input(&input, dims, &device);
        let reference: Vec<f32> = model
            .net
            .forward(tensor)
            .into_data()
            .try_into_vec()
            .expect("read back");
        // The AVX-512 kernel where this CPU has it, and `gemm` alone.
        let portable = CpuNet {
            wide_kernel: false,
            ..net.clone()
        };
        for (name, net) in [("default", &net), ("gemm only", &portable)] {
            let ours = net.forward(&input, dims);
            assert_eq!(ours.len(), reference.len());
            assert_eq!(ours.len(), 3 * 8 * 12 * 16);
            let worst = reference
                .iter()
                .zip(&ours)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{name}: largest difference {worst}");
        }
    }

    /// The AVX-512 kernel equals `gemm` on a layer no network here has: a concatenation of
    /// unequal inputs (the kernel's generic channel path), odd sizes (tail positions), every
    /// output width it handles.
    #[test]
    fn wide_kernel_equals_gemm_on_unequal_inputs() {
        let mut state = 7u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let dims = [5usize, 7, 9];
        let mut pool = Pool::default();
        let mut input = |channels: usize| {
            let mut p = Padded::new(channels, dims, &mut Pool::default());
            let (zs, ys) = p.strides();
            for k in 1..=dims[0] {
                for j in 1..=dims[1] {
                    let at = (k * zs + j * ys + 1) * channels;
                    for v in &mut p.data[at..at + dims[2] * channels] {
                        *v = next();
                    }
                }
            }
            p
        };
        let (a, b) = (input(16), input(8));
        for cout in [16, 32, 64, 3] {
            let cin = 24;
            let weights: Vec<f32> = (0..cout * cin * 27)
                .map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5)
                .collect();
            let norm = FoldedNorm {
                scale: vec![1.0; cout],
                shift: (0..cout).map(|c| c as f32 * 0.01).collect(),
            };
            let layer = CpuLayer::conv_norm(&weights, [cout, cin, 3], &norm, true).expect("layer");
            let wide = same_conv(&layer, &[&a, &b], &mut pool, true);
            let narrow = same_conv(&layer, &[&a, &b], &mut pool, false);
            let worst = wide
                .data
                .iter()
                .zip(&narrow.data)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "cout {cout}: largest difference {worst}");
            assert!(
                narrow.data.iter().any(|v| *v > 0.1),
                "cout {cout}: all zero"
            );
        }
    }

    #[test]
    fn folded_norm_is_the_batch_norm() {
        let norm = FoldedNorm::new(
            &[1.0, -2.0],
            &[4.0, 0.25],
            0.0,
            Some((&[2.0, 1.0], &[0.5, 0.0])),
            Some(&[1.0, 0.0]),
        );
        // channel 0: ((x + 1) - 1) / 2 · 2 + 0.5 = x + 0.5
        assert!((norm.scale[0] - 1.0).abs() < 1e-6 && (norm.shift[0] - 0.5).abs() < 1e-6);
        // channel 1: (x + 2) / 0.5 = 2x + 4
        assert!((norm.scale[1] - 2.0).abs() < 1e-6 && (norm.shift[1] - 4.0).abs() < 1e-6);
    }

    #[test]
    fn mismatched_weights_are_an_error() {
        let norm = FoldedNorm {
            scale: vec![1.0; 4],
            shift: vec![0.0; 4],
        };
        assert!(CpuLayer::conv_norm(&[0.0; 10], [4, 2, 3], &norm, true).is_err());
    }
}
