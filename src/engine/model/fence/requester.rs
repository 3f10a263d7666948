//! The requesting side: a caller's request becomes a CPG REQUEST (or a
//! local job with the libvirt backend), then waits for the reply of the
//! node(s) the map names as holders; timeouts, send failures, holders that
//! leave and a lost corosync end the wait with a failure.

use std::collections::{BTreeMap, BTreeSet};

use fenceline_proto::api::{EventKind, FenceOp, FencePhase, FenceResult, Millis, NodeId};

use super::{
    Expect, FenceWire, Job, JobFor, MAX_CPG_VM_NAME, Pending, Route, badness, claims_off, list,
    result_of,
};
use crate::engine::model::{Cluster, Effect, Notice, Output};

impl Cluster {
    /// A fence request from a listener or the control socket (`id` is the
    /// state task's handle for the answer).
    pub(in crate::engine::model) fn fence_submit(
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
        if let Some(why) = self.unroutable(&domain) {
            return refuse(self, out, FenceResult::Fail, why);
        }
        if !self.cfg.fence.cpg {
            // libvirt backend: this host only.
            return match self.find_local(&domain) {
                Some((uri, name, uuid, _)) => {
                    let job = Job {
                        op,
                        domain: domain.clone(),
                        started: at,
                        for_: JobFor::Local { id, source },
                        owner: false,
                        key: None,
                    };
                    self.start_job(at, job, uri, name, uuid, out);
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
        let active = self.live_active(&domain);
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
        let seqno = self.fence.next_seqno;
        self.fence.next_seqno = self.fence.next_seqno.wrapping_add(1).max(1);
        let wait = self.cfg.fence.wait_ms(op);
        self.fence.pending.insert(
            seqno,
            Pending {
                id,
                op,
                domain: domain.clone(),
                source,
                started: at,
                deadline: at + wait,
                expect: None,
                got: BTreeMap::new(),
            },
        );
        out.effects.push(Effect::FenceCpgRequest {
            seqno,
            body: FenceWire {
                vm_name: domain,
                request: i32::from(op.as_raw()),
                seqno: 0,
                response: 0,
            },
        });
    }

    /// Our own REQUEST `seqno` came back in total order: decide whom we
    /// wait for on the map every fenceline node routes it on; fail at once
    /// when no live node holds the VM active and the truth rule forbids
    /// the answer a shut-off copy or the unknown-VM rule would give.
    pub(super) fn own_request_delivered(&mut self, at: Millis, seqno: u32, out: &mut Output) {
        let Some((op, domain)) = self
            .fence
            .pending
            .get(&seqno)
            .filter(|p| p.expect.is_none())
            .map(|p| (p.op, p.domain.clone()))
        else {
            return;
        };
        let active = self.live_active(&domain);
        // Shut off everywhere: the fence_virtd members that define it read
        // their own libvirt when they reply, so they answer for themselves
        // (every other node must still be accounted for).
        let vouched = if active.is_empty() {
            self.fence_virtd_definers(&domain)
        } else {
            BTreeSet::new()
        };
        let refusal = self.unroutable(&domain).or_else(|| {
            active
                .is_empty()
                .then(|| self.untrue_vouched(at, &domain, op, false, &vouched))
                .flatten()
        });
        if let Some(why) = refusal {
            let p = self.fence.pending.remove(&seqno).expect("present");
            return self.fail_pending(at, p, why, out);
        }
        let fence_virtd_member = self.nodes.keys().any(|id| self.is_fence_virtd(*id));
        let expect = match active.len() {
            0 if fence_virtd_member && !vouched.is_empty() => Expect::OneOf(vouched),
            0 => Expect::Anyone,
            1 => Expect::OneOf(active),
            _ if op == FenceOp::Off => Expect::All(active),
            _ => Expect::OneOf(active),
        };
        if let Some(p) = self.fence.pending.get_mut(&seqno) {
            p.expect = Some(expect);
        }
    }

    /// A REPLY in `fence-agents`.
    pub(in crate::engine::model) fn fence_cpg_reply(
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
        if self
            .fence
            .pending
            .get(&seqno)
            .is_some_and(|p| p.expect.is_none())
        {
            // A reply before our REQUEST came back (not in total order:
            // a fence_virtd peer?): decide now.
            self.own_request_delivered(at, seqno, out);
        }
        let Some(p) = self.fence.pending.get_mut(&seqno) else {
            return;
        };
        if !p.domain.eq_ignore_ascii_case(&body.vm_name) || i32::from(p.op.as_raw()) != body.request
        {
            out.notices.push(Notice::MismatchedReply {
                from,
                seqno,
                vm: body.vm_name,
            });
            return;
        }
        let result = result_of(body.response);
        let owner_acted = match &p.expect {
            Some(Expect::OneOf(s) | Expect::All(s)) => s.contains(&from),
            _ => false,
        };
        let done = match p.expect.get_or_insert(Expect::Anyone) {
            Expect::Anyone => Some((result, None)),
            Expect::OneOf(set) if set.contains(&from) => Some((result, None)),
            Expect::OneOf(set) => {
                out.notices.push(Notice::ReplyFromNonHolder {
                    from,
                    seqno,
                    holders: set.iter().copied().collect(),
                });
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
            // The requester checks again before it answers its caller: a
            // fence_virtd peer, or a node with another map, may have said
            // off, and a copy may have started or reported running since.
            let mut answered = BTreeSet::from([from]);
            if let Some(Expect::All(set)) = &p.expect {
                answered.extend(set.iter().copied());
            }
            let untrue = claims_off(p.op, result)
                .then(|| {
                    self.active_beyond(&p.domain, p.op, &answered)
                        .or_else(|| self.untrue(at, &p.domain, p.op, owner_acted))
                })
                .flatten();
            if let Some(why) = untrue {
                return self.finish_pending(at, p, FenceResult::Fail, Some(from), Some(why), out);
            }
            // A REPLY carries no reason: point to where it is.
            let detail = detail.or_else(|| {
                (result == FenceResult::Fail).then(|| {
                    format!(
                        "{} answered fail (its fence event says why)",
                        self.node_label(from)
                    )
                })
            });
            self.finish_pending(at, p, result, Some(from), detail, out);
        }
    }

    /// A copy of `target` that the map shows active now on a live node
    /// that did not answer for it: an "off" from elsewhere is not the VM's.
    fn active_beyond(
        &self,
        target: &str,
        op: FenceOp,
        answered: &BTreeSet<NodeId>,
    ) -> Option<String> {
        let running: Vec<NodeId> = self
            .live_active(target)
            .into_iter()
            .filter(|id| !answered.contains(id))
            .collect();
        let id = running.first()?;
        let answer = if op == FenceOp::Status { "off" } else { "ok" };
        Some(format!(
            "`{target}` runs on {} by its latest report, and {} answered: refusing to answer {answer}",
            self.node_label(*id),
            answered
                .iter()
                .map(|n| self.node_label(*n))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// The corosync driver could not send our REQUEST.
    pub(in crate::engine::model) fn fence_send_failed(
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

    /// Requests this node sent whose deadline passed fail.
    pub(in crate::engine::model) fn expire_pending(&mut self, at: Millis, out: &mut Output) {
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
                None | Some(Expect::Anyone) => "no node answered".to_string(),
                Some(Expect::OneOf(s)) => format!("no reply from node(s) {}", list(s)),
                Some(Expect::All(s)) => {
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
    pub(in crate::engine::model) fn fence_corosync_down(&mut self, at: Millis, out: &mut Output) {
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
    pub(in crate::engine::model) fn fence_nodes_left(
        &mut self,
        at: Millis,
        gone: &BTreeSet<NodeId>,
        out: &mut Output,
    ) {
        let mut failed = Vec::new();
        for (seqno, p) in &mut self.fence.pending {
            let (set, all_needed) = match &mut p.expect {
                None | Some(Expect::Anyone) => continue,
                Some(Expect::OneOf(s)) => (s, false),
                Some(Expect::All(s)) => (s, true),
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
    pub(super) fn fail_pending(
        &mut self,
        at: Millis,
        p: Pending,
        why: impl Into<String>,
        out: &mut Output,
    ) {
        self.finish_pending(at, p, FenceResult::Fail, None, Some(why.into()), out);
    }

    /// Ends a request this node sent.
    fn finish_pending(
        &mut self,
        at: Millis,
        p: Pending,
        result: FenceResult,
        acted_by: Option<NodeId>,
        detail: Option<String>,
        out: &mut Output,
    ) {
        self.fence_finish(
            at, p.id, p.op, &p.domain, &p.source, p.started, result, acted_by, detail, out,
        );
    }

    /// Answers the caller and records the outcome.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fence_finish(
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
        out.effects.push(Effect::FenceDone {
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
