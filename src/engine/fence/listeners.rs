//! The fence_xvm / fence_virt listeners: everything between the network and
//! the engine's [`fence`](crate::engine::EngineHandle::fence) call.
//!
//! Each configured listener (multicast, tcp, vsock) verifies the 176-byte
//! request, drops duplicates, runs the challenge/response, checks the
//! permission groups and then answers: `null`, `monitor` and `list` here,
//! `off`/`on`/`reboot`/`status` through the engine. Unlike fence_virtd,
//! requests are handled concurrently (bounded by [`MAX_CONCURRENT`] per
//! listener), so one slow request does not block the others.
//!
//! Everything refused before any action (bad or weaker hash, duplicate,
//! truncated, garbage, failed connect-back or challenge, no free slot) is
//! logged with its reason and source and counted as `dropped_fence_packets`
//! (at most one engine input per second per listener).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::audit::AuditTx;
use super::auth::{AUTH_IO_TIMEOUT, daemon_handshake};
use super::history::{History, InFlight, InFlightGuard, RequestKey};
use super::perm::Permissions;
use super::wire::{
    self, FenceRequest, HOST_STATE_END, HashType, HostState, REQ_LEN, RESP_HOSTLIST,
};
use crate::config::{Config, HashName};
use crate::engine::model::{DropKind, Input};
use crate::engine::{EngineHandle, FenceAnswer, FenceCall, InputTx};
use fenceline_proto::api::{
    Event, EventKind, FenceOp, FencePhase, FenceResult, Snapshot, now_millis,
};

/// Requests one listener handles at the same time; more are dropped and counted.
pub const MAX_CONCURRENT: usize = 32;
/// Each host-list record write (fence_virtd: 1 s).
pub const RECORD_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The final result byte (fence_virtd has no limit; we do).
pub const RESULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The result fence_virtd sends for `null` (its backends answer 1).
const NULL_RESULT: u8 = 1;

/// What the listeners need from the engine. [`EngineHandle`] is the real
/// one; tests may use a recording stand-in.
pub trait FenceService: Clone + Send + Sync + 'static {
    /// Routes a fence request (off, on, reboot, status) and waits for the answer.
    fn fence(&self, call: FenceCall) -> impl Future<Output = FenceAnswer> + Send;
    /// The current cluster map (for `list` and the local node id).
    fn snapshot(&self) -> Arc<Snapshot>;
}

impl FenceService for EngineHandle {
    fn fence(&self, call: FenceCall) -> impl Future<Output = FenceAnswer> + Send {
        EngineHandle::fence(self, call)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        EngineHandle::snapshot(self)
    }
}

pub(crate) fn hash_type(h: HashName) -> HashType {
    match h {
        HashName::None => HashType::None,
        HashName::Sha1 => HashType::Sha1,
        HashName::Sha256 => HashType::Sha256,
        HashName::Sha512 => HashType::Sha512,
    }
}

