//! Few-shot organ boxes (method.md): retrieve each support scan's six edge points of an organ on
//! a target scan, box the retrieved points, average the boxes over supports; then the
//! recall-safe enlargement α that crops a scan to an organ with 0.99 recall, and VR@99.

use std::borrow::Cow;

use glam::DVec3;
use rayon::prelude::*;

use crate::geometry::WorldBox;
use crate::labels::OrganStats;
use crate::retrieval::Target;

/// The recall the enlargement must reach (method.md: crop at 0.99 recall).
pub const TARGET_RECALL: f64 = 0.99;

/// One support of an organ: a scan (`S`: whatever the transfer needs of it, such as a retrieval
/// [`Target`] or an index into a cohort), the organ's six edge points there (world mm) from a
/// label map or a drawn box, and the points its recall is measured on (its voxels, or a lattice
/// filling the drawn box).
#[derive(Debug, Clone)]
pub struct Support<'a, S> {
    pub scan: S,
    pub edges: [DVec3; 6],
    pub recall_points: Cow<'a, [DVec3]>,
}

impl<'a, S> Support<'a, S> {
    /// A support from a label map: the organ's edge points, recall on its voxels.
    pub fn from_organ(scan: S, organ: &OrganStats, voxels: &'a [DVec3]) -> Self {
        Self {
            scan,
            edges: organ.edges.points(),
            recall_points: Cow::Borrowed(voxels),
        }
    }

    /// A support from a box drawn by a user: its faces' centres, recall on a lattice filling it
    /// (the box stands in for the organ).
    pub fn from_drawn_box(scan: S, b: &WorldBox) -> Self {
        Self {
            scan,
            edges: edges_of_box(b),
            recall_points: Cow::Owned(box_lattice(b)),
        }
    }
}

/// A few-shot box prediction on one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxPrediction {
    /// The mean of the supports' located boxes.
    pub bbox: WorldBox,
    /// The enlargement for [`TARGET_RECALL`], calibrated on the supports or given; `None` with
    /// fewer than two supports and none given.
    pub alpha: Option<f64>,
    /// `bbox` scaled by α about its centre.
    pub enlarged: Option<WorldBox>,
}

/// The few-shot box pipeline of method.md, once for every front end: the supports' six edge
/// points carried to a target by `transfer(from, point, to)`, boxed per support, the boxes
/// averaged; α for 0.99 recall calibrated leave-one-out on the supports (each support's box
/// predicted from the others and checked against its own recall points) unless given.
#[derive(Debug)]
pub struct FewShotBoxes<'a, S, T> {
    supports: Vec<Support<'a, S>>,
    transfer: T,
    alpha: Option<f64>,
}

impl<'a, S, T> FewShotBoxes<'a, S, T>
where
    S: Sync,
    T: Fn(&S, DVec3, &S) -> Option<DVec3> + Sync,
{
    /// The predictor, with α calibrated on the supports for [`TARGET_RECALL`].
    pub fn calibrated(supports: Vec<Support<'a, S>>, transfer: T) -> Self {
        let mut this = Self {
            supports,
            transfer,
            alpha: None,
        };
        this.alpha = this.leave_one_out_alpha(TARGET_RECALL);
        this
    }

    /// The predictor with a given α (no calibration).
    pub fn with_alpha(supports: Vec<Support<'a, S>>, transfer: T, alpha: f64) -> Self {
        Self {
            supports,
            transfer,
            alpha: Some(alpha),
        }
    }

    pub fn supports(&self) -> &[Support<'a, S>] {
        &self.supports
    }

    pub fn alpha(&self) -> Option<f64> {
        self.alpha
    }

    /// The box on `target`; `None` when no support's points could all be carried there.
    pub fn predict(&self, target: &S) -> Option<BoxPrediction> {
        let edges: Vec<[DVec3; 6]> = self.supports.iter().map(|s| s.edges).collect();
        let bbox = predict_box_by(&edges, |i, p| {
            (self.transfer)(&self.supports[i].scan, p, target)
        })?;
        Some(BoxPrediction {
            bbox,
            alpha: self.alpha,
            enlarged: self.alpha.map(|a| bbox.scaled(a)),
        })
    }

    /// α from the supports alone (leave one out); `None` with fewer than two.
    fn leave_one_out_alpha(&self, target_recall: f64) -> Option<f64> {
        let edges: Vec<[DVec3; 6]> = self.supports.iter().map(|s| s.edges).collect();
        let voxels: Vec<&[DVec3]> = self.supports.iter().map(|s| &*s.recall_points).collect();
        calibrate_alpha_leave_one_out(
            &edges,
            &voxels,
            |from, p, to| (self.transfer)(&self.supports[from].scan, p, &self.supports[to].scan),
            target_recall,
        )
    }
}

