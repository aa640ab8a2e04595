//! The APE loss (method.md): squared differences between embedding distances and normalised
//! physical distances, plus λ times the squared distance within each positive pair.

use burn::tensor::{Device, Tensor, TensorData};
use glam::DVec3;
use rayon::prelude::*;

pub use crate::config::AxisAnchor;

/// Pairwise Euclidean distances: `[n, d] × [m, d] → [n, m]`.
pub fn pairwise_distances(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let a2 = a.clone().powi_scalar(2).sum_dim(1); // [n, 1]
    let b2 = b.clone().powi_scalar(2).sum_dim(1).transpose(); // [1, m]
    let cross = a.matmul(b.transpose()); // [n, m]
    (a2 + b2 - cross.mul_scalar(2.0)).clamp_min(1e-9).sqrt()
}

/// Positions normalised to zero mean and unit standard deviation over the batch, per axis
/// (method.md) or with one scale for all axes (`isotropic`: the root mean variance), with the
/// axes weighted by `weights`: the target distances are the distances between these.
pub fn target_positions(points: &[DVec3], weights: DVec3, isotropic: bool) -> Vec<DVec3> {
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
    points.iter().map(|p| (*p - mean) * scale).collect()
}

/// Target distances between the [`target_positions`]: `[N, N]`.
pub fn target_distances(
    points: &[DVec3],
    weights: DVec3,
    isotropic: bool,
    device: &Device,
) -> Tensor<2> {
    let n = points.len();
    let normalised = target_positions(points, weights, isotropic);
    // N² distances (16 M at 8 pairs of 512 positives): rows in parallel.
    let mut d = vec![0.0f32; n * n];
    d.par_chunks_mut(n.max(1))
        .zip(&normalised)
        .for_each(|(row, p)| {
            for (v, q) in row.iter_mut().zip(&normalised) {
                *v = (*p - *q).length() as f32;
            }
        });
    Tensor::from_data(TensorData::new(d, [n, n]), device)
}

/// What the distance term compares the embedding distances with.
#[derive(Debug)]
pub enum Targets {
    /// The `[N, N]` target distances ([`target_distances`]).
    Distances(Tensor<2>),
    /// The `[N, 3]` [`target_positions`], for the fused term on the CPU backend
    /// ([`crate::fused`]), which computes each distance where it needs it.
    Positions(Tensor<2>),
}

impl Targets {
    /// The targets of a step's positive points: positions where the fused term applies on
    /// `device`, else the distance matrix.
    pub fn of(points: &[DVec3], weights: DVec3, isotropic: bool, device: &Device) -> Self {
        if crate::fused::applies(device) {
            let data: Vec<f32> = target_positions(points, weights, isotropic)
                .iter()
                .flat_map(|p| p.to_array().map(|v| v as f32))
                .collect();
            Self::Positions(Tensor::from_data(
                TensorData::new(data, [points.len(), 3]),
                device,
            ))
        } else {
            Self::Distances(target_distances(points, weights, isotropic, device))
        }
    }
}

/// Positions normalised to zero mean and unit standard deviation per axis over the batch,
/// unweighted: `[N, 3]`, channel c = world axis c (R, A, S).
pub fn normalised_positions(points: &[DVec3], device: &Device) -> Tensor<2> {
    let n = points.len().max(1);
    let mean = points.iter().fold(DVec3::ZERO, |a, p| a + *p) / n as f64;
    let var = points
        .iter()
        .fold(DVec3::ZERO, |a, p| a + (*p - mean) * (*p - mean))
        / n as f64;
    let std = var.max(DVec3::splat(1e-6)).to_array().map(f64::sqrt);
    let data: Vec<f32> = points
        .iter()
        .flat_map(|p| {
            let q = (*p - mean).to_array();
            [0, 1, 2].map(|c| (q[c] / std[c]) as f32)
        })
        .collect();
    Tensor::from_data(TensorData::new(data, [points.len(), 3]), device)
}

