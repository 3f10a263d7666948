//! The state task: the one owner of the [`Cluster`]. It applies inputs,
//! routes the effects to their drivers, answers fence callers, fans events
//! out (and fence events to the audit sink), logs what the model leaves to
//! it, and publishes one snapshot per batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::handle::{EngineHandle, FenceAnswer, FenceCall, InputTx, Query};
use super::model::{
    ClaimOutcome, Cluster, DropKind, Effect, FenceAct, Input, ModelConfig, Notice, Output,
    OwnMessage,
};
use super::{EVENT_CAPACITY, INPUT_CAPACITY};
use fenceline_proto::api::{
    Event, EventKind, FencePhase, FenceResult, MembershipAction, NodeId, Snapshot, now_millis,
};

/// A sink for fence events (the audit log). Called on the state task: it
/// must not block (queue and return).
pub type AuditSink = Box<dyn Fn(&Event) + Send + Sync>;

/// Writes (and syncs) the intent record of a local fence action before the
/// action goes to the libvirt driver. `Err(reason)` refuses the action: the
/// request is answered "fail" with the reason (`[fencing] audit_required`).
/// Called on the state task; it blocks until the record is durable.
pub type IntentSink = Box<dyn Fn(&FenceAct) -> Result<(), String> + Send + Sync>;

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
    /// The intent record of each local fence action, written first.
    pub intent: Option<IntentSink>,
}

