//! Self-fencing, opt-in (`[fencing] self_fence_secs = N`), after Proxmox
//! HA's model.
//!
//! - **This host.** Once it has not been part of a quorate membership for
//!   N s (corosync lost, inquorate, or cut off; a daemon that starts counts
//!   from its start), it destroys its own active VMs, each as a
//!   [`FenceAct`] (the state task writes the intent record first, as for
//!   any fence action), and keeps destroying any that become active while
//!   it stays out. Each destroy is a `self-fence` fence event (audited) and
//!   an error-level log line ([`Notice::SelfFence`]).
//! - **Announcement.** `PeerInfo::self_fence_secs` says whether a node
//!   self-fences and after how long.
//! - **Peers.** A node that left the membership, announced self-fencing,
//!   and whose daemon did not stop on its own before it left (its own-group
//!   process left with corosync's `NodeDown`, not `ProcDown`/`Leave`), is
//!   accounted for once N s plus [`margin_ms`] have passed since it left,
//!   by this node's clock, and only while this node is quorate. Then its
//!   lost placements leave the map (a `self-fenced` event, audited), as for
//!   an operator's confirmation. A node that did not announce is never
//!   assumed.

use std::collections::{BTreeMap, BTreeSet};

use fenceline_proto::api::{
    DomainState, EventKind, FenceOp, FencePhase, FenceResult, MembershipAction, Millis, NodeId,
};

use super::{Cluster, DomKey, Effect, FenceAct, Group, Input, Notice, Output, OwnMessage};

/// Self-fence jobs are numbered from here, apart from the router's.
pub(super) const JOB_BASE: u64 = 1 << 62;
/// A destroy that failed (or whose stop was not reported) is tried again
/// after this long.
const RETRY_MS: Millis = 5_000;
/// The source of self-fence events and of their audit records.
const SOURCE: &str = "self-fence";

/// How much longer than a node's announced self-fence time peers wait
/// before they treat its VMs as off: max(5 s, N/2). It covers the node
/// noticing its departure later than its peers (corosync's token timeout
/// runs on both sides, the daemon's input queue), the destroys themselves,
/// and clocks that drift apart by less than that within N s.
pub fn margin_ms(n_ms: Millis) -> Millis {
    (n_ms / 2).max(5_000)
}

/// Self-fencing state inside [`Cluster`].
#[derive(Debug, Clone, Default)]
pub(super) struct SelfFence {
    /// Since when this host has not been part of a quorate membership.
    out_since: Option<Millis>,
    /// The local `self-fenced` event was emitted for this time out.
    fired: bool,
    next_job: u64,
    /// Destroys in flight: job → (domain, name, started).
    jobs: BTreeMap<u64, (DomKey, String, Millis)>,
    /// The last destroy started per domain, for [`RETRY_MS`].
    tried: BTreeMap<DomKey, Millis>,
    /// Peers whose daemon stopped on its own (not with its node): they
    /// cannot self-fence until they announce again.
    disarmed: BTreeSet<NodeId>,
    /// Departed peers past their deadline, already purged.
    assumed: BTreeSet<NodeId>,
}

impl SelfFence {
    pub(super) fn new(started: Millis) -> Self {
        Self {
            out_since: Some(started),
            next_job: JOB_BASE,
            ..Self::default()
        }
    }
}

impl Cluster {
    fn self_fence_ms(&self) -> Millis {
        self.cfg.fence.self_fence_ms
    }

    /// What this node announces in its `PeerInfo`.
    pub(super) fn self_fence_secs(&self) -> Option<u32> {
        let ms = self.self_fence_ms();
        (ms > 0).then(|| u32::try_from(ms / 1000).unwrap_or(u32::MAX))
    }

    /// The self-fence time node `id` announced, unless its daemon stopped
    /// on its own since.
    pub(super) fn announced_self_fence(&self, id: NodeId) -> Option<u32> {
        if Some(id) == self.local_nodeid {
            return self.self_fence_secs();
        }
        if self.self_fence.disarmed.contains(&id) {
            return None;
        }
        self.nodes
            .get(&id)
            .and_then(|n| n.info.as_ref())
            .and_then(|i| i.self_fence_secs)
            .filter(|s| *s > 0)
    }

