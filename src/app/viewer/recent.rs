//! Recently opened scans, remembered across sessions in `recent.json` under the config folder
//! (`$APE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/ape`, else `~/.config/ape`), written atomically.

use std::path::{Path, PathBuf};

/// How many paths are remembered.
pub const KEEP: usize = 12;

/// The config folder.
pub fn config_dir() -> Option<PathBuf> {
    std::env::var_os("APE_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CONFIG_HOME").map(|d| PathBuf::from(d).join("ape")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/ape")))
}

/// `opened` first, then the earlier list without it, at most [`KEEP`].
pub fn remember(list: &[PathBuf], opened: &Path) -> Vec<PathBuf> {
    std::iter::once(opened.to_owned())
        .chain(list.iter().filter(|p| p.as_path() != opened).cloned())
        .take(KEEP)
        .collect()
}

/// The remembered list; empty when there is none or it cannot be read.
pub fn load(dir: &Path) -> Vec<PathBuf> {
    std::fs::read(dir.join("recent.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Saves the list (atomically: a crash leaves the old list or the new one).
pub fn save(dir: &Path, list: &[PathBuf]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(list).map_err(std::io::Error::other)?;
    ape::io::atomic::write_atomically(&dir.join("recent.json"), &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_opened_comes_first_once_and_the_list_survives_a_restart() {
        let a = PathBuf::from("/scans/a.nii.gz");
        let b = PathBuf::from("/scans/b.nii.gz");
        let list = remember(&remember(&remember(&[], &a), &b), &a);
        assert_eq!(list, [a.clone(), b.clone()]);
        let many = (0..30).fold(Vec::new(), |l, i| {
            remember(&l, Path::new(&format!("/s/{i}")))
        });
        assert_eq!(many.len(), KEEP);
        assert_eq!(many[0], PathBuf::from("/s/29"));

        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        save(dir.path(), &list).unwrap();
        assert_eq!(load(dir.path()), list);
        std::fs::write(dir.path().join("recent.json"), b"{ not json").unwrap();
        assert!(load(dir.path()).is_empty());
    }
}
