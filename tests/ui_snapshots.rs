//! Snapshot tests of the console's screens, drawn with ratatui's `TestBackend`
//! at 80x24 and 140x45 from hand-made snapshots and events with a fixed clock
//! (`fenceline::ui::fixtures`), so they are stable. The theme tests also
//! record the styles of every styled run of cells, so a colour or attribute
//! change shows up in the diff. Review changes with `cargo insta review`, or
//! run with `INSTA_UPDATE=always` and read the `.snap` diff.

use std::fmt::Write as _;
use std::sync::Arc;

use crossterm::event::{KeyEvent, KeyModifiers};
use fenceline::ui::app::{App, FenceOutcome, Msg};
use fenceline::ui::fixtures::{self, NOW};
use fenceline::ui::keymap::{Key, Keymap};
use fenceline::ui::theme::Theme;
use fenceline::ui::view;
use fenceline_proto::api::{FenceOp, FenceResult, Snapshot};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};

const SIZES: [(u16, u16); 2] = [(80, 24), (140, 45)];

fn app(s: Snapshot, read_only: bool) -> App {
    let socket = if read_only {
        "/run/fenceline/fenceline-ro.sock"
    } else {
        "/run/fenceline/fenceline.sock"
    };
    let mut a = App::new(read_only, Keymap::default(), socket, NOW);
    a.update(Msg::Connected);
    let evs = fixtures::events(&s);
    a.update(Msg::Snapshot(Arc::new(s)));
    for e in evs {
        a.update(Msg::Event(Box::new(e)));
    }
    a.update(Msg::BacklogEnd);
    a
}

fn keys(a: &mut App, list: &[&str]) {
    for k in list {
        let key = Key::parse(k).unwrap();
        let mods = if key.ctrl {
            KeyModifiers::CONTROL
        } else {
            KeyModifiers::NONE
        };
        a.update(Msg::Key(KeyEvent::new(key.code, mods)));
    }
}

fn typed(a: &mut App, text: &str) {
    for c in text.chars() {
        let k = c.to_string();
        keys(a, &[k.as_str()]);
    }
}

fn buffer(a: &mut App, theme: &Theme, w: u16, h: u16) -> Buffer {
    a.update(Msg::Resize(w, h));
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view::draw(f, a, theme)).unwrap();
    t.backend().buffer().clone()
}

fn text(a: &mut App, theme: &Theme, w: u16, h: u16) -> String {
    a.update(Msg::Resize(w, h));
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view::draw(f, a, theme)).unwrap();
    t.backend().to_string()
}

/// Every run of equally styled, non-plain cells: row, columns, style, text.
fn styles(b: &Buffer) -> String {
    let mut out = String::new();
    let area = b.area;
    for y in 0..area.height {
        let mut x = 0;
        while x < area.width {
            let c = &b[(x, y)];
            let key = (c.fg, c.bg, c.modifier);
            let start = x;
            let mut s = String::new();
            while x < area.width && {
                let d = &b[(x, y)];
                (d.fg, d.bg, d.modifier) == key
            } {
                s.push_str(b[(x, y)].symbol());
                x += 1;
            }
            if key != (Color::Reset, Color::Reset, Modifier::empty()) {
                let _ = writeln!(
                    out,
                    "{y:>2} {start:>3}..{x:<3} fg={:?} bg={:?} {:?} {:?}",
                    key.0,
                    key.1,
                    key.2,
                    s.trim_end()
                );
            }
        }
    }
    out
}

fn default_theme() -> Theme {
    Theme::builtin("default").unwrap()
}

/// Snapshots the app at both sizes under `name_<w>x<h>`.
fn both(name: &str, mut a: App) {
    let theme = default_theme();
    for (w, h) in SIZES {
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), text(&mut a, &theme, w, h));
    }
}

#[test]
fn empty_cluster() {
    both("empty", app(fixtures::empty(), false));
}

#[test]
fn connecting_before_the_first_snapshot() {
    let a = App::new(
        false,
        Keymap::default(),
        "/run/fenceline/fenceline.sock",
        NOW,
    );
    both("connecting", a);
}

#[test]
fn normal_cluster() {
    let mut a = app(fixtures::normal(), false);
    // web2 has a fence record in the history.
    keys(&mut a, &[":"]);
    typed(&mut a, "web2");
    keys(&mut a, &["enter"]);
    both("normal", a);
}

