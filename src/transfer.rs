//! Carrying a point from one scan to another through their APE maps, with a confidence.
//!
//! - [`TransferMode::Nearest`]: the paper's single nearest-embedding search.
//! - [`TransferMode::Refined`]: consensus, then the intensities: patches of the source around
//!   the query matched by normalised cross-correlation in a small window on the target
//!   ([`crate::refine`]). The embedding finds the neighbourhood; the image finds the spot.
//! - [`TransferMode::Consensus`]: many matches instead of one. Support points on a lattice
//!   around the query are each retrieved on the target; those that come back near where they
//!   started when retrieved from the target onto the source (cycle-consistent) fit a
//!   distance-weighted robust local affine (iteratively reweighted least squares, Huber
//!   weights), and the query goes through it. Too few survivors: the direct match. The
//!   precedent is SAM++/UAE's fixed-point (cycle) matching and MedLAM's averaging over many
//!   crops: one embedding lookup is noisy; the local geometry of many is not.
//!
//! Every result carries a [`Confidence`]: the cycle error of the point itself, the share of
//! supports that survived, the embedding distance, and a flag for a landmark that is probably
//! outside the target's field of view (found at the target's edge, and not coming back).

use glam::{DMat3, DMat4, DVec3, DVec4};
use serde::Serialize;

use crate::ape_map::Embedding;
use crate::refine::{RefineSettings, refine_neighbourhood};
use crate::retrieval::{Retrieved, Target};

/// How a point is carried to another scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMode {
    /// One nearest-embedding search (the paper's protocol).
    Nearest,
    /// A robust local affine fitted to cycle-consistent matches of points around the query.
    Consensus,
    /// Consensus, then moved to where the image patches around the query match best (needs
    /// both scans' [`PatchImage`]s; without them, consensus).
    Refined,
}

impl TransferMode {
    pub const ALL: [Self; 3] = [Self::Nearest, Self::Consensus, Self::Refined];
    /// The mode the viewer, `ape locate`, `ape crop` and `ape eval`'s summary use.
    pub const DEFAULT: Self = Self::Refined;

    pub fn name(self) -> &'static str {
        match self {
            Self::Nearest => "nearest",
            Self::Consensus => "consensus",
            Self::Refined => "refined",
        }
    }
}

impl std::fmt::Display for TransferMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TransferMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown transfer mode {s:?}; one of {}",
                    Self::ALL.map(Self::name).join(", ")
                )
            })
    }
}

/// The knobs of consensus transfer and of its refinement (chosen on the validation scans; see
/// training/README.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TransferSettings {
    /// Support points lie within this distance of the query (mm).
    pub radius_mm: f64,
    /// Lattice steps per radius: 2 gives a 5 × 5 × 5 lattice clipped to the sphere (81 points).
    pub steps_per_radius: i32,
    /// A match is kept when its cycle (target → source) lands within this distance (mm).
    pub cycle_tolerance_mm: f64,
    /// Fewer kept matches than this: the direct match instead.
    pub min_inliers: usize,
    /// Huber threshold of the robust fit (mm).
    pub huber_mm: f64,
    /// The image refinement of [`TransferMode::Refined`].
    pub refine: RefineSettings,
}

impl Default for TransferSettings {
    fn default() -> Self {
        Self {
            radius_mm: 100.0,
            steps_per_radius: 2,
            cycle_tolerance_mm: 15.0,
            min_inliers: 10,
            huber_mm: 8.0,
            refine: RefineSettings::default(),
        }
    }
}

/// How much to trust a transferred point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Confidence {
    /// Distance between the query's embedding and the target's at the found point.
    pub embedding_distance: f32,
    /// Carried back from the target to the source, the found point lands this far from the
    /// query (mm): near zero for a consistent match.
    pub cycle_error_mm: f64,
    /// Support matches kept by the cycle check, of `supports` tried (consensus only; 0 of 0
    /// for nearest).
    pub inliers: usize,
    pub supports: usize,
    /// Probably outside the target's field of view: found within a cell of the target's edge
    /// and not coming back to the query.
    pub outside_fov: bool,
    /// How well the image patches around the point match those around the query (median
    /// normalised cross-correlation, −1…1; refined mode only).
    pub image_ncc: Option<f64>,
}

impl Confidence {
    /// One number in 0…1 for ranking: 1 for a perfect cycle, falling to ½ at 20 mm; zero when
    /// the landmark is probably outside the target.
    pub fn score(&self) -> f64 {
        if self.outside_fov {
            return 0.0;
        }
        let cycle = 1.0 / (1.0 + (self.cycle_error_mm / 20.0).powi(2));
        if self.supports == 0 {
            cycle
        } else {
            cycle * (0.5 + 0.5 * self.inliers as f64 / self.supports as f64)
        }
    }

