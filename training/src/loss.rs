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

/// Target distances between positions normalised to zero mean and unit standard deviation over
/// the batch, per axis (method.md) or with one scale for all axes (`isotropic`: the root mean
/// variance), with the axes weighted by `weights`.
pub fn target_distances(
    points: &[DVec3],
    weights: DVec3,
    isotropic: bool,
    device: &Device,
) -> Tensor<2> {
    let n = points.len();
    let mean = points.iter().fold(DVec3::ZERO, |a, p| a + *p) / n as f64;
    let var = points
        .iter()
        .fold(DVec3::ZERO, |a, p| a + (*p - mean) * (*p - mean))
        / n as f64;
    let var = var.max(DVec3::splat(1e-6));
    let var = if isotropic {
        DVec3::splat((var.x + var.y + var.z) / 3.0)
    } else {
        var
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn distances(isotropic: bool) -> Vec<f32> {
        let points = [
            DVec3::ZERO,
            DVec3::new(10.0, 0.0, 0.0),
            DVec3::new(0.0, 0.0, 30.0),
            DVec3::new(0.0, 5.0, 0.0),
        ];
        let device = ape::model::backend::cpu().device;
        target_distances(&points, DVec3::ONE, isotropic, &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default()
    }

    #[test]
    fn isotropic_targets_keep_physical_ratios_and_per_axis_ones_do_not() {
        let iso = distances(true);
        // Row 0: distances from the origin to the 10 mm (x) and 30 mm (z) points.
        assert!((iso[2] / iso[1] - 3.0).abs() < 1e-5, "{iso:?}");
        let per_axis = distances(false);
        assert!(
            (per_axis[2] / per_axis[1] - 3.0).abs() > 0.1,
            "{per_axis:?}"
        );
        // Symmetric, zero on the diagonal.
        assert!(iso[0].abs() < 1e-3 && (iso[1] - iso[4]).abs() < 1e-6);
    }
}
