//! The multicast listener (fence_xvm): signed 176-byte datagrams to a group
//! (225.0.0.12 / ff05::3:1, port 1229); the reply goes over a TCP connection
//! back to the address and port carried inside the request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::guard::callback_allowed;
use super::listeners::{Common, FenceService, KeySettings, Origin, Refusal};
use fenceline_proto::cidr::Cidr;

/// The multicast listener's settings (`[listeners.multicast]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MulticastSettings {
    /// The group to join: 225.0.0.12 (IPv4) or ff05::3:1 (IPv6).
    pub address: String,
    pub port: u16,
    /// Join on this interface only; absent = the kernel's choice.
    pub interface: Option<String>,
    pub key: KeySettings,
    /// When not empty, connect-backs go only to addresses inside these
    /// networks (CIDR strings, `callback_networks`); loopback and link-local
    /// need an entry of their own (see [`callback_allowed`]).
    pub callback_networks: Vec<String>,
}

/// fence_virtd's connect-back limit.
pub const CONNECT_BACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Larger than any UDP payload, so an oversized datagram is seen whole.
const RECV_BUF: usize = 65_536;

/// The interface index of `name`, or an error naming it.
pub fn interface_index(name: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(name)
        .with_context(|| format!("interface name {name:?} contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("interface {name:?} does not exist");
    }
    Ok(idx)
}

/// The parsed `callback_networks`, or an error naming the bad entry.
pub fn callback_networks(cfg: &MulticastSettings) -> anyhow::Result<Arc<[Cidr]>> {
    cfg.callback_networks
        .iter()
        .map(|s| {
            Cidr::parse(s)
                .map_err(|e| anyhow::anyhow!("listeners.multicast.callback_networks: {e}"))
        })
        .collect()
}

/// Binds the group's port, joins the group (on `interface` if given).
pub fn bind(cfg: &MulticastSettings) -> anyhow::Result<UdpSocket> {
    let group: IpAddr = cfg.address.parse().with_context(|| {
        format!(
            "listeners.multicast.address: {:?} is not an IP address",
            cfg.address
        )
    })?;
    if !group.is_multicast() {
        bail!("listeners.multicast.address: {group} is not a multicast address");
    }
    let ifindex = cfg
        .interface
        .as_deref()
        .map(interface_index)
        .transpose()
        .context("listeners.multicast.interface")?;
    let sock = match group {
        IpAddr::V4(_) => Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)),
        IpAddr::V6(_) => Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)),
    }
    .context("cannot create the UDP socket")?;
    sock.set_reuse_address(true)?;
    if group.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // Bound to the group address, so only datagrams sent to the group arrive
    // (not unicast to the port, nor other groups someone joined on it).
    let local = SocketAddr::new(group, cfg.port);
    sock.bind(&local.into())
        .with_context(|| format!("cannot bind UDP {local}"))?;
    match group {
        IpAddr::V4(g) => match ifindex {
            Some(i) => sock.join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(i)),
            None => sock.join_multicast_v4(&g, &std::net::Ipv4Addr::UNSPECIFIED),
        },
        IpAddr::V6(g) => sock.join_multicast_v6(&g, ifindex.unwrap_or(0)),
    }
    .with_context(|| {
        format!(
            "cannot join {group} on {}",
            cfg.interface.as_deref().unwrap_or("the default interface")
        )
    })?;
    // Room for a burst while requests are being checked (best effort: the
    // kernel caps it at net.core.rmem_max).
    let _ = sock.set_recv_buffer_size(1 << 20);
    sock.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(sock.into())?)
}

/// Reads datagrams until cancelled; each valid request whose callback
/// destination `allow` admits is handled on its own task, which connects
/// back only when this node wins the run's claim (one fenceline node per
/// fence_xvm run, cluster-wide; `model/fence/claim.rs`).
pub(crate) async fn run<S: FenceService>(
    sock: UdpSocket,
    common: Arc<Common<S>>,
    allow: Arc<[Cidr]>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let (n, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(listener = "multicast", "receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let from_label = format!("udp:{}", from.ip().to_canonical());
        let req = match common.check(&buf[..n]) {
            Ok(r) => r,
            Err(why) => {
                common.refuse(&from_label, &why);
                continue;
            }
        };
        let Some(callback) = req.callback() else {
            common.refuse(&from_label, &Refusal::NoCallback);
            continue;
        };
        if let Err(why) = callback_allowed(callback, &allow) {
            common.refuse(&from_label, &Refusal::Destination(why));
            continue;
        }
        let guard = match common.begin(&req, Some(callback)) {
            Ok(g) => g,
            Err(why) => {
                common.refuse(&from_label, &why);
                continue;
            }
        };
        // Per-source limits by the callback address (inside the signed
        // packet): one key holder's connect-backs into a black hole cannot
        // hold every slot.
        let source = match common.source_slot(&callback.ip().to_canonical().to_string()) {
            Ok(s) => s,
            Err(why) => {
                common.refuse(&from_label, &why);
                continue;
            }
        };
        let Ok(permit) = common.slots.clone().try_acquire_owned() else {
            common.refuse(&from_label, &Refusal::Busy);
            continue;
        };
        let common = common.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _source = source;
            let _guard = guard;
            let ip = callback.ip().to_canonical();
            let origin = Origin {
                perm_source: ip.to_string(),
                label: format!("multicast:{ip}"),
            };
            let claimed = tokio::select! {
                _ = cancel.cancelled() => return,
                c = common.claim(&req, &origin) => c,
            };
            let Some(_run) = claimed else { return };
            let mut stream = tokio::select! {
                _ = cancel.cancelled() => return,
                r = connect_back(callback) => match r {
                    Ok(s) => s,
                    Err(e) => {
                        common.refuse(&origin.label, &Refusal::ConnectBack(format!("{callback}: {e}")));
                        return;
                    }
                },
            };
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = common.serve(&mut stream, &req, &origin) => {}
            }
        });
    }
}

/// A non-blocking connect with keepalive and fence_virtd's 5 s limit.
pub async fn connect_back(to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_keepalive(true)?;
    match tokio::time::timeout(CONNECT_BACK_TIMEOUT, s.connect(to)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no connection within 5 s",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_interface_is_an_error() {
        let e = interface_index("nonexistent-if0").unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(interface_index("lo").unwrap() > 0);
    }

    #[tokio::test]
    async fn bind_refuses_bad_settings() {
        let mut c = MulticastSettings {
            address: "10.0.0.1".into(),
            ..Default::default()
        };
        let e = bind(&c).unwrap_err();
        assert!(
            format!("{e:#}").contains("not a multicast address"),
            "{e:#}"
        );
        c.address = "not-an-ip".into();
        assert!(format!("{:#}", bind(&c).unwrap_err()).contains("not an IP address"));
        c.address = "225.0.0.12".into();
        c.interface = Some("nonexistent-if0".into());
        assert!(format!("{:#}", bind(&c).unwrap_err()).contains("does not exist"));
    }

    #[tokio::test]
    async fn connect_back_to_a_closed_port_fails_fast() {
        // Find a free port, then close it again.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let t0 = std::time::Instant::now();
        assert!(connect_back(addr).await.is_err());
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}
