//! The weight gradient of a same-size convolution with AVX-512 FMA, where the CPU has it.
//!
//! Per (dz, dy) shift the gradient is a product with a very long inner dimension (every
//! position) and a small result (3·cin rows × cout): `dst[r][co] += Σ_q x[(q + s)·cin + r] ·
//! g[q·cout + co]`. `gemm` runs such shapes on its narrow edge kernels at about a third of the
//! convolution kernel's rate. Here a block of R rows × 16·J output channels stays in registers
//! over a run of positions: one load of g's 16·J channels feeds R·J fused multiply-adds, each
//! with one broadcast of an x value (`cpu_net`'s forward kernel, transposed).
#![allow(unsafe_code)]

use std::arch::x86_64::{
    _mm_load_ss, _mm512_add_ps, _mm512_broadcastss_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_setzero_ps, _mm512_storeu_ps,
};

/// One weight-gradient product over positions `q0..q0 + n`.
pub(super) struct Product<'a> {
    /// Channels-last input, `x_stride` values per position.
    pub x: &'a [f32],
    pub x_stride: usize,
    /// Rows of the result: the run of values read at each shifted position (3·cin).
    pub rows: usize,
    /// Offset, in positions, from an output position to the first input position it reads.
    pub shift: isize,
    /// Channels-last output gradient, `cout` values per position.
    pub g: &'a [f32],
    pub cout: usize,
    pub q0: usize,
    pub n: usize,
}

impl Product<'_> {
    /// Whether the kernel computes this product: AVX-512 present, whole 16-channel vectors,
    /// and every read inside the slices (checked here, once, for the pointer loops below).
    pub fn fits(&self, dst_len: usize) -> bool {
        let first = self.q0 as isize + self.shift;
        let reads_x = first >= 0
            && self.n > 0
            && (first as usize + self.n - 1) * self.x_stride + self.rows <= self.x.len();
        std::arch::is_x86_feature_detected!("avx512f")
            && self.cout > 0
            && self.cout.is_multiple_of(16)
            && reads_x
            && (self.q0 + self.n) * self.cout <= self.g.len()
            && self.rows * self.cout <= dst_len
    }

    /// `dst[r·cout + co] += Σ_q x[(q + shift)·x_stride + r] · g[q·cout + co]`; false (and
    /// `dst` untouched) when the kernel does not fit, for the caller's portable product.
    pub fn accumulate(&self, dst: &mut [f32]) -> bool {
        if !self.fits(dst.len()) {
            return false;
        }
        // SAFETY: `fits` checked AVX-512 and bounded every read of x and g and every write of
        // dst; dst is borrowed mutably for the call.
        unsafe { self.accumulate_avx512(dst.as_mut_ptr()) };
        true
    }

    /// # Safety
    /// [`Self::fits`]`(len of dst)` holds.
    #[target_feature(enable = "avx512f")]
    unsafe fn accumulate_avx512(&self, dst: *mut f32) {
        // Rows × vectors per block, with the block functions of that width.
        let (rows, vectors, block, single): (usize, usize, BlockFn, BlockFn) =
            if self.cout.is_multiple_of(32) {
                (12, 2, block_12x2, block_1x2)
            } else {
                (24, 1, block_24x1, block_1x1)
            };
        for j0 in (0..self.cout).step_by(16 * vectors) {
            let mut r = 0;
            // SAFETY: the caller's promise, for rows r.. within `rows` and channels
            // j0..j0 + 16·vectors within cout (a multiple of 16·vectors).
            unsafe {
                while r + rows <= self.rows {
                    block(self, dst, r, j0);
                    r += rows;
                }
                while r < self.rows {
                    single(self, dst, r, j0);
                    r += 1;
                }
            }
        }
    }
}

/// A block of rows × channel vectors: `(product, dst, first row, first channel)`.
type BlockFn = unsafe fn(&Product<'_>, *mut f32, usize, usize);

/// One block function per shape, R rows (`[0 1 …]`) × J vectors of 16 channels, written out by
/// the macro as in `cpu_net`'s kernel: constant indices keep the R·J accumulators in registers.
macro_rules! block_fn {
    ($name:ident, [$($i:literal)+], $js:tt) => {
        /// # Safety
        /// As [`Product::accumulate_avx512`], for rows `r0..r0 + R` and channels
        /// `j0..j0 + 16·J`.
        #[target_feature(enable = "avx512f")]
        unsafe fn $name(p: &Product<'_>, dst: *mut f32, r0: usize, j0: usize) {
            let mut acc = [[_mm512_setzero_ps(); block_fn!(@count $js)]; [$($i),+].len()];
            // SAFETY: `fits` bounds x over (q0 + shift)·x_stride .. the last position's run,
            // g over q0·cout .. (q0 + n)·cout, and dst over rows·cout.
            unsafe {
                let mut x = p.x.as_ptr().add((p.q0 as isize + p.shift) as usize * p.x_stride + r0);
                let mut g = p.g.as_ptr().add(p.q0 * p.cout + j0);
                for _ in 0..p.n {
                    let gv = block_fn!(@load g, $js);
                    $(
                        // An intrinsic load, not a dereference: debug builds check each
                        // dereference's alignment.
                        let b = _mm512_broadcastss_ps(_mm_load_ss(x.add($i)));
                        block_fn!(@fma acc, $i, b, gv, $js);
                    )+
                    x = x.add(p.x_stride);
                    g = g.add(p.cout);
                }
                $( block_fn!(@store dst, r0, j0, p, acc, $i, $js); )+
            }
        }
    };
    (@count [$($j:literal)+]) => { [$($j),+].len() };
    (@load $g:ident, [$($j:literal)+]) => { [$(_mm512_loadu_ps($g.add(16 * $j))),+] };
    (@fma $acc:ident, $i:literal, $b:ident, $gv:ident, [$($j:literal)+]) => {
        $( $acc[$i][$j] = _mm512_fmadd_ps($b, $gv[$j], $acc[$i][$j]); )+
    };
    (@store $dst:ident, $r0:ident, $j0:ident, $p:ident, $acc:ident, $i:literal, [$($j:literal)+]) => {
        $(
            let d = $dst.add(($r0 + $i) * $p.cout + $j0 + 16 * $j);
            _mm512_storeu_ps(d, _mm512_add_ps(_mm512_loadu_ps(d), $acc[$i][$j]));
        )+
    };
}

block_fn!(block_12x2, [0 1 2 3 4 5 6 7 8 9 10 11], [0 1]);
block_fn!(block_1x2, [0], [0 1]);
block_fn!(block_24x1, [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23], [0]);
block_fn!(block_1x1, [0], [0]);
