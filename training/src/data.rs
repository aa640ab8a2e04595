//! Training data: scans held in memory, pairs of overlapping crops at random spacings, positive
//! voxel pairs inside the body, and the augmentations of method.md. Every batch is a pure
//! function of (seed, step), so runs are deterministic and resume exactly.

use std::path::{Path, PathBuf};

use ape::Volume;
use ape::geometry::{Affine, WorldBox};
use ape::intensity::HuWindow;
use ape::resample::{resample_linear_onto, sample_linear};
use ape::scan::Scan;
use glam::DVec3;
use rand::rngs::{SmallRng, StdRng};
use rand::{Rng, SeedableRng};

use crate::config::{TrainConfig, Variant};
use crate::cross::Teacher;

/// Windowed intensity above which a voxel counts as body (the window floor, −125 HU, is 0).
const BODY_THRESHOLD: f32 = 0.02;

/// One training scan: windowed to [0, 1], stored closest to RAS.
#[derive(Debug)]
pub struct TrainScan {
    pub volume: Volume<f32>,
    /// The body's world box (voxels above the threshold).
    pub body: WorldBox,
    /// The body's size, mm: the square root of its mean axial cross-section (slices with
    /// body), a measure of the patient's girth that, unlike the box, the table, the field of
    /// view along S–I and a stray arm barely move.
    pub girth_mm: f64,
}

impl TrainScan {
    pub fn load(path: &Path, window: HuWindow) -> anyhow::Result<Self> {
        let scan = Scan::read(path)?;
        let volume = scan.volume.to_closest_ras()?.map(|&hu| window.to_unit(hu));
        let mut lo = DVec3::INFINITY;
        let mut hi = DVec3::NEG_INFINITY;
        // Ignore the blank last slice and isolated noise: the body box from a coarse grid.
        let [nx, ny, nz] = volume.shape();
        let (mut body_cells, mut body_slices) = (0usize, 0usize);
        for k in (0..nz).step_by(2) {
            let before = body_cells;
            for j in (0..ny).step_by(4) {
                for i in (0..nx).step_by(4) {
                    if volume.data()[volume.linear_index(i, j, k)] > BODY_THRESHOLD {
                        let w = volume.voxel_to_world([i, j, k]);
                        lo = lo.min(w);
                        hi = hi.max(w);
                        body_cells += 1;
                    }
                }
            }
            body_slices += usize::from(body_cells > before);
        }
        anyhow::ensure!(lo.x.is_finite(), "{}: no body voxels found", path.display());
        // One grid cell covers 4 × 4 voxels of the slice (closest to RAS: axes 0, 1 in-plane).
        let cell_area = {
            let s = volume.spacing();
            16.0 * s.x * s.y
        };
        let girth_mm = (body_cells as f64 * cell_area / body_slices.max(1) as f64).sqrt();
        Ok(Self {
            volume,
            body: WorldBox::new(lo, hi),
            girth_mm,
        })
    }

    /// Whether a world point is inside the body (above the body threshold).
    pub fn is_body(&self, world: DVec3) -> bool {
        sample_linear(&self.volume, self.volume.world_to_voxel(world))
            .is_some_and(|v| v > BODY_THRESHOLD)
    }
}

/// Scans for training in the given folders ([`ape::cohort::scans_in`]), less those whose
/// name contains one of `exclude` (any case).
pub fn training_files(folders: &[PathBuf], exclude: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for folder in folders {
        files.extend(ape::cohort::scans_in(folder)?.into_iter().filter(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_default();
            !exclude.iter().any(|x| name.contains(&x.to_lowercase()))
        }));
    }
    files.sort();
    Ok(files)
}

/// A crop: its voxels and where they are.
#[derive(Debug)]
pub struct Crop {
    /// Windowed, augmented intensities, x fastest.
    pub voxels: Vec<f32>,
    /// World position of voxel (0, 0, 0) and the spacing (axes along +x, +y, +z).
    pub origin: DVec3,
    pub spacing: DVec3,
}

impl Crop {
    /// Map-cell coordinates (z, y, x) of a world point: cell c is centred on voxel 4c + 1.5.
    pub fn cell_of(&self, world: DVec3) -> [f32; 3] {
        let v = (world - self.origin) / self.spacing;
        let c = (v - DVec3::splat(1.5)) / 4.0;
        [c.z as f32, c.y as f32, c.x as f32]
    }
}