    /// Worth a second look: outside the field of view, or a cycle error above 25 mm.
    pub fn doubtful(&self) -> bool {
        self.outside_fov || self.cycle_error_mm > 25.0
    }
}

/// A point carried to a target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Transferred {
    /// World RAS mm on the target.
    pub world: DVec3,
    pub confidence: Confidence,
    /// The mode that produced it: a consensus with too few survivors falls back to nearest.
    pub mode: TransferMode,
}

/// One support point's match, for inspection and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SupportMatch {
    /// On the source, world mm.
    pub support: DVec3,
    /// Its match on the target.
    pub found: DVec3,
    /// Where the match lands when carried back to the source.
    pub back: DVec3,
    pub inlier: bool,
}

/// Carries `point` of the scan mapped by `from` to `to`. `None` when `point` lies outside the
/// source map.
pub fn transfer(
    from: Target<'_>,
    point: DVec3,
    to: Target<'_>,
    mode: TransferMode,
    settings: &TransferSettings,
) -> Option<Transferred> {
    let query = Query {
        from,
        point,
        embedding: from.map.embedding_at(point)?,
        to,
        settings,
    };
    let nearest = || {
        let direct = to.index.retrieve(to.map, query.embedding).world;
        query.result(direct, TransferMode::Nearest, (0, 0))
    };
    if mode == TransferMode::Nearest {
        return Some(nearest());
    }
    let (fit, matches) = consensus_fit(from, point, to, settings);
    let Some(fit) = fit else {
        return Some(nearest());
    };
    let counts = (matches.iter().filter(|m| m.inlier).count(), matches.len());
    let refined = match (mode, from.image, to.image) {
        (TransferMode::Refined, Some(a), Some(b)) => {
            refine_neighbourhood(a, point, b, |x| fit.apply(x), &settings.refine)
        }
        _ => None,
    };
    Some(match refined {
        Some(r) => {
            let mut t = query.result(r.world, TransferMode::Refined, counts);
            t.confidence.image_ncc = Some(r.ncc);
            t
        }
        None => query.result(fit.apply(point), TransferMode::Consensus, counts),
    })
}

/// The local affine that carries the neighbourhood of `point` to `to`, fitted to the
/// cycle-consistent support matches (`None` when fewer than `min_inliers` survive or they do
/// not span 3-D), and every support match.
pub fn consensus_fit(
    from: Target<'_>,
    point: DVec3,
    to: Target<'_>,
    settings: &TransferSettings,
) -> (Option<LocalAffine>, Vec<SupportMatch>) {
    let matches = support_matches(from, point, to, settings);
    let inliers: Vec<&SupportMatch> = matches.iter().filter(|m| m.inlier).collect();
    let fit = if inliers.len() < settings.min_inliers {
        None
    } else {
        robust_affine(&inliers, point, settings)
    };
    (fit, matches)
}

/// One point being carried: where it comes from, its embedding, where it goes.
struct Query<'a> {
    from: Target<'a>,
    point: DVec3,
    embedding: Embedding,
    to: Target<'a>,
    settings: &'a TransferSettings,
}

impl Query<'_> {
    /// `world` as the point's match, with its confidence.
    fn result(
        &self,
        world: DVec3,
        mode: TransferMode,
        (inliers, supports): (usize, usize),
    ) -> Transferred {
        let there = self.to.map.embedding_at(world);
        let embedding_distance = there.map_or(f32::INFINITY, |t| distance(self.embedding, t));
        let back = there.map(|t| self.from.index.retrieve(self.from.map, t).world);
        let cycle_error_mm = back.map_or(f64::INFINITY, |b| (b - self.point).length());
        // Found at the edge and not coming back: the landmark lies beyond the target's view.
        let outside_fov =
            near_edge(self.to, world) && cycle_error_mm > self.settings.cycle_tolerance_mm;
        Transferred {
            world,
            confidence: Confidence {
                embedding_distance,
                cycle_error_mm,
                inliers,
                supports,
                outside_fov,
                image_ncc: None,
            },
            mode,
        }
    }
}

/// Whether `world` lies within one cell of the edge of the target map's grid along any axis.
fn near_edge(to: Target<'_>, world: DVec3) -> bool {
    let cells = to.map.cells();
    let v = cells.world_to_voxel(world);
    let shape = cells.shape();
    (0..3).any(|a| v[a] < 1.0 || v[a] > shape[a] as f64 - 2.0)
}