/// Starts every listener the config enables. Binding, joining and reading
/// the key files happen now, so a bad setting fails the daemon's start with
/// a clear message. Must be called inside a tokio runtime.
pub fn spawn<S: FenceService>(
    cfg: &Config,
    svc: S,
    input_tx: InputTx,
    audit: Option<AuditTx>,
    cancel: CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    // Everything that can fail first (keys, sockets), so a bad setting
    // leaves nothing running behind the error.
    let mc = match &cfg.listeners.multicast {
        Some(m) => Some((
            m,
            load_key("multicast", &m.key_file)?,
            super::multicast::bind(m).context("multicast listener")?,
        )),
        None => None,
    };
    let tcp = match &cfg.listeners.tcp {
        Some(t) => Some((
            t,
            load_key("tcp", &t.key_file)?,
            super::tcp::bind(t).context("tcp listener")?,
        )),
        None => None,
    };
    let vs = match &cfg.listeners.vsock {
        Some(v) => Some((
            v,
            load_key("vsock", &v.key_file)?,
            super::vsock::bind(v.port).context("vsock listener")?,
        )),
        None => None,
    };

    let perms = Arc::new(Permissions::new(&cfg.groups));
    let common = |name: &'static str, key: Arc<[u8]>, hash: HashName, auth: HashName| {
        Common::new(
            name,
            key,
            hash_type(hash),
            hash_type(auth),
            perms.clone(),
            svc.clone(),
            input_tx.clone(),
            audit.clone(),
            cancel.clone(),
        )
    };
    let mut tasks = Vec::new();
    if let Some((m, key, sock)) = mc {
        tracing::info!(
            group = %m.address, port = m.port, interface = m.interface.as_deref().unwrap_or("(any)"),
            hash = ?m.hash, auth = ?m.auth, "fence multicast listener ready"
        );
        let c = common("multicast", key, m.hash, m.auth);
        tasks.push(tokio::spawn(super::multicast::run(sock, c, cancel.clone())));
    }
    if let Some((t, key, l)) = tcp {
        tracing::info!(address = %t.address, port = t.port, hash = ?t.hash, auth = ?t.auth, "fence tcp listener ready");
        let c = common("tcp", key, t.hash, t.auth);
        tasks.push(tokio::spawn(super::tcp::run(l, c, cancel.clone())));
    }
    if let Some((v, key, l)) = vs {
        tracing::info!(port = v.port, hash = ?v.hash, auth = ?v.auth, "fence vsock listener ready");
        let c = common("vsock", key, v.hash, v.auth);
        tasks.push(tokio::spawn(super::vsock::run(l, c, cancel.clone())));
    }
    if !tasks.is_empty() && !perms.allows_all() {
        tracing::info!(groups = cfg.groups.len(), "fence permission groups active");
    }
    Ok(tasks)
}

fn load_key(listener: &str, path: &std::path::Path) -> anyhow::Result<Arc<[u8]>> {
    let key = wire::read_key(path).with_context(|| {
        format!(
            "listeners.{listener}.key_file: cannot read the fence key {}",
            path.display()
        )
    })?;
    if let Ok(md) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if md.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the fence key file is readable by others than its owner; chmod 0600 it"
            );
        }
    }
    Ok(key.into())
}

/// Counts refused packets and hands the engine one `Input::Dropped` per
/// second at most.
#[derive(Clone)]
pub(crate) struct DropCounter {
    pending: Arc<AtomicU64>,
}

impl DropCounter {
    pub(crate) fn spawn(input_tx: InputTx, cancel: CancellationToken) -> Self {
        let pending = Arc::new(AtomicU64::new(0));
        let p = pending.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stop = tokio::select! {
                    _ = tick.tick() => false,
                    _ = cancel.cancelled() => true,
                };
                let n = p.swap(0, Ordering::Relaxed);
                if n > 0
                    && !input_tx.try_send(Input::Dropped {
                        at: now_millis(),
                        what: DropKind::FencePackets,
                        count: n,
                    })
                {
                    p.fetch_add(n, Ordering::Relaxed);
                }
                if stop {
                    return;
                }
            }
        });
        Self { pending }
    }

    pub(crate) fn add(&self, n: u64) {
        self.pending.fetch_add(n, Ordering::Relaxed);
    }
}

/// At most `PER_SECOND` warnings per second per listener; the rest are
/// summed into the next one (the counter has every drop anyway).
struct LogLimiter {
    window: Instant,
    logged: u32,
    suppressed: u64,
}

const LOGS_PER_SECOND: u32 = 10;

