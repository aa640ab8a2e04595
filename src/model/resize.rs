//! Differentiable trilinear resizing and point sampling of 5-D tensors, built from matrix
//! products and gathers so that they have a backward pass on every backend (burn's
//! `interpolate` is 4-D only and has no bilinear backward on wgpu).

use burn::tensor::{Device, Int, Tensor, TensorData};

/// The `n_out × n_in` matrix of 1-D linear interpolation with PyTorch's `align_corners=False`
/// rule: output sample `o` reads input coordinate `(o + ½)·n_in/n_out − ½`, clamped to the ends.
pub fn linear_resize_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; n_out * n_in];
    let scale = n_in as f64 / n_out as f64;
    for o in 0..n_out {
        let src = ((o as f64 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f64);
        let i0 = src.floor() as usize;
        let i1 = (i0 + 1).min(n_in - 1);
        let t = (src - i0 as f64) as f32;
        m[o * n_in + i0] += 1.0 - t;
        m[o * n_in + i1] += t;
    }
    m
}

/// Resizes the three spatial dimensions trilinearly (`align_corners=False`).
/// - input: `[b, c, d, h, w]`
/// - output: `[b, c, size[0], size[1], size[2]]`
pub fn resize_trilinear(x: Tensor<5>, size: [usize; 3]) -> Tensor<5> {
    let device = x.device();
    let x = resize_axis(x, 4, size[2], &device);
    let x = resize_axis(x, 3, size[1], &device);
    resize_axis(x, 2, size[0], &device)
}

fn resize_axis(x: Tensor<5>, axis: usize, n_out: usize, device: &Device) -> Tensor<5> {
    let dims = x.dims();
    let n_in = dims[axis];
    if n_in == n_out {
        return x;
    }
    // Move the axis last, multiply by the interpolation matrix, move it back.
    let moved = x.swap_dims(axis, 4);
    let moved_dims = moved.dims();
    let rows: usize = moved_dims[..4].iter().product();
    let matrix: Tensor<2> = Tensor::<2>::from_data(
        TensorData::new(linear_resize_matrix(n_in, n_out), [n_out, n_in]),
        device,
    )
    .transpose(); // [n_in, n_out]
    let flat: Tensor<2> = moved.reshape([rows, n_in]);
    let out = flat.matmul(matrix).reshape([
        moved_dims[0],
        moved_dims[1],
        moved_dims[2],
        moved_dims[3],
        n_out,
    ]);
    out.swap_dims(axis, 4)
}

/// Samples a map trilinearly at continuous cell coordinates (edges clamped).
/// - map: `[b, c, d, h, w]`
/// - points: `[b, n, 3]`, each `(z, y, x)` in cell units (cell centres at integers)
/// - output: `[b, n, c]`
pub fn sample_trilinear(map: Tensor<5>, points: Tensor<3>) -> Tensor<3> {
    let [b, c, d, h, w] = map.dims();
    let [_, n, _] = points.dims();
    let limits = [d, h, w];
    let flat: Tensor<3> = map.reshape([b, c, d * h * w]);
    // Per axis: the lower corner index (clamped) and the weight of the upper corner.
    let mut lower = Vec::with_capacity(3);
    let mut upper = Vec::with_capacity(3);
    let mut weight = Vec::with_capacity(3);
    for (axis, &size) in limits.iter().enumerate() {
        let p: Tensor<2> = points
            .clone()
            .narrow(2, axis, 1)
            .reshape([b, n])
            .clamp(0.0, (size - 1) as f64);
        let floor = p.clone().floor();
        let i0: Tensor<2, Int> = floor.clone().int();
        let i1 = i0.clone().add_scalar(1).clamp_max(size as i64 - 1);
        weight.push(p - floor);
        lower.push(i0);
        upper.push(i1);
    }
    let strides = [(h * w) as i64, w as i64, 1i64];
    let mut out: Option<Tensor<3>> = None;
    for corner in 0..8usize {
        let mut index: Option<Tensor<2, Int>> = None;
        let mut corner_weight: Option<Tensor<2>> = None;
        for axis in 0..3 {
            let high = corner >> axis & 1 == 1;
            let i = if high {
                upper[axis].clone()
            } else {
                lower[axis].clone()
            };
            let wgt = if high {
                weight[axis].clone()
            } else {
                weight[axis].clone().neg().add_scalar(1.0)
            };
            let term = i.mul_scalar(strides[axis]);
            index = Some(match index {
                Some(acc) => acc + term,
                None => term,
            });
            corner_weight = Some(match corner_weight {
                Some(acc) => acc * wgt,
                None => wgt,
            });
        }
        let (Some(index), Some(corner_weight)) = (index, corner_weight) else {
            continue;
        };
        let index: Tensor<3, Int> = index.unsqueeze_dim::<3>(1).expand([b, c, n]);
        let values = flat.clone().gather(2, index); // [b, c, n]
        let term = values * corner_weight.unsqueeze_dim::<3>(1);
        out = Some(match out {
            Some(acc) => acc + term,
            None => term,
        });
    }
    match out {
        Some(values) => values.swap_dims(1, 2),
        None => Tensor::zeros([b, n, c], &flat.device()),
    }
}
