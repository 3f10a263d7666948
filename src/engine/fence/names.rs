//! Requester names (`[listeners] requester_names`): the hosts file the
//! daemon reads at start and on reload, held in memory for the listeners.
//! A fence event's source then names the requester by its address
//! (`multicast:guest1 (10.213.37.101)`). The fence path only looks up this
//! table: no DNS, no file access, nothing that blocks. The parsing (bounded,
//! untrusted text) is `fenceline_proto::hosts`.

use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context;
use fenceline_proto::hosts::{HostNames, MAX_BYTES};

/// The names in force, replaced as a whole on reload.
#[derive(Debug, Default)]
pub struct RequesterNames {
    current: RwLock<Arc<HostNames>>,
}

impl RequesterNames {
    pub fn new(names: HostNames) -> Self {
        Self {
            current: RwLock::new(Arc::new(names)),
        }
    }

    pub fn replace(&self, names: HostNames) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(names);
    }

    pub fn current(&self) -> Arc<HostNames> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `kind:name (ip)` or `kind:ip`.
    pub fn label(&self, kind: &str, ip: IpAddr) -> String {
        self.current().label(kind, ip)
    }
}

/// Reads and parses a hosts file (at most [`MAX_BYTES`] + 1 bytes are read).
pub fn read_hosts_file(path: &Path) -> anyhow::Result<HostNames> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BYTES as u64 + 1).read_to_end(&mut buf))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(HostNames::parse(&buf))
}

/// The names `requester_names` asks for. A file that cannot be read only
/// costs the names (warned): fencing never depends on it.
pub fn load(path: Option<&Path>) -> HostNames {
    let Some(path) = path else {
        return HostNames::default();
    };
    match read_hosts_file(path) {
        Ok(names) => {
            if names.truncated {
                tracing::warn!(
                    "listeners.requester_names: {} is longer than {MAX_BYTES} bytes; the rest is ignored",
                    path.display()
                );
            }
            if names.skipped > 0 {
                tracing::info!(
                    "listeners.requester_names: {} lines of {} not used (bad address or name, or over the limit)",
                    names.skipped,
                    path.display()
                );
            }
            names
        }
        Err(e) => {
            tracing::warn!(
                "listeners.requester_names: {e:#}; fence requesters are shown by address"
            );
            HostNames::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_names_nobody_and_a_reload_replaces_the_table() {
        let names = RequesterNames::new(load(Some(Path::new("/nonexistent/hosts"))));
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(names.label("multicast", ip), "multicast:10.0.0.5");
        let dir = std::env::temp_dir().join(format!("fl-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("hosts");
        std::fs::write(&p, "10.0.0.5 guest1\n").unwrap();
        names.replace(load(Some(&p)));
        assert_eq!(names.label("multicast", ip), "multicast:guest1 (10.0.0.5)");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
