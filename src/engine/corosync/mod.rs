//! corosync driver: CPG groups `fence-agents` (fence_virtd's wire format) and
//! fenceline's own group (versioned), votequorum/quorum membership, cmap node
//! names. Dispatch runs through tokio's `AsyncFd` on a dedicated thread.
//!
//! How it works:
//! - one OS thread runs a current-thread tokio runtime; every corosync call
//!   and every callback happens on that thread;
//! - rust-corosync callbacks are plain `fn`s: they only copy their arguments
//!   into a thread-local buffer (`callbacks::PENDING`). After each `dispatch` the
//!   driver drains the buffer, parses the messages and sends model
//!   [`Input`](crate::engine::model::Input)s with back-pressure. Nothing calls into corosync from inside a
//!   callback (rust-corosync holds a global mutex while a callback runs);
//! - one session = two CPG handles (one per group), one quorum handle
//!   (membership + quorate), one votequorum handle (votes) and a short-lived
//!   cmap handle (cluster name, nodelist names);
//! - when corosync goes away (`dispatch` fails, usually `CsErrLibrary`), the
//!   driver reports [`Input::CorosyncDown`](crate::engine::model::Input::CorosyncDown), drops the session and reconnects
//!   with exponential backoff (200 ms → 5 s, ±20 % jitter). Effects that
//!   arrive meanwhile are discarded: on rejoin our own join shows up as a
//!   confchg with a non-empty joined list, and the model re-announces.
//!
//! Self-delivery: CPG delivers every message back to its sender. The driver
//! forwards those like any other message (STORE_VM as
//! `Input::PeerRecord` with `from` = our nodeid, own-group messages as
//! `Input::PeerMessage`); the model ignores messages from the local node.
//! Keeping the policy in the model keeps the driver dumb and makes the echo
//! observable in tests.
//!
//! Rooms: `callbacks` (the C callback trampolines and their buffer),
//! `session` (one connection: handles, dispatch, multicast, votes, cmap),
//! `driver` (the reconnect loop and effect handling), `conversions`
//! (CPG/quorum data ↔ model inputs), `error` ([`CorosyncError`]), `auth`
//! (the cluster key's seal and the authenticated senders).

mod auth;
mod callbacks;
mod conversions;
mod driver;
mod error;
mod session;
#[cfg(test)]
mod tests;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::InputTx;
use crate::engine::model::Effect;

pub use auth::CpgAuth;
pub use error::{CorosyncError, Lib};

/// Settings of the corosync driver.
#[derive(Debug, Clone)]
pub struct CorosyncConfig {
    /// fence_virtd's group name: `fence-agents`.
    pub fence_group: String,
    /// fenceline's own group name.
    pub own_group: String,
    /// The cluster key and who may send.
    pub auth: CpgAuth,
}

impl Default for CorosyncConfig {
    fn default() -> Self {
        Self {
            fence_group: "fence-agents".into(),
            own_group: "fenceline".into(),
            auth: CpgAuth::default(),
        }
    }
}

/// Starts the driver on its own thread.
pub fn spawn(
    cfg: CorosyncConfig,
    inputs: InputTx,
    effects: mpsc::Receiver<Effect>,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("corosync")
        .build()?;
    std::thread::Builder::new()
        .name("corosync".into())
        .spawn(move || {
            rt.block_on(driver::Driver::new(cfg, inputs, effects, cancel).run());
        })
}