#[test]
fn node_detail_with_networks() {
    use fenceline_proto::api::{NetworkView, PortView};
    let mut s = fixtures::normal();
    s.nodes[1].libvirt[0].connected = false;
    s.nodes[1].libvirt[0].error = Some("Cannot recv data: Connection reset by peer".into());
    s.networks = vec![
        NetworkView {
            node: 2,
            name: "default".into(),
            uuid: String::new(),
            active: true,
            bridge: Some("virbr0".into()),
            ports: vec![PortView {
                owner: Some("web2".into()),
                mac: Some("52:54:00:aa:bb:02".into()),
                ..PortView::default()
            }],
            since: NOW - 600_000,
        },
        NetworkView {
            node: 2,
            name: "isolated".into(),
            uuid: String::new(),
            active: false,
            bridge: None,
            ports: Vec::new(),
            since: NOW - 60_000,
        },
    ];
    let mut a = app(s, false);
    keys(&mut a, &[":"]);
    typed(&mut a, "kvm2");
    keys(&mut a, &["enter"]);
    both("node_detail", a);
}

#[test]
fn local_node_detail_shows_its_listeners() {
    use fenceline_proto::api::{ListenerState, ListenerView};
    let mut s = fixtures::normal();
    s.local.listeners = vec![
        ListenerView {
            name: "multicast".into(),
            at: "225.0.0.12:1229 on virbr0".into(),
            state: ListenerState::Waiting,
            detail: Some("waiting for interface virbr0".into()),
        },
        ListenerView {
            name: "tcp".into(),
            at: "10.0.0.1:1229".into(),
            state: ListenerState::Bound,
            detail: None,
        },
    ];
    let mut a = app(s, false);
    keys(&mut a, &[":"]);
    typed(&mut a, "kvm1");
    keys(&mut a, &["enter"]);
    let t = text(&mut a, &default_theme(), 140, 45);
    assert!(
        t.contains("… multicast 225.0.0.12:1229 on virbr0: waiting")
            && t.contains("for interface virbr0"),
        "{t}"
    );
    assert!(t.contains("✓ tcp 10.0.0.1:1229: bound"), "{t}");
    // Without listeners it says so.
    let mut a = app(fixtures::normal(), false);
    keys(&mut a, &[":"]);
    typed(&mut a, "kvm1");
    keys(&mut a, &["enter"]);
    let t = text(&mut a, &default_theme(), 140, 45);
    assert!(t.contains("none configured: guests cannot fence"), "{t}");
}

#[test]
fn conflict() {
    let mut a = app(fixtures::conflict(), false);
    keys(&mut a, &["3", "g"]); // by owner: the conflict comes first
    both("conflict", a);
}

#[test]
fn migrating() {
    let mut a = app(fixtures::migrating(), false);
    keys(&mut a, &[":"]);
    typed(&mut a, "mail");
    keys(&mut a, &["enter"]);
    let t = text(&mut a, &default_theme(), 140, 45);
    assert!(t.contains("none: migrating kvm2 (2) → kvm3 (3)"), "{t}");
    assert!(t.contains("⇄ migrating") && t.contains("kvm2→kvm3"), "{t}");
    assert!(!t.contains("CONFLICT"), "a migration is no conflict: {t}");
    both("migrating", a);
}

#[test]
fn status_text_of_a_migration() {
    let out = fenceline::cli::render_status(&fixtures::migrating(), NOW);
    assert!(out.contains("MIGRATING kvm2(2)→kvm3(3)"), "{out}");
    assert!(!out.contains("CONFLICT"), "{out}");
    insta::assert_snapshot!("status_migrating", out);
}

#[test]
fn quorum_lost() {
    both("quorum_lost", app(fixtures::quorum_lost(), false));
}

#[test]
fn disconnected_keeps_the_last_state_greyed() {
    let mut a = app(fixtures::normal(), false);
    a.update(Msg::Disconnected {
        reason:
            "cannot connect to /run/fenceline/fenceline.sock: Connection refused (os error 111)"
                .into(),
        retry_in_ms: 3000,
    });
    both("disconnected", a.clone());
    // The greying is in the styles: everything below the header is stale.
    let b = buffer(&mut a, &default_theme(), 80, 24);
    let stale = default_theme().stale;
    assert_eq!(b[(10, 12)].fg, stale.fg.unwrap());
    assert!(b[(10, 12)].modifier.contains(Modifier::DIM));
}

#[test]
fn help() {
    let mut a = app(fixtures::normal(), false);
    keys(&mut a, &["?"]);
    both("help", a.clone());
    // Scrolled to the end at the small size.
    keys(&mut a, &["G"]);
    let theme = default_theme();
    insta::assert_snapshot!("help_end_80x24", text(&mut a, &theme, 80, 24));
}

