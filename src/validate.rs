//! What a user hands in, checked in one place: numbers from the command line and the viewer,
//! input and output paths, the memory one volume may take, and warnings for input that is legal
//! but suspicious. Every error names its source (a flag, a file, a header field, a DICOM
//! attribute) and the problem; the readers, the command line and the viewer all call these.
//!
//! Refuse or warn: what cannot be meant (NaN, a negative count, an output onto an input, a
//! spacing of 10³⁰ mm) is refused; what is legal but odd (intensities unlike CT, a constant
//! volume, gantry tilt, a 25 mm slice) is read with a warning the front ends show.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// What kind of oddity a warning is about (for tests and for the viewer's grouping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WarningKind {
    /// Intensities unlike CT in HU (an MR range, values already scaled to 0…1).
    NotCtLike,
    /// Every voxel holds the same value.
    ConstantVolume,
    /// Voxels unusually small or large (but not absurd).
    ExtremeSpacing,
    /// A DICOM series acquired with a tilted gantry (the grid is sheared).
    GantryTilt,
    /// A label map stored as floating point, read as whole-number labels.
    FloatLabels,
    /// A box read from a file lost something on the way in (a rotation, for example).
    BoxApproximated,
    /// Anything else worth a user's attention.
    Other,
}

/// Input that was read but deserves a look: the CLI prints these, the viewer shows them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputWarning {
    pub kind: WarningKind,
    /// The file, flag or attribute the warning is about.
    pub source: String,
    pub message: String,
}

impl InputWarning {
    pub fn new(kind: WarningKind, source: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            source: source.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for InputWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

/// Why something a user handed in was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{source_name}: {value} {problem}")]
    BadValue {
        /// The flag (`--alpha`), field or attribute.
        source_name: String,
        value: String,
        problem: String,
    },

    #[error("{path}: not found")]
    NotFound { path: PathBuf },

    #[error("{path}: is a {kind}, not a regular file or folder; ape reads files and folders only")]
    NotARegularFile { path: PathBuf, kind: &'static str },

    #[error("{output}: refusing to write over {role} ({input}); choose another output path")]
    OutputIsInput {
        output: PathBuf,
        input: PathBuf,
        role: String,
    },

    #[error("{path}: is a folder; {what} is written to a file: give a file name")]
    OutputIsFolder { path: PathBuf, what: String },

    #[error("{path}: is a file; {what} is a folder of files: give a folder")]
    OutputIsFile { path: PathBuf, what: String },

    #[error("{path}: is not a regular file ({kind}); refusing to write to it")]
    OutputNotRegular { path: PathBuf, kind: &'static str },

    #[error(
        "{path}: needs {} of memory, but only {} is available ({limit}); free memory or use a smaller scan",
        bytes_text(*needed), bytes_text(*available)
    )]
    OutOfMemory {
        path: PathBuf,
        needed: u64,
        available: u64,
        limit: &'static str,
    },

    #[error("{source_name}: {problem}")]
    Other {
        source_name: String,
        problem: String,
    },
}

fn bad_value(source: &str, value: impl std::fmt::Display, problem: &str) -> InputError {
    InputError::BadValue {
        source_name: source.to_owned(),
        value: value.to_string(),
        problem: problem.to_owned(),
    }
}

/// `value` if it is a finite number.
pub fn finite(source: &str, value: f64) -> Result<f64, InputError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(bad_value(source, value, "is not a finite number"))
    }
}

/// `value` if it is finite and above zero.
pub fn positive(source: &str, value: f64) -> Result<f64, InputError> {
    finite(source, value)?;
    if value > 0.0 {
        Ok(value)
    } else {
        Err(bad_value(source, value, "must be above zero"))
    }
}

/// `value` if it is finite and within `lo..=hi`.
pub fn within(source: &str, value: f64, lo: f64, hi: f64) -> Result<f64, InputError> {
    finite(source, value)?;
    if (lo..=hi).contains(&value) {
        Ok(value)
    } else {
        Err(bad_value(
            source,
            value,
            &format!("is outside the range {lo}…{hi}"),
        ))
    }
}

/// `count` if it is at least `min`.
pub fn count_at_least(source: &str, count: usize, min: usize) -> Result<usize, InputError> {
    if count >= min {
        Ok(count)
    } else {
        Err(bad_value(source, count, &format!("must be at least {min}")))
    }
}

/// Smallest and largest voxel size (mm) a CT plausibly has; outside, read with a warning.
pub const PLAUSIBLE_SPACING_MM: (f64, f64) = (0.05, 20.0);
/// Voxel sizes (mm) outside which a grid is refused: no scanner makes them, and the world
/// extent they imply breaks every computation after (a pixdim of 10³⁰).
pub const POSSIBLE_SPACING_MM: (f64, f64) = (1e-3, 1e3);

