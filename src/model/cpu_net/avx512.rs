//! Same-size convolutions with AVX-512 FMA, where the CPU has it.
//!
//! `gemm` 0.19 uses AVX-512 only on nightly Rust, so on this project's CPUs its products run at
//! the AVX2 peak (8 lanes); AVX-512 doubles the lanes per instruction. This kernel computes a
//! block of P output positions × 16·J output channels in registers, over every input, shift
//! and tap, and writes it once with the folded batch norm's shift and the ReLU applied: a
//! broadcast of one input value feeds J fused multiply-adds, one load of 16·J weights feeds P.

use std::arch::x86_64::{
    _mm_load_ss, _mm512_add_ps, _mm512_broadcastss_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_max_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

/// Whether this CPU runs the kernel.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// One input of a convolution as the kernel reads it.
pub(super) struct KernelInput<'a> {
    /// Padded channels-last activations.
    pub data: &'a [f32],
    pub channels: usize,
    /// Per (dz, dy) shift, the weights as row-major `[kernel·channels × cout]`.
    pub blocks: &'a [Vec<f32>],
}

/// What every tile of one convolution shares.
pub(super) struct Conv<'a> {
    pub inputs: &'a [KernelInput<'a>],
    /// Per (dz, dy), the offset in positions from an output position to its first dx tap.
    pub shifts: &'a [isize],
    pub kernel: usize,
    pub cout: usize,
    pub shift: &'a [f32],
    pub relu: bool,
}

impl Conv<'_> {
    /// Whether the kernel handles this output width (whole 16-channel vectors).
    pub fn fits(&self) -> bool {
        self.cout > 0
            && self.cout.is_multiple_of(16)
            && self.shift.len() == self.cout
            && self.inputs.iter().all(|i| {
                i.blocks.len() == self.shifts.len()
                    && i.blocks
                        .iter()
                        .all(|b| b.len() == self.kernel * i.channels * self.cout)
            })
    }

    /// Whether every read for output positions `q0..q0 + n` lies inside the inputs.
    pub fn reads_inside(&self, q0: usize, n: usize) -> bool {
        let (Some(&lo), Some(&hi)) = (self.shifts.iter().min(), self.shifts.iter().max()) else {
            return false;
        };
        n > 0
            && self.inputs.iter().all(|i| {
                let c = i.channels;
                let first = q0 as isize + lo;
                let last = (q0 + n - 1) as isize + hi;
                first >= 0 && (last as usize) * c + self.kernel * c <= i.data.len()
            })
    }

    /// Output positions `q0..q0 + n`, all channels, activated, written to `out` (channels-last,
    /// `cout` per position, `out` pointing at position 0).
    ///
    /// # Safety
    /// [`available`] is true, [`Self::fits`] and [`Self::reads_inside`]`(q0, n)` hold, and
    /// `out` is valid for writes at `[q0·cout, (q0 + n)·cout)`, elements no other thread reads
    /// or writes during the call.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile(&self, out: *mut f32, q0: usize, n: usize) {
        // Channel counts of this network's layers, as constants: each position's run then
        // sits at a constant offset from the first, with no address arithmetic per FMA.
        let channels = self.inputs.first().map_or(0, |i| i.channels);
        let same = self.inputs.iter().all(|i| i.channels == channels);
        let c = if same { channels } else { 0 };
        macro_rules! pick {
            ($block:ident, $single:ident) => {
                match c {
                    16 => ($block::<16> as BlockFn, $single::<16> as BlockFn),
                    32 => ($block::<32> as BlockFn, $single::<32> as BlockFn),
                    64 => ($block::<64> as BlockFn, $single::<64> as BlockFn),
                    _ => ($block::<0> as BlockFn, $single::<0> as BlockFn),
                }
            };
        }
        // Positions and 16-channel vectors per block, with the block functions of that shape.
        let (positions, vectors, (block, single)) = if self.cout.is_multiple_of(64) {
            (6, 4, pick!(block_6x4, block_1x4))
        } else if self.cout.is_multiple_of(32) {
            (12, 2, pick!(block_12x2, block_1x2))
        } else {
            (24, 1, pick!(block_24x1, block_1x1))
        };
        for j0 in (0..self.cout).step_by(16 * vectors) {
            let mut q = q0;
            // SAFETY: the caller's promise, for positions q..q+positions (or q) within
            // q0..q0+n and channels j0..j0+16·vectors within cout (a multiple of 16·vectors).
            unsafe {
                while q + positions <= q0 + n {
                    block(self, out, q, j0);
                    q += positions;
                }
                // The rest as one more whole block ending at the tile's end: it computes the
                // positions before them again, to the same values (the same operations in the
                // same order), at the block's rate where one position at a time waits on
                // every multiply-add's latency.
                if q < q0 + n && n >= positions {
                    block(self, out, q0 + n - positions, j0);
                    q = q0 + n;
                }
                while q < q0 + n {
                    single(self, out, q, j0);
                    q += 1;
                }
            }
        }
    }
}

