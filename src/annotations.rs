//! Organ boxes as users keep them: one box per (scan, organ), drawn or predicted, saved and
//! loaded as JSON or CSV in world RAS mm, and as 3D Slicer ROI markups (`.mrk.json`, LPS) so a
//! box opens in Slicer; an undo/redo history of edits. Files are written atomically.

use std::path::Path;

use glam::DVec3;
use serde::{Deserialize, Serialize};

use crate::geometry::WorldBox;

/// Where a box came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BoxOrigin {
    /// Drawn or corrected by the user.
    Drawn,
    /// Predicted from `supports` support boxes, enlarged by `alpha`; not yet accepted.
    Predicted { supports: usize, alpha: f64 },
    /// A prediction the user accepted as it was.
    Accepted,
}

/// One organ's box on one scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganBox {
    pub scan: String,
    pub organ: String,
    /// World RAS mm.
    pub bbox: WorldBox,
    pub origin: BoxOrigin,
}

/// Every box of a cohort.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BoxSet {
    pub boxes: Vec<OrganBox>,
}

#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a box file ({detail})")]
    Parse { path: String, detail: String },
}

const CSV_HEADER: &str = "scan,organ,x_min,y_min,z_min,x_max,y_max,z_max,origin";

impl BoxSet {
    /// The box of an organ on a scan.
    pub fn get(&self, scan: &str, organ: &str) -> Option<&OrganBox> {
        self.boxes
            .iter()
            .find(|b| b.scan == scan && b.organ == organ)
    }

    /// Sets the box of (scan, organ), replacing an earlier one.
    pub fn set(&mut self, organ_box: OrganBox) {
        match self
            .boxes
            .iter_mut()
            .find(|b| b.scan == organ_box.scan && b.organ == organ_box.organ)
        {
            Some(slot) => *slot = organ_box,
            None => self.boxes.push(organ_box),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// One row per box, RAS mm; `origin` is drawn, accepted or predicted.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(CSV_HEADER);
        out.push('\n');
        for b in &self.boxes {
            let origin = match b.origin {
                BoxOrigin::Drawn => "drawn",
                BoxOrigin::Accepted => "accepted",
                BoxOrigin::Predicted { .. } => "predicted",
            };
            let (lo, hi) = (b.bbox.min, b.bbox.max);
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{origin}\n",
                csv_field(&b.scan),
                csv_field(&b.organ),
                lo.x,
                lo.y,
                lo.z,
                hi.x,
                hi.y,
                hi.z
            ));
        }
        out
    }

    /// Reads what [`Self::to_csv`] writes (predicted boxes come back without their α).
    pub fn from_csv(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(CSV_HEADER) {
            return Err(format!("the first line must be `{CSV_HEADER}`"));
        }
        let mut set = Self::default();
        for (n, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split(',').collect();
            if fields.len() != 9 {
                return Err(format!(
                    "line {}: {} fields, 9 expected",
                    n + 2,
                    fields.len()
                ));
            }
            let number = |i: usize| {
                fields[i]
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| format!("line {}: {:?} is not a number", n + 2, fields[i]))
            };
            let lo = DVec3::new(number(2)?, number(3)?, number(4)?);
            let hi = DVec3::new(number(5)?, number(6)?, number(7)?);
            let origin = match fields[8].trim() {
                "drawn" => BoxOrigin::Drawn,
                "accepted" => BoxOrigin::Accepted,
                "predicted" => BoxOrigin::Predicted {
                    supports: 0,
                    alpha: 1.0,
                },
                other => return Err(format!("line {}: unknown origin {other:?}", n + 2)),
            };
            set.set(OrganBox {
                scan: fields[0].trim().to_owned(),
                organ: fields[1].trim().to_owned(),
                bbox: WorldBox::new(lo, hi),
                origin,
            });
        }
        Ok(set)
    }

    /// 3D Slicer markups: one ROI per box, in LPS as Slicer stores them.
    pub fn to_slicer_markups(&self) -> String {
        let markups: Vec<serde_json::Value> = self
            .boxes
            .iter()
            .map(|b| {
                let c = ras_to_lps(b.bbox.centre());
                let s = b.bbox.size();
                serde_json::json!({
                    "type": "ROI",
                    "coordinateSystem": "LPS",
                    "coordinateUnits": "mm",
                    "name": format!("{} {}", b.scan, b.organ),
                    "roiType": "Box",
                    "center": [c.x, c.y, c.z],
                    "size": [s.x, s.y, s.z],
                    "orientation": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                    "controlPoints": [{
                        "id": "1",
                        "label": b.organ,
                        "position": [c.x, c.y, c.z],
                        "orientation": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                        "positionStatus": "defined"
                    }],
                    "description": b.scan,
                })
            })
            .collect();
        serde_json::to_string_pretty(&serde_json::json!({
            "@schema": "https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#",
            "markups": markups,
        }))
        .unwrap_or_default()
    }

    /// Reads ROI boxes from 3D Slicer markups (LPS or RAS); the scan comes from the ROI's
    /// description, the organ from its control point's label.
    pub fn from_slicer_markups(text: &str) -> Result<Self, String> {
        let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let markups = doc["markups"].as_array().ok_or("no `markups` list")?;
        let mut set = Self::default();
        for m in markups.iter().filter(|m| m["type"] == "ROI") {
            let vec3 = |v: &serde_json::Value| -> Result<DVec3, String> {
                let a: Vec<f64> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
                    .unwrap_or_default();
                match a[..] {
                    [x, y, z] if x.is_finite() && y.is_finite() && z.is_finite() => {
                        Ok(DVec3::new(x, y, z))
                    }
                    _ => Err(format!("an ROI needs 3 numbers, got {v}")),
                }
            };
            let centre = vec3(&m["center"])?;
            let size = vec3(&m["size"])?.abs();
            let centre = if m["coordinateSystem"] == "RAS" {
                centre
            } else {
                ras_to_lps(centre) // the same flip both ways
            };
            set.set(OrganBox {
                scan: m["description"].as_str().unwrap_or_default().to_owned(),
                organ: m["controlPoints"][0]["label"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                bbox: WorldBox::new(centre - size * 0.5, centre + size * 0.5),
                origin: BoxOrigin::Drawn,
            });
        }
        Ok(set)
    }

    /// Saves in the format the extension names ([`BoxFormat::from_path`]); atomically.
    pub fn save(&self, path: &Path) -> Result<(), AnnotationError> {
        let text = BoxFormat::from_path(path).write(self);
        crate::io::atomic::write_atomically(path, text.as_bytes()).map_err(|source| {
            AnnotationError::Io {
                path: path.display().to_string(),
                source,
            }
        })
    }

    /// Loads what [`Self::save`] writes.
    pub fn load(path: &Path) -> Result<Self, AnnotationError> {
        let text = std::fs::read_to_string(path).map_err(|source| AnnotationError::Io {
            path: path.display().to_string(),
            source,
        })?;
        BoxFormat::from_path(path)
            .read(&text)
            .map_err(|detail| AnnotationError::Parse {
                path: path.display().to_string(),
                detail,
            })
    }
}