/// A voxel spacing (mm) given by a user, as for `--input-spacing`: three finite sizes within
/// [`POSSIBLE_SPACING_MM`].
pub fn spacing_mm(source: &str, spacing: &[f64]) -> Result<[f64; 3], InputError> {
    let &[x, y, z] = spacing else {
        return Err(InputError::Other {
            source_name: source.to_owned(),
            problem: format!("takes three values X,Y,Z (mm), got {}", spacing.len()),
        });
    };
    let (lo, hi) = POSSIBLE_SPACING_MM;
    for v in [x, y, z] {
        within(source, v, lo, hi)?;
    }
    Ok([x, y, z])
}

/// Checks a grid's voxel sizes as a file states them: refused outside
/// [`POSSIBLE_SPACING_MM`] (naming `field`, e.g. `pixdim[3]` or `PixelSpacing`), a warning
/// outside [`PLAUSIBLE_SPACING_MM`].
pub fn file_spacing(
    file: &Path,
    field: &str,
    spacing: [f64; 3],
) -> Result<Option<InputWarning>, InputError> {
    let (lo, hi) = POSSIBLE_SPACING_MM;
    for (axis, &v) in spacing.iter().enumerate() {
        if !v.is_finite() || !(lo..=hi).contains(&v) {
            return Err(InputError::BadValue {
                source_name: format!("{}: {field} (axis {})", file.display(), axis + 1),
                value: format!("{v:e} mm"),
                problem: format!("is not a voxel size ({lo} mm to {hi} mm)"),
            });
        }
    }
    let (lo, hi) = PLAUSIBLE_SPACING_MM;
    Ok(spacing.iter().any(|v| !(lo..=hi).contains(v)).then(|| {
        InputWarning::new(
            WarningKind::ExtremeSpacing,
            file.display().to_string(),
            format!(
                "voxels of {:.3} × {:.3} × {:.3} mm are unusual for CT ({}; APE resamples to \
                 its input spacing)",
                spacing[0],
                spacing[1],
                spacing[2],
                if spacing.iter().any(|&v| v > hi) {
                    "a very coarse scan loses anatomy"
                } else {
                    "is the spacing in mm?"
                }
            ),
        )
    }))
}

/// What ape can tell about a path on disk without opening it.
fn file_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() || t.is_dir() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("named pipe (FIFO)");
        }
        if t.is_socket() {
            return Some("socket");
        }
        if t.is_char_device() {
            return Some("character device");
        }
        if t.is_block_device() {
            return Some("block device");
        }
    }
    Some("special file")
}

/// Refuses an input that is not a regular file or folder (a FIFO would block reading forever,
/// a device would read without end) or does not exist. Symbolic links are followed.
pub fn input_path(path: &Path) -> Result<(), InputError> {
    let meta = std::fs::metadata(path).map_err(|_| InputError::NotFound {
        path: path.to_owned(),
    })?;
    match file_kind(&meta) {
        None => Ok(()),
        Some(kind) => Err(InputError::NotARegularFile {
            path: path.to_owned(),
            kind,
        }),
    }
}

/// What a command writes at an output path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// One file (a map, a crop, a box file, a model).
    File,
    /// A folder of files (a report).
    Folder,
}

/// An input of a command, for [`output_path`]: a file, or a folder all of whose files are
/// inputs (a DICOM series, a support cohort).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// What the input is, in the error: "the scan", "a support label map".
    pub role: &'a str,
    pub path: &'a Path,
}

impl<'a> Input<'a> {
    pub fn new(role: &'a str, path: &'a Path) -> Self {
        Self { role, path }
    }
}

