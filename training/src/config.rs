//! The training configuration, saved beside the checkpoints.

use burn::config::Config;

/// Which loss of method.md.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Variant {
    /// No paired crops: distances between embeddings of the same crops (APE-Naïve).
    Naive,
    /// Paired, augmented crops, λ = 0 (APE-Aug).
    Aug,
    /// Paired, augmented crops, λ > 0 (APE-Equiv, the best).
    Equiv,
}

/// Which axis anchor `axis_weight` weighs (see `loss::axis_anchor`, `loss::axis_correlation`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum AxisAnchor {
    /// Embedding differences equal normalised position differences (fixes scale too).
    Difference,
    /// Each channel correlates with its world axis (orientation only).
    Correlation,
}

/// One crop regime: crop spacings and axis weights of the target distances. With several
/// regimes in a config, step `s` uses regime `s mod n`, so that every few steps the network sees
/// both wide crops (both flanks in view: R–L) and tall crops (S–I) instead of one after the other.
#[derive(Config, Debug, PartialEq)]
pub struct Regime {
    /// In-plane crop spacing range, mm.
    pub spacing_xy: [f64; 2],
    /// Through-plane crop spacing range, mm.
    pub spacing_z: [f64; 2],
    #[config(default = 1.0)]
    pub x_weight: f64,
    #[config(default = 1.0)]
    pub z_weight: f64,
}

/// How positions become target distances (method.md step 5 normalises each axis to unit
/// variance over the batch; `Isotropic` divides all axes by one scale, so that target distances
/// stay proportional to physical distances and no axis is stretched or squeezed per batch).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Normalise {
    PerAxis,
    Isotropic,
}

