//! The console (`fenceline console`, `fenceline monitor`): a live view of the
//! cluster map and its events, with fence off, reboot and start, and the
//! confirmation that a departed node is down, behind a confirmation.
//!
//! It reaches the engine only through `fenceline_proto::api` and the control-socket
//! client; it never imports a driver. The shape is the Elm one:
//! - [`app::App`] holds all state; `App::update(Msg) -> Vec<Effect>` is pure;
//! - [`view::draw`] reads the app and draws one frame;
//! - this module owns the terminal and the loop: crossterm's `EventStream`,
//!   the daemon streams ([`source`]), a slow tick for ages and toasts, and
//!   signals. It redraws only when the app says something changed.
//!
//! Read-only is enforced three times: the app never asks for a mutating
//! action in read-only mode, [`dispatch`] refuses one anyway, and the daemon
//! refuses it on its read-only socket.

pub mod app;
#[doc(hidden)]
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod keymap;
pub mod layout;
pub mod source;
pub mod theme;
pub mod view;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use crossterm::event::{Event as TermEvent, EventStream};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use app::{App, Effect, Msg};
use fenceline_proto::api::now_millis;
use keymap::Keymap;
use theme::Theme;

/// How the console runs.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// The daemon's control socket.
    pub socket: PathBuf,
    /// Monitor mode: no mutating actions (the read-only socket refuses them too).
    pub read_only: bool,
    pub theme: Theme,
    pub keymap: Keymap,
    /// Lines shown in the event pane at start (the demo's hints).
    pub notes: Vec<String>,
    /// Quit by itself after this long (scripts, tests).
    pub quit_after: Option<Duration>,
}

impl ConsoleOptions {
    pub fn new(socket: PathBuf, read_only: bool, theme: Theme, keymap: Keymap) -> Self {
        ConsoleOptions {
            socket,
            read_only,
            theme,
            keymap,
            notes: Vec::new(),
            quit_after: None,
        }
    }
}

/// The slow tick: ages on screen change once a second, toasts expire.
const TICK: Duration = Duration::from_millis(250);
/// Messages applied per wake-up before a frame is drawn.
const BATCH: usize = 512;

/// Runs the console until the user quits or a signal (SIGTERM, SIGHUP,
/// SIGINT) arrives. The terminal is restored on every way out, panics included.
pub fn run(opts: ConsoleOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("fenceline-console")
        .build()
        .context("cannot start the async runtime")?;
    let r = rt.block_on(run_async(opts));
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

/// Restores the terminal when dropped (normal exit, `?`, unwinding panic);
/// `ratatui::try_init` also installs a panic hook that restores it first.
struct TerminalGuard(ratatui::DefaultTerminal);

impl TerminalGuard {
    fn new() -> anyhow::Result<TerminalGuard> {
        let t = ratatui::try_init().context("cannot set up the terminal (is this a terminal?)")?;
        Ok(TerminalGuard(t))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

async fn run_async(opts: ConsoleOptions) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;

    let mut term = TerminalGuard::new()?;
    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    let cancel = CancellationToken::new();
    let mut source_task =
        tokio::spawn(source::run(opts.socket.clone(), tx.clone(), cancel.clone()));

    let mut app = App::new(
        opts.read_only,
        opts.keymap.clone(),
        opts.socket.display().to_string(),
        now_millis(),
    );
    for n in &opts.notes {
        app.note(n.clone());
    }
    let quit_at = opts.quit_after.map(|d| tokio::time::Instant::now() + d);
    let size = term.0.size().context("terminal size")?;
    app.update(Msg::Resize(size.width, size.height));
    let mut input = EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);

    let result = loop {
        if app.quit {
            break Ok(());
        }
        if app.dirty {
            app.dirty = false;
            if let Err(e) = term.0.draw(|f| view::draw(f, &app, &opts.theme)) {
                break Err(anyhow::Error::from(e).context("drawing the console"));
            }
        }
        let mut effects = Vec::new();
        tokio::select! {
            ev = input.next() => match ev {
                Some(Ok(TermEvent::Key(k))) => {
                    app.update(Msg::Tick(now_millis()));
                    effects = app.update(Msg::Key(k));
                }
                Some(Ok(TermEvent::Resize(w, h))) => {
                    app.update(Msg::Resize(w, h));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(anyhow::Error::from(e).context("reading the terminal")),
                None => break Ok(()),
            },
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break Ok(());
                }
                app.update(Msg::Tick(now_millis()));
                apply_batch(&mut app, &mut batch);
            }
            // The source only ends when cancelled; ending early is a bug
            // (a panic): say so instead of showing a frozen map.
            r = &mut source_task => {
                let why = match r {
                    Err(e) if e.is_panic() => "panicked".to_string(),
                    Err(e) => e.to_string(),
                    Ok(()) => "ended".to_string(),
                };
                break Err(anyhow::anyhow!("the daemon connection task {why}"));
            }
            _ = tick.tick() => {
                app.update(Msg::Tick(now_millis()));
            }
            _ = async { tokio::time::sleep_until(quit_at.unwrap_or_else(tokio::time::Instant::now)).await }, if quit_at.is_some() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = sighup.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
        }
        for e in effects {
            dispatch(e, &opts, &tx);
        }
    };
    cancel.cancel();
    drop(term);
    result
}

/// Applies a batch of messages; of several snapshots only the last is
/// applied (each one rebuilds the sorted table; the last one wins anyway).
pub fn apply_batch(app: &mut App, batch: &mut Vec<Msg>) {
    let last_snapshot = batch.iter().rposition(|m| matches!(m, Msg::Snapshot(_)));
    for (i, m) in batch.drain(..).enumerate() {
        if matches!(m, Msg::Snapshot(_)) && Some(i) != last_snapshot {
            continue;
        }
        app.update(m);
    }
}

/// Carries out an effect. Read-only is enforced here as well: a mutating
/// request never leaves a read-only console, whatever path asked for it.
fn dispatch(effect: Effect, opts: &ConsoleOptions, tx: &mpsc::Sender<Msg>) {
    match effect {
        Effect::ConfirmNode { id, node } => {
            let tx = tx.clone();
            let socket = opts.socket.clone();
            let read_only = opts.read_only;
            tokio::spawn(async move {
                let outcome = if read_only {
                    Err("refused: this console is read-only".into())
                } else {
                    source::confirm(&socket, &node).await
                };
                let _ = tx.send(Msg::ConfirmDone { id, node, outcome }).await;
            });
        }
        Effect::Fence { id, op, domain } => {
            let tx = tx.clone();
            if opts.read_only {
                tokio::spawn(async move {
                    let _ = tx
                        .send(Msg::ActionDone {
                            id,
                            op,
                            domain,
                            outcome: Err("refused: this console is read-only".into()),
                        })
                        .await;
                });
                return;
            }
            let socket = opts.socket.clone();
            tokio::spawn(async move {
                let outcome = source::fence(&socket, op, &domain).await;
                let _ = tx
                    .send(Msg::ActionDone {
                        id,
                        op,
                        domain,
                        outcome,
                    })
                    .await;
            });
        }
    }
}