/// Checks an output path before any work: it must not resolve to an input (the same file by
/// another spelling, a symbolic or hard link to it, or a file inside an input folder), must be
/// a file where a file is written and a folder where a folder is, and not a FIFO or device.
/// `what` names the output in errors ("the APE map", "the report").
pub fn output_path(
    output: &Path,
    kind: OutputKind,
    what: &str,
    inputs: &[Input<'_>],
) -> Result<(), InputError> {
    if let Ok(meta) = std::fs::metadata(output) {
        if let Some(special) = file_kind(&meta) {
            return Err(InputError::OutputNotRegular {
                path: output.to_owned(),
                kind: special,
            });
        }
        match kind {
            OutputKind::File if meta.is_dir() => {
                return Err(InputError::OutputIsFolder {
                    path: output.to_owned(),
                    what: what.to_owned(),
                });
            }
            OutputKind::Folder if meta.is_file() => {
                return Err(InputError::OutputIsFile {
                    path: output.to_owned(),
                    what: what.to_owned(),
                });
            }
            _ => {}
        }
    } else if kind == OutputKind::File && ends_with_separator(output) {
        return Err(InputError::OutputIsFolder {
            path: output.to_owned(),
            what: what.to_owned(),
        });
    }
    let out = resolved(output);
    let out_id = FileId::of(output);
    for input in inputs {
        let clash = |path: &Path| InputError::OutputIsInput {
            output: output.to_owned(),
            input: path.to_owned(),
            role: input.role.to_owned(),
        };
        let Some(inp) = resolved_existing(input.path) else {
            continue;
        };
        if inp.is_dir() {
            // Writing a folder output into or onto an input folder, or a file over one of its
            // files, would mix outputs with inputs or replace them.
            let over = match kind {
                OutputKind::File => out.starts_with(&inp) && out.exists(),
                // A report folder inside a data folder is fine; the data folder itself, or
                // one that holds it, is not.
                OutputKind::Folder => out == inp || inp.starts_with(&out),
            };
            if over {
                // Name the file about to be replaced when there is one.
                return Err(clash(if out.is_file() { output } else { input.path }));
            }
            if let Some(id) = out_id
                && let Some(linked) = files_under(&inp, 3)
                    .into_iter()
                    .find(|f| FileId::of(f) == Some(id))
            {
                return Err(clash(&linked));
            }
        } else {
            let same = out == inp
                || (out_id.is_some() && out_id == FileId::of(input.path))
                || (kind == OutputKind::Folder && inp.starts_with(&out));
            if same {
                return Err(clash(input.path));
            }
        }
    }
    Ok(())
}

fn ends_with_separator(path: &Path) -> bool {
    let s = path.as_os_str().to_string_lossy();
    s.ends_with('/') || s.ends_with(std::path::MAIN_SEPARATOR)
}

/// The canonical path of an existing path.
fn resolved_existing(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// The canonical path of `path`, or of its nearest existing ancestor joined with the rest, for
/// a path that does not exist yet.
pub fn resolved(path: &Path) -> PathBuf {
    if let Some(p) = resolved_existing(path) {
        return p;
    }
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut rest = Vec::new();
    let mut head = absolute.as_path();
    loop {
        if let Some(p) = resolved_existing(head) {
            let mut out = p;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (head.parent(), head.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                head = parent;
            }
            _ => return absolute,
        }
    }
}

/// Regular files under `dir`, `depth` levels deep at most and 100 000 at most.
fn files_under(dir: &Path, depth: usize) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), 0)];
    while let Some((d, level)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() && level < depth => stack.push((path, level + 1)),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
            if out.len() >= 100_000 {
                return out;
            }
        }
    }
    out
}

/// A file's identity on disk: the same for every hard link to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    fn of(path: &Path) -> Option<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(path).ok()?;
            meta.is_file().then(|| FileId(meta.dev(), meta.ino()))
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            None
        }
    }
}

/// How much memory one more allocation may take now, and what limits it: the least of the
/// memory the kernel says is available, the cgroup's `memory.max` less its use, and the
/// address-space limit (`ulimit -v`, `prlimit --as`) less what the process has mapped. `None`
/// where none of these can be read.
pub fn memory_available() -> Option<(u64, &'static str)> {
    let mut best: Option<(u64, &'static str)> = None;
    let mut consider = |bytes: Option<u64>, what: &'static str| {
        if let Some(b) = bytes
            && best.is_none_or(|(v, _)| b < v)
        {
            best = Some((b, what));
        }
    };
    consider(meminfo_available(), "memory available to the system");
    consider(cgroup_available(), "the cgroup's memory.max");
    consider(
        address_space_available(),
        "the process's address-space limit",
    );
    best
}

/// Refuses an allocation of `needed` bytes for `path` that cannot fit in memory now, before
/// it is attempted (an allocation the allocator cannot serve aborts the process).
pub fn memory_for(path: &Path, needed: u64) -> Result<(), InputError> {
    match memory_available() {
        Some((available, limit)) if needed > available => Err(InputError::OutOfMemory {
            path: path.to_owned(),
            needed,
            available,
            limit,
        }),
        _ => Ok(()),
    }
}

fn meminfo_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn cgroup_available() -> Option<u64> {
    // cgroup v2: the process's group from /proc/self/cgroup ("0::/path").
    let line = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let group = line.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let dir = Path::new("/sys/fs/cgroup").join(group.trim_start_matches('/'));
    let max = std::fs::read_to_string(dir.join("memory.max")).ok()?;
    let max: u64 = max.trim().parse().ok()?; // "max" means no limit
    let current: u64 = std::fs::read_to_string(dir.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(max.saturating_sub(current))
}

fn address_space_available() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))?;
    let soft: u64 = line
        .trim_start_matches("Max address space")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?; // "unlimited" means no limit
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let vm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmSize:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(soft.saturating_sub(vm_kb * 1024))
}

