//! An on-disk cache of APE maps keyed by the scan file's content and the model, so that a scan
//! is embedded once.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::ape_map::ApeMap;

#[derive(Debug, Clone)]
pub struct MapCache {
    dir: PathBuf,
}

impl MapCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$APE_CACHE_DIR`, else `$XDG_CACHE_HOME/ape/maps`, else `~/.cache/ape/maps`.
    pub fn default_location() -> Self {
        let dir = std::env::var_os("APE_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("ape/maps"))
            })
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ape/maps")))
            .unwrap_or_else(|| std::env::temp_dir().join("ape-maps"));
        Self::new(dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, key: &CacheKey) -> PathBuf {
        self.dir
            .join(format!("{:032x}-{:032x}.apemap", key.scan, key.model))
    }

    /// The cached map, if there is a readable one.
    pub fn get(&self, key: &CacheKey) -> Option<ApeMap> {
        let bytes = std::fs::read(self.path_of(key)).ok()?;
        ApeMap::from_bytes(&bytes)
    }

    /// Stores a map; a failure only costs a recomputation later, so it is returned, not fatal.
    pub fn put(&self, key: &CacheKey, map: &ApeMap) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        crate::io::atomic::write_atomically(&self.path_of(key), &map.to_bytes())
    }
}

/// What a cached map depends on: the scan file's bytes and the model's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey {
    pub scan: u128,
    pub model: u128,
}

/// A 128-bit hash (XXH3) of a file's content, streamed.
pub fn file_hash(path: &Path) -> std::io::Result<u128> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.digest128())
}

/// A 128-bit hash of a volume: its voxel values, shape and affine.
pub fn volume_hash(volume: &crate::Volume<f32>) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for n in volume.shape() {
        hasher.update(&(n as u64).to_le_bytes());
    }
    for row in volume.affine().to_rows() {
        for v in row {
            hasher.update(&v.to_le_bytes());
        }
    }
    let mut buf = Vec::with_capacity(4 << 16);
    for chunk in volume.data().chunks(1 << 16) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
        hasher.update(&buf);
    }
    hasher.digest128()
}

/// A 128-bit hash of bytes in memory.
pub fn bytes_hash(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

/// The map of a scan file: from the cache when there (`None` times), else computed (reporting
/// progress 0…1) and stored. A cache that cannot be written costs a recomputation later, so it
/// only warns on stderr.
pub fn embed_file_cached(
    cache: Option<&MapCache>,
    model: &crate::model::ApeModel,
    device: &burn::tensor::Device,
    scan_path: &Path,
    scan_hu: &crate::Volume<f32>,
    progress: &mut dyn FnMut(f32),
) -> Result<(ApeMap, Option<crate::embed::StageTimes>), crate::embed::EmbedError> {
    // A file is keyed by its bytes; a DICOM series (a folder, or one series of it) by its voxels
    // in HU and its grid, which is what the map depends on.
    let key = cache
        .map(|_| file_hash(scan_path).unwrap_or_else(|_| volume_hash(scan_hu)))
        .map(|scan| CacheKey {
            scan,
            model: model.id,
        });
    if let (Some(cache), Some(key)) = (cache, key)
        && let Some(map) = cache.get(&key)
    {
        return Ok((map, None));
    }
    let (map, times) = crate::embed::embed_scan(
        model,
        device,
        scan_hu,
        &crate::embed::EmbedOptions::default(),
        progress,
    )?;
    if let (Some(cache), Some(key)) = (cache, key)
        && let Err(e) = cache.put(&key, &map)
    {
        eprintln!(
            "warning: could not cache the map in {}: {e}",
            cache.dir().display()
        );
    }
    Ok((map, Some(times)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_volume_hash_sees_values_and_grid() {
        let affine = crate::Affine::from_spacing(glam::DVec3::ONE, glam::DVec3::ZERO).unwrap();
        let v = crate::Volume::from_fn([4, 3, 2], affine, |i, j, k| (i + j + k) as f32).unwrap();
        let mut w = v.clone();
        w.data_mut()[5] += 1.0;
        let moved = crate::Volume::new(
            v.data().to_vec(),
            [4, 3, 2],
            crate::Affine::from_spacing(glam::DVec3::ONE, glam::DVec3::X).unwrap(),
        )
        .unwrap();
        assert_eq!(volume_hash(&v), volume_hash(&v.clone()));
        assert_ne!(volume_hash(&v), volume_hash(&w));
        assert_ne!(volume_hash(&v), volume_hash(&moved));
    }
}
