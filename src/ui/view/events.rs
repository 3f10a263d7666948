//! The live event pane, newest first. It can be paused (new events wait) and
//! scrolled (which pauses it). Only the visible lines are built.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, Entry, Level, Pane, op_label, state_label};
use super::super::theme::Theme;
use fenceline_proto::api::{
    DaemonAction, DomainAction, EventKind, FenceResult, MembershipAction, NetworkAction,
};

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let focused = app.focus == Pane::Events;
    let mut extra = vec![Span::styled("UTC ", theme.dim)];
    if app.paused {
        extra.push(Span::styled(
            format!("‖ PAUSED, {} new ", app.held.len()),
            theme.warn,
        ));
    }
    if app.event_scroll > 0 {
        extra.push(Span::styled(format!("↓{} ", app.event_scroll), theme.dim));
    }
    let block = super::pane(super::title("Events", theme, extra), focused, theme);
    let h = usize::from(area.height.saturating_sub(2));
    let w = usize::from(area.width.saturating_sub(2));
    let lines: Vec<Line> = app
        .events
        .iter()
        .rev()
        .skip(app.event_scroll)
        .take(h)
        .map(|e| entry_line(e, app, theme, w))
        .collect();
    let para = if lines.is_empty() {
        Paragraph::new(Span::styled(" no events yet", theme.dim))
    } else {
        Paragraph::new(lines)
    };
    frame.render_widget(para.block(block), area);
}

/// One event as a line: time, a symbol, the text; cut to `width`.
pub fn entry_line<'a>(e: &Entry, app: &App, theme: &Theme, width: usize) -> Line<'a> {
    let (sym, style, text) = describe(e, app, theme);
    let time = super::clock(e.time());
    let room = width.saturating_sub(time.chars().count() + 3);
    Line::from(vec![
        Span::styled(time, theme.event_time),
        Span::raw(" "),
        Span::styled(sym, style),
        Span::raw(" "),
        Span::styled(super::fit(&text, room), style),
    ])
}

