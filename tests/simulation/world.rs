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
    Cluster, Effect, FenceAct, FenceWire, Group, GroupMember, Input, LocalDomain, ModelConfig,
    OwnMessage, VmRecord,
};
use fenceline_proto::api::{DomainState, FenceOp, FenceResult, Millis, NodeId};

use crate::rng::Rng;

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
                .is_some_and(|m| m.fence_busy())
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
                        .is_some_and(|m| m.fence_busy());
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
        let mut effects = m.apply(input).effects;
        effects.extend(m.flush_effects());
        for e in effects {
            self.effect(host, e);
        }
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
                self.mcast(
                    host,
                    Group::FenceAgents,
                    Cpg::Reply {
                        seqno,
                        target,
                        body,
                    },
                );
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
            Effect::FenceDone {
                id,
                result,
                acted_by,
                detail,
                ..
            } => self.answer(id, result, acted_by, detail),
        }
    }

    fn mcast(&mut self, host: NodeId, group: Group, msg: Cpg) {
        let i = self.h(host);
        let connected =
            self.hosts[i].corosync && self.hosts[i].daemon.as_ref().is_some_and(|d| d.connected);
        if !connected {
            return; // the driver discards effects while corosync is away
        }
        let t = self.cpg_time();
        self.push(
            t,
            Ev::Cpg {
                from: host,
                group,
                msg,
            },
        );
    }

    fn deliver(&mut self, seq: u64, from: NodeId, group: Group, msg: Cpg) {
        let fi = self.h(from);
        if !self.hosts[fi].corosync {
            return;
        }
        let comp = self.hosts[fi].comp;
        let at = self.now;
        let to: Vec<(NodeId, Kind)> = self
            .hosts
            .iter()
            .filter(|h| {
                h.corosync
                    && h.comp == comp
                    && (group == Group::FenceAgents || h.kind == Kind::Fenceline)
                    && h.daemon
                        .as_ref()
                        .is_some_and(|d| d.connected && d.since < seq)
            })
            .map(|h| (h.id, h.kind))
            .collect();
        for (h, kind) in to {
            if kind == Kind::FenceVirtd {
                self.fvd_deliver(h, from, &msg);
                continue;
            }
            let input = match &msg {
                Cpg::Store(r) => Input::PeerRecord {
                    at,
                    from,
                    record: r.clone(),
                },
                Cpg::Own(m) => Input::PeerMessage {
                    at,
                    from,
                    msg: m.clone(),
                },
                Cpg::Request { seqno, body } => {
                    let rule = self.reply_rule(h, &body.vm_name);
                    self.decided.insert((h, from, *seqno), rule);
                    Input::FenceCpgRequest {
                        at,
                        from,
                        seqno: *seqno,
                        body: body.clone(),
                    }
                }
                Cpg::Reply {
                    seqno,
                    target,
                    body,
                } => Input::FenceCpgReply {
                    at,
                    from,
                    seqno: *seqno,
                    target: *target,
                    body: body.clone(),
                },
            };
            self.apply(h, input);
        }
    }

    /// fence_virtd's side: it acts on requests for VMs it defines.
    fn fvd_deliver(&mut self, host: NodeId, from: NodeId, msg: &Cpg) {
        let Cpg::Request { seqno, body } = msg else {
            return;
        };
        // It acts wherever it defines the VM (a shut-off copy answers too),
        // but it is never asked to start one here: its `on` of a copy is
        // fence_virtd's own split brain, not the router's.
        let Some(op) = u8::try_from(body.request)
            .ok()
            .and_then(FenceOp::from_raw)
            .filter(|op| *op != FenceOp::On)
        else {
            return;
        };
        let Some(vm) = self
            .vms
            .iter()
            .find(|v| v.name == body.vm_name && v.on.contains_key(&host))
        else {
            return;
        };
        let act = FenceAct {
            job: 0,
            op,
            uri: URI.into(),
            name: vm.name.clone(),
            uuid: vm.uuid.clone(),
        };
        let pid = self.pid_of(host).unwrap_or(0);
        let at = self.now + self.rng.range(5, 400);
        self.push(
            at,
            Ev::Act {
                host,
                pid,
                act,
                fvd_reply: Some((from, *seqno, body.clone())),
            },
        );
    }

    fn fvd_announce(&mut self, host: NodeId) {
        let i = self.h(host);
        if !self.hosts[i].libvirt {
            return;
        }
        for d in self.listing(host) {
            self.mcast(
                host,
                Group::FenceAgents,
                Cpg::Store(VmRecord {
                    name: d.name,
                    uuid: d.uuid,
                    owner: host,
                    state: d.state,
                }),
            );
        }
    }

    /// Recomputes every connected daemon's view of the groups and the quorum
    /// and queues the differences.
    fn sync_membership(&mut self) {
        let n = self.hosts.len();
        for i in 0..n {
            let host = &self.hosts[i];
            let Some(d) = host.daemon.as_ref() else {
                continue;
            };
            if !host.corosync || !d.connected {
                continue;
            }
            let (id, pid, kind, comp) = (host.id, d.pid, host.kind, host.comp);
            let in_comp = |h: &&Host| h.corosync && h.comp == comp;
            let cs: Vec<NodeId> = self.hosts.iter().filter(in_comp).map(|h| h.id).collect();
            let quorate = cs.len() * 2 > n;
            let member = |h: &Host| {
                h.daemon
                    .as_ref()
                    .filter(|d| d.connected)
                    .map(|d| (h.id, d.pid))
            };
            let fa: BTreeSet<(NodeId, u32)> = self
                .hosts
                .iter()
                .filter(in_comp)
                .filter_map(member)
                .collect();
            let own: BTreeSet<(NodeId, u32)> = self
                .hosts
                .iter()
                .filter(in_comp)
                .filter(|h| h.kind == Kind::Fenceline)
                .filter_map(member)
                .collect();
            let mut changes: Vec<u8> = Vec::new();
            if d.seen_quorum.as_ref() != Some(&(quorate, cs.clone())) {
                changes.push(0);
            }
            if d.seen_fa != fa {
                changes.push(1);
            }
            if kind == Kind::Fenceline && d.seen_own != own {
                changes.push(2);
            }
            self.rng.shuffle(&mut changes);
            for c in changes {
                let t = self.cpg_time();
                let d = self.hosts[i].daemon.as_mut().expect("checked");
                let input = match c {
                    0 => {
                        d.seen_quorum = Some((quorate, cs.clone()));
                        Input::Quorum {
                            at: t,
                            quorate,
                            members: cs.clone(),
                        }
                    }
                    _ => {
                        let (group, now_set) = if c == 1 {
                            (Group::FenceAgents, &fa)
                        } else {
                            (Group::Own, &own)
                        };
                        let seen = if c == 1 {
                            &mut d.seen_fa
                        } else {
                            &mut d.seen_own
                        };
                        let old = std::mem::replace(seen, now_set.clone());
                        let gm = |(nodeid, pid): &(NodeId, u32), reason: &str| GroupMember {
                            nodeid: *nodeid,
                            pid: *pid,
                            reason: reason.into(),
                        };
                        let members = now_set.iter().map(|m| gm(m, "")).collect();
                        let joined = now_set.difference(&old).map(|m| gm(m, "Join")).collect();
                        let left = old
                            .difference(now_set)
                            .map(|m| {
                                let h = &self.hosts[m.0 as usize - 1];
                                let why = if h.corosync && h.comp == comp {
                                    "ProcDown"
                                } else {
                                    "NodeDown"
                                };
                                gm(m, why)
                            })
                            .collect();
                        Input::GroupChange {
                            at: t,
                            group,
                            members,
                            left,
                            joined,
                        }
                    }
                };
                let seq = self.push(
                    t,
                    Ev::Input {
                        host: id,
                        pid,
                        input: input.clone(),
                    },
                );
                let d = self.hosts[i].daemon.as_mut().expect("checked");
                if let Input::GroupChange { joined, .. } = &input
                    && joined.iter().any(|j| j.nodeid == id && j.pid == pid)
                {
                    d.since = seq;
                }
                self.log(|w| match &input {
                    Input::Quorum {
                        quorate, members, ..
                    } => format!(
                        "n{id} will see quorum {} members {:?}",
                        if *quorate { "yes" } else { "no" },
                        members
                    ),
                    Input::GroupChange { group, .. } => {
                        let d = w.hosts[i].daemon.as_ref().expect("checked");
                        let set = if *group == Group::FenceAgents {
                            &d.seen_fa
                        } else {
                            &d.seen_own
                        };
                        format!("n{id} will see {group:?} = [{}]", ids(set))
                    }
                    _ => String::new(),
                });
            }
        }
    }

    fn start_daemon(&mut self, host: NodeId) {
        let i = self.h(host);
        if self.hosts[i].daemon.is_some() {
            return;
        }
        let pid = self.next_pid;
        self.next_pid += 1;
        let kind = self.hosts[i].kind;
        let model = (kind == Kind::Fenceline).then(|| {
            Cluster::new(ModelConfig {
                started_at: self.now,
                ..self.cfg.clone()
            })
        });
        self.hosts[i].daemon = Some(Daemon {
            pid,
            model,
            connected: false,
            since: u64::MAX,
            seen_fa: BTreeSet::new(),
            seen_own: BTreeSet::new(),
            seen_quorum: None,
        });
        if kind == Kind::Fenceline {
            if self.hosts[i].libvirt {
                let t = self.lib_time(host, 400);
                self.push(t, Ev::List { host, pid });
            } else {
                let t = self.lib_time(host, 50);
                self.push(
                    t,
                    Ev::Input {
                        host,
                        pid,
                        input: Input::LibvirtLink {
                            at: t,
                            uri: URI.into(),
                            connected: false,
                            error: Some("Failed to connect socket".into()),
                        },
                    },
                );
            }
        }
        if self.hosts[i].corosync {
            let t = self.now + self.rng.range(5, 300);
            self.push(t, Ev::Connect { host, pid });
        }
    }

    fn action(&mut self, a: Action) {
        if !matches!(a, Action::LibvirtUp { .. } | Action::Submit { .. }) {
            self.log(|_| format!("ACTION {a:?}"));
        }
        match a {
            Action::Submit { host, op, vm } => self.submit(host, op, vm),
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
                    let t = self.lib_time(host, 30);
                    self.push(
                        t,
                        Ev::Input {
                            host,
                            pid,
                            input: Input::LibvirtLink {
                                at: t,
                                uri: URI.into(),
                                connected: false,
                                error: Some("End of file while reading data".into()),
                            },
                        },
                    );
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
                self.set_state(vm, from, DomainState::Shutoff);
                self.vms[vm].migrated = Some(self.now);
            }
        }
    }

    /// Changes the truth and lets `host`'s libvirt report it.
    fn set_state(&mut self, vm: usize, host: NodeId, state: DomainState) {
        let now = self.now;
        let v = &mut self.vms[vm];
        let was_active = v.active();
        v.on.insert(host, state);
        if was_active != v.active() {
            v.last_all_off = Some(now);
        }
        let (name, uuid) = (v.name.clone(), v.uuid.clone());
        self.log(|w| {
            format!(
                "TRUTH {name} on n{host} is now {state} (active on {:?})",
                w.vms[vm].active_hosts()
            )
        });
        let i = self.h(host);
        if !self.hosts[i].libvirt {
            return;
        }
        let Some(pid) = self.pid_of(host) else {
            return;
        };
        match self.hosts[i].kind {
            Kind::Fenceline => {
                let t = self.lib_time(host, 30);
                self.push(
                    t,
                    Ev::Input {
                        host,
                        pid,
                        input: Input::LocalDomain {
                            at: t,
                            uri: URI.into(),
                            domain: LocalDomain { name, uuid, state },
                        },
                    },
                );
            }
            Kind::FenceVirtd => self.mcast(
                host,
                Group::FenceAgents,
                Cpg::Store(VmRecord {
                    name,
                    uuid,
                    owner: host,
                    state,
                }),
            ),
        }
    }

    /// A local libvirt action, mapped to results as `libvirt::fence_act` does.
    fn act(
        &mut self,
        host: NodeId,
        pid: u32,
        act: FenceAct,
        fvd_reply: Option<(NodeId, u32, FenceWire)>,
    ) {
        let i = self.h(host);
        let vm = self
            .vms
            .iter()
            .position(|v| v.uuid.eq_ignore_ascii_case(&act.uuid) || v.name == act.name);
        let state = vm.and_then(|v| self.vms[v].on.get(&host).copied());
        let (result, detail): (FenceResult, Option<String>) = if !self.hosts[i].libvirt {
            (FenceResult::Fail, Some(format!("not connected: {URI}")))
        } else {
            match (act.op, vm, state) {
                (op, Some(_), None) | (op, None, _) => match op {
                    FenceOp::Status => (FenceResult::Off, Some("no longer defined".into())),
                    FenceOp::Off | FenceOp::Reboot => (FenceResult::Ok, Some("vanished".into())),
                    _ => (FenceResult::Fail, Some("not found".into())),
                },
                (FenceOp::Status, _, Some(s)) if s.is_active() => (FenceResult::Ok, None),
                (FenceOp::Status, _, Some(s)) => (FenceResult::Off, Some(format!("state {s}"))),
                (FenceOp::Off, Some(v), Some(s)) => {
                    if s.is_active() {
                        self.set_state(v, host, DomainState::Shutoff);
                    }
                    (FenceResult::Ok, None)
                }
                (FenceOp::On, Some(v), Some(s)) => {
                    if !s.is_active() {
                        self.set_state(v, host, DomainState::Running);
                        self.check_double_start(v, host, fvd_reply.is_some());
                    }
                    (FenceResult::Ok, None)
                }
                (FenceOp::Reboot, Some(v), Some(s)) => {
                    if s.is_active() {
                        self.set_state(v, host, DomainState::Shutoff);
                        self.set_state(v, host, DomainState::Running);
                        self.check_double_start(v, host, fvd_reply.is_some());
                        (FenceResult::Ok, None)
                    } else {
                        (FenceResult::Ok, Some("it was shut off".into()))
                    }
                }
                _ => (FenceResult::Fail, Some("unexpected".into())),
            }
        };
        self.log(|_| {
            format!(
                "n{host} libvirt {} {} -> {}{}",
                act.op,
                act.name,
                result_name(result),
                detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            )
        });
        if self.pid_of(host) != Some(pid) {
            return; // the daemon that asked died meanwhile
        }
        match fvd_reply {
            Some((target, seqno, mut body)) => {
                self.reasons.insert(
                    (target, seqno),
                    "a fence_virtd peer answered from its own libvirt".into(),
                );
                body.response = i32::from(result.as_raw());
                self.mcast(
                    host,
                    Group::FenceAgents,
                    Cpg::Reply {
                        seqno,
                        target,
                        body,
                    },
                );
            }
            None => {
                let t = self.now + self.rng.range(0, 20);
                self.push(
                    t,
                    Ev::Input {
                        host,
                        pid,
                        input: Input::FenceActed {
                            at: t,
                            job: act.job,
                            result,
                            detail,
                        },
                    },
                );
            }
        }
    }

    fn check_double_start(&mut self, vm: usize, host: NodeId, by_fence_virtd: bool) {
        let on = self.vms[vm].active_hosts();
        if on.len() > 1 && !by_fence_virtd {
            let name = self.vms[vm].name.clone();
            self.report.violations.push(Violation {
                kind: VKind::DoubleStart,
                at: self.now,
                text: format!("n{host} started {name}, which now runs on {on:?}"),
                signature: "a fence action started a VM that runs elsewhere".into(),
            });
        }
    }

    fn submit(&mut self, host: NodeId, op: FenceOp, vm: String) {
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

    fn answer(
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
    fn reply_rule(&self, host: NodeId, vm: &str) -> String {
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
    fn situation(&self, vm: &Vm, requester: NodeId) -> String {
        let rc = self.hosts[self.h(requester)].comp;
        let mut runs = Vec::new();
        for h in vm.active_hosts() {
            let host = &self.hosts[self.h(h)];
            let local_active = host
                .daemon
                .as_ref()
                .and_then(|d| d.model.as_ref())
                .map(|m| {
                    m.snapshot(self.now).domains.iter().any(|d| {
                        d.name == vm.name
                            && d.placements
                                .iter()
                                .any(|p| p.nodeid == h && p.state.is_active())
                    })
                });
            let why = match &host.daemon {
                Some(_) if host.kind == Kind::FenceVirtd => "a fence_virtd peer holds it",
                None => "the owner's daemon left the group: its VMs were purged",
                Some(d) if !d.connected => "the owner's daemon left the group: its VMs were purged",
                Some(_) if !host.corosync || host.comp != rc => {
                    "the owner left the membership (corosync down or partition): its VMs were purged"
                }
                Some(_) if !host.libvirt || local_active == Some(false) => {
                    "the owner's daemon (re)started without libvirt: its inventory was incomplete"
                }
                Some(_) => "the owner is healthy now (an earlier fault)",
            };
            runs.push(why);
        }
        runs.dedup();
        runs.join(" / ")
    }
}
