//! The engine: one task owns the [`model::Cluster`] and applies [`model::Input`]s
//! that drivers send; everyone else gets immutable snapshots and a bounded
//! event stream through [`EngineHandle`].
//!
//! Drivers (corosync, libvirt, control) depend on the model and on this
//! module's channel types, never on each other.

pub mod control;
pub mod corosync;
pub mod fence;
pub mod hooks;
pub mod libvirt;
pub mod model;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use fenceline_proto::api::{Event, FenceOp, FenceResult, NodeId, Snapshot, now_millis};
use model::{Cluster, DropKind, Effect, FenceAct, Input, ModelConfig};

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

/// The longest a [`EngineHandle::fence`] call waits for the engine (now in
/// `fenceline_proto::api`; re-exported here for existing users).
pub use fenceline_proto::api::FENCE_CALL_LIMIT;

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

/// A sink for fence events (the audit log). Called on the state task: it
/// must not block (queue and return).
pub type AuditSink = Box<dyn Fn(&Event) + Send + Sync>;

/// Capacity of the engine → libvirt fence-action channel.
pub const FENCE_ACT_CAPACITY: usize = 256;

/// Where the state task sends effects. Each driver gets its own receiver.
pub struct EffectRoutes {
    /// STORE_VM, own-group messages, fence REQUEST/REPLY: the corosync driver.
    pub corosync: mpsc::Sender<Effect>,
    /// Local fence actions: the libvirt driver. `None` answers every action
    /// with a failure (no libvirt driver).
    pub fence_act: Option<mpsc::Sender<FenceAct>>,
    /// Every fence event is also handed here (the audit log).
    pub audit: Option<AuditSink>,
}

impl EffectRoutes {
    /// Only a corosync route (tests and tools).
    pub fn corosync_only(corosync: mpsc::Sender<Effect>) -> Self {
        Self {
            corosync,
            fence_act: None,
            audit: None,
        }
    }
}

/// Starts the state task. Returns the handle and the input sender for drivers.
pub fn spawn_state(
    cfg: ModelConfig,
    routes: EffectRoutes,
    cancel: CancellationToken,
) -> (EngineHandle, InputTx, tokio::task::JoinHandle<()>) {
    spawn_state_with(cfg, routes, cancel, InputTx::channel(INPUT_CAPACITY))
}

