//! Patch convolutions (stride = kernel ≥ 2, no padding: the 4×4×4 stem, the 2×2×2
//! downsamplings) forward and weight gradient with AVX-512 FMA, where the CPU has it.
//!
//! Through `gemm` both need the im2col matrix first, a reshuffle of the whole input that
//! costs far more than the few multiply-adds per value (the stem: 64 per output, one per input
//! value). Here the kernels read the input in place, in burn's `[cin][d][h][w]` layout, tap by
//! tap through a table of offsets, and keep a block of outputs (or of weight-gradient rows) ×
//! 16·J channels in registers, as `cpu_net`'s kernel does.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    _mm_load_ss, _mm512_add_ps, _mm512_broadcastss_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_setzero_ps, _mm512_storeu_ps,
};

/// One batch item of a patch convolution, as the kernels read it.
pub(super) struct Patches<'a> {
    /// The item's input, `[cin][d][h][w]`.
    pub x: &'a [f32],
    pub kernel: usize,
    pub input: [usize; 3],
    pub output: [usize; 3],
    /// Per tap `((ci·k + a)·k + b)·k + c`, its offset from the patch's first voxel.
    pub offsets: &'a [usize],
    pub cout: usize,
}

impl<'a> Patches<'a> {
    /// The offsets of every tap for `cin` channels of `input`.
    pub fn offsets(cin: usize, kernel: usize, [d, h, w]: [usize; 3]) -> Vec<usize> {
        let k = kernel;
        let mut offsets = Vec::with_capacity(cin * k * k * k);
        for ci in 0..cin {
            for a in 0..k {
                for b in 0..k {
                    for c in 0..k {
                        offsets.push(((ci * d + a) * h + b) * w + c);
                    }
                }
            }
        }
        offsets
    }

    /// The offset of the first voxel of output row (oz, oy).
    fn row_base(&self, oz: usize, oy: usize) -> usize {
        let [_, h, w] = self.input;
        (self.kernel * oz * h + self.kernel * oy) * w
    }

    /// Whether the kernels compute this item: AVX-512 present, whole 16-channel vectors, and
    /// every read of the last output's last tap inside `x` (checked once, here).
    pub fn fits(&self) -> bool {
        let [od, oh, ow] = self.output;
        let Some(&last_tap) = self.offsets.iter().max() else {
            return false;
        };
        let inside = od > 0
            && oh > 0
            && ow > 0
            && self.row_base(od - 1, oh - 1) + self.kernel * (ow - 1) + last_tap < self.x.len();
        std::arch::is_x86_feature_detected!("avx512f")
            && self.kernel >= 1
            && self.cout > 0
            && self.cout.is_multiple_of(16)
            && inside
    }

    /// Output row (oz, oy), channels-last (`row[ox·cout + co]`), from the weights as
    /// `[taps × cout]` (`weights_t`); false (nothing written) when the kernels do not fit.
    pub fn forward_row(&self, weights_t: &[f32], oz: usize, oy: usize, row: &mut [f32]) -> bool {
        let [od, oh, ow] = self.output;
        let taps = self.offsets.len();
        if !(self.fits()
            && oz < od
            && oy < oh
            && row.len() >= ow * self.cout
            && weights_t.len() >= taps * self.cout)
        {
            return false;
        }
        // SAFETY: `fits` bounds every read of x for rows inside the output (checked), the
        // weights hold taps × cout values and the row ow × cout (checked).
        unsafe { self.forward_row_avx512(weights_t, self.row_base(oz, oy), row.as_mut_ptr()) };
        true
    }

    /// # Safety
    /// As [`Self::forward_row`] checks.
    #[target_feature(enable = "avx512f")]
    unsafe fn forward_row_avx512(&self, weights_t: &[f32], base: usize, row: *mut f32) {
        let ow = self.output[2];
        let (positions, vectors, block, single): (usize, usize, ForwardFn, ForwardFn) =
            if self.cout.is_multiple_of(64) {
                (6, 4, forward_6x4, forward_1x4)
            } else if self.cout.is_multiple_of(32) {
                (12, 2, forward_12x2, forward_1x2)
            } else {
                (24, 1, forward_24x1, forward_1x1)
            };
        for j0 in (0..self.cout).step_by(16 * vectors) {
            let mut ox = 0;
            // SAFETY: the caller's promise, for outputs ox.. within the row and channels
            // j0..j0 + 16·vectors within cout.
            unsafe {
                while ox + positions <= ow {
                    block(self, weights_t, base, ox, j0, row);
                    ox += positions;
                }
                while ox < ow {
                    single(self, weights_t, base, ox, j0, row);
                    ox += 1;
                }
            }
        }
    }

