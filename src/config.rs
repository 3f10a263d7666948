//! fenceline's TOML configuration.
//!
//! Every section rejects unknown keys, and every error names the file, the
//! line and the key, so a typo stops the daemon instead of being ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fenceline/fenceline.toml";
pub const DEFAULT_SOCKET: &str = "/run/fenceline/fenceline.sock";
pub const DEFAULT_READONLY_SOCKET: &str = "/run/fenceline/fenceline-ro.sock";
pub const DEFAULT_LOG_FILE: &str = "/var/log/fenceline/fenceline.log";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub libvirt: LibvirtSection,
    pub control: ControlSection,
    pub log: LogSection,
    pub events: EventsSection,
    pub corosync: CorosyncSection,
    pub fencing: FencingSection,
    pub listeners: ListenersSection,
    pub hooks: HooksSection,
    /// fence_virtd's permission groups: which source may fence which VMs.
    /// None at all = everything is allowed (fence_virtd's rule).
    pub groups: Vec<PermissionGroup>,
    /// `fenceline console` / `monitor`: theme and key bindings.
    pub console: ConsoleSection,
}

/// The console's settings. `--theme` on the command line wins over `theme`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// A built-in theme (`default`, `light`, `high-contrast`) or a path to a
    /// theme file.
    pub theme: String,
    /// Key bindings by action name (`fenceline console --print-keys` lists
    /// them): `fence-off = "F"` or `quit = ["q", "ctrl-c"]`; `[]` unbinds.
    pub keys: std::collections::BTreeMap<String, crate::ui::keymap::KeySpec>,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            theme: "default".into(),
            keys: Default::default(),
        }
    }
}

/// How fence requests are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FenceBackend {
    /// Route through the cluster over CPG `fence-agents` (fence_virtd's cpg backend).
    #[default]
    Cpg,
    /// Act on this host's VMs only, no routing (fence_virtd's libvirt backend).
    Libvirt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FencingSection {
    pub backend: FenceBackend,
    /// How long a requester waits for the acting node's reply (off, on, status).
    pub timeout_secs: u64,
    /// How long a reboot may take end to end (destroy, stopped event, start).
    pub reboot_timeout_secs: u64,
    /// fence_virtd's old rule: the highest node id answers "off" for a VM
    /// nobody knows even WITHOUT quorum. Unsafe in a partition; off by default.
    pub unknown_vm_without_quorum: bool,
    /// Append-only JSON-lines audit log of every fence request (fsync'd).
    /// Empty = no audit file (events still carry every request).
    pub audit_log: PathBuf,
}

pub const DEFAULT_AUDIT_LOG: &str = "/var/log/fenceline/audit.jsonl";

impl Default for FencingSection {
    fn default() -> Self {
        Self {
            backend: FenceBackend::Cpg,
            timeout_secs: 20,
            reboot_timeout_secs: 60,
            unknown_vm_without_quorum: false,
            audit_log: DEFAULT_AUDIT_LOG.into(),
        }
    }
}

/// fence_xvm / fence_virt listeners; an absent section is off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenersSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multicast: Option<MulticastListener>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpListenerConf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vsock: Option<VsockListener>,
}

pub const DEFAULT_KEY_FILE: &str = "/etc/cluster/fence_xvm.key";

/// Hash names as fence_virt.conf spells them: none, sha1, sha256, sha512.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HashName {
    None,
    Sha1,
    #[default]
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MulticastListener {
    /// The group to join: 225.0.0.12 (IPv4) or ff05::3:1 (IPv6).
    pub address: String,
    pub port: u16,
    /// Join on this interface only; absent = the kernel's choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub key_file: PathBuf,
    /// The weakest packet hash accepted.
    pub hash: HashName,
    /// The challenge/response hash.
    pub auth: HashName,
}