/// [`spawn_state`] on an input channel made beforehand (for sinks in
/// `routes` that report their own drops as inputs).
pub fn spawn_state_with(
    cfg: ModelConfig,
    routes: EffectRoutes,
    cancel: CancellationToken,
    (input_tx, input_rx): (InputTx, mpsc::Receiver<Input>),
) -> (EngineHandle, InputTx, tokio::task::JoinHandle<()>) {
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
    // Fence timeouts and grace answers; only polled while the router is busy.
    let mut fence_tick = tokio::time::interval(Duration::from_millis(50));
    fence_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Callers of `EngineHandle::fence` waiting for their answer.
    let mut calls: HashMap<u64, oneshot::Sender<FenceAnswer>> = HashMap::new();
    let mut next_call: u64 = 1;
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
                    let mut again = Vec::new();
                    route_output(out, &routes, &ev_tx, &mut calls, &mut resync_pending, &mut again);
                    changed |= apply_feedback(&mut cluster, again, &routes, &ev_tx, &mut calls, &mut resync_pending);
                }
                // Deferred effects, coalesced over the batch (network states).
                let effects = cluster.flush_effects();
                if !effects.is_empty() {
                    let out = model::Output { effects, ..Default::default() };
                    let mut again = Vec::new();
                    route_output(out, &routes, &ev_tx, &mut calls, &mut resync_pending, &mut again);
                    changed |= apply_feedback(&mut cluster, again, &routes, &ev_tx, &mut calls, &mut resync_pending);
                }
            }
            Some(q) = queries.recv() => match q {
                Query::Fence(call, reply) => {
                    let id = next_call;
                    next_call += 1;
                    calls.insert(id, reply);
                    let out = cluster.apply(Input::FenceSubmit {
                        at: now_millis(),
                        id,
                        op: call.op,
                        domain: call.domain,
                        source: call.source,
                    });
                    changed |= out.changed;
                    let mut again = Vec::new();
                    route_output(out, &routes, &ev_tx, &mut calls, &mut resync_pending, &mut again);
                    changed |= apply_feedback(&mut cluster, again, &routes, &ev_tx, &mut calls, &mut resync_pending);
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
            _ = fence_tick.tick(), if cluster.fence_busy() => {
                let out = cluster.apply(Input::Tick { at: now_millis() });
                changed |= out.changed;
                let mut again = Vec::new();
                route_output(out, &routes, &ev_tx, &mut calls, &mut resync_pending, &mut again);
                changed |= apply_feedback(&mut cluster, again, &routes, &ev_tx, &mut calls, &mut resync_pending);
            }
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

/// Fans one `Output` out: events to subscribers (and fence events to the
/// audit sink), effects to their drivers, answers to waiting callers. Inputs
/// that must be applied next (a failed route) are pushed to `again`.
fn route_output(
    out: model::Output,
    routes: &EffectRoutes,
    ev_tx: &broadcast::Sender<Event>,
    calls: &mut HashMap<u64, oneshot::Sender<FenceAnswer>>,
    resync_pending: &mut bool,
    again: &mut Vec<Input>,
) {
    for ev in out.events {
        if let (Some(audit), fenceline_proto::api::EventKind::Fence { .. }) =
            (&routes.audit, &ev.kind)
        {
            audit(&ev);
        }
        let _ = ev_tx.send(ev);
    }
    for eff in out.effects {
        match eff {
            Effect::FenceDone {
                id,
                result,
                acted_by,
                duration_ms,
                detail,
            } => {
                if let Some(tx) = calls.remove(&id) {
                    let _ = tx.send(FenceAnswer {
                        result,
                        acted_by,
                        duration_ms,
                        detail,
                    });
                }
            }
            Effect::FenceAct(act) => {
                let job = act.job;
                let sent = match &routes.fence_act {
                    Some(tx) => tx.try_send(act).map_err(|e| match e {
                        mpsc::error::TrySendError::Full(_) => {
                            "the libvirt driver is busy (action queue full)"
                        }
                        mpsc::error::TrySendError::Closed(_) => "the libvirt driver is not running",
                    }),
                    None => Err("no libvirt driver"),
                };
                if let Err(why) = sent {
                    tracing::error!(job, "fence action not started: {why}");
                    again.push(Input::FenceActed {
                        at: now_millis(),
                        job,
                        result: FenceResult::Fail,
                        detail: Some(why.to_string()),
                    });
                }
            }
            Effect::FenceCpgRequest { seqno, .. } => {
                if let Err(e) = routes.corosync.try_send(eff) {
                    let why = match e {
                        mpsc::error::TrySendError::Full(_) => "the corosync driver is busy",
                        mpsc::error::TrySendError::Closed(_) => {
                            "the corosync driver is not running"
                        }
                    };
                    again.push(Input::FenceSendFailed {
                        at: now_millis(),
                        seqno,
                        error: why.into(),
                    });
                }
            }
            Effect::FenceCpgReply { seqno, target, .. } => {
                if routes.corosync.try_send(eff).is_err() {
                    tracing::error!(
                        seqno,
                        target,
                        "fence REPLY dropped: the corosync driver is busy or gone"
                    );
                }
            }
            Effect::StoreVms(_) | Effect::Own(_) => {
                if *resync_pending {
                    continue;
                }
                if routes.corosync.try_send(eff).is_err() {
                    *resync_pending = true;
                    again.push(Input::Dropped {
                        at: now_millis(),
                        what: DropKind::Effects,
                        count: 1,
                    });
                }
            }
        }
    }
}

/// Applies inputs produced by routing failures until none are left.
fn apply_feedback(
    cluster: &mut Cluster,
    mut pending: Vec<Input>,
    routes: &EffectRoutes,
    ev_tx: &broadcast::Sender<Event>,
    calls: &mut HashMap<u64, oneshot::Sender<FenceAnswer>>,
    resync_pending: &mut bool,
) -> bool {
    let mut changed = false;
    // Each round can only produce failures of the previous round's effects;
    // bound it anyway.
    for _ in 0..8 {
        if pending.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for input in pending {
            let out = cluster.apply(input);
            changed |= out.changed;
            route_output(out, routes, ev_tx, calls, resync_pending, &mut next);
        }
        pending = next;
    }
    changed
}
