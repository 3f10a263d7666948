//! `fenceline check`'s look at the host: files, the daemon's snapshot and
//! events (the read-only control socket: a client, never a second daemon),
//! the kernel's socket tables, and one loopback request.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use fenceline_config::Config;
use fenceline_proto::api::{Event, Reply, Request, Snapshot};

use super::eval::{FileFact, KeyFact, ListenerFact};
use crate::engine::control::client::Client;
use crate::engine::fence::key::{self, Private};

/// The file facts of a private file: `lstat` for the report, the daemon's
/// own open-and-check for the verdict.
pub fn file(path: &Path, kind: Private) -> FileFact {
    let md = std::fs::symlink_metadata(path).ok();
    let problem = match key::check_private(path, kind) {
        Ok(()) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("does not exist".into()),
        Err(e) => Some(e.to_string()),
    };
    FileFact {
        path: path.to_path_buf(),
        mode: md.as_ref().map(|m| m.mode() & 0o7777),
        uid: md.as_ref().map(|m| m.uid()),
        problem,
    }
}

/// Every listener's key (the file's facts and its digest), and the cluster key's file.
pub fn keys(cfg: &Config) -> Vec<KeyFact> {
    // Opened as loose: the mode is judged from the facts, so a loose key
    // still gets its digest compared.
    cfg.listener_keys()
        .into_iter()
        .map(|(name, path)| {
            let loose = cfg.listeners.allow_loose_key_mode;
            KeyFact {
                listener: name.to_string(),
                file: file(path, Private::Key { loose }),
                loose_allowed: loose,
                digest: key::digest_file(path, true).ok(),
            }
        })
        // The cluster key: its file only (peers announce no digest of it; a
        // host with another cluster key is not heard at all, which the
        // accounting checks show).
        .chain(cfg.corosync.cluster_key.iter().map(|path| KeyFact {
            listener: "cluster".to_string(),
            file: file(path, Private::Key { loose: false }),
            loose_allowed: false,
            digest: None,
        }))
        .collect()
}

