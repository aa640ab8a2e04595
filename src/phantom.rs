//! A synthetic abdominal CT with organ labels, for demos and tests that must run without real
//! data. Organs sit where anatomy puts them (RAS: the liver on the patient's right, +x), so
//! code that flips an axis fails on the phantom as it would on a real scan.

use glam::DVec3;

use crate::error::GeometryError;
use crate::geometry::Affine;
use crate::volume::Volume;

/// One organ: an axis-aligned ellipsoid (centre and radii in mm) with its HU and BTCV label.
#[derive(Debug, Clone, Copy)]
pub struct PhantomOrgan {
    pub name: &'static str,
    pub label: u16,
    pub centre: DVec3,
    pub radii: DVec3,
    pub hu: f32,
}

/// Organs in world RAS mm about the body centre; labels as in BTCV's `labels.json`.
pub const ORGANS: [PhantomOrgan; 6] = [
    PhantomOrgan {
        name: "liver",
        label: 6,
        centre: DVec3::new(70.0, 0.0, 40.0),
        radii: DVec3::new(65.0, 60.0, 60.0),
        hu: 60.0,
    },
    PhantomOrgan {
        name: "spleen",
        label: 1,
        centre: DVec3::new(-85.0, -30.0, 45.0),
        radii: DVec3::new(30.0, 40.0, 45.0),
        hu: 50.0,
    },
    PhantomOrgan {
        name: "kidney_right",
        label: 2,
        centre: DVec3::new(65.0, -55.0, -40.0),
        radii: DVec3::new(25.0, 25.0, 45.0),
        hu: 30.0,
    },
    PhantomOrgan {
        name: "kidney_left",
        label: 3,
        centre: DVec3::new(-65.0, -55.0, -30.0),
        radii: DVec3::new(25.0, 25.0, 45.0),
        hu: 30.0,
    },
    PhantomOrgan {
        name: "aorta",
        label: 8,
        centre: DVec3::new(-15.0, -40.0, 0.0),
        radii: DVec3::new(12.0, 12.0, 200.0),
        hu: 200.0,
    },
    PhantomOrgan {
        name: "inferior_vena_cava",
        label: 9,
        centre: DVec3::new(20.0, -35.0, 0.0),
        radii: DVec3::new(11.0, 11.0, 200.0),
        hu: 120.0,
    },
];

/// The phantom's version: the demo cohort's folder is named after it, so that phantoms written
/// by an older ape (kept on disk for their cached maps) are not shown beside a newer model.
/// Version 2 added the anatomy a network trained on CT leans on (lungs, ribs, spine, bowel).
pub const VERSION: u32 = 2;

/// Body ellipse radii (x, y) in mm; the body runs the whole length of the scan.
const BODY_RADII: [f64; 2] = [160.0, 115.0];

/// Whether `p` lies inside the ellipsoid about `centre` with `radii`.
fn inside(p: DVec3, centre: DVec3, radii: DVec3) -> bool {
    ((p - centre) / radii).length_squared() <= 1.0
}

/// Where `p` (body-relative mm) lies on the body's ellipse: 1 on the skin, 0 on the axis.
fn body_radius(p: DVec3) -> f64 {
    ((p.x / BODY_RADII[0]).powi(2) + (p.y / BODY_RADII[1]).powi(2)).sqrt()
}

