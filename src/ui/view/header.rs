//! The header: cluster, quorum, local node, connection, read-only badge; and
//! a summary line (members, domains by state, conflicts, drops).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, Conn};
use super::super::theme::Theme;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let sep = || Span::styled(" │ ", theme.header);
    let mut left: Vec<Span> = vec![Span::styled(" fenceline", theme.header.patch(theme.title))];
    let snap = app.snapshot.as_deref();
    if let Some(s) = snap {
        left.push(sep());
        left.push(Span::styled(
            format!(
                "cluster {}",
                s.cluster_name.as_deref().unwrap_or("(unknown)")
            ),
            theme.header,
        ));
        left.push(sep());
        let votes = match (s.total_votes, s.expected_votes) {
            (Some(t), Some(e)) => format!(" {t}/{e}"),
            _ => String::new(),
        };
        if s.quorate {
            left.push(Span::styled(
                format!("✓ quorate{votes}"),
                theme.header.patch(theme.ok),
            ));
        } else {
            left.push(Span::styled(
                format!("✗ QUORUM LOST{votes}"),
                theme.header.patch(theme.danger),
            ));
        }
        left.push(sep());
        let me = s
            .local_nodeid
            .map(|id| format!("local {} ({id})", app.node_name(id)))
            .unwrap_or_else(|| "local node unknown".into());
        left.push(Span::styled(me, theme.header));
    }
    left.push(sep());
    match &app.conn {
        Conn::Connecting => left.push(Span::styled(
            format!("… connecting to {}", app.target),
            theme.header.patch(theme.warn),
        )),
        Conn::Connected { .. } => {
            left.push(Span::styled("● connected", theme.header.patch(theme.ok)))
        }
        Conn::Disconnected {
            reason, retry_at, ..
        } => {
            let secs = retry_at.saturating_sub(app.now).div_ceil(1000);
            let when = if secs == 0 {
                "reconnecting".to_string()
            } else {
                format!("retry in {secs}s")
            };
            left.push(Span::styled(
                format!("✗ DISCONNECTED ({when}): {reason}"),
                theme.header.patch(theme.danger),
            ));
        }
    }
    if let Some(s) = snap
        && s.stale
    {
        left.push(sep());
        left.push(Span::styled(
            format!(
                "⚠ STALE: {}",
                s.corosync
                    .error
                    .as_deref()
                    .unwrap_or("corosync unreachable")
            ),
            theme.header.patch(theme.warn),
        ));
    }
    let badge = if app.read_only {
        vec![Span::styled(" READ-ONLY ", theme.badge_ro)]
    } else {
        Vec::new()
    };
    let line1 = spread(left, badge, area.width, theme.header);
    let line2 = summary(app, theme);
    frame.render_widget(
        Paragraph::new(vec![line1, line2]),
        Rect::new(area.x, area.y, area.width, 2),
    );
}

/// `left` from the left edge, `right` against the right edge, the gap
/// filled with `fill`; `left` is cut if both do not fit.
fn spread<'a>(left: Vec<Span<'a>>, right: Vec<Span<'a>>, width: u16, fill: Style) -> Line<'a> {
    let w = usize::from(width);
    let rw: usize = right.iter().map(Span::width).sum();
    let mut out = Vec::new();
    let mut used = 0;
    for s in left {
        let sw = s.width();
        if used + sw + rw > w {
            let room = w.saturating_sub(used + rw);
            if room > 0 {
                out.push(Span::styled(super::fit(&s.content, room), s.style));
                used += room;
            }
            break;
        }
        used += sw;
        out.push(s);
    }
    if used + rw < w {
        out.push(Span::styled(" ".repeat(w - used - rw), fill));
    }
    out.extend(right);
    Line::from(out)
}

fn summary<'a>(app: &App, theme: &'a Theme) -> Line<'a> {
    let Some(s) = app.snapshot.as_deref() else {
        return Line::from(Span::styled(
            format!(" waiting for the first snapshot from {}", app.target),
            theme.dim,
        ));
    };
    let members = s.nodes.iter().filter(|n| n.member).count();
    let sum = app.summary;
    let (running, off, other, conflicts) = (sum.running, sum.shutoff, sum.other, sum.conflicts);
    let mut spans = vec![
        Span::styled(
            format!(" nodes {members}/{} members", s.nodes.len()),
            theme.base,
        ),
        Span::styled(" · ", theme.dim),
        Span::styled(
            format!(
                "domains {} ({running} running, {off} shut off{})",
                s.domains.len(),
                if other > 0 {
                    format!(", {other} other")
                } else {
                    String::new()
                }
            ),
            theme.base,
        ),
        Span::styled(" · ", theme.dim),
    ];
    if conflicts > 0 {
        spans.push(Span::styled(
            format!("!! {conflicts} CONFLICT"),
            theme.conflict,
        ));
    } else {
        spans.push(Span::styled("no conflicts", theme.base));
    }
    let drops = sum.drops;
    if drops > 0 {
        spans.push(Span::styled(" · ", theme.dim));
        spans.push(Span::styled(
            format!("⚠ {drops} dropped (fenceline status shows which)"),
            theme.warn,
        ));
    }
    Line::from(spans)
}
