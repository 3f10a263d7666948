//! Why a corosync call failed. Each failing call is its own variant and
//! carries corosync's `cs_error`; the messages are the ones the logs and
//! `Input::CorosyncDown` have always shown (`cpg_dispatch: ...`).

use std::fmt;
use std::io;
use std::time::Duration;

use rust_corosync::CsError;

/// One of the corosync libraries whose handle has an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lib {
    Cpg,
    Quorum,
    Votequorum,
}

impl fmt::Display for Lib {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lib::Cpg => "cpg",
            Lib::Quorum => "quorum",
            Lib::Votequorum => "votequorum",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CorosyncError {
    #[error("cpg_initialize: {0}")]
    CpgInitialize(CsError),
    #[error("cpg_local_get: {0}")]
    CpgLocalGet(CsError),
    #[error("quorum_initialize: {0}")]
    QuorumInitialize(CsError),
    #[error("quorum_trackstart: {0}")]
    QuorumTrackstart(CsError),
    #[error("{0}_fd_get: {1}")]
    FdGet(Lib, CsError),
    #[error("cannot register the {0} fd with tokio: {1}")]
    Register(Lib, io::Error),
    #[error("cpg_join({group}): {error}")]
    CpgJoin { group: String, error: CsError },
    #[error("cpg_join({group}): still busy (ErrTryAgain)")]
    CpgJoinBusy { group: String },
    /// Waiting for the fd to become readable failed.
    #[error("{0} fd: {1}")]
    Readiness(Lib, io::Error),
    #[error("{0}_dispatch: {1}")]
    Dispatch(Lib, CsError),
    #[error("cpg_mcast_joined: {0}")]
    McastJoined(CsError),
    /// Still `CsErrTryAgain` after the retry budget.
    #[error("corosync flow control (ErrTryAgain) for {} ms", .0.as_millis())]
    FlowControl(Duration),
    #[error("cmap_initialize: {0}")]
    CmapInitialize(CsError),
    #[error("cmap_iter_init: {0}")]
    CmapIterInit(CsError),
    /// Shutdown was requested while joining.
    #[error("cancelled")]
    Cancelled,
    /// Shutdown was requested while a send was retried.
    #[error("shutdown")]
    Shutdown,
    /// The engine dropped its input channel.
    #[error("engine gone")]
    EngineGone,
}
