//! One connected session: the two CPG handles (one per group), the quorum
//! handle (membership + quorate), the optional votequorum handle (votes),
//! their fds registered with tokio, dispatch, multicast with flow-control
//! retries, the vote counts, and the short-lived cmap read at connect.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use fenceline_proto::backoff::Backoff;
use rust_corosync::{CsError, DispatchFlags, NodeId as CsNodeId, TrackFlags};
use rust_corosync::{cmap, cpg, quorum, votequorum};
use tokio::io::Interest;
use tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use tokio_util::sync::CancellationToken;

use super::CorosyncConfig;
use super::callbacks;
use super::error::{CorosyncError, Lib};
use crate::engine::model::Group;
use fenceline_proto::api::NodeId;

/// Attempts for `cpg::join` while corosync answers `CsErrTryAgain`.
const JOIN_ATTEMPTS: u32 = 20;
/// First and longest sleep between two `cpg::join` attempts.
const JOIN_FIRST_WAIT: Duration = Duration::from_millis(10);
const JOIN_MAX_WAIT: Duration = Duration::from_millis(200);
/// First and longest sleep between two `CsErrTryAgain` multicast retries.
const SEND_RETRY_FIRST_SLEEP: Duration = Duration::from_millis(1);
const SEND_RETRY_MAX_SLEEP: Duration = Duration::from_millis(100);

/// A corosync library fd, owned by its library handle (never closed here).
pub(super) struct CsFd(RawFd);

impl AsRawFd for CsFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

fn register(fd: RawFd, lib: Lib) -> Result<AsyncFd<CsFd>, CorosyncError> {
    // SAFETY: `fd` comes from `*_fd_get` on a live corosync handle and stays
    // open until that handle is finalized. Every AsyncFd is stored in
    // `Session` *before* (so it is dropped before) the handle that owns its
    // fd, and `connect` declares the locals in the same order, so the fd is
    // valid and unchanged for the whole life of the AsyncFd.
    unsafe { AsyncFd::register_with_interest(CsFd(fd), Interest::READABLE) }
        .map_err(|e| CorosyncError::Register(lib, e.into()))
}

/// One connection to corosync.
///
/// Field order is drop order: the `AsyncFd`s must go before the handles
/// whose fds they watch (a handle's `Drop` finalizes it and closes the fd).
pub(super) struct Session {
    fence_fd: AsyncFd<CsFd>,
    own_fd: AsyncFd<CsFd>,
    quorum_fd: AsyncFd<CsFd>,
    vq_fd: Option<AsyncFd<CsFd>>,
    fence: cpg::Handle,
    own: cpg::Handle,
    quorum: quorum::Handle,
    vq: Option<votequorum::Handle>,
    pub(super) local: NodeId,
    /// Largest message CPG sends without fragmenting (logged only).
    pub(super) max_msg: Option<u32>,
}

/// What `connect` learned besides the session.
pub(super) struct UpInfo {
    pub(super) cluster_name: Option<String>,
    pub(super) nodelist: Vec<(NodeId, Option<String>)>,
}

/// Why a multicast failed.
pub(super) enum SendError {
    /// Still `CsErrTryAgain` after the retry budget, or a per-message error.
    Dropped(CorosyncError),
    /// The connection is gone.
    Lost(CorosyncError),
}

