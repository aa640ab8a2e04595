//! The evaluation protocol of method.md on a labelled cohort: landmark retrieval (organ centres
//! and edge points, MRE_c and MRE_ep, per axis and per organ), few-shot organ boxes over
//! cross-validation folds (IoU), the recall-safe enlargement α and VR@99; every figure for APE
//! and, computed the same way, for the model-free body-box baseline.

pub mod plots;
pub mod report;

use std::collections::BTreeMap;

use glam::DVec3;
use rayon::prelude::*;
use serde::Serialize;

use burn::tensor::Device;

use crate::ape_map::ApeMap;
use crate::boxes::{FewShotBoxes, Support, TARGET_RECALL, recall, volume_ratio};
use crate::cache::{CacheUse, embed_cached};
use crate::cohort::LabelledCase;
use crate::geometry::WorldBox;
use crate::labels::{LabelMap, OrganStats, organ_voxel_points};
use crate::model::ApeModel;
use crate::refine::PatchImage;
use crate::retrieval::{ErrorStats, MapIndex, Target, body_box, body_box_transfer};
use crate::scan::Scan;
use crate::transfer::{TransferMode, TransferSettings, transfer};

/// One labelled scan, reduced to what the protocol needs (the voxels are not kept).
#[derive(Debug)]
pub struct LabelledScan {
    pub name: String,
    pub map: ApeMap,
    pub index: MapIndex,
    pub organs: Vec<OrganStats>,
    /// World points of each organ's voxels, for recall.
    pub organ_voxels: BTreeMap<u16, Vec<DVec3>>,
    /// The body's box, for the baseline.
    pub body: WorldBox,
    /// The scan's intensities for refined transfer (`None` for a grid too large to hold).
    pub image: Option<PatchImage>,
    /// The scan's world extent (voxel edges), for volume ratios.
    pub extent: WorldBox,
    /// Seconds the embedding took; `None` when the map came from the cache.
    pub embed_seconds: Option<f64>,
    /// What the readers found odd in the scan or its label map.
    pub warnings: Vec<crate::validate::InputWarning>,
    /// Where the map as the network gave it ran back along S–I, if it did
    /// ([`crate::superior_fold`]); `map` has it undone ([`crate::unfolded`]).
    pub si_fault: Option<crate::SiFault>,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{name}: no body found (no voxel above {threshold} HU)")]
    NoBody { name: String, threshold: f32 },
    #[error("{name}: the label map holds no organ")]
    NoOrgans { name: String },
    #[error("{found} scans, but few-shot boxes with {shots} supports need at least {needed}")]
    TooFewScans {
        found: usize,
        shots: usize,
        needed: usize,
    },
    #[error("--shots must be at least 1")]
    NoShots,
    #[error(transparent)]
    Volume(#[from] crate::VolumeError),
    #[error("{name}: {source}")]
    Embed {
        name: String,
        #[source]
        source: crate::embed::EmbedError,
    },
}

impl LabelledScan {
    /// Reads a labelled case and embeds its scan through the map cache; a cache that could
    /// not be written is the second value (the scan is still usable).
    pub fn load(
        case: &LabelledCase,
        model: &ApeModel,
        device: &Device,
        cache: CacheUse<'_>,
    ) -> Result<(Self, Option<String>), EvalError> {
        let scan = Scan::read(&case.scan)?;
        let labels = LabelMap::read_for_scan(&case.labels, &scan.volume, &case.scan)?;
        let embedded = embed_cached(cache, model, device, &case.scan, &scan.volume, &mut |_| {})
            .map_err(|source| EvalError::Embed {
                name: case.name.clone(),
                source,
            })?;
        let seconds = embedded
            .times
            .map(|t| (t.preprocess + t.network).as_secs_f64());
        let mut this = Self::new(case.name.clone(), &scan, &labels, embedded.map, seconds)?;
        this.warnings = scan.warnings().to_vec();
        this.warnings.extend(labels.warnings.iter().cloned());
        Ok((this, embedded.warning))
    }

