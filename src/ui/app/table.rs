//! The domain table: filter, sort, selection and paging.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Name,
    State,
    Owner,
    Age,
    Uuid,
}

impl SortKey {
    pub fn label(self) -> &'static str {
        match self {
            SortKey::Name => "name",
            SortKey::State => "state",
            SortKey::Owner => "owner",
            SortKey::Age => "age",
            SortKey::Uuid => "uuid",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub reverse: bool,
}

/// A filter: words that must all match; `!word` must not match; `name:`,
/// `state:`, `owner:` and `uuid:` restrict a word to one column. Matching is
/// case-insensitive substring matching; `conflict` also matches conflicts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub text: String,
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    negate: bool,
    field: Option<Field>,
    /// Lower-case.
    needle: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    State,
    Owner,
    Uuid,
}

impl Filter {
    pub fn parse(text: &str) -> Filter {
        let terms = text
            .split_whitespace()
            .filter_map(|w| {
                let (negate, w) = match w.strip_prefix('!') {
                    Some(r) => (true, r),
                    None => (false, w),
                };
                let (field, w) = match w.split_once(':') {
                    Some(("name", r)) => (Some(Field::Name), r),
                    Some(("state", r)) => (Some(Field::State), r),
                    Some(("owner", r)) | Some(("node", r)) => (Some(Field::Owner), r),
                    Some(("uuid", r)) => (Some(Field::Uuid), r),
                    _ => (None, w),
                };
                if w.is_empty() {
                    return None;
                }
                Some(Term {
                    negate,
                    field,
                    needle: w.to_lowercase(),
                })
            })
            .collect();
        Filter {
            text: text.to_string(),
            terms,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// `owner` is the owner's display name ("node2"), or "" when none.
    pub fn matches(&self, d: &DomainView, owner: &str) -> bool {
        self.terms.iter().all(|t| {
            let state = state_label(d.state);
            let hit = match t.field {
                Some(Field::Name) => contains_ci(&d.name, &t.needle),
                Some(Field::State) => contains_ci(state, &t.needle),
                Some(Field::Owner) => contains_ci(owner, &t.needle),
                Some(Field::Uuid) => contains_ci(&d.uuid, &t.needle),
                None => {
                    contains_ci(&d.name, &t.needle)
                        || contains_ci(state, &t.needle)
                        || contains_ci(owner, &t.needle)
                        || contains_ci(&d.uuid, &t.needle)
                        || (d.conflict && "conflict".contains(t.needle.as_str()))
                }
            };
            hit != t.negate
        })
    }
}

/// ASCII-case-insensitive substring test without allocating; `needle` is
/// lower-case. (Non-ASCII letters match case-sensitively.)
pub fn contains_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    if n.is_empty() {
        return true;
    }
    if n.len() > h.len() {
        return false;
    }
    h.windows(n.len())
        .any(|w| w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b))
}

/// Counts for the header, computed once per snapshot (not per frame).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub running: usize,
    pub shutoff: usize,
    pub other: usize,
    pub conflicts: usize,
    /// Everything the daemon counted as dropped or malformed.
    pub drops: u64,
}

impl Summary {
    pub(super) fn of(s: &Snapshot) -> Summary {
        let mut out = Summary::default();
        for d in &s.domains {
            match d.state {
                DomainState::Running => out.running += 1,
                DomainState::Shutoff => out.shutoff += 1,
                _ => out.other += 1,
            }
            out.conflicts += usize::from(d.conflict);
        }
        let c = &s.counters;
        out.drops = c.malformed_fence_agents
            + c.malformed_own
            + c.dropped_inputs
            + c.dropped_events
            + c.dropped_effects
            + c.dropped_libvirt_events
            + c.dropped_fence_packets
            + c.dropped_audit
            + c.dropped_hook_events;
        out
    }
}

/// Order of states when sorting: what needs attention first.
pub fn state_rank(s: DomainState) -> u8 {
    match s {
        DomainState::Crashed => 0,
        DomainState::Paused => 1,
        DomainState::Blocked => 2,
        DomainState::Shutdown => 3,
        DomainState::Pmsuspended => 4,
        DomainState::Running => 5,
        DomainState::Nostate => 6,
        DomainState::Shutoff => 7,
    }
}

impl App {
    /// Rows of the domain table that fit on screen.
    pub fn table_rows(&self) -> usize {
        crate::ui::layout::layout(self.size.0, self.size.1, self.node_count())
            .domains_rows()
            .max(1)
    }

