//! The simulated world: hosts (corosync, libvirt, a daemon each), the ground
//! truth of where every VM runs, and one event queue ordered by (time, seq).
//!
//! - **CPG.** Every multicast and every membership notification gets its
//!   delivery time from one global sequencer (monotone), so all receivers see
//!   them in one total order, FIFO per sender. A multicast is delivered, at
//!   its time, to the members of its group in the sender's component that
//!   joined before it was sequenced (CPG includes the sender). A message whose
//!   receiver is across a partition at delivery time is lost; nothing else is.
//! - **Membership.** After every change of the world (crash, start,
//!   partition, heal, corosync down/up) each connected daemon's view of
//!   `fence-agents`, its own group and the quorum is recomputed; a difference
//!   is queued as `GroupChange` / `Quorum` (left and joined are the diff to
//!   what that daemon last saw), in a random order per daemon.
//! - **libvirt.** Per host, a FIFO to its daemon: `LocalDomain` on every truth
//!   change, `LibvirtLink` + `LocalList` (read from the truth when delivered)
//!   on (re)connect. While libvirt is down nothing is reported and every
//!   `FenceAct` fails, as the real worker answers "not connected".
//! - **The truth** is changed only by `FenceAct`s, guests and migrations.

use std::collections::{BTreeMap, BTreeSet};

use fenceline::engine::model::{
    ClaimOutcome, Cluster, Effect, FenceAct, FenceWire, Group, GroupMember, Input, LocalDomain,
    ModelConfig, OwnMessage, VmRecord,
};
use fenceline_proto::api::{
    DomainState, EventKind, FenceOp, FenceResult, MembershipAction, Millis, NodeId,
};

use crate::rng::Rng;

mod check;
mod claims;
mod cpg;
mod libvirt;

pub use check::{Report, Req, VKind, Violation};

pub const URI: &str = "qemu:///system";
/// The engine ticks every 50 ms while the router is busy; 100 is enough here.
pub const TICK_MS: Millis = 100;
/// How late after its timeout an answer may come.
pub const MARGIN_MS: Millis = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Fenceline,
    /// A fence_virtd-like peer: `fence-agents` only, STORE_VM records on
    /// every join and change, and it acts and replies for VMs it defines.
    FenceVirtd,
}

pub struct Vm {
    pub name: String,
    pub uuid: String,
    /// Hosts that define it, with the state there.
    pub on: BTreeMap<NodeId, DomainState>,
    /// The last instant it was inactive everywhere (None: never seen so).
    pub last_all_off: Option<Millis>,
    /// Instant of the last live migration.
    pub migrated: Option<Millis>,
    /// The host it last left by live migration, while its copy there is
    /// still shut off for that reason (libvirt's state reason).
    pub migrated_from: Option<NodeId>,
    /// Instant of the last reboot by a fence action.
    pub rebooted: Option<Millis>,
}

impl Vm {
    pub fn active(&self) -> bool {
        self.on.values().any(|s| s.is_active())
    }

    pub fn active_hosts(&self) -> Vec<NodeId> {
        self.on
            .iter()
            .filter(|(_, s)| s.is_active())
            .map(|(h, _)| *h)
            .collect()
    }
}

/// A schedule step.
#[derive(Debug, Clone)]
pub enum Action {
    Submit {
        host: NodeId,
        op: FenceOp,
        vm: String,
    },
    Start {
        host: NodeId,
    },
    Crash {
        host: NodeId,
    },
    Partition {
        side: Vec<NodeId>,
    },
    Heal,
    CorosyncDown {
        host: NodeId,
    },
    CorosyncUp {
        host: NodeId,
    },
    LibvirtDown {
        host: NodeId,
    },
    LibvirtUp {
        host: NodeId,
    },
    /// The guest on `host` shuts itself down, or an admin starts it.
    GuestToggle {
        vm: usize,
        host: NodeId,
    },
    /// Live migration to the other host that defines it (atomic here).
    Migrate {
        vm: usize,
    },
    /// A guest's fence_xvm multicasts one run (id `run`) for `vm`: every
    /// fenceline daemon's listener gets it (a few ms apart) and asks the
    /// claim; at most one may connect back.
    Multicast {
        vm: String,
        run: String,
    },
}

