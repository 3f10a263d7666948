//! The fence router: who acts on a fence request, who answers for a VM that
//! nobody knows, and when to refuse. Pure, like the rest of the model: the
//! state task feeds requests, CPG messages, action results and clock ticks;
//! the effects say what to send over CPG, what to do on libvirt and which
//! caller to answer.
//!
//! The rules (README "Fencing" has the user-facing version):
//! - **The owner acts.** The node where the VM is active destroys, starts or
//!   reads it. A VM active on several hosts (a conflict) is destroyed by every
//!   one of them for `off`; `on` and `reboot` are refused while it runs twice.
//! - **Shut off everywhere.** The lowest node id among the hosts that define
//!   the VM answers (`off` → ok, `status` → off, `reboot` → ok, it stays off).
//!   `on` starts it only if exactly one host defines it; otherwise it is
//!   refused, because picking a host for shared storage is not ours to guess.
//! - **Nobody knows the VM.** The highest node id in `fence-agents` answers
//!   like fence_virtd (status → off, off/reboot → ok, on → fail), but only
//!   while the cluster is quorate, and only after a short grace so that a
//!   real owner whose record had not reached us yet answers first. Without
//!   quorum it answers "fail" and says why (`unknown_vm_without_quorum`
//!   restores the old behaviour).
//! - **The requester** waits for the reply of the node(s) its map names as
//!   holders (a shut-off copy on another fence_virtd host cannot answer for
//!   the real owner), with a timeout, and fails early when those nodes leave.

use std::collections::{BTreeMap, BTreeSet};

use super::{Cluster, DomKey, Output};
use fenceline_proto::api::{EventKind, FenceOp, FencePhase, FenceResult, Millis, NodeId};

/// fence_virtd's limit for the CPG request name (`char vm_name[128]`).
pub const MAX_CPG_VM_NAME: usize = 127;

/// How the router behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceRules {
    /// Route over CPG (true), or act on this host's VMs only (libvirt backend).
    pub cpg: bool,
    /// Requester's wait for off, on and status.
    pub timeout_ms: Millis,
    /// Requester's wait for reboot.
    pub reboot_timeout_ms: Millis,
    /// fence_virtd's unsafe rule: answer for unknown VMs without quorum.
    pub unknown_without_quorum: bool,
    /// Delay before the highest id answers for an unknown VM; cancelled when
    /// any other node replies first.
    pub unknown_grace_ms: Millis,
}

impl Default for FenceRules {
    fn default() -> Self {
        Self {
            cpg: true,
            timeout_ms: 20_000,
            reboot_timeout_ms: 60_000,
            unknown_without_quorum: false,
            unknown_grace_ms: 250,
        }
    }
}

/// The payload of a `fence-agents` REQUEST or REPLY (`struct cpg_fence_req`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceWire {
    pub vm_name: String,
    /// `fence_cmd_t`.
    pub request: i32,
    /// The fence client's seqno (fence_virtd: off/on only; 0 otherwise).
    pub seqno: u32,
    /// 0 in requests; the result byte in replies.
    pub response: i32,
}

/// A local libvirt action the libvirt driver must carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceAct {
    pub job: u64,
    pub op: FenceOp,
    pub uri: String,
    pub name: String,
    pub uuid: String,
}

/// Who handles a request, as seen from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node acts on its local domain.
    Act {
        uri: String,
        name: String,
        uuid: String,
    },
    /// This node answers at once without acting.
    Answer(FenceResult, String),
    /// No member knows the VM: the highest-id rule applies.
    Unknown,
    /// Another node answers.
    Silent,
}

/// What the requester waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// The first reply from anyone (the VM has no active holder).
    Anyone,
    /// One reply from any of these holders.
    OneOf(BTreeSet<NodeId>),
    /// A reply from every one of these holders (off of a conflicted VM).
    All(BTreeSet<NodeId>),
}

#[derive(Debug, Clone)]
struct Pending {
    id: u64,
    op: FenceOp,
    domain: String,
    source: String,
    started: Millis,
    deadline: Millis,
    expect: Expect,
    /// Replies so far (for `All`): node → result.
    got: BTreeMap<NodeId, FenceResult>,
}

#[derive(Debug, Clone)]
enum JobFor {
    /// A CPG request from `requester` with header `seqno`.
    Cpg {
        requester: NodeId,
        seqno: u32,
        body: FenceWire,
    },
    /// A local request (libvirt backend) with the caller's id.
    Local { id: u64, source: String },
}

