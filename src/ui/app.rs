//! The console's state and its one update function. Pure: no I/O, no clock
//! (time arrives as [`Msg::Tick`]), no terminal. The loop in `ui/mod.rs` feeds
//! it messages and carries out the [`Effect`]s it returns; the views only
//! read it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use crossterm::event::{KeyCode, KeyEvent};

use super::keymap::{Action, Key, Keymap, Scope};
use fenceline_proto::api::{
    DomainState, DomainView, Event, EventKind, FenceOp, FenceResult, Millis, NodeId, Snapshot,
};
use fenceline_proto::display::{op_label, state_label};

/// Events kept for the event pane.
pub const EVENT_CAPACITY: usize = 5000;
/// Recent events kept per domain (detail pane).
pub const DOMAIN_HISTORY: usize = 20;
/// Fence records kept per domain (detail pane).
pub const FENCE_HISTORY: usize = 20;
/// How long a toast stays.
pub const TOAST_MS: Millis = 6000;
/// How long an error toast stays.
pub const TOAST_ERROR_MS: Millis = 10_000;
/// Toasts shown at once.
pub const MAX_TOASTS: usize = 4;

/// Everything that can happen to the console.
#[derive(Debug, Clone)]
pub enum Msg {
    Key(KeyEvent),
    Resize(u16, u16),
    /// The wall clock; also ages toasts.
    Tick(Millis),
    /// Both streams are attached; the event backlog follows.
    Connected,
    Snapshot(Arc<Snapshot>),
    Event(Box<Event>),
    /// End of the event backlog after (re)connecting.
    BacklogEnd,
    /// The daemon dropped this many events for this client.
    EventsDropped(u64),
    /// The connection is lost (or could not be made); the next try is in
    /// `retry_in_ms`.
    Disconnected {
        reason: String,
        retry_in_ms: u64,
    },
    /// The answer to an [`Effect::Fence`].
    ActionDone {
        id: u64,
        op: FenceOp,
        domain: String,
        outcome: Result<FenceOutcome, String>,
    },
}

/// What the daemon answered to a fence request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceOutcome {
    pub result: FenceResult,
    pub acted_by: Option<NodeId>,
    pub duration_ms: u64,
    pub detail: Option<String>,
}

/// What the loop must do for the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send `Request::Fence` on the read-write socket; answer with
    /// [`Msg::ActionDone`]. The loop refuses it in read-only mode.
    Fence {
        id: u64,
        op: FenceOp,
        domain: String,
    },
}

/// The state of the link to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conn {
    Connecting,
    Connected {
        since: Millis,
    },
    Disconnected {
        since: Millis,
        reason: String,
        retry_at: Millis,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Domains,
    Events,
    Nodes,
}

impl Pane {
    fn next(self) -> Pane {
        match self {
            Pane::Domains => Pane::Events,
            Pane::Events => Pane::Nodes,
            Pane::Nodes => Pane::Domains,
        }
    }
    fn prev(self) -> Pane {
        match self {
            Pane::Domains => Pane::Nodes,
            Pane::Events => Pane::Domains,
            Pane::Nodes => Pane::Events,
        }
    }
}

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

/// A destructive action waiting for confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub op: FenceOp,
    pub domain: String,
    pub uuid: String,
    pub state: DomainState,
    pub owner: Option<NodeId>,
    /// "node2 (2)", or where a conflicted / unowned VM is.
    pub owner_text: String,
    pub conflict: bool,
    /// The action button has focus (Cancel has it at first).
    pub on_action: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Typing a filter; `before` comes back on Esc.
    Filter {
        input: String,
        before: String,
    },
    Jump {
        input: String,
    },
    Help {
        scroll: u16,
    },
    Confirm(Confirm),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Ok,
    Warn,
    Error,
}

/// A line of the event pane: an engine event, or something the console
/// itself has to say (action results, drops, connection changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Event(Box<Event>),
    Local {
        time: Millis,
        level: Level,
        text: String,
    },
}

