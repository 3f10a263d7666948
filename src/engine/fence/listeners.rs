//! The fence_xvm / fence_virt listeners: everything between the network and
//! the engine's [`fence`](crate::engine::EngineHandle::fence) call.
//!
//! Each configured listener (multicast, tcp, vsock) verifies the 176-byte
//! request, refuses one in another listener's format, drops exact copies of
//! any request verified in the last hour (one record for the process, see
//! [`guard`](super::guard)) and fence_virtd-style duplicates, refuses unsafe
//! connect-back destinations, lets one fenceline node of the cluster connect
//! back per fence_xvm run (a claim over the own CPG group, see
//! `model/fence/claim.rs`), runs the challenge/response (refusing our own
//! outstanding challenges offered back), checks the
//! permission groups and then answers: `null`, `monitor` and `list` here,
//! `off`/`on`/`reboot`/`status` through the engine. Unlike fence_virtd,
//! requests are handled concurrently (bounded by [`MAX_CONCURRENT`] per
//! listener), so one slow request does not block the others.
//!
//! Everything refused before any action (bad or weaker hash, duplicate,
//! replay, wrong listener, refused destination, undecided claim, truncated,
//! garbage, failed connect-back or challenge, no free slot) is
//! logged with its reason and source and counted as `dropped_fence_packets`
//! (at most one engine input per second per listener).
//!
//! - here: the [`FenceService`] the listeners call, their settings and
//!   [`spawn`];
//! - `supervise`: each listener's bind (waiting for a missing interface or
//!   address), its state for `status`, and the reload;
//! - `request`: one listener's shared state and a request's path through it
//!   (check, in-flight mark, handshake, history);
//! - `answer`: the answer per operation and the host list;
//! - `refusal`: why a request was refused, the drop counter, the
//!   rate-limited warning;
//! - `sources`: per-source slots (pre-authentication, serving) and the
//!   per-source request rate.

mod answer;
mod refusal;
mod request;
mod sources;
mod supervise;
#[cfg(any(test, feature = "fixtures"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::audit::AuditTx;
use super::multicast::MulticastSettings;
use super::perm::PermissionGroup;
use super::tcp::TcpSettings;
use super::vsock::VsockSettings;
use crate::engine::model::ClaimOutcome;
use crate::engine::{EngineHandle, FenceAnswer, FenceCall, InputTx};
use fenceline_proto::api::Snapshot;
use fenceline_proto::fence_xvm::HashType;

pub(crate) use refusal::Refusal;
pub(crate) use request::{Common, Origin};
pub(crate) use sources::{Full, SourceSlots};
pub use supervise::ListenerSet;

/// Requests one listener handles at the same time; more are dropped and counted.
pub const MAX_CONCURRENT: usize = 32;
/// Each host-list record write (fence_virtd: 1 s).
pub const RECORD_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The final result byte (fence_virtd has no limit; we do).
pub const RESULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the listeners need from the engine. [`EngineHandle`] is the real
/// one; tests may use a recording stand-in.
pub trait FenceService: Clone + Send + Sync + 'static {
    /// Routes a fence request (off, on, reboot, status) and waits for the answer.
    fn fence(&self, call: FenceCall) -> impl Future<Output = FenceAnswer> + Send;
    /// The current cluster map (for `list` and the local node id).
    fn snapshot(&self) -> Arc<Snapshot>;
    /// Whether this node connects back for the multicast run `claim` (a
    /// request for `domain`): one fenceline node per run, cluster-wide.
    fn claim(&self, claim: String, domain: String) -> impl Future<Output = ClaimOutcome> + Send;
}

impl FenceService for EngineHandle {
    fn fence(&self, call: FenceCall) -> impl Future<Output = FenceAnswer> + Send {
        EngineHandle::fence(self, call)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        EngineHandle::snapshot(self)
    }

    fn claim(&self, claim: String, domain: String) -> impl Future<Output = ClaimOutcome> + Send {
        EngineHandle::claim(self, claim, domain)
    }
}

/// The listeners to start and the permission groups they check (the
/// daemon builds these from the config's `[listeners.*]` and `[[groups]]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListenerSettings {
    pub multicast: Option<MulticastSettings>,
    pub tcp: Option<TcpSettings>,
    pub vsock: Option<VsockSettings>,
    pub groups: Vec<PermissionGroup>,
    /// `listeners.monitor_requires_libvirt`: `monitor` also fails while
    /// this host's libvirt is down.
    pub monitor_requires_libvirt: bool,
    /// `listeners.requester_names`: a hosts file naming requesters by
    /// address in fence events and the audit log (read at start and on
    /// every reload).
    pub requester_names: Option<PathBuf>,
}

/// A listener's shared key and hashes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeySettings {
    pub key_file: PathBuf,
    /// `listeners.allow_loose_key_mode`: accept a key file group or others
    /// may read (with a warning) instead of refusing to start.
    pub allow_loose_mode: bool,
    /// The weakest packet hash accepted.
    pub hash: HashType,
    /// The challenge/response hash.
    pub auth: HashType,
}

/// Starts every listener the settings enable. Settings no waiting can fix
/// (a bad address, an unreadable key file) fail here with a clear message;
/// a listener whose interface or address is not there yet waits for it
/// (see [`supervise`]). Must be called inside a tokio runtime.
pub fn spawn<S: FenceService>(
    settings: impl Into<ListenerSettings>,
    svc: S,
    input_tx: InputTx,
    audit: Option<AuditTx>,
    cancel: CancellationToken,
) -> anyhow::Result<ListenerSet<S>> {
    ListenerSet::start(&settings.into(), svc, input_tx, audit, cancel)
}

/// One key on multicast and on tcp/vsock lets anyone on the multicast
/// network who captures a signed packet (no key needed) try it on the
/// stream listeners; the listener binding, the replay record and the
/// challenge check refuse what is known, but separate keys remove the whole
/// class. Warned loudly, not refused: the README's example once did it.
fn warn_shared_key(multicast: Option<&Arc<[u8]>>, streams: [Option<&Arc<[u8]>>; 2]) {
    let Some(mk) = multicast else { return };
    for (name, k) in ["tcp", "vsock"].into_iter().zip(streams) {
        if k.is_some_and(|k| k[..] == mk[..]) {
            tracing::warn!(
                listener = name,
                "SECURITY: the multicast listener and the {name} listener use the same fence key. \
                 Multicast packets cross the bridge in the clear, so any guest there can capture \
                 signed requests and offer them, or their challenge/response, to the {name} \
                 listener without knowing the key. fenceline refuses multicast-format requests \
                 on {name}, every exact replay and reflected challenges, but give {name} a key \
                 of its own (listeners.{name}.key_file)."
            );
        }
    }
}

fn load_key(listener: &str, k: &KeySettings) -> anyhow::Result<Arc<[u8]>> {
    let key = super::key::read_key(&k.key_file, k.allow_loose_mode).with_context(|| {
        format!(
            "listeners.{listener}.key_file: cannot use the fence key {}",
            k.key_file.display()
        )
    })?;
    Ok(key.into())
}
