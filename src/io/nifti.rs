//! NIfTI-1 reading and writing (`.nii`, `.nii.gz`), with every header field checked before a
//! byte of voxel memory is allocated.
//!
//! The `nifti` crate parses and writes headers; the voxel bytes are read here, so that a lying
//! header is refused before allocation and a truncated gzip stream gets its own error.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use glam::{DMat3, DVec3};
use nifti::{Endianness, NiftiHeader, NiftiType};
use serde::Serialize;

use crate::error::VolumeError;
use crate::geometry::Affine;
use crate::io::{StorageInfo, StoredVolume};
use crate::volume::Volume;

/// NIfTI-1 headers are 348 bytes; the voxels of a `.nii` start at 352 or later.
const HEADER_LEN: usize = 348;

/// Limits on what a header may ask for.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Refuse volumes with more voxels than this (before allocating). The default, 2^30 voxels,
    /// is 4 GiB as f32: a 1024×1024×1024 scan, far beyond any CT.
    pub max_voxels: u64,
    /// Accept 5-D vector images (one time point, several channels), as APE maps are written.
    pub allow_channels: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            max_voxels: 1 << 30,
            allow_channels: false,
        }
    }
}

/// Where the voxel→world transform came from, in NIfTI's order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TransformSource {
    Sform {
        code: i16,
    },
    Qform {
        code: i16,
    },
    /// Neither form is set: voxel sizes from pixdim, axes assumed along +x, +y, +z.
    Pixdim,
    /// A DICOM series: ImagePositionPatient, ImageOrientationPatient, PixelSpacing and the
    /// slice positions (LPS, turned into RAS).
    DicomPatient,
}

impl std::fmt::Display for TransformSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransformSource::Sform { code } => write!(f, "sform (code {code})"),
            TransformSource::Qform { code } => write!(f, "qform (code {code})"),
            TransformSource::Pixdim => write!(f, "pixdim only (no orientation in the file)"),
            TransformSource::DicomPatient => {
                write!(f, "DICOM patient position and orientation (LPS → RAS)")
            }
        }
    }
}

/// Reads any 3-D scalar NIfTI-1 volume as f32 (after scl_slope and scl_inter).
pub fn read_nifti(path: impl AsRef<Path>) -> Result<StoredVolume, VolumeError> {
    read_nifti_with(path.as_ref(), &ReadOptions::default(), |v| Some(v as f32))
        .map(|(info, volume)| StoredVolume { info, volume })
}

/// Reads a vector image written by [`write_nifti_vector`] (or any 5-D NIfTI with one time point):
/// one volume per channel.
pub fn read_nifti_vector(path: impl AsRef<Path>) -> Result<Vec<Volume<f32>>, VolumeError> {
    let path = path.as_ref();
    let options = ReadOptions {
        allow_channels: true,
        ..ReadOptions::default()
    };
    let (info, stacked) = read_nifti_with(path, &options, |v| Some(v as f32))?;
    // Channels are stacked along k by `read_nifti_with`; split them.
    let [nx, ny, nk] = stacked.shape();
    let channels = info.channels;
    let header_nz = nk / channels.max(1);
    let affine = *stacked.affine();
    let data = stacked.into_data();
    let plane = nx * ny * header_nz;
    (0..channels)
        .map(|c| {
            Volume::new(
                data[c * plane..(c + 1) * plane].to_vec(),
                [nx, ny, header_nz],
                affine,
            )
            .map_err(|e| VolumeError::BadDimensions {
                path: path.to_owned(),
                dims: vec![nx as i64, ny as i64, header_nz as i64, channels as i64],
                detail: e.to_string(),
            })
        })
        .collect()
}

/// Reads a label map: integer voxels from 0 to 65535.
pub fn read_label_volume(path: impl AsRef<Path>) -> Result<Volume<u16>, VolumeError> {
    read_label_volume_with_info(path.as_ref()).map(|(_, volume)| volume)
}

/// Reads a label map with what its header says; labels stored as floats (whole numbers all)
/// are read with a warning in the info.
pub fn read_label_volume_with_info(path: &Path) -> Result<(StorageInfo, Volume<u16>), VolumeError> {
    let (mut info, volume) = read_nifti_with(path, &ReadOptions::default(), |v| {
        (v.fract() == 0.0 && (0.0..=65535.0).contains(&v)).then_some(v as u16)
    })
    .map_err(|e| match e {
        VolumeError::NonFinite { path, count, first } => VolumeError::NotALabelMap {
            path,
            detail: format!(
                "{count} voxels are not whole numbers from 0 to 65535 (the first at voxel {first:?})"
            ),
        },
        other => other,
    })?;
    let warning = float_label_warning(&info);
    info.warnings.extend(warning);
    Ok((info, volume))
}

