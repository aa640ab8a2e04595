//! Channel lines to channels-last rows and back: the layout moves around every convolution of
//! [`super::kernels`] (burn's `[c][z][y][x]` in, `cpu_net`'s channels-last out).
//!
//! A plain loop over one channel at a time stores to a new cache line with every value. These
//! move 16 × 16 tiles: sixteen loads of 16 values, a transposition in registers (AVX-512,
//! where the CPU has it) and sixteen stores, the last tile along each axis overlapping the one
//! before it; fewer than 16 channels or positions, or no AVX-512, value by value.
#![allow(unsafe_code)]

/// Where the channel lines lie in a channels-first buffer: line c starts at
/// `offset + c·channel_stride`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lines {
    pub offset: usize,
    pub channel_stride: usize,
}

impl Lines {
    fn at(self, c: usize, i: usize) -> usize {
        self.offset + c * self.channel_stride + i
    }

    /// Whether `channels` lines of `x` values lie inside a buffer of `len`.
    fn inside(self, channels: usize, x: usize, len: usize) -> bool {
        channels == 0 || x == 0 || self.at(channels - 1, x - 1) < len
    }
}

/// `row[i·channels + c] = src[lines.at(c, i)]` for i < x, c < channels (`row` x·channels
/// long); nothing when an index falls outside a slice.
pub(super) fn interleave(src: &[f32], lines: Lines, channels: usize, row: &mut [f32]) {
    let x = row.len() / channels.max(1);
    if !lines.inside(channels, x, src.len()) {
        return;
    }
    if whole_tiles(channels, x) {
        for i0 in tile_starts(x) {
            for c0 in tile_starts(channels) {
                // SAFETY: AVX-512 (checked by `whole_tiles`); lines c0..c0+16 from i0 lie in
                // src (`inside`), positions i0..i0+16 in row (x·channels long).
                unsafe {
                    avx512::tile(
                        src.as_ptr().add(lines.at(c0, i0)),
                        lines.channel_stride,
                        row.as_mut_ptr().add(i0 * channels + c0),
                        channels,
                    );
                }
            }
        }
        return;
    }
    for i in 0..x {
        for c in 0..channels {
            row[i * channels + c] = src[lines.at(c, i)];
        }
    }
}

/// The inverse of [`interleave`]: `dst[lines.at(c, i)] = row[i·channels + c]`.
pub(super) fn deinterleave(row: &[f32], channels: usize, dst: &mut [f32], lines: Lines) {
    let x = row.len() / channels.max(1);
    if !lines.inside(channels, x, dst.len()) {
        return;
    }
    if whole_tiles(channels, x) {
        for i0 in tile_starts(x) {
            for c0 in tile_starts(channels) {
                // SAFETY: as in `interleave`, with source and destination swapped.
                unsafe {
                    avx512::tile(
                        row.as_ptr().add(i0 * channels + c0),
                        channels,
                        dst.as_mut_ptr().add(lines.at(c0, i0)),
                        lines.channel_stride,
                    );
                }
            }
        }
        return;
    }
    for i in 0..x {
        for c in 0..channels {
            dst[lines.at(c, i)] = row[i * channels + c];
        }
    }
}

/// The first index of each 16-wide tile along `n` ≥ 16: every 16th, and the last tile ending
/// at `n`, overlapping the one before it (a copy writes the same values twice).
fn tile_starts(n: usize) -> impl Iterator<Item = usize> {
    (0..n / 16)
        .map(|t| t * 16)
        .chain((!n.is_multiple_of(16)).then_some(n - 16))
}