/// Symbol, style and text of an entry.
fn describe(e: &Entry, app: &App, theme: &Theme) -> (&'static str, Style, String) {
    let ev = match e {
        Entry::Local { level, text, .. } => {
            let (sym, style) = match level {
                Level::Info => ("·", theme.base),
                Level::Ok => ("✓", theme.ok),
                Level::Warn => ("⚠", theme.warn),
                Level::Error => ("✗", theme.danger),
            };
            return (sym, style, text.clone());
        }
        Entry::Event(ev) => ev,
    };
    let node = |id: Option<u32>| id.map(|n| app.node_name(n)).unwrap_or_default();
    match &ev.kind {
        EventKind::Membership {
            action,
            nodeid,
            detail,
            ..
        } => {
            let who = node(*nodeid);
            let why = detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            let (sym, style, what) = match action {
                MembershipAction::Joined => ("+", theme.ok, format!("{who} joined")),
                MembershipAction::Left => ("−", theme.danger, format!("{who} LEFT")),
                MembershipAction::Quorate => ("✓", theme.ok, "quorate".to_string()),
                MembershipAction::QuorumLost => ("✗", theme.danger, "QUORUM LOST".to_string()),
                MembershipAction::DaemonJoined => {
                    ("+", theme.base, format!("daemon on {who} joined"))
                }
                MembershipAction::DaemonLeft => ("−", theme.warn, format!("daemon on {who} left")),
                MembershipAction::CorosyncUp => ("✓", theme.ok, "corosync up".to_string()),
                MembershipAction::CorosyncLost => ("✗", theme.danger, "corosync LOST".to_string()),
            };
            (sym, style, format!("{what}{why}"))
        }
        EventKind::Domain {
            action,
            name,
            state,
            previous,
            owner,
            previous_owner,
            detail,
            ..
        } => {
            let (sym, style) = super::state_symbol(*state, theme);
            let st = state_label(*state);
            let mut t = match action {
                DomainAction::Appeared => format!("{name} appeared, {st}"),
                DomainAction::State => match previous {
                    Some(p) if p != state => {
                        format!("{name} {st} (was {})", state_label(*p))
                    }
                    _ => format!("{name} {st}"),
                },
                DomainAction::Owner => format!("{name} owner changed"),
                DomainAction::Removed => format!("{name} removed"),
                DomainAction::Purged => format!("{name} purged (its host left)"),
                DomainAction::Conflict => {
                    return (
                        "!!",
                        theme.conflict,
                        format!(
                            "{name} CONFLICT: running on several hosts{}",
                            detail
                                .as_deref()
                                .map(|d| format!(" ({d})"))
                                .unwrap_or_default()
                        ),
                    );
                }
                DomainAction::ConflictResolved => format!("{name} conflict resolved"),
                DomainAction::Rebooted => format!("{name} rebooted"),
            };
            match (owner, previous_owner) {
                (Some(o), Some(p)) if o != p => {
                    t.push_str(&format!(" on {} (was {})", node(Some(*o)), node(Some(*p))))
                }
                (Some(o), _) => t.push_str(&format!(" on {}", node(Some(*o)))),
                (None, Some(p)) => t.push_str(&format!(" (was on {})", node(Some(*p)))),
                (None, None) => {}
            }
            if let Some(d) = detail {
                t.push_str(&format!(": {d}"));
            }
            (sym, style, t)
        }
        EventKind::Daemon {
            action,
            uri,
            detail,
        } => {
            let uri = uri.as_deref().unwrap_or("");
            let why = detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            match action {
                DaemonAction::LibvirtConnected => {
                    ("✓", theme.ok, format!("libvirt connected {uri}{why}"))
                }
                DaemonAction::LibvirtLost => {
                    ("✗", theme.danger, format!("libvirt LOST {uri}{why}"))
                }
                DaemonAction::Dropped => ("⚠", theme.warn, format!("dropped{why}")),
                DaemonAction::Started => ("·", theme.base, format!("daemon started{why}")),
                DaemonAction::Stopping => ("·", theme.warn, format!("daemon stopping{why}")),
            }
        }
        EventKind::Fence {
            op,
            domain,
            source,
            acted_by,
            result,
            duration_ms,
            detail,
            ..
        } => {
            let ok = matches!(result, FenceResult::Ok | FenceResult::Off);
            let by = acted_by
                .map(|n| format!(" by {}", node(Some(n))))
                .unwrap_or_default();
            let why = detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            (
                if ok { "»" } else { "✗" },
                if ok { theme.warn } else { theme.danger },
                format!(
                    "fence {} {domain} → {result}{by} ({duration_ms} ms, from {source}){why}",
                    op_label(*op)
                ),
            )
        }
        EventKind::NetworkHook {
            network,
            op,
            subop,
            port,
            replay,
            error,
            ..
        } => {
            let mut t = format!("hook network {network} {op}");
            if !subop.is_empty() && subop != "-" {
                t.push_str(&format!("/{subop}"));
            }
            if let Some(p) = port {
                if let Some(o) = &p.owner {
                    t.push_str(&format!(" vm {o}"));
                }
                if let Some(m) = &p.mac {
                    t.push_str(&format!(" mac {m}"));
                }
            }
            if *replay {
                t.push_str(" (replayed)");
            }
            match error {
                Some(e) => ("⚠", theme.warn, format!("{t}: unparsed: {e}")),
                None => ("↯", theme.base, t),
            }
        }
        EventKind::Network {
            action, network, ..
        } => {
            let (sym, style, verb) = match action {
                NetworkAction::Defined => ("+", theme.base, "defined"),
                NetworkAction::Undefined => ("−", theme.base, "undefined"),
                NetworkAction::Started => ("▲", theme.ok, "started"),
                NetworkAction::Stopped => ("▼", theme.warn, "stopped"),
            };
            (sym, style, format!("network {network} {verb}"))
        }
    }
}
