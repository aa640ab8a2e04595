//! Batch norm with batch statistics, and a ReLU after it, as one backend op with its own
//! backward pass: what every block of [`crate::model::ApeNet`] does after its convolution while
//! training (and the output norm, without affine parameters or ReLU).
//!
//! burn's `batch_norm_train` is one autodiff op too, but on flex its forward and backward are
//! compositions of a dozen tensor passes each (swaps, reductions, broadcasts), and the ReLU two
//! more. Here the forward is three passes over the activations (mean, centred variance,
//! output), the backward two (the two per-channel sums, then the input gradient), in parallel
//! over the runs of one channel of one batch item; the backward step keeps the input and the
//! output (the ReLU's mask; the next convolution keeps it anyway as its input).
//!
//! With `z = γ·x̂ + β`, `x̂ = (x − μ)/σ` and `dz = dy·[z > 0]` (or `dy` without ReLU), over the
//! n = batch × voxels values of a channel: `dβ = Σ dz`, `dγ = Σ dz·x̂`,
//! `dx = γ/σ · (dz − dβ/n − x̂·dγ/n)`.
//!
//! [`ApeNormBackend`] follows [`super::ApeConvBackend`]'s pattern: burn's own ops by default
//! (wgpu keeps them), ape's passes on `Flex`, its own backward step under `Autodiff`.
//! [`batch_norm`] falls back to burn's `BatchNorm` (and ReLU) outside training, or when
//! [`super::set_enabled`] turned ape's ops off ([`set_enabled`] here turns off this op alone,
//! for the benchmark).

use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Cube, Dispatch, Flex, backend_extension};
use burn::module::RunningState;
use burn::nn::BatchNorm;
use burn::tensor::{Tensor, activation};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the fused norm on or off for the whole process (on by default), leaving ape's
/// convolutions as they are; it also needs [`super::enabled`].
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether the fused norm is on (it and [`super::enabled`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed) && super::enabled()
}

/// Training-mode batch norm of `x` `[b, c, …]` with `norm`'s γ and β, its running statistics
/// updated as burn's `BatchNorm` updates them, then a ReLU if `relu`. Outside training (no
/// autodiff, or the module in evaluation mode) and with ape's ops off: burn's `BatchNorm`.
pub fn batch_norm(norm: &BatchNorm, x: Tensor<5>, relu: bool) -> Tensor<5> {
    let training = x.device().is_autodiff() && norm.training.is_enabled();
    if !(training && enabled()) {
        let y = norm.forward(x);
        return if relu { activation::relu(y) } else { y };
    }
    let (y, mean, var) = batch_statistics(x, norm.gamma.val(), norm.beta.val(), norm.epsilon, relu);
    update(&norm.running_mean, mean, norm.momentum);
    update(&norm.running_var, var, norm.momentum);
    y
}

/// `(1 − m)·running + m·batch`, as burn's `BatchNorm` does it.
pub fn update(running: &RunningState<Tensor<1>>, batch: Tensor<1>, momentum: f64) {
    let device = batch.device();
    let old = running.value_sync().to_device(&device);
    running.update((old.mul_scalar(1.0 - momentum) + batch.detach().mul_scalar(momentum)).detach());
}

/// The fused op itself: `(relu?(γ·x̂ + β), μ, σ²)` with the batch's mean and biased variance
/// per channel (`[c]`, not tracked). Differentiable with respect to `x`, `gamma` and `beta`.
pub fn batch_statistics(
    x: Tensor<5>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    relu: bool,
) -> (Tensor<5>, Tensor<1>, Tensor<1>) {
    let (y, mean, var) = <Dispatch as ApeNormBackend>::ape_batch_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
        relu,
    );
    (
        Tensor::from_dispatch(y),
        Tensor::from_dispatch(mean),
        Tensor::from_dispatch(var),
    )
}

