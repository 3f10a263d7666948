//! The checks serde cannot express: ranges, paths, addresses, groups.

use std::path::Path;

use super::errors::{find_array_table_line, find_key_line};
use super::{Config, ConfigError, MAX_SELF_FENCE_SECS, MIN_SELF_FENCE_SECS};

impl Config {
    pub(super) fn validate(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |section: &str, key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: find_key_line(text, section, key),
            key: format!("{section}.{key}"),
            message,
        };
        if self.libvirt.uris.is_empty() {
            return Err(invalid("libvirt", "uris", "needs at least one URI".into()));
        }
        if let Some(u) = self.libvirt.uris.iter().find(|u| !u.contains(':')) {
            return Err(invalid(
                "libvirt",
                "uris",
                format!("`{u}` is not a libvirt URI (e.g. qemu:///system)"),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(u) = self.libvirt.uris.iter().find(|u| !seen.insert(u.as_str())) {
            return Err(invalid("libvirt", "uris", format!("`{u}` is listed twice")));
        }
        match &self.corosync.cluster_key {
            Some(p) if !p.is_absolute() => {
                return Err(invalid(
                    "corosync",
                    "cluster_key",
                    format!("`{}` must be an absolute path", p.display()),
                ));
            }
            None if self.corosync.authenticated_only => {
                return Err(invalid(
                    "corosync",
                    "authenticated_only",
                    "needs corosync.cluster_key (nothing can be authenticated without it)".into(),
                ));
            }
            _ => {}
        }
        if !(100..=1_000_000).contains(&self.corosync.max_peer_vms) {
            return Err(invalid(
                "corosync",
                "max_peer_vms",
                "must be between 100 and 1000000".into(),
            ));
        }
        if self.libvirt.reconcile_secs < 30 {
            return Err(invalid(
                "libvirt",
                "reconcile_secs",
                "must be at least 30 (events are the primary source; this is only a safety net)"
                    .into(),
            ));
        }
        for (key, p) in [
            ("socket", &self.control.socket),
            ("readonly_socket", &self.control.readonly_socket),
        ] {
            if !p.is_absolute() {
                return Err(invalid(
                    "control",
                    key,
                    format!("`{}` must be an absolute path", p.display()),
                ));
            }
        }
        if self.control.socket == self.control.readonly_socket {
            return Err(invalid(
                "control",
                "readonly_socket",
                "must differ from control.socket".into(),
            ));
        }
        if !self.hooks.socket.is_absolute() {
            return Err(invalid(
                "hooks",
                "socket",
                format!("`{}` must be an absolute path", self.hooks.socket.display()),
            ));
        }
        if self.hooks.socket == self.control.socket
            || self.hooks.socket == self.control.readonly_socket
        {
            return Err(invalid(
                "hooks",
                "socket",
                "must differ from the control sockets".into(),
            ));
        }
        if self.hooks.queue == 0 || self.hooks.queue > 1_000_000 {
            return Err(invalid(
                "hooks",
                "queue",
                "must be between 1 and 1000000".into(),
            ));
        }
        if self.events.capacity == 0 || self.events.capacity > 1_000_000 {
            return Err(invalid(
                "events",
                "capacity",
                "must be between 1 and 1000000".into(),
            ));
        }
        if !(1..=64).contains(&self.control.max_streams_per_uid) {
            return Err(invalid(
                "control",
                "max_streams_per_uid",
                "must be 1 to 64".into(),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid("log", "level", format!("not a log filter: {e}")));
        }
        for (key, g) in [
            ("fence_group", &self.corosync.fence_group),
            ("own_group", &self.corosync.own_group),
        ] {
            if g.is_empty() || g.len() > 127 {
                return Err(invalid("corosync", key, "must be 1 to 127 bytes".into()));
            }
        }
        if self.corosync.fence_group == self.corosync.own_group {
            return Err(invalid(
                "corosync",
                "own_group",
                "must differ from corosync.fence_group".into(),
            ));
        }
        self.validate_fencing(text, path)
    }

    /// `[fencing]`, `[listeners.*]` and `[[groups]]`. Whether a multicast
    /// interface exists, and whether key files are readable, is checked when
    /// the listeners start.
    fn validate_fencing(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |section: &str, key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: find_key_line(text, section, key),
            key: format!("{section}.{key}"),
            message,
        };
        let f = &self.fencing;
        if !(1..=300).contains(&f.timeout_secs) {
            return Err(invalid(
                "fencing",
                "timeout_secs",
                "must be 1 to 300".into(),
            ));
        }
        if !(1..=900).contains(&f.reboot_timeout_secs) {
            return Err(invalid(
                "fencing",
                "reboot_timeout_secs",
                "must be 1 to 900".into(),
            ));
        }
        if f.self_fence_secs != 0
            && !(MIN_SELF_FENCE_SECS..=MAX_SELF_FENCE_SECS).contains(&f.self_fence_secs)
        {
            return Err(invalid(
                "fencing",
                "self_fence_secs",
                format!("must be 0 (off) or {MIN_SELF_FENCE_SECS} to {MAX_SELF_FENCE_SECS}"),
            ));
        }
        if !f.audit_log.as_os_str().is_empty() && !f.audit_log.is_absolute() {
            return Err(invalid(
                "fencing",
                "audit_log",
                format!(
                    "`{}` must be an absolute path (or \"\" for none)",
                    f.audit_log.display()
                ),
            ));
        }
        if f.audit_required && f.audit_log.as_os_str().is_empty() {
            return Err(invalid(
                "fencing",
                "audit_required",
                "needs an audit_log to write to".into(),
            ));
        }
        let key_file = |section: &str, p: &Path| {
            if p.is_absolute() {
                Ok(())
            } else {
                Err(invalid(
                    section,
                    "key_file",
                    format!("`{}` must be an absolute path", p.display()),
                ))
            }
        };
        if let Some(p) = &self.listeners.requester_names
            && !p.is_absolute()
        {
            return Err(invalid(
                "listeners",
                "requester_names",
                format!("`{}` must be an absolute path", p.display()),
            ));
        }
        if let Some(m) = &self.listeners.multicast {
            let s = "listeners.multicast";
            match m.address.parse::<std::net::IpAddr>() {
                Ok(ip) if ip.is_multicast() => {}
                Ok(ip) => {
                    return Err(invalid(
                        s,
                        "address",
                        format!("{ip} is not a multicast address (e.g. 225.0.0.12 or ff05::3:1)"),
                    ));
                }
                Err(_) => {
                    return Err(invalid(
                        s,
                        "address",
                        format!("`{}` is not an IP address", m.address),
                    ));
                }
            }
            if m.port == 0 {
                return Err(invalid(s, "port", "must be 1 to 65535".into()));
            }
            if let Some(i) = &m.interface
                && (i.is_empty() || i.len() > 15 || i.contains(['/', ' ', '\0']))
            {
                return Err(invalid(
                    s,
                    "interface",
                    format!("`{i}` is not an interface name"),
                ));
            }
            key_file(s, &m.key_file)?;
            for n in &m.callback_networks {
                fenceline_proto::cidr::Cidr::parse(n)
                    .map_err(|e| invalid(s, "callback_networks", e))?;
            }
        }
        if let Some(t) = &self.listeners.tcp {
            let s = "listeners.tcp";
            if t.address.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(
                    s,
                    "address",
                    format!("`{}` is not an IP address", t.address),
                ));
            }
            if t.port == 0 {
                return Err(invalid(s, "port", "must be 1 to 65535".into()));
            }
            key_file(s, &t.key_file)?;
        }
        if let Some(v) = &self.listeners.vsock {
            let s = "listeners.vsock";
            if v.port == 0 || v.port == u32::MAX {
                return Err(invalid(s, "port", "must be 1 to 4294967294".into()));
            }
            key_file(s, &v.key_file)?;
        }
        for (i, g) in self.groups.iter().enumerate() {
            let group_err = |key: &str, message: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: find_array_table_line(text, "groups", i),
                key: format!("groups[{i}].{key}"),
                message,
            };
            let what = if g.name.is_empty() {
                format!("group #{}", i + 1)
            } else {
                format!("group `{}`", g.name)
            };
            if g.ip.is_empty() {
                return Err(group_err(
                    "ip",
                    format!("{what} has no `ip` entries, so it matches no requester"),
                ));
            }
            if g.uuid.is_empty() {
                return Err(group_err(
                    "uuid",
                    format!(
                        "{what} has no `uuid` entries (VM names or UUIDs), so it allows nothing"
                    ),
                ));
            }
            if let Some(e) = g.ip.iter().chain(&g.uuid).find(|e| e.trim().is_empty()) {
                return Err(group_err(
                    if g.ip.contains(e) { "ip" } else { "uuid" },
                    format!("{what} has an empty entry"),
                ));
            }
        }
        Ok(())
    }
}
