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

/// Below this the console shows a "too small" notice instead of panes.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;
/// From this width on, the detail pane sits beside the tables.
pub const WIDE: u16 = 120;

/// Where each pane goes for a terminal of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    pub full: Rect,
    pub header: Rect,
    pub nodes: Rect,
    pub domains: Rect,
    pub detail: Rect,
    pub events: Rect,
    pub footer: Rect,
    pub too_small: bool,
}

impl Areas {
    /// Data rows of the domain table (inside the border, under the header row).
    pub fn domains_rows(&self) -> usize {
        usize::from(self.domains.height.saturating_sub(3))
    }
    /// Lines of the event pane.
    pub fn events_rows(&self) -> usize {
        usize::from(self.events.height.saturating_sub(2))
    }
}

/// The layout: a 2-line header, the nodes pane (as tall as the node list, up
/// to a limit), the domain table, the detail pane and the event pane, and a
/// 1-line footer (hints or the prompt). Wide terminals put the detail pane on
/// the right and the events along the bottom; narrow ones put detail and
/// events side by side under the table.
pub fn layout(w: u16, h: u16, nodes: usize) -> Areas {
    let full = Rect::new(0, 0, w, h);
    let zero = Rect::new(0, 0, 0, 0);
    if w < MIN_WIDTH || h < MIN_HEIGHT {
        return Areas {
            full,
            header: zero,
            nodes: zero,
            domains: zero,
            detail: zero,
            events: zero,
            footer: zero,
            too_small: true,
        };
    }
    let header = Rect::new(0, 0, w, 2);
    let footer = Rect::new(0, h - 1, w, 1);
    let body_h = h - 3;
    let nodes_wanted = (nodes.max(1) as u16).saturating_add(3);
    if w >= WIDE {
        let events_h = (body_h * 3 / 10).clamp(6, 14);
        let top_h = body_h - events_h;
        let detail_w = (w * 35 / 100).clamp(40, 64);
        let left_w = w - detail_w;
        let nodes_h = nodes_wanted.min(top_h / 3).max(4);
        Areas {
            full,
            header,
            nodes: Rect::new(0, 2, left_w, nodes_h),
            domains: Rect::new(0, 2 + nodes_h, left_w, top_h - nodes_h),
            detail: Rect::new(left_w, 2, detail_w, top_h),
            events: Rect::new(0, 2 + top_h, w, events_h),
            footer,
            too_small: false,
        }
    } else {
        let bottom_h = (body_h * 35 / 100).clamp(6, 12);
        let nodes_h = nodes_wanted.min(body_h / 3).max(4);
        let domains_h = body_h - bottom_h - nodes_h;
        let detail_w = w / 2;
        let y = 2 + nodes_h + domains_h;
        Areas {
            full,
            header,
            nodes: Rect::new(0, 2, w, nodes_h),
            domains: Rect::new(0, 2 + nodes_h, w, domains_h),
            detail: Rect::new(0, y, detail_w, bottom_h),
            events: Rect::new(detail_w, y, w - detail_w, bottom_h),
            footer,
            too_small: false,
        }
    }
}

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
        _ => {}
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

pub use fenceline_proto::display::age;

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