#[derive(Config, Debug)]
pub struct TrainConfig {
    pub variant: Variant,
    #[config(default = 7)]
    pub seed: u64,
    #[config(default = 3000)]
    pub steps: usize,
    /// Crop pairs per step, all from one scan.
    #[config(default = 4)]
    pub pairs: usize,
    /// Positive voxel pairs per crop pair.
    #[config(default = 256)]
    pub positives_per_pair: usize,
    /// Network input per crop, voxels (x, y, z).
    #[config(default = "[96, 96, 64]")]
    pub crop_size: [usize; 3],
    /// In-plane crop spacing range, mm.
    #[config(default = "[1.5, 3.0]")]
    pub spacing_xy: [f64; 2],
    /// Through-plane crop spacing range, mm.
    #[config(default = "[2.5, 5.0]")]
    pub spacing_z: [f64; 2],
    /// λ of the equivariance term (Equiv only).
    #[config(default = 1.0)]
    pub lambda: f64,
    #[config(default = 3e-4)]
    pub learning_rate: f64,
    #[config(default = 1e-6)]
    pub weight_decay: f64,
    #[config(default = 1.0)]
    pub grad_clip_norm: f32,
    #[config(default = 100)]
    pub warmup_steps: usize,
    /// Spread the crop-pair centres of a step over the body's S–I range (one per stratum).
    #[config(default = true)]
    pub spread_z: bool,
    /// S–I curriculum: for the first `z_phase` of the steps, weight z by `z_weight` in the target
    /// distances and use tall crops (`z_phase_spacing_z`); then back to weight 1 and normal crops.
    #[config(default = 0.3)]
    pub z_phase: f64,
    #[config(default = 2.0)]
    pub z_weight: f64,
    #[config(default = "[5.0, 8.0]")]
    pub z_phase_spacing_z: [f64; 2],
    /// Weight of the R–L axis in the target distances (all steps).
    #[config(default = 1.0)]
    pub x_weight: f64,
    #[config(default = "Normalise::PerAxis")]
    pub normalise: Normalise,
    /// Weight μ of the axis anchor (`loss::axis_anchor`): embedding differences equal
    /// normalised RAS position differences. 0 = method.md's loss.
    #[config(default = 0.0)]
    pub axis_weight: f64,
    #[config(default = "AxisAnchor::Difference")]
    pub axis_anchor: AxisAnchor,
    /// Alternating crop regimes; when not empty they replace the spacings, weights and z phase.
    #[config(default = "Vec::new()")]
    pub regimes: Vec<Regime>,
    #[config(default = true)]
    pub augment: bool,
    #[config(default = 100)]
    pub checkpoint_every: usize,
    /// Evaluate retrieval on the held-out labelled scans every this many steps (0: never).
    #[config(default = 250)]
    pub eval_every: usize,
    /// Keep a copy of the model as `model-<step>.apemodel` every this many steps (0: never), so
    /// that a run made where no labelled scans are (a lent GPU) can be evaluated afterwards.
    #[config(default = 0)]
    pub keep_every: usize,
    /// Of each pair's positives, how many are drawn anywhere in the overlap (air, table) rather
    /// than inside the body, as the reference code does, so that the embedding means a
    /// position outside the body too. 0: body voxels only (method.md).
    #[config(default = 0)]
    pub outside_per_pair: usize,
    /// AdamW's ε (burn's default 1e-5; the reference code trains with 1e-3).
    #[config(default = 1e-5)]
    pub adam_epsilon: f64,
    /// Place every crop inside the scan (along an axis where the crop is the longer, centred
    /// on the scan), as the reference code does, instead of anywhere around the shared voxel.
    #[config(default = false)]
    pub crops_inside: bool,
    /// Decay of an exponential moving average of the weights, kept beside the trained ones,
    /// checkpointed, and saved as `ema-<step>.apemodel` with each kept copy (0: none).
    #[config(default = 0.0)]
    pub ema_decay: f64,
    /// Context levels below the network's deepest, each with a head, as
    /// `ApeNetConfig::context_widths` (e.g. `[64]`: one more level, at 1/32). A run started
    /// with `--init` from a model without them grows it (the same function at step 0).
    pub context_widths: Option<Vec<usize>>,
    /// Of each step's pairs, how many take their second crop from another scan, at the points
    /// the run's teacher (`teacher.apemodel` in the run folder: the model the run started
    /// from) carries the first crop's to ([`crate::cross`]). 0: none (method.md).
    #[config(default = 0)]
    pub cross_pairs: usize,
    /// Divide the positions of the target distances (and the axis anchor's) by these fixed
    /// lengths, mm (x, y, z), instead of by each step's spread (method.md), so that the target
    /// unit is the same at every step and in every scan. `normalise` then has no effect.
    pub position_scale_mm: Option<[f64; 3]>,
    /// With `position_scale_mm`: multiply those lengths by each scan's girth relative to the
    /// training scans' mean ([`crate::data::TrainScan::girth_mm`]), so that one target unit is
    /// the same fraction of every patient: a per-scan position scale.
    #[config(default = false)]
    pub girth_position_scale: bool,
    /// Weigh each step's distance term and axis anchor so that its targets count as under the
    /// batch's own scale ([`crate::loss::step_weight`]; no effect without `position_scale_mm`):
    /// a fixed unit without the far-apart steps weighing more.
    #[config(default = false)]
    pub equal_step_weight: bool,
    /// What masked blocks are filled with. method.md's 0 is, in the model's window, fat or air
    /// (≤ −125 HU): fake anatomy. A value outside the window's [0, 1] (such as −1) is one no
    /// scan has, so the network can tell a masked block from tissue.
    #[config(default = 0.0)]
    pub mask_value: f32,
    /// Give the network a mask channel (`ApeNetConfig::mask_channel`): the stem reads, beside
    /// the image, 1 where a voxel holds `mask_value` (which must then lie outside [0, 1]) and 0
    /// elsewhere, as the reference code's mask channel. A run started with `--init` from a
    /// model without one grows it (zero weights: the same function at step 0).
    #[config(default = false)]
    pub mask_channel: bool,
    /// Train with the output norm fixed to its running statistics, as inference uses it,
    /// instead of the statistics of each step's crops (all of one scan): the embedding's scale
    /// and offset are then the network's own in training and inference alike.
    #[config(default = false)]
    pub fixed_output_norm: bool,
    /// The network's output as the reference code's: a sigmoid times a learned scale per
    /// channel starting at this value (`ApeNetConfig::output_scale`), the same in training and
    /// inference, instead of the batch norm over each step's crops (method.md). `None`: the
    /// batch norm.
    pub output_scale: Option<f32>,
    /// Layer norms over channels after every convolution, as the reference code's blocks
    /// (`ape::model::BlockNorm::Layer`), instead of batch norms: the same function in training
    /// and inference.
    #[config(default = false)]
    pub layer_norm: bool,
}

impl TrainConfig {
    /// `base` with this run's network options: context levels, mask channel, output and block
    /// norm.
    pub fn network(&self, base: ape::model::ApeNetConfig) -> ape::model::ApeNetConfig {
        base.with_context_widths(self.context_widths.clone())
            .with_mask_channel(self.mask_channel.then_some(self.mask_value))
            .with_output_scale(self.output_scale)
            .with_block_norm(self.layer_norm.then_some(ape::model::BlockNorm::Layer))
    }

