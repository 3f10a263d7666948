//! The hook intake driver: receives [`HookReport`] datagrams from
//! `fenceline hook` on the hook socket and feeds them to the model.
//!
//! - The socket is a Unix datagram socket, mode 0600 (libvirtd runs hooks as
//!   root), created with its directory; a stale socket file is replaced, a
//!   live one (another daemon) is an error.
//! - The reader never waits for the engine: it drains the socket into a
//!   bounded queue and counts what does not fit, so senders never stall and
//!   every loss is visible (`dropped_hook_events`). A forwarder task moves
//!   the queue into the engine with back-pressure.
//! - Anything that is not a valid report (too long, not JSON, wrong version)
//!   is dropped, counted and logged (rate-limited).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::InputTx;
use crate::engine::model::{DropKind, Input};
use fenceline_proto::api::now_millis;
use fenceline_proto::hook::{HookReport, MAX_DATAGRAM};
use fenceline_proto::ratelimit::RateLimit;

/// Settings of the intake.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    pub socket: PathBuf,
    /// Reports queued between the socket and the engine.
    pub queue: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: another process is bound to the hook socket (a second daemon?)")]
    InUse { path: PathBuf },
}

/// A bound hook socket.
pub struct HookSocket {
    sock: UnixDatagram,
    path: PathBuf,
}

impl HookSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds the hook socket (mode 0600). Must run inside a tokio runtime.
pub fn bind(path: &Path) -> Result<HookSocket, IntakeError> {
    let io = |source| IntakeError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        // Someone bound there? A connect to a dead socket file is refused.
        let probe = std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.connect(path));
        if probe.is_ok() {
            return Err(IntakeError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let sock = UnixDatagram::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(HookSocket {
        sock,
        path: path.to_path_buf(),
    })
}

/// Counters of the intake (monotonic).
#[derive(Debug, Default)]
pub struct IntakeStats {
    pub received: AtomicU64,
    pub malformed: AtomicU64,
    pub queue_full: AtomicU64,
}

/// Receives until `cancel`; removes the socket file on the way out.
pub async fn run(
    socket: HookSocket,
    queue: usize,
    inputs: InputTx,
    cancel: CancellationToken,
    stats: Arc<IntakeStats>,
) {
    let (tx, rx) = mpsc::channel::<Input>(queue.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    let fwd = tokio::spawn(forward(rx, inputs, dropped.clone(), cancel.clone()));
    let HookSocket { sock, path } = socket;
    read_loop(&sock, &tx, &dropped, &stats, &cancel).await;
    drop(tx);
    let _ = fwd.await;
    let _ = std::fs::remove_file(&path);
}

async fn read_loop(
    sock: &UnixDatagram,
    tx: &mpsc::Sender<Input>,
    dropped: &AtomicU64,
    stats: &IntakeStats,
    cancel: &CancellationToken,
) {
    // One byte more than the limit: a longer datagram arrives truncated to
    // MAX + 1 bytes and is recognised as oversized.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    // At most one warning per second; the next one carries the count.
    let mut warn = RateLimit::new(Duration::from_secs(1), 1);
    loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv(&mut buf) => match r {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "hook socket receive failed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        let report = match HookReport::decode(&buf[..n]) {
            Ok(r) => r,
            Err(e) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = warn.allow((), Instant::now()) {
                    tracing::warn!(bytes = n, error = %e, suppressed, "malformed hook report dropped");
                }
                continue;
            }
        };
        tracing::debug!(network = %report.network, op = %report.op, "hook report");
        let input = Input::Hook {
            at: now_millis(),
            call: report.into_call(),
        };
        if tx.try_send(input).is_err() {
            stats.queue_full.fetch_add(1, Ordering::Relaxed);
            dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = warn.allow((), Instant::now()) {
                tracing::warn!(suppressed, "hook queue full: hook event dropped");
            }
        }
    }
}

