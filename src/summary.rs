//! What `ape info` reports about a volume file: geometry, intensities and, for label maps, the
//! organs with their centres.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::VolumeError;
use crate::geometry::WorldBox;
use crate::io::StoredVolume;
use crate::labels::LabelMap;
use crate::scan::Scan;

/// Whether a file holds a scan or a label map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VolumeKind {
    /// A label map when the name says so (`label`, `seg`, `mask`) and the voxels are unscaled
    /// integers; otherwise a scan.
    #[default]
    Auto,
    Scan,
    Labels,
}

#[derive(Debug, Clone, Serialize)]
pub struct VolumeSummary {
    pub path: PathBuf,
    pub kind: &'static str,
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
    /// Direction each voxel axis points toward, e.g. `["L", "P", "S"]`.
    pub axis_codes: [String; 3],
    pub oblique: bool,
    pub transform: String,
    pub datatype: &'static str,
    pub stored_range: [f32; 2],
    /// For scans: how stored values become HU, and the HU range.
    pub intensity: Option<String>,
    pub hu_range: Option<[f32; 2]>,
    /// The world box covered by the grid (outer voxel faces), RAS mm.
    pub world_bounds: WorldBox,
    /// For label maps: the organs present.
    pub organs: Option<Vec<OrganSummary>>,
    /// What the reader found odd (intensities unlike CT, extreme spacing, gantry tilt, …).
    pub warnings: Vec<crate::validate::InputWarning>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrganSummary {
    pub label: u16,
    pub name: String,
    pub voxels: usize,
    pub volume_ml: f64,
    /// Centre of mass, RAS mm.
    pub centre: [f64; 3],
}

/// Reads a file once and summarises it.
pub fn summarize(path: &Path, kind: VolumeKind) -> Result<VolumeSummary, VolumeError> {
    let nifti = crate::io::read_volume(path)?;
    let labels = match kind {
        VolumeKind::Labels => true,
        VolumeKind::Scan => false,
        VolumeKind::Auto => looks_like_labels(&nifti),
    };
    let volume = &nifti.volume;
    let affine = *volume.affine();
    let (lo, hi) = volume.value_range();
    let mut summary = VolumeSummary {
        path: path.to_owned(),
        kind: if labels { "label map" } else { "scan" },
        shape: volume.shape(),
        spacing_mm: volume.spacing().to_array(),
        axis_codes: affine.axis_codes().map(String::from),
        oblique: affine.is_oblique(1e-3),
        transform: nifti.info.transform.to_string(),
        datatype: nifti.info.datatype,
        stored_range: [lo, hi],
        intensity: None,
        hu_range: None,
        world_bounds: volume.world_bounds(),
        organs: None,
        warnings: Vec::new(),
    };
    if labels {
        let map = LabelMap::from_nifti(nifti)?;
        summary.warnings = map.warnings.clone();
        summary.organs = Some(
            map.organs()
                .into_iter()
                .map(|o| OrganSummary {
                    label: o.label,
                    name: map.name_of(o.label),
                    voxels: o.voxels,
                    volume_ml: o.volume_ml,
                    centre: o.centre.to_array(),
                })
                .collect(),
        );
    } else {
        let scan = Scan::from_nifti(nifti)?;
        summary.warnings = scan.warnings().to_vec();
        let (hu_lo, hu_hi) = scan.hu_range();
        summary.intensity = Some(scan.intensity.describe());
        summary.hu_range = Some([hu_lo, hu_hi]);
    }
    Ok(summary)
}

fn looks_like_labels(nifti: &StoredVolume) -> bool {
    crate::labels::named_like_label_map(&nifti.info.path) && nifti.info.is_unscaled_integer()
}
