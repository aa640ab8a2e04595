//! Weight averaging: the mean of several copies of one network, tensor by tensor.
//!
//! Copies saved along one training run at a low learning rate lie in one basin; their mean is
//! usually better than any one of them (stochastic weight averaging, Izmailov et al. 2018), and
//! it does not depend on which copy happened to score best on a small held-out set.
//!
//! Batch norms use running statistics at inference. Training leaves them as an exponential
//! average over its last few steps (each step's crops come from one scan), and the mean of
//! several copies' statistics does not belong to the mean weights; [`recalibrate_norms`]
//! recomputes them as an equal-weight average over given inputs.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};

use super::weights::ApeModel;

#[derive(Debug, thiserror::Error)]
pub enum AverageError {
    #[error("no models to average")]
    Empty,
    #[error("model {index} is not the same network as the first ({detail})")]
    Mismatch { index: usize, detail: String },
}

/// Every float tensor of a module (weights and running statistics), flattened, in the order
/// burn visits them.
struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.0.push(t.reshape([n]));
    }
}

/// Replaces the i-th visited float tensor by the i-th of `sums` divided by `count`.
struct Replace {
    sums: std::vec::IntoIter<Tensor<1>>,
    count: usize,
}

impl ModuleMapper for Replace {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(sum) = self.sums.next() else {
            return param;
        };
        let count = self.count as f64;
        param.map(|t| {
            let dims = t.dims();
            let requires_grad = t.is_require_grad();
            sum.div_scalar(count)
                .reshape(dims)
                .set_require_grad(requires_grad)
        })
    }
}

/// Replaces the i-th visited float tensor `e` by `decay · e + (1 − decay) · current[i]`.
struct Blend {
    current: std::vec::IntoIter<Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(current) = self.current.next() else {
            return param;
        };
        let decay = self.decay;
        param.map(|t| {
            let dims = t.dims();
            t.mul_scalar(decay) + current.reshape(dims).mul_scalar(1.0 - decay)
        })
    }
}

/// One step of an exponential moving average of weights (and running statistics):
/// `decay · average + (1 − decay) · current`, tensor by tensor. Both must be the same network
/// on the same device; `average` keeps its metadata.
pub fn blend(average: ApeModel, current: &ApeModel, decay: f64) -> Result<ApeModel, AverageError> {
    if average.meta.net != current.meta.net {
        return Err(AverageError::Mismatch {
            index: 1,
            detail: "a different network config".to_owned(),
        });
    }
    let mut collect = Collect(Vec::new());
    current.net.visit(&mut collect);
    let mut mapper = Blend {
        current: collect.0.into_iter(),
        decay,
    };
    Ok(ApeModel {
        net: average.net.map(&mut mapper),
        meta: average.meta,
        id: average.id,
    })
}

/// The mean of `models`' weights and running statistics, with the first model's metadata.
/// All must be the same network (config, input spacing, HU window).
pub fn average(mut models: Vec<ApeModel>) -> Result<ApeModel, AverageError> {
    if models.is_empty() {
        return Err(AverageError::Empty);
    }
    let first = models.remove(0);
    let collect = |m: &ApeModel| {
        let mut c = Collect(Vec::new());
        m.net.visit(&mut c);
        c.0
    };
    let mut sums = collect(&first);
    for (i, model) in models.iter().enumerate() {
        let index = i + 1;
        let same = model.meta.net == first.meta.net
            && model.meta.input_spacing_mm == first.meta.input_spacing_mm
            && model.meta.hu_window == first.meta.hu_window;
        if !same {
            return Err(AverageError::Mismatch {
                index,
                detail: "different config, input spacing or HU window".to_owned(),
            });
        }
        let tensors = collect(model);
        if tensors.len() != sums.len()
            || tensors.iter().zip(&sums).any(|(a, b)| a.dims() != b.dims())
        {
            return Err(AverageError::Mismatch {
                index,
                detail: "different tensors".to_owned(),
            });
        }
        sums = sums.into_iter().zip(tensors).map(|(s, t)| s + t).collect();
    }
    let mut replace = Replace {
        sums: sums.into_iter(),
        count: models.len() + 1,
    };
    Ok(ApeModel::new(first.net.map(&mut replace), first.meta))
}

