//! The bottom line: key hints generated from the keymap, or the filter / jump
//! prompt with a live preview.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::app::{App, JumpTarget, Mode};
use super::super::theme::Theme;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let line = match &app.mode {
        Mode::Filter { input, .. } => {
            let total = app.snapshot.as_ref().map(|s| s.domains.len()).unwrap_or(0);
            Line::from(vec![
                Span::styled("/", theme.hint_key),
                Span::raw(input.clone()),
                Span::styled("█", theme.base),
                Span::styled(
                    format!(
                        "  {} of {total} match · enter keep · esc cancel · !word excludes · state: owner: name: uuid:",
                        app.rows.len()
                    ),
                    theme.dim,
                ),
            ])
        }
        Mode::Jump { input } => {
            let preview = match app.jump_target(input) {
                None if input.trim().is_empty() => "type a domain, node, uuid, or q".to_string(),
                None => "no match".to_string(),
                Some(JumpTarget::Quit) => "enter quits".to_string(),
                Some(JumpTarget::Help) => "enter opens the help".to_string(),
                Some(JumpTarget::Domain(i)) => app
                    .snapshot
                    .as_ref()
                    .and_then(|s| s.domains.get(i))
                    .map(|d| format!("→ domain {}", d.name))
                    .unwrap_or_default(),
                Some(JumpTarget::Node(i)) => app
                    .snapshot
                    .as_ref()
                    .and_then(|s| s.nodes.get(i))
                    .map(|n| format!("→ node {}", app.node_name(n.nodeid)))
                    .unwrap_or_default(),
            };
            Line::from(vec![
                Span::styled(":", theme.hint_key),
                Span::raw(input.clone()),
                Span::styled("█", theme.base),
                Span::styled(format!("  {preview} · esc cancel"), theme.dim),
            ])
        }
        _ => {
            // Whole hints only, in the keymap's order of importance.
            let mut spans = Vec::new();
            let mut used = 0;
            for (key, label) in app.keymap.hints(app.read_only) {
                let k = format!(" {key}");
                let l = format!(" {label} ");
                let w = k.chars().count() + l.chars().count();
                if used + w > usize::from(area.width) {
                    break;
                }
                used += w;
                spans.push(Span::styled(k, theme.hint_key));
                spans.push(Span::styled(l, theme.dim));
            }
            Line::from(spans)
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}
