//! Model files: burn's record (burnpack) with the network config, input spacing and HU window
//! stored beside the weights and checked on load.
//!
//! Layout: `APEMODEL` · format version (u32 LE) · metadata length (u32 LE) · metadata JSON ·
//! record length (u64 LE) · burnpack bytes.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};

use super::net::{ApeNet, ApeNetConfig};
use crate::intensity::HuWindow;

const MAGIC: &[u8; 8] = b"APEMODEL";
pub const FORMAT_VERSION: u32 = 1;

/// The model compiled into the binary (see `assets/README.md` for what it is).
static BUNDLED: &[u8] = include_bytes!("../../assets/ape-default.apemodel");

/// Everything needed to use the weights correctly, stored beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub net: ApeNetConfig,
    /// Voxel spacing (mm) scans are resampled to before the network sees them.
    pub input_spacing_mm: [f64; 3],
    /// HU window mapped to [0, 1] at the input.
    pub hu_window: HuWindow,
    /// What these weights are: how they were trained, or that they are not.
    pub description: String,
    pub trained: bool,
    /// Scans (file names without extension) kept out of training for evaluation; `ape eval`
    /// reports them separately.
    #[serde(default)]
    pub held_out: Vec<String>,
}

impl ModelMeta {
    /// The input spacing a fresh model is trained and embeds at, mm.
    pub const DEFAULT_INPUT_SPACING_MM: [f64; 3] = [2.0, 2.0, 3.0];

    /// A fresh (untrained) model's metadata: the default network, input spacing and HU window.
    pub fn fresh(description: String) -> Self {
        Self {
            net: ApeNetConfig::new(),
            input_spacing_mm: Self::DEFAULT_INPUT_SPACING_MM,
            hu_window: HuWindow::MODEL,
            description,
            trained: false,
            held_out: Vec::new(),
        }
    }

    pub fn check(&self) -> Result<(), String> {
        self.net.validate()?;
        if !self
            .input_spacing_mm
            .iter()
            .all(|s| s.is_finite() && *s > 0.05 && *s < 50.0)
        {
            return Err(format!(
                "input spacing {:?} mm is out of range",
                self.input_spacing_mm
            ));
        }
        let w = self.hu_window;
        if !(w.lower.is_finite() && w.upper.is_finite() && w.lower < w.upper) {
            return Err(format!("HU window {}…{} is empty", w.lower, w.upper));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{source_name}: {source}")]
    Io {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: not an ape model file (it does not start with \"APEMODEL\")")]
    NotAModelFile { source_name: String },
    #[error("{source_name}: the file ends early ({detail})")]
    Truncated { source_name: String, detail: String },
    #[error(
        "{source_name}: model file format {found} is not supported (this ape reads format {FORMAT_VERSION})"
    )]
    UnsupportedVersion { source_name: String, found: u32 },
    #[error("{source_name}: bad model metadata: {detail}")]
    BadMetadata { source_name: String, detail: String },
    #[error("{source_name}: the weights do not fit the network they claim: {detail}")]
    IncompatibleWeights { source_name: String, detail: String },
}

/// A network with the facts needed to use it.
#[derive(Debug)]
pub struct ApeModel {
    pub net: ApeNet,
    pub meta: ModelMeta,
    /// A hash of the model file's bytes: which weights these are (keys the map cache).
    pub id: u128,
}

impl ApeModel {
    /// A freshly initialised network (the same weights for the same seed and backend).
    pub fn initialised(meta: ModelMeta, seed: u64, device: &Device) -> Self {
        // burn's random initialisation draws from one global generator per device: hold it while
        // seeding and drawing, so that concurrent initialisations cannot interleave.
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = INIT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        device.seed(seed);
        // Parameters are initialised lazily: materialise them while the seeded generator is held.
        let net = meta.net.init(device).materialize();
        drop(guard);
        Self::new(net, meta)
    }

    /// A model of these weights, identified by the hash of its file's bytes.
    pub fn new(net: ApeNet, meta: ModelMeta) -> Self {
        let mut model = Self { net, meta, id: 0 };
        model.id = model.to_bytes().map_or(0, |b| crate::hash::bytes_hash(&b));
        model
    }

    /// The same weights embedding at another input spacing (mm), e.g. to sweep it: a new
    /// identity, so that cached maps of the old spacing are not taken for this one.
    pub fn with_input_spacing(self, spacing_mm: [f64; 3]) -> Result<Self, ModelError> {
        let meta = ModelMeta {
            input_spacing_mm: spacing_mm,
            ..self.meta
        };
        meta.check().map_err(|detail| ModelError::BadMetadata {
            source_name: "--input-spacing".to_owned(),
            detail,
        })?;
        Ok(Self::new(self.net, meta))
    }