/// "1.5 GB", "320 MB", "12 kB".
pub fn bytes_text(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.0} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

/// Warnings about a volume's intensities read as HU: a constant volume, or a range unlike CT
/// (CT holds air near −1000 HU; an MR range of 0…4000 or values scaled to 0…1 hold none).
pub fn hu_range_warnings(source: &Path, min: f32, max: f32) -> Vec<InputWarning> {
    let source = source.display().to_string();
    if min == max {
        return vec![InputWarning::new(
            WarningKind::ConstantVolume,
            source,
            format!("every voxel holds {min}: there is no anatomy to embed"),
        )];
    }
    let mut out = Vec::new();
    if min > -200.0 {
        let hint = if max <= 1.0 + f32::EPSILON && min >= 0.0 {
            "values already scaled to 0…1?"
        } else {
            "not CT, or not in Hounsfield units (an MR scan?)"
        };
        out.push(InputWarning::new(
            WarningKind::NotCtLike,
            source,
            format!(
                "values span {min}…{max}, but CT in HU holds air near −1000 HU: {hint} APE's \
                 embeddings of it are not meaningful"
            ),
        ));
    } else if max < -200.0 {
        out.push(InputWarning::new(
            WarningKind::NotCtLike,
            source,
            format!("values span {min}…{max} HU: no soft tissue (0…100 HU) at all; is this CT?"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn numbers_are_checked_with_their_source() {
        assert!(positive("--alpha", 1.5).is_ok());
        for bad in [f64::NAN, f64::INFINITY, 0.0, -1.0] {
            let e = positive("--alpha", bad).unwrap_err().to_string();
            assert!(e.starts_with("--alpha: "), "{e}");
        }
        assert!(spacing_mm("--input-spacing", &[3.0, 3.0]).is_err());
        assert!(spacing_mm("--input-spacing", &[3.0, 3.0, 1e30]).is_err());
        assert!(spacing_mm("--input-spacing", &[3.0, 3.0, 4.5]).is_ok());
        assert!(count_at_least("--shots", 0, 1).is_err());
    }

    #[test]
    fn outputs_onto_inputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let scan = dir.path().join("scan.nii.gz");
        std::fs::write(&scan, b"x").unwrap();
        let input = [Input::new("the scan", &scan)];
        let check = |p: &Path| output_path(p, OutputKind::File, "the map", &input);
        assert!(check(&scan).is_err());
        // Another spelling, a symbolic link, a hard link.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(check(&sub.join("../scan.nii.gz")).is_err());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&scan, dir.path().join("sym.nii.gz")).unwrap();
            assert!(check(&dir.path().join("sym.nii.gz")).is_err());
            std::fs::hard_link(&scan, dir.path().join("hard.nii.gz")).unwrap();
            assert!(check(&dir.path().join("hard.nii.gz")).is_err());
        }
        assert!(check(&dir.path().join("map.nii.gz")).is_ok());
        // A folder where a file goes, and a file where a folder goes.
        assert!(matches!(
            check(&sub),
            Err(InputError::OutputIsFolder { .. })
        ));
        assert!(matches!(
            output_path(&scan, OutputKind::Folder, "the report", &[]),
            Err(InputError::OutputIsFile { .. })
        ));
        // A folder input: none of its files, nor the folder itself for a folder output.
        let cohort = [Input::new("the support cohort", dir.path())];
        assert!(output_path(&scan, OutputKind::File, "the crop", &cohort).is_err());
        assert!(output_path(dir.path(), OutputKind::Folder, "the report", &cohort).is_err());
        assert!(
            output_path(
                &sub.join("report"),
                OutputKind::Folder,
                "the report",
                &cohort
            )
            .is_ok()
        );
    }

    #[test]
    fn hu_ranges_unlike_ct_warn() {
        let p = Path::new("x.nii");
        assert!(hu_range_warnings(p, -1024.0, 2000.0).is_empty());
        assert_eq!(
            hu_range_warnings(p, 0.0, 1.0)[0].kind,
            WarningKind::NotCtLike
        );
        assert_eq!(
            hu_range_warnings(p, 0.0, 4000.0)[0].kind,
            WarningKind::NotCtLike
        );
        assert_eq!(
            hu_range_warnings(p, 5.0, 5.0)[0].kind,
            WarningKind::ConstantVolume
        );
    }

    #[test]
    fn memory_is_known_here() {
        // Linux always has /proc/meminfo.
        #[cfg(target_os = "linux")]
        assert!(memory_available().is_some());
    }
}