/// A block of positions × channel vectors: `(conv, out, first position, first channel)`.
type BlockFn = unsafe fn(&Conv<'_>, *mut f32, usize, usize);

/// One block function per shape, P positions (`[0 1 …]`) × J vectors of 16 channels, every loop
/// over them written out by the macro: constant indices keep the P·J accumulators in registers
/// at any optimisation level (a loop over them, left rolled, spills them to the stack). `C` is
/// every input's channel count, or 0 for "read it from the input".
macro_rules! block_fn {
    ($name:ident, [$($i:literal)+], $js:tt) => {
        /// # Safety
        /// As [`Conv::tile`] for these positions from `q`, and channels `j0..j0 + 16·J` within
        /// `cout`.
        #[target_feature(enable = "avx512f")]
        unsafe fn $name<const C: usize>(conv: &Conv<'_>, out: *mut f32, q: usize, j0: usize) {
            let cout = conv.cout;
            let mut acc = [[_mm512_setzero_ps(); block_fn!(@count $js)]; block_fn!(@count [$($i)+])];
            for input in conv.inputs {
                let c = if C == 0 { input.channels } else { C };
                let run = conv.kernel * c;
                for (&s, block) in conv.shifts.iter().zip(input.blocks) {
                    // SAFETY: `reads_inside` bounds (q + s)·c .. (q + P − 1 + s)·c + run
                    // within the input; the weight block holds run rows of cout.
                    unsafe {
                        let a = input.data.as_ptr().add((q as isize + s) as usize * c);
                        let rows = [$(a.add($i * c)),+];
                        let mut w = block.as_ptr().add(j0);
                        for k in 0..run {
                            let wv = block_fn!(@weights w, $js);
                            $(
                                // An intrinsic load, not a dereference: debug builds check
                                // each dereference's alignment.
                                let b = _mm512_broadcastss_ps(_mm_load_ss(rows[$i].add(k)));
                                block_fn!(@fma acc, $i, b, wv, $js);
                            )+
                            w = w.add(cout);
                        }
                    }
                }
            }
            let zero = _mm512_setzero_ps();
            $(
                block_fn!(@store conv, out, q, j0, acc, $i, zero, $js);
            )+
        }
    };
    (@count [$($x:literal)+]) => { [$($x),+].len() };
    (@weights $w:ident, [$($j:literal)+]) => {
        [$(_mm512_loadu_ps($w.add(16 * $j))),+]
    };
    (@fma $acc:ident, $i:literal, $b:ident, $wv:ident, [$($j:literal)+]) => {
        $( $acc[$i][$j] = _mm512_fmadd_ps($b, $wv[$j], $acc[$i][$j]); )+
    };
    (@store $conv:ident, $out:ident, $q:ident, $j0:ident, $acc:ident, $i:literal, $zero:ident,
        [$($j:literal)+]) => {
        $(
            // SAFETY: `shift` has cout values; `out` is the caller's promise.
            unsafe {
                let column = $j0 + 16 * $j;
                let mut v = _mm512_add_ps($acc[$i][$j], _mm512_loadu_ps($conv.shift.as_ptr().add(column)));
                if $conv.relu {
                    v = _mm512_max_ps(v, $zero);
                }
                _mm512_storeu_ps($out.add(($q + $i) * $conv.cout + column), v);
            }
        )+
    };
}

block_fn!(block_6x4, [0 1 2 3 4 5], [0 1 2 3]);
block_fn!(block_1x4, [0], [0 1 2 3]);
block_fn!(block_12x2, [0 1 2 3 4 5 6 7 8 9 10 11], [0 1]);
block_fn!(block_1x2, [0], [0 1]);
block_fn!(block_24x1, [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23], [0]);
block_fn!(block_1x1, [0], [0]);