/// Why a request was refused before any action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    Length(usize),
    Garbage(String),
    Signature(wire::VerifyError),
    Duplicate,
    InFlight,
    Busy,
    NoCallback,
    ConnectBack(String),
    Handshake(String),
    RequestRead(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Length(n) if *n < REQ_LEN => {
                write!(f, "truncated request ({n} bytes, need 176)")
            }
            Refusal::Length(n) => write!(f, "oversized request ({n} bytes, need 176)"),
            Refusal::Garbage(why) => write!(f, "malformed request: {why}"),
            Refusal::Signature(e) => write!(f, "signature refused: {e}"),
            Refusal::Duplicate => f.write_str("duplicate of a request answered in the last 10 s"),
            Refusal::InFlight => f.write_str("duplicate of a request still being handled"),
            Refusal::Busy => write!(f, "{MAX_CONCURRENT} requests already in progress"),
            Refusal::NoCallback => f.write_str("no usable callback address in the request"),
            Refusal::ConnectBack(e) => write!(f, "connect-back failed: {e}"),
            Refusal::Handshake(e) => write!(f, "challenge/response failed: {e}"),
            Refusal::RequestRead(e) => write!(f, "no request: {e}"),
        }
    }
}

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
    perms: Arc<Permissions>,
    history: Mutex<History>,
    in_flight: InFlight<FlightKey>,
    pub slots: Arc<Semaphore>,
    drops: DropCounter,
    log_limit: Mutex<LogLimiter>,
    svc: S,
    audit: Option<AuditTx>,
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
            drops: DropCounter::spawn(input_tx, cancel),
            log_limit: Mutex::new(LogLimiter {
                window: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
            svc,
            audit,
        })
    }

    /// Logs and counts a refused request.
    pub(crate) fn refuse(&self, from: &str, why: &Refusal) {
        self.drops.add(1);
        let mut l = self
            .log_limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if l.window.elapsed() >= Duration::from_secs(1) {
            l.window = Instant::now();
            l.logged = 0;
        }
        if l.logged < LOGS_PER_SECOND {
            l.logged += 1;
            let more = std::mem::take(&mut l.suppressed);
            drop(l);
            if more > 0 {
                tracing::warn!(
                    listener = self.name,
                    from,
                    "fence request dropped: {why} ({more} more drops not logged)"
                );
            } else {
                tracing::warn!(listener = self.name, from, "fence request dropped: {why}");
            }
        } else {
            l.suppressed += 1;
        }
    }

    /// Steps before any connection work: exact length, parse, signature,
    /// history. Returns the parsed request.
    pub(crate) fn check(&self, raw: &[u8]) -> Result<FenceRequest, Refusal> {
        let bytes: &[u8; REQ_LEN] = raw.try_into().map_err(|_| Refusal::Length(raw.len()))?;
        wire::verify(bytes, Some(&self.key), self.hash).map_err(Refusal::Signature)?;
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

    /// Writes the answer; returns the result byte (or a description) and a
    /// detail for the log.
    async fn answer<W: AsyncWrite + Unpin>(
        &self,
        w: &mut W,
        req: &FenceRequest,
        origin: &Origin,
    ) -> (String, Option<String>) {
        let Some(op) = FenceOp::from_raw(req.request) else {
            let r = write_result(w, FenceResult::Fail.as_raw()).await;
            return ("1".into(), Some(with_write_error("unknown opcode", r)));
        };
        match op {
            FenceOp::Null => {
                let r = write_result(w, NULL_RESULT).await;
                (
                    NULL_RESULT.to_string(),
                    r.err().map(|e| format!("reply not delivered: {e}")),
                )
            }
            FenceOp::Monitor => {
                let r = write_result(w, FenceResult::Ok.as_raw()).await;
                (
                    "0".into(),
                    r.err().map(|e| format!("reply not delivered: {e}")),
                )
            }
            FenceOp::List => {
                let snap = self.svc.snapshot();
                let records = host_list(&snap, &self.perms, &origin.perm_source);
                let n = records.len();
                match write_host_list(w, &records).await {
                    Ok(()) => (format!("list of {n}"), None),
                    Err(e) => (
                        format!("list of {n}"),
                        Some(format!("reply not delivered: {e}")),
                    ),
                }
            }
            FenceOp::Off | FenceOp::On | FenceOp::Reboot | FenceOp::Status => {
                if self
                    .perms
                    .may_fence(&origin.perm_source, &req.domain)
                    .is_err()
                {
                    let detail = format!(
                        "permission denied: no group lets {} fence {:?}",
                        origin.perm_source, req.domain
                    );
                    tracing::warn!(listener = self.name, source = %origin.label, op = op.as_str(), domain = %req.domain, "{detail}");
                    self.audit_denied(op, req, origin, &detail);
                    let r = write_result(w, FenceResult::Denied.as_raw()).await;
                    return ("3".into(), Some(with_write_error(&detail, r)));
                }
                let answer = self
                    .svc
                    .fence(FenceCall {
                        op,
                        domain: req.domain.clone(),
                        source: origin.label.clone(),
                    })
                    .await;
                let r = write_result(w, answer.result.as_raw()).await;
                let detail = answer.detail.unwrap_or_default();
                (
                    answer.result.as_raw().to_string(),
                    Some(with_write_error(&detail, r)).filter(|d| !d.is_empty()),
                )
            }
        }
    }

    /// The engine never sees a denied request, so the listener writes its
    /// audit record itself (`seq` 0 marks it).
    fn audit_denied(&self, op: FenceOp, req: &FenceRequest, origin: &Origin, detail: &str) {
        let Some(audit) = &self.audit else {
            return;
        };
        let node = self.svc.snapshot().local_nodeid;
        audit.record(&Event {
            seq: 0,
            time: now_millis(),
            node,
            kind: EventKind::Fence {
                phase: FencePhase::Result,
                op,
                domain: req.domain.clone(),
                source: origin.label.clone(),
                requester: node,
                acted_by: None,
                result: FenceResult::Denied,
                duration_ms: 0,
                detail: Some(detail.to_string()),
            },
        });
    }
}