/// One optimisation step's input.
#[derive(Debug)]
pub struct Batch {
    pub step: usize,
    /// The scan (index into the training scans) every first crop is of.
    pub scan: usize,
    /// `pairs` first crops, then `pairs` second crops (the same crops for Naïve).
    pub crops: Vec<Crop>,
    /// Positive points (world, mm) per pair.
    pub points: Vec<Vec<DVec3>>,
    /// Per pair, where its positives lie in the second crop when that crop is of another scan
    /// (a cross pair, [`crate::cross`]); empty: at `points`, as for every ordinary pair.
    pub second_points: Vec<Vec<DVec3>>,
    /// x and z weights of the target distances at this step.
    pub x_weight: f64,
    pub z_weight: f64,
    /// The scan's girth relative to the training scans' mean ([`TrainScan::girth_mm`]): the
    /// factor of a per-scan position scale (`TrainConfig::girth_position_scale`).
    pub girth: f64,
}

impl Batch {
    /// The positives of crop `index` (the first crops are `0..pairs`, their partners follow).
    pub fn points_of_crop(&self, index: usize) -> &[DVec3] {
        let pairs = self.points.len().max(1);
        let pair = index % pairs;
        match self.second_points.get(pair) {
            Some(second) if index >= pairs && !second.is_empty() => second,
            _ => &self.points[pair],
        }
    }

    /// The network's input: the crops as one `[crops, 1, z, y, x]` block (only the first
    /// `pairs` crops for Naïve, whose second crops are the same).
    pub fn to_tensor_data(&self, config: &TrainConfig) -> burn::tensor::TensorData {
        let crops = if config.variant == Variant::Naive {
            &self.crops[..config.pairs.min(self.crops.len())]
        } else {
            &self.crops[..]
        };
        let [sx, sy, sz] = config.crop_size;
        let mut voxels = Vec::with_capacity(crops.len() * sx * sy * sz);
        for c in crops {
            voxels.extend_from_slice(&c.voxels);
        }
        burn::tensor::TensorData::new(voxels, [crops.len(), 1, sz, sy, sx])
    }
}

/// The batch of a step: a pure function of the config, the scans and the step number.
pub fn make_batch(config: &TrainConfig, scans: &[TrainScan], step: usize) -> Batch {
    make_batch_with(config, scans, step, None)
}

