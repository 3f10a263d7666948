//! The simulated libvirt of each host: the truth changes it makes and the
//! fence actions it carries out.

use super::*;

impl World {
    /// The worker reports the connection down (or never up).
    pub(super) fn libvirt_lost(&mut self, host: NodeId, pid: u32, max_delay: Millis, error: &str) {
        let t = self.lib_time(host, max_delay);
        self.push(
            t,
            Ev::Input {
                host,
                pid,
                input: Input::LibvirtLink {
                    at: t,
                    uri: URI.into(),
                    connected: false,
                    error: Some(error.into()),
                },
            },
        );
    }

    /// `host`'s libvirt reports that `vm` left by live migration (the
    /// stopped event's reason), before it reports the copy shut off.
    pub(super) fn report_migrated(&mut self, vm: usize, host: NodeId) {
        let i = self.h(host);
        if !self.hosts[i].libvirt || self.hosts[i].kind != Kind::Fenceline {
            return;
        }
        let Some(pid) = self.pid_of(host) else {
            return;
        };
        // No draw from the RNG: the seeds keep their schedules.
        let t = self.now.max(self.hosts[i].lib_last);
        self.hosts[i].lib_last = t;
        let (name, uuid) = (self.vms[vm].name.clone(), self.vms[vm].uuid.clone());
        self.log(|_| format!("n{host} libvirt reports {name} left by migration (at {t})"));
        let input = Input::LocalMigrated {
            at: t,
            uri: URI.into(),
            name,
            uuid,
        };
        self.push(t, Ev::Input { host, pid, input });
    }

    /// Changes the truth and lets `host`'s libvirt report it.
    pub(super) fn set_state(&mut self, vm: usize, host: NodeId, state: DomainState) {
        let now = self.now;
        let v = &mut self.vms[vm];
        let was_active = v.active();
        v.on.insert(host, state);
        if v.migrated_from == Some(host) {
            v.migrated_from = None;
        }
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
                            domain: LocalDomain {
                                name,
                                uuid,
                                state,
                                migration: None,
                            },
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
    pub(super) fn act(
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
        let not_found = self.hosts[i].libvirt && state.is_none();
        // libvirt's state reason: shut off because it migrated away.
        let migrated = self.hosts[i].libvirt
            && state == Some(DomainState::Shutoff)
            && vm.is_some_and(|v| self.vms[v].migrated_from == Some(host));
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
                        self.vms[v].rebooted = Some(self.now);
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
                self.reply(host, seqno, target, body);
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
                            not_found,
                            migrated,
                        },
                    },
                );
            }
        }
    }

    pub(super) fn check_double_start(&mut self, vm: usize, host: NodeId, by_fence_virtd: bool) {
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
}
