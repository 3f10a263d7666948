//! Plain-text descriptions shared by the CLI and the console: one wording
//! per event kind, state and operation, and one way to write an age. The CLI
//! prints them; the console styles them by their [`Tone`]. Pure.

use std::borrow::Cow;

use crate::api::{
    DaemonAction, DomainAction, DomainState, EventKind, FenceOp, FenceResult, MembershipAction,
    Millis, NetworkAction, NodeId,
};

/// What an event means for the operator; the console picks a colour per tone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Base,
    Ok,
    Warn,
    Danger,
    Conflict,
    /// The colour of a domain state.
    State(DomainState),
}

/// One event as a symbol, a tone and a line of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub symbol: &'static str,
    pub tone: Tone,
    pub text: String,
}

impl Described {
    fn new(symbol: &'static str, tone: Tone, text: String) -> Self {
        Self { symbol, tone, text }
    }
}

/// Characters that must not reach a terminal raw: the C0 and C1 controls and
/// DEL (escape sequences, `\r` overwrites) except newline and tab; the
/// bidirectional controls that reorder what the reader sees; and the
/// invisible format characters (zero-width spaces and joiners, the byte
/// order mark, soft hyphen, tags) and line/paragraph separators, which make
/// two different names look the same or break a line. Names and details
/// come from guests, peers and hook XML, so they may carry any.
pub fn unsafe_for_terminal(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(
            c,
            '\u{ad}'
                | '\u{61c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

fn escape_with(s: &str, bad: fn(char) -> bool, esc: fn(char) -> String) -> Cow<'_, str> {
    if !s.chars().any(bad) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| if bad(c) { esc(c) } else { c.to_string() })
            .collect(),
    )
}

/// `\x1b`, `\u{202e}`.
fn visible_escape(c: char) -> String {
    match c as u32 {
        n @ 0..=0xff => format!("\\x{n:02x}"),
        n => format!("\\u{{{n:x}}}"),
    }
}

/// Text output made safe for a terminal: each unsafe character is written
/// as a visible escape (`\x1b`, `\u{202e}`); everything else is unchanged.
pub fn printable(s: &str) -> Cow<'_, str> {
    escape_with(s, unsafe_for_terminal, visible_escape)
}

/// [`printable`] for one line of a log: newline and tab are escaped too
/// (`\n`, `\t`), so nothing inside can start another line.
pub fn printable_line(s: &str) -> Cow<'_, str> {
    escape_with(
        s,
        |c| c == '\n' || c == '\t' || unsafe_for_terminal(c),
        |c| match c {
            '\n' => "\\n".into(),
            '\t' => "\\t".into(),
            c => visible_escape(c),
        },
    )
}

/// JSON output made safe for a terminal. serde_json escapes only C0
/// controls; DEL, the C1 controls and the bidi overrides, which can only
/// occur inside strings, become `\uXXXX` escapes, so the document still
/// parses to the same value.
pub fn printable_json(s: &str) -> Cow<'_, str> {
    escape_with(s, unsafe_for_terminal, |c| {
        // Above U+FFFF (tags), JSON wants a surrogate pair.
        let mut units = [0u16; 2];
        c.encode_utf16(&mut units)
            .iter()
            .map(|u| format!("\\u{u:04x}"))
            .collect()
    })
}

/// A lost placement in one line: "node2: its daemon is down; vm2a last
/// seen running 3s ago". `why` is the node's accounting text.
pub fn lost_placement(
    vm: &str,
    node: &str,
    why: Option<&str>,
    state: DomainState,
    now: Millis,
    since: Millis,
) -> String {
    format!(
        "{node}: {}; {vm} last seen {} {} ago",
        why.unwrap_or("not accounted for"),
        state_label(state),
        age(now, since)
    )
}

/// An age: "3s", "5m", "2h", "4d".
pub fn age(now: Millis, since: Millis) -> String {
    let s = now.saturating_sub(since) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// A count with its noun: "1 VM", "3 VMs" (`noun` takes an "s").
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A domain state as people say it ("shut off", not "shutoff").
pub fn state_label(s: DomainState) -> &'static str {
    match s {
        DomainState::Shutoff => "shut off",
        other => other.as_str(),
    }
}

/// The one-character symbol of a domain state.
pub fn state_symbol(s: DomainState) -> &'static str {
    match s {
        DomainState::Running => "●",
        DomainState::Paused => "‖",
        DomainState::Shutoff => "○",
        DomainState::Crashed => "✗",
        DomainState::Blocked => "◌",
        DomainState::Shutdown => "↓",
        DomainState::Pmsuspended => "z",
        DomainState::Nostate => "?",
    }
}

/// A fence operation as a verb phrase ("fence off", "reboot", "start").
pub fn op_label(op: FenceOp) -> &'static str {
    match op {
        FenceOp::Off => "fence off",
        FenceOp::Reboot => "reboot",
        FenceOp::On => "start",
        FenceOp::Status => "status",
        FenceOp::Monitor => "monitor",
        FenceOp::List => "list",
        FenceOp::Null => "null",
    }
}