/// The daemon's snapshot and event backlog, each within `limit`.
pub async fn daemon(
    socket: &Path,
    limit: Duration,
) -> (Result<Snapshot, String>, Result<Vec<Event>, String>) {
    let shown = socket.display();
    let snapshot = async {
        let mut c = Client::connect(socket).await.map_err(|e| e.to_string())?;
        c.send(&Request::Status).await.map_err(|e| e.to_string())?;
        match c.next(Some(limit)).await.map_err(|e| e.to_string())? {
            Reply::Status { snapshot } => Ok((*snapshot).clone()),
            Reply::Error { code, message } => Err(format!("{code}: {message}")),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }
    .await
    .map_err(|e: String| format!("{shown}: {e}"));
    let events = async {
        let mut c = Client::connect(socket).await.map_err(|e| e.to_string())?;
        c.send(&Request::Events { follow: false })
            .await
            .map_err(|e| e.to_string())?;
        let mut v = Vec::new();
        loop {
            match c.next(Some(limit)).await.map_err(|e| e.to_string())? {
                Reply::Event { event } => v.push(event),
                Reply::BacklogEnd => return Ok(v),
                Reply::Dropped { .. } | Reply::Pong { .. } => {}
                Reply::Error { code, message } => return Err(format!("{code}: {message}")),
                other => return Err(format!("unexpected reply {other:?}")),
            }
        }
    }
    .await
    .map_err(|e: String| format!("{shown}: {e}"));
    (snapshot, events)
}

/// What the kernel shows of each configured listener.
pub fn listeners(cfg: &Config) -> Vec<ListenerFact> {
    let l = &cfg.listeners;
    let mut v = Vec::new();
    if let Some(m) = &l.multicast {
        let v6 = m.address.contains(':');
        let exists = m.interface.as_deref().map(interface_exists);
        v.push(ListenerFact::Multicast {
            group: m.address.clone(),
            port: m.port,
            interface: m.interface.clone(),
            interface_exists: exists,
            joined: joined(&m.address, m.interface.as_deref()),
            bound: udp_bound(m.port, v6),
        });
    }
    if let Some(t) = &l.tcp {
        v.push(ListenerFact::Tcp {
            address: t.address.clone(),
            port: t.port,
        });
    }
    if let Some(s) = &l.vsock {
        v.push(ListenerFact::Vsock { port: s.port });
    }
    v
}

fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Whether `group` is joined (on `iface`, else anywhere), from the kernel.
fn joined(group: &str, iface: Option<&str>) -> Result<bool, String> {
    let ip: std::net::IpAddr = group
        .parse()
        .map_err(|_| format!("{group} is not an address"))?;
    let groups = match ip {
        std::net::IpAddr::V4(a) => parse_igmp(&read("/proc/net/igmp")?, a),
        std::net::IpAddr::V6(a) => parse_igmp6(&read("/proc/net/igmp6")?, a),
    };
    Ok(groups.iter().any(|dev| iface.is_none_or(|i| i == dev)))
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

/// The devices on which `group` is joined, from /proc/net/igmp: a device
/// line (`2\teth0      :     3      V3`), then one line per group with the
/// address in hex, in the kernel's (little-endian) byte order.
pub fn parse_igmp(text: &str, group: std::net::Ipv4Addr) -> Vec<String> {
    let want = format!("{:08X}", u32::from_le_bytes(group.octets()));
    let mut dev = String::new();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        if !line.starts_with(char::is_whitespace) {
            let name = line.split(':').next().unwrap_or("");
            dev = name.split_whitespace().nth(1).unwrap_or("").to_string();
        } else if line.split_whitespace().next() == Some(want.as_str()) {
            out.push(dev.clone());
        }
    }
    out
}

/// The devices on which `group` is joined, from /proc/net/igmp6
/// (`2 eth0 ff0500000000000000000000000f0001 1 00000004 0`).
pub fn parse_igmp6(text: &str, group: std::net::Ipv6Addr) -> Vec<String> {
    let want: String = group.octets().iter().map(|b| format!("{b:02x}")).collect();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == want).then(|| f[1].to_string())
        })
        .collect()
}

/// Whether a UDP socket is bound to `port`, from /proc/net/udp (and udp6).
fn udp_bound(port: u16, v6: bool) -> Result<bool, String> {
    let mut files = vec!["/proc/net/udp"];
    if v6 {
        files.push("/proc/net/udp6");
    }
    let mut any = false;
    for f in files {
        any |= udp_table_has_port(&read(f)?, port);
    }
    Ok(any)
}

/// `local_address` is `HEXADDR:HEXPORT`, the second column.
pub fn udp_table_has_port(text: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    text.lines().skip(1).any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|local| local.ends_with(&want))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn igmp_tables_name_the_devices_that_joined() {
        let igmp = "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n\
                    1\tlo        :     1      V3\n\
                    \t\t\t\t010000E0     1 0:00000000\t\t0\n\
                    4\teth0      :     2      V3\n\
                    \t\t\t\t0C0000E1     1 0:00000000\t\t0\n\
                    \t\t\t\t010000E0     1 0:00000000\t\t0\n";
        let g = "225.0.0.12".parse().unwrap();
        assert_eq!(parse_igmp(igmp, g), vec!["eth0".to_string()]);
        assert!(parse_igmp(igmp, "225.0.0.13".parse().unwrap()).is_empty());
        let igmp6 = "1    lo              ff020000000000000000000000000001     1 0000000C 0\n\
                     2    virbr0          ff050000000000000000000000030001     1 00000004 0\n";
        assert_eq!(
            parse_igmp6(igmp6, "ff05::3:1".parse().unwrap()),
            vec!["virbr0".to_string()]
        );
    }

    #[test]
    fn udp_table_ports_are_hex() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue\n\
                 \x20 12: 00000000:04CD 00000000:0000 07 00000000:00000000\n";
        assert!(udp_table_has_port(t, 1229));
        assert!(!udp_table_has_port(t, 1230));
        assert!(!udp_table_has_port("header only\n", 1229));
    }
}
