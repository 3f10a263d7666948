//! The event log: entries, the backlog after a (re)connect, per-domain
//! history and fence records, pause, notes and toasts.

use super::*;

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

/// Per-domain history is pruned of domains gone from the map when it holds
/// this many domains.
const HISTORY_PRUNE_AT: usize = 20_000;

impl App {
    pub(super) fn event_rows(&self) -> usize {
        crate::ui::layout::layout(self.size.0, self.size.1, self.node_count())
            .events_rows()
            .max(1)
    }

    pub(super) fn end_backlog(&mut self) {
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

    pub(super) fn push_event(&mut self, e: Event) {
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
    pub(super) fn domain_of(&self, e: &Event) -> Option<String> {
        match &e.kind {
            EventKind::Domain { name, .. } => Some(name.clone()),
            EventKind::Fence { domain, .. } => Some(self.domain_name(domain)),
            EventKind::NetworkHook { port: Some(p), .. } => p.owner.clone(),
            _ => None,
        }
    }

    /// A fence request may name a VM by uuid; the panes key by name.
    pub(super) fn domain_name(&self, name_or_uuid: &str) -> String {
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

    pub(super) fn push_fence(&mut self, name: String, rec: FenceRecord) {
        let f = self.fences.entry(name).or_default();
        f.push_back(rec);
        if f.len() > FENCE_HISTORY {
            f.pop_front();
        }
    }

    /// Forgets the history of domains that are no longer in the map.
    pub(super) fn prune_history(&mut self) {
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

    pub(super) fn flush_notes(&mut self) {
        // Newest is shown first: push the first note last, so it is on top.
        for n in std::mem::take(&mut self.notes).into_iter().rev() {
            self.push_local(Level::Info, n);
        }
    }

    pub(super) fn push_local(&mut self, level: Level, text: String) {
        self.push_entry(Entry::Local {
            time: self.now,
            level,
            text,
        });
    }

    pub(super) fn push_entry(&mut self, e: Entry) {
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

    pub(super) fn toast(&mut self, level: Level, text: String) {
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

    pub(super) fn set_paused(&mut self, paused: bool) {
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

    pub(super) fn action_done(
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
}
