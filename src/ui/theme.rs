//! Console themes: `themes/*.toml`, embedded in the binary (so it runs from
//! anywhere), or a theme file given by path. Entries are semantic (running,
//! offline, conflict, ...), not widget names. With `NO_COLOR` set every colour
//! is dropped and only the text attributes stay; the console never signals a
//! state by colour alone, and the selection is always REVERSED.

use std::collections::BTreeMap;
use std::path::Path;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// The built-in themes: (name, file text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../../themes/default.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
];

/// One style as a theme file writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StyleSpec {
    pub fg: Option<String>,
    pub bg: Option<String>,
    #[serde(default)]
    pub bold: bool,
    #[serde(default)]
    pub dim: bool,
    #[serde(default)]
    pub italic: bool,
    #[serde(default)]
    pub underline: bool,
    #[serde(default)]
    pub reversed: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: String,
    #[serde(default)]
    description: String,
    /// Start from this built-in theme and change only what `styles` lists.
    #[serde(default)]
    extends: Option<String>,
    #[serde(default)]
    styles: BTreeMap<String, StyleSpec>,
}

/// The resolved theme the views draw with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Theme {
    pub name: String,
    pub description: String,
    /// Everything's default text.
    pub base: Style,
    /// Secondary text: ages, uuids, hint descriptions.
    pub dim: Style,
    pub border: Style,
    /// The border of the focused pane.
    pub border_focus: Style,
    pub title: Style,
    pub header: Style,
    pub ok: Style,
    pub warn: Style,
    pub danger: Style,
    pub running: Style,
    pub paused: Style,
    pub shutoff: Style,
    pub crashed: Style,
    /// blocked, shutdown, pmsuspended, nostate.
    pub transient: Style,
    pub member: Style,
    pub offline: Style,
    pub conflict: Style,
    pub badge_ro: Style,
    /// Always REVERSED on top of what the theme says.
    pub selection: Style,
    pub hint_key: Style,
    pub toast_ok: Style,
    pub toast_warn: Style,
    pub toast_err: Style,
    pub dialog: Style,
    pub button: Style,
    /// Always REVERSED on top of what the theme says.
    pub button_focus: Style,
    /// Patched over the whole screen while disconnected (the greyed last state).
    pub stale: Style,
    pub event_time: Style,
}

/// The names a theme file may set, in the order of the struct.
pub const STYLE_NAMES: &[&str] = &[
    "base",
    "dim",
    "border",
    "border_focus",
    "title",
    "header",
    "ok",
    "warn",
    "danger",
    "running",
    "paused",
    "shutoff",
    "crashed",
    "transient",
    "member",
    "offline",
    "conflict",
    "badge_ro",
    "selection",
    "hint_key",
    "toast_ok",
    "toast_warn",
    "toast_err",
    "dialog",
    "button",
    "button_focus",
    "stale",
    "event_time",
];

impl Theme {
    /// A theme with no colours and no attributes; themes start from here.
    fn plain(name: &str) -> Theme {
        let s = Style::default();
        Theme {
            name: name.to_string(),
            description: String::new(),
            base: s,
            dim: s,
            border: s,
            border_focus: s,
            title: s,
            header: s,
            ok: s,
            warn: s,
            danger: s,
            running: s,
            paused: s,
            shutoff: s,
            crashed: s,
            transient: s,
            member: s,
            offline: s,
            conflict: s,
            badge_ro: s,
            selection: s,
            hint_key: s,
            toast_ok: s,
            toast_warn: s,
            toast_err: s,
            dialog: s,
            button: s,
            button_focus: s,
            stale: s,
            event_time: s,
        }
    }

    fn slot(&mut self, name: &str) -> Option<&mut Style> {
        Some(match name {
            "base" => &mut self.base,
            "dim" => &mut self.dim,
            "border" => &mut self.border,
            "border_focus" => &mut self.border_focus,
            "title" => &mut self.title,
            "header" => &mut self.header,
            "ok" => &mut self.ok,
            "warn" => &mut self.warn,
            "danger" => &mut self.danger,
            "running" => &mut self.running,
            "paused" => &mut self.paused,
            "shutoff" => &mut self.shutoff,
            "crashed" => &mut self.crashed,
            "transient" => &mut self.transient,
            "member" => &mut self.member,
            "offline" => &mut self.offline,
            "conflict" => &mut self.conflict,
            "badge_ro" => &mut self.badge_ro,
            "selection" => &mut self.selection,
            "hint_key" => &mut self.hint_key,
            "toast_ok" => &mut self.toast_ok,
            "toast_warn" => &mut self.toast_warn,
            "toast_err" => &mut self.toast_err,
            "dialog" => &mut self.dialog,
            "button" => &mut self.button,
            "button_focus" => &mut self.button_focus,
            "stale" => &mut self.stale,
            "event_time" => &mut self.event_time,
            _ => return None,
        })
    }

