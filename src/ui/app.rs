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

mod keys;
mod log;
mod table;

pub use keys::{Confirm, JumpTarget, Mode, NodeConfirm};
pub use log::{Entry, FenceRecord, Level, Toast};
pub use table::{Filter, Sort, SortKey, Summary, contains_ci, state_rank};

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
    /// The answer to an [`Effect::ConfirmNode`]: what was asserted, or why not.
    ConfirmDone {
        id: u64,
        node: String,
        outcome: Result<String, String>,
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
    /// Send `Request::Confirm` on the read-write socket; answer with
    /// [`Msg::ConfirmDone`]. The loop refuses it in read-only mode.
    ConfirmNode { id: u64, node: String },
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

    /// Owner column text: "node2", "CONFLICT node1,node2", "node1→node2"
    /// (a live migration), or "-".
    pub fn owner_text(&self, d: &DomainView) -> String {
        if let Some(m) = d.migrating {
            return format!("{}→{}", self.node_name(m.from), self.node_name(m.to));
        }
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
            Msg::ConfirmDone {
                id: _,
                node,
                outcome,
            } => {
                match outcome {
                    Ok(detail) => {
                        self.push_local(Level::Warn, format!("confirmed: {detail}"));
                        self.toast(Level::Warn, format!("{node} confirmed down"));
                    }
                    Err(why) => {
                        self.push_local(Level::Error, format!("confirm {node} failed: {why}"));
                        self.toast(Level::Error, format!("confirm {node} failed: {why}"));
                    }
                }
                self.dirty = true;
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
        self.refresh_node_confirm();
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests;
