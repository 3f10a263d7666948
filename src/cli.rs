//! The one-shot commands `status` and `events`: they talk to a daemon over
//! the control socket and print text or JSON; and the console's settings
//! (theme, keymap) checked from the config.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use crate::engine::control::client::{Client, ClientError};
use crate::ui::keymap::Keymap;
use crate::ui::theme::Theme;
use fenceline_config::{Config, ConfigError};
use fenceline_proto::api::{
    DaemonKind, Event, FenceOp, FenceResult, Millis, NodeId, NodeView, Reply, Request, Snapshot,
    rfc3339,
};
use fenceline_proto::display::{self, age, printable, printable_json};

/// Exit codes of the CLI.
pub mod exit {
    pub const OK: u8 = 0;
    /// The daemon could not be reached or answered with an error.
    pub const UNREACHABLE: u8 = 1;
    /// Bad usage or configuration.
    pub const USAGE: u8 = 2;
}

/// The console's keymap: the defaults with `[console.keys]` applied. A bad
/// table is reported like every config error (file, line, key).
pub fn console_keymap(cfg: &Config) -> Result<Keymap, ConfigError> {
    Keymap::with_overrides(&cfg.console.key_overrides())
        .map_err(|e| cfg.console.invalid("keys", &e.actions(), e.to_string()))
}

/// The console's theme: `--theme` wins over `[console] theme` (whose errors
/// name the config file, line and key); `NO_COLOR` drops the colours. Only the
/// console loads a theme, never the daemon.
pub fn console_theme(cfg: &Config, flag: Option<&str>) -> Result<Theme, String> {
    let theme = match flag {
        Some(name) => Theme::load(name)?,
        None => Theme::load(&cfg.console.theme)
            .map_err(|e| format!("config error: {}", cfg.console.invalid("theme", &[], e)))?,
    };
    Ok(if Theme::no_color_requested() {
        theme.monochrome()
    } else {
        theme
    })
}

async fn call(socket: &Path, req: Request) -> Result<Reply, ClientError> {
    let mut c = Client::connect(socket).await?;
    c.call(&req).await
}

/// `fenceline status`.
pub async fn status(socket: &Path, json: bool) -> Result<(), String> {
    match call(socket, Request::Status)
        .await
        .map_err(|e| e.to_string())?
    {
        Reply::Status { snapshot } => {
            let out = if json {
                serde_json::to_string_pretty(&snapshot).map_err(|e| e.to_string())? + "\n"
            } else {
                render_status(&snapshot, fenceline_proto::api::now_millis())
            };
            print_out(&out, json)
        }
        Reply::Error { code, message } => Err(format!("{}: {code}: {message}", socket.display())),
        other => Err(format!("{}: unexpected reply {other:?}", socket.display())),
    }
}

/// Which `fence` action the CLI sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FenceAction {
    Off,
    On,
    Reboot,
    Status,
}

impl FenceAction {
    pub fn op(self) -> FenceOp {
        match self {
            FenceAction::Off => FenceOp::Off,
            FenceAction::On => FenceOp::On,
            FenceAction::Reboot => FenceOp::Reboot,
            FenceAction::Status => FenceOp::Status,
        }
    }
}

/// `fenceline confirm NODE`: asserts that a departed node is down. Returns
/// 0 when the daemon took it, 1 when it refused or could not be reached.
pub async fn confirm(socket: &Path, node: &str) -> u8 {
    let req = Request::Confirm {
        node: node.to_string(),
    };
    let reply = async {
        let mut c = Client::connect(socket).await?;
        c.send(&req).await?;
        c.next(Some(std::time::Duration::from_secs(15))).await
    }
    .await;
    match reply {
        Ok(Reply::Confirmed { detail }) => {
            println!("Confirmed: {}", printable(&detail));
            0
        }
        Ok(Reply::Error { message, .. }) => {
            eprintln!("fenceline confirm: refused: {}", printable(&message));
            1
        }
        Ok(other) => {
            eprintln!(
                "fenceline confirm: unexpected reply: {}",
                printable(&format!("{other:?}"))
            );
            1
        }
        Err(e) => {
            eprintln!("fenceline confirm: {e}");
            1
        }
    }
}

