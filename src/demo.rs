//! `fenceline demo`: a local sandbox cluster with fenceline daemons, and the
//! console on node 1 until you quit; then the lab is torn down. The lab is
//! the same harness the integration tests use (`crate::sandbox`).
//!
//! Teardown happens on every way out: `q` in the console, Ctrl-C (a key in
//! the console, a signal before it starts), SIGTERM/SIGHUP, an error, and a
//! panic (the terminal is restored by the console's panic hook, then the
//! unwinding drops the [`Lab`], which tears it down). Only SIGKILL escapes;
//! the next start removes such labs (`cleanup_stale`), and so does
//! `fenceline lab cleanup`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::sandbox::{Lab, LabSpec, check_prerequisites_for, cleanup_stale};
use crate::ui::keymap::Keymap;
use crate::ui::theme::Theme;

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub nodes: usize,
    /// Add the 3-guest Pacemaker cluster (`--guests`): guests fence each
    /// other through the nodes' fenceline daemons.
    pub guests: bool,
    /// Stop by itself after this long (scripts and tests); `None` = until quit.
    pub duration: Option<Duration>,
    /// Refresh period of the text view (used when stdout is not a terminal).
    pub refresh: Duration,
    pub theme: Theme,
    pub keymap: Keymap,
}

/// Where the lab's fenceline daemons put their read-write socket (inside
/// each node's private mount namespace).
const NODE_SOCKET: &str = "/run/fenceline/fenceline.sock";

/// Runs the demo; returns when the user quits (or `duration` passed).
pub fn run(opts: DemoOptions) -> anyhow::Result<()> {
    if !(3..=9).contains(&opts.nodes) {
        anyhow::bail!("--nodes must be between 3 and 9");
    }
    let exe = std::env::current_exe().context("cannot find the fenceline binary")?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "the demo must run as root: it creates network namespaces, mounts and a \
             private corosync and libvirtd per node. Run: sudo ./scripts/demo.sh"
        );
    }
    check_prerequisites_for(false, false, Some(&exe)).map_err(|m| {
        anyhow::anyhow!("{m}\n(or run ./scripts/demo.sh, which installs what is missing)")
    })?;
    let interactive = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    // Labs left by a run that was killed with SIGKILL.
    if let Ok(cleaned) = cleanup_stale()
        && !cleaned.is_empty()
    {
        eprintln!("fenceline: removed stale labs: {}", cleaned.join(", "));
    }
    let stop = install_stop_flag()?;
    eprintln!(
        "fenceline: bringing up a {}-node sandbox cluster (corosync + libvirtd + fenceline per node){}...",
        opts.nodes,
        if opts.guests {
            " and a 3-guest Pacemaker cluster (corosync + pacemakerd per guest; about 30 s)"
        } else {
            ""
        }
    );
    let t0 = Instant::now();
    let lab = Lab::up(LabSpec {
        nodes: opts.nodes,
        fenceline_bin: Some(exe),
        guests: if opts.guests { 3 } else { 0 },
        ..LabSpec::default()
    })
    .context("the sandbox lab did not come up")?;
    // Open the console on a settled cluster, so its first screen is whole
    // (and the demo's notes are not buried under the start-up events).
    wait_settled(&lab, &stop);
    let up = t0.elapsed();
    eprintln!(
        "fenceline: lab {} up in {:.1} s",
        lab.prefix(),
        up.as_secs_f64()
    );
    let result = if stop.is_set() {
        Ok(())
    } else if interactive {
        console(&lab, &opts, up)
    } else {
        text_view(&lab, &opts, &stop, up)
    };
    eprintln!("fenceline: tearing the lab down...");
    lab.down().context("teardown")?;
    eprintln!("fenceline: lab {} removed", lab.prefix());
    result
}

