//! Cropping a scan to an organ: the organ's few-shot box from labelled supports (a folder in the
//! BTCV layout), enlarged for 0.99 recall, and the scan's voxels inside it.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::boxes::{BoxPrediction, FewShotBoxes, Support, ape_transfer, volume_ratio};
use crate::cache::{CacheUse, embed_cached};
use crate::cohort::{CohortError, labelled_cases};
use crate::evaluation::{EvalError, LabelledScan};
use crate::geometry::WorldBox;
use crate::labels::DatasetSidecar;
use crate::model::ApeModel;
use crate::retrieval::MapIndex;
use crate::scan::Scan;
use crate::volume::Volume;

/// What to crop, and from which supports.
#[derive(Debug, Clone)]
pub struct CropRequest {
    /// The scan: a NIfTI file or a DICOM series folder.
    pub scan: PathBuf,
    /// The organ, by its name in the supports' `labels.json` (case does not matter).
    pub organ: String,
    /// Folder of support scans with label maps beside them.
    pub supports: PathBuf,
    /// At most this many supports (the first by name); `None`: all.
    pub shots: Option<usize>,
    /// The enlargement; `None`: calibrated on the supports for 0.99 recall.
    pub alpha: Option<f64>,
}

impl CropRequest {
    /// Refuses an α outside [`ALPHA_RANGE`](crate::boxes::ALPHA_RANGE) or zero shots; the
    /// errors name them as `alpha` and `shots` call them (a command line: its flags).
    pub fn check(&self, alpha: &str, shots: &str) -> Result<(), crate::validate::InputError> {
        if let Some(a) = self.alpha {
            let (lo, hi) = crate::boxes::ALPHA_RANGE;
            crate::validate::within(alpha, a, lo, hi)?;
        }
        if let Some(k) = self.shots {
            crate::validate::count_at_least(shots, k, 1)?;
        }
        Ok(())
    }

    /// Every file the crop reads, with its role, for checking an output path against: the
    /// scan, each support scan and label map, the supports' `labels.json`. (A new file may go
    /// into the support folder; none over these.)
    pub fn input_files(&self) -> Result<Vec<(&'static str, PathBuf)>, CropError> {
        let mut files = vec![
            ("the scan", self.scan.clone()),
            (
                "the supports' labels.json",
                self.supports.join(DatasetSidecar::FILE_NAME),
            ),
        ];
        for case in labelled_cases(&self.supports)? {
            files.push(("a support scan", case.scan));
            files.push(("a support label map", case.labels));
        }
        Ok(files)
    }
}

