//! The engine: one task owns the [`model::Cluster`] and applies [`model::Input`]s
//! that drivers send; everyone else gets immutable snapshots and a bounded
//! event stream through [`EngineHandle`].
//!
//! Drivers (corosync, libvirt, control) depend on the model and on this
//! module's channel types, never on each other.

pub mod api;
pub mod control;
pub mod corosync;
pub mod fence;
pub mod hooks;
pub mod libvirt;
pub mod model;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use api::{Event, FenceOp, FenceResult, NodeId, Snapshot, now_millis};
use model::{Cluster, DropKind, Effect, Input, ModelConfig};

/// Capacity of the driver → engine input channel.
pub const INPUT_CAPACITY: usize = 4096;
/// Capacity of the engine → corosync effect channel.
pub const EFFECT_CAPACITY: usize = 1024;
/// Capacity of the live event broadcast (per subscriber lag bound).
pub const EVENT_CAPACITY: usize = 4096;

/// The sending side drivers use to feed the engine. Cloneable.
#[derive(Clone)]
pub struct InputTx {
    tx: mpsc::Sender<Input>,
    dropped: Arc<AtomicU64>,
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
    /// Who asked, for the audit log and events (`multicast:10.0.0.5`, ...).
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

/// The longest a [`EngineHandle::fence`] call waits for the engine; the
/// router's own timeouts are shorter, so this only fires if the engine died.
pub const FENCE_CALL_LIMIT: Duration = Duration::from_secs(120);

/// Queries the state task answers.
enum Query {
    /// Route a fence request through the cluster; the answer comes back on
    /// the oneshot.
    Fence(FenceCall, oneshot::Sender<FenceAnswer>),
    /// The event backlog plus a live subscription taken at the same instant,
    /// so a follower sees no gap and no duplicate.
    Subscribe(oneshot::Sender<(Vec<Event>, broadcast::Receiver<Event>)>),
    /// Count events a subscriber missed.
    SubscriberLagged(u64),
}

/// What the UI, the CLI and the control socket hold.
#[derive(Clone)]
pub struct EngineHandle {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    queries: mpsc::Sender<Query>,
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
        if self.queries.send(Query::Fence(call, tx)).await.is_err() {
            return FenceAnswer::fail("the engine is not running");
        }
        match tokio::time::timeout(FENCE_CALL_LIMIT, rx).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => FenceAnswer::fail("the engine dropped the request"),
            Err(_) => FenceAnswer::fail("the engine did not answer in time"),
        }
    }

    /// Reports that a subscriber missed `n` events (counted in the snapshot).
    pub fn report_lag(&self, n: u64) {
        let _ = self.queries.try_send(Query::SubscriberLagged(n));
    }
}

/// Where the state task sends effects. Each driver gets its own receiver.
pub struct EffectRoutes {
    /// STORE_VM and own-group messages: the corosync driver.
    pub corosync: mpsc::Sender<Effect>,
}

/// Starts the state task. Returns the handle and the input sender for drivers.
pub fn spawn_state(
    cfg: ModelConfig,
    routes: EffectRoutes,
    cancel: CancellationToken,
) -> (EngineHandle, InputTx, tokio::task::JoinHandle<()>) {
    let (input_tx, input_rx) = InputTx::channel(INPUT_CAPACITY);
    let cluster = Cluster::new(cfg);
    let (snap_tx, snap_rx) = watch::channel(Arc::new(cluster.snapshot(now_millis())));
    let (q_tx, q_rx) = mpsc::channel(64);
    let dropped = input_tx.dropped.clone();
    // The state task holds a sender itself, so it outlives any driver that
    // stops or crashes; it ends only on cancel.
    let keepalive = input_tx.clone();
    let task = tokio::spawn(async move {
        run_state(cluster, input_rx, q_rx, routes, snap_tx, dropped, cancel).await;
        drop(keepalive);
    });
    (
        EngineHandle {
            snapshot: snap_rx,
            queries: q_tx,
        },
        input_tx,
        task,
    )
}

/// Sends one effect to the corosync driver; a full channel turns into a
/// counted drop and a pending full resync.
fn route_effect(
    cluster: &mut Cluster,
    routes: &EffectRoutes,
    ev_tx: &broadcast::Sender<Event>,
    resync_pending: &mut bool,
    eff: Effect,
) {
    if *resync_pending {
        return;
    }
    if routes.corosync.try_send(eff).is_err() {
        *resync_pending = true;
        let o = cluster.apply(Input::Dropped {
            at: now_millis(),
            what: DropKind::Effects,
            count: 1,
        });
        for ev in o.events {
            let _ = ev_tx.send(ev);
        }
    }
}

async fn run_state(
    mut cluster: Cluster,
    mut inputs: mpsc::Receiver<Input>,
    mut queries: mpsc::Receiver<Query>,
    routes: EffectRoutes,
    snap_tx: watch::Sender<Arc<Snapshot>>,
    dropped_inputs: Arc<AtomicU64>,
    cancel: CancellationToken,
) {
    let (ev_tx, _) = broadcast::channel::<Event>(EVENT_CAPACITY);
    let mut buf = Vec::with_capacity(256);
    // Effects the corosync driver could not take; we resend everything later.
    let mut resync_pending = false;
    let mut resync_timer = tokio::time::interval(Duration::from_millis(500));
    resync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut changed = false;
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            n = inputs.recv_many(&mut buf, 256) => {
                if n == 0 {
                    break;
                }
                let lost = dropped_inputs.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    buf.push(Input::Dropped { at: now_millis(), what: DropKind::Inputs, count: lost });
                }
                for input in buf.drain(..) {
                    // A driver that could not send an effect: everything we
                    // announced may be incomplete, so re-announce it all.
                    if matches!(input, Input::Dropped { what: DropKind::Effects, .. }) {
                        resync_pending = true;
                    }
                    let out = cluster.apply(input);
                    changed |= out.changed;
                    for ev in out.events {
                        let _ = ev_tx.send(ev);
                    }
                    for eff in out.effects {
                        route_effect(&mut cluster, &routes, &ev_tx, &mut resync_pending, eff);
                    }
                }
                // Deferred effects, coalesced over the batch (network states).
                for eff in cluster.flush_effects() {
                    route_effect(&mut cluster, &routes, &ev_tx, &mut resync_pending, eff);
                }
            }
            Some(q) = queries.recv() => match q {
                Query::Fence(_call, reply) => {
                    // Routing lands with the fence router (fencing issue).
                    let _ = reply.send(FenceAnswer::fail("fence routing is not available yet"));
                }
                Query::Subscribe(reply) => {
                    let backlog: VecDeque<Event> = cluster.events().cloned().collect();
                    let _ = reply.send((backlog.into(), ev_tx.subscribe()));
                }
                Query::SubscriberLagged(n) => {
                    let o = cluster.apply(Input::Dropped { at: now_millis(), what: DropKind::Events, count: n });
                    changed |= o.changed;
                    for ev in o.events {
                        let _ = ev_tx.send(ev);
                    }
                }
            },
            _ = resync_timer.tick(), if resync_pending => {
                // Resend the whole local state once the driver has room.
                let all = cluster.announce_all();
                if routes.corosync.capacity() > all.len() {
                    for eff in all {
                        let _ = routes.corosync.try_send(eff);
                    }
                    resync_pending = false;
                }
            }
        }
        if changed {
            snap_tx.send_replace(Arc::new(cluster.snapshot(now_millis())));
        }
    }
}
