//! The console's keymap as data: every action is declared once in
//! [`ACTIONS`] (name, default keys, where it applies, what it does, whether it
//! changes anything). Key dispatch, the `?` help, the hint bar and the README
//! key table (`fenceline console --print-keys`) are all generated from it, so
//! they cannot drift apart. `[console.keys]` in the config rebinds actions by
//! name; a key bound to two actions in the same place is an error.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Where an action applies. One key may mean different things in different
/// scopes (Esc closes the help and cancels a dialog), never two things in one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The main screen.
    Main,
    /// The help overlay.
    Help,
    /// The confirmation dialog.
    Dialog,
}

impl Scope {
    pub fn title(self) -> &'static str {
        match self {
            Scope::Main => "Main screen",
            Scope::Help => "Help",
            Scope::Dialog => "Confirmation dialog",
        }
    }
}

/// Everything a key can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Help,
    Quit,
    Back,
    Filter,
    Jump,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    NextPane,
    PrevPane,
    SortName,
    SortState,
    SortOwner,
    SortAge,
    SortUuid,
    SortReverse,
    PauseEvents,
    FenceOff,
    Reboot,
    Start,
    CloseHelp,
    Confirm,
    Cancel,
    SwitchButton,
    Press,
}

/// The declaration of one action.
#[derive(Debug, Clone, Copy)]
pub struct ActionInfo {
    pub action: Action,
    /// The name used in `[console.keys]`.
    pub name: &'static str,
    pub keys: &'static [&'static str],
    pub scopes: &'static [Scope],
    pub description: &'static str,
    /// Changes a VM: hidden (and refused) in read-only mode.
    pub mutating: bool,
    /// Short label for the hint bar, if the action is shown there.
    pub hint: Option<&'static str>,
}

const MAIN: &[Scope] = &[Scope::Main];
const MAIN_HELP: &[Scope] = &[Scope::Main, Scope::Help];

macro_rules! act {
    ($a:ident, $name:literal, [$($k:literal),*], $scopes:expr, $desc:literal, $mutating:literal, $hint:expr) => {
        ActionInfo {
            action: Action::$a,
            name: $name,
            keys: &[$($k),*],
            scopes: $scopes,
            description: $desc,
            mutating: $mutating,
            hint: $hint,
        }
    };
}

