//! Whole-scan inference: a CT in HU to its APE map.
//!
//! 1. Resample the scan onto the model grid: the scan's field of view, axes in the order closest
//!    to RAS (so the network sees every scan the same way up, whatever its voxel order), voxels
//!    of the model's input spacing. The HU window maps intensities to [0, 1].
//! 2. Run the network in tiles of at most `max_tile` voxels per axis. Tiles start on multiples
//!    of the network's size multiple and overlap by its receptive-field radius, and each keeps
//!    only its core, so the tiled map equals a single pass exactly: no seams. Memory is bounded
//!    by one tile, not by the scan.
//! 3. The map stays at 1/4 resolution (64× smaller) with its own affine, sampled trilinearly on
//!    demand.

use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor, TensorData};
use glam::DVec3;
use rayon::prelude::*;

use crate::ape_map::{ApeMap, CHANNELS, Embedding};
use crate::error::GeometryError;
use crate::geometry::Affine;
use crate::model::ApeModel;
use crate::resample::{grid_with_spacing, resample_linear_onto};
use crate::volume::{Volume, closest_ras_grid};

/// HU outside a scan's field of view: air.
const OUTSIDE_HU: f32 = -1024.0;

#[derive(Debug, Clone, Copy)]
pub struct EmbedOptions {
    /// Largest tile edge, in voxels at the model's spacing (a multiple of 16). Scans that fit
    /// run in one pass.
    pub max_tile: usize,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        // 384³ voxels of 2 mm: any abdominal or chest CT in one pass; ~0.2 GB per tile input.
        Self { max_tile: 384 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("cannot build the model grid: {0}")]
    Geometry(#[from] GeometryError),
    #[error("the network's output could not be read back: {0}")]
    Readback(String),
    #[error("the model's weights could not be prepared for CPU inference: {0}")]
    CpuWeights(String),
    #[error(
        "max_tile {max_tile} leaves no tile core: it must exceed twice the overlap {overlap} by at least {multiple}"
    )]
    TileTooSmall {
        max_tile: usize,
        overlap: usize,
        multiple: usize,
    },
}

/// Wall time of each stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub preprocess: Duration,
    pub network: Duration,
    pub tiles: usize,
}

/// The model's input for a scan: windowed intensities on the model grid.
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub volume: Volume<f32>,
}

/// Resamples a scan (HU) onto the model grid and applies the HU window.
pub fn prepare_input(model: &ApeModel, scan_hu: &Volume<f32>) -> Result<ModelInput, GeometryError> {
    let (ras_shape, ras_affine) = closest_ras_grid(scan_hu.shape(), scan_hu.affine())?;
    let spacing = DVec3::from_array(model.meta.input_spacing_mm);
    let (shape, affine) = grid_with_spacing(ras_shape, &ras_affine, spacing)?;
    let mut volume = resample_linear_onto(scan_hu, shape, affine, OUTSIDE_HU)?;
    let window = model.meta.hu_window;
    for v in volume.data_mut() {
        *v = window.to_unit(*v);
    }
    Ok(ModelInput { volume })
}

/// Embeds a scan given in HU.
pub fn embed_scan(
    model: &ApeModel,
    device: &Device,
    scan_hu: &Volume<f32>,
    options: &EmbedOptions,
    progress: &mut dyn FnMut(f32),
) -> Result<(ApeMap, StageTimes), EmbedError> {
    let start = Instant::now();
    let input = prepare_input(model, scan_hu)?;
    let preprocess = start.elapsed();
    let start = Instant::now();
    let (map, tiles) = embed_input(model, device, &input, options, progress)?;
    Ok((
        map,
        StageTimes {
            preprocess,
            network: start.elapsed(),
            tiles,
        },
    ))
}

