//! What the viewer shows and knows, free of any GUI type: the cohort, the crosshair in world
//! coordinates, window/level, the overlay, and the current landmark with its matches.

use std::path::PathBuf;
use std::sync::Arc;

use glam::DVec3;

use ape::annotations::{BoxOrigin, BoxSet, History, OrganBox};
use ape::ape_map::ApeMap;
use ape::boxes::{FewShotBoxes, Support, ape_transfer};
use ape::geometry::WorldBox;
use ape::labels::Organs;
use ape::refine::PatchImage;
use ape::retrieval::{MapIndex, Target};
use ape::scan::Scan;
use ape::slicing::WindowLevel;
use ape::transfer::{Confidence, TransferMode, TransferSettings, Transferred, transfer};

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
    /// The scan's intensities for refined transfer.
    pub image: Option<Arc<PatchImage>>,
    /// Organ centres (name, world RAS mm) from a label map beside the scan, if it has one.
    pub organs: Vec<(String, DVec3)>,
    /// That label map's organs, which serve as few-shot supports.
    pub labelled: Option<Arc<Organs>>,
    /// Where the map runs back along S–I, once checked (`None`: it does not, or not yet).
    pub si_fault: Option<ape::SiFault>,
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
    /// Per cohort scan: the match with its confidence (the source's own point on the source),
    /// or `None` where the scan has no map yet.
    pub matches: Vec<Option<Transferred>>,
}

impl Landmark {
    /// The other scans' matches, most confident first.
    pub fn ranked(&self) -> Vec<(usize, Transferred)> {
        let mut out: Vec<(usize, Transferred)> = self
            .matches
            .iter()
            .enumerate()
            .filter(|(id, _)| *id != self.source)
            .filter_map(|(id, m)| Some((id, (*m)?)))
            .collect();
        out.sort_by(|a, b| b.1.confidence.score().total_cmp(&a.1.confidence.score()));
        out
    }
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
    /// The current landmark's matches being refined by the image on a thread: a click shows
    /// the consensus matches at once (tens of ms for 50 scans), the refined ones as they come.
    pub refinement: Option<std::sync::mpsc::Receiver<(usize, Transferred)>>,
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
            refinement: None,
        }
    }
}

impl ViewerState {
    pub fn active_scan(&self) -> Option<&CohortScan> {
        self.cohort.get(self.active)
    }