    /// Rebuilds `rows` (filter, then sort) and re-finds the selection.
    pub fn recompute(&mut self) {
        let Some(s) = self.snapshot.clone() else {
            self.rows.clear();
            return;
        };
        let owner_names: Vec<String> = s.domains.iter().map(|d| self.owner_text(d)).collect();
        let mut rows: Vec<usize> = if self.filter.is_empty() {
            (0..s.domains.len()).collect()
        } else {
            (0..s.domains.len())
                .filter(|&i| self.filter.matches(&s.domains[i], &owner_names[i]))
                .collect()
        };
        let d = &s.domains;
        let by_name = |a: &usize, b: &usize| {
            d[*a]
                .name
                .cmp(&d[*b].name)
                .then(d[*a].uuid.cmp(&d[*b].uuid))
        };
        match self.sort.key {
            SortKey::Name => rows.sort_unstable_by(by_name),
            SortKey::State => rows.sort_unstable_by(|a, b| {
                state_rank(d[*a].state)
                    .cmp(&state_rank(d[*b].state))
                    .then_with(|| by_name(a, b))
            }),
            SortKey::Owner => rows.sort_unstable_by(|a, b| {
                // Conflicts first (they need attention), unowned last.
                let rank = |i: usize| (!d[i].conflict, d[i].owner.is_none());
                rank(*a)
                    .cmp(&rank(*b))
                    .then_with(|| owner_names[*a].cmp(&owner_names[*b]))
                    .then_with(|| by_name(a, b))
            }),
            // Shortest time in state first.
            SortKey::Age => rows
                .sort_unstable_by(|a, b| d[*b].since.cmp(&d[*a].since).then_with(|| by_name(a, b))),
            SortKey::Uuid => rows.sort_unstable_by(|a, b| d[*a].uuid.cmp(&d[*b].uuid)),
        }
        if self.sort.reverse {
            rows.reverse();
        }
        self.rows = rows;
        if let Some(u) = &self.sel_uuid
            && let Some(pos) = self.rows.iter().position(|&i| &d[i].uuid == u)
        {
            self.sel = pos;
        }
        self.sel = self.sel.min(self.rows.len().saturating_sub(1));
        self.sel_uuid = self.rows.get(self.sel).map(|&i| d[i].uuid.clone());
        self.keep_visible();
    }

    /// Adjusts the table offset so the selection is on screen.
    pub(super) fn keep_visible(&mut self) {
        let h = self.table_rows();
        let max_off = self.rows.len().saturating_sub(h);
        if self.sel < self.offset {
            self.offset = self.sel;
        } else if self.sel >= self.offset + h {
            self.offset = self.sel + 1 - h;
        }
        self.offset = self.offset.min(max_off);
    }

    pub(super) fn select(&mut self, pos: usize) {
        if self.rows.is_empty() {
            self.sel = 0;
            self.sel_uuid = None;
            return;
        }
        self.sel = pos.min(self.rows.len() - 1);
        self.sel_uuid = self.selected().map(|d| d.uuid.clone());
        self.keep_visible();
    }

    pub(super) fn page(&self) -> usize {
        match self.focus {
            Pane::Events => self.event_rows(),
            _ => self.table_rows(),
        }
        .saturating_sub(1)
        .max(1)
    }

    pub(super) fn move_by(&mut self, delta: isize) {
        match self.focus {
            Pane::Domains => {
                let pos = (self.sel as isize).saturating_add(delta).max(0) as usize;
                self.select(pos);
            }
            Pane::Nodes => {
                let n = self.node_count();
                let pos = (self.node_sel as isize).saturating_add(delta).max(0) as usize;
                self.node_sel = pos.min(n.saturating_sub(1));
            }
            Pane::Events => {
                let max = self.events.len().saturating_sub(self.event_rows());
                let pos = (self.event_scroll as isize).saturating_add(delta).max(0) as usize;
                self.event_scroll = pos.min(max);
                // Reading back through history freezes the pane, like a pager.
                if self.event_scroll > 0 {
                    self.set_paused(true);
                }
            }
        }
    }

    pub(super) fn sort_by(&mut self, key: SortKey) {
        if self.sort.key == key {
            self.sort.reverse = !self.sort.reverse;
        } else {
            self.sort = Sort {
                key,
                reverse: false,
            };
        }
        self.recompute();
    }

    pub fn set_filter(&mut self, text: &str) {
        self.filter = Filter::parse(text);
        self.recompute();
    }
}
