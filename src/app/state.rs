//! What the viewer shows and knows, free of any GUI type: the cohort, the crosshair in world
//! coordinates, window/level, the overlay, and the current landmark with its matches.

use std::path::PathBuf;
use std::sync::Arc;

use glam::DVec3;

use crate::annotations::{BoxOrigin, BoxSet, History, OrganBox};
use crate::ape_map::ApeMap;
use crate::boxes::{Support, calibrate_alpha_leave_one_out, edges_of_box, predict_box};
use crate::geometry::WorldBox;
use crate::retrieval::{MapIndex, Retrieved, Target, retrieve_many};
use crate::scan::Scan;
use crate::slicing::WindowLevel;

/// Where a scan of the cohort is in its life.
#[derive(Debug, Clone)]
pub enum ScanStatus {
    Loading,
    /// Embedding, with progress 0…1.
    Embedding(f32),
    Ready,
    Failed(String),
}

/// One scan of the cohort.
#[derive(Debug)]
pub struct CohortScan {
    pub name: String,
    pub path: PathBuf,
    pub status: ScanStatus,
    pub scan: Option<Arc<Scan>>,
    pub map: Option<Arc<ApeMap>>,
    pub index: Option<Arc<MapIndex>>,
    /// Organ centres (name, world RAS mm) from a label map beside the scan, if it has one.
    pub organs: Vec<(String, DVec3)>,
}

/// How APE maps are drawn over the scan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OverlayMode {
    Off,
    /// One channel through a colour map.
    Channel(usize),
    /// The three channels as red, green, blue.
    Rgb,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlaySettings {
    pub mode: OverlayMode,
    pub opacity: f32,
    /// Iso-lines of the shown channel(s) every `isoline_step` embedding units.
    pub isolines: bool,
    pub isoline_step: f32,
}

impl Default for OverlaySettings {
    fn default() -> Self {
        Self {
            mode: OverlayMode::Rgb,
            opacity: 0.4,
            isolines: false,
            isoline_step: 0.25,
        }
    }
}

/// A clicked landmark and where it lies on every scan of the cohort.
#[derive(Debug, Clone)]
pub struct Landmark {
    /// The scan it was clicked on.
    pub source: usize,
    pub world: DVec3,
    pub embedding: [f32; 3],
    /// Per cohort scan: the match (the source's own point on the source), or `None` where the
    /// scan has no map yet.
    pub matches: Vec<Option<Retrieved>>,
}

#[derive(Debug)]
pub struct ViewerState {
    pub cohort: Vec<CohortScan>,
    pub active: usize,
    /// The linked crosshair, world RAS mm, on the active scan.
    pub crosshair: DVec3,
    pub window: WindowLevel,
    pub overlay: OverlaySettings,
    pub landmark: Option<Landmark>,
    /// Clicking a view queries the cohort for the clicked point.
    pub click_queries: bool,
    /// What the status bar reports (errors, the last action).
    pub message: String,
    /// Organ boxes of the cohort, their edit history, the organ being drawn, and whether a
    /// left drag draws a box (instead of panning).
    pub boxes: BoxSet,
    pub history: History<BoxSet>,
    pub organ: String,
    pub draw_boxes: bool,
    /// Whether the renderer can slice on the GPU, and whether it does (else the CPU path).
    pub gpu_available: bool,
    pub gpu_slicing: bool,
}

impl Default for ViewerState {
    fn default() -> Self {
        Self {
            cohort: Vec::new(),
            active: 0,
            crosshair: DVec3::ZERO,
            window: WindowLevel::PRESETS[0].1,
            overlay: OverlaySettings::default(),
            landmark: None,
            click_queries: true,
            message: String::new(),
            boxes: BoxSet::default(),
            history: History::default(),
            organ: "liver".to_owned(),
            draw_boxes: false,
            gpu_available: false,
            gpu_slicing: false,
        }
    }
}

impl ViewerState {
    pub fn active_scan(&self) -> Option<&CohortScan> {
        self.cohort.get(self.active)
    }