/// Batch norm with batch statistics and an optional ReLU; burn's ops by default.
#[backend_extension(Flex, Cube, Autodiff)]
pub trait ApeNormBackend: Backend {
    /// `(relu?(γ·(x − μ)/√(σ² + ε) + β), μ, σ²)`, statistics over every axis but the second.
    fn ape_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        burns_forward::<Self>(x, gamma, beta, epsilon, relu)
    }

    /// The gradients with respect to `x`, `gamma` and `beta`, given the output's gradient
    /// `grad`, the output `y` (its zeros are the ReLU's mask) and the statistics the forward
    /// pass returned.
    #[allow(clippy::too_many_arguments)]
    fn ape_batch_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        y: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        burns_backward::<Self>(x, gamma, y, mean, var, grad, epsilon, relu)
    }
}

impl ApeNormBackend for Cube {}

impl ApeNormBackend for Flex {
    fn ape_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match flex::forward(&x, &gamma, &beta, epsilon, relu) {
            Some(out) => out,
            None => burns_forward::<Self>(x, gamma, beta, epsilon, relu),
        }
    }

    fn ape_batch_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        y: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if let Some(out) = flex::backward([&x, &gamma, &y, &mean, &var, &grad], epsilon, relu) {
            return out;
        }
        burns_backward::<Self>(x, gamma, y, mean, var, grad, epsilon, relu)
    }
}

/// [`ApeNormBackend::ape_batch_norm`] by burn's own ops: the default, and `Flex`'s fallback.
fn burns_forward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
    relu: bool,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let r = B::batch_norm_train(x, gamma, beta, epsilon);
    let y = if relu { B::relu(r.output) } else { r.output };
    (y, r.mean, r.variance)
}

/// [`ApeNormBackend::ape_batch_norm_backward`] by burn's own ops: the default, and `Flex`'s
/// fallback.
#[allow(clippy::too_many_arguments)]
fn burns_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    y: FloatTensor<B>,
    mean: FloatTensor<B>,
    var: FloatTensor<B>,
    grad: FloatTensor<B>,
    epsilon: f64,
    relu: bool,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let grad = if relu {
        B::relu_backward(y, grad)
    } else {
        grad
    };
    let r = B::batch_norm_train_backward(x, gamma, mean, var, epsilon, grad);
    (r.x_grad, r.gamma_grad, r.beta_grad)
}

/// The backward step of [`ApeNormBackend::ape_batch_norm`] under autodiff.
#[derive(Debug)]
struct ApeNormBackwardStep;

/// What the backward step keeps: the input's node, γ, the output, μ, σ², ε, ReLU.
type NormState<B> = (
    NodeId,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    f64,
    bool,
);

impl<B: ApeNormBackend> Backward<B, 3> for ApeNormBackwardStep {
    type State = NormState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, gamma, y, mean, var, epsilon, relu) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let (dx, dgamma, dbeta) =
            B::ape_batch_norm_backward(x, gamma, y, mean, var, grad, epsilon, relu);
        for (node, g) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: ApeNormBackend, C: CheckpointStrategy> ApeNormBackend for Autodiff<B, C> {
    fn ape_batch_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match ApeNormBackwardStep
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma = gamma.into_primitive();
                let (y, mean, var) = B::ape_batch_norm(
                    x.into_primitive(),
                    gamma.clone(),
                    beta.into_primitive(),
                    epsilon,
                    relu,
                );
                let state = (
                    x_state,
                    gamma,
                    y.clone(),
                    mean.clone(),
                    var.clone(),
                    epsilon,
                    relu,
                );
                (
                    prep.finish(state, y),
                    Self::from_inner(mean),
                    Self::from_inner(var),
                )
            }
            OpsKind::UnTracked(prep) => {
                let (y, mean, var) = B::ape_batch_norm(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    epsilon,
                    relu,
                );
                (
                    prep.finish(y),
                    Self::from_inner(mean),
                    Self::from_inner(var),
                )
            }
        }
    }
}

/// The passes on `Flex` tensors: f32, `[b, c, …]`; `None` otherwise (burn's ops then).
mod flex {
    use burn::backend::flex::FlexTensor;
    use burn::backend::{TensorData, TensorMetadata};
    use rayon::prelude::*;

    type Three = (FlexTensor, FlexTensor, FlexTensor);

    use super::super::flex_values as values;

    fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    /// (batch, channels, voxels per channel) of `x`, when it has a channel axis and values.
    fn layout(x: &FlexTensor) -> Option<(usize, usize, usize)> {
        let shape = x.shape().to_vec();
        let (&b, &c) = (shape.first()?, shape.get(1)?);
        let voxels: usize = shape[2..].iter().product();
        (b > 0 && c > 0 && voxels > 0).then_some((b, c, voxels))
    }

    /// Σ f(v) over a run: f32 in 16 lanes over blocks of 4,096 values, each block's lanes added
    /// in f64 (the lanes let the compiler vectorise; the blocks bound the f32 error).
    fn sum(run: &[f32], f: impl Fn(f32) -> f32) -> f64 {
        let mut total = 0.0f64;
        for block in run.chunks(4096) {
            let mut lanes = [0.0f32; 16];
            let mut whole = block.chunks_exact(16);
            for values in &mut whole {
                for (l, &v) in lanes.iter_mut().zip(values) {
                    *l += f(v);
                }
            }
            for (l, &v) in lanes.iter_mut().zip(whole.remainder()) {
                *l += f(v);
            }
            total += lanes.iter().map(|&l| f64::from(l)).sum::<f64>();
        }
        total
    }

    /// (Σ dz, Σ dz·x̂) over a run of `[x, y, dy]`, `f` giving (dz, x̂), as [`sum`] adds.
    fn sum2(runs: [&[f32]; 3], f: impl Fn(f32, f32, f32) -> (f32, f32)) -> (f64, f64) {
        let [x, y, g] = runs;
        let (mut total, mut total_x) = (0.0f64, 0.0f64);
        for ((x, y), g) in x.chunks(4096).zip(y.chunks(4096)).zip(g.chunks(4096)) {
            let (mut s, mut sx) = ([0.0f32; 16], [0.0f32; 16]);
            let (mut xs, mut ys, mut gs) =
                (x.chunks_exact(16), y.chunks_exact(16), g.chunks_exact(16));
            for ((x, y), g) in (&mut xs).zip(&mut ys).zip(&mut gs) {
                for l in 0..16 {
                    let (d, xhat) = f(x[l], y[l], g[l]);
                    s[l] += d;
                    sx[l] += d * xhat;
                }
            }
            let rest = xs
                .remainder()
                .iter()
                .zip(ys.remainder())
                .zip(gs.remainder());
            for (l, ((&x, &y), &g)) in rest.enumerate() {
                let (d, xhat) = f(x, y, g);
                s[l] += d;
                sx[l] += d * xhat;
            }
            total += s.iter().map(|&l| f64::from(l)).sum::<f64>();
            total_x += sx.iter().map(|&l| f64::from(l)).sum::<f64>();
        }
        (total, total_x)
    }

    /// Per-channel sums of `f(channel, run)` over the runs (one channel of one batch item).
    fn per_channel<F>(x: &[f32], channels: usize, voxels: usize, f: F) -> Vec<f64>
    where
        F: Fn(usize, &[f32]) -> f64 + Sync,
    {
        let runs: Vec<f64> = x
            .par_chunks(voxels)
            .enumerate()
            .map(|(r, run)| f(r % channels, run))
            .collect();
        let mut out = vec![0.0f64; channels];
        for (r, v) in runs.iter().enumerate() {
            out[r % channels] += v;
        }
        out
    }