/// The HU of an unlabelled body voxel at `p` (body-relative mm): the structures a network
/// trained on real CT leans on to tell up from down and left from right (lungs above the
/// diaphragm, ribs, vertebrae with discs, pelvis below, gas in the bowel, muscle and fat), so
/// that the demo cohort shows what the model does on anatomy rather than on a uniform cylinder.
fn background_hu(p: DVec3) -> f32 {
    let r = body_radius(p);
    // Skin and subcutaneous fat, then the muscle of the body wall.
    if r > 1.0 - 15.0 / BODY_RADII[1] {
        return -100.0;
    }
    let wall = r > 1.0 - 27.0 / BODY_RADII[1];
    // Ribs: bone hoops in the wall every 28 mm above the pelvis' brim, open at the front.
    if wall && p.z > -60.0 && p.z.rem_euclid(28.0) < 9.0 && p.y < 70.0 {
        return 450.0;
    }
    if wall {
        return 45.0;
    }
    // Lungs above the diaphragm (the liver's dome rises into the right one), the heart between.
    if inside(
        p,
        DVec3::new(-20.0, 25.0, 165.0),
        DVec3::new(55.0, 45.0, 55.0),
    ) {
        return 40.0;
    }
    for side in [1.0, -1.0] {
        if inside(
            p,
            DVec3::new(side * 80.0, -15.0, 185.0),
            DVec3::new(60.0, 75.0, 105.0),
        ) {
            return -850.0;
        }
    }
    // The back muscles beside the spine, and the psoas below the kidneys.
    for side in [1.0, -1.0] {
        if inside(
            p,
            DVec3::new(side * 38.0, -88.0, 0.0),
            DVec3::new(24.0, 16.0, 1e4),
        ) {
            return 50.0;
        }
        if p.z < -10.0
            && inside(
                p,
                DVec3::new(side * (40.0 - 0.1 * p.z), -62.0, -10.0),
                DVec3::new(16.0, 16.0, 1e4),
            )
        {
            return 50.0;
        }
    }
    // The pelvis: iliac wings low at both sides, the bladder between them at the front.
    if p.z < -110.0 {
        for side in [1.0, -1.0] {
            let wing = inside(
                p,
                DVec3::new(side * 100.0, -40.0, -200.0),
                DVec3::new(25.0, 60.0, 95.0),
            );
            if wing {
                return 500.0;
            }
        }
        if inside(
            p,
            DVec3::new(0.0, 40.0, -190.0),
            DVec3::new(50.0, 40.0, 45.0),
        ) {
            return 10.0;
        }
    }
    // The stomach high on the left: fluid with gas on top (the patient lies on the back).
    if inside(
        p,
        DVec3::new(-45.0, 35.0, 70.0),
        DVec3::new(40.0, 32.0, 38.0),
    ) {
        return if p.y > 48.0 { -950.0 } else { 15.0 };
    }
    // Bowel loops in the lower abdomen: 40 mm cells, each a loop of gas or contents.
    if p.z < 10.0 && p.y > -40.0 && p.x.abs() < 115.0 {
        let cell = (p / 40.0).floor();
        let centre = (cell + 0.5) * 40.0;
        if (p - centre).length() < 15.0 {
            let hash = (cell.x as i64 * 73_856_093)
                ^ (cell.y as i64 * 19_349_663)
                ^ (cell.z as i64 * 83_492_791);
            return if hash.rem_euclid(3) == 0 {
                -900.0
            } else {
                30.0
            };
        }
    }
    // Fat between the organs.
    -70.0 + 80.0 * (1.0 - r) as f32
}

