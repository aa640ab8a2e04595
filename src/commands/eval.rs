//! `ape eval --data DIR`: method.md's evaluation on a labelled cohort, with a report.

use std::path::PathBuf;
use std::process::ExitCode;

use ape::cache::MapCache;
use ape::cohort::labelled_cases;
use ape::evaluation::report::{ReportContext, write_report};
use ape::evaluation::{EvalOptions, EvalScan, evaluate};
use ape::labels::DatasetSidecar;
use ape::model::backend::{BackendChoice, select};

use super::model::load_model;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Folder of scans with label maps beside them (X.nii.gz + X_label.nii.gz; label names from
    /// its labels.json), e.g. ../shared/data/btcv.
    #[arg(long)]
    data: PathBuf,
    /// A model file instead of the bundled model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Support scans per few-shot box (method.md: 5).
    #[arg(long, default_value_t = 5)]
    shots: usize,
    /// Where to write report.md, results.json and the PNG figures.
    #[arg(long, default_value = "ape-eval-report")]
    out: PathBuf,
    /// Scans kept out of training, reported separately (default: the model's own list).
    #[arg(long, value_delimiter = ',')]
    held_out: Option<Vec<String>>,
    /// Where the network runs: auto (wgpu on a hardware GPU, else CPU), wgpu or cpu.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// Recompute every map even if it is cached.
    #[arg(long)]
    no_cache: bool,
}

pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let cases = labelled_cases(&args.data)?;
    let compute = select(args.backend)?;
    let model = load_model(args.model.as_deref(), &compute.device)?;
    let model_name = args.model.as_ref().map_or_else(
        || format!("bundled: {}", model.meta.description),
        |p| format!("{}: {}", p.display(), model.meta.description),
    );
    say!("backend  {}", compute.description);
    say!("model    {model_name}");
    say!(
        "data     {} ({} labelled scans)",
        args.data.display(),
        cases.len()
    );

    let cache = (!args.no_cache).then(MapCache::default_location);
    let progress = indicatif::ProgressBar::new(cases.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} scans  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut scans = Vec::with_capacity(cases.len());
    for case in &cases {
        progress.set_message(format!("embedding {}", case.name));
        scans.push(EvalScan::load(
            case,
            &model,
            &compute.device,
            cache.as_ref(),
        )?);
        progress.inc(1);
    }
    progress.finish_and_clear();

    let label_names = cases
        .first()
        .and_then(|c| DatasetSidecar::find_for(&c.labels))
        .map(|s| s.labels)
        .unwrap_or_default();
    let options = EvalOptions {
        shots: args.shots,
        held_out: args
            .held_out
            .clone()
            .unwrap_or_else(|| model.meta.held_out.clone()),
        label_names,
    };
    let results = evaluate(&scans, &options)?;
    let context = ReportContext {
        data: args.data.display().to_string(),
        model: model_name,
        backend: compute.description.clone(),
    };
    let report = write_report(&args.out, &results, &context)?;

    let row = |name: &str, m: &ape::evaluation::MethodResults| {
        say!(
            "  {name:<18} MRE_c {}\n  {:<18} MRE_ep {}\n  {:<18} IoU {}  recall {}  VR@99 {}",
            m.mre_c,
            "",
            m.mre_ep,
            "",
            m.iou.map_or("n/a".into(), |v| format!("{v:.3}")),
            m.recall.map_or("n/a".into(), |v| format!("{v:.3}")),
            m.vr99.map_or("n/a".into(), |v| format!("{v:.1}")),
        );
    };
    say!("all {} scans:", results.all.scans.len());
    row("APE", &results.all.ape);
    row("body-box baseline", &results.all.baseline);
    if let Some(held) = &results.held_out {
        say!("held out of training ({}):", held.scans.join(", "));
        row("APE", &held.ape);
        row("body-box baseline", &held.baseline);
    }
    let embedded: Vec<f64> = scans.iter().filter_map(|s| s.embed_seconds).collect();
    if !embedded.is_empty() {
        say!(
            "embedding: {:.2} s per scan ({} embedded, {} from the cache)",
            embedded.iter().sum::<f64>() / embedded.len() as f64,
            embedded.len(),
            scans.len() - embedded.len()
        );
    }
    say!("report   {}", report.display());
    say!("{}", results.summary_line());
    Ok(ExitCode::SUCCESS)
}
