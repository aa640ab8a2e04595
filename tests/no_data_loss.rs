//! No command writes over its own input: every command that writes, with its output on each of
//! its inputs (the same path, another spelling of it, a symbolic link, a hard link, a file of a
//! support cohort), is refused before any work, names the file, and leaves it as it was.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

mod common;

use std::path::{Path, PathBuf};

use common::run_ape_failing;

/// A little scan, its label map, a labels.json, a box file and a model file: the inputs.
struct Inputs {
    dir: tempfile::TempDir,
}

impl Inputs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cohort = common::write_tiny_cohort(dir.path(), &["s1"]);
        std::fs::copy(cohort.join("s1.nii.gz"), dir.path().join("scan.nii.gz")).unwrap();
        std::fs::write(
            dir.path().join("boxes.csv"),
            "scan,organ,x_min,y_min,z_min,x_max,y_max,z_max,origin\ns1,liver,0,0,0,1,1,1,drawn\n",
        )
        .unwrap();
        std::fs::copy(
            common::repository().join("assets/ape-default.apemodel"),
            dir.path().join("model.apemodel"),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Every input file's bytes, to compare after.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for dir in [self.dir.path().to_owned(), self.path("cohort")] {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                if entry.file_type().unwrap().is_file() {
                    out.push((entry.path(), std::fs::read(entry.path()).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    /// Runs `args`, which must fail naming `named`, with every input unchanged.
    fn refused(&self, args: &[&str], named: &str) {
        let before = self.snapshot();
        let cache = self.path("cache");
        let stderr = run_ape_failing(args, &cache);
        assert!(
            stderr.contains(named),
            "ape {args:?}: {stderr:?} does not name {named}"
        );
        assert!(
            stderr.contains("refusing")
                || stderr.contains("is a folder")
                || stderr.contains("is a file"),
            "ape {args:?}: {stderr}"
        );
        assert!(before == self.snapshot(), "ape {args:?} changed an input");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn embed_never_writes_over_its_scan_or_model() {
    let inputs = Inputs::new();
    let scan = inputs.path("scan.nii.gz");
    let (scan_s, model) = (s(&scan), inputs.path("model.apemodel"));
    inputs.refused(&["embed", scan_s, "-o", scan_s], "scan.nii.gz");
    // Another spelling of the same path.
    let cohort = inputs.path("cohort");
    let other = format!("{}/../scan.nii.gz", s(&cohort));
    inputs.refused(&["embed", scan_s, "-o", &other], "scan.nii.gz");
    // A symbolic and a hard link to it.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&scan, inputs.path("sym.nii.gz")).unwrap();
        inputs.refused(
            &["embed", scan_s, "-o", s(&inputs.path("sym.nii.gz"))],
            "scan.nii.gz",
        );
        std::fs::hard_link(&scan, inputs.path("hard.nii.gz")).unwrap();
        inputs.refused(
            &["embed", scan_s, "-o", s(&inputs.path("hard.nii.gz"))],
            "scan.nii.gz",
        );
    }
    // The model file it was given.
    let model_out = inputs.path("model.nii.gz");
    std::fs::hard_link(&model, &model_out).unwrap();
    inputs.refused(
        &["embed", scan_s, "--model", s(&model), "-o", s(&model_out)],
        "model.apemodel",
    );
    std::fs::remove_file(&model_out).unwrap();
    // A folder is not a file name.
    inputs.refused(&["embed", scan_s, "-o", s(&cohort)], "cohort");
}

#[test]
fn crop_never_writes_over_its_scan_or_any_support_file() {
    let inputs = Inputs::new();
    let scan = inputs.path("scan.nii.gz");
    let cohort = inputs.path("cohort");
    for target in [
        scan.clone(),
        cohort.join("s1.nii.gz"),
        cohort.join("s1_label.nii.gz"),
        cohort.join("labels.json"),
    ] {
        let name = target.file_name().unwrap().to_str().unwrap().to_owned();
        inputs.refused(
            &[
                "crop",
                s(&scan),
                "--organ",
                "liver",
                "--support",
                s(&cohort),
                "-o",
                s(&target),
            ],
            &name,
        );
    }
}

#[test]
fn boxes_never_converts_a_file_onto_itself() {
    let inputs = Inputs::new();
    let boxes = inputs.path("boxes.csv");
    inputs.refused(&["boxes", s(&boxes), "-o", s(&boxes)], "boxes.csv");
    let other = format!("{}/./boxes.csv", s(inputs.dir.path()));
    inputs.refused(&["boxes", s(&boxes), "-o", &other], "boxes.csv");
    inputs.refused(
        &["boxes", s(&boxes), "-o", s(&inputs.path("cohort"))],
        "cohort",
    );
}

#[test]
fn model_commands_never_write_over_their_model() {
    let inputs = Inputs::new();
    let model = inputs.path("model.apemodel");
    inputs.refused(
        &[
            "model-describe",
            "--model",
            s(&model),
            "-o",
            s(&model),
            "--description",
            "x",
        ],
        "model.apemodel",
    );
    inputs.refused(&["model-init", "-o", s(&inputs.path("cohort"))], "cohort");
}

#[test]
fn eval_never_writes_its_report_into_or_onto_its_data() {
    let inputs = Inputs::new();
    let cohort = inputs.path("cohort");
    inputs.refused(
        &["eval", "--data", s(&cohort), "--out", s(&cohort)],
        "cohort",
    );
    // A folder that holds the data.
    inputs.refused(
        &["eval", "--data", s(&cohort), "--out", s(inputs.dir.path())],
        "cohort",
    );
    // A file where a folder goes.
    let file = inputs.path("boxes.csv");
    inputs.refused(
        &["eval", "--data", s(&cohort), "--out", s(&file)],
        "boxes.csv",
    );
}
