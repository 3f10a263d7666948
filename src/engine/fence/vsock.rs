//! The vsock listener (`fence_virt -S <cid>` from a guest): AF_VSOCK stream
//! sockets on (VMADDR_CID_ANY, port), driven by tokio's `AsyncFd`. The
//! protocol after the accept is the TCP listener's; the permission source is
//! the peer's CID in decimal.

use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};

use anyhow::Context;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::listeners::{KeySettings, Origin};
use super::stream::StreamListener;

/// `VMADDR_CID_ANY`.
pub const CID_ANY: u32 = u32::MAX;

/// The vsock listener's settings (`[listeners.vsock]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VsockSettings {
    pub port: u32,
    pub key: KeySettings,
}

/// A listening vsock socket.
pub struct VsockListener {
    fd: AsyncFd<Socket>,
}

/// Binds (VMADDR_CID_ANY, port). Needs AF_VSOCK support in the kernel (a
/// host with vhost_vsock, or a guest with a virtio-vsock device).
pub fn bind(port: u32) -> anyhow::Result<VsockListener> {
    let sock = Socket::new(Domain::VSOCK, Type::STREAM, None)
        .context("cannot create an AF_VSOCK socket (no vsock support in this kernel?)")?;
    sock.bind(&SockAddr::vsock(CID_ANY, port))
        .with_context(|| format!("cannot bind vsock port {port}"))?;
    sock.listen(16)
        .with_context(|| format!("cannot listen on vsock port {port}"))?;
    sock.set_nonblocking(true)?;
    Ok(VsockListener {
        fd: register(sock)?,
    })
}

/// Registers an owned socket with the reactor.
fn register(sock: Socket) -> std::io::Result<AsyncFd<Socket>> {
    // SAFETY: the `Socket` owns its descriptor and is moved into the
    // `AsyncFd`, which is the only owner until it is dropped; nothing closes
    // or replaces the descriptor meanwhile, so `as_raw_fd` stays valid and
    // unchanged for the AsyncFd's whole life.
    unsafe { AsyncFd::register(sock) }.map_err(|e| e.into())
}

impl VsockListener {
    /// The next connection and the peer's CID.
    pub async fn accept(&self) -> std::io::Result<(VsockStream, u32)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|s| s.get_ref().accept()) {
                Ok(Ok((sock, addr))) => {
                    sock.set_nonblocking(true)?;
                    let cid = addr.as_vsock_address().map(|(cid, _)| cid).ok_or_else(|| {
                        std::io::Error::other("accepted peer has no vsock address")
                    })?;
                    return Ok((VsockStream::new(sock)?, cid));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// The bound port (useful when bound to port `u32::MAX`, "any").
    pub fn local_port(&self) -> std::io::Result<u32> {
        self.fd
            .get_ref()
            .local_addr()?
            .as_vsock_address()
            .map(|(_, p)| p)
            .ok_or_else(|| std::io::Error::other("not a vsock socket"))
    }
}

/// A connected stream socket driven by tokio (any stream socket works; the
/// listener uses it for vsock).
pub struct VsockStream {
    fd: AsyncFd<Socket>,
}

impl VsockStream {
    /// Wraps a non-blocking connected stream socket.
    pub fn new(sock: Socket) -> std::io::Result<Self> {
        Ok(Self {
            fd: register(sock)?,
        })
    }
}

impl AsyncRead for VsockStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|s| s.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for VsockStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|s| s.get_ref().write(buf)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.fd.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

impl StreamListener for VsockListener {
    type Stream = VsockStream;

    async fn next_connection(&self) -> std::io::Result<(VsockStream, Origin)> {
        let (stream, cid) = self.accept().await?;
        let origin = Origin {
            perm_source: cid.to_string(),
            label: format!("vsock:{cid}"),
        };
        Ok((stream, origin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::InputTx;
    use crate::engine::fence::auth::client_handshake;
    use crate::engine::fence::listeners::Common;
    use crate::engine::fence::listeners::testing::Recorder;
    use crate::engine::fence::perm::Permissions;
    use fenceline_proto::api::FenceOp;
    use fenceline_proto::fence_xvm::{FenceRequest, HashType};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    const KEY: &[u8] = b"vsock test key";

    /// The stream wrapper over a real socket pair (AF_UNIX: this kernel may
    /// have no vsock transport to connect through; see README "Fencing").
    fn pair() -> (VsockStream, VsockStream) {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (VsockStream::new(a).unwrap(), VsockStream::new(b).unwrap())
    }

    #[tokio::test]
    async fn stream_wrapper_reads_and_writes() {
        let (mut a, mut b) = pair();
        // More than any socket buffer: the writer must wait for the reader.
        let w = tokio::spawn(async move {
            a.write_all(&vec![7u8; 1_000_000]).await.unwrap();
            a.shutdown().await.unwrap();
            a
        });
        let mut all = Vec::new();
        b.read_to_end(&mut all).await.unwrap();
        let mut a = w.await.unwrap();
        assert_eq!(all.len(), 1_000_000);
        assert!(all.iter().all(|&x| x == 7));
        // The other direction still works after a's write shutdown.
        b.write_all(b"back").await.unwrap();
        let mut got = [0u8; 4];
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"back");
    }

    #[tokio::test]
    async fn a_request_over_the_stream_is_served_with_the_cid_as_source() {
        let rec = Recorder::default();
        let (itx, _irx) = InputTx::channel(16);
        let common = Common::with_guard(
            "vsock",
            KEY.into(),
            HashType::Sha256,
            HashType::Sha256,
            Arc::new(Permissions::default()),
            rec.clone(),
            itx,
            None,
            CancellationToken::new(),
            Arc::new(crate::engine::fence::guard::Guard::default()),
        );
        let (mut daemon_side, mut client) = pair();
        let origin = Origin {
            perm_source: "42".into(),
            label: "vsock:42".into(),
        };
        let mut r = FenceRequest::new(FenceOp::Reboot, "guest7", 3).unwrap();
        r.sign(KEY, HashType::Sha256, [9; 6]).unwrap();
        let raw = r.encode().unwrap();
        let c = async move {
            client.write_all(&raw).await.unwrap();
            client_handshake(&mut client, HashType::Sha256, KEY, Duration::from_secs(2))
                .await
                .unwrap();
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            out
        };
        let d = async {
            super::super::stream::handle_stream(&common, &mut daemon_side, &origin).await;
            drop(daemon_side);
        };
        let ((), out) = tokio::join!(d, c);
        assert_eq!(out, vec![0]);
        let calls = rec.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].source, "vsock:42");
        assert_eq!(calls[0].op, FenceOp::Reboot);
    }

    #[tokio::test]
    async fn binds_and_accepts_nothing_when_no_one_connects() {
        // Binding needs AF_VSOCK; kernels without it give a clear error.
        match bind(u32::MAX) {
            Ok(l) => {
                let port = l.local_port().unwrap();
                assert_ne!(port, u32::MAX, "the kernel picked a port");
                let r = tokio::time::timeout(Duration::from_millis(50), l.accept()).await;
                assert!(r.is_err(), "nobody connected");
            }
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(msg.contains("vsock"), "{msg}");
            }
        }
    }
}
