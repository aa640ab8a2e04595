//! Local refinement of a transferred point by the intensities around it: the embedding says
//! roughly where a landmark is; the patch of the scan around the query, matched by normalised
//! cross-correlation (NCC) over a small window on the target, says exactly where.
//!
//! Both scans are resampled once onto world-aligned isotropic grids ([`PatchImage`]), so that a
//! patch of one and a patch of the other compare the same physical directions whatever each
//! file's voxel order, and a shift of the patch is a whole number of cells.

use glam::DVec3;
use serde::Serialize;

use crate::error::GeometryError;
use crate::geometry::Affine;
use crate::intensity::HuWindow;
use crate::resample::resample_linear_onto;
use crate::volume::Volume;

/// A scan's intensities through the model's HU window (0…1), on a grid whose axes are the
/// world's (R, A, S) with one isotropic step, and the same at twice the step (2×2×2 means) for
/// the coarse search; outside the scan, NaN.
#[derive(Debug, Clone)]
pub struct PatchImage {
    fine: Volume<f32>,
    coarse: Volume<f32>,
    step_mm: f64,
}

impl PatchImage {
    /// The step refinement was tuned at (validation scans; training/README.md).
    pub const DEFAULT_STEP_MM: f64 = 3.0;

    /// A scan's image at [`Self::DEFAULT_STEP_MM`].
    pub fn of_scan(scan: &crate::scan::Scan) -> Result<Self, GeometryError> {
        Self::new(&scan.volume, Self::DEFAULT_STEP_MM)
    }

    /// `hu`: a scan in HU. Resampled first and windowed after, so that no full-size copy is
    /// made.
    pub fn new(hu: &Volume<f32>, step_mm: f64) -> Result<Self, GeometryError> {
        let bounds = hu.world_bounds();
        let size = bounds.size();
        let shape = [size.x, size.y, size.z].map(|s| (s / step_mm).ceil().max(2.0) as usize);
        let origin = bounds.min + DVec3::splat(step_mm / 2.0);
        let affine = Affine::from_spacing(DVec3::splat(step_mm), origin)?;
        let mut fine = resample_linear_onto(hu, shape, affine, f32::NAN)?;
        for v in fine.data_mut() {
            if v.is_finite() {
                *v = HuWindow::MODEL.to_unit(*v);
            }
        }
        let coarse = halved(&fine)?;
        Ok(Self {
            fine,
            coarse,
            step_mm,
        })
    }

    pub fn step_mm(&self) -> f64 {
        self.step_mm
    }
}

/// The means of 2×2×2 blocks (of their finite cells), on a grid of twice the step.
fn halved(fine: &Volume<f32>) -> Result<Volume<f32>, GeometryError> {
    let [nx, ny, nz] = fine.shape();
    let shape = [nx / 2, ny / 2, nz / 2].map(|n| n.max(1));
    let step = fine.affine().spacing();
    let origin = fine.affine().to_world(DVec3::splat(0.5));
    let affine = Affine::from_spacing(step * 2.0, origin)?;
    Volume::from_fn(shape, affine, |i, j, k| {
        let (mut sum, mut n) = (0.0, 0);
        for (di, dj, dk) in (0..8).map(|c| (c & 1, c >> 1 & 1, c >> 2 & 1)) {
            if let Some(v) = fine.get(2 * i + di, 2 * j + dj, 2 * k + dk)
                && v.is_finite()
            {
                sum += v;
                n += 1;
            }
        }
        if n == 0 { f32::NAN } else { sum / n as f32 }
    })
}