impl Entry {
    pub fn time(&self) -> Millis {
        match self {
            Entry::Event(e) => e.time,
            Entry::Local { time, .. } => *time,
        }
    }
}

/// One fence request on a domain, from the event stream or from this console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceRecord {
    pub time: Millis,
    pub op: FenceOp,
    pub result: Option<FenceResult>,
    pub acted_by: Option<NodeId>,
    pub duration_ms: u64,
    /// "this console", or the event's source (`control:uid=0`, `cpg:node2`, ...).
    pub source: String,
    pub detail: Option<String>,
    /// The engine's phase label: "result" or "acted"; "console" for ours.
    pub phase: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toast {
    pub level: Level,
    pub text: String,
    pub until: Millis,
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
    fn of(s: &Snapshot) -> Summary {
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

/// The console.
#[derive(Debug, Clone)]
pub struct App {
    pub read_only: bool,
    pub keymap: Keymap,
    /// The socket the console is attached to (header, messages).
    pub target: String,
    pub now: Millis,
    pub conn: Conn,
    pub snapshot: Option<Arc<Snapshot>>,
    /// Node id → name, from the latest snapshot.
    pub names: BTreeMap<NodeId, String>,
    pub summary: Summary,
    /// Indices into `snapshot.domains`, filtered and sorted; rebuilt when the
    /// snapshot, the filter or the sort change, never per frame.
    pub rows: Vec<usize>,
    pub sort: Sort,
    pub filter: Filter,
    /// Index into `rows` of the selected domain.
    pub sel: usize,
    /// The selected domain's uuid: the selection follows it across snapshots.
    pub sel_uuid: Option<String>,
    /// First visible row of the domain table.
    pub offset: usize,
    pub node_sel: usize,
    pub focus: Pane,
    /// Oldest first.
    pub events: VecDeque<Entry>,
    /// Frozen: new entries wait in `held` until resumed.
    pub paused: bool,
    pub held: Vec<Entry>,
    /// Newest entries skipped at the top of the event pane.
    pub event_scroll: usize,
    pub history: HashMap<String, VecDeque<Entry>>,
    pub fences: HashMap<String, VecDeque<FenceRecord>>,
    /// Highest engine event seq seen; a reconnect skips the backlog up to it.
    pub last_seq: Option<u64>,
    backlog: Option<Vec<Event>>,
    pub mode: Mode,
    pub toasts: Vec<Toast>,
    /// Fence requests sent and not answered yet: (id, op, domain).
    pub in_flight: Vec<(u64, FenceOp, String)>,
    /// Notes waiting for the first backlog (see [`App::note`]).
    notes: Vec<String>,
    next_id: u64,
    pub size: (u16, u16),
    pub quit: bool,
    /// Something visible changed since the last frame.
    pub dirty: bool,
}

impl App {
    pub fn new(read_only: bool, keymap: Keymap, target: impl Into<String>, now: Millis) -> App {
        App {
            read_only,
            keymap,
            target: target.into(),
            now,
            conn: Conn::Connecting,
            snapshot: None,
            names: BTreeMap::new(),
            summary: Summary::default(),
            rows: Vec::new(),
            sort: Sort {
                key: SortKey::Name,
                reverse: false,
            },
            filter: Filter::default(),
            sel: 0,
            sel_uuid: None,
            offset: 0,
            node_sel: 0,
            focus: Pane::Domains,
            events: VecDeque::new(),
            paused: false,
            held: Vec::new(),
            event_scroll: 0,
            history: HashMap::new(),
            fences: HashMap::new(),
            last_seq: None,
            backlog: None,
            mode: Mode::Normal,
            toasts: Vec::new(),
            in_flight: Vec::new(),
            notes: Vec::new(),
            next_id: 1,
            size: (80, 24),
            quit: false,
            dirty: true,
        }
    }

    // ----- read helpers for the views ----------------------------------------

    /// "node2", or "node7" for an id without a name.
    pub fn node_name(&self, id: NodeId) -> String {
        match self.names.get(&id) {
            Some(n) => n.clone(),
            None => format!("node{id}"),
        }
    }

    pub fn selected(&self) -> Option<&DomainView> {
        let s = self.snapshot.as_ref()?;
        self.rows.get(self.sel).and_then(|&i| s.domains.get(i))
    }

    pub fn connected(&self) -> bool {
        matches!(self.conn, Conn::Connected { .. })
    }

    /// Owner column text: "node2", "CONFLICT node1,node2", or "-".
    pub fn owner_text(&self, d: &DomainView) -> String {
        if d.conflict {
            let on: Vec<String> = d
                .placements
                .iter()
                .filter(|p| p.state.is_active())
                .map(|p| self.node_name(p.nodeid))
                .collect();
            return format!("CONFLICT {}", on.join(","));
        }
        match d.owner {
            Some(o) => self.node_name(o),
            None => "-".into(),
        }
    }

    /// Rows of the domain table that fit on screen.
    pub fn table_rows(&self) -> usize {
        super::view::layout(self.size.0, self.size.1, self.node_count())
            .domains_rows()
            .max(1)
    }

    fn event_rows(&self) -> usize {
        super::view::layout(self.size.0, self.size.1, self.node_count())
            .events_rows()
            .max(1)
    }

    pub fn node_count(&self) -> usize {
        self.snapshot.as_ref().map(|s| s.nodes.len()).unwrap_or(0)
    }

    /// Number of events shown (not counting held ones).
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    // ----- update --------------------------------------------------------------

    /// Applies one message; returns what the loop must do.
    pub fn update(&mut self, msg: Msg) -> Vec<Effect> {
        match msg {
            Msg::Tick(now) => {
                let second = now / 1000 != self.now / 1000;
                self.now = now;
                let before = self.toasts.len();
                self.toasts.retain(|t| t.until > now);
                if second || before != self.toasts.len() {
                    self.dirty = true;
                }
                Vec::new()
            }
            Msg::Resize(w, h) => {
                self.size = (w, h);
                self.keep_visible();
                self.dirty = true;
                Vec::new()
            }
            Msg::Connected => {
                self.conn = Conn::Connected { since: self.now };
                self.backlog = Some(Vec::new());
                self.dirty = true;
                Vec::new()
            }
            Msg::Snapshot(s) => {
                self.set_snapshot(s);
                Vec::new()
            }
            Msg::Event(e) => {
                match &mut self.backlog {
                    Some(b) => b.push(*e),
                    None => self.push_event(*e),
                }
                Vec::new()
            }
            Msg::BacklogEnd => {
                self.end_backlog();
                Vec::new()
            }
            Msg::EventsDropped(n) => {
                self.push_local(
                    Level::Warn,
                    format!("{n} events dropped: the daemon could not send them fast enough"),
                );
                Vec::new()
            }
            Msg::Disconnected {
                reason,
                retry_in_ms,
            } => {
                let was_connected = self.connected();
                let first = !matches!(self.conn, Conn::Disconnected { .. });
                self.conn = Conn::Disconnected {
                    since: match &self.conn {
                        Conn::Disconnected { since, .. } => *since,
                        _ => self.now,
                    },
                    reason: reason.clone(),
                    retry_at: self.now + retry_in_ms,
                };
                self.backlog = None;
                self.flush_notes();
                if was_connected || first {
                    self.push_local(Level::Error, format!("disconnected: {reason}"));
                }
                self.dirty = true;
                Vec::new()
            }
            Msg::ActionDone {
                id,
                op,
                domain,
                outcome,
            } => {
                self.action_done(id, op, domain, outcome);
                Vec::new()
            }
            Msg::Key(k) => match Key::from_event(&k) {
                Some(key) => {
                    self.dirty = true;
                    self.key(key)
                }
                None => Vec::new(),
            },
        }
    }

    fn set_snapshot(&mut self, s: Arc<Snapshot>) {
        self.names = s
            .nodes
            .iter()
            .filter_map(|n| n.name.clone().map(|name| (n.nodeid, name)))
            .collect();
        self.node_sel = self.node_sel.min(s.nodes.len().saturating_sub(1));
        self.summary = Summary::of(&s);
        self.snapshot = Some(s);
        self.recompute();
        self.refresh_confirm();
        self.dirty = true;
    }

    /// An open confirmation always names the VM's current owner and state;
    /// if the VM left the map, the dialog closes without doing anything.
    fn refresh_confirm(&mut self) {
        let Mode::Confirm(c) = &self.mode else {
            return;
        };
        let found = self
            .snapshot
            .as_ref()
            .and_then(|s| s.domains.iter().find(|d| d.uuid == c.uuid))
            .cloned();
        match found {
            Some(d) => {
                let mut c = c.clone();
                c.state = d.state;
                c.owner = d.owner;
                c.conflict = d.conflict;
                c.owner_text = self.owner_description(&d);
                self.mode = Mode::Confirm(c);
            }
            None => {
                let text = format!(
                    "{} left the cluster map; {} not sent",
                    c.domain,
                    op_label(c.op)
                );
                self.mode = Mode::Normal;
                self.toast(Level::Warn, text);
            }
        }
    }

    /// "node2 (2)", or why there is no single owner.
    fn owner_description(&self, d: &DomainView) -> String {
        if d.conflict {
            format!("none: {} (running on several hosts)", self.owner_text(d))
        } else {
            match d.owner {
                Some(o) => format!("{} ({o})", self.node_name(o)),
                None => "none (not running anywhere)".to_string(),
            }
        }
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
    fn keep_visible(&mut self) {
        let h = self.table_rows();
        let max_off = self.rows.len().saturating_sub(h);
        if self.sel < self.offset {
            self.offset = self.sel;
        } else if self.sel >= self.offset + h {
            self.offset = self.sel + 1 - h;
        }
        self.offset = self.offset.min(max_off);
    }

    fn select(&mut self, pos: usize) {
        if self.rows.is_empty() {
            self.sel = 0;
            self.sel_uuid = None;
            return;
        }
        self.sel = pos.min(self.rows.len() - 1);
        self.sel_uuid = self.selected().map(|d| d.uuid.clone());
        self.keep_visible();
    }

    fn end_backlog(&mut self) {
        let Some(backlog) = self.backlog.take() else {
            return;
        };
        // Same daemon as before: skip what we already have. A restarted
        // daemon numbers from scratch: take everything.
        let max = backlog.iter().map(|e| e.seq).max();
        let skip_to = match (self.last_seq, max) {
            (Some(last), Some(m)) if m >= last => Some(last),
            _ => None,
        };
        if self.last_seq.is_some() && skip_to.is_none() && !backlog.is_empty() {
            self.push_local(
                Level::Info,
                "the daemon restarted: event numbering begins anew".into(),
            );
            self.last_seq = None;
        }
        for e in backlog {
            if skip_to.is_some_and(|s| e.seq <= s) {
                continue;
            }
            self.push_event(e);
        }
        self.flush_notes();
        self.dirty = true;
    }

    fn push_event(&mut self, e: Event) {
        self.last_seq = Some(self.last_seq.map_or(e.seq, |l| l.max(e.seq)));
        if let Some(name) = self.domain_of(&e) {
            let h = self.history.entry(name.clone()).or_default();
            h.push_back(Entry::Event(Box::new(e.clone())));
            if h.len() > DOMAIN_HISTORY {
                h.pop_front();
            }
            if let EventKind::Fence {
                phase,
                op,
                source,
                acted_by,
                result,
                duration_ms,
                detail,
                ..
            } = &e.kind
            {
                let rec = FenceRecord {
                    time: e.time,
                    op: *op,
                    result: Some(*result),
                    acted_by: *acted_by,
                    duration_ms: *duration_ms,
                    source: source.clone(),
                    detail: detail.clone(),
                    phase: match phase {
                        fenceline_proto::api::FencePhase::Result => "result",
                        fenceline_proto::api::FencePhase::Acted => "acted",
                    },
                };
                self.push_fence(name, rec);
            }
            if self.history.len() > HISTORY_PRUNE_AT {
                self.prune_history();
            }
        }
        self.push_entry(Entry::Event(Box::new(e)));
    }

    /// The domain (by name) an event is about, if any.
    fn domain_of(&self, e: &Event) -> Option<String> {
        match &e.kind {
            EventKind::Domain { name, .. } => Some(name.clone()),
            EventKind::Fence { domain, .. } => Some(self.domain_name(domain)),
            EventKind::NetworkHook { port: Some(p), .. } => p.owner.clone(),
            _ => None,
        }
    }

    /// A fence request may name a VM by uuid; the panes key by name.
    fn domain_name(&self, name_or_uuid: &str) -> String {
        self.snapshot
            .as_ref()
            .and_then(|s| {
                s.domains
                    .iter()
                    .find(|d| d.uuid.eq_ignore_ascii_case(name_or_uuid))
                    .map(|d| d.name.clone())
            })
            .unwrap_or_else(|| name_or_uuid.to_string())
    }

    fn push_fence(&mut self, name: String, rec: FenceRecord) {
        let f = self.fences.entry(name).or_default();
        f.push_back(rec);
        if f.len() > FENCE_HISTORY {
            f.pop_front();
        }
    }

    /// Forgets the history of domains that are no longer in the map.
    fn prune_history(&mut self) {
        let Some(s) = &self.snapshot else { return };
        let live: std::collections::HashSet<&str> =
            s.domains.iter().map(|d| d.name.as_str()).collect();
        self.history.retain(|k, _| live.contains(k.as_str()));
        self.fences.retain(|k, _| live.contains(k.as_str()));
    }

    /// An informational line for the event pane (the demo's hints). Shown
    /// once the first event backlog is in, so it lands on top of it.
    pub fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    fn flush_notes(&mut self) {
        // Newest is shown first: push the first note last, so it is on top.
        for n in std::mem::take(&mut self.notes).into_iter().rev() {
            self.push_local(Level::Info, n);
        }
    }

    fn push_local(&mut self, level: Level, text: String) {
        self.push_entry(Entry::Local {
            time: self.now,
            level,
            text,
        });
    }

    fn push_entry(&mut self, e: Entry) {
        if self.paused {
            self.held.push(e);
            if self.held.len() > EVENT_CAPACITY {
                let n = self.held.len() - EVENT_CAPACITY;
                self.held.drain(..n);
            }
        } else {
            self.events.push_back(e);
            if self.events.len() > EVENT_CAPACITY {
                self.events.pop_front();
            }
        }
        self.dirty = true;
    }

    fn toast(&mut self, level: Level, text: String) {
        let life = if level == Level::Error {
            TOAST_ERROR_MS
        } else {
            TOAST_MS
        };
        self.toasts.push(Toast {
            level,
            text,
            until: self.now + life,
        });
        if self.toasts.len() > MAX_TOASTS {
            self.toasts.remove(0);
        }
        self.dirty = true;
    }

    fn set_paused(&mut self, paused: bool) {
        if self.paused == paused {
            return;
        }
        self.paused = paused;
        if !paused {
            for e in std::mem::take(&mut self.held) {
                self.events.push_back(e);
            }
            while self.events.len() > EVENT_CAPACITY {
                self.events.pop_front();
            }
            self.event_scroll = 0;
        }
    }

    fn action_done(
        &mut self,
        id: u64,
        op: FenceOp,
        domain: String,
        outcome: Result<FenceOutcome, String>,
    ) {
        self.in_flight.retain(|(i, _, _)| *i != id);
        let what = op_label(op);
        match outcome {
            Ok(o) => {
                let by = o
                    .acted_by
                    .map(|n| format!(" by {}", self.node_name(n)))
                    .unwrap_or_default();
                let why = o
                    .detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                let ok = o.result == FenceResult::Ok;
                let text = format!(
                    "{what} {domain}: {}{by} ({} ms){why}",
                    o.result, o.duration_ms
                );
                let level = if ok { Level::Ok } else { Level::Error };
                self.toast(level, format!("{} {text}", if ok { "✓" } else { "✗" }));
                self.push_local(level, format!("console: {text}"));
                self.push_fence(
                    domain,
                    FenceRecord {
                        time: self.now,
                        op,
                        result: Some(o.result),
                        acted_by: o.acted_by,
                        duration_ms: o.duration_ms,
                        source: "this console".into(),
                        detail: o.detail,
                        phase: "console",
                    },
                );
            }
            Err(e) => {
                let text = format!("{what} {domain}: no answer: {e}");
                self.toast(Level::Error, format!("✗ {text}"));
                self.push_local(Level::Error, format!("console: {text}"));
                self.push_fence(
                    domain,
                    FenceRecord {
                        time: self.now,
                        op,
                        result: None,
                        acted_by: None,
                        duration_ms: 0,
                        source: "this console".into(),
                        detail: Some(e),
                        phase: "console",
                    },
                );
            }
        }
    }

    // ----- keys ------------------------------------------------------------------

    fn key(&mut self, key: Key) -> Vec<Effect> {
        match self.mode.clone() {
            Mode::Normal => self.key_normal(key),
            Mode::Filter { input, before } => {
                self.key_filter(key, input, before);
                Vec::new()
            }
            Mode::Jump { input } => {
                self.key_jump(key, input);
                Vec::new()
            }
            Mode::Help { scroll } => {
                self.key_help(key, scroll);
                Vec::new()
            }
            Mode::Confirm(c) => self.key_confirm(key, c),
        }
    }

    fn key_normal(&mut self, key: Key) -> Vec<Effect> {
        let Some(action) = self.keymap.action(Scope::Main, key) else {
            return Vec::new();
        };
        match action {
            Action::Quit => self.quit = true,
            Action::Help => self.mode = Mode::Help { scroll: 0 },
            Action::Back => {
                if self.paused || self.event_scroll > 0 {
                    self.set_paused(false);
                    self.event_scroll = 0;
                } else if !self.filter.is_empty() {
                    self.set_filter("");
                } else {
                    self.focus = Pane::Domains;
                }
            }
            Action::Filter => {
                self.mode = Mode::Filter {
                    input: self.filter.text.clone(),
                    before: self.filter.text.clone(),
                }
            }
            Action::Jump => {
                self.mode = Mode::Jump {
                    input: String::new(),
                }
            }
            Action::NextPane => self.focus = self.focus.next(),
            Action::PrevPane => self.focus = self.focus.prev(),
            Action::Up => self.move_by(-1),
            Action::Down => self.move_by(1),
            Action::PageUp => self.move_by(-(self.page() as isize)),
            Action::PageDown => self.move_by(self.page() as isize),
            Action::Top => self.move_by(isize::MIN / 2),
            Action::Bottom => self.move_by(isize::MAX / 2),
            Action::SortName => self.sort_by(SortKey::Name),
            Action::SortState => self.sort_by(SortKey::State),
            Action::SortOwner => self.sort_by(SortKey::Owner),
            Action::SortAge => self.sort_by(SortKey::Age),
            Action::SortUuid => self.sort_by(SortKey::Uuid),
            Action::SortReverse => {
                self.sort.reverse = !self.sort.reverse;
                self.recompute();
            }
            Action::PauseEvents => {
                let p = !self.paused;
                self.set_paused(p);
            }
            Action::FenceOff => self.ask(FenceOp::Off),
            Action::Reboot => self.ask(FenceOp::Reboot),
            Action::Start => self.ask(FenceOp::On),
            Action::CloseHelp
            | Action::Confirm
            | Action::Cancel
            | Action::SwitchButton
            | Action::Press => {}
        }
        Vec::new()
    }

    fn page(&self) -> usize {
        match self.focus {
            Pane::Events => self.event_rows(),
            _ => self.table_rows(),
        }
        .saturating_sub(1)
        .max(1)
    }

    fn move_by(&mut self, delta: isize) {
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

    fn sort_by(&mut self, key: SortKey) {
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

    /// Opens the confirmation for `op` on the selected domain.
    fn ask(&mut self, op: FenceOp) {
        if self.read_only {
            self.toast(
                Level::Warn,
                format!("read-only monitor: {} is not available here", op_label(op)),
            );
            return;
        }
        let Some(d) = self.selected() else {
            self.toast(Level::Warn, "no domain selected".into());
            return;
        };
        let owner_text = self.owner_description(d);
        self.mode = Mode::Confirm(Confirm {
            op,
            domain: d.name.clone(),
            uuid: d.uuid.clone(),
            state: d.state,
            owner: d.owner,
            owner_text,
            conflict: d.conflict,
            on_action: false,
        });
    }

    fn key_confirm(&mut self, key: Key, mut c: Confirm) -> Vec<Effect> {
        match self.keymap.action(Scope::Dialog, key) {
            Some(Action::Confirm) => self.confirmed(c),
            Some(Action::Press) if c.on_action => self.confirmed(c),
            Some(Action::Press) | Some(Action::Cancel) => {
                self.mode = Mode::Normal;
                Vec::new()
            }
            Some(Action::SwitchButton) => {
                c.on_action = !c.on_action;
                self.mode = Mode::Confirm(c);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn confirmed(&mut self, c: Confirm) -> Vec<Effect> {
        self.mode = Mode::Normal;
        if self.read_only {
            return Vec::new();
        }
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.push((id, c.op, c.domain.clone()));
        self.push_local(
            Level::Info,
            format!(
                "console: {} {} requested (owner {})",
                op_label(c.op),
                c.domain,
                c.owner_text
            ),
        );
        vec![Effect::Fence {
            id,
            op: c.op,
            domain: c.domain,
        }]
    }

    fn key_help(&mut self, key: Key, scroll: u16) {
        match self.keymap.action(Scope::Help, key) {
            Some(Action::CloseHelp) => self.mode = Mode::Normal,
            Some(Action::Down) => {
                self.mode = Mode::Help {
                    scroll: scroll.saturating_add(1),
                }
            }
            Some(Action::Up) => {
                self.mode = Mode::Help {
                    scroll: scroll.saturating_sub(1),
                }
            }
            Some(Action::PageDown) => {
                self.mode = Mode::Help {
                    scroll: scroll.saturating_add(10),
                }
            }
            Some(Action::PageUp) => {
                self.mode = Mode::Help {
                    scroll: scroll.saturating_sub(10),
                }
            }
            Some(Action::Top) => self.mode = Mode::Help { scroll: 0 },
            Some(Action::Bottom) => {
                self.mode = Mode::Help {
                    scroll: u16::MAX / 2,
                }
            }
            _ => {}
        }
    }

    /// Text prompts take typed characters; their keys are fixed (see
    /// [`super::keymap::PROMPT_KEYS`]).
    fn edit(input: &mut String, key: Key) -> bool {
        match key.code {
            KeyCode::Char('u') if key.ctrl => input.clear(),
            KeyCode::Char(c) if !key.ctrl && !key.alt => {
                if input.chars().count() < 200 {
                    input.push(c);
                }
            }
            KeyCode::Backspace => {
                input.pop();
            }
            _ => return false,
        }
        true
    }

    fn key_filter(&mut self, key: Key, mut input: String, before: String) {
        match key.code {
            KeyCode::Enter => {
                self.mode = Mode::Normal;
                self.focus = Pane::Domains;
            }
            KeyCode::Esc => {
                self.set_filter(&before);
                self.mode = Mode::Normal;
            }
            _ => {
                if Self::edit(&mut input, key) {
                    // Live: the table follows every keystroke.
                    self.set_filter(&input);
                }
                self.mode = Mode::Filter { input, before };
            }
        }
    }

    fn key_jump(&mut self, key: Key, mut input: String) {
        match key.code {
            KeyCode::Enter => {
                self.mode = Mode::Normal;
                self.jump(input.trim());
            }
            KeyCode::Esc => self.mode = Mode::Normal,
            _ => {
                Self::edit(&mut input, key);
                self.mode = Mode::Jump { input };
            }
        }
    }

    /// What a jump to `text` would reach, for the prompt and for Enter.
    pub fn jump_target(&self, text: &str) -> Option<JumpTarget> {
        let t = text.trim();
        if t.is_empty() {
            return None;
        }
        if matches!(t, "q" | "quit" | "q!") {
            return Some(JumpTarget::Quit);
        }
        if matches!(t, "help" | "h" | "?") {
            return Some(JumpTarget::Help);
        }
        let s = self.snapshot.as_ref()?;
        let lower = t.to_lowercase();
        let d = &s.domains;
        let found = d
            .iter()
            .position(|x| x.name.eq_ignore_ascii_case(t))
            .or_else(|| {
                d.iter()
                    .position(|x| x.uuid.to_lowercase().starts_with(&lower))
            })
            .or_else(|| {
                // The first match in table order, so Enter goes where the eye is.
                self.rows
                    .iter()
                    .copied()
                    .find(|&i| d[i].name.to_lowercase().starts_with(&lower))
            })
            .or_else(|| {
                d.iter()
                    .position(|x| x.name.to_lowercase().starts_with(&lower))
            });
        if let Some(i) = found {
            return Some(JumpTarget::Domain(i));
        }
        // A node by name or id ("2", "n2", "node2") before looser domain matches.
        let id = t
            .strip_prefix("node")
            .or_else(|| t.strip_prefix('n'))
            .unwrap_or(t)
            .parse::<NodeId>()
            .ok();
        let node = s
            .nodes
            .iter()
            .position(|n| {
                n.name.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(t)) || Some(n.nodeid) == id
            })
            .or_else(|| {
                s.nodes.iter().position(|n| {
                    n.name
                        .as_deref()
                        .is_some_and(|m| m.to_lowercase().starts_with(&lower))
                })
            });
        if let Some(i) = node {
            return Some(JumpTarget::Node(i));
        }
        d.iter()
            .position(|x| contains_ci(&x.name, &lower))
            .map(JumpTarget::Domain)
    }

    fn jump(&mut self, text: &str) {
        match self.jump_target(text) {
            None if text.is_empty() => {}
            None => self.toast(Level::Warn, format!("no domain or node matches `{text}`")),
            Some(JumpTarget::Quit) => self.quit = true,
            Some(JumpTarget::Help) => self.mode = Mode::Help { scroll: 0 },
            Some(JumpTarget::Node(i)) => {
                self.focus = Pane::Nodes;
                self.node_sel = i;
            }
            Some(JumpTarget::Domain(i)) => {
                self.focus = Pane::Domains;
                let pos = match self.rows.iter().position(|&r| r == i) {
                    Some(p) => p,
                    None => {
                        // Hidden by the filter: drop the filter to show it.
                        self.toast(Level::Info, "filter cleared to show the match".into());
                        self.set_filter("");
                        self.rows.iter().position(|&r| r == i).unwrap_or(0)
                    }
                };
                self.select(pos);
            }
        }
    }
}

/// Where a jump goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JumpTarget {
    /// Index into `snapshot.domains`.
    Domain(usize),
    /// Index into `snapshot.nodes`.
    Node(usize),
    Quit,
    Help,
}

/// Per-domain history is pruned of domains gone from the map when it holds
/// this many domains.
const HISTORY_PRUNE_AT: usize = 20_000;

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

#[cfg(test)]
mod tests;