#[derive(Debug)]
enum Cpg {
    Store(VmRecord),
    Own(OwnMessage),
    Request {
        seqno: u32,
        body: FenceWire,
    },
    Reply {
        seqno: u32,
        target: NodeId,
        body: FenceWire,
    },
}

#[derive(Debug)]
enum Ev {
    Action(Action),
    Cpg {
        from: NodeId,
        group: Group,
        msg: Cpg,
    },
    Input {
        host: NodeId,
        pid: u32,
        input: Input,
    },
    /// libvirt (re)connected: link up and a full listing, read now.
    List {
        host: NodeId,
        pid: u32,
    },
    /// A local fence action finishes; fence_virtd peers reply over CPG.
    Act {
        host: NodeId,
        pid: u32,
        act: FenceAct,
        fvd_reply: Option<(NodeId, u32, FenceWire)>,
    },
    /// The daemon's corosync session is up and its groups are joined.
    Connect {
        host: NodeId,
        pid: u32,
    },
    Tick,
}

struct Daemon {
    pid: u32,
    model: Option<Cluster>,
    connected: bool,
    /// Sequencer position of its join: older multicasts never reach it.
    since: u64,
    seen_fa: BTreeSet<(NodeId, u32)>,
    seen_own: BTreeSet<(NodeId, u32)>,
    seen_quorum: Option<(bool, Vec<NodeId>)>,
}

pub struct Host {
    pub id: NodeId,
    pub kind: Kind,
    daemon: Option<Daemon>,
    pub corosync: bool,
    pub libvirt: bool,
    pub comp: u32,
    lib_last: Millis,
}

pub struct World {
    pub now: Millis,
    rng: Rng,
    pub hosts: Vec<Host>,
    pub vms: Vec<Vm>,
    queue: BTreeMap<(Millis, u64), Ev>,
    seq: u64,
    cpg_last: Millis,
    next_pid: u32,
    tick_at: Option<Millis>,
    cfg: ModelConfig,
    pub requests: BTreeMap<u64, Req>,
    pub report: Report,
    pub trace: Option<Vec<String>>,
    /// The request being submitted (to learn its REQUEST's seqno).
    submitting: Option<u64>,
    /// Why a node replied: (requester, seqno) → the rule, from its map.
    reasons: BTreeMap<(NodeId, u32), String>,
    /// The rule each node saw when a REQUEST was delivered to it:
    /// (node, requester, seqno) → the rule.
    decided: BTreeMap<(NodeId, NodeId, u32), String>,
    /// Claim asks: ask id → (run, host).
    claim_asks: BTreeMap<u64, (String, NodeId)>,
    /// Per multicast run: when, the VM, and the hosts that won its claim.
    pub claim_runs: BTreeMap<String, (Millis, String, Vec<NodeId>)>,
    /// A partition happened (CPG's order holds only within a component).
    partitioned: bool,
    /// Every multicast run must be connected back exactly once (fault-free).
    pub exact_claims: bool,
}

fn result_name(r: FenceResult) -> &'static str {
    match r {
        FenceResult::Ok => "ok",
        FenceResult::Fail => "fail",
        FenceResult::Off => "off",
        FenceResult::Denied => "denied",
    }
}

fn ids(set: &BTreeSet<(NodeId, u32)>) -> String {
    let v: Vec<String> = set.iter().map(|(n, _)| format!("n{n}")).collect();
    v.join(",")
}