#[test]
fn confirmation() {
    let mut a = app(fixtures::normal(), false);
    keys(&mut a, &[":"]);
    typed(&mut a, "db2");
    keys(&mut a, &["enter", "F"]);
    both("confirm_fence_off", a.clone());
    // The action button focused, for a reboot of a conflicted VM.
    let mut a = app(fixtures::conflict(), false);
    keys(&mut a, &[":"]);
    typed(&mut a, "mail");
    keys(&mut a, &["enter", "R", "tab"]);
    both("confirm_reboot_conflict", a);
}

#[test]
fn result_toast_and_event_line() {
    let mut a = app(fixtures::normal(), false);
    keys(&mut a, &[":"]);
    typed(&mut a, "db2");
    keys(&mut a, &["enter", "F", "y"]);
    a.update(Msg::ActionDone {
        id: 1,
        op: FenceOp::Off,
        domain: "db2".into(),
        outcome: Ok(FenceOutcome {
            result: FenceResult::Ok,
            acted_by: Some(2),
            duration_ms: 412,
            detail: None,
        }),
    });
    keys(&mut a, &["R", "y"]);
    a.update(Msg::ActionDone {
        id: 2,
        op: FenceOp::Reboot,
        domain: "db2".into(),
        outcome: Ok(FenceOutcome {
            result: FenceResult::Fail,
            acted_by: None,
            duration_ms: 0,
            detail: Some("no quorum: refusing to fence".into()),
        }),
    });
    both("toasts", a);
}

#[test]
fn read_only_monitor() {
    let mut a = app(fixtures::normal(), true);
    both("read_only", a.clone());
    keys(&mut a, &["F"]);
    let theme = default_theme();
    insta::assert_snapshot!("read_only_refusal_80x24", text(&mut a, &theme, 80, 24));
    keys(&mut a, &["?"]);
    insta::assert_snapshot!("read_only_help_140x45", text(&mut a, &theme, 140, 45));
}

#[test]
fn filter_and_jump_prompts() {
    let mut a = app(fixtures::normal(), false);
    keys(&mut a, &["/"]);
    typed(&mut a, "state:run !kvm3");
    both("filter_prompt", a.clone());
    keys(&mut a, &["enter", ":"]);
    typed(&mut a, "kvm");
    both("jump_prompt", a);
}

#[test]
fn big_cluster_scrolled() {
    let mut a = app(fixtures::big(10_000), false);
    keys(&mut a, &["pgdn", "pgdn", "j", "2"]);
    both("big_scrolled", a);
}

#[test]
fn too_small() {
    let mut a = app(fixtures::normal(), false);
    insta::assert_snapshot!("too_small_50x12", text(&mut a, &default_theme(), 50, 12));
}

#[test]
fn each_theme() {
    for name in ["default", "light", "high-contrast"] {
        let theme = Theme::builtin(name).unwrap();
        let mut a = app(fixtures::conflict(), false);
        keys(&mut a, &["3", "g"]);
        let b = buffer(&mut a, &theme, 80, 24);
        insta::assert_snapshot!(format!("theme_{name}_80x24_styles"), styles(&b));
        insta::assert_snapshot!(
            format!("theme_{name}_140x45"),
            text(&mut a, &theme, 140, 45)
        );
    }
}

#[test]
fn no_color_has_no_colour_but_keeps_the_signals() {
    let theme = Theme::builtin("default").unwrap().monochrome();
    let mut a = app(fixtures::conflict(), false);
    keys(&mut a, &["3", "g"]);
    let b = buffer(&mut a, &theme, 80, 24);
    for c in b.content() {
        assert_eq!((c.fg, c.bg), (Color::Reset, Color::Reset), "{c:?}");
    }
    insta::assert_snapshot!("theme_no_color_80x24_styles", styles(&b));
    // The selection is REVERSED, the state is text plus a symbol.
    let screen = text(&mut a, &theme, 80, 24);
    assert!(screen.contains("!!") && screen.contains("CONFLICT"));
    assert!(screen.contains("● running") && screen.contains("‖ paused"));
    assert!(screen.contains("✗ build3 crashed"));
    let selected_row = (2..24u16)
        .find(|&y| b[(4, y)].modifier.contains(Modifier::REVERSED))
        .expect("a reversed row");
    let row: String = (0..80u16).map(|x| b[(x, selected_row)].symbol()).collect();
    assert!(row.contains("mail"), "{row}");
}

