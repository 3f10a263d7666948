//! fence_xvm multicast runs and their claims: every fenceline daemon asks
//! the claim for a run it receives; the property is that at most one node
//! wins a run (exactly one in fault-free schedules), unless a partition
//! happened (CPG orders within a component only: `model/fence/claim.rs`).

use super::*;

impl World {
    /// Hands run `run` for `vm` to every fenceline daemon's listener, a few
    /// ms apart (the multicast reaches the hosts at slightly different times).
    pub(super) fn multicast(&mut self, vm: String, run: String) {
        self.log(|_| format!("ACTION fence_xvm multicast run {run} for {vm}"));
        self.claim_runs
            .entry(run.clone())
            .or_insert((self.now, vm.clone(), Vec::new()));
        for i in 0..self.hosts.len() {
            let host = self.hosts[i].id;
            if self.hosts[i].kind != Kind::Fenceline {
                continue;
            }
            let Some(pid) = self.pid_of(host) else {
                continue;
            };
            let id = self.claim_asks.len() as u64 + 1;
            self.claim_asks.insert(id, (run.clone(), host));
            let at = self.now + self.rng.range(0, 20);
            let input = Input::ClaimAsk {
                at,
                id,
                claim: run.clone(),
                domain: vm.clone(),
            };
            self.push(at, Ev::Input { host, pid, input });
        }
    }

    pub(super) fn claim_done(&mut self, id: u64, outcome: ClaimOutcome) {
        let Some((run, host)) = self.claim_asks.get(&id).cloned() else {
            return;
        };
        self.log(|_| format!("n{host} claim of run {run}: {outcome:?}"));
        if outcome == ClaimOutcome::Won
            && let Some(r) = self.claim_runs.get_mut(&run)
        {
            r.2.push(host);
        }
    }

    /// Called once the run ends.
    pub(super) fn check_claims(&mut self) {
        for (run, (at, vm, won)) in &self.claim_runs {
            let bad = (won.len() > 1 && !self.partitioned) || (self.exact_claims && won.len() != 1);
            if bad {
                let who: Vec<String> = won.iter().map(|h| format!("n{h}")).collect();
                self.report.violations.push(Violation {
                    kind: VKind::ConnectBacks,
                    at: *at,
                    text: format!(
                        "multicast run {run} for {vm} at {at} connected back by [{}]",
                        who.join(", ")
                    ),
                    signature: format!("{} connect-backs", won.len()),
                });
            }
        }
    }
}
