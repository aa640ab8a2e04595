//! An on-disk cache of APE maps keyed by the scan file's content and the model, so that a scan
//! is embedded once.

use std::path::{Path, PathBuf};

use crate::ape_map::ApeMap;
use crate::hash::{file_hash, volume_hash};

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

/// How [`embed_cached`] uses the cache.
#[derive(Debug, Clone, Copy)]
pub enum CacheUse<'a> {
    /// Compute, store nothing (a model that changes, as in training).
    Off,
    /// A cached map when there is one; else compute and store.
    ReadWrite(&'a MapCache),
    /// Compute even when cached, and store the new map.
    Refresh(&'a MapCache),
}

/// A scan's map as [`embed_cached`] found or made it.
#[derive(Debug)]
pub struct Embedded {
    pub map: ApeMap,
    /// Stage times when the map was computed; `None` when it came from the cache.
    pub times: Option<crate::embed::StageTimes>,
    /// Why the map could not be stored (it is still returned; the next run recomputes it).
    pub warning: Option<String>,
}

/// What a scan's map depends on besides the model: a file by its bytes; a DICOM series (a
/// folder, or one series of it) by its voxels in HU and its grid.
pub fn scan_key(source: &Path, scan_hu: &crate::Volume<f32>) -> u128 {
    if source.is_file()
        && let Ok(hash) = file_hash(source)
    {
        return hash;
    }
    volume_hash(scan_hu)
}

/// The one way a scan becomes a map: from the cache when there, else computed (reporting
/// progress 0…1) and stored. `source` is the path the scan was read from (a file, a DICOM
/// folder or series), which keys the cache with the model.
pub fn embed_cached(
    cache: CacheUse<'_>,
    model: &crate::model::ApeModel,
    device: &burn::tensor::Device,
    source: &Path,
    scan_hu: &crate::Volume<f32>,
    progress: &mut dyn FnMut(f32),
) -> Result<Embedded, crate::embed::EmbedError> {
    let store = match cache {
        CacheUse::Off => None,
        CacheUse::ReadWrite(c) | CacheUse::Refresh(c) => Some(c),
    };
    let key = store.map(|_| CacheKey {
        scan: scan_key(source, scan_hu),
        model: model.id,
    });
    if let (CacheUse::ReadWrite(cache), Some(key)) = (cache, key)
        && let Some(map) = cache.get(&key)
    {
        return Ok(Embedded {
            map,
            times: None,
            warning: None,
        });
    }
    let (map, times) = crate::embed::embed_scan(
        model,
        device,
        scan_hu,
        &crate::embed::EmbedOptions::default(),
        progress,
    )?;
    let warning = match (store, key) {
        (Some(cache), Some(key)) => cache
            .put(&key, &map)
            .err()
            .map(|e| format!("could not cache the map in {}: {e}", cache.dir().display())),
        _ => None,
    };
    Ok(Embedded {
        map,
        times: Some(times),
        warning,
    })
}
