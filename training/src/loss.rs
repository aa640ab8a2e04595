//! The APE loss (method.md): squared differences between embedding distances and normalised
//! physical distances, plus λ times the squared distance within each positive pair.

use burn::tensor::{Device, Tensor, TensorData};
use glam::DVec3;

/// Pairwise Euclidean distances: `[n, d] × [m, d] → [n, m]`.
pub fn pairwise_distances(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let a2 = a.clone().powi_scalar(2).sum_dim(1); // [n, 1]
    let b2 = b.clone().powi_scalar(2).sum_dim(1).transpose(); // [1, m]
    let cross = a.matmul(b.transpose()); // [n, m]
    (a2 + b2 - cross.mul_scalar(2.0)).clamp_min(1e-9).sqrt()
}

/// Target distances between positions normalised per axis to zero mean and unit standard
/// deviation over the batch, with the x and z axes weighted by `weights`.
pub fn target_distances(points: &[DVec3], weights: DVec3, device: &Device) -> Tensor<2> {
    let n = points.len();
    let mean = points.iter().fold(DVec3::ZERO, |a, p| a + *p) / n as f64;
    let var = points
        .iter()
        .fold(DVec3::ZERO, |a, p| a + (*p - mean) * (*p - mean))
        / n as f64;
    let var = var.max(DVec3::splat(1e-6));
    let std = DVec3::new(var.x.sqrt(), var.y.sqrt(), var.z.sqrt());
    let scale = weights / std;
    let normalised: Vec<DVec3> = points.iter().map(|p| (*p - mean) * scale).collect();
    let mut d = Vec::with_capacity(n * n);
    for p in &normalised {
        for q in &normalised {
            d.push((*p - *q).length() as f32);
        }
    }
    Tensor::from_data(TensorData::new(d, [n, n]), device)
}

/// The terms of the loss.
#[derive(Debug)]
pub struct LossTerms {
    pub total: Tensor<1>,
    pub distance: Tensor<1>,
    pub equivariance: Tensor<1>,
}

/// `a`, `a_plus`: `[N, 3]` embeddings of the positive pairs; `target`: `[N, N]`.
pub fn ape_loss(a: Tensor<2>, a_plus: Tensor<2>, target: Tensor<2>, lambda: f64) -> LossTerms {
    let predicted = pairwise_distances(a.clone(), a_plus.clone());
    let distance = (predicted - target).powi_scalar(2).mean();
    let equivariance = (a - a_plus).powi_scalar(2).sum_dim(1).mean();
    let total = distance.clone() + equivariance.clone().mul_scalar(lambda);
    LossTerms {
        total,
        distance,
        equivariance,
    }
}
