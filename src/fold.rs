//! Whether an APE map runs one way along S–I. Its S–I channel (channel 2: the difference-axis
//! anchor aligns channel i with world axis i, RAS) should rise monotonically as one moves
//! superiorly through the body. On chest-abdomen scans the bundled model's map can fold: the
//! channel rises from the pelvis to the lung bases, falls back around the heart, then rises
//! again, and points in and around that range are matched tens of mm from where they belong.
//! Nothing else tells the user, so this check does.

use glam::DVec3;
use rayon::prelude::*;
use serde::Serialize;

use crate::ape_map::ApeMap;
use crate::geometry::Affine;
use crate::scan::Scan;

/// The embedding channel that runs S–I.
const SI_CHANNEL: usize = 2;

/// A fold shallower than this (mm of height: how far below its peak the map first had the
/// trough's level) is not reported. Map cells are 12–15 mm apart and the slice medians of a
/// good map wobble by about a mm (drops under 0.01 units on abdominal scans), while the folds
/// seen on chest scans are 50 mm deep and more: below about one map cell, a misplaced point
/// stays within the map's own resolution.
const FOLD_TOLERANCE_MM: f64 = 15.0;

/// A slice needs this many body cells: the median of a handful of cells at the skin or on
/// the table is noise.
const MIN_BODY_CELLS: usize = 8;

/// ... and this share of the fullest slice's body cells: the tips of the body (shoulders,
/// feet, a slice that only grazes it) hold cells whose embeddings training never asked to mean
/// a height.
const MIN_BODY_SHARE: f64 = 0.2;

/// Fewer slices than this give no slope worth judging by.
const MIN_SLICES: usize = 3;

/// A range of heights over which the map's S–I channel runs back: it lies below a level it
/// already reached further down.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SuperiorFold {
    /// RAS z (mm), lowest and highest, over which the slice medians of the S–I channel lie
    /// below their earlier maximum: from the slice of that maximum to where the profile
    /// reaches it again (or the map's last slice).
    pub z_range_mm: [f64; 2],
    /// RAS z (mm) of the slice furthest below that maximum.
    pub trough_z_mm: f64,
    /// RAS z (mm) below the maximum where the profile first had the trough's level (the
    /// lowest slice if it never had): a point at the trough is matched about there. A
    /// physical measure of the fold that needs no slope.
    pub same_level_z_mm: f64,
    /// How far the channel falls back, in embedding units.
    pub drop_units: f64,
    /// The fold's depth in height: from `same_level_z_mm` up to the peak (the start of
    /// `z_range_mm`). Read off the profile itself, not through a slope, which the fold's own
    /// backward run would lower (on a chest scan to a third of the rising parts' rate).
    pub depth_mm: f64,
    /// The map's overall slope along S (least squares over slice medians), units per mm.
    pub slope_per_mm: f64,
}

/// What is wrong with the way a map runs along S–I.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SiFault {
    /// The S–I channel runs back over a range of heights by more than the tolerance.
    Fold(SuperiorFold),
    /// The S–I channel does not rise superiorly overall: the map does not run S–I at all.
    NotRising { slope_per_mm: f64 },
}

impl SiFault {
    /// What was found, without what ape did about it: the end of a sentence whose subject is
    /// the map ("the APE map of X …").
    pub fn as_found(&self) -> String {
        match self {
            SiFault::Fold(fold) => format!(
                "folded along S–I: from z = {:.0} to {:.0} mm (RAS) it ran back {:.0} mm deep \
                 (z = {:.0} mm read as z = {:.0} mm)",
                fold.z_range_mm[0],
                fold.z_range_mm[1],
                fold.depth_mm,
                fold.trough_z_mm,
                fold.same_level_z_mm
            ),
            SiFault::NotRising { slope_per_mm } => format!(
                "does not run S–I: its S–I channel changes by {slope_per_mm:.4} units per mm \
                 superiorly instead of rising"
            ),
        }
    }
}

impl std::fmt::Display for SiFault {
    /// [`SiFault::as_found`] and what it means for the points found on the map once
    /// [`unfolded`] has been applied, as everywhere in ape.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SiFault::Fold(_) => write!(
                f,
                "{}; undone by shifting the map above the fold's start to rise on, so points \
                 found above it are less certain",
                self.as_found()
            ),
            SiFault::NotRising { .. } => {
                write!(f, "{}; points found on it are unreliable", self.as_found())
            }
        }
    }
}