#[derive(Debug, Clone)]
struct Job {
    op: FenceOp,
    domain: String,
    started: Millis,
    for_: JobFor,
}

#[derive(Debug, Clone)]
struct UnknownAnswer {
    requester: NodeId,
    seqno: u32,
    body: FenceWire,
    op: FenceOp,
    due: Millis,
    received: Millis,
}

/// The router's state inside [`Cluster`].
#[derive(Debug, Clone, Default)]
pub(super) struct FenceState {
    next_seqno: u32,
    next_job: u64,
    /// Requests this node sent, by CPG header seqno.
    pending: BTreeMap<u32, Pending>,
    /// Local actions in progress.
    jobs: BTreeMap<u64, Job>,
    /// Answers for unknown VMs waiting out their grace.
    unknown: Vec<UnknownAnswer>,
}

impl FenceState {
    pub(super) fn new(seed: u32) -> Self {
        Self {
            // Seeded so that a restarted daemon does not take replies meant
            // for its previous life as its own.
            next_seqno: seed.max(1),
            next_job: 1,
            ..Default::default()
        }
    }
}

fn unknown_answer(op: FenceOp) -> FenceResult {
    match op {
        FenceOp::Status => FenceResult::Off,
        FenceOp::Off | FenceOp::Reboot => FenceResult::Ok,
        _ => FenceResult::Fail,
    }
}

fn result_of(response: i32) -> FenceResult {
    u8::try_from(response)
        .ok()
        .and_then(FenceResult::from_raw)
        .unwrap_or(FenceResult::Fail)
}

/// Sorts results by how bad they are, for combining several replies.
fn badness(r: FenceResult) -> u8 {
    match r {
        FenceResult::Ok | FenceResult::Off => 0,
        FenceResult::Fail => 1,
        FenceResult::Denied => 2,
    }
}

