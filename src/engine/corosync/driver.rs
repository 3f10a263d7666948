//! The driver: the reconnect loop, one session's main loop (dispatch,
//! forward what the callbacks collected, carry out effects), and the
//! effects themselves (STORE_VM records, fence REQUEST/REPLY, own-group
//! messages).

use std::time::{Duration, Instant};

use fenceline_proto::backoff::Backoff;
use fenceline_proto::ratelimit::RateLimit;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::auth::Gate;
use super::callbacks::{Raw, take_pending};
use super::conversions::{deliver_input, fence_req, group_change_input, group_key};
use super::error::CorosyncError;
use super::session::{SendError, Session, UpInfo};
use super::{CorosyncConfig, InputTx};
use crate::engine::model::{DropKind, Effect, Group, Input, VmRecord};
use fenceline_proto::api::{NodeId, now_millis};
use fenceline_proto::cpg::{self, FenceAgentsMsg, Frame};
use fenceline_proto::own;

/// First reconnect delay.
pub(super) const RECONNECT_MIN: Duration = Duration::from_millis(200);
/// Longest reconnect delay.
pub(super) const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// How long one multicast may keep retrying on `CsErrTryAgain`.
const SEND_RETRY_BUDGET: Duration = Duration::from_secs(2);
/// Retry budget while the previous send already timed out (fail fast until
/// one send succeeds again, so a burst cannot block the driver for minutes).
const SEND_RETRY_BUDGET_CONGESTED: Duration = Duration::from_millis(50);
/// At most one warning per key in this interval; the rest are counted.
pub(super) const WARN_INTERVAL: Duration = Duration::from_secs(10);
/// While one effect is sent, dispatch and forward after this many messages.
const INTERLEAVE_EVERY: usize = 64;

/// The reconnect delays: 200 ms → 5 s, ±20 % jitter.
pub(super) fn reconnect_backoff() -> Backoff {
    Backoff::with_entropy(RECONNECT_MIN, RECONNECT_MAX)
}

/// One warning per key per [`WARN_INTERVAL`], with the suppressed count.
pub(super) fn warn_limit<K: std::hash::Hash + Eq + Clone>() -> RateLimit<K> {
    RateLimit::new(WARN_INTERVAL, 1)
}

/// What woke the main loop.
enum Wake {
    Cancel,
    Dispatched(Result<(), CorosyncError>),
    Effect(Effect),
    EffectsClosed,
}

/// Why the session ended.
enum End {
    /// Cancelled, or the engine is gone: leave cleanly and stop.
    Stop,
    /// corosync went away: reconnect.
    Lost(CorosyncError),
}

pub(super) struct Driver {
    cfg: CorosyncConfig,
    inputs: InputTx,
    effects: mpsc::Receiver<Effect>,
    cancel: CancellationToken,
    /// Malformed CPG messages, per (group, sender).
    malformed_warn: RateLimit<(u8, NodeId)>,
    /// Rate limit for STORE_VM records fence_virtd's format cannot carry.
    encode_warn: RateLimit<()>,
    /// The last `CorosyncDown` error sent (repeats are not re-sent).
    last_down: Option<String>,
    /// Members of the last quorum notification (for the vote total).
    quorum_members: Vec<NodeId>,
    last_votes: Option<(u32, u32, u32)>,
    /// Set when a multicast exhausted its retry budget; cleared on success.
    congested: bool,
    reconnect: Backoff,
    /// The cluster key's seal; the authenticated senders.
    gate: Gate,
}

impl Driver {
    pub(super) fn new(
        cfg: CorosyncConfig,
        inputs: InputTx,
        effects: mpsc::Receiver<Effect>,
        cancel: CancellationToken,
    ) -> Self {
        let gate = Gate::new(cfg.auth.clone(), cfg.own_group.clone());
        Driver {
            gate,
            cfg,
            inputs,
            effects,
            cancel,
            malformed_warn: warn_limit(),
            encode_warn: warn_limit(),
            last_down: None,
            quorum_members: Vec::new(),
            last_votes: None,
            congested: false,
            reconnect: reconnect_backoff(),
        }
    }

