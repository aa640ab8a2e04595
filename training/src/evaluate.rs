//! Retrieval error of organ centres on held-out labelled scans, per axis, beside the body-box
//! baseline: the number that says whether training works. The scans are kept in memory and
//! re-embedded with each model; the figures are `ape::evaluation`'s.

use ape::cache::{CacheUse, embed_cached};
use ape::cohort::LabelledCase;
use ape::evaluation::{LabelledScan, centre_errors};
use ape::labels::LabelMap;
use ape::model::ApeModel;
use ape::retrieval::ErrorStats;
use ape::scan::Scan;
use burn::tensor::Device;

/// Held-out scans with their label maps.
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
    case: LabelledCase,
    scan: Scan,
    labels: LabelMap,
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

impl HeldOut {
    pub fn load(cases: &[LabelledCase], device: Device) -> anyhow::Result<Self> {
        let mut scans = Vec::new();
        for case in cases {
            let scan = Scan::read(&case.scan)?;
            let labels = LabelMap::read_for_scan(&case.labels, &scan.volume, &case.scan)?;
            scans.push(HeldOutScan {
                case: case.clone(),
                scan,
                labels,
            });
        }
        Ok(Self {
            scans,
            device,
            search_everywhere: false,
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.scans.iter().map(|s| s.case.name.clone()).collect()
    }

    /// MRE_c over all ordered pairs of distinct scans and organs present in both.
    pub fn evaluate(&self, model: &ApeModel) -> anyhow::Result<EvalReport> {
        let mut labelled = Vec::with_capacity(self.scans.len());
        for s in &self.scans {
            // The weights change as training goes: nothing to cache.
            let embedded = embed_cached(
                CacheUse::Off,
                model,
                &self.device,
                &s.case.scan,
                &s.scan.volume,
                &mut |_| {},
            )?;
            let scan =
                LabelledScan::new(s.case.name.clone(), &s.scan, &s.labels, embedded.map, None)?;
            labelled.push(if self.search_everywhere {
                scan.searching_everywhere()
            } else {
                scan
            });
        }
        // The paper's single search: cheap enough to run every few hundred steps.
        let [ape, baseline] = centre_errors(&labelled, ape::transfer::TransferMode::Nearest);
        Ok(EvalReport { ape, baseline })
    }
}
