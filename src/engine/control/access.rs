//! Who may use the control sockets, and how the socket files are put on
//! disk: the directory must be the daemon's own (root's, not group- or
//! world-writable), an old file at the path must be a socket before it is
//! removed, sockets are bound under a tight umask (no chmod-by-path window)
//! and the read-write socket checks its peer's credentials on every
//! connection (uid 0, the daemon's own uid, or a member of `admin_group`).

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// The control sockets' access settings, with group names resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketAccess {
    /// The read-only socket's group (mode 0660); `None` = the daemon's own
    /// group (root only).
    pub readonly_gid: Option<u32>,
    /// Members of this group may use the read-write socket besides root.
    pub admin_gid: Option<u32>,
    /// Concurrent `watch`/`events --follow` streams per peer uid.
    pub max_streams_per_uid: usize,
}

/// Streams per uid when nothing is configured.
pub const DEFAULT_STREAMS_PER_UID: usize = 8;

impl SocketAccess {
    /// Root only, the default stream cap.
    pub fn root_only() -> Self {
        Self {
            readonly_gid: None,
            admin_gid: None,
            max_streams_per_uid: DEFAULT_STREAMS_PER_UID,
        }
    }
}

/// The gid of a group by name; `None` when there is no such group.
pub fn group_gid(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives `grp`'s use.
    let rc =
        unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    (rc == 0 && !out.is_null()).then_some(grp.gr_gid)
}

/// Refuses a socket directory that is not a real directory owned by root
/// (or by the daemon's own user) or that group or others may write to.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    let md = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !md.file_type().is_dir() {
        return Err(format!(
            "{}: the socket directory is not a directory (a symlink?)",
            dir.display()
        ));
    }
    let me = unsafe { libc::geteuid() };
    if md.uid() != 0 && md.uid() != me {
        return Err(format!(
            "{}: the socket directory is owned by uid {}, not root",
            dir.display(),
            md.uid()
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(format!(
            "{}: the socket directory is group- or world-writable (mode {:o}); chmod 0755 it",
            dir.display(),
            md.mode() & 0o7777
        ));
    }
    Ok(())
}

/// What sits at a socket path before bind.
#[derive(Debug, PartialEq, Eq)]
pub enum Existing {
    Nothing,
    /// An old socket: probe it, then remove it.
    Socket,
}

/// `lstat`s the path: nothing, or a socket; anything else (a regular file,
/// a symlink, a directory) is refused, never removed.
pub fn existing(path: &Path) -> Result<Existing, String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Existing::Nothing),
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(md) if md.file_type().is_socket() => Ok(Existing::Socket),
        Ok(md) => {
            let what = if md.file_type().is_symlink() {
                "a symlink"
            } else if md.file_type().is_file() {
                "a regular file"
            } else {
                "not a socket"
            };
            Err(format!(
                "{}: {what} sits at the socket path; fenceline removes only an old socket. \
                 Move it away and start again",
                path.display()
            ))
        }
    }
}

/// Restores the process umask when dropped.
struct Umask(libc::mode_t);

impl Umask {
    fn set(mask: libc::mode_t) -> Self {
        // SAFETY: umask cannot fail.
        Self(unsafe { libc::umask(mask) })
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        unsafe { libc::umask(self.0) };
    }
}

/// Binds a socket whose file is created with `mode` (0600 or 0660) at once:
/// the umask is tight around `bind`, so the file is never more open than
/// `mode`. With a group, the file's group is then set with `lchown` (the
/// file is root-only until then, so there is no window).
pub fn bind_tight(
    path: &Path,
    mode: u32,
    gid: Option<u32>,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    let listener = {
        let _mask = Umask::set((0o777 & !mode) as libc::mode_t);
        std::os::unix::net::UnixListener::bind(path)?
    };
    if let Some(gid) = gid {
        std::os::unix::fs::lchown(path, None, Some(gid))?;
    }
    Ok(listener)
}

/// A peer's credentials as the kernel reports them at connect time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// Supplementary groups (`SO_PEERGROUPS`); empty when unavailable.
    pub groups: Vec<u32>,
}

impl Peer {
    pub fn of(stream: &tokio::net::UnixStream) -> Option<Peer> {
        let c = stream.peer_cred().ok()?;
        Some(Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid().unwrap_or(0),
            groups: peer_groups(stream.as_raw_fd()),
        })
    }
}

fn peer_groups(fd: i32) -> Vec<u32> {
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
    // SAFETY: the buffer and its length match.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Vec::new();
    }
    groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
    groups
}

/// The read-write socket's rule: root, the daemon's own uid, or a member
/// (primary or supplementary) of the admin group.
pub fn admin_allowed(peer: &Peer, admin_gid: Option<u32>) -> bool {
    let me = unsafe { libc::geteuid() };
    peer.uid == 0
        || peer.uid == me
        || admin_gid.is_some_and(|g| peer.gid == g || peer.groups.contains(&g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            pid: 1,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn admin_rule() {
        let me = unsafe { libc::geteuid() };
        let other = if me == 0 { 65534 } else { me + 1 };
        assert!(admin_allowed(&peer(0, 0, &[]), None));
        assert!(admin_allowed(&peer(me, 0, &[]), None));
        assert!(!admin_allowed(&peer(other, other, &[]), None));
        assert!(!admin_allowed(&peer(other, other, &[5]), Some(7)));
        assert!(admin_allowed(&peer(other, other, &[5, 7]), Some(7)));
        assert!(admin_allowed(&peer(other, 7, &[]), Some(7)));
    }

    #[test]
    fn only_an_old_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        assert_eq!(existing(&p), Ok(Existing::Nothing));
        std::fs::write(&p, b"x").unwrap();
        assert!(existing(&p).unwrap_err().contains("a regular file"));
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
        assert!(existing(&p).unwrap_err().contains("a symlink"));
        std::fs::remove_file(&p).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(&p).unwrap();
        assert_eq!(existing(&p), Ok(Existing::Socket));
    }

    #[test]
    fn loose_socket_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("run");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_dir(&d).unwrap();
        for mode in [0o775, 0o777, 0o1777] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(check_dir(&d).unwrap_err().contains("writable"), "{mode:o}");
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(check_dir(&link).unwrap_err().contains("not a directory"));
    }

    #[test]
    fn sockets_are_born_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o660] {
            let p = dir.path().join(format!("s{mode:o}"));
            let _l = bind_tight(&p, mode, None).unwrap();
            let got = std::fs::symlink_metadata(&p).unwrap().mode() & 0o777;
            assert_eq!(got, mode);
        }
        let root = group_gid("root");
        assert_eq!(root, Some(0));
        assert_eq!(group_gid("no-such-group-fenceline"), None);
    }
}
