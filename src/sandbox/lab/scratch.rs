//! The lab's scratch dir: a free prefix, the owner line in `pids`, the
//! config files of every node and the shared fence_xvm key.

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::super::conf::{self, TEST_URI};
use super::super::prereq;
use super::super::procs;
use super::super::stale::{self, OWNER_TAG, lab_dir_for, ns_belongs_to, valid_prefix};
use super::{Lab, lab_domains};

fn random_prefix() -> String {
    let mut b = [0u8; 2];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id();
        b = [(n >> 8) as u8, n as u8];
    }
    format!("fl{:02x}{:02x}", b[0], b[1])
}

/// Create the scratch dir for a new lab and write the owner line.
pub(super) fn create_lab_dir(fixed: Option<&str>) -> Result<(String, PathBuf)> {
    let existing = stale::list_netns();
    for _ in 0..50 {
        let prefix = match fixed {
            Some(p) => p.to_string(),
            None => random_prefix(),
        };
        ensure!(
            valid_prefix(&prefix),
            "invalid lab prefix {prefix:?}: need 2-8 chars of [a-z0-9], starting with a letter"
        );
        let dir = lab_dir_for(&prefix);
        let taken = existing.iter().any(|n| ns_belongs_to(n, &prefix));
        if !taken {
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    let (_, start) = procs::stat(std::process::id()).unwrap_or(('R', 0));
                    std::fs::write(
                        dir.join("pids"),
                        format!("{OWNER_TAG} {} {start}\n", std::process::id()),
                    )
                    .with_context(|| format!("writing {}/pids", dir.display()))?;
                    return Ok((prefix, dir));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
            }
        }
        if fixed.is_some() {
            bail!("lab prefix {prefix} is in use (scratch dir or namespaces exist)");
        }
    }
    bail!("could not find a free lab prefix")
}

impl Lab {
    pub(super) fn write_files(&self) -> Result<()> {
        let w = |p: PathBuf, s: &str| {
            std::fs::write(&p, s).with_context(|| format!("writing {}", p.display()))
        };
        w(self.dir.join("qemu.conf"), conf::QEMU_CONF)?;
        w(self.dir.join("libvirtd.conf"), &conf::libvirtd_conf())?;
        for i in 1..=self.spec.nodes {
            let nd = self.node_dir(i);
            std::fs::create_dir_all(nd.join("cs-state"))
                .with_context(|| format!("creating {}", nd.display()))?;
            let mut cs = conf::corosync_conf(
                &self.cluster_name(),
                self.spec.nodes,
                &nd,
                self.spec.token_ms,
            );
            if self.spec.host_pacemaker {
                // pacemaker's daemons (hacluster:haclient) talk to corosync.
                cs.push_str("\nuidgid {\n    gid: haclient\n}\n");
            }
            w(nd.join("corosync.conf"), &cs)?;
            w(
                nd.join("fenceline.toml"),
                &conf::fenceline_toml(
                    &self.spec.uris,
                    &nd.join("fenceline.log"),
                    &self.fence_key_path(),
                    &self.cluster_key_path(),
                    &self.node_ip(i),
                    &self.hosts_path(),
                    &self.spec.fenceline_extra_toml,
                ),
            )?;
            for d in lab_domains(i) {
                w(
                    nd.join(format!("{}.xml", d.name)),
                    &conf::test_domain_xml(&d.name, &d.uuid),
                )?;
            }
        }
        w(self.hosts_path(), &self.hosts_text())?;
        // fence_virtd and fenceline's listeners share the lab key; the
        // fenceline nodes share a cluster key.
        self.write_fence_key()?;
        write_random_key(&self.cluster_key_path(), 64)?;
        if !self.spec.fence_virtd_nodes.is_empty() {
            let module = prereq::fence_virt_module_path()
                .ok_or_else(|| anyhow!("fence-virt plugin directory not found"))?;
            for &i in &self.spec.fence_virtd_nodes {
                w(
                    self.node_dir(i).join("fence_virt.conf"),
                    &conf::fence_virt_conf(&self.fence_key_path(), &module, TEST_URI),
                )?;
            }
        }
        Ok(())
    }

    /// The lab's hosts(5) file (`<dir>/hosts`), the fenceline daemons'
    /// `requester_names`: every node, the client and every guest.
    pub fn hosts_path(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    fn hosts_text(&self) -> String {
        let mut s = String::from("# fenceline lab: requester names for the lab's daemons\n");
        for i in 1..=self.spec.nodes {
            s.push_str(&format!("{} node{i}\n", self.node_ip(i)));
        }
        if self.spec.client_ns {
            s.push_str(&format!("{} client\n", self.client_ip()));
        }
        for g in 1..=self.spec.guests {
            s.push_str(&format!("{} {}\n", self.guest_ip(g), self.guest_name(g)));
        }
        s
    }

    pub(super) fn write_fence_key(&self) -> Result<()> {
        write_random_key(&self.fence_key_path(), 4096)
    }
}

/// `len` random bytes into a new 0600 file at `p`.
fn write_random_key(p: &Path, len: usize) -> Result<()> {
    let mut key = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading /dev/urandom")?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &key))
        .with_context(|| format!("writing {}", p.display()))
}