/// [`make_batch`], with the first `cross_pairs` pairs across scans when a teacher is given: a
/// pure function of the config, the scans, the step and the teacher.
pub fn make_batch_with(
    config: &TrainConfig,
    scans: &[TrainScan],
    step: usize,
    teacher: Option<&Teacher>,
) -> Batch {
    let mut rng =
        StdRng::seed_from_u64(config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step as u64);
    let scan_index = rng.random_range(0..scans.len());
    let scan = &scans[scan_index];
    let regime = config.regime_at(step);
    let spacing_z = regime.spacing_z;
    let size = config.crop_size;
    let extent_voxels = DVec3::new(size[0] as f64, size[1] as f64, size[2] as f64);
    let paired = config.variant != Variant::Naive;
    let scan_bounds = scan.volume.world_bounds();

    let mut firsts = Vec::with_capacity(config.pairs);
    let mut seconds = Vec::with_capacity(config.pairs);
    let mut points = Vec::with_capacity(config.pairs);
    let mut second_points = Vec::with_capacity(config.pairs);
    for pair in 0..config.pairs {
        // The shared voxel: inside the body, its z in this pair's stratum when spreading.
        let mut centre = DVec3::ZERO;
        for _ in 0..200 {
            let t = DVec3::new(rng.random(), rng.random(), rng.random());
            let mut c = scan.body.min + (scan.body.max - scan.body.min) * t;
            if config.spread_z {
                let u = (pair as f64 + rng.random::<f64>()) / config.pairs as f64;
                c.z = scan.body.min.z + (scan.body.max.z - scan.body.min.z) * u;
            }
            centre = c;
            if scan.is_body(c) {
                break;
            }
        }
        // A crop holding `around` at a random place, inside `bounds` when the config asks.
        let draw_crop_about = |rng: &mut StdRng, around: DVec3, bounds: &WorldBox| {
            let s_xy = rng.random_range(regime.spacing_xy[0]..=regime.spacing_xy[1]);
            let s_z = rng.random_range(spacing_z[0]..=spacing_z[1]);
            let spacing = DVec3::new(s_xy, s_xy, s_z);
            let extent = spacing * extent_voxels;
            let u = DVec3::new(
                rng.random_range(0.15..0.85),
                rng.random_range(0.15..0.85),
                rng.random_range(0.15..0.85),
            );
            let mut corner = around - u * extent;
            if config.crops_inside {
                corner = inside(corner, extent, bounds);
            }
            (corner + spacing * 0.5, spacing)
        };
        let draw_crop = |rng: &mut StdRng| draw_crop_about(rng, centre, &scan_bounds);
        let box_of = |o: DVec3, s: DVec3| {
            WorldBox::new(o - s * 0.5, o + s * (extent_voxels - DVec3::splat(0.5)))
        };
        let cross = match teacher {
            Some(t) if pair < config.cross_pairs && paired && t.len() == scans.len() => {
                cross_pair(config, scans, scan_index, centre, t, &mut rng)
            }
            _ => None,
        };
        let (origin1, spacing1) = draw_crop(&mut rng);
        // The second crop's scan and place, the positives, and (cross pairs only) where the
        // positives lie in the second crop.
        let (partner, (origin2, spacing2), pts, there) = if let Some(c) = cross {
            let other = &scans[c.partner];
            let second_crop = draw_crop_about(
                &mut rng,
                c.affine.apply(centre),
                &other.volume.world_bounds(),
            );
            let second_box =
                box_of(second_crop.0, second_crop.1).intersection(&other.volume.world_bounds());
            let first_box = box_of(origin1, spacing1).intersection(&scan_bounds);
            let mut pts = Vec::with_capacity(config.positives_per_pair);
            let mut there = Vec::with_capacity(config.positives_per_pair);
            if let (Some(first), Some(second)) = (first_box, second_box) {
                draw_points(&mut rng, &first, config.positives_per_pair, |p| {
                    let q = c.affine.apply(p);
                    let keep = second.contains(q) && scan.is_body(p) && other.is_body(q);
                    if keep {
                        pts.push(p);
                        there.push(q);
                    }
                    keep
                });
            }
            while pts.len() < config.positives_per_pair {
                pts.push(centre);
                there.push(c.affine.apply(centre));
            }
            (c.partner, second_crop, pts, there)
        } else {
            let second_crop = if paired {
                draw_crop(&mut rng)
            } else {
                (origin1, spacing1)
            };
            // Positives: body voxels inside both crops (and inside the scan); the first
            // `outside_per_pair` anywhere in the overlap.
            let overlap = box_of(origin1, spacing1)
                .intersection(&box_of(second_crop.0, second_crop.1))
                .and_then(|b| b.intersection(&scan_bounds));
            let mut pts = Vec::with_capacity(config.positives_per_pair);
            if let Some(overlap) = overlap {
                draw_points(&mut rng, &overlap, config.positives_per_pair, |p| {
                    let keep = pts.len() < config.outside_per_pair || scan.is_body(p);
                    if keep {
                        pts.push(p);
                    }
                    keep
                });
            }
            // Rare (a crop in air): fall back to the centre so that the batch keeps its shape.
            while pts.len() < config.positives_per_pair {
                pts.push(centre);
            }
            (scan_index, second_crop, pts, Vec::new())
        };
        firsts.push(make_crop(
            scan,
            origin1,
            spacing1,
            size,
            config.augment,
            config.mask_value,
            &mut rng,
        ));
        seconds.push(make_crop(
            &scans[partner],
            origin2,
            spacing2,
            size,
            config.augment && paired,
            config.mask_value,
            &mut rng,
        ));
        second_points.push(there);
        points.push(pts);
    }
    let mut crops = firsts;
    crops.extend(seconds);
    Batch {
        step,
        scan: scan_index,
        crops,
        points,
        second_points,
        x_weight: regime.x_weight,
        z_weight: regime.z_weight,
        girth: relative_girth(scans, scan_index),
    }
}