/// Samples `(2 reach + 1)³` points of `image` around `centre`, one cell apart along the world
/// axes, x fastest; NaN outside. The grid is world-aligned, so every point lies at the same
/// fraction of its cell: one set of trilinear weights serves them all.
fn lattice(image: &Volume<f32>, centre: DVec3, reach: i32) -> Vec<f32> {
    let side = (2 * reach + 1) as usize;
    let mut out = vec![f32::NAN; side * side * side];
    let v = image.world_to_voxel(centre);
    let base = v.floor();
    let f = v - base;
    let [nx, ny, nz] = image.shape().map(|n| n as i64);
    let corner = [base.x as i64, base.y as i64, base.z as i64].map(|c| c - i64::from(reach));
    let weights: [f32; 8] = std::array::from_fn(|c| {
        let w = |bit: usize, f: f64| if c >> bit & 1 == 0 { 1.0 - f } else { f };
        (w(0, f.x) * w(1, f.y) * w(2, f.z)) as f32
    });
    let data = image.data();
    let (sx, sy) = (1, nx as usize);
    let sz = (nx * ny) as usize;
    for k in 0..side {
        let z = corner[2] + k as i64;
        if z < 0 || z + 1 >= nz {
            continue;
        }
        for j in 0..side {
            let y = corner[1] + j as i64;
            if y < 0 || y + 1 >= ny {
                continue;
            }
            for i in 0..side {
                let x = corner[0] + i as i64;
                if x < 0 || x + 1 >= nx {
                    continue;
                }
                let at = x as usize + sy * y as usize + sz * z as usize;
                let offsets = [0, sx, sy, sx + sy, sz, sx + sz, sy + sz, sx + sy + sz];
                out[(k * side + j) * side + i] = offsets
                    .iter()
                    .zip(&weights)
                    .map(|(&o, &w)| w * data[at + o])
                    .sum();
            }
        }
    }
    out
}

/// The knobs of the refinement (chosen on the validation scans; see training/README.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RefineSettings {
    /// Each patch reaches this far from its centre along each axis (mm).
    pub patch_mm: f64,
    /// The window searched around the transferred point, along each axis (mm).
    pub search_mm: f64,
    /// NCC lost per (shift / search)²: keeps the embedding's answer unless the image disagrees
    /// clearly.
    pub shift_penalty: f64,
    /// Besides the patch at the query, six more this far from it along ±R, ±A, ±S; the point
    /// moves by the mean of the middle half of their shifts (one patch misled by a look-alike
    /// cannot move it).
    pub spread_mm: f64,
    /// With a positive value, six more patches this far from the query along ±R, ±A, ±S join
    /// the middle-half mean (0: none). A second ring at 45 mm gained 0.2–0.4 mm on each of three
    /// models' validation scans (training/README.md, Session 20).
    pub outer_spread_mm: f64,
    /// How many times the neighbourhood is matched: each round starts where the last one
    /// ended, so that a point can move farther than one search window (a second round cost
    /// 0.5 mm on validation: 1).
    pub rounds: u32,
}

impl Default for RefineSettings {
    fn default() -> Self {
        Self {
            patch_mm: 24.0,
            search_mm: 24.0,
            shift_penalty: 0.05,
            spread_mm: 30.0,
            outer_spread_mm: 45.0,
            rounds: 1,
        }
    }
}

/// A refined point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Refined {
    pub world: DVec3,
    /// The best patch's normalised cross-correlation with the query's (−1…1).
    pub ncc: f64,
}

/// Moves `start` (a point on `to` that corresponds to `query` on `from`) to where the patch of
/// `to` best matches the patch of `from` around `query`: the whole window searched at twice the
/// step, then ±1 cell at the step, then below a cell by parabolas. `None` when the query's
/// patch has no structure (a flat region) or lies mostly outside `from`, or when the two images
/// have different steps (their patches would not cover the same millimetres).
pub fn refine(
    from: &PatchImage,
    query: DVec3,
    to: &PatchImage,
    start: DVec3,
    settings: &RefineSettings,
) -> Option<Refined> {
    if (from.step_mm - to.step_mm).abs() > 1e-9 {
        return None;
    }
    let cells = |mm: f64, step: f64| (mm / step).round().max(1.0) as i32;
    let penalty = |shift_mm: DVec3| {
        settings.shift_penalty * shift_mm.length_squared() / settings.search_mm.max(1.0).powi(2)
    };

    // Coarse: the whole window, around the target cell nearest to `start`.
    let coarse_step = 2.0 * to.step_mm;
    let patch = cells(settings.patch_mm, coarse_step);
    let search = (settings.search_mm / coarse_step).round().max(0.0) as i32;
    let template = Template::new(&lattice(&from.coarse, query, patch), patch)?;
    let (window, centre) = Window::around(&to.coarse, start, patch + search, template.row);
    let scores = template.scores(&window, search);
    let offset = centre - start;
    let (shift, _) = scores.best(|d| penalty(offset + d * coarse_step))?;
    let coarse = centre + shift * coarse_step;

    // Fine: ±1 cell (half a coarse one) around the coarse answer.
    let step = to.step_mm;
    let patch = cells(settings.patch_mm, step);
    let template = Template::new(&lattice(&from.fine, query, patch), patch)?;
    let (window, centre) = Window::around(&to.fine, coarse, patch + FINE_REACH, template.row);
    let scores = template.scores(&window, FINE_REACH);
    let offset = centre - start;
    let (shift, ncc) = scores.best(|d| penalty(offset + d * step))?;
    Some(Refined {
        world: centre + scores.subcell(shift) * step,
        ncc,
    })
}

