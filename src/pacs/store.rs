//! The local store of retrieved series: one folder per (server, series), named by a hash of
//! both, that appears whole or not at all (filled under a temporary name, then renamed), so a
//! folder that exists is complete and a second open needs no network.

use std::path::{Path, PathBuf};

use super::{CT_IMAGE_STORAGE, PacsError};

/// Folders of retrieved series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesStore {
    dir: PathBuf,
}

/// `$APE_PACS_STORE`; else `pacs` inside `$APE_CACHE_DIR` (the map cache's folder, so that a
/// test's cache holds everything); else `$XDG_CACHE_HOME/ape/pacs`; else `~/.cache/ape/pacs`.
pub fn default_store_dir() -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("APE_PACS_STORE")
        .or_else(|| var("APE_CACHE_DIR").map(|d| d.join("pacs")))
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("ape/pacs")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/ape/pacs")))
        .unwrap_or_else(|| std::env::temp_dir().join("ape-pacs"))
}

impl SeriesStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of a series from a server (whether or not it is there yet).
    pub fn folder_of(&self, server: &str, series_uid: &str) -> PathBuf {
        let key = format!("{server}\n{series_uid}");
        self.dir.join(format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(key.as_bytes())
        ))
    }
}

/// The number of files of a stored series, if its folder is there (then it is complete).
pub(super) fn complete_series(folder: &Path) -> Option<usize> {
    let entries = std::fs::read_dir(folder).ok()?;
    let count = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .count();
    (count > 0).then_some(count)
}

/// A destination must be absent or an empty folder: a retrieval never mixes with other files.
pub(super) fn check_destination(dest: &Path) -> Result<(), PacsError> {
    match std::fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                Err(PacsError::BadArgument(format!(
                    "{}: the folder is not empty; retrieve into a new or empty folder",
                    dest.display()
                )))
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if dest.exists() && !dest.is_dir() => Err(PacsError::BadArgument(format!(
            "{}: exists and is not a folder ({e})",
            dest.display()
        ))),
        Err(e) => Err(PacsError::io(dest, e)),
    }
}

/// A temporary folder beside the destination, removed unless committed.
#[derive(Debug)]
pub(super) struct Partial {
    path: PathBuf,
    committed: bool,
}

impl Partial {
    pub(super) fn beside(dest: &Path) -> Result<Self, PacsError> {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| PacsError::io(parent, e))?;
        let path = crate::io::atomic::partial_path(dest, "series");
        std::fs::create_dir(&path).map_err(|e| PacsError::io(&path, e))?;
        Ok(Self {
            path,
            committed: false,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the slices and renames the folder onto `dest` (an empty `dest` is replaced).
    pub(super) fn commit(mut self, dest: &Path) -> Result<(), PacsError> {
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for entry in entries.filter_map(Result::ok) {
                if let Ok(f) = std::fs::File::open(entry.path()) {
                    let _ = f.sync_all();
                }
            }
        }
        if dest.is_dir() {
            // Empty (checked before the retrieval); remove_dir fails if something came since.
            std::fs::remove_dir(dest).map_err(|e| PacsError::io(dest, e))?;
        }
        std::fs::rename(&self.path, dest).map_err(|e| PacsError::io(dest, e))?;
        self.committed = true;
        if let Some(parent) = dest.parent()
            && let Ok(folder) = std::fs::File::open(parent)
        {
            let _ = folder.sync_all();
        }
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Refuses a retrieved series whose instances are not CT images (read from each file's meta
/// header only).
pub(super) fn check_ct(folder: &Path, server: &str, series: &str) -> Result<(), PacsError> {
    let entries = std::fs::read_dir(folder).map_err(|e| PacsError::io(folder, e))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let sop_class = sop_class_of(&path).map_err(|detail| {
            PacsError::protocol(server, format!("received an unreadable file: {detail}"))
        })?;
        if sop_class != CT_IMAGE_STORAGE {
            return Err(PacsError::NotCt {
                server: server.to_owned(),
                series: series.to_owned(),
                what: format!("an instance of SOP class {sop_class}"),
            });
        }
    }
    Ok(())
}

fn sop_class_of(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(64 << 10).read_to_end(&mut head))
        .map_err(|e| e.to_string())?;
    let meta = meta_group(&head)?;
    meta.text(SOP_CLASS)
        .ok_or_else(|| "no MediaStorageSOPClassUID".to_owned())
}

/// (0002,0002) MediaStorageSOPClassUID.
const SOP_CLASS: super::wire::Tag = (0x0002, 0x0002);

/// The file meta group of a Part 10 file's first bytes.
pub(super) fn meta_group(head: &[u8]) -> Result<super::wire::Parsed, String> {
    if head.get(128..132) != Some(b"DICM") {
        return Err("no DICM marker".into());
    }
    let (meta, _) = super::wire::Parsed::parse_while(
        &head[132..],
        super::wire::Syntax::ExplicitLittle,
        |tag| tag.0 == 0x0002,
    )?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn folders_are_keyed_by_server_and_series() {
        let store = SeriesStore::new("/s");
        let a = store.folder_of("A@h:1", "1.2");
        assert_eq!(a, store.folder_of("A@h:1", "1.2"));
        assert_ne!(a, store.folder_of("B@h:1", "1.2"));
        assert_ne!(a, store.folder_of("A@h:1", "1.3"));
    }

    #[test]
    fn a_partial_folder_is_removed_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("series");
        let p = Partial::beside(&dest).unwrap();
        let tmp = p.path().to_owned();
        std::fs::write(tmp.join("x.dcm"), b"x").unwrap();
        drop(p);
        assert!(!tmp.exists() && !dest.exists());

        let p = Partial::beside(&dest).unwrap();
        std::fs::write(p.path().join("x.dcm"), b"x").unwrap();
        p.commit(&dest).unwrap();
        assert_eq!(complete_series(&dest), Some(1));
        assert!(check_destination(&dest).is_err());
        assert!(check_destination(&dir.path().join("new")).is_ok());
    }
}