/// The axis anchor: mean over all i, j of ‖(a_i − a_j⁺) − (p̂_i − p̂_j)‖², i.e. embedding
/// *differences* equal normalised position differences, channel by channel. The distance loss
/// alone is invariant to rotations and mirror images of the embedding, and its small-network,
/// few-step optimum folds one axis (left and right flanks mapped together, or S–I flattened);
/// fixing the embedding's orientation to the scan's RAS axes makes every fold cost loss. No
/// labels: it uses the same physical positions as the distance term.
/// Computed without the N×N matrix: with u = a − p̂ and v = a⁺ − p̂, the mean of ‖u_i − v_j‖²
/// is var(u) + var(v) + ‖ū − v̄‖².
pub fn axis_anchor(a: Tensor<2>, a_plus: Tensor<2>, positions: Tensor<2>) -> Tensor<1> {
    let u = a - positions.clone();
    let v = a_plus - positions;
    let u_mean = u.clone().mean_dim(0); // [1, 3]
    let v_mean = v.clone().mean_dim(0);
    let u_var = (u - u_mean.clone()).powi_scalar(2).sum_dim(1).mean();
    let v_var = (v - v_mean.clone()).powi_scalar(2).sum_dim(1).mean();
    let shift = (u_mean - v_mean).powi_scalar(2).sum();
    u_var + v_var + shift
}

/// The scale-free axis anchor: for each channel c, 1 − the Pearson correlation between the
/// embedding's channel c and the position along world axis c, over both crops' positives. It
/// fixes only the orientation (a fold or a mirror costs up to 2 per channel) and leaves the
/// scale to the distance term, with which the difference anchor can disagree when crops of
/// different sizes alternate (each batch normalises positions by its own spread).
pub fn axis_correlation(a: Tensor<2>, a_plus: Tensor<2>, positions: Tensor<2>) -> Tensor<1> {
    let e = Tensor::cat(vec![a, a_plus], 0); // [2N, 3]
    let p = Tensor::cat(vec![positions.clone(), positions], 0); // [2N, 3]
    let e = e.clone() - e.mean_dim(0);
    let p = p.clone() - p.mean_dim(0);
    let covariance = (e.clone() * p.clone()).mean_dim(0); // [1, 3]
    let spread = (e.powi_scalar(2).mean_dim(0) * p.powi_scalar(2).mean_dim(0))
        .clamp_min(1e-12)
        .sqrt();
    let correlation = covariance / spread;
    correlation.neg().add_scalar(1.0).mean()
}

/// The terms of the loss.
#[derive(Debug)]
pub struct LossTerms {
    pub total: Tensor<1>,
    pub distance: Tensor<1>,
    pub equivariance: Tensor<1>,
    /// The axis anchor term (zero tensor when its weight is zero).
    pub axis: Tensor<1>,
}

/// What each term weighs in the total (the distance term weighs 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossWeights {
    /// λ of the equivariance term (0 for APE-Naïve and APE-Aug).
    pub equivariance: f64,
    /// μ of the axis anchor (0: not computed) and which anchor it is.
    pub axis: f64,
    pub axis_kind: AxisAnchor,
}