/// [`refine`] for `query` and six points around it (`spread_mm` along ±R, ±A, ±S; six more at
/// `outer_spread_mm`), each starting where `carry` (the transfer's local map from source to
/// target) puts it; `start` (`carry(query)`) moves by the mean of the middle half of their
/// shifts, axis by axis, `rounds` times. The NCC reported is the median of theirs. `None` when
/// no patch has structure.
pub fn refine_neighbourhood(
    from: &PatchImage,
    query: DVec3,
    to: &PatchImage,
    carry: impl Fn(DVec3) -> DVec3,
    settings: &RefineSettings,
) -> Option<Refined> {
    let mut moved = DVec3::ZERO;
    let mut result = None;
    for _ in 0..settings.rounds.max(1) {
        let Some(r) = refine_round(from, query, to, |x| carry(x) + moved, settings) else {
            break;
        };
        moved = r.world - carry(query);
        result = Some(r);
    }
    result
}

/// One round of [`refine_neighbourhood`].
fn refine_round(
    from: &PatchImage,
    query: DVec3,
    to: &PatchImage,
    carry: impl Fn(DVec3) -> DVec3,
    settings: &RefineSettings,
) -> Option<Refined> {
    let directions = [
        DVec3::X,
        -DVec3::X,
        DVec3::Y,
        -DVec3::Y,
        DVec3::Z,
        -DVec3::Z,
    ];
    let mut offsets = vec![DVec3::ZERO];
    offsets.extend(directions.iter().map(|d| *d * settings.spread_mm));
    if settings.outer_spread_mm > 0.0 {
        offsets.extend(directions.iter().map(|d| *d * settings.outer_spread_mm));
    }
    let mut shifts = Vec::with_capacity(offsets.len());
    let mut nccs = Vec::with_capacity(offsets.len());
    for offset in offsets {
        let point = query + offset;
        let start = carry(point);
        if let Some(r) = refine(from, point, to, start, settings) {
            shifts.push(r.world - start);
            nccs.push(r.ncc);
        }
    }
    if shifts.is_empty() {
        return None;
    }
    let shift = DVec3::new(
        interquartile_mean(shifts.iter().map(|d| d.x).collect()),
        interquartile_mean(shifts.iter().map(|d| d.y).collect()),
        interquartile_mean(shifts.iter().map(|d| d.z).collect()),
    );
    Some(Refined {
        world: carry(query) + shift,
        ncc: median(nccs),
    })
}

/// The mean of the middle half of `values` (a quarter cut from each end): as deaf to a few
/// patches misled by look-alikes as the median, and less noisy (Session 20: −0.08 to −0.16 mm
/// against the median on three models; weighting patches by their NCC did not help, and
/// weighting them sharply cost 1.3 mm: look-alikes match well).
fn interquartile_mean(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let cut = values.len() / 4;
    let middle = &values[cut..values.len() - cut];
    if middle.is_empty() {
        return f64::NAN;
    }
    middle.iter().sum::<f64>() / middle.len() as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => 0.5 * (values[n / 2 - 1] + values[n / 2]),
    }
}

/// The fine search reaches this many cells around the coarse answer (a coarse cell is two).
const FINE_REACH: i32 = 1;

