//! systemd's notify protocol (`Type=notify`): READY=1 once this host can
//! fence (corosync joined in both CPG groups, the first complete libvirt
//! inventory, every configured listener bound), STATUS= lines kept current,
//! and WATCHDOG=1 at half of `WATCHDOG_USEC`, sent only while the state
//! task answers (a hung state task stops the pings and systemd restarts
//! the daemon). A few lines over a non-blocking datagram socket; a failed
//! send is logged at debug level and never delays anything.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::engine::EngineHandle;
use fenceline_proto::api::{ListenerState, ListenerView, Snapshot};
use fenceline_proto::display::count;

/// The socket systemd gave us (`NOTIFY_SOCKET`; `@name` is abstract).
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// `None` when not started by systemd (no `NOTIFY_SOCKET`) or when the
    /// variable is unusable (logged).
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        match Self::open(&path) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(socket = ?path, "NOTIFY_SOCKET unusable ({e}); no readiness notification");
                None
            }
        }
    }

    fn open(path: &std::ffi::OsStr) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_bytes();
        let addr = match bytes.split_first() {
            Some((b'@', name)) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            Some((b'/', _)) => SocketAddr::from_pathname(path)?,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "neither a path nor an abstract name",
                ));
            }
        };
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(Self { sock, addr })
    }

    /// Sends one message; never blocks.
    pub fn send(&self, msg: &str) {
        if let Err(e) = self.sock.send_to_addr(msg.as_bytes(), &self.addr) {
            tracing::debug!("sd_notify {msg:?} not sent: {e}");
        }
    }
}

/// Half of `WATCHDOG_USEC` when the watchdog is on for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Everything READY=1 waits for, or the first thing missing.
pub fn not_ready(snap: &Snapshot, listeners_configured: usize) -> Option<String> {
    if !snap.corosync.connected {
        return Some("corosync down".into());
    }
    if !snap.local.fence_group || !snap.local.own_group {
        return Some("joining the CPG groups".into());
    }
    if !snap.local.inventory_complete {
        return Some("waiting for the libvirt inventory".into());
    }
    let l = &snap.local.listeners;
    if l.len() < listeners_configured || l.iter().any(|v| v.state != ListenerState::Bound) {
        return Some("waiting for the fence listeners".into());
    }
    None
}

/// `3/3 members, 9 VMs, listeners: multicast@virbr0`, led by what keeps
/// this host from fencing ("corosync down; ...").
pub fn status_line(snap: &Snapshot) -> String {
    let s = counts_line(snap);
    match snap.cannot_fence(false) {
        Some(why) => format!("{why}; {s}"),
        None => s,
    }
}

/// Members, VMs and listeners.
fn counts_line(snap: &Snapshot) -> String {
    let members = snap.nodes.iter().filter(|n| n.member).count();
    let mut s = format!(
        "{members}/{} members, {}, ",
        snap.nodes.len(),
        count(snap.domains.len(), "VM")
    );
    if snap.local.listeners.is_empty() {
        s.push_str("no fence listener");
    } else {
        let l: Vec<String> = snap.local.listeners.iter().map(listener_short).collect();
        s.push_str("listeners: ");
        s.push_str(&l.join(", "));
    }
    s
}

/// `multicast@virbr0` when bound, else `multicast: waiting for interface virbr0`.
fn listener_short(v: &ListenerView) -> String {
    let at = v.at.rsplit_once(" on ").map_or(v.at.as_str(), |(_, i)| i);
    match (v.state, &v.detail) {
        (ListenerState::Bound, _) => format!("{}@{at}", v.name),
        (_, Some(d)) => format!("{}: {d}", v.name),
        (_, None) => format!("{}@{at}: not bound", v.name),
    }
}

/// Follows the snapshots until cancelled: READY=1 once, STATUS= on every
/// change of the line, WATCHDOG=1 while the state task answers.
pub async fn run(
    notifier: Notifier,
    engine: EngineHandle,
    listeners_configured: usize,
    cancel: CancellationToken,
) {
    let mut snaps = engine.watch();
    let watchdog = watchdog_interval();
    let mut ping = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ready = false;
    let mut last = String::new();
    loop {
        let snap = snaps.borrow_and_update().clone();
        let mut line = status_line(&snap);
        if !ready {
            match not_ready(&snap, listeners_configured) {
                None => {
                    ready = true;
                    tracing::info!("ready: {line}");
                    notifier.send(&format!("READY=1\nSTATUS={line}"));
                    last = line.clone();
                }
                Some(why) => line = format!("starting, {why}: {}", counts_line(&snap)),
            }
        }
        if line != last {
            notifier.send(&format!("STATUS={line}"));
            last = line;
        }
        tokio::select! {
            _ = cancel.cancelled() => {
                notifier.send("STOPPING=1\nSTATUS=stopping");
                return;
            }
            r = snaps.changed() => if r.is_err() { return },
            _ = ping.tick(), if watchdog.is_some() => {
                let limit = watchdog.unwrap_or_default();
                if engine.alive(limit).await {
                    notifier.send("WATCHDOG=1");
                } else {
                    tracing::error!("the state task did not answer within {limit:?}; no watchdog ping");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abstract_and_path_sockets_receive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        Notifier::open(p.as_os_str()).unwrap().send("READY=1");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("fenceline-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        Notifier::open(format!("@{name}").as_ref())
            .unwrap()
            .send("WATCHDOG=1");
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        assert!(Notifier::open("relative".as_ref()).is_err());
    }

    #[test]
    fn listener_short_names() {
        let v = |state, detail: Option<&str>| ListenerView {
            name: "multicast".into(),
            at: "225.0.0.12:1229 on virbr0".into(),
            state,
            detail: detail.map(Into::into),
        };
        assert_eq!(
            listener_short(&v(ListenerState::Bound, None)),
            "multicast@virbr0"
        );
        assert_eq!(
            listener_short(&v(
                ListenerState::Waiting,
                Some("waiting for interface virbr0")
            )),
            "multicast: waiting for interface virbr0"
        );
    }
}
