//! Never lose work: a process writing a file is killed with SIGKILL at random moments, many
//! times; the file on disk always parses and holds either the old or the new content, whole.
//! The writer is this test binary itself, started again with `APE_KILL_TEST_WRITER` set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ape::io::nifti::{read_nifti, write_nifti};
use ape::{Affine, Volume};
use glam::DVec3;

const WRITER_ENV: &str = "APE_KILL_TEST_WRITER";

/// Version `v` of the volume: every voxel holds `v`, so a torn file shows as a mixture.
fn volume(v: u16) -> Volume<u16> {
    let affine = Affine::from_spacing(DVec3::new(1.0, 1.0, 2.0), DVec3::ZERO).unwrap();
    Volume::from_fn([96, 96, 60], affine, |_, _, _| v).unwrap()
}

/// In the child: write versions 1, 2, 1, 2, … (NIfTI, then the JSON sidecar) until killed.
#[test]
fn writer_child() {
    let Ok(dir) = std::env::var(WRITER_ENV) else {
        return; // not the child: nothing to do
    };
    let dir = Path::new(&dir);
    for round in 0u64.. {
        let v = 1 + (round % 2) as u16;
        write_nifti(dir.join("labels.nii.gz"), &volume(v)).unwrap();
        let json = format!(
            "{{\"version\": {v}, \"padding\": \"{}\"}}",
            "x".repeat(200_000)
        );
        ape::io::atomic::write_atomically(&dir.join("boxes.json"), json.as_bytes()).unwrap();
    }
}

#[test]
fn files_survive_sigkill_at_random_moments() {
    if std::env::var(WRITER_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_nifti(dir.path().join("labels.nii.gz"), &volume(1)).unwrap();
    ape::io::atomic::write_atomically(&dir.path().join("boxes.json"), b"{\"version\": 1}").unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut seen = [0usize; 3];
    for _ in 0..40 {
        let mut child = Command::new(&exe)
            .args(["writer_child", "--exact", "--test-threads=1"])
            .env(WRITER_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::thread::sleep(Duration::from_millis(5 + state % 120));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let read = read_nifti(dir.path().join("labels.nii.gz")).unwrap();
        let first = read.volume.data()[0];
        assert!(first == 1.0 || first == 2.0, "voxel value {first}");
        assert!(
            read.volume.data().iter().all(|v| *v == first),
            "a torn volume"
        );
        seen[first as usize] += 1;
        let text = std::fs::read_to_string(dir.path().join("boxes.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            matches!(json["version"].as_u64(), Some(1 | 2)),
            "{text:.80}"
        );
    }
    // Leftover partial files are allowed (a killed writer cannot clean up), the targets are not
    // touched by them.
    eprintln!("versions seen after kills: 1: {}, 2: {}", seen[1], seen[2]);
}