    /// [`Self::load`], with the map averaged over the maps of `others` (the same network at
    /// other input spacings, say), resampled onto the first's grid.
    pub fn load_averaged(
        case: &LabelledCase,
        model: &ApeModel,
        others: &[ApeModel],
        device: &Device,
        cache: CacheUse<'_>,
    ) -> Result<(Self, Option<String>), EvalError> {
        if others.is_empty() {
            return Self::load(case, model, device, cache);
        }
        let scan = Scan::read(&case.scan)?;
        let labels = LabelMap::read_for_scan(&case.labels, &scan.volume, &case.scan)?;
        let embed = |m: &ApeModel| {
            embed_cached(cache, m, device, &case.scan, &scan.volume, &mut |_| {}).map_err(
                |source| EvalError::Embed {
                    name: case.name.clone(),
                    source,
                },
            )
        };
        let first = embed(model)?;
        let rest: Vec<crate::ape_map::ApeMap> = others
            .iter()
            .map(|m| embed(m).map(|e| e.map))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&crate::ape_map::ApeMap> = rest.iter().collect();
        let map = first
            .map
            .averaged_with(&refs)
            .map_err(|e| EvalError::Embed {
                name: case.name.clone(),
                source: crate::embed::EmbedError::Geometry(e),
            })?;
        let mut this = Self::new(case.name.clone(), &scan, &labels, map, None)?;
        this.warnings = scan.warnings().to_vec();
        Ok((this, first.warning))
    }

    pub fn new(
        name: String,
        scan: &Scan,
        labels: &LabelMap,
        map: ApeMap,
        embed_seconds: Option<f64>,
    ) -> Result<Self, EvalError> {
        let threshold = scan.body_threshold_hu();
        let body = body_box(&scan.volume, threshold).ok_or_else(|| EvalError::NoBody {
            name: name.clone(),
            threshold,
        })?;
        let organs = labels.organs();
        if organs.is_empty() {
            return Err(EvalError::NoOrgans { name });
        }
        // A fold sends points of the abdomen into the chest (Session 22 of training/README).
        let (map, si_fault) = crate::fold::unfolded(map, scan);
        Ok(Self {
            index: MapIndex::build_in_body(&map, scan),
            si_fault,
            map,
            organ_voxels: organ_voxel_points(&labels.volume),
            image: PatchImage::of_scan(scan).ok(),
            organs,
            body,
            extent: scan.volume.world_bounds(),
            embed_seconds,
            name,
            warnings: Vec::new(),
        })
    }

    /// Retrieval on this scan searches every map cell, not only those inside the body (the
    /// search before retrieval kept to the body, for comparison).
    pub fn searching_everywhere(mut self) -> Self {
        self.index = MapIndex::build(&self.map);
        self
    }

    /// This scan as a retrieval target.
    pub fn target(&self) -> Target<'_> {
        Target {
            map: &self.map,
            index: &self.index,
            image: self.image.as_ref(),
        }
    }

    pub fn organ(&self, label: u16) -> Option<&OrganStats> {
        self.organs.iter().find(|o| o.label == label)
    }
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Supports per few-shot box (method.md: 5).
    pub shots: usize,
    /// Names of scans the model never saw in training, reported separately.
    pub held_out: Vec<String>,
    /// Label names by label.
    pub label_names: BTreeMap<u16, String>,
    /// How APE carries points between scans.
    pub transfer: TransferMode,
    pub consensus: TransferSettings,
    /// A body-box prior blended into APE's points, per axis (`None`: APE alone).
    pub prior: Option<AxisPrior>,
}

/// How much each axis (R–L, A–P, S–I) of a transferred point leans on the body-box transfer:
/// the body box is good along R–L and useless along S–I.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AxisPrior {
    pub weights: [f64; 3],
}

/// The ways of carrying a point from one scan to another.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Method {
    /// Through the APE maps, by a [`TransferMode`].
    Ape(TransferMode, TransferSettings),
    /// APE, with each axis blended toward the body-box transfer by the weights of
    /// [`AxisPrior`] (0: APE alone; 1: the body box alone).
    ApeWithPrior(TransferMode, TransferSettings, AxisPrior),
    /// Same relative position in the body's box.
    BodyBoxBaseline,
}

impl Method {
    fn locate(self, scans: &[LabelledScan], from: usize, point: DVec3, to: usize) -> Option<DVec3> {
        self.locate_with_confidence(scans, from, point, to)
            .map(|(w, _)| w)
    }

    /// The point on `to`, and APE's confidence score in it (none for the baseline).
    fn locate_with_confidence(
        self,
        scans: &[LabelledScan],
        from: usize,
        point: DVec3,
        to: usize,
    ) -> Option<(DVec3, Option<f64>)> {
        let (a, b) = (&scans[from], &scans[to]);
        match self {
            Method::Ape(mode, settings) => transfer(a.target(), point, b.target(), mode, &settings)
                .map(|t| (t.world, Some(t.confidence.score()))),
            Method::ApeWithPrior(mode, settings, prior) => {
                let t = transfer(a.target(), point, b.target(), mode, &settings)?;
                let body = body_box_transfer(point, &a.body, &b.body);
                let w = DVec3::from_array(prior.weights);
                Some((
                    t.world * (DVec3::ONE - w) + body * w,
                    Some(t.confidence.score()),
                ))
            }
            Method::BodyBoxBaseline => Some((body_box_transfer(point, &a.body, &b.body), None)),
        }
    }
}