    pub fn forward(
        x: &FlexTensor,
        gamma: &FlexTensor,
        beta: &FlexTensor,
        epsilon: f64,
        relu: bool,
    ) -> Option<Three> {
        let (b, c, voxels) = layout(x)?;
        let (xv, gv, bv) = (values(x)?, values(gamma)?, values(beta)?);
        (gv.len() == c && bv.len() == c && xv.len() == b * c * voxels).then_some(())?;
        let n = (b * voxels) as f64;
        let mean: Vec<f64> = per_channel(&xv, c, voxels, |_, run| sum(run, |v| v))
            .into_iter()
            .map(|s| s / n)
            .collect();
        let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let var: Vec<f64> = per_channel(&xv, c, voxels, |ch, run| {
            let m = mean32[ch];
            sum(run, |v| (v - m) * (v - m))
        })
        .into_iter()
        .map(|s| s / n)
        .collect();
        let var32: Vec<f32> = var.iter().map(|&v| v as f32).collect();
        // y = (x − μ)/σ·γ + β in f32, in burn's order (and the backward's: the same ReLU mask).
        let sd: Vec<f32> = var32.iter().map(|&v| (v + epsilon as f32).sqrt()).collect();
        let mut y = vec![0.0f32; xv.len()];
        y.par_chunks_mut(voxels)
            .zip(xv.par_chunks(voxels))
            .enumerate()
            .for_each(|(r, (out, run))| {
                let ch = r % c;
                let (m, sd, g, b) = (mean32[ch], sd[ch], gv[ch], bv[ch]);
                if relu {
                    for (o, &v) in out.iter_mut().zip(run) {
                        *o = ((v - m) / sd * g + b).max(0.0);
                    }
                } else {
                    for (o, &v) in out.iter_mut().zip(run) {
                        *o = (v - m) / sd * g + b;
                    }
                }
            });
        Some((
            tensor(y, x.shape().to_vec()),
            tensor(mean32, vec![c]),
            tensor(var32, vec![c]),
        ))
    }

