//! Organ label maps: masks and, in world millimetres, each organ's centre of mass, six edge points
//! and bounding box, as `method.md` defines them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use glam::DVec3;
use serde::{Deserialize, Serialize};

use crate::error::VolumeError;
use crate::intensity::HuWindow;
use crate::io::StoredVolume;
use crate::io::nifti::read_label_volume_with_info;
use crate::volume::Volume;

/// World coordinates closer than this (mm) count as equal when picking edge points, so that
/// the same organ stored in another voxel order yields the same points.
const TIE_MM: f64 = 1e-3;

/// A label map read from disk, with the organ names its data set gives.
#[derive(Debug, Clone)]
pub struct LabelMap {
    pub path: PathBuf,
    pub volume: Volume<u16>,
    pub names: BTreeMap<u16, String>,
    /// What the reader found odd (labels stored as floats, extreme spacing).
    pub warnings: Vec<crate::validate::InputWarning>,
}

impl LabelMap {
    /// Reads a label map and the names in a `labels.json` beside it, if any.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, VolumeError> {
        let path = path.as_ref();
        let (info, volume) = read_label_volume_with_info(path)?;
        let names = DatasetSidecar::find_for(path)?
            .map(|s| s.labels)
            .unwrap_or_default();
        Ok(Self {
            path: path.to_owned(),
            volume,
            names,
            warnings: info.warnings,
        })
    }

    /// Reads the label map of a scan, checking that it lies on the scan's grid (see
    /// [`Self::check_grid`]).
    pub fn read_for_scan<T>(
        path: impl AsRef<Path>,
        scan: &Volume<T>,
        scan_path: &Path,
    ) -> Result<Self, VolumeError> {
        let labels = Self::read(path)?;
        labels.check_grid(scan, scan_path)?;
        Ok(labels)
    }

    /// Whether the label map matches a scan voxel for voxel: the same shape, and every corner
    /// voxel at the same world point within 0.01 mm. A label map resampled, cropped or written
    /// with another affine would put organs in the wrong place, so it is refused by name.
    pub fn check_grid<T>(&self, scan: &Volume<T>, scan_path: &Path) -> Result<(), VolumeError> {
        let mismatch = |detail: String| VolumeError::LabelGridMismatch {
            labels: self.path.clone(),
            scan: scan_path.to_owned(),
            detail,
        };
        let (ls, ss) = (self.volume.shape(), scan.shape());
        if ls != ss {
            return Err(mismatch(format!(
                "{} × {} × {} voxels against {} × {} × {}",
                ls[0], ls[1], ls[2], ss[0], ss[1], ss[2]
            )));
        }
        let corners = crate::geometry::WorldBox::new(
            glam::DVec3::ZERO,
            glam::DVec3::new(ss[0] as f64 - 1.0, ss[1] as f64 - 1.0, ss[2] as f64 - 1.0),
        )
        .corners();
        for voxel in corners {
            let (a, b) = (
                self.volume.affine().to_world(voxel),
                scan.affine().to_world(voxel),
            );
            if (a - b).length() > 0.01 {
                return Err(mismatch(format!(
                    "voxel ({}, {}, {}) lies at ({:.2}, {:.2}, {:.2}) mm in the labels and at \
                     ({:.2}, {:.2}, {:.2}) mm in the scan",
                    voxel.x, voxel.y, voxel.z, a.x, a.y, a.z, b.x, b.y, b.z
                )));
            }
        }
        Ok(())
    }

    /// A label map from a NIfTI volume already read as f32; every voxel must be a whole number
    /// from 0 to 65535.
    pub fn from_nifti(nifti: StoredVolume) -> Result<Self, VolumeError> {
        let float_labels = crate::io::nifti::float_label_warning(&nifti.info);
        let path = nifti.info.path;
        let bad = nifti
            .volume
            .data()
            .iter()
            .position(|&v| !(v.fract() == 0.0 && (0.0..=65535.0).contains(&v)));
        if let Some(index) = bad {
            return Err(VolumeError::NotALabelMap {
                detail: format!(
                    "voxel {:?} holds {}, not a whole number from 0 to 65535",
                    nifti.volume.voxel_of(index),
                    nifti.volume.data()[index]
                ),
                path,
            });
        }
        let volume = nifti.volume.map(|&v| v as u16);
        let names = DatasetSidecar::find_for(&path)?
            .map(|s| s.labels)
            .unwrap_or_default();
        let mut warnings = nifti.info.warnings;
        warnings.extend(float_labels);
        Ok(Self {
            path,
            volume,
            names,
            warnings,
        })
    }

    pub fn name_of(&self, label: u16) -> String {
        name_of(&self.names, label)
    }

    /// The label value of an organ name.
    pub fn label_of(&self, name: &str) -> Option<u16> {
        label_named(&self.names, name)
    }

    pub fn organs(&self) -> Vec<OrganStats> {
        organ_stats(&self.volume)
    }
}

