//! Nearest ×2 upsampling of `[b, c, d, h, w]` as one backend op with its own backward pass:
//! what [`crate::model::ApeNet`]'s decoder does before each skip connection.
//!
//! Written with burn's tensor ops (a reshape, a broadcast, a reshape) it goes through flex's
//! element-by-element strided copy, forward, and a broadcast's reduction backward: about 5 ms a
//! training step at 8 crops, for a copy. Here the forward writes each doubled row once and
//! copies it to its four places; the backward sums each 2 × 2 × 2 block of the output's
//! gradient; both in parallel over the input's planes.
//!
//! [`ApeUpsampleBackend`] follows [`super::ApeConvBackend`]'s pattern: burn's own ops by default
//! (wgpu keeps them), ape's loops on `Flex`, its own backward step under `Autodiff`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::tensor::{Shape, Tensor};

/// `x` `[b, c, d, h, w]` upsampled ×2 along the last three axes, each value repeated in a
/// 2 × 2 × 2 block. Differentiable on every backend.
pub fn upsample_nearest2(x: Tensor<5>) -> Tensor<5> {
    if !super::enabled() {
        let [b, c, d, h, w] = x.dims();
        let x: Tensor<8> = x.reshape([b, c, d, 1, h, 1, w, 1]);
        return x
            .expand([b, c, d, 2, h, 2, w, 2])
            .reshape([b, c, 2 * d, 2 * h, 2 * w]);
    }
    Tensor::from_dispatch(<Dispatch as ApeUpsampleBackend>::ape_upsample2(
        x.into_dispatch(),
    ))
}

/// Nearest ×2 upsampling and its backward; burn's ops by default.
#[backend_extension(Flex, Cube, Autodiff)]
pub trait ApeUpsampleBackend: Backend {
    /// `[b, c, d, h, w]` → `[b, c, 2d, 2h, 2w]`.
    fn ape_upsample2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        burns_forward::<Self>(x)
    }

    /// The input's gradient from the output's: the sum over each 2 × 2 × 2 block.
    fn ape_upsample2_backward(grad: FloatTensor<Self>) -> FloatTensor<Self> {
        burns_backward::<Self>(grad)
    }
}

/// `[b, c, d, h, w]` of a rank-5 shape (zeros otherwise, which the callers' ops reject).
fn dims5(shape: &[usize]) -> [usize; 5] {
    match shape {
        &[b, c, d, h, w] => [b, c, d, h, w],
        _ => [0; 5],
    }
}

fn burns_forward<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let [b, c, d, h, w] = dims5(&x.shape());
    let x = B::float_reshape(x, Shape::new([b, c, d, 1, h, 1, w, 1]));
    let x = B::float_expand(x, Shape::new([b, c, d, 2, h, 2, w, 2]));
    B::float_reshape(x, Shape::new([b, c, 2 * d, 2 * h, 2 * w]))
}

fn burns_backward<B: Backend>(grad: FloatTensor<B>) -> FloatTensor<B> {
    let [b, c, d2, h2, w2] = dims5(&grad.shape());
    let (d, h, w) = (d2 / 2, h2 / 2, w2 / 2);
    let g = B::float_reshape(grad, Shape::new([b, c, d, 2, h, 2, w, 2]));
    let g = B::float_sum_dim(B::float_sum_dim(B::float_sum_dim(g, 7), 5), 3);
    B::float_reshape(g, Shape::new([b, c, d, h, w]))
}

impl ApeUpsampleBackend for Cube {}

impl ApeUpsampleBackend for Flex {
    fn ape_upsample2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        flex::forward(&x).unwrap_or_else(|| burns_forward::<Self>(x))
    }

    fn ape_upsample2_backward(grad: FloatTensor<Self>) -> FloatTensor<Self> {
        flex::backward(&grad).unwrap_or_else(|| burns_backward::<Self>(grad))
    }
}

/// The backward step of [`ApeUpsampleBackend::ape_upsample2`] under autodiff: it needs nothing
/// but the output's gradient.
#[derive(Debug)]
struct UpsampleBackwardStep;

impl<B: ApeUpsampleBackend> Backward<B, 1> for UpsampleBackwardStep {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::ape_upsample2_backward(grad));
        }
    }
}

impl<B: ApeUpsampleBackend, C: CheckpointStrategy> ApeUpsampleBackend for Autodiff<B, C> {
    fn ape_upsample2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = UpsampleBackwardStep
            .prepare::<C>([x.node()])
            .compute_bound();
        prep.stateless(B::ape_upsample2(x.into_primitive()))
    }
}