/// The warning for a label map stored as floating point or with scaling: its values were all
/// whole numbers, but a resampled or interpolated mask stored so is often not what it seems.
pub(crate) fn float_label_warning(info: &StorageInfo) -> Option<crate::validate::InputWarning> {
    (!info.is_unscaled_integer()).then(|| {
        crate::validate::InputWarning::new(
            crate::validate::WarningKind::FloatLabels,
            info.path.display().to_string(),
            format!(
                "a label map stored as {}{}: read as labels because every value is a whole number; \
                 labels belong in an integer type",
                info.datatype,
                if has_scaling(info.scl_slope, info.scl_inter) {
                    " with scaling"
                } else {
                    ""
                }
            ),
        )
    })
}

/// Reads a 3-D NIfTI-1 volume, converting each (rescaled) value with `convert`; a value it
/// refuses — and any NaN or infinity — is reported as a `NonFinite` error.
pub fn read_nifti_with<T: Copy + Send + Sync>(
    path: &Path,
    options: &ReadOptions,
    convert: impl Fn(f64) -> Option<T> + Sync,
) -> Result<(StorageInfo, Volume<T>), VolumeError> {
    // A FIFO would block the open forever, a device read without end.
    crate::io::check_input(path)?;
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => VolumeError::NotFound {
            path: path.to_owned(),
        },
        _ => VolumeError::Io {
            path: path.to_owned(),
            source,
        },
    })?;
    let io_err = |source| VolumeError::Io {
        path: path.to_owned(),
        source,
    };
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let gzipped = starts_with_gzip_magic(&mut reader).map_err(io_err)?;
    let isize_hint = if gzipped { gzip_isize(path) } else { None };
    let mut stream: Box<dyn Read> = if gzipped {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };

    let mut header_bytes = [0u8; HEADER_LEN];
    let got = read_fully(&mut stream, &mut header_bytes, path, gzipped)?;
    if got < HEADER_LEN {
        return Err(VolumeError::Truncated {
            path: path.to_owned(),
            what: "header",
            needed: HEADER_LEN as u64,
            found: got as u64,
        });
    }
    let header = parse_header(&header_bytes, path)?;
    let layout = check_header(&header, path, options)?;
    let affine = header_affine(&header, path)?;
    let mut warnings = Vec::new();
    warnings.extend(check_geometry(&header, &affine, layout.shape, path)?);

    // Skip extensions up to the voxels.
    let skip = layout.vox_offset - HEADER_LEN as u64;
    let skipped = std::io::copy(&mut (&mut stream).take(skip), &mut std::io::sink())
        .map_err(|e| stream_error(e, path, gzipped))?;
    if skipped < skip {
        return Err(VolumeError::Truncated {
            path: path.to_owned(),
            what: "header extensions",
            needed: layout.vox_offset,
            found: HEADER_LEN as u64 + skipped,
        });
    }

    // Refuse a header that claims more than the file can hold before allocating for it.
    let needed = layout.data_bytes;
    if !gzipped && file_len < layout.vox_offset + needed {
        return Err(VolumeError::Truncated {
            path: path.to_owned(),
            what: "voxel data",
            needed: layout.vox_offset + needed,
            found: file_len,
        });
    }
    // Deflate expands at most 1032-fold: a gzip file too small to hold what its header claims
    // is truncated, whatever the trailer says (57 bytes claiming 8 GiB, found by review).
    const DEFLATE_MAX_RATIO: u64 = 1032;
    if gzipped && file_len.saturating_mul(DEFLATE_MAX_RATIO) < layout.vox_offset + needed {
        return Err(VolumeError::Truncated {
            path: path.to_owned(),
            what: "voxel data (the compressed file cannot hold them)",
            needed: layout.vox_offset + needed,
            found: file_len.saturating_mul(DEFLATE_MAX_RATIO),
        });
    }
    // A gzip trailer records the stream's length modulo 2^32; trust it only to size the buffer,
    // and never reserve more than 64 MiB on its word alone: the buffer grows as bytes arrive.
    let capacity = match isize_hint {
        Some(total) if total >= layout.vox_offset + needed && needed < 1 << 32 => needed,
        Some(total) => total
            .saturating_sub(layout.vox_offset)
            .clamp(1 << 20, 1 << 26)
            .min(needed),
        None => needed,
    };
    // The raw bytes and the decoded voxels live together for a moment: refuse what cannot fit
    // now (physical memory, the cgroup, an address-space limit) before allocating any of it.
    let decoded_bytes = layout
        .voxels
        .saturating_mul(std::mem::size_of::<T>() as u64);
    crate::validate::memory_for(path, needed.saturating_add(decoded_bytes))?;
    let out_of_memory = || VolumeError::OutOfMemory {
        path: path.to_owned(),
        bytes: needed.saturating_add(decoded_bytes),
    };
    let mut raw = Vec::new();
    raw.try_reserve_exact(capacity as usize)
        .map_err(|_| out_of_memory())?;
    (&mut stream)
        .take(needed)
        .read_to_end(&mut raw)
        .map_err(|e| stream_error(e, path, gzipped))?;
    if (raw.len() as u64) < needed {
        return Err(VolumeError::Truncated {
            path: path.to_owned(),
            what: "voxel data",
            needed: layout.vox_offset + needed,
            found: layout.vox_offset + raw.len() as u64,
        });
    }
    if gzipped {
        // Read to the end of the stream so that the gzip checksum is verified.
        std::io::copy(&mut stream, &mut std::io::sink())
            .map_err(|e| stream_error(e, path, gzipped))?;
    }

    let (slope, inter) = scaling(header.scl_slope, header.scl_inter);
    let data = decode_voxels(&raw, layout.datatype, header.endianness, |v| {
        let value = v * slope + inter;
        if value.is_finite() {
            convert(value)
        } else {
            None
        }
    });
    drop(raw);
    let data = data.map_err(|failure| match failure {
        DecodeFailure::OutOfMemory => out_of_memory(),
        DecodeFailure::Refused { first, count } => {
            let shape = layout.shape;
            VolumeError::NonFinite {
                path: path.to_owned(),
                count,
                first: [
                    first % shape[0],
                    first / shape[0] % shape[1],
                    first / (shape[0] * shape[1]),
                ],
            }
        }
    })?;
    let shape = [
        layout.shape[0],
        layout.shape[1],
        layout.shape[2] * layout.channels,
    ];
    let volume = Volume::new(data, shape, affine).map_err(|e| VolumeError::BadDimensions {
        path: path.to_owned(),
        dims: layout.shape.iter().map(|&n| n as i64).collect(),
        detail: e.to_string(),
    })?;
    let info = StorageInfo {
        path: path.to_owned(),
        datatype: datatype_name(layout.datatype),
        scl_slope: header.scl_slope,
        scl_inter: header.scl_inter,
        transform: transform_source(&header),
        gzipped,
        channels: layout.channels,
        warnings,
        description: String::from_utf8_lossy(&header.descrip)
            .trim_end_matches('\0')
            .trim()
            .to_owned(),
    };
    Ok((info, volume))
}

