//! `fenceline check`'s judgement: plain facts in ([`Facts`], gathered by
//! `check/gather.rs`), findings out. No I/O, no clock: `now` is a fact.

use std::path::PathBuf;

use fenceline_proto::api::{
    DaemonKind, Event, EventKind, FenceOp, FencePhase, FenceResult, Millis, NodeView, Snapshot,
};
use fenceline_proto::display::{age, count};

/// What a key file is for: "multicast listener", or the cluster key's
/// "fenceline's CPG group".
fn key_use(listener: &str) -> String {
    if listener == "cluster" {
        "fenceline's CPG group".to_string()
    } else {
        format!("{listener} listener")
    }
}

#[cfg(test)]
mod tests;

/// Nagios/Icinga states; the number is the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Level {
    pub fn label(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
            Level::Unknown => "UNKNOWN",
        }
    }

    /// How bad, for the overall state: CRITICAL > WARNING > UNKNOWN > OK
    /// (the monitoring plugins' `max_state_alt`).
    fn rank(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Unknown => 1,
            Level::Warning => 2,
            Level::Critical => 3,
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// `config`, `key`, `corosync`, `libvirt`, `listener`, `keys`, `self-test`, `fencing`, ...
    pub topic: &'static str,
    pub text: String,
}

/// A file fenceline opens with its private-file rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFact {
    pub path: PathBuf,
    /// Mode bits and owner, when the file could be `lstat`ed.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    /// Why the daemon would refuse it (missing, a symlink, owner, mode), or
    /// None when it passes the daemon's own checks.
    pub problem: Option<String>,
}

/// One listener's key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFact {
    pub listener: String,
    pub file: FileFact,
    pub loose_allowed: bool,
    /// `fence_xvm::key_digest` of the file, when it could be read.
    pub digest: Option<String>,
}

/// What the host shows of one configured listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerFact {
    Multicast {
        group: String,
        port: u16,
        interface: Option<String>,
        /// Whether the named interface exists (None: no interface named).
        interface_exists: Option<bool>,
        /// The group is joined (on the named interface, else on any), from
        /// /proc/net/igmp or igmp6.
        joined: Result<bool, String>,
        /// A UDP socket is bound to the port (/proc/net/udp, udp6).
        bound: Result<bool, String>,
    },
    Tcp {
        address: String,
        port: u16,
    },
    Vsock {
        port: u32,
    },
}

/// The loopback request through a local stream listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfTest {
    pub listener: String,
    pub target: String,
    /// The answer byte after a complete handshake, or what failed.
    pub result: Result<u8, String>,
}

/// Everything `check` looked at.
#[derive(Debug, Clone)]
pub struct Facts {
    pub now: Millis,
    /// The config file (None: no file, the built-in defaults).
    pub config: Option<FileFact>,
    pub uris: Vec<String>,
    pub keys: Vec<KeyFact>,
    /// The daemon's snapshot over the read-only socket, or why not.
    pub snapshot: Result<Snapshot, String>,
    /// The daemon's event backlog, or why not.
    pub events: Result<Vec<Event>, String>,
    pub listeners: Vec<ListenerFact>,
    /// None when no stream listener could be tested (multicast or vsock only).
    pub self_test: Option<SelfTest>,
}

/// The findings and the overall state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn level(&self) -> Level {
        self.findings
            .iter()
            .map(|f| f.level)
            .max_by_key(|l| l.rank())
            .unwrap_or(Level::Unknown)
    }

    /// The one summary line: the state and the worst findings.
    pub fn summary(&self) -> String {
        let level = self.level();
        let worst: Vec<&str> = self
            .findings
            .iter()
            .filter(|f| f.level == level && level != Level::Ok)
            .map(|f| f.text.as_str())
            .collect();
        if worst.is_empty() {
            format!(
                "FENCELINE OK - {} checks passed; this host can fence",
                self.findings.len()
            )
        } else {
            format!("FENCELINE {} - {}", level.label(), worst.join("; "))
        }
    }

    /// The summary line, then one line per finding.
    pub fn render(&self) -> String {
        let mut s = self.summary();
        s.push('\n');
        for f in &self.findings {
            s.push_str(&format!("[{}] {}: {}\n", f.level.label(), f.topic, f.text));
        }
        s
    }
}

