//! Retrieval error of organ centres on held-out labelled scans, per axis, beside the body-box
//! baseline: the number that says whether training works.

use std::path::{Path, PathBuf};

use ape::ape_map::ApeMap;
use ape::embed::{EmbedOptions, embed_scan};
use ape::geometry::WorldBox;
use ape::labels::LabelMap;
use ape::model::ApeModel;
use ape::retrieval::{ErrorStats, MapIndex, body_box, body_box_transfer};
use ape::scan::Scan;
use burn::tensor::Device;
use glam::DVec3;

/// Held-out scans with their organ centres and body boxes.
#[derive(Debug)]
pub struct HeldOut {
    scans: Vec<HeldOutScan>,
    device: Device,
    /// Retrieval searches every map cell, not only those inside the body (for comparison with
    /// the figures before retrieval kept to the body).
    pub search_everywhere: bool,
}

#[derive(Debug)]
struct HeldOutScan {
    name: String,
    scan: Scan,
    centres: Vec<(u16, DVec3)>,
    body: WorldBox,
}

/// Errors of APE and of the baseline.
#[derive(Debug, Clone, Copy)]
pub struct EvalReport {
    pub ape: ErrorStats,
    pub baseline: ErrorStats,
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MRE_c APE {} | body-box baseline {}",
            self.ape, self.baseline
        )
    }
}

impl EvalReport {
    pub fn csv_row(&self) -> String {
        let a = &self.ape;
        let b = &self.baseline;
        format!(
            "{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2}",
            a.mean,
            a.per_axis[0],
            a.per_axis[1],
            a.per_axis[2],
            b.mean,
            b.per_axis[0],
            b.per_axis[1],
            b.per_axis[2]
        )
    }
}

/// Pairs of (scan, label map) paths for BTCV-style folders: `X.nii.gz` with `X_label.nii.gz`.
pub fn labelled_pairs(folder: &Path, names: &[String]) -> Vec<(PathBuf, PathBuf)> {
    names
        .iter()
        .map(|n| {
            (
                folder.join(format!("{n}.nii.gz")),
                folder.join(format!("{n}_label.nii.gz")),
            )
        })
        .filter(|(s, l)| s.is_file() && l.is_file())
        .collect()
}

impl HeldOut {
    pub fn load(pairs: &[(PathBuf, PathBuf)], device: Device) -> anyhow::Result<Self> {
        let mut scans = Vec::new();
        for (scan_path, label_path) in pairs {
            let scan = Scan::read(scan_path)?;
            let labels = LabelMap::read_for_scan(label_path, &scan.volume, scan_path)?;
            let centres = labels
                .organs()
                .iter()
                .map(|o| (o.label, o.centre))
                .collect();
            let threshold = scan.body_threshold_hu();
            let body = body_box(&scan.volume, threshold)
                .ok_or_else(|| anyhow::anyhow!("{}: no body found", scan_path.display()))?;
            scans.push(HeldOutScan {
                name: scan_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                scan,
                centres,
                body,
            });
        }
        Ok(Self {
            scans,
            device,
            search_everywhere: false,
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.scans.iter().map(|s| s.name.clone()).collect()
    }

    /// MRE_c over all ordered pairs of distinct scans and organs present in both.
    pub fn evaluate(&self, model: &ApeModel) -> anyhow::Result<EvalReport> {
        let maps: Vec<ApeMap> = self
            .scans
            .iter()
            .map(|s| {
                embed_scan(
                    model,
                    &self.device,
                    &s.scan.volume,
                    &EmbedOptions::default(),
                    &mut |_| {},
                )
                .map(|r| r.0)
            })
            .collect::<Result<_, _>>()?;
        let indices: Vec<MapIndex> = maps
            .iter()
            .zip(&self.scans)
            .map(|(map, s)| {
                if self.search_everywhere {
                    MapIndex::build(map)
                } else {
                    MapIndex::build_in_body(map, &s.scan)
                }
            })
            .collect();
        let mut ape_pairs = Vec::new();
        let mut base_pairs = Vec::new();
        for (a, query) in self.scans.iter().enumerate() {
            for (b, target) in self.scans.iter().enumerate() {
                if a == b {
                    continue;
                }
                for &(label, centre) in &query.centres {
                    let Some(&(_, truth)) = target.centres.iter().find(|(l, _)| *l == label) else {
                        continue;
                    };
                    if let Some(e) = maps[a].embedding_at(centre) {
                        let found = indices[b].retrieve(&maps[b], e);
                        ape_pairs.push((found.world, truth));
                    }
                    base_pairs.push((body_box_transfer(centre, &query.body, &target.body), truth));
                }
            }
        }
        Ok(EvalReport {
            ape: ErrorStats::from_pairs(&ape_pairs),
            baseline: ErrorStats::from_pairs(&base_pairs),
        })
    }
}
