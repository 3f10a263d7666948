//! What the stream listeners (tcp, vsock) share: one accept loop, generic
//! over the listener ([`StreamListener`]), that backs off on accept errors
//! and hands each connection its own task; and reading the request from an
//! accepted stream ([`handle_stream`]).
//!
//! Until its request has arrived (1 s at most) a connection holds only a
//! pre-authentication slot ([`PreAuth`]: [`PRE_AUTH_MAX`] per listener,
//! [`PRE_AUTH_PER_SOURCE`] per peer address or CID), so idle connections
//! from one guest cannot take the [`MAX_CONCURRENT`](super::listeners::MAX_CONCURRENT)
//! slots that requests are served in.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::listeners::{Common, FenceService, Origin, Refusal};
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
    let pre_auth = PreAuth::default();
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
            Err(why) => {
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
                // a serving slot.
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

/// The connections waiting for their request, in all and per source.
#[derive(Debug, Default, Clone)]
pub(crate) struct PreAuth {
    inner: Arc<Mutex<PreAuthCounts>>,
}

#[derive(Debug, Default)]
struct PreAuthCounts {
    total: usize,
    per_source: HashMap<String, usize>,
}

/// A pre-authentication slot; freed when dropped.
#[derive(Debug)]
pub(crate) struct Waiting {
    pre: PreAuth,
    source: String,
}

impl PreAuth {
    fn lock(&self) -> std::sync::MutexGuard<'_, PreAuthCounts> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection from `source`, or why there is none.
    pub(crate) fn enter(&self, source: &str) -> Result<Waiting, Refusal> {
        let mut c = self.lock();
        if c.total >= PRE_AUTH_MAX {
            return Err(Refusal::PreAuthBusy(PRE_AUTH_MAX));
        }
        let n = c.per_source.entry(source.to_string()).or_default();
        if *n >= PRE_AUTH_PER_SOURCE {
            return Err(Refusal::SourceBusy(PRE_AUTH_PER_SOURCE));
        }
        *n += 1;
        c.total += 1;
        Ok(Waiting {
            pre: self.clone(),
            source: source.to_string(),
        })
    }

    /// (all waiting, waiting from `source`)
    #[cfg(test)]
    pub(crate) fn counts(&self, source: &str) -> (usize, usize) {
        let c = self.lock();
        (c.total, c.per_source.get(source).copied().unwrap_or(0))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut c = self.pre.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&self.source);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_auth_limits_per_source_and_in_all() {
        let p = PreAuth::default();
        let mine: Vec<_> = (0..PRE_AUTH_PER_SOURCE)
            .map(|_| p.enter("10.0.0.5").unwrap())
            .collect();
        assert_eq!(
            p.enter("10.0.0.5").unwrap_err(),
            Refusal::SourceBusy(PRE_AUTH_PER_SOURCE)
        );
        // Another guest is not affected.
        let other = p.enter("42").unwrap();
        assert_eq!(
            p.counts("10.0.0.5"),
            (PRE_AUTH_PER_SOURCE + 1, PRE_AUTH_PER_SOURCE)
        );
        drop(mine);
        drop(other);
        assert_eq!(p.counts("10.0.0.5"), (0, 0));
        let many: Vec<_> = (0..PRE_AUTH_MAX)
            .map(|i| p.enter(&format!("10.1.{}.{}", i / 200, i % 200)).unwrap())
            .collect();
        assert_eq!(
            p.enter("10.9.9.9").unwrap_err(),
            Refusal::PreAuthBusy(PRE_AUTH_MAX)
        );
        drop(many);
        assert!(p.enter("10.9.9.9").is_ok());
    }
}