fn with_write_error(detail: &str, r: std::io::Result<()>) -> String {
    match r {
        Ok(()) => detail.to_string(),
        Err(e) if detail.is_empty() => format!("reply not delivered: {e}"),
        Err(e) => format!("{detail}; reply not delivered: {e}"),
    }
}

async fn write_with<W: AsyncWrite + Unpin>(
    w: &mut W,
    b: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    let io = async {
        w.write_all(b).await?;
        w.flush().await
    };
    match tokio::time::timeout(limit, io).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("write not done within {limit:?}"),
        )),
    }
}

async fn write_result<W: AsyncWrite + Unpin>(w: &mut W, b: u8) -> std::io::Result<()> {
    write_with(w, &[b], RESULT_WRITE_TIMEOUT).await
}

/// 0xFD, the records, the zero terminator, then result 0 (fence_virtd's cpg
/// backend sends 1 here; fence_xvm never reads it).
async fn write_host_list<W: AsyncWrite + Unpin>(
    w: &mut W,
    records: &[[u8; wire::HOST_STATE_LEN]],
) -> std::io::Result<()> {
    write_with(w, &[RESP_HOSTLIST], RECORD_WRITE_TIMEOUT).await?;
    for r in records {
        write_with(w, r, RECORD_WRITE_TIMEOUT).await?;
    }
    write_with(w, &HOST_STATE_END, RECORD_WRITE_TIMEOUT).await?;
    write_result(w, FenceResult::Ok.as_raw()).await
}