fn finding(level: Level, topic: &'static str, text: impl Into<String>) -> Finding {
    Finding {
        level,
        topic,
        text: text.into(),
    }
}

/// Judges every fact.
pub fn evaluate(f: &Facts) -> Report {
    let mut out = Vec::new();
    files(f, &mut out);
    match &f.snapshot {
        Ok(snap) => {
            corosync(snap, &mut out);
            libvirt(snap, &f.uris, &mut out);
            same_keys(snap, &f.keys, &mut out);
        }
        Err(e) => out.push(finding(
            Level::Critical,
            "daemon",
            format!("no answer from the daemon: {e}"),
        )),
    }
    listeners(&f.listeners, &mut out);
    self_test(f, &mut out);
    last_fence(f, &mut out);
    Report { findings: out }
}

fn describe_file(ff: &FileFact) -> String {
    match (ff.mode, ff.uid) {
        (Some(m), Some(0)) => format!("mode {m:04o}, owner root"),
        (Some(m), Some(u)) => format!("mode {m:04o}, owner uid {u}"),
        _ => "present".into(),
    }
}

fn files(f: &Facts, out: &mut Vec<Finding>) {
    match &f.config {
        None => out.push(finding(
            Level::Warning,
            "config",
            "no config file: the daemon runs on built-in defaults (no listener); \
             `fenceline config init` writes one",
        )),
        Some(c) => out.push(match &c.problem {
            Some(p) => finding(
                Level::Critical,
                "config",
                format!("{}: {p}", c.path.display()),
            ),
            None => finding(
                Level::Ok,
                "config",
                format!("{}: {}", c.path.display(), describe_file(c)),
            ),
        }),
    }
    if f.keys.is_empty() {
        out.push(finding(
            Level::Warning,
            "listener",
            "no listener configured: guests cannot fence through this host",
        ));
    }
    for k in &f.keys {
        let p = k.file.path.display();
        let loose = k.file.mode.is_some_and(|m| m & 0o077 != 0);
        out.push(match &k.file.problem {
            Some(why) => finding(
                Level::Critical,
                "key",
                format!("{p} ({}): {why}", key_use(&k.listener)),
            ),
            None if loose && k.loose_allowed => finding(
                Level::Warning,
                "key",
                format!(
                    "{p} ({} listener): readable by others than root ({}), allowed by \
                     listeners.allow_loose_key_mode; chmod 0600 it",
                    k.listener,
                    describe_file(&k.file)
                ),
            ),
            None => finding(
                Level::Ok,
                "key",
                format!("{p} ({}): {}", key_use(&k.listener), describe_file(&k.file)),
            ),
        });
    }
}

fn local(snap: &Snapshot) -> Option<&NodeView> {
    let id = snap.local_nodeid?;
    snap.nodes.iter().find(|n| n.nodeid == id)
}

fn node_name(n: &NodeView) -> String {
    match &n.name {
        Some(name) => format!("{name} ({})", n.nodeid),
        None => format!("node {}", n.nodeid),
    }
}

fn corosync(snap: &Snapshot, out: &mut Vec<Finding>) {
    if !snap.corosync.connected {
        let why = snap.corosync.error.as_deref().unwrap_or("not connected");
        out.push(finding(
            Level::Critical,
            "corosync",
            format!(
                "corosync unreachable for {} ({why}): the map is stale and no request can be routed",
                age(snap.generated_at, snap.corosync.since)
            ),
        ));
        return;
    }
    let votes = match (snap.total_votes, snap.expected_votes, snap.quorum) {
        (Some(t), Some(e), Some(q)) => format!(" (votes {t}/{e}, quorum {q})"),
        _ => String::new(),
    };
    let me = local(snap);
    let members = snap.nodes.iter().filter(|n| n.member).count();
    out.push(match me {
        Some(n) if n.member => finding(
            Level::Ok,
            "corosync",
            format!(
                "connected; {} is a member ({members}/{} nodes) and joined the fence-agents \
                 and fenceline groups",
                node_name(n),
                snap.nodes.len()
            ),
        ),
        _ => finding(
            Level::Critical,
            "corosync",
            "connected, but this node is not in the membership",
        ),
    });
    out.push(if snap.quorate {
        finding(Level::Ok, "quorum", format!("quorate{votes}"))
    } else {
        finding(
            Level::Critical,
            "quorum",
            format!("NOT quorate{votes}: VMs nobody knows are refused"),
        )
    });
    for n in snap.nodes.iter().filter(|n| !n.accounted) {
        if Some(n.nodeid) == snap.local_nodeid {
            continue; // judged under libvirt
        }
        let why = n.accounting.as_deref().unwrap_or("unknown");
        out.push(finding(
            Level::Warning,
            "accounting",
            format!(
                "{} is not accounted for ({why}): fenceline refuses to answer off for VMs that may run there",
                node_name(n)
            ),
        ));
    }
}

