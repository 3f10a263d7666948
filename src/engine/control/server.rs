//! The control-socket server.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use super::access::{self, Peer, SocketAccess};
use super::framing::{encode_line, read_line_bounded};
use super::streams::{Refusals, StreamSlot, Streams};
use crate::engine::{EngineHandle, FenceAnswer, FenceCall};
use fenceline_proto::api::{
    FenceOp, MAX_REQUEST_LINE, Reply, Request, WATCH_DEFAULT_MS, WATCH_HEARTBEAT_MS, WATCH_MAX_MS,
    WATCH_MIN_MS,
};

/// How long a client may take to send a request line.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent connections per socket.
const MAX_CONNECTIONS: usize = 64;
/// How often a streaming connection checks whether its client hung up.
const HANGUP_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{path}: another fenceline daemon is already listening here")]
    InUse { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Both bound sockets.
pub struct ControlSockets {
    rw: (UnixListener, PathBuf),
    ro: (UnixListener, PathBuf),
    access: Arc<SocketAccess>,
}

/// Binds the read-write (0600) and read-only (0660, root only) sockets. A
/// stale socket file is replaced; a live one (another daemon) is an error.
pub async fn bind(rw: &Path, ro: &Path) -> Result<ControlSockets, BindError> {
    bind_with(rw, ro, SocketAccess::root_only()).await
}

/// [`bind`] with the access settings: the read-only socket's group, the
/// read-write socket's admin group, the stream cap.
pub async fn bind_with(
    rw: &Path,
    ro: &Path,
    access: SocketAccess,
) -> Result<ControlSockets, BindError> {
    let rw_l = bind_one(rw, 0o600, None).await?;
    let ro_l = bind_one(ro, 0o660, access.readonly_gid).await?;
    Ok(ControlSockets {
        rw: (rw_l, rw.to_path_buf()),
        ro: (ro_l, ro.to_path_buf()),
        access: Arc::new(access),
    })
}

async fn bind_one(path: &Path, mode: u32, gid: Option<u32>) -> Result<UnixListener, BindError> {
    let io = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    let refuse = |why: String| {
        io(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            why,
        ))
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        if std::fs::symlink_metadata(dir).is_err() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(io)?;
        }
        access::check_dir(dir).map_err(refuse)?;
    }
    if access::existing(path).map_err(refuse)? == access::Existing::Socket {
        let probe =
            tokio::time::timeout(Duration::from_millis(500), UnixStream::connect(path)).await;
        if matches!(probe, Ok(Ok(_))) {
            return Err(BindError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let l = access::bind_tight(path, mode, gid).map_err(io)?;
    l.set_nonblocking(true).map_err(io)?;
    UnixListener::from_std(l).map_err(io)
}

/// Serves both sockets until `cancel`; removes the socket files on the way out.
pub async fn serve(sockets: ControlSockets, engine: EngineHandle, cancel: CancellationToken) {
    let ControlSockets { rw, ro, access } = sockets;
    let streams = Streams::new(access.max_streams_per_uid);
    let a = tokio::spawn(accept_loop(
        rw.0,
        Some(access.admin_gid),
        streams.clone(),
        engine.clone(),
        cancel.clone(),
    ));
    let b = tokio::spawn(accept_loop(ro.0, None, streams, engine, cancel.clone()));
    let _ = tokio::join!(a, b);
    for p in [rw.1, ro.1] {
        let _ = std::fs::remove_file(p);
    }
}

/// `admin`: `Some(admin group)` on the read-write socket, whose peers are
/// checked on every connection; `None` on the read-only socket.
async fn accept_loop(
    listener: UnixListener,
    admin: Option<Option<u32>>,
    streams: Streams,
    engine: EngineHandle,
    cancel: CancellationToken,
) {
    let readonly = admin.is_none();
    let mut refusals = Refusals::default();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = Peer::of(&stream);
        if let Some(admin_gid) = admin
            && !peer
                .as_ref()
                .is_some_and(|p| access::admin_allowed(p, admin_gid))
        {
            refusals.refuse(peer.as_ref());
            tokio::spawn(async move {
                let mut s = stream;
                let why = "the read-write socket is for root and the admin group; use the read-only socket";
                let _ = write_reply(&mut s, &error("permission-denied", why)).await;
            });
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let mut s = stream;
                let _ = write_reply(&mut s, &error("busy", "too many connections")).await;
            });
            continue;
        };
        let engine = engine.clone();
        let cancel = cancel.clone();
        let streams = streams.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, readonly, engine, streams, cancel).await {
                tracing::debug!(error = %e, ?peer, "control connection ended");
            }
            drop(permit);
        });
    }
}

fn error(code: &str, message: impl Into<String>) -> Reply {
    Reply::Error {
        code: code.into(),
        message: message.into(),
    }
}

async fn write_reply<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    reply: &Reply,
) -> std::io::Result<()> {
    let line = encode_line(reply).map_err(std::io::Error::other)?;
    write_line(w, &line).await
}

async fn write_line<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    line: &[u8],
) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(line)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client does not read",
        )),
    }
}

