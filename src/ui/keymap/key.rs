//! A key with its modifiers: parsing (`ctrl-k`, `F`, `pgdn`), reading it
//! from a terminal event, and printing it back.

use super::*;

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