impl Session {
    /// Opens all handles, joins both groups and registers the fds.
    pub(super) async fn connect(
        cfg: &CorosyncConfig,
        cancel: &CancellationToken,
    ) -> Result<(Session, UpInfo), CorosyncError> {
        // Locals are declared handle-first so that on an early return the
        // AsyncFds (declared later) are dropped before the handles.
        let fence =
            cpg::initialize(&callbacks::fence_model(), 0).map_err(CorosyncError::CpgInitialize)?;
        let local = cpg::local_get(&fence)
            .map(u32::from)
            .map_err(CorosyncError::CpgLocalGet)?;
        let own =
            cpg::initialize(&callbacks::own_model(), 0).map_err(CorosyncError::CpgInitialize)?;
        let (quorum, _qtype) = quorum::initialize(&callbacks::quorum_model(), 0)
            .map_err(CorosyncError::QuorumInitialize)?;
        // CS_TRACK_CHANGES also makes corosync send the current state right
        // away, so the first dispatch yields the initial quorum state.
        quorum::trackstart(&quorum, TrackFlags::Changes)
            .map_err(CorosyncError::QuorumTrackstart)?;
        let vq = match votequorum::initialize(&callbacks::votequorum_callbacks()) {
            Ok(h) => match votequorum::trackstart(&h, 0, TrackFlags::Changes) {
                Ok(()) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "votequorum_trackstart failed; vote counts unavailable");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "votequorum unavailable (no votequorum provider?); vote counts unavailable");
                None
            }
        };
        let up = read_cmap().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read cluster name and nodelist from cmap");
            UpInfo {
                cluster_name: None,
                nodelist: Vec::new(),
            }
        });
        let max_msg = cpg::max_atomic_msgsize_get(&fence).ok();

        let fd_get = |r: rust_corosync::Result<RawFd>, lib| {
            register(r.map_err(|e| CorosyncError::FdGet(lib, e))?, lib)
        };
        let fence_fd = fd_get(cpg::fd_get(&fence), Lib::Cpg)?;
        let own_fd = fd_get(cpg::fd_get(&own), Lib::Cpg)?;
        let quorum_fd = fd_get(quorum::fd_get(&quorum), Lib::Quorum)?;
        let vq_fd = match &vq {
            Some(h) => Some(fd_get(votequorum::fd_get(h), Lib::Votequorum)?),
            None => None,
        };

        join(&fence, &cfg.fence_group, cancel).await?;
        join(&own, &cfg.own_group, cancel).await?;

        let session = Session {
            fence_fd,
            own_fd,
            quorum_fd,
            vq_fd,
            fence,
            own,
            quorum,
            vq,
            local,
            max_msg,
        };
        Ok((session, up))
    }

    pub(super) fn has_votequorum(&self) -> bool {
        self.vq.is_some()
    }

    /// Leaves both groups and finalizes every handle (by dropping them).
    pub(super) fn close(self, cfg: &CorosyncConfig, why: &str) {
        tracing::info!(
            reason = why,
            "leaving CPG groups and closing corosync handles"
        );
        if let Err(e) = cpg::leave(&self.fence, &cfg.fence_group) {
            tracing::debug!(error = %e, group = %cfg.fence_group, "cpg_leave failed");
        }
        if let Err(e) = cpg::leave(&self.own, &cfg.own_group) {
            tracing::debug!(error = %e, group = %cfg.own_group, "cpg_leave failed");
        }
        let _ = quorum::trackstop(&self.quorum);
        if let Some(h) = &self.vq {
            let _ = votequorum::trackstop(h);
        }
    }

    /// Waits until one fd is readable and dispatches its handle. The
    /// callbacks only buffer what they see (`callbacks::take_pending`).
    pub(super) async fn dispatch_ready(&self) -> Result<(), CorosyncError> {
        tokio::select! {
            r = self.fence_fd.readable() => dispatch_with(r, Lib::Cpg, || {
                cpg::dispatch(&self.fence, DispatchFlags::All)
            }),
            r = self.own_fd.readable() => dispatch_with(r, Lib::Cpg, || {
                cpg::dispatch(&self.own, DispatchFlags::All)
            }),
            r = self.quorum_fd.readable() => dispatch_with(r, Lib::Quorum, || {
                quorum::dispatch(&self.quorum, DispatchFlags::All)
            }),
            r = readable_opt(self.vq_fd.as_ref()) => match &self.vq {
                Some(h) => dispatch_with(r, Lib::Votequorum, || votequorum::dispatch(h, DispatchFlags::All)),
                None => Ok(()),
            },
        }
    }

    /// Dispatches every handle without waiting for readiness (used while a
    /// send is being retried). Readiness is left set, so the main loop will
    /// dispatch again and then clear it: no wakeup is lost.
    pub(super) fn dispatch_all(&self) -> Result<(), CorosyncError> {
        dispatched(cpg::dispatch(&self.fence, DispatchFlags::All), Lib::Cpg)?;
        dispatched(cpg::dispatch(&self.own, DispatchFlags::All), Lib::Cpg)?;
        dispatched(
            quorum::dispatch(&self.quorum, DispatchFlags::All),
            Lib::Quorum,
        )?;
        if let Some(h) = &self.vq {
            dispatched(votequorum::dispatch(h, DispatchFlags::All), Lib::Votequorum)?;
        }
        Ok(())
    }

    /// `cpg_mcast_joined` to `group` with bounded retries on `CsErrTryAgain`
    /// (flow control) for at most `budget`. Between attempts every handle is
    /// dispatched so corosync can drain its queues towards us; what the
    /// callbacks collect is forwarded by the caller afterwards.
    pub(super) async fn mcast(
        &self,
        group: Group,
        bytes: &[u8],
        budget: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), SendError> {
        let h = match group {
            Group::FenceAgents => &self.fence,
            Group::Own => &self.own,
        };
        let deadline = Instant::now() + budget;
        let mut waits = Backoff::new(SEND_RETRY_FIRST_SLEEP, SEND_RETRY_MAX_SLEEP, 0).jitter(0.0);
        let mut retries = 0u32;
        loop {
            match cpg::mcast_joined(h, cpg::Guarantee::TypeAgreed, bytes) {
                Ok(()) => {
                    if retries > 0 {
                        tracing::debug!(retries, "multicast sent after flow-control retries");
                    }
                    return Ok(());
                }
                Err(CsError::CsErrTryAgain) => {
                    retries += 1;
                    if Instant::now() >= deadline {
                        return Err(SendError::Dropped(CorosyncError::FlowControl(budget)));
                    }
                    self.dispatch_all().map_err(SendError::Lost)?;
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(SendError::Dropped(CorosyncError::Shutdown)),
                        _ = tokio::time::sleep(waits.next_delay()) => {}
                    }
                }
                Err(e @ (CsError::CsErrLibrary | CsError::CsErrBadHandle)) => {
                    return Err(SendError::Lost(CorosyncError::McastJoined(e)));
                }
                Err(e) => return Err(SendError::Dropped(CorosyncError::McastJoined(e))),
            }
        }
    }

    /// (expected, total, quorum); `None` without votequorum or when it
    /// cannot be read. `total` is the sum of the members' votes plus the
    /// quorum device's when it casts a vote (rust-corosync does not expose
    /// votequorum's own `total_votes`).
    pub(super) fn read_votes(&self, members: &[NodeId]) -> Option<(u32, u32, u32)> {
        let vq = self.vq.as_ref()?;
        let local = self.local;
        let info = match votequorum::get_info(vq, CsNodeId::from(local)) {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(error = %e, "votequorum_getinfo failed");
                return None;
            }
        };
        let expected = if info.node_expected_votes > 0 {
            info.node_expected_votes
        } else {
            info.highest_expected
        };
        let mut total: u32 = 0;
        for &m in members {
            let votes = if m == local {
                Some(info.node_votes)
            } else {
                votequorum::get_info(vq, CsNodeId::from(m))
                    .ok()
                    .filter(|i| matches!(i.node_state, votequorum::NodeState::Member))
                    .map(|i| i.node_votes)
            };
            total = total.saturating_add(votes.unwrap_or(0));
        }
        if info
            .flags
            .contains(votequorum::NodeInfoFlags::VOTEQUORUM_INFO_QDEVICE_CAST_VOTE)
        {
            total = total.saturating_add(info.qdevice_votes);
        }
        Some((expected, total, info.quorum))
    }
}

