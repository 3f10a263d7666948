use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::ui::fixtures::{self, NOW};
use fenceline_proto::api::{DomainAction, DomainState, EventKind, FenceOp, FenceResult};

fn app_with(s: fenceline_proto::api::Snapshot) -> App {
    app_as(false, s)
}

fn app_as(read_only: bool, s: fenceline_proto::api::Snapshot) -> App {
    let mut a = App::new(
        read_only,
        Keymap::default(),
        "/run/fenceline/fenceline.sock",
        NOW,
    );
    a.update(Msg::Resize(140, 45));
    a.update(Msg::Connected);
    a.update(Msg::Snapshot(Arc::new(s)));
    a.update(Msg::BacklogEnd);
    a
}

fn key(a: &mut App, k: &str) -> Vec<Effect> {
    let key = Key::parse(k).unwrap();
    let mut mods = KeyModifiers::NONE;
    if key.ctrl {
        mods |= KeyModifiers::CONTROL;
    }
    a.update(Msg::Key(KeyEvent::new(key.code, mods)))
}

fn typed(a: &mut App, text: &str) {
    for c in text.chars() {
        a.update(Msg::Key(KeyEvent::new(
            KeyCode::Char(c),
            KeyModifiers::NONE,
        )));
    }
}

fn names(a: &App) -> Vec<String> {
    let s = a.snapshot.as_ref().unwrap();
    a.rows.iter().map(|&i| s.domains[i].name.clone()).collect()
}

fn selected(a: &App) -> String {
    a.selected().map(|d| d.name.clone()).unwrap_or_default()
}

#[test]
fn filter_words_fields_and_negation() {
    let s = fixtures::conflict();
    let owner = |a: &App, d: &DomainView| a.owner_text(d);
    let a = app_with(s.clone());
    let m = |f: &str| -> Vec<String> {
        let f = Filter::parse(f);
        s.domains
            .iter()
            .filter(|d| f.matches(d, &owner(&a, d)))
            .map(|d| d.name.clone())
            .collect()
    };
    assert_eq!(m("WEB"), ["web1", "web2", "web3"]);
    assert_eq!(m("web !web2"), ["web1", "web3"]);
    assert_eq!(m("state:paused"), ["build1", "build2"]);
    assert_eq!(m("crash"), ["build3"]);
    // mail runs on kvm2 and kvm3: its owner column names both.
    assert_eq!(
        m("owner:kvm3 !state:shut"),
        ["build3", "db3", "mail", "web3"]
    );
    assert_eq!(m("conflict"), ["mail"]);
    assert_eq!(m("uuid:8f1e0002-0000-4000-8000-000000000009"), ["mail"]);
    assert_eq!(m("name:kvm"), Vec::<String>::new());
    assert_eq!(m("").len(), s.domains.len());
    assert!(contains_ci("Vm2A", "vm2a") && !contains_ci("vm", "vm2a"));
}

#[test]
fn sort_by_every_column_and_reverse() {
    let mut a = app_with(fixtures::normal());
    assert_eq!(names(&a)[..3], ["backup1", "backup2", "backup3"]);
    key(&mut a, "2"); // state: what needs attention first
    assert_eq!(names(&a)[0], "build3"); // crashed
    assert_eq!(names(&a)[1..3], ["build1", "build2"]); // paused
    assert_eq!(names(&a).last().unwrap(), "backup3"); // shut off last
    key(&mut a, "2"); // again: reversed
    assert_eq!(names(&a)[0], "backup3");
    key(&mut a, "4"); // age: shortest time in state first
    assert_eq!(names(&a)[0], "build3");
    key(&mut a, "I");
    assert_eq!(names(&a).last().unwrap(), "build3");
    key(&mut a, "3"); // owner
    let s = a.snapshot.clone().unwrap();
    let owners: Vec<String> = a
        .rows
        .iter()
        .map(|&i| a.owner_text(&s.domains[i]))
        .collect();
    let mut sorted = owners.clone();
    // Owned first, by owner name; unowned ("-") last.
    sorted.sort_by_key(|o| (o == "-", o.clone()));
    assert_eq!(owners, sorted);
    key(&mut a, "5");
    let uuids: Vec<&str> = a.rows.iter().map(|&i| s.domains[i].uuid.as_str()).collect();
    assert!(uuids.windows(2).all(|w| w[0] <= w[1]));
    // Conflicts sort first by owner.
    let mut a = app_with(fixtures::conflict());
    key(&mut a, "3");
    assert_eq!(names(&a)[0], "mail");
}

