//! What the viewer shows and knows, free of any GUI type: the cohort, the crosshair in world
//! coordinates, window/level, the overlay, and the current landmark with its matches.

use std::path::PathBuf;
use std::sync::Arc;

use glam::DVec3;

use crate::ape_map::ApeMap;
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
        }
    }
}

impl ViewerState {
    pub fn active_scan(&self) -> Option<&CohortScan> {
        self.cohort.get(self.active)
    }

    /// Adds a scan (still loading); returns its index.
    pub fn add(&mut self, path: PathBuf) -> usize {
        let name = crate::cohort::nifti_stem(&path)
            .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| path.display().to_string());
        self.cohort.push(CohortScan {
            name,
            path,
            status: ScanStatus::Loading,
            scan: None,
            map: None,
            index: None,
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
}
