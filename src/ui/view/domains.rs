//! The domain table: name, state, owner, time in state, uuid, and a conflict
//! (`!!`) or lost-placement (`?`) marker. Only the rows on screen are built.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

use super::super::app::{App, Pane, SortKey};
use super::super::theme::Theme;
use fenceline_proto::display::state_label;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, theme: &Theme) {
    let focused = app.focus == Pane::Domains;
    let total = app.snapshot.as_ref().map(|s| s.domains.len()).unwrap_or(0);
    let mut extra = vec![];
    if app.filter.is_empty() {
        extra.push(Span::styled(format!("{total} "), theme.dim));
    } else {
        extra.push(Span::styled(
            format!("{} of {total} ", app.rows.len()),
            theme.dim,
        ));
        extra.push(Span::styled(
            format!("filter: {} ", super::fit(&app.filter.text, 30)),
            theme.warn,
        ));
    }
    let block = super::pane(super::title("Domains", theme, extra), focused, theme);
    let Some(s) = app.snapshot.as_deref() else {
        frame.render_widget(
            Paragraph::new(Span::styled(" waiting for the daemon…", theme.dim)).block(block),
            area,
        );
        return;
    };
    let inner_w = usize::from(area.width.saturating_sub(2));
    let h = usize::from(area.height.saturating_sub(3));
    let visible: Vec<usize> = app.rows.iter().skip(app.offset).take(h).copied().collect();

    // Column widths from what is visible: the name column as wide as the
    // longest visible name (8..32), the uuid gets what is left.
    let name_w = visible
        .iter()
        .map(|&i| s.domains[i].name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(8, 32);
    let (mark_w, state_w, owner_w, age_w) = (2usize, 13usize, 16usize, 5usize);
    let fixed = mark_w + name_w + state_w + owner_w + age_w + 5;
    let uuid_w = inner_w.saturating_sub(fixed);
    let show_uuid = uuid_w >= 8;

    let arrow = if app.sort.reverse { "▼" } else { "▲" };
    let head = |label: &str, key: SortKey| {
        if app.sort.key == key {
            format!("{label}{arrow}")
        } else {
            label.to_string()
        }
    };
    let mut header = vec![
        Cell::from(""),
        Cell::from(head("NAME", SortKey::Name)),
        Cell::from(head("STATE", SortKey::State)),
        Cell::from(head("OWNER", SortKey::Owner)),
        Cell::from(head("AGE", SortKey::Age)),
    ];
    if show_uuid {
        header.push(Cell::from(head("UUID", SortKey::Uuid)));
    }
    let rows: Vec<Row> = visible
        .iter()
        .map(|&i| {
            let d = &s.domains[i];
            let (sym, style) = super::state_symbol(d.state, theme);
            let owner = app.owner_text(d);
            let mut cells = vec![
                if d.conflict {
                    Cell::from(Span::styled("!!", theme.conflict))
                } else if d.migrating.is_some() {
                    // A live migration: active on the source and the target.
                    Cell::from(Span::styled("⇄ ", theme.warn))
                } else if d.placements.iter().any(|p| p.lost) {
                    // A lost placement: the VM may still run on a node
                    // that is not accounted for.
                    Cell::from(Span::styled("? ", theme.warn))
                } else {
                    Cell::from("")
                },
                Cell::from(super::fit(&d.name, name_w)),
                if d.migrating.is_some() {
                    Cell::from(Span::styled("⇄ migrating", theme.warn))
                } else {
                    Cell::from(Span::styled(
                        format!("{sym} {}", state_label(d.state)),
                        style,
                    ))
                },
                if d.conflict {
                    Cell::from(Span::styled(super::fit(&owner, owner_w), theme.conflict))
                } else if d.migrating.is_some() {
                    Cell::from(Span::styled(super::fit(&owner, owner_w), theme.warn))
                } else if d.owner.is_none() {
                    Cell::from(Span::styled(owner, theme.dim))
                } else {
                    Cell::from(super::fit(&owner, owner_w))
                },
                Cell::from(Span::styled(super::age(app.now, d.since), theme.dim)),
            ];
            if show_uuid {
                cells.push(Cell::from(Span::styled(
                    super::fit(&d.uuid, uuid_w),
                    theme.dim,
                )));
            }
            Row::new(cells)
        })
        .collect();
    let mut widths = vec![
        Constraint::Length(mark_w as u16),
        Constraint::Length(name_w as u16),
        Constraint::Length(state_w as u16),
        Constraint::Length(owner_w as u16),
        Constraint::Length(age_w as u16),
    ];
    if show_uuid {
        widths.push(Constraint::Min(8));
    }
    let empty = rows.is_empty();
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(theme.title))
        .block(block)
        .row_highlight_style(theme.selection);
    let mut state = TableState::default();
    if !empty {
        state.select(Some(app.sel.saturating_sub(app.offset)));
    }
    frame.render_stateful_widget(table, area, &mut state);
    if empty && area.height > 4 {
        let msg = if s.domains.is_empty() {
            " no domains in the cluster map".to_string()
        } else {
            format!(
                " no domain matches `{}` (esc clears the filter)",
                app.filter.text
            )
        };
        frame.render_widget(
            Paragraph::new(Span::styled(msg, theme.dim)),
            Rect::new(area.x + 1, area.y + 2, area.width.saturating_sub(2), 1),
        );
    }
}
