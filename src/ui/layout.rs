//! Where each pane goes for a terminal of a given size. Pure geometry: the
//! views draw into these rectangles, and the app asks them how many rows a
//! page holds (so `app` needs no `view`).

use ratatui::layout::Rect;

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
