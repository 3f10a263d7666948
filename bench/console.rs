//! Console benchmark, run by hand (`bench/console.sh`); prints tables.
//!
//! 1. Frame render time (no root needed): the console's `view::draw` into
//!    ratatui's `TestBackend` at 140x45 and 80x24, with 100, 1,000 and 10,000
//!    domains, one frame per scroll step (a key, `App::update`, a draw), plus
//!    the cost of applying a new snapshot (filter + sort) and of one filter
//!    keystroke. p50/p99 over `FRAMES` frames.
//! 2. `--latency` (root): a 3-node lab; the real console attached to node 1's
//!    socket in a private tmux server; `virsh destroy/start vm2a` on node 2;
//!    the time until node 1's console *screen* shows the new state, polled with
//!    `tmux capture-pane` as fast as tmux answers (the poll interval is
//!    printed; it bounds the resolution). Also the time until the change is in
//!    node 1's event stream, so the console's own share is visible.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use fenceline::sandbox::{Lab, LabSpec, wait_until};
use fenceline::ui::app::{App, Msg};
use fenceline::ui::fixtures;
use fenceline::ui::keymap::Keymap;
use fenceline::ui::theme::Theme;
use fenceline::ui::view;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
#[path = "common.rs"]
mod common;

use common::{Follower, now_ms, pct};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn key(a: &mut App, c: KeyCode) {
    a.update(Msg::Key(KeyEvent::new(c, KeyModifiers::NONE)));
}

fn render_table(frames: usize) {
    let theme = Theme::builtin("default").expect("default theme");
    println!(
        "\nFrame render time (view::draw into TestBackend; {frames} frames each, one scroll step per frame)\n"
    );
    println!(
        "| domains | terminal | frame p50 | frame p99 | new snapshot (filter+sort) p50 | filter keystroke p50 |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for n in [100usize, 1_000, 10_000] {
        for (w, h) in [(140u16, 45u16), (80, 24)] {
            let snap = Arc::new(fixtures::big(n));
            let mut app = App::new(false, Keymap::default(), "bench", fixtures::NOW);
            app.update(Msg::Resize(w, h));
            app.update(Msg::Connected);
            app.update(Msg::Snapshot(snap.clone()));
            for e in fixtures::events(&snap) {
                app.update(Msg::Event(Box::new(e)));
            }
            app.update(Msg::BacklogEnd);
            let mut term = Terminal::new(TestBackend::new(w, h)).expect("test backend");
            term.draw(|f| view::draw(f, &app, &theme)).expect("draw");
            let mut frame = Vec::with_capacity(frames);
            for i in 0..frames {
                let t0 = Instant::now();
                // Down through the table, back up at the end: every frame differs.
                key(
                    &mut app,
                    if (i / n.min(500)) % 2 == 0 {
                        KeyCode::Down
                    } else {
                        KeyCode::Up
                    },
                );
                term.draw(|f| view::draw(f, &app, &theme)).expect("draw");
                frame.push(ms(t0.elapsed()));
            }
            let mut apply = Vec::new();
            for _ in 0..frames.min(50) {
                let s = Arc::new((*snap).clone());
                let t0 = Instant::now();
                app.update(Msg::Snapshot(s));
                apply.push(ms(t0.elapsed()));
            }
            let mut filter = Vec::new();
            key(&mut app, KeyCode::Char('/'));
            for i in 0..frames.min(50) {
                let c = if i % 2 == 0 {
                    KeyCode::Char('9')
                } else {
                    KeyCode::Backspace
                };
                let t0 = Instant::now();
                key(&mut app, c);
                filter.push(ms(t0.elapsed()));
            }
            key(&mut app, KeyCode::Esc);
            println!(
                "| {n} | {w}x{h} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
                pct(&mut frame, 0.5),
                pct(&mut frame, 0.99),
                pct(&mut apply, 0.5),
                pct(&mut filter, 0.5)
            );
        }
    }
}