/// Every action, in help order.
pub const ACTIONS: &[ActionInfo] = &[
    act!(
        Help,
        "help",
        ["?", "f1"],
        MAIN,
        "Show this help",
        false,
        Some("help")
    ),
    act!(
        Quit,
        "quit",
        ["q", "ctrl-c"],
        MAIN,
        "Quit the console",
        false,
        Some("quit")
    ),
    act!(
        Back,
        "back",
        ["esc"],
        MAIN,
        "Back: clear the filter, resume the event pane",
        false,
        None
    ),
    act!(
        Filter,
        "filter",
        ["/"],
        MAIN,
        "Filter domains: words match name, state, owner or uuid; !word excludes",
        false,
        Some("filter")
    ),
    act!(
        Jump,
        "jump",
        [":"],
        MAIN,
        "Jump to a domain or node by name, uuid or id (:q quits)",
        false,
        Some("jump")
    ),
    act!(
        Up,
        "up",
        ["up", "k"],
        MAIN_HELP,
        "Move up (scroll the event pane when it has focus)",
        false,
        None
    ),
    act!(
        Down,
        "down",
        ["down", "j"],
        MAIN_HELP,
        "Move down",
        false,
        None
    ),
    act!(
        PageUp,
        "page-up",
        ["pgup", "ctrl-b"],
        MAIN_HELP,
        "One page up",
        false,
        None
    ),
    act!(
        PageDown,
        "page-down",
        ["pgdn", "ctrl-f"],
        MAIN_HELP,
        "One page down",
        false,
        None
    ),
    act!(
        Top,
        "top",
        ["home", "g"],
        MAIN_HELP,
        "First row (newest event)",
        false,
        None
    ),
    act!(
        Bottom,
        "bottom",
        ["end", "G"],
        MAIN_HELP,
        "Last row (oldest event)",
        false,
        None
    ),
    act!(
        NextPane,
        "next-pane",
        ["tab"],
        MAIN,
        "Focus the next pane (domains, events, nodes)",
        false,
        Some("pane")
    ),
    act!(
        PrevPane,
        "prev-pane",
        ["backtab"],
        MAIN,
        "Focus the previous pane",
        false,
        None
    ),
    act!(
        SortName,
        "sort-name",
        ["1"],
        MAIN,
        "Sort domains by name (again: reverse)",
        false,
        Some("sort")
    ),
    act!(
        SortState,
        "sort-state",
        ["2"],
        MAIN,
        "Sort domains by state",
        false,
        None
    ),
    act!(
        SortOwner,
        "sort-owner",
        ["3"],
        MAIN,
        "Sort domains by owner node",
        false,
        None
    ),
    act!(
        SortAge,
        "sort-age",
        ["4"],
        MAIN,
        "Sort domains by time in state",
        false,
        None
    ),
    act!(
        SortUuid,
        "sort-uuid",
        ["5"],
        MAIN,
        "Sort domains by uuid",
        false,
        None
    ),
    act!(
        SortReverse,
        "sort-reverse",
        ["I"],
        MAIN,
        "Reverse the sort order",
        false,
        None
    ),
    act!(
        PauseEvents,
        "pause-events",
        ["p"],
        MAIN,
        "Pause or resume the event pane",
        false,
        Some("pause")
    ),
    act!(
        FenceOff,
        "fence-off",
        ["F"],
        MAIN,
        "Fence off (power off) the selected VM, after confirmation",
        true,
        Some("fence")
    ),
    act!(
        Reboot,
        "reboot",
        ["R"],
        MAIN,
        "Reboot the selected VM, after confirmation",
        true,
        Some("reboot")
    ),
    act!(
        Start,
        "start",
        ["S"],
        MAIN,
        "Start (power on) the selected VM, after confirmation",
        true,
        Some("start")
    ),
    act!(
        CloseHelp,
        "close-help",
        ["esc", "?", "q"],
        &[Scope::Help],
        "Close the help",
        false,
        None
    ),
    act!(
        Confirm,
        "confirm",
        ["y"],
        &[Scope::Dialog],
        "Confirm the action",
        false,
        None
    ),
    act!(
        Cancel,
        "cancel",
        ["n", "esc"],
        &[Scope::Dialog],
        "Cancel",
        false,
        None
    ),
    act!(
        SwitchButton,
        "switch-button",
        ["tab", "left", "right"],
        &[Scope::Dialog],
        "Move between Cancel and the action button",
        false,
        None
    ),
    act!(
        Press,
        "press",
        ["enter"],
        &[Scope::Dialog],
        "Press the focused button (Cancel at first)",
        false,
        None
    ),
];

/// Actions that must keep at least one key, or the console could not be left.
const MUST_BE_BOUND: &[Action] = &[Action::Quit, Action::CloseHelp, Action::Cancel];

/// Keys of the filter and jump prompts; fixed, listed in the help.
pub const PROMPT_KEYS: &[(&str, &str)] = &[
    ("enter", "Apply (jump: go to the match)"),
    ("esc", "Cancel (filter: restore the previous filter)"),
    ("backspace", "Delete a character"),
    ("ctrl-u", "Clear the input"),
];

pub fn info(action: Action) -> &'static ActionInfo {
    ACTIONS
        .iter()
        .find(|a| a.action == action)
        .expect("every action is declared in ACTIONS")
}

/// A key with its modifiers, normalized: letters carry their case instead of
/// SHIFT, and only CONTROL and ALT are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
    pub alt: bool,
}

impl Key {
    pub const fn plain(code: KeyCode) -> Key {
        Key {
            code,
            ctrl: false,
            alt: false,
        }
    }

    /// The key of a crossterm key press; `None` for releases and repeats of
    /// kinds the console ignores.
    pub fn from_event(ev: &KeyEvent) -> Option<Key> {
        if ev.kind == KeyEventKind::Release {
            return None;
        }
        let code = match ev.code {
            KeyCode::Char(c) if ev.modifiers.contains(KeyModifiers::SHIFT) => {
                KeyCode::Char(c.to_uppercase().next().unwrap_or(c))
            }
            c => c,
        };
        Some(Key {
            code,
            ctrl: ev.modifiers.contains(KeyModifiers::CONTROL),
            alt: ev.modifiers.contains(KeyModifiers::ALT),
        })
    }

