//! The fence key file, read as fence_virtd reads it.

use fenceline_proto::fence_xvm::MAX_KEY_LEN;

use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// What a private file is, and so what its owner and mode must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Private {
    /// A fence key: not readable by group or others unless `loose` (then a
    /// warning).
    Key { loose: bool },
    /// The config file: not writable by group or others.
    Config,
}

/// Opens `path` without following a symlink (`O_NOFOLLOW`) and checks the
/// open file (`fstat`): a regular file, owned by root (or the daemon's own
/// user), with the mode its kind needs.
pub fn open_private(path: &Path, kind: Private) -> std::io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refused("is a symlink; name the file itself".into()),
            _ => e,
        })?;
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(refused("is not a regular file".into()));
    }
    let me = unsafe { libc::geteuid() };
    if md.uid() != 0 && md.uid() != me {
        return Err(refused(format!("is owned by uid {}, not root", md.uid())));
    }
    let mode = md.mode() & 0o777;
    match kind {
        Private::Key { loose } if mode & 0o077 != 0 => {
            if !loose {
                return Err(refused(format!(
                    "is readable by others than its owner (mode {mode:o}); chmod 0600 it \
                     (or set listeners.allow_loose_key_mode = true)"
                )));
            }
            tracing::warn!(
                path = %path.display(),
                "SECURITY: the fence key file is readable by others than its owner (mode {mode:o}); \
                 allowed by listeners.allow_loose_key_mode; chmod 0600 it"
            );
        }
        Private::Config if mode & 0o022 != 0 => {
            return Err(refused(format!(
                "is writable by group or others (mode {mode:o}); chmod 0644 or 0600 it"
            )));
        }
        _ => {}
    }
    Ok(f)
}

/// [`open_private`] for its checks alone.
pub fn check_private(path: &Path, kind: Private) -> std::io::Result<()> {
    open_private(path, kind).map(drop)
}

fn refused(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)
}

/// [`fenceline_proto::fence_xvm::key_digest`] of the key in `path`, read
/// with [`read_key`]'s checks.
pub fn digest_file(path: &Path, loose: bool) -> std::io::Result<String> {
    read_key(path, loose).map(|k| fenceline_proto::fence_xvm::key_digest(&k))
}

/// Reads a key file as fence_virtd does: raw bytes, nothing trimmed, at most
/// the first 4096 bytes; opened with [`open_private`].
pub fn read_key(path: &Path, loose: bool) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = open_private(path, Private::Key { loose })?;
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
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_is_raw_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"secret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_key(&p, false).unwrap(),
            b"secret\n",
            "nothing is trimmed"
        );
        std::fs::write(&p, vec![7u8; 5000]).unwrap();
        assert_eq!(read_key(&p, false).unwrap().len(), MAX_KEY_LEN);
        std::fs::write(&p, b"").unwrap();
        assert!(read_key(&p, false).is_err());
    }

    #[test]
    fn loose_or_linked_private_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"secret").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_key(&p, false).unwrap_err().to_string();
        assert!(e.contains("readable by others"), "{e}");
        assert_eq!(
            read_key(&p, true).unwrap(),
            b"secret",
            "allow_loose_key_mode"
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = read_key(&link, true).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        let e = check_private(&link, Private::Config)
            .unwrap_err()
            .to_string();
        assert!(e.contains("symlink"), "{e}");
        check_private(&p, Private::Config).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = check_private(&p, Private::Config).unwrap_err().to_string();
        assert!(e.contains("writable"), "{e}");
        let e = check_private(dir.path(), Private::Config)
            .unwrap_err()
            .to_string();
        assert!(e.contains("regular file"), "{e}");
    }
}