    /// The state task sends `Tick`s while this is true: a local countdown
    /// or destroys run, or a departed self-fencing peer's deadline is ahead.
    pub fn self_fence_waiting(&self) -> bool {
        (self.self_fence_ms() > 0 && self.self_fence.out_since.is_some())
            || !self.self_fence.jobs.is_empty()
            || self.nodes.iter().any(|(id, n)| {
                !n.member
                    && Some(*id) != self.local_nodeid
                    && !self.self_fence.assumed.contains(id)
                    && self.announced_self_fence(*id).is_some()
            })
    }

    /// `Some(how)`: departed node `id` counts as self-fenced at `at`.
    pub(super) fn self_fenced(&self, id: NodeId, at: Millis) -> Option<String> {
        let n = self.nodes.get(&id)?;
        if n.member || Some(id) == self.local_nodeid || !self.quorate() {
            return None;
        }
        let secs = self.announced_self_fence(id)?;
        let n_ms = Millis::from(secs) * 1000;
        let left = at.saturating_sub(n.since);
        if left < n_ms + margin_ms(n_ms) {
            return None;
        }
        let name = self.node_name(id).unwrap_or_else(|| format!("node {id}"));
        Some(format!(
            "{name} self-fenced (left {} s ago, self_fence_secs {secs})",
            left / 1000
        ))
    }

    /// Before an input is applied: a peer's own-group daemon that stops on
    /// its own disarms it; its next announcement arms it again. A finished
    /// self-fence destroy is taken here (true).
    pub(super) fn self_fence_input(&mut self, input: &Input, out: &mut Output) -> bool {
        match input {
            Input::GroupChange {
                group: Group::Own,
                left,
                ..
            } => {
                for l in left {
                    if l.reason != "NodeDown" {
                        self.self_fence.disarmed.insert(l.nodeid);
                    }
                }
            }
            Input::PeerMessage {
                from,
                msg: OwnMessage::Info(_),
                ..
            } => {
                self.self_fence.disarmed.remove(from);
            }
            Input::FenceActed {
                at,
                job,
                result,
                detail,
                ..
            } if *job >= JOB_BASE => {
                self.self_fence_acted(*at, *job, *result, detail.clone(), out);
                return true;
            }
            _ => {}
        }
        false
    }

    /// After every input: this host's countdown and destroys, and peers'
    /// deadlines.
    pub(super) fn self_fence_after(&mut self, at: Millis, out: &mut Output) {
        self.self_fence_peers(at, out);
        let n_ms = self.self_fence_ms();
        let why = self.why_out();
        match (&why, self.self_fence.out_since) {
            (None, Some(_)) => {
                self.self_fence.out_since = None;
                self.self_fence.fired = false;
                self.self_fence.tried.clear();
            }
            (Some(why), None) if n_ms > 0 => {
                self.self_fence.out_since = Some(at);
                let detail = format!(
                    "{why}: this host destroys its VMs in {} s unless it rejoins a quorate membership",
                    n_ms / 1000
                );
                out.notices.push(Notice::SelfFence(detail.clone()));
                self.membership_event(
                    at,
                    MembershipAction::SelfFenceArmed,
                    self.local_nodeid,
                    Some(detail),
                    out,
                );
            }
            _ => {}
        }
        if let (Some(why), Some(since)) = (why, self.self_fence.out_since)
            && n_ms > 0
            && at.saturating_sub(since) >= n_ms
        {
            self.self_fence_destroy(at, since, &why, out);
        }
    }

    /// Why this host is not part of a quorate membership (`None`: it is).
    fn why_out(&self) -> Option<String> {
        let member = self
            .local_nodeid
            .and_then(|id| self.nodes.get(&id))
            .is_some_and(|n| n.member);
        if !self.corosync.connected {
            Some("corosync is lost".into())
        } else if !member {
            Some("this host is not in the membership".into())
        } else if !self.quorate {
            Some("the membership is inquorate".into())
        } else {
            None
        }
    }