/// Template rows are padded to a multiple of this many cells, so that the products run in
/// whole vectors (8 for AVX2; AVX-512's 16 take one vector and a tail of 8).
const LANES: usize = 8;

/// The query's patch, centred, its rows padded with zeros to a multiple of [`LANES`], with its
/// norm.
struct Template {
    centred: Vec<f32>,
    norm: f32,
    side: usize,
    /// Padded row length.
    row: usize,
}

impl Template {
    /// `patch`: a lattice of reach `reach`. `None` for a patch mostly outside its scan or
    /// without structure.
    fn new(patch: &[f32], reach: i32) -> Option<Self> {
        let side = (2 * reach + 1) as usize;
        let valid = patch.iter().filter(|v| v.is_finite()).count();
        if valid * 2 < patch.len() {
            return None;
        }
        let mean = patch.iter().filter(|v| v.is_finite()).sum::<f32>() / valid as f32;
        let row = side.div_ceil(LANES) * LANES;
        let mut centred = vec![0.0; side * side * row];
        for (r, cells) in patch.chunks_exact(side).enumerate() {
            for (i, &v) in cells.iter().enumerate() {
                if v.is_finite() {
                    centred[r * row + i] = v - mean;
                }
            }
        }
        let norm = centred.iter().map(|v| v * v).sum::<f32>().sqrt();
        // A standard deviation below 1% of the window: a flat region, nothing to match.
        (norm > 0.01 * (valid as f32).sqrt()).then_some(Self {
            centred,
            norm,
            side,
            row,
        })
    }

    /// The NCC of the template with every shift of ±`search` cells within `window`.
    fn scores(&self, window: &Window, search: i32) -> Scores {
        let side = self.side;
        let width = (2 * search + 1) as usize;
        let sums = BoxSums::of(window);
        // Σ s t per shift, at the widest vector instructions the CPU has (chosen at run time).
        let products = pulp::Arch::new().dispatch(Correlate {
            template: self,
            window,
            width,
        });
        let values = products
            .iter()
            .enumerate()
            .map(|(n, &sum_st)| {
                let origin = [n % width, n / width % width, n / (width * width)];
                let (sum_t, sum_tt, seen) = sums.over(origin, side);
                if seen * 2.0 < (side * side * side) as f64 {
                    return f64::NAN;
                }
                // Σ s (t − t̄) = Σ s t − t̄ Σ s, and Σ s ≈ 0 over the cells seen (s is centred).
                let var_t = sum_tt - sum_t * sum_t / seen;
                if var_t > 1e-6 {
                    f64::from(sum_st) / (f64::from(self.norm) * var_t.sqrt())
                } else {
                    f64::NAN
                }
            })
            .collect();
        Scores { values, search }
    }
}

/// Σ s t of a template with every shift within a window: the one product per cell and shift
/// that the NCC costs. The template's padding is zero, so rows read past the patch add nothing.
struct Correlate<'a> {
    template: &'a Template,
    window: &'a Window,
    width: usize,
}

impl pulp::WithSimd for Correlate<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> Vec<f32> {
        let Self {
            template,
            window,
            width,
        } = self;
        let (side, row) = (template.side, template.row);
        let mut out = vec![0.0f32; width * width * width];
        // Per shift along x: a vector of partial sums and a scalar for the row tails. A row
        // pair (template row, window row) serves every x shift while it is in cache.
        let mut lanes = vec![simd.splat_f32s(0.0); width];
        let mut rest = vec![0.0f32; width];
        for oz in 0..width {
            for oy in 0..width {
                lanes.fill(simd.splat_f32s(0.0));
                rest.fill(0.0);
                for k in 0..side {
                    for j in 0..side {
                        let s_row = &template.centred[(k * side + j) * row..][..row];
                        let (s_head, s_tail) = S::as_simd_f32s(s_row);
                        let t_start = window.index(0, oy + j, oz + k);
                        for (ox, (sum, tail)) in lanes.iter_mut().zip(rest.iter_mut()).enumerate() {
                            let t_row = &window.values[t_start + ox..][..row];
                            let (t_head, t_tail) = S::as_simd_f32s(t_row);
                            let mut acc = *sum;
                            for (&t, &s) in t_head.iter().zip(s_head) {
                                acc = simd.mul_add_e_f32s(t, s, acc);
                            }
                            *sum = acc;
                            for (&t, &s) in t_tail.iter().zip(s_tail) {
                                *tail += t * s;
                            }
                        }
                    }
                }
                let at = (oz * width + oy) * width;
                for (ox, value) in out[at..at + width].iter_mut().enumerate() {
                    *value = simd.reduce_sum_f32s(lanes[ox]) + rest[ox];
                }
            }
        }
        out
    }
}