/// Scan `index`'s girth over the mean girth of `scans` (1 where there is nothing to compare).
pub fn relative_girth(scans: &[TrainScan], index: usize) -> f64 {
    let mean = scans.iter().map(|s| s.girth_mm).sum::<f64>() / scans.len().max(1) as f64;
    match scans.get(index) {
        Some(scan) if mean > 0.0 && scan.girth_mm > 0.0 => scan.girth_mm / mean,
        _ => 1.0,
    }
}

/// A cross pair's partner scan and the teacher's local affine from this scan to it.
struct CrossPair {
    partner: usize,
    affine: ape::transfer::LocalAffine,
}

/// Draws the partner of a cross pair about `centre` of scan `from` (`None`: the teacher finds
/// no consistent neighbourhood there, and the pair stays an ordinary one).
fn cross_pair(
    config: &TrainConfig,
    scans: &[TrainScan],
    from: usize,
    centre: DVec3,
    teacher: &Teacher,
    rng: &mut StdRng,
) -> Option<CrossPair> {
    if scans.len() < 2 || config.cross_pairs == 0 {
        return None;
    }
    let partner = (from + rng.random_range(1..scans.len())) % scans.len();
    let affine = teacher.carry(from, centre, partner)?;
    Some(CrossPair { partner, affine })
}

/// Draws uniform points in `region` and offers each to `keep` until it has kept `wanted` of
/// them, or after 50 tries per point wanted (a region mostly outside the body).
fn draw_points(
    rng: &mut StdRng,
    region: &WorldBox,
    wanted: usize,
    mut keep: impl FnMut(DVec3) -> bool,
) {
    let mut kept = 0;
    for _ in 0..50 * wanted {
        if kept == wanted {
            break;
        }
        let t = DVec3::new(rng.random(), rng.random(), rng.random());
        if keep(region.min + (region.max - region.min) * t) {
            kept += 1;
        }
    }
}

/// The crop corner nearest to `corner` that puts a crop of `extent` inside `bounds`; along an
/// axis where the crop is the longer, the crop is centred on the scan.
fn inside(corner: DVec3, extent: DVec3, bounds: &WorldBox) -> DVec3 {
    let room = bounds.max - bounds.min - extent;
    let centred = bounds.min + room * 0.5;
    let clamped = corner.clamp(bounds.min, bounds.min + room.max(DVec3::ZERO));
    DVec3::select(room.cmplt(DVec3::ZERO), centred, clamped)
}

fn make_crop(
    scan: &TrainScan,
    origin: DVec3,
    spacing: DVec3,
    size: [usize; 3],
    augment: bool,
    mask_value: f32,
    rng: &mut StdRng,
) -> Crop {
    let affine = Affine::from_spacing(spacing, origin).unwrap_or_else(|_| *scan.volume.affine());
    let mut voxels = resample_linear_onto(&scan.volume, size, affine, 0.0)
        .map(Volume::into_data)
        .unwrap_or_else(|_| vec![0.0; size.iter().product()]);
    if augment {
        augment_crop(&mut voxels, size, spacing, mask_value, rng);
    }
    Crop {
        voxels,
        origin,
        spacing,
    }
}

/// Blur or sharpen in-plane, noise, brightness, contrast, gamma, block masking (method.md):
/// masked blocks are set to `mask_value`.
pub fn augment_crop(
    v: &mut [f32],
    size: [usize; 3],
    spacing: DVec3,
    mask_value: f32,
    rng: &mut StdRng,
) {
    wide::augment_crop(v, size, spacing, mask_value, rng);
}

/// [`augment_crop`]'s passes compiled for AVX-512 where the CPU has it, chosen at run time: the
/// default x86-64 target (SSE2) has no vector floor, so the gamma's series stayed scalar with a
/// call per voxel. No fused multiply-adds are formed either way (Rust does not contract): both
/// give the same crops, and batches stay pure functions of the step.
#[allow(unsafe_code)]
mod wide {
    use glam::DVec3;
    use rand::rngs::StdRng;

