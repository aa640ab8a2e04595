//! A scratch folder per fuzzing process (in memory where the system has /dev/shm): the readers
//! take paths, so each input is written to a file first.

use std::path::PathBuf;
use std::sync::OnceLock;

pub fn scratch_dir(target: &str) -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("ape-fuzz-{target}-{}", std::process::id()));
        // A fuzzing run cannot go on without it: failing loudly here is the point.
        #[allow(clippy::expect_used)]
        std::fs::create_dir_all(&dir).expect("a scratch folder for fuzz inputs");
        dir
    })
}