fn libvirt(snap: &Snapshot, uris: &[String], out: &mut Vec<Finding>) {
    for uri in uris {
        out.push(match snap.libvirt.iter().find(|h| &h.uri == uri) {
            None => finding(
                Level::Critical,
                "libvirt",
                format!("{uri}: not connected yet"),
            ),
            Some(h) if !h.connected => finding(
                Level::Critical,
                "libvirt",
                format!(
                    "{uri}: disconnected for {} ({})",
                    age(snap.generated_at, h.since),
                    h.error.as_deref().unwrap_or("no error given")
                ),
            ),
            Some(h) => finding(
                Level::Ok,
                "libvirt",
                format!("{uri}: connected, {}", count(h.domains, "domain")),
            ),
        });
    }
    if let Some(me) = local(snap).filter(|n| !n.accounted && n.member) {
        out.push(finding(
            Level::Critical,
            "libvirt",
            format!(
                "this node's inventory is not complete ({}): fence answers about it are refused",
                me.accounting.as_deref().unwrap_or("not every URI listed")
            ),
        ));
    }
}

/// The key on this host against the daemon's and every fenceline peer's
/// announced digest, per listener.
fn same_keys(snap: &Snapshot, keys: &[KeyFact], out: &mut Vec<Finding>) {
    if snap.stale && !keys.is_empty() {
        out.push(finding(
            Level::Unknown,
            "keys",
            "not compared with the other hosts: corosync is unreachable",
        ));
        return;
    }
    let me = local(snap);
    for k in keys {
        let Some(file) = &k.digest else { continue };
        let l = k.listener.as_str();
        match me.and_then(|n| n.key_digests.get(l)) {
            Some(d) if d != file => out.push(finding(
                Level::Critical,
                "keys",
                format!(
                    "the daemon's {l} key (digest {d}) is not the one in {} ({file}): restart \
                     the daemon after changing a key",
                    k.file.path.display()
                ),
            )),
            None => out.push(finding(
                Level::Warning,
                "keys",
                format!("the daemon announces no {l} key: it runs without that listener"),
            )),
            Some(_) => {}
        }
        let mut same = Vec::new();
        for n in snap.nodes.iter().filter(|n| {
            Some(n.nodeid) != snap.local_nodeid
                && n.member
                && n.daemons.contains(&DaemonKind::Fenceline)
        }) {
            match n.key_digests.get(l) {
                Some(d) if d == file => same.push(node_name(n)),
                Some(d) => out.push(finding(
                    Level::Critical,
                    "keys",
                    format!(
                        "{} holds a different {l} key (digest {d}, here {file}): its guests' \
                         requests fail verification here and ours there",
                        node_name(n)
                    ),
                )),
                None => out.push(finding(
                    Level::Ok,
                    "keys",
                    format!(
                        "{} announces no {l} key (no such listener, or an older fenceline); not compared",
                        node_name(n)
                    ),
                )),
            }
        }
        let others = if same.is_empty() {
            "no other fenceline host announces one".to_string()
        } else {
            format!("the same on {}", same.join(", "))
        };
        out.push(finding(
            Level::Ok,
            "keys",
            format!("{l} key digest {file}: {others}"),
        ));
    }
    let fvd: Vec<String> = snap
        .nodes
        .iter()
        .filter(|n| n.member && n.daemons.contains(&DaemonKind::FenceVirtd))
        .map(node_name)
        .collect();
    if !fvd.is_empty() && !keys.is_empty() {
        out.push(finding(
            Level::Ok,
            "keys",
            format!(
                "fence_virtd on {}: keys not compared (fence_virtd announces none)",
                fvd.join(", ")
            ),
        ));
    }
}