/// `a`, `a_plus`: `[N, 3]` embeddings of the positive pairs; `target`: the targets; `positions`:
/// `[N, 3]` normalised positions for the axis anchor (needed when its weight is not 0).
pub fn ape_loss(
    a: Tensor<2>,
    a_plus: Tensor<2>,
    target: Targets,
    weights: LossWeights,
    positions: Option<Tensor<2>>,
) -> LossTerms {
    let distance = match target {
        Targets::Positions(p) => crate::fused::distance_term(a.clone(), a_plus.clone(), p),
        Targets::Distances(target) => {
            let predicted = pairwise_distances(a.clone(), a_plus.clone());
            (predicted - target).powi_scalar(2).mean()
        }
    };
    let equivariance = (a.clone() - a_plus.clone())
        .powi_scalar(2)
        .sum_dim(1)
        .mean();
    let mut total = distance.clone() + equivariance.clone().mul_scalar(weights.equivariance);
    let axis = match positions {
        Some(positions) if weights.axis > 0.0 => {
            let axis = match weights.axis_kind {
                AxisAnchor::Difference => axis_anchor(a, a_plus, positions),
                AxisAnchor::Correlation => axis_correlation(a, a_plus, positions),
            };
            total = total + axis.clone().mul_scalar(weights.axis);
            axis
        }
        _ => distance.clone().mul_scalar(0.0),
    };
    LossTerms {
        total,
        distance,
        equivariance,
        axis,
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

    fn tensor(rows: &[[f32; 3]]) -> Tensor<2> {
        let device = ape::model::backend::cpu().device;
        let data: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(data, [rows.len(), 3]), &device)
    }

    fn value(t: Tensor<1>) -> f32 {
        t.into_data().try_to_vec::<f32>().unwrap()[0]
    }

    /// Four positions spread over all three axes, normalised, as a tensor and as rows.
    fn four_positions() -> (Tensor<2>, Vec<[f32; 3]>) {
        let points = [
            DVec3::new(-100.0, 0.0, 10.0),
            DVec3::new(100.0, 20.0, -10.0),
            DVec3::new(0.0, -20.0, 300.0),
            DVec3::new(50.0, 0.0, -300.0),
        ];
        let device = ape::model::backend::cpu().device;
        let p = normalised_positions(&points, &device);
        let rows = p
            .clone()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
            .chunks(3)
            .map(|c| [c[0], c[1], c[2]])
            .collect();
        (p, rows)
    }

    #[test]
    fn axis_anchor_is_zero_up_to_translation_and_punishes_a_mirror() {
        let (p, rows) = four_positions();
        // Unit variance per axis.
        for c in 0..3 {
            let var: f32 = rows.iter().map(|r| r[c] * r[c]).sum::<f32>() / 4.0;
            assert!((var - 1.0).abs() < 1e-4, "{var}");
        }
        // The embedding = positions + any constant: no loss.
        let shifted: Vec<[f32; 3]> = rows
            .iter()
            .map(|r| [r[0] + 5.0, r[1] - 1.0, r[2]])
            .collect();
        let zero = value(axis_anchor(tensor(&shifted), tensor(&shifted), p.clone()));
        assert!(zero.abs() < 1e-5, "{zero}");
        // The R–L mirror image keeps every distance but costs 4·var(x) = 4 (twice: a and a⁺).
        let mirrored: Vec<[f32; 3]> = rows.iter().map(|r| [-r[0], r[1], r[2]]).collect();
        let cost = value(axis_anchor(tensor(&mirrored), tensor(&mirrored), p.clone()));
        assert!((cost - 8.0).abs() < 1e-3, "{cost}");
        // Brute force over all pairs agrees.
        let a = tensor(&mirrored);
        let brute: f32 = (0..4)
            .flat_map(|i| (0..4).map(move |j| (i, j)))
            .map(|(i, j)| {
                (0..3)
                    .map(|c| {
                        let d = (mirrored[i][c] - mirrored[j][c]) - (rows[i][c] - rows[j][c]);
                        d * d
                    })
                    .sum::<f32>()
            })
            .sum::<f32>()
            / 16.0;
        assert!((value(axis_anchor(a.clone(), a, p)) - brute).abs() < 1e-3);
    }

    #[test]
    fn the_correlation_anchor_ignores_scale_and_shift_but_not_a_mirror() {
        let (p, rows) = four_positions();
        let scaled: Vec<[f32; 3]> = rows
            .iter()
            .map(|r| [3.0 * r[0] + 1.0, 0.5 * r[1], r[2] - 2.0])
            .collect();
        let aligned = value(axis_correlation(
            tensor(&scaled),
            tensor(&scaled),
            p.clone(),
        ));
        assert!(aligned.abs() < 1e-4, "{aligned}");
        let mirrored: Vec<[f32; 3]> = rows.iter().map(|r| [-r[0], r[1], r[2]]).collect();
        let cost = value(axis_correlation(tensor(&mirrored), tensor(&mirrored), p));
        assert!((cost - 2.0 / 3.0).abs() < 1e-3, "{cost}");
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