/// The facts about the voxel block that a checked header yields.
struct Layout {
    shape: [usize; 3],
    channels: usize,
    voxels: u64,
    datatype: NiftiType,
    vox_offset: u64,
    data_bytes: u64,
}

fn parse_header(bytes: &[u8; HEADER_LEN], path: &Path) -> Result<NiftiHeader, VolumeError> {
    let bad_magic = |detail: String| VolumeError::BadMagic {
        path: path.to_owned(),
        detail,
    };
    let sizeof_le = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let sizeof_be = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if sizeof_le == 540 || sizeof_be == 540 {
        return Err(bad_magic(
            "NIfTI-2 headers are not supported; save the volume as NIfTI-1".to_owned(),
        ));
    }
    if sizeof_le != 348 && sizeof_be != 348 {
        return Err(bad_magic(format!(
            "header size field is {sizeof_le}, not 348"
        )));
    }
    let magic = &bytes[344..348];
    match magic {
        b"n+1\0" => {}
        b"ni1\0" => {
            return Err(bad_magic(
                "a .hdr/.img pair's header; save the volume as a single .nii or .nii.gz".to_owned(),
            ));
        }
        other => {
            return Err(bad_magic(format!(
                "magic {:?} is not \"n+1\"",
                String::from_utf8_lossy(other)
            )));
        }
    }
    NiftiHeader::from_reader(&bytes[..]).map_err(|e| bad_magic(format!("unreadable header: {e}")))
}

