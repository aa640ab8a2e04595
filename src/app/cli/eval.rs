//! `ape eval --data DIR`: method.md's evaluation on a labelled cohort, with a report.

use std::path::PathBuf;
use std::process::ExitCode;

use ape::cache::{CacheUse, MapCache};
use ape::cohort::{labelled_cases, labelled_cases_named};
use ape::evaluation::report::{ReportContext, write_report};
use ape::evaluation::{EvalOptions, LabelledScan, evaluate};
use ape::labels::DatasetSidecar;

use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Folder of scans with label maps beside them (X.nii.gz + X_label.nii.gz; label names from
    /// its labels.json), e.g. ../shared/data/btcv.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Evaluate only these scans of the folder (names without extension, comma-separated), e.g.
    /// the validation scans, so that a sweep never reads the held-out ones.
    #[arg(long, value_delimiter = ',')]
    scans: Option<Vec<String>>,
    /// Embed at this input spacing (mm, X,Y,Z) instead of the model's own.
    #[arg(long, value_delimiter = ',')]
    input_spacing: Option<Vec<f64>>,
    /// How APE carries points between scans: one mode or several, comma-separated
    /// (nearest: the paper's single search; consensus: a robust local affine of many
    /// cycle-checked matches; refined: consensus, then image patches matched around it).
    /// The report and the summary line are of the first.
    #[arg(long, value_delimiter = ',', default_values_t = [ape::transfer::TransferMode::DEFAULT])]
    transfer: Vec<ape::transfer::TransferMode>,
    /// Consensus transfer: support points within this radius of the query (mm).
    #[arg(long, default_value_t = ape::transfer::TransferSettings::default().radius_mm, hide = true)]
    consensus_radius: f64,
    /// Consensus transfer: a match is kept when its cycle closes within this distance (mm).
    #[arg(long, default_value_t = ape::transfer::TransferSettings::default().cycle_tolerance_mm, hide = true)]
    cycle_tolerance: f64,
    /// Refined transfer: patch reach, search window, shift penalty and spread of the six
    /// outer patches (mm, mm, NCC, mm), then optionally rounds and a second ring's spread (mm),
    /// comma-separated: for sweeps on the validation scans.
    #[arg(long, value_delimiter = ',', hide = true)]
    refine: Option<Vec<f64>>,
    /// Blend each axis of APE's points toward the body-box transfer by these weights (R–L,
    /// A–P, S–I; 0 to 1), e.g. 0.5,0,0: an experiment, reported as its own mode.
    #[arg(long, value_delimiter = ',', hide = true)]
    body_box_prior: Option<Vec<f64>>,
    /// Average each map with the maps embedded at these further spacings (X,Y,Z mm, several
    /// separated by `;`): an experiment.
    #[arg(long, hide = true)]
    also_spacing: Option<String>,
    /// Average each map with the maps of these further models (an ensemble), embedded at the
    /// same spacing as the first (`--input-spacing` when given): an experiment.
    #[arg(long, hide = true)]
    also_model: Vec<PathBuf>,
    /// Support scans per few-shot box (method.md: 5).
    #[arg(long, default_value_t = 5)]
    shots: usize,
    /// Where to write report.md, results.json and the PNG figures.
    #[arg(long, default_value = "ape-eval-report")]
    out: PathBuf,
    /// Scans kept out of training, reported separately (default: the model's own list).
    #[arg(long, value_delimiter = ',')]
    held_out: Option<Vec<String>>,
    /// Recompute every map even if it is cached.
    #[arg(long)]
    no_cache: bool,
}