impl Default for MulticastListener {
    fn default() -> Self {
        Self {
            address: "225.0.0.12".into(),
            port: 1229,
            interface: None,
            key_file: DEFAULT_KEY_FILE.into(),
            hash: HashName::Sha256,
            auth: HashName::Sha256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpListenerConf {
    /// 127.0.0.1 or ::1 by default; an IPv6 address listens on IPv6.
    pub address: String,
    pub port: u16,
    pub key_file: PathBuf,
    pub hash: HashName,
    /// Used as configured (fence_virtd's tcp listener ignores it: its bug).
    pub auth: HashName,
}

impl Default for TcpListenerConf {
    fn default() -> Self {
        Self {
            address: "127.0.0.1".into(),
            port: 1229,
            key_file: DEFAULT_KEY_FILE.into(),
            hash: HashName::Sha256,
            auth: HashName::Sha256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VsockListener {
    pub port: u32,
    pub key_file: PathBuf,
    pub hash: HashName,
    pub auth: HashName,
}

impl Default for VsockListener {
    fn default() -> Self {
        Self {
            port: 1229,
            key_file: DEFAULT_KEY_FILE.into(),
            hash: HashName::Sha256,
            auth: HashName::Sha256,
        }
    }
}

/// One fence_virtd permission group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PermissionGroup {
    pub name: String,
    /// VM names or UUIDs this group may fence (case-insensitive).
    pub uuid: Vec<String>,
    /// Sources (client IPs, vsock CIDs) in this group.
    pub ip: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NameMode {
    #[default]
    Name,
    Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LibvirtSection {
    /// One or more libvirt URIs on this host.
    pub uris: Vec<String>,
    /// Whether fence requests name VMs by name or by UUID (fence_virtd's `name_mode`).
    pub name_mode: NameMode,
    /// Seconds between full re-listings (reconcile); at least 30.
    pub reconcile_secs: u64,
}

impl Default for LibvirtSection {
    fn default() -> Self {
        Self {
            uris: vec!["qemu:///system".into()],
            name_mode: NameMode::Name,
            reconcile_secs: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Read-write socket, mode 0600.
    pub socket: PathBuf,
    /// Read-only socket, mode 0666.
    pub readonly_socket: PathBuf,
}

impl Default for ControlSection {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            readonly_socket: DEFAULT_READONLY_SOCKET.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Log file (appended); empty string = stderr only.
    pub file: PathBuf,
    /// A tracing filter, e.g. "info" or "fenceline=debug".
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            file: DEFAULT_LOG_FILE.into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsSection {
    /// How many recent events the daemon keeps for `fenceline events`.
    pub capacity: usize,
}

impl Default for EventsSection {
    fn default() -> Self {
        Self { capacity: 1000 }
    }
}

/// The libvirt network hook (`fenceline hook`, `fenceline install-hook`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksSection {
    /// Unix datagram socket the daemon receives hook events on (mode 0600).
    pub socket: PathBuf,
    /// Hook events queued between the socket and the engine; a burst beyond
    /// it is dropped and counted (`dropped_hook_events`).
    pub queue: usize,
}

impl Default for HooksSection {
    fn default() -> Self {
        Self {
            socket: crate::engine::hooks::DEFAULT_HOOK_SOCKET.into(),
            queue: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorosyncSection {
    /// fence_virtd's CPG group; change only for tests.
    pub fence_group: String,
    /// fenceline's own CPG group.
    pub own_group: String,
}

impl Default for CorosyncSection {
    fn default() -> Self {
        Self {
            fence_group: "fence-agents".into(),
            own_group: "fenceline".into(),
        }
    }
}

/// A configuration error, always with the file and, where known, line and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        key: Option<String>,
        message: String,
    },
    #[error("{path}:{}: key `{key}`: {message}", line.map(|l| l.to_string()).unwrap_or_else(|| "?".into()))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

impl Config {
    /// Loads a config file. With `path == None`, the default path is used if
    /// it exists, else built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((Config::parse(&text, &path)?, Some(path))),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                Ok((Config::default(), None))
            }
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, column, key) = match e.span() {
                Some(span) => locate(text, span.start),
                None => (0, 0, None),
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                key,
                message: e.message().trim().to_string(),
            }
        })?;
        cfg.validate(text, path)?;
        Ok(cfg)
    }

    fn validate(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
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
        if let Err(e) = crate::ui::theme::Theme::load(&self.console.theme) {
            return Err(invalid("console", "theme", e));
        }
        if let Err(e) = crate::ui::keymap::Keymap::with_overrides(&self.console.keys) {
            let line = e
                .actions()
                .iter()
                .find_map(|a| find_key_line(text, "console.keys", a))
                .or_else(|| find_key_line(text, "console", "keys"));
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                key: "console.keys".into(),
                message: e.to_string(),
            });
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

    /// Validates settings that did not come from TOML text (e.g. imported
    /// from fence_virt.conf); errors name `path` without a line.
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        self.validate("", path)
    }

    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(self.libvirt.reconcile_secs)
    }
}

/// Line (1-based), column (1-based) and the key written on that line, if any.
fn locate(text: &str, offset: usize) -> (usize, usize, Option<String>) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    let key = line_text
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    // Prefix the key with its table, e.g. `libvirt.uris`.
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, k) => k,
        (Some(_), None) => None,
    };
    (line, column, key)
}

/// The line of the `index`-th (0-based) `[[name]]` header.
fn find_array_table_line(text: &str, name: &str, index: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim();
            t.starts_with("[[") && t.trim_start_matches('[').trim_end_matches(']').trim() == name
        })
        .nth(index)
        .map(|(i, _)| i + 1)
}