/// Waits (up to 20 s) until node 1 sees every node as a member and every
/// node's lab domains (and the guests' domains) in its map.
fn wait_settled(lab: &Lab, stop: &StopFlag) {
    let nodes = lab.node_count();
    let want = 3 * nodes + lab.guest_count();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) && !stop.is_set() {
        if let Ok(v) = lab.status_json(1) {
            let members = v["nodes"]
                .as_array()
                .map_or(0, |n| n.iter().filter(|n| n["member"] == true).count());
            let domains = v["domains"].as_array().map_or(0, Vec::len);
            if v["quorate"] == true && members == nodes && domains == want {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The console in this (the host's) namespaces, attached to node 1's
/// read-write socket through `/proc/<holder>/root`.
fn console(lab: &Lab, opts: &DemoOptions, up: Duration) -> anyhow::Result<()> {
    let socket = lab.node_path(1, NODE_SOCKET)?;
    let mut notes = vec![format!(
        "demo: lab {} ({} nodes{}) up in {:.1} s, console attached to node1 ({}); q quits and tears it down",
        lab.prefix(),
        lab.node_count(),
        guests_label(lab),
        up.as_secs_f64(),
        socket.display()
    )];
    notes.extend(
        hints(lab)
            .lines()
            .skip(1)
            .map(|l| format!("demo: {}", l.trim())),
    );
    crate::ui::run(crate::ui::ConsoleOptions {
        socket,
        read_only: false,
        theme: opts.theme.clone(),
        keymap: opts.keymap.clone(),
        notes,
        quit_after: opts.duration,
    })
}

/// Without a terminal: `fenceline status` of node 1, refreshed.
fn text_view(lab: &Lab, opts: &DemoOptions, stop: &StopFlag, up: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let hint = hints(lab);
    loop {
        let out = lab.fenceline(1, &["status"])?;
        let events = lab.fenceline(1, &["events"])?;
        let mut o = std::io::stdout().lock();
        let _ = writeln!(
            o,
            "fenceline demo: lab {} ({} nodes{}, up in {:.1} s) — `fenceline status` on node1 \
             (no terminal: text view; Ctrl-C stops)\n",
            lab.prefix(),
            lab.node_count(),
            guests_label(lab),
            up.as_secs_f64()
        );
        let _ = o.write_all(out.stdout.as_bytes());
        if !out.success() {
            let _ = writeln!(o, "{}", out.stderr.trim());
        }
        let recent: Vec<&str> = events.stdout.lines().rev().take(RECENT_EVENTS).collect();
        let _ = writeln!(o, "\nnode1's latest events:");
        for l in recent.iter().rev() {
            let _ = writeln!(o, "  {l}");
        }
        let _ = writeln!(o, "\n{hint}");
        let _ = o.flush();
        drop(o);
        let deadline = Instant::now() + opts.refresh;
        while Instant::now() < deadline {
            if stop.is_set() || opts.duration.is_some_and(|d| started.elapsed() >= d) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Event lines the text view shows under the status.
const RECENT_EVENTS: usize = 8;

fn guests_label(lab: &Lab) -> String {
    match lab.guest_count() {
        0 => String::new(),
        n => format!(" + {n}-guest Pacemaker cluster"),
    }
}

fn hints(lab: &Lab) -> String {
    let pid = |i| lab.holder_pid(i).map(|p| p.to_string()).unwrap_or_default();
    let mut s = format!(
        "Try, in another terminal:\n  \
         nsenter -t {p2} -m -n virsh -c test+unix:///default destroy vm2a    # watch vm2a stop\n  \
         nsenter -t {p1} -m -n {exe} events --follow                       # node1's live events\n  \
         kill -KILL $(awk '$3==\"corosync/n3\" {{print $1}}' {dir}/pids | tail -1)   # lose node3",
        p1 = pid(1),
        p2 = pid(2),
        exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "fenceline".into()),
        dir = lab.dir().display(),
    );
    s.push_str(&guest_hints(lab));
    s
}

/// With `--guests`: per guest its address, its domain's host and the
/// command that kills its corosync by pid (Pacemaker then fences it
/// through fence_xvm; the host acting names the requesting guest).
fn guest_hints(lab: &Lab) -> String {
    let mut s = String::new();
    for g in 1..=lab.guest_count() {
        let name = lab.guest_name(g);
        let pid = lab
            .guest_corosync_pid(g)
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into());
        s.push_str(&format!(
            "\n  kill -KILL {pid}   # {name}'s corosync ({name} = {ip}, domain {name} on node{h}): Pacemaker fences {name}",
            ip = lab.guest_ip(g),
            h = lab.guest_host(g),
        ));
    }
    if lab.guest_count() > 0 {
        s.push_str(
            "\n  # guest1's fence shows on node1 (here), \"from multicast:guestN (address)\" names the guest that asked",
        );
        s.push_str(
            "\n  # guest2's and guest3's show on node2's and node3's events (the events command above, with their pid)",
        );
        s.push_str(
            "\n  # one guest at a time: with two gone the last one has no quorum and fences nobody",
        );
        s.push_str(&format!(
            "\n  # node pids: {}",
            (1..=lab.node_count())
                .map(|i| format!(
                    "node{i} {}",
                    lab.holder_pid(i).map(|p| p.to_string()).unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    s
}

/// Set by SIGINT/SIGTERM/SIGHUP so the demo can tear down before exiting.
/// (While the console runs, it takes these signals itself and quits.)
struct StopFlag(&'static std::sync::atomic::AtomicBool);

impl StopFlag {
    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn install_stop_flag() -> anyhow::Result<StopFlag> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` only stores to an atomic, which is
        // async-signal-safe; the handler stays valid for the whole process.
        let prev = unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        if prev == libc::SIG_ERR {
            anyhow::bail!("cannot install a handler for signal {sig}");
        }
    }
    Ok(StopFlag(&STOP))
}
