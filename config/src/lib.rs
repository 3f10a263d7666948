//! fenceline's TOML configuration.
//!
//! Every section rejects unknown keys, and every error names the file, the
//! line and the key, so a typo stops the daemon instead of being ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod console;
mod errors;
pub mod fence_virt_conf;
mod sections;
#[cfg(test)]
mod tests;
mod validate;

pub use console::{ConsoleOrigin, ConsoleSection, KeySpec};
use errors::locate;
pub use errors::{ConfigError, find_key_line};
pub use sections::*;

/// Where the daemon looks when `--config` is not given.
use fenceline_proto::paths::DEFAULT_CONFIG_PATH;
pub const DEFAULT_SOCKET: &str = "/run/fenceline/fenceline.sock";
pub const DEFAULT_READONLY_SOCKET: &str = "/run/fenceline/fenceline-ro.sock";

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
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
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
        cfg.console.locate(text, path);
        Ok(cfg)
    }

    /// Validates settings that did not come from TOML text (e.g. imported
    /// from fence_virt.conf); errors name `path` without a line.
    pub fn check(&self, path: &Path) -> Result<(), ConfigError> {
        self.validate("", path)
    }

    /// Every configured listener with its key file: (`multicast` | `tcp` |
    /// `vsock`, path), in that order.
    pub fn listener_keys(&self) -> Vec<(&'static str, &Path)> {
        let l = &self.listeners;
        let mut v = Vec::new();
        if let Some(m) = &l.multicast {
            v.push(("multicast", m.key_file.as_path()));
        }
        if let Some(t) = &l.tcp {
            v.push(("tcp", t.key_file.as_path()));
        }
        if let Some(s) = &l.vsock {
            v.push(("vsock", s.key_file.as_path()));
        }
        v
    }

    pub fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(self.libvirt.reconcile_secs)
    }
}
