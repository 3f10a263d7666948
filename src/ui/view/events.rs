//! The live event pane, newest first. It can be paused (new events wait) and
//! scrolled (which pauses it). Only the visible lines are built.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, Entry, Level, Pane};
use super::super::theme::Theme;
use fenceline_proto::display::{self, Tone};

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
    let d = display::describe(&ev.kind, &|n| app.node_name(n));
    let style = match d.tone {
        Tone::Base => theme.base,
        Tone::Ok => theme.ok,
        Tone::Warn => theme.warn,
        Tone::Danger => theme.danger,
        Tone::Conflict => theme.conflict,
        Tone::State(s) => super::state_symbol(s, theme).1,
    };
    (d.symbol, style, d.text)
}