/// Summed-volume tables of a window's values, squares and seen cells: the sums over any cube in
/// eight lookups, so that each shift costs one product per cell instead of four.
struct BoxSums {
    /// Σ t, Σ t², Σ seen over `[0, x) × [0, y) × [0, z)`, on an `n × n × n` table.
    tables: [Vec<f64>; 3],
    n: usize,
}

impl BoxSums {
    fn of(window: &Window) -> Self {
        // The shifted cubes stay inside the unpadded `side³` part of the window.
        let side = window.ny;
        let n = side + 1;
        let mut tables: [Vec<f64>; 3] = std::array::from_fn(|_| vec![0.0; n * n * n]);
        let at = |x: usize, y: usize, z: usize| (z * n + y) * n + x;
        // Running sums along x, then rows added along y, then slices along z.
        for z in 0..side {
            for y in 0..side {
                let row = window.index(0, y, z);
                let mut sums = [0.0f64; 3];
                for x in 0..side {
                    let t = f64::from(window.values[row + x]);
                    sums[0] += t;
                    sums[1] += t * t;
                    sums[2] += f64::from(window.seen[row + x]);
                    for (table, sum) in tables.iter_mut().zip(sums) {
                        table[at(x + 1, y + 1, z + 1)] = sum;
                    }
                }
            }
        }
        for table in &mut tables {
            for z in 1..n {
                for y in 2..n {
                    let (before, rest) = table.split_at_mut(at(0, y, z));
                    let previous = &before[at(0, y - 1, z)..][..n];
                    for (cell, above) in rest[..n].iter_mut().zip(previous) {
                        *cell += above;
                    }
                }
            }
            for z in 2..n {
                let (before, rest) = table.split_at_mut(at(0, 0, z));
                let previous = &before[at(0, 0, z - 1)..][..n * n];
                for (cell, below) in rest[..n * n].iter_mut().zip(previous) {
                    *cell += below;
                }
            }
        }
        Self { tables, n }
    }

    /// (Σ t, Σ t², cells seen) over the cube of `side` cells from `origin`.
    fn over(&self, origin: [usize; 3], side: usize) -> (f64, f64, f64) {
        let [x0, y0, z0] = origin;
        let [x1, y1, z1] = origin.map(|v| v + side);
        let n = self.n;
        let sum = |t: &Vec<f64>| {
            let at = |x: usize, y: usize, z: usize| t[(z * n + y) * n + x];
            at(x1, y1, z1) - at(x0, y1, z1) - at(x1, y0, z1) - at(x1, y1, z0)
                + at(x0, y0, z1)
                + at(x0, y1, z0)
                + at(x1, y0, z0)
                - at(x0, y0, z0)
        };
        (
            sum(&self.tables[0]),
            sum(&self.tables[1]),
            sum(&self.tables[2]),
        )
    }
}

/// Cells of a target image around a grid cell, copied without interpolation, rows long enough
/// for padded template rows; outside the image 0, and not seen.
struct Window {
    values: Vec<f32>,
    seen: Vec<f32>,
    /// Cells per row and rows per slice (and slices: the window is `ny` cells deep).
    nx: usize,
    ny: usize,
}

