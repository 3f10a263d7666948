//! One listener's shared state and the path of a request through it:
//! verification and dedup ([`Common::check`]), the in-flight mark
//! ([`Common::begin`]), then handshake, answer and history
//! ([`Common::serve`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::super::audit::AuditTx;
use super::super::auth::{AUTH_IO_TIMEOUT, daemon_handshake};
use super::super::history::{History, InFlight, InFlightGuard, RequestKey};
use super::super::perm::Permissions;
use super::refusal::{Refusal, Refusals};
use super::{FenceService, MAX_CONCURRENT};
use crate::engine::InputTx;
use fenceline_proto::api::FenceOp;
use fenceline_proto::fence_xvm::{self, FenceRequest, HashType, REQ_LEN};

/// The in-flight key: the dedup key plus, for multicast, the callback
/// address (packets of one fence_xvm round differ only in that address and
/// only the one the client accepts can complete the handshake).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FlightKey {
    pub key: RequestKey,
    pub callback: Option<SocketAddr>,
}

/// What one listener shares between its requests.
pub(crate) struct Common<S> {
    pub name: &'static str,
    key: Arc<[u8]>,
    hash: HashType,
    auth: HashType,
    pub(super) perms: Arc<Permissions>,
    history: Mutex<History>,
    in_flight: InFlight<FlightKey>,
    pub slots: Arc<Semaphore>,
    refusals: Refusals,
    pub(super) svc: S,
    pub(super) audit: Option<AuditTx>,
}

/// Where a request came from: the string the permission groups match and
/// the label events and the audit log show (`tcp:127.0.0.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub perm_source: String,
    pub label: String,
}

impl<S: FenceService> Common<S> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: &'static str,
        key: Arc<[u8]>,
        hash: HashType,
        auth: HashType,
        perms: Arc<Permissions>,
        svc: S,
        input_tx: InputTx,
        audit: Option<AuditTx>,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            key,
            hash,
            auth,
            perms,
            history: Mutex::new(History::default()),
            in_flight: InFlight::default(),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            refusals: Refusals::new(name, input_tx, cancel),
            svc,
            audit,
        })
    }

    /// Logs and counts a refused request.
    pub(crate) fn refuse(&self, from: &str, why: &Refusal) {
        self.refusals.refuse(from, why);
    }

    /// Steps before any connection work: exact length, parse, signature,
    /// history. Returns the parsed request.
    pub(crate) fn check(&self, raw: &[u8]) -> Result<FenceRequest, Refusal> {
        let bytes: &[u8; REQ_LEN] = raw.try_into().map_err(|_| Refusal::Length(raw.len()))?;
        fence_xvm::verify(bytes, Some(&self.key), self.hash).map_err(Refusal::Signature)?;
        let req = FenceRequest::parse(bytes).map_err(|e| Refusal::Garbage(e.to_string()))?;
        let key = RequestKey::new(req.request, req.seqno, &req.domain);
        if self
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seen(&key, Instant::now())
        {
            return Err(Refusal::Duplicate);
        }
        Ok(req)
    }

    /// Marks the request in flight; a copy already being handled is refused.
    pub(crate) fn begin(
        &self,
        req: &FenceRequest,
        callback: Option<SocketAddr>,
    ) -> Result<InFlightGuard<FlightKey>, Refusal> {
        self.in_flight
            .begin(FlightKey {
                key: RequestKey::new(req.request, req.seqno, &req.domain),
                callback,
            })
            .ok_or(Refusal::InFlight)
    }

    /// Handshake, permission check, answer, history. `stream` is connected
    /// to the client (multicast: the connect-back; tcp/vsock: the accepted
    /// connection).
    pub(crate) async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut T,
        req: &FenceRequest,
        origin: &Origin,
    ) {
        if let Err(e) = daemon_handshake(stream, self.auth, &self.key, AUTH_IO_TIMEOUT).await {
            self.refuse(&origin.label, &Refusal::Handshake(e.to_string()));
            return;
        }
        let t0 = Instant::now();
        let (result, detail) = self.answer(stream, req, origin).await;
        // Recorded once answered, even if the answer could not be delivered:
        // the action happened, a retransmission must not repeat it.
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(
                RequestKey::new(req.request, req.seqno, &req.domain),
                Instant::now(),
            );
        let op = FenceOp::from_raw(req.request)
            .map(|o| o.as_str().to_string())
            .unwrap_or_else(|| format!("unknown opcode {}", req.request));
        tracing::info!(
            listener = self.name,
            source = %origin.label,
            op,
            domain = %req.domain,
            result,
            ms = t0.elapsed().as_millis() as u64,
            detail = detail.as_deref().unwrap_or(""),
            "fence request answered"
        );
    }
}
