//! fence_virtd's permission groups (fence-virt-protocol.md §5), pure.
//!
//! - No groups at all: everything is allowed.
//! - Fence operations (off, on, reboot, status): the source must be one of a
//!   group's `ip` entries, and the target must equal one of *that* group's
//!   `uuid` entries ignoring ASCII case (the entries may hold VM names too).
//! - Host list: a VM is shown when its name or its UUID is among the `uuid`
//!   entries of a group that contains the source.
//! - null and monitor are never checked (the listeners do not ask).
//!
//! Sources are what the listener saw: the IP inside a multicast packet, the
//! TCP peer's IP, a vsock peer's CID in decimal. Unlike fence_virtd's plain
//! string compare, two IP addresses also match when they parse to the same
//! address (`::1` = `0:0::1`, `::ffff:10.0.0.1` = `10.0.0.1`).

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

/// One permission group as configured (the daemon builds these from the
/// config's `[[groups]]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionGroup {
    pub name: String,
    /// VM names or UUIDs the group's sources may fence (case-insensitive).
    pub uuid: Vec<String>,
    /// Sources: IP addresses (compared as addresses) or vsock CIDs.
    pub ip: Vec<String>,
}

#[derive(Debug, Clone)]
struct Group {
    name: String,
    targets: Vec<String>,
    sources: Vec<Source>,
}

#[derive(Debug, Clone)]
enum Source {
    Ip(IpAddr),
    Text(String),
}

impl Source {
    fn parse(s: &str) -> Self {
        match s.trim().parse::<IpAddr>() {
            Ok(ip) => Source::Ip(ip.to_canonical()),
            Err(_) => Source::Text(s.to_string()),
        }
    }