impl World {
    pub fn new(rng: Rng, hosts: Vec<(Kind, bool)>, vms: Vec<Vm>, cfg: ModelConfig) -> Self {
        let hosts = hosts
            .into_iter()
            .enumerate()
            .map(|(i, (kind, libvirt))| Host {
                id: i as NodeId + 1,
                kind,
                daemon: None,
                corosync: true,
                libvirt,
                comp: 0,
                lib_last: 0,
            })
            .collect();
        World {
            now: 0,
            rng,
            hosts,
            vms,
            queue: BTreeMap::new(),
            seq: 0,
            cpg_last: 0,
            next_pid: 1000,
            tick_at: None,
            cfg,
            requests: BTreeMap::new(),
            report: Report::default(),
            trace: None,
            submitting: None,
            reasons: BTreeMap::new(),
            decided: BTreeMap::new(),
            claim_asks: BTreeMap::new(),
            claim_runs: BTreeMap::new(),
            partitioned: false,
            exact_claims: false,
        }
    }

    fn log(&mut self, f: impl FnOnce(&World) -> String) {
        if self.trace.is_some() {
            let line = format!("{:>7} {}", self.now, f(self));
            if let Some(t) = self.trace.as_mut() {
                t.push(line);
            }
        }
    }

    fn push(&mut self, at: Millis, ev: Ev) -> u64 {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
        self.seq
    }

    pub fn schedule(&mut self, at: Millis, a: Action) {
        self.push(at, Ev::Action(a));
    }

    fn h(&self, id: NodeId) -> usize {
        id as usize - 1
    }

    /// The next slot of the CPG total order.
    fn cpg_time(&mut self) -> Millis {
        let t = (self.now + self.rng.range(1, 8)).max(self.cpg_last);
        self.cpg_last = t;
        t
    }

    /// The next slot of `host`'s libvirt FIFO.
    fn lib_time(&mut self, host: NodeId, max_delay: Millis) -> Millis {
        let i = self.h(host);
        let t = (self.now + self.rng.range(1, max_delay)).max(self.hosts[i].lib_last);
        self.hosts[i].lib_last = t;
        t
    }

    fn pid_of(&self, host: NodeId) -> Option<u32> {
        self.hosts[self.h(host)].daemon.as_ref().map(|d| d.pid)
    }

    /// Runs until the queue is empty or the clock passes `end`.
    pub fn run(&mut self, end: Millis) {
        while let Some((&(t, seq), _)) = self.queue.first_key_value() {
            if t > end {
                break;
            }
            let ev = self.queue.remove(&(t, seq)).expect("present");
            self.now = t;
            self.report.steps += 1;
            self.handle(seq, ev);
            self.schedule_tick();
        }
        self.check_claims();
        for (id, r) in &self.requests {
            if r.answer.is_none() && !r.orphaned {
                self.report.violations.push(Violation {
                    kind: VKind::Unanswered,
                    at: self.now,
                    text: format!(
                        "request #{id} ({} {} on n{} at {}) never answered",
                        r.op, r.vm, r.host, r.at
                    ),
                    signature: format!("{} never answered", r.op),
                });
            }
        }
    }

    fn schedule_tick(&mut self) {
        if self.tick_at.is_some() {
            return;
        }
        let busy = self.hosts.iter().any(|h| {
            h.daemon
                .as_ref()
                .and_then(|d| d.model.as_ref())
                .is_some_and(|m| m.fence_busy() || m.self_fence_waiting())
        });
        if busy {
            let at = (self.now / TICK_MS + 1) * TICK_MS;
            self.tick_at = Some(at);
            self.push(at, Ev::Tick);
        }
    }

