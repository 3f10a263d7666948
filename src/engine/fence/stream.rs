//! What the stream listeners (tcp, vsock) share: one accept loop, generic
//! over the listener ([`StreamListener`]), that backs off on accept errors
//! and hands each connection its own task; and reading the request from an
//! accepted stream ([`handle_stream`]).
//!
//! Until its request has arrived (1 s at most) a connection holds only a
//! pre-authentication slot ([`PRE_AUTH_MAX`] per listener,
//! [`PRE_AUTH_PER_SOURCE`] per peer address or CID), so idle connections
//! from one guest cannot take the [`MAX_CONCURRENT`](super::listeners::MAX_CONCURRENT)
//! slots that requests are served in; a request then takes a serving slot
//! within its source's share and rate (`listeners/sources.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::listeners::{Common, FenceService, Full, Origin, Refusal, SourceSlots};
use fenceline_proto::backoff::Backoff;
use fenceline_proto::fence_xvm::REQ_LEN;

/// fence_virtd reads the request within 1 s of the accept.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections of one listener waiting for their request.
pub const PRE_AUTH_MAX: usize = 64;
/// Of those, from one source (peer IP or vsock CID).
pub const PRE_AUTH_PER_SOURCE: usize = 4;
/// The first wait after a failed accept (EMFILE and friends) ...
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// ... doubling up to this.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A listening stream socket.
pub(crate) trait StreamListener: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and where it came from.
    fn next_connection(
        &self,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, Origin)>> + Send;
}

/// Accepts until cancelled; each connection is served on its own task while
/// a slot is free, else refused as busy.
pub(crate) async fn accept_loop<L: StreamListener, S: FenceService>(
    l: L,
    common: Arc<Common<S>>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::with_entropy(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
    let pre_auth = SourceSlots::new(PRE_AUTH_MAX, PRE_AUTH_PER_SOURCE);
    loop {
        let (mut stream, origin) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = l.next_connection() => match r {
                Ok(x) => { backoff.reset(); x }
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    tracing::warn!(listener = common.name, "accept failed: {e}");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            },
        };
        let waiting = match pre_auth.enter(&origin.perm_source) {
            Ok(w) => w,
            Err(full) => {
                let why = match full {
                    Full::Total(n) => Refusal::PreAuthBusy(n),
                    Full::Source(n) => Refusal::SourceBusy(n),
                };
                common.refuse(&origin.label, &why);
                continue;
            }
        };
        let common = common.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let serve = async {
                let raw = match read_request(&mut stream).await {
                    Ok(raw) => raw,
                    Err(why) => return common.refuse(&origin.label, &why),
                };
                // A request arrived: trade the pre-authentication slot for
                // a serving slot, within this source's share and rate.
                let _source = match common.source_slot(&origin.perm_source) {
                    Ok(s) => s,
                    Err(why) => return common.refuse(&origin.label, &why),
                };
                let Ok(_permit) = common.slots.clone().try_acquire_owned() else {
                    return common.refuse(&origin.label, &Refusal::Busy);
                };
                drop(waiting);
                serve_request(&common, &mut stream, &origin, &raw).await;
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = serve => {}
            }
        });
    }
}

/// Reads the request within 1 s, then checks and serves it (what the
/// accept loop does, without the slots).
#[cfg(test)]
pub(crate) async fn handle_stream<S: FenceService, T: AsyncRead + AsyncWrite + Unpin>(
    common: &Common<S>,
    stream: &mut T,
    origin: &Origin,
) {
    match read_request(stream).await {
        Ok(raw) => serve_request(common, stream, origin, &raw).await,
        Err(why) => common.refuse(&origin.label, &why),
    }
}

/// The 176-byte request, read within [`REQUEST_READ_TIMEOUT`].
async fn read_request<T: AsyncRead + Unpin>(stream: &mut T) -> Result<[u8; REQ_LEN], Refusal> {
    let mut raw = [0u8; REQ_LEN];
    let mut got = 0;
    let read = async {
        while got < REQ_LEN {
            match stream.read(&mut raw[got..]).await {
                Ok(0) => return Err(Refusal::Length(got)),
                Ok(n) => got += n,
                Err(e) => return Err(Refusal::RequestRead(e.to_string())),
            }
        }
        Ok(())
    };
    let r = tokio::time::timeout(REQUEST_READ_TIMEOUT, read).await;
    match r {
        Ok(Ok(())) => Ok(raw),
        Ok(Err(why)) => Err(why),
        Err(_) if got == 0 => Err(Refusal::RequestRead("nothing received within 1 s".into())),
        Err(_) => Err(Refusal::Length(got)),
    }
}

/// Checks a request that arrived on `stream` and serves it.
async fn serve_request<S: FenceService, T: AsyncRead + AsyncWrite + Unpin>(
    common: &Common<S>,
    stream: &mut T,
    origin: &Origin,
    raw: &[u8; REQ_LEN],
) {
    let req = match common.check(raw) {
        Ok(r) => r,
        // A duplicate closes the connection without an answer (fence_virtd).
        Err(why) => return common.refuse(&origin.label, &why),
    };
    let _guard = match common.begin(&req, None) {
        Ok(g) => g,
        Err(why) => return common.refuse(&origin.label, &why),
    };
    common.serve(stream, &req, origin).await;
}