/// " (detail)" or "".
fn paren(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

/// ": detail" or "".
fn colon(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|d| format!(": {d}"))
        .unwrap_or_default()
}

/// One event kind in words; `node` names a node id.
pub fn describe(kind: &EventKind, node: &dyn Fn(NodeId) -> String) -> Described {
    let node = |id: Option<NodeId>| id.map(node).unwrap_or_default();
    match kind {
        EventKind::Membership {
            action,
            nodeid,
            detail,
            ..
        } => {
            let who = node(*nodeid);
            let (sym, tone, what) = match action {
                MembershipAction::Joined => ("+", Tone::Ok, format!("{who} joined")),
                MembershipAction::Left => ("−", Tone::Danger, format!("{who} LEFT")),
                MembershipAction::Quorate => ("✓", Tone::Ok, "quorate".to_string()),
                MembershipAction::QuorumLost => ("✗", Tone::Danger, "QUORUM LOST".to_string()),
                MembershipAction::DaemonJoined => {
                    ("+", Tone::Base, format!("daemon on {who} joined"))
                }
                MembershipAction::DaemonLeft => ("−", Tone::Warn, format!("daemon on {who} left")),
                MembershipAction::CorosyncUp => ("✓", Tone::Ok, "corosync up".to_string()),
                MembershipAction::CorosyncLost => ("✗", Tone::Danger, "corosync LOST".to_string()),
                MembershipAction::Confirmed => (
                    "✓",
                    Tone::Warn,
                    format!("{who} CONFIRMED DOWN by an operator"),
                ),
                MembershipAction::SelfFenceArmed => {
                    ("⏱", Tone::Danger, "SELF-FENCE ARMED".to_string())
                }
                MembershipAction::SelfFenced => ("✓", Tone::Warn, format!("{who} SELF-FENCED")),
            };
            Described::new(sym, tone, format!("{what}{}", paren(detail)))
        }
        EventKind::Domain {
            action,
            name,
            state,
            previous,
            owner,
            previous_owner,
            detail,
            ..
        } => {
            let st = state_label(*state);
            let mut t = match action {
                DomainAction::Appeared => format!("{name} appeared, {st}"),
                DomainAction::State => match previous {
                    Some(p) if p != state => {
                        format!("{name} {st} (was {})", state_label(*p))
                    }
                    _ => format!("{name} {st}"),
                },
                DomainAction::Owner => format!("{name} owner changed"),
                DomainAction::Removed => format!("{name} removed"),
                DomainAction::Purged => format!("{name} purged (its host confirmed down)"),
                DomainAction::Lost => format!("{name} lost (its host's daemon is gone), last {st}"),
                DomainAction::Conflict => {
                    return Described::new(
                        "!!",
                        Tone::Conflict,
                        format!("{name} CONFLICT: running on several hosts{}", paren(detail)),
                    );
                }
                DomainAction::ConflictResolved => format!("{name} conflict resolved"),
                DomainAction::Rebooted => format!("{name} rebooted"),
                DomainAction::Migrating => format!("{name} migrating{}", paren(detail)),
            };
            match (owner, previous_owner) {
                (Some(o), Some(p)) if o != p => {
                    t.push_str(&format!(" on {} (was {})", node(Some(*o)), node(Some(*p))))
                }
                (Some(o), _) => t.push_str(&format!(" on {}", node(Some(*o)))),
                (None, Some(p)) => t.push_str(&format!(" (was on {})", node(Some(*p)))),
                (None, None) => {}
            }
            t.push_str(&colon(detail));
            Described::new(state_symbol(*state), Tone::State(*state), t)
        }
        EventKind::Daemon {
            action,
            uri,
            detail,
        } => {
            let uri = uri.as_deref().unwrap_or("");
            let why = colon(detail);
            let (sym, tone, text) = match action {
                DaemonAction::LibvirtConnected => {
                    ("✓", Tone::Ok, format!("libvirt connected {uri}{why}"))
                }
                DaemonAction::LibvirtLost => {
                    ("✗", Tone::Danger, format!("libvirt LOST {uri}{why}"))
                }
                DaemonAction::Dropped => ("⚠", Tone::Warn, format!("dropped{why}")),
                DaemonAction::Started => ("·", Tone::Base, format!("daemon started{why}")),
                DaemonAction::Stopping => ("·", Tone::Warn, format!("daemon stopping{why}")),
                DaemonAction::Reloaded => ("·", Tone::Base, format!("config reloaded{why}")),
            };
            Described::new(sym, tone, text)
        }
        EventKind::Fence {
            op,
            domain,
            source,
            acted_by,
            result,
            duration_ms,
            detail,
            ..
        } => {
            let ok = matches!(result, FenceResult::Ok | FenceResult::Off);
            let by = acted_by
                .map(|n| format!(" by {}", node(Some(n))))
                .unwrap_or_default();
            Described::new(
                if ok { "»" } else { "✗" },
                if ok { Tone::Warn } else { Tone::Danger },
                format!(
                    "fence {op} {domain} → {result}{by} ({duration_ms} ms, from {source}){}",
                    colon(detail)
                ),
            )
        }
        EventKind::NetworkHook {
            network,
            op,
            subop,
            port,
            replay,
            error,
            ..
        } => {
            let mut t = format!("hook network {network} {op}");
            if !subop.is_empty() && subop != "-" {
                t.push_str(&format!("/{subop}"));
            }
            if let Some(p) = port {
                if let Some(o) = &p.owner {
                    t.push_str(&format!(" vm {o}"));
                }
                if let Some(m) = &p.mac {
                    t.push_str(&format!(" mac {m}"));
                }
            }
            if *replay {
                t.push_str(" (replayed)");
            }
            match error {
                Some(e) => Described::new("⚠", Tone::Warn, format!("{t}: unparsed: {e}")),
                None => Described::new("↯", Tone::Base, t),
            }
        }
        EventKind::Network {
            action, network, ..
        } => {
            let (sym, tone, verb) = match action {
                NetworkAction::Defined => ("+", Tone::Base, "defined"),
                NetworkAction::Undefined => ("−", Tone::Base, "undefined"),
                NetworkAction::Started => ("▲", Tone::Ok, "started"),
                NetworkAction::Stopped => ("▼", Tone::Warn, "stopped"),
            };
            Described::new(sym, tone, format!("network {network} {verb}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FencePhase;

    #[test]
    fn terminal_escapes_are_made_visible() {
        assert!(matches!(
            printable("web1 \u{e9}t\u{e9}\n"),
            Cow::Borrowed(_)
        ));
        assert_eq!(printable("a\x1b[2Jb\rc\u{9b}d"), "a\\x1b[2Jb\\x0dc\\x9bd");
        assert_eq!(printable("x\u{202e}y\x7f"), "x\\u{202e}y\\x7f");
        assert_eq!(
            printable("a\u{200b}b\u{feff}c\u{2028}d\u{ad}e\u{e0041}"),
            "a\\u{200b}b\\u{feff}c\\u{2028}d\\xade\\u{e0041}"
        );
        assert!(matches!(
            printable("na\u{ef}ve \u{2014} \u{1f600}"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn json_stays_the_same_document() {
        let name = "vm\u{9b}31m\u{202e}\x7f\x1b\u{200b}\u{e0041}";
        let raw = serde_json::json!({ "name": name }).to_string();
        let safe = printable_json(&raw);
        assert!(!safe.chars().any(unsafe_for_terminal), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["name"], name);
    }

    #[test]
    fn a_lost_placement_names_the_node_why_and_when() {
        assert_eq!(
            lost_placement(
                "vm2a",
                "node2",
                Some("its daemon is down"),
                DomainState::Running,
                10_000,
                7_000
            ),
            "node2: its daemon is down; vm2a last seen running 3s ago"
        );
    }

    #[test]
    fn a_log_line_stays_one_line() {
        assert_eq!(
            printable_line("domain=vm\n<0>forged\x1b[2J\tx"),
            "domain=vm\\n<0>forged\\x1b[2J\\tx"
        );
        assert!(matches!(printable_line("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn counts() {
        assert_eq!(count(1, "VM"), "1 VM");
        assert_eq!(count(0, "domain"), "0 domains");
        assert_eq!(count(3, "port"), "3 ports");
    }

    #[test]
    fn ages() {
        assert_eq!(age(61_000, 1_000), "1m");
        assert_eq!(age(1_000, 5_000), "0s");
        assert_eq!(age(3 * 86_400_000, 0), "3d");
    }

    #[test]
    fn a_fence_event_names_the_operation_as_fence_xvm_does() {
        let fence = |op| EventKind::Fence {
            phase: FencePhase::Result,
            op,
            domain: "vm2".into(),
            source: "multicast:10.0.0.5".into(),
            requester: Some(2),
            acted_by: Some(2),
            result: FenceResult::Ok,
            duration_ms: 7,
            detail: None,
        };
        let text = |op| describe(&fence(op), &|n| format!("kvm{n}")).text;
        assert_eq!(
            text(FenceOp::Off),
            "fence off vm2 → ok by kvm2 (7 ms, from multicast:10.0.0.5)"
        );
        assert!(text(FenceOp::On).starts_with("fence on vm2 → "));
        assert!(text(FenceOp::Reboot).starts_with("fence reboot vm2 → "));
    }

    #[test]
    fn a_domain_event_reads_the_same_everywhere() {
        let kind = EventKind::Domain {
            action: DomainAction::State,
            uuid: String::new(),
            name: "web1".into(),
            state: DomainState::Shutoff,
            previous: Some(DomainState::Running),
            owner: None,
            previous_owner: Some(2),
            detail: None,
        };
        let d = describe(&kind, &|n| format!("kvm{n}"));
        assert_eq!(d.text, "web1 shut off (was running) (was on kvm2)");
        assert_eq!((d.symbol, d.tone), ("○", Tone::State(DomainState::Shutoff)));
    }
}