    fn handle(&mut self, seq: u64, ev: Ev) {
        match ev {
            Ev::Action(a) => self.action(a),
            Ev::Cpg { from, group, msg } => self.deliver(seq, from, group, msg),
            Ev::Input { host, pid, input } => {
                if self.pid_of(host) != Some(pid) {
                    return;
                }
                if self.hosts[self.h(host)].kind == Kind::FenceVirtd {
                    // fence_virtd re-announces its VMs on every join.
                    if let Input::GroupChange { joined, .. } = &input
                        && !joined.is_empty()
                    {
                        self.fvd_announce(host);
                    }
                    return;
                }
                let input = self.reread(host, input);
                self.apply(host, input);
            }
            Ev::List { host, pid } => {
                let i = self.h(host);
                if self.pid_of(host) != Some(pid) || !self.hosts[i].libvirt {
                    return;
                }
                let domains = self.listing(host);
                self.log(|_| {
                    let v: Vec<String> = domains
                        .iter()
                        .map(|d| format!("{}={}", d.name, d.state))
                        .collect();
                    format!("n{host} libvirt connected, lists [{}]", v.join(" "))
                });
                let at = self.now;
                self.apply(
                    host,
                    Input::LibvirtLink {
                        at,
                        uri: URI.into(),
                        connected: true,
                        error: None,
                    },
                );
                self.apply(
                    host,
                    Input::LocalList {
                        at,
                        uri: URI.into(),
                        domains,
                    },
                );
            }
            Ev::Act {
                host,
                pid,
                act,
                fvd_reply,
            } => self.act(host, pid, act, fvd_reply),
            Ev::Connect { host, pid } => {
                let i = self.h(host);
                if self.pid_of(host) != Some(pid) || !self.hosts[i].corosync {
                    return;
                }
                if self.hosts[i].daemon.as_ref().is_some_and(|d| d.connected) {
                    return;
                }
                self.log(|_| format!("n{host} daemon connects to corosync"));
                if let Some(d) = self.hosts[i].daemon.as_mut() {
                    d.connected = true;
                }
                let n = self.hosts.len() as NodeId;
                let at = self.now;
                self.apply(
                    host,
                    Input::CorosyncUp {
                        at,
                        local_nodeid: host,
                        cluster_name: Some("sim".into()),
                        nodelist: (1..=n).map(|id| (id, Some(format!("n{id}")))).collect(),
                    },
                );
                self.sync_membership();
            }
            Ev::Tick => {
                self.tick_at = None;
                let at = self.now;
                for i in 0..self.hosts.len() {
                    let busy = self.hosts[i]
                        .daemon
                        .as_ref()
                        .and_then(|d| d.model.as_ref())
                        .is_some_and(|m| m.fence_busy() || m.self_fence_waiting());
                    if busy {
                        let id = self.hosts[i].id;
                        self.apply(id, Input::Tick { at });
                    }
                }
            }
        }
    }

    fn listing(&self, host: NodeId) -> Vec<LocalDomain> {
        self.vms
            .iter()
            .filter_map(|v| {
                v.on.get(&host).map(|s| LocalDomain {
                    name: v.name.clone(),
                    uuid: v.uuid.clone(),
                    state: *s,
                    migration: None,
                })
            })
            .collect()
    }

    /// Applies an input to `host`'s fenceline model and routes the effects
    /// as the state task does.
    fn apply(&mut self, host: NodeId, input: Input) {
        let i = self.h(host);
        let Some(m) = self.hosts[i].daemon.as_mut().and_then(|d| d.model.as_mut()) else {
            return;
        };
        let out = m.apply(input);
        for ev in &out.events {
            if let EventKind::Membership {
                action: MembershipAction::SelfFenced,
                nodeid,
                ..
            } = &ev.kind
            {
                if *nodeid == Some(host) {
                    self.report.self_fenced += 1;
                } else {
                    self.report.assumed_self_fenced += 1;
                }
            }
        }
        let mut effects = out.effects;
        effects.extend(m.flush_effects());
        for e in effects {
            self.effect(host, e);
        }
    }