/// A label map reduced to what landmarks and few-shot boxes need, without its voxel grid: each
/// organ's statistics and the world points of its voxels.
#[derive(Debug, Clone)]
pub struct Organs {
    pub names: BTreeMap<u16, String>,
    pub stats: Vec<OrganStats>,
    /// World points of each organ's voxels, for recall.
    pub voxels: BTreeMap<u16, Vec<DVec3>>,
}

impl Organs {
    pub fn of(labels: &LabelMap) -> Self {
        Self {
            names: labels.names.clone(),
            stats: labels.organs(),
            voxels: organ_voxel_points(&labels.volume),
        }
    }

    pub fn get(&self, label: u16) -> Option<&OrganStats> {
        self.stats.iter().find(|o| o.label == label)
    }

    /// The organ called `name` (any case): its statistics and voxel points.
    pub fn named(&self, name: &str) -> Option<(&OrganStats, &[DVec3])> {
        let label = label_named(&self.names, name)?;
        let stats = self.get(label)?;
        Some((
            stats,
            self.voxels.get(&label).map_or(&[][..], Vec::as_slice),
        ))
    }

    pub fn name_of(&self, label: u16) -> String {
        name_of(&self.names, label)
    }
}

/// The name of `label` in a data set's names, or `label N` when it has none.
pub fn name_of(names: &BTreeMap<u16, String>, label: u16) -> String {
    names
        .get(&label)
        .cloned()
        .unwrap_or_else(|| format!("label {label}"))
}

/// The label an organ name (any case) has in a data set's names.
pub fn label_named(names: &BTreeMap<u16, String>, name: &str) -> Option<u16> {
    names
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|(&l, _)| l)
}

/// A data set's `labels.json`: organ names and, for pre-windowed scans, the HU window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetSidecar {
    pub labels: BTreeMap<u16, String>,
    pub hu_window: Option<HuWindow>,
}

#[derive(Deserialize)]
struct SidecarFile {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    intensity: Option<SidecarIntensity>,
}

#[derive(Deserialize)]
struct SidecarIntensity {
    hu_window: Option<[f32; 2]>,
}

impl DatasetSidecar {
    pub const FILE_NAME: &'static str = "labels.json";

    /// Parses a `labels.json` text: `{"labels": {"1": "spleen", …}, "intensity": {"hu_window":
    /// [lo, hi]}}`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: SidecarFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut labels = BTreeMap::new();
        for (key, name) in file.labels {
            let label: u16 = key
                .trim()
                .parse()
                .map_err(|_| format!("label key {key:?} is not a number from 0 to 65535"))?;
            labels.insert(label, name);
        }
        let hu_window = match file.intensity.and_then(|i| i.hu_window) {
            None => None,
            Some([lower, upper]) => {
                // A window is a stretch of the HU scale real CT spans (air −1000, dense bone
                // and metal a few thousand); ±1e30 would map every voxel to one value.
                let plausible = |v: f32| v.is_finite() && (-10_000.0..=100_000.0).contains(&v);
                if !(plausible(lower) && plausible(upper) && upper - lower >= 1.0) {
                    return Err(format!(
                        "intensity.hu_window [{lower}, {upper}] is not an HU window (two finite \
                         values from −10000 to 100000 HU, the second at least 1 above the first)"
                    ));
                }
                Some(HuWindow { lower, upper })
            }
        };
        Ok(Self { labels, hu_window })
    }

    /// The sidecar in the same folder as `path`: `None` when there is none; an error naming
    /// it when it is there but unreadable or invalid (a scan read without its declared window
    /// would be misread in silence).
    pub fn find_for(path: &Path) -> Result<Option<Self>, VolumeError> {
        let Some(folder) = path.parent() else {
            return Ok(None);
        };
        let folder = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder
        };
        let file = folder.join(Self::FILE_NAME);
        if !file.exists() {
            return Ok(None);
        }
        crate::validate::input_path(&file)?;
        let text = std::fs::read_to_string(&file).map_err(|source| VolumeError::Io {
            path: file.clone(),
            source,
        })?;
        Self::parse(&text)
            .map(Some)
            .map_err(|detail| VolumeError::BadSidecar { path: file, detail })
    }
}

