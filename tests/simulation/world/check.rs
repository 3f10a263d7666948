//! The properties: every fence answer is checked against the truth at the
//! moment it is given, and wrong answers are classified.
//!
//! - **Wrong.** "ok" for off or reboot, or "off" for status, while the truth
//!   has the VM active on some host at the answer *and* it was active on some
//!   host at every instant since the request was submitted. (A VM that was
//!   off everywhere for an instant after the submit, e.g. destroyed and
//!   started again by the reboot itself or by a concurrent `on`, makes the
//!   claim true at that instant.)
//! - **DoubleStart.** A fenceline fence action (on, reboot) started a VM that
//!   runs on another host.
//! - **Late / Unanswered / Twice.** Every request gets exactly one answer
//!   within its timeout plus [`MARGIN_MS`], unless the daemon that took it
//!   died first (its client's connection died with it).
//! - Refusals (`fail`) are counted, not wrong.

use super::*;

/// A fence request and its answer.
pub struct Req {
    pub host: NodeId,
    pub pid: u32,
    pub op: FenceOp,
    pub vm: String,
    pub at: Millis,
    pub deadline: Millis,
    pub answer: Option<(Millis, FenceResult, Option<NodeId>, Option<String>)>,
    /// The CPG header seqno of its REQUEST.
    pub seqno: Option<u32>,
    /// Where the VM ran when it was submitted, and what was wrong there.
    pub situation: String,
    /// The daemon that took it died first: nobody can answer (the client's
    /// connection died with it).
    pub orphaned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum VKind {
    /// "ok" for off/reboot or "off" for status while the VM ran all along.
    Wrong,
    /// A fenceline node started a VM (on, reboot) that was running elsewhere.
    DoubleStart,
    Late,
    Unanswered,
    Twice,
    /// A multicast run connected back by more than one node (or, fault-free,
    /// by none).
    ConnectBacks,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: VKind,
    pub at: Millis,
    pub text: String,
    /// What the violation class depends on (op, result, the rule that
    /// answered, the state of the host the VM runs on).
    pub signature: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub requests: u32,
    pub answered: u32,
    pub refusals: u32,
    pub orphaned: u32,
    pub steps: u64,
    pub first_refusal: String,
    /// Hosts that destroyed their own VMs (self-fencing), and departed
    /// self-fencing hosts a peer treated as off after their deadline.
    pub self_fenced: u32,
    pub assumed_self_fenced: u32,
}

impl World {
    pub(super) fn submit(&mut self, host: NodeId, op: FenceOp, vm: String) {
        let i = self.h(host);
        let Some(pid) = self.pid_of(host) else {
            return; // no daemon listening on this host now
        };
        if self.hosts[i].kind != Kind::Fenceline {
            return;
        }
        let id = self.requests.len() as u64 + 1;
        let situation = match self.vms.iter().find(|v| v.name == vm) {
            Some(v) => self.situation(v, host),
            None => String::new(),
        };
        let wait = if op == FenceOp::Reboot {
            self.cfg.fence.reboot_timeout_ms
        } else {
            self.cfg.fence.timeout_ms
        };
        self.requests.insert(
            id,
            Req {
                host,
                pid,
                op,
                vm: vm.clone(),
                at: self.now,
                deadline: self.now + wait,
                answer: None,
                seqno: None,
                situation,
                orphaned: false,
            },
        );
        self.report.requests += 1;
        self.log(|w| {
            let truth = w
                .vms
                .iter()
                .find(|v| v.name == vm)
                .map(|v| format!("active on {:?}", v.active_hosts()))
                .unwrap_or_else(|| "unknown to every libvirt".into());
            format!("SUBMIT #{id} {op} {vm} on n{host} (truth: {truth})")
        });
        let at = self.now;
        self.submitting = Some(id);
        self.apply(
            host,
            Input::FenceSubmit {
                at,
                id,
                op,
                domain: vm,
                source: format!("sim:guest#{id}"),
            },
        );
        self.submitting = None;
    }