/// The longest prefix of `s` of at most 63 bytes that ends on a character
/// boundary (the record's fields are 64 bytes with a terminating NUL).
fn field(s: &str) -> String {
    let mut end = s.len().min(wire::DOMAIN_FIELD - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Every VM of the cluster map that `source` may see, as 130-byte records.
pub(crate) fn host_list(
    snap: &Snapshot,
    perms: &Permissions,
    source: &str,
) -> Vec<[u8; wire::HOST_STATE_LEN]> {
    snap.domains
        .iter()
        .filter(|d| perms.may_see(source, &d.name, &d.uuid))
        .filter_map(|d| {
            let rec = HostState {
                domain: field(&d.name),
                uuid: field(&d.uuid),
                state: u8::try_from(d.state.as_raw()).unwrap_or(0),
            };
            // Both fields empty would read as the terminator; skip such a VM.
            if rec.domain.is_empty() && rec.uuid.is_empty() {
                return None;
            }
            rec.encode().ok()
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod testing {
    //! A recording stand-in for the engine: the listener tests check what the
    //! listeners hand to the engine, not the engine's routing (tested with
    //! the engine). Used in unit tests here and mirrored in
    //! tests/fence_listeners.rs.
    use super::*;
    use fenceline_proto::api::{Counters, DomainState, DomainView, Link};

    #[derive(Clone, Default)]
    pub struct Recorder {
        pub calls: Arc<Mutex<Vec<FenceCall>>>,
        pub domains: Arc<Vec<DomainView>>,
        pub answer: Option<FenceResult>,
    }

    impl FenceService for Recorder {
        fn fence(&self, call: FenceCall) -> impl Future<Output = FenceAnswer> + Send {
            self.calls.lock().unwrap().push(call);
            let result = self.answer.unwrap_or(FenceResult::Ok);
            async move {
                FenceAnswer {
                    result,
                    acted_by: Some(1),
                    duration_ms: 0,
                    detail: None,
                }
            }
        }

        fn snapshot(&self) -> Arc<Snapshot> {
            Arc::new(Snapshot {
                version: 1,
                generated_at: 0,
                cluster_name: None,
                local_nodeid: Some(1),
                quorate: true,
                expected_votes: None,
                total_votes: None,
                quorum: None,
                stale: false,
                corosync: Link {
                    connected: true,
                    since: 0,
                    error: None,
                },
                nodes: vec![],
                domains: (*self.domains).clone(),
                libvirt: vec![],
                networks: vec![],
                counters: Counters::default(),
                daemon_version: "test".into(),
            })
        }
    }

    pub fn domain(name: &str, uuid: &str, state: DomainState) -> DomainView {
        DomainView {
            name: name.into(),
            uuid: uuid.into(),
            state,
            owner: Some(1),
            since: 0,
            uri: None,
            conflict: false,
            placements: vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::config::PermissionGroup;
    use crate::engine::fence::auth::client_handshake;
    use fenceline_proto::api::DomainState;
    use tokio::io::AsyncReadExt;

    const KEY: &[u8] = b"0123456789abcdef";

    fn common(
        rec: Recorder,
        groups: &[PermissionGroup],
        auth: HashType,
    ) -> (Arc<Common<Recorder>>, tokio::sync::mpsc::Receiver<Input>) {
        let (itx, irx) = InputTx::channel(64);
        let c = Common::new(
            "test",
            KEY.into(),
            HashType::Sha256,
            auth,
            Arc::new(Permissions::new(groups)),
            rec,
            itx,
            None,
            CancellationToken::new(),
        );
        (c, irx)
    }

    fn signed(op: FenceOp, domain: &str, seq: u32) -> [u8; REQ_LEN] {
        let mut r = FenceRequest::new(op, domain, seq).unwrap();
        r.set_callback("127.0.0.1:1229".parse().unwrap());
        r.sign(KEY, HashType::Sha256, [1, 2, 3, 4, 5, 6]).unwrap();
        r.encode().unwrap()
    }

    fn origin(ip: &str) -> Origin {
        Origin {
            perm_source: ip.into(),
            label: format!("tcp:{ip}"),
        }
    }

    /// Runs `serve` against an in-memory client; returns everything the
    /// daemon wrote after the handshake.
    async fn exchange(c: &Common<Recorder>, raw: &[u8; REQ_LEN], from: &str) -> Vec<u8> {
        let req = c.check(raw).unwrap();
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let client = async move {
            client_handshake(&mut b, HashType::Sha256, KEY, Duration::from_secs(2))
                .await
                .unwrap();
            let mut out = Vec::new();
            b.read_to_end(&mut out).await.unwrap();
            out
        };
        let daemon = async {
            c.serve(&mut a, &req, &origin(from)).await;
            drop(a);
        };
        let ((), out) = tokio::join!(daemon, client);
        out
    }

    #[tokio::test]
    async fn fence_ops_reach_the_engine_with_the_source() {
        let rec = Recorder {
            answer: Some(FenceResult::Off),
            ..Default::default()
        };
        let (c, _irx) = common(rec.clone(), &[], HashType::Sha256);
        let out = exchange(&c, &signed(FenceOp::Status, "vm1", 1), "10.0.0.7").await;
        assert_eq!(out, vec![2]);
        let calls = rec.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![FenceCall {
                op: FenceOp::Status,
                domain: "vm1".into(),
                source: "tcp:10.0.0.7".into()
            }]
        );
    }

    #[tokio::test]
    async fn null_monitor_and_unknown_are_answered_here() {
        let rec = Recorder::default();
        let (c, _irx) = common(rec.clone(), &[], HashType::Sha256);
        assert_eq!(
            exchange(&c, &signed(FenceOp::Null, "", 1), "1.1.1.1").await,
            vec![1]
        );
        assert_eq!(
            exchange(&c, &signed(FenceOp::Monitor, "", 2), "1.1.1.1").await,
            vec![0]
        );
        let mut unknown = FenceRequest::new(FenceOp::Null, "x", 3).unwrap();
        unknown.request = 7; // metadata: never sent by the client
        unknown.sign(KEY, HashType::Sha256, [0; 6]).unwrap();
        let raw = unknown.encode().unwrap();
        assert_eq!(exchange(&c, &raw, "1.1.1.1").await, vec![1]);
        assert!(rec.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn list_sends_every_visible_vm_then_the_terminator_and_zero() {
        let long = "n".repeat(70);
        let rec = Recorder {
            domains: Arc::new(vec![
                domain("web1", "u-web1", DomainState::Running),
                domain("db1", "u-db1", DomainState::Paused),
                domain(&long, "u-long", DomainState::Shutoff),
            ]),
            ..Default::default()
        };
        let (c, _irx) = common(rec.clone(), &[], HashType::Sha256);
        let out = exchange(&c, &signed(FenceOp::List, "", 1), "1.1.1.1").await;
        assert_eq!(out.len(), 1 + 4 * 130 + 1);
        assert_eq!(out[0], RESP_HOSTLIST);
        let rec_at =
            |i: usize| -> [u8; 130] { out[1 + i * 130..1 + (i + 1) * 130].try_into().unwrap() };
        let h = HostState::parse(&rec_at(0)).unwrap().unwrap();
        assert_eq!(
            (h.domain.as_str(), h.uuid.as_str(), h.state),
            ("web1", "u-web1", 1)
        );
        assert_eq!(HostState::parse(&rec_at(1)).unwrap().unwrap().state, 3);
        let l = rec_at(2);
        assert_eq!(&l[..63], "n".repeat(63).as_bytes(), "truncated to 63 bytes");
        assert_eq!(l[63], 0, "always NUL-terminated");
        assert_eq!(l[129], 0, "padding is zero");
        assert_eq!(rec_at(3), HOST_STATE_END);
        assert_eq!(*out.last().unwrap(), 0);
        assert!(
            rec.calls.lock().unwrap().is_empty(),
            "list does not call the engine"
        );
    }

    #[tokio::test]
    async fn groups_deny_without_calling_the_engine_and_filter_the_list() {
        let rec = Recorder {
            domains: Arc::new(vec![
                domain("web1", "u-web1", DomainState::Running),
                domain("db1", "u-db1", DomainState::Running),
            ]),
            ..Default::default()
        };
        let groups = [PermissionGroup {
            name: "web".into(),
            uuid: vec!["WEB1".into()],
            ip: vec!["10.0.0.1".into()],
        }];
        let (c, _irx) = common(rec.clone(), &groups, HashType::Sha256);
        assert_eq!(
            exchange(&c, &signed(FenceOp::Off, "db1", 1), "10.0.0.1").await,
            vec![3]
        );
        assert_eq!(
            exchange(&c, &signed(FenceOp::Off, "web1", 2), "10.0.0.2").await,
            vec![3]
        );
        assert!(rec.calls.lock().unwrap().is_empty());
        assert_eq!(
            exchange(&c, &signed(FenceOp::Off, "web1", 3), "10.0.0.1").await,
            vec![0]
        );
        assert_eq!(rec.calls.lock().unwrap().len(), 1);
        // null and monitor are never checked.
        assert_eq!(
            exchange(&c, &signed(FenceOp::Monitor, "", 4), "10.9.9.9").await,
            vec![0]
        );
        let out = exchange(&c, &signed(FenceOp::List, "", 5), "10.0.0.1").await;
        assert_eq!(out.len(), 1 + 2 * 130 + 1, "only web1 and the terminator");
        let out = exchange(&c, &signed(FenceOp::List, "", 6), "10.0.0.2").await;
        assert_eq!(out.len(), 1 + 130 + 1, "nothing visible");
    }

    #[tokio::test]
    async fn answered_requests_are_duplicates_for_ten_seconds() {
        let rec = Recorder::default();
        let (c, _irx) = common(rec.clone(), &[], HashType::Sha256);
        let raw = signed(FenceOp::Off, "vm1", 77);
        exchange(&c, &raw, "1.1.1.1").await;
        assert_eq!(c.check(&raw), Err(Refusal::Duplicate));
        let upper = signed(FenceOp::Off, "VM1", 77);
        assert_eq!(c.check(&upper), Err(Refusal::Duplicate));
        assert!(c.check(&signed(FenceOp::On, "vm1", 77)).is_ok());
        assert_eq!(rec.calls.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_failed_handshake_is_not_recorded_and_not_dispatched() {
        let rec = Recorder::default();
        let (c, _irx) = common(rec.clone(), &[], HashType::Sha256);
        let raw = signed(FenceOp::Off, "vm1", 5);
        let req = c.check(&raw).unwrap();
        let (mut a, mut b) = tokio::io::duplex(1024);
        let client = async move {
            // Wrong key: the client gives up after the daemon's answer.
            let r =
                client_handshake(&mut b, HashType::Sha256, b"wrong", Duration::from_secs(2)).await;
            assert!(r.is_err());
        };
        let o = origin("1.1.1.1");
        tokio::join!(c.serve(&mut a, &req, &o), client);
        assert!(rec.calls.lock().unwrap().is_empty());
        assert!(c.check(&raw).is_ok(), "a retransmission is tried again");
    }

    #[tokio::test]
    async fn refusals_are_checked_before_anything_else() {
        let (c, _irx) = common(Recorder::default(), &[], HashType::Sha256);
        assert_eq!(c.check(&[0u8; 10]), Err(Refusal::Length(10)));
        assert_eq!(c.check(&[0u8; 177]), Err(Refusal::Length(177)));
        let mut bad = signed(FenceOp::Off, "vm1", 1);
        bad[5] ^= 1;
        assert_eq!(
            c.check(&bad),
            Err(Refusal::Signature(wire::VerifyError::Mismatch))
        );
        let mut r = FenceRequest::new(FenceOp::Off, "vm1", 1).unwrap();
        r.sign(KEY, HashType::Sha1, [0; 6]).unwrap();
        assert!(matches!(
            c.check(&r.encode().unwrap()),
            Err(Refusal::Signature(wire::VerifyError::WeakerHash { .. }))
        ));
        // Random bytes with a valid-looking hashtype fail the signature.
        let mut junk = [0xAAu8; REQ_LEN];
        junk[1] = 2;
        assert!(matches!(c.check(&junk), Err(Refusal::Signature(_))));
        junk[1] = 9;
        assert_eq!(
            c.check(&junk),
            Err(Refusal::Signature(wire::VerifyError::UnknownHash(9)))
        );
    }

    #[tokio::test]
    async fn in_flight_copies_are_refused() {
        let (c, _irx) = common(Recorder::default(), &[], HashType::Sha256);
        let req = c.check(&signed(FenceOp::Reboot, "vm1", 9)).unwrap();
        let cb: SocketAddr = "127.0.0.1:1229".parse().unwrap();
        let g = c.begin(&req, Some(cb)).unwrap();
        assert_eq!(c.begin(&req, Some(cb)).err(), Some(Refusal::InFlight));
        assert!(
            c.begin(&req, Some("127.0.0.2:1229".parse().unwrap()))
                .is_ok()
        );
        drop(g);
        assert!(c.begin(&req, Some(cb)).is_ok());
    }

    #[tokio::test]
    async fn drops_reach_the_engine_batched() {
        let (c, mut irx) = common(Recorder::default(), &[], HashType::Sha256);
        for _ in 0..500 {
            c.refuse("x", &Refusal::Length(1));
        }
        // The counter flushes once a second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut inputs = Vec::new();
        while let Ok(i) = irx.try_recv() {
            inputs.push(i);
        }
        match inputs.as_slice() {
            [
                Input::Dropped {
                    what: DropKind::FencePackets,
                    count: 500,
                    ..
                },
            ] => {}
            other => panic!("want one batched drop input, got {other:?}"),
        }
    }

    #[test]
    fn field_truncates_on_a_character_boundary() {
        assert_eq!(field("abc"), "abc");
        assert_eq!(field(&"x".repeat(100)).len(), 63);
        let s = format!("{}é", "x".repeat(62)); // é is 2 bytes: 62 + 2 = 64
        assert_eq!(field(&s), "x".repeat(62));
    }
}