impl Window {
    /// The window of reach `reach` around the cell of `image` nearest to `centre`, its rows
    /// `row` cells longer; and that cell's world position.
    fn around(image: &Volume<f32>, centre: DVec3, reach: i32, row: usize) -> (Self, DVec3) {
        let v = image.world_to_voxel(centre).round();
        let c = [v.x as i64, v.y as i64, v.z as i64];
        let side = (2 * reach + 1) as usize;
        // Rows read from any shift run a padded template row long: `row` more cells is enough.
        let (nx, ny, nz) = (side + row, side, side);
        let shape = image.shape();
        let mut values = vec![0.0; nx * ny * nz];
        let mut seen = vec![0.0; nx * ny * nz];
        let data = image.data();
        for k in 0..nz {
            let z = c[2] - i64::from(reach) + k as i64;
            if z < 0 || z >= shape[2] as i64 {
                continue;
            }
            for j in 0..ny {
                let y = c[1] - i64::from(reach) + j as i64;
                if y < 0 || y >= shape[1] as i64 {
                    continue;
                }
                // The part of the row inside the image, as one slice.
                let x0 = c[0] - i64::from(reach);
                let first = (-x0).clamp(0, nx as i64) as usize;
                let last = (shape[0] as i64 - x0).clamp(0, nx as i64) as usize;
                if first >= last {
                    continue;
                }
                let source =
                    (x0 + first as i64) as usize + shape[0] * (y as usize + shape[1] * z as usize);
                let at = (k * ny + j) * nx;
                let cells = &data[source..source + (last - first)];
                let row = &mut values[at + first..at + last];
                let row_seen = &mut seen[at + first..at + last];
                for ((value, mark), &t) in row.iter_mut().zip(row_seen).zip(cells) {
                    let inside = t.is_finite();
                    *value = if inside { t } else { 0.0 };
                    *mark = if inside { 1.0 } else { 0.0 };
                }
            }
        }
        let world = image.affine().to_world(DVec3::new(v.x, v.y, v.z));
        (
            Self {
                values,
                seen,
                nx,
                ny,
            },
            world,
        )
    }

    fn index(&self, x: usize, y: usize, z: usize) -> usize {
        (z * self.ny + y) * self.nx + x
    }
}

/// NCC per shift of ±`search` cells, x fastest; NaN where too little of the patch was seen.
struct Scores {
    values: Vec<f64>,
    search: i32,
}

impl Scores {
    fn at(&self, d: [i32; 3]) -> f64 {
        let w = 2 * self.search + 1;
        if d.iter().any(|v| v.abs() > self.search) {
            return f64::NAN;
        }
        let [x, y, z] = d.map(|v| v + self.search);
        self.values[((z * w + y) * w + x) as usize]
    }

    /// The shift (in cells) of the best NCC less `penalty(shift)`, and its NCC.
    fn best(&self, penalty: impl Fn(DVec3) -> f64) -> Option<(DVec3, f64)> {
        let s = self.search;
        let mut best: Option<(f64, f64, DVec3)> = None;
        for z in -s..=s {
            for y in -s..=s {
                for x in -s..=s {
                    let ncc = self.at([x, y, z]);
                    if !ncc.is_finite() {
                        continue;
                    }
                    let d = DVec3::new(f64::from(x), f64::from(y), f64::from(z));
                    let score = ncc - penalty(d);
                    if best.is_none_or(|(b, _, _)| score > b) {
                        best = Some((score, ncc, d));
                    }
                }
            }
        }
        best.map(|(_, ncc, d)| (d, ncc))
    }