async fn handle(
    stream: UnixStream,
    readonly: bool,
    engine: EngineHandle,
    streams: Streams,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let peer = stream
        .peer_cred()
        .ok()
        .map(|c| (c.uid(), c.pid().unwrap_or(0)));
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let line = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            l = read_line_bounded(&mut rd, MAX_REQUEST_LINE, Some(READ_TIMEOUT)) => l,
        };
        let line = match line {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = write_reply(&mut wr, &error("bad-request", e.to_string())).await;
                return Err(e);
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let req: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                write_reply(
                    &mut wr,
                    &error("bad-request", format!("not a request: {e}")),
                )
                .await?;
                continue;
            }
        };
        if readonly && req.is_mutating() {
            tracing::warn!(?req, "refused a mutating request on the read-only socket");
            write_reply(
                &mut wr,
                &error(
                    "read-only",
                    "this is the read-only socket; use the read-write socket",
                ),
            )
            .await?;
            continue;
        }
        match req {
            Request::Ping => {
                write_reply(
                    &mut wr,
                    &Reply::Pong {
                        version: env!("CARGO_PKG_VERSION").into(),
                    },
                )
                .await?
            }
            Request::Fence { action, domain } => {
                let source = match &peer {
                    Some((uid, pid)) => format!("control:uid={uid},pid={pid}"),
                    None => "control".to_string(),
                };
                let answer = match action {
                    FenceOp::Off | FenceOp::On | FenceOp::Reboot | FenceOp::Status => {
                        engine
                            .fence(FenceCall {
                                op: action,
                                domain,
                                source,
                            })
                            .await
                    }
                    other => FenceAnswer::fail(format!(
                        "`{other}` is not a fence action here; use off, on, reboot or status"
                    )),
                };
                write_reply(
                    &mut wr,
                    &Reply::Fence {
                        result: answer.result,
                        acted_by: answer.acted_by,
                        duration_ms: answer.duration_ms,
                        detail: answer.detail,
                    },
                )
                .await?
            }
            Request::Confirm { node } => {
                let source = match &peer {
                    Some((uid, pid)) => format!("control:uid={uid},pid={pid}"),
                    None => "control".to_string(),
                };
                let reply = match engine.confirm(node, source).await {
                    Ok(detail) => Reply::Confirmed { detail },
                    Err(message) => error("refused", message),
                };
                write_reply(&mut wr, &reply).await?
            }
            Request::Status => {
                // Serialized straight from the shared snapshot; no copy.
                let snapshot = engine.snapshot();
                write_reply(&mut wr, &Reply::Status { snapshot }).await?
            }
            Request::Events { follow } => {
                let Some((backlog, mut live)) = engine.subscribe().await else {
                    write_reply(&mut wr, &error("internal", "engine is not running")).await?;
                    return Ok(());
                };
                for event in backlog {
                    write_reply(&mut wr, &Reply::Event { event }).await?;
                }
                write_reply(&mut wr, &Reply::BacklogEnd).await?;
                if !follow {
                    continue;
                }
                let Some(_slot) = open_stream(&mut wr, &streams, &peer).await? else {
                    return Ok(());
                };
                loop {
                    let r = tokio::select! {
                        _ = cancel.cancelled() => return Ok(()),
                        // A follower that hangs up frees its slot within a
                        // second, not at the next event.
                        r = until_hangup(&mut rd) => return r,
                        r = live.recv() => r,
                    };
                    match r {
                        Ok(event) => write_reply(&mut wr, &Reply::Event { event }).await?,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            engine.report_lag(n);
                            write_reply(&mut wr, &Reply::Dropped { count: n }).await?
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    }
                }
            }
            Request::Watch { interval_ms } => {
                let every = Duration::from_millis(
                    interval_ms
                        .unwrap_or(WATCH_DEFAULT_MS)
                        .clamp(WATCH_MIN_MS, WATCH_MAX_MS),
                );
                let Some(_slot) = open_stream(&mut wr, &streams, &peer).await? else {
                    return Ok(());
                };
                return watch(&mut rd, &mut wr, &engine, &streams, every, &cancel).await;
            }
        }
    }
}

/// A stream slot for the peer's uid, or a `busy` reply when it has
/// `control.max_streams_per_uid` streams open already.
async fn open_stream<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    streams: &Streams,
    peer: &Option<(u32, i32)>,
) -> std::io::Result<Option<StreamSlot>> {
    let uid = peer.map_or(u32::MAX, |(uid, _)| uid);
    match streams.open(uid) {
        Some(slot) => Ok(Some(slot)),
        None => {
            let why = "too many streams for this user (control.max_streams_per_uid)";
            write_reply(wr, &error("busy", why)).await?;
            Ok(None)
        }
    }
}