    pub(super) fn augment_crop(
        v: &mut [f32],
        size: [usize; 3],
        spacing: DVec3,
        mask_value: f32,
        rng: &mut StdRng,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just now).
            unsafe { augment_crop_avx512(v, size, spacing, mask_value, rng) };
            return;
        }
        super::augment_crop_passes(v, size, spacing, mask_value, rng);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn augment_crop_avx512(
        v: &mut [f32],
        size: [usize; 3],
        spacing: DVec3,
        mask_value: f32,
        rng: &mut StdRng,
    ) {
        super::augment_crop_passes(v, size, spacing, mask_value, rng);
    }
}

/// The passes of [`augment_crop`], inlined into each of [`wide`]'s versions.
#[inline(always)]
fn augment_crop_passes(
    v: &mut [f32],
    size: [usize; 3],
    spacing: DVec3,
    mask_value: f32,
    rng: &mut StdRng,
) {
    if rng.random_bool(0.8) {
        let sigma_mm = rng.random_range(0.0..1.5);
        let blurred = blur_in_plane(v, size, sigma_mm / spacing.x);
        if rng.random_bool(0.5) {
            v.copy_from_slice(&blurred);
        } else {
            let alpha = rng.random_range(0.0..2.0) as f32;
            for (x, b) in v.iter_mut().zip(&blurred) {
                *x += alpha * (*x - b);
            }
        }
    }
    if rng.random_bool(0.8) {
        let sigma = rng.random_range(0.0..0.1);
        // 4.7 million draws a batch: a Gaussian sampler per voxel (and before it ChaCha) cost
        // more than the crop's resampling. A fast generator seeded from the step's picks two
        // entries of a table of normal draws per 32 bits instead.
        let table = normal_table();
        let sigma = sigma as f32;
        let mut fast = SmallRng::seed_from_u64(rng.random());
        for pair in v.chunks_mut(2) {
            let bits: u32 = fast.random();
            for (x, index) in pair.iter_mut().zip([bits & 0xFFFF, bits >> 16]) {
                *x += sigma * table[index as usize];
            }
        }
    }
    if rng.random_bool(0.8) {
        let factor = rng.random_range(0.8..1.2) as f32;
        v.iter_mut().for_each(|x| *x *= factor);
    }
    if rng.random_bool(0.8) {
        let factor = rng.random_range(0.8..1.2) as f32;
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        v.iter_mut().for_each(|x| *x = (*x - mean) * factor + mean);
    }
    if rng.random_bool(0.8) {
        let gamma = rng.random_range(0.8..1.25) as f32;
        v.iter_mut()
            .for_each(|x| *x = pow_approx(x.max(0.0), gamma));
    }
    if rng.random_bool(0.5) {
        let block = [24usize, 24, 16];
        for bz in 0..size[2].div_ceil(block[2]) {
            for by in 0..size[1].div_ceil(block[1]) {
                for bx in 0..size[0].div_ceil(block[0]) {
                    if !rng.random_bool(0.6) {
                        continue;
                    }
                    for k in bz * block[2]..((bz + 1) * block[2]).min(size[2]) {
                        for j in by * block[1]..((by + 1) * block[1]).min(size[1]) {
                            let row = size[0] * (j + size[1] * k);
                            let (a, b) = (bx * block[0], ((bx + 1) * block[0]).min(size[0]));
                            v[row + a..row + b].iter_mut().for_each(|x| *x = mask_value);
                        }
                    }
                }
            }
        }
    }
}

