//! Scans on disk: the scans in a folder, a labelled cohort (scans beside their label maps, as in
//! the BTCV layout: `X.nii.gz` with `X_label.nii.gz`, label names in the folder's
//! `labels.json`), and where the project's shared data lives.

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
    #[error(
        "{path}: no labelled scan named {name:?} (expected {name}.nii.gz with {name}_label.nii.gz)"
    )]
    NotFound { path: PathBuf, name: String },
}

/// The name of a NIfTI file without `.nii` / `.nii.gz`; `None` for other files.
pub fn nifti_stem(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
        .map(str::to_owned)
}

/// The project's shared data folder: `$APE_SHARED_DATA`, else `../shared/data` from `clone`
/// (the repository's folder; the command line passes its working folder).
pub fn shared_data_dir(clone: &Path) -> PathBuf {
    std::env::var_os("APE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| clone.join("../shared/data"))
}

/// The scans in a folder: the folder itself when it holds a DICOM series; else its NIfTI files
/// that are not label maps and its sub-folders that hold a DICOM series, by name.
pub fn scans_in(dir: &Path) -> Result<Vec<PathBuf>, CohortError> {
    if crate::io::dicom::is_dicom_folder(dir) {
        return Ok(vec![dir.to_owned()]);
    }
    let mut scans: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| CohortError::Io {
            path: dir.to_owned(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            (p.is_file() && nifti_stem(p).is_some() && !named_like_label_map(p))
                || (p.is_dir() && crate::io::dicom::is_dicom_folder(p))
        })
        .collect();
    scans.sort();
    Ok(scans)
}

/// Every NIfTI scan in `dir` with exactly one label map named `<scan>_<label|seg|mask…>.nii[.gz]`
/// beside it, ordered by name. Scans without one are left out.
pub fn labelled_cases(dir: &Path) -> Result<Vec<LabelledCase>, CohortError> {
    let cases: Vec<LabelledCase> = scans_in(dir)?
        .into_iter()
        .filter_map(|scan| {
            Some(LabelledCase {
                name: nifti_stem(&scan)?,
                labels: label_map_for(&scan)?,
                scan,
            })
        })
        .collect();
    if cases.is_empty() {
        return Err(CohortError::NoLabelledScans {
            path: dir.to_owned(),
        });
    }
    Ok(cases)
}

/// The labelled cases of `dir` named in `names` (without extension), in that order; a name
/// with no labelled scan is an error.
pub fn labelled_cases_named(
    dir: &Path,
    names: &[String],
) -> Result<Vec<LabelledCase>, CohortError> {
    let all = labelled_cases(dir)?;
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|c| &c.name == n)
                .cloned()
                .ok_or_else(|| CohortError::NotFound {
                    path: dir.to_owned(),
                    name: n.clone(),
                })
        })
        .collect()
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
