//! `ape info FILE...`

use std::path::PathBuf;
use std::process::ExitCode;

use ape::summary::{VolumeKind, VolumeSummary, summarize};

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// NIfTI files (.nii, .nii.gz).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Treat the files as scans or as label maps (default: label maps when the name contains
    /// "label", "seg" or "mask").
    #[arg(long, value_enum, default_value = "auto")]
    kind: KindArg,
    /// Print JSON (one object per file, in a list) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Auto,
    Scan,
    Labels,
}

pub fn run(args: &InfoArgs) -> anyhow::Result<ExitCode> {
    let kind = match args.kind {
        KindArg::Auto => VolumeKind::Auto,
        KindArg::Scan => VolumeKind::Scan,
        KindArg::Labels => VolumeKind::Labels,
    };
    let mut summaries = Vec::new();
    let mut failed = false;
    // One bad file does not hide the report on the others.
    for path in &args.files {
        match summarize(path, kind) {
            Ok(s) => {
                if !args.json {
                    say_raw!("{}", render(&s));
                }
                summaries.push(s);
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if args.json {
        say!("{}", serde_json::to_string_pretty(&summaries)?);
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The text report of one file.
pub fn render(s: &VolumeSummary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let b = &s.world_bounds;
    let _ = writeln!(out, "{} ({})", s.path.display(), s.kind);
    let _ = writeln!(
        out,
        "  shape        {} × {} × {} voxels",
        s.shape[0], s.shape[1], s.shape[2]
    );
    let _ = writeln!(
        out,
        "  spacing      {:.3} × {:.3} × {:.3} mm",
        s.spacing_mm[0], s.spacing_mm[1], s.spacing_mm[2]
    );
    let _ = writeln!(
        out,
        "  axis codes   {}{}",
        s.axis_codes.join(","),
        if s.oblique { " (oblique)" } else { "" }
    );
    let _ = writeln!(out, "  transform    {}", s.transform);
    let _ = writeln!(
        out,
        "  values       {} {} … {}",
        s.datatype, s.stored_range[0], s.stored_range[1]
    );
    if let (Some(intensity), Some(hu)) = (&s.intensity, s.hu_range) {
        let _ = writeln!(
            out,
            "  intensity    {intensity}; {:.1} … {:.1} HU",
            hu[0], hu[1]
        );
    }
    let _ = writeln!(
        out,
        "  world box    x {:.1} … {:.1}, y {:.1} … {:.1}, z {:.1} … {:.1} mm (RAS)",
        b.min.x, b.max.x, b.min.y, b.max.y, b.min.z, b.max.z
    );
    if let Some(organs) = &s.organs {
        let _ = writeln!(
            out,
            "  organs       {} present; centres of mass in RAS mm:",
            organs.len()
        );
        for o in organs {
            let _ = writeln!(
                out,
                "    {:>3} {:<26} {:>9} voxels {:>9.1} ml   ({:7.1}, {:7.1}, {:7.1})",
                o.label, o.name, o.voxels, o.volume_ml, o.centre[0], o.centre[1], o.centre[2]
            );
        }
    }
    for w in &s.warnings {
        let _ = writeln!(out, "  warning      {}", w.message);
    }
    out
}
