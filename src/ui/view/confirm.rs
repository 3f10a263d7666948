//! The confirmation dialogs. Fence off, reboot and start: the VM, its owner
//! node and the action. A node confirmed down: exactly what the operator
//! asserts, and the lost VMs that will be answered off. Cancel has the
//! focus at first.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};

use super::super::app::{App, Confirm, NodeConfirm};
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

/// The dialog's rectangle, centred: at most 72 wide and `h` high.
fn centred(area: Rect, h: u16) -> Rect {
    let w = area.width.saturating_sub(4).min(72);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// The two buttons and the key line under them.
fn buttons<'a>(app: &App, theme: &Theme, action: &str, on_action: bool) -> [Line<'a>; 2] {
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
    [
        Line::from(vec![
            Span::raw("        "),
            button("[ Cancel ]".into(), !on_action),
            Span::raw("   "),
            button(format!("[ {action} ]"), on_action),
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
    ]
}

/// Draws `lines` in a danger-bordered dialog titled `title`.
fn dialog(frame: &mut Frame, r: Rect, theme: &Theme, title: &str, lines: Vec<Line>) {
    let block = super::pane(super::title(title, theme, vec![]), true, theme)
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

/// What the operator asserts by confirming `node` down.
pub fn assertion(node: &str) -> String {
    format!(
        "You assert that {node} is powered off or isolated and none of its VMs run. \
         fenceline will then answer off for its lost VMs."
    )
}

pub fn draw_node(frame: &mut Frame, area: Rect, app: &App, theme: &Theme, c: &NodeConfirm) {
    let label = |s: &'static str| Span::styled(format!("  {s:<9}"), theme.dim);
    let name = app.node_name(c.nodeid);
    let lost = if c.lost.is_empty() {
        Span::styled("none", theme.dim)
    } else {
        Span::styled(
            c.lost
                .iter()
                .map(|(vm, st)| format!("{vm} ({})", state_label(*st)))
                .collect::<Vec<_>>()
                .join(", "),
            theme.warn,
        )
    };
    let mut lines = vec![
        Line::from(Span::styled(
            format!(" Confirm that {name} is down?"),
            theme.danger,
        )),
        Line::from(""),
        Line::from(vec![
            label("node"),
            Span::raw(format!("{name} ({})", c.nodeid)),
        ]),
        Line::from(vec![label("status"), Span::raw(c.why.clone())]),
        Line::from(vec![label("lost VMs"), lost]),
        Line::from(""),
        Line::from(Span::styled(format!(" {}", assertion(&name)), theme.danger)),
        Line::from(""),
    ];
    lines.extend(buttons(app, theme, "Confirm down", c.on_action));
    let r = centred(area, 15);
    dialog(frame, r, theme, &format!("Confirm: {name} down"), lines);
}

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme, c: &Confirm) {
    let r = centred(area, 13);
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
    let mut lines = vec![
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
    ];
    lines.extend(buttons(app, theme, &cap, c.on_action));
    dialog(frame, r, theme, &format!("Confirm: {what}"), lines);
}
