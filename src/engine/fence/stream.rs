//! What the stream listeners (tcp, vsock) share: one accept loop, generic
//! over the listener ([`StreamListener`]), that backs off on accept errors
//! and hands each connection its own task; and reading the request from an
//! accepted stream ([`handle_stream`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::listeners::{Common, FenceService, Origin, Refusal};
use fenceline_proto::backoff::Backoff;
use fenceline_proto::fence_xvm::REQ_LEN;

/// fence_virtd reads the request within 1 s of the accept.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(1);
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
        let Ok(permit) = common.slots.clone().try_acquire_owned() else {
            common.refuse(&origin.label, &Refusal::Busy);
            continue;
        };
        let common = common.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = handle_stream(&common, &mut stream, &origin) => {}
            }
        });
    }
}

/// Reads the request within 1 s, then checks and serves it.
pub(crate) async fn handle_stream<S: FenceService, T: AsyncRead + AsyncWrite + Unpin>(
    common: &Common<S>,
    stream: &mut T,
    origin: &Origin,
) {
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
        Ok(Ok(())) => {}
        Ok(Err(why)) => return common.refuse(&origin.label, &why),
        Err(_) if got == 0 => {
            return common.refuse(
                &origin.label,
                &Refusal::RequestRead("nothing received within 1 s".into()),
            );
        }
        Err(_) => return common.refuse(&origin.label, &Refusal::Length(got)),
    }
    let req = match common.check(&raw) {
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
