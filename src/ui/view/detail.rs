//! The detail pane: the selected domain, where each node sees it, its recent
//! events and its fence history.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};

use super::super::app::{App, Pane};
use super::super::theme::Theme;
use fenceline_proto::api::{DaemonKind, FenceResult, ListenerState, NodeView, Snapshot};
use fenceline_proto::display::{count, lost_placement, op_label, state_label};

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    if app.focus == Pane::Nodes
        && let Some(s) = app.snapshot.as_deref()
        && let Some(n) = s.nodes.get(app.node_sel)
    {
        return node(frame, area, app, theme, s, n);
    }
    let Some(d) = app.selected() else {
        let block = super::pane(super::title("Detail", theme, vec![]), false, theme);
        frame.render_widget(
            Paragraph::new(Span::styled(" no domain selected", theme.dim)).block(block),
            area,
        );
        return;
    };
    let mut extra = Vec::new();
    if d.conflict {
        extra.push(Span::styled("!! CONFLICT ", theme.conflict));
    }
    let block = super::pane(super::title(&d.name, theme, extra), false, theme);
    let w = usize::from(area.width.saturating_sub(2));
    let label = |s: &'static str| Span::styled(format!("{s:<7}"), theme.dim);
    let (sym, style) = super::state_symbol(d.state, theme);
    // A narrow pane shows the uuid without its label rather than wrapped.
    let uuid_line = if w >= 7 + d.uuid.chars().count() {
        Line::from(vec![label("uuid"), Span::raw(d.uuid.clone())])
    } else {
        Line::from(Span::raw(d.uuid.clone()))
    };
    let mut lines = vec![
        uuid_line,
        Line::from(vec![
            label("state"),
            Span::styled(format!("{sym} {}", state_label(d.state)), style),
            Span::styled(format!(" for {}", super::age(app.now, d.since)), theme.dim),
        ]),
        Line::from(vec![
            label("owner"),
            match d.owner {
                Some(o) => Span::raw(format!("{} ({o})", app.node_name(o))),
                None if d.conflict => Span::styled("none: CONFLICT", theme.conflict),
                None => match d.migrating {
                    Some(m) => Span::styled(
                        format!(
                            "none: migrating {} ({}) → {} ({})",
                            app.node_name(m.from),
                            m.from,
                            app.node_name(m.to),
                            m.to
                        ),
                        theme.warn,
                    ),
                    None => Span::styled("none", theme.dim),
                },
            },
        ]),
    ];
    if !d.placements.is_empty() {
        let mut spans = vec![label("seen")];
        for (i, p) in d.placements.iter().enumerate() {
            if i > 0 {
                spans.push(Span::styled(", ", theme.dim));
            }
            let (sym, style) = super::state_symbol(p.state, theme);
            spans.push(Span::raw(format!("{} ", app.node_name(p.nodeid))));
            spans.push(Span::styled(
                format!("{sym} {}", state_label(p.state)),
                style,
            ));
        }
        lines.push(Line::from(spans));
    }
    for p in d.placements.iter().filter(|p| p.lost) {
        let why = app.snapshot.as_deref().and_then(|s| {
            s.nodes
                .iter()
                .find(|n| n.nodeid == p.nodeid)
                .and_then(|n| n.accounting.as_deref())
        });
        lines.push(Line::from(vec![
            label("lost"),
            Span::styled(
                lost_placement(
                    &d.name,
                    &app.node_name(p.nodeid),
                    why,
                    p.state,
                    app.now,
                    p.lost_since.unwrap_or(app.now),
                ),
                theme.warn,
            ),
        ]));
    }
    if let Some(uri) = &d.uri {
        lines.push(Line::from(vec![label("uri"), Span::raw(uri.clone())]));
    }
    for (_, op, dom) in &app.in_flight {
        if dom == &d.name {
            lines.push(Line::from(Span::styled(
                format!("… {} in progress", op_label(*op)),
                theme.warn,
            )));
        }
    }

    lines.push(Line::from(Span::styled("Fence history", theme.title)));
    match app.fences.get(&d.name) {
        Some(f) if !f.is_empty() => {
            for r in f.iter().rev().take(5) {
                let ok = matches!(r.result, Some(FenceResult::Ok | FenceResult::Off));
                let result = r
                    .result
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "no answer".into());
                let by = r
                    .acted_by
                    .map(|n| format!(" by {}", app.node_name(n)))
                    .unwrap_or_default();
                let why = r
                    .detail
                    .as_deref()
                    .map(|x| format!(": {x}"))
                    .unwrap_or_default();
                let via = match r.phase {
                    "acted" => format!("acted for {}", r.source),
                    _ => format!("from {}", r.source),
                };
                let text = format!(
                    "{} → {result}{by} ({} ms, {via}){why}",
                    op_label(r.op),
                    r.duration_ms,
                );
                lines.push(Line::from(vec![
                    Span::styled(super::clock(r.time), theme.event_time),
                    Span::raw(" "),
                    Span::styled(
                        super::fit(&text, w.saturating_sub(9)),
                        if ok { theme.ok } else { theme.danger },
                    ),
                ]));
            }
        }
        _ => lines.push(Line::from(Span::styled(" none", theme.dim))),
    }
    lines.push(Line::from(Span::styled("Recent events", theme.title)));
    match app.history.get(&d.name) {
        Some(h) if !h.is_empty() => {
            let room = usize::from(area.height.saturating_sub(2)).saturating_sub(lines.len());
            for e in h.iter().rev().take(room.max(1)) {
                lines.push(super::entry_line(e, app, theme, w));
            }
        }
        _ => lines.push(Line::from(Span::styled(
            " none since the console started",
            theme.dim,
        ))),
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}