fn listeners(ls: &[ListenerFact], out: &mut Vec<Finding>) {
    for l in ls {
        match l {
            ListenerFact::Multicast {
                group,
                port,
                interface,
                interface_exists,
                joined,
                bound,
            } => {
                let on = interface
                    .as_deref()
                    .map(|i| format!(" on {i}"))
                    .unwrap_or_default();
                if interface_exists == &Some(false) {
                    out.push(finding(
                        Level::Critical,
                        "listener",
                        format!(
                            "multicast: interface {} does not exist",
                            interface.as_deref().unwrap_or("?")
                        ),
                    ));
                    continue;
                }
                out.push(match (joined, bound) {
                    (Ok(true), Ok(true)) => finding(
                        Level::Ok,
                        "listener",
                        format!("multicast: {group} joined{on}, udp port {port} bound"),
                    ),
                    (Ok(false), _) => finding(
                        Level::Critical,
                        "listener",
                        format!("multicast: {group} is not joined{on}: the listener is not up"),
                    ),
                    (_, Ok(false)) => finding(
                        Level::Critical,
                        "listener",
                        format!("multicast: nothing is bound to udp port {port}"),
                    ),
                    (Err(e), _) | (_, Err(e)) => finding(
                        Level::Unknown,
                        "listener",
                        format!("multicast{on}: cannot tell ({e})"),
                    ),
                });
            }
            ListenerFact::Tcp { address, port } => out.push(finding(
                Level::Ok,
                "listener",
                format!("tcp: {address}:{port} (checked by the self-test)"),
            )),
            ListenerFact::Vsock { port } => out.push(finding(
                Level::Ok,
                "listener",
                format!(
                    "vsock: port {port} not checked from the host (try fence_virt -S 2 -o list in a guest)"
                ),
            )),
        }
    }
}

fn self_test(f: &Facts, out: &mut Vec<Finding>) {
    match &f.self_test {
        Some(t) => out.push(match &t.result {
            Ok(b) => finding(
                Level::Ok,
                "self-test",
                format!(
                    "the {} listener at {} verified a signed null request, passed the two-way \
                     handshake with the configured key and answered (byte {b}; fence_virtd also \
                     answers null with 1)",
                    t.listener, t.target
                ),
            ),
            Err(e) => finding(
                Level::Critical,
                "self-test",
                format!("the {} listener at {}: {e}", t.listener, t.target),
            ),
        }),
        None if f
            .listeners
            .iter()
            .any(|l| matches!(l, ListenerFact::Multicast { .. })) =>
        {
            out.push(finding(
                Level::Ok,
                "self-test",
                "multicast only: no loopback request (connect-backs to loopback are refused); \
                 checked instead: the group joined and the port bound, the daemon's key equal \
                 to the file and to the other hosts' keys",
            ))
        }
        None => {}
    }
}

fn last_fence(f: &Facts, out: &mut Vec<Finding>) {
    let events = match &f.events {
        Ok(e) => e,
        // The daemon's finding already says why.
        Err(_) if f.snapshot.is_err() => return,
        Err(e) => {
            out.push(finding(
                Level::Unknown,
                "fencing",
                format!("cannot read the event backlog: {e}"),
            ));
            return;
        }
    };
    let last = events.iter().rev().find_map(|e| match &e.kind {
        EventKind::Fence {
            phase: FencePhase::Result,
            op,
            domain,
            result,
            source,
            ..
        } if !matches!(result, FenceResult::Fail | FenceResult::Denied)
            && !matches!(op, FenceOp::Null | FenceOp::List | FenceOp::Monitor) =>
        {
            Some((e.time, *op, domain, *result, source))
        }
        _ => None,
    });
    out.push(match last {
        Some((t, op, domain, result, source)) => finding(
            Level::Ok,
            "fencing",
            format!(
                "last successful request here: {} {domain} from {source} → {result}, {} ago",
                fenceline_proto::display::op_label(op),
                age(f.now, t)
            ),
        ),
        None => finding(
            Level::Ok,
            "fencing",
            format!(
                "no successful fence request in this daemon's last {} events",
                events.len()
            ),
        ),
    });
}