impl EffectRoutes {
    /// Only a corosync route (tests and tools).
    pub fn corosync_only(corosync: mpsc::Sender<Effect>) -> Self {
        Self {
            corosync,
            fence_act: None,
            audit: None,
            intent: None,
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
    let rules = cfg.fence.clone();
    let cluster = Cluster::new(cfg);
    let (snap_tx, snap_rx) = watch::channel(Arc::new(cluster.snapshot(now_millis())));
    let (q_tx, q_rx) = mpsc::channel(64);
    let dropped = input_tx.dropped.clone();
    // The state task holds a sender itself, so it outlives any driver that
    // stops or crashes; it ends only on cancel.
    let keepalive = input_tx.clone();
    let (ev_tx, _) = broadcast::channel::<Event>(EVENT_CAPACITY);
    let state = StateTask {
        cluster,
        routes,
        ev_tx,
        calls: HashMap::new(),
        confirms: HashMap::new(),
        claims: HashMap::new(),
        next_call: 1,
        resync_pending: false,
    };
    let task = tokio::spawn(async move {
        state.run(input_rx, q_rx, snap_tx, dropped, cancel).await;
        drop(keepalive);
    });
    (
        EngineHandle {
            snapshot: snap_rx,
            queries: q_tx,
            rules,
        },
        input_tx,
        task,
    )
}

/// The state task's own data: the model and where its output goes.
struct StateTask {
    cluster: Cluster,
    routes: EffectRoutes,
    ev_tx: broadcast::Sender<Event>,
    /// Callers of `EngineHandle::fence` waiting for their answer.
    calls: HashMap<u64, oneshot::Sender<FenceAnswer>>,
    /// Callers of `EngineHandle::confirm` waiting for their answer.
    confirms: HashMap<u64, oneshot::Sender<Result<String, String>>>,
    /// Multicast listeners waiting for a claim decision.
    claims: HashMap<u64, oneshot::Sender<ClaimOutcome>>,
    next_call: u64,
    /// Effects the corosync driver could not take; we resend everything later.
    resync_pending: bool,
}

impl StateTask {
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Input>,
        mut queries: mpsc::Receiver<Query>,
        snap_tx: watch::Sender<Arc<Snapshot>>,
        dropped_inputs: Arc<AtomicU64>,
        cancel: CancellationToken,
    ) {
        let mut buf = Vec::with_capacity(256);
        let mut resync_timer = tokio::time::interval(Duration::from_millis(500));
        resync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Fence timeouts and grace answers; only polled while the router is busy.
        let mut fence_tick = tokio::time::interval(Duration::from_millis(50));
        fence_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Self-fence countdowns and peers' deadlines; only while one runs.
        let mut self_fence_tick = tokio::time::interval(Duration::from_millis(500));
        self_fence_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                        changed |= self.step(input);
                    }
                    // Deferred effects, coalesced over the batch (network states).
                    let effects = self.cluster.flush_effects();
                    if !effects.is_empty() {
                        changed |= self.dispatch(Output { effects, ..Default::default() });
                    }
                }
                Some(q) = queries.recv() => match q {
                    Query::Fence(call, reply) => changed |= self.fence(call, reply),
                    Query::Subscribe(reply) => {
                        let backlog: Vec<Event> = self.cluster.events().cloned().collect();
                        let _ = reply.send((backlog, self.ev_tx.subscribe()));
                    }
                    Query::Claim(claim, domain, reply) => {
                        let id = self.next_call;
                        self.next_call += 1;
                        self.claims.insert(id, reply);
                        changed |= self.step(Input::ClaimAsk { at: now_millis(), id, claim, domain });
                    }
                    Query::Confirm(node, source, reply) => {
                        let id = self.next_call;
                        self.next_call += 1;
                        self.confirms.insert(id, reply);
                        changed |= self.step(Input::Confirm { at: now_millis(), id, node, source });
                    }
                    Query::Ping(reply) => {
                        let _ = reply.send(());
                    }
                    Query::SubscriberLagged(n) => {
                        changed |= self.step(Input::Dropped { at: now_millis(), what: DropKind::Events, count: n });
                    }
                },
                _ = fence_tick.tick(), if self.cluster.fence_busy() => {
                    changed |= self.step(Input::Tick { at: now_millis() });
                }
                _ = self_fence_tick.tick(), if self.cluster.self_fence_waiting() => {
                    changed |= self.step(Input::Tick { at: now_millis() });
                }
                _ = resync_timer.tick(), if self.resync_pending => self.resync(),
            }
            if changed {
                snap_tx.send_replace(Arc::new(self.cluster.snapshot(now_millis())));
            }
        }
    }

    /// Applies one input, routes its output and applies what routing
    /// failures feed back. Returns true when the snapshot changed.
    fn step(&mut self, input: Input) -> bool {
        // A driver that could not send an effect: everything we announced
        // may be incomplete, so re-announce it all.
        if matches!(
            input,
            Input::Dropped {
                what: DropKind::Effects,
                ..
            }
        ) {
            self.resync_pending = true;
        }
        let out = self.cluster.apply(input);
        self.dispatch(out)
    }

    /// A fence call: gives it an id, keeps its oneshot and submits it.
    fn fence(&mut self, call: FenceCall, reply: oneshot::Sender<FenceAnswer>) -> bool {
        let id = self.next_call;
        self.next_call += 1;
        self.calls.insert(id, reply);
        self.step(Input::FenceSubmit {
            at: now_millis(),
            id,
            op: call.op,
            domain: call.domain,
            source: call.source,
        })
    }

    /// Resends the whole local state once the corosync driver has room.
    fn resync(&mut self) {
        let all = self.cluster.announce_all();
        if self.routes.corosync.capacity() > all.len() {
            for eff in all {
                let _ = self.routes.corosync.try_send(eff);
            }
            self.resync_pending = false;
        }
    }

    /// Routes one output, then applies the inputs routing failures produce
    /// until none are left. Returns true when the snapshot changed.
    fn dispatch(&mut self, out: Output) -> bool {
        let mut changed = out.changed;
        let mut pending = self.route(out);
        // Each round can only produce failures of the previous round's
        // effects; bound it anyway.
        for _ in 0..8 {
            if pending.is_empty() {
                break;
            }
            let mut next = Vec::new();
            for input in pending {
                let out = self.cluster.apply(input);
                changed |= out.changed;
                next.extend(self.route(out));
            }
            pending = next;
        }
        changed
    }

    /// Fans one `Output` out: events to subscribers (and fence events to the
    /// audit sink), effects to their drivers, answers to waiting callers,
    /// notices to the log. Returns the inputs that must be applied next (a
    /// failed route).
    fn route(&mut self, out: Output) -> Vec<Input> {
        let mut again = Vec::new();
        for notice in &out.notices {
            log_notice(notice);
        }
        for ev in out.events {
            let confirmed = matches!(
                &ev.kind,
                EventKind::Membership {
                    action: MembershipAction::Confirmed | MembershipAction::SelfFenced,
                    ..
                }
            );
            if let (
                true,
                EventKind::Membership {
                    action,
                    nodeid,
                    detail: Some(d),
                    ..
                },
            ) = (confirmed, &ev.kind)
            {
                if *action == MembershipAction::SelfFenced {
                    tracing::warn!(node = ?nodeid, "self-fenced: {d}");
                } else {
                    tracing::warn!(node = ?nodeid, "node confirmed down: {d}");
                }
            }
            if let EventKind::Fence { .. } = &ev.kind {
                log_fence_refusal(&ev);
            }
            // Fence events and confirmations are audited.
            if (confirmed || matches!(ev.kind, EventKind::Fence { .. }))
                && let Some(audit) = &self.routes.audit
            {
                audit(&ev);
            }
            let _ = self.ev_tx.send(ev);
        }
        for eff in out.effects {
            if let Some(input) = self.route_effect(eff) {
                again.push(input);
            }
        }
        again
    }

    /// Hands one effect to its driver; a failure that the model must learn
    /// of comes back as an input.
    fn route_effect(&mut self, eff: Effect) -> Option<Input> {
        let routes = &self.routes;
        match eff {
            Effect::FenceDone {
                id,
                result,
                acted_by,
                duration_ms,
                detail,
            } => {
                if let Some(tx) = self.calls.remove(&id) {
                    let _ = tx.send(FenceAnswer {
                        result,
                        acted_by,
                        duration_ms,
                        detail,
                    });
                }
            }
            Effect::ClaimDone { id, outcome } => {
                if let Some(tx) = self.claims.remove(&id) {
                    let _ = tx.send(outcome);
                }
            }
            // A claim is not part of the state a resync re-announces: it goes
            // out even then, and one that cannot is left to its timeout.
            Effect::Own(OwnMessage::Claim { id }) => {
                if routes
                    .corosync
                    .try_send(Effect::Own(OwnMessage::Claim { id }))
                    .is_err()
                {
                    tracing::warn!(
                        "connect-back claim not sent: the corosync driver is busy or gone"
                    );
                }
            }
            Effect::ConfirmDone { id, result } => {
                if let Some(tx) = self.confirms.remove(&id) {
                    let _ = tx.send(result);
                }
            }
            Effect::FenceAct(act) => {
                let job = act.job;
                // The intent is durable before the action goes out.
                let intent = match &routes.intent {
                    Some(write) => write(&act),
                    None => Ok(()),
                };
                if let Err(why) = intent {
                    tracing::error!(job, domain = %act.name, "fence action refused: {why}");
                    return Some(Input::FenceActed {
                        at: now_millis(),
                        job,
                        result: FenceResult::Fail,
                        detail: Some(why),
                        not_found: false,
                        migrated: false,
                    });
                }
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
                    return Some(Input::FenceActed {
                        at: now_millis(),
                        job,
                        result: FenceResult::Fail,
                        detail: Some(why.to_string()),
                        not_found: false,
                        migrated: false,
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
                    return Some(Input::FenceSendFailed {
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
                if !self.resync_pending && routes.corosync.try_send(eff).is_err() {
                    self.resync_pending = true;
                    return Some(Input::Dropped {
                        at: now_millis(),
                        what: DropKind::Effects,
                        count: 1,
                    });
                }
            }
        }
        None
    }
}

/// The model's log lines, at the levels the router used before.
fn log_notice(notice: &Notice) {
    match notice {
        Notice::SelfFence(why) => tracing::error!("self-fence: {why}"),
        Notice::UnroutedRequest {
            from,
            seqno,
            request,
        } => tracing::debug!(
            from,
            seqno,
            request,
            "fence-agents REQUEST with an op nobody routes; ignored"
        ),
        Notice::PeerVmDropped { from, why } => tracing::warn!(
            from,
            %why,
            "peer VM entries dropped; the peer is not accounted for until its next complete inventory"
        ),
        Notice::MismatchedReply { from, seqno, vm } => tracing::warn!(
            from,
            seqno,
            vm = %vm,
            "fence-agents REPLY does not match our request; ignored"
        ),
        Notice::ReplyFromNonHolder {
            from,
            seqno,
            holders,
        } => {
            let holders = holders
                .iter()
                .map(NodeId::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            tracing::info!(
                from,
                seqno,
                holders = %holders,
                "reply from a node that does not hold the VM; waiting for its holder"
            );
        }
    }
}

/// This node refused (or failed) a request it was asked to act on: the
/// reason goes to the log as well as into the reply and the event.
fn log_fence_refusal(ev: &Event) {
    if let EventKind::Fence {
        phase: FencePhase::Acted,
        result: FenceResult::Fail | FenceResult::Denied,
        requester: Some(requester),
        domain,
        detail,
        ..
    } = &ev.kind
    {
        let why = detail.as_deref().unwrap_or("refused");
        tracing::warn!(requester, vm = %domain, "{why}");
    }
}