/// Checks that `map`, the APE map of `scan`, rises along S–I: `None` when it does (within
/// 15 mm), or when too few slices lie inside the body to tell. Only cells inside the body
/// count ([`Scan::is_body_at`], as retrieval's), since air, table and padding are free to take
/// any embedding.
pub fn superior_fold(map: &ApeMap, scan: &Scan) -> Option<SiFault> {
    judge(&si_profile(map, |world| scan.is_body_at(world)))
}

/// `map` with its folds along S–I undone, and the first fault found on it as it came.
///
/// Within one scan, training asks the S–I channel to rise with height; a fold breaks the
/// model's own objective, and the scan's affine says which slice lies above which. So the
/// inferior part is kept (the abdomen, where every training scan has anatomy) and from the
/// fold's peak up each slice's S–I channel is shifted: over the fold, the profile continues
/// from the peak at the rate the map rises where it does rise; above it, the map's own rises
/// resume from there. Cells keep their other channels and their differences within a slice.
/// Up to three folds are undone, deepest first. A map that does not rise at all is returned
/// as it is, with its fault.
pub fn unfolded(map: ApeMap, scan: &Scan) -> (ApeMap, Option<SiFault>) {
    let inside = |world: DVec3| scan.is_body_at(world);
    let slices = map.shape()[superior_axis(map.affine())];
    let mut profile = si_profile(&map, inside);
    let first = judge(&profile);
    let mut fault = first;
    let mut current = map;
    for _ in 0..MAX_UNFOLDS {
        let Some(SiFault::Fold(fold)) = fault else {
            break;
        };
        let Some(offsets) = unfolding_offsets(&profile, &fold, slices) else {
            break;
        };
        current = shifted(current, &offsets);
        profile = si_profile(&current, inside);
        fault = judge(&profile);
    }
    (current, first)
}

/// At most this many folds are undone in one map: the chest scans seen so far have one.
const MAX_UNFOLDS: usize = 3;

/// Per grid slice along the superior axis, what to add to the S–I channel to undo `fold`
/// (slices outside the profile take their nearest profiled neighbour's offset, by height).
fn unfolding_offsets(
    profile: &[SliceLevel],
    fold: &SuperiorFold,
    slices: usize,
) -> Option<Vec<f32>> {
    let peak = profile.iter().position(|s| s.z_mm >= fold.z_range_mm[0])?;
    // The rate where the map rises: the median of its rising steps (a fitted slope would be
    // lowered by the fold itself).
    let mut rates: Vec<f32> = profile
        .windows(2)
        .filter(|w| w[1].z_mm > w[0].z_mm && w[1].median > w[0].median)
        .map(|w| ((w[1].median - w[0].median) / (w[1].z_mm - w[0].z_mm)) as f32)
        .collect();
    let rate = median(&mut rates)?;
    // The first slice above the trough back at the peak's level: there the map's own rises
    // resume.
    let trough = profile.iter().position(|s| s.z_mm >= fold.trough_z_mm)?;
    let level = profile[peak].median;
    let resume = profile[trough..]
        .iter()
        .position(|s| s.median >= level)
        .map_or(profile.len(), |i| trough + i);
    let mut wanted: Vec<f64> = profile.iter().map(|s| s.median).collect();
    for i in peak + 1..profile.len() {
        wanted[i] = if i < resume {
            wanted[peak] + rate * (profile[i].z_mm - profile[peak].z_mm)
        } else {
            let step = if i == resume {
                rate * (profile[i].z_mm - profile[i - 1].z_mm)
            } else {
                profile[i].median - profile[i - 1].median
            };
            wanted[i - 1] + step
        };
    }
    let by_index: Vec<(usize, f64, f32)> = profile
        .iter()
        .zip(&wanted)
        .map(|(s, w)| (s.index, s.z_mm, (w - s.median) as f32))
        .collect();
    // Slices left out of the profile (too little body): the offset of the nearest profiled
    // slice by index, which runs monotonically with height along the superior axis.
    Some(
        (0..slices)
            .map(|index| {
                by_index
                    .iter()
                    .min_by_key(|(i, _, _)| i.abs_diff(index))
                    .map_or(0.0, |&(_, _, offset)| offset)
            })
            .collect(),
    )
}

