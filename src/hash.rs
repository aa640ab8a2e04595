//! Content hashes (XXH3, 128 bits): what the map cache and model identities are keyed by.

use std::io::Read;
use std::path::Path;

/// A 128-bit hash (XXH3) of a file's content, streamed.
pub fn file_hash(path: &Path) -> std::io::Result<u128> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.digest128())
}

/// A 128-bit hash of a volume: its voxel values, shape and affine.
pub fn volume_hash(volume: &crate::Volume<f32>) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for n in volume.shape() {
        hasher.update(&(n as u64).to_le_bytes());
    }
    for row in volume.affine().to_rows() {
        for v in row {
            hasher.update(&v.to_le_bytes());
        }
    }
    let mut buf = Vec::with_capacity(4 << 16);
    for chunk in volume.data().chunks(1 << 16) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
        hasher.update(&buf);
    }
    hasher.digest128()
}

/// A 128-bit hash of bytes in memory.
pub fn bytes_hash(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_volume_hash_sees_values_and_grid() {
        let affine = crate::Affine::from_spacing(glam::DVec3::ONE, glam::DVec3::ZERO).unwrap();
        let v = crate::Volume::from_fn([4, 3, 2], affine, |i, j, k| (i + j + k) as f32).unwrap();
        let mut w = v.clone();
        w.data_mut()[5] += 1.0;
        let moved = crate::Volume::new(
            v.data().to_vec(),
            [4, 3, 2],
            crate::Affine::from_spacing(glam::DVec3::ONE, glam::DVec3::X).unwrap(),
        )
        .unwrap();
        assert_eq!(volume_hash(&v), volume_hash(&v.clone()));
        assert_ne!(volume_hash(&v), volume_hash(&w));
        assert_ne!(volume_hash(&v), volume_hash(&moved));
    }
}
