//! Any bytes as a `.json`, `.csv` and `.mrk.json` box file: `BoxSet::load_with_warnings`
//! returns boxes or a typed error and never panics; and whatever loads saves in every format
//! and reads back as as many boxes (a write/read asymmetry is a finding, so it panics here).
#![no_main]

mod scratch;

use ape::annotations::{AnnotationError, BoxFormat, BoxSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch::scratch_dir("boxes");
    for input in BoxFormat::ALL {
        let path = dir.join(format!("input.{}", input.extension()));
        if std::fs::write(&path, data).is_err() {
            return;
        }
        let Ok((set, _warnings)) = BoxSet::load_with_warnings(&path) else {
            continue;
        };
        for output in BoxFormat::ALL {
            let out = dir.join(format!("output.{}", output.extension()));
            match set.save(&out) {
                Ok(()) => {}
                // The scratch folder full or gone is not a finding.
                Err(AnnotationError::Io { .. }) => return,
                Err(e) => panic!("read as {input:?}, not saved as {output:?}: {e}"),
            }
            let back = BoxSet::load(&out).unwrap_or_else(|e| {
                panic!("read as {input:?}, saved as {output:?}, not read back: {e}")
            });
            assert_eq!(
                back.boxes.len(),
                set.boxes.len(),
                "read as {input:?}, saved as {output:?}: another number of boxes"
            );
        }
    }
});