/// `cpg_join` with bounded retries while corosync answers `CsErrTryAgain`.
async fn join(
    h: &cpg::Handle,
    group: &str,
    cancel: &CancellationToken,
) -> Result<(), CorosyncError> {
    let mut waits = Backoff::new(JOIN_FIRST_WAIT, JOIN_MAX_WAIT, 0).jitter(0.0);
    for _ in 0..JOIN_ATTEMPTS {
        match cpg::join(h, group) {
            Ok(()) => return Ok(()),
            Err(CsError::CsErrTryAgain) => {
                tokio::select! {
                    _ = cancel.cancelled() => return Err(CorosyncError::Cancelled),
                    _ = tokio::time::sleep(waits.next_delay()) => {}
                }
            }
            Err(error) => {
                return Err(CorosyncError::CpgJoin {
                    group: group.to_string(),
                    error,
                });
            }
        }
    }
    Err(CorosyncError::CpgJoinBusy {
        group: group.to_string(),
    })
}

/// Awaits readability of an optional fd; never completes for `None`.
async fn readable_opt(fd: Option<&AsyncFd<CsFd>>) -> io::Result<AsyncFdReadyGuard<'_, CsFd>> {
    match fd {
        Some(fd) => fd.readable().await,
        None => std::future::pending().await,
    }
}