    fn styles_mut(&mut self) -> Vec<&mut Style> {
        let Theme {
            name: _,
            description: _,
            base,
            dim,
            border,
            border_focus,
            title,
            header,
            ok,
            warn,
            danger,
            running,
            paused,
            shutoff,
            crashed,
            transient,
            member,
            offline,
            conflict,
            badge_ro,
            selection,
            hint_key,
            toast_ok,
            toast_warn,
            toast_err,
            dialog,
            button,
            button_focus,
            stale,
            event_time,
        } = self;
        vec![
            base,
            dim,
            border,
            border_focus,
            title,
            header,
            ok,
            warn,
            danger,
            running,
            paused,
            shutoff,
            crashed,
            transient,
            member,
            offline,
            conflict,
            badge_ro,
            selection,
            hint_key,
            toast_ok,
            toast_warn,
            toast_err,
            dialog,
            button,
            button_focus,
            stale,
            event_time,
        ]
    }

    /// The built-in theme `name`.
    pub fn builtin(name: &str) -> Option<Theme> {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        Some(Theme::parse(text, name).expect("built-in themes parse"))
    }

    /// A built-in theme by name, or a theme file by path (anything with a `/`
    /// or ending in `.toml`).
    pub fn load(name_or_path: &str) -> Result<Theme, String> {
        if let Some(t) = Theme::builtin(name_or_path) {
            return Ok(t);
        }
        if name_or_path.contains('/') || name_or_path.ends_with(".toml") {
            let p = Path::new(name_or_path);
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("theme file {}: {e}", p.display()))?;
            return Theme::parse(&text, &p.display().to_string());
        }
        Err(format!(
            "no theme `{name_or_path}`; built-in themes: {} (or give a path to a .toml theme file)",
            BUILTIN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    /// Parses theme file text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Theme, String> {
        let file: ThemeFile =
            toml::from_str(text).map_err(|e| format!("theme {origin}: {}", e.message().trim()))?;
        let mut theme = match &file.extends {
            None => Theme::plain(&file.name),
            Some(parent) if parent == &file.name => {
                return Err(format!("theme {origin}: `extends` names the theme itself"));
            }
            Some(parent) => Theme::builtin(parent).ok_or_else(|| {
                format!("theme {origin}: `extends = \"{parent}\"` is not a built-in theme")
            })?,
        };
        theme.name = file.name;
        theme.description = file.description;
        for (key, spec) in &file.styles {
            let style = to_style(spec).map_err(|e| format!("theme {origin}: styles.{key}: {e}"))?;
            let Some(slot) = theme.slot(key) else {
                return Err(format!(
                    "theme {origin}: `styles.{key}` is not a theme entry; known: {}",
                    STYLE_NAMES.join(", ")
                ));
            };
            *slot = style;
        }
        theme.selection = theme.selection.add_modifier(Modifier::REVERSED);
        theme.button_focus = theme.button_focus.add_modifier(Modifier::REVERSED);
        Ok(theme)
    }

    /// The same theme without any colour (`NO_COLOR`): text attributes only.
    /// Greyed (stale) text becomes DIM.
    pub fn monochrome(mut self) -> Theme {
        // What stood out by its background (the header bar, badges, toasts)
        // stands out by reverse video instead.
        for s in [
            &mut self.header,
            &mut self.badge_ro,
            &mut self.toast_ok,
            &mut self.toast_warn,
            &mut self.toast_err,
        ] {
            if s.bg.is_some_and(|c| c != Color::Reset) {
                *s = s.add_modifier(Modifier::REVERSED);
            }
        }
        for s in self.styles_mut() {
            s.fg = None;
            s.bg = None;
        }
        self.stale = self.stale.add_modifier(Modifier::DIM);
        self.dim = Style::default();
        self
    }

    /// `NO_COLOR` is set to something non-empty (https://no-color.org).
    pub fn no_color_requested() -> bool {
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
    }
}

fn to_style(spec: &StyleSpec) -> Result<Style, String> {
    let color = |s: &Option<String>| -> Result<Option<Color>, String> {
        match s {
            None => Ok(None),
            Some(c) => c.parse::<Color>().map(Some).map_err(|_| {
                format!("`{c}` is not a colour (a name like \"red\", \"#rrggbb\", or 0-255)")
            }),
        }
    };
    let mut style = Style::default();
    if let Some(c) = color(&spec.fg)? {
        style = style.fg(c);
    }
    if let Some(c) = color(&spec.bg)? {
        style = style.bg(c);
    }
    for (on, m) in [
        (spec.bold, Modifier::BOLD),
        (spec.dim, Modifier::DIM),
        (spec.italic, Modifier::ITALIC),
        (spec.underline, Modifier::UNDERLINED),
        (spec.reversed, Modifier::REVERSED),
    ] {
        if on {
            style = style.add_modifier(m);
        }
    }
    Ok(style)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_themes_parse_set_every_entry_and_have_a_reversed_selection() {
        for (name, text) in BUILTIN {
            let t = Theme::parse(text, name).unwrap();
            assert_eq!(&t.name, name);
            let file: ThemeFile = toml::from_str(text).unwrap();
            let set: Vec<&str> = file.styles.keys().map(String::as_str).collect();
            let mut all = STYLE_NAMES.to_vec();
            all.sort();
            assert_eq!(set, all, "theme {name} must set every entry");
            assert!(t.selection.add_modifier.contains(Modifier::REVERSED));
            assert!(t.button_focus.add_modifier.contains(Modifier::REVERSED));
        }
        assert_ne!(Theme::builtin("default"), Theme::builtin("light"));
    }

    #[test]
    fn style_names_match_the_struct() {
        let mut t = Theme::plain("x");
        for n in STYLE_NAMES {
            assert!(t.slot(n).is_some(), "{n}");
        }
        assert_eq!(t.styles_mut().len(), STYLE_NAMES.len());
    }

    #[test]
    fn monochrome_drops_every_colour_but_keeps_attributes() {
        let t = Theme::builtin("default").unwrap().monochrome();
        let mut t2 = t.clone();
        for s in t2.styles_mut() {
            assert_eq!((s.fg, s.bg), (None, None));
        }
        assert!(t.selection.add_modifier.contains(Modifier::REVERSED));
        assert!(t.crashed.add_modifier.contains(Modifier::BOLD));
        assert!(t.stale.add_modifier.contains(Modifier::DIM));
        assert!(t.header.add_modifier.contains(Modifier::REVERSED));
        assert!(t.toast_err.add_modifier.contains(Modifier::REVERSED));
    }

    #[test]
    fn theme_files_extend_and_report_errors_clearly() {
        let t = Theme::parse(
            "name = \"prod\"\nextends = \"default\"\n[styles]\nheader = { fg = \"white\", bg = \"#aa0000\" }\n",
            "prod.toml",
        )
        .unwrap();
        assert_eq!(t.header.bg, Some(Color::Rgb(0xaa, 0, 0)));
        assert_eq!(t.running, Theme::builtin("default").unwrap().running);

        let e = Theme::parse("name = \"x\"\n[styles]\nrunnin = {}\n", "x.toml").unwrap_err();
        assert!(e.contains("`styles.runnin` is not a theme entry"), "{e}");
        let e = Theme::parse(
            "name = \"x\"\n[styles]\nok = { fg = \"blurple\" }\n",
            "x.toml",
        )
        .unwrap_err();
        assert!(e.contains("styles.ok: `blurple` is not a colour"), "{e}");
        let e = Theme::parse(
            "name = \"x\"\n[styles]\nok = { fg = \"red\", blink = true }\n",
            "x.toml",
        )
        .unwrap_err();
        assert!(e.contains("theme x.toml") && e.contains("blink"), "{e}");
        let e = Theme::parse("name = \"x\"\nextends = \"nope\"\n", "x.toml").unwrap_err();
        assert!(e.contains("not a built-in theme"), "{e}");
        let e = Theme::load("solarized").unwrap_err();
        assert!(e.contains("default, light, high-contrast"), "{e}");
        let e = Theme::load("/nonexistent/t.toml").unwrap_err();
        assert!(e.contains("/nonexistent/t.toml"), "{e}");
    }
}