fn check_header(
    header: &NiftiHeader,
    path: &Path,
    options: &ReadOptions,
) -> Result<Layout, VolumeError> {
    let bad_field = |field: &'static str, detail: String| VolumeError::BadHeader {
        path: path.to_owned(),
        field,
        detail,
    };
    // The crate reads dims as u16; on disk they are int16, and negative ones are errors.
    let dims: Vec<i64> = header.dim.iter().map(|&d| d as i16 as i64).collect();
    let ndim = dims[0];
    if !(1..=7).contains(&ndim) {
        return Err(VolumeError::BadDimensions {
            path: path.to_owned(),
            dims,
            detail: format!("dim[0] = {ndim} must be 1 to 7"),
        });
    }
    let used = &dims[1..=ndim as usize];
    if let Some(bad) = used.iter().find(|&&d| d <= 0) {
        return Err(VolumeError::BadDimensions {
            path: path.to_owned(),
            dims: used.to_vec(),
            detail: format!("a dimension of {bad}: every dimension must be at least 1"),
        });
    }
    if ndim < 3 {
        return Err(VolumeError::NotThreeD {
            path: path.to_owned(),
            detail: format!("a {ndim}-D image of {used:?} voxels"),
        });
    }
    let vector = options.allow_channels && ndim == 5 && used[3] == 1;
    let channels = if vector { used[4] as usize } else { 1 };
    if !vector && used[3..].iter().any(|&d| d > 1) {
        return Err(VolumeError::NotThreeD {
            path: path.to_owned(),
            detail: format!(
                "{} volumes ({ndim}-D data of {used:?} voxels)",
                used[3..].iter().product::<i64>()
            ),
        });
    }
    let shape = [used[0] as usize, used[1] as usize, used[2] as usize];
    if shape.contains(&1) {
        return Err(VolumeError::NotThreeD {
            path: path.to_owned(),
            detail: format!(
                "a single slice ({}×{}×{} voxels)",
                shape[0], shape[1], shape[2]
            ),
        });
    }
    let voxels = shape.iter().map(|&n| n as u64).product::<u64>() * channels as u64;

    let datatype = header
        .data_type()
        .ok()
        .filter(|t| datatype_size(*t).is_some())
        .ok_or_else(|| VolumeError::UnsupportedDatatype {
            path: path.to_owned(),
            code: header.datatype,
            name: header
                .data_type()
                .map(|t| format!("{t:?}"))
                .unwrap_or_else(|_| "unknown".to_owned()),
        })?;
    let bytes_per_voxel = datatype_size(datatype).unwrap_or(1);
    let data_bytes = voxels.saturating_mul(bytes_per_voxel);
    if voxels > options.max_voxels {
        return Err(VolumeError::TooLarge {
            path: path.to_owned(),
            voxels,
            bytes: data_bytes,
            limit: options.max_voxels,
        });
    }

    let vox_offset = header.vox_offset;
    if !vox_offset.is_finite() || vox_offset < HEADER_LEN as f32 || vox_offset > (1u64 << 30) as f32
    {
        return Err(bad_field(
            "vox_offset",
            format!("{vox_offset} (must be 352 or more for a .nii file)"),
        ));
    }
    if vox_offset.fract() != 0.0 {
        return Err(bad_field(
            "vox_offset",
            format!("{vox_offset} is not a whole number of bytes"),
        ));
    }
    // A slope of 0 or not a number means "no scaling" (NIfTI-1; nibabel and nifti_io read a
    // NaN slope so); a real slope must come with a real intercept, and factors no scanner
    // writes would turn every voxel into nonsense.
    let (slope, inter) = (header.scl_slope, header.scl_inter);
    if slope.is_finite() && slope != 0.0 {
        if !(1e-6..=1e6).contains(&slope.abs()) {
            return Err(bad_field(
                "scl_slope",
                format!("{slope} is not a plausible scaling factor (1e-6 … 1e6 in magnitude)"),
            ));
        }
        if !inter.is_finite() || inter.abs() > 1e6 {
            return Err(bad_field(
                "scl_inter",
                format!("{inter} must be a finite offset within ±1e6 (scl_slope is {slope})"),
            ));
        }
    }
    Ok(Layout {
        shape,
        channels,
        voxels,
        datatype,
        vox_offset: vox_offset as u64,
        data_bytes,
    })
}

