//! A labelled cohort on disk: scans beside their label maps, as in the BTCV layout
//! (`X.nii.gz` with `X_label.nii.gz`, label names in the folder's `labels.json`).

use std::path::{Path, PathBuf};

use crate::labels::named_like_label_map;

/// One scan and its label map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledCase {
    /// The scan's file name without its NIfTI extension.
    pub name: String,
    pub scan: PathBuf,
    pub labels: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CohortError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no scan with a label map beside it (expected X.nii.gz with X_label.nii.gz)")]
    NoLabelledScans { path: PathBuf },
    #[error("{path}: {found} labelled scans, but {needed} are needed ({why})")]
    TooFew {
        path: PathBuf,
        found: usize,
        needed: usize,
        why: &'static str,
    },
}

/// The name of a NIfTI file without `.nii` / `.nii.gz`; `None` for other files.
pub fn nifti_stem(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
        .map(str::to_owned)
}

/// Every scan in `dir` with exactly one label map named `<scan>_<label|seg|mask…>.nii[.gz]`
/// beside it, ordered by name. Scans without one are left out.
pub fn labelled_cases(dir: &Path) -> Result<Vec<LabelledCase>, CohortError> {
    let io = |source| CohortError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && nifti_stem(p).is_some())
        .collect();
    files.sort();
    let (label_files, scans): (Vec<_>, Vec<_>) =
        files.into_iter().partition(|p| named_like_label_map(p));
    let mut cases = Vec::new();
    for scan in scans {
        let Some(name) = nifti_stem(&scan) else {
            continue;
        };
        let mut matches = label_files.iter().filter(|l| is_label_map_of(&name, l));
        if let (Some(labels), None) = (matches.next(), matches.next()) {
            cases.push(LabelledCase {
                name,
                scan: scan.clone(),
                labels: labels.clone(),
            });
        }
    }
    if cases.is_empty() {
        return Err(CohortError::NoLabelledScans {
            path: dir.to_owned(),
        });
    }
    Ok(cases)
}

/// Whether `file` is named as the label map of the scan called `scan_name`
/// (`<scan_name>_<label|seg|mask…>.nii[.gz]`).
fn is_label_map_of(scan_name: &str, file: &Path) -> bool {
    let prefix = format!("{scan_name}_");
    nifti_stem(file).is_some_and(|stem| {
        stem.strip_prefix(&prefix)
            .is_some_and(|rest| named_like_label_map(Path::new(rest)))
    })
}

/// The one label map beside a scan, named as [`labelled_cases`] expects; `None` when there is
/// none or more than one.
pub fn label_map_for(scan: &Path) -> Option<PathBuf> {
    let name = nifti_stem(scan)?;
    let dir = scan.parent()?;
    let mut matches = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .ok()?
    .filter_map(|e| e.ok().map(|e| e.path()))
    .filter(|p| p.is_file() && is_label_map_of(&name, p));
    match (matches.next(), matches.next()) {
        (Some(labels), None) => Some(labels),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_finds_its_one_label_map() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "a.nii.gz",
            "a_label.nii.gz",
            "ab.nii.gz",
            "b.nii",
            "b_seg.nii",
            "b_mask.nii",
        ] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        assert_eq!(
            label_map_for(&dir.path().join("a.nii.gz")),
            Some(dir.path().join("a_label.nii.gz"))
        );
        assert_eq!(label_map_for(&dir.path().join("ab.nii.gz")), None);
        // Two candidates: ambiguous, none taken.
        assert_eq!(label_map_for(&dir.path().join("b.nii")), None);
    }

    #[test]
    fn pairs_scans_with_their_label_maps() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "a.nii.gz",
            "a_label.nii.gz",
            "b.nii",
            "b_seg.nii",
            "c.nii.gz", // no labels: left out
            "d.nii.gz",
            "d_label.nii.gz",
            "d_mask.nii.gz", // two label maps: ambiguous, left out
            "labels.json",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let cases = labelled_cases(dir.path()).unwrap();
        let names: Vec<_> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(cases[1].labels, dir.path().join("b_seg.nii"));
        let empty = tempfile::tempdir().unwrap();
        let err = labelled_cases(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no scan with a label map"), "{err}");
    }
}