fn distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    (0..3).map(|c| (a[c] - b[c]).powi(2)).sum::<f32>().sqrt()
}

/// The lattice of support points around `point` within the radius, each retrieved on `to` and
/// carried back; inliers are those whose cycle lands within the tolerance.
pub fn support_matches(
    from: Target<'_>,
    point: DVec3,
    to: Target<'_>,
    settings: &TransferSettings,
) -> Vec<SupportMatch> {
    let n = settings.steps_per_radius.max(1);
    let step = settings.radius_mm / n as f64;
    let mut out = Vec::with_capacity(((2 * n + 1) as usize).pow(3));
    for k in -n..=n {
        for j in -n..=n {
            for i in -n..=n {
                let offset = DVec3::new(i as f64, j as f64, k as f64) * step;
                if offset.length() > settings.radius_mm + 1e-9 {
                    continue;
                }
                let support = point + offset;
                let Some(e) = from.map.embedding_at(support) else {
                    continue;
                };
                let Retrieved { world: found, .. } = to.index.retrieve(to.map, e);
                let Some(back_e) = to.map.embedding_at(found) else {
                    continue;
                };
                let back = from.index.retrieve(from.map, back_e).world;
                out.push(SupportMatch {
                    support,
                    found,
                    back,
                    inlier: (back - support).length() <= settings.cycle_tolerance_mm,
                });
            }
        }
    }
    out
}

/// A 3-D affine map `x ↦ linear · x + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalAffine {
    pub linear: DMat3,
    pub offset: DVec3,
}

impl LocalAffine {
    pub fn apply(&self, x: DVec3) -> DVec3 {
        self.linear * x + self.offset
    }
}

/// Weighted least squares of `found ≈ A · support + t`, coordinates taken relative to
/// `centre` (for conditioning), with Gaussian weights by distance from `centre` and Huber
/// reweighting of residuals over a few iterations. `None` when the supports do not span 3-D.
fn robust_affine(
    matches: &[&SupportMatch],
    centre: DVec3,
    settings: &TransferSettings,
) -> Option<LocalAffine> {
    let sigma = settings.radius_mm * 0.6;
    // Near the query counts more, and so does a match whose cycle closes: a cycle error is
    // about as large as the match's own error.
    let cycle_scale = settings.cycle_tolerance_mm / 3.0;
    let spatial: Vec<f64> = matches
        .iter()
        .map(|m| {
            let near = (-(m.support - centre).length_squared() / (2.0 * sigma * sigma)).exp();
            let cycle = (m.back - m.support).length() / cycle_scale;
            near / (1.0 + cycle * cycle)
        })
        .collect();
    let mut robust = vec![1.0; matches.len()];
    let mut fit = None;
    for _ in 0..4 {
        let mut normal = DMat4::ZERO;
        let mut rhs = [DVec4::ZERO; 3];
        for ((m, &ws), &wr) in matches.iter().zip(&spatial).zip(&robust) {
            let w = ws * wr;
            let x = (m.support - centre).extend(1.0);
            normal += outer(x, x) * w;
            for (c, r) in rhs.iter_mut().enumerate() {
                *r += x * (m.found[c] * w);
            }
        }
        // Supports on a plane or a line leave the affine undetermined.
        let scale = (normal.x_axis.x + normal.y_axis.y + normal.z_axis.z + normal.w_axis.w) / 4.0;
        let det = normal.determinant();
        if !det.is_finite() || det.abs() < 1e-10 * scale.powi(4) {
            return fit;
        }
        let inverse = normal.inverse();
        let rows = rhs.map(|r| inverse * r);
        let linear = DMat3::from_cols(
            DVec3::new(rows[0].x, rows[1].x, rows[2].x),
            DVec3::new(rows[0].y, rows[1].y, rows[2].y),
            DVec3::new(rows[0].z, rows[1].z, rows[2].z),
        );
        let offset_rel = DVec3::new(rows[0].w, rows[1].w, rows[2].w);
        let affine = LocalAffine {
            linear,
            offset: offset_rel - linear * centre,
        };
        for (r, m) in robust.iter_mut().zip(matches) {
            let residual = (affine.apply(m.support) - m.found).length();
            *r = if residual <= settings.huber_mm {
                1.0
            } else {
                settings.huber_mm / residual
            };
        }
        fit = Some(affine);
    }
    fit
}

fn outer(a: DVec4, b: DVec4) -> DMat4 {
    DMat4::from_cols(a * b.x, a * b.y, a * b.z, a * b.w)
}
