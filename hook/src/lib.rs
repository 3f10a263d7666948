//! The libvirt network hook entry: `fenceline-hook network NAME OP SUBOP
//! EXTRA` (and the same as `fenceline hook`). A crate of its own so that the
//! binary libvirtd runs links neither libvirt nor corosync.
//!
//! The hook runs synchronously inside libvirtd, which waits for it with no
//! timeout and aborts a network or domain start when it exits non-zero. So
//! it is plain blocking std code (no async runtime), bounded by one total
//! deadline ([`HOOK_DEADLINE`]), never calls libvirt, and always exits 0:
//! daemon absent, slow or refusing, bad or oversized XML all end with a
//! message on stderr and exit 0.

use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fenceline_proto::api::now_millis;
use fenceline_proto::hook::data::HookArgs;
use fenceline_proto::hook::{HOOK_SOCKET_ENV, HookReport};
use fenceline_proto::paths::DEFAULT_CONFIG_PATH;
use fenceline_proto::paths::DEFAULT_HOOK_SOCKET;

/// Everything the hook does (read stdin, parse, send) ends within this.
pub const HOOK_DEADLINE: Duration = Duration::from_secs(1);
/// Part of the deadline kept for sending after stdin.
const SEND_RESERVE: Duration = Duration::from_millis(300);

/// What `fenceline hook` did; the process exits 0 in every case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    Sent,
    /// Not delivered; the reason was printed on stderr.
    NotSent(String),
}

/// Which socket the hook reports to: `--socket`, else `FENCELINE_HOOK_SOCKET`,
/// else `[hooks] socket` of the config file (`--config`, or the default file
/// when it exists), else the built-in default.
pub fn hook_socket(flag: Option<&Path>, config: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os(HOOK_SOCKET_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    match socket_from_config(config) {
        Ok(Some(p)) => p,
        Ok(None) => PathBuf::from(DEFAULT_HOOK_SOCKET),
        Err(e) => {
            eprintln!("fenceline hook: {e}; using {DEFAULT_HOOK_SOCKET}");
            PathBuf::from(DEFAULT_HOOK_SOCKET)
        }
    }
}

/// `[hooks] socket` of the config file, read leniently: the hook needs this
/// one key, and the daemon reports every other mistake in the file. The
/// default file may be absent (then `None`); a named one must exist.
fn socket_from_config(config: Option<&Path>) -> Result<Option<PathBuf>, String> {
    let (path, must_exist) = match config {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match table.get("hooks").and_then(|h| h.get("socket")) {
        None => Ok(None),
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(Some(PathBuf::from(s))),
        Some(_) => Err(format!(
            "{}: [hooks] socket must be a non-empty string",
            path.display()
        )),
    }
}

/// Runs the hook: `object` is libvirt's driver name ("network"), `args`
/// the rest of libvirt's argv. Reads stdin, reports to `socket`.
pub fn run_hook(socket: &Path, object: &str, args: &[String]) -> HookOutcome {
    let deadline = Instant::now() + HOOK_DEADLINE;
    let at = now_millis();
    let fail = |why: String| {
        eprintln!("fenceline hook: {why}; the event is not recorded (libvirt goes on)");
        HookOutcome::NotSent(why)
    };
    if object != "network" {
        return fail(format!(
            "only the network hook is supported, called as `{object}`"
        ));
    }
    let args = match HookArgs::parse(args) {
        Ok(a) => a,
        Err(e) => return fail(format!("bad arguments: {e}")),
    };
    let stdin = read_stdin(deadline.checked_sub(SEND_RESERVE).unwrap_or(deadline));
    let report = HookReport::build(&args, stdin.as_deref().map_err(Clone::clone), at);
    if let Some(e) = &report.error {
        eprintln!("fenceline hook: {e} (reported as a raw event)");
    }
    match send(socket, &report.encode(), deadline) {
        Ok(()) => HookOutcome::Sent,
        Err(e) => fail(format!(
            "cannot reach the daemon at {}: {e}",
            socket.display()
        )),
    }
}

/// Reads stdin until EOF or `until`, keeping at most one byte more than
/// [`fenceline_proto::domxml::MAX_INPUT`] (the rest is read and discarded, so libvirt's
/// writer never sees a broken pipe).
fn read_stdin(until: Instant) -> Result<Vec<u8>, String> {
    let mut stdin = std::io::stdin().lock();
    let fd = stdin.as_raw_fd();
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "stdin not closed within the time limit ({} bytes read)",
                kept.len()
            ));
        }
        if !poll_fd(fd, libc::POLLIN, left)? {
            continue;
        }
        match stdin.read(&mut buf) {
            Ok(0) => return Ok(kept),
            Ok(n) => {
                let room = (fenceline_proto::domxml::MAX_INPUT + 1).saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Sends one datagram before `deadline`, waiting (poll) while the daemon's
/// queue is full.
fn send(socket: &Path, msg: &[u8], deadline: Instant) -> std::io::Result<()> {
    let s = UnixDatagram::unbound()?;
    s.connect(socket)?;
    s.set_nonblocking(true)?;
    loop {
        match s.send(msg) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the daemon did not take the event within the time limit",
                    ));
                }
                poll_fd(s.as_raw_fd(), libc::POLLOUT, left).map_err(std::io::Error::other)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// poll(2) on one fd for at most `timeout`; true when it is ready (or hung up).
fn poll_fd(fd: i32, events: libc::c_short, timeout: Duration) -> Result<bool, String> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
    // SAFETY: `p` is one valid pollfd for the duration of the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(format!("poll: {e}"));
    }
    Ok(rc > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_without_daemon_exits_quickly_with_not_sent() {
        let d = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        // stdin of the test harness may be a terminal or /dev/null; the send
        // must fail fast either way (socket absent).
        let out = send(
            &d.path().join("absent.sock"),
            b"{}",
            Instant::now() + HOOK_DEADLINE,
        );
        assert!(out.is_err());
        assert!(t0.elapsed() < Duration::from_millis(200));
    }

    #[test]
    fn a_full_daemon_queue_ends_at_the_deadline() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("h.sock");
        // Bound but never read: the kernel queue fills, then sends time out.
        let _server = UnixDatagram::bind(&path).unwrap();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(300);
        let mut last = Ok(());
        for _ in 0..100 {
            last = send(&path, b"{}", deadline);
            if last.is_err() {
                break;
            }
        }
        let e = last.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_millis(800),
            "{took:?}"
        );
    }
}