fn transform_source(header: &NiftiHeader) -> TransformSource {
    if header.sform_code > 0 {
        TransformSource::Sform {
            code: header.sform_code,
        }
    } else if header.qform_code > 0 {
        TransformSource::Qform {
            code: header.qform_code,
        }
    } else {
        TransformSource::Pixdim
    }
}

/// The voxel→world affine: sform when its code is set, else qform, else pixdim (NIfTI-1 §
/// "methods 3, 2, 1").
fn header_affine(header: &NiftiHeader, path: &Path) -> Result<Affine, VolumeError> {
    let source = transform_source(header);
    let singular =
        |name: &'static str, e: crate::error::GeometryError| VolumeError::SingularAffine {
            path: path.to_owned(),
            source_name: name,
            detail: e.to_string(),
        };
    match source {
        TransformSource::Sform { .. } => {
            let row = |r: [f32; 4]| r.map(f64::from);
            Affine::from_rows([row(header.srow_x), row(header.srow_y), row(header.srow_z)])
                .map_err(|e| singular("sform", e))
        }
        TransformSource::Qform { .. } => {
            let (b, c, d) = (
                header.quatern_b as f64,
                header.quatern_c as f64,
                header.quatern_d as f64,
            );
            let rotation = quaternion_rotation(b, c, d);
            // NIfTI says pixdim must be positive; writers that store negatives mean their size.
            let spacing = DVec3::new(
                header.pixdim[1].abs() as f64,
                header.pixdim[2].abs() as f64,
                header.pixdim[3].abs() as f64,
            );
            let qfac = if header.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
            let linear = rotation * DMat3::from_diagonal(spacing * DVec3::new(1.0, 1.0, qfac));
            let origin = DVec3::new(
                header.quatern_x as f64,
                header.quatern_y as f64,
                header.quatern_z as f64,
            );
            Affine::new(linear, origin).map_err(|e| singular("qform", e))
        }
        // `transform_source` never says DICOM for a NIfTI header: pixdim is what is left.
        TransformSource::Pixdim | TransformSource::DicomPatient => {
            let spacing = DVec3::new(
                header.pixdim[1].abs() as f64,
                header.pixdim[2].abs() as f64,
                header.pixdim[3].abs() as f64,
            );
            Affine::from_spacing(spacing, DVec3::ZERO).map_err(|e| singular("pixdim", e))
        }
    }
}

/// Refuses a grid whose voxel sizes or position no scanner makes (a pixdim of 10³⁰ would give
/// a world extent that breaks every computation after), naming the header field; warns on
/// sizes that are possible but unusual for CT.
fn check_geometry(
    header: &NiftiHeader,
    affine: &Affine,
    shape: [usize; 3],
    path: &Path,
) -> Result<Option<crate::validate::InputWarning>, VolumeError> {
    // Where the voxel sizes and the grid's position come from.
    let (field, offset_field) = match transform_source(header) {
        TransformSource::Sform { .. } => (
            "srow_x/srow_y/srow_z (sform)",
            "srow_x/srow_y/srow_z (sform)",
        ),
        TransformSource::Qform { .. } => ("pixdim (qform)", "qoffset_x/y/z"),
        _ => ("pixdim", "qoffset_x/y/z"),
    };
    grid_geometry(affine, shape, path, field, offset_field)
}

/// The checks of [`check_geometry`] on an affine and shape; `field` and `offset_field` name
/// where the sizes and the position come from.
fn grid_geometry(
    affine: &Affine,
    shape: [usize; 3],
    path: &Path,
    field: &'static str,
    offset_field: &'static str,
) -> Result<Option<crate::validate::InputWarning>, VolumeError> {
    let s = affine.spacing();
    let warning = crate::validate::file_spacing(path, field, [s.x, s.y, s.z])?;
    // Every corner of the grid within 100 m of the scanner's origin.
    let far = crate::geometry::WorldBox::new(
        DVec3::ZERO,
        DVec3::new(
            shape[0] as f64 - 1.0,
            shape[1] as f64 - 1.0,
            shape[2] as f64 - 1.0,
        ),
    )
    .corners()
    .into_iter()
    .map(|c| affine.to_world(c))
    .find(|w| !w.is_finite() || w.abs().max_element() > 1e5);
    if let Some(w) = far {
        return Err(VolumeError::BadHeader {
            path: path.to_owned(),
            field: offset_field,
            detail: format!(
                "puts a corner of the grid at ({:.3e}, {:.3e}, {:.3e}) mm, beyond 100 m of the \
                 origin",
                w.x, w.y, w.z
            ),
        });
    }
    Ok(warning)
}