    /// The libvirt driver re-reads the domain an event is about
    /// (`libvirt/worker/events.rs`): a late event reports the state of now,
    /// not of the change (a fence reboot's stop that arrives after the
    /// restart reads running).
    fn reread(&self, host: NodeId, mut input: Input) -> Input {
        if let Input::LocalDomain { domain, .. } = &mut input
            && let Some(now) = self
                .vms
                .iter()
                .find(|v| v.uuid.eq_ignore_ascii_case(&domain.uuid))
                .and_then(|v| v.on.get(&host).copied())
        {
            domain.state = now;
        }
        input
    }

    fn effect(&mut self, host: NodeId, e: Effect) {
        let i = self.h(host);
        let connected =
            self.hosts[i].corosync && self.hosts[i].daemon.as_ref().is_some_and(|d| d.connected);
        match e {
            Effect::StoreVms(recs) => {
                for r in recs {
                    self.mcast(host, Group::FenceAgents, Cpg::Store(r));
                }
            }
            Effect::Own(m) => {
                if let OwnMessage::InventoryBegin { generation } = &m {
                    let g = *generation;
                    self.log(|_| format!("n{host} sends its inventory (generation {g})"));
                }
                if let OwnMessage::Gone { vms } = &m {
                    let names: Vec<String> = vms.iter().map(|v| v.name.clone()).collect();
                    self.log(|_| format!("n{host} announces gone: {}", names.join(",")));
                }
                self.mcast(host, Group::Own, Cpg::Own(m));
            }
            Effect::FenceCpgRequest { seqno, body } => {
                if let Some(id) = self.submitting
                    && let Some(r) = self.requests.get_mut(&id)
                {
                    r.seqno = Some(seqno);
                }
                if connected {
                    self.log(|_| {
                        format!(
                            "n{host} multicasts REQUEST {seqno} {} {}",
                            FenceOp::from_raw(body.request as u8)
                                .map(|o| o.to_string())
                                .unwrap_or_default(),
                            body.vm_name
                        )
                    });
                    self.mcast(host, Group::FenceAgents, Cpg::Request { seqno, body });
                } else {
                    let pid = self.pid_of(host).unwrap_or(0);
                    let at = self.now;
                    self.push(
                        at,
                        Ev::Input {
                            host,
                            pid,
                            input: Input::FenceSendFailed {
                                at,
                                seqno,
                                error: "corosync connection lost".into(),
                            },
                        },
                    );
                }
            }
            Effect::FenceCpgReply {
                seqno,
                target,
                body,
            } => {
                let why = match self.decided.remove(&(host, target, seqno)) {
                    Some(w) => w,
                    None => self.reply_rule(host, &body.vm_name),
                };
                self.reasons.insert((target, seqno), why);
                self.log(|_| {
                    let r = u8::try_from(body.response)
                        .ok()
                        .and_then(FenceResult::from_raw)
                        .map(result_name)
                        .unwrap_or("?");
                    format!(
                        "n{host} multicasts REPLY {seqno} to n{target}: {} {r}",
                        body.vm_name
                    )
                });
                self.reply(host, seqno, target, body);
            }
            Effect::FenceAct(act) => {
                let pid = self.pid_of(host).unwrap_or(0);
                let delay = if act.op == FenceOp::Reboot {
                    self.rng.range(20, 1500)
                } else {
                    self.rng.range(5, 400)
                };
                self.push(
                    self.now + delay,
                    Ev::Act {
                        host,
                        pid,
                        act,
                        fvd_reply: None,
                    },
                );
            }
            // The simulation does not confirm nodes down.
            // The simulation does not confirm nodes down.
            Effect::ConfirmDone { .. } => {}
            Effect::ClaimDone { id, outcome } => self.claim_done(id, outcome),
            Effect::FenceDone {
                id,
                result,
                acted_by,
                detail,
                ..
            } => self.answer(id, result, acted_by, detail),
        }
    }