/// The line where `key` is set inside `[section]`, if it is written at all.
fn find_key_line(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if current == section && t.split_once('=').map(|(k, _)| k.trim()) == Some(key) {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("/etc/fenceline/test.toml"))
    }

    #[test]
    fn contract_example_parses() {
        let c = parse(
            r#"
[libvirt]
uris = ["qemu:///system"]          # one or more
name_mode = "name"                 # or "uuid"
[control]
socket = "/run/fenceline/fenceline.sock"
readonly_socket = "/run/fenceline/fenceline-ro.sock"
[log]
file = "/var/log/fenceline/fenceline.log"
"#,
        )
        .unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = parse("[libvirt]\nuris = [\"test:///default\"]\nurl = \"x\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/etc/fenceline/test.toml:3:"), "{msg}");
        assert!(msg.contains("libvirt.url"), "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = parse("[events]\ncapacity = \"lots\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(":2:"), "{msg}");
        assert!(msg.contains("events.capacity"), "{msg}");
    }

    #[test]
    fn bad_name_mode_is_refused() {
        let e = parse("[libvirt]\nname_mode = \"both\"\n").unwrap_err();
        assert!(e.to_string().contains("libvirt.name_mode"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key_and_line() {
        let e = parse("[libvirt]\nuris = []\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/fenceline/test.toml:2: key `libvirt.uris`: needs at least one URI"
        );
        let e = parse("[control]\nsocket = \"rel.sock\"\n").unwrap_err();
        assert!(e.to_string().contains("control.socket"), "{e}");
        let e = parse("[libvirt]\nreconcile_secs = 1\n").unwrap_err();
        assert!(
            e.to_string().contains(":2: key `libvirt.reconcile_secs`"),
            "{e}"
        );
        let e = parse("[libvirt]\nuris = [\"a:///\", \"a:///\"]\n").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn console_section_is_validated_with_line_and_key() {
        let c = parse(
            "[console]\ntheme = \"light\"\n[console.keys]\nfence-off = \"ctrl-k\"\nquit = [\"q\", \"Q\"]\n",
        )
        .unwrap();
        assert_eq!(c.console.theme, "light");
        assert_eq!(c.console.keys.len(), 2);
        let e = parse("[console]\ntheme = \"solarized\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "/etc/fenceline/test.toml:2: key `console.theme`: no theme `solarized`"
            ),
            "{msg}"
        );
        let e = parse("[console.keys]\nhelp = \"?\"\nreboot = \"q\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/fenceline/test.toml:3: key `console.keys`: key `q` is bound to both `quit` and `reboot` (Main screen); unbind one of them"
        );
        let e = parse("[console.keys]\nfence = \"x\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains(":2: key `console.keys`: `fence` is not a console action"),
            "{e}"
        );
        let e = parse("[console]\ncolour = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("console.colour"), "{e}");
    }

    #[test]
    fn hooks_section() {
        let c = parse("[hooks]\nsocket = \"/run/fenceline/hook.sock\"\n").unwrap();
        assert_eq!(c, Config::default());
        let c = parse("[hooks]\nsocket = \"/tmp/h.sock\"\nqueue = 10\n").unwrap();
        assert_eq!(c.hooks.socket, PathBuf::from("/tmp/h.sock"));
        assert_eq!(c.hooks.queue, 10);
        let e = parse("[hooks]\nsocket = \"h.sock\"\n").unwrap_err();
        assert!(e.to_string().contains(":2: key `hooks.socket`"), "{e}");
        let e = parse("[hooks]\nsocket = \"/run/fenceline/fenceline.sock\"\n").unwrap_err();
        assert!(e.to_string().contains("must differ"), "{e}");
        let e = parse("[hooks]\nqueue = 0\n").unwrap_err();
        assert!(e.to_string().contains("hooks.queue"), "{e}");
        let e = parse("[hooks]\nsockets = \"/x\"\n").unwrap_err();
        assert!(e.to_string().contains("hooks.sockets"), "{e}");
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = parse("[libvirt\nuris = 1\n").unwrap_err();
        assert!(e.to_string().contains("test.toml:1:"), "{e}");
    }

    #[test]
    fn fencing_sections_parse() {
        let c = parse(
            r#"
[fencing]
backend = "libvirt"
timeout_secs = 30
audit_log = ""
[listeners.multicast]
address = "ff05::3:1"
interface = "br0"
key_file = "/etc/cluster/fence_xvm.key"
hash = "sha512"
auth = "sha1"
[listeners.tcp]
address = "::1"
port = 1230
[listeners.vsock]
port = 1231
[[groups]]
name = "web"
uuid = ["web1", "8f1e0001-0000-4000-8000-000000000011"]
ip = ["10.0.0.1", "3"]
"#,
        )
        .unwrap();
        assert_eq!(c.fencing.backend, FenceBackend::Libvirt);
        let m = c.listeners.multicast.as_ref().unwrap();
        assert_eq!((m.hash, m.auth), (HashName::Sha512, HashName::Sha1));
        assert_eq!(m.port, 1229, "defaults fill the rest");
        assert_eq!(c.listeners.tcp.as_ref().unwrap().port, 1230);
        assert_eq!(c.listeners.vsock.as_ref().unwrap().port, 1231);
        assert_eq!(c.groups.len(), 1);
        // An empty table enables a listener with every default.
        let c = parse("[listeners.multicast]\n").unwrap();
        assert_eq!(c.listeners.multicast, Some(MulticastListener::default()));
        assert_eq!(c.listeners.tcp, None);
    }

    #[test]
    fn fencing_errors_name_the_key_and_line() {
        let cases: &[(&str, &str)] = &[
            (
                "[fencing]\ntimeout_secs = 0\n",
                ":2: key `fencing.timeout_secs`",
            ),
            (
                "[fencing]\nreboot_timeout_secs = 10000\n",
                ":2: key `fencing.reboot_timeout_secs`",
            ),
            (
                "[fencing]\naudit_log = \"audit.jsonl\"\n",
                ":2: key `fencing.audit_log`: `audit.jsonl` must be an absolute path",
            ),
            (
                "[listeners.multicast]\naddress = \"10.0.0.1\"\n",
                ":2: key `listeners.multicast.address`: 10.0.0.1 is not a multicast address",
            ),
            (
                "[listeners.multicast]\naddress = \"x\"\n",
                "`x` is not an IP address",
            ),
            (
                "[listeners.multicast]\nport = 0\n",
                ":2: key `listeners.multicast.port`",
            ),
            (
                "[listeners.multicast]\ninterface = \"\"\n",
                "key `listeners.multicast.interface`",
            ),
            (
                "[listeners.multicast]\nkey_file = \"k.key\"\n",
                ":2: key `listeners.multicast.key_file`: `k.key` must be an absolute path",
            ),
            (
                "[listeners.tcp]\naddress = \"localhost\"\n",
                "key `listeners.tcp.address`: `localhost` is not an IP address",
            ),
            ("[listeners.tcp]\nport = 0\n", "key `listeners.tcp.port`"),
            (
                "[listeners.vsock]\nport = 0\n",
                "key `listeners.vsock.port`",
            ),
            (
                "[listeners.vsock]\nkey_file = \"rel\"\n",
                "key `listeners.vsock.key_file`",
            ),
            (
                "[[groups]]\nname = \"a\"\nuuid = [\"vm\"]\nip = [\"1.1.1.1\"]\n[[groups]]\nname = \"b\"\nuuid = [\"vm\"]\n",
                ":5: key `groups[1].ip`: group `b` has no `ip` entries",
            ),
            (
                "[[groups]]\nip = [\"1.1.1.1\"]\n",
                ":1: key `groups[0].uuid`: group #1 has no `uuid` entries",
            ),
            (
                "[[groups]]\nip = [\"1.1.1.1\"]\nuuid = [\" \"]\n",
                "key `groups[0].uuid`: group #1 has an empty entry",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: got {e:?}, want {want:?}");
        }
        // Unknown keys and hash names are refused by the parser.
        let e = parse("[listeners.multicast]\nhash = \"md5\"\n").unwrap_err();
        assert!(e.to_string().contains("listeners.multicast.hash"), "{e}");
        let e = parse("[listeners.tcp]\nfamily = \"ipv6\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = parse("[fencing]\nbackend = \"xen\"\n").unwrap_err();
        assert!(e.to_string().contains("fencing.backend"), "{e}");
    }

    #[test]
    fn missing_explicit_file_is_an_error_but_missing_default_is_not() {
        let e = Config::load(Some(Path::new("/nonexistent/fenceline.toml"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/fenceline.toml"));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn shipped_example_config_is_the_defaults() {
        let text = include_str!("../contrib/fenceline.toml");
        let c = Config::parse(text, Path::new("contrib/fenceline.toml")).unwrap();
        assert_eq!(c, Config::default());
    }
}
