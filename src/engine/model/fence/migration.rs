//! Live migration: libvirt says a local domain left this host by live
//! migration (stopped or suspended with reason "migrated"). Its shut-off
//! copy here proves nothing: the VM runs on the target, whose report may
//! not have reached the map yet. So this node answers no "off"/"ok" from
//! that copy for a request the migration overlapped, nor before the
//! target's active copy reached the map (ARCHITECTURE.md "The truth rule").

use fenceline_proto::api::{FenceOp, Millis};

use crate::engine::model::accounting::ago;
use crate::engine::model::{Cluster, DomKey};

/// A local domain that left by live migration.
#[derive(Debug, Clone, Copy)]
pub(in crate::engine::model) struct Migrated {
    /// When libvirt said so.
    at: Millis,
    /// When another node's active copy first reached this node since.
    target_seen: Option<Millis>,
}

/// The refusal for a copy that left by live migration during the request.
pub(super) fn migrated_during(target: &str, op: FenceOp) -> String {
    let answer = if op == FenceOp::Status { "off" } else { "ok" };
    format!(
        "`{target}` left this host by live migration during the request: it runs on the target; refusing to answer {answer}"
    )
}

impl Cluster {
    /// libvirt reported that a local domain left by live migration.
    pub(in crate::engine::model) fn local_migrated(&mut self, at: Millis, name: &str, uuid: &str) {
        let m = Migrated {
            at,
            target_seen: None,
        };
        self.fence.migrated.insert(DomKey::of(name, uuid), m);
    }

    /// The placements of `key` may have changed: a local copy active again
    /// ends the mark; another node's active copy means the target reported.
    /// A mark whose target reported is dropped once no local job uses it.
    pub(in crate::engine::model) fn migration_refresh(&mut self, key: &DomKey, at: Millis) {
        if !self.fence.migrated.contains_key(key) {
            return;
        }
        let here = self
            .local_obs(key)
            .is_some_and(|(o, _)| o.state.is_active());
        let me = self.local_nodeid;
        let elsewhere = self
            .peers
            .iter()
            .any(|(id, p)| Some(*id) != me && p.vms.get(key).is_some_and(|o| o.state.is_active()));
        let busy = self
            .fence
            .jobs
            .values()
            .any(|j| j.key.as_ref() == Some(key));
        let Some(m) = self.fence.migrated.get_mut(key) else {
            return;
        };
        if elsewhere && m.target_seen.is_none() {
            m.target_seen = Some(at);
        }
        if here || (m.target_seen.is_some() && !busy) {
            self.fence.migrated.remove(key);
        }
    }

    /// Why this host's copy of `key` may not say "off"/"ok" for a request
    /// that reached it at `started`: it left by live migration during the
    /// request, or before it while the target had not reported yet (a
    /// target report that arrives during the request does not make this
    /// copy's "off" true: the router chose it without knowing).
    pub(super) fn migrated_away(
        &self,
        at: Millis,
        key: &DomKey,
        target: &str,
        started: Millis,
        op: FenceOp,
    ) -> Option<String> {
        let m = self.fence.migrated.get(key)?;
        let answer = if op == FenceOp::Status { "off" } else { "ok" };
        if m.at >= started {
            Some(format!(
                "`{target}` left this host by live migration during the request ({}): it runs on the target; refusing to answer {answer}",
                ago(at, m.at)
            ))
        } else if m.target_seen.is_none_or(|t| t > started) {
            Some(format!(
                "`{target}` left this host by live migration {} and the target's copy had not been reported when the request came: refusing to answer {answer}",
                ago(at, m.at)
            ))
        } else {
            None
        }
    }
}