    fn action(&mut self, a: Action) {
        if !matches!(a, Action::LibvirtUp { .. } | Action::Submit { .. }) {
            self.log(|_| format!("ACTION {a:?}"));
        }
        match a {
            Action::Submit { host, op, vm } => self.submit(host, op, vm),
            Action::Multicast { vm, run } => self.multicast(vm, run),
            Action::Start { host } => self.start_daemon(host),
            Action::Crash { host } => {
                let i = self.h(host);
                if let Some(d) = self.hosts[i].daemon.take() {
                    for r in self.requests.values_mut() {
                        if r.pid == d.pid && r.answer.is_none() {
                            r.orphaned = true;
                            self.report.orphaned += 1;
                        }
                    }
                    self.sync_membership();
                }
            }
            Action::Partition { side } => {
                self.partitioned = true;
                for h in &mut self.hosts {
                    h.comp = u32::from(side.contains(&h.id));
                }
                self.sync_membership();
            }
            Action::Heal => {
                for h in &mut self.hosts {
                    h.comp = 0;
                }
                self.sync_membership();
            }
            Action::CorosyncDown { host } => {
                let i = self.h(host);
                self.hosts[i].corosync = false;
                if let Some(d) = self.hosts[i].daemon.as_mut() {
                    let was = d.connected;
                    d.connected = false;
                    d.seen_fa.clear();
                    d.seen_own.clear();
                    d.seen_quorum = None;
                    d.since = u64::MAX;
                    let pid = d.pid;
                    if was {
                        let at = self.now + 1;
                        self.push(
                            at,
                            Ev::Input {
                                host,
                                pid,
                                input: Input::CorosyncDown {
                                    at,
                                    error: "CsErrLibrary".into(),
                                },
                            },
                        );
                    }
                }
                self.sync_membership();
            }
            Action::CorosyncUp { host } => {
                let i = self.h(host);
                self.hosts[i].corosync = true;
                if let Some(pid) = self.pid_of(host) {
                    let t = self.now + self.rng.range(200, 1200);
                    self.push(t, Ev::Connect { host, pid });
                }
                self.sync_membership();
            }
            Action::LibvirtDown { host } => {
                let i = self.h(host);
                self.hosts[i].libvirt = false;
                if let Some(pid) = self.pid_of(host) {
                    self.libvirt_lost(host, pid, 30, "End of file while reading data");
                }
            }
            Action::LibvirtUp { host } => {
                let i = self.h(host);
                let was = self.hosts[i].libvirt;
                self.hosts[i].libvirt = true;
                if !was {
                    self.log(|_| format!("ACTION LibvirtUp n{host}"));
                }
                let Some(pid) = self.pid_of(host) else {
                    return;
                };
                match self.hosts[i].kind {
                    Kind::FenceVirtd => self.fvd_announce(host),
                    Kind::Fenceline if !was => {
                        let t = self.lib_time(host, 300);
                        self.push(t, Ev::List { host, pid });
                    }
                    Kind::Fenceline => {}
                }
            }
            Action::GuestToggle { vm, host } => {
                let Some(&st) = self.vms[vm].on.get(&host) else {
                    return;
                };
                if st.is_active() {
                    self.set_state(vm, host, DomainState::Shutoff);
                } else if !self.vms[vm].active() {
                    self.set_state(vm, host, DomainState::Running);
                }
            }
            Action::Migrate { vm } => {
                let v = &self.vms[vm];
                let Some(&from) = v.active_hosts().first() else {
                    return;
                };
                let Some(&to) = v.on.keys().find(|h| **h != from) else {
                    return;
                };
                if !self.hosts[self.h(from)].libvirt || !self.hosts[self.h(to)].libvirt {
                    return;
                }
                self.set_state(vm, to, DomainState::Running);
                self.report_migrated(vm, from);
                self.set_state(vm, from, DomainState::Shutoff);
                self.vms[vm].migrated = Some(self.now);
                self.vms[vm].migrated_from = Some(from);
            }
        }
    }
}