/// Carries a point between scans through their APE maps by [`TransferMode::DEFAULT`]
/// (consensus of cycle-checked matches, refined by the image where the targets carry one).
///
/// [`TransferMode::DEFAULT`]: crate::transfer::TransferMode::DEFAULT
pub fn ape_transfer(from: &Target<'_>, point: DVec3, to: &Target<'_>) -> Option<DVec3> {
    crate::transfer::transfer(
        *from,
        point,
        *to,
        crate::transfer::TransferMode::DEFAULT,
        &crate::transfer::TransferSettings::default(),
    )
    .map(|t| t.world)
}

/// Points filling a box on a 9 × 9 × 9 lattice: a drawn box's stand-in for its organ's voxels.
fn box_lattice(b: &WorldBox) -> Vec<DVec3> {
    let n = 8;
    let mut points = Vec::with_capacity((n + 1) * (n + 1) * (n + 1));
    for k in 0..=n {
        for j in 0..=n {
            for i in 0..=n {
                let t = DVec3::new(i as f64, j as f64, k as f64) / n as f64;
                points.push(b.min + (b.max - b.min) * t);
            }
        }
    }
    points
}

/// The few-shot prediction with any way of carrying a point from support `s` to the target
/// (`locate(s, point)`): per support, the box of its six located edge points; then the
/// coordinate-wise mean of those boxes. Supports with a point that cannot be located are
/// skipped; `None` when none is left.
fn predict_box_by<F>(support_edges: &[[DVec3; 6]], locate: F) -> Option<WorldBox>
where
    F: Fn(usize, DVec3) -> Option<DVec3> + Sync,
{
    let boxes: Vec<WorldBox> = support_edges
        .par_iter()
        .enumerate()
        .filter_map(|(s, edges)| {
            let located: Option<Vec<DVec3>> = edges.iter().map(|p| locate(s, *p)).collect();
            WorldBox::from_points(located?)
        })
        .collect();
    mean_box(&boxes)
}

/// The six edge points of a box drawn by a user (no mask to take them from): the centres of its
/// faces, in the order of [`crate::labels::EdgePoints::points`] (min x, max x, min y, max y,
/// min z, max z).
pub fn edges_of_box(b: &WorldBox) -> [DVec3; 6] {
    let c = b.centre();
    let at = |axis: usize, v: f64| {
        let mut p = c;
        p[axis] = v;
        p
    };
    [
        at(0, b.min.x),
        at(0, b.max.x),
        at(1, b.min.y),
        at(1, b.max.y),
        at(2, b.min.z),
        at(2, b.max.z),
    ]
}

/// Coordinate-wise mean of boxes; `None` for none.
pub fn mean_box(boxes: &[WorldBox]) -> Option<WorldBox> {
    if boxes.is_empty() {
        return None;
    }
    let n = boxes.len() as f64;
    let min = boxes.iter().fold(DVec3::ZERO, |a, b| a + b.min) / n;
    let max = boxes.iter().fold(DVec3::ZERO, |a, b| a + b.max) / n;
    Some(WorldBox::new(min, max))
}

/// Fraction of the organ's voxels (their centres, world mm) inside the box; 1 for no voxels.
pub fn recall(b: &WorldBox, voxels: &[DVec3]) -> f64 {
    if voxels.is_empty() {
        return 1.0;
    }
    voxels.iter().filter(|p| b.contains(**p)).count() as f64 / voxels.len() as f64
}