/// Per-organ figures of one method.
#[derive(Debug, Clone, Serialize)]
pub struct OrganRow {
    pub label: u16,
    pub organ: String,
    pub mre_c: ErrorStats,
    pub mre_ep: ErrorStats,
    /// Mean IoU of few-shot boxes with the true box, over folds and targets.
    pub iou: Option<f64>,
    pub box_count: usize,
    /// Mean calibrated enlargement over folds.
    pub alpha: Option<f64>,
    /// Mean recall of the organ's voxels in the enlarged boxes, and the share of targets that
    /// reach 0.99: whether α calibrated on supports carries to new scans.
    pub recall: Option<f64>,
    pub reached_99: Option<f64>,
    /// Mean volume ratio of the enlarged boxes (VR@99).
    pub vr99: Option<f64>,
}

/// All figures of one method over a set of scans.
#[derive(Debug, Clone, Serialize)]
pub struct MethodResults {
    pub method: Method,
    pub mre_c: ErrorStats,
    /// 95% bootstrap interval of MRE_c over target scans (2000 resamples); `None` with fewer
    /// than two targets.
    pub mre_c_interval: Option<[f64; 2]>,
    pub mre_ep: ErrorStats,
    /// Means over organs of the per-organ figures.
    pub iou: Option<f64>,
    pub recall: Option<f64>,
    pub vr99: Option<f64>,
    pub organs: Vec<OrganRow>,
    /// Radial errors of organ centres, mm, for the histogram.
    pub centre_errors: Vec<f64>,
    /// APE's confidence in each of those (same order); empty for the baseline.
    pub centre_confidence: Vec<f64>,
    /// MRE_c of the organ centres by quarter of confidence, least confident first: whether the
    /// confidence means something.
    pub error_by_confidence: Vec<ConfidenceBin>,
}

/// Organ-centre errors of the landmarks whose confidence lies in `lo..=hi`.
#[derive(Debug, Clone, Serialize)]
pub struct ConfidenceBin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    pub mre: f64,
}

/// Quarters of the landmarks by confidence, with their mean error.
fn confidence_quarters(pairs: &[(f64, f64)]) -> Vec<ConfidenceBin> {
    let mut sorted: Vec<(f64, f64)> = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = sorted.len();
    if n < 4 {
        return Vec::new();
    }
    (0..4)
        .map(|q| {
            let part = &sorted[q * n / 4..(q + 1) * n / 4];
            ConfidenceBin {
                lo: part.first().map_or(0.0, |p| p.0),
                hi: part.last().map_or(0.0, |p| p.0),
                count: part.len(),
                mre: part.iter().map(|p| p.1).sum::<f64>() / part.len().max(1) as f64,
            }
        })
        .collect()
}