/// `map` with `offsets[s]` added to the S–I channel of every cell of slice `s` along its
/// superior axis.
fn shifted(map: ApeMap, offsets: &[f32]) -> ApeMap {
    let axis = superior_axis(map.affine());
    let mut cells = map.into_cells();
    for index in 0..cells.data().len() {
        if let Some(offset) = offsets.get(cells.voxel_of(index)[axis]) {
            cells.data_mut()[index][SI_CHANNEL] += offset;
        }
    }
    ApeMap::new(cells)
}

/// One slice of the map across S: its height and the median of its S–I channel.
#[derive(Debug, Clone, Copy)]
struct SliceLevel {
    /// The slice's index along the map's superior grid axis.
    index: usize,
    /// Mean RAS z of its body cells (a slice of an oblique grid is not level).
    z_mm: f64,
    median: f64,
}

/// The grid axis most aligned with world S (either sign).
fn superior_axis(affine: &Affine) -> usize {
    let directions = affine.directions();
    (0..3)
        .max_by(|&a, &b| {
            let s = |axis: usize| directions.col(axis).z.abs();
            s(a).total_cmp(&s(b))
        })
        .unwrap_or(2)
}

/// The slice medians of the S–I channel over body cells, inferior to superior; slices with too
/// few body cells are left out.
fn si_profile(map: &ApeMap, inside: impl Fn(DVec3) -> bool + Sync) -> Vec<SliceLevel> {
    let cells = map.cells();
    let shape = cells.shape();
    let axis = superior_axis(map.affine());
    let (u, v) = ((axis + 1) % 3, (axis + 2) % 3);
    // Per slice: the channel's values and the sum of the z of its body cells.
    let slices: Vec<(Vec<f32>, f64)> = (0..shape[axis])
        .into_par_iter()
        .map(|s| {
            let mut values = Vec::new();
            let mut z_sum = 0.0;
            for a in 0..shape[u] {
                for b in 0..shape[v] {
                    let mut voxel = [0; 3];
                    voxel[axis] = s;
                    voxel[u] = a;
                    voxel[v] = b;
                    let Some(e) = cells.get(voxel[0], voxel[1], voxel[2]) else {
                        continue;
                    };
                    let world = cells.voxel_to_world(voxel);
                    if e[SI_CHANNEL].is_finite() && inside(world) {
                        values.push(e[SI_CHANNEL]);
                        z_sum += world.z;
                    }
                }
            }
            (values, z_sum)
        })
        .collect();
    let fullest = slices.iter().map(|(v, _)| v.len()).max().unwrap_or(0);
    let min_cells = MIN_BODY_CELLS.max((fullest as f64 * MIN_BODY_SHARE).ceil() as usize);
    let mut profile: Vec<SliceLevel> = slices
        .into_iter()
        .enumerate()
        .filter(|(_, (values, _))| values.len() >= min_cells)
        .filter_map(|(index, (mut values, z_sum))| {
            Some(SliceLevel {
                index,
                z_mm: z_sum / values.len() as f64,
                median: median(&mut values)?,
            })
        })
        .collect();
    profile.sort_by(|a, b| a.z_mm.total_cmp(&b.z_mm));
    profile
}

fn median(values: &mut [f32]) -> Option<f64> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let (lower, upper, _) = values.select_nth_unstable_by(n / 2, f32::total_cmp);
    let upper = f64::from(*upper);
    if n % 2 == 1 {
        return Some(upper);
    }
    let below = lower.iter().copied().max_by(f32::total_cmp).map(f64::from);
    Some(below.map_or(upper, |l| (l + upper) / 2.0))
}

/// Least-squares slope of the medians against z; `None` when all slices share one height.
fn slope(profile: &[SliceLevel]) -> Option<f64> {
    let n = profile.len() as f64;
    let z_mean = profile.iter().map(|s| s.z_mm).sum::<f64>() / n;
    let m_mean = profile.iter().map(|s| s.median).sum::<f64>() / n;
    let (mut szm, mut szz) = (0.0, 0.0);
    for s in profile {
        szm += (s.z_mm - z_mean) * (s.median - m_mean);
        szz += (s.z_mm - z_mean).powi(2);
    }
    (szz > 1e-9).then(|| szm / szz)
}