/// Whether the AVX-512 transposition moves everything: 16 × 16 tiles fit, and the CPU has it.
fn whole_tiles(channels: usize, x: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        channels >= 16 && x >= 16 && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (channels, x);
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, _mm512_castpd_ps, _mm512_castps_pd, _mm512_loadu_ps, _mm512_shuffle_f32x4,
        _mm512_storeu_ps, _mm512_unpackhi_pd, _mm512_unpackhi_ps, _mm512_unpacklo_pd,
        _mm512_unpacklo_ps,
    };

    /// `to[j·to_stride + i] = from[i·from_stride + j]` for i, j < 16.
    ///
    /// # Safety
    /// AVX-512F is available; `from` is valid for reads of 16 runs of 16 values `from_stride`
    /// apart, `to` for writes of 16 runs of 16 values `to_stride` apart, and no other thread
    /// touches them during the call.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(
        from: *const f32,
        from_stride: usize,
        to: *mut f32,
        to_stride: usize,
    ) {
        let mut r = [unsafe { _mm512_loadu_ps(from) }; 16];
        for (i, v) in r.iter_mut().enumerate().skip(1) {
            // SAFETY: run i of the caller's 16.
            *v = unsafe { _mm512_loadu_ps(from.add(i * from_stride)) };
        }
        let r = transpose(r);
        for (j, v) in r.iter().enumerate() {
            // SAFETY: run j of the caller's 16.
            unsafe { _mm512_storeu_ps(to.add(j * to_stride), *v) };
        }
    }

    /// Rows of 16 lanes to columns: out[j] lane i = r[i] lane j.
    #[target_feature(enable = "avx512f")]
    fn transpose(r: [__m512; 16]) -> [__m512; 16] {
        // 1: interleave 32-bit lanes of row pairs: t[2k], t[2k+1] hold rows 2k and 2k+1.
        let mut t = r;
        for k in 0..8 {
            t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
            t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
        }
        // 2: interleave 64-bit pairs of quadruples of rows.
        let mut u = t;
        for q in 0..4 {
            let (a, b, c, d) = (t[4 * q], t[4 * q + 1], t[4 * q + 2], t[4 * q + 3]);
            let lo = |x: __m512, y: __m512| {
                _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)))
            };
            let hi = |x: __m512, y: __m512| {
                _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)))
            };
            u[4 * q] = lo(a, c);
            u[4 * q + 1] = hi(a, c);
            u[4 * q + 2] = lo(b, d);
            u[4 * q + 3] = hi(b, d);
        }
        // Now u[4q + m] lane 4l + k = row 4q + k, column 4l + m (m < 4).
        // 3: gather 128-bit lanes across groups of four rows.
        let mut v = u;
        for m in 0..4 {
            for h in 0..2 {
                let (a, b) = (u[8 * h + m], u[8 * h + 4 + m]);
                v[8 * h + m] = _mm512_shuffle_f32x4::<0x88>(a, b);
                v[8 * h + 4 + m] = _mm512_shuffle_f32x4::<0xdd>(a, b);
            }
        }
        // Now v[8h + m]'s lanes hold columns m, 8 + m, m, 8 + m of rows 8h.., 8h.., 8h + 4..,
        // 8h + 4.. (four rows each), and v[8h + 4 + m] the same for columns 4 + m, 12 + m.
        // 4: the same across the two halves.
        let mut out = v;
        for m in 0..8 {
            let (a, b) = (v[m], v[8 + m]);
            out[m] = _mm512_shuffle_f32x4::<0x88>(a, b);
            out[8 + m] = _mm512_shuffle_f32x4::<0xdd>(a, b);
        }
        // out[k] is column k.
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both directions on shapes with and without whole tiles, against the plain loops.
    #[test]
    fn interleave_and_back_move_every_value() {
        for (channels, x) in [(16, 16), (32, 24), (64, 6), (5, 40), (16, 33), (48, 17)] {
            let stride = x + 3;
            let src: Vec<f32> = (0..channels * stride + 2).map(|v| v as f32).collect();
            let lines = Lines {
                offset: 2,
                channel_stride: stride,
            };
            let mut row = vec![0.0f32; channels * x];
            interleave(&src, lines, channels, &mut row);
            for i in 0..x {
                for c in 0..channels {
                    assert_eq!(
                        row[i * channels + c],
                        src[2 + c * stride + i],
                        "{channels} {x}"
                    );
                }
            }
            let mut back = vec![-1.0f32; src.len()];
            deinterleave(&row, channels, &mut back, lines);
            for c in 0..channels {
                for i in 0..x {
                    assert_eq!(back[2 + c * stride + i], src[2 + c * stride + i]);
                }
            }
        }
    }
}
