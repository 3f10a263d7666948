//! The TCP listener (`fence_virt -T <ip>`): the client connects, writes the
//! 176-byte request, and the handshake and the answer follow on the same
//! connection. Unlike fence_virtd's tcp listener (which always uses sha256
//! for the handshake), the configured `auth` is used. The permission source
//! is the real peer address (an IPv4-mapped IPv6 peer shows as IPv4).

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use super::listeners::{KeySettings, Origin};
use super::stream::StreamListener;

/// The TCP listener's settings (`[listeners.tcp]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TcpSettings {
    /// An IP address; an IPv6 address listens on IPv6.
    pub address: String,
    pub port: u16,
    pub key: KeySettings,
}

pub fn bind(cfg: &TcpSettings) -> anyhow::Result<TcpListener> {
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

impl StreamListener for TcpListener {
    type Stream = TcpStream;

    async fn next_connection(&self) -> std::io::Result<(TcpStream, Origin)> {
        let (stream, peer) = self.accept().await?;
        let ip = peer.ip().to_canonical();
        let origin = Origin {
            perm_source: ip.to_string(),
            label: format!("tcp:{ip}"),
        };
        Ok((stream, origin))
    }
}