    /// Adds a scan (still loading); returns its index.
    pub fn add(&mut self, path: PathBuf) -> usize {
        let series = crate::io::dicom::split_series_path(&path).map(|(dir, uid)| {
            // `folder · …<end of the series UID>`: short, and tells series of a study apart.
            let tail: String = uid
                .chars()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let folder = dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            format!("{folder} · …{tail}")
        });
        let name = series
            .or_else(|| crate::cohort::nifti_stem(&path))
            .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| path.display().to_string());
        self.cohort.push(CohortScan {
            name,
            path,
            status: ScanStatus::Loading,
            scan: None,
            map: None,
            index: None,
            organs: Vec::new(),
        });
        self.cohort.len() - 1
    }

    /// A scan has been read: when it is the active one and the crosshair is not on it yet,
    /// centre the crosshair in it.
    pub fn scan_loaded(&mut self, id: usize, scan: Arc<Scan>) {
        if let Some(entry) = self.cohort.get_mut(id) {
            if id == self.active {
                self.crosshair = scan.volume.world_bounds().centre();
            }
            entry.scan = Some(scan);
            entry.status = ScanStatus::Embedding(0.0);
        }
    }

    /// A scan's map is ready: it joins the queries (the current landmark is re-run).
    pub fn map_ready(&mut self, id: usize, map: Arc<ApeMap>, index: Arc<MapIndex>) {
        if let Some(entry) = self.cohort.get_mut(id) {
            entry.map = Some(map);
            entry.index = Some(index);
            entry.status = ScanStatus::Ready;
        }
        if let Some(l) = self.landmark.clone() {
            self.query(l.source, l.world);
        }
    }

    /// Makes scan `id` active; the crosshair goes to the current landmark's match there, if
    /// any, else to the scan's centre.
    pub fn activate(&mut self, id: usize) {
        if id >= self.cohort.len() {
            return;
        }
        self.active = id;
        let matched = self
            .landmark
            .as_ref()
            .and_then(|l| l.matches.get(id).copied().flatten());
        if let Some(m) = matched {
            self.crosshair = m.world;
        } else if let Some(scan) = &self.cohort[id].scan {
            self.crosshair = scan.volume.world_bounds().centre();
        }
    }

    /// Queries the cohort for the point `world` of scan `source`: its match on every scan
    /// with a map. Returns `false` (and says why) when the source has no map yet or the point
    /// lies outside it.
    pub fn query(&mut self, source: usize, world: DVec3) -> bool {
        let Some(map) = self.cohort.get(source).and_then(|s| s.map.clone()) else {
            self.message = "this scan is still being embedded".into();
            return false;
        };
        let Some(embedding) = map.embedding_at(world) else {
            self.message = "the point lies outside the scan's APE map".into();
            return false;
        };
        let ready: Vec<(usize, Target<'_>)> = self
            .cohort
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != source)
            .filter_map(|(i, s)| {
                Some((
                    i,
                    Target {
                        map: s.map.as_deref()?,
                        index: s.index.as_deref()?,
                    },
                ))
            })
            .collect();
        let targets: Vec<Target<'_>> = ready.iter().map(|(_, t)| *t).collect();
        let found = retrieve_many(&[embedding], &targets);
        let mut matches = vec![None; self.cohort.len()];
        matches[source] = Some(Retrieved {
            world,
            distance: 0.0,
        });
        if let Some(row) = found.first() {
            for ((i, _), r) in ready.iter().zip(row) {
                matches[*i] = Some(*r);
            }
        }
        let n = matches.iter().flatten().count() - 1;
        self.message = format!(
            "landmark ({:.1}, {:.1}, {:.1}) mm on {}: matched on {n} scan{}",
            world.x,
            world.y,
            world.z,
            self.cohort[source].name,
            if n == 1 { "" } else { "s" }
        );
        self.landmark = Some(Landmark {
            source,
            world,
            embedding,
            matches,
        });
        true
    }

    /// The landmark's match on scan `id`, if there is one.
    pub fn match_on(&self, id: usize) -> Option<Retrieved> {
        self.landmark
            .as_ref()
            .and_then(|l| l.matches.get(id).copied().flatten())
    }

    /// Undoes the last box edit; `false` when there is none.
    pub fn undo(&mut self) -> bool {
        self.history.undo(&mut self.boxes)
    }

    /// Redoes the last undone box edit; `false` when there is none.
    pub fn redo(&mut self) -> bool {
        self.history.redo(&mut self.boxes)
    }

    /// Sets the box of the current organ on scan `id` (one undo step).
    pub fn set_box(&mut self, id: usize, bbox: WorldBox, origin: BoxOrigin) {
        let Some(scan) = self.cohort.get(id).map(|s| s.name.clone()) else {
            return;
        };
        self.history.record(&self.boxes);
        self.boxes.set(OrganBox {
            scan,
            organ: self.organ.clone(),
            bbox,
            origin,
        });
    }

    /// Predicts the current organ's box on every scan that has a map and no drawn or accepted
    /// box of it, from all the drawn or accepted ones (few-shot, method.md), as one undo step.
    /// α for 0.99 recall is calibrated on the supports (leave one out; each support's box
    /// stands in for its organ) and stored with the prediction. Returns how many were made.
    pub fn predict_boxes(&mut self) -> usize {
        let organ = self.organ.clone();
        let is_support = |b: &OrganBox| {
            b.organ == organ && matches!(b.origin, BoxOrigin::Drawn | BoxOrigin::Accepted)
        };
        let supports: Vec<(usize, WorldBox)> = self
            .cohort
            .iter()
            .enumerate()
            .filter(|(_, s)| s.map.is_some())
            .filter_map(|(i, s)| {
                let b = self.boxes.get(&s.name, &organ)?;
                is_support(b).then_some((i, b.bbox))
            })
            .collect();
        if supports.is_empty() {
            self.message = format!("draw a {organ} box on an embedded scan first");
            return 0;
        }
        let support_refs: Vec<Support<'_>> = supports
            .iter()
            .filter_map(|(i, b)| {
                Some(Support {
                    map: self.cohort[*i].map.as_deref()?,
                    edges: edges_of_box(b),
                })
            })
            .collect();
        // Each support's box as a cloud of points, for recall.
        let clouds: Vec<Vec<glam::DVec3>> = supports.iter().map(|(_, b)| box_cloud(b)).collect();
        let cloud_refs: Vec<&[glam::DVec3]> = clouds.iter().map(Vec::as_slice).collect();
        let edges: Vec<[glam::DVec3; 6]> = support_refs.iter().map(|s| s.edges).collect();
        let alpha = calibrate_alpha_leave_one_out(
            &edges,
            &cloud_refs,
            |from, p, to| {
                let target = &self.cohort[supports[to].0];
                let target = Target {
                    map: target.map.as_deref()?,
                    index: target.index.as_deref()?,
                };
                target.locate(support_refs[from].map, p)
            },
            crate::boxes::TARGET_RECALL,
        );
        let alpha_note = alpha.map_or_else(
            || "α for 0.99 recall needs two supports".to_owned(),
            |a| format!("α {a:.2} for 0.99 recall"),
        );
        let alpha = alpha.unwrap_or(1.0);
        let mut predicted = Vec::new();
        for (i, scan) in self.cohort.iter().enumerate() {
            let (Some(map), Some(index)) = (scan.map.as_deref(), scan.index.as_deref()) else {
                continue;
            };
            if self.boxes.get(&scan.name, &organ).is_some_and(is_support) {
                continue;
            }
            let target = Target { map, index };
            if let Some(b) = predict_box(target, &support_refs) {
                predicted.push((i, b));
            }
        }
        if predicted.is_empty() {
            return 0;
        }
        self.history.record(&self.boxes);
        for (i, bbox) in &predicted {
            self.boxes.set(OrganBox {
                scan: self.cohort[*i].name.clone(),
                organ: organ.clone(),
                bbox: *bbox,
                origin: BoxOrigin::Predicted {
                    supports: supports.len(),
                    alpha,
                },
            });
        }
        self.message = format!(
            "{organ}: predicted on {} scan{} from {} support{} ({alpha_note})",
            predicted.len(),
            if predicted.len() == 1 { "" } else { "s" },
            supports.len(),
            if supports.len() == 1 { "" } else { "s" },
        );
        predicted.len()
    }
}

/// Points filling a box on a 9 × 9 × 9 lattice.
fn box_cloud(b: &WorldBox) -> Vec<glam::DVec3> {
    let n = 8;
    let mut points = Vec::with_capacity((n + 1) * (n + 1) * (n + 1));
    for k in 0..=n {
        for j in 0..=n {
            for i in 0..=n {
                let t = glam::DVec3::new(i as f64, j as f64, k as f64) / n as f64;
                points.push(b.min + (b.max - b.min) * t);
            }
        }
    }
    points
}