/// The rotation of a NIfTI quaternion (b, c, d), with a = sqrt(1 − b² − c² − d²).
fn quaternion_rotation(b: f64, c: f64, d: f64) -> DMat3 {
    let norm2 = b * b + c * c + d * d;
    let (a, b, c, d) = if norm2 > 1.0 {
        // A 180° rotation stored slightly off the unit sphere: renormalise, as nifti_io does.
        let n = norm2.sqrt();
        (0.0, b / n, c / n, d / n)
    } else {
        ((1.0 - norm2).sqrt(), b, c, d)
    };
    DMat3::from_cols(
        DVec3::new(
            a * a + b * b - c * c - d * d,
            2.0 * (b * c + a * d),
            2.0 * (b * d - a * c),
        ),
        DVec3::new(
            2.0 * (b * c - a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d + a * b),
        ),
        DVec3::new(
            2.0 * (b * d + a * c),
            2.0 * (c * d - a * b),
            a * a + d * d - c * c - b * b,
        ),
    )
}

pub(crate) fn has_scaling(slope: f32, inter: f32) -> bool {
    !(slope == 0.0 || !slope.is_finite() || (slope == 1.0 && inter == 0.0))
}

/// NIfTI: a slope of 0 (or, as nibabel reads it, not a number) means "no scaling".
fn scaling(slope: f32, inter: f32) -> (f64, f64) {
    if slope == 0.0 || !slope.is_finite() {
        (1.0, 0.0)
    } else {
        (slope as f64, inter as f64)
    }
}

fn datatype_size(t: NiftiType) -> Option<u64> {
    Some(match t {
        NiftiType::Uint8 | NiftiType::Int8 => 1,
        NiftiType::Int16 | NiftiType::Uint16 => 2,
        NiftiType::Int32 | NiftiType::Uint32 | NiftiType::Float32 => 4,
        NiftiType::Int64 | NiftiType::Uint64 | NiftiType::Float64 => 8,
        _ => return None,
    })
}

fn datatype_name(t: NiftiType) -> &'static str {
    match t {
        NiftiType::Uint8 => "uint8",
        NiftiType::Int8 => "int8",
        NiftiType::Int16 => "int16",
        NiftiType::Uint16 => "uint16",
        NiftiType::Int32 => "int32",
        NiftiType::Uint32 => "uint32",
        NiftiType::Int64 => "int64",
        NiftiType::Uint64 => "uint64",
        NiftiType::Float32 => "float32",
        NiftiType::Float64 => "float64",
        _ => "unsupported",
    }
}

/// Why voxel bytes did not decode.
enum DecodeFailure {
    /// `convert` refused `count` voxels, the first at index `first`.
    Refused { first: usize, count: usize },
    /// The decoded voxels did not fit in memory.
    OutOfMemory,
}

