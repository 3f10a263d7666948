//! The confirmation dialog for fence off, reboot and start: it names the VM,
//! its owner node and the action. Cancel has the focus at first.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::super::app::{App, Confirm};
use super::super::keymap::Action;
use super::super::theme::Theme;
use fenceline_proto::api::FenceOp;
use fenceline_proto::display::{op_label, state_label};

fn consequence(op: FenceOp) -> &'static str {
    match op {
        FenceOp::Off => "power off at once, no guest shutdown",
        FenceOp::Reboot => "power off at once, then start again",
        FenceOp::On => "start the VM on the host that has it defined",
        _ => "",
    }
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme, c: &Confirm) {
    let w = area.width.saturating_sub(4).min(72);
    let h = 13u16.min(area.height);
    let r = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let what = op_label(c.op);
    let label = |s: &'static str| Span::styled(format!("  {s:<8}"), theme.dim);
    let (sym, style) = super::state_symbol(c.state, theme);
    let cap = {
        let mut t = what.to_string();
        if let Some(f) = t.get_mut(0..1) {
            f.make_ascii_uppercase();
        }
        t
    };
    let button = |text: String, focused: bool| {
        Span::styled(
            text,
            if focused {
                theme.button_focus
            } else {
                theme.button
            },
        )
    };
    let lines = vec![
        Line::from(Span::styled(
            match c.owner {
                Some(o) => format!(" {cap} {} on {}?", c.domain, app.node_name(o)),
                None => format!(" {cap} {}? It has no single owner.", c.domain),
            },
            theme.danger,
        )),
        Line::from(""),
        Line::from(vec![label("VM"), Span::raw(c.domain.clone())]),
        Line::from(vec![label("uuid"), Span::styled(c.uuid.clone(), theme.dim)]),
        Line::from(vec![
            label("owner"),
            if c.conflict {
                Span::styled(c.owner_text.clone(), theme.conflict)
            } else {
                Span::raw(c.owner_text.clone())
            },
        ]),
        Line::from(vec![
            label("state"),
            Span::styled(format!("{sym} {}", state_label(c.state)), style),
        ]),
        Line::from(vec![
            label("action"),
            Span::styled(what.to_string(), theme.danger),
            Span::raw(format!(": {}", consequence(c.op))),
        ]),
        Line::from(""),
        Line::from(vec![
            Span::raw("        "),
            button("[ Cancel ]".into(), !c.on_action),
            Span::raw("   "),
            button(format!("[ {cap} ]"), c.on_action),
        ]),
        Line::from(Span::styled(
            format!(
                "  {} confirm · {} cancel · {} switch · {} press",
                app.keymap.keys_text(Action::Confirm),
                app.keymap.keys_text(Action::Cancel),
                app.keymap.keys_text(Action::SwitchButton),
                app.keymap.keys_text(Action::Press),
            ),
            theme.dim,
        )),
    ];
    let title = format!("Confirm: {what}");
    let block = super::pane(super::title(&title, theme, vec![]), true, theme)
        .border_style(theme.danger)
        .style(theme.dialog);
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        r,
    );
}