pub fn run(args: &EvalArgs) -> anyhow::Result<ExitCode> {
    use ape::validate::{Input, OutputKind, count_at_least, output_path, spacing_mm};
    count_at_least("--shots", args.shots, 1)?;
    let spacing = args
        .input_spacing
        .as_deref()
        .map(|s| spacing_mm("--input-spacing", s))
        .transpose()?;
    output_path(
        &args.out,
        OutputKind::Folder,
        "the report",
        &[Input::new("the data folder", &args.data)],
    )?;
    let cases = match &args.scans {
        Some(names) => labelled_cases_named(&args.data, names)?,
        None => labelled_cases(&args.data)?,
    };
    // Checked before hours of embedding: each fold needs `shots` supports and a target.
    if cases.len() < args.shots + 1 {
        anyhow::bail!(
            "{}: {} labelled scans, but --shots {} needs at least {} (the supports and one target)",
            args.data.display(),
            cases.len(),
            args.shots,
            args.shots + 1
        );
    }
    let (compute, mut model) = args.model.load()?;
    if let Some(spacing) = spacing {
        model = model.with_input_spacing(spacing)?;
    }
    let mut also: Vec<ape::model::ApeModel> = match &args.also_spacing {
        None => Vec::new(),
        Some(list) => list
            .split(';')
            .map(|one| {
                let values: Vec<f64> = one
                    .split(',')
                    .map(|v| v.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| anyhow::anyhow!("--also-spacing {one:?}: {e}"))?;
                let spacing = spacing_mm("--also-spacing", &values)?;
                Ok(args
                    .model
                    .load_on(&compute.device)?
                    .with_input_spacing(spacing)?)
            })
            .collect::<anyhow::Result<_>>()?,
    };
    for path in &args.also_model {
        let other = ape::model::ApeModel::load(path, &compute.device)?
            .with_input_spacing(model.meta.input_spacing_mm)?;
        also.push(other);
    }
    let s = model.meta.input_spacing_mm;
    let mut model_name = format!(
        "{} (input {:.2} × {:.2} × {:.2} mm)",
        args.model.describe(&model),
        s[0],
        s[1],
        s[2]
    );
    for path in &args.also_model {
        model_name.push_str(&format!(" + {}", path.display()));
    }
    say!("backend  {}", compute.description);
    say!("model    {model_name}");
    say!(
        "data     {} ({} labelled scans)",
        args.data.display(),
        cases.len()
    );

    let cache = MapCache::default_location();
    let cache_use = if args.no_cache {
        CacheUse::Refresh(&cache)
    } else {
        CacheUse::ReadWrite(&cache)
    };
    let progress = indicatif::ProgressBar::new(cases.len() as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} scans  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut scans = Vec::with_capacity(cases.len());
    for case in &cases {
        progress.set_message(format!("embedding {}", case.name));
        let (scan, warning) =
            LabelledScan::load_averaged(case, &model, &also, &compute.device, cache_use)?;
        progress.suspend(|| super::print_warnings(&scan.warnings));
        if let Some(w) = warning {
            progress.suspend(|| eprintln!("warning: {w}"));
        }
        if let Some(fault) = &scan.si_fault {
            progress.suspend(|| {
                say!("warning: the APE map of {} {fault}", case.scan.display());
            });
        }
        scans.push(scan);
        progress.inc(1);
    }
    progress.finish_and_clear();

    let label_names = match cases.first() {
        Some(c) => DatasetSidecar::find_for(&c.labels)?,
        None => None,
    }
    .map(|s| s.labels)
    .unwrap_or_default();
    let options = EvalOptions {
        shots: args.shots,
        held_out: args
            .held_out
            .clone()
            .unwrap_or_else(|| model.meta.held_out.clone()),
        label_names,
        transfer: args.transfer[0],
        consensus: ape::transfer::TransferSettings {
            radius_mm: args.consensus_radius,
            cycle_tolerance_mm: args.cycle_tolerance,
            refine: match args.refine.as_deref() {
                None => Default::default(),
                Some(&[patch_mm, search_mm, shift_penalty, spread_mm, ref more @ ..])
                    if [patch_mm, search_mm, spread_mm]
                        .iter()
                        .all(|v| *v > 0.0 && *v < 200.0)
                        && (0.0..=10.0).contains(&shift_penalty)
                        && more.len() <= 2
                        && more.iter().all(|v| (0.0..200.0).contains(v)) =>
                {
                    let defaults = ape::refine::RefineSettings::default();
                    ape::refine::RefineSettings {
                        patch_mm,
                        search_mm,
                        shift_penalty,
                        spread_mm,
                        rounds: more
                            .first()
                            .map_or(defaults.rounds, |r| r.round().max(1.0) as u32),
                        outer_spread_mm: more.get(1).copied().unwrap_or(defaults.outer_spread_mm),
                    }
                }
                Some(_) => anyhow::bail!(
                    "--refine takes PATCH,SEARCH,PENALTY,SPREAD[,ROUNDS[,OUTER]] (mm, mm, 0…10, mm, count, mm; sizes under 200 mm)"
                ),
            },
            ..Default::default()
        },
        prior: args
            .body_box_prior
            .as_deref()
            .map(|w| match w {
                &[x, y, z] if w.iter().all(|v| (0.0..=1.0).contains(v)) => {
                    Ok(ape::evaluation::AxisPrior { weights: [x, y, z] })
                }
                _ => Err(anyhow::anyhow!(
                    "--body-box-prior takes three weights from 0 to 1 (R–L, A–P, S–I)"
                )),
            })
            .transpose()?,
    };
    // One evaluation per mode, on the same maps; the first is reported in full.
    let per_mode: Vec<(ape::transfer::TransferMode, ape::evaluation::EvalResults)> = args
        .transfer
        .iter()
        .map(|&mode| {
            let options = EvalOptions {
                transfer: mode,
                ..options.clone()
            };
            evaluate(&scans, &options).map(|r| (mode, r))
        })
        .collect::<Result<_, _>>()?;
    let results = &per_mode[0].1;
    let context = ReportContext {
        data: args.data.display().to_string(),
        model: model_name,
        backend: compute.description.clone(),
    };
    let report = write_report(&args.out, results, &context)?;

    let row = |name: &str, m: &ape::evaluation::MethodResults| {
        say!(
            "  {name:<18} MRE_c {}{}\n  {:<18} MRE_ep {}\n  {:<18} IoU {}  recall {}  VR@99 {}",
            m.mre_c,
            m.mre_c_interval.map_or(String::new(), |[lo, hi]| format!(
                ", 95% CI {lo:.1}…{hi:.1}"
            )),
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
    if per_mode.len() > 1 {
        say!("transfer modes, all {} scans:", results.all.scans.len());
        say!(
            "  {:<18} {:>7} {:>13} {:>6} {:>6} {:>6} {:>7} {:>6} {:>6}",
            "mode",
            "MRE_c",
            "95% CI",
            "R–L",
            "A–P",
            "S–I",
            "MRE_ep",
            "IoU",
            "VR@99"
        );
        let line = |name: &str, m: &ape::evaluation::MethodResults| {
            let a = m.mre_c.per_axis;
            say!(
                "  {name:<18} {:>7.1} {:>13} {:>6.1} {:>6.1} {:>6.1} {:>7.1} {:>6} {:>6}",
                m.mre_c.mean,
                m.mre_c_interval
                    .map_or("n/a".into(), |[lo, hi]| format!("{lo:.1}…{hi:.1}")),
                a[0],
                a[1],
                a[2],
                m.mre_ep.mean,
                m.iou.map_or("n/a".into(), |v| format!("{v:.3}")),
                m.vr99.map_or("n/a".into(), |v| format!("{v:.1}")),
            );
        };
        for (mode, r) in &per_mode {
            line(mode.name(), &r.all.ape);
        }
        line("body-box baseline", &results.all.baseline);
        // Per organ: MRE_c and IoU of each mode, the body box last.
        say!(
            "per organ (MRE_c mm / IoU), all {} scans:",
            results.all.scans.len()
        );
        let mut header = format!("  {:<24}", "organ");
        for (mode, _) in &per_mode {
            header += &format!(" {:>16}", mode.name());
        }
        say!("{header} {:>16}", "body box");
        let cell = |m: &ape::evaluation::MethodResults, label: u16| {
            m.organs.iter().find(|o| o.label == label).map_or_else(
                || "–".to_owned(),
                |o| {
                    format!(
                        "{:.1} / {}",
                        o.mre_c.mean,
                        o.iou.map_or("n/a".into(), |v| format!("{v:.2}"))
                    )
                },
            )
        };
        for organ in &results.all.ape.organs {
            let mut row = format!("  {:<24}", organ.organ);
            for (_, r) in &per_mode {
                row += &format!(" {:>16}", cell(&r.all.ape, organ.label));
            }
            say!("{row} {:>16}", cell(&results.all.baseline, organ.label));
        }
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