    /// `shift` moved below a cell: a parabola through it and its neighbours, axis by axis.
    fn subcell(&self, shift: DVec3) -> DVec3 {
        let d = [shift.x, shift.y, shift.z].map(|v| v as i32);
        let b = self.at(d);
        let mut out = shift;
        for axis in 0..3 {
            let (mut lo, mut hi) = (d, d);
            lo[axis] -= 1;
            hi[axis] += 1;
            let (a, c) = (self.at(lo), self.at(hi));
            let curvature = a - 2.0 * b + c;
            if a.is_finite() && c.is_finite() && curvature < 0.0 {
                out[axis] += (0.5 * (a - c) / curvature).clamp(-0.5, 0.5);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scan with a few bright blobs on a dark background, shifted by `shift` mm.
    fn blobs(shift: DVec3) -> Volume<f32> {
        let affine =
            Affine::from_spacing(DVec3::new(1.5, 1.5, 2.5), DVec3::new(-60.0, -60.0, -80.0))
                .expect("affine");
        let centres = [
            DVec3::new(-10.0, 5.0, -20.0),
            DVec3::new(15.0, -12.0, 10.0),
            DVec3::new(0.0, 20.0, 30.0),
        ];
        Volume::from_fn([80, 80, 64], affine, |i, j, k| {
            let w = affine.to_world(DVec3::new(i as f64, j as f64, k as f64)) - shift;
            let bright = centres.iter().any(|c| (w - *c).length() < 9.0);
            if bright { 200.0 } else { -50.0 }
        })
        .expect("volume")
    }

    #[test]
    fn recovers_a_known_shift() {
        let shift = DVec3::new(7.0, -5.0, 9.0);
        let from = PatchImage::new(&blobs(DVec3::ZERO), 3.0).expect("image");
        let to = PatchImage::new(&blobs(shift), 3.0).expect("image");
        let query = DVec3::new(-10.0, 5.0, -12.0);
        let refined =
            refine(&from, query, &to, query, &RefineSettings::default()).expect("refined");
        assert!(
            (refined.world - (query + shift)).length() < 2.0,
            "{:?} vs {:?}",
            refined.world,
            query + shift
        );
        assert!(refined.ncc > 0.9, "ncc {}", refined.ncc);
    }

    #[test]
    fn the_interquartile_mean_ignores_a_quarter_at_each_end() {
        let values = vec![100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -80.0];
        assert_eq!(interquartile_mean(values), 3.5);
        assert_eq!(interquartile_mean(vec![2.0]), 2.0);
        assert_eq!(interquartile_mean(vec![1.0, 3.0]), 2.0);
        assert!(interquartile_mean(Vec::new()).is_nan());
    }

    #[test]
    fn rounds_carry_a_point_farther_than_one_search_window() {
        let shift = DVec3::new(0.0, 0.0, 30.0);
        let from = PatchImage::new(&blobs(DVec3::ZERO), 3.0).expect("image");
        let to = PatchImage::new(&blobs(shift), 3.0).expect("image");
        let query = DVec3::new(-10.0, 5.0, -20.0);
        let settings = |rounds| RefineSettings {
            search_mm: 12.0,
            shift_penalty: 0.0,
            outer_spread_mm: 0.0,
            rounds,
            ..RefineSettings::default()
        };
        let error = |rounds| {
            let r =
                refine_neighbourhood(&from, query, &to, |x| x, &settings(rounds)).expect("refined");
            (r.world - (query + shift)).length()
        };
        let (once, thrice) = (error(1), error(3));
        assert!(
            once > 4.0,
            "one round of ±12 mm reached a 30 mm shift: {once} mm off"
        );
        assert!(thrice < 2.0, "three rounds end {thrice} mm off");
    }

    #[test]
    fn the_outer_ring_joins_the_median() {
        // Inside a flat region whose inner patches see nothing, the second ring reaches the
        // blobs and moves the point by their shift.
        let shift = DVec3::new(6.0, 0.0, -6.0);
        let from = PatchImage::new(&blobs(DVec3::ZERO), 3.0).expect("image");
        let to = PatchImage::new(&blobs(shift), 3.0).expect("image");
        let query = DVec3::new(0.0, 20.0, 75.0);
        let base = RefineSettings {
            spread_mm: 10.0,
            ..RefineSettings::default()
        };
        let inner = RefineSettings {
            outer_spread_mm: 0.0,
            ..base
        };
        assert!(refine_neighbourhood(&from, query, &to, |x| x, &inner).is_none());
        let outer = RefineSettings {
            outer_spread_mm: 45.0,
            ..base
        };
        let r = refine_neighbourhood(&from, query, &to, |x| x, &outer).expect("refined");
        assert!((r.world - (query + shift)).length() < 2.0, "{:?}", r.world);
    }

    #[test]
    fn a_flat_patch_is_not_refined() {
        let from = PatchImage::new(&blobs(DVec3::ZERO), 3.0).expect("image");
        let far = DVec3::new(-45.0, -45.0, -60.0);
        assert!(refine(&from, far, &from, far, &RefineSettings::default()).is_none());
    }
}
