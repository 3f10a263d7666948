//! The acting side: a REQUEST in `fence-agents` (ours come back too) is
//! routed; this node acts on its libvirt, answers at once, or, as the
//! highest node id, answers for a VM nobody knows after the grace.

use fenceline_proto::api::{EventKind, FenceOp, FencePhase, FenceResult, Millis, NodeId};

use super::migration::migrated_during;
use super::{FenceWire, Job, JobFor, Route, UnknownAnswer, claims_off, unknown_answer};
use crate::engine::model::{Cluster, Effect, Notice, Output};

/// What libvirt found besides the result of a local action.
#[derive(Debug, Clone, Copy)]
pub(in crate::engine::model) struct Seen {
    /// The domain was not found where the map put it.
    pub not_found: bool,
    /// The copy is shut off because it left by live migration.
    pub migrated: bool,
}

impl Cluster {
    /// A REQUEST in `fence-agents` (ours come back too).
    pub(in crate::engine::model) fn fence_cpg_request(
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
                out.notices.push(Notice::UnroutedRequest {
                    from,
                    seqno,
                    request: body.request,
                });
                return;
            }
        };
        if body.vm_name.is_empty() {
            return;
        }
        let Some(me) = self.local_nodeid else { return };
        if from == me {
            self.own_request_delivered(at, seqno, out);
        }
        if let Some(why) = self.unroutable(&body.vm_name) {
            // Nobody acts; the lowest member in `fence-agents` says why.
            if self.fa_members().first() == Some(&me) {
                self.refuse_cpg(at, from, seqno, body, op, why, out);
            }
            return;
        }
        match self.fence_route(&body.vm_name, op) {
            Route::Silent => {}
            Route::Act { uri, name, uuid } => {
                let owner = self.find_local(&body.vm_name).is_some_and(|l| l.3);
                // A shut-off copy proves nothing while the VM may run on a
                // node that is not accounted for.
                if !owner && let Some(why) = self.untrue(at, &body.vm_name, op, false) {
                    return self.refuse_cpg(at, from, seqno, body, op, why, out);
                }
                let job = Job {
                    op,
                    domain: body.vm_name.clone(),
                    started: at,
                    for_: JobFor::Cpg {
                        requester: from,
                        seqno,
                        body,
                    },
                    owner,
                    key: None,
                };
                self.start_job(at, job, uri, name, uuid, out);
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
                let refusal = if !self.quorate() && !self.cfg.fence.unknown_without_quorum {
                    Some(format!(
                        "no quorum: no member knows `{}`; refusing to assume it is off",
                        body.vm_name
                    ))
                } else {
                    self.untrue(at, &body.vm_name, op, false)
                };
                if let Some(why) = refusal {
                    // The state task logs the refusal from the `acted` event.
                    return self.refuse_cpg(at, from, seqno, body, op, why, out);
                }
                // Every node accounted for by a fenceline inventory: those
                // came before this REQUEST in total order, so no grace is
                // needed. fence_virtd peers announce outside that order.
                let fence_virtd = self.nodes.keys().any(|id| self.is_fence_virtd(*id));
                let grace = if !fence_virtd && self.unaccounted(at).is_empty() {
                    0
                } else {
                    self.cfg.fence.unknown_grace_ms
                };
                self.fence.unknown.push(UnknownAnswer {
                    requester: from,
                    seqno,
                    body,
                    op,
                    due: at + grace,
                    received: at,
                });
                if grace == 0 {
                    self.answer_due_unknown(at, out);
                }
            }
        }
    }

    /// Answers a REQUEST with "fail" at once, with the reason.
    #[allow(clippy::too_many_arguments)]
    fn refuse_cpg(
        &mut self,
        at: Millis,
        requester: NodeId,
        seqno: u32,
        body: FenceWire,
        op: FenceOp,
        why: String,
        out: &mut Output,
    ) {
        self.fence_reply(
            at,
            at,
            requester,
            seqno,
            body,
            op,
            FenceResult::Fail,
            Some(why),
            out,
        );
    }

    /// Sends a REPLY and records that this node answered.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fence_reply(
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
        out.effects.push(Effect::FenceCpgReply {
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

    /// The libvirt driver finished a local action.
    pub(in crate::engine::model) fn fence_acted(
        &mut self,
        at: Millis,
        job: u64,
        result: FenceResult,
        detail: Option<String>,
        seen: Seen,
        out: &mut Output,
    ) {
        let Some(j) = self.fence.jobs.remove(&job) else {
            return;
        };
        let restarted = j.op == FenceOp::Reboot && result == FenceResult::Ok && detail.is_none();
        self.release_held(at, &j, restarted, out);
        let (result, detail) = match j.for_ {
            JobFor::Cpg { .. } if claims_off(j.op, result) => {
                // Not found where the map put it: the owner saw nothing
                // inactive (truth rule (a) does not hold), and the VM may
                // have moved. The map, evaluated again, decides.
                let left = if seen.migrated && j.owner {
                    // Active here in the map when the request came, shut
                    // off by migration now: it moved during the request,
                    // whether or not libvirt's event has arrived yet.
                    Some(migrated_during(&j.domain, j.op))
                } else {
                    j.key
                        .as_ref()
                        .and_then(|k| self.migrated_away(at, k, &j.domain, j.started, j.op))
                };
                let why = if let Some(why) = left {
                    Some(why)
                } else if seen.not_found {
                    self.vanished_elsewhere(&j.domain, j.op)
                        .or_else(|| self.untrue(at, &j.domain, j.op, false))
                } else {
                    self.untrue(at, &j.domain, j.op, j.owner)
                };
                match why {
                    Some(why) => (FenceResult::Fail, Some(why)),
                    None => (result, detail),
                }
            }
            _ => (result, detail),
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

    /// Answers for unknown VMs whose grace is over.
    pub(in crate::engine::model) fn answer_due_unknown(&mut self, at: Millis, out: &mut Output) {
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
            let untrue = self.untrue(at, &u.body.vm_name, u.op, false);
            let (result, why) = if let Some(why) = untrue {
                (FenceResult::Fail, why)
            } else if quorate || self.cfg.fence.unknown_without_quorum {
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
    }
}
