//! The console's keymap as data: every action is declared once in
//! [`ACTIONS`] (name, default keys, where it applies, what it does, whether it
//! changes anything). Key dispatch, the `?` help, the hint bar and the README
//! key table (`fenceline console --print-keys`) are all generated from it, so
//! they cannot drift apart. `[console.keys]` in the config rebinds actions by
//! name; a key bound to two actions in the same place is an error.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

mod actions;
mod key;
#[cfg(test)]
mod tests;

use actions::MUST_BE_BOUND;
pub use actions::*;
pub use key::Key;

/// What is wrong with a `[console.keys]` table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeymapError {
    #[error("`{name}` is not a console action; known actions: {known}")]
    UnknownAction { name: String, known: String },
    #[error("action `{action}`: {reason}")]
    BadKey { action: String, reason: String },
    #[error("key `{key}` is bound to both `{first}` and `{second}` ({scope}); unbind one of them")]
    Clash {
        key: String,
        scope: &'static str,
        first: &'static str,
        second: &'static str,
    },
    #[error("action `{action}` needs at least one key (the console could not be left without it)")]
    Unbound { action: &'static str },
}

impl KeymapError {
    /// The action names the error is about (to point at a line in the config).
    pub fn actions(&self) -> Vec<&str> {
        match self {
            KeymapError::UnknownAction { name, .. } => vec![name],
            KeymapError::BadKey { action, .. } => vec![action],
            KeymapError::Clash { first, second, .. } => vec![second, first],
            KeymapError::Unbound { action } => vec![action],
        }
    }
}

/// The effective keymap: defaults plus overrides.
#[derive(Debug, Clone)]
pub struct Keymap {
    keys: BTreeMap<Action, Vec<Key>>,
    lookup: HashMap<(Scope, Key), Action>,
}

impl Default for Keymap {
    fn default() -> Self {
        Keymap::with_overrides(&BTreeMap::new()).expect("the default keymap has no clashes")
    }
}

