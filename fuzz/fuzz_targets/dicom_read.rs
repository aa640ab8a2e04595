//! Any bytes after a DICOM preamble and `DICM` marker, as the one file of a series folder: the
//! DICOM reader returns a volume or a typed error naming the file, and never panics or aborts.
#![no_main]

mod scratch;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch::scratch_dir("dicom");
    // The marker is given, so that the fuzzer spends its time on the data set, not on finding it.
    let mut file = vec![0u8; 128];
    file.extend_from_slice(b"DICM");
    file.extend_from_slice(data);
    if std::fs::write(dir.join("image_0"), &file).is_err() {
        return;
    }
    let _ = ape::io::dicom::list_series(dir);
    let _ = ape::io::read_volume(dir);
});