/// Runs the network over a prepared input, tile by tile; returns the map and the tile count.
pub fn embed_input(
    model: &ApeModel,
    device: &Device,
    input: &ModelInput,
    options: &EmbedOptions,
    progress: &mut dyn FnMut(f32),
) -> Result<(ApeMap, usize), EmbedError> {
    let multiple = model.meta.net.size_multiple();
    let overlap = model.meta.net.receptive_radius().div_ceil(multiple) * multiple;
    let max_tile = options.max_tile / multiple * multiple;
    let shape = input.volume.shape();
    let padded = shape.map(|n| n.div_ceil(multiple) * multiple);
    let cells_shape = shape.map(|n| n.div_ceil(4));
    let padded_cells = padded.map(|n| n / 4);

    // Tiles per axis: (input start, input end, core start, core end), in voxels.
    let mut axis_tiles: Vec<Vec<(usize, usize, usize, usize)>> = Vec::with_capacity(3);
    for &p in &padded {
        if p <= max_tile {
            axis_tiles.push(vec![(0, p, 0, p)]);
            continue;
        }
        if max_tile < 2 * overlap + multiple {
            return Err(EmbedError::TileTooSmall {
                max_tile: options.max_tile,
                overlap,
                multiple,
            });
        }
        let core = max_tile - 2 * overlap;
        let mut tiles = Vec::new();
        let mut a = 0;
        while a < p {
            let end = (a + core).min(p);
            tiles.push((a.saturating_sub(overlap), (end + overlap).min(p), a, end));
            a = end;
        }
        axis_tiles.push(tiles);
    }
    let total = axis_tiles.iter().map(Vec::len).product::<usize>();

    // On burn's CPU backend the network runs on `cpu_net` instead: the same function, ~11× faster.
    let cpu_net = if *device == Device::flex() {
        Some(model.net.cpu_inference().map_err(EmbedError::CpuWeights)?)
    } else {
        None
    };
    let mut cells = vec![[0.0f32; CHANNELS]; padded_cells.iter().product()];
    let mut done = 0;
    for tz in &axis_tiles[2] {
        for ty in &axis_tiles[1] {
            for tx in &axis_tiles[0] {
                let tile = [tx, ty, tz];
                let size = tile.map(|t| t.1 - t.0);
                let block = extract_block(&input.volume, padded, tile.map(|t| t.0), size);
                // Tensor dims are (z, y, x): x, the first voxel axis, is the fastest.
                let dims = [size[2], size[1], size[0]];
                let values = match &cpu_net {
                    Some(net) => net.forward(&block, dims),
                    None => {
                        let tensor = Tensor::<5>::from_data(
                            TensorData::new(block, [1, 1, dims[0], dims[1], dims[2]]),
                            device,
                        );
                        model
                            .net
                            .forward(tensor)
                            .try_into_data()
                            .map_err(|e| EmbedError::Readback(format!("{e:?}")))?
                            .try_into_vec::<f32>()
                            .map_err(|e| EmbedError::Readback(format!("{e:?}")))?
                    }
                };
                let out_cells = size.map(|n| n / 4);
                let plane = out_cells[0] * out_cells[1] * out_cells[2];
                // Copy the core of the tile into the map.
                let core_lo = tile.map(|t| (t.2 - t.0) / 4);
                let core_hi = tile.map(|t| (t.3 - t.0) / 4);
                for k in core_lo[2]..core_hi[2] {
                    for j in core_lo[1]..core_hi[1] {
                        for i in core_lo[0]..core_hi[0] {
                            let src = i + out_cells[0] * (j + out_cells[1] * k);
                            let (gi, gj, gk) =
                                (i + tile[0].0 / 4, j + tile[1].0 / 4, k + tile[2].0 / 4);
                            let dst = gi + padded_cells[0] * (gj + padded_cells[1] * gk);
                            cells[dst] = std::array::from_fn(|c| values[c * plane + src]);
                        }
                    }
                }
                done += 1;
                progress(done as f32 / total as f32);
            }
        }
    }

    // Drop the padding cells and place the map: cell c covers model voxels 4c … 4c+3.
    let mut kept: Vec<Embedding> = Vec::with_capacity(cells_shape.iter().product());
    for k in 0..cells_shape[2] {
        for j in 0..cells_shape[1] {
            let row = padded_cells[0] * (j + padded_cells[1] * k);
            kept.extend_from_slice(&cells[row..row + cells_shape[0]]);
        }
    }
    let affine = map_affine(input.volume.affine())?;
    Ok((ApeMap::new(Volume::new(kept, cells_shape, affine)?), total))
}

