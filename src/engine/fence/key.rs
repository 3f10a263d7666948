//! The fence key file, read as fence_virtd reads it.

use fenceline_proto::fence_xvm::MAX_KEY_LEN;

/// Reads a key file as fence_virtd does: raw bytes, nothing trimmed, at most
/// the first 4096 bytes.
pub fn read_key(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut key = Vec::with_capacity(MAX_KEY_LEN);
    f.take(MAX_KEY_LEN as u64).read_to_end(&mut key)?;
    if key.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "key file is empty",
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_raw_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"secret\n").unwrap();
        assert_eq!(read_key(&p).unwrap(), b"secret\n", "nothing is trimmed");
        std::fs::write(&p, vec![7u8; 5000]).unwrap();
        assert_eq!(read_key(&p).unwrap().len(), MAX_KEY_LEN);
        std::fs::write(&p, b"").unwrap();
        assert!(read_key(&p).is_err());
    }
}