/// The box file formats: one list for saving, loading, file dialogs and help texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoxFormat {
    /// 3D Slicer ROI markups, LPS: a box opens in Slicer.
    SlicerMarkups,
    /// [`BoxSet`] as JSON, RAS mm, predictions with their α.
    Json,
    /// One row per box, RAS mm.
    Csv,
}

impl BoxFormat {
    pub const ALL: [Self; 3] = [Self::SlicerMarkups, Self::Json, Self::Csv];

    pub fn name(self) -> &'static str {
        match self {
            Self::SlicerMarkups => "3D Slicer ROI markups, LPS",
            Self::Json => "JSON",
            Self::Csv => "CSV",
        }
    }

    /// The file name's ending, without the first dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::SlicerMarkups => "mrk.json",
            Self::Json => "json",
            Self::Csv => "csv",
        }
    }

    /// The format a file name's ending names, the longest ending first (`.mrk.json` is also
    /// `.json`); JSON for any other name.
    pub fn from_path(path: &Path) -> Self {
        let name = path.to_string_lossy().to_lowercase();
        Self::ALL
            .into_iter()
            .filter(|f| {
                name.strip_suffix(f.extension())
                    .is_some_and(|stem| stem.ends_with('.'))
            })
            .max_by_key(|f| f.extension().len())
            .unwrap_or(Self::Json)
    }

    /// Every format for a help text: `.mrk.json (3D Slicer ROI markups, LPS), .json (JSON), …`.
    pub fn list() -> String {
        Self::ALL
            .iter()
            .map(|f| format!(".{} ({})", f.extension(), f.name()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn write(self, set: &BoxSet) -> String {
        match self {
            Self::SlicerMarkups => set.to_slicer_markups(),
            Self::Json => set.to_json(),
            Self::Csv => set.to_csv(),
        }
    }

    pub fn read(self, text: &str) -> Result<BoxSet, String> {
        match self {
            Self::SlicerMarkups => BoxSet::from_slicer_markups(text),
            Self::Json => BoxSet::from_json(text),
            Self::Csv => BoxSet::from_csv(text),
        }
    }
}

fn ras_to_lps(p: DVec3) -> DVec3 {
    DVec3::new(-p.x, -p.y, p.z)
}

/// Scan and organ names must not break the CSV: commas become semicolons.
fn csv_field(s: &str) -> String {
    s.replace([',', '\n'], ";")
}

/// Undo and redo over snapshots of a value (a few boxes: snapshots are cheap).
#[derive(Debug, Clone, Default)]
pub struct History<T> {
    undo: Vec<T>,
    redo: Vec<T>,
}

impl<T: Clone> History<T> {
    /// Call before changing `current`: the old state can then be restored.
    pub fn record(&mut self, current: &T) {
        self.undo.push(current.clone());
        self.redo.clear();
    }

    /// Restores the state before the last change; `false` when there is none.
    pub fn undo(&mut self, current: &mut T) -> bool {
        match self.undo.pop() {
            Some(previous) => {
                self.redo.push(std::mem::replace(current, previous));
                true
            }
            None => false,
        }
    }

    /// Re-applies the last undone change; `false` when there is none.
    pub fn redo(&mut self, current: &mut T) -> bool {
        match self.redo.pop() {
            Some(next) => {
                self.undo.push(std::mem::replace(current, next));
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BoxSet {
        let mut set = BoxSet::default();
        set.set(OrganBox {
            scan: "btcv_02".into(),
            organ: "liver".into(),
            bbox: WorldBox::new(
                DVec3::new(-200.5, -300.25, 380.0),
                DVec3::new(-40.0, -150.0, 560.125),
            ),
            origin: BoxOrigin::Drawn,
        });
        set.set(OrganBox {
            scan: "btcv_05".into(),
            organ: "liver".into(),
            bbox: WorldBox::new(
                DVec3::new(-190.0, -280.0, 300.0),
                DVec3::new(-30.0, -140.0, 470.0),
            ),
            origin: BoxOrigin::Accepted,
        });
        set
    }

    #[test]
    fn every_format_round_trips_the_boxes() {
        let set = sample();
        assert_eq!(BoxSet::from_json(&set.to_json()).unwrap(), set);
        assert_eq!(BoxSet::from_csv(&set.to_csv()).unwrap(), set);
        let slicer = BoxSet::from_slicer_markups(&set.to_slicer_markups()).unwrap();
        for (a, b) in set.boxes.iter().zip(&slicer.boxes) {
            assert_eq!(
                (a.scan.as_str(), a.organ.as_str()),
                (b.scan.as_str(), b.organ.as_str())
            );
            assert!(
                (a.bbox.min - b.bbox.min).length() < 1e-9
                    && (a.bbox.max - b.bbox.max).length() < 1e-9
            );
        }
        let dir = tempfile::tempdir().unwrap();
        for name in ["boxes.json", "boxes.csv", "boxes.mrk.json"] {
            let path = dir.path().join(name);
            set.save(&path).unwrap();
            let back = BoxSet::load(&path).unwrap();
            assert_eq!(back.boxes.len(), 2, "{name}");
            assert!(
                (back.boxes[0].bbox.min - set.boxes[0].bbox.min).length() < 1e-9,
                "{name}"
            );
        }
    }

    #[test]
    fn the_longest_ending_names_the_format() {
        let of = |name: &str| BoxFormat::from_path(Path::new(name));
        assert_eq!(of("a/boxes.mrk.json"), BoxFormat::SlicerMarkups);
        assert_eq!(of("BOXES.MRK.JSON"), BoxFormat::SlicerMarkups);
        assert_eq!(of("boxes.json"), BoxFormat::Json);
        assert_eq!(of("boxes.csv"), BoxFormat::Csv);
        assert_eq!(of("boxes.txt"), BoxFormat::Json);
        assert_eq!(of("boxesmrk.json"), BoxFormat::Json);
        for f in BoxFormat::ALL {
            assert_eq!(of(&format!("x.{}", f.extension())), f);
        }
    }

    #[test]
    fn slicer_gets_lps_coordinates() {
        let text = sample().to_slicer_markups();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let centre = &doc["markups"][0]["center"];
        // RAS centre (-120.25, -225.125, 470.0625) is LPS (120.25, 225.125, 470.0625).
        assert_eq!(centre[0].as_f64(), Some(120.25));
        assert_eq!(centre[1].as_f64(), Some(225.125));
        assert_eq!(doc["markups"][0]["coordinateSystem"], "LPS");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        assert!(
            BoxSet::from_csv("a,b\n")
                .unwrap_err()
                .contains("first line")
        );
        let row = format!("{CSV_HEADER}\nx,liver,1,2,3,4,5,NaN,drawn\n");
        assert!(BoxSet::from_csv(&row).unwrap_err().contains("not a number"));
        assert!(
            BoxSet::from_slicer_markups("{}")
                .unwrap_err()
                .contains("markups")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boxes.json");
        std::fs::write(&path, "[1, 2").unwrap();
        let e = BoxSet::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("boxes.json") && e.contains("not a box file"),
            "{e}"
        );
    }

    #[test]
    fn undo_and_redo_walk_the_edits() {
        let mut set = BoxSet::default();
        let mut history = History::default();
        for b in sample().boxes {
            history.record(&set);
            set.set(b);
        }
        assert_eq!(set.boxes.len(), 2);
        assert!(history.undo(&mut set));
        assert_eq!(set.boxes.len(), 1);
        assert!(history.undo(&mut set));
        assert!(set.boxes.is_empty());
        assert!(!history.undo(&mut set));
        assert!(history.redo(&mut set));
        assert_eq!(set.boxes.len(), 1);
        // A new edit drops what could have been redone.
        history.record(&set);
        set.boxes.clear();
        assert!(!history.redo(&mut set));
    }
}
