//! Batch normalisation without learnable scale and shift: the APE output layer, which forces each
//! embedding channel to zero mean and unit variance (method.md). burn's `BatchNorm` always learns
//! γ and β, so this small module stands in.

use burn::config::Config;
use burn::module::{Module, RunningState};
use burn::tensor::{Device, Tensor};

#[derive(Config, Debug)]
pub struct PlainBatchNormConfig {
    pub num_features: usize,
    #[config(default = 1e-5)]
    pub epsilon: f64,
    #[config(default = 0.1)]
    pub momentum: f64,
}

/// `y = (x − mean) / sqrt(var + ε)` per channel: batch statistics while training (and running
/// averages updated), the running averages at inference; with `fixed`, the running averages in
/// training too (and left as they are), so that training and inference normalise alike.
#[derive(Module, Debug)]
pub struct PlainBatchNorm {
    pub running_mean: RunningState<Tensor<1>>,
    pub running_var: RunningState<Tensor<1>>,
    pub momentum: f64,
    pub epsilon: f64,
    /// Not saved: a training choice, set by the trainer on the network it trains.
    #[module(skip)]
    pub fixed: bool,
}

impl PlainBatchNormConfig {
    pub fn init(&self, device: &Device) -> PlainBatchNorm {
        PlainBatchNorm {
            running_mean: RunningState::new(Tensor::zeros([self.num_features], device)),
            running_var: RunningState::new(Tensor::ones([self.num_features], device)),
            momentum: self.momentum,
            epsilon: self.epsilon,
            fixed: false,
        }
    }
}

impl PlainBatchNorm {
    /// - input: `[batch, channels, d, h, w]`
    /// - output: the same shape
    pub fn forward(&self, input: Tensor<5>) -> Tensor<5> {
        let device = input.device();
        let [_, channels, _, _, _] = input.dims();
        let training = device.is_autodiff() && !self.fixed;
        if training && super::ops::norm::enabled() {
            // One fused op with its own backward (`ops::norm`), γ = 1 and β = 0 untracked.
            let ones = Tensor::ones([channels], &device);
            let zeros = Tensor::zeros([channels], &device);
            let (y, mean, var) =
                super::ops::norm::batch_statistics(input, ones, zeros, self.epsilon, false);
            super::ops::norm::update(&self.running_mean, mean, self.momentum);
            super::ops::norm::update(&self.running_var, var, self.momentum);
            return y;
        }
        let (mean, var) = if training {
            // Statistics over batch and space: move channels first and flatten the rest.
            let flat: Tensor<2> = input.clone().swap_dims(0, 1).flatten(1, 4);
            let mean = flat.clone().mean_dim(1); // [channels, 1]
            let var = (flat - mean.clone()).powi_scalar(2).mean_dim(1); // biased, as PyTorch
            let running_mean = self.running_mean.value_sync().to_device(&device);
            let running_var = self.running_var.value_sync().to_device(&device);
            let m = self.momentum;
            self.running_mean.update(
                (running_mean.mul_scalar(1.0 - m)
                    + mean.clone().detach().reshape([channels]).mul_scalar(m))
                .detach(),
            );
            self.running_var.update(
                (running_var.mul_scalar(1.0 - m)
                    + var.clone().detach().reshape([channels]).mul_scalar(m))
                .detach(),
            );
            (
                mean.reshape([1, channels, 1, 1, 1]),
                var.reshape([1, channels, 1, 1, 1]),
            )
        } else {
            (
                self.running_mean
                    .value()
                    .to_device(&device)
                    .reshape([1, channels, 1, 1, 1]),
                self.running_var
                    .value()
                    .to_device(&device)
                    .reshape([1, channels, 1, 1, 1]),
            )
        };
        (input - mean) / (var + self.epsilon).sqrt()
    }
}
