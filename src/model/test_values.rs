//! Inputs and comparisons shared by the model's tests.

use burn::tensor::{Device, Tensor, TensorData};

/// `n` values in [−0.5, 0.5) from a xorshift generator seeded by `seed`.
pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// A deterministic image of `dims` (z, y, x) voxels in [0, 1), as windowed scans are, with
/// structure at several scales.
pub(crate) fn image(dims: [usize; 3]) -> Vec<f32> {
    (0..dims.iter().product::<usize>())
        .map(|i| ((i * 7919 + i / 97) % 1000) as f32 / 1000.0)
        .collect()
}

/// One `[1, 1, z, y, x]` network input of `voxels`.
pub(crate) fn input(voxels: &[f32], [z, y, x]: [usize; 3], device: &Device) -> Tensor<5> {
    Tensor::from_data(TensorData::new(voxels.to_vec(), [1, 1, z, y, x]), device)
}

/// A tensor's f32 values, row-major.
pub(crate) fn read<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().expect("f32")
}

/// max |a − b| / max |b|.
pub(crate) fn relative(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f32::max).max(1e-12);
    worst / scale
}