/// The deepest drop of an inferior-to-superior profile below its running maximum, judged.
fn judge(profile: &[SliceLevel]) -> Option<SiFault> {
    if profile.len() < MIN_SLICES {
        return None;
    }
    let slope_per_mm = slope(profile)?;
    if slope_per_mm <= 0.0 {
        return Some(SiFault::NotRising { slope_per_mm });
    }
    // (slice of the running maximum, slice furthest below it, the drop)
    let mut peak = 0;
    let mut deepest: Option<(usize, usize, f64)> = None;
    for (i, s) in profile.iter().enumerate() {
        if s.median > profile[peak].median {
            peak = i;
        }
        let drop = profile[peak].median - s.median;
        if drop > deepest.map_or(0.0, |d| d.2) {
            deepest = Some((peak, i, drop));
        }
    }
    let (peak, trough, drop_units) = deepest?;
    // Where the profile first reached the trough's level, below the peak (between two slices):
    // a point at the trough reads as one there. The depth below the peak is the fold's size.
    let low = profile[trough].median;
    let same_level = profile[..=peak]
        .windows(2)
        .find(|w| w[1].median >= low)
        .map_or(profile[0].z_mm, |w| {
            if w[0].median >= low {
                w[0].z_mm
            } else {
                crossing(w, low)
            }
        });
    let depth_mm = profile[peak].z_mm - same_level;
    if depth_mm <= FOLD_TOLERANCE_MM {
        return None;
    }
    // Where the profile climbs back to the peak's level, after the trough.
    let level = profile[peak].median;
    let top = profile.last()?.z_mm;
    let end = profile[trough..]
        .windows(2)
        .find(|w| w[1].median >= level)
        .map_or(top, |w| crossing(w, level));
    Some(SiFault::Fold(SuperiorFold {
        z_range_mm: [profile[peak].z_mm, end],
        trough_z_mm: profile[trough].z_mm,
        same_level_z_mm: same_level,
        drop_units,
        depth_mm,
        slope_per_mm,
    }))
}