/// Separable Gaussian blur along x and y with a standard deviation of `sigma` voxels.
#[inline(always)]
fn blur_in_plane(v: &[f32], size: [usize; 3], sigma: f64) -> Vec<f32> {
    if sigma < 0.1 {
        return v.to_vec();
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|d| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let along_x = blur_axis(v, size, &kernel, 0);
    blur_axis(&along_x, size, &kernel, 1)
}

/// Convolves every line along voxel axis `axis` (0 or 1) with a centred kernel, edges clamped.
#[inline(always)]
fn blur_axis(v: &[f32], size: [usize; 3], kernel: &[f32], axis: usize) -> Vec<f32> {
    let [nx, ny, _] = size;
    let radius = kernel.len() / 2;
    let mut out = vec![0.0f32; v.len()];
    let clamped = |p: usize, t: usize, n: usize| (p + t).saturating_sub(radius).min(n - 1);
    if axis == 0 {
        for (line, out) in v.chunks_exact(nx).zip(out.chunks_exact_mut(nx)) {
            for (i, o) in out.iter_mut().enumerate() {
                *o = if i >= radius && i + radius < nx {
                    // Inside the line: no clamping, a plain dot product.
                    let taps = &line[i - radius..=i + radius];
                    taps.iter().zip(kernel).map(|(x, w)| w * x).sum()
                } else {
                    let at = |t: usize| line[clamped(i, t, nx)];
                    kernel.iter().enumerate().map(|(t, w)| w * at(t)).sum()
                };
            }
        }
    } else {
        // Along y, whole x rows at a time: each tap adds a scaled row, which vectorises.
        for (slice, out) in v.chunks_exact(nx * ny).zip(out.chunks_exact_mut(nx * ny)) {
            for (j, out_row) in out.chunks_exact_mut(nx).enumerate() {
                for (t, &w) in kernel.iter().enumerate() {
                    let q = clamped(j, t, ny);
                    let row = &slice[q * nx..(q + 1) * nx];
                    out_row.iter_mut().zip(row).for_each(|(o, x)| *o += w * x);
                }
            }
        }
    }
    out
}

/// 2¹⁶ draws of the standard normal (a fixed seed), for the per-voxel noise of
/// [`augment_crop`]: indexed by 16 random bits, the noise is a sample of them.
fn normal_table() -> &'static [f32] {
    static TABLE: std::sync::OnceLock<Vec<f32>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut rng = SmallRng::seed_from_u64(0x006E_6F69_7365);
        (0..1 << 16)
            .map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal))
            .collect()
    })
}