impl Keymap {
    /// The defaults with `overrides` (action name → keys) applied. Overridden
    /// actions lose their default keys; an empty list unbinds an action.
    pub fn with_overrides(
        overrides: &BTreeMap<String, Vec<String>>,
    ) -> Result<Keymap, KeymapError> {
        let mut keys: BTreeMap<Action, Vec<Key>> = BTreeMap::new();
        for a in ACTIONS {
            let parsed = a
                .keys
                .iter()
                .map(|k| Key::parse(k).expect("default keys parse"))
                .collect();
            keys.insert(a.action, parsed);
        }
        for (name, spec) in overrides {
            let Some(a) = ACTIONS.iter().find(|a| a.name == name) else {
                return Err(KeymapError::UnknownAction {
                    name: name.clone(),
                    known: ACTIONS
                        .iter()
                        .map(|a| a.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let mut list = Vec::new();
            for k in spec {
                let key = Key::parse(k).map_err(|reason| KeymapError::BadKey {
                    action: name.clone(),
                    reason,
                })?;
                if !list.contains(&key) {
                    list.push(key);
                }
            }
            keys.insert(a.action, list);
        }
        for &must in MUST_BE_BOUND {
            if keys.get(&must).is_none_or(Vec::is_empty) {
                return Err(KeymapError::Unbound {
                    action: info(must).name,
                });
            }
        }
        // Clash detection: in declaration order, so the error names the
        // earlier action first.
        let mut lookup = HashMap::new();
        for a in ACTIONS {
            for key in &keys[&a.action] {
                for &scope in a.scopes {
                    if let Some(prev) = lookup.insert((scope, *key), a.action) {
                        return Err(KeymapError::Clash {
                            key: key.to_string(),
                            scope: scope.title(),
                            first: info(prev).name,
                            second: a.name,
                        });
                    }
                }
            }
        }
        Ok(Keymap { keys, lookup })
    }

    /// The action `key` triggers in `scope`.
    pub fn action(&self, scope: Scope, key: Key) -> Option<Action> {
        self.lookup.get(&(scope, key)).copied()
    }

    pub fn keys(&self, action: Action) -> &[Key] {
        self.keys.get(&action).map(Vec::as_slice).unwrap_or(&[])
    }

    /// "j, down" style list of an action's keys.
    pub fn keys_text(&self, action: Action) -> String {
        let ks = self.keys(action);
        if ks.is_empty() {
            return "(unbound)".into();
        }
        ks.iter().map(Key::to_string).collect::<Vec<_>>().join(", ")
    }

    /// The help, by scope: (keys, description) rows. Mutating actions are left
    /// out in read-only mode.
    pub fn help(&self, read_only: bool) -> Vec<(&'static str, Vec<(String, &'static str)>)> {
        let mut out = Vec::new();
        for scope in [Scope::Main, Scope::Dialog, Scope::Help] {
            if read_only && scope == Scope::Dialog {
                continue;
            }
            let rows: Vec<(String, &'static str)> = ACTIONS
                .iter()
                .filter(|a| a.scopes.first() == Some(&scope))
                .filter(|a| !(read_only && a.mutating))
                .map(|a| (self.keys_text(a.action), a.description))
                .collect();
            out.push((scope.title(), rows));
        }
        out
    }

    /// The hint bar: (first key, label) for the actions that have a hint,
    /// most important first (a narrow terminal shows a prefix): help and
    /// quit, then the actions, then navigation.
    pub fn hints(&self, read_only: bool) -> Vec<(String, &'static str)> {
        let rank = |a: &ActionInfo| match a.action {
            Action::Help | Action::Quit => 0,
            _ if a.mutating => 1,
            Action::Filter | Action::Jump => 2,
            _ => 3,
        };
        let mut hinted: Vec<&ActionInfo> = ACTIONS.iter().filter(|a| a.hint.is_some()).collect();
        hinted.sort_by_key(|a| rank(a));
        hinted
            .into_iter()
            .filter(|a| !(read_only && a.mutating))
            .filter_map(|a| {
                let label = a.hint?;
                let key = self.keys(a.action).first()?;
                // The sort keys are shown as one range when they are the defaults.
                if a.action == Action::SortName {
                    let range = [
                        Action::SortName,
                        Action::SortState,
                        Action::SortOwner,
                        Action::SortAge,
                        Action::SortUuid,
                    ]
                    .iter()
                    .map(|s| {
                        self.keys(*s)
                            .first()
                            .map(Key::to_string)
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>();
                    if range == ["1", "2", "3", "4", "5"] {
                        return Some(("1-5".to_string(), label));
                    }
                }
                Some((key.to_string(), label))
            })
            .collect()
    }

    /// The key table in Markdown (README; `fenceline console --print-keys`).
    pub fn markdown(&self) -> String {
        let mut s = String::from("| Keys | Where | Action | Changes a VM |\n|---|---|---|---|\n");
        for a in ACTIONS {
            let keys = self
                .keys(a.action)
                .iter()
                .map(|k| format!("`{}`", k.to_string().replace('|', "\\|")))
                .collect::<Vec<_>>()
                .join(" ");
            let scopes = a
                .scopes
                .iter()
                .map(|s| s.title())
                .collect::<Vec<_>>()
                .join(", ");
            s.push_str(&format!(
                "| {keys} | {scopes} | {} | {} |\n",
                a.description,
                if a.mutating {
                    "yes (hidden in the monitor)"
                } else {
                    ""
                }
            ));
        }
        s.push_str("\nIn the filter and jump prompts: ");
        s.push_str(
            &PROMPT_KEYS
                .iter()
                .map(|(k, d)| format!("`{k}` {}", d.to_lowercase()))
                .collect::<Vec<_>>()
                .join("; "),
        );
        s.push_str(".\n");
        s
    }
}