    /// The model compiled into the binary.
    pub fn bundled(device: &Device) -> Result<Self, ModelError> {
        Self::from_bytes(
            BUNDLED,
            "bundled model (assets/ape-default.apemodel)",
            device,
        )
    }

    pub fn load(path: &Path, device: &Device) -> Result<Self, ModelError> {
        crate::validate::input_path(path).map_err(|e| ModelError::Io {
            source_name: path.display().to_string(),
            source: match e {
                crate::validate::InputError::NotARegularFile { kind, .. } => {
                    std::io::Error::other(format!("is a {kind}, not a regular file"))
                }
                crate::validate::InputError::NotFound { .. } => {
                    std::io::Error::from(std::io::ErrorKind::NotFound)
                }
                other => std::io::Error::other(other.to_string()),
            },
        })?;
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            source_name: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&bytes, &path.display().to_string(), device)
    }

    pub fn from_bytes(
        bytes: &[u8],
        source_name: &str,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let name = || source_name.to_owned();
        let truncated = |detail: &str| ModelError::Truncated {
            source_name: name(),
            detail: detail.to_owned(),
        };
        let mut cursor = Cursor { bytes, at: 0 };
        if cursor.take(8) != Some(&MAGIC[..]) {
            return Err(ModelError::NotAModelFile {
                source_name: name(),
            });
        }
        let version = cursor
            .u32()
            .ok_or_else(|| truncated("in the format version"))?;
        if version != FORMAT_VERSION {
            return Err(ModelError::UnsupportedVersion {
                source_name: name(),
                found: version,
            });
        }
        let meta_len = cursor
            .u32()
            .ok_or_else(|| truncated("in the metadata length"))? as usize;
        let meta_bytes = cursor
            .take(meta_len)
            .ok_or_else(|| truncated("in the metadata"))?;
        let meta: ModelMeta =
            serde_json::from_slice(meta_bytes).map_err(|e| ModelError::BadMetadata {
                source_name: name(),
                detail: e.to_string(),
            })?;
        meta.check().map_err(|detail| ModelError::BadMetadata {
            source_name: name(),
            detail,
        })?;
        let record_len = cursor
            .u64()
            .ok_or_else(|| truncated("in the weights length"))? as usize;
        let record_bytes = cursor.take(record_len).ok_or_else(|| {
            truncated(&format!(
                "the weights need {record_len} bytes, {} are left",
                bytes.len().saturating_sub(cursor.at)
            ))
        })?;
        let incompatible = |detail: String| ModelError::IncompatibleWeights {
            source_name: name(),
            detail,
        };
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(record_bytes.to_vec()))
            .map_err(|e| incompatible(format!("{e:?}")))?;
        let fresh = {
            let _guard = init_lock();
            meta.net.init(device)
        };
        let net = fresh
            .try_load_record(record)
            .map_err(|e| incompatible(format!("{e:?}")))?;
        Ok(Self {
            net,
            meta,
            id: crate::hash::bytes_hash(bytes),
        })
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let meta = serde_json::to_vec_pretty(&self.meta).map_err(|e| ModelError::BadMetadata {
            source_name: "model being saved".to_owned(),
            detail: e.to_string(),
        })?;
        let record = self.net.clone().into_record().into_bytes().map_err(|e| {
            ModelError::IncompatibleWeights {
                source_name: "model being saved".to_owned(),
                detail: format!("{e:?}"),
            }
        })?;
        let mut out = Vec::with_capacity(8 + 16 + meta.len() + record.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&(record.len() as u64).to_le_bytes());
        out.extend_from_slice(&record);
        Ok(out)
    }

    /// Writes the model file whole or not at all.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let bytes = self.to_bytes()?;
        let io = |source| ModelError::Io {
            source_name: path.display().to_string(),
            source,
        };
        crate::io::atomic::write_atomically(path, &bytes).map_err(io)
    }

    /// Number of learnable parameters.
    pub fn parameters(&self) -> usize {
        self.net.num_params()
    }
}

/// burn's random initialisation draws from one global generator per device. Every network
/// initialisation holds this lock, so that a seeded one is never interleaved with another's draws.
pub(crate) fn init_lock() -> std::sync::MutexGuard<'static, ()> {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    INIT.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
}