/// Rendering builds only the visible rows: a 10,000-domain frame costs about
/// what a 12-domain one does. (The benchmark measures it; this guards the
/// order of magnitude so a per-row regression fails a test.)
#[test]
fn frame_time_does_not_grow_with_the_map() {
    let theme = default_theme();
    let time = |s: Snapshot| {
        let mut a = app(s, false);
        a.update(Msg::Resize(140, 45));
        let mut t = Terminal::new(TestBackend::new(140, 45)).unwrap();
        // Warm up, then the best of several frames (robust on a busy machine).
        t.draw(|f| view::draw(f, &a, &theme)).unwrap();
        (0..20)
            .map(|_| {
                let t0 = std::time::Instant::now();
                t.draw(|f| view::draw(f, &a, &theme)).unwrap();
                t0.elapsed()
            })
            .min()
            .unwrap()
    };
    let small = time(fixtures::normal());
    let big = time(fixtures::big(10_000));
    assert!(
        big < small * 5 + std::time::Duration::from_millis(2),
        "10,000 domains: {big:?} per frame vs {small:?} for 12"
    );
}

/// The truth rule on screen: lost placements (`?`), a node whose daemon is
/// down, an unconfirmed departure, a self-fencing node and one past its
/// self-fence deadline (`fixtures::departures`).
#[test]
fn departures_and_lost_placements() {
    let mut a = app(fixtures::departures(), false);
    keys(&mut a, &[":"]);
    typed(&mut a, "vm2a");
    keys(&mut a, &["enter"]);
    both("lost_placement", a.clone());
    for (node, name) in [
        ("kvm2", "daemon_down"),
        ("kvm3", "unconfirmed_departure"),
        ("kvm4", "self_fenced"),
    ] {
        keys(&mut a, &[":"]);
        typed(&mut a, node);
        keys(&mut a, &["enter"]);
        both(name, a.clone());
    }
}

#[test]
fn confirm_node_down_dialog() {
    let mut a = app(fixtures::departures(), false);
    keys(&mut a, &[":"]);
    typed(&mut a, "kvm3");
    keys(&mut a, &["enter", "D"]);
    let screen = text(&mut a, &default_theme(), 140, 45);
    assert!(
        screen.contains("You assert that kvm3 is powered off or isolated"),
        "{screen}"
    );
    both("confirm_node_down", a);
    // The monitor neither offers it nor shows the hint.
    let mut ro = app(fixtures::departures(), true);
    keys(&mut ro, &[":"]);
    typed(&mut ro, "kvm3");
    keys(&mut ro, &["enter", "D"]);
    let screen = text(&mut ro, &default_theme(), 140, 45);
    assert!(!screen.contains("You assert"), "{screen}");
    assert!(!screen.contains("confirms it down"), "{screen}");
}

#[test]
fn status_text_of_departures() {
    let s = fixtures::departures();
    let out = fenceline::cli::render_status(&s, NOW);
    for want in [
        "kvm2(2): its daemon is down",
        "kvm3(3): left the membership 4 s ago, not confirmed down",
        "LOST on kvm2(2)",
        "kvm4 self-fenced (left 60 s ago, self_fence_secs 30)",
        "Self-fencing: kvm1(1) (30 s), kvm3(3) (30 s), kvm4(4) (30 s)",
    ] {
        assert!(out.contains(want), "`{want}` missing:\n{out}");
    }
    insta::assert_snapshot!("status_departures", out);
}

/// Issue 10: names come from guests, peers and hook XML. Whatever they hold,
/// no escape sequence, C1 control, bidi override or zero-width character
/// reaches a cell of the screen: not in the table, the detail pane or the
/// confirmation dialog.
#[test]
fn hostile_names_reach_no_cell() {
    let evil = "ev\u{1b}[2Jil\u{9b}31m\u{7f}\u{202e}x\u{200b}y\u{feff}\u{2028}z";
    let mut s = fixtures::normal();
    s.domains[0].name = evil.into();
    s.nodes[0].name = Some(format!("kvm{evil}"));
    let mut a = app(s, false);
    let bad = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
    };
    let theme = default_theme();
    let check = |a: &mut App, what: &str| {
        for (w, h) in SIZES {
            let b = buffer(a, &theme, w, h);
            for y in 0..h {
                for x in 0..w {
                    let sym = b[(x, y)].symbol();
                    assert!(!sym.chars().any(bad), "{what}: {sym:?} at ({x},{y})");
                }
            }
        }
    };
    check(&mut a, "table");
    keys(&mut a, &["enter"]);
    check(&mut a, "detail");
    keys(&mut a, &["esc", "F"]);
    check(&mut a, "confirmation");
}