/// For each world axis (x, y, z), the organ voxel with the smallest and with the largest
/// coordinate; ties go to the voxel nearest the centre of mass in the other two axes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EdgePoints {
    pub min: [DVec3; 3],
    pub max: [DVec3; 3],
}

impl EdgePoints {
    /// The six points: min x, max x, min y, max y, min z, max z.
    pub fn points(&self) -> [DVec3; 6] {
        [
            self.min[0],
            self.max[0],
            self.min[1],
            self.max[1],
            self.min[2],
            self.max[2],
        ]
    }
}

/// One organ of a label map, in world millimetres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OrganStats {
    pub label: u16,
    pub voxels: usize,
    /// Volume in millilitres.
    pub volume_ml: f64,
    /// Centre of mass of the organ's voxel centres.
    pub centre: DVec3,
    pub edges: EdgePoints,
    /// The world box of the organ's voxel centres (spanned by the edge points).
    pub bbox: crate::geometry::WorldBox,
}

/// Whether a file's name says it holds labels (`label`, `seg` or `mask`, any case): how ape
/// tells label maps from scans in a folder.
pub fn named_like_label_map(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    ["label", "seg", "mask"]
        .iter()
        .any(|hint| name.contains(hint))
}

#[derive(Clone, Copy)]
struct Accumulator {
    voxels: usize,
    index_sum: DVec3,
    min: DVec3,
    max: DVec3,
}

#[derive(Clone, Copy)]
struct Candidate {
    point: DVec3,
    off_axis_d2: f64,
}

/// Every organ (label > 0) of a label map, ordered by label.
pub fn organ_stats(labels: &Volume<u16>) -> Vec<OrganStats> {
    let max_label = labels.data().iter().copied().max().unwrap_or(0) as usize;
    if max_label == 0 {
        return Vec::new();
    }
    let empty = Accumulator {
        voxels: 0,
        index_sum: DVec3::ZERO,
        min: DVec3::INFINITY,
        max: DVec3::NEG_INFINITY,
    };
    let mut acc = vec![empty; max_label + 1];
    for_each_labelled_voxel(labels, |label, index, world| {
        let a = &mut acc[label];
        a.voxels += 1;
        a.index_sum += index;
        a.min = a.min.min(world);
        a.max = a.max.max(world);
    });

    let affine = labels.affine();
    let centres: Vec<DVec3> = acc
        .iter()
        .map(|a| affine.to_world(a.index_sum / a.voxels.max(1) as f64))
        .collect();
    let none = Candidate {
        point: DVec3::NAN,
        off_axis_d2: f64::INFINITY,
    };
    let mut lows = vec![[none; 3]; max_label + 1];
    let mut highs = vec![[none; 3]; max_label + 1];
    for_each_labelled_voxel(labels, |label, _, world| {
        let a = &acc[label];
        let centre = centres[label];
        for axis in 0..3 {
            let at_min = world[axis] <= a.min[axis] + TIE_MM;
            let at_max = world[axis] >= a.max[axis] - TIE_MM;
            if !(at_min || at_max) {
                continue;
            }
            let mut off = world - centre;
            off[axis] = 0.0;
            let candidate = Candidate {
                point: world,
                off_axis_d2: off.length_squared(),
            };
            if at_min && better(&candidate, &lows[label][axis]) {
                lows[label][axis] = candidate;
            }
            if at_max && better(&candidate, &highs[label][axis]) {
                highs[label][axis] = candidate;
            }
        }
    });

    let voxel_ml = affine.linear().determinant().abs() / 1000.0;
    acc.iter()
        .enumerate()
        .skip(1)
        .filter(|(_, a)| a.voxels > 0)
        .map(|(label, a)| {
            let edges = EdgePoints {
                min: lows[label].map(|c| c.point),
                max: highs[label].map(|c| c.point),
            };
            OrganStats {
                label: label as u16,
                voxels: a.voxels,
                volume_ml: a.voxels as f64 * voxel_ml,
                centre: centres[label],
                edges,
                bbox: crate::geometry::WorldBox::new(a.min, a.max),
            }
        })
        .collect()
}

