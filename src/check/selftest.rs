//! The loopback self-test: one signed `null` request to the local tcp
//! listener, as `fence_virt -T` sends it, with the configured key; the
//! request format and the handshake are the ones the listeners use
//! (`fence_xvm::FenceRequest`, `fence::auth::client_handshake`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use fenceline_config::{Config, TcpListenerConf};
use fenceline_proto::fence_xvm::{FenceCmd, FenceRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::eval::SelfTest;
use crate::daemon::hash_type;
use crate::engine::fence::{auth::client_handshake, key};

/// The self-test of the tcp listener, when one is configured.
pub async fn run(cfg: &Config, limit: Duration) -> Option<SelfTest> {
    let t = cfg.listeners.tcp.as_ref()?;
    let (shown, result) = match target(t) {
        Ok(addr) => (
            addr.to_string(),
            tokio::time::timeout(limit, null_request(t, addr))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {limit:?}"))),
        ),
        Err(e) => (format!("{}:{}", t.address, t.port), Err(e)),
    };
    Some(SelfTest {
        listener: "tcp".into(),
        target: shown,
        result,
    })
}

/// Where to connect: the listener's address, or loopback for a wildcard.
fn target(t: &TcpListenerConf) -> Result<SocketAddr, String> {
    let ip: IpAddr = t
        .address
        .parse()
        .map_err(|_| format!("{} is not an address", t.address))?;
    let ip = match ip {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, t.port))
}

async fn null_request(t: &TcpListenerConf, addr: SocketAddr) -> Result<u8, String> {
    // Read even when loose: the key finding judges the mode, this tests the listener.
    let key = key::read_key(&t.key_file, true)
        .map_err(|e| format!("cannot read the key {}: {e}", t.key_file.display()))?;
    let mut req = FenceRequest::new(FenceCmd::Null, "", rand::random())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    req.sign(&key, hash_type(t.hash), rand::random())
        .map_err(|e| format!("cannot sign the request: {e}"))?;
    let raw = req.encode().map_err(|e| e.to_string())?;
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    s.write_all(&raw)
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    client_handshake(&mut s, hash_type(t.auth), &key, Duration::from_secs(5))
        .await
        .map_err(|e| format!("handshake: {e} (is it the daemon's key?)"))?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)
        .await
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok(b[0])
}