    /// `[x, γ, y, μ, σ², dy]` → `(dx, dγ, dβ)`; `y` is the output (the ReLU's mask).
    pub fn backward(t: [&FlexTensor; 6], epsilon: f64, relu: bool) -> Option<Three> {
        let [x, gamma, y, mean, var, grad] = t;
        let (b, c, voxels) = layout(x)?;
        let (xv, yv, dy) = (values(x)?, values(y)?, values(grad)?);
        let (gv, mv, vv) = (values(gamma)?, values(mean)?, values(var)?);
        let len = b * c * voxels;
        (xv.len() == len && yv.len() == len && dy.len() == len).then_some(())?;
        ([gv.len(), mv.len(), vv.len()] == [c; 3]).then_some(())?;
        let sd: Vec<f32> = vv.iter().map(|&v| (v + epsilon as f32).sqrt()).collect();
        let inv: Vec<f32> = sd.iter().map(|&s| 1.0 / s).collect();
        // dz = dy where the output is > 0 (with ReLU), else 0; and x̂.
        let dz = |ch: usize| {
            let (m, sd) = (mv[ch], sd[ch]);
            move |v: f32, y: f32, dy: f32| -> (f32, f32) {
                let keep = !relu | (y > 0.0);
                (if keep { dy } else { 0.0 }, (v - m) / sd)
            }
        };
        let runs: Vec<(f64, f64)> = xv
            .par_chunks(voxels)
            .zip(yv.par_chunks(voxels).zip(dy.par_chunks(voxels)))
            .enumerate()
            .map(|(r, (run, (y, g)))| sum2([run, y, g], dz(r % c)))
            .collect();
        let (mut dbeta, mut dgamma) = (vec![0.0f64; c], vec![0.0f64; c]);
        for (r, (s, sx)) in runs.iter().enumerate() {
            dbeta[r % c] += s;
            dgamma[r % c] += sx;
        }
        let n = (b * voxels) as f64;
        let mean_dz: Vec<f32> = dbeta.iter().map(|&s| (s / n) as f32).collect();
        let mean_dzx: Vec<f32> = dgamma.iter().map(|&s| (s / n) as f32).collect();
        let mut dx = vec![0.0f32; len];
        dx.par_chunks_mut(voxels)
            .zip(xv.par_chunks(voxels).zip(yv.par_chunks(voxels)))
            .zip(dy.par_chunks(voxels))
            .enumerate()
            .for_each(|(r, ((out, (run, y)), g))| {
                let ch = r % c;
                let (a, mean_dz, mean_dzx) = (gv[ch] * inv[ch], mean_dz[ch], mean_dzx[ch]);
                let f = dz(ch);
                for (((o, &v), &yi), &gi) in out.iter_mut().zip(run).zip(y).zip(g) {
                    let (d, xhat) = f(v, yi, gi);
                    *o = a * (d - mean_dz - xhat * mean_dzx);
                }
            });
        Some((
            tensor(dx, x.shape().to_vec()),
            tensor(dgamma.iter().map(|&v| v as f32).collect(), vec![c]),
            tensor(dbeta.iter().map(|&v| v as f32).collect(), vec![c]),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_values::{self, read, relative};
    use burn::tensor::{Device, TensorData};

    /// `values` moved by `offset`.
    fn values(n: usize, seed: u64, offset: f32) -> Vec<f32> {
        test_values::values(n, seed)
            .into_iter()
            .map(|v| v + offset)
            .collect()
    }

    /// Output, statistics and the three gradients of `Σ r · op(x)`.
    fn run(dims: [usize; 5], relu: bool, ape: bool, seed: u64) -> [Vec<f32>; 6] {
        let device = Device::flex().autodiff();
        let c = dims[1];
        let n: usize = dims.iter().product();
        let x = Tensor::<5>::from_data(TensorData::new(values(n, seed, 0.3), dims), &device)
            .require_grad();
        let gamma = Tensor::<1>::from_data(TensorData::new(values(c, seed + 1, 1.0), [c]), &device)
            .require_grad();
        let beta = Tensor::<1>::from_data(TensorData::new(values(c, seed + 2, 0.0), [c]), &device)
            .require_grad();
        let r = Tensor::<5>::from_data(TensorData::new(values(n, seed + 3, 0.0), dims), &device);
        let (y, mean, var) = if ape {
            batch_statistics(x.clone(), gamma.clone(), beta.clone(), 1e-5, relu)
        } else {
            let out = burn::tensor::module::batch_norm_train(
                x.clone(),
                gamma.clone(),
                beta.clone(),
                1e-5,
            );
            let y = if relu {
                activation::relu(out.output)
            } else {
                out.output
            };
            (y, out.mean, out.variance)
        };
        let grads = (y.clone() * r).sum().backward();
        let dx = x.grad(&grads).expect("x gradient");
        let dg = gamma.grad(&grads).expect("γ gradient");
        let db = beta.grad(&grads).expect("β gradient");
        [read(y), read(mean), read(var), read(dx), read(dg), read(db)]
    }

    #[test]
    fn the_fused_norm_and_relu_equal_burns_autodiff() {
        let shapes = [
            [2, 5, 3, 4, 7],
            [3, 16, 4, 6, 6],
            [1, 3, 1, 1, 5],
            [8, 64, 2, 3, 3],
        ];
        for (i, dims) in shapes.into_iter().enumerate() {
            for relu in [true, false] {
                let seed = 10 * i as u64 + u64::from(relu);
                let ours = run(dims, relu, true, seed);
                let reference = run(dims, relu, false, seed);
                let names = ["output", "mean", "variance", "dx", "dγ", "dβ"];
                for ((name, a), b) in names.iter().zip(&ours).zip(&reference) {
                    let e = relative(a, b);
                    assert!(e < 1e-4, "{dims:?} relu {relu} {name}: relative error {e}");
                }
            }
        }
    }

    /// The module path updates the running statistics as burn's `BatchNorm` does.
    #[test]
    fn running_statistics_follow_burns_batch_norm() {
        let device = Device::flex().autodiff();
        let dims = [2, 4, 3, 3, 5];
        let n: usize = dims.iter().product();
        let x = Tensor::<5>::from_data(TensorData::new(values(n, 5, 0.7), dims), &device);
        let ours = burn::nn::BatchNormConfig::new(4).init(&device);
        let theirs = burn::nn::BatchNormConfig::new(4).init(&device);
        let a = read(batch_norm(&ours, x.clone(), true));
        let b = read(activation::relu(theirs.forward(x)));
        assert!(relative(&a, &b) < 1e-5);
        for (ra, rb) in [
            (ours.running_mean.value(), theirs.running_mean.value()),
            (ours.running_var.value(), theirs.running_var.value()),
        ] {
            assert!(relative(&read(ra), &read(rb)) < 1e-5);
        }
    }
}
