//! Refusal accounting: why a request was refused before any action, the
//! drop counter that hands the engine one `Input::Dropped` per second at
//! most, and the rate-limited warning per refusal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::MAX_CONCURRENT;
use crate::engine::InputTx;
use crate::engine::model::{DropKind, Input};
use fenceline_proto::api::now_millis;
use fenceline_proto::fence_xvm::{self, REQ_LEN};
use fenceline_proto::ratelimit::RateLimit;

/// Warnings per second per listener; the rest are summed into the next one
/// (the counter has every drop anyway).
const LOGS_PER_SECOND: u32 = 10;

/// Why a request was refused before any action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Length(usize),
    Garbage(String),
    Signature(fence_xvm::VerifyError),
    Duplicate,
    /// An exact copy of a request verified earlier (any listener).
    Replay(Duration),
    /// A request in another listener's format (callback fields set on
    /// tcp/vsock).
    WrongListener,
    /// A connect-back destination the rules refuse.
    Destination(String),
    InFlight,
    Busy,
    /// Too many connections of one listener still waiting for their request.
    PreAuthBusy(usize),
    /// Too many of those from one source.
    SourceBusy(usize),
    /// One source already holds this many serving slots.
    SourceServing(usize),
    /// One source sent more than this many requests in the last second.
    SourceRate(u32),
    NoCallback,
    /// No fenceline node could be agreed on to connect back (nobody here does).
    Unclaimed(String),
    ConnectBack(String),
    Handshake(String),
    RequestRead(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Length(n) if *n < REQ_LEN => {
                write!(f, "truncated request ({n} bytes, need 176)")
            }
            Refusal::Length(n) => write!(f, "oversized request ({n} bytes, need 176)"),
            Refusal::Garbage(why) => write!(f, "malformed request: {why}"),
            Refusal::Signature(e) => write!(f, "signature refused: {e}"),
            Refusal::Duplicate => f.write_str("duplicate of a request answered in the last 10 s"),
            Refusal::Replay(age) => write!(
                f,
                "replay: an exact copy of a request verified {} s ago",
                age.as_secs()
            ),
            Refusal::WrongListener => f.write_str(
                "a multicast request (callback address set) sent to a tcp/vsock listener",
            ),
            Refusal::Destination(why) => write!(f, "connect-back refused: {why}"),
            Refusal::InFlight => f.write_str("duplicate of a request still being handled"),
            Refusal::Busy => write!(f, "{MAX_CONCURRENT} requests already in progress"),
            Refusal::PreAuthBusy(n) => {
                write!(f, "{n} connections already waiting for their request")
            }
            Refusal::SourceBusy(n) => write!(
                f,
                "{n} connections from this source already waiting for their request"
            ),
            Refusal::SourceServing(n) => {
                write!(f, "{n} requests from this source already in progress")
            }
            Refusal::SourceRate(n) => {
                write!(f, "more than {n} requests from this source in one second")
            }
            Refusal::NoCallback => f.write_str("no usable callback address in the request"),
            Refusal::Unclaimed(why) => write!(f, "not connecting back: {why}"),
            Refusal::ConnectBack(e) => write!(f, "connect-back failed: {e}"),
            Refusal::Handshake(e) => write!(f, "challenge/response failed: {e}"),
            Refusal::RequestRead(e) => write!(f, "no request: {e}"),
        }
    }
}

/// Counts refused packets and hands the engine one `Input::Dropped` per
/// second at most.
#[derive(Clone)]
pub(crate) struct DropCounter {
    pending: Arc<AtomicU64>,
}

impl DropCounter {
    pub(crate) fn spawn(input_tx: InputTx, cancel: CancellationToken) -> Self {
        let pending = Arc::new(AtomicU64::new(0));
        let p = pending.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stop = tokio::select! {
                    _ = tick.tick() => false,
                    _ = cancel.cancelled() => true,
                };
                let n = p.swap(0, Ordering::Relaxed);
                if n > 0
                    && !input_tx.try_send(Input::Dropped {
                        at: now_millis(),
                        what: DropKind::FencePackets,
                        count: n,
                    })
                {
                    p.fetch_add(n, Ordering::Relaxed);
                }
                if stop {
                    return;
                }
            }
        });
        Self { pending }
    }

    pub(crate) fn add(&self, n: u64) {
        self.pending.fetch_add(n, Ordering::Relaxed);
    }
}

/// One listener's refusals: counted for the engine, logged rate-limited.
pub(crate) struct Refusals {
    listener: &'static str,
    drops: DropCounter,
    log: Mutex<RateLimit>,
}

impl Refusals {
    pub(crate) fn new(
        listener: &'static str,
        input_tx: InputTx,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            listener,
            drops: DropCounter::spawn(input_tx, cancel),
            log: Mutex::new(RateLimit::new(Duration::from_secs(1), LOGS_PER_SECOND)),
        }
    }

    /// Logs a warning under the same rate limit, without counting a drop.
    pub(crate) fn warn(&self, msg: &str) {
        let allowed = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow((), Instant::now());
        if allowed.is_some() {
            tracing::warn!(listener = self.listener, "{msg}");
        }
    }

    /// Counts a refused request and logs it (at most [`LOGS_PER_SECOND`]).
    pub(crate) fn refuse(&self, from: &str, why: &Refusal) {
        self.drops.add(1);
        let allowed = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow((), Instant::now());
        match allowed {
            None => {}
            Some(0) => {
                tracing::warn!(
                    listener = self.listener,
                    from,
                    "fence request dropped: {why}"
                )
            }
            Some(more) => tracing::warn!(
                listener = self.listener,
                from,
                "fence request dropped: {why} ({more} more drops not logged)"
            ),
        }
    }
}
