//! A CT scan in Hounsfield units, however its file stores intensities.

use std::path::Path;

use glam::DVec3;

use crate::error::VolumeError;
use crate::intensity::{HuWindow, Intensity};
use crate::io::{StorageInfo, StoredVolume};
use crate::labels::DatasetSidecar;
use crate::volume::Volume;

/// A CT volume whose voxels are HU.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Voxel values in HU.
    pub volume: Volume<f32>,
    pub info: StorageInfo,
    /// How the stored values were turned into HU.
    pub intensity: Intensity,
    /// Smallest and largest stored value (after the file's own slope and intercept).
    pub stored_range: (f32, f32),
}

impl Scan {
    /// Reads a NIfTI CT scan and converts it to HU.
    ///
    /// Stored values are HU unless a `labels.json` beside the file declares an `intensity` window
    /// (as `../shared/data/btcv` does), or the file is unscaled `uint8`, which cannot hold HU
    /// (air is −1000) and so is taken as the model's window stored as 0…255.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, VolumeError> {
        Self::from_nifti(crate::io::read_volume(path)?)
    }

    /// A scan from a volume already read; refused when a `labels.json` beside it is invalid.
    /// Intensities unlike CT are read with a warning in [`Self::warnings`].
    /// A scan of voxels already in HU, held in memory (a synthetic volume): stored as float32,
    /// its affine taken as the sform; `path` names it in messages.
    pub fn from_hu(volume: Volume<f32>, path: impl AsRef<Path>) -> Result<Self, VolumeError> {
        let info = StorageInfo {
            path: path.as_ref().to_owned(),
            datatype: "float32",
            scl_slope: 1.0,
            scl_inter: 0.0,
            transform: crate::io::nifti::TransformSource::Sform { code: 1 },
            gzipped: false,
            description: String::new(),
            channels: 1,
            warnings: Vec::new(),
        };
        Self::from_nifti(StoredVolume { info, volume })
    }

    pub fn from_nifti(nifti: StoredVolume) -> Result<Self, VolumeError> {
        let sidecar = DatasetSidecar::find_for(&nifti.info.path)?;
        let intensity = detect_intensity(&nifti.info, sidecar.as_ref());
        let mut volume = nifti.volume;
        let stored_range = volume.value_range();
        if intensity != Intensity::Hounsfield {
            for v in volume.data_mut() {
                *v = intensity.to_hu(*v);
            }
        }
        let mut scan = Self {
            volume,
            info: nifti.info,
            intensity,
            stored_range,
        };
        let (lo, hi) = scan.hu_range();
        // Pre-windowed data hold no air below the window floor; only the constant check applies.
        let intensity_warnings = crate::validate::hu_range_warnings(&scan.info.path, lo, hi)
            .into_iter()
            .filter(|w| {
                intensity == Intensity::Hounsfield
                    || w.kind == crate::validate::WarningKind::ConstantVolume
            });
        scan.info.warnings.extend(intensity_warnings);
        Ok(scan)
    }

    /// What was odd about the file: intensities unlike CT, a constant volume, extreme
    /// spacing, gantry tilt.
    pub fn warnings(&self) -> &[crate::validate::InputWarning] {
        &self.info.warnings
    }

    /// The range of HU values.
    pub fn hu_range(&self) -> (f32, f32) {
        (
            self.intensity.to_hu(self.stored_range.0),
            self.intensity.to_hu(self.stored_range.1),
        )
    }

    /// The HU above which a voxel is body (method.md: about −500 HU; pre-windowed scans store air
    /// and fat both at the window floor, so there the body is what lies above the floor).
    pub fn body_threshold_hu(&self) -> f32 {
        match self.intensity {
            Intensity::Hounsfield => -500.0,
            Intensity::PreWindowed { window, .. } => window.lower + 1.0,
        }
    }

    /// Whether the world point (RAS mm) lies inside the body: the scan sampled there
    /// (trilinear) is above [`Self::body_threshold_hu`], the body box's test. Outside the scan
    /// is not body.
    pub fn is_body_at(&self, world: DVec3) -> bool {
        crate::resample::sample_linear(&self.volume, self.volume.world_to_voxel(world))
            .is_some_and(|hu| hu > self.body_threshold_hu())
    }

    /// The scan as the model sees it: HU through `window`, in [0, 1].
    pub fn windowed(&self, window: HuWindow) -> Volume<f32> {
        self.volume.map(|&hu| window.to_unit(hu))
    }
}

fn detect_intensity(info: &StorageInfo, sidecar: Option<&DatasetSidecar>) -> Intensity {
    if let Some(window) = sidecar.and_then(|s| s.hu_window) {
        let max_value = match info.datatype {
            "uint8" => 255.0,
            "uint16" => 65535.0,
            _ => 1.0,
        };
        return Intensity::PreWindowed { window, max_value };
    }
    if info.datatype == "uint8" && info.is_unscaled_integer() {
        return Intensity::PRE_WINDOWED_U8;
    }
    Intensity::Hounsfield
}
