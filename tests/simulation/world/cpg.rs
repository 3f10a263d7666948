//! The simulated corosync: multicasts in one total order, membership views
//! per daemon, daemon start, and fence_virtd-like peers.

use super::*;

impl World {
    pub(super) fn reply(&mut self, host: NodeId, seqno: u32, target: NodeId, body: FenceWire) {
        let msg = Cpg::Reply {
            seqno,
            target,
            body,
        };
        self.mcast(host, Group::FenceAgents, msg);
    }

    pub(super) fn mcast(&mut self, host: NodeId, group: Group, msg: Cpg) {
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

    pub(super) fn deliver(&mut self, seq: u64, from: NodeId, group: Group, msg: Cpg) {
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
    pub(super) fn fvd_deliver(&mut self, host: NodeId, from: NodeId, msg: &Cpg) {
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

    pub(super) fn fvd_announce(&mut self, host: NodeId) {
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
    pub(super) fn sync_membership(&mut self) {
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

    pub(super) fn start_daemon(&mut self, host: NodeId) {
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
                self.libvirt_lost(host, pid, 50, "Failed to connect socket");
            }
        }
        if self.hosts[i].corosync {
            let t = self.now + self.rng.range(5, 300);
            self.push(t, Ev::Connect { host, pid });
        }
    }
}
