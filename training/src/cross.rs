//! Cross-scan agreement (issue 18): the distance loss only ever compares voxels of one scan,
//! so nothing ties one patient's embedding to another's. A *teacher* (a fixed copy of the
//! model, `teacher.apemodel` in the run folder) embeds every training scan once; a cross pair
//! then takes its second crop from another scan, around the point the teacher's consensus
//! transfer carries the first crop's centre to (a robust local affine of cycle-consistent
//! matches, `ape::transfer::consensus_fit`), and its positives through the same affine. The
//! equivariance term then asks the two scans to agree at corresponding points, and the distance
//! term treats the second scan's points as if they lay at their first-scan positions. No labels
//! are used, and only the scans being trained on.

use ape::Volume;
use ape::ape_map::ApeMap;
use ape::intensity::HuWindow;
use ape::model::ApeModel;
use ape::retrieval::{MapIndex, Target};
use ape::transfer::{LocalAffine, TransferSettings, consensus_fit};
use burn::tensor::Device;
use glam::DVec3;

use crate::data::TrainScan;

/// The teacher's maps of the training scans, each with its index over body cells.
pub struct Teacher {
    maps: Vec<(ApeMap, MapIndex)>,
    settings: TransferSettings,
}

impl std::fmt::Debug for Teacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Teacher")
            .field("scans", &self.maps.len())
            .finish_non_exhaustive()
    }
}

impl Teacher {
    /// Embeds every scan with `model` (the scans hold windowed intensities; the model windows
    /// them again, which leaves them as they are).
    pub fn embed(
        model: &ApeModel,
        scans: &[TrainScan],
        window: HuWindow,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let mut maps = Vec::with_capacity(scans.len());
        for scan in scans {
            let hu: Volume<f32> = scan
                .volume
                .map(|&unit| window.lower + unit * window.width());
            let (map, _) = ape::embed::embed_scan(
                model,
                device,
                &hu,
                &ape::embed::EmbedOptions::default(),
                &mut |_| {},
            )?;
            let index = MapIndex::build_where(&map, |world| scan.is_body(world));
            maps.push((map, index));
        }
        Ok(Self::from_maps(maps))
    }

    /// A teacher of given maps (tests: maps of known geometry).
    pub fn from_maps(maps: Vec<(ApeMap, MapIndex)>) -> Self {
        Self {
            maps,
            settings: TransferSettings::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.maps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// The local affine that carries the neighbourhood of `centre` on scan `from` to scan `to`
    /// (`None` when too few matches are cycle-consistent there).
    pub fn carry(&self, from: usize, centre: DVec3, to: usize) -> Option<LocalAffine> {
        let target = |i: usize| {
            self.maps.get(i).map(|(map, index)| Target {
                map,
                index,
                image: None,
            })
        };
        let (a, b) = (target(from)?, target(to)?);
        consensus_fit(a, centre, b, &self.settings).0
    }
}
