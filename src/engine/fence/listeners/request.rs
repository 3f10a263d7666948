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
use super::super::auth::{AUTH_IO_TIMEOUT, daemon_handshake_guarded};
use super::super::guard::{Admit, Guard};
use super::super::history::{History, InFlight, InFlightGuard, RequestKey};
use super::super::names::RequesterNames;
use super::super::perm::Permissions;
use super::refusal::{Refusal, Refusals};
use super::sources::{Slot, Sources};
use super::{FenceService, MAX_CONCURRENT};
use crate::engine::InputTx;
use crate::engine::model::ClaimOutcome;
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

/// Which request format a listener takes: multicast requests carry the
/// callback address, port and family; tcp and vsock requests have them all
/// zero (what fence_virt sends). A request is refused on the other kind of
/// listener, so a multicast packet cannot be relayed to tcp/vsock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Binding {
    Callback,
    Stream,
}

impl Binding {
    /// `tcp` and `vsock` are stream listeners; anything else calls back.
    pub(crate) fn of(listener: &str) -> Self {
        match listener {
            "tcp" | "vsock" => Binding::Stream,
            _ => Binding::Callback,
        }
    }
}

/// What one listener shares between its requests.
pub(crate) struct Common<S> {
    pub name: &'static str,
    binding: Binding,
    /// Shared by all listeners of the process.
    guard: Arc<Guard>,
    key: Arc<[u8]>,
    hash: HashType,
    auth: HashType,
    pub(super) perms: Arc<Permissions>,
    history: Mutex<History>,
    in_flight: InFlight<FlightKey>,
    /// Multicast runs ([`FenceRequest::round_id`]) this host is claiming or
    /// connecting back for: another packet of the run (another interface
    /// of the client) does not get a second connect-back meanwhile.
    runs: InFlight<String>,
    pub slots: Arc<Semaphore>,
    /// Serving slots and request rate per source.
    sources: Sources,
    refusals: Refusals,
    pub(super) svc: S,
    pub(super) audit: Option<AuditTx>,
    /// `listeners.monitor_requires_libvirt` (set by `spawn`).
    pub(super) monitor_requires_libvirt: bool,
    /// Names of requesters by address, shared by all listeners (set by
    /// `spawn`; replaced in place on reload).
    pub(super) names: Arc<RequesterNames>,
}

/// Where a request came from: the string the permission groups match and
/// the label events and the audit log show (`tcp:127.0.0.1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub perm_source: String,
    pub label: String,
}

