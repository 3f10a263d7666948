//! `[console]`: plain data only. What a theme or a key binding means is
//! checked where the console is built (the daemon never loads a theme);
//! [`ConsoleSection::invalid`] lets that check report the same
//! `file:line: key` errors as the rest of the config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::errors::find_key_line;

/// The console's settings. `--theme` on the command line wins over `theme`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// A built-in theme (`default`, `light`, `high-contrast`) or a path to a
    /// theme file.
    pub theme: String,
    /// Key bindings by action name (`fenceline console --print-keys` lists
    /// them): `fence-off = "F"` or `quit = ["q", "ctrl-c"]`; `[]` unbinds.
    pub keys: BTreeMap<String, KeySpec>,
    /// Where the section was written, for error messages.
    #[serde(skip)]
    pub origin: ConsoleOrigin,
}

/// Where the settings are equal counts, not where they were written.
impl PartialEq for ConsoleSection {
    fn eq(&self, other: &Self) -> bool {
        self.theme == other.theme && self.keys == other.keys
    }
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            theme: "default".into(),
            keys: Default::default(),
            origin: ConsoleOrigin::default(),
        }
    }
}

/// One or several keys, as `[console.keys]` writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeySpec {
    One(String),
    Many(Vec<String>),
}

impl KeySpec {
    pub fn keys(&self) -> Vec<String> {
        match self {
            KeySpec::One(k) => vec![k.clone()],
            KeySpec::Many(v) => v.clone(),
        }
    }
}

/// The file the section came from and the lines of its keys
/// (`theme`, `keys`, and each action under `[console.keys]`).
#[derive(Debug, Clone, Default)]
pub struct ConsoleOrigin {
    pub path: Option<PathBuf>,
    lines: BTreeMap<String, usize>,
}

impl ConsoleSection {
    /// The key overrides as plain lists: action name → keys.
    pub fn key_overrides(&self) -> BTreeMap<String, Vec<String>> {
        self.keys
            .iter()
            .map(|(a, spec)| (a.clone(), spec.keys()))
            .collect()
    }

    /// Records where the section's keys are written in `text`.
    pub(super) fn locate(&mut self, text: &str, path: &Path) {
        let mut lines = BTreeMap::new();
        for key in ["theme", "keys"] {
            if let Some(l) = find_key_line(text, "console", key) {
                lines.insert(key.to_string(), l);
            }
        }
        for action in self.keys.keys() {
            if let Some(l) = find_key_line(text, "console.keys", action) {
                lines.insert(format!("keys.{action}"), l);
            }
        }
        self.origin = ConsoleOrigin {
            path: Some(path.to_path_buf()),
            lines,
        };
    }

    /// An error about `console.theme` (`key = "theme"`) or `console.keys`
    /// (`key = "keys"`; the line is that of the first of `actions` written
    /// under `[console.keys]`, else the `keys` line).
    pub fn invalid(&self, key: &str, actions: &[&str], message: String) -> ConfigError {
        let lines = &self.origin.lines;
        let line = actions
            .iter()
            .find_map(|a| lines.get(&format!("{key}.{a}")))
            .or_else(|| lines.get(key))
            .copied();
        ConfigError::Invalid {
            path: self
                .origin
                .path
                .clone()
                .unwrap_or_else(|| super::DEFAULT_CONFIG_PATH.into()),
            line,
            key: format!("console.{key}"),
            message,
        }
    }
}
