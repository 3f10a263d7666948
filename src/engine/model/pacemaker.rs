//! The hosts' own Pacemaker confirms a departed node down
//! (`[fencing] pacemaker_confirm`, off by default): a successful off or
//! reboot of that node in Pacemaker's fencing history, completed after the
//! node left by this model's record, goes through the same path as
//! `fenceline confirm` (audited event, `OwnMessage::Confirmed` to peers).
//!
//! The completion time is the fencer's wall clock, compared with this
//! node's: the hosts' clocks are assumed synchronised (README).

use fenceline_proto::api::Millis;
use fenceline_proto::pcmk_history::FenceRecord;

use super::{Cluster, Effect, Output, OwnMessage};

impl Cluster {
    /// A record of Pacemaker's fencing history for a node. `Ok(detail)`:
    /// the node is now confirmed down; `Err(why)`: the record proves
    /// nothing (or nothing more).
    pub(super) fn pacemaker_fenced(
        &mut self,
        at: Millis,
        record: &FenceRecord,
        out: &mut Output,
    ) -> Result<String, String> {
        if !record.is_successful_kill() {
            return Err("not a successful off or reboot".into());
        }
        let completed = record
            .completed_ms
            .ok_or_else(|| "no readable completion time".to_string())?;
        let id = self.confirm_target(&record.target)?;
        if Some(id) == self.local_nodeid {
            return Err("this is the local node: it is not down".into());
        }
        let n = &self.nodes[&id];
        if n.member {
            return Err(format!(
                "{} is a corosync member: it has not left",
                self.node_label(id)
            ));
        }
        if completed <= n.since {
            return Err(format!(
                "the fence completed at {} ms, not after {} left at {} ms: it proves nothing",
                completed,
                self.node_label(id),
                n.since
            ));
        }
        if self.accounting(id, at).is_ok() {
            return Err(format!("{} is already accounted for", self.node_label(id)));
        }
        let mut source = format!(
            "pacemaker: {} of {} completed {}",
            record.action, record.target, record.completed
        );
        if !record.delegate.is_empty() {
            source.push_str(&format!(" by {}", record.delegate));
        }
        if !record.origin.is_empty() {
            source.push_str(&format!(" (asked by {})", record.origin));
        }
        let detail = self.confirm_node(at, id, &source, out)?;
        out.effects
            .push(Effect::Own(OwnMessage::Confirmed { nodeid: id, source }));
        Ok(detail)
    }
}

#[cfg(test)]
mod tests;
