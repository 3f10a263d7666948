//! The nodes pane: id, name, membership, VM count, libvirt health, daemon,
//! and whether the node is accounted for (README "When fenceline says off").

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

use super::super::app::{App, Pane};
use super::super::theme::Theme;
use fenceline_proto::api::{DaemonKind, NodeView};

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let focused = app.focus == Pane::Nodes;
    let Some(s) = app.snapshot.as_deref() else {
        frame.render_widget(
            Paragraph::new("").block(super::pane(
                super::title("Nodes", theme, vec![]),
                focused,
                theme,
            )),
            area,
        );
        return;
    };
    let members = s.nodes.iter().filter(|n| n.member).count();
    let block = super::pane(
        super::title(
            "Nodes",
            theme,
            vec![Span::styled(
                format!("{members}/{} members ", s.nodes.len()),
                theme.dim,
            )],
        ),
        focused,
        theme,
    );
    if s.nodes.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled(
                " no nodes known yet (is corosync running?)",
                theme.dim,
            ))
            .block(block),
            area,
        );
        return;
    }
    let inner_h = usize::from(area.height.saturating_sub(3)).max(1);
    // Keep the selected node visible when the list is longer than the pane.
    let first = app.node_sel.saturating_sub(inner_h - 1);
    let rows: Vec<Row> = s
        .nodes
        .iter()
        .skip(first)
        .take(inner_h)
        .map(|n| {
            let local = s.local_nodeid == Some(n.nodeid);
            let id = format!("{}{}", n.nodeid, if local { "*" } else { "" });
            let state = if n.member {
                Cell::from(Span::styled("● member", theme.member))
            } else {
                Cell::from(Span::styled("✗ OFFLINE", theme.offline))
            };
            let libvirt = if n.libvirt.is_empty() {
                Cell::from(Span::styled("-", theme.dim))
            } else {
                let down: Vec<&str> = n
                    .libvirt
                    .iter()
                    .filter(|l| !l.connected)
                    .map(|l| l.uri.as_str())
                    .collect();
                if down.is_empty() {
                    Cell::from(Span::styled(
                        format!("✓ ok ({})", n.libvirt.len()),
                        theme.ok,
                    ))
                } else {
                    Cell::from(Span::styled(
                        format!("✗ DOWN {}", down.join(",")),
                        theme.danger,
                    ))
                }
            };
            let daemon = n
                .daemons
                .iter()
                .map(|d| match d {
                    DaemonKind::Fenceline => "fenceline",
                    DaemonKind::FenceVirtd => "fence_virtd",
                })
                .collect::<Vec<_>>()
                .join("+");
            Row::new(vec![
                Cell::from(id),
                Cell::from(n.name.clone().unwrap_or_else(|| "-".into())),
                state,
                Cell::from(Span::styled(super::age(app.now, n.since), theme.dim)),
                Cell::from(Line::from(n.vm_count.to_string()).right_aligned()),
                libvirt,
                daemon_cell(n, daemon, theme),
            ])
        })
        .collect();
    let header = Row::new(vec![
        "ID", "NAME", "STATE", "SINCE", "VMS", "LIBVIRT", "DAEMON",
    ])
    .style(theme.title);
    let name_w = s
        .nodes
        .iter()
        .map(|n| n.name.as_deref().map_or(1, |m| m.chars().count()))
        .max()
        .unwrap_or(4)
        .clamp(4, 24) as u16;
    let table = Table::new(
        rows,
        [
            Constraint::Length(4),
            Constraint::Length(name_w),
            Constraint::Length(9),
            Constraint::Length(5),
            Constraint::Length(4),
            Constraint::Length(14),
            Constraint::Min(11),
        ],
    )
    .header(header)
    .block(block)
    .row_highlight_style(theme.selection);
    let mut state = TableState::default();
    if focused {
        state.select(Some(app.node_sel - first));
    }
    frame.render_stateful_widget(table, area, &mut state);
}

/// The daemons, then why the node is not accounted for (`⚠`), how a
/// departed one is (`✓`: confirmed down or self-fenced), and `⏱` when it
/// self-fences.
fn daemon_cell<'a>(n: &NodeView, daemon: String, theme: &Theme) -> Cell<'a> {
    let mut spans = vec![Span::raw(if daemon.is_empty() {
        "-".to_string()
    } else {
        daemon
    })];
    if let Some(s) = n.self_fence_secs {
        spans.push(Span::styled(format!(" ⏱{s}s"), theme.dim));
    }
    match (&n.accounting, n.accounted) {
        (Some(why), false) => spans.push(Span::styled(format!(" ⚠ {why}"), theme.danger)),
        (Some(how), true) => spans.push(Span::styled(format!(" ✓ {how}"), theme.warn)),
        (None, _) => {}
    }
    Cell::from(Line::from(spans))
}