    /// Adds the weight gradient of output rows `rows` (each `(oz, oy)`) to `dst` `[taps ×
    /// cout]`, from the output gradient channels-last (`g[((oz·oh + oy)·ow + ox)·cout + co]`);
    /// false (nothing added) when the kernels do not fit.
    pub fn add_weight_grad(&self, g: &[f32], rows: &[(usize, usize)], dst: &mut [f32]) -> bool {
        let [od, oh, ow] = self.output;
        let taps = self.offsets.len();
        let rows_inside = rows.iter().all(|&(oz, oy)| oz < od && oy < oh);
        if !(self.fits()
            && rows_inside
            && g.len() >= od * oh * ow * self.cout
            && dst.len() >= taps * self.cout)
        {
            return false;
        }
        // Taps × vectors per block: the widest block that divides the taps (the stem's 64,
        // a downsampling's 8·cin), else the widest, the rest tap by tap.
        let (block_rows, vectors, block, single): (usize, usize, GradFn, GradFn) =
            if self.cout.is_multiple_of(64) {
                if !taps.is_multiple_of(6) && taps.is_multiple_of(4) {
                    (4, 4, grad_4x4, grad_1x4)
                } else {
                    (6, 4, grad_6x4, grad_1x4)
                }
            } else if self.cout.is_multiple_of(32) {
                if !taps.is_multiple_of(12) && taps.is_multiple_of(8) {
                    (8, 2, grad_8x2, grad_1x2)
                } else {
                    (12, 2, grad_12x2, grad_1x2)
                }
            } else if !taps.is_multiple_of(24) && taps.is_multiple_of(16) {
                (16, 1, grad_16x1, grad_1x1)
            } else {
                (24, 1, grad_24x1, grad_1x1)
            };
        for j0 in (0..self.cout).step_by(16 * vectors) {
            let mut t = 0;
            // SAFETY: `fits` bounds every read of x for rows inside the output (checked); g
            // holds every output's cout values and dst taps × cout (checked); taps t.. lie
            // within the table and channels j0..j0 + 16·vectors within cout.
            unsafe {
                while t + block_rows <= taps {
                    block(self, g, rows, t, j0, dst.as_mut_ptr());
                    t += block_rows;
                }
                while t < taps {
                    single(self, g, rows, t, j0, dst.as_mut_ptr());
                    t += 1;
                }
            }
        }
        true
    }
}

