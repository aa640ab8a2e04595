//! `ApeMap`: the APE embedding of a scan, a 3-vector per cell of a grid placed in world space.

use glam::DVec3;

use crate::error::GeometryError;
use crate::geometry::Affine;
use crate::resample::{resample_linear_onto, sample_linear};
use crate::volume::Volume;

/// Embedding dimension.
pub const CHANNELS: usize = 3;

pub type Embedding = [f32; CHANNELS];

/// An APE map: usually at 1/4 of the model's input resolution, sampled trilinearly on demand.
#[derive(Debug, Clone, PartialEq)]
pub struct ApeMap {
    cells: Volume<Embedding>,
}

impl ApeMap {
    pub fn new(cells: Volume<Embedding>) -> Self {
        Self { cells }
    }

    pub fn cells(&self) -> &Volume<Embedding> {
        &self.cells
    }

    pub fn into_cells(self) -> Volume<Embedding> {
        self.cells
    }

    pub fn affine(&self) -> &Affine {
        self.cells.affine()
    }

    pub fn shape(&self) -> [usize; 3] {
        self.cells.shape()
    }

    /// The embedding at a world point (trilinear), or `None` outside the map.
    pub fn embedding_at(&self, world: DVec3) -> Option<Embedding> {
        sample_linear(&self.cells, self.cells.world_to_voxel(world))
    }

    /// One embedding channel as a scalar volume on the map's grid.
    pub fn channel(&self, c: usize) -> Volume<f32> {
        let c = c.min(CHANNELS - 1);
        self.cells.map(|e| e[c])
    }

    /// The map resampled onto another grid (e.g. the scan's own, for `--full-res`).
    pub fn resampled_onto(&self, shape: [usize; 3], affine: Affine) -> Result<Self, GeometryError> {
        Ok(Self {
            cells: resample_linear_onto(&self.cells, shape, affine, [f32::NAN; CHANNELS])?,
        })
    }

    /// The mean of this map and `others` (maps of the same scan, e.g. embedded at other input
    /// spacings), on this map's grid; where another map does not reach, this one alone.
    pub fn averaged_with(&self, others: &[&ApeMap]) -> Result<Self, GeometryError> {
        let resampled: Vec<ApeMap> = others
            .iter()
            .map(|m| m.resampled_onto(self.shape(), *self.affine()))
            .collect::<Result<_, _>>()?;
        let mut cells = self.cells.clone();
        for (i, cell) in cells.data_mut().iter_mut().enumerate() {
            let mut sum = *cell;
            let mut n = 1.0;
            for r in &resampled {
                let e = r.cells.data()[i];
                if e.iter().all(|v| v.is_finite()) {
                    for c in 0..CHANNELS {
                        sum[c] += e[c];
                    }
                    n += 1.0;
                }
            }
            *cell = sum.map(|v| v / n);
        }
        Ok(Self { cells })
    }

    /// Writes the map as a 3-channel NIfTI vector image.
    pub fn write_nifti(&self, path: &std::path::Path) -> Result<(), crate::VolumeError> {
        let channels: Vec<Volume<f32>> = (0..CHANNELS).map(|c| self.channel(c)).collect();
        let refs: Vec<&Volume<f32>> = channels.iter().collect();
        crate::io::nifti::write_nifti_vector(path, &refs)
    }

    /// Compact bytes for the on-disk cache: shape, the affine in f64, then the cells.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.cells.len() * 12);
        out.extend_from_slice(b"APEMAP01");
        for n in self.shape() {
            out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        for row in self.affine().to_rows() {
            for v in row {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        for e in self.cells.data() {
            for v in e {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    /// The inverse of [`to_bytes`](Self::to_bytes); `None` for anything malformed.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(b"APEMAP01")?;
        let (shape_bytes, rest) = rest.split_at_checked(24)?;
        let shape: Vec<usize> = shape_bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()) as usize)
            .collect();
        let shape = [shape[0], shape[1], shape[2]];
        let (affine_bytes, rest) = rest.split_at_checked(96)?;
        let v: Vec<f64> = affine_bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect();
        let affine = Affine::from_rows([
            [v[0], v[1], v[2], v[3]],
            [v[4], v[5], v[6], v[7]],
            [v[8], v[9], v[10], v[11]],
        ])
        .ok()?;
        let count = shape[0].checked_mul(shape[1])?.checked_mul(shape[2])?;
        if rest.len() != count.checked_mul(12)? {
            return None;
        }
        let data: Vec<Embedding> = rest
            .chunks_exact(12)
            .map(|c| {
                let f = |i: usize| f32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                [f(0), f(4), f(8)]
            })
            .collect();
        Volume::new(data, shape, affine).ok().map(Self::new)
    }
}