fn list(nodes: &BTreeSet<NodeId>) -> String {
    nodes
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A target string names a VM by UUID when it has the canonical form.
fn matches(target: &str, name: &str, uuid: &str) -> bool {
    if fenceline_proto::api::is_canonical_uuid(target) {
        uuid.eq_ignore_ascii_case(target)
    } else {
        name.eq_ignore_ascii_case(target)
    }
}

impl Cluster {
    /// True while requests, actions or grace answers are outstanding; the
    /// state task then sends `Tick`s.
    pub fn fence_busy(&self) -> bool {
        !self.fence.pending.is_empty()
            || !self.fence.jobs.is_empty()
            || !self.fence.unknown.is_empty()
    }

    /// Nodes in `fence-agents` (any daemon) and the highest of them.
    pub(super) fn fa_members(&self) -> BTreeSet<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| !n.fa_pids.is_empty())
            .map(|(id, _)| *id)
            .collect()
    }

    fn node_label(&self, id: NodeId) -> String {
        match self.node_name(id) {
            Some(n) => format!("{n} ({id})"),
            None => format!("node {id}"),
        }
    }

    fn find_local(&self, target: &str) -> Option<(String, String, String, bool)> {
        let mut best: Option<(String, String, String, bool)> = None;
        for (uri, u) in &self.local {
            for o in u.domains.values() {
                if matches(target, &o.name, &o.uuid) {
                    let active = o.state.is_active();
                    if best.as_ref().is_none_or(|b| !b.3 && active) {
                        best = Some((uri.clone(), o.name.clone(), o.uuid.clone(), active));
                    }
                }
            }
        }
        best
    }

    /// (active holders, all hosts defining it) as the map knows them.
    fn holders(&self, target: &str) -> Option<(BTreeSet<NodeId>, BTreeSet<NodeId>)> {
        let key_hit = if fenceline_proto::api::is_canonical_uuid(target) {
            self.map.get(&DomKey::of("", target))
        } else {
            None
        };
        let entry = key_hit.or_else(|| {
            self.map
                .values()
                .find(|e| matches(target, &e.name, &e.uuid))
        })?;
        let active = entry
            .placements
            .iter()
            .filter(|p| p.state.is_active())
            .map(|p| p.nodeid)
            .collect();
        let all = entry.placements.iter().map(|p| p.nodeid).collect();
        Some((active, all))
    }

    /// Who handles `op` on `target`, from this node's point of view.
    pub fn fence_route(&self, target: &str, op: FenceOp) -> Route {
        let me = self.local_nodeid.unwrap_or(0);
        let local = self.find_local(target);
        let (mut active, mut all) = self.holders(target).unwrap_or_default();
        if let Some((_, _, _, is_active)) = &local {
            all.insert(me);
            if *is_active {
                active.insert(me);
            } else {
                // Our own libvirt is fresher than the map for this host.
                active.remove(&me);
            }
        }
        if local.is_none() && all.is_empty() {
            return Route::Unknown;
        }
        let act = || match &local {
            Some((uri, name, uuid, _)) => Route::Act {
                uri: uri.clone(),
                name: name.clone(),
                uuid: uuid.clone(),
            },
            None => Route::Silent,
        };
        if active.len() > 1 {
            let first = active.first().copied() == Some(me);
            return match op {
                FenceOp::Off if active.contains(&me) => act(),
                FenceOp::Status if first => Route::Answer(
                    FenceResult::Ok,
                    format!("running on nodes {} (conflict)", list(&active)),
                ),
                FenceOp::On | FenceOp::Reboot if first => Route::Answer(
                    FenceResult::Fail,
                    format!(
                        "running on nodes {} at once (conflict): refusing to {op}; fence it off first",
                        list(&active)
                    ),
                ),
                _ => Route::Silent,
            };
        }
        if let Some(&h) = active.first() {
            return if h == me { act() } else { Route::Silent };
        }
        // Shut off everywhere: the lowest defining node answers.
        if all.first().copied() != Some(me) {
            return Route::Silent;
        }
        if op == FenceOp::On && all.len() > 1 {
            return Route::Answer(
                FenceResult::Fail,
                format!(
                    "defined on nodes {} and shut off everywhere: refusing to choose where to start it",
                    list(&all)
                ),
            );
        }
        act()
    }

    /// A fence request from a listener or the control socket (`id` is the
    /// state task's handle for the answer).
    pub(super) fn fence_submit(
        &mut self,
        at: Millis,
        id: u64,
        op: FenceOp,
        domain: String,
        source: String,
        out: &mut Output,
    ) {
        let refuse = |this: &mut Self, out: &mut Output, result, why: String| {
            this.fence_finish(
                at,
                id,
                op,
                &domain,
                &source,
                at,
                result,
                None,
                Some(why),
                out,
            );
        };
        if !matches!(
            op,
            FenceOp::Off | FenceOp::On | FenceOp::Reboot | FenceOp::Status
        ) {
            return refuse(
                self,
                out,
                FenceResult::Fail,
                format!("`{op}` is not routed"),
            );
        }
        if domain.is_empty() || domain.len() > MAX_CPG_VM_NAME || domain.contains('\0') {
            return refuse(
                self,
                out,
                FenceResult::Fail,
                "the VM name must be 1 to 127 bytes".into(),
            );
        }
        if !self.cfg.fence.cpg {
            // libvirt backend: this host only.
            return match self.find_local(&domain) {
                Some((uri, name, uuid, _)) => {
                    let job = self.fence.next_job;
                    self.fence.next_job += 1;
                    self.fence.jobs.insert(
                        job,
                        Job {
                            op,
                            domain: domain.clone(),
                            started: at,
                            for_: JobFor::Local { id, source },
                        },
                    );
                    out.effects.push(super::Effect::FenceAct(FenceAct {
                        job,
                        op,
                        uri,
                        name,
                        uuid,
                    }));
                }
                None if op == FenceOp::Status => refuse(
                    self,
                    out,
                    FenceResult::Off,
                    "not defined on this host".into(),
                ),
                None => refuse(
                    self,
                    out,
                    FenceResult::Fail,
                    "not defined on this host (libvirt backend: no routing)".into(),
                ),
            };
        }
        let Some(me) = self.local_nodeid.filter(|_| self.corosync.connected) else {
            return refuse(
                self,
                out,
                FenceResult::Fail,
                "corosync is not available: the cluster view is unknown, refusing".into(),
            );
        };
        if self.nodes.get(&me).is_none_or(|n| n.fa_pids.is_empty()) {
            return refuse(
                self,
                out,
                FenceResult::Fail,
                "this daemon has not joined the fence-agents group yet".into(),
            );
        }
        let route = self.fence_route(&domain, op);
        let (mut active, _) = self.holders(&domain).unwrap_or_default();
        if let Some((_, _, _, a)) = self.find_local(&domain) {
            if a {
                active.insert(me);
            } else {
                active.remove(&me);
            }
        }
        if route == Route::Unknown && !self.quorate() && !self.cfg.fence.unknown_without_quorum {
            return refuse(
                self,
                out,
                FenceResult::Fail,
                format!(
                    "no quorum: no member knows `{domain}`, and without quorum it may be running in another partition; refusing to assume it is off"
                ),
            );
        }
        if active.len() > 1 && matches!(op, FenceOp::On | FenceOp::Reboot) {
            return refuse(
                self,
                out,
                FenceResult::Fail,
                format!(
                    "running on nodes {} at once (conflict): refusing to {op}; fence it off first",
                    list(&active)
                ),
            );
        }
        let expect = match active.len() {
            0 => Expect::Anyone,
            1 => Expect::OneOf(active),
            _ if op == FenceOp::Off => Expect::All(active),
            _ => Expect::OneOf(active),
        };
        let seqno = self.fence.next_seqno;
        self.fence.next_seqno = self.fence.next_seqno.wrapping_add(1).max(1);
        let wait = if op == FenceOp::Reboot {
            self.cfg.fence.reboot_timeout_ms
        } else {
            self.cfg.fence.timeout_ms
        };
        self.fence.pending.insert(
            seqno,
            Pending {
                id,
                op,
                domain: domain.clone(),
                source,
                started: at,
                deadline: at + wait,
                expect,
                got: BTreeMap::new(),
            },
        );
        out.effects.push(super::Effect::FenceCpgRequest {
            seqno,
            body: FenceWire {
                vm_name: domain,
                request: i32::from(op.as_raw()),
                seqno: 0,
                response: 0,
            },
        });
    }

    /// A REQUEST in `fence-agents` (ours come back too).
    pub(super) fn fence_cpg_request(
        &mut self,
        at: Millis,
        from: NodeId,
        seqno: u32,
        body: FenceWire,
        out: &mut Output,
    ) {
        let op = match u8::try_from(body.request).ok().and_then(FenceOp::from_raw) {
            Some(op @ (FenceOp::Off | FenceOp::On | FenceOp::Reboot | FenceOp::Status)) => op,
            _ => {
                tracing::debug!(
                    from,
                    seqno,
                    request = body.request,
                    "fence-agents REQUEST with an op nobody routes; ignored"
                );
                return;
            }
        };
        if body.vm_name.is_empty() {
            return;
        }
        let Some(me) = self.local_nodeid else { return };
        match self.fence_route(&body.vm_name, op) {
            Route::Silent => {}
            Route::Act { uri, name, uuid } => {
                let job = self.fence.next_job;
                self.fence.next_job += 1;
                self.fence.jobs.insert(
                    job,
                    Job {
                        op,
                        domain: body.vm_name.clone(),
                        started: at,
                        for_: JobFor::Cpg {
                            requester: from,
                            seqno,
                            body,
                        },
                    },
                );
                out.effects.push(super::Effect::FenceAct(FenceAct {
                    job,
                    op,
                    uri,
                    name,
                    uuid,
                }));
            }
            Route::Answer(result, why) => {
                self.fence_reply(at, at, from, seqno, body, op, result, Some(why), out);
            }
            Route::Unknown => {
                if !self.cfg.fence.cpg {
                    return;
                }
                let high = self.fa_members().last().copied();
                if high != Some(me) {
                    return;
                }
                if !self.quorate() && !self.cfg.fence.unknown_without_quorum {
                    let why = format!(
                        "no quorum: no member knows `{}`; refusing to assume it is off",
                        body.vm_name
                    );
                    tracing::warn!(requester = from, vm = %body.vm_name, "{why}");
                    self.fence_reply(
                        at,
                        at,
                        from,
                        seqno,
                        body,
                        op,
                        FenceResult::Fail,
                        Some(why),
                        out,
                    );
                    return;
                }
                self.fence.unknown.push(UnknownAnswer {
                    requester: from,
                    seqno,
                    body,
                    op,
                    due: at + self.cfg.fence.unknown_grace_ms,
                    received: at,
                });
            }
        }
    }

    /// Sends a REPLY and records that this node answered.
    #[allow(clippy::too_many_arguments)]
    fn fence_reply(
        &mut self,
        at: Millis,
        started: Millis,
        requester: NodeId,
        seqno: u32,
        mut body: FenceWire,
        op: FenceOp,
        result: FenceResult,
        detail: Option<String>,
        out: &mut Output,
    ) {
        let domain = body.vm_name.clone();
        body.response = i32::from(result.as_raw());
        out.effects.push(super::Effect::FenceCpgReply {
            seqno,
            target: requester,
            body,
        });
        let source = format!("cpg:{}", self.node_label(requester));
        let me = self.local_nodeid;
        self.emit(
            at,
            EventKind::Fence {
                phase: FencePhase::Acted,
                op,
                domain,
                source,
                requester: Some(requester),
                acted_by: me,
                result,
                duration_ms: at.saturating_sub(started),
                detail,
            },
            out,
        );
    }

    /// A REPLY in `fence-agents`.
    pub(super) fn fence_cpg_reply(
        &mut self,
        at: Millis,
        from: NodeId,
        seqno: u32,
        target: NodeId,
        body: FenceWire,
        out: &mut Output,
    ) {
        // Someone answered: a pending unknown-VM answer is not needed.
        self.fence
            .unknown
            .retain(|u| !(u.requester == target && u.seqno == seqno));
        if Some(target) != self.local_nodeid {
            return;
        }
        let Some(p) = self.fence.pending.get_mut(&seqno) else {
            return;
        };
        if !p.domain.eq_ignore_ascii_case(&body.vm_name) || i32::from(p.op.as_raw()) != body.request
        {
            tracing::warn!(from, seqno, vm = %body.vm_name, "fence-agents REPLY does not match our request; ignored");
            return;
        }
        let result = result_of(body.response);
        let done = match &mut p.expect {
            Expect::Anyone => Some((result, None)),
            Expect::OneOf(set) if set.contains(&from) => Some((result, None)),
            Expect::OneOf(set) => {
                tracing::info!(from, seqno, holders = %list(set), "reply from a node that does not hold the VM; waiting for its holder");
                None
            }
            Expect::All(set) => {
                if set.contains(&from) {
                    p.got.insert(from, result);
                }
                if set.iter().all(|n| p.got.contains_key(n)) {
                    let worst = p
                        .got
                        .values()
                        .copied()
                        .max_by_key(|r| badness(*r))
                        .unwrap_or(FenceResult::Fail);
                    Some((worst, Some(format!("destroyed on nodes {}", list(set)))))
                } else {
                    None
                }
            }
        };
        if let Some((result, detail)) = done {
            let p = self.fence.pending.remove(&seqno).expect("present");
            self.fence_finish(
                at,
                p.id,
                p.op,
                &p.domain,
                &p.source,
                p.started,
                result,
                Some(from),
                detail,
                out,
            );
        }
    }

    /// The libvirt driver finished a local action.
    pub(super) fn fence_acted(
        &mut self,
        at: Millis,
        job: u64,
        result: FenceResult,
        detail: Option<String>,
        out: &mut Output,
    ) {
        let Some(j) = self.fence.jobs.remove(&job) else {
            return;
        };
        match j.for_ {
            JobFor::Cpg {
                requester,
                seqno,
                body,
            } => self.fence_reply(
                at, j.started, requester, seqno, body, j.op, result, detail, out,
            ),
            JobFor::Local { id, source } => {
                let me = self.local_nodeid;
                self.fence_finish(
                    at, id, j.op, &j.domain, &source, j.started, result, me, detail, out,
                );
            }
        }
    }

    /// The corosync driver could not send our REQUEST.
    pub(super) fn fence_send_failed(
        &mut self,
        at: Millis,
        seqno: u32,
        error: String,
        out: &mut Output,
    ) {
        if let Some(p) = self.fence.pending.remove(&seqno) {
            self.fail_pending(
                at,
                p,
                format!("could not send the request over CPG: {error}"),
                out,
            );
        }
    }

    /// Timeouts and grace answers.
    pub(super) fn fence_tick(&mut self, at: Millis, out: &mut Output) {
        let due: Vec<UnknownAnswer> = {
            let (due, keep) = std::mem::take(&mut self.fence.unknown)
                .into_iter()
                .partition(|u| u.due <= at);
            self.fence.unknown = keep;
            due
        };
        for u in due {
            let me = self.local_nodeid;
            let still_high = self.fa_members().last().copied() == me;
            let known = self.fence_route(&u.body.vm_name, u.op) != Route::Unknown;
            if !still_high || known {
                // The map learnt of the VM (its owner answers) or a higher
                // node joined: not ours to answer any more.
                continue;
            }
            let quorate = self.quorate();
            let (result, why) = if quorate || self.cfg.fence.unknown_without_quorum {
                (
                    unknown_answer(u.op),
                    format!(
                        "no member knows `{}`; answered as the highest node id{}",
                        u.body.vm_name,
                        if quorate {
                            " of a quorate cluster"
                        } else {
                            " WITHOUT quorum (unknown_vm_without_quorum)"
                        }
                    ),
                )
            } else {
                (
                    FenceResult::Fail,
                    format!(
                        "no quorum: no member knows `{}`; refusing to assume it is off",
                        u.body.vm_name
                    ),
                )
            };
            self.fence_reply(
                at,
                u.received,
                u.requester,
                u.seqno,
                u.body,
                u.op,
                result,
                Some(why),
                out,
            );
        }
        let expired: Vec<u32> = self
            .fence
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= at)
            .map(|(s, _)| *s)
            .collect();
        for seqno in expired {
            let p = self.fence.pending.remove(&seqno).expect("present");
            let why = match &p.expect {
                Expect::Anyone => "no node answered".to_string(),
                Expect::OneOf(s) => format!("no reply from node(s) {}", list(s)),
                Expect::All(s) => {
                    let missing: BTreeSet<NodeId> = s
                        .iter()
                        .filter(|n| !p.got.contains_key(n))
                        .copied()
                        .collect();
                    format!("no reply from node(s) {}", list(&missing))
                }
            };
            let secs = (p.deadline - p.started) / 1000;
            self.fail_pending(at, p, format!("timed out after {secs} s: {why}"), out);
        }
    }

    /// Corosync went away: nothing pending can be answered any more.
    pub(super) fn fence_corosync_down(&mut self, at: Millis, out: &mut Output) {
        self.fence.unknown.clear();
        for p in std::mem::take(&mut self.fence.pending).into_values() {
            self.fail_pending(
                at,
                p,
                "lost the corosync connection while waiting for the reply",
                out,
            );
        }
    }

    /// Nodes left `fence-agents`: requests waiting only on them fail now.
    pub(super) fn fence_nodes_left(
        &mut self,
        at: Millis,
        gone: &BTreeSet<NodeId>,
        out: &mut Output,
    ) {
        let mut failed = Vec::new();
        for (seqno, p) in &mut self.fence.pending {
            let (set, all_needed) = match &mut p.expect {
                Expect::Anyone => continue,
                Expect::OneOf(s) => (s, false),
                Expect::All(s) => (s, true),
            };
            let lost: BTreeSet<NodeId> = set.intersection(gone).copied().collect();
            if lost.is_empty() {
                continue;
            }
            set.retain(|n| !lost.contains(n));
            if all_needed || set.is_empty() {
                failed.push((*seqno, lost));
            }
        }
        for (seqno, lost) in failed {
            let p = self.fence.pending.remove(&seqno).expect("present");
            self.fail_pending(
                at,
                p,
                format!(
                    "node(s) {} left before replying; the VM's state is unknown",
                    list(&lost)
                ),
                out,
            );
        }
    }

    /// Fails a request this node sent (timeout, lost holder, lost corosync,
    /// send failure) with the reason.
    fn fail_pending(&mut self, at: Millis, p: Pending, why: impl Into<String>, out: &mut Output) {
        self.fence_finish(
            at,
            p.id,
            p.op,
            &p.domain,
            &p.source,
            p.started,
            FenceResult::Fail,
            None,
            Some(why.into()),
            out,
        );
    }

    /// Answers the caller and records the outcome.
    #[allow(clippy::too_many_arguments)]
    fn fence_finish(
        &mut self,
        at: Millis,
        id: u64,
        op: FenceOp,
        domain: &str,
        source: &str,
        started: Millis,
        result: FenceResult,
        acted_by: Option<NodeId>,
        detail: Option<String>,
        out: &mut Output,
    ) {
        let duration_ms = at.saturating_sub(started);
        out.effects.push(super::Effect::FenceDone {
            id,
            result,
            acted_by,
            duration_ms,
            detail: detail.clone(),
        });
        let requester = self.local_nodeid;
        self.emit(
            at,
            EventKind::Fence {
                phase: FencePhase::Result,
                op,
                domain: domain.to_string(),
                source: source.to_string(),
                requester,
                acted_by,
                result,
                duration_ms,
                detail,
            },
            out,
        );
    }
}
