//! The answer to a verified, authenticated request: `null`, `monitor` and
//! `list` here, `off`/`on`/`reboot`/`status` through the engine after the
//! permission check; every write bounded in time.

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::super::perm::Permissions;
use super::request::{Common, Origin};
use super::{FenceService, RECORD_WRITE_TIMEOUT, RESULT_WRITE_TIMEOUT};
use crate::engine::FenceCall;
use fenceline_proto::api::{
    Event, EventKind, FenceOp, FencePhase, FenceResult, Snapshot, now_millis,
};
use fenceline_proto::fence_xvm::{self, FenceRequest, HOST_STATE_END, HostState, RESP_HOSTLIST};

/// The result fence_virtd sends for `null` (its backends answer 1).
const NULL_RESULT: u8 = 1;

impl<S: FenceService> Common<S> {
    /// Writes the answer; returns the result byte (or a description) and a
    /// detail for the log.
    pub(super) async fn answer<W: AsyncWrite + Unpin>(
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
                // Unlike fence_virtd (always 0): fail while this host cannot fence.
                let why = self
                    .svc
                    .snapshot()
                    .cannot_fence(self.monitor_requires_libvirt);
                let result = if why.is_some() {
                    FenceResult::Fail
                } else {
                    FenceResult::Ok
                };
                let r = write_result(w, result.as_raw()).await;
                let detail = why.map(|w| format!("this host cannot fence: {w}"));
                (
                    result.as_raw().to_string(),
                    Some(with_write_error(detail.as_deref().unwrap_or(""), r))
                        .filter(|d| !d.is_empty()),
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
                        source: self.source_of(origin),
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
                source: self.source_of(origin),
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
    records: &[[u8; fence_xvm::HOST_STATE_LEN]],
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
pub(super) fn field(s: &str) -> String {
    let mut end = s.len().min(fence_xvm::DOMAIN_FIELD - 1);
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
) -> Vec<[u8; fence_xvm::HOST_STATE_LEN]> {
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