#[test]
fn selection_follows_the_domain_across_snapshots_and_filters() {
    let mut a = app_with(fixtures::normal());
    key(&mut a, ":");
    typed(&mut a, "db2");
    key(&mut a, "enter");
    assert_eq!(selected(&a), "db2");
    // A new snapshot with a domain inserted before it: still db2.
    let mut s = fixtures::normal();
    s.domains
        .insert(0, fixtures::domain("aaa", 1, 99, DomainState::Running, 1));
    a.update(Msg::Snapshot(Arc::new(s)));
    assert_eq!(selected(&a), "db2");
    // Filtering keeps it when it still matches.
    key(&mut a, "/");
    typed(&mut a, "db");
    assert_eq!(names(&a), ["db1", "db2", "db3"]);
    assert_eq!(selected(&a), "db2");
    // Esc in the prompt restores the previous (empty) filter.
    key(&mut a, "esc");
    assert_eq!(a.rows.len(), 13);
    assert_eq!(a.mode, Mode::Normal);
    // Enter keeps it; Esc in normal mode clears it.
    key(&mut a, "/");
    typed(&mut a, "web");
    key(&mut a, "enter");
    assert_eq!(names(&a), ["web1", "web2", "web3"]);
    key(&mut a, "esc");
    assert_eq!(a.rows.len(), 13);
}

#[test]
fn scrolling_a_big_table_keeps_the_selection_visible() {
    let mut a = app_with(fixtures::big(10_000));
    let h = a.table_rows();
    assert!(h > 10);
    key(&mut a, "pgdn");
    assert_eq!(a.sel, h - 1);
    assert_eq!(a.offset, 0);
    key(&mut a, "down");
    assert_eq!(a.offset, 1);
    key(&mut a, "end");
    assert_eq!(a.sel, 9_999);
    assert_eq!(a.offset, 10_000 - h);
    key(&mut a, "g");
    assert_eq!((a.sel, a.offset), (0, 0));
    // Shrinking the terminal keeps the selection on screen.
    for _ in 0..30 {
        key(&mut a, "j");
    }
    a.update(Msg::Resize(80, 24));
    assert!(a.sel >= a.offset && a.sel < a.offset + a.table_rows());
}

#[test]
fn jump_to_domain_uuid_node_and_quit() {
    let mut a = app_with(fixtures::normal());
    assert_eq!(a.jump_target("web3"), Some(JumpTarget::Domain(11)));
    // A uuid prefix.
    let target = a.jump_target("8f1e0002-0000-4000-8000-000000000001");
    let s = a.snapshot.clone().unwrap();
    assert!(matches!(target, Some(JumpTarget::Domain(i)) if s.domains[i].name == "db2"));
    assert_eq!(a.jump_target("kvm2"), Some(JumpTarget::Node(1)));
    assert_eq!(a.jump_target("3"), Some(JumpTarget::Node(2)));
    assert_eq!(a.jump_target("nothing-like-this"), None);
    // A jump to a domain hidden by the filter clears the filter.
    a.set_filter("web");
    key(&mut a, ":");
    typed(&mut a, "backup2");
    key(&mut a, "enter");
    assert_eq!(selected(&a), "backup2");
    assert!(a.filter.is_empty());
    key(&mut a, ":");
    typed(&mut a, "kvm3");
    key(&mut a, "enter");
    assert_eq!((a.focus, a.node_sel), (Pane::Nodes, 2));
    key(&mut a, ":");
    typed(&mut a, "zzz");
    key(&mut a, "enter");
    assert!(
        a.toasts
            .last()
            .unwrap()
            .text
            .contains("no domain or node matches `zzz`")
    );
    key(&mut a, ":");
    typed(&mut a, "q");
    key(&mut a, "enter");
    assert!(a.quit);
}