/// Streams snapshots: the current one, then the latest after each change, at
/// most one per `every`; a `pong` while nothing changes. Ends when the client
/// hangs up, the engine stops or the daemon shuts down.
async fn watch<W: tokio::io::AsyncWrite + Unpin>(
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut W,
    engine: &EngineHandle,
    streams: &Streams,
    every: Duration,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    let heartbeat = Duration::from_millis(WATCH_HEARTBEAT_MS);
    let mut rx = engine.watch();
    loop {
        let snapshot = rx.borrow_and_update().clone();
        // Encoded once per version, whatever the number of watchers.
        let line = streams.status_line(&snapshot)?;
        write_line(wr, &line).await?;
        let sent = tokio::time::Instant::now();
        // Wait for a change, sending heartbeats while it is quiet.
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                r = until_hangup(rd) => return r,
                r = rx.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    break;
                }
                _ = tokio::time::sleep(heartbeat) => {
                    let pong = Reply::Pong { version: env!("CARGO_PKG_VERSION").into() };
                    write_reply(wr, &pong).await?;
                }
            }
        }
        // Coalesce: whatever else changes before `sent + every` rides along.
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = until_hangup(rd) => return r,
            _ = tokio::time::sleep_until(sent + every) => {}
        }
    }
}

/// Resolves when the client has closed its connection completely (the
/// socket reports a hang-up). A client that only shut down its sending side
/// (a half-close, as `socat` or `nc -N` do) is still reading and keeps its
/// stream. Anything a client sends on a stream is discarded. Cancel-safe.
async fn until_hangup(rd: &mut BufReader<OwnedReadHalf>) -> std::io::Result<()> {
    loop {
        let buffered = rd.buffer().len();
        rd.consume(buffered);
        let ready = rd
            .get_ref()
            .ready(Interest::READABLE | Interest::WRITABLE)
            .await?;
        if ready.is_write_closed() {
            return Ok(());
        }
        if ready.is_readable() && !ready.is_read_closed() {
            let mut sink = [0u8; 4096];
            match rd.get_ref().try_read(&mut sink) {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        // Writable (always) or half-closed: look again in a second.
        tokio::time::sleep(HANGUP_CHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::control::client::Client;
    use crate::engine::model::{Input, ModelConfig};
    use crate::engine::{EffectRoutes, spawn_state};
    use fenceline_proto::api::Snapshot;

    fn status(r: Reply) -> Arc<Snapshot> {
        match r {
            Reply::Status { snapshot } => snapshot,
            other => panic!("expected a status reply, got {other:?}"),
        }
    }

    /// A stream ends when its client hangs up, but not when the client only
    /// half-closes (it is still reading).
    #[tokio::test]
    async fn streams_end_on_hangup_not_on_half_close() {
        let (server, client) = UnixStream::pair().unwrap();
        let (rd, _wr) = server.into_split();
        let mut rd = BufReader::new(rd);
        let client = client.into_std().unwrap();
        std::io::Write::write_all(&mut &client, b"ignored\n").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let r = tokio::time::timeout(Duration::from_millis(2500), until_hangup(&mut rd)).await;
        assert!(r.is_err(), "a half-closed client lost its stream");
        drop(client);
        tokio::time::timeout(Duration::from_millis(2500), until_hangup(&mut rd))
            .await
            .expect("a hang-up is noticed")
            .unwrap();
    }

    /// `watch` on the read-only socket: the current snapshot at once, then a
    /// burst of changes arrives coalesced, not one snapshot per change.
    #[tokio::test]
    async fn watch_streams_coalesced_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let (rw, ro) = (dir.path().join("rw.sock"), dir.path().join("ro.sock"));
        let cancel = CancellationToken::new();
        let (eff_tx, _eff_rx) = tokio::sync::mpsc::channel(1024);
        let (engine, input, _task) = spawn_state(
            ModelConfig::default(),
            EffectRoutes::corosync_only(eff_tx),
            cancel.clone(),
        );
        let sockets = bind(&rw, &ro).await.unwrap();
        let server = tokio::spawn(serve(sockets, engine, cancel.clone()));

        let mut c = Client::connect(&ro).await.unwrap();
        c.send(&Request::Watch {
            interval_ms: Some(300),
        })
        .await
        .unwrap();
        let first = status(c.next(Some(Duration::from_secs(2))).await.unwrap());
        assert!(first.libvirt.is_empty());
        let t0 = tokio::time::Instant::now();
        for i in 0..30 {
            assert!(
                input
                    .send(Input::LibvirtLink {
                        at: 1,
                        uri: format!("test:///n{i}"),
                        connected: true,
                        error: None,
                    })
                    .await
            );
        }
        // Everything within 1.2 s; at most a handful of snapshots for 30 changes.
        let mut got = Vec::new();
        while got
            .last()
            .is_none_or(|s: &Arc<Snapshot>| s.libvirt.len() < 30)
        {
            let left = Duration::from_millis(1200).saturating_sub(t0.elapsed());
            assert!(!left.is_zero(), "the burst did not arrive within 1.2 s");
            got.push(status(c.next(Some(left)).await.unwrap()));
        }
        assert!(
            got.len() <= 3,
            "30 changes gave {} snapshots; not coalesced",
            got.len()
        );
        assert!(got.windows(2).all(|w| w[0].version < w[1].version));
        // The initial snapshot went out just before the burst, so the next
        // one waited out the interval.
        assert!(
            t0.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t0.elapsed()
        );
        drop(c);
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops on cancel")
            .unwrap();
    }
}