/// Deterministic noise of a few HU per voxel, like a CT's, so that no region is flat.
fn noise(i: usize, j: usize, k: usize) -> f32 {
    let mut h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (k as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 32;
    (h % 25) as f32 - 12.0
}

/// The simplest body (HU) on the grid of `shape` voxels under `affine`: soft tissue (40 HU)
/// inside the world box `body` (lowest and highest corner, RAS mm), air elsewhere. For tests of
/// what lies inside the body.
pub fn box_body(
    shape: [usize; 3],
    affine: Affine,
    body: (DVec3, DVec3),
) -> Result<Volume<f32>, GeometryError> {
    Volume::from_fn(shape, affine, |i, j, k| {
        let w = affine.to_world(DVec3::new(i as f64, j as f64, k as f64));
        if w.cmpge(body.0).all() && w.cmple(body.1).all() {
            40.0
        } else {
            -1000.0
        }
    })
}

/// A phantom scan (HU) and its label map on the grid of `shape` voxels under `affine`, with the
/// body centred on world point `centre` and scaled by `scale`.
pub fn phantom(
    shape: [usize; 3],
    affine: Affine,
    centre: DVec3,
    scale: f64,
) -> Result<(Volume<f32>, Volume<u16>), GeometryError> {
    let classify = |i: usize, j: usize, k: usize| -> (f32, u16) {
        let p = (affine.to_world(DVec3::new(i as f64, j as f64, k as f64)) - centre) / scale;
        if body_radius(p) > 1.0 {
            return (-1000.0, 0);
        }
        // The spine behind the aorta, unlabelled: vertebral bodies with discs every 32 mm, the
        // canal and the arch behind them.
        if (p.x / 20.0).powi(2) + ((p.y + 80.0) / 20.0).powi(2) <= 1.0 {
            let disc = p.z.rem_euclid(32.0) < 6.0;
            return (if disc { 90.0 } else { 700.0 }, 0);
        }
        let arch = (p.x / 16.0).powi(2) + ((p.y + 108.0) / 12.0).powi(2);
        if arch <= 1.0 {
            return (if arch <= 0.3 { 15.0 } else { 600.0 }, 0);
        }
        for organ in &ORGANS {
            if inside(p, organ.centre, organ.radii) {
                return (organ.hu, organ.label);
            }
        }
        (background_hu(p), 0)
    };
    let scan = Volume::from_fn(shape, affine, |i, j, k| {
        let hu = classify(i, j, k).0;
        if hu > -1000.0 {
            hu + noise(i, j, k)
        } else {
            hu
        }
    })?;
    let labels = Volume::from_fn(shape, affine, |i, j, k| classify(i, j, k).1)?;
    Ok((scan, labels))
}

/// The standard demo phantom: 128×96×80 voxels of 3×3×4 mm in BTCV's L,P,S voxel order.
pub fn demo_phantom() -> Result<(Volume<f32>, Volume<u16>), GeometryError> {
    let shape = [128, 96, 80];
    let spacing = DVec3::new(3.0, 3.0, 4.0);
    // Voxel axes point to the patient's left and posterior, as BTCV's do.
    let linear = glam::DMat3::from_diagonal(DVec3::new(-spacing.x, -spacing.y, spacing.z));
    let half_extent = DVec3::new(-spacing.x, -spacing.y, spacing.z)
        * DVec3::new(
            shape[0] as f64 - 1.0,
            shape[1] as f64 - 1.0,
            shape[2] as f64 - 1.0,
        )
        * 0.5;
    let affine = Affine::new(linear, -half_extent)?;
    phantom(shape, affine, DVec3::ZERO, 1.0)
}

/// The labels of the phantom's organs, as a `labels.json` text.
pub fn labels_json() -> String {
    let entries: Vec<String> = ORGANS
        .iter()
        .map(|o| format!("  \"{}\": \"{}\"", o.label, o.name))
        .collect();
    format!("{{\n \"labels\": {{\n{}\n }}\n}}\n", entries.join(",\n"))
}

/// Why a demo cohort could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    #[error(transparent)]
    Volume(#[from] crate::VolumeError),
}

/// Writes a demo cohort of `n` phantoms that differ in position and size (as patients do),
/// with label maps and a `labels.json`, into `dir`; returns the scans' paths. Files already
/// there are kept, so that their cached APE maps stay valid.
pub fn write_demo_cohort(
    dir: &std::path::Path,
    n: usize,
) -> Result<Vec<std::path::PathBuf>, DemoError> {
    let io = |source| {
        DemoError::Volume(crate::VolumeError::Io {
            path: dir.to_owned(),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(dir.join("labels.json"), labels_json()).map_err(io)?;
    let (_, labels) = demo_phantom()?;
    let affine = *labels.affine();
    let mut scans = Vec::with_capacity(n);
    for i in 0..n {
        let scan_path = dir.join(format!("phantom_{i:02}.nii.gz"));
        let label_path = dir.join(format!("phantom_{i:02}_label.nii.gz"));
        if !(scan_path.is_file() && label_path.is_file()) {
            let t = i as f64;
            let centre = DVec3::new(6.0 * t - 9.0, 4.0 * (t % 2.0) - 2.0, 10.0 * t - 15.0);
            let scale = 0.92 + 0.05 * t;
            let (ct, organ_labels) = phantom(labels.shape(), affine, centre, scale)?;
            crate::io::nifti::write_nifti(&scan_path, &ct.map(|&hu| hu as i16))?;
            crate::io::nifti::write_nifti(&label_path, &organ_labels)?;
        }
        scans.push(scan_path);
    }
    Ok(scans)
}