    pub(super) async fn run(mut self) {
        tracing::info!(
            fence_group = %self.cfg.fence_group,
            own_group = %self.cfg.own_group,
            "corosync driver starting"
        );
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            match Session::connect(&self.cfg, &self.cancel).await {
                Ok((session, up)) => {
                    self.last_down = None;
                    self.gate.reset();
                    let started = Instant::now();
                    match self.serve(session, up).await {
                        End::Stop => break,
                        End::Lost(error) => {
                            tracing::warn!(%error, "corosync connection lost; reconnecting");
                            if !self.report_down(error.to_string()).await {
                                break;
                            }
                        }
                    }
                    // A session that lived a while resets the backoff; one
                    // that died at once keeps growing it (no flapping loop).
                    if started.elapsed() >= STABLE_SESSION {
                        self.reconnect.reset();
                    }
                }
                Err(error) => {
                    if self.cancel.is_cancelled() {
                        break;
                    }
                    let error = error.to_string();
                    if self.last_down.as_deref() != Some(error.as_str()) {
                        tracing::warn!(%error, "cannot connect to corosync; will retry");
                    } else {
                        tracing::debug!(%error, "corosync still unreachable");
                    }
                    if !self.report_down(error).await {
                        break;
                    }
                }
            }
            let delay = self.reconnect.next_delay();
            if !self.wait_discarding(delay).await {
                break;
            }
        }
        tracing::info!("corosync driver stopped");
    }

    /// Sends `CorosyncDown` unless the same error was the last one sent.
    /// Returns false when the engine is gone.
    async fn report_down(&mut self, error: String) -> bool {
        if self.last_down.as_deref() == Some(error.as_str()) {
            return true;
        }
        self.last_down = Some(error.clone());
        self.last_votes = None;
        self.quorum_members.clear();
        self.inputs
            .send(Input::CorosyncDown {
                at: now_millis(),
                error,
            })
            .await
    }

    /// Waits `delay` while discarding effects. Returns false when the
    /// driver must stop.
    async fn wait_discarding(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let cancel = self.cancel.clone();
        let mut discarded = 0u64;
        let keep_going = loop {
            tokio::select! {
                _ = cancel.cancelled() => break false,
                _ = &mut sleep => break true,
                e = self.effects.recv() => match e {
                    Some(_) => discarded += 1,
                    None => break false,
                },
            }
        };
        if discarded > 0 {
            tracing::debug!(discarded, "discarded effects while corosync is down");
        }
        keep_going
    }

    /// Runs one connected session until corosync is lost or we must stop.
    async fn serve(&mut self, s: Session, up: UpInfo) -> End {
        tracing::info!(
            local_nodeid = s.local,
            pid = std::process::id(),
            cluster = up.cluster_name.as_deref().unwrap_or("?"),
            nodes = up.nodelist.len(),
            max_msg = ?s.max_msg,
            votequorum = s.has_votequorum(),
            "connected to corosync; joined {} and {}",
            self.cfg.fence_group,
            self.cfg.own_group
        );
        // Callbacks only run inside dispatch, so CorosyncUp precedes every
        // GroupChange/Quorum/message of this session.
        let _ = take_pending();
        let sent = self
            .inputs
            .send(Input::CorosyncUp {
                at: now_millis(),
                local_nodeid: s.local,
                cluster_name: up.cluster_name,
                nodelist: up.nodelist,
            })
            .await;
        if !sent {
            return self.close(s, "engine gone");
        }
        if !self.refresh_votes(&s).await {
            return self.close(s, "engine gone");
        }
        let cancel = self.cancel.clone();
        loop {
            let wake = tokio::select! {
                _ = cancel.cancelled() => Wake::Cancel,
                r = s.dispatch_ready() => Wake::Dispatched(r),
                e = self.effects.recv() => match e {
                    Some(e) => Wake::Effect(e),
                    None => Wake::EffectsClosed,
                },
            };
            let outcome = match wake {
                Wake::Cancel => return self.close(s, "shutdown requested"),
                Wake::EffectsClosed => return self.close(s, "engine gone"),
                Wake::Dispatched(r) => r,
                Wake::Effect(e) => self.apply_effect(&s, e).await,
            };
            // Whatever the callbacks collected (also during send retries).
            if !self.forward_pending(&s).await {
                return self.close(s, "engine gone");
            }
            if let Err(error) = outcome {
                let _ = take_pending();
                drop(s);
                return End::Lost(error);
            }
        }
    }

    /// Leaves both groups and finalizes every handle.
    fn close(&self, s: Session, why: &str) -> End {
        s.close(&self.cfg, why);
        let _ = take_pending();
        End::Stop
    }

    /// Turns the buffered callback data into inputs. Returns false when the
    /// engine is gone.
    async fn forward_pending(&mut self, s: &Session) -> bool {
        let raws = take_pending();
        if raws.is_empty() {
            return true;
        }
        let mut votes_dirty = false;
        for raw in raws {
            let at = now_millis();
            let input = match raw {
                Raw::Deliver {
                    group,
                    nodeid,
                    pid,
                    data,
                } => match self.gate.admit(group, nodeid, pid, &data) {
                    Ok(bytes) => match deliver_input(at, group, nodeid, pid, &bytes) {
                        Ok(input) => input,
                        Err(reason) => Some(self.dropped(at, group, nodeid, pid, reason, false)),
                    },
                    Err(reason) => Some(self.dropped(at, group, nodeid, pid, reason, true)),
                },
                Raw::Confchg {
                    group,
                    members,
                    left,
                    joined,
                } => {
                    self.gate.left(group, &left);
                    Some(group_change_input(at, group, members, left, joined))
                }
                Raw::Quorum { quorate, members } => {
                    tracing::info!(quorate, members = ?members, "quorum notification");
                    self.quorum_members.clone_from(&members);
                    votes_dirty = true;
                    Some(Input::Quorum {
                        at,
                        quorate,
                        members,
                    })
                }
                Raw::VotesChanged => {
                    votes_dirty = true;
                    None
                }
            };
            if let Some(input) = input
                && !self.inputs.send(input).await
            {
                return false;
            }
        }
        if votes_dirty {
            return self.refresh_votes(s).await;
        }
        true
    }

    /// A dropped CPG message as a counted input: one the gate refused
    /// (`auth`) or one that does not parse.
    fn dropped(
        &mut self,
        at: u64,
        group: Group,
        from: NodeId,
        pid: u32,
        reason: String,
        auth: bool,
    ) -> Input {
        self.warn_dropped(group, from, pid, &reason, auth);
        if auth {
            Input::Unauthenticated { at, group, from }
        } else {
            Input::Malformed {
                at,
                group,
                from,
                reason,
            }
        }
    }

    /// The rate-limited warning for a dropped CPG message (per group,
    /// sender and kind).
    fn warn_dropped(&mut self, group: Group, from: NodeId, pid: u32, reason: &str, auth: bool) {
        let key = group_key(group) | if auth { 0x80 } else { 0 };
        if let Some(suppressed) = self.malformed_warn.allow((key, from), Instant::now()) {
            let what = if auth { "unauthenticated" } else { "malformed" };
            tracing::warn!(group = ?group, from, pid, suppressed, %reason, "{what} CPG message dropped");
        }
    }

    /// Reads the vote counts and sends `Input::Votes` when they changed.
    async fn refresh_votes(&mut self, s: &Session) -> bool {
        let members = if self.quorum_members.is_empty() {
            vec![s.local]
        } else {
            self.quorum_members.clone()
        };
        let Some(votes) = s.read_votes(&members) else {
            return true;
        };
        if self.last_votes == Some(votes) {
            return true;
        }
        self.last_votes = Some(votes);
        let (expected, total, quorum) = votes;
        tracing::debug!(expected, total, quorum, "votequorum");
        self.inputs
            .send(Input::Votes {
                at: now_millis(),
                expected,
                total,
                quorum,
            })
            .await
    }

    /// Multicasts one effect. `Err` only when the connection is lost.
    async fn apply_effect(&mut self, s: &Session, effect: Effect) -> Result<(), CorosyncError> {
        // A fence REQUEST that cannot go out fails its caller at once.
        let mut fence_seqno = None;
        let (group, messages) = match effect {
            Effect::FenceCpgRequest { seqno, body } => {
                fence_seqno = Some(seqno);
                let frame = Frame {
                    seqno,
                    target: cpg::NODE_ID_NONE,
                    msg: FenceAgentsMsg::Request(fence_req(body)),
                };
                match cpg::encode(&frame) {
                    Ok(b) => (Group::FenceAgents, vec![b]),
                    Err(e) => return self.fence_send_failed(seqno, e.to_string()).await,
                }
            }
            Effect::FenceCpgReply {
                seqno,
                target,
                body,
            } => {
                let frame = Frame {
                    seqno,
                    target,
                    msg: FenceAgentsMsg::Reply(fence_req(body)),
                };
                match cpg::encode(&frame) {
                    Ok(b) => (Group::FenceAgents, vec![b]),
                    Err(e) => {
                        tracing::error!(error = %e, seqno, target, "cannot encode a fence REPLY; dropped");
                        return Ok(());
                    }
                }
            }
            Effect::FenceAct(_)
            | Effect::FenceDone { .. }
            | Effect::ConfirmDone { .. }
            | Effect::ClaimDone { .. } => {
                tracing::error!("a fence effect was routed to the corosync driver; ignored");
                return Ok(());
            }
            Effect::StoreVms(records) => (Group::FenceAgents, self.encode_stores(records)),
            Effect::Own(msg) => match own::encode_chunked(&msg, own::DEFAULT_CHUNK) {
                Ok(m) => (
                    Group::Own,
                    m.into_iter().map(|b| self.gate.seal(s.local, b)).collect(),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode own-group message; dropped");
                    return self.report_dropped().await;
                }
            },
        };
        for (i, bytes) in messages.iter().enumerate() {
            // Keep reading while a long effect goes out, so corosync's queue
            // towards us never backs up behind our own sends.
            if i > 0 && i % INTERLEAVE_EVERY == 0 {
                s.dispatch_all()?;
                if !self.forward_pending(s).await {
                    return Ok(()); // engine gone: the main loop stops next
                }
            }
            match self.mcast(s, group, bytes).await {
                Ok(()) => {}
                Err(SendError::Lost(e)) => {
                    if let Some(seqno) = fence_seqno {
                        let _ = self.fence_send_failed(seqno, e.to_string()).await;
                    }
                    return Err(e);
                }
                Err(SendError::Dropped(e)) if fence_seqno.is_some() => {
                    return self
                        .fence_send_failed(fence_seqno.unwrap_or(0), e.to_string())
                        .await;
                }
                Err(SendError::Dropped(e)) => {
                    tracing::warn!(
                        group = ?group,
                        error = %e,
                        dropped = messages.len() - i,
                        "cannot multicast; dropping the rest of this effect"
                    );
                    return self.report_dropped().await;
                }
            }
        }
        Ok(())
    }

    /// One multicast with the retry budget of the current congestion state.
    async fn mcast(&mut self, s: &Session, group: Group, bytes: &[u8]) -> Result<(), SendError> {
        let budget = if self.congested {
            SEND_RETRY_BUDGET_CONGESTED
        } else {
            SEND_RETRY_BUDGET
        };
        let sent = s.mcast(group, bytes, budget, &self.cancel).await;
        match &sent {
            Ok(()) => self.congested = false,
            Err(SendError::Dropped(CorosyncError::FlowControl(_))) => self.congested = true,
            Err(_) => {}
        }
        sent
    }

    async fn fence_send_failed(&mut self, seqno: u32, error: String) -> Result<(), CorosyncError> {
        tracing::warn!(seqno, %error, "cannot send a fence REQUEST");
        self.send_or_gone(Input::FenceSendFailed {
            at: now_millis(),
            seqno,
            error,
        })
        .await
    }

    async fn report_dropped(&mut self) -> Result<(), CorosyncError> {
        self.send_or_gone(Input::Dropped {
            at: now_millis(),
            what: DropKind::Effects,
            count: 1,
        })
        .await
    }

    async fn send_or_gone(&mut self, input: Input) -> Result<(), CorosyncError> {
        if self.inputs.send(input).await {
            Ok(())
        } else {
            Err(CorosyncError::EngineGone)
        }
    }

    /// One STORE_VM per record, in fence_virtd's exact format. Records the
    /// format cannot carry (names too long) are skipped with a warning.
    fn encode_stores(&mut self, records: Vec<VmRecord>) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(records.len());
        for rec in records {
            let name = rec.name.clone();
            match cpg::encode(&Frame::store_vm(rec)) {
                Ok(b) => out.push(b),
                Err(e) => {
                    if let Some(suppressed) = self.encode_warn.allow((), Instant::now()) {
                        tracing::warn!(
                            vm = %name,
                            error = %e,
                            suppressed,
                            "VM cannot be announced in fence_virtd's format; skipped"
                        );
                    }
                }
            }
        }
        out
    }
}
