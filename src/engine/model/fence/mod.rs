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
//!   holders when its own REQUEST comes back in total order (a shut-off copy
//!   on another fence_virtd host cannot answer for the real owner), with a
//!   timeout, and fails early when those nodes leave.
//! - **The truth rule** (`accounting.rs`, README "When fenceline says off")
//!   is checked before a shut-off copy acts, before the unknown-VM answer,
//!   when an action ends, and by the requester before it answers its caller:
//!   "ok"/"off" only when the owner acted and no lost placement was last
//!   seen running, or nobody holds the VM and every node is accounted for.
//!   The unknown-VM grace applies only with fence_virtd peers.
//!
//! Here: the types and the routing decision ([`Cluster::fence_route`]);
//! `acting.rs`: the node that gets a REQUEST (act, answer, or answer for an
//! unknown VM after the grace); `requester.rs`: the node that sends one
//! (pending requests, their replies, timeouts and early failures);
//! `claim.rs`: which fenceline node connects back for a multicast request.

use std::collections::{BTreeMap, BTreeSet};

use super::{Cluster, DomKey, Effect, LocalDomain, Output};
use fenceline_proto::api::{FenceOp, FenceResult, Millis, NodeId};

mod acting;
pub(super) mod claim;
mod migration;
pub(super) use acting::Seen;
mod requester;

pub use claim::{CLAIM_TIMEOUT_MS, ClaimOutcome};

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
    /// Self-fencing: destroy this host's active VMs after this long out of
    /// a quorate membership (`[fencing] self_fence_secs`); 0 = off.
    pub self_fence_ms: Millis,
    /// How fence requests name VMs (`[libvirt] name_mode`).
    pub name_match: NameMatch,
}

/// fence_virtd's `name_mode`: a request's target is matched against VM
/// names only, or against UUIDs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameMatch {
    #[default]
    Name,
    Uuid,
}

impl NameMatch {
    /// `target` names the VM `name`/`uuid`.
    pub fn matches(self, target: &str, name: &str, uuid: &str) -> bool {
        match self {
            NameMatch::Name => name.eq_ignore_ascii_case(target),
            NameMatch::Uuid => !uuid.is_empty() && uuid.eq_ignore_ascii_case(target),
        }
    }
}

/// How much longer than the requester's own wait the engine's caller waits:
/// the router always answers first; this only fires if the engine died.
pub const CALL_MARGIN_MS: Millis = 10_000;

impl FenceRules {
    /// The requester's wait for `op`.
    pub fn wait_ms(&self, op: FenceOp) -> Millis {
        if op == FenceOp::Reboot {
            self.reboot_timeout_ms
        } else {
            self.timeout_ms
        }
    }

    /// The longest a caller of the engine waits for the answer to `op`
    /// (`EngineHandle::fence`): the configured wait plus [`CALL_MARGIN_MS`].
    pub fn call_limit_ms(&self, op: FenceOp) -> Millis {
        self.wait_ms(op).saturating_add(CALL_MARGIN_MS)
    }
}