/// The loops on `Flex` tensors: f32, rank 5, even output sizes; `None` otherwise.
mod flex {
    use burn::backend::flex::FlexTensor;
    use burn::backend::{TensorData, TensorMetadata};
    use rayon::prelude::*;

    use super::super::flex_values as values;

    pub fn forward(x: &FlexTensor) -> Option<FlexTensor> {
        let [b, c, d, h, w] = super::dims5(&x.shape());
        let xv = values(x)?;
        let plane = h * w;
        (plane > 0 && xv.len() == b * c * d * plane).then_some(())?;
        let mut out = vec![0.0f32; 8 * xv.len()];
        // Each input plane becomes two output planes of 2h × 2w: a block of 8·plane values.
        out.par_chunks_mut(8 * plane)
            .zip(xv.par_chunks(plane))
            .for_each(|(block, input)| {
                let (first, second) = block.split_at_mut(4 * plane);
                for (y, row) in input.chunks_exact(w).enumerate() {
                    let doubled = &mut first[4 * y * w..4 * y * w + 2 * w];
                    for (pair, v) in doubled.chunks_exact_mut(2).zip(row) {
                        pair.fill(*v);
                    }
                    first.copy_within(4 * y * w..4 * y * w + 2 * w, (4 * y + 2) * w);
                }
                second.copy_from_slice(first);
            });
        Some(FlexTensor::from_data(TensorData::new(
            out,
            vec![b, c, 2 * d, 2 * h, 2 * w],
        )))
    }

    pub fn backward(grad: &FlexTensor) -> Option<FlexTensor> {
        let [b, c, d2, h2, w2] = super::dims5(&grad.shape());
        (d2 % 2 == 0 && h2 % 2 == 0 && w2 % 2 == 0).then_some(())?;
        let (d, h, w) = (d2 / 2, h2 / 2, w2 / 2);
        let gv = values(grad)?;
        let plane = h * w;
        (plane > 0 && gv.len() == 8 * b * c * d * plane).then_some(())?;
        let mut out = vec![0.0f32; b * c * d * plane];
        out.par_chunks_mut(plane)
            .zip(gv.par_chunks(8 * plane))
            .for_each(|(dst, block)| {
                let (first, second) = block.split_at(4 * plane);
                for (y, row) in dst.chunks_exact_mut(w).enumerate() {
                    for (x, v) in row.iter_mut().enumerate() {
                        let at = 4 * y * w + 2 * x;
                        let (r0, r1) = (at, at + 2 * w);
                        *v = first[r0]
                            + first[r0 + 1]
                            + first[r1]
                            + first[r1 + 1]
                            + second[r0]
                            + second[r0 + 1]
                            + second[r1]
                            + second[r1 + 1];
                    }
                }
            });
        Some(FlexTensor::from_data(TensorData::new(
            out,
            vec![b, c, d, h, w],
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_values::{read, relative, values};
    use burn::tensor::{Device, TensorData};

    /// The op and its gradient equal burn's reshape-and-broadcast on autodiff flex, on odd sizes.
    #[test]
    fn upsampling_and_its_gradient_equal_burns() {
        let device = Device::flex().autodiff();
        let dims = [2, 3, 3, 5, 4];
        let out_dims = [2, 3, 6, 10, 8];
        let x = values(dims.iter().product(), 1);
        let r = values(out_dims.iter().product(), 2);
        let run = |ape: bool| {
            let xt =
                Tensor::<5>::from_data(TensorData::new(x.clone(), dims), &device).require_grad();
            let rt = Tensor::<5>::from_data(TensorData::new(r.clone(), out_dims), &device);
            let y = if ape {
                upsample_nearest2(xt.clone())
            } else {
                let [b, c, d, h, w] = dims;
                let x8: Tensor<8> = xt.clone().reshape([b, c, d, 1, h, 1, w, 1]);
                x8.expand([b, c, d, 2, h, 2, w, 2])
                    .reshape([b, c, 2 * d, 2 * h, 2 * w])
            };
            let grads = (y.clone() * rt).sum().backward();
            let dx = xt.grad(&grads).expect("x gradient");
            (read(y), read(dx))
        };
        let (y_ref, dx_ref) = run(false);
        let (y, dx) = run(true);
        assert_eq!(y, y_ref);
        assert!(relative(&dx, &dx_ref) < 1e-6);
    }
}
