//! The evaluation report: a Markdown file with tables and the PNG figures, and a JSON file of
//! every number.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::plots::{self, PlotError};
use super::{EvalResults, MethodResults, Subset};
use crate::retrieval::ErrorStats;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Plot(#[from] PlotError),
    #[error("could not encode the results as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What the report is about, printed at its top.
#[derive(Debug, Clone)]
pub struct ReportContext {
    pub data: String,
    pub model: String,
    pub backend: String,
}

/// Writes `report.md`, `results.json`, `iou.png`, `radial_errors.png` and `ape_space.png` into
/// `dir` (created if needed). Returns the Markdown path.
pub fn write_report(
    dir: &Path,
    results: &EvalResults,
    context: &ReportContext,
) -> Result<PathBuf, ReportError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let json_path = dir.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(results)?).map_err(io(&json_path))?;
    plots::iou_bars(
        &dir.join("iou.png"),
        &results.all.ape,
        &results.all.baseline,
    )?;
    plots::error_histogram(
        &dir.join("radial_errors.png"),
        &results.all.ape,
        &results.all.baseline,
    )?;
    plots::ape_space(&dir.join("ape_space.png"), results)?;
    plots::error_vs_confidence(&dir.join("error_vs_confidence.png"), &results.all.ape)?;
    let md_path = dir.join("report.md");
    std::fs::write(&md_path, markdown(results, context)).map_err(io(&md_path))?;
    Ok(md_path)
}

