//! Drawing: `draw(frame, app, theme)` reads the [`App`] and never changes
//! it. One file per pane. Only what is visible is built: the domain table and
//! the event pane turn just their visible rows into widgets, so a 10,000-domain
//! map costs the same per frame as a 10-domain one.

mod confirm;
mod detail;
mod domains;
mod events;
mod footer;
mod header;
mod help;
mod nodes;
mod toast;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Paragraph};

use super::app::{App, Conn, Mode};
use super::theme::Theme;
use fenceline_proto::api::{DomainState, Millis};

pub use events::entry_line;

pub use super::layout::{Areas, MIN_HEIGHT, MIN_WIDTH, WIDE, layout};

/// Draws one frame.
pub fn draw(frame: &mut Frame, app: &App, theme: &Theme) {
    let area = frame.area();
    let a = layout(area.width, area.height, app.node_count());
    frame.render_widget(Block::default().style(theme.base), area);
    if a.too_small {
        let msg = format!(
            "terminal too small: {}x{}, the console needs {MIN_WIDTH}x{MIN_HEIGHT}",
            area.width, area.height
        );
        frame.render_widget(
            Paragraph::new(msg)
                .style(theme.warn)
                .wrap(ratatui::widgets::Wrap { trim: true }),
            area,
        );
        return;
    }
    nodes::draw(frame, a.nodes, app, theme);
    domains::draw(frame, a.domains, app, theme);
    detail::draw(frame, a.detail, app, theme);
    events::draw(frame, a.events, app, theme);
    // The last known state stays on screen, greyed, while disconnected.
    if matches!(app.conn, Conn::Disconnected { .. }) {
        let body = Rect::new(0, 2, area.width, area.height - 3);
        frame.buffer_mut().set_style(body, theme.stale);
    }
    header::draw(frame, a.header, app, theme);
    footer::draw(frame, a.footer, app, theme);
    toast::draw(frame, a, app, theme);
    match &app.mode {
        Mode::Help { scroll } => help::draw(frame, area, app, theme, *scroll),
        Mode::Confirm(c) => confirm::draw(frame, area, app, theme, c),
        Mode::ConfirmNode(c) => confirm::draw_node(frame, area, app, theme, c),
        _ => {}
    }
    scrub(frame.buffer_mut());
}

/// Names on screen come from guests, peers and hook XML. ratatui drops the
/// C0 and C1 controls itself; this drops, in every cell, what else must not
/// reach a terminal (bidi controls, zero-width and other invisible format
/// characters, line separators; `display::unsafe_for_terminal`). A cell
/// left empty shows a blank.
fn scrub(buf: &mut ratatui::buffer::Buffer) {
    use fenceline_proto::display::unsafe_for_terminal;
    for cell in &mut buf.content {
        let sym = cell.symbol();
        if sym.chars().any(unsafe_for_terminal) {
            let kept: String = sym.chars().filter(|&c| !unsafe_for_terminal(c)).collect();
            cell.set_symbol(if kept.is_empty() { " " } else { &kept });
        }
    }
}

/// A pane's frame: rounded border, highlighted when focused.
fn pane<'a>(title: Line<'a>, focused: bool, theme: &Theme) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(if focused {
            BorderType::Thick
        } else {
            BorderType::Rounded
        })
        .border_style(if focused {
            theme.border_focus
        } else {
            theme.border
        })
        .title(title)
}

/// A pane title: the name, then optional extra spans.
fn title<'a>(name: &'a str, theme: &Theme, extra: Vec<Span<'a>>) -> Line<'a> {
    let mut spans = vec![Span::styled(format!(" {name} "), theme.title)];
    spans.extend(extra);
    Line::from(spans)
}

/// Symbol and style of a domain state; the text label goes with it.
pub fn state_symbol(s: DomainState, theme: &Theme) -> (&'static str, Style) {
    let style = match s {
        DomainState::Running => theme.running,
        DomainState::Paused => theme.paused,
        DomainState::Shutoff => theme.shutoff,
        DomainState::Crashed => theme.crashed,
        DomainState::Blocked
        | DomainState::Shutdown
        | DomainState::Pmsuspended
        | DomainState::Nostate => theme.transient,
    };
    (fenceline_proto::display::state_symbol(s), style)
}

/// HH:MM:SS of a time, in UTC (the pane titles say so).
pub fn clock(ms: Millis) -> String {
    let s = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

use fenceline_proto::display::age;

/// Cuts `s` to `width` display columns, ending in "…" when cut.
pub fn fit(s: &str, width: usize) -> String {
    use unicode_width::UnicodeWidthChar;
    let total: usize = s.chars().map(|c| c.width().unwrap_or(0)).sum();
    if total <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = c.width().unwrap_or(0);
        if w + cw > width - 1 {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push('…');
    out
}
