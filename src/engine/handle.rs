//! What drivers and clients hold: [`InputTx`] (the bounded, drop-counting
//! input channel into the state task) and [`EngineHandle`] (snapshots,
//! event subscriptions, fence calls).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::model::{CLAIM_TIMEOUT_MS, ClaimOutcome, Input};
use fenceline_proto::api::{Event, FenceOp, FenceResult, NodeId, Snapshot};

/// The sending side drivers use to feed the engine. Cloneable.
#[derive(Clone)]
pub struct InputTx {
    tx: mpsc::Sender<Input>,
    pub(super) dropped: Arc<AtomicU64>,
}

impl InputTx {
    /// Sends with back-pressure (async drivers). Returns false when the engine is gone.
    pub async fn send(&self, input: Input) -> bool {
        self.tx.send(input).await.is_ok()
    }

    /// Sends with back-pressure from a plain thread (libvirt workers).
    /// Must not be called from inside a tokio runtime.
    pub fn blocking_send(&self, input: Input) -> bool {
        self.tx.blocking_send(input).is_ok()
    }

    /// Never blocks; a full channel counts a drop (shown in the counters).
    pub fn try_send(&self, input: Input) -> bool {
        match self.tx.try_send(input) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Builds a standalone channel pair (tests and tools).
    pub fn channel(capacity: usize) -> (InputTx, mpsc::Receiver<Input>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            InputTx {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }
}

/// A fence request as a listener or the control socket hands it to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceCall {
    /// `Off`, `On`, `Reboot` or `Status`; the listeners answer `Null`,
    /// `Monitor` and `List` themselves.
    pub op: FenceOp,
    /// VM name or UUID as the client sent it.
    pub domain: String,
    /// Who asked, for the audit log and events (`multicast:10.0.0.5`,
    /// `multicast:g1 (10.0.0.5)` when `requester_names` names it, ...).
    pub source: String,
}

/// The engine's answer to a [`FenceCall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceAnswer {
    pub result: FenceResult,
    /// The node that acted or answered, when one did.
    pub acted_by: Option<NodeId>,
    pub duration_ms: u64,
    /// Why, for failures and refusals (also logged and in the event).
    pub detail: Option<String>,
}

impl FenceAnswer {
    pub fn fail(detail: impl Into<String>) -> Self {
        Self {
            result: FenceResult::Fail,
            acted_by: None,
            duration_ms: 0,
            detail: Some(detail.into()),
        }
    }
}

use super::model::FenceRules;

/// Queries the state task answers.
pub(super) enum Query {
    /// Route a fence request through the cluster; the answer comes back on
    /// the oneshot.
    Fence(FenceCall, oneshot::Sender<FenceAnswer>),
    /// The event backlog plus a live subscription taken at the same instant,
    /// so a follower sees no gap and no duplicate.
    Subscribe(oneshot::Sender<(Vec<Event>, broadcast::Receiver<Event>)>),
    /// Count events a subscriber missed.
    SubscriberLagged(u64),
    /// May this node connect back for a multicast run: (run id, domain).
    Claim(String, String, oneshot::Sender<ClaimOutcome>),
    /// An operator confirms a departed node down: (node, source).
    Confirm(String, String, oneshot::Sender<Result<String, String>>),
    /// Liveness: answered from the state task's loop (the watchdog).
    Ping(oneshot::Sender<()>),
}

/// What the UI, the CLI and the control socket hold.
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) snapshot: watch::Receiver<Arc<Snapshot>>,
    pub(super) queries: mpsc::Sender<Query>,
    /// The router's timeouts: a fence call waits for its op's wait plus a
    /// margin (the router always answers first).
    pub(super) rules: FenceRules,
}

impl EngineHandle {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that wakes on every new snapshot.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// The recent events and a live subscription, without gap or duplicate.
    pub async fn subscribe(&self) -> Option<(Vec<Event>, broadcast::Receiver<Event>)> {
        let (tx, rx) = oneshot::channel();
        self.queries.send(Query::Subscribe(tx)).await.ok()?;
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .ok()?
            .ok()
    }

    /// Routes a fence request through the cluster (owner acts) and waits for
    /// the answer. Never hangs: every path ends in an answer or a failure.
    pub async fn fence(&self, call: FenceCall) -> FenceAnswer {
        let (tx, rx) = oneshot::channel();
        let call_op = call.op;
        if self.queries.send(Query::Fence(call, tx)).await.is_err() {
            return FenceAnswer::fail("the engine is not running");
        }
        let limit = Duration::from_millis(self.rules.call_limit_ms(call_op));
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => FenceAnswer::fail("the engine dropped the request"),
            Err(_) => FenceAnswer::fail("the engine did not answer in time"),
        }
    }

    /// Whether this node connects back for the fence_xvm run `claim` (a
    /// request for `domain`): one fenceline node per run, agreed over the
    /// own CPG group (`model/fence/claim.rs`). Never hangs.
    pub async fn claim(&self, claim: String, domain: String) -> ClaimOutcome {
        let (tx, rx) = oneshot::channel();
        if self
            .queries
            .send(Query::Claim(claim, domain, tx))
            .await
            .is_err()
        {
            return ClaimOutcome::Unavailable("the engine is not running".into());
        }
        // The model answers within its own timeout; this bounds the wait
        // should the state task be stuck.
        let limit = Duration::from_millis(CLAIM_TIMEOUT_MS * 2);
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(o)) => o,
            Ok(Err(_)) => ClaimOutcome::Unavailable("the engine dropped the claim".into()),
            Err(_) => {
                ClaimOutcome::Unavailable("the engine did not decide the claim in time".into())
            }
        }
    }

    /// An operator confirms that a departed node is down: what was
    /// confirmed, or why it was refused.
    pub async fn confirm(&self, node: String, source: String) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        if self
            .queries
            .send(Query::Confirm(node, source, tx))
            .await
            .is_err()
        {
            return Err("the engine is not running".into());
        }
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(r)) => r,
            _ => Err("the engine did not answer".into()),
        }
    }

    /// True when the state task answers within `limit` (a hung state task
    /// does not; systemd's watchdog pings depend on it).
    pub async fn alive(&self, limit: Duration) -> bool {
        let (tx, rx) = oneshot::channel();
        let ask = async { self.queries.send(Query::Ping(tx)).await.is_ok() && rx.await.is_ok() };
        tokio::time::timeout(limit, ask).await.unwrap_or(false)
    }

    /// Reports that a subscriber missed `n` events (counted in the snapshot).
    pub fn report_lag(&self, n: u64) {
        let _ = self.queries.try_send(Query::SubscriberLagged(n));
    }
}