fn stats(e: &ErrorStats) -> String {
    if e.count == 0 {
        return "–".to_owned();
    }
    format!(
        "{:.1} ± {:.1} | {:.1} | {:.1} | {:.1}",
        e.mean, e.std, e.per_axis[0], e.per_axis[1], e.per_axis[2]
    )
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

/// The Markdown text of the report.
pub fn markdown(results: &EvalResults, context: &ReportContext) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# APE evaluation\n");
    let _ = writeln!(
        md,
        "- data: `{}` ({} labelled scans)",
        context.data,
        results.scans.len()
    );
    let _ = writeln!(md, "- model: {}", context.model);
    let _ = writeln!(md, "- backend: {}", context.backend);
    let _ = writeln!(
        md,
        "- protocol (method.md): landmarks are each organ's centre of mass and six edge points, \
         located on every other scan (all ordered pairs of distinct scans, organs present in \
         both) as the point inside its body (above the body box's threshold) whose embedding is \
         nearest; errors are radial (mean ± std) and mean absolute per axis, mm. Few-shot boxes: \
         {} supports per fold ({} folds: {}), every other scan a target; α per organ and fold is \
         the largest enlargement any support needs to reach recall {} when predicted from the \
         fold's other supports; VR@99 = scan volume ÷ enlarged box clipped to the scan.",
        results.shots,
        results.folds.len(),
        results
            .folds
            .iter()
            .map(|f| f.join(" "))
            .collect::<Vec<_>>()
            .join(" | "),
        results.target_recall
    );
    let _ = writeln!(
        md,
        "- baseline: a point's relative position in the body's bounding box, carried to the \
         target's body box; the same landmarks and folds.\n"
    );
    let _ = writeln!(md, "Summary: `{}`\n", results.summary_line());
    subset_section(&mut md, "All scans", &results.all);
    if let Some(held) = &results.held_out {
        subset_section(
            &mut md,
            &format!(
                "Held out of training ({}): landmark pairs between these scans, boxes on them",
                held.scans.join(", ")
            ),
            held,
        );
    } else {
        let _ = writeln!(
            md,
            "_No held-out scans named (`--held-out`, or the model's own list): every figure \
             above may include scans the model was trained on._\n"
        );
    }
    let _ = writeln!(md, "## Figures\n");
    let _ = writeln!(md, "![IoU per organ](iou.png)\n");
    let _ = writeln!(md, "![Radial errors](radial_errors.png)\n");
    let _ = writeln!(md, "![Organ centres in APE space](ape_space.png)\n");
    let bins = &results.all.ape.error_by_confidence;
    if !bins.is_empty() {
        let _ = writeln!(md, "### Error against confidence\n");
        let _ = writeln!(md, "![Error against confidence](error_vs_confidence.png)\n");
        let _ = writeln!(
            md,
            "| quarter by confidence | confidence | centres | MRE_c (mm) |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- |");
        for (q, b) in bins.iter().enumerate() {
            let _ = writeln!(
                md,
                "| {} | {:.2}…{:.2} | {} | {:.1} |",
                q + 1,
                b.lo,
                b.hi,
                b.count,
                b.mre
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "## Scans\n");
    let _ = writeln!(
        md,
        "| scan | organs | held out | embedding time | S–I order of the map |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- | --- |");
    for s in &results.scans {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            s.name,
            s.organs,
            if s.held_out { "yes" } else { "" },
            s.embed_seconds
                .map_or_else(|| "cached".to_owned(), |t| format!("{t:.2} s")),
            si_order(s.si_fault.as_ref())
        );
    }
    md
}

/// A scan's S–I check in a table cell.
fn si_order(fault: Option<&crate::SiFault>) -> String {
    match fault {
        None => "no fold".to_owned(),
        Some(crate::SiFault::Fold(f)) => format!(
            "**fold**, undone: z {:.0} … {:.0} mm, {:.0} mm deep (z {:.0} read as z {:.0})",
            f.z_range_mm[0], f.z_range_mm[1], f.depth_mm, f.trough_z_mm, f.same_level_z_mm
        ),
        Some(crate::SiFault::NotRising { slope_per_mm }) => {
            format!("**not rising** ({slope_per_mm:.4} units/mm)")
        }
    }
}

fn subset_section(md: &mut String, title: &str, subset: &Subset) {
    let _ = writeln!(md, "## {title}\n");
    let _ = writeln!(
        md,
        "| method | MRE_c (mm) | R–L | A–P | S–I | MRE_ep (mm) | R–L | A–P | S–I | IoU | recall | VR@99 |"
    );
    let _ = writeln!(md, "|{}", " --- |".repeat(13));
    for (name, m) in [
        ("APE", &subset.ape),
        ("body-box baseline", &subset.baseline),
    ] {
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} |",
            stats(&m.mre_c),
            stats(&m.mre_ep),
            opt(m.iou, 3),
            opt(m.recall, 3),
            opt(m.vr99, 1)
        );
    }
    let _ = writeln!(md);
    organ_table(md, &subset.ape, &subset.baseline);
}

fn organ_table(md: &mut String, ape: &MethodResults, baseline: &MethodResults) {
    let _ = writeln!(
        md,
        "| organ | MRE_c APE | MRE_c base | MRE_ep APE | MRE_ep base | IoU APE | IoU base | α | recall | reached 0.99 | VR@99 | boxes |"
    );
    let _ = writeln!(md, "|{}", " --- |".repeat(12));
    for o in &ape.organs {
        let b = baseline.organs.iter().find(|b| b.label == o.label);
        let mre = |e: &ErrorStats| {
            if e.count == 0 {
                "–".to_owned()
            } else {
                format!("{:.1}", e.mean)
            }
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            o.organ,
            mre(&o.mre_c),
            b.map_or_else(|| "–".to_owned(), |b| mre(&b.mre_c)),
            mre(&o.mre_ep),
            b.map_or_else(|| "–".to_owned(), |b| mre(&b.mre_ep)),
            opt(o.iou, 3),
            opt(b.and_then(|b| b.iou), 3),
            opt(o.alpha, 2),
            opt(o.recall, 3),
            opt(o.reached_99.map(|r| r * 100.0), 0) + "%",
            opt(o.vr99, 1),
            o.box_count
        );
    }
    let _ = writeln!(md);
}
