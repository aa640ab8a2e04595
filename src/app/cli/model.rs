//! `ape model-info` and `ape model-init`.

use std::path::Path;
use std::process::ExitCode;

use ape::model::backend::cpu;
use ape::model::{ApeModel, ModelMeta};

use super::ModelArgs;

pub fn info(args: &ModelArgs) -> anyhow::Result<ExitCode> {
    let model = args.load_on(&cpu().device)?;
    let net = &model.meta.net;
    let patch = [96, 96, 64];
    say!("model        {}", model.meta.description);
    say!(
        "trained      {}",
        if model.meta.trained { "yes" } else { "no" }
    );
    say!(
        "widths       {:?}, {} convolutions per level",
        net.widths,
        net.convs_per_level
    );
    if net.has_level_heads() {
        say!(
            "context      levels of widths {:?} below them (to 1/{}), a head at every level",
            net.context(),
            net.size_multiple()
        );
    }
    if let Some(value) = net.mask_channel {
        say!(
            "mask channel a second stem input, 1 where training crops held {value} (masked blocks); zero at inference"
        );
    }
    say!(
        "parameters   {} learnable (+{} batch-norm running statistics)",
        net.parameter_count(),
        model.parameters().saturating_sub(net.parameter_count())
    );
    say!(
        "FLOPs        {:.2} G per 96×96×64 patch (forward)",
        net.flops(patch) as f64 / 1e9
    );
    say!(
        "receptive    ±{} voxels ({:.0} mm at {:.1} mm spacing)",
        net.receptive_radius(),
        net.receptive_radius() as f64 * model.meta.input_spacing_mm[0],
        model.meta.input_spacing_mm[0]
    );
    let s = model.meta.input_spacing_mm;
    say!(
        "input        {:.2} × {:.2} × {:.2} mm voxels",
        s[0],
        s[1],
        s[2]
    );
    say!(
        "HU window    {} … {} HU → [0, 1]",
        model.meta.hu_window.lower,
        model.meta.hu_window.upper
    );
    say!(
        "output       {} channels at 1/4 resolution",
        net.out_channels
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes a freshly initialised (untrained) model: the stand-in until trained weights exist.
pub fn init(seed: u64, output: &Path) -> anyhow::Result<ExitCode> {
    super::check_output_file(output, "the model file", &[])?;
    let meta = ModelMeta::fresh(format!(
        "untrained stand-in: fixed-seed initialisation (seed {seed})"
    ));
    let model = ApeModel::initialised(meta, seed, &cpu().device);
    model.save(output)?;
    say!(
        "wrote {} ({} parameters)",
        output.display(),
        model.parameters()
    );
    Ok(ExitCode::SUCCESS)
}

/// Rewrites a model file's description and held-out list, keeping its weights.
pub fn describe(
    input: &Path,
    output: &Path,
    description: Option<String>,
    held_out: Option<Vec<String>>,
    input_spacing: Option<Vec<f64>>,
) -> anyhow::Result<ExitCode> {
    let spacing = input_spacing
        .as_deref()
        .map(|s| ape::validate::spacing_mm("--input-spacing", s))
        .transpose()?;
    super::check_output_file(
        output,
        "the model file",
        &[ape::validate::Input::new("the input model", input)],
    )?;
    let mut model = ApeModel::load(input, &cpu().device)?;
    if let Some(d) = description {
        model.meta.description = d;
    }
    if let Some(h) = held_out {
        model.meta.held_out = h;
    }
    if let Some(s) = spacing {
        model = model.with_input_spacing(s)?;
    }
    model.save(output)?;
    say!("wrote {} ({})", output.display(), model.meta.description);
    Ok(ExitCode::SUCCESS)
}