/// The affine of the 1/4-resolution map of an input grid: cell c sits at input voxel 4c + 1.5.
pub fn map_affine(input: &Affine) -> Result<Affine, GeometryError> {
    let linear = input.linear() * 4.0;
    Affine::new(linear, input.to_world(DVec3::splat(1.5)))
}

/// The whole input zero-padded to the network's size multiple, as one tensor's data in
/// `[1, 1, z, y, x]` order; returns the data and the padded (x, y, z) size.
pub fn padded_input(model: &ApeModel, input: &ModelInput) -> (Vec<f32>, [usize; 3]) {
    let multiple = model.meta.net.size_multiple();
    let padded = input
        .volume
        .shape()
        .map(|n| n.div_ceil(multiple) * multiple);
    (extract_block(&input.volume, padded, [0; 3], padded), padded)
}

/// The voxels `[start, start + size)` of a volume zero-padded to `padded`.
fn extract_block(
    volume: &Volume<f32>,
    padded: [usize; 3],
    start: [usize; 3],
    size: [usize; 3],
) -> Vec<f32> {
    let shape = volume.shape();
    let data = volume.data();
    let mut out = vec![0.0f32; size.iter().product()];
    debug_assert!((0..3).all(|a| start[a] + size[a] <= padded[a]));
    let x_end = (start[0] + size[0]).min(shape[0]);
    let run = x_end.saturating_sub(start[0]);
    // In parallel over output planes: the copy (tens of megabytes) also first-touches the
    // freshly zeroed pages, which is most of its cost.
    out.par_chunks_mut(size[0] * size[1])
        .enumerate()
        .for_each(|(k, plane)| {
            let gk = start[2] + k;
            if gk >= shape[2] || run == 0 {
                return;
            }
            for (j, row) in plane.chunks_exact_mut(size[0]).enumerate() {
                let gj = start[1] + j;
                if gj >= shape[1] {
                    break;
                }
                let src = start[0] + shape[0] * (gj + shape[1] * gk);
                row[..run].copy_from_slice(&data[src..src + run]);
            }
        });
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::backend;

    /// Tiles stay seamless with a context level at 1/32 and level heads at work: their
    /// overlap (the receptive radius) covers the deeper levels and the heads' upsampling.
    #[test]
    fn tiles_of_a_network_with_context_levels_equal_a_single_pass() {
        let device = backend::cpu().device;
        let bundled = ApeModel::bundled(&device).unwrap();
        let own = bundled.meta.net.clone();
        let net_config = own.clone().with_context_widths(Some(vec![32]));
        let net = bundled
            .net
            .grown(&own, &net_config, &device)
            .unwrap()
            .with_random_heads(&device);
        let model = ApeModel {
            net,
            meta: crate::model::ModelMeta {
                net: net_config,
                ..bundled.meta
            },
            id: 0,
        };
        let overlap = model.meta.net.receptive_radius().div_ceil(32) * 32;
        // Long along x: tiles of 2·overlap + 64 voxels cut it at least three times.
        let shape = [4 * overlap + 200, 64, 48];
        let affine = Affine::from_spacing(DVec3::new(3.0, 3.0, 4.5), DVec3::ZERO).unwrap();
        let centre = DVec3::new(shape[0] as f64 * 1.5, 96.0, 108.0);
        let (volume, _) = crate::phantom::phantom(shape, affine, centre, 0.6).unwrap();
        let input = ModelInput {
            volume: volume.map(|v| ((*v + 125.0) / 400.0).clamp(0.0, 1.0)),
        };
        let options = |max_tile| EmbedOptions { max_tile };
        let (single, tiles) =
            embed_input(&model, &device, &input, &options(8192), &mut |_| {}).unwrap();
        assert_eq!(tiles, 1);
        let (tiled, tiles) = embed_input(
            &model,
            &device,
            &input,
            &options(2 * overlap + 64),
            &mut |_| {},
        )
        .unwrap();
        assert!(tiles >= 3, "only {tiles} tiles");
        let diff = single
            .cells()
            .data()
            .iter()
            .zip(tiled.cells().data())
            .flat_map(|(a, b)| (0..CHANNELS).map(move |c| (a[c] - b[c]).abs()))
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-3, "tiles differ from a single pass by {diff}");
    }
}
