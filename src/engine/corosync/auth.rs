//! Who may speak in the CPG groups: the cluster key's seal on own-group
//! messages (`fenceline_proto::seal`), and, when asked for, `fence-agents`
//! messages only from processes that have proved they hold the key.
//!
//! Without a cluster key nothing is authenticated: every process corosync
//! lets into the groups is trusted, as with fence_virtd (sealed messages
//! from peers that have a key are read unverified, so a key can be rolled
//! out host by host). With a key, an own-group message that is not sealed
//! with it by the very process corosync names as its sender is dropped and
//! counted; its sender becomes an authenticated peer (nodeid, pid) until it
//! leaves the own group. With `authenticated_only`, every `fence-agents`
//! message (REQUEST, REPLY, STORE_VM) from anyone else is dropped too: for
//! clusters with no fence_virtd left.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use crate::engine::model::{Group, GroupMember};
use fenceline_proto::api::NodeId;
use fenceline_proto::seal;

/// The driver's narrow settings for authentication.
#[derive(Clone, Default)]
pub struct CpgAuth {
    /// `[corosync] cluster_key`, read by the daemon (0600, root).
    pub key: Option<Arc<[u8]>>,
    /// `[corosync] authenticated_only`.
    pub authenticated_only: bool,
}

impl std::fmt::Debug for CpgAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpgAuth")
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .field("authenticated_only", &self.authenticated_only)
            .finish()
    }
}

impl PartialEq for CpgAuth {
    fn eq(&self, o: &Self) -> bool {
        self.key.as_deref() == o.key.as_deref() && self.authenticated_only == o.authenticated_only
    }
}

/// The driver's state: the settings and the authenticated senders.
#[derive(Debug, Default)]
pub(super) struct Gate {
    auth: CpgAuth,
    own_group: String,
    peers: HashSet<(NodeId, u32)>,
}

impl Gate {
    pub(super) fn new(auth: CpgAuth, own_group: String) -> Self {
        Gate {
            auth,
            own_group,
            peers: HashSet::new(),
        }
    }

    /// An own-group message as it goes out from `local`.
    pub(super) fn seal(&self, local: NodeId, bytes: Vec<u8>) -> Vec<u8> {
        match &self.auth.key {
            Some(k) => seal::seal(k, &self.own_group, local, std::process::id(), &bytes),
            None => bytes,
        }
    }

    /// What a delivered message carries, or why it is dropped.
    pub(super) fn admit<'a>(
        &mut self,
        group: Group,
        from: NodeId,
        pid: u32,
        data: &'a [u8],
    ) -> Result<Cow<'a, [u8]>, String> {
        match (group, &self.auth.key) {
            (Group::Own, Some(k)) => match seal::open(k, &self.own_group, from, pid, data) {
                Ok(payload) => {
                    self.peers.insert((from, pid));
                    Ok(Cow::Borrowed(payload))
                }
                Err(e) => Err(format!("own-group message without a valid seal: {e}")),
            },
            (Group::Own, None) if seal::is_sealed(data) => seal::unverified(data)
                .map(Cow::Borrowed)
                .map_err(|e| e.to_string()),
            (Group::FenceAgents, Some(_))
                if self.auth.authenticated_only && !self.peers.contains(&(from, pid)) =>
            {
                Err(format!(
                    "fence-agents message from node {from} pid {pid}, which is not an authenticated fenceline peer (corosync.authenticated_only)"
                ))
            }
            _ => Ok(Cow::Borrowed(data)),
        }
    }

    /// A member that leaves the own group is no longer authenticated.
    pub(super) fn left(&mut self, group: Group, left: &[GroupMember]) {
        if group == Group::Own {
            for m in left {
                self.peers.remove(&(m.nodeid, m.pid));
            }
        }
    }

    /// A new session: nobody is authenticated yet.
    pub(super) fn reset(&mut self) {
        self.peers.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(only: bool) -> Gate {
        Gate::new(
            CpgAuth {
                key: Some(Arc::from(&[9u8; 32][..])),
                authenticated_only: only,
            },
            "fl".into(),
        )
    }

    #[test]
    fn sealed_by_the_sender_passes_and_makes_it_a_peer() {
        let mut g = gate(true);
        let sealed = seal::seal(&[9; 32], "fl", 2, 77, b"msg");
        let refused = g.admit(Group::FenceAgents, 2, 77, b"req").unwrap_err();
        assert!(refused.contains("not an authenticated"), "{refused}");
        assert_eq!(&*g.admit(Group::Own, 2, 77, &sealed).unwrap(), b"msg");
        assert_eq!(
            &*g.admit(Group::FenceAgents, 2, 77, b"req").unwrap(),
            b"req"
        );
        // Another process on the same node is not the peer.
        assert!(g.admit(Group::FenceAgents, 2, 78, b"req").is_err());
        assert!(
            g.admit(Group::Own, 2, 78, &sealed).is_err(),
            "replayed by another pid"
        );
        assert!(
            g.admit(Group::Own, 2, 78, b"FNLN\x01plain").is_err(),
            "unsealed"
        );
        g.left(
            Group::Own,
            &[GroupMember {
                nodeid: 2,
                pid: 77,
                reason: "Leave".into(),
            }],
        );
        assert!(g.admit(Group::FenceAgents, 2, 77, b"req").is_err());
    }

    #[test]
    fn without_the_option_fence_agents_stays_open_and_without_a_key_all_is() {
        let mut g = gate(false);
        assert!(g.admit(Group::FenceAgents, 5, 1, b"req").is_ok());
        let mut open = Gate::new(CpgAuth::default(), "fl".into());
        assert_eq!(&*open.admit(Group::Own, 5, 1, b"FNLN").unwrap(), b"FNLN");
        let sealed = seal::seal(&[1; 32], "fl", 5, 1, b"inner");
        assert_eq!(&*open.admit(Group::Own, 5, 1, &sealed).unwrap(), b"inner");
        assert_eq!(open.seal(1, b"x".to_vec()), b"x");
    }
}