/// Decodes raw voxel bytes.
fn decode_voxels<T: Copy + Send + Sync>(
    raw: &[u8],
    datatype: NiftiType,
    endianness: Endianness,
    convert: impl Fn(f64) -> Option<T> + Sync,
) -> Result<Vec<T>, DecodeFailure> {
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    let big = matches!(endianness, Endianness::Big);
    macro_rules! decode {
        ($ty:ty, $n:expr) => {{
            let value_at = |chunk: &[u8]| {
                let mut bytes = [0u8; $n];
                bytes.copy_from_slice(chunk);
                let v = if big {
                    <$ty>::from_be_bytes(bytes)
                } else {
                    <$ty>::from_le_bytes(bytes)
                };
                convert(v as f64)
            };
            let mut out = Vec::new();
            // Fails as an error, not an abort, under an address-space limit.
            out.try_reserve_exact(raw.len() / $n)
                .map_err(|_| DecodeFailure::OutOfMemory)?;
            // In parallel into the reserved buffer, a placeholder where `convert` refuses; the
            // rare refusal is then located one voxel at a time.
            if let Some(placeholder) = convert(0.0) {
                let refused = AtomicBool::new(false);
                out.par_extend(raw.par_chunks_exact($n).map(|chunk| {
                    value_at(chunk).unwrap_or_else(|| {
                        refused.store(true, Ordering::Relaxed);
                        placeholder
                    })
                }));
                if !refused.into_inner() {
                    return Ok(out);
                }
                out.clear();
            }
            let mut first_bad: Option<usize> = None;
            let mut bad = 0usize;
            for (index, chunk) in raw.chunks_exact($n).enumerate() {
                match value_at(chunk) {
                    Some(value) if bad == 0 => out.push(value),
                    Some(_) => {}
                    None => {
                        bad += 1;
                        first_bad.get_or_insert(index);
                    }
                }
            }
            match first_bad {
                Some(first) => Err(DecodeFailure::Refused { first, count: bad }),
                None => Ok(out),
            }
        }};
    }
    match datatype {
        NiftiType::Uint8 => decode!(u8, 1),
        NiftiType::Int8 => decode!(i8, 1),
        NiftiType::Int16 => decode!(i16, 2),
        NiftiType::Uint16 => decode!(u16, 2),
        NiftiType::Int32 => decode!(i32, 4),
        NiftiType::Uint32 => decode!(u32, 4),
        NiftiType::Int64 => decode!(i64, 8),
        NiftiType::Uint64 => decode!(u64, 8),
        NiftiType::Float32 => decode!(f32, 4),
        NiftiType::Float64 => decode!(f64, 8),
        // Refused by `check_header`.
        _ => Err(DecodeFailure::Refused {
            first: 0,
            count: raw.len(),
        }),
    }
}

fn starts_with_gzip_magic(reader: &mut BufReader<File>) -> std::io::Result<bool> {
    use std::io::BufRead;
    let buf = reader.fill_buf()?;
    Ok(buf.len() >= 2 && buf[0] == 0x1f && buf[1] == 0x8b)
}

/// The uncompressed length (mod 2^32) that a gzip file's trailer records.
fn gzip_isize(path: &Path) -> Option<u64> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path).ok()?;
    file.seek(SeekFrom::End(-4)).ok()?;
    let mut tail = [0u8; 4];
    file.read_exact(&mut tail).ok()?;
    Some(u32::from_le_bytes(tail) as u64)
}

/// Fills `buf` as far as the stream goes; returns the count read.
fn read_fully(
    stream: &mut dyn Read,
    buf: &mut [u8],
    path: &Path,
    gzipped: bool,
) -> Result<usize, VolumeError> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error(e, path, gzipped)),
        }
    }
    Ok(filled)
}

fn stream_error(e: std::io::Error, path: &Path, gzipped: bool) -> VolumeError {
    if gzipped
        && matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::InvalidInput
        )
    {
        VolumeError::CorruptGzip {
            path: path.to_owned(),
            detail: e.to_string(),
        }
    } else {
        VolumeError::Io {
            path: path.to_owned(),
            source: e,
        }
    }
}

/// Voxel types ape writes.
pub trait NiftiElement: nifti::DataElement + bytemuck::Pod {}
impl NiftiElement for u8 {}
impl NiftiElement for i16 {}
impl NiftiElement for u16 {}
impl NiftiElement for f32 {}

/// Writes a volume as NIfTI-1 (`.nii`, or gzip-compressed for `.nii.gz`) with its affine in both
/// sform and qform, so that 3D Slicer, ITK-SNAP and nibabel place it where it belongs.
///
/// The file appears whole or not at all: it is written beside the target and renamed into place.
pub fn write_nifti<T: NiftiElement>(
    path: impl AsRef<Path>,
    volume: &Volume<T>,
) -> Result<(), VolumeError> {
    let path = path.as_ref();
    let [nx, ny, nz] = volume.shape();
    writable_geometry(path, volume.affine(), volume.shape())?;
    // The voxels are already in NIfTI's order: view them as a Fortran-ordered [i, j, k] array.
    use ndarray::ShapeBuilder;
    let view = ndarray::ArrayView3::from_shape((nx, ny, nz).f(), volume.data()).map_err(|e| {
        VolumeError::Write {
            path: path.to_owned(),
            detail: e.to_string(),
        }
    })?;
    write_array(path, &view, volume.affine(), None)
}