    /// Parses `q`, `F`, `?`, `ctrl-c`, `alt-x`, `shift-f`, `esc`, `enter`,
    /// `tab`, `backtab`, `space`, `backspace`, `up`, `down`, `left`, `right`,
    /// `pgup`, `pgdn`, `home`, `end`, `insert`, `delete`, `f1`..`f12`.
    pub fn parse(s: &str) -> Result<Key, String> {
        if s.is_empty() {
            return Err("empty key".into());
        }
        let mut rest = s;
        let (mut ctrl, mut alt, mut shift) = (false, false, false);
        // A lone "-" is the minus key, not a separator.
        while rest.chars().count() > 1 {
            let lower = rest.to_ascii_lowercase();
            if let Some(r) = lower.strip_prefix("ctrl-") {
                ctrl = true;
                rest = &rest[rest.len() - r.len()..];
            } else if let Some(r) = lower.strip_prefix("alt-") {
                alt = true;
                rest = &rest[rest.len() - r.len()..];
            } else if let Some(r) = lower.strip_prefix("shift-") {
                shift = true;
                rest = &rest[rest.len() - r.len()..];
            } else {
                break;
            }
        }
        if rest.is_empty() {
            return Err(format!("`{s}`: a modifier needs a key"));
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (Some(c), None) => {
                if c.is_control() {
                    return Err(format!("`{s}`: control characters are not keys"));
                }
                let c = if shift {
                    c.to_uppercase().next().unwrap_or(c)
                } else {
                    c
                };
                // ctrl-C is ctrl-c: terminals do not tell them apart.
                if ctrl {
                    KeyCode::Char(c.to_ascii_lowercase())
                } else {
                    KeyCode::Char(c)
                }
            }
            _ => {
                let name = rest.to_ascii_lowercase();
                let code = match name.as_str() {
                    "esc" | "escape" => KeyCode::Esc,
                    "enter" | "return" => KeyCode::Enter,
                    "tab" if shift => KeyCode::BackTab,
                    "tab" => KeyCode::Tab,
                    "backtab" => KeyCode::BackTab,
                    "space" => KeyCode::Char(' '),
                    "backspace" => KeyCode::Backspace,
                    "up" => KeyCode::Up,
                    "down" => KeyCode::Down,
                    "left" => KeyCode::Left,
                    "right" => KeyCode::Right,
                    "pgup" | "pageup" => KeyCode::PageUp,
                    "pgdn" | "pagedown" => KeyCode::PageDown,
                    "home" => KeyCode::Home,
                    "end" => KeyCode::End,
                    "insert" | "ins" => KeyCode::Insert,
                    "delete" | "del" => KeyCode::Delete,
                    f if f.starts_with('f') && f.len() <= 3 => match f[1..].parse::<u8>() {
                        Ok(n @ 1..=12) => KeyCode::F(n),
                        _ => return Err(unknown_key(s)),
                    },
                    _ => return Err(unknown_key(s)),
                };
                if shift && !matches!(code, KeyCode::BackTab) {
                    return Err(format!("`{s}`: shift works with letters and tab only"));
                }
                code
            }
        };
        Ok(Key { code, ctrl, alt })
    }
}

