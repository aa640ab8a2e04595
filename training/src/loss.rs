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

/// How a step's positive positions become target units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PositionScale {
    /// Each axis divided by the batch's own standard deviation (method.md), or all axes by one
    /// (`isotropic`: the root mean variance). The unit then changes from step to step with how
    /// far the step's crops happen to lie apart (along S–I 47 to 191 mm on our scans).
    Batch { isotropic: bool },
    /// Each axis divided by a fixed length, mm: the same unit at every step and in every scan.
    Fixed(DVec3),
}

impl PositionScale {
    /// The per-axis divisors for these points.
    fn divisors(self, centred: &[DVec3]) -> DVec3 {
        match self {
            Self::Fixed(scale) => scale.max(DVec3::splat(1e-6)),
            Self::Batch { isotropic } => {
                let n = centred.len().max(1) as f64;
                let var = centred.iter().fold(DVec3::ZERO, |a, p| a + *p * *p) / n;
                let var = var.max(DVec3::splat(1e-6));
                let var = if isotropic {
                    DVec3::splat((var.x + var.y + var.z) / 3.0)
                } else {
                    var
                };
                DVec3::new(var.x.sqrt(), var.y.sqrt(), var.z.sqrt())
            }
        }
    }
}

/// The points less their mean.
fn centred(points: &[DVec3]) -> Vec<DVec3> {
    let n = points.len().max(1) as f64;
    let mean = points.iter().fold(DVec3::ZERO, |a, p| a + *p) / n;
    points.iter().map(|p| *p - mean).collect()
}

/// Positions centred on the batch's mean, divided per axis as `scale` says and weighted by
/// `weights`: the target distances are the distances between these.
pub fn target_positions(points: &[DVec3], weights: DVec3, scale: PositionScale) -> Vec<DVec3> {
    let centred = centred(points);
    let factor = weights / scale.divisors(&centred);
    centred.iter().map(|p| *p * factor).collect()
}

/// Target distances between the [`target_positions`]: `[N, N]`.
pub fn target_distances(
    points: &[DVec3],
    weights: DVec3,
    scale: PositionScale,
    device: &Device,
) -> Tensor<2> {
    let n = points.len();
    let normalised = target_positions(points, weights, scale);
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
    pub fn of(points: &[DVec3], weights: DVec3, scale: PositionScale, device: &Device) -> Self {
        if crate::fused::applies(device) {
            let data: Vec<f32> = target_positions(points, weights, scale)
                .iter()
                .flat_map(|p| p.to_array().map(|v| v as f32))
                .collect();
            Self::Positions(Tensor::from_data(
                TensorData::new(data, [points.len(), 3]),
                device,
            ))
        } else {
            Self::Distances(target_distances(points, weights, scale, device))
        }
    }
}

/// Positions for the axis anchor, unweighted: centred, and divided per axis by the batch's
/// standard deviation, or by the fixed lengths of a [`PositionScale::Fixed`]: `[N, 3]`,
/// channel c = world axis c (R, A, S).
pub fn normalised_positions(points: &[DVec3], scale: PositionScale, device: &Device) -> Tensor<2> {
    let scale = match scale {
        PositionScale::Batch { .. } => PositionScale::Batch { isotropic: false },
        fixed => fixed,
    };
    let data: Vec<f32> = target_positions(points, DVec3::ONE, scale)
        .iter()
        .flat_map(|p| p.to_array().map(|v| v as f32))
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
    /// What the distance term and the axis anchor weigh at this step, over the weights above
    /// (1; [`step_weight`] to give every step the same weight under a fixed position scale).
    pub targets: f64,
}