/// An organ centre of one scan in APE space (the paper's Figure 3).
#[derive(Debug, Clone, Serialize)]
pub struct CentreEmbedding {
    pub scan: String,
    pub label: u16,
    pub embedding: [f32; 3],
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanRow {
    pub name: String,
    pub held_out: bool,
    pub organs: usize,
    pub embed_seconds: Option<f64>,
    /// Where the scan's map runs back along S–I (`null`: it does not).
    pub si_fault: Option<crate::SiFault>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Subset {
    /// Which pairs count: landmark pairs with both scans in the subset, boxes on targets in it.
    pub scans: Vec<String>,
    pub ape: MethodResults,
    pub baseline: MethodResults,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalResults {
    pub shots: usize,
    pub target_recall: f64,
    pub folds: Vec<Vec<String>>,
    pub scans: Vec<ScanRow>,
    /// Every scan as query and target.
    pub all: Subset,
    /// Only the scans held out of training, when there are at least two.
    pub held_out: Option<Subset>,
    pub centres_in_ape_space: Vec<CentreEmbedding>,
    /// Every few-shot box APE predicted (fold, target, organ), as `ape crop` and the viewer
    /// would predict it from the same supports.
    pub predicted_boxes: Vec<PredictedBox>,
    pub label_names: BTreeMap<u16, String>,
}

/// One few-shot box predicted by APE on a target of a fold.
#[derive(Debug, Clone, Serialize)]
pub struct PredictedBox {
    pub target: String,
    pub label: u16,
    /// The supports: the fold's scans that have the organ.
    pub supports: Vec<String>,
    pub bbox: WorldBox,
    pub alpha: Option<f64>,
}

impl EvalResults {
    /// The one-line summary `ape eval` ends with.
    pub fn summary_line(&self) -> String {
        let a = &self.all.ape;
        let b = &self.all.baseline;
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
        };
        format!(
            "MRE_c={:.1} RL={:.1} AP={:.1} SI={:.1} MRE_ep={:.1} IoU={} VR99={} baseline_MRE_c={:.1}",
            a.mre_c.mean,
            a.mre_c.per_axis[0],
            a.mre_c.per_axis[1],
            a.mre_c.per_axis[2],
            a.mre_ep.mean,
            opt(a.iou, 3),
            opt(a.vr99, 1),
            b.mre_c.mean
        )
    }
}

/// One located landmark: query scan, target scan, organ, located and true point.
struct Located {
    from: usize,
    to: usize,
    label: u16,
    centre: bool,
    found: DVec3,
    truth: DVec3,
    /// APE's confidence score (0…1); none for the baseline.
    confidence: Option<f64>,
}

/// One few-shot box on a target.
struct BoxOutcome {
    fold: usize,
    target: usize,
    label: u16,
    bbox: WorldBox,
    iou: f64,
    alpha: Option<f64>,
    recall: Option<f64>,
    vr: Option<f64>,
}

/// Runs the whole protocol.
pub fn evaluate(scans: &[LabelledScan], options: &EvalOptions) -> Result<EvalResults, EvalError> {
    if options.shots == 0 {
        return Err(EvalError::NoShots);
    }
    if scans.len() < options.shots + 1 {
        return Err(EvalError::TooFewScans {
            found: scans.len(),
            shots: options.shots,
            needed: options.shots + 1,
        });
    }
    // Folds: consecutive groups of `shots` supports; a remainder serves only as targets.
    let folds: Vec<Vec<usize>> = (0..scans.len() / options.shots)
        .map(|f| (f * options.shots..(f + 1) * options.shots).collect())
        .collect();
    let is_held_out: Vec<bool> = scans
        .iter()
        .map(|s| options.held_out.contains(&s.name))
        .collect();

    let ape = match options.prior {
        None => Method::Ape(options.transfer, options.consensus),
        Some(p) => Method::ApeWithPrior(options.transfer, options.consensus, p),
    };
    let per_method = [ape, Method::BodyBoxBaseline].map(|method| {
        (
            method,
            locate_landmarks(scans, method, true),
            few_shot_boxes(scans, &folds, method),
        )
    });
    // [APE, baseline] over the scans that `include` admits.
    let subset = |include: &dyn Fn(usize) -> bool| -> [MethodResults; 2] {
        per_method.each_ref().map(|(method, landmarks, boxes)| {
            let landmarks: Vec<&Located> = landmarks
                .iter()
                .filter(|l| include(l.from) && include(l.to))
                .collect();
            let boxes: Vec<&BoxOutcome> = boxes.iter().filter(|b| include(b.target)).collect();
            summarise(*method, &landmarks, &boxes, &options.label_names)
        })
    };
    let [ape, baseline] = subset(&|_| true);
    let held_names: Vec<String> = scans
        .iter()
        .zip(&is_held_out)
        .filter(|(_, h)| **h)
        .map(|(s, _)| s.name.clone())
        .collect();
    let held_out = (held_names.len() >= 2).then(|| {
        let [ape, baseline] = subset(&|i| is_held_out[i]);
        Subset {
            scans: held_names,
            ape,
            baseline,
        }
    });
    let centres_in_ape_space = scans
        .iter()
        .flat_map(|s| {
            s.organs.iter().filter_map(|o| {
                Some(CentreEmbedding {
                    scan: s.name.clone(),
                    label: o.label,
                    embedding: s.map.embedding_at(o.centre)?,
                })
            })
        })
        .collect();
    Ok(EvalResults {
        shots: options.shots,
        target_recall: TARGET_RECALL,
        folds: folds
            .iter()
            .map(|f| f.iter().map(|&i| scans[i].name.clone()).collect())
            .collect(),
        scans: scans
            .iter()
            .zip(&is_held_out)
            .map(|(s, &held_out)| ScanRow {
                name: s.name.clone(),
                held_out,
                organs: s.organs.len(),
                embed_seconds: s.embed_seconds,
                si_fault: s.si_fault,
            })
            .collect(),
        all: Subset {
            scans: scans.iter().map(|s| s.name.clone()).collect(),
            ape,
            baseline,
        },
        held_out,
        centres_in_ape_space,
        predicted_boxes: per_method[0]
            .2
            .iter()
            .map(|b| PredictedBox {
                target: scans[b.target].name.clone(),
                label: b.label,
                supports: folds[b.fold]
                    .iter()
                    .filter(|&&s| scans[s].organ(b.label).is_some())
                    .map(|&s| scans[s].name.clone())
                    .collect(),
                bbox: b.bbox,
                alpha: b.alpha,
            })
            .collect(),
        label_names: options.label_names.clone(),
    })
}

/// Organ-centre errors (MRE_c, per axis) of APE (by `mode`) and of the body-box baseline over
/// every ordered pair of scans: the figure training reports as it goes.
pub fn centre_errors(scans: &[LabelledScan], mode: TransferMode) -> [ErrorStats; 2] {
    [
        Method::Ape(mode, TransferSettings::default()),
        Method::BodyBoxBaseline,
    ]
    .map(|method| {
        let pairs: Vec<(DVec3, DVec3)> = locate_landmarks(scans, method, false)
            .iter()
            .map(|l| (l.found, l.truth))
            .collect();
        ErrorStats::from_pairs(&pairs)
    })
}

/// Every organ centre (and, with `edges`, edge point) of every scan, located on every other
/// scan.
fn locate_landmarks(scans: &[LabelledScan], method: Method, edges: bool) -> Vec<Located> {
    let pairs: Vec<(usize, usize)> = (0..scans.len())
        .flat_map(|a| {
            (0..scans.len())
                .filter(move |&b| b != a)
                .map(move |b| (a, b))
        })
        .collect();
    pairs
        .par_iter()
        .flat_map_iter(|&(from, to)| {
            let mut out = Vec::new();
            for organ in &scans[from].organs {
                let Some(truth) = scans[to].organ(organ.label) else {
                    continue;
                };
                let mut push = |point: DVec3, true_point: DVec3, centre: bool| {
                    if let Some((found, confidence)) =
                        method.locate_with_confidence(scans, from, point, to)
                    {
                        out.push(Located {
                            from,
                            to,
                            label: organ.label,
                            centre,
                            found,
                            truth: true_point,
                            confidence,
                        });
                    }
                };
                push(organ.centre, truth.centre, true);
                if edges {
                    for (p, t) in organ.edges.points().iter().zip(truth.edges.points()) {
                        push(*p, t, false);
                    }
                }
            }
            out
        })
        .collect()
}

/// Few-shot boxes of every organ on every target of every fold, with α calibrated on the fold's
/// supports (each support predicted from the others) and applied to the targets.
fn few_shot_boxes(scans: &[LabelledScan], folds: &[Vec<usize>], method: Method) -> Vec<BoxOutcome> {
    let labels: Vec<u16> = {
        let mut l: Vec<u16> = scans
            .iter()
            .flat_map(|s| s.organs.iter().map(|o| o.label))
            .collect();
        l.sort_unstable();
        l.dedup();
        l
    };
    let jobs: Vec<(usize, u16)> = (0..folds.len())
        .flat_map(|f| labels.iter().map(move |&l| (f, l)))
        .collect();
    jobs.par_iter()
        .flat_map_iter(|&(f, label)| {
            let supports: Vec<Support<'_, usize>> = folds[f]
                .iter()
                .filter_map(|&s| {
                    let organ = scans[s].organ(label)?;
                    let voxels = scans[s].organ_voxels.get(&label);
                    Some(Support::from_organ(
                        s,
                        organ,
                        voxels.map_or(&[][..], Vec::as_slice),
                    ))
                })
                .collect();
            let mut out = Vec::new();
            if supports.is_empty() {
                return out;
            }
            let predictor = FewShotBoxes::calibrated(supports, |&from: &usize, p, &to: &usize| {
                method.locate(scans, from, p, to)
            });
            let targets = (0..scans.len())
                .filter(|t| !folds[f].contains(t) && scans[*t].organ(label).is_some());
            for target in targets {
                let (Some(predicted), Some(truth)) =
                    (predictor.predict(&target), scans[target].organ(label))
                else {
                    continue;
                };
                let voxels = scans[target].organ_voxels.get(&label);
                out.push(BoxOutcome {
                    fold: f,
                    target,
                    label,
                    bbox: predicted.bbox,
                    iou: predicted.bbox.iou(&truth.bbox),
                    alpha: predicted.alpha,
                    recall: predicted.enlarged.zip(voxels).map(|(e, v)| recall(&e, v)),
                    vr: predicted
                        .enlarged
                        .map(|e| volume_ratio(&scans[target].extent, &e)),
                });
            }
            out
        })
        .collect()
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The 95% interval of the mean error when the target scans are drawn again with replacement
/// (each drawn scan brings all its errors): five scans swing the mean by several mm, and this
/// says by how much. Deterministic (a fixed xorshift seed), so reports are reproducible.
pub fn bootstrap_over_targets(errors: &[(usize, f64)], resamples: usize) -> Option<[f64; 2]> {
    let mut per_scan: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for &(scan, e) in errors {
        let slot = per_scan.entry(scan).or_default();
        slot.0 += e;
        slot.1 += 1;
    }
    let scans: Vec<(f64, usize)> = per_scan.into_values().collect();
    if scans.len() < 2 {
        return None;
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let (mut sum, mut n) = (0.0, 0usize);
            for _ in 0..scans.len() {
                let (s, c) = scans[(next() % scans.len() as u64) as usize];
                sum += s;
                n += c;
            }
            sum / n.max(1) as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    Some([at(0.025), at(0.975)])
}

fn summarise(
    method: Method,
    landmarks: &[&Located],
    boxes: &[&BoxOutcome],
    names: &BTreeMap<u16, String>,
) -> MethodResults {
    let pairs = |centre: bool, label: Option<u16>| -> Vec<(DVec3, DVec3)> {
        landmarks
            .iter()
            .filter(|l| l.centre == centre && label.is_none_or(|x| x == l.label))
            .map(|l| (l.found, l.truth))
            .collect()
    };
    let mut labels: Vec<u16> = landmarks.iter().map(|l| l.label).collect();
    labels.extend(boxes.iter().map(|b| b.label));
    labels.sort_unstable();
    labels.dedup();
    let organs: Vec<OrganRow> = labels
        .iter()
        .map(|&label| {
            let b: Vec<&&BoxOutcome> = boxes.iter().filter(|b| b.label == label).collect();
            let vrs: Vec<f64> = b
                .iter()
                .filter_map(|b| b.vr)
                .filter(|v| v.is_finite())
                .collect();
            OrganRow {
                label,
                organ: names
                    .get(&label)
                    .cloned()
                    .unwrap_or_else(|| format!("label {label}")),
                mre_c: ErrorStats::from_pairs(&pairs(true, Some(label))),
                mre_ep: ErrorStats::from_pairs(&pairs(false, Some(label))),
                iou: mean(b.iter().map(|b| b.iou)),
                box_count: b.len(),
                alpha: mean(b.iter().filter_map(|b| b.alpha)),
                recall: mean(b.iter().filter_map(|b| b.recall)),
                reached_99: mean(
                    b.iter()
                        .filter_map(|b| b.recall)
                        .map(|r| f64::from(u8::from(r >= TARGET_RECALL))),
                ),
                vr99: mean(vrs),
            }
        })
        .collect();
    let centre_pairs = pairs(true, None);
    let centres: Vec<&&Located> = landmarks.iter().filter(|l| l.centre).collect();
    let centre_errors: Vec<f64> = centres
        .iter()
        .map(|l| (l.found - l.truth).length())
        .collect();
    // (confidence, error) of the centres APE scored.
    let scored: Vec<(f64, f64)> = centres
        .iter()
        .zip(&centre_errors)
        .filter_map(|(l, &e)| Some((l.confidence?, e)))
        .collect();
    let by_target: Vec<(usize, f64)> = centres
        .iter()
        .zip(&centre_errors)
        .map(|(l, &e)| (l.to, e))
        .collect();
    MethodResults {
        method,
        mre_c: ErrorStats::from_pairs(&centre_pairs),
        mre_c_interval: bootstrap_over_targets(&by_target, 2000),
        mre_ep: ErrorStats::from_pairs(&pairs(false, None)),
        iou: mean(organs.iter().filter_map(|o| o.iou)),
        recall: mean(organs.iter().filter_map(|o| o.recall)),
        vr99: mean(organs.iter().filter_map(|o| o.vr99)),
        centre_errors,
        centre_confidence: scored.iter().map(|p| p.0).collect(),
        error_by_confidence: confidence_quarters(&scored),
        organs,
    }
}