impl<S: FenceService> Common<S> {
    /// One listener; `guard` is the process-wide [`Guard`] all listeners
    /// share (a test may give each its own).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn with_guard(
        name: &'static str,
        key: Arc<[u8]>,
        hash: HashType,
        auth: HashType,
        perms: Arc<Permissions>,
        svc: S,
        input_tx: InputTx,
        audit: Option<AuditTx>,
        cancel: CancellationToken,
        guard: Arc<Guard>,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            binding: Binding::of(name),
            guard,
            key,
            hash,
            auth,
            perms,
            history: Mutex::new(History::default()),
            in_flight: InFlight::default(),
            runs: InFlight::default(),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            sources: Sources::default(),
            refusals: Refusals::new(name, input_tx, cancel),
            svc,
            audit,
            monitor_requires_libvirt: false,
            names: Arc::default(),
        })
    }

    /// A serving slot for a request from `source` (peer address or CID,
    /// or a multicast request's callback address), within the per-source
    /// limits; hold it while the request is served.
    pub(crate) fn source_slot(&self, source: &str) -> Result<Slot, Refusal> {
        self.sources.enter(source, Instant::now())
    }

    /// The source a fence event and the audit log show: the origin's label,
    /// with the requester's name when `requester_names` has its address
    /// (`multicast:guest1 (10.0.0.5)`). A lookup in memory only.
    pub(crate) fn source_of(&self, origin: &Origin) -> String {
        match (
            origin.label.split_once(':'),
            origin.perm_source.parse::<std::net::IpAddr>(),
        ) {
            (Some((kind, _)), Ok(ip)) => self.names.label(kind, ip),
            _ => origin.label.clone(),
        }
    }

    /// Logs and counts a refused request.
    pub(crate) fn refuse(&self, from: &str, why: &Refusal) {
        self.refusals.refuse(from, why);
    }

    /// Steps before any connection work: exact length, parse, signature,
    /// the listener's format, the process-wide record of verified requests
    /// (an exact copy is a replay; a new one is recorded now, before any
    /// connect-back or handshake), then fence_virtd's 10 s history (the
    /// same op/seqno/domain, as a retransmission with fresh random bytes
    /// has, already answered). Returns the parsed request.
    ///
    /// Unsigned requests (hash `none`, only accepted when configured so)
    /// are not recorded: they carry no random bytes, so a retransmission is
    /// an exact copy, and anyone can forge them anyway.
    pub(crate) fn check(&self, raw: &[u8]) -> Result<FenceRequest, Refusal> {
        let bytes: &[u8; REQ_LEN] = raw.try_into().map_err(|_| Refusal::Length(raw.len()))?;
        fence_xvm::verify(bytes, Some(&self.key), self.hash).map_err(Refusal::Signature)?;
        let req = FenceRequest::parse(bytes).map_err(|e| Refusal::Garbage(e.to_string()))?;
        match self.binding {
            Binding::Callback if req.callback().is_none() => return Err(Refusal::NoCallback),
            Binding::Stream
                if req.family != 0 || req.port != 0 || req.address.iter().any(|b| *b != 0) =>
            {
                return Err(Refusal::WrongListener);
            }
            _ => {}
        }
        // Only requests in this listener's format are recorded, so a copy
        // relayed to the wrong listener cannot spoil the real one.
        let signed = HashType::from_raw(req.hashtype) != Some(HashType::None);
        let admitted = if signed {
            self.guard.admit(bytes, Instant::now())
        } else {
            (Admit::New, 0, 0)
        };
        match admitted {
            (Admit::Replay { age }, _, _) => return Err(Refusal::Replay(age)),
            (Admit::NewEvicting, len, evictions) => self.refusals.warn(&format!(
                "the record of verified fence requests is full ({len} entries): the oldest \
                 are forgotten before their hour is up ({evictions} evictions so far)"
            )),
            (Admit::New, _, _) => {}
        }
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

    /// Whether this node connects back for a multicast request: one
    /// fenceline node per fence_xvm run, cluster-wide (the engine decides,
    /// `model/fence/claim.rs`), and one connect-back of that run at a time
    /// on this node. `Some` while this node may connect back (hold it until
    /// the answer is written). Losing is quiet (debug); no decision is a
    /// counted, logged refusal.
    pub(crate) async fn claim(
        &self,
        req: &FenceRequest,
        origin: &Origin,
    ) -> Option<InFlightGuard<String>> {
        let quiet = |why: &str| {
            tracing::debug!(
                listener = self.name,
                source = %origin.label,
                domain = %req.domain,
                seqno = req.seqno,
                "not connecting back: {why}"
            );
        };
        let run = req.round_id();
        let Some(guard) = self.runs.begin(run.clone()) else {
            quiet("another packet of this fence_xvm run is being handled here");
            return None;
        };
        match self.svc.claim(run, req.domain.clone()).await {
            ClaimOutcome::Won => Some(guard),
            ClaimOutcome::Lost(winner) => {
                quiet(&format!("claimed by node {winner}, which connects back"));
                None
            }
            ClaimOutcome::Unavailable(why) => {
                self.refuse(&origin.label, &Refusal::Unclaimed(why));
                None
            }
        }
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
        let handshake = daemon_handshake_guarded(
            stream,
            self.auth,
            &self.key,
            AUTH_IO_TIMEOUT,
            &self.guard.challenges,
        );
        if let Err(e) = handshake.await {
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