fn unknown_key(s: &str) -> String {
    format!(
        "`{s}` is not a key (examples: q, F, ?, ctrl-c, alt-x, esc, enter, tab, space, up, pgdn, home, f1)"
    )
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ctrl {
            f.write_str("ctrl-")?;
        }
        if self.alt {
            f.write_str("alt-")?;
        }
        match self.code {
            KeyCode::Char(' ') => f.write_str("space"),
            KeyCode::Char(c) => write!(f, "{c}"),
            KeyCode::Esc => f.write_str("esc"),
            KeyCode::Enter => f.write_str("enter"),
            KeyCode::Tab => f.write_str("tab"),
            KeyCode::BackTab => f.write_str("backtab"),
            KeyCode::Backspace => f.write_str("backspace"),
            KeyCode::Up => f.write_str("up"),
            KeyCode::Down => f.write_str("down"),
            KeyCode::Left => f.write_str("left"),
            KeyCode::Right => f.write_str("right"),
            KeyCode::PageUp => f.write_str("pgup"),
            KeyCode::PageDown => f.write_str("pgdn"),
            KeyCode::Home => f.write_str("home"),
            KeyCode::End => f.write_str("end"),
            KeyCode::Insert => f.write_str("insert"),
            KeyCode::Delete => f.write_str("delete"),
            KeyCode::F(n) => write!(f, "f{n}"),
            other => write!(f, "{other:?}"),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// `[console.keys]` values as the config writes them.
    enum KeySpec {
        One(String),
        Many(Vec<String>),
    }

    fn over(pairs: &[(&str, KeySpec)]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, v)| match v {
                KeySpec::One(s) => (k.to_string(), vec![s.clone()]),
                KeySpec::Many(l) => (k.to_string(), l.clone()),
            })
            .collect()
    }

    fn one(s: &str) -> KeySpec {
        KeySpec::One(s.into())
    }

    #[test]
    fn parses_keys_and_prints_them_back() {
        for (text, code, ctrl, alt) in [
            ("q", KeyCode::Char('q'), false, false),
            ("F", KeyCode::Char('F'), false, false),
            ("shift-f", KeyCode::Char('F'), false, false),
            ("?", KeyCode::Char('?'), false, false),
            ("-", KeyCode::Char('-'), false, false),
            ("ctrl-c", KeyCode::Char('c'), true, false),
            ("Ctrl-C", KeyCode::Char('c'), true, false),
            ("alt-x", KeyCode::Char('x'), false, true),
            ("ctrl-alt-del", KeyCode::Delete, true, true),
            ("esc", KeyCode::Esc, false, false),
            ("Enter", KeyCode::Enter, false, false),
            ("shift-tab", KeyCode::BackTab, false, false),
            ("space", KeyCode::Char(' '), false, false),
            ("pgdn", KeyCode::PageDown, false, false),
            ("pagedown", KeyCode::PageDown, false, false),
            ("f12", KeyCode::F(12), false, false),
        ] {
            let k = Key::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(k, Key { code, ctrl, alt }, "{text}");
            // The printed form parses to the same key.
            assert_eq!(Key::parse(&k.to_string()).unwrap(), k, "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_key() {
        for bad in [
            "", "ctrl-", "escc", "f13", "f0", "shift-up", "hyper-x", "\u{7}",
        ] {
            let e = Key::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad:?}");
        }
        assert!(Key::parse("escc").unwrap_err().contains("examples"));
    }

    #[test]
    fn events_normalize_shift_into_the_letter() {
        let ev = KeyEvent::new(KeyCode::Char('F'), KeyModifiers::SHIFT);
        assert_eq!(Key::from_event(&ev), Some(Key::parse("F").unwrap()));
        let ev = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(Key::from_event(&ev), Some(Key::parse("ctrl-c").unwrap()));
        let mut rel = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        rel.kind = KeyEventKind::Release;
        assert_eq!(Key::from_event(&rel), None);
    }

    #[test]
    fn defaults_have_no_clashes_and_every_action_is_declared_once() {
        let km = Keymap::default();
        let mut names: Vec<&str> = ACTIONS.iter().map(|a| a.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ACTIONS.len());
        assert_eq!(
            km.action(Scope::Main, Key::parse("F").unwrap()),
            Some(Action::FenceOff)
        );
        // One key, different scopes.
        let esc = Key::parse("esc").unwrap();
        assert_eq!(km.action(Scope::Main, esc), Some(Action::Back));
        assert_eq!(km.action(Scope::Dialog, esc), Some(Action::Cancel));
        assert_eq!(km.action(Scope::Help, esc), Some(Action::CloseHelp));
        // Navigation works in the help too.
        assert_eq!(
            km.action(Scope::Help, Key::parse("j").unwrap()),
            Some(Action::Down)
        );
        assert_eq!(km.action(Scope::Dialog, Key::parse("F").unwrap()), None);
    }

    #[test]
    fn overrides_replace_the_default_keys() {
        let km = Keymap::with_overrides(&over(&[(
            "fence-off",
            KeySpec::Many(vec!["ctrl-k".into(), "x".into()]),
        )]))
        .unwrap();
        assert_eq!(km.action(Scope::Main, Key::parse("F").unwrap()), None);
        assert_eq!(
            km.action(Scope::Main, Key::parse("ctrl-k").unwrap()),
            Some(Action::FenceOff)
        );
        assert_eq!(km.keys_text(Action::FenceOff), "ctrl-k, x");
        // Unbinding an action that is not essential is allowed.
        let km = Keymap::with_overrides(&over(&[("reboot", KeySpec::Many(vec![]))])).unwrap();
        assert_eq!(km.keys_text(Action::Reboot), "(unbound)");
        assert!(!km.hints(false).iter().any(|(_, l)| *l == "reboot"));
    }

    #[test]
    fn clashes_name_the_key_and_both_actions() {
        let e = Keymap::with_overrides(&over(&[("fence-off", one("q"))])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "key `q` is bound to both `quit` and `fence-off` (Main screen); unbind one of them"
        );
        assert_eq!(e.actions(), ["fence-off", "quit"]);
        // A clash inside one scope only: `y` is free on the main screen.
        assert!(Keymap::with_overrides(&over(&[("fence-off", one("y"))])).is_ok());
        let e = Keymap::with_overrides(&over(&[("confirm", one("esc"))])).unwrap_err();
        assert!(e.to_string().contains("Confirmation dialog"), "{e}");
        // Navigation keys apply to the help too: `q` closes the help there.
        let e = Keymap::with_overrides(&over(&[("down", one("q"))])).unwrap_err();
        assert!(e.to_string().contains("`quit` and `down`"), "{e}");
    }

    #[test]
    fn unknown_actions_bad_keys_and_unbound_essentials_are_errors() {
        let e = Keymap::with_overrides(&over(&[("fence", one("x"))])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`fence` is not a console action; known actions: help, quit"),
            "{e}"
        );
        let e = Keymap::with_overrides(&over(&[("reboot", one("ctrl-"))])).unwrap_err();
        assert!(e.to_string().starts_with("action `reboot`: `ctrl-`"), "{e}");
        let e = Keymap::with_overrides(&over(&[("quit", KeySpec::Many(vec![]))])).unwrap_err();
        assert_eq!(e, KeymapError::Unbound { action: "quit" });
    }

    #[test]
    fn read_only_help_and_hints_hide_mutating_actions() {
        let km = Keymap::default();
        let rw: Vec<_> = km.hints(false).into_iter().map(|(_, l)| l).collect();
        let ro: Vec<_> = km.hints(true).into_iter().map(|(_, l)| l).collect();
        assert!(rw.contains(&"fence") && rw.contains(&"reboot") && rw.contains(&"start"));
        assert!(!ro.contains(&"fence") && !ro.contains(&"reboot") && !ro.contains(&"start"));
        let help = km.help(true);
        let all: Vec<&str> = help
            .iter()
            .flat_map(|(_, r)| r.iter().map(|(_, d)| *d))
            .collect();
        assert!(!all.iter().any(|d| d.contains("Fence off")));
        assert!(!help.iter().any(|(t, _)| *t == "Confirmation dialog"));
        assert!(km.hints(false).contains(&("1-5".to_string(), "sort")));
    }

    #[test]
    fn readme_key_table_is_generated_from_the_keymap() {
        let readme = include_str!("../../README.md");
        let start = "<!-- keys:start (generated by `fenceline console --print-keys`) -->\n";
        let end = "<!-- keys:end -->";
        let a = readme
            .find(start)
            .expect("README has the keys:start marker")
            + start.len();
        let b = readme[a..]
            .find(end)
            .expect("README has the keys:end marker")
            + a;
        assert_eq!(
            &readme[a..b],
            Keymap::default().markdown(),
            "README's key table is out of date: paste `fenceline console --print-keys` between the markers"
        );
    }
}