/// The world points (voxel centres, mm) of every organ's voxels, by label: what recall of a box
/// is counted on.
pub fn organ_voxel_points(labels: &Volume<u16>) -> BTreeMap<u16, Vec<DVec3>> {
    let mut points: BTreeMap<u16, Vec<DVec3>> = BTreeMap::new();
    for_each_labelled_voxel(labels, |label, _, world| {
        points.entry(label as u16).or_default().push(world);
    });
    points
}

/// Whether `new` beats `old` as an edge point: nearer the centre off-axis, then (for an exact
/// tie, which symmetric organs produce) the smaller world coordinate, x before y before z.
fn better(new: &Candidate, old: &Candidate) -> bool {
    let tolerance = 1e-6 * (1.0 + old.off_axis_d2.min(new.off_axis_d2));
    if new.off_axis_d2 < old.off_axis_d2 - tolerance {
        return true;
    }
    if new.off_axis_d2 > old.off_axis_d2 + tolerance {
        return false;
    }
    for axis in 0..3 {
        let d = new.point[axis] - old.point[axis];
        if d.abs() > TIE_MM {
            return d < 0.0;
        }
    }
    false
}

/// Calls `f(label, voxel index, world point)` for every voxel with a label > 0.
fn for_each_labelled_voxel(labels: &Volume<u16>, mut f: impl FnMut(usize, DVec3, DVec3)) {
    let [nx, ny, nz] = labels.shape();
    let affine = labels.affine();
    let data = labels.data();
    let step_i = affine.axis_step(0);
    for k in 0..nz {
        for j in 0..ny {
            let row = &data[nx * (j + ny * k)..nx * (j + 1 + ny * k)];
            let row_origin = affine.to_world(DVec3::new(0.0, j as f64, k as f64));
            for (i, &label) in row.iter().enumerate() {
                if label == 0 {
                    continue;
                }
                let index = DVec3::new(i as f64, j as f64, k as f64);
                f(label as usize, index, row_origin + step_i * i as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Affine;

    #[test]
    fn centre_edges_and_box_of_a_block() {
        let affine = Affine::from_spacing(DVec3::new(1.0, 2.0, 3.0), DVec3::ZERO).unwrap();
        // A 3×3×3 block of label 5 at voxels 2..5, plus one voxel sticking out along +i.
        let labels = Volume::from_fn([10, 10, 10], affine, |i, j, k| {
            let block = (2..5).contains(&i) && (2..5).contains(&j) && (2..5).contains(&k);
            u16::from(block || (i == 5 && j == 3 && k == 3)) * 5
        })
        .unwrap();
        let organs = organ_stats(&labels);
        assert_eq!(organs.len(), 1);
        let o = organs[0];
        assert_eq!(o.label, 5);
        assert_eq!(o.voxels, 28);
        assert!((o.volume_ml - 28.0 * 6.0 / 1000.0).abs() < 1e-12);
        // The min-x edge: the face voxel nearest the centre in y and z, i.e. (2, 3, 3).
        assert_eq!(o.edges.min[0], DVec3::new(2.0, 6.0, 9.0));
        assert_eq!(o.edges.max[0], DVec3::new(5.0, 6.0, 9.0));
        assert_eq!(o.bbox.min, DVec3::new(2.0, 4.0, 6.0));
        assert_eq!(o.bbox.max, DVec3::new(5.0, 8.0, 12.0));
    }

    #[test]
    fn sidecar_parses_labels_and_window() {
        let s = DatasetSidecar::parse(
            r#"{"labels": {"1": "spleen", "6": "liver"}, "intensity": {"hu_window": [-125, 275]}}"#,
        )
        .unwrap();
        assert_eq!(s.labels.get(&6).map(String::as_str), Some("liver"));
        assert_eq!(s.hu_window, Some(HuWindow::MODEL));
        assert!(DatasetSidecar::parse(r#"{"labels": {"x": "a"}}"#).is_err());
    }
}
