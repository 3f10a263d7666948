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
    let readme = include_str!("../../../README.md");
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