/// The height between two neighbouring slices where the profile, rising from the first to the
/// second, reaches `level` (linearly).
fn crossing(pair: &[SliceLevel], level: f64) -> f64 {
    let (a, b) = (pair[0], pair[pair.len() - 1]);
    let t = (level - a.median) / (b.median - a.median).max(1e-12);
    a.z_mm + t.clamp(0.0, 1.0) * (b.z_mm - a.z_mm)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

    use glam::DMat3;

    use super::*;
    use crate::volume::Volume;

    /// The slice medians of a folded chest-abdomen map, inferior to superior, 15 mm apart.
    const FOLDED: [f32; 23] = [
        0.28, 0.42, 0.53, 0.62, 0.70, 0.77, 0.83, 0.88, 0.92, 0.87, 0.73, 0.53, 0.39, 0.36, 0.39,
        0.50, 0.63, 0.78, 0.95, 1.14, 1.37, 1.58, 1.76,
    ];

    /// Slices along S: 15 mm apart, on the first grid axis, running inferiorly (negative step),
    /// so that neither axis order nor sign can be assumed. 12 × 10 cells across.
    const SLICES: usize = 23;
    const TOP_Z: f64 = 100.0;

    fn map_affine() -> Affine {
        let linear = DMat3::from_cols(
            DVec3::new(0.0, 0.0, -15.0),
            DVec3::new(10.0, 0.0, 0.0),
            DVec3::new(0.0, 10.0, 0.0),
        );
        Affine::new(linear, DVec3::new(-60.0, -50.0, TOP_Z)).unwrap()
    }

    /// RAS z of slice `i` counted from the inferior end.
    fn z_of(i: usize) -> f64 {
        TOP_Z - 15.0 * (SLICES - 1 - i) as f64
    }

    /// A map whose S–I channel is `inside(i)` on body cells of slice `i` (counted from the
    /// inferior end) and `outside(i)` elsewhere; `body` is whether a world point is body.
    fn map_with(
        inside: impl Fn(usize) -> f32,
        outside: impl Fn(usize) -> f32,
        body: impl Fn(DVec3) -> bool,
    ) -> ApeMap {
        let affine = map_affine();
        let cells = Volume::from_fn([SLICES, 12, 10], affine, |s, j, k| {
            let w = affine.to_world(DVec3::new(s as f64, j as f64, k as f64));
            let i = SLICES - 1 - s;
            let si = if body(w) { inside(i) } else { outside(i) };
            [(w.x / 100.0) as f32, (w.y / 100.0) as f32, si]
        })
        .unwrap();
        ApeMap::new(cells)
    }

    /// A scan in HU covering the map's grid: soft tissue inside the world box `body`, air
    /// elsewhere.
    fn scan_with_body(body: (DVec3, DVec3)) -> Scan {
        let origin = DVec3::new(-70.0, -60.0, TOP_Z - 15.0 * SLICES as f64);
        let affine = Affine::from_spacing(DVec3::new(4.0, 4.0, 5.0), origin).unwrap();
        let volume = crate::phantom::box_body([40, 35, 75], affine, body).unwrap();
        Scan::from_hu(volume, "synthetic.nii").unwrap()
    }

    /// A body over the whole map along S, filling part of each slice.
    fn whole_body() -> (DVec3, DVec3) {
        (
            DVec3::new(-45.0, -35.0, -1000.0),
            DVec3::new(35.0, 25.0, 1000.0),
        )
    }

    fn in_box(b: (DVec3, DVec3)) -> impl Fn(DVec3) -> bool {
        move |w| w.cmpge(b.0).all() && w.cmple(b.1).all()
    }

    #[test]
    fn a_planted_fold_is_found_at_its_physical_heights() {
        let body = whole_body();
        let scan = scan_with_body(body);
        // Air cells rise steadily: they must not hide the fold.
        let map = map_with(|i| FOLDED[i], |i| i as f32, in_box(body));
        assert_eq!(superior_axis(map.affine()), 0);
        let Some(SiFault::Fold(fold)) = superior_fold(&map, &scan) else {
            panic!("no fold found: {:?}", superior_fold(&map, &scan));
        };
        // The peak (0.92) is slice 8; the profile is lowest at slice 13 (0.36) and climbs back
        // to 0.92 between slices 17 (0.78) and 18 (0.95).
        let end = z_of(17) + 15.0 * (0.92 - 0.78) / (0.95 - 0.78);
        assert!((fold.z_range_mm[0] - z_of(8)).abs() < 1e-6, "{fold:?}");
        assert!((fold.z_range_mm[1] - end).abs() < 0.1, "{fold:?}");
        assert!((fold.trough_z_mm - z_of(13)).abs() < 1e-6, "{fold:?}");
        // The trough's 0.36 was first reached between slices 0 (0.28) and 1 (0.42).
        let same = z_of(0) + 15.0 * (0.36 - 0.28) / (0.42 - 0.28);
        assert!((fold.same_level_z_mm - same).abs() < 0.1, "{fold:?}");
        assert!((fold.drop_units - 0.56).abs() < 1e-5, "{fold:?}");
        // numpy.polyfit of the profile against z: 0.0023676 units per mm.
        assert!((fold.slope_per_mm - 0.0023676).abs() < 1e-6, "{fold:?}");
        assert!((fold.depth_mm - (z_of(8) - same)).abs() < 0.1, "{fold:?}");
        let text = SiFault::Fold(fold).to_string();
        assert!(text.contains("from z = -110 to 37 mm"), "{text}");
        assert!(
            text.contains(&format!("{:.0} mm deep", z_of(8) - same)),
            "{text}"
        );
    }

    #[test]
    fn a_monotone_map_has_no_fold() {
        let body = whole_body();
        let scan = scan_with_body(body);
        let map = map_with(|i| 0.2 + 0.15 * i as f32, |_| 0.0, in_box(body));
        assert_eq!(superior_fold(&map, &scan), None);
    }

    #[test]
    fn a_wiggle_under_the_tolerance_is_no_fold() {
        let body = whole_body();
        let scan = scan_with_body(body);
        // 0.01 units per mm; every other slice 0.05 units (5 mm) back.
        let rising = |i: usize| 0.15 * i as f32 - if i % 2 == 1 { 0.2 } else { 0.0 };
        let map = map_with(rising, |_| 0.0, in_box(body));
        assert_eq!(superior_fold(&map, &scan), None);
        // One slice 0.5 units back, below the level of two slices under it, is a fold.
        let deeper = |i: usize| 0.15 * i as f32 - if i == 11 { 0.5 } else { 0.0 };
        let map = map_with(deeper, |_| 0.0, in_box(body));
        assert!(matches!(superior_fold(&map, &scan), Some(SiFault::Fold(_))));
    }

    #[test]
    fn slices_outside_the_body_are_ignored() {
        // The body spans slices 3 to 18 only; above and below, and around it in every slice,
        // the map falls superiorly (as air may), and would fold the profile if it counted.
        let body = (
            DVec3::new(-45.0, -35.0, z_of(3) - 1.0),
            DVec3::new(35.0, 25.0, z_of(18) + 1.0),
        );
        let scan = scan_with_body(body);
        let map = map_with(|i| 0.15 * i as f32, |i| 5.0 - 0.3 * i as f32, in_box(body));
        assert_eq!(superior_fold(&map, &scan), None);
        let profile = si_profile(&map, |w| scan.is_body_at(w));
        assert_eq!(profile.len(), 16);
        assert!((profile[0].z_mm - z_of(3)).abs() < 1e-6);
        // Counted everywhere, the same map does not rise at all.
        assert!(matches!(
            judge(&si_profile(&map, |_| true)),
            Some(SiFault::NotRising { .. })
        ));
    }

    #[test]
    fn a_map_that_falls_superiorly_is_not_rising() {
        let body = whole_body();
        let scan = scan_with_body(body);
        let map = map_with(|i| 3.0 - 0.15 * i as f32, |_| 0.0, in_box(body));
        let Some(SiFault::NotRising { slope_per_mm }) = superior_fold(&map, &scan) else {
            panic!("{:?}", superior_fold(&map, &scan));
        };
        assert!((slope_per_mm + 0.01).abs() < 1e-6);
    }

    #[test]
    fn unfolding_keeps_the_inferior_part_and_makes_the_map_rise() {
        let body = whole_body();
        let scan = scan_with_body(body);
        let map = map_with(|i| FOLDED[i], |i| i as f32, in_box(body));
        let (unfolded_map, fault) = unfolded(map.clone(), &scan);
        assert!(matches!(fault, Some(SiFault::Fold(_))), "{fault:?}");
        assert_eq!(superior_fold(&unfolded_map, &scan), None);
        let profile = si_profile(&unfolded_map, |w| scan.is_body_at(w));
        assert_eq!(profile.len(), SLICES);
        // Up to the peak (slice 8) nothing moves; above it the profile rises at every step.
        for (i, s) in profile.iter().enumerate() {
            if i <= 8 {
                assert!((s.median - f64::from(FOLDED[i])).abs() < 1e-6, "{i}: {s:?}");
            } else {
                assert!(s.median > profile[i - 1].median, "{i}: {profile:?}");
            }
        }
        // The median of the profile's 17 rising steps is 0.11 units a slice: the fold's slices
        // continue the peak at it, and above the fold the map's own steps resume.
        assert!(
            (profile[12].median - (0.92 + 4.0 * 0.11)).abs() < 1e-5,
            "{profile:?}"
        );
        let above = profile[20].median - profile[19].median;
        assert!((above - f64::from(FOLDED[20] - FOLDED[19])).abs() < 1e-5);
        // Only the S–I channel moves, by one offset per slice.
        for (a, b) in map.cells().data().iter().zip(unfolded_map.cells().data()) {
            assert_eq!((a[0], a[1]), (b[0], b[1]));
        }
    }

    #[test]
    fn a_map_without_a_fold_is_left_as_it_is() {
        let body = whole_body();
        let scan = scan_with_body(body);
        let map = map_with(|i| 0.2 + 0.15 * i as f32, |_| 0.0, in_box(body));
        let (same, fault) = unfolded(map.clone(), &scan);
        assert_eq!(fault, None);
        assert_eq!(same, map);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
