//! One worker thread per URI: connect, register, list, follow events,
//! reconnect with backoff, run commands.
//!
//! - `session`: one connection (register, list, follow, close);
//! - `events`: one libvirt event, through the reboot filter, to the engine;
//! - `inventory`: reading domains back, the full listings (domains,
//!   networks, ports);
//! - `commands`: destroy/start/state/reboot for the engine.

mod commands;
mod events;
mod inventory;
mod session;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use fenceline_proto::backoff::Backoff;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use virt::connect::Connect;
use virt::error::{Error, ErrorNumber};

use super::ffi::{self, RawEvent, Shared};
use super::reboot_filter::{FilterConfig, Ms};
use super::{CommandRequest, EventLoopLease, Tuning, WorkerStats};
use crate::engine::InputTx;
use crate::engine::model::Input;
use fenceline_proto::api::now_millis;

/// Longest single wait, so cancellation is noticed quickly.
const MAX_WAIT: Duration = Duration::from_millis(200);
/// A session that lasted this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// Shortest first reconnect delay, whatever the tuning says.
const BACKOFF_FLOOR: Duration = Duration::from_millis(10);

pub(super) struct Worker {
    pub index: usize,
    pub uri: String,
    pub inputs: InputTx,
    pub cancel: CancellationToken,
    pub tuning: Tuning,
    pub filter_cfg: FilterConfig,
    pub reconcile: Duration,
    pub events_tx: SyncSender<RawEvent>,
    pub events: Receiver<RawEvent>,
    pub commands: Receiver<CommandRequest>,
    pub stats: Arc<WorkerStats>,
    pub shared: Arc<Shared>,
    /// Keeps the event loop running while this worker lives.
    pub _lease: Arc<EventLoopLease>,
}

/// Why a session or the worker stops.
#[derive(Debug)]
enum Stop {
    Cancelled,
    /// The engine dropped its input channel.
    EngineGone,
    /// The connection is gone (or could not be set up).
    Lost(String),
}

enum Open {
    Opened(Connect),
    Failed(String),
    Cancelled,
}

fn is_no_domain(e: &Error) -> bool {
    e.code().is(ErrorNumber::NoDomain)
}

impl Worker {
    pub fn run(self) {
        let origin = Instant::now();
        let seed = now_millis() ^ ((self.index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut backoff = Backoff::new(
            self.tuning.backoff_initial.max(BACKOFF_FLOOR),
            self.tuning.backoff_max,
            seed,
        );
        let mut generation = 0u64;
        let mut down_reported = false;
        info!(uri = %self.uri, "libvirt worker started");
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            generation += 1;
            let attempt = self.stats.connect_attempts.fetch_add(1, Ordering::Relaxed) + 1;
            debug!(uri = %self.uri, attempt, "connecting to libvirt");
            let (failure, established) = match self.open() {
                Open::Cancelled => break,
                Open::Failed(e) => (e, false),
                Open::Opened(conn) => {
                    let started = Instant::now();
                    let (stop, established) = self.session(conn, generation, origin);
                    match stop {
                        Stop::Cancelled | Stop::EngineGone => break,
                        Stop::Lost(e) => {
                            if established && started.elapsed() >= STABLE_SESSION {
                                backoff.reset();
                            }
                            (e, established)
                        }
                    }
                }
            };
            if established {
                down_reported = false;
            }
            if down_reported {
                debug!(uri = %self.uri, attempt, error = %failure, "libvirt still unreachable");
            } else {
                warn!(uri = %self.uri, attempt, error = %failure, "libvirt connection down");
                down_reported = true;
                let sent = self.send(Input::LibvirtLink {
                    at: now_millis(),
                    uri: self.uri.clone(),
                    connected: false,
                    error: Some(failure),
                });
                if sent.is_err() {
                    break;
                }
            }
            let delay = backoff.next_delay();
            debug!(uri = %self.uri, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "reconnect backoff");
            if !self.idle_wait(delay) {
                break;
            }
        }
        // Answer whatever is still queued.
        self.run_commands(None, Instant::now());
        info!(uri = %self.uri, "libvirt worker stopped");
    }

    fn send(&self, input: Input) -> Result<(), Stop> {
        if self.inputs.blocking_send(input) {
            Ok(())
        } else {
            Err(Stop::EngineGone)
        }
    }

    /// Opens the connection on a helper thread so cancellation is noticed
    /// even while `virConnectOpen` hangs on an unresponsive daemon.
    fn open(&self) -> Open {
        let (tx, rx) = mpsc::sync_channel::<Result<Connect, Error>>(1);
        let uri = self.uri.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("libvirt-open-{}", self.index))
            .spawn(move || {
                let r = Connect::open(Some(&uri));
                if let Err(mpsc::SendError(Ok(conn))) = tx.send(r) {
                    // The worker gave up waiting (shutdown): close what we got.
                    if let Err(e) = ffi::close(conn) {
                        debug!(%uri, "closing abandoned connection: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            return Open::Failed(format!("cannot start connect thread: {e}"));
        }
        loop {
            match rx.recv_timeout(MAX_WAIT) {
                Ok(Ok(conn)) => return Open::Opened(conn),
                Ok(Err(e)) => return Open::Failed(e.to_string()),
                Err(RecvTimeoutError::Timeout) => {
                    if self.cancel.is_cancelled() {
                        // Not waiting any longer. A connection that arrives
                        // later is closed by the helper thread itself.
                        if let Ok(Ok(conn)) = rx.try_recv()
                            && let Err(e) = ffi::close(conn)
                        {
                            debug!(uri = %self.uri, "closing connection: {e}");
                        }
                        return Open::Cancelled;
                    }
                    self.run_commands(None, Instant::now());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Open::Failed("connect thread ended without a result".into());
                }
            }
        }
    }

    /// Waits `delay` (cancellable), answering commands with "not connected".
    /// Returns false when cancelled.
    fn idle_wait(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            if self.cancel.is_cancelled() {
                return false;
            }
            self.run_commands(None, Instant::now());
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            // Events of closed connections and wake-ups: nothing to do.
            match self.events.recv_timeout(left.min(MAX_WAIT)) {
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(left.min(MAX_WAIT)),
            }
        }
    }
}

fn mono(origin: Instant) -> Ms {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}