#[test]
fn fence_needs_confirmation_naming_vm_owner_and_action() {
    let mut a = app_with(fixtures::normal());
    key(&mut a, ":");
    typed(&mut a, "web2");
    key(&mut a, "enter");
    assert!(key(&mut a, "F").is_empty());
    let Mode::Confirm(c) = a.mode.clone() else {
        panic!("no dialog: {:?}", a.mode)
    };
    assert_eq!((c.op, c.domain.as_str()), (FenceOp::Off, "web2"));
    assert_eq!(c.owner_text, "kvm2 (2)");
    assert!(!c.on_action, "Cancel has the focus at first");
    // Enter on Cancel cancels.
    assert!(key(&mut a, "enter").is_empty());
    assert_eq!(a.mode, Mode::Normal);
    // n cancels too; y confirms.
    key(&mut a, "R");
    assert!(key(&mut a, "n").is_empty());
    key(&mut a, "R");
    let eff = key(&mut a, "y");
    assert_eq!(
        eff,
        vec![Effect::Fence {
            id: 1,
            op: FenceOp::Reboot,
            domain: "web2".into()
        }]
    );
    // Tab to the action button, then Enter.
    key(&mut a, "S");
    key(&mut a, "tab");
    let eff = key(&mut a, "enter");
    assert!(matches!(
        &eff[..],
        [Effect::Fence {
            id: 2,
            op: FenceOp::On,
            ..
        }]
    ));
    assert_eq!(a.in_flight.len(), 2);
    // The answer: a toast, a line in the event pane, the fence history.
    a.update(Msg::ActionDone {
        id: 1,
        op: FenceOp::Reboot,
        domain: "web2".into(),
        outcome: Ok(FenceOutcome {
            result: FenceResult::Ok,
            acted_by: Some(2),
            duration_ms: 950,
            detail: None,
        }),
    });
    let t = a.toasts.last().unwrap();
    assert_eq!(t.level, Level::Ok);
    assert_eq!(t.text, "✓ reboot web2: ok by kvm2 (950 ms)");
    assert!(
        matches!(a.events.back(), Some(Entry::Local { text, .. }) if text == "console: reboot web2: ok by kvm2 (950 ms)")
    );
    assert_eq!(
        a.fences["web2"].back().unwrap().result,
        Some(FenceResult::Ok)
    );
    a.update(Msg::ActionDone {
        id: 2,
        op: FenceOp::On,
        domain: "web2".into(),
        outcome: Err("refused (read-only): this is the read-only socket".into()),
    });
    assert_eq!(a.toasts.last().unwrap().level, Level::Error);
    assert!(a.in_flight.is_empty());
    // Toasts go away by themselves.
    a.update(Msg::Tick(NOW + TOAST_ERROR_MS + 1));
    assert!(a.toasts.is_empty());
}

#[test]
fn read_only_never_asks_for_an_action() {
    let mut a = App::new(
        true,
        Keymap::default(),
        "/run/fenceline/fenceline-ro.sock",
        NOW,
    );
    a.update(Msg::Connected);
    a.update(Msg::Snapshot(Arc::new(fixtures::normal())));
    for k in ["F", "R", "S", "y", "enter"] {
        assert!(key(&mut a, k).is_empty(), "{k}");
        assert_eq!(a.mode, Mode::Normal, "{k}");
    }
    assert!(
        a.toasts
            .iter()
            .any(|t| t.text.contains("read-only monitor"))
    );
    // Even a dialog forced open cannot produce an effect.
    a.mode = Mode::Confirm(Confirm {
        op: FenceOp::Off,
        domain: "web1".into(),
        uuid: String::new(),
        state: DomainState::Running,
        owner: Some(1),
        owner_text: "kvm1 (1)".into(),
        conflict: false,
        on_action: true,
    });
    assert!(key(&mut a, "y").is_empty());
}

#[test]
fn events_pause_scroll_and_per_domain_history() {
    let s = fixtures::normal();
    let evs = fixtures::events(&s);
    let mut a = App::new(false, Keymap::default(), "x", NOW);
    a.update(Msg::Resize(140, 45));
    a.update(Msg::Connected);
    a.update(Msg::Snapshot(Arc::new(s.clone())));
    for e in evs.clone() {
        a.update(Msg::Event(Box::new(e)));
    }
    assert!(a.events.is_empty(), "the backlog is held until its end");
    a.update(Msg::BacklogEnd);
    assert_eq!(a.events.len(), evs.len());
    assert_eq!(a.history["build3"].len(), 1);
    let f = a.fences["web2"].back().unwrap();
    assert_eq!(
        (f.op, f.acted_by, f.phase),
        (FenceOp::Reboot, Some(2), "result")
    );

    // Pause: new events wait.
    key(&mut a, "p");
    let d = s.domains.iter().find(|d| d.name == "db1").unwrap();
    a.update(Msg::Event(Box::new(fixtures::state_event(
        6,
        0,
        d,
        DomainState::Paused,
    ))));
    assert_eq!(a.events.len(), evs.len());
    assert_eq!(a.held.len(), 1);
    key(&mut a, "p");
    assert_eq!(a.events.len(), evs.len() + 1);
    assert!(a.held.is_empty());
    // Scrolling back pauses; Esc resumes at the top.
    for i in 7..60 {
        a.update(Msg::Event(Box::new(fixtures::state_event(
            i,
            0,
            d,
            DomainState::Running,
        ))));
    }
    key(&mut a, "tab");
    assert_eq!(a.focus, Pane::Events);
    key(&mut a, "down");
    assert!(a.paused && a.event_scroll == 1);
    key(&mut a, "esc");
    assert!(!a.paused && a.event_scroll == 0);
    // History is bounded.
    assert_eq!(a.history["db1"].len(), DOMAIN_HISTORY);
}