    /// How the positions of a step's positives become target units, in a scan of this relative
    /// girth ([`crate::data::Batch::girth`]).
    pub fn position_scale(&self, girth: f64) -> crate::loss::PositionScale {
        match self.position_scale_mm {
            Some(mm) => {
                let factor = if self.girth_position_scale {
                    girth
                } else {
                    1.0
                };
                crate::loss::PositionScale::Fixed(glam::DVec3::from_array(mm) * factor)
            }
            None => crate::loss::PositionScale::Batch {
                isotropic: self.normalise == Normalise::Isotropic,
            },
        }
    }

    /// Learning rate at a step: linear warm-up, then cosine decay to 5 % of the peak.
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        let peak = self.learning_rate;
        if step < self.warmup_steps {
            return peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
        peak * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
    }

    /// Reads a config file in which any field but `variant` may be left out: missing fields take
    /// their defaults, so that files written before a field existed still load.
    pub fn load_with_defaults(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Self::from_json_with_defaults(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// As [`Self::load_with_defaults`], from JSON text.
    pub fn from_json_with_defaults(text: &str) -> anyhow::Result<Self> {
        let given: serde_json::Value = serde_json::from_str(text)?;
        let variant: Variant = serde_json::from_value(
            given
                .get("variant")
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no `variant` (Naive, Aug or Equiv)"))?,
        )?;
        let mut merged = serde_json::to_value(TrainConfig::new(variant))?;
        if let (Some(base), Some(fields)) = (merged.as_object_mut(), given.as_object()) {
            for (key, value) in fields {
                if !base.contains_key(key) {
                    anyhow::bail!("unknown field `{key}`");
                }
                base.insert(key.clone(), value.clone());
            }
        }
        Ok(serde_json::from_value(merged)?)
    }

    /// The loss terms' weights: λ only for APE-Equiv, the axis anchor as configured.
    pub fn loss_weights(&self) -> crate::loss::LossWeights {
        crate::loss::LossWeights {
            equivariance: if self.variant == Variant::Equiv {
                self.lambda
            } else {
                0.0
            },
            axis: self.axis_weight,
            axis_kind: self.axis_anchor,
            targets: 1.0,
        }
    }

    /// The crop regime of a step: from `regimes` when given, else from the spacings, weights and
    /// S–I curriculum phase.
    pub fn regime_at(&self, step: usize) -> Regime {
        if !self.regimes.is_empty() {
            return self.regimes[step % self.regimes.len()].clone();
        }
        let z_phase = self.in_z_phase(step);
        Regime {
            spacing_xy: self.spacing_xy,
            spacing_z: if z_phase {
                self.z_phase_spacing_z
            } else {
                self.spacing_z
            },
            x_weight: self.x_weight,
            z_weight: if z_phase { self.z_weight } else { 1.0 },
        }
    }

    /// Whether the S–I curriculum phase is on at a step.
    pub fn in_z_phase(&self, step: usize) -> bool {
        (step as f64) < self.z_phase * self.steps as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_may_leave_fields_out_but_not_misspell_them() {
        let c =
            TrainConfig::from_json_with_defaults(r#"{"variant": "Equiv", "steps": 12}"#).unwrap();
        assert_eq!(c.steps, 12);
        assert_eq!(c.normalise, Normalise::PerAxis);
        assert_eq!(c.pairs, TrainConfig::new(Variant::Equiv).pairs);
        let e = TrainConfig::from_json_with_defaults(r#"{"variant": "Equiv", "stpes": 1}"#);
        assert!(e.unwrap_err().to_string().contains("stpes"));
        assert!(TrainConfig::from_json_with_defaults(r#"{"steps": 1}"#).is_err());
        // Every config in training/configs loads.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            TrainConfig::load_with_defaults(&path).unwrap();
        }
    }

    #[test]
    fn regimes_alternate_by_step_and_replace_the_z_phase() {
        let wide = Regime::new([3.0, 4.5], [3.0, 6.0]).with_x_weight(1.5);
        let tall = Regime::new([1.5, 3.0], [5.0, 8.0]).with_z_weight(2.0);
        let config =
            TrainConfig::new(Variant::Equiv).with_regimes(vec![wide.clone(), tall.clone()]);
        assert_eq!(config.regime_at(0), wide);
        assert_eq!(config.regime_at(1), tall);
        assert_eq!(config.regime_at(7), tall);
        // Without regimes, the S–I phase decides.
        let config = TrainConfig::new(Variant::Equiv)
            .with_steps(10)
            .with_z_phase(0.5);
        assert_eq!(config.regime_at(0).z_weight, config.z_weight);
        assert_eq!(config.regime_at(0).spacing_z, config.z_phase_spacing_z);
        assert_eq!(config.regime_at(5).z_weight, 1.0);
        assert_eq!(config.regime_at(5).spacing_z, config.spacing_z);
    }
}
