//! `ape locate`'s use case: points clicked (or listed) on one scan, found on other scans, each
//! with its confidence. Scans are NIfTI files or DICOM series; maps come through the cache.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use glam::DVec3;
use serde::Serialize;

use crate::cache::{CacheUse, embed_cached};
use crate::model::ApeModel;
use crate::refine::PatchImage;
use crate::retrieval::{MapIndex, Target};
use crate::scan::Scan;
use crate::transfer::{TransferMode, TransferSettings, Transferred, transfer};
use crate::validate::InputWarning;

/// A point to carry, world RAS mm, with an optional name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedPoint {
    pub name: Option<String>,
    pub world: [f64; 3],
}

/// Why points could not be located.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error(transparent)]
    Volume(#[from] crate::VolumeError),
    #[error("{}: {source}", scan.display())]
    Embed {
        scan: PathBuf,
        #[source]
        source: crate::embed::EmbedError,
    },
    #[error("{source_name}: line {line}: {problem}")]
    Points {
        source_name: String,
        line: usize,
        problem: String,
    },
}

/// Parses `x,y,z` (RAS mm, three finite numbers).
pub fn parse_point(text: &str) -> Result<[f64; 3], String> {
    let values: Vec<&str> = text.split(',').map(str::trim).collect();
    let [x, y, z] = values[..] else {
        return Err(format!("{text:?}: three numbers x,y,z (RAS mm) expected"));
    };
    let number = |v: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && n.abs() <= 1e6)
            .ok_or_else(|| format!("{v:?} is not a coordinate (a finite number of mm within ±1e6)"))
    };
    Ok([number(x)?, number(y)?, number(z)?])
}

/// Points from a text file: one `x,y,z[,name]` per line; blank lines and lines starting with
/// `#` skipped; a header line `x,y,z[,name]` allowed.
pub fn parse_points(text: &str, source_name: &str) -> Result<Vec<NamedPoint>, LocateError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.splitn(4, ',').collect();
        if n == 0
            && fields
                .first()
                .is_some_and(|f| f.trim().eq_ignore_ascii_case("x"))
        {
            continue;
        }
        let error = |problem: String| LocateError::Points {
            source_name: source_name.to_owned(),
            line: n + 1,
            problem,
        };
        if fields.len() < 3 {
            return Err(error(format!("{line:?}: x,y,z[,name] expected")));
        }
        let world = parse_point(&fields[..3].join(",")).map_err(error)?;
        let name = fields
            .get(3)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        out.push(NamedPoint { name, world });
    }
    if out.is_empty() {
        return Err(LocateError::Points {
            source_name: source_name.to_owned(),
            line: 0,
            problem: "no points".to_owned(),
        });
    }
    Ok(out)
}

/// One point on one target.
#[derive(Debug, Clone, Serialize)]
pub struct LocatedPoint {
    pub point: NamedPoint,
    pub target: PathBuf,
    /// `None` when the point lies outside the source scan's map.
    pub found: Option<Transferred>,
}

/// A scan ready to be searched: its map and the index of its body's cells.
struct Searchable {
    map: crate::ape_map::ApeMap,
    index: MapIndex,
    image: Option<PatchImage>,
}

impl Searchable {
    fn target(&self) -> Target<'_> {
        Target {
            map: &self.map,
            index: &self.index,
            image: self.image.as_ref(),
        }
    }
}

fn searchable(
    path: &Path,
    model: &ApeModel,
    device: &Device,
    cache: CacheUse<'_>,
    warnings: &mut Vec<InputWarning>,
) -> Result<Searchable, LocateError> {
    let scan = Scan::read(path)?;
    warnings.extend(scan.warnings().iter().cloned());
    let embedded =
        embed_cached(cache, model, device, path, &scan.volume, &mut |_| {}).map_err(|source| {
            LocateError::Embed {
                scan: path.to_owned(),
                source,
            }
        })?;
    if let Some(w) = embedded.warning {
        warnings.push(InputWarning::new(
            crate::validate::WarningKind::Other,
            path.display().to_string(),
            w,
        ));
    }
    let (map, fault) = crate::fold::unfolded(embedded.map, &scan);
    if let Some(fault) = fault {
        warnings.push(InputWarning::new(
            crate::validate::WarningKind::Other,
            path.display().to_string(),
            format!("its APE map {fault}"),
        ));
    }
    let index = MapIndex::build_in_body(&map, &scan);
    Ok(Searchable {
        map,
        index,
        image: PatchImage::of_scan(&scan).ok(),
    })
}

/// Every point of `from` on every target, by `mode`; the warnings the readers gave.
pub fn locate_points(
    from: &Path,
    points: &[NamedPoint],
    targets: &[PathBuf],
    model: &ApeModel,
    device: &Device,
    cache: CacheUse<'_>,
    mode: TransferMode,
) -> Result<(Vec<LocatedPoint>, Vec<InputWarning>), LocateError> {
    let mut warnings = Vec::new();
    let source = searchable(from, model, device, cache, &mut warnings)?;
    let settings = TransferSettings::default();
    let mut out = Vec::with_capacity(points.len() * targets.len());
    for target_path in targets {
        let target = searchable(target_path, model, device, cache, &mut warnings)?;
        for p in points {
            let world = DVec3::from_array(p.world);
            out.push(LocatedPoint {
                point: p.clone(),
                target: target_path.clone(),
                found: transfer(source.target(), world, target.target(), mode, &settings),
            });
        }
    }
    Ok((out, warnings))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn points_parse_with_negative_numbers_names_and_comments() {
        assert_eq!(
            parse_point("-150,-230.5,420").unwrap(),
            [-150.0, -230.5, 420.0]
        );
        assert!(parse_point("1,2").is_err());
        assert!(parse_point("1,nan,2").is_err());
        let points = parse_points(
            "\u{feff}x,y,z,name\n# a comment\n1,2,3\n\n-4,5,-6, liver top\n",
            "f",
        )
        .unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[1].name.as_deref(), Some("liver top"));
        let e = parse_points("1,2,3\n1,x,3\n", "pts.csv")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("pts.csv: line 2"), "{e}");
        assert!(parse_points("# nothing\n", "f").is_err());
    }
}