/// The scale about a box's centre at which `p` just enters it.
fn entry_scale(b: &WorldBox, p: DVec3) -> f64 {
    let centre = b.centre();
    // A flat box (all support points on one plane) still grows, from a 0.5 mm half-size.
    let half = (b.size() * 0.5).max(DVec3::splat(0.5));
    let d = (p - centre).abs() / half;
    d.x.max(d.y).max(d.z)
}

/// The smallest factor α such that the box scaled by α about its centre holds at least
/// `target_recall` of the voxels. Exact: the ⌈q·n⌉-th smallest of the voxels' entry scales.
/// The enlargements α a user may give (a box scaled about its centre): below 0.1 or above 10
/// the box is no longer the organ's.
pub const ALPHA_RANGE: (f64, f64) = (0.1, 10.0);

pub fn alpha_for_recall(b: &WorldBox, voxels: &[DVec3], target_recall: f64) -> f64 {
    if voxels.is_empty() {
        return 1.0;
    }
    let mut scales: Vec<f64> = voxels.iter().map(|p| entry_scale(b, *p)).collect();
    let needed = ((target_recall.clamp(0.0, 1.0) * voxels.len() as f64).ceil() as usize)
        .clamp(1, voxels.len());
    let (_, kth, _) = scales.select_nth_unstable_by(needed - 1, f64::total_cmp);
    *kth
}

/// α for an organ from calibration cases (a predicted box and the true organ voxels each): the
/// largest α any case needs, so that every calibration case reaches the recall. `None` for none.
pub fn calibrate_alpha(cases: &[(WorldBox, &[DVec3])], target_recall: f64) -> Option<f64> {
    cases
        .iter()
        .map(|(b, voxels)| alpha_for_recall(b, voxels, target_recall))
        .max_by(f64::total_cmp)
}

/// α from the supports alone (leave one out): each support's box predicted from the other
/// supports, with `locate(from, point, to)` carrying a point between supports; then the largest
/// α any support needs to reach `target_recall` of its own `voxels`. `None` with fewer than two
/// supports.
fn calibrate_alpha_leave_one_out<F>(
    edges: &[[DVec3; 6]],
    voxels: &[&[DVec3]],
    locate: F,
    target_recall: f64,
) -> Option<f64>
where
    F: Fn(usize, DVec3, usize) -> Option<DVec3> + Sync,
{
    if edges.len() < 2 || voxels.len() != edges.len() {
        return None;
    }
    let cases: Vec<(WorldBox, &[DVec3])> = (0..edges.len())
        .into_par_iter()
        .filter_map(|held| {
            let others: Vec<usize> = (0..edges.len()).filter(|&o| o != held).collect();
            let other_edges: Vec<[DVec3; 6]> = others.iter().map(|&o| edges[o]).collect();
            let b = predict_box_by(&other_edges, |i, p| locate(others[i], p, held))?;
            Some((b, voxels[held]))
        })
        .collect();
    calibrate_alpha(&cases, target_recall)
}

