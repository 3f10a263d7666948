//! The TCP listener (`fence_virt -T <ip>`): the client connects, writes the
//! 176-byte request, and the handshake and the answer follow on the same
//! connection. Unlike fence_virtd's tcp listener (which always uses sha256
//! for the handshake), the configured `auth` is used. The permission source
//! is the real peer address (an IPv4-mapped IPv6 peer shows as IPv4).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::listeners::{Common, FenceService, Origin, Refusal};
use super::wire::REQ_LEN;
use crate::config::TcpListenerConf;

/// fence_virtd reads the request within 1 s of the accept.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(1);

pub fn bind(cfg: &TcpListenerConf) -> anyhow::Result<TcpListener> {
    let ip: IpAddr = cfg.address.parse().with_context(|| {
        format!(
            "listeners.tcp.address: {:?} is not an IP address",
            cfg.address
        )
    })?;
    let addr = SocketAddr::new(ip, cfg.port);
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .context("cannot create the TCP socket")?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())
        .with_context(|| format!("cannot bind TCP {addr}"))?;
    sock.listen(64)?;
    sock.set_nonblocking(true)?;
    Ok(TcpListener::from_std(sock.into())?)
}

pub(crate) async fn run<S: FenceService>(
    l: TcpListener,
    common: Arc<Common<S>>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = l.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(10); x }
                Err(e) => {
                    // EMFILE and friends: wait a little instead of spinning.
                    tracing::warn!(listener = "tcp", "accept failed: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let ip = peer.ip().to_canonical();
        let origin = Origin {
            perm_source: ip.to_string(),
            label: format!("tcp:{ip}"),
        };
        let Ok(permit) = common.slots.clone().try_acquire_owned() else {
            common.refuse(&origin.label, &Refusal::Busy);
            continue;
        };
        let common = common.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut stream = stream;
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = handle_stream(&common, &mut stream, &origin) => {}
            }
        });
    }
}

/// Reads the request within 1 s, then checks and serves it. Shared with the
/// vsock listener.
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