/// Writes a multi-channel volume (channel c of voxel (i, j, k) at `channels[c]`) as a 5-D NIfTI
/// vector image (intent "vector"), the layout 3D Slicer and nibabel read as one vector per voxel.
pub fn write_nifti_vector(
    path: impl AsRef<Path>,
    channels: &[&Volume<f32>],
) -> Result<(), VolumeError> {
    let path = path.as_ref();
    let write_err = |detail: String| VolumeError::Write {
        path: path.to_owned(),
        detail,
    };
    let first = channels
        .first()
        .ok_or_else(|| write_err("no channels to write".to_owned()))?;
    if channels
        .iter()
        .any(|c| c.shape() != first.shape() || c.affine() != first.affine())
    {
        return Err(write_err("channels differ in shape or affine".to_owned()));
    }
    let [nx, ny, nz] = first.shape();
    writable_geometry(path, first.affine(), first.shape())?;
    let mut data = Vec::with_capacity(first.len() * channels.len());
    for c in channels {
        data.extend_from_slice(c.data());
    }
    use ndarray::ShapeBuilder;
    let view = ndarray::ArrayView5::from_shape((nx, ny, nz, 1, channels.len()).f(), &data)
        .map_err(|e| write_err(e.to_string()))?;
    write_array(path, &view, first.affine(), Some(nifti::Intent::Vector))
}

/// Refuses to write a grid the reader would refuse, so that every file ape writes reads back.
fn writable_geometry(path: &Path, affine: &Affine, shape: [usize; 3]) -> Result<(), VolumeError> {
    grid_geometry(affine, shape, path, "the affine", "the affine's origin")
        .map(|_| ())
        .map_err(|e| VolumeError::Write {
            path: path.to_owned(),
            detail: format!("{e} (a file the reader would refuse)"),
        })
}

fn write_array<T: NiftiElement, D: ndarray::Dimension + ndarray::RemoveAxis>(
    path: &Path,
    view: &ndarray::ArrayView<'_, T, D>,
    affine: &Affine,
    intent: Option<nifti::Intent>,
) -> Result<(), VolumeError> {
    let write_err = |detail: String| VolumeError::Write {
        path: path.to_owned(),
        detail,
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| write_err("the path has no file name".to_owned()))?;
    let extension = if name.ends_with(".nii.gz") {
        "nii.gz"
    } else if name.ends_with(".nii") {
        "nii"
    } else {
        return Err(write_err(
            "the file name must end in .nii or .nii.gz".to_owned(),
        ));
    };
    // The nifti writer rewrites extensions, so the partial name has no other dots.
    let partial = crate::io::atomic::partial_path(path, extension);

    let header = header_for(affine, intent);
    let result = nifti::writer::WriterOptions::new(&partial)
        .reference_header(&header)
        .compress(extension == "nii.gz")
        .write_nifti(view)
        .map_err(|e| write_err(e.to_string()))
        .and_then(|()| {
            crate::io::atomic::commit(&partial, path).map_err(|source| VolumeError::Io {
                path: path.to_owned(),
                source,
            })
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// A header carrying `affine` as sform and, where it is a rotation and scaling, as qform too.
fn header_for(affine: &Affine, intent: Option<nifti::Intent>) -> NiftiHeader {
    let rows = affine.to_rows();
    let matrix = nalgebra::Matrix4::new(
        rows[0][0], rows[0][1], rows[0][2], rows[0][3], //
        rows[1][0], rows[1][1], rows[1][2], rows[1][3], //
        rows[2][0], rows[2][1], rows[2][2], rows[2][3], //
        0.0, 0.0, 0.0, 1.0,
    );
    let mut header = NiftiHeader::default();
    let spacing = affine.spacing();
    header.pixdim = [
        1.0,
        spacing.x as f32,
        spacing.y as f32,
        spacing.z as f32,
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    header.xyzt_units = nifti::Unit::Mm as u8;
    header.set_sform(&matrix, nifti::XForm::ScannerAnat);
    // qform can only hold orthogonal axes; for a sheared affine leave it unset.
    let d = affine.directions();
    let orthogonal = d.x_axis.dot(d.y_axis).abs() < 1e-6
        && d.x_axis.dot(d.z_axis).abs() < 1e-6
        && d.y_axis.dot(d.z_axis).abs() < 1e-6;
    header.set_qform(
        &matrix,
        if orthogonal {
            nifti::XForm::ScannerAnat
        } else {
            nifti::XForm::Unknown
        },
    );
    if let Some(intent) = intent {
        header.intent_code = intent as i16;
    }
    let _ = header.set_description_str("written by ape");
    header
}