/// `fenceline fence ACTION DOMAIN`: returns fence_xvm's exit code (0 ok or
/// on, 1 fail, 2 off, 3 denied); the read-only socket's refusal is 3.
pub async fn fence(socket: &Path, action: FenceAction, domain: &str, json: bool) -> u8 {
    let op = action.op();
    let req = Request::Fence {
        action: op,
        domain: domain.to_string(),
    };
    let reply = async {
        let mut c = Client::connect(socket).await?;
        c.send(&req).await?;
        // The router's own timeouts are shorter; this only bounds a daemon
        // that stopped answering.
        c.next(Some(std::time::Duration::from_secs(150))).await
    }
    .await;
    let (code, text, value) = match reply {
        Ok(Reply::Fence {
            result,
            acted_by,
            duration_ms,
            detail,
        }) => {
            let line = match (op, result) {
                (FenceOp::Status, FenceResult::Ok) => "Status: ON".to_string(),
                (FenceOp::Status, FenceResult::Off) => "Status: OFF".to_string(),
                (_, FenceResult::Ok) => "Success".to_string(),
                (_, FenceResult::Off) => "Success (off)".to_string(),
                (_, FenceResult::Fail) => "Operation failed".to_string(),
                (_, FenceResult::Denied) => "Permission denied".to_string(),
            };
            let mut line = line;
            if let Some(d) = &detail {
                let _ = write!(line, ": {d}");
            }
            if let Some(n) = acted_by {
                let _ = write!(line, " (node {n}, {duration_ms} ms)");
            }
            let v = serde_json::json!({
                "domain": domain, "action": op, "result": result,
                "acted_by": acted_by, "duration_ms": duration_ms, "detail": detail,
            });
            (result.as_raw(), line, v)
        }
        Ok(Reply::Error { code, message }) if code == "read-only" => (
            FenceResult::Denied.as_raw(),
            format!("Permission denied: {message}"),
            serde_json::json!({"domain": domain, "action": op, "result": "denied", "detail": message}),
        ),
        Ok(Reply::Error { code, message }) => (
            FenceResult::Fail.as_raw(),
            format!("Operation failed: {code}: {message}"),
            serde_json::json!({"domain": domain, "action": op, "result": "fail", "detail": message}),
        ),
        Ok(other) => (
            FenceResult::Fail.as_raw(),
            format!("Operation failed: unexpected reply {other:?}"),
            serde_json::json!({"domain": domain, "action": op, "result": "fail"}),
        ),
        Err(e) => (
            FenceResult::Fail.as_raw(),
            format!("Operation failed: {}: {e}", socket.display()),
            serde_json::json!({"domain": domain, "action": op, "result": "fail", "detail": e.to_string()}),
        ),
    };
    if json {
        println!("{}", printable_json(&value.to_string()));
    } else if code == FenceResult::Fail.as_raw() || code == FenceResult::Denied.as_raw() {
        eprintln!("{}", printable(&text));
    } else {
        println!("{}", printable(&text));
    }
    code
}

/// `fenceline events`.
pub async fn events(socket: &Path, json: bool, follow: bool) -> Result<(), String> {
    let mut c = Client::connect(socket).await.map_err(|e| e.to_string())?;
    c.send(&Request::Events { follow })
        .await
        .map_err(|e| e.to_string())?;
    let mut names = Names::default();
    // Node names come from a snapshot; events carry node ids.
    if !json && let Ok(Reply::Status { snapshot }) = call(socket, Request::Status).await {
        names = Names::from(&*snapshot);
    }
    loop {
        let timeout = if follow {
            None
        } else {
            Some(crate::engine::control::client::REPLY_TIMEOUT)
        };
        let reply = match c.next(timeout).await {
            Ok(r) => r,
            Err(ClientError::Closed { .. }) if follow => {
                return Err(format!("{}: the daemon went away", socket.display()));
            }
            Err(e) => return Err(e.to_string()),
        };
        let line = match reply {
            Reply::Event { event } => {
                if json {
                    serde_json::to_string(&event).map_err(|e| e.to_string())?
                } else {
                    render_event(&event, &names)
                }
            }
            Reply::Dropped { count } => {
                if json {
                    serde_json::json!({"kind": "dropped", "count": count}).to_string()
                } else {
                    format!("-- {count} events dropped (this client was too slow) --")
                }
            }
            Reply::BacklogEnd => {
                if follow {
                    continue;
                }
                return Ok(());
            }
            Reply::Error { code, message } => {
                return Err(format!("{}: {code}: {message}", socket.display()));
            }
            _ => continue,
        };
        print_out(&(line + "\n"), json)?;
    }
}