/// The selected node (when the nodes pane has the focus): membership,
/// daemons, whether it is accounted for, self-fencing, libvirt connections
/// with their errors, and its networks.
fn node(frame: &mut Frame, area: Rect, app: &App, theme: &Theme, s: &Snapshot, n: &NodeView) {
    let name = app.node_name(n.nodeid);
    let local = s.local_nodeid == Some(n.nodeid);
    let mut extra = vec![Span::styled(format!("node {} ", n.nodeid), theme.dim)];
    if local {
        extra.push(Span::styled("this node ", theme.dim));
    }
    let block = super::pane(super::title(&name, theme, extra), false, theme);
    let label = |s: &'static str| Span::styled(format!("{s:<9}"), theme.dim);
    let mut lines = vec![Line::from(vec![
        label("member"),
        if n.member {
            Span::styled("● member", theme.member)
        } else {
            Span::styled("✗ OFFLINE", theme.offline)
        },
        Span::styled(format!(" for {}", super::age(app.now, n.since)), theme.dim),
    ])];
    let daemons = n
        .daemons
        .iter()
        .map(|d| match d {
            DaemonKind::Fenceline => "fenceline",
            DaemonKind::FenceVirtd => "fence_virtd",
        })
        .collect::<Vec<_>>()
        .join(", ");
    lines.push(Line::from(vec![
        label("daemons"),
        Span::raw(if daemons.is_empty() {
            "none".to_string()
        } else {
            daemons
        }),
        Span::styled(
            n.version
                .as_deref()
                .map(|v| format!(" (v{v})"))
                .unwrap_or_default(),
            theme.dim,
        ),
    ]));
    lines.push(Line::from(vec![
        label("domains"),
        Span::raw(format!("{} owned", n.vm_count)),
    ]));
    lines.push(Line::from(vec![
        label("account"),
        match (&n.accounting, n.accounted) {
            (Some(why), false) => Span::styled(format!("⚠ NOT accounted for: {why}"), theme.danger),
            (Some(how), true) => Span::styled(format!("✓ {how}"), theme.warn),
            (None, true) => Span::styled("✓ accounted for", theme.ok),
            (None, false) => Span::styled("⚠ NOT accounted for", theme.danger),
        },
    ]));
    if !app.read_only && !n.member && !n.accounted && !local {
        lines.push(Line::from(Span::styled(
            format!(
                "          {} confirms it down, if it is",
                app.keymap
                    .keys_text(super::super::keymap::Action::ConfirmDown)
            ),
            theme.dim,
        )));
    }
    lines.push(Line::from(vec![
        label("self-fence"),
        match n.self_fence_secs {
            Some(s) => Span::raw(format!(" ⏱ after {s} s out of a quorate membership")),
            None => Span::styled(" off", theme.dim),
        },
    ]));
    lines.push(Line::from(Span::styled("libvirt", theme.title)));
    if n.libvirt.is_empty() {
        lines.push(Line::from(Span::styled(" not reported", theme.dim)));
    }
    for l in &n.libvirt {
        let (mark, style) = if l.connected {
            ("✓", theme.ok)
        } else {
            ("✗", theme.danger)
        };
        let mut text = format!(
            "{mark} {} {} domains, {} for {}",
            l.uri,
            l.domains,
            if l.connected { "up" } else { "DOWN" },
            super::age(app.now, l.since)
        );
        if let Some(e) = &l.error {
            text.push_str(&format!(": {e}"));
        }
        lines.push(Line::from(Span::styled(format!(" {text}"), style)));
    }
    if Some(n.nodeid) == s.local_nodeid {
        lines.push(Line::from(Span::styled("fence listeners", theme.title)));
        if s.local.listeners.is_empty() {
            lines.push(Line::from(Span::styled(
                " none configured: guests cannot fence through this host",
                theme.warn,
            )));
        }
        for l in &s.local.listeners {
            let (mark, style) = match l.state {
                ListenerState::Bound => ("✓", theme.ok),
                ListenerState::Waiting => ("…", theme.warn),
                ListenerState::Error => ("✗", theme.danger),
            };
            lines.push(Line::from(Span::styled(
                format!(" {mark} {}", l.describe()),
                style,
            )));
        }
    }
    let nets: Vec<_> = s.networks.iter().filter(|x| x.node == n.nodeid).collect();
    lines.push(Line::from(Span::styled("networks", theme.title)));
    if nets.is_empty() {
        lines.push(Line::from(Span::styled(" none reported", theme.dim)));
    }
    for x in nets {
        let (mark, style) = if x.active {
            ("▲", theme.ok)
        } else {
            ("▼", theme.warn)
        };
        lines.push(Line::from(vec![
            Span::styled(format!(" {mark} {}", x.name), style),
            Span::styled(
                format!(
                    "{} · {}",
                    x.bridge
                        .as_deref()
                        .map(|b| format!(" on {b}"))
                        .unwrap_or_default(),
                    count(x.ports.len(), "port")
                ),
                theme.dim,
            ),
        ]));
    }
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        area,
    );
}