/// A dispatch result: `CsErrTryAgain` is not an error (nothing to read).
fn dispatched(r: rust_corosync::Result<()>, lib: Lib) -> Result<(), CorosyncError> {
    match r {
        Ok(()) | Err(CsError::CsErrTryAgain) => Ok(()),
        Err(e) => Err(CorosyncError::Dispatch(lib, e)),
    }
}

/// Runs `dispatch(All)` for a readable fd, then clears its readiness (the
/// reactor is edge-triggered, so everything must be drained first).
fn dispatch_with(
    r: io::Result<AsyncFdReadyGuard<'_, CsFd>>,
    lib: Lib,
    dispatch: impl FnOnce() -> rust_corosync::Result<()>,
) -> Result<(), CorosyncError> {
    let mut guard = r.map_err(|e| CorosyncError::Readiness(lib, e))?;
    let res = dispatch();
    guard.clear_ready();
    dispatched(res, lib)
}

fn data_u32(d: &cmap::Data) -> Option<u32> {
    match d {
        cmap::Data::UInt32(v) => Some(*v),
        cmap::Data::Int32(v) => u32::try_from(*v).ok(),
        cmap::Data::UInt64(v) => u32::try_from(*v).ok(),
        cmap::Data::Int64(v) => u32::try_from(*v).ok(),
        cmap::Data::UInt16(v) => Some(u32::from(*v)),
        cmap::Data::UInt8(v) => Some(u32::from(*v)),
        cmap::Data::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads `totem.cluster_name` and `nodelist.node.N.{nodeid,name}` once.
fn read_cmap() -> Result<UpInfo, CorosyncError> {
    let h = cmap::initialize(cmap::Map::Icmap).map_err(CorosyncError::CmapInitialize)?;
    let cluster_name = match cmap::get(&h, "totem.cluster_name") {
        Ok(cmap::Data::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    // index → (nodeid, name)
    let mut nodes: BTreeMap<u32, (Option<u32>, Option<String>)> = BTreeMap::new();
    let iter =
        cmap::CmapIterStart::new(&h, "nodelist.node.").map_err(CorosyncError::CmapIterInit)?;
    for item in iter {
        let Some(rest) = item.key_name().strip_prefix("nodelist.node.") else {
            continue;
        };
        let Some((idx, field)) = rest.split_once('.') else {
            continue;
        };
        let Ok(idx) = idx.parse::<u32>() else {
            continue;
        };
        let entry = nodes.entry(idx).or_default();
        match field {
            "nodeid" => entry.0 = data_u32(item.data()),
            "name" => {
                if let cmap::Data::String(s) = item.data()
                    && !s.is_empty()
                {
                    entry.1 = Some(s.clone());
                }
            }
            _ => {}
        }
    }
    drop(h); // finalizes the cmap connection
    let nodelist = nodes
        .into_values()
        .filter_map(|(id, name)| id.map(|id| (id, name)))
        .collect();
    Ok(UpInfo {
        cluster_name,
        nodelist,
    })
}
