//! Keys and modes: normal keys, the filter and jump prompts, help, and the
//! confirmation of destructive actions.

use super::*;

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

/// An operator's assertion that a departed node is down, waiting for
/// confirmation (`fenceline confirm NODE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfirm {
    pub nodeid: NodeId,
    /// The node's name (what is sent), or its id.
    pub node: String,
    /// Why it is not accounted for ("left the membership 40 s ago, ...").
    pub why: String,
    /// Its lost VMs, with the state they were last seen in.
    pub lost: Vec<(String, DomainState)>,
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
    ConfirmNode(NodeConfirm),
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

impl App {
    /// An open confirmation always names the VM's current owner and state;
    /// if the VM left the map, the dialog closes without doing anything.
    pub(super) fn refresh_confirm(&mut self) {
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
    pub(super) fn owner_description(&self, d: &DomainView) -> String {
        if d.conflict {
            format!("none: {} (running on several hosts)", self.owner_text(d))
        } else {
            match d.owner {
                Some(o) => format!("{} ({o})", self.node_name(o)),
                None => "none (not running anywhere)".to_string(),
            }
        }
    }

    // ----- keys ------------------------------------------------------------------

    pub(super) fn key(&mut self, key: Key) -> Vec<Effect> {
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
            Mode::ConfirmNode(c) => self.key_confirm_node(key, c),
        }
    }

    pub(super) fn key_normal(&mut self, key: Key) -> Vec<Effect> {
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
            Action::ConfirmDown => self.ask_node(),
            Action::CloseHelp
            | Action::Confirm
            | Action::Cancel
            | Action::SwitchButton
            | Action::Press => {}
        }
        Vec::new()
    }

    /// Opens the confirmation for `op` on the selected domain.
    pub(super) fn ask(&mut self, op: FenceOp) {
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

    /// A key in a confirmation dialog: `Some(true)` confirms, `Some(false)`
    /// closes it; `None` keeps it open (`on_action` may have switched).
    fn dialog_key(&self, key: Key, on_action: &mut bool) -> Option<bool> {
        match self.keymap.action(Scope::Dialog, key) {
            Some(Action::Confirm) => Some(true),
            Some(Action::Press) => Some(*on_action),
            Some(Action::Cancel) => Some(false),
            Some(Action::SwitchButton) => {
                *on_action = !*on_action;
                None
            }
            _ => None,
        }
    }

    pub(super) fn key_confirm(&mut self, key: Key, mut c: Confirm) -> Vec<Effect> {
        match self.dialog_key(key, &mut c.on_action) {
            Some(true) => self.confirmed(c),
            Some(false) => {
                self.mode = Mode::Normal;
                Vec::new()
            }
            None => {
                self.mode = Mode::Confirm(c);
                Vec::new()
            }
        }
    }

    pub(super) fn key_confirm_node(&mut self, key: Key, mut c: NodeConfirm) -> Vec<Effect> {
        match self.dialog_key(key, &mut c.on_action) {
            Some(true) => {
                self.mode = Mode::Normal;
                if self.read_only {
                    return Vec::new();
                }
                let id = self.next_id;
                self.next_id += 1;
                self.push_local(
                    Level::Warn,
                    format!(
                        "console: confirm {} down requested (you assert it is off)",
                        c.node
                    ),
                );
                vec![Effect::ConfirmNode { id, node: c.node }]
            }
            Some(false) => {
                self.mode = Mode::Normal;
                Vec::new()
            }
            None => {
                self.mode = Mode::ConfirmNode(c);
                Vec::new()
            }
        }
    }

    /// Opens the confirmation that the selected node (nodes pane) is down:
    /// only for a departed node that is not accounted for.
    pub(super) fn ask_node(&mut self) {
        if self.read_only {
            self.toast(
                Level::Warn,
                "read-only monitor: confirming a node down is not available here".into(),
            );
            return;
        }
        match self.node_confirm() {
            Ok(c) => self.mode = Mode::ConfirmNode(c),
            Err(why) => self.toast(Level::Warn, why),
        }
    }

    /// The dialog's data for the selected node, or why it is not offered.
    fn node_confirm(&self) -> Result<NodeConfirm, String> {
        let s = self.snapshot.as_deref();
        let n = match (self.focus, s) {
            (Pane::Nodes, Some(s)) => s.nodes.get(self.node_sel),
            _ => None,
        };
        let (Some(s), Some(n)) = (s, n) else {
            return Err("select a departed node in the nodes pane first (tab)".into());
        };
        let name = self.node_name(n.nodeid);
        if s.local_nodeid == Some(n.nodeid) {
            return Err(format!("{name} is this node"));
        }
        if n.member {
            return Err(format!(
                "{name} is a member: only a node that left can be confirmed down"
            ));
        }
        if n.accounted {
            let how = n.accounting.as_deref().unwrap_or("accounted for");
            return Err(format!("{name} is already accounted for ({how})"));
        }
        let lost = s
            .domains
            .iter()
            .flat_map(|d| {
                d.placements
                    .iter()
                    .filter(|p| p.lost && p.nodeid == n.nodeid)
                    .map(|p| (d.name.clone(), p.state))
            })
            .collect();
        Ok(NodeConfirm {
            nodeid: n.nodeid,
            node: n.name.clone().unwrap_or_else(|| n.nodeid.to_string()),
            why: n
                .accounting
                .clone()
                .unwrap_or_else(|| "not accounted for".into()),
            lost,
            on_action: false,
        })
    }

    /// An open node confirmation follows the snapshot; when the node is
    /// back or accounted for, it closes without sending anything.
    pub(super) fn refresh_node_confirm(&mut self) {
        let Mode::ConfirmNode(c) = &self.mode else {
            return;
        };
        let (nodeid, node, on_action) = (c.nodeid, c.node.clone(), c.on_action);
        let sel = self
            .snapshot
            .as_deref()
            .and_then(|s| s.nodes.iter().position(|n| n.nodeid == nodeid));
        let fresh = sel.and_then(|i| {
            self.node_sel = i;
            self.node_confirm().ok()
        });
        match fresh {
            Some(mut c) => {
                c.on_action = on_action;
                self.mode = Mode::ConfirmNode(c);
            }
            None => {
                self.mode = Mode::Normal;
                self.toast(
                    Level::Warn,
                    format!("{node} is back or accounted for; confirm not sent"),
                );
            }
        }
    }

    pub(super) fn confirmed(&mut self, c: Confirm) -> Vec<Effect> {
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

    pub(super) fn key_help(&mut self, key: Key, scroll: u16) {
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
    pub(super) fn edit(input: &mut String, key: Key) -> bool {
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

    pub(super) fn key_filter(&mut self, key: Key, mut input: String, before: String) {
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

    pub(super) fn key_jump(&mut self, key: Key, mut input: String) {
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

    pub(super) fn jump(&mut self, text: &str) {
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