/// A tmux server of our own; killed by socket name when dropped.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.0)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("tmux")?;
        if !out.status.success() {
            bail!(
                "tmux {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn vm_row<'a>(screen: &'a str, vm: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.starts_with('┃') && l.contains(&format!(" {vm} ")))
        .unwrap_or("")
}

fn latency(bin: &Path, rounds: usize) -> Result<()> {
    let lab = Lab::up(LabSpec {
        fenceline_bin: Some(bin.to_path_buf()),
        ..LabSpec::default()
    })?;
    if !wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        lab.status_json(1)
            .is_ok_and(|v| v["domains"].as_array().is_some_and(|d| d.len() == 9))
    }) {
        bail!("3-node lab did not converge");
    }
    let tmux = Tmux(lab.tmux_socket());
    let sock = lab.node_path(1, "/run/fenceline/fenceline.sock")?;
    let b = bin.to_string_lossy().into_owned();
    tmux.run(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "c",
        "-x",
        "140",
        "-y",
        "45",
        &b,
        "console",
        "--socket",
        &sock.to_string_lossy(),
    ])?;
    if !wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        tmux.run(&["capture-pane", "-p", "-t", "c"])
            .is_ok_and(|s| vm_row(&s, "vm2a").contains("running"))
    }) {
        bail!("the console did not show vm2a");
    }
    let events = Follower::start(&lab, 1, bin)?;
    std::thread::sleep(Duration::from_millis(300));
    events.drain();

    // A poller captures the console's screen back to back, so a change is
    // seen within one capture (its duration is the resolution, printed).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, screens) = mpsc::channel::<(Instant, Instant, String)>();
    let poller = {
        let stop = stop.clone();
        let sock = tmux.0.clone();
        std::thread::spawn(move || {
            let t = Tmux(sock);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let start = Instant::now();
                let Ok(s) = t.run(&["capture-pane", "-p", "-t", "c"]) else {
                    break;
                };
                let row = vm_row(&s, "vm2a").to_string();
                if tx.send((start, Instant::now(), row)).is_err() {
                    break;
                }
            }
            // Not ours to kill: the lab's server outlives this handle.
            std::mem::forget(t);
        })
    };

    let (mut from_cmd, mut from_exit, mut from_stream, mut captures) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let (verb, state, text) = if r % 2 == 0 {
            ("destroy", "shutoff", "○ shut off")
        } else {
            ("start", "running", "● running")
        };
        while screens.try_recv().is_ok() {}
        let t0 = Instant::now();
        let t0_ms = now_ms();
        lab.virsh(2, &[verb, "vm2a"])?;
        let t_exit = t0.elapsed();
        let seen = loop {
            let (start, end, row) = screens
                .recv_timeout(Duration::from_secs(10))
                .context("the screen poller stopped")?;
            captures.push(ms(end - start));
            // Only captures begun after the change was made count.
            if start >= t0 && row.contains(text) {
                break end - t0;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("the console never showed vm2a {state}: {row}");
            }
        };
        let Some(t_stream) = events
            .wait(Duration::from_secs(5), |v| {
                v["kind"] == "domain" && v["name"] == "vm2a" && v["state"] == state
            })
            .map(|(t, _)| t)
        else {
            bail!("node 1's event stream did not show vm2a {state}");
        };
        from_cmd.push(ms(seen));
        from_exit.push(ms(seen.saturating_sub(t_exit)));
        from_stream.push(ms(seen) - t_stream.saturating_sub(t0_ms) as f64);
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(screens);
    let _ = poller.join();
    println!(
        "\nPeer change → node 1's console screen ({rounds} changes of vm2a on node 2; 3-node lab;\n\
         \"on screen\" = end of the first capture, begun after the change, that shows it)\n"
    );
    println!("| measure | p50 | p99 |");
    println!("|---|---:|---:|");
    let row = |what: &str, v: &mut Vec<f64>| {
        println!(
            "| {what} | {:.0} ms | {:.0} ms |",
            pct(v, 0.5),
            pct(v, 0.99)
        );
    };
    row("`virsh` on node 2 returned → on screen", &mut from_exit);
    row("`virsh` on node 2 started → on screen", &mut from_cmd);
    row(
        "in node 1's event stream → on screen (the console's share)",
        &mut from_stream,
    );
    row("one `capture-pane` (the resolution)", &mut captures);
    drop(events);
    drop(tmux);
    lab.down()?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let frames = std::env::var("FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    render_table(frames);
    if args.iter().any(|a| a == "--latency") {
        let bin = std::env::var_os("FENCELINE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/release/fenceline"));
        // Nodes run it from `/`: the path must be absolute.
        let bin = std::fs::canonicalize(&bin)
            .with_context(|| format!("fenceline binary {}", bin.display()))?;
        let rounds = std::env::var("ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40);
        latency(&bin, rounds)?;
    }
    Ok(())
}
