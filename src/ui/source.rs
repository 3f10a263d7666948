//! The daemon side of the console: two streams on one control socket, a
//! `watch` (snapshots as they change, coalesced by the daemon) and an
//! `events --follow` (backlog, then live), turned into [`Msg`]s. When either
//! stream fails both are dropped, the app hears [`Msg::Disconnected`], and the
//! source reconnects with backoff (200 ms doubling to 5 s, ±20 % jitter) until
//! cancelled.
//! Fence requests go out on their own short connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::app::{FenceOutcome, Msg};
use crate::engine::control::client::{Client, WATCH_READ_TIMEOUT};
use fenceline_proto::api::{FenceOp, Reply, Request};
use fenceline_proto::backoff::Backoff;

/// Coalescing interval asked of the daemon's `watch`.
pub const WATCH_INTERVAL_MS: u64 = 50;
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a fence request may take: the engine's own limit plus margin.
pub const FENCE_WAIT: Duration =
    Duration::from_secs(fenceline_proto::api::FENCE_CALL_LIMIT.as_secs() + 10);

/// Runs until `cancel` or until the app stops listening.
pub async fn run(socket: PathBuf, tx: mpsc::Sender<Msg>, cancel: CancellationToken) {
    let mut backoff = Backoff::with_entropy(BACKOFF_FIRST, BACKOFF_MAX);
    loop {
        let (reason, was_up) = match attach(&socket, &tx, &cancel).await {
            Ok(()) => return,
            Err(e) => e,
        };
        if was_up {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        let msg = Msg::Disconnected {
            reason,
            retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        };
        if tx.send(msg).await.is_err() {
            return;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One attachment. `Ok` = cancelled; `Err((reason, was attached))`.
async fn attach(
    socket: &Path,
    tx: &mpsc::Sender<Msg>,
    cancel: &CancellationToken,
) -> Result<(), (String, bool)> {
    let down = |e: String| (e, false);
    let mut watch = Client::watch(socket, Some(WATCH_INTERVAL_MS))
        .await
        .map_err(|e| down(e.to_string()))?;
    let first = match watch.next(Some(WATCH_READ_TIMEOUT)).await {
        Ok(Reply::Status { snapshot }) => snapshot,
        Ok(Reply::Error { code, message }) => return Err(down(format!("{code}: {message}"))),
        Ok(other) => return Err(down(format!("unexpected reply {other:?}"))),
        Err(e) => return Err(down(e.to_string())),
    };
    let mut events = Client::connect(socket)
        .await
        .map_err(|e| down(e.to_string()))?;
    events
        .send(&Request::Events { follow: true })
        .await
        .map_err(|e| down(e.to_string()))?;
    if tx.send(Msg::Connected).await.is_err() || tx.send(Msg::Snapshot(first)).await.is_err() {
        return Ok(());
    }
    let stop = cancel.child_token();
    // Each stream reads in its own task: a line read must never be cut
    // short by the other stream's progress (reads are not cancel-safe).
    let mut w = tokio::spawn(pump(watch, true, tx.clone(), stop.clone()));
    let mut e = tokio::spawn(pump(events, false, tx.clone(), stop.clone()));
    let r = tokio::select! {
        r = &mut w => r,
        r = &mut e => r,
    };
    stop.cancel();
    w.abort();
    e.abort();
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(reason)) => Err((reason, true)),
        Err(join) => Err((format!("stream task failed: {join}"), true)),
    }
}

/// Forwards one stream's replies; `Ok` when stopped or the app is gone.
async fn pump(
    mut c: Client,
    watch: bool,
    tx: mpsc::Sender<Msg>,
    stop: CancellationToken,
) -> Result<(), String> {
    let timeout = watch.then_some(WATCH_READ_TIMEOUT);
    loop {
        let reply = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = c.next(timeout) => r.map_err(|e| e.to_string())?,
        };
        let msg = match reply {
            Reply::Status { snapshot } => Msg::Snapshot(snapshot),
            Reply::Event { event } => Msg::Event(Box::new(event)),
            Reply::BacklogEnd => Msg::BacklogEnd,
            Reply::Dropped { count } => Msg::EventsDropped(count),
            Reply::Pong { .. } => continue,
            Reply::Error { code, message } => return Err(format!("{code}: {message}")),
            Reply::Fence { .. } | Reply::Confirmed { .. } => continue,
        };
        if tx.send(msg).await.is_err() {
            return Ok(());
        }
    }
}

/// Sends one fence request on its own connection and waits for the answer.
pub async fn fence(socket: &Path, op: FenceOp, domain: &str) -> Result<FenceOutcome, String> {
    let mut c = Client::connect(socket).await.map_err(|e| e.to_string())?;
    c.send(&Request::Fence {
        action: op,
        domain: domain.to_string(),
    })
    .await
    .map_err(|e| e.to_string())?;
    match c.next(Some(FENCE_WAIT)).await {
        Ok(Reply::Fence {
            result,
            acted_by,
            duration_ms,
            detail,
        }) => Ok(FenceOutcome {
            result,
            acted_by,
            duration_ms,
            detail,
        }),
        Ok(Reply::Error { code, message }) => Err(format!("refused ({code}): {message}")),
        Ok(other) => Err(format!("unexpected reply {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Sends one `confirm` (a departed node is down) on its own connection and
/// waits for the answer: what was asserted, or why not.
pub async fn confirm(socket: &Path, node: &str) -> Result<String, String> {
    let mut c = Client::connect(socket).await.map_err(|e| e.to_string())?;
    c.send(&Request::Confirm {
        node: node.to_string(),
    })
    .await
    .map_err(|e| e.to_string())?;
    match c.next(Some(FENCE_WAIT)).await {
        Ok(Reply::Confirmed { detail }) => Ok(detail),
        Ok(Reply::Error { code, message }) => Err(format!("refused ({code}): {message}")),
        Ok(other) => Err(format!("unexpected reply {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}
