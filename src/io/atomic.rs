//! Writing files so that they appear whole or not at all, even when the process is killed or
//! the machine loses power: write beside the target, flush to disk, rename over it, flush the
//! folder.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A temporary name beside `path`, unique in this process, with `extension`.
pub fn partial_path(path: &Path, extension: &str) -> PathBuf {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    folder_of(path).join(format!(
        ".ape-partial-{}-{serial}.{extension}",
        std::process::id()
    ))
}

fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Flushes a finished `partial` file to disk and renames it onto `path`, then flushes the folder
/// so that the rename itself survives a crash.
pub fn commit(partial: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::File::open(partial)?.sync_all()?;
    std::fs::rename(partial, path)?;
    // Not every platform can sync a folder; the rename is then as durable as the OS makes it.
    if let Ok(folder) = std::fs::File::open(folder_of(path)) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let partial = partial_path(path, "tmp");
    let result = std::fs::File::create(&partial)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| commit(&partial, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}