/// `(item, weights_t, row base, first output, first channel, row)`.
type ForwardFn = unsafe fn(&Patches<'_>, &[f32], usize, usize, usize, *mut f32);
/// `(item, g, rows, first tap, first channel, dst)`.
type GradFn = unsafe fn(&Patches<'_>, &[f32], &[(usize, usize)], usize, usize, *mut f32);

/// Forward blocks: P outputs along x (`[0 1 …]`) × J vectors of 16 channels.
macro_rules! forward_fn {
    ($name:ident, [$($i:literal)+], $js:tt) => {
        /// # Safety
        /// As [`Patches::forward_row_avx512`], for outputs `ox..ox + P` and channels
        /// `j0..j0 + 16·J`.
        #[target_feature(enable = "avx512f")]
        unsafe fn $name(
            p: &Patches<'_>,
            weights_t: &[f32],
            base: usize,
            ox: usize,
            j0: usize,
            row: *mut f32,
        ) {
            let mut acc = [[_mm512_setzero_ps(); kernel_macros!(@count $js)]; [$($i),+].len()];
            let k = p.kernel;
            // SAFETY: the caller's promise: each output's taps lie inside x, the weights hold
            // every tap's cout values and the row every output's.
            unsafe {
                let first = p.x.as_ptr().add(base + k * ox);
                let mut w = weights_t.as_ptr().add(j0);
                for &offset in p.offsets {
                    let wv = kernel_macros!(@load w, $js);
                    let at = first.add(offset);
                    $(
                        // An intrinsic load, not a dereference: debug builds check each
                        // dereference's alignment.
                        let b = _mm512_broadcastss_ps(_mm_load_ss(at.add($i * k)));
                        kernel_macros!(@fma acc, $i, b, wv, $js);
                    )+
                    w = w.add(p.cout);
                }
                $( kernel_macros!(@store row, ox + $i, j0, p.cout, acc, $i, $js); )+
            }
        }
    };
}

/// Weight-gradient blocks: R taps (`[0 1 …]`) × J vectors of 16 channels, over every output of
/// the given rows.
macro_rules! grad_fn {
    ($name:ident, [$($i:literal)+], $js:tt) => {
        /// # Safety
        /// As [`Patches::add_weight_grad`], for taps `t0..t0 + R` and channels `j0..j0 + 16·J`.
        #[target_feature(enable = "avx512f")]
        unsafe fn $name(
            p: &Patches<'_>,
            g: &[f32],
            rows: &[(usize, usize)],
            t0: usize,
            j0: usize,
            dst: *mut f32,
        ) {
            let mut acc = [[_mm512_setzero_ps(); kernel_macros!(@count $js)]; [$($i),+].len()];
            let [_, oh, ow] = p.output;
            let k = p.kernel;
            let offsets = [$(p.offsets[t0 + $i]),+];
            // SAFETY: the caller's promise: every tap of every output of these rows lies
            // inside x, g holds every output's cout values, dst every tap's.
            unsafe {
                for &(oz, oy) in rows {
                    let mut at = p.x.as_ptr().add(p.row_base(oz, oy));
                    let mut gp = g.as_ptr().add((oz * oh + oy) * ow * p.cout + j0);
                    for _ in 0..ow {
                        let gv = kernel_macros!(@load gp, $js);
                        $(
                            let b = _mm512_broadcastss_ps(_mm_load_ss(at.add(offsets[$i])));
                            kernel_macros!(@fma acc, $i, b, gv, $js);
                        )+
                        at = at.add(k);
                        gp = gp.add(p.cout);
                    }
                }
                $(
                    kernel_macros!(@add dst, t0 + $i, j0, p.cout, acc, $i, $js);
                )+
            }
        }
    };
}

/// The pieces both block macros share, over the J vectors `[0 1 …]`.
macro_rules! kernel_macros {
    (@count [$($j:literal)+]) => { [$($j),+].len() };
    (@load $w:ident, [$($j:literal)+]) => { [$(_mm512_loadu_ps($w.add(16 * $j))),+] };
    (@fma $acc:ident, $i:literal, $b:ident, $v:ident, [$($j:literal)+]) => {
        $( $acc[$i][$j] = _mm512_fmadd_ps($b, $v[$j], $acc[$i][$j]); )+
    };
    (@store $row:ident, $at:expr, $j0:ident, $cout:expr, $acc:ident, $i:literal, [$($j:literal)+]) => {
        $( _mm512_storeu_ps($row.add(($at) * $cout + $j0 + 16 * $j), $acc[$i][$j]); )+
    };
    (@add $dst:ident, $at:expr, $j0:ident, $cout:expr, $acc:ident, $i:literal, [$($j:literal)+]) => {
        $(
            let d = $dst.add(($at) * $cout + $j0 + 16 * $j);
            _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), $acc[$i][$j]));
        )+
    };
}

forward_fn!(forward_6x4, [0 1 2 3 4 5], [0 1 2 3]);
forward_fn!(forward_1x4, [0], [0 1 2 3]);
forward_fn!(forward_12x2, [0 1 2 3 4 5 6 7 8 9 10 11], [0 1]);
forward_fn!(forward_1x2, [0], [0 1]);
forward_fn!(forward_24x1, [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23], [0]);
forward_fn!(forward_1x1, [0], [0]);
grad_fn!(grad_6x4, [0 1 2 3 4 5], [0 1 2 3]);
grad_fn!(grad_1x4, [0], [0 1 2 3]);
grad_fn!(grad_12x2, [0 1 2 3 4 5 6 7 8 9 10 11], [0 1]);
grad_fn!(grad_1x2, [0], [0 1]);
grad_fn!(grad_24x1, [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23], [0]);
grad_fn!(grad_1x1, [0], [0]);
grad_fn!(grad_4x4, [0 1 2 3], [0 1 2 3]);
grad_fn!(grad_8x2, [0 1 2 3 4 5 6 7], [0 1]);
grad_fn!(grad_16x1, [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15], [0]);