    /// Destroys every local domain that is not shut off (and not being
    /// destroyed, and not tried in the last [`RETRY_MS`]).
    fn self_fence_destroy(&mut self, at: Millis, since: Millis, why: &str, out: &mut Output) {
        let busy: BTreeSet<&DomKey> = self.self_fence.jobs.values().map(|j| &j.0).collect();
        let mut todo = Vec::new();
        for (uri, rec) in &self.local {
            for (key, o) in &rec.domains {
                let recent = self
                    .self_fence
                    .tried
                    .get(key)
                    .is_some_and(|t| at.saturating_sub(*t) < RETRY_MS);
                if o.state != DomainState::Shutoff && !busy.contains(key) && !recent {
                    todo.push((uri.clone(), key.clone(), o.name.clone(), o.uuid.clone()));
                }
            }
        }
        let reason = format!(
            "not part of a quorate membership for {} s ({why}; self_fence_secs {})",
            at.saturating_sub(since) / 1000,
            self.self_fence_ms() / 1000
        );
        if !self.self_fence.fired {
            self.self_fence.fired = true;
            let detail = format!("{reason}: destroying this host's active VMs");
            out.notices.push(Notice::SelfFence(detail.clone()));
            self.membership_event(
                at,
                MembershipAction::SelfFenced,
                self.local_nodeid,
                Some(detail),
                out,
            );
        }
        for (uri, key, name, uuid) in todo {
            let job = self.self_fence.next_job;
            self.self_fence.next_job += 1;
            self.self_fence.tried.insert(key.clone(), at);
            self.self_fence.jobs.insert(job, (key, name.clone(), at));
            out.notices.push(Notice::SelfFence(format!(
                "destroying {name}: this host is {reason}"
            )));
            out.effects.push(Effect::FenceAct(FenceAct {
                job,
                op: FenceOp::Off,
                uri,
                name,
                uuid,
            }));
        }
    }

    /// The libvirt driver finished a self-fence destroy.
    fn self_fence_acted(
        &mut self,
        at: Millis,
        job: u64,
        result: FenceResult,
        detail: Option<String>,
        out: &mut Output,
    ) {
        let Some((_, name, started)) = self.self_fence.jobs.remove(&job) else {
            return;
        };
        let detail = match (result, detail) {
            (FenceResult::Ok, d) => d.unwrap_or_else(|| "destroyed".into()),
            (_, d) => {
                let why = d.unwrap_or_else(|| "failed".into());
                out.notices.push(Notice::SelfFence(format!(
                    "destroying {name} failed: {why}; trying again in {} s",
                    RETRY_MS / 1000
                )));
                why
            }
        };
        self.emit(
            at,
            EventKind::Fence {
                phase: FencePhase::Acted,
                op: FenceOp::Off,
                domain: name,
                source: SOURCE.into(),
                requester: None,
                acted_by: self.local_nodeid,
                result,
                duration_ms: at.saturating_sub(started),
                detail: Some(detail),
            },
            out,
        );
    }

    /// Departed self-fencing peers past their deadline: their lost
    /// placements leave the map, once per departure.
    fn self_fence_peers(&mut self, at: Millis, out: &mut Output) {
        let back: Vec<NodeId> = self
            .self_fence
            .assumed
            .iter()
            .copied()
            .filter(|id| self.nodes.get(id).is_some_and(|n| n.member))
            .collect();
        for id in back {
            self.self_fence.assumed.remove(&id);
        }
        let due: Vec<(NodeId, String)> = self
            .nodes
            .keys()
            .filter(|id| !self.self_fence.assumed.contains(id))
            .filter_map(|id| self.self_fenced(*id, at).map(|how| (*id, how)))
            .collect();
        for (id, how) in due {
            self.self_fence.assumed.insert(id);
            self.purge_node(at, id, out);
            self.membership_event(
                at,
                MembershipAction::SelfFenced,
                Some(id),
                Some(format!("{how}; its VMs are treated as off")),
                out,
            );
        }
    }
}