/// The weight that makes a step's target terms weigh as under the batch's own scale: the batch
/// scale's mean squared target position (each axis unit variance, so `|weights|²`) over these
/// targets'. 1 under [`PositionScale::Batch`]; under a fixed scale, a step whose crops lie far
/// apart would otherwise weigh as much more as its targets are longer.
pub fn step_weight(points: &[DVec3], weights: DVec3, scale: PositionScale) -> f64 {
    let targets = target_positions(points, weights, scale);
    let n = targets.len().max(1) as f64;
    let mean_square = targets.iter().map(|t| t.length_squared()).sum::<f64>() / n;
    if mean_square > 1e-12 {
        weights.length_squared() / mean_square
    } else {
        1.0
    }
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
    let mut total = distance.clone().mul_scalar(weights.targets)
        + equivariance.clone().mul_scalar(weights.equivariance);
    let axis = match positions {
        Some(positions) if weights.axis > 0.0 => {
            let axis = match weights.axis_kind {
                AxisAnchor::Difference => axis_anchor(a, a_plus, positions),
                AxisAnchor::Correlation => axis_correlation(a, a_plus, positions),
            };
            total = total + axis.clone().mul_scalar(weights.axis * weights.targets);
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
        target_distances(
            &points,
            DVec3::ONE,
            PositionScale::Batch { isotropic },
            &device,
        )
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
        let p = normalised_positions(&points, PositionScale::Batch { isotropic: false }, &device);
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

    #[test]
    fn fixed_scale_targets_do_not_depend_on_the_rest_of_the_batch() {
        let scale = PositionScale::Fixed(DVec3::new(80.0, 60.0, 110.0));
        let a = DVec3::new(10.0, -20.0, 30.0);
        let b = DVec3::new(50.0, 10.0, -80.0);
        let expected = ((b - a) / DVec3::new(80.0, 60.0, 110.0)).length();
        let near = [a, b, DVec3::new(20.0, 0.0, 0.0)];
        let far = [a, b, DVec3::new(400.0, -300.0, 900.0), DVec3::ZERO];
        let gap = |points: &[DVec3], scale| {
            let t = target_positions(points, DVec3::ONE, scale);
            (t[1] - t[0]).length()
        };
        assert!((gap(&near, scale) - expected).abs() < 1e-12);
        assert!((gap(&far, scale) - expected).abs() < 1e-12);
        // The batch's own scale moves the same two points' target with the other points.
        let batch = PositionScale::Batch { isotropic: false };
        assert!(gap(&near, batch) > 1.5 * gap(&far, batch));
        // The anchor's positions use the same fixed lengths, unweighted.
        let device = Default::default();
        let p = normalised_positions(&near, scale, &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let d = DVec3::new(
            (p[3] - p[0]) as f64,
            (p[4] - p[1]) as f64,
            (p[5] - p[2]) as f64,
        );
        assert!((d.length() - expected).abs() < 1e-6, "{d}");
        // Weights still weigh the axes.
        let weighted = target_positions(&near, DVec3::new(1.0, 1.0, 2.0), scale);
        let dz = (weighted[1] - weighted[0]).z;
        assert!((dz - 2.0 * (b - a).z / 110.0).abs() < 1e-12);
    }

    #[test]
    fn the_step_weight_is_one_under_the_batch_scale_and_evens_out_fixed_steps() {
        let weights = DVec3::new(1.0, 1.0, 2.0);
        let near: Vec<DVec3> = (0..20)
            .map(|i| DVec3::new(i as f64, (i * 7 % 5) as f64, (i * 3 % 11) as f64 * 4.0))
            .collect();
        let far: Vec<DVec3> = near.iter().map(|p| *p * 3.0).collect();
        let batch = PositionScale::Batch { isotropic: false };
        assert!((step_weight(&near, weights, batch) - 1.0).abs() < 1e-9);
        assert!((step_weight(&far, weights, batch) - 1.0).abs() < 1e-9);
        // A fixed scale: crops three times as far apart give targets three times as long, so
        // their squared terms weigh 9 times more; the step weight takes exactly that back.
        let fixed = PositionScale::Fixed(DVec3::new(80.0, 60.0, 110.0));
        let (w_near, w_far) = (
            step_weight(&near, weights, fixed),
            step_weight(&far, weights, fixed),
        );
        assert!((w_near / w_far - 9.0).abs() < 1e-9, "{w_near} {w_far}");
        // Weighted, each step's mean squared target is the batch scale's.
        let t = target_positions(&far, weights, fixed);
        let mean_square = t.iter().map(|p| p.length_squared()).sum::<f64>() / t.len() as f64;
        assert!((mean_square * w_far - weights.length_squared()).abs() < 1e-9);
    }
}
