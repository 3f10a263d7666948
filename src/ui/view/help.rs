//! The `?` help overlay, generated from the keymap (mutating actions are left
//! out in read-only mode), plus the fixed prompt keys and the symbol legend.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use super::super::app::App;
use super::super::keymap::{Action, PROMPT_KEYS};
use super::super::theme::Theme;
use fenceline_proto::api::DomainState;

/// The help text (also used to bound scrolling).
pub fn lines<'a>(app: &App, theme: &Theme) -> Vec<Line<'a>> {
    let mut out = Vec::new();
    if app.read_only {
        out.push(Line::from(Span::styled(
            "Read-only monitor: actions that change VMs are not available (and the daemon refuses them).",
            theme.warn,
        )));
        out.push(Line::from(""));
    }
    for (scope, rows) in app.keymap.help(app.read_only) {
        out.push(Line::from(Span::styled(scope.to_string(), theme.title)));
        for (keys, desc) in rows {
            out.push(Line::from(vec![
                Span::styled(format!("  {keys:<18}"), theme.hint_key),
                Span::raw(desc.to_string()),
            ]));
        }
        out.push(Line::from(""));
    }
    out.push(Line::from(Span::styled(
        "Filter and jump prompts",
        theme.title,
    )));
    for (k, d) in PROMPT_KEYS {
        out.push(Line::from(vec![
            Span::styled(format!("  {k:<18}"), theme.hint_key),
            Span::raw(d.to_string()),
        ]));
    }
    out.push(Line::from(""));
    out.push(Line::from(Span::styled("Symbols", theme.title)));
    let mut states = vec![Span::raw("  ")];
    for s in [
        DomainState::Running,
        DomainState::Paused,
        DomainState::Shutoff,
        DomainState::Crashed,
        DomainState::Blocked,
        DomainState::Shutdown,
        DomainState::Pmsuspended,
        DomainState::Nostate,
    ] {
        let (sym, style) = super::state_symbol(s, theme);
        states.push(Span::styled(
            format!("{sym} {}  ", fenceline_proto::display::state_label(s)),
            style,
        ));
    }
    out.push(Line::from(states));
    out.push(Line::from(vec![
        Span::styled("  !!", theme.conflict),
        Span::raw(" conflict: the VM runs on two hosts   "),
        Span::raw("1* local node   "),
        Span::styled("READ-ONLY", theme.badge_ro),
        Span::raw(" monitor"),
    ]));
    out.push(Line::from(Span::raw(
        "  Times are UTC. The console shows the engine's map; a greyed screen is the last state before the daemon went away.",
    )));
    out.push(Line::from(""));
    out.push(Line::from(Span::styled(
        format!(
            "{} closes this help · keymap: [console.keys] in fenceline.toml",
            app.keymap.keys_text(Action::CloseHelp)
        ),
        theme.dim,
    )));
    out
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme, scroll: u16) {
    let w = area.width.saturating_sub(4).min(100);
    let h = area.height.saturating_sub(2);
    let r = Rect::new(area.x + (area.width - w) / 2, area.y + 1, w, h);
    let text = lines(app, theme);
    let max_scroll = (text.len() as u16).saturating_sub(h.saturating_sub(2));
    let scroll = scroll.min(max_scroll);
    let mut extra = vec![];
    if max_scroll > 0 {
        extra.push(Span::styled(
            format!("{}/{} ", scroll, max_scroll),
            theme.dim,
        ));
    }
    let block = super::pane(super::title("Help", theme, extra), true, theme).style(theme.dialog);
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(text)
            .block(block)
            .scroll((scroll, 0))
            .wrap(ratatui::widgets::Wrap { trim: false }),
        r,
    );
}