/// The model with every batch norm's running statistics replaced by the mean of its batch
/// statistics over `inputs`: each a batch of model inputs `[batch, 1, z, y, x]`, windowed to
/// [0, 1], each side a multiple of the network's size multiple. `device` runs the passes
/// (forward only, training-mode norms). Returns the model unchanged if `inputs` is empty.
pub fn recalibrate_norms(
    model: ApeModel,
    inputs: impl IntoIterator<Item = TensorData>,
    device: &Device,
) -> ApeModel {
    let autodiff = device.clone().autodiff();
    // Parameters untracked: a forward pass without a backward one then leaves no graph
    // behind (tracked, every batch's activations stayed alive: ~100 MB a batch).
    let mut net = model.net.to_device(&autodiff).train().no_grad();
    let mut seen = 0usize;
    for data in inputs {
        // The first pass replaces the statistics, the t-th weighs 1/t: an equal-weight mean.
        seen += 1;
        net = net.with_norm_momentum(1.0 / seen as f64);
        drop(net.forward(Tensor::<5>::from_data(data, &autodiff)));
    }
    ApeModel::new(net.with_norm_momentum(0.1).valid(), model.meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::backend;

    fn values(m: &ApeModel) -> Vec<Vec<f32>> {
        m.net
            .named_tensors()
            .into_iter()
            .map(|t| t.values)
            .collect()
    }

    #[test]
    fn the_average_is_the_mean_of_every_tensor() {
        let device = backend::cpu().device;
        let meta = ApeModel::bundled(&device).expect("bundled").meta;
        let a = ApeModel::initialised(meta.clone(), 1, &device);
        let b = ApeModel::initialised(meta.clone(), 2, &device);
        let (va, vb) = (values(&a), values(&b));
        let mean = average(vec![a, b]).expect("same network");
        for ((m, x), y) in values(&mean).iter().zip(&va).zip(&vb) {
            for ((m, x), y) in m.iter().zip(x).zip(y) {
                assert!((m - (x + y) / 2.0).abs() < 1e-6);
            }
        }
        assert_ne!(va, values(&mean));
    }

    #[test]
    fn a_moving_average_step_weighs_every_tensor_by_the_decay() {
        let device = backend::cpu().device;
        let meta = ApeModel::bundled(&device).expect("bundled").meta;
        let a = ApeModel::initialised(meta.clone(), 1, &device);
        let b = ApeModel::initialised(meta.clone(), 2, &device);
        let (va, vb) = (values(&a), values(&b));
        let blended = blend(a, &b, 0.9).expect("same network");
        for ((m, x), y) in values(&blended).iter().zip(&va).zip(&vb) {
            for ((m, x), y) in m.iter().zip(x).zip(y) {
                assert!((m - (0.9 * x + 0.1 * y)).abs() < 1e-6);
            }
        }
        let mut other = meta;
        other.net.widths = vec![8, 16, 32];
        let c = ApeModel::initialised(other, 3, &device);
        assert!(blend(c, &b, 0.9).is_err());
    }

    #[test]
    fn recalibrated_statistics_are_those_of_the_inputs() {
        let device = backend::cpu().device;
        let model = ApeModel::bundled(&device).expect("bundled");
        let stats = |m: &ApeModel| {
            m.net
                .named_tensors()
                .into_iter()
                .filter(|t| t.name == "stem.norm.running_mean")
                .flat_map(|t| t.values)
                .collect::<Vec<f32>>()
        };
        let before = stats(&model);
        // A constant input: the stem's batch mean is its convolution of that constant.
        let input = || TensorData::new(vec![0.5f32; 16 * 16 * 16], [1, 1, 16, 16, 16]);
        let once = recalibrate_norms(model, [input()], &device);
        let after_one = stats(&once);
        assert_ne!(before, after_one);
        // Two identical inputs average to the same statistics as one.
        let model = ApeModel::bundled(&device).expect("bundled");
        let twice = recalibrate_norms(model, [input(), input()], &device);
        for (a, b) in after_one.iter().zip(stats(&twice)) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn different_networks_are_refused() {
        let device = backend::cpu().device;
        let meta = ApeModel::bundled(&device).expect("bundled").meta;
        let mut other = meta.clone();
        other.net.widths = vec![8, 16, 32];
        let a = ApeModel::initialised(meta, 1, &device);
        let b = ApeModel::initialised(other, 1, &device);
        assert!(matches!(
            average(vec![a, b]),
            Err(AverageError::Mismatch { index: 1, .. })
        ));
        assert!(matches!(average(Vec::new()), Err(AverageError::Empty)));
    }
}