/// `x^gamma` for `x ≥ 0` as `2^(gamma · log2 x)` with series that the compiler vectorises
/// (`powf` per voxel was a tenth of a batch's preparation). Relative error under 1e-5 where
/// the result is a normal float; 0 (or nearly: under 2⁻¹²⁵) for x = 0.
#[inline(always)]
fn pow_approx(x: f32, gamma: f32) -> f32 {
    // log2 x = e + log2 m, m ∈ [1, 2); log2 m = 2/ln 2 · atanh(s), s = (m − 1)/(m + 1) ≤ 1/3.
    let bits = x.to_bits();
    let e = ((bits >> 23) & 0xFF) as i32 - 127;
    let m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let atanh = s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 / 9.0))));
    let log2 = e as f32 + atanh * (2.0 / std::f32::consts::LN_2);
    // 2^y = 2^i · e^(f ln 2), i = ⌊y⌋, f ∈ [0, 1): Taylor to degree 7.
    let y = (gamma * log2).max(-125.0);
    let i = y.floor();
    let t = (y - i) * std::f32::consts::LN_2;
    let p = 1.0
        + t * (1.0
            + t * (0.5
                + t * (1.0 / 6.0
                    + t * (1.0 / 24.0 + t * (1.0 / 120.0 + t * (1.0 / 720.0 + t / 5040.0))))));
    f32::from_bits(p.to_bits().wrapping_add(((i as i32) << 23) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_approximate_power_follows_powf() {
        for gamma in [0.8f32, 0.9, 1.0, 1.1, 1.25] {
            for k in 0..=20_000 {
                let x = k as f32 * 1e-4;
                let (ours, exact) = (pow_approx(x, gamma), x.powf(gamma));
                assert!(
                    (ours - exact).abs() <= 1e-5 * exact + 1e-30,
                    "{x}^{gamma}: {ours} against {exact}"
                );
            }
            for x in [1e-30f32, 1e-12, 1e-6, 0.5, 3.0, 17.0] {
                let (ours, exact) = (pow_approx(x, gamma), x.powf(gamma));
                assert!((ours - exact).abs() <= 1e-5 * exact + 1e-30, "{x}^{gamma}");
            }
        }
        assert!(pow_approx(0.0, 0.8) < 1e-30);
    }

    #[test]
    fn the_noise_table_is_a_standard_normal_sample() {
        let t = normal_table();
        let n = t.len() as f64;
        let mean = t.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = t
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.02,
            "{mean} {var}"
        );
        let beyond_two = t.iter().filter(|v| v.abs() > 2.0).count() as f64 / n;
        assert!((beyond_two - 0.0455).abs() < 0.005, "{beyond_two}");
    }

    #[test]
    fn the_blur_equals_a_clamped_convolution_even_with_kernels_longer_than_a_line() {
        let size = [11, 5, 2];
        let v: Vec<f32> = (0..110).map(|i| ((i * 37) % 23) as f32 * 0.1).collect();
        for radius in [1usize, 3, 7] {
            let kernel: Vec<f32> = (0..=2 * radius).map(|t| 1.0 + t as f32 * 0.5).collect();
            for axis in [0, 1] {
                let got = blur_axis(&v, size, &kernel, axis);
                for k in 0..size[2] {
                    for j in 0..size[1] {
                        for i in 0..size[0] {
                            let (p, n) = if axis == 0 {
                                (i, size[0])
                            } else {
                                (j, size[1])
                            };
                            let expected: f32 = kernel
                                .iter()
                                .enumerate()
                                .map(|(t, w)| {
                                    let q = (p as isize + t as isize - radius as isize)
                                        .clamp(0, n as isize - 1)
                                        as usize;
                                    let (qi, qj) = if axis == 0 { (q, j) } else { (i, q) };
                                    w * v[qi + size[0] * (qj + size[1] * k)]
                                })
                                .sum();
                            let at = i + size[0] * (j + size[1] * k);
                            assert!((got[at] - expected).abs() < 1e-4, "axis {axis} r {radius}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn in_plane_blur_keeps_constants_and_spreads_a_point_in_x_and_y_only() {
        let size = [9, 7, 3];
        let flat = vec![0.5f32; 9 * 7 * 3];
        assert!(
            blur_in_plane(&flat, size, 1.0)
                .iter()
                .all(|v| (v - 0.5).abs() < 1e-6)
        );
        let mut point = vec![0.0f32; 9 * 7 * 3];
        let centre = 4 + 9 * (3 + 7);
        point[centre] = 1.0;
        let b = blur_in_plane(&point, size, 1.0);
        let total: f32 = b.iter().sum();
        assert!((total - 1.0).abs() < 1e-5);
        // Symmetric in x and y, nothing leaks into the other slices.
        assert!((b[centre - 1] - b[centre + 1]).abs() < 1e-7);
        assert!((b[centre - 9] - b[centre + 9]).abs() < 1e-7);
        assert!(b[centre - 1] > 0.0 && b[centre - 9] > 0.0);
        assert_eq!(b[centre - 63], 0.0);
        assert_eq!(b[centre + 63], 0.0);
    }

    #[test]
    fn masked_blocks_hold_the_mask_value_and_nothing_else_does() {
        use rand::SeedableRng;
        let size = [48, 48, 32];
        let block = 24 * 24 * 16;
        let mut masked_some = false;
        for seed in 0..20 {
            let mut v = vec![0.5f32; size.iter().product()];
            let mut rng = StdRng::seed_from_u64(seed);
            augment_crop(&mut v, size, DVec3::splat(2.0), -1.0, &mut rng);
            let masked = v.iter().filter(|&&x| x == -1.0).count();
            // Whole blocks, and no augmentation brings tissue near the mask value.
            assert_eq!(masked % block, 0, "seed {seed}: {masked}");
            assert!(v.iter().all(|&x| x == -1.0 || x > -0.5), "seed {seed}");
            masked_some |= masked > 0;
        }
        assert!(masked_some);
    }

    /// The AVX-512 build of the augmentation (where the CPU has it) gives the crop of the
    /// portable one bit for bit: batches are pure functions of the step on any CPU.
    #[test]
    fn the_augmentation_is_the_same_on_every_instruction_set() {
        use rand::SeedableRng;
        let size = [40, 36, 12];
        let image: Vec<f32> = (0..size.iter().product::<usize>())
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        for seed in 0..12 {
            let (mut fast, mut portable) = (image.clone(), image.clone());
            let spacing = DVec3::new(1.5, 2.0, 3.0);
            augment_crop(
                &mut fast,
                size,
                spacing,
                -1.0,
                &mut StdRng::seed_from_u64(seed),
            );
            let mut rng = StdRng::seed_from_u64(seed);
            augment_crop_passes(&mut portable, size, spacing, -1.0, &mut rng);
            let same = fast
                .iter()
                .zip(&portable)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "seed {seed}");
        }
    }
}