    /// Adds a scan (still loading); returns its index.
    pub fn add(&mut self, path: PathBuf) -> usize {
        let series = ape::io::dicom::split_series_path(&path).map(|(dir, uid)| {
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
            .or_else(|| ape::cohort::nifti_stem(&path))
            .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| path.display().to_string());
        self.cohort.push(CohortScan {
            name,
            path,
            status: ScanStatus::Loading,
            scan: None,
            map: None,
            index: None,
            image: None,
            organs: Vec::new(),
            labelled: None,
            si_fault: None,
        });
        self.cohort.len() - 1
    }

    /// A scan has been read: when it is the active one and the crosshair is not on it yet,
    /// centre the crosshair in it.
    /// Saves the boxes to `path`, refused when it is a file the cohort was read from (a scan
    /// or its label map, by any spelling or link) or a folder.
    pub fn save_boxes(&self, path: &std::path::Path) -> Result<(), String> {
        let inputs: Vec<PathBuf> = self
            .cohort
            .iter()
            .flat_map(|s| {
                std::iter::once(s.path.clone()).chain(ape::cohort::label_map_for(&s.path))
            })
            .collect();
        let inputs: Vec<_> = inputs
            .iter()
            .map(|p| ape::validate::Input::new("a file of the cohort", p))
            .collect();
        ape::validate::output_path(
            path,
            ape::validate::OutputKind::File,
            "the box file",
            &inputs,
        )
        .map_err(|e| e.to_string())?;
        self.boxes.save(path).map_err(|e| e.to_string())
    }

    pub fn scan_loaded(&mut self, id: usize, scan: Arc<Scan>) {
        if let Some(entry) = self.cohort.get_mut(id) {
            if id == self.active {
                self.crosshair = scan.volume.world_bounds().centre();
            }
            // Shown until the next message; the info panel keeps them on screen.
            if let Some(w) = scan.warnings().first() {
                self.message = format!("warning: {}: {}", entry.name, w.message);
            }
            entry.scan = Some(scan);
            entry.status = ScanStatus::Embedding(0.0);
        }
    }

    /// A scan's map is ready: it joins the queries (the current landmark is re-run).
    pub fn map_ready(
        &mut self,
        id: usize,
        map: Arc<ApeMap>,
        index: Arc<MapIndex>,
        image: Option<Arc<PatchImage>>,
    ) {
        if let Some(entry) = self.cohort.get_mut(id) {
            entry.map = Some(map);
            entry.index = Some(index);
            entry.image = image;
            entry.status = ScanStatus::Ready;
        }
        if let Some(l) = self.landmark.clone() {
            self.query(l.source, l.world);
        }
    }

    /// A scan's map was found to run back along S–I: kept with the scan (the sidebar and the
    /// info panel show it) and said in the status bar.
    pub fn si_fault_found(&mut self, id: usize, fault: ape::SiFault) {
        if let Some(entry) = self.cohort.get_mut(id) {
            self.message = format!("warning: the APE map of {} {fault}", entry.name);
            entry.si_fault = Some(fault);
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
        let Some(source_index) = self.cohort.get(source).and_then(|s| s.index.clone()) else {
            self.message = "this scan is still being embedded".into();
            return false;
        };
        let source_image = self.cohort.get(source).and_then(|s| s.image.clone());
        let from = Target {
            map: &map,
            index: &source_index,
            image: source_image.as_deref(),
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
                        image: s.image.as_deref(),
                    },
                ))
            })
            .collect();
        use rayon::prelude::*;
        let settings = TransferSettings::default();
        // Consensus now; the image's refinement (the default mode's second step) follows.
        let now = match TransferMode::DEFAULT {
            TransferMode::Refined => TransferMode::Consensus,
            mode => mode,
        };
        let found: Vec<(usize, Option<Transferred>)> = ready
            .par_iter()
            .map(|&(i, to)| (i, transfer(from, world, to, now, &settings)))
            .collect();
        self.refinement = (now != TransferMode::DEFAULT)
            .then(|| self.refine_in_background(source, world))
            .flatten();
        let mut matches = vec![None; self.cohort.len()];
        matches[source] = Some(Transferred {
            world,
            confidence: Confidence {
                embedding_distance: 0.0,
                cycle_error_mm: 0.0,
                inliers: 0,
                supports: 0,
                outside_fov: false,
                image_ncc: None,
            },
            mode: TransferMode::DEFAULT,
        });
        for (i, t) in found {
            matches[i] = t;
        }
        let others = matches.iter().flatten().count() - 1;
        let doubtful = matches
            .iter()
            .enumerate()
            .filter(|(i, m)| *i != source && m.is_some_and(|m| m.confidence.doubtful()))
            .count();
        self.message = format!(
            "landmark ({:.1}, {:.1}, {:.1}) mm on {}: matched on {others} scan{}{}",
            world.x,
            world.y,
            world.z,
            self.cohort[source].name,
            if others == 1 { "" } else { "s" },
            if doubtful > 0 {
                format!(", {doubtful} doubtful (probably outside the scan, or a poor match)")
            } else {
                String::new()
            }
        );
        self.landmark = Some(Landmark {
            source,
            world,
            embedding,
            matches,
        });
        true
    }

    /// Starts refining the matches of `world` on `source` by the image, on a thread; `None`
    /// when the source has no image (then consensus stays).
    fn refine_in_background(
        &self,
        source: usize,
        world: DVec3,
    ) -> Option<std::sync::mpsc::Receiver<(usize, Transferred)>> {
        type Searchable = (Arc<ApeMap>, Arc<MapIndex>, Arc<PatchImage>);
        let searchable = |s: &CohortScan| -> Option<Searchable> {
            Some((s.map.clone()?, s.index.clone()?, s.image.clone()?))
        };
        let from = searchable(self.cohort.get(source)?)?;
        let targets: Vec<(usize, Searchable)> = self
            .cohort
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != source)
            .filter_map(|(i, s)| Some((i, searchable(s)?)))
            .collect();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use rayon::prelude::*;
            fn target((map, index, image): &Searchable) -> Target<'_> {
                Target {
                    map,
                    index,
                    image: Some(image),
                }
            }
            let settings = TransferSettings::default();
            targets.par_iter().for_each_with(sender, |sender, (i, to)| {
                let refined = transfer(
                    target(&from),
                    world,
                    target(to),
                    TransferMode::Refined,
                    &settings,
                );
                // A newer click dropped the receiver: nothing left to tell.
                if let Some(t) = refined {
                    let _ = sender.send((*i, t));
                }
            });
        });
        Some(receiver)
    }

    /// Takes the refined matches that have arrived into the landmark (the crosshair follows
    /// the active scan's match); whether refinement is still running.
    pub fn poll_refinement(&mut self) -> bool {
        let Some(receiver) = &self.refinement else {
            return false;
        };
        let mut running = true;
        loop {
            match receiver.try_recv() {
                Ok((id, refined)) => {
                    let Some(slot) = self.landmark.as_mut().and_then(|l| l.matches.get_mut(id))
                    else {
                        continue;
                    };
                    if id == self.active && slot.is_some_and(|m| m.world == self.crosshair) {
                        self.crosshair = refined.world;
                    }
                    *slot = Some(refined);
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    running = false;
                    break;
                }
            }
        }
        if !running {
            self.refinement = None;
        }
        running
    }

    /// Whether the current landmark's matches are still being refined.
    pub fn refining(&self) -> bool {
        self.refinement.is_some()
    }

    /// The landmark's match on scan `id`, if there is one.
    pub fn match_on(&self, id: usize) -> Option<Transferred> {
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

    /// Predicts the current organ's box on every embedded scan that is not a support, as one
    /// undo step, by the library's few-shot pipeline ([`FewShotBoxes`]). The supports are the
    /// embedded scans with a drawn or accepted box of the organ, else with the organ in the
    /// label map beside them; α for 0.99 recall is calibrated on them (leave one out) and stored
    /// with each prediction. Returns how many were made.
    pub fn predict_boxes(&mut self) -> usize {
        let organ = self.organ.clone();
        let supports = self.supports_of(&organ);
        if supports.is_empty() {
            self.message = format!(
                "draw a {organ} box on an embedded scan first (or open scans with a {organ} in their label maps)"
            );
            return 0;
        }
        let support_ids: Vec<usize> = supports.iter().map(|(i, _)| *i).collect();
        let predictor =
            FewShotBoxes::calibrated(supports.into_iter().map(|(_, s)| s).collect(), ape_transfer);
        let alpha_note = predictor.alpha().map_or_else(
            || "α for 0.99 recall needs two supports".to_owned(),
            |a| format!("α {a:.2} for 0.99 recall"),
        );
        let predicted: Vec<(usize, WorldBox)> = self
            .cohort
            .iter()
            .enumerate()
            .filter(|(i, _)| !support_ids.contains(i))
            .filter_map(|(i, s)| {
                let target = Target {
                    map: s.map.as_deref()?,
                    index: s.index.as_deref()?,
                    image: s.image.as_deref(),
                };
                Some((i, predictor.predict(&target)?.bbox))
            })
            .collect();
        if predicted.is_empty() {
            return 0;
        }
        let (n_supports, alpha) = (support_ids.len(), predictor.alpha().unwrap_or(1.0));
        drop(predictor);
        let boxes: Vec<OrganBox> = predicted
            .iter()
            .map(|(i, bbox)| OrganBox {
                scan: self.cohort[*i].name.clone(),
                organ: organ.clone(),
                bbox: *bbox,
                origin: BoxOrigin::Predicted {
                    supports: n_supports,
                    alpha,
                },
            })
            .collect();
        self.edit_boxes(|set| {
            for b in boxes {
                set.set(b);
            }
        });
        self.message = format!(
            "{organ}: predicted on {} scan{} from {} support{} ({alpha_note})",
            predicted.len(),
            if predicted.len() == 1 { "" } else { "s" },
            n_supports,
            if n_supports == 1 { "" } else { "s" },
        );
        predicted.len()
    }

    /// The few-shot supports of an organ among the embedded scans: the drawn or accepted boxes
    /// of it; where there are none, the organ in the label maps beside the scans.
    fn supports_of(&self, organ: &str) -> Vec<(usize, Support<'_, Target<'_>>)> {
        let targets = self.cohort.iter().enumerate().filter_map(|(i, s)| {
            let target = Target {
                map: s.map.as_deref()?,
                index: s.index.as_deref()?,
                image: s.image.as_deref(),
            };
            Some((i, s, target))
        });
        let drawn: Vec<_> = targets
            .clone()
            .filter_map(|(i, s, target)| {
                let b = self.boxes.get(&s.name, organ)?;
                matches!(b.origin, BoxOrigin::Drawn | BoxOrigin::Accepted)
                    .then(|| (i, Support::from_drawn_box(target, &b.bbox)))
            })
            .collect();
        if !drawn.is_empty() {
            return drawn;
        }
        targets
            .filter_map(|(i, s, target)| {
                let (stats, voxels) = s.labelled.as_deref()?.named(organ)?;
                Some((i, Support::from_organ(target, stats, voxels)))
            })
            .collect()
    }

    /// Applies one edit to the boxes as one undo step: every box change goes through here (or
    /// through [`Self::drag_box`], whose first frame does).
    pub fn edit_boxes(&mut self, edit: impl FnOnce(&mut BoxSet)) {
        self.history.record(&self.boxes);
        edit(&mut self.boxes);
    }

    /// Accepts the prediction at `index` of the box list as it is (one undo step).
    pub fn accept_box(&mut self, index: usize) {
        if index < self.boxes.boxes.len() {
            self.edit_boxes(|set| set.boxes[index].origin = BoxOrigin::Accepted);
        }
    }

    /// Replaces every box, as when a box file is loaded (one undo step).
    pub fn replace_boxes(&mut self, set: BoxSet) {
        self.edit_boxes(|boxes| *boxes = set);
    }

    /// The box a mouse drag gives so far: the drag's first frame makes the undo step, its later
    /// frames change the box within that step, so a whole drag undoes at once.
    pub fn drag_box(&mut self, organ_box: OrganBox, first_frame: bool) {
        if first_frame {
            self.edit_boxes(|set| set.set(organ_box));
        } else {
            self.boxes.set(organ_box);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn liver(x: f64, origin: BoxOrigin) -> OrganBox {
        OrganBox {
            scan: "a".into(),
            organ: "liver".into(),
            bbox: WorldBox::new(DVec3::ZERO, DVec3::new(x, 10.0, 10.0)),
            origin,
        }
    }

    #[test]
    fn a_drag_over_many_frames_is_one_undo_step() {
        let mut state = ViewerState::default();
        state.drag_box(liver(10.0, BoxOrigin::Drawn), true);
        state.drag_box(liver(20.0, BoxOrigin::Drawn), true);
        for x in [30.0, 40.0, 50.0] {
            state.drag_box(liver(x, BoxOrigin::Drawn), false);
        }
        assert!(state.undo());
        assert_eq!(state.boxes.get("a", "liver").unwrap().bbox.max.x, 10.0);
        assert!(state.undo());
        assert!(state.boxes.boxes.is_empty());
        assert!(!state.undo());
    }

    #[test]
    fn accepting_and_replacing_are_undo_steps() {
        let mut state = ViewerState::default();
        let predicted = BoxOrigin::Predicted {
            supports: 1,
            alpha: 1.2,
        };
        state.edit_boxes(|set| set.set(liver(10.0, predicted)));
        state.accept_box(0);
        state.accept_box(5); // no such box: nothing happens, no step
        assert_eq!(state.boxes.boxes[0].origin, BoxOrigin::Accepted);
        state.replace_boxes(BoxSet::default());
        assert!(state.boxes.boxes.is_empty());
        assert!(state.undo());
        assert_eq!(state.boxes.boxes[0].origin, BoxOrigin::Accepted);
        assert!(state.undo());
        assert_eq!(state.boxes.boxes[0].origin, predicted);
    }
}
