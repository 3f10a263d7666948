//! Toasts: short-lived notices (action results, refusals) in the top-right
//! corner, newest at the bottom.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Span;
use ratatui::widgets::{Clear, Paragraph};

use super::super::app::{App, Level};
use super::super::theme::Theme;
use super::Areas;

pub fn draw(frame: &mut Frame, a: Areas, app: &App, theme: &Theme) {
    let w = a.full.width;
    let max_w = (w / 2).max(40).min(w.saturating_sub(2));
    let top = a.header.y + a.header.height;
    for (y, t) in (top..).zip(app.toasts.iter()) {
        if y + 1 >= a.footer.y {
            break;
        }
        let text = super::fit(&t.text, usize::from(max_w.saturating_sub(2)));
        let tw = (Span::raw(&text).width() as u16 + 2).min(max_w);
        let area = Rect::new(w.saturating_sub(tw + 1), y, tw, 1);
        let style = match t.level {
            Level::Ok | Level::Info => theme.toast_ok,
            Level::Warn => theme.toast_warn,
            Level::Error => theme.toast_err,
        };
        frame.render_widget(Clear, area);
        frame.render_widget(Paragraph::new(format!(" {text} ")).style(style), area);
    }
}