impl Default for FenceRules {
    fn default() -> Self {
        Self {
            cpg: true,
            timeout_ms: 20_000,
            reboot_timeout_ms: 60_000,
            unknown_without_quorum: false,
            unknown_grace_ms: 250,
            self_fence_ms: 0,
            name_match: NameMatch::Name,
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
    /// Decided when our own REQUEST comes back in total order (every
    /// fenceline node routes it on the same map then), not at submit.
    expect: Option<Expect>,
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
    /// The local copy was active: its owner acts (truth rule (a)).
    owner: bool,
    /// The domain acted on (set by `start_job`).
    key: Option<DomKey>,
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
    /// A local domain's inactive state held back while a fence reboot of it
    /// runs (the momentary stop of destroy-then-start is not announced: it
    /// would make the VM look shut off everywhere).
    held: BTreeMap<DomKey, (String, super::LocalDomain)>,
    /// Domains with a fence `off` since the last time no job ran on them:
    /// their stops are real and never held back.
    no_hold: BTreeSet<DomKey>,
    /// Who connects back for each multicast run (`claim.rs`).
    claims: claim::Claims,
    /// Local domains that left by live migration (`migration.rs`).
    migrated: BTreeMap<DomKey, migration::Migrated>,
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

/// The answer claims the VM runs nowhere ("ok" for off/reboot, "off" for
/// status, a start for on).
fn claims_off(op: FenceOp, r: FenceResult) -> bool {
    match op {
        FenceOp::Status => r == FenceResult::Off,
        FenceOp::Off | FenceOp::Reboot | FenceOp::On => r == FenceResult::Ok,
        _ => false,
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

impl Cluster {
    /// True while requests, actions or grace answers are outstanding; the
    /// state task then sends `Tick`s.
    pub fn fence_busy(&self) -> bool {
        !self.fence.pending.is_empty()
            || !self.fence.jobs.is_empty()
            || !self.fence.unknown.is_empty()
            || self.claims_busy()
    }

    pub(in crate::engine::model) fn node_label(&self, id: NodeId) -> String {
        match self.node_name(id) {
            Some(n) => format!("{n} ({id})"),
            None => format!("node {id}"),
        }
    }

    fn find_local(&self, target: &str) -> Option<(String, String, String, bool)> {
        let mut best: Option<(String, String, String, bool)> = None;
        for (uri, u) in &self.local {
            for o in u.domains.values() {
                if self.cfg.fence.name_match.matches(target, &o.name, &o.uuid) {
                    let active = o.state.is_active();
                    if best.as_ref().is_none_or(|b| !b.3 && active) {
                        best = Some((uri.clone(), o.name.clone(), o.uuid.clone(), active));
                    }
                }
            }
        }
        best
    }

    /// (active holders, all hosts defining it) as the map knows them; lost
    /// placements are left out (nobody there can answer: the truth rule,
    /// [`Cluster::untrue`], looks at them).
    fn holders(&self, target: &str) -> Option<(BTreeSet<NodeId>, BTreeSet<NodeId>)> {
        let entry = self.entry_of(target)?;
        let live = entry.placements.iter().filter(|p| !p.lost);
        let active = live
            .clone()
            .filter(|p| p.state.is_active())
            .map(|p| p.nodeid)
            .collect();
        let all = live.map(|p| p.nodeid).collect();
        Some((active, all))
    }

    /// The fence_virtd members that hold a (live, shut-off) copy of
    /// `target`: their own reply reads their own libvirt, so it vouches for
    /// them (`untrue_vouched`).
    fn fence_virtd_definers(&self, target: &str) -> BTreeSet<NodeId> {
        let (_, all) = self.holders(target).unwrap_or_default();
        all.into_iter()
            .filter(|id| self.is_fence_virtd(*id))
            .collect()
    }

    /// The live active holders as this node sees them (its own libvirt is
    /// fresher than the map for itself).
    fn live_active(&self, target: &str) -> BTreeSet<NodeId> {
        let (mut active, _) = self.holders(target).unwrap_or_default();
        if let (Some(me), Some((_, _, _, a))) = (self.local_nodeid, self.find_local(target)) {
            if a {
                active.insert(me);
            } else {
                active.remove(&me);
            }
        }
        active
    }

    /// Why `target` cannot be routed at all: it does not fit `name_mode`,
    /// or it is a name that more than one VM (by UUID) has, here or in the
    /// map (refused, whichever copy was meant).
    pub(in crate::engine::model) fn unroutable(&self, target: &str) -> Option<String> {
        let uuid_shaped = fenceline_proto::api::is_canonical_uuid(target);
        match self.cfg.fence.name_match {
            NameMatch::Uuid if uuid_shaped => return None,
            NameMatch::Uuid => {
                return Some(format!(
                    "`{target}` is not a UUID, and name_mode = \"uuid\" matches VMs by UUID only; use the UUID"
                ));
            }
            // Matching names only, a UUID would find no VM, and the
            // unknown-VM rule would answer for a VM that may well run.
            NameMatch::Name
                if uuid_shaped
                    && self.entry_of(target).is_none()
                    && self.find_local(target).is_none() =>
            {
                return Some(format!(
                    "`{target}` is a UUID, and name_mode = \"name\" matches VMs by name only; use the name"
                ));
            }
            NameMatch::Name => {}
        }
        let local = self.local.values().flat_map(|u| u.domains.values());
        let uuids: BTreeSet<String> = self
            .map
            .values()
            .map(|e| (e.name.as_str(), e.uuid.as_str()))
            .chain(local.map(|o| (o.name.as_str(), o.uuid.as_str())))
            .filter(|(n, u)| !u.is_empty() && n.eq_ignore_ascii_case(target))
            .map(|(_, u)| u.to_ascii_lowercase())
            .collect();
        (uuids.len() > 1).then(|| {
            let list: Vec<&str> = uuids.iter().map(String::as_str).collect();
            format!(
                "`{target}` names {} VMs ({}): ambiguous; use the UUID",
                uuids.len(),
                list.join(", ")
            )
        })
    }

    /// The local copy of `target` was not found where the map had it: why
    /// an "ok"/"off" may not stand (another node holds it active), if so.
    fn vanished_elsewhere(&self, target: &str, op: FenceOp) -> Option<String> {
        let me = self.local_nodeid?;
        let mut elsewhere = self.holders(target).unwrap_or_default().0;
        elsewhere.remove(&me);
        (!elsewhere.is_empty()).then(|| {
            format!(
                "`{target}` was not found on this host, where the map had it, and the map now has it active on nodes {}: refusing to answer {}",
                list(&elsewhere),
                if op == FenceOp::Status { "off" } else { "ok" }
            )
        })
    }

    /// Who handles `op` on `target`, from this node's point of view.
    pub fn fence_route(&self, target: &str, op: FenceOp) -> Route {
        let me = self.local_nodeid.unwrap_or(0);
        let local = self.find_local(target);
        let (mut active, mut all) = self.holders(target).unwrap_or_default();
        if let Some((_, name, uuid, is_active)) = &local {
            all.insert(me);
            // Our own libvirt is fresher than the map for this host; but
            // while our stop is not delivered, the requester (whose map
            // still has us active) waits for our answer. Never for `on`:
            // acting would start a copy that may run elsewhere by now.
            let in_flight = op != FenceOp::On && self.stop_in_flight(&DomKey::of(name, uuid));
            if *is_active || in_flight {
                active.insert(me);
            } else {
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
            return match (h == me, op) {
                // Running here: starting it again could only race a live
                // migration away and make it run twice.
                (true, FenceOp::On) => Route::Answer(
                    FenceResult::Ok,
                    format!("`{target}` is already running on this host"),
                ),
                (true, _) => act(),
                (false, _) => Route::Silent,
            };
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

    /// Starts a local action: records the job and asks the libvirt driver.
    fn start_job(
        &mut self,
        at: Millis,
        mut job: Job,
        uri: String,
        name: String,
        uuid: String,
        out: &mut Output,
    ) {
        let id = self.fence.next_job;
        self.fence.next_job += 1;
        let op = job.op;
        let key = DomKey::of(&name, &uuid);
        job.key = Some(key.clone());
        self.fence.jobs.insert(id, job);
        if op == FenceOp::Off {
            self.fence.no_hold.insert(key.clone());
            if let Some((uri, d)) = self.fence.held.remove(&key) {
                self.local_domain(at, uri, d, out);
            }
        }
        out.effects.push(Effect::FenceAct(FenceAct {
            job: id,
            op,
            uri,
            name,
            uuid,
        }));
    }

    /// A local domain stops while this node's fence reboot of it runs: the
    /// stop is held back (true) until the reboot ends.
    pub(in crate::engine::model) fn hold_during_reboot(
        &mut self,
        key: &DomKey,
        uri: &str,
        domain: &LocalDomain,
    ) -> bool {
        let rebooting = self
            .fence
            .jobs
            .values()
            .any(|j| j.op == FenceOp::Reboot && j.key.as_ref() == Some(key));
        if rebooting && !domain.state.is_active() && !self.fence.no_hold.contains(key) {
            self.fence
                .held
                .insert(key.clone(), (uri.to_string(), domain.clone()));
            return true;
        }
        self.fence.held.remove(key);
        false
    }

    /// A fence reboot ended: a stop held back is applied unless the domain
    /// was started again (`restarted`).
    fn release_held(&mut self, at: Millis, job: &Job, restarted: bool, out: &mut Output) {
        let Some(key) = &job.key else { return };
        if !self
            .fence
            .jobs
            .values()
            .any(|j| j.key.as_ref() == Some(key))
        {
            self.fence.no_hold.remove(key);
        }
        let still = self
            .fence
            .jobs
            .values()
            .any(|j| j.op == FenceOp::Reboot && j.key.as_ref() == Some(key));
        if still {
            return;
        }
        if let Some((uri, d)) = self.fence.held.remove(key)
            && !restarted
        {
            self.local_domain(at, uri, d, out);
        }
    }

    /// Timeouts and grace answers.
    pub(in crate::engine::model) fn fence_tick(&mut self, at: Millis, out: &mut Output) {
        self.answer_due_unknown(at, out);
        self.expire_pending(at, out);
        self.claims_tick(at, out);
    }
}