/// The crop and how it was found.
#[derive(Debug)]
pub struct Crop {
    /// The supports used, by name.
    pub supports: Vec<String>,
    pub prediction: BoxPrediction,
    /// Whether α was given rather than calibrated.
    pub alpha_given: bool,
    /// The enlarged box clipped to the scan: what was cropped.
    pub crop_box: WorldBox,
    /// The scan's voxels inside `crop_box`, in HU rounded to int16, with their affine.
    pub volume: Volume<i16>,
    /// The scan's volume over the enlarged box's (method.md's VR).
    pub volume_ratio: f64,
    /// Things the user should know (supports without the organ, a map not cached).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CropError {
    #[error(transparent)]
    Cohort(#[from] CohortError),
    #[error("{folder}: no organ named {organ:?} in its labels.json")]
    UnknownOrgan { folder: PathBuf, organ: String },
    #[error("{folder}: no support scan has a {organ}")]
    NoSupport { folder: PathBuf, organ: String },
    #[error(
        "calibrating α needs at least two supports with the {organ} ({found} found); give an α"
    )]
    CannotCalibrate { organ: String, found: usize },
    #[error("no support's edge points of the {organ} could be located on {}", scan.display())]
    NotLocated { organ: String, scan: PathBuf },
    #[error("the enlarged box {0} lies outside the scan")]
    OutsideScan(WorldBox),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Volume(#[from] crate::VolumeError),
    #[error("{}: {source}", scan.display())]
    Embed {
        scan: PathBuf,
        #[source]
        source: crate::embed::EmbedError,
    },
    #[error(transparent)]
    Geometry(#[from] crate::GeometryError),
    #[error(transparent)]
    Input(#[from] crate::validate::InputError),
}

/// Crops `request.scan` to the organ's few-shot box. The scan itself is never its own support.
pub fn crop_to_organ(
    request: &CropRequest,
    model: &ApeModel,
    device: &Device,
    cache: CacheUse<'_>,
) -> Result<Crop, CropError> {
    request.check("alpha", "shots")?;
    let mut warnings = Vec::new();
    let target_path = request.scan.canonicalize().ok();
    let mut cases = labelled_cases(&request.supports)?;
    cases.retain(|c| c.scan.canonicalize().ok() != target_path);
    let label = organ_label(&request.supports, &cases, &request.organ)?;
    if let Some(k) = request.shots {
        cases.truncate(k);
    }
    let mut support_scans = Vec::new();
    for case in &cases {
        let (s, warning) = LabelledScan::load(case, model, device, cache)?;
        warnings.extend(warning);
        if s.organ(label).is_some() {
            support_scans.push(s);
        } else {
            warnings.push(format!(
                "{} has no {}; not a support",
                case.name, request.organ
            ));
        }
    }
    if support_scans.is_empty() {
        return Err(CropError::NoSupport {
            folder: request.supports.clone(),
            organ: request.organ.clone(),
        });
    }

    let scan = Scan::read(&request.scan)?;
    warnings.extend(scan.warnings().iter().map(ToString::to_string));
    let embedded = embed_cached(
        cache,
        model,
        device,
        &request.scan,
        &scan.volume,
        &mut |_| {},
    )
    .map_err(|source| CropError::Embed {
        scan: request.scan.clone(),
        source,
    })?;
    warnings.extend(embedded.warning);
    let (map, fault) = crate::fold::unfolded(embedded.map, &scan);
    if let Some(fault) = fault {
        warnings.push(format!("{}: its APE map {fault}", request.scan.display()));
    }
    let index = MapIndex::build_in_body(&map, &scan);
    let image = crate::refine::PatchImage::of_scan(&scan).ok();
    let target = crate::retrieval::Target {
        map: &map,
        index: &index,
        image: image.as_ref(),
    };
    let supports = organ_supports(&support_scans, label);
    let predictor = match request.alpha {
        Some(alpha) => FewShotBoxes::with_alpha(supports, ape_transfer, alpha),
        None => FewShotBoxes::calibrated(supports, ape_transfer),
    };
    let prediction = predictor
        .predict(&target)
        .ok_or_else(|| CropError::NotLocated {
            organ: request.organ.clone(),
            scan: request.scan.clone(),
        })?;
    let enlarged = prediction
        .enlarged
        .ok_or_else(|| CropError::CannotCalibrate {
            organ: request.organ.clone(),
            found: support_scans.len(),
        })?;
    let extent = scan.volume.world_bounds();
    let crop_box = enlarged
        .intersection(&extent)
        .ok_or(CropError::OutsideScan(enlarged))?;
    let volume = scan
        .volume
        .crop_to_world_box(&crop_box)?
        .map(|&hu| hu.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16);
    Ok(Crop {
        supports: support_scans.iter().map(|s| s.name.clone()).collect(),
        prediction,
        alpha_given: request.alpha.is_some(),
        crop_box,
        volume,
        volume_ratio: volume_ratio(&extent, &enlarged),
        warnings,
    })
}

/// The few-shot supports of an organ among labelled scans, as APE retrieval targets.
fn organ_supports(
    scans: &[LabelledScan],
    label: u16,
) -> Vec<Support<'_, crate::retrieval::Target<'_>>> {
    scans
        .iter()
        .filter_map(|s| {
            let organ = s.organ(label)?;
            let voxels = s.organ_voxels.get(&label).map_or(&[][..], Vec::as_slice);
            Some(Support::from_organ(s.target(), organ, voxels))
        })
        .collect()
}

/// The label of the organ named `organ` in the supports' `labels.json`.
fn organ_label(
    folder: &Path,
    cases: &[crate::cohort::LabelledCase],
    organ: &str,
) -> Result<u16, CropError> {
    let sidecar = match cases.first() {
        Some(c) => DatasetSidecar::find_for(&c.labels)?,
        None => None,
    };
    sidecar
        .and_then(|s| crate::labels::label_named(&s.labels, organ))
        .ok_or_else(|| CropError::UnknownOrgan {
            folder: folder.to_owned(),
            organ: organ.to_owned(),
        })
}