/// Writes to stdout with every terminal control a guest, peer or hook could
/// have put into a name escaped (`display::printable`).
fn print_out(s: &str, json: bool) -> Result<(), String> {
    let s = if json {
        printable_json(s)
    } else {
        printable(s)
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(e.to_string()),
    }
}

/// Node id → name, for display.
#[derive(Default)]
pub struct Names(std::collections::BTreeMap<NodeId, String>);

impl From<&Snapshot> for Names {
    fn from(s: &Snapshot) -> Self {
        Names(
            s.nodes
                .iter()
                .filter_map(|n| n.name.clone().map(|name| (n.nodeid, name)))
                .collect(),
        )
    }
}

impl Names {
    pub fn node(&self, id: NodeId) -> String {
        match self.0.get(&id) {
            Some(n) => format!("{n}({id})"),
            None => format!("node{id}"),
        }
    }
}

/// The crm_mon-like text view of a snapshot.
pub fn render_status(s: &Snapshot, now: Millis) -> String {
    let names = Names::from(s);
    let mut o = String::new();
    let cluster = s.cluster_name.as_deref().unwrap_or("(unknown)");
    let me = s
        .local_nodeid
        .map(|id| names.node(id))
        .unwrap_or_else(|| "?".into());
    let quorum = if s.quorate { "quorate" } else { "NOT QUORATE" };
    let votes = match (s.total_votes, s.expected_votes, s.quorum) {
        (Some(t), Some(e), Some(q)) => format!(", votes {t}/{e} (quorum {q})"),
        _ => String::new(),
    };
    let _ = writeln!(o, "Cluster: {cluster}   local node: {me}   {quorum}{votes}");
    if s.stale {
        let why = s
            .corosync
            .error
            .as_deref()
            .unwrap_or("corosync unreachable");
        let _ = writeln!(
            o,
            "STALE: {why} (for {}); membership and peers' VMs are the last known state",
            age(now, s.corosync.since)
        );
    }
    if let Some(why) = s.cannot_fence(false) {
        let _ = writeln!(o, "THIS HOST CANNOT FENCE: {why} (fence_xvm monitor fails)");
    }
    if s.local.listeners.is_empty() {
        let _ = writeln!(
            o,
            "Fence listeners: none configured (guests cannot fence through this host)"
        );
    }
    for l in &s.local.listeners {
        let _ = writeln!(o, "Fence listener {}", l.describe());
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "Nodes ({} members of {}):",
        s.nodes.iter().filter(|n| n.member).count(),
        s.nodes.len()
    );
    let _ = writeln!(
        o,
        "  {:>4}  {:<14} {:<8} {:<6} {:<20} {:>4}  LIBVIRT",
        "ID", "NAME", "STATE", "SINCE", "DAEMON", "VMS"
    );
    for n in &s.nodes {
        let daemons: Vec<&str> = n
            .daemons
            .iter()
            .map(|d| match d {
                DaemonKind::Fenceline => "fenceline",
                DaemonKind::FenceVirtd => "fence_virtd",
            })
            .collect();
        let libvirt = if n.libvirt.is_empty() {
            "-".to_string()
        } else {
            n.libvirt
                .iter()
                .map(|l| {
                    if l.connected {
                        format!("ok {}", l.uri)
                    } else {
                        format!("DOWN {}", l.uri)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            o,
            "  {:>4}  {:<14} {:<8} {:<6} {:<20} {:>4}  {}",
            n.nodeid,
            n.name.as_deref().unwrap_or("-"),
            if n.member { "member" } else { "OFFLINE" },
            age(now, n.since),
            if daemons.is_empty() {
                "-".to_string()
            } else {
                daemons.join("+")
            },
            n.vm_count,
            libvirt
        );
    }
    let unaccounted: Vec<&NodeView> = s.nodes.iter().filter(|n| !n.accounted).collect();
    if !unaccounted.is_empty() {
        let _ = writeln!(
            o,
            "NOT ACCOUNTED FOR (fenceline refuses to say a VM is off that may run there):"
        );
        for n in unaccounted {
            let _ = writeln!(
                o,
                "  {}: {}",
                names.node(n.nodeid),
                n.accounting.as_deref().unwrap_or("unknown")
            );
        }
        let _ = writeln!(
            o,
            "  (`fenceline confirm NODE` once a departed node is really down)"
        );
    }
    let asserted: Vec<&NodeView> = s
        .nodes
        .iter()
        .filter(|n| n.accounted && !n.member && n.accounting.is_some())
        .collect();
    if !asserted.is_empty() {
        let _ = writeln!(
            o,
            "DEPARTED, ACCOUNTED FOR (their lost VMs are answered off):"
        );
        for n in asserted {
            let how = n.accounting.as_deref().unwrap_or_default();
            let _ = writeln!(o, "  {}: {how}", names.node(n.nodeid));
        }
    }
    let self_fencing: Vec<String> = s
        .nodes
        .iter()
        .filter_map(|n| {
            n.self_fence_secs
                .map(|secs| format!("{} ({secs} s)", names.node(n.nodeid)))
        })
        .collect();
    if !self_fencing.is_empty() {
        let _ = writeln!(
            o,
            "Self-fencing: {} (destroys its VMs after that long out of a quorate membership)",
            self_fencing.join(", ")
        );
    }
    let _ = writeln!(o);
    let conflicts = s.domains.iter().filter(|d| d.conflict).count();
    let _ = writeln!(
        o,
        "Domains ({}{}):",
        s.domains.len(),
        if conflicts > 0 {
            format!(", {conflicts} CONFLICT")
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        o,
        "  {:<24} {:<12} {:<18} {:<6} UUID",
        "NAME", "STATE", "OWNER", "SINCE"
    );
    for d in &s.domains {
        let owner = if let Some(m) = d.migrating {
            format!("MIGRATING {}→{}", names.node(m.from), names.node(m.to))
        } else if d.conflict {
            let on: Vec<String> = d
                .placements
                .iter()
                .filter(|p| p.state.is_active())
                .map(|p| p.nodeid.to_string())
                .collect();
            format!("!! CONFLICT {}", on.join(","))
        } else {
            d.owner.map(|o| names.node(o)).unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            o,
            "  {:<24} {:<12} {:<18} {:<6} {}",
            d.name,
            d.state.as_str(),
            owner,
            age(now, d.since),
            d.uuid
        );
        for p in d.placements.iter().filter(|p| p.lost) {
            let _ = writeln!(
                o,
                "    LOST on {}: last seen {} {} ago; it may still run there",
                names.node(p.nodeid),
                p.state.as_str(),
                age(now, p.lost_since.unwrap_or(now))
            );
        }
    }
    if !s.networks.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "Networks ({}):", s.networks.len());
        let _ = writeln!(
            o,
            "  {:<18} {:<16} {:<8} {:<14} {:>5}  PORTS (VM mac)",
            "NODE", "NAME", "STATE", "BRIDGE", "PORTS"
        );
        for n in &s.networks {
            let mut ports: Vec<String> = n
                .ports
                .iter()
                .take(4)
                .map(|p| {
                    format!(
                        "{} {}",
                        p.owner.as_deref().unwrap_or("?"),
                        p.mac.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            if n.ports.len() > 4 {
                ports.push(format!("+{} more", n.ports.len() - 4));
            }
            let _ = writeln!(
                o,
                "  {:<18} {:<16} {:<8} {:<14} {:>5}  {}",
                names.node(n.node),
                n.name,
                if n.active { "active" } else { "inactive" },
                n.bridge.as_deref().unwrap_or("-"),
                n.ports.len(),
                ports.join(", ")
            );
        }
    }
    let c = &s.counters;
    let drops = [
        ("malformed fence-agents messages", c.malformed_fence_agents),
        ("malformed fenceline messages", c.malformed_own),
        ("unauthenticated CPG messages", c.unauthenticated_cpg),
        ("dropped inputs", c.dropped_inputs),
        ("dropped events", c.dropped_events),
        ("dropped effects", c.dropped_effects),
        ("dropped libvirt events", c.dropped_libvirt_events),
        ("dropped fence packets", c.dropped_fence_packets),
        ("dropped audit records", c.dropped_audit),
        ("dropped hook events", c.dropped_hook_events),
        ("multicast requests connected back here", c.claims_won),
        ("claimed by another node", c.claims_lost),
        (
            "not connected back (no claim decided)",
            c.claims_unavailable,
        ),
        ("claims evicted", c.claims_evicted),
        ("peer inventories with a lost chunk", c.inventory_gaps),
        ("dropped peer VM entries", c.dropped_peer_vms),
    ];
    let nonzero: Vec<String> = drops
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    if !nonzero.is_empty() {
        let _ = writeln!(o, "\nCounters: {}", nonzero.join(", "));
    }
    o
}

/// One human line per event: time, node, then the event as the console
/// words it (`fenceline_proto::display`).
pub fn render_event(e: &Event, names: &Names) -> String {
    let t = rfc3339::format(e.time);
    let at = e.node.map(|n| names.node(n)).unwrap_or_else(|| "-".into());
    let d = display::describe(&e.kind, &|n| names.node(n));
    format!("{t} {at:<10} {} {}", d.symbol, d.text)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("/etc/fenceline/test.toml"))
    }

    /// The console's settings are checked where the console is built, with
    /// the config's file:line:key errors.
    #[test]
    fn console_section_is_validated_with_line_and_key() {
        let c = parse(
            "[console]\ntheme = \"light\"\n[console.keys]\nfence-off = \"ctrl-k\"\nquit = [\"q\", \"Q\"]\n",
        )
        .unwrap();
        assert!(console_keymap(&c).is_ok());
        assert!(console_theme(&c, None).is_ok());
        let c = parse("[console]\ntheme = \"solarized\"\n").unwrap();
        let msg = console_theme(&c, None).unwrap_err();
        assert!(
            msg.starts_with(
                "config error: /etc/fenceline/test.toml:2: key `console.theme`: no theme `solarized`"
            ),
            "{msg}"
        );
        assert!(console_theme(&c, Some("light")).is_ok(), "--theme wins");
        let c = parse("[console.keys]\nhelp = \"?\"\nreboot = \"q\"\n").unwrap();
        assert_eq!(
            console_keymap(&c).unwrap_err().to_string(),
            "/etc/fenceline/test.toml:3: key `console.keys`: key `q` is bound to both `quit` and `reboot` (Main screen); unbind one of them"
        );
        let c = parse("[console.keys]\nfence = \"x\"\n").unwrap();
        let e = console_keymap(&c).unwrap_err();
        assert!(
            e.to_string()
                .contains(":2: key `console.keys`: `fence` is not a console action"),
            "{e}"
        );
    }

    #[test]
    fn an_event_line_is_time_node_and_the_shared_wording() {
        let e = Event {
            seq: 1,
            time: 0,
            node: Some(2),
            kind: fenceline_proto::api::EventKind::Membership {
                action: fenceline_proto::api::MembershipAction::Joined,
                nodeid: Some(3),
                name: None,
                detail: None,
            },
        };
        assert_eq!(
            render_event(&e, &Names::default()),
            "1970-01-01T00:00:00.000Z node2      + node3 joined"
        );
    }
}
