//! This daemon's own readiness in the snapshot (its CPG joins, its
//! inventory, its fence listeners) and the one rule for "can this host
//! fence now" that fence_xvm's `monitor`, systemd's STATUS= and the checks
//! share.

use serde::{Deserialize, Serialize};

use crate::api::Snapshot;

/// This daemon's readiness (systemd's READY=1 waits for all of it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalView {
    /// This daemon is in the `fence-agents` group.
    #[serde(default)]
    pub fence_group: bool,
    /// This daemon is in fenceline's own group.
    #[serde(default)]
    pub own_group: bool,
    /// Every configured libvirt URI has been listed since its last connect.
    #[serde(default)]
    pub inventory_complete: bool,
    /// The configured fence listeners; empty: none is configured (guests
    /// cannot fence through this host).
    #[serde(default)]
    pub listeners: Vec<ListenerView>,
}

/// One configured fence listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerView {
    /// `multicast`, `tcp` or `vsock`.
    pub name: String,
    /// Where it listens: `225.0.0.12:1229 on virbr0`, `10.0.0.1:1229`, `port 1229`.
    pub at: String,
    pub state: ListenerState,
    /// Why it waits or failed (`waiting for interface virbr0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Whether a listener has its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerState {
    Bound,
    /// Its interface or address is not there yet; it retries.
    Waiting,
    /// Binding failed for another reason; it retries.
    Error,
}

impl Snapshot {
    /// Why this host cannot take part in fencing now, or `None` when it
    /// can: corosync down, this daemon not in `fence-agents`, inquorate,
    /// and with `require_libvirt` a libvirt connection down or not fully
    /// listed. fence_xvm's `monitor` answers fail with this.
    pub fn cannot_fence(&self, require_libvirt: bool) -> Option<String> {
        if !self.corosync.connected {
            return Some(match &self.corosync.error {
                Some(e) => format!("corosync down ({e})"),
                None => "corosync down".into(),
            });
        }
        if !self.local.fence_group {
            return Some("not in the fence-agents group".into());
        }
        if !self.quorate {
            return Some("inquorate".into());
        }
        if require_libvirt {
            if let Some(l) = self.libvirt.iter().find(|l| !l.connected) {
                return Some(format!("libvirt down ({})", l.uri));
            }
            if !self.local.inventory_complete {
                return Some("libvirt inventory incomplete".into());
            }
        }
        None
    }
}

impl ListenerView {
    /// `multicast@virbr0: bound`, `tcp@10.0.0.1:1229: waiting for address 10.0.0.1`.
    pub fn describe(&self) -> String {
        let state = match (self.state, &self.detail) {
            (ListenerState::Bound, _) => "bound".to_string(),
            (_, Some(d)) => d.clone(),
            (ListenerState::Waiting, None) => "waiting".to_string(),
            (ListenerState::Error, None) => "error".to_string(),
        };
        format!("{} {}: {state}", self.name, self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A healthy host, as `status --json` shows it.
    fn healthy() -> Snapshot {
        serde_json::from_str(
            r#"{"version":1,"generated_at":0,"cluster_name":null,"local_nodeid":1,
            "quorate":true,"stale":false,"corosync":{"connected":true,"since":0},
            "nodes":[],"domains":[],"counters":{"malformed_fence_agents":0,
            "malformed_own":0,"dropped_inputs":0,"dropped_events":0,"dropped_effects":0,
            "dropped_libvirt_events":0},"daemon_version":"t",
            "libvirt":[{"uri":"qemu:///system","connected":true,"since":0}],
            "local":{"fence_group":true,"own_group":true,"inventory_complete":true}}"#,
        )
        .unwrap()
    }

    #[test]
    fn cannot_fence_names_the_first_reason() {
        let s = healthy();
        assert_eq!(s.cannot_fence(true), None);
        let mut d = healthy();
        d.corosync.connected = false;
        d.corosync.error = Some("CS_ERR_LIBRARY".into());
        assert_eq!(
            d.cannot_fence(false).as_deref(),
            Some("corosync down (CS_ERR_LIBRARY)")
        );
        let mut d = healthy();
        d.local.fence_group = false;
        assert_eq!(
            d.cannot_fence(false).as_deref(),
            Some("not in the fence-agents group")
        );
        let mut d = healthy();
        d.quorate = false;
        assert_eq!(d.cannot_fence(false).as_deref(), Some("inquorate"));
        let mut d = healthy();
        d.libvirt[0].connected = false;
        assert_eq!(d.cannot_fence(false), None, "libvirt only when required");
        assert_eq!(
            d.cannot_fence(true).as_deref(),
            Some("libvirt down (qemu:///system)")
        );
        let mut d = healthy();
        d.local.inventory_complete = false;
        assert_eq!(
            d.cannot_fence(true).as_deref(),
            Some("libvirt inventory incomplete")
        );
    }

    #[test]
    fn listener_descriptions() {
        let v = ListenerView {
            name: "tcp".into(),
            at: "10.0.0.1:1229".into(),
            state: ListenerState::Waiting,
            detail: Some("waiting for address 10.0.0.1".into()),
        };
        assert_eq!(
            v.describe(),
            "tcp 10.0.0.1:1229: waiting for address 10.0.0.1"
        );
        let b = ListenerView {
            state: ListenerState::Bound,
            detail: None,
            ..v
        };
        assert_eq!(b.describe(), "tcp 10.0.0.1:1229: bound");
    }
}