    fn matches(&self, other: &Source) -> bool {
        match (self, other) {
            (Source::Ip(a), Source::Ip(b)) => a == b,
            (Source::Text(a), Source::Text(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
}

/// The loaded groups; [`replace`](Permissions::replace)d in place on a
/// reload, so every listener sees the new groups at its next request.
#[derive(Debug, Default)]
pub struct Permissions {
    groups: RwLock<Arc<[Group]>>,
}

fn load(groups: &[PermissionGroup]) -> Arc<[Group]> {
    groups
        .iter()
        .filter(|g| !g.uuid.is_empty() || !g.ip.is_empty())
        .map(|g| Group {
            name: g.name.clone(),
            targets: g.uuid.clone(),
            sources: g.ip.iter().map(|s| Source::parse(s)).collect(),
        })
        .collect()
}

impl Permissions {
    /// Groups without any entry are dropped (as fence_virtd does).
    pub fn new(groups: &[PermissionGroup]) -> Self {
        Self {
            groups: RwLock::new(load(groups)),
        }
    }

    /// Puts `groups` in force for every later check.
    pub fn replace(&self, groups: &[PermissionGroup]) {
        *self.groups.write().unwrap_or_else(PoisonError::into_inner) = load(groups);
    }

    fn current(&self) -> Arc<[Group]> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True when no group is configured: everything is allowed.
    pub fn allows_all(&self) -> bool {
        self.current().is_empty()
    }

    /// May `source` run a fence operation on `target` (a VM name or UUID,
    /// as the client sent it)? Returns the granting group's name.
    pub fn may_fence(&self, source: &str, target: &str) -> Result<Option<String>, Denied> {
        let groups = self.current();
        if groups.is_empty() {
            return Ok(None);
        }
        groups_of(&groups, source)
            .find(|g| g.targets.iter().any(|t| t.eq_ignore_ascii_case(target)))
            .map(|g| Some(g.name.clone()))
            .ok_or(Denied)
    }

    /// May `source` see the VM `name`/`uuid` in a host list?
    pub fn may_see(&self, source: &str, name: &str, uuid: &str) -> bool {
        let groups = self.current();
        if groups.is_empty() {
            return true;
        }
        groups_of(&groups, source).any(|g| {
            g.targets
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name) || t.eq_ignore_ascii_case(uuid))
        })
    }
}

fn groups_of<'a>(groups: &'a [Group], source: &str) -> impl Iterator<Item = &'a Group> + 'a {
    let src = Source::parse(source);
    groups
        .iter()
        .filter(move |g| g.sources.iter().any(|s| s.matches(&src)))
}

/// A refused fence operation (result 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no permission group allows this source to fence this VM")]
pub struct Denied;

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, uuid: &[&str], ip: &[&str]) -> PermissionGroup {
        PermissionGroup {
            name: name.into(),
            uuid: uuid.iter().map(|s| s.to_string()).collect(),
            ip: ip.iter().map(|s| s.to_string()).collect(),
        }
    }

    const U1: &str = "8f1e0001-0000-4000-8000-000000000011";

    #[test]
    fn replaced_groups_apply_to_the_next_check() {
        let p = Permissions::new(&[group("a", &["vm-a"], &["10.0.0.1"])]);
        assert!(p.may_fence("10.0.0.1", "vm-b").is_err());
        p.replace(&[group("b", &["vm-b"], &["10.0.0.1"])]);
        assert_eq!(p.may_fence("10.0.0.1", "vm-b"), Ok(Some("b".into())));
        assert!(p.may_fence("10.0.0.1", "vm-a").is_err());
        p.replace(&[]);
        assert!(p.allows_all());
    }

    #[test]
    fn no_groups_allow_everything() {
        let p = Permissions::new(&[]);
        assert!(p.allows_all());
        assert_eq!(p.may_fence("10.0.0.9", "anything"), Ok(None));
        assert!(p.may_see("10.0.0.9", "a", "b"));
        // Groups without entries count as none.
        let p = Permissions::new(&[group("empty", &[], &[])]);
        assert!(p.allows_all());
    }

    #[test]
    fn fence_needs_the_source_and_the_target_in_the_same_group() {
        let p = Permissions::new(&[
            group("web", &["web1", U1], &["10.0.0.1"]),
            group("db", &["db1"], &["10.0.0.2", "3"]),
        ]);
        assert_eq!(p.may_fence("10.0.0.1", "web1"), Ok(Some("web".into())));
        assert_eq!(
            p.may_fence("10.0.0.1", "WEB1"),
            Ok(Some("web".into())),
            "case-insensitive"
        );
        assert_eq!(
            p.may_fence("10.0.0.1", &U1.to_uppercase()),
            Ok(Some("web".into()))
        );
        assert_eq!(
            p.may_fence("10.0.0.1", "db1"),
            Err(Denied),
            "other group's VM"
        );
        assert_eq!(p.may_fence("10.0.0.2", "db1"), Ok(Some("db".into())));
        assert_eq!(
            p.may_fence("10.0.0.3", "web1"),
            Err(Denied),
            "unknown source"
        );
        assert_eq!(p.may_fence("3", "db1"), Ok(Some("db".into())), "vsock CID");
        assert_eq!(p.may_fence("4", "db1"), Err(Denied));
        assert_eq!(
            p.may_fence("10.0.0.1", "web"),
            Err(Denied),
            "no prefix match"
        );
    }

    #[test]
    fn a_source_in_several_groups_gets_the_union() {
        let p = Permissions::new(&[
            group("a", &["vm-a"], &["10.0.0.1"]),
            group("b", &["vm-b"], &["10.0.0.1"]),
        ]);
        assert_eq!(p.may_fence("10.0.0.1", "vm-a"), Ok(Some("a".into())));
        assert_eq!(p.may_fence("10.0.0.1", "vm-b"), Ok(Some("b".into())));
    }

    #[test]
    fn addresses_compare_as_addresses() {
        let p = Permissions::new(&[group("v6", &["vm"], &["fd00::1", "::1", "10.1.1.1"])]);
        assert!(p.may_fence("fd00:0:0::1", "vm").is_ok());
        assert!(p.may_fence("FD00::1", "vm").is_ok());
        assert!(p.may_fence("0:0:0:0:0:0:0:1", "vm").is_ok());
        assert!(p.may_fence("::ffff:10.1.1.1", "vm").is_ok(), "IPv4-mapped");
        assert!(p.may_fence("fd00::2", "vm").is_err());
        // A name is not an address: plain (case-insensitive) text compare.
        let p = Permissions::new(&[group("h", &["vm"], &["Host.example"])]);
        assert!(p.may_fence("host.EXAMPLE", "vm").is_ok());
    }

    #[test]
    fn list_shows_vms_by_name_or_uuid() {
        let p = Permissions::new(&[
            group("by-name", &["web1"], &["10.0.0.1"]),
            group("by-uuid", &[U1], &["10.0.0.2"]),
        ]);
        assert!(p.may_see("10.0.0.1", "web1", "00000000-0000-0000-0000-000000000000"));
        assert!(!p.may_see("10.0.0.1", "db1", U1));
        assert!(p.may_see("10.0.0.2", "db1", U1));
        assert!(p.may_see("10.0.0.2", "db1", &U1.to_uppercase()));
        assert!(
            !p.may_see("10.0.0.9", "web1", U1),
            "unknown source sees nothing"
        );
    }
}