/// Moves queued reports into the engine and reports drops.
async fn forward(
    mut rx: mpsc::Receiver<Input>,
    inputs: InputTx,
    dropped: Arc<AtomicU64>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => None,
            x = rx.recv() => match x {
                Some(i) => Some(i),
                None => return,
            },
            _ = tick.tick() => None,
        };
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0
            && !inputs
                .send(Input::Dropped {
                    at: now_millis(),
                    what: DropKind::HookEvents,
                    count: lost,
                })
                .await
        {
            return;
        }
        match next {
            Some(i) => {
                let sent = inputs.send(i).await;
                if !sent {
                    return;
                }
            }
            None if cancel.is_cancelled() => return,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fenceline_proto::hook::data::HookArgs;

    async fn recv_input(rx: &mut mpsc::Receiver<Input>) -> Input {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an input within 5 s")
            .expect("channel open")
    }

    #[tokio::test]
    async fn reports_reach_the_engine_and_garbage_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/hook.sock");
        let sock = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second bind while the first lives is refused.
        assert!(matches!(bind(&path), Err(IntakeError::InUse { .. })));
        let (inputs, mut rx) = InputTx::channel(16);
        let cancel = CancellationToken::new();
        let stats = Arc::new(IntakeStats::default());
        let task = tokio::spawn(run(sock, 8, inputs, cancel.clone(), stats.clone()));

        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let args = HookArgs::parse(&["n1", "started", "begin", "-"]).unwrap();
        let r = HookReport::build(&args, Ok(b"<hookData/>"), 7);
        client.send_to(&r.encode(), &path).unwrap();
        match recv_input(&mut rx).await {
            Input::Hook { call, .. } => assert_eq!(call, r.clone().into_call()),
            other => panic!("{other:?}"),
        }
        // (Two datagrams fit the kernel's queue even before the intake reads.)
        client.send_to(b"garbage", &path).unwrap();
        client
            .send_to(&vec![b'{'; MAX_DATAGRAM + 100], &path)
            .unwrap();
        let mut lost = 0;
        while lost < 2 {
            match recv_input(&mut rx).await {
                Input::Dropped {
                    what: DropKind::HookEvents,
                    count,
                    ..
                } => lost += count,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(lost, 2);
        assert_eq!(stats.malformed.load(Ordering::Relaxed), 2);
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(!path.exists(), "socket file removed on shutdown");
    }

    #[tokio::test]
    async fn a_full_queue_counts_every_lost_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.sock");
        let sock = bind(&path).unwrap();
        // The engine side never reads: capacity 1, so nearly all must be counted.
        let (inputs, mut rx) = InputTx::channel(1);
        let cancel = CancellationToken::new();
        let stats = Arc::new(IntakeStats::default());
        let task = tokio::spawn(run(sock, 4, inputs, cancel.clone(), stats.clone()));
        let client = std::os::unix::net::UnixDatagram::unbound().unwrap();
        // The kernel queues only a few datagrams (net.unix.max_dgram_qlen,
        // 10 by default): send without blocking and let the intake run.
        client.set_nonblocking(true).unwrap();
        let args = HookArgs::parse(&["n1", "updated", "begin", "-"]).unwrap();
        let bytes = HookReport::build(&args, Ok(b"<hookData/>"), 1).encode();
        let mut sent = 0;
        while sent < 200 {
            match client.send_to(&bytes, &path) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        // Every datagram is read (none waits in the socket).
        let t0 = Instant::now();
        while stats.received.load(Ordering::Relaxed) < 200 && t0.elapsed() < Duration::from_secs(5)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.received.load(Ordering::Relaxed), 200);
        let full = stats.queue_full.load(Ordering::Relaxed);
        assert!(full >= 190, "{full}");
        // Drain: delivered + counted = sent.
        let mut delivered = 0u64;
        let mut counted = 0u64;
        while delivered + counted < 200 {
            match recv_input(&mut rx).await {
                Input::Hook { .. } => delivered += 1,
                Input::Dropped { count, .. } => counted += count,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delivered + counted, 200);
        assert_eq!(counted, full);
        cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}