#[test]
fn reconnect_skips_the_backlog_it_has_and_restarts_are_noticed() {
    let s = fixtures::normal();
    let evs = fixtures::events(&s);
    let mut a = app_with(s.clone());
    for e in evs.clone() {
        a.update(Msg::Event(Box::new(e)));
    }
    let n = a.events.len();
    a.update(Msg::Disconnected {
        reason: "gone".into(),
        retry_in_ms: 200,
    });
    assert!(!a.connected());
    assert_eq!(a.events.len(), n + 1, "a line says it was lost");
    // Same daemon: the backlog repeats what we have plus one new event.
    a.update(Msg::Connected);
    for e in evs.clone() {
        a.update(Msg::Event(Box::new(e)));
    }
    let d = &s.domains[0];
    a.update(Msg::Event(Box::new(fixtures::state_event(
        6,
        0,
        d,
        DomainState::Running,
    ))));
    a.update(Msg::BacklogEnd);
    assert_eq!(a.events.len(), n + 2);
    // A restarted daemon numbers from 1 again: all of its backlog is new.
    a.update(Msg::Disconnected {
        reason: "gone".into(),
        retry_in_ms: 200,
    });
    a.update(Msg::Connected);
    a.update(Msg::Event(Box::new(fixtures::state_event(
        1,
        0,
        d,
        DomainState::Running,
    ))));
    a.update(Msg::BacklogEnd);
    let texts: Vec<String> = a
        .events
        .iter()
        .filter_map(|e| match e {
            Entry::Local { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("daemon restarted")),
        "{texts:?}"
    );
    assert!(matches!(a.events.back(), Some(Entry::Event(e)) if e.seq == 1));
}

#[test]
fn only_the_last_snapshot_of_a_batch_is_applied() {
    let mut a = app_with(fixtures::normal());
    let mut first = fixtures::normal();
    first.version = 100;
    let mut last = fixtures::normal();
    last.version = 101;
    let d = last.domains[0].clone();
    let mut batch = vec![
        Msg::Snapshot(Arc::new(first)),
        Msg::Event(Box::new(fenceline_proto::api::Event {
            seq: 9,
            time: NOW,
            node: Some(1),
            kind: EventKind::Domain {
                action: DomainAction::Removed,
                name: d.name.clone(),
                uuid: d.uuid.clone(),
                state: d.state,
                previous: None,
                owner: None,
                previous_owner: None,
                detail: None,
            },
        })),
        Msg::Snapshot(Arc::new(last)),
    ];
    crate::ui::apply_batch(&mut a, &mut batch);
    assert!(batch.is_empty());
    assert_eq!(a.snapshot.as_ref().unwrap().version, 101);
    assert_eq!(a.history[&d.name].len(), 1);
}

#[test]
fn ticks_redraw_once_a_second_and_keys_always() {
    let mut a = app_with(fixtures::normal());
    a.dirty = false;
    a.update(Msg::Tick(NOW + 100));
    assert!(!a.dirty, "same second: nothing on screen changed");
    a.update(Msg::Tick(NOW + 1000));
    assert!(a.dirty);
    a.dirty = false;
    key(&mut a, "j");
    assert!(a.dirty);
}

#[test]
fn notes_land_on_top_of_the_first_backlog() {
    let s = fixtures::normal();
    let mut a = App::new(false, Keymap::default(), "x", NOW);
    a.note("demo: hello".into());
    a.note("demo: second".into());
    a.update(Msg::Connected);
    a.update(Msg::Snapshot(Arc::new(s.clone())));
    for e in fixtures::events(&s) {
        a.update(Msg::Event(Box::new(e)));
    }
    assert!(a.events.is_empty());
    a.update(Msg::BacklogEnd);
    assert!(
        matches!(a.events.back(), Some(Entry::Local { text, .. }) if text == "demo: hello"),
        "{:?}",
        a.events.back()
    );
}

#[test]
fn an_open_confirmation_follows_the_vm_and_closes_if_it_is_gone() {
    let mut a = app_with(fixtures::normal());
    key(&mut a, ":");
    typed(&mut a, "web2");
    key(&mut a, "enter");
    key(&mut a, "F");
    // web2 moves to kvm3 while the dialog is open: the dialog says so.
    let mut s = fixtures::normal();
    let d = s.domains.iter_mut().find(|d| d.name == "web2").unwrap();
    d.owner = Some(3);
    a.update(Msg::Snapshot(Arc::new(s.clone())));
    let Mode::Confirm(c) = &a.mode else {
        panic!("the dialog closed")
    };
    assert_eq!((c.owner, c.owner_text.as_str()), (Some(3), "kvm3 (3)"));
    // web2 leaves the map: the dialog closes, nothing is sent.
    s.domains.retain(|d| d.name != "web2");
    a.update(Msg::Snapshot(Arc::new(s)));
    assert_eq!(a.mode, Mode::Normal);
    assert!(
        a.toasts
            .last()
            .unwrap()
            .text
            .contains("web2 left the cluster map")
    );
    assert!(key(&mut a, "y").is_empty());
}

/// Jumps to node `name`: the nodes pane has the focus.
fn select_node(a: &mut App, name: &str) {
    key(a, ":");
    typed(a, name);
    key(a, "enter");
    assert_eq!(a.focus, Pane::Nodes);
}

#[test]
fn confirm_down_is_offered_only_for_a_departed_unconfirmed_node() {
    let mut a = app_with(fixtures::departures());
    // kvm2 is a member (its daemon is down): not offered.
    select_node(&mut a, "kvm2");
    assert!(key(&mut a, "D").is_empty());
    assert_eq!(a.mode, Mode::Normal);
    assert!(a.toasts.iter().any(|t| t.text.contains("kvm2 is a member")));
    // kvm4 is accounted for (self-fenced): not offered.
    select_node(&mut a, "kvm4");
    key(&mut a, "D");
    assert_eq!(a.mode, Mode::Normal);
    assert!(
        a.toasts
            .iter()
            .any(|t| t.text.contains("already accounted for"))
    );
    // kvm3 left and is not confirmed: the dialog, Cancel focused first.
    select_node(&mut a, "kvm3");
    key(&mut a, "D");
    let Mode::ConfirmNode(c) = a.mode.clone() else {
        panic!("{:?}", a.mode);
    };
    assert_eq!(c.node, "kvm3");
    assert_eq!(c.lost, vec![("vm3a".to_string(), DomainState::Running)]);
    assert!(!c.on_action);
    assert!(key(&mut a, "enter").is_empty(), "enter presses Cancel");
    assert_eq!(a.mode, Mode::Normal);
    key(&mut a, "D");
    assert_eq!(
        key(&mut a, "y"),
        vec![Effect::ConfirmNode {
            id: 1,
            node: "kvm3".into()
        }]
    );
    a.update(Msg::ConfirmDone {
        id: 1,
        node: "kvm3".into(),
        outcome: Ok("control:uid=0 asserts that kvm3 (3) is down".into()),
    });
    assert!(a.toasts.iter().any(|t| t.text == "kvm3 confirmed down"));
}

#[test]
fn an_open_node_confirmation_closes_when_the_node_returns() {
    let mut a = app_with(fixtures::departures());
    select_node(&mut a, "kvm3");
    key(&mut a, "D");
    assert!(matches!(a.mode, Mode::ConfirmNode(_)));
    let mut s = fixtures::departures();
    s.nodes[2].member = true;
    s.nodes[2].accounted = true;
    s.nodes[2].accounting = None;
    a.update(Msg::Snapshot(Arc::new(s)));
    assert_eq!(a.mode, Mode::Normal);
    assert!(a.toasts.iter().any(|t| t.text.contains("confirm not sent")));
}

#[test]
fn read_only_never_confirms_a_node_down() {
    let mut a = app_as(true, fixtures::departures());
    select_node(&mut a, "kvm3");
    assert!(key(&mut a, "D").is_empty());
    assert_eq!(a.mode, Mode::Normal);
    // Even a dialog forced open cannot produce an effect.
    a.mode = Mode::ConfirmNode(NodeConfirm {
        nodeid: 3,
        node: "kvm3".into(),
        why: String::new(),
        lost: Vec::new(),
        on_action: true,
    });
    assert!(key(&mut a, "y").is_empty());
}