/// Volume ratio of a crop (method.md's VR): the scan's volume over the crop's, where the crop is
/// the box clipped to the scan. Infinite for a crop that misses the scan.
pub fn volume_ratio(scan: &WorldBox, crop: &WorldBox) -> f64 {
    match crop.intersection(scan) {
        Some(c) if c.volume() > 0.0 => scan.volume() / c.volume(),
        _ => f64::INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube_voxels(lo: f64, hi: f64, step: f64) -> Vec<DVec3> {
        let mut v = Vec::new();
        let n = ((hi - lo) / step).round() as usize;
        for k in 0..=n {
            for j in 0..=n {
                for i in 0..=n {
                    v.push(DVec3::new(i as f64, j as f64, k as f64) * step + DVec3::splat(lo));
                }
            }
        }
        v
    }

    #[test]
    fn recall_of_known_boxes() {
        // 11 × 11 × 11 voxels at 0..10 mm.
        let voxels = cube_voxels(0.0, 10.0, 1.0);
        let whole = WorldBox::new(DVec3::ZERO, DVec3::splat(10.0));
        assert_eq!(recall(&whole, &voxels), 1.0);
        // Half in x: x in 0..=5 holds 6 of 11 planes.
        let half = WorldBox::new(DVec3::ZERO, DVec3::new(5.0, 10.0, 10.0));
        assert!((recall(&half, &voxels) - 6.0 / 11.0).abs() < 1e-12);
        let outside = WorldBox::new(DVec3::splat(20.0), DVec3::splat(30.0));
        assert_eq!(recall(&outside, &voxels), 0.0);
    }

    #[test]
    fn alpha_reaches_the_recall_and_no_less_would() {
        let voxels = cube_voxels(-10.0, 10.0, 1.0); // 21³ voxels
        // A box half the organ's size: α = 2 holds everything.
        let small = WorldBox::new(DVec3::splat(-5.0), DVec3::splat(5.0));
        assert!((alpha_for_recall(&small, &voxels, 1.0) - 2.0).abs() < 1e-12);
        for q in [0.5, 0.9, 0.99] {
            let alpha = alpha_for_recall(&small, &voxels, q);
            assert!(recall(&small.scaled(alpha), &voxels) >= q, "q {q}");
            assert!(recall(&small.scaled(alpha * 0.999), &voxels) < q, "q {q}");
        }
        // A box already holding the organ needs α ≤ 1.
        let big = WorldBox::new(DVec3::splat(-20.0), DVec3::splat(20.0));
        assert!(alpha_for_recall(&big, &voxels, 0.99) <= 1.0);
        // An off-centre box: α grows until the far side is covered.
        let shifted = WorldBox::new(DVec3::new(0.0, -10.0, -10.0), DVec3::new(10.0, 10.0, 10.0));
        let alpha = alpha_for_recall(&shifted, &voxels, 1.0);
        assert!((alpha - 3.0).abs() < 1e-12, "{alpha}");
    }

    #[test]
    fn calibration_takes_the_hardest_case() {
        let voxels = cube_voxels(-10.0, 10.0, 1.0);
        let a = WorldBox::new(DVec3::splat(-10.0), DVec3::splat(10.0));
        let b = WorldBox::new(DVec3::splat(-5.0), DVec3::splat(5.0));
        let alpha = calibrate_alpha(&[(a, &voxels), (b, &voxels)], 1.0).unwrap();
        assert!((alpha - 2.0).abs() < 1e-12);
        assert_eq!(calibrate_alpha(&[], 0.99), None);
    }

    #[test]
    fn volume_ratio_of_known_crops() {
        let scan = WorldBox::new(DVec3::ZERO, DVec3::new(100.0, 100.0, 100.0));
        let crop = WorldBox::new(DVec3::ZERO, DVec3::new(50.0, 50.0, 50.0));
        assert!((volume_ratio(&scan, &crop) - 8.0).abs() < 1e-12);
        // Clipped to the scan: a box hanging out by half counts only its inside part.
        let hanging = WorldBox::new(DVec3::new(-50.0, 0.0, 0.0), DVec3::new(50.0, 100.0, 100.0));
        assert!((volume_ratio(&scan, &hanging) - 2.0).abs() < 1e-12);
        let away = WorldBox::new(DVec3::splat(200.0), DVec3::splat(300.0));
        assert!(volume_ratio(&scan, &away).is_infinite());
    }

    #[test]
    fn a_drawn_box_gives_edge_points_that_box_it_again() {
        let b = WorldBox::new(DVec3::new(-10.0, 5.0, 20.0), DVec3::new(30.0, 15.0, 80.0));
        let edges = edges_of_box(&b);
        assert_eq!(WorldBox::from_points(edges), Some(b));
        assert_eq!(edges[4], DVec3::new(10.0, 10.0, 20.0));
    }

    #[test]
    fn mean_box_averages_coordinates() {
        let a = WorldBox::new(DVec3::ZERO, DVec3::splat(10.0));
        let b = WorldBox::new(DVec3::splat(2.0), DVec3::splat(20.0));
        let m = mean_box(&[a, b]).unwrap();
        assert_eq!(m.min, DVec3::splat(1.0));
        assert_eq!(m.max, DVec3::splat(15.0));
        assert_eq!(mean_box(&[]), None);
    }
}