    pub(super) fn answer(
        &mut self,
        id: u64,
        result: FenceResult,
        acted_by: Option<NodeId>,
        detail: Option<String>,
    ) {
        let now = self.now;
        let Some(r) = self.requests.get_mut(&id) else {
            return;
        };
        if r.answer.is_some() {
            let text = format!("request #{id} answered twice");
            self.report.violations.push(Violation {
                kind: VKind::Twice,
                at: now,
                text,
                signature: "answered twice".into(),
            });
            return;
        }
        r.answer = Some((now, result, acted_by, detail.clone()));
        let (op, at, deadline, host, vm_name, seqno) =
            (r.op, r.at, r.deadline, r.host, r.vm.clone(), r.seqno);
        let situation = r.situation.clone();
        self.report.answered += 1;
        if result == FenceResult::Fail {
            self.report.refusals += 1;
            if self.report.first_refusal.is_empty() {
                self.report.first_refusal = format!(
                    "#{id} {op} {vm_name} on n{host}: {}",
                    detail.as_deref().unwrap_or("")
                );
            }
        }
        self.log(|w| {
            let truth = w
                .vms
                .iter()
                .find(|v| v.name == vm_name)
                .map(|v| format!("active on {:?}", v.active_hosts()))
                .unwrap_or_else(|| "unknown".into());
            format!(
                "ANSWER #{id} {op} {vm_name}: {} by {:?} after {} ms ({}) [truth: {truth}]",
                result_name(result),
                acted_by,
                now - at,
                detail.as_deref().unwrap_or("")
            )
        });
        let claims_off = match op {
            FenceOp::Off | FenceOp::Reboot => result == FenceResult::Ok,
            FenceOp::Status => result == FenceResult::Off,
            _ => false,
        };
        let vm = self.vms.iter().find(|v| v.name == vm_name);
        if claims_off
            && let Some(vm) = vm
            && vm.active()
            && vm.last_all_off.is_none_or(|t| t < at)
        {
            let runs = vm.active_hosts();
            let rule = match seqno.and_then(|s| self.reasons.get(&(host, s))) {
                Some(r) => r.clone(),
                None => format!(
                    "the requester itself: {}",
                    detail.as_deref().unwrap_or("no detail")
                ),
            };
            let claim = match op {
                FenceOp::Status => format!("status -> {}", result_name(result)),
                _ => format!("off/reboot -> {}", result_name(result)),
            };
            let situation = if vm.migrated.is_some_and(|t| t >= at) {
                "it migrated during the request"
            } else if vm.rebooted.is_some_and(|t| t + 1_000 >= at) {
                "a fence reboot stopped and restarted it just before: the maps saw it shut off"
            } else {
                situation.as_str()
            };
            let signature = format!("{claim} by {rule}; {situation}");
            self.report.violations.push(Violation {
                kind: VKind::Wrong,
                at: now,
                text: format!(
                    "request #{id} {op} {vm_name} on n{host}: answered {} by {acted_by:?} ({}), but it runs on {runs:?} since before the request",
                    result_name(result),
                    detail.as_deref().unwrap_or("")
                ),
                signature,
            });
        }
        if now > deadline + MARGIN_MS {
            self.report.violations.push(Violation {
                kind: VKind::Late,
                at: now,
                text: format!(
                    "request #{id} {op} {vm_name}: answered after {} ms (timeout {} ms)",
                    now - at,
                    deadline - at
                ),
                signature: format!("{op} answered late"),
            });
        }
    }

    /// The rule a replying fenceline node followed, read from its map.
    pub(super) fn reply_rule(&self, host: NodeId, vm: &str) -> String {
        let i = self.h(host);
        let Some(m) = self.hosts[i].daemon.as_ref().and_then(|d| d.model.as_ref()) else {
            return "?".into();
        };
        let snap = m.snapshot(self.now);
        match snap.domains.iter().find(|d| d.name == vm) {
            None => "the unknown-VM rule (highest node id of a quorate cluster)".into(),
            Some(d) if d.placements.iter().any(|p| p.state.is_active()) => {
                "the holder acted".into()
            }
            Some(_) => "shut off everywhere in its map: the lowest defining node acted".into(),
        }
    }

    /// What is wrong with the host(s) where the VM runs, as the requester
    /// submits (the migration case is decided at the answer).
    pub(super) fn situation(&self, vm: &Vm, requester: NodeId) -> String {
        let rc = self.hosts[self.h(requester)].comp;
        let mut runs = Vec::new();
        for h in vm.active_hosts() {
            let host = &self.hosts[self.h(h)];
            // Is the VM in its own daemon's map at all (listed)?
            let listed =
                host.daemon
                    .as_ref()
                    .and_then(|d| d.model.as_ref())
                    .map(|m| {
                        m.snapshot(self.now).domains.iter().any(|d| {
                            d.name == vm.name && d.placements.iter().any(|p| p.nodeid == h)
                        })
                    });
            let why = match &host.daemon {
                Some(_) if host.kind == Kind::FenceVirtd => "a fence_virtd peer holds it",
                None => "the owner's daemon left the group: its VMs were purged",
                Some(d) if !d.connected => "the owner's daemon left the group: its VMs were purged",
                Some(_) if !host.corosync || host.comp != rc => {
                    "the owner left the membership (corosync down or partition): its VMs were purged"
                }
                Some(_) if !host.libvirt || listed == Some(false) => {
                    "the owner's daemon (re)started without libvirt: its inventory was incomplete"
                }
                Some(_) => "the owner is healthy (a stale map elsewhere)",
            };
            runs.push(why);
        }
        runs.dedup();
        runs.join(" / ")
    }
}
